//! Who a client is ([`Authenticator`]) and what it may do ([`Authorizer`]),
//! with the in-memory implementations this crate ships.

use std::collections::HashMap;
use std::net::SocketAddr;

use async_trait::async_trait;
use bytes::Bytes;
use mqtt::{ProtocolVersion, ReasonCode, TopicFilter, TopicName};

use crate::{PublishLimits, TenantId};

/// What a client presented when it connected.
#[derive(Debug, Clone)]
pub struct AuthRequest {
    /// CONNECT User Name.
    pub username: Option<String>,
    /// CONNECT Password. Never log it.
    pub password: Option<Bytes>,
    /// CONNECT Client Identifier as sent (may be empty).
    pub client_id: String,
    /// The peer's address.
    pub peer: SocketAddr,
    /// The TLS peer's certificate chain (DER, leaf first), if it sent one.
    pub peer_certificates: Option<Vec<Bytes>>,
    /// The protocol version of the CONNECT.
    pub protocol: ProtocolVersion,
}

/// Who a connection is: the tenant it belongs to and a principal inside it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The tenant whose topic space the connection lives in.
    pub tenant: TenantId,
    /// The device id or credential name inside the tenant; used by
    /// authorizers and events, never as a routing key.
    pub principal: String,
    /// The publish rate limits that come with this identity (per device or
    /// per tenant); `None`: the broker's default ([`crate::Config::publish_limits`]).
    /// Boxed: an identity is kept by every connection for its life and
    /// most have none (48 bytes inline, issue 16).
    pub limits: Option<Box<PublishLimits>>,
}

/// Why a client was refused at CONNECT.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// Unknown user or wrong password.
    #[error("bad user name or password")]
    BadCredentials,
    /// Known, but not allowed to connect (disabled, revoked).
    #[error("not authorized")]
    NotAuthorized,
    /// The client id is not acceptable for this identity.
    #[error("client identifier not valid")]
    ClientIdNotValid,
    /// The identity is banned.
    #[error("banned")]
    Banned,
    /// The authenticator could not decide (its store is down).
    #[error("authentication unavailable: {0}")]
    Unavailable(String),
    /// Too much authentication work is waiting; try again later.
    #[error("server busy")]
    Busy,
}

impl From<&AuthError> for ReasonCode {
    fn from(e: &AuthError) -> Self {
        match e {
            AuthError::BadCredentials => ReasonCode::BadUserNameOrPassword,
            AuthError::NotAuthorized => ReasonCode::NotAuthorized,
            AuthError::ClientIdNotValid => ReasonCode::ClientIdentifierNotValid,
            AuthError::Banned => ReasonCode::Banned,
            AuthError::Unavailable(_) => ReasonCode::ServerUnavailable,
            AuthError::Busy => ReasonCode::ServerBusy,
        }
    }
}

/// Turns a CONNECT (and later a TLS peer certificate) into an [`Identity`].
/// Called once per connection, so it may do I/O.
#[async_trait]
pub trait Authenticator: Send + Sync + 'static {
    /// Decides who the client is, or refuses it.
    async fn authenticate(&self, request: &AuthRequest) -> Result<Identity, AuthError>;

    /// Makes `principal` of `tenant` known to the [`Authorizer`] again
    /// without a CONNECT: a persistent session restored on a node it never
    /// connected to (after a restart, or adopted from a dead node of a
    /// cluster) may have a will to authorize. Returns whether the
    /// principal is known now. The default does nothing: an authorizer
    /// that needs no CONNECT to decide.
    async fn readmit(&self, _tenant: &TenantId, _principal: &str) -> bool {
        false
    }
}

/// Decides publish and subscribe per identity and topic.
///
/// Synchronous on purpose: it runs for every PUBLISH on the hot path, so an
/// implementation keeps its policies in memory (loaded when the identity
/// connects, refreshed in the background) instead of awaiting a database.
pub trait Authorizer: Send + Sync + 'static {
    /// May `identity` publish to `topic` (within its tenant)?
    fn can_publish(&self, identity: &Identity, topic: &TopicName) -> bool;
    /// May `identity` subscribe to `filter` (within its tenant)?
    fn can_subscribe(&self, identity: &Identity, filter: &TopicFilter) -> bool;
}

/// `--allow-anonymous TENANT`: every client lands in one tenant, whatever
/// it presents. Dev and benchmarks only.
#[derive(Debug, Clone)]
pub struct AllowAnonymous {
    /// The tenant every client is put in.
    pub tenant: TenantId,
}

#[async_trait]
impl Authenticator for AllowAnonymous {
    async fn authenticate(&self, request: &AuthRequest) -> Result<Identity, AuthError> {
        Ok(Identity {
            tenant: self.tenant.clone(),
            principal: request
                .username
                .clone()
                .unwrap_or_else(|| "anonymous".to_owned()),
            limits: None,
        })
    }
}

