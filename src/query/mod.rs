//! The query path, one for every transport: parse ([`parse()`]) → decide ([`Engine::decide`]) →
//! encode ([`encode`]) → count and log ([`event::QueryEvent::emit`]).
//!
//! [`Engine::decide`] is synchronous: protocol checks, the client's view, the allowlist, the
//! cache and the fence's ledger are all in memory, so a denial, a refusal or a cache hit whose
//! addresses are fresh in the firewall is answered right there, on a UDP worker's thread, without
//! touching the async runtime ([`Engine::answer_now`]). What must wait — the upstream, or the
//! kernel confirming the firewall elements — continues on the runtime from there
//! ([`Engine::resume`], with the worker's parse and decision) through the same encoder; TCP
//! takes that way from the start ([`Engine::answer`]). Nothing else builds an answer.
//!
//! The layer: the query path with what it alone feeds — the Prometheus registry and collectors
//! ([`metrics`]) and the query log's writer ([`log`]). It uses every layer below (`base/`,
//! `config/`, `resolve/`, `catalog/`, `fence/`); `state/`, `net/`, `daemon/` and `cli/` use it.

pub mod encode;
pub mod event;
pub mod log;
pub mod metrics;
pub mod parse;

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::rdata::HINFO;
use hickory_proto::rr::{Name, RData, Record, RecordType};

use crate::base::wire::name_text;
use crate::catalog::policy::{Policy, View};
use crate::catalog::zones::PortSpec;
use crate::config::{AdmitFailure, CnameTargets, Config, DenyRcode, ViewMode};
use crate::fence::{Admission, Admitted, Fence};
use crate::query::log::QueryLog;
use crate::query::metrics::Metrics;
use crate::resolve::answer::{Answer, AnswerAddr, Resolution};
use crate::resolve::cache::AnswerCache;
use crate::resolve::upstream::{Resolved, Upstream, UpstreamError};
use encode::{Ede, Reply, Soa, ede, rcode};
use event::{QueryEvent, Reason, Transport, Verdict};
use parse::{Parsed, Problem, parse};

/// TTL of the RFC 8482 answer to ANY queries.
const ANY_TTL: u32 = 3600;

/// The largest message over TCP.
const TCP_LIMIT: usize = 65535;

/// Everything a query's decision reads, and nothing else (what the process reports about
/// itself is the app's `Status`). The policy is swapped whole on reload; the cache, the
/// fence's ledger and the counters survive it.
pub struct Engine {
    /// The compiled views; read lock-free on every query.
    pub policy: ArcSwap<Policy>,
    /// Answers in wire form (shared with the metrics that count them).
    pub cache: Arc<AnswerCache>,
    /// The upstream servers; a reload that changes `[upstream]` swaps in a new pool.
    pub upstream: Arc<ArcSwap<Upstream>>,
    /// The firewall sets, when `[fence]` is enabled (shared with the metrics that count them).
    pub fence: Option<Arc<Fence>>,
    /// What to answer when the fence cannot confirm an answer's addresses in time (true:
    /// SERVFAIL, false: the answer anyway).
    pub servfail_on_admit_failure: AtomicBool,
    /// Largest UDP payload dnsfence sends, and advertises in its OPT records.
    pub max_udp_payload: u16,
    /// The query log.
    pub log: QueryLog,
    /// Prometheus metrics.
    pub metrics: Metrics,
    /// RFC 8767: how long (ms) a miss with an expired answer at hand waits for the upstream
    /// before the expired answer is served.
    pub stale_answer_after_ms: AtomicU64,
    /// Queries waiting on the runtime now, and the most that may (`[server] max_waiting`).
    pub waiting: AtomicUsize,
    /// See `waiting`.
    pub max_waiting: AtomicUsize,
    /// Whether [`Engine::answer_now`] answers what needs no waiting (on by default). Off, every
    /// UDP query takes the runtime's way: the parity test's switch, to show that both ways give
    /// the same bytes.
    pub sync_answers: AtomicBool,
    /// The clock cached answers age on (a test advances it instead of sleeping).
    pub clock: crate::base::clock::Clock,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").finish_non_exhaustive()
    }
}

