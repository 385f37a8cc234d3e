//! Upstream resolution of allowed names: hickory-resolver behind hickory-resolver's response cache.
//!
//! The cache is a [`ResponseCache`] we own rather than the one hidden inside the resolver, for one
//! reason: the server must know whether an answer was a cache hit (the query log says so, and the
//! firewall refreshes elements on hits). The resolver's internal cache is therefore sized to zero,
//! and every miss goes upstream exactly once. TTL bounds, TTL count-down and negative caching are
//! the cache's own behaviour.
//!
//! Every resolution is bounded by the configured deadline; past it the caller answers SERVFAIL.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use hickory_resolver::config::{
    ConnectionConfig, NameServerConfig, ProtocolConfig, ResolveHosts, ResolverConfig, ResolverOpts,
};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError, NetError, NoRecords};
use hickory_resolver::proto::op::{Message, Query, ResponseCode};
use hickory_resolver::proto::rr::{Name, Record, RecordType};
use hickory_resolver::{ResponseCache, TokioResolver, TtlConfig};

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
}

/// The upstream resolvers and the answer cache.
pub struct Upstream {
    /// Forwards to the configured servers; its own cache is sized to zero.
    resolver: TokioResolver,
    /// Our answer cache (hickory's type): positive and negative answers, TTL-bounded.
    cache: ResponseCache,
    /// Deadline of one resolution.
    timeout: Duration,
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
        opts.positive_min_ttl = Some(config.positive_min_ttl);
        opts.positive_max_ttl = Some(config.positive_max_ttl);
        opts.negative_min_ttl = Some(config.negative_min_ttl);
        opts.negative_max_ttl = Some(config.negative_max_ttl);
        let cache = ResponseCache::new(config.cache_size, TtlConfig::from_opts(&opts));
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
        })
    }

    /// Resolves `name`/`qtype`, from the cache when it can, else upstream within the deadline.
    /// `name` must be fully qualified (it is, coming off the wire).
    pub async fn resolve(&self, name: &Name, qtype: RecordType) -> Resolved {
        let query = Query::query(name.clone(), qtype);
        let now = Instant::now();
        if let Some(cached) = self.cache.get(&query, now) {
            return Resolved {
                result: resolution(cached),
                cache_hit: true,
            };
        }
        let result =
            match tokio::time::timeout(self.timeout, self.resolver.lookup(name.clone(), qtype))
                .await
            {
                Err(_) => Err(UpstreamError::Timeout(self.timeout)),
                Ok(Ok(lookup)) => {
                    let message = lookup.message().clone();
                    self.cache.insert(query.clone(), Ok(message.clone()), now);
                    // Read back so the first answer carries the same TTL bounds as later hits.
                    resolution(self.cache.get(&query, now).unwrap_or(Ok(message)))
                }
                Ok(Err(NetError::Dns(DnsError::NoRecordsFound(no_records)))) => {
                    let err = || NetError::Dns(DnsError::NoRecordsFound(no_records.clone()));
                    self.cache.insert(query.clone(), Err(err()), now);
                    resolution(self.cache.get(&query, now).unwrap_or_else(|| Err(err())))
                }
                Ok(Err(NetError::Timeout)) => Err(UpstreamError::Timeout(self.timeout)),
                Ok(Err(e)) => Err(UpstreamError::Failed(e.to_string())),
            };
        Resolved {
            result,
            cache_hit: false,
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
