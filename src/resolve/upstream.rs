//! Upstream resolution of allowed names: plain UDP through dnsfence's own pool of rotating
//! sockets (`outgoing.rs`: many queries a socket, not a socket a query), TCP (on truncation), DoT
//! and DoH through hickory-resolver's name-server pool.
//!
//! Why not hickory's UDP client for plain DNS: it opens, registers with the runtime and closes a
//! socket for every query (for a fresh random port), which was about half of a cache miss's CPU
//! time (`perf`: the kernel's socket setup and epoll registration); `outgoing.rs` keeps the
//! spoofing resistance (random port, random ID, 0x20 case) with sockets that carry many queries
//! and rotate to new ports, and says what a forged reply must guess.
//!
//! Why the pool and not `Resolver::lookup`: the resolver's lookup chases CNAMEs itself and turns
//! NODATA and NXDOMAIN into errors, so a CNAME chain that ends in NODATA lost its CNAMEs, and it
//! asked the upstream for the chain's target with the client's type even when the upstream had
//! already said the target has none. The pool sends exactly the client's question and hands back
//! the upstream's message whole, over UDP with TCP on truncation (and on a 0x20 case mismatch).
//! dnsfence keeps one pool per configured server and does the rest itself: the order servers
//! are tried in (fewest recent failures, then smoothed RTT), failover within the deadline, the
//! coalescing of identical questions in flight, and per-server health and metrics.
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
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ProtocolConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::xfer::{DnsHandle, FirstAnswer};
use hickory_resolver::net::{DnsError, NetError, NoRecords};
use hickory_resolver::proto::op::{DnsRequestOptions, Query, ResponseCode};
use hickory_resolver::proto::rr::{Name, RecordType};
use hickory_resolver::{NameServerPool, PoolContext};

use tokio::sync::watch;

use crate::base::sync::lock;
use crate::config::{PoolSettings, UpstreamConfig, UpstreamServer, UpstreamTransport};
use crate::resolve::answer::{ChainError, Checked, Resolution};

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

/// One upstream server: its own hickory pool (so that its health and metrics are its own) and
/// its health.
struct Server {
    label: String,
    /// Plain DNS: the UDP sockets queries go out on first; `pool` is then TCP only, for
    /// truncated answers.
    udp: Option<crate::resolve::outgoing::Outgoing>,
    pool: NameServerPool<TokioRuntimeProvider>,
    health: Health,
    /// For DoT and DoH: what a diagnostic handshake needs (hickory's pool reports a failed
    /// TLS connection only as "no connections available").
    tls: Option<crate::resolve::tls::Endpoint>,
}

/// One question at one server. The resolution's deadline can drop it before the server's own
/// timeout ends it; dropped unfinished, it counts as the server's failure, so a server that lets
/// every resolution run out is seen as down, not as never asked.
struct Attempt<'a> {
    upstream: &'a Upstream,
    server: &'a Server,
    open: bool,
}

impl Drop for Attempt<'_> {
    fn drop(&mut self) {
        if self.open {
            self.upstream.failed(self.server);
        }
    }
}

/// A server's health, as the failover order and `/readyz` read it.
#[derive(Default)]
struct Health {
    /// Failures since the last answer.
    consecutive_failures: AtomicU64,
    /// Smoothed round-trip time in microseconds (EWMA, 1/8); 0 until the first answer.
    srtt_us: AtomicU64,
    /// Milliseconds after the upstream's start of the last answer (+1; 0 = never).
    last_ok_ms: AtomicU64,
    /// Milliseconds after the upstream's start of the last failure (+1; 0 = never).
    last_fail_ms: AtomicU64,
    answers: AtomicU64,
    failures: AtomicU64,
}

