//! Webhook endpoints: where a tenant wants its events POSTed, which events,
//! and the secrets the requests are signed with.
//!
//! Secrets are stored as-is, not hashed: the sender must sign every request
//! with them, so they have to be recoverable. Whoever can read this table can
//! forge webhooks to the tenant's receivers; guard it like `signing_keys`.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::types::Json;

use crate::audit::{audited_of_tx, audited_tx, made_ok};
use crate::codec::{Ts, now};
use crate::pki::{on_violation, tenant_not_found};
use crate::{AuditOf, Error, NewAuditEntry, Store};

const KIND: &str = "webhook";

/// A tenant's webhook endpoint. `Debug` leaves the secrets out.
#[derive(Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct WebhookEndpoint {
    /// `wh_` + a UUIDv7 (hex).
    pub id: String,
    pub tenant_id: String,
    pub url: String,
    /// Event type names; `"*"` matches every type.
    #[sqlx(json)]
    pub event_types: Vec<String>,
    /// MQTT topic filter that message events must match; `None`: any topic.
    pub topic_filter: Option<String>,
    pub enabled: bool,
    /// `whsec_` + base64. Secret.
    #[serde(skip)]
    pub secret: String,
    /// The secret before the last rotation, still signing until it expires.
    #[serde(skip)]
    pub previous_secret: Option<String>,
    pub previous_secret_expires_at: Option<DateTime<Utc>>,
    /// Deliveries failed for good (retries exhausted) since the last
    /// success; attempts still to be retried do not count.
    pub consecutive_failures: i32,
    /// Why the endpoint was disabled, if the platform did it.
    pub disabled_reason: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl WebhookEndpoint {
    /// The secrets to sign with at `at`: the current one, then the previous
    /// one while its overlap lasts.
    pub fn signing_secrets(&self, at: DateTime<Utc>) -> Vec<&str> {
        let mut secrets = vec![self.secret.as_str()];
        if let (Some(previous), Some(until)) =
            (&self.previous_secret, self.previous_secret_expires_at)
            && at < until
        {
            secrets.push(previous);
        }
        secrets
    }
}

debug_fields!(WebhookEndpoint {
    id,
    tenant_id,
    url,
    event_types,
    topic_filter,
    enabled,
    consecutive_failures,
    disabled_reason
});

/// An endpoint to create. The caller checks the URL (the `webhooks` crate's
/// SSRF guard) and makes the secret. `Debug` leaves the secret out.
#[derive(Clone, PartialEq, Eq)]
pub struct NewWebhookEndpoint {
    pub tenant_id: String,
    pub url: String,
    pub event_types: Vec<String>,
    pub topic_filter: Option<String>,
    pub secret: String,
}

debug_fields!(NewWebhookEndpoint {
    tenant_id,
    url,
    event_types,
    topic_filter
});

/// The columns of [`WebhookEndpoint`], for `concat!`.
macro_rules! endpoint_columns {
    () => {
        "id, tenant_id, url, event_types, topic_filter, enabled, secret, previous_secret, \
         previous_secret_expires_at, consecutive_failures, disabled_reason, created_at, updated_at"
    };
}
pub(crate) use endpoint_columns;

impl Store {
    /// Create an enabled endpoint. With `audit`, the entry it makes of the
    /// new endpoint (whose id is made here) is written in the same
    /// transaction. `NotFound` (tenant) if the tenant does not exist.
    #[tracing::instrument(skip_all, fields(tenant = %new.tenant_id))]
    pub async fn create_webhook_endpoint(
        &self,
        new: &NewWebhookEndpoint,
        audit: Option<AuditOf<'_, WebhookEndpoint>>,
    ) -> Result<WebhookEndpoint, Error> {
        const SQL: &str = concat!(
            "INSERT INTO webhook_endpoints (id, tenant_id, url, event_types, topic_filter, ",
            "enabled, secret, consecutive_failures, created_at, updated_at) ",
            "VALUES ($1, $2, $3, $4, $5, TRUE, $6, 0, $7, $7) RETURNING ",
            endpoint_columns!()
        );
        let id = format!("wh_{}", uuid::Uuid::now_v7().simple());
        let created = audited_of_tx!(self, audit, made_ok,
            tx => sql!(in tx, fetch_one as WebhookEndpoint => SQL, &id, &new.tenant_id, &new.url,
                Json(&new.event_types), new.topic_filter.as_deref(), &new.secret, Ts(now())));
        created.map_err(|e| {
            on_violation(
                e,
                Some(Error::already_exists(KIND, id)),
                Some(tenant_not_found(&new.tenant_id)),
            )
        })
    }

