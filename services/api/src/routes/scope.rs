//! The tenant (and device) a request is about: its path ids parsed into
//! [`TenantId`] / [`DeviceId`] and the caller authorized for them, in one
//! place, before the handler runs.
//!
//! A handler names what it needs in its signature: `InTenant<Admin>` for
//! `…/tenants/{t}/…` routes, `InDevice<Write>` for `…/devices/{d}…`
//! routes, `AsPlatform` for the platform's own; each also carries the
//! [`AppState`] (`store()`, `changed()`), so a handler takes nothing else
//! but its body and query. The answers are those of
//! [`Principal::require`]: 401 without a usable token, 404 (as if missing)
//! for another tenant's id or an id that no resource can have, 403 for a
//! role that lacks the access. The scope
//! also makes the request's audit entries ([`InTenant::audit`]), so every
//! change is recorded with the same actor, tenant and request id.
//!
//! [`TenantPath`] and [`DevicePath`] document the path parameters once, for
//! `#[utoipa::path(params(...))]`.

use std::marker::PhantomData;

use ::events::change::Change;
use axum::extract::{FromRequestParts, RawPathParams};
use http::request::Parts;
use serde_json::Value;
use store::{ChangeEvent, DeviceId, NewAuditEntry, Store, TenantId};
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

/// `{t}` of the path: a tenant the caller may act on with `N`, and the
/// app to act with (so a handler needs no other extractor for it).
pub(crate) struct InTenant<N> {
    pub who: Principal,
    pub tenant: TenantId,
    request_id: RequestId,
    state: AppState,
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

    pub fn state(&self) -> &AppState {
        &self.state
    }

    pub fn store(&self) -> &Store {
        &self.state.store
    }

    /// [`t`](Self::t) once the store has the tenant (404 otherwise), for
    /// the routes whose answer would not say by itself that it is missing
    /// (an empty list, settings that default).
    pub async fn existing(&self) -> Result<&str, ApiError> {
        self.store().get_tenant(self.t()).await?;
        Ok(self.t())
    }

    /// [`AppState::changed`]: tell live sessions, after the commit.
    pub async fn changed(&self, change: Change) {
        self.state.changed(change).await;
    }

    /// [`changed`](Self::changed) with a change that names this tenant
    /// only, made from its id (`|tenant| Change::PoliciesChanged { tenant }`).
    pub async fn tenant_changed(&self, change: impl FnOnce(String) -> Change) {
        self.changed(change(self.t().to_owned())).await;
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

    /// `event` of this tenant, not about one device, for
    /// [`NewAuditEntry::with_event`]: written with the change's entry.
    pub fn event(&self, event: ::events::Event) -> ChangeEvent {
        ChangeEvent {
            tenant_id: self.t().to_owned(),
            device_id: None,
            event,
        }
    }

    /// `event` of this tenant's device `d` (numbered in its sequence).
    pub fn device_event(&self, d: &str, event: ::events::Event) -> ChangeEvent {
        ChangeEvent {
            device_id: Some(d.to_owned()),
            ..self.event(event)
        }
    }

    /// Append the [`audit`](Self::audit) entry of a change that has just
    /// succeeded, where it cannot be written in the change's own
    /// transaction (a CA registration, undone when the trust registry
    /// refuses it; a session ended in the broker). A failure fails the
    /// request (500): the change stands but its entry is missing, which the
    /// error log then says.
    pub async fn record(
        &self,
        action: &'static str,
        target: String,
        details: Value,
    ) -> Result<(), ApiError> {
        let entry = self.audit(action, target, details);
        self.store().append_audit(&entry).await?;
        Ok(())
    }
}

impl<N> InDevice<N> {
    pub fn t(&self) -> &str {
        self.scope.t()
    }

    pub fn state(&self) -> &AppState {
        self.scope.state()
    }

    pub fn store(&self) -> &Store {
        self.scope.store()
    }

    /// [`AppState::changed`].
    pub async fn changed(&self, change: Change) {
        self.scope.changed(change).await;
    }

    /// [`changed`](Self::changed) with a change that names this device
    /// only, made from its tenant and device ids.
    pub async fn device_changed(&self, change: impl FnOnce(String, String) -> Change) {
        self.changed(change(self.t().to_owned(), self.d().to_owned()))
            .await;
    }

    pub fn d(&self) -> &str {
        self.device.as_str()
    }

    /// [`t`](Self::t) and [`d`](Self::d) once the store has the device
    /// (404 otherwise), for the routes whose answer would not say by
    /// itself that it is missing.
    pub async fn existing(&self) -> Result<(&str, &str), ApiError> {
        self.store().get_device(self.t(), self.d()).await?;
        Ok((self.t(), self.d()))
    }

    /// `tenants/{t}/devices/{d}`: the audit target of the device.
    pub fn target(&self) -> String {
        format!("tenants/{}/devices/{}", self.t(), self.d())
    }

    /// [`InTenant::audit`].
    pub fn audit(&self, action: &'static str, target: String, details: Value) -> NewAuditEntry {
        self.scope.audit(action, target, details)
    }

    /// `event` of this device, for [`NewAuditEntry::with_event`].
    pub fn event(&self, event: ::events::Event) -> ChangeEvent {
        self.scope.device_event(self.d(), event)
    }
}

/// A platform-admin caller, for the routes outside any tenant (creating
/// tenants, platform service credentials).
pub(crate) struct AsPlatform {
    pub who: Principal,
    request_id: RequestId,
    state: AppState,
}

impl AsPlatform {
    pub fn state(&self) -> &AppState {
        &self.state
    }

