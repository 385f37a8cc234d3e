//! Peer sync: every element this gateway's answers put in its sets is sent to the peer gateways
//! of `[[sync.peer]]`, which put it in their own sets with the time it has left (provenance
//! `peer:<name>`) and never send it on. A gateway pair behind keepalived then holds the same
//! admissions: after a failover, the devices' cached answers still find their addresses.
//!
//! - Elements only grow or extend their expiry (union, the later expiry wins), so order and
//!   duplicates do not matter and no consensus is needed.
//! - Each gateway connects to each peer's `[sync] listen` (mutual TLS, one CA, the peer's name
//!   checked both ways) and sends a full snapshot, then the stream; the listener only receives.
//!   A link that drops reconnects with backoff and starts with a snapshot again.
//! - Never on the answer's path: the fence's tap only queues. A queue per peer, bounded by
//!   `[sync] queue`: past it the oldest are dropped (counted) and a snapshot follows. A peer that
//!   is down or slow changes nothing for answering.
//! - What a peer sends goes through this gateway's ledger and kernel batches like its own
//!   admits, only into views both configs define, its expiry clamped to `max_ttl_secs` + grace;
//!   anything else is refused and counted.

pub mod frame;
pub mod tls;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use crate::base::sync::lock;
use crate::config::SyncConfig;
use crate::fence::{Admission, Fence, Shared};
use crate::query::metrics::SyncMetrics;
use frame::{Element, Frame};

/// A link with no frame for this long is dead (pings go every [`PING`]).
const SILENT: Duration = Duration::from_secs(15);
/// Keep-alive interval, both ways.
const PING: Duration = Duration::from_secs(5);
/// Connect, handshake and write deadline.
const IO_DEADLINE: Duration = Duration::from_secs(5);
/// Reconnect backoff bounds.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(250), Duration::from_secs(10));
/// Sync connections handled at once by the listener (each peer needs one).
const MAX_INBOUND: usize = 64;

/// What `/readyz` and the metrics say of one peer.
#[derive(Debug)]
pub struct PeerStatus {
    /// Its name (`[[sync.peer]] name`).
    pub name: String,
    /// Its address.
    pub address: SocketAddr,
    up: AtomicBool,
    last_error: Mutex<Option<String>>,
}

impl PeerStatus {
    /// Whether the link to it is up.
    pub fn up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// Why the link last went down, if it did.
    pub fn last_error(&self) -> Option<String> {
        lock(&self.last_error).clone()
    }
}

/// One peer's queue of this gateway's admissions.
#[derive(Debug)]
struct Outbox {
    queue: Mutex<VecDeque<Element>>,
    limit: usize,
    notify: tokio::sync::Notify,
    /// Elements were dropped: the next thing the link sends is a snapshot.
    resnapshot: AtomicBool,
    /// Queued only while the link is up (a connect starts with a snapshot anyway).
    connected: AtomicBool,
    /// Dropped since the link last counted them.
    dropped: AtomicU64,
}

impl Outbox {
    fn push(&self, items: &[Element]) {
        if !self.connected.load(Ordering::Relaxed) {
            return;
        }
        let mut q = lock(&self.queue);
        for e in items {
            if q.len() >= self.limit {
                q.pop_front();
                self.dropped.fetch_add(1, Ordering::Relaxed);
                self.resnapshot.store(true, Ordering::Relaxed);
            }
            q.push_back(e.clone());
        }
        drop(q);
        self.notify.notify_one();
    }

    fn drain(&self, n: usize) -> Vec<Element> {
        let mut q = lock(&self.queue);
        let n = n.min(q.len());
        q.drain(..n).collect()
    }
}

/// The peers of this gateway: their links' state and queues.
pub struct Peers {
    config: SyncConfig,
    tls: tls::Configs,
    statuses: Vec<Arc<PeerStatus>>,
    outboxes: Vec<Arc<Outbox>>,
}

impl std::fmt::Debug for Peers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Peers")
            .field("peers", &self.statuses)
            .finish_non_exhaustive()
    }
}

/// Microseconds since the Unix epoch: the lag's clock.
fn unix_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

impl Peers {
    /// The peers of `config`, their certificates read; `None` when sync is off.
    pub fn new(config: &SyncConfig) -> Result<Option<Arc<Peers>>, String> {
        let Some(t) = config.tls.as_ref().filter(|_| config.enabled()) else {
            return Ok(None);
        };
        let tls = tls::configs(t).map_err(|e| format!("sync: {e}"))?;
        let statuses = config
            .peers
            .iter()
            .map(|p| {
                Arc::new(PeerStatus {
                    name: p.name.clone(),
                    address: p.address,
                    up: AtomicBool::new(false),
                    last_error: Mutex::new(Some("not connected yet".into())),
                })
            })
            .collect();
        let outboxes = config
            .peers
            .iter()
            .map(|_| {
                Arc::new(Outbox {
                    queue: Mutex::new(VecDeque::new()),
                    limit: config.queue,
                    notify: tokio::sync::Notify::new(),
                    resnapshot: AtomicBool::new(false),
                    connected: AtomicBool::new(false),
                    dropped: AtomicU64::new(0),
                })
            })
            .collect();
        Ok(Some(Arc::new(Peers {
            config: config.clone(),
            tls,
            statuses,
            outboxes,
        })))
    }

