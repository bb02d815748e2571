//! Decode and encode errors.
//!
//! Every way a peer's bytes can be wrong has its own [`Error`] variant; the
//! single mapping to an MQTT v5 reason code lives in `impl From<&Error> for
//! ReasonCode` (see [`crate::reason`]), so the broker never decides twice.

use crate::packet::PacketType;
use crate::properties::{PropertyContext, PropertyId};
use crate::topic::TopicError;

/// Why bytes from a peer could not be decoded into a [`crate::Packet`].
///
/// After any error the connection must be closed: the buffer may have been
/// partly consumed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The remaining length (or another variable byte integer) had a
    /// continuation bit set on its fourth byte.
    #[error("variable byte integer longer than 4 bytes")]
    MalformedVariableInteger,
    /// A variable byte integer used more bytes than needed (MQTT-1.5.5-1).
    #[error("variable byte integer not minimally encoded")]
    NonMinimalVariableInteger,
    /// The whole packet would be larger than the allowed maximum.
    #[error("packet of {size} bytes exceeds the maximum of {max}")]
    PacketTooLarge {
        /// Total packet size announced by the fixed header.
        size: usize,
        /// The limit the caller passed in.
        max: usize,
    },
    /// Packet type 0, or 15 (AUTH) on a 3.1.1 connection.
    #[error("reserved packet type {0}")]
    ReservedPacketType(u8),
    /// The fixed header flags are not the ones the spec fixes for this
    /// packet type (MQTT-2.1.3-1).
    #[error("invalid fixed header flags {flags:#06b} for {packet:?}")]
    InvalidHeaderFlags {
        /// The packet the flags belong to.
        packet: PacketType,
        /// The low nibble of the first byte.
        flags: u8,
    },
    /// A QoS field held 3 (MQTT-3.3.1-4, MQTT-3.1.2-14).
    #[error("invalid QoS {0}")]
    InvalidQoS(u8),
    /// A length field points past the end of the packet.
    #[error("field runs past the end of the packet")]
    UnexpectedEnd,
    /// Bytes were left over after the packet's last field.
    #[error("{0} trailing bytes after the packet")]
    TrailingBytes(usize),
    /// A string is not well-formed UTF-8, or encodes a surrogate
    /// (MQTT-1.5.4-1).
    #[error("string is not valid UTF-8")]
    InvalidUtf8,
    /// A string contains U+0000 (MQTT-1.5.4-2).
    #[error("string contains U+0000")]
    NullCharacter,
    /// A packet identifier that must be non-zero was 0 (MQTT-2.2.1-3).
    #[error("packet identifier 0 in {0:?}")]
    ZeroPacketId(PacketType),
    /// A PUBLISH topic name is invalid, e.g. contains a wildcard
    /// (MQTT-3.3.2-2).
    #[error("invalid topic name: {0}")]
    InvalidTopicName(TopicError),
    /// A SUBSCRIBE or UNSUBSCRIBE topic filter is invalid (MQTT-4.7.1-1).
    #[error("invalid topic filter: {0}")]
    InvalidTopicFilter(TopicError),
    /// A v5 PUBLISH had an empty topic name and no topic alias.
    #[error("empty topic name without a topic alias")]
    MissingTopic,
    /// SUBSCRIBE, UNSUBSCRIBE, SUBACK or v5 UNSUBACK had no entries
    /// (MQTT-3.8.3-2, MQTT-3.10.3-2).
    #[error("{0:?} has an empty payload")]
    EmptyPayload(PacketType),
    /// CONNECT protocol name is not `MQTT` (MQTT-3.1.2-1).
    #[error("protocol name is not MQTT")]
    InvalidProtocolName,
    /// CONNECT protocol level is neither 4 (3.1.1) nor 5 (MQTT-3.1.2-2).
    #[error("unsupported protocol level {0}")]
    UnsupportedProtocolLevel(u8),
    /// CONNECT reserved flag bit 0 was set (MQTT-3.1.2-3).
    #[error("CONNECT reserved flag set")]
    ConnectReservedFlag,
    /// Will QoS or Will Retain set without the Will Flag (MQTT-3.1.2-11,
    /// MQTT-3.1.2-13, MQTT-3.1.2-15).
    #[error("will QoS/retain set without the will flag")]
    WillFlagsWithoutWill,
    /// 3.1.1 CONNECT with the password flag but no username flag
    /// (MQTT-3.1.2-22).
    #[error("password without username")]
    PasswordWithoutUsername,
    /// PUBLISH with QoS 0 and the DUP flag set (MQTT-3.3.1-2).
    #[error("DUP flag set on a QoS 0 PUBLISH")]
    DupOnQoS0,
    /// CONNACK acknowledge flags bits 7-1 set (MQTT-3.2.2-1).
    #[error("CONNACK reserved flags {0:#04x}")]
    ConnAckReservedFlags(u8),
    /// CONNACK with Session Present set and a failure code (MQTT-3.2.2-6).
    #[error("session present with a failure reason code")]
    SessionPresentOnFailure,
    /// A reason code that is not defined, or not allowed in this packet.
    #[error("reason code {code:#04x} not allowed in {packet:?}")]
    InvalidReasonCode {
        /// The packet carrying it.
        packet: PacketType,
        /// The byte on the wire.
        code: u8,
    },
    /// Subscription options with reserved bits set (MQTT-3.8.3-5), or a
    /// 3.1.1 requested QoS byte with bits 7-2 set (MQTT-3-8.3-4).
    #[error("subscription options {0:#04x} have reserved bits set")]
    SubscriptionOptionsReserved(u8),
    /// Retain Handling 3, a Protocol Error (3.8.3.1).
    #[error("retain handling 3 is reserved")]
    InvalidRetainHandling,
    /// No Local on a shared subscription (MQTT-3.8.3-4).
    #[error("no local set on a shared subscription")]
    NoLocalOnSharedSubscription,
    /// A property identifier that MQTT 5 does not define.
    #[error("unknown property identifier {0:#x}")]
    UnknownProperty(u32),
    /// A property appears in a packet that may not carry it (2.2.2.2).
    #[error("property {property:?} not allowed in {context:?}")]
    PropertyNotAllowed {
        /// The property.
        property: PropertyId,
        /// Where it appeared.
        context: PropertyContext,
    },
    /// A property that may appear once appeared twice.
    #[error("property {0:?} appears more than once")]
    DuplicateProperty(PropertyId),
    /// A property value outside its allowed range (e.g. Receive Maximum 0,
    /// Topic Alias 0 (MQTT-3.3.2-8), a boolean byte other than 0 or 1).
    #[error("invalid value for property {0:?}")]
    InvalidPropertyValue(PropertyId),
    /// Authentication Data without Authentication Method (3.1.2.11.10).
    #[error("authentication data without authentication method")]
    AuthDataWithoutMethod,
}

