//! [`SessionHandoff`]: client ids are unique per tenant across a cluster
//! (issue 15). A CONNECT on one node takes the client id over from the
//! node that holds it: that node closes its connection with DISCONNECT
//! 0x8E Session taken over, writes what it holds of the session to the
//! session store and forgets it, and this node then loads the session
//! from the store (Session Present 1, subscriptions and queued messages
//! with it). A session lives in memory on one node only: the one its
//! stored row names.
//!
//! Without a handoff (a single node) nothing of this runs.

use async_trait::async_trait;

use crate::{Broker, TenantId};

/// The other side of a takeover failed or did not answer in time.
#[derive(Debug, Clone, thiserror::Error)]
#[error("session handoff: {0}")]
pub struct HandoffError(pub String);

/// How a node asks another one to let go of a session.
#[async_trait]
pub trait SessionHandoff: Send + Sync + 'static {
    /// This node's name, as the session store records it with the
    /// sessions this node serves.
    fn node(&self) -> &str;

    /// Asks `node` to let go of `client_id` in `tenant` (see
    /// [`crate::Broker::release_session`]); returns once it has, or with
    /// an error after a bounded wait (a dead node never answers).
    async fn release(
        &self,
        node: &str,
        tenant: &TenantId,
        client_id: &str,
    ) -> Result<(), HandoffError>;

    /// After `node` did not let go of `client_id` in `tenant` (it died,
    /// or was cut off from the other nodes) and its session was taken
    /// here as stored: brings into it what `node` may never have heard
    /// while it was unreachable, from what the cluster kept (the
    /// session, held here again, skips what it holds). Returns how many
    /// messages were queued for it. A single node has nothing to bring.
    async fn recover(
        &self,
        _broker: &Broker,
        _node: &str,
        _tenant: &TenantId,
        _client_id: &str,
    ) -> Result<u64, HandoffError> {
        Ok(0)
    }
}
