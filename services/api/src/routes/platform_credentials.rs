//! Platform service credentials (`/v1/service-credentials`, platform-admin):
//! MQTT access for the operator's own backends, which see every tenant
//! with its topics mounted under the tenant id (`{tenant}/devices/{d}/…`).
//! MQTT user name `platform:{name}`; the secret is made here, returned
//! once, and stored only as an argon2id hash. The operations and types are
//! those of a tenant's service credentials (`credentials`), on the
//! platform's scope.

use ::events::change::Change;
use axum::extract::Path;
use axum::http::StatusCode;
use serde_json::{Value, json};
use store::{CredentialScope, NewAuditEntry, ServiceCredential};
use utoipa_axum::routes;

use super::Routes;
use super::credentials::{
    CreateServiceCredential, CreatedServiceCredential, CredentialOwner, CredentialPath,
    ServiceCredentialList, create_credential, delete_credential, list_credentials,
};
use super::scope::AsPlatform;
use crate::{ApiError, ApiJson, ShownOnce};

pub(crate) fn router() -> Routes {
    Routes::new()
        .routes(routes!(create, list))
        .routes(routes!(remove))
}

impl CredentialOwner for AsPlatform {
    const CREATE: &'static str = "platform_credential.create";
    const DELETE: &'static str = "platform_credential.delete";

    fn scope(&self) -> CredentialScope {
        CredentialScope::Platform
    }

    fn username(&self, name: &str) -> String {
        access::platform_principal(name)
    }

    fn entry(&self, action: &'static str, id: &str, details: Value) -> NewAuditEntry {
        self.audit(None, action, format!("service-credentials/{id}"), details)
    }

    fn deleted_details(&self, deleted: &ServiceCredential) -> Value {
        json!({ "name": deleted.name })
    }

    fn deleted(&self, name: String) -> Change {
        Change::PlatformCredentialDeleted { name }
    }
}

/// Create a platform service credential (platform-admin); the password is
/// shown once. `Cache-Control: no-store`.
#[utoipa::path(post, path = "/v1/service-credentials", operation_id = "create_platform_credential", tag = "credentials",
    request_body = CreateServiceCredential,
    responses(
        (status = 201, description = "The credential and its password (shown once)", body = CreatedServiceCredential),
        (status = 409, description = "A platform credential with this name exists",
         body = crate::Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn create(
    admin: AsPlatform,
    ApiJson(body): ApiJson<CreateServiceCredential>,
) -> Result<ShownOnce<CreatedServiceCredential>, ApiError> {
    create_credential(admin.state(), &admin, body).await
}

/// The platform service credentials, by name, without secrets (platform-admin).
#[utoipa::path(get, path = "/v1/service-credentials", operation_id = "list_platform_credentials", tag = "credentials",
    responses((status = 200, description = "The credentials", body = ServiceCredentialList)))]
pub(crate) async fn list(admin: AsPlatform) -> Result<ApiJson<ServiceCredentialList>, ApiError> {
    list_credentials(admin.state(), &admin).await
}

/// Delete a platform service credential (platform-admin). Its MQTT
/// sessions end (DISCONNECT 0x98 in v5).
#[utoipa::path(delete, path = "/v1/service-credentials/{id}", operation_id = "delete_platform_credential", tag = "credentials",
    params(CredentialPath),
    responses((status = 204, description = "Deleted")))]
pub(crate) async fn remove(
    admin: AsPlatform,
    Path(CredentialPath { id }): Path<CredentialPath>,
) -> Result<StatusCode, ApiError> {
    delete_credential(admin.state(), &admin, &id).await
}
