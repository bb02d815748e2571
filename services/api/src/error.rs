//! `application/problem+json` (RFC 9457) errors: the one error body every
//! endpoint answers with, and the one place where other crates' errors become
//! HTTP statuses.
//!
//! Problem `type`s are absolute URIs under [`PROBLEM_TYPE_BASE`]
//! (`https://fleetmq.dev/problems/{slug}`). They are stable identifiers that
//! clients may match on; they are not promised to resolve (RFC 9457 §3.1.1
//! says consumers should not dereference them anyway). Statuses without a
//! fleetmq meaning use `about:blank`, whose title is the reason phrase.
//!
//! Besides the RFC members, a problem carries `request_id` (the
//! `x-request-id` of the exchange, filled in by the router's middleware) and
//! `errors`, a list of `{pointer, detail}` where `pointer` is an RFC 6901 JSON
//! pointer into the request body.
//!
//! Client errors (4xx) say what was wrong in `detail`. Server errors (5xx)
//! never send the underlying error: it goes to the log, inside the request's
//! span, so it can be found by `request_id`.

use std::error::Error as StdError;
use std::fmt::Write as _;
use std::time::Duration;

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use http::header::{CONTENT_LENGTH, CONTENT_TYPE, WWW_AUTHENTICATE};
use http::{HeaderValue, StatusCode};
use serde::{Deserialize, Serialize};

/// Media type of every error body.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// Prefix of every fleetmq problem `type`; the slug follows it.
pub const PROBLEM_TYPE_BASE: &str = "https://fleetmq.dev/problems/";

/// A boxed error kept as the source of [`ApiError::Internal`] and
/// [`ApiError::Unavailable`]: logged, never sent.
pub type BoxError = Box<dyn StdError + Send + Sync + 'static>;

/// One invalid field of a request body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FieldError {
    /// RFC 6901 JSON pointer to the field, `""` for the whole document.
    pub pointer: String,
    /// What is wrong with it.
    pub detail: String,
}

impl FieldError {
    /// A field error at `pointer` (e.g. `/labels/0`).
    pub fn new(pointer: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            pointer: pointer.into(),
            detail: detail.into(),
        }
    }
}

/// An RFC 9457 problem details object.
///
/// Build one from an [`ApiError`] in handlers; [`Problem::from_status`] is for
/// responses produced by framework layers (see the router's middleware).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Problem {
    /// Stable identifier of the problem kind (see the module docs).
    #[serde(rename = "type")]
    pub type_uri: String,
    /// Short summary of the kind; the same for every occurrence.
    pub title: String,
    /// The HTTP status code, repeated for clients that lose it.
    pub status: u16,
    /// What went wrong this time. Never set from a 5xx's underlying error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// The request path that met the problem.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    /// The exchange's `x-request-id`, to find it in the logs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// Invalid fields of the request body (422 and some 400s).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
}

/// Slug and title of each status fleetmq gives a meaning to.
fn kind_of(status: StatusCode) -> Option<(&'static str, &'static str)> {
    Some(match status {
        StatusCode::BAD_REQUEST => ("bad-request", "Bad request"),
        StatusCode::UNAUTHORIZED => ("unauthorized", "Authentication required"),
        StatusCode::FORBIDDEN => ("forbidden", "Permission denied"),
        StatusCode::NOT_FOUND => ("not-found", "Not found"),
        StatusCode::METHOD_NOT_ALLOWED => ("method-not-allowed", "Method not allowed"),
        StatusCode::CONFLICT => ("conflict", "Conflict"),
        StatusCode::PRECONDITION_FAILED => ("precondition-failed", "Precondition failed"),
        StatusCode::PAYLOAD_TOO_LARGE => ("payload-too-large", "Request body too large"),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ("unsupported-media-type", "Unsupported media type"),
        StatusCode::UNPROCESSABLE_ENTITY => ("validation", "Validation failed"),
        StatusCode::TOO_MANY_REQUESTS => ("rate-limited", "Too many requests"),
        StatusCode::INTERNAL_SERVER_ERROR => ("internal", "Internal server error"),
        StatusCode::SERVICE_UNAVAILABLE => ("unavailable", "Service unavailable"),
        _ => return None,
    })
}

impl Problem {
    /// A problem of fleetmq kind `slug` (appended to [`PROBLEM_TYPE_BASE`]).
    pub fn new(status: StatusCode, slug: &str, title: impl Into<String>) -> Self {
        Self {
            type_uri: format!("{PROBLEM_TYPE_BASE}{slug}"),
            title: title.into(),
            status: status.as_u16(),
            detail: None,
            instance: None,
            request_id: None,
            errors: Vec::new(),
        }
    }

