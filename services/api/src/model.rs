//! What the API sends: its own representations of the store's records, so
//! that the wire format (and the OpenAPI document generated from these
//! types) changes only when we mean it to.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Map, Value};
use utoipa::ToSchema;

/// A tenant: the unit of isolation.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Tenant {
    /// `[a-z0-9-]{3,63}`.
    #[schema(example = "acme", pattern = "^[a-z0-9-]{3,63}$")]
    pub id: String,
    #[schema(example = "Acme Corp")]
    pub name: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<store::Tenant> for Tenant {
    fn from(t: store::Tenant) -> Self {
        Tenant {
            id: t.id,
            name: t.name,
            created_at: t.created_at,
            updated_at: t.updated_at,
        }
    }
}

/// A device of a tenant.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Device {
    #[schema(example = "acme")]
    pub tenant_id: String,
    /// `[A-Za-z0-9._-]{1,128}`.
    #[schema(example = "sensor-1", pattern = "^[A-Za-z0-9._-]{1,128}$")]
    pub id: String,
    /// String tags, for filtering with `?label=key=value`.
    pub labels: BTreeMap<String, String>,
    /// Free-form JSON object.
    #[schema(value_type = Object)]
    pub attributes: Map<String, Value>,
    /// A disabled device may not connect.
    pub enabled: bool,
    /// `online` or `offline` (presence, as the broker last recorded it).
    #[schema(example = "offline", pattern = "^(online|offline)$")]
    pub status: &'static str,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Device {
    /// Sets `status` from whether the device is online.
    #[must_use]
    pub fn online(mut self, online: bool) -> Self {
        self.status = if online { "online" } else { "offline" };
        self
    }
}

impl Device {
    /// The device as `device.created` and `device.updated` carry it: the
    /// same fields as this REST view.
    pub fn snapshot(&self) -> ::events::payload::DeviceSnapshot {
        ::events::payload::DeviceSnapshot {
            tenant_id: Some(self.tenant_id.clone()),
            id: self.id.clone(),
            labels: self.labels.clone(),
            attributes: self.attributes.clone(),
            enabled: self.enabled,
            status: Some(self.status.to_owned()),
            created_at: self.created_at,
            updated_at: Some(self.updated_at),
            registered_by: None,
        }
    }
}

impl From<store::Device> for Device {
    fn from(d: store::Device) -> Self {
        Device {
            tenant_id: d.tenant_id,
            id: d.id,
            labels: d.labels,
            attributes: d.attributes,
            enabled: d.enabled,
            status: "offline",
            created_at: d.created_at,
            updated_at: d.updated_at,
        }
    }
}

/// One audit log entry: who did what to which resource, when.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AuditEntry {
    /// Increases with insertion order.
    pub id: i64,
    pub at: DateTime<Utc>,
    /// Absent for platform-level actions.
    pub tenant_id: Option<String>,
    /// `role:subject`, e.g. `operator:cli`.
    #[schema(example = "platform-admin:cli")]
    pub actor: String,
    /// e.g. `device.create`.
    #[schema(example = "device.create")]
    pub action: String,
    /// e.g. `tenants/acme/devices/sensor-1`.
    #[schema(example = "tenants/acme/devices/sensor-1")]
    pub target: String,
    /// The `x-request-id` of the request that did it.
    pub request_id: Option<String>,
    /// Anything else worth keeping (never secrets).
    #[schema(value_type = Object)]
    pub details: Value,
}

impl From<store::AuditEntry> for AuditEntry {
    fn from(e: store::AuditEntry) -> Self {
        AuditEntry {
            id: e.id,
            at: e.at,
            tenant_id: e.tenant_id,
            actor: e.actor,
            action: e.action,
            target: e.target,
            request_id: e.request_id,
            details: e.details,
        }
    }
}

/// A page of a paged list response (`{items, next_cursor}`), made from the
/// store's [`store::Paged`] rows, each as its view (or built by hand where a
/// view needs more than its row). The struct keeps the name and description
/// the OpenAPI document gives it.
macro_rules! page {
    ($name:ident, $item:ty, $doc:literal) => {
        #[doc = $doc]
        #[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
        pub struct $name {
            pub items: Vec<$item>,
            /// Pass as `?cursor=` for the next page; `null` on the last page.
            pub next_cursor: Option<String>,
        }

        impl<T: Into<$item>> From<store::Paged<T>> for $name {
            fn from(p: store::Paged<T>) -> Self {
                $name {
                    items: p.items.into_iter().map(Into::into).collect(),
                    next_cursor: p.next_cursor,
                }
            }
        }
    };
}

/// A list response that is not paged (`{items}`: a handful per tenant or
/// device, or a bounded window), made from the rows it lists, each as its
/// view. `$item` must have `From` for the row type. The struct keeps the
/// name and description the OpenAPI document gives it.
macro_rules! item_list {
    ($vis:vis $name:ident, $item:ty, $doc:literal $(, items = $items_doc:literal)?) => {
        #[doc = $doc]
        #[derive(Debug, serde::Serialize, utoipa::ToSchema)]
        $vis struct $name {
            $(#[doc = $items_doc])?
            pub items: Vec<$item>,
        }

        impl<T: Into<$item>> From<Vec<T>> for $name {
            fn from(rows: Vec<T>) -> Self {
                $name {
                    items: rows.into_iter().map(Into::into).collect(),
                }
            }
        }
    };
}
pub(crate) use {item_list, page};

page!(TenantPage, Tenant, "A page of tenants, in id order.");
page!(DevicePage, Device, "A page of devices, in id order.");
page!(
    AuditPage,
    AuditEntry,
    "A page of audit entries, newest first."
);

/// A tenant's API key (its secret is shown only when created).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ApiKey {
    pub id: String,
    pub tenant_id: String,
    pub name: String,
    /// `tenant-admin`, `operator` or `viewer`.
    #[schema(example = "operator")]
    pub role: String,
    pub created_at: DateTime<Utc>,
    /// Set once revoked: the key no longer gets tokens.
    pub revoked_at: Option<DateTime<Utc>>,
}

impl From<store::ApiKey> for ApiKey {
    fn from(k: store::ApiKey) -> Self {
        ApiKey {
            id: k.id,
            tenant_id: k.tenant_id,
            name: k.name,
            role: k.role,
            created_at: k.created_at,
            revoked_at: k.revoked_at,
        }
    }
}

/// A new API key, with its secret: shown this once, stored only hashed.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CreatedApiKey {
    #[serde(flatten)]
    pub key: ApiKey,
    /// Exchange at `POST /v1/auth/token`. Keep it secret.
    pub secret: String,
}

page!(ApiKeyPage, ApiKey, "A page of API keys, in id order.");

/// A bearer token.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AccessToken {
    pub access_token: String,
    /// Always `Bearer`.
    #[schema(example = "Bearer")]
    pub token_type: String,
    /// Seconds until it expires.
    pub expires_in: u64,
}
