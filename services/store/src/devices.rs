//! Devices: belong to one tenant, keyed by (tenant id, device id).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sqlx::types::Json;

use crate::audit::{append_audit_in, audited_of_tx, commit_audited, made_ok};
use crate::change_events::write_events_in;
use crate::codec::{Ts, now};
use crate::error::{Violation, violation};
use crate::page::{CursorKind, Page, Paged};
use crate::pki::{on_violation, tenant_not_found};
use crate::store::tenant_query;
use crate::{AuditOf, Backend, DeviceId, Error, NewAuditEntry, Store};

const KIND: &str = "device";

pub type Labels = BTreeMap<String, String>;
pub type Attributes = Map<String, Value>;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, sqlx::FromRow)]
pub struct Device {
    pub tenant_id: String,
    pub id: String,
    /// Flat string → string tags, for filtering (`?label=k=v`).
    #[sqlx(json)]
    pub labels: Labels,
    /// Free-form JSON object.
    #[sqlx(json)]
    pub attributes: Attributes,
    /// A disabled device may not connect.
    pub enabled: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewDevice {
    /// `[A-Za-z0-9._-]{1,128}`, checked on create.
    pub id: String,
    #[serde(default)]
    pub labels: Labels,
    #[serde(default)]
    pub attributes: Attributes,
    #[serde(default = "enabled_by_default")]
    pub enabled: bool,
}

fn enabled_by_default() -> bool {
    true
}

impl NewDevice {
    /// An enabled device with no labels or attributes.
    pub fn new(id: impl Into<String>) -> NewDevice {
        NewDevice {
            id: id.into(),
            labels: Labels::new(),
            attributes: Attributes::new(),
            enabled: true,
        }
    }
}

/// Fields to change; `None` leaves a field as it is. `labels` and
/// `attributes` replace the whole object.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DevicePatch {
    pub labels: Option<Labels>,
    pub attributes: Option<Attributes>,
    pub enabled: Option<bool>,
}

/// Which devices `list_devices` returns: all conditions must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceFilter {
    pub enabled: Option<bool>,
    /// Every pair must be among the device's labels.
    pub labels: Labels,
    /// Online or offline (a device that never connected is offline).
    pub presence: Option<crate::PresenceStatus>,
}

/// An operator's note on a device: one line of its maintenance log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct DeviceNote {
    pub id: i64,
    /// 1 to [`MAX_NOTE_CHARS`] characters.
    pub text: String,
    /// Who wrote it: the audit actor of the request.
    pub author: String,
    pub created_at: DateTime<Utc>,
}

/// The longest note, in characters (the tables' check).
pub const MAX_NOTE_CHARS: usize = 2000;

/// The columns of [`Device`], for `concat!`.
macro_rules! columns {
    () => {
        "tenant_id, id, labels, attributes, enabled, created_at, updated_at"
    };
}

impl Store {
    /// The device's notes, newest first: its newest 100 (the migration's
    /// trigger drops older ones). `NotFound` for an unknown device.
    pub async fn list_device_notes(
        &self,
        tenant_id: &str,
        device_id: &str,
    ) -> Result<Vec<DeviceNote>, Error> {
        const SQL: &str = "SELECT id, text, author, created_at FROM device_notes \
                           WHERE tenant_id = $1 AND device_id = $2 ORDER BY id DESC";
        let notes = sql!(self, fetch_all as DeviceNote => SQL, tenant_id, device_id)?;
        if notes.is_empty() {
            self.get_device(tenant_id, device_id).await?;
        }
        Ok(notes)
    }

    /// Add `author`'s note to the device's log, with the entry `audit`
    /// makes of it, in one transaction; the oldest goes past 100.
    /// `NotFound` for an unknown device.
    #[tracing::instrument(skip_all, fields(tenant = %tenant_id, device = %device_id))]
    pub async fn add_device_note_audited(
        &self,
        tenant_id: &str,
        device_id: &str,
        text: &str,
        author: &str,
        audit: AuditOf<'_, DeviceNote>,
    ) -> Result<DeviceNote, Error> {
        const SQL: &str = "INSERT INTO device_notes \
                           (tenant_id, device_id, text, author, created_at) \
                           VALUES ($1, $2, $3, $4, $5) RETURNING id, text, author, created_at";
        let row = audited_of_tx!(self, Some(audit), made_ok, tx => sql!(in tx,
            fetch_one as DeviceNote => SQL, tenant_id, device_id, text, author, Ts(now())));
        row.map_err(|e| on_violation(e, None, Some(not_found(tenant_id, device_id))))
    }

