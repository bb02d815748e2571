//! `GET /v1/tenants/{t}/audit` and `GET /v1/audit`: the audit log, newest
//! first; and the [`RequestId`] entries name. Mutating handlers make their
//! entries with their scope (`scope::InTenant::audit`).

use axum::extract::FromRequestParts;
use http::request::Parts;
use utoipa_axum::routes;

use crate::model::AuditPage;
use crate::{ApiError, ApiJson, X_REQUEST_ID};

use super::Routes;
use super::query::PageQuery;
use super::scope::{Admin, AsPlatform, InTenant, TenantPath};

pub(crate) fn router() -> Routes {
    Routes::new()
        .routes(routes!(list_all))
        .routes(routes!(list_tenant))
}

/// The `x-request-id` of the exchange (set by the router's middleware).
#[derive(Debug, Clone, Default)]
pub(crate) struct RequestId(pub Option<String>);

impl<S: Send + Sync> FromRequestParts<S> for RequestId {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(RequestId(
            parts
                .headers
                .get(X_REQUEST_ID)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
        ))
    }
}

/// Every tenant's audit entries and platform-level ones, newest first
/// (platform-admin).
#[utoipa::path(get, path = "/v1/audit", operation_id = "list_audit", tag = "audit",
    params(super::PageParams),
    responses((status = 200, description = "A page of entries", body = AuditPage)))]
pub(crate) async fn list_all(
    admin: AsPlatform,
    PageQuery(page): PageQuery,
) -> Result<ApiJson<AuditPage>, ApiError> {
    Ok(ApiJson(admin.store().list_audit(None, &page).await?.into()))
}

/// One tenant's audit entries, newest first (tenant-admin; platform-admin
/// also after the tenant was deleted: the trail outlives it).
#[utoipa::path(get, path = "/v1/tenants/{t}/audit", operation_id = "list_tenant_audit", tag = "audit",
    params(TenantPath, super::PageParams),
    responses((status = 200, description = "A page of entries", body = AuditPage)))]
pub(crate) async fn list_tenant(
    scope: InTenant<Admin>,
    PageQuery(page): PageQuery,
) -> Result<ApiJson<AuditPage>, ApiError> {
    Ok(ApiJson(
        scope
            .store()
            .list_audit(Some(scope.t()), &page)
            .await?
            .into(),
    ))
}
