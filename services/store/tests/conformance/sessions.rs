//! Issue 14: persistent MQTT sessions — rows, subscriptions, wills,
//! deadlines, deletion and the operator's view. Queues: `session_queue.rs`.

use chrono::{DateTime, Duration, SubsecRound, Utc};
use serde_json::json;
use store::testing::TestDb;
use store::{
    Error, NewDevice, Page, QueueEntry, QueueState, SessionDisconnect, SessionKey, SessionMessage,
    SessionMessageId, SessionRecord, SessionSubscription, SessionWill, SessionWrites, Store,
    SubscriptionWrite,
};

use super::{acme, tenant};

/// Now, as both backends store it (microseconds).
pub(crate) fn t0() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

pub(crate) fn record(tenant: &str, client: &str, at: DateTime<Utc>) -> SessionRecord {
    SessionRecord {
        tenant_id: tenant.into(),
        client_id: client.into(),
        owner: client.into(),
        protocol: "5.0".into(),
        expiry_interval: 3600,
        expires_at: None,
        connected: true,
        node_id: Some("node-1".into()),
        connected_at: at,
        disconnected_at: None,
        will: None,
    }
}

pub(crate) fn key(tenant: &str, client: &str) -> SessionKey {
    SessionKey::new(tenant, client)
}

pub(crate) fn body(tenant: &str, payload: &[u8]) -> SessionMessage {
    SessionMessage {
        id: SessionMessageId::new(),
        tenant_id: tenant.into(),
        topic: "commands/d1/run".into(),
        payload: payload.to_vec(),
        qos: 1,
        properties: json!({}),
        expires_at: None,
        created_at: t0(),
        // Read back as written (the cluster's routed id, issue 15).
        routed_id: Some(*b"origin-run\x00\x00\x00\x00\x00\x07"),
    }
}

pub(crate) fn queued(seq: u64, message: &SessionMessage) -> QueueEntry {
    QueueEntry {
        seq,
        message_id: message.id,
        qos: 1,
        retain: false,
        subscription_ids: vec![],
        shared_filter: None,
        state: QueueState::Queued,
    }
}

/// Creates the sessions (connected) in one batch.
pub(crate) async fn connect(store: &Store, records: Vec<SessionRecord>) -> anyhow::Result<()> {
    let n = records.len() as u64;
    let count = store
        .write_sessions(&SessionWrites {
            upserted: records,
            ..SessionWrites::default()
        })
        .await?;
    assert_eq!(count.sessions_upserted, n);
    Ok(())
}

/// A will not yet due (its session is connected).
fn will() -> SessionWill {
    SessionWill {
        topic: "devices/d1/status".into(),
        payload: b"offline".to_vec(),
        qos: 1,
        retain: true,
        properties: json!({"content_type": "text/plain"}),
        delay: 30,
        due_at: None,
    }
}

/// [`record`] with [`will`].
fn with_will(tenant: &str, client: &str, at: DateTime<Utc>) -> SessionRecord {
    SessionRecord {
        will: Some(will()),
        ..record(tenant, client, at)
    }
}

fn sub(filter: &str, qos: u8, id: Option<u32>) -> SessionSubscription {
    SessionSubscription {
        filter: filter.into(),
        qos,
        no_local: false,
        retain_as_published: false,
        retain_handling: 0,
        subscription_id: id,
    }
}

