//! Issue 6: retained messages, presence and the state document.

use chrono::{Duration, Utc};
use serde_json::json;
use store::testing::TestDb;
use store::{
    DeviceFilter, Error, NewDevice, PresenceStatus, PresenceUpdate, RetainedMessage, RetainedWrite,
};

use super::{acme, device_ids, tenant};

fn message(tenant: &str, topic: &str, payload: &[u8]) -> RetainedMessage {
    RetainedMessage {
        tenant_id: tenant.into(),
        topic: topic.into(),
        payload: payload.to_vec(),
        qos: 1,
        properties: json!({"content_type": "text/plain", "user_properties": [["k", "v"]]}),
        expires_at: None,
        updated_at: Utc::now(),
        owner: Some("d1".into()),
    }
}

async fn retained_batches_upsert_delete_and_skip(db: &TestDb) -> anyhow::Result<()> {
    let store = acme(db).await?;
    tenant(store, "globex").await?;
    let now = Utc::now();
    let mut expiring = message("acme", "devices/d1/expiring", b"x");
    expiring.expires_at = Some(now + Duration::seconds(60));
    let mut expired = message("acme", "devices/d1/expired", b"x");
    expired.expires_at = Some(now - Duration::seconds(1));
    let mut writes = vec![
        RetainedWrite::Set(message("acme", "devices/d1/state", b"v1")),
        RetainedWrite::Set(message("acme", "devices/d1/state", b"v2")),
        RetainedWrite::Set(message("acme", "devices/d10/state", b"other device")),
        RetainedWrite::Set(message("acme", "gone", b"soon")),
        RetainedWrite::Set(expiring.clone()),
        RetainedWrite::Set(expired),
        RetainedWrite::Set(message("globex", "devices/d1/state", b"globex")),
        // A tenant that does not exist: skipped, not a failed batch.
        RetainedWrite::Set(message("nobody", "t", b"x")),
        RetainedWrite::Set(message("acme", "ünïcødé/tøpic", &[0, 159, 146, 150])),
    ];
    // Enough for several chunks.
    for i in 0..2_500 {
        writes.push(RetainedWrite::Set(message(
            "globex",
            &format!("bulk/{i}"),
            b"b",
        )));
    }
    let count = store.write_retained(&writes).await?;
    assert_eq!(count.upserted, 7 + 2_500);
    assert_eq!(count.skipped, 2);

    let loaded = store.load_retained("acme", now).await?;
    let topics: Vec<_> = loaded.iter().map(|m| m.topic.as_str()).collect();
    assert_eq!(
        topics,
        [
            "devices/d1/expiring",
            "devices/d1/state",
            "devices/d10/state",
            "gone",
            "ünïcødé/tøpic"
        ]
    );
    let state = &loaded[1];
    assert_eq!(state.payload, b"v2");
    assert_eq!(state.qos, 1);
    assert_eq!(state.properties["user_properties"], json!([["k", "v"]]));
    assert_eq!(
        loaded[0].expires_at,
        expiring.expires_at.map(|t| t.trunc_subsecs_micros())
    );
    assert_eq!(loaded[4].payload, [0, 159, 146, 150]);
    assert_eq!(store.load_retained("globex", now).await?.len(), 2_501);

    // The device's own topics only, by prefix.
    let mine = store.list_retained("acme", "devices/d1/", now, 10).await?;
    let topics: Vec<_> = mine.iter().map(|m| m.topic.as_str()).collect();
    assert_eq!(topics, ["devices/d1/expiring", "devices/d1/state"]);

    // Deletes, mixed with sets, in one batch.
    let count = store
        .write_retained(&[
            RetainedWrite::Delete {
                tenant_id: "acme".into(),
                topic: "gone".into(),
            },
            RetainedWrite::Delete {
                tenant_id: "acme".into(),
                topic: "never-there".into(),
            },
            RetainedWrite::Set(message("acme", "devices/d1/state", b"v3")),
        ])
        .await?;
    assert_eq!((count.upserted, count.deleted, count.skipped), (1, 1, 1));
    let loaded = store.load_retained("acme", now).await?;
    assert!(loaded.iter().all(|m| m.topic != "gone"));
    assert_eq!(loaded[1].payload, b"v3");

    // Expired rows are never returned, and can be purged.
    let later = now + Duration::seconds(120);
    assert_eq!(store.load_retained("acme", later).await?.len(), 3);
    assert_eq!(store.purge_expired_retained(later).await?, 2);

    // Bad input is refused before anything is written.
    let mut empty = message("acme", "devices/d1/state", b"");
    empty.payload.clear();
    assert!(matches!(
        store.write_retained(&[RetainedWrite::Set(empty)]).await,
        Err(Error::InvalidDocument { .. })
    ));
    assert_eq!(store.load_retained("acme", now).await?[0].payload, b"v3");

    // Deleting the tenant deletes its retained messages.
    store.delete_tenant("globex").await?;
    assert!(store.load_retained("globex", now).await?.is_empty());
    Ok(())
}

