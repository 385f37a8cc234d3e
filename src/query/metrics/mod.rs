//! Prometheus metrics: names, handles registered once, and the bounded label sets.
//!
//! Every label is a bounded set: view names and endpoint-set ids come from the config and zones,
//! verdicts, reasons and results are fixed lists, query types outside a known list are "other",
//! and denied registrable domains are capped per view (`max_denied_domains`, the rest "_other").
//! Exact query names never become labels: the most denied ones are kept in a bounded top-K per
//! view and served as JSON on `/v1/denied`.

pub mod live;

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::Duration;

use crate::base::outcome::{Reason, Verdict};
use crate::base::sync::lock;
use crate::resolve::answer::Dropped;
use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry,
};

/// `dnsfence_queries_total{view,qtype,verdict}`.
pub const QUERIES: &str = "dnsfence_queries_total";
/// `dnsfence_denied_queries_total{view,reason}`.
pub const DENIED: &str = "dnsfence_denied_queries_total";
/// `dnsfence_denied_domains_total{view,domain}`.
pub const DENIED_DOMAINS: &str = "dnsfence_denied_domains_total";
/// `dnsfence_allowed_queries_total{view,endpoint_set}`.
pub const ALLOWED: &str = "dnsfence_allowed_queries_total";
/// `dnsfence_cache_hits_total`.
pub const CACHE_HITS: &str = "dnsfence_cache_hits_total";
/// `dnsfence_cache_misses_total`.
pub const CACHE_MISSES: &str = "dnsfence_cache_misses_total";
/// `dnsfence_cache_entries`.
pub const CACHE_ENTRIES: &str = "dnsfence_cache_entries";
/// `dnsfence_upstream_requests_total{result}`.
pub const UPSTREAM_REQUESTS: &str = "dnsfence_upstream_requests_total";
/// `dnsfence_upstream_duration_seconds`.
pub const UPSTREAM_DURATION: &str = "dnsfence_upstream_duration_seconds";
/// `dnsfence_response_duration_seconds{verdict}`.
pub const RESPONSE_DURATION: &str = "dnsfence_response_duration_seconds";
/// `dnsfence_fence_elements{view,set}`.
pub const FENCE_ELEMENTS: &str = "dnsfence_fence_elements";
/// `dnsfence_fence_would_deny_elements{view,set}`.
pub const FENCE_WOULD_DENY: &str = "dnsfence_fence_would_deny_elements";
/// `dnsfence_fence_admits_total{result}`.
pub const FENCE_ADMITS: &str = "dnsfence_fence_admits_total";
/// `dnsfence_fence_admit_duration_seconds`.
pub const FENCE_ADMIT_DURATION: &str = "dnsfence_fence_admit_duration_seconds";
/// `dnsfence_fence_readmits_total`.
pub const FENCE_READMITS: &str = "dnsfence_fence_readmits_total";
/// `dnsfence_fence_batches_total{by}`.
pub const FENCE_BATCHES: &str = "dnsfence_fence_batches_total";
/// `dnsfence_fence_resyncs_total{reason}`.
pub const FENCE_RESYNCS: &str = "dnsfence_fence_resyncs_total";
/// `dnsfence_config_reloads_total{result}`.
pub const CONFIG_RELOADS: &str = "dnsfence_config_reloads_total";
/// `dnsfence_upstream_records_dropped_total{reason}`.
pub const RECORDS_DROPPED: &str = "dnsfence_upstream_records_dropped_total";
/// `dnsfence_stale_answers_total`.
pub const STALE_ANSWERS: &str = "dnsfence_stale_answers_total";
/// `dnsfence_upstream_coalesced_total`.
pub const UPSTREAM_COALESCED: &str = "dnsfence_upstream_coalesced_total";
/// `dnsfence_upstream_inflight`.
pub const UPSTREAM_INFLIGHT: &str = "dnsfence_upstream_inflight";
/// `dnsfence_overload_total{limit}`.
pub const OVERLOAD: &str = "dnsfence_overload_total";
/// `dnsfence_querylog_dropped_total`.
pub const QUERYLOG_DROPPED: &str = "dnsfence_querylog_dropped_total";
/// `dnsfence_upstream_server_answers_total{server}`.
pub const SERVER_ANSWERS: &str = "dnsfence_upstream_server_answers_total";
/// `dnsfence_upstream_server_failures_total{server}`.
pub const SERVER_FAILURES: &str = "dnsfence_upstream_server_failures_total";
/// `dnsfence_upstream_server_up{server}`.
pub const SERVER_UP: &str = "dnsfence_upstream_server_up";
/// `dnsfence_upstream_server_srtt_seconds{server}`.
pub const SERVER_SRTT: &str = "dnsfence_upstream_server_srtt_seconds";
/// Plain-UDP replies dropped per server and reason (source, id, late, question, malformed).
pub const REPLIES_DROPPED: &str = "dnsfence_upstream_replies_dropped_total";
/// Plain-UDP sockets opened per server (the first ones, then one per rotation).
pub const UDP_SOCKETS_OPENED: &str = "dnsfence_upstream_udp_sockets_opened_total";
/// `dnsfence_querylog_sampled_total`.
pub const QUERYLOG_SAMPLED: &str = "dnsfence_querylog_sampled_total";
/// `dnsfence_build_info{version}`.
pub const BUILD_INFO: &str = "dnsfence_build_info";
/// Fetches of each followed catalog source (`source`, `result`).
pub const CATALOG_FETCHES: &str = "dnsfence_catalog_fetches_total";
/// When each followed catalog source last answered usefully (`source`).
pub const CATALOG_LAST_SUCCESS: &str = "dnsfence_catalog_last_success_timestamp_seconds";
/// The version of each catalog source that has one (`source`).
pub const CATALOG_VERSION: &str = "dnsfence_catalog_version";
/// Entries of each followed source left out by validation (`source`).
pub const CATALOG_REJECTED: &str = "dnsfence_catalog_rejected_entries";

