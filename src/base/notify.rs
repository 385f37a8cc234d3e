//! systemd service notifications (sd_notify(3)) for `Type=notify`: READY=1 once dnsfence answers,
//! RELOADING=1 / READY=1 around a reload, STOPPING=1, and WATCHDOG=1 while the UDP workers turn.
//!
//! Every call is a no-op without `NOTIFY_SOCKET` (a shell, a test harness, another supervisor).
//! The protocol itself is the `sd-notify` crate's.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use sd_notify::NotifyState;

fn send(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        crate::warn_limited!(error = %e, "cannot notify the service manager (NOTIFY_SOCKET)");
    }
}

/// Start-up is complete: sockets bound, fence table and sets in place, policy compiled.
pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// A reload begins. MONOTONIC_USEC lets `Type=notify-reload` managers match it to the request.
pub fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => send(&[NotifyState::Reloading, now]),
        Err(_) => send(&[NotifyState::Reloading]),
    }
}

/// Shutdown begins.
pub fn stopping() {
    send(&[NotifyState::Stopping]);
}

/// One counter per UDP worker, bumped every time round its loop (at least every read timeout,
/// 200 ms, on an idle network). Each on its own cache line: workers never share one.
#[derive(Debug, Default)]
pub struct Heartbeat {
    beats: Vec<Beat>,
}

#[derive(Debug, Default)]
#[repr(align(64))]
struct Beat(AtomicU64);

impl Heartbeat {
    /// Counters for `workers` workers.
    pub fn new(workers: usize) -> Arc<Heartbeat> {
        Arc::new(Heartbeat {
            beats: (0..workers).map(|_| Beat::default()).collect(),
        })
    }

    /// Worker `i` went round its loop.
    #[inline]
    pub fn beat(&self, i: usize) {
        if let Some(b) = self.beats.get(i) {
            b.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn snapshot(&self) -> Vec<u64> {
        self.beats
            .iter()
            .map(|b| b.0.load(Ordering::Relaxed))
            .collect()
    }
}

/// The watchdog interval systemd asked for (`WatchdogSec=`), if any.
pub fn watchdog_interval() -> Option<Duration> {
    sd_notify::watchdog_enabled()
}

/// Sends WATCHDOG=1 every half `interval` (sd_watchdog_enabled(3)'s advice) while every UDP
/// worker has turned since the last check and this task runs (which proves the runtime does). A
/// stuck worker stops the pings: systemd then kills and restarts the service. Runs until
/// aborted.
pub async fn watchdog(heartbeat: Arc<Heartbeat>, interval: Duration) {
    watch(heartbeat, interval, || send(&[NotifyState::Watchdog])).await;
}

async fn watch(heartbeat: Arc<Heartbeat>, interval: Duration, ping: impl Fn()) {
    // Workers turn at least every 200 ms: a shorter check would call an idle worker stuck.
    let every = (interval / 2).max(Duration::from_millis(250));
    if every >= interval {
        tracing::warn!(
            ?interval,
            "WatchdogSec is shorter than 500 ms: dnsfence cannot prove its workers turn that often"
        );
    }
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last = heartbeat.snapshot();
    tick.tick().await;
    ping();
    loop {
        tick.tick().await;
        let now = heartbeat.snapshot();
        let stuck: Vec<usize> = now
            .iter()
            .zip(&last)
            .enumerate()
            .filter(|(_, (n, l))| n == l)
            .map(|(i, _)| i)
            .collect();
        if stuck.is_empty() {
            ping();
        } else {
            tracing::error!(
                workers = ?stuck,
                "udp workers have not turned for {every:?}: withholding the watchdog ping"
            );
        }
        last = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn beats_are_per_worker_and_out_of_range_is_ignored() {
        let h = Heartbeat::new(2);
        h.beat(1);
        h.beat(1);
        h.beat(7);
        assert_eq!(h.snapshot(), [0, 2]);
        assert_eq!(std::mem::align_of::<Beat>(), 64);
    }

    #[test]
    fn pings_stop_when_a_worker_stops_turning() {
        use std::sync::atomic::AtomicBool;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let h = Heartbeat::new(2);
        let pings = Arc::new(AtomicU64::new(0));
        let stalled = Arc::new(AtomicBool::new(false));
        // Worker 0 turns throughout; worker 1 turns for 1.2 s, then hangs.
        let beater = {
            let (h, stalled) = (h.clone(), stalled.clone());
            std::thread::spawn(move || {
                let start = std::time::Instant::now();
                while start.elapsed() < Duration::from_millis(2400) {
                    h.beat(0);
                    if start.elapsed() < Duration::from_millis(1200) {
                        h.beat(1);
                    } else {
                        stalled.store(true, Ordering::Relaxed);
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            })
        };
        let (before, after) = rt.block_on(async {
            let p = pings.clone();
            let task = tokio::spawn(watch(h, Duration::from_millis(500), move || {
                p.fetch_add(1, Ordering::Relaxed);
            }));
            tokio::time::sleep(Duration::from_millis(1100)).await;
            let before = pings.load(Ordering::Relaxed);
            // Past the stall and one check interval: no ping may come from here on.
            tokio::time::sleep(Duration::from_millis(700)).await;
            assert!(stalled.load(Ordering::Relaxed));
            let at_stall = pings.load(Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(600)).await;
            task.abort();
            (before, pings.load(Ordering::Relaxed) - at_stall)
        });
        beater.join().unwrap();
        assert!(before >= 3, "pings every 250 ms while both turn: {before}");
        assert_eq!(after, 0, "no ping while worker 1 is stuck");
    }
}
