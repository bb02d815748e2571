//! [`Session`]: the state that outlives a network connection (4.1):
//! subscriptions, messages queued for the client, QoS 1/2 packets in flight
//! in both directions. One std `Mutex` per session: routing locks it only
//! to push a delivery, nothing awaits under it, and sessions never share a
//! lock, so a slow client contends only with itself.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use mqtt::{PacketId, QoS, ReasonCode, SubscriptionOptions, TopicFilter};
use tokio::sync::Notify;
use tokio::time::Instant;
use tracing::warn;

use crate::backpressure::{Backlog, Marks, SlowConsumerPolicy};
pub(crate) use crate::conn_control::ConnControl;
use crate::message::Delivery;
use crate::metrics::{self, DropReason};

/// An outgoing QoS 1/2 message not yet completed by the client.
#[derive(Debug, Clone)]
pub(crate) enum Outgoing {
    /// PUBLISH sent, PUBACK/PUBREC awaited.
    Publish(Delivery),
    /// PUBREC received, PUBREL sent, PUBCOMP awaited; the delivery's
    /// place in the stored queue, if stored.
    Released(Option<u64>),
}

/// Counters of messages this session lost, by reason.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DropCounters {
    /// The queue was at its bound.
    pub queue_full: u64,
    /// QoS 0 while the client was offline.
    pub offline_qos0: u64,
    /// The Message Expiry Interval ran out before sending.
    pub expired: u64,
    /// Larger than the client's Maximum Packet Size (MQTT-3.1.2-25).
    pub too_large: u64,
    /// The queue was at its bound in bytes.
    pub queue_bytes: u64,
    /// The tenant's queues together were at their bound (messages or
    /// bytes).
    pub tenant_queue_full: u64,
    /// The queue was at its bound after it stayed full past the
    /// slow-consumer timeout, so publishers no longer waited for it
    /// (see `backpressure`).
    pub slow_consumer: u64,
}

/// Bounds on what one session may hold queued, and on what all of its
/// tenant's sessions may hold together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct QueueLimits {
    pub(crate) messages: usize,
    /// In [`crate::message::Message::cost`] units: about the wire size.
    pub(crate) bytes: usize,
    pub(crate) tenant_messages: usize,
    pub(crate) tenant_bytes: usize,
}

impl QueueLimits {
    /// The bounds the broker's configuration sets.
    pub(crate) fn of(config: &crate::Config) -> Self {
        Self {
            messages: config.max_queued_messages,
            bytes: config.max_queued_bytes,
            tenant_messages: config.max_tenant_queued_messages,
            tenant_bytes: config.max_tenant_queued_bytes,
        }
    }

    /// Only a count per session (unit tests, the fuzzing face).
    #[cfg(any(test, feature = "fuzzing"))]
    pub(crate) fn messages(messages: usize) -> Self {
        Self {
            messages,
            bytes: usize::MAX,
            tenant_messages: usize::MAX,
            tenant_bytes: usize::MAX,
        }
    }
}

/// What all sessions of one tenant hold queued, shared by its sessions so
/// that one device's backlog is bounded against its tenant's, and other
/// tenants never see it.
#[derive(Debug, Default)]
pub(crate) struct TenantQueue {
    /// The tenant's id, for its drop metric.
    tenant: String,
    messages: AtomicUsize,
    bytes: AtomicUsize,
    /// Messages dropped because the tenant was at its bound.
    pub(crate) dropped: AtomicU64,
    /// Messages dropped for its slow consumers (see `backpressure`).
    pub(crate) slow_dropped: AtomicU64,
}

impl TenantQueue {
    pub(crate) fn new(tenant: &crate::TenantId) -> Self {
        Self {
            tenant: tenant.as_str().to_owned(),
            ..Self::default()
        }
    }

    /// Takes room for one message of `cost` unless that would pass the
    /// bounds. Added first and taken back on failure, so concurrent pushes
    /// from other sessions can never overshoot together.
    fn reserve(&self, cost: usize, limits: &QueueLimits) -> bool {
        let messages = self.messages.fetch_add(1, Ordering::AcqRel);
        let bytes = self.bytes.fetch_add(cost, Ordering::AcqRel);
        if messages >= limits.tenant_messages || bytes.saturating_add(cost) > limits.tenant_bytes {
            self.release(1, cost);
            return false;
        }
        true
    }

