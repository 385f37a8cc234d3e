//! `[upstream]`: the resolvers dnsfence forwards to (plain DNS, DoT, DoH), the resolution
//! deadline, the answer cache's size and TTL bounds, and serve-stale.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::ConfigError;
use super::section::{Ctx, Reload, ReloadPlan, default};
use crate::base::matcher::Pattern;

const YEAR_SECS: u64 = 365 * 86_400;

/// `[upstream]` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawUpstream {
    servers: Vec<Spanned<String>>,
    tls_ca_file: Option<PathBuf>,
    timeout_ms: Spanned<u64>,
    cache_size: Spanned<u64>,
    positive_min_ttl_secs: Spanned<u64>,
    positive_max_ttl_secs: Spanned<u64>,
    negative_min_ttl_secs: Spanned<u64>,
    negative_max_ttl_secs: Spanned<u64>,
    probe_interval_ms: Spanned<u64>,
    max_inflight: Spanned<u64>,
    stale_answer_after_ms: Spanned<u64>,
    stale_max_secs: Spanned<u64>,
    udp_sockets: Spanned<u64>,
    udp_socket_queries: Spanned<u64>,
    udp_socket_secs: Spanned<u64>,
}

impl Default for RawUpstream {
    fn default() -> Self {
        RawUpstream {
            servers: Vec::new(),
            tls_ca_file: None,
            timeout_ms: default(2_000),
            cache_size: default(10_000),
            positive_min_ttl_secs: default(0),
            positive_max_ttl_secs: default(86_400),
            negative_min_ttl_secs: default(0),
            negative_max_ttl_secs: default(3_600),
            probe_interval_ms: default(10_000),
            max_inflight: default(1024),
            // RFC 8767 section 4 suggests 1.8 s, and 1 to 3 days.
            stale_answer_after_ms: default(1800),
            stale_max_secs: default(86_400),
            // Unbound's outgoing ports are the model: a few sockets, many queries each, a new
            // random port now and then.
            udp_sockets: default(8),
            udp_socket_queries: default(2_000),
            udp_socket_secs: default(60),
        }
    }
}

/// How dnsfence talks to one upstream server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpstreamTransport {
    /// DNS over UDP, and TCP when an answer is truncated.
    Plain,
    /// DNS over TLS (RFC 7858), the certificate checked for `server_name`.
    Tls {
        /// The name the server's certificate must carry.
        server_name: String,
    },
    /// DNS over HTTPS (RFC 8484) at `path`, the certificate checked for `server_name`.
    Https {
        /// The name the server's certificate must carry (and the HTTP authority).
        server_name: String,
        /// The query path, `/dns-query` by default.
        path: String,
    },
}

impl UpstreamTransport {
    /// DoT or DoH: the certificates matter.
    pub fn is_tls(&self) -> bool {
        !matches!(self, UpstreamTransport::Plain)
    }
}

/// One upstream server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamServer {
    /// As written in the config (or resolv.conf): its metric label and name in `/readyz`.
    pub label: String,
    /// Address and port.
    pub addr: SocketAddr,
    /// Plain DNS, DoT or DoH.
    pub transport: UpstreamTransport,
}

impl UpstreamServer {
    /// Plain DNS to `addr`.
    pub fn plain(addr: SocketAddr) -> UpstreamServer {
        UpstreamServer {
            label: addr.to_string(),
            addr,
            transport: UpstreamTransport::Plain,
        }
    }
}

