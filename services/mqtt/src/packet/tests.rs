//! Framing tests and the round-trip / never-panic properties over every
//! packet kind in both versions.

use bytes::BytesMut;
use proptest::prelude::*;

use super::strategy::packet;
use super::testutil::{V4, V5, decode_one};
use super::*;
use crate::reason::ReasonCode;
use crate::topic::TopicName;

fn encoded(p: &Packet, v: ProtocolVersion) -> BytesMut {
    let mut buf = BytesMut::new();
    p.encode(v, &mut buf).unwrap();
    buf
}

/// Decodes packets until the buffer runs dry or an error; must not panic.
/// Whatever decodes must re-encode and decode back equal (a normal form).
fn drain(bytes: &[u8], v: ProtocolVersion, max: usize) {
    let mut buf = BytesMut::from(bytes);
    while let Ok(Some(packet)) = decode(&mut buf, v, max) {
        let version = match &packet {
            Packet::Connect(c) => c.protocol,
            _ => v,
        };
        let mut out = encoded(&packet, version);
        assert_eq!(decode(&mut out, version, MAX_PACKET_SIZE), Ok(Some(packet)));
        assert!(out.is_empty());
    }
}

#[test]
fn incomplete_input_consumes_nothing() {
    let full = encoded(
        &Packet::Publish(Publish::new(TopicName::parse("a/b").unwrap(), "hello")),
        V5,
    );
    for cut in 0..full.len() {
        let mut buf = BytesMut::from(&full[..cut]);
        assert_eq!(
            decode(&mut buf, V5, MAX_PACKET_SIZE),
            Ok(None),
            "cut at {cut}"
        );
        assert_eq!(&buf[..], &full[..cut]);
    }
}

#[test]
fn oversize_is_refused_from_the_header_alone() {
    // PUBLISH announcing 1,000 bytes; only the fixed header has arrived.
    let mut buf = BytesMut::from(&[0x30, 0xE8, 0x07][..]);
    assert_eq!(
        decode(&mut buf, V4, 100),
        Err(Error::PacketTooLarge {
            size: 1003,
            max: 100
        })
    );
}

#[test]
fn remaining_length_longer_than_four_bytes_is_malformed() {
    let mut buf = BytesMut::from(&[0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01][..]);
    assert_eq!(
        decode(&mut buf, V4, MAX_PACKET_SIZE),
        Err(Error::MalformedVariableInteger)
    );
    let mut buf = BytesMut::from(&[0xC0, 0x80, 0x00][..]);
    assert_eq!(
        decode(&mut buf, V4, MAX_PACKET_SIZE),
        Err(Error::NonMinimalVariableInteger)
    );
}

#[test]
fn reserved_types_and_flags() {
    assert_eq!(
        decode_one(&[0x00, 0x00], V5),
        Err(Error::ReservedPacketType(0))
    );
    assert_eq!(
        decode_one(&[0x62, 0x02, 0x00, 0x01], V4).unwrap(),
        Packet::PubRel(PubRel::new(PacketId::new(1).unwrap()))
    );
    // MQTT-2.1.3-1: a packet whose header flags are fixed refuses others.
    let wrong_flags: [(&[u8], PacketType, u8); 4] = [
        (&[0x60, 0x02, 0x00, 0x01], PacketType::PubRel, 0),
        (&[0xC1, 0x00], PacketType::PingReq, 1),
        (&[0xE1, 0x00], PacketType::Disconnect, 1),
        (
            &[0x80, 0x06, 0x00, 0x01, 0x00, 0x01, b'a', 0x00],
            PacketType::Subscribe,
            0,
        ),
    ];
    for (bytes, packet, flags) in wrong_flags {
        assert_eq!(
            decode_one(bytes, V4),
            Err(Error::InvalidHeaderFlags { packet, flags }),
            "{packet:?}"
        );
    }
    assert_eq!(
        decode_one(&[0xC0, 0x01, 0x00], V4),
        Err(Error::TrailingBytes(1))
    );
}

