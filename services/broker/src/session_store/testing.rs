//! Fixtures for tests of [`SessionStore`](super::SessionStore)
//! implementations, this crate's [`MemorySessionStore`](super::MemorySessionStore)
//! and `state`'s database one alike (feature `testing`: add
//! `broker = { workspace = true, features = ["testing"] }` to a crate's
//! `[dev-dependencies]`).
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use mqtt::{PacketId, ProtocolVersion, QoS};

use super::{QueuedFor, SessionRecord};

/// An MQTT 5 session of `client`, owned by the principal of the same
/// name, expiring an hour after it goes offline, without a will.
pub fn record(client: &str) -> SessionRecord {
    SessionRecord {
        client_id: Arc::from(client),
        owner: client.to_owned(),
        protocol: ProtocolVersion::V5,
        expiry_interval: 3600,
        will: None,
    }
}

/// A delivery at `qos` queued as `seq` for `client`, through a plain
/// subscription: no RETAIN, no Subscription Identifier, not shared.
pub fn queued_for(client: &str, seq: u64, qos: QoS) -> QueuedFor {
    QueuedFor {
        client_id: Arc::from(client),
        seq,
        qos,
        retain: false,
        subscription_ids: vec![],
        shared: None,
    }
}

/// Packet id `n` (not 0).
pub fn pid(n: u16) -> PacketId {
    PacketId::new(n).unwrap()
}
