//! Start-up: config → catalog → policy → upstream → query log, in that order, failing fast with
//! the file and line of the first bad entry. `main` and the tests both start dnsfence through here.

use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio::sync::{broadcast, oneshot};

use crate::cache::{AnswerCache, TtlBounds};
use crate::config::{Config, ConfigError};
use crate::fence::nft::ViewPlan;
use crate::fence::{Fence, FenceError};
use crate::http;
use crate::metrics::Metrics;
use crate::policy::{Policy, PolicyError};
use crate::query::Engine;
use crate::querylog::QueryLog;
use crate::server::{Listeners, serve};
use crate::signal::Signal;
use crate::tcp::TcpOptions;
use crate::udp::UdpOptions;
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

/// A dnsfence ready to serve: the policy compiled, the upstream built, the query log open, the
/// fence's table and sets in place.
pub struct App {
    /// The configuration it was built from (and reloads compare against).
    pub config: Config,
    /// What the query path and the HTTP endpoints read.
    pub engine: Arc<Engine>,
}

/// The sockets of a running dnsfence.
#[derive(Debug)]
pub struct Bound {
    /// DNS over UDP and TCP.
    pub dns: Listeners,
    /// The HTTP endpoints, unless turned off.
    pub http: Option<TcpListener>,
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
        raise_descriptor_limit(&config)?;
        let policy = compile(&config)?;
        for w in &policy.catalog.warnings {
            tracing::warn!(warning = %w, "zone catalog");
        }
        let upstream = Upstream::new(&config.upstream)?;
        let log = QueryLog::start(&config.query_log)?;
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
        let u = &config.upstream;
        let cache = AnswerCache::new(
            usize::try_from(u.cache_size).unwrap_or(usize::MAX),
            TtlBounds {
                positive_min: u.positive_min_ttl,
                positive_max: u.positive_max_ttl,
                negative_min: u.negative_min_ttl,
                negative_max: u.negative_max_ttl,
            },
            u.stale_max,
        );
        let metrics = Metrics::new(config.http.max_denied_domains);
        register_live_counters(&metrics, &log, fence.as_ref());
        let engine = Arc::new(Engine {
            policy: ArcSwap::from_pointee(policy),
            cache,
            upstream,
            fence,
            on_admit_failure: config.fence.on_admit_failure,
            max_udp_payload: config.server.max_udp_payload,
            log,
            metrics,
            listening: AtomicBool::new(false),
            upstream_fresh: config.upstream.probe_interval * 3,
            stale_answer_after: config.upstream.stale_answer_after,
            waiting: AtomicUsize::new(0),
            max_waiting: config.server.max_waiting,
            sync_answers: AtomicBool::new(true),
        });
        Ok(App { config, engine })
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
        Ok(Bound { dns, http })
    }

    /// Serves until a [`Signal::Shutdown`] (or the signal channel closing); reloads on
    /// [`Signal::Reload`]. On shutdown the DNS sockets stop first and in-flight answers finish;
    /// the HTTP server stops last.
    pub async fn run(
        self,
        bound: Bound,
        mut signals: broadcast::Receiver<Signal>,
    ) -> Result<(), StartError> {
        let App { mut config, engine } = self;
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
        let udp = UdpOptions {
            busy_poll: config.server.busy_poll,
            rate_limit: crate::ratelimit::RateLimiter::new(
                config.server.rate_limit_qps,
                config.server.rate_limit_burst,
            ),
        };
        let sv = &config.server;
        let tcp = TcpOptions {
            idle_timeout: sv.tcp_idle_timeout,
            max_connections: sv.tcp_max_connections,
            max_per_client: sv.tcp_max_connections_per_client,
            max_queries: sv.tcp_max_queries,
            max_lifetime: sv.tcp_max_lifetime,
        };
        let dns = tokio::spawn(serve(engine.clone(), bound.dns, udp, tcp, async {
            let _ = dns_stopped.await;
        }));
        engine.listening.store(true, Ordering::Relaxed);
        let (http_stop, http_stopped) = oneshot::channel::<()>();
        let max_http = config.http.max_connections;
        let http = bound.http.map(|listener| {
            tokio::spawn(http::serve(listener, engine.clone(), max_http, async {
                let _ = http_stopped.await;
            }))
        });
        let probe = {
            let engine = engine.clone();
            let every = config.upstream.probe_interval;
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(every);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    engine.upstream.probe(every).await;
                }
            })
        };
        loop {
            match signals.recv().await {
                Ok(Signal::Reload) => reload(&mut config, &engine),
                Ok(Signal::Shutdown) | Err(broadcast::error::RecvError::Closed) => break,
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
            }
        }
        tracing::info!("shutting down: finishing in-flight queries");
        let _ = dns_stop.send(());
        let served = dns.await.map_err(|e| io::Error::other(e.to_string()))?;
        engine.listening.store(false, Ordering::Relaxed);
        probe.abort();
        let _ = http_stop.send(());
        if let Some(http) = http {
            let _ = http.await;
        }
        tracing::info!("stopped");
        Ok(served?)
    }
}