/// What [`Engine::decide`] concluded.
#[derive(Debug)]
pub enum Decision<'p> {
    /// The reply, known now.
    Reply(Reply),
    /// The rest needs the runtime: the upstream, or the fence before a cached answer.
    Resolve(Work<'p>),
}

/// An allowed (or report-mode) question that needs the runtime.
#[derive(Debug)]
pub struct Work<'p> {
    view: &'p View,
    /// Catalog indices of the endpoint sets that allowed the name (empty for would-deny).
    sets: &'p [u32],
    /// A cache hit whose firewall elements must be written again before it is sent.
    cached: Option<Arc<Answer>>,
}

/// What [`Engine::answer_now`] did.
#[derive(Debug)]
pub enum Now {
    /// A reply of this length is in the output buffer.
    Reply(usize),
    /// No reply (not a query at all); counted.
    Drop,
    /// Needs the runtime: [`Engine::resume`] continues from here.
    Later(Box<Pending>),
}

/// A parsed query on its way to the runtime, with the decision made so far: the runtime
/// continues from it instead of parsing and deciding again.
#[derive(Debug)]
pub struct Pending {
    /// The policy it was decided under (a reload meanwhile does not change its answer).
    policy: Arc<Policy>,
    /// The parsed query.
    q: Parsed,
    /// The event so far (its view is set again from `policy`).
    ev: QueryEvent<'static>,
    /// What the decision left to do; `None`: decide on the runtime (TCP, and the parity test's
    /// switch).
    work: Option<OwnedWork>,
}

/// [`Work`] without borrows from the policy.
#[derive(Debug)]
struct OwnedWork {
    /// The view's index in the policy.
    view: usize,
    /// Catalog indices of the endpoint sets that allowed the name.
    sets: Vec<u32>,
    /// A cache hit whose firewall elements must be written again.
    cached: Option<Arc<Answer>>,
}

/// A query's place among those waiting on the runtime; given back when dropped.
pub struct Waiting(Arc<Engine>);

impl Drop for Waiting {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Client addresses as views see them: an IPv4 client of a dual-stack socket arrives as
/// `::ffff:a.b.c.d`.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

impl Engine {
    /// Applies the settings of a reloaded config that the running engine can take in place
    /// (the caller checked that nothing else changed): the query log, the cache's bounds, the
    /// serve-stale and waiting limits, the admit-failure policy, and a new upstream pool when
    /// `[upstream]` changed. The cache and the fence's ledger survive.
    pub fn apply(&self, config: &Config) -> Result<(), UpstreamError> {
        let u = &config.upstream;
        let old = self.upstream.load();
        if old.settings() != u.pool_settings() {
            self.upstream.store(Arc::new(Upstream::new(u)?));
        }
        self.cache.set_limits(
            usize::try_from(u.cache_size).unwrap_or(usize::MAX),
            crate::resolve::cache::TtlBounds::of(u),
            u.stale_max,
        );
        self.stale_answer_after_ms
            .store(u.stale_answer_after.as_millis() as u64, Ordering::Relaxed);
        self.max_waiting
            .store(config.server.max_waiting, Ordering::Relaxed);
        self.servfail_on_admit_failure.store(
            config.fence.on_admit_failure == AdmitFailure::Servfail,
            Ordering::Relaxed,
        );
        self.log.reconfigure(&config.query_log);
        Ok(())
    }

    /// The most a reply may hold: 512 bytes, or the client's EDNS size up to
    /// `max_udp_payload`, over UDP; 65535 over TCP.
    fn limit(&self, q: &Parsed, transport: Transport) -> usize {
        match (transport, q.edns) {
            (Transport::Tcp, _) => TCP_LIMIT,
            (Transport::Udp, None) => 512,
            (Transport::Udp, Some(e)) => e.payload.min(self.max_udp_payload).into(),
        }
    }

