//! [`TenantId`]: the namespace every connection, session and topic lives in.

use std::fmt;
use std::sync::Arc;

use crate::Error;

/// A tenant id, `[a-z0-9-]{3,63}` (DESIGN.md). Cheap to clone.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TenantId(Arc<str>);

impl TenantId {
    /// Validates `s` as a tenant id.
    pub fn parse(s: &str) -> Result<Self, Error> {
        let ok = (3..=63).contains(&s.len())
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if ok {
            Ok(Self(Arc::from(s)))
        } else {
            Err(Error::InvalidTenantId(s.to_owned()))
        }
    }

    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_ids_follow_the_design_rule() {
        assert!(TenantId::parse("acme-1").is_ok());
        assert!(TenantId::parse("ab").is_err());
        assert!(TenantId::parse("Acme").is_err());
        assert!(TenantId::parse("a/b/c").is_err());
        assert!(TenantId::parse(&"a".repeat(64)).is_err());
    }
}
