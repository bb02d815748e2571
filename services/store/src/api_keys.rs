//! API keys: a tenant's long-lived credentials for its backends, exchanged
//! by the API for short-lived tokens. Only a hash of each secret is kept.

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::audit::audited_tx;
use crate::codec::{Ts, now};
use crate::page::{CursorKind, Page, Paged};
use crate::pki::{on_violation, tenant_not_found};
use crate::{Error, NewAuditEntry, Store};

const KIND: &str = "api key";

/// An API key, without its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct ApiKey {
    pub id: String,
    pub tenant_id: String,
    pub name: String,
    /// `tenant-admin`, `operator` or `viewer`.
    pub role: String,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// A key to store. `Debug` leaves the hash out.
#[derive(Clone, PartialEq, Eq)]
pub struct NewApiKey {
    pub id: String,
    pub tenant_id: String,
    pub name: String,
    pub role: String,
    /// SHA-256 of the secret.
    pub secret_hash: Vec<u8>,
}

debug_fields!(NewApiKey {
    id,
    tenant_id,
    role
});

/// A key as [`Store::api_key_with_hash`] reads it.
#[derive(sqlx::FromRow)]
struct ApiKeyWithHash {
    #[sqlx(flatten)]
    key: ApiKey,
    secret_hash: Vec<u8>,
}

macro_rules! columns {
    () => {
        "id, tenant_id, name, role, created_at, revoked_at"
    };
}

impl Store {
    /// Store a new key. `NotFound` (tenant) if the tenant does not exist.
    pub async fn create_api_key(&self, new: &NewApiKey) -> Result<ApiKey, Error> {
        self.write_new_api_key(new, None).await
    }

    /// [`Store::create_api_key`] and `audit` in one transaction.
    pub async fn create_api_key_audited(
        &self,
        new: &NewApiKey,
        audit: &NewAuditEntry,
    ) -> Result<ApiKey, Error> {
        self.write_new_api_key(new, Some(audit)).await
    }

    #[tracing::instrument(skip_all, fields(tenant = %new.tenant_id, api_key = %new.id))]
    async fn write_new_api_key(
        &self,
        new: &NewApiKey,
        audit: Option<&NewAuditEntry>,
    ) -> Result<ApiKey, Error> {
        const SQL: &str = concat!(
            "INSERT INTO api_keys (id, tenant_id, name, role, secret_hash, created_at) ",
            "VALUES ($1, $2, $3, $4, $5, $6) RETURNING ",
            columns!()
        );
        let row = audited_tx!(self, audit, Result::is_ok, tx => sql!(in tx,
            fetch_one as ApiKey => SQL, &new.id, &new.tenant_id, &new.name, &new.role,
            &new.secret_hash, Ts(now())));
        row.map_err(|e| {
            on_violation(
                e,
                Some(Error::already_exists(KIND, new.id.clone())),
                Some(tenant_not_found(&new.tenant_id)),
            )
        })
    }

    /// The key `id` and its secret hash, revoked or not, or `NotFound`.
    pub async fn api_key_with_hash(&self, id: &str) -> Result<(ApiKey, Vec<u8>), Error> {
        const SQL: &str = concat!(
            "SELECT ",
            columns!(),
            ", secret_hash FROM api_keys WHERE id = $1"
        );
        let row = sql!(self, fetch_optional as ApiKeyWithHash => SQL, id)?;
        row.map(|r| (r.key, r.secret_hash))
            .ok_or_else(|| Error::not_found(KIND, id))
    }

    /// A tenant's keys (revoked ones included) in id order.
    pub async fn list_api_keys(
        &self,
        tenant_id: &str,
        page: &Page,
    ) -> Result<Paged<ApiKey>, Error> {
        let after = page.after_key(CursorKind::ApiKeys)?.unwrap_or_default();
        const SQL: &str = concat!(
            "SELECT ",
            columns!(),
            " FROM api_keys WHERE tenant_id = $1 AND id > $2 ORDER BY id LIMIT $3"
        );
        let keys = sql!(self, fetch_all as ApiKey => SQL, tenant_id, &after, page.fetch_limit())?;
        Ok(Paged::from_rows(keys, page, CursorKind::ApiKeys, |k| {
            k.id.clone()
        }))
    }

    /// Revoke the key (it stops being exchangeable for tokens). `NotFound`
    /// unless the tenant has it; revoking twice keeps the first time.
    pub async fn revoke_api_key(&self, tenant_id: &str, id: &str) -> Result<ApiKey, Error> {
        self.write_revocation(tenant_id, id, None).await
    }

    /// [`Store::revoke_api_key`] and `audit` in one transaction.
    pub async fn revoke_api_key_audited(
        &self,
        tenant_id: &str,
        id: &str,
        audit: &NewAuditEntry,
    ) -> Result<ApiKey, Error> {
        self.write_revocation(tenant_id, id, Some(audit)).await
    }

    #[tracing::instrument(skip_all, fields(tenant = %tenant_id, api_key = %id))]
    async fn write_revocation(
        &self,
        tenant_id: &str,
        id: &str,
        audit: Option<&NewAuditEntry>,
    ) -> Result<ApiKey, Error> {
        const SQL: &str = concat!(
            "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, $3) ",
            "WHERE tenant_id = $1 AND id = $2 RETURNING ",
            columns!()
        );
        let row = audited_tx!(self, audit, Option::is_some, tx => sql!(in tx,
            fetch_optional as ApiKey => SQL, tenant_id, id, Ts(now()))?);
        row.ok_or_else(|| Error::not_found(KIND, id))
    }
}
