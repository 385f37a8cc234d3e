//! One event per query: what was decided and how it went, counted and logged together by
//! [`QueryEvent::emit`] (vector's internal-events pattern), so the metrics and the query log can
//! never tell two stories. Whatever the transport, the same event is emitted the same way.

use std::net::IpAddr;
use std::time::{Duration, Instant, SystemTime};

pub use crate::base::outcome::{Reason, Verdict};
use crate::catalog::policy::Policy;
use crate::catalog::policy::View;
use crate::query::encode::Reply;
use crate::query::log::{Entry, QueryLog};
use crate::query::metrics::{self, Metrics};
use crate::query::parse::Parsed;
use std::sync::Arc;

/// The transport a query came over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// UDP.
    Udp,
    /// TCP.
    Tcp,
}

impl Transport {
    /// The label in the query log.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
        }
    }
}

/// One query, from arrival to the answer handed to the socket.
#[derive(Debug, Clone)]
pub struct QueryEvent<'p> {
    /// The client (IPv4-mapped IPv6 addresses as IPv4).
    pub client: IpAddr,
    /// UDP or TCP.
    pub transport: Transport,
    /// When the query arrived.
    pub started: Instant,
    /// The client's view.
    pub view: Option<&'p View>,
    /// The decision.
    pub verdict: Verdict,
    /// Why it was denied, refused or failed.
    pub reason: Option<Reason>,
    /// The endpoint set (catalog index; the first of several) that allowed the name.
    pub endpoint_set: Option<u32>,
    /// Whether the answer came from the cache.
    pub cache_hit: bool,
    /// Why the firewall did not confirm the answer's addresses, when it did not.
    pub fence_error: Option<&'static str>,
    /// Upstream latency and result label, on a cache miss that asked the upstream.
    pub upstream: Option<(Duration, &'static str)>,
    /// A cache miss that waited for an identical question's resolution.
    pub coalesced: bool,
    /// Answered with an expired answer (RFC 8767).
    pub stale: bool,
    /// Admit latency and result label, when the fence was asked.
    pub admit: Option<(Duration, &'static str)>,
    /// Upstream records dropped because the chain did not prove them (see `answer.rs`).
    pub dropped: [u32; 3],
}

impl<'p> QueryEvent<'p> {
    /// A query from `client` that arrived at `started`; allowed until decided otherwise.
    pub fn new(client: IpAddr, transport: Transport, started: Instant) -> QueryEvent<'p> {
        QueryEvent {
            client,
            transport,
            started,
            view: None,
            verdict: Verdict::Allowed,
            reason: None,
            endpoint_set: None,
            cache_hit: false,
            fence_error: None,
            upstream: None,
            coalesced: false,
            stale: false,
            admit: None,
            dropped: [0; 3],
        }
    }

    /// The event without its view, to carry past the policy guard it was decided under (the
    /// view is set again from the same policy when it continues).
    pub fn detached(self) -> QueryEvent<'static> {
        let QueryEvent {
            client,
            transport,
            started,
            view: _,
            verdict,
            reason,
            endpoint_set,
            cache_hit,
            fence_error,
            upstream,
            coalesced,
            stale,
            admit,
            dropped,
        } = self;
        QueryEvent {
            client,
            transport,
            started,
            view: None,
            verdict,
            reason,
            endpoint_set,
            cache_hit,
            fence_error,
            upstream,
            coalesced,
            stale,
            admit,
            dropped,
        }
    }

    /// Marks the query refused for `reason`.
    pub fn refuse(&mut self, reason: Reason) {
        self.verdict = Verdict::Refused;
        self.reason = Some(reason);
    }

    /// Counts the query in `m` and writes its line to `log`. `policy` is the one the query was
    /// decided with, `pkt` and `q` the query (`q` is `None` for a datagram that did not parse at
    /// all), `reply` what was sent (`None`: nothing was).
    pub fn emit(
        &self,
        m: &Metrics,
        log: &QueryLog,
        policy: Option<&Arc<Policy>>,
        pkt: &[u8],
        q: Option<&Parsed>,
        reply: Option<&Reply>,
    ) {
        let qtype = q.map_or(0, |q| q.qtype);
        let view = self.view.map_or(metrics::NO_VIEW, |v| v.name.as_str());
        let verdict = self.verdict as usize;
        let counters = m.view(view);
        counters.query(m, metrics::qtype_label_of(qtype), verdict);
        m.response(verdict, self.started.elapsed());
        match self.verdict {
            Verdict::Allowed => {
                let set = policy
                    .zip(self.endpoint_set)
                    .and_then(|(p, i)| p.catalog.sets.get(i as usize));
                if let Some(set) = set {
                    counters.allowed(m, &set.id);
                }
            }
            Verdict::Denied | Verdict::Refused => {
                if let Some(reason) = self.reason {
                    counters.denied(m, reason);
                }
            }
            Verdict::WouldDeny => {}
        }
        // A dropped datagram (rate limit, not a query) gets no line: it got no answer.
        let logging = reply.is_some() && log.wants(self.verdict);
        let denied = matches!(self.verdict, Verdict::Denied | Verdict::WouldDeny);
        if logging || denied {
            // The name as text and its registrable domain, once for the metrics and the log.
            let mut buf = [0u8; 256];
            let text = q.and_then(|q| crate::base::wire::name_text(q.name(pkt), &mut buf));
            let domain = text.map_or("", |t| psl::domain_str(t).unwrap_or(t));
            if denied && let Some(name) = text {
                counters.denied_name(m, name, domain);
            }
            if let Some(reply) = reply.filter(|_| logging) {
                log.log(self.entry(policy, pkt, q, reply), domain);
            }
        }
        if self.upstream.is_some() || self.coalesced {
            m.cache_misses.inc();
        } else if self.cache_hit {
            m.cache_hits.inc();
        }
        if self.coalesced {
            m.upstream_coalesced.inc();
        }
        if self.stale {
            m.stale_answers.inc();
        }
        if let Some((t, result)) = self.upstream {
            m.upstream_requests.with_label_values(&[result]).inc();
            m.upstream_duration.observe(t.as_secs_f64());
        }
        for (why, n) in crate::resolve::answer::Dropped::ALL
            .iter()
            .zip(self.dropped)
        {
            if n > 0 {
                m.records_dropped(*why, n);
            }
        }
        if let Some((t, result)) = self.admit {
            m.fence_admits.with_label_values(&[result]).inc();
            if result != "fresh" {
                m.fence_admit_duration.observe(t.as_secs_f64());
            }
        }
    }

    /// The log line, as plain data: no formatting here, the writer thread does that.
    fn entry(
        &self,
        policy: Option<&Arc<Policy>>,
        pkt: &[u8],
        q: Option<&Parsed>,
        reply: &Reply,
    ) -> Entry {
        let elapsed = self.started.elapsed();
        let time = SystemTime::now()
            .checked_sub(elapsed)
            .unwrap_or_else(SystemTime::now);
        let wire = q.map_or(&[][..], |q| q.name(pkt));
        let mut name = [0u8; 255];
        let len = wire.len().min(name.len());
        name[..len].copy_from_slice(&wire[..len]);
        Entry {
            time,
            client: self.client,
            protocol: self.transport.as_str(),
            policy: policy.cloned(),
            view: self.view.map(|v| v.index as u16),
            name,
            name_len: len as u8,
            qtype: q.map_or(0, |q| q.qtype),
            verdict: self.verdict,
            endpoint_set: self.endpoint_set,
            reason: self.reason,
            rcode: reply.rcode(),
            duration_us: u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX),
            cache_hit: self.cache_hit,
            stale: self.stale,
            fence_error: self.fence_error,
            answer: match reply {
                Reply::Answer { answer, .. } => Some(answer.clone()),
                Reply::Code { .. } => None,
            },
        }
    }
}
