//! The packet cache: whole answers as wire bytes, keyed by view and question, served again by
//! patching the ID, the flags the client chose, the question's case and the TTLs — no parse, no
//! re-encode (PowerDNS Recursor's packet cache is the model).
//!
//! The policy is applied before every lookup (the fast path decides on the wire name first), so a
//! cached answer is never served for a name the current policy denies; a reload clears the cache
//! anyway because view indices may change. Entries live no longer than their shortest TTL.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::answer::AnswerAddr;
use crate::server::Cacheable;
use crate::zones::PortSpec;

/// Whether and how the query carried EDNS: the answer differs (an OPT record, its DO bit).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EdnsState {
    /// No OPT record.
    None,
    /// OPT without the DO bit.
    Plain,
    /// OPT with DO set.
    Dnssec,
}

/// One cached answer.
#[derive(Debug)]
pub struct Packet {
    view: u16,
    qtype: u16,
    edns: EdnsState,
    /// The question name in lower-case wire form, to verify a hash hit.
    name: Box<[u8]>,
    /// The whole response as first sent.
    bytes: Box<[u8]>,
    /// Offsets of every TTL field (not OPT's), with the TTL stored.
    ttls: Box<[(u16, u32)]>,
    stored: Instant,
    expires: Instant,
    /// First endpoint set that allowed the name.
    pub endpoint_set: u32,
    /// The answer's addresses, which must still be fresh in the fence before a hit is served.
    pub addrs: Box<[AnswerAddr]>,
    /// Ports for addr_port sets.
    pub ports: Box<[PortSpec]>,
}

impl Packet {
    /// Length of the answer in bytes.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// True for an empty answer (never stored).
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// Seconds since it was stored.
    pub fn age(&self, now: Instant) -> u32 {
        u32::try_from(now.saturating_duration_since(self.stored).as_secs()).unwrap_or(u32::MAX)
    }

    /// Writes the answer to `query` into `out`: the query's ID, its RD and CD bits, its question
    /// bytes (the client's letter case, same length), TTLs reduced by the time spent here.
    /// `question_end` is where the query's question section ends.
    pub fn write(
        &self,
        query: &[u8],
        question_end: usize,
        now: Instant,
        out: &mut [u8],
    ) -> Option<usize> {
        let n = self.bytes.len();
        if out.len() < n || question_end > n || question_end > query.len() {
            return None;
        }
        out[..n].copy_from_slice(&self.bytes);
        out[0] = query[0];
        out[1] = query[1];
        out[2] = (out[2] & !0x01) | (query[2] & 0x01);
        out[3] = (out[3] & !0x10) | (query[3] & 0x10);
        out[12..question_end].copy_from_slice(&query[12..question_end]);
        let age = self.age(now);
        for &(off, ttl) in self.ttls.iter() {
            let off = off as usize;
            out[off..off + 4].copy_from_slice(&ttl.saturating_sub(age).to_be_bytes());
        }
        Some(n)
    }
}

type Shard = Mutex<HashMap<u64, Arc<Packet>, rustc_hash::FxBuildHasher>>;

/// A bounded, sharded cache of answers in wire form.
pub struct PacketCache {
    shards: Box<[Shard]>,
    per_shard: usize,
}

const SHARDS: usize = 16;

fn key(view: u16, qtype: u16, edns: EdnsState, name: &[u8]) -> u64 {
    let mut h = rustc_hash::FxBuildHasher.build_hasher();
    h.write_u16(view);
    h.write_u16(qtype);
    h.write_u8(edns as u8);
    h.write(name);
    h.finish()
}

impl PacketCache {
    /// A cache of about `capacity` answers (0 disables it).
    pub fn new(capacity: usize) -> PacketCache {
        PacketCache {
            shards: (0..SHARDS)
                .map(|_| Mutex::new(HashMap::default()))
                .collect(),
            per_shard: capacity.div_ceil(SHARDS),
        }
    }

    fn shard(&self, k: u64) -> &Shard {
        &self.shards[(k >> 59) as usize % SHARDS]
    }

