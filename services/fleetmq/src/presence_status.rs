//! Platform presence over MQTT: on connect and disconnect the broker
//! publishes, retained at QoS 1 in the device's tenant,
//! `devices/{d}/status` = `{"status": "online"|"offline", "reason", "at",
//! …}`, so MQTT-only backends see presence without relying on each
//! device's Last Will. Per tenant, on by default (`PUT
//! /v1/tenants/{t}/presence-settings`); where it is on, devices may not
//! publish that topic themselves (`access::StatusTopicGuard`).
//!
//! Reasons: `connected`, `takeover` (a new connection took the client id
//! over: still online), and for offline `disconnected` (the client said
//! DISCONNECT 0x00), `keep_alive_timeout`, `administrative_action`
//! (revoked, disabled or deleted), `connection_lost`,
//! `server_shutting_down`, `node_restarted` (the node that had it online
//! crashed and started again), `node_lost` (that node died and another
//! node of the cluster took over, `node_death`), or the snake-cased MQTT
//! reason otherwise;
//! offline messages for a connection's end carry `reason_code` too.
//!
//! Connections are counted per client id. In a takeover the old
//! connection ends with 0x8E (session taken over) and the new one's
//! CONNECT is reported either before or after that end; neither order
//! publishes `offline`, and the new connection's status says `takeover`. `emit` is on the broker's hot path, so statuses
//! queue (bounded; dropped and counted if the publisher falls far behind)
//! for one task that publishes them in order.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use broker::{Broker, Event, EventSink, TenantId};
use bytes::Bytes;
use chrono::{SecondsFormat, Utc};
use mqtt::{Properties, ProtocolVersion, QoS, ReasonCode, TopicName};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// A device's connections, as the events told them.
#[derive(Default)]
struct Live {
    connections: u32,
    /// Its last connection ended by a takeover whose CONNECT is still to
    /// be reported.
    taken_over: bool,
}

/// Statuses waiting to be published.
const QUEUE: usize = 10_000;

struct Status {
    tenant: TenantId,
    device: String,
    /// The JSON text: a `Value` held here was about 700 bytes per queued
    /// status (its map's nodes), which a connect storm's backlog of
    /// thousands left in the allocator (issue 16).
    payload: Bytes,
}

/// The sink; see the module docs. Give [`StatusPublisher::set_broker`] the
/// broker once it is built (it is built with this sink inside).
pub struct StatusPublisher {
    topics: access::StatusTopics,
    // std Mutex: held only to count, never across await.
    live: Mutex<HashMap<(TenantId, String), Live>>,
    queue: Mutex<Option<mpsc::Sender<Status>>>,
    task: Mutex<Option<JoinHandle<()>>>,
    broker: Arc<OnceLock<Broker>>,
}

impl StatusPublisher {
    /// Starts the publishing task (inside a tokio runtime).
    pub fn start(topics: access::StatusTopics) -> Arc<StatusPublisher> {
        let (tx, rx) = mpsc::channel(QUEUE);
        let publisher = StatusPublisher::queued(topics, tx);
        let task = tokio::spawn(publish_all(publisher.broker.clone(), rx));
        *publisher
            .task
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(task);
        Arc::new(publisher)
    }

    /// Statuses go to `queue`; nothing publishes them yet.
    fn queued(topics: access::StatusTopics, queue: mpsc::Sender<Status>) -> StatusPublisher {
        StatusPublisher {
            topics,
            live: Mutex::default(),
            queue: Mutex::new(Some(queue)),
            task: Mutex::new(None),
            broker: Arc::new(OnceLock::new()),
        }
    }

    /// The broker to publish through.
    pub fn set_broker(&self, broker: Broker) {
        // Set once at start; a second call would be a wiring bug, and the
        // first broker stays.
        let _ = self.broker.set(broker);
    }

    /// Publishes what is queued (the disconnects of a shutdown) for at most
    /// `timeout`, then stops. Call after the listeners have returned and
    /// before the retained store shuts down.
    pub async fn shutdown(&self, timeout: Duration) {
        drop(
            self.queue
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take(),
        );
        let task = self
            .task
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(mut task) = task
            && tokio::time::timeout(timeout, &mut task).await.is_err()
        {
            tracing::warn!("presence statuses not all published at shutdown");
            task.abort();
        }
    }

