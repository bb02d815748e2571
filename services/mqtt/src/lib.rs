//! MQTT 3.1.1 and 5.0 packets: types, encode/decode on `bytes`, topic names
//! and filters. No I/O, no async, no tenants: the broker feeds bytes in and
//! takes packets out.
//!
//! Module map:
//!
//! - [`packet`]: [`Packet`] and one file per control packet (`connect.rs`,
//!   `publish.rs`, …), each with its read and write; [`decode`] frames one
//!   packet off a buffer, [`Packet::encode`] writes one.
//! - [`properties`]: MQTT 5 [`Properties`] and the allowed-per-packet table.
//! - [`reason`]: [`ReasonCode`], the 3.1.1 fallback, and the single
//!   `From<&Error> for ReasonCode` mapping.
//! - [`topic`]: [`TopicName`], [`TopicFilter`], [`SharedSubscription`] and
//!   matching.
//! - [`hygiene`]: [`TopicRules`] (optional per-tenant rules: depth, leading
//!   `/`, spaces, catch-all cap), [`TopicLimits`] and [`TopicRefusal`].
//! - [`error`]: [`Error`] (the peer sent something wrong) and
//!   [`EncodeError`] (we tried to send something wrong).
//! - `codec` (private): bounds-checked reader and writers; nothing else
//!   touches raw bytes.
//!
//! Versions: the connection's [`ProtocolVersion`] comes from its CONNECT
//! ([`Connect::protocol`]); packets are version-neutral and the version is
//! passed to [`decode`] and [`Packet::encode`]. Encoding for 3.1.1 drops MQTT
//! 5-only fields (properties, most reason codes) or maps them to 3.1.1
//! return codes.
//!
//! Spec references in comments (`MQTT-3.3.2-2`) are the normative statement
//! numbers of the MQTT 5.0 OASIS standard unless a 3.1.1 rule is meant.
//!
//! ```
//! use bytes::BytesMut;
//! use mqtt::{Packet, ProtocolVersion, Publish, TopicName, decode};
//!
//! let topic = TopicName::parse("devices/d1/state")?;
//! let mut buf = BytesMut::new();
//! Packet::from(Publish::new(topic, "on")).encode(ProtocolVersion::V5, &mut buf)?;
//! let packet = decode(&mut buf, ProtocolVersion::V5, 1024)?.expect("whole packet");
//! assert!(matches!(packet, Packet::Publish(_)));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![warn(missing_docs)]

mod byte_enum;
mod codec;
pub mod error;
pub mod hygiene;
pub mod packet;
pub mod properties;
pub mod reason;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod topic;

pub use error::{EncodeError, Error};
pub use hygiene::{TopicLimits, TopicRefusal, TopicRules};
pub use packet::{
    Auth, ConnAck, Connect, Disconnect, LastWill, MAX_PACKET_SIZE, Packet, PacketId, PacketType,
    ProtocolVersion, PubAck, PubComp, PubRec, PubRel, Publish, QoS, RetainHandling, SubAck,
    Subscribe, Subscription, SubscriptionOptions, UnsubAck, Unsubscribe, decode,
};
pub use properties::{PayloadFormat, Properties, PropertyContext, PropertyId, UserProperties};
pub use reason::ReasonCode;
pub use topic::{SharedSubscription, TopicError, TopicFilter, TopicName};
