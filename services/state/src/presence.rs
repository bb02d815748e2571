//! [`Presence`]: the broker's connect, disconnect and publish events turned
//! into batched presence updates in the store.
//!
//! `emit` never blocks the broker and never queues per event: it updates a
//! map of the latest presence change per device under a short lock, and a
//! writer task writes that map every [`PresenceConfig::flush_interval`] in
//! one transaction. A storm of 10,000 connects is a few multi-row
//! statements, and a device that flaps within an interval costs one row.
//!
//! - `last_seen` moves with the device's publishes, at most every
//!   [`PresenceConfig::last_seen_interval`] per device.
//! - A device is offline when its last connection ends: with a takeover
//!   the new connection's CONNECT comes before the old one's end, so
//!   connections are counted per client id.
//! - On start, the devices this node had marked online are set offline:
//!   after a crash nobody said goodbye for them.
//! - Client ids that are not registered devices (backends on service
//!   credentials) are skipped by the store.

use std::borrow::Cow;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use broker::{Credential, Event, EventSink, TenantId};
use chrono::{DateTime, Utc};
use mqtt::{ProtocolVersion, ReasonCode};
use store::{PresenceStatus, PresenceUpdate, Store};
use tokio::sync::Notify;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::Error;
use crate::writer::WriterTask;

/// Where and how often presence is written.
#[derive(Debug, Clone)]
pub struct PresenceConfig {
    /// This broker node's id, stored with each online device so that the
    /// node can set them offline when it starts after a crash. Stable
    /// across restarts of one node, distinct between nodes.
    pub node_id: String,
    /// How often waiting changes are written.
    pub flush_interval: Duration,
    /// The least time between two `last_seen` writes of one device.
    pub last_seen_interval: Duration,
}

impl PresenceConfig {
    /// Defaults for node `node_id`: write every 500 ms, `last_seen` at
    /// most every 30 s.
    pub fn new(node_id: impl Into<String>) -> Self {
        Self {
            node_id: node_id.into(),
            flush_interval: Duration::from_millis(500),
            last_seen_interval: Duration::from_secs(30),
        }
    }
}

type Key = (TenantId, String);

/// A connected device. One per connection held while it is idle, so
/// kept small (issue 16): its online row is queued once, at connect, and
/// a `last_seen` row says only what changed (the store keeps the rest, as
/// [`merge_into_newer`] does for rows not written yet).
struct Live {
    /// Connections with this client id (2 during a takeover).
    connections: u32,
    /// When `last_seen` was last queued.
    seen_queued: Instant,
}

/// A row for `key` saying only its status and time: the store keeps what
/// a row leaves `None` (the upsert's `COALESCE`s).
fn bare_row(key: &Key, status: PresenceStatus, at: DateTime<Utc>) -> PresenceUpdate {
    PresenceUpdate {
        tenant_id: key.0.as_str().to_owned(),
        device_id: key.1.clone(),
        status,
        at,
        connected_at: None,
        remote_addr: None,
        protocol: None,
        credential: None,
        disconnect_reason: None,
        node_id: None,
    }
}

/// `newer` as the store would have it after `older` then `newer` were
/// written: what `newer` leaves unsaid (`None`) is `older`'s, as the
/// upsert's `COALESCE`s keep the stored values. So a `last_seen` row that
/// supersedes an online row not written yet loses nothing of it.
fn merge_into_newer(newer: &mut PresenceUpdate, older: PresenceUpdate) {
    newer.connected_at = newer.connected_at.or(older.connected_at);
    newer.remote_addr = newer.remote_addr.take().or(older.remote_addr);
    newer.protocol = newer.protocol.take().or(older.protocol);
    newer.credential = newer.credential.take().or(older.credential);
    newer.node_id = newer.node_id.take().or(older.node_id);
}

#[derive(Default)]
struct State {
    live: HashMap<Key, Live>,
    /// The latest change per device, not yet written.
    updates: HashMap<Key, PresenceUpdate>,
    closed: bool,
}

struct Shared {
    store: Store,
    config: PresenceConfig,
    // std Mutex: held only to update maps, never across await.
    state: Mutex<State>,
    wake: Notify,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The presence [`EventSink`]; see the module docs.
pub struct Presence {
    shared: Arc<Shared>,
    writer: WriterTask,
    recovered: Vec<(TenantId, String)>,
}

impl std::fmt::Debug for Presence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Presence")
            .field("config", &self.shared.config)
            .finish_non_exhaustive()
    }
}

fn protocol_name(v: ProtocolVersion) -> &'static str {
    match v {
        ProtocolVersion::V311 => "3.1.1",
        ProtocolVersion::V5 => "5.0",
    }
}

