//! [`UserProperties`]: the User Property list (0x26, 3.3.2.3.7) kept in its
//! wire form, one shared buffer.
//!
//! A list of `(String, String)` pairs costs two allocations and 48 bytes of
//! headers per pair: a PUBLISH of 1 MB made of 142,000 one-character pairs
//! held 15 MB, and every clone (every delivery) made 284,000 allocations
//! more. Here the pairs stay as they came off the wire (identifier, two
//! length-prefixed strings), checked once on decode, so a list costs its
//! wire size, a clone is a reference count, and encoding is one copy.

use std::fmt;

use bytes::{BufMut, Bytes, BytesMut};

use crate::codec::Reader;
use crate::error::{EncodeError, Error};
use crate::properties::PropertyId;

/// User Properties in order, duplicates allowed, held in wire form.
///
/// Build with [`UserProperties::push`] or [`UserProperties::from_pairs`];
/// read with [`UserProperties::iter`].
#[derive(Clone, Default, PartialEq, Eq)]
pub struct UserProperties {
    /// `0x26, len, key, len, value` per pair: exactly what is written.
    wire: Bytes,
    len: usize,
}

/// Appends one pair in wire form; the strings are already checked.
fn put_pair(dst: &mut BytesMut, key: &[u8], value: &[u8]) -> Result<(), EncodeError> {
    let klen = u16::try_from(key.len()).map_err(|_| EncodeError::FieldTooLong(key.len()))?;
    let vlen = u16::try_from(value.len()).map_err(|_| EncodeError::FieldTooLong(value.len()))?;
    dst.reserve(5 + key.len() + value.len());
    dst.put_u8(PropertyId::UserProperty.to_u8());
    dst.put_u16(klen);
    dst.extend_from_slice(key);
    dst.put_u16(vlen);
    dst.extend_from_slice(value);
    Ok(())
}

/// MQTT-1.5.4-2: refuse to send what we would refuse to receive.
fn check(s: &str) -> Result<(), EncodeError> {
    if s.contains('\0') {
        return Err(EncodeError::NullCharacter);
    }
    Ok(())
}

impl UserProperties {
    /// No pairs.
    pub fn new() -> Self {
        Self::default()
    }

    /// The pairs of `pairs`, in order.
    pub fn from_pairs<K, V>(pairs: impl IntoIterator<Item = (K, V)>) -> Result<Self, EncodeError>
    where
        K: AsRef<str>,
        V: AsRef<str>,
    {
        let mut wire = BytesMut::new();
        let mut len = 0;
        for (k, v) in pairs {
            let (k, v) = (k.as_ref(), v.as_ref());
            check(k)?;
            check(v)?;
            put_pair(&mut wire, k.as_bytes(), v.as_bytes())?;
            len += 1;
        }
        Ok(Self {
            wire: wire.freeze(),
            len,
        })
    }

    /// Appends a pair. Copies the list unless this is its only holder, so
    /// build long lists with [`UserProperties::from_pairs`].
    pub fn push(&mut self, key: &str, value: &str) -> Result<(), EncodeError> {
        check(key)?;
        check(value)?;
        let mut wire = match std::mem::take(&mut self.wire).try_into_mut() {
            Ok(unique) => unique,
            Err(shared) => BytesMut::from(&shared[..]),
        };
        let pushed = put_pair(&mut wire, key.as_bytes(), value.as_bytes());
        self.wire = wire.freeze();
        pushed?;
        self.len += 1;
        Ok(())
    }

    /// How many pairs.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Removes every pair.
    pub fn clear(&mut self) {
        *self = Self::default();
    }

    /// Bytes the pairs take in a packet's property list (identifiers
    /// included), which is also about what they take in memory.
    pub fn wire_len(&self) -> usize {
        self.wire.len()
    }

    /// The pairs, in order.
    pub fn iter(&self) -> Iter<'_> {
        Iter { rest: &self.wire }
    }

    /// The wire form: each pair as identifier 0x26 and two
    /// length-prefixed strings, as in a packet's property list. Stores
    /// keep it as is ([`UserProperties::from_wire`] reads it back).
    pub fn wire(&self) -> &[u8] {
        &self.wire
    }

    /// Pairs in the form [`UserProperties::wire`] gives, checked as a
    /// packet's would be; `None` if `wire` is not that.
    pub fn from_wire(wire: Bytes) -> Option<Self> {
        let mut r = Reader::new(wire.clone());
        let mut len = 0;
        while !r.is_empty() {
            if r.u8().ok()? != PropertyId::UserProperty.to_u8() {
                return None;
            }
            r.utf8().ok()?;
            r.utf8().ok()?;
            len += 1;
        }
        Some(Self { wire, len })
    }
}

/// Collects User Properties while a property list is decoded, each pair
/// checked (MQTT-1.5.4-1, -2). Pairs that follow each other in the packet
/// (the usual case) stay a slice of the received packet, no copy at all:
/// the packet's buffer is held anyway by the payload, which is a slice of
/// it too. Only pairs split by other properties are copied, once, into one
/// buffer.
#[derive(Debug, Default)]
pub(crate) struct Decoder {
    /// The packet from the first pair of the current run on, and how many
    /// bytes of it the run covers.
    run: Option<(Bytes, usize)>,
    /// Another property came after the run.
    interrupted: bool,
    /// Pairs of earlier runs, when there were several.
    copied: BytesMut,
    len: usize,
}