    /// Create a device in `tenant_id`. `NotFound` (tenant) if the tenant does
    /// not exist, `AlreadyExists` if the device id is taken in that tenant.
    pub async fn create_device(&self, tenant_id: &str, new: &NewDevice) -> Result<Device, Error> {
        self.write_new_device(tenant_id, new, None).await
    }

    /// [`Store::create_device`] and the entry `audit` makes of the new
    /// device (with its events) in one transaction: both or neither
    /// persist.
    pub async fn create_device_audited(
        &self,
        tenant_id: &str,
        new: &NewDevice,
        audit: AuditOf<'_, Device>,
    ) -> Result<Device, Error> {
        self.write_new_device(tenant_id, new, Some(audit)).await
    }

    #[tracing::instrument(skip_all, fields(tenant = %tenant_id, device = %new.id))]
    async fn write_new_device(
        &self,
        tenant_id: &str,
        new: &NewDevice,
        audit: Option<AuditOf<'_, Device>>,
    ) -> Result<Device, Error> {
        DeviceId::parse(&new.id)?;
        const SQL: &str = concat!(
            "INSERT INTO devices ",
            "(tenant_id, id, labels, attributes, enabled, created_at, updated_at) ",
            "VALUES ($1, $2, $3, $4, $5, $6, $6) RETURNING ",
            columns!()
        );
        let row = audited_of_tx!(self, audit, made_ok,
            tx => sql!(in tx, fetch_one as Device => SQL, tenant_id, &new.id, Json(&new.labels),
                Json(&new.attributes), new.enabled, Ts(now())));
        row.map_err(|e| {
            on_violation(
                e,
                Some(Error::already_exists(KIND, qualified(tenant_id, &new.id))),
                Some(tenant_not_found(tenant_id)),
            )
        })
    }

    /// The device, or `NotFound`.
    pub async fn get_device(&self, tenant_id: &str, id: &str) -> Result<Device, Error> {
        const SQL: &str = concat!(
            "SELECT ",
            columns!(),
            " FROM devices WHERE tenant_id = $1 AND id = $2"
        );
        let row = sql!(self, fetch_optional as Device => SQL, tenant_id, id)?;
        row.ok_or_else(|| not_found(tenant_id, id))
    }

    /// A tenant's devices matching `filter`, in device id order. `NotFound`
    /// (tenant) when the tenant does not exist.
    pub async fn list_devices(
        &self,
        tenant_id: &str,
        filter: &DeviceFilter,
        page: &Page,
    ) -> Result<Paged<Device>, Error> {
        let after = page.after_key(CursorKind::Devices)?;
        let backend = self.backend();
        let devices = on_pool!(self, pool => {
            let mut q = tenant_query(
                concat!("SELECT ", columns!(), " FROM devices WHERE tenant_id = "),
                tenant_id,
            );
            if let Some(after) = &after {
                q.push(" AND id > ").push_bind(after.as_str());
            }
            if let Some(enabled) = filter.enabled {
                q.push(" AND enabled = ").push_bind(enabled);
            }
            if let Some(presence) = filter.presence {
                q.push(match presence {
                    crate::PresenceStatus::Online => " AND EXISTS",
                    crate::PresenceStatus::Offline => " AND NOT EXISTS",
                });
                q.push(
                    " (SELECT 1 FROM device_presence p WHERE p.tenant_id = devices.tenant_id \
                     AND p.device_id = devices.id AND p.status = 'online')",
                );
            }
            if !filter.labels.is_empty() {
                match backend {
                    // Containment, served by the GIN index on labels.
                    Backend::Postgres => {
                        q.push(" AND labels @> ").push_bind(Json(&filter.labels));
                    }
                    Backend::Sqlite => {
                        for (key, value) in &filter.labels {
                            q.push(
                                " AND EXISTS (SELECT 1 FROM json_each(devices.labels) \
                                 WHERE json_each.key = ",
                            )
                            .push_bind(key.as_str())
                            .push(" AND json_each.value = ")
                            .push_bind(value.as_str())
                            .push(")");
                        }
                    }
                }
            }
            q.push(" ORDER BY id LIMIT ").push_bind(page.fetch_limit());
            q.build_query_as::<Device>().fetch_all(pool).await?
        });
        if devices.is_empty() && !self.tenant_exists(tenant_id).await? {
            return Err(tenant_not_found(tenant_id));
        }
        Ok(Paged::from_rows(devices, page, CursorKind::Devices, |d| {
            d.id.clone()
        }))
    }

