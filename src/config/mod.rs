//! The TOML configuration: types, defaults, and validation with `file:line` errors.
//!
//! Parsing is strict (`deny_unknown_fields`) so that a misspelt key is an error, not a silently
//! ignored setting. Entries that refer to the zone catalog (profiles, set ids) are checked when the
//! policy is compiled; they keep their line number ([`Located`]) so that those errors still point
//! into this file.

use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;
use toml::Spanned;

use crate::fileerror::line_of;
use crate::matcher::Pattern;
use crate::zones::TenantRegion;
use raw::*;

mod raw;

/// The longest a denial may be cached by clients.
const MAX_DENY_TTL_SECS: u64 = 86_400;
/// Longest view name: it is part of every firewall set's name and a label of every metric of the
/// view.
pub const MAX_VIEW_NAME: usize = 32;
/// Longest firewall table or set name configured by hand (nftables allows 255; metric labels
/// carry them).
const MAX_SET_NAME: usize = 64;

/// The largest `server.max_udp_payload`: the UDP workers' buffers are this big.
pub const MAX_UDP_PAYLOAD: u16 = 4096;

/// An error in the config file: the file, the line and the entry.
pub type ConfigError = crate::fileerror::FileError;

/// A value with the config line it was written on, for errors found after parsing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located<T> {
    /// The value.
    pub value: T,
    /// 1-based line in the config file.
    pub line: usize,
}

/// What a denied query is answered with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DenyRcode {
    /// REFUSED: the default; the resolver will not answer this name.
    Refused,
    /// NXDOMAIN: suits stub resolvers (musl) that stop walking the search list on REFUSED.
    Nxdomain,
}

impl DenyRcode {
    /// The response code's name, as `dig` prints it.
    pub fn as_str(self) -> &'static str {
        match self {
            DenyRcode::Refused => "REFUSED",
            DenyRcode::Nxdomain => "NXDOMAIN",
        }
    }
}

/// Whether a view enforces its allowlist or only reports what it would deny.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ViewMode {
    /// Denied names get the deny answer.
    Enforce,
    /// Denied names are answered normally, logged and counted as would-be denials.
    Report,
}

impl ViewMode {
    /// The mode's name, as written in the config.
    pub fn as_str(self) -> &'static str {
        match self {
            ViewMode::Enforce => "enforce",
            ViewMode::Report => "report",
        }
    }
}

/// What a view does with a CNAME chain that leaves its allowlist.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CnameTargets {
    /// Follow it: the targets' addresses are admitted (Microsoft names alias onto CDNs), and the
    /// chain is recorded with every element it admits.
    Follow,
    /// Every CNAME target must be on the view's allowlist too; otherwise the answer is denied
    /// (EDE 15, reason `cname_target`).
    Allowlisted,
}

/// How much the query log writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    /// Nothing.
    None,
    /// Denied and would-be denied queries only.
    Denied,
    /// Every query.
    All,
}

/// The whole configuration, validated.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it was read from (errors and relative paths refer to it).
    pub path: PathBuf,
    /// Listening sockets and limits.
    pub server: ServerConfig,
    /// Where the catalog is and which tenant-specific rows apply.
    pub zones: ZonesConfig,
    /// Upstream resolvers and the cache.
    pub upstream: UpstreamConfig,
    /// The per-query JSON log.
    pub query_log: QueryLogConfig,
    /// The firewall sets.
    pub fence: FenceConfig,
    /// The HTTP endpoints (metrics, health, pull lists).
    pub http: HttpConfig,
    /// Following Microsoft's endpoint web service.
    pub catalog: CatalogConfig,
    /// Client networks and what they may resolve.
    pub views: Vec<ViewConfig>,
}

/// `[catalog]`: following Microsoft's sources.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogConfig {
    /// The Intune endpoints page's Markdown (Microsoft's recommended source); `None`: not
    /// followed.
    pub page: Option<String>,
    /// The service's base URL (`https://endpoints.office.com`, or a mirror); `None`: not followed.
    pub feed: Option<String>,
    /// The service instance (`Worldwide`, `USGovDoD`, `USGovGCCHigh`, `China`).
    pub instance: String,
    /// How often the version is polled (±10%).
    pub refresh: Duration,
    /// Where the overlays are kept across restarts.
    pub state_dir: PathBuf,
    /// CA certificates for the service; `None`: the system trust store.
    pub ca_file: Option<PathBuf>,
}

impl CatalogConfig {
    /// The overlay the daemon writes for the page, when it is followed.
    pub fn page_overlay(&self) -> Option<PathBuf> {
        self.page.as_ref().map(|_| self.state_dir.join("page.toml"))
    }

    /// The overlay the daemon writes for the feed, when it is followed.
    pub fn feed_overlay(&self) -> Option<PathBuf> {
        self.feed.as_ref().map(|_| {
            self.state_dir
                .join(format!("feed-{}.toml", self.instance.to_ascii_lowercase()))
        })
    }