async fn sessions_are_created_replaced_and_deleted(db: &TestDb) -> anyhow::Result<()> {
    let store = acme(db).await?;
    let at = t0();
    let r = with_will("acme", "d1", at);
    connect(store, vec![r.clone()]).await?;
    let loaded = store.load_sessions("acme").await?;
    assert_eq!(loaded.len(), 1);
    assert_eq!(loaded[0].record, r);
    assert_eq!(loaded[0].generation, 1);

    // A resume (same key) keeps what the session holds and bumps the
    // generation.
    let subs = SessionWrites {
        subscriptions: vec![SubscriptionWrite::Set(
            key("acme", "d1"),
            sub("a/#", 1, None),
        )],
        ..SessionWrites::default()
    };
    store.write_sessions(&subs).await?;
    let mut resumed = r.clone();
    resumed.protocol = "3.1.1".into();
    resumed.will = None;
    connect(store, vec![resumed.clone()]).await?;
    let loaded = store.load_sessions("acme").await?;
    assert_eq!(loaded[0].record, resumed);
    assert_eq!(loaded[0].generation, 2);
    assert_eq!(loaded[0].subscriptions.len(), 1);

    // A clean start: deleted and created in one batch, children gone.
    let clean = SessionWrites {
        deleted: vec![key("acme", "d1")],
        upserted: vec![r.clone()],
        ..SessionWrites::default()
    };
    let count = store.write_sessions(&clean).await?;
    assert_eq!((count.sessions_deleted, count.sessions_upserted), (1, 1));
    let loaded = store.load_sessions("acme").await?;
    assert_eq!(
        (loaded[0].generation, loaded[0].subscriptions.len()),
        (1, 0)
    );

    assert!(store.delete_session("acme", "d1").await?);
    assert!(!store.delete_session("acme", "d1").await?);
    assert!(store.load_sessions("acme").await?.is_empty());
    Ok(())
}

async fn subscriptions_are_upserted_and_removed(db: &TestDb) -> anyhow::Result<()> {
    let store = acme(db).await?;
    connect(store, vec![record("acme", "d1", t0())]).await?;
    let k = key("acme", "d1");
    // Longer than a Postgres index entry may be: keyed by its hash.
    let long = format!("commands/{}/#", "x".repeat(5_000));
    let mut shared = sub("$share/g/jobs/+", 2, Some(268_435_455));
    shared.no_local = false;
    shared.retain_as_published = true;
    shared.retain_handling = 2;
    let writes = SessionWrites {
        subscriptions: vec![
            SubscriptionWrite::Set(k.clone(), sub("a/+", 0, Some(1))),
            SubscriptionWrite::Set(k.clone(), sub(&long, 1, None)),
            SubscriptionWrite::Set(k.clone(), shared.clone()),
            // Replaced within the batch: the last write wins.
            SubscriptionWrite::Set(k.clone(), sub("a/+", 1, Some(7))),
            SubscriptionWrite::Set(k.clone(), sub("gone", 1, None)),
            SubscriptionWrite::Remove(k.clone(), "gone".into()),
            // No such session: skipped, not an error.
            SubscriptionWrite::Set(key("acme", "nobody"), sub("x", 1, None)),
        ],
        ..SessionWrites::default()
    };
    store.write_sessions(&writes).await?;
    let subs = &store.load_sessions("acme").await?[0].subscriptions;
    let filters: Vec<_> = subs.iter().map(|s| s.filter.as_str()).collect();
    assert_eq!(filters, ["$share/g/jobs/+", "a/+", long.as_str()]);
    assert_eq!(subs[0], shared);
    assert_eq!((subs[1].qos, subs[1].subscription_id), (1, Some(7)));

    let writes = SessionWrites {
        subscriptions: vec![
            SubscriptionWrite::Remove(k.clone(), long.clone()),
            SubscriptionWrite::Set(k.clone(), sub("a/+", 2, None)),
        ],
        ..SessionWrites::default()
    };
    store.write_sessions(&writes).await?;
    let subs = &store.load_sessions("acme").await?[0].subscriptions;
    assert_eq!(subs.len(), 2);
    assert_eq!((subs[1].qos, subs[1].subscription_id), (2, None));
    Ok(())
}

