//! MQTT secrets: a device's password (`POST|DELETE
//! /v1/tenants/{t}/devices/{d}/password`, operator and tenant-admin) and a
//! tenant's service credentials for backends (`/v1/tenants/{t}/service-credentials`,
//! tenant-admin; any role of the tenant lists them, without secrets).
//! Secrets are made here, returned once, and stored only as argon2id hashes.

use ::events::change::Change;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use http::header::CACHE_CONTROL;
use serde::{Deserialize, Serialize};
use serde_json::json;
use store::{CredentialScope, NewAuditEntry, NewServiceCredential, ServiceCredential};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::routes;

use super::Routes;
use super::policies::check_document;
use super::scope::{Admin, DevicePath, InDevice, InTenant, Read, TenantPath, Write};
use crate::{ApiError, ApiJson, AppState, FieldError};

/// The most topic filters a service credential may list per action.
const MAX_FILTERS: usize = 64;

pub(crate) fn router() -> Routes {
    Routes::new()
        .routes(routes!(set_password, delete_password))
        .routes(routes!(create_service, list_services))
        .routes(routes!(delete_service))
}

/// The `{id}` of a service credential's path.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub(crate) struct CredentialPath {
    /// Credential id
    id: String,
}

/// An MQTT user name and its password, shown this once.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct DevicePassword {
    /// `{device}@{tenant}`.
    username: String,
    password: String,
}

/// A new service credential.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateServiceCredential {
    /// Unique in the tenant; `[A-Za-z0-9._-]{1,64}`.
    #[schema(pattern = "^[A-Za-z0-9._-]{1,64}$")]
    name: String,
    /// Topic filters it may publish to (variables allowed); empty or absent
    /// for the whole tenant.
    #[serde(default)]
    publish: Vec<String>,
    /// Topic filters it may subscribe to; empty or absent for the whole tenant.
    #[serde(default)]
    subscribe: Vec<String>,
}

/// A service credential, without its secret.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ServiceCredentialView {
    id: String,
    name: String,
    /// The MQTT user name: `service:{tenant}:{name}`.
    username: String,
    publish: Vec<String>,
    subscribe: Vec<String>,
    created_at: DateTime<Utc>,
}

impl From<ServiceCredential> for ServiceCredentialView {
    fn from(c: ServiceCredential) -> Self {
        ServiceCredentialView {
            id: c.id,
            name: c.name,
            username: c.username,
            publish: c.publish,
            subscribe: c.subscribe,
            created_at: c.created_at,
        }
    }
}

/// A created service credential with its password, shown this once.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct CreatedServiceCredential {
    #[serde(flatten)]
    credential: ServiceCredentialView,
    password: String,
}

/// Service credentials of a tenant, by name.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ServiceCredentialList {
    items: Vec<ServiceCredentialView>,
}

/// A fresh password and its argon2id hash (hashing is slow on purpose: off
/// the async threads).
pub(crate) async fn new_secret() -> Result<(String, String), ApiError> {
    let password = access::generate_password().map_err(ApiError::internal)?;
    let clear = password.clone();
    let hash = tokio::task::spawn_blocking(move || access::hash_password(&clear))
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::internal)?;
    Ok((password, hash))
}

/// Give the device a new random MQTT password, replacing any old one
/// (operator, tenant-admin). Its sessions end. `Cache-Control: no-store`.
#[utoipa::path(post, path = "/v1/tenants/{t}/devices/{d}/password", operation_id = "set_device_password", tag = "credentials",
    params(DevicePath),
    responses((status = 201, description = "The user name and password (shown once)", body = DevicePassword)))]
