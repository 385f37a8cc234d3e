//! Upstream resolution of allowed names: hickory-resolver (UDP with TCP fallback, CNAME chasing)
//! behind our [`AnswerCache`].
//!
//! The resolver's internal cache is sized to zero so that every miss of ours goes upstream exactly
//! once and every hit is known to be one (see `cache.rs` for why the cache is ours). Every
//! resolution is bounded by the configured deadline; past it the caller answers SERVFAIL.
//!
//! Health: the time of the last answer and of the last failure are kept, and [`Upstream::probe`]
//! asks the root's NS when nothing else has reached the upstream lately, so readiness reflects the
//! upstream even on an idle network.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{
    ConnectionConfig, NameServerConfig, ProtocolConfig, ResolveHosts, ResolverConfig, ResolverOpts,
};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError, NetError, NoRecords};
use hickory_resolver::proto::op::{Message, ResponseCode};
use hickory_resolver::proto::rr::{LowerName, Name, Record, RecordType};

use crate::cache::{AnswerCache, TtlBounds};
use crate::config::UpstreamConfig;

/// Why an allowed name could not be answered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpstreamError {
    /// No upstream answered within the deadline.
    #[error("upstream timed out after {0:?}")]
    Timeout(Duration),
    /// The upstream answered with an error or the exchange failed.
    #[error("upstream failed: {0}")]
    Failed(String),
}

impl UpstreamError {
    /// A bounded label for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            UpstreamError::Timeout(_) => "timeout",
            UpstreamError::Failed(_) => "error",
        }
    }
}

/// A usable upstream answer.
#[derive(Debug, Clone)]
pub enum Resolution {
    /// Records (the CNAME chain and the final records), with any authority records.
    Records {
        /// Answer section.
        answers: Vec<Record>,
        /// Authority section.
        authorities: Vec<Record>,
    },
    /// The name does not exist (NXDOMAIN) or has no records of the type (NODATA, NOERROR).
    Negative {
        /// NXDOMAIN or NOERROR.
        rcode: ResponseCode,
        /// The zone's SOA, for the authority section (RFC 2308), when the upstream sent one.
        soa: Option<Box<Record>>,
    },
}

