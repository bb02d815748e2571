//! Retained throughput: N devices (default 100,000) each updating one
//! retained topic, through `DurableRetained` into the database, on SQLite
//! and (with TEST_DATABASE_URL) Postgres. Reports rows written per second
//! and how far behind the database is (backlog and lag).
//!
//! `cargo bench -p state --bench retained_throughput` (add
//! `-- --devices 10000 --rounds 2` to change the load). Not criterion: one
//! long run per phase is the measurement, and its backlog over time is the
//! point.
//!
//! Phases, each on a fresh database:
//! 1. QoS 0 burst: every device updates its topic `rounds` times as fast as
//!    one task can hand changes over; the writer drains in batches.
//! 2. QoS 0 paced: the same updates spread over `--paced-secs` seconds, as a
//!    fleet reporting steadily would.
//! 3. QoS 1: `--concurrency` publishers, each waiting for its commit before
//!    its next update (group commit), one update per device.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use broker::{RetainedStore, StoredRetained, TenantId};
use bytes::Bytes;
use mqtt::{Properties, QoS, TopicName};
use state::{DurableRetained, RetainedConfig, RetainedStats};
use store::Backend;
use store::testing::TestDb;

struct Args {
    devices: usize,
    rounds: usize,
    paced_secs: u64,
    concurrency: usize,
}

fn args() -> Args {
    let mut a = Args {
        devices: 100_000,
        rounds: 3,
        paced_secs: 10,
        concurrency: 1_000,
    };
    let argv: Vec<String> = std::env::args().collect();
    let value = |name: &str| {
        argv.iter()
            .position(|x| x == name)
            .and_then(|i| argv.get(i + 1))
            .map(|v| v.parse::<usize>().expect("a number"))
    };
    a.devices = value("--devices").unwrap_or(a.devices);
    a.rounds = value("--rounds").unwrap_or(a.rounds);
    a.paced_secs = value("--paced-secs").map_or(a.paced_secs, |v| v as u64);
    a.concurrency = value("--concurrency").unwrap_or(a.concurrency);
    a
}

fn topics(n: usize) -> Vec<TopicName> {
    (0..n)
        .map(|d| TopicName::parse(format!("devices/dev-{d:06}/state")).unwrap())
        .collect()
}

fn message(topic: &TopicName, round: usize, qos: QoS) -> StoredRetained {
    StoredRetained {
        topic: topic.clone(),
        payload: Bytes::from(format!(
            "{{\"round\":{round},\"temp\":21.5,\"fw\":\"1.2.3\",\"ok\":true}}"
        )),
        qos,
        properties: Properties::default(),
        expires_at: None,
        owner: None,
    }
}

/// Samples the backlog every 100 ms until `done`; returns the worst.
fn sampler(
    retained: Arc<DurableRetained>,
) -> (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<(usize, Duration)>,
) {
    let (tx, mut rx) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(async move {
        let (mut backlog, mut lag) = (0, Duration::ZERO);
        loop {
            let s = retained.stats();
            backlog = backlog.max(s.backlog);
            lag = lag.max(s.lag);
            tokio::select! {
                _ = &mut rx => return (backlog, lag),
                () = tokio::time::sleep(Duration::from_millis(100)) => {}
            }
        }
    });
    (tx, task)
}

fn report(
    phase: &str,
    backend: Backend,
    elapsed: Duration,
    s: RetainedStats,
    worst: (usize, Duration),
) {
    let secs = elapsed.as_secs_f64();
    println!(
        "{backend:8} {phase:14} updates {:>8}  rows {:>8}  txns {:>6}  {:>9.0} rows/s  {:>9.0} updates/s  \
         max backlog {:>7} topics  max lag {:>6} ms  total {:.2} s",
        s.saves,
        s.rows_written,
        s.transactions,
        s.rows_written as f64 / secs,
        s.saves as f64 / secs,
        worst.0,
        worst.1.as_millis(),
        secs
    );
}

async fn qos0(backend: Backend, a: &Args, paced: bool) {
    let Some(db) = common::fresh_db(backend).await else {
        return;
    };
    let retained = DurableRetained::start(db.store().clone(), RetainedConfig::default());
    let tenant = TenantId::parse("bench").unwrap();
    let topics = topics(a.devices);
    let (stop, sampled) = sampler(retained.clone());
    let started = Instant::now();
    let total = a.devices * a.rounds;
    let per_tick = (total / (a.paced_secs as usize * 100)).max(1);
    let mut sent = 0;
    for round in 0..a.rounds {
        for t in &topics {
            retained.save(&tenant, t, Some(&message(t, round, QoS::AtMostOnce)), false);
            sent += 1;
            if paced && sent % per_tick == 0 {
                // 100 ticks a second.
                let due = started + Duration::from_millis((sent / per_tick * 10) as u64);
                tokio::time::sleep_until(due.into()).await;
            }
        }
    }
    retained.flush().await.unwrap();
    let elapsed = started.elapsed();
    let _ = stop.send(());
    let worst = sampled.await.unwrap();
    let name = if paced { "qos0-paced" } else { "qos0-burst" };
    report(name, backend, elapsed, retained.stats(), worst);
    check(&db, a.devices).await;
    retained.shutdown().await.unwrap();
    db.cleanup().await;
}

async fn qos1(backend: Backend, a: &Args) {
    let Some(db) = common::fresh_db(backend).await else {
        return;
    };
    let retained = DurableRetained::start(db.store().clone(), RetainedConfig::default());
    let topics = Arc::new(topics(a.devices));
    let (stop, sampled) = sampler(retained.clone());
    let started = Instant::now();
    let mut publishers = Vec::new();
    for p in 0..a.concurrency {
        let (retained, topics) = (retained.clone(), topics.clone());
        let concurrency = a.concurrency;
        publishers.push(tokio::spawn(async move {
            let tenant = TenantId::parse("bench").unwrap();
            for t in topics.iter().skip(p).step_by(concurrency) {
                let m = message(t, 0, QoS::AtLeastOnce);
                if let Some(durable) = retained.save(&tenant, t, Some(&m), true) {
                    durable.await.unwrap();
                }
            }
        }));
    }
    for p in publishers {
        p.await.unwrap();
    }
    let elapsed = started.elapsed();
    let _ = stop.send(());
    let worst = sampled.await.unwrap();
    report("qos1-group", backend, elapsed, retained.stats(), worst);
    check(&db, a.devices).await;
    retained.shutdown().await.unwrap();
    db.cleanup().await;
}

/// Every device's topic is in the database.
async fn check(db: &TestDb, devices: usize) {
    let rows = db
        .store()
        .load_retained("bench", chrono::DateTime::from(SystemTime::now()))
        .await
        .unwrap();
    assert_eq!(
        rows.len(),
        devices,
        "every device's retained message is stored"
    );
}

fn main() {
    let a = args();
    let rt = common::runtime();
    println!(
        "retained throughput: {} devices, {} rounds (QoS 0), paced over {} s, {} QoS 1 publishers",
        a.devices, a.rounds, a.paced_secs, a.concurrency
    );
    rt.block_on(async {
        for backend in [Backend::Sqlite, Backend::Postgres] {
            qos0(backend, &a, false).await;
            qos0(backend, &a, true).await;
            qos1(backend, &a).await;
        }
    });
}
