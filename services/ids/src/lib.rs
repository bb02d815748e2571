//! fleetmq's identifiers, parsed once (parse, don't validate) and shared by
//! the broker and the platform crates, so that a tenant or device id is one
//! type everywhere.
//!
//! Ids are substituted into MQTT topics, certificate names and URLs, so only
//! a small alphabet is allowed: tenant `[a-z0-9-]{3,63}`, device
//! `[A-Za-z0-9._-]{1,128}`. Both hold an `Arc<str>`: the broker clones the
//! tenant id into every session, route and event, and a clone should be a
//! reference count, not an allocation.
//!
//! This crate depends on nothing of ours, so `broker` (below the platform)
//! and `store` (below the api) can both use it without changing the
//! direction of the graph.
//!
//! - [`TenantId`], [`DeviceId`] and their one error, [`InvalidId`].
//! - [`topics`]: the device topic conventions (`devices/{d}/…`,
//!   `commands/{d}/…`, status, reported and desired state), built and read
//!   in one place. They live beside the device id because they are where it
//!   is substituted, and every crate that reads them (access, state, api,
//!   the binary's bridge) already depends on this one.

use std::fmt;
use std::sync::Arc;

pub mod topics;

/// An id that does not match its pattern. Carries the rejected input,
/// bounded (it may be anything a client sent).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind} id {id:?}: {expected}")]
pub struct InvalidId {
    /// "tenant" or "device".
    pub kind: &'static str,
    /// The rejected input, shortened to 140 characters.
    pub id: String,
    /// The rule, in words (the type's `EXPECTED`).
    pub expected: &'static str,
}

/// The common part of an id type: a checked `Arc<str>` that reads, prints
/// and serializes as the plain string.
macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $kind:literal, $expected:literal, $len:expr, $byte:expr) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(Arc<str>);

        impl $name {
            /// The rule, in words, for error messages.
            pub const EXPECTED: &'static str = $expected;

            /// Checks `s` against the rule.
            pub fn parse(s: &str) -> Result<Self, InvalidId> {
                if Self::is_valid(s) {
                    Ok(Self(Arc::from(s)))
                } else {
                    Err(InvalidId {
                        kind: $kind,
                        id: shorten(s),
                        expected: Self::EXPECTED,
                    })
                }
            }

            /// Whether `s` follows the rule (a length in `$len`, every byte
            /// allowed by `$byte`), without making an id of it.
            pub fn is_valid(s: &str) -> bool {
                let byte_ok: fn(u8) -> bool = $byte;
                ($len).contains(&s.len()) && s.bytes().all(byte_ok)
            }

            /// The id as a string.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&*self.0, f)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                String::from(&*id.0)
            }
        }

        /// The plain string, as the JSON bodies have always carried it.
        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }
    };
}

id_type!(
    /// A tenant id, `[a-z0-9-]{3,63}`. Cheap to clone.
    TenantId, "tenant", "3 to 63 characters from a-z, 0-9 and '-'", 3..=63,
    |b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'
);

id_type!(
    /// A device id, `[A-Za-z0-9._-]{1,128}`. Cheap to clone.
    DeviceId, "device", "1 to 128 characters from A-Z, a-z, 0-9, '.', '_' and '-'", 1..=128,
    |b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')
);

/// The platform namespace's id (see [`TenantId::platform`]).
const PLATFORM: &str = "$platform";

impl TenantId {
    /// The platform namespace: where clients with platform service
    /// credentials live and every tenant's topics are mounted under the
    /// tenant id (`{tenant}/{topic}`). `$` is in no tenant id, so [`parse`]
    /// never yields it and no tenant can be mistaken for it.
    ///
    /// [`parse`]: TenantId::parse
    pub fn platform() -> Self {
        Self(Arc::from(PLATFORM))
    }

    /// Whether this is [`TenantId::platform`].
    pub fn is_platform(&self) -> bool {
        &*self.0 == PLATFORM
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn tenant_ids_follow_the_design_rule() {
        for ok in ["abc", "acme-corp", "t01", "acme-1", &"a".repeat(63)] {
            assert_eq!(TenantId::parse(ok).unwrap().as_str(), ok);
        }
        for bad in [
            "ab",
            "Acme",
            "a_b",
            "a b",
            "a/bc",
            "a/b/c",
            "ünï",
            "",
            &"a".repeat(64),
        ] {
            assert!(TenantId::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_platform_namespace_is_no_tenant() {
        assert!(TenantId::parse(TenantId::platform().as_str()).is_err());
        assert!(TenantId::platform().is_platform());
        assert!(!TenantId::parse("platform").unwrap().is_platform());
    }

    #[test]
    fn device_ids_follow_the_design_rule() {
        for ok in ["a", "Sensor_1.x-2", &"Z".repeat(128)] {
            assert_eq!(DeviceId::parse(ok).unwrap().as_str(), ok);
        }
        for bad in ["", "a/b", "a+b", "a#", "a b", "é", &"a".repeat(129)] {
            assert!(DeviceId::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn rejected_input_is_bounded_in_the_error() {
        let e = DeviceId::parse(&"é".repeat(10_000)).unwrap_err();
        assert_eq!(e.id.chars().count(), 141);
        assert_eq!(e.kind, "device");
    }

    #[test]
    fn error_names_kind_and_pattern() {
        let e = TenantId::parse("A").unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid tenant id \"A\": 3 to 63 characters from a-z, 0-9 and '-'"
        );
    }

    #[test]
    fn ids_serialize_and_print_as_the_plain_string() {
        let t = TenantId::parse("acme").unwrap();
        let d = DeviceId::parse("s-1").unwrap();
        assert_eq!(
            serde_json::to_string(&(&t, &d)).unwrap(),
            r#"["acme","s-1"]"#
        );
        assert_eq!(format!("{t} {t:?} {d:?}"), r#"acme "acme" "s-1""#);
        assert_eq!(String::from(d), "s-1");
    }

    proptest! {
        // The rules against a naive model: a character class and a length.
        #[test]
        fn tenant_parse_matches_the_pattern(s in "[a-z0-9A-Z_/ é$-]{0,70}") {
            let model = (3..=63).contains(&s.len())
                && s.chars().all(|c| matches!(c, 'a'..='z' | '0'..='9' | '-'));
            prop_assert_eq!(TenantId::parse(&s).is_ok(), model);
        }

        #[test]
        fn device_parse_matches_the_pattern(s in "[A-Za-z0-9._/+# é-]{0,130}") {
            let model = (1..=128).contains(&s.len())
                && s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
            prop_assert_eq!(DeviceId::parse(&s).is_ok(), model);
        }
    }
}
