//! [`Signal`]: a one-shot "this happened" flag that can be awaited,
//! stored inline in the struct that owns it.
//!
//! A `CancellationToken` does the same job with a heap-allocated tree node
//! (parent, children, handle counts) behind an `Arc`; every connection and
//! session had three of them for flags nobody forks, about a tenth of what
//! an idle connection cost (issue 16).

use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::Notify;

/// Fired once, for good; [`Signal::fired`] resolves from then on.
#[derive(Debug, Default)]
pub(crate) struct Signal {
    fired: AtomicBool,
    notify: Notify,
}

impl Signal {
    /// Fires it: every waiter wakes, and later waits end at once.
    pub(crate) fn fire(&self) {
        if !self.fired.swap(true, Ordering::AcqRel) {
            self.notify.notify_waiters();
        }
    }

    /// Whether it has fired.
    pub(crate) fn is_fired(&self) -> bool {
        self.fired.load(Ordering::Acquire)
    }

    /// Resolves once it has fired. Cancel-safe.
    pub(crate) async fn fired(&self) {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            // Registered before looking, so a `fire` in between is not
            // missed (`notify_waiters` wakes only registered waiters).
            notified.as_mut().enable();
            if self.is_fired() {
                return;
            }
            notified.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[tokio::test]
    async fn waiters_before_and_after_firing_both_end() {
        let signal = Arc::new(Signal::default());
        let waiting = tokio::spawn({
            let signal = signal.clone();
            async move { signal.fired().await }
        });
        tokio::task::yield_now().await;
        assert!(!signal.is_fired());
        signal.fire();
        waiting.await.unwrap();
        assert!(signal.is_fired());
        // Already fired: no wait.
        signal.fired().await;
        signal.fire();
        assert!(signal.is_fired());
    }
}
