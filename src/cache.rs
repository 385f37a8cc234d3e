//! The answer cache: one entry per (name, type), kept as the wire bytes of a minimal answer.
//!
//! One cache serves both paths. The UDP fast path copies an entry into its output buffer and
//! patches the client's ID, RD/CD bits, question case (same length, so compression pointers into
//! the question stay valid), the TTLs (reduced by the time spent here) and the OPT record the
//! client's EDNS calls for — no parse, no re-encode (PowerDNS Recursor's packet cache is the
//! model). The full handler decodes an entry back into records. Keeping bytes rather than
//! records also keeps memory small: one allocation of about a hundred bytes per answer.
//!
//! Semantics are those of a resolver cache: every record's TTL is clamped to the positive bounds
//! and the entry lives as long as the shortest; NXDOMAIN/NODATA live for the SOA's negative TTL
//! (RFC 2308: min(SOA TTL, SOA MINIMUM)) within the negative bounds. Positive answers are minimal
//! (answer section only); negative ones keep the SOA. The policy is applied before every lookup,
//! so an entry is never served for a name the current policy denies.
//!
//! Sharded std mutexes, held for one hash probe and an `Arc` clone, never across an await.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{LowerName, Name, RData, Record, RecordType};

use crate::answer::{AnswerAddr, addresses};
use crate::upstream::Resolution;

/// TTL bounds applied when caching.
#[derive(Debug, Clone, Copy)]
pub struct TtlBounds {
    /// Lower bound of positive answers' TTLs.
    pub positive_min: Duration,
    /// Upper bound of positive answers' TTLs.
    pub positive_max: Duration,
    /// Lower bound of negative answers' TTLs.
    pub negative_min: Duration,
    /// Upper bound of negative answers' TTLs.
    pub negative_max: Duration,
}

/// One cached answer: a complete DNS response without OPT, ID 0, question in lower case.
#[derive(Debug)]
pub struct Entry {
    /// The message, then the TTL offsets (2 bytes each, big-endian) after `len`.
    data: Box<[u8]>,
    /// Length of the message within `data`.
    len: u16,
    /// Where the question section ends.
    question_end: u16,
    qtype: u16,
    stored: Instant,
    expires: Instant,
    /// The answer's addresses (A/AAAA across the chain, SVCB/HTTPS hints), for the fence.
    pub addrs: Box<[AnswerAddr]>,
}

impl Entry {
    fn message(&self) -> &[u8] {
        &self.data[..self.len as usize]
    }

    fn ttl_offsets(&self) -> impl Iterator<Item = usize> + '_ {
        self.data[self.len as usize..]
            .chunks_exact(2)
            .map(|c| u16::from_be_bytes([c[0], c[1]]) as usize)
    }

    /// Seconds since it was stored.
    pub fn age(&self, now: Instant) -> u32 {
        u32::try_from(now.saturating_duration_since(self.stored).as_secs()).unwrap_or(u32::MAX)
    }

    /// Size of the answer for a client, with (`edns`) or without an OPT record.
    pub fn wire_len(&self, edns: bool) -> usize {
        self.len as usize + if edns { OPT_LEN } else { 0 }
    }

    /// Writes the answer to `query` into `out`: the query's ID, RD and CD bits and question bytes,
    /// TTLs reduced by the time spent here, and an OPT record when the client sent one
    /// (`edns` = payload size and DO bit). `None` if `out` is too small or the question differs
    /// in length.
    pub fn write(
        &self,
        query: &[u8],
        question_end: usize,
        edns: Option<(u16, bool)>,
        now: Instant,
        out: &mut [u8],
    ) -> Option<usize> {
        let msg = self.message();
        let n = msg.len();
        if question_end != self.question_end as usize || query.len() < question_end {
            return None;
        }
        let total = self.wire_len(edns.is_some());
        if out.len() < total {
            return None;
        }
        out[..n].copy_from_slice(msg);
        out[0] = query[0];
        out[1] = query[1];
        out[2] = (out[2] & !0x01) | (query[2] & 0x01);
        out[3] = (out[3] & !0x10) | (query[3] & 0x10);
        out[12..question_end].copy_from_slice(&query[12..question_end]);
        let age = self.age(now);
        for off in self.ttl_offsets() {
            let ttl = u32::from_be_bytes([msg[off], msg[off + 1], msg[off + 2], msg[off + 3]]);
            out[off..off + 4].copy_from_slice(&ttl.saturating_sub(age).to_be_bytes());
        }
        match edns {
            None => Some(n),
            Some((payload, dnssec)) => {
                out[10..12].copy_from_slice(&1u16.to_be_bytes());
                write_opt(&mut out[n..n + OPT_LEN], payload, dnssec, 0);
                Some(total)
            }
        }
    }

    /// The entry as records, TTLs reduced by the time spent here (for the full handler).
    pub fn resolution(&self, now: Instant) -> Option<Resolution> {
        let mut m = Message::from_vec(self.message()).ok()?;
        let age = self.age(now);
        for r in m.answers.iter_mut().chain(m.authorities.iter_mut()) {
            r.ttl = r.ttl.saturating_sub(age);
        }
        let rcode = m.metadata.response_code;
        if m.answers.is_empty() {
            Some(Resolution::Negative {
                rcode,
                soa: m
                    .authorities
                    .into_iter()
                    .find(|r| r.record_type() == RecordType::SOA)
                    .map(Box::new),
            })
        } else {
            Some(Resolution::Records {
                answers: m.answers,
                authorities: m.authorities,
            })
        }
    }
}

