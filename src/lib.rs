//! dnsfence: a DNS resolver for locked-down networks that answers only allowlisted names (the
//! Microsoft Intune endpoint catalog in `zones/`) and refuses everything else without forwarding it.
//!
//! # Layout
//! From the bottom layer up; a module uses only modules of its layer or below (no import cycle:
//! `tests/integration/layout.rs`). ARCHITECTURE.md draws the query's way through them.
//!
//! Bottom (depends on nothing of dnsfence):
//! - [`wire`]: DNS wire format: names as text and as `dig` writes them, TTL offsets, rcodes.
//! - [`clock`]: the cache's clock (a test can advance it), Unix seconds, RFC 3339 times.
//! - [`sync`]: the one poison-ignoring lock helper.
//! - [`fileerror`]: the `file:line: 'entry': reason` error of config and zone files, excerpts.
//! - [`codec`]: the byte layout of the warm-restart file and the peer-sync stream.
//! - [`caps`]: the process's two capabilities made ambient, for the `nft` and `ipset` it runs.
//!
//! Configuration and catalog:
//! - [`config`]: the TOML configuration, one file per section: serde type, defaults, validation
//!   with the key's line, reload sorting.
//! - [`matcher`]: the compiled name matcher (exact, `*.suffix`, in-label globs).
//! - [`zones`]: the endpoint-set catalog: `zones/*.toml` (the vendors' documents, one file per
//!   source and area, and the device families), local zone files, the sources' overlays.
//! - [`policy`]: views (client networks) and their compiled allowlists.
//! - [`readiness`]: per view, device family and stage, whether the policy lets it through, and
//!   what it denies of it (`dnsfence readiness`, `/v1/readiness`, `dnsfence_family_ready`).
//! - [`source`]: Microsoft's catalog sources (the Intune endpoints page, the MEM feed): parsed,
//!   compared with the catalog, turned into overlays, fetched and followed.
//!
//! What a query uses:
//! - [`answer`]: the upstream's answer, the part its CNAME chain proves, and its wire form.
//! - [`cache`]: the answer cache in wire form: TTL bounds, count-down, negative caching.
//! - [`tls`]: the rustls client configuration of DoT and DoH upstreams.
//! - [`upstream`]: one hickory name-server pool per server; order, failover, coalescing, health.
//! - [`fence`]: the firewall sets (nftables or ipset over netlink, or a pull list), the ledger,
//!   resync; `fence::plan` is a view's firewall as the backends build it.
//! - [`outcome`]: a query's verdict and reason: bounded sets, metric labels and log fields alike.
//! - [`querylog`]: one JSON line per query, written by its own thread.
//! - [`metrics`]: the Prometheus registry, bounded labels, the top denied names, and the live
//!   collectors over dnsfence's own state (`metrics::live`).
//! - [`ratelimit`]: per-client UDP token buckets.
//! - [`query`]: the one query path: parse, decide (view, verdict, cache, upstream, fence) into a
//!   `Reply`, the one encoder, and the `QueryEvent` that counts and logs each query.
//!
//! Transports and the process:
//! - [`sockopt`]: the socket options std and socket2 lack (forced buffer sizes).
//! - [`slots`]: connection counts in all and per client, with a share kept for trusted clients.
//! - [`udp`]: UDP workers (batched socket I/O, busy polling) in front of the query path.
//! - [`tcp`]: the TCP listener and connections (pipelined) in front of the query path.
//! - [`server`]: binding UDP and TCP on the listen addresses (one V6ONLY rule) and serving them.
//! - [`peer`]: peer sync: this gateway's admissions sent to its peers over mutual TLS, theirs
//!   put in its sets.
//! - [`status`]: what the process reports about itself (listening, last reload, sources, peers).
//! - [`http`]: `/metrics`, `/healthz`, `/readyz`, `/v1/sets`, `/v1/sets/{view}.txt`,
//!   `/v1/denied`, `/v1/catalog`.
//! - [`warn`]: rate-limited warnings (`warn_limited!`) with a count of what was left out.
//! - [`signal`]: the control signal (reload, shutdown) carried to every task.
//! - [`notify`]: systemd notifications (ready, reloading, stopping, watchdog).
//! - [`preflight`]: what `run` refuses at start that `check` refuses too, with the same words.
//! - [`warm`]: the warm-restart state: the cache and the fence's ledger written at a stop, read
//!   back at the next start.
//! - [`app`]: start-up order, the run loop, reload and the bounded stop; binary and tests alike.
//!
//! Commands (`main` parses the arguments and prints what these return):
//! - [`check`]: `dnsfence check`'s report of what a config and its zones hold.
//! - [`explain`]: `dnsfence explain`: a name's (or a list's) verdict, view and endpoint set.
//! - [`suggest`]: `dnsfence suggest`: denied names ranked into proposed zone-file blocks.

pub mod answer;
pub mod app;
pub mod cache;
pub mod caps;
pub mod check;
pub mod clock;
pub mod codec;
pub mod config;
pub mod explain;
pub mod fence;
pub mod fileerror;
pub mod http;
pub mod matcher;
pub mod metrics;
pub mod notify;
pub mod outcome;
pub mod peer;
pub mod policy;
pub mod preflight;
pub mod query;
pub mod querylog;
pub mod ratelimit;
pub mod readiness;
pub mod server;
pub mod signal;
pub mod slots;
pub mod sockopt;
pub mod source;
pub mod status;
pub mod suggest;
pub mod sync;
pub mod tcp;
pub mod tls;
pub mod udp;
pub mod upstream;
pub mod warm;
pub mod warn;
pub mod wire;
pub mod zones;
