//! DNS over UDP: worker threads that answer the common cases straight from the wire, and hand
//! everything else to the full handler on the async runtime.
//!
//! Why not hickory-server for UDP: its per-packet path parses the whole message, spawns a task,
//! builds the answer from records and encodes it again. A kiosk VLAN's traffic is overwhelmingly
//! the same few names, answered from the cache, or denials. Each worker owns a socket bound with
//! SO_REUSEPORT (the kernel spreads clients across workers), reads with a blocking `recv_from`
//! on its own thread, and for a plain query (one question, class IN, at most an OPT record):
//!
//! - client in no view → REFUSED with EDE 18, built in place;
//! - name not allowed (enforce mode) → REFUSED/NXDOMAIN with EDE 15, built in place;
//! - allowed, in the packet cache, fits the client's UDP size, and every address still fresh in
//!   the fence's ledger → the cached bytes with ID, flags, case and TTLs patched.
//!
//! Anything else — a cache miss, a stale fence element, report mode, ANY, EDNS version > 0,
//! truncation — goes through `Shared::handle` exactly as TCP queries do, and a cacheable answer
//! is then stored for the next hit. Both paths count the same metrics and write the same log.

use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use hickory_server::net::NetError;
use hickory_server::net::xfer::Protocol;
use hickory_server::proto::op::ResponseCode;
use hickory_server::proto::rr::{Record, RecordType};
use hickory_server::proto::serialize::binary::BinEncoder;
use hickory_server::server::{Request, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponse;

use crate::config::{DenyRcode, ViewMode};
use crate::policy::{DenyReason, wire_name_text};
use crate::querylog::Verdict;
use crate::server::{Outcome, Shared, ede};
use crate::sockopt;
use crate::wire::lowercase_name;

/// Largest datagram read; larger ones are truncated by the kernel and fail to parse.
const MAX_DATAGRAM: usize = 4096;

/// Kernel receive buffer asked for each UDP socket (root gets it whole; others up to
/// `net.core.rmem_max`).
const RECEIVE_BUFFER: usize = 4 << 20;

/// Binds `n` UDP sockets on `addr` with SO_REUSEPORT (so they share the port), the first
/// choosing the port when `addr`'s is 0.
pub fn bind_reuseport(addr: SocketAddr, n: usize) -> io::Result<Vec<UdpSocket>> {
    let mut sockets = Vec::with_capacity(n);
    let mut addr = addr;
    for _ in 0..n.max(1) {
        let s = reuseport_socket(addr)?;
        addr = s.local_addr()?;
        sockets.push(s);
    }
    Ok(sockets)
}

fn reuseport_socket(addr: SocketAddr) -> io::Result<UdpSocket> {
    let domain = if addr.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    // SAFETY: plain socket(2); the result is checked and owned right away.
    let fd = unsafe { libc::socket(domain, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor nothing else owns.
    let socket = unsafe { UdpSocket::from_raw_fd(fd) };
    let fd = socket.as_raw_fd();
    sockopt::set_int(fd, libc::SOL_SOCKET, libc::SO_REUSEPORT, 1)?;
    if addr.is_ipv6() {
        // IPV6_V6ONLY keeps [::] from also taking the IPv4 port.
        sockopt::set_int(fd, libc::IPPROTO_IPV6, libc::IPV6_V6ONLY, 1)?;
    }
    // Room for a burst: the default (~200 KiB) holds only a few hundred small datagrams, and
    // what does not fit is dropped before the worker sees it.
    sockopt::grow_buffer(fd, sockopt::Buffer::Receive, RECEIVE_BUFFER);
    let (storage, len) = sockaddr(addr);
    // SAFETY: `storage` holds a valid sockaddr of `len` bytes for this family.
    let rc = unsafe {
        libc::bind(
            socket.as_raw_fd(),
            &storage as *const libc::sockaddr_storage as *const libc::sockaddr,
            len,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(socket)
}

fn sockaddr(addr: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: sockaddr_storage is plain data; zeroed is a valid initial state.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    match addr {
        SocketAddr::V4(a) => {
            // SAFETY: sockaddr_storage is large and aligned enough for sockaddr_in.
            let sin = unsafe { &mut *(&mut storage as *mut _ as *mut libc::sockaddr_in) };
            sin.sin_family = libc::AF_INET as libc::sa_family_t;
            sin.sin_port = a.port().to_be();
            sin.sin_addr = libc::in_addr {
                s_addr: u32::from_ne_bytes(a.ip().octets()),
            };
            (
                storage,
                std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            )
        }
        SocketAddr::V6(a) => {
            // SAFETY: sockaddr_storage is large and aligned enough for sockaddr_in6.
            let sin6 = unsafe { &mut *(&mut storage as *mut _ as *mut libc::sockaddr_in6) };
            sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sin6.sin6_port = a.port().to_be();
            sin6.sin6_addr = libc::in6_addr {
                s6_addr: a.ip().octets(),
            };
            sin6.sin6_scope_id = a.scope_id();
            (
                storage,
                std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t,
            )
        }
    }
}

/// Running UDP workers. Stopping them lets in-flight slow-path answers finish on the runtime.
pub struct Workers {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Workers {
    /// Starts one thread per socket; slow-path work is spawned on `runtime`.
    pub fn start(
        shared: Arc<Shared>,
        sockets: Vec<UdpSocket>,
        runtime: tokio::runtime::Handle,
    ) -> io::Result<Workers> {
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::with_capacity(sockets.len());
        for (i, socket) in sockets.into_iter().enumerate() {
            // A short timeout so a worker notices the stop flag on an idle network.
            socket.set_read_timeout(Some(Duration::from_millis(200)))?;
            let socket = Arc::new(socket);
            let (shared, stop, runtime) = (shared.clone(), stop.clone(), runtime.clone());
            threads.push(
                std::thread::Builder::new()
                    .name(format!("dnsfence-udp-{i}"))
                    .spawn(move || worker(shared, socket, runtime, stop))?,
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

/// Whether a read may put the worker to sleep.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Wait {
    /// Block until a datagram comes (or the read timeout passes).
    Sleep,
    /// Busy polling: return at once when nothing is queued.
    No,
}

/// Datagrams read (and answers sent) per system call.
const BATCH: usize = 32;

/// Buffers for `recvmmsg`/`sendmmsg`: one read and one answer buffer per slot, with the
/// peer address of each. Boxed: 256 KiB is too much for a thread's stack.
struct Batch {
    input: Box<[[u8; MAX_DATAGRAM]]>,
    output: Box<[[u8; MAX_DATAGRAM]]>,
    peers: Box<[libc::sockaddr_storage]>,
    lens: [usize; BATCH],
    out_lens: [usize; BATCH],
    iov_in: [libc::iovec; BATCH],
    iov_out: [libc::iovec; BATCH],
    hdr_in: [libc::mmsghdr; BATCH],
    hdr_out: [libc::mmsghdr; BATCH],
}

impl Batch {
    fn new() -> Box<Batch> {
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
    fn receive(&mut self, fd: libc::c_int, wait: Wait) -> io::Result<usize> {
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

    fn peer(&self, i: usize) -> Option<SocketAddr> {
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

    /// Sends the answers of the slots listed in `ready` to their peers in one call.
    fn send(&mut self, fd: libc::c_int, ready: &[usize]) {
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

fn worker(
    shared: Arc<Shared>,
    socket: Arc<UdpSocket>,
    runtime: tokio::runtime::Handle,
    stop: Arc<AtomicBool>,
) {
    let fd = socket.as_raw_fd();
    let mut b = Batch::new();
    let mut ready = Vec::with_capacity(BATCH);
    // When the last datagram came; the worker polls without sleeping until `busy_poll` after it.
    let mut last = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        let wait = if !shared.busy_poll.is_zero() && last.elapsed() < shared.busy_poll {
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
                tracing::warn!(error = %e, "udp receive failed");
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        ready.clear();
        for i in 0..n {
            let Some(src) = b.peer(i).filter(|s| s.port() != 0) else {
                continue;
            };
            let started = Instant::now();
            let len = b.lens[i];
            let (input, output) = (&b.input[i][..len], &mut b.output[i]);
            match fast(&shared, input, src, output, started) {
                Fast::Reply(out_len) => {
                    b.out_lens[i] = out_len;
                    ready.push(i);
                }
                Fast::Drop => {}
                Fast::Slow => {
                    let packet = input.to_vec();
                    let (shared, socket) = (shared.clone(), socket.clone());
                    runtime.spawn(slow(shared, socket, packet, src));
                }
            }
        }
        if !ready.is_empty() {
            b.send(fd, &ready);
        }
    }
}

/// What the fast path made of a datagram.
enum Fast {
    /// An answer of this length is in the output buffer.
    Reply(usize),
    /// Not answerable (a response, or too short to carry an ID): dropped and counted.
    Drop,
    /// Needs the full handler.
    Slow,
}

/// Whether and how the query carried EDNS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EdnsState {
    /// No OPT record.
    None,
    /// OPT without the DO bit.
    Plain,
    /// OPT with DO set.
    Dnssec,
}

/// The parts of a plain query the fast path reads.
#[derive(Debug, Clone, Copy)]
struct Parsed {
    /// End of the question section.
    question_end: usize,
    qtype: u16,
    edns: EdnsState,
    /// The client's UDP payload size (512 without EDNS).
    udp_size: u16,
}

/// Reads a plain query: one question of class IN, no answer/authority records, at most one
/// additional record which is an OPT of version 0. Anything else is `None` (the slow path
/// answers it, with FORMERR, NOTIMP or BADVERS where due).
fn parse(pkt: &[u8]) -> Option<Parsed> {
    if pkt.len() < 17 {
        return None;
    }
    let u16_at = |i: usize| u16::from_be_bytes([pkt[i], pkt[i + 1]]);
    // QR=0, opcode 0; TC clear.
    if pkt[2] & 0xfa != 0 {
        return None;
    }
    if u16_at(4) != 1 || u16_at(6) != 0 || u16_at(8) != 0 || u16_at(10) > 1 {
        return None;
    }
    let mut pos = 12;
    loop {
        let n = *pkt.get(pos)? as usize;
        if n == 0 {
            pos += 1;
            break;
        }
        if n > 63 {
            return None;
        }
        pos += 1 + n;
    }
    if pos + 4 > pkt.len() || pos - 12 > 255 {
        return None;
    }
    let qtype = u16_at(pos);
    if u16_at(pos + 2) != 1 {
        return None;
    }
    let question_end = pos + 4;
    let (edns, udp_size) = if u16_at(10) == 1 {
        // OPT: root name, type 41, class = payload size, TTL = ext-rcode, version, flags.
        let o = question_end;
        if pkt.len() < o + 11 || pkt[o] != 0 || u16_at(o + 1) != 41 {
            return None;
        }
        if pkt[o + 6] != 0 {
            return None; // EDNS version > 0: BADVERS from the slow path
        }
        let rdlen = u16_at(o + 9) as usize;
        if o + 11 + rdlen != pkt.len() {
            return None;
        }
        let dnssec = pkt[o + 7] & 0x80 != 0;
        (
            if dnssec {
                EdnsState::Dnssec
            } else {
                EdnsState::Plain
            },
            u16_at(o + 3).max(512),
        )
    } else {
        if question_end != pkt.len() {
            return None;
        }
        (EdnsState::None, 512)
    };
    Some(Parsed {
        question_end,
        qtype,
        edns,
        udp_size,
    })
}

/// Writes a header-and-question answer with an optional EDE: deny and no-view answers.
fn write_code(
    pkt: &[u8],
    q: &Parsed,
    rcode: u8,
    info_code: u16,
    text: &str,
    max_udp: u16,
    out: &mut [u8],
) -> usize {
    let qe = q.question_end;
    out[0] = pkt[0];
    out[1] = pkt[1];
    out[2] = 0x80 | (pkt[2] & 0x01); // QR, RD as asked
    out[3] = 0x80 | (pkt[3] & 0x10) | rcode; // RA, CD as asked
    out[4..6].copy_from_slice(&1u16.to_be_bytes());
    out[6..10].fill(0);
    let arcount: u16 = if q.edns == EdnsState::None { 0 } else { 1 };
    out[10..12].copy_from_slice(&arcount.to_be_bytes());
    out[12..qe].copy_from_slice(&pkt[12..qe]);
    let mut n = qe;
    if q.edns != EdnsState::None {
        let payload = q.udp_size.clamp(512, max_udp);
        let opt_len = 4 + 2 + text.len();
        crate::cache::write_opt(
            &mut out[n..n + 11],
            payload,
            q.edns == EdnsState::Dnssec,
            opt_len as u16,
        );
        out[n + 11..n + 13].copy_from_slice(&ede::OPTION_CODE.to_be_bytes());
        out[n + 13..n + 15].copy_from_slice(&((2 + text.len()) as u16).to_be_bytes());
        out[n + 15..n + 17].copy_from_slice(&info_code.to_be_bytes());
        out[n + 17..n + 17 + text.len()].copy_from_slice(text.as_bytes());
        n += 17 + text.len();
    }
    n
}

fn fast(shared: &Shared, pkt: &[u8], src: SocketAddr, out: &mut [u8], started: Instant) -> Fast {
    if pkt.len() < 12 || pkt[2] & 0x80 != 0 {
        // Too short for a header, or a response: nothing to answer.
        shared.count_malformed();
        return Fast::Drop;
    }
    if let Some(limit) = &shared.rate_limit
        && !limit.allow(src.ip(), started)
    {
        // Dropped, not answered: an answer would serve a reflection attack.
        shared.count_rate_limited(src.ip());
        return Fast::Drop;
    }
    let Some(q) = parse(pkt) else {
        return Fast::Slow;
    };
    let qtype = RecordType::from(q.qtype);
    if matches!(qtype, RecordType::ANY | RecordType::AXFR | RecordType::IXFR) {
        return Fast::Slow;
    }
    let policy = shared.policy.load();
    let client = match src.ip() {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(src.ip(), IpAddr::V4),
        v4 => v4,
    };
    let Some(view) = policy.view_for(client) else {
        let n = write_code(
            pkt,
            &q,
            5,
            ede::PROHIBITED,
            "client is in no dnsfence view",
            shared.max_udp_payload,
            out,
        );
        let outcome = Outcome::refused(DenyReason::NoView.as_str());
        shared.finish_fast(
            src,
            pkt,
            &q_name(pkt, &q),
            qtype,
            &outcome,
            ResponseCode::Refused,
            started,
        );
        return Fast::Reply(n);
    };
    let mut buf = [0u8; 256];
    let Some(text) = wire_name_text(&pkt[12..q.question_end - 4], &mut buf) else {
        return Fast::Slow;
    };
    let Some(entry) = view.lookup_normalized(text) else {
        if view.mode == ViewMode::Report {
            return Fast::Slow;
        }
        let (rcode, code) = match view.deny_rcode {
            DenyRcode::Refused => (5, ResponseCode::Refused),
            DenyRcode::Nxdomain => (3, ResponseCode::NXDomain),
        };
        let n = write_code(
            pkt,
            &q,
            rcode,
            ede::BLOCKED,
            "name is not on the dnsfence allowlist",
            shared.max_udp_payload,
            out,
        );
        let mut outcome = Outcome::refused(DenyReason::NotAllowlisted.as_str());
        outcome.view = Some(&view.name);
        outcome.verdict = Verdict::Denied;
        outcome.denied_name = Some(text.into());
        shared.finish_fast(src, pkt, &q_name(pkt, &q), qtype, &outcome, code, started);
        return Fast::Reply(n);
    };
    // Allowed: a cache hit needs the entry, room in the client's UDP size, and fresh elements.
    let mut name = [0u8; 256];
    let wire = &pkt[12..q.question_end - 4];
    name[..wire.len()].copy_from_slice(wire);
    lowercase_name(&mut name[..wire.len()]);
    let now = Instant::now();
    let Some(cached) = shared
        .upstream
        .cache()
        .get(&name[..wire.len()], q.qtype, now)
    else {
        return Fast::Slow;
    };
    let (limit, edns) = match q.edns {
        EdnsState::None => (512, None),
        state => {
            let payload = q.udp_size.clamp(512, shared.max_udp_payload);
            (payload, Some((payload, state == EdnsState::Dnssec)))
        }
    };
    if cached.wire_len(edns.is_some()) > limit as usize {
        return Fast::Slow;
    }
    if let Some(fence) = &shared.fence
        && !cached.addrs.is_empty()
    {
        let ports = if fence.needs_ports(view.index) {
            crate::server::ports_of(&policy, &entry.values)
        } else {
            Vec::new()
        };
        if !fence.is_fresh(view.index, &cached.addrs, &ports, cached.age(now), now) {
            return Fast::Slow;
        }
    }
    let Some(n) = cached.write(pkt, q.question_end, edns, now, out) else {
        return Fast::Slow;
    };
    let mut outcome = Outcome::allowed(&view.name);
    outcome.cache_hit = true;
    outcome.endpoint_set = entry
        .values
        .first()
        .map(|&i| policy.catalog.sets[i as usize].id.as_str());
    let rcode = ResponseCode::from(0, out[3] & 0x0f);
    shared.finish_fast(src, pkt, &q_name(pkt, &q), qtype, &outcome, rcode, started);
    Fast::Reply(n)
}

/// The question name as the client wrote it, for the query log (built only when logging).
struct QName<'a>(&'a [u8]);

fn q_name<'a>(pkt: &'a [u8], q: &Parsed) -> QName<'a> {
    QName(&pkt[12..q.question_end - 4])
}

impl std::fmt::Display for QName<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut i = 0;
        let w = self.0;
        if w.first() == Some(&0) {
            return f.write_str(".");
        }
        while i < w.len() && w[i] != 0 {
            let n = w[i] as usize;
            let label = w.get(i + 1..i + 1 + n).unwrap_or_default();
            for &b in label {
                if b.is_ascii_graphic() && b != b'.' && b != b'\\' {
                    write!(f, "{}", b as char)?;
                } else {
                    write!(f, "\\{b:03}")?;
                }
            }
            f.write_str(".")?;
            i += 1 + n;
        }
        Ok(())
    }
}

impl Shared {
    /// Metrics and the query log for an answer the fast path sent.
    #[allow(clippy::too_many_arguments)]
    fn finish_fast(
        &self,
        src: SocketAddr,
        _pkt: &[u8],
        name: &QName<'_>,
        qtype: RecordType,
        outcome: &Outcome<'_>,
        rcode: ResponseCode,
        started: Instant,
    ) {
        self.count(qtype, outcome, started.elapsed());
        if self.log.wants(outcome.verdict) {
            self.log_query(
                src.ip(),
                true,
                &name.to_string(),
                qtype,
                outcome,
                rcode,
                started,
            );
        }
    }

    fn count_rate_limited(&self, client: IpAddr) {
        let policy = self.policy.load();
        let view = policy
            .view_for(client)
            .map_or(crate::metrics::NO_VIEW, |v| v.name.as_str());
        self.metrics
            .view(view)
            .denied(&self.metrics, "rate_limited");
    }

    fn count_malformed(&self) {
        self.metrics
            .denied
            .with_label_values(&[crate::metrics::NO_VIEW, "malformed"])
            .inc();
    }
}

/// The full handler for one datagram (it fills the answer cache the fast path reads).
async fn slow(shared: Arc<Shared>, socket: Arc<UdpSocket>, packet: Vec<u8>, src: SocketAddr) {
    let request = match Request::from_bytes(packet.clone(), src, Protocol::Udp) {
        Ok(r) => r,
        Err(_) => {
            // The header is there (checked before): answer FORMERR with no sections.
            let mut out = [0u8; 12];
            out[..2].copy_from_slice(&packet[..2]);
            out[2] = 0x80 | (packet[2] & 0x79);
            out[3] = 0x80 | 1;
            let _ = socket.send_to(&out, src);
            shared.count_malformed();
            return;
        }
    };
    let max = match &request.edns {
        Some(e) => e.max_payload().clamp(512, shared.max_udp_payload),
        None => 512,
    };
    let responder = UdpResponder {
        socket,
        dst: src,
        max,
    };
    shared.handle(&request, responder).await;
}

/// Sends the full handler's answer on the worker's socket, truncated to the client's size.
#[derive(Clone)]
struct UdpResponder {
    socket: Arc<UdpSocket>,
    dst: SocketAddr,
    max: u16,
}

#[async_trait::async_trait]
impl ResponseHandler for UdpResponder {
    async fn send_response<'a>(
        &mut self,
        response: MessageResponse<
            '_,
            'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
        >,
    ) -> Result<ResponseInfo, NetError> {
        let mut bytes = Vec::with_capacity(512);
        let mut encoder = BinEncoder::new(&mut bytes);
        encoder.set_max_size(self.max);
        let info = response.destructive_emit(&mut encoder)?;
        self.socket
            .send_to(&bytes, self.dst)
            .map_err(|e| NetError::from(format!("udp send: {e}")))?;
        Ok(info)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listening_sockets_get_room_for_bursts() {
        let sockets = bind_reuseport("127.0.0.1:0".parse().unwrap(), 2).unwrap();
        assert_eq!(
            sockets[0].local_addr().unwrap(),
            sockets[1].local_addr().unwrap()
        );
        let granted = sockopt::receive_buffer(sockets[0].as_raw_fd()).unwrap();
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            // The kernel reports twice what was asked (its bookkeeping share).
            assert!(
                granted >= RECEIVE_BUFFER,
                "asked {RECEIVE_BUFFER}, got {granted}"
            );
        } else {
            let default = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            let default = sockopt::receive_buffer(default.as_raw_fd()).unwrap();
            eprintln!("not root: the buffer is capped by net.core.rmem_max ({granted} bytes)");
            assert!(granted >= default, "{granted} < default {default}");
        }
    }

    fn query(name: &[u8], qtype: u16, opt: Option<(u16, bool)>) -> Vec<u8> {
        let mut q = vec![
            0x12,
            0x34,
            0x01,
            0x00,
            0,
            1,
            0,
            0,
            0,
            0,
            0,
            u8::from(opt.is_some()),
        ];
        q.extend_from_slice(name);
        q.extend_from_slice(&qtype.to_be_bytes());
        q.extend_from_slice(&[0, 1]);
        if let Some((size, dnssec)) = opt {
            q.push(0);
            q.extend_from_slice(&41u16.to_be_bytes());
            q.extend_from_slice(&size.to_be_bytes());
            q.extend_from_slice(&[0, 0, if dnssec { 0x80 } else { 0 }, 0, 0, 0]);
        }
        q
    }

    #[test]
    fn parses_plain_queries_only() {
        let name = b"\x06manage\x09microsoft\x03com\x00";
        let p = parse(&query(name, 1, None)).unwrap();
        assert_eq!(
            (p.question_end, p.qtype, p.edns, p.udp_size),
            (12 + 22 + 4, 1, EdnsState::None, 512)
        );
        let p = parse(&query(name, 28, Some((1232, true)))).unwrap();
        assert_eq!((p.edns, p.udp_size), (EdnsState::Dnssec, 1232));
        let p = parse(&query(name, 28, Some((100, false)))).unwrap();
        assert_eq!(p.udp_size, 512, "below 512 counts as 512");
        let mut bad = query(name, 1, None);
        bad[2] |= 0x08; // opcode 1
        assert!(parse(&bad).is_none());
        let mut two = query(name, 1, None);
        two[5] = 2;
        assert!(parse(&two).is_none());
        let mut v1 = query(name, 1, Some((1232, false)));
        let n = v1.len();
        v1[n - 5] = 1; // EDNS version 1
        assert!(parse(&v1).is_none());
        let mut chaos = query(name, 16, None);
        let n = chaos.len();
        chaos[n - 1] = 3;
        assert!(parse(&chaos).is_none());
        assert!(
            parse(&query(b"\xc0\x0c", 1, None)).is_none(),
            "compressed question"
        );
        assert!(parse(&query(name, 1, None)[..20]).is_none(), "truncated");
    }

    #[test]
    fn deny_answers_carry_the_ede() {
        let name = b"\x04evil\x07example\x00";
        let q = query(name, 1, Some((4096, true)));
        let p = parse(&q).unwrap();
        let mut out = [0u8; 512];
        let n = write_code(&q, &p, 5, ede::BLOCKED, "blocked", 1232, &mut out);
        let m = hickory_server::proto::op::Message::from_vec(&out[..n]).unwrap();
        assert_eq!(m.metadata.response_code, ResponseCode::Refused);
        assert_eq!(m.metadata.id, 0x1234);
        assert!(m.metadata.recursion_desired && m.metadata.recursion_available);
        let edns = m.edns.unwrap();
        assert_eq!(edns.max_payload(), 1232);
        assert!(edns.flags().dnssec_ok);
        let opt = edns
            .option(hickory_server::proto::rr::rdata::opt::EdnsCode::Unknown(15))
            .unwrap();
        match opt {
            hickory_server::proto::rr::rdata::opt::EdnsOption::Unknown(15, d) => {
                assert_eq!(&d[..2], &15u16.to_be_bytes());
                assert_eq!(&d[2..], b"blocked");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(QName(&name[..]).to_string(), "evil.example.");
    }
}

#[cfg(test)]
mod garbage {
    use super::*;

    #[test]
    fn parse_never_panics_on_random_bytes() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut parsed = 0;
        for i in 0..20_000usize {
            let len = (next() % 96) as usize;
            let mut pkt: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            // Every other packet gets a plausible header so parsing goes deeper.
            if i % 2 == 0 && len >= 12 {
                pkt[2] = 0x01;
                pkt[3] = 0;
                pkt[4..12].copy_from_slice(&[0, 1, 0, 0, 0, 0, 0, (i % 3 == 0) as u8]);
            }
            if let Some(q) = parse(&pkt) {
                parsed += 1;
                assert!(q.question_end <= pkt.len());
                let mut out = [0u8; MAX_DATAGRAM];
                let n = write_code(&pkt, &q, 5, ede::BLOCKED, "x", 1232, &mut out);
                assert!(n >= q.question_end);
            }
        }
        assert!(parsed < 20_000);
    }
}
