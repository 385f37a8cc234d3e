//! Plain-UDP queries to one upstream server without a socket per query: a bounded set of sockets
//! (`[upstream] udp_sockets`), each bound to a port the kernel picks at random from the
//! ephemeral range, each carrying many queries at once told apart by a random ID and the 0x20
//! case of the question, and each rotated to a new random port after `udp_socket_queries`
//! queries or `udp_socket_secs` seconds (Unbound's outgoing ports are the model; hickory's UDP
//! client opens, registers and closes a socket for every query, which was half of a cache miss's
//! CPU). One task per socket reads the replies (all the socket holds at each wake-up) and hands
//! each to the query waiting for it. Queries leave through the socket's send queue
//! (`base::sendq`): those encoded in one pass of the runtime go out with one `sendmmsg`, and one
//! the kernel refuses fails at once (`UdpError::Io`), as a direct send would.
//!
//! What a forged reply must guess, against hickory's socket per query: the 16-bit ID, the case of
//! every letter of the question (one bit per letter: `manage.microsoft.com` has 18) and the
//! source port (about 15 bits of the kernel's ephemeral range, one of `udp_sockets` open at a
//! time). The same as before but for the port, which now stays open for up to
//! `udp_socket_queries` queries or `udp_socket_secs` seconds instead of one exchange: that window
//! is what an off-path port scan (the SAD DNS side channel) would need to find it in, and the
//! rotation bounds it. A reply from another address or port, with an ID no query waits for (a
//! forgery, or a late answer to a query already given up), or whose question differs from the
//! one sent is dropped and counted (`dnsfence_upstream_replies_dropped_total{reason}`): another
//! name, type or class, and the query keeps waiting for the real reply until its deadline; the
//! same name in another case (a guess at the ID that got the 0x20 bits wrong, or a server that
//! does not keep the case), and the query is asked again over TCP, as hickory does.
//!
//! A truncated reply is the caller's to retry over TCP (through hickory); DoT and DoH never come
//! here.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query};
use hickory_proto::rr::{Name, RecordType};
use rand::RngExt as _;
use tokio::net::UdpSocket;
use tokio::sync::oneshot;

use crate::base::sendq::SendQueue;
use crate::base::sync::lock;

/// Why a reply was dropped (the label of `dnsfence_upstream_replies_dropped_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dropped {
    /// From another address or port than the server's.
    Source,
    /// An ID no query waits for: forged, or for a query that gave up at its deadline (`late`).
    Id,
    /// The ID of a query that gave up at its deadline.
    Late,
    /// The right ID, but another question (another name, type or class, or the name in another
    /// case).
    Question,
    /// Not a DNS response.
    Malformed,
}

impl Dropped {
    /// Every reason, in label order.
    pub const ALL: [Dropped; 5] = [
        Dropped::Source,
        Dropped::Id,
        Dropped::Late,
        Dropped::Question,
        Dropped::Malformed,
    ];

    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Dropped::Source => "source",
            Dropped::Id => "id",
            Dropped::Late => "late",
            Dropped::Question => "question",
            Dropped::Malformed => "malformed",
        }
    }
}

/// Counters of one server's outgoing sockets.
#[derive(Debug, Default)]
pub struct OutgoingStats {
    /// Replies dropped, by [`Dropped`] (indexed as [`Dropped::ALL`]).
    pub dropped: [AtomicU64; 5],
    /// Sockets opened (the first ones and each rotation).
    pub opened: AtomicU64,
}

impl OutgoingStats {
    fn drop_reply(&self, why: Dropped) {
        let i = Dropped::ALL.iter().position(|d| *d == why).unwrap_or(0);
        self.dropped[i].fetch_add(1, Ordering::Relaxed);
    }

    /// Replies dropped for `why`.
    pub fn dropped(&self, why: Dropped) -> u64 {
        let i = Dropped::ALL.iter().position(|d| *d == why).unwrap_or(0);
        self.dropped[i].load(Ordering::Relaxed)
    }
}

/// How a UDP exchange ended without an answer.
#[derive(Debug)]
pub enum UdpError {
    /// No reply within the budget.
    Timeout,
    /// The reply was truncated: ask over TCP.
    Truncated,
    /// A reply had the query's ID and name, in another case: ask over TCP.
    CaseChanged,
    /// Every socket holds `MAX_WAITING` queries.
    Busy,
    /// The socket could not be opened or the query not sent.
    Io(std::io::Error),
}

/// Queries one socket may have waiting at once: past it a query fails at once (`Busy`) instead
/// of growing the map (bounded by construction; `max_inflight` keeps it far below).
const MAX_WAITING: usize = 4096;

