//! Per-client query rate limiting for UDP: a token bucket per source address.
//!
//! A kiosk VLAN should never need more than a few dozen queries a second per device; a client far
//! above that is looping, misconfigured or spoofed (UDP sources can be forged, which is why TCP is
//! not limited). Excess datagrams are dropped without an answer — answering would feed a
//! reflection attack — and counted as `rate_limited`. Buckets live in sharded maps that are
//! pruned of idle clients when they grow, then of the least recently seen ones, so a flood of
//! forged sources cannot grow memory without bound nor reset the limit of a client that is still
//! sending.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Instant;

struct Bucket {
    tokens: f32,
    last: Instant,
}

/// Token buckets by client address.
pub struct RateLimiter {
    qps: f32,
    burst: f32,
    shards: Box<[Mutex<HashMap<IpAddr, Bucket, rustc_hash::FxBuildHasher>>]>,
}

const SHARDS: usize = 16;
/// Clients remembered per shard before idle ones are pruned.
const MAX_PER_SHARD: usize = 4096;

impl RateLimiter {
    /// A limiter of `qps` queries per second per client, with bursts of `burst`; `None` when
    /// `qps` is 0 (off).
    pub fn new(qps: u32, burst: u32) -> Option<RateLimiter> {
        (qps > 0).then(|| RateLimiter {
            qps: qps as f32,
            burst: burst.max(qps).max(1) as f32,
            shards: (0..SHARDS)
                .map(|_| Mutex::new(HashMap::default()))
                .collect(),
        })
    }

    /// Whether a query from `client` at `now` is within its rate (and takes a token if so).
    pub fn allow(&self, client: IpAddr, now: Instant) -> bool {
        let shard = match client {
            IpAddr::V4(a) => u32::from(a) as usize,
            IpAddr::V6(a) => (u128::from(a) >> 64) as usize ^ (u128::from(a) as usize),
        } % SHARDS;
        let mut map = crate::base::sync::lock(&self.shards[shard]);
        if map.len() >= MAX_PER_SHARD && !map.contains_key(&client) {
            // Forget clients whose bucket has refilled: they carry no state worth keeping.
            let full = self.burst / self.qps;
            map.retain(|_, b| now.saturating_duration_since(b.last).as_secs_f32() < full);
            if map.len() >= MAX_PER_SHARD {
                // Still full of active clients: forget the least recently seen eighth. Clearing
                // the shard would hand every client — the abuser included — a fresh burst.
                let mut seen: Vec<(Instant, IpAddr)> =
                    map.iter().map(|(ip, b)| (b.last, *ip)).collect();
                let n = (MAX_PER_SHARD / 8).max(1);
                seen.select_nth_unstable_by_key(n - 1, |(last, _)| *last);
                for (_, ip) in &seen[..n] {
                    map.remove(ip);
                }
            }
        }
        let b = map.entry(client).or_insert(Bucket {
            tokens: self.burst,
            last: now,
        });
        let refill = now.saturating_duration_since(b.last).as_secs_f32() * self.qps;
        b.tokens = (b.tokens + refill).min(self.burst);
        b.last = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn bursts_then_refills() {
        let r = RateLimiter::new(10, 20).unwrap();
        let t0 = Instant::now();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        assert_eq!((0..25).filter(|_| r.allow(a, t0)).count(), 20, "the burst");
        assert!(r.allow(b, t0), "another client has its own bucket");
        assert!(!r.allow(a, t0));
        assert_eq!(
            (0..5)
                .filter(|_| r.allow(a, t0 + Duration::from_millis(500)))
                .count(),
            5
        );
        assert!(RateLimiter::new(0, 10).is_none());
    }

    #[test]
    fn a_flood_of_sources_does_not_reset_an_active_abuser() {
        let r = RateLimiter::new(1, 1).unwrap();
        let t0 = Instant::now();
        let abuser: IpAddr = "10.0.0.1".parse().unwrap();
        assert!(r.allow(abuser, t0));
        assert!(!r.allow(abuser, t0));
        // Forged sources fill every shard many times over, all at the same instant (none
        // idle), while the abuser keeps sending: it stays the most recently seen and limited.
        let mut later = t0;
        for i in 0..100_000u32 {
            if i % 1000 == 0 {
                later += std::time::Duration::from_micros(10);
                assert!(!r.allow(abuser, later), "no fresh burst at {i}");
            }
            r.allow(IpAddr::V4((0x0b00_0000 + i).into()), later);
        }
    }

    #[test]
    fn forged_sources_do_not_grow_memory() {
        let r = RateLimiter::new(10, 10).unwrap();
        let t0 = Instant::now();
        for i in 0..200_000u32 {
            r.allow(IpAddr::V4(i.into()), t0);
        }
        let total: usize = r.shards.iter().map(|s| s.lock().unwrap().len()).sum();
        assert!(total <= SHARDS * MAX_PER_SHARD, "{total}");
    }
}
