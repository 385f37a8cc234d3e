//! dnsfence: a DNS resolver for locked-down networks that answers only allowlisted names (the
//! Microsoft Intune endpoint catalog in `zones/`) and refuses everything else without forwarding it.
//!
//! # Layout
//! `src/` is in folders by layer, bottom first; a module uses only its own layer and those below
//! (`tests/integration/layout.rs` fails, naming the file and the import, on one that reaches up,
//! and on an import cycle). Each layer's `mod.rs` says what it holds and what it may use;
//! ARCHITECTURE.md draws a query's way through them.
//!
//! [`base`] — the vocabulary every layer shares, depending on nothing else of dnsfence:
//! - [`base::wire`]: DNS wire format: names as text and as `dig` writes them, TTL offsets, rcodes.
//! - [`base::matcher`]: name patterns (exact, `*.suffix`, in-label globs) and their compiled matcher.
//! - [`base::clock`]: the cache's clock (a test can advance it), Unix seconds, RFC 3339 times.
//! - [`base::sync`]: the one poison-ignoring lock helper.
//! - [`base::fileerror`]: the `file:line: 'entry': reason` error of config and zone files, excerpts.
//! - [`base::warn`]: rate-limited warnings (`warn_limited!`) with a count of what was left out.
//! - [`base::codec`]: the byte layout of the warm-restart file and the peer-sync stream.
//! - [`base::outcome`]: a query's verdict and reason: bounded sets, metric labels and log fields.
//! - [`base::sockopt`]: the socket options std and socket2 lack (forced buffer sizes).
//! - [`base::notify`]: systemd notifications (ready, reloading, stopping, watchdog).
//!
//! [`config`] — the TOML configuration, one file per section: serde type, defaults, validation
//! with the key's line, reload sorting; the tenant locations it selects.
//!
//! [`resolve`] — resolution, below the allowlist:
//! - [`resolve::answer`]: the upstream's answer, the part its CNAME chain proves, its wire form.
//! - [`resolve::cache`]: the answer cache in wire form: TTL bounds, count-down, negative caching.
//! - [`resolve::upstream`]: one hickory name-server pool per server; order, failover, coalescing.
//! - [`resolve::tls`]: the rustls client configuration of DoT and DoH upstreams.
//!
//! [`catalog`] — the allowlist:
//! - [`catalog::zones`]: the endpoint-set catalog: `zones/*.toml` (the vendors' documents, one
//!   file per source and area, and the device families), local zone files, the sources' overlays.
//! - [`catalog::policy`]: views (client networks) and their compiled allowlists.
//! - [`catalog::readiness`]: per view, device family and stage, whether the policy lets it
//!   through, and what it denies of it (`dnsfence readiness`, `/v1/readiness`, the gauge).
//! - [`catalog::source`]: the catalog's sources (the Intune page, the Autopilot page, the
//!   Microsoft 365 web service): parsed, compared, turned into overlays, fetched and followed.
//!
//! [`fence`] — the firewall sets (nftables or ipset over netlink, or a pull list), the ledger,
//! resync; `fence::plan` is a view's firewall as the backends build it.
//!
//! [`query`] — the one query path: parse, decide (view, verdict, cache, upstream, fence) into a
//! `Reply`, the one encoder, the `QueryEvent` that counts and logs each query; with
//! [`query::metrics`] (the Prometheus registry, bounded labels, the top denied names, the live
//! collectors) and [`query::log`] (one JSON line per query, written by its own thread).
//!
//! [`state`] — what outlives a process:
//! - [`state::warm`]: the cache and the fence's ledger written at a stop, read back at a start.
//! - [`state::peer`]: this gateway's admissions sent to its peers over mutual TLS, theirs put in
//!   its sets.
//!
//! [`net`] — transports in front of the query path:
//! - [`net::udp`]: UDP workers (batched socket I/O, busy polling).
//! - [`net::tcp`]: the TCP listener and connections (pipelined).
//! - [`net::server`]: binding UDP and TCP on the listen addresses (one V6ONLY rule), serving them.
//! - [`net::http`]: `/metrics`, `/healthz`, `/readyz`, `/v1/sets`, `/v1/sets/{view}.txt`,
//!   `/v1/denied`, `/v1/catalog`, `/v1/readiness`.
//! - [`net::status`]: what the process reports about itself (listening, last reload, sources,
//!   peers).
//! - [`net::slots`]: connection counts in all and per client, a share kept for trusted clients.
//! - [`net::ratelimit`]: per-client UDP token buckets.
//!
//! [`daemon`] — the process:
//! - [`daemon::app`]: start-up order, the run loop, reload and the bounded stop.
//! - [`daemon::signal`]: the control signal (reload, shutdown) carried to every task.
//! - [`daemon::preflight`]: what `run` refuses at start that `check` refuses too, same words.
//! - [`daemon::caps`]: the two capabilities made ambient, for the `nft` and `ipset` it runs.
//!
//! [`cli`] — the commands (`main` parses the arguments and prints what these return):
//! - [`cli::check`]: `dnsfence check`'s report of what a config and its zones hold.
//! - [`cli::explain`]: `explain`: a name's (or a list's) verdict, view and endpoint set; `catalog
//!   diff --names`: a pasted vendor list against a profile.
//! - [`cli::suggest`]: `suggest`: denied names ranked into proposed zone-file blocks.

pub mod base;
pub mod catalog;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod fence;
pub mod net;
pub mod query;
pub mod resolve;
pub mod state;
