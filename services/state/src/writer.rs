//! [`WriterTask`]: the one background task behind each write-behind buffer.

use std::future::Future;
use std::sync::{Mutex, PoisonError};

use tokio::task::JoinHandle;

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
