//! The metrics whose values live in dnsfence's own state — the query log's counters, the
//! fence's ledger and stats, the upstream servers' health, the cache, the catalog sources —
//! registered here as collectors read at every scrape, so nothing is copied into other counters
//! between scrapes and two scrapes at once cannot double a value.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use arc_swap::ArcSwap;

use super::{Kind, Metrics};
use crate::catalog::source::follow;
use crate::fence::Fence;
use crate::query::log::QueryLog;
use crate::resolve::cache::AnswerCache;
use crate::resolve::upstream::Upstream;

/// The state the live metrics read.
pub struct Watched {
    /// The query log (lines dropped and sampled out).
    pub log: QueryLog,
    /// The fence, when on (elements per set, re-admits, resyncs).
    pub fence: Option<Arc<Fence>>,
    /// The upstream pool, as swapped by reloads (per-server health, resolutions in flight).
    pub upstream: Arc<ArcSwap<Upstream>>,
    /// A server is up while it answered within this long.
    pub upstream_fresh: Duration,
    /// The answer cache (entries).
    pub cache: Arc<AnswerCache>,
    /// The catalog sources followed (fetches, last success, version, rejected entries).
    pub sources: Arc<follow::Sources>,
}

impl Metrics {
    /// Registers every live metric over `w`. Once per registry.
    pub fn watch(&self, w: Watched) {
        self.watch_state(&w);
        self.watch_upstream(&w);
        self.watch_sets(&w);
        self.watch_sources(&w);
    }

    /// The query log's lost and sampled lines; the fence's re-admits and resyncs.
    fn watch_state(&self, w: &Watched) {
        let one = |n: u64| vec![(Vec::new(), n as f64)];
        let l = w.log.clone();
        self.register_live(
            Kind::Counter,
            super::QUERYLOG_DROPPED,
            "Query-log lines lost: the queue was full or a write failed (disk full).",
            &[],
            move || one(l.dropped()),
        );
        let l = w.log.clone();
        self.register_live(
            Kind::Counter,
            super::QUERYLOG_SAMPLED,
            "Query-log lines left out by sampling (summarized in sampled_out lines).",
            &[],
            move || one(l.sampled()),
        );
        let stats = w.fence.as_deref().map(Fence::shared_stats);
        let s = stats.clone();
        self.register_live(
            Kind::Counter,
            super::FENCE_READMITS,
            "Elements written again before a cached answer because they were stale or unconfirmed.",
            &[],
            move || {
                one(s
                    .as_ref()
                    .map_or(0, |s| s.readmits_cache_hit.load(Ordering::Relaxed)))
            },
        );
        let s = stats.clone();
        self.register_live(
            Kind::Counter,
            super::FENCE_BATCHES,
            "Netlink transactions of admitted elements, by who wrote them: the thread that ended a pass of the runtime (pass_end), or the fence thread (fence_thread: the socket was busy, or the kernel refused a batch and each admit is tried alone).",
            &["by"],
            move || {
                let Some(s) = &s else { return Vec::new() };
                [("pass_end", &s.batches_at_pass_end), ("fence_thread", &s.batches)]
                    .into_iter()
                    .map(|(by, v)| (vec![by.to_string()], v.load(Ordering::Relaxed) as f64))
                    .collect()
            },
        );
        self.register_live(
            Kind::Counter,
            super::FENCE_RESYNCS,
            "Restorations of the table, sets and live elements, by reason.",
            &["reason"],
            move || {
                let Some(s) = &stats else { return Vec::new() };
                [
                    ("missing", &s.resyncs_missing),
                    ("write_failed", &s.resyncs_write_failure),
                    ("failed", &s.resync_failures),
                ]
                .into_iter()
                .map(|(r, v)| (vec![r.to_string()], v.load(Ordering::Relaxed) as f64))
                .collect()
            },
        );
    }

