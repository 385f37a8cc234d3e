//! The one encoder: a [`Reply`] and the query it answers → the bytes every transport sends.
//!
//! Header: the query's ID, opcode, RD and CD; QR and RA set; AA, AD and Z clear. Question: the
//! client's own bytes, so its case (and 0x20 randomization) comes back as sent. An answer is the
//! cached wire form (see `answer.rs`) with TTLs counted down; its owner names are compressed
//! against the question, so the first one echoes the client's case too. OPT, when the client
//! sent one: dnsfence's own `max_udp_payload`, the client's DO bit, the extended rcode, and an
//! RFC 8914 extended error when there is one. An answer larger than the client may receive is
//! replaced by the header with TC set, the question and the OPT: nothing else (a half record
//! would be a malformed message), and the client retries over TCP.

use std::sync::Arc;
use std::time::Instant;

use crate::query::parse::Parsed;
use crate::resolve::answer::Answer;

/// RFC 8914 extended DNS error codes dnsfence sends.
pub mod ede {
    /// The option code of Extended DNS Errors in EDNS.
    pub const OPTION_CODE: u16 = 15;
    /// Other: the firewall did not confirm the answer's addresses; an answer we cannot use.
    pub const OTHER: u16 = 0;
    /// Stale Answer: served past its TTL because the upstream failed or was slow (RFC 8767).
    pub const STALE_ANSWER: u16 = 3;
    /// Not Ready: dnsfence is at one of its limits (resolutions in flight, queries waiting) and
    /// answers at once rather than queue without bound.
    pub const NOT_READY: u16 = 14;
    /// Blocked: the name is not on the view's allowlist.
    pub const BLOCKED: u16 = 15;
    /// Prohibited: the client is in no view.
    pub const PROHIBITED: u16 = 18;
    /// Not Supported: an opcode or query type dnsfence does not serve.
    pub const NOT_SUPPORTED: u16 = 21;
    /// No Reachable Authority: the upstream did not answer in time.
    pub const NO_REACHABLE_AUTHORITY: u16 = 22;
    /// Network Error: the upstream exchange failed.
    pub const NETWORK_ERROR: u16 = 23;
}

/// Response codes dnsfence sends (the extended ones need an OPT to carry their upper bits).
pub use crate::base::wire::rcode;

/// An RFC 8914 extended error: the info code and a text for humans.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ede {
    /// The INFO-CODE.
    pub code: u16,
    /// EXTRA-TEXT.
    pub text: &'static str,
}

/// The SOA of a denial, synthesized so that stub caches cache it (RFC 2308): its owner is a
/// suffix of the question name (a compression pointer into the client's question, so no
/// allocation and the client's case), its TTL and MINIMUM the view's `deny_ttl_secs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Soa {
    /// Where the owner name starts in the message (12 + bytes of the question name skipped).
    pub owner: u16,
    /// TTL and MINIMUM.
    pub ttl: u32,
}

/// MNAME of denial SOAs: `dnsfence.invalid.` (RFC 6761: never resolves).
const SOA_MNAME: &[u8] = b"\x08dnsfence\x07invalid\x00";
/// Bytes of a denial SOA record: owner pointer, type/class/TTL/length, MNAME, RNAME
/// (`hostmaster.` + a pointer to MNAME), five counters.
const SOA_LEN: usize = 2 + 10 + SOA_MNAME.len() + 11 + 2 + 20;

/// What a query is answered with, decided before anything is encoded.
#[derive(Debug, Clone)]
pub enum Reply {
    /// Header, question and OPT: an error or a denial, with an extended error; a denial may
    /// carry a synthesized SOA in the authority section.
    Code {
        /// The response code (extended codes allowed).
        rcode: u16,
        /// The extended error, sent when the client speaks EDNS.
        ede: Option<Ede>,
        /// A synthesized SOA for the authority section.
        soa: Option<Soa>,
    },
    /// An answer (records, NODATA or NXDOMAIN).
    Answer {
        /// The answer in wire form.
        answer: Arc<Answer>,
        /// An extended error to attach.
        ede: Option<Ede>,
        /// Served past its expiry (RFC 8767): every TTL is [`STALE_TTL`].
        stale: bool,
    },
}

