//! UDP socket I/O: binding the listening sockets, and reading and sending datagrams in batches
//! (`recvmmsg`/`sendmmsg`), one system call for up to [`BATCH`] of them. What is done with the
//! datagrams is `udp/mod.rs`'s business.

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;

use socket2::{Domain, Protocol, Socket, Type};

use crate::base::sockopt;

/// Largest datagram read; larger ones are truncated by the kernel and fail to parse. Also the
/// size of each answer buffer (`max_udp_payload` is at most this).
pub const MAX_DATAGRAM: usize = crate::config::MAX_UDP_PAYLOAD as usize;

/// Kernel receive buffer asked for each UDP socket (root gets it whole; others up to
/// `net.core.rmem_max`).
pub const RECEIVE_BUFFER: usize = 4 << 20;

/// Binds `n` UDP sockets on `addr` with SO_REUSEPORT (so they share the port and the kernel
/// spreads clients across them), the first choosing the port when `addr`'s is 0. `v6only` is
/// the IPV6_V6ONLY setting for an IPv6 address (see `server.rs` for the rule).
pub fn bind_reuseport(
    addr: SocketAddr,
    n: usize,
    v6only: bool,
) -> io::Result<Vec<std::net::UdpSocket>> {
    let mut sockets = Vec::with_capacity(n);
    let mut addr = addr;
    for _ in 0..n.max(1) {
        let s = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
        s.set_reuse_port(true)?;
        if addr.is_ipv6() {
            s.set_only_v6(v6only)?;
        }
        // Room for a burst: the default (~200 KiB) holds only a few hundred small datagrams, and
        // what does not fit is dropped before a worker sees it.
        sockopt::grow_buffer(s.as_raw_fd(), sockopt::Buffer::Receive, RECEIVE_BUFFER);
        s.bind(&addr.into())?;
        let s: std::net::UdpSocket = s.into();
        addr = s.local_addr()?;
        sockets.push(s);
    }
    Ok(sockets)
}

/// Whether a read may put the worker to sleep.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Wait {
    /// Block until a datagram comes (or the read timeout passes).
    Sleep,
    /// Busy polling: return at once when nothing is queued.
    No,
}

/// Datagrams read (and answers sent) per system call.
pub const BATCH: usize = 32;

/// Buffers for `recvmmsg`/`sendmmsg`: one read and one answer buffer per slot, with the
/// peer address of each. Boxed: 256 KiB is too much for a thread's stack.
pub(super) struct Batch {
    input: Box<[[u8; MAX_DATAGRAM]]>,
    output: Box<[[u8; MAX_DATAGRAM]]>,
    peers: Box<[libc::sockaddr_storage]>,
    pub(super) lens: [usize; BATCH],
    pub(super) out_lens: [usize; BATCH],
    iov_in: [libc::iovec; BATCH],
    iov_out: [libc::iovec; BATCH],
    hdr_in: [libc::mmsghdr; BATCH],
    hdr_out: [libc::mmsghdr; BATCH],
}

impl Batch {
    pub(super) fn new() -> Box<Batch> {
        let mut b = Box::new(Batch {
            input: vec![[0u8; MAX_DATAGRAM]; BATCH].into_boxed_slice(),
            output: vec![[0u8; MAX_DATAGRAM]; BATCH].into_boxed_slice(),
            // SAFETY: sockaddr_storage is plain data; all-zero is a valid value.
            peers: (0..BATCH).map(|_| unsafe { std::mem::zeroed() }).collect(),
            lens: [0; BATCH],
            out_lens: [0; BATCH],
            // SAFETY: arrays of plain C structs, for which all-zero is a valid value; their
            // pointers are set before every system call that reads them.
            iov_in: unsafe { std::mem::zeroed() },
            iov_out: unsafe { std::mem::zeroed() },
            hdr_in: unsafe { std::mem::zeroed() },
            hdr_out: unsafe { std::mem::zeroed() },
        });
        // The read headers point into the batch's own buffers, which never move: the batch is
        // boxed and stays in its box for the worker's life. So they are set up once, here.
        for i in 0..BATCH {
            b.iov_in[i] = libc::iovec {
                iov_base: b.input[i].as_mut_ptr() as *mut libc::c_void,
                iov_len: MAX_DATAGRAM,
            };
            b.hdr_in[i].msg_hdr.msg_name =
                &mut b.peers[i] as *mut libc::sockaddr_storage as *mut libc::c_void;
            b.hdr_in[i].msg_hdr.msg_iov = &mut b.iov_in[i];
            b.hdr_in[i].msg_hdr.msg_iovlen = 1;
        }
        b
    }

