//! The answer cache: one [`Answer`] (wire form, see `answer.rs`) per (name, type), shared by
//! every transport.
//!
//! Semantics are those of a resolver cache: every record's TTL is clamped to the positive bounds
//! and an answer lives as long as its shortest record; NXDOMAIN and NODATA (with the CNAME chain
//! that led there) live for the SOA's negative TTL (RFC 2308: min(SOA TTL, SOA MINIMUM)) within
//! the negative bounds. The policy is applied before every lookup, so an entry is never served
//! for a name the current policy denies.
//!
//! Sharded std mutexes, held for one hash probe and an `Arc` clone, never across an await.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{Name, RData, RecordType};

use crate::base::sync::lock;
use crate::resolve::answer::{Answer, Checked, Resolution};

/// TTL bounds applied when caching (the default: all zero, until a config applies its own).
#[derive(Debug, Clone, Copy, Default)]
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

impl TtlBounds {
    /// The bounds `[upstream]` sets.
    pub fn of(u: &crate::config::UpstreamConfig) -> TtlBounds {
        TtlBounds {
            positive_min: u.positive_min_ttl,
            positive_max: u.positive_max_ttl,
            negative_min: u.negative_min_ttl,
            negative_max: u.negative_max_ttl,
        }
    }

    /// Clamps the TTLs of `r` in place (so the first reply matches later hits) and returns how
    /// long the answer may be cached.
    pub fn clamp(&self, r: &mut Resolution, qtype: RecordType) -> Duration {
        let secs = |d: Duration| u32::try_from(d.as_secs()).unwrap_or(u32::MAX);
        let (plo, phi) = (secs(self.positive_min), secs(self.positive_max));
        let (nlo, nhi) = (secs(self.negative_min), secs(self.negative_max));
        let mut lifetime = u32::MAX;
        for rec in r.answers.iter_mut() {
            rec.ttl = rec.ttl.clamp(plo, phi);
            lifetime = lifetime.min(rec.ttl);
        }
        let negative = r.rcode == ResponseCode::NXDomain
            || !r.answers.iter().any(|a| a.record_type() == qtype);
        if negative {
            let soa = r.authorities.iter_mut().find_map(|rec| match &rec.data {
                RData::SOA(s) => Some((rec.ttl.min(s.minimum), &mut rec.ttl)),
                _ => None,
            });
            let ttl = match soa {
                Some((ttl, slot)) => {
                    let ttl = ttl.clamp(nlo, nhi);
                    *slot = ttl;
                    ttl
                }
                None => nlo,
            };
            lifetime = lifetime.min(ttl);
        }
        Duration::from_secs(if lifetime == u32::MAX { 0 } else { lifetime }.into())
    }
}

type Shard = Mutex<HashMap<u64, Arc<Answer>, rustc_hash::FxBuildHasher>>;

/// A bounded, sharded cache of answers in wire form.
pub struct AnswerCache {
    shards: Box<[Shard]>,
    /// Entries per shard at most (a reload may change it).
    per_shard: AtomicUsize,
    /// Read once per miss; a reload may replace them.
    bounds: Mutex<TtlBounds>,
    /// Seconds past expiry an answer is kept for serve-stale (RFC 8767).
    stale_max_secs: AtomicU64,
}

