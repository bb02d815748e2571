//! [`SessionStore`]: persistent sessions that outlive the process (issue
//! 14). The broker calls out through it on every write path of a
//! persistent session (MQTT 3.1.1 clean session 0, MQTT 5 Session Expiry
//! Interval above 0); the platform implements it on its database
//! (`state::DurableSessions`, group commit), and [`MemorySessionStore`]
//! keeps sessions in process memory for tests.
//!
//! The types here are plain data, independent of how the broker holds a
//! session in memory. Times are wall-clock and absolute, so that a restart
//! never extends a deadline: time spent with the broker down counts
//! against session expiry, will delay and message expiry alike.
//!
//! Which writes an acknowledgement waits for (the [`Durability`] a method
//! returns), and why (see `services/state/sessions.md`):
//!
//! | write | waits before |
//! |---|---|
//! | [`connect`](SessionStore::connect), [`end`](SessionStore::end) | CONNACK (a clean start must not resurrect the old session after a crash) |
//! | [`subscription`](SessionStore::subscription) (`Some`: subscribed, `None`: unsubscribed) | SUBACK, UNSUBACK |
//! | [`enqueue`](SessionStore::enqueue) | the publisher's PUBACK / PUBREC |
//! | [`incoming_qos2`](SessionStore::incoming_qos2) | PUBREC (awaiting) and PUBCOMP (released) |
//! | [`delivery_state`](SessionStore::delivery_state) with `durable` | a QoS 2 PUBLISH and its PUBREL to the subscriber |
//! | [`disconnect`](SessionStore::disconnect), [`will_done`](SessionStore::will_done), [`delivered`](SessionStore::delivered), QoS 1 `delivery_state` | nothing: write-behind (a crash may resend a QoS 1 message, never lose one) |

use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;
use bytes::Bytes;
use futures::future::{BoxFuture, FutureExt, try_join_all};
use mqtt::{
    PacketId, Properties, ProtocolVersion, QoS, SubscriptionOptions, TopicFilter, TopicName,
};

use crate::TenantId;
use crate::store::{Durability, StoreError};

mod memory;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

pub use memory::MemorySessionStore;

/// What a persistent session is, as written at CONNECT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    /// The MQTT client id (unique per tenant).
    pub client_id: Arc<str>,
    /// The principal that created it: only it may resume the session.
    pub owner: String,
    /// The protocol of the connection that wrote it.
    pub protocol: ProtocolVersion,
    /// Session Expiry Interval in force, seconds (`u32::MAX`: never).
    pub expiry_interval: u32,
    /// The connection's Last Will, kept so that a crash cannot swallow it.
    pub will: Option<StoredWill>,
}

/// A Last Will as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredWill {
    /// Will Topic.
    pub topic: TopicName,
    /// Will Payload.
    pub payload: Bytes,
    /// Will QoS.
    pub qos: QoS,
    /// Will Retain.
    pub retain: bool,
    /// Will Properties, Will Delay Interval excluded (it is `delay`).
    pub properties: Properties,
    /// Will Delay Interval, seconds.
    pub delay: u32,
}

/// One subscription with all its options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredSubscription {
    /// The filter, possibly a `$share/` one.
    pub filter: TopicFilter,
    /// Granted QoS, No Local, Retain As Published, Retain Handling.
    pub options: SubscriptionOptions,
    /// Its Subscription Identifier.
    pub id: Option<u32>,
}

/// A message body as stored, once however many sessions it is queued for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage {
    /// Topic.
    pub topic: TopicName,
    /// Payload.
    pub payload: Bytes,
    /// QoS it was published with (1 or 2: QoS 0 is never stored).
    pub qos: QoS,
    /// Pass-through properties; Message Expiry Interval is `expires_at`.
    pub properties: Properties,
    /// When the message expires, on the wall clock; `None`: never.
    pub expires_at: Option<SystemTime>,
    /// Its id across a cluster ([`crate::interconnect::MessageId`]), so
    /// that a session moved or replayed into keeps one copy; `None` on a
    /// single node.
    pub id: Option<crate::interconnect::MessageId>,
}

impl StoredMessage {
    /// Whether the message has expired by `now`.
    pub fn is_expired(&self, now: SystemTime) -> bool {
        self.expires_at.is_some_and(|at| at <= now)
    }
}

