//! The answer cache: upstream answers by (name, type), with bounded TTLs that count down.
//!
//! Why our own rather than hickory-resolver's `ResponseCache`: the server must know, per query,
//! whether the answer was a hit (the query log, the metrics and the fence's re-admits depend on
//! it), and the metrics need the number of entries; hickory's cache exposes neither. The semantics
//! are the same: every record's TTL is clamped to the positive bounds and the entry lives as long
//! as the shortest answer TTL; NXDOMAIN/NODATA live for the SOA's negative TTL (RFC 2308,
//! min(SOA TTL, SOA MINIMUM)) within the negative bounds; a hit returns TTLs reduced by the time
//! spent in the cache.
//!
//! Sharded std mutexes: a lookup holds one shard for a hash probe and a clone, never across an
//! await, so the slow path (eviction when full) cannot stall other shards.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hickory_proto::rr::{LowerName, RData, Record, RecordType};

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

struct Entry {
    resolution: Resolution,
    stored: Instant,
    expires: Instant,
}

type Key = (LowerName, RecordType);

/// A bounded, sharded answer cache.
pub struct AnswerCache {
    shards: Box<[Mutex<HashMap<Key, Entry>>]>,
    per_shard: usize,
    bounds: TtlBounds,
}

const SHARDS: usize = 16;

impl AnswerCache {
    /// A cache of about `capacity` answers (0 disables caching).
    pub fn new(capacity: usize, bounds: TtlBounds) -> AnswerCache {
        AnswerCache {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            per_shard: capacity.div_ceil(SHARDS),
            bounds,
        }
    }

    fn shard(&self, name: &LowerName, qtype: RecordType) -> &Mutex<HashMap<Key, Entry>> {
        use std::hash::{BuildHasher, Hash, Hasher};
        let mut h = rustc_hash::FxBuildHasher.build_hasher();
        name.hash(&mut h);
        u16::from(qtype).hash(&mut h);
        &self.shards[(h.finish() as usize) % SHARDS]
    }

    /// The cached answer, with TTLs reduced by the time it spent in the cache.
    pub fn get(&self, name: &LowerName, qtype: RecordType, now: Instant) -> Option<Resolution> {
        let shard = lock(self.shard(name, qtype));
        let entry = shard.get(&(name.clone(), qtype))?;
        if entry.expires <= now {
            return None;
        }
        let elapsed = u32::try_from(now.duration_since(entry.stored).as_secs()).unwrap_or(u32::MAX);
        let mut r = entry.resolution.clone();
        drop(shard);
        for_each_record(&mut r, |rec| rec.ttl = rec.ttl.saturating_sub(elapsed));
        Some(r)
    }

    /// Clamps the answer's TTLs to the bounds (in place, so the first answer matches later hits)
    /// and stores it.
    pub fn insert(&self, name: &LowerName, qtype: RecordType, r: &mut Resolution, now: Instant) {
        let lifetime = self.clamp(r);
        if self.per_shard == 0 || lifetime.is_zero() {
            return;
        }
        let mut shard = lock(self.shard(name, qtype));
        let key = (name.clone(), qtype);
        if shard.len() >= self.per_shard && !shard.contains_key(&key) {
            shard.retain(|_, e| e.expires > now);
            if shard.len() >= self.per_shard {
                // Full of live answers: drop an eighth, whichever the map yields first. Cheap and
                // good enough: an evicted name costs one upstream query.
                let drop_n = (self.per_shard / 8).max(1);
                let victims: Vec<Key> = shard.keys().take(drop_n).cloned().collect();
                for k in victims {
                    shard.remove(&k);
                }
            }
        }
        shard.insert(
            key,
            Entry {
                resolution: r.clone(),
                stored: now,
                expires: now + lifetime,
            },
        );
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
        if let Resolution::Negative { soa, .. } = r {
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
            return Duration::from_secs(negative.into());
        }
        let (lo, hi) = (secs(b.positive_min), secs(b.positive_max));
        for_each_record(r, |rec| rec.ttl = rec.ttl.clamp(lo, hi));
        match r {
            Resolution::Records { answers, .. } => {
                Duration::from_secs(answers.iter().map(|x| x.ttl).min().unwrap_or(lo).into())
            }
            Resolution::Negative { .. } => Duration::ZERO,
        }
    }
}

fn for_each_record(r: &mut Resolution, mut f: impl FnMut(&mut Record)) {
    match r {
        Resolution::Records {
            answers,
            authorities,
        } => answers
            .iter_mut()
            .chain(authorities.iter_mut())
            .for_each(&mut f),
        Resolution::Negative { soa, .. } => {
            if let Some(s) = soa.as_deref_mut() {
                f(s)
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A poisoned shard only means a panic elsewhere mid-insert; the map itself is still valid.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::ResponseCode;
    use hickory_proto::rr::Name;
    use hickory_proto::rr::rdata::{A, SOA};

    fn bounds() -> TtlBounds {
        TtlBounds {
            positive_min: Duration::from_secs(30),
            positive_max: Duration::from_secs(600),
            negative_min: Duration::from_secs(5),
            negative_max: Duration::from_secs(120),
        }
    }

    fn name(s: &str) -> LowerName {
        LowerName::new(&Name::from_ascii(s).unwrap())
    }

    fn answer(ttls: &[u32]) -> Resolution {
        Resolution::Records {
            answers: ttls
                .iter()
                .map(|&t| {
                    Record::from_rdata(
                        Name::from_ascii("a.example.").unwrap(),
                        t,
                        RData::A(A::new(192, 0, 2, 1)),
                    )
                })
                .collect(),
            authorities: Vec::new(),
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
        c.insert(&name("a.example."), RecordType::A, &mut r, t0);
        assert_eq!(ttls(&r), [30, 600], "clamped in place");
        let hit = c
            .get(
                &name("A.Example."),
                RecordType::A,
                t0 + Duration::from_secs(7),
            )
            .unwrap();
        assert_eq!(ttls(&hit), [23, 593]);
        assert!(c.get(&name("a.example."), RecordType::AAAA, t0).is_none());
        // Lives as long as the shortest (clamped) TTL.
        assert!(
            c.get(
                &name("a.example."),
                RecordType::A,
                t0 + Duration::from_secs(30)
            )
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
        c.insert(&name("x.example."), RecordType::A, &mut r, t0);
        assert_eq!(ttls(&r), [60]);
        assert!(
            c.get(
                &name("x.example."),
                RecordType::A,
                t0 + Duration::from_secs(59)
            )
            .is_some()
        );
        assert!(
            c.get(
                &name("x.example."),
                RecordType::A,
                t0 + Duration::from_secs(60)
            )
            .is_none()
        );
        let mut r = Resolution::Negative {
            rcode: ResponseCode::NoError,
            soa: Some(soa(3600, 86400)),
        };
        c.insert(&name("y.example."), RecordType::A, &mut r, t0);
        assert_eq!(ttls(&r), [120], "capped at negative_max");
    }

    #[test]
    fn stays_within_capacity() {
        let c = AnswerCache::new(64, bounds());
        let t0 = Instant::now();
        for i in 0..1000 {
            let mut r = answer(&[300]);
            c.insert(&name(&format!("n{i}.example.")), RecordType::A, &mut r, t0);
        }
        assert!(c.len() <= 64, "{}", c.len());
        assert!(c.len() >= 32, "{}", c.len());
        let off = AnswerCache::new(0, bounds());
        off.insert(&name("a.example."), RecordType::A, &mut answer(&[300]), t0);
        assert!(off.is_empty());
    }
}
