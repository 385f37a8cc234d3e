//! Upstream resolution of allowed names through hickory-resolver's name-server pool.
//!
//! Why the pool and not `Resolver::lookup`: the resolver's lookup chases CNAMEs itself and turns
//! NODATA and NXDOMAIN into errors, so a CNAME chain that ends in NODATA lost its CNAMEs, and it
//! asked the upstream for the chain's target with the client's type even when the upstream had
//! already said the target has none. The pool sends exactly the client's question and hands back
//! the upstream's message whole; it still does what a pool should (UDP with TCP on truncation,
//! server selection by smoothed RTT, identical in-flight questions sent once).
//!
//! The answer is then checked against the CNAME chain from the question (`answer.rs`): only what
//! the chain proves is kept. It is final unless the chain dangles (an authority-style upstream
//! answered only the CNAME into another zone): then the target is asked, as a recursive resolver
//! does (RFC 1034 §4.3.2), within the same deadline.
//!
//! Bounded: identical questions in flight share one resolution (the first asks, the others wait
//! for its outcome), and at most `max_inflight` distinct ones wait for the upstream at once; a
//! flood of random names under an allowed wildcard then costs a bounded map and that many
//! sockets, not one of each per query.
//!
//! Health: the time of the last answer and of the last failure are kept, and [`Upstream::probe`]
//! asks the root's NS when nothing else has reached the upstream lately, so readiness reflects
//! the upstream even on an idle network.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ProtocolConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::xfer::{DnsHandle, FirstAnswer};
use hickory_resolver::net::{DnsError, NetError, NoRecords};
use hickory_resolver::proto::op::{DnsRequestOptions, Query, ResponseCode};
use hickory_resolver::proto::rr::{Name, RecordType};
use hickory_resolver::{NameServerPool, PoolContext, TlsConfig};

use tokio::sync::watch;

use crate::answer::{ChainError, Checked, Resolution};
use crate::config::UpstreamConfig;

/// The UDP payload size dnsfence advertises upstream (RFC 9715, DNS flag day 2020).
const UPSTREAM_PAYLOAD: u16 = 1232;

/// Why an allowed name could not be answered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpstreamError {
    /// No upstream answered within the deadline.
    #[error("upstream timed out after {0:?}")]
    Timeout(Duration),
    /// The upstream answered with an error or the exchange failed.
    #[error("upstream failed: {0}")]
    Failed(String),
    /// The answer's CNAME chain loops or is too long.
    #[error("upstream answer refused: {0}")]
    Chain(#[from] ChainError),
    /// `max_inflight` distinct resolutions are already waiting for the upstream.
    #[error("{0} upstream resolutions already in flight")]
    Overloaded(usize),
}

impl UpstreamError {
    /// A bounded label for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            UpstreamError::Timeout(_) => "timeout",
            UpstreamError::Failed(_) => "error",
            UpstreamError::Chain(_) => "bad_chain",
            UpstreamError::Overloaded(_) => "overloaded",
        }
    }
}

/// The outcome of [`Upstream::resolve`].
#[derive(Debug, Clone)]
pub struct Resolved {
    /// The chain-checked answer, or why there is none.
    pub result: Result<Checked, UpstreamError>,
    /// How long the upstream took, all follow-ups included.
    pub took: Duration,
    /// A bounded label of how it went (`answer`, `nxdomain`, `nodata`, `timeout`, `error`,
    /// `bad_chain`, `overloaded`).
    pub label: &'static str,
    /// It waited for another query's identical resolution instead of asking the upstream.
    pub coalesced: bool,
}

/// A question in flight: the lower-case name and the type (view-independent: every view gets
/// the same upstream answer; dnsfence sends neither DO nor CD upstream).
type Question = (Name, RecordType);

/// Resolutions in flight, by question: the first query asks the upstream, identical ones wait
/// for its outcome. At most `max` at once.
struct Inflight {
    map: std::sync::Mutex<HashMap<Question, watch::Receiver<Option<Resolved>>>>,
    max: usize,
}

/// What a query is to do about its question.
enum Role {
    /// Ask the upstream, and tell the others through the guard.
    Lead(Lead),
    /// Wait for the leader's outcome.
    Follow(watch::Receiver<Option<Resolved>>),
}

