//! [`DurableRetained`]: the broker's [`RetainedStore`] on the database.
//!
//! The broker keeps every retained message in memory (its trie); this
//! type only makes them durable, through a coalescing write-behind buffer
//! drained by one writer task:
//!
//! - **QoS 0** changes are write-behind: a change waits at most
//!   [`RetainedConfig::flush_window`] in memory, and only the last change
//!   of a topic within that window is written. A crash (`kill -9`) loses at
//!   most the changes of one flush window (plus a flush in progress).
//! - **QoS 1/2** changes wake the writer at once and their PUBACK/PUBREC
//!   waits for the commit. Every change waiting when the writer starts a
//!   transaction goes into it, and changes arriving meanwhile go into the
//!   next one (group commit): many publishers share one commit, so
//!   throughput grows with load instead of one transaction per message.
//! - **Bounded, with back-pressure**: at most
//!   [`RetainedConfig::max_pending`] distinct topics wait, at most
//!   [`RetainedConfig::max_pending_per_tenant`] of one tenant (so one
//!   tenant's many topics never fill it for the others); changes not
//!   persisted are counted per tenant in
//!   `fleetmq_write_behind_dropped_total{buffer="retained",tenant}`. Coalescing means
//!   the buffer only grows with the number of *distinct* topics changed
//!   while the database is slow or down, never with the message rate.
//!   When it is full, a change to a topic already waiting still coalesces;
//!   a QoS 1/2 change to a new topic is refused (its PUBACK/PUBREC says
//!   0x83, or a v3.1.1 connection closes, so the client retries later); a
//!   QoS 0 change to a new topic stays in the broker's memory (subscribers
//!   still get it) but is not persisted, and is counted in
//!   [`RetainedStats::dropped`]. QoS 1/2 publishers are further slowed by
//!   the commit latency itself, since each waits for its own commit.
//! - A failed transaction fails the QoS 1/2 changes waiting on it (so no
//!   client is told "stored" when it is not) and puts every change back
//!   (unless a newer one for the topic arrived meanwhile), to be retried
//!   after [`RetainedConfig::retry_delay`].
//! - [`DurableRetained::shutdown`] flushes what is waiting and stops the
//!   writer; call it after the broker's listeners have stopped.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use broker::{Durability, RetainedStore, StoreError, StoredRetained, TenantId};
use chrono::Utc;
use mqtt::TopicName;
use store::{RetainedWrite, Store};
use tokio::time::Instant;
use tracing::{debug, warn};

use crate::writer::{Backlog, Buffer, Changes, Waiters, WriterTask};
use crate::{Error, codec};

/// How the write-behind buffer behaves; see the module docs.
#[derive(Debug, Clone)]
pub struct RetainedConfig {
    /// The longest a QoS 0 change waits in memory before it is written.
    pub flush_window: Duration,
    /// Start a transaction without waiting for the window once this many
    /// topics are waiting.
    pub flush_rows: usize,
    /// The most distinct topics that may wait.
    pub max_pending: usize,
    /// The most distinct topics of one tenant that may wait: one tenant
    /// changing many topics while the database is slow never fills the
    /// buffer for the others.
    pub max_pending_per_tenant: usize,
    /// The pause after a failed transaction before the next try.
    pub retry_delay: Duration,
}

impl Default for RetainedConfig {
    fn default() -> Self {
        Self {
            flush_window: Duration::from_millis(100),
            flush_rows: 10_000,
            max_pending: 1_000_000,
            max_pending_per_tenant: 100_000,
            retry_delay: Duration::from_secs(1),
        }
    }
}

/// Counters since start, and the backlog now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetainedStats {
    /// Changes the broker handed over.
    pub saves: u64,
    /// Rows inserted, replaced or deleted in the database.
    pub rows_written: u64,
    /// Committed transactions.
    pub transactions: u64,
    /// Transactions that failed (and were retried).
    pub failed_flushes: u64,
    /// QoS 0 changes not persisted (buffer full, or after shutdown).
    pub dropped: u64,
    /// Topics waiting to be written now (in the buffer or in the
    /// transaction being written).
    pub backlog: usize,
    /// How long the oldest change not yet committed has waited: how far
    /// behind the database is.
    pub lag: Duration,
}

type Key = (TenantId, TopicName);