/// `[upstream]`.
#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    /// Upstream resolvers, best first; when the config names none, the name servers of
    /// /etc/resolv.conf.
    pub servers: Vec<UpstreamServer>,
    /// CA certificates (PEM) that DoT and DoH servers' certificates must chain to; the system's
    /// trust store when `None`.
    pub tls_ca_file: Option<PathBuf>,
    /// Whether `servers` came from /etc/resolv.conf.
    pub from_resolv_conf: bool,
    /// Deadline of one upstream resolution, after which the client gets SERVFAIL.
    pub timeout: Duration,
    /// Number of cached answers.
    pub cache_size: u64,
    /// Lower bound of a positive answer's cached TTL.
    pub positive_min_ttl: Duration,
    /// Upper bound of a positive answer's cached TTL.
    pub positive_max_ttl: Duration,
    /// Lower bound of a negative answer's cached TTL.
    pub negative_min_ttl: Duration,
    /// Upper bound of a negative answer's cached TTL.
    pub negative_max_ttl: Duration,
    /// When nothing reached the upstream for this long, a probe asks it for the root's NS; the
    /// upstream counts as healthy (`/readyz`) while it answered within three intervals.
    pub probe_interval: Duration,
    /// Distinct upstream resolutions in flight at most; more get SERVFAIL at once (EDE 14).
    pub max_inflight: usize,
    /// RFC 8767: when the upstream has not answered within this long (or failed) and an expired
    /// answer is at hand, that answer is served (TTL 30, EDE 3) while the refresh goes on.
    pub stale_answer_after: Duration,
    /// How long past its expiry an answer may still be served stale (zero: never).
    pub stale_max: Duration,
    /// Plain UDP: sockets per server, each carrying many queries (`resolve::outgoing`).
    pub udp_sockets: usize,
    /// Plain UDP: a socket is replaced by one on a new random port after this many queries…
    pub udp_socket_queries: u64,
    /// …or this long.
    pub udp_socket_age: Duration,
}

impl UpstreamConfig {
    /// What an upstream pool is built from: a change to any of these builds a new one.
    pub fn pool_settings(&self) -> PoolSettings {
        PoolSettings {
            servers: self.servers.clone(),
            tls_ca_file: self.tls_ca_file.clone(),
            timeout: self.timeout,
            max_inflight: self.max_inflight,
            udp_sockets: self.udp_sockets,
            udp_socket_queries: self.udp_socket_queries,
            udp_socket_age: self.udp_socket_age,
        }
    }
}

/// What an upstream pool is built from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolSettings {
    /// The servers, best first.
    pub servers: Vec<UpstreamServer>,
    /// The CA file for DoT and DoH.
    pub tls_ca_file: Option<PathBuf>,
    /// Deadline of one resolution.
    pub timeout: Duration,
    /// Distinct resolutions in flight at most.
    pub max_inflight: usize,
    /// Plain UDP sockets per server.
    pub udp_sockets: usize,
    /// Queries a UDP socket carries before a new port replaces it.
    pub udp_socket_queries: u64,
    /// How long a UDP socket is used before a new port replaces it.
    pub udp_socket_age: Duration,
}