/// What `/readyz` and the metrics show of one server.
#[derive(Debug, Clone)]
pub struct ServerHealth {
    /// The server as configured.
    pub label: String,
    /// Answered within the freshness window and not failed since.
    pub healthy: bool,
    /// Smoothed round-trip time.
    pub srtt: Duration,
    /// Failures since its last answer.
    pub consecutive_failures: u64,
    /// Exchanges it answered (any DNS response).
    pub answers: u64,
    /// Exchanges that failed (timeout, network, SERVFAIL/REFUSED).
    pub failures: u64,
    /// Since its last answer, if any.
    pub since_last_answer: Option<Duration>,
    /// Plain UDP: replies dropped, by reason label (`outgoing::Dropped`).
    pub replies_dropped: Vec<(&'static str, u64)>,
    /// Plain UDP: sockets opened (the first ones, then one per rotation).
    pub udp_sockets_opened: u64,
}

/// The upstream servers.
pub struct Upstream {
    /// What it was built from.
    settings: PoolSettings,
    /// Best first, as configured; each query orders them by health.
    servers: Vec<Server>,
    /// Resolutions in flight, shared by identical questions, bounded.
    inflight: Arc<Inflight>,
    /// Deadline of one resolution.
    timeout: Duration,
    /// Reference point of the health stamps.
    started: Instant,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// The least time one server is given before the next is tried, when several are configured.
const MIN_TRY: Duration = Duration::from_millis(400);

impl Upstream {
    /// Builds a pool per configured server (plain DNS over UDP with TCP on truncation, DoT or
    /// DoH).
    pub fn new(config: &UpstreamConfig) -> Result<Upstream, UpstreamError> {
        let mut opts = ResolverOpts::default();
        opts.timeout = config.timeout;
        opts.attempts = 1;
        opts.edns0 = true;
        // 0x20: the question's letters in random case, and a reply whose question differs in
        // case is not used (it is retried over TCP). With hickory's random source port per query
        // and random IDs, an off-path spoofer has to guess all three.
        opts.case_randomization = true;
        // The trust store is read only when a server needs it: a host (or an image) without
        // CA certificates runs plain upstreams.
        let encrypted = config
            .servers
            .iter()
            .any(|s| !matches!(s.transport, UpstreamTransport::Plain));
        let tls = if encrypted {
            crate::resolve::tls::client_config(config.tls_ca_file.as_deref())
                .map_err(UpstreamError::Failed)?
        } else {
            crate::resolve::tls::unused_config()
        };
        let servers = config
            .servers
            .iter()
            .map(|s| {
                let endpoint = match &s.transport {
                    UpstreamTransport::Plain => None,
                    UpstreamTransport::Tls { server_name }
                    | UpstreamTransport::Https { server_name, .. } => {
                        Some(crate::resolve::tls::Endpoint {
                            addr: s.addr,
                            server_name: server_name.clone(),
                            config: Arc::new(tls.config.clone()),
                        })
                    }
                };
                let tls = hickory_resolver::TlsConfig {
                    config: tls.config.clone(),
                };
                let cx = Arc::new(PoolContext::new(opts.clone(), tls));
                let udp = matches!(s.transport, UpstreamTransport::Plain).then(|| {
                    crate::resolve::outgoing::Outgoing::new(
                        s.addr,
                        config.udp_sockets,
                        config.udp_socket_queries,
                        config.udp_socket_age,
                    )
                });
                Server {
                    label: s.label.clone(),
                    udp,
                    pool: NameServerPool::from_config(
                        [name_server(s)],
                        cx,
                        TokioRuntimeProvider::default(),
                    ),
                    health: Health::default(),
                    tls: endpoint,
                }
            })
            .collect();
        Ok(Upstream {
            settings: config.pool_settings(),
            servers,
            inflight: Arc::new(Inflight {
                map: std::sync::Mutex::new(HashMap::new()),
                max: config.max_inflight,
            }),
            timeout: config.timeout,
            started: Instant::now(),
        })
    }

    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64 + 1
    }

    fn answered(&self, s: &Server, rtt: Duration) {
        let h = &s.health;
        h.consecutive_failures.store(0, Ordering::Relaxed);
        h.answers.fetch_add(1, Ordering::Relaxed);
        h.last_ok_ms.store(self.now_ms(), Ordering::Relaxed);
        let sample = rtt.as_micros() as u64;
        let old = h.srtt_us.load(Ordering::Relaxed);
        let new = if old == 0 {
            sample
        } else {
            old - old / 8 + sample / 8
        };
        h.srtt_us.store(new.max(1), Ordering::Relaxed);
    }

    fn failed(&self, s: &Server) {
        let h = &s.health;
        h.consecutive_failures.fetch_add(1, Ordering::Relaxed);
        h.failures.fetch_add(1, Ordering::Relaxed);
        h.last_fail_ms.store(self.now_ms(), Ordering::Relaxed);
    }

    fn server_healthy(&self, s: &Server, within: Duration) -> bool {
        let ok = s.health.last_ok_ms.load(Ordering::Relaxed);
        let fail = s.health.last_fail_ms.load(Ordering::Relaxed);
        ok != 0 && ok >= fail && self.now_ms().saturating_sub(ok) <= within.as_millis() as u64
    }

    /// Whether some server answered within `within` and has not failed since.
    pub fn healthy(&self, within: Duration) -> bool {
        self.servers.iter().any(|s| self.server_healthy(s, within))
    }

