//! [`Session`]: the state that outlives a network connection (4.1):
//! subscriptions, messages queued for the client, QoS 1/2 packets in flight
//! in both directions. One std `Mutex` per session: routing locks it only
//! to push a delivery, nothing awaits under it, and sessions never share a
//! lock, so a slow client contends only with itself.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use mqtt::{PacketId, QoS, ReasonCode, SubscriptionOptions, TopicFilter};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::PublishLimits;
use crate::message::Delivery;
use crate::metrics::{self, DropReason};

/// The link between a session and the connection currently serving it.
#[derive(Debug)]
pub(crate) struct ConnControl {
    pub(crate) id: u64,
    /// Woken when deliveries are queued.
    pub(crate) wake: Notify,
    /// Cancelled to close the connection (session takeover, MQTT-3.1.4-3,
    /// or an administrative disconnect).
    pub(crate) kicked: CancellationToken,
    /// The reason the DISCONNECT gives when `kicked` fires; takeover when
    /// unset.
    kick_reason: Mutex<Option<ReasonCode>>,
    /// Cancelled by the connection once it has let go of the session.
    pub(crate) finished: CancellationToken,
    /// Publish limits set by the platform while connected, for the
    /// connection to pick up at its next PUBLISH; `limits_changed` says
    /// there are some, so the hot path reads one atomic and no lock.
    new_limits: Mutex<Option<PublishLimits>>,
    limits_changed: AtomicBool,
    /// Who authenticated the connection, so that deleting a credential
    /// can end the sessions it opened. Set once, at CONNECT.
    pub(crate) principal: std::sync::OnceLock<String>,
}

impl ConnControl {
    pub(crate) fn new(id: u64) -> Arc<Self> {
        Arc::new(Self {
            id,
            wake: Notify::new(),
            kicked: CancellationToken::new(),
            kick_reason: Mutex::new(None),
            finished: CancellationToken::new(),
            new_limits: Mutex::new(None),
            limits_changed: AtomicBool::new(false),
            principal: std::sync::OnceLock::new(),
        })
    }

    /// Gives the connection new publish limits, in force from its next
    /// PUBLISH (with full buckets).
    pub(crate) fn set_limits(&self, limits: PublishLimits) {
        *self
            .new_limits
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(limits);
        self.limits_changed.store(true, Ordering::Release);
    }

    /// New publish limits, if the platform set some since the last call.
    pub(crate) fn take_limits(&self) -> Option<PublishLimits> {
        // A plain load first: the hot path pays no read-modify-write.
        if !self.limits_changed.load(Ordering::Relaxed)
            || !self.limits_changed.swap(false, Ordering::Acquire)
        {
            return None;
        }
        self.new_limits
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }

    /// Closes the connection with `reason`.
    pub(crate) fn kick(&self, reason: ReasonCode) {
        *self
            .kick_reason
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(reason);
        self.kicked.cancel();
    }

    /// Why the connection was kicked.
    pub(crate) fn kick_reason(&self) -> ReasonCode {
        self.kick_reason
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .unwrap_or(ReasonCode::SessionTakenOver)
    }
}

/// An outgoing QoS 1/2 message not yet completed by the client.
#[derive(Debug, Clone)]
pub(crate) enum Outgoing {
    /// PUBLISH sent, PUBACK/PUBREC awaited.
    Publish(Delivery),
    /// PUBREC received, PUBREL sent, PUBCOMP awaited.
    Released,
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
    pub(crate) pending: VecDeque<Delivery>,
    /// Server → client QoS 1/2 by packet id, in send order for redelivery.
    pub(crate) inflight: BTreeMap<PacketId, Outgoing>,
    /// Client → server QoS 2 packet ids awaiting PUBREL.
    pub(crate) incoming_qos2: HashSet<PacketId>,
    next_packet_id: u16,
    max_pending: usize,
    pub(crate) dropped: DropCounters,
}

impl SessionState {
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

