//! What a sync link carries, after the TLS handshake: a hello (magic and version; who sent it
//! is what its certificate says), then frames — each a 4-byte length and a body (`crate::base::codec` layout) of one type:
//! elements (a batch), the end of a snapshot, or a keep-alive ping. Elements go from the
//! connecting side to the listening one, pings both ways; elements only grow or extend their expiry on the receiving side, so order and
//! duplicates do not matter.

use crate::base::codec::{CodecError, Reader, Writer};

/// The hello's first bytes.
pub const MAGIC: &[u8; 8] = b"dnsfsync";
/// The protocol version this dnsfence speaks.
pub const VERSION: u16 = 1;
/// The largest frame body accepted.
pub const MAX_FRAME: usize = 256 * 1024;
/// Elements per frame at most.
pub const BATCH: usize = 512;

/// One element as a link carries it: the view and family name the set (set indices differ
/// between configs), the element's key bytes, the time it has left and why it was admitted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Element {
    /// The view's name.
    pub view: String,
    /// IPv6 (else IPv4).
    pub v6: bool,
    /// The key bytes as the kernel stores them (address, then protocol and port).
    pub element: Vec<u8>,
    /// Milliseconds it has left, when sent.
    pub left_ms: u64,
    /// When the sender's kernel confirmed it (Unix microseconds): the receiver's lag.
    pub admitted_us: u64,
    /// The question name of the answer that carried it.
    pub name: String,
}

/// One frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// Elements, new or extended.
    Elements(Vec<Element>),
    /// Everything live has been sent once (after a connect or a queue overflow).
    SnapshotDone,
    /// Nothing to send: the link is alive.
    Ping,
}

/// The hello the connecting side sends first: [`HELLO_LEN`] bytes.
pub fn hello() -> Vec<u8> {
    let mut w = Writer::default();
    w.0.extend_from_slice(MAGIC);
    w.u16(VERSION);
    w.0
}

/// The length of a hello.
pub const HELLO_LEN: usize = 10;

/// The bytes of a frame: its length, then its body.
pub fn encode(frame: &Frame) -> Vec<u8> {
    let mut w = Writer(vec![0; 4]);
    match frame {
        Frame::Elements(elements) => {
            w.u8(1);
            w.u16(elements.len() as u16);
            for e in elements {
                w.str8(&e.view);
                w.u8(u8::from(e.v6));
                w.bytes8(&e.element);
                w.u64(e.left_ms);
                w.u64(e.admitted_us);
                w.str8(&e.name);
            }
        }
        Frame::SnapshotDone => w.u8(2),
        Frame::Ping => w.u8(3),
    }
    let len = (w.0.len() - 4) as u32;
    w.0[..4].copy_from_slice(&len.to_be_bytes());
    w.0
}

/// Why a link's bytes are refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// Not a dnsfence sync hello.
    #[error("not a dnsfence sync link")]
    Magic,
    /// Another protocol version.
    #[error("sync protocol version {0}, this dnsfence speaks {VERSION}")]
    Version(u16),
    /// A frame type this version does not know.
    #[error("unknown frame type {0}")]
    Type(u8),
    /// Fields that do not fit their frame.
    #[error("{0}")]
    Codec(#[from] CodecError),
    /// Bytes after the frame's last field.
    #[error("{0} bytes after the frame's last field")]
    Trailing(usize),
}

/// Whether a hello is one this version speaks, or why not.
pub fn parse_hello(bytes: &[u8; HELLO_LEN]) -> Result<(), FrameError> {
    if &bytes[..8] != MAGIC {
        return Err(FrameError::Magic);
    }
    match u16::from_be_bytes([bytes[8], bytes[9]]) {
        VERSION => Ok(()),
        v => Err(FrameError::Version(v)),
    }
}

/// A frame from its body.
pub fn decode(body: &[u8]) -> Result<Frame, FrameError> {
    let mut r = Reader::new(body);
    let frame = match r.u8()? {
        1 => {
            let n = r.u16()?;
            let mut elements = Vec::with_capacity(usize::from(n).min(BATCH));
            for _ in 0..n {
                elements.push(Element {
                    view: r.str8()?,
                    v6: r.u8()? != 0,
                    element: r.bytes8()?.to_vec(),
                    left_ms: r.u64()?,
                    admitted_us: r.u64()?,
                    name: r.str8()?,
                });
            }
            Frame::Elements(elements)
        }
        2 => Frame::SnapshotDone,
        3 => Frame::Ping,
        t => return Err(FrameError::Type(t)),
    };
    match r.left() {
        0 => Ok(frame),
        n => Err(FrameError::Trailing(n)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_bad_bytes_are_refused() {
        let e = Element {
            view: "kiosk".into(),
            v6: false,
            element: vec![192, 0, 2, 1],
            left_ms: 360_000,
            admitted_us: 1_700_000_000_000_000,
            name: "manage.microsoft.com".into(),
        };
        for frame in [
            Frame::Elements(vec![e.clone(), e.clone()]),
            Frame::SnapshotDone,
            Frame::Ping,
        ] {
            let bytes = encode(&frame);
            let len = u32::from_be_bytes(bytes[..4].try_into().unwrap()) as usize;
            assert_eq!(len, bytes.len() - 4);
            assert_eq!(decode(&bytes[4..]), Ok(frame));
        }
        let bytes = encode(&Frame::Elements(vec![e]));
        assert!(matches!(
            decode(&bytes[4..bytes.len() - 3]),
            Err(FrameError::Codec(_))
        ));
        let mut longer = bytes[4..].to_vec();
        longer.push(0);
        assert_eq!(decode(&longer), Err(FrameError::Trailing(1)));
        assert_eq!(decode(&[9]), Err(FrameError::Type(9)));
        // A count that claims more elements than the bytes hold: refused, not allocated.
        assert!(matches!(
            decode(&[1, 0xff, 0xff]),
            Err(FrameError::Codec(_))
        ));
        let h: [u8; HELLO_LEN] = hello().try_into().unwrap();
        assert_eq!(parse_hello(&h), Ok(()));
        assert_eq!(parse_hello(b"GET / HTTP"), Err(FrameError::Magic));
        let mut newer = h;
        newer[9] = 2;
        assert_eq!(parse_hello(&newer), Err(FrameError::Version(2)));
    }
}
