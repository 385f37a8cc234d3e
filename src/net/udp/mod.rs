//! DNS over UDP: worker threads that answer from their own thread whatever needs no waiting, and
//! hand the rest to the async runtime — both through the one query path (`query`).
//!
//! Why not hickory-server for UDP: its per-packet path parses the whole message, spawns a task,
//! builds the answer from records and encodes it again. A kiosk VLAN's traffic is overwhelmingly
//! the same few names, answered from the cache, or denials. Each worker owns a socket bound with
//! SO_REUSEPORT (the kernel spreads clients across workers), reads a batch of datagrams with one
//! `recvmmsg`, answers each with [`Engine::answer_now`] into the batch's answer buffers and sends
//! them with one `sendmmsg`. A query that must wait (upstream, firewall) is copied and taken as
//! far as it goes on the worker (its upstream query queued, to leave with the batch's other
//! upstream queries as the batch ends), then continues on the runtime; its reply is queued on the
//! socket's send queue, which sends the replies finished in one pass of the runtime with one
//! `sendmmsg`.

mod socket;

pub use socket::{MAX_DATAGRAM, bind_reuseport};

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::base::notify::Heartbeat;
use crate::base::sendq::{self, SendQueue};
use crate::net::ratelimit::RateLimiter;
use crate::query::event::Transport;
use crate::query::{Engine, Now, canonical};
use socket::{BATCH, Batch, Wait};

/// What the UDP workers do besides answering.
#[derive(Default)]
pub struct UdpOptions {
    /// How long a worker polls before it sleeps (`[server] busy_poll_us`).
    pub busy_poll: Duration,
    /// Per-client rate limit, when configured.
    pub rate_limit: Option<RateLimiter>,
    /// Bumped by worker `i` every turn of its loop, for the systemd watchdog.
    pub heartbeat: Option<Arc<Heartbeat>>,
}

/// Running UDP workers. Stopping them lets in-flight slow-path answers finish on the runtime.
pub struct Workers {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Workers {
    /// Starts one thread per socket; work that waits is spawned on `runtime`.
    pub fn start(
        engine: Arc<Engine>,
        sockets: Vec<UdpSocket>,
        runtime: tokio::runtime::Handle,
        options: UdpOptions,
    ) -> io::Result<Workers> {
        let stop = Arc::new(AtomicBool::new(false));
        let options = Arc::new(options);
        let mut threads = Vec::with_capacity(sockets.len());
        for (i, socket) in sockets.into_iter().enumerate() {
            // A short timeout so a worker notices the stop flag on an idle network.
            socket.set_read_timeout(Some(Duration::from_millis(200)))?;
            let socket = Arc::new(socket);
            let (engine, stop, runtime, options) = (
                engine.clone(),
                stop.clone(),
                runtime.clone(),
                options.clone(),
            );
            threads.push(
                std::thread::Builder::new()
                    .name(format!("dnsfence-udp-{i}"))
                    .spawn(move || worker(i, engine, socket, runtime, &options, stop))?,
            );
        }
        Ok(Workers { stop, threads })
    }

    /// Stops the workers and waits for their threads (at most one read timeout).
    pub fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            let _ = t.join();
        }
    }
}

