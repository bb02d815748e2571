//! UNSUBSCRIBE (3.10): topic filters to remove.

use bytes::BytesMut;

use super::{PacketId, ProtocolVersion, list};
use crate::codec::{Reader, put_string};
use crate::error::{EncodeError, Error};
use crate::properties::Properties;
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

// MQTT-3.10.1-1: flags 0b0010.
list::list_packet!(Unsubscribe, filters: TopicFilter, flags = 0b0010, new);

fn read_entry(r: &mut Reader, _: ProtocolVersion) -> Result<TopicFilter, Error> {
    TopicFilter::parse(r.string()?).map_err(Error::InvalidTopicFilter)
}

fn write_entry(f: &TopicFilter, _: ProtocolVersion, dst: &mut BytesMut) -> Result<(), EncodeError> {
    put_string(dst, f.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::testutil::{V4, V5, assert_round_trip, decode_one};
    use crate::packet::{Packet, PacketType};

    #[test]
    fn byte_exact_and_empty_rejected() {
        let filters = vec![TopicFilter::parse("a/#").unwrap()];
        let p = Packet::from(Unsubscribe::new(PacketId::new(3).unwrap(), filters));
        let v4 = [0xA2, 0x07, 0x00, 0x03, 0x00, 0x03, b'a', b'/', b'#'];
        assert_round_trip(&p, V4, &v4);
        assert_eq!(
            decode_one(&[0xA2, 0x03, 0x00, 0x03, 0x00], V5),
            Err(Error::EmptyPayload(PacketType::Unsubscribe))
        );
    }
}
