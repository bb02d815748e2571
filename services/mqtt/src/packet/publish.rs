//! PUBLISH (3.3): an application message, in either direction.

use bytes::{BufMut, Bytes, BytesMut};

use super::{Body, PacketId, PacketType, ProtocolVersion, QoS, read_packet_id};
use crate::codec::{Reader, put_string};
use crate::error::{EncodeError, Error};
use crate::properties::{Properties, PropertyContext};
use crate::topic::{TopicError, TopicName};

const RETAIN: u8 = 0b0001;
const DUP: u8 = 0b1000;

/// PUBLISH (3.3).
///
/// The codec does not know the direction of a packet, so direction rules
/// (e.g. no Subscription Identifier from a client, MQTT-3.3.4-6) and topic
/// alias bookkeeping belong to the session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    /// DUP flag: a re-delivery; never on QoS 0 (MQTT-3.3.1-2).
    pub dup: bool,
    /// QoS level.
    pub qos: QoS,
    /// RETAIN flag.
    pub retain: bool,
    /// Topic Name. `None` only in MQTT 5 when the Topic Alias property
    /// stands in for it (3.3.2.3.4).
    pub topic: Option<TopicName>,
    /// Packet Identifier: present exactly when QoS > 0 (MQTT-2.2.1-2).
    pub packet_id: Option<PacketId>,
    /// The application message, a zero-copy slice of the received packet.
    pub payload: Bytes,
    /// PUBLISH properties (MQTT 5).
    pub properties: Properties,
}

impl Publish {
    /// A QoS 0, non-retained PUBLISH.
    pub fn new(topic: TopicName, payload: impl Into<Bytes>) -> Self {
        Self {
            dup: false,
            qos: QoS::AtMostOnce,
            retain: false,
            topic: Some(topic),
            packet_id: None,
            payload: payload.into(),
            properties: Properties::default(),
        }
    }

    pub(crate) fn read(r: &mut Reader, flags: u8, version: ProtocolVersion) -> Result<Self, Error> {
        let qos = QoS::from_u8((flags >> 1) & 0b11)?; // MQTT-3.3.1-4
        let dup = flags & DUP != 0;
        if dup && qos == QoS::AtMostOnce {
            return Err(Error::DupOnQoS0); // MQTT-3.3.1-2
        }
        let topic = r.string()?;
        let packet_id = if qos == QoS::AtMostOnce {
            None
        } else {
            Some(read_packet_id(r, PacketType::Publish)?)
        };
        let properties = Properties::read_in(r, version, PropertyContext::Publish)?;
        let topic = if topic.is_empty() {
            match version {
                // 3.3.2.3.4: an empty name is fine when an alias stands in.
                ProtocolVersion::V5 if properties.topic_alias.is_some() => None,
                ProtocolVersion::V5 => return Err(Error::MissingTopic),
                // MQTT-4.7.3-1
                ProtocolVersion::V311 => return Err(Error::InvalidTopicName(TopicError::Empty)),
            }
        } else {
            // MQTT-3.3.2-2: no wildcards in a topic name.
            Some(TopicName::parse(topic).map_err(Error::InvalidTopicName)?)
        };
        Ok(Self {
            dup,
            qos,
            retain: flags & RETAIN != 0,
            topic,
            packet_id,
            payload: r.rest(),
            properties,
        })
    }
}

impl Body for Publish {
    // Only up to the payload: `Packet::encode_limited` appends it.
    fn write(&self, version: ProtocolVersion, dst: &mut BytesMut) -> Result<u8, EncodeError> {
        match (self.qos, self.packet_id) {
            (QoS::AtMostOnce, Some(_)) => return Err(EncodeError::UnexpectedPacketId),
            (QoS::AtLeastOnce | QoS::ExactlyOnce, None) => {
                return Err(EncodeError::MissingPacketId);
            }
            _ => {}
        }
        if self.dup && self.qos == QoS::AtMostOnce {
            return Err(EncodeError::DupOnQoS0);
        }
        match (&self.topic, version) {
            (Some(topic), _) => put_string(dst, topic.as_str())?,
            (None, ProtocolVersion::V5) if self.properties.topic_alias.is_some() => {
                put_string(dst, "")?;
            }
            (None, _) => return Err(EncodeError::MissingTopic),
        }
        if let Some(id) = self.packet_id {
            dst.put_u16(id.get());
        }
        self.properties
            .write_in(version, PropertyContext::Publish, dst)?;
        // The payload is appended by `Packet::encode_limited` straight into
        // the output, so it is copied once.
        let mut flags = self.qos.to_u8() << 1;
        if self.dup {
            flags |= DUP;
        }
        if self.retain {
            flags |= RETAIN;
        }
        Ok(flags)
    }
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroU16;