    /// The generic problem for `status`: a fleetmq kind where the status has
    /// one, else `about:blank` titled with the reason phrase.
    pub fn from_status(status: StatusCode) -> Self {
        match kind_of(status) {
            Some((slug, title)) => Self::new(status, slug, title),
            None => Self {
                type_uri: "about:blank".to_owned(),
                title: status.canonical_reason().unwrap_or("Error").to_owned(),
                ..Self::new(status, "", "")
            },
        }
    }

    /// Sets `detail`.
    #[must_use]
    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    /// Sets `errors`.
    #[must_use]
    pub fn with_errors(mut self, errors: Vec<FieldError>) -> Self {
        self.errors = errors;
        self
    }

    /// The status as a [`StatusCode`] (500 if `status` is not a valid code).
    pub fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    /// The JSON body.
    pub(crate) fn to_body(&self) -> Body {
        match serde_json::to_vec(self) {
            Ok(bytes) => Body::from(bytes),
            // Unreachable with string-only fields, but never answer without a body.
            Err(_) => {
                Body::from(r#"{"type":"about:blank","title":"Internal Server Error","status":500}"#)
            }
        }
    }

    /// Makes `parts` (of any response) carry this problem: status, media
    /// type, body, and the problem itself as an extension so that outer
    /// middleware can add `request_id` and `instance`. Other headers
    /// (`Allow`, `WWW-Authenticate`, …) are kept.
    pub(crate) fn render_into(self, mut parts: http::response::Parts) -> Response {
        parts.status = self.status_code();
        parts
            .headers
            .insert(CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        parts.headers.remove(CONTENT_LENGTH);
        let body = self.to_body();
        parts.extensions.insert(self);
        Response::from_parts(parts, body)
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let (parts, ()) = Response::new(()).into_parts();
        self.render_into(parts)
    }
}

/// Every error a handler can return. Each variant's doc says its status;
/// `IntoResponse` renders it as a [`Problem`] and logs it (5xx at warn or
/// error, with the source chain; 4xx at debug).
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: the request is malformed (JSON syntax, bad query string, …).
    /// The message is sent to the client.
    #[error("bad request: {0}")]
    BadRequest(String),

    /// 401: no credentials or invalid ones; answered with
    /// `WWW-Authenticate: Bearer`. The message is sent to the client: never
    /// put a token in it.
    #[error("unauthenticated: {0}")]
    Unauthorized(String),

    /// 403: authenticated, but not allowed to do this. The message is sent.
    #[error("forbidden: {0}")]
    Forbidden(String),

    /// 404: `resource` (e.g. `device`) with this id does not exist (or is not
    /// visible to the caller).
    #[error("{resource} {id} not found")]
    NotFound {
        /// Kind of resource, e.g. `tenant`.
        resource: String,
        /// Its id as the client gave it.
        id: String,
    },

    /// 409: creating `resource` with an id that is taken.
    #[error("{resource} {id} already exists")]
    AlreadyExists {
        /// Kind of resource, e.g. `tenant`.
        resource: String,
        /// The id that is taken.
        id: String,
    },

    /// 409: the request conflicts with the resource's current state. The
    /// message is sent.
    #[error("conflict: {0}")]
    Conflict(String),

    /// 412: `If-Match` names a version of the resource other than the
    /// current one. The message is sent.
    #[error("precondition failed: {0}")]
    PreconditionFailed(String),

    /// 422: an `Idempotency-Key` already used for a different request (or
    /// by someone else).
    #[error("idempotency key reused for a different request")]
    IdempotencyKeyReused,

    /// 409: the first request with this `Idempotency-Key` is still running.
    #[error("a request with this idempotency key is in progress")]
    IdempotencyKeyInFlight,

    /// 429: the caller is over its rate limit; answered with `Retry-After`.
    #[error("rate limited; retry after {retry_after:?}")]
    TooManyRequests {
        /// How long until a request would be accepted.
        retry_after: Duration,
    },

    /// 413: the request body is over the configured limit.
    #[error("request body too large")]
    PayloadTooLarge,

    /// 415: the body's media type is not one the endpoint reads. The message
    /// is sent.
    #[error("unsupported media type: {0}")]
    UnsupportedMediaType(String),

    /// 422: the body is well-formed but some fields are invalid; each
    /// [`FieldError`] points at one.
    #[error("validation failed: {} invalid field(s)", .0.len())]
    Validation(Vec<FieldError>),

    /// 503: the request did not finish within the configured request
    /// timeout (including time queued behind the concurrency limit).
    ///
    /// 503 rather than 408: 408 tells the client it was too slow to send
    /// its request, and browsers and HTTP libraries resend automatically on
    /// 408, which is wrong for a non-idempotent request that may have taken
    /// effect.
    #[error("request timed out after {0:?}")]
    Timeout(Duration),

    /// 503: a dependency (the database) is unreachable or not ready.
    /// `detail` is sent and must be safe to show; `source` is logged only.
    #[error("service unavailable: {detail}")]
    Unavailable {
        /// Client-safe summary, e.g. "database unreachable".
        detail: String,
        /// The underlying error, logged at warn.
        #[source]
        source: Option<BoxError>,
    },

    /// 500: our fault. The source chain is logged at error; the client gets
    /// only a generic problem and the request id.
    #[error("internal error")]
    Internal(#[source] BoxError),
}

impl ApiError {
    /// 500 from any error.
    pub fn internal(source: impl Into<BoxError>) -> Self {
        Self::Internal(source.into())
    }

    /// 503 with a client-safe `detail` and no underlying error.
    pub fn unavailable(detail: impl Into<String>) -> Self {
        Self::Unavailable {
            detail: detail.into(),
            source: None,
        }
    }

    /// 422 for a single field.
    pub fn invalid_field(pointer: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::Validation(vec![FieldError::new(pointer, detail)])
    }

    /// The HTTP status this error is answered with.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound { .. } => StatusCode::NOT_FOUND,
            Self::AlreadyExists { .. } | Self::Conflict(_) | Self::IdempotencyKeyInFlight => {
                StatusCode::CONFLICT
            }
            Self::PreconditionFailed(_) => StatusCode::PRECONDITION_FAILED,
            Self::IdempotencyKeyReused => StatusCode::UNPROCESSABLE_ENTITY,
            Self::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::Validation(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::Timeout(_) | Self::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The problem sent to the client. Contains nothing from a 5xx's source.
    pub fn to_problem(&self) -> Problem {
        let status = self.status();
        let base = Problem::from_status(status);
        match self {
            Self::BadRequest(msg)
            | Self::Unauthorized(msg)
            | Self::Forbidden(msg)
            | Self::Conflict(msg)
            | Self::PreconditionFailed(msg)
            | Self::UnsupportedMediaType(msg) => base.with_detail(msg.clone()),
            Self::NotFound { resource, id } => {
                base.with_detail(format!("{resource} {id} not found"))
            }
            Self::AlreadyExists { resource, id } => {
                Problem::new(status, "already-exists", "Already exists")
                    .with_detail(format!("{resource} {id} already exists"))
            }
            Self::IdempotencyKeyReused => {
                Problem::new(status, "idempotency-key-reused", "Idempotency key reused")
                    .with_detail(
                        "this Idempotency-Key was used for a different request; use a new key",
                    )
            }
            Self::IdempotencyKeyInFlight => {
                Problem::new(status, "idempotency-key-in-flight", "Request in progress")
                    .with_detail(
                        "the first request with this Idempotency-Key has not finished; retry",
                    )
            }
            Self::TooManyRequests { retry_after } => base.with_detail(format!(
                "over the rate limit; retry in {} s",
                retry_after.as_secs().saturating_add(1)
            )),
            Self::PayloadTooLarge => base.with_detail("the request body is over the size limit"),
            Self::Validation(errors) => base
                .with_detail("the request body has invalid fields")
                .with_errors(errors.clone()),
            Self::Timeout(after) => Problem::new(status, "timeout", "Request timed out")
                .with_detail(format!("the request did not complete within {after:?}")),
            Self::Unavailable { detail, .. } => base.with_detail(detail.clone()),
            Self::Internal(_) => base,
        }
    }
}

/// `e` and its sources, joined by `: `, for the log.
pub(crate) fn error_chain(e: &(dyn StdError + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let _ = write!(out, ": {s}");
        source = s.source();
    }
    out
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match &self {
            Self::Internal(source) => {
                tracing::error!(error = %error_chain(source.as_ref()), "internal error");
            }
            Self::Unavailable {
                detail,
                source: Some(source),
            } => tracing::warn!(error = %error_chain(source.as_ref()), %detail, "unavailable"),
            Self::Unavailable {
                detail,
                source: None,
            } => tracing::warn!(%detail, "unavailable"),
            Self::Timeout(after) => tracing::warn!(?after, "request timed out"),
            other => tracing::debug!(error = %other, "client error"),
        }
        let mut response = self.to_problem().into_response();
        if matches!(self, Self::Unauthorized(_)) {
            response
                .headers_mut()
                .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let Self::TooManyRequests { retry_after } = &self {
            // Whole seconds, rounded up (RFC 9110 §10.2.3).
            let secs = retry_after.as_secs().saturating_add(1);
            response
                .headers_mut()
                .insert(http::header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

/// The one mapping of storage errors to HTTP:
///
/// - not found → 404, already exists → 409, changed since the version
///   given (`If-Match`) → 412;
/// - an id or paging cursor the client sent that does not parse → 400;
/// - database unreachable, or its schema not the one this binary needs
///   → 503 with a client-safe summary;
/// - anything else → 500.
///
/// The store's own message goes to the log for 5xx (it may name paths or
/// schema versions), and to the client only for the 4xx above, whose
/// messages carry just what the client sent and the expected pattern.
impl From<store::Error> for ApiError {
    fn from(e: store::Error) -> Self {
        use store::Error as E;
        let unavailable = |detail: &str, e: E| Self::Unavailable {
            detail: detail.to_owned(),
            source: Some(Box::new(e)),
        };
        match e {
            E::NotFound { kind, id } => Self::NotFound {
                resource: kind.to_owned(),
                id,
            },
            E::AlreadyExists { kind, id } => Self::AlreadyExists {
                resource: kind.to_owned(),
                id,
            },
            e @ (E::InvalidId { .. } | E::InvalidCursor | E::InvalidDocument { .. }) => {
                Self::BadRequest(e.to_string())
            }
            E::Modified { kind, id } => Self::PreconditionFailed(format!(
                "{kind} {id} changed meanwhile; read it again for its current ETag"
            )),
            e @ E::VersionConflict { .. } => Self::PreconditionFailed(e.to_string()),
            e @ E::Unavailable(_) => unavailable("database unreachable", e),
            e @ E::MigrationsPending { .. } => {
                unavailable("database migrations pending; run `fleetmq migrate`", e)
            }
            e @ E::DatabaseNewer { .. } => {
                unavailable("database schema is newer than this server", e)
            }
            e @ (E::MigrationChanged { .. }
            | E::MigrationUnknown { .. }
            | E::MigrationDirty { .. }) => {
                unavailable("database migrations do not match this server", e)
            }
            e => Self::Internal(Box::new(e)),
        }
    }
}

/// Token problems are the client's (401, the message is safe to send:
/// it never contains the token); key storage problems are ours.
impl From<crate::auth::AuthError> for ApiError {
    fn from(e: crate::auth::AuthError) -> Self {
        use crate::auth::AuthError as A;
        match e {
            A::Store(e) => Self::from(e),
            e if e.is_client_error() => Self::Unauthorized(e.to_string()),
            e => Self::Internal(Box::new(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt as _;

    async fn body_json(response: Response) -> serde_json::Value {
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[tokio::test]
    async fn validation_renders_problem_with_pointers() {
        let response = ApiError::invalid_field("/id", "must match [a-z0-9-]{3,63}").into_response();
        assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(response.headers()[CONTENT_TYPE], PROBLEM_JSON);
        let body = body_json(response).await;
        assert_eq!(body["type"], "https://fleetmq.dev/problems/validation");
        assert_eq!(body["status"], 422);
        assert_eq!(body["errors"][0]["pointer"], "/id");
    }

    #[tokio::test]
    async fn internal_hides_its_source() {
        let response = ApiError::internal(std::io::Error::other("disk on fire at /secret/path"))
            .into_response();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let body = body_json(response).await;
        assert!(!body.to_string().contains("secret"), "{body}");
        assert!(body.get("detail").is_none());
    }

    #[tokio::test]
    async fn unauthorized_asks_for_bearer() {
        let response = ApiError::Unauthorized("token expired".into()).into_response();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(response.headers()[WWW_AUTHENTICATE], "Bearer");
    }

    #[test]
    fn statuses_without_a_kind_are_about_blank() {
        let p = Problem::from_status(StatusCode::IM_A_TEAPOT);
        assert_eq!(p.type_uri, "about:blank");
        assert_eq!(p.title, "I'm a teapot");
        assert_eq!(p.status, 418);
    }

    #[test]
    fn timeout_is_503_with_its_own_type() {
        let p = ApiError::Timeout(Duration::from_secs(30)).to_problem();
        assert_eq!(p.status, 503);
        assert_eq!(p.type_uri, "https://fleetmq.dev/problems/timeout");
    }

    #[test]
    fn store_errors_map_once() {
        let cases = [
            (
                store::Error::NotFound {
                    kind: "device",
                    id: "d1".into(),
                },
                404,
            ),
            (
                store::Error::AlreadyExists {
                    kind: "tenant",
                    id: "acme".into(),
                },
                409,
            ),
            (store::Error::InvalidCursor, 400),
            (
                store::Error::MigrationsPending {
                    applied: 1,
                    latest: 2,
                },
                503,
            ),
            (store::Error::MigrationDirty { version: 3 }, 503),
        ];
        for (e, status) in cases {
            let api = ApiError::from(e);
            assert_eq!(api.status().as_u16(), status, "{api:?}");
        }
        let p = ApiError::from(store::Error::NotFound {
            kind: "device",
            id: "d1".into(),
        })
        .to_problem();
        assert_eq!(p.detail.as_deref(), Some("device d1 not found"));
    }
}