impl Reply {
    /// A code with an extended error.
    pub fn code(rcode: u16, code: u16, text: &'static str) -> Reply {
        Reply::Code {
            rcode,
            ede: Some(Ede { code, text }),
            soa: None,
        }
    }

    /// A bare code, without extended error.
    pub fn bare(rcode: u16) -> Reply {
        Reply::Code {
            rcode,
            ede: None,
            soa: None,
        }
    }

    /// The response code sent.
    pub fn rcode(&self) -> u16 {
        match self {
            Reply::Code { rcode, .. } => *rcode,
            Reply::Answer { answer, .. } => answer.rcode(),
        }
    }

    fn ede(&self) -> Option<Ede> {
        match self {
            Reply::Code { ede, .. } | Reply::Answer { ede, .. } => *ede,
        }
    }
}

/// The TTL of a stale answer's records (RFC 8767 §4 recommends 30 s).
pub const STALE_TTL: u32 = 30;

/// Bytes of an OPT record without options.
pub const OPT_LEN: usize = 11;

/// The largest reply to `q` before truncation: what a TCP buffer must hold.
pub fn wire_len(reply: &Reply, q: &Parsed) -> usize {
    let body = match reply {
        Reply::Code { soa: None, .. } => q.question_end,
        Reply::Code { soa: Some(_), .. } => q.question_end + SOA_LEN,
        Reply::Answer { answer, .. } => answer.message().len().max(q.question_end),
    };
    body + opt_len(reply, q)
}

fn opt_len(reply: &Reply, q: &Parsed) -> usize {
    match (q.edns, reply.ede()) {
        (None, _) => 0,
        (Some(_), None) => OPT_LEN,
        (Some(_), Some(e)) => OPT_LEN + 6 + e.text.len(),
    }
}

/// Writes the reply to the query `pkt` (parsed as `q`) into `out` and returns its length.
/// `limit` is the most the client may receive (512 or its EDNS size for UDP, 65535 for TCP);
/// `advertise` the payload size put in the OPT. `out` must hold [`wire_len`] bytes, or at least
/// `limit` when that is smaller.
pub fn encode(
    reply: &Reply,
    pkt: &[u8],
    q: &Parsed,
    limit: usize,
    advertise: u16,
    now: Instant,
    out: &mut [u8],
) -> usize {
    let qe = q.question_end;
    let qd = u16::from(qe > 12);
    let ar = u16::from(q.edns.is_some());
    let opt = opt_len(reply, q);
    let rcode = reply.rcode();
    if let Reply::Answer { answer, stale, .. } = reply {
        let msg = answer.message();
        if msg.len() + opt <= limit && answer.question_end() == qe {
            out[..msg.len()].copy_from_slice(msg);
            let (an, ns) = (count(msg, 6), count(msg, 8));
            header(out, pkt, rcode, false, [1, an, ns, ar]);
            out[12..qe].copy_from_slice(&pkt[12..qe]);
            let age = answer.age(now);
            for off in answer.ttl_offsets() {
                let ttl = u32::from_be_bytes([msg[off], msg[off + 1], msg[off + 2], msg[off + 3]]);
                let ttl = if *stale {
                    STALE_TTL
                } else {
                    ttl.saturating_sub(age)
                };
                out[off..off + 4].copy_from_slice(&ttl.to_be_bytes());
            }
            let n = msg.len();
            return n + write_opt(&mut out[n..], reply, q, advertise);
        }
    }
    // A code, or an answer that does not fit: header, question, OPT.
    let truncated = matches!(reply, Reply::Answer { .. });
    let soa = match reply {
        Reply::Code { soa: Some(soa), .. } if qe > 12 => Some(*soa),
        _ => None,
    };
    header(
        out,
        pkt,
        rcode,
        truncated,
        [qd, 0, u16::from(soa.is_some()), ar],
    );
    out[12..qe].copy_from_slice(&pkt[12..qe]);
    let mut n = qe;
    if let Some(soa) = soa {
        n += write_soa(&mut out[n..], n, soa);
    }
    n + write_opt(&mut out[n..], reply, q, advertise)
}

