//! The answer to one question: what the upstream said ([`Resolution`]), the part of it the CNAME
//! chain from the question proves ([`Resolution::chain_from`]), and that part in wire form
//! ([`Answer`]), which the cache keeps and the encoder copies into every reply.
//!
//! dnsfence opens the firewall for the addresses it answers, so what it answers must be exactly
//! the answer to the client's question: starting at the question name, the CNAMEs owned by the
//! current name of the chain (in order, at most [`MAX_CHAIN`], no loops), the records of the asked
//! type owned by a name of the chain, nothing else. Any other record an upstream (or a spoofer)
//! put in the answer section is dropped from the answer, the cache and the fence, and counted.
//!
//! An [`Answer`] is a complete DNS response without OPT: ID 0, QR/RD/RA set, the question in
//! lower case, then the answer and authority sections with their owner names compressed against
//! the question. The encoder copies it and patches the ID, flags, question case (the same length,
//! so compression pointers stay valid, and the first owner name echoes the client's case), TTLs
//! (counted down from when it was stored) and OPT. Keeping bytes rather than records keeps the
//! cache small and a cache hit free of parsing (PowerDNS Recursor's packet cache is the model).

use std::net::IpAddr;
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::svcb::{SVCB, SvcParamValue};
use hickory_proto::rr::{Name, RData, Record, RecordType};

/// Longest CNAME chain followed from the question name (as Unbound's `max-query-restarts`
/// bounds restarts); a longer one is refused, as is a loop.
pub const MAX_CHAIN: usize = 16;

/// One address of an answer with the TTL of the record that carried it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AnswerAddr {
    /// The address.
    pub ip: IpAddr,
    /// TTL in seconds of the record it came from.
    pub ttl: u32,
}

/// What the upstream answered: the response code and the answer and authority sections.
#[derive(Debug, Clone, PartialEq)]
pub struct Resolution {
    /// NOERROR (records or NODATA) or NXDOMAIN.
    pub rcode: ResponseCode,
    /// The answer section: the CNAME chain and the records of the asked type.
    pub answers: Vec<Record>,
    /// The authority section: the zone's SOA for NXDOMAIN and NODATA (RFC 2308).
    pub authorities: Vec<Record>,
}

/// Why records of an upstream answer were dropped. A bounded set: it is a metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dropped {
    /// Owned by a name that is not on the CNAME chain from the question.
    UnrelatedOwner,
    /// Neither a CNAME of the chain nor of the asked type (DNAME, RRSIG, stray types).
    UnaskedType,
    /// Authority records other than the SOA of a negative answer.
    Authority,
}

impl Dropped {
    /// Every reason, in label order.
    pub const ALL: [Dropped; 3] = [
        Dropped::UnrelatedOwner,
        Dropped::UnaskedType,
        Dropped::Authority,
    ];

    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Dropped::UnrelatedOwner => "unrelated_owner",
            Dropped::UnaskedType => "unasked_type",
            Dropped::Authority => "authority",
        }
    }
}

/// A CNAME chain that cannot be followed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    /// A CNAME points back at a name earlier in the chain.
    #[error("the CNAME chain loops")]
    Loop,
    /// More than [`MAX_CHAIN`] CNAMEs.
    #[error("the CNAME chain is longer than {MAX_CHAIN}")]
    TooLong,
}

/// The part of an upstream answer the chain from the question proves.
#[derive(Debug, Clone, PartialEq)]
pub struct Checked {
    /// The answer, keeping only chain-proven records.
    pub resolution: Resolution,
    /// The chain: the question name, then each CNAME target in order.
    pub chain: Vec<Name>,
    /// Records dropped, by reason (indexed as [`Dropped::ALL`]).
    pub dropped: [u32; 3],
}

impl Checked {
    /// The name the chain ends at.
    pub fn target(&self) -> &Name {
        // The chain always holds at least the question name.
        self.chain.last().unwrap_or(&self.chain[0])
    }