    /// One endpoint of a tenant, or `NotFound`.
    pub async fn get_webhook_endpoint(
        &self,
        tenant_id: &str,
        id: &str,
    ) -> Result<WebhookEndpoint, Error> {
        const SQL: &str = concat!(
            "SELECT ",
            endpoint_columns!(),
            " FROM webhook_endpoints WHERE tenant_id = $1 AND id = $2"
        );
        let row = sql!(self, fetch_optional as WebhookEndpoint => SQL, tenant_id, id)?;
        row.ok_or_else(|| not_found(id))
    }

    /// All of a tenant's endpoints, in id (creation) order. Tenants have a
    /// handful, so this is not paged.
    pub async fn list_webhook_endpoints(
        &self,
        tenant_id: &str,
    ) -> Result<Vec<WebhookEndpoint>, Error> {
        const SQL: &str = concat!(
            "SELECT ",
            endpoint_columns!(),
            " FROM webhook_endpoints WHERE tenant_id = $1 ORDER BY id"
        );
        Ok(sql!(self, fetch_all as WebhookEndpoint => SQL, tenant_id)?)
    }

    /// The enabled endpoints of one tenant, or of every tenant when
    /// `tenant_id` is `None`, in tenant and id order: what the message
    /// router caches to decide which MQTT messages anyone wants.
    pub async fn list_enabled_webhook_endpoints(
        &self,
        tenant_id: Option<&str>,
    ) -> Result<Vec<WebhookEndpoint>, Error> {
        const SQL: &str = concat!(
            "SELECT ",
            endpoint_columns!(),
            " FROM webhook_endpoints WHERE enabled AND (CAST($1 AS TEXT) IS NULL OR tenant_id = $1) ",
            "ORDER BY tenant_id, id"
        );
        Ok(sql!(self, fetch_all as WebhookEndpoint => SQL, tenant_id)?)
    }

    /// Enable or disable an endpoint by hand. Enabling clears the failure
    /// run and the reason the platform disabled it for.
    #[tracing::instrument(skip_all, fields(tenant = %tenant_id, webhook_id = %id))]
    pub async fn set_webhook_endpoint_enabled(
        &self,
        tenant_id: &str,
        id: &str,
        enabled: bool,
    ) -> Result<WebhookEndpoint, Error> {
        const SQL: &str = concat!(
            "UPDATE webhook_endpoints SET enabled = $3, ",
            "consecutive_failures = CASE WHEN $3 THEN 0 ELSE consecutive_failures END, ",
            "disabled_reason = CASE WHEN $3 THEN NULL ELSE disabled_reason END, ",
            "updated_at = $4 WHERE tenant_id = $1 AND id = $2 RETURNING ",
            endpoint_columns!()
        );
        let row = sql!(self, fetch_optional as WebhookEndpoint => SQL, tenant_id, id, enabled,
            Ts(now()))?;
        row.ok_or_else(|| not_found(id))
    }

    /// Replace the secret with `new_secret`; the old one keeps signing
    /// (a second signature on every request) until `previous_expires_at`.
    /// With `audit`, the entry is written in the same transaction.
    #[tracing::instrument(skip_all, fields(tenant = %tenant_id, webhook_id = %id))]
    pub async fn rotate_webhook_secret(
        &self,
        tenant_id: &str,
        id: &str,
        new_secret: &str,
        previous_expires_at: DateTime<Utc>,
        audit: Option<&NewAuditEntry>,
    ) -> Result<WebhookEndpoint, Error> {
        const SQL: &str = concat!(
            "UPDATE webhook_endpoints SET previous_secret = secret, secret = $3, ",
            "previous_secret_expires_at = $4, updated_at = $5 ",
            "WHERE tenant_id = $1 AND id = $2 RETURNING ",
            endpoint_columns!()
        );
        let row = audited_tx!(self, audit, Option::is_some, tx => sql!(in tx,
            fetch_optional as WebhookEndpoint => SQL, tenant_id, id, new_secret,
            Ts(previous_expires_at), Ts(now()))?);
        row.ok_or_else(|| not_found(id))
    }

    /// Delete an endpoint with its deliveries and their attempts. With
    /// `audit`, the entry is written in the same transaction.
    #[tracing::instrument(skip_all, fields(tenant = %tenant_id, webhook_id = %id))]
    pub async fn delete_webhook_endpoint(
        &self,
        tenant_id: &str,
        id: &str,
        audit: Option<&NewAuditEntry>,
    ) -> Result<(), Error> {
        const SQL: &str = "DELETE FROM webhook_endpoints WHERE tenant_id = $1 AND id = $2";
        let deleted = audited_tx!(self, audit, |n: &u64| *n > 0, tx => sql!(in tx, execute => SQL,
            tenant_id, id)?);
        if deleted == 0 {
            return Err(not_found(id));
        }
        Ok(())
    }
}

fn not_found(id: &str) -> Error {
    Error::not_found(KIND, id.to_owned())
}
