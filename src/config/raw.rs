//! The config file's serde layer: the TOML as written, with every default, before validation.
//! `deny_unknown_fields` everywhere, so that a misspelt key is an error rather than a silently
//! ignored setting. `config/mod.rs` turns these into the validated [`super::Config`].

use std::path::PathBuf;

use serde::Deserialize;
use toml::Spanned;

use super::{AdmitFailure, CnameTargets, DenyRcode, FenceBackend, FenceMode, LogLevel, ViewMode};
use crate::zones::TenantRegion;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    #[serde(default)]
    pub(super) server: RawServer,
    #[serde(default)]
    pub(super) zones: RawZones,
    #[serde(default)]
    pub(super) upstream: RawUpstream,
    #[serde(default)]
    pub(super) query_log: RawQueryLog,
    #[serde(default)]
    pub(super) fence: RawFence,
    #[serde(default)]
    pub(super) http: RawHttp,
    #[serde(default)]
    pub(super) catalog: RawCatalog,
    #[serde(default)]
    pub(super) view: Vec<Spanned<RawView>>,
}

/// `[catalog]`: following Microsoft's Intune endpoints page and endpoint web service.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCatalog {
    #[serde(default)]
    pub(super) page: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) feed: Option<Spanned<String>>,
    #[serde(default = "default_instance")]
    pub(super) instance: Spanned<String>,
    #[serde(default = "default_refresh_hours")]
    pub(super) refresh_hours: u64,
    #[serde(default = "default_state_dir")]
    pub(super) state_dir: PathBuf,
    #[serde(default)]
    pub(super) ca_file: Option<PathBuf>,
}

impl Default for RawCatalog {
    fn default() -> Self {
        RawCatalog {
            page: None,
            feed: None,
            instance: default_instance(),
            refresh_hours: default_refresh_hours(),
            state_dir: default_state_dir(),
            ca_file: None,
        }
    }
}

pub(super) fn default_instance() -> Spanned<String> {
    Spanned::new(0..0, "Worldwide".to_string())
}

pub(super) fn default_refresh_hours() -> u64 {
    24
}

pub(super) fn default_state_dir() -> PathBuf {
    PathBuf::from("/var/lib/dnsfence")
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHttp {
    #[serde(default = "default_http_listen")]
    pub(super) listen: Spanned<String>,
    #[serde(default = "default_max_denied_domains")]
    pub(super) max_denied_domains: usize,
    #[serde(default = "default_http_max_connections")]
    pub(super) max_connections: u64,
    /// Default: 8, at most `max_connections`.
    #[serde(default)]
    pub(super) max_connections_per_client: Option<u64>,
    /// Default: a quarter of `max_connections`.
    #[serde(default)]
    pub(super) reserved_connections: Option<u64>,
    #[serde(default)]
    pub(super) trusted: Vec<Spanned<String>>,
    #[serde(default = "default_http_request_timeout_ms")]
    pub(super) request_timeout_ms: u64,
    #[serde(default = "default_http_idle_timeout_ms")]
    pub(super) idle_timeout_ms: u64,
}

pub(super) fn default_http_max_connections() -> u64 {
    64
}
pub(super) fn default_http_request_timeout_ms() -> u64 {
    3_000
}
pub(super) fn default_http_idle_timeout_ms() -> u64 {
    5_000
}

impl Default for RawHttp {
    fn default() -> Self {
        RawHttp {
            listen: default_http_listen(),
            max_denied_domains: default_max_denied_domains(),
            max_connections: default_http_max_connections(),
            max_connections_per_client: None,
            reserved_connections: None,
            trusted: Vec::new(),
            request_timeout_ms: default_http_request_timeout_ms(),
            idle_timeout_ms: default_http_idle_timeout_ms(),
        }
    }
}

pub(super) fn default_http_listen() -> Spanned<String> {
    Spanned::new(0..0, "127.0.0.1:9153".to_string())
}
pub(super) fn default_max_denied_domains() -> usize {
    200
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawFence {
    #[serde(default)]
    pub(super) enabled: bool,
    #[serde(default = "default_backend")]
    pub(super) backend: FenceBackend,
    #[serde(default)]
    pub(super) netns: Option<Spanned<String>>,
    #[serde(default = "default_nft")]
    pub(super) nft: PathBuf,
    #[serde(default = "default_fence_min_ttl_secs")]
    pub(super) min_ttl_secs: u64,
    #[serde(default = "default_fence_max_ttl_secs")]
    pub(super) max_ttl_secs: u64,
    #[serde(default = "default_grace_secs")]
    pub(super) grace_secs: u64,
    #[serde(default = "default_admit_deadline_ms")]
    pub(super) admit_deadline_ms: u64,
    #[serde(default = "default_on_admit_failure")]
    pub(super) on_admit_failure: AdmitFailure,
    #[serde(default = "default_resync_interval_ms")]
    pub(super) resync_interval_ms: u64,
    #[serde(default = "default_recheck_ms")]
    pub(super) recheck_ms: u64,
}

impl Default for RawFence {
    fn default() -> Self {
        RawFence {
            enabled: false,
            backend: default_backend(),
            netns: None,
            nft: default_nft(),
            min_ttl_secs: default_fence_min_ttl_secs(),
            max_ttl_secs: default_fence_max_ttl_secs(),
            grace_secs: default_grace_secs(),
            admit_deadline_ms: default_admit_deadline_ms(),
            on_admit_failure: default_on_admit_failure(),
            resync_interval_ms: default_resync_interval_ms(),
            recheck_ms: default_recheck_ms(),
        }
    }
}

pub(super) fn default_backend() -> FenceBackend {
    FenceBackend::Nftables
}
pub(super) fn default_nft() -> PathBuf {
    PathBuf::from("nft")
}
pub(super) fn default_fence_min_ttl_secs() -> u64 {
    300
}
pub(super) fn default_fence_max_ttl_secs() -> u64 {
    86_400
}
pub(super) fn default_grace_secs() -> u64 {
    60
}
pub(super) fn default_admit_deadline_ms() -> u64 {
    50
}
pub(super) fn default_on_admit_failure() -> AdmitFailure {
    AdmitFailure::Answer
}
pub(super) fn default_resync_interval_ms() -> u64 {
    5_000
}
pub(super) fn default_recheck_ms() -> u64 {
    5_000
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawViewFence {
    #[serde(default)]
    pub(super) table: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) set_v4: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) set_v6: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) net_v4: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) net_v6: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) mode: Option<FenceMode>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawServer {
    #[serde(default = "default_listen")]
    pub(super) listen: Vec<Spanned<String>>,
    #[serde(default = "default_tcp_idle_timeout_ms")]
    pub(super) tcp_idle_timeout_ms: u64,
    #[serde(default = "default_max_udp_payload")]
    pub(super) max_udp_payload: u16,
    #[serde(default)]
    pub(super) udp_workers: usize,
    #[serde(default)]
    pub(super) busy_poll_us: u64,
    #[serde(default)]
    pub(super) rate_limit_qps: u32,
    #[serde(default)]
    pub(super) rate_limit_burst: u32,
    #[serde(default = "default_max_waiting")]
    pub(super) max_waiting: u64,
    #[serde(default = "default_tcp_max_connections")]
    pub(super) tcp_max_connections: u64,
    #[serde(default = "default_tcp_max_connections_per_client")]
    pub(super) tcp_max_connections_per_client: u64,
    #[serde(default = "default_tcp_max_queries")]
    pub(super) tcp_max_queries: u64,
    #[serde(default = "default_tcp_max_lifetime_ms")]
    pub(super) tcp_max_lifetime_ms: u64,
    #[serde(default = "default_shutdown_timeout_ms")]
    pub(super) shutdown_timeout_ms: u64,
    #[serde(default = "default_tcp_max_pipelined")]
    pub(super) tcp_max_pipelined: u64,
}

