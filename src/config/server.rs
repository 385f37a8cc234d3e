//! `[server]`: the DNS sockets, the UDP workers and the TCP limits, and the stop.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::ConfigError;
use super::section::{Ctx, Reload, ReloadPlan, default};

/// The largest `server.max_udp_payload`: the UDP workers' buffers are this big.
pub const MAX_UDP_PAYLOAD: u16 = 4096;
/// Past a few hundred microseconds a spin buys no latency, only CPU; 10 ms is a generous cap.
const MAX_BUSY_POLL_US: u64 = 10_000;
const DAY_MS: u64 = 86_400_000;

/// `[server]` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawServer {
    listen: Vec<Spanned<String>>,
    tcp_idle_timeout_ms: Spanned<u64>,
    max_udp_payload: Spanned<u16>,
    udp_workers: Spanned<u32>,
    busy_poll_us: Spanned<u64>,
    rate_limit_qps: Spanned<u32>,
    rate_limit_burst: Spanned<u32>,
    max_waiting: Spanned<u64>,
    tcp_max_connections: Spanned<u64>,
    tcp_max_connections_per_client: Spanned<u64>,
    tcp_max_queries: Spanned<u64>,
    tcp_max_lifetime_ms: Spanned<u64>,
    tcp_max_pipelined: Spanned<u64>,
    shutdown_timeout_ms: Spanned<u64>,
    pub(super) state_dir: Option<PathBuf>,
    warm_restart: bool,
}

impl Default for RawServer {
    fn default() -> Self {
        RawServer {
            listen: vec![default("127.0.0.1:5353".to_string())],
            tcp_idle_timeout_ms: default(5_000),
            max_udp_payload: default(1232),
            udp_workers: default(0),
            busy_poll_us: default(0),
            rate_limit_qps: default(0),
            rate_limit_burst: default(0),
            max_waiting: default(4096),
            tcp_max_connections: default(1024),
            tcp_max_connections_per_client: default(16),
            tcp_max_queries: default(1000),
            tcp_max_lifetime_ms: default(120_000),
            tcp_max_pipelined: default(16),
            // A third of the unit's TimeoutStopSec (15 s): a stop never ends in systemd's SIGKILL.
            shutdown_timeout_ms: default(5_000),
            // Resolved with [catalog] state_dir, the older key (Config::parse).
            state_dir: None,
            // On in the package's config, where the state directory exists.
            warm_restart: false,
        }
    }
}

/// `[server]`.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Addresses served on both UDP and TCP.
    pub listen: Vec<SocketAddr>,
    /// Idle time after which a TCP connection is closed.
    pub tcp_idle_timeout: Duration,
    /// Largest UDP response dnsfence sends, whatever the client advertises.
    pub max_udp_payload: u16,
    /// UDP worker threads (SO_REUSEPORT sockets per listen address); 0 in the file means one per
    /// usable CPU, at most 8.
    pub udp_workers: usize,
    /// How long an idle UDP worker keeps polling before it sleeps (0: never polls).
    pub busy_poll: Duration,
    /// UDP queries per second per client address (0: no limit).
    pub rate_limit_qps: u32,
    /// Burst above the rate (default twice the rate).
    pub rate_limit_burst: u32,
    /// Queries waiting on the runtime (for the upstream or the firewall) at most; more get
    /// SERVFAIL at once (EDE 14).
    pub max_waiting: usize,
    /// Open TCP connections at most; more are closed at once.
    pub tcp_max_connections: usize,
    /// Open TCP connections per client address at most.
    pub tcp_max_connections_per_client: usize,
    /// Queries one TCP connection may carry before dnsfence closes it.
    pub tcp_max_queries: u64,
    /// How long one TCP connection may live, however busy.
    pub tcp_max_lifetime: Duration,
    /// Queries of one TCP connection answered at once at most.
    pub tcp_max_pipelined: usize,
    /// From SIGTERM to exit at most: in-flight answers finish within it, and whatever is still
    /// running outside the DNS path (a catalog fetch, a probe) is abandoned at it.
    pub shutdown_timeout: Duration,
    /// Where dnsfence keeps what outlives a restart: the catalog overlays and the warm-restart
    /// state (default /var/lib/dnsfence).
    pub state_dir: PathBuf,
    /// On stop, write the answer cache and the fence's ledger to `state_dir`; at start, read them
    /// back before serving.
    pub warm_restart: bool,
}

/// The state directory when the config names none.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/dnsfence";

