//! The daemon following a catalog source (`[catalog] page`, `[catalog] feed`): fetch every
//! `refresh_hours` (±10%, and after every SIGHUP), validate, write the overlay atomically into the
//! state directory (a restart keeps it) and have the policy recompiled — the same swap as a
//! reload: cache and fence stay. A failed fetch, a page whose structure changed, a rejected feed
//! or an overlay the catalog would not load with keeps the last good overlay and says why (log
//! line, `dnsfence_catalog_fetches_total{source,result}`, `last_error` in `/v1/catalog`).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::base::sync::lock;

use tokio::sync::mpsc;

use super::fetch::{FeedService, FetchError, Fetcher};
use super::{Provenance, Source, SourceKind, overlay, same_overlay, temporary_beside};
use crate::catalog::zones::Catalog;

/// The results a fetch can have: `dnsfence_catalog_fetches_total{source,result}`.
pub const RESULTS: [&str; 7] = [
    "ok",
    "unchanged",
    "http_error",
    "transport",
    "invalid",
    "catalog_error",
    "write_error",
];

/// What a follower knows, for metrics, `/v1/catalog` and logs.
#[derive(Debug)]
pub struct SourceStatus {
    /// Which source.
    pub kind: SourceKind,
    /// The overlay it writes.
    pub overlay: PathBuf,
    /// The version of the overlay in force.
    pub version: Mutex<Option<String>>,
    /// When the source last answered usefully (Unix seconds; 0: never).
    pub last_success: AtomicU64,
    /// Why the last fetch failed, if it did.
    pub last_error: Mutex<Option<String>>,
    /// Entries of the source in force that were rejected.
    pub rejected: AtomicU64,
    /// Fetches by result, in [`RESULTS`] order.
    pub fetches: [AtomicU64; 7],
}

impl SourceStatus {
    /// The status at start: the version written in an existing overlay's header.
    pub fn new(kind: SourceKind, overlay: PathBuf) -> SourceStatus {
        let version = std::fs::read_to_string(&overlay).ok().and_then(|text| {
            text.lines()
                .take_while(|l| l.starts_with('#'))
                .find_map(|l| l.strip_prefix("# version: "))
                .filter(|v| !v.starts_with("unknown"))
                .map(str::to_string)
        });
        SourceStatus {
            kind,
            overlay,
            version: Mutex::new(version),
            last_success: AtomicU64::new(0),
            last_error: Mutex::new(None),
            rejected: AtomicU64::new(0),
            fetches: Default::default(),
        }
    }