/// Warm-restart state written at a stop and read at a start (`step`, `result`).
pub const WARM_RESTART: &str = "dnsfence_warm_restart_total";
/// What the last start read back from the warm-restart state (`what`: answers, elements).
pub const WARM_RESTORED: &str = "dnsfence_warm_restart_restored";
/// Per view, device family and stage: 1 when the policy lets every required set through, 0 when
/// it denies something of it (set at start and at each reload or overlay).
pub const FAMILY_READY: &str = "dnsfence_family_ready";

/// Whether each peer gateway's sync link is up (`peer`).
pub const SYNC_PEER_UP: &str = "dnsfence_sync_peer_up";
/// Elements sent to each peer (`peer`).
pub const SYNC_SENT: &str = "dnsfence_sync_elements_sent_total";
/// Elements received from each peer (`peer`).
pub const SYNC_RECEIVED: &str = "dnsfence_sync_elements_received_total";
/// Elements dropped from a peer's full queue (`peer`); a snapshot follows.
pub const SYNC_DROPPED: &str = "dnsfence_sync_elements_dropped_total";
/// Full snapshots sent to each peer (`peer`).
pub const SYNC_SNAPSHOTS: &str = "dnsfence_sync_snapshots_total";
/// Sync connections or elements refused (`reason`).
pub const SYNC_REFUSED: &str = "dnsfence_sync_refused_total";
/// From a peer's admit to this gateway's receipt (`peer`).
pub const SYNC_LAG: &str = "dnsfence_sync_lag_seconds";

/// Query types that get their own label value; the rest are "other".
const QTYPES: &[&str] = &[
    "A", "AAAA", "CNAME", "HTTPS", "SVCB", "MX", "TXT", "NS", "SOA", "PTR", "SRV", "CAA", "ANY",
    "DS", "DNSKEY", "NAPTR", "AXFR", "IXFR",
];

/// The bounded label of a query type.
pub fn qtype_label(qtype: &str) -> &'static str {
    QTYPES
        .iter()
        .find(|t| **t == qtype)
        .copied()
        .unwrap_or("other")
}

/// The bounded label of a query type, without formatting it for the known ones.
pub fn qtype_label_of(qtype: u16) -> &'static str {
    use hickory_proto::rr::RecordType as T;
    match T::from(qtype) {
        T::A => "A",
        T::AAAA => "AAAA",
        T::CNAME => "CNAME",
        T::HTTPS => "HTTPS",
        T::SVCB => "SVCB",
        T::MX => "MX",
        T::TXT => "TXT",
        T::NS => "NS",
        T::SOA => "SOA",
        T::PTR => "PTR",
        T::SRV => "SRV",
        T::CAA => "CAA",
        T::ANY => "ANY",
        T::NAPTR => "NAPTR",
        T::AXFR => "AXFR",
        T::IXFR => "IXFR",
        other => qtype_label(&other.to_string()),
    }
}

