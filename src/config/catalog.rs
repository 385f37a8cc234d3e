//! `[catalog]`: following Microsoft's sources — the Intune endpoints page, the Windows Autopilot
//! requirements page and the endpoint web service — into overlays in the state directory.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::ConfigError;
use super::section::{Ctx, Reload, ReloadPlan, default};

/// `[catalog]` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawCatalog {
    page: Option<Spanned<String>>,
    autopilot_page: Option<Spanned<String>>,
    feed: Option<Spanned<String>>,
    instance: Spanned<String>,
    refresh_hours: Spanned<u64>,
    /// Before `[server] state_dir`: still read, with a warning.
    pub(super) state_dir: Option<PathBuf>,
    ca_file: Option<PathBuf>,
}

impl Default for RawCatalog {
    fn default() -> Self {
        RawCatalog {
            page: None,
            autopilot_page: None,
            feed: None,
            instance: default("Worldwide".to_string()),
            refresh_hours: default(24),
            state_dir: None,
            ca_file: None,
        }
    }
}

/// `[catalog]`: following Microsoft's sources.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogConfig {
    /// The Intune endpoints page's Markdown (Microsoft's recommended source); `None`: not
    /// followed.
    pub page: Option<String>,
    /// The Windows Autopilot requirements page's Markdown; `None`: not followed.
    pub autopilot_page: Option<String>,
    /// The service's base URL (`https://endpoints.office.com`, or a mirror); `None`: not followed.
    pub feed: Option<String>,
    /// The service instance (`Worldwide`, `USGovDoD`, `USGovGCCHigh`, `China`).
    pub instance: String,
    /// How often the version is polled (±10%).
    pub refresh: Duration,
    /// Where the overlays are kept across restarts: `[server] state_dir`.
    pub state_dir: PathBuf,
    /// CA certificates for the service; `None`: the system trust store.
    pub ca_file: Option<PathBuf>,
}

impl CatalogConfig {
    /// The overlay the daemon writes for the page, when it is followed.
    pub fn page_overlay(&self) -> Option<PathBuf> {
        self.page.as_ref().map(|_| self.state_dir.join("page.toml"))
    }

    /// The overlay the daemon writes for the Autopilot page, when it is followed.
    pub fn autopilot_page_overlay(&self) -> Option<PathBuf> {
        self.autopilot_page
            .as_ref()
            .map(|_| self.state_dir.join("autopilot-page.toml"))
    }

    /// The overlay the daemon writes for the feed, when it is followed.
    pub fn feed_overlay(&self) -> Option<PathBuf> {
        self.feed.as_ref().map(|_| {
            self.state_dir
                .join(format!("feed-{}.toml", self.instance.to_ascii_lowercase()))
        })
    }

    /// The overlays the catalog loads after the zone directories, in that order: the page's, the
    /// Autopilot page's, then the feed's.
    pub fn overlays(&self) -> Vec<PathBuf> {
        self.page_overlay()
            .into_iter()
            .chain(self.autopilot_page_overlay())
            .chain(self.feed_overlay())
            .collect()
    }
}

impl RawCatalog {
    /// `state_dir`: `[server] state_dir` as resolved.
    pub(super) fn validate(
        &self,
        ctx: &Ctx,
        state_dir: PathBuf,
    ) -> Result<CatalogConfig, ConfigError> {
        for (url, what) in [
            (
                &self.feed,
                "the feed is the service's base URL, e.g. https://endpoints.office.com",
            ),
            (
                &self.page,
                "the page is the URL of its Markdown, e.g. https://raw.githubusercontent.com/MicrosoftDocs/memdocs/main/intune/fundamentals/endpoints.md",
            ),
            (
                &self.autopilot_page,
                "the Autopilot page is the URL of its Markdown, e.g. https://raw.githubusercontent.com/MicrosoftDocs/memdocs/main/autopilot/requirements.md",
            ),
        ] {
            let Some(url) = url else { continue };
            let host = url
                .get_ref()
                .strip_prefix("https://")
                .or_else(|| url.get_ref().strip_prefix("http://"))
                .unwrap_or("");
            if host.is_empty() || host.contains(char::is_whitespace) {
                return Err(ctx.entry(url, what));
            }
        }
        let instance = self.instance.get_ref();
        if instance.is_empty() || !instance.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(ctx.entry(
                &self.instance,
                "an instance is Worldwide, USGovDoD, USGovGCCHigh or China",
            ));
        }
        Ok(CatalogConfig {
            page: self.page.as_ref().map(|p| p.get_ref().to_string()),
            autopilot_page: self
                .autopilot_page
                .as_ref()
                .map(|p| p.get_ref().to_string()),
            feed: self
                .feed
                .as_ref()
                .map(|f| f.get_ref().trim_end_matches('/').to_string()),
            instance: instance.clone(),
            refresh: Duration::from_secs(
                ctx.bounded(&self.refresh_hours, "catalog", "refresh_hours", 1, 720)? * 3600,
            ),
            state_dir,
            ca_file: self.ca_file.as_ref().map(|p| ctx.path(p)),
        })
    }
}

impl Reload for CatalogConfig {
    fn reload(&self, new: &Self, plan: &mut ReloadPlan) {
        let CatalogConfig {
            page,
            autopilot_page,
            feed,
            instance,
            refresh,
            state_dir,
            ca_file,
        } = self;
        let c = new;
        // The followers are started with their settings: changing them needs a restart.
        plan.check("catalog.page", *page != c.page, false);
        plan.check(
            "catalog.autopilot_page",
            *autopilot_page != c.autopilot_page,
            false,
        );
        plan.check("catalog.feed", *feed != c.feed, false);
        plan.check("catalog.instance", *instance != c.instance, false);
        plan.check("catalog.refresh_hours", *refresh != c.refresh, false);
        // [server] state_dir reports it (it is the same directory).
        let _ = state_dir;
        plan.check("catalog.ca_file", *ca_file != c.ca_file, false);
    }
}
