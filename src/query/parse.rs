//! The one DNS message parser of the query path: header, question and EDNS, read in place from
//! the bytes the transport received (no allocation, no copy).
//!
//! The checks follow Unbound's order, so that a client gets the same code from either:
//! opcode (NOTIMP), TC set in a query, question count, answer or authority records, a question
//! or record that does not parse, a malformed OPT (not at the root, two of them, options running
//! past its data) — all FORMERR — then an EDNS version above 0 (BADVERS).

/// What a query's OPT record said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Edns {
    /// The client's UDP payload size (at least 512: smaller values count as 512, RFC 6891).
    pub payload: u16,
    /// The DO bit.
    pub dnssec: bool,
    /// The EDNS version.
    pub version: u8,
}

/// Why a query is answered before any policy decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Problem {
    /// Not a standard query (NOTIMP).
    Opcode,
    /// Does not parse, or breaks a rule of the message format (FORMERR).
    Malformed,
    /// EDNS version above 0 (BADVERS).
    EdnsVersion,
}

/// A query read from the wire. `Copy`: a task that outlives the receive buffer keeps the bytes
/// and this.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parsed {
    /// End of the question section; 12 when there is no question to echo.
    pub question_end: usize,
    /// The question's type (0 without a question).
    pub qtype: u16,
    /// The question's class (0 without a question).
    pub qclass: u16,
    /// The query's EDNS, when it had a well-formed OPT.
    pub edns: Option<Edns>,
    /// Set when the query is answered with an error code before any policy decision.
    pub problem: Option<Problem>,
}

impl Parsed {
    /// The question name in wire form (empty without a question).
    pub fn name<'a>(&self, pkt: &'a [u8]) -> &'a [u8] {
        if self.question_end > 12 {
            &pkt[12..self.question_end - 4]
        } else {
            &[]
        }
    }
}

fn u16_at(pkt: &[u8], i: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*pkt.get(i)?, *pkt.get(i + 1)?]))
}

/// Reads a query. `None` for what gets no answer at all: fewer than 12 bytes (no ID to answer
/// to) or a response (answering responses feeds reflection loops).
pub fn parse(pkt: &[u8]) -> Option<Parsed> {
    if pkt.len() < 12 || pkt[2] & 0x80 != 0 {
        return None;
    }
    let count = |i| u16_at(pkt, i).unwrap_or(0);
    let (qd, an, ns, ar) = (count(4), count(6), count(8), count(10));
    let mut p = Parsed {
        question_end: 12,
        qtype: 0,
        qclass: 0,
        edns: None,
        problem: None,
    };
    let question = if qd == 1 { question(pkt) } else { None };
    if let Some((end, qtype, qclass)) = question {
        p.question_end = end;
        p.qtype = qtype;
        p.qclass = qclass;
    }
    let records = question.and_then(|(end, ..)| records(pkt, end, an, ns, ar));
    if let Some(Ok(edns)) = records {
        p.edns = edns;
    }
    let opcode = (pkt[2] >> 3) & 0x0f;
    p.problem = if opcode != 0 {
        Some(Problem::Opcode)
    } else if pkt[2] & 0x02 != 0 || question.is_none() || an != 0 || ns != 0 {
        Some(Problem::Malformed)
    } else {
        match records {
            None | Some(Err(())) => Some(Problem::Malformed),
            Some(Ok(Some(e))) if e.version > 0 => Some(Problem::EdnsVersion),
            Some(Ok(_)) => None,
        }
    };
    Some(p)
}

/// The question at offset 12: its end, type and class. The name must be uncompressed (nothing
/// precedes it to point at), labels 1–63 bytes, 255 bytes in all.
fn question(pkt: &[u8]) -> Option<(usize, u16, u16)> {
    let mut pos = 12;
    loop {
        let n = *pkt.get(pos)? as usize;
        if n == 0 {
            pos += 1;
            break;
        }
        if n > 63 {
            return None;
        }
        pos += 1 + n;
        // The labels so far plus the root's zero byte: at most 255 (RFC 1035 §2.3.4).
        if pos - 12 + 1 > 255 {
            return None;
        }
    }
    let qtype = u16_at(pkt, pos)?;
    let qclass = u16_at(pkt, pos + 2)?;
    Some((pos + 4, qtype, qclass))
}

