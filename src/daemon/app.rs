//! The process: start-up (what `check` refuses too, then config → catalog → policy → upstream →
//! query log → fence, failing fast with the file and line of the first bad entry), the run loop
//! (the transports, HTTP, the probe, the catalog followers, signals), reload (every setting
//! applied in place or the reload refused, naming it) and a stop bounded by
//! `shutdown_timeout_ms`. `main` and the tests both start dnsfence through here.

use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio::sync::{broadcast, oneshot};

use crate::catalog::policy::{Policy, PolicyError};
use crate::catalog::zones::{Catalog, ZoneError};
use crate::config::{Config, ConfigError};
use crate::daemon::signal::Signal;
use crate::fence::ViewPlan;
use crate::fence::{Fence, FenceError};
use crate::net::http;
use crate::net::server::{Listeners, serve};
use crate::net::status::Status;
use crate::net::tcp::TcpOptions;
use crate::net::udp::UdpOptions;
use crate::query::Engine;
use crate::query::log::QueryLog;
use crate::query::metrics::Metrics;
use crate::resolve::cache::{AnswerCache, TtlBounds};
use crate::resolve::upstream::{Upstream, UpstreamError};

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
    /// What `check` refuses too (crate::daemon::preflight).
    #[error(transparent)]
    Preflight(#[from] crate::daemon::preflight::PreflightError),
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
    let catalog = Catalog::load(&config.zones.dirs, &config.catalog.overlays())?;
    Ok(Policy::compile(config, Arc::new(catalog))?)
}

/// A dnsfence ready to serve: the policy compiled, the upstream built, the query log open, the
/// fence's table and sets in place.
pub struct App {
    /// The configuration it was built from (and reloads compare against).
    pub config: Config,
    /// What the query path reads.
    pub engine: Arc<Engine>,
    /// What the process reports about itself (`/readyz`, `/v1/catalog`, reloads).
    pub status: Arc<Status>,
}

/// The sockets of a running dnsfence.
#[derive(Debug)]
pub struct Bound {
    /// DNS over UDP and TCP.
    pub dns: Listeners,
    /// The HTTP endpoints, unless turned off.
    pub http: Option<TcpListener>,
    /// Peer sync's listener (`[sync] listen`).
    pub sync: Option<TcpListener>,
}

impl Bound {
    /// Where HTTP is served.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http.as_ref().and_then(|l| l.local_addr().ok())
    }
}

