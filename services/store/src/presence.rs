//! Device presence (issue 6): online/offline, when, from where, how. The
//! `state` crate writes it in batches from the broker's connect and
//! disconnect events; the REST API reads it (`status` filter, state view).

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::codec::Ts;
use crate::pki::text_enum;
use crate::{Error, Store};

/// Rows per multi-row statement (10 parameters each).
const CHUNK: usize = 1_000;

text_enum!(
    #[derive(Serialize, Deserialize)]
    #[serde(rename_all = "lowercase")]
    PresenceStatus, "presence status" {
        Online = "online",
        Offline = "offline",
    }
);

/// One device's presence as of `at`, for [`Store::update_presence`].
/// `None` in an optional field keeps what is stored (an offline update
/// need not repeat where the device was connected from).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresenceUpdate {
    pub tenant_id: String,
    pub device_id: String,
    pub status: PresenceStatus,
    /// When this was observed; becomes `last_seen` (and `disconnected_at`
    /// when offline). An update older than the stored one is ignored, so
    /// out-of-order batches (or nodes) cannot roll presence back.
    pub at: DateTime<Utc>,
    pub connected_at: Option<DateTime<Utc>>,
    pub remote_addr: Option<String>,
    pub protocol: Option<String>,
    pub credential: Option<String>,
    /// Why it went offline; cleared when it comes back.
    pub disconnect_reason: Option<String>,
    pub node_id: Option<String>,
}

/// A device's presence as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, sqlx::FromRow)]
pub struct DevicePresence {
    pub tenant_id: String,
    pub device_id: String,
    pub status: PresenceStatus,
    pub connected_at: Option<DateTime<Utc>>,
    pub disconnected_at: Option<DateTime<Utc>>,
    pub last_seen: DateTime<Utc>,
    pub remote_addr: Option<String>,
    pub protocol: Option<String>,
    pub credential: Option<String>,
    pub disconnect_reason: Option<String>,
    pub node_id: Option<String>,
}

/// The last update of each device, in the order given (Postgres refuses
/// to upsert one row twice in a statement).
fn last_per_device(updates: &[PresenceUpdate]) -> Vec<&PresenceUpdate> {
    let mut seen = HashSet::with_capacity(updates.len());
    let mut kept: Vec<&PresenceUpdate> = updates
        .iter()
        .rev()
        .filter(|u| seen.insert((u.tenant_id.as_str(), u.device_id.as_str())))
        .collect();
    kept.reverse();
    kept
}

impl Store {
    /// Apply many presence updates in one transaction (multi-row upserts,
    /// chunked); returns how many rows changed. Updates for devices that do
    /// not exist (a client id that is not a registered device, such as a
    /// backend's service credential) and updates older than the stored
    /// state are skipped.
    #[tracing::instrument(skip_all, fields(count = updates.len()))]
    pub async fn update_presence(&self, updates: &[PresenceUpdate]) -> Result<u64, Error> {
        let kept = last_per_device(updates);
        let mut changed = 0;
        on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            for chunk in kept.chunks(CHUNK) {
                let mut q = sqlx::QueryBuilder::new(
                    "WITH v (tenant_id, device_id, status, at, connected_at, remote_addr, \
                     protocol, credential, disconnect_reason, node_id) AS (",
                );
                q.push_values(chunk, |mut row, u| {
                    row.push_bind(u.tenant_id.as_str())
                        .push_bind(u.device_id.as_str())
                        .push_bind(u.status.as_str())
                        .push_bind(Ts(u.at))
                        .push_bind(u.connected_at.map(Ts))
                        .push_bind(u.remote_addr.as_deref())
                        .push_bind(u.protocol.as_deref())
                        .push_bind(u.credential.as_deref())
                        .push_bind(u.disconnect_reason.as_deref())
                        .push_bind(u.node_id.as_deref());
                });
                // The join skips unknown devices; `WHERE true` lets SQLite
                // parse ON CONFLICT after a SELECT.
                q.push(
                    ") INSERT INTO device_presence (tenant_id, device_id, status, connected_at, \
                     disconnected_at, last_seen, remote_addr, protocol, credential, \
                     disconnect_reason, node_id) \
                     SELECT v.tenant_id, v.device_id, v.status, v.connected_at, \
                     CASE WHEN v.status = 'offline' THEN v.at END, v.at, v.remote_addr, \
                     v.protocol, v.credential, v.disconnect_reason, v.node_id \
                     FROM v JOIN devices d ON d.tenant_id = v.tenant_id AND d.id = v.device_id \
                     WHERE true ON CONFLICT (tenant_id, device_id) DO UPDATE SET \
                     status = excluded.status, \
                     connected_at = COALESCE(excluded.connected_at, device_presence.connected_at), \
                     disconnected_at = excluded.disconnected_at, \
                     last_seen = excluded.last_seen, \
                     remote_addr = COALESCE(excluded.remote_addr, device_presence.remote_addr), \
                     protocol = COALESCE(excluded.protocol, device_presence.protocol), \
                     credential = COALESCE(excluded.credential, device_presence.credential), \
                     disconnect_reason = excluded.disconnect_reason, \
                     node_id = COALESCE(excluded.node_id, device_presence.node_id) \
                     WHERE excluded.last_seen >= device_presence.last_seen",
                );
                // Not kept prepared: each batch size is another statement
                // text, and a connect storm's batches filled the statement
                // cache with up to a hundred of them, several MB of SQLite
                // memory held for good (issue 16).
                changed += q
                    .build()
                    .persistent(false)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
            }
            tx.commit().await?;
        });
        Ok(changed)
    }

    /// The device's presence; `None` if it has never connected.
    pub async fn get_presence(
        &self,
        tenant_id: &str,
        device_id: &str,
    ) -> Result<Option<DevicePresence>, Error> {
        const SQL: &str = "SELECT tenant_id, device_id, status, connected_at, disconnected_at, \
             last_seen, remote_addr, protocol, credential, disconnect_reason, node_id \
             FROM device_presence WHERE tenant_id = $1 AND device_id = $2";
        Ok(sql!(self, fetch_optional as DevicePresence => SQL, tenant_id, device_id)?)
    }

    /// Sets every device that `node_id` has marked online to offline (at
    /// `at`, with `reason`): a node starting after a crash never said
    /// goodbye for its connections. Returns the devices it changed, as
    /// `(tenant, device)`, so their retained status can say so too.
    #[tracing::instrument(skip(self, at))]
    pub async fn set_node_offline(
        &self,
        node_id: &str,
        at: DateTime<Utc>,
        reason: &str,
    ) -> Result<Vec<(String, String)>, Error> {
        const SQL: &str = "UPDATE device_presence SET status = 'offline', disconnected_at = $2, \
             disconnect_reason = $3 WHERE node_id = $1 AND status = 'online' \
             RETURNING tenant_id, device_id";
        let mut devices: Vec<(String, String)> = sql!(self, fetch_all as _ => SQL, node_id, Ts(at),
            reason)?;
        devices.sort();
        Ok(devices)
    }
}