    /// Publishes `offline` (reason `node_restarted`) for devices this node
    /// had online when it stopped without saying goodbye (a crash): their
    /// retained status still says `online`. Call before the listeners
    /// start, so a device's next connect is published after it.
    pub fn node_restarted(&self, devices: &[(TenantId, String)]) {
        self.node_gone(devices, "node_restarted");
    }

    /// Publishes `offline` (reason `node_lost`) for devices another node
    /// of the cluster had online when it died (`node_death`).
    pub fn node_lost(&self, devices: &[(TenantId, String)]) {
        self.node_gone(devices, "node_lost");
    }

    fn node_gone(&self, devices: &[(TenantId, String)], reason: &'static str) {
        for (tenant, device) in devices {
            let payload = json!({
                "status": "offline",
                "reason": reason,
                "at": now(),
                "device": device,
            });
            self.send(tenant.clone(), device.clone(), payload);
        }
    }

    fn send(&self, tenant: TenantId, device: String, payload: Value) {
        if !self.topics.publishes(tenant.as_str()) {
            return;
        }
        let queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
        let sent = queue.as_ref().is_some_and(|q| {
            q.try_send(Status {
                tenant,
                device,
                payload: Bytes::from(payload.to_string()),
            })
            .is_ok()
        });
        if !sent {
            metrics::counter!("fleetmq_presence_status_dropped_total").increment(1);
        }
    }

    fn live(&self) -> std::sync::MutexGuard<'_, HashMap<(TenantId, String), Live>> {
        self.live.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn now() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn protocol_name(v: ProtocolVersion) -> &'static str {
    match v {
        ProtocolVersion::V311 => "3.1.1",
        ProtocolVersion::V5 => "5.0",
    }
}

/// Why a connection ended, as the status message says it.
pub fn offline_reason(graceful: bool, reason: ReasonCode) -> String {
    if graceful {
        return "disconnected".to_owned();
    }
    match reason {
        // The broker reports a lost connection (EOF, I/O error) so.
        ReasonCode::UnspecifiedError => "connection_lost".to_owned(),
        other => snake_case(&format!("{other:?}")),
    }
}

fn snake_case(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 4);
    for (i, c) in name.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

impl EventSink for StatusPublisher {
    fn emit(&self, event: Event) {
        match event {
            Event::Connected {
                tenant,
                client_id,
                principal,
                protocol,
                credential,
                ..
            } => {
                // Devices only: service credentials and anonymous clients
                // have a `:` in their principal.
                if principal.contains(':') {
                    return;
                }
                let takeover = {
                    let mut live = self.live();
                    let entry = live.entry((tenant.clone(), client_id.clone())).or_default();
                    entry.connections += 1;
                    let takeover = entry.connections > 1 || entry.taken_over;
                    entry.taken_over = false;
                    takeover
                };
                let reason = if takeover { "takeover" } else { "connected" };
                let payload = json!({
                    "status": "online",
                    "reason": reason,
                    "at": now(),
                    "device": client_id,
                    "protocol": protocol_name(protocol),
                    "credential": state::credential_text(&credential),
                });
                self.send(tenant, client_id, payload);
            }
            Event::Disconnected {
                tenant,
                client_id,
                graceful,
                reason,
                ..
            } => {
                let key = (tenant, client_id);
                {
                    let mut live = self.live();
                    // Not a device we saw connect (a service credential).
                    let Some(entry) = live.get_mut(&key) else {
                        return;
                    };
                    entry.connections = entry.connections.saturating_sub(1);
                    if entry.connections > 0 {
                        // Taken over: online on the newer connection.
                        return;
                    }
                    if reason == ReasonCode::SessionTakenOver {
                        // The newer connection's CONNECT is on its way.
                        entry.taken_over = true;
                        return;
                    }
                    live.remove(&key);
                }
                let (tenant, device) = key;
                let payload = json!({
                    "status": "offline",
                    "reason": offline_reason(graceful, reason),
                    "reason_code": reason.to_u8(),
                    "at": now(),
                    "device": device,
                });
                self.send(tenant, device, payload);
            }
            _ => {}
        }
    }

    fn wants_published(&self) -> bool {
        false
    }
}

