//! The daemon following the feed (`[catalog] feed`): poll the version every `refresh_hours`
//! (±10%, and after every SIGHUP), fetch and validate the endpoints when it moved, write the
//! overlay atomically into the state directory (a restart keeps it) and have the policy
//! recompiled — the same swap as a reload: cache and fence stay. A failed fetch or a rejected
//! feed keeps the last good overlay and says why (log line, `dnsfence_catalog_feed_fetches_total
//! {result}`).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use tokio::sync::mpsc;

use super::fetch::{FetchError, Fetcher, ViaUpstream};
use super::{Feed, Provenance, overlay, write_atomically};
use crate::config::CatalogConfig;
use crate::zones::Catalog;

/// The results a fetch can have: `dnsfence_catalog_feed_fetches_total{result}`.
pub const RESULTS: [&str; 7] = [
    "ok",
    "unchanged",
    "http_error",
    "transport",
    "invalid",
    "catalog_error",
    "write_error",
];

/// What the follower knows, for metrics, `/v1/catalog` and logs.
#[derive(Debug, Default)]
pub struct FeedStatus {
    /// The version of the overlay in force.
    pub version: Mutex<Option<String>>,
    /// When the service last answered usefully (Unix seconds; 0: never).
    pub last_success: AtomicU64,
    /// Why the last fetch failed, if it did.
    pub last_error: Mutex<Option<String>>,
    /// Entries of the feed in force that were rejected.
    pub rejected: AtomicU64,
    /// Fetches by result, in [`RESULTS`] order.
    pub fetches: [AtomicU64; 7],
}

impl FeedStatus {
    /// The status at start: the version written in an existing overlay's header.
    pub fn from_overlay(overlay: Option<&Path>) -> FeedStatus {
        let version = overlay
            .and_then(|p| std::fs::read_to_string(p).ok())
            .and_then(|text| {
                text.lines()
                    .take_while(|l| l.starts_with('#'))
                    .find_map(|l| l.strip_prefix("# version: "))
                    .filter(|v| !v.starts_with("unknown"))
                    .map(str::to_string)
            });
        FeedStatus {
            version: Mutex::new(version),
            ..FeedStatus::default()
        }
    }