    /// Per upstream server, labelled as configured (a bounded set); resolutions in flight.
    fn watch_upstream(&self, w: &Watched) {
        let fresh = w.upstream_fresh;
        type Pick = fn(&crate::resolve::upstream::ServerHealth) -> f64;
        let per_server: [(Kind, &str, &str, Pick); 4] = [
            (
                Kind::Counter,
                super::SERVER_ANSWERS,
                "Exchanges each upstream server answered (NXDOMAIN and NODATA included).",
                |h| h.answers as f64,
            ),
            (
                Kind::Counter,
                super::SERVER_FAILURES,
                "Exchanges with each upstream server that failed (timeout, network, SERVFAIL, REFUSED); the next server is then tried.",
                |h| h.failures as f64,
            ),
            (
                Kind::Gauge,
                super::SERVER_UP,
                "1 when the upstream server answered recently and has not failed since.",
                |h| f64::from(u8::from(h.healthy)),
            ),
            (
                Kind::Gauge,
                super::SERVER_SRTT,
                "Smoothed round-trip time to each upstream server.",
                |h| h.srtt.as_secs_f64(),
            ),
        ];
        for (kind, name, help, pick) in per_server {
            let u = w.upstream.clone();
            self.register_live(kind, name, help, &["server"], move || {
                u.load()
                    .health(fresh)
                    .iter()
                    .map(|h| (vec![h.label.clone()], pick(h)))
                    .collect()
            });
        }
        let u = w.upstream.clone();
        self.register_live(
            Kind::Counter,
            super::UDP_SOCKETS_OPENED,
            "Plain-UDP sockets opened to each upstream server: the first ones, then one per rotation to a new random port.",
            &["server"],
            move || {
                u.load()
                    .health(fresh)
                    .iter()
                    .filter(|h| h.udp_sockets_opened > 0)
                    .map(|h| (vec![h.label.clone()], h.udp_sockets_opened as f64))
                    .collect()
            },
        );
        let u = w.upstream.clone();
        self.register_live(
            Kind::Counter,
            super::REPLIES_DROPPED,
            "Plain-UDP replies dropped: from another address or port (source), with an ID no query waits for (id) or one that gave up (late), another question or the name in another case (question), not a DNS response (malformed).",
            &["server", "reason"],
            move || {
                u.load()
                    .health(fresh)
                    .iter()
                    .flat_map(|h| {
                        h.replies_dropped
                            .iter()
                            .map(|(reason, n)| (vec![h.label.clone(), reason.to_string()], *n as f64))
                            .collect::<Vec<_>>()
                    })
                    .collect()
            },
        );
    }

    /// The cache's entries, and the fence's elements per set.
    fn watch_sets(&self, w: &Watched) {
        let c = w.cache.clone();
        self.register_live(
            Kind::Gauge,
            super::CACHE_ENTRIES,
            "Answers held by the cache.",
            &[],
            move || vec![(Vec::new(), c.len() as f64)],
        );
        let u = w.upstream.clone();
        self.register_live(
            Kind::Gauge,
            super::UPSTREAM_INFLIGHT,
            "Distinct resolutions waiting for the upstream.",
            &[],
            move || vec![(Vec::new(), u.load().inflight() as f64)],
        );
        for (name, help, would_deny) in [
            (
                super::FENCE_ELEMENTS,
                "Live elements dnsfence keeps in each dynamic firewall set.",
                false,
            ),
            (
                super::FENCE_WOULD_DENY,
                "Live elements that only report-mode answers the allowlist would deny put in a set.",
                true,
            ),
        ] {
            let fence = w.fence.clone();
            self.register_live(Kind::Gauge, name, help, &["view", "set"], move || {
                let Some(fence) = &fence else {
                    return Vec::new();
                };
                fence
                    .sets()
                    .iter()
                    .enumerate()
                    .map(|(i, set)| {
                        let (all, denied) = fence.element_count(i);
                        let n = if would_deny { denied } else { all };
                        (vec![set.view.clone(), set.name.clone()], n as f64)
                    })
                    .collect()
            });
        }
    }

    fn watch_sources(&self, w: &Watched) {
        use follow::RESULTS;
        let per_source = |read: fn(&follow::SourceStatus) -> Option<f64>| {
            let s = w.sources.clone();
            move || {
                s.followed
                    .iter()
                    .filter_map(|f| read(f).map(|v| (vec![f.kind.as_str().to_string()], v)))
                    .collect()
            }
        };
        let s = w.sources.clone();
        self.register_live(
            Kind::Counter,
            super::CATALOG_FETCHES,
            "Fetches of each followed catalog source, by result (ok: a new overlay applied).",
            &["source", "result"],
            move || {
                s.followed
                    .iter()
                    .flat_map(|f| {
                        RESULTS.iter().zip(&f.fetches).map(|(r, n)| {
                            (
                                vec![f.kind.as_str().to_string(), r.to_string()],
                                n.load(Ordering::Relaxed) as f64,
                            )
                        })
                    })
                    .collect()
            },
        );
        self.register_live(
            Kind::Gauge,
            super::CATALOG_LAST_SUCCESS,
            "When each followed catalog source last answered usefully (0: never).",
            &["source"],
            per_source(|f| Some(f.last_success.load(Ordering::Relaxed) as f64)),
        );
        self.register_live(
            Kind::Gauge,
            super::CATALOG_VERSION,
            "Version of each catalog source that has one (the feed's YYYYMMDDNN, the page's date \
         as YYYYMMDD).",
            &["source"],
            per_source(|f| f.version_number()),
        );
        self.register_live(
            Kind::Gauge,
            super::CATALOG_REJECTED,
            "Entries of each followed source in force that failed validation and were left out.",
            &["source"],
            per_source(|f| Some(f.rejected.load(Ordering::Relaxed) as f64)),
        );
    }
}
