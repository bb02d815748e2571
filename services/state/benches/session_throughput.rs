//! Persistent-session throughput through `DurableSessions` (issue 14), on
//! SQLite and (with TEST_DATABASE_URL) Postgres: how many QoS 1 messages a
//! second group commit makes durable for persistent sessions, and how long
//! a tenant's sessions take to load back.
//!
//! `cargo bench -p state --bench session_throughput` (add
//! `-- --sessions 1000 --messages 200 --fanout-publishers 4
//! --fanin-publishers 50 --fanin-messages 2000` to change the load). Not
//! criterion: one long run per phase is the measurement.
//!
//! Phases, each on a fresh database:
//! 1. fan-out: `--messages` QoS 1 messages, each queued for `--sessions`
//!    offline persistent sessions (one body, one row per session), from
//!    `--fanout-publishers` publishers each waiting for its ack; then the
//!    tenant is loaded back (every session, every queued delivery).
//! 2. fan-in: `--fanin-publishers` publishers × `--fanin-messages`
//!    messages of 64 bytes to one offline persistent session, each
//!    publisher waiting for its ack (as a QoS 1 PUBACK does); then loaded
//!    back.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use broker::TenantId;
use broker::session_store::{Disconnected, QueuedFor, SessionRecord, SessionStore, StoredMessage};
use bytes::Bytes;
use mqtt::{Properties, ProtocolVersion, QoS, TopicName};
use state::{DurableSessions, SessionStats, SessionsConfig};
use store::Backend;
use store::testing::TestDb;

struct Args {
    sessions: usize,
    messages: usize,
    fanout_publishers: usize,
    fanin_publishers: usize,
    fanin_messages: usize,
}

fn args() -> Args {
    let argv: Vec<String> = std::env::args().collect();
    let value = |name: &str, default: usize| {
        argv.iter()
            .position(|x| x == name)
            .and_then(|i| argv.get(i + 1))
            .map_or(default, |v| v.parse::<usize>().expect("a number"))
    };
    Args {
        sessions: value("--sessions", 1_000),
        messages: value("--messages", 200),
        fanout_publishers: value("--fanout-publishers", 4),
        fanin_publishers: value("--fanin-publishers", 50),
        fanin_messages: value("--fanin-messages", 2_000),
    }
}

fn tenant() -> TenantId {
    TenantId::parse("bench").unwrap()
}

async fn fresh(backend: Backend) -> Option<(TestDb, Arc<DurableSessions>)> {
    let db = common::fresh_db(backend).await?;
    let sessions = DurableSessions::start(db.store().clone(), SessionsConfig::new("bench-node"));
    Some((db, sessions))
}

/// `n` persistent sessions, connected and then offline.
async fn offline_sessions(sessions: &DurableSessions, n: usize) -> Vec<Arc<str>> {
    let ids: Vec<Arc<str>> = (0..n)
        .map(|i| Arc::from(format!("device-{i:05}")))
        .collect();
    let at = SystemTime::now();
    for id in &ids {
        let record = SessionRecord {
            client_id: id.clone(),
            owner: id.to_string(),
            protocol: ProtocolVersion::V5,
            expiry_interval: 86_400,
            will: None,
        };
        sessions.connect(&tenant(), &record, false);
        sessions.disconnect(
            &tenant(),
            id,
            &Disconnected {
                at,
                expires_at: Some(at + Duration::from_secs(86_400)),
                will_due_at: None,
            },
        );
    }
    sessions.flush().await.unwrap();
    ids
}

fn message(payload: Bytes) -> Arc<StoredMessage> {
    Arc::new(StoredMessage {
        topic: TopicName::parse("commands/all/update").unwrap(),
        payload,
        qos: QoS::AtLeastOnce,
        properties: Properties::default(),
        expires_at: None,
        id: None,
    })
}

fn report(
    phase: &str,
    backend: Backend,
    messages: usize,
    rows: usize,
    elapsed: Duration,
    before: SessionStats,
    after: SessionStats,
) {
    let secs = elapsed.as_secs_f64();
    let txns = after.transactions - before.transactions;
    println!(
        "{backend:8} {phase:8} messages {messages:>7}  queue rows {rows:>8}  txns {txns:>6}  \
         {:>9.0} msg/s  {:>9.0} rows/s  {:>7.1} msg/txn  total {secs:.2} s",
        messages as f64 / secs,
        rows as f64 / secs,
        messages as f64 / txns.max(1) as f64,
    );
}