impl Decoder {
    /// Reads one pair; `start` is the packet from the pair's identifier on
    /// (read already).
    pub(crate) fn read_pair(&mut self, r: &mut Reader, start: Bytes) -> Result<(), Error> {
        r.utf8()?;
        r.utf8()?;
        let used = start.len().saturating_sub(r.remaining());
        self.len += 1;
        match &mut self.run {
            Some((_, run)) if !self.interrupted => *run += used,
            Some((bytes, run)) => {
                self.copied
                    .extend_from_slice(bytes.get(..*run).unwrap_or_default());
                self.copied
                    .extend_from_slice(start.get(..used).unwrap_or_default());
                self.run = None;
            }
            None if self.copied.is_empty() => self.run = Some((start, used)),
            None => self
                .copied
                .extend_from_slice(start.get(..used).unwrap_or_default()),
        }
        Ok(())
    }

    /// Another property was read.
    pub(crate) fn interrupt(&mut self) {
        self.interrupted = self.run.is_some();
    }

    pub(crate) fn finish(self) -> UserProperties {
        let wire = match self.run {
            Some((bytes, run)) if self.copied.is_empty() => bytes.slice(..run.min(bytes.len())),
            Some((bytes, run)) => {
                let mut copied = self.copied;
                copied.extend_from_slice(bytes.get(..run).unwrap_or_default());
                copied.freeze()
            }
            None => self.copied.freeze(),
        };
        UserProperties {
            wire,
            len: self.len,
        }
    }
}

/// Iterator over [`UserProperties`]' pairs.
#[derive(Debug, Clone)]
pub struct Iter<'a> {
    rest: &'a [u8],
}

impl<'a> Iter<'a> {
    fn string(&mut self) -> Option<&'a str> {
        let (len, rest) = self.rest.split_first_chunk::<2>()?;
        let len = usize::from(u16::from_be_bytes(*len));
        let (s, rest) = rest.split_at_checked(len)?;
        self.rest = rest;
        // Checked when the list was built; a failure here would be our bug
        // and ends the iteration rather than panicking.
        std::str::from_utf8(s).ok()
    }
}

impl<'a> Iterator for Iter<'a> {
    type Item = (&'a str, &'a str);

    fn next(&mut self) -> Option<Self::Item> {
        let (_id, rest) = self.rest.split_first()?;
        self.rest = rest;
        let pair = self.string().zip(self.string());
        if pair.is_none() {
            self.rest = &[];
        }
        pair
    }
}

impl<'a> IntoIterator for &'a UserProperties {
    type Item = (&'a str, &'a str);
    type IntoIter = Iter<'a>;

    fn into_iter(self) -> Iter<'a> {
        self.iter()
    }
}

impl fmt::Debug for UserProperties {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl<K: AsRef<str>, V: AsRef<str>> PartialEq<[(K, V)]> for UserProperties {
    fn eq(&self, other: &[(K, V)]) -> bool {
        self.len == other.len()
            && self
                .iter()
                .zip(other)
                .all(|(a, (k, v))| a == (k.as_ref(), v.as_ref()))
    }
}

impl<K: AsRef<str>, V: AsRef<str>, const N: usize> PartialEq<[(K, V); N]> for UserProperties {
    fn eq(&self, other: &[(K, V); N]) -> bool {
        *self == other[..]
    }
}

impl<K: AsRef<str>, V: AsRef<str>> PartialEq<Vec<(K, V)>> for UserProperties {
    fn eq(&self, other: &Vec<(K, V)>) -> bool {
        *self == other[..]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_round_trip_in_order_with_duplicates() {
        let mut u = UserProperties::from_pairs([("k", "v"), ("k", "w")]).unwrap();
        u.push("é", "").unwrap();
        assert_eq!(u.len(), 3);
        assert_eq!(u, [("k", "v"), ("k", "w"), ("é", "")]);
        // id + 2 + len per string.
        assert_eq!(u.wire_len(), 7 + 7 + 7);
        assert_eq!(format!("{u:?}"), r#"[("k", "v"), ("k", "w"), ("é", "")]"#);
    }

    #[test]
    fn refuses_what_it_could_not_send() {
        assert_eq!(
            UserProperties::from_pairs([("a\0", "v")]),
            Err(EncodeError::NullCharacter)
        );
        let mut u = UserProperties::new();
        let long = "x".repeat(65_536);
        assert_eq!(u.push("k", &long), Err(EncodeError::FieldTooLong(65_536)));
        assert!(u.is_empty());
        assert_eq!(u.wire_len(), 0);
    }

    #[test]
    fn a_clone_shares_the_buffer_and_a_push_does_not_touch_it() {
        let a = UserProperties::from_pairs([("k", "v")]).unwrap();
        let mut b = a.clone();
        assert_eq!(a.wire().as_ptr(), b.wire().as_ptr());
        b.push("x", "y").unwrap();
        assert_eq!(a, [("k", "v")]);
        assert_eq!(b, [("k", "v"), ("x", "y")]);
    }
}
