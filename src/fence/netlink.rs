//! A minimal NETLINK_NETFILTER client: nf_tables set-element batches and existence checks here,
//! the ip_set messages of the ipset backend in `ipset.rs` over the same socket. Nothing more.
//!
//! Why our own: the Rust crates that speak nf_tables netlink are GPL (rustables, and the bindings
//! to libnftnl/libmnl) or send one message per element without batching (ripset); shelling out to
//! `nft` costs a process per update. The messages needed here are few and stable kernel ABI
//! (include/uapi/linux/netfilter/nf_tables.h): a batch of NEWSETELEM / DESTROYSETELEM messages
//! between BATCH_BEGIN and BATCH_END, each acknowledged by the kernel, GETTABLE / GETSET to
//! notice that someone wiped the ruleset, and a GETSETELEM dump to adopt what a set already holds
//! at start (after a crash).
//!
//! The socket is blocking and lives on the fence's own thread: it never touches the async runtime.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use crate::base::sockopt;

const NETLINK_NETFILTER: libc::c_int = 12;
const NLMSG_HDRLEN: usize = 16;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
pub(super) const NLM_F_REQUEST: u16 = 0x1;
pub(super) const NLM_F_ACK: u16 = 0x4;
/// NLM_F_ROOT | NLM_F_MATCH: a dump.
pub(super) const NLM_F_DUMP: u16 = 0x300;
const NLM_F_CREATE: u16 = 0x400;
const NLA_F_NESTED: u16 = 0x8000;
/// The attribute type without its flags (nested, network byte order).
const NLA_TYPE_MASK: u16 = 0x3fff;

const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;

const NFT_MSG_GETTABLE: u16 = 1;
const NFT_MSG_GETSET: u16 = 10;
const NFT_MSG_NEWSETELEM: u16 = 12;
const NFT_MSG_GETSETELEM: u16 = 13;
const NFT_MSG_DESTROYSETELEM: u16 = 30;

const NFTA_TABLE_NAME: u16 = 1;
const NFTA_SET_TABLE: u16 = 1;
const NFTA_SET_NAME: u16 = 2;
const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
const NFTA_SET_ELEM_LIST_SET: u16 = 2;
const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_SET_ELEM_KEY: u16 = 1;
const NFTA_SET_ELEM_TIMEOUT: u16 = 4;
const NFTA_SET_ELEM_EXPIRATION: u16 = 5;
const NFTA_DATA_VALUE: u16 = 1;

/// `NFPROTO_INET`, the family of an `inet` table.
pub const FAMILY_INET: u8 = 1;
/// `NFPROTO_IPV4`, an `ip` table.
pub const FAMILY_IP: u8 = 2;
/// `NFPROTO_IPV6`, an `ip6` table.
pub const FAMILY_IP6: u8 = 10;

/// What to do with a group of elements of one set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpKind {
    /// NEWSETELEM: add (an existing element is left as it is by kernels before 6.11).
    Add,
    /// DESTROYSETELEM (Linux 6.3+): delete if present, no error if absent.
    Destroy,
}

/// One message of a batch: elements of one set.
#[derive(Debug, Clone)]
pub struct SetOp<'a> {
    /// Add or destroy.
    pub kind: OpKind,
    /// Table family (`FAMILY_INET`…).
    pub family: u8,
    /// Table name.
    pub table: &'a str,
    /// Set name.
    pub set: &'a str,
    /// Element keys (network byte order, concatenations padded to 4 bytes) and timeouts in ms.
    pub elements: Vec<(&'a [u8], Option<u64>)>,
}

/// What became of one message of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpResult {
    /// Committed.
    Ok,
    /// The kernel refused it with this errno.
    Err(i32),
    /// Another message of the batch failed, so nothing was committed; retry it.
    Aborted,
}

/// A NETLINK_NETFILTER socket (the nf_tables and ip_set subsystems).
#[derive(Debug)]
pub struct NetfilterSocket {
    fd: OwnedFd,
    seq: u32,
    buf: Vec<u8>,
    rbuf: Vec<u8>,
}

