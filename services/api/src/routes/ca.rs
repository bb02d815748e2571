//! The CAs devices chain to: `GET /v1/ca` (the platform root, no token
//! needed: it is public by nature, and devices and tools fetch it before
//! they have any credential), `GET /v1/tenants/{t}/ca` (the tenant CA chain,
//! any role of the tenant) and `GET /v1/tenants/{t}/ca/crl` (the tenant's
//! CRL, any role of the tenant).

use std::str::FromStr;

use axum::extract::{RawQuery, State};
use axum::response::{IntoResponse, Response};
use chrono::{Duration, Utc};
use http::HeaderMap;
use http::header::{ACCEPT, CACHE_CONTROL, CONTENT_TYPE};
use pki::{RevocationReason, RevokedCert};

use utoipa_axum::routes;

use super::openapi::PkiUnconfigured;
use super::scope::{InTenant, Read, TenantPath};
use super::{Routes, query};
use crate::{ApiError, AppState};

pub(crate) const PEM: &str = "application/x-pem-file";
const PKIX_CRL: &str = "application/pkix-crl";
/// A CRL is signed fresh on each request; clients should fetch again
/// before this.
const CRL_NEXT_UPDATE_HOURS: i64 = 24;

pub(crate) fn router() -> Routes {
    Routes::new()
        .routes(routes!(root))
        .routes(routes!(tenant_chain))
        .routes(routes!(crl))
}

/// The platform root CA certificate, PEM. No token needed.
#[utoipa::path(get, path = "/v1/ca", operation_id = "get_root_ca", tag = "pki",
    security(()),
    responses(
        (status = 200, description = "The root CA certificate", body = String, content_type = "application/x-pem-file"),
        PkiUnconfigured,
    ))]
pub(crate) async fn root(State(state): State<AppState>) -> Result<Response, ApiError> {
    let pem = state.pki()?.root_pem().to_owned();
    Ok(([(CONTENT_TYPE, PEM)], pem).into_response())
}

/// The tenant's CA chain (tenant CA, then root), PEM (any role of the
/// tenant). The tenant CA is made on first need for tenants older than the PKI.
#[utoipa::path(get, path = "/v1/tenants/{t}/ca", operation_id = "get_tenant_ca", tag = "pki",
    params(TenantPath),
    responses(
        (status = 200, description = "The CA chain", body = String, content_type = "application/x-pem-file"),
        PkiUnconfigured,
    ))]
pub(crate) async fn tenant_chain(scope: InTenant<Read>) -> Result<Response, ApiError> {
    let t = scope.t();
    let ca = scope.state().tenant_ca(t).await?;
    Ok(([(CONTENT_TYPE, PEM)], ca.chain_pem()).into_response())
}

/// The tenant's CRL, signed now by the tenant CA (any role of the tenant):
/// DER (`application/pkix-crl`) by default, PEM with
/// `Accept: application/x-pem-file` or `?format=pem`.
#[utoipa::path(get, path = "/v1/tenants/{t}/ca/crl", operation_id = "get_tenant_crl", tag = "pki",
    params(TenantPath,
        ("format" = Option<String>, Query, description = "`der` (default) or `pem`", pattern = "^(der|pem)$")),
    responses(
        (status = 200, description = "The CRL", content(
            (Vec<u8> = "application/pkix-crl"),
            (String = "application/x-pem-file"))),
        PkiUnconfigured,
    ))]
pub(crate) async fn crl(
    scope: InTenant<Read>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let t = scope.t();
    let q = query::parse(raw.as_deref(), &["format"], &[])?;
    let mut pem = headers
        .get_all(ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains(PEM));
    for (_, value) in q.filters {
        pem = match value.as_str() {
            "pem" => true,
            "der" => false,
            _ => {
                return Err(ApiError::BadRequest(
                    "`format` must be `der` or `pem`".to_owned(),
                ));
            }
        };
    }
    let ca = scope.state().tenant_ca(t).await?;
    let key_id = hex::encode(ca.subject_key_id());
    let now = Utc::now();
    let revoked = scope
        .store()
        .list_revoked_certificates(t, now)
        .await?
        .into_iter()
        // Only what this CA issued: a CRL speaks for its issuer alone.
        .filter(|c| c.issuer_key_id == key_id)
        .map(|c| RevokedCert {
            reason: c
                .revocation_reason
                .as_deref()
                .and_then(|r| RevocationReason::from_str(r).ok())
                .unwrap_or(RevocationReason::Unspecified),
            revoked_at: c.revoked_at.unwrap_or(now),
            serial: c.serial,
        })
        .collect::<Vec<_>>();
    let number = scope.store().next_crl_number(t, &key_id).await?;
    let number = u64::try_from(number).map_err(ApiError::internal)?;
    let crl = ca
        .crl(
            &revoked,
            number,
            now,
            now + Duration::hours(CRL_NEXT_UPDATE_HOURS),
        )
        .map_err(ApiError::internal)?;
    let response = if pem {
        ([(CONTENT_TYPE, PEM), (CACHE_CONTROL, "no-cache")], crl.pem).into_response()
    } else {
        (
            [(CONTENT_TYPE, PKIX_CRL), (CACHE_CONTROL, "no-cache")],
            crl.der,
        )
            .into_response()
    };
    Ok(response)
}
