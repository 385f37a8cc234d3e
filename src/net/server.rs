//! The DNS sockets: binding UDP and TCP on the same addresses, and serving them until shutdown
//! (UDP through `udp.rs`'s workers, TCP through `tcp.rs`).
//!
//! One IPV6_V6ONLY rule for both transports: an IPv6 wildcard (`[::]:53`) listens dual-stack —
//! it also serves IPv4 clients — unless the config lists an IPv4 address on the same port too, in
//! which case it is IPv6-only so both can bind. `listen = ["[::]:53"]` alone and
//! `listen = ["0.0.0.0:53", "[::]:53"]` thus both work, on UDP and TCP alike.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::TcpListener;

use crate::net::tcp::{Connections, TcpOptions};
use crate::net::udp::{UdpOptions, Workers};
use crate::query::Engine;

/// Pending TCP connections the kernel queues before accept.
const TCP_BACKLOG: i32 = 1024;

/// The sockets a server answers on: UDP and TCP on the same addresses.
#[derive(Debug)]
pub struct Listeners {
    /// UDP sockets: `workers` per address, sharing the port with SO_REUSEPORT.
    pub udp: Vec<std::net::UdpSocket>,
    /// TCP listeners, one per address, on the same port as its UDP sockets.
    pub tcp: Vec<TcpListener>,
}

/// Whether an IPv6 listener is IPv6-only (see the module docs); IPv4 ones ignore it.
pub fn v6only(addr: SocketAddr, all: &[SocketAddr]) -> bool {
    !addr.ip().is_unspecified() || all.iter().any(|a| a.is_ipv4() && a.port() == addr.port())
}

impl Listeners {
    /// Binds UDP (one socket) and TCP on every address. Port 0 picks a free port that is then
    /// used for both protocols (retrying when TCP finds that port taken), which is what tests want.
    pub async fn bind(addrs: &[SocketAddr]) -> io::Result<Listeners> {
        Listeners::bind_workers(addrs, 1).await
    }

    /// Same, with `workers` UDP sockets per address.
    pub async fn bind_workers(addrs: &[SocketAddr], workers: usize) -> io::Result<Listeners> {
        let mut udp = Vec::new();
        let mut tcp = Vec::new();
        for addr in addrs {
            let only = v6only(*addr, addrs);
            let mut attempt = 0;
            loop {
                let sockets = crate::net::udp::bind_reuseport(*addr, workers, only)
                    .map_err(|e| bind_err(addr, "udp", e))?;
                let bound = sockets[0].local_addr()?;
                match tcp_listener(bound, only) {
                    Ok(t) => {
                        udp.extend(sockets);
                        tcp.push(t);
                        break;
                    }
                    Err(e) if addr.port() == 0 && attempt < 16 => {
                        attempt += 1;
                        tracing::debug!(%bound, error = %e, "tcp port taken, picking another");
                    }
                    Err(e) => return Err(bind_err(&bound, "tcp", e)),
                }
            }
        }
        Ok(Listeners { udp, tcp })
    }

    /// How many UDP sockets (one worker each) are bound.
    pub fn udp_sockets(&self) -> usize {
        self.udp.len()
    }

    /// The bound addresses, once each (TCP listens on the same ones).
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        let mut addrs: Vec<SocketAddr> = self
            .udp
            .iter()
            .filter_map(|s| s.local_addr().ok())
            .collect();
        addrs.dedup();
        addrs
    }
}

fn tcp_listener(addr: SocketAddr, v6only: bool) -> io::Result<TcpListener> {
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    // Rebinding right after a restart, while old connections sit in TIME_WAIT.
    s.set_reuse_address(true)?;
    if addr.is_ipv6() {
        s.set_only_v6(v6only)?;
    }
    s.bind(&addr.into())?;
    s.listen(TCP_BACKLOG)?;
    s.set_nonblocking(true)?;
    TcpListener::from_std(s.into())
}

fn bind_err(addr: &SocketAddr, proto: &str, e: io::Error) -> io::Error {
    let hint = if e.kind() == io::ErrorKind::PermissionDenied && addr.port() < 1024 {
        " (ports below 1024 need CAP_NET_BIND_SERVICE: run as root, or as the packaged unit does, \
         with AmbientCapabilities=CAP_NET_BIND_SERVICE)"
    } else {
        ""
    };
    io::Error::new(
        e.kind(),
        format!("cannot listen on {proto} {addr}: {e}{hint}"),
    )
}

/// Serves `listeners` until `shutdown` completes, then stops accepting, lets in-flight answers
/// finish and returns.
pub async fn serve(
    engine: Arc<Engine>,
    listeners: Listeners,
    udp: UdpOptions,
    tcp: TcpOptions,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let workers = Workers::start(
        engine.clone(),
        listeners.udp,
        tokio::runtime::Handle::current(),
        udp,
    )?;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    // One count of connections for every listener: the caps are the process's.
    let connections = Connections::new(tcp);
    for listener in listeners.tcp {
        let mut stopped = stopped.clone();
        tasks.spawn(crate::net::tcp::serve(
            engine.clone(),
            listener,
            connections.clone(),
            async move {
                let _ = stopped.wait_for(|s| *s).await;
            },
        ));
    }
    shutdown.await;
    tracing::info!("shutting down: finishing in-flight queries");
    let _ = stop.send(true);
    while tasks.join_next().await.is_some() {}
    // Joining the workers blocks for at most one read timeout: off the runtime's threads.
    let _ = tokio::task::spawn_blocking(move || workers.stop()).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_v6only_rule() {
        let a = |s: &str| s.parse::<SocketAddr>().unwrap();
        let alone = [a("[::]:53")];
        assert!(!v6only(alone[0], &alone), "[::] alone is dual-stack");
        let both = [a("0.0.0.0:53"), a("[::]:53")];
        assert!(
            v6only(both[1], &both),
            "beside 0.0.0.0 on the same port: v6 only"
        );
        let other_port = [a("0.0.0.0:5353"), a("[::]:53")];
        assert!(!v6only(other_port[1], &other_port));
        assert!(v6only(a("[::1]:53"), &[a("[::1]:53")]));
    }
}
