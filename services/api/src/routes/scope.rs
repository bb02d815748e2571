//! The tenant (and device) a request is about: its path ids parsed into
//! [`TenantId`] / [`DeviceId`] and the caller authorized for them, in one
//! place, before the handler runs.
//!
//! A handler names what it needs in its signature: `InTenant<Admin>` for
//! `…/tenants/{t}/…` routes, `InDevice<Write>` for `…/devices/{d}…`
//! routes. The answers are those of [`Principal::require`]: 401 without a
//! usable token, 404 (as if missing) for another tenant's id or an id that
//! no resource can have, 403 for a role that lacks the access. The scope
//! also makes the request's audit entries ([`InTenant::audit`]), so every
//! change is recorded with the same actor, tenant and request id.
//!
//! [`TenantPath`] and [`DevicePath`] document the path parameters once, for
//! `#[utoipa::path(params(...))]`.

use std::marker::PhantomData;

use axum::extract::{FromRequestParts, RawPathParams};
use http::request::Parts;
use serde_json::Value;
use store::{DeviceId, NewAuditEntry, TenantId};
use utoipa::IntoParams;

use super::audit::RequestId;
use crate::auth::{Access, Principal};
use crate::{ApiError, AppState};

/// The access a handler needs inside the tenant, as a type.
pub(crate) trait Need: Send + Sync {
    const ACCESS: Access;
}

/// Any role of the tenant.
pub(crate) struct Read;
/// Operator and up (devices and what hangs off them).
pub(crate) struct Write;
/// Tenant-admin and up.
pub(crate) struct Admin;
/// Platform-admin only.
pub(crate) struct Platform;

impl Need for Read {
    const ACCESS: Access = Access::Read;
}
impl Need for Write {
    const ACCESS: Access = Access::WriteDevices;
}
impl Need for Admin {
    const ACCESS: Access = Access::Admin;
}
impl Need for Platform {
    const ACCESS: Access = Access::Platform;
}

/// `{t}` of the path: a tenant the caller may act on with `N`.
pub(crate) struct InTenant<N> {
    pub who: Principal,
    pub tenant: TenantId,
    request_id: RequestId,
    _need: PhantomData<N>,
}

/// `{t}` and `{d}` of the path: a device of a tenant the caller may act on
/// with `N`. Whether the device exists is the store's to say.
pub(crate) struct InDevice<N> {
    pub scope: InTenant<N>,
    pub device: DeviceId,
}

impl<N> InTenant<N> {
    /// The tenant id, for the store's `&str` parameters.
    pub fn t(&self) -> &str {
        self.tenant.as_str()
    }

    /// The audit entry of `action` on `target` in this tenant, by this
    /// caller in this request, for the store's `*_audited` methods (which
    /// write it in the transaction of the change it records).
    pub fn audit(&self, action: &'static str, target: String, details: Value) -> NewAuditEntry {
        entry(
            &self.who,
            &self.request_id,
            Some(self.t()),
            action,
            target,
            details,
        )
    }

    /// Append the [`audit`](Self::audit) entry of a change that has just
    /// succeeded, where it cannot be written in the change's own
    /// transaction (a CA registration, undone when the trust registry
    /// refuses it; a session ended in the broker). A failure fails the
    /// request (500): the change stands but its entry is missing, which the
    /// error log then says.
    pub async fn record(
        &self,
        state: &AppState,
        action: &'static str,
        target: String,
        details: Value,
    ) -> Result<(), ApiError> {
        let entry = self.audit(action, target, details);
        state.store.append_audit(&entry).await?;
        Ok(())
    }
}

impl<N> InDevice<N> {
    pub fn t(&self) -> &str {
        self.scope.t()
    }

    pub fn d(&self) -> &str {
        self.device.as_str()
    }

    /// `tenants/{t}/devices/{d}`: the audit target of the device.
    pub fn target(&self) -> String {
        format!("tenants/{}/devices/{}", self.t(), self.d())
    }

