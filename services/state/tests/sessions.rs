//! `DurableSessions` on both backends: what it acknowledges is in the
//! database (a second instance, as after kill -9, loads it back), one
//! commit serves many publishers, one body serves many sessions, in-flight
//! states survive, a failed or full buffer refuses rather than lies.
//!
//! Tests run on a current-thread runtime: the writer task runs only while
//! the test awaits, so "handed over before the writer ran" is exact, not a
//! race.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use broker::session_store::testing::{pid, queued_for, record};
use broker::session_store::{
    DeliveryState, Disconnected, QueuedFor, SessionStore, StoredMessage, StoredSubscription,
    StoredWill,
};
use broker::{Durability, TenantId};
use bytes::Bytes;
use mqtt::{Properties, QoS, SubscriptionOptions, TopicFilter, TopicName};
use state::{DurableSessions, SessionsConfig};
use store::Store;
use store::testing::TestDb;

/// One `#[tokio::test]` (current thread) per backend for each function.
macro_rules! current_thread_backend_tests {
    ($($name:ident),+ $(,)?) => {$(
        mod $name {
            #[tokio::test]
            async fn sqlite() {
                store::testing::run_on(store::Backend::Sqlite, true, |db| {
                    Box::pin(super::$name(db))
                })
                .await;
            }

            #[tokio::test]
            async fn postgres() {
                store::testing::run_on(store::Backend::Postgres, true, |db| {
                    Box::pin(super::$name(db))
                })
                .await;
            }
        }
    )+};
}

fn acme() -> TenantId {
    TenantId::parse("acme").unwrap()
}

async fn setup(db: &TestDb) -> Store {
    db.with_tenant("acme").await.clone()
}

/// Write-behind changes wait an hour: only what a caller waits for (or
/// an explicit flush) is committed.
fn start(store: &Store) -> Arc<DurableSessions> {
    start_with(store, |_| {})
}

fn start_with(store: &Store, tweak: impl FnOnce(&mut SessionsConfig)) -> Arc<DurableSessions> {
    let mut config = SessionsConfig::new("node-1");
    config.flush_window = Duration::from_secs(3600);
    config.load_page = 64;
    tweak(&mut config);
    DurableSessions::start(store.clone(), config)
}

fn message(payload: String, qos: QoS) -> Arc<StoredMessage> {
    Arc::new(StoredMessage {
        topic: TopicName::parse("commands/sub/run").unwrap(),
        payload: Bytes::from(payload),
        qos,
        properties: Properties {
            user_properties: mqtt::UserProperties::from_pairs([("k", "v")]).unwrap(),
            ..Properties::default()
        },
        expires_at: None,
        // Read back as written: a cluster node skips what it holds by it.
        id: Some(broker::MessageId {
            origin: 0xfeed,
            seq: u64::from(qos.to_u8()),
        }),
    })
}

/// A delivery through the subscription with identifier 3.
fn to(client: &str, seq: u64, qos: QoS) -> QueuedFor {
    QueuedFor {
        subscription_ids: vec![3],
        ..queued_for(client, seq, qos)
    }
}

async fn durable(d: Option<Durability>) {
    d.expect("a durability to wait for").await.unwrap();
}