/// Walks the answer, authority and additional records after the question. `None` if a record
/// does not parse; `Some(Err(()))` for a malformed OPT; else the OPT's contents, if any.
/// Bytes after the last record are ignored, as most servers do.
fn records(
    pkt: &[u8],
    mut pos: usize,
    an: u16,
    ns: u16,
    ar: u16,
) -> Option<Result<Option<Edns>, ()>> {
    let total = an as usize + ns as usize + ar as usize;
    let mut edns = None;
    let mut bad_opt = false;
    for i in 0..total {
        let owner = pos;
        pos = crate::base::wire::skip_name(pkt, pos)?;
        let rtype = u16_at(pkt, pos)?;
        let class = u16_at(pkt, pos + 2)?;
        let ttl = pkt.get(pos + 4..pos + 8)?;
        let rdlen = u16_at(pkt, pos + 8)? as usize;
        let data = pkt.get(pos + 10..pos + 10 + rdlen)?;
        pos += 10 + rdlen;
        if rtype != 41 {
            continue;
        }
        let additional = i >= an as usize + ns as usize;
        // One OPT, owned by the root, in the additional section, with options that fit.
        if !additional || pkt[owner] != 0 || edns.is_some() || !options_fit(data) {
            bad_opt = true;
            continue;
        }
        edns = Some(Edns {
            payload: class.max(512),
            dnssec: ttl[2] & 0x80 != 0,
            version: ttl[1],
        });
    }
    Some(if bad_opt { Err(()) } else { Ok(edns) })
}

