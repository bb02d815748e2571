//! ACL policy templates per tenant: a name and a JSON object document whose
//! meaning (rules, `${device}` variables) belongs to the caller.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use sqlx::types::Json;

use crate::audit::audited_tx;
use crate::codec::{Ts, now};
use crate::pki::{on_violation, tenant_not_found};
use crate::{Error, NewAuditEntry, Store};

/// A policy document: always a JSON object.
pub type PolicyDocument = Map<String, Value>;

/// A stored policy.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct AclPolicy {
    pub tenant_id: String,
    pub name: String,
    #[sqlx(json)]
    pub document: PolicyDocument,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

const COLUMNS: &str = "tenant_id, name, document, created_at, updated_at";

fn policy_not_found(tenant_id: &str, name: &str) -> Error {
    Error::not_found("ACL policy", format!("{tenant_id}/{name}"))
}

impl Store {
    /// Create or replace the tenant's policy `name` (created_at is kept on
    /// replace), with `audit` in the same transaction. `NotFound` for an
    /// unknown tenant.
    #[tracing::instrument(skip_all, fields(tenant = %tenant_id, policy = %name))]
    pub async fn put_acl_policy(
        &self,
        tenant_id: &str,
        name: &str,
        document: &PolicyDocument,
        audit: Option<&NewAuditEntry>,
    ) -> Result<AclPolicy, Error> {
        let sql = format!(
            "INSERT INTO acl_policies (tenant_id, name, document, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $4) ON CONFLICT (tenant_id, name) \
             DO UPDATE SET document = excluded.document, updated_at = excluded.updated_at \
             RETURNING {COLUMNS}"
        );
        let row = audited_tx!(self, audit, Result::is_ok, tx => sql!(in tx,
            fetch_one as AclPolicy => sqlx::AssertSqlSafe(sql.as_str()), tenant_id, name,
            Json(document), Ts(now())));
        row.map_err(|e| on_violation(e, None, Some(tenant_not_found(tenant_id))))
    }

    /// The tenant's policy `name`. `NotFound` if it has none by that name.
    pub async fn get_acl_policy(&self, tenant_id: &str, name: &str) -> Result<AclPolicy, Error> {
        let sql = format!("SELECT {COLUMNS} FROM acl_policies WHERE tenant_id = $1 AND name = $2");
        let row = sql!(self, fetch_optional as AclPolicy => sqlx::AssertSqlSafe(sql.as_str()),
            tenant_id, name)?;
        row.ok_or_else(|| policy_not_found(tenant_id, name))
    }

    /// The tenant's policies by name.
    pub async fn list_acl_policies(&self, tenant_id: &str) -> Result<Vec<AclPolicy>, Error> {
        let sql = format!("SELECT {COLUMNS} FROM acl_policies WHERE tenant_id = $1 ORDER BY name");
        Ok(sql!(self, fetch_all as AclPolicy => sqlx::AssertSqlSafe(sql.as_str()), tenant_id)?)
    }

    /// Delete the tenant's policy `name`, with `audit` in the same
    /// transaction. `NotFound` if it has none.
    #[tracing::instrument(skip_all, fields(tenant = %tenant_id, policy = %name))]
    pub async fn delete_acl_policy(
        &self,
        tenant_id: &str,
        name: &str,
        audit: Option<&NewAuditEntry>,
    ) -> Result<(), Error> {
        const SQL: &str = "DELETE FROM acl_policies WHERE tenant_id = $1 AND name = $2";
        let n = audited_tx!(self, audit, |n: &u64| *n > 0, tx => sql!(in tx, execute => SQL,
            tenant_id, name)?);
        if n == 0 {
            return Err(policy_not_found(tenant_id, name));
        }
        Ok(())
    }
}