/// How many given-up IDs a socket remembers, to tell a late reply from a forged one.
const REMEMBERED_LATE: usize = 256;

/// The largest UDP reply read (the payload dnsfence advertises is 1232).
const MAX_REPLY: usize = 4096;

/// Each socket's receive buffer, as the listening sockets get.
const RECEIVE_BUFFER: usize = 4 << 20;

/// What a waiting query is told.
enum Reply {
    /// The reply's bytes.
    Bytes(Vec<u8>),
    /// A reply came back with the name in another case.
    CaseChanged,
    /// The query could not be sent.
    NotSent(std::io::Error),
}

/// A query waiting for its reply.
struct Waiter {
    /// The question as sent: the name in its 0x20 case (wire form), type and class.
    question: Vec<u8>,
    reply: oneshot::Sender<Reply>,
}

/// The queries waiting on one socket, by ID.
type Waiting = Arc<Mutex<HashMap<u16, Waiter>>>;

/// One socket and the queries waiting on it. Queries go out through the socket's send queue,
/// the queries of one pass of the runtime in one `sendmmsg` (`base::sendq`).
struct Port {
    out: Arc<SendQueue<UdpSocket, u16>>,
    waiting: Waiting,
    late: Mutex<VecDeque<u16>>,
    sent: AtomicU64,
    born: Instant,
    retired: AtomicBool,
}

/// The sockets of one upstream server.
pub struct Outgoing {
    server: SocketAddr,
    slots: Vec<Mutex<Option<Arc<Port>>>>,
    next: AtomicUsize,
    rotate_queries: u64,
    rotate_after: Duration,
    stats: Arc<OutgoingStats>,
}

impl std::fmt::Debug for Outgoing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outgoing")
            .field("server", &self.server)
            .field("sockets", &self.slots.len())
            .finish_non_exhaustive()
    }
}

/// Gives each ASCII letter of an encoded question's name a random case, in place (0x20,
/// draft-vixie-dnsext-dns0x20): the name's length bytes (at most 63) are never letters, and its
/// type and class, after it, are left alone.
fn randomize_case(question: &mut [u8]) {
    let name = question.len().saturating_sub(4);
    let mut rng = rand::rng();
    for b in &mut question[..name] {
        if b.is_ascii_alphabetic() && rng.random::<bool>() {
            *b ^= 0x20;
        }
    }
}

/// The question section of a message in wire form (the first one): its name's bytes as written,
/// type and class; `None` when there is none or it does not parse. Questions are never
/// compressed (nothing precedes them), so the bytes compare as sent.
fn question_of(message: &[u8]) -> Option<&[u8]> {
    if message.len() < 12 || u16::from_be_bytes([message[4], message[5]]) != 1 {
        return None;
    }
    let mut at = 12;
    loop {
        let len = *message.get(at)? as usize;
        if len == 0 {
            at += 1;
            break;
        }
        if len & 0xC0 != 0 {
            return None;
        }
        at += 1 + len;
    }
    message.get(12..at + 4)
}

/// Whether two questions (name, type, class in wire form) differ only in the case of the name.
fn same_but_case(a: &[u8], b: &[u8]) -> bool {
    let (Some(na), Some(nb)) = (a.len().checked_sub(4), b.len().checked_sub(4)) else {
        return false;
    };
    a[..na].eq_ignore_ascii_case(&b[..nb]) && a[na..] == b[nb..]
}

impl Outgoing {
    /// The sockets of `server`: `sockets` of them, opened on first use, each rotated after
    /// `rotate_queries` queries or `rotate_after`.
    pub fn new(
        server: SocketAddr,
        sockets: usize,
        rotate_queries: u64,
        rotate_after: Duration,
    ) -> Outgoing {
        Outgoing {
            server,
            slots: (0..sockets.max(1)).map(|_| Mutex::new(None)).collect(),
            next: AtomicUsize::new(0),
            rotate_queries: rotate_queries.max(1),
            rotate_after,
            stats: Arc::new(OutgoingStats::default()),
        }
    }

    /// Its counters.
    pub fn stats(&self) -> &OutgoingStats {
        &self.stats
    }

    /// The local ports of the sockets open now (for tests and `/readyz`-style diagnostics).
    pub fn ports(&self) -> Vec<u16> {
        self.slots
            .iter()
            .filter_map(|s| lock(s).as_ref().map(|p| p.out.socket().local_addr().ok()))
            .flatten()
            .map(|a| a.port())
            .collect()
    }