impl App {
    /// Builds everything but the sockets. Must run inside a tokio runtime (the log writer task).
    pub async fn build(config: Config) -> Result<App, StartError> {
        crate::daemon::preflight::check(&config)?;
        let policy = compile(&config)?;
        for w in &config.warnings {
            tracing::warn!(warning = %w, "config");
        }
        for w in &policy.catalog.warnings {
            tracing::warn!(warning = %w, "zone catalog");
        }
        let upstream = Upstream::new(&config.upstream)?;
        let log = QueryLog::start(&config.query_log)?;
        let metrics = Metrics::new(config.http.max_denied_domains);
        // The warm-restart state is read before the fence starts: its elements go back into the
        // kernel before anything is served.
        let mut warm = if config.server.warm_restart {
            crate::state::warm::read_at_start(
                &config.server.state_dir,
                &policy,
                config.upstream.cache_size as usize,
                &metrics,
            )
        } else {
            crate::state::warm::Loaded::default()
        };
        let fence = if config.fence.enabled {
            let plans = ViewPlan::for_views(&config, &policy);
            let fence_config = config.fence.clone();
            let restored = std::mem::take(&mut warm.elements);
            // Start-up blocks on netlink and one `nft -f`: keep it off the runtime's workers.
            let fence = tokio::task::spawn_blocking(move || {
                Fence::start_restoring(&fence_config, plans, restored)
            })
            .await
            .map_err(|e| io::Error::other(e.to_string()))??;
            Some(Arc::new(fence))
        } else {
            None
        };
        let sources = Arc::new(crate::catalog::source::follow::Sources::new(&config));
        let upstream = Arc::new(ArcSwap::from_pointee(upstream));
        let upstream_fresh = config.upstream.probe_interval * 3;
        let cache = Arc::new(AnswerCache::new(
            0,
            TtlBounds::default(),
            std::time::Duration::ZERO,
        ));
        metrics.watch(crate::query::metrics::live::Watched {
            log: log.clone(),
            fence: fence.clone(),
            upstream: upstream.clone(),
            upstream_fresh,
            cache: cache.clone(),
            sources: sources.clone(),
        });
        // What a reload can change is set by apply(), here as on every reload.
        let engine = Arc::new(Engine {
            policy: ArcSwap::from_pointee(policy),
            cache,
            upstream,
            fence,
            servfail_on_admit_failure: AtomicBool::new(false),
            max_udp_payload: config.server.max_udp_payload,
            log,
            metrics,
            stale_answer_after_ms: AtomicU64::new(0),
            waiting: AtomicUsize::new(0),
            max_waiting: AtomicUsize::new(0),
            sync_answers: AtomicBool::new(true),
            clock: crate::base::clock::Clock::default(),
        });
        engine.apply(&config)?;
        report_readiness(&engine, &engine.policy.load());
        if config.server.warm_restart {
            let answers = warm.restore_answers(&engine.cache, engine.clock.now());
            let elements = engine.fence.as_ref().map_or(0, |f| f.snapshot().len());
            let restored = &engine.metrics.warm_restored;
            restored.with_label_values(&["answers"]).set(answers as i64);
            restored
                .with_label_values(&["elements"])
                .set(elements as i64);
            tracing::info!(answers, elements, "warm restart: cache and fence restored");
        }
        // Found in the kernel's sets at start, warm restart or not (after a crash: all of them).
        let adopted = engine.fence.as_ref().map_or(0, |f| f.adopted());
        engine
            .metrics
            .warm_restored
            .with_label_values(&["adopted"])
            .set(adopted as i64);
        let peers = crate::state::peer::Peers::new(&config.sync).map_err(io::Error::other)?;
        let status = Arc::new(Status {
            listening: AtomicBool::new(false),
            upstream_fresh,
            last_reload: std::sync::Mutex::new(None),
            sources,
            peers,
        });
        Ok(App {
            config,
            engine,
            status,
        })
    }

    /// Binds the configured DNS and HTTP addresses.
    pub async fn bind(&self) -> Result<Bound, StartError> {
        let dns =
            Listeners::bind_workers(&self.config.server.listen, self.config.server.udp_workers)
                .await?;
        let http = match self.config.http.listen {
            Some(addr) => Some(TcpListener::bind(addr).await.map_err(|e| {
                io::Error::new(e.kind(), format!("cannot listen on http {addr}: {e}"))
            })?),
            None => None,
        };
        let sync = match &self.status.peers {
            Some(p) => p.bind().await?,
            None => None,
        };
        Ok(Bound { dns, http, sync })
    }