async fn acknowledged_messages_survive_a_crash(db: &TestDb) {
    let store = setup(db).await;
    let node = start(&store);
    durable(node.connect(&acme(), &record("sub"), false)).await;
    let sub = StoredSubscription {
        filter: TopicFilter::parse("commands/sub/#").unwrap(),
        options: SubscriptionOptions::new(QoS::ExactlyOnce),
        id: Some(3),
    };
    durable(node.subscription(&acme(), "sub", &sub.filter, Some(&sub))).await;
    // The subscriber stops reading; 300 QoS 1 messages are acknowledged
    // to publishers, a few of them sent (write-behind) when the node dies.
    let mut publishers = Vec::new();
    for p in 0..10u64 {
        let node = node.clone();
        publishers.push(tokio::spawn(async move {
            for i in 0..30u64 {
                let seq = i * 10 + p;
                let m = message(format!("m{seq}"), QoS::AtLeastOnce);
                let ack = node.enqueue(&acme(), &m, &[to("sub", seq, QoS::AtLeastOnce)]);
                durable(ack).await;
            }
        }));
    }
    for p in publishers {
        p.await.unwrap();
    }
    for seq in 0..3 {
        node.delivery_state(
            &acme(),
            "sub",
            seq,
            DeliveryState::Sent(pid(1 + seq as u16)),
            false,
        );
    }
    let stats = node.stats();
    assert!(stats.transactions < 300, "group commit: {stats:?}");
    assert_eq!(stats.backlog, 3, "the sent states still wait");

    // kill -9: the node's buffer is gone; another instance starts on the
    // same database (the first never flushes: its window is an hour).
    let restarted = start(&store);
    assert_eq!(restarted.recover().await.unwrap(), 1, "it was connected");
    let mut sessions = restarted.load(&acme()).await.unwrap();
    assert_eq!(sessions.len(), 1);
    let s = sessions.remove(0);
    assert!(!s.connected);
    assert!(s.expires_at.unwrap() > SystemTime::now() + Duration::from_secs(3500));
    assert_eq!(s.subscriptions, [sub]);
    let payloads: Vec<_> = s.queue.iter().map(|d| d.message.payload.clone()).collect();
    let expected: Vec<_> = (0..300).map(|i| Bytes::from(format!("m{i}"))).collect();
    assert_eq!(payloads, expected, "all of them, in order");
    // Sent but not recorded: sent again, which QoS 1 allows.
    assert!(s.queue.iter().all(|d| d.state == DeliveryState::Queued));
    assert_eq!(s.queue[7].subscription_ids, [3]);
    assert_eq!(s.queue[7].message.properties.user_properties.len(), 1);
    assert_eq!(s.next_seq(), 300);
    restarted.shutdown().await.unwrap();
}

async fn one_commit_and_one_body_serve_many(db: &TestDb) {
    let store = setup(db).await;
    let node = start(&store);
    let clients: Vec<String> = (0..200).map(|i| format!("sensor-{i:03}")).collect();
    for c in &clients {
        node.connect(&acme(), &record(c), false);
    }
    node.flush().await.unwrap();
    let before = node.stats().transactions;
    // One message for 200 sessions, and 100 more messages for the first:
    // handed over before the writer runs, so one transaction holds them.
    let fan_out = message("to everyone".into(), QoS::ExactlyOnce);
    let targets: Vec<_> = clients.iter().map(|c| to(c, 0, QoS::AtLeastOnce)).collect();
    let mut acks = vec![node.enqueue(&acme(), &fan_out, &targets).unwrap()];
    for seq in 1..=100 {
        let m = message(format!("m{seq}"), QoS::AtLeastOnce);
        acks.push(
            node.enqueue(&acme(), &m, &[to(&clients[0], seq, QoS::AtLeastOnce)])
                .unwrap(),
        );
    }
    // QoS 0 is never stored.
    let qos0 = message("fire and forget".into(), QoS::AtMostOnce);
    assert!(node.enqueue(&acme(), &qos0, &targets).is_none());
    assert!(
        node.enqueue(&acme(), &fan_out, &[to(&clients[1], 9, QoS::AtMostOnce)])
            .is_none()
    );
    for a in acks {
        a.await.unwrap();
    }
    assert_eq!(node.stats().transactions - before, 1);
    assert_eq!(store.count_session_messages("acme").await.unwrap(), 101);
    let summary = store.session_summary("acme", &clients[0]).await.unwrap();
    assert_eq!(summary.queued, 101);
    let summary = store.session_summary("acme", &clients[199]).await.unwrap();
    assert_eq!(summary.queued, 1);
    node.shutdown().await.unwrap();
}

