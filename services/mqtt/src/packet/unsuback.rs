//! UNSUBACK (3.11): in 5.0 one reason code per filter; in 3.1.1 only the
//! packet identifier.

use bytes::{BufMut, BytesMut};

use super::ack::{check_reason, read_reason};
use super::{Body, Kind, PacketId, PacketType, ProtocolVersion, list, read_packet_id};
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

list::list_fields!(UnsubAck, reason_codes: ReasonCode, new);

impl UnsubAck {
    const KIND: Kind = (PacketType::UnsubAck, PropertyContext::UnsubAck);

    /// 3.1.1 has only the packet identifier; 5.0 the list layout.
    pub(crate) fn read(r: &mut Reader, version: ProtocolVersion) -> Result<Self, Error> {
        match version {
            ProtocolVersion::V311 => Ok(Self::new(
                read_packet_id(r, PacketType::UnsubAck)?,
                Vec::new(),
            )),
            ProtocolVersion::V5 => list::read(r, version, Self::KIND, |r| {
                read_reason(r, PacketType::UnsubAck)
            })
            .map(Self::from_parts),
        }
    }
}

impl Body for UnsubAck {
    fn write(&self, version: ProtocolVersion, dst: &mut BytesMut) -> Result<u8, EncodeError> {
        if version == ProtocolVersion::V311 {
            dst.put_u16(self.packet_id.get());
            return Ok(0);
        }
        let parts = (self.packet_id, &self.properties, &self.reason_codes[..]);
        list::write(parts, version, Self::KIND, dst, |&rc, dst| {
            check_reason(rc, PacketType::UnsubAck)?;
            dst.put_u8(rc.to_u8());
            Ok(())
        })?;
        Ok(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::Packet;
    use crate::packet::testutil::{V4, V5, assert_round_trip, decode_one, encode};

    #[test]
    fn v311_drops_reason_codes() {
        let codes = vec![ReasonCode::NoSubscriptionExisted];
        let p = Packet::from(UnsubAck::new(PacketId::new(9).unwrap(), codes));
        assert_eq!(encode(&p, V4), [0xB0, 0x02, 0x00, 0x09]);
        assert_round_trip(&p, V5, &[0xB0, 0x04, 0x00, 0x09, 0x00, 0x11]);
        let no_codes = [0xB0, 0x03, 0x00, 0x09, 0x00];
        assert_eq!(
            decode_one(&no_codes, V5),
            Err(Error::EmptyPayload(PacketType::UnsubAck))
        );
        assert_eq!(decode_one(&no_codes, V4), Err(Error::TrailingBytes(1)));
    }
}