    /// [`InTenant::audit`].
    pub fn audit(&self, action: &'static str, target: String, details: Value) -> NewAuditEntry {
        self.scope.audit(action, target, details)
    }
}

/// A platform-admin caller, for the routes outside any tenant (creating
/// tenants, platform service credentials).
pub(crate) struct AsPlatform {
    pub who: Principal,
    request_id: RequestId,
}

impl AsPlatform {
    /// [`InTenant::audit`] for a change to `tenant`, or to the platform.
    pub fn audit(
        &self,
        tenant: Option<&str>,
        action: &'static str,
        target: String,
        details: Value,
    ) -> NewAuditEntry {
        entry(&self.who, &self.request_id, tenant, action, target, details)
    }
}

fn entry(
    who: &Principal,
    request_id: &RequestId,
    tenant: Option<&str>,
    action: &'static str,
    target: String,
    details: Value,
) -> NewAuditEntry {
    NewAuditEntry {
        tenant_id: tenant.map(str::to_owned),
        actor: who.actor(),
        action: action.to_owned(),
        target,
        request_id: request_id.0.clone(),
        details,
    }
}

impl FromRequestParts<AppState> for AsPlatform {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let who = Principal::from_request_parts(parts, state).await?;
        parts.extensions.insert(who.clone());
        who.require_platform_admin()?;
        let Ok(request_id) = RequestId::from_request_parts(parts, state).await;
        Ok(AsPlatform { who, request_id })
    }
}

impl<N: Need> FromRequestParts<AppState> for InTenant<N> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let who = Principal::from_request_parts(parts, state).await?;
        // Other extractors of the request (and a second scope) reuse it
        // rather than verify the token and count the rate limit again.
        parts.extensions.insert(who.clone());
        let params = path_params(parts, state).await?;
        let raw = param(&params, "t")?;
        // Checked as `require` does for another tenant: a malformed id is
        // no tenant's, so it is answered like one that does not exist.
        let tenant = TenantId::parse(raw).map_err(|_| not_found("tenant", raw))?;
        who.require(tenant.as_str(), N::ACCESS)?;
        let Ok(request_id) = RequestId::from_request_parts(parts, state).await;
        Ok(InTenant {
            who,
            tenant,
            request_id,
            _need: PhantomData,
        })
    }
}

impl<N: Need> FromRequestParts<AppState> for InDevice<N> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let scope = InTenant::<N>::from_request_parts(parts, state).await?;
        let params = path_params(parts, state).await?;
        let raw = param(&params, "d")?;
        let device = DeviceId::parse(raw).map_err(|_| not_found("device", raw))?;
        Ok(InDevice { scope, device })
    }
}

async fn path_params(parts: &mut Parts, state: &AppState) -> Result<RawPathParams, ApiError> {
    RawPathParams::from_request_parts(parts, state)
        .await
        .map_err(|rejection| ApiError::BadRequest(rejection.body_text()))
}

/// The value of path parameter `name`; its absence is a route declared
/// without it, our fault.
fn param<'a>(params: &'a RawPathParams, name: &str) -> Result<&'a str, ApiError> {
    params
        .iter()
        .find_map(|(key, value)| (key == name).then_some(value))
        .ok_or_else(|| ApiError::internal(format!("route has no path parameter {{{name}}}")))
}

fn not_found(resource: &str, raw: &str) -> ApiError {
    ApiError::NotFound {
        resource: resource.to_owned(),
        id: raw.chars().take(140).collect(),
    }
}

/// The `{t}` path parameter (documentation).
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)]
pub(crate) struct TenantPath {
    /// Tenant id
    #[param(pattern = "^[a-z0-9-]{3,63}$")]
    t: String,
}

/// The `{t}` and `{d}` path parameters (documentation).
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)]
pub(crate) struct DevicePath {
    /// Tenant id
    #[param(pattern = "^[a-z0-9-]{3,63}$")]
    t: String,
    /// Device id
    #[param(pattern = "^[A-Za-z0-9._-]{1,128}$")]
    d: String,
}
