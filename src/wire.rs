//! Small readers of DNS wire format shared by the cache and the UDP fast path: skipping names,
//! finding TTL fields, lower-casing a name in place.

/// Skips a (possibly compressed) name starting at `pos`; returns the offset after it.
pub fn skip_name(msg: &[u8], mut pos: usize) -> Option<usize> {
    loop {
        let n = *msg.get(pos)? as usize;
        match n {
            0 => return Some(pos + 1),
            1..=63 => pos += 1 + n,
            _ if n & 0xc0 == 0xc0 => return Some(pos + 2).filter(|&p| p <= msg.len()),
            _ => return None,
        }
    }
}

/// Offsets and values of the TTL of every record but OPT. `None` if the message does not parse
/// to its last byte.
pub fn ttl_offsets(msg: &[u8]) -> Option<Vec<(u16, u32)>> {
    let count = |i: usize| Some(u16::from_be_bytes([*msg.get(i)?, *msg.get(i + 1)?]) as usize);
    let (qd, an, ns, ar) = (count(4)?, count(6)?, count(8)?, count(10)?);
    let mut pos = 12;
    for _ in 0..qd {
        pos = skip_name(msg, pos)? + 4;
    }
    let mut out = Vec::with_capacity(an + ns + ar);
    for _ in 0..an + ns + ar {
        pos = skip_name(msg, pos)?;
        let rtype = u16::from_be_bytes([*msg.get(pos)?, *msg.get(pos + 1)?]);
        let ttl_at = pos + 4;
        let ttl = u32::from_be_bytes(msg.get(ttl_at..ttl_at + 4)?.try_into().ok()?);
        let rdlen = u16::from_be_bytes([*msg.get(pos + 8)?, *msg.get(pos + 9)?]) as usize;
        pos += 10 + rdlen;
        if pos > msg.len() {
            return None;
        }
        if rtype != 41 {
            out.push((u16::try_from(ttl_at).ok()?, ttl));
        }
    }
    (pos == msg.len()).then_some(out)
}

/// Lower-cases the letters of an uncompressed wire-form name (length bytes are below 64, never
/// letters).
pub fn lowercase_name(name: &mut [u8]) {
    let mut i = 0;
    while i < name.len() {
        let n = name[i] as usize;
        if n == 0 || n > 63 {
            return;
        }
        let end = (i + 1 + n).min(name.len());
        name[i + 1..end].make_ascii_lowercase();
        i += 1 + n;
    }
}

/// Byte equality for the short strings of a lookup, inline: a call to libc's `memcmp` per
/// comparison was more than half of a glob decision's time (perf, 2026-11-25).
#[inline]
pub fn same(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i + 8 <= a.len() {
        let x = u64::from_ne_bytes([
            a[i],
            a[i + 1],
            a[i + 2],
            a[i + 3],
            a[i + 4],
            a[i + 5],
            a[i + 6],
            a[i + 7],
        ]);
        let y = u64::from_ne_bytes([
            b[i],
            b[i + 1],
            b[i + 2],
            b[i + 3],
            b[i + 4],
            b[i + 5],
            b[i + 6],
            b[i + 7],
        ]);
        if x != y {
            return false;
        }
        i += 8;
    }
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query};
    use hickory_proto::rr::rdata::{A, CNAME};
    use hickory_proto::rr::{Name, RData, Record, RecordType};

    #[test]
    fn ttl_offsets_skip_opt_and_follow_pointers() {
        let mut m = Message::new(7, MessageType::Response, OpCode::Query);
        m.add_query(Query::query(
            Name::from_ascii("x.example.").unwrap(),
            RecordType::A,
        ));
        m.add_answer(Record::from_rdata(
            Name::from_ascii("x.example.").unwrap(),
            300,
            RData::CNAME(CNAME(Name::from_ascii("y.example.").unwrap())),
        ));
        m.add_answer(Record::from_rdata(
            Name::from_ascii("y.example.").unwrap(),
            60,
            RData::A(A::new(192, 0, 2, 1)),
        ));
        m.set_edns(Edns::new());
        let r = m.to_vec().unwrap();
        let ttls = ttl_offsets(&r).unwrap();
        assert_eq!(ttls.iter().map(|t| t.1).collect::<Vec<_>>(), [300, 60]);
        assert!(ttl_offsets(&r[..r.len() - 1]).is_none());
        let mut name = b"\x01X\x07eXAMPLE\x00".to_vec();
        lowercase_name(&mut name);
        assert_eq!(&name, b"\x01x\x07example\x00");
        assert_eq!(skip_name(b"\x01a\xc0\x0c", 0), Some(4));
        assert!(same(b"manage.microsoft.com", b"manage.microsoft.com"));
        assert!(!same(b"manage.microsoft.com", b"manage.microsoft.con"));
        assert!(!same(b"abc", b"abcd"));
        assert!(same(b"", b""));
    }
}
