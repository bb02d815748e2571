//! A tenant's persistent sessions and the [`SessionStore`] (issue 14):
//! queueing a message durably for the sessions it reaches, and restoring
//! the sessions stored before a restart. The write paths and which
//! acknowledgement waits for which write: `services/state/sessions.md`.

use std::sync::Arc;
use std::time::SystemTime;

use mqtt::LastWill;
use tokio::time::Instant;

use super::Tenant;
use crate::message::{Delivery, Message};
use crate::session::{Outgoing, QueueLimits, Session};
use crate::session_store::{DeliveryState, QueuedFor, SessionStore, StoredSession};
use crate::store::Durability;

/// The session store a tenant writes through (a newtype: the trait object
/// has no `Debug`).
pub(crate) struct StoreHandle(pub(crate) Arc<dyn SessionStore>);

impl std::fmt::Debug for StoreHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionStore")
    }
}

/// A session restored from the store, with the deadlines it still has.
pub(crate) struct Restored {
    pub(crate) session: Arc<Session>,
    pub(crate) generation: u64,
    /// The will still to go out, with who left it.
    pub(crate) will: Option<(LastWill, String)>,
    /// When the will is due (wall clock); `None`: no will.
    pub(crate) will_due_at: Option<SystemTime>,
    /// When the session ends unless resumed; `None`: never.
    pub(crate) expires_at: Option<SystemTime>,
}

impl Tenant {
    /// Makes the tenant write its persistent sessions through `store`.
    pub(crate) fn set_session_store(&self, store: Arc<dyn SessionStore>) {
        let _ = self.store.set(StoreHandle(store));
    }

    /// The session store in use, if any.
    pub(crate) fn session_store(&self) -> Option<&dyn SessionStore> {
        self.store.get().map(|h| &*h.0)
    }

    /// Queues `message` for `targets`: deliveries for persistent sessions
    /// get their place in the stored queue and are written (one body, one
    /// row per session) before any connection can see them. Returns what
    /// the publisher's acknowledgement waits for. Sessions the message left
    /// at their high-water mark go to `full`, if given: the publisher is to
    /// wait for them (`backpressure`).
    pub(crate) fn queue(
        &self,
        message: &Arc<Message>,
        targets: Vec<(Arc<Session>, Delivery)>,
        mut full: Option<&mut Vec<Arc<Session>>>,
    ) -> Option<Durability> {
        let store = self.session_store();
        let admitted: Vec<(Arc<Session>, Delivery)> = targets
            .into_iter()
            .filter_map(|(s, d)| s.admit(d, 0, store.is_some()).map(|d| (s, d)))
            .collect();
        let durability = match store {
            Some(store) => {
                let stored: Vec<QueuedFor> = admitted
                    .iter()
                    .filter_map(|(s, d)| {
                        Some(QueuedFor {
                            client_id: s.client_id().clone(),
                            seq: d.seq?,
                            qos: d.qos,
                            retain: d.retain,
                            subscription_ids: d.subscription_ids.clone(),
                            shared: d.shared.clone(),
                        })
                    })
                    .collect();
                if stored.is_empty() {
                    None
                } else {
                    let body =
                        Arc::new(message.to_session_store(Instant::now(), SystemTime::now()));
                    store.enqueue(&self.id, &body, &stored)
                }
            }
            None => None,
        };
        for (s, d) in admitted {
            if s.place(d)
                && let Some(full) = full.as_deref_mut()
            {
                full.push(s);
            }
        }
        durability
    }

    /// Tells the store that the deliveries `taken` from persistent session
    /// `session` (handed to another shared-subscription member) are done
    /// there.
    pub(crate) fn forget_taken(&self, session: &Session, taken: &[Delivery]) {
        let Some(store) = self.session_store() else {
            return;
        };
        for seq in taken.iter().filter_map(|d| d.seq) {
            store.delivered(&self.id, session.client_id(), seq);
        }
    }

    /// Ends the session of `client_id` with its queue, closing its
    /// connection (0x98) if it has one. Returns whether it existed and
    /// what makes its deletion durable.
    pub(crate) fn end_session(&self, client_id: &str) -> (bool, Option<Durability>) {
        let Some(session) = self.sessions().remove(client_id) else {
            return (false, None);
        };
        (true, self.end_removed(&session))
    }

    /// Ends every session `owner` created. Returns how many.
    pub(crate) fn end_sessions_of(&self, owner: &str) -> usize {
        let theirs: Vec<Arc<Session>> = {
            let mut sessions = self.sessions();
            let ids: Vec<Arc<str>> = sessions
                .iter()
                .filter(|(_, s)| &**s.owner() == owner)
                .map(|(id, _)| id.clone())
                .collect();
            ids.iter().filter_map(|id| sessions.remove(id)).collect()
        };
        for s in &theirs {
            drop(self.end_removed(s));
        }
        theirs.len()
    }