    /// Reads up to `BATCH` datagrams; returns how many. `Wait::Sleep` blocks for the first one
    /// (up to the socket's read timeout); `Wait::No` returns `WouldBlock` at once if none is
    /// queued.
    pub(super) fn receive(&mut self, fd: libc::c_int, wait: Wait) -> io::Result<usize> {
        // The kernel shrinks each filled slot's address length to the address it wrote.
        for h in &mut self.hdr_in {
            h.msg_hdr.msg_namelen =
                std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        }
        // SAFETY: every header points at live buffers owned by `self` (set up in `new`, never
        // moved) for the call's duration.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                self.hdr_in.as_mut_ptr(),
                BATCH as libc::c_uint,
                match wait {
                    Wait::Sleep => libc::MSG_WAITFORONE,
                    Wait::No => libc::MSG_DONTWAIT,
                },
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        for i in 0..n as usize {
            self.lens[i] = self.hdr_in[i].msg_len as usize;
        }
        Ok(n as usize)
    }

    pub(super) fn peer(&self, i: usize) -> Option<SocketAddr> {
        let s = &self.peers[i];
        match s.ss_family as libc::c_int {
            libc::AF_INET => {
                // SAFETY: the kernel wrote a sockaddr_in for this family.
                let a = unsafe { &*(s as *const _ as *const libc::sockaddr_in) };
                Some(SocketAddr::from((
                    u32::from_be(a.sin_addr.s_addr).to_be_bytes(),
                    u16::from_be(a.sin_port),
                )))
            }
            libc::AF_INET6 => {
                // SAFETY: the kernel wrote a sockaddr_in6 for this family.
                let a = unsafe { &*(s as *const _ as *const libc::sockaddr_in6) };
                Some(SocketAddr::V6(std::net::SocketAddrV6::new(
                    a.sin6_addr.s6_addr.into(),
                    u16::from_be(a.sin6_port),
                    a.sin6_flowinfo,
                    a.sin6_scope_id,
                )))
            }
            _ => None,
        }
    }

    /// The datagram read into slot `i` and the answer buffer of that slot.
    pub(super) fn slot(&mut self, i: usize) -> (&[u8], &mut [u8; MAX_DATAGRAM]) {
        (&self.input[i][..self.lens[i]], &mut self.output[i])
    }

    /// Sends the answers of the slots listed in `ready` to their peers in one call.
    pub(super) fn send(&mut self, fd: libc::c_int, ready: &[usize]) {
        for (j, &i) in ready.iter().enumerate() {
            self.iov_out[j] = libc::iovec {
                iov_base: self.output[i].as_mut_ptr() as *mut libc::c_void,
                iov_len: self.out_lens[i],
            };
            // SAFETY: msghdr is plain data; zeroed is valid, then filled in.
            let mut h: libc::msghdr = unsafe { std::mem::zeroed() };
            h.msg_name = &mut self.peers[i] as *mut libc::sockaddr_storage as *mut libc::c_void;
            h.msg_namelen = self.hdr_in[i].msg_hdr.msg_namelen;
            h.msg_iov = &mut self.iov_out[j];
            h.msg_iovlen = 1;
            self.hdr_out[j] = libc::mmsghdr {
                msg_hdr: h,
                msg_len: 0,
            };
        }
        let mut sent = 0;
        while sent < ready.len() {
            // SAFETY: headers `sent..ready.len()` point at live buffers owned by `self`.
            let n = unsafe {
                libc::sendmmsg(
                    fd,
                    self.hdr_out[sent..].as_mut_ptr(),
                    (ready.len() - sent) as libc::c_uint,
                    0,
                )
            };
            if n <= 0 {
                let e = io::Error::last_os_error();
                tracing::debug!(error = %e, "udp send failed");
                // Skip the datagram that failed (its peer may be unreachable) and go on.
                sent += 1;
                continue;
            }
            sent += n as usize;
        }
    }
}