/// Who published a retained message survives a reload, a replacement by
/// another principal moves it, and an unknown owner stays unknown.
async fn retained_owner_is_kept_and_moves_on_replace(db: &TestDb) -> anyhow::Result<()> {
    let store = acme(db).await?;
    let now = Utc::now();
    let mut platform = message("acme", "commands/d1/desired", b"p");
    platform.owner = None;
    let credential = "cred-backend-1".to_owned();
    store
        .write_retained(&[
            RetainedWrite::Set(message("acme", "devices/d1/a", b"1")),
            RetainedWrite::Set(message("acme", "devices/d1/b", b"1")),
            RetainedWrite::Set(platform),
        ])
        .await?;
    let owners = |loaded: Vec<RetainedMessage>| {
        loaded
            .into_iter()
            .map(|m| (m.topic, m.owner))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        owners(store.load_retained("acme", now).await?),
        [
            ("commands/d1/desired".to_owned(), None),
            ("devices/d1/a".to_owned(), Some("d1".to_owned())),
            ("devices/d1/b".to_owned(), Some("d1".to_owned())),
        ]
    );
    // Another principal replaces `b` (and the platform's message): the
    // rows are theirs now.
    let mut taken = message("acme", "devices/d1/b", b"2");
    taken.owner = Some(credential.clone());
    let mut adopted = message("acme", "commands/d1/desired", b"q");
    adopted.owner = Some(credential.clone());
    store
        .write_retained(&[RetainedWrite::Set(taken), RetainedWrite::Set(adopted)])
        .await?;
    assert_eq!(
        owners(store.list_retained("acme", "", now, 10).await?),
        [
            ("commands/d1/desired".to_owned(), Some(credential.clone())),
            ("devices/d1/a".to_owned(), Some("d1".to_owned())),
            ("devices/d1/b".to_owned(), Some(credential.clone())),
        ]
    );
    // A platform replacement forgets the owner; a delete removes the row.
    let mut platform = message("acme", "devices/d1/b", b"3");
    platform.owner = None;
    store
        .write_retained(&[
            RetainedWrite::Set(platform),
            RetainedWrite::Delete {
                tenant_id: "acme".into(),
                topic: "devices/d1/a".into(),
            },
        ])
        .await?;
    assert_eq!(
        owners(store.load_retained("acme", now).await?),
        [
            ("commands/d1/desired".to_owned(), Some(credential)),
            ("devices/d1/b".to_owned(), None),
        ]
    );
    // An empty owner is no owner: refused rather than stored as one.
    let mut blank = message("acme", "devices/d1/c", b"x");
    blank.owner = Some(String::new());
    assert!(matches!(
        store.write_retained(&[RetainedWrite::Set(blank)]).await,
        Err(Error::InvalidDocument { .. })
    ));
    Ok(())
}

trait Micros {
    fn trunc_subsecs_micros(self) -> Self;
}

