//! DISCONNECT (3.14): in 5.0 either side may send it, with a reason.

use bytes::{BufMut, BytesMut};

use super::PacketType;
use super::ack::check_reason;
use crate::error::EncodeError;
use crate::properties::{Properties, PropertyContext};
use crate::reason::ReasonCode;

/// DISCONNECT (3.14).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disconnect {
    /// Why; 3.1.1 has none, so it is dropped when encoding for it.
    pub reason_code: ReasonCode,
    /// DISCONNECT properties (MQTT 5).
    pub properties: Properties,
}

impl Disconnect {
    /// A DISCONNECT with `reason_code` and no properties.
    pub fn new(reason_code: ReasonCode) -> Self {
        Self {
            reason_code,
            properties: Properties::default(),
        }
    }
}

/// `read` and [`Body`](super::Body) for DISCONNECT and AUTH, whose bodies
/// are both an optional reason code and optional properties; `$v311` is
/// what writing one for 3.1.1 does (DISCONNECT has no body there, AUTH does
/// not exist).
macro_rules! reason_packet {
    ($name:ident, v311 = $v311:expr) => {
        $crate::packet::impl_codec!(
            $name,
            read = |r: &mut $crate::codec::Reader, version, (packet, ctx)| {
                $crate::packet::ack::read_reason_and_properties(r, version, packet, ctx).map(
                    |(reason_code, properties)| Self {
                        reason_code,
                        properties,
                    },
                )
            },
            write = |p: &Self, version, (packet, ctx), dst| match version {
                $crate::packet::ProtocolVersion::V311 => $v311.map(|()| 0),
                $crate::packet::ProtocolVersion::V5 => {
                    let (reason, properties) = (p.reason_code, &p.properties);
                    $crate::packet::disconnect::write_reason_and_properties(
                        reason, properties, packet, ctx, dst,
                    )
                    .map(|()| 0)
                }
            }
        );
    };
}
pub(crate) use reason_packet;

reason_packet!(Disconnect, v311 = Ok(()));

/// A reason code and properties; both left out for Success without
/// properties. The property length is written even when it is 0: the spec
/// lets it be left out then, but clients in the field (rumqttc 0.25) fail
/// to decode a DISCONNECT without it, and the byte costs nothing.
pub(crate) fn write_reason_and_properties(
    reason_code: ReasonCode,
    properties: &Properties,
    packet: PacketType,
    ctx: PropertyContext,
    dst: &mut BytesMut,
) -> Result<(), EncodeError> {
    check_reason(reason_code, packet)?;
    if reason_code == ReasonCode::Success && properties.is_empty() {
        return Ok(());
    }
    dst.put_u8(reason_code.to_u8());
    properties.write(ctx, dst)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;
    use crate::packet::Packet;
    use crate::packet::testutil::{V4, V5, decode_one, encode};

    #[test]
    fn short_forms() {
        let normal = Packet::Disconnect(Disconnect::new(ReasonCode::NORMAL_DISCONNECTION));
        assert_eq!(encode(&normal, V4), [0xE0, 0x00]);
        assert_eq!(encode(&normal, V5), [0xE0, 0x00]);
        let taken = Packet::Disconnect(Disconnect::new(ReasonCode::SessionTakenOver));
        assert_eq!(encode(&taken, V4), [0xE0, 0x00]);
        assert_eq!(encode(&taken, V5), [0xE0, 0x02, 0x8E, 0x00]);
        assert_eq!(decode_one(&[0xE0, 0x01, 0x8E], V5).unwrap(), taken);
        assert_eq!(decode_one(&[0xE0, 0x02, 0x8E, 0x00], V5).unwrap(), taken);
        assert_eq!(decode_one(&[0xE0, 0x00], V5).unwrap(), normal);
    }

    #[test]
    fn v311_disconnect_has_no_body() {
        // Its fixed header flags: packet::tests::reserved_types_and_flags.
        assert_eq!(
            decode_one(&[0xE0, 0x01, 0x00], V4),
            Err(Error::TrailingBytes(1))
        );
        assert_eq!(
            decode_one(&[0xE0, 0x01, 0x18], V5),
            Err(Error::InvalidReasonCode {
                packet: PacketType::Disconnect,
                code: 0x18
            })
        );
    }
}
