//! The device state document (issue 6): `reported` (what the device last
//! said on its state topic) and `desired` (set through the API), each a
//! JSON object changed by JSON merge patch (RFC 7386) with a version and a
//! time; and the per-device sequence number of lifecycle events.
//!
//! Updates are optimistic: read, merge in Rust, write back only if the
//! version is still the one read (retrying on a lost race). The same
//! conditional write is what `If-Match` on desired needs, and it behaves
//! alike on both backends without row locks.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sqlx::types::Json;

use crate::audit::audited_of_tx;
use crate::codec::Ts;
use crate::error::{Violation, violation};
use crate::{AuditOf, Error, Store};

const KIND: &str = "device state";
/// Lost races before giving up with `VersionConflict`: only a device
/// updated this often concurrently could hit it.
const MAX_ATTEMPTS: usize = 16;

/// A device's state document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, sqlx::FromRow)]
pub struct DeviceState {
    pub tenant_id: String,
    pub device_id: String,
    /// A JSON object (`{}` until the device reports).
    #[sqlx(json)]
    pub reported: Value,
    /// Bumped by every reported merge (0: never reported).
    pub reported_version: i64,
    pub reported_at: Option<DateTime<Utc>>,
    /// Why the last payload on the reported topic was not merged; `None`
    /// after a good one.
    pub reported_error: Option<String>,
    /// A JSON object (`{}` until set).
    #[sqlx(json)]
    pub desired: Value,
    /// Bumped by every desired merge (0: never set); `If-Match` compares it.
    pub desired_version: i64,
    pub desired_at: Option<DateTime<Utc>>,
}

impl DeviceState {
    fn empty(tenant_id: &str, device_id: &str) -> Self {
        DeviceState {
            tenant_id: tenant_id.to_owned(),
            device_id: device_id.to_owned(),
            reported: Value::Object(Map::new()),
            reported_version: 0,
            reported_at: None,
            reported_error: None,
            desired: Value::Object(Map::new()),
            desired_version: 0,
            desired_at: None,
        }
    }

    /// The desired keys whose value differs from reported (recursing into
    /// objects present on both sides); `{}` when the device is in sync.
    pub fn delta(&self) -> Value {
        delta(&self.desired, &self.reported).unwrap_or_else(|| Value::Object(Map::new()))
    }
}

fn delta(desired: &Value, reported: &Value) -> Option<Value> {
    match (desired, reported) {
        (Value::Object(d), Value::Object(r)) => {
            let out: Map<String, Value> = d
                .iter()
                .filter_map(|(k, dv)| match r.get(k) {
                    Some(rv) => delta(dv, rv).map(|v| (k.clone(), v)),
                    None => Some((k.clone(), dv.clone())),
                })
                .collect();
            (!out.is_empty()).then_some(Value::Object(out))
        }
        (d, r) if d == r => None,
        (d, _) => Some(d.clone()),
    }
}

/// RFC 7386 JSON merge patch: `null` removes a member, an object merges
/// recursively, anything else replaces.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    if let Value::Object(target) = target {
        for (key, value) in patch {
            if value.is_null() {
                target.remove(key);
            } else {
                merge_patch(target.entry(key.clone()).or_insert(Value::Null), value);
            }
        }
    }
}

macro_rules! state_columns {
    () => {
        "tenant_id, device_id, reported, reported_version, reported_at, reported_error, \
         desired, desired_version, desired_at"
    };
}

/// Which half of the document a merge changes, with what only desired
/// changes have: an `If-Match` version and an audit entry.
#[derive(Clone, Copy)]
enum Side<'a> {
    Reported,
    Desired {
        expected_version: Option<i64>,
        audit: Option<AuditOf<'a, DeviceState>>,
    },
}

/// Takes the device's next event sequence number ($1 tenant, $2 device).
pub(crate) const NEXT_EVENT_SEQ: &str = "INSERT INTO device_state (tenant_id, device_id, event_seq) \
     VALUES ($1, $2, 1) ON CONFLICT (tenant_id, device_id) \
     DO UPDATE SET event_seq = device_state.event_seq + 1 RETURNING event_seq";

fn qualified(tenant_id: &str, device_id: &str) -> String {
    format!("{tenant_id}/{device_id}")
}

fn require_object(patch: &Value) -> Result<(), Error> {
    if patch.is_object() {
        Ok(())
    } else {
        Err(Error::InvalidDocument {
            kind: KIND,
            reason: "a state patch must be a JSON object",
        })
    }
}