#[test]
fn ping_and_ack_byte_exact() {
    assert_eq!(&encoded(&Packet::PingReq, V4)[..], [0xC0, 0x00]);
    assert_eq!(&encoded(&Packet::PingResp, V5)[..], [0xD0, 0x00]);
    let id = PacketId::new(0x1234).unwrap();
    assert_eq!(
        &encoded(&Packet::PubAck(PubAck::new(id)), V5)[..],
        [0x40, 0x02, 0x12, 0x34]
    );
    assert_eq!(
        &encoded(&Packet::PubRel(PubRel::new(id)), V4)[..],
        [0x62, 0x02, 0x12, 0x34]
    );
    let mut rec = PubRec::new(id);
    rec.reason_code = ReasonCode::NoMatchingSubscribers;
    assert_eq!(
        &encoded(&Packet::PubRec(rec.clone()), V5)[..],
        [0x50, 0x03, 0x12, 0x34, 0x10]
    );
    assert_eq!(
        &encoded(&Packet::PubRec(rec), V4)[..],
        [0x50, 0x02, 0x12, 0x34]
    );
    assert_eq!(
        decode_one(&[0x40, 0x02, 0x00, 0x00], V4),
        Err(Error::ZeroPacketId(PacketType::PubAck))
    );
    assert_eq!(
        decode_one(&[0x70, 0x03, 0x00, 0x01, 0x10], V5),
        Err(Error::InvalidReasonCode {
            packet: PacketType::PubComp,
            code: 0x10
        })
    );
    assert_eq!(
        decode_one(&[0x40, 0x03, 0x00, 0x01, 0x00], V4),
        Err(Error::TrailingBytes(1))
    );
}

#[test]
fn property_errors_in_whole_packets() {
    use crate::properties::{PropertyContext, PropertyId};
    // PUBLISH carrying Session Expiry Interval (CONNECT/CONNACK/DISCONNECT only).
    let bytes = [
        0x30, 0x09, 0x00, 0x01, b't', 0x05, 0x11, 0x00, 0x00, 0x00, 0x01,
    ];
    let err = decode_one(&bytes, V5).unwrap_err();
    assert_eq!(
        err,
        Error::PropertyNotAllowed {
            property: PropertyId::SessionExpiryInterval,
            context: PropertyContext::Publish
        }
    );
    assert_eq!(ReasonCode::from(&err), ReasonCode::ProtocolError);
    // Two Topic Alias properties.
    let bytes = [
        0x30, 0x0A, 0x00, 0x01, b't', 0x06, 0x23, 0x00, 0x01, 0x23, 0x00, 0x02,
    ];
    assert_eq!(
        decode_one(&bytes, V5),
        Err(Error::DuplicateProperty(PropertyId::TopicAlias))
    );
    // A property length longer than the packet.
    let bytes = [0x30, 0x04, 0x00, 0x01, b't', 0x09];
    let err = decode_one(&bytes, V5).unwrap_err();
    assert_eq!(
        (err.clone(), ReasonCode::from(&err)),
        (Error::UnexpectedEnd, ReasonCode::MalformedPacket)
    );
}

#[test]
fn two_packets_in_one_buffer() {
    let mut buf = encoded(&Packet::PingReq, V4);
    buf.extend_from_slice(&encoded(&Packet::PingResp, V4));
    buf.extend_from_slice(&[0x30]);
    assert_eq!(decode(&mut buf, V4, 10), Ok(Some(Packet::PingReq)));
    assert_eq!(decode(&mut buf, V4, 10), Ok(Some(Packet::PingResp)));
    assert_eq!(decode(&mut buf, V4, 10), Ok(None));
    assert_eq!(&buf[..], [0x30]);
}

#[test]
fn encode_respects_peer_maximum_and_leaves_dst_alone() {
    let p = Packet::Publish(Publish::new(TopicName::parse("t").unwrap(), vec![0u8; 100]));
    let mut buf = BytesMut::from(&b"keep"[..]);
    assert_eq!(
        p.encode_limited(V4, 50, &mut buf),
        Err(EncodeError::PacketTooLarge { size: 105, max: 50 })
    );
    assert_eq!(&buf[..], b"keep");
    p.encode_limited(V4, 105, &mut buf).unwrap();
    assert_eq!(buf.len(), 4 + 105);
}