    /// Ends a session already taken out of the map; its connection, if
    /// any, lets go (its will then goes out as for any server close).
    fn end_removed(&self, session: &Arc<Session>) -> Option<Durability> {
        let conn = session.lock().conn.take();
        if let Some(c) = conn {
            c.kick(mqtt::ReasonCode::AdministrativeAction);
        }
        self.end(session)
    }

    /// Makes `stored`, the session of `client_id` as another node of the
    /// cluster left it in the store, this node's (`None`: it has none
    /// any more), in place of any copy held here. A CONNECT attaches to
    /// it next: its will and its expiry wait for that connection's end.
    ///
    /// With a `stand_in` ([`Tenant::stand_in`]), what it caught while the
    /// other node let go follows the stored queue, less the messages the
    /// stored queue already has (same id): the stand-in becomes the
    /// session, so nothing routed meanwhile falls between the two.
    pub(crate) fn adopt(
        &self,
        client_id: &str,
        stored: Option<StoredSession>,
        limits: QueueLimits,
        stand_in: Option<Arc<Session>>,
    ) {
        let Some(stand_in) = stand_in else {
            if let Some(stale) = self.session(client_id) {
                self.forget(&stale);
            }
            if let Some(mut s) = stored {
                s.connected = false;
                s.expires_at = None;
                s.will_due_at = None;
                drop(self.restore(vec![s], limits, false));
            }
            return;
        };
        match stored {
            Some(s) => self.merge_into(&stand_in, s),
            None => self.forget(&stand_in),
        }
    }

    /// A session in the making for `client_id` (owned by `owner`), while
    /// another node of the cluster lets go of it (issue 15): in the index
    /// with `subscriptions` (as stored before the release), but not in
    /// the session table and not written to the store, it takes every
    /// message routed here for it from now on, local ones and (once what
    /// comes back has resolved) other nodes'. [`Tenant::adopt`] then
    /// makes it the session. Also what to wait for: the other nodes'
    /// traffic reaching its filters.
    pub(crate) fn stand_in(
        &self,
        client_id: &str,
        owner: &str,
        subscriptions: &[crate::session_store::StoredSubscription],
        limits: QueueLimits,
    ) -> (Arc<Session>, Vec<Durability>) {
        if let Some(stale) = self.session(client_id) {
            self.forget(&stale);
        }
        let session = Arc::new(Session::new(
            Arc::from(client_id),
            Arc::from(owner),
            limits,
            self.queue.clone(),
        ));
        // Counted now: `forget` or the session it becomes uncounts it.
        crate::metrics::sessions(1.0);
        let mut routed = Vec::new();
        for sub in subscriptions {
            if let Ok((_, Some(confirmed))) =
                self.insert(&session, &sub.filter, sub.options, sub.id, None)
            {
                routed.push(confirmed);
            }
        }
        (session, routed)
    }

    /// Makes `session` (a stand-in) the stored session `stored`: the
    /// stored deliveries first (older than anything the stand-in caught),
    /// then what it caught less the stored ones' ids, numbered after them
    /// and written to the store (behind: the cluster's journal holds them
    /// already); the stored subscriptions replace the ones it stood in
    /// with.
    fn merge_into(&self, session: &Arc<Session>, stored: StoredSession) {
        let (now, wall) = (Instant::now(), SystemTime::now());
        let stored_ids: std::collections::HashSet<crate::interconnect::MessageId> =
            stored.queue.iter().filter_map(|d| d.message.id).collect();
        let mut caught = Vec::new();
        let mut duplicates = 0usize;
        let had: Vec<mqtt::TopicFilter> = {
            let mut st = session.lock();
            st.durable = true;
            st.incoming_qos2
                .extend(stored.incoming_qos2.iter().copied());
            st.completed = stored.completed.clone();
            st.pending.retain(|d| {
                let seen = d
                    .message
                    .id
                    .is_some_and(|id| stored_ids.contains(&id) || stored.completed.contains(id));
                duplicates += usize::from(seen);
                !seen
            });
            let mut next = stored.next_seq();
            for d in st.pending.iter_mut() {
                if d.qos == mqtt::QoS::AtMostOnce {
                    continue;
                }
                d.seq = Some(next);
                caught.push((
                    d.message.clone(),
                    QueuedFor {
                        client_id: session.client_id().clone(),
                        seq: next,
                        qos: d.qos,
                        retain: d.retain,
                        subscription_ids: d.subscription_ids.clone(),
                        shared: d.shared.clone(),
                    },
                ));
                next += 1;
            }
            st.next_seq = next;
            for d in stored.queue.into_iter().rev() {
                put_stored(&mut st, d, (now, wall), true);
            }
            st.subscriptions.keys().cloned().collect()
        };
        self.sessions()
            .insert(session.client_id().clone(), session.clone());
        for sub in &stored.subscriptions {
            self.subscribe(session, &sub.filter, sub.options, sub.id);
        }
        for filter in had {
            if !stored.subscriptions.iter().any(|s| s.filter == filter) {
                self.unsubscribe(session, &filter);
            }
        }
        if let Some(store) = self.session_store() {
            for (message, queued) in &caught {
                let body = Arc::new(message.to_session_store(now, wall));
                drop(store.enqueue(&self.id, &body, std::slice::from_ref(queued)));
            }
        }
        tracing::info!(
            tenant = %self.id,
            client_id = %session.client_id(),
            caught = caught.len(),
            duplicates,
            "session taken over from another node with what was routed meanwhile"
        );
    }

