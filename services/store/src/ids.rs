//! Tenant and device ids: parse, don't validate.
//!
//! Ids are substituted into MQTT topics, certificate names and URLs, so only
//! a small alphabet is allowed. The repositories take `&str` (the api crate
//! parses at its edge) but check ids again on create, and the schema has the
//! same checks as a backstop.

use std::fmt;

use serde::Serialize;

use crate::Error;

/// A tenant id: `[a-z0-9-]{3,63}`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct TenantId(String);

/// A device id: `[A-Za-z0-9._-]{1,128}`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct DeviceId(String);

impl TenantId {
    pub const EXPECTED: &'static str = "3 to 63 characters from a-z, 0-9 and '-'";

    pub fn parse(s: &str) -> Result<TenantId, Error> {
        let ok = (3..=63).contains(&s.len())
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if ok {
            Ok(TenantId(s.to_owned()))
        } else {
            Err(Error::InvalidId {
                kind: "tenant",
                id: shorten(s),
                expected: Self::EXPECTED,
            })
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl DeviceId {
    pub const EXPECTED: &'static str = "1 to 128 characters from A-Z, a-z, 0-9, '.', '_' and '-'";

    pub fn parse(s: &str) -> Result<DeviceId, Error> {
        let ok = (1..=128).contains(&s.len())
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if ok {
            Ok(DeviceId(s.to_owned()))
        } else {
            Err(Error::InvalidId {
                kind: "device",
                id: shorten(s),
                expected: Self::EXPECTED,
            })
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The rejected input as it goes into the error: bounded, since it may be
/// anything a client sent.
fn shorten(s: &str) -> String {
    const MAX_CHARS: usize = 140;
    if s.chars().count() <= MAX_CHARS {
        s.to_owned()
    } else {
        let mut out: String = s.chars().take(MAX_CHARS).collect();
        out.push('…');
        out
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Display for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for TenantId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for DeviceId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl From<TenantId> for String {
    fn from(id: TenantId) -> String {
        id.0
    }
}

impl From<DeviceId> for String {
    fn from(id: DeviceId) -> String {
        id.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_ids() {
        for ok in ["abc", "acme-corp", "t01", &"a".repeat(63)] {
            assert_eq!(TenantId::parse(ok).unwrap().as_str(), ok);
        }
        for bad in [
            "ab",
            "Acme",
            "a_b",
            "a b",
            "a/bc",
            "ünï",
            "",
            &"a".repeat(64),
        ] {
            assert!(TenantId::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn device_ids() {
        for ok in ["a", "Sensor_1.x-2", &"Z".repeat(128)] {
            assert_eq!(DeviceId::parse(ok).unwrap().as_str(), ok);
        }
        for bad in ["", "a/b", "a+b", "a#", "a b", "é", &"a".repeat(129)] {
            assert!(DeviceId::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn rejected_input_is_bounded_in_the_error() {
        let Error::InvalidId { id, .. } = DeviceId::parse(&"é".repeat(10_000)).unwrap_err() else {
            panic!("wrong variant");
        };
        assert_eq!(id.chars().count(), 141);
    }

    #[test]
    fn error_names_kind_and_pattern() {
        let e = TenantId::parse("A").unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid tenant id \"A\": 3 to 63 characters from a-z, 0-9 and '-'"
        );
    }
}
