//! Start-up: config → catalog → policy → upstream → query log, in that order, failing fast with
//! the file and line of the first bad entry. `main` and the tests both start dnsfence through here.

use std::future::Future;
use std::io;
use std::path::Path;
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::config::{Config, ConfigError};
use crate::fence::nft::ViewPlan;
use crate::fence::{Fence, FenceError};
use crate::policy::{Policy, PolicyError};
use crate::querylog::QueryLog;
use crate::server::{Listeners, Shared, serve};
use crate::upstream::{Upstream, UpstreamError};
use crate::zones::{Catalog, ZoneError};

/// Anything that stops dnsfence from starting.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The config file.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A zone file.
    #[error(transparent)]
    Zones(#[from] ZoneError),
    /// The config does not fit the zones.
    #[error(transparent)]
    Policy(#[from] PolicyError),
    /// The upstream resolver could not be built.
    #[error("upstream: {0}")]
    Upstream(#[from] UpstreamError),
    /// The firewall sets could not be set up.
    #[error(transparent)]
    Fence(#[from] FenceError),
    /// Sockets or the query log file.
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// Loads a config file and compiles its policy against its zone directory.
pub fn load(path: &Path) -> Result<(Config, Policy), StartError> {
    let config = Config::load(path)?;
    let policy = compile(&config)?;
    Ok((config, policy))
}

/// Loads the zones a config points at and compiles the policy.
pub fn compile(config: &Config) -> Result<Policy, StartError> {
    let catalog = Catalog::load_dir(&config.zones.dir)?;
    Ok(Policy::compile(config, Arc::new(catalog))?)
}

/// A dnsfence ready to serve: the policy compiled, the upstream built, the query log open.
pub struct App {
    /// The configuration it was built from.
    pub config: Config,
    /// State shared with the request handler.
    pub shared: Arc<Shared>,
}

impl App {
    /// Builds everything but the sockets. Must run inside a tokio runtime (the log writer task).
    pub async fn build(config: Config) -> Result<App, StartError> {
        let policy = compile(&config)?;
        let upstream = Upstream::new(&config.upstream)?;
        let log = QueryLog::start(&config.query_log).await?;
        let fence = if config.fence.enabled {
            let plans = ViewPlan::for_views(&config, &policy);
            let fence_config = config.fence.clone();
            // Start-up blocks on netlink and one `nft -f`: keep it off the runtime's workers.
            let fence = tokio::task::spawn_blocking(move || Fence::start(&fence_config, plans))
                .await
                .map_err(|e| io::Error::other(e.to_string()))??;
            Some(fence)
        } else {
            None
        };
        let shared = Arc::new(Shared {
            policy: ArcSwap::from_pointee(policy),
            upstream,
            log,
            max_udp_payload: config.server.max_udp_payload,
            fence,
            on_admit_failure: config.fence.on_admit_failure,
        });
        Ok(App { config, shared })
    }

    /// Binds the configured addresses.
    pub async fn bind(&self) -> Result<Listeners, StartError> {
        Ok(Listeners::bind(&self.config.server.listen).await?)
    }

    /// Serves until `shutdown` completes.
    pub async fn run(
        self,
        listeners: Listeners,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), StartError> {
        let policy = self.shared.policy.load();
        tracing::info!(
            listen = ?listeners.local_addrs(),
            views = policy.views.len(),
            endpoint_sets = policy.catalog.sets.len(),
            upstream = ?self.config.upstream.servers,
            "dnsfence ready"
        );
        drop(policy);
        serve(
            self.shared,
            listeners,
            self.config.server.tcp_idle_timeout,
            shutdown,
        )
        .await?;
        Ok(())
    }
}
