//! The bottom layer of DNS wire format, shared by every module that touches a message: skipping
//! names, finding TTL fields, lower-casing a name in place, a name as the matcher's text
//! ([`name_text`]) or as `dig` writes it ([`WireName`]), response codes and their names. It
//! depends on nothing else of dnsfence.

use std::fmt;

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

/// Response codes (RFC 1035, RFC 6891) and the names `dig` gives them.
pub mod rcode {
    /// No error.
    pub const NOERROR: u16 = 0;
    /// Format error.
    pub const FORMERR: u16 = 1;
    /// Server failure.
    pub const SERVFAIL: u16 = 2;
    /// The name does not exist.
    pub const NXDOMAIN: u16 = 3;
    /// Not implemented.
    pub const NOTIMP: u16 = 4;
    /// Refused.
    pub const REFUSED: u16 = 5;
    /// Bad EDNS version (RFC 6891): 16, so its upper bits go in the OPT.
    pub const BADVERS: u16 = 16;

    /// The name `dig` gives a code, for the query log.
    pub fn name(code: u16) -> &'static str {
        match code {
            NOERROR => "NOERROR",
            FORMERR => "FORMERR",
            SERVFAIL => "SERVFAIL",
            NXDOMAIN => "NXDOMAIN",
            NOTIMP => "NOTIMP",
            REFUSED => "REFUSED",
            BADVERS => "BADVERS",
            _ => "OTHER",
        }
    }
}

/// Writes a wire-format name as lower-case dotted text (no trailing dot) into `buf`. `None` for a
/// compression pointer, a truncated name, a `.` inside a label or bytes that are not printable
/// ASCII: no allowlisted name can be any of those.
pub fn name_text<'b>(wire: &[u8], buf: &'b mut [u8; 256]) -> Option<&'b str> {
    let mut i = 0;
    let mut len = 0;
    let mut bad = false;
    loop {
        let n = *wire.get(i)? as usize;
        if n == 0 {
            break;
        }
        let label = wire.get(i + 1..i + 1 + n)?;
        if n > 63 || len + n + 1 > buf.len() {
            return None;
        }
        if len > 0 {
            buf[len] = b'.';
            len += 1;
        }
        for (d, &b) in buf[len..len + n].iter_mut().zip(label) {
            let m = NAME_BYTE[b as usize];
            bad |= m == 0;
            *d = m;
        }
        len += n;
        i += 1 + n;
    }
    if bad {
        return None;
    }
    // Only printable ASCII was written, so this cannot fail.
    std::str::from_utf8(&buf[..len]).ok()
}

/// Byte → lower-case byte for printable ASCII other than `.`; 0 for anything that cannot be in an
/// allowlisted name.
static NAME_BYTE: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut b = 0x21;
    while b < 0x7f {
        t[b] = (b as u8).to_ascii_lowercase();
        b += 1;
    }
    t[b'.' as usize] = 0;
    t
};

/// A wire-form name in presentation format, as the client wrote it: labels joined by dots with a
/// trailing dot, bytes outside printable ASCII (and `.` and `\` inside a label) as `\DDD`, as
/// `dig` and Unbound write them.
pub struct WireName<'a>(pub &'a [u8]);

impl fmt::Display for WireName<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let w = self.0;
        if w.first().is_none_or(|&b| b == 0) {
            return f.write_str(".");
        }
        let mut i = 0;
        while i < w.len() && w[i] != 0 {
            let n = w[i] as usize;
            let label = w.get(i + 1..i + 1 + n).unwrap_or_default();
            for &b in label {
                if b.is_ascii_graphic() && b != b'.' && b != b'\\' {
                    write!(f, "{}", b as char)?;
                } else {
                    write!(f, "\\{b:03}")?;
                }
            }
            f.write_str(".")?;
            i += 1 + n;
        }
        Ok(())
    }
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

    #[test]
    fn names_are_written_as_dig_writes_them() {
        assert_eq!(
            WireName(b"\x04eViL\x07example\x00").to_string(),
            "eViL.example."
        );
        assert_eq!(
            WireName(b"\x03a.b\x01\\\x02\xc3\xa9\x00").to_string(),
            "a\\046b.\\092.\\195\\169."
        );
        assert_eq!(WireName(b"\x00").to_string(), ".");
        assert_eq!(WireName(b"").to_string(), ".");
    }
}
