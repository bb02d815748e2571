//! Bounds-checked primitives: a [`Reader`] over one packet's bytes and the
//! matching writers. Nothing here indexes or slices peer data; every read
//! checks the length first and fails with [`Error::UnexpectedEnd`].

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::error::{EncodeError, Error};

/// Largest value of a variable byte integer (1.5.5).
pub(crate) const MAX_VARINT: u32 = 268_435_455;

/// Result of scanning a variable byte integer at the front of a buffer.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Varint {
    /// The buffer ends before the integer does.
    Incomplete,
    /// The value and how many bytes it used.
    Done(u32, usize),
}

/// Scans a variable byte integer (1.5.5) from `buf` without consuming it.
pub(crate) fn scan_varint(buf: &[u8]) -> Result<Varint, Error> {
    let mut value: u32 = 0;
    let mut shift: u32 = 0;
    for (i, &byte) in buf.iter().take(4).enumerate() {
        value |= u32::from(byte & 0x7F) << shift;
        if byte & 0x80 == 0 {
            // MQTT-1.5.5-1: a trailing zero continuation byte is a longer
            // encoding of a value that fits in fewer bytes.
            if i > 0 && byte == 0 {
                return Err(Error::NonMinimalVariableInteger);
            }
            return Ok(Varint::Done(value, i + 1));
        }
        shift += 7;
    }
    if buf.len() >= 4 {
        Err(Error::MalformedVariableInteger)
    } else {
        Ok(Varint::Incomplete)
    }
}

/// Sequential, bounds-checked reads over one packet's bytes.
///
/// Binary fields come out as [`Bytes`] slices of the packet (no copy).
#[derive(Debug)]
pub(crate) struct Reader {
    buf: Bytes,
}

impl Reader {
    /// Reads from `buf`.
    pub(crate) fn new(buf: Bytes) -> Self {
        Self { buf }
    }

    /// Bytes left.
    pub(crate) fn remaining(&self) -> usize {
        self.buf.len()
    }

    /// Whether everything has been read.
    pub(crate) fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Takes the next `n` bytes as a zero-copy slice.
    pub(crate) fn take(&mut self, n: usize) -> Result<Bytes, Error> {
        if n > self.buf.len() {
            return Err(Error::UnexpectedEnd);
        }
        Ok(self.buf.split_to(n))
    }

    /// What is left, without consuming it (a reference count, no copy).
    pub(crate) fn peek_rest(&self) -> Bytes {
        self.buf.clone()
    }

    /// Takes everything that is left.
    pub(crate) fn rest(&mut self) -> Bytes {
        std::mem::take(&mut self.buf)
    }

    /// A reader over the next `n` bytes; they are consumed from `self`.
    pub(crate) fn sub(&mut self, n: usize) -> Result<Reader, Error> {
        self.take(n).map(Reader::new)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, Error> {
        let b = *self.buf.first().ok_or(Error::UnexpectedEnd)?;
        self.buf.advance(1);
        Ok(b)
    }

    pub(crate) fn u16(&mut self) -> Result<u16, Error> {
        let b = self.take(2)?;
        let arr: [u8; 2] = b.as_ref().try_into().map_err(|_| Error::UnexpectedEnd)?;
        Ok(u16::from_be_bytes(arr))
    }

    pub(crate) fn u32(&mut self) -> Result<u32, Error> {
        let b = self.take(4)?;
        let arr: [u8; 4] = b.as_ref().try_into().map_err(|_| Error::UnexpectedEnd)?;
        Ok(u32::from_be_bytes(arr))
    }

    /// A variable byte integer (1.5.5).
    pub(crate) fn varint(&mut self) -> Result<u32, Error> {
        match scan_varint(&self.buf)? {
            Varint::Done(value, used) => {
                self.take(used)?;
                Ok(value)
            }
            Varint::Incomplete => Err(Error::UnexpectedEnd),
        }
    }

    /// A variable byte integer used as a length.
    pub(crate) fn varint_len(&mut self) -> Result<usize, Error> {
        usize::try_from(self.varint()?).map_err(|_| Error::UnexpectedEnd)
    }

    /// Binary data: a two byte length, then that many bytes (1.5.6).
    pub(crate) fn binary(&mut self) -> Result<Bytes, Error> {
        let len = self.u16()?;
        self.take(usize::from(len))
    }

    /// A UTF-8 encoded string (1.5.4).
    pub(crate) fn string(&mut self) -> Result<String, Error> {
        let raw = self.utf8()?;
        let s = std::str::from_utf8(&raw).map_err(|_| Error::InvalidUtf8)?;
        Ok(s.to_owned())
    }

    /// A UTF-8 encoded string (1.5.4), checked and left as a zero-copy
    /// slice of its bytes (without the length).
    pub(crate) fn utf8(&mut self) -> Result<Bytes, Error> {
        let raw = self.binary()?;
        // MQTT-1.5.4-1: `from_utf8` also rejects encoded surrogates
        // (U+D800..U+DFFF) and overlong forms.
        let s = std::str::from_utf8(&raw).map_err(|_| Error::InvalidUtf8)?;
        // MQTT-1.5.4-2
        if s.contains('\0') {
            return Err(Error::NullCharacter);
        }
        Ok(raw)
    }

    /// Fails unless everything was read.
    pub(crate) fn finish(self) -> Result<(), Error> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(Error::TrailingBytes(self.buf.len()))
        }
    }
}