pub(crate) async fn set_password(
    State(state): State<AppState>,
    at: InDevice<Write>,
) -> Result<
    (
        StatusCode,
        [(http::HeaderName, &'static str); 1],
        ApiJson<DevicePassword>,
    ),
    ApiError,
> {
    let (t, d) = (at.t(), at.d());
    state.store.get_device(t, d).await?;
    let (password, hash) = new_secret().await?;
    let audit = at.audit("device.password.set", password_target(t, d), json!({}));
    state
        .store
        .set_device_password(t, d, &hash, Some(&audit))
        .await?;
    state
        .changed(Change::DevicePasswordChanged {
            tenant: t.to_owned(),
            device: d.to_owned(),
        })
        .await;
    Ok((
        StatusCode::CREATED,
        [(CACHE_CONTROL, "no-store")],
        ApiJson(DevicePassword {
            username: access::device_username(d, t),
            password,
        }),
    ))
}

/// Remove the device's MQTT password (operator, tenant-admin); 404 if it
/// has none. Its sessions end.
#[utoipa::path(delete, path = "/v1/tenants/{t}/devices/{d}/password", operation_id = "delete_device_password", tag = "credentials",
    params(DevicePath),
    responses((status = 204, description = "Removed")))]
pub(crate) async fn delete_password(
    State(state): State<AppState>,
    at: InDevice<Write>,
) -> Result<StatusCode, ApiError> {
    let (t, d) = (at.t(), at.d());
    let audit = at.audit("device.password.delete", password_target(t, d), json!({}));
    if !state
        .store
        .delete_device_password(t, d, Some(&audit))
        .await?
    {
        return Err(ApiError::NotFound {
            resource: "device password".to_owned(),
            id: format!("{t}/{d}"),
        });
    }
    state
        .changed(Change::DevicePasswordChanged {
            tenant: t.to_owned(),
            device: d.to_owned(),
        })
        .await;
    Ok(StatusCode::NO_CONTENT)
}

/// Create a service credential (tenant-admin); the password is shown once.
#[utoipa::path(post, path = "/v1/tenants/{t}/service-credentials", operation_id = "create_service_credential", tag = "credentials",
    params(TenantPath),
    request_body = CreateServiceCredential,
    responses(
        (status = 201, description = "The credential and its password (shown once)", body = CreatedServiceCredential),
        (status = 409, description = "The tenant has a credential with this name",
         body = crate::Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn create_service(
    State(state): State<AppState>,
    scope: InTenant<Admin>,
    ApiJson(body): ApiJson<CreateServiceCredential>,
) -> Result<
    (
        StatusCode,
        [(http::HeaderName, &'static str); 1],
        ApiJson<CreatedServiceCredential>,
    ),
    ApiError,
> {
    let t = scope.t();
    let new = NewCredential {
        scope: CredentialScope::Tenant(t.to_owned()),
        username: service_username(t, &body.name),
        name: body.name,
        publish: body.publish,
        subscribe: body.subscribe,
    };
    let (created, password) = create_credential(&state, new, |new| {
        scope.audit(
            "service_credential.create",
            service_target(t, &new.id),
            json!({ "name": new.name }),
        )
    })
    .await?;
    Ok((
        StatusCode::CREATED,
        [(CACHE_CONTROL, "no-store")],
        ApiJson(CreatedServiceCredential {
            credential: created.into(),
            password,
        }),
    ))
}

/// A tenant's service credentials, by name, without secrets (any role of the tenant).
#[utoipa::path(get, path = "/v1/tenants/{t}/service-credentials", operation_id = "list_service_credentials", tag = "credentials",
    params(TenantPath),
    responses((status = 200, description = "The credentials", body = ServiceCredentialList)))]
pub(crate) async fn list_services(
    State(state): State<AppState>,
    scope: InTenant<Read>,
) -> Result<ApiJson<ServiceCredentialList>, ApiError> {
    let t = scope.t();
    state.store.get_tenant(t).await?;
    let items = state
        .store
        .list_service_credentials(&CredentialScope::Tenant(t.to_owned()))
        .await?
        .into_iter()
        .map(ServiceCredentialView::from)
        .collect();
    Ok(ApiJson(ServiceCredentialList { items }))
}

/// Delete a service credential (tenant-admin). Sessions using it end.
#[utoipa::path(delete, path = "/v1/tenants/{t}/service-credentials/{id}", operation_id = "delete_service_credential", tag = "credentials",
    params(TenantPath, CredentialPath),
    responses((status = 204, description = "Deleted")))]
