//! [`WriterTask`]: the one background task behind each write-behind
//! buffer; [`run_group_commit`], the loop such a task runs; [`Waiters`],
//! the callers a commit answers.

use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use broker::{Durability, StoreError};
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
