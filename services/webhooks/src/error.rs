//! The crate's error type. The REST layer maps it once: `UrlRefused`,
//! `InvalidUrl`, `InvalidTopicFilter`, `InvalidEventTypes`, `InvalidSecret` → 400 (problem+json),
//! `Store` through the store's own mapping.

/// Everything that can go wrong in `webhooks`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The URL does not parse or has no host.
    #[error("invalid webhook URL: {reason}")]
    InvalidUrl { reason: String },

    /// The URL is not allowed: plain http outside dev mode, or a host that
    /// is (or resolves to) a loopback, private, link-local, … address.
    #[error("webhook URL refused: {reason}")]
    UrlRefused { reason: String },

    /// The host name did not resolve.
    #[error("webhook host {host} did not resolve: {reason}")]
    Unresolvable { host: String, reason: String },

    /// A topic filter that is not a valid MQTT topic filter.
    #[error("invalid topic filter: {reason}")]
    InvalidTopicFilter { reason: String },

    /// The event type list is empty, too long, or has a malformed name.
    #[error("invalid event types: give 1 to 64 names without spaces")]
    InvalidEventTypes,

    /// A secret that is not `whsec_` + base64.
    #[error("invalid webhook secret: expected whsec_ followed by base64")]
    InvalidSecret,

    /// The HTTP client could not be built (TLS roots, …).
    #[error("cannot build the webhook HTTP client: {0}")]
    Client(#[source] reqwest::Error),

    #[error(transparent)]
    Store(#[from] store::Error),
}