/// One session a message is queued for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedFor {
    /// The session's client id.
    pub client_id: Arc<str>,
    /// The session's order for this delivery: increasing per session
    /// (kept across restarts: continue from the highest loaded).
    pub seq: u64,
    /// After the downgrade to the subscription (1 or 2).
    pub qos: QoS,
    /// RETAIN on the outgoing PUBLISH.
    pub retain: bool,
    /// Matching Subscription Identifiers.
    pub subscription_ids: Vec<u32>,
    /// The `$share/` filter it came through, if any.
    pub shared: Option<TopicFilter>,
}

/// Where an outgoing QoS 1/2 delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeliveryState {
    /// Not sent yet.
    Queued,
    /// PUBLISH sent with this packet id; resent with DUP on reconnect.
    Sent(PacketId),
    /// PUBREC received and PUBREL sent; PUBREL is resent on reconnect.
    Released(PacketId),
}

/// A queued or in-flight delivery, loaded back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredDelivery {
    /// Its place in the session's queue.
    pub seq: u64,
    /// The message (shared by every session it was queued for).
    pub message: Arc<StoredMessage>,
    /// After the downgrade (1 or 2).
    pub qos: QoS,
    /// RETAIN on the outgoing PUBLISH.
    pub retain: bool,
    /// Matching Subscription Identifiers.
    pub subscription_ids: Vec<u32>,
    /// The `$share/` filter it came through, if any.
    pub shared: Option<TopicFilter>,
    /// Where it stands.
    pub state: DeliveryState,
}

/// A connection let go of its session, which stays until `expires_at`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Disconnected {
    /// When.
    pub at: SystemTime,
    /// When the session ends unless resumed; `None`: never.
    pub expires_at: Option<SystemTime>,
    /// When the will is due (the earlier of its delay and the session's
    /// end); `None`: no will, or it was discarded (normal DISCONNECT) or
    /// already published.
    pub will_due_at: Option<SystemTime>,
}

/// A persistent session as loaded after a restart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredSession {
    /// What CONNECT wrote (the will, if one is still to go out).
    pub record: SessionRecord,
    /// Whether a connection (on `node`) holds it: after a crash, call the
    /// implementation's recovery first so that this node's are released.
    pub connected: bool,
    /// The node that serves or last served it.
    pub node: Option<String>,
    /// When it ends if not resumed; `None` while connected, or never.
    pub expires_at: Option<SystemTime>,
    /// When its will is due, if one is pending.
    pub will_due_at: Option<SystemTime>,
    /// Its subscriptions.
    pub subscriptions: Vec<StoredSubscription>,
    /// Outgoing QoS 1/2 deliveries in order: queued ones to send, in-flight
    /// ones to resend (PUBLISH with DUP, or PUBREL).
    pub queue: Vec<StoredDelivery>,
    /// Client → server QoS 2 packet ids awaiting PUBREL.
    pub incoming_qos2: Vec<PacketId>,
    /// The routed QoS 2 messages it completed lately.
    pub completed: crate::interconnect::Completed,
}

impl StoredSession {
    /// The next `seq` for this session's deliveries.
    pub fn next_seq(&self) -> u64 {
        self.queue.last().map_or(0, |d| d.seq.saturating_add(1))
    }
}