    /// Each peer's link state.
    pub fn statuses(&self) -> &[Arc<PeerStatus>] {
        &self.statuses
    }

    /// Binds `[sync] listen`, if set.
    pub async fn bind(&self) -> std::io::Result<Option<TcpListener>> {
        match self.config.listen {
            Some(addr) => TcpListener::bind(addr).await.map(Some).map_err(|e| {
                std::io::Error::new(e.kind(), format!("cannot listen on sync {addr}: {e}"))
            }),
            None => Ok(None),
        }
    }

    /// Sets the fence's tap and starts the listener (on `listener`) and one link per peer.
    pub fn start(
        self: &Arc<Self>,
        fence: Arc<Fence>,
        listener: Option<TcpListener>,
        metrics: SyncMetrics,
    ) -> Vec<JoinHandle<()>> {
        let sets: Arc<Vec<(String, bool)>> = Arc::new(
            fence
                .sets()
                .iter()
                .map(|s| (s.view.clone(), s.v6))
                .collect(),
        );
        let tap_sets = sets.clone();
        let outboxes = self.outboxes.clone();
        fence.set_tap(Arc::new(move |shared: &[Shared]| {
            let now = unix_us();
            let items: Vec<Element> = shared
                .iter()
                .filter_map(|s| {
                    let (view, v6) = tap_sets.get(usize::from(s.set))?;
                    Some(Element {
                        view: view.clone(),
                        v6: *v6,
                        element: s.element.clone(),
                        left_ms: s.timeout.as_millis() as u64,
                        admitted_us: now,
                        name: s.name.to_string(),
                    })
                })
                .collect();
            for o in &outboxes {
                o.push(&items);
            }
        }));
        let mut tasks = Vec::new();
        if let Some(l) = listener {
            let names: Arc<Vec<String>> =
                Arc::new(self.config.peers.iter().map(|p| p.name.clone()).collect());
            tasks.push(tokio::spawn(listen(
                l,
                self.tls.server.clone(),
                names,
                fence.clone(),
                metrics.clone(),
            )));
        }
        for (status, outbox) in self.statuses.iter().zip(&self.outboxes) {
            metrics.up.with_label_values(&[&status.name]).set(0);
            tasks.push(tokio::spawn(link(Link {
                status: status.clone(),
                outbox: outbox.clone(),
                client: self.tls.client.clone(),
                fence: fence.clone(),
                sets: sets.clone(),
                metrics: metrics.clone(),
            })));
        }
        tasks
    }
}

/// One outbound link: what it needs across reconnects.
struct Link {
    status: Arc<PeerStatus>,
    outbox: Arc<Outbox>,
    client: Arc<rustls::ClientConfig>,
    fence: Arc<Fence>,
    sets: Arc<Vec<(String, bool)>>,
    metrics: SyncMetrics,
}

