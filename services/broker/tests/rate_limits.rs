//! Publish rate limits over real TCP: what a flooding MQTT 5 client sees
//! on the wire, and the per-tenant metrics.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::num::NonZeroU16;

use broker::{Config, PublishLimits, Rate};
use common::*;
use metrics_util::debugging::DebuggingRecorder;
use mqtt::{Packet, ProtocolVersion, Publish, QoS, ReasonCode, TopicName};

/// 2 messages a second, burst 2; disconnected after 5 refusals in a row.
fn limited() -> Config {
    Config {
        publish_limits: PublishLimits {
            messages: Some(Rate::new(2, Some(2))),
            bytes: None,
        },
        rate_limit_strikes: 5,
        ..Config::default()
    }
}

fn publish(qos: QoS, id: u16) -> Packet {
    let mut p = Publish::new(TopicName::parse("t").unwrap(), "x");
    p.qos = qos;
    p.packet_id = NonZeroU16::new(id).filter(|_| qos != QoS::AtMostOnce);
    p.into()
}

#[tokio::test]
async fn a_flood_in_one_write_gets_every_answer_then_disconnect_0x96() {
    let b = TestBroker::with_config(limited()).await;
    let (mut raw, _) = Raw::connect(
        b.port(),
        ProtocolVersion::V5,
        connect(ProtocolVersion::V5, "flood"),
    )
    .await;
    let mut bytes = bytes::BytesMut::new();
    for id in 1..=50 {
        publish(QoS::AtLeastOnce, id)
            .encode(ProtocolVersion::V5, &mut bytes)
            .unwrap();
    }
    raw.send_bytes(&bytes).await;
    let got = raw.until_closed().await;
    let reasons: Vec<_> = got
        .iter()
        .map(|p| match p {
            Packet::PubAck(a) => a.reason_code,
            Packet::Disconnect(d) => d.reason_code,
            other => panic!("{other:?}"),
        })
        .collect();
    // Two admitted (no subscriber), four refused, the fifth refusal ends it.
    assert_eq!(
        reasons,
        [
            ReasonCode::NoMatchingSubscribers,
            ReasonCode::NoMatchingSubscribers,
            ReasonCode::QuotaExceeded,
            ReasonCode::QuotaExceeded,
            ReasonCode::QuotaExceeded,
            ReasonCode::QuotaExceeded,
            ReasonCode::MessageRateTooHigh,
        ]
    );
    b.stop().await;
}

/// Its own recorder (process-global): the one test here that installs it,
/// on a tenant no other test uses.
#[tokio::test]
async fn refusals_drops_and_disconnects_are_counted_per_tenant() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder.install().unwrap();
    let broker = broker::Broker::allow_anonymous(tenant("metered"), limited());
    let b = TestBroker::with_broker(broker).await;
    let (mut raw, _) = Raw::connect(
        b.port(),
        ProtocolVersion::V5,
        connect(ProtocolVersion::V5, "m"),
    )
    .await;
    // QoS 0: two pass, three dropped; then QoS 1 refusals up to the end.
    for _ in 0..5 {
        raw.send(publish(QoS::AtMostOnce, 0)).await;
    }
    for id in 1..=10 {
        raw.send(publish(QoS::AtLeastOnce, id)).await;
    }
    raw.until_closed().await;
    let seen = metric_values(&snapshotter);
    let get = |n: &str| seen.get(n).copied().unwrap_or(0.0);
    assert_eq!(
        get("mqtt_messages_throttled_total{tenant=metered,outcome=dropped}"),
        3.0,
        "{seen:?}"
    );
    // Strikes count in a row across QoS: 3 drops + 2 refusals make 5.
    assert_eq!(
        get("mqtt_messages_throttled_total{tenant=metered,outcome=refused}"),
        2.0,
        "{seen:?}"
    );
    assert_eq!(
        get("mqtt_rate_limit_disconnects_total{tenant=metered}"),
        1.0,
        "{seen:?}"
    );
    b.stop().await;
}
