//! Bring-your-own CA (tenant-admin): a tenant that runs its own PKI gets a
//! single-use registration code (`POST /v1/tenants/{t}/ca/registration-code`),
//! signs a verification certificate with CN = code using its CA key, and
//! registers the CA with both certificates (`POST /v1/tenants/{t}/cas`).
//! Devices with certificates from it are then accepted. `GET …/cas` lists
//! every CA of the tenant (any role); `DELETE …/cas/{key_id}` removes a
//! registered one and ends the tenant's certificate sessions.
//!
//! Just-in-time registration (`jit_registration` on register, or `PATCH
//! …/cas/{key_id}`): a device presenting a certificate from the CA whose
//! device id is not registered yet is created on its first connect
//! (audited as `device.create` by `mqtt:jit-registration`, with a
//! `device.created` event) instead of refused.

use ::events::change::Change;
use axum::extract::Path;
use axum::http::StatusCode;
use chrono::{DateTime, Duration, Utc};
use pki::{CaKind, RegistrationCode};
use serde::{Deserialize, Serialize};
use serde_json::json;
use store::{NewTenantCa, TenantCaKind};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::routes;

use super::Routes;
use super::openapi::{PkiUnconfigured, PlatformCa};
use super::scope::{Admin, InTenant, Read, TenantPath};
use crate::model::item_list;
use crate::{ApiError, ApiJson};

/// How long a registration code can be used.
const CODE_VALIDITY_HOURS: i64 = 24;

pub(crate) fn router() -> Routes {
    Routes::new()
        .routes(routes!(new_code))
        .routes(routes!(list, register))
        .routes(routes!(remove, update))
}

/// The `{key_id}` of a CA's path.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub(crate) struct CaPath {
    /// Hex subject key identifier
    key_id: String,
}

/// A single-use code for the CN of a verification certificate.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct RegistrationCodeView {
    code: String,
    expires_at: DateTime<Utc>,
}

/// A CA to register, with proof that the caller holds its key.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RegisterCa {
    /// The CA certificate, PEM (CA:TRUE, a subject key identifier, valid now).
    ca_pem: String,
    /// A certificate signed by the CA's key whose CN is `code`, PEM.
    verification_pem: String,
    /// The registration code from `POST …/ca/registration-code`.
    code: String,
    /// Create a device on the first connect of a certificate from this CA
    /// whose device does not exist yet (default false: refused).
    #[serde(default)]
    jit_registration: bool,
}

/// Changes to a registered CA.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PatchCa {
    /// Just-in-time registration of unknown devices on first connect.
    jit_registration: bool,
}

/// A CA of the tenant.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct TenantCaView {
    /// Hex subject key identifier.
    key_id: String,
    /// `issued` (by the platform) or `registered` (bring your own).
    #[schema(pattern = "^(issued|registered)$")]
    kind: String,
    subject: String,
    fingerprint_sha256: String,
    not_after: DateTime<Utc>,
    #[schema(pattern = "^(active|disabled)$")]
    status: String,
    certificate_pem: String,
    created_at: DateTime<Utc>,
    /// Unknown devices with certificates from this CA are created on their
    /// first connect (registered CAs only).
    jit_registration: bool,
}

impl From<store::TenantCa> for TenantCaView {
    fn from(ca: store::TenantCa) -> Self {
        TenantCaView {
            key_id: ca.subject_key_id,
            kind: ca.kind.as_str().to_owned(),
            subject: ca.subject,
            fingerprint_sha256: ca.fingerprint,
            not_after: ca.not_after,
            status: ca.status.as_str().to_owned(),
            certificate_pem: ca.cert_pem,
            created_at: ca.created_at,
            jit_registration: ca.jit_registration,
        }
    }
}

item_list!(pub(crate) TenantCaList, TenantCaView, "A tenant's CAs.");

/// Make a registration code (tenant-admin), valid for 24 hours, single use.
#[utoipa::path(post, path = "/v1/tenants/{t}/ca/registration-code", operation_id = "create_ca_registration_code", tag = "pki",
    params(TenantPath),
    responses((status = 201, description = "The code", body = RegistrationCodeView)))]
pub(crate) async fn new_code(
    scope: InTenant<Admin>,
) -> Result<(StatusCode, ApiJson<RegistrationCodeView>), ApiError> {
    let t = scope.t();
    let code = RegistrationCode::generate().map_err(ApiError::internal)?;
    let expires_at = Utc::now() + Duration::hours(CODE_VALIDITY_HOURS);
    let audit = scope.audit(
        "ca.registration_code",
        format!("tenants/{t}/cas"),
        json!({ "expires_at": expires_at }),
    );
    scope
        .store()
        .create_ca_registration_code(t, code.as_str(), expires_at, Some(&audit))
        .await?;
    Ok((
        StatusCode::CREATED,
        ApiJson(RegistrationCodeView {
            code: code.as_str().to_owned(),
            expires_at,
        }),
    ))
}

/// Register a CA with proof of possession (tenant-admin). The code is used
/// up by a successful registration.
#[utoipa::path(post, path = "/v1/tenants/{t}/cas", operation_id = "register_ca", tag = "pki",
    params(TenantPath),
    request_body = RegisterCa,
    responses(
        (status = 201, description = "The registered CA", body = TenantCaView),
        (status = 409, description = "This CA is registered already (here or for another tenant)",
         body = crate::Problem, content_type = "application/problem+json"),
        PkiUnconfigured,
    ))]
