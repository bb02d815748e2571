//! MQTT passwords, one per device (service credentials are in
//! `service_credentials.rs`). Only argon2id PHC strings are stored; hashing
//! and verifying are the caller's.

use crate::audit::audited_tx;
use crate::codec::{Ts, now};
use crate::pki::{device_not_found, on_violation};
use crate::{Error, NewAuditEntry, Store};

impl Store {
    /// Set (or replace) a device's password hash, with `audit` in the same
    /// transaction. `NotFound` for an unknown device.
    #[tracing::instrument(skip_all, fields(tenant = %tenant_id, device = %device_id))]
    pub async fn set_device_password(
        &self,
        tenant_id: &str,
        device_id: &str,
        password_hash: &str,
        audit: Option<&NewAuditEntry>,
    ) -> Result<(), Error> {
        const SQL: &str = "INSERT INTO device_passwords (tenant_id, device_id, password_hash, created_at) \
                           VALUES ($1, $2, $3, $4) ON CONFLICT (tenant_id, device_id) \
                           DO UPDATE SET password_hash = excluded.password_hash, created_at = excluded.created_at";
        let done = audited_tx!(self, audit, Result::is_ok, tx => sql!(in tx, execute => SQL,
            tenant_id, device_id, password_hash, Ts(now())));
        done.map(drop)
            .map_err(|e| on_violation(e, None, Some(device_not_found(tenant_id, device_id))))
    }

    /// The device's password hash, if it has a password.
    pub async fn device_password_hash(
        &self,
        tenant_id: &str,
        device_id: &str,
    ) -> Result<Option<String>, Error> {
        const SQL: &str =
            "SELECT password_hash FROM device_passwords WHERE tenant_id = $1 AND device_id = $2";
        Ok(sql!(self, fetch_optional scalar => SQL, tenant_id, device_id)?)
    }

    /// Remove a device's password, with `audit` in the same transaction
    /// (only if it had one); true if it had one.
    pub async fn delete_device_password(
        &self,
        tenant_id: &str,
        device_id: &str,
        audit: Option<&NewAuditEntry>,
    ) -> Result<bool, Error> {
        const SQL: &str = "DELETE FROM device_passwords WHERE tenant_id = $1 AND device_id = $2";
        let n = audited_tx!(self, audit, |n: &u64| *n > 0, tx => sql!(in tx, execute => SQL,
            tenant_id, device_id)?);
        Ok(n > 0)
    }
}
