//! What the running process says about itself, apart from what a query reads (the
//! query engine): whether the DNS sockets are served, how the last reload went, the
//! catalog's sources, the peer gateways' links, and the window in which the upstream counts as
//! healthy. The app writes it;
//! `/readyz`, `/v1/catalog` and reloads read it.

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::catalog::source::follow::Sources;

/// The process's own state, as `/readyz` and `/v1/catalog` report it.
#[derive(Debug)]
pub struct Status {
    /// Set while the DNS sockets are being served.
    pub listening: AtomicBool,
    /// The upstream counts as healthy while it answered within this long (three probe
    /// intervals).
    pub upstream_fresh: Duration,
    /// How the last reload went: `Ok` or the message that refused it (also logged).
    pub last_reload: Mutex<Option<Result<(), String>>>,
    /// The catalog's sources: the shipped directory and the followed sources' state, to tell
    /// sources apart in `/v1/catalog`.
    pub sources: Arc<Sources>,
    /// The peer gateways' links (`[sync]`), when sync is on.
    pub peers: Option<Arc<crate::state::peer::Peers>>,
}
