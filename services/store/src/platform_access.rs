//! Issue 5's platform-wide access: platform service credentials (MQTT
//! clients of the operator's backends that see every tenant, mounted under
//! the tenant id), every tenant's id (for the broker's platform
//! namespace), and per-tenant topic hygiene rules. Only argon2id PHC
//! strings are stored; hashing and verifying are the caller's.

use std::fmt;

use chrono::{DateTime, Utc};
use sqlx::types::Json;

use crate::audit::{audited_tx, commit_audited};
use crate::codec::{Ts, now};
use crate::pki::{on_violation, tenant_not_found};
use crate::{AuditOf, Error, NewAuditEntry, Store};

/// A platform service credential to store. `Debug` leaves the hash out.
#[derive(Clone, PartialEq, Eq)]
pub struct NewPlatformCredential {
    pub id: String,
    /// Unique on the platform.
    pub name: String,
    /// The MQTT username: `platform:{name}`.
    pub username: String,
    /// argon2id PHC string.
    pub password_hash: String,
    /// Topic filters (mounted topic space) it may publish to; empty: all.
    pub publish: Vec<String>,
    /// Topic filters (mounted topic space) it may subscribe to; empty: all.
    pub subscribe: Vec<String>,
}

/// A stored platform service credential. `Debug` leaves the hash out.
#[derive(Clone, PartialEq, Eq)]
pub struct PlatformCredential {
    pub id: String,
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
                    .field("name", &self.name)
                    .field("username", &self.username)
                    .field("publish", &self.publish)
                    .field("subscribe", &self.subscribe)
                    .finish_non_exhaustive()
            }
        }
    };
}
debug_without_hash!(NewPlatformCredential);
debug_without_hash!(PlatformCredential);

#[derive(sqlx::FromRow)]
struct PlatformCredentialRow {
    id: String,
    name: String,
    username: String,
    password_hash: String,
    publish_filters: Json<Vec<String>>,
    subscribe_filters: Json<Vec<String>>,
    created_at: Ts,
}

impl From<PlatformCredentialRow> for PlatformCredential {
    fn from(r: PlatformCredentialRow) -> Self {
        PlatformCredential {
            id: r.id,
            name: r.name,
            username: r.username,
            password_hash: r.password_hash,
            publish: r.publish_filters.0,
            subscribe: r.subscribe_filters.0,
            created_at: r.created_at.0,
        }
    }
}

macro_rules! platform_credential_columns {
    () => {
        "id, name, username, password_hash, publish_filters, subscribe_filters, created_at"
    };
}

/// A tenant's topic hygiene rules. The default (every field off) is what a
/// tenant without rules has.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TopicRules {
    /// Most levels in a topic name or filter.
    pub max_depth: Option<u16>,
    /// Refuse topics and filters starting with `/`.
    pub forbid_leading_slash: bool,
    /// Refuse topics and filters containing a space.
    pub forbid_spaces: bool,
    /// Most live catch-all subscriptions (`#`, `+/#`, …) in the tenant;
    /// `Some(0)` refuses them.
    pub max_catch_all_subscriptions: Option<u32>,
}

#[derive(sqlx::FromRow)]
struct TopicRulesRow {
    #[sqlx(default)]
    tenant_id: String,
    max_depth: Option<i32>,
    forbid_leading_slash: bool,
    forbid_spaces: bool,
    max_catch_all_subscriptions: Option<i32>,
}

impl TopicRulesRow {
    fn into_rules(self) -> Result<TopicRules, Error> {
        // The columns' CHECKs keep them in range; a row written around
        // them is reported, not truncated.
        let corrupt = |_| Error::InvalidDocument {
            kind: "topic rules",
            reason: "stored value out of range",
        };
        Ok(TopicRules {
            max_depth: self
                .max_depth
                .map(u16::try_from)
                .transpose()
                .map_err(corrupt)?,
            forbid_leading_slash: self.forbid_leading_slash,
            forbid_spaces: self.forbid_spaces,
            max_catch_all_subscriptions: self
                .max_catch_all_subscriptions
                .map(u32::try_from)
                .transpose()
                .map_err(corrupt)?,
        })
    }
}

impl Store {
    /// Store a platform service credential, with `audit` in the same
    /// transaction. `AlreadyExists` if the id, name or username is taken.
    #[tracing::instrument(skip_all, fields(credential = %new.id))]
    pub async fn create_platform_credential(
        &self,
        new: &NewPlatformCredential,
        audit: Option<&NewAuditEntry>,
    ) -> Result<PlatformCredential, Error> {
        const SQL: &str = concat!(
            "INSERT INTO platform_service_credentials (id, name, username, password_hash, ",
            "publish_filters, subscribe_filters, created_at) ",
            "VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING ",
            platform_credential_columns!()
        );
        let row = audited_tx!(self, audit, Result::is_ok, tx => sqlx::query_as::<_, PlatformCredentialRow>(SQL)
            .bind(&new.id)
            .bind(&new.name)
            .bind(&new.username)
            .bind(&new.password_hash)
            .bind(Json(&new.publish))
            .bind(Json(&new.subscribe))
            .bind(Ts(now()))
            .fetch_one(tx)
            .await);
        let unique = Error::AlreadyExists {
            kind: "platform service credential",
            id: new.name.clone(),
        };
        row.map(PlatformCredential::from)
            .map_err(|e| on_violation(e, Some(unique), None))
    }

