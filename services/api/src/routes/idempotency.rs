//! `Idempotency-Key` on POST (draft-ietf-httpapi-idempotency-key-header):
//! the first response to a key is stored and a retry of the same request
//! gets it again, marked `Idempotent-Replayed: true`, instead of a duplicate
//! or a 409.
//!
//! - Keys are scoped to the tenant in the URL (`""` for platform-level
//!   POSTs) and bound to the caller and to the request (method, path,
//!   body): the same key with another request is 422, by someone else 422,
//!   while the first is still running 409.
//! - Only authenticated requests take part (401s are never stored), and a
//!   tenant role's key never reaches into another tenant's scope.
//! - 5xx answers are not stored: the key is released so a retry runs again.
//! - Records are kept for [`RETENTION`]; an older key counts as new, and
//!   so does one left in flight for [`STALE_IN_FLIGHT`] (its request died
//!   with its process).

use std::time::Duration;

use aws_lc_rs::digest::{SHA256, digest};
use axum::body::{Body, to_bytes};
use axum::extract::{FromRequestParts, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use http::header::{CONTENT_TYPE, RETRY_AFTER};
use http::{HeaderName, HeaderValue, Method, StatusCode};
use store::IdempotencyClaim;

use crate::auth::{Principal, Role};
use crate::tenant_limit::tenant_scope;
use crate::{ApiError, AppState};

pub(crate) static IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");
pub(crate) static IDEMPOTENT_REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");

/// How long a key is remembered.
pub(crate) const RETENTION: Duration = Duration::from_secs(24 * 3600);
/// An in-flight claim older than this was abandoned (requests time out
/// well before: 30 s by default).
pub(crate) const STALE_IN_FLIGHT: Duration = Duration::from_secs(5 * 60);
/// Longest key accepted.
pub(crate) const MAX_KEY_LEN: usize = 255;
/// Largest response body stored (our create responses are far smaller).
const MAX_STORED_BODY: usize = 1024 * 1024;

pub(crate) async fn layer(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if req.method() != Method::POST || !req.headers().contains_key(&IDEMPOTENCY_KEY) {
        return next.run(req).await;
    }
    match handle(&state, req, next).await {
        Ok(response) | Err(response) => response,
    }
}

async fn handle(state: &AppState, req: Request, next: Next) -> Result<Response, Response> {
    let key = idempotency_key(&req).map_err(IntoResponse::into_response)?;
    let (mut parts, body) = req.into_parts();
    let who = Principal::from_request_parts(&mut parts, state)
        .await
        .map_err(IntoResponse::into_response)?;
    // The handler's extractor reuses it rather than verifying (and rate
    // limiting) twice.
    parts.extensions.insert(who.clone());
    let scope = tenant_scope(parts.uri.path()).to_owned();
    if who.role != Role::PlatformAdmin && who.tenant.as_deref() != Some(scope.as_str()) {
        // Not the caller's tenant: the handler answers 404 (or 403), and
        // nothing about the other tenant's keys is consulted.
        return Ok(next.run(Request::from_parts(parts, body)).await);
    }
    let bytes = to_bytes(body, usize::MAX)
        .await
        .map_err(|_| ApiError::PayloadTooLarge.into_response())?;
    let hash = fingerprint(&parts.method, parts.uri.path(), &bytes);
    let actor = who.actor();
    let store = &state.store;
    let mut claim = store
        .claim_idempotency_key(&scope, &key, &actor, &hash)
        .await
        .map_err(|e| ApiError::from(e).into_response())?;
    if let IdempotencyClaim::Existing(old) = &claim
        && is_stale(old.created_at, old.status.is_none())
    {
        store
            .release_idempotency_key(&scope, &key)
            .await
            .map_err(|e| ApiError::from(e).into_response())?;
        claim = store
            .claim_idempotency_key(&scope, &key, &actor, &hash)
            .await
            .map_err(|e| ApiError::from(e).into_response())?;
    }
    match claim {
        IdempotencyClaim::Existing(old) => {
            if old.actor != actor || old.request_hash != hash {
                return Err(ApiError::IdempotencyKeyReused.into_response());
            }
            let Some(status) = old.status.and_then(|s| StatusCode::from_u16(s).ok()) else {
                let mut response = ApiError::IdempotencyKeyInFlight.into_response();
                response
                    .headers_mut()
                    .insert(RETRY_AFTER, HeaderValue::from_static("1"));
                return Err(response);
            };
            let mut response = Response::new(Body::from(old.body.unwrap_or_default()));
            *response.status_mut() = status;
            if let Some(ct) = old
                .content_type
                .and_then(|ct| HeaderValue::from_str(&ct).ok())
            {
                response.headers_mut().insert(CONTENT_TYPE, ct);
            }
            response.headers_mut().insert(
                IDEMPOTENT_REPLAYED.clone(),
                HeaderValue::from_static("true"),
            );
            Ok(response)
        }
        IdempotencyClaim::Claimed => {
            let response = next
                .run(Request::from_parts(parts, Body::from(bytes)))
                .await;
            let stored = store_response(state, &scope, &key, response).await;
            if let Some(before) = Utc::now()
                .checked_sub_signed(chrono::Duration::from_std(RETENTION).unwrap_or_default())
                && let Err(e) = store.purge_idempotency_keys_before(before).await
            {
                tracing::warn!(error = %e, "cannot purge old idempotency keys");
            }
            Ok(stored)
        }
    }
}

/// A record past [`RETENTION`], or one still "in flight" long after any
/// request would have timed out (the process handling it died).
fn is_stale(created_at: chrono::DateTime<Utc>, in_flight: bool) -> bool {
    let age = Utc::now() - created_at;
    let limit = if in_flight {
        STALE_IN_FLIGHT
    } else {
        RETENTION
    };
    age > chrono::Duration::from_std(limit).unwrap_or_default()
}

/// Keep the response for retries (unless it is a 5xx) and pass it on.
async fn store_response(state: &AppState, scope: &str, key: &str, response: Response) -> Response {
    let store = &state.store;
    if response.status().is_server_error() {
        if let Err(e) = store.release_idempotency_key(scope, key).await {
            tracing::warn!(error = %e, "cannot release an idempotency key");
        }
        return response;
    }
    let (parts, body) = response.into_parts();
    // Our own response, already bounded by what handlers produce.
    let bytes = match to_bytes(body, usize::MAX).await {
        Ok(bytes) => bytes,
        Err(e) => {
            let _ = store.release_idempotency_key(scope, key).await;
            return ApiError::internal(e).into_response();
        }
    };
    if bytes.len() > MAX_STORED_BODY {
        // Too big to keep: a retry runs again (and meets 409s).
        tracing::warn!(len = bytes.len(), "response too large to keep for replay");
        let _ = store.release_idempotency_key(scope, key).await;
        return Response::from_parts(parts, Body::from(bytes));
    }
    let content_type = parts
        .headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    if let Err(e) = store
        .complete_idempotency_key(scope, key, parts.status.as_u16(), content_type, &bytes)
        .await
    {
        // The work is done; only the replay is lost. Free the key rather
        // than leave it "in flight" forever.
        tracing::warn!(error = %e, "cannot store an idempotent response");
        let _ = store.release_idempotency_key(scope, key).await;
    }
    Response::from_parts(parts, Body::from(bytes))
}

fn idempotency_key(req: &Request) -> Result<String, ApiError> {
    let mut values = req.headers().get_all(&IDEMPOTENCY_KEY).iter();
    let bad = || {
        ApiError::BadRequest(format!(
            "`Idempotency-Key` must be one value of 1 to {MAX_KEY_LEN} visible ASCII characters"
        ))
    };
    let value = values.next().ok_or_else(bad)?;
    if values.next().is_some() {
        return Err(bad());
    }
    // An RFC 8941 sf-string is quoted; accept it bare too.
    let raw = value.to_str().map_err(|_| bad())?;
    let key = raw
        .strip_prefix('"')
        .and_then(|k| k.strip_suffix('"'))
        .unwrap_or(raw);
    if key.is_empty() || key.len() > MAX_KEY_LEN || !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(bad());
    }
    Ok(key.to_owned())
}

fn fingerprint(method: &Method, path: &str, body: &[u8]) -> String {
    let mut input = Vec::with_capacity(method.as_str().len() + path.len() + body.len() + 2);
    input.extend_from_slice(method.as_str().as_bytes());
    input.push(b' ');
    input.extend_from_slice(path.as_bytes());
    input.push(b'\n');
    input.extend_from_slice(body);
    digest(&SHA256, &input)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staleness() {
        let now = Utc::now();
        assert!(!is_stale(now, true));
        assert!(is_stale(now - chrono::Duration::minutes(6), true));
        assert!(!is_stale(now - chrono::Duration::minutes(6), false));
        assert!(is_stale(now - chrono::Duration::hours(25), false));
    }

    #[test]
    fn fingerprints_differ_by_body_and_path() {
        let a = fingerprint(&Method::POST, "/v1/tenants", b"{}");
        assert_eq!(a.len(), 64);
        assert_ne!(a, fingerprint(&Method::POST, "/v1/tenants", b"{ }"));
        assert_ne!(a, fingerprint(&Method::POST, "/v1/tenant", b"{}"));
    }
}
