//! Datagrams bound for one UDP socket, sent together: a task that has a datagram to send queues
//! it, and the queue goes out with one `sendmmsg` once the runtime has run the other tasks that
//! are ready now (a `yield_now`: tokio defers the flush until its worker has drained its run
//! queue or polled the driver). Twenty misses answered in one pass of the runtime cost one
//! system call and one wake-up of the receiver instead of twenty: on loopback the sender pays
//! for the delivery, and waking the peer (an IPI in a virtual machine) was a tenth of a miss's
//! CPU (`perf record -e cpu-clock` of a cold run).
//!
//! A thread that is not one of the runtime's (a UDP worker) can hold the flushes back instead
//! ([`held`]): the queues pushed to while it runs go out when it returns, from that thread, with
//! no task to spawn and no runtime worker to wake. Outside a runtime a push is sent at once. A datagram the kernel refuses is handed back to the
//! queue's owner with its tag and the error (an upstream query that could not go out fails at
//! once, as a direct send would, instead of waiting for its deadline).

use std::cell::RefCell;
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex};

use crate::base::sync::lock;

/// Datagrams per `sendmmsg`.
const CHUNK: usize = 64;

/// How long a flush waits for room in a full send buffer before it drops what is left.
const FULL_WAIT_MS: libc::c_int = 10;

/// Flushes held back by [`held`], each a queue's.
type Flushes = Vec<Box<dyn FnOnce()>>;

thread_local! {
    /// The flushes held back on this thread by [`held`], while it runs.
    static HELD: RefCell<Option<Flushes>> = const { RefCell::new(None) };
}

/// Runs `f`; the flushes its pushes schedule are held back and made, in order, when it returns.
/// Within a `held` already, the outer one makes them.
pub fn held<R>(f: impl FnOnce() -> R) -> R {
    let outer = HELD.with(|h| {
        let mut h = h.borrow_mut();
        let outer = h.is_some();
        h.get_or_insert_with(Vec::new);
        outer
    });
    if outer {
        return f();
    }
    // Made even if `f` panics: the tags' owners wait on them.
    struct Flush;
    impl Drop for Flush {
        fn drop(&mut self) {
            let flushes = HELD.with(|h| h.borrow_mut().take()).unwrap_or_default();
            for flush in flushes {
                flush();
            }
        }
    }
    let _flush = Flush;
    f()
}

/// Runs `f` once this pass is over: when [`held`] returns on this thread, else on the runtime
/// after the tasks that are ready now (a spawned task that yields once), else (no runtime) now.
/// What [`SendQueue`] sends its batches with, and the fence hands its admits over with.
pub fn after_pass(f: impl FnOnce() + Send + 'static) {
    let Err(f) = HELD.with(move |h| match h.borrow_mut().as_mut() {
        Some(flushes) => {
            flushes.push(Box::new(f));
            Ok(())
        }
        None => Err(f),
    }) else {
        return;
    };
    match tokio::runtime::Handle::try_current() {
        Ok(runtime) => {
            runtime.spawn(async move {
                tokio::task::yield_now().await;
                f();
            });
        }
        Err(_) => f(),
    }
}

/// What is told of a datagram that could not be sent: its tag and why.
pub type OnFail<T> = Box<dyn Fn(T, io::Error) + Send + Sync>;

/// Datagrams waiting for one socket `S` (which the queue owns, so its descriptor outlives every
/// pending flush), each with a tag `T` its owner knows it by.
pub struct SendQueue<S, T = ()> {
    socket: S,
    pending: Mutex<Pending<T>>,
    on_fail: OnFail<T>,
}

struct Pending<T> {
    datagrams: Vec<(Vec<u8>, SocketAddr)>,
    tags: Vec<T>,
    /// A flush is scheduled: later pushes ride on it.
    scheduled: bool,
}

impl<S, T> SendQueue<S, T>
where
    S: AsRawFd + Send + Sync + 'static,
    T: Send + 'static,
{
    /// A queue for `socket`; `on_fail` hears of each datagram the kernel refused.
    pub fn new(socket: S, on_fail: OnFail<T>) -> Arc<SendQueue<S, T>> {
        Arc::new(SendQueue {
            socket,
            pending: Mutex::new(Pending {
                datagrams: Vec::new(),
                tags: Vec::new(),
                scheduled: false,
            }),
            on_fail,
        })
    }

    /// The socket.
    pub fn socket(&self) -> &S {
        &self.socket
    }

    /// Queues `datagram` for `to`, known as `tag`; the first push of a pass schedules the flush.
    pub fn push(self: &Arc<Self>, datagram: Vec<u8>, to: SocketAddr, tag: T) {
        let schedule = {
            let mut p = lock(&self.pending);
            p.datagrams.push((datagram, to));
            p.tags.push(tag);
            !std::mem::replace(&mut p.scheduled, true)
        };
        if !schedule {
            return;
        }
        let queue = self.clone();
        after_pass(move || queue.flush());
    }

    /// Sends what is queued now; each datagram refused goes to `on_fail`.
    pub fn flush(&self) {
        let (datagrams, tags) = {
            let mut p = lock(&self.pending);
            p.scheduled = false;
            (
                std::mem::take(&mut p.datagrams),
                std::mem::take(&mut p.tags),
            )
        };
        let mut failed = send_all(self.socket.as_raw_fd(), &datagrams)
            .into_iter()
            .peekable();
        if failed.peek().is_none() {
            return;
        }
        for (i, tag) in tags.into_iter().enumerate() {
            if let Some((_, e)) = failed.next_if(|(at, _)| *at == i) {
                (self.on_fail)(tag, e);
            }
        }
    }
}