    /// Answers a query if that needs no waiting, writing the reply into `out` (at least 4096
    /// bytes for UDP). The event is emitted before this returns, so it is counted before the
    /// reply leaves. What must wait comes back as [`Now::Later`], decided as far as it goes.
    pub fn answer_now(
        &self,
        pkt: &[u8],
        client: IpAddr,
        transport: Transport,
        started: Instant,
        out: &mut [u8],
    ) -> Now {
        let Some(q) = parse(pkt) else {
            self.not_a_query(pkt, client, transport, started);
            return Now::Drop;
        };
        let policy = self.policy.load();
        let ev = QueryEvent::new(client, transport, started);
        if !self.sync_answers.load(Ordering::Relaxed) {
            return Now::Later(Box::new(Pending {
                policy: Arc::clone(&policy),
                q,
                ev,
                work: None,
            }));
        }
        let mut ev = ev;
        let now = self.clock.now();
        match self.decide(&policy, pkt, &q, now, &mut ev) {
            Decision::Reply(reply) => Now::Reply(self.write(&policy, pkt, &q, &reply, &ev, out)),
            Decision::Resolve(work) => {
                let work = OwnedWork {
                    view: work.view.index,
                    sets: work.sets.to_vec(),
                    cached: work.cached,
                };
                Now::Later(Box::new(Pending {
                    policy: Arc::clone(&policy),
                    q,
                    ev: ev.detached(),
                    work: Some(work),
                }))
            }
        }
    }

    /// Answers a query, waiting for the upstream and the fence where needed. `None` when it gets
    /// no reply (not a query at all).
    pub async fn answer(
        self: &Arc<Self>,
        pkt: &[u8],
        client: IpAddr,
        transport: Transport,
        started: Instant,
    ) -> Option<Vec<u8>> {
        let Some(q) = parse(pkt) else {
            self.not_a_query(pkt, client, transport, started);
            return None;
        };
        let pending = Pending {
            policy: self.policy.load_full(),
            q,
            ev: QueryEvent::new(client, transport, started),
            work: None,
        };
        Some(self.resume(Box::new(pending), pkt).await)
    }

    /// Continues a query on the runtime from where [`Engine::answer_now`] left it (deciding it
    /// first when it was not), and returns the reply.
    pub async fn resume(self: &Arc<Self>, pending: Box<Pending>, pkt: &[u8]) -> Vec<u8> {
        let Pending {
            policy,
            q,
            ev,
            work,
        } = *pending;
        let mut ev: QueryEvent<'_> = ev;
        let work = match &work {
            Some(w) => {
                let view = &policy.views[w.view];
                ev.view = Some(view);
                Work {
                    view,
                    sets: &w.sets,
                    cached: w.cached.clone(),
                }
            }
            None => match self.decide(&policy, pkt, &q, self.clock.now(), &mut ev) {
                Decision::Reply(reply) => return self.reply(&policy, pkt, &q, &reply, &ev),
                Decision::Resolve(work) => work,
            },
        };
        let reply = self.finish(&policy, pkt, &q, work, &mut ev).await;
        self.reply(&policy, pkt, &q, &reply, &ev)
    }

    /// Encodes `reply` for the query's transport, then counts and logs it.
    fn reply(
        &self,
        policy: &Arc<Policy>,
        pkt: &[u8],
        q: &Parsed,
        reply: &Reply,
        ev: &QueryEvent<'_>,
    ) -> Vec<u8> {
        let limit = self.limit(q, ev.transport);
        let mut out = vec![0u8; encode::wire_len(reply, q).min(limit)];
        let n = self.write(policy, pkt, q, reply, ev, &mut out);
        out.truncate(n);
        out
    }

    /// Encodes `reply` into `out` within the transport's limit, then counts and logs it, so it
    /// is counted before it leaves. The encoded length.
    fn write(
        &self,
        policy: &Arc<Policy>,
        pkt: &[u8],
        q: &Parsed,
        reply: &Reply,
        ev: &QueryEvent<'_>,
        out: &mut [u8],
    ) -> usize {
        let limit = self.limit(q, ev.transport);
        let now = self.clock.now();
        let n = encode::encode(reply, pkt, q, limit, self.max_udp_payload, now, out);
        ev.emit(
            &self.metrics,
            &self.log,
            Some(policy),
            pkt,
            Some(q),
            Some(reply),
        );
        n
    }

    /// A place among the queries waiting on the runtime, or `None` at `max_waiting` (then
    /// [`Engine::answer_busy`] answers at once).
    pub fn begin_waiting(self: &Arc<Self>) -> Option<Waiting> {
        let n = self.waiting.fetch_add(1, Ordering::Relaxed);
        if n >= self.max_waiting.load(Ordering::Relaxed) {
            self.waiting.fetch_sub(1, Ordering::Relaxed);
            self.metrics.overload("waiting");
            return None;
        }
        Some(Waiting(self.clone()))
    }

