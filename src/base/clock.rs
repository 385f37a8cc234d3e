//! Time as dnsfence keeps it: the [`Clock`] the answer cache's TTLs run on, and wall-clock time
//! as dnsfence writes it — Unix seconds, and RFC 3339 UTC with milliseconds (the query log,
//! overlay headers, `/v1/catalog`). The formatting is by hand rather than with a date crate: two
//! small functions, on the query log's hot path (one per logged line). Depends on nothing else of
//! dnsfence.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The monotonic clock of cached answers' TTLs and serve-stale windows: `Instant::now()`, plus
/// what a test has advanced it by, so that TTL tests run without real sleeps. Latencies are
/// measured with `Instant` itself.
#[derive(Debug, Default)]
pub struct Clock {
    /// Milliseconds added to the monotonic clock (0 but in tests).
    ahead_ms: AtomicU64,
}

impl Clock {
    /// Now, on this clock.
    pub fn now(&self) -> Instant {
        match self.ahead_ms.load(Ordering::Relaxed) {
            0 => Instant::now(),
            ms => Instant::now() + Duration::from_millis(ms),
        }
    }

    /// Moves the clock forward by `d` (for tests: a cached answer ages without waiting).
    pub fn advance(&self, d: Duration) {
        let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        self.ahead_ms.fetch_add(ms, Ordering::Relaxed);
    }
}

/// Seconds since the Unix epoch (0 if the clock is before it).
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Formats a time as RFC 3339 UTC with milliseconds (`2026-11-25T05:40:19.123Z`).
pub fn rfc3339(t: SystemTime) -> String {
    let mut s = String::with_capacity(24);
    rfc3339_into(&mut s, t);
    s
}

/// [`rfc3339`] into a buffer, without allocating.
pub fn rfc3339_into(buf: &mut String, t: SystemTime) {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    let secs = d.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, day) = civil_from_days(days as i64);
    let _ = write!(
        buf,
        "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_millis()
    );
}

/// Days since 1970-01-01 to (year, month, day), after Howard Hinnant's `civil_from_days`.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clock_moves_forward_when_told() {
        let c = Clock::default();
        let a = c.now();
        c.advance(Duration::from_secs(30));
        assert!(c.now() >= a + Duration::from_secs(30));
    }

    #[test]
    fn formats_time() {
        let t = UNIX_EPOCH + Duration::from_millis(1_795_585_219_123);
        assert_eq!(rfc3339(t), "2026-11-25T05:40:19.123Z");
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(rfc3339(leap), "2000-02-29T00:00:00.000Z");
    }
}