    /// The live answer for this view and question. `name` is the question name in lower-case
    /// wire form.
    pub fn get(
        &self,
        view: u16,
        qtype: u16,
        edns: EdnsState,
        name: &[u8],
        now: Instant,
    ) -> Option<Arc<Packet>> {
        let k = key(view, qtype, edns, name);
        let p = lock(self.shard(k)).get(&k).cloned()?;
        (p.view == view
            && p.qtype == qtype
            && p.edns == edns
            && *p.name == *name
            && p.expires > now)
            .then_some(p)
    }

    /// Stores an answer just sent. `question_end` is where its question section ends; the name
    /// key is taken from the response's question, lower-cased. Answers with no TTL to bound them
    /// (no records) are not stored.
    pub fn insert(
        &self,
        response: &[u8],
        question_end: usize,
        qtype: u16,
        edns: EdnsState,
        meta: &Cacheable,
        now: Instant,
    ) {
        if self.per_shard == 0 || question_end < 17 || question_end > response.len() {
            return;
        }
        let Some(ttls) = ttl_offsets(response) else {
            return;
        };
        let Some(min) = ttls.iter().map(|&(_, t)| t).min() else {
            return;
        };
        if min == 0 {
            return;
        }
        let mut name = response[12..question_end - 4].to_vec();
        lowercase_wire(&mut name);
        let mut bytes = response.to_vec();
        bytes[12..question_end - 4].copy_from_slice(&name);
        let Ok(view) = u16::try_from(meta.view) else {
            return;
        };
        let k = key(view, qtype, edns, &name);
        let packet = Arc::new(Packet {
            view,
            qtype,
            edns,
            name: name.into_boxed_slice(),
            bytes: bytes.into_boxed_slice(),
            ttls: ttls.into_boxed_slice(),
            stored: now,
            expires: now + Duration::from_secs(min.into()),
            endpoint_set: meta.endpoint_set,
            addrs: meta.addrs.clone().into_boxed_slice(),
            ports: meta.ports.clone().into_boxed_slice(),
        });
        let mut shard = lock(self.shard(k));
        if shard.len() >= self.per_shard && !shard.contains_key(&k) {
            shard.retain(|_, p| p.expires > now);
            if shard.len() >= self.per_shard {
                let victims: Vec<u64> = shard
                    .keys()
                    .take((self.per_shard / 8).max(1))
                    .copied()
                    .collect();
                for v in victims {
                    shard.remove(&v);
                }
            }
        }
        shard.insert(k, packet);
    }

    /// Drops every answer (on reload).
    pub fn clear(&self) {
        for s in self.shards.iter() {
            lock(s).clear();
        }
    }

    /// Answers held.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| lock(s).len()).sum()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Lower-cases the letters of a wire-form name (length bytes are below 64, never letters).
pub fn lowercase_wire(name: &mut [u8]) {
    let mut i = 0;
    while i < name.len() {
        let n = name[i] as usize;
        if n == 0 || n > 63 {
            return;
        }
        let end = (i + 1 + n).min(name.len());
        name[i + 1..end].make_ascii_lowercase();
        i += 1 + n;
    }
}

/// Skips a (possibly compressed) name starting at `pos`; returns the offset after it.
fn skip_name(msg: &[u8], mut pos: usize) -> Option<usize> {
    loop {
        let n = *msg.get(pos)? as usize;
        match n {
            0 => return Some(pos + 1),
            1..=63 => pos += 1 + n,
            _ if n & 0xc0 == 0xc0 => return Some(pos + 2).filter(|&p| p <= msg.len()),
            _ => return None,
        }
    }
}

/// Offsets and values of the TTL of every record in the answer and authority sections, and
/// additional records other than OPT. `None` if the message does not parse.
pub fn ttl_offsets(msg: &[u8]) -> Option<Vec<(u16, u32)>> {
    let count = |i: usize| Some(u16::from_be_bytes([*msg.get(i)?, *msg.get(i + 1)?]) as usize);
    let (qd, an, ns, ar) = (count(4)?, count(6)?, count(8)?, count(10)?);
    let mut pos = 12;
    for _ in 0..qd {
        pos = skip_name(msg, pos)? + 4;
    }
    let mut out = Vec::with_capacity(an + ns + ar);
    for _ in 0..an + ns + ar {
        pos = skip_name(msg, pos)?;
        let rtype = u16::from_be_bytes([*msg.get(pos)?, *msg.get(pos + 1)?]);
        let ttl_at = pos + 4;
        let ttl = u32::from_be_bytes(msg.get(ttl_at..ttl_at + 4)?.try_into().ok()?);
        let rdlen = u16::from_be_bytes([*msg.get(pos + 8)?, *msg.get(pos + 9)?]) as usize;
        pos += 10 + rdlen;
        if pos > msg.len() {
            return None;
        }
        if rtype != 41 {
            out.push((u16::try_from(ttl_at).ok()?, ttl));
        }
    }
    (pos == msg.len()).then_some(out)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A cache: a panic elsewhere leaves the map valid.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query};
    use hickory_proto::rr::rdata::{A, CNAME};
    use hickory_proto::rr::{Name, RData, Record, RecordType};