    /// SERVFAIL with EDE 14 for a query that would have to wait while `max_waiting` queries
    /// already do: an answer now beats a queue without bound. Written into `out`; its length.
    pub fn answer_busy(&self, pending: &Pending, pkt: &[u8], out: &mut [u8]) -> usize {
        let Pending { policy, q, ev, .. } = pending;
        let mut ev: QueryEvent<'_> = ev.clone();
        ev.view = policy.view_for(ev.client);
        ev.refuse(Reason::Overloaded);
        let reply = Reply::code(
            rcode::SERVFAIL,
            ede::NOT_READY,
            "too many queries waiting for the upstream",
        );
        self.write(policy, pkt, q, &reply, &ev, out)
    }

    /// A datagram dropped by the client's rate limit: counted (never logged, never answered: an
    /// answer would serve a reflection attack).
    pub fn rate_limited(&self, pkt: &[u8], client: IpAddr, started: Instant) {
        let policy = self.policy.load();
        let mut ev = QueryEvent::new(client, Transport::Udp, started);
        ev.view = policy.view_for(client);
        ev.refuse(Reason::RateLimited);
        ev.emit(&self.metrics, &self.log, Some(&policy), pkt, None, None);
    }

    /// A datagram that is not a query (too short, or a response): counted, never answered.
    fn not_a_query(&self, pkt: &[u8], client: IpAddr, transport: Transport, started: Instant) {
        let mut ev = QueryEvent::new(client, transport, started);
        ev.refuse(Reason::Malformed);
        ev.emit(&self.metrics, &self.log, None, pkt, None, None);
    }