impl std::fmt::Debug for AnswerCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AnswerCache")
            .field("per_shard", &self.per_shard.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

const SHARDS: usize = 16;

fn key(name: &[u8], qtype: u16) -> u64 {
    let mut h = rustc_hash::FxBuildHasher.build_hasher();
    h.write(name);
    h.write_u16(qtype);
    h.finish()
}

impl AnswerCache {
    /// A cache of about `capacity` answers (0 disables caching), each kept `stale_max` past its
    /// expiry for serve-stale.
    pub fn new(capacity: usize, bounds: TtlBounds, stale_max: Duration) -> AnswerCache {
        AnswerCache {
            shards: (0..SHARDS)
                .map(|_| Mutex::new(HashMap::default()))
                .collect(),
            per_shard: AtomicUsize::new(capacity.div_ceil(SHARDS)),
            bounds: Mutex::new(bounds),
            stale_max_secs: AtomicU64::new(stale_max.as_secs()),
        }
    }

    /// New capacity, TTL bounds and serve-stale window (a reload). Entries already cached keep
    /// the TTLs they were stored with; a smaller capacity evicts as entries arrive.
    pub fn set_limits(&self, capacity: usize, bounds: TtlBounds, stale_max: Duration) {
        self.per_shard
            .store(capacity.div_ceil(SHARDS), Ordering::Relaxed);
        *lock(&self.bounds) = bounds;
        self.stale_max_secs
            .store(stale_max.as_secs(), Ordering::Relaxed);
    }

    /// Capacity, TTL bounds and serve-stale window in force.
    pub fn limits(&self) -> (usize, TtlBounds, Duration) {
        (
            self.per_shard.load(Ordering::Relaxed) * SHARDS,
            *lock(&self.bounds),
            self.stale_max(),
        )
    }

    fn stale_max(&self) -> Duration {
        Duration::from_secs(self.stale_max_secs.load(Ordering::Relaxed))
    }

    fn shard(&self, k: u64) -> &Shard {
        &self.shards[(k >> 60) as usize % SHARDS]
    }

    /// The live answer for a question; `name` is the lower-case wire form.
    pub fn get(&self, name: &[u8], qtype: u16, now: Instant) -> Option<Arc<Answer>> {
        self.lookup(name, qtype).filter(|e| e.expires > now)
    }

    /// An expired answer for a question, no more than `stale_max` past its expiry (RFC 8767).
    pub fn get_stale(&self, name: &[u8], qtype: u16, now: Instant) -> Option<Arc<Answer>> {
        self.lookup(name, qtype)
            .filter(|e| e.expires <= now && e.expires + self.stale_max() > now)
    }

    fn lookup(&self, name: &[u8], qtype: u16) -> Option<Arc<Answer>> {
        let k = key(name, qtype);
        let e = lock(self.shard(k)).get(&k).cloned()?;
        let stored = e.message().get(12..12 + name.len())?;
        (e.qtype() == qtype && crate::base::wire::same(stored, name)).then_some(e)
    }

    /// Makes the wire answer to (`qname`, `qtype`) from a chain-checked resolution: TTLs clamped
    /// to the bounds, then stored when it may be cached. `None` if it cannot be encoded.
    pub fn answer(
        &self,
        qname: &Name,
        qtype: RecordType,
        mut checked: Checked,
        now: Instant,
    ) -> Option<Arc<Answer>> {
        let bounds = *lock(&self.bounds);
        let lifetime = bounds.clamp(&mut checked.resolution, qtype);
        let answer = Arc::new(Answer::new(
            qname,
            qtype,
            &checked.resolution,
            &checked.chain,
            now,
            lifetime,
        )?);
        if self.per_shard.load(Ordering::Relaxed) > 0 && !lifetime.is_zero() {
            self.insert(answer.clone(), now);
        }
        Some(answer)
    }

    fn insert(&self, answer: Arc<Answer>, now: Instant) {
        let msg = answer.message();
        let k = key(&msg[12..answer.question_end() - 4], answer.qtype());
        let per_shard = self.per_shard.load(Ordering::Relaxed);
        let mut shard = lock(self.shard(k));
        if shard.len() >= per_shard && !shard.contains_key(&k) {
            let keep = self.stale_max();
            shard.retain(|_, e| e.expires + keep > now);
            if shard.len() >= per_shard {
                // Full of live answers: drop an eighth, whichever the map yields first. Cheap and
                // good enough: an evicted name costs one upstream query.
                let victims: Vec<u64> =
                    shard.keys().take((per_shard / 8).max(1)).copied().collect();
                for v in victims {
                    shard.remove(&v);
                }
            }
        }
        shard.insert(k, answer);
    }

    /// Every answer still live at `now`, at most the capacity: what the warm-restart state
    /// keeps.
    pub fn live(&self, now: Instant) -> Vec<Arc<Answer>> {
        let mut out = Vec::new();
        for s in self.shards.iter() {
            out.extend(lock(s).values().filter(|e| e.expires > now).cloned());
        }
        out
    }

    /// Puts an answer read back from the warm-restart state in, as [`AnswerCache::answer`]
    /// would have stored it; false when caching is off or it has no time left.
    pub fn restore(&self, answer: Arc<Answer>, now: Instant) -> bool {
        if self.per_shard.load(Ordering::Relaxed) == 0 || answer.expires <= now {
            return false;
        }
        self.insert(answer, now);
        true
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::rr::Record;
    use hickory_proto::rr::rdata::{A, CNAME, SOA};

    fn bounds() -> TtlBounds {
        TtlBounds {
            positive_min: Duration::from_secs(30),
            positive_max: Duration::from_secs(600),
            negative_min: Duration::from_secs(5),
            negative_max: Duration::from_secs(120),
        }
    }

    fn n(s: &str) -> Name {
        Name::from_ascii(s).unwrap()
    }

    /// The lower-case wire form of a name, as the cache keys it.
    fn wire(s: &str) -> Vec<u8> {
        use hickory_proto::serialize::binary::{BinEncodable, BinEncoder};
        let mut out = Vec::new();
        n(s).to_lowercase()
            .emit(&mut BinEncoder::new(&mut out))
            .unwrap();
        out
    }

    fn checked(r: Resolution, q: &str, qtype: RecordType) -> Checked {
        r.chain_from(&n(q), qtype).unwrap()
    }

    fn answer(ttls: &[u32]) -> Resolution {
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
        Resolution {
            rcode: ResponseCode::NoError,
            answers,
            authorities: vec![],
        }
    }

    fn soa(ttl: u32, minimum: u32) -> Record {
        Record::from_rdata(
            n("example."),
            ttl,
            RData::SOA(SOA::new(Name::root(), Name::root(), 1, 1, 1, 1, minimum)),
        )
    }

    fn ttls(a: &Answer, now: Instant) -> Vec<u32> {
        let r = a.records(now).unwrap();
        r.answers
            .iter()
            .chain(&r.authorities)
            .map(|r| r.ttl)
            .collect()
    }

    #[test]
    fn clamps_counts_down_and_expires() {
        let c = AnswerCache::new(100, bounds(), Duration::ZERO);
        let t0 = Instant::now();
        let a = c
            .answer(
                &n("a.example."),
                RecordType::A,
                checked(answer(&[10, 5000]), "a.example.", RecordType::A),
                t0,
            )
            .unwrap();
        assert_eq!(ttls(&a, t0), [30, 600], "clamped before the first reply");
        let e = c
            .get(&wire("a.example."), 1, t0 + Duration::from_secs(7))
            .unwrap();
        assert_eq!(ttls(&e, t0 + Duration::from_secs(7)), [23, 593]);
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
        let c = AnswerCache::new(100, bounds(), Duration::ZERO);
        let t0 = Instant::now();
        let nx = Resolution {
            rcode: ResponseCode::NXDomain,
            answers: vec![],
            authorities: vec![soa(3600, 60)],
        };
        let a = c
            .answer(
                &n("x.example."),
                RecordType::A,
                checked(nx, "x.example.", RecordType::A),
                t0,
            )
            .unwrap();
        assert_eq!(ttls(&a, t0), [60]);
        assert_eq!(a.rcode(), 3);
        assert!(
            c.get(&wire("x.example."), 1, t0 + Duration::from_secs(59))
                .is_some()
        );
        assert!(
            c.get(&wire("x.example."), 1, t0 + Duration::from_secs(60))
                .is_none()
        );
        // NODATA through a CNAME: the chain is kept, and the entry lives for the negative TTL.
        let mut nodata = answer(&[300]);
        nodata.authorities.push(soa(3600, 86400));
        let a = c
            .answer(
                &n("a.example."),
                RecordType::TXT,
                checked(nodata, "a.example.", RecordType::TXT),
                t0,
            )
            .unwrap();
        assert_eq!(ttls(&a, t0), [300, 120], "SOA capped at negative_max");
        assert_eq!(a.expires - t0, Duration::from_secs(120));
        assert_eq!(a.chain.len(), 1);
    }

    #[test]
    fn expired_answers_stay_for_serve_stale() {
        let c = AnswerCache::new(100, bounds(), Duration::from_secs(3600));
        let t0 = Instant::now();
        c.answer(
            &n("a.example."),
            RecordType::A,
            checked(answer(&[300, 300]), "a.example.", RecordType::A),
            t0,
        );
        let w = wire("a.example.");
        let later = |s| t0 + Duration::from_secs(s);
        assert!(c.get(&w, 1, later(10)).is_some());
        assert!(
            c.get_stale(&w, 1, later(10)).is_none(),
            "not stale while live"
        );
        assert!(c.get(&w, 1, later(301)).is_none());
        assert!(c.get_stale(&w, 1, later(301)).is_some());
        assert!(
            c.get_stale(&w, 1, later(300 + 3601)).is_none(),
            "past stale_max"
        );
    }

    #[test]
    fn stays_within_capacity() {
        let c = AnswerCache::new(64, bounds(), Duration::ZERO);
        let t0 = Instant::now();
        for i in 0..1000 {
            let q = format!("n{i}.example.");
            let mut r = answer(&[300, 300]);
            r.answers[0].name = n(&q);
            c.answer(&n(&q), RecordType::A, checked(r, &q, RecordType::A), t0);
        }
        assert!(c.len() <= 64 && c.len() >= 32, "{}", c.len());
        let off = AnswerCache::new(0, bounds(), Duration::ZERO);
        let a = off.answer(
            &n("a.example."),
            RecordType::A,
            checked(answer(&[300, 300]), "a.example.", RecordType::A),
            t0,
        );
        assert!(a.is_some(), "answered even when nothing is cached");
        assert!(off.is_empty());
        c.clear();
        assert!(c.is_empty());
    }
}