    /// Serves until a [`Signal::Shutdown`] (or the signal channel closing); reloads on
    /// [`Signal::Reload`]. On shutdown the DNS sockets stop first and in-flight answers finish;
    /// the HTTP server stops last.
    pub async fn run(
        self,
        bound: Bound,
        mut signals: broadcast::Receiver<Signal>,
    ) -> Result<(), StartError> {
        let App {
            mut config,
            engine,
            status,
        } = self;
        let bound_addrs = bound.dns.local_addrs();
        {
            let policy = engine.policy.load();
            tracing::info!(
                listen = ?bound.dns.local_addrs(),
                http = ?bound.http_addr(),
                views = policy.views.len(),
                endpoint_sets = policy.catalog.sets.len(),
                upstream = ?config.upstream.servers,
                "dnsfence ready"
            );
        }
        let (dns_stop, dns_stopped) = oneshot::channel::<()>();
        let heartbeat = crate::base::notify::Heartbeat::new(bound.dns.udp_sockets());
        let (udp, tcp) = transport_options(&config, &heartbeat);
        let dns = tokio::spawn(serve(engine.clone(), bound.dns, udp, tcp, async {
            let _ = dns_stopped.await;
        }));
        status.listening.store(true, Ordering::Relaxed);
        let (http_stop, http_stopped) = oneshot::channel::<()>();
        let http_config = config.http.clone();
        let http = bound.http.map(|listener| {
            tokio::spawn(http::serve(
                listener,
                engine.clone(),
                status.clone(),
                http_config,
                async {
                    let _ = http_stopped.await;
                },
            ))
        });
        let ready = format!(
            "answering on {:?}; {} endpoint sets",
            bound_addrs,
            engine.policy.load().catalog.sets.len()
        );
        crate::base::notify::ready(&ready);
        let watchdog = crate::base::notify::watchdog_interval()
            .map(|every| tokio::spawn(crate::base::notify::watchdog(heartbeat, every)));
        let probe = tokio::spawn(probe(engine.clone(), config.upstream.probe_interval));
        // The catalog sources' followers: they write the overlays; the policy is recompiled here.
        let (applied_tx, mut applied_rx) = tokio::sync::mpsc::channel::<()>(1);
        let (followers, wakes) = start_followers(&config, &engine, &status, &applied_tx);
        let peers = match (&status.peers, &engine.fence) {
            (Some(p), Some(fence)) => {
                p.start(fence.clone(), bound.sync, engine.metrics.sync.clone())
            }
            _ => Vec::new(),
        };
        loop {
            let signal = tokio::select! {
                s = signals.recv() => s,
                Some(()) = applied_rx.recv() => {
                    apply_overlay(&config, &engine);
                    continue;
                }
            };
            match signal {
                Ok(Signal::Reload) => {
                    // A SIGHUP also polls the followed sources.
                    for wake in &wakes {
                        let _ = wake.try_send(());
                    }
                    on_reload(&mut config, &engine, &status);
                }
                Ok(Signal::Shutdown) | Err(broadcast::error::RecvError::Closed) => break,
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
            }
        }
        crate::base::notify::stopping();
        // What runs outside the DNS path is cancelled at once: a catalog fetch that trickles
        // must not hold the stop (its blocking thread is left to the runtime's shutdown).
        if let Some(w) = watchdog {
            w.abort();
        }
        for f in followers.into_iter().chain(peers) {
            f.abort();
        }
        probe.abort();
        let bound = config.server.shutdown_timeout;
        let stop = async {
            let _ = dns_stop.send(());
            let served = dns.await.map_err(|e| io::Error::other(e.to_string()));
            status.listening.store(false, Ordering::Relaxed);
            let _ = http_stop.send(());
            if let Some(http) = http {
                let _ = http.await;
            }
            served
        };
        let served = match tokio::time::timeout(bound, stop).await {
            Ok(served) => served?,
            Err(_) => {
                tracing::warn!(
                    shutdown_timeout_ms = bound.as_millis() as u64,
                    "stopped before every in-flight answer finished: shutdown_timeout_ms reached"
                );
                Ok(())
            }
        };
        if config.server.warm_restart {
            save_state(&config, &engine);
        }
        tracing::info!("stopped");
        Ok(served?)
    }
}

/// Puts a newly compiled policy in force and reports its readiness: a stage that stops being
/// ready on a reload is logged, and its gauge drops to 0.
fn install(engine: &Engine, policy: Policy) {
    report_readiness(engine, &policy);
    engine.policy.store(Arc::new(policy));
}

/// Logs each device family a view no longer lets through and sets `dnsfence_family_ready`.
fn report_readiness(engine: &Engine, policy: &Policy) {
    let report = crate::catalog::readiness::report(policy, None);
    for v in &report.views {
        for f in v.families.iter().filter(|f| !f.ready) {
            let stages: Vec<&str> = f
                .stages
                .iter()
                .filter(|s| !s.ready)
                .map(|s| s.stage)
                .collect();
            tracing::warn!(
                view = %v.view,
                family = %f.family,
                stages = %stages.join(", "),
                "device family not ready: the view denies what these stages need (dnsfence readiness)"
            );
        }
    }
    engine.metrics.set_readiness(&report);
}

/// A followed source wrote a new overlay: the policy is compiled again with it.
fn apply_overlay(config: &Config, engine: &Engine) {
    match compile(config) {
        Ok(policy) => {
            install(engine, policy);
            tracing::info!("catalog source: policy recompiled with the new overlay");
        }
        Err(e) => tracing::error!(
            error = %e,
            "catalog source: the new overlay does not compile; the old policy keeps serving"
        ),
    }
}

