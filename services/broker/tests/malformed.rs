//! A corpus of bad packets over raw TCP: each closes only its own
//! connection, with the reason code the `mqtt` crate maps the error to (a
//! v5 DISCONNECT or CONNACK where the spec allows one; 3.1.1 just closes),
//! while another client keeps working.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use mqtt::{Packet, ProtocolVersion, ReasonCode};
use rumqttc::QoS;

const V5: ProtocolVersion = ProtocolVersion::V5;
const V4: ProtocolVersion = ProtocolVersion::V311;

/// Bytes sent after a successful CONNECT, and the DISCONNECT reason a v5
/// client must get.
fn after_connect_corpus() -> Vec<(&'static str, Vec<u8>, ReasonCode)> {
    vec![
        (
            "reserved packet type 0",
            vec![0x00, 0x00],
            ReasonCode::MalformedPacket,
        ),
        (
            "remaining length with 5 bytes",
            vec![0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01],
            ReasonCode::MalformedPacket,
        ),
        (
            "SUBSCRIBE with wrong fixed flags",
            vec![0x80, 0x06, 0x00, 0x01, 0x00, 0x01, b'a', 0x00],
            ReasonCode::MalformedPacket,
        ),
        (
            "PUBLISH with QoS 3",
            vec![0x36, 0x04, 0x00, 0x01, b't', 0x00],
            ReasonCode::MalformedPacket,
        ),
        (
            "PUBLISH topic with a wildcard",
            vec![0x30, 0x04, 0x00, 0x01, b'#', 0x00],
            ReasonCode::TopicNameInvalid,
        ),
        (
            "PUBLISH topic with invalid UTF-8",
            vec![0x30, 0x04, 0x00, 0x01, 0xFF, 0x00],
            ReasonCode::MalformedPacket,
        ),
        (
            "QoS 1 PUBLISH with packet id 0",
            vec![0x32, 0x06, 0x00, 0x01, b't', 0x00, 0x00, 0x00],
            ReasonCode::ProtocolError,
        ),
        (
            "SUBSCRIBE with no filters",
            vec![0x82, 0x03, 0x00, 0x01, 0x00],
            ReasonCode::ProtocolError,
        ),
        (
            "SUBSCRIBE with a bad filter",
            vec![0x82, 0x07, 0x00, 0x01, 0x00, 0x00, 0x02, b'a', b'#', 0x00],
            ReasonCode::TopicFilterInvalid,
        ),
        (
            "duplicate property [v5]",
            vec![
                0x30, 0x0E, 0x00, 0x01, b't', 0x0A, 0x02, 0, 0, 0, 1, 0x02, 0, 0, 0, 1,
            ],
            ReasonCode::ProtocolError,
        ),
        (
            "unknown property [v5]",
            vec![0x30, 0x05, 0x00, 0x01, b't', 0x01, 0x7F],
            ReasonCode::MalformedPacket,
        ),
        (
            "topic alias 0 [v5]",
            vec![0x30, 0x07, 0x00, 0x01, b't', 0x03, 0x23, 0x00, 0x00],
            ReasonCode::ProtocolError,
        ),
        (
            "second CONNECT",
            vec![
                0x10, 0x0D, 0, 4, b'M', b'Q', b'T', b'T', 5, 2, 0, 60, 0, 0, 0,
            ],
            ReasonCode::ProtocolError,
        ),
        (
            "CONNACK from a client",
            vec![0x20, 0x03, 0x00, 0x00, 0x00],
            ReasonCode::ProtocolError,
        ),
        ("AUTH", vec![0xF0, 0x00], ReasonCode::ProtocolError),
        (
            "packet larger than our maximum",
            vec![0x30, 0xFF, 0xFF, 0xFF, 0x7F],
            ReasonCode::PacketTooLarge,
        ),
        (
            "topic alias above our maximum [v5]",
            vec![0x30, 0x07, 0x00, 0x01, b't', 0x03, 0x23, 0xFF, 0xFF],
            ReasonCode::TopicAliasInvalid,
        ),
        (
            "unknown topic alias with empty topic",
            vec![0x30, 0x06, 0x00, 0x00, 0x03, 0x23, 0x00, 0x05],
            ReasonCode::ProtocolError,
        ),
        (
            "subscription identifier from a client [v5]",
            vec![0x30, 0x06, 0x00, 0x01, b't', 0x02, 0x0B, 0x01],
            ReasonCode::ProtocolError,
        ),
    ]
}

