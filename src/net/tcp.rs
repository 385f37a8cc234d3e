//! DNS over TCP (RFC 7766): a small tokio listener of dnsfence's own, answering through the one
//! query path ([`Engine::answer`]).
//!
//! Why not hickory-server: with UDP served by dnsfence's workers, hickory-server would only frame
//! TCP messages, yet it parses each into its own request type and encodes the answer with its own
//! encoder — a second way to build an answer, which is what the parity tests exist to prevent.
//! Owning the loop also puts the limits where they belong.
//!
//! Bounded: at most `tcp_max_connections` connections and `tcp_max_connections_per_client` per
//! client address (more are closed at once, and counted); a connection's queries are answered
//! concurrently, `tcp_max_pipelined` at once, each reply written when ready (RFC 7766 §6.2.1.1:
//! a cached answer does not wait behind an upstream one); it is closed after `idle_timeout`
//! with nothing under way, after `tcp_max_queries` queries or `tcp_max_lifetime` (so kept-alive
//! connections cannot pin the descriptors forever), on a framing error, or at shutdown once the
//! answers under way are written.
//! When accepting fails for lack of descriptors the loop backs off instead of spinning.

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::net::slots::{Limits, Refused, Slot, Slots};
use crate::query::event::Transport;
use crate::query::{Engine, canonical};

/// The TCP settings of `[server]`.
#[derive(Debug, Clone, Copy)]
pub struct TcpOptions {
    /// Idle time allowed between queries.
    pub idle_timeout: Duration,
    /// Connections at most, all listeners together.
    pub max_connections: usize,
    /// Connections per client address at most.
    pub max_per_client: usize,
    /// Queries per connection at most.
    pub max_queries: u64,
    /// Lifetime of a connection at most.
    pub max_lifetime: Duration,
    /// How long in-flight answers may take to finish at shutdown (`shutdown_timeout_ms`).
    pub drain: Duration,
    /// Queries of one connection answered at once at most.
    pub max_pipelined: usize,
}

/// Open connections, in all and per client, shared by every TCP listener.
#[derive(Debug)]
pub struct Connections {
    options: TcpOptions,
    slots: Arc<Slots>,
}

impl Connections {
    /// The counts for `options`.
    pub fn new(options: TcpOptions) -> Arc<Connections> {
        Arc::new(Connections {
            options,
            slots: Slots::new(Limits {
                max: options.max_connections,
                per_client: options.max_per_client,
                reserved: 0,
            }),
        })
    }

    /// A slot for a new connection from `client`, or which limit refused it.
    fn admit(&self, client: IpAddr) -> Result<Slot, &'static str> {
        self.slots.admit(client, false).map_err(|r| match r {
            Refused::Full => "tcp",
            Refused::Client => "tcp_client",
        })
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.slots.open()
    }
}

/// How long to wait after a failed accept: out of descriptors (the process's or the system's)
/// will not clear in a microsecond, so spinning on it only burns a core.
pub fn accept_backoff(e: &io::Error) -> Duration {
    match e.raw_os_error() {
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM) => {
            Duration::from_millis(250)
        }
        _ => Duration::from_millis(10),
    }
}

/// Serves `listener` until `shutdown` completes; then stops accepting, lets each connection
/// finish the query it is answering, and returns.
pub async fn serve(
    engine: Arc<Engine>,
    listener: TcpListener,
    connections: Arc<Connections>,
    shutdown: impl Future<Output = ()>,
) {
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let client = canonical(peer.ip());
                    match connections.admit(client) {
                        Ok(slot) => {
                            let (engine, stop) = (engine.clone(), stop_rx.clone());
                            let options = connections.options;
                            tasks.spawn(connection(engine, stream, peer, options, stop, slot));
                        }
                        Err(limit) => {
                            // Closed at once: a refused connection costs no more than this.
                            engine.metrics.overload(limit);
                            drop(stream);
                        }
                    }
                }
                Err(e) => {
                    crate::warn_limited!(error = %e, "tcp accept failed");
                    tokio::time::sleep(accept_backoff(&e)).await;
                }
            },
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
        }
    }
    let _ = stop_tx.send(true);
    let drained = tokio::time::timeout(connections.options.drain, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tasks.abort_all();
    }
}

