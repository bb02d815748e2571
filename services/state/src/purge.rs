//! [`RetainedPurge`]: deletes expired retained messages from the database
//! on a timer. Expired messages are never delivered (the broker checks the
//! expiry on every read), so this only reclaims rows; a missed round costs
//! disk, not correctness, and is retried at the next tick.

use std::time::Duration;

use chrono::Utc;
use store::Store;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

/// The background purge task; dropping the handle leaves it running, call
/// [`RetainedPurge::stop`] at shutdown.
#[derive(Debug)]
pub struct RetainedPurge {
    task: JoinHandle<()>,
}

impl RetainedPurge {
    /// Purges every `every` (the first round after one interval, not at
    /// start: a fresh start has little to purge and much else to do).
    pub fn spawn(store: Store, every: Duration) -> RetainedPurge {
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            // A slow round must not be followed by a burst of catch-up rounds.
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                purge_once(&store).await;
            }
        });
        RetainedPurge { task }
    }

    /// Stops the task (a round in progress is abandoned; its transaction
    /// is rolled back by the database).
    pub fn stop(&self) {
        self.task.abort();
    }
}

/// One round; returns how many rows went.
pub async fn purge_once(store: &Store) -> u64 {
    match store.purge_expired_retained(Utc::now()).await {
        Ok(0) => {
            debug!("no expired retained messages to purge");
            0
        }
        Ok(n) => {
            info!(purged = n, "expired retained messages purged");
            n
        }
        Err(e) => {
            warn!(error = %e, "purging expired retained messages failed; retried at the next interval");
            0
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use store::{RetainedMessage, RetainedWrite};

    #[tokio::test]
    async fn the_timer_deletes_expired_rows_and_keeps_the_rest() {
        let db = crate::test_support::acme(&[]).await;
        let store = db.store();
        let now = Utc::now();
        let row = |topic: &str, expires_at| {
            RetainedWrite::Set(RetainedMessage {
                tenant_id: "acme".into(),
                topic: topic.into(),
                payload: b"x".to_vec(),
                qos: 0,
                properties: serde_json::json!({}),
                expires_at,
                updated_at: now,
                owner: None,
            })
        };
        store
            .write_retained(&[
                row("gone", Some(now - chrono::Duration::seconds(1))),
                row("kept", Some(now + chrono::Duration::hours(1))),
                row("forever", None),
            ])
            .await
            .unwrap();
        let purge = RetainedPurge::spawn(store.clone(), Duration::from_millis(50));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let left = store
                .load_retained("acme", now - chrono::Duration::days(1))
                .await
                .unwrap();
            let topics: Vec<_> = left.iter().map(|r| r.topic.as_str()).collect();
            if !topics.contains(&"gone") {
                assert!(
                    topics.contains(&"kept") && topics.contains(&"forever"),
                    "{topics:?}"
                );
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "expired row never purged"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        purge.stop();
    }
}
