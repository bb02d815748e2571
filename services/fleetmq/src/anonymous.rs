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

impl Fallback {
    async fn admit_anonymous(&self, request: &AuthRequest) -> Result<Identity, AuthError> {
        let mut identity = broker::Authenticator::authenticate(&self.anonymous, request).await?;
        identity.principal = format!("{PREFIX}{}", identity.principal);
        Ok(identity)
    }
}

#[async_trait]
impl broker::Authenticator for Fallback {
    async fn authenticate(&self, request: &AuthRequest) -> Result<Identity, AuthError> {
        // Neither a certificate nor a user name with a password: nothing
        // the platform could know, so no need to ask it (it would log a
        // refusal for every anonymous client it then saw admitted here).
        if request.peer_certificates.is_none()
            && (request.username.is_none() || request.password.is_none())
        {
            return self.admit_anonymous(request).await;
        }
        match self.platform.authenticate(request).await {
            // A certificate that fails is refused even here: it was
            // presented as an identity, and a bad one is an attack or
            // a revoked device.
            Err(AuthError::BadCredentials) if request.peer_certificates.is_none() => {
                self.admit_anonymous(request).await
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use bytes::Bytes;
    use mqtt::ProtocolVersion;

    use super::*;
    use broker::Authenticator as _;

    /// A platform that knows nobody, counting how often it was asked.
    #[derive(Default)]
    struct KnowsNobody {
        asked: AtomicUsize,
    }

    #[async_trait]
    impl broker::Authenticator for KnowsNobody {
        async fn authenticate(&self, _: &AuthRequest) -> Result<Identity, AuthError> {
            self.asked.fetch_add(1, Ordering::SeqCst);
            Err(AuthError::BadCredentials)
        }
    }

    fn request(username: Option<&str>, password: Option<&str>, certificate: bool) -> AuthRequest {
        AuthRequest {
            username: username.map(str::to_owned),
            password: password.map(|p| Bytes::copy_from_slice(p.as_bytes())),
            client_id: "c1".into(),
            peer: "127.0.0.1:1".parse().unwrap(),
            peer_certificates: certificate.then(|| vec![Bytes::from_static(b"leaf")]),
            protocol: ProtocolVersion::V311,
        }
    }

    #[tokio::test]
    async fn only_a_client_with_credentials_is_put_to_the_platform() {
        let platform = Arc::new(KnowsNobody::default());
        let fallback = Fallback {
            platform: platform.clone(),
            anonymous: broker::AllowAnonymous {
                tenant: broker::TenantId::parse("dev").unwrap(),
            },
        };
        let asked = || platform.asked.load(Ordering::SeqCst);
        for (username, password) in [(None, None), (Some("u"), None), (None, Some("p"))] {
            let identity = fallback
                .authenticate(&request(username, password, false))
                .await
                .unwrap();
            assert!(identity.principal.starts_with(PREFIX));
            assert_eq!(identity.tenant.as_str(), "dev");
        }
        assert_eq!(asked(), 0);
        // Unknown credentials: asked, then anonymous; a certificate the
        // platform refuses stays refused.
        let identity = fallback
            .authenticate(&request(Some("u"), Some("p"), false))
            .await
            .unwrap();
        assert!(identity.principal.starts_with(PREFIX));
        assert!(
            fallback
                .authenticate(&request(None, None, true))
                .await
                .is_err()
        );
        assert_eq!(asked(), 2);
    }
}
