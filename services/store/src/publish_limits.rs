//! Publish rate limits: a tenant's default for its devices and per-device
//! overrides. The most specific row applies as a whole (device, else
//! tenant); without either the platform default from `serve` config does.

use chrono::{DateTime, Utc};

use crate::audit::audited_tx;
use crate::codec::{Ts, now};
use crate::pki::{device_not_found, on_violation, tenant_not_found};
use crate::{Error, NewAuditEntry, Store};

/// What a tenant or device is allowed to publish; a `None` rate is not
/// limited, a `None` burst is one second's worth of the rate.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PublishLimitSettings {
    pub messages_per_second: Option<u64>,
    pub messages_burst: Option<u64>,
    pub bytes_per_second: Option<u64>,
    pub bytes_burst: Option<u64>,
}

/// Stored settings with the time they were last set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoredPublishLimits {
    pub settings: PublishLimitSettings,
    pub updated_at: DateTime<Utc>,
}

#[derive(sqlx::FromRow)]
struct Row {
    messages_per_second: Option<i64>,
    messages_burst: Option<i64>,
    bytes_per_second: Option<i64>,
    bytes_burst: Option<i64>,
    updated_at: Ts,
}

impl From<Row> for StoredPublishLimits {
    fn from(r: Row) -> Self {
        // The columns are CHECKed positive, so the conversions hold.
        let wide = |v: Option<i64>| v.and_then(|v| u64::try_from(v).ok());
        StoredPublishLimits {
            settings: PublishLimitSettings {
                messages_per_second: wide(r.messages_per_second),
                messages_burst: wide(r.messages_burst),
                bytes_per_second: wide(r.bytes_per_second),
                bytes_burst: wide(r.bytes_burst),
            },
            updated_at: r.updated_at.0,
        }
    }
}

const COLUMNS: &str =
    "messages_per_second, messages_burst, bytes_per_second, bytes_burst, updated_at";

/// Where a row lives: the tenant's default or one device's override.
#[derive(Clone, Copy)]
enum Scope<'a> {
    Tenant(&'a str),
    Device(&'a str, &'a str),
}

impl Scope<'_> {
    fn table(self) -> &'static str {
        match self {
            Scope::Tenant(_) => "tenant_publish_limits",
            Scope::Device(..) => "device_publish_limits",
        }
    }

    fn key_columns(self) -> &'static str {
        match self {
            Scope::Tenant(_) => "tenant_id",
            Scope::Device(..) => "tenant_id, device_id",
        }
    }

    fn key_filter(self) -> &'static str {
        match self {
            Scope::Tenant(_) => "tenant_id = $1",
            Scope::Device(..) => "tenant_id = $1 AND device_id = $2",
        }
    }

    fn keys(self) -> Vec<&'static str> {
        match self {
            Scope::Tenant(_) => vec!["$1"],
            Scope::Device(..) => vec!["$1", "$2"],
        }
    }

    fn not_found(self) -> Error {
        match self {
            Scope::Tenant(t) => Error::not_found("tenant publish limits", t.to_owned()),
            Scope::Device(t, d) => Error::not_found("device publish limits", format!("{t}/{d}")),
        }
    }

    fn owner_missing(self) -> Error {
        match self {
            Scope::Tenant(t) => tenant_not_found(t),
            Scope::Device(t, d) => device_not_found(t, d),
        }
    }
}

/// Bind the scope's key values, in the order of [`Scope::keys`].
macro_rules! bind_scope {
    ($query:expr, $scope:expr) => {
        match $scope {
            Scope::Tenant(t) => $query.bind(t),
            Scope::Device(t, d) => $query.bind(t).bind(d),
        }
    };
}

fn narrow(v: Option<u64>) -> Result<Option<i64>, Error> {
    v.map(|v| {
        i64::try_from(v).map_err(|_| Error::InvalidId {
            kind: "publish limit",
            id: v.to_string(),
            expected: "at most 2^63 - 1",
        })
    })
    .transpose()
}

impl Store {
    async fn put_publish_limits(
        &self,
        scope: Scope<'_>,
        s: &PublishLimitSettings,
        audit: Option<&NewAuditEntry>,
    ) -> Result<StoredPublishLimits, Error> {
        let keys = scope.keys();
        let n = keys.len();
        let values: Vec<String> = (n + 1..=n + 5).map(|i| format!("${i}")).collect();
        let sql = format!(
            "INSERT INTO {table} ({key_cols}, {COLUMNS}) VALUES ({keys}, {values}) \
             ON CONFLICT ({key_cols}) DO UPDATE SET \
             messages_per_second = excluded.messages_per_second, \
             messages_burst = excluded.messages_burst, \
             bytes_per_second = excluded.bytes_per_second, \
             bytes_burst = excluded.bytes_burst, updated_at = excluded.updated_at \
             RETURNING {COLUMNS}",
            table = scope.table(),
            key_cols = scope.key_columns(),
            keys = keys.join(", "),
            values = values.join(", "),
        );
        let (mps, mb, bps, bb) = (
            narrow(s.messages_per_second)?,
            narrow(s.messages_burst)?,
            narrow(s.bytes_per_second)?,
            narrow(s.bytes_burst)?,
        );
        let row = audited_tx!(self, audit, Result::is_ok, tx => {
            let q = sqlx::query_as::<_, Row>(sqlx::AssertSqlSafe(sql.as_str()));
            bind_scope!(q, scope)
                .bind(mps)
                .bind(mb)
                .bind(bps)
                .bind(bb)
                .bind(Ts(now()))
                .fetch_one(tx)
                .await
        });
        row.map(StoredPublishLimits::from)
            .map_err(|e| on_violation(e, None, Some(scope.owner_missing())))
    }

