//! Platform service credentials (`/v1/service-credentials`, platform-admin):
//! MQTT access for the operator's own backends, which see every tenant
//! with its topics mounted under the tenant id (`{tenant}/devices/{d}/…`).
//! MQTT user name `platform:{name}`; the secret is made here, returned
//! once, and stored only as an argon2id hash.

use ::events::change::Change;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use http::header::CACHE_CONTROL;
use serde::{Deserialize, Serialize};
use serde_json::json;
use store::{CredentialScope, ServiceCredential};
use utoipa::ToSchema;
use utoipa_axum::routes;

use super::Routes;
use super::credentials::{NewCredential, create_credential};
use super::scope::AsPlatform;
use crate::{ApiError, ApiJson, AppState};

pub(crate) fn router() -> Routes {
    Routes::new()
        .routes(routes!(create, list))
        .routes(routes!(remove))
}

/// A new platform service credential.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreatePlatformCredential {
    /// Unique on the platform; `[A-Za-z0-9._-]{1,64}`.
    #[schema(pattern = "^[A-Za-z0-9._-]{1,64}$")]
    name: String,
    /// Topic filters it may publish to, over the mounted topic space
    /// (`{tenant}/…`); empty or absent for everything.
    #[serde(default)]
    publish: Vec<String>,
    /// Topic filters it may subscribe to, over the mounted topic space;
    /// empty or absent for everything.
    #[serde(default)]
    subscribe: Vec<String>,
}

/// A platform service credential, without its secret.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct PlatformCredentialView {
    id: String,
    name: String,
    /// The MQTT user name: `platform:{name}`.
    username: String,
    publish: Vec<String>,
    subscribe: Vec<String>,
    created_at: DateTime<Utc>,
}

impl From<ServiceCredential> for PlatformCredentialView {
    fn from(c: ServiceCredential) -> Self {
        PlatformCredentialView {
            id: c.id,
            name: c.name,
            username: c.username,
            publish: c.publish,
            subscribe: c.subscribe,
            created_at: c.created_at,
        }
    }
}

/// A created platform service credential with its password, shown once.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct CreatedPlatformCredential {
    #[serde(flatten)]
    credential: PlatformCredentialView,
    password: String,
}

/// The platform service credentials, by name.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct PlatformCredentialList {
    items: Vec<PlatformCredentialView>,
}

fn target(id: &str) -> String {
    format!("service-credentials/{id}")
}

/// Create a platform service credential (platform-admin); the password is
/// shown once. `Cache-Control: no-store`.
#[utoipa::path(post, path = "/v1/service-credentials", operation_id = "create_platform_credential", tag = "credentials",
    request_body = CreatePlatformCredential,
    responses(
        (status = 201, description = "The credential and its password (shown once)", body = CreatedPlatformCredential),
        (status = 409, description = "A platform credential with this name exists",
         body = crate::Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn create(
    State(state): State<AppState>,
    admin: AsPlatform,
    ApiJson(body): ApiJson<CreatePlatformCredential>,
) -> Result<
    (
        StatusCode,
        [(http::HeaderName, &'static str); 1],
        ApiJson<CreatedPlatformCredential>,
    ),
    ApiError,
> {
    let new = NewCredential {
        scope: CredentialScope::Platform,
        username: access::platform_principal(&body.name),
        name: body.name,
        publish: body.publish,
        subscribe: body.subscribe,
    };
    let (created, password) = create_credential(&state, new, |new| {
        admin.audit(
            None,
            "platform_credential.create",
            target(&new.id),
            json!({ "name": new.name }),
        )
    })
    .await?;
    Ok((
        StatusCode::CREATED,
        [(CACHE_CONTROL, "no-store")],
        ApiJson(CreatedPlatformCredential {
            credential: created.into(),
            password,
        }),
    ))
}

/// The platform service credentials, by name, without secrets (platform-admin).
#[utoipa::path(get, path = "/v1/service-credentials", operation_id = "list_platform_credentials", tag = "credentials",
    responses((status = 200, description = "The credentials", body = PlatformCredentialList)))]
pub(crate) async fn list(
    State(state): State<AppState>,
    _admin: AsPlatform,
) -> Result<ApiJson<PlatformCredentialList>, ApiError> {
    let items = state
        .store
        .list_service_credentials(&CredentialScope::Platform)
        .await?
        .into_iter()
        .map(PlatformCredentialView::from)
        .collect();
    Ok(ApiJson(PlatformCredentialList { items }))
}

/// Delete a platform service credential (platform-admin). Its MQTT
/// sessions end (DISCONNECT 0x98 in v5).
#[utoipa::path(delete, path = "/v1/service-credentials/{id}", operation_id = "delete_platform_credential", tag = "credentials",
    params(("id" = String, Path, description = "Credential id")),
    responses((status = 204, description = "Deleted")))]
pub(crate) async fn remove(
    State(state): State<AppState>,
    admin: AsPlatform,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    // The entry names the credential, which only the delete returns.
    let audit = |deleted: &ServiceCredential| {
        admin.audit(
            None,
            "platform_credential.delete",
            target(&id),
            json!({ "name": deleted.name }),
        )
    };
    let deleted = state
        .store
        .delete_service_credential(&CredentialScope::Platform, &id, Some(&audit))
        .await?;
    state
        .changed(Change::PlatformCredentialDeleted { name: deleted.name })
        .await;
    Ok(StatusCode::NO_CONTENT)
}
