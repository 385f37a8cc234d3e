//! dnsfence: a DNS resolver for locked-down networks that answers only allowlisted names (the
//! Microsoft Intune endpoint catalog in `zones/`) and refuses everything else without forwarding it.
//!
//! # Layout
//! - [`config`]: the TOML configuration, defaults and validation with `file:line` errors.
//! - [`zones`]: the endpoint-set catalog parsed from `zones/*.toml`.
//! - [`matcher`]: the compiled name matcher (exact, `*.suffix`, in-label globs).
//! - [`policy`]: views (client networks) and their compiled allowlists.
//! - [`upstream`]: hickory-resolver behind the answer cache, with a deadline and health stamps.
//! - [`cache`]: the answer cache in wire form: TTL bounds, count-down, negative caching.
//! - [`answer`]: the addresses of an answer (A/AAAA across the CNAME chain, SVCB/HTTPS hints).
//! - [`fence`]: nftables sets fed over netlink with every answered address, the ledger, resync.
//! - [`server`]: hickory-server wiring and the request handler with deny answers and RFC 8914 errors.
//! - [`udp`]: UDP workers with the wire-level fast path (denials, cached answers), busy polling.
//! - [`sockopt`]: the socket options std lacks (SO_REUSEPORT, forced buffer sizes).
//! - [`wire`]: small DNS wire-format readers (names, TTL offsets).
//! - [`ratelimit`]: per-client UDP token buckets.
//! - [`querylog`]: one JSON line per query.
//! - [`metrics`]: the Prometheus registry, bounded labels, the top denied names.
//! - [`http`]: `/metrics`, `/healthz`, `/readyz`, `/v1/sets`, `/v1/sets/{view}.txt`, `/v1/denied`.
//! - [`signal`]: the control signal (reload, shutdown) carried to every task.
//! - [`app`]: start-up order, shared by the binary and the tests.

pub mod answer;
pub mod app;
pub mod cache;
pub mod config;
pub mod fence;
pub mod http;
pub mod matcher;
pub mod metrics;
pub mod policy;
pub mod querylog;
pub mod ratelimit;
pub mod server;
pub mod signal;
pub mod sockopt;
pub mod udp;
pub mod upstream;
pub mod wire;
pub mod zones;
