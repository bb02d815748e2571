//! `GET /v1/tenants/{t}/audit` and `GET /v1/audit`: the audit log, newest
//! first; and [`entry`] and [`record`], with which mutating handlers make
//! their entries.

use axum::Router;
use axum::extract::{FromRequestParts, Path, RawQuery, State};
use axum::routing::get;
use http::request::Parts;
use serde_json::Value;
use store::NewAuditEntry;

use crate::auth::{Access, Principal};
use crate::model::AuditPage;
use crate::{ApiError, ApiJson, AppState, X_REQUEST_ID};

use super::query;

pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/audit", get(list_all))
        .route("/v1/tenants/{t}/audit", get(list_tenant))
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

/// What a mutating handler records.
pub(crate) struct Event<'a> {
    pub tenant: Option<&'a str>,
    /// e.g. `device.create`.
    pub action: &'static str,
    /// e.g. `tenants/acme/devices/s-1`.
    pub target: String,
    pub details: Value,
}

/// The audit entry of `event`, done by `who` in request `request_id`, for
/// the store methods that take one (`*_audited`, or an `audit` parameter),
/// which write it in the same transaction as the change it records.
pub(crate) fn entry(who: &Principal, request_id: &RequestId, event: Event<'_>) -> NewAuditEntry {
    NewAuditEntry {
        tenant_id: event.tenant.map(str::to_owned),
        actor: who.actor(),
        action: event.action.to_owned(),
        target: event.target,
        request_id: request_id.0.clone(),
        details: event.details,
    }
}

/// [`entry`] for `action` on `target` in tenant `tenant`.
pub(crate) fn tenant_entry(
    who: &Principal,
    request_id: &RequestId,
    tenant: &str,
    action: &'static str,
    target: String,
    details: Value,
) -> NewAuditEntry {
    let event = Event {
        tenant: Some(tenant),
        action,
        target,
        details,
    };
    entry(who, request_id, event)
}

/// Append an audit entry for a mutation that has just succeeded, where its
/// entry cannot be written in the mutation's own transaction (CA
/// registration, which is undone when the trust registry refuses the CA).
///
/// A failure here fails the request (500): the mutation stands but its
/// entry is missing, which the error log then says.
pub(crate) async fn record(
    state: &AppState,
    who: &Principal,
    request_id: &RequestId,
    event: Event<'_>,
) -> Result<(), ApiError> {
    state
        .store
        .append_audit(&entry(who, request_id, event))
        .await?;
    Ok(())
}

/// Every tenant's audit entries and platform-level ones, newest first
/// (platform-admin).
#[utoipa::path(get, path = "/v1/audit", operation_id = "list_audit", tag = "audit",
    params(super::PageParams),
    responses((status = 200, description = "A page of entries", body = AuditPage)))]
pub(crate) async fn list_all(
    State(state): State<AppState>,
    who: Principal,
    RawQuery(raw): RawQuery,
) -> Result<ApiJson<AuditPage>, ApiError> {
    who.require_platform_admin()?;
    let q = query::parse(raw.as_deref(), &[], &[])?;
    Ok(ApiJson(state.store.list_audit(None, &q.page).await?.into()))
}

/// One tenant's audit entries, newest first (tenant-admin; platform-admin
/// also after the tenant was deleted: the trail outlives it).
#[utoipa::path(get, path = "/v1/tenants/{t}/audit", operation_id = "list_tenant_audit", tag = "audit",
    params(("t" = String, Path, description = "Tenant id", pattern = "^[a-z0-9-]{3,63}$"), super::PageParams),
    responses((status = 200, description = "A page of entries", body = AuditPage)))]
pub(crate) async fn list_tenant(
    State(state): State<AppState>,
    who: Principal,
    Path(t): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<ApiJson<AuditPage>, ApiError> {
    who.require(&t, Access::Admin)?;
    let q = query::parse(raw.as_deref(), &[], &[])?;
    Ok(ApiJson(
        state.store.list_audit(Some(&t), &q.page).await?.into(),
    ))
}