/// The counters that live in the query log's and the fence's own atomics, read at scrape time.
fn register_live_counters(metrics: &Metrics, log: &QueryLog, fence: Option<&Fence>) {
    use crate::metrics as m;
    let l = log.clone();
    metrics.register_live(
        m::QUERYLOG_DROPPED,
        "Query-log lines lost: the queue was full or a write failed (disk full).",
        None,
        move || vec![("", l.dropped())],
    );
    let l = log.clone();
    metrics.register_live(
        m::QUERYLOG_SAMPLED,
        "Query-log lines left out by sampling (summarized in sampled_out lines).",
        None,
        move || vec![("", l.sampled())],
    );
    let stats = fence.map(Fence::shared_stats);
    let s = stats.clone();
    metrics.register_live(
        m::FENCE_READMITS,
        "Elements written again before a cached answer because they were stale or unconfirmed.",
        None,
        move || {
            let n = s
                .as_ref()
                .map_or(0, |s| s.readmits_cache_hit.load(Ordering::Relaxed));
            vec![("", n)]
        },
    );
    metrics.register_live(
        m::FENCE_RESYNCS,
        "Restorations of the table, sets and live elements, by reason.",
        Some("reason"),
        move || {
            let Some(s) = &stats else { return Vec::new() };
            vec![
                ("missing", s.resyncs_missing.load(Ordering::Relaxed)),
                (
                    "write_failed",
                    s.resyncs_write_failure.load(Ordering::Relaxed),
                ),
                ("failed", s.resync_failures.load(Ordering::Relaxed)),
            ]
        },
    );
}

/// Sockets one upstream resolution may hold: hickory's UDP client sends each transmission from
/// a new random port (spoofing resistance) and keeps up to three in flight per query.
const UPSTREAM_SOCKETS_PER_RESOLUTION: u64 = 3;

/// Raises the soft limit on open files to the hard one (systemd's default soft limit is 1024),
/// and checks that the configured caps fit below it: TCP and HTTP connections, upstream
/// resolutions (a socket each), the UDP sockets, and a margin for the rest (log file, netlink,
/// `nft`). A config whose caps cannot be honoured is refused here rather than discovered under
/// load as EMFILE.
fn raise_descriptor_limit(config: &Config) -> Result<u64, StartError> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid pointer to a local rlimit.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return Err(io::Error::last_os_error().into());
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim.rlim_cur = lim.rlim_max;
            }
        }
    }
    let sv = &config.server;
    let needed = sv.tcp_max_connections as u64
        + config.http.max_connections as u64
        + UPSTREAM_SOCKETS_PER_RESOLUTION * config.upstream.max_inflight as u64
        + (sv.listen.len() * (sv.udp_workers + 1)) as u64
        + 64;
    if needed > lim.rlim_cur {
        return Err(StartError::Io(io::Error::other(format!(
            "{}: the connection caps need about {needed} open files (tcp_max_connections {} + \
             http max_connections {} + 3 x upstream max_inflight {} + sockets and margin) but \
             the limit is {}: raise LimitNOFILE (systemd) / ulimit -n, or lower the caps",
            config.path.display(),
            sv.tcp_max_connections,
            config.http.max_connections,
            config.upstream.max_inflight,
            lim.rlim_cur
        ))));
    }
    Ok(lim.rlim_cur)
}