async fn deliveries_coalesce_and_in_flight_states_survive(db: &TestDb) {
    let store = setup(db).await;
    let node = start(&store);
    durable(node.connect(&acme(), &record("sub"), false)).await;
    let rows = node.stats().rows_written;
    // Taken and acknowledged by an online subscriber before the commit:
    // nothing of it is written, not even its body.
    let quick = message("quick".into(), QoS::AtLeastOnce);
    let ack = node.enqueue(&acme(), &quick, &[to("sub", 0, QoS::AtLeastOnce)]);
    node.delivery_state(&acme(), "sub", 0, DeliveryState::Sent(pid(1)), false);
    node.delivered(&acme(), "sub", 0);
    durable(ack).await;
    assert_eq!(node.stats().rows_written, rows);
    assert_eq!(store.count_session_messages("acme").await.unwrap(), 0);

    // Three in flight, each at another stage, when the node dies.
    for (seq, qos) in [
        (1, QoS::AtLeastOnce),
        (2, QoS::ExactlyOnce),
        (3, QoS::ExactlyOnce),
    ] {
        let m = message(format!("m{seq}"), qos);
        durable(node.enqueue(&acme(), &m, &[to("sub", seq, qos)])).await;
    }
    // QoS 1: write-behind (a crash before its commit resends it, which
    // QoS 1 allows); here it rides along with the next commit.
    node.delivery_state(&acme(), "sub", 1, DeliveryState::Sent(pid(2)), false);
    // QoS 2: durable before the PUBLISH and before the PUBREL go out.
    durable(node.delivery_state(&acme(), "sub", 2, DeliveryState::Sent(pid(3)), true)).await;
    durable(node.delivery_state(&acme(), "sub", 2, DeliveryState::Released(pid(3)), true)).await;
    durable(node.delivery_state(&acme(), "sub", 3, DeliveryState::Sent(pid(4)), true)).await;
    durable(node.incoming_qos2(&acme(), "sub", pid(60_000), true)).await;

    let restarted = start(&store);
    let s = restarted.load(&acme()).await.unwrap().remove(0);
    let states: Vec<_> = s.queue.iter().map(|d| (d.seq, d.state)).collect();
    assert_eq!(
        states,
        [
            (1, DeliveryState::Sent(pid(2))),
            (2, DeliveryState::Released(pid(3))),
            (3, DeliveryState::Sent(pid(4))),
        ]
    );
    assert_eq!(s.incoming_qos2, [pid(60_000)]);
    // PUBCOMP for 2 and the PUBREL of the incoming id: gone after a flush.
    restarted.delivered(&acme(), "sub", 2);
    durable(restarted.incoming_qos2(&acme(), "sub", pid(60_000), false)).await;
    let s = start(&store).load(&acme()).await.unwrap().remove(0);
    assert_eq!(s.queue.len(), 2);
    assert!(s.incoming_qos2.is_empty());
    node.shutdown().await.unwrap();
}