    /// The overlays the catalog loads after the zone directories, in that order: the page's, then
    /// the feed's.
    pub fn overlays(&self) -> Vec<PathBuf> {
        self.page_overlay()
            .into_iter()
            .chain(self.feed_overlay())
            .collect()
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

/// What to answer when the firewall could not be updated in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AdmitFailure {
    /// Answer anyway: the firewall still enforces, the client's first connection may be dropped.
    Answer,
    /// SERVFAIL: the client retries, and no answer ever points at an address not in the set.
    Servfail,
}

/// Where the fence's elements go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FenceBackend {
    /// Kernel nftables sets, over netlink.
    Nftables,
    /// Kernel ip_set sets (for iptables gateways), over netlink.
    Ipset,
    /// Only the in-memory ledger, served as pull lists over HTTP for external firewalls.
    List,
}

/// `[fence]`: the nftables sets fed with every answered address.
#[derive(Debug, Clone)]
pub struct FenceConfig {
    /// Whether dnsfence keeps firewall sets at all (nftables needs CAP_NET_ADMIN).
    pub enabled: bool,
    /// Kernel sets, or pull lists only.
    pub backend: FenceBackend,
    /// Work in this named network namespace (`ip netns`), not dnsfence's own.
    pub netns: Option<String>,
    /// The `nft` binary, run once at start-up and on resync to create the table and sets.
    pub nft: PathBuf,
    /// Element timeout = clamp(TTL, min_ttl, max_ttl) + grace.
    pub min_ttl: Duration,
    /// See `min_ttl`.
    pub max_ttl: Duration,
    /// See `min_ttl`.
    pub grace: Duration,
    /// How long an answer waits for the kernel to confirm its addresses.
    pub admit_deadline: Duration,
    /// What to answer when that fails or times out.
    pub on_admit_failure: AdmitFailure,
    /// How often the table and sets are checked (and restored with every live element).
    pub resync_interval: Duration,
    /// On a cache hit, an element confirmed this recently is trusted without a kernel round trip;
    /// older ones are written again (which also repairs a deletion by hand).
    pub recheck: Duration,
}

/// How a view's dynamic sets are keyed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FenceMode {
    /// `ipv4_addr` / `ipv6_addr`.
    Addr,
    /// `ipv4_addr . inet_proto . inet_service`: only the matched endpoint set's ports.
    AddrPort,
}

/// An nftables table: family and name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TableRef {
    /// Always `inet`: a view's sets hold both IPv4 and IPv6.
    pub family: String,
    /// The table's name.
    pub name: String,
}

impl std::fmt::Display for TableRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.family, self.name)
    }
}

/// A view's firewall sets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ViewFence {
    /// The table holding them.
    pub table: TableRef,
    /// Dynamic IPv4 set (answered addresses, with timeouts).
    pub set_v4: String,
    /// Dynamic IPv6 set.
    pub set_v6: String,
    /// Static IPv4 ranges of the view's endpoint sets (interval set, no timeout).
    pub net_v4: String,
    /// Static IPv6 ranges.
    pub net_v6: String,
    /// Address or address-and-port elements.
    pub mode: FenceMode,
}

/// `[server]`.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Addresses served on both UDP and TCP.
    pub listen: Vec<SocketAddr>,
    /// How long an idle TCP connection is kept.
    pub tcp_idle_timeout: Duration,
    /// Largest UDP answer we send to an EDNS client, whatever it advertises (RFC 9715 suggests
    /// 1232 to avoid fragmentation).
    pub max_udp_payload: u16,
    /// UDP worker threads per address (SO_REUSEPORT sockets).
    pub udp_workers: usize,
    /// How long a UDP worker keeps polling its socket after the last datagram before it sleeps
    /// (zero: it sleeps at once). Spinning saves the wake-up of a sleeping thread — tens of
    /// microseconds per query on a virtual machine — at the price of CPU while queries come.
    pub busy_poll: Duration,
    /// UDP queries per second allowed per client address (0: no limit).
    pub rate_limit_qps: u32,
    /// Burst allowed above that rate.
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
}

/// `[zones]`.
#[derive(Debug, Clone)]
pub struct ZonesConfig {
    /// The zone directories, resolved against the config file's directory: the shipped catalog
    /// first (it must hold zone files), then local ones (they may be empty or missing).
    pub dirs: Vec<PathBuf>,
    /// Tenant regions whose region-specific endpoint sets apply.
    pub tenant_regions: Vec<TenantRegion>,
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
}