/// The last change of each topic not yet written (`None`: delete), and
/// how many of them each tenant has.
#[derive(Default)]
struct RetainedChanges {
    writes: HashMap<Key, Option<StoredRetained>>,
    per_tenant: HashMap<TenantId, usize>,
}

impl Changes for RetainedChanges {
    type Config = RetainedConfig;
    type Counters = Counters;

    fn len(&self) -> usize {
        self.writes.len()
    }

    fn settled(backlog: &Backlog<Self>) -> bool {
        backlog.writes.is_empty()
    }

    fn due(backlog: &Backlog<Self>, config: &RetainedConfig) -> Option<Instant> {
        if !backlog.waiters.is_empty() || backlog.writes.len() >= config.flush_rows {
            return Some(Instant::now());
        }
        backlog.since.map(|since| since + config.flush_window)
    }

    fn retry_delay(config: &RetainedConfig) -> Duration {
        config.retry_delay
    }

    async fn write(shared: &Shared, changes: Self, waiters: Waiters) -> Result<(), Error> {
        write_batch(shared, changes.writes, waiters).await
    }

    // How the log and the errors name this buffer's changes.
    const WHAT: &'static str = "retained changes";
    const STOPPED: Error = Error::Stopped;
    const NOT_DURABLE: fn(String) -> Error = Error::NotDurable;
}

#[derive(Default)]
struct Counters {
    saves: AtomicU64,
    rows_written: AtomicU64,
    transactions: AtomicU64,
    failed_flushes: AtomicU64,
    dropped: AtomicU64,
}

type Shared = Buffer<RetainedChanges>;

/// Retained messages on the database, write-behind and coalesced; see the
/// module docs. Give it to `BrokerBuilder::retained_store`.
pub struct DurableRetained {
    shared: Arc<Shared>,
    writer: WriterTask,
}

impl std::fmt::Debug for DurableRetained {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DurableRetained")
            .field("config", &self.shared.config)
            .finish_non_exhaustive()
    }
}

impl DurableRetained {
    /// Starts the writer task (call inside a tokio runtime).
    pub fn start(store: Store, config: RetainedConfig) -> Arc<Self> {
        let (shared, writer) = Buffer::start(store, config);
        Arc::new(Self { shared, writer })
    }

    /// Waits until every change handed over before this call is committed
    /// (or its transaction failed).
    pub async fn flush(&self) -> Result<(), Error> {
        self.shared.flush().await
    }

    /// Writes what is waiting and stops the writer. Changes handed over
    /// afterwards are not persisted (QoS 1/2 ones are refused). Returns an
    /// error if the last transaction failed: those changes are lost.
    pub async fn shutdown(&self) -> Result<(), Error> {
        self.shared.shutdown(&self.writer).await
    }

    /// Counters and backlog.
    pub fn stats(&self) -> RetainedStats {
        let c = &self.shared.counters;
        let (backlog, lag) = self.shared.backlog();
        RetainedStats {
            saves: c.saves.load(Ordering::Relaxed),
            rows_written: c.rows_written.load(Ordering::Relaxed),
            transactions: c.transactions.load(Ordering::Relaxed),
            failed_flushes: c.failed_flushes.load(Ordering::Relaxed),
            dropped: c.dropped.load(Ordering::Relaxed),
            backlog,
            lag,
        }
    }

    /// A change that cannot be taken: refused for QoS 1/2, counted for 0.
    fn refuse(&self, tenant: &TenantId, durable: bool, why: Error) -> Option<Durability> {
        metrics::counter!("fleetmq_write_behind_dropped_total",
            "buffer" => "retained", "tenant" => tenant.as_str().to_owned())
        .increment(1);
        if durable {
            let e = StoreError::from(&why);
            return Some(Box::pin(async move { Err(e) }));
        }
        let dropped = self.shared.counters.dropped.fetch_add(1, Ordering::Relaxed) + 1;
        // Logged on 1, 2, 4, 8, …: visible without flooding the log.
        if dropped.is_power_of_two() {
            warn!(error = %why, dropped, "retained change kept in memory only");
        }
        None
    }
}