/// Connects to the peer and sends, reconnecting with backoff, until aborted at the stop.
async fn link(l: Link) {
    let mut backoff = BACKOFF.0;
    loop {
        let started = std::time::Instant::now();
        let error = session(&l).await;
        let name = &l.status.name;
        l.outbox.connected.store(false, Ordering::Relaxed);
        lock(&l.outbox.queue).clear();
        if l.status.up.swap(false, Ordering::Relaxed) {
            tracing::warn!(peer = %name, error = %error, "sync link down; reconnecting");
        } else {
            crate::warn_limited!(peer = %name, error = %error, "sync link cannot connect");
        }
        l.metrics.up.with_label_values(&[name]).set(0);
        *lock(&l.status.last_error) = Some(error);
        if started.elapsed() > SILENT {
            backoff = BACKOFF.0;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(BACKOFF.1);
    }
}

async fn with_deadline<T, E: std::fmt::Display>(
    what: &str,
    f: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, String> {
    match tokio::time::timeout(IO_DEADLINE, f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(format!("{what}: {e}")),
        Err(_) => Err(format!(
            "{what}: no progress in {} s",
            IO_DEADLINE.as_secs()
        )),
    }
}

/// One connection to the peer: the hello, a snapshot, then the stream; why it ended.
async fn session(l: &Link) -> String {
    let name = &l.status.name;
    let addr = l.status.address;
    let tcp = match with_deadline("connect", TcpStream::connect(addr)).await {
        Ok(t) => t,
        Err(e) => return e,
    };
    let _ = tcp.set_nodelay(true);
    let server_name = match rustls::pki_types::ServerName::try_from(name.clone()) {
        Ok(n) => n,
        Err(e) => return format!("'{name}' is not a server name: {e}"),
    };
    let connector = tokio_rustls::TlsConnector::from(l.client.clone());
    let tls = match with_deadline("TLS handshake", connector.connect(server_name, tcp)).await {
        Ok(t) => t,
        Err(e) => return e,
    };
    let (mut rx, mut tx) = tokio::io::split(tls);
    if let Err(e) = with_deadline("hello", tx.write_all(&frame::hello())).await {
        return e;
    }
    l.status.up.store(true, Ordering::Relaxed);
    *lock(&l.status.last_error) = None;
    l.metrics.up.with_label_values(&[name]).set(1);
    tracing::info!(peer = %name, %addr, "sync link up");
    // The peer's pings: a link without them is dead even when writes still succeed.
    let mut reader = Box::pin(async move {
        loop {
            match tokio::time::timeout(SILENT, read_frame(&mut rx)).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return format!("reading: {e}"),
                Err(_) => return format!("the peer sent nothing for {} s", SILENT.as_secs()),
            }
        }
    });
    let sent = l.metrics.sent.with_label_values(&[name]);
    loop {
        // A snapshot: everything this gateway's answers put in the sets, still live.
        l.outbox.resnapshot.store(false, Ordering::Relaxed);
        lock(&l.outbox.queue).clear();
        l.outbox.connected.store(true, Ordering::Relaxed);
        let snapshot = snapshot(&l.fence, &l.sets);
        for chunk in snapshot.chunks(frame::BATCH) {
            let bytes = frame::encode(&Frame::Elements(chunk.to_vec()));
            if let Err(e) = with_deadline("snapshot", tx.write_all(&bytes)).await {
                return e;
            }
            sent.inc_by(chunk.len() as u64);
        }
        if let Err(e) = with_deadline(
            "snapshot",
            tx.write_all(&frame::encode(&Frame::SnapshotDone)),
        )
        .await
        {
            return e;
        }
        l.metrics.snapshots.with_label_values(&[name]).inc();
        // Then the stream, until a queue overflow asks for a new snapshot.
        while !l.outbox.resnapshot.load(Ordering::Relaxed) {
            let dropped = l.outbox.dropped.swap(0, Ordering::Relaxed);
            if dropped > 0 {
                l.metrics.dropped.with_label_values(&[name]).inc_by(dropped);
            }
            let batch = l.outbox.drain(frame::BATCH);
            let frame = if batch.is_empty() {
                tokio::select! {
                    e = &mut reader => return e,
                    () = l.outbox.notify.notified() => continue,
                    () = tokio::time::sleep(PING) => Frame::Ping,
                }
            } else {
                Frame::Elements(batch)
            };
            if let Err(e) = with_deadline("sending", tx.write_all(&frame::encode(&frame))).await {
                return e;
            }
            if let Frame::Elements(b) = &frame {
                sent.inc_by(b.len() as u64);
            }
        }
    }
}

/// This gateway's own live elements (those a local answer admitted), as a link sends them.
fn snapshot(fence: &Fence, sets: &[(String, bool)]) -> Vec<Element> {
    let now = unix_us();
    let dyn_sets = fence.sets();
    fence
        .snapshot()
        .into_iter()
        .filter_map(|r| {
            let local = r.admissions.iter().rev().find(|a| a.via.is_none())?;
            let i = dyn_sets
                .iter()
                .position(|s| s.table == r.table && s.name == r.set)?;
            let (view, v6) = sets.get(i)?;
            Some(Element {
                view: view.clone(),
                v6: *v6,
                element: r.element,
                left_ms: r.left.as_millis() as u64,
                admitted_us: now,
                name: local.name.to_string(),
            })
        })
        .collect()
}

/// A frame's body, at most [`frame::MAX_FRAME`] bytes.
async fn read_frame<R: AsyncRead + Unpin>(r: &mut R) -> Result<Frame, String> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len).await.map_err(|e| e.to_string())?;
    let len = u32::from_be_bytes(len) as usize;
    if len == 0 || len > frame::MAX_FRAME {
        return Err(format!("a frame of {len} bytes"));
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).await.map_err(|e| e.to_string())?;
    frame::decode(&body).map_err(|e| e.to_string())
}

