//! Authentication and authorization: bearer JWTs signed by [`Keys`], the
//! [`Principal`] extractor, and the role checks every handler opens with.
//!
//! Roles:
//!
//! | role | tenants | devices | audit |
//! |---|---|---|---|
//! | `platform-admin` | all | all tenants | all tenants |
//! | `tenant-admin` | read/update its own | read/write | read |
//! | `operator` | read its own | read/write | — |
//! | `viewer` | read its own | read | — |
//!
//! A tenant role's token names its tenant (`tenant` claim). Anything under
//! another tenant's URL is answered 404, exactly as if it did not exist,
//! before any role check: another tenant's resources are never revealed.
//! A missing role for an action on the caller's own tenant is 403.

use std::fmt;

use axum::extract::FromRequestParts;
use http::header::AUTHORIZATION;
use http::request::Parts;
use serde::{Deserialize, Serialize};

use crate::{ApiError, AppState};

mod keys;
mod rate_limit;

pub use keys::{ALGORITHM, Keys, MAX_TTL};
pub use rate_limit::RateLimit;
pub(crate) use rate_limit::{RateLimiter, TokenRateLimiter};

/// `iss` of our tokens.
pub const ISSUER: &str = "fleetmq";
/// `aud` of our tokens.
pub const AUDIENCE: &str = "fleetmq-api";

/// What a token lets its bearer do (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    PlatformAdmin,
    TenantAdmin,
    Operator,
    Viewer,
}

impl Role {
    pub const ALL: [Role; 4] = [
        Role::PlatformAdmin,
        Role::TenantAdmin,
        Role::Operator,
        Role::Viewer,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::PlatformAdmin => "platform-admin",
            Role::TenantAdmin => "tenant-admin",
            Role::Operator => "operator",
            Role::Viewer => "viewer",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Role {
    type Err = AuthError;

    /// `platform-admin`, `tenant-admin`, `operator` or `viewer`.
    fn from_str(s: &str) -> Result<Role, AuthError> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| AuthError::UnknownRole(s.chars().take(64).collect()))
    }
}

/// The claims of a fleetmq token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    pub aud: String,
    /// Who: `cli` for `fleetmq admin token`, else a user or key name.
    pub sub: String,
    pub iat: u64,
    pub nbf: u64,
    pub exp: u64,
    /// Unique per token, for the logs.
    pub jti: String,
    pub role: Role,
    /// The tenant of a tenant role; absent for `platform-admin`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// Which incarnation of `tenant` the token is for (see
    /// [`incarnation`]): once the tenant is deleted, its tokens die with
    /// it, even if a tenant of the same id is created again. Absent in
    /// tokens minted before it existed, and in tokens made by tests for
    /// tenants not created yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tinc: Option<i64>,
}

/// A tenant's incarnation: its creation time in microseconds, which a
/// tenant deleted and created again under the same id never shares.
pub fn incarnation(tenant: &store::Tenant) -> i64 {
    tenant.created_at.timestamp_micros()
}

/// Why a token was not accepted or not issued. Mapped to HTTP once, in
/// `error.rs`: token problems → 401, the rest → 500.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("missing bearer token")]
    Missing,
    #[error("the Authorization header is not `Bearer <token>`")]
    NotBearer,
    #[error("malformed token")]
    Malformed,
    #[error("token algorithm not accepted")]
    WrongAlgorithm,
    #[error("token signed by an unknown key")]
    UnknownKey,
    #[error("invalid token signature")]
    BadSignature,
    #[error("token expired")]
    Expired,
    #[error("token not yet valid")]
    NotYetValid,
    #[error("token is for another audience")]
    WrongAudience,
    #[error("token from another issuer")]
    WrongIssuer,
    #[error("token claims invalid: {0}")]
    BadClaims(String),
    #[error("unknown role {0:?}")]
    UnknownRole(String),
    #[error("role {0} needs a tenant")]
    TenantRequired(Role),
    #[error("platform-admin tokens take no tenant")]
    TenantNotAllowed,
    #[error("the token's tenant was deleted")]
    TenantGone,
    #[error("token lifetime must be 1 s to {max_secs} s")]
    TtlOutOfRange { max_secs: u64 },
    #[error("no usable signing key in the database")]
    NoSigningKey,
    #[error("cannot generate a signing key")]
    KeyGeneration,
    #[error("cannot sign a token")]
    Sign(#[source] jsonwebtoken::errors::Error),
    #[error("signing keys unavailable")]
    Store(#[from] store::Error),
}

impl AuthError {
    fn from_jwt(e: jsonwebtoken::errors::Error) -> AuthError {
        use jsonwebtoken::errors::ErrorKind as K;
        match e.kind() {
            K::ExpiredSignature => AuthError::Expired,
            K::ImmatureSignature => AuthError::NotYetValid,
            K::InvalidAudience => AuthError::WrongAudience,
            K::InvalidIssuer => AuthError::WrongIssuer,
            K::InvalidSignature => AuthError::BadSignature,
            K::InvalidAlgorithm | K::InvalidKeyFormat | K::InvalidEcdsaKey => {
                AuthError::WrongAlgorithm
            }
            K::MissingRequiredClaim(c) => AuthError::BadClaims(format!("missing claim {c}")),
            K::InvalidClaimFormat(c) => AuthError::BadClaims(format!("bad claim {c}")),
            K::Json(_) => AuthError::BadClaims("claims do not match the schema".to_owned()),
            _ => AuthError::Malformed,
        }
    }

    /// True when the client's token is at fault (401), false when we are.
    pub fn is_client_error(&self) -> bool {
        !matches!(
            self,
            AuthError::NoSigningKey
                | AuthError::KeyGeneration
                | AuthError::Sign(_)
                | AuthError::Store(_)
        )
    }
}

/// The authenticated caller: an extractor for handlers. Rejections are 401
/// problems with `WWW-Authenticate: Bearer`, or 429 when the caller is over
/// its rate limit (see `rate_limit`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub subject: String,
    pub role: Role,
    /// Set exactly for tenant roles.
    pub tenant: Option<String>,
}

