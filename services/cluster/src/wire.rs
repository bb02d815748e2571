//! One routed message as NATS carries it between nodes: a short envelope
//! (who sent it and what No Local and the retained quota need) and the
//! message as an MQTT 5 PUBLISH packet, so that every property travels
//! through the one codec the broker already trusts.
//!
//! ```text
//! u8 version (2) · u8 flags (1 platform origin, 2 origin, 4 owner, 8 id)
//! u8 len · node name · [16 bytes id] · [u16 len · origin client id]
//! [u16 len · owner] · MQTT 5 PUBLISH (Message Expiry Interval = the time left)
//! ```
//!
//! The id ([`MessageId`]: the origin node's run, then its order there,
//! big-endian) lets a receiver skip a copy it already holds: the same
//! message caught by two nodes during a session takeover, or read back
//! from the journal by a replay. Version 1 (no id) is not read: nodes of
//! one cluster run one version.
//!
//! The client id and owner stay out of NATS headers: a header value may
//! not hold every byte an MQTT string may.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use mqtt::{Packet, ProtocolVersion, Publish, QoS, TopicName};

use broker::{Inbound, MessageId, Outbound};

const VERSION: u8 = 2;
const PLATFORM_ORIGIN: u8 = 1;
const HAS_ORIGIN: u8 = 2;
const HAS_OWNER: u8 = 4;
const HAS_ID: u8 = 8;
const ID_LEN: usize = 16;

/// A message decoded from another node.
#[derive(Debug, Clone)]
pub struct Envelope {
    /// The node that published it.
    pub node: String,
    pub message: Inbound,
}

/// Why a message could not be encoded or decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("a client id, owner or node name is too long for the envelope")]
    TooLong,
    #[error("the envelope is cut short or of an unknown version")]
    Envelope,
    #[error("the PUBLISH inside does not decode: {0}")]
    Publish(String),
}

fn put_str16(buf: &mut BytesMut, s: &str) -> Result<(), WireError> {
    let len = u16::try_from(s.len()).map_err(|_| WireError::TooLong)?;
    buf.put_u16(len);
    buf.put_slice(s.as_bytes());
    Ok(())
}

/// Encodes `message` from `node` (`retain` overrides its RETAIN flag: a
/// retained change is always retained).
pub fn encode(node: &str, message: &Outbound<'_>) -> Result<Bytes, WireError> {
    let mut properties = message.properties.clone();
    properties.message_expiry_interval = message.expiry;
    let publish = Publish {
        dup: false,
        qos: message.qos,
        retain: message.retain,
        topic: Some(message.topic.clone()),
        // The packet format wants one for QoS 1/2; no one acknowledges it.
        packet_id: (message.qos != QoS::AtMostOnce).then_some(mqtt::PacketId::MIN),
        payload: message.payload.clone(),
        properties,
    };
    let mut flags = 0;
    if message.platform_origin {
        flags |= PLATFORM_ORIGIN;
    }
    if message.origin.is_some() {
        flags |= HAS_ORIGIN;
    }
    if message.owner.is_some() {
        flags |= HAS_OWNER;
    }
    if message.id.is_some() {
        flags |= HAS_ID;
    }
    let mut buf = BytesMut::with_capacity(64 + message.payload.len());
    buf.put_u8(VERSION);
    buf.put_u8(flags);
    buf.put_u8(u8::try_from(node.len()).map_err(|_| WireError::TooLong)?);
    buf.put_slice(node.as_bytes());
    if let Some(id) = message.id {
        buf.put_slice(&id.to_bytes());
    }
    for s in [message.origin, message.owner].into_iter().flatten() {
        put_str16(&mut buf, s)?;
    }
    Packet::Publish(publish)
        .encode(ProtocolVersion::V5, &mut buf)
        .map_err(|e| WireError::Publish(e.to_string()))?;
    Ok(buf.freeze())
}

/// The deletion of `topic`'s retained message, from `node`.
pub fn encode_delete(node: &str, topic: &TopicName) -> Result<Bytes, WireError> {
    let empty = Bytes::new();
    let properties = mqtt::Properties::default();
    encode(
        node,
        &Outbound {
            id: None,
            topic,
            payload: &empty,
            qos: QoS::AtMostOnce,
            retain: true,
            properties: &properties,
            expiry: None,
            origin: None,
            platform_origin: false,
            owner: None,
        },
    )
}

fn take_str(buf: &mut Bytes, len: usize) -> Result<String, WireError> {
    if buf.remaining() < len {
        return Err(WireError::Envelope);
    }
    String::from_utf8(buf.split_to(len).to_vec()).map_err(|_| WireError::Envelope)
}

fn take_str16(buf: &mut Bytes) -> Result<String, WireError> {
    if buf.remaining() < 2 {
        return Err(WireError::Envelope);
    }
    let len = usize::from(buf.get_u16());
    take_str(buf, len)
}