/// A denial's SOA record at message offset `at`; returns its length.
fn write_soa(out: &mut [u8], at: usize, soa: Soa) -> usize {
    out[0] = 0xc0 | (soa.owner >> 8) as u8;
    out[1] = soa.owner as u8;
    out[2..4].copy_from_slice(&6u16.to_be_bytes()); // SOA
    out[4..6].copy_from_slice(&1u16.to_be_bytes()); // IN
    out[6..10].copy_from_slice(&soa.ttl.to_be_bytes());
    out[10..12].copy_from_slice(&((SOA_LEN - 12) as u16).to_be_bytes());
    let mname = 12;
    out[mname..mname + SOA_MNAME.len()].copy_from_slice(SOA_MNAME);
    let rname = mname + SOA_MNAME.len();
    out[rname] = 10;
    out[rname + 1..rname + 11].copy_from_slice(b"hostmaster");
    let pointer = (at + mname) as u16;
    out[rname + 11] = 0xc0 | (pointer >> 8) as u8;
    out[rname + 12] = pointer as u8;
    let counters = rname + 13;
    // Serial, refresh, retry, expire: fixed; MINIMUM: the negative TTL (RFC 2308 §4).
    for (i, v) in [1u32, 3600, 600, 86400, soa.ttl].into_iter().enumerate() {
        out[counters + 4 * i..counters + 4 * i + 4].copy_from_slice(&v.to_be_bytes());
    }
    SOA_LEN
}

fn count(msg: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([msg[at], msg[at + 1]])
}

fn header(out: &mut [u8], pkt: &[u8], rcode: u16, truncated: bool, counts: [u16; 4]) {
    out[0] = pkt[0];
    out[1] = pkt[1];
    // QR, the query's opcode and RD; TC when truncated.
    out[2] = 0x80 | (pkt[2] & 0x79) | if truncated { 0x02 } else { 0 };
    // RA, the query's CD, the low four bits of the code.
    out[3] = 0x80 | (pkt[3] & 0x10) | (rcode & 0x0f) as u8;
    for (i, c) in counts.into_iter().enumerate() {
        out[4 + 2 * i..6 + 2 * i].copy_from_slice(&c.to_be_bytes());
    }
}

