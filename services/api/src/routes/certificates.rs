//! Device certificates: issue (server-made key or CSR), list, revoke one,
//! and revocation floors ("every certificate issued before …") per device
//! and per tenant. Issuing and revoking need operator or tenant-admin;
//! listing any role of the tenant. Private keys are returned once and
//! never logged or stored.

use std::str::FromStr;

use ::events as catalogue;
use ::events::change::Change;
use ::events::payload::{CertificateIssued, CertificateRevoked, KeySource, RevocationScope};
use axum::extract::Path;
use chrono::{DateTime, Duration, Utc};
use pki::{DeviceCertParams, DeviceKey, RevocationReason};
use serde::{Deserialize, Serialize};
use serde_json::json;
use store::{DeviceCertificate, NewDeviceCertificate};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::routes;

use super::Routes;
use super::openapi::PkiUnconfigured;
use super::scope::{DevicePath, InDevice, InTenant, Read, TenantPath, Write};
use crate::model::item_list;
use crate::{ApiError, ApiJson, AppState, ShownOnce};

pub(crate) fn router() -> Routes {
    Routes::new()
        .routes(routes!(list, issue))
        .routes(routes!(revoke))
        .routes(routes!(device_floor))
        .routes(routes!(tenant_floor))
}

/// The `{serial}` of a certificate's path.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub(crate) struct SerialPath {
    /// Serial, hex
    serial: String,
}

/// `{}` for a server-made ECDSA P-256 key (returned once), or a CSR whose
/// public key is used (ECDSA P-256/P-384, Ed25519 or RSA ≥ 2048; its
/// subject and extensions are ignored).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct IssueCertificate {
    /// A PEM PKCS#10 certificate request.
    #[serde(default)]
    csr_pem: Option<String>,
    /// Days of validity; default from the server's configuration, capped
    /// by its maximum.
    #[serde(default)]
    #[schema(minimum = 1)]
    validity_days: Option<u32>,
}

/// A newly issued certificate. `private_key_pem` only when the server made
/// the key: it is not kept, so save it now.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct IssuedCertificate {
    /// Hex, no leading zeros.
    serial: String,
    certificate_pem: String,
    /// Tenant CA, then root.
    chain_pem: String,
    /// PKCS#8 PEM; absent for a CSR.
    #[serde(skip_serializing_if = "Option::is_none")]
    private_key_pem: Option<String>,
    not_before: DateTime<Utc>,
    not_after: DateTime<Utc>,
    /// Hex SHA-256 of the DER certificate.
    fingerprint_sha256: String,
}

/// A certificate as listed (no key, no PEM).
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Certificate {
    serial: String,
    fingerprint_sha256: String,
    /// Hex subject key identifier of the issuing CA.
    issuer_key_id: String,
    not_before: DateTime<Utc>,
    not_after: DateTime<Utc>,
    /// `active` or `revoked` (expiry is read from `not_after`).
    #[schema(pattern = "^(active|revoked)$")]
    status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    revoked_at: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    revocation_reason: Option<String>,
    created_at: DateTime<Utc>,
}

impl From<DeviceCertificate> for Certificate {
    fn from(c: DeviceCertificate) -> Self {
        Certificate {
            serial: c.serial,
            fingerprint_sha256: c.fingerprint,
            issuer_key_id: c.issuer_key_id,
            not_before: c.not_before,
            not_after: c.not_after,
            status: c.status.as_str().to_owned(),
            revoked_at: c.revoked_at,
            revocation_reason: c.revocation_reason,
            created_at: c.created_at,
        }
    }
}

item_list!(pub(crate) CertificateList, Certificate, "A device's certificates, oldest first.");

/// Why a certificate is revoked.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RevokeCertificate {
    /// Default `unspecified`.
    #[serde(default)]
    #[schema(
        pattern = "^(unspecified|key_compromise|ca_compromise|affiliation_changed|superseded|cessation_of_operation|privilege_withdrawn)$"
    )]
    reason: Option<String>,
}

/// A revocation floor: certificates issued before `before` are refused.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RevokeBefore {
    /// Default now; not in the future.
    #[serde(default)]
    before: Option<DateTime<Utc>>,
}

/// The floor that was set.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Floor {
    before: DateTime<Utc>,
}

/// Issue a certificate for a device (operator, tenant-admin). The response
/// carries `Cache-Control: no-store`.
#[utoipa::path(post, path = "/v1/tenants/{t}/devices/{d}/certificates", operation_id = "issue_certificate", tag = "pki",
    params(DevicePath),
    request_body = IssueCertificate,
    responses(
        (status = 201, description = "The certificate (and key, for `{}`)", body = IssuedCertificate),
        (status = 400, description = "The CSR is malformed, its signature does not verify, or its key type is not accepted",
         body = crate::Problem, content_type = "application/problem+json"),
        PkiUnconfigured,
    ))]