async fn publish_all(broker: Arc<OnceLock<Broker>>, mut rx: mpsc::Receiver<Status>) {
    while let Some(status) = rx.recv().await {
        let Some(broker) = broker.get() else {
            tracing::warn!(tenant = %status.tenant, device = status.device, "presence status before the broker was wired; dropped");
            continue;
        };
        let topic = match TopicName::parse(ids::topics::status(&status.device)) {
            Ok(topic) => topic,
            Err(e) => {
                tracing::warn!(tenant = %status.tenant, device = status.device, error = %e, "no status topic for this device id");
                continue;
            }
        };
        if let Err(e) = broker
            .publish(
                &status.tenant,
                topic,
                status.payload,
                QoS::AtLeastOnce,
                true,
                Properties::default(),
            )
            .await
        {
            tracing::warn!(tenant = %status.tenant, device = status.device, error = %e, "presence status not published");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn connected(client_id: &str, principal: &str) -> Event {
        Event::Connected {
            tenant: TenantId::parse("acme").unwrap(),
            client_id: client_id.into(),
            principal: principal.into(),
            peer: "192.0.2.1:1".parse().unwrap(),
            protocol: ProtocolVersion::V5,
            credential: broker::Credential::Password,
        }
    }

    fn disconnected(client_id: &str, graceful: bool, reason: ReasonCode) -> Event {
        Event::Disconnected {
            tenant: TenantId::parse("acme").unwrap(),
            client_id: client_id.into(),
            principal: client_id.into(),
            graceful,
            reason,
        }
    }

    fn drain(rx: &mut mpsc::Receiver<Status>) -> Vec<(String, String)> {
        let mut out = Vec::new();
        while let Ok(s) = rx.try_recv() {
            let payload: Value = serde_json::from_slice(&s.payload).unwrap();
            out.push((
                payload["status"].as_str().unwrap().to_owned(),
                payload["reason"].as_str().unwrap().to_owned(),
            ));
        }
        out
    }

    fn pair(status: &str, reason: &str) -> (String, String) {
        (status.to_owned(), reason.to_owned())
    }

    #[test]
    fn a_takeover_never_publishes_offline_whichever_end_is_reported_first() {
        let topics = access::StatusTopics::new();
        let (tx, mut rx) = mpsc::channel(16);
        let p = StatusPublisher::queued(topics.clone(), tx);
        p.emit(connected("d1", "d1"));
        // New CONNECT reported before the old connection's end.
        p.emit(connected("d1", "d1"));
        p.emit(disconnected("d1", false, ReasonCode::SessionTakenOver));
        // And the other way round.
        p.emit(disconnected("d1", false, ReasonCode::SessionTakenOver));
        p.emit(connected("d1", "d1"));
        p.emit(disconnected("d1", false, ReasonCode::KeepAliveTimeout));
        assert_eq!(
            drain(&mut rx),
            [
                pair("online", "connected"),
                pair("online", "takeover"),
                pair("online", "takeover"),
                pair("offline", "keep_alive_timeout"),
            ]
        );
        // Service credentials are no devices; a tenant that turned it off
        // gets nothing.
        p.emit(connected("backend", "service:backend"));
        p.emit(disconnected("backend", true, ReasonCode::Success));
        topics.set("acme", false);
        p.emit(connected("d2", "d2"));
        assert!(drain(&mut rx).is_empty());
    }

    #[test]
    fn devices_left_online_by_a_crash_are_published_offline() {
        let topics = access::StatusTopics::new();
        let (tx, mut rx) = mpsc::channel(16);
        let p = StatusPublisher::queued(topics.clone(), tx);
        topics.set("quiet", false);
        p.node_restarted(&[
            (TenantId::parse("acme").unwrap(), "d1".to_owned()),
            (TenantId::parse("quiet").unwrap(), "d2".to_owned()),
        ]);
        assert_eq!(drain(&mut rx), [pair("offline", "node_restarted")]);
        p.node_lost(&[(TenantId::parse("acme").unwrap(), "d3".to_owned())]);
        assert_eq!(drain(&mut rx), [pair("offline", "node_lost")]);
    }

    #[test]
    fn reasons_read_as_words() {
        for (graceful, reason, word) in [
            (true, ReasonCode::Success, "disconnected"),
            (false, ReasonCode::KeepAliveTimeout, "keep_alive_timeout"),
            (
                false,
                ReasonCode::AdministrativeAction,
                "administrative_action",
            ),
            (false, ReasonCode::UnspecifiedError, "connection_lost"),
            (
                false,
                ReasonCode::ServerShuttingDown,
                "server_shutting_down",
            ),
        ] {
            assert_eq!(offline_reason(graceful, reason), word, "{reason:?}");
        }
    }
}
