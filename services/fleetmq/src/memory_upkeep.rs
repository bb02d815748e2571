//! Gives memory back after connect storms (issue 16): twice a second the
//! broker's connection churn is read; once a burst of connects and
//! disconnects is over, the allocator's free pages are returned to the
//! system ([`memtrim`]), off the async workers.

use std::time::{Duration, Instant};

use tokio::task::JoinHandle;

/// How often the churn is read.
const TICK: Duration = Duration::from_millis(500);
/// Connections opened, refused or closed that make a burst worth a trim.
const BURST: u64 = 256;
/// Fewer than this in one tick, and the burst is over.
const QUIET: u64 = 32;

/// The background task; aborted at shutdown.
#[derive(Debug)]
pub struct MemoryUpkeep {
    task: JoinHandle<()>,
}

impl MemoryUpkeep {
    pub fn spawn() -> Self {
        let task = tokio::spawn(async move {
            let mut burst_end = memtrim::BurstEnd::new(BURST, QUIET);
            let mut tick = tokio::time::interval(TICK);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if !burst_end.tick(broker::connection_churn()) {
                    continue;
                }
                let started = Instant::now();
                match tokio::task::spawn_blocking(memtrim::release_free_memory).await {
                    Ok(released) => {
                        metrics::counter!("allocator_trims_total").increment(1);
                        tracing::debug!(
                            released,
                            took_ms = started.elapsed().as_millis() as u64,
                            "connect burst over: free memory given back"
                        );
                    }
                    Err(e) => tracing::warn!(error = %e, "allocator trim did not run"),
                }
            }
        });
        Self { task }
    }

    pub fn stop(&self) {
        self.task.abort();
    }
}
