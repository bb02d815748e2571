//! [`DurableSessions`]: the broker's [`SessionStore`] on the database
//! (issue 14; design in `services/state/sessions.md`).
//!
//! Every change is handed over without blocking and buffered, coalesced
//! per session ([`batch`]), and one writer task commits the buffer in one
//! transaction ([`store::Store::write_sessions`]):
//!
//! - **Group commit**: a change the broker must wait for (a QoS 1/2
//!   message queued for persistent sessions, a subscription, a connect,
//!   an incoming QoS 2 id, a QoS 2 delivery's state) wakes the writer at
//!   once and resolves its [`Durability`] when its transaction commits.
//!   Everything waiting when a transaction starts goes into it, and what
//!   arrives meanwhile into the next, so many publishers share a commit
//!   and throughput grows with load.
//! - **Write-behind**: the other changes (disconnects, wills published,
//!   QoS 1 deliveries sent and acknowledged) wait at most
//!   [`SessionsConfig::flush_window`], and a delivery acknowledged within
//!   one window is never written at all.
//! - **One body per message**: a message queued for many sessions is one
//!   row, referenced by one queue row per session, all in one statement.
//! - **Bounded**: at most [`SessionsConfig::max_pending`] changes wait;
//!   past that, queuing a message is refused (the publisher's PUBACK /
//!   PUBREC says 0x83, a v3.1.1 connection closes) while the changes that
//!   only follow existing state (acknowledgements, disconnects) are
//!   always taken.
//! - A failed transaction fails its waiters (nothing is acknowledged that
//!   is not durable) and is put back under the newer changes, to be retried
//!   after [`SessionsConfig::retry_delay`].
//! - [`DurableSessions::shutdown`] flushes and stops the writer; call it
//!   after the broker's listeners have stopped. After a crash,
//!   [`DurableSessions::recover`] releases the sessions this node had
//!   connected, before the broker serves again.

mod batch;
mod codec;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use broker::session_store::{
    DeliveryState, Disconnected, QueuedFor, SessionRecord, SessionStore, StoredDelivery,
    StoredMessage, StoredSession, StoredSubscription, not_durable,
};
use broker::{Durability, StoreError, TenantId};
use chrono::Utc;
use mqtt::{PacketId, QoS, TopicFilter};
use store::{MAX_SESSION_CLIENT_ID_BYTES, SessionMessageId, Store};
use tokio::time::Instant;
use tracing::{debug, error, warn};

use self::batch::{Batch, PendingBody};
use crate::Error;
use crate::writer::{Backlog, Buffer, Changes, Waiters, WriterTask};

/// How the session buffer behaves; see the module docs.
#[derive(Debug, Clone)]
pub struct SessionsConfig {
    /// This node's name, stored with the sessions it serves.
    pub node_id: String,
    /// The longest a write-behind change waits in memory.
    pub flush_window: Duration,
    /// Start a transaction without waiting for the window once this many
    /// changes wait.
    pub flush_changes: usize,
    /// The most changes that may wait before messages are refused.
    pub max_pending: usize,
    /// The pause after a failed transaction before the next try.
    pub retry_delay: Duration,
    /// Queue rows read per query when a tenant is loaded.
    pub load_page: u32,
}

impl SessionsConfig {
    /// The defaults, for node `node_id`.
    pub fn new(node_id: impl Into<String>) -> Self {
        Self {
            node_id: node_id.into(),
            flush_window: Duration::from_millis(100),
            flush_changes: 10_000,
            max_pending: 1_000_000,
            retry_delay: Duration::from_secs(1),
            load_page: 5_000,
        }
    }
}

/// Counters since start, and the backlog now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SessionStats {
    /// Changes the broker handed over.
    pub changes: u64,
    /// Rows written in the database.
    pub rows_written: u64,
    /// Committed transactions.
    pub transactions: u64,
    /// Transactions that failed (and were retried).
    pub failed_flushes: u64,
    /// Messages refused because the buffer was full.
    pub refused: u64,
    /// Write-behind changes lost because they came after shutdown.
    pub dropped: u64,
    /// Changes waiting now (in the buffer or the transaction being written).
    pub backlog: usize,
    /// How long the oldest change not yet committed has waited.
    pub lag: Duration,
}

impl Changes for Batch {
    type Config = SessionsConfig;
    type Counters = Counters;

    fn len(&self) -> usize {
        self.changes
    }

    fn settled(backlog: &Backlog<Self>) -> bool {
        backlog.is_empty() && backlog.in_flight == 0
    }

    fn due(backlog: &Backlog<Self>, config: &SessionsConfig) -> Option<Instant> {
        if !backlog.waiters.is_empty() || backlog.changes.changes >= config.flush_changes {
            return Some(Instant::now());
        }
        backlog.since.map(|since| since + config.flush_window)
    }