    /// True when the chain ends at a name the upstream said nothing final about: no record of
    /// the asked type there, no NXDOMAIN and no SOA. An authority-style upstream answers a CNAME
    /// into another zone like this; a recursive resolver then asks for the target (RFC 1034
    /// §4.3.2), and so does dnsfence. A NODATA or NXDOMAIN with its SOA is final.
    pub fn dangling(&self, qtype: RecordType) -> bool {
        let r = &self.resolution;
        self.chain.len() > 1
            && r.rcode == ResponseCode::NoError
            && !r.answers.iter().any(|a| a.record_type() == qtype)
            && !r
                .authorities
                .iter()
                .any(|a| a.record_type() == RecordType::SOA)
    }

    /// Appends the answer to a follow-up question for [`Checked::target`]: its chain extends
    /// this one, its records, code and authority section are final.
    pub fn extend(&mut self, next: Checked) -> Result<(), ChainError> {
        for name in next.chain.into_iter().skip(1) {
            if self.chain.contains(&name) {
                return Err(ChainError::Loop);
            }
            self.chain.push(name);
        }
        if self.chain.len() > MAX_CHAIN + 1 {
            return Err(ChainError::TooLong);
        }
        self.resolution.answers.extend(next.resolution.answers);
        self.resolution.rcode = next.resolution.rcode;
        self.resolution.authorities = next.resolution.authorities;
        for (d, n) in self.dropped.iter_mut().zip(next.dropped) {
            *d += n;
        }
        Ok(())
    }
}

impl Resolution {
    /// Keeps what the CNAME chain starting at `qname` proves: the CNAMEs owned by the current
    /// name of the chain, followed in order; the records of `qtype` owned by a name of the chain;
    /// of the authority section, the SOA of a negative answer. Everything else is dropped and
    /// counted. A loop or a chain longer than [`MAX_CHAIN`] is an error.
    pub fn chain_from(self, qname: &Name, qtype: RecordType) -> Result<Checked, ChainError> {
        let mut dropped = [0u32; 3];
        let count = |d: &mut [u32; 3], why: Dropped| d[why as usize] += 1;
        let mut chain = vec![qname.clone()];
        let mut taken = vec![false; self.answers.len()];
        let mut kept: Vec<usize> = Vec::new();
        if qtype != RecordType::CNAME {
            loop {
                let current = &chain[chain.len() - 1];
                let next = self.answers.iter().enumerate().find(|(i, r)| {
                    !taken[*i] && r.record_type() == RecordType::CNAME && r.name == *current
                });
                let Some((i, record)) = next else { break };
                let RData::CNAME(target) = &record.data else {
                    break;
                };
                let target = target.0.clone();
                if chain.contains(&target) {
                    return Err(ChainError::Loop);
                }
                if chain.len() > MAX_CHAIN {
                    return Err(ChainError::TooLong);
                }
                taken[i] = true;
                kept.push(i);
                chain.push(target);
            }
        }
        for (i, r) in self.answers.iter().enumerate() {
            if taken[i] {
                continue;
            }
            let t = r.record_type();
            if t == qtype && chain.contains(&r.name) {
                kept.push(i);
            } else if t != qtype && t != RecordType::CNAME {
                count(&mut dropped, Dropped::UnaskedType);
            } else {
                // A record of the asked type, or a CNAME, owned off the chain.
                count(&mut dropped, Dropped::UnrelatedOwner);
            }
        }
        let mut slots: Vec<Option<Record>> = self.answers.into_iter().map(Some).collect();
        let answers: Vec<Record> = kept.iter().filter_map(|&i| slots[i].take()).collect();
        let negative = self.rcode == ResponseCode::NXDomain
            || !answers.iter().any(|r| r.record_type() == qtype);
        let mut authorities = Vec::new();
        for r in self.authorities {
            // The SOA of the zone the chain ends in; one is enough (RFC 2308 §3).
            if negative && r.record_type() == RecordType::SOA && authorities.is_empty() {
                authorities.push(r);
            } else {
                count(&mut dropped, Dropped::Authority);
            }
        }
        Ok(Checked {
            resolution: Resolution {
                rcode: self.rcode,
                answers,
                authorities,
            },
            chain,
            dropped,
        })
    }
}