    /// A socket for the next query: the next slot's, or a new one when it is due for rotation.
    /// The old one stays open until its last waiting query is answered or gives up.
    async fn port(&self) -> Result<Arc<Port>, UdpError> {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.slots.len();
        {
            let slot = lock(&self.slots[i]);
            if let Some(p) = slot.as_ref()
                && p.sent.load(Ordering::Relaxed) < self.rotate_queries
                && p.born.elapsed() < self.rotate_after
            {
                return Ok(p.clone());
            }
        }
        let bind: SocketAddr = if self.server.is_ipv4() {
            "0.0.0.0:0".parse().unwrap_or(self.server)
        } else {
            "[::]:0".parse().unwrap_or(self.server)
        };
        let socket = UdpSocket::bind(bind).await.map_err(UdpError::Io)?;
        // A socket carries up to MAX_WAITING queries whose replies can land at once: the kernel's
        // default receive buffer (about 200 KiB, some 250 datagrams) would drop a burst.
        crate::base::sockopt::grow_buffer(
            std::os::fd::AsRawFd::as_raw_fd(&socket),
            crate::base::sockopt::Buffer::Receive,
            RECEIVE_BUFFER,
        );
        let waiting: Waiting = Arc::default();
        let refused = waiting.clone();
        let out = SendQueue::new(
            socket,
            Box::new(move |id: u16, e| {
                if let Some(waiter) = lock(&refused).remove(&id) {
                    let _ = waiter.reply.send(Reply::NotSent(e));
                }
            }),
        );
        let port = Arc::new(Port {
            out,
            waiting,
            late: Mutex::new(VecDeque::new()),
            sent: AtomicU64::new(0),
            born: Instant::now(),
            retired: AtomicBool::new(false),
        });
        self.stats.opened.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(read_replies(port.clone(), self.server, self.stats.clone()));
        let old = lock(&self.slots[i]).replace(port.clone());
        if let Some(old) = old {
            // Its reader ends once nothing waits on it any more.
            old.retired.store(true, Ordering::Relaxed);
        }
        Ok(port)
    }

    /// Sends `name`/`qtype` (recursion desired, EDNS with `payload`) and waits up to `budget`
    /// for the reply with its ID and question; returns the reply's message.
    pub async fn query(
        &self,
        name: &Name,
        qtype: RecordType,
        payload: u16,
        budget: Duration,
    ) -> Result<Message, UdpError> {
        let deadline = tokio::time::Instant::now() + budget;
        let port = self.port().await?;
        let mut message = Message::new(0, MessageType::Query, OpCode::Query);
        message.metadata.recursion_desired = true;
        message.add_query(Query::query(name.clone(), qtype));
        let mut edns = Edns::new();
        edns.set_max_payload(payload);
        message.set_edns(edns);
        let (tx, rx) = oneshot::channel();
        // The ID is chosen, the query encoded and the waiter registered under the lock, before
        // anything is sent: a reply can never arrive before its waiter.
        let (id, bytes) = {
            let mut waiting = lock(&port.waiting);
            if waiting.len() >= MAX_WAITING {
                return Err(UdpError::Busy);
            }
            let mut rng = rand::rng();
            let mut id: u16 = rng.random();
            while waiting.contains_key(&id) {
                id = rng.random();
            }
            message.metadata.id = id;
            let mut bytes = message
                .to_vec()
                .map_err(|e| UdpError::Io(std::io::Error::other(e.to_string())))?;
            let question = question_of(&bytes).map_or(0, <[u8]>::len);
            randomize_case(&mut bytes[12..12 + question]);
            let question = bytes[12..12 + question].to_vec();
            waiting.insert(
                id,
                Waiter {
                    question,
                    reply: tx,
                },
            );
            (id, bytes)
        };
        port.sent.fetch_add(1, Ordering::Relaxed);
        port.out.push(bytes, self.server, id);
        let reply = match tokio::time::timeout_at(deadline, rx).await {
            Ok(Ok(Reply::Bytes(bytes))) => bytes,
            Ok(Ok(Reply::CaseChanged)) => return Err(UdpError::CaseChanged),
            Ok(Ok(Reply::NotSent(e))) => return Err(UdpError::Io(e)),
            // The reader ended (the socket failed): as a timeout, the caller moves on.
            Ok(Err(_)) | Err(_) => {
                lock(&port.waiting).remove(&id);
                let mut late = lock(&port.late);
                if late.len() >= REMEMBERED_LATE {
                    late.pop_front();
                }
                late.push_back(id);
                return Err(UdpError::Timeout);
            }
        };
        let message = Message::from_vec(&reply)
            .map_err(|e| UdpError::Io(std::io::Error::other(e.to_string())))?;
        if message.metadata.truncation {
            return Err(UdpError::Truncated);
        }
        Ok(message)
    }
}