async fn disconnects_start_deadlines_and_wills_are_kept_until_cleared(
    db: &TestDb,
) -> anyhow::Result<()> {
    let store = acme(db).await?;
    let at = t0();
    let records = vec![
        with_will("acme", "d1", at),
        with_will("acme", "d2", at),
        record("acme", "d3", at),
    ];
    connect(store, records).await?;
    let gone = at + Duration::seconds(5);
    let disconnect = |client: &str, due: Option<DateTime<Utc>>| SessionDisconnect {
        key: key("acme", client),
        at: gone,
        expires_at: Some(gone + Duration::seconds(3600)),
        will_due_at: due,
    };
    let writes = SessionWrites {
        disconnected: vec![
            // Lost: the will is due after its delay.
            disconnect("d1", Some(gone + Duration::seconds(30))),
            // Normal DISCONNECT: the will is discarded.
            disconnect("d2", None),
            // No will: a due time means nothing.
            disconnect("d3", Some(gone)),
        ],
        ..SessionWrites::default()
    };
    assert_eq!(store.write_sessions(&writes).await?.sessions_updated, 4);
    let loaded = store.load_sessions("acme").await?;
    let d1 = &loaded[0].record;
    assert!(!d1.connected);
    assert_eq!(d1.disconnected_at, Some(gone));
    assert_eq!(d1.expires_at, Some(gone + Duration::seconds(3600)));
    assert_eq!(
        d1.will.as_ref().and_then(|w| w.due_at),
        Some(gone + Duration::seconds(30))
    );
    assert_eq!(loaded[1].record.will, None);
    assert_eq!(loaded[2].record.will, None);

    let due = store
        .due_session_wills(gone + Duration::seconds(60), 10)
        .await?;
    assert_eq!(due, [key("acme", "d1")]);
    assert!(store.due_session_wills(gone, 10).await?.is_empty());
    let cleared = SessionWrites {
        wills_cleared: vec![key("acme", "d1")],
        ..SessionWrites::default()
    };
    store.write_sessions(&cleared).await?;
    assert_eq!(store.load_sessions("acme").await?[0].record.will, None);
    assert!(
        store
            .due_session_wills(gone + Duration::seconds(60), 10)
            .await?
            .is_empty()
    );
    Ok(())
}

async fn a_crashed_node_releases_its_sessions(db: &TestDb) -> anyhow::Result<()> {
    let store = acme(db).await?;
    let at = t0();
    let mut a = record("acme", "a", at);
    a.will = Some(SessionWill {
        delay: 7_200, // longer than the session: due at its end
        ..will()
    });
    let mut b = record("acme", "b", at);
    b.expiry_interval = u32::MAX; // never expires
    b.will = Some(SessionWill {
        delay: 10,
        ..will()
    });
    let c = record("acme", "c", at);
    let mut elsewhere = record("acme", "d", at);
    elsewhere.node_id = Some("node-2".into());
    connect(store, vec![a, b, c, elsewhere]).await?;

    let restart = at + Duration::seconds(100);
    assert_eq!(store.release_node_sessions("node-1", restart).await?, 3);
    assert_eq!(store.release_node_sessions("node-1", restart).await?, 0);
    let loaded = store.load_sessions("acme").await?;
    let r = |i: usize| &loaded[i].record;
    assert!(!r(0).connected && !r(1).connected && !r(2).connected && r(3).connected);
    let hour = restart + Duration::seconds(3600);
    assert_eq!(r(0).expires_at, Some(hour));
    assert_eq!(r(0).will.as_ref().and_then(|w| w.due_at), Some(hour));
    assert_eq!(r(1).expires_at, None);
    assert_eq!(
        r(1).will.as_ref().and_then(|w| w.due_at),
        Some(restart + Duration::seconds(10))
    );
    assert_eq!(
        (r(2).expires_at, r(2).disconnected_at),
        (Some(hour), Some(restart))
    );
    Ok(())
}

