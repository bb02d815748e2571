//! MQTT secrets: a device's password (`POST|DELETE
//! /v1/tenants/{t}/devices/{d}/password`, operator and tenant-admin) and a
//! tenant's service credentials for backends (`/v1/tenants/{t}/service-credentials`,
//! tenant-admin; any role of the tenant lists them, without secrets).
//! Secrets are made here, returned once, and stored only as argon2id hashes.

use ::events::change::Change;
use axum::extract::Path;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use store::{CredentialScope, NewAuditEntry, NewServiceCredential, ServiceCredential};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::routes;

use super::Routes;
use super::policies::check_document;
use super::scope::{Admin, DevicePath, InDevice, InTenant, Need, Read, TenantPath, Write};
use crate::model::item_list;
use crate::{ApiError, ApiJson, AppState, FieldError, ShownOnce};

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
    pub(crate) id: String,
}

/// An MQTT user name and its password, shown this once.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct DevicePassword {
    /// `{device}@{tenant}`.
    username: String,
    password: String,
}

/// A new service credential, of a tenant or of the platform.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateServiceCredential {
    /// Unique in its tenant (a platform credential's: on the platform);
    /// `[A-Za-z0-9._-]{1,64}`.
    #[schema(pattern = "^[A-Za-z0-9._-]{1,64}$")]
    name: String,
    /// Topic filters it may publish to (variables allowed; a platform
    /// credential's are over the mounted topic space, `{tenant}/…`); empty
    /// or absent for every topic it sees.
    #[serde(default)]
    publish: Vec<String>,
    /// Topic filters it may subscribe to, likewise; empty or absent for
    /// every topic it sees.
    #[serde(default)]
    subscribe: Vec<String>,
}

/// A service credential, without its secret.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ServiceCredentialView {
    id: String,
    name: String,
    /// The MQTT user name: `service:{tenant}:{name}` of a tenant's,
    /// `platform:{name}` of a platform credential.
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

item_list!(pub(crate) ServiceCredentialList, ServiceCredentialView, "Service credentials, by name.");

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
    at: InDevice<Write>,
) -> Result<ShownOnce<DevicePassword>, ApiError> {
    let (t, d) = at.existing().await?;
    let (password, hash) = new_secret().await?;
    let audit = at.audit("device.password.set", password_target(t, d), json!({}));
    at.store()
        .set_device_password(t, d, &hash, Some(&audit))
        .await?;
    at.device_changed(|tenant, device| Change::DevicePasswordChanged { tenant, device })
        .await;
    Ok(ShownOnce(DevicePassword {
        username: access::device_username(d, t),
        password,
    }))
}

/// Remove the device's MQTT password (operator, tenant-admin); 404 if it
/// has none. Its sessions end.
#[utoipa::path(delete, path = "/v1/tenants/{t}/devices/{d}/password", operation_id = "delete_device_password", tag = "credentials",
    params(DevicePath),
    responses((status = 204, description = "Removed")))]
pub(crate) async fn delete_password(at: InDevice<Write>) -> Result<StatusCode, ApiError> {
    let (t, d) = (at.t(), at.d());
    let audit = at.audit("device.password.delete", password_target(t, d), json!({}));
    if !at
        .store()
        .delete_device_password(t, d, Some(&audit))
        .await?
    {
        return Err(ApiError::NotFound {
            resource: "device password".to_owned(),
            id: format!("{t}/{d}"),
        });
    }
    at.device_changed(|tenant, device| Change::DevicePasswordChanged { tenant, device })
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
    scope: InTenant<Admin>,
    ApiJson(body): ApiJson<CreateServiceCredential>,
) -> Result<ShownOnce<CreatedServiceCredential>, ApiError> {
    create_credential(scope.state(), &scope, body).await
}

/// A tenant's service credentials, by name, without secrets (any role of the tenant).
#[utoipa::path(get, path = "/v1/tenants/{t}/service-credentials", operation_id = "list_service_credentials", tag = "credentials",
    params(TenantPath),
    responses((status = 200, description = "The credentials", body = ServiceCredentialList)))]
pub(crate) async fn list_services(
    scope: InTenant<Read>,
) -> Result<ApiJson<ServiceCredentialList>, ApiError> {
    scope.existing().await?;
    list_credentials(scope.state(), &scope).await
}

/// Delete a service credential (tenant-admin). Sessions using it end.
#[utoipa::path(delete, path = "/v1/tenants/{t}/service-credentials/{id}", operation_id = "delete_service_credential", tag = "credentials",
    params(TenantPath, CredentialPath),
    responses((status = 204, description = "Deleted")))]