    fn retry_delay(config: &SessionsConfig) -> Duration {
        config.retry_delay
    }

    async fn write(shared: &Shared, batch: Self, waiters: Waiters) -> Result<(), Error> {
        shared.write(batch, waiters).await
    }

    // How the log and the errors name this buffer's changes.
    const WHAT: &'static str = "session changes";
    const STOPPED: Error = Error::SessionsStopped;
    const NOT_DURABLE: fn(String) -> Error = Error::SessionsNotDurable;
}

#[derive(Default)]
pub(crate) struct Counters {
    changes: AtomicU64,
    rows_written: AtomicU64,
    transactions: AtomicU64,
    failed_flushes: AtomicU64,
    refused: AtomicU64,
    dropped: AtomicU64,
}

type Shared = Buffer<Batch>;

/// Whether a change waits for its commit.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Commit {
    /// The caller waits: wake the writer now.
    Now,
    /// Write-behind.
    Behind,
}

/// Persistent sessions on the database; see the module docs. Give it to
/// the broker as its session store.
pub struct DurableSessions {
    shared: Arc<Shared>,
    writer: WriterTask,
}

impl std::fmt::Debug for DurableSessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DurableSessions")
            .field("config", &self.shared.config)
            .finish_non_exhaustive()
    }
}

/// A client id the store can key a session by (see the migration).
fn storable(client_id: &str) -> bool {
    !client_id.is_empty() && client_id.len() <= MAX_SESSION_CLIENT_ID_BYTES
}

fn store_error(e: &Error) -> StoreError {
    StoreError::from(e)
}

impl DurableSessions {
    /// Starts the writer task (call inside a tokio runtime).
    pub fn start(store: Store, config: SessionsConfig) -> Arc<Self> {
        let (shared, writer) = Buffer::start(store, config);
        Arc::new(Self { shared, writer })
    }

    /// After a crash: the sessions this node had connected are offline as
    /// of now (deadlines start, wills fall due). Call before serving.
    /// Returns how many.
    pub async fn recover(&self) -> Result<u64, Error> {
        let node = &self.shared.config.node_id;
        Ok(self
            .shared
            .store
            .release_node_sessions(node, Utc::now())
            .await?)
    }

    /// Waits until every change handed over before this call is committed
    /// (or its transaction failed).
    pub async fn flush(&self) -> Result<(), Error> {
        self.shared.flush().await
    }

    /// Writes what is waiting and stops the writer. Returns an error if
    /// the last transaction failed: those changes are lost.
    pub async fn shutdown(&self) -> Result<(), Error> {
        self.shared.shutdown(&self.writer).await
    }

    /// Counters and backlog.
    pub fn stats(&self) -> SessionStats {
        let c = &self.shared.counters;
        let (backlog, lag) = self.shared.backlog();
        SessionStats {
            changes: c.changes.load(Ordering::Relaxed),
            rows_written: c.rows_written.load(Ordering::Relaxed),
            transactions: c.transactions.load(Ordering::Relaxed),
            failed_flushes: c.failed_flushes.load(Ordering::Relaxed),
            refused: c.refused.load(Ordering::Relaxed),
            dropped: c.dropped.load(Ordering::Relaxed),
            backlog,
            lag,
        }
    }

    /// [`Self::record`] of a change to `client_id`'s session that cannot
    /// be refused; nothing for a client id the store cannot key (that
    /// session lives in memory only).
    fn record_for(
        &self,
        client_id: &str,
        commit: Commit,
        change: impl FnOnce(&mut Batch),
    ) -> Option<Durability> {
        if !storable(client_id) {
            return None;
        }
        self.record(commit, false, change)
    }

    /// Hands one change over. `refusable` changes (new messages) are
    /// refused when the buffer is full; the rest follow state the broker
    /// already holds and are always taken.
    fn record(
        &self,
        commit: Commit,
        refusable: bool,
        change: impl FnOnce(&mut Batch),
    ) -> Option<Durability> {
        let shared = &self.shared;
        shared.counters.changes.fetch_add(1, Ordering::Relaxed);
        let mut p = shared.pending();
        if p.closed {
            drop(p);
            if commit == Commit::Behind {
                shared.counters.dropped.fetch_add(1, Ordering::Relaxed);
                return None;
            }
            return Some(not_durable(Error::SessionsStopped.to_string()));
        }
        let capacity = shared.config.max_pending;
        if refusable && p.changes.changes + p.in_flight >= capacity {
            drop(p);
            let refused = shared.counters.refused.fetch_add(1, Ordering::Relaxed) + 1;
            // Logged on 1, 2, 4, 8, …: visible without flooding the log.
            if refused.is_power_of_two() {
                warn!(
                    capacity,
                    refused, "session write buffer full; messages refused"
                );
            }
            return Some(not_durable(
                Error::SessionBufferFull { capacity }.to_string(),
            ));
        }
        change(&mut p.changes);
        let first = p.since.is_none();
        if first {
            p.since = Some(Instant::now());
        }
        let waiter = (commit == Commit::Now).then(|| p.waiters.push());
        let wake = waiter.is_some() || first || p.changes.changes >= shared.config.flush_changes;
        drop(p);
        if wake {
            shared.wake.notify_one();
        }
        waiter.map(|w| w.into_durability(store_error(&Error::SessionsStopped)))
    }
}

