//! The broker's errors and their single mapping to MQTT reason codes.

use std::time::Duration;

use mqtt::{PacketType, ReasonCode};

/// Why a connection ended abnormally, or an operation failed.
///
/// Connection-level variants carry the reason code that the DISCONNECT (or
/// CONNACK) to the peer uses; [`From<&Error> for ReasonCode`] is the one
/// place that decides it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Reading or writing the socket failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// The peer sent bytes that do not decode (closes only that connection).
    #[error("malformed packet: {0}")]
    Decode(#[from] mqtt::Error),
    /// We could not encode a packet (our bug or a peer limit).
    #[error("encode: {0}")]
    Encode(#[from] mqtt::EncodeError),
    /// No CONNECT arrived in time.
    #[error("no CONNECT within {0:?}")]
    ConnectTimeout(Duration),
    /// The first packet was not CONNECT (MQTT-3.1.0-1).
    #[error("first packet was {0:?}, not CONNECT")]
    NotConnect(PacketType),
    /// A well-formed packet that breaks a protocol rule.
    #[error("protocol violation ({reason:?}): {detail}")]
    Protocol {
        /// The reason code sent to the peer.
        reason: ReasonCode,
        /// What happened, for the log.
        detail: &'static str,
    },
    /// The client did not send anything within 1.5 times its keep alive
    /// (MQTT-3.1.2-22).
    #[error("keep alive of {0:?} expired")]
    KeepAliveTimeout(Duration),
    /// The socket did not accept our writes in time: a slow consumer.
    #[error("peer stopped reading for {0:?}")]
    WriteTimeout(Duration),
    /// The tenant id is not `[a-z0-9-]{{3,63}}`.
    #[error("invalid tenant id {0:?}")]
    InvalidTenantId(String),
    /// The tenant directory does not know this tenant (deleted).
    #[error("no tenant {0:?}")]
    UnknownTenant(String),
    /// Loading retained messages from the store failed.
    #[error("retained store: {0}")]
    Store(String),
    /// An MQTT 5 client went on publishing over its rate limit after
    /// `strikes` refusals in a row.
    #[error("publish rate limit exceeded {strikes} times in a row")]
    RateLimited {
        /// Refusals in a row.
        strikes: u32,
    },
    /// A retained message over a retained quota (client or tenant).
    #[error("{0}")]
    RetainedQuota(String),
    /// A TLS or WebSocket handshake failed.
    #[error("handshake: {0}")]
    Handshake(String),
}

impl Error {
    /// A protocol violation answered with `reason`.
    pub(crate) fn protocol(reason: ReasonCode, detail: &'static str) -> Self {
        Error::Protocol { reason, detail }
    }
}

impl From<&Error> for ReasonCode {
    fn from(e: &Error) -> Self {
        match e {
            Error::Decode(d) => ReasonCode::from(d),
            Error::Protocol { reason, .. } => *reason,
            Error::NotConnect(_) => ReasonCode::ProtocolError,
            Error::KeepAliveTimeout(_) => ReasonCode::KeepAliveTimeout,
            Error::RateLimited { .. } => ReasonCode::MessageRateTooHigh,
            Error::Encode(_) => ReasonCode::ImplementationSpecificError,
            Error::ConnectTimeout(_)
            | Error::WriteTimeout(_)
            | Error::Io(_)
            | Error::Handshake(_) => ReasonCode::UnspecifiedError,
            Error::InvalidTenantId(_) | Error::Store(_) => ReasonCode::ServerUnavailable,
            Error::UnknownTenant(_) => ReasonCode::NotAuthorized,
            Error::RetainedQuota(_) => ReasonCode::QuotaExceeded,
        }
    }
}