impl UpstreamConfig {
    /// What an upstream pool is built from: a change to any of these builds a new one.
    pub fn pool_settings(&self) -> PoolSettings {
        PoolSettings {
            servers: self.servers.clone(),
            tls_ca_file: self.tls_ca_file.clone(),
            timeout: self.timeout,
            max_inflight: self.max_inflight,
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
}

/// `[query_log]`.
#[derive(Debug, Clone)]
pub struct QueryLogConfig {
    /// What is logged.
    pub level: LogLevel,
    /// A file to append to; standard output when `None`.
    pub path: Option<PathBuf>,
    /// Lines per second, per thread, for each view and registrable domain; the rest are
    /// counted and summarized.
    pub sample_per_second: u32,
}

/// One `[[view]]`.
#[derive(Debug, Clone)]
pub struct ViewConfig {
    /// Name used in logs and metrics.
    pub name: String,
    /// Client networks of this view.
    pub networks: Vec<IpNet>,
    /// Profiles whose endpoint sets are allowed.
    pub profiles: Vec<Located<String>>,
    /// Extra endpoint set ids allowed beyond the profiles.
    pub sets: Vec<Located<String>>,
    /// Endpoint set ids removed from the profiles.
    pub exclude_sets: Vec<Located<String>>,
    /// Its firewall sets (used when `[fence]` is enabled).
    pub fence: ViewFence,
    /// Answer for denied names.
    pub deny_rcode: DenyRcode,
    /// TTL and MINIMUM of the SOA in NXDOMAIN denials: how long stub caches keep the denial.
    pub deny_ttl: u32,
    /// What to do with CNAME chains that leave the allowlist.
    pub cname_targets: CnameTargets,
    /// Enforce or report.
    pub mode: ViewMode,
    /// Line of the `[[view]]` header.
    pub line: usize,
}

impl Config {
    /// Reads and validates a config file. With no `upstream.servers`, the name servers of
    /// /etc/resolv.conf are used.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = fs::read_to_string(path).map_err(|source| ConfigError::io(path, source))?;
        Config::parse(path, &text, Path::new("/etc/resolv.conf"))
    }

    /// Parses config text; `path` locates errors and relative paths, `resolv_conf` is read only
    /// when the config names no upstream.
    pub fn parse(path: &Path, text: &str, resolv_conf: &Path) -> Result<Config, ConfigError> {
        let raw: RawConfig =
            toml::from_str(text).map_err(|e| ConfigError::syntax(path, text, &e))?;
        crate::fileerror::bounded_strings(path, text)?;
        let entry = |s: &Spanned<String>, reason: String| ConfigError::entry(path, text, s, reason);
        let located = |s: &Spanned<String>| Located {
            value: s.get_ref().trim().to_string(),
            line: line_of(text, s.span().start),
        };
        let whole = |line: usize, entry: &str, reason: &str| ConfigError::Entry {
            path: path.to_path_buf(),
            line,
            entry: entry.to_string(),
            reason: reason.to_string(),
        };

        let mut listen = Vec::new();
        for l in &raw.server.listen {
            let addr: SocketAddr = l.get_ref().trim().parse().map_err(|_| {
                entry(
                    l,
                    "not an ip:port address (e.g. 127.0.0.1:5353 or [::1]:5353)".into(),
                )
            })?;
            listen.push(addr);
        }
        if listen.is_empty() {
            return Err(whole(1, "server.listen", "at least one address is needed"));
        }
        if !(512..=MAX_UDP_PAYLOAD).contains(&raw.server.max_udp_payload) {
            return Err(whole(
                1,
                &raw.server.max_udp_payload.to_string(),
                "server.max_udp_payload must be between 512 and 4096",
            ));
        }
        if raw.server.busy_poll_us > MAX_BUSY_POLL_US {
            return Err(whole(
                1,
                &raw.server.busy_poll_us.to_string(),
                "server.busy_poll_us must be at most 10000 (10 ms)",
            ));
        }

        // Every number has bounds: durations stay far from what `Instant` arithmetic on the
        // query path could overflow, and limits stay meaningful.
        const DAY_MS: u64 = 86_400_000;
        const YEAR_SECS: u64 = 365 * 86_400;
        let (sv, up, f) = (&raw.server, &raw.upstream, &raw.fence);
        let http_per_client = raw
            .http
            .max_connections_per_client
            .unwrap_or(8.min(raw.http.max_connections));
        let http_reserved = raw
            .http
            .reserved_connections
            .unwrap_or(raw.http.max_connections / 4);
        let numbers: [(&str, &str, u64, u64, u64); 35] = [
            (
                "catalog",
                "refresh_hours",
                raw.catalog.refresh_hours,
                1,
                720,
            ),
            (
                "query_log",
                "sample_per_second",
                raw.query_log.sample_per_second,
                1,
                1_000_000,
            ),
            (
                "server",
                "tcp_idle_timeout_ms",
                sv.tcp_idle_timeout_ms,
                1,
                3_600_000,
            ),
            ("server", "max_waiting", sv.max_waiting, 1, 1_000_000),
            (
                "server",
                "tcp_max_connections",
                sv.tcp_max_connections,
                1,
                65_536,
            ),
            (
                "server",
                "tcp_max_connections_per_client",
                sv.tcp_max_connections_per_client,
                1,
                sv.tcp_max_connections.max(1),
            ),
            (
                "server",
                "tcp_max_queries",
                sv.tcp_max_queries,
                1,
                1_000_000,
            ),
            (
                "server",
                "tcp_max_lifetime_ms",
                sv.tcp_max_lifetime_ms,
                1_000,
                DAY_MS,
            ),
            (
                "server",
                "shutdown_timeout_ms",
                sv.shutdown_timeout_ms,
                100,
                120_000,
            ),
            ("server", "tcp_max_pipelined", sv.tcp_max_pipelined, 1, 256),
            ("upstream", "timeout_ms", up.timeout_ms, 1, 60_000),
            ("upstream", "cache_size", up.cache_size, 0, 100_000_000),
            (
                "upstream",
                "positive_min_ttl_secs",
                up.positive_min_ttl_secs,
                0,
                YEAR_SECS,
            ),
            (
                "upstream",
                "positive_max_ttl_secs",
                up.positive_max_ttl_secs,
                0,
                YEAR_SECS,
            ),
            (
                "upstream",
                "negative_min_ttl_secs",
                up.negative_min_ttl_secs,
                0,
                YEAR_SECS,
            ),
            (
                "upstream",
                "negative_max_ttl_secs",
                up.negative_max_ttl_secs,
                0,
                YEAR_SECS,
            ),
            (
                "upstream",
                "probe_interval_ms",
                up.probe_interval_ms,
                0,
                3_600_000,
            ),
            ("upstream", "max_inflight", up.max_inflight, 1, 65_536),
            (
                "upstream",
                "stale_answer_after_ms",
                up.stale_answer_after_ms,
                0,
                60_000,
            ),
            (
                "upstream",
                "stale_max_secs",
                up.stale_max_secs,
                0,
                30 * 86_400,
            ),
            ("fence", "min_ttl_secs", f.min_ttl_secs, 0, YEAR_SECS),
            ("fence", "max_ttl_secs", f.max_ttl_secs, 1, YEAR_SECS),
            ("fence", "grace_secs", f.grace_secs, 0, 30 * 86_400),
            ("fence", "admit_deadline_ms", f.admit_deadline_ms, 1, 60_000),
            (
                "fence",
                "resync_interval_ms",
                f.resync_interval_ms,
                100,
                DAY_MS,
            ),
            ("fence", "recheck_ms", f.recheck_ms, 0, DAY_MS),
            ("http", "max_connections", raw.http.max_connections, 1, 4096),
            (
                "http",
                "max_connections_per_client",
                http_per_client,
                1,
                raw.http.max_connections.max(1),
            ),
            (
                "http",
                "reserved_connections",
                http_reserved,
                0,
                raw.http.max_connections.saturating_sub(1),
            ),
            (
                "http",
                "request_timeout_ms",
                raw.http.request_timeout_ms,
                100,
                60_000,
            ),
            (
                "http",
                "idle_timeout_ms",
                raw.http.idle_timeout_ms,
                0,
                600_000,
            ),
            (
                "http",
                "max_denied_domains",
                raw.http.max_denied_domains as u64,
                0,
                100_000,
            ),
            ("server", "udp_workers", sv.udp_workers as u64, 0, 64),
            (
                "server",
                "rate_limit_qps",
                sv.rate_limit_qps.into(),
                0,
                10_000_000,
            ),
            (
                "server",
                "rate_limit_burst",
                sv.rate_limit_burst.into(),
                0,
                10_000_000,
            ),
        ];
        for (section, key, value, lo, hi) in numbers {
            if !(lo..=hi).contains(&value) {
                return Err(whole(
                    key_line(text, section, key),
                    &format!("{key} = {value}"),
                    &format!("{section}.{key} must be between {lo} and {hi}"),
                ));
            }
        }

        let mut servers = Vec::new();
        for s in &raw.upstream.servers {
            servers.push(parse_upstream(s.get_ref()).map_err(|r| entry(s, r.into()))?);
        }
        let from_resolv_conf = servers.is_empty();
        if from_resolv_conf {
            servers = read_resolv_conf(resolv_conf).map_err(|reason| ConfigError::Entry {
                path: path.to_path_buf(),
                line: 1,
                entry: "upstream.servers".into(),
                reason,
            })?;
        }
        for (i, server) in servers.iter().enumerate() {
            let server = &server.addr;
            if let Some(own) = listen.iter().find(|l| is_own_address(server, l)) {
                let (line, written, source) = match raw.upstream.servers.get(i) {
                    Some(s) => (
                        line_of(text, s.span().start),
                        s.get_ref().clone(),
                        "".into(),
                    ),
                    None => (
                        1,
                        "upstream.servers".into(),
                        format!(" ({} from {})", server, resolv_conf.display()),
                    ),
                };
                return Err(ConfigError::Entry {
                    path: path.to_path_buf(),
                    line,
                    entry: written,
                    reason: format!(
                        "the upstream{source} is dnsfence's own listen address {own}: every \
                         allowed query would loop back to dnsfence. Set [upstream] servers to the \
                         resolver dnsfence should forward to (the one resolv.conf named before \
                         dnsfence replaced it, or your network's)"
                    ),
                });
            }
        }
        let up = &raw.upstream;
        if up.timeout_ms == 0 {
            return Err(whole(1, "upstream.timeout_ms", "must be greater than 0"));
        }
        if up.positive_min_ttl_secs > up.positive_max_ttl_secs
            || up.negative_min_ttl_secs > up.negative_max_ttl_secs
        {
            return Err(whole(
                1,
                "upstream.*_ttl_secs",
                "a minimum TTL is greater than its maximum",
            ));
        }

        let mut views: Vec<ViewConfig> = Vec::new();
        for v in &raw.view {
            let line = line_of(text, v.span().start);
            let v = v.get_ref();
            let name = v.name.get_ref().trim();
            if name.is_empty()
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                return Err(entry(
                    &v.name,
                    "a view name is letters, digits, '-' and '_'".into(),
                ));
            }
            if name.len() > MAX_VIEW_NAME {
                return Err(entry(
                    &v.name,
                    format!(
                        "{} characters: a view name is at most {MAX_VIEW_NAME} (it names firewall \
                         sets and labels every metric of the view)",
                        name.len()
                    ),
                ));
            }
            if views.iter().any(|o| o.name == name) {
                return Err(entry(&v.name, "duplicate view name".into()));
            }
            let mut networks = Vec::new();
            for n in &v.networks {
                let net = parse_network(n).map_err(|why| entry(n, why))?;
                if let Some(other) = views.iter().find(|o| o.networks.contains(&net)) {
                    return Err(entry(
                        n,
                        format!("already the network of view '{}'", other.name),
                    ));
                }
                networks.push(net);
            }
            if networks.is_empty() {
                return Err(entry(&v.name, "a view needs at least one network".into()));
            }
            if v.profiles.is_empty() && v.sets.is_empty() {
                return Err(entry(
                    &v.name,
                    "a view needs profiles or sets: it would deny everything".into(),
                ));
            }
            let fence = view_fence(&v.name, &v.fence, raw.fence.backend, &entry)?;
            let deny_ttl = *v.deny_ttl_secs.get_ref();
            if deny_ttl > MAX_DENY_TTL_SECS {
                let at = line_of(text, v.deny_ttl_secs.span().start).max(line);
                return Err(whole(
                    at,
                    &deny_ttl.to_string(),
                    "deny_ttl_secs must be at most 86400 (one day)",
                ));
            }
            views.push(ViewConfig {
                name: name.to_string(),
                networks,
                profiles: v.profiles.iter().map(located).collect(),
                sets: v.sets.iter().map(located).collect(),
                exclude_sets: v.exclude_sets.iter().map(located).collect(),
                fence,
                deny_rcode: v.deny_rcode,
                deny_ttl: deny_ttl as u32,
                cname_targets: v.cname_targets,
                mode: v.mode,
                line,
            });
        }
        if views.is_empty() {
            return Err(whole(
                1,
                "view",
                "no [[view]]: every client would be refused",
            ));
        }

        let base = path.parent().unwrap_or(Path::new("."));
        let zone_dirs: Vec<PathBuf> = match (&raw.zones.dir, &raw.zones.dirs) {
            (Some(_), Some(d)) => {
                return Err(ConfigError::Entry {
                    path: path.to_path_buf(),
                    line: d.first().map_or(1, |s| line_of(text, s.span().start)),
                    entry: "zones.dir".into(),
                    reason: "give zones.dirs or zones.dir, not both".into(),
                });
            }
            (_, Some(d)) if d.is_empty() => {
                return Err(whole(
                    key_line(text, "zones", "dirs"),
                    "dirs = []",
                    "zones.dirs needs the catalog's directory first",
                ));
            }
            (_, Some(d)) => d.iter().map(|s| base.join(s.get_ref())).collect(),
            (Some(d), None) => vec![base.join(d)],
            (None, None) => vec![base.join(raw::default_zones_dir())],
        };
        let log_path = raw
            .query_log
            .path
            .filter(|p| !p.as_os_str().is_empty() && p != Path::new("-"))
            .map(|p| if p.is_absolute() { p } else { base.join(p) });

        let f = &raw.fence;
        if f.min_ttl_secs > f.max_ttl_secs {
            return Err(whole(
                1,
                "fence.min_ttl_secs",
                "greater than fence.max_ttl_secs",
            ));
        }
        if let Some(ns) = &f.netns {
            let ok = !ns.get_ref().is_empty()
                && ns
                    .get_ref()
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
            if !ok || ns.get_ref().starts_with('.') {
                return Err(entry(ns, "not a network namespace name".into()));
            }
        }
        let fence = FenceConfig {
            enabled: f.enabled,
            backend: f.backend,
            netns: f.netns.as_ref().map(|n| n.get_ref().clone()),
            nft: f.nft.clone(),
            min_ttl: Duration::from_secs(f.min_ttl_secs),
            max_ttl: Duration::from_secs(f.max_ttl_secs),
            grace: Duration::from_secs(f.grace_secs),
            admit_deadline: Duration::from_millis(f.admit_deadline_ms),
            on_admit_failure: f.on_admit_failure,
            resync_interval: Duration::from_millis(f.resync_interval_ms.max(100)),
            recheck: Duration::from_millis(f.recheck_ms),
        };

        let http_listen = match raw.http.listen.get_ref().trim() {
            "" | "off" => None,
            text => Some(text.parse::<SocketAddr>().map_err(|_| {
                entry(
                    &raw.http.listen,
                    "not an ip:port address (or \"off\")".into(),
                )
            })?),
        };

        Ok(Config {
            path: path.to_path_buf(),
            server: ServerConfig {
                listen,
                tcp_idle_timeout: Duration::from_millis(raw.server.tcp_idle_timeout_ms),
                max_udp_payload: raw.server.max_udp_payload,
                // 0: one per CPU this process may run on (its affinity mask), at most 8.
                udp_workers: match raw.server.udp_workers {
                    0 => std::thread::available_parallelism().map_or(1, |n| n.get().min(8)),
                    n => n.min(64),
                },
                busy_poll: Duration::from_micros(raw.server.busy_poll_us),
                rate_limit_qps: raw.server.rate_limit_qps,
                rate_limit_burst: if raw.server.rate_limit_burst == 0 {
                    raw.server.rate_limit_qps.saturating_mul(2)
                } else {
                    raw.server.rate_limit_burst
                },
                max_waiting: raw.server.max_waiting as usize,
                tcp_max_connections: raw.server.tcp_max_connections as usize,
                tcp_max_connections_per_client: raw.server.tcp_max_connections_per_client as usize,
                tcp_max_queries: raw.server.tcp_max_queries,
                tcp_max_lifetime: Duration::from_millis(raw.server.tcp_max_lifetime_ms),
                shutdown_timeout: Duration::from_millis(raw.server.shutdown_timeout_ms),
                tcp_max_pipelined: raw.server.tcp_max_pipelined as usize,
            },
            zones: ZonesConfig {
                dirs: zone_dirs,
                tenant_regions: raw.zones.tenant_regions,
            },
            upstream: UpstreamConfig {
                servers,
                tls_ca_file: up.tls_ca_file.as_ref().map(|p| base.join(p)),
                from_resolv_conf,
                timeout: Duration::from_millis(up.timeout_ms),
                cache_size: up.cache_size,
                positive_min_ttl: Duration::from_secs(up.positive_min_ttl_secs),
                positive_max_ttl: Duration::from_secs(up.positive_max_ttl_secs),
                negative_min_ttl: Duration::from_secs(up.negative_min_ttl_secs),
                negative_max_ttl: Duration::from_secs(up.negative_max_ttl_secs),
                probe_interval: Duration::from_millis(up.probe_interval_ms.max(100)),
                max_inflight: up.max_inflight as usize,
                stale_answer_after: Duration::from_millis(up.stale_answer_after_ms),
                stale_max: Duration::from_secs(up.stale_max_secs),
            },
            query_log: QueryLogConfig {
                level: raw.query_log.level,
                path: log_path,
                sample_per_second: raw.query_log.sample_per_second as u32,
            },
            fence,
            catalog: {
                let c = &raw.catalog;
                for (url, what) in [
                    (
                        &c.feed,
                        "the feed is the service's base URL, e.g. https://endpoints.office.com",
                    ),
                    (
                        &c.page,
                        "the page is the URL of its Markdown, e.g. https://raw.githubusercontent.com/MicrosoftDocs/memdocs/main/intune/fundamentals/endpoints.md",
                    ),
                ] {
                    let Some(url) = url else { continue };
                    let host = url
                        .get_ref()
                        .strip_prefix("https://")
                        .or_else(|| url.get_ref().strip_prefix("http://"))
                        .unwrap_or("");
                    if host.is_empty() || host.contains(char::is_whitespace) {
                        return Err(entry(url, what.into()));
                    }
                }
                let instance = c.instance.get_ref();
                if instance.is_empty() || !instance.bytes().all(|b| b.is_ascii_alphanumeric()) {
                    return Err(entry(
                        &c.instance,
                        "an instance is Worldwide, USGovDoD, USGovGCCHigh or China".into(),
                    ));
                }
                CatalogConfig {
                    page: c.page.as_ref().map(|p| p.get_ref().to_string()),
                    feed: c
                        .feed
                        .as_ref()
                        .map(|f| f.get_ref().trim_end_matches('/').to_string()),
                    instance: instance.clone(),
                    refresh: Duration::from_secs(c.refresh_hours * 3600),
                    state_dir: base.join(&c.state_dir),
                    ca_file: c.ca_file.as_ref().map(|p| base.join(p)),
                }
            },
            http: HttpConfig {
                listen: http_listen,
                max_denied_domains: raw.http.max_denied_domains,
                max_connections: raw.http.max_connections as usize,
                max_connections_per_client: http_per_client as usize,
                reserved_connections: http_reserved as usize,
                trusted: raw
                    .http
                    .trusted
                    .iter()
                    .map(|n| parse_network(n).map_err(|why| entry(n, why)))
                    .collect::<Result<_, _>>()?,
                request_timeout: Duration::from_millis(raw.http.request_timeout_ms),
                idle_timeout: Duration::from_millis(raw.http.idle_timeout_ms),
            },
            views,
        })
    }
}

