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

/// The platform namespace's id (see [`TenantId::platform`]).
const PLATFORM: &str = "$platform";

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
        assert!(TenantId::parse(TenantId::platform().as_str()).is_err());
        assert!(TenantId::platform().is_platform());
        assert!(!TenantId::parse("platform").unwrap().is_platform());
    }
}