/// SIGHUP: the config and zones read again, systemd told how it went, the outcome kept for
/// `/readyz`.
fn on_reload(config: &mut Config, engine: &Engine, status: &Status) {
    crate::base::notify::reloading();
    let outcome = reload(config, engine);
    crate::base::notify::ready(&match &outcome {
        Ok(()) => format!(
            "reloaded; {} endpoint sets",
            engine.policy.load().catalog.sets.len()
        ),
        Err(e) => format!("reload refused, old config kept: {e}"),
    });
    status.sources.set_shipped(&config.zones.dirs[0]);
    *crate::base::sync::lock(&status.last_reload) = Some(outcome);
}

/// At the stop, once no query is answered any more: the cache and the ledger into the state
/// directory for the next start. A failure is logged and counted; the stop goes on.
fn save_state(config: &Config, engine: &Engine) {
    let file = crate::state::warm::path(&config.server.state_dir);
    let elements = engine
        .fence
        .as_ref()
        .map(|f| f.snapshot())
        .unwrap_or_default();
    let policy = engine.policy.load();
    let saved = crate::state::warm::save(
        &file,
        &engine.cache,
        engine.clock.now(),
        &elements,
        &policy.catalog,
        config.upstream.cache_size as usize,
    );
    let result = match saved {
        Ok((answers, elements)) => {
            tracing::info!(file = %file.display(), answers, elements, "warm restart: state written");
            "ok"
        }
        Err(e) => {
            tracing::error!(file = %file.display(), error = %e, "warm restart: the state could not be written; the next start is cold");
            "io"
        }
    };
    engine
        .metrics
        .warm_restart
        .with_label_values(&["save", result])
        .inc();
}

/// The UDP workers' and the TCP listeners' settings of `[server]`.
fn transport_options(
    config: &Config,
    heartbeat: &Arc<crate::base::notify::Heartbeat>,
) -> (UdpOptions, TcpOptions) {
    let sv = &config.server;
    let udp = UdpOptions {
        heartbeat: Some(heartbeat.clone()),
        busy_poll: sv.busy_poll,
        rate_limit: crate::net::ratelimit::RateLimiter::new(sv.rate_limit_qps, sv.rate_limit_burst),
    };
    let tcp = TcpOptions {
        idle_timeout: sv.tcp_idle_timeout,
        max_connections: sv.tcp_max_connections,
        max_per_client: sv.tcp_max_connections_per_client,
        max_queries: sv.tcp_max_queries,
        max_lifetime: sv.tcp_max_lifetime,
        drain: sv.shutdown_timeout,
        max_pipelined: sv.tcp_max_pipelined,
    };
    (udp, tcp)
}

/// Probes the upstream (the root's NS) every `every`, for `/readyz` and failover order.
async fn probe(engine: Arc<Engine>, every: std::time::Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let upstream = engine.upstream.load_full();
        upstream.probe(every).await;
    }
}

/// Starts a follower per followed catalog source: their tasks, and the senders that wake them
/// (SIGHUP). `applied` hears of every overlay written.
fn start_followers(
    config: &Config,
    engine: &Engine,
    status: &Status,
    applied: &tokio::sync::mpsc::Sender<()>,
) -> (
    Vec<tokio::task::JoinHandle<()>>,
    Vec<tokio::sync::mpsc::Sender<()>>,
) {
    let mut wakes = Vec::new();
    let mut followers = Vec::new();
    for source in &status.sources.followed {
        match follower(config, engine, source.clone()) {
            Ok(f) => {
                let (wake_tx, wake_rx) = tokio::sync::mpsc::channel::<()>(1);
                wakes.push(wake_tx);
                followers.push(tokio::spawn(crate::catalog::source::follow::follow(
                    f,
                    config.catalog.refresh,
                    applied.clone(),
                    wake_rx,
                )));
            }
            Err(e) => {
                tracing::error!(source = source.kind.as_str(), error = %e, "catalog source: not followed")
            }
        }
    }
    (followers, wakes)
}

