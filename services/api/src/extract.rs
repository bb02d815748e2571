//! Extractors whose rejections are [`ApiError`]s, so a bad request body gets
//! the same `application/problem+json` answer as every other error.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, Request};
use axum::response::{IntoResponse, Response};
use http::header::CONTENT_TYPE;
use http::{HeaderMap, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_path_to_error::Segment;

use crate::error::{ApiError, FieldError};

/// JSON body extractor and response, like [`axum::Json`], but rejections are
/// problems:
///
/// - no `application/json` (or `+json`) content type → 415;
/// - body over the limit → 413;
/// - malformed JSON or trailing data → 400;
/// - well-formed JSON of the wrong shape → 422 with one [`FieldError`] whose
///   `pointer` is the JSON pointer of the bad field (for a missing field, the
///   pointer of the field that is missing; for an unknown field, its own).
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiJson<T>(pub T);

impl<T, S> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !has_json_content_type(req.headers()) {
            return Err(ApiError::UnsupportedMediaType(
                "expected `Content-Type: application/json`".to_owned(),
            ));
        }
        let bytes = Bytes::from_request(req, state).await?;
        Self::from_bytes(&bytes)
    }
}

impl<T: DeserializeOwned> ApiJson<T> {
    /// Deserializes `bytes`, with the same errors as the extractor.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ApiError> {
        let mut de = serde_json::Deserializer::from_slice(bytes);
        let value = serde_path_to_error::deserialize(&mut de).map_err(json_error)?;
        de.end()
            .map_err(|e| ApiError::BadRequest(format!("malformed JSON: {e}")))?;
        Ok(Self(value))
    }
}

impl<T: Serialize> IntoResponse for ApiJson<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

/// A created resource carrying a secret shown this once (a password, a
/// private key): 201 with `Cache-Control: no-store`, so no cache keeps it.
#[derive(Debug)]
pub struct ShownOnce<T>(pub T);

impl<T: Serialize> IntoResponse for ShownOnce<T> {
    fn into_response(self) -> Response {
        (
            StatusCode::CREATED,
            [(http::header::CACHE_CONTROL, "no-store")],
            ApiJson(self.0),
        )
            .into_response()
    }
}

impl From<BytesRejection> for ApiError {
    fn from(rejection: BytesRejection) -> Self {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Self::PayloadTooLarge
        } else {
            Self::BadRequest(rejection.body_text())
        }
    }
}

/// `application/json` or any `application/*+json`, parameters ignored.
fn has_json_content_type(headers: &HeaderMap) -> bool {
    let Some(value) = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let essence = value
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || essence
            .strip_prefix("application/")
            .and_then(|subtype| subtype.strip_suffix("+json"))
            .is_some_and(|prefix| !prefix.is_empty())
}

fn json_error(err: serde_path_to_error::Error<serde_json::Error>) -> ApiError {
    let mut pointer = json_pointer(err.path());
    let inner = err.into_inner();
    match inner.classify() {
        serde_json::error::Category::Data => {
            // The position is in the pointer already; drop serde_json's
            // " at line L column C".
            let message = inner.to_string();
            let position = format!(" at line {} column {}", inner.line(), inner.column());
            let message = message.strip_suffix(&position).unwrap_or(&message);
            // serde reports a missing field at the object that lacks it;
            // point at the field itself.
            if let Some(field) = message
                .strip_prefix("missing field `")
                .and_then(|rest| rest.strip_suffix('`'))
            {
                push_token(&mut pointer, field);
            } else if let Some(field) = message
                .strip_prefix("unknown field `")
                .and_then(|rest| rest.split_once('`'))
                .map(|(field, _)| field)
            {
                // Likewise for a field the type does not have (deny_unknown_fields).
                let mut token = String::new();
                push_token(&mut token, field);
                if !pointer.ends_with(&token) {
                    pointer.push_str(&token);
                }
            }
            ApiError::Validation(vec![FieldError::new(pointer, message)])
        }
        serde_json::error::Category::Syntax
        | serde_json::error::Category::Eof
        | serde_json::error::Category::Io => {
            ApiError::BadRequest(format!("malformed JSON: {inner}"))
        }
    }
}