impl Micros for chrono::DateTime<Utc> {
    fn trunc_subsecs_micros(self) -> Self {
        chrono::SubsecRound::trunc_subsecs(self, 6)
    }
}

pub(crate) fn online(device: &str, at: chrono::DateTime<Utc>, node: &str) -> PresenceUpdate {
    PresenceUpdate {
        tenant_id: "acme".into(),
        device_id: device.into(),
        status: PresenceStatus::Online,
        at,
        connected_at: Some(at),
        remote_addr: Some("192.0.2.1:50000".into()),
        protocol: Some("5.0".into()),
        credential: Some("certificate".into()),
        disconnect_reason: None,
        node_id: Some(node.into()),
    }
}

fn offline(device: &str, at: chrono::DateTime<Utc>, reason: &str) -> PresenceUpdate {
    PresenceUpdate {
        status: PresenceStatus::Offline,
        connected_at: None,
        remote_addr: None,
        protocol: None,
        credential: None,
        disconnect_reason: Some(reason.into()),
        node_id: None,
        ..online(device, at, "")
    }
}

async fn presence_batches_and_status_filter(db: &TestDb) -> anyhow::Result<()> {
    let store = acme(db).await?;
    for d in ["a", "b", "c"] {
        store.create_device("acme", &NewDevice::new(d)).await?;
    }
    let t0 = chrono::SubsecRound::trunc_subsecs(Utc::now(), 6);
    let t1 = t0 + Duration::seconds(1);
    let t2 = t0 + Duration::seconds(2);
    let changed = store
        .update_presence(&[
            online("a", t0, "node-1"),
            online("b", t0, "node-1"),
            // Not a device (a service credential's client id): skipped.
            online("backend-1", t0, "node-1"),
            offline("b", t1, "keep alive timeout"),
        ])
        .await?;
    assert_eq!(changed, 2);
    let a = store.get_presence("acme", "a").await?.unwrap();
    assert_eq!(a.status, PresenceStatus::Online);
    assert_eq!(a.connected_at, Some(t0));
    assert_eq!(a.last_seen, t0);
    assert_eq!(a.protocol.as_deref(), Some("5.0"));
    assert_eq!(a.node_id.as_deref(), Some("node-1"));
    // b: connected, then went away; offline keeps where it came from.
    let b = store.get_presence("acme", "b").await?.unwrap();
    assert_eq!(b.status, PresenceStatus::Offline);
    assert_eq!(b.disconnected_at, Some(t1));
    assert_eq!(b.disconnect_reason.as_deref(), Some("keep alive timeout"));
    assert_eq!(
        b.remote_addr, None,
        "b's online was superseded in the batch"
    );
    assert!(store.get_presence("acme", "c").await?.is_none());

    let by_status = |presence| {
        let filter = DeviceFilter {
            presence: Some(presence),
            ..DeviceFilter::default()
        };
        device_ids(store, filter)
    };
    assert_eq!(by_status(PresenceStatus::Online).await?, ["a"]);
    assert_eq!(by_status(PresenceStatus::Offline).await?, ["b", "c"]);

    // A stale update (older than what is stored) does not roll back.
    store
        .update_presence(&[offline("a", t0 - Duration::seconds(5), "late")])
        .await?;
    assert_eq!(
        store.get_presence("acme", "a").await?.unwrap().status,
        PresenceStatus::Online
    );
    // Last seen moves forward while online; reconnecting clears the reason.
    let mut seen = online("a", t2, "node-1");
    seen.connected_at = None;
    store
        .update_presence(&[seen, online("b", t2, "node-2")])
        .await?;
    let a = store.get_presence("acme", "a").await?.unwrap();
    assert_eq!((a.last_seen, a.connected_at), (t2, Some(t0)));
    let b = store.get_presence("acme", "b").await?.unwrap();
    assert_eq!(
        (b.status, b.disconnect_reason, b.disconnected_at),
        (PresenceStatus::Online, None, None)
    );

    // After a crash of node-1, its devices are set offline; node-2's stay.
    assert_eq!(
        store
            .set_node_offline("node-1", t2, "node restarted")
            .await?,
        [("acme".to_owned(), "a".to_owned())]
    );
    assert_eq!(by_status(PresenceStatus::Online).await?, ["b"]);
    let a = store.get_presence("acme", "a").await?.unwrap();
    assert_eq!(a.disconnect_reason.as_deref(), Some("node restarted"));

    // Deleting the device deletes its presence.
    store.delete_device("acme", "a").await?;
    assert!(store.get_presence("acme", "a").await?.is_none());
    Ok(())
}

