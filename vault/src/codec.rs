//! Big-endian binary primitives shared by every vault layout.
//!
//! `str` is a u16 length plus UTF-8; readers never trust a length beyond the bytes present,
//! so a huge length is an error, not an allocation.

/// Why a buffer could not be decoded; callers attach the object name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DecodeError(pub String);

impl DecodeError {
    pub(crate) fn new(reason: impl Into<String>) -> Self {
        DecodeError(reason.into())
    }
}

pub(crate) type DecodeResult<T> = Result<T, DecodeError>;

/// Appends big-endian fields to a byte vector.
#[derive(Default)]
pub(crate) struct Writer {
    pub(crate) buf: Vec<u8>,
}

impl Writer {
    pub(crate) fn with_capacity(n: usize) -> Self {
        Writer {
            buf: Vec::with_capacity(n),
        }
    }
    pub(crate) fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }
    pub(crate) fn u16(&mut self, v: u16) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }
    pub(crate) fn u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }
    pub(crate) fn u64(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }
    pub(crate) fn bytes(&mut self, v: &[u8]) {
        self.buf.extend_from_slice(v);
    }
    /// Strings longer than u16::MAX are refused by the callers' validation first.
    pub(crate) fn str(&mut self, s: &str) -> Result<(), DecodeError> {
        let len = u16::try_from(s.len())
            .map_err(|_| DecodeError::new(format!("string of {} bytes is too long", s.len())))?;
        self.u16(len);
        self.bytes(s.as_bytes());
        Ok(())
    }
}

/// Reads big-endian fields from a slice, failing cleanly on truncation.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }
    pub(crate) fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }
    pub(crate) fn take(&mut self, n: usize) -> DecodeResult<&'a [u8]> {
        if n > self.remaining() {
            return Err(DecodeError::new(format!(
                "truncated: need {n} bytes at offset {}, {} left",
                self.pos,
                self.remaining()
            )));
        }
        let out = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }
    pub(crate) fn array<const N: usize>(&mut self) -> DecodeResult<[u8; N]> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }
    pub(crate) fn u8(&mut self) -> DecodeResult<u8> {
        Ok(self.array::<1>()?[0])
    }
    pub(crate) fn u16(&mut self) -> DecodeResult<u16> {
        Ok(u16::from_be_bytes(self.array()?))
    }
    pub(crate) fn u32(&mut self) -> DecodeResult<u32> {
        Ok(u32::from_be_bytes(self.array()?))
    }
    pub(crate) fn u64(&mut self) -> DecodeResult<u64> {
        Ok(u64::from_be_bytes(self.array()?))
    }
    pub(crate) fn str(&mut self) -> DecodeResult<String> {
        let len = usize::from(self.u16()?);
        let raw = self.take(len)?;
        String::from_utf8(raw.to_vec()).map_err(|_| DecodeError::new("string is not UTF-8"))
    }
    /// A count of items that each take at least `min_item_bytes`: rejects counts the
    /// remaining bytes cannot hold, so a forged count cannot trigger a huge allocation.
    pub(crate) fn count(&mut self, min_item_bytes: usize) -> DecodeResult<usize> {
        let n = self.u32()? as usize;
        if n.saturating_mul(min_item_bytes.max(1)) > self.remaining() {
            return Err(DecodeError::new(format!(
                "count {n} exceeds the {} bytes left",
                self.remaining()
            )));
        }
        Ok(n)
    }
    pub(crate) fn expect_end(&self) -> DecodeResult<()> {
        if self.remaining() != 0 {
            return Err(DecodeError::new(format!(
                "{} trailing bytes",
                self.remaining()
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn primitives_round_trip_big_endian() {
        let mut w = Writer::default();
        w.u8(1);
        w.u16(0x0203);
        w.u32(0x0405_0607);
        w.u64(0x0809_0a0b_0c0d_0e0f);
        w.str("hé").unwrap();
        assert_eq!(
            w.buf,
            [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 0, 3, b'h', 0xc3, 0xa9]
        );
        let mut r = Reader::new(&w.buf);
        assert_eq!(r.u8().unwrap(), 1);
        assert_eq!(r.u16().unwrap(), 0x0203);
        assert_eq!(r.u32().unwrap(), 0x0405_0607);
        assert_eq!(r.u64().unwrap(), 0x0809_0a0b_0c0d_0e0f);
        assert_eq!(r.str().unwrap(), "hé");
        r.expect_end().unwrap();
    }

    #[test]
    fn truncation_and_huge_counts_are_errors() {
        let mut r = Reader::new(&[0, 5, b'a']);
        assert!(r.str().is_err());
        let mut r = Reader::new(&[0xff, 0xff, 0xff, 0xff, 1, 2]);
        assert!(r.count(1).is_err());
        let mut r = Reader::new(&[0, 0, 0, 1, 0xff]);
        assert_eq!(r.count(1).unwrap(), 1);
        let mut r = Reader::new(&[0, 1, 0xff]);
        assert!(r.str().is_err(), "invalid UTF-8 must fail");
        assert!(Reader::new(&[1]).expect_end().is_err());
    }

    #[test]
    fn overlong_string_is_refused() {
        let mut w = Writer::default();
        assert!(w.str(&"x".repeat(70_000)).is_err());
    }
}
