//! `[http]`: the endpoints (`/metrics`, health, pull lists) and their limits.

use std::net::SocketAddr;
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;
use toml::Spanned;

use super::ConfigError;
use super::section::{Ctx, Reload, ReloadPlan, default};
use super::view::parse_network;

/// `[http]` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawHttp {
    listen: Spanned<String>,
    max_denied_domains: Spanned<u64>,
    max_connections: Spanned<u64>,
    /// Default: 8, at most `max_connections`.
    max_connections_per_client: Option<Spanned<u64>>,
    /// Default: a quarter of `max_connections`.
    reserved_connections: Option<Spanned<u64>>,
    trusted: Vec<Spanned<String>>,
    request_timeout_ms: Spanned<u64>,
    idle_timeout_ms: Spanned<u64>,
}

impl Default for RawHttp {
    fn default() -> Self {
        RawHttp {
            listen: default("127.0.0.1:9153".to_string()),
            max_denied_domains: default(200),
            max_connections: default(64),
            max_connections_per_client: None,
            reserved_connections: None,
            trusted: Vec::new(),
            request_timeout_ms: default(3_000),
            idle_timeout_ms: default(5_000),
        }
    }
}

/// `[http]`.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// Where `/metrics`, `/healthz`, `/readyz`, `/v1/…` are served; `None` turns HTTP off.
    pub listen: Option<SocketAddr>,
    /// Open HTTP connections at most; more are closed at once.
    pub max_connections: usize,
    /// Open HTTP connections per client address at most.
    pub max_connections_per_client: usize,
    /// Connections only trusted clients (loopback and `trusted`) may take, so that scrapers on
    /// the host or the configured networks are never shut out by other clients.
    pub reserved_connections: usize,
    /// Networks of trusted clients besides loopback (the Prometheus server, pulling firewalls).
    pub trusted: Vec<IpNet>,
    /// Time a client has from connecting (or from its first byte, on a kept-alive connection)
    /// to send a whole request head.
    pub request_timeout: Duration,
    /// How long a kept-alive connection may wait for its next request.
    pub idle_timeout: Duration,
    /// Denied registrable domains kept as metric labels per view; the rest count as `_other`.
    pub max_denied_domains: usize,
}

impl HttpConfig {
    /// Whether `client` may use the reserved connections: loopback, or a trusted network.
    pub fn trusts(&self, client: std::net::IpAddr) -> bool {
        client.is_loopback() || self.trusted.iter().any(|n| n.contains(&client))
    }
}

impl RawHttp {
    pub(super) fn validate(&self, ctx: &Ctx) -> Result<HttpConfig, ConfigError> {
        let b = |v: &Spanned<u64>, key: &str, lo: u64, hi: u64| ctx.bounded(v, "http", key, lo, hi);
        let listen = match self.listen.get_ref().trim() {
            "" | "off" => None,
            text => Some(
                text.parse::<SocketAddr>()
                    .map_err(|_| ctx.entry(&self.listen, "not an ip:port address (or \"off\")"))?,
            ),
        };
        let max = b(&self.max_connections, "max_connections", 1, 4096)?;
        let per_client = match &self.max_connections_per_client {
            Some(v) => b(v, "max_connections_per_client", 1, max)?,
            None => 8.min(max),
        };
        let reserved = match &self.reserved_connections {
            Some(v) => b(v, "reserved_connections", 0, max - 1)?,
            None => max / 4,
        };
        Ok(HttpConfig {
            listen,
            max_connections: max as usize,
            max_connections_per_client: per_client as usize,
            reserved_connections: reserved as usize,
            trusted: self
                .trusted
                .iter()
                .map(|n| parse_network(n).map_err(|why| ctx.entry(n, why)))
                .collect::<Result<_, _>>()?,
            request_timeout: Duration::from_millis(b(
                &self.request_timeout_ms,
                "request_timeout_ms",
                100,
                60_000,
            )?),
            idle_timeout: Duration::from_millis(b(
                &self.idle_timeout_ms,
                "idle_timeout_ms",
                0,
                600_000,
            )?),
            max_denied_domains: b(&self.max_denied_domains, "max_denied_domains", 0, 100_000)?
                as usize,
        })
    }
}

impl Reload for HttpConfig {
    fn reload(&self, new: &Self, plan: &mut ReloadPlan) {
        let HttpConfig {
            listen,
            max_connections,
            max_connections_per_client,
            reserved_connections,
            trusted,
            request_timeout,
            idle_timeout,
            max_denied_domains,
        } = self;
        let h = new;
        // The HTTP server holds its limits, and the metrics their label caps, from the start.
        plan.check("http.listen", *listen != h.listen, false);
        plan.check(
            "http.max_connections",
            *max_connections != h.max_connections,
            false,
        );
        plan.check(
            "http.max_connections_per_client",
            *max_connections_per_client != h.max_connections_per_client,
            false,
        );
        plan.check(
            "http.reserved_connections",
            *reserved_connections != h.reserved_connections,
            false,
        );
        plan.check("http.trusted", *trusted != h.trusted, false);
        plan.check(
            "http.request_timeout_ms",
            *request_timeout != h.request_timeout,
            false,
        );
        plan.check(
            "http.idle_timeout_ms",
            *idle_timeout != h.idle_timeout,
            false,
        );
        plan.check(
            "http.max_denied_domains",
            *max_denied_domains != h.max_denied_domains,
            false,
        );
    }
}
