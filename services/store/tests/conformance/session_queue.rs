//! Issue 14: queued messages of persistent sessions — bodies stored once,
//! per-session order with bounded pages, in-flight transitions, incoming
//! QoS 2 packet ids.

use chrono::Duration;
use serde_json::json;
use store::testing::TestDb;
use store::{IncomingWrite, QueueState, QueueTransition, SessionKey, SessionWrites, Store};

use super::sessions::{body, connect, key, queued, record, t0};
use super::{acme, tenant};

fn done(k: &SessionKey, seq: u64) -> QueueTransition {
    QueueTransition {
        key: k.clone(),
        seq,
        to: None,
    }
}

fn to(k: &SessionKey, seq: u64, state: QueueState) -> QueueTransition {
    QueueTransition {
        key: k.clone(),
        seq,
        to: Some(state),
    }
}

async fn queue_len(store: &Store, client: &str) -> anyhow::Result<u64> {
    let sessions = store.load_sessions("acme").await?;
    Ok(sessions
        .iter()
        .find(|s| s.record.client_id == client)
        .map_or(0, |s| s.queued))
}

async fn one_body_is_written_per_message_and_collected_after_the_last_ack(
    db: &TestDb,
) -> anyhow::Result<()> {
    let store = acme(db).await?;
    let at = t0();
    let clients: Vec<String> = (0..1_200).map(|i| format!("sensor-{i:04}")).collect();
    connect(
        store,
        clients.iter().map(|c| record("acme", c, at)).collect(),
    )
    .await?;
    // One message for 1,200 offline sessions: one body, 1,200 rows, one
    // transaction (and more than one multi-row chunk).
    let mut m = body("acme", &[0, 1, 2, 255]);
    m.qos = 2;
    m.properties = json!({"user_properties": [["k", "v"]]});
    m.expires_at = Some(at + Duration::seconds(60));
    let writes = SessionWrites {
        messages: vec![m.clone()],
        enqueued: clients
            .iter()
            .map(|c| (key("acme", c), queued(1, &m)))
            .collect(),
        ..SessionWrites::default()
    };
    let count = store.write_sessions(&writes).await?;
    assert_eq!(
        (count.messages, count.enqueued, count.collected),
        (1, 1_200, 0)
    );
    assert_eq!(store.count_session_messages("acme").await?, 1);

    // Every session but one acknowledges: the body stays.
    let acks = SessionWrites {
        transitions: clients[1..]
            .iter()
            .map(|c| done(&key("acme", c), 1))
            .collect(),
        ..SessionWrites::default()
    };
    let count = store.write_sessions(&acks).await?;
    assert_eq!((count.transitions, count.collected), (1_199, 0));
    let page = store.session_queue("acme", &clients[0], None, 100).await?;
    assert_eq!(page.entries.len(), 1);
    assert_eq!(page.messages, [m.clone()]);
    // The last one: the body goes with it.
    let last = SessionWrites {
        transitions: vec![done(&key("acme", &clients[0]), 1)],
        ..SessionWrites::default()
    };
    assert_eq!(store.write_sessions(&last).await?.collected, 1);
    assert_eq!(store.count_session_messages("acme").await?, 0);

    // A body whose sessions are all gone is never kept.
    let orphan = body("acme", b"nobody wants it");
    let count = store
        .write_sessions(&SessionWrites {
            messages: vec![orphan.clone()],
            enqueued: vec![(key("acme", "nobody"), queued(1, &orphan))],
            ..SessionWrites::default()
        })
        .await?;
    assert_eq!((count.messages, count.enqueued, count.collected), (1, 0, 1));
    assert_eq!(store.count_session_messages("acme").await?, 0);
    Ok(())
}

async fn queues_keep_their_order_and_page_in_bounded_steps(db: &TestDb) -> anyhow::Result<()> {
    let store = acme(db).await?;
    let at = t0();
    connect(
        store,
        vec![record("acme", "a", at), record("acme", "b", at)],
    )
    .await?;
    // Three batches, seqs not in insertion order within a batch.
    let mut messages = Vec::new();
    for round in 0..3u64 {
        let bodies: Vec<_> = (0..100u64)
            .map(|i| body("acme", format!("{}", round * 100 + i).as_bytes()))
            .collect();
        let mut enqueued: Vec<_> = bodies
            .iter()
            .enumerate()
            .map(|(i, m)| (key("acme", "a"), queued(round * 100 + i as u64, m)))
            .collect();
        enqueued.reverse();
        enqueued.push((key("acme", "b"), queued(round, &bodies[0])));
        store
            .write_sessions(&SessionWrites {
                messages: bodies.clone(),
                enqueued,
                ..SessionWrites::default()
            })
            .await?;
        messages.extend(bodies);
    }
    // One session, pages of 128: 300 rows in order, each body once.
    let mut seen = Vec::new();
    let mut after = None;
    let mut pages = 0;
    loop {
        let page = store.session_queue("acme", "a", after, 128).await?;
        pages += 1;
        for entry in &page.entries {
            let m = page
                .messages
                .iter()
                .find(|m| m.id == entry.message_id)
                .unwrap();
            seen.push((entry.seq, String::from_utf8(m.payload.clone())?));
        }
        after = page.next;
        if after.is_none() {
            break;
        }
    }
    assert_eq!(pages, 3);
    let expected: Vec<_> = (0..300u64).map(|i| (i, i.to_string())).collect();
    assert_eq!(seen, expected);
    // Another session's queue is its own.
    let b: Vec<_> = store
        .session_queue("acme", "b", Some(0), 10)
        .await?
        .entries
        .iter()
        .map(|e| e.seq)
        .collect();
    assert_eq!(b, [1, 2]);
    assert!(
        store
            .session_queue("acme", "nobody", None, 10)
            .await?
            .entries
            .is_empty()
    );
    // Another tenant sees none of it.
    tenant(store, "globex").await?;
    let page = store.session_queue("globex", "a", None, 10).await?;
    assert!(page.entries.is_empty() && page.next.is_none());
    Ok(())
}