/// Takes one complete frame (a two-octet length, then the message) off the front of `buf`.
fn take_frame(buf: &mut Vec<u8>) -> Option<Vec<u8>> {
    let len = u16::from_be_bytes([*buf.first()?, *buf.get(1)?]) as usize;
    if buf.len() < 2 + len {
        return None;
    }
    let frame = buf[2..2 + len].to_vec();
    buf.drain(..2 + len);
    Some(frame)
}

/// One connection (RFC 7766 §6.2.1.1): queries are read as they come and answered concurrently,
/// at most `max_pipelined` at once; each reply is written when it is ready, so a cached answer
/// does not wait behind an upstream one (clients match replies by ID). Reading stops at
/// `max_queries`, at `max_lifetime` and at shutdown; the answers under way are finished, then the
/// connection closes. Idle for `idle_timeout` with nothing under way: closed.
async fn connection(
    engine: Arc<Engine>,
    stream: TcpStream,
    peer: SocketAddr,
    options: TcpOptions,
    mut stop: watch::Receiver<bool>,
    _slot: Slot,
) {
    let client = canonical(peer.ip());
    let _ = stream.set_nodelay(true);
    let (mut rd, mut wr) = stream.into_split();
    let end_of_life = tokio::time::Instant::now() + options.max_lifetime;
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; 4096];
    let mut answers: JoinSet<Option<Vec<u8>>> = JoinSet::new();
    let mut read = 0u64;
    let mut reading = true;
    let mut idle_since = tokio::time::Instant::now();
    loop {
        if *stop.borrow() {
            reading = false;
        }
        // Start every complete query the limit allows.
        while reading && answers.len() < options.max_pipelined && read < options.max_queries {
            let Some(frame) = take_frame(&mut buf) else {
                break;
            };
            read += 1;
            let engine = engine.clone();
            answers.spawn(async move {
                engine
                    .answer(&frame, client, Transport::Tcp, Instant::now())
                    .await
            });
        }
        if read >= options.max_queries {
            reading = false;
        }
        if !reading && answers.is_empty() {
            return;
        }
        let can_read = reading && answers.len() < options.max_pipelined;
        tokio::select! {
            n = rd.read(&mut chunk), if can_read => match n {
                Ok(0) | Err(_) => reading = false,
                Ok(n) => {
                    buf.extend_from_slice(&chunk[..n]);
                    idle_since = tokio::time::Instant::now();
                    if buf.len() > 2 + u16::MAX as usize + chunk.len() {
                        // More than a frame's worth buffered without a frame: not DNS.
                        return;
                    }
                }
            },
            Some(done) = answers.join_next(), if !answers.is_empty() => {
                let Ok(Some(reply)) = done else {
                    // Not a query (a response, a runt): no answer, and no reason to trust the
                    // framing.
                    return;
                };
                let mut framed = Vec::with_capacity(2 + reply.len());
                framed.extend_from_slice(&(reply.len() as u16).to_be_bytes());
                framed.extend_from_slice(&reply);
                if tokio::time::timeout(options.idle_timeout, wr.write_all(&framed))
                    .await
                    .map_or(true, |r| r.is_err())
                {
                    return;
                }
                idle_since = tokio::time::Instant::now();
            },
            () = tokio::time::sleep_until(idle_since + options.idle_timeout), if answers.is_empty() => return,
            changed = stop.changed(), if reading => if changed.is_err() { reading = false },
            () = tokio::time::sleep_until(end_of_life), if reading => reading = false,
        }
    }
}
