//! [`WriterTask`]: the one background task behind each write-behind
//! buffer; [`run_group_commit`], the loop such a task runs; [`Waiters`],
//! the callers a commit answers; [`Buffer`], what the callers and the
//! writer of a group-commit buffer share, whatever [`Changes`] it holds
//! (retained messages, session changes).

use std::future::Future;
use std::ops::{Deref, DerefMut};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use broker::{Durability, StoreError};
use store::Store;
use tokio::sync::{Notify, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{info, warn};

use crate::Error;

/// A spawned writer, joined once at shutdown.
pub(crate) struct WriterTask(Mutex<Option<JoinHandle<()>>>);

impl WriterTask {
    /// Spawns `writer` (inside a tokio runtime).
    pub(crate) fn spawn(writer: impl Future<Output = ()> + Send + 'static) -> Self {
        Self(Mutex::new(Some(tokio::spawn(writer))))
    }

    /// Waits for the writer to finish (the caller has told it to stop);
    /// later calls return at once.
    pub(crate) async fn join(&self) {
        let handle = self.0.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(handle) = handle {
            // A writer that panicked has nothing left to do either.
            let _ = handle.await;
        }
    }
}

/// A write-behind buffer drained by group commit: everything waiting when a
/// transaction starts goes into it, what arrives meanwhile into the next.
pub(crate) trait GroupCommit: Send + Sync + 'static {
    /// When the next transaction should start (`None`: nothing waits), and
    /// whether the buffer is closed (flush once more, then stop).
    fn due(&self) -> (Option<Instant>, bool);
    /// Notified when something is handed over, or on close.
    fn wake(&self) -> &Notify;
    /// The pause after a failed transaction.
    fn retry_delay(&self) -> Duration;
    /// One transaction with everything waiting.
    fn flush_once(&self) -> impl Future<Output = Result<(), Error>> + Send;
}

/// The writer task's loop for `buffer` (`what` names it in the log).
pub(crate) async fn run_group_commit<G: GroupCommit>(buffer: Arc<G>, what: &'static str) {
    loop {
        let (due, closed) = buffer.due();
        if closed {
            if let Err(e) = buffer.flush_once().await {
                warn!(error = %e, "{what} lost at shutdown");
            }
            info!("{what} writer stopped");
            return;
        }
        match due {
            Some(at) if at <= Instant::now() => {
                if buffer.flush_once().await.is_err() {
                    tokio::select! {
                        () = tokio::time::sleep(buffer.retry_delay()) => {}
                        // Shutdown cuts the pause short.
                        () = buffer.wake().notified() => {}
                    }
                }
            }
            Some(at) => {
                tokio::select! {
                    () = tokio::time::sleep_until(at) => {}
                    () = buffer.wake().notified() => {}
                }
            }
            None => buffer.wake().notified().await,
        }
    }
}

/// Callers waiting for the commit of what they handed over.
#[derive(Default)]
pub(crate) struct Waiters(Vec<oneshot::Sender<Result<(), StoreError>>>);

impl Waiters {
    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }

    /// One more waiter, told how the next commit goes.
    pub(crate) fn push(&mut self) -> Committed {
        let (tx, rx) = oneshot::channel();
        self.0.push(tx);
        Committed(rx)
    }

    /// Tells every waiter how the commit went.
    pub(crate) fn resolve(self, outcome: &Result<(), StoreError>) {
        for w in self.0 {
            // A waiter that stopped waiting is no error.
            let _ = w.send(outcome.clone());
        }
    }
}

/// How the commit one caller waits for went.
pub(crate) struct Committed(oneshot::Receiver<Result<(), StoreError>>);

impl Committed {
    /// As the broker's [`Durability`]; the writer stopping first counts as
    /// `stopped`.
    pub(crate) fn into_durability(self, stopped: StoreError) -> Durability {
        Box::pin(async move { self.0.await.unwrap_or(Err(stopped)) })
    }

    /// `Err(None)`: the writer stopped before the commit.
    pub(crate) async fn wait(self) -> Result<(), Option<StoreError>> {
        match self.0.await {
            Ok(outcome) => outcome.map_err(Some),
            Err(_) => Err(None),
        }
    }
}

/// The changes a group-commit [`Buffer`] holds, coalesced as suits them,
/// and what differs between such buffers.
pub(crate) trait Changes: Default + Send + Sync + Sized + 'static {
    type Config: std::fmt::Debug + Send + Sync + 'static;
    type Counters: Default + Send + Sync + 'static;
    /// What the changes are, for the log and errors ("retained changes").
    const WHAT: &'static str;
    /// How many changes wait.
    fn len(&self) -> usize;
    /// Whether [`Buffer::flush`] has nothing to wait for.
    fn settled(backlog: &Backlog<Self>) -> bool;
    /// When the next transaction should start, if at all.
    fn due(backlog: &Backlog<Self>, config: &Self::Config) -> Option<Instant>;
    /// The pause after a failed transaction.
    fn retry_delay(config: &Self::Config) -> Duration;
    /// The error once the writer has stopped.
    const STOPPED: Error;
    /// The error for changes that were not committed.
    const NOT_DURABLE: fn(String) -> Error;
    /// One transaction with `changes`, answering `waiters`.
    fn write(
        buffer: &Buffer<Self>,
        changes: Self,
        waiters: Waiters,
    ) -> impl Future<Output = Result<(), Error>> + Send;
}