/// A view's firewall sets, with names derived from the view's name unless configured. ipset
/// names share one namespace with every other set of the host and have at most 31 characters:
/// derived ones start with `dnsfence_`.
fn view_fence(
    view_name: &Spanned<String>,
    raw: &RawViewFence,
    backend: FenceBackend,
    entry: &dyn Fn(&Spanned<String>, String) -> ConfigError,
) -> Result<ViewFence, ConfigError> {
    let mut base: String = view_name
        .get_ref()
        .trim()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    if backend == FenceBackend::Ipset {
        base.insert_str(0, "dnsfence_");
    }
    let table = match &raw.table {
        None => TableRef {
            family: "inet".into(),
            name: "dnsfence".into(),
        },
        Some(t) => {
            let mut parts = t.get_ref().split_whitespace();
            match (parts.next(), parts.next(), parts.next()) {
                // A view's sets hold both IPv4 and IPv6, so only an inet table will do.
                (Some("inet"), Some(name), None) if nft_identifier(name) => TableRef {
                    family: "inet".into(),
                    name: name.into(),
                },
                _ => {
                    return Err(entry(
                        t,
                        "a table is written 'inet NAME' (e.g. 'inet dnsfence')".into(),
                    ));
                }
            }
        }
    };
    let name = |given: &Option<Spanned<String>>, suffix: &str| -> Result<String, ConfigError> {
        let name = match given {
            None => format!("{base}_{suffix}"),
            Some(s) if nft_identifier(s.get_ref()) => s.get_ref().clone(),
            Some(s) => {
                return Err(entry(
                    s,
                    format!(
                        "a set name is letters, digits and '_', starting with a letter or '_', \
                         at most {MAX_SET_NAME} characters"
                    ),
                ));
            }
        };
        if backend == FenceBackend::Ipset && name.len() > IPSET_MAX_NAME {
            let why = format!(
                "the ipset set name '{name}' is longer than {IPSET_MAX_NAME} characters: \
                 name it in [view.fence] (set_v4, set_v6, net_v4, net_v6)"
            );
            return Err(entry(given.as_ref().unwrap_or(view_name), why));
        }
        Ok(name)
    };
    let fence = ViewFence {
        set_v4: name(&raw.set_v4, "v4")?,
        set_v6: name(&raw.set_v6, "v6")?,
        net_v4: name(&raw.net_v4, "net_v4")?,
        net_v6: name(&raw.net_v6, "net_v6")?,
        mode: raw.mode.unwrap_or(FenceMode::Addr),
        table,
    };
    Ok(fence)
}