impl RawUpstream {
    /// `[upstream]`, checked against `listen` (an upstream that is dnsfence itself would loop
    /// every allowed query back); with no servers, those of `resolv_conf`.
    pub(super) fn validate(
        &self,
        ctx: &Ctx,
        listen: &[SocketAddr],
        resolv_conf: &Path,
    ) -> Result<UpstreamConfig, ConfigError> {
        let mut servers = Vec::new();
        for s in &self.servers {
            servers.push(parse_upstream(s.get_ref()).map_err(|r| ctx.entry(s, r))?);
        }
        let from_resolv_conf = servers.is_empty();
        if from_resolv_conf {
            servers = read_resolv_conf(resolv_conf)
                .map_err(|reason| ctx.at(1, "upstream.servers", reason))?;
        }
        for (i, server) in servers.iter().enumerate() {
            let server = &server.addr;
            let Some(own) = listen.iter().find(|l| is_own_address(server, l)) else {
                continue;
            };
            let (line, written, source) = match self.servers.get(i) {
                Some(s) => (ctx.line(s), s.get_ref().clone(), String::new()),
                None => (
                    1,
                    "upstream.servers".into(),
                    format!(" ({} from {})", server, resolv_conf.display()),
                ),
            };
            return Err(ctx.at(
                line,
                written,
                format!(
                    "the upstream{source} is dnsfence's own listen address {own}: every \
                     allowed query would loop back to dnsfence. Set [upstream] servers to the \
                     resolver dnsfence should forward to (the one resolv.conf named before \
                     dnsfence replaced it, or your network's)"
                ),
            ));
        }
        let b =
            |v: &Spanned<u64>, key: &str, lo: u64, hi: u64| ctx.bounded(v, "upstream", key, lo, hi);
        let secs = |v: &Spanned<u64>, key: &str| b(v, key, 0, YEAR_SECS).map(Duration::from_secs);
        let positive = (
            secs(&self.positive_min_ttl_secs, "positive_min_ttl_secs")?,
            secs(&self.positive_max_ttl_secs, "positive_max_ttl_secs")?,
        );
        let negative = (
            secs(&self.negative_min_ttl_secs, "negative_min_ttl_secs")?,
            secs(&self.negative_max_ttl_secs, "negative_max_ttl_secs")?,
        );
        for ((min, max), key, at) in [
            (
                positive,
                "positive_min_ttl_secs",
                &self.positive_min_ttl_secs,
            ),
            (
                negative,
                "negative_min_ttl_secs",
                &self.negative_min_ttl_secs,
            ),
        ] {
            if min > max {
                return Err(ctx.at(
                    ctx.line(at),
                    format!("{key} = {}", min.as_secs()),
                    "a minimum TTL is greater than its maximum",
                ));
            }
        }
        Ok(UpstreamConfig {
            servers,
            tls_ca_file: self.tls_ca_file.as_ref().map(|p| ctx.path(p)),
            from_resolv_conf,
            timeout: Duration::from_millis(b(&self.timeout_ms, "timeout_ms", 1, 60_000)?),
            cache_size: b(&self.cache_size, "cache_size", 0, 100_000_000)?,
            positive_min_ttl: positive.0,
            positive_max_ttl: positive.1,
            negative_min_ttl: negative.0,
            negative_max_ttl: negative.1,
            // 0 means the shortest probe interval.
            probe_interval: Duration::from_millis(
                b(&self.probe_interval_ms, "probe_interval_ms", 0, 3_600_000)?.max(100),
            ),
            max_inflight: b(&self.max_inflight, "max_inflight", 1, 65_536)? as usize,
            stale_answer_after: Duration::from_millis(b(
                &self.stale_answer_after_ms,
                "stale_answer_after_ms",
                0,
                60_000,
            )?),
            stale_max: Duration::from_secs(b(
                &self.stale_max_secs,
                "stale_max_secs",
                0,
                30 * 86_400,
            )?),
            udp_sockets: b(&self.udp_sockets, "udp_sockets", 1, 256)? as usize,
            udp_socket_queries: b(&self.udp_socket_queries, "udp_socket_queries", 1, 1_000_000)?,
            udp_socket_age: Duration::from_secs(b(
                &self.udp_socket_secs,
                "udp_socket_secs",
                1,
                3_600,
            )?),
        })
    }
}

