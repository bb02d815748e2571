//! Protocol behaviours driven with raw packets (what real clients will not
//! do on demand: withhold acks, exceed limits, go silent).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::num::{NonZeroU16, NonZeroU32};
use std::time::Duration;

use broker::Config;
use common::*;
use mqtt::{
    Packet, PacketId, ProtocolVersion, PubAck, PubRel, Publish, QoS, ReasonCode, Subscribe,
    SubscriptionOptions, TopicFilter, TopicName,
};

const V5: ProtocolVersion = ProtocolVersion::V5;
const V4: ProtocolVersion = ProtocolVersion::V311;

fn pid(n: u16) -> PacketId {
    PacketId::new(n).unwrap()
}

fn subscribe(filter: &str, qos: QoS) -> Subscribe {
    Subscribe::new(
        pid(1),
        TopicFilter::parse(filter).unwrap(),
        SubscriptionOptions::new(qos),
    )
}

fn publish(topic: &str, qos: QoS, id: Option<u16>, payload: &'static [u8]) -> Publish {
    let mut p = Publish::new(TopicName::parse(topic).unwrap(), payload);
    p.qos = qos;
    p.packet_id = id.and_then(PacketId::new);
    p
}

async fn expect_publish(raw: &mut Raw) -> Publish {
    loop {
        match raw.recv().await {
            Some(Packet::Publish(p)) => return p,
            Some(_) => {}
            None => panic!("closed while waiting for PUBLISH"),
        }
    }
}

/// `publ` retains `payload` on `topic` at QoS 1 (packet id `id`), acknowledged.
async fn retain(publ: &mut Raw, topic: &str, id: u16, payload: &'static [u8]) {
    let mut p = publish(topic, QoS::AtLeastOnce, Some(id), payload);
    p.retain = true;
    publ.send(p).await;
    assert!(matches!(publ.recv().await, Some(Packet::PubAck(_))));
}

/// `publ` publishes "live" on `topic` at QoS 0: the next message `sub`
/// gets (`why` says what must not come before it).
async fn live_is_next(publ: &mut Raw, sub: &mut Raw, topic: &str, why: &str) {
    publ.send(publish(topic, QoS::AtMostOnce, None, b"live"))
        .await;
    assert_eq!(&expect_publish(sub).await.payload[..], b"live", "{why}");
}

/// A v5 client `id` on `port`, subscribed to `filter`.
async fn subscriber(port: u16, id: &str, filter: &str, qos: QoS) -> Raw {
    let (mut raw, _) = Raw::connect(port, V5, connect(V5, id)).await;
    subscribed(&mut raw, filter, qos).await;
    raw
}

async fn subscribed(raw: &mut Raw, filter: &str, qos: QoS) {
    raw.send(subscribe(filter, qos)).await;
    loop {
        if let Some(Packet::SubAck(_)) = raw.recv().await {
            return;
        }
    }
}

#[tokio::test]
async fn enhanced_auth_is_refused_with_0x8c() {
    let b = TestBroker::start().await;
    let mut c = connect(V5, "auth");
    c.properties.authentication_method = Some("SCRAM-SHA-1".into());
    let mut raw = Raw::open(b.port(), V5).await;
    raw.send(c).await;
    raw.assert_refused(ReasonCode::BadAuthenticationMethod)
        .await;
    b.stop().await;
}

#[tokio::test]
async fn v311_empty_client_id_needs_clean_session() {
    let b = TestBroker::start().await;
    let mut c = connect(V4, "");
    c.clean_start = false;
    let mut raw = Raw::open(b.port(), V4).await;
    raw.send(c).await;
    raw.assert_refused(ReasonCode::ClientIdentifierNotValid)
        .await;
    let (_raw, ack) = Raw::connect(b.port(), V4, connect(V4, "")).await;
    assert_eq!(ack.reason_code, ReasonCode::Success);
    b.stop().await;
}

