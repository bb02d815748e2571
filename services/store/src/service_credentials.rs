//! Service credentials: MQTT access for backends, either one tenant's (its
//! own topics, user name `service:{tenant}:{name}`) or the platform's
//! (every tenant mounted under its id, `platform:{name}`). One type for
//! both, [`ServiceCredential`], whose [`CredentialScope`] says whose it is;
//! each scope keeps its own table (a platform credential has no tenant, and
//! its name is unique platform-wide), and one set of queries serves both.
//! Only argon2id PHC strings are stored; hashing and verifying are the
//! caller's.

use chrono::{DateTime, Utc};
use sqlx::query::QueryAs;
use sqlx::types::Json;

use crate::audit::{audited_of_tx, audited_tx};
use crate::codec::{Ts, now};
use crate::pki::{on_violation, tenant_not_found};
use crate::{AuditOf, Error, NewAuditEntry, Store};

/// Whose a service credential is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CredentialScope {
    /// A tenant's backend: the tenant's topics; names unique per tenant.
    Tenant(String),
    /// The operator's backend: every tenant's topics, mounted under the
    /// tenant id (`{tenant}/…`); names unique on the platform.
    Platform,
}

impl CredentialScope {
    /// The tenant, for a tenant's credential.
    pub fn tenant_id(&self) -> Option<&str> {
        match self {
            CredentialScope::Tenant(t) => Some(t),
            CredentialScope::Platform => None,
        }
    }

    fn table(&self) -> &'static Table {
        match self {
            CredentialScope::Tenant(_) => &TENANT,
            CredentialScope::Platform => &PLATFORM,
        }
    }

    /// A credential's id as errors name it: `{tenant}/{id}` in a tenant.
    fn qualified(&self, id: &str) -> String {
        match self {
            CredentialScope::Tenant(t) => format!("{t}/{id}"),
            CredentialScope::Platform => id.to_owned(),
        }
    }
}

/// A service credential to store. `Debug` leaves the hash out.
#[derive(Clone, PartialEq, Eq)]
pub struct NewServiceCredential {
    pub id: String,
    pub scope: CredentialScope,
    /// Unique in its scope.
    pub name: String,
    /// The MQTT username; unique across the platform.
    pub username: String,
    /// argon2id PHC string.
    pub password_hash: String,
    /// Topic filters it may publish to; empty: its whole topic space.
    pub publish: Vec<String>,
    /// Topic filters it may subscribe to; empty: its whole topic space.
    pub subscribe: Vec<String>,
}

/// A stored service credential. `Debug` leaves the hash out.
#[derive(Clone, PartialEq, Eq)]
pub struct ServiceCredential {
    pub id: String,
    pub scope: CredentialScope,
    pub name: String,
    pub username: String,
    pub password_hash: String,
    pub publish: Vec<String>,
    pub subscribe: Vec<String>,
    pub created_at: DateTime<Utc>,
}

debug_fields!(
    NewServiceCredential,
    ServiceCredential {
        id,
        scope,
        name,
        username,
        publish,
        subscribe
    }
);

/// Both tables' rows; the platform's has no `tenant_id` column.
#[derive(sqlx::FromRow)]
struct CredentialRow {
    id: String,
    #[sqlx(default)]
    tenant_id: Option<String>,
    name: String,
    username: String,
    password_hash: String,
    publish_filters: Json<Vec<String>>,
    subscribe_filters: Json<Vec<String>>,
    created_at: Ts,
}

impl From<CredentialRow> for ServiceCredential {
    fn from(r: CredentialRow) -> Self {
        ServiceCredential {
            id: r.id,
            scope: r
                .tenant_id
                .map_or(CredentialScope::Platform, CredentialScope::Tenant),
            name: r.name,
            username: r.username,
            password_hash: r.password_hash,
            publish: r.publish_filters.0,
            subscribe: r.subscribe_filters.0,
            created_at: r.created_at.0,
        }
    }
}

/// One scope's table and its statements. In both, `$1` is the id and a
/// tenant's statements take the tenant id as `$2`; the rest follow.
struct Table {
    /// What errors call a credential of this scope.
    kind: &'static str,
    insert: &'static str,
    by_username: &'static str,
    list: &'static str,
    delete: &'static str,
}

macro_rules! tenant_columns {
    () => {
        "id, tenant_id, name, username, password_hash, publish_filters, subscribe_filters, \
         created_at"
    };
}

macro_rules! platform_columns {
    () => {
        "id, name, username, password_hash, publish_filters, subscribe_filters, created_at"
    };
}

const TENANT: Table = Table {
    kind: "service credential",
    insert: concat!(
        "INSERT INTO service_credentials (",
        tenant_columns!(),
        ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING ",
        tenant_columns!()
    ),
    by_username: concat!(
        "SELECT ",
        tenant_columns!(),
        " FROM service_credentials WHERE username = $1"
    ),
    list: concat!(
        "SELECT ",
        tenant_columns!(),
        " FROM service_credentials WHERE tenant_id = $1 ORDER BY name"
    ),
    delete: concat!(
        "DELETE FROM service_credentials WHERE id = $1 AND tenant_id = $2 RETURNING ",
        tenant_columns!()
    ),
};