/// Persists persistent sessions per tenant. Write methods are called on
/// the hot path under no lock and must not block (write-behind, group
/// commit); what an acknowledgement must wait for comes back as a
/// [`Durability`] (`None`: nothing to wait for). Dropping one does not
/// cancel the write. For one session, calls arrive in the order the
/// broker made the changes, and an implementation applies them in that
/// order.
#[async_trait]
pub trait SessionStore: Send + Sync + 'static {
    /// Every stored session of `tenant`, read when the tenant is first
    /// used after start, whatever its deadlines: the broker applies them
    /// (publishes a will that fell due while it was down, ends a session
    /// past its expiry, skips expired messages), because only it can
    /// publish the will.
    async fn load(&self, tenant: &TenantId) -> Result<Vec<StoredSession>, StoreError>;

    /// The stored session of `client_id` in `tenant`, if any, as
    /// [`SessionStore::load`] would return it: read when a session moves
    /// from another node of a cluster.
    async fn load_session(
        &self,
        tenant: &TenantId,
        client_id: &str,
    ) -> Result<Option<StoredSession>, StoreError> {
        Ok(self
            .load(tenant)
            .await?
            .into_iter()
            .find(|s| &*s.record.client_id == client_id))
    }

    /// Waits until every change handed over before this call is durable:
    /// a session leaving this node is complete in the store before
    /// another node loads it.
    async fn flush(&self) -> Result<(), StoreError> {
        Ok(())
    }

    /// A connection takes up the session `session.client_id` (new or
    /// resumed); `clean_start` discards whatever was stored under that
    /// client id first. A resumed session keeps what it holds.
    fn connect(
        &self,
        tenant: &TenantId,
        session: &SessionRecord,
        clean_start: bool,
    ) -> Option<Durability>;

    /// The connection let go of a session that stays (write-behind).
    fn disconnect(&self, tenant: &TenantId, client_id: &str, disconnected: &Disconnected);

    /// The session's will was published (or refused): it must not go out
    /// again after a restart (write-behind).
    fn will_done(&self, tenant: &TenantId, client_id: &str);

    /// The session ended (expiry, expiry 0 at disconnect, discarded by a
    /// clean start, deleted): everything stored for it goes.
    fn end(&self, tenant: &TenantId, client_id: &str) -> Option<Durability>;

    /// The subscription to `filter` added or replaced (`Some`, whose
    /// filter is `filter`) or removed (`None`); one change either way, as
    /// [`RetainedStore::save`](crate::RetainedStore::save) is for a topic.
    fn subscription(
        &self,
        tenant: &TenantId,
        client_id: &str,
        filter: &TopicFilter,
        subscription: Option<&StoredSubscription>,
    ) -> Option<Durability>;

    /// `message` queued for each of `targets` (persistent sessions, QoS
    /// 1/2 deliveries, online or not): one body, one reference per target.
    /// The publisher's acknowledgement waits for the returned durability.
    fn enqueue(
        &self,
        tenant: &TenantId,
        message: &Arc<StoredMessage>,
        targets: &[QueuedFor],
    ) -> Option<Durability>;

    /// A delivery was sent (`Sent`) or released (`Released`). `durable`:
    /// the caller waits before writing the packet (QoS 2, so that a
    /// restart resends with the same packet id and the client's
    /// deduplication holds).
    fn delivery_state(
        &self,
        tenant: &TenantId,
        client_id: &str,
        seq: u64,
        state: DeliveryState,
        durable: bool,
    ) -> Option<Durability>;

    /// A delivery is finished: acknowledged (PUBACK, PUBCOMP, an error
    /// reason code), or dropped (expired, too large, given to another
    /// member of its shared group). Write-behind.
    fn delivered(&self, tenant: &TenantId, client_id: &str, seq: u64);

    /// The client completed the routed QoS 2 message `id` (PUBREC; see
    /// [`Completed`](crate::interconnect::Completed)). Called before the
    /// delivery's PUBREL state is written (durably), so that it commits
    /// with it or earlier: a replay never finds the message gone from
    /// the stored queue and not completed. Write-behind.
    fn completed(&self, tenant: &TenantId, client_id: &str, id: crate::MessageId);

    /// An incoming QoS 2 packet id awaits PUBREL (`true`: PUBREC waits)
    /// or was released (`false`: PUBCOMP waits, since a client reuses the
    /// id once it has PUBCOMP).
    fn incoming_qos2(
        &self,
        tenant: &TenantId,
        client_id: &str,
        packet_id: PacketId,
        awaiting: bool,
    ) -> Option<Durability>;
}

/// Everything in `parts` made durable: one future to hold an
/// acknowledgement on (a retained change, the session queues and an
/// incoming QoS 2 id may all be behind one PUBREC). `None` when there is
/// nothing to wait for; the first failure wins.
pub fn all_durable(parts: impl IntoIterator<Item = Option<Durability>>) -> Option<Durability> {
    let mut parts: Vec<Durability> = parts.into_iter().flatten().collect();
    match parts.len() {
        0 => None,
        1 => parts.pop(),
        _ => Some(try_join_all(parts).map(|r| r.map(|_| ())).boxed()),
    }
}

/// A [`Durability`] that has already failed with `why`.
pub fn not_durable(why: impl Into<String>) -> Durability {
    let e = StoreError(why.into());
    Box::pin(async move { Err(e) }) as BoxFuture<'static, _>
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok() -> Option<Durability> {
        Some(Box::pin(async { Ok(()) }))
    }

    #[tokio::test]
    async fn all_durable_waits_for_every_part_and_fails_with_any() {
        assert!(all_durable([None, None]).is_none());
        all_durable([ok(), None]).unwrap().await.unwrap();
        all_durable([ok(), ok(), ok()]).unwrap().await.unwrap();
        let e = all_durable([ok(), Some(not_durable("disk on fire")), ok()])
            .unwrap()
            .await
            .unwrap_err();
        assert!(e.0.contains("disk on fire"));
    }
}