    /// Puts the sessions stored before a restart back: subscriptions into
    /// the index, queued deliveries in order, in-flight ones to resend
    /// with their packet ids, incoming QoS 2 ids. Deadlines are left to
    /// the caller (only the broker can publish a will). With `keep_held`,
    /// a session this tenant holds already (a CONNECT took it meanwhile)
    /// is kept and the stored one skipped, checked as it is put in.
    pub(crate) fn restore(
        &self,
        stored: Vec<StoredSession>,
        limits: QueueLimits,
        keep_held: bool,
    ) -> Vec<Restored> {
        let (now, wall) = (Instant::now(), SystemTime::now());
        let mut restored = Vec::with_capacity(stored.len());
        for s in stored {
            let client_id = s.record.client_id.clone();
            if keep_held && self.session(&client_id).is_some() {
                continue;
            }
            let session = Arc::new(Session::new(
                client_id.clone(),
                Arc::from(s.record.owner.as_str()),
                limits,
                self.queue.clone(),
            ));
            let next_seq = s.next_seq();
            {
                let mut st = session.lock();
                st.durable = true;
                st.next_seq = next_seq;
                st.incoming_qos2.extend(s.incoming_qos2.iter().copied());
                st.completed = s.completed;
                for d in s.queue {
                    put_stored(&mut st, d, (now, wall), false);
                }
            }
            {
                let mut sessions = self.sessions();
                if keep_held && sessions.contains_key(&client_id) {
                    // Dropped unused: its queue gives its room back.
                    continue;
                }
                sessions.insert(client_id, session.clone());
            }
            crate::metrics::sessions(1.0);
            for sub in s.subscriptions {
                // Restored as they were granted; the tenant's rules apply
                // to new subscriptions only.
                self.subscribe(&session, &sub.filter, sub.options, sub.id);
            }
            let will = s.record.will.map(|w| {
                let mut properties = w.properties;
                properties.will_delay_interval = Some(w.delay).filter(|d| *d > 0);
                (
                    LastWill {
                        topic: w.topic,
                        payload: w.payload,
                        qos: w.qos,
                        retain: w.retain,
                        properties,
                    },
                    s.record.owner.clone(),
                )
            });
            // A session stored as connected (released late, or by another
            // node's crash) starts its offline period now.
            let expires_at = match (s.connected, s.expires_at) {
                (false, at) => at,
                (true, _) => deadline(wall, s.record.expiry_interval),
            };
            let will_due_at = match s.connected {
                false => s.will_due_at,
                true => will.as_ref().map(|(w, _)| {
                    let delay = w.properties.will_delay_interval.unwrap_or(0);
                    let due = wall + std::time::Duration::from_secs(u64::from(delay));
                    expires_at.map_or(due, |e| due.min(e))
                }),
            };
            let generation = session.lock().generation;
            restored.push(Restored {
                session,
                generation,
                will: will.filter(|_| will_due_at.is_some()),
                will_due_at,
                expires_at,
            });
        }
        restored
    }
}

/// Puts a stored delivery back into a session: a queued one at the back
/// (`front`: the front) of its queue, an in-flight one to resend with its
/// packet id.
fn put_stored(
    st: &mut crate::session::SessionState,
    d: crate::session_store::StoredDelivery,
    (now, wall): (Instant, SystemTime),
    front: bool,
) {
    let delivery = Delivery {
        message: Arc::new(Message::from_session_store(&d.message, now, wall)),
        qos: d.qos,
        retain: d.retain,
        subscription_ids: d.subscription_ids,
        shared: d.shared,
        seq: Some(d.seq),
    };
    match d.state {
        DeliveryState::Queued if front => st.pending.push_front(delivery),
        DeliveryState::Queued => st.pending.push_restored(delivery),
        DeliveryState::Sent(id) => {
            st.inflight.insert(id, Outgoing::Publish(delivery));
        }
        DeliveryState::Released(id) => {
            st.inflight.insert(id, Outgoing::Released(Some(d.seq)));
        }
    }
}

/// The absolute end of a session whose expiry interval starts at `from`;
/// `None`: never (`u32::MAX` seconds, 3.1.2.11.2).
pub(crate) fn deadline(from: SystemTime, interval: u32) -> Option<SystemTime> {
    (interval != u32::MAX).then(|| from + std::time::Duration::from_secs(u64::from(interval)))
}