/// The label of queries from clients in no view.
pub const NO_VIEW: &str = "_none";
/// The label of denied domains past the per-view cap.
pub const OTHER_DOMAIN: &str = "_other";

/// Response latency buckets, seconds: from a cached or denied answer (tens of µs) to the
/// upstream deadline.
const RESPONSE_BUCKETS: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0,
];
/// Upstream latency buckets, seconds.
const UPSTREAM_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];
/// Kernel admit latency buckets, seconds: the target is ≤ 1 ms at p99.
const ADMIT_BUCKETS: &[f64] = &[
    0.00002, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
];

/// Verdict label values, in the order of [`Verdict::ALL`].
pub const VERDICTS: [&str; 4] = [
    Verdict::ALL[0].as_str(),
    Verdict::ALL[1].as_str(),
    Verdict::ALL[2].as_str(),
    Verdict::ALL[3].as_str(),
];

/// Counter handles of one view, resolved once and reused: a query then costs one map probe for
/// its view and atomic increments, not a label lookup per counter.
pub struct ViewCounters {
    view: String,
    queries: Box<[OnceLock<IntCounter>]>,
    denied: [OnceLock<IntCounter>; Reason::ALL.len()],
    allowed: Mutex<HashMap<String, IntCounter>>,
    names: Mutex<DeniedNames>,
}

/// What a view keeps of its denied names.
#[derive(Default)]
struct DeniedNames {
    /// Registrable domain → its counter (at most `max_denied_domains`, plus `_other`).
    domains: HashMap<String, IntCounter>,
    /// The most denied exact names (made on the first denial).
    top: Option<TopK>,
}

impl ViewCounters {
    fn new(view: &str) -> ViewCounters {
        ViewCounters {
            view: view.to_string(),
            queries: (0..(QTYPES.len() + 1) * VERDICTS.len())
                .map(|_| OnceLock::new())
                .collect(),
            denied: Default::default(),
            allowed: Mutex::new(HashMap::new()),
            names: Mutex::new(DeniedNames::default()),
        }
    }

    /// A denied name: `dnsfence_denied_domains_total{view, domain}` += 1 for its registrable
    /// domain (or `_other` once the view has `max_denied_domains` of them), and the name goes
    /// into the view's top-K. `name` is lower case without the trailing dot.
    /// `domain` is the name's registrable domain (the name itself when it has none).
    pub fn denied_name(&self, m: &Metrics, name: &str, domain: &str) {
        let mut names = lock(&self.names);
        let label =
            if names.domains.contains_key(domain) || names.domains.len() < m.max_denied_domains {
                domain
            } else {
                OTHER_DOMAIN
            };
        match names.domains.get(label) {
            Some(c) => c.inc(),
            None => {
                let c = m.denied_domains.with_label_values(&[&self.view, label]);
                c.inc();
                names.domains.insert(label.to_string(), c);
            }
        }
        names.top.get_or_insert_with(|| TopK::new(TOP_K)).add(name);
    }

    /// `dnsfence_queries_total{view, qtype, verdict}` += 1.
    pub fn query(&self, m: &Metrics, qtype: &'static str, verdict: usize) {
        let slot = QTYPES
            .iter()
            .position(|t| *t == qtype)
            .unwrap_or(QTYPES.len());
        self.queries[slot * VERDICTS.len() + verdict]
            .get_or_init(|| {
                m.queries
                    .with_label_values(&[&self.view, qtype, VERDICTS[verdict]])
            })
            .inc();
    }

    /// `dnsfence_denied_queries_total{view, reason}` += 1.
    pub fn denied(&self, m: &Metrics, reason: Reason) {
        self.denied[reason as usize]
            .get_or_init(|| m.denied.with_label_values(&[&self.view, reason.as_str()]))
            .inc();
    }

