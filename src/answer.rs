//! "The addresses of this answer": every IP a client may connect to after reading an answer.
//!
//! That is the A and AAAA records across the whole CNAME chain plus the `ipv4hint`/`ipv6hint`
//! parameters of HTTPS and SVCB records (a browser may connect to a hint before it asks for A).
//! The firewall admits exactly this list, so it lives in one function that both the resolver and
//! the fence call.

use std::net::IpAddr;

use hickory_proto::rr::rdata::svcb::{SVCB, SvcParamValue};
use hickory_proto::rr::{RData, Record};

/// One address of an answer with the TTL of the record that carried it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AnswerAddr {
    /// The address.
    pub ip: IpAddr,
    /// TTL in seconds of the record it came from.
    pub ttl: u32,
}

/// The addresses of `records` (an answer section), each once, with the longest TTL it was seen
/// with, in order of first appearance.
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

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::rr::Name;
    use hickory_proto::rr::rdata::svcb::{IpHint, SvcParamKey};
    use hickory_proto::rr::rdata::{A, AAAA, CNAME, HTTPS, MX, TXT};

    fn rec(name: &str, ttl: u32, data: RData) -> Record {
        Record::from_rdata(Name::from_ascii(name).unwrap(), ttl, data)
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
            rec(
                "a.example.",
                300,
                RData::CNAME(CNAME(Name::from_ascii("b.example.").unwrap())),
            ),
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
    }

    #[test]
    fn no_addresses() {
        let records = vec![rec("a.example.", 1, RData::TXT(TXT::new(vec!["x".into()])))];
        assert!(addresses(&records).is_empty());
        assert!(addresses(&[]).is_empty());
    }
}