pub(crate) async fn register(
    scope: InTenant<Admin>,
    ApiJson(body): ApiJson<RegisterCa>,
) -> Result<(StatusCode, ApiJson<TenantCaView>), ApiError> {
    let t = scope.t();
    let pki = scope.state().pki()?;
    let now = Utc::now();
    let code = RegistrationCode::from_stored(body.code.clone());
    let registered = pki::verify_ca_registration(&body.ca_pem, &body.verification_pem, &code, now)
        .map_err(|e| ApiError::invalid_field("", e.to_string()))?;
    if !scope
        .store()
        .take_ca_registration_code(t, &body.code, now)
        .await?
    {
        return Err(ApiError::invalid_field(
            "/code",
            "unknown, used or expired registration code",
        ));
    }
    let new = NewTenantCa {
        subject_key_id: hex::encode(&registered.subject_key_id),
        tenant_id: t.to_owned(),
        kind: TenantCaKind::Registered,
        cert_pem: registered.cert_pem.clone(),
        sealed_key: None,
        subject: registered.subject.to_owned(),
        fingerprint: pki::fingerprint_sha256(&registered.cert_der),
        not_after: registered.not_after,
    };
    let mut stored = scope.store().create_tenant_ca(&new).await?;
    if body.jit_registration {
        stored = scope
            .store()
            .set_tenant_ca_jit(t, &new.subject_key_id, true, None)
            .await?;
    }
    if let Err(e) = pki
        .trust()
        .add_ca(t, CaKind::Registered, registered.cert_der)
    {
        // Stored but not trusted would list a CA that does not work: undo.
        scope
            .store()
            .delete_tenant_ca(t, &new.subject_key_id, None)
            .await?;
        return Err(match e {
            pki::Error::CaTaken { .. } => ApiError::Conflict(e.to_string()),
            other => ApiError::internal(other),
        });
    }
    // Recorded on its own, after the trust set took the CA: an entry
    // committed with the row would outlive the undo above.
    scope
        .record(
            "ca.register",
            format!("tenants/{t}/cas/{}", new.subject_key_id),
            json!({ "subject": new.subject, "jit_registration": body.jit_registration }),
        )
        .await?;
    // Trusted here already; the other nodes read it from the store.
    scope
        .tenant_changed(|tenant| Change::TenantCaAdded { tenant })
        .await;
    Ok((StatusCode::CREATED, ApiJson(stored.into())))
}

/// The tenant's CAs, platform-issued and registered (any role of the tenant).
#[utoipa::path(get, path = "/v1/tenants/{t}/cas", operation_id = "list_cas", tag = "pki",
    params(TenantPath),
    responses((status = 200, description = "The CAs", body = TenantCaList)))]
pub(crate) async fn list(scope: InTenant<Read>) -> Result<ApiJson<TenantCaList>, ApiError> {
    let t = scope.existing().await?;
    Ok(ApiJson(
        scope.store().list_tenant_cas(Some(t)).await?.into(),
    ))
}

/// Remove a registered CA (tenant-admin); its certificates are refused from
/// then on. The platform-issued CA cannot be removed (409).
#[utoipa::path(delete, path = "/v1/tenants/{t}/cas/{key_id}", operation_id = "delete_ca", tag = "pki",
    params(TenantPath, CaPath),
    responses(
        (status = 204, description = "Removed"),
        PlatformCa,
    ))]
pub(crate) async fn remove(
    scope: InTenant<Admin>,
    Path(CaPath { key_id }): Path<CaPath>,
) -> Result<StatusCode, ApiError> {
    let t = scope.t();
    let ca = scope.store().get_tenant_ca(t, &key_id).await?;
    if ca.kind == TenantCaKind::Issued {
        return Err(ApiError::Conflict(
            "the platform-issued tenant CA cannot be removed".to_owned(),
        ));
    }
    let audit = scope.audit("ca.delete", format!("tenants/{t}/cas/{key_id}"), json!({}));
    scope
        .store()
        .delete_tenant_ca(t, &key_id, Some(&audit))
        .await?;
    // The trust set forgets it (`PkiChanges`), then its sessions end.
    scope
        .changed(Change::TenantCaRemoved {
            tenant: t.to_owned(),
            key_id,
        })
        .await;
    Ok(StatusCode::NO_CONTENT)
}

/// Turn just-in-time registration of a registered CA on or off
/// (tenant-admin). The platform-issued CA has no such switch (409).
#[utoipa::path(patch, path = "/v1/tenants/{t}/cas/{key_id}", operation_id = "update_ca", tag = "pki",
    params(TenantPath, CaPath),
    request_body = PatchCa,
    responses(
        (status = 200, description = "The CA", body = TenantCaView),
        PlatformCa,
    ))]
pub(crate) async fn update(
    scope: InTenant<Admin>,
    Path(CaPath { key_id }): Path<CaPath>,
    ApiJson(body): ApiJson<PatchCa>,
) -> Result<ApiJson<TenantCaView>, ApiError> {
    let t = scope.t();
    let ca = scope.store().get_tenant_ca(t, &key_id).await?;
    if ca.kind == TenantCaKind::Issued {
        return Err(ApiError::Conflict(
            "just-in-time registration is for registered CAs; the platform-issued CA's devices are registered before issuance".to_owned(),
        ));
    }
    let audit = scope.audit(
        "ca.update",
        format!("tenants/{t}/cas/{key_id}"),
        json!({ "jit_registration": body.jit_registration }),
    );
    let stored = scope
        .store()
        .set_tenant_ca_jit(t, &key_id, body.jit_registration, Some(&audit))
        .await?;
    Ok(ApiJson(stored.into()))
}