    /// Each server's health, in configured order.
    pub fn health(&self, within: Duration) -> Vec<ServerHealth> {
        self.servers
            .iter()
            .map(|s| {
                let h = &s.health;
                let ok = h.last_ok_ms.load(Ordering::Relaxed);
                ServerHealth {
                    label: s.label.clone(),
                    healthy: self.server_healthy(s, within),
                    srtt: Duration::from_micros(h.srtt_us.load(Ordering::Relaxed)),
                    consecutive_failures: h.consecutive_failures.load(Ordering::Relaxed),
                    answers: h.answers.load(Ordering::Relaxed),
                    failures: h.failures.load(Ordering::Relaxed),
                    since_last_answer: (ok != 0)
                        .then(|| Duration::from_millis(self.now_ms().saturating_sub(ok))),
                    replies_dropped: s.udp.as_ref().map_or_else(Vec::new, |u| {
                        crate::resolve::outgoing::Dropped::ALL
                            .iter()
                            .map(|d| (d.as_str(), u.stats().dropped(*d)))
                            .collect()
                    }),
                    udp_sockets_opened: s.udp.as_ref().map_or(0, |u| {
                        u.stats().opened.load(std::sync::atomic::Ordering::Relaxed)
                    }),
                }
            })
            .collect()
    }

    /// Time since any server last answered, if one ever did.
    pub fn since_last_answer(&self) -> Option<Duration> {
        let ok = self
            .servers
            .iter()
            .map(|s| s.health.last_ok_ms.load(Ordering::Relaxed))
            .max()
            .filter(|&ms| ms != 0)?;
        Some(Duration::from_millis(self.now_ms().saturating_sub(ok)))
    }

    /// Asks each server that nothing has reached in `idle` for the root's NS, so that health
    /// reflects every server even on an idle network. Any DNS response counts as alive (even
    /// REFUSED: it answered); a timeout or a network error does not.
    pub async fn probe(&self, idle: Duration) {
        for s in &self.servers {
            let last = |ms: u64| (ms != 0).then(|| self.now_ms().saturating_sub(ms));
            let h = &s.health;
            let recent = |d: Option<u64>| d.is_some_and(|d| d < idle.as_millis() as u64);
            if recent(last(h.last_ok_ms.load(Ordering::Relaxed)))
                || recent(last(h.last_fail_ms.load(Ordering::Relaxed)))
            {
                continue;
            }
            let t = Instant::now();
            match self
                .ask(s, &Name::root(), RecordType::NS, self.timeout)
                .await
            {
                Ok(_) | Err(NetError::Dns(_)) => self.answered(s, t.elapsed()),
                Err(_) => self.failed(s),
            }
        }
    }