    /// Apply `patch` to the device and return it, or `NotFound`.
    pub async fn update_device(
        &self,
        tenant_id: &str,
        id: &str,
        patch: &DevicePatch,
    ) -> Result<Device, Error> {
        self.write_device_patch(tenant_id, id, patch, None, None)
            .await
    }

    /// [`Store::update_device`] and the entry `audit` makes of the updated
    /// device (with its events) in one transaction. With `unchanged_since`,
    /// only if the device's `updated_at` is still that (else `Modified`): a
    /// read-modify-write that cannot lose a concurrent change.
    pub async fn update_device_audited(
        &self,
        tenant_id: &str,
        id: &str,
        patch: &DevicePatch,
        unchanged_since: Option<DateTime<Utc>>,
        audit: AuditOf<'_, Device>,
    ) -> Result<Device, Error> {
        self.write_device_patch(tenant_id, id, patch, unchanged_since, Some(audit))
            .await
    }

    #[tracing::instrument(skip_all, fields(tenant = %tenant_id, device = %id))]
    async fn write_device_patch(
        &self,
        tenant_id: &str,
        id: &str,
        patch: &DevicePatch,
        unchanged_since: Option<DateTime<Utc>>,
        audit: Option<AuditOf<'_, Device>>,
    ) -> Result<Device, Error> {
        const SQL: &str = concat!(
            "UPDATE devices SET labels = COALESCE($3, labels), ",
            "attributes = COALESCE($4, attributes), enabled = COALESCE($5, enabled), ",
            "updated_at = $6 WHERE tenant_id = $1 AND id = $2 ",
            "AND ($7 IS NULL OR updated_at = $7) RETURNING ",
            columns!()
        );
        let row = audited_of_tx!(self, audit, Option::as_ref, tx => sql!(in tx,
            fetch_optional as Device => SQL, tenant_id, id, patch.labels.as_ref().map(Json),
            patch.attributes.as_ref().map(Json), patch.enabled, Ts(now()),
            unchanged_since.map(Ts))?);
        match row {
            Some(device) => Ok(device),
            None if unchanged_since.is_some() && self.get_device(tenant_id, id).await.is_ok() => {
                Err(Error::modified(KIND, qualified(tenant_id, id)))
            }
            None => Err(not_found(tenant_id, id)),
        }
    }

    /// Delete the device, or `NotFound`.
    pub async fn delete_device(&self, tenant_id: &str, id: &str) -> Result<(), Error> {
        self.remove_device(tenant_id, id, None).await
    }

    /// [`Store::delete_device`] and `audit` in one transaction.
    pub async fn delete_device_audited(
        &self,
        tenant_id: &str,
        id: &str,
        audit: &NewAuditEntry,
    ) -> Result<(), Error> {
        self.remove_device(tenant_id, id, Some(audit)).await
    }

