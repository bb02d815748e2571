//! [`EventSink`]: lifecycle and message events leaving the broker (for
//! presence, webhooks and the dashboard), and an in-memory sink.

use std::net::SocketAddr;
use std::sync::Mutex;

use bytes::Bytes;
use mqtt::{ProtocolVersion, QoS, ReasonCode, TopicName};

use crate::TenantId;

/// Something that happened in a tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A client finished CONNECT successfully.
    Connected {
        /// Tenant.
        tenant: TenantId,
        /// MQTT client id.
        client_id: String,
        /// Principal from the authenticator.
        principal: String,
        /// Peer address.
        peer: SocketAddr,
        /// Protocol version.
        protocol: ProtocolVersion,
        /// What the client presented that the authenticator could use.
        credential: Credential,
    },
    /// A connection ended.
    Disconnected {
        /// Tenant.
        tenant: TenantId,
        /// MQTT client id.
        client_id: String,
        /// Principal from the authenticator, as at [`Event::Connected`]:
        /// whether a device left, without asking the store.
        principal: String,
        /// Whether the client said DISCONNECT 0x00 (a clean goodbye).
        graceful: bool,
        /// The reason code of the DISCONNECT that ended it (ours or theirs).
        reason: ReasonCode,
    },
    /// An application message was accepted from a client (or a will).
    Published {
        /// Tenant.
        tenant: TenantId,
        /// Publishing client id.
        client_id: String,
        /// Topic.
        topic: TopicName,
        /// Payload (shared, not copied).
        payload: Bytes,
        /// QoS as published.
        qos: QoS,
        /// RETAIN flag.
        retain: bool,
    },
    /// A retained message was set, replaced or (payload `None`) deleted.
    RetainedChanged {
        /// Tenant.
        tenant: TenantId,
        /// Topic.
        topic: TopicName,
        /// The new payload, or `None` when deleted.
        payload: Option<Bytes>,
    },
}

/// The credential a client presented at CONNECT, as the platform's
/// authenticators weigh it: a TLS client certificate wins over a user name
/// and password (so a device's presence names the certificate it used).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    /// The TLS client certificate (DER of the leaf; shared, not copied).
    Certificate(Bytes),
    /// A user name with a password.
    Password,
    /// Nothing (an anonymous client).
    None,
}

impl Credential {
    /// What `request` presented.
    pub fn of(request: &crate::auth::AuthRequest) -> Credential {
        match request.peer_certificates.as_deref().and_then(<[_]>::first) {
            Some(leaf) => Credential::Certificate(leaf.clone()),
            None if request.password.is_some() => Credential::Password,
            None => Credential::None,
        }
    }

    /// How the client authenticated, for logs.
    pub fn method(&self) -> &'static str {
        match self {
            Credential::Certificate(_) => "certificate",
            Credential::Password => "password",
            Credential::None => "anonymous",
        }
    }
}

/// Receives [`Event`]s. Called on the hot path, under no lock: an
/// implementation must not block (hand the event to a channel or buffer).
pub trait EventSink: Send + Sync + 'static {
    /// Takes one event.
    fn emit(&self, event: Event);

    /// Whether [`Event::Published`] is wanted at all; `false` spares the
    /// hot path building one per message.
    fn wants_published(&self) -> bool {
        true
    }
}

/// Drops every event.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoEvents;

impl EventSink for NoEvents {
    fn emit(&self, _: Event) {}

    fn wants_published(&self) -> bool {
        false
    }
}

/// Keeps every event in memory, for tests and debugging.
#[derive(Debug, Default)]
pub struct MemoryEvents {
    // std Mutex: nothing awaits while it is held.
    events: Mutex<Vec<Event>>,
}

impl MemoryEvents {
    /// An empty sink.
    pub fn new() -> Self {
        Self::default()
    }

    /// A copy of the events so far.
    pub fn snapshot(&self) -> Vec<Event> {
        self.events.lock().map(|e| e.clone()).unwrap_or_default()
    }
}

impl EventSink for MemoryEvents {
    fn emit(&self, event: Event) {
        if let Ok(mut events) = self.events.lock() {
            events.push(event);
        }
    }
}
