//! Issue 16, through the real binary: a burst of many publishers into one
//! subscriber is slowed by back-pressure instead of dropped, and a
//! subscriber that stops reading holds the others back only for the
//! slow-consumer timeout, after which it is handled by the policy (its
//! messages dropped and counted, or it is disconnected).
//! Clients: rumqttc (3.1.1 publishers, v5 subscribers).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use fleetmq_tests::{Server, metric, start_anonymous};
use rumqttc::v5::mqttbytes::v5::Packet as V5Packet;

/// How long any awaited condition may take on a shared machine (a hang
/// guard, not a speed assertion).
const WAIT: Duration = Duration::from_secs(300);

async fn metrics(server: &Server) -> String {
    server.get("/metrics").await.unwrap().text().await.unwrap()
}

/// A rumqttc v5 subscriber to `filter` that reads everything; counts the
/// PUBLISHes it receives.
async fn reading_subscriber(
    server: &Server,
    client_id: &str,
    filter: &str,
    qos: rumqttc::v5::mqttbytes::QoS,
) -> (rumqttc::v5::AsyncClient, Arc<AtomicUsize>) {
    let mut opts = rumqttc::v5::MqttOptions::new(client_id, "127.0.0.1", server.mqtt().port());
    opts.set_keep_alive(Duration::from_secs(60));
    let (client, mut el) = rumqttc::v5::AsyncClient::new(opts, 100);
    client.subscribe(filter, qos).await.unwrap();
    let received = Arc::new(AtomicUsize::new(0));
    let (subscribed, suback) = tokio::sync::oneshot::channel();
    let count = received.clone();
    tokio::spawn(async move {
        let mut subscribed = Some(subscribed);
        loop {
            match el.poll().await {
                Ok(rumqttc::v5::Event::Incoming(V5Packet::Publish(_))) => {
                    count.fetch_add(1, Ordering::Relaxed);
                }
                Ok(rumqttc::v5::Event::Incoming(V5Packet::SubAck(_))) => {
                    if let Some(tx) = subscribed.take() {
                        let _ = tx.send(());
                    }
                }
                Ok(_) => {}
                Err(_) => return,
            }
        }
    });
    tokio::time::timeout(WAIT, suback)
        .await
        .expect("SUBACK in time")
        .expect("subscribed");
    (client, received)
}

/// A rumqttc v5 subscriber to `filter` at QoS 1 that stops reading once
/// subscribed: its event loop is returned, never polled again, so the
/// socket stays open and unread.
async fn stuck_subscriber(
    server: &Server,
    client_id: &str,
    filter: &str,
) -> (rumqttc::v5::AsyncClient, rumqttc::v5::EventLoop) {
    let mut opts = rumqttc::v5::MqttOptions::new(client_id, "127.0.0.1", server.mqtt().port());
    opts.set_keep_alive(Duration::from_secs(600));
    let (client, mut el) = rumqttc::v5::AsyncClient::new(opts, 100);
    client
        .subscribe(filter, rumqttc::v5::mqttbytes::QoS::AtLeastOnce)
        .await
        .unwrap();
    tokio::time::timeout(WAIT, async {
        loop {
            if let rumqttc::v5::Event::Incoming(V5Packet::SubAck(_)) = el.poll().await.unwrap() {
                return;
            }
        }
    })
    .await
    .expect("SUBACK in time");
    (client, el)
}

