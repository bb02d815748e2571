//! `/v1/tenants`: create and list (platform-admin), read (any role of the
//! tenant), update with a JSON merge patch (tenant-admin), delete
//! (platform-admin; deletes the tenant's devices too).

use ::events::change::Change;
use axum::http::StatusCode;
use http::HeaderMap;
use http::header::IF_MATCH;
use serde::Deserialize;
use serde_json::json;
use store::{NewTenant, TenantId, TenantPatch};
use utoipa::ToSchema;
use utoipa_axum::routes;

use super::etag::{ETag, tagged};
use super::openapi::StaleVersion;
use super::query::PageQuery;
use super::scope::{Admin, AsPlatform, InTenant, Platform, Read, TenantPath};
use super::{Routes, nullable, validate};
use crate::model::{Tenant, TenantPage};
use crate::{ApiError, ApiJson, FieldError};

pub(crate) fn router() -> Routes {
    Routes::new()
        .routes(routes!(list, create))
        .routes(routes!(read, update, remove))
}

/// A new tenant.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateTenant {
    /// `[a-z0-9-]{3,63}`; substituted into topics, certificates and URLs.
    #[schema(example = "acme", pattern = "^[a-z0-9-]{3,63}$")]
    id: String,
    /// 1 to 200 characters, no control characters.
    #[schema(
        example = "Acme Corp",
        pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]{1,200}$"
    )]
    name: String,
}

/// Changes to a tenant, as a JSON merge patch (RFC 7396): members left out
/// stay as they are.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PatchTenant {
    /// The new name (cannot be removed).
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = String, pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]{1,200}$")]
    name: Option<Option<String>>,
}

/// Create a tenant (platform-admin). Honours `Idempotency-Key`.
#[utoipa::path(post, path = "/v1/tenants", operation_id = "create_tenant", tag = "tenants",
    params(super::IdempotencyKeyHeader),
    request_body = CreateTenant,
    responses(
        (status = 201, description = "The tenant", body = Tenant),
        (status = 409, description = "A tenant with this id exists, or the first request with this Idempotency-Key is still running", body = crate::Problem,
         content_type = "application/problem+json"),
    ))]
pub(crate) async fn create(
    admin: AsPlatform,
    ApiJson(body): ApiJson<CreateTenant>,
) -> Result<(StatusCode, ApiJson<Tenant>), ApiError> {
    let mut errors = Vec::new();
    if let Err(e) = TenantId::parse(&body.id) {
        errors.push(FieldError::new("/id", id_detail(&e)));
    }
    validate::name(&body.name, "/name", &mut errors);
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let audit = admin.audit(
        Some(&body.id),
        "tenant.create",
        target(&body.id),
        json!({ "name": body.name }),
    );
    let new = NewTenant {
        id: body.id,
        name: body.name,
    };
    let tenant = admin.store().create_tenant_audited(&new, &audit).await?;
    if admin.state().pki.is_some() {
        // The tenant stands without it: the CA is made on first need then.
        if let Err(e) = admin.state().tenant_ca(&tenant.id).await {
            tracing::warn!(tenant = %tenant.id, error = %e, "tenant CA not created yet");
        }
    }
    Ok((StatusCode::CREATED, ApiJson(tenant.into())))
}

/// List tenants in id order (platform-admin).
#[utoipa::path(get, path = "/v1/tenants", operation_id = "list_tenants", tag = "tenants",
    params(super::PageParams),
    responses((status = 200, description = "A page of tenants", body = TenantPage)))]
pub(crate) async fn list(
    admin: AsPlatform,
    PageQuery(page): PageQuery,
) -> Result<ApiJson<TenantPage>, ApiError> {
    Ok(ApiJson(admin.store().list_tenants(&page).await?.into()))
}

/// Read a tenant (any role of the tenant). The `ETag` names this version,
/// for `If-Match` on a later update.
#[utoipa::path(get, path = "/v1/tenants/{t}", operation_id = "get_tenant", tag = "tenants",
    params(TenantPath),
    responses((status = 200, description = "The tenant", body = Tenant,
        headers(("ETag" = String, description = "This version of the tenant")))))]
pub(crate) async fn read(scope: InTenant<Read>) -> Result<(ETag, ApiJson<Tenant>), ApiError> {
    tagged(scope.store().get_tenant(scope.t()).await?.into())
}

/// Update a tenant with a JSON merge patch (tenant-admin). With
/// `If-Match`, only if the tenant is still the version that `ETag` names.
#[utoipa::path(patch, path = "/v1/tenants/{t}", operation_id = "update_tenant", tag = "tenants",
    params(TenantPath, super::IfMatchHeader),
    request_body(content = PatchTenant, content_type = "application/merge-patch+json"),
    responses(
        (status = 200, description = "The updated tenant", body = Tenant,
         headers(("ETag" = String, description = "The new version of the tenant"))),
        StaleVersion,
    ))]
pub(crate) async fn update(
    scope: InTenant<Admin>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<PatchTenant>,
) -> Result<(ETag, ApiJson<Tenant>), ApiError> {
    let t = scope.t();
    // With If-Match: compare with the current version, and update only if
    // it is still that version when the write happens.
    let unchanged_since = if headers.contains_key(IF_MATCH) {
        let current = scope.store().get_tenant(t).await?;
        let read_at = current.updated_at;
        ETag::of(&Tenant::from(current))?.check_if_match(&headers)?;
        Some(read_at)
    } else {
        None
    };
    let name = match body.name {
        None => None,
        Some(None) => return Err(ApiError::invalid_field("/name", "name cannot be removed")),
        Some(Some(name)) => {
            let mut errors = Vec::new();
            validate::name(&name, "/name", &mut errors);
            if !errors.is_empty() {
                return Err(ApiError::Validation(errors));
            }
            Some(name)
        }
    };
    let audit = scope.audit("tenant.update", target(t), json!({ "name": name }));
    let tenant = scope
        .store()
        .update_tenant_audited(t, &TenantPatch { name }, unchanged_since, &audit)
        .await?;
    tagged(tenant.into())
}

/// Delete a tenant and all its devices (platform-admin).
#[utoipa::path(delete, path = "/v1/tenants/{t}", operation_id = "delete_tenant", tag = "tenants",
    params(TenantPath),
    responses((status = 204, description = "Deleted")))]
pub(crate) async fn remove(scope: InTenant<Platform>) -> Result<StatusCode, ApiError> {
    let t = scope.t();
    let audit = scope.audit("tenant.delete", target(t), json!({}));
    scope.store().delete_tenant_audited(t, &audit).await?;
    // A tenant created again under this id must not inherit the dashboard's
    // lifecycle history either (its audit trail and tokens are kept apart
    // by the tenant's incarnation).
    scope
        .state()
        .fleet_stats
        .forget_tenant(t, chrono::Utc::now());
    // Its sessions end, its CAs and webhook routes go, on every node.
    scope
        .tenant_changed(|tenant| Change::TenantDeleted { tenant })
        .await;
    Ok(StatusCode::NO_CONTENT)
}

/// The audit target of tenant `t`.
fn target(t: &str) -> String {
    format!("tenants/{t}")
}

/// An id error, without repeating the id back.
pub(crate) fn id_detail(e: &ids::InvalidId) -> String {
    format!("{} id must be {}", e.kind, e.expected)
}