/// Bytes of an OPT record without options.
pub const OPT_LEN: usize = 11;

/// Writes an OPT record (root owner, type 41, payload size, version 0, DO bit, `rdlen` bytes of
/// options to follow) into the first 11 bytes of `out`.
pub fn write_opt(out: &mut [u8], payload: u16, dnssec: bool, rdlen: u16) {
    out[0] = 0;
    out[1..3].copy_from_slice(&41u16.to_be_bytes());
    out[3..5].copy_from_slice(&payload.to_be_bytes());
    out[5] = 0;
    out[6] = 0;
    out[7] = if dnssec { 0x80 } else { 0 };
    out[8] = 0;
    out[9..11].copy_from_slice(&rdlen.to_be_bytes());
}

type Shard = Mutex<HashMap<u64, Arc<Entry>, rustc_hash::FxBuildHasher>>;

/// A bounded, sharded cache of answers in wire form.
pub struct AnswerCache {
    shards: Box<[Shard]>,
    per_shard: usize,
    bounds: TtlBounds,
}

const SHARDS: usize = 16;

fn key(name: &[u8], qtype: u16) -> u64 {
    let mut h = rustc_hash::FxBuildHasher.build_hasher();
    h.write(name);
    h.write_u16(qtype);
    h.finish()
}

/// The lower-case wire form of a name, into `buf`.
pub fn name_wire<'b>(name: &Name, buf: &'b mut [u8; 256]) -> Option<&'b [u8]> {
    let mut n = 0;
    for label in name.iter() {
        let end = n + 1 + label.len();
        if end >= buf.len() {
            return None;
        }
        buf[n] = label.len() as u8;
        buf[n + 1..end].copy_from_slice(label);
        buf[n + 1..end].make_ascii_lowercase();
        n = end;
    }
    buf[n] = 0;
    Some(&buf[..n + 1])
}

impl AnswerCache {
    /// A cache of about `capacity` answers (0 disables caching).
    pub fn new(capacity: usize, bounds: TtlBounds) -> AnswerCache {
        AnswerCache {
            shards: (0..SHARDS)
                .map(|_| Mutex::new(HashMap::default()))
                .collect(),
            per_shard: capacity.div_ceil(SHARDS),
            bounds,
        }
    }

    fn shard(&self, k: u64) -> &Shard {
        &self.shards[(k >> 60) as usize % SHARDS]
    }

    /// The live entry for a question; `name` is the lower-case wire form.
    pub fn get(&self, name: &[u8], qtype: u16, now: Instant) -> Option<Arc<Entry>> {
        let k = key(name, qtype);
        let e = lock(self.shard(k)).get(&k).cloned()?;
        let stored = e.message().get(12..12 + name.len())?;
        (e.qtype == qtype && crate::wire::same(stored, name) && e.expires > now).then_some(e)
    }

    /// Clamps the resolution's TTLs to the bounds (in place, so the first answer matches later
    /// hits), keeps positive answers minimal, and stores it.
    pub fn insert(&self, name: &LowerName, qtype: RecordType, r: &mut Resolution, now: Instant) {
        let lifetime = self.clamp(r);
        if self.per_shard == 0 || lifetime.is_zero() {
            return;
        }
        let Some(entry) = encode(name, qtype, r, now, lifetime) else {
            return;
        };
        let mut buf = [0u8; 256];
        let Some(wire) = name_wire(name, &mut buf) else {
            return;
        };
        let k = key(wire, u16::from(qtype));
        let mut shard = lock(self.shard(k));
        if shard.len() >= self.per_shard && !shard.contains_key(&k) {
            shard.retain(|_, e| e.expires > now);
            if shard.len() >= self.per_shard {
                // Full of live answers: drop an eighth, whichever the map yields first. Cheap and
                // good enough: an evicted name costs one upstream query.
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
        shard.insert(k, Arc::new(entry));
    }

    /// Drops every entry.
    pub fn clear(&self) {
        for s in self.shards.iter() {
            lock(s).clear();
        }
    }

    /// Entries held (live or expired but not yet dropped).
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| lock(s).len()).sum()
    }