    async fn get_publish_limits(&self, scope: Scope<'_>) -> Result<StoredPublishLimits, Error> {
        let sql = format!(
            "SELECT {COLUMNS} FROM {} WHERE {}",
            scope.table(),
            scope.key_filter()
        );
        let row = on_pool!(self, pool => {
            let q = sqlx::query_as::<_, Row>(sqlx::AssertSqlSafe(sql.as_str()));
            bind_scope!(q, scope).fetch_optional(pool).await?
        });
        row.map(StoredPublishLimits::from)
            .ok_or_else(|| scope.not_found())
    }

    async fn delete_publish_limits(
        &self,
        scope: Scope<'_>,
        audit: Option<&NewAuditEntry>,
    ) -> Result<(), Error> {
        let sql = format!("DELETE FROM {} WHERE {}", scope.table(), scope.key_filter());
        let n = audited_tx!(self, audit, |n: &u64| *n > 0, tx => {
            let q = sqlx::query(sqlx::AssertSqlSafe(sql.as_str()));
            bind_scope!(q, scope).execute(tx).await?.rows_affected()
        });
        if n == 0 {
            return Err(scope.not_found());
        }
        Ok(())
    }

    /// Set (create or replace) the tenant's default limits, with `audit` in
    /// the same transaction. `NotFound` for an unknown tenant.
    #[tracing::instrument(skip_all, fields(tenant = %tenant_id))]
    pub async fn put_tenant_publish_limits(
        &self,
        tenant_id: &str,
        settings: &PublishLimitSettings,
        audit: Option<&NewAuditEntry>,
    ) -> Result<StoredPublishLimits, Error> {
        self.put_publish_limits(Scope::Tenant(tenant_id), settings, audit)
            .await
    }

    /// The tenant's default limits; `NotFound` when it has none.
    pub async fn get_tenant_publish_limits(
        &self,
        tenant_id: &str,
    ) -> Result<StoredPublishLimits, Error> {
        self.get_publish_limits(Scope::Tenant(tenant_id)).await
    }

    /// Remove the tenant's default limits, with `audit` in the same
    /// transaction; `NotFound` when it has none.
    #[tracing::instrument(skip_all, fields(tenant = %tenant_id))]
    pub async fn delete_tenant_publish_limits(
        &self,
        tenant_id: &str,
        audit: Option<&NewAuditEntry>,
    ) -> Result<(), Error> {
        self.delete_publish_limits(Scope::Tenant(tenant_id), audit)
            .await
    }

    /// Set (create or replace) a device's override, with `audit` in the
    /// same transaction. `NotFound` for an unknown device.
    #[tracing::instrument(skip_all, fields(tenant = %tenant_id, device = %device_id))]
    pub async fn put_device_publish_limits(
        &self,
        tenant_id: &str,
        device_id: &str,
        settings: &PublishLimitSettings,
        audit: Option<&NewAuditEntry>,
    ) -> Result<StoredPublishLimits, Error> {
        self.put_publish_limits(Scope::Device(tenant_id, device_id), settings, audit)
            .await
    }

    /// A device's override; `NotFound` when it has none.
    pub async fn get_device_publish_limits(
        &self,
        tenant_id: &str,
        device_id: &str,
    ) -> Result<StoredPublishLimits, Error> {
        self.get_publish_limits(Scope::Device(tenant_id, device_id))
            .await
    }

    /// Remove a device's override, with `audit` in the same transaction;
    /// `NotFound` when it has none.
    #[tracing::instrument(skip_all, fields(tenant = %tenant_id, device = %device_id))]
    pub async fn delete_device_publish_limits(
        &self,
        tenant_id: &str,
        device_id: &str,
        audit: Option<&NewAuditEntry>,
    ) -> Result<(), Error> {
        self.delete_publish_limits(Scope::Device(tenant_id, device_id), audit)
            .await
    }

    /// The limits in force for a device: its override, else its tenant's
    /// default; `None` when neither is set (the platform default applies).
    /// One query, for the connect path's cache misses.
    pub async fn effective_publish_limits(
        &self,
        tenant_id: &str,
        device_id: &str,
    ) -> Result<Option<PublishLimitSettings>, Error> {
        let sql = format!(
            "SELECT {COLUMNS} FROM (\
             SELECT 0 AS specificity, {COLUMNS} FROM device_publish_limits \
             WHERE tenant_id = $1 AND device_id = $2 \
             UNION ALL \
             SELECT 1 AS specificity, {COLUMNS} FROM tenant_publish_limits WHERE tenant_id = $1\
             ) AS limits ORDER BY specificity LIMIT 1"
        );
        let row = sql!(self, fetch_optional as Row => sqlx::AssertSqlSafe(sql.as_str()), tenant_id,
            device_id)?;
        Ok(row.map(|r| StoredPublishLimits::from(r).settings))
    }
}