/// The addresses of `records` (an answer section), each once, with the longest TTL it was seen
/// with, in order of first appearance: A and AAAA records and the `ipv4hint`/`ipv6hint` of
/// HTTPS and SVCB records (a browser may connect to a hint before it asks for A).
pub fn addresses(records: &[Record]) -> Vec<AnswerAddr> {
    let mut out: Vec<AnswerAddr> = Vec::new();
    let mut push = |ip: IpAddr, ttl: u32| match out.iter_mut().find(|a| a.ip == ip) {
        Some(a) => a.ttl = a.ttl.max(ttl),
        None => out.push(AnswerAddr { ip, ttl }),
    };
    for record in records {
        match &record.data {
            RData::A(a) => push(IpAddr::V4(a.0), record.ttl),
            RData::AAAA(aaaa) => push(IpAddr::V6(aaaa.0), record.ttl),
            RData::HTTPS(https) => svcb_hints(&https.0, &mut |ip| push(ip, record.ttl)),
            RData::SVCB(svcb) => svcb_hints(svcb, &mut |ip| push(ip, record.ttl)),
            _ => {}
        }
    }
    out
}

fn svcb_hints(svcb: &SVCB, push: &mut impl FnMut(IpAddr)) {
    for (_, value) in &svcb.svc_params {
        match value {
            SvcParamValue::Ipv4Hint(hint) => hint.0.iter().for_each(|a| push(IpAddr::V4(a.0))),
            SvcParamValue::Ipv6Hint(hint) => hint.0.iter().for_each(|a| push(IpAddr::V6(a.0))),
            _ => {}
        }
    }
}

/// An answer in wire form, ready to be copied into replies.
#[derive(Debug)]
pub struct Answer {
    /// The message, then the TTL offsets (2 bytes each, big-endian) after `len`.
    data: Box<[u8]>,
    /// Length of the message within `data`.
    len: u16,
    /// Where the question section ends.
    question_end: u16,
    /// The question's type.
    qtype: u16,
    /// When it was stored: TTLs count down from here.
    pub stored: Instant,
    /// When it stops being served from the cache.
    pub expires: Instant,
    /// The addresses the firewall admits for it.
    pub addrs: Box<[AnswerAddr]>,
    /// The CNAME targets after the question name (lower case, no trailing dot): why a target's
    /// addresses were admitted.
    pub chain: Box<[Box<str>]>,
}

impl Answer {
    /// Encodes `r` as the answer to (`qname`, `qtype`), stored at `now` and served for
    /// `lifetime`. `chain` lists the CNAME targets. `None` when it cannot be encoded (larger
    /// than a DNS message may be) or the code is neither NOERROR nor NXDOMAIN.
    pub fn new(
        qname: &Name,
        qtype: RecordType,
        r: &Resolution,
        chain: &[Name],
        now: Instant,
        lifetime: Duration,
    ) -> Option<Answer> {
        if r.rcode != ResponseCode::NoError && r.rcode != ResponseCode::NXDomain {
            return None;
        }
        let mut m = Message::new(0, MessageType::Response, OpCode::Query);
        m.metadata.recursion_desired = true;
        m.metadata.recursion_available = true;
        m.metadata.response_code = r.rcode;
        m.add_query(Query::query(qname.to_lowercase(), qtype));
        // Owner names in lower case, so that they compress against the question's (and then
        // echo the client's case) whatever case the upstream wrote them in.
        let lower = |rec: &Record| {
            let mut rec = rec.clone();
            rec.name = rec.name.to_lowercase();
            rec
        };
        m.add_answers(r.answers.iter().map(lower));
        m.add_authorities(r.authorities.iter().map(lower));
        let mut bytes = m.to_vec().ok()?;
        let offsets = crate::base::wire::ttl_offsets(&bytes)?;
        let len = u16::try_from(bytes.len()).ok()?;
        let question_end = u16::try_from(crate::base::wire::skip_name(&bytes, 12)? + 4).ok()?;
        for (off, _) in offsets {
            bytes.extend_from_slice(&off.to_be_bytes());
        }
        let text = |n: &Name| {
            let s = n.to_lowercase().to_ascii();
            s.trim_end_matches('.').into()
        };
        Some(Answer {
            data: bytes.into_boxed_slice(),
            len,
            question_end,
            qtype: u16::from(qtype),
            stored: now,
            expires: now + lifetime,
            addrs: addresses(&r.answers).into_boxed_slice(),
            chain: chain.iter().skip(1).map(text).collect(),
        })
    }