    /// The decision for one parsed query, without waiting for anything. Checks run cheapest
    /// first, and a denied name never reaches the upstream: the message's own problems, the
    /// class, meta types, the client's view, zone transfers, the view's allowlist, ANY, the
    /// cache and the fence's ledger.
    pub fn decide<'p>(
        &self,
        policy: &'p Policy,
        pkt: &[u8],
        q: &Parsed,
        now: Instant,
        ev: &mut QueryEvent<'p>,
    ) -> Decision<'p> {
        ev.view = policy.view_for(ev.client);
        if let Some(reply) = refuse_message(q, ev) {
            return Decision::Reply(reply);
        }
        let Some(view) = ev.view else {
            ev.refuse(Reason::NoView);
            return Decision::Reply(Reply::code(
                rcode::REFUSED,
                ede::PROHIBITED,
                "client is in no dnsfence view",
            ));
        };
        let qtype = RecordType::from(q.qtype);
        if matches!(qtype, RecordType::AXFR | RecordType::IXFR) {
            ev.refuse(Reason::Qtype);
            return Decision::Reply(Reply::code(
                rcode::REFUSED,
                ede::NOT_SUPPORTED,
                "zone transfers are not served",
            ));
        }
        let wire = q.name(pkt);
        let mut buf = [0u8; 256];
        // A name that is not printable ASCII cannot be on the allowlist.
        let entry = name_text(wire, &mut buf).and_then(|t| view.lookup_normalized(t));
        let sets: &'p [u32] = match entry {
            Some(entry) => {
                ev.endpoint_set = entry.values.first().copied();
                &entry.values
            }
            None => {
                ev.reason = Some(Reason::NotAllowlisted);
                if view.mode == ViewMode::Enforce {
                    ev.verdict = Verdict::Denied;
                    return Decision::Reply(deny(
                        view,
                        wire,
                        "name is not on the dnsfence allowlist",
                    ));
                }
                ev.verdict = Verdict::WouldDeny;
                &[]
            }
        };
        if qtype == RecordType::ANY {
            return Decision::Reply(match any_answer(wire, now) {
                Some(answer) => Reply::Answer {
                    answer,
                    ede: None,
                    stale: false,
                },
                None => code_servfail(),
            });
        }
        let mut lower = [0u8; 256];
        lower[..wire.len()].copy_from_slice(wire);
        crate::base::wire::lowercase_name(&mut lower[..wire.len()]);
        let Some(cached) = self.cache.get(&lower[..wire.len()], q.qtype, now) else {
            return Decision::Resolve(Work {
                view,
                sets,
                cached: None,
            });
        };
        ev.cache_hit = true;
        if let Some(reply) = self.check_chain(view, wire, &cached, ev) {
            return Decision::Reply(reply);
        }
        if let Some(fence) = &self.fence
            && !cached.addrs.is_empty()
            && ev.verdict != Verdict::Denied
        {
            let ports = self.ports(policy, view, sets, ev);
            if !fence.is_fresh(view.index, &cached.addrs, &ports, cached.age(now), now) {
                return Decision::Resolve(Work {
                    view,
                    sets,
                    cached: Some(cached),
                });
            }
        }
        Decision::Reply(Reply::Answer {
            answer: cached,
            ede: None,
            stale: false,
        })
    }

    /// With `cname_targets = "allowlisted"`, an answer whose CNAME chain leaves the view's
    /// allowlist is denied (enforce) or a would-be denial (report). `Some` with the deny reply.
    fn check_chain<'p>(
        &self,
        view: &'p View,
        wire: &[u8],
        answer: &Answer,
        ev: &mut QueryEvent<'p>,
    ) -> Option<Reply> {
        if view.cname_targets != CnameTargets::Allowlisted
            || ev.verdict != Verdict::Allowed
            || answer
                .chain
                .iter()
                .all(|t| view.lookup_normalized(t).is_some())
        {
            return None;
        }
        ev.reason = Some(Reason::CnameTarget);
        if view.mode == ViewMode::Report {
            ev.verdict = Verdict::WouldDeny;
            return None;
        }
        ev.verdict = Verdict::Denied;
        Some(deny(
            view,
            wire,
            "a CNAME target is not on the dnsfence allowlist",
        ))
    }

    /// The ports an answer's elements are keyed by in an `addr_port` view: those of the endpoint
    /// sets that allowed the name, or, for a would-be denial, those of all the view's sets.
    fn ports(
        &self,
        policy: &Policy,
        view: &View,
        sets: &[u32],
        ev: &QueryEvent<'_>,
    ) -> Vec<PortSpec> {
        match &self.fence {
            Some(fence) if fence.needs_ports(view.index) => {
                if ev.verdict == Verdict::WouldDeny {
                    policy.ports_of(&view.sets)
                } else {
                    policy.ports_of(sets)
                }
            }
            _ => Vec::new(),
        }
    }

    /// The part of a decision that waits: the upstream on a cache miss (or a stale answer when
    /// it fails or is slow), then the fence.
    async fn finish<'p>(
        self: &Arc<Self>,
        policy: &'p Policy,
        pkt: &[u8],
        q: &Parsed,
        work: Work<'p>,
        ev: &mut QueryEvent<'p>,
    ) -> Reply {
        let Work { view, sets, cached } = work;
        let wire = q.name(pkt);
        let Some(name) = lower_name(wire) else {
            return code_servfail();
        };
        let qtype = RecordType::from(q.qtype);
        let (answer, stale) = match cached {
            Some(answer) => (answer, false),
            None => match self.fetch(wire, &name, qtype, ev).await {
                Ok(fetched) => fetched,
                Err(reply) => return reply,
            },
        };
        if let Some(reply) = self.check_chain(view, wire, &answer, ev) {
            return reply;
        }
        if let Some(reply) = self
            .admit(policy, (view, sets), wire, &answer, stale, ev)
            .await
        {
            return reply;
        }
        let ede = stale.then_some(Ede {
            code: ede::STALE_ANSWER,
            text: "stale answer: the upstream failed or did not answer in time",
        });
        Reply::Answer { answer, ede, stale }
    }

    /// A cache miss: the upstream's answer, or, when it fails or is slow and an expired answer is
    /// at hand, that one (`true`: stale). `Err` with the reply for a failure and nothing stale.
    async fn fetch(
        self: &Arc<Self>,
        wire: &[u8],
        name: &Name,
        qtype: RecordType,
        ev: &mut QueryEvent<'_>,
    ) -> Result<(Arc<Answer>, bool), Reply> {
        let mut lower = [0u8; 256];
        lower[..wire.len()].copy_from_slice(wire);
        crate::base::wire::lowercase_name(&mut lower[..wire.len()]);
        let stale = self
            .cache
            .get_stale(&lower[..wire.len()], qtype.into(), self.clock.now());
        let outcome = match &stale {
            None => Some(self.resolve(name, qtype).await),
            // RFC 8767: with an expired answer at hand, the resolution runs as a task of its
            // own, so that it still refreshes the cache when the stale answer has to go out
            // first.
            Some(_) => {
                let engine = self.clone();
                let n = name.clone();
                let mut task = tokio::spawn(async move { engine.resolve(&n, qtype).await });
                tokio::select! {
                    done = &mut task => done.ok(),
                    () = tokio::time::sleep(Duration::from_millis(
                        self.stale_answer_after_ms.load(Ordering::Relaxed),
                    )) => None,
                }
            }
        };
        let fresh = match outcome {
            Some((resolved, fresh)) => {
                if resolved.coalesced {
                    ev.coalesced = true;
                } else if !matches!(resolved.result, Err(UpstreamError::Overloaded(_))) {
                    ev.upstream = Some((resolved.took, resolved.label));
                }
                match (&resolved.result, fresh) {
                    (Ok(checked), Some(answer)) => {
                        ev.dropped = checked.dropped;
                        Ok(answer)
                    }
                    (Ok(_), None) => Err(code_servfail()),
                    (Err(error), _) => Err(self.failure(name, qtype, error, ev)),
                }
            }
            None => Err(code_servfail()),
        };
        match (fresh, stale) {
            (Ok(answer), _) => Ok((answer, false)),
            (Err(_), Some(stale)) => {
                ev.stale = true;
                if ev.reason.is_some_and(|r| r != Reason::NotAllowlisted) {
                    ev.reason = None;
                }
                Ok((stale, true))
            }
            (Err(reply), None) => Err(reply),
        }
    }

    /// The answer leaves only once its addresses are in the view's sets (or the admit failed and
    /// the policy says to answer anyway). A report-mode view admits what it would deny too,
    /// tagged so: turning enforcement on then changes nothing at the firewall. `Some` with the
    /// SERVFAIL the policy asks for when the admit failed.
    async fn admit(
        &self,
        policy: &Policy,
        (view, sets): (&View, &[u32]),
        wire: &[u8],
        answer: &Arc<Answer>,
        stale: bool,
        ev: &mut QueryEvent<'_>,
    ) -> Option<Reply> {
        let fence = self.fence.as_ref().filter(|_| !answer.addrs.is_empty())?;
        let ports = self.ports(policy, view, sets, ev);
        let would_deny = ev.verdict == Verdict::WouldDeny;
        let why = || {
            let mut buf = [0u8; 256];
            Admission {
                name: name_text(wire, &mut buf).unwrap_or_default().into(),
                chain: answer.chain.clone(),
                endpoint_sets: sets.into(),
                would_deny,
                via: None,
            }
        };
        let t = Instant::now();
        // A stale answer's addresses are admitted for the TTL it goes out with.
        let stale_addrs: Vec<AnswerAddr>;
        let (addrs, age) = if stale {
            stale_addrs = answer
                .addrs
                .iter()
                .map(|a| AnswerAddr {
                    ip: a.ip,
                    ttl: encode::STALE_TTL,
                })
                .collect();
            (&stale_addrs[..], 0)
        } else {
            (&answer.addrs[..], answer.age(t))
        };
        let r = fence
            .admit(view.index, &why, addrs, &ports, age, ev.cache_hit)
            .await;
        ev.admit = Some((
            t.elapsed(),
            match &r {
                Ok(Admitted::Fresh) => "fresh",
                Ok(Admitted::Written(_)) => "ok",
                Err(e) => e.kind(),
            },
        ));
        let error = r.err()?;
        ev.fence_error = Some(error.kind());
        let mut buf = [0u8; 256];
        let name = name_text(wire, &mut buf).unwrap_or_default();
        crate::warn_limited!(%name, view = %view.name, %error, "firewall admit failed");
        self.servfail_on_admit_failure
            .load(Ordering::Relaxed)
            .then(|| {
                Reply::code(
                    rcode::SERVFAIL,
                    ede::OTHER,
                    "firewall did not confirm the answer's addresses",
                )
            })
    }

    /// Asks the upstream (coalesced, bounded) and caches what it answers.
    async fn resolve(&self, name: &Name, qtype: RecordType) -> (Resolved, Option<Arc<Answer>>) {
        let upstream = self.upstream.load_full();
        let resolved = upstream.resolve(name, qtype).await;
        let answer = match &resolved.result {
            Ok(checked) => self
                .cache
                .answer(name, qtype, checked.clone(), self.clock.now()),
            Err(_) => None,
        };
        (resolved, answer)
    }

    /// The reply to a resolution that failed, and its reason on the event.
    fn failure(
        &self,
        name: &Name,
        qtype: RecordType,
        error: &UpstreamError,
        ev: &mut QueryEvent<'_>,
    ) -> Reply {
        if !matches!(error, UpstreamError::Overloaded(_)) {
            crate::warn_limited!(%name, %qtype, %error, "upstream failure");
        }
        let (reason, ede) = match error {
            UpstreamError::Overloaded(_) => {
                self.metrics.overload("inflight");
                (
                    Reason::Overloaded,
                    (ede::NOT_READY, "too many upstream resolutions in flight"),
                )
            }
            UpstreamError::Timeout(_) => (
                Reason::UpstreamTimeout,
                (ede::NO_REACHABLE_AUTHORITY, "upstream timed out"),
            ),
            UpstreamError::Failed(_) => (
                Reason::UpstreamError,
                (ede::NETWORK_ERROR, "upstream failed"),
            ),
            UpstreamError::Chain(_) => (
                Reason::BadChain,
                (ede::OTHER, "upstream answer has a bad CNAME chain"),
            ),
        };
        if ev.reason.is_none() {
            ev.reason = Some(reason);
        }
        Reply::code(rcode::SERVFAIL, ede.0, ede.1)
    }
}

