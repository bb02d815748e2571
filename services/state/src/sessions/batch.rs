//! [`Batch`]: the session changes waiting for the next commit, coalesced
//! per session so that the order between phases of one transaction no
//! longer matters (see `store::SessionWrites`):
//!
//! - ending a session (or a clean start) drops what was buffered for it
//!   and marks it to be deleted first;
//! - a change to a delivery queued in this batch rewrites the pending row
//!   (sent, released), and an acknowledgement removes it: a message that
//!   an online persistent subscriber takes and acknowledges within one
//!   commit window is never written;
//! - a disconnect after a connect in the same batch rewrites the pending
//!   session row.
//!
//! A failed transaction's batch is put back under the newer one with
//! [`Batch::absorb`], which replays the newer changes onto it.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::SystemTime;

use broker::session_store::{
    DeliveryState, Disconnected, QueuedFor, SessionRecord, StoredMessage, StoredSubscription,
};
use broker::{MessageId, TenantId};
use mqtt::{PacketId, QoS, TopicFilter};
use store::SessionMessageId;

/// A session: tenant and client id.
pub(crate) type Key = (TenantId, Arc<str>);

/// A message body waiting to be written, shared by the rows referencing it.
#[derive(Debug)]
pub(crate) struct PendingBody {
    pub(crate) id: SessionMessageId,
    pub(crate) message: Arc<StoredMessage>,
    pub(crate) at: SystemTime,
}

/// A queue row waiting to be inserted, in its latest state.
#[derive(Debug, Clone)]
pub(crate) struct PendingEntry {
    pub(crate) body: Arc<PendingBody>,
    pub(crate) qos: QoS,
    pub(crate) retain: bool,
    pub(crate) subscription_ids: Vec<u32>,
    pub(crate) shared: Option<TopicFilter>,
    pub(crate) state: DeliveryState,
}

/// A session row written at CONNECT, with what happened to it since.
#[derive(Debug, Clone)]
pub(crate) struct Upsert {
    pub(crate) record: SessionRecord,
    pub(crate) connected_at: SystemTime,
    pub(crate) disconnected: Option<Disconnected>,
}

#[derive(Debug, Clone, Default)]
pub(crate) enum Row {
    /// Only partial changes (below) to the stored row.
    #[default]
    Unchanged,
    Upsert(Box<Upsert>),
    Deleted,
}

/// Everything buffered for one session.
#[derive(Debug, Clone, Default)]
pub(crate) struct SessionChanges {
    /// Delete what is stored for the session before the rest.
    pub(crate) reset: bool,
    pub(crate) row: Row,
    /// With `Row::Unchanged`: the session went offline.
    pub(crate) disconnected: Option<Disconnected>,
    /// With `Row::Unchanged`: its will was published.
    pub(crate) will_cleared: bool,
    pub(crate) subscriptions: HashMap<TopicFilter, Option<StoredSubscription>>,
    /// New queue rows by seq.
    pub(crate) inserts: BTreeMap<u64, PendingEntry>,
    /// Stored queue rows: new state, or `None` when done.
    pub(crate) transitions: BTreeMap<u64, Option<DeliveryState>>,
    /// Incoming QoS 2 ids: awaiting PUBREL or released.
    pub(crate) incoming: HashMap<PacketId, bool>,
    /// Routed QoS 2 messages its client completed.
    pub(crate) completed: Vec<MessageId>,
}

impl SessionChanges {
    fn gone(&self) -> bool {
        matches!(self.row, Row::Deleted)
    }

    fn connect(&mut self, record: &SessionRecord, clean_start: bool, at: SystemTime) {
        let upsert = Row::Upsert(Box::new(Upsert {
            record: record.clone(),
            connected_at: at,
            disconnected: None,
        }));
        if clean_start || self.gone() {
            // Anything buffered before belonged to the discarded session.
            *self = SessionChanges {
                reset: true,
                row: upsert,
                ..SessionChanges::default()
            };
            return;
        }
        self.row = upsert;
        self.disconnected = None;
        self.will_cleared = false;
    }

    fn disconnect(&mut self, d: &Disconnected) {
        match &mut self.row {
            Row::Upsert(u) => {
                if d.will_due_at.is_none() {
                    u.record.will = None;
                }
                u.disconnected = Some(*d);
            }
            Row::Unchanged => self.disconnected = Some(*d),
            Row::Deleted => {}
        }
    }

    fn will_done(&mut self) {
        match &mut self.row {
            Row::Upsert(u) => {
                u.record.will = None;
                if let Some(d) = &mut u.disconnected {
                    d.will_due_at = None;
                }
            }
            Row::Unchanged => self.will_cleared = true,
            Row::Deleted => {}
        }
    }

    fn end(&mut self) {
        *self = SessionChanges {
            reset: true,
            row: Row::Deleted,
            ..SessionChanges::default()
        };
    }

    fn subscription(&mut self, filter: TopicFilter, sub: Option<StoredSubscription>) {
        if !self.gone() {
            self.subscriptions.insert(filter, sub);
        }
    }