async fn wills_clean_starts_and_ends_are_kept_in_order(db: &TestDb) {
    let store = setup(db).await;
    let node = start(&store);
    let mut with_will = record("d1");
    with_will.will = Some(StoredWill {
        topic: TopicName::parse("devices/d1/status").unwrap(),
        payload: Bytes::from_static(b"offline"),
        qos: QoS::AtLeastOnce,
        retain: true,
        properties: Properties {
            message_expiry_interval: Some(60),
            ..Properties::default()
        },
        delay: 30,
    });
    durable(node.connect(&acme(), &with_will, false)).await;
    let sub = StoredSubscription {
        filter: TopicFilter::parse("commands/d1/#").unwrap(),
        options: SubscriptionOptions::new(QoS::AtLeastOnce),
        id: None,
    };
    durable(node.subscription(&acme(), "d1", &sub.filter, Some(&sub))).await;
    // Lost while the broker ran; the broker went down for longer than the
    // session's expiry: load still returns it (the broker publishes the
    // will, then ends the session), with its absolute deadlines.
    let at = SystemTime::now() - Duration::from_secs(7200);
    let d = Disconnected {
        at,
        expires_at: Some(at + Duration::from_secs(3600)),
        will_due_at: Some(at + Duration::from_secs(30)),
    };
    node.disconnect(&acme(), "d1", &d);
    let s = start(&store).load(&acme()).await.unwrap();
    assert!(s[0].connected, "write-behind: not committed yet");
    let s = node.load(&acme()).await.unwrap().remove(0);
    assert!(!s.connected);
    assert!(s.expires_at.unwrap() < SystemTime::now());
    assert!(s.will_due_at.unwrap() < SystemTime::now());
    assert_eq!(s.record.will, with_will.will);

    node.will_done(&acme(), "d1");
    // A clean start discards the subscription; an end discards it all.
    durable(node.connect(&acme(), &record("d1"), true)).await;
    let s = start(&store).load(&acme()).await.unwrap().remove(0);
    assert!(s.connected && s.subscriptions.is_empty() && s.record.will.is_none());
    durable(node.subscription(&acme(), "d1", &sub.filter, None)).await;
    durable(node.end(&acme(), "d1")).await;
    assert!(start(&store).load(&acme()).await.unwrap().is_empty());
    // A client id the store cannot key is refused, not half-stored.
    let long = record(&"x".repeat(2_000));
    let e = node
        .connect(&acme(), &long, false)
        .unwrap()
        .await
        .unwrap_err();
    assert!(e.0.contains("1024 bytes"), "{e}");
    node.shutdown().await.unwrap();
}

async fn a_full_buffer_refuses_messages_but_takes_acknowledgements(db: &TestDb) {
    let store = setup(db).await;
    let node = start_with(&store, |c| c.max_pending = 2);
    let connected = node.connect(&acme(), &record("sub"), false);
    let first = node.enqueue(
        &acme(),
        &message("1".into(), QoS::AtLeastOnce),
        &[to("sub", 0, QoS::AtLeastOnce)],
    );
    let refused = node.enqueue(
        &acme(),
        &message("2".into(), QoS::AtLeastOnce),
        &[to("sub", 1, QoS::AtLeastOnce)],
    );
    node.delivered(&acme(), "sub", 0);
    durable(connected).await;
    durable(first).await;
    let e = refused.unwrap().await.unwrap_err();
    assert!(e.0.contains("buffer full"), "{e}");
    assert_eq!(node.stats().refused, 1);
    node.shutdown().await.unwrap();
    // After shutdown: nothing is taken, and the caller is told.
    let late = node.connect(&acme(), &record("sub"), false).unwrap();
    assert!(late.await.is_err());
}

async fn a_failed_commit_fails_its_waiters_and_keeps_the_changes(db: &TestDb) {
    let store = setup(db).await;
    let node = start_with(&store, |c| c.retry_delay = Duration::from_millis(50));
    durable(node.connect(&acme(), &record("sub"), false)).await;
    // The database goes away.
    store.close().await;
    let e = node
        .enqueue(
            &acme(),
            &message("x".into(), QoS::AtLeastOnce),
            &[to("sub", 0, QoS::AtLeastOnce)],
        )
        .unwrap()
        .await
        .unwrap_err();
    assert!(e.0.contains("not durable"), "{e}");
    let stats = node.stats();
    assert!(stats.failed_flushes >= 1);
    assert!(stats.backlog >= 1, "kept for a retry: {stats:?}");
    assert!(node.shutdown().await.is_err(), "reports the loss");
}

current_thread_backend_tests!(
    acknowledged_messages_survive_a_crash,
    one_commit_and_one_body_serve_many,
    deliveries_coalesce_and_in_flight_states_survive,
    wills_clean_starts_and_ends_are_kept_in_order,
    a_full_buffer_refuses_messages_but_takes_acknowledgements,
    a_failed_commit_fails_its_waiters_and_keeps_the_changes,
);