/// The leader's duty: publish the outcome and leave the map, also when its future is dropped
/// (the client's TCP connection closed): the followers then get a failure, never a hang.
struct Lead {
    inflight: Arc<Inflight>,
    question: Question,
    tx: watch::Sender<Option<Resolved>>,
    done: bool,
}

impl Lead {
    fn finish(mut self, outcome: &Resolved) {
        self.tx.send_replace(Some(outcome.clone()));
        self.done = true;
    }
}

impl Drop for Lead {
    fn drop(&mut self) {
        lock(&self.inflight.map).remove(&self.question);
        if !self.done {
            self.tx.send_replace(Some(Resolved {
                result: Err(UpstreamError::Failed("the resolution was abandoned".into())),
                took: Duration::ZERO,
                label: "error",
                coalesced: true,
            }));
        }
    }
}

impl Inflight {
    fn role(self: &Arc<Self>, question: &Question) -> Result<Role, UpstreamError> {
        let mut map = lock(&self.map);
        if let Some(rx) = map.get(question) {
            return Ok(Role::Follow(rx.clone()));
        }
        if map.len() >= self.max {
            return Err(UpstreamError::Overloaded(self.max));
        }
        let (tx, rx) = watch::channel(None);
        map.insert(question.clone(), rx);
        Ok(Role::Lead(Lead {
            inflight: self.clone(),
            question: question.clone(),
            tx,
            done: false,
        }))
    }
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Held for one map operation; a panic elsewhere leaves the map usable.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The settings an upstream pool is built with: a change to any of them builds a new pool.
pub type PoolSettings = (Vec<SocketAddr>, Duration, usize);

/// The upstream servers.
pub struct Upstream {
    /// What it was built from.
    settings: PoolSettings,
    pool: NameServerPool<TokioRuntimeProvider>,
    /// Resolutions in flight, shared by identical questions, bounded.
    inflight: Arc<Inflight>,
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
    /// Builds the pool for `config.servers` (UDP, with TCP on truncation).
    pub fn new(config: &UpstreamConfig) -> Result<Upstream, UpstreamError> {
        let servers: Vec<NameServerConfig> = config.servers.iter().map(name_server).collect();
        let mut opts = ResolverOpts::default();
        opts.timeout = config.timeout;
        opts.attempts = 1;
        opts.edns0 = true;
        // 0x20: the question's letters in random case, and a reply whose question differs in
        // case is not used (it is retried over TCP). With hickory's random source port per query
        // and random IDs, an off-path spoofer has to guess all three.
        opts.case_randomization = true;
        let tls = TlsConfig::new().map_err(|e| UpstreamError::Failed(e.to_string()))?;
        let cx = Arc::new(PoolContext::new(opts, tls));
        let pool = NameServerPool::from_config(servers, cx, TokioRuntimeProvider::default());
        Ok(Upstream {
            settings: config.pool_settings(),
            pool,
            inflight: Arc::new(Inflight {
                map: std::sync::Mutex::new(HashMap::new()),
                max: config.max_inflight,
            }),
            timeout: config.timeout,
            started: Instant::now(),
            last_ok_ms: AtomicU64::new(0),
            last_fail_ms: AtomicU64::new(0),
        })
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

    /// Asks the upstream for the root's NS when nothing has reached it in `idle`. Any DNS
    /// response counts as alive (even REFUSED: it answered); a timeout or a network error does
    /// not.
    pub async fn probe(&self, idle: Duration) {
        if self.since_last_answer().is_some_and(|d| d < idle) && self.healthy(idle) {
            return;
        }
        let alive = match self.exchange(&Name::root(), RecordType::NS).await {
            Ok(_) => true,
            Err(NetError::Dns(_)) => true,
            Err(_) => false,
        };
        self.stamp(alive);
    }

    /// One question to the pool, within the deadline.
    async fn exchange(&self, name: &Name, qtype: RecordType) -> Result<Resolution, NetError> {
        let mut options = DnsRequestOptions::default();
        options.recursion_desired = true;
        options.use_edns = true;
        options.edns_payload_len = UPSTREAM_PAYLOAD;
        let query = Query::query(name.clone(), qtype);
        let sent = self.pool.lookup(query, options).first_answer();
        let response = match tokio::time::timeout(self.timeout, sent).await {
            Ok(r) => r?,
            Err(_) => return Err(NetError::Timeout),
        };
        let message = response.into_message();
        Ok(Resolution {
            rcode: message.metadata.response_code,
            answers: message.answers,
            authorities: message.authorities,
        })
    }

    /// What it was built from.
    pub fn settings(&self) -> PoolSettings {
        self.settings.clone()
    }

    /// Distinct resolutions waiting for the upstream now.
    pub fn inflight(&self) -> usize {
        lock(&self.inflight.map).len()
    }

    /// Resolves `name` (lower case)/`qtype` upstream within the deadline, keeping what the
    /// CNAME chain from `name` proves. Identical questions in flight share one resolution; past
    /// `max_inflight` distinct ones, a new one fails at once (`Overloaded`).
    pub async fn resolve(&self, name: &Name, qtype: RecordType) -> Resolved {
        let question = (name.clone(), qtype);
        match self.inflight.role(&question) {
            Err(e) => Resolved {
                label: e.kind(),
                result: Err(e),
                took: Duration::ZERO,
                coalesced: false,
            },
            Ok(Role::Lead(lead)) => {
                let outcome = self.resolve_now(name, qtype).await;
                lead.finish(&outcome);
                outcome
            }
            Ok(Role::Follow(mut rx)) => {
                let started = Instant::now();
                let outcome = match rx.wait_for(Option::is_some).await {
                    Ok(v) => v.clone(),
                    Err(_) => None,
                };
                let mut outcome = outcome.unwrap_or_else(|| Resolved {
                    result: Err(UpstreamError::Failed("the resolution was abandoned".into())),
                    took: Duration::ZERO,
                    label: "error",
                    coalesced: true,
                });
                outcome.coalesced = true;
                outcome.took = started.elapsed();
                outcome
            }
        }
    }

    /// One resolution: the question, then the follow-ups of a dangling chain.
    async fn resolve_now(&self, name: &Name, qtype: RecordType) -> Resolved {
        let started = Instant::now();
        let deadline = tokio::time::Instant::now() + self.timeout;
        let work = async {
            let mut checked = self.step(name, qtype).await?;
            while checked.dangling(qtype) {
                let target = checked.target().clone();
                let next = self.step(&target, qtype).await?;
                checked.extend(next)?;
            }
            Ok::<Checked, UpstreamError>(checked)
        };
        let result = match tokio::time::timeout_at(deadline, work).await {
            Ok(r) => r,
            Err(_) => Err(UpstreamError::Timeout(self.timeout)),
        };
        let label = match &result {
            Ok(c) if c.resolution.rcode == ResponseCode::NXDomain => "nxdomain",
            Ok(c)
                if c.resolution
                    .answers
                    .iter()
                    .any(|r| r.record_type() == qtype) =>
            {
                "answer"
            }
            Ok(_) => "nodata",
            Err(e) => e.kind(),
        };
        // A response, even an error code, shows the upstream alive; silence or a broken
        // exchange does not.
        self.stamp(!matches!(label, "timeout" | "error"));
        Resolved {
            result,
            took: started.elapsed(),
            label,
            coalesced: false,
        }
    }

    async fn step(&self, name: &Name, qtype: RecordType) -> Result<Checked, UpstreamError> {
        let resolution = match self.exchange(name, qtype).await {
            Ok(r) => r,
            Err(NetError::Dns(DnsError::NoRecordsFound(NoRecords {
                response_code,
                soa,
                authorities,
                ..
            }))) => Resolution {
                rcode: if response_code == ResponseCode::NXDomain {
                    ResponseCode::NXDomain
                } else {
                    ResponseCode::NoError
                },
                answers: Vec::new(),
                authorities: match (authorities, soa) {
                    (Some(a), _) => a.to_vec(),
                    (None, Some(soa)) => vec![soa.into_record_of_rdata()],
                    (None, None) => Vec::new(),
                },
            },
            Err(NetError::Timeout) => return Err(UpstreamError::Timeout(self.timeout)),
            Err(e) => return Err(UpstreamError::Failed(e.to_string())),
        };
        Ok(resolution.chain_from(name, qtype)?)
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