/// What an action needs inside a tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// See the tenant and its devices: every role.
    Read,
    /// Create, change, delete devices: operator and up.
    WriteDevices,
    /// Update the tenant, read its audit log: tenant-admin and up.
    Admin,
    /// Platform-admin only (e.g. delete a tenant).
    Platform,
}

impl Principal {
    /// For the audit log: `role:subject`.
    pub fn actor(&self) -> String {
        format!("{}:{}", self.role, self.subject)
    }

    /// 403 unless platform-admin.
    pub fn require_platform_admin(&self) -> Result<(), ApiError> {
        if self.role == Role::PlatformAdmin {
            Ok(())
        } else {
            Err(ApiError::Forbidden(format!(
                "role {} cannot do this; platform-admin can",
                self.role
            )))
        }
    }

    /// Check `access` to tenant `tenant`: 404 (as if missing) for another
    /// tenant, 403 for a role that lacks it.
    pub fn require(&self, tenant: &str, access: Access) -> Result<(), ApiError> {
        if self.role == Role::PlatformAdmin {
            return Ok(());
        }
        if self.tenant.as_deref() != Some(tenant) {
            return Err(ApiError::NotFound {
                resource: "tenant".to_owned(),
                id: tenant.to_owned(),
            });
        }
        let allowed = match access {
            Access::Read => true,
            Access::WriteDevices => matches!(self.role, Role::TenantAdmin | Role::Operator),
            Access::Admin => self.role == Role::TenantAdmin,
            Access::Platform => false,
        };
        if allowed {
            Ok(())
        } else {
            Err(ApiError::Forbidden(format!(
                "role {} cannot do this",
                self.role
            )))
        }
    }
}

impl FromRequestParts<AppState> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        // Already authenticated (and counted against the rate limit) by a
        // middleware of this request: see `routes::idempotency`.
        if let Some(principal) = parts.extensions.get::<Principal>() {
            return Ok(principal.clone());
        }
        let token = bearer_token(parts)?;
        let keys = state.keys().await?;
        let claims = keys.verify(token).await?;
        let tenant = match (claims.role, claims.tenant) {
            (Role::PlatformAdmin, None) => None,
            (Role::PlatformAdmin, Some(_)) => return Err(AuthError::TenantNotAllowed.into()),
            (_, Some(t)) => Some(t),
            (role, None) => return Err(AuthError::TenantRequired(role).into()),
        };
        if let (Some(t), Some(tinc)) = (&tenant, claims.tinc) {
            match state.store.get_tenant(t).await {
                Ok(now) if incarnation(&now) == tinc => {}
                Ok(_) | Err(store::Error::NotFound { .. }) => {
                    return Err(AuthError::TenantGone.into());
                }
                Err(e) => return Err(AuthError::Store(e).into()),
            }
        }
        let principal = Principal {
            subject: claims.sub,
            role: claims.role,
            tenant,
        };
        if let Some(limiter) = parts.extensions.get::<std::sync::Arc<RateLimiter>>() {
            let caller = format!(
                "{}@{}",
                principal.actor(),
                principal.tenant.as_deref().unwrap_or("")
            );
            limiter
                .check(&caller)
                .map_err(|retry_after| ApiError::TooManyRequests { retry_after })?;
        }
        Ok(principal)
    }
}

fn bearer_token(parts: &Parts) -> Result<&str, AuthError> {
    let mut values = parts.headers.get_all(AUTHORIZATION).iter();
    let value = values.next().ok_or(AuthError::Missing)?;
    if values.next().is_some() {
        return Err(AuthError::NotBearer);
    }
    let value = value.to_str().map_err(|_| AuthError::NotBearer)?;
    let (scheme, token) = value.split_once(' ').ok_or(AuthError::NotBearer)?;
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
        return Err(AuthError::NotBearer);
    }
    Ok(token)
}