    /// Counts one message of `cost` with no bound applied (see
    /// [`Queue::hold_unbounded`]).
    fn hold(&self, cost: usize) {
        self.messages.fetch_add(1, Ordering::AcqRel);
        self.bytes.fetch_add(cost, Ordering::AcqRel);
    }

    fn release(&self, messages: usize, bytes: usize) {
        self.messages.fetch_sub(messages, Ordering::AcqRel);
        self.bytes.fetch_sub(bytes, Ordering::AcqRel);
    }

    /// Messages and bytes queued in the tenant's sessions now.
    pub(crate) fn held(&self) -> (usize, usize) {
        (
            self.messages.load(Ordering::Acquire),
            self.bytes.load(Ordering::Acquire),
        )
    }
}

/// A session's queue of deliveries waiting for the connection (or the
/// in-flight window), which keeps its byte total and its tenant's tally in
/// step with what it holds: every way out goes through here, and whatever
/// is left is given back to the tenant when the queue is dropped.
#[derive(Debug)]
pub(crate) struct Queue {
    items: VecDeque<Delivery>,
    /// Bytes of `items`.
    bytes: usize,
    /// Deliveries admitted but not yet placed (see [`Queue::reserve`]),
    /// and their bytes; counted against the bounds and the tenant's tally.
    reserved: usize,
    reserved_bytes: usize,
    tenant: Arc<TenantQueue>,
}

impl Queue {
    fn new(tenant: Arc<TenantQueue>) -> Self {
        Self {
            items: VecDeque::new(),
            bytes: 0,
            reserved: 0,
            reserved_bytes: 0,
            tenant,
        }
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.items.len()
    }