    fn count(&self, result: &str) {
        if let Some(i) = RESULTS.iter().position(|r| *r == result) {
            self.fetches[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The version in force, as a number for the metric (the feed's `YYYYMMDDNN`, the page's
    /// date as `YYYYMMDD`).
    pub fn version_number(&self) -> Option<f64> {
        lock(&self.version)
            .as_deref()
            .and_then(|v| v.replace('-', "").parse().ok())
    }

    /// The version in force.
    pub fn version(&self) -> Option<String> {
        lock(&self.version).clone()
    }

    /// Why the last fetch failed.
    pub fn last_error(&self) -> Option<String> {
        lock(&self.last_error).clone()
    }
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

/// Where a follower fetches from.
pub enum Origin {
    /// The page's Markdown at this URL.
    Page(String),
    /// The Autopilot requirements page's Markdown at this URL.
    AutopilotPage(String),
    /// An instance of the endpoint web service.
    Feed(FeedService),
}

impl Origin {
    /// Which source.
    pub fn kind(&self) -> SourceKind {
        match self {
            Origin::Page(_) => SourceKind::Page,
            Origin::AutopilotPage(_) => SourceKind::AutopilotPage,
            Origin::Feed(_) => SourceKind::Feed,
        }
    }
}

/// A failed refresh: the metric's result and the log's words.
type Failure = (&'static str, String);

/// Everything one refresh needs.
pub struct Follower {
    origin: Origin,
    fetcher: Fetcher,
    zone_dirs: Vec<PathBuf>,
    /// Every source's overlay (this one's included), as the catalog loads them.
    overlays: Vec<PathBuf>,
    status: Arc<SourceStatus>,
}

impl Follower {
    /// A follower writing `status.overlay`; `overlays` are every followed source's, in the order
    /// the catalog loads them.
    pub fn new(
        origin: Origin,
        fetcher: Fetcher,
        zone_dirs: &[PathBuf],
        overlays: &[PathBuf],
        status: Arc<SourceStatus>,
    ) -> Follower {
        Follower {
            origin,
            fetcher,
            zone_dirs: zone_dirs.to_vec(),
            overlays: overlays.to_vec(),
            status,
        }
    }

    /// The source's text and where it came from, or `None` when the feed's version is the one in
    /// force (nothing to fetch).
    fn fetch(&self) -> Result<Option<(Source, Provenance)>, Failure> {
        let fail = |e: FetchError| (e.kind(), e.to_string());
        match &self.origin {
            Origin::Page(url) => {
                let text = self.fetcher.get(url).map_err(fail)?;
                let page =
                    super::page::parse(&text).map_err(|e| ("invalid", format!("{url}: {e}")))?;
                let from = Provenance {
                    source: url.clone(),
                    instance: None,
                    version: page.version.clone(),
                };
                Ok(Some((page, from)))
            }
            Origin::AutopilotPage(url) => {
                let text = self.fetcher.get(url).map_err(fail)?;
                let page = super::autopilot::parse(&text)
                    .map_err(|e| ("invalid", format!("{url}: {e}")))?;
                let from = Provenance {
                    source: url.clone(),
                    instance: None,
                    version: page.version.clone(),
                };
                Ok(Some((page, from)))
            }
            Origin::Feed(service) => {
                let version = service.version().map_err(fail)?;
                if self.status.version().as_deref() == Some(version.as_str())
                    && self.status.overlay.exists()
                {
                    return Ok(None);
                }
                let text = service.endpoints().map_err(fail)?;
                let feed = super::feed::parse(&text)
                    .map_err(|e| ("invalid", format!("{}: {e}", service.source())))?;
                let from = Provenance {
                    source: service.source(),
                    instance: Some(service.instance.clone()),
                    version: Some(version),
                };
                Ok(Some((feed, from)))
            }
        }
    }

    /// One refresh, blocking: `Ok(true)` when a new overlay was written.
    fn refresh(&self) -> Result<bool, Failure> {
        let Some((source, from)) = self.fetch()? else {
            return Ok(false);
        };
        let own = &self.status.overlay;
        // The overlay is computed against the zone directories alone: the floor.
        let floor =
            Catalog::load(&self.zone_dirs, &[]).map_err(|e| ("catalog_error", e.to_string()))?;
        let text = overlay(&floor, &source, &from);
        self.status
            .rejected
            .store(source.rejected.len() as u64, Ordering::Relaxed);
        if std::fs::read_to_string(own).is_ok_and(|old| same_overlay(&old, &text)) {
            return Ok(false);
        }
        // The catalog must load with it, beside every other overlay, before it replaces the last
        // good one: written beside it, loaded, then renamed.
        let write_error = |e: std::io::Error| ("write_error", format!("{}: {e}", own.display()));
        if let Some(dir) = own.parent() {
            std::fs::create_dir_all(dir).map_err(write_error)?;
        }
        let tmp = temporary_beside(own);
        std::fs::write(&tmp, &text).map_err(write_error)?;
        let overlays: Vec<PathBuf> = self
            .overlays
            .iter()
            .map(|o| if o == own { tmp.clone() } else { o.clone() })
            .collect();
        if let Err(e) = Catalog::load(&self.zone_dirs, &overlays) {
            let _ = std::fs::remove_file(&tmp);
            return Err(("invalid", format!("the overlay would not load: {e}")));
        }
        std::fs::rename(&tmp, own).map_err(write_error)?;
        for r in &source.rejected {
            tracing::warn!(source = source.kind.as_str(), at = %r.at, entry = %r.entry, reason = %r.reason, "catalog source entry rejected");
        }
        *lock(&self.status.version) = from.version;
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
    let source = follower.origin.kind().as_str();
    loop {
        let f = follower.clone();
        let outcome = tokio::task::spawn_blocking(move || f.refresh()).await;
        let status = &follower.status;
        match outcome {
            Ok(Ok(changed)) => {
                status.count(if changed { "ok" } else { "unchanged" });
                status
                    .last_success
                    .store(crate::base::clock::unix_now(), Ordering::Relaxed);
                *lock(&status.last_error) = None;
                if changed {
                    tracing::info!(
                        source,
                        version = status.version().unwrap_or_default(),
                        overlay = %status.overlay.display(),
                        "catalog source: new overlay written"
                    );
                    let _ = applied.send(()).await;
                }
            }
            Ok(Err((result, why))) => {
                status.count(result);
                tracing::warn!(source, result, error = %why, "catalog source: fetch failed; the last good overlay stays");
                *lock(&status.last_error) = Some(why);
            }
            Err(e) => tracing::error!(source, error = %e, "catalog source: the fetch task failed"),
        }
        tokio::select! {
            _ = tokio::time::sleep(jitter(refresh)) => {}
            w = wake.recv() => if w.is_none() { return },
        }
    }
}

/// The catalog's sources, as `/v1/catalog` and the metrics read them.
#[derive(Debug)]
pub struct Sources {
    /// The shipped catalog's directory (a reload may change it).
    pub shipped: Mutex<PathBuf>,
    /// One status per followed source, in the order the catalog loads their overlays.
    pub followed: Vec<Arc<SourceStatus>>,
}

impl Sources {
    /// The sources of a config: the shipped directory, and a status per followed source.
    pub fn new(config: &crate::config::Config) -> Sources {
        let c = &config.catalog;
        let followed = [
            (SourceKind::Page, c.page_overlay()),
            (SourceKind::AutopilotPage, c.autopilot_page_overlay()),
            (SourceKind::Feed, c.feed_overlay()),
        ]
        .into_iter()
        .filter_map(|(kind, overlay)| overlay.map(|o| Arc::new(SourceStatus::new(kind, o))))
        .collect();
        Sources {
            shipped: Mutex::new(config.zones.dirs[0].clone()),
            followed,
        }
    }

    /// The followed source whose overlay `path` is.
    pub fn overlay(&self, path: &Path) -> Option<&SourceStatus> {
        self.followed
            .iter()
            .find(|s| s.overlay == path)
            .map(|s| &**s)
    }

    /// The shipped catalog's directory.
    pub fn shipped(&self) -> PathBuf {
        lock(&self.shipped).clone()
    }

    /// Records the shipped directory of a reloaded config.
    pub fn set_shipped(&self, dir: &Path) {
        *lock(&self.shipped) = dir.to_path_buf();
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
        let s = SourceStatus::new(SourceKind::Feed, p.clone());
        assert_eq!(s.version_number(), Some(2026112500.0));
        std::fs::write(&p, "# version: 2026-03-24\n").unwrap();
        let s = SourceStatus::new(SourceKind::Page, p.clone());
        assert_eq!(s.version_number(), Some(20260324.0));
        std::fs::write(&p, "# version: unknown\n").unwrap();
        assert_eq!(SourceStatus::new(SourceKind::Page, p).version(), None);
        let missing = dir.path().join("none.toml");
        assert_eq!(SourceStatus::new(SourceKind::Feed, missing).version(), None);
    }
}