pub(crate) async fn delete_service(
    State(state): State<AppState>,
    scope: InTenant<Admin>,
    Path(CredentialPath { id }): Path<CredentialPath>,
) -> Result<StatusCode, ApiError> {
    let t = scope.t();
    let audit = scope.audit(
        "service_credential.delete",
        service_target(t, &id),
        json!({}),
    );
    let deleted = state
        .store
        .delete_service_credential(
            &CredentialScope::Tenant(t.to_owned()),
            &id,
            Some(&|_: &ServiceCredential| audit.clone()),
        )
        .await?;
    state
        .changed(Change::ServiceCredentialDeleted {
            tenant: t.to_owned(),
            name: deleted.name,
        })
        .await;
    Ok(StatusCode::NO_CONTENT)
}

/// A service credential to create, in either scope, before its id and
/// secret are made.
pub(crate) struct NewCredential {
    pub(crate) scope: CredentialScope,
    pub(crate) name: String,
    pub(crate) username: String,
    pub(crate) publish: Vec<String>,
    pub(crate) subscribe: Vec<String>,
}

/// Checks, makes the secret and stores a service credential of either
/// scope, with the audit entry `audit` makes of it; returns it and its
/// password (to show once).
pub(crate) async fn create_credential(
    state: &AppState,
    new: NewCredential,
    audit: impl FnOnce(&NewServiceCredential) -> NewAuditEntry,
) -> Result<(ServiceCredential, String), ApiError> {
    let errors = check_credential(&new.name, &new.publish, &new.subscribe);
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let (password, hash) = new_secret().await?;
    let new = NewServiceCredential {
        id: uuid::Uuid::now_v7().to_string(),
        scope: new.scope,
        name: new.name,
        username: new.username,
        password_hash: hash,
        publish: new.publish,
        subscribe: new.subscribe,
    };
    let entry = audit(&new);
    let created = state
        .store
        .create_service_credential(&new, Some(&entry))
        .await?;
    Ok((created, password))
}

/// The name and filters of a service credential (tenant or platform), one
/// error per bad field: its filters become its rules, so they get the
/// checks a policy gets.
pub(crate) fn check_credential(
    name: &str,
    publish: &[String],
    subscribe: &[String],
) -> Vec<FieldError> {
    let mut errors = Vec::new();
    if !name_ok(name) {
        errors.push(FieldError::new(
            "/name",
            "expected 1-64 of A-Z, a-z, 0-9, '.', '_' and '-'",
        ));
    }
    for (member, filters) in [("publish", publish), ("subscribe", subscribe)] {
        if filters.len() > MAX_FILTERS {
            errors.push(FieldError::new(
                format!("/{member}"),
                format!("at most {MAX_FILTERS} filters"),
            ));
            continue;
        }
        // The same check a policy gets: a credential's filters become its rules.
        let mut document = serde_json::Map::new();
        document.insert(
            "rules".to_owned(),
            json!([{ "effect": "allow", "action": member, "filters": filters }]),
        );
        if let Err(e) = check_document(name, &document) {
            let pointer = e.pointer.replace("/rules/0/filters", &format!("/{member}"));
            errors.push(FieldError::new(pointer, e.detail));
        }
    }
    errors
}

/// `[A-Za-z0-9._-]{1,64}`: safe in user names, URLs and log lines.
pub(crate) fn name_ok(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// `service:{tenant}:{name}`: `:` is in no device id, so this is never
/// read as a device's `{device}@{tenant}`, and it is unique platform-wide.
fn service_username(t: &str, name: &str) -> String {
    format!("service:{t}:{name}")
}

fn password_target(t: &str, d: &str) -> String {
    format!("tenants/{t}/devices/{d}/password")
}

fn service_target(t: &str, id: &str) -> String {
    format!("tenants/{t}/service-credentials/{id}")
}