async fn deliveries_move_from_queued_to_sent_to_released_to_done(
    db: &TestDb,
) -> anyhow::Result<()> {
    let store = acme(db).await?;
    connect(store, vec![record("acme", "a", t0())]).await?;
    let k = key("acme", "a");
    let m = body("acme", b"x");
    let mut q2 = queued(2, &m);
    q2.qos = 2;
    q2.retain = true;
    q2.subscription_ids = vec![1, 268_435_455];
    q2.shared_filter = Some("$share/g/commands/#".into());
    let writes = SessionWrites {
        messages: vec![m.clone()],
        enqueued: vec![(k.clone(), queued(1, &m)), (k.clone(), q2.clone())],
        ..SessionWrites::default()
    };
    store.write_sessions(&writes).await?;
    let states = |page: store::QueuePage| -> Vec<(u64, QueueState)> {
        page.entries.iter().map(|e| (e.seq, e.state)).collect()
    };
    let sent = SessionWrites {
        transitions: vec![
            to(&k, 1, QueueState::Sent { packet_id: 7 }),
            to(&k, 2, QueueState::Sent { packet_id: 8 }),
        ],
        ..SessionWrites::default()
    };
    store.write_sessions(&sent).await?;
    // A QoS 1 delivery is never released: ignored.
    let bogus = SessionWrites {
        transitions: vec![to(&k, 1, QueueState::Released { packet_id: 7 })],
        ..SessionWrites::default()
    };
    assert_eq!(store.write_sessions(&bogus).await?.transitions, 0);
    let page = store.session_queue("acme", "a", None, 10).await?;
    assert_eq!(page.entries[1], {
        let mut e = q2.clone();
        e.state = QueueState::Sent { packet_id: 8 };
        e
    });
    assert_eq!(
        states(page),
        [
            (1, QueueState::Sent { packet_id: 7 }),
            (2, QueueState::Sent { packet_id: 8 })
        ]
    );
    let released = SessionWrites {
        transitions: vec![
            done(&k, 1),
            to(&k, 2, QueueState::Released { packet_id: 8 }),
        ],
        ..SessionWrites::default()
    };
    store.write_sessions(&released).await?;
    let page = store.session_queue("acme", "a", None, 10).await?;
    assert_eq!(states(page), [(2, QueueState::Released { packet_id: 8 })]);
    assert_eq!(queue_len(store, "a").await?, 1);
    let complete = SessionWrites {
        transitions: vec![done(&k, 2), done(&k, 99)],
        ..SessionWrites::default()
    };
    let count = store.write_sessions(&complete).await?;
    assert_eq!((count.transitions, count.collected), (1, 1));
    assert_eq!(queue_len(store, "a").await?, 0);
    Ok(())
}

async fn incoming_qos2_ids_are_kept_until_released(db: &TestDb) -> anyhow::Result<()> {
    let store = acme(db).await?;
    connect(
        store,
        vec![record("acme", "a", t0()), record("acme", "b", t0())],
    )
    .await?;
    let k = key("acme", "a");
    let incoming = |packet_id, awaiting| IncomingWrite {
        key: k.clone(),
        packet_id,
        awaiting,
    };
    let writes = SessionWrites {
        incoming: vec![
            incoming(65_535, true),
            incoming(1, true),
            incoming(7, true),
            incoming(7, true),
            incoming(9, true),
            incoming(9, false),
        ],
        ..SessionWrites::default()
    };
    assert_eq!(store.write_sessions(&writes).await?.incoming, 3);
    let loaded = store.load_sessions("acme").await?;
    assert_eq!(loaded[0].incoming_qos2, [1, 7, 65_535]);
    assert!(loaded[1].incoming_qos2.is_empty());
    let writes = SessionWrites {
        incoming: vec![incoming(7, false), incoming(1, true)],
        ..SessionWrites::default()
    };
    store.write_sessions(&writes).await?;
    assert_eq!(
        store.load_sessions("acme").await?[0].incoming_qos2,
        [1, 65_535]
    );
    Ok(())
}

store::backend_tests!(
    one_body_is_written_per_message_and_collected_after_the_last_ack,
    queues_keep_their_order_and_page_in_bounded_steps,
    deliveries_move_from_queued_to_sent_to_released_to_done,
    incoming_qos2_ids_are_kept_until_released,
);
