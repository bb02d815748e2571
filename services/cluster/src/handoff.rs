//! Session takeover between nodes (issue 15): client ids are unique per
//! tenant across the cluster. The connecting node asks the node its
//! session's stored row names, on that node's own subject
//! (`fleetmq.takeover.{node}`, a core NATS request), to let go of it
//! ([`Broker::release_session`]: 0x8E to its connection, the session
//! written and forgotten); the reply comes once it has. A node that does
//! not answer within [`RELEASE_TIMEOUT`] (or has no subscriber: it is
//! gone) leaves the session as stored.
//!
//! One node per request, rather than a broadcast every node answers: the
//! store already says which node serves the session, and a requester
//! could not tell how many answers to wait for.
//!
//! Nothing is missed while a session moves (issue 15): before asking, the
//! connecting node puts a stand-in of the session (its stored
//! subscriptions, not yet in its session table nor its store) into its
//! subscription index and waits until NATS confirms its interest in
//! those filters (the bound of `routing::INTEREST_WAIT`); from then on
//! every message routed for the session, from any node and its own,
//! queues in the stand-in. The other node first delivers what its
//! routing subscriptions got before the request (those messages came
//! before the stand-in's interest: the stored queue is their only way
//! over; `routing::Drainer`). Once the other node has let go and flushed,
//! the stored session is merged into the stand-in, which becomes the
//! session: the stored queue first, then what the stand-in caught less
//! the messages the stored queue has already (by their
//! [`broker::MessageId`], kept with each stored message), numbered after
//! them and written to the store. The messages the two nodes both
//! received are kept once; the order per publisher holds (the stored
//! ones came first on the old node, the caught ones after).
//!
//! Why a stand-in rather than a second NATS subscription whose buffer is
//! appended after loading: the buffer and the new node's own
//! subscriptions would be two deliveries of the same messages with no
//! moment at which one takes over from the other without a gap, a
//! duplicate or a reordering; the stand-in is one session object that
//! every route reaches (local publishes too, which never come back
//! through NATS), so the switch is the merge under its lock. A replay of
//! the journal instead would have needed a start point (the stream's end
//! before the request) and the same hold of live messages until it ends.
//! The one duplicate left: a message the old node delivered and its
//! client acknowledged between the stand-in's start and the release (a
//! client still connected there), which QoS 1 allows.

use std::time::Duration;

use async_nats::Client;
use broker::{Broker, HandoffError, TenantId};
use bytes::Bytes;
use futures::StreamExt;
use serde::{Deserialize, Serialize};

use crate::routing::Drainer;

/// The longest a connecting node waits for another node to let go of a
/// session: above the broker's default takeover timeout (5 s), which
/// bounds the old connection's end there.
pub const RELEASE_TIMEOUT: Duration = Duration::from_secs(8);

/// The subject node `node` takes release requests on (node names are
/// letters, digits, `-` and `_`: one token).
pub fn subject(node: &str) -> String {
    format!("fleetmq.takeover.{node}")
}

#[derive(Serialize, Deserialize)]
struct Release {
    tenant: String,
    client_id: String,
}

/// Asks `node` to let go of `client_id` in `tenant`; see the module docs.
pub async fn release(
    client: &Client,
    node: &str,
    tenant: &TenantId,
    client_id: &str,
) -> Result<(), HandoffError> {
    let body = serde_json::to_vec(&Release {
        tenant: tenant.as_str().to_owned(),
        client_id: client_id.to_owned(),
    })
    .map_err(|e| HandoffError(e.to_string()))?;
    let reply = tokio::time::timeout(
        RELEASE_TIMEOUT,
        client.request(subject(node), Bytes::from(body)),
    )
    .await
    .map_err(|_| HandoffError(format!("node {node} did not answer in time")))?
    .map_err(|e| HandoffError(format!("node {node}: {e}")))?;
    match reply.payload.is_empty() {
        true => Ok(()),
        false => Err(HandoffError(format!(
            "node {node}: {}",
            String::from_utf8_lossy(&reply.payload)
        ))),
    }
}

/// Answers this node's release requests until `sub` ends: each in a task
/// of its own (one slow connection does not hold the others up). The
/// reply is empty on success, else the reason. Before a session goes,
/// what this node's routing subscriptions received ahead of the request
/// is delivered into it (`drainer`): the requester's interest came after
/// those messages, so they reach it only through the stored queue.
pub(crate) async fn serve(
    mut sub: async_nats::Subscriber,
    client: Client,
    broker: Broker,
    drainer: Drainer,
) {
    while let Some(message) = sub.next().await {
        let Some(reply) = message.reply.clone() else {
            continue;
        };
        let (client, broker, drainer) = (client.clone(), broker.clone(), drainer.clone());
        tokio::spawn(async move {
            let answer = match serde_json::from_slice::<Release>(&message.payload) {
                Err(e) => format!("bad release request: {e}"),
                Ok(r) => match TenantId::parse(&r.tenant) {
                    Err(_) => "bad tenant id".to_owned(),
                    Ok(tenant) => {
                        match release_drained(&broker, &drainer, &tenant, &r.client_id).await {
                            Ok(_) => String::new(),
                            Err(e) => {
                                tracing::warn!(tenant = %tenant, client_id = %r.client_id, error = %e, "session not released");
                                e.to_string()
                            }
                        }
                    }
                },
            };
            if let Err(e) = client.publish(reply, Bytes::from(answer)).await {
                tracing::warn!(error = %e, "release reply not sent");
            }
        });
    }
}

/// [`Broker::release_session`] once `drainer` has delivered what arrived
/// before the request (see [`serve`]).
async fn release_drained(
    broker: &Broker,
    drainer: &Drainer,
    tenant: &TenantId,
    client_id: &str,
) -> Result<bool, broker::Error> {
    drainer.drained().await;
    broker.release_session(tenant, client_id).await
}