    fn count(&self, result: &str) {
        if let Some(i) = RESULTS.iter().position(|r| *r == result) {
            self.fetches[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The version in force, as a number for the metric (the service's are `YYYYMMDDNN`).
    pub fn version_number(&self) -> Option<f64> {
        lock(&self.version).as_deref().and_then(|v| v.parse().ok())
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `d` ± 10%, so that gateways started together do not poll together.
fn jitter(d: Duration) -> Duration {
    let mut b = [0u8; 8];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        use std::io::Read as _;
        let _ = f.read_exact(&mut b);
    }
    let r = u64::from_le_bytes(b) % 2001; // 0..=2000 → -10%..+10%
    d.mul_f64(0.9 + r as f64 / 10_000.0)
}

/// Everything one refresh needs.
pub struct Follower {
    fetcher: Fetcher,
    catalog: CatalogConfig,
    zone_dirs: Vec<PathBuf>,
    overlay: PathBuf,
    status: Arc<FeedStatus>,
}

impl Follower {
    /// A follower for `catalog` (which must have a feed), resolving through `resolver`.
    pub fn new(
        catalog: &CatalogConfig,
        zone_dirs: &[PathBuf],
        status: Arc<FeedStatus>,
        resolver: ViaUpstream,
        timeout: Duration,
    ) -> Result<Follower, String> {
        let feed = catalog.feed.as_deref().ok_or("no [catalog] feed")?;
        let overlay = catalog.overlay().ok_or("no [catalog] feed")?;
        Ok(Follower {
            fetcher: Fetcher::new(
                feed,
                &catalog.instance,
                catalog.ca_file.as_deref(),
                Some(resolver),
                timeout,
            )?,
            catalog: catalog.clone(),
            zone_dirs: zone_dirs.to_vec(),
            overlay,
            status,
        })
    }

    /// One refresh, blocking: `Ok(true)` when a new overlay was written.
    fn refresh(&self) -> Result<bool, (&'static str, String)> {
        let fail = |e: FetchError| (e.kind(), format!("{}: {e}", self.fetcher.source()));
        let version = self.fetcher.version().map_err(fail)?;
        if lock(&self.status.version).as_deref() == Some(version.as_str()) && self.overlay.exists()
        {
            return Ok(false);
        }
        let text = self.fetcher.endpoints().map_err(fail)?;
        let feed = Feed::parse(&text).map_err(|e| ("invalid", e.to_string()))?;
        // The overlay is computed against the zone directories alone: the floor.
        let catalog = Catalog::load_dirs_except(&self.zone_dirs, Some(&self.overlay))
            .map_err(|e| ("catalog_error", e.to_string()))?;
        let from = Provenance {
            source: self.fetcher.source(),
            instance: self.catalog.instance.clone(),
            version: Some(version.clone()),
        };
        let text = overlay(&catalog, &feed, &from);
        // The overlay must load as a zone file before it replaces the last good one.
        crate::zones::parse_zone(&self.overlay, &text, &mut Vec::new())
            .map_err(|e| ("invalid", format!("the overlay would not load: {e}")))?;
        std::fs::create_dir_all(&self.catalog.state_dir)
            .and_then(|()| write_atomically(&self.overlay, &text))
            .map_err(|e| ("write_error", format!("{}: {e}", self.overlay.display())))?;
        for r in &feed.rejected {
            tracing::warn!(id = %r.id, entry = %r.entry, reason = %r.reason, "catalog feed entry rejected");
        }
        self.status
            .rejected
            .store(feed.rejected.len() as u64, Ordering::Relaxed);
        *lock(&self.status.version) = Some(version);
        Ok(true)
    }
}

/// Runs until aborted: a refresh at once, then every `refresh` (±10%) or when `wake` fires
/// (SIGHUP). `applied` is told when a new overlay was written, so the policy is recompiled.
pub async fn follow(
    follower: Follower,
    refresh: Duration,
    applied: mpsc::Sender<()>,
    mut wake: mpsc::Receiver<()>,
) {
    let follower = Arc::new(follower);
    loop {
        let f = follower.clone();
        let outcome = tokio::task::spawn_blocking(move || f.refresh()).await;
        let status = &follower.status;
        match outcome {
            Ok(Ok(changed)) => {
                status.count(if changed { "ok" } else { "unchanged" });
                status.last_success.store(unix_now(), Ordering::Relaxed);
                *lock(&status.last_error) = None;
                if changed {
                    tracing::info!(
                        version = lock(&status.version).as_deref().unwrap_or(""),
                        overlay = %follower.overlay.display(),
                        "catalog feed: new version written"
                    );
                    let _ = applied.send(()).await;
                }
            }
            Ok(Err((result, why))) => {
                status.count(result);
                tracing::warn!(result, error = %why, "catalog feed: fetch failed; the last good overlay stays");
                *lock(&status.last_error) = Some(why);
            }
            Err(e) => tracing::error!(error = %e, "catalog feed: the fetch task failed"),
        }
        tokio::select! {
            _ = tokio::time::sleep(jitter(refresh)) => {}
            w = wake.recv() => if w.is_none() { return },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_within_ten_percent() {
        for _ in 0..100 {
            let j = jitter(Duration::from_secs(1000));
            assert!(
                j >= Duration::from_secs(900) && j <= Duration::from_secs(1100),
                "{j:?}"
            );
        }
    }

    #[test]
    fn the_version_in_force_survives_a_restart_through_the_header() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("feed-worldwide.toml");
        std::fs::write(
            &p,
            "# Generated\n# version: 2026112500\n\n[[extend]]\nid = \"163\"\n",
        )
        .unwrap();
        let s = FeedStatus::from_overlay(Some(&p));
        assert_eq!(s.version_number(), Some(2026112500.0));
        std::fs::write(&p, "# version: unknown (a saved file)\n").unwrap();
        assert_eq!(*lock(&FeedStatus::from_overlay(Some(&p)).version), None);
        assert_eq!(*lock(&FeedStatus::from_overlay(None).version), None);
    }
}