#[tokio::test]
async fn keep_alive_timeout_disconnects_with_0x8d_and_publishes_the_will() {
    let config = Config {
        max_keep_alive: Some(2),
        ..Config::default()
    };
    let b = TestBroker::with_config(config).await;
    let mut watcher = subscriber(b.port(), "watcher", "w", QoS::AtMostOnce).await;
    // 3.1.1 cannot be told our keep alive, so a larger one is refused.
    let mut raw = Raw::open(b.port(), V4).await;
    raw.send(connect(V4, "old")).await;
    let got = raw.until_closed().await;
    assert!(
        matches!(got.as_slice(), [Packet::ConnAck(a)] if a.reason_code.is_error()),
        "{got:?}"
    );

    let mut c = connect(V5, "silent");
    c.keep_alive = 0;
    c.will = Some(will("w", "silent one died", QoS::AtMostOnce, false));
    let (mut silent, ack) = Raw::connect(b.port(), V5, c).await;
    // MQTT-3.2.2-21: the keep alive we impose is announced.
    assert_eq!(ack.properties.server_keep_alive, Some(2));
    // The watcher pings to stay alive while the silent one times out.
    let will = tokio::time::timeout(WAIT, async {
        loop {
            watcher.send(Packet::PingReq).await;
            match tokio::time::timeout(Duration::from_millis(300), watcher.recv()).await {
                Ok(Some(Packet::Publish(p))) => return p,
                Ok(Some(_)) | Err(_) => {}
                Ok(None) => panic!("watcher closed"),
            }
        }
    })
    .await
    .expect("no will");
    assert_eq!(&will.payload[..], b"silent one died");
    silent
        .assert_disconnected(ReasonCode::KeepAliveTimeout)
        .await;
    b.stop().await;
}

#[tokio::test]
async fn exceeding_our_receive_maximum_is_0x93() {
    let config = Config {
        receive_maximum: 2,
        ..Config::default()
    };
    let b = TestBroker::with_config(config).await;
    let (mut raw, ack) = Raw::connect(b.port(), V5, connect(V5, "greedy")).await;
    assert_eq!(ack.properties.receive_maximum, NonZeroU16::new(2));
    for id in 1..=3 {
        raw.send(publish("t", QoS::ExactlyOnce, Some(id), b"x"))
            .await;
    }
    let got = raw.until_closed().await;
    assert!(matches!(got.first(), Some(Packet::PubRec(_))), "{got:?}");
    assert!(
        matches!(got.last(), Some(Packet::Disconnect(d)) if d.reason_code == ReasonCode::ReceiveMaximumExceeded),
        "{got:?}"
    );
    b.stop().await;
}

#[tokio::test]
async fn qos2_inbound_is_delivered_once_despite_a_resend() {
    let b = TestBroker::start().await;
    let mut sub = subscriber(b.port(), "sub", "q2", QoS::AtMostOnce).await;
    let (mut publ, _) = Raw::connect(b.port(), V5, connect(V5, "pub")).await;
    publ.send(publish("q2", QoS::ExactlyOnce, Some(9), b"once"))
        .await;
    assert!(matches!(publ.recv().await, Some(Packet::PubRec(r)) if r.packet_id == pid(9)));
    let mut again = publish("q2", QoS::ExactlyOnce, Some(9), b"once");
    again.dup = true;
    publ.send(again).await;
    assert!(matches!(publ.recv().await, Some(Packet::PubRec(r)) if r.packet_id == pid(9)));
    publ.send(PubRel::new(pid(9))).await;
    assert!(
        matches!(publ.recv().await, Some(Packet::PubComp(c)) if c.packet_id == pid(9) && c.reason_code == ReasonCode::Success)
    );
    publ.send(publish("q2", QoS::AtMostOnce, None, b"control"))
        .await;
    assert_eq!(&expect_publish(&mut sub).await.payload[..], b"once");
    assert_eq!(&expect_publish(&mut sub).await.payload[..], b"control");
    b.stop().await;
}