    /// Deliveries queued or admitted, as the count bound sees them.
    fn count(&self) -> usize {
        self.items.len().saturating_add(self.reserved)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Deliveries and bytes queued or admitted.
    fn held(&self) -> (usize, usize) {
        (self.count(), self.bytes.saturating_add(self.reserved_bytes))
    }

    pub(crate) fn front(&self) -> Option<&Delivery> {
        self.items.front()
    }

    pub(crate) fn pop_front(&mut self) -> Option<Delivery> {
        let d = self.items.pop_front()?;
        let cost = d.message.cost();
        self.bytes -= cost;
        self.tenant.release(1, cost);
        Some(d)
    }

    /// Puts back what [`Queue::pop_front`] just took: it was counted a
    /// moment ago, so no bound applies.
    pub(crate) fn push_front(&mut self, d: Delivery) {
        self.hold_unbounded(&d);
        self.items.push_front(d);
    }

    /// Counts `d` in the queue's bytes and the tenant's tally without
    /// checking a bound: for deliveries that were admitted before.
    fn hold_unbounded(&mut self, d: &Delivery) {
        let cost = d.message.cost();
        self.bytes += cost;
        self.tenant.hold(cost);
    }

    /// Makes room for one delivery of `cost` bytes within the session's
    /// bounds (`headroom` more messages allowed) and the tenant's; why not
    /// if it does not fit. Queueing is two steps because a persistent
    /// session's store must hear of a delivery before the connection can
    /// take it: the room is counted here, and the delivery either
    /// [`Queue::push_reserved`] or [`Queue::cancel`]led right after.
    fn reserve(
        &mut self,
        cost: usize,
        limits: &QueueLimits,
        headroom: usize,
    ) -> Result<(), DropReason> {
        if self.count() >= limits.messages.saturating_add(headroom) {
            return Err(DropReason::QueueFull);
        }
        if self
            .bytes
            .saturating_add(self.reserved_bytes)
            .saturating_add(cost)
            > limits.bytes
        {
            return Err(DropReason::QueueBytes);
        }
        if !self.tenant.reserve(cost, limits) {
            return Err(DropReason::TenantQueueFull);
        }
        self.reserved += 1;
        self.reserved_bytes += cost;
        Ok(())
    }

    /// Appends a delivery restored from the session store: it was
    /// acknowledged before the restart, so no bound refuses it (it is
    /// counted, and holds back new ones until the queue drains).
    pub(crate) fn push_restored(&mut self, d: Delivery) {
        self.hold_unbounded(&d);
        self.items.push_back(d);
    }

    /// Appends a delivery whose room [`Queue::reserve`] counted.
    fn push_reserved(&mut self, d: Delivery) {
        let cost = d.message.cost();
        self.reserved = self.reserved.saturating_sub(1);
        self.reserved_bytes = self.reserved_bytes.saturating_sub(cost);
        self.bytes += cost;
        self.items.push_back(d);
    }

    /// Gives back the room [`Queue::reserve`] counted for a delivery of
    /// `cost` bytes that was not queued after all.
    fn cancel(&mut self, cost: usize) {
        self.reserved = self.reserved.saturating_sub(1);
        self.reserved_bytes = self.reserved_bytes.saturating_sub(cost);
        self.tenant.release(1, cost);
    }

    /// Keeps the deliveries `keep` says yes to.
    pub(crate) fn retain(&mut self, mut keep: impl FnMut(&Delivery) -> bool) {
        let (before, bytes_before) = (self.items.len(), self.bytes);
        let mut bytes = 0;
        self.items.retain(|d| {
            let kept = keep(d);
            if kept {
                bytes += d.message.cost();
            }
            kept
        });
        self.bytes = bytes;
        self.tenant
            .release(before - self.items.len(), bytes_before - bytes);
    }

    /// The deliveries in order, to renumber in place (their cost stays).
    pub(crate) fn iter_mut(&mut self) -> impl Iterator<Item = &mut Delivery> {
        self.items.iter_mut()
    }

    pub(crate) fn clear(&mut self) {
        self.tenant.release(self.items.len(), self.bytes);
        self.items.clear();
        self.bytes = 0;
    }
}

impl Drop for Queue {
    fn drop(&mut self) {
        self.clear();
        self.tenant.release(self.reserved, self.reserved_bytes);
    }
}

/// A set of packet ids that costs one pointer while empty: a session's
/// QoS 2 PUBLISHes awaiting PUBREL, which most sessions never have (an
/// empty `HashSet` is 48 bytes of every session, issue 16).
#[derive(Debug, Default)]
#[allow(clippy::box_collection)] // the point: `None` is 8 bytes, an empty set 48
pub(crate) struct PacketIds(Option<Box<HashSet<PacketId>>>);

impl PacketIds {
    pub(crate) fn contains(&self, id: &PacketId) -> bool {
        self.0.as_ref().is_some_and(|ids| ids.contains(id))
    }

    pub(crate) fn len(&self) -> usize {
        self.0.as_ref().map_or(0, |ids| ids.len())
    }

    /// Whether `id` was not in the set.
    pub(crate) fn insert(&mut self, id: PacketId) -> bool {
        self.0.get_or_insert_default().insert(id)
    }

    /// Whether `id` was in the set; the set's memory goes with its last id.
    pub(crate) fn remove(&mut self, id: &PacketId) -> bool {
        let Some(ids) = self.0.as_mut() else {
            return false;
        };
        let removed = ids.remove(id);
        if ids.is_empty() {
            self.0 = None;
        }
        removed
    }
}

impl Extend<PacketId> for PacketIds {
    fn extend<I: IntoIterator<Item = PacketId>>(&mut self, ids: I) {
        for id in ids {
            self.insert(id);
        }
    }
}

/// What a session subscribed to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SubscriptionEntry {
    pub(crate) options: SubscriptionOptions,
    pub(crate) id: Option<u32>,
}

