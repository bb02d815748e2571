//! Per-tenant presence settings: whether the broker publishes a retained
//! `devices/{d}/status` message for the tenant's devices. No row means the
//! default (on).

use chrono::{DateTime, Utc};

use crate::audit::audited_tx;
use crate::codec::{Ts, now};
use crate::pki::{on_violation, tenant_not_found};
use crate::{Error, NewAuditEntry, Store};

/// A tenant's presence settings.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct PresenceSettings {
    pub tenant_id: String,
    /// Publish `devices/{d}/status`, retained, on connect and disconnect.
    pub publish_status: bool,
    /// When they were last set; `None` while the tenant has the defaults.
    pub updated_at: Option<DateTime<Utc>>,
}

impl PresenceSettings {
    /// What a tenant that never set them has.
    pub fn default_for(tenant_id: &str) -> PresenceSettings {
        PresenceSettings {
            tenant_id: tenant_id.to_owned(),
            publish_status: true,
            updated_at: None,
        }
    }
}

impl Store {
    /// The tenant's presence settings (the defaults if never set). Does not
    /// check that the tenant exists.
    pub async fn get_presence_settings(&self, tenant_id: &str) -> Result<PresenceSettings, Error> {
        const SQL: &str = "SELECT tenant_id, publish_status, updated_at \
                           FROM tenant_presence_settings WHERE tenant_id = $1";
        let row = sql!(self, fetch_optional as PresenceSettings => SQL, tenant_id)?;
        Ok(row.unwrap_or_else(|| PresenceSettings::default_for(tenant_id)))
    }

    /// Every tenant's settings that differ from never having set them, for
    /// the broker's in-memory view at start.
    pub async fn list_presence_settings(&self) -> Result<Vec<PresenceSettings>, Error> {
        const SQL: &str = "SELECT tenant_id, publish_status, updated_at \
                           FROM tenant_presence_settings ORDER BY tenant_id";
        Ok(sql!(self, fetch_all as PresenceSettings => SQL)?)
    }

    /// Set the tenant's presence settings, with `audit` in the same
    /// transaction. `NotFound` for an unknown tenant.
    #[tracing::instrument(skip_all, fields(tenant = %tenant_id))]
    pub async fn put_presence_settings(
        &self,
        tenant_id: &str,
        publish_status: bool,
        audit: Option<&NewAuditEntry>,
    ) -> Result<PresenceSettings, Error> {
        const SQL: &str = "INSERT INTO tenant_presence_settings (tenant_id, publish_status, updated_at) \
                           VALUES ($1, $2, $3) ON CONFLICT (tenant_id) DO UPDATE SET \
                           publish_status = excluded.publish_status, updated_at = excluded.updated_at \
                           RETURNING tenant_id, publish_status, updated_at";
        let row = audited_tx!(self, audit, Result::is_ok, tx => sql!(in tx, fetch_one as PresenceSettings => SQL,
            tenant_id, publish_status, Ts(now())));
        row.map_err(|e| on_violation(e, None, Some(tenant_not_found(tenant_id))))
    }
}
