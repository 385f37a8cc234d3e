//! DNS over TCP (RFC 7766): a small tokio listener of dnsfence's own, answering through the one
//! query path ([`Engine::answer`]).
//!
//! Why not hickory-server: with UDP served by dnsfence's workers, hickory-server would only frame
//! TCP messages, yet it parses each into its own request type and encodes the answer with its own
//! encoder — a second way to build an answer, which is what the parity tests exist to prevent.
//! Owning the loop also puts the limits where they belong.
//!
//! Bounded: at most `tcp_max_connections` connections and `tcp_max_connections_per_client` per
//! client address (more are closed at once, and counted); a connection is served one query at a
//! time, in order, and closed after `idle_timeout` without a complete query, after
//! `tcp_max_queries` queries or `tcp_max_lifetime` (so kept-alive connections cannot pin the
//! descriptors forever), on a framing error, or at shutdown once its current query is answered.
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

use crate::query::event::Transport;
use crate::query::{Engine, canonical};
use crate::slots::{Limits, Refused, Slot, Slots};

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

async fn connection(
    engine: Arc<Engine>,
    mut stream: TcpStream,
    peer: SocketAddr,
    options: TcpOptions,
    mut stop: watch::Receiver<bool>,
    _slot: Slot,
) {
    let client = canonical(peer.ip());
    let _ = stream.set_nodelay(true);
    let end_of_life = tokio::time::Instant::now() + options.max_lifetime;
    let mut buf = Vec::new();
    for _ in 0..options.max_queries {
        let read = async {
            let len = stream.read_u16().await? as usize;
            buf.resize(len, 0);
            stream.read_exact(&mut buf).await?;
            Ok::<(), std::io::Error>(())
        };
        tokio::select! {
            r = tokio::time::timeout(options.idle_timeout, read) => match r {
                Ok(Ok(())) => {}
                // Closed, reset, short, or idle too long: done.
                Ok(Err(_)) | Err(_) => return,
            },
            _ = stop.wait_for(|s| *s) => return,
            () = tokio::time::sleep_until(end_of_life) => return,
        }
        let started = Instant::now();
        let Some(reply) = engine.answer(&buf, client, Transport::Tcp, started).await else {
            // Not a query (a response, a runt): no answer, and no reason to trust the framing.
            return;
        };
        let mut framed = Vec::with_capacity(2 + reply.len());
        framed.extend_from_slice(&(reply.len() as u16).to_be_bytes());
        framed.extend_from_slice(&reply);
        if tokio::time::timeout(options.idle_timeout, stream.write_all(&framed))
            .await
            .map_or(true, |r| r.is_err())
        {
            return;
        }
    }
}