impl Store {
    /// The device's state document (empty halves at version 0 if nothing
    /// was ever reported or desired); `NotFound` if the device does not
    /// exist.
    pub async fn get_device_state(
        &self,
        tenant_id: &str,
        device_id: &str,
    ) -> Result<DeviceState, Error> {
        match self.read_state(tenant_id, device_id).await? {
            Some(state) => Ok(state),
            None => {
                self.get_device(tenant_id, device_id).await?;
                Ok(DeviceState::empty(tenant_id, device_id))
            }
        }
    }

    /// Merges `patch` (a JSON object, RFC 7386) into reported, bumps its
    /// version and clears `reported_error`.
    #[tracing::instrument(skip_all, fields(tenant = %tenant_id, device = %device_id))]
    pub async fn merge_reported(
        &self,
        tenant_id: &str,
        device_id: &str,
        patch: &Value,
        at: DateTime<Utc>,
    ) -> Result<DeviceState, Error> {
        require_object(patch)?;
        self.merge(tenant_id, device_id, Side::Reported, patch, at)
            .await
    }

    /// Merges `patch` (a JSON object, RFC 7386) into desired and bumps its
    /// version. With `expected_version` (`If-Match`), the merge happens
    /// only if desired is still at that version, else `VersionConflict`.
    /// With `audit`, the entry it makes of the new document (whose version
    /// is set here) is written in the same transaction as the merge.
    #[tracing::instrument(skip_all, fields(tenant = %tenant_id, device = %device_id))]
    pub async fn merge_desired(
        &self,
        tenant_id: &str,
        device_id: &str,
        patch: &Value,
        expected_version: Option<i64>,
        at: DateTime<Utc>,
        audit: Option<AuditOf<'_, DeviceState>>,
    ) -> Result<DeviceState, Error> {
        require_object(patch)?;
        let side = Side::Desired {
            expected_version,
            audit,
        };
        self.merge(tenant_id, device_id, side, patch, at).await
    }

    /// Records that the device published something on its reported topic
    /// that is not a JSON object: reported itself is left as it was.
    #[tracing::instrument(skip_all, fields(tenant = %tenant_id, device = %device_id))]
    pub async fn set_reported_error(
        &self,
        tenant_id: &str,
        device_id: &str,
        error: &str,
        at: DateTime<Utc>,
    ) -> Result<DeviceState, Error> {
        self.ensure_state_row(tenant_id, device_id).await?;
        const SQL: &str = concat!(
            "UPDATE device_state SET reported_error = $3, reported_at = $4 ",
            "WHERE tenant_id = $1 AND device_id = $2 RETURNING ",
            state_columns!()
        );
        let row = sql!(self, fetch_optional as DeviceState => SQL, tenant_id, device_id, error,
            Ts(at))?;
        row.ok_or_else(|| device_not_found(tenant_id, device_id))
    }

    /// The next lifecycle event sequence number of the device: 1, 2, 3, …
    /// never reused, so a consumer receiving events out of order can tell
    /// which is latest. `NotFound` if the device does not exist.
    pub async fn next_event_seq(&self, tenant_id: &str, device_id: &str) -> Result<i64, Error> {
        let seq = sql!(self, fetch_one scalar => NEXT_EVENT_SEQ, tenant_id, device_id);
        seq.map_err(|e| state_error(e, tenant_id, device_id))
    }

    /// Reserve `count` consecutive event sequence numbers of the device at
    /// once (for message events, numbered in batches); the last one comes
    /// back, so they are `last - count + 1 ..= last`. `NotFound` if the
    /// device does not exist.
    pub async fn reserve_event_seqs(
        &self,
        tenant_id: &str,
        device_id: &str,
        count: u32,
    ) -> Result<i64, Error> {
        const SQL: &str = "INSERT INTO device_state (tenant_id, device_id, event_seq) \
             VALUES ($1, $2, $3) ON CONFLICT (tenant_id, device_id) \
             DO UPDATE SET event_seq = device_state.event_seq + $3 RETURNING event_seq";
        let count = i64::from(count.max(1));
        let seq = sql!(self, fetch_one scalar => SQL, tenant_id, device_id, count);
        seq.map_err(|e| state_error(e, tenant_id, device_id))
    }