    fn insert(&mut self, seq: u64, entry: PendingEntry) {
        if !self.gone() {
            self.inserts.insert(seq, entry);
        }
    }

    fn delivery_state(&mut self, seq: u64, state: DeliveryState) {
        if let Some(e) = self.inserts.get_mut(&seq) {
            // Only QoS 2 has a PUBREL state.
            if e.qos == QoS::ExactlyOnce || !matches!(state, DeliveryState::Released(_)) {
                e.state = state;
            }
        } else if !self.reset {
            // A row stored earlier (after a reset, rows stored earlier
            // belonged to the discarded session).
            self.transitions.insert(seq, Some(state));
        }
    }

    fn delivered(&mut self, seq: u64) {
        if self.inserts.remove(&seq).is_none() && !self.reset {
            self.transitions.insert(seq, None);
        }
    }

    fn incoming(&mut self, packet_id: PacketId, awaiting: bool) {
        if !self.gone() {
            self.incoming.insert(packet_id, awaiting);
        }
    }

    fn completed(&mut self, id: MessageId) {
        if !self.gone() {
            self.completed.push(id);
        }
    }

    /// Replays `newer` (changes made after ours) onto these.
    fn absorb(&mut self, newer: SessionChanges) {
        if newer.reset {
            *self = newer;
            return;
        }
        match newer.row {
            Row::Upsert(u) => {
                self.row = Row::Upsert(u);
                self.disconnected = None;
                self.will_cleared = false;
            }
            Row::Unchanged | Row::Deleted => {
                if let Some(d) = newer.disconnected {
                    self.disconnect(&d);
                }
                if newer.will_cleared {
                    self.will_done();
                }
            }
        }
        for (filter, sub) in newer.subscriptions {
            self.subscription(filter, sub);
        }
        for (seq, entry) in newer.inserts {
            self.insert(seq, entry);
        }
        for (seq, change) in newer.transitions {
            match change {
                Some(state) => self.delivery_state(seq, state),
                None => self.delivered(seq),
            }
        }
        for (packet_id, awaiting) in newer.incoming {
            self.incoming(packet_id, awaiting);
        }
        for id in newer.completed {
            self.completed(id);
        }
    }
}

/// The changes of many sessions waiting for one commit.
#[derive(Debug, Default)]
pub(crate) struct Batch {
    pub(crate) sessions: HashMap<Key, SessionChanges>,
    /// Changes recorded: an upper bound of the rows to write.
    pub(crate) changes: usize,
}

impl Batch {
    pub(crate) fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    fn session(&mut self, tenant: &TenantId, client_id: &str) -> &mut SessionChanges {
        self.changes += 1;
        self.sessions
            .entry((tenant.clone(), Arc::from(client_id)))
            .or_default()
    }

    pub(crate) fn connect(
        &mut self,
        tenant: &TenantId,
        record: &SessionRecord,
        clean_start: bool,
        at: SystemTime,
    ) {
        self.session(tenant, &record.client_id)
            .connect(record, clean_start, at);
    }

    pub(crate) fn disconnect(&mut self, tenant: &TenantId, client_id: &str, d: &Disconnected) {
        self.session(tenant, client_id).disconnect(d);
    }

    pub(crate) fn will_done(&mut self, tenant: &TenantId, client_id: &str) {
        self.session(tenant, client_id).will_done();
    }

    pub(crate) fn end(&mut self, tenant: &TenantId, client_id: &str) {
        self.session(tenant, client_id).end();
    }

    pub(crate) fn subscription(
        &mut self,
        tenant: &TenantId,
        client_id: &str,
        filter: &TopicFilter,
        sub: Option<&StoredSubscription>,
    ) {
        self.session(tenant, client_id)
            .subscription(filter.clone(), sub.cloned());
    }

    /// Queues `body` for every target.
    pub(crate) fn enqueue(
        &mut self,
        tenant: &TenantId,
        body: &Arc<PendingBody>,
        targets: &[&QueuedFor],
    ) {
        for t in targets {
            self.changes += 1;
            let entry = PendingEntry {
                body: body.clone(),
                qos: t.qos,
                retain: t.retain,
                subscription_ids: t.subscription_ids.clone(),
                shared: t.shared.clone(),
                state: DeliveryState::Queued,
            };
            self.sessions
                .entry((tenant.clone(), t.client_id.clone()))
                .or_default()
                .insert(t.seq, entry);
        }
    }

    pub(crate) fn delivery_state(
        &mut self,
        tenant: &TenantId,
        client_id: &str,
        seq: u64,
        state: DeliveryState,
    ) {
        self.session(tenant, client_id).delivery_state(seq, state);
    }

    pub(crate) fn delivered(&mut self, tenant: &TenantId, client_id: &str, seq: u64) {
        self.session(tenant, client_id).delivered(seq);
    }

    pub(crate) fn incoming(
        &mut self,
        tenant: &TenantId,
        client_id: &str,
        packet_id: PacketId,
        awaiting: bool,
    ) {
        self.session(tenant, client_id)
            .incoming(packet_id, awaiting);
    }