fn worker(
    index: usize,
    engine: Arc<Engine>,
    socket: Arc<UdpSocket>,
    runtime: tokio::runtime::Handle,
    options: &UdpOptions,
    stop: Arc<AtomicBool>,
) {
    let fd = socket.as_raw_fd();
    // Queries continue on the runtime from this thread: its timers, sockets and spawns.
    let _runtime = runtime.enter();
    // Answers finished on the runtime leave together, one `sendmmsg` a pass (`base::sendq`).
    let replies = SendQueue::new(
        socket,
        Box::new(|src: SocketAddr, e| tracing::debug!(error = %e, %src, "udp send failed")),
    );
    let mut b = Batch::new();
    let mut ready = Vec::with_capacity(BATCH);
    let busy_poll = options.busy_poll;
    // When the last datagram came; the worker polls without sleeping until `busy_poll` after it.
    let mut last = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        if let Some(h) = &options.heartbeat {
            h.beat(index);
        }
        let wait = if !busy_poll.is_zero() && last.elapsed() < busy_poll {
            Wait::No
        } else {
            Wait::Sleep
        };
        let n = match b.receive(fd, wait) {
            Ok(n) => {
                last = Instant::now();
                n
            }
            Err(e) if wait == Wait::No && e.kind() == io::ErrorKind::WouldBlock => {
                std::hint::spin_loop();
                continue;
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) =>
            {
                continue;
            }
            Err(e) => {
                crate::warn_limited!(error = %e, "udp receive failed");
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        ready.clear();
        // The upstream queries and replies this batch queues leave as it ends (`held`), then
        // its answers.
        sendq::held(|| {
            for i in 0..n {
                answer(&mut b, i, &engine, options, &replies, &runtime, &mut ready);
            }
        });
        if !ready.is_empty() {
            b.send(fd, &ready);
        }
    }
}

/// Answers datagram `i` of the batch: into its answer buffer (and `ready`) when nothing needs
/// waiting, else on the runtime, its reply through `replies`.
fn answer(
    b: &mut Batch,
    i: usize,
    engine: &Arc<Engine>,
    options: &UdpOptions,
    replies: &Arc<SendQueue<Arc<UdpSocket>, SocketAddr>>,
    runtime: &tokio::runtime::Handle,
    ready: &mut Vec<usize>,
) {
    let Some(src) = b.peer(i).filter(|s| s.port() != 0) else {
        return;
    };
    let started = Instant::now();
    let client = canonical(src.ip());
    let (input, output) = b.slot(i);
    if let Some(limit) = &options.rate_limit
        && !limit.allow(client, started)
    {
        engine.rate_limited(input, client, started);
        return;
    }
    match engine.answer_now(input, client, Transport::Udp, started, output) {
        Now::Reply(len) => {
            b.out_lens[i] = len;
            ready.push(i);
        }
        Now::Drop => {}
        Now::Later(pending) => {
            let Some(waiting) = engine.begin_waiting() else {
                b.out_lens[i] = engine.answer_busy(&pending, input, output);
                ready.push(i);
                return;
            };
            let packet = input.to_vec();
            let (engine, replies) = (engine.clone(), replies.clone());
            start_here(runtime, async move {
                let _waiting = waiting;
                let reply = engine.resume(pending, &packet).await;
                replies.push(reply, src, src);
            });
        }
    }
}

/// Takes `task` as far as it goes on this thread without waiting (for a miss: the cache, and
/// the upstream query queued, to leave with the batch), then hands the rest to `runtime`. A
/// spawn alone would wait for a runtime worker to wake up before the upstream query went out.
/// The first poll's waker is a no-op: the runtime's first poll of the task registers its own.
fn start_here(runtime: &tokio::runtime::Handle, task: impl Future<Output = ()> + Send + 'static) {
    let mut task = Box::pin(task);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    if task.as_mut().poll(&mut cx).is_pending() {
        runtime.spawn(task);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listening_sockets_get_room_for_bursts() {
        let sockets = bind_reuseport("127.0.0.1:0".parse().unwrap(), 2, true).unwrap();
        assert_eq!(
            sockets[0].local_addr().unwrap(),
            sockets[1].local_addr().unwrap()
        );
        let granted = crate::base::sockopt::receive_buffer(sockets[0].as_raw_fd()).unwrap();
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            // The kernel reports twice what was asked (its bookkeeping share).
            assert!(
                granted >= socket::RECEIVE_BUFFER,
                "asked {}, got {granted}",
                socket::RECEIVE_BUFFER
            );
        } else {
            let default = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            let default = crate::base::sockopt::receive_buffer(default.as_raw_fd()).unwrap();
            eprintln!("not root: the buffer is capped by net.core.rmem_max ({granted} bytes)");
            assert!(granted >= default, "{granted} < default {default}");
        }
    }
}