async fn a_dead_nodes_sessions_are_taken_once_by_one_survivor(db: &TestDb) -> anyhow::Result<()> {
    let store = acme(db).await?;
    let at = t0();
    let mut lost = record("acme", "lost", at);
    lost.will = Some(SessionWill { delay: 0, ..will() });
    let offline = record("acme", "offline", at);
    let mut alive = record("acme", "alive", at);
    alive.node_id = Some("node-2".into());
    connect(store, vec![lost, offline, alive]).await?;
    let gone = at + Duration::seconds(5);
    let writes = SessionWrites {
        disconnected: vec![SessionDisconnect {
            key: key("acme", "offline"),
            at: gone,
            expires_at: Some(gone + Duration::seconds(3600)),
            will_due_at: None,
        }],
        ..SessionWrites::default()
    };
    store.write_sessions(&writes).await?;
    store.create_device("acme", &NewDevice::new("d1")).await?;
    store
        .update_presence(&[super::state::online("d1", at, "node-3")])
        .await?;
    // A node that holds only an offline session is in use too: messages
    // reach that session through it alone.
    let mut held = record("acme", "held", at);
    held.node_id = Some("node-4".into());
    connect(store, vec![held]).await?;
    let writes = SessionWrites {
        disconnected: vec![SessionDisconnect {
            key: key("acme", "held"),
            at: gone,
            expires_at: None,
            will_due_at: None,
        }],
        ..SessionWrites::default()
    };
    store.write_sessions(&writes).await?;
    assert_eq!(
        store.nodes_in_use().await?,
        ["node-1", "node-2", "node-3", "node-4"],
        "sessions' (connected or offline) and online devices' nodes, once each"
    );

    // Two survivors at once (a cluster is on Postgres; SQLite's single
    // writer would only refuse the second): each session goes to one.
    let death = at + Duration::seconds(10);
    let (a, b) = match store.backend() {
        store::Backend::Postgres => tokio::join!(
            store.adopt_node_sessions("node-1", "node-2", death),
            store.adopt_node_sessions("node-1", "node-3", death),
        ),
        store::Backend::Sqlite => (
            store.adopt_node_sessions("node-1", "node-2", death).await,
            store.adopt_node_sessions("node-1", "node-3", death).await,
        ),
    };
    let mut taken = [a?, b?].concat();
    taken.sort();
    assert_eq!(taken, [key("acme", "lost"), key("acme", "offline")]);
    assert!(
        store
            .adopt_node_sessions("node-1", "node-2", death)
            .await?
            .is_empty()
    );
    assert_eq!(store.release_node_sessions("node-1", death).await?, 0);
    assert_eq!(store.nodes_in_use().await?, ["node-2", "node-3", "node-4"]);

    let loaded = store.load_sessions("acme").await?;
    let r = |client: &str| {
        loaded
            .iter()
            .find(|s| s.record.client_id == client)
            .map(|s| s.record.clone())
            .unwrap()
    };
    let lost = r("lost");
    assert!(!lost.connected);
    assert_ne!(lost.node_id.as_deref(), Some("node-1"));
    assert_eq!(lost.disconnected_at, Some(death));
    assert_eq!(lost.will.and_then(|w| w.due_at), Some(death));
    let offline = r("offline");
    assert_ne!(offline.node_id.as_deref(), Some("node-1"));
    // Its offline period started at its own disconnect, not the death.
    assert_eq!(offline.disconnected_at, Some(gone));
    assert_eq!(offline.expires_at, Some(gone + Duration::seconds(3600)));
    assert!(r("alive").connected);
    assert_eq!(
        store.due_session_wills(death, 10).await?,
        [key("acme", "lost")]
    );
    Ok(())
}