    /// `dnsfence_allowed_queries_total{view, endpoint_set}` += 1.
    pub fn allowed(&self, m: &Metrics, endpoint_set: &str) {
        let mut map = lock(&self.allowed);
        match map.get(endpoint_set) {
            Some(c) => c.inc(),
            None => {
                let c = m.allowed.with_label_values(&[&self.view, endpoint_set]);
                c.inc();
                map.insert(endpoint_set.to_string(), c);
            }
        }
    }
}

/// Peer sync's metrics (`peer`: a configured `[[sync.peer]]` name, so the label is bounded).
#[derive(Clone)]
pub struct SyncMetrics {
    /// Whether each link is up.
    pub up: IntGaugeVec,
    /// Elements sent.
    pub sent: IntCounterVec,
    /// Elements received.
    pub received: IntCounterVec,
    /// Elements dropped from a full queue.
    pub dropped: IntCounterVec,
    /// Snapshots sent.
    pub snapshots: IntCounterVec,
    /// Connections and elements refused, by reason (handshake, unknown_peer, protocol,
    /// unknown_view, bad_element, clamped, queue_full, too_many).
    pub refused: IntCounterVec,
    /// Admit-to-receipt lag.
    pub lag: HistogramVec,
}

impl SyncMetrics {
    fn new(r: &Registry) -> SyncMetrics {
        SyncMetrics {
            up: gauge_vec(
                r,
                SYNC_PEER_UP,
                "1 while the sync link to the peer gateway is up.",
                &["peer"],
            ),
            sent: counter_vec(
                r,
                SYNC_SENT,
                "Elements sent to the peer gateway.",
                &["peer"],
            ),
            received: counter_vec(
                r,
                SYNC_RECEIVED,
                "Elements received from the peer gateway.",
                &["peer"],
            ),
            dropped: counter_vec(
                r,
                SYNC_DROPPED,
                "Elements dropped from the peer's full queue (a full snapshot follows).",
                &["peer"],
            ),
            snapshots: counter_vec(
                r,
                SYNC_SNAPSHOTS,
                "Full snapshots sent to the peer gateway (each connection, and after drops).",
                &["peer"],
            ),
            refused: counter_vec(
                r,
                SYNC_REFUSED,
                "Sync connections or elements refused, by reason (handshake, unknown_peer, protocol, unknown_view, bad_element, clamped, queue_full, too_many).",
                &["reason"],
            ),
            lag: histogram_vec(
                r,
                SYNC_LAG,
                "Time from a peer's kernel confirming an element to this gateway receiving it (the gateways' clocks, NTP-synced).",
                &[
                    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0,
                    2.0, 5.0,
                ],
                &["peer"],
            ),
        }
    }
}

/// Every metric handle, registered once.
pub struct Metrics {
    /// The registry `/metrics` encodes.
    pub registry: Registry,
    /// Queries by view, type and verdict.
    pub queries: IntCounterVec,
    /// Denied (and refused) queries by view and reason.
    pub denied: IntCounterVec,
    /// Denied queries by registrable domain, capped per view.
    pub denied_domains: IntCounterVec,
    /// Allowed queries by view and endpoint set.
    pub allowed: IntCounterVec,
    /// Answers served from the cache.
    pub cache_hits: IntCounter,
    /// Answers that needed the upstream.
    pub cache_misses: IntCounter,
    /// Upstream requests by result.
    pub upstream_requests: IntCounterVec,
    /// Upstream latency.
    pub upstream_duration: Histogram,
    /// Response latency by verdict.
    pub response_duration: HistogramVec,
    /// Admits by result.
    pub fence_admits: IntCounterVec,
    /// Admit latency (answer waiting for the kernel).
    pub fence_admit_duration: Histogram,

    /// Config reloads by result.
    pub config_reloads: IntCounterVec,
    /// Upstream records dropped because the CNAME chain did not prove them.
    pub records_dropped: IntCounterVec,
    /// Cache misses that waited for an identical question's resolution.
    pub upstream_coalesced: IntCounter,
    /// Expired answers served because the upstream failed or was slow.
    pub stale_answers: IntCounter,
    /// What a limit turned away, by limit.
    pub overloads: IntCounterVec,
    /// Warm-restart saves and loads by result.
    pub warm_restart: IntCounterVec,
    /// What the start read back from the warm-restart state.
    pub warm_restored: IntGaugeVec,
    /// Readiness per view, family and stage.
    pub family_ready: IntGaugeVec,
    /// Peer sync: links, elements, refusals, lag.
    pub sync: SyncMetrics,