/// Decodes what [`encode`] made.
pub fn decode(mut buf: Bytes) -> Result<Envelope, WireError> {
    if buf.remaining() < 3 || buf.get_u8() != VERSION {
        return Err(WireError::Envelope);
    }
    let flags = buf.get_u8();
    let node_len = usize::from(buf.get_u8());
    let node = take_str(&mut buf, node_len)?;
    let id = match flags & HAS_ID != 0 {
        true if buf.remaining() >= ID_LEN => MessageId::from_bytes(&buf.split_to(ID_LEN)),
        true => return Err(WireError::Envelope),
        false => None,
    };
    let origin = (flags & HAS_ORIGIN != 0)
        .then(|| take_str16(&mut buf))
        .transpose()?;
    let owner = (flags & HAS_OWNER != 0)
        .then(|| take_str16(&mut buf))
        .transpose()?;
    let mut rest = BytesMut::from(buf);
    let packet = mqtt::decode(&mut rest, ProtocolVersion::V5, mqtt::MAX_PACKET_SIZE)
        .map_err(|e| WireError::Publish(e.to_string()))?;
    let Some(Packet::Publish(publish)) = packet else {
        return Err(WireError::Publish("not a whole PUBLISH".to_owned()));
    };
    if !rest.is_empty() {
        return Err(WireError::Publish("bytes after the PUBLISH".to_owned()));
    }
    let topic = publish
        .topic
        .ok_or_else(|| WireError::Publish("no topic".to_owned()))?;
    Ok(Envelope {
        node,
        message: Inbound {
            id,
            topic,
            payload: publish.payload,
            qos: publish.qos,
            retain: publish.retain,
            properties: publish.properties,
            origin,
            platform_origin: flags & PLATFORM_ORIGIN != 0,
            owner,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use mqtt::Properties;

    #[test]
    fn a_message_round_trips_with_every_property() {
        let topic = TopicName::parse("a/é b").unwrap();
        let payload = Bytes::from_static(b"\x00payload");
        let mut properties = Properties {
            content_type: Some("text/plain".to_owned()),
            response_topic: Some(TopicName::parse("re/ply").unwrap()),
            correlation_data: Some(Bytes::from_static(b"corr")),
            payload_format_indicator: Some(mqtt::PayloadFormat::Utf8),
            ..Properties::default()
        };
        properties.user_properties.push("k", "v").unwrap();
        let id = MessageId {
            origin: 0x0123_4567_89ab_cdef,
            seq: u64::MAX - 1,
        };
        let out = Outbound {
            id: Some(id),
            topic: &topic,
            payload: &payload,
            qos: QoS::ExactlyOnce,
            retain: true,
            properties: &properties,
            expiry: Some(17),
            origin: Some("device-1"),
            platform_origin: true,
            owner: Some("device-1"),
        };
        let got = decode(encode("node-a", &out).unwrap()).unwrap();
        assert_eq!(got.node, "node-a");
        let m = got.message;
        assert_eq!(
            (m.topic, m.payload, m.qos, m.retain),
            (topic, payload, QoS::ExactlyOnce, true)
        );
        assert_eq!(m.properties.message_expiry_interval, Some(17));
        properties.message_expiry_interval = Some(17);
        assert_eq!(m.properties, properties);
        assert_eq!(m.origin.as_deref(), Some("device-1"));
        assert_eq!(m.owner.as_deref(), Some("device-1"));
        assert!(m.platform_origin);
        assert_eq!(m.id, Some(id));

        let gone = decode(encode_delete("n", &TopicName::parse("x").unwrap()).unwrap()).unwrap();
        assert!(gone.message.payload.is_empty() && gone.message.origin.is_none());
    }

    #[test]
    fn message_ids_are_sixteen_big_endian_bytes() {
        let id = MessageId {
            origin: 0x0102_0304_0506_0708,
            seq: 0x090a_0b0c_0d0e_0f10,
        };
        let bytes = id.to_bytes();
        assert_eq!(
            bytes,
            *b"\x01\x02\x03\x04\x05\x06\x07\x08\x09\x0a\x0b\x0c\x0d\x0e\x0f\x10"
        );
        assert_eq!(MessageId::from_bytes(&bytes), Some(id));
        assert_eq!(MessageId::from_bytes(&bytes[..15]), None);
        assert_eq!(MessageId::from_bytes(&[0; 17]), None);
        // Later in one run orders after: the seq is the low half.
        let next = MessageId {
            seq: id.seq + 1,
            ..id
        };
        assert!(next.to_bytes() > bytes);
        assert_eq!(next.to_string(), "0102030405060708-651345242494996241");
    }

    #[test]
    fn an_envelope_with_an_id_cut_inside_it_is_refused() {
        let topic = TopicName::parse("a").unwrap();
        let (payload, properties) = (Bytes::from_static(b"p"), mqtt::Properties::default());
        let out = Outbound {
            id: Some(MessageId { origin: 7, seq: 9 }),
            topic: &topic,
            payload: &payload,
            qos: QoS::AtLeastOnce,
            retain: false,
            properties: &properties,
            expiry: None,
            origin: None,
            platform_origin: false,
            owner: None,
        };
        let whole = encode("n", &out).unwrap();
        assert_eq!(
            decode(whole.clone()).unwrap().message.id,
            Some(MessageId { origin: 7, seq: 9 })
        );
        // The id sits right after the node name: 3 + 1 bytes in.
        for cut in 4..4 + ID_LEN {
            assert_eq!(decode(whole.slice(..cut)).unwrap_err(), WireError::Envelope);
        }
        let plain = encode("n", &Outbound { id: None, ..out }).unwrap();
        assert_eq!(plain.len() + ID_LEN, whole.len());
        assert_eq!(decode(plain).unwrap().message.id, None);
    }

    #[test]
    fn cut_or_foreign_bytes_are_refused() {
        let topic = TopicName::parse("a").unwrap();
        let whole = encode_delete("node", &topic).unwrap();
        for cut in 0..whole.len() {
            assert!(decode(whole.slice(..cut)).is_err(), "cut at {cut}");
        }
        let mut extra = BytesMut::from(&whole[..]);
        extra.put_u8(0);
        assert!(decode(extra.freeze()).is_err());
        assert_eq!(
            decode(Bytes::from_static(b"\x01\x00\x00")).unwrap_err(),
            WireError::Envelope
        );
    }
}
