//! MQTT 3.1.1 interop with rumqttc (a client we did not write).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use rumqttc::QoS;

#[tokio::test]
async fn pub_sub_at_every_qos() {
    let b = TestBroker::start().await;
    let (sub, mut srx, _t1) = v4_client(b.port(), "sub", true);
    sub.subscribe("devices/+/state", QoS::ExactlyOnce)
        .await
        .unwrap();
    v4_suback(&mut srx).await;
    let (publ, _prx, _t2) = v4_client(b.port(), "pub", true);
    for (i, qos) in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce]
        .into_iter()
        .enumerate()
    {
        v4_send(&publ, "devices/d1/state", qos, false, format!("m{i}")).await;
        let p = v4_publish(&mut srx).await;
        assert_eq!(&p.topic, "devices/d1/state");
        assert_eq!(&p.payload[..], format!("m{i}").as_bytes());
        assert_eq!(p.qos, qos);
        assert!(!p.retain);
    }
    b.stop().await;
}

#[tokio::test]
async fn qos_is_downgraded_to_the_subscription() {
    let b = TestBroker::start().await;
    let (_sub, mut srx, _t1) = v4_subscriber(b.port(), "sub", "t", QoS::AtLeastOnce).await;
    let (publ, _prx, _t2) = v4_client(b.port(), "pub", true);
    v4_send(&publ, "t", QoS::ExactlyOnce, false, "x").await;
    assert_eq!(v4_publish(&mut srx).await.qos, QoS::AtLeastOnce);
    b.stop().await;
}

#[tokio::test]
async fn retained_set_replace_delete() {
    let b = TestBroker::start().await;
    let (publ, _prx, _t) = v4_client(b.port(), "pub", true);
    v4_send(&publ, "r/a", QoS::AtLeastOnce, true, "one").await;
    v4_send(&publ, "r/a", QoS::AtLeastOnce, true, "two").await;
    v4_send(&publ, "r/b", QoS::AtMostOnce, true, "bee").await;
    v4_send(&publ, "r/b", QoS::AtMostOnce, true, "").await;
    // A positive control that the publishes above were processed.
    v4_send(&publ, "r/c", QoS::AtLeastOnce, true, "sea").await;
    let t = tenant("dev");
    tokio::time::timeout(WAIT, async {
        while b.broker.tenant_stats(&t).map(|s| s.retained) != Some(2) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap();

    let (sub, mut srx, _t2) = v4_client(b.port(), "sub", true);
    sub.subscribe("r/+", QoS::AtLeastOnce).await.unwrap();
    let mut got = vec![];
    for _ in 0..2 {
        let p = v4_publish(&mut srx).await;
        assert!(p.retain, "MQTT-3.3.1-9: retained on subscribe keep RETAIN");
        got.push((
            p.topic.clone(),
            String::from_utf8(p.payload.to_vec()).unwrap(),
        ));
    }
    got.sort();
    assert_eq!(
        got,
        [("r/a".into(), "two".into()), ("r/c".into(), "sea".into())]
    );
    // Normal forwarding of a retained publish clears RETAIN (3.1.1 MQTT-3.3.1-9).
    v4_send(&publ, "r/a", QoS::AtLeastOnce, true, "three").await;
    let p = v4_publish(&mut srx).await;
    assert_eq!(&p.payload[..], b"three");
    assert!(!p.retain);
    b.stop().await;
}

/// Client `id` with a QoS 1 will of `payload` on `wills/{id}`, once its
/// CONNACK is in.
async fn connected_with_will(port: u16, id: &str, payload: &'static str) -> V4Client {
    let mut opts = rumqttc::MqttOptions::new(id, "127.0.0.1", port);
    opts.set_last_will(rumqttc::LastWill::new(
        format!("wills/{id}"),
        payload,
        QoS::AtLeastOnce,
        false,
    ));
    let (client, mut rx, task) = v4_with(opts);
    next_matching(&mut rx, |p| {
        matches!(p, rumqttc::Packet::ConnAck(_)).then_some(())
    })
    .await;
    (client, rx, task)
}

#[tokio::test]
async fn will_on_ungraceful_loss_but_not_on_disconnect() {
    let b = TestBroker::start().await;
    let (_sub, mut srx, _t) = v4_subscriber(b.port(), "watcher", "wills/#", QoS::AtLeastOnce).await;

    // Graceful: DISCONNECT discards the will.
    let (polite, _prx, ptask) = connected_with_will(b.port(), "polite", "gone").await;
    polite.disconnect().await.unwrap();
    tokio::time::timeout(WAIT, ptask).await.unwrap().unwrap();

    // Ungraceful: the event loop dies, the socket closes.
    let (_rude, _rrx, rtask) = connected_with_will(b.port(), "rude", "lost").await;
    rtask.abort();

    let p = v4_publish(&mut srx).await;
    assert_eq!(&p.topic, "wills/rude");
    assert_eq!(&p.payload[..], b"lost");
    b.stop().await;
}

#[tokio::test]
async fn persistent_session_queues_qos1_while_offline() {
    let b = TestBroker::start().await;
    let (sub, mut srx, stask) = v4_client(b.port(), "keeper", false);
    sub.subscribe("q/#", QoS::AtLeastOnce).await.unwrap();
    v4_suback(&mut srx).await;
    sub.disconnect().await.unwrap();
    tokio::time::timeout(WAIT, stask).await.unwrap().unwrap();

    let (publ, _prx, _t) = v4_client(b.port(), "pub", true);
    v4_send(&publ, "q/1", QoS::AtLeastOnce, false, "while away").await;
    v4_send(&publ, "q/0", QoS::AtMostOnce, false, "qos0 is not kept").await;
    v4_send(&publ, "q/2", QoS::AtLeastOnce, false, "second").await;
    tokio::time::sleep(Duration::from_millis(200)).await;

    let (_sub2, mut rx2, _t2) = v4_client(b.port(), "keeper", false);
    let ack = next_matching(&mut rx2, |p| match p {
        rumqttc::Packet::ConnAck(a) => Some(a),
        _ => None,
    })
    .await;
    assert!(ack.session_present);
    assert_eq!(&v4_publish(&mut rx2).await.payload[..], b"while away");
    assert_eq!(&v4_publish(&mut rx2).await.payload[..], b"second");
    b.stop().await;
}

#[tokio::test]
async fn shared_subscription_delivers_each_message_once() {
    let b = TestBroker::start().await;
    let (m1, mut rx1, _t1) = v4_client(b.port(), "m1", true);
    let (m2, mut rx2, _t2) = v4_client(b.port(), "m2", true);
    m1.subscribe("$share/workers/jobs/+", QoS::AtLeastOnce)
        .await
        .unwrap();
    m2.subscribe("$share/workers/jobs/+", QoS::AtLeastOnce)
        .await
        .unwrap();
    v4_suback(&mut rx1).await;
    v4_suback(&mut rx2).await;
    let (publ, _prx, _t) = v4_client(b.port(), "pub", true);
    for i in 0..10 {
        v4_send(&publ, "jobs/x", QoS::AtLeastOnce, false, format!("{i}")).await;
    }
    let mut seen = Vec::new();
    let mut per_member = [0, 0];
    while seen.len() < 10 {
        tokio::select! {
            p = v4_publish(&mut rx1) => { per_member[0] += 1; seen.push(p.payload.to_vec()); }
            p = v4_publish(&mut rx2) => { per_member[1] += 1; seen.push(p.payload.to_vec()); }
        }
    }
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 10, "each message exactly once");
    assert_eq!(per_member, [5, 5], "round-robin");
    b.stop().await;
}