    pub fn store(&self) -> &Store {
        &self.state.store
    }

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
        events: Vec::new(),
    }
}

impl FromRequestParts<AppState> for AsPlatform {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let who = Principal::from_request_parts(parts, state).await?;
        parts.extensions.insert(who.clone());
        who.require_platform_admin()?;
        let Ok(request_id) = RequestId::from_request_parts(parts, state).await;
        Ok(AsPlatform {
            who,
            request_id,
            state: state.clone(),
        })
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
            state: state.clone(),
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use axum::Router;
    use axum::body::Body;
    use axum::routing::get;
    use http::Request;

    use super::*;
    use crate::auth::{Keys, Role};
    use crate::test_support::{self, body_json, problem, send};
    use crate::{ApiJson, HttpLimits};

    /// What a handler got from its scope: the ids and the entry it makes.
    async fn tenant_admin(scope: InTenant<Admin>) -> ApiJson<NewAuditEntry> {
        ApiJson(scope.audit("x.do", format!("tenants/{}", scope.t()), Value::Null))
    }

    async fn device_writer(at: InDevice<Write>) -> String {
        format!("{}/{}", at.t(), at.d())
    }

    async fn platform(admin: AsPlatform) -> ApiJson<NewAuditEntry> {
        ApiJson(admin.audit(None, "x.platform", "platform".to_owned(), Value::Null))
    }

    struct Fixture {
        app: Router,
        keys: Keys,
        _s: test_support::TestState,
    }

    impl Fixture {
        async fn new() -> Fixture {
            let s = test_support::state().await;
            let keys = Keys::load_or_create(&s.state.store).await.unwrap();
            let state = s.state.clone().with_keys(keys.clone());
            let routes = Router::new()
                .route("/v1/tenants/{t}/x", get(tenant_admin))
                .route("/v1/tenants/{t}/devices/{d}/x", get(device_writer))
                .route("/v1/x", get(platform));
            let app = crate::router::with_api(state, &HttpLimits::default(), routes);
            Fixture { app, keys, _s: s }
        }

        async fn get(&self, uri: &str, role: Role, tenant: &str) -> axum::response::Response {
            let tenant = (role != Role::PlatformAdmin).then(|| TenantId::parse(tenant).unwrap());
            let token = self
                .keys
                .issue_for("tester", role, tenant.as_ref(), Duration::from_secs(60))
                .unwrap();
            let req = Request::get(uri)
                .header("authorization", format!("Bearer {token}"))
                .header("x-request-id", "req-1")
                .body(Body::empty())
                .unwrap();
            send(&self.app, req).await
        }
    }

    #[tokio::test]
    async fn tenant_scope_authorizes_and_audits() {
        let f = Fixture::new().await;
        let response = f.get("/v1/tenants/acme/x", Role::TenantAdmin, "acme").await;
        assert_eq!(response.status(), 200);
        let entry = body_json(response).await;
        assert_eq!(entry["tenant_id"], "acme");
        assert_eq!(entry["actor"], "tenant-admin:tester");
        assert_eq!(entry["action"], "x.do");
        assert_eq!(entry["target"], "tenants/acme");
        assert_eq!(entry["request_id"], "req-1");

        let response = f.get("/v1/tenants/acme/x", Role::PlatformAdmin, "").await;
        assert_eq!(response.status(), 200);

        // A role without the access: 403.
        let body = problem(f.get("/v1/tenants/acme/x", Role::Viewer, "acme").await, 403).await;
        assert_eq!(body["type"], "https://fleetmq.dev/problems/forbidden");
        // Another tenant, and an id no tenant can have: 404, as if missing.
        for uri in ["/v1/tenants/other/x", "/v1/tenants/Not%20An%20Id/x"] {
            let body = problem(f.get(uri, Role::TenantAdmin, "acme").await, 404).await;
            assert_eq!(body["type"], "https://fleetmq.dev/problems/not-found");
        }
        problem(
            f.get("/v1/tenants/AB/x", Role::PlatformAdmin, "").await,
            404,
        )
        .await;

        let req = Request::get("/v1/tenants/acme/x")
            .body(Body::empty())
            .unwrap();
        problem(send(&f.app, req).await, 401).await;
    }

    #[tokio::test]
    async fn device_scope_parses_the_device_id() {
        let f = Fixture::new().await;
        let uri = "/v1/tenants/acme/devices/s-1.a_b/x";
        let response = f.get(uri, Role::Operator, "acme").await;
        assert_eq!(response.status(), 200);
        assert_eq!(test_support::body_bytes(response).await, b"acme/s-1.a_b");

        problem(f.get(uri, Role::Viewer, "acme").await, 403).await;
        problem(f.get(uri, Role::Operator, "other").await, 404).await;
        let bad = "/v1/tenants/acme/devices/a%2Fb/x";
        let body = problem(f.get(bad, Role::Operator, "acme").await, 404).await;
        assert!(
            body["detail"].as_str().unwrap().contains("device"),
            "{body}"
        );
    }

    #[tokio::test]
    async fn platform_scope_is_for_platform_admins() {
        let f = Fixture::new().await;
        let response = f.get("/v1/x", Role::PlatformAdmin, "").await;
        let entry = body_json(response).await;
        assert_eq!(entry["tenant_id"], Value::Null);
        assert_eq!(entry["actor"], "platform-admin:tester");
        problem(f.get("/v1/x", Role::TenantAdmin, "acme").await, 403).await;
    }
}