/// A batch larger than one statement's chunk (1,000 rows), with quotes,
/// backslashes and non-ASCII in its text columns, lands whole and byte
/// for byte.
async fn presence_batch_over_a_chunk_keeps_every_row_and_byte(db: &TestDb) -> anyhow::Result<()> {
    let store = acme(db).await?;
    let odd = "d.odd_1-";
    for d in ["first", odd, "last"] {
        store.create_device("acme", &NewDevice::new(d)).await?;
    }
    let at = chrono::SubsecRound::trunc_subsecs(Utc::now(), 6);
    let mut batch = vec![online("first", at, "node-1")];
    // Client ids that are no device: skipped, but they fill the chunks.
    batch.extend((0..1_500).map(|i| online(&format!("backend-{i}"), at, "node-1")));
    let mut strange = online(odd, at, "node-1");
    strange.remote_addr = Some("[2001:db8::1]:1883".into());
    strange.credential = Some("password ' OR 1=1 --".into());
    batch.push(strange);
    batch.push(offline("last", at, "it said \"bye\" \u{1F44B}"));
    assert_eq!(store.update_presence(&batch).await?, 3);

    let p = store.get_presence("acme", odd).await?.unwrap();
    assert_eq!(p.device_id, odd);
    assert_eq!(p.credential.as_deref(), Some("password ' OR 1=1 --"));
    assert_eq!(p.remote_addr.as_deref(), Some("[2001:db8::1]:1883"));
    assert_eq!((p.connected_at, p.last_seen), (Some(at), at));
    let last = store.get_presence("acme", "last").await?.unwrap();
    assert_eq!(last.status, PresenceStatus::Offline);
    assert_eq!(last.disconnected_at, Some(at));
    assert_eq!(
        last.disconnect_reason.as_deref(),
        Some("it said \"bye\" \u{1F44B}")
    );
    assert_eq!(
        store.get_presence("acme", "first").await?.unwrap().status,
        PresenceStatus::Online
    );
    Ok(())
}