/// A rumqttc 3.1.1 publisher sending `n` 64-byte messages on `topic` as
/// fast as it can; done once every message is on the wire (QoS 0: its
/// DISCONNECT, which follows them, went out) or acknowledged (QoS 1).
async fn publish_burst(port: u16, client_id: String, topic: String, qos: rumqttc::QoS, n: usize) {
    let mut opts = rumqttc::MqttOptions::new(client_id, "127.0.0.1", port);
    opts.set_keep_alive(Duration::from_secs(60));
    let (client, mut el) = rumqttc::AsyncClient::new(opts, 100);
    let sender = tokio::spawn(async move {
        for i in 0..n {
            let mut payload = vec![b'x'; 64];
            payload[..8].copy_from_slice(&(i as u64).to_be_bytes());
            client.publish(&topic, qos, false, payload).await.unwrap();
        }
        client
    });
    let mut acked = 0;
    let mut sender = Some(sender);
    let mut client = None;
    loop {
        tokio::select! {
            done = async { sender.as_mut().unwrap().await }, if sender.is_some() => {
                sender = None;
                let c: rumqttc::AsyncClient = done.unwrap();
                if qos == rumqttc::QoS::AtMostOnce {
                    c.disconnect().await.unwrap();
                }
                client = Some(c);
            }
            event = el.poll() => match event.expect("publisher connection") {
                rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_)) => {
                    acked += 1;
                    if acked == n {
                        return;
                    }
                }
                rumqttc::Event::Outgoing(rumqttc::Outgoing::Disconnect) => return,
                _ => {}
            },
        }
        let _ = &client;
    }
}

/// `publishers` clients each send `per_publisher` messages on
/// `burst/{i}` at once; returns when all are done.
async fn burst(server: &Server, publishers: usize, per_publisher: usize, qos: rumqttc::QoS) {
    let port = server.mqtt().port();
    let tasks: Vec<_> = (0..publishers)
        .map(|i| {
            tokio::spawn(publish_burst(
                port,
                format!("pub-{i}"),
                format!("burst/{i}"),
                qos,
                per_publisher,
            ))
        })
        .collect();
    tokio::time::timeout(WAIT, async {
        for t in tasks {
            t.await.unwrap();
        }
    })
    .await
    .expect("publishers done in time");
}

