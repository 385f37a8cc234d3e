//! The DNS server: sockets, the request handler, and deny answers with RFC 8914 extended errors.
//!
//! hickory-server owns the sockets and the wire format (UDP, TCP, EDNS, truncation); this module
//! decides what to answer. Checks run cheapest first, and a denied name never reaches the upstream:
//! opcode and question count, class, the client's view, the view's allowlist, then the upstream.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use hickory_server::net::runtime::Time;
use hickory_server::proto::op::{
    Edns, Header, HeaderCounts, MessageType, Metadata, OpCode, ResponseCode,
};
use hickory_server::proto::rr::rdata::HINFO;
use hickory_server::proto::rr::rdata::opt::EdnsOption;
use hickory_server::proto::rr::{DNSClass, RData, Record, RecordType};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use tokio::net::TcpListener;

use crate::config::{AdmitFailure, DenyRcode, ViewMode};
use crate::fence::{Admitted, Fence};
use crate::metrics::{self, Metrics};
use crate::policy::{DenyReason, Policy, wire_name_text};
use crate::querylog::{QueryLog, QueryRecord, Verdict, rfc3339};
use crate::upstream::{Resolution, Upstream, UpstreamError};
use crate::zones::PortSpec;
use std::sync::atomic::AtomicBool;

/// RFC 8914 extended DNS error codes we send.
pub mod ede {
    /// The option code of Extended DNS Errors in EDNS.
    pub const OPTION_CODE: u16 = 15;
    /// Blocked: the name is not on the view's allowlist.
    pub const BLOCKED: u16 = 15;
    /// Prohibited: the client is in no view.
    pub const PROHIBITED: u16 = 18;
    /// No Reachable Authority: the upstream did not answer in time.
    pub const NO_REACHABLE_AUTHORITY: u16 = 22;
    /// Network Error: the upstream exchange failed.
    pub const NETWORK_ERROR: u16 = 23;
    /// Not Supported: an opcode or query type we do not serve.
    pub const NOT_SUPPORTED: u16 = 21;
    /// Other: the firewall did not confirm the answer's addresses.
    pub const OTHER: u16 = 0;
}

/// TTL of the RFC 8482 answer to ANY queries.
const ANY_TTL: u32 = 3600;

/// The sockets a server answers on: UDP and TCP on the same addresses.
#[derive(Debug)]
pub struct Listeners {
    /// UDP sockets: `workers` per address, sharing the port with SO_REUSEPORT.
    pub udp: Vec<std::net::UdpSocket>,
    /// TCP listeners, one per address, on the same port as its UDP sockets.
    pub tcp: Vec<TcpListener>,
}

impl Listeners {
    /// Binds UDP (one socket) and TCP on every address. Port 0 picks a free port that is then
    /// used for both protocols (retrying when TCP finds that port taken), which is what tests want.
    pub async fn bind(addrs: &[SocketAddr]) -> io::Result<Listeners> {
        Listeners::bind_workers(addrs, 1).await
    }

    /// Same, with `workers` UDP sockets per address.
    pub async fn bind_workers(addrs: &[SocketAddr], workers: usize) -> io::Result<Listeners> {
        let mut udp = Vec::new();
        let mut tcp = Vec::new();
        for addr in addrs {
            let mut attempt = 0;
            loop {
                let sockets = crate::udp::bind_reuseport(*addr, workers)
                    .map_err(|e| bind_err(addr, "udp", e))?;
                let bound = sockets[0].local_addr()?;
                match TcpListener::bind(bound).await {
                    Ok(t) => {
                        udp.extend(sockets);
                        tcp.push(t);
                        break;
                    }
                    Err(e) if addr.port() == 0 && attempt < 16 => {
                        attempt += 1;
                        tracing::debug!(%bound, error = %e, "tcp port taken, picking another");
                    }
                    Err(e) => return Err(bind_err(&bound, "tcp", e)),
                }
            }
        }
        Ok(Listeners { udp, tcp })
    }

    /// The bound addresses, once each (TCP listens on the same ones).
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        let mut addrs: Vec<SocketAddr> = self
            .udp
            .iter()
            .filter_map(|s| s.local_addr().ok())
            .collect();
        addrs.dedup();
        addrs
    }
}

fn bind_err(addr: &SocketAddr, proto: &str, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("cannot listen on {proto} {addr}: {e}"))
}