/// The message's own problems, checked before anything else (Unbound's order): not a standard
/// query, malformed, an EDNS version above 0, a class other than IN, a meta type. `Some` with
/// the reply; none of these is forwarded.
fn refuse_message(q: &Parsed, ev: &mut QueryEvent<'_>) -> Option<Reply> {
    if let Some(problem) = q.problem {
        let (reason, reply) = match problem {
            Problem::Opcode => (
                Reason::Opcode,
                Reply::code(
                    rcode::NOTIMP,
                    ede::NOT_SUPPORTED,
                    "only standard queries are served",
                ),
            ),
            Problem::Malformed => (Reason::Malformed, Reply::bare(rcode::FORMERR)),
            Problem::EdnsVersion => (Reason::EdnsVersion, Reply::bare(rcode::BADVERS)),
        };
        ev.refuse(reason);
        return Some(reply);
    }
    if q.qclass != 1 {
        ev.refuse(Reason::Class);
        return Some(Reply::bare(rcode::REFUSED));
    }
    // RFC 6895: meta types are not asked for.
    let rcode = meta_type(q.qtype)?;
    ev.refuse(Reason::Qtype);
    Some(Reply::code(
        rcode,
        ede::NOT_SUPPORTED,
        "meta query types are not served",
    ))
}