/// Sends every datagram, `CHUNK` a call; a datagram the kernel refuses is skipped (its peer may
/// be unreachable), and when the send buffer stays full for `FULL_WAIT_MS` the rest is dropped.
/// Returns those not sent, by index, in order, with the error.
fn send_all(fd: libc::c_int, datagrams: &[(Vec<u8>, SocketAddr)]) -> Vec<(usize, io::Error)> {
    let mut failed = Vec::new();
    let mut at = 0;
    let mut waited = false;
    while at < datagrams.len() {
        let chunk = &datagrams[at..datagrams.len().min(at + CHUNK)];
        let addrs: Vec<socket2::SockAddr> = chunk.iter().map(|(_, a)| (*a).into()).collect();
        let mut iovs: Vec<libc::iovec> = chunk
            .iter()
            .map(|(d, _)| libc::iovec {
                iov_base: d.as_ptr() as *mut libc::c_void,
                iov_len: d.len(),
            })
            .collect();
        let mut headers: Vec<libc::mmsghdr> = iovs
            .iter_mut()
            .zip(&addrs)
            .map(|(iov, addr)| {
                // SAFETY: msghdr is plain data; zeroed is valid, then filled in.
                let mut h: libc::msghdr = unsafe { std::mem::zeroed() };
                h.msg_name = addr.as_ptr() as *mut libc::c_void;
                h.msg_namelen = addr.len();
                h.msg_iov = iov;
                h.msg_iovlen = 1;
                libc::mmsghdr {
                    msg_hdr: h,
                    msg_len: 0,
                }
            })
            .collect();
        // SAFETY: every header points at an address and a buffer that live until the call returns.
        let n =
            unsafe { libc::sendmmsg(fd, headers.as_mut_ptr(), headers.len() as libc::c_uint, 0) };
        if n > 0 {
            at += n as usize;
            continue;
        }
        let e = io::Error::last_os_error();
        if e.kind() == io::ErrorKind::Interrupted {
            continue;
        }
        if e.kind() == io::ErrorKind::WouldBlock && !waited {
            waited = true;
            let mut p = libc::pollfd {
                fd,
                events: libc::POLLOUT,
                revents: 0,
            };
            // SAFETY: one pollfd, valid for the call.
            unsafe { libc::poll(&mut p, 1, FULL_WAIT_MS) };
            continue;
        }
        if e.kind() == io::ErrorKind::WouldBlock {
            crate::warn_limited!(error = %e, dropped = datagrams.len() - at, "udp send buffer full");
            let kind = e.kind();
            failed.extend((at..datagrams.len()).map(|i| (i, io::Error::from(kind))));
            return failed;
        }
        tracing::debug!(error = %e, to = %datagrams[at].1, "udp send failed");
        failed.push((at, e));
        at += 1;
    }
    failed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_queue_sends_everything_once_in_order() {
        let rx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        rx.set_read_timeout(Some(std::time::Duration::from_secs(2)))
            .unwrap();
        let to = rx.local_addr().unwrap();
        let refused = Arc::new(Mutex::new(Vec::new()));
        let r = refused.clone();
        let q = SendQueue::new(
            std::net::UdpSocket::bind("127.0.0.1:0").unwrap(),
            Box::new(move |tag: u32, _| lock(&r).push(tag)),
        );
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            for i in 0..150u8 {
                q.push(vec![i; 1 + i as usize], to, u32::from(i));
            }
            // Too large for a datagram: refused, told by its tag, the rest sent.
            q.push(vec![0; 70_000], to, 1000);
            assert_eq!(lock(&q.pending).datagrams.len(), 151, "nothing sent yet");
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        });
        assert_eq!(*lock(&refused), vec![1000]);
        let mut buf = [0u8; 512];
        for i in 0..150u8 {
            let n = rx.recv(&mut buf).unwrap();
            assert_eq!(&buf[..n], &vec![i; 1 + i as usize][..]);
        }
        // Outside a runtime: at once.
        q.push(b"now".to_vec(), to, 1);
        let n = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"now");
    }

    #[test]
    fn held_flushes_go_out_when_the_outermost_held_returns() {
        let rx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        rx.set_nonblocking(true).unwrap();
        let to = rx.local_addr().unwrap();
        let q: Arc<SendQueue<_, ()>> = SendQueue::new(
            std::net::UdpSocket::bind("127.0.0.1:0").unwrap(),
            Box::new(|_, _| {}),
        );
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        // A thread in the runtime's context that is not one of its workers, as a UDP worker is.
        let _in_runtime = runtime.enter();
        let mut buf = [0u8; 16];
        held(|| {
            q.push(b"one".to_vec(), to, ());
            held(|| q.push(b"two".to_vec(), to, ()));
            assert!(
                rx.recv(&mut buf).is_err(),
                "held back within the outer held"
            );
        });
        // Sent by the thread itself as `held` returned: no task, nothing for the runtime to run.
        rx.set_nonblocking(false).unwrap();
        rx.set_read_timeout(Some(std::time::Duration::from_secs(2)))
            .unwrap();
        let n = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"one");
        let n = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"two");
        assert!(lock(&q.pending).datagrams.is_empty());
        assert!(!lock(&q.pending).scheduled);
    }
}
