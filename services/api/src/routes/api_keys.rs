//! `/v1/tenants/{t}/api-keys` (tenant-admin): create (the secret is shown
//! once), list, revoke; and `POST /v1/auth/token`, which exchanges a key's
//! secret for a short-lived bearer token of the key's role and tenant.
//!
//! Secrets are `fmq_{id}_{64 hex}`; only their SHA-256 is stored (they are
//! random, so a slow hash adds nothing). Revoking a key stops new tokens;
//! tokens already issued last until they expire ([`TOKEN_TTL`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use aws_lc_rs::constant_time::verify_slices_are_equal;
use aws_lc_rs::digest::{SHA256, digest};
use aws_lc_rs::rand::{SecureRandom as _, SystemRandom};
use axum::extract::{ConnectInfo, Path, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::json;
use store::NewApiKey;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::routes;

use super::query::PageQuery;
use super::scope::{Admin, InTenant, TenantPath};
use super::{Routes, validate};
use crate::auth::{AuthError, Role, TokenRateLimiter};
use crate::model::{AccessToken, ApiKeyPage, CreatedApiKey};
use crate::{ApiError, ApiJson, AppState, FieldError};

/// Lifetime of a token from `POST /v1/auth/token`.
pub(crate) const TOKEN_TTL: Duration = Duration::from_secs(15 * 60);
const PREFIX: &str = "fmq_";
/// Longest `api_key` we look at.
const MAX_SECRET_LEN: usize = 128;

pub(crate) fn router() -> Routes {
    Routes::new()
        .routes(routes!(list, create))
        .routes(routes!(revoke))
        .routes(routes!(token))
}

/// The `{id}` of an API key's path.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub(crate) struct KeyPath {
    /// API key id
    id: String,
}

/// A new API key.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateApiKey {
    /// What it is for, 1 to 200 characters, no control characters.
    #[schema(
        example = "billing backend",
        pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]{1,200}$"
    )]
    name: String,
    /// The role its tokens get.
    #[schema(pattern = "^(tenant-admin|operator|viewer)$", example = "operator")]
    role: String,
}

/// An API key secret to exchange.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct TokenRequest {
    /// The `secret` shown when the key was created: `fmq_{id}_{64 hex}`.
    #[schema(max_length = 128, example = "fmq_0123456789abcdef_…")]
    api_key: String,
}

/// Create an API key (tenant-admin). The response is the only time the
/// secret is shown.
#[utoipa::path(post, path = "/v1/tenants/{t}/api-keys", tag = "api-keys",
    operation_id = "create_api_key",
    params(TenantPath),
    request_body = CreateApiKey,
    responses((status = 201, description = "The key and its secret", body = CreatedApiKey)))]
pub(crate) async fn create(
    scope: InTenant<Admin>,
    ApiJson(body): ApiJson<CreateApiKey>,
) -> Result<(StatusCode, ApiJson<CreatedApiKey>), ApiError> {
    let t = scope.t();
    let mut errors = Vec::new();
    validate::name(&body.name, "/name", &mut errors);
    match body.role.parse::<Role>() {
        Ok(Role::PlatformAdmin) | Err(_) => errors.push(FieldError::new(
            "/role",
            "must be tenant-admin, operator or viewer",
        )),
        Ok(_) => {}
    }
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let id = uuid::Uuid::now_v7().simple().to_string();
    let mut random = [0u8; 32];
    SystemRandom::new()
        .fill(&mut random)
        .map_err(|_| ApiError::internal(std::io::Error::other("no randomness")))?;
    let secret = format!("{PREFIX}{id}_{}", hex(&random));
    let audit = scope.audit(
        "api_key.create",
        format!("tenants/{t}/api-keys/{id}"),
        json!({ "role": body.role, "name": body.name }),
    );
    let new = NewApiKey {
        id,
        tenant_id: t.to_owned(),
        name: body.name,
        role: body.role,
        secret_hash: digest(&SHA256, secret.as_bytes()).as_ref().to_vec(),
    };
    let key = scope.store().create_api_key_audited(&new, &audit).await?;
    Ok((
        StatusCode::CREATED,
        ApiJson(CreatedApiKey {
            key: key.into(),
            secret,
        }),
    ))
}

/// List a tenant's API keys, revoked ones included (tenant-admin).
#[utoipa::path(get, path = "/v1/tenants/{t}/api-keys", tag = "api-keys",
    operation_id = "list_api_keys",
    params(TenantPath,
        super::PageParams),
    responses((status = 200, description = "A page of keys", body = ApiKeyPage)))]