/// Accepts peers' links until aborted at the stop.
async fn listen(
    listener: TcpListener,
    server: Arc<rustls::ServerConfig>,
    names: Arc<Vec<String>>,
    fence: Arc<Fence>,
    metrics: SyncMetrics,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(server);
    let open = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    loop {
        let (tcp, from) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                crate::warn_limited!(error = %e, "sync: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        if open.fetch_add(1, Ordering::Relaxed) >= MAX_INBOUND {
            open.fetch_sub(1, Ordering::Relaxed);
            metrics.refused.with_label_values(&["too_many"]).inc();
            continue;
        }
        let (acceptor, names, fence, metrics, open) = (
            acceptor.clone(),
            names.clone(),
            fence.clone(),
            metrics.clone(),
            open.clone(),
        );
        tokio::spawn(async move {
            let why = receive(tcp, acceptor, &names, &fence, &metrics).await;
            open.fetch_sub(1, Ordering::Relaxed);
            crate::warn_limited!(%from, reason = %why, "sync: inbound link closed");
        });
    }
}

/// One inbound link: the handshake, who it is, the hello, then its frames; why it ended.
async fn receive(
    tcp: TcpStream,
    acceptor: tokio_rustls::TlsAcceptor,
    names: &[String],
    fence: &Fence,
    metrics: &SyncMetrics,
) -> String {
    let refuse = |reason: &str, why: String| {
        metrics.refused.with_label_values(&[reason]).inc();
        why
    };
    let tls = match with_deadline("TLS handshake", acceptor.accept(tcp)).await {
        Ok(t) => t,
        Err(e) => return refuse("handshake", e),
    };
    let peer = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .and_then(|c| tls::identify(c, names))
        .map(str::to_string);
    let Some(peer) = peer else {
        return refuse(
            "unknown_peer",
            "a certificate of the CA for none of [[sync.peer]]'s names".into(),
        );
    };
    let (mut rx, mut tx) = tokio::io::split(tls);
    let mut hello = [0u8; frame::HELLO_LEN];
    if let Err(e) = with_deadline("hello", rx.read_exact(&mut hello)).await {
        return refuse("protocol", e);
    }
    if let Err(e) = frame::parse_hello(&hello) {
        return refuse("protocol", e.to_string());
    }
    tracing::info!(peer = %peer, "sync: inbound link up");
    let received = metrics.received.with_label_values(&[&peer]);
    let lag = metrics.lag.with_label_values(&[&peer]);
    let mut ping = tokio::time::interval(PING);
    loop {
        let frame = tokio::select! {
            f = tokio::time::timeout(SILENT, read_frame(&mut rx)) => f,
            _ = ping.tick() => {
                if let Err(e) = with_deadline("ping", tx.write_all(&frame::encode(&Frame::Ping))).await {
                    return e;
                }
                continue;
            }
        };
        let frame = match frame {
            Ok(Ok(f)) => f,
            Ok(Err(e)) => return refuse("protocol", format!("{peer}: {e}")),
            Err(_) => return format!("{peer} sent nothing for {} s", SILENT.as_secs()),
        };
        if let Frame::Elements(elements) = frame {
            received.inc_by(elements.len() as u64);
            admit(&peer, elements, fence, metrics, &lag);
        }
    }
}

/// A peer's elements into this gateway's sets: only into views this config has, of the right
/// family and layout, the expiry clamped to `max_ttl_secs` + grace.
fn admit(
    peer: &str,
    elements: Vec<Element>,
    fence: &Fence,
    metrics: &SyncMetrics,
    lag: &prometheus::Histogram,
) {
    let now = unix_us();
    let max = fence.max_timeout();
    let via: Box<str> = peer.into();
    let mut batch = Vec::with_capacity(elements.len());
    for e in elements {
        let Some(key) = fence.peer_key(&e.view, e.v6, &e.element) else {
            let reason = if fence.sets().iter().any(|s| s.view == e.view) {
                "bad_element"
            } else {
                "unknown_view"
            };
            metrics.refused.with_label_values(&[reason]).inc();
            continue;
        };
        let mut left = Duration::from_millis(e.left_ms);
        if left > max {
            metrics.refused.with_label_values(&["clamped"]).inc();
            left = max;
        }
        if left.is_zero() {
            continue;
        }
        lag.observe(now.saturating_sub(e.admitted_us) as f64 / 1e6);
        let admission = Arc::new(Admission {
            name: e.name.into_boxed_str(),
            chain: Box::new([]),
            endpoint_sets: Box::new([]),
            would_deny: false,
            via: Some(via.clone()),
        });
        batch.push((key, left, admission));
    }
    if let Err(e) = fence.admit_from_peer(batch) {
        metrics.refused.with_label_values(&["queue_full"]).inc();
        crate::warn_limited!(peer, error = %e, "sync: a peer's elements could not be queued for the kernel");
    }
}