    pub(crate) fn count_drop(&mut self, reason: DropReason) {
        match reason {
            DropReason::QueueFull => self.dropped.queue_full += 1,
            DropReason::OfflineQoS0 => self.dropped.offline_qos0 += 1,
            DropReason::Expired => self.dropped.expired += 1,
            DropReason::TooLarge => self.dropped.too_large += 1,
        }
        metrics::dropped(reason);
    }
}

/// One client's session inside a tenant.
#[derive(Debug)]
pub(crate) struct Session {
    client_id: Arc<str>,
    state: Mutex<SessionState>,
    /// Cancelled when the session ends, so a delayed will goes out at once
    /// (3.1.3.2.2: the earlier of the delay and the session's end).
    pub(crate) ended_signal: CancellationToken,
}

impl Session {
    pub(crate) fn new(client_id: Arc<str>, max_pending: usize) -> Self {
        Self {
            client_id,
            state: Mutex::new(SessionState {
                conn: None,
                generation: 0,
                ended: false,
                subscriptions: HashMap::new(),
                pending: VecDeque::new(),
                inflight: BTreeMap::new(),
                incoming_qos2: HashSet::new(),
                next_packet_id: 0,
                max_pending,
                dropped: DropCounters::default(),
            }),
            ended_signal: CancellationToken::new(),
        }
    }

    pub(crate) fn client_id(&self) -> &Arc<str> {
        &self.client_id
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
        st.max_pending
            .saturating_add(cap)
            .saturating_sub(st.pending.len())
            .min(cap)
    }

    fn push(&self, delivery: Delivery, headroom: usize) {
        let mut st = self.lock();
        if st.ended {
            return;
        }
        if st.conn.is_none() && delivery.qos == QoS::AtMostOnce {
            st.count_drop(DropReason::OfflineQoS0);
            return;
        }
        if st.pending.len() >= st.max_pending.saturating_add(headroom) {
            st.count_drop(DropReason::QueueFull);
            return;
        }
        st.pending.push_back(delivery);
        if let Some(conn) = &st.conn {
            conn.wake.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Message;
    use bytes::Bytes;
    use mqtt::{Properties, TopicName};
    use tokio::time::Instant;

    fn delivery(qos: QoS) -> Delivery {
        Delivery {
            message: Arc::new(Message::new(
                TopicName::parse("t").unwrap(),
                Bytes::new(),
                qos,
                false,
                Properties::default(),
                None,
                Instant::now(),
            )),
            qos,
            retain: false,
            subscription_ids: vec![],
            shared: None,
        }
    }

    #[test]
    fn offline_queue_is_bounded_and_counts_drops() {
        let s = Session::new(Arc::from("c"), 2);
        s.enqueue(delivery(QoS::AtMostOnce));
        for _ in 0..3 {
            s.enqueue(delivery(QoS::AtLeastOnce));
        }
        let st = s.lock();
        assert_eq!(st.pending.len(), 2);
        assert_eq!(st.dropped.offline_qos0, 1);
        assert_eq!(st.dropped.queue_full, 1);
    }

    #[test]
    fn online_qos0_overflow_is_dropped_and_counted() {
        let s = Session::new(Arc::from("c"), 1);
        s.lock().conn = Some(ConnControl::new(1));
        s.enqueue(delivery(QoS::AtMostOnce));
        s.enqueue(delivery(QoS::AtMostOnce));
        let st = s.lock();
        assert_eq!(st.pending.len(), 1);
        assert_eq!(st.dropped.queue_full, 1);
        assert_eq!(st.dropped.offline_qos0, 0);
    }

    #[test]
    fn packet_ids_skip_those_in_flight_and_never_zero() {
        let s = Session::new(Arc::from("c"), 2);
        let mut st = s.lock();
        let a = st.next_packet_id().unwrap();
        st.inflight.insert(a, Outgoing::Released);
        st.next_packet_id = u16::MAX;
        assert_eq!(st.next_packet_id(), PacketId::new(2));
        st.next_packet_id = 0;
        assert_eq!(st.next_packet_id(), PacketId::new(2));
    }
}