    /// The platform credential an MQTT client names by username, if any.
    pub async fn platform_credential_by_username(
        &self,
        username: &str,
    ) -> Result<Option<PlatformCredential>, Error> {
        const SQL: &str = concat!(
            "SELECT ",
            platform_credential_columns!(),
            " FROM platform_service_credentials WHERE username = $1"
        );
        let row = on_pool!(self, pool => sqlx::query_as::<_, PlatformCredentialRow>(SQL)
            .bind(username)
            .fetch_optional(pool)
            .await?);
        Ok(row.map(PlatformCredential::from))
    }

    /// Every platform service credential, by name.
    pub async fn list_platform_credentials(&self) -> Result<Vec<PlatformCredential>, Error> {
        const SQL: &str = concat!(
            "SELECT ",
            platform_credential_columns!(),
            " FROM platform_service_credentials ORDER BY name"
        );
        let rows = on_pool!(self, pool => sqlx::query_as::<_, PlatformCredentialRow>(SQL)
            .fetch_all(pool)
            .await?);
        Ok(rows.into_iter().map(PlatformCredential::from).collect())
    }

    /// Delete a platform service credential; returns it. With `audit`,
    /// the entry it makes of the deleted credential (whose name the caller
    /// may not know yet) is written in the same transaction. `NotFound` if
    /// there is none with this id.
    #[tracing::instrument(skip_all, fields(credential = %id))]
    pub async fn delete_platform_credential(
        &self,
        id: &str,
        audit: Option<AuditOf<'_, PlatformCredential>>,
    ) -> Result<PlatformCredential, Error> {
        const SQL: &str = concat!(
            "DELETE FROM platform_service_credentials WHERE id = $1 RETURNING ",
            platform_credential_columns!()
        );
        let deleted = on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let deleted = sqlx::query_as::<_, PlatformCredentialRow>(SQL)
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?
                .map(PlatformCredential::from);
            let entry = deleted.as_ref().zip(audit).map(|(c, audit)| audit(c));
            commit_audited!(self, tx, deleted.is_some(), entry.as_ref());
            deleted
        });
        deleted.ok_or_else(|| Error::NotFound {
            kind: "platform service credential",
            id: id.to_owned(),
        })
    }

    /// Every tenant's id, in id order (the broker's platform namespace
    /// mounts them all).
    pub async fn all_tenant_ids(&self) -> Result<Vec<String>, Error> {
        const SQL: &str = "SELECT id FROM tenants ORDER BY id";
        let ids: Vec<String> = on_pool!(self, pool => sqlx::query_scalar(SQL)
            .fetch_all(pool)
            .await?);
        Ok(ids)
    }

    /// The tenant's topic hygiene rules (all off when none were set).
    /// `NotFound` for an unknown tenant.
    pub async fn topic_rules(&self, tenant_id: &str) -> Result<TopicRules, Error> {
        const SQL: &str = "SELECT max_depth, forbid_leading_slash, forbid_spaces, \
                           max_catch_all_subscriptions FROM tenant_topic_rules WHERE tenant_id = $1";
        let row = on_pool!(self, pool => sqlx::query_as::<_, TopicRulesRow>(SQL)
            .bind(tenant_id)
            .fetch_optional(pool)
            .await?);
        match row {
            Some(r) => r.into_rules(),
            None if self.tenant_exists(tenant_id).await? => Ok(TopicRules::default()),
            None => Err(tenant_not_found(tenant_id)),
        }
    }

    /// Every tenant's rules that were ever set, by tenant id (the broker
    /// loads them at start).
    pub async fn all_topic_rules(&self) -> Result<Vec<(String, TopicRules)>, Error> {
        const SQL: &str = "SELECT tenant_id, max_depth, forbid_leading_slash, forbid_spaces, \
                           max_catch_all_subscriptions FROM tenant_topic_rules ORDER BY tenant_id";
        let rows = on_pool!(self, pool => sqlx::query_as::<_, TopicRulesRow>(SQL)
            .fetch_all(pool)
            .await?);
        rows.into_iter()
            .map(|mut r| Ok((std::mem::take(&mut r.tenant_id), r.into_rules()?)))
            .collect()
    }

    /// Replace the tenant's topic hygiene rules, with `audit` in the same
    /// transaction. `NotFound` for an unknown tenant.
    #[tracing::instrument(skip_all, fields(tenant = %tenant_id))]
    pub async fn set_topic_rules(
        &self,
        tenant_id: &str,
        rules: &TopicRules,
        audit: Option<&NewAuditEntry>,
    ) -> Result<(), Error> {
        const SQL: &str = "INSERT INTO tenant_topic_rules (tenant_id, max_depth, forbid_leading_slash, \
                           forbid_spaces, max_catch_all_subscriptions, updated_at) \
                           VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (tenant_id) DO UPDATE SET \
                           max_depth = excluded.max_depth, \
                           forbid_leading_slash = excluded.forbid_leading_slash, \
                           forbid_spaces = excluded.forbid_spaces, \
                           max_catch_all_subscriptions = excluded.max_catch_all_subscriptions, \
                           updated_at = excluded.updated_at";
        let max_catch_all = rules
            .max_catch_all_subscriptions
            .map(|n| i32::try_from(n).unwrap_or(i32::MAX));
        let done = audited_tx!(self, audit, Result::is_ok, tx => sqlx::query(SQL)
            .bind(tenant_id)
            .bind(rules.max_depth.map(i32::from))
            .bind(rules.forbid_leading_slash)
            .bind(rules.forbid_spaces)
            .bind(max_catch_all)
            .bind(Ts(now()))
            .execute(tx)
            .await
            .map(|_| ()));
        done.map_err(|e| on_violation(e, None, Some(tenant_not_found(tenant_id))))
    }
}