#[derive(Debug)]
pub(crate) struct SessionState {
    /// The connection serving the session, if any.
    pub(crate) conn: Option<Arc<ConnControl>>,
    /// Bumped on every attach, so timers can tell a reconnect happened.
    pub(crate) generation: u64,
    /// Set once the session is discarded; nothing is queued after that.
    pub(crate) ended: bool,
    pub(crate) subscriptions: HashMap<TopicFilter, SubscriptionEntry>,
    /// Deliveries waiting for the connection (or the in-flight window).
    pub(crate) pending: Queue,
    /// Server → client QoS 1/2 by packet id, in send order for redelivery.
    pub(crate) inflight: BTreeMap<PacketId, Outgoing>,
    /// Client → server QoS 2 packet ids awaiting PUBREL.
    pub(crate) incoming_qos2: PacketIds,
    next_packet_id: u16,
    limits: QueueLimits,
    /// Made at the first drop: most sessions never lose a message (boxed:
    /// 56 bytes inline of every idle session otherwise, issue 16).
    dropped: Option<Box<DropCounters>>,
    /// Written through to the session store (a persistent session: expiry
    /// above 0 at CONNECT, or restored after a restart).
    pub(crate) durable: bool,
    /// A clean session (expiry 0) stored only for its will, so that a
    /// crash cannot swallow it (issue 15): its row is deleted when it
    /// ends, but nothing else of it (queue, subscriptions) is written.
    pub(crate) will_stored: bool,
    /// What a journal replay into the session skips.
    pub(crate) completed: crate::interconnect::Completed,
    /// The next delivery's place in the stored queue.
    pub(crate) next_seq: u64,
    /// Whether its publishers are held back for it (`backpressure`).
    pub(crate) backlog: Backlog,
}

impl SessionState {
    /// Whether the message `id` is queued or in flight here, or was done
    /// with (a copy of it arriving again, through a takeover's overlap or
    /// a replay, is not taken).
    pub(crate) fn holds(&self, id: crate::interconnect::MessageId) -> bool {
        let is = |d: &Delivery| d.message.id == Some(id);
        self.completed.contains(id)
            || self.pending.items.iter().any(is)
            || self
                .inflight
                .values()
                .any(|o| matches!(o, Outgoing::Publish(d) if is(d)))
    }

    /// A packet id not in flight (2.2.1), or `None` if all 65,535 are.
    pub(crate) fn next_packet_id(&mut self) -> Option<PacketId> {
        for _ in 0..u16::MAX {
            self.next_packet_id = self.next_packet_id.wrapping_add(1);
            if let Some(id) = PacketId::new(self.next_packet_id)
                && !self.inflight.contains_key(&id)
            {
                return Some(id);
            }
        }
        None
    }

    /// Takes the queued and unacknowledged deliveries that came through
    /// the shared subscription `filter` (all of them for `None`), for
    /// redistribution. PUBRELs in flight stay: those messages arrived.
    pub(crate) fn take_shared(&mut self, filter: Option<&TopicFilter>) -> Vec<Delivery> {
        let wanted = |d: &Delivery| match (&d.shared, filter) {
            (Some(f), Some(want)) => f == want,
            (Some(_), None) => true,
            (None, _) => false,
        };
        let mut taken = Vec::new();
        self.pending.retain(|d| {
            if wanted(d) {
                taken.push(d.clone());
                false
            } else {
                true
            }
        });
        self.inflight.retain(|_, o| match o {
            Outgoing::Publish(d) if wanted(d) => {
                let mut d = d.clone();
                d.qos = d.message.qos;
                taken.push(d);
                false
            }
            _ => true,
        });
        taken
    }

    /// What this session lost, by reason.
    pub(crate) fn dropped(&self) -> DropCounters {
        self.dropped.as_deref().copied().unwrap_or_default()
    }

    pub(crate) fn count_drop(&mut self, reason: DropReason) {
        let dropped = self.dropped.get_or_insert_default();
        match reason {
            DropReason::QueueFull => dropped.queue_full += 1,
            DropReason::OfflineQoS0 => dropped.offline_qos0 += 1,
            DropReason::Expired => dropped.expired += 1,
            DropReason::TooLarge => dropped.too_large += 1,
            DropReason::QueueBytes => dropped.queue_bytes += 1,
            DropReason::TenantQueueFull => {
                dropped.tenant_queue_full += 1;
                let tenant = &self.pending.tenant;
                tenant.dropped.fetch_add(1, Ordering::Relaxed);
                metrics::tenant_queue_dropped(&tenant.tenant);
            }
            DropReason::SlowConsumer => {
                dropped.slow_consumer += 1;
                let tenant = &self.pending.tenant;
                tenant.slow_dropped.fetch_add(1, Ordering::Relaxed);
                metrics::slow_consumer_dropped(&tenant.tenant);
            }
        }
        metrics::dropped(reason);
    }

