//! dnsfence: a DNS resolver for locked-down networks that answers only allowlisted names (the
//! Microsoft Intune endpoint catalog in `zones/`) and refuses everything else without forwarding it.
//!
//! # Layout
//! - [`config`]: the TOML configuration, defaults and validation with `file:line` errors.
//! - [`zones`]: the endpoint-set catalog parsed from `zones/*.toml`, local zone files and the
//!   followed sources' overlays.
//! - [`source`]: Microsoft's catalog sources (the Intune endpoints page, the MEM feed): parsed,
//!   compared with the catalog, turned into overlays, fetched and followed.
//! - [`check`]: `dnsfence check`'s report of what a config and its zones hold.
//! - [`explain`]: `dnsfence explain`: a name's (or a list's) verdict, view and endpoint set.
//! - [`fileerror`]: the `file:line: 'entry': reason` error of config and zone files.
//! - [`matcher`]: the compiled name matcher (exact, `*.suffix`, in-label globs).
//! - [`policy`]: views (client networks) and their compiled allowlists.
//! - [`query`]: the one query path: parse, decide (view, verdict, cache, upstream, fence) into a
//!   `Reply`, the one encoder, and the `QueryEvent` that counts and logs each query.
//! - [`outcome`]: a query's verdict and reason: bounded sets, metric labels and log fields alike.
//! - [`answer`]: the upstream's answer, the part its CNAME chain proves, and its wire form.
//! - [`cache`]: the answer cache in wire form: TTL bounds, count-down, negative caching.
//! - [`upstream`]: hickory-resolver's name-server pool, with a deadline and health stamps.
//! - [`fence`]: nftables sets fed over netlink with every answered address, the ledger, resync.
//! - [`server`]: binding UDP and TCP on the listen addresses (one V6ONLY rule) and serving them.
//! - [`tls`]: the rustls client configuration of DoT and DoH upstreams.
//! - [`udp`]: UDP workers (batched socket I/O, busy polling) in front of the query path.
//! - [`tcp`]: the TCP listener and connections in front of the query path.
//! - [`slots`]: connection counts in all and per client, with a share kept for trusted clients.
//! - [`sockopt`]: the socket options std and socket2 lack (forced buffer sizes).
//! - [`warn`]: rate-limited warnings (`warn_limited!`) with a count of what was left out.
//! - [`wire`]: the bottom layer of DNS wire format: names as text, TTL offsets, response codes.
//! - [`clock`]: Unix seconds and RFC 3339 times.
//! - [`sync`]: the one poison-ignoring lock helper.
//! - [`ratelimit`]: per-client UDP token buckets.
//! - [`querylog`]: one JSON line per query.
//! - [`metrics`]: the Prometheus registry, bounded labels, the top denied names.
//! - [`http`]: `/metrics`, `/healthz`, `/readyz`, `/v1/sets`, `/v1/sets/{view}.txt`, `/v1/denied`.
//! - [`suggest`]: `dnsfence suggest`: denied names ranked into proposed zone-file blocks.
//! - [`signal`]: the control signal (reload, shutdown) carried to every task.
//! - [`notify`]: systemd notifications (ready, reloading, stopping, watchdog).
//! - [`app`]: start-up order, shared by the binary and the tests.
//! - [`status`]: what the process reports about itself (listening, last reload, sources).
//! - [`preflight`]: what `run` refuses at start that `check` refuses too, with the same words.

pub mod answer;
pub mod app;
pub mod cache;
pub mod check;
pub mod clock;
pub mod config;
pub mod explain;
pub mod fence;
pub mod fileerror;
pub mod http;
pub mod matcher;
pub mod metrics;
pub mod notify;
pub mod outcome;
pub mod policy;
pub mod preflight;
pub mod query;
pub mod querylog;
pub mod ratelimit;
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
pub mod warn;
pub mod wire;
pub mod zones;
