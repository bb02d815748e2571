//! Device certificates as issued (serial, fingerprint, validity, status),
//! revocation, and the revocation floors that refuse every certificate
//! issued before a moment (per device and per tenant).

use chrono::{DateTime, Utc};

use crate::audit::{audited_of_tx, audited_tx};
use crate::codec::{Ts, now};
use crate::pki::{device_not_found, on_violation, tenant_not_found, text_enum};
use crate::{AuditOf, Error, NewAuditEntry, Store};

text_enum!(
    /// Whether a certificate may still be used.
    CertificateStatus, "certificate status" {
        Active = "active",
        Revoked = "revoked",
    }
);

/// A certificate just issued, to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewDeviceCertificate {
    pub tenant_id: String,
    pub device_id: String,
    /// Lower-case hex without leading zero bytes (`pki::serial_hex`).
    pub serial: String,
    /// SHA-256 of the DER, hex.
    pub fingerprint: String,
    /// Subject key identifier (hex) of the issuing tenant CA.
    pub issuer_key_id: String,
    pub not_before: DateTime<Utc>,
    pub not_after: DateTime<Utc>,
}

/// A recorded certificate.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct DeviceCertificate {
    pub tenant_id: String,
    pub device_id: String,
    pub serial: String,
    pub fingerprint: String,
    pub issuer_key_id: String,
    pub not_before: DateTime<Utc>,
    pub not_after: DateTime<Utc>,
    pub status: CertificateStatus,
    pub revoked_at: Option<DateTime<Utc>>,
    /// The reason's name as given at revocation (e.g. `key_compromise`).
    pub revocation_reason: Option<String>,
    /// When it was issued: what revocation floors compare against.
    pub created_at: DateTime<Utc>,
}

/// The revocation floors that apply to one device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CertificateFloors {
    /// Set for the whole tenant.
    pub tenant: Option<DateTime<Utc>>,
    /// Set for this device.
    pub device: Option<DateTime<Utc>>,
}

impl CertificateFloors {
    /// The later of the two: a certificate issued (`created_at`) before it
    /// is refused.
    pub fn effective(&self) -> Option<DateTime<Utc>> {
        self.tenant.max(self.device)
    }
}

macro_rules! cert_columns {
    () => {
        "tenant_id, device_id, serial, fingerprint, issuer_key_id, not_before, not_after, \
         status, revoked_at, revocation_reason, created_at"
    };
}

/// Whose revocation floor: a whole tenant's or one device's.
#[derive(Clone, Copy)]
enum FloorOf<'a> {
    Tenant(&'a str),
    Device(&'a str, &'a str),
}

fn cert_not_found(tenant_id: &str, serial: &str) -> Error {
    Error::not_found("certificate", format!("{tenant_id}/{serial}"))
}

impl Store {
    /// Record an issued certificate, with `audit` in the same transaction.
    /// `NotFound` for an unknown device, `AlreadyExists` if the tenant
    /// already has this serial.
    #[tracing::instrument(skip_all, fields(tenant = %new.tenant_id, device = %new.device_id, serial = %new.serial))]
    pub async fn create_device_certificate(
        &self,
        new: &NewDeviceCertificate,
        audit: Option<&NewAuditEntry>,
    ) -> Result<DeviceCertificate, Error> {
        const SQL: &str = concat!(
            "INSERT INTO device_certificates (tenant_id, device_id, serial, fingerprint, ",
            "issuer_key_id, not_before, not_after, created_at) ",
            "VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING ",
            cert_columns!()
        );
        let row = audited_tx!(self, audit, Result::is_ok, tx => sql!(in tx,
            fetch_one as DeviceCertificate => SQL, &new.tenant_id, &new.device_id, &new.serial,
            &new.fingerprint, &new.issuer_key_id, Ts(new.not_before), Ts(new.not_after),
            Ts(now())));
        let unique =
            Error::already_exists("certificate", format!("{}/{}", new.tenant_id, new.serial));
        let missing = device_not_found(&new.tenant_id, &new.device_id);
        row.map_err(|e| on_violation(e, Some(unique), Some(missing)))
    }

    /// One certificate by tenant and serial (what the broker looks up for a
    /// presented chain). `NotFound` if the tenant has no such serial.
    pub async fn get_device_certificate(
        &self,
        tenant_id: &str,
        serial: &str,
    ) -> Result<DeviceCertificate, Error> {
        const SQL: &str = concat!(
            "SELECT ",
            cert_columns!(),
            " FROM device_certificates WHERE tenant_id = $1 AND serial = $2"
        );
        let row = sql!(self, fetch_optional as DeviceCertificate => SQL, tenant_id, serial)?;
        row.ok_or_else(|| cert_not_found(tenant_id, serial))
    }

    /// A device's certificates, oldest first. Unpaged: a device holds a few
    /// (rotation keeps old ones until they expire).
    pub async fn list_device_certificates(
        &self,
        tenant_id: &str,
        device_id: &str,
    ) -> Result<Vec<DeviceCertificate>, Error> {
        const SQL: &str = concat!(
            "SELECT ",
            cert_columns!(),
            " FROM device_certificates WHERE tenant_id = $1 AND device_id = $2 ",
            "ORDER BY created_at, serial"
        );
        Ok(sql!(self, fetch_all as DeviceCertificate => SQL, tenant_id, device_id)?)
    }

