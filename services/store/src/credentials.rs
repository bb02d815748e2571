//! MQTT passwords: one per device, and tenants' service credentials for
//! their backends. Only argon2id PHC strings are stored; hashing and
//! verifying are the caller's.

use std::fmt;

use chrono::{DateTime, Utc};
use sqlx::types::Json;

use crate::audit::audited_tx;
use crate::codec::{Ts, now};
use crate::pki::{device_not_found, on_violation, tenant_not_found};
use crate::{Error, NewAuditEntry, Store};

/// A service credential to store. `Debug` leaves the hash out.
#[derive(Clone, PartialEq, Eq)]
pub struct NewServiceCredential {
    pub id: String,
    pub tenant_id: String,
    /// Unique per tenant.
    pub name: String,
    /// The MQTT username; unique across the platform.
    pub username: String,
    /// argon2id PHC string.
    pub password_hash: String,
    /// Topic filters it may publish to.
    pub publish: Vec<String>,
    /// Topic filters it may subscribe to.
    pub subscribe: Vec<String>,
}

/// A stored service credential. `Debug` leaves the hash out.
#[derive(Clone, PartialEq, Eq)]
pub struct ServiceCredential {
    pub id: String,
    pub tenant_id: String,
    pub name: String,
    pub username: String,
    pub password_hash: String,
    pub publish: Vec<String>,
    pub subscribe: Vec<String>,
    pub created_at: DateTime<Utc>,
}

macro_rules! debug_without_hash {
    ($ty:ident) => {
        impl fmt::Debug for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct(stringify!($ty))
                    .field("id", &self.id)
                    .field("tenant_id", &self.tenant_id)
                    .field("name", &self.name)
                    .field("username", &self.username)
                    .field("publish", &self.publish)
                    .field("subscribe", &self.subscribe)
                    .finish_non_exhaustive()
            }
        }
    };
}
debug_without_hash!(NewServiceCredential);
debug_without_hash!(ServiceCredential);

#[derive(sqlx::FromRow)]
struct ServiceCredentialRow {
    id: String,
    tenant_id: String,
    name: String,
    username: String,
    password_hash: String,
    publish_filters: Json<Vec<String>>,
    subscribe_filters: Json<Vec<String>>,
    created_at: Ts,
}

impl From<ServiceCredentialRow> for ServiceCredential {
    fn from(r: ServiceCredentialRow) -> Self {
        ServiceCredential {
            id: r.id,
            tenant_id: r.tenant_id,
            name: r.name,
            username: r.username,
            password_hash: r.password_hash,
            publish: r.publish_filters.0,
            subscribe: r.subscribe_filters.0,
            created_at: r.created_at.0,
        }
    }
}

macro_rules! credential_columns {
    () => {
        "id, tenant_id, name, username, password_hash, publish_filters, subscribe_filters, \
         created_at"
    };
}

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
        let done = audited_tx!(self, audit, Result::is_ok, tx => sqlx::query(SQL)
            .bind(tenant_id)
            .bind(device_id)
            .bind(password_hash)
            .bind(Ts(now()))
            .execute(tx)
            .await
            .map(|_| ()));
        done.map_err(|e| on_violation(e, None, Some(device_not_found(tenant_id, device_id))))
    }

    /// The device's password hash, if it has a password.
    pub async fn device_password_hash(
        &self,
        tenant_id: &str,
        device_id: &str,
    ) -> Result<Option<String>, Error> {
        const SQL: &str =
            "SELECT password_hash FROM device_passwords WHERE tenant_id = $1 AND device_id = $2";
        let row: Option<(String,)> = on_pool!(self, pool => sqlx::query_as(SQL)
            .bind(tenant_id)
            .bind(device_id)
            .fetch_optional(pool)
            .await?);
        Ok(row.map(|(hash,)| hash))
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
        let n = audited_tx!(self, audit, |n: &u64| *n > 0, tx => sqlx::query(SQL)
            .bind(tenant_id)
            .bind(device_id)
            .execute(tx)
            .await?
            .rows_affected());
        Ok(n > 0)
    }

    /// Store a service credential, with `audit` in the same transaction.
    /// `NotFound` for an unknown tenant, `AlreadyExists` if the id, the
    /// tenant's name or the username is taken.
    #[tracing::instrument(skip_all, fields(tenant = %new.tenant_id, credential = %new.id))]
    pub async fn create_service_credential(
        &self,
        new: &NewServiceCredential,
        audit: Option<&NewAuditEntry>,
    ) -> Result<ServiceCredential, Error> {
        const SQL: &str = concat!(
            "INSERT INTO service_credentials (id, tenant_id, name, username, password_hash, ",
            "publish_filters, subscribe_filters, created_at) ",
            "VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING ",
            credential_columns!()
        );
        let row = audited_tx!(self, audit, Result::is_ok, tx => sqlx::query_as::<_, ServiceCredentialRow>(SQL)
            .bind(&new.id)
            .bind(&new.tenant_id)
            .bind(&new.name)
            .bind(&new.username)
            .bind(&new.password_hash)
            .bind(Json(&new.publish))
            .bind(Json(&new.subscribe))
            .bind(Ts(now()))
            .fetch_one(tx)
            .await);
        let unique = Error::AlreadyExists {
            kind: "service credential",
            id: format!("{}/{}", new.tenant_id, new.name),
        };
        let missing = tenant_not_found(&new.tenant_id);
        row.map(ServiceCredential::from)
            .map_err(|e| on_violation(e, Some(unique), Some(missing)))
    }

    /// The credential an MQTT client names by username, if any.
    pub async fn service_credential_by_username(
        &self,
        username: &str,
    ) -> Result<Option<ServiceCredential>, Error> {
        const SQL: &str = concat!(
            "SELECT ",
            credential_columns!(),
            " FROM service_credentials WHERE username = $1"
        );
        let row = on_pool!(self, pool => sqlx::query_as::<_, ServiceCredentialRow>(SQL)
            .bind(username)
            .fetch_optional(pool)
            .await?);
        Ok(row.map(ServiceCredential::from))
    }

    /// A tenant's service credentials by name.
    pub async fn list_service_credentials(
        &self,
        tenant_id: &str,
    ) -> Result<Vec<ServiceCredential>, Error> {
        const SQL: &str = concat!(
            "SELECT ",
            credential_columns!(),
            " FROM service_credentials WHERE tenant_id = $1 ORDER BY name"
        );
        let rows = on_pool!(self, pool => sqlx::query_as::<_, ServiceCredentialRow>(SQL)
            .bind(tenant_id)
            .fetch_all(pool)
            .await?);
        Ok(rows.into_iter().map(ServiceCredential::from).collect())
    }

    /// Delete a service credential, with `audit` in the same transaction;
    /// returns its name (whose sessions must end). `NotFound` unless the
    /// tenant has it.
    #[tracing::instrument(skip_all, fields(tenant = %tenant_id, credential = %id))]
    pub async fn delete_service_credential(
        &self,
        tenant_id: &str,
        id: &str,
        audit: Option<&NewAuditEntry>,
    ) -> Result<String, Error> {
        const SQL: &str =
            "DELETE FROM service_credentials WHERE tenant_id = $1 AND id = $2 RETURNING name";
        let name: Option<String> = audited_tx!(self, audit, Option::is_some, tx => sqlx::query_scalar(SQL)
            .bind(tenant_id)
            .bind(id)
            .fetch_optional(tx)
            .await?);
        name.ok_or_else(|| Error::NotFound {
            kind: "service credential",
            id: format!("{tenant_id}/{id}"),
        })
    }
}