    /// Build information (always 1).
    pub build_info: IntGaugeVec,
    max_denied_domains: usize,
    /// Per view: resolved counter handles.
    views: RwLock<HashMap<String, Arc<ViewCounters>>>,
    /// Response latency per verdict, resolved once.
    response_by_verdict: [Histogram; VERDICTS.len()],
}

impl Metrics {
    /// Sets `dnsfence_family_ready` from a readiness report of the policy in force: series of
    /// views, families or stages it no longer has are removed.
    pub fn set_readiness(&self, report: &crate::catalog::readiness::Report) {
        self.family_ready.reset();
        for v in &report.views {
            for f in &v.families {
                for s in &f.stages {
                    self.family_ready
                        .with_label_values(&[&v.view, &f.family, s.stage])
                        .set(i64::from(s.ready));
                }
            }
        }
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

fn counter_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("metric definition is valid");
    r.register(Box::new(c.clone()))
        .expect("metric registered once");
    c
}

fn counter(r: &Registry, name: &str, help: &str) -> IntCounter {
    let c = IntCounter::new(name, help).expect("metric definition is valid");
    r.register(Box::new(c.clone()))
        .expect("metric registered once");
    c
}

fn gauge_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("metric definition is valid");
    r.register(Box::new(g.clone()))
        .expect("metric registered once");
    g
}

fn histogram_vec(
    r: &Registry,
    name: &str,
    help: &str,
    buckets: &[f64],
    labels: &[&str],
) -> HistogramVec {
    let h = HistogramVec::new(
        HistogramOpts::new(name, help).buckets(buckets.to_vec()),
        labels,
    )
    .expect("metric definition is valid");
    r.register(Box::new(h.clone()))
        .expect("metric registered once");
    h
}

fn histogram(r: &Registry, name: &str, help: &str, buckets: &[f64]) -> Histogram {
    let h = Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets.to_vec()))
        .expect("metric definition is valid");
    r.register(Box::new(h.clone()))
        .expect("metric registered once");
    h
}

/// `dnsfence_build_info{version}`, set to 1 for this build.
fn build_info(r: &Registry) -> IntGaugeVec {
    let g = gauge_vec(
        r,
        BUILD_INFO,
        "dnsfence build information; always 1.",
        &["version"],
    );
    g.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
    g
}