/// The view's deny answer: NXDOMAIN with a synthesized SOA, or REFUSED; EDE 15 either way.
fn deny(view: &View, wire: &[u8], text: &'static str) -> Reply {
    let (rcode, soa) = match view.deny_rcode {
        DenyRcode::Refused => (rcode::REFUSED, None),
        DenyRcode::Nxdomain => (
            rcode::NXDOMAIN,
            Some(Soa {
                owner: 12 + deny_owner(wire) as u16,
                ttl: view.deny_ttl,
            }),
        ),
    };
    Reply::Code {
        rcode,
        ede: Some(Ede {
            code: ede::BLOCKED,
            text,
        }),
        soa,
    }
}

fn code_servfail() -> Reply {
    Reply::code(
        rcode::SERVFAIL,
        ede::OTHER,
        "the upstream's answer could not be used",
    )
}

/// The response code for a meta query type (RFC 6895 §3.1), or `None` for a type that may be
/// asked. OPT, TKEY, TSIG and the unassigned meta range only ever appear in the other sections
/// of a message: FORMERR, as Unbound answers. MAILA and MAILB are obsolete query types: NOTIMP.
/// ANY, AXFR and IXFR are served (or refused) elsewhere.
fn meta_type(qtype: u16) -> Option<u16> {
    match qtype {
        41 | 128..=250 => Some(rcode::FORMERR),
        253 | 254 => Some(rcode::NOTIMP),
        _ => None,
    }
}