/// Re-reads the config file and zones and swaps the policy whole. A reload that fails, or one
/// that changes what only a restart can apply (sockets, upstream, the views' firewall sets),
/// keeps the old configuration serving and says why.
fn reload(config: &mut Config, engine: &Engine) {
    let result = Config::load(&config.path)
        .map_err(StartError::from)
        .and_then(|new| {
            let changed = restart_only_changes(config, &new);
            if !changed.is_empty() {
                return Err(StartError::Io(io::Error::other(format!(
                    "{} changed: restart dnsfence to apply; the old configuration keeps serving",
                    changed.join(", ")
                ))));
            }
            let policy = compile(&new)?;
            Ok((new, policy))
        });
    match result {
        Ok((new, policy)) => {
            engine.policy.store(Arc::new(policy));
            engine.log.reconfigure(&new.query_log);
            *config = new;
            engine
                .metrics
                .config_reloads
                .with_label_values(&["ok"])
                .inc();
            tracing::info!(path = %config.path.display(), "configuration reloaded");
        }
        Err(e) => {
            engine
                .metrics
                .config_reloads
                .with_label_values(&["error"])
                .inc();
            tracing::error!(error = %e, "reload failed; the old configuration keeps serving");
        }
    }
}

/// Settings a reload cannot apply in place.
fn restart_only_changes(old: &Config, new: &Config) -> Vec<&'static str> {
    let mut changed = Vec::new();
    if old.server.listen != new.server.listen {
        changed.push("server.listen");
    }
    let (o, n) = (&old.server, &new.server);
    for (field, differs) in [
        ("server.udp_workers", o.udp_workers != n.udp_workers),
        ("server.busy_poll_us", o.busy_poll != n.busy_poll),
        (
            "server.max_udp_payload",
            o.max_udp_payload != n.max_udp_payload,
        ),
        (
            "server.tcp_idle_timeout_ms",
            o.tcp_idle_timeout != n.tcp_idle_timeout,
        ),
        (
            "server.rate_limit_qps/burst",
            (o.rate_limit_qps, o.rate_limit_burst) != (n.rate_limit_qps, n.rate_limit_burst),
        ),
    ] {
        if differs {
            changed.push(field);
        }
    }
    if old.http.listen != new.http.listen {
        changed.push("http.listen");
    }
    if old.upstream.servers != new.upstream.servers {
        changed.push("upstream.servers");
    }
    let fences = |c: &Config| {
        c.views
            .iter()
            .map(|v| (v.name.clone(), format!("{:?}", v.fence)))
            .collect::<Vec<_>>()
    };
    if old.fence.enabled != new.fence.enabled
        || old.fence.netns != new.fence.netns
        || (old.fence.enabled && fences(old) != fences(new))
    {
        changed.push("the views' firewall sets");
    }
    changed
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
        assert!(restart_only_changes(&base, &parse("")).is_empty());
        assert_eq!(
            restart_only_changes(&base, &parse("busy_poll_us = 100")),
            ["server.busy_poll_us"]
        );
        assert_eq!(
            restart_only_changes(&base, &parse("udp_workers = 3\nrate_limit_qps = 10")),
            ["server.udp_workers", "server.rate_limit_qps/burst"]
        );
        assert_eq!(
            restart_only_changes(&base, &parse("listen = [\"127.0.0.1:5454\"]")),
            ["server.listen"]
        );
    }
}
