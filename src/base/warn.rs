//! Warnings that cannot flood: [`warn_limited!`](crate::warn_limited) logs a call site's warning
//! at most once per [`INTERVAL`], with the number of the same warnings suppressed since the last
//! one (`suppressed = N`). A dead upstream under load was writing one WARN per query: 50,000
//! lines in 10 s. Each call site has its own gate (a static in the macro's expansion), so one
//! noisy warning never hides another.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// At most one line per call site this often.
pub const INTERVAL: Duration = Duration::from_secs(10);

/// One call site's rate limit.
#[derive(Debug)]
pub struct Gate {
    /// Milliseconds after process start of the last line written, plus one (0: never).
    last: AtomicU64,
    suppressed: AtomicU64,
}

fn now_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1
}

impl Gate {
    /// A gate that lets the first warning through.
    pub const fn new() -> Gate {
        Gate {
            last: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// `Some(suppressed since the last line)` when a line may be written now; `None` (and one
    /// more suppressed) otherwise.
    pub fn pass(&self) -> Option<u64> {
        self.pass_at(now_ms())
    }

    fn pass_at(&self, now: u64) -> Option<u64> {
        let last = self.last.load(Ordering::Relaxed);
        let due = last == 0 || now.saturating_sub(last) >= INTERVAL.as_millis() as u64;
        if due
            && self
                .last
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            return Some(self.suppressed.swap(0, Ordering::Relaxed));
        }
        self.suppressed.fetch_add(1, Ordering::Relaxed);
        None
    }
}

impl Default for Gate {
    fn default() -> Self {
        Gate::new()
    }
}

/// `tracing::warn!`, at most once per [`warn::INTERVAL`](crate::base::warn::INTERVAL) per call site,
/// with `suppressed = N` counting the lines left out since the last.
#[macro_export]
macro_rules! warn_limited {
    ($($arg:tt)+) => {{
        static GATE: $crate::base::warn::Gate = $crate::base::warn::Gate::new();
        if let Some(suppressed) = GATE.pass() {
            tracing::warn!(suppressed, $($arg)+);
        }
    }};
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_interval_with_the_count_left_out() {
        let g = Gate::new();
        assert_eq!(g.pass_at(1), Some(0));
        for t in 2..1000 {
            assert_eq!(g.pass_at(t), None);
        }
        assert_eq!(g.pass_at(10_000), None, "not yet");
        assert_eq!(g.pass_at(10_001), Some(999));
        assert_eq!(g.pass_at(10_002), None);
        assert_eq!(g.pass_at(30_000), Some(1));
    }
}