#[tokio::test]
async fn unacked_messages_are_redelivered_with_dup_and_window_is_respected() {
    let b = TestBroker::start().await;
    let slow = |id: &str| {
        let mut c = persistent(id, 60);
        c.properties.receive_maximum = NonZeroU16::new(1);
        c
    };
    let (mut sub, _) = Raw::connect(b.port(), V5, slow("slowpoke")).await;
    subscribed(&mut sub, "work", QoS::AtLeastOnce).await;
    let (mut publ, _) = Raw::connect(b.port(), V5, connect(V5, "pub")).await;
    publ.send(publish("work", QoS::AtLeastOnce, Some(1), b"first"))
        .await;
    publ.send(publish("work", QoS::AtLeastOnce, Some(2), b"second"))
        .await;
    let first = expect_publish(&mut sub).await;
    assert_eq!(&first.payload[..], b"first");
    // Receive Maximum 1: "second" waits for the ack (MQTT-3.3.4-7).
    let early = tokio::time::timeout(Duration::from_millis(300), sub.recv()).await;
    assert!(early.is_err(), "sent beyond the window: {early:?}");
    drop(sub);

    let (mut sub, ack) = Raw::connect(b.port(), V5, slow("slowpoke")).await;
    assert!(ack.session_present);
    let again = expect_publish(&mut sub).await;
    assert!(again.dup, "MQTT-3.3.1-1");
    assert_eq!(again.packet_id, first.packet_id, "MQTT-4.4.0-1");
    assert_eq!(&again.payload[..], b"first");
    sub.send(PubAck::new(again.packet_id.unwrap())).await;
    let second = expect_publish(&mut sub).await;
    assert_eq!(&second.payload[..], b"second");
    assert!(!second.dup);
    b.stop().await;
}

#[tokio::test]
async fn expired_messages_are_not_delivered_to_returning_sessions() {
    let b = TestBroker::start().await;
    let (mut sub, _) = Raw::connect(b.port(), V5, persistent("away", 60)).await;
    subscribed(&mut sub, "news", QoS::AtLeastOnce).await;
    drop(sub);
    let (mut publ, _) = Raw::connect(b.port(), V5, connect(V5, "pub")).await;
    let mut stale = publish("news", QoS::AtLeastOnce, Some(1), b"stale");
    stale.properties.message_expiry_interval = Some(1);
    publ.send(stale).await;
    publ.send(publish("news", QoS::AtLeastOnce, Some(2), b"fresh"))
        .await;
    assert!(matches!(publ.recv().await, Some(Packet::PubAck(_))));
    assert!(matches!(publ.recv().await, Some(Packet::PubAck(_))));
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let (mut sub, _) = Raw::connect(b.port(), V5, persistent("away", 60)).await;
    assert_eq!(&expect_publish(&mut sub).await.payload[..], b"fresh");
    b.stop().await;
}

#[tokio::test]
async fn client_topic_aliases_are_resolved() {
    let b = TestBroker::start().await;
    let mut sub = subscriber(b.port(), "sub", "x/#", QoS::AtMostOnce).await;
    let (mut publ, ack) = Raw::connect(b.port(), V5, connect(V5, "pub")).await;
    assert!(ack.properties.topic_alias_maximum.unwrap_or(0) >= 1);
    let mut p = publish("x/long", QoS::AtMostOnce, None, b"1");
    p.properties.topic_alias = NonZeroU16::new(1);
    publ.send(p).await;
    let mut p = publish("x/long", QoS::AtMostOnce, None, b"2");
    p.topic = None;
    p.properties.topic_alias = NonZeroU16::new(1);
    publ.send(p).await;
    for payload in [b"1", b"2"] {
        let got = expect_publish(&mut sub).await;
        assert_eq!(got.topic.unwrap().as_str(), "x/long");
        assert_eq!(&got.payload[..], payload);
    }
    b.stop().await;
}

#[tokio::test]
async fn packets_over_the_clients_maximum_are_not_sent() {
    let b = TestBroker::start().await;
    let mut c = connect(V5, "small");
    c.properties.maximum_packet_size = NonZeroU32::new(64);
    let (mut sub, _) = Raw::connect(b.port(), V5, c).await;
    subscribed(&mut sub, "big", QoS::AtMostOnce).await;
    let (mut publ, _) = Raw::connect(b.port(), V5, connect(V5, "pub")).await;
    publ.send(publish("big", QoS::AtMostOnce, None, &[b'x'; 200]))
        .await;
    publ.send(publish("big", QoS::AtMostOnce, None, b"small"))
        .await;
    assert_eq!(&expect_publish(&mut sub).await.payload[..], b"small");
    b.stop().await;
}