impl Shared {
    async fn write(&self, batch: Batch, waiters: Waiters) -> Result<(), Error> {
        if batch.is_empty() {
            waiters.resolve(&Ok(()));
            return Ok(());
        }
        let writes = codec::writes(&batch, &self.config.node_id);
        let started = Instant::now();
        match self.store.write_sessions(&writes).await {
            Ok(count) => {
                let c = &self.counters;
                c.rows_written.fetch_add(count.rows(), Ordering::Relaxed);
                c.transactions.fetch_add(1, Ordering::Relaxed);
                debug!(
                    changes = batch.changes,
                    rows = count.rows(),
                    waiters = waiters.len(),
                    elapsed_ms = started.elapsed().as_millis(),
                    "session changes committed"
                );
                waiters.resolve(&Ok(()));
                Ok(())
            }
            Err(e) => {
                let retry = !matches!(e, store::Error::InvalidDocument { .. });
                let e = Error::SessionsNotDurable(e.to_string());
                self.counters.failed_flushes.fetch_add(1, Ordering::Relaxed);
                if retry {
                    warn!(error = %e, changes = batch.changes, "session changes not committed; will retry");
                    let mut p = self.pending();
                    let newer = std::mem::take(&mut p.changes);
                    let mut older = batch;
                    older.absorb(newer);
                    p.changes = older;
                    p.since = Some(p.in_flight_since.or(p.since).unwrap_or_else(Instant::now));
                } else {
                    // A change the database refuses would fail every retry
                    // and everyone behind it: dropped, loudly.
                    error!(error = %e, changes = batch.changes, "session changes refused; dropped");
                }
                waiters.resolve(&Err(store_error(&e)));
                Err(e)
            }
        }
    }
}

impl DurableSessions {
    /// `rows` with their queued deliveries, read page by page.
    async fn with_queues(
        &self,
        tenant: &TenantId,
        rows: Vec<store::StoredSession>,
    ) -> Result<Vec<StoredSession>, StoreError> {
        let store = &self.shared.store;
        let failed = |e: store::Error| store_error(&Error::from(e));
        // Bodies shared by many sessions are read once per page and held
        // once in memory.
        let mut bodies: HashMap<SessionMessageId, Arc<StoredMessage>> = HashMap::new();
        let mut queues: HashMap<String, Vec<StoredDelivery>> = HashMap::new();
        for row in rows.iter().filter(|s| s.queued > 0) {
            let client = &row.record.client_id;
            let mut after = None;
            loop {
                let page = store
                    .session_queue(tenant.as_str(), client, after, self.shared.config.load_page)
                    .await
                    .map_err(failed)?;
                for m in page.messages {
                    let id = m.id;
                    match codec::message_from_row(m) {
                        Ok(m) => {
                            bodies.entry(id).or_insert_with(|| Arc::new(m));
                        }
                        // One bad row must not make the whole tenant unusable.
                        Err(reason) => warn!(tenant = %tenant, reason, "queued message skipped"),
                    }
                }
                let queue = queues.entry(client.clone()).or_default();
                for entry in page.entries {
                    let Some(m) = bodies.get(&entry.message_id) else {
                        continue;
                    };
                    match codec::delivery_from_row(entry, m.clone()) {
                        Ok(d) => queue.push(d),
                        Err(reason) => {
                            warn!(tenant = %tenant, client_id = %client, reason, "queued delivery skipped");
                        }
                    }
                }
                after = page.next;
                if after.is_none() {
                    break;
                }
            }
        }
        let mut sessions = Vec::with_capacity(rows.len());
        for row in rows {
            let client = row.record.client_id.clone();
            let queue = queues.remove(&client).unwrap_or_default();
            match codec::session_from_row(row, queue) {
                Ok(s) => sessions.push(s),
                Err(reason) => {
                    warn!(tenant = %tenant, client_id = %client, reason, "stored session skipped");
                }
            }
        }
        Ok(sessions)
    }
}

