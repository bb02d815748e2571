//! Tenants: the unit of isolation. Deleting one deletes its devices.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::audit::audited_tx;
use crate::codec::{Ts, now};
use crate::page::{CursorKind, Page, Paged};
use crate::pki::on_violation;
use crate::{Error, NewAuditEntry, Store, TenantId};

const KIND: &str = "tenant";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, sqlx::FromRow)]
pub struct Tenant {
    pub id: String,
    pub name: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewTenant {
    /// `[a-z0-9-]{3,63}`, checked on create.
    pub id: String,
    pub name: String,
}

/// Fields to change; `None` leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantPatch {
    pub name: Option<String>,
}

/// The columns of [`Tenant`], as a macro so that `concat!` can build
/// `&'static str` queries from it.
macro_rules! columns {
    () => {
        "id, name, created_at, updated_at"
    };
}

impl Store {
    /// Create a tenant. `AlreadyExists` if the id is taken, `InvalidId` if it
    /// does not match the tenant id pattern.
    pub async fn create_tenant(&self, new: &NewTenant) -> Result<Tenant, Error> {
        self.write_new_tenant(new, None).await
    }

    /// [`Store::create_tenant`] and `audit` in one transaction.
    pub async fn create_tenant_audited(
        &self,
        new: &NewTenant,
        audit: &NewAuditEntry,
    ) -> Result<Tenant, Error> {
        self.write_new_tenant(new, Some(audit)).await
    }

    #[tracing::instrument(skip_all, fields(tenant = %new.id))]
    async fn write_new_tenant(
        &self,
        new: &NewTenant,
        audit: Option<&NewAuditEntry>,
    ) -> Result<Tenant, Error> {
        TenantId::parse(&new.id)?;
        const SQL: &str = concat!(
            "INSERT INTO tenants (id, name, created_at, updated_at) VALUES ($1, $2, $3, $3) ",
            "RETURNING ",
            columns!()
        );
        let row = audited_tx!(self, audit, Result::is_ok, tx => sql!(in tx,
            fetch_one as Tenant => SQL, &new.id, &new.name, Ts(now())));
        row.map_err(|e| on_violation(e, Some(Error::already_exists(KIND, new.id.clone())), None))
    }

    /// The tenant `id`, or `NotFound`.
    pub async fn get_tenant(&self, id: &str) -> Result<Tenant, Error> {
        const SQL: &str = concat!("SELECT ", columns!(), " FROM tenants WHERE id = $1");
        let row = sql!(self, fetch_optional as Tenant => SQL, id)?;
        row.ok_or_else(|| not_found(id))
    }

    /// Whether the tenant `id` exists (cheaper than `get_tenant`).
    pub async fn tenant_exists(&self, id: &str) -> Result<bool, Error> {
        const SQL: &str = "SELECT COUNT(*) FROM tenants WHERE id = $1";
        let n: i64 = sql!(self, fetch_one scalar => SQL, id)?;
        Ok(n > 0)
    }

    /// Tenants in id order.
    pub async fn list_tenants(&self, page: &Page) -> Result<Paged<Tenant>, Error> {
        let limit = page.fetch_limit();
        let tenants = match page.after_key(CursorKind::Tenants)? {
            None => {
                const SQL: &str =
                    concat!("SELECT ", columns!(), " FROM tenants ORDER BY id LIMIT $1");
                sql!(self, fetch_all as Tenant => SQL, limit)?
            }
            Some(after) => {
                const SQL: &str = concat!(
                    "SELECT ",
                    columns!(),
                    " FROM tenants WHERE id > $1 ORDER BY id LIMIT $2"
                );
                sql!(self, fetch_all as Tenant => SQL, &after, limit)?
            }
        };
        Ok(Paged::from_rows(tenants, page, CursorKind::Tenants, |t| {
            t.id.clone()
        }))
    }

    /// Apply `patch` to the tenant `id` and return it, or `NotFound`.
    pub async fn update_tenant(&self, id: &str, patch: &TenantPatch) -> Result<Tenant, Error> {
        self.write_tenant_patch(id, patch, None, None).await
    }

    /// [`Store::update_tenant`] and `audit` in one transaction. With
    /// `unchanged_since`, only if the tenant's `updated_at` is still that
    /// (else `Modified`).
    pub async fn update_tenant_audited(
        &self,
        id: &str,
        patch: &TenantPatch,
        unchanged_since: Option<DateTime<Utc>>,
        audit: &NewAuditEntry,
    ) -> Result<Tenant, Error> {
        self.write_tenant_patch(id, patch, unchanged_since, Some(audit))
            .await
    }

    #[tracing::instrument(skip_all, fields(tenant = %id))]
    async fn write_tenant_patch(
        &self,
        id: &str,
        patch: &TenantPatch,
        unchanged_since: Option<DateTime<Utc>>,
        audit: Option<&NewAuditEntry>,
    ) -> Result<Tenant, Error> {
        const SQL: &str = concat!(
            "UPDATE tenants SET name = COALESCE($2, name), updated_at = $3 WHERE id = $1 ",
            "AND ($4 IS NULL OR updated_at = $4) RETURNING ",
            columns!()
        );
        let row = audited_tx!(self, audit, Option::is_some, tx => sql!(in tx,
            fetch_optional as Tenant => SQL, id, patch.name.as_deref(), Ts(now()),
            unchanged_since.map(Ts))?);
        match row {
            Some(tenant) => Ok(tenant),
            None if unchanged_since.is_some() && self.tenant_exists(id).await? => {
                Err(Error::modified(KIND, id.to_owned()))
            }
            None => Err(not_found(id)),
        }
    }

    /// Delete the tenant `id` and, by cascade, its devices. `NotFound` if
    /// there is no such tenant. Audit entries about it stay.
    pub async fn delete_tenant(&self, id: &str) -> Result<(), Error> {
        self.remove_tenant(id, None).await
    }

    /// [`Store::delete_tenant`] and `audit` in one transaction.
    pub async fn delete_tenant_audited(
        &self,
        id: &str,
        audit: &NewAuditEntry,
    ) -> Result<(), Error> {
        self.remove_tenant(id, Some(audit)).await
    }

    #[tracing::instrument(skip_all, fields(tenant = %id))]
    async fn remove_tenant(&self, id: &str, audit: Option<&NewAuditEntry>) -> Result<(), Error> {
        const SQL: &str = "DELETE FROM tenants WHERE id = $1";
        let deleted = audited_tx!(self, audit, |n: &u64| *n > 0, tx => sql!(in tx,
            execute => SQL, id)?);
        if deleted == 0 {
            return Err(not_found(id));
        }
        tracing::info!("tenant deleted");
        Ok(())
    }
}

fn not_found(id: &str) -> Error {
    Error::not_found(KIND, id.to_owned())
}