    fn response(qname: &str) -> Vec<u8> {
        let mut m = Message::new(7, MessageType::Response, OpCode::Query);
        m.metadata.recursion_desired = true;
        m.metadata.recursion_available = true;
        m.add_query(Query::query(
            Name::from_ascii(qname).unwrap(),
            RecordType::A,
        ));
        m.add_answer(Record::from_rdata(
            Name::from_ascii("x.example.").unwrap(),
            300,
            RData::CNAME(CNAME(Name::from_ascii("y.example.").unwrap())),
        ));
        m.add_answer(Record::from_rdata(
            Name::from_ascii("y.example.").unwrap(),
            60,
            RData::A(A::new(192, 0, 2, 1)),
        ));
        m.set_edns(Edns::new());
        m.to_vec().unwrap()
    }

    fn meta() -> Cacheable {
        Cacheable {
            view: 0,
            endpoint_set: 3,
            addrs: Vec::new(),
            ports: Vec::new(),
        }
    }

    #[test]
    fn ttl_offsets_skip_opt() {
        let r = response("x.example.");
        let ttls = ttl_offsets(&r).unwrap();
        assert_eq!(ttls.iter().map(|t| t.1).collect::<Vec<_>>(), [300, 60]);
        assert!(ttl_offsets(&r[..r.len() - 1]).is_none());
    }

    #[test]
    fn hit_patches_id_flags_case_and_ttls() {
        let c = PacketCache::new(100);
        let t0 = Instant::now();
        let r = response("X.Example.");
        let qend = 12 + 11 + 4;
        c.insert(&r, qend, 1, EdnsState::Plain, &meta(), t0);
        let name = b"\x01x\x07example\x00";
        let p = c.get(0, 1, EdnsState::Plain, name, t0).unwrap();
        assert!(c.get(0, 1, EdnsState::None, name, t0).is_none());
        assert!(c.get(1, 1, EdnsState::Plain, name, t0).is_none());
        // A query with another id, RD off, CD on and its own case.
        let mut q = vec![0xab, 0xcd, 0x00, 0x10, 0, 1, 0, 0, 0, 0, 0, 0];
        q.extend_from_slice(b"\x01X\x07eXAMPLE\x00\x00\x01\x00\x01");
        let mut out = [0u8; 512];
        let n = p
            .write(&q, qend, t0 + Duration::from_secs(10), &mut out)
            .unwrap();
        let m = Message::from_vec(&out[..n]).unwrap();
        assert_eq!(m.metadata.id, 0xabcd);
        assert!(!m.metadata.recursion_desired);
        assert!(m.metadata.checking_disabled);
        assert!(m.metadata.recursion_available);
        assert_eq!(m.queries[0].name().to_ascii(), "X.eXAMPLE.");
        assert_eq!(
            m.answers.iter().map(|r| r.ttl).collect::<Vec<_>>(),
            [290, 50]
        );
        // Lives as long as the shortest TTL.
        assert!(
            c.get(0, 1, EdnsState::Plain, name, t0 + Duration::from_secs(60))
                .is_none()
        );
        c.clear();
        assert!(c.is_empty());
    }
}