impl Metrics {
    /// Registers every metric. `max_denied_domains` caps the domain label values per view.
    ///
    /// The `expect`s cannot fire: names and labels are constants, registered once each.
    pub fn new(max_denied_domains: usize) -> Metrics {
        let r = Registry::new();
        let response_duration = histogram_vec(
            &r,
            RESPONSE_DURATION,
            "Time from query arrival to answer sent, by verdict.",
            RESPONSE_BUCKETS,
            &["verdict"],
        );
        let response_by_verdict = VERDICTS.map(|v| response_duration.with_label_values(&[v]));
        Metrics {
            queries: counter_vec(
                &r,
                QUERIES,
                "DNS queries by view, query type and verdict.",
                &["view", "qtype", "verdict"],
            ),
            denied: counter_vec(
                &r,
                DENIED,
                "Denied or refused queries by view and reason.",
                &["view", "reason"],
            ),
            denied_domains: counter_vec(
                &r,
                DENIED_DOMAINS,
                "Denied queries by registrable domain (capped per view; the rest are _other).",
                &["view", "domain"],
            ),
            allowed: counter_vec(
                &r,
                ALLOWED,
                "Allowed queries by view and the endpoint set that allowed them.",
                &["view", "endpoint_set"],
            ),
            cache_hits: counter(&r, CACHE_HITS, "Allowed queries answered from the cache."),
            cache_misses: counter(
                &r,
                CACHE_MISSES,
                "Allowed queries that needed the upstream.",
            ),
            upstream_requests: counter_vec(
                &r,
                UPSTREAM_REQUESTS,
                "Upstream requests by result.",
                &["result"],
            ),
            upstream_duration: histogram(
                &r,
                UPSTREAM_DURATION,
                "Upstream request latency.",
                UPSTREAM_BUCKETS,
            ),
            fence_admits: counter_vec(
                &r,
                FENCE_ADMITS,
                "Firewall admits (an answer's addresses into its view's sets) by result.",
                &["result"],
            ),
            fence_admit_duration: histogram(
                &r,
                FENCE_ADMIT_DURATION,
                "Time an answer waited for the kernel to confirm its addresses.",
                ADMIT_BUCKETS,
            ),
            config_reloads: counter_vec(
                &r,
                CONFIG_RELOADS,
                "Configuration reloads by result.",
                &["result"],
            ),
            records_dropped: counter_vec(
                &r,
                RECORDS_DROPPED,
                "Records of upstream answers dropped because the CNAME chain from the question does not prove them, by reason.",
                &["reason"],
            ),
            upstream_coalesced: counter(
                &r,
                UPSTREAM_COALESCED,
                "Cache misses answered by an identical question's upstream resolution.",
            ),
            stale_answers: counter(
                &r,
                STALE_ANSWERS,
                "Expired answers served (RFC 8767) because the upstream failed or did not answer in time.",
            ),
            overloads: counter_vec(
                &r,
                OVERLOAD,
                "Queries or connections turned away at a limit (inflight: upstream resolutions; waiting: queries on the runtime; tcp, tcp_client, http, http_client: connections; http_head_timeout: a request head not sent in time).",
                &["limit"],
            ),
            warm_restart: counter_vec(
                &r,
                WARM_RESTART,
                "Warm-restart state written at a stop (step=save) or read at a start (step=load), by result (ok, missing, foreign, version, corrupt, too_large, io).",
                &["step", "result"],
            ),
            warm_restored: gauge_vec(
                &r,
                WARM_RESTORED,
                "What this start read back: answers into the cache and elements into the fence's ledger from the warm-restart state, and elements adopted from the kernel's sets.",
                &["what"],
            ),
            family_ready: gauge_vec(
                &r,
                FAMILY_READY,
                "1 when the view lets every required endpoint set of this device family's stage through, 0 when it denies something of it (dnsfence readiness says what).",
                &["view", "family", "stage"],
            ),
            sync: SyncMetrics::new(&r),
            build_info: build_info(&r),
            response_by_verdict,
            response_duration,
            views: RwLock::new(HashMap::new()),
            registry: r,
            max_denied_domains,
        }
    }

    /// The most denied exact names of a view, most first.
    pub fn top_denied(&self, view: &str, limit: usize) -> Vec<(String, u64)> {
        let views = crate::base::sync::read(&self.views);
        views
            .get(view)
            .and_then(|v| lock(&v.names).top.as_ref().map(|t| t.top(limit)))
            .unwrap_or_default()
    }

    /// `dnsfence_upstream_records_dropped_total{reason}` += `n`.
    pub fn records_dropped(&self, why: Dropped, n: u32) {
        self.records_dropped
            .with_label_values(&[why.as_str()])
            .inc_by(n.into());
    }

    /// `dnsfence_overload_total{limit}` += 1.
    pub fn overload(&self, limit: &'static str) {
        self.overloads.with_label_values(&[limit]).inc();
    }

    /// Registers a metric whose values live in dnsfence's own state: `read` gives them at every
    /// scrape, one `(label values, value)` per series. Nothing is copied into other counters
    /// between scrapes, so two scrapes at once cannot double a value.
    pub fn register_live(
        &self,
        kind: Kind,
        name: &str,
        help: &str,
        labels: &[&str],
        read: impl Fn() -> Vec<(Vec<String>, f64)> + Send + Sync + 'static,
    ) {
        let labels: Vec<String> = labels.iter().map(|l| l.to_string()).collect();
        let desc = prometheus::core::Desc::new(
            name.to_string(),
            help.to_string(),
            labels.clone(),
            HashMap::new(),
        )
        .expect("metric definition is valid");
        let live = Live {
            kind,
            desc,
            name: name.to_string(),
            help: help.to_string(),
            labels,
            read: Box::new(read),
        };
        self.registry
            .register(Box::new(live))
            .expect("metric registered once");
    }

    /// Observes one response's latency.
    pub fn response(&self, verdict: usize, took: Duration) {
        self.response_by_verdict[verdict.min(VERDICTS.len() - 1)].observe(took.as_secs_f64());
    }

