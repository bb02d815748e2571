//! Entity tags for tenants and devices (RFC 9110 §8.8.3, §13.1.1): `GET`
//! and `PATCH` answer with `ETag`, and a `PATCH` with `If-Match` applies only
//! to the version it names (else 412), so two clients editing one device
//! cannot overwrite each other unknowingly. `If-Match` is optional.
//!
//! The tag is a strong validator: a digest of the JSON representation, so
//! it changes whenever any field a client sees does.

use aws_lc_rs::digest::{SHA256, digest};
use axum::response::{IntoResponseParts, ResponseParts};
use http::header::{ETAG, IF_MATCH};
use http::{HeaderMap, HeaderValue};
use serde::Serialize;

use crate::ApiError;

/// The `ETag` of a representation, quoted: `"` + 32 hex digits + `"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ETag(String);

impl ETag {
    /// The tag of `value` as it is sent.
    pub(crate) fn of<T: Serialize>(value: &T) -> Result<ETag, ApiError> {
        let json = serde_json::to_vec(value).map_err(ApiError::internal)?;
        let hash = digest(&SHA256, &json);
        let hex: String = hash
            .as_ref()
            .iter()
            .take(16)
            .map(|b| format!("{b:02x}"))
            .collect();
        Ok(ETag(format!("\"{hex}\"")))
    }

    /// Refuses (412) unless `headers` has no `If-Match`, or one that names
    /// this tag or `*`. Weak tags never match (strong comparison).
    pub(crate) fn check_if_match(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        let mut given = headers.get_all(IF_MATCH).iter().peekable();
        if given.peek().is_none() {
            return Ok(());
        }
        let matches = given
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .any(|tag| tag == "*" || tag == self.0);
        if matches {
            Ok(())
        } else {
            Err(ApiError::PreconditionFailed(
                "If-Match does not name the current version; read it again for its current ETag"
                    .to_owned(),
            ))
        }
    }
}

impl IntoResponseParts for ETag {
    type Error = ApiError;

    fn into_response_parts(self, mut res: ResponseParts) -> Result<ResponseParts, Self::Error> {
        let value = HeaderValue::from_str(&self.0).map_err(ApiError::internal)?;
        res.headers_mut().insert(ETAG, value);
        Ok(res)
    }
}

/// `(ETag, body)`: a representation with its tag.
pub(crate) fn tagged<T: Serialize>(body: T) -> Result<(ETag, crate::ApiJson<T>), ApiError> {
    Ok((ETag::of(&body)?, crate::ApiJson(body)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(IF_MATCH, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn tags_follow_the_representation() {
        let a = ETag::of(&serde_json::json!({"id": "d", "enabled": true})).unwrap();
        let b = ETag::of(&serde_json::json!({"id": "d", "enabled": false})).unwrap();
        assert_ne!(a, b);
        assert_eq!(a.0.len(), 34);
        assert!(a.0.starts_with('"') && a.0.ends_with('"'));
    }

    #[test]
    fn if_match_is_optional_and_strong() {
        let tag = ETag::of(&1).unwrap();
        assert!(tag.check_if_match(&HeaderMap::new()).is_ok());
        assert!(tag.check_if_match(&headers(&["*"])).is_ok());
        assert!(tag.check_if_match(&headers(&[&tag.0])).is_ok());
        let list = format!("\"other\", {}", tag.0);
        assert!(tag.check_if_match(&headers(&[&list])).is_ok());
        assert!(tag.check_if_match(&headers(&["\"other\"", &tag.0])).is_ok());
        let weak = format!("W/{}", tag.0);
        for refused in [&weak[..], "\"other\"", ""] {
            let e = tag.check_if_match(&headers(&[refused])).unwrap_err();
            assert_eq!(
                e.status(),
                http::StatusCode::PRECONDITION_FAILED,
                "{refused:?}"
            );
        }
    }
}