pub(crate) async fn issue(
    at: InDevice<Write>,
    ApiJson(body): ApiJson<IssueCertificate>,
) -> Result<ShownOnce<IssuedCertificate>, ApiError> {
    let (t, d) = (at.t(), at.d());
    let pki = at.state().pki()?;
    at.store().get_device(t, d).await?;
    let validity = match body.validity_days {
        None => pki.default_validity,
        Some(0) => {
            return Err(ApiError::invalid_field(
                "/validity_days",
                "must be at least 1",
            ));
        }
        Some(days) => Duration::days(i64::from(days)),
    };
    let ca = at.state().tenant_ca(t).await?;
    let key = match body.csr_pem.as_deref() {
        Some(pem) => DeviceKey::Csr(pem),
        None => DeviceKey::Generate,
    };
    let params = DeviceCertParams {
        trust_domain: pki.trust_domain(),
        device: d,
        validity,
        max_validity: pki.max_validity,
        now: Utc::now(),
    };
    let issued = ca.issue_device_cert(&params, key).map_err(|e| match e {
        pki::Error::Csr(reason) => ApiError::BadRequest(format!("csr_pem: {reason}")),
        other => ApiError::internal(other),
    })?;
    let new = NewDeviceCertificate {
        tenant_id: t.to_owned(),
        device_id: d.to_owned(),
        serial: issued.serial.clone(),
        fingerprint: issued.fingerprint_sha256.clone(),
        issuer_key_id: hex::encode(ca.subject_key_id()),
        not_before: issued.not_before,
        not_after: issued.not_after,
    };
    let audit = at
        .audit(
            "certificate.issue",
            target(t, d, &issued.serial),
            json!({
                "key": if body.csr_pem.is_some() { "csr" } else { "server" },
                "not_after": issued.not_after,
            }),
        )
        .with_event(
            at.event(catalogue::Event::CertificateIssued(CertificateIssued {
                serial: issued.serial.clone(),
                fingerprint_sha256: issued.fingerprint_sha256.clone(),
                not_before: issued.not_before,
                not_after: issued.not_after,
                key: if body.csr_pem.is_some() {
                    KeySource::Csr
                } else {
                    KeySource::Server
                },
            })),
        );
    at.store()
        .create_device_certificate(&new, Some(&audit))
        .await?;
    tracing::info!(tenant = %t, device = %d, serial = %issued.serial, "certificate issued");
    let response = IssuedCertificate {
        serial: issued.serial,
        certificate_pem: issued.certificate_pem,
        chain_pem: issued.chain_pem,
        private_key_pem: issued.private_key_pem.map(|k| k.expose().to_owned()),
        not_before: issued.not_before,
        not_after: issued.not_after,
        fingerprint_sha256: issued.fingerprint_sha256,
    };
    Ok(ShownOnce(response))
}

/// A device's certificates, oldest first (any role of the tenant).
#[utoipa::path(get, path = "/v1/tenants/{t}/devices/{d}/certificates", operation_id = "list_certificates", tag = "pki",
    params(DevicePath),
    responses((status = 200, description = "The certificates", body = CertificateList)))]
pub(crate) async fn list(at: InDevice<Read>) -> Result<ApiJson<CertificateList>, ApiError> {
    let (t, d) = at.existing().await?;
    Ok(ApiJson(
        at.store().list_device_certificates(t, d).await?.into(),
    ))
}

/// Revoke a certificate (operator, tenant-admin): it is listed in the CRL
/// and sessions using it end. Revoking again keeps the first time and reason.
#[utoipa::path(post, path = "/v1/tenants/{t}/devices/{d}/certificates/{serial}/revoke", operation_id = "revoke_certificate", tag = "pki",
    params(DevicePath, SerialPath),
    request_body = RevokeCertificate,
    responses((status = 200, description = "The revoked certificate", body = Certificate)))]