async fn load(phase: &str, backend: Backend, sessions: &DurableSessions, rows: usize) {
    // A fresh instance: nothing buffered, everything from the database.
    let started = Instant::now();
    let loaded = sessions.load(&tenant()).await.unwrap();
    let elapsed = started.elapsed();
    let queued: usize = loaded.iter().map(|s| s.queue.len()).sum();
    assert_eq!(queued, rows, "every acknowledged delivery loads back");
    println!(
        "{backend:8} {phase:8} load: {} sessions, {queued} deliveries in {:.2} s ({:.0} deliveries/s)",
        loaded.len(),
        elapsed.as_secs_f64(),
        queued as f64 / elapsed.as_secs_f64(),
    );
}

/// Publishers each waiting for their ack, `total` messages between them,
/// each for `targets(seq)`.
async fn publish(
    sessions: &Arc<DurableSessions>,
    publishers: usize,
    total: usize,
    payload: Bytes,
    targets: Arc<dyn Fn(u64) -> Vec<QueuedFor> + Send + Sync>,
) -> Duration {
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..publishers {
        let (sessions, next, targets, payload) = (
            sessions.clone(),
            next.clone(),
            targets.clone(),
            payload.clone(),
        );
        tasks.push(tokio::spawn(async move {
            loop {
                let seq = next.fetch_add(1, Ordering::Relaxed);
                if seq >= total as u64 {
                    return;
                }
                let m = message(payload.clone());
                if let Some(ack) = sessions.enqueue(&tenant(), &m, &targets(seq)) {
                    ack.await.unwrap();
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    started.elapsed()
}

/// One measured phase: `publishers` tasks publish `messages`, which queue
/// `rows` deliveries.
struct Phase {
    name: &'static str,
    publishers: usize,
    messages: usize,
    rows: usize,
}

/// A QoS 1 delivery of message `seq` to the offline session `id`.
fn queued_for(id: &Arc<str>, seq: u64) -> QueuedFor {
    QueuedFor {
        client_id: id.clone(),
        seq,
        qos: QoS::AtLeastOnce,
        retain: false,
        subscription_ids: vec![],
        shared: None,
    }
}

/// Runs `phase` against `targets`, reports it, then loads the queued
/// deliveries back on a fresh instance.
async fn measure(
    backend: Backend,
    (db, sessions): (TestDb, Arc<DurableSessions>),
    phase: Phase,
    targets: Arc<dyn Fn(u64) -> Vec<QueuedFor> + Send + Sync>,
) {
    let before = sessions.stats();
    let payload = Bytes::from(vec![b'x'; 64]);
    let elapsed = publish(
        &sessions,
        phase.publishers,
        phase.messages,
        payload,
        targets,
    )
    .await;
    let after = sessions.stats();
    report(
        phase.name,
        backend,
        phase.messages,
        phase.rows,
        elapsed,
        before,
        after,
    );
    sessions.shutdown().await.unwrap();
    let reader = DurableSessions::start(db.store().clone(), SessionsConfig::new("bench-node"));
    load(phase.name, backend, &reader, phase.rows).await;
    reader.shutdown().await.unwrap();
    db.cleanup().await;
}

async fn fan_out(backend: Backend, a: &Args) {
    let Some((db, sessions)) = fresh(backend).await else {
        return;
    };
    let ids = offline_sessions(&sessions, a.sessions).await;
    let targets = Arc::new(move |seq: u64| ids.iter().map(|id| queued_for(id, seq)).collect());
    let phase = Phase {
        name: "fan-out",
        publishers: a.fanout_publishers,
        messages: a.messages,
        rows: a.messages * a.sessions,
    };
    measure(backend, (db, sessions), phase, targets).await;
}

async fn fan_in(backend: Backend, a: &Args) {
    let Some((db, sessions)) = fresh(backend).await else {
        return;
    };
    let id = offline_sessions(&sessions, 1).await.remove(0);
    let targets = Arc::new(move |seq: u64| vec![queued_for(&id, seq)]);
    let total = a.fanin_publishers * a.fanin_messages;
    let phase = Phase {
        name: "fan-in",
        publishers: a.fanin_publishers,
        messages: total,
        rows: total,
    };
    measure(backend, (db, sessions), phase, targets).await;
}

fn main() {
    let a = args();
    let rt = common::runtime();
    println!(
        "session throughput: fan-out {} messages x {} offline sessions ({} publishers); \
         fan-in {} publishers x {} messages of 64 B to one offline session",
        a.messages, a.sessions, a.fanout_publishers, a.fanin_publishers, a.fanin_messages
    );
    rt.block_on(async {
        for backend in [Backend::Sqlite, Backend::Postgres] {
            fan_out(backend, &a).await;
            fan_in(backend, &a).await;
        }
    });
}