pub(crate) async fn delete_service(
    scope: InTenant<Admin>,
    Path(CredentialPath { id }): Path<CredentialPath>,
) -> Result<StatusCode, ApiError> {
    delete_credential(scope.state(), &scope, &id).await
}

/// Whose service credentials a route is about: a tenant's ([`InTenant`])
/// or the platform's ([`AsPlatform`](super::scope::AsPlatform)). Both have
/// the same three operations, on the owner's [`CredentialScope`].
pub(crate) trait CredentialOwner: Sync {
    /// The audit actions of creating and deleting one.
    const CREATE: &'static str;
    const DELETE: &'static str;

    fn scope(&self) -> CredentialScope;
    /// The MQTT user name of the owner's credential `name`.
    fn username(&self, name: &str) -> String;
    /// The audit entry of `action` on the owner's credential `id`.
    fn entry(&self, action: &'static str, id: &str, details: Value) -> NewAuditEntry;
    /// The details of a deletion's entry.
    fn deleted_details(&self, deleted: &ServiceCredential) -> Value;
    /// What live sessions must hear of the credential `name`'s deletion.
    fn deleted(&self, name: String) -> Change;
}

impl<N: Need> CredentialOwner for InTenant<N> {
    const CREATE: &'static str = "service_credential.create";
    const DELETE: &'static str = "service_credential.delete";

    fn scope(&self) -> CredentialScope {
        CredentialScope::Tenant(self.t().to_owned())
    }

    /// `service:{tenant}:{name}`: `:` is in no device id, so this is never
    /// read as a device's `{device}@{tenant}`, and it is unique platform-wide.
    fn username(&self, name: &str) -> String {
        format!("service:{}:{name}", self.t())
    }

    fn entry(&self, action: &'static str, id: &str, details: Value) -> NewAuditEntry {
        let target = format!("tenants/{}/service-credentials/{id}", self.t());
        self.audit(action, target, details)
    }

    fn deleted_details(&self, _: &ServiceCredential) -> Value {
        json!({})
    }

    fn deleted(&self, name: String) -> Change {
        Change::ServiceCredentialDeleted {
            tenant: self.t().to_owned(),
            name,
        }
    }
}

/// Checks, makes the secret and stores a service credential of `owner`;
/// answers it with its password (shown once).
pub(crate) async fn create_credential<O: CredentialOwner>(
    state: &AppState,
    owner: &O,
    body: CreateServiceCredential,
) -> Result<ShownOnce<CreatedServiceCredential>, ApiError> {
    let errors = check_credential(&body.name, &body.publish, &body.subscribe);
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let (password, hash) = new_secret().await?;
    let new = NewServiceCredential {
        id: uuid::Uuid::now_v7().to_string(),
        scope: owner.scope(),
        username: owner.username(&body.name),
        name: body.name,
        password_hash: hash,
        publish: body.publish,
        subscribe: body.subscribe,
    };
    let entry = owner.entry(O::CREATE, &new.id, json!({ "name": new.name }));
    let created = state
        .store
        .create_service_credential(&new, Some(&entry))
        .await?;
    Ok(ShownOnce(CreatedServiceCredential {
        credential: created.into(),
        password,
    }))
}

/// `owner`'s service credentials, by name, without secrets.
pub(crate) async fn list_credentials(
    state: &AppState,
    owner: &impl CredentialOwner,
) -> Result<ApiJson<ServiceCredentialList>, ApiError> {
    let credentials = state.store.list_service_credentials(&owner.scope()).await?;
    Ok(ApiJson(credentials.into()))
}

/// Deletes `owner`'s credential `id` and ends the sessions using it.
pub(crate) async fn delete_credential<O: CredentialOwner>(
    state: &AppState,
    owner: &O,
    id: &str,
) -> Result<StatusCode, ApiError> {
    // The entry may name the credential, which only the delete returns.
    let entry =
        |deleted: &ServiceCredential| owner.entry(O::DELETE, id, owner.deleted_details(deleted));
    let deleted = state
        .store
        .delete_service_credential(&owner.scope(), id, Some(&entry))
        .await?;
    state.changed(owner.deleted(deleted.name)).await;
    Ok(StatusCode::NO_CONTENT)
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

fn password_target(t: &str, d: &str) -> String {
    format!("tenants/{t}/devices/{d}/password")
}