#[tokio::test]
async fn each_bad_packet_closes_only_its_connection_with_the_right_code() {
    let b = TestBroker::start().await;
    let (bystander, mut brx, _t) = v4_client(b.port(), "bystander", true);
    bystander
        .subscribe("alive", QoS::AtLeastOnce)
        .await
        .unwrap();
    v4_suback(&mut brx).await;

    for (i, (name, bytes, want)) in after_connect_corpus().into_iter().enumerate() {
        // v5: DISCONNECT with the reason code, then close (MQTT-4.13.1-1).
        let (mut raw, _) = Raw::connect(b.port(), V5, connect(V5, &format!("bad5-{i}"))).await;
        raw.send_bytes(&bytes).await;
        let got = raw.until_closed().await;
        match got.as_slice() {
            [Packet::Disconnect(d)] => assert_eq!(d.reason_code, want, "{name}"),
            other => panic!("{name}: expected one DISCONNECT, got {other:?}"),
        }
        // 3.1.1: no DISCONNECT from a server; just the close. AUTH does not
        // exist in 3.1.1 (type 15 is reserved) and closes the same way.
        // Cases marked [v5] are properties, which 3.1.1 reads as payload.
        if !name.ends_with("[v5]") {
            let (mut raw, _) = Raw::connect(b.port(), V4, connect(V4, &format!("bad4-{i}"))).await;
            raw.send_bytes(&bytes).await;
            assert!(raw.until_closed().await.is_empty(), "{name} (3.1.1)");
        }

        bystander
            .publish("alive", QoS::AtLeastOnce, false, format!("{i}"))
            .await
            .unwrap();
        assert_eq!(
            v4_publish(&mut brx).await.payload,
            format!("{i}").as_bytes()
        );
    }
    b.stop().await;
}

#[tokio::test]
async fn bad_connects_are_refused_without_harming_others() {
    let b = TestBroker::start().await;
    let (bystander, mut brx, _t) =
        v4_subscriber(b.port(), "bystander", "alive", QoS::AtMostOnce).await;

    // Unsupported protocol level: 3.1.1 CONNACK 0x01 (MQTT-3.1.2-2).
    let mut raw = Raw::open(b.port(), V4).await;
    raw.send_bytes(&[
        0x10, 0x0D, 0, 4, b'M', b'Q', b'T', b'T', 3, 2, 0, 60, 0, 1, b'x',
    ])
    .await;
    raw.assert_refused(ReasonCode::UnsupportedProtocolVersion)
        .await;

    // A malformed v5 CONNECT (reserved flag) gets CONNACK 0x81.
    let mut raw = Raw::open(b.port(), V5).await;
    raw.send_bytes(&[
        0x10, 0x0E, 0, 4, b'M', b'Q', b'T', b'T', 5, 3, 0, 60, 0, 0, 1, b'x',
    ])
    .await;
    raw.assert_refused(ReasonCode::MalformedPacket).await;

    // Not CONNECT first (MQTT-3.1.0-1): closed.
    let mut raw = Raw::open(b.port(), V4).await;
    raw.send_bytes(&[0xC0, 0x00]).await;
    assert!(raw.until_closed().await.is_empty());

    // Garbage.
    let mut raw = Raw::open(b.port(), V4).await;
    raw.send_bytes(b"GET / HTTP/1.1\r\n\r\n").await;
    assert!(raw.until_closed().await.is_empty());

    bystander
        .publish("alive", QoS::AtMostOnce, false, "yes")
        .await
        .unwrap();
    assert_eq!(&v4_publish(&mut brx).await.payload[..], b"yes");
    b.stop().await;
}