#[tokio::test]
async fn retained_lookup_is_capped_per_subscribe() {
    let config = Config {
        max_retained_per_subscribe: 3,
        ..Config::default()
    };
    let b = TestBroker::with_config(config).await;
    let (mut publ, _) = Raw::connect(b.port(), V5, connect(V5, "pub")).await;
    for i in 1..=10u16 {
        retain(&mut publ, &format!("r/{i}"), i, b"v").await;
    }
    let mut sub = subscriber(b.port(), "sub", "r/+", QoS::AtMostOnce).await;
    for _ in 0..3 {
        assert!(expect_publish(&mut sub).await.retain);
    }
    live_is_next(&mut publ, &mut sub, "r/live", "only 3 retained came first").await;
    b.stop().await;
}

#[tokio::test]
async fn session_expiry_ends_offline_sessions() {
    let b = TestBroker::start().await;
    let c = persistent("brief", 1);
    let (mut raw, _) = Raw::connect(b.port(), V5, c.clone()).await;
    subscribed(&mut raw, "a", QoS::AtLeastOnce).await;
    raw.send(mqtt::Disconnect::new(ReasonCode::Success)).await;
    assert!(raw.until_closed().await.is_empty());
    let dev = tenant("dev");
    eventually(|| b.broker.tenant_stats(&dev).is_some_and(|s| s.sessions == 0)).await;
    let (_raw, ack) = Raw::connect(b.port(), V5, c).await;
    assert!(!ack.session_present);
    b.stop().await;
}

#[tokio::test]
async fn a_client_that_stops_reading_is_disconnected_and_others_carry_on() {
    let config = Config {
        write_timeout: Duration::from_millis(500),
        max_queued_messages: 16,
        ..Config::default()
    };
    let b = TestBroker::with_config(config).await;
    // Subscribes, then never reads again.
    let _stuck = subscriber(b.port(), "stuck", "firehose", QoS::AtMostOnce).await;
    let mut healthy = subscriber(b.port(), "healthy", "other", QoS::AtMostOnce).await;
    let (mut publ, _) = Raw::connect(b.port(), V5, connect(V5, "pub")).await;
    let dev = tenant("dev");
    static BIG: [u8; 60_000] = [b'x'; 60_000];
    tokio::time::timeout(WAIT * 4, async {
        let mut id = 0u16;
        // Publish until the stuck session is gone (its clean session ends
        // with the connection).
        while b.broker.tenant_stats(&dev).is_some_and(|s| s.sessions == 3) {
            id = id.wrapping_add(1).max(1);
            publ.send(publish("firehose", QoS::AtLeastOnce, Some(id), &BIG))
                .await;
            assert!(matches!(publ.recv().await, Some(Packet::PubAck(_))));
        }
    })
    .await
    .expect("slow consumer was never disconnected");
    publ.send(publish("other", QoS::AtMostOnce, None, b"still here"))
        .await;
    assert_eq!(
        &expect_publish(&mut healthy).await.payload[..],
        b"still here"
    );
    b.stop().await;
}

#[tokio::test]
async fn a_leaving_shared_member_s_unacked_messages_go_to_the_others() {
    let b = TestBroker::start().await;
    for leave_by_unsubscribe in [false, true] {
        let group = if leave_by_unsubscribe {
            "$share/g2/jobs"
        } else {
            "$share/g1/jobs"
        };
        let mut m1 = subscriber(b.port(), "m1", group, QoS::AtLeastOnce).await;
        let mut m2 = subscriber(b.port(), "m2", group, QoS::AtLeastOnce).await;
        let (mut publ, _) = Raw::connect(b.port(), V5, connect(V5, "pub")).await;
        publ.send(publish("jobs", QoS::AtLeastOnce, Some(1), b"a"))
            .await;
        publ.send(publish("jobs", QoS::AtLeastOnce, Some(2), b"b"))
            .await;
        // One each, round-robin; m1 never acknowledges its one.
        let held = expect_publish(&mut m1).await;
        let first = expect_publish(&mut m2).await;
        m2.send(PubAck::new(first.packet_id.unwrap())).await;
        if leave_by_unsubscribe {
            m1.send(mqtt::Unsubscribe {
                packet_id: pid(2),
                filters: vec![TopicFilter::parse(group).unwrap()],
                properties: Default::default(),
            })
            .await;
        } else {
            m1.send(mqtt::Disconnect::new(ReasonCode::Success)).await;
        }
        let again = expect_publish(&mut m2).await;
        assert_eq!(
            again.payload, held.payload,
            "leave by unsubscribe: {leave_by_unsubscribe}"
        );
        for raw in [&mut m2, &mut publ] {
            raw.send(mqtt::Disconnect::new(ReasonCode::Success)).await;
            raw.until_closed().await;
        }
    }
    b.stop().await;
}