async fn expired_sessions_and_messages_are_purged_by_absolute_deadline(
    db: &TestDb,
) -> anyhow::Result<()> {
    let store = acme(db).await?;
    let at = t0();
    let clients = ["expired", "later", "online", "will"];
    let mut records: Vec<_> = clients[..3].iter().map(|c| record("acme", c, at)).collect();
    records.push(with_will("acme", "will", at));
    connect(store, records).await?;
    let mut expiring = body("acme", b"short-lived");
    expiring.expires_at = Some(at + Duration::seconds(10));
    let lasting = body("acme", b"lasting");
    let mut sent = queued(2, &expiring);
    sent.state = QueueState::Sent { packet_id: 1 };
    let off = |client: &str, secs: i64| SessionDisconnect {
        key: key("acme", client),
        at,
        expires_at: Some(at + Duration::seconds(secs)),
        will_due_at: Some(at + Duration::seconds(secs)),
    };
    let writes = SessionWrites {
        disconnected: vec![off("expired", 60), off("later", 600), off("will", 60)],
        messages: vec![expiring.clone(), lasting.clone()],
        enqueued: vec![
            (key("acme", "expired"), queued(1, &lasting)),
            (key("acme", "later"), queued(1, &expiring)),
            (key("acme", "later"), sent),
            (key("acme", "later"), queued(3, &lasting)),
        ],
        ..SessionWrites::default()
    };
    store.write_sessions(&writes).await?;

    // Before any deadline: nothing.
    let purge = store.purge_sessions(at + Duration::seconds(5), 100).await?;
    assert_eq!((purge.sessions, purge.expired_messages), (0, 0));
    // The broker was down for two minutes: the deadlines passed meanwhile.
    let purge = store
        .purge_sessions(at + Duration::seconds(120), 100)
        .await?;
    assert_eq!(purge.sessions, 1, "only the offline one without a will");
    assert_eq!(purge.expired_messages, 1, "queued, not the one in flight");
    assert_eq!(purge.collected, 0, "both bodies still referenced");
    let left: Vec<_> = store
        .load_sessions("acme")
        .await?
        .into_iter()
        .map(|s| (s.record.client_id, s.queued))
        .collect();
    assert_eq!(
        left,
        [
            ("later".to_owned(), 2),
            ("online".to_owned(), 0),
            ("will".to_owned(), 0)
        ]
    );
    // A limit bounds the work of one purge.
    let all_gone = store
        .purge_sessions(at + Duration::seconds(7200), 1)
        .await?;
    assert_eq!((all_gone.sessions, all_gone.collected), (1, 2));
    assert_eq!(store.count_session_messages("acme").await?, 0);
    Ok(())
}

async fn completed_qos_2_ids_are_kept_for_a_while_and_go_with_their_session(
    db: &TestDb,
) -> anyhow::Result<()> {
    let store = acme(db).await?;
    connect(
        store,
        vec![record("acme", "d1", t0()), record("acme", "d2", t0())],
    )
    .await?;
    let done = |client: &str, n: u8| store::CompletedWrite {
        key: key("acme", client),
        routed_id: [n; 16],
    };
    let writes = SessionWrites {
        // Twice in one batch, and for a session that does not exist.
        completed: vec![
            done("d1", 1),
            done("d1", 2),
            done("d1", 1),
            done("nobody", 3),
        ],
        ..SessionWrites::default()
    };
    store.write_sessions(&writes).await?;
    // Again in a later batch: kept once.
    let again = SessionWrites {
        completed: vec![done("d1", 2), done("d2", 4)],
        ..SessionWrites::default()
    };
    store.write_sessions(&again).await?;
    let completed = |sessions: &[store::StoredSession], client: &str| {
        let mut ids = sessions
            .iter()
            .find(|s| s.record.client_id == client)
            .map(|s| s.completed.clone())
            .unwrap_or_default();
        ids.sort_unstable();
        ids
    };
    let loaded = store.load_sessions("acme").await?;
    assert_eq!(completed(&loaded, "d1"), [[1; 16], [2; 16]]);
    assert_eq!(completed(&loaded, "d2"), [[4; 16]]);

    // Kept while a replay may still need them.
    let purge = store.purge_sessions(Utc::now(), 100).await?;
    assert_eq!(purge.completed, 0);
    // A clean start drops what the discarded session completed.
    let writes = SessionWrites {
        deleted: vec![key("acme", "d2")],
        upserted: vec![record("acme", "d2", t0())],
        ..SessionWrites::default()
    };
    store.write_sessions(&writes).await?;
    let loaded = store.load_sessions("acme").await?;
    assert!(completed(&loaded, "d2").is_empty());
    // A load returns at most the newest COMPLETED_LOADED of a session.
    let many: Vec<store::CompletedWrite> = (0..=store::COMPLETED_LOADED as u32)
        .map(|n| {
            let mut routed_id = [0u8; 16];
            routed_id[..4].copy_from_slice(&n.to_be_bytes());
            routed_id[15] = 9;
            store::CompletedWrite {
                key: key("acme", "d2"),
                routed_id,
            }
        })
        .collect();
    store
        .write_sessions(&SessionWrites {
            completed: many,
            ..SessionWrites::default()
        })
        .await?;
    let loaded = store.load_session("acme", "d2").await?;
    assert_eq!(
        loaded.map(|s| s.completed.len()),
        Some(store::COMPLETED_LOADED)
    );
    // Past twice the journal's window, purged.
    let later = Utc::now() + Duration::from_std(store::COMPLETED_KEPT)? + Duration::seconds(1);
    let purge = store.purge_sessions(later, 100).await?;
    assert_eq!(purge.completed, 2 + store::COMPLETED_LOADED as u64 + 1);
    let loaded = store.load_session("acme", "d1").await?;
    assert!(loaded.is_some_and(|s| s.completed.is_empty()));
    Ok(())
}