    /// One question to one server, within `budget`: over its UDP sockets for plain DNS (TCP
    /// when the answer is truncated), else through its hickory pool (DoT, DoH).
    async fn ask(
        &self,
        s: &Server,
        name: &Name,
        qtype: RecordType,
        budget: Duration,
    ) -> Result<Resolution, NetError> {
        let started = Instant::now();
        if let Some(udp) = &s.udp {
            use crate::resolve::outgoing::UdpError;
            match udp.query(name, qtype, UPSTREAM_PAYLOAD, budget).await {
                Ok(message) => {
                    let rcode = message.metadata.response_code;
                    // As hickory's pool: any rcode but NOERROR and NXDOMAIN means the server
                    // cannot or will not answer; the next server is tried (a probe counts it
                    // as alive).
                    if !matches!(rcode, ResponseCode::NoError | ResponseCode::NXDomain) {
                        return Err(NetError::Dns(DnsError::ResponseCode(rcode)));
                    }
                    return Ok(Resolution {
                        rcode,
                        answers: message.answers,
                        authorities: message.authorities,
                    });
                }
                // Truncated, or a reply to our ID and name in another case: TCP, where an
                // off-path forger cannot answer.
                Err(UdpError::Truncated | UdpError::CaseChanged) => {}
                Err(UdpError::Timeout) => return Err(NetError::Timeout),
                Err(UdpError::Busy) => return Err(NetError::Busy),
                Err(UdpError::Io(e)) => return Err(NetError::Io(Arc::new(e))),
            }
        }
        let budget = budget.saturating_sub(started.elapsed());
        let mut options = DnsRequestOptions::default();
        options.recursion_desired = true;
        options.use_edns = true;
        options.edns_payload_len = UPSTREAM_PAYLOAD;
        let query = Query::query(name.clone(), qtype);
        let sent = s.pool.lookup(query, options).first_answer();
        let response = match tokio::time::timeout(budget, sent).await {
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

    /// One question, to the healthiest server first and to the next when it fails, all within
    /// the deadline. An answer (NXDOMAIN and NODATA included) ends it; a timeout, a network
    /// error, SERVFAIL or REFUSED moves on.
    async fn exchange(&self, name: &Name, qtype: RecordType) -> Result<Resolution, NetError> {
        let deadline = Instant::now() + self.timeout;
        let mut order: Vec<&Server> = self.servers.iter().collect();
        // Fewer recent failures first, then the faster; configured order breaks ties.
        order.sort_by_key(|s| {
            let h = &s.health;
            (
                h.consecutive_failures.load(Ordering::Relaxed).min(3),
                h.srtt_us.load(Ordering::Relaxed) / 1000,
            )
        });
        let mut last = NetError::Timeout;
        let n = order.len();
        for (i, s) in order.into_iter().enumerate() {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                break;
            }
            let left = (n - i) as u32;
            let budget = if left > 1 {
                (remaining / left).max(MIN_TRY.min(remaining))
            } else {
                remaining
            };
            let t = Instant::now();
            let mut attempt = Attempt {
                upstream: self,
                server: s,
                open: true,
            };
            let outcome = self.ask(s, name, qtype, budget).await;
            attempt.open = false;
            match outcome {
                Ok(r) => {
                    self.answered(s, t.elapsed());
                    return Ok(r);
                }
                Err(e @ NetError::Dns(DnsError::NoRecordsFound(_))) => {
                    self.answered(s, t.elapsed());
                    return Err(e);
                }
                Err(e) => {
                    self.failed(s);
                    static GATE: crate::base::warn::Gate = crate::base::warn::Gate::new();
                    if let Some(suppressed) = GATE.pass() {
                        report_failure(s, &e, suppressed);
                    }
                    last = e;
                }
            }
        }
        Err(last)
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

/// Logs why a server failed. For DoT and DoH a failed connection is retried as a handshake of
/// our own, off the runtime, so that the line says why (a certificate for another name, an
/// unknown CA) instead of hickory's "no connections available".
fn report_failure(s: &Server, e: &NetError, suppressed: u64) {
    let label = s.label.clone();
    let error = e.to_string();
    match (&s.tls, e) {
        (Some(endpoint), NetError::NoConnections | NetError::Io(_) | NetError::Timeout) => {
            let endpoint = endpoint.clone();
            tokio::task::spawn_blocking(move || {
                let why = crate::resolve::tls::diagnose(&endpoint);
                tracing::warn!(suppressed, server = %label, %error, tls = %why, "upstream server failed; trying the next");
            });
        }
        _ => {
            tracing::warn!(suppressed, server = %label, %error, "upstream server failed; trying the next")
        }
    }
}

fn name_server(s: &UpstreamServer) -> NameServerConfig {
    let conn = |protocol| {
        let mut c = ConnectionConfig::new(protocol);
        c.port = s.addr.port();
        c
    };
    let connections = match &s.transport {
        // UDP goes out on dnsfence's own sockets (`outgoing.rs`); the pool is for truncation.
        UpstreamTransport::Plain => vec![conn(ProtocolConfig::Tcp)],
        UpstreamTransport::Tls { server_name } => vec![conn(ProtocolConfig::Tls {
            server_name: server_name.as_str().into(),
        })],
        UpstreamTransport::Https { server_name, path } => vec![conn(ProtocolConfig::Https {
            server_name: server_name.as_str().into(),
            path: path.as_str().into(),
        })],
    };
    NameServerConfig::new(s.addr.ip(), true, connections)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_try_cut_short_by_the_deadline_counts_as_the_servers_failure() {
        // A server that takes queries and never answers, on loopback.
        let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let text = format!(
            "[upstream]\nservers = [\"{}\"]\ntimeout_ms = 2000\n\
             [[view]]\nname = \"lab\"\nnetworks = [\"10.0.0.0/8\"]\nprofiles = [\"apple\"]\n",
            silent.local_addr().unwrap()
        );
        let config = crate::config::Config::parse(
            std::path::Path::new("test.toml"),
            &text,
            std::path::Path::new("/nonexistent"),
        )
        .unwrap();
        let upstream = Upstream::new(&config.upstream).unwrap();
        let name = Name::from_ascii("example.com.").unwrap();
        // Cut long before the server's own 2 s timeout, as the resolution's deadline does.
        let cut = tokio::time::timeout(
            Duration::from_millis(100),
            upstream.exchange(&name, RecordType::A),
        )
        .await;
        assert!(cut.is_err());
        let health = upstream.health(Duration::from_secs(10));
        assert_eq!(health[0].consecutive_failures, 1);
        assert_eq!(health[0].failures, 1);
        assert!(!upstream.healthy(Duration::from_secs(10)));
    }
}