#[async_trait]
impl RetainedStore for DurableRetained {
    async fn load(&self, tenant: &TenantId) -> Result<Vec<StoredRetained>, StoreError> {
        let rows = self
            .shared
            .store
            .load_retained(tenant.as_str(), Utc::now())
            .await
            .map_err(|e| StoreError::from(&Error::from(e)))?;
        let mut by_topic = BTreeMap::new();
        for row in rows {
            match codec::from_row(row) {
                Ok(m) => {
                    by_topic.insert(m.topic.clone(), m);
                }
                // One bad row must not make the whole tenant unusable.
                Err(e) => warn!(tenant = %tenant, error = %e, "retained message skipped"),
            }
        }
        // Changes not written yet are newer than the database.
        for ((t, topic), change) in &self.shared.pending().writes {
            if t != tenant {
                continue;
            }
            match change {
                Some(m) => by_topic.insert(topic.clone(), m.clone()),
                None => by_topic.remove(topic),
            };
        }
        let now = SystemTime::now();
        Ok(by_topic
            .into_values()
            .filter(|m| !m.is_expired(now))
            .collect())
    }

    fn save(
        &self,
        tenant: &TenantId,
        topic: &TopicName,
        message: Option<&StoredRetained>,
        durable: bool,
    ) -> Option<Durability> {
        let shared = &self.shared;
        shared.counters.saves.fetch_add(1, Ordering::Relaxed);
        let mut p = shared.pending();
        if p.closed {
            drop(p);
            return self.refuse(tenant, durable, Error::Stopped);
        }
        let key = (tenant.clone(), topic.clone());
        if !p.writes.contains_key(&key) {
            let capacity = shared.config.max_pending;
            let per_tenant = shared.config.max_pending_per_tenant;
            let held = p.per_tenant.get(tenant).copied().unwrap_or(0);
            if p.writes.len() >= capacity || held >= per_tenant {
                drop(p);
                let capacity = capacity.min(per_tenant);
                return self.refuse(tenant, durable, Error::BufferFull { capacity });
            }
            *p.per_tenant.entry(tenant.clone()).or_default() += 1;
        }
        p.writes.insert(key, message.cloned());
        let first = p.since.is_none();
        if first {
            p.since = Some(Instant::now());
        }
        let waiter = durable.then(|| p.waiters.push());
        let wake = durable || first || p.writes.len() >= shared.config.flush_rows;
        drop(p);
        if wake {
            shared.wake.notify_one();
        }
        waiter.map(|w| w.into_durability(StoreError::from(&Error::Stopped)))
    }
}