impl Reload for UpstreamConfig {
    fn reload(&self, new: &Self, plan: &mut ReloadPlan) {
        let UpstreamConfig {
            servers,
            tls_ca_file,
            from_resolv_conf: _,
            timeout,
            cache_size,
            positive_min_ttl,
            positive_max_ttl,
            negative_min_ttl,
            negative_max_ttl,
            probe_interval,
            max_inflight,
            stale_answer_after,
            stale_max,
            udp_sockets,
            udp_socket_queries,
            udp_socket_age,
        } = self;
        let u = new;
        // A new upstream pool is built for these; the cache takes its new limits in place.
        plan.check("upstream.servers", *servers != u.servers, true);
        plan.check("upstream.tls_ca_file", *tls_ca_file != u.tls_ca_file, true);
        plan.check("upstream.timeout_ms", *timeout != u.timeout, true);
        plan.check(
            "upstream.max_inflight",
            *max_inflight != u.max_inflight,
            true,
        );
        plan.check("upstream.udp_sockets", *udp_sockets != u.udp_sockets, true);
        plan.check(
            "upstream.udp_socket_queries",
            *udp_socket_queries != u.udp_socket_queries,
            true,
        );
        plan.check(
            "upstream.udp_socket_secs",
            *udp_socket_age != u.udp_socket_age,
            true,
        );
        plan.check("upstream.cache_size", *cache_size != u.cache_size, true);
        plan.check(
            "upstream.positive_min_ttl_secs",
            *positive_min_ttl != u.positive_min_ttl,
            true,
        );
        plan.check(
            "upstream.positive_max_ttl_secs",
            *positive_max_ttl != u.positive_max_ttl,
            true,
        );
        plan.check(
            "upstream.negative_min_ttl_secs",
            *negative_min_ttl != u.negative_min_ttl,
            true,
        );
        plan.check(
            "upstream.negative_max_ttl_secs",
            *negative_max_ttl != u.negative_max_ttl,
            true,
        );
        plan.check(
            "upstream.stale_answer_after_ms",
            *stale_answer_after != u.stale_answer_after,
            true,
        );
        plan.check("upstream.stale_max_secs", *stale_max != u.stale_max, true);
        // The probe task's interval, and /readyz's freshness window, are set at start.
        plan.check(
            "upstream.probe_interval_ms",
            *probe_interval != u.probe_interval,
            false,
        );
    }
}

/// `1.2.3.4`, `1.2.3.4:5300`, `::1`, `[::1]:5300`; port 53 when none is given.
/// An upstream as written: `ip` or `ip:port` (plain DNS, port 53), `tls://ip[:port]#name`
/// (DNS over TLS, port 853, certificate for `name`), `https://ip[:port][/path]#name` (DNS over
/// HTTPS, port 443, path `/dns-query`).
pub(super) fn parse_upstream(text: &str) -> Result<UpstreamServer, &'static str> {
    const FORMS: &str = "not an upstream (ip, ip:port, tls://ip[:port]#name or \
                         https://ip[:port][/path]#name, e.g. 127.0.0.1:5300 or \
                         tls://1.1.1.1#cloudflare-dns.com)";
    let text = text.trim();
    let addr = |s: &str, port: u16| -> Result<SocketAddr, &'static str> {
        s.parse::<SocketAddr>()
            .or_else(|_| {
                s.parse::<std::net::IpAddr>()
                    .map(|ip| SocketAddr::new(ip, port))
            })
            .or_else(|_| {
                // "[2001:db8::1]" without a port.
                s.strip_prefix('[')
                    .and_then(|s| s.strip_suffix(']'))
                    .and_then(|s| s.parse::<std::net::IpAddr>().ok())
                    .map(|ip| SocketAddr::new(ip, port))
                    .ok_or(FORMS)
            })
    };
    let named = |rest: &str| -> Result<(String, String), &'static str> {
        let (target, name) = rest.split_once('#').ok_or(
            "tls:// and https:// upstreams need the name their certificate carries after '#'",
        )?;
        if name.is_empty() || name.contains(['/', ' ', '*']) || Pattern::parse(name).is_err() {
            return Err(
                "the name after '#' is a DNS name: labels of at most 63 letters, digits and '-', \
                 253 characters in all",
            );
        }
        Ok((target.to_string(), name.to_ascii_lowercase()))
    };
    if let Some(rest) = text.strip_prefix("tls://") {
        let (target, server_name) = named(rest)?;
        return Ok(UpstreamServer {
            label: text.to_string(),
            addr: addr(&target, 853)?,
            transport: UpstreamTransport::Tls { server_name },
        });
    }
    if let Some(rest) = text.strip_prefix("https://") {
        let (target, server_name) = named(rest)?;
        let (host, path) = match target.find('/') {
            Some(i) => (target[..i].to_string(), target[i..].to_string()),
            None => (target, "/dns-query".to_string()),
        };
        return Ok(UpstreamServer {
            label: text.to_string(),
            addr: addr(&host, 443)?,
            transport: UpstreamTransport::Https { server_name, path },
        });
    }
    let a = addr(text, 53)?;
    Ok(UpstreamServer {
        label: text.to_string(),
        ..UpstreamServer::plain(a)
    })
}