async fn deleting_a_tenant_owner_or_client_deletes_everything(db: &TestDb) -> anyhow::Result<()> {
    let store = acme(db).await?;
    tenant(store, "globex").await?;
    store.create_device("acme", &NewDevice::new("d1")).await?;
    let at = t0();
    let mut backend = record("acme", "backend-1", at);
    backend.owner = "service:acme:backend".into();
    let mut backend2 = record("acme", "backend-2", at);
    backend2.owner = "service:acme:backend".into();
    connect(
        store,
        vec![
            record("acme", "d1", at),
            backend,
            backend2,
            record("globex", "d1", at),
        ],
    )
    .await?;
    let m = body("acme", b"x");
    let g = body("globex", b"y");
    let writes = SessionWrites {
        messages: vec![m.clone(), g.clone()],
        enqueued: vec![
            (key("acme", "d1"), queued(1, &m)),
            (key("acme", "backend-1"), queued(1, &m)),
            (key("globex", "d1"), queued(1, &g)),
        ],
        subscriptions: vec![SubscriptionWrite::Set(
            key("acme", "d1"),
            sub("commands/d1/#", 1, None),
        )],
        ..SessionWrites::default()
    };
    store.write_sessions(&writes).await?;

    // A device deleted: its sessions go (not another tenant's "d1").
    assert_eq!(store.delete_sessions_of_owner("acme", "d1").await?, 1);
    assert_eq!(
        store
            .delete_sessions_of_owner("acme", "service:acme:backend")
            .await?,
        2
    );
    assert_eq!(store.count_session_messages("acme").await?, 0);
    assert_eq!(store.load_sessions("globex").await?.len(), 1);

    // A tenant deleted: everything of it, bodies included, cascades away.
    store.delete_tenant("globex").await?;
    tenant(store, "globex").await?;
    assert!(store.load_sessions("globex").await?.is_empty());
    assert_eq!(store.count_session_messages("globex").await?, 0);
    Ok(())
}