/// Everything the handler reads. The policy is swapped whole on reload; the cache (inside
/// `upstream`) survives.
pub struct Shared {
    /// The compiled views; read lock-free on every query.
    pub policy: ArcSwap<Policy>,
    /// Upstream resolvers and the answer cache.
    pub upstream: Upstream,
    /// The query log.
    pub log: QueryLog,
    /// Largest UDP payload we answer with.
    pub max_udp_payload: u16,
    /// How long a UDP worker polls before it sleeps (`[server] busy_poll_us`).
    pub busy_poll: Duration,
    /// The firewall sets, when `[fence]` is enabled.
    pub fence: Option<Fence>,
    /// What to answer when the fence cannot confirm an answer's addresses in time.
    pub on_admit_failure: AdmitFailure,
    /// Prometheus metrics.
    pub metrics: Metrics,
    /// Set while the DNS sockets are being served (for `/readyz`).
    pub listening: AtomicBool,
    /// The upstream counts as healthy while it answered within this long.
    pub upstream_fresh: Duration,
    /// Per-client UDP rate limit, when configured.
    pub rate_limit: Option<crate::ratelimit::RateLimiter>,
}

/// hickory-server's entry point into dnsfence.
#[derive(Clone)]
pub struct Handler(pub Arc<Shared>);

/// What one query is answered with, decided before anything is encoded.
enum Reply {
    /// A bare response code, optionally with an extended error.
    Code {
        rcode: ResponseCode,
        ede: Option<(u16, &'static str)>,
    },
    /// Records (possibly none) with a response code.
    Records {
        rcode: ResponseCode,
        answers: Vec<Record>,
        authorities: Vec<Record>,
    },
}

/// What the query log and metrics learn about a query while it is handled.
pub(crate) struct Outcome<'p> {
    pub(crate) view: Option<&'p str>,
    pub(crate) verdict: Verdict,
    pub(crate) endpoint_set: Option<&'p str>,
    pub(crate) reason: Option<&'static str>,
    pub(crate) cache_hit: bool,
    pub(crate) fence_error: Option<&'static str>,
    /// Upstream latency and result label, on a cache miss.
    pub(crate) upstream: Option<(Duration, &'static str)>,
    /// Admit latency and result label, when the fence was asked.
    pub(crate) admit: Option<(Duration, &'static str)>,
    /// The denied name (normalised), for the denied-domain metric and the top-K; borrowed from
    /// the query where it can be, so a denial allocates nothing for it.
    pub(crate) denied_name: Option<std::borrow::Cow<'p, str>>,
}

impl<'p> Outcome<'p> {
    /// An allowed query of `view`.
    pub(crate) fn allowed(view: &'p str) -> Self {
        let mut o = Outcome::refused("");
        o.view = Some(view);
        o.verdict = Verdict::Allowed;
        o.reason = None;
        o
    }

    pub(crate) fn refused(reason: &'static str) -> Self {
        Outcome {
            view: None,
            verdict: Verdict::Refused,
            endpoint_set: None,
            reason: Some(reason),
            cache_hit: false,
            fence_error: None,
            upstream: None,
            admit: None,
            denied_name: None,
        }
    }
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        response: R,
    ) -> ResponseInfo {
        self.0.handle(request, response).await
    }
}

impl Shared {
    /// Answers one parsed request through `response`.
    pub(crate) async fn handle<R: ResponseHandler>(
        &self,
        request: &Request,
        mut response: R,
    ) -> ResponseInfo {
        let started = Instant::now();
        let policy = self.policy.load_full();
        let (reply, outcome) = self.decide(request, &policy).await;

        let mut metadata = Metadata::response_from_request(&request.metadata);
        metadata.recursion_available = true;
        let mut edns = request.edns.as_ref().map(|req| {
            let mut e = Edns::new();
            e.set_max_payload(req.max_payload().clamp(512, self.max_udp_payload));
            e.set_version(0);
            e.set_dnssec_ok(req.flags().dnssec_ok);
            e
        });
        // Counted before the answer leaves, so that whoever reads the metrics after getting the
        // answer sees it counted.
        let qtype = request
            .queries
            .queries()
            .first()
            .map_or(RecordType::Unknown(0), |q| q.query_type());
        self.count(qtype, &outcome, started.elapsed());
        let builder_queries = &request.queries;
        let result = match &reply {
            Reply::Code { rcode, ede } => {
                metadata.response_code = *rcode;
                if let (Some(e), Some((code, text))) = (edns.as_mut(), ede) {
                    let mut data = code.to_be_bytes().to_vec();
                    data.extend_from_slice(text.as_bytes());
                    e.options_mut()
                        .insert(EdnsOption::Unknown(ede::OPTION_CODE, data));
                }
                let builder = MessageResponseBuilder::new(builder_queries, edns.as_ref());
                response
                    .send_response(builder.build(
                        metadata,
                        std::iter::empty(),
                        std::iter::empty(),
                        std::iter::empty(),
                        std::iter::empty(),
                    ))
                    .await
            }
            Reply::Records {
                rcode,
                answers,
                authorities,
            } => {
                metadata.response_code = *rcode;
                let builder = MessageResponseBuilder::new(builder_queries, edns.as_ref());
                response
                    .send_response(builder.build(
                        metadata,
                        answers.iter(),
                        authorities.iter(),
                        std::iter::empty(),
                        std::iter::empty(),
                    ))
                    .await
            }
        };
        let info = match result {
            Ok(info) => info,
            Err(error) => {
                tracing::warn!(client = %request.src(), %error, "could not send the answer");
                ResponseInfo::from(Header {
                    metadata,
                    counts: HeaderCounts::default(),
                })
            }
        };
        if self.log.wants(outcome.verdict) {
            let name = request
                .queries
                .queries()
                .first()
                .map(|q| q.original().name().to_string())
                .unwrap_or_default();
            self.log_query(
                request.src().ip(),
                request.protocol().is_datagram(),
                &name,
                qtype,
                &outcome,
                info.response_code,
                started,
            );
        }
        info
    }