/// A network as written in the config: CIDR, or one address; no host bits set.
fn parse_network(n: &Spanned<String>) -> Result<IpNet, String> {
    let text = n.get_ref().trim();
    let net: IpNet = text
        .parse()
        .or_else(|_| text.parse::<std::net::IpAddr>().map(IpNet::from))
        .map_err(|_| "not a network in CIDR form".to_string())?;
    if net.trunc() != net {
        return Err(format!("host bits set; the network is {}", net.trunc()));
    }
    Ok(net)
}

/// ipset's longest set name (IPSET_MAXNAMELEN, 32 with the terminating zero).
const IPSET_MAX_NAME: usize = 31;

/// nft's unquoted identifier: `[a-zA-Z_][a-zA-Z0-9_]*` (hyphens would need quoting), at most
/// [`MAX_SET_NAME`] characters.
fn nft_identifier(s: &str) -> bool {
    let mut b = s.bytes();
    matches!(b.next(), Some(c) if c.is_ascii_alphabetic() || c == b'_')
        && b.all(|c| c.is_ascii_alphanumeric() || c == b'_')
        && s.len() <= MAX_SET_NAME
}

/// `1.2.3.4`, `1.2.3.4:5300`, `::1`, `[::1]:5300`; port 53 when none is given.
/// An upstream as written: `ip` or `ip:port` (plain DNS, port 53), `tls://ip[:port]#name`
/// (DNS over TLS, port 853, certificate for `name`), `https://ip[:port][/path]#name` (DNS over
/// HTTPS, port 443, path `/dns-query`).
fn parse_upstream(text: &str) -> Result<UpstreamServer, &'static str> {
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