    /// True when nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Clamps TTLs and returns how long the answer may be cached.
    fn clamp(&self, r: &mut Resolution) -> Duration {
        let b = &self.bounds;
        let secs = |d: Duration| u32::try_from(d.as_secs()).unwrap_or(u32::MAX);
        match r {
            Resolution::Negative { soa, .. } => {
                let (lo, hi) = (secs(b.negative_min), secs(b.negative_max));
                let negative = match soa.as_deref() {
                    Some(Record {
                        ttl,
                        data: RData::SOA(s),
                        ..
                    }) => (*ttl).min(s.minimum),
                    _ => lo,
                }
                .clamp(lo, hi);
                if let Some(s) = soa.as_deref_mut() {
                    s.ttl = negative;
                }
                Duration::from_secs(negative.into())
            }
            Resolution::Records {
                answers,
                authorities,
            } => {
                let (lo, hi) = (secs(b.positive_min), secs(b.positive_max));
                // Minimal responses: the authority section of a positive answer helps no stub.
                authorities.clear();
                for rec in answers.iter_mut() {
                    rec.ttl = rec.ttl.clamp(lo, hi);
                }
                Duration::from_secs(answers.iter().map(|x| x.ttl).min().unwrap_or(0).into())
            }
        }
    }
}

/// Encodes a resolution as the response to (name, qtype): ID 0, QR, RD, RA, no OPT.
fn encode(
    name: &LowerName,
    qtype: RecordType,
    r: &Resolution,
    now: Instant,
    lifetime: Duration,
) -> Option<Entry> {
    let mut m = Message::new(0, MessageType::Response, OpCode::Query);
    m.metadata.recursion_desired = true;
    m.metadata.recursion_available = true;
    m.add_query(Query::query((**name).clone(), qtype));
    let addrs = match r {
        Resolution::Records { answers, .. } => {
            m.add_answers(answers.iter().cloned());
            addresses(answers)
        }
        Resolution::Negative { rcode, soa } => {
            m.metadata.response_code = *rcode;
            if let Some(soa) = soa {
                m.add_authority((**soa).clone());
            }
            Vec::new()
        }
    };
    if m.metadata.response_code != ResponseCode::NoError
        && m.metadata.response_code != ResponseCode::NXDomain
    {
        return None;
    }
    let mut bytes = m.to_vec().ok()?;
    let offsets = crate::wire::ttl_offsets(&bytes)?;
    let len = u16::try_from(bytes.len()).ok()?;
    let question_end = u16::try_from(crate::wire::skip_name(&bytes, 12)? + 4).ok()?;
    for (off, _) in offsets {
        bytes.extend_from_slice(&off.to_be_bytes());
    }
    Some(Entry {
        data: bytes.into_boxed_slice(),
        len,
        question_end,
        qtype: u16::from(qtype),
        stored: now,
        expires: now + lifetime,
        addrs: addrs.into_boxed_slice(),
    })
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A poisoned shard only means a panic elsewhere mid-insert; the map itself is still valid.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::rr::rdata::{A, CNAME, SOA};

    fn bounds() -> TtlBounds {
        TtlBounds {
            positive_min: Duration::from_secs(30),
            positive_max: Duration::from_secs(600),
            negative_min: Duration::from_secs(5),
            negative_max: Duration::from_secs(120),
        }
    }

    fn lname(s: &str) -> LowerName {
        LowerName::new(&Name::from_ascii(s).unwrap())
    }

    fn wire(s: &str) -> Vec<u8> {
        let mut buf = [0u8; 256];
        name_wire(&Name::from_ascii(s).unwrap(), &mut buf)
            .unwrap()
            .to_vec()
    }

    fn answer(ttls: &[u32]) -> Resolution {
        let n = |s: &str| Name::from_ascii(s).unwrap();
        let mut answers = vec![Record::from_rdata(
            n("a.example."),
            ttls[0],
            RData::CNAME(CNAME(n("b.example."))),
        )];
        for &t in &ttls[1..] {
            answers.push(Record::from_rdata(
                n("b.example."),
                t,
                RData::A(A::new(192, 0, 2, 1)),
            ));
        }
        Resolution::Records {
            answers,
            authorities: vec![Record::from_rdata(
                n("example."),
                9,
                RData::A(A::new(192, 0, 2, 9)),
            )],
        }
    }

    fn ttls(r: &Resolution) -> Vec<u32> {
        match r {
            Resolution::Records { answers, .. } => answers.iter().map(|r| r.ttl).collect(),
            Resolution::Negative { soa, .. } => soa.iter().map(|r| r.ttl).collect(),
        }
    }

    #[test]
    fn clamps_counts_down_and_expires() {
        let c = AnswerCache::new(100, bounds());
        let t0 = Instant::now();
        let mut r = answer(&[10, 5000]);
        c.insert(&lname("a.example."), RecordType::A, &mut r, t0);
        assert_eq!(ttls(&r), [30, 600], "clamped in place");
        let e = c
            .get(&wire("a.example."), 1, t0 + Duration::from_secs(7))
            .unwrap();
        let hit = e.resolution(t0 + Duration::from_secs(7)).unwrap();
        assert_eq!(ttls(&hit), [23, 593]);
        match hit {
            Resolution::Records { authorities, .. } => assert!(authorities.is_empty(), "minimal"),
            _ => panic!(),
        }
        assert_eq!(e.addrs.len(), 1);
        assert!(c.get(&wire("a.example."), 28, t0).is_none());
        assert!(
            c.get(&wire("a.example."), 1, t0 + Duration::from_secs(30))
                .is_none()
        );
        assert_eq!(c.len(), 1);
    }

    #[test]
    fn negative_ttl_is_the_soa_minimum_within_bounds() {
        let c = AnswerCache::new(100, bounds());
        let t0 = Instant::now();
        let soa = |ttl, minimum| {
            Box::new(Record::from_rdata(
                Name::from_ascii("example.").unwrap(),
                ttl,
                RData::SOA(SOA::new(Name::root(), Name::root(), 1, 1, 1, 1, minimum)),
            ))
        };
        let mut r = Resolution::Negative {
            rcode: ResponseCode::NXDomain,
            soa: Some(soa(3600, 60)),
        };
        c.insert(&lname("x.example."), RecordType::A, &mut r, t0);
        assert_eq!(ttls(&r), [60]);
        let e = c
            .get(&wire("x.example."), 1, t0 + Duration::from_secs(59))
            .unwrap();
        match e.resolution(t0).unwrap() {
            Resolution::Negative { rcode, soa } => {
                assert_eq!(rcode, ResponseCode::NXDomain);
                assert_eq!(soa.unwrap().ttl, 60);
            }
            _ => panic!(),
        }
        assert!(
            c.get(&wire("x.example."), 1, t0 + Duration::from_secs(60))
                .is_none()
        );
        let mut r = Resolution::Negative {
            rcode: ResponseCode::NoError,
            soa: Some(soa(3600, 86400)),
        };
        c.insert(&lname("y.example."), RecordType::A, &mut r, t0);
        assert_eq!(ttls(&r), [120], "capped at negative_max");
    }

    #[test]
    fn write_patches_id_flags_case_ttls_and_edns() {
        let c = AnswerCache::new(100, bounds());
        let t0 = Instant::now();
        c.insert(
            &lname("A.Example."),
            RecordType::A,
            &mut answer(&[300, 60]),
            t0,
        );
        let e = c.get(&wire("a.example."), 1, t0).unwrap();
        let mut q = vec![0xab, 0xcd, 0x00, 0x10, 0, 1, 0, 0, 0, 0, 0, 0];
        q.extend_from_slice(b"\x01A\x07eXAMPLE\x00\x00\x01\x00\x01");
        let qend = q.len();
        let mut out = [0u8; 512];
        let n = e
            .write(
                &q,
                qend,
                Some((1232, true)),
                t0 + Duration::from_secs(10),
                &mut out,
            )
            .unwrap();
        let m = Message::from_vec(&out[..n]).unwrap();
        assert_eq!(m.metadata.id, 0xabcd);
        assert!(!m.metadata.recursion_desired && m.metadata.checking_disabled);
        assert!(m.metadata.recursion_available);
        assert_eq!(m.queries[0].name().to_ascii(), "A.eXAMPLE.");
        assert_eq!(
            m.answers.iter().map(|r| r.ttl).collect::<Vec<_>>(),
            [290, 50]
        );
        let edns = m.edns.unwrap();
        assert_eq!(edns.max_payload(), 1232);
        assert!(edns.flags().dnssec_ok);
        let n = e.write(&q, qend, None, t0, &mut out).unwrap();
        assert!(Message::from_vec(&out[..n]).unwrap().edns.is_none());
        assert!(e.write(&q, qend - 1, None, t0, &mut out).is_none());
        c.clear();
        assert!(c.is_empty());
    }

    #[test]
    fn stays_within_capacity() {
        let c = AnswerCache::new(64, bounds());
        let t0 = Instant::now();
        for i in 0..1000 {
            c.insert(
                &lname(&format!("n{i}.example.")),
                RecordType::A,
                &mut answer(&[300, 300]),
                t0,
            );
        }
        assert!(c.len() <= 64 && c.len() >= 32, "{}", c.len());
        let off = AnswerCache::new(0, bounds());
        off.insert(
            &lname("a.example."),
            RecordType::A,
            &mut answer(&[300, 300]),
            t0,
        );
        assert!(off.is_empty());
    }
}
