//! The change feed between nodes (issue 15): each change made on a node
//! (`events::change::ChangeFeed::publish`) is sent on core NATS, subject
//! [`SUBJECT`], as JSON with the name of the node that made it; every
//! other node hands it to its own feed, whose listeners apply it exactly
//! as a change made there. Core NATS, not JetStream: a change is worth
//! something only to the nodes running now (a node that starts reads
//! everything from the database anyway), and it must arrive in
//! milliseconds (a revocation ends the session wherever it is).
//!
//! Loss: NATS delivers at most once. A node whose connection drops misses
//! what is sent meanwhile, and a node too slow to read its subscription
//! has messages dropped by the server. Both are gaps
//! ([`crate::Cluster::gaps`]): the node then applies
//! [`Change::Missed`] to its own feed, whose listeners drop every cache
//! and read the database again (policies, topic rules, presence settings,
//! webhook routes, CAs). What that does not undo: a session that a missed
//! revocation should have ended stays connected until it reconnects (and
//! is refused then). Changes this node makes while cut off are buffered
//! by the client and sent on reconnect, as far as its buffer goes.

use std::sync::Arc;
use std::time::Duration;

use events::change::{Change, ChangeFeed, ChangeListener, Origin};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::{Cluster, Error, NodeName};

/// The subject every node publishes its changes on and listens to.
pub const SUBJECT: &str = "fleetmq.changes";

/// A change on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// The node that made it.
    pub origin: String,
    pub change: Change,
}

/// Sends the changes made on this node to the others.
struct Relay {
    client: async_nats::Client,
    node: NodeName,
}

#[async_trait::async_trait]
impl ChangeListener for Relay {
    async fn apply(&self, change: &Change, origin: &Origin) {
        // Only this node's own changes; a gap is this node's business.
        if *origin != Origin::Here || *change == Change::Missed {
            return;
        }
        let envelope = Envelope {
            origin: self.node.as_str().to_owned(),
            change: change.clone(),
        };
        let payload = match serde_json::to_vec(&envelope) {
            Ok(payload) => payload,
            Err(e) => {
                tracing::error!(change = change.kind(), error = %e, "a change could not be serialized; the other nodes do not see it");
                return;
            }
        };
        if let Err(e) = self.client.publish(SUBJECT, payload.into()).await {
            tracing::error!(change = change.kind(), tenant = change.tenant(), error = %e, "a change could not be sent to the other nodes; they see it when they next read the database");
        }
    }
}

/// The link between this node's feed and the others'; stops when dropped.
#[derive(Debug)]
pub struct FeedLink {
    task: JoinHandle<()>,
}

impl Drop for FeedLink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Carries `feed` between this node and the others: changes published
/// here are sent (a listener subscribed now, after the local ones), and
/// changes from other nodes are delivered to `feed`. Returns once the
/// server has the subscription.
pub async fn carry(cluster: &Cluster, feed: &ChangeFeed) -> Result<FeedLink, Error> {
    let client = cluster.client().clone();
    let subscription = client
        .subscribe(SUBJECT)
        .await
        .map_err(|e| Error::Feed(e.to_string()))?;
    in_place(&client).await?;
    feed.subscribe(Arc::new(Relay {
        client,
        node: cluster.node_name().clone(),
    }));
    let task = tokio::spawn(receive(
        subscription,
        cluster.node_name().clone(),
        feed.clone(),
        cluster.gaps(),
    ));
    Ok(FeedLink { task })
}

/// How long the server may take to confirm the subscription.
const CONFIRM_BOUND: Duration = Duration::from_secs(10);

/// Returns once the server has taken the subscriptions made so far on
/// `client`: it handles one connection's messages in order, so a message
/// to ourselves that comes back proves it (a flush only empties our write
/// buffer; a change another node makes meanwhile could still pass by).
async fn in_place(client: &async_nats::Client) -> Result<(), Error> {
    let probe = client.new_inbox();
    let mut echo = client
        .subscribe(probe.clone())
        .await
        .map_err(|e| Error::Feed(e.to_string()))?;
    client
        .publish(probe, bytes::Bytes::new())
        .await
        .map_err(|e| Error::Feed(e.to_string()))?;
    match tokio::time::timeout(CONFIRM_BOUND, echo.next()).await {
        Ok(Some(_)) => Ok(()),
        Ok(None) | Err(_) => Err(Error::Feed(format!(
            "NATS did not confirm the subscription to {SUBJECT} within {} s",
            CONFIRM_BOUND.as_secs()
        ))),
    }
}

async fn receive(
    mut subscription: async_nats::Subscriber,
    node: NodeName,
    feed: ChangeFeed,
    mut gaps: watch::Receiver<u64>,
) {
    loop {
        tokio::select! {
            message = subscription.next() => {
                let Some(message) = message else {
                    tracing::error!(%node, "the change feed subscription ended; changes from other nodes no longer arrive");
                    return;
                };
                match serde_json::from_slice::<Envelope>(&message.payload) {
                    // Our own, echoed back: applied when published.
                    Ok(envelope) if envelope.origin == node.as_str() => {}
                    Ok(Envelope { origin, change }) => {
                        feed.deliver(&change, &Origin::Node(origin)).await;
                    }
                    Err(e) => {
                        // A newer node's change this one does not know:
                        // what it affects is read again.
                        tracing::warn!(%node, error = %e, bytes = message.payload.len(), "a change from another node could not be read; treating it as missed");
                        feed.deliver(&Change::Missed, &Origin::Here).await;
                    }
                }
            }
            changed = gaps.changed() => {
                if changed.is_err() {
                    // The cluster was dropped: the node is stopping.
                    return;
                }
                tracing::warn!(%node, "the link to the other nodes had a gap; changes may have been missed");
                feed.deliver(&Change::Missed, &Origin::Here).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_envelope_names_the_node_and_the_change() {
        let envelope = Envelope {
            origin: "edge-1".into(),
            change: Change::DeviceDeleted {
                tenant: "acme".into(),
                device: "d1".into(),
            },
        };
        let json = serde_json::to_value(&envelope).unwrap();
        assert_eq!(json["origin"], "edge-1");
        assert_eq!(json["change"]["kind"], "device_deleted");
        assert_eq!(serde_json::from_value::<Envelope>(json).unwrap(), envelope);
    }
}
