//! [`MemorySessionStore`]: persistent sessions in process memory. They
//! survive a tenant being reloaded, not a restart; broker tests use it to
//! exercise the write paths without a database.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use async_trait::async_trait;
use mqtt::{PacketId, QoS, TopicFilter};

use super::{
    DeliveryState, Disconnected, QueuedFor, SessionRecord, SessionStore, StoredDelivery,
    StoredMessage, StoredSession, StoredSubscription,
};
use crate::TenantId;
use crate::store::{Durability, StoreError};

type Key = (TenantId, Arc<str>);

/// Keeps persistent sessions in memory; every write is as durable as it
/// gets the moment it is made, so no method returns a [`Durability`].
#[derive(Debug, Default)]
pub struct MemorySessionStore {
    // std Mutex: nothing awaits while it is held.
    sessions: Mutex<HashMap<Key, StoredSession>>,
}

impl MemorySessionStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn sessions(&self) -> MutexGuard<'_, HashMap<Key, StoredSession>> {
        self.sessions.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Applies `change` to the session, if it exists.
    fn change(&self, tenant: &TenantId, client_id: &str, change: impl FnOnce(&mut StoredSession)) {
        let key = (tenant.clone(), Arc::from(client_id));
        if let Some(s) = self.sessions().get_mut(&key) {
            change(s);
        }
    }
}

#[async_trait]
impl SessionStore for MemorySessionStore {
    async fn load(&self, tenant: &TenantId) -> Result<Vec<StoredSession>, StoreError> {
        let mut found: Vec<StoredSession> = self
            .sessions()
            .iter()
            .filter(|((t, _), _)| t == tenant)
            .map(|(_, s)| s.clone())
            .collect();
        found.sort_by(|a, b| a.record.client_id.cmp(&b.record.client_id));
        Ok(found)
    }

    fn connect(
        &self,
        tenant: &TenantId,
        session: &SessionRecord,
        clean_start: bool,
    ) -> Option<Durability> {
        let key = (tenant.clone(), session.client_id.clone());
        let mut sessions = self.sessions();
        let fresh = || StoredSession {
            record: session.clone(),
            connected: true,
            node: None,
            expires_at: None,
            will_due_at: None,
            subscriptions: Vec::new(),
            queue: Vec::new(),
            incoming_qos2: Vec::new(),
            completed: crate::interconnect::Completed::default(),
        };
        match sessions.get_mut(&key) {
            Some(s) if !clean_start => {
                s.record = session.clone();
                s.connected = true;
                s.expires_at = None;
                s.will_due_at = None;
            }
            _ => {
                sessions.insert(key, fresh());
            }
        }
        None
    }

    fn disconnect(&self, tenant: &TenantId, client_id: &str, d: &Disconnected) {
        self.change(tenant, client_id, |s| {
            s.connected = false;
            s.expires_at = d.expires_at;
            s.will_due_at = d.will_due_at.filter(|_| s.record.will.is_some());
            if s.will_due_at.is_none() {
                s.record.will = None;
            }
        });
    }

    fn will_done(&self, tenant: &TenantId, client_id: &str) {
        self.change(tenant, client_id, |s| {
            s.record.will = None;
            s.will_due_at = None;
        });
    }

    fn end(&self, tenant: &TenantId, client_id: &str) -> Option<Durability> {
        self.sessions()
            .remove(&(tenant.clone(), Arc::from(client_id)));
        None
    }

    fn subscription(
        &self,
        tenant: &TenantId,
        client_id: &str,
        filter: &TopicFilter,
        subscription: Option<&StoredSubscription>,
    ) -> Option<Durability> {
        self.change(tenant, client_id, |s| {
            s.subscriptions.retain(|x| &x.filter != filter);
            s.subscriptions.extend(subscription.cloned());
        });
        None
    }

    fn enqueue(
        &self,
        tenant: &TenantId,
        message: &Arc<StoredMessage>,
        targets: &[QueuedFor],
    ) -> Option<Durability> {
        let mut sessions = self.sessions();
        for t in targets {
            let Some(s) = sessions.get_mut(&(tenant.clone(), t.client_id.clone())) else {
                continue;
            };
            let at = s.queue.partition_point(|d| d.seq < t.seq);
            if s.queue.get(at).is_some_and(|d| d.seq == t.seq) {
                continue;
            }
            s.queue.insert(
                at,
                StoredDelivery {
                    seq: t.seq,
                    message: message.clone(),
                    qos: t.qos,
                    retain: t.retain,
                    subscription_ids: t.subscription_ids.clone(),
                    shared: t.shared.clone(),
                    state: DeliveryState::Queued,
                },
            );
        }
        None
    }

    fn delivery_state(
        &self,
        tenant: &TenantId,
        client_id: &str,
        seq: u64,
        state: DeliveryState,
        _durable: bool,
    ) -> Option<Durability> {
        self.change(tenant, client_id, |s| {
            if let Some(d) = s.queue.iter_mut().find(|d| d.seq == seq)
                // Only QoS 2 has a PUBREL state.
                && (d.qos == QoS::ExactlyOnce || !matches!(state, DeliveryState::Released(_)))
            {
                d.state = state;
            }
        });
        None
    }

    fn delivered(&self, tenant: &TenantId, client_id: &str, seq: u64) {
        self.change(tenant, client_id, |s| s.queue.retain(|d| d.seq != seq));
    }