/// Whether `server` is one of dnsfence's own sockets: the same address and port, or a wildcard
/// listener (`0.0.0.0`, `[::]`) on that port and an address of this host (loopback included;
/// binding to it succeeds only if it is local).
pub(super) fn is_own_address(server: &SocketAddr, listen: &SocketAddr) -> bool {
    if server.port() != listen.port() {
        return false;
    }
    if server.ip() == listen.ip() {
        return true;
    }
    if !listen.ip().is_unspecified() {
        return false;
    }
    // [::] serves IPv4 too unless 0.0.0.0 is also listed (see server.rs); an IPv4 wildcard
    // serves only IPv4. Either way, a local address of the wildcard's family loops.
    let family_ok = listen.is_ipv6() || server.is_ipv4();
    family_ok
        && (server.ip().is_loopback()
            || std::net::UdpSocket::bind(SocketAddr::new(server.ip(), 0)).is_ok())
}

/// The `nameserver` lines of a resolv.conf, on port 53.
fn read_resolv_conf(path: &Path) -> Result<Vec<UpstreamServer>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        format!(
            "no upstream configured and {} unreadable: {e}",
            path.display()
        )
    })?;
    let servers: Vec<UpstreamServer> = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .filter_map(|rest| {
            // Strip an IPv6 zone index ("fe80::1%eth0"): not representable in SocketAddr parsing.
            let ip = rest.trim().split('%').next()?;
            ip.parse::<std::net::IpAddr>().ok()
        })
        .map(|ip| UpstreamServer::plain(SocketAddr::new(ip, 53)))
        .collect();
    if servers.is_empty() {
        return Err(format!(
            "no upstream configured and {} names no nameserver",
            path.display()
        ));
    }
    Ok(servers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_forms() {
        let one = |s: &str| parse_upstream(s);
        assert_eq!(
            one("192.0.2.1").unwrap().addr,
            "192.0.2.1:53".parse().unwrap()
        );
        assert_eq!(
            one("[2001:db8::1]").unwrap().addr,
            "[2001:db8::1]:53".parse().unwrap()
        );
        let tls = one("tls://1.1.1.1#Cloudflare-DNS.com").unwrap();
        assert_eq!(tls.addr, "1.1.1.1:853".parse().unwrap());
        assert_eq!(
            tls.transport,
            UpstreamTransport::Tls {
                server_name: "cloudflare-dns.com".into()
            }
        );
        assert_eq!(tls.label, "tls://1.1.1.1#Cloudflare-DNS.com");
        let doh = one("https://[2606:4700::1111]:8443#cloudflare-dns.com").unwrap();
        assert_eq!(doh.addr, "[2606:4700::1111]:8443".parse().unwrap());
        assert_eq!(
            doh.transport,
            UpstreamTransport::Https {
                server_name: "cloudflare-dns.com".into(),
                path: "/dns-query".into()
            }
        );
        let doh = one("https://9.9.9.9/custom#dns.quad9.net").unwrap();
        assert!(
            matches!(doh.transport, UpstreamTransport::Https { ref path, .. } if path == "/custom")
        );
        assert!(one("tls://1.1.1.1").unwrap_err().contains("after '#'"));
        assert!(one("dns.google").is_err());
    }
}
