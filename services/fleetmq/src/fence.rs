//! No split brain (issue 15): a cluster member cut off from NATS (or that
//! lost its name lease) fences itself well before its lease lapses. Once
//! the cluster readiness has failed for [`grace`] without a break, the
//! broker refuses new CONNECTs (0x88 Server unavailable) and closes every
//! live connection with DISCONNECT 0x9C Use another server, then the
//! persistent sessions' last state is flushed to Postgres, so their
//! clients resume them on another node while this one's lease still
//! stands (and nobody else could yet take its name). When the readiness
//! holds again, the node takes connections again.
//!
//! Why 0x9C and not 0x8B Server shutting down: the node is not stopping,
//! it is the wrong place to be for now; 0x9C says exactly that (MQTT 5
//! 4.11), clients reconnect (through the load balancer, which sees
//! `/readyz` at 503) to another node, and, as for a shutdown, no will is
//! published: the client lost nothing.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How often the readiness is looked at (a load of two atomics).
const POLL: Duration = Duration::from_millis(100);
/// How long fencing waits for closed connections to end before flushing.
const CLOSE_BOUND: Duration = Duration::from_secs(2);
/// How long fencing waits for the persistent sessions' flush.
const FLUSH_BOUND: Duration = Duration::from_secs(5);
/// Counts the times this node fenced itself.
const FENCED_TOTAL: &str = "cluster_fenced_total";
/// 1 while the node is fenced.
const FENCED: &str = "cluster_fenced";

/// The time the readiness may fail before the node fences itself: a third
/// of the lease TTL, so fencing (and the sessions' flush) is done long
/// before another node could take this node's name.
pub fn grace(lease_ttl: Duration) -> Duration {
    lease_ttl / 3
}

/// The watching task; [`Fence::stop`] at shutdown.
#[derive(Debug)]
pub struct Fence {
    task: JoinHandle<()>,
    stop: CancellationToken,
}

impl Fence {
    /// Watches `readiness` for `node`, fencing `broker` after `grace`.
    pub fn spawn(
        node: String,
        readiness: cluster::Readiness,
        broker: broker::Broker,
        sessions: Arc<state::DurableSessions>,
        grace: Duration,
    ) -> Fence {
        let stop = CancellationToken::new();
        let task = tokio::spawn(watch(
            node,
            readiness,
            broker,
            sessions,
            grace,
            stop.clone(),
        ));
        Fence { task, stop }
    }

    pub async fn stop(self) {
        self.stop.cancel();
        if let Err(e) = self.task.await {
            tracing::warn!(error = %e, "the cluster fence ended abnormally");
        }
    }
}

async fn watch(
    node: String,
    readiness: cluster::Readiness,
    broker: broker::Broker,
    sessions: Arc<state::DurableSessions>,
    grace: Duration,
    stop: CancellationToken,
) {
    metrics::gauge!(FENCED).set(0.0);
    let mut failing_since: Option<tokio::time::Instant> = None;
    let mut fenced = false;
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(POLL) => {}
        }
        match readiness.check() {
            Ok(()) => {
                failing_since = None;
                if fenced {
                    fenced = false;
                    broker.set_accepting(true);
                    metrics::gauge!(FENCED).set(0.0);
                    tracing::info!(%node, "cluster readiness is back; accepting MQTT connections again");
                }
            }
            Err(why) => {
                let since = *failing_since.get_or_insert_with(tokio::time::Instant::now);
                if fenced || since.elapsed() < grace {
                    continue;
                }
                fenced = true;
                broker.set_accepting(false);
                metrics::counter!(FENCED_TOTAL).increment(1);
                metrics::gauge!(FENCED).set(1.0);
                let (closed, still_open) = broker
                    .disconnect_all(mqtt::ReasonCode::UseAnotherServer, CLOSE_BOUND)
                    .await;
                // Bounded: with the database away too, the shutdown must
                // not wait on this task forever.
                let flushed = match tokio::time::timeout(FLUSH_BOUND, sessions.flush()).await {
                    Ok(flushed) => flushed.map_err(|e| e.to_string()),
                    Err(_) => Err(format!("not done within {FLUSH_BOUND:?}")),
                };
                tracing::error!(
                    %node,
                    reason = %why,
                    down_for_ms = u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX),
                    closed,
                    still_open,
                    sessions_flushed = flushed.is_ok(),
                    "cut off from the cluster: refusing MQTT connections and closed the live ones (0x9C use another server) before the node-name lease lapses"
                );
                if let Err(e) = flushed {
                    tracing::error!(%node, error = %e, "flushing persistent sessions while fenced failed");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_grace_ends_well_before_the_lease() {
        let ttl = cluster::DEFAULT_LEASE_TTL;
        assert_eq!(grace(ttl), Duration::from_secs(5));
        assert!(grace(ttl) * 2 < ttl);
    }
}