/// Why a packet could not be encoded. These are our own mistakes (or a peer
/// limit we must respect), never the peer's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// The encoded packet exceeds the receiver's Maximum Packet Size
    /// (MQTT-3.1.2-24).
    #[error("packet of {size} bytes exceeds the peer's maximum of {max}")]
    PacketTooLarge {
        /// Encoded size.
        size: usize,
        /// The receiver's limit.
        max: usize,
    },
    /// A string or binary field is longer than 65,535 bytes.
    #[error("field of {0} bytes exceeds 65535")]
    FieldTooLong(usize),
    /// The packet does not exist in the chosen protocol version (AUTH in
    /// 3.1.1).
    #[error("{0:?} does not exist in MQTT 3.1.1")]
    NotInVersion(PacketType),
    /// QoS 1/2 PUBLISH without a packet identifier.
    #[error("QoS > 0 PUBLISH without a packet identifier")]
    MissingPacketId,
    /// QoS 0 PUBLISH with a packet identifier (MQTT-2.2.1-2).
    #[error("QoS 0 PUBLISH with a packet identifier")]
    UnexpectedPacketId,
    /// PUBLISH without a topic name and (in v5) without a topic alias.
    #[error("PUBLISH without a topic name")]
    MissingTopic,
    /// DUP set on QoS 0 (MQTT-3.3.1-2).
    #[error("DUP flag on a QoS 0 PUBLISH")]
    DupOnQoS0,
    /// SUBSCRIBE/UNSUBSCRIBE/SUBACK/UNSUBACK with nothing in it.
    #[error("{0:?} with an empty payload")]
    EmptyPayload(PacketType),
    /// Password without username in 3.1.1 (MQTT-3.1.2-22).
    #[error("3.1.1 CONNECT with a password but no username")]
    PasswordWithoutUsername,
    /// Session Present with a failure reason code (MQTT-3.2.2-6).
    #[error("session present with a failure reason code")]
    SessionPresentOnFailure,
    /// A reason code not allowed in this packet.
    #[error("reason code {code:#04x} not allowed in {packet:?}")]
    ReasonCodeNotAllowed {
        /// The packet.
        packet: PacketType,
        /// The code.
        code: u8,
    },
    /// A property not allowed in this packet.
    #[error("property {property:?} not allowed in {context:?}")]
    PropertyNotAllowed {
        /// The property.
        property: PropertyId,
        /// Where it was set.
        context: PropertyContext,
    },
    /// A single-valued property given several values (e.g. more than one
    /// Subscription Identifier outside PUBLISH).
    #[error("property {0:?} given more than once")]
    DuplicateProperty(PropertyId),
    /// A property value outside its range.
    #[error("invalid value for property {0:?}")]
    InvalidPropertyValue(PropertyId),
    /// Authentication Data without Authentication Method.
    #[error("authentication data without authentication method")]
    AuthDataWithoutMethod,
    /// No Local on a shared subscription (MQTT-3.8.3-4).
    #[error("no local set on a shared subscription")]
    NoLocalOnSharedSubscription,
    /// Strings may not contain U+0000 (MQTT-1.5.4-2).
    #[error("string contains U+0000")]
    NullCharacter,
}
