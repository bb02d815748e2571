//! `--allow-anonymous TENANT`, development mode: devices and credentials the platform knows keep
//! their identity and ACL; every other client lands in the anonymous
//! tenant with full access to it.

use std::sync::Arc;

use async_trait::async_trait;
use broker::{AuthError, AuthRequest, Identity};
use mqtt::{TopicFilter, TopicName};

/// Principals of anonymous clients start with this (device ids and
/// credential names cannot contain `:`).
const PREFIX: &str = "anonymous:";

pub struct Fallback {
    pub platform: Arc<dyn broker::Authenticator>,
    pub anonymous: broker::AllowAnonymous,
}

#[async_trait]
impl broker::Authenticator for Fallback {
    async fn authenticate(&self, request: &AuthRequest) -> Result<Identity, AuthError> {
        match self.platform.authenticate(request).await {
            // A certificate that fails is refused even here: it was
            // presented as an identity, and a bad one is an attack or
            // a revoked device.
            Err(AuthError::BadCredentials) if request.peer_certificates.is_none() => {
                let mut identity = self.anonymous.authenticate(request).await?;
                identity.principal = format!("{PREFIX}{}", identity.principal);
                Ok(identity)
            }
            other => other,
        }
    }

    async fn readmit(&self, tenant: &broker::TenantId, principal: &str) -> bool {
        self.platform.readmit(tenant, principal).await
    }
}

pub struct Authorizer {
    pub policy: Arc<dyn broker::Authorizer>,
}

impl broker::Authorizer for Authorizer {
    fn can_publish(&self, identity: &Identity, topic: &TopicName) -> bool {
        identity.principal.starts_with(PREFIX) || self.policy.can_publish(identity, topic)
    }
    fn can_subscribe(&self, identity: &Identity, filter: &TopicFilter) -> bool {
        identity.principal.starts_with(PREFIX) || self.policy.can_subscribe(identity, filter)
    }
}