    /// Moves the metrics for one answered query.
    pub(crate) fn count(&self, qtype: RecordType, outcome: &Outcome<'_>, took: Duration) {
        let m = &self.metrics;
        let view = outcome.view.unwrap_or(metrics::NO_VIEW);
        let qtype = metrics::qtype_label_of(qtype);
        let verdict = metrics::verdict_index(outcome.verdict.as_str());
        let counters = m.view(view);
        counters.query(m, qtype, verdict);
        m.response(verdict, took);
        match outcome.verdict {
            Verdict::Allowed => {
                if let Some(set) = outcome.endpoint_set {
                    counters.allowed(m, set);
                }
            }
            Verdict::Denied | Verdict::WouldDeny | Verdict::Refused => {
                if let Some(reason) = outcome.reason
                    && outcome.verdict != Verdict::WouldDeny
                {
                    counters.denied(m, reason);
                }
                if let Some(name) = &outcome.denied_name {
                    counters.denied_name(m, name);
                }
            }
        }
        if outcome.upstream.is_some() {
            m.cache_misses.inc();
        } else if outcome.cache_hit {
            m.cache_hits.inc();
        }
        if let Some((t, result)) = outcome.upstream {
            m.upstream_requests.with_label_values(&[result]).inc();
            m.upstream_duration.observe(t.as_secs_f64());
        }
        if let Some((t, result)) = outcome.admit {
            m.fence_admits.with_label_values(&[result]).inc();
            if result != "fresh" {
                m.fence_admit_duration.observe(t.as_secs_f64());
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn log_query(
        &self,
        client: std::net::IpAddr,
        udp: bool,
        name: &str,
        qtype: RecordType,
        outcome: &Outcome<'_>,
        rcode: ResponseCode,
        started: Instant,
    ) {
        let (name, qtype) = (name.to_string(), qtype.to_string());
        let elapsed = started.elapsed();
        let arrived = SystemTime::now()
            .checked_sub(elapsed)
            .unwrap_or_else(SystemTime::now);
        self.log.log(&QueryRecord {
            time: rfc3339(arrived),
            client,
            protocol: if udp { "udp" } else { "tcp" },
            view: outcome.view,
            name,
            qtype,
            verdict: outcome.verdict,
            endpoint_set: outcome.endpoint_set,
            reason: outcome.reason,
            rcode: rcode_name(rcode),
            duration_us: u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX),
            cache_hit: outcome.cache_hit,
            fence_error: outcome.fence_error,
        });
    }

    async fn decide<'p>(&self, request: &Request, policy: &'p Policy) -> (Reply, Outcome<'p>) {
        let code = |rcode, ede| Reply::Code { rcode, ede };
        if request.edns.as_ref().is_some_and(|e| e.version() > 0) {
            return (
                code(ResponseCode::BADVERS, None),
                Outcome::refused("edns_version"),
            );
        }
        if request.metadata.message_type != MessageType::Query
            || request.metadata.op_code != OpCode::Query
        {
            return (
                code(
                    ResponseCode::NotImp,
                    Some((ede::NOT_SUPPORTED, "only standard queries are served")),
                ),
                Outcome::refused("opcode"),
            );
        }
        let [query] = request.queries.queries() else {
            return (
                code(ResponseCode::FormErr, None),
                Outcome::refused("malformed"),
            );
        };
        if query.query_class() != DNSClass::IN {
            return (code(ResponseCode::Refused, None), Outcome::refused("class"));
        }
        let Some(view) = policy.view_for(request.src().ip()) else {
            return (
                code(
                    ResponseCode::Refused,
                    Some((ede::PROHIBITED, "client is in no dnsfence view")),
                ),
                Outcome::refused(DenyReason::NoView.as_str()),
            );
        };
        let mut outcome = Outcome {
            view: Some(&view.name),
            verdict: Verdict::Allowed,
            endpoint_set: None,
            reason: None,
            cache_hit: false,
            fence_error: None,
            upstream: None,
            admit: None,
            denied_name: None,
        };
        let qtype = query.query_type();
        if matches!(qtype, RecordType::AXFR | RecordType::IXFR) {
            outcome.verdict = Verdict::Refused;
            outcome.reason = Some("qtype");
            return (
                code(
                    ResponseCode::Refused,
                    Some((ede::NOT_SUPPORTED, "zone transfers are not served")),
                ),
                outcome,
            );
        }
        // The question's wire bytes start with the name: match on them directly (no allocation,
        // no re-encoding); a name we cannot read that way falls back to the parsed form.
        let mut buf = [0u8; 256];
        let text = wire_name_text(request.queries.as_bytes(), &mut buf);
        let entry = match text {
            Some(text) => view.lookup_normalized(text),
            None => view.lookup_name(query.name()),
        };
        let allowed_sets: &[u32] = entry.map_or(&[], |e| &e.values);
        match entry {
            Some(entry) => {
                outcome.endpoint_set = entry
                    .values
                    .first()
                    .map(|&i| policy.catalog.sets[i as usize].id.as_str());
            }
            None => {
                outcome.reason = Some(DenyReason::NotAllowlisted.as_str());
                outcome.denied_name = Some(match text {
                    // The outcome outlives this function's name buffer: owned here.
                    Some(t) => t.to_string().into(),
                    None => query.name().to_string().to_ascii_lowercase().into(),
                });
                if view.mode == ViewMode::Enforce {
                    outcome.verdict = Verdict::Denied;
                    let rcode = match view.deny_rcode {
                        DenyRcode::Refused => ResponseCode::Refused,
                        DenyRcode::Nxdomain => ResponseCode::NXDomain,
                    };
                    return (
                        code(
                            rcode,
                            Some((ede::BLOCKED, "name is not on the dnsfence allowlist")),
                        ),
                        outcome,
                    );
                }
                outcome.verdict = Verdict::WouldDeny;
            }
        }
        if qtype == RecordType::ANY {
            // RFC 8482: answer ANY with one synthesized HINFO instead of every record.
            let hinfo = HINFO::new("RFC8482".to_string(), String::new());
            let record = Record::from_rdata(
                query.original().name().clone(),
                ANY_TTL,
                RData::HINFO(hinfo),
            );
            return (
                Reply::Records {
                    rcode: ResponseCode::NoError,
                    answers: vec![record],
                    authorities: Vec::new(),
                },
                outcome,
            );
        }
        let resolved = self.upstream.resolve(query.name(), qtype).await;
        outcome.cache_hit = resolved.cache_hit;
        outcome.upstream = resolved.upstream;
        let reply = match resolved.result {
            Ok(Resolution::Records {
                answers,
                authorities,
            }) => {
                // The answer leaves only once its addresses are in the view's sets (or the
                // admit failed and the policy says to answer anyway). Would-be denials of a
                // report-mode view are not admitted: they are not on the allowlist.
                let allowed = outcome.verdict == Verdict::Allowed;
                let addrs = if allowed {
                    crate::answer::addresses(&answers)
                } else {
                    Vec::new()
                };
                let ports = if allowed {
                    ports_of(policy, allowed_sets)
                } else {
                    Vec::new()
                };
                let admitted = match &self.fence {
                    Some(fence) if allowed && !addrs.is_empty() => {
                        let t = Instant::now();
                        let name = query.name().to_string();
                        let r = fence
                            .admit(
                                view.index,
                                name.trim_end_matches('.'),
                                &addrs,
                                allowed_sets,
                                &ports,
                                resolved.cache_hit,
                            )
                            .await;
                        let label = match &r {
                            Ok(Admitted::Fresh) => "fresh",
                            Ok(Admitted::Written(_)) => "ok",
                            Err(e) => e.kind(),
                        };
                        outcome.admit = Some((t.elapsed(), label));
                        r
                    }
                    _ => Ok(Admitted::Fresh),
                };
                if let Err(error) = admitted {
                    outcome.fence_error = Some(error.kind());
                    tracing::warn!(name = %query.name(), view = %view.name, %error, "firewall admit failed");
                    if self.on_admit_failure == AdmitFailure::Servfail {
                        return (
                            code(
                                ResponseCode::ServFail,
                                Some((
                                    ede::OTHER,
                                    "firewall did not confirm the answer's addresses",
                                )),
                            ),
                            outcome,
                        );
                    }
                }
                Reply::Records {
                    rcode: ResponseCode::NoError,
                    answers,
                    authorities,
                }
            }
            Ok(Resolution::Negative { rcode, soa }) => Reply::Records {
                rcode,
                answers: Vec::new(),
                authorities: soa.map(|s| *s).into_iter().collect(),
            },
            Err(error) => {
                tracing::warn!(name = %query.name(), %qtype, %error, "upstream failure");
                if outcome.reason.is_none() {
                    outcome.reason = Some(error.kind());
                }
                let ede = match error {
                    UpstreamError::Timeout(_) => {
                        (ede::NO_REACHABLE_AUTHORITY, "upstream timed out")
                    }
                    UpstreamError::Failed(_) => (ede::NETWORK_ERROR, "upstream failed"),
                };
                code(ResponseCode::ServFail, Some(ede))
            }
        };
        (reply, outcome)
    }
}

/// The ports of the endpoint sets that allowed a name, sorted, once each.
pub(crate) fn ports_of(policy: &Policy, endpoint_sets: &[u32]) -> Vec<PortSpec> {
    let mut ports: Vec<PortSpec> = endpoint_sets
        .iter()
        .flat_map(|&i| policy.catalog.sets[i as usize].ports.iter().copied())
        .collect();
    ports.sort_unstable();
    ports.dedup();
    ports
}

/// The response code as `dig` writes it, for the query log.
pub(crate) fn rcode_name(rcode: ResponseCode) -> String {
    match rcode {
        ResponseCode::NoError => "NOERROR".into(),
        ResponseCode::FormErr => "FORMERR".into(),
        ResponseCode::ServFail => "SERVFAIL".into(),
        ResponseCode::NXDomain => "NXDOMAIN".into(),
        ResponseCode::NotImp => "NOTIMP".into(),
        ResponseCode::Refused => "REFUSED".into(),
        ResponseCode::BADVERS => "BADVERS".into(),
        other => u16::from(other).to_string(),
    }
}

/// Serves `listeners` until `shutdown` completes, then stops accepting, lets in-flight answers
/// finish and returns. UDP goes to dnsfence's own workers (see `udp.rs`), TCP to hickory-server.
pub async fn serve(
    shared: Arc<Shared>,
    listeners: Listeners,
    tcp_idle_timeout: Duration,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let mut server = hickory_server::Server::new(Handler(shared.clone()));
    for listener in listeners.tcp {
        server.register_listener(listener, tcp_idle_timeout, 64);
    }
    let workers =
        crate::udp::Workers::start(shared, listeners.udp, tokio::runtime::Handle::current())?;
    let result = tokio::select! {
        result = server.block_until_done() => {
            result.map_err(|e| io::Error::other(format!("server stopped: {e}")))
        }
        () = shutdown => {
            tracing::info!("shutting down: finishing in-flight queries");
            server
                .shutdown_gracefully()
                .await
                .map_err(|e| io::Error::other(format!("shutdown: {e}")))
        }
    };
    // Joining the workers blocks for at most one read timeout: off the runtime's threads.
    let _ = tokio::task::spawn_blocking(move || workers.stop()).await;
    result
}