    pub(crate) fn completed(&mut self, tenant: &TenantId, client_id: &str, id: MessageId) {
        self.session(tenant, client_id).completed(id);
    }

    /// Puts a failed batch (`self`, older) back under `newer`.
    pub(crate) fn absorb(&mut self, newer: Batch) {
        self.changes += newer.changes;
        for (key, changes) in newer.sessions {
            self.sessions.entry(key).or_default().absorb(changes);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use broker::session_store::testing::{pid, queued_for, record};
    use bytes::Bytes;
    use mqtt::{Properties, TopicName};

    fn acme() -> TenantId {
        TenantId::parse("acme").unwrap()
    }

    fn body() -> Arc<PendingBody> {
        Arc::new(PendingBody {
            id: SessionMessageId::new(),
            message: Arc::new(StoredMessage {
                topic: TopicName::parse("t").unwrap(),
                payload: Bytes::from_static(b"x"),
                qos: QoS::ExactlyOnce,
                properties: Properties::default(),
                expires_at: None,
                id: None,
            }),
            at: SystemTime::now(),
        })
    }

    fn of<'a>(b: &'a Batch, client: &str) -> &'a SessionChanges {
        &b.sessions[&(acme(), Arc::from(client))]
    }

    #[test]
    fn a_delivery_acknowledged_within_the_batch_is_never_written() {
        let mut b = Batch::default();
        let t = [
            queued_for("a", 1, QoS::AtLeastOnce),
            queued_for("b", 1, QoS::ExactlyOnce),
        ];
        b.enqueue(&acme(), &body(), &t.iter().collect::<Vec<_>>());
        b.delivery_state(&acme(), "a", 1, DeliveryState::Sent(pid(3)));
        b.delivered(&acme(), "a", 1);
        b.delivery_state(&acme(), "b", 1, DeliveryState::Sent(pid(4)));
        b.delivery_state(&acme(), "b", 1, DeliveryState::Released(pid(4)));
        // A row stored by an earlier batch: a transition.
        b.delivered(&acme(), "b", 0);
        assert!(of(&b, "a").inserts.is_empty() && of(&b, "a").transitions.is_empty());
        assert_eq!(
            of(&b, "b").inserts[&1].state,
            DeliveryState::Released(pid(4))
        );
        assert_eq!(of(&b, "b").transitions[&0], None);
    }

    #[test]
    fn ending_or_a_clean_start_drops_what_was_buffered() {
        let mut b = Batch::default();
        b.connect(&acme(), &record("a"), false, SystemTime::now());
        b.enqueue(&acme(), &body(), &[&queued_for("a", 5, QoS::AtLeastOnce)]);
        b.delivered(&acme(), "a", 2);
        b.end(&acme(), "a");
        let a = of(&b, "a");
        assert!(a.reset && matches!(a.row, Row::Deleted));
        assert!(a.inserts.is_empty() && a.transitions.is_empty());
        // Nothing attaches to an ended session until it connects again.
        b.enqueue(&acme(), &body(), &[&queued_for("a", 6, QoS::AtLeastOnce)]);
        assert!(of(&b, "a").inserts.is_empty());
        b.connect(&acme(), &record("a"), false, SystemTime::now());
        b.enqueue(&acme(), &body(), &[&queued_for("a", 0, QoS::AtLeastOnce)]);
        // Transitions of the old session's rows are not kept either.
        b.delivered(&acme(), "a", 3);
        let a = of(&b, "a");
        assert!(a.reset && matches!(a.row, Row::Upsert(_)));
        assert_eq!(a.inserts.len(), 1);
        assert!(a.transitions.is_empty());
    }

    #[test]
    fn a_failed_batch_put_back_keeps_the_order_of_changes() {
        let mut older = Batch::default();
        older.enqueue(&acme(), &body(), &[&queued_for("a", 1, QoS::ExactlyOnce)]);
        older.subscription(&acme(), "a", &TopicFilter::parse("x").unwrap(), None);
        older.delivery_state(&acme(), "a", 0, DeliveryState::Sent(pid(1)));
        let mut newer = Batch::default();
        newer.delivery_state(&acme(), "a", 1, DeliveryState::Sent(pid(2)));
        newer.delivered(&acme(), "a", 0);
        newer.incoming(&acme(), "a", pid(9), true);
        let at = SystemTime::now();
        newer.disconnect(
            &acme(),
            "a",
            &Disconnected {
                at,
                expires_at: None,
                will_due_at: None,
            },
        );
        older.absorb(newer);
        let a = of(&older, "a");
        assert_eq!(a.inserts[&1].state, DeliveryState::Sent(pid(2)));
        assert_eq!(a.transitions[&0], None);
        assert!(a.incoming[&pid(9)]);
        assert_eq!(a.subscriptions.len(), 1);
        assert!(a.disconnected.is_some());
        // A newer end wins over everything older.
        let mut end = Batch::default();
        end.end(&acme(), "a");
        older.absorb(end);
        assert!(of(&older, "a").inserts.is_empty());
    }
}