    fn completed(&self, tenant: &TenantId, client_id: &str, id: crate::MessageId) {
        self.change(tenant, client_id, |s| s.completed.insert(id));
    }

    fn incoming_qos2(
        &self,
        tenant: &TenantId,
        client_id: &str,
        packet_id: PacketId,
        awaiting: bool,
    ) -> Option<Durability> {
        self.change(tenant, client_id, |s| {
            let ids = &mut s.incoming_qos2;
            match (ids.binary_search(&packet_id), awaiting) {
                (Err(at), true) => ids.insert(at, packet_id),
                (Ok(at), false) => {
                    ids.remove(at);
                }
                _ => {}
            }
        });
        None
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use bytes::Bytes;
    use mqtt::{Properties, SubscriptionOptions, TopicName};

    use super::*;
    use crate::session_store::StoredWill;
    use crate::session_store::testing::{self, pid, queued_for};

    fn tenant(id: &str) -> TenantId {
        TenantId::parse(id).unwrap()
    }

    fn record(client: &str) -> SessionRecord {
        SessionRecord {
            will: Some(StoredWill {
                topic: TopicName::parse("devices/d1/status").unwrap(),
                payload: Bytes::from_static(b"offline"),
                qos: QoS::AtLeastOnce,
                retain: true,
                properties: Properties::default(),
                delay: 10,
            }),
            ..testing::record(client)
        }
    }

    fn message(payload: &'static [u8]) -> Arc<StoredMessage> {
        Arc::new(StoredMessage {
            topic: TopicName::parse("commands/d1").unwrap(),
            payload: Bytes::from_static(payload),
            qos: QoS::ExactlyOnce,
            properties: Properties::default(),
            expires_at: None,
            id: None,
        })
    }

    #[tokio::test]
    async fn a_session_lives_through_its_write_paths() {
        let store = MemorySessionStore::new();
        let acme = tenant("acme");
        assert!(store.connect(&acme, &record("d1"), false).is_none());
        let sub = StoredSubscription {
            filter: TopicFilter::parse("commands/d1/#").unwrap(),
            options: SubscriptionOptions::new(QoS::ExactlyOnce),
            id: Some(4),
        };
        store.subscription(&acme, "d1", &sub.filter, Some(&sub));
        // One body, two sessions (the second does not exist: skipped).
        let m = message(b"go");
        store.enqueue(
            &acme,
            &m,
            &[
                queued_for("d1", 2, QoS::ExactlyOnce),
                queued_for("nobody", 1, QoS::AtLeastOnce),
            ],
        );
        store.enqueue(
            &acme,
            &message(b"first"),
            &[queued_for("d1", 1, QoS::AtLeastOnce)],
        );
        store.delivery_state(&acme, "d1", 2, DeliveryState::Sent(pid(9)), true);
        store.delivery_state(&acme, "d1", 2, DeliveryState::Released(pid(9)), true);
        // A QoS 1 delivery has no PUBREL state.
        store.delivery_state(&acme, "d1", 1, DeliveryState::Released(pid(3)), true);
        store.incoming_qos2(&acme, "d1", pid(5), true);
        store.incoming_qos2(&acme, "d1", pid(2), true);
        store.incoming_qos2(&acme, "d1", pid(5), false);
        let at = SystemTime::now();
        let d = Disconnected {
            at,
            expires_at: Some(at + Duration::from_secs(3600)),
            will_due_at: Some(at + Duration::from_secs(10)),
        };
        store.disconnect(&acme, "d1", &d);

        let loaded = store.load(&acme).await.unwrap();
        assert_eq!(loaded.len(), 1);
        let s = &loaded[0];
        assert!(!s.connected);
        assert_eq!((s.expires_at, s.will_due_at), (d.expires_at, d.will_due_at));
        assert_eq!(s.subscriptions, std::slice::from_ref(&sub));
        let states: Vec<_> = s.queue.iter().map(|d| (d.seq, d.state)).collect();
        assert_eq!(
            states,
            [
                (1, DeliveryState::Queued),
                (2, DeliveryState::Released(pid(9)))
            ]
        );
        assert!(Arc::ptr_eq(&s.queue[1].message, &m));
        assert_eq!(s.next_seq(), 3);
        assert_eq!(s.incoming_qos2, [pid(2)]);
        assert!(store.load(&tenant("globex")).await.unwrap().is_empty());

        // The will went out; a resume keeps the queue, a clean start not.
        store.will_done(&acme, "d1");
        store.delivered(&acme, "d1", 1);
        let mut again = record("d1");
        again.will = None;
        store.connect(&acme, &again, false);
        let s = store.load(&acme).await.unwrap().remove(0);
        assert!(s.connected && s.record.will.is_none() && s.will_due_at.is_none());
        assert_eq!(s.queue.len(), 1);
        store.connect(&acme, &again, true);
        let s = store.load(&acme).await.unwrap().remove(0);
        assert!(s.queue.is_empty() && s.subscriptions.is_empty());
        store.end(&acme, "d1");
        assert!(store.load(&acme).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_normal_disconnect_discards_the_will() {
        let store = MemorySessionStore::new();
        let acme = tenant("acme");
        store.connect(&acme, &record("d1"), false);
        let at = SystemTime::now();
        store.disconnect(
            &acme,
            "d1",
            &Disconnected {
                at,
                expires_at: None,
                will_due_at: None,
            },
        );
        let s = store.load(&acme).await.unwrap().remove(0);
        assert!(s.record.will.is_none());
        assert_eq!(s.expires_at, None);
    }
}