impl NetfilterSocket {
    /// Opens and binds the socket in the calling thread's network namespace. Replies are awaited
    /// for at most `reply_timeout`.
    pub fn open(reply_timeout: std::time::Duration) -> io::Result<NetfilterSocket> {
        // SAFETY: plain socket(2) call; the result is checked before use.
        let raw = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                NETLINK_NETFILTER,
            )
        };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a fresh, valid descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: sockaddr_nl is plain data; zeroed is its documented initial state.
        let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        // SAFETY: `addr` is a valid sockaddr_nl and the length matches it.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                &addr as *const libc::sockaddr_nl as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        let tv = libc::timeval {
            tv_sec: reply_timeout.as_secs() as libc::time_t,
            tv_usec: reply_timeout.subsec_micros() as libc::suseconds_t,
        };
        // SAFETY: setsockopt with a timeval of the right size.
        let rc = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                &tv as *const libc::timeval as *const libc::c_void,
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        // A batch must fit in one send, and its ACKs in the receive buffer: ask for 4 MiB each.
        for buffer in [sockopt::Buffer::Send, sockopt::Buffer::Receive] {
            sockopt::grow_buffer(fd.as_raw_fd(), buffer, 4 << 20);
        }
        Ok(NetfilterSocket {
            fd,
            seq: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs() as u32)
                .unwrap_or(1),
            buf: Vec::with_capacity(64 << 10),
            rbuf: vec![0u8; 256 << 10],
        })
    }

    pub(super) fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    /// Sends `ops` as one transaction and waits for the kernel's verdict on each. When any
    /// message fails the kernel commits none of them: the others come back as
    /// [`OpResult::Aborted`].
    pub fn apply(&mut self, ops: &[SetOp<'_>]) -> io::Result<Vec<OpResult>> {
        if ops.is_empty() {
            return Ok(Vec::new());
        }
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        let begin = self.next_seq();
        batch_marker(&mut buf, NFNL_MSG_BATCH_BEGIN, begin);
        let mut seqs = Vec::with_capacity(ops.len());
        for op in ops {
            let seq = self.next_seq();
            seqs.push(seq);
            let (msg, flags) = match op.kind {
                OpKind::Add => (NFT_MSG_NEWSETELEM, NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE),
                OpKind::Destroy => (NFT_MSG_DESTROYSETELEM, NLM_F_REQUEST | NLM_F_ACK),
            };
            let start = msg_begin(&mut buf, msg, flags, seq, op.family);
            attr_str(&mut buf, NFTA_SET_ELEM_LIST_TABLE, op.table);
            attr_str(&mut buf, NFTA_SET_ELEM_LIST_SET, op.set);
            let list = nest_begin(&mut buf, NFTA_SET_ELEM_LIST_ELEMENTS);
            for (key, timeout_ms) in &op.elements {
                let elem = nest_begin(&mut buf, NFTA_LIST_ELEM);
                let k = nest_begin(&mut buf, NFTA_SET_ELEM_KEY);
                attr(&mut buf, NFTA_DATA_VALUE, key);
                nest_end(&mut buf, k);
                if let (OpKind::Add, Some(ms)) = (op.kind, timeout_ms) {
                    attr(&mut buf, NFTA_SET_ELEM_TIMEOUT, &ms.to_be_bytes());
                }
                nest_end(&mut buf, elem);
            }
            nest_end(&mut buf, list);
            msg_end(&mut buf, start);
        }
        let end = self.next_seq();
        batch_marker(&mut buf, NFNL_MSG_BATCH_END, end);
        let sent = self.send(&buf);
        self.buf = buf;
        sent?;

        let mut results: Vec<Option<OpResult>> = vec![None; ops.len()];
        let first = seqs[0];
        self.receive(|seq, errno| {
            let i = seq.wrapping_sub(first) as usize;
            if i < results.len() && seqs[i] == seq {
                results[i] = Some(if errno == 0 {
                    OpResult::Ok
                } else {
                    OpResult::Err(errno)
                });
            }
            results.iter().all(Option::is_some)
        })?;
        let failed = results.iter().any(|r| matches!(r, Some(OpResult::Err(_))));
        Ok(results
            .into_iter()
            .map(|r| match r {
                Some(OpResult::Ok) if failed => OpResult::Aborted,
                Some(r) => r,
                // No verdict within the timeout: treat as failed so the caller retries later.
                None => OpResult::Err(libc::ETIMEDOUT),
            })
            .collect())
    }

    /// Whether the table exists.
    pub fn table_exists(&mut self, family: u8, table: &str) -> io::Result<bool> {
        let seq = self.next_seq();
        let mut buf = Vec::with_capacity(64);
        let start = msg_begin(
            &mut buf,
            NFT_MSG_GETTABLE,
            NLM_F_REQUEST | NLM_F_ACK,
            seq,
            family,
        );
        attr_str(&mut buf, NFTA_TABLE_NAME, table);
        msg_end(&mut buf, start);
        self.get(&buf, seq)
    }

    /// Whether the set exists in the table.
    pub fn set_exists(&mut self, family: u8, table: &str, set: &str) -> io::Result<bool> {
        let seq = self.next_seq();
        let mut buf = Vec::with_capacity(96);
        let start = msg_begin(
            &mut buf,
            NFT_MSG_GETSET,
            NLM_F_REQUEST | NLM_F_ACK,
            seq,
            family,
        );
        attr_str(&mut buf, NFTA_SET_TABLE, table);
        attr_str(&mut buf, NFTA_SET_NAME, set);
        msg_end(&mut buf, start);
        self.get(&buf, seq)
    }

    /// The elements of a set with the time each has left (`None`: no timeout), read with one
    /// GETSETELEM dump. ENOENT when the table or set does not exist.
    pub fn set_elements(
        &mut self,
        family: u8,
        table: &str,
        set: &str,
    ) -> io::Result<Vec<(Vec<u8>, Option<u64>)>> {
        let seq = self.next_seq();
        let mut buf = Vec::with_capacity(96);
        let start = msg_begin(
            &mut buf,
            NFT_MSG_GETSETELEM,
            NLM_F_REQUEST | NLM_F_DUMP,
            seq,
            family,
        );
        attr_str(&mut buf, NFTA_SET_ELEM_LIST_TABLE, table);
        attr_str(&mut buf, NFTA_SET_ELEM_LIST_SET, set);
        msg_end(&mut buf, start);
        let mut out = Vec::new();
        self.dump(&buf, seq, |payload| {
            for (kind, list) in attributes(payload) {
                if kind != NFTA_SET_ELEM_LIST_ELEMENTS {
                    continue;
                }
                for (kind, elem) in attributes(list) {
                    if kind != NFTA_LIST_ELEM {
                        continue;
                    }
                    let (mut key, mut left) = (None, None);
                    for (kind, value) in attributes(elem) {
                        match kind {
                            NFTA_SET_ELEM_KEY => {
                                key = attributes(value)
                                    .find(|(k, _)| *k == NFTA_DATA_VALUE)
                                    .map(|(_, v)| v.to_vec());
                            }
                            NFTA_SET_ELEM_EXPIRATION if value.len() == 8 => {
                                left = Some(u64::from_be_bytes(value.try_into().unwrap_or([0; 8])));
                            }
                            _ => {}
                        }
                    }
                    if let Some(key) = key {
                        out.push((key, left));
                    }
                }
            }
        })?;
        Ok(out)
    }

    /// Sends a dump request and hands every data message's payload (after nlmsghdr and nfgenmsg)
    /// to `on_msg`, until the kernel says it is done. An error reply is the error.
    pub(super) fn dump(
        &mut self,
        msg: &[u8],
        seq: u32,
        mut on_msg: impl FnMut(&[u8]),
    ) -> io::Result<()> {
        self.send(msg)?;
        loop {
            // SAFETY: `rbuf` is a valid, writable buffer of the given length.
            let n = unsafe {
                libc::recv(
                    self.fd.as_raw_fd(),
                    self.rbuf.as_mut_ptr() as *mut libc::c_void,
                    self.rbuf.len(),
                    0,
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            let mut data = &self.rbuf[..n as usize];
            while data.len() >= NLMSG_HDRLEN {
                let len = u32::from_ne_bytes([data[0], data[1], data[2], data[3]]) as usize;
                let kind = u16::from_ne_bytes([data[4], data[5]]);
                let s = u32::from_ne_bytes([data[8], data[9], data[10], data[11]]);
                if len < NLMSG_HDRLEN || len > data.len() {
                    break;
                }
                if s == seq {
                    match kind {
                        NLMSG_DONE => return Ok(()),
                        NLMSG_ERROR if len >= NLMSG_HDRLEN + 4 => {
                            let p = &data[NLMSG_HDRLEN..];
                            let err = -i32::from_ne_bytes([p[0], p[1], p[2], p[3]]);
                            return if err == 0 {
                                Ok(())
                            } else {
                                Err(io::Error::from_raw_os_error(err))
                            };
                        }
                        _ if len >= NLMSG_HDRLEN + 4 => on_msg(&data[NLMSG_HDRLEN + 4..len]),
                        _ => {}
                    }
                }
                data = &data[align(len).min(data.len())..];
            }
        }
    }

    /// Sends one request and returns the errno of its acknowledgement (0: done).
    pub(super) fn ack(&mut self, msg: &[u8], seq: u32) -> io::Result<i32> {
        self.send(msg)?;
        let mut verdict = None;
        self.receive(|s, errno| {
            if s == seq {
                verdict = Some(errno);
            }
            verdict.is_some()
        })?;
        verdict.ok_or_else(|| io::Error::from_raw_os_error(libc::ETIMEDOUT))
    }

    /// A GET: whether the object exists (ENOENT: no).
    pub(super) fn get(&mut self, msg: &[u8], seq: u32) -> io::Result<bool> {
        match self.ack(msg, seq)? {
            0 => Ok(true),
            e if e == libc::ENOENT => Ok(false),
            e => Err(io::Error::from_raw_os_error(e)),
        }
    }

    pub(super) fn send(&self, buf: &[u8]) -> io::Result<()> {
        // SAFETY: `buf` is a valid byte slice for the duration of the call.
        let n = unsafe {
            libc::send(
                self.fd.as_raw_fd(),
                buf.as_ptr() as *const libc::c_void,
                buf.len(),
                0,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        if n as usize != buf.len() {
            return Err(io::Error::other("short netlink send"));
        }
        Ok(())
    }

    /// Reads replies, calling `on_ack(seq, errno)` for every ACK or error (errno 0 for an ACK)
    /// until it returns true or the receive timeout expires. Data replies (the table or set a GET
    /// returns) are skipped: their ACK follows them.
    pub(super) fn receive(&mut self, mut on_ack: impl FnMut(u32, i32) -> bool) -> io::Result<()> {
        loop {
            // SAFETY: `rbuf` is a valid, writable buffer of the given length.
            let n = unsafe {
                libc::recv(
                    self.fd.as_raw_fd(),
                    self.rbuf.as_mut_ptr() as *mut libc::c_void,
                    self.rbuf.len(),
                    0,
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                return match e.kind() {
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => Ok(()),
                    io::ErrorKind::Interrupted => continue,
                    _ => Err(e),
                };
            }
            let mut data = &self.rbuf[..n as usize];
            while data.len() >= NLMSG_HDRLEN {
                let len = u32::from_ne_bytes([data[0], data[1], data[2], data[3]]) as usize;
                let kind = u16::from_ne_bytes([data[4], data[5]]);
                let seq = u32::from_ne_bytes([data[8], data[9], data[10], data[11]]);
                if len < NLMSG_HDRLEN || len > data.len() {
                    break;
                }
                if kind == NLMSG_ERROR && len >= NLMSG_HDRLEN + 4 {
                    let p = &data[NLMSG_HDRLEN..];
                    let err = i32::from_ne_bytes([p[0], p[1], p[2], p[3]]);
                    if on_ack(seq, -err) {
                        return Ok(());
                    }
                } else if kind == NLMSG_DONE && on_ack(seq, 0) {
                    return Ok(());
                }
                data = &data[align(len).min(data.len())..];
            }
        }
    }
}

/// The attributes of a netlink payload: (type without flags, value), in order; a truncated
/// attribute ends the walk.
pub(super) fn attributes(mut data: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        if data.len() < 4 {
            return None;
        }
        let len = u16::from_ne_bytes([data[0], data[1]]) as usize;
        let kind = u16::from_ne_bytes([data[2], data[3]]) & NLA_TYPE_MASK;
        if len < 4 || len > data.len() {
            data = &[];
            return None;
        }
        let value = &data[4..len];
        data = &data[align(len).min(data.len())..];
        Some((kind, value))
    })
}

pub(super) fn align(n: usize) -> usize {
    (n + 3) & !3
}

fn msg_begin(buf: &mut Vec<u8>, msg: u16, flags: u16, seq: u32, family: u8) -> usize {
    subsys_msg_begin(buf, NFNL_SUBSYS_NFTABLES, msg, flags, seq, family)
}

/// Starts a message of a netfilter subsystem (`NFNL_SUBSYS_*`): nlmsghdr and nfgenmsg.
pub(super) fn subsys_msg_begin(
    buf: &mut Vec<u8>,
    subsys: u16,
    msg: u16,
    flags: u16,
    seq: u32,
    family: u8,
) -> usize {
    let start = buf.len();
    buf.extend_from_slice(&0u32.to_ne_bytes());
    buf.extend_from_slice(&((subsys << 8) | msg).to_ne_bytes());
    buf.extend_from_slice(&flags.to_ne_bytes());
    buf.extend_from_slice(&seq.to_ne_bytes());
    buf.extend_from_slice(&0u32.to_ne_bytes());
    // nfgenmsg: family, version 0, resource id 0.
    buf.extend_from_slice(&[family, 0, 0, 0]);
    start
}

pub(super) fn msg_end(buf: &mut [u8], start: usize) {
    let len = (buf.len() - start) as u32;
    buf[start..start + 4].copy_from_slice(&len.to_ne_bytes());
}

fn batch_marker(buf: &mut Vec<u8>, kind: u16, seq: u32) {
    let start = buf.len();
    buf.extend_from_slice(&20u32.to_ne_bytes());
    buf.extend_from_slice(&kind.to_ne_bytes());
    buf.extend_from_slice(&NLM_F_REQUEST.to_ne_bytes());
    buf.extend_from_slice(&seq.to_ne_bytes());
    buf.extend_from_slice(&0u32.to_ne_bytes());
    // nfgenmsg: AF_UNSPEC, version 0, res_id = the subsystem, big-endian.
    buf.extend_from_slice(&[0, 0]);
    buf.extend_from_slice(&NFNL_SUBSYS_NFTABLES.to_be_bytes());
    debug_assert_eq!(buf.len() - start, 20);
}

pub(super) fn attr(buf: &mut Vec<u8>, kind: u16, data: &[u8]) {
    let len = 4 + data.len();
    buf.extend_from_slice(&(len as u16).to_ne_bytes());
    buf.extend_from_slice(&kind.to_ne_bytes());
    buf.extend_from_slice(data);
    buf.resize(buf.len() + (align(len) - len), 0);
}

pub(super) fn attr_str(buf: &mut Vec<u8>, kind: u16, s: &str) {
    let mut data = Vec::with_capacity(s.len() + 1);
    data.extend_from_slice(s.as_bytes());
    data.push(0);
    attr(buf, kind, &data);
}

pub(super) fn nest_begin(buf: &mut Vec<u8>, kind: u16) -> usize {
    let start = buf.len();
    buf.extend_from_slice(&0u16.to_ne_bytes());
    buf.extend_from_slice(&(kind | NLA_F_NESTED).to_ne_bytes());
    start
}

pub(super) fn nest_end(buf: &mut [u8], start: usize) {
    let len = (buf.len() - start) as u16;
    buf[start..start + 2].copy_from_slice(&len.to_ne_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_walk_nests_and_stop_at_a_truncated_one() {
        let mut buf = Vec::new();
        let list = nest_begin(&mut buf, NFTA_SET_ELEM_LIST_ELEMENTS);
        let elem = nest_begin(&mut buf, NFTA_LIST_ELEM);
        let key = nest_begin(&mut buf, NFTA_SET_ELEM_KEY);
        attr(&mut buf, NFTA_DATA_VALUE, &[192, 0, 2, 1]);
        nest_end(&mut buf, key);
        attr(&mut buf, NFTA_SET_ELEM_EXPIRATION, &90_000u64.to_be_bytes());
        nest_end(&mut buf, elem);
        nest_end(&mut buf, list);
        let (kind, list) = attributes(&buf).next().unwrap();
        assert_eq!(kind, NFTA_SET_ELEM_LIST_ELEMENTS);
        let (_, elem) = attributes(list).next().unwrap();
        let inner: Vec<(u16, &[u8])> = attributes(elem).collect();
        assert_eq!(inner.len(), 2);
        assert_eq!(
            inner[1],
            (NFTA_SET_ELEM_EXPIRATION, &90_000u64.to_be_bytes()[..])
        );
        let (_, key) = inner[0];
        assert_eq!(
            attributes(key).next(),
            Some((NFTA_DATA_VALUE, &[192, 0, 2, 1][..]))
        );
        // A length past the end: nothing more, no panic.
        assert_eq!(attributes(&[200, 0, 1, 0, 9]).count(), 0);
        assert_eq!(attributes(&[1, 0]).count(), 0);
    }

    #[test]
    fn message_layout() {
        let mut buf = Vec::new();
        batch_marker(&mut buf, NFNL_MSG_BATCH_BEGIN, 7);
        assert_eq!(buf.len(), 20);
        assert_eq!(&buf[16..20], &[0, 0, 0, 10]);
        let start = msg_begin(&mut buf, NFT_MSG_NEWSETELEM, NLM_F_REQUEST, 8, FAMILY_INET);
        attr_str(&mut buf, NFTA_SET_ELEM_LIST_TABLE, "dnsfence");
        let n = nest_begin(&mut buf, NFTA_SET_ELEM_LIST_ELEMENTS);
        attr(&mut buf, NFTA_DATA_VALUE, &[192, 0, 2, 1]);
        nest_end(&mut buf, n);
        msg_end(&mut buf, start);
        let len = u32::from_ne_bytes(buf[20..24].try_into().unwrap()) as usize;
        assert_eq!(len, buf.len() - 20);
        assert_eq!(len % 4, 0);
        // Message type: subsystem 10 in the high byte.
        assert_eq!(u16::from_ne_bytes(buf[24..26].try_into().unwrap()), 0x0a0c);
        // "dnsfence\0" is 9 bytes: attribute length 13, padded to 16.
        assert_eq!(u16::from_ne_bytes(buf[40..42].try_into().unwrap()), 13);
        let nested = 40 + 16;
        assert_eq!(
            u16::from_ne_bytes(buf[nested + 2..nested + 4].try_into().unwrap()),
            NFTA_SET_ELEM_LIST_ELEMENTS | NLA_F_NESTED
        );
        assert_eq!(
            u16::from_ne_bytes(buf[nested..nested + 2].try_into().unwrap()),
            12
        );
    }
}