/// How a device authenticated, as stored in its presence row and sent in
/// `device.connected`: `certificate:{serial}` (the serial the REST API
/// names certificates by), `password`, or `none`.
pub fn credential_text(credential: &Credential) -> String {
    credential_cow(credential).into_owned()
}

/// [`credential_text`], allocating only for a certificate's serial.
fn credential_cow(credential: &Credential) -> Cow<'static, str> {
    match credential {
        Credential::Certificate(leaf) => match pki::serial_of(leaf) {
            Some(serial) => Cow::Owned(format!("certificate:{serial}")),
            // The TLS layer parsed it already; this cannot fail for a
            // connection that got this far, but presence must not panic.
            None => Cow::Borrowed("certificate"),
        },
        Credential::Password => Cow::Borrowed("password"),
        Credential::None => Cow::Borrowed("none"),
    }
}

fn reason_text(reason: ReasonCode) -> String {
    format!("{reason:?} (0x{:02X})", reason.to_u8())
}

impl Presence {
    /// Sets this node's stale online devices offline, then starts the
    /// writer task (call inside a tokio runtime).
    pub async fn start(store: Store, config: PresenceConfig) -> Result<Arc<Self>, Error> {
        let recovered = store
            .set_node_offline(&config.node_id, Utc::now(), "node restarted")
            .await?;
        if !recovered.is_empty() {
            info!(node = %config.node_id, devices = recovered.len(), "devices left online by an earlier run set offline");
        }
        // Ids the store holds were valid when written; one that no longer
        // parses has no status topic to correct either.
        let recovered = recovered
            .into_iter()
            .filter_map(|(tenant, device)| Some((TenantId::parse(&tenant).ok()?, device)))
            .collect();
        let shared = Arc::new(Shared {
            store,
            config,
            state: Mutex::default(),
            wake: Notify::new(),
        });
        let writer = WriterTask::spawn(run_writer(shared.clone()));
        Ok(Arc::new(Self {
            shared,
            writer,
            recovered,
        }))
    }

    /// The devices set offline at start (this node had them online when it
    /// stopped without saying goodbye), as `(tenant, device)`.
    pub fn recovered(&self) -> &[(TenantId, String)] {
        &self.recovered
    }

    /// Writes the changes waiting now.
    pub async fn flush(&self) -> Result<(), Error> {
        flush_once(&self.shared).await
    }

    /// Writes what is waiting and stops the writer; events after this are
    /// ignored. Call after the broker's listeners have stopped, so that the
    /// disconnects of the shutdown are in.
    pub async fn shutdown(&self) -> Result<(), Error> {
        self.shared.state().closed = true;
        self.shared.wake.notify_one();
        self.writer.join().await;
        flush_once(&self.shared).await
    }

    fn connected(
        &self,
        key: Key,
        peer: SocketAddr,
        protocol: ProtocolVersion,
        credential: &Credential,
        now: DateTime<Utc>,
    ) {
        let update = PresenceUpdate {
            connected_at: Some(now),
            remote_addr: Some(peer.to_string()),
            protocol: Some(protocol_name(protocol).to_owned()),
            credential: Some(credential_cow(credential).into_owned()),
            node_id: Some(self.shared.config.node_id.clone()),
            ..bare_row(&key, PresenceStatus::Online, now)
        };
        let mut st = self.shared.state();
        if st.closed {
            return;
        }
        let connections = st.live.get(&key).map_or(0, |l| l.connections);
        st.live.insert(
            key.clone(),
            Live {
                connections: connections + 1,
                seen_queued: Instant::now(),
            },
        );
        st.updates.insert(key, update);
    }

    fn disconnected(&self, key: Key, reason: ReasonCode, now: DateTime<Utc>) {
        let mut st = self.shared.state();
        if st.closed {
            return;
        }
        let Some(live) = st.live.get_mut(&key) else {
            return;
        };
        live.connections = live.connections.saturating_sub(1);
        if live.connections > 0 {
            // Taken over: the device is still here on its newer connection.
            return;
        }
        st.live.remove(&key);
        let update = PresenceUpdate {
            disconnect_reason: Some(reason_text(reason)),
            ..bare_row(&key, PresenceStatus::Offline, now)
        };
        st.updates.insert(key, update);
    }

    /// A message from `key`: its last-seen time, at most once per
    /// `last_seen_interval`. Called for every message a device publishes,
    /// so the wall clock is read only when an update is due.
    fn seen(&self, key: Key) {
        let interval = self.shared.config.last_seen_interval;
        let mut st = self.shared.state();
        let Some(live) = st.live.get_mut(&key) else {
            return;
        };
        if live.seen_queued.elapsed() < interval {
            return;
        }
        live.seen_queued = Instant::now();
        let now = Utc::now();
        if let Some(pending) = st.updates.get_mut(&key) {
            // The online row not written yet: it says all but the time.
            pending.at = now;
            return;
        }
        let row = bare_row(&key, PresenceStatus::Online, now);
        st.updates.insert(key, row);
    }
}