impl Default for RawServer {
    fn default() -> Self {
        RawServer {
            listen: default_listen(),
            tcp_idle_timeout_ms: default_tcp_idle_timeout_ms(),
            max_udp_payload: default_max_udp_payload(),
            udp_workers: 0,
            busy_poll_us: 0,
            rate_limit_qps: 0,
            rate_limit_burst: 0,
            max_waiting: default_max_waiting(),
            tcp_max_connections: default_tcp_max_connections(),
            tcp_max_connections_per_client: default_tcp_max_connections_per_client(),
            tcp_max_queries: default_tcp_max_queries(),
            tcp_max_lifetime_ms: default_tcp_max_lifetime_ms(),
            shutdown_timeout_ms: default_shutdown_timeout_ms(),
            tcp_max_pipelined: default_tcp_max_pipelined(),
        }
    }
}

pub(super) fn default_max_waiting() -> u64 {
    4096
}
pub(super) fn default_tcp_max_connections() -> u64 {
    1024
}
pub(super) fn default_tcp_max_connections_per_client() -> u64 {
    16
}
pub(super) fn default_tcp_max_queries() -> u64 {
    1000
}
pub(super) fn default_tcp_max_lifetime_ms() -> u64 {
    120_000
}
pub(super) fn default_tcp_max_pipelined() -> u64 {
    16
}
/// A third of the unit's TimeoutStopSec (15 s): a stop never ends in systemd's SIGKILL.
pub(super) fn default_shutdown_timeout_ms() -> u64 {
    5_000
}

pub(super) fn default_listen() -> Vec<Spanned<String>> {
    vec![Spanned::new(0..0, "127.0.0.1:5353".to_string())]
}
pub(super) fn default_tcp_idle_timeout_ms() -> u64 {
    5_000
}
/// Past a few hundred microseconds a spin buys no latency, only CPU; 10 ms is a generous cap.
pub(super) const MAX_BUSY_POLL_US: u64 = 10_000;