async fn state_document_merge_versions_and_events(db: &TestDb) -> anyhow::Result<()> {
    let store = acme(db).await?;
    store.create_device("acme", &NewDevice::new("d1")).await?;
    let now = Utc::now();
    let empty = store.get_device_state("acme", "d1").await?;
    assert_eq!((empty.reported_version, empty.desired_version), (0, 0));
    assert_eq!(empty.reported, json!({}));

    let s = store
        .merge_reported("acme", "d1", &json!({"led": false, "temp": 20}), now)
        .await?;
    assert_eq!(
        (s.reported_version, s.reported.clone()),
        (1, json!({"led": false, "temp": 20}))
    );
    let s = store
        .merge_reported(
            "acme",
            "d1",
            &json!({"temp": null, "fan": {"speed": 1}}),
            now,
        )
        .await?;
    assert_eq!(s.reported, json!({"led": false, "fan": {"speed": 1}}));
    assert_eq!(s.reported_version, 2);

    let s = store
        .merge_desired("acme", "d1", &json!({"led": true}), Some(0), now, None)
        .await?;
    assert_eq!((s.desired_version, s.delta()), (1, json!({"led": true})));
    // If-Match on an old version: a typed conflict, nothing changes.
    match store
        .merge_desired("acme", "d1", &json!({"led": false}), Some(0), now, None)
        .await
    {
        Err(Error::VersionConflict {
            expected: 0,
            actual: 1,
            ..
        }) => {}
        other => panic!("expected a version conflict, got {other:?}"),
    }
    let s = store
        .merge_desired("acme", "d1", &json!({"fan": {"speed": 2}}), None, now, None)
        .await?;
    assert_eq!(s.desired, json!({"led": true, "fan": {"speed": 2}}));
    assert_eq!(s.delta(), json!({"led": true, "fan": {"speed": 2}}));

    // A non-JSON payload is recorded as an error; reported stays.
    let s = store
        .set_reported_error("acme", "d1", "payload is not a JSON object", now)
        .await?;
    assert_eq!(
        s.reported_error.as_deref(),
        Some("payload is not a JSON object")
    );
    assert_eq!(s.reported_version, 2);
    let s = store
        .merge_reported("acme", "d1", &json!({"led": true}), now)
        .await?;
    assert_eq!(s.reported_error, None);
    assert_eq!(s.delta(), json!({"fan": {"speed": 2}}));
    assert_eq!(store.get_device_state("acme", "d1").await?, s);

    // Patches are objects; unknown devices are NotFound.
    assert!(matches!(
        store.merge_reported("acme", "d1", &json!([1]), now).await,
        Err(Error::InvalidDocument { .. })
    ));
    assert!(matches!(
        store.merge_reported("acme", "nope", &json!({}), now).await,
        Err(Error::NotFound { kind: "device", .. })
    ));
    assert!(matches!(
        store.get_device_state("acme", "nope").await,
        Err(Error::NotFound { .. })
    ));

    // Concurrent merges: none is lost.
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .merge_reported("acme", "d1", &json!({ format!("k{i}"): i }), Utc::now())
                    .await
            })
        })
        .collect();
    for t in tasks {
        t.await??;
    }
    let s = store.get_device_state("acme", "d1").await?;
    assert_eq!(s.reported_version, 3 + 8);
    assert!((0..8).all(|i| s.reported[format!("k{i}")] == json!(i)));

    // Event sequence numbers: 1, 2, 3 per device.
    store.create_device("acme", &NewDevice::new("d2")).await?;
    assert_eq!(store.next_event_seq("acme", "d2").await?, 1);
    assert_eq!(store.next_event_seq("acme", "d2").await?, 2);
    assert_eq!(store.next_event_seq("acme", "d1").await?, 1);
    assert!(matches!(
        store.next_event_seq("acme", "nope").await,
        Err(Error::NotFound { .. })
    ));
    // Blocks of numbers continue the same counter.
    assert_eq!(store.reserve_event_seqs("acme", "d2", 5).await?, 7);
    assert_eq!(store.next_event_seq("acme", "d2").await?, 8);
    store.create_device("acme", &NewDevice::new("d3")).await?;
    assert_eq!(store.reserve_event_seqs("acme", "d3", 3).await?, 3);
    assert!(matches!(
        store.reserve_event_seqs("acme", "nope", 2).await,
        Err(Error::NotFound { .. })
    ));
    // Many devices at once, in two statements; a device without a state
    // row yet (d4) starts at its count, a client that is no device is None.
    store.create_device("acme", &NewDevice::new("d4")).await?;
    let counts = [
        ("acme".to_owned(), "d2".to_owned(), 2),
        ("acme".to_owned(), "ghost".to_owned(), 4),
        ("acme".to_owned(), "d4".to_owned(), 3),
        ("acme".to_owned(), "d3".to_owned(), 1),
    ];
    assert_eq!(
        store.reserve_event_seqs_batch(&counts).await?,
        [Some(10), None, Some(3), Some(4)]
    );
    assert_eq!(store.reserve_event_seqs_batch(&[]).await?, []);
    Ok(())
}

store::backend_tests!(
    retained_batches_upsert_delete_and_skip,
    retained_owner_is_kept_and_moves_on_replace,
    presence_batches_and_status_filter,
    presence_batch_over_a_chunk_keeps_every_row_and_byte,
    state_document_merge_versions_and_events
);
