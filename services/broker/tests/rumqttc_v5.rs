//! MQTT 5.0 interop with rumqttc's v5 client (a client we did not write).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{
    ConnectReturnCode, Filter, LastWill, LastWillProperties, PublishProperties, RetainForwardRule,
    SubscribeProperties,
};

async fn connack(
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<Result<V5Packet, String>>,
) -> rumqttc::v5::mqttbytes::v5::ConnAck {
    v5_next(rx, |p| match p {
        V5Packet::ConnAck(a) => Some(a),
        _ => None,
    })
    .await
}

#[tokio::test]
async fn properties_pass_through_and_subscription_ids() {
    let b = TestBroker::start().await;
    let (sub, mut srx, _t1) = v5_client(v5_opts(b.port(), "sub"));
    for (filter, qos, id) in [
        ("cmd/#", QoS::AtLeastOnce, 7),
        ("cmd/+/go", QoS::ExactlyOnce, 9),
    ] {
        let props = SubscribeProperties {
            id: Some(id),
            user_properties: vec![],
        };
        sub.subscribe_with_properties(filter, qos, props)
            .await
            .unwrap();
        v5_suback(&mut srx).await;
    }

    let (publ, _prx, _t2) = v5_client(v5_opts(b.port(), "pub"));
    let props = PublishProperties {
        payload_format_indicator: Some(1),
        content_type: Some("application/json".into()),
        response_topic: Some("replies/pub".into()),
        correlation_data: Some(Bytes::from_static(b"corr-1")),
        user_properties: vec![("k".into(), "v".into()), ("k".into(), "v2".into())],
        message_expiry_interval: Some(3600),
        ..Default::default()
    };
    publ.publish_with_properties("cmd/d1/go", QoS::ExactlyOnce, false, "{}", props)
        .await
        .unwrap();
    let p = v5_publish(&mut srx).await;
    // MQTT-3.3.5-1: one copy at the highest granted QoS, with both ids.
    assert_eq!(p.qos, QoS::ExactlyOnce);
    let got = p.properties.unwrap();
    let mut ids = got.subscription_identifiers.clone();
    ids.sort_unstable();
    assert_eq!(ids, [7, 9]);
    assert_eq!(got.payload_format_indicator, Some(1));
    assert_eq!(got.content_type.as_deref(), Some("application/json"));
    assert_eq!(got.response_topic.as_deref(), Some("replies/pub"));
    assert_eq!(got.correlation_data.as_deref(), Some(&b"corr-1"[..]));
    assert_eq!(
        got.user_properties,
        [("k".into(), "v".into()), ("k".into(), "v2".into())]
    );
    let left = got.message_expiry_interval.unwrap();
    assert!(
        left <= 3600 && left > 0,
        "forwarded expiry is what is left: {left}"
    );
    b.stop().await;
}

#[tokio::test]
async fn empty_client_id_is_assigned() {
    let b = TestBroker::start().await;
    let (_c, mut rx, _t) = v5_client(v5_opts(b.port(), ""));
    let ack = connack(&mut rx).await;
    assert_eq!(ack.code, ConnectReturnCode::Success);
    let id = ack.properties.unwrap().assigned_client_identifier.unwrap();
    assert!(!id.is_empty());
    b.stop().await;
}

#[tokio::test]
async fn takeover_closes_the_older_connection_with_0x8e() {
    let b = TestBroker::start().await;
    let (mut old, _) = Raw::connect(
        b.port(),
        mqtt::ProtocolVersion::V5,
        connect(mqtt::ProtocolVersion::V5, "twin"),
    )
    .await;
    let (_new, mut nrx, _t2) = v5_client(v5_opts(b.port(), "twin"));
    connack(&mut nrx).await;
    let got = old.until_closed().await;
    assert!(
        matches!(got.as_slice(), [mqtt::Packet::Disconnect(d)] if d.reason_code == mqtt::ReasonCode::SessionTakenOver),
        "{got:?}"
    );
    // And a rumqttc client being taken over sees its connection end.
    let (_old2, mut orx, _t3) = v5_client(v5_opts(b.port(), "twin2"));
    connack(&mut orx).await;
    let (_new2, mut n2rx, _t4) = v5_client(v5_opts(b.port(), "twin2"));
    connack(&mut n2rx).await;
    next_matching(&mut orx, |p| p.err()).await;
    b.stop().await;
}

#[tokio::test]
async fn no_local_and_retain_handling() {
    let b = TestBroker::start().await;
    let (publ, _prx, _t0) = v5_client(v5_opts(b.port(), "seed"));
    publ.publish("rh/x", QoS::AtLeastOnce, true, "kept")
        .await
        .unwrap();

    let (c, mut rx, _t) = v5_client(v5_opts(b.port(), "me"));
    let mut never = Filter::new("rh/#", QoS::AtLeastOnce);
    never.retain_forward_rule = RetainForwardRule::Never;
    let mut local = Filter::new("loop/#", QoS::AtLeastOnce);
    local.nolocal = true;
    c.subscribe_many([never, local]).await.unwrap();
    v5_suback(&mut rx).await;
    c.publish("loop/1", QoS::AtLeastOnce, false, "mine")
        .await
        .unwrap();
    publ.publish("loop/1", QoS::AtLeastOnce, false, "theirs")
        .await
        .unwrap();
    let p = v5_publish(&mut rx).await;
    assert_eq!(
        &p.payload[..],
        b"theirs",
        "no retained (handling 2), no own message (no local)"
    );

    // Retain As Published keeps the flag on normal forwarding.
    let mut rap = Filter::new("rap/#", QoS::AtMostOnce);
    rap.preserve_retain = true;
    c.subscribe_many([rap]).await.unwrap();
    v5_suback(&mut rx).await;
    publ.publish("rap/1", QoS::AtMostOnce, true, "r")
        .await
        .unwrap();
    assert!(v5_publish(&mut rx).await.retain);
    b.stop().await;
}