    #[tracing::instrument(skip_all, fields(tenant = %tenant_id, device = %id))]
    async fn remove_device(
        &self,
        tenant_id: &str,
        id: &str,
        audit: Option<&NewAuditEntry>,
    ) -> Result<(), Error> {
        const SQL: &str = "DELETE FROM devices WHERE tenant_id = $1 AND id = $2";
        let deleted = on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            // The events are numbered before the delete: the sequence lives
            // in the device's state row, which goes with the device. A
            // missing device fails here, as `NotFound`, like the delete.
            let events = audit.map_or(&[][..], |entry| entry.events.as_slice());
            let committed = write_events_in!(&mut *tx, events)?;
            let deleted = sql!(in &mut *tx, execute => SQL, tenant_id, id)?;
            if deleted > 0 {
                if let Some(entry) = audit {
                    append_audit_in!(&mut *tx, entry)?;
                }
                tx.commit().await?;
                self.announce(committed);
            }
            deleted
        });
        if deleted == 0 {
            return Err(not_found(tenant_id, id));
        }
        Ok(())
    }
}

impl Store {
    /// Create many devices in `tenant_id`, in order: one result per device
    /// attempted, all in one transaction. With `all_or_nothing`, it stops
    /// at the first failure and is rolled back (so the earlier `Ok`s did
    /// not persist, and later devices were not attempted); otherwise a
    /// refused device is skipped and the others persist. When any device
    /// persists, `audit` makes its entry from the results, written in the
    /// same transaction. Per-device errors are `AlreadyExists` and
    /// `InvalidId`; `NotFound` (tenant) if the tenant does not exist, and
    /// database failures, fail the whole call (nothing persists).
    #[tracing::instrument(skip_all, fields(tenant = %tenant_id, count = devices.len()))]
    pub async fn import_devices(
        &self,
        tenant_id: &str,
        devices: &[NewDevice],
        all_or_nothing: bool,
        audit: Option<AuditOf<'_, [Result<Device, Error>]>>,
    ) -> Result<Vec<Result<Device, Error>>, Error> {
        if !self.tenant_exists(tenant_id).await? {
            return Err(tenant_not_found(tenant_id));
        }
        // A taken id returns no row instead of failing, which on Postgres
        // would abort the transaction and every later device with it.
        const SQL: &str = concat!(
            "INSERT INTO devices ",
            "(tenant_id, id, labels, attributes, enabled, created_at, updated_at) ",
            "VALUES ($1, $2, $3, $4, $5, $6, $6) ON CONFLICT DO NOTHING RETURNING ",
            columns!()
        );
        let at = Ts(now());
        let results = on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let mut results = Vec::with_capacity(devices.len());
            for new in devices {
                let result = match DeviceId::parse(&new.id) {
                    Err(e) => Err(Error::from(e)),
                    Ok(_) => match sql!(in &mut *tx, fetch_optional as Device => SQL, tenant_id,
                        &new.id, Json(&new.labels), Json(&new.attributes), new.enabled, at)
                    {
                        Ok(Some(device)) => Ok(device),
                        Ok(None) => Err(Error::already_exists(KIND, qualified(tenant_id, &new.id))),
                        Err(e) => match violation(&e) {
                            Some(Violation::ForeignKey) => return Err(tenant_not_found(tenant_id)),
                            // The transaction rolls back on drop.
                            _ => return Err(e.into()),
                        },
                    },
                };
                let failed = result.is_err();
                results.push(result);
                if failed && all_or_nothing {
                    break;
                }
            }
            let created = results.iter().filter(|r| r.is_ok()).count();
            let refused = all_or_nothing && created < results.len();
            let entry = audit.filter(|_| created > 0).map(|audit| audit(&results));
            commit_audited!(self, tx, !refused, entry.as_ref());
            results
        });
        Ok(results)
    }
}

/// How a device appears in `NotFound`/`AlreadyExists`: `tenant/device`.
fn qualified(tenant_id: &str, id: &str) -> String {
    format!("{tenant_id}/{id}")
}

fn not_found(tenant_id: &str, id: &str) -> Error {
    Error::not_found(KIND, qualified(tenant_id, id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_device_json_defaults() {
        let d: NewDevice = serde_json::from_str(r#"{"id":"s-1"}"#).unwrap();
        assert_eq!(d, NewDevice::new("s-1"));
        assert!(d.enabled);
    }
}