/// Where a denial's SOA owner starts in the question name (bytes to skip): the registrable
/// domain (public-suffix list) when it is a proper suffix of the name, else the name's parent,
/// the root for a single label. An ancestor of the name, as RFC 2308 wants of the SOA that
/// makes an NXDOMAIN cacheable, and never the name itself (an SOA there would say it exists).
fn deny_owner(wire: &[u8]) -> usize {
    let root = wire.len().saturating_sub(1);
    let Some(&first) = wire.first() else { return 0 };
    if first == 0 {
        return 0;
    }
    let parent = (first as usize + 1).min(root);
    let mut buf = [0u8; 256];
    let Some(text) = name_text(wire, &mut buf) else {
        return parent;
    };
    match psl::domain_str(text) {
        // Text and wire differ by two bytes at either end: the skip is the same.
        Some(domain) if domain.len() < text.len() => text.len() - domain.len(),
        _ => parent,
    }
}

/// A wire-form name as a lower-case [`Name`].
fn lower_name(wire: &[u8]) -> Option<Name> {
    let mut labels: Vec<&[u8]> = Vec::new();
    let mut i = 0;
    while let Some(&n) = wire.get(i) {
        if n == 0 {
            break;
        }
        labels.push(wire.get(i + 1..i + 1 + n as usize)?);
        i += 1 + n as usize;
    }
    let name = Name::from_labels(labels).ok()?;
    Some(name.to_lowercase())
}

/// RFC 8482: ANY is answered with one synthesized HINFO instead of every record.
fn any_answer(wire: &[u8], now: Instant) -> Option<Arc<Answer>> {
    let name = lower_name(wire)?;
    let hinfo = HINFO::new("RFC8482".to_string(), String::new());
    let r = Resolution {
        rcode: ResponseCode::NoError,
        answers: vec![Record::from_rdata(
            name.clone(),
            ANY_TTL,
            RData::HINFO(hinfo),
        )],
        authorities: Vec::new(),
    };
    Answer::new(
        &name,
        RecordType::ANY,
        &r,
        std::slice::from_ref(&name),
        now,
        Duration::ZERO,
    )
    .map(Arc::new)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_types() {
        for t in [41, 128, 249, 250] {
            assert_eq!(meta_type(t), Some(rcode::FORMERR), "{t}");
        }
        assert_eq!(meta_type(253), Some(rcode::NOTIMP));
        for t in [1, 28, 65, 251, 252, 255, 256, 65534] {
            assert_eq!(meta_type(t), None, "{t}");
        }
    }

    #[test]
    fn denial_soa_owners() {
        fn at(w: &[u8]) -> &[u8] {
            &w[deny_owner(w)..]
        }
        assert_eq!(
            at(b"\x03www\x07example\x03com\x00"),
            b"\x07example\x03com\x00"
        );
        assert_eq!(
            at(b"\x07example\x03com\x00"),
            b"\x03com\x00",
            "never the name itself"
        );
        assert_eq!(
            at(b"\x01a\x02b2\x02co\x02uk\x00"),
            b"\x02b2\x02co\x02uk\x00"
        );
        assert_eq!(at(b"\x04evil\x07example\x00"), b"\x07example\x00");
        assert_eq!(at(b"\x05local\x00"), b"\x00");
        assert_eq!(at(b"\x00"), b"\x00");
        assert_eq!(at(b"\x02a\xff\x03com\x00"), b"\x03com\x00");
    }

    #[test]
    fn names_from_the_wire() {
        let n = lower_name(b"\x06Manage\x09microsoft\x03COM\x00").unwrap();
        assert_eq!(n.to_ascii(), "manage.microsoft.com.");
        assert!(lower_name(b"\x00").unwrap().is_root());
        assert!(lower_name(b"\x05ab").is_none());
    }
}