#[tokio::test]
async fn server_topic_aliases_are_resolved_by_the_client() {
    let b = TestBroker::start().await;
    let mut opts = v5_opts(b.port(), "aliased");
    opts.set_topic_alias_max(Some(4));
    let (c, mut rx, _t) = v5_client(opts);
    c.subscribe("alias/#", QoS::AtMostOnce).await.unwrap();
    v5_suback(&mut rx).await;
    let (publ, _prx, _t2) = v5_client(v5_opts(b.port(), "pub"));
    for i in 0..3 {
        publ.publish(
            "alias/long/topic/name",
            QoS::AtLeastOnce,
            false,
            format!("{i}"),
        )
        .await
        .unwrap();
    }
    for i in 0..3 {
        let p = v5_publish(&mut rx).await;
        assert_eq!(&p.payload[..], format!("{i}").as_bytes());
        assert_eq!(p.properties.and_then(|p| p.topic_alias), Some(1));
        if i > 0 {
            assert!(p.topic.is_empty() || &p.topic[..] == b"alias/long/topic/name");
        }
    }
    b.stop().await;
}

#[tokio::test]
async fn will_delay_is_cancelled_by_a_reconnect_and_fires_otherwise() {
    let b = TestBroker::start().await;
    let (w, mut wrx, _tw) = v5_client(v5_opts(b.port(), "watcher"));
    w.subscribe("will/#", QoS::AtLeastOnce).await.unwrap();
    v5_suback(&mut wrx).await;

    let delayed = |id: &str, topic: &str, delay: u32| {
        let mut opts = v5_opts(b.port(), id);
        opts.set_clean_start(false);
        opts.set_session_expiry_interval(Some(60));
        let props = LastWillProperties {
            delay_interval: Some(delay),
            payload_format_indicator: None,
            message_expiry_interval: None,
            content_type: None,
            response_topic: None,
            correlation_data: None,
            user_properties: vec![],
        };
        opts.set_last_will(LastWill::new(
            topic,
            "bye",
            QoS::AtLeastOnce,
            false,
            Some(props),
        ));
        opts
    };
    // Comes back before the delay: no will (the exact timing is checked
    // with paused time in conn::tests).
    let (_a, mut arx, atask) = v5_client(delayed("back", "will/back", 30));
    connack(&mut arx).await;
    atask.abort();
    let (_a2, mut a2rx, _t) = v5_client(delayed("back", "will/back", 30));
    connack(&mut a2rx).await;
    // Stays away: the will comes after its delay.
    let (_g, mut grx, gtask) = v5_client(delayed("gone", "will/gone", 1));
    connack(&mut grx).await;
    gtask.abort();
    let p = v5_publish(&mut wrx).await;
    assert_eq!(&p.topic[..], b"will/gone");
    assert!(
        p.properties.is_none_or(|p| p.user_properties.is_empty()),
        "will delay is not forwarded"
    );
    assert_quiet(&mut wrx, Duration::from_millis(1500), |p| {
        matches!(p, Ok(V5Packet::Publish(_)))
    })
    .await;
    b.stop().await;
}

#[tokio::test]
async fn tenants_are_isolated() {
    use broker::{Broker, Identity, MemoryAuthenticator};
    let id = |t: &str, p: &str| Identity {
        tenant: tenant(t),
        principal: p.into(),
        limits: None,
    };
    let auth = MemoryAuthenticator::new()
        .with_user("a1", "pw", id("tenant-a", "a1"))
        .with_user("a2", "pw", id("tenant-a", "a2"))
        .with_user("b1", "pw", id("tenant-b", "b1"));
    let b = TestBroker::with_broker(Broker::builder(arc(auth)).build()).await;
    let login = |id: &str| {
        let mut o = v5_opts(b.port(), id);
        o.set_credentials(id, "pw");
        o
    };
    let (other, mut orx, _t1) = v5_client(login("b1"));
    other.subscribe("#", QoS::AtMostOnce).await.unwrap();
    v5_suback(&mut orx).await;
    let (same, mut srx, _t2) = v5_client(login("a2"));
    same.subscribe("#", QoS::AtMostOnce).await.unwrap();
    v5_suback(&mut srx).await;
    let (publ, _prx, _t3) = v5_client(login("a1"));
    publ.publish("devices/a1/state", QoS::AtLeastOnce, true, "on")
        .await
        .unwrap();
    assert_eq!(&v5_publish(&mut srx).await.payload[..], b"on");
    assert_quiet(&mut orx, Duration::from_millis(300), |p| {
        matches!(p, Ok(V5Packet::Publish(_)))
    })
    .await;
    // Retained messages are per tenant too.
    assert_eq!(
        b.broker.tenant_stats(&tenant("tenant-a")).unwrap().retained,
        1
    );
    assert_eq!(
        b.broker.tenant_stats(&tenant("tenant-b")).unwrap().retained,
        0
    );

    let mut bad = v5_opts(b.port(), "x");
    bad.set_credentials("a1", "wrong");
    let (_x, mut xrx, _t4) = v5_client(bad);
    let err = next_matching(&mut xrx, |p| p.err()).await;
    assert!(
        err.contains("BadUserNamePassword") || err.contains("ConnectionRefused"),
        "{err}"
    );
    b.stop().await;
}