/// RFC 6901 pointer of a serde path: `""` for the root, `/a/0/b` below it.
fn json_pointer(path: &serde_path_to_error::Path) -> String {
    let mut pointer = String::new();
    for segment in path.iter() {
        match segment {
            Segment::Seq { index } => push_token(&mut pointer, &index.to_string()),
            Segment::Map { key } => push_token(&mut pointer, key),
            Segment::Enum { variant } => push_token(&mut pointer, variant),
            // Untagged or flattened content: the position within it is lost.
            Segment::Unknown => {}
        }
    }
    pointer
}

fn push_token(pointer: &mut String, token: &str) {
    pointer.push('/');
    // RFC 6901 §3: `~` is written `~0` and `/` is written `~1`.
    pointer.push_str(&token.replace('~', "~0").replace('/', "~1"));
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Device {
        id: String,
        labels: Vec<u32>,
        attributes: Option<std::collections::BTreeMap<String, u32>>,
    }

    fn field_errors(e: ApiError) -> Vec<FieldError> {
        match e {
            ApiError::Validation(errors) => errors,
            other => panic!("expected validation error, got {other:?}"),
        }
    }

    #[test]
    fn wrong_type_points_at_the_element() {
        let e = ApiJson::<Device>::from_bytes(br#"{"id":"d1","labels":[1,"x"]}"#).unwrap_err();
        let errors = field_errors(e);
        assert_eq!(errors[0].pointer, "/labels/1");
        assert!(
            errors[0].detail.starts_with("invalid type"),
            "{}",
            errors[0].detail
        );
        assert!(!errors[0].detail.contains("line"), "{}", errors[0].detail);
    }

    #[test]
    fn missing_field_points_at_the_field() {
        let e = ApiJson::<Device>::from_bytes(br#"{"labels":[]}"#).unwrap_err();
        assert_eq!(field_errors(e)[0].pointer, "/id");
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Strict {
        id: String,
        inner: Option<Box<Strict>>,
    }

    #[test]
    fn unknown_field_points_at_the_field() {
        let e = ApiJson::<Strict>::from_bytes(br#"{"id":"a","extra":1}"#).unwrap_err();
        assert_eq!(field_errors(e)[0].pointer, "/extra");
        let e =
            ApiJson::<Strict>::from_bytes(br#"{"id":"a","inner":{"id":"b","x/y":1}}"#).unwrap_err();
        assert_eq!(field_errors(e)[0].pointer, "/inner/x~1y");
    }

    #[test]
    fn map_keys_are_escaped() {
        let e =
            ApiJson::<Device>::from_bytes(br#"{"id":"d","labels":[],"attributes":{"a/b~c":"x"}}"#)
                .unwrap_err();
        assert_eq!(field_errors(e)[0].pointer, "/attributes/a~1b~0c");
    }

    #[test]
    fn syntax_errors_and_trailing_data_are_400() {
        for body in [&br#"{"id":"#[..], br#"{"id":"d","labels":[]} x"#, b""] {
            let e = ApiJson::<Device>::from_bytes(body).unwrap_err();
            assert!(matches!(e, ApiError::BadRequest(_)), "{e:?}");
        }
    }

    #[test]
    fn json_content_types() {
        let ok = [
            "application/json",
            "application/json; charset=utf-8",
            "Application/JSON",
            "application/merge-patch+json",
        ];
        let bad = [
            "text/plain",
            "application/jsonx",
            "application/",
            "json",
            "",
            "application/+jso",
        ];
        for (value, expected) in ok
            .iter()
            .map(|v| (v, true))
            .chain(bad.iter().map(|v| (v, false)))
        {
            let mut headers = HeaderMap::new();
            headers.insert(CONTENT_TYPE, value.parse().unwrap());
            assert_eq!(has_json_content_type(&headers), expected, "{value}");
        }
        assert!(!has_json_content_type(&HeaderMap::new()));
    }
}