/// Whether OPT data is a sequence of (code, length, value) options ending exactly at its end.
fn options_fit(mut data: &[u8]) -> bool {
    while !data.is_empty() {
        let Some(len) = u16_at(data, 2) else {
            return false;
        };
        let Some(rest) = data.get(4 + len as usize..) else {
            return false;
        };
        data = rest;
    }
    true
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A query for `name` (wire form) with an optional OPT (payload, DO, version, raw options).
    pub(crate) fn query(name: &[u8], qtype: u16, opt: Option<(u16, bool, u8, &[u8])>) -> Vec<u8> {
        let mut q = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        q[11] = u8::from(opt.is_some());
        q.extend_from_slice(name);
        q.extend_from_slice(&qtype.to_be_bytes());
        q.extend_from_slice(&[0, 1]);
        if let Some((size, dnssec, version, options)) = opt {
            q.push(0);
            q.extend_from_slice(&41u16.to_be_bytes());
            q.extend_from_slice(&size.to_be_bytes());
            q.extend_from_slice(&[0, version, if dnssec { 0x80 } else { 0 }, 0]);
            q.extend_from_slice(&(options.len() as u16).to_be_bytes());
            q.extend_from_slice(options);
        }
        q
    }

    const NAME: &[u8] = b"\x06manage\x09microsoft\x03com\x00";

    #[test]
    fn plain_queries() {
        let p = parse(&query(NAME, 1, None)).unwrap();
        assert_eq!(
            (p.question_end, p.qtype, p.qclass, p.edns, p.problem),
            (12 + 22 + 4, 1, 1, None, None)
        );
        assert_eq!(p.name(&query(NAME, 1, None)), NAME);
        let p = parse(&query(NAME, 28, Some((1232, true, 0, &[])))).unwrap();
        assert_eq!(
            p.edns,
            Some(Edns {
                payload: 1232,
                dnssec: true,
                version: 0
            })
        );
        let p = parse(&query(NAME, 28, Some((100, false, 0, &[])))).unwrap();
        assert_eq!(p.edns.unwrap().payload, 512, "below 512 counts as 512");
        // A cookie option (code 10, 8 bytes) is fine.
        let cookie = [0, 10, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8];
        let p = parse(&query(NAME, 1, Some((1232, false, 0, &cookie)))).unwrap();
        assert_eq!(p.problem, None);
    }

    #[test]
    fn problems_in_unbounds_order() {
        let problem = |pkt: &[u8]| parse(pkt).unwrap().problem;
        let mut notify = query(NAME, 1, None);
        notify[2] |= 0x20; // opcode 4
        assert_eq!(problem(&notify), Some(Problem::Opcode));
        assert_eq!(parse(&notify).unwrap().question_end, 38, "question echoed");
        let mut tc = query(NAME, 1, None);
        tc[2] |= 0x02;
        assert_eq!(problem(&tc), Some(Problem::Malformed));
        let mut two = query(NAME, 1, None);
        two[5] = 2;
        let p = parse(&two).unwrap();
        assert_eq!((p.problem, p.question_end), (Some(Problem::Malformed), 12));
        let mut none = query(NAME, 1, None);
        none[5] = 0;
        assert_eq!(problem(&none[..12]), Some(Problem::Malformed));
        let mut an = query(NAME, 1, None);
        an[7] = 1;
        assert_eq!(problem(&an), Some(Problem::Malformed));
        assert_eq!(
            problem(&query(b"\xc0\x0c", 1, None)),
            Some(Problem::Malformed),
            "compressed question"
        );
        assert_eq!(
            problem(&query(NAME, 1, None)[..20]),
            Some(Problem::Malformed)
        );
        // OPT whose option claims more bytes than there are.
        let bad = [0, 10, 0, 9, 1, 2, 3];
        let p = parse(&query(NAME, 1, Some((1232, false, 0, &bad)))).unwrap();
        assert_eq!((p.problem, p.edns), (Some(Problem::Malformed), None));
        // Two OPTs.
        let mut twice = query(NAME, 1, Some((1232, false, 0, &[])));
        let opt = twice[38..].to_vec();
        twice.extend_from_slice(&opt);
        twice[11] = 2;
        assert_eq!(problem(&twice), Some(Problem::Malformed));
        // EDNS version 1.
        let p = parse(&query(NAME, 1, Some((1232, true, 1, &[])))).unwrap();
        assert_eq!(p.problem, Some(Problem::EdnsVersion));
        assert!(p.edns.is_some(), "kept, so BADVERS carries an OPT");
        // Responses and runts get nothing.
        let mut response = query(NAME, 1, None);
        response[2] |= 0x80;
        assert!(parse(&response).is_none());
        assert!(parse(&[0; 11]).is_none());
    }

    #[test]
    fn names_of_255_octets_parse_and_256_do_not() {
        // 63+1 three times (192) plus 61+1 (62) plus the root: 255. Found by `fuzz answer`:
        // a 256-octet name was echoed and no client could parse the reply.
        let name = |last: usize| {
            let mut n = Vec::new();
            for len in [63, 63, 63, last] {
                n.push(len as u8);
                n.extend(std::iter::repeat_n(b'a', len));
            }
            n.push(0);
            n
        };
        assert_eq!(name(61).len(), 255);
        let p = parse(&query(&name(61), 1, None)).unwrap();
        assert_eq!(p.problem, None);
        assert_eq!(p.question_end, 12 + 255 + 4);
        assert_eq!(name(62).len(), 256);
        let p = parse(&query(&name(62), 1, None)).unwrap();
        assert_eq!((p.problem, p.question_end), (Some(Problem::Malformed), 12));
    }

    #[test]
    fn never_panics_on_random_bytes() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut clean = 0;
        for i in 0..20_000usize {
            let len = (next() % 96) as usize;
            let mut pkt: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            // Every other packet gets a plausible header so parsing goes deeper.
            if i % 2 == 0 && len >= 12 {
                pkt[2] = 0x01;
                pkt[3] = 0;
                pkt[4..12].copy_from_slice(&[0, 1, 0, 0, 0, 0, 0, (i % 3 == 0) as u8]);
            }
            if let Some(q) = parse(&pkt) {
                assert!(q.question_end <= pkt.len());
                clean += usize::from(q.problem.is_none());
            }
        }
        assert!(clean < 20_000);
    }
}