#[tokio::test]
async fn qos2_outbound_completes_across_a_reconnect() {
    let b = TestBroker::start().await;
    let (mut sub, _) = Raw::connect(b.port(), V5, persistent("q2sub", 60)).await;
    subscribed(&mut sub, "q2/#", QoS::ExactlyOnce).await;
    let (mut publ, _) = Raw::connect(b.port(), V5, connect(V5, "pub")).await;
    publ.send(publish("q2/x", QoS::ExactlyOnce, Some(5), b"exactly"))
        .await;
    let p = expect_publish(&mut sub).await;
    assert_eq!(p.qos, QoS::ExactlyOnce);
    let id = p.packet_id.unwrap();
    sub.send(mqtt::PubRec::new(id)).await;
    assert!(matches!(sub.recv().await, Some(Packet::PubRel(r)) if r.packet_id == id));
    // Gone before PUBCOMP: the PUBREL is resent on reconnect, not the PUBLISH.
    drop(sub);
    let (mut sub, ack) = Raw::connect(b.port(), V5, persistent("q2sub", 60)).await;
    assert!(ack.session_present);
    assert!(matches!(sub.recv().await, Some(Packet::PubRel(r)) if r.packet_id == id));
    sub.send(mqtt::PubComp::new(id)).await;
    publ.send(publish("q2/x", QoS::AtMostOnce, None, b"next"))
        .await;
    let next = expect_publish(&mut sub).await;
    assert_eq!(
        &next.payload[..],
        b"next",
        "the QoS 2 message was not delivered twice"
    );
    b.stop().await;
}

#[tokio::test]
async fn shutdown_tells_v5_clients_0x8b_and_the_listener_returns() {
    let b = TestBroker::start().await;
    let (mut raw, _) = Raw::connect(b.port(), V5, connect(V5, "bye")).await;
    let (mut old, _) = Raw::connect(b.port(), V4, connect(V4, "bye4")).await;
    let addr = b.addr;
    b.stop().await;
    raw.assert_disconnected(ReasonCode::ServerShuttingDown)
        .await;
    assert!(old.until_closed().await.is_empty());
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "still accepting"
    );
}

#[tokio::test]
async fn disconnect_0x04_publishes_a_retained_will() {
    let b = TestBroker::start().await;
    let mut c = connect(V5, "leaving");
    c.will = Some(will("status/leaving", "offline", QoS::AtLeastOnce, true));
    let (mut raw, _) = Raw::connect(b.port(), V5, c).await;
    raw.send(mqtt::Disconnect::new(ReasonCode::DisconnectWithWillMessage))
        .await;
    assert!(raw.until_closed().await.is_empty());
    // Will Retain: a later subscriber still gets it (MQTT-3.1.2-17).
    let mut sub = subscriber(b.port(), "later", "status/+", QoS::AtLeastOnce).await;
    let p = expect_publish(&mut sub).await;
    assert_eq!(&p.payload[..], b"offline");
    assert!(p.retain);
    b.stop().await;
}

#[tokio::test]
async fn retain_handling_1_sends_retained_only_for_new_subscriptions() {
    let b = TestBroker::start().await;
    let (mut publ, _) = Raw::connect(b.port(), V5, connect(V5, "pub")).await;
    retain(&mut publ, "rh1", 1, b"kept").await;
    let (mut sub, _) = Raw::connect(b.port(), V5, connect(V5, "sub")).await;
    let mut s = subscribe("rh1", QoS::AtMostOnce);
    s.subscriptions[0].options.retain_handling = mqtt::RetainHandling::SendIfNew;
    sub.send(s.clone()).await;
    assert!(matches!(sub.recv().await, Some(Packet::SubAck(_))));
    assert_eq!(&expect_publish(&mut sub).await.payload[..], b"kept");
    sub.send(s).await;
    assert!(matches!(sub.recv().await, Some(Packet::SubAck(_))));
    live_is_next(
        &mut publ,
        &mut sub,
        "rh1",
        "no second retained copy for an existing subscription",
    )
    .await;
    b.stop().await;
}

