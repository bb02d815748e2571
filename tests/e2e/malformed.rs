//! Malformed packets to the real binary over raw TCP: each closes only its
//! own connection (v5 with a DISCONNECT carrying the reason code), while a
//! client we did not write (rumqttc) keeps working. The full corpus runs
//! against the broker crate (services/broker/tests/malformed.rs).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use fleetmq_tests::start_anonymous;
use rumqttc::{Event, Packet, QoS};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const WAIT: Duration = Duration::from_secs(20);
const MALFORMED: u8 = 0x81;
const PROTOCOL_ERROR: u8 = 0x82;
const TOPIC_NAME_INVALID: u8 = 0x90;

/// CONNECT with client id `id` (one byte), protocol level 4 or 5.
fn connect(level: u8, id: u8) -> Vec<u8> {
    let mut body = vec![0x00, 0x04, b'M', b'Q', b'T', b'T', level, 0x02, 0x00, 0x3C];
    if level == 5 {
        body.push(0x00); // no properties
    }
    body.extend([0x00, 0x01, id]);
    let mut packet = vec![0x10, u8::try_from(body.len()).unwrap()];
    packet.extend(body);
    packet
}

/// Connects, sends `bad`, and returns everything read until the server
/// closed the connection.
async fn send_bad(port: u16, level: u8, id: u8, bad: &[u8]) -> Vec<u8> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    stream.write_all(&connect(level, id)).await.unwrap();
    let mut ack = [0u8; 2];
    stream.read_exact(&mut ack).await.unwrap();
    assert_eq!(ack[0], 0x20, "CONNACK expected");
    let mut rest = vec![0u8; usize::from(ack[1])];
    stream.read_exact(&mut rest).await.unwrap();
    assert_eq!(rest.get(1), Some(&0), "CONNACK refused");
    stream.write_all(bad).await.unwrap();
    let mut got = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut got))
        .await
        .expect("the server did not close the connection")
        .unwrap();
    got
}

#[tokio::test]
async fn bad_packets_close_only_their_connection_with_the_reason() {
    let cwd = tempfile::tempdir().unwrap();
    let server = start_anonymous(cwd.path(), &[]).await.unwrap();
    let port = server.mqtt().port();

    let mut opts = rumqttc::MqttOptions::new("bystander", "127.0.0.1", port);
    opts.set_keep_alive(Duration::from_secs(30));
    let (bystander, mut el) = rumqttc::AsyncClient::new(opts, 10);
    bystander
        .subscribe("alive", QoS::AtLeastOnce)
        .await
        .unwrap();

    let corpus: [(&str, Vec<u8>, u8); 5] = [
        ("reserved packet type 0", vec![0x00, 0x00], MALFORMED),
        (
            "PUBLISH with QoS 3",
            vec![0x36, 0x04, 0x00, 0x01, b't', 0x00],
            MALFORMED,
        ),
        (
            "PUBLISH topic with a wildcard",
            vec![0x30, 0x04, 0x00, 0x01, b'#', 0x00],
            TOPIC_NAME_INVALID,
        ),
        (
            "QoS 1 PUBLISH with packet id 0",
            vec![0x32, 0x06, 0x00, 0x01, b't', 0x00, 0x00, 0x00],
            PROTOCOL_ERROR,
        ),
        ("a second CONNECT", connect(5, b'x'), PROTOCOL_ERROR),
    ];
    for (i, (name, bad, reason)) in corpus.iter().enumerate() {
        let id = b'a' + u8::try_from(i).unwrap();
        let got = send_bad(port, 5, id, bad).await;
        // DISCONNECT: 0xE0, remaining length, reason code (then properties).
        assert!(
            got.len() >= 3 && got[0] == 0xE0 && got[2] == *reason,
            "{name}: expected DISCONNECT {reason:#04x}, got {got:02x?}"
        );
        // 3.1.1 has no DISCONNECT from the server: the connection just closes.
        let v311 = send_bad(port, 4, id, bad).await;
        assert!(v311.is_empty(), "{name} (3.1.1): got {v311:02x?}");
    }

    // The bystander never noticed.
    bystander
        .publish("alive", QoS::AtLeastOnce, false, "still here")
        .await
        .unwrap();
    let payload = tokio::time::timeout(WAIT, async {
        loop {
            if let Event::Incoming(Packet::Publish(p)) = el.poll().await.unwrap() {
                return p.payload;
            }
        }
    })
    .await
    .expect("bystander got nothing");
    assert_eq!(&payload[..], b"still here");
    server.stop().await.unwrap();
}
