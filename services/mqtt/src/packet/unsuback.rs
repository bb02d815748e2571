//! UNSUBACK (3.11): in 5.0 one reason code per filter; in 3.1.1 only the
//! packet identifier.

use bytes::{BufMut, BytesMut};

use super::ack::{check_reason, read_reason};
use super::{Body, PacketId, PacketType, ProtocolVersion, read_packet_id};
use crate::codec::Reader;
use crate::error::{EncodeError, Error};
use crate::properties::{Properties, PropertyContext};
use crate::reason::ReasonCode;

/// UNSUBACK (3.11).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnsubAck {
    /// Packet Identifier of the UNSUBSCRIBE.
    pub packet_id: PacketId,
    /// One per filter (MQTT 5, MQTT-3.11.3-1); empty on 3.1.1, where
    /// they are dropped when encoding.
    pub reason_codes: Vec<ReasonCode>,
    /// UNSUBACK properties (MQTT 5).
    pub properties: Properties,
}

impl UnsubAck {
    pub(crate) fn read(r: &mut Reader, version: ProtocolVersion) -> Result<Self, Error> {
        let packet_id = read_packet_id(r, PacketType::UnsubAck)?;
        let mut ack = Self {
            packet_id,
            reason_codes: Vec::new(),
            properties: Properties::default(),
        };
        if version == ProtocolVersion::V311 {
            return Ok(ack);
        }
        ack.properties = Properties::read(r, PropertyContext::UnsubAck)?;
        ack.reason_codes.reserve(r.remaining());
        while !r.is_empty() {
            ack.reason_codes.push(read_reason(r, PacketType::UnsubAck)?);
        }
        if ack.reason_codes.is_empty() {
            return Err(Error::EmptyPayload(PacketType::UnsubAck));
        }
        Ok(ack)
    }
}

impl Body for UnsubAck {
    fn write(&self, version: ProtocolVersion, dst: &mut BytesMut) -> Result<u8, EncodeError> {
        dst.put_u16(self.packet_id.get());
        if version == ProtocolVersion::V311 {
            return Ok(0);
        }
        if self.reason_codes.is_empty() {
            return Err(EncodeError::EmptyPayload(PacketType::UnsubAck));
        }
        self.properties.write(PropertyContext::UnsubAck, dst)?;
        for &rc in &self.reason_codes {
            check_reason(rc, PacketType::UnsubAck)?;
            dst.put_u8(rc.to_u8());
        }
        Ok(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::Packet;
    use crate::packet::testutil::{decode_one, encode};

    #[test]
    fn v311_drops_reason_codes() {
        let p = Packet::UnsubAck(UnsubAck {
            packet_id: PacketId::new(9).unwrap(),
            reason_codes: vec![ReasonCode::NoSubscriptionExisted],
            properties: Properties::default(),
        });
        assert_eq!(encode(&p, ProtocolVersion::V311), [0xB0, 0x02, 0x00, 0x09]);
        let v5 = [0xB0, 0x04, 0x00, 0x09, 0x00, 0x11];
        assert_eq!(encode(&p, ProtocolVersion::V5), v5);
        assert_eq!(decode_one(&v5, ProtocolVersion::V5).unwrap(), p);
        assert_eq!(
            decode_one(&[0xB0, 0x03, 0x00, 0x09, 0x00], ProtocolVersion::V5),
            Err(Error::EmptyPayload(PacketType::UnsubAck))
        );
        assert_eq!(
            decode_one(&[0xB0, 0x03, 0x00, 0x09, 0x00], ProtocolVersion::V311),
            Err(Error::TrailingBytes(1))
        );
    }
}