#[test]
fn long_fields_are_refused() {
    let mut c = Connect::new(V4, "x".repeat(70_000));
    let mut buf = BytesMut::new();
    assert_eq!(
        Packet::Connect(Box::new(c.clone())).encode(V4, &mut buf),
        Err(EncodeError::FieldTooLong(70_000))
    );
    c.client_id = "a\0".to_owned();
    assert_eq!(
        Packet::Connect(Box::new(c)).encode(V4, &mut buf),
        Err(EncodeError::NullCharacter)
    );
}

#[test]
fn large_publish_uses_multi_byte_remaining_length() {
    let p = Packet::Publish(Publish::new(
        TopicName::parse("t").unwrap(),
        vec![7u8; 20_000],
    ));
    let buf = encoded(&p, V4);
    assert_eq!(&buf[..4], [0x30, 0xA3, 0x9C, 0x01]); // 20,003
    assert_eq!(decode_one(&buf, V4).unwrap(), p);
}

fn round_trip(p: &Packet, v: ProtocolVersion) -> Result<(), TestCaseError> {
    let buf = encoded(p, v);
    let bytes = buf.clone().freeze();
    let mut input = buf;
    let decoded =
        decode(&mut input, v, bytes.len()).map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert_eq!(decoded.as_ref(), Some(p));
    prop_assert!(input.is_empty());
    // One byte less must not pass the limit.
    let mut again = BytesMut::from(&bytes[..]);
    let too_large = matches!(
        decode(&mut again, v, bytes.len() - 1),
        Err(Error::PacketTooLarge { .. })
    );
    prop_assert!(too_large);
    // Every strict prefix is incomplete, not an error.
    for cut in 0..bytes.len() {
        let mut partial = BytesMut::from(&bytes[..cut]);
        prop_assert_eq!(decode(&mut partial, v, MAX_PACKET_SIZE), Ok(None));
    }
    Ok(())
}

proptest! {
    #[test]
    fn every_v311_packet_round_trips(p in packet(V4)) {
        round_trip(&p, V4)?;
    }

    #[test]
    fn every_v5_packet_round_trips(p in packet(V5)) {
        round_trip(&p, V5)?;
    }

    #[test]
    fn decoding_any_bytes_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..300), max in 0usize..400) {
        drain(&bytes, V4, max);
        drain(&bytes, V5, max);
        drain(&bytes, V5, MAX_PACKET_SIZE);
    }

    #[test]
    fn decoding_mutated_packets_never_panics(
        p in packet(V5),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
    ) {
        for v in [V4, V5] {
            let mut bytes = encoded(&p, V5).to_vec();
            for (at, value) in &flips {
                let i = at.index(bytes.len());
                bytes[i] = *value;
            }
            drain(&bytes, v, MAX_PACKET_SIZE);
            // Also as 3.1.1 bytes, so CONNECT/ack paths of both versions are hit.
            if let Ok(mut b) = encoded_checked(&p, V4) {
                for (at, value) in &flips {
                    let i = at.index(b.len());
                    b[i] = *value;
                }
                drain(&b, v, MAX_PACKET_SIZE);
            }
        }
    }

    #[test]
    fn v5_packets_encode_for_v311_or_refuse_cleanly(p in packet(V5)) {
        // Dropping 5.0-only content must still give a packet 3.1.1 decodes.
        if let Ok(bytes) = encoded_checked(&p, V4) {
            let decoded = decode_one(&bytes, V4);
            prop_assert!(decoded.is_ok(), "{:?} -> {:?}", p, decoded);
            prop_assert_eq!(decoded.unwrap().packet_type(), p.packet_type());
        }
    }
}

fn encoded_checked(p: &Packet, v: ProtocolVersion) -> Result<Vec<u8>, EncodeError> {
    let mut buf = BytesMut::new();
    p.encode(v, &mut buf)?;
    Ok(buf.to_vec())
}