/// The line of `key = …` in `[section]`, or 1 when it is not written (a default).
fn key_line(text: &str, section: &str, key: &str) -> usize {
    let mut current = "";
    for (i, line) in text.lines().enumerate() {
        let t = line.trim();
        if let Some(name) = t.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
            current = name.trim();
        } else if current == section
            && t.strip_prefix(key)
                .is_some_and(|rest| rest.trim_start().starts_with('='))
        {
            return i + 1;
        }
    }
    1
}

/// Whether `server` is one of dnsfence's own sockets: the same address and port, or a wildcard
/// listener (`0.0.0.0`, `[::]`) on that port and an address of this host (loopback included;
/// binding to it succeeds only if it is local).
fn is_own_address(server: &SocketAddr, listen: &SocketAddr) -> bool {
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
    let text = fs::read_to_string(path).map_err(|e| {
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

    const MIN: &str = r#"
[upstream]
servers = ["127.0.0.1:5300"]

[[view]]
name = "lab"
networks = ["10.0.0.0/8"]
profiles = ["apple"]
"#;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(
            Path::new("config/test.toml"),
            text,
            Path::new("/nonexistent"),
        )
    }

    #[test]
    fn an_upstream_that_is_dnsfence_itself_is_refused() {
        let cfg = |listen: &str, servers: &str| {
            let text = MIN
                .replace("servers = [\"127.0.0.1:5300\"]", servers)
                .replace(
                    "[upstream]",
                    &format!("[server]\nlisten = [{listen}]\n[upstream]"),
                );
            let dir = tempfile::tempdir().unwrap();
            let rc = dir.path().join("resolv.conf");
            std::fs::write(&rc, "nameserver 127.0.0.53\n").unwrap();
            Config::parse(Path::new("c.toml"), &text, &rc).map(|_| ())
        };
        let e = cfg("\"127.0.0.1:53\"", "servers = [\"127.0.0.1\"]")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("'127.0.0.1': the upstream is dnsfence's own listen address 127.0.0.1:53"),
            "{e}"
        );
        assert!(e.contains("Set [upstream] servers"), "{e}");
        // A wildcard listener catches every loopback address, from resolv.conf too.
        let e = cfg("\"0.0.0.0:53\"", "").unwrap_err().to_string();
        assert!(e.contains("127.0.0.53:53 from"), "{e}");
        assert!(e.contains("resolv.conf"), "{e}");
        let e = cfg("\"[::]:53\"", "servers = [\"127.0.0.9\"]")
            .unwrap_err()
            .to_string();
        assert!(e.contains("own listen address [::]:53"), "{e}");
        // Another port, or a non-local address: fine.
        assert!(cfg("\"127.0.0.1:5353\"", "servers = [\"127.0.0.1\"]").is_ok());
        assert!(cfg("\"0.0.0.0:53\"", "servers = [\"192.0.2.53\"]").is_ok());
    }

    #[test]
    fn numbers_are_bounded_with_file_line_and_entry() {
        let text = MIN.replace(
            "[upstream]\n",
            "[fence]\ngrace_secs = 99999999999\n[upstream]\n",
        );
        let e = parse(&text).unwrap_err().to_string();
        assert_eq!(
            e,
            "config/test.toml:3: 'grace_secs = 99999999999': fence.grace_secs must be between 0 and 2592000"
        );
        let text = MIN.replace("[upstream]\n", "[upstream]\nmax_inflight = 0\n");
        let e = parse(&text).unwrap_err().to_string();
        assert!(
            e.contains(":3: 'max_inflight = 0': upstream.max_inflight must be between 1"),
            "{e}"
        );
    }

    #[test]
    fn defaults() {
        let c = parse(MIN).unwrap();
        assert_eq!(c.server.listen, ["127.0.0.1:5353".parse().unwrap()]);
        assert_eq!(c.upstream.timeout, Duration::from_secs(2));
        assert_eq!(c.zones.dirs, [Path::new("config/../zones")]);
        assert_eq!(c.views[0].deny_rcode, DenyRcode::Nxdomain);
        assert_eq!(c.views[0].deny_ttl, 60);
        assert_eq!(c.views[0].mode, ViewMode::Enforce);
        assert_eq!(c.views[0].profiles[0].line, 8);
        assert_eq!(c.query_log.level, LogLevel::Denied);
    }

    #[test]
    fn busy_poll_is_off_by_default_and_bounded() {
        assert_eq!(parse(MIN).unwrap().server.busy_poll, Duration::ZERO);
        let c = parse(&format!("[server]\nbusy_poll_us = 200\n{MIN}")).unwrap();
        assert_eq!(c.server.busy_poll, Duration::from_micros(200));
        let e = parse(&format!("[server]\nbusy_poll_us = 20000\n{MIN}"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("'20000': server.busy_poll_us must be at most 10000"),
            "{e}"
        );
    }

    #[test]
    fn errors_name_line_and_entry() {
        let e = parse(&MIN.replace("10.0.0.0/8", "10.0.0.1/8"))
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "config/test.toml:7: '10.0.0.1/8': host bits set; the network is 10.0.0.0/8"
        );
        let e = parse(&MIN.replace("127.0.0.1:5300", "localhost"))
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("config/test.toml:3: 'localhost': not an upstream"),
            "{e}"
        );
        let e = parse(&MIN.replace("profiles", "profile"))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("config/test.toml:8:"), "{e}");
        assert!(e.contains("profile"), "{e}");
    }

    #[test]
    fn ipset_set_names_are_prefixed_and_at_most_31_characters() {
        let ipset = format!("[fence]\nenabled = true\nbackend = \"ipset\"\n{MIN}");
        let c = parse(&ipset).unwrap();
        assert_eq!(c.views[0].fence.set_v4, "dnsfence_lab_v4");
        assert_eq!(c.views[0].fence.net_v6, "dnsfence_lab_net_v6");
        let long = ipset.replace("name = \"lab\"", "name = \"windows-kiosk-building-b\"");
        let e = parse(&long).unwrap_err().to_string();
        assert!(
            e.starts_with("config/test.toml:9: 'windows-kiosk-building-b': the ipset set name"),
            "{e}"
        );
        // Named in [view.fence], it is fine.
        let named = format!(
            "{long}[view.fence]\nset_v4 = \"kb_v4\"\nset_v6 = \"kb_v6\"\nnet_v4 = \"kb_n4\"\nnet_v6 = \"kb_n6\"\n"
        );
        assert_eq!(parse(&named).unwrap().views[0].fence.set_v4, "kb_v4");
        // nftables names live in dnsfence's own table: no prefix.
        assert_eq!(parse(MIN).unwrap().views[0].fence.set_v4, "lab_v4");
    }

    #[test]
    fn resolv_conf_fallback() {
        let dir = tempfile::tempdir().unwrap();
        let rc = dir.path().join("resolv.conf");
        fs::write(
            &rc,
            "# x\nsearch lan\nnameserver 127.0.0.53\nnameserver ::1\n",
        )
        .unwrap();
        let text = MIN.replace("servers = [\"127.0.0.1:5300\"]", "");
        let c = Config::parse(Path::new("c.toml"), &text, &rc).unwrap();
        assert!(c.upstream.from_resolv_conf);
        let labels: Vec<&str> = c
            .upstream
            .servers
            .iter()
            .map(|s| s.label.as_str())
            .collect();
        assert_eq!(labels, ["127.0.0.53:53", "[::1]:53"]);
    }

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