/// What waits in a [`Buffer`]: the changes (reached through `Deref`), who
/// waits for their commit, and how far behind the database is.
#[derive(Default)]
pub(crate) struct Backlog<C> {
    pub(crate) changes: C,
    pub(crate) waiters: Waiters,
    /// When the oldest change waiting arrived.
    pub(crate) since: Option<Instant>,
    /// Changes in the transaction being written, and when the oldest of
    /// them arrived: still behind, until committed.
    pub(crate) in_flight: usize,
    pub(crate) in_flight_since: Option<Instant>,
    pub(crate) closed: bool,
}

impl<C> Deref for Backlog<C> {
    type Target = C;
    fn deref(&self) -> &C {
        &self.changes
    }
}

impl<C> DerefMut for Backlog<C> {
    fn deref_mut(&mut self) -> &mut C {
        &mut self.changes
    }
}

/// A group-commit write-behind buffer: shared by the callers handing
/// changes over and the writer task committing them.
pub(crate) struct Buffer<C: Changes> {
    pub(crate) store: Store,
    pub(crate) config: C::Config,
    // std Mutex: held only to move changes in and out, never across await.
    pending: Mutex<Backlog<C>>,
    pub(crate) wake: Notify,
    pub(crate) counters: C::Counters,
}

impl<C: Changes> Buffer<C> {
    /// The buffer and its writer task (call inside a tokio runtime).
    pub(crate) fn start(store: Store, config: C::Config) -> (Arc<Self>, WriterTask) {
        let buffer = Arc::new(Self {
            store,
            config,
            pending: Mutex::default(),
            wake: Notify::new(),
            counters: C::Counters::default(),
        });
        let writer = WriterTask::spawn(run_group_commit(buffer.clone(), C::WHAT));
        (buffer, writer)
    }

    pub(crate) fn pending(&self) -> MutexGuard<'_, Backlog<C>> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits until every change handed over before this call is committed
    /// (or its transaction failed).
    pub(crate) async fn flush(&self) -> Result<(), Error> {
        let committed = {
            let mut p = self.pending();
            if C::settled(&p) {
                return Ok(());
            }
            if p.closed {
                return Err(C::STOPPED);
            }
            p.waiters.push()
        };
        self.wake.notify_one();
        match committed.wait().await {
            Ok(()) => Ok(()),
            Err(Some(e)) => Err((C::NOT_DURABLE)(e.0)),
            Err(None) => Err(C::STOPPED),
        }
    }

    /// Writes what is waiting and stops `writer`. Returns an error if the
    /// last transaction failed: those changes are lost.
    pub(crate) async fn shutdown(&self, writer: &WriterTask) -> Result<(), Error> {
        self.pending().closed = true;
        self.wake.notify_one();
        writer.join().await;
        let left = self.pending().len();
        if left > 0 {
            return Err((C::NOT_DURABLE)(format!(
                "{left} {} not written at shutdown",
                C::WHAT
            )));
        }
        Ok(())
    }

    /// Changes not committed yet (waiting or being written), and how long
    /// the oldest of them has waited.
    pub(crate) fn backlog(&self) -> (usize, Duration) {
        let p = self.pending();
        let since = p.in_flight_since.or(p.since);
        (
            p.len() + p.in_flight,
            since.map_or(Duration::ZERO, |s| s.elapsed()),
        )
    }
}

impl<C: Changes> GroupCommit for Buffer<C> {
    fn due(&self) -> (Option<Instant>, bool) {
        let p = self.pending();
        (C::due(&p, &self.config), p.closed)
    }

    fn wake(&self) -> &Notify {
        &self.wake
    }

    fn retry_delay(&self) -> Duration {
        C::retry_delay(&self.config)
    }

    async fn flush_once(&self) -> Result<(), Error> {
        let (changes, waiters) = {
            let mut p = self.pending();
            p.in_flight_since = p.since.take();
            p.in_flight = p.len();
            (
                std::mem::take(&mut p.changes),
                std::mem::take(&mut p.waiters),
            )
        };
        let outcome = C::write(self, changes, waiters).await;
        let mut p = self.pending();
        p.in_flight = 0;
        p.in_flight_since = None;
        outcome
    }
}