/// The outcome of [`Upstream::resolve`].
#[derive(Debug)]
pub struct Resolved {
    /// The answer, or why there is none.
    pub result: Result<Resolution, UpstreamError>,
    /// Whether it came from the cache without asking upstream.
    pub cache_hit: bool,
    /// On a miss: how long the upstream took and a bounded label of how it went
    /// (`answer`, `nxdomain`, `nodata`, `timeout`, `error`).
    pub upstream: Option<(Duration, &'static str)>,
}

/// The upstream resolvers and the answer cache.
pub struct Upstream {
    /// Forwards to the configured servers; its own cache is sized to zero.
    resolver: TokioResolver,
    /// Positive and negative answers, TTL-bounded.
    cache: AnswerCache,
    /// Deadline of one resolution.
    timeout: Duration,
    /// Reference point of the two health stamps below.
    started: Instant,
    /// Milliseconds after `started` of the last upstream response (+1; 0 = never).
    last_ok_ms: AtomicU64,
    /// Milliseconds after `started` of the last failure (+1; 0 = never).
    last_fail_ms: AtomicU64,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl Upstream {
    /// Builds the resolver for `config.servers` (UDP, with TCP on truncation) and the cache.
    pub fn new(config: &UpstreamConfig) -> Result<Upstream, UpstreamError> {
        let servers = config.servers.iter().map(name_server).collect();
        let mut opts = ResolverOpts::default();
        opts.timeout = config.timeout;
        opts.attempts = 1;
        opts.cache_size = 0;
        opts.ndots = 0;
        opts.use_hosts_file = ResolveHosts::Never;
        opts.preserve_intermediates = true;
        opts.edns0 = true;
        let cache = AnswerCache::new(
            usize::try_from(config.cache_size).unwrap_or(usize::MAX),
            TtlBounds {
                positive_min: config.positive_min_ttl,
                positive_max: config.positive_max_ttl,
                negative_min: config.negative_min_ttl,
                negative_max: config.negative_max_ttl,
            },
        );
        let resolver = TokioResolver::builder_with_config(
            ResolverConfig::from_name_servers(servers),
            TokioRuntimeProvider::default(),
        )
        .with_options(opts)
        .build()
        .map_err(|e| UpstreamError::Failed(e.to_string()))?;
        Ok(Upstream {
            resolver,
            cache,
            timeout: config.timeout,
            started: Instant::now(),
            last_ok_ms: AtomicU64::new(0),
            last_fail_ms: AtomicU64::new(0),
        })
    }

    /// Answers held by the cache.
    pub fn cache_entries(&self) -> usize {
        self.cache.len()
    }

    /// The answer cache, which the UDP fast path reads directly.
    pub fn cache(&self) -> &AnswerCache {
        &self.cache
    }

    fn stamp(&self, ok: bool) {
        let ms = self.started.elapsed().as_millis() as u64 + 1;
        if ok {
            self.last_ok_ms.store(ms, Ordering::Relaxed);
        } else {
            self.last_fail_ms.store(ms, Ordering::Relaxed);
        }
    }

    /// Whether the upstream answered within `within` and has not failed since.
    pub fn healthy(&self, within: Duration) -> bool {
        let ok = self.last_ok_ms.load(Ordering::Relaxed);
        let fail = self.last_fail_ms.load(Ordering::Relaxed);
        let now = self.started.elapsed().as_millis() as u64 + 1;
        ok != 0 && ok >= fail && now.saturating_sub(ok) <= within.as_millis() as u64
    }

    /// Time since the upstream last answered, if it ever did.
    pub fn since_last_answer(&self) -> Option<Duration> {
        let ok = self.last_ok_ms.load(Ordering::Relaxed);
        (ok != 0).then(|| {
            self.started
                .elapsed()
                .saturating_sub(Duration::from_millis(ok - 1))
        })
    }

    /// Asks the upstream for the root's NS, bypassing the cache, when nothing has reached it in
    /// `idle`. Any DNS response counts as alive (even REFUSED: it answered); a timeout or a
    /// network error does not.
    pub async fn probe(&self, idle: Duration) {
        if self.since_last_answer().is_some_and(|d| d < idle) && self.healthy(idle) {
            return;
        }
        let lookup = self.resolver.lookup(Name::root(), RecordType::NS);
        let alive = match tokio::time::timeout(self.timeout, lookup).await {
            Ok(Ok(_)) => true,
            Ok(Err(NetError::Dns(_))) => true,
            Ok(Err(_)) | Err(_) => false,
        };
        self.stamp(alive);
    }

    /// Resolves `name`/`qtype`, from the cache when it can, else upstream within the deadline.
    pub async fn resolve(&self, name: &LowerName, qtype: RecordType) -> Resolved {
        let now = Instant::now();
        let mut buf = [0u8; 256];
        if let Some(wire) = crate::cache::name_wire(name, &mut buf)
            && let Some(entry) = self.cache.get(wire, u16::from(qtype), now)
            && let Some(cached) = entry.resolution(now)
        {
            return Resolved {
                result: Ok(cached),
                cache_hit: true,
                upstream: None,
            };
        }
        let fqdn: Name = (**name).clone();
        let lookup = self.resolver.lookup(fqdn, qtype);
        let (result, label) = match tokio::time::timeout(self.timeout, lookup).await {
            Err(_) | Ok(Err(NetError::Timeout)) => {
                (Err(UpstreamError::Timeout(self.timeout)), "timeout")
            }
            Ok(Ok(lookup)) => (resolution(Ok(lookup.message().clone())), "answer"),
            Ok(Err(e @ NetError::Dns(DnsError::NoRecordsFound(_)))) => {
                let r = resolution(Err(e));
                let label = match &r {
                    Ok(Resolution::Negative {
                        rcode: ResponseCode::NXDomain,
                        ..
                    }) => "nxdomain",
                    _ => "nodata",
                };
                (r, label)
            }
            Ok(Err(e)) => (Err(UpstreamError::Failed(e.to_string())), "error"),
        };
        let took = now.elapsed();
        // A response, even an error code, shows the upstream alive; silence or a broken
        // exchange does not.
        self.stamp(!matches!(label, "timeout" | "error"));
        let result = result.map(|mut r| {
            self.cache.insert(name, qtype, &mut r, now);
            r
        });
        Resolved {
            result,
            cache_hit: false,
            upstream: Some((took, label)),
        }
    }
}

fn name_server(addr: &SocketAddr) -> NameServerConfig {
    let conn = |protocol| {
        let mut c = ConnectionConfig::new(protocol);
        c.port = addr.port();
        c
    };
    NameServerConfig::new(
        addr.ip(),
        true,
        vec![conn(ProtocolConfig::Udp), conn(ProtocolConfig::Tcp)],
    )
}

fn resolution(result: Result<Message, NetError>) -> Result<Resolution, UpstreamError> {
    match result {
        Ok(message) => Ok(Resolution::Records {
            answers: message.answers,
            authorities: message.authorities,
        }),
        Err(NetError::Dns(DnsError::NoRecordsFound(NoRecords {
            response_code, soa, ..
        }))) => Ok(Resolution::Negative {
            rcode: if response_code == ResponseCode::NXDomain {
                ResponseCode::NXDomain
            } else {
                ResponseCode::NoError
            },
            soa: soa.map(|s| Box::new(s.into_record_of_rdata())),
        }),
        Err(e) => Err(UpstreamError::Failed(e.to_string())),
    }
}