#[async_trait]
impl SessionStore for DurableSessions {
    async fn load(&self, tenant: &TenantId) -> Result<Vec<StoredSession>, StoreError> {
        // Changes still buffered are newer than the database.
        self.flush().await.map_err(|e| store_error(&e))?;
        let store = &self.shared.store;
        let rows = store
            .load_sessions(tenant.as_str())
            .await
            .map_err(|e| store_error(&Error::from(e)))?;
        self.with_queues(tenant, rows).await
    }

    async fn load_session(
        &self,
        tenant: &TenantId,
        client_id: &str,
    ) -> Result<Option<StoredSession>, StoreError> {
        if !storable(client_id) {
            return Ok(None);
        }
        self.flush().await.map_err(|e| store_error(&e))?;
        let row = self
            .shared
            .store
            .load_session(tenant.as_str(), client_id)
            .await
            .map_err(|e| store_error(&Error::from(e)))?;
        Ok(self
            .with_queues(tenant, row.into_iter().collect())
            .await?
            .pop())
    }

    async fn flush(&self) -> Result<(), StoreError> {
        DurableSessions::flush(self)
            .await
            .map_err(|e| store_error(&e))
    }

    fn connect(
        &self,
        tenant: &TenantId,
        session: &SessionRecord,
        clean_start: bool,
    ) -> Option<Durability> {
        if !storable(&session.client_id) || !storable(&session.owner) {
            return Some(not_durable(format!(
                "a persistent session's client id and owner are at most \
                 {MAX_SESSION_CLIENT_ID_BYTES} bytes"
            )));
        }
        let at = SystemTime::now();
        self.record(Commit::Now, false, |b| {
            b.connect(tenant, session, clean_start, at);
        })
    }

    fn disconnect(&self, tenant: &TenantId, client_id: &str, d: &Disconnected) {
        self.record_for(client_id, Commit::Behind, |b| {
            b.disconnect(tenant, client_id, d)
        });
    }

    fn will_done(&self, tenant: &TenantId, client_id: &str) {
        self.record_for(client_id, Commit::Behind, |b| {
            b.will_done(tenant, client_id)
        });
    }

    fn end(&self, tenant: &TenantId, client_id: &str) -> Option<Durability> {
        self.record_for(client_id, Commit::Now, |b| b.end(tenant, client_id))
    }

    fn subscription(
        &self,
        tenant: &TenantId,
        client_id: &str,
        filter: &TopicFilter,
        subscription: Option<&StoredSubscription>,
    ) -> Option<Durability> {
        self.record_for(client_id, Commit::Now, |b| {
            b.subscription(tenant, client_id, filter, subscription);
        })
    }

    fn enqueue(
        &self,
        tenant: &TenantId,
        message: &Arc<StoredMessage>,
        targets: &[QueuedFor],
    ) -> Option<Durability> {
        // QoS 0 is never stored (not for offline sessions either).
        let targets: Vec<&QueuedFor> = targets
            .iter()
            .filter(|t| t.qos != QoS::AtMostOnce && storable(&t.client_id))
            .filter(|t| i64::try_from(t.seq).is_ok())
            .collect();
        if targets.is_empty() || message.qos == QoS::AtMostOnce {
            return None;
        }
        let body = Arc::new(PendingBody {
            id: SessionMessageId::new(),
            message: message.clone(),
            at: SystemTime::now(),
        });
        self.record(Commit::Now, true, |b| b.enqueue(tenant, &body, &targets))
    }

    fn delivery_state(
        &self,
        tenant: &TenantId,
        client_id: &str,
        seq: u64,
        state: DeliveryState,
        durable: bool,
    ) -> Option<Durability> {
        let commit = if durable { Commit::Now } else { Commit::Behind };
        self.record_for(client_id, commit, |b| {
            b.delivery_state(tenant, client_id, seq, state);
        })
    }

    fn delivered(&self, tenant: &TenantId, client_id: &str, seq: u64) {
        self.record_for(client_id, Commit::Behind, |b| {
            b.delivered(tenant, client_id, seq)
        });
    }

    fn completed(&self, tenant: &TenantId, client_id: &str, id: broker::MessageId) {
        self.record_for(client_id, Commit::Behind, |b| {
            b.completed(tenant, client_id, id)
        });
    }

    fn incoming_qos2(
        &self,
        tenant: &TenantId,
        client_id: &str,
        packet_id: PacketId,
        awaiting: bool,
    ) -> Option<Durability> {
        self.record_for(client_id, Commit::Now, |b| {
            b.incoming(tenant, client_id, packet_id, awaiting);
        })
    }
}