/// The OPT record, when the query had one; returns its length.
fn write_opt(out: &mut [u8], reply: &Reply, q: &Parsed, advertise: u16) -> usize {
    let Some(edns) = q.edns else { return 0 };
    let ede = reply.ede();
    let rdlen = ede.map_or(0, |e| 6 + e.text.len());
    out[0] = 0;
    out[1..3].copy_from_slice(&41u16.to_be_bytes());
    out[3..5].copy_from_slice(&advertise.to_be_bytes());
    // TTL: extended rcode (upper 8 bits), version 0, DO as the client set it.
    out[5] = (reply.rcode() >> 4) as u8;
    out[6] = 0;
    out[7] = if edns.dnssec { 0x80 } else { 0 };
    out[8] = 0;
    out[9..11].copy_from_slice(&(rdlen as u16).to_be_bytes());
    if let Some(e) = ede {
        out[11..13].copy_from_slice(&ede::OPTION_CODE.to_be_bytes());
        out[13..15].copy_from_slice(&((2 + e.text.len()) as u16).to_be_bytes());
        out[15..17].copy_from_slice(&e.code.to_be_bytes());
        out[17..17 + e.text.len()].copy_from_slice(e.text.as_bytes());
    }
    OPT_LEN + rdlen
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::query::parse::{parse, tests::query};
    use crate::resolve::answer::Resolution;
    use hickory_proto::op::{Message, ResponseCode};
    use hickory_proto::rr::rdata::A;
    use hickory_proto::rr::rdata::opt::{EdnsCode, EdnsOption};
    use hickory_proto::rr::{Name, RData, Record, RecordType};
    use std::time::Duration;

    const NAME: &[u8] = b"\x04eViL\x07example\x00";

    fn big_answer(n: u8) -> Arc<Answer> {
        let name = Name::from_ascii("evil.example.").unwrap();
        let r = Resolution {
            rcode: ResponseCode::NoError,
            answers: (0..n)
                .map(|i| Record::from_rdata(name.clone(), 60, RData::A(A::new(198, 51, 100, i))))
                .collect(),
            authorities: vec![],
        };
        let t0 = Instant::now() - Duration::from_secs(5);
        Arc::new(
            Answer::new(
                &name,
                RecordType::A,
                &r,
                std::slice::from_ref(&name),
                t0,
                Duration::from_secs(60),
            )
            .unwrap(),
        )
    }

    fn encode_vec(reply: &Reply, pkt: &[u8], limit: usize) -> Vec<u8> {
        let q = parse(pkt).unwrap();
        let mut out = vec![0u8; wire_len(reply, &q).max(limit)];
        let n = encode(reply, pkt, &q, limit, 1232, Instant::now(), &mut out);
        out.truncate(n);
        out
    }

    #[test]
    fn codes_carry_the_ede_and_our_payload_size() {
        let pkt = query(NAME, 1, Some((4096, true, 0, &[])));
        let reply = Reply::code(rcode::REFUSED, ede::BLOCKED, "blocked");
        let m = Message::from_vec(&encode_vec(&reply, &pkt, 512)).unwrap();
        assert_eq!(m.metadata.response_code, ResponseCode::Refused);
        assert_eq!(m.metadata.id, 0x1234);
        assert!(m.metadata.recursion_desired && m.metadata.recursion_available);
        assert_eq!(m.queries[0].name().to_ascii(), "eViL.example.");
        let edns = m.edns.unwrap();
        assert_eq!(edns.max_payload(), 1232, "ours, not the client's 4096");
        assert!(edns.flags().dnssec_ok);
        match edns.option(EdnsCode::Unknown(15)).unwrap() {
            EdnsOption::Unknown(15, d) => {
                assert_eq!(&d[..2], &15u16.to_be_bytes());
                assert_eq!(&d[2..], b"blocked");
            }
            other => panic!("{other:?}"),
        }
        // BADVERS: 16 = upper bits 1 in the OPT, low bits 0 in the header.
        let out = encode_vec(&Reply::bare(rcode::BADVERS), &pkt, 512);
        assert_eq!(out[3] & 0x0f, 0);
        let opt = 12 + NAME.len() + 4;
        assert_eq!(out[opt + 5], 1);
    }

    #[test]
    fn answers_echo_case_and_count_ttls_down() {
        let pkt = query(NAME, 1, None);
        let reply = Reply::Answer {
            answer: big_answer(2),
            ede: None,
            stale: false,
        };
        let out = encode_vec(&reply, &pkt, 512);
        let m = Message::from_vec(&out).unwrap();
        assert_eq!(m.answers.len(), 2);
        assert_eq!(
            m.answers[0].name.to_ascii(),
            "eViL.example.",
            "owner echoes the question"
        );
        assert_eq!(m.answers[0].ttl, 55);
        assert!(m.edns.is_none());
    }

    #[test]
    fn truncation_is_header_and_question_only() {
        // 40 A records: about 680 bytes, over 512.
        let reply = Reply::Answer {
            answer: big_answer(40),
            ede: None,
            stale: false,
        };
        let pkt = query(NAME, 1, None);
        let out = encode_vec(&reply, &pkt, 512);
        assert_eq!(
            out.len(),
            12 + NAME.len() + 4,
            "header and question, nothing else"
        );
        let m = Message::from_vec(&out).unwrap();
        assert!(m.metadata.truncation);
        assert_eq!((m.answers.len(), m.queries.len()), (0, 1));
        let pkt = query(NAME, 1, Some((512, false, 0, &[])));
        let m = Message::from_vec(&encode_vec(&reply, &pkt, 512)).unwrap();
        assert!(m.metadata.truncation && m.edns.is_some() && m.answers.is_empty());
        let pkt = query(NAME, 1, Some((1232, false, 0, &[])));
        let m = Message::from_vec(&encode_vec(&reply, &pkt, 1232)).unwrap();
        assert!(!m.metadata.truncation);
        assert_eq!(m.answers.len(), 40);
    }

    #[test]
    fn header_only_when_there_is_no_question() {
        let mut pkt = query(NAME, 1, None);
        pkt[5] = 2;
        let reply = Reply::bare(rcode::FORMERR);
        let out = encode_vec(&reply, &pkt, 512);
        assert_eq!(out.len(), 12);
        let m = Message::from_vec(&out).unwrap();
        assert_eq!(m.metadata.response_code, ResponseCode::FormErr);
        assert!(m.queries.is_empty());
    }
}