async fn write_batch(
    shared: &Shared,
    writes: HashMap<Key, Option<StoredRetained>>,
    waiters: Waiters,
) -> Result<(), Error> {
    if writes.is_empty() {
        waiters.resolve(&Ok(()));
        return Ok(());
    }
    let (now, wall) = (Utc::now(), SystemTime::now());
    let batch: Vec<RetainedWrite> = writes
        .iter()
        .map(|((tenant, topic), change)| match change {
            // 3.3.2.3.3: one that expired while waiting is as good as gone.
            Some(m) if !m.is_expired(wall) => {
                RetainedWrite::Set(codec::to_row(tenant.as_str(), m, now))
            }
            _ => RetainedWrite::Delete {
                tenant_id: tenant.as_str().to_owned(),
                topic: topic.as_str().to_owned(),
            },
        })
        .collect();
    let started = Instant::now();
    match shared.store.write_retained(&batch).await {
        Ok(count) => {
            let c = &shared.counters;
            c.rows_written
                .fetch_add(count.upserted + count.deleted, Ordering::Relaxed);
            c.transactions.fetch_add(1, Ordering::Relaxed);
            debug!(
                rows = batch.len(),
                waiters = waiters.len(),
                elapsed_ms = started.elapsed().as_millis(),
                "retained changes committed"
            );
            waiters.resolve(&Ok(()));
            Ok(())
        }
        Err(e) => {
            let e = Error::from(e);
            warn!(error = %e, rows = batch.len(), "retained changes not committed; will retry");
            shared
                .counters
                .failed_flushes
                .fetch_add(1, Ordering::Relaxed);
            waiters.resolve(&Err(StoreError::from(&e)));
            let mut p = shared.pending();
            let c = &mut p.changes;
            for (key, change) in writes {
                // A newer change of the topic arrived meanwhile: it wins.
                if let std::collections::hash_map::Entry::Vacant(slot) = c.writes.entry(key) {
                    *c.per_tenant.entry(slot.key().0.clone()).or_default() += 1;
                    slot.insert(change);
                }
            }
            // Still as far behind as the oldest change put back.
            p.since = Some(p.in_flight_since.or(p.since).unwrap_or_else(Instant::now));
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use chrono::DateTime;
    use mqtt::{Properties, QoS};
    use store::testing::TestDb;

    fn tenant() -> TenantId {
        TenantId::parse("acme").unwrap()
    }

    fn message(topic: &str, payload: &str, expires_at: Option<SystemTime>) -> StoredRetained {
        StoredRetained {
            topic: TopicName::parse(topic).unwrap(),
            payload: Bytes::from(payload.to_owned()),
            qos: QoS::AtMostOnce,
            properties: Properties::default(),
            expires_at,
            owner: Some(Arc::from("d1")),
        }
    }

    async fn setup(config: RetainedConfig) -> (TestDb, Arc<DurableRetained>) {
        let db = crate::test_support::acme(&[]).await;
        let retained = DurableRetained::start(db.store().clone(), config);
        (db, retained)
    }

    /// A window of an hour: nothing is written in a test unless it is
    /// flushed or waited for (QoS 1).
    fn hour_window() -> RetainedConfig {
        RetainedConfig {
            flush_window: Duration::from_secs(3600),
            ..RetainedConfig::default()
        }
    }

    /// Stops the writer, which must have lost nothing, and drops the
    /// database.
    async fn teardown(db: TestDb, retained: Arc<DurableRetained>) {
        retained.shutdown().await.unwrap();
        db.cleanup().await;
    }

    fn save(r: &DurableRetained, m: &StoredRetained, durable: bool) -> Option<Durability> {
        r.save(&tenant(), &m.topic, Some(m), durable)
    }

    /// What the database holds for the tenant now.
    async fn stored(db: &TestDb) -> Vec<store::RetainedMessage> {
        db.store().load_retained("acme", Utc::now()).await.unwrap()
    }

    #[tokio::test]
    async fn qos0_changes_coalesce_per_topic() {
        let (db, retained) = setup(hour_window()).await;
        for i in 0..1_000 {
            let m = message(&format!("devices/d{}/state", i % 10), &i.to_string(), None);
            assert!(save(&retained, &m, false).is_none());
        }
        // Not yet written (the window is an hour), but load sees them.
        assert_eq!(retained.stats().backlog, 10);
        assert_eq!(retained.load(&tenant()).await.unwrap().len(), 10);
        retained.flush().await.unwrap();
        let stats = retained.stats();
        assert_eq!(
            (stats.saves, stats.rows_written, stats.transactions),
            (1_000, 10, 1)
        );
        assert_eq!(stats.backlog, 0);
        let rows = stored(&db).await;
        let d3 = rows.iter().find(|r| r.topic == "devices/d3/state").unwrap();
        assert_eq!(d3.payload, b"993");
        teardown(db, retained).await;
    }

    #[tokio::test]
    async fn qos1_completes_only_once_committed_and_deletes_persist() {
        let (db, retained) = setup(hour_window()).await;
        let m = message("devices/d1/state", "on", None);
        let durable = save(&retained, &m, true).expect("QoS 1 waits");
        durable.await.unwrap();
        // Committed, though the window has an hour to go.
        let rows = stored(&db).await;
        assert_eq!(rows.len(), 1);
        let gone = retained.save(&tenant(), &m.topic, None, true).unwrap();
        gone.await.unwrap();
        assert!(stored(&db).await.is_empty());
        teardown(db, retained).await;
    }

    /// The publisher is persisted on both paths (write-behind and group
    /// commit); of coalesced changes the last publisher wins, and a load
    /// before the flush sees it too.
    #[tokio::test]
    async fn the_owner_is_persisted_and_the_last_change_s_owner_wins() {
        let (db, retained) = setup(hour_window()).await;
        let by = |topic: &str, owner: Option<&str>| StoredRetained {
            owner: owner.map(Arc::from),
            ..message(topic, "x", None)
        };
        // QoS 0, coalesced: d1's change then the credential's.
        save(&retained, &by("devices/d1/a", Some("d1")), false);
        save(&retained, &by("devices/d1/a", Some("backend")), false);
        save(&retained, &by("devices/d1/b", None), false);
        let owners = |v: Vec<StoredRetained>| {
            v.into_iter()
                .map(|m| m.owner.map(|o| o.to_string()))
                .collect::<Vec<_>>()
        };
        let want = [Some("backend".to_owned()), None];
        assert_eq!(owners(retained.load(&tenant()).await.unwrap()), want);
        retained.flush().await.unwrap();
        assert_eq!(owners(retained.load(&tenant()).await.unwrap()), want);
        // QoS 1 (group commit): committed with its owner before it resolves.
        save(&retained, &by("devices/d1/b", Some("d1")), true)
            .expect("QoS 1 waits")
            .await
            .unwrap();
        let rows = stored(&db).await;
        let rows: Vec<_> = rows.iter().map(|r| r.owner.as_deref()).collect();
        assert_eq!(rows, [Some("backend"), Some("d1")]);
        teardown(db, retained).await;
    }

    #[tokio::test]
    async fn expired_messages_are_never_returned_nor_kept() {
        let (db, retained) = setup(RetainedConfig::default()).await;
        let past = SystemTime::now() - Duration::from_secs(1);
        let soon = SystemTime::now() + Duration::from_millis(300);
        let later = SystemTime::now() + Duration::from_secs(3600);
        save(&retained, &message("a", "old", Some(past)), false);
        save(&retained, &message("b", "soon", Some(soon)), false);
        save(&retained, &message("c", "later", Some(later)), false);
        let topics = |v: Vec<StoredRetained>| {
            v.into_iter()
                .map(|m| m.topic.as_str().to_owned())
                .collect::<Vec<_>>()
        };
        assert_eq!(topics(retained.load(&tenant()).await.unwrap()), ["b", "c"]);
        retained.flush().await.unwrap();
        // Written as a delete: never in the database.
        let rows = stored(&db).await;
        assert_eq!(rows.len(), 2);
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(topics(retained.load(&tenant()).await.unwrap()), ["c"]);
        let c = retained.load(&tenant()).await.unwrap().remove(0);
        assert_eq!(
            c.expires_at.map(DateTime::<Utc>::from),
            Some(DateTime::<Utc>::from(later).trunc_micros())
        );
        teardown(db, retained).await;
    }

    trait TruncMicros {
        fn trunc_micros(self) -> Self;
    }

    impl TruncMicros for DateTime<Utc> {
        fn trunc_micros(self) -> Self {
            chrono::SubsecRound::trunc_subsecs(self, 6)
        }
    }

    #[tokio::test]
    async fn a_full_buffer_refuses_qos1_and_counts_qos0() {
        let (db, retained) = setup(RetainedConfig {
            max_pending: 2,
            ..hour_window()
        })
        .await;
        save(&retained, &message("a", "1", None), false);
        save(&retained, &message("b", "1", None), false);
        // A topic already waiting still coalesces.
        assert!(save(&retained, &message("a", "2", None), false).is_none());
        assert!(save(&retained, &message("c", "1", None), false).is_none());
        assert_eq!(retained.stats().dropped, 1);
        let refused = save(&retained, &message("d", "1", None), true).unwrap();
        assert!(refused.await.unwrap_err().0.contains("buffer full"));
        retained.shutdown().await.unwrap();
        // After shutdown: nothing is taken.
        let late = save(&retained, &message("a", "3", None), true).unwrap();
        assert!(late.await.is_err());
        assert_eq!(stored(&db).await.len(), 2);
        db.cleanup().await;
    }

    #[tokio::test]
    async fn a_failed_commit_fails_its_waiters_and_keeps_the_changes() {
        let (db, retained) = setup(RetainedConfig {
            retry_delay: Duration::from_millis(50),
            ..RetainedConfig::default()
        })
        .await;
        // The database goes away.
        db.store().close().await;
        let m = message("devices/d1/state", "on", None);
        let e = save(&retained, &m, true).unwrap().await.unwrap_err();
        assert!(
            e.0.contains("not durable") || e.0.contains("database"),
            "{e}"
        );
        assert!(retained.stats().failed_flushes >= 1);
        assert_eq!(retained.stats().backlog, 1, "kept for a retry");
        assert!(retained.shutdown().await.is_err(), "reports the loss");
        db.cleanup().await;
    }
}
