//! DNS over TCP (RFC 7766): a small tokio listener of dnsfence's own, answering through the one
//! query path ([`Engine::answer`]).
//!
//! Why not hickory-server: with UDP served by dnsfence's workers, hickory-server would only frame
//! TCP messages, yet it parses each into its own request type and encodes the answer with its own
//! encoder — a second way to build an answer, which is what the parity tests exist to prevent.
//! Framing is a two-byte length; owning the loop also puts connection limits and timeouts where
//! the resilience work needs them.
//!
//! A connection is served one query at a time, in order (pipelined queries queue in the socket);
//! it is closed after `idle_timeout` without a complete query, on a framing error, or at
//! shutdown once its current query is answered.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::query::event::Transport;
use crate::query::{Engine, canonical};

/// How long in-flight TCP answers may take to finish at shutdown.
const DRAIN: Duration = Duration::from_secs(5);

/// Serves `listener` until `shutdown` completes; then stops accepting, lets each connection
/// finish the query it is answering, and returns.
pub async fn serve(
    engine: Arc<Engine>,
    listener: TcpListener,
    idle_timeout: Duration,
    shutdown: impl Future<Output = ()>,
) {
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let (engine, stop) = (engine.clone(), stop_rx.clone());
                    connections.spawn(connection(engine, stream, peer, idle_timeout, stop));
                }
                Err(e) => {
                    // Out of descriptors or a connection reset before accept: back off briefly
                    // rather than spin on an error that repeats.
                    tracing::warn!(error = %e, "tcp accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    let _ = stop_tx.send(true);
    let drained = tokio::time::timeout(DRAIN, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        connections.abort_all();
    }
}

async fn connection(
    engine: Arc<Engine>,
    mut stream: TcpStream,
    peer: SocketAddr,
    idle_timeout: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let client = canonical(peer.ip());
    let _ = stream.set_nodelay(true);
    let mut buf = Vec::new();
    loop {
        let read = async {
            let len = stream.read_u16().await? as usize;
            buf.resize(len, 0);
            stream.read_exact(&mut buf).await?;
            Ok::<(), std::io::Error>(())
        };
        tokio::select! {
            r = tokio::time::timeout(idle_timeout, read) => match r {
                Ok(Ok(())) => {}
                // Closed, reset, short, or idle too long: done.
                Ok(Err(_)) | Err(_) => return,
            },
            _ = stop.wait_for(|s| *s) => return,
        }
        let started = Instant::now();
        let Some(reply) = engine.answer(&buf, client, Transport::Tcp, started).await else {
            // Not a query (a response, a runt): no answer, and no reason to trust the framing.
            return;
        };
        let mut framed = Vec::with_capacity(2 + reply.len());
        framed.extend_from_slice(&(reply.len() as u16).to_be_bytes());
        framed.extend_from_slice(&reply);
        if tokio::time::timeout(idle_timeout, stream.write_all(&framed))
            .await
            .map_or(true, |r| r.is_err())
        {
            return;
        }
    }
}