/// Reads one socket's replies and hands each to its waiting query, until the socket is retired
/// and nothing waits on it any more. Each wake-up drains what the socket holds: the queries it
/// wakes run together, and their answers leave together.
async fn read_replies(port: Arc<Port>, server: SocketAddr, stats: Arc<OutgoingStats>) {
    let mut buf = vec![0u8; MAX_REPLY];
    let socket = port.out.socket();
    loop {
        if port.retired.load(Ordering::Relaxed) && lock(&port.waiting).is_empty() {
            return;
        }
        // A retired socket's last queries are given up by their own deadlines; this bounds the
        // reader's wait so it sees that and ends.
        match tokio::time::timeout(Duration::from_secs(1), socket.readable()).await {
            Err(_) => continue,
            Ok(Err(_)) => {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
            Ok(Ok(())) => {}
        }
        loop {
            match socket.try_recv_from(&mut buf) {
                Ok((n, from)) => deliver(&port, &buf[..n], from == server, &stats),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                // ICMP errors and the like: the waiting queries time out on their own.
                Err(_) => break,
            }
        }
    }
}

/// Hands one datagram to the query waiting for it, or drops and counts it.
fn deliver(port: &Port, reply: &[u8], from_server: bool, stats: &OutgoingStats) {
    if !from_server {
        stats.drop_reply(Dropped::Source);
        return;
    }
    if reply.len() < 12 || reply[2] & 0x80 == 0 {
        stats.drop_reply(Dropped::Malformed);
        return;
    }
    let id = u16::from_be_bytes([reply[0], reply[1]]);
    let mut waiting = lock(&port.waiting);
    let Some(waiter) = waiting.get(&id) else {
        drop(waiting);
        let late = lock(&port.late).contains(&id);
        stats.drop_reply(if late { Dropped::Late } else { Dropped::Id });
        return;
    };
    let question = question_of(reply);
    if question == Some(waiter.question.as_slice()) {
        if let Some(waiter) = waiting.remove(&id) {
            let _ = waiter.reply.send(Reply::Bytes(reply.to_vec()));
        }
        return;
    }
    stats.drop_reply(Dropped::Question);
    if question.is_some_and(|q| same_but_case(q, &waiter.question))
        && let Some(waiter) = waiting.remove(&id)
    {
        let _ = waiter.reply.send(Reply::CaseChanged);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_question_is_read_as_written() {
        let mut m = Message::query();
        m.add_query(Query::query(
            Name::from_ascii("MaNage.microsoft.COM.").unwrap(),
            RecordType::AAAA,
        ));
        let bytes = m.to_vec().unwrap();
        let q = question_of(&bytes).unwrap();
        assert_eq!(&q[..8], b"\x06MaNage\x09");
        assert_eq!(&q[q.len() - 4..], &[0, 28, 0, 1]);
        assert_eq!(question_of(&bytes[..14]), None, "cut short");
        let mut two = bytes.clone();
        two[5] = 2;
        assert_eq!(question_of(&two), None, "two questions");
    }

    #[test]
    fn the_case_is_random_and_the_name_the_same() {
        let mut m = Message::query();
        m.add_query(Query::query(
            Name::from_ascii("enterpriseenrollment.manage.microsoft.com.").unwrap(),
            RecordType::A,
        ));
        let bytes = m.to_vec().unwrap();
        let sent = question_of(&bytes).unwrap().to_vec();
        let cases: std::collections::HashSet<Vec<u8>> = (0..16)
            .map(|_| {
                let mut q = sent.clone();
                randomize_case(&mut q);
                q
            })
            .collect();
        assert!(cases.len() > 8, "{cases:?}");
        assert!(cases.iter().all(|c| c.eq_ignore_ascii_case(&sent)));
        assert!(
            cases
                .iter()
                .all(|c| c[c.len() - 4..] == sent[sent.len() - 4..])
        );
        let mut header = m.to_vec().unwrap();
        let len = question_of(&header).unwrap().len();
        randomize_case(&mut header[12..12 + len]);
        let decoded = Message::from_vec(&header).unwrap();
        assert!(
            decoded.queries[0]
                .name()
                .to_ascii()
                .eq_ignore_ascii_case("enterpriseenrollment.manage.microsoft.com.")
        );
    }
}