    /// The message: header, question (lower case), answer and authority sections, no OPT.
    pub fn message(&self) -> &[u8] {
        &self.data[..self.len as usize]
    }

    /// Where the question section ends in [`Answer::message`].
    pub fn question_end(&self) -> usize {
        self.question_end as usize
    }

    /// The question's type.
    pub fn qtype(&self) -> u16 {
        self.qtype
    }

    /// The response code (NOERROR or NXDOMAIN).
    pub fn rcode(&self) -> u16 {
        u16::from(self.data[3] & 0x0f)
    }

    /// The offsets of every record's TTL in [`Answer::message`].
    pub fn ttl_offsets(&self) -> impl Iterator<Item = usize> + '_ {
        self.data[self.len as usize..]
            .chunks_exact(2)
            .map(|c| u16::from_be_bytes([c[0], c[1]]) as usize)
    }

    /// Whole seconds since it was stored.
    pub fn age(&self, now: Instant) -> u32 {
        u32::try_from(now.saturating_duration_since(self.stored).as_secs()).unwrap_or(u32::MAX)
    }

    /// An answer read back from the warm-restart state: `message` as [`Answer::message`] held
    /// it, `age` seconds old by now, stored again at `now` to live `left` more. Its TTLs are
    /// counted down by `age` and its chain proven again from the question, so a state file
    /// cannot make dnsfence answer (or admit) more than an upstream answer could. `None` for a
    /// message that is not such an answer.
    pub fn restore(message: &[u8], age: u32, left: Duration, now: Instant) -> Option<Answer> {
        let m = Message::from_vec(message).ok()?;
        let q = m.queries.first()?;
        let (qname, qtype) = (q.name().clone(), q.query_type());
        let mut r = Resolution {
            rcode: m.metadata.response_code,
            answers: m.answers,
            authorities: m.authorities,
        };
        for rec in r.answers.iter_mut().chain(r.authorities.iter_mut()) {
            rec.ttl = rec.ttl.saturating_sub(age);
        }
        let checked = r.chain_from(&qname, qtype).ok()?;
        if checked.dropped != [0; 3] {
            return None;
        }
        Answer::new(
            &qname,
            qtype,
            &checked.resolution,
            &checked.chain,
            now,
            left,
        )
    }

    /// The records, TTLs counted down to `now` (for tests and tools; replies copy bytes).
    pub fn records(&self, now: Instant) -> Option<Resolution> {
        let mut m = Message::from_vec(self.message()).ok()?;
        let age = self.age(now);
        for r in m.answers.iter_mut().chain(m.authorities.iter_mut()) {
            r.ttl = r.ttl.saturating_sub(age);
        }
        Some(Resolution {
            rcode: m.metadata.response_code,
            answers: m.answers,
            authorities: m.authorities,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::rr::rdata::svcb::{IpHint, SvcParamKey};
    use hickory_proto::rr::rdata::{A, AAAA, CNAME, HTTPS, MX, SOA, TXT};

    fn n(s: &str) -> Name {
        Name::from_ascii(s).unwrap()
    }

    fn rec(name: &str, ttl: u32, data: RData) -> Record {
        Record::from_rdata(n(name), ttl, data)
    }

    fn cname(from: &str, to: &str) -> Record {
        rec(from, 300, RData::CNAME(CNAME(n(to))))
    }

    fn a(name: &str, last: u8) -> Record {
        rec(name, 60, RData::A(A::new(192, 0, 2, last)))
    }

    fn soa(zone: &str) -> Record {
        rec(
            zone,
            3600,
            RData::SOA(SOA::new(n("ns."), n("h."), 1, 1, 1, 1, 300)),
        )
    }

    fn res(rcode: ResponseCode, answers: Vec<Record>, authorities: Vec<Record>) -> Resolution {
        Resolution {
            rcode,
            answers,
            authorities,
        }
    }

    #[test]
    fn chain_hints_and_dedup() {
        let https = HTTPS(SVCB::new(
            1,
            Name::root(),
            vec![
                (
                    SvcParamKey::Ipv4Hint,
                    SvcParamValue::Ipv4Hint(IpHint(vec![
                        A::new(192, 0, 2, 7),
                        A::new(192, 0, 2, 1),
                    ])),
                ),
                (
                    SvcParamKey::Ipv6Hint,
                    SvcParamValue::Ipv6Hint(IpHint(vec![AAAA::new(
                        0x2001, 0xdb8, 0, 0, 0, 0, 0, 7,
                    )])),
                ),
            ],
        ));
        let records = vec![
            cname("a.example.", "b.example."),
            rec("b.example.", 60, RData::A(A::new(192, 0, 2, 1))),
            rec(
                "b.example.",
                60,
                RData::AAAA(AAAA::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1)),
            ),
            rec("b.example.", 120, RData::HTTPS(https)),
            rec("b.example.", 60, RData::TXT(TXT::new(vec!["v=1".into()]))),
            rec("b.example.", 60, RData::MX(MX::new(10, Name::root()))),
        ];
        let got = addresses(&records);
        let want: Vec<(IpAddr, u32)> = vec![
            ("192.0.2.1".parse().unwrap(), 120),
            ("2001:db8::1".parse().unwrap(), 60),
            ("192.0.2.7".parse().unwrap(), 120),
            ("2001:db8::7".parse().unwrap(), 120),
        ];
        assert_eq!(got.iter().map(|a| (a.ip, a.ttl)).collect::<Vec<_>>(), want);
        assert!(addresses(&[]).is_empty());
    }

    #[test]
    fn only_what_the_chain_proves_is_kept() {
        let upstream = res(
            ResponseCode::NoError,
            vec![
                // Out of order on purpose: the chain is followed by owner, not position.
                a("c.example.", 3),
                cname("b.example.", "c.example."),
                cname("a.example.", "b.example."),
                // Injected: an A for an unrelated name, and a CNAME owned by one.
                a("evil.example.", 66),
                cname("other.example.", "evil.example."),
                // Not the asked type.
                rec("c.example.", 60, RData::TXT(TXT::new(vec!["x".into()]))),
            ],
            vec![soa("example.")],
        );
        let c = upstream
            .chain_from(&n("A.Example."), RecordType::A)
            .unwrap();
        let kept: Vec<String> = c
            .resolution
            .answers
            .iter()
            .map(|r| format!("{} {}", r.name, r.record_type()))
            .collect();
        assert_eq!(
            kept,
            ["a.example. CNAME", "b.example. CNAME", "c.example. A"]
        );
        assert_eq!(c.chain.len(), 3);
        assert_eq!(c.target(), &n("c.example."));
        // unrelated owner: the A and the CNAME of others; unasked: the TXT; the SOA of a
        // positive answer: authority.
        assert_eq!(c.dropped, [2, 1, 1]);
        assert!(!c.dangling(RecordType::A));
        let addrs = addresses(&c.resolution.answers);
        assert_eq!(addrs.len(), 1);
        assert_eq!(addrs[0].ip, "192.0.2.3".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn negative_answers_keep_chain_and_soa() {
        let nodata = res(
            ResponseCode::NoError,
            vec![cname("a.example.", "b.example.")],
            vec![soa("example."), soa("other.")],
        )
        .chain_from(&n("a.example."), RecordType::TXT)
        .unwrap();
        assert_eq!(nodata.resolution.answers.len(), 1);
        assert_eq!(nodata.resolution.authorities.len(), 1);
        assert!(
            !nodata.dangling(RecordType::TXT),
            "NODATA with SOA is final"
        );
        let dangling = res(
            ResponseCode::NoError,
            vec![cname("a.example.", "b.other.")],
            vec![],
        )
        .chain_from(&n("a.example."), RecordType::TXT)
        .unwrap();
        assert!(dangling.dangling(RecordType::TXT));
        let nx = res(
            ResponseCode::NXDomain,
            vec![cname("a.example.", "gone.example.")],
            vec![soa("example.")],
        )
        .chain_from(&n("a.example."), RecordType::A)
        .unwrap();
        assert_eq!(nx.resolution.rcode, ResponseCode::NXDomain);
        assert_eq!(nx.resolution.answers.len(), 1);
        assert!(!nx.dangling(RecordType::A));
    }

    #[test]
    fn loops_and_long_chains_are_refused() {
        let looped = res(
            ResponseCode::NoError,
            vec![
                cname("a.example.", "b.example."),
                cname("b.example.", "a.example."),
            ],
            vec![],
        );
        assert_eq!(
            looped.chain_from(&n("a.example."), RecordType::A),
            Err(ChainError::Loop)
        );
        let long: Vec<Record> = (0..=MAX_CHAIN)
            .map(|i| cname(&format!("n{i}.example."), &format!("n{}.example.", i + 1)))
            .collect();
        let r = res(ResponseCode::NoError, long.clone(), vec![]);
        assert_eq!(
            r.chain_from(&n("n0.example."), RecordType::A),
            Err(ChainError::TooLong)
        );
        let ok = res(ResponseCode::NoError, long[..MAX_CHAIN].to_vec(), vec![]);
        assert_eq!(
            ok.chain_from(&n("n0.example."), RecordType::A)
                .unwrap()
                .chain
                .len(),
            MAX_CHAIN + 1
        );
        // Asking for the CNAME itself: the CNAME is the answer, not a chain to follow.
        let c = res(
            ResponseCode::NoError,
            vec![cname("a.example.", "b.example."), a("b.example.", 1)],
            vec![],
        )
        .chain_from(&n("a.example."), RecordType::CNAME)
        .unwrap();
        assert_eq!(c.resolution.answers.len(), 1);
        assert_eq!(c.chain.len(), 1);
    }

    #[test]
    fn wire_answer_compresses_against_the_question() {
        let r = res(
            ResponseCode::NoError,
            vec![cname("a.example.", "b.example."), a("b.example.", 1)],
            vec![],
        );
        let chain = [n("a.example."), n("b.example.")];
        let now = Instant::now();
        let ans = Answer::new(
            &n("A.EXAMPLE."),
            RecordType::A,
            &r,
            &chain,
            now,
            Duration::from_secs(60),
        )
        .unwrap();
        let m = ans.message();
        let qe = ans.question_end();
        assert_eq!(
            &m[12..qe - 4],
            b"\x01a\x07example\x00",
            "question in lower case"
        );
        assert_eq!(
            &m[qe..qe + 2],
            &[0xc0, 12],
            "first owner points at the question"
        );
        assert_eq!(ans.ttl_offsets().count(), 2);
        assert_eq!(&*ans.chain, &["b.example".into()] as &[Box<str>]);
        assert_eq!(ans.addrs.len(), 1);
        let back = ans.records(now + Duration::from_secs(10)).unwrap();
        assert_eq!(
            back.answers.iter().map(|r| r.ttl).collect::<Vec<_>>(),
            [290, 50]
        );
    }
}