/// Appends a variable byte integer. Values above [`MAX_VARINT`] are our bug,
/// caught by the callers' size checks.
pub(crate) fn put_varint(dst: &mut BytesMut, mut value: usize) {
    loop {
        let low = u8::try_from(value % 128).unwrap_or(0);
        value /= 128;
        if value == 0 {
            dst.put_u8(low);
            return;
        }
        dst.put_u8(low | 0x80);
    }
}

/// Bytes [`put_varint`] uses for `value`.
pub(crate) fn varint_size(value: usize) -> usize {
    match value {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    }
}

/// Appends binary data with its two-byte length.
pub(crate) fn put_binary(dst: &mut BytesMut, data: &[u8]) -> Result<(), EncodeError> {
    let len = u16::try_from(data.len()).map_err(|_| EncodeError::FieldTooLong(data.len()))?;
    dst.put_u16(len);
    dst.extend_from_slice(data);
    Ok(())
}

/// Appends a UTF-8 string with its two-byte length.
pub(crate) fn put_string(dst: &mut BytesMut, s: &str) -> Result<(), EncodeError> {
    // MQTT-1.5.4-2: refuse to send what we would refuse to receive.
    if s.contains('\0') {
        return Err(EncodeError::NullCharacter);
    }
    put_binary(dst, s.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varint_boundaries_round_trip() {
        for v in [
            0usize,
            127,
            128,
            16_383,
            16_384,
            2_097_151,
            2_097_152,
            268_435_455,
        ] {
            let mut b = BytesMut::new();
            put_varint(&mut b, v);
            assert_eq!(b.len(), varint_size(v));
            assert_eq!(
                scan_varint(&b).unwrap(),
                Varint::Done(u32::try_from(v).unwrap(), b.len())
            );
        }
    }

    #[test]
    fn varint_spec_examples() {
        assert_eq!(scan_varint(&[0x7F]).unwrap(), Varint::Done(127, 1));
        assert_eq!(scan_varint(&[0x80, 0x01]).unwrap(), Varint::Done(128, 2));
        assert_eq!(
            scan_varint(&[0xFF, 0xFF, 0xFF, 0x7F]).unwrap(),
            Varint::Done(268_435_455, 4)
        );
    }

    #[test]
    fn varint_rejects_fifth_byte_and_non_minimal() {
        assert_eq!(
            scan_varint(&[0xFF, 0xFF, 0xFF, 0xFF, 0x01]),
            Err(Error::MalformedVariableInteger)
        );
        assert_eq!(
            scan_varint(&[0x80, 0x00]),
            Err(Error::NonMinimalVariableInteger)
        );
        assert_eq!(scan_varint(&[0x80, 0x80]).unwrap(), Varint::Incomplete);
        assert_eq!(scan_varint(&[]).unwrap(), Varint::Incomplete);
    }

    #[test]
    fn reader_is_bounds_checked() {
        let mut r = Reader::new(Bytes::from_static(&[0x00, 0x05, b'a']));
        assert_eq!(r.string(), Err(Error::UnexpectedEnd));
        let mut r = Reader::new(Bytes::from_static(&[0x01]));
        assert_eq!(r.u16(), Err(Error::UnexpectedEnd));
        let mut r = Reader::new(Bytes::new());
        assert_eq!(r.u8(), Err(Error::UnexpectedEnd));
    }

    #[test]
    fn strings_reject_bad_utf8_nul_and_surrogates() {
        // U+D800 encoded as CESU-style bytes: not valid UTF-8.
        let mut r = Reader::new(Bytes::from_static(&[0x00, 0x03, 0xED, 0xA0, 0x80]));
        assert_eq!(r.string(), Err(Error::InvalidUtf8));
        let mut r = Reader::new(Bytes::from_static(&[0x00, 0x02, b'a', 0x00]));
        assert_eq!(r.string(), Err(Error::NullCharacter));
        let mut r = Reader::new(Bytes::from_static(&[0x00, 0x01, 0xFF]));
        assert_eq!(r.string(), Err(Error::InvalidUtf8));
        // MQTT-1.5.4-3: a BOM is kept, not stripped.
        let mut r = Reader::new(Bytes::from_static(&[0x00, 0x03, 0xEF, 0xBB, 0xBF]));
        assert_eq!(r.string().unwrap(), "\u{FEFF}");
    }

    #[test]
    fn finish_reports_trailing_bytes() {
        let r = Reader::new(Bytes::from_static(&[1, 2]));
        assert_eq!(r.finish(), Err(Error::TrailingBytes(2)));
    }
}