impl EventSink for Presence {
    fn emit(&self, event: Event) {
        match event {
            Event::Connected {
                tenant,
                client_id,
                peer,
                protocol,
                credential,
                ..
            } => self.connected((tenant, client_id), peer, protocol, &credential, Utc::now()),
            Event::Disconnected {
                tenant,
                client_id,
                reason,
                ..
            } => self.disconnected((tenant, client_id), reason, Utc::now()),
            Event::Published {
                tenant, client_id, ..
            } => self.seen((tenant, client_id)),
            _ => {}
        }
    }
}

async fn run_writer(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(shared.config.flush_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = shared.wake.notified() => {}
        }
        if shared.state().closed {
            return;
        }
        if let Err(e) = flush_once(&shared).await {
            warn!(error = %e, "presence not written; will retry");
        }
    }
}

async fn flush_once(shared: &Shared) -> Result<(), Error> {
    // Taken, not drained: a drained map keeps the room its largest batch
    // needed (a connect storm's), for good (issue 16).
    let updates: Vec<(Key, PresenceUpdate)> = std::mem::take(&mut shared.state().updates)
        .into_iter()
        .collect();
    if updates.is_empty() {
        return Ok(());
    }
    let rows: Vec<PresenceUpdate> = updates.iter().map(|(_, u)| u.clone()).collect();
    match shared.store.update_presence(&rows).await {
        Ok(changed) => {
            debug!(updates = rows.len(), changed, "presence written");
            Ok(())
        }
        Err(e) => {
            let mut st = shared.state();
            for (key, update) in updates {
                // A newer change of the device arrived meanwhile: it wins,
                // keeping what it leaves unsaid from this one.
                match st.updates.entry(key) {
                    std::collections::hash_map::Entry::Occupied(mut newer) => {
                        merge_into_newer(newer.get_mut(), update);
                    }
                    std::collections::hash_map::Entry::Vacant(slot) => {
                        slot.insert(update);
                    }
                }
            }
            Err(e.into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> (TenantId, String) {
        (TenantId::parse("acme").unwrap(), "d1".to_owned())
    }

    fn connected() -> Event {
        Event::Connected {
            tenant: key().0,
            client_id: key().1,
            principal: "d1".into(),
            peer: "192.0.2.7:4000".parse().unwrap(),
            protocol: ProtocolVersion::V5,
            credential: Credential::Password,
        }
    }

    fn disconnected(reason: ReasonCode) -> Event {
        Event::Disconnected {
            tenant: key().0,
            client_id: key().1,
            principal: key().1,
            graceful: false,
            reason,
        }
    }

    fn published() -> Event {
        Event::Published {
            tenant: key().0,
            client_id: key().1,
            topic: mqtt::TopicName::parse("devices/d1/t").unwrap(),
            payload: bytes::Bytes::from_static(b"x"),
            qos: mqtt::QoS::AtMostOnce,
            retain: false,
        }
    }

    #[test]
    fn credential_names_the_certificate_serial() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["d1".into()]).unwrap();
        params.serial_number = Some(rcgen::SerialNumber::from_slice(&[0x00, 0xab, 0xcd]));
        let cert = params.self_signed(&key).unwrap();
        let leaf = bytes::Bytes::copy_from_slice(cert.der());
        assert_eq!(
            credential_text(&Credential::Certificate(leaf)),
            "certificate:abcd"
        );
        assert_eq!(credential_text(&Credential::Password), "password");
        assert_eq!(
            credential_text(&Credential::Certificate(bytes::Bytes::from_static(b"junk"))),
            "certificate"
        );
    }

    /// Presence on a store with device `acme/d1`, written only when a
    /// test flushes, `last_seen` queued at most every `last_seen_interval`.
    async fn started(
        last_seen_interval: Duration,
    ) -> (store::testing::TestDb, Store, Arc<Presence>) {
        let db = crate::test_support::acme(&["d1"]).await;
        let store = db.store().clone();
        let config = PresenceConfig {
            flush_interval: Duration::from_secs(3600),
            last_seen_interval,
            ..PresenceConfig::new("n1")
        };
        let presence = Presence::start(store.clone(), config).await.unwrap();
        (db, store, presence)
    }

    #[test]
    fn a_newer_row_keeps_what_it_leaves_unsaid_from_the_older() {
        let at = |s: i64| DateTime::from_timestamp(s, 0).unwrap();
        let online = PresenceUpdate {
            tenant_id: "acme".into(),
            device_id: "d1".into(),
            status: PresenceStatus::Online,
            at: at(10),
            connected_at: Some(at(10)),
            remote_addr: Some("192.0.2.7:4000".into()),
            protocol: Some("5.0".into()),
            credential: Some("password".into()),
            disconnect_reason: None,
            node_id: Some("n1".into()),
        };
        let mut seen = PresenceUpdate {
            at: at(20),
            connected_at: None,
            remote_addr: None,
            protocol: None,
            credential: None,
            node_id: None,
            ..online.clone()
        };
        merge_into_newer(&mut seen, online.clone());
        assert_eq!(
            seen,
            PresenceUpdate {
                at: at(20),
                ..online.clone()
            }
        );
        let mut offline = PresenceUpdate {
            status: PresenceStatus::Offline,
            at: at(30),
            connected_at: None,
            remote_addr: None,
            protocol: None,
            credential: None,
            disconnect_reason: Some("KeepAliveTimeout (0x8D)".into()),
            node_id: None,
            ..online.clone()
        };
        merge_into_newer(&mut offline, online.clone());
        assert_eq!(offline.status, PresenceStatus::Offline);
        assert_eq!(offline.at, at(30));
        assert_eq!(offline.remote_addr, online.remote_addr);
        assert_eq!(
            offline.disconnect_reason.as_deref(),
            Some("KeepAliveTimeout (0x8D)")
        );
    }

    #[tokio::test]
    async fn a_publish_before_the_online_row_is_written_keeps_it_whole() {
        let (db, store, presence) = started(Duration::ZERO).await;
        presence.emit(connected());
        presence.emit(published());
        presence.flush().await.unwrap();
        let row = store.get_presence("acme", "d1").await.unwrap().unwrap();
        assert_eq!(row.status, PresenceStatus::Online);
        assert_eq!(row.remote_addr.as_deref(), Some("192.0.2.7:4000"));
        assert_eq!(row.protocol.as_deref(), Some("5.0"));
        assert_eq!(row.credential.as_deref(), Some("password"));
        assert_eq!(row.node_id.as_deref(), Some("n1"));
        assert!(row.connected_at.is_some());
        // A later publish writes only the time; the rest stays as stored.
        tokio::time::sleep(Duration::from_millis(20)).await;
        presence.emit(published());
        presence.flush().await.unwrap();
        let later = store.get_presence("acme", "d1").await.unwrap().unwrap();
        assert!(later.last_seen > row.last_seen);
        assert_eq!(
            (
                later.remote_addr,
                later.protocol,
                later.credential,
                later.connected_at
            ),
            (
                row.remote_addr,
                row.protocol,
                row.credential,
                row.connected_at
            )
        );
        presence.shutdown().await.unwrap();
        db.cleanup().await;
    }

    #[tokio::test]
    async fn last_seen_is_throttled_and_a_takeover_stays_online() {
        let (db, store, presence) = started(Duration::from_millis(200)).await;
        let get = || async { store.get_presence("acme", "d1").await.unwrap().unwrap() };

        presence.emit(connected());
        presence.flush().await.unwrap();
        let first = get().await;
        assert_eq!(first.status, PresenceStatus::Online);
        assert_eq!(first.protocol.as_deref(), Some("5.0"));
        assert_eq!(first.credential.as_deref(), Some("password"));
        // Publishes within the interval queue nothing.
        for _ in 0..100 {
            presence.emit(published());
        }
        assert!(presence.shared.state().updates.is_empty());
        tokio::time::sleep(Duration::from_millis(250)).await;
        presence.emit(published());
        presence.flush().await.unwrap();
        let seen = get().await;
        assert!(seen.last_seen > first.last_seen);
        assert_eq!(seen.connected_at, first.connected_at);

        // Takeover: the new connection's CONNECT comes first.
        presence.emit(connected());
        presence.emit(disconnected(ReasonCode::SessionTakenOver));
        presence.flush().await.unwrap();
        assert_eq!(get().await.status, PresenceStatus::Online);
        presence.emit(disconnected(ReasonCode::KeepAliveTimeout));
        presence.flush().await.unwrap();
        let gone = get().await;
        assert_eq!(gone.status, PresenceStatus::Offline);
        assert_eq!(
            gone.disconnect_reason.as_deref(),
            Some("KeepAliveTimeout (0x8D)")
        );
        // Publishes from a device no longer connected change nothing.
        presence.emit(published());
        assert!(presence.shared.state().updates.is_empty());
        presence.shutdown().await.unwrap();
        // After shutdown, events are ignored.
        presence.emit(connected());
        assert!(presence.shared.state().updates.is_empty());
        db.cleanup().await;
    }
}