/// The follower of one catalog source, fetching through dnsfence's own upstream.
fn follower(
    config: &Config,
    engine: &Engine,
    status: Arc<crate::catalog::source::follow::SourceStatus>,
) -> Result<crate::catalog::source::follow::Follower, String> {
    use crate::catalog::source::SourceKind;
    use crate::catalog::source::fetch::{FeedService, Fetcher, ViaUpstream};
    use crate::catalog::source::follow::{Follower, Origin};
    let c = &config.catalog;
    let fetcher = || {
        let resolver = ViaUpstream {
            runtime: tokio::runtime::Handle::current(),
            upstream: engine.upstream.clone(),
        };
        Fetcher::new(
            c.ca_file.as_deref(),
            Some(resolver),
            std::time::Duration::from_secs(60),
        )
    };
    let origin = match (status.kind, &c.page, &c.feed) {
        (SourceKind::Page, Some(url), _) => Origin::Page(url.clone()),
        (SourceKind::AutopilotPage, _, _) if c.autopilot_page.is_some() => {
            Origin::AutopilotPage(c.autopilot_page.clone().unwrap_or_default())
        }
        (SourceKind::Feed, _, Some(base)) => Origin::Feed(FeedService {
            fetcher: fetcher()?,
            base: base.clone(),
            instance: c.instance.clone(),
        }),
        _ => return Err("not configured".into()),
    };
    Ok(Follower::new(
        origin,
        fetcher()?,
        &config.zones.dirs,
        &c.overlays(),
        status,
    ))
}

/// Re-reads the config file and zones and applies them: every setting is either applied in
/// place or, when it changed and only a restart can apply it, the whole reload is refused naming
/// it (see [`Config::reload_plan`]). A refused or failed reload keeps the old configuration serving and
/// says why, in the log and in `dnsfence_config_reloads_total{result="error"}`.
pub fn reload(config: &mut Config, engine: &Engine) -> Result<(), String> {
    let result = Config::load(&config.path)
        .map_err(|e| e.to_string())
        .and_then(|new| {
            let plan = config.reload_plan(&new);
            if !plan.restart.is_empty() {
                return Err(format!(
                    "{} changed: only a restart applies {}; the old configuration keeps serving",
                    plan.restart.join(", "),
                    if plan.restart.len() == 1 {
                        "it"
                    } else {
                        "them"
                    }
                ));
            }
            let policy = compile(&new).map_err(|e| e.to_string())?;
            Ok((new, policy, plan.applied))
        });
    let outcome = match result {
        Ok((new, policy, applied)) => match engine.apply(&new) {
            Ok(()) => {
                install(engine, policy);
                *config = new;
                tracing::info!(
                    path = %config.path.display(),
                    changed = %applied.join(", "),
                    "configuration reloaded"
                );
                Ok(())
            }
            Err(e) => Err(format!("upstream: {e}")),
        },
        Err(e) => Err(e),
    };
    let label = if outcome.is_ok() { "ok" } else { "error" };
    engine
        .metrics
        .config_reloads
        .with_label_values(&[label])
        .inc();
    if let Err(e) = &outcome {
        tracing::error!(error = %e, "reload refused; the old configuration keeps serving");
        // SIGHUP is also logrotate's signal: the file is reopened whatever became of the config.
        engine.log.reopen(config.query_log.path.clone());
    }
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn parse(server: &str) -> Config {
        let text = format!(
            "[server]\n{server}\n[upstream]\nservers = [\"127.0.0.1:5300\"]\n\
             [[view]]\nname = \"lab\"\nnetworks = [\"10.0.0.0/8\"]\nprofiles = [\"apple\"]\n"
        );
        Config::parse(Path::new("t.toml"), &text, Path::new("/nonexistent")).unwrap()
    }

    #[test]
    fn server_settings_the_running_sockets_hold_need_a_restart() {
        let base = parse("");
        assert_eq!(
            base.reload_plan(&parse("")),
            crate::config::ReloadPlan::default()
        );
        let plan = base.reload_plan(&parse("busy_poll_us = 100"));
        assert_eq!(plan.restart, ["server.busy_poll_us"]);
        let plan = base.reload_plan(&parse("udp_workers = 3\nrate_limit_qps = 10"));
        // The burst follows the rate when it is not set.
        assert_eq!(
            plan.restart,
            [
                "server.udp_workers",
                "server.rate_limit_qps",
                "server.rate_limit_burst"
            ]
        );
        let plan = base.reload_plan(&parse("max_waiting = 10"));
        assert_eq!(
            (plan.applied, plan.restart),
            (vec!["server.max_waiting"], vec![])
        );
    }
}
