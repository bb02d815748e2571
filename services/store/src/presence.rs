//! Device presence (issue 6): online/offline, when, from where, how. The
//! `state` crate writes it in batches from the broker's connect and
//! disconnect events; the REST API reads it (`status` filter, state view).

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::codec::Ts;
use crate::pki::text_enum;
use crate::{Error, Store};

/// Rows per statement (one JSON parameter of up to about 300 KB).
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

/// The rows of one batch as one JSON parameter: an array of
/// `[tenant, device, status, at, connected_at, remote_addr, protocol,
/// credential, disconnect_reason, node_id]`, timestamps as [`Ts`] text.
/// One parameter makes one statement text whatever the batch size, which
/// each connection prepares once; a multi-row VALUES list was another
/// text per batch size, parsed and planned again for every batch (13 % of
/// the broker's CPU in a storm of 5,000 connects, issue 16).
fn rows_json<'a>(chunk: &[&'a PresenceUpdate]) -> sqlx::types::Json<Vec<PresenceRow<'a>>> {
    let rows = chunk
        .iter()
        .map(|u| {
            (
                u.tenant_id.as_str(),
                u.device_id.as_str(),
                u.status.as_str(),
                Ts(u.at).to_text(),
                u.connected_at.map(|t| Ts(t).to_text()),
                u.remote_addr.as_deref(),
                u.protocol.as_deref(),
                u.credential.as_deref(),
                u.disconnect_reason.as_deref(),
                u.node_id.as_deref(),
            )
        })
        .collect();
    sqlx::types::Json(rows)
}

type PresenceRow<'a> = (
    &'a str,
    &'a str,
    &'static str,
    String,
    Option<String>,
    Option<&'a str>,
    Option<&'a str>,
    Option<&'a str>,
    Option<&'a str>,
    Option<&'a str>,
);

/// The upsert below `v`, the batch's rows. The join skips unknown
/// devices; `WHERE true` lets SQLite parse ON CONFLICT after a SELECT.
macro_rules! presence_upsert {
    () => {
        "INSERT INTO device_presence (tenant_id, device_id, status, connected_at, \
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
         WHERE excluded.last_seen >= device_presence.last_seen"
    };
}

/// SQLite: timestamps stay [`Ts`] text, as stored.
const UPSERT_SQLITE: &str = concat!(
    "WITH v AS (SELECT value ->> 0 AS tenant_id, value ->> 1 AS device_id, \
     value ->> 2 AS status, value ->> 3 AS at, value ->> 4 AS connected_at, \
     value ->> 5 AS remote_addr, value ->> 6 AS protocol, value ->> 7 AS credential, \
     value ->> 8 AS disconnect_reason, value ->> 9 AS node_id FROM json_each($1)) ",
    presence_upsert!()
);

/// Postgres: the same rows, timestamps cast to `timestamptz`.
const UPSERT_POSTGRES: &str = concat!(
    "WITH v AS (SELECT e ->> 0 AS tenant_id, e ->> 1 AS device_id, e ->> 2 AS status, \
     (e ->> 3)::timestamptz AS at, (e ->> 4)::timestamptz AS connected_at, \
     e ->> 5 AS remote_addr, e ->> 6 AS protocol, e ->> 7 AS credential, \
     e ->> 8 AS disconnect_reason, e ->> 9 AS node_id \
     FROM jsonb_array_elements($1::jsonb) AS e) ",
    presence_upsert!()
);

impl Store {
    /// Apply many presence updates in one transaction (one upsert per
    /// chunk of rows); returns how many rows changed. Updates for devices that do
    /// not exist (a client id that is not a registered device, such as a
    /// backend's service credential) and updates older than the stored
    /// state are skipped.
    #[tracing::instrument(skip_all, fields(count = updates.len()))]
    pub async fn update_presence(&self, updates: &[PresenceUpdate]) -> Result<u64, Error> {
        let kept = last_per_device(updates);
        let mut changed = 0;
        on_pool!(self, pool => {
            let sql = if matches!(self.pool, crate::store::Pool::Sqlite(_)) {
                UPSERT_SQLITE
            } else {
                UPSERT_POSTGRES
            };
            let mut tx = pool.begin().await?;
            for chunk in kept.chunks(CHUNK) {
                changed += sqlx::query(sql)
                    .bind(rows_json(chunk))
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
