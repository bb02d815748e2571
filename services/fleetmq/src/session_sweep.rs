//! The persistent sessions' sweep (issue 14): a tenant nobody has used
//! since start still gets its wills and its expiry. Every interval, the
//! tenants with a will due are loaded (the broker publishes due wills and
//! ends sessions past expiry as it restores them), then sessions that
//! expired without a will are deleted. Also copies the session store's
//! counters into metrics.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

/// Rows one sweep handles; the rest wait for the next round.
const SWEEP_LIMIT: u32 = 1_000;
/// How long past its expiry a session without a will is left to the
/// broker's own timer before the sweep deletes it.
const GRACE: Duration = Duration::from_secs(60);
/// How often the session store's counters are published.
const METRICS_EVERY: Duration = Duration::from_secs(5);

/// The background tasks; call [`SessionSweep::stop`] at shutdown.
#[derive(Debug)]
pub struct SessionSweep {
    tasks: [JoinHandle<()>; 2],
}

impl SessionSweep {
    /// Sweeps every `every`, the first round at once (wills that fell due
    /// while the broker was down go out without waiting for a client).
    pub fn spawn(
        store: store::Store,
        broker: broker::Broker,
        sessions: Arc<state::DurableSessions>,
        every: Duration,
    ) -> Self {
        let sweep = tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                sweep_once(&store, &broker).await;
            }
        });
        let stats = tokio::spawn(async move {
            let mut tick = tokio::time::interval(METRICS_EVERY);
            loop {
                tick.tick().await;
                publish_metrics(&sessions.stats());
            }
        });
        Self {
            tasks: [sweep, stats],
        }
    }

    /// Stops both tasks.
    pub fn stop(&self) {
        self.tasks.iter().for_each(JoinHandle::abort);
    }
}

/// One round: load the tenants with a will due, purge what expired.
pub async fn sweep_once(store: &store::Store, broker: &broker::Broker) {
    match store.due_session_wills(Utc::now(), SWEEP_LIMIT).await {
        Ok(due) => {
            let mut tenants: Vec<String> = due.into_iter().map(|k| k.tenant_id).collect();
            tenants.sort_unstable();
            tenants.dedup();
            for t in tenants {
                match broker::TenantId::parse(&t) {
                    Ok(id) => {
                        if !broker.load_tenant(&id).await {
                            debug!(tenant = %t, "tenant with a due will not loaded");
                        }
                    }
                    Err(_) => warn!(tenant = %t, "stored session of an invalid tenant id"),
                }
            }
        }
        Err(e) => warn!(error = %e, "reading due session wills failed; retried next round"),
    }
    let before = Utc::now() - chrono::Duration::from_std(GRACE).unwrap_or_default();
    match store.purge_sessions(before, SWEEP_LIMIT).await {
        Ok(p) if p.sessions + p.expired_messages > 0 => info!(
            sessions = p.sessions,
            expired_messages = p.expired_messages,
            collected = p.collected,
            "expired sessions purged"
        ),
        Ok(_) => debug!("no expired sessions to purge"),
        Err(e) => warn!(error = %e, "purging expired sessions failed; retried next round"),
    }
}

fn publish_metrics(s: &state::SessionStats) {
    metrics::counter!("mqtt_session_commits_total").absolute(s.transactions);
    metrics::counter!("mqtt_session_rows_written_total").absolute(s.rows_written);
    metrics::counter!("mqtt_session_failed_commits_total").absolute(s.failed_flushes);
    metrics::counter!("mqtt_session_refused_total").absolute(s.refused);
    metrics::gauge!("mqtt_session_backlog").set(s.backlog as f64);
    metrics::gauge!("mqtt_session_lag_seconds").set(s.lag.as_secs_f64());
}