    /// Whether the queue is at its high-water mark, for either bound.
    fn above_high_water(&self) -> bool {
        let (count, bytes) = self.pending.held();
        count >= Marks::of(self.limits.messages).high || bytes >= Marks::of(self.limits.bytes).high
    }

    /// Ends the back-pressure once the queue has drained to its low-water
    /// mark (both bounds); returns whether publishers wait for the
    /// [`Session::drained`] wake-up the caller then gives.
    pub(crate) fn relieve(&mut self) -> bool {
        if self.backlog.since.is_none() {
            return false;
        }
        let (count, bytes) = self.pending.held();
        if count > Marks::of(self.limits.messages).low || bytes > Marks::of(self.limits.bytes).low {
            return false;
        }
        self.backlog = Backlog::default();
        true
    }
}

/// One client's session inside a tenant.
#[derive(Debug)]
pub(crate) struct Session {
    client_id: Arc<str>,
    /// The principal that created the session: only it may resume it
    /// (identity is the boundary; the durable store keeps it as
    /// `SessionRecord::owner`).
    owner: Arc<str>,
    state: Mutex<SessionState>,
    /// Woken ([`Session::changed`]) on every change someone may wait for:
    /// the session ended (a delayed will then goes out at once,
    /// 3.1.3.2.2), a connection resumed it (its offline period's timer
    /// drops the delayed will and ends, issue 13 item 16), or it stopped
    /// holding its publishers back (`backpressure`). Each waiter looks at
    /// the state for what it waits for ([`Session::wait_for`]): one
    /// `Notify` where three were 104 bytes of every session (issue 16).
    changed: Notify,
}

impl Session {
    /// A session owned by principal `owner`, counted against `tenant`'s
    /// queue tally.
    pub(crate) fn new(
        client_id: Arc<str>,
        owner: Arc<str>,
        limits: QueueLimits,
        tenant: Arc<TenantQueue>,
    ) -> Self {
        Self {
            client_id,
            owner,
            state: Mutex::new(SessionState {
                conn: None,
                generation: 0,
                ended: false,
                subscriptions: HashMap::new(),
                pending: Queue::new(tenant),
                inflight: BTreeMap::new(),
                incoming_qos2: PacketIds::default(),
                next_packet_id: 0,
                limits,
                dropped: None,
                durable: false,
                will_stored: false,
                completed: crate::interconnect::Completed::default(),
                next_seq: 0,
                backlog: Backlog::default(),
            }),
            changed: Notify::new(),
        }
    }

    /// Wakes whoever waits on the session ([`Session::wait_for`]): call
    /// after a change to what they look at, outside or under its lock.
    pub(crate) fn changed(&self) {
        self.changed.notify_waiters();
    }

