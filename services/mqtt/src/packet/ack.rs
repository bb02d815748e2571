//! The shared layout of PUBACK, PUBREC, PUBREL and PUBCOMP: packet
//! identifier, then (MQTT 5 only) an optional reason code and optional
//! properties (3.4.2, 3.5.2, 3.6.2, 3.7.2).

use bytes::{BufMut, BytesMut};

use super::{PacketId, PacketType, ProtocolVersion, read_packet_id};
use crate::codec::Reader;
use crate::error::{EncodeError, Error};
use crate::properties::{Properties, PropertyContext};
use crate::reason::ReasonCode;

/// The fields every acknowledgement in the QoS flows carries.
pub(crate) struct AckParts {
    pub(crate) packet_id: PacketId,
    pub(crate) reason_code: ReasonCode,
    pub(crate) properties: Properties,
}

/// Reads a reason code and checks it is one `packet` may carry.
pub(crate) fn read_reason(r: &mut Reader, packet: PacketType) -> Result<ReasonCode, Error> {
    let code = r.u8()?;
    ReasonCode::from_u8(code)
        .filter(|rc| rc.allowed_in(packet))
        .ok_or(Error::InvalidReasonCode { packet, code })
}

/// Refuses a reason code `packet` may not carry.
pub(crate) fn check_reason(rc: ReasonCode, packet: PacketType) -> Result<(), EncodeError> {
    if rc.allowed_in(packet) {
        Ok(())
    } else {
        Err(EncodeError::ReasonCodeNotAllowed {
            packet,
            code: rc.to_u8(),
        })
    }
}

pub(crate) fn read(
    r: &mut Reader,
    version: ProtocolVersion,
    packet: PacketType,
    ctx: PropertyContext,
) -> Result<AckParts, Error> {
    let packet_id = read_packet_id(r, packet)?;
    let mut parts = AckParts {
        packet_id,
        reason_code: ReasonCode::Success,
        properties: Properties::default(),
    };
    // 3.1.1 stops here; any further byte is reported as trailing.
    // In 5.0 a remaining length of 2 means Success without properties
    // (3.4.2.1), and one of 3 means no properties (3.4.2.2.1).
    if version == ProtocolVersion::V5 && !r.is_empty() {
        parts.reason_code = read_reason(r, packet)?;
        if !r.is_empty() {
            parts.properties = Properties::read(r, ctx)?;
        }
    }
    Ok(parts)
}

/// Writes the shortest form the spec allows.
pub(crate) fn write(
    parts: (PacketId, ReasonCode, &Properties),
    version: ProtocolVersion,
    packet: PacketType,
    ctx: PropertyContext,
    dst: &mut BytesMut,
) -> Result<(), EncodeError> {
    let (packet_id, reason_code, properties) = parts;
    dst.put_u16(packet_id.get());
    if version == ProtocolVersion::V311 {
        // 3.1.1 has no reason code or properties here: they are dropped.
        return Ok(());
    }
    check_reason(reason_code, packet)?;
    if reason_code == ReasonCode::Success && properties.is_empty() {
        return Ok(());
    }
    dst.put_u8(reason_code.to_u8());
    if properties.is_empty() {
        return Ok(());
    }
    properties.write(ctx, dst)
}

/// Defines one acknowledgement packet type: the four share their fields and
/// layout and differ only in name, packet type and fixed-header flags.
macro_rules! ack_packet {
    ($(#[$doc:meta])* $name:ident, $kind:ident, flags = $flags:expr, new_doc = $new_doc:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub struct $name {
            /// The identifier of the flow being acknowledged.
            pub packet_id: $crate::packet::PacketId,
            /// Outcome; always `Success` on 3.1.1, which has no reason code here.
            pub reason_code: $crate::reason::ReasonCode,
            /// MQTT 5 properties (Reason String, User Property).
            pub properties: $crate::properties::Properties,
        }

        impl $name {
            #[doc = $new_doc]
            pub fn new(packet_id: $crate::packet::PacketId) -> Self {
                Self {
                    packet_id,
                    reason_code: $crate::reason::ReasonCode::Success,
                    properties: $crate::properties::Properties::default(),
                }
            }

            pub(crate) fn read(
                r: &mut $crate::codec::Reader,
                version: $crate::packet::ProtocolVersion,
            ) -> Result<Self, $crate::error::Error> {
                let parts = $crate::packet::ack::read(
                    r,
                    version,
                    $crate::packet::PacketType::$kind,
                    $crate::properties::PropertyContext::$kind,
                )?;
                Ok(Self {
                    packet_id: parts.packet_id,
                    reason_code: parts.reason_code,
                    properties: parts.properties,
                })
            }

            /// Writes the body; returns the fixed header flags.
            pub(crate) fn write(
                &self,
                version: $crate::packet::ProtocolVersion,
                dst: &mut bytes::BytesMut,
            ) -> Result<u8, $crate::error::EncodeError> {
                let parts = (self.packet_id, self.reason_code, &self.properties);
                $crate::packet::ack::write(
                    parts,
                    version,
                    $crate::packet::PacketType::$kind,
                    $crate::properties::PropertyContext::$kind,
                    dst,
                )?;
                Ok($flags)
            }
        }
    };
}
pub(crate) use ack_packet;
