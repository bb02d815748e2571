//! Publish rate limits on a connection, over an in-memory pipe with paused
//! time (virtual durations are exact): PUBACK 0x97 and DISCONNECT 0x96 for
//! MQTT 5,
//! QoS 0 drops, and back-pressure for MQTT 3.1.1.

use std::num::NonZeroU16;

use mqtt::{Connect, Packet, ProtocolVersion, PubAck, Publish, QoS, ReasonCode, TopicName};
use tokio::time::{Duration, Instant};

use super::tests::{Client, watcher};
use crate::{Broker, Config, PublishLimits, Rate, TenantId};

/// 2 messages per second, burst 2; disconnect after `strikes` refusals.
fn limited(strikes: u32) -> Broker {
    let config = Config {
        publish_limits: PublishLimits {
            messages: Some(Rate::new(2, Some(2))),
            bytes: None,
        },
        rate_limit_strikes: strikes,
        ..Config::default()
    };
    Broker::allow_anonymous(TenantId::parse("dev").unwrap(), config)
}

fn publish(qos: QoS, id: u16) -> Publish {
    let mut p = Publish::new(TopicName::parse("will").unwrap(), format!("m{id}"));
    p.qos = qos;
    p.packet_id = NonZeroU16::new(id).filter(|_| qos != QoS::AtMostOnce);
    p
}

async fn publisher(b: &Broker, version: ProtocolVersion) -> Client {
    let mut c = Connect::new(version, format!("pub-{version:?}"));
    c.keep_alive = 0;
    Client::connect(b, c).await
}

/// A publisher that has sent `count` messages of `qos`, ids from 1.
async fn publisher_sending(b: &Broker, version: ProtocolVersion, qos: QoS, count: u16) -> Client {
    let mut p = publisher(b, version).await;
    for id in 1..=count {
        p.send(publish(qos, id)).await;
    }
    p
}

async fn puback(c: &mut Client) -> PubAck {
    match c.recv().await {
        Some(Packet::PubAck(a)) => a,
        other => panic!("expected PUBACK, got {other:?}"),
    }
}

/// Everything the watcher got until its PINGRESP.
async fn received(w: &mut Client) -> Vec<Publish> {
    w.send(Packet::PingReq).await;
    let mut got = Vec::new();
    loop {
        match w.recv().await {
            Some(Packet::Publish(p)) => got.push(p),
            Some(Packet::PingResp) => return got,
            other => panic!("watcher got {other:?}"),
        }
    }
}

/// The payloads of what the watcher got until its PINGRESP.
async fn received_payloads(w: &mut Client) -> Vec<bytes::Bytes> {
    received(w).await.into_iter().map(|p| p.payload).collect()
}

#[tokio::test(start_paused = true)]
async fn v5_over_the_limit_gets_0x97_and_is_not_routed_then_recovers() {
    let b = limited(100);
    let mut w = watcher(&b).await;
    let mut p = publisher_sending(&b, ProtocolVersion::V5, QoS::AtLeastOnce, 3).await;
    let reasons: Vec<_> = [
        puback(&mut p).await,
        puback(&mut p).await,
        puback(&mut p).await,
    ]
    .iter()
    .map(|a| a.reason_code)
    .collect();
    assert_eq!(
        reasons,
        [
            ReasonCode::Success,
            ReasonCode::Success,
            ReasonCode::QuotaExceeded
        ]
    );
    let got = received_payloads(&mut w).await;
    assert_eq!(got, ["m1", "m2"]);
    // Refusals cost no tokens: half a second later one more fits.
    tokio::time::sleep(Duration::from_millis(500)).await;
    p.send(publish(QoS::AtLeastOnce, 4)).await;
    assert_eq!(puback(&mut p).await.reason_code, ReasonCode::Success);
}

#[tokio::test(start_paused = true)]
async fn v5_qos0_excess_is_dropped() {
    let b = limited(100);
    let mut w = watcher(&b).await;
    let mut p = publisher_sending(&b, ProtocolVersion::V5, QoS::AtMostOnce, 5).await;
    // A ping after them: the connection still stands and answers.
    p.send(Packet::PingReq).await;
    assert_eq!(p.recv().await, Some(Packet::PingResp));
    assert_eq!(received(&mut w).await.len(), 2);
}

#[tokio::test(start_paused = true)]
async fn v5_client_that_keeps_on_is_disconnected_with_0x96() {
    let b = limited(3);
    let mut p = publisher(&b, ProtocolVersion::V5).await;
    let mut acks = Vec::new();
    for id in 1..=4 {
        p.send(publish(QoS::AtLeastOnce, id)).await;
        acks.push(puback(&mut p).await.reason_code);
    }
    // Two admitted (no subscriber), two refused, the third refusal ends it.
    assert_eq!(
        acks,
        [
            ReasonCode::NoMatchingSubscribers,
            ReasonCode::NoMatchingSubscribers,
            ReasonCode::QuotaExceeded,
            ReasonCode::QuotaExceeded
        ]
    );
    p.send(publish(QoS::AtLeastOnce, 5)).await;
    let end = p.recv().await;
    assert!(
        matches!(&end, Some(Packet::Disconnect(d)) if d.reason_code == ReasonCode::MessageRateTooHigh),
        "{end:?}"
    );
    assert_eq!(p.recv().await, None);
}

#[tokio::test(start_paused = true)]
async fn v311_is_slowed_by_back_pressure_and_loses_nothing() {
    let b = limited(1);
    let mut w = watcher(&b).await;
    let mut p = publisher(&b, ProtocolVersion::V311).await;
    let start = Instant::now();
    for id in 1..=6 {
        p.send(publish(QoS::AtLeastOnce, id)).await;
    }
    for id in 1..=6 {
        let ack = puback(&mut p).await;
        assert_eq!(ack.packet_id.get(), id);
    }
    // Burst 2, then 4 more at 2 per second: 2 s of virtual time, and
    // never a refusal or disconnect even with one strike allowed.
    assert!(
        start.elapsed() >= Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
    let got = received_payloads(&mut w).await;
    assert_eq!(got, ["m1", "m2", "m3", "m4", "m5", "m6"]);
}

#[tokio::test(start_paused = true)]
async fn limits_set_while_connected_apply_from_the_next_publish() {
    let b = limited(100);
    let mut p = publisher(&b, ProtocolVersion::V5).await;
    let tenant = TenantId::parse("dev").unwrap();
    assert!(b.set_publish_limits(&tenant, "pub-V5", Some(PublishLimits::default())));
    for id in 1..=5 {
        p.send(publish(QoS::AtLeastOnce, id)).await;
        assert_eq!(
            puback(&mut p).await.reason_code,
            ReasonCode::NoMatchingSubscribers
        );
    }
    let one = PublishLimits {
        messages: Some(Rate::new(1, Some(1))),
        bytes: None,
    };
    assert!(b.set_publish_limits(&tenant, "pub-V5", Some(one)));
    p.send(publish(QoS::AtLeastOnce, 6)).await;
    p.send(publish(QoS::AtLeastOnce, 7)).await;
    assert_eq!(
        puback(&mut p).await.reason_code,
        ReasonCode::NoMatchingSubscribers
    );
    assert_eq!(puback(&mut p).await.reason_code, ReasonCode::QuotaExceeded);
    assert!(!b.set_publish_limits(&tenant, "nobody", None));
}