impl RawServer {
    /// `state_dir`: the one the caller resolved (`[server]`, else `[catalog]`'s older key, else
    /// the default).
    pub(super) fn validate(
        &self,
        ctx: &Ctx,
        state_dir: PathBuf,
    ) -> Result<ServerConfig, ConfigError> {
        let mut listen = Vec::new();
        for l in &self.listen {
            let addr: SocketAddr = l.get_ref().trim().parse().map_err(|_| {
                ctx.entry(
                    l,
                    "not an ip:port address (e.g. 127.0.0.1:5353 or [::1]:5353)",
                )
            })?;
            listen.push(addr);
        }
        if listen.is_empty() {
            return Err(ctx.at(1, "server.listen", "at least one address is needed"));
        }
        let b =
            |v: &Spanned<u64>, key: &str, lo: u64, hi: u64| ctx.bounded(v, "server", key, lo, hi);
        let tcp_max_connections = b(&self.tcp_max_connections, "tcp_max_connections", 1, 65_536)?;
        let rate_limit_qps = ctx.bounded(
            &self.rate_limit_qps,
            "server",
            "rate_limit_qps",
            0,
            10_000_000,
        )? as u32;
        let rate_limit_burst = ctx.bounded(
            &self.rate_limit_burst,
            "server",
            "rate_limit_burst",
            0,
            10_000_000,
        )? as u32;
        Ok(ServerConfig {
            listen,
            tcp_idle_timeout: Duration::from_millis(b(
                &self.tcp_idle_timeout_ms,
                "tcp_idle_timeout_ms",
                1,
                3_600_000,
            )?),
            max_udp_payload: ctx.bounded(
                &self.max_udp_payload,
                "server",
                "max_udp_payload",
                512,
                MAX_UDP_PAYLOAD.into(),
            )? as u16,
            // 0: one per CPU this process may run on (its affinity mask), at most 8.
            udp_workers: match ctx.bounded(&self.udp_workers, "server", "udp_workers", 0, 64)? {
                0 => std::thread::available_parallelism().map_or(1, |n| n.get().min(8)),
                n => n as usize,
            },
            busy_poll: Duration::from_micros(b(
                &self.busy_poll_us,
                "busy_poll_us",
                0,
                MAX_BUSY_POLL_US,
            )?),
            rate_limit_qps,
            rate_limit_burst: if rate_limit_burst == 0 {
                rate_limit_qps.saturating_mul(2)
            } else {
                rate_limit_burst
            },
            max_waiting: b(&self.max_waiting, "max_waiting", 1, 1_000_000)? as usize,
            tcp_max_connections: tcp_max_connections as usize,
            tcp_max_connections_per_client: b(
                &self.tcp_max_connections_per_client,
                "tcp_max_connections_per_client",
                1,
                tcp_max_connections,
            )? as usize,
            tcp_max_queries: b(&self.tcp_max_queries, "tcp_max_queries", 1, 1_000_000)?,
            tcp_max_lifetime: Duration::from_millis(b(
                &self.tcp_max_lifetime_ms,
                "tcp_max_lifetime_ms",
                1_000,
                DAY_MS,
            )?),
            tcp_max_pipelined: b(&self.tcp_max_pipelined, "tcp_max_pipelined", 1, 256)? as usize,
            shutdown_timeout: Duration::from_millis(b(
                &self.shutdown_timeout_ms,
                "shutdown_timeout_ms",
                100,
                120_000,
            )?),
            state_dir,
            warm_restart: self.warm_restart,
        })
    }
}

impl Reload for ServerConfig {
    fn reload(&self, new: &Self, plan: &mut ReloadPlan) {
        let ServerConfig {
            listen,
            tcp_idle_timeout,
            max_udp_payload,
            udp_workers,
            busy_poll,
            rate_limit_qps,
            rate_limit_burst,
            max_waiting,
            tcp_max_connections,
            tcp_max_connections_per_client,
            tcp_max_queries,
            tcp_max_lifetime,
            tcp_max_pipelined,
            shutdown_timeout,
            state_dir,
            warm_restart: _,
        } = self;
        let n = new;
        // The sockets, the UDP workers and the TCP listeners hold everything but max_waiting.
        plan.check("server.listen", *listen != n.listen, false);
        plan.check(
            "server.tcp_idle_timeout_ms",
            *tcp_idle_timeout != n.tcp_idle_timeout,
            false,
        );
        plan.check(
            "server.max_udp_payload",
            *max_udp_payload != n.max_udp_payload,
            false,
        );
        plan.check("server.udp_workers", *udp_workers != n.udp_workers, false);
        plan.check("server.busy_poll_us", *busy_poll != n.busy_poll, false);
        plan.check(
            "server.rate_limit_qps",
            *rate_limit_qps != n.rate_limit_qps,
            false,
        );
        plan.check(
            "server.rate_limit_burst",
            *rate_limit_burst != n.rate_limit_burst,
            false,
        );
        plan.check("server.max_waiting", *max_waiting != n.max_waiting, true);
        plan.check(
            "server.tcp_max_connections",
            *tcp_max_connections != n.tcp_max_connections,
            false,
        );
        plan.check(
            "server.tcp_max_connections_per_client",
            *tcp_max_connections_per_client != n.tcp_max_connections_per_client,
            false,
        );
        plan.check(
            "server.tcp_max_queries",
            *tcp_max_queries != n.tcp_max_queries,
            false,
        );
        plan.check(
            "server.tcp_max_lifetime_ms",
            *tcp_max_lifetime != n.tcp_max_lifetime,
            false,
        );
        plan.check(
            "server.tcp_max_pipelined",
            *tcp_max_pipelined != n.tcp_max_pipelined,
            false,
        );
        // The TCP listeners hold their drain time from the start.
        plan.check(
            "server.shutdown_timeout_ms",
            *shutdown_timeout != n.shutdown_timeout,
            false,
        );
        // The followers write there, and the state read at start came from there.
        plan.check("server.state_dir", *state_dir != n.state_dir, false);
        // warm_restart is read at the stop: applied in place (nothing to check).
    }
}