    /// Revoke one of a device's certificates at `at` for `reason`, with the
    /// entry `audit` makes of the revoked certificate (and its events) in
    /// the same transaction. Revoking twice keeps the first time and
    /// reason. `NotFound` unless the device has this serial.
    #[tracing::instrument(skip_all, fields(tenant = %tenant_id, device = %device_id, serial = %serial, reason))]
    pub async fn revoke_device_certificate(
        &self,
        tenant_id: &str,
        device_id: &str,
        serial: &str,
        reason: &str,
        at: DateTime<Utc>,
        audit: Option<AuditOf<'_, DeviceCertificate>>,
    ) -> Result<DeviceCertificate, Error> {
        const SQL: &str = concat!(
            "UPDATE device_certificates SET status = 'revoked', ",
            "revoked_at = COALESCE(revoked_at, $4), ",
            "revocation_reason = COALESCE(revocation_reason, $5) ",
            "WHERE tenant_id = $1 AND device_id = $2 AND serial = $3 RETURNING ",
            cert_columns!()
        );
        let revoked = audited_of_tx!(self, audit, Option::as_ref, tx => sql!(in tx,
            fetch_optional as DeviceCertificate => SQL, tenant_id, device_id, serial, Ts(at),
            reason)?);
        revoked.ok_or_else(|| cert_not_found(tenant_id, serial))
    }

    /// The tenant's revoked certificates that have not expired at `at`: what
    /// its CRL lists (an expired certificate is refused anyway).
    pub async fn list_revoked_certificates(
        &self,
        tenant_id: &str,
        at: DateTime<Utc>,
    ) -> Result<Vec<DeviceCertificate>, Error> {
        const SQL: &str = concat!(
            "SELECT ",
            cert_columns!(),
            " FROM device_certificates WHERE tenant_id = $1 AND status = 'revoked' ",
            "AND not_after > $2 ORDER BY revoked_at, serial"
        );
        Ok(sql!(self, fetch_all as DeviceCertificate => SQL, tenant_id, Ts(at))?)
    }

    /// Refuse every certificate of the tenant issued before `not_before`
    /// (replaces an earlier floor), with `audit` in the same transaction.
    /// `NotFound` for an unknown tenant.
    #[tracing::instrument(skip_all, fields(tenant = %tenant_id, %not_before))]
    pub async fn set_tenant_cert_floor(
        &self,
        tenant_id: &str,
        not_before: DateTime<Utc>,
        audit: Option<&NewAuditEntry>,
    ) -> Result<(), Error> {
        self.write_cert_floor(FloorOf::Tenant(tenant_id), not_before, audit)
            .await
    }

    /// Refuse every certificate of the device issued before `not_before`
    /// (replaces an earlier floor), with `audit` in the same transaction.
    /// `NotFound` for an unknown device.
    #[tracing::instrument(skip_all, fields(tenant = %tenant_id, device = %device_id, %not_before))]
    pub async fn set_device_cert_floor(
        &self,
        tenant_id: &str,
        device_id: &str,
        not_before: DateTime<Utc>,
        audit: Option<&NewAuditEntry>,
    ) -> Result<(), Error> {
        self.write_cert_floor(FloorOf::Device(tenant_id, device_id), not_before, audit)
            .await
    }

    /// Upsert `owner`'s floor: a tenant's and a device's differ only in
    /// their table and key.
    async fn write_cert_floor(
        &self,
        owner: FloorOf<'_>,
        not_before: DateTime<Utc>,
        audit: Option<&NewAuditEntry>,
    ) -> Result<(), Error> {
        const TENANT: &str = "INSERT INTO tenant_cert_floors (tenant_id, not_before, updated_at) \
                              VALUES ($1, $2, $3) ON CONFLICT (tenant_id) \
                              DO UPDATE SET not_before = excluded.not_before, updated_at = excluded.updated_at";
        const DEVICE: &str = "INSERT INTO device_cert_floors (tenant_id, device_id, not_before, updated_at) \
                              VALUES ($1, $2, $3, $4) ON CONFLICT (tenant_id, device_id) \
                              DO UPDATE SET not_before = excluded.not_before, updated_at = excluded.updated_at";
        let (not_before, at) = (Ts(not_before), Ts(now()));
        let done = audited_tx!(self, audit, Result::is_ok, tx => match owner {
            FloorOf::Tenant(t) => sql!(in tx, execute => TENANT, t, not_before, at),
            FloorOf::Device(t, d) => sql!(in tx, execute => DEVICE, t, d, not_before, at),
        });
        let missing = match owner {
            FloorOf::Tenant(t) => tenant_not_found(t),
            FloorOf::Device(t, d) => device_not_found(t, d),
        };
        done.map(drop)
            .map_err(|e| on_violation(e, None, Some(missing)))
    }

    /// The floors that apply to a device (both `None` if none is set).
    pub async fn cert_floors(
        &self,
        tenant_id: &str,
        device_id: &str,
    ) -> Result<CertificateFloors, Error> {
        const SQL: &str = "SELECT \
            (SELECT not_before FROM tenant_cert_floors WHERE tenant_id = $1) AS tenant_floor, \
            (SELECT not_before FROM device_cert_floors WHERE tenant_id = $1 AND device_id = $2) AS device_floor";
        let (tenant, device) = sql!(self, fetch_one as (Option<DateTime<Utc>>, Option<DateTime<Utc>>)
            => SQL, tenant_id, device_id)?;
        Ok(CertificateFloors { tenant, device })
    }
}
