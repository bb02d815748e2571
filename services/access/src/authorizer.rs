//! [`PolicyAuthorizer`]: the broker's [`Authorizer`] over the tenant's ACL
//! policies (or a service credential's filters), compiled once per
//! identity and kept in the [`AccessCache`].

use broker::{Authorizer, Identity};
use mqtt::{TopicFilter, TopicName};

use crate::AccessCache;
use crate::policy::Decision;

/// Decides publish and subscribe from compiled policies; synchronous, as
/// the broker's hot path needs. Deny by default.
#[derive(Debug, Clone)]
pub struct PolicyAuthorizer {
    cache: AccessCache,
}

impl PolicyAuthorizer {
    /// An authorizer reading the rules [`crate::PlatformAuthenticator`]
    /// loads into `cache` at connect.
    pub fn new(cache: AccessCache) -> PolicyAuthorizer {
        PolicyAuthorizer { cache }
    }

    fn decide(
        &self,
        identity: &Identity,
        action: &'static str,
        target: &str,
        check: impl FnOnce(&crate::policy::CompiledPolicy) -> Decision,
    ) -> bool {
        let tenant = identity.tenant.as_str();
        let principal = identity.principal.as_str();
        let Some(policy) = self.cache.compiled(tenant, principal) else {
            tracing::debug!(
                tenant,
                principal,
                action,
                target,
                allowed = false,
                rule = "policies not loaded",
                "ACL decision"
            );
            return false;
        };
        let decision = check(&policy);
        tracing::debug!(tenant, principal, action, target, allowed = decision.allowed, rule = %decision.rule, "ACL decision");
        decision.allowed
    }
}

impl Authorizer for PolicyAuthorizer {
    fn can_publish(&self, identity: &Identity, topic: &TopicName) -> bool {
        self.decide(identity, "publish", topic.as_str(), |p| {
            p.decide_publish(topic)
        })
    }

    fn can_subscribe(&self, identity: &Identity, filter: &TopicFilter) -> bool {
        self.decide(identity, "subscribe", filter.as_str(), |p| {
            p.decide_subscribe(filter)
        })
    }
}
