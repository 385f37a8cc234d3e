//! Reading a source once, for `catalog diff` and `catalog pull`: a saved file, or a URL fetched
//! with names resolved through the config's upstream servers (never the system resolver: on a
//! gateway that may be dnsfence itself).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;

use super::autopilot::AutopilotError;
use super::feed::FeedError;
use super::fetch::{FeedService, FetchError, Fetcher, ViaUpstream};
use super::page::PageError;
use super::{Provenance, Source, autopilot, feed, page};
use crate::config::Config;
use crate::resolve::upstream::{Upstream, UpstreamError};

/// Where a source is.
#[derive(Debug, Clone)]
pub enum Location {
    /// The Intune endpoints page: a saved copy of its Markdown, or its URL.
    Page(String),
    /// The Windows Autopilot requirements page: a saved copy of its Markdown, or its URL.
    AutopilotPage(String),
    /// The endpoint web service: a saved feed (its JSON), or its base URL, and the instance.
    Feed {
        /// The file or base URL.
        at: String,
        /// `Worldwide`, …
        instance: String,
    },
}

/// Why a source could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The saved file.
    #[error("{0}: {1}")]
    File(String, std::io::Error),
    /// The fetch.
    #[error(transparent)]
    Fetch(#[from] FetchError),
    /// The client (a CA file).
    #[error("{0}")]
    Client(String),
    /// The upstream pool the fetch resolves through.
    #[error("upstream: {0}")]
    Upstream(#[from] UpstreamError),
    /// A runtime for the resolver.
    #[error("{0}")]
    Runtime(std::io::Error),
    /// The page, unreadable as the page.
    #[error(transparent)]
    Page(#[from] PageError),
    /// The feed, unreadable as the feed.
    #[error(transparent)]
    Feed(#[from] FeedError),
    /// The Autopilot page, unreadable as that page.
    #[error(transparent)]
    Autopilot(#[from] AutopilotError),
}

fn is_url(s: &str) -> bool {
    s.starts_with("https://") || s.starts_with("http://")
}

/// A client resolving through `config`'s upstream, with the runtime its pool lives on (keep it
/// alive while fetching).
fn fetcher(
    config: &Config,
    ca_file: Option<&Path>,
) -> Result<(tokio::runtime::Runtime, Fetcher), ReadError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(ReadError::Runtime)?;
    let upstream = {
        let _guard = runtime.enter();
        Upstream::new(&config.upstream)?
    };
    let resolver = ViaUpstream {
        runtime: runtime.handle().clone(),
        upstream: Arc::new(ArcSwap::from_pointee(upstream)),
    };
    let fetcher = Fetcher::new(ca_file, Some(resolver), Duration::from_secs(30))
        .map_err(ReadError::Client)?;
    Ok((runtime, fetcher))
}

/// Reads and parses the source at `location`.
pub fn read(
    location: &Location,
    config: &Config,
    ca_file: Option<&Path>,
) -> Result<(Source, Provenance), ReadError> {
    let file = |at: &str| std::fs::read_to_string(at).map_err(|e| ReadError::File(at.into(), e));
    let (source, from, instance) = match location {
        Location::Page(at) if !is_url(at) => (page::parse(&file(at)?)?, at.clone(), None),
        Location::Page(url) => {
            let (_runtime, fetcher) = fetcher(config, ca_file)?;
            (page::parse(&fetcher.get(url)?)?, url.clone(), None)
        }
        Location::AutopilotPage(at) if !is_url(at) => {
            (autopilot::parse(&file(at)?)?, at.clone(), None)
        }
        Location::AutopilotPage(url) => {
            let (_runtime, fetcher) = fetcher(config, ca_file)?;
            (autopilot::parse(&fetcher.get(url)?)?, url.clone(), None)
        }
        Location::Feed { at, instance } if !is_url(at) => {
            (feed::parse(&file(at)?)?, at.clone(), Some(instance.clone()))
        }
        Location::Feed { at, instance } => {
            let (_runtime, fetcher) = fetcher(config, ca_file)?;
            let service = FeedService {
                fetcher,
                base: at.clone(),
                instance: instance.clone(),
            };
            let version = service.version()?;
            let mut feed = feed::parse(&service.endpoints()?)?;
            feed.version = Some(version);
            (feed, service.source(), Some(instance.clone()))
        }
    };
    let from = Provenance {
        source: from,
        instance,
        version: source.version.clone(),
    };
    Ok((source, from))
}