#[tokio::test]
async fn packets_pipelined_behind_connect_are_handled() {
    let b = TestBroker::start().await;
    let mut raw = Raw::open(b.port(), V5).await;
    let mut bytes = bytes::BytesMut::new();
    for p in [
        Packet::from(connect(V5, "eager")),
        subscribe("eager/#", QoS::AtMostOnce).into(),
        publish("eager/1", QoS::AtMostOnce, None, b"self").into(),
    ] {
        p.encode(V5, &mut bytes).unwrap();
    }
    raw.send_bytes(&bytes).await;
    assert!(matches!(raw.recv().await, Some(Packet::ConnAck(_))));
    assert!(matches!(raw.recv().await, Some(Packet::SubAck(_))));
    assert_eq!(&expect_publish(&mut raw).await.payload[..], b"self");
    b.stop().await;
}

#[tokio::test]
async fn over_the_connection_limit_clients_are_told_server_busy() {
    let config = Config {
        max_connections: 1,
        ..Config::default()
    };
    let b = TestBroker::with_config(config).await;
    let (mut first, ack) = Raw::connect(b.port(), V5, connect(V5, "first")).await;
    assert_eq!(ack.reason_code, ReasonCode::Success);
    // 3.1.1 has no "busy": its fallback is return code 3, server unavailable.
    for (version, reason) in [
        (V5, ReasonCode::ServerBusy),
        (V4, ReasonCode::ServerUnavailable),
    ] {
        let mut over = Raw::open(b.port(), version).await;
        over.send(connect(version, "over")).await;
        let got = over.until_closed().await;
        assert!(
            matches!(got.as_slice(), [Packet::ConnAck(a)] if a.reason_code == reason),
            "{version:?}: {got:?}"
        );
    }
    // The admitted client is untouched, and its place is freed when it goes.
    first.send(Packet::PingReq).await;
    assert!(matches!(first.recv().await, Some(Packet::PingResp)));
    drop(first);
    tokio::time::timeout(WAIT, async {
        loop {
            let mut next = Raw::open(b.port(), V5).await;
            next.send(connect(V5, "next")).await;
            if let Some(Packet::ConnAck(a)) = next.recv().await
                && a.reason_code == ReasonCode::Success
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the freed place was not reused");
    b.stop().await;
}

/// A watcher subscribed to `wills/#`, and client "dev" connected with a
/// 600 s session and a will delayed by 600 s.
async fn watcher_and_delayed_will(port: u16) -> (Raw, Raw) {
    let watcher = subscriber(port, "watcher", "wills/#", QoS::AtMostOnce).await;
    let mut c = connect(V5, "dev");
    c.properties.session_expiry_interval = Some(600);
    let mut will = will("wills/dev", "gone", QoS::AtMostOnce, false);
    will.properties.will_delay_interval = Some(600);
    c.will = Some(will);
    let (dev, _) = Raw::connect(port, V5, c).await;
    (watcher, dev)
}

async fn expect_will(watcher: &mut Raw) {
    let will = tokio::time::timeout(WAIT, expect_publish(watcher))
        .await
        .expect("the will was not published");
    assert_eq!(&will.payload[..], b"gone");
}

#[tokio::test]
async fn a_clean_start_takeover_publishes_the_delayed_will_at_once() {
    let b = TestBroker::start().await;
    let (mut watcher, mut old) = watcher_and_delayed_will(b.port()).await;
    // Clean Start 1 ends the old session: its 600 s will delay is over.
    let (_new, ack) = Raw::connect(b.port(), V5, connect(V5, "dev")).await;
    assert!(!ack.session_present);
    old.assert_disconnected(ReasonCode::SessionTakenOver).await;
    expect_will(&mut watcher).await;
    b.stop().await;
}

#[tokio::test]
async fn a_clean_start_reconnect_publishes_an_offline_session_s_delayed_will() {
    let b = TestBroker::start().await;
    let (mut watcher, old) = watcher_and_delayed_will(b.port()).await;
    drop(old); // lost without DISCONNECT: the will waits for its delay
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (_new, ack) = Raw::connect(b.port(), V5, connect(V5, "dev")).await;
    assert!(!ack.session_present);
    expect_will(&mut watcher).await;
    b.stop().await;
}