    use super::*;
    use crate::packet::testutil::{V4, V5, decode_one, encode};
    use crate::packet::{MAX_PACKET_SIZE, Packet, decode};
    use crate::testing::topic;

    #[test]
    fn byte_exact_qos0_and_qos1() {
        let p0 = Packet::Publish(Publish::new(topic("t"), &b"m"[..]));
        assert_eq!(encode(&p0, V4), [0x30, 0x04, 0x00, 0x01, b't', b'm']);
        assert_eq!(encode(&p0, V5), [0x30, 0x05, 0x00, 0x01, b't', 0x00, b'm']);
        let mut p1 = Publish::new(topic("t"), &b"m"[..]);
        p1.qos = QoS::AtLeastOnce;
        p1.retain = true;
        p1.packet_id = PacketId::new(10);
        let bytes = [0x33, 0x06, 0x00, 0x01, b't', 0x00, 0x0A, b'm'];
        assert_eq!(encode(&Packet::Publish(p1.clone()), V4), bytes);
        assert_eq!(decode_one(&bytes, V4).unwrap(), Packet::Publish(p1));
    }

    #[test]
    fn rejects_bad_flags_topics_and_ids() {
        let cases: [(&[u8], Error); 5] = [
            (&[0x36, 0x03, 0x00, 0x01, b't'], Error::InvalidQoS(3)),
            (&[0x38, 0x03, 0x00, 0x01, b't'], Error::DupOnQoS0),
            (
                &[0x30, 0x03, 0x00, 0x01, b'#'],
                Error::InvalidTopicName(TopicError::WildcardInName),
            ),
            (
                &[0x32, 0x05, 0x00, 0x01, b't', 0x00, 0x00],
                Error::ZeroPacketId(PacketType::Publish),
            ),
            (
                &[0x30, 0x02, 0x00, 0x00],
                Error::InvalidTopicName(TopicError::Empty),
            ),
        ];
        for (bytes, err) in cases {
            assert_eq!(decode_one(bytes, V4), Err(err));
        }
        assert_eq!(
            decode_one(&[0x30, 0x03, 0x00, 0x00, 0x00], V5),
            Err(Error::MissingTopic)
        );
    }

    #[test]
    fn v5_empty_topic_with_alias() {
        let mut p = Publish::new(topic("t"), &b""[..]);
        p.topic = None;
        p.properties.topic_alias = NonZeroU16::new(7);
        let bytes = [0x30, 0x06, 0x00, 0x00, 0x03, 0x23, 0x00, 0x07];
        assert_eq!(encode(&Packet::Publish(p.clone()), V5), bytes);
        assert_eq!(decode_one(&bytes, V5).unwrap(), Packet::Publish(p.clone()));
        let mut buf = BytesMut::new();
        assert_eq!(
            Packet::Publish(p).encode(V4, &mut buf),
            Err(EncodeError::MissingTopic)
        );
    }

    #[test]
    fn payload_is_a_zero_copy_slice_of_the_buffer() {
        let mut buf = BytesMut::from(&[0x30, 0x07, 0x00, 0x01, b't', b'a', b'b', b'c', b'd'][..]);
        let range = buf.as_ptr_range();
        let Some(Packet::Publish(p)) = decode(&mut buf, V4, MAX_PACKET_SIZE).unwrap() else {
            panic!("not a publish")
        };
        assert_eq!(&p.payload[..], b"abcd");
        assert!(range.contains(&p.payload.as_ptr()));
    }

    #[test]
    fn encode_checks_qos_and_packet_id_agree() {
        let mut buf = BytesMut::new();
        let mut p = Publish::new(topic("t"), &b""[..]);
        p.packet_id = PacketId::new(1);
        assert_eq!(
            Packet::Publish(p.clone()).encode(V4, &mut buf),
            Err(EncodeError::UnexpectedPacketId)
        );
        p.qos = QoS::ExactlyOnce;
        p.packet_id = None;
        assert_eq!(
            Packet::Publish(p).encode(V4, &mut buf),
            Err(EncodeError::MissingPacketId)
        );
    }
}
