//! Issue 5's platform-wide access: every tenant's id (for the broker's
//! platform namespace) and per-tenant topic hygiene rules. Platform service
//! credentials are service credentials of the platform scope
//! (`service_credentials.rs`).

use crate::audit::audited_tx;
use crate::codec::{Ts, now};
use crate::pki::{on_violation, tenant_not_found};
use crate::{Error, NewAuditEntry, Store};

/// A tenant's topic hygiene rules: the broker's own type, stored as it is
/// applied. The default (every rule off) is what a tenant without rules has.
pub use mqtt::TopicRules;

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
    /// Every tenant's id, in id order (the broker's platform namespace
    /// mounts them all).
    pub async fn all_tenant_ids(&self) -> Result<Vec<String>, Error> {
        const SQL: &str = "SELECT id FROM tenants ORDER BY id";
        Ok(sql!(self, fetch_all scalar => SQL)?)
    }

    /// The tenant's topic hygiene rules (all off when none were set).
    /// `NotFound` for an unknown tenant.
    pub async fn topic_rules(&self, tenant_id: &str) -> Result<TopicRules, Error> {
        const SQL: &str = "SELECT max_depth, forbid_leading_slash, forbid_spaces, \
                           max_catch_all_subscriptions FROM tenant_topic_rules WHERE tenant_id = $1";
        let row = sql!(self, fetch_optional as TopicRulesRow => SQL, tenant_id)?;
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
        let rows = sql!(self, fetch_all as TopicRulesRow => SQL)?;
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
        let done = audited_tx!(self, audit, Result::is_ok, tx => sql!(in tx, execute => SQL,
            tenant_id, rules.max_depth.map(i32::from), rules.forbid_leading_slash,
            rules.forbid_spaces, max_catch_all, Ts(now())));
        done.map(drop)
            .map_err(|e| on_violation(e, None, Some(tenant_not_found(tenant_id))))
    }
}
