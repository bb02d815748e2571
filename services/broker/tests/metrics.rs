//! Metric names through a debugging recorder (its own test binary: the
//! recorder is process-global).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use metrics_util::debugging::DebuggingRecorder;
use rumqttc::QoS;

#[tokio::test]
async fn connections_messages_bytes_drops_retained_sessions_subscriptions() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder.install().unwrap();

    let b = TestBroker::start().await;
    let (_sub, mut srx, _t1) = v4_subscriber(b.port(), "sub", "m/#", QoS::AtLeastOnce).await;
    let (publ, _prx, _t2) = v4_client(b.port(), "pub", true);
    v4_send(&publ, "m/1", QoS::AtLeastOnce, true, "x").await;
    v4_send(&publ, "m/0", QoS::AtMostOnce, false, "y").await;
    v4_publish(&mut srx).await;
    v4_publish(&mut srx).await;

    let seen = metric_values(&snapshotter);
    let get = |n: &str| {
        seen.get(n)
            .copied()
            .unwrap_or_else(|| panic!("{n} missing: {seen:?}"))
    };
    assert_eq!(get("mqtt_connections{}"), 2.0);
    assert_eq!(get("mqtt_connections_total{}"), 2.0);
    assert_eq!(get("mqtt_messages_received_total{qos=1}"), 1.0);
    assert_eq!(get("mqtt_messages_received_total{qos=0}"), 1.0);
    assert_eq!(get("mqtt_messages_sent_total{qos=1}"), 1.0);
    assert_eq!(get("mqtt_messages_sent_total{qos=0}"), 1.0);
    assert!(get("mqtt_bytes_received_total{}") > 0.0);
    assert!(get("mqtt_bytes_sent_total{}") > 0.0);
    assert_eq!(get("mqtt_retained_messages{}"), 1.0);
    assert_eq!(get("mqtt_sessions{}"), 2.0);
    assert_eq!(get("mqtt_subscriptions{}"), 1.0);
    b.stop().await;
}