pub(crate) async fn list(
    scope: InTenant<Admin>,
    PageQuery(page): PageQuery,
) -> Result<ApiJson<ApiKeyPage>, ApiError> {
    let t = scope.t();
    if !scope.store().tenant_exists(t).await? {
        return Err(ApiError::NotFound {
            resource: "tenant".to_owned(),
            id: t.to_owned(),
        });
    }
    Ok(ApiJson(scope.store().list_api_keys(t, &page).await?.into()))
}

/// Revoke an API key (tenant-admin): it gets no more tokens.
#[utoipa::path(delete, path = "/v1/tenants/{t}/api-keys/{id}", tag = "api-keys",
    operation_id = "revoke_api_key",
    params(TenantPath, KeyPath),
    responses((status = 204, description = "Revoked")))]
pub(crate) async fn revoke(
    scope: InTenant<Admin>,
    Path(KeyPath { id }): Path<KeyPath>,
) -> Result<StatusCode, ApiError> {
    let t = scope.t();
    let audit = scope.audit(
        "api_key.revoke",
        format!("tenants/{t}/api-keys/{id}"),
        json!({}),
    );
    scope.store().revoke_api_key_audited(t, &id, &audit).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Exchange an API key secret for a bearer token of its role and tenant,
/// valid 15 minutes. No bearer token needed. Attempts are rate limited per
/// client address and per (API key, client address) (default 10 a minute),
/// so secrets cannot be guessed at speed and wrong guesses from one address
/// never lock the key's owner out from another.
#[utoipa::path(post, path = "/v1/auth/token", tag = "api-keys",
    operation_id = "exchange_api_key",
    security(()),
    request_body = TokenRequest,
    responses(
        (status = 200, description = "A bearer token", body = AccessToken),
        (status = 401, description = "Unknown, malformed or revoked API key",
         body = crate::Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many attempts from this address (for this key or in all); see Retry-After",
         body = crate::Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn token(
    State(state): State<AppState>,
    extensions: http::Extensions,
    ApiJson(body): ApiJson<TokenRequest>,
) -> Result<ApiJson<AccessToken>, ApiError> {
    let limiter = extensions.get::<Arc<TokenRateLimiter>>();
    let attempt = |caller: String| match limiter {
        Some(limiter) => limiter
            .0
            .check(&caller)
            .map_err(|retry_after| ApiError::TooManyRequests { retry_after }),
        None => Ok(()),
    };
    let peer = extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(peer)| peer.ip());
    if let Some(ip) = peer {
        attempt(format!("addr:{ip}"))?;
    }
    let invalid = || ApiError::Unauthorized("invalid or revoked API key".to_owned());
    let secret = body.api_key;
    if secret.len() > MAX_SECRET_LEN {
        return Err(invalid());
    }
    let (id, _) = secret
        .strip_prefix(PREFIX)
        .and_then(|rest| rest.split_once('_'))
        .ok_or_else(invalid)?;
    // Per (key, address): the key id is the secret's visible prefix, so a
    // bucket per key alone let anyone who saw it lock the owner out with a
    // few wrong guesses from elsewhere. The bucket refills (10 a minute by
    // default), so even the guessing address only backs off; the secret's
    // 256 bits, not this limit, are what makes guessing hopeless.
    match peer {
        Some(ip) => attempt(format!("key:{id}@{ip}"))?,
        None => attempt(format!("key:{id}"))?,
    }
    let (key, hash) = match state.store.api_key_with_hash(id).await {
        Ok(found) => found,
        Err(store::Error::NotFound { .. }) => return Err(invalid()),
        Err(e) => return Err(e.into()),
    };
    let presented = digest(&SHA256, secret.as_bytes());
    if verify_slices_are_equal(presented.as_ref(), &hash).is_err() || key.revoked_at.is_some() {
        return Err(invalid());
    }
    let role: Role = key
        .role
        .parse()
        .map_err(|e: AuthError| ApiError::internal(e))?;
    // The key's row goes with its tenant (cascade), so the tenant is there.
    let tenant = state.store.get_tenant(&key.tenant_id).await?;
    let keys = state.keys().await?;
    let token = keys.issue_in(&format!("api-key:{}", key.id), role, &tenant, TOKEN_TTL)?;
    Ok(ApiJson(AccessToken {
        access_token: token,
        token_type: "Bearer".to_owned(),
        expires_in: TOKEN_TTL.as_secs(),
    }))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
