//! SUBACK (3.9): one reason code per requested subscription.

use bytes::{BufMut, BytesMut};

use super::ack::{check_reason, read_reason};
use super::{PacketId, PacketType, ProtocolVersion, read_packet_id};
use crate::codec::Reader;
use crate::error::{EncodeError, Error};
use crate::properties::{Properties, PropertyContext};
use crate::reason::ReasonCode;

/// SUBACK (3.9).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubAck {
    /// Packet Identifier of the SUBSCRIBE.
    pub packet_id: PacketId,
    /// One per subscription, in order (MQTT-3.8.4-6). On 3.1.1 every
    /// failure is sent as 0x80.
    pub reason_codes: Vec<ReasonCode>,
    /// SUBACK properties (MQTT 5).
    pub properties: Properties,
}

/// 3.1.1 SUBACK return codes (3.9.3): granted QoS or 0x80 failure.
fn from_v311(code: u8) -> Result<ReasonCode, Error> {
    match code {
        0x00 => Ok(ReasonCode::Success),
        0x01 => Ok(ReasonCode::GrantedQoS1),
        0x02 => Ok(ReasonCode::GrantedQoS2),
        0x80 => Ok(ReasonCode::UnspecifiedError),
        _ => Err(Error::InvalidReasonCode {
            packet: PacketType::SubAck,
            code,
        }),
    }
}

impl SubAck {
    pub(crate) fn read(r: &mut Reader, version: ProtocolVersion) -> Result<Self, Error> {
        let packet_id = read_packet_id(r, PacketType::SubAck)?;
        let properties = match version {
            ProtocolVersion::V311 => Properties::default(),
            ProtocolVersion::V5 => Properties::read(r, PropertyContext::SubAck)?,
        };
        let mut reason_codes = Vec::with_capacity(r.remaining());
        while !r.is_empty() {
            reason_codes.push(match version {
                ProtocolVersion::V311 => from_v311(r.u8()?)?,
                ProtocolVersion::V5 => read_reason(r, PacketType::SubAck)?,
            });
        }
        if reason_codes.is_empty() {
            return Err(Error::EmptyPayload(PacketType::SubAck));
        }
        Ok(Self {
            packet_id,
            reason_codes,
            properties,
        })
    }

    /// Writes the body; returns the fixed header flags.
    pub(crate) fn write(
        &self,
        version: ProtocolVersion,
        dst: &mut BytesMut,
    ) -> Result<u8, EncodeError> {
        if self.reason_codes.is_empty() {
            return Err(EncodeError::EmptyPayload(PacketType::SubAck));
        }
        dst.put_u16(self.packet_id.get());
        if version == ProtocolVersion::V5 {
            self.properties.write(PropertyContext::SubAck, dst)?;
        }
        for &rc in &self.reason_codes {
            check_reason(rc, PacketType::SubAck)?;
            dst.put_u8(match version {
                ProtocolVersion::V5 => rc.to_u8(),
                ProtocolVersion::V311 if rc.is_error() => 0x80,
                ProtocolVersion::V311 => rc.to_u8(),
            });
        }
        Ok(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::Packet;
    use crate::packet::testutil::{decode_one, encode};

    const V4: ProtocolVersion = ProtocolVersion::V311;
    const V5: ProtocolVersion = ProtocolVersion::V5;

    #[test]
    fn v5_failures_become_0x80_on_v311() {
        let p = Packet::SubAck(SubAck {
            packet_id: PacketId::new(1).unwrap(),
            reason_codes: vec![ReasonCode::GrantedQoS1, ReasonCode::NotAuthorized],
            properties: Properties::default(),
        });
        assert_eq!(encode(&p, V4), [0x90, 0x04, 0x00, 0x01, 0x01, 0x80]);
        assert_eq!(encode(&p, V5), [0x90, 0x05, 0x00, 0x01, 0x00, 0x01, 0x87]);
        assert_eq!(
            decode_one(&[0x90, 0x05, 0x00, 0x01, 0x00, 0x01, 0x87], V5).unwrap(),
            p
        );
    }

    #[test]
    fn rejects_unknown_codes_and_empty_lists() {
        assert_eq!(
            decode_one(&[0x90, 0x03, 0x00, 0x01, 0x03], V4),
            Err(Error::InvalidReasonCode {
                packet: PacketType::SubAck,
                code: 3
            })
        );
        assert_eq!(
            decode_one(&[0x90, 0x04, 0x00, 0x01, 0x00, 0x92], V5),
            Err(Error::InvalidReasonCode {
                packet: PacketType::SubAck,
                code: 0x92
            })
        );
        assert_eq!(
            decode_one(&[0x90, 0x02, 0x00, 0x01], V4),
            Err(Error::EmptyPayload(PacketType::SubAck))
        );
    }
}