    /// The counter handles of a view (created on first use).
    pub fn view(&self, view: &str) -> Arc<ViewCounters> {
        if let Some(v) = crate::base::sync::read(&self.views).get(view) {
            return v.clone();
        }
        let mut views = crate::base::sync::write(&self.views);
        views
            .entry(view.to_string())
            .or_insert_with(|| Arc::new(ViewCounters::new(view)))
            .clone()
    }
}

/// Whether a live metric counts or measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up.
    Counter,
    /// Goes up and down.
    Gauge,
}

/// A metric read from dnsfence's state at scrape time (see [`Metrics::register_live`]).
struct Live {
    kind: Kind,
    desc: prometheus::core::Desc,
    name: String,
    help: String,
    labels: Vec<String>,
    read: Box<dyn Fn() -> Vec<(Vec<String>, f64)> + Send + Sync>,
}

impl prometheus::core::Collector for Live {
    fn desc(&self) -> Vec<&prometheus::core::Desc> {
        vec![&self.desc]
    }

    fn collect(&self) -> Vec<prometheus::proto::MetricFamily> {
        let labels: Vec<&str> = self.labels.iter().map(String::as_str).collect();
        let opts = Opts::new(&self.name, &self.help);
        let values = (self.read)();
        fn with(v: &[String]) -> Vec<&str> {
            v.iter().map(String::as_str).collect()
        }
        // A fresh family each scrape, holding the values as they are now.
        match self.kind {
            Kind::Counter => {
                let Ok(family) = prometheus::CounterVec::new(opts, &labels) else {
                    return Vec::new();
                };
                for (v, n) in &values {
                    family.with_label_values(&with(v)).inc_by(*n);
                }
                family.collect()
            }
            Kind::Gauge => {
                let Ok(family) = prometheus::GaugeVec::new(opts, &labels) else {
                    return Vec::new();
                };
                for (v, n) in &values {
                    family.with_label_values(&with(v)).set(*n);
                }
                family.collect()
            }
        }
    }
}

/// Names tracked per view for `/v1/denied`.
pub const TOP_K: usize = 512;

/// A bounded heavy-hitters counter (Space-Saving, Metwally et al. 2005): at most `capacity`
/// names; a new name replaces the least counted one and inherits its count as error bound, so
/// the names that are really frequent stay and their counts are never under-estimated.
///
/// Built for denial floods of random names (a tunnel, a DGA), where nearly every query brings a
/// new name: the slots' strings are reused, and the least counted slots are found by one scan
/// per `capacity` replacements (the `victims` list), not one scan per name. Names are looked up
/// by a keyed 64-bit hash; a name whose hash collides with another counted name's (odds about
/// 2^-55 per name at 512 slots) is not counted.
#[derive(Debug)]
pub struct TopK {
    capacity: usize,
    slots: Vec<TopSlot>,
    /// Slot of each counted name, by the name's hash.
    index: rustc_hash::FxHashMap<u64, usize>,
    /// Keyed (SipHash) so that clients cannot aim names at one bucket.
    hasher: std::hash::RandomState,
    /// Slots that held the least count, `victims_count`, at the last scan. Counts only grow and a
    /// new name enters above that count, so a listed slot still at it is still a least one.
    victims: Vec<usize>,
    victims_count: u64,
}

#[derive(Debug)]
struct TopSlot {
    name: String,
    hash: u64,
    count: u64,
}

impl TopK {
    /// An empty counter of `capacity` names.
    pub fn new(capacity: usize) -> TopK {
        TopK {
            capacity,
            slots: Vec::with_capacity(capacity),
            index: rustc_hash::FxHashMap::default(),
            hasher: std::hash::RandomState::new(),
            victims: Vec::with_capacity(capacity),
            victims_count: 0,
        }
    }

    /// Counts one occurrence of `name`.
    pub fn add(&mut self, name: &str) {
        let hash = self.hasher.hash_one(name);
        if let Some(&i) = self.index.get(&hash) {
            let slot = &mut self.slots[i];
            if slot.name == name {
                slot.count += 1;
            }
            return;
        }
        if self.slots.len() < self.capacity {
            self.index.insert(hash, self.slots.len());
            self.slots.push(TopSlot {
                name: name.to_string(),
                hash,
                count: 1,
            });
            return;
        }
        let Some(i) = self.victim() else {
            return;
        };
        let slot = &mut self.slots[i];
        self.index.remove(&slot.hash);
        slot.name.clear();
        slot.name.push_str(name);
        slot.hash = hash;
        slot.count += 1;
        self.index.insert(hash, i);
    }