/// Waits until `count` reaches `want`; returns what it reached.
async fn until_count(count: &AtomicUsize, want: usize) -> usize {
    let reached = tokio::time::timeout(WAIT, async {
        while count.load(Ordering::Relaxed) < want {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let got = count.load(Ordering::Relaxed);
    assert!(reached.is_ok(), "received {got} of {want}");
    got
}

const PUBLISHERS: usize = 50;
const PER_PUBLISHER: usize = 2000;

/// 50 publishers × 2,000 messages into one subscriber, at `qos` on both
/// sides: before back-pressure the subscriber's 10,000-message queue
/// overflowed and QoS 0 lost about half, QoS 1 nearly all.
async fn fan_in_loses_nothing(qos: rumqttc::QoS, sub_qos: rumqttc::v5::mqttbytes::QoS) {
    let cwd = tempfile::tempdir().unwrap();
    let server = start_anonymous(cwd.path(), &[]).await.unwrap();
    let (_sub, received) = reading_subscriber(&server, "sink", "burst/#", sub_qos).await;
    burst(&server, PUBLISHERS, PER_PUBLISHER, qos).await;
    let total = PUBLISHERS * PER_PUBLISHER;
    assert_eq!(until_count(&received, total).await, total);
    let text = metrics(&server).await;
    for reason in ["queue_full", "queue_bytes", "slow_consumer"] {
        assert_eq!(
            metric(
                &text,
                "mqtt_messages_dropped_total",
                &[&format!("reason=\"{reason}\"")]
            ),
            0.0,
            "{reason}"
        );
    }
}

#[tokio::test]
async fn a_qos0_burst_of_fifty_publishers_into_one_subscriber_loses_nothing() {
    fan_in_loses_nothing(
        rumqttc::QoS::AtMostOnce,
        rumqttc::v5::mqttbytes::QoS::AtMostOnce,
    )
    .await;
}

#[tokio::test]
async fn a_qos1_burst_of_fifty_publishers_into_one_subscriber_loses_nothing() {
    fan_in_loses_nothing(
        rumqttc::QoS::AtLeastOnce,
        rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
    )
    .await;
}

/// Publishers of `feed/…` send `TOTAL` messages to two subscribers: one
/// that never reads (queue bound 100, 32 of them in flight unacknowledged)
/// and one that does. The reader gets every message: the publishers
/// paused for the stuck one only until the slow-consumer timeout, after
/// which `policy` applied to it.
async fn a_stuck_subscriber_stops_nobody(policy: &str) -> (String, rumqttc::v5::EventLoop) {
    const FEEDERS: usize = 3;
    const EACH: usize = 300;
    let cwd = tempfile::tempdir().unwrap();
    let server = start_anonymous(
        cwd.path(),
        &[
            "--mqtt-max-queued-messages",
            "100",
            "--mqtt-slow-consumer-timeout",
            "1",
            "--mqtt-slow-consumer-policy",
            policy,
        ],
    )
    .await
    .unwrap();
    let (_stuck, unpolled) = stuck_subscriber(&server, "stuck", "burst/#").await;
    let (_reader, received) = reading_subscriber(
        &server,
        "reader",
        "burst/#",
        rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
    )
    .await;
    burst(&server, FEEDERS, EACH, rumqttc::QoS::AtLeastOnce).await;
    assert_eq!(until_count(&received, FEEDERS * EACH).await, FEEDERS * EACH);
    let text = metrics(&server).await;
    // Found slow once: it never caught up, so nobody waited for it again.
    assert_eq!(
        metric(
            &text,
            "mqtt_slow_consumers_total",
            &["tenant=\"interop\"", &format!("policy=\"{policy}\"")]
        ),
        1.0
    );
    (text, unpolled)
}

#[tokio::test]
async fn a_stuck_subscriber_past_the_timeout_has_its_messages_dropped_and_counted() {
    let (text, _unpolled) = a_stuck_subscriber_stops_nobody("drop").await;
    // 900 sent: at most 32 in flight and 100 queued for it; the rest
    // dropped, per tenant and by reason.
    let per_tenant = metric(
        &text,
        "mqtt_slow_consumer_dropped_total",
        &["tenant=\"interop\""],
    );
    assert!(per_tenant >= 900.0 - 132.0, "{per_tenant}");
    assert_eq!(
        metric(
            &text,
            "mqtt_messages_dropped_total",
            &["reason=\"slow_consumer\""]
        ),
        per_tenant
    );
}

#[tokio::test]
async fn a_stuck_subscriber_past_the_timeout_is_disconnected() {
    let (text, mut unpolled) = a_stuck_subscriber_stops_nobody("disconnect").await;
    // What reached it while it was being closed is counted as dropped,
    // never more than the burst.
    let dropped = metric(
        &text,
        "mqtt_slow_consumer_dropped_total",
        &["tenant=\"interop\""],
    );
    assert!(dropped < 900.0, "{dropped}");
    // Reading at last, it finds what it was sent, then why it was closed.
    let ended = tokio::time::timeout(WAIT, async {
        loop {
            if let Err(e) = unpolled.poll().await {
                return e;
            }
        }
    })
    .await
    .expect("the stuck client learns it was disconnected");
    // rumqttc reads the DISCONNECT 0x97 the server sent before closing,
    // unless it first writes its acknowledgements of the messages it finds
    // into the closed socket: then the write fails (broken pipe, reset).
    // Either way the server ended the connection; why is the metric above
    // (found slow once, under the disconnect policy).
    let told = matches!(
        ended,
        rumqttc::v5::ConnectionError::MqttState(rumqttc::v5::StateError::ServerDisconnect {
            reason_code: rumqttc::v5::mqttbytes::v5::DisconnectReasonCode::QuotaExceeded,
            ..
        })
    );
    let closed = ["BrokenPipe", "ConnectionReset", "ConnectionAborted"]
        .iter()
        .any(|kind| format!("{ended:?}").contains(kind));
    assert!(told || closed, "{ended:?}");
}