    /// A wait for [`Session::changed`], registered at once: look at the
    /// state after this and await it after, and no change is missed.
    pub(crate) fn change(&self) -> std::pin::Pin<Box<tokio::sync::futures::Notified<'_>>> {
        let mut notified = Box::pin(self.changed.notified());
        notified.as_mut().enable();
        notified
    }

    /// Waits until `done` holds of the session's state, looking again at
    /// every change, or until `deadline` (never without one); whether it
    /// held. Cancel-safe.
    pub(crate) async fn wait_for(
        &self,
        deadline: Option<Instant>,
        done: impl Fn(&SessionState) -> bool,
    ) -> bool {
        let timer = async {
            match deadline {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(timer);
        loop {
            let change = self.change();
            if done(&self.lock()) {
                return true;
            }
            tokio::select! {
                () = change => {}
                () = &mut timer => return false,
            }
        }
    }

    /// A session bounded by `messages` alone, counted in a tally of its own.
    #[cfg(any(test, feature = "fuzzing"))]
    pub(crate) fn with_bound(client_id: Arc<str>, messages: usize) -> Self {
        Self::new(
            client_id.clone(),
            client_id,
            QueueLimits::messages(messages),
            Arc::default(),
        )
    }

    pub(crate) fn client_id(&self) -> &Arc<str> {
        &self.client_id
    }

    /// The principal that owns the session.
    pub(crate) fn owner(&self) -> &Arc<str> {
        &self.owner
    }

    /// Locks the state. A panic elsewhere while holding it leaves plain
    /// data behind, so poisoning is ignored rather than spread.
    pub(crate) fn lock(&self) -> MutexGuard<'_, SessionState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn is_online(&self) -> bool {
        self.lock().conn.is_some()
    }

    /// Queues a delivery and wakes the connection; drops (and counts) it
    /// when the queue is full, or when it is QoS 0 and nobody is connected.
    #[cfg(test)]
    pub(crate) fn enqueue(&self, delivery: Delivery) {
        self.push(delivery, 0);
    }

    /// Queues retained messages for a new subscription. One SUBSCRIBE's
    /// worth (`cap`) always fits on top of the normal bound, so a full queue
    /// does not eat them; repeated SUBSCRIBEs still cannot grow it further.
    pub(crate) fn enqueue_retained(&self, delivery: Delivery, cap: usize) {
        self.push(delivery, cap);
    }

    /// How many retained messages [`Session::enqueue_retained`] would take
    /// now (at most `cap`): a SUBSCRIBE collects no more than that.
    pub(crate) fn retained_room(&self, cap: usize) -> usize {
        let st = self.lock();
        st.limits
            .messages
            .saturating_add(cap)
            .saturating_sub(st.pending.count())
            .min(cap)
    }

    fn push(&self, delivery: Delivery, headroom: usize) {
        if let Some(d) = self.admit(delivery, headroom, false) {
            self.place(d);
        }
    }

    /// The first half of queueing: drops (and counts) a delivery the
    /// session cannot take; for a persistent session, gives a QoS 1/2 one
    /// its place in the stored queue (`store`: a session store is in use).
    /// The caller writes it to the store, then [`Session::place`]s it, so
    /// that the store hears of a delivery before anything the connection
    /// does with it.
    pub(crate) fn admit(
        &self,
        mut delivery: Delivery,
        headroom: usize,
        store: bool,
    ) -> Option<Delivery> {
        let mut st = self.lock();
        if st.ended {
            return None;
        }
        if st.conn.is_none() && delivery.qos == QoS::AtMostOnce {
            st.count_drop(DropReason::OfflineQoS0);
            return None;
        }
        let limits = st.limits;
        if let Err(reason) = st
            .pending
            .reserve(delivery.message.cost(), &limits, headroom)
        {
            let reason = match reason {
                DropReason::QueueFull | DropReason::QueueBytes if st.backlog.slow => {
                    DropReason::SlowConsumer
                }
                other => other,
            };
            st.count_drop(reason);
            return None;
        }
        if store && st.durable && delivery.qos != QoS::AtMostOnce {
            delivery.seq = Some(st.next_seq);
            st.next_seq += 1;
        }
        Some(delivery)
    }

    /// Queues an admitted delivery (its room was reserved by
    /// [`Session::admit`]) and wakes the connection. Returns whether the
    /// publisher is to wait for the queue to drain: it is at its
    /// high-water mark, with a connection to drain it (an offline
    /// session's queue only fills), and not yet found a slow consumer.
    pub(crate) fn place(&self, delivery: Delivery) -> bool {
        let mut st = self.lock();
        if st.ended {
            st.pending.cancel(delivery.message.cost());
            return false;
        }
        st.pending.push_reserved(delivery);
        let Some(conn) = &st.conn else {
            return false;
        };
        conn.wake();
        if st.backlog.slow || !st.above_high_water() {
            return false;
        }
        st.backlog.since.get_or_insert_with(Instant::now);
        true
    }

    /// Since when the session holds its publishers back, if it does.
    pub(crate) fn holding_back(&self) -> Option<Instant> {
        let st = self.lock();
        if st.ended || st.conn.is_none() || st.backlog.slow {
            return None;
        }
        st.backlog.since
    }

    /// The session stayed above its high-water mark past the bound:
    /// publishers stop waiting for it, and `policy` says what becomes of
    /// it. Counted once per time it fills up.
    pub(crate) fn slow_consumer(&self, policy: SlowConsumerPolicy) {
        let mut st = self.lock();
        if st.ended || st.backlog.slow || st.backlog.since.is_none() {
            return;
        }
        st.backlog.slow = true;
        let tenant = &st.pending.tenant.tenant;
        let (queued, _) = st.pending.held();
        warn!(tenant = %tenant, client_id = %self.client_id, queued, policy = policy.as_str(), "slow consumer: queue full past the slow-consumer timeout");
        metrics::slow_consumer(tenant, policy);
        if policy == SlowConsumerPolicy::Disconnect
            && let Some(conn) = &st.conn
        {
            conn.kick_saying(
                ReasonCode::QuotaExceeded,
                Some("slow consumer: queue full past the slow-consumer timeout".to_owned()),
            );
        }
        drop(st);
        self.changed();
    }

    /// The connection let go of the session: nothing drains it now, so
    /// nobody waits for it.
    pub(crate) fn stop_holding_back(&self) {
        self.lock().backlog = Backlog::default();
        self.changed();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Message;
    use bytes::Bytes;
    use mqtt::{Properties, TopicName};

    #[test]
    fn packet_ids_hold_memory_only_while_some_are_in() {
        let pid = |n: u16| PacketId::new(n).unwrap();
        let mut ids = PacketIds::default();
        assert!(ids.0.is_none());
        assert!(ids.insert(pid(7)));
        assert!(!ids.insert(pid(7)));
        ids.extend([pid(8), pid(9)]);
        assert_eq!(ids.len(), 3);
        assert!(ids.contains(&pid(8)));
        assert!(ids.remove(&pid(7)) && ids.remove(&pid(8)));
        assert!(!ids.remove(&pid(7)));
        assert!(ids.0.is_some());
        assert!(ids.remove(&pid(9)));
        assert!(ids.0.is_none());
        assert_eq!(ids.len(), 0);
        assert!(!ids.contains(&pid(9)));
    }

    /// A message on topic `t`, not retained, with no expiry.
    fn message(payload: Bytes, qos: QoS, properties: Properties) -> Arc<Message> {
        Arc::new(Message::new(
            TopicName::parse("t").unwrap(),
            payload,
            qos,
            false,
            properties,
            None,
            Instant::now(),
        ))
    }

    fn delivery(qos: QoS) -> Delivery {
        Delivery {
            message: message(Bytes::new(), qos, Properties::default()),
            qos,
            retain: false,
            subscription_ids: vec![],
            shared: None,
            seq: None,
        }
    }

    /// A QoS 1 delivery of `payload` bytes with `props` one-character
    /// user properties.
    fn sized(payload: usize, props: usize) -> Delivery {
        let properties = Properties {
            user_properties: mqtt::UserProperties::from_pairs(std::iter::repeat_n(
                ("k", "v"),
                props,
            ))
            .unwrap(),
            ..Properties::default()
        };
        let mut d = delivery(QoS::AtLeastOnce);
        d.message = message(Bytes::from(vec![0; payload]), QoS::AtLeastOnce, properties);
        d
    }

    fn limits(bytes: usize, tenant_messages: usize, tenant_bytes: usize) -> QueueLimits {
        QueueLimits {
            messages: 1000,
            bytes,
            tenant_messages,
            tenant_bytes,
        }
    }

    #[test]
    fn a_message_costs_about_its_wire_size() {
        // The message: 142,000 one-character user properties, about
        // 1 MB on the wire (7 bytes a pair).
        let d = sized(0, 142_000);
        let wire = 142_000 * 7;
        assert!(d.message.cost() >= wire);
        assert!(d.message.cost() < wire + 1024, "{}", d.message.cost());
        // A copy for another session shares every byte of it.
        let copy = d.clone();
        assert!(Arc::ptr_eq(&copy.message, &d.message));
    }

    #[test]
    fn the_byte_bound_drops_and_counts() {
        let tenant = Arc::new(TenantQueue::default());
        let one = sized(1000, 0).message.cost();
        let s = Session::new(
            Arc::from("c"),
            Arc::from("p"),
            limits(2 * one, 100, usize::MAX),
            tenant.clone(),
        );
        for _ in 0..3 {
            s.enqueue(sized(1000, 0));
        }
        let mut st = s.lock();
        assert_eq!(st.pending.len(), 2);
        assert_eq!(st.dropped().queue_bytes, 1);
        assert_eq!(tenant.held(), (2, 2 * one));
        // Taking one out gives its room back, to the session and tenant.
        st.pending.pop_front().unwrap();
        assert_eq!(tenant.held(), (1, one));
        drop(st);
        s.enqueue(sized(1000, 0));
        assert_eq!(s.lock().pending.len(), 2);
    }

    #[test]
    fn the_tenant_bound_spans_sessions_and_is_given_back_when_they_go() {
        let tenant = Arc::new(TenantQueue::default());
        let one = sized(1000, 0).message.cost();
        let l = limits(usize::MAX, 100, 3 * one);
        let a = Session::new(Arc::from("a"), Arc::from("p"), l, tenant.clone());
        let b = Session::new(Arc::from("b"), Arc::from("p"), l, tenant.clone());
        for _ in 0..2 {
            a.enqueue(sized(1000, 0));
            b.enqueue(sized(1000, 0));
        }
        assert_eq!(tenant.held(), (3, 3 * one));
        assert_eq!(b.lock().dropped().tenant_queue_full, 1);
        assert_eq!(tenant.dropped.load(Ordering::Relaxed), 1);
        // Another tenant's tally is untouched by all this.
        let other = Arc::new(TenantQueue::default());
        let c = Session::new(Arc::from("c"), Arc::from("p"), l, other.clone());
        c.enqueue(sized(1000, 0));
        assert_eq!(c.lock().pending.len(), 1);
        // A session that goes away gives its room back.
        drop(a);
        assert_eq!(tenant.held(), (1, one));
        b.lock().take_shared(None);
        b.lock().pending.clear();
        assert_eq!(tenant.held(), (0, 0));
    }

    /// What `s` holds and what it dropped: (pending, dropped as offline
    /// QoS 0, dropped as queue full).
    fn held_and_dropped(s: &Session) -> (usize, u64, u64) {
        let st = s.lock();
        (
            st.pending.len(),
            st.dropped().offline_qos0,
            st.dropped().queue_full,
        )
    }

    #[test]
    fn offline_queue_is_bounded_and_counts_drops() {
        let s = Session::with_bound(Arc::from("c"), 2);
        s.enqueue(delivery(QoS::AtMostOnce));
        for _ in 0..3 {
            s.enqueue(delivery(QoS::AtLeastOnce));
        }
        assert_eq!(held_and_dropped(&s), (2, 1, 1));
    }

    #[test]
    fn online_qos0_overflow_is_dropped_and_counted() {
        let s = Session::with_bound(Arc::from("c"), 1);
        s.lock().conn = Some(ConnControl::new(1));
        s.enqueue(delivery(QoS::AtMostOnce));
        s.enqueue(delivery(QoS::AtMostOnce));
        assert_eq!(held_and_dropped(&s), (1, 0, 1));
    }

    #[test]
    fn packet_ids_skip_those_in_flight_and_never_zero() {
        let s = Session::with_bound(Arc::from("c"), 2);
        let mut st = s.lock();
        let a = st.next_packet_id().unwrap();
        st.inflight.insert(a, Outgoing::Released(None));
        st.next_packet_id = u16::MAX;
        assert_eq!(st.next_packet_id(), PacketId::new(2));
        st.next_packet_id = 0;
        assert_eq!(st.next_packet_id(), PacketId::new(2));
    }
}
