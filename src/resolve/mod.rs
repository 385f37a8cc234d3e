//! Resolution, below the allowlist: the upstream's answer and the addresses its CNAME chain
//! proves (`answer`), the wire-form cache (`cache`), the upstream pool — failover, coalescing,
//! DoT/DoH, serve-stale (`upstream`) — plain UDP's pool of rotating sockets (`outgoing`) and the
//! TLS client configuration (`tls`). Uses `base/` and
//! `config/`; knows nothing of views or endpoint sets, so the catalog's sources can fetch through
//! it.

pub mod answer;
pub mod cache;
pub mod outgoing;
pub mod tls;
pub mod upstream;