pub(crate) async fn revoke(
    at: InDevice<Write>,
    Path(SerialPath { serial }): Path<SerialPath>,
    ApiJson(body): ApiJson<RevokeCertificate>,
) -> Result<ApiJson<Certificate>, ApiError> {
    let (t, d) = (at.t(), at.d());
    let reason = match body.reason.as_deref() {
        None => RevocationReason::Unspecified,
        Some(r) => RevocationReason::from_str(r).map_err(|_| {
            ApiError::invalid_field(
                "/reason",
                "must be one of unspecified, key_compromise, ca_compromise, \
                 affiliation_changed, superseded, cessation_of_operation, privilege_withdrawn",
            )
        })?,
    };
    // `certificate.revoked` says when, as stored (the first time, if it
    // was revoked before).
    let audit = |revoked: &store::DeviceCertificate| {
        at.audit(
            "certificate.revoke",
            target(t, d, &serial),
            json!({ "reason": reason.as_str() }),
        )
        .with_event(at.event(catalogue::Event::CertificateRevoked(
            CertificateRevoked::Certificate {
                serial: revoked.serial.clone(),
                reason: reason.as_str().to_owned(),
                revoked_at: revoked.revoked_at,
            },
        )))
    };
    let revoked = at
        .store()
        .revoke_device_certificate(t, d, &serial, reason.as_str(), Utc::now(), Some(&audit))
        .await?;
    at.changed(Change::CertificateRevoked {
        tenant: t.to_owned(),
        device: d.to_owned(),
        serial: revoked.serial.clone(),
    })
    .await;
    Ok(ApiJson(revoked.into()))
}

/// Refuse every certificate of the device issued before `before` (operator,
/// tenant-admin); its sessions end.
#[utoipa::path(post, path = "/v1/tenants/{t}/devices/{d}/certificates:revoke-before", operation_id = "revoke_device_certificates_before", tag = "pki",
    params(DevicePath),
    request_body = RevokeBefore,
    responses((status = 200, description = "The floor set", body = Floor)))]
pub(crate) async fn device_floor(
    at: InDevice<Write>,
    ApiJson(body): ApiJson<RevokeBefore>,
) -> Result<ApiJson<Floor>, ApiError> {
    set_floor(at.state(), &at.scope, Some(at.d()), &body).await
}

/// Refuse every certificate of the tenant issued before `before` (operator,
/// tenant-admin); all its certificate sessions end.
#[utoipa::path(post, path = "/v1/tenants/{t}/certificates:revoke-before", operation_id = "revoke_tenant_certificates_before", tag = "pki",
    params(TenantPath),
    request_body = RevokeBefore,
    responses((status = 200, description = "The floor set", body = Floor)))]
pub(crate) async fn tenant_floor(
    scope: InTenant<Write>,
    ApiJson(body): ApiJson<RevokeBefore>,
) -> Result<ApiJson<Floor>, ApiError> {
    set_floor(scope.state(), &scope, None, &body).await
}

/// Sets the revocation floor of the tenant or of `device`, with its entry
/// and its one `certificate.revoked` event (the certificates it refuses are
/// not listed one by one), and ends the sessions it refuses. A tenant-wide
/// floor covers every device, listed or not, so its event has no device
/// (and no per-device sequence).
async fn set_floor<N>(
    state: &AppState,
    scope: &InTenant<N>,
    device: Option<&str>,
    body: &RevokeBefore,
) -> Result<ApiJson<Floor>, ApiError> {
    let t = scope.t();
    let before = floor_time(body)?;
    let (target, kind) = match device {
        Some(d) => (
            format!("tenants/{t}/devices/{d}/certificates"),
            RevocationScope::Device,
        ),
        None => (format!("tenants/{t}/certificates"), RevocationScope::Tenant),
    };
    let event = catalogue::Event::CertificateRevoked(CertificateRevoked::Floor {
        scope: kind,
        issued_before: before,
    });
    let event = match device {
        Some(d) => scope.device_event(d, event),
        None => scope.event(event),
    };
    let audit = scope
        .audit(
            "certificate.revoke_before",
            target,
            json!({ "before": before }),
        )
        .with_event(event);
    let store = &state.store;
    let change = match device {
        Some(d) => {
            store
                .set_device_cert_floor(t, d, before, Some(&audit))
                .await?;
            Change::DeviceFloorRaised {
                tenant: t.to_owned(),
                device: d.to_owned(),
            }
        }
        None => {
            store.set_tenant_cert_floor(t, before, Some(&audit)).await?;
            Change::TenantFloorRaised {
                tenant: t.to_owned(),
            }
        }
    };
    state.changed(change).await;
    Ok(ApiJson(Floor { before }))
}

/// `before`, defaulting to now. A future floor would refuse certificates
/// not issued yet, which no one means: refused.
fn floor_time(body: &RevokeBefore) -> Result<DateTime<Utc>, ApiError> {
    let now = Utc::now();
    match body.before {
        None => Ok(now),
        Some(before) if before > now => Err(ApiError::invalid_field(
            "/before",
            "must not be in the future",
        )),
        Some(before) => Ok(before),
    }
}

fn target(t: &str, d: &str, serial: &str) -> String {
    format!("tenants/{t}/devices/{d}/certificates/{serial}")
}