const PLATFORM: Table = Table {
    kind: "platform service credential",
    insert: concat!(
        "INSERT INTO platform_service_credentials (",
        platform_columns!(),
        ") VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING ",
        platform_columns!()
    ),
    by_username: concat!(
        "SELECT ",
        platform_columns!(),
        " FROM platform_service_credentials WHERE username = $1"
    ),
    list: concat!(
        "SELECT ",
        platform_columns!(),
        " FROM platform_service_credentials ORDER BY name"
    ),
    delete: concat!(
        "DELETE FROM platform_service_credentials WHERE id = $1 RETURNING ",
        platform_columns!()
    ),
};

/// `query` with the scope's tenant id bound next, when it has one (a
/// tenant's statements take it after the credential id).
fn bind_tenant<'q, DB: sqlx::Database, O>(
    query: QueryAs<'q, DB, O, DB::Arguments>,
    scope: &'q CredentialScope,
) -> QueryAs<'q, DB, O, DB::Arguments>
where
    &'q str: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
{
    match scope.tenant_id() {
        Some(t) => query.bind(t),
        None => query,
    }
}

impl Store {
    /// Store a service credential, with `audit` in the same transaction.
    /// `NotFound` for an unknown tenant, `AlreadyExists` if the id, the
    /// name in its scope or the username is taken.
    #[tracing::instrument(skip_all, fields(tenant = ?new.scope.tenant_id(), credential = %new.id))]
    pub async fn create_service_credential(
        &self,
        new: &NewServiceCredential,
        audit: Option<&NewAuditEntry>,
    ) -> Result<ServiceCredential, Error> {
        let table = new.scope.table();
        let row = audited_tx!(self, audit, Result::is_ok, tx => {
            bind_tenant(sqlx::query_as::<_, CredentialRow>(table.insert).bind(&new.id), &new.scope)
                .bind(&new.name)
                .bind(&new.username)
                .bind(&new.password_hash)
                .bind(Json(&new.publish))
                .bind(Json(&new.subscribe))
                .bind(Ts(now()))
                .fetch_one(tx)
                .await
        });
        let unique = Error::AlreadyExists {
            kind: table.kind,
            id: new.scope.qualified(&new.name),
        };
        let missing = new.scope.tenant_id().map(tenant_not_found);
        row.map(ServiceCredential::from)
            .map_err(|e| on_violation(e, Some(unique), missing))
    }

    /// The tenant credential an MQTT client names by username, if any.
    pub async fn service_credential_by_username(
        &self,
        username: &str,
    ) -> Result<Option<ServiceCredential>, Error> {
        self.credential_by_username(&TENANT, username).await
    }

    /// The platform credential an MQTT client names by username, if any.
    pub async fn platform_credential_by_username(
        &self,
        username: &str,
    ) -> Result<Option<ServiceCredential>, Error> {
        self.credential_by_username(&PLATFORM, username).await
    }

    async fn credential_by_username(
        &self,
        table: &Table,
        username: &str,
    ) -> Result<Option<ServiceCredential>, Error> {
        let row = sql!(self, fetch_optional as CredentialRow => table.by_username, username)?;
        Ok(row.map(ServiceCredential::from))
    }

    /// The scope's service credentials, by name.
    pub async fn list_service_credentials(
        &self,
        scope: &CredentialScope,
    ) -> Result<Vec<ServiceCredential>, Error> {
        let rows: Vec<CredentialRow> = on_pool!(self, pool => {
            bind_tenant(sqlx::query_as(scope.table().list), scope)
                .fetch_all(pool)
                .await?
        });
        Ok(rows.into_iter().map(ServiceCredential::from).collect())
    }

    /// Delete a service credential; returns it (its sessions must end).
    /// With `audit`, the entry it makes of the deleted credential (whose
    /// name the caller may not know yet) is written in the same
    /// transaction. `NotFound` unless the scope has it.
    #[tracing::instrument(skip_all, fields(tenant = ?scope.tenant_id(), credential = %id))]
    pub async fn delete_service_credential(
        &self,
        scope: &CredentialScope,
        id: &str,
        audit: Option<AuditOf<'_, ServiceCredential>>,
    ) -> Result<ServiceCredential, Error> {
        let table = scope.table();
        let deleted = audited_of_tx!(self, audit, Option::as_ref, tx => {
            bind_tenant(sqlx::query_as::<_, CredentialRow>(table.delete).bind(id), scope)
                .fetch_optional(tx)
                .await?
                .map(ServiceCredential::from)
        });
        deleted.ok_or_else(|| Error::NotFound {
            kind: table.kind,
            id: scope.qualified(id),
        })
    }
}
