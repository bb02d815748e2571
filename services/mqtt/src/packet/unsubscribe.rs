//! UNSUBSCRIBE (3.10): topic filters to remove.

use bytes::{BufMut, BytesMut};

use super::{PacketId, PacketType, ProtocolVersion, read_packet_id};
use crate::codec::{Reader, put_string};
use crate::error::{EncodeError, Error};
use crate::properties::{Properties, PropertyContext};
use crate::topic::TopicFilter;

/// UNSUBSCRIBE (3.10).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsubscribe {
    /// Packet Identifier.
    pub packet_id: PacketId,
    /// At least one filter (MQTT-3.10.3-2).
    pub filters: Vec<TopicFilter>,
    /// UNSUBSCRIBE properties (MQTT 5): User Property.
    pub properties: Properties,
}

impl Unsubscribe {
    pub(crate) fn read(r: &mut Reader, version: ProtocolVersion) -> Result<Self, Error> {
        let packet_id = read_packet_id(r, PacketType::Unsubscribe)?;
        let properties = match version {
            ProtocolVersion::V311 => Properties::default(),
            ProtocolVersion::V5 => Properties::read(r, PropertyContext::Unsubscribe)?,
        };
        let mut filters = Vec::new();
        while !r.is_empty() {
            filters.push(TopicFilter::parse(r.string()?).map_err(Error::InvalidTopicFilter)?);
        }
        if filters.is_empty() {
            return Err(Error::EmptyPayload(PacketType::Unsubscribe)); // MQTT-3.10.3-2
        }
        Ok(Self {
            packet_id,
            filters,
            properties,
        })
    }

    /// Writes the body; returns the fixed header flags.
    pub(crate) fn write(
        &self,
        version: ProtocolVersion,
        dst: &mut BytesMut,
    ) -> Result<u8, EncodeError> {
        if self.filters.is_empty() {
            return Err(EncodeError::EmptyPayload(PacketType::Unsubscribe));
        }
        dst.put_u16(self.packet_id.get());
        if version == ProtocolVersion::V5 {
            self.properties.write(PropertyContext::Unsubscribe, dst)?;
        }
        for filter in &self.filters {
            put_string(dst, filter.as_str())?;
        }
        Ok(0b0010) // MQTT-3.10.1-1
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::Packet;
    use crate::packet::testutil::{decode_one, encode};

    #[test]
    fn byte_exact_and_empty_rejected() {
        let p = Packet::Unsubscribe(Unsubscribe {
            packet_id: PacketId::new(3).unwrap(),
            filters: vec![TopicFilter::parse("a/#").unwrap()],
            properties: Properties::default(),
        });
        let v4 = [0xA2, 0x07, 0x00, 0x03, 0x00, 0x03, b'a', b'/', b'#'];
        assert_eq!(encode(&p, ProtocolVersion::V311), v4);
        assert_eq!(decode_one(&v4, ProtocolVersion::V311).unwrap(), p);
        assert_eq!(
            decode_one(&[0xA2, 0x03, 0x00, 0x03, 0x00], ProtocolVersion::V5),
            Err(Error::EmptyPayload(PacketType::Unsubscribe))
        );
    }
}