/// In-memory username/password table, for tests and small setups.
#[derive(Debug, Default, Clone)]
pub struct MemoryAuthenticator {
    users: HashMap<String, (Bytes, Identity)>,
}

impl MemoryAuthenticator {
    /// An empty table: every CONNECT is refused.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) a user that authenticates as `identity`.
    pub fn with_user(
        mut self,
        username: impl Into<String>,
        password: impl Into<Bytes>,
        identity: Identity,
    ) -> Self {
        self.users
            .insert(username.into(), (password.into(), identity));
        self
    }
}

#[async_trait]
impl Authenticator for MemoryAuthenticator {
    async fn authenticate(&self, request: &AuthRequest) -> Result<Identity, AuthError> {
        let (Some(user), Some(password)) = (&request.username, &request.password) else {
            return Err(AuthError::BadCredentials);
        };
        match self.users.get(user) {
            Some((expected, identity)) if expected == password => Ok(identity.clone()),
            _ => Err(AuthError::BadCredentials),
        }
    }
}

/// Everything is allowed (inside the tenant: isolation does not depend on
/// the authorizer).
#[derive(Debug, Clone, Copy, Default)]
pub struct AllowAll;

impl Authorizer for AllowAll {
    fn can_publish(&self, _: &Identity, _: &TopicName) -> bool {
        true
    }
    fn can_subscribe(&self, _: &Identity, _: &TopicFilter) -> bool {
        true
    }
}

/// In-memory ACL of filter templates; `${principal}` in a template is
/// replaced by the identity's principal. The platform's default device
/// policy (`access::policy`) is `publish devices/${principal}/#`,
/// `subscribe commands/${principal}/#`.
#[derive(Debug, Clone, Default)]
pub struct TemplateAcl {
    publish: Vec<String>,
    subscribe: Vec<String>,
}

impl TemplateAcl {
    /// An ACL that allows nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// Allows publishing to topics matching `template`.
    pub fn publish(mut self, template: impl Into<String>) -> Self {
        self.publish.push(template.into());
        self
    }

    /// Allows subscribing to filters covered by `template`.
    pub fn subscribe(mut self, template: impl Into<String>) -> Self {
        self.subscribe.push(template.into());
        self
    }

    fn expand(template: &str, identity: &Identity) -> Option<TopicFilter> {
        // A principal with wildcards or `/` would widen the rule: refuse.
        if identity.principal.contains(['+', '#', '/']) {
            return None;
        }
        TopicFilter::parse(template.replace("${principal}", &identity.principal)).ok()
    }
}

impl Authorizer for TemplateAcl {
    fn can_publish(&self, identity: &Identity, topic: &TopicName) -> bool {
        self.publish
            .iter()
            .filter_map(|t| Self::expand(t, identity))
            .any(|f| f.matches(topic))
    }

    fn can_subscribe(&self, identity: &Identity, filter: &TopicFilter) -> bool {
        let inner = filter.shared().map_or_else(|| filter.clone(), |s| s.filter);
        self.subscribe
            .iter()
            .filter_map(|t| Self::expand(t, identity))
            .any(|f| f.covers(&inner))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(p: &str) -> Identity {
        Identity {
            tenant: TenantId::parse("acme").unwrap(),
            principal: p.into(),
            limits: None,
        }
    }

    #[test]
    fn template_acl_is_the_default_device_policy() {
        let acl = TemplateAcl::new()
            .publish("devices/${principal}/#")
            .subscribe("commands/${principal}/#");
        let t = |s: &str| TopicName::parse(s).unwrap();
        let f = |s: &str| TopicFilter::parse(s).unwrap();
        assert!(acl.can_publish(&id("d1"), &t("devices/d1/state")));
        assert!(!acl.can_publish(&id("d1"), &t("devices/d2/state")));
        assert!(acl.can_subscribe(&id("d1"), &f("commands/d1/+")));
        assert!(acl.can_subscribe(&id("d1"), &f("$share/g/commands/d1/#")));
        assert!(!acl.can_subscribe(&id("d1"), &f("commands/+/x")));
        assert!(!acl.can_subscribe(&id("d1"), &f("#")));
        assert!(!acl.can_publish(&id("+"), &t("devices/x/state")));
    }

    #[tokio::test]
    async fn memory_authenticator_checks_passwords() {
        let auth = MemoryAuthenticator::new().with_user("u", "pw", id("d1"));
        let mut req = AuthRequest {
            username: Some("u".into()),
            password: Some(Bytes::from_static(b"pw")),
            client_id: "c".into(),
            peer: "127.0.0.1:1".parse().unwrap(),
            peer_certificates: None,
            protocol: ProtocolVersion::V5,
        };
        assert_eq!(auth.authenticate(&req).await, Ok(id("d1")));
        req.password = Some(Bytes::from_static(b"nope"));
        assert_eq!(
            auth.authenticate(&req).await,
            Err(AuthError::BadCredentials)
        );
    }
}