async fn the_operator_view_pages_with_counts(db: &TestDb) -> anyhow::Result<()> {
    let store = acme(db).await?;
    tenant(store, "empty").await?;
    let at = t0();
    let clients = ["a", "b", "c", "d", "e"];
    connect(
        store,
        clients.iter().map(|c| record("acme", c, at)).collect(),
    )
    .await?;
    let m = body("acme", b"x");
    let mut in_flight = queued(2, &m);
    in_flight.state = QueueState::Sent { packet_id: 9 };
    let writes = SessionWrites {
        disconnected: vec![SessionDisconnect {
            key: key("acme", "b"),
            at,
            expires_at: Some(at + Duration::seconds(60)),
            will_due_at: None,
        }],
        subscriptions: vec![
            SubscriptionWrite::Set(key("acme", "b"), sub("x/#", 1, None)),
            SubscriptionWrite::Set(key("acme", "b"), sub("y/#", 1, None)),
        ],
        messages: vec![m.clone()],
        enqueued: vec![
            (key("acme", "b"), queued(1, &m)),
            (key("acme", "b"), in_flight),
            (key("acme", "b"), queued(3, &m)),
        ],
        ..SessionWrites::default()
    };
    store.write_sessions(&writes).await?;

    let first = store.list_sessions("acme", &Page::first(2)).await?;
    let ids: Vec<_> = first.items.iter().map(|s| s.client_id.as_str()).collect();
    assert_eq!(ids, ["a", "b"]);
    let b = &first.items[1];
    assert!(!b.connected);
    assert_eq!(b.node_id.as_deref(), Some("node-1"));
    assert_eq!((b.subscriptions, b.queued, b.in_flight), (2, 2, 1));
    assert_eq!(b.expires_at, Some(at + Duration::seconds(60)));
    let cursor = first.next_cursor.unwrap();
    let second = store.list_sessions("acme", &Page::after(2, cursor)).await?;
    let third = store
        .list_sessions("acme", &Page::after(2, second.next_cursor.unwrap()))
        .await?;
    assert_eq!(third.items.len(), 1);
    assert_eq!(third.next_cursor, None);
    assert_eq!(store.session_summary("acme", "b").await?, *b);
    assert!(matches!(
        store.session_summary("acme", "zz").await,
        Err(Error::NotFound { .. })
    ));
    assert!(
        store
            .list_sessions("empty", &Page::default())
            .await?
            .items
            .is_empty()
    );
    assert!(matches!(
        store.list_sessions("nobody", &Page::default()).await,
        Err(Error::NotFound { .. })
    ));
    let devices_cursor = store.list_tenants(&Page::first(1)).await?.next_cursor;
    assert!(matches!(
        store
            .list_sessions("acme", &Page::after(2, devices_cursor.unwrap()))
            .await,
        Err(Error::InvalidCursor)
    ));
    Ok(())
}

async fn a_malformed_batch_is_refused_whole_and_writes_nothing(db: &TestDb) -> anyhow::Result<()> {
    let store = acme(db).await?;
    let at = t0();
    let too_long = "c".repeat(1_025);
    let mut bad_sub = sub("a", 1, None);
    bad_sub.subscription_id = Some(0);
    let m = body("acme", b"x");
    let mut released_qos1 = queued(1, &m);
    released_qos1.state = QueueState::Released { packet_id: 3 };
    for bad in [
        SessionWrites {
            upserted: vec![record("acme", &too_long, at)],
            ..SessionWrites::default()
        },
        SessionWrites {
            subscriptions: vec![SubscriptionWrite::Set(key("acme", "d1"), bad_sub)],
            ..SessionWrites::default()
        },
        SessionWrites {
            messages: vec![m.clone()],
            enqueued: vec![(key("acme", "d1"), released_qos1)],
            ..SessionWrites::default()
        },
    ] {
        let mut batch = bad;
        batch.upserted.push(record("acme", "d1", at));
        assert!(matches!(
            store.write_sessions(&batch).await,
            Err(Error::InvalidDocument { .. })
        ));
    }
    assert!(store.load_sessions("acme").await?.is_empty());
    // Writes for a tenant that does not exist are skipped.
    let count = store
        .write_sessions(&SessionWrites {
            upserted: vec![record("nobody", "d1", at)],
            messages: vec![body("nobody", b"x")],
            ..SessionWrites::default()
        })
        .await?;
    assert_eq!((count.sessions_upserted, count.messages), (0, 0));
    Ok(())
}

store::backend_tests!(
    sessions_are_created_replaced_and_deleted,
    subscriptions_are_upserted_and_removed,
    disconnects_start_deadlines_and_wills_are_kept_until_cleared,
    a_crashed_node_releases_its_sessions,
    a_dead_nodes_sessions_are_taken_once_by_one_survivor,
    expired_sessions_and_messages_are_purged_by_absolute_deadline,
    completed_qos_2_ids_are_kept_for_a_while_and_go_with_their_session,
    deleting_a_tenant_owner_or_client_deletes_everything,
    the_operator_view_pages_with_counts,
    a_malformed_batch_is_refused_whole_and_writes_nothing,
);
