//! The shared layout of PUBACK, PUBREC, PUBREL and PUBCOMP: packet
//! identifier, then (MQTT 5 only) an optional reason code and optional
//! properties (3.4.2, 3.5.2, 3.6.2, 3.7.2).

use bytes::{BufMut, BytesMut};

use super::{Kind, PacketId, PacketType, ProtocolVersion, read_packet_id};
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
    (packet, ctx): Kind,
) -> Result<AckParts, Error> {
    let packet_id = read_packet_id(r, packet)?;
    // 3.1.1 stops here; any further byte is reported as trailing.
    // In 5.0 a remaining length of 2 means Success without properties
    // (3.4.2.1), and one of 3 means no properties (3.4.2.2.1).
    let (reason_code, properties) = read_reason_and_properties(r, version, packet, ctx)?;
    Ok(AckParts {
        packet_id,
        reason_code,
        properties,
    })
}

/// An optional reason code, then optional properties (MQTT 5 only): a
/// packet that ends before either means Success or no properties. The
/// acknowledgements have them after the packet identifier, DISCONNECT and
/// AUTH as their whole body (3.14.2.1, 3.15.2.1).
pub(crate) fn read_reason_and_properties(
    r: &mut Reader,
    version: ProtocolVersion,
    packet: PacketType,
    ctx: PropertyContext,
) -> Result<(ReasonCode, Properties), Error> {
    let mut out = (ReasonCode::Success, Properties::default());
    if version == ProtocolVersion::V5 && !r.is_empty() {
        out.0 = read_reason(r, packet)?;
        if !r.is_empty() {
            out.1 = Properties::read(r, ctx)?;
        }
    }
    Ok(out)
}

/// Writes the shortest form the spec allows.
pub(crate) fn write(
    parts: (PacketId, ReasonCode, &Properties),
    version: ProtocolVersion,
    (packet, ctx): Kind,
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

            pub(crate) fn from_parts(parts: $crate::packet::ack::AckParts) -> Self {
                Self {
                    packet_id: parts.packet_id,
                    reason_code: parts.reason_code,
                    properties: parts.properties,
                }
            }
        }

        $crate::packet::impl_codec!(
            $name,
            read = |r: &mut $crate::codec::Reader, version, kind| {
                $crate::packet::ack::read(r, version, kind).map(Self::from_parts)
            },
            write = |p: &Self, version, kind, dst| {
                let parts = (p.packet_id, p.reason_code, &p.properties);
                $crate::packet::ack::write(parts, version, kind, dst).map(|()| $flags)
            }
        );
    };
}
pub(crate) use ack_packet;
