//! fleetmq platform access: who may connect to the broker and what each
//! identity may publish and subscribe to, from the store and the PKI.
//! Depends on `broker`, `pki` and `store`; only the binary depends on it.
//!
//! Module map:
//! - `authenticator.rs` — [`PlatformAuthenticator`] (`broker::Authenticator`):
//!   TLS client certificates, device passwords (`{device}@{tenant}`), tenant
//!   service credentials.
//! - `authorizer.rs` — [`PolicyAuthorizer`] (`broker::Authorizer`): compiled
//!   ACL policies, deny by default.
//! - `policy.rs` — the policy document, its variables and the engine
//!   ([`PolicyTemplate`], [`CompiledPolicy`]).
//! - `cache.rs` — [`AccessCache`]: device, certificate and policy state in
//!   memory, invalidated on change.
//! - `revocations.rs` — [`Revocations`]: invalidate and end live sessions.
//! - `changes.rs` — [`LiveSessions`]: the change feed's listener that
//!   applies revocations, deletions, policies, publish limits and topic
//!   rules to the cache and the broker, whichever node made the change.
//! - `status_topic.rs` — [`StatusTopics`] (which tenants get platform
//!   presence on `devices/{d}/status`) and [`StatusTopicGuard`], which keeps
//!   devices from forging it.
//! - `jit.rs` — just-in-time registration of devices with certificates
//!   from a registered CA that allows it.
//! - `limits.rs` — publish rate limits for the broker ([`broker_limits`])
//!   and [`LiveLimits`]: changed limits reach live sessions.
//! - `tenants.rs` — [`StoreTenants`]: the broker's `TenantDirectory`.
//! - `password.rs` — argon2id hashing, generated passwords, device usernames.
//! - `password_checks.rs` — [`PasswordChecks`]: password checks bounded in
//!   number, queued fairly per tenant, with a failure budget per address
//!   and a cache of verified pairs.
//! - `error.rs` — [`AccessError`] and [`Refusal`], mapped to `AuthError`.
//!
//! Wiring (in `fleetmq serve`): one [`AccessCache`] over the store; a
//! [`PlatformAuthenticator`] and a [`PolicyAuthorizer`] sharing it, given
//! to `Broker::builder`; then [`LiveSessions`] over the cache and the built
//! broker, subscribed to the change feed the REST API publishes on.

#![warn(missing_docs)]

mod authenticator;
mod authorizer;
mod cache;
mod changes;
mod error;
mod jit;
mod limits;
mod password;
mod password_checks;
mod policy;
mod revocations;
mod status_topic;
mod tenants;

pub use authenticator::{PlatformAuthenticator, platform_principal, service_principal};
pub use authorizer::PolicyAuthorizer;
pub use cache::AccessCache;
pub use changes::LiveSessions;
pub use error::{AccessError, Refusal};
pub use jit::{DeviceCreated, JIT_ACTOR};
pub use limits::{LiveLimits, broker_limits};
pub use password::{
    device_username, generate_password, hash_password, parse_device_username, verify_password,
};
pub use password_checks::{CheckRefused, PasswordCheckLimits, PasswordChecks};
pub use policy::{
    Action, CompiledPolicy, Decision, Effect, PolicyError, PolicyTemplate, Variables,
};
pub use revocations::Revocations;
pub use status_topic::{StatusTopicGuard, StatusTopics};
pub use tenants::{StoreTenants, load_topic_rules};
