//! The byte layout of dnsfence's own binary formats — the warm-restart state file and the
//! peer-sync stream: big-endian integers, strings and byte strings with a length before them.
//! Reading is bounded: a length that runs past the end is an error naming the byte, never a
//! panic or an allocation of what the length claims. Depends on nothing else of dnsfence.

/// Bytes being written.
#[derive(Debug, Default)]
pub struct Writer(pub Vec<u8>);

impl Writer {
    /// One byte.
    pub fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    /// Two bytes, big-endian.
    pub fn u16(&mut self, v: u16) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    /// Four bytes, big-endian.
    pub fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    /// Eight bytes, big-endian.
    pub fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    /// A length byte, then at most 255 bytes (names, ids and element keys are shorter).
    pub fn bytes8(&mut self, b: &[u8]) {
        let b = &b[..b.len().min(255)];
        self.u8(b.len() as u8);
        self.0.extend_from_slice(b);
    }
    /// [`Writer::bytes8`] of a string's UTF-8.
    pub fn str8(&mut self, s: &str) {
        self.bytes8(s.as_bytes());
    }
    /// Two length bytes, then at most 65,535 bytes (a DNS message is never longer).
    pub fn bytes16(&mut self, b: &[u8]) {
        let b = &b[..b.len().min(usize::from(u16::MAX))];
        self.u16(b.len() as u16);
        self.0.extend_from_slice(b);
    }
}

/// What could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// A field runs past the end of the bytes.
    #[error("an entry at byte {0} runs past the end")]
    Truncated(usize),
    /// A string that is not UTF-8.
    #[error("text at byte {0} is not UTF-8")]
    NotUtf8(usize),
}

/// Bytes being read, from a position.
#[derive(Debug)]
pub struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    /// Reads `bytes` from the start.
    pub fn new(bytes: &'a [u8]) -> Reader<'a> {
        Reader { bytes, at: 0 }
    }
    /// Reads `bytes` from `at`.
    pub fn at(bytes: &'a [u8], at: usize) -> Reader<'a> {
        Reader { bytes, at }
    }
    /// Bytes not read yet.
    pub fn left(&self) -> usize {
        self.bytes.len().saturating_sub(self.at)
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8], CodecError> {
        let end = self.at.checked_add(n).filter(|e| *e <= self.bytes.len());
        let Some(end) = end else {
            return Err(CodecError::Truncated(self.at));
        };
        let b = &self.bytes[self.at..end];
        self.at = end;
        Ok(b)
    }
    /// One byte.
    pub fn u8(&mut self) -> Result<u8, CodecError> {
        Ok(self.take(1)?[0])
    }
    /// Two bytes, big-endian.
    pub fn u16(&mut self) -> Result<u16, CodecError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    /// Four bytes, big-endian.
    pub fn u32(&mut self) -> Result<u32, CodecError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    /// Eight bytes, big-endian.
    pub fn u64(&mut self) -> Result<u64, CodecError> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8)?);
        Ok(u64::from_be_bytes(a))
    }
    /// What [`Writer::bytes8`] wrote.
    pub fn bytes8(&mut self) -> Result<&'a [u8], CodecError> {
        let n = self.u8()?;
        self.take(n.into())
    }
    /// What [`Writer::bytes16`] wrote.
    pub fn bytes16(&mut self) -> Result<&'a [u8], CodecError> {
        let n = self.u16()?;
        self.take(n.into())
    }
    /// What [`Writer::str8`] wrote.
    pub fn str8(&mut self) -> Result<String, CodecError> {
        let at = self.at;
        let b = self.bytes8()?;
        String::from_utf8(b.to_vec()).map_err(|_| CodecError::NotUtf8(at))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_bounded_reads() {
        let mut w = Writer::default();
        w.u8(7);
        w.u16(513);
        w.u32(70_000);
        w.u64(1 << 40);
        w.str8("kiosk");
        w.bytes16(&[1, 2, 3]);
        let mut r = Reader::new(&w.0);
        assert_eq!(r.u8(), Ok(7));
        assert_eq!(r.u16(), Ok(513));
        assert_eq!(r.u32(), Ok(70_000));
        assert_eq!(r.u64(), Ok(1 << 40));
        assert_eq!(r.str8().as_deref(), Ok("kiosk"));
        assert_eq!(r.bytes16(), Ok(&[1u8, 2, 3][..]));
        assert_eq!(r.left(), 0);
        assert_eq!(r.u8(), Err(CodecError::Truncated(w.0.len())));
        // A length that claims more than there is.
        assert_eq!(
            Reader::new(&[200, 1]).bytes8(),
            Err(CodecError::Truncated(1))
        );
        assert_eq!(Reader::new(&[1, 0xff]).str8(), Err(CodecError::NotUtf8(0)));
    }
}