    /// [`Store::reserve_event_seqs`] for many devices in two statements,
    /// whatever their number: `counts` names each `(tenant, device, count)`
    /// once, and the answer has, in the same order, the last number
    /// reserved, or `None` for a client that is no device.
    pub async fn reserve_event_seqs_batch(
        &self,
        counts: &[(String, String, u32)],
    ) -> Result<Vec<Option<i64>>, Error> {
        if counts.is_empty() {
            return Ok(Vec::new());
        }
        let devices: Vec<(String, String)> = on_pool!(self, pool => {
            let mut q = sqlx::QueryBuilder::new("SELECT tenant_id, id FROM devices WHERE ");
            for (at, (tenant, device, _)) in counts.iter().enumerate() {
                q.push(if at == 0 { "(tenant_id = " } else { " OR (tenant_id = " });
                q.push_bind(tenant).push(" AND id = ").push_bind(device).push(")");
            }
            q.build_query_as().fetch_all(pool).await?
        });
        let devices: std::collections::HashSet<(String, String)> = devices.into_iter().collect();
        let wanted: Vec<&(String, String, u32)> = counts
            .iter()
            .filter(|(t, d, _)| devices.contains(&(t.clone(), d.clone())))
            .collect();
        let mut last = std::collections::HashMap::new();
        if !wanted.is_empty() {
            let rows: Result<Vec<(String, String, i64)>, sqlx::Error> = on_pool!(self, pool => {
                let mut q = sqlx::QueryBuilder::new(
                    "INSERT INTO device_state (tenant_id, device_id, event_seq) ",
                );
                q.push_values(&wanted, |mut row, (tenant, device, count)| {
                    row.push_bind(tenant)
                        .push_bind(device)
                        .push_bind(i64::from((*count).max(1)));
                });
                q.push(
                    " ON CONFLICT (tenant_id, device_id) DO UPDATE SET \
                     event_seq = device_state.event_seq + excluded.event_seq \
                     RETURNING tenant_id, device_id, event_seq",
                );
                q.build_query_as().fetch_all(pool).await
            });
            match rows {
                Ok(rows) => last.extend(rows.into_iter().map(|(t, d, seq)| ((t, d), seq))),
                // A device deleted between the two statements: one by one.
                Err(e) if matches!(violation(&e), Some(Violation::ForeignKey)) => {
                    for (tenant, device, count) in &wanted {
                        match self.reserve_event_seqs(tenant, device, *count).await {
                            Ok(seq) => {
                                last.insert((tenant.clone(), device.clone()), seq);
                            }
                            Err(Error::NotFound { .. }) => {}
                            Err(e) => return Err(e),
                        }
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(counts
            .iter()
            .map(|(t, d, _)| last.get(&(t.clone(), d.clone())).copied())
            .collect())
    }

    async fn read_state(
        &self,
        tenant_id: &str,
        device_id: &str,
    ) -> Result<Option<DeviceState>, Error> {
        const SQL: &str = concat!(
            "SELECT ",
            state_columns!(),
            " FROM device_state WHERE tenant_id = $1 AND device_id = $2"
        );
        Ok(sql!(self, fetch_optional as DeviceState => SQL, tenant_id, device_id)?)
    }

    async fn ensure_state_row(&self, tenant_id: &str, device_id: &str) -> Result<(), Error> {
        const SQL: &str = "INSERT INTO device_state (tenant_id, device_id) VALUES ($1, $2) \
             ON CONFLICT (tenant_id, device_id) DO NOTHING";
        let done = sql!(self, execute => SQL, tenant_id, device_id);
        done.map(drop)
            .map_err(|e| state_error(e, tenant_id, device_id))
    }

    async fn merge(
        &self,
        tenant_id: &str,
        device_id: &str,
        side: Side<'_>,
        patch: &Value,
        at: DateTime<Utc>,
    ) -> Result<DeviceState, Error> {
        self.ensure_state_row(tenant_id, device_id).await?;
        let (expected_version, audit) = match side {
            Side::Reported => (None, None),
            Side::Desired {
                expected_version,
                audit,
            } => (expected_version, audit),
        };
        let sql = match side {
            Side::Reported => concat!(
                "UPDATE device_state SET reported = $3, reported_version = $4 + 1, ",
                "reported_at = $5, reported_error = NULL WHERE tenant_id = $1 ",
                "AND device_id = $2 AND reported_version = $4 RETURNING ",
                state_columns!()
            ),
            Side::Desired { .. } => concat!(
                "UPDATE device_state SET desired = $3, desired_version = $4 + 1, ",
                "desired_at = $5 WHERE tenant_id = $1 ",
                "AND device_id = $2 AND desired_version = $4 RETURNING ",
                state_columns!()
            ),
        };
        let mut last_seen = 0;
        for _ in 0..MAX_ATTEMPTS {
            let current = self
                .read_state(tenant_id, device_id)
                .await?
                .ok_or_else(|| device_not_found(tenant_id, device_id))?;
            let (mut doc, version) = match side {
                Side::Reported => (current.reported, current.reported_version),
                Side::Desired { .. } => (current.desired, current.desired_version),
            };
            last_seen = version;
            if let Some(expected) = expected_version
                && expected != version
            {
                return Err(conflict(tenant_id, device_id, expected, version));
            }
            merge_patch(&mut doc, patch);
            macro_rules! write {
                ($conn:expr) => {
                    sql!(in $conn, fetch_optional as DeviceState => sql, tenant_id, device_id,
                        Json(&doc), version, Ts(at))?
                };
            }
            // Reported state (the MQTT hot path) has no entry and needs
            // no transaction.
            let written = match audit {
                None => on_pool!(self, pool => write!(pool)),
                Some(audit) => audited_of_tx!(self, Some(audit), Option::as_ref, tx => write!(tx)),
            };
            if let Some(state) = written {
                return Ok(state);
            }
            // Another writer got in between: read again.
        }
        Err(conflict(
            tenant_id,
            device_id,
            expected_version.unwrap_or(last_seen),
            last_seen,
        ))
    }
}

fn conflict(tenant_id: &str, device_id: &str, expected: i64, actual: i64) -> Error {
    Error::VersionConflict {
        kind: KIND,
        id: qualified(tenant_id, device_id),
        expected,
        actual,
    }
}

fn device_not_found(tenant_id: &str, device_id: &str) -> Error {
    Error::not_found("device", qualified(tenant_id, device_id))
}

/// A failed write on `device_state`: a missing device shows as a foreign
/// key violation.
pub(crate) fn state_error(e: sqlx::Error, tenant_id: &str, device_id: &str) -> Error {
    match violation(&e) {
        Some(Violation::ForeignKey) => device_not_found(tenant_id, device_id),
        _ => e.into(),
    }
}

/// The event hub numbers device events with [`Store::next_event_seq`].
impl events::hub::EventNumbers for Store {
    type Error = Error;

    fn next_event_seq(
        &self,
        tenant: &str,
        device: &str,
    ) -> impl Future<Output = Result<i64, Error>> + Send {
        Store::next_event_seq(self, tenant, device)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_patch_follows_rfc_7386_examples() {
        // RFC 7386, Appendix A.
        let cases = [
            (json!({"a":"b"}), json!({"a":"c"}), json!({"a":"c"})),
            (json!({"a":"b"}), json!({"b":"c"}), json!({"a":"b","b":"c"})),
            (json!({"a":"b"}), json!({"a":null}), json!({})),
            (
                json!({"a":"b","b":"c"}),
                json!({"a":null}),
                json!({"b":"c"}),
            ),
            (json!({"a":["b"]}), json!({"a":"c"}), json!({"a":"c"})),
            (json!({"a":"c"}), json!({"a":["b"]}), json!({"a":["b"]})),
            (
                json!({"a":{"b":"c"}}),
                json!({"a":{"b":"d","c":null}}),
                json!({"a":{"b":"d"}}),
            ),
            (json!({"a":[{"b":"c"}]}), json!({"a":[1]}), json!({"a":[1]})),
            (json!(["a", "b"]), json!(["c", "d"]), json!(["c", "d"])),
            (json!({"a":"b"}), json!(["c"]), json!(["c"])),
            (json!({"a":"foo"}), json!(null), json!(null)),
            (json!({"a":"foo"}), json!("bar"), json!("bar")),
            (json!({"e":null}), json!({"a":1}), json!({"e":null,"a":1})),
            (json!([1, 2]), json!({"a":"b","c":null}), json!({"a":"b"})),
            (
                json!({}),
                json!({"a":{"bb":{"ccc":null}}}),
                json!({"a":{"bb":{}}}),
            ),
        ];
        for (target, patch, want) in cases {
            let mut doc = target.clone();
            merge_patch(&mut doc, &patch);
            assert_eq!(doc, want, "{target} + {patch}");
        }
    }

    #[test]
    fn delta_is_what_desired_asks_that_reported_lacks() {
        let mut s = DeviceState::empty("acme", "d1");
        assert_eq!(s.delta(), json!({}));
        s.desired = json!({"led": true, "fan": {"speed": 3, "mode": "auto"}, "fw": "2"});
        s.reported = json!({"led": true, "fan": {"speed": 1, "mode": "auto"}, "temp": 21});
        assert_eq!(s.delta(), json!({"fan": {"speed": 3}, "fw": "2"}));
        s.reported = s.desired.clone();
        assert_eq!(s.delta(), json!({}));
    }
}