pub(super) fn default_max_udp_payload() -> u16 {
    1232
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawZones {
    /// One directory (the shipped catalog): the short form of `dirs`.
    #[serde(default)]
    pub(super) dir: Option<PathBuf>,
    /// The shipped catalog first, then local directories.
    #[serde(default)]
    pub(super) dirs: Option<Vec<Spanned<PathBuf>>>,
    #[serde(default = "default_tenant_regions")]
    pub(super) tenant_regions: Vec<TenantRegion>,
}

impl Default for RawZones {
    fn default() -> Self {
        RawZones {
            dir: None,
            dirs: None,
            tenant_regions: default_tenant_regions(),
        }
    }
}

pub(super) fn default_zones_dir() -> PathBuf {
    PathBuf::from("../zones")
}
pub(super) fn default_tenant_regions() -> Vec<TenantRegion> {
    vec![TenantRegion::Na, TenantRegion::Eu, TenantRegion::Ap]
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawUpstream {
    #[serde(default)]
    pub(super) servers: Vec<Spanned<String>>,
    #[serde(default)]
    pub(super) tls_ca_file: Option<PathBuf>,
    #[serde(default = "default_upstream_timeout_ms")]
    pub(super) timeout_ms: u64,
    #[serde(default = "default_cache_size")]
    pub(super) cache_size: u64,
    #[serde(default)]
    pub(super) positive_min_ttl_secs: u64,
    #[serde(default = "default_positive_max_ttl_secs")]
    pub(super) positive_max_ttl_secs: u64,
    #[serde(default)]
    pub(super) negative_min_ttl_secs: u64,
    #[serde(default = "default_negative_max_ttl_secs")]
    pub(super) negative_max_ttl_secs: u64,
    #[serde(default = "default_probe_interval_ms")]
    pub(super) probe_interval_ms: u64,
    #[serde(default = "default_max_inflight")]
    pub(super) max_inflight: u64,
    #[serde(default = "default_stale_answer_after_ms")]
    pub(super) stale_answer_after_ms: u64,
    #[serde(default = "default_stale_max_secs")]
    pub(super) stale_max_secs: u64,
}

pub(super) fn default_max_inflight() -> u64 {
    1024
}
/// RFC 8767 §4 suggests 1.8 s.
pub(super) fn default_stale_answer_after_ms() -> u64 {
    1800
}
/// RFC 8767 §4 suggests 1 to 3 days.
pub(super) fn default_stale_max_secs() -> u64 {
    86_400
}

impl Default for RawUpstream {
    fn default() -> Self {
        RawUpstream {
            servers: Vec::new(),
            tls_ca_file: None,
            timeout_ms: default_upstream_timeout_ms(),
            cache_size: default_cache_size(),
            positive_min_ttl_secs: 0,
            positive_max_ttl_secs: default_positive_max_ttl_secs(),
            negative_min_ttl_secs: 0,
            negative_max_ttl_secs: default_negative_max_ttl_secs(),
            probe_interval_ms: default_probe_interval_ms(),
            max_inflight: default_max_inflight(),
            stale_answer_after_ms: default_stale_answer_after_ms(),
            stale_max_secs: default_stale_max_secs(),
        }
    }
}

pub(super) fn default_upstream_timeout_ms() -> u64 {
    2_000
}
pub(super) fn default_cache_size() -> u64 {
    10_000
}
pub(super) fn default_positive_max_ttl_secs() -> u64 {
    86_400
}
pub(super) fn default_negative_max_ttl_secs() -> u64 {
    3_600
}
pub(super) fn default_probe_interval_ms() -> u64 {
    10_000
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawQueryLog {
    #[serde(default = "default_log_level")]
    pub(super) level: LogLevel,
    #[serde(default)]
    pub(super) path: Option<PathBuf>,
    #[serde(default = "default_sample_per_second")]
    pub(super) sample_per_second: u64,
}

pub(super) fn default_sample_per_second() -> u64 {
    20
}

impl Default for RawQueryLog {
    fn default() -> Self {
        RawQueryLog {
            sample_per_second: default_sample_per_second(),
            level: default_log_level(),
            path: None,
        }
    }
}

pub(super) fn default_log_level() -> LogLevel {
    LogLevel::Denied
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawView {
    pub(super) name: Spanned<String>,
    pub(super) networks: Vec<Spanned<String>>,
    #[serde(default)]
    pub(super) profiles: Vec<Spanned<String>>,
    #[serde(default)]
    pub(super) sets: Vec<Spanned<String>>,
    #[serde(default)]
    pub(super) exclude_sets: Vec<Spanned<String>>,
    #[serde(default = "default_deny_rcode")]
    pub(super) deny_rcode: DenyRcode,
    #[serde(default = "default_deny_ttl_secs")]
    pub(super) deny_ttl_secs: Spanned<u64>,
    #[serde(default = "default_cname_targets")]
    pub(super) cname_targets: CnameTargets,
    #[serde(default = "default_mode")]
    pub(super) mode: ViewMode,
    #[serde(default)]
    pub(super) fence: RawViewFence,
}

pub(super) fn default_deny_rcode() -> DenyRcode {
    DenyRcode::Nxdomain
}
pub(super) fn default_cname_targets() -> CnameTargets {
    CnameTargets::Follow
}
pub(super) fn default_deny_ttl_secs() -> Spanned<u64> {
    Spanned::new(0..0, 60)
}
pub(super) fn default_mode() -> ViewMode {
    ViewMode::Enforce
}