    /// A slot with the least count (None only when there are no slots).
    fn victim(&mut self) -> Option<usize> {
        loop {
            while let Some(i) = self.victims.pop() {
                if self.slots[i].count == self.victims_count {
                    return Some(i);
                }
            }
            let least = self.slots.iter().map(|s| s.count).min()?;
            self.victims_count = least;
            self.victims.extend(
                self.slots
                    .iter()
                    .enumerate()
                    .filter(|(_, s)| s.count == least)
                    .map(|(i, _)| i),
            );
        }
    }

    /// The `limit` most counted names, most first (ties by name).
    pub fn top(&self, limit: usize) -> Vec<(String, u64)> {
        let mut v: Vec<(String, u64)> = self
            .slots
            .iter()
            .map(|s| (s.name.clone(), s.count))
            .collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        v.truncate(limit);
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topk_keeps_heavy_hitters() {
        // Space-Saving keeps every name seen more than N/capacity times, and never under-counts.
        let mut t = TopK::new(16);
        for i in 0..500 {
            t.add("a.example");
            if i % 5 < 2 {
                t.add("b.example");
            }
            if i < 200 {
                t.add(&format!("noise{i}.example"));
            }
        }
        let top = t.top(2);
        assert_eq!(top[0].0, "a.example");
        assert!(top[0].1 >= 500);
        assert_eq!(top[1].0, "b.example");
        assert!(top[1].1 >= 200 && top[1].1 <= 200 + 900 / 16, "{top:?}");
        assert_eq!(t.top(100).len(), 16);
    }

    #[test]
    fn topk_under_a_flood_of_new_names() {
        // Space-Saving's guarantees, checked against exact counts: the counts add up to the
        // stream's length, none is below the name's true count, and every name seen more than
        // N/capacity times is kept.
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut t = TopK::new(64);
        let mut truth: HashMap<String, u64> = HashMap::new();
        let n = 50_000u64;
        for i in 0..n {
            let name = match i % 10 {
                0 | 1 => "tunnel.example".to_string(),
                2 => format!("warm{}.example", next() % 8),
                _ => format!("{:x}.dga.example", next()),
            };
            t.add(&name);
            *truth.entry(name).or_default() += 1;
        }
        let top = t.top(usize::MAX);
        assert_eq!(top.len(), 64);
        assert_eq!(top.iter().map(|(_, c)| c).sum::<u64>(), n);
        for (name, count) in &top {
            assert!(*count >= truth[name], "{name}: {count} < {}", truth[name]);
        }
        for (name, count) in &truth {
            if *count > n / 64 {
                assert!(top.iter().any(|(k, _)| k == name), "{name} ({count}) lost");
            }
        }
        assert_eq!(top[0].0, "tunnel.example");
    }

    /// A denied name counted as the query path counts it.
    fn deny(m: &Metrics, view: &str, name: &str) {
        let domain = psl::domain_str(name).unwrap_or(name);
        m.view(view).denied_name(m, name, domain);
    }

    #[test]
    fn domain_labels_are_capped_per_view() {
        let m = Metrics::new(2);
        for d in [
            "x.evil.co.uk",
            "y.evil.co.uk",
            "a.other.com",
            "third.net",
            "fourth.org",
        ] {
            deny(&m, "kiosk", d);
        }
        deny(&m, "lab", "fourth.org");
        let get = |v: &str, d: &str| m.denied_domains.with_label_values(&[v, d]).get();
        assert_eq!(get("kiosk", "evil.co.uk"), 2, "public-suffix aware");
        assert_eq!(get("kiosk", "other.com"), 1);
        assert_eq!(get("kiosk", OTHER_DOMAIN), 2);
        assert_eq!(get("lab", "fourth.org"), 1, "the cap is per view");
        assert_eq!(qtype_label("AAAA"), "AAAA");
        assert_eq!(qtype_label("TYPE65534"), "other");
    }
}
