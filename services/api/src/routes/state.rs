//! A device's live side: `GET /v1/tenants/{t}/devices/{d}/state` (presence,
//! the reported/desired document, its retained topics), `PUT …/state/desired`
//! (a JSON merge patch, `If-Match` on the desired version, then published
//! retained to the device) and `GET …/messages` (what it last published).
//! Reading needs any role of the tenant; desired needs operator and up.

use ::events as catalogue;
use ::events::payload::StateDesired;
use axum::extract::RawQuery;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use chrono::{DateTime, Utc};
use http::HeaderValue;
use http::header::{ETAG, IF_MATCH};
use ids::topics;
use serde::Serialize;
use serde_json::{Value, json};
use store::{DeviceState, PresenceStatus, RetainedMessage};
use utoipa::ToSchema;
use utoipa_axum::routes;

use super::Routes;
use super::openapi::{MqttUnavailable, NoSuchDevice};
use super::scope::{DevicePath, InDevice, Read, Write};
use crate::device_io::RecentMessage;
use crate::model::item_list;
use crate::{ApiError, ApiJson, AppState};

/// Retained messages listed per topic prefix of a device.
const MAX_RETAINED_PER_PREFIX: u32 = 100;
/// Messages `GET …/messages` returns at most.
const MAX_RECENT: usize = 100;

pub(crate) fn router() -> Routes {
    Routes::new()
        .routes(routes!(read_state))
        .routes(routes!(put_desired))
        .routes(routes!(recent_messages))
}

/// Versions of the two halves of the state document.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct StateVersions {
    pub reported: i64,
    pub desired: i64,
}

/// A payload as text when it is UTF-8, else base64.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Payload {
    pub payload: String,
    /// `utf-8` or `base64`.
    #[schema(example = "utf-8")]
    pub encoding: &'static str,
}

impl Payload {
    fn of(bytes: &[u8]) -> Payload {
        match std::str::from_utf8(bytes) {
            Ok(text) => Payload {
                payload: text.to_owned(),
                encoding: "utf-8",
            },
            Err(_) => Payload {
                payload: BASE64.encode(bytes),
                encoding: "base64",
            },
        }
    }
}

/// A retained message on one of the device's topics.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct RetainedView {
    #[schema(example = "devices/sensor-1/status")]
    pub topic: String,
    #[serde(flatten)]
    pub payload: Payload,
    pub qos: u8,
    pub updated_at: DateTime<Utc>,
}

impl From<RetainedMessage> for RetainedView {
    fn from(m: RetainedMessage) -> Self {
        RetainedView {
            payload: Payload::of(&m.payload),
            topic: m.topic,
            qos: m.qos,
            updated_at: m.updated_at,
        }
    }
}

/// What a device is doing: presence, its state document, its retained
/// topics (`devices/{d}/…` and `commands/{d}/…`).
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct DeviceStateView {
    /// `online` or `offline` (a device that never connected is offline).
    #[schema(example = "online")]
    pub status: &'static str,
    pub last_seen: Option<DateTime<Utc>>,
    /// Since when it is connected (while online).
    pub connected_at: Option<DateTime<Utc>>,
    /// How it authenticated on its current (or last) connection:
    /// `certificate:{serial}`, `password` or `none`.
    #[schema(example = "certificate:5f0e8c1d2a3b4c5d6e7f8091a2b3c4d5")]
    pub credential: Option<String>,
    /// Its address on its current (or last) connection.
    #[schema(example = "192.0.2.7:50312")]
    pub remote_addr: Option<String>,
    /// MQTT version of its current (or last) connection: `3.1.1` or `5.0`.
    #[schema(example = "5.0")]
    pub protocol: Option<String>,
    /// Why its last connection ended (while offline).
    #[schema(example = "KeepAliveTimeout (0x8D)")]
    pub disconnect_reason: Option<String>,
    #[schema(value_type = Object)]
    pub reported: Value,
    #[schema(value_type = Object)]
    pub desired: Value,
    /// Desired keys whose value differs from reported.
    #[schema(value_type = Object)]
    pub delta: Value,
    pub versions: StateVersions,
    pub reported_at: Option<DateTime<Utc>>,
    pub desired_at: Option<DateTime<Utc>>,
    /// Set when the device last published something on its reported topic
    /// that is not a JSON object (kept as a retained message).
    pub reported_error: Option<String>,
    pub retained: Vec<RetainedView>,
}

fn etag(desired_version: i64) -> HeaderValue {
    // Digits and quotes only: always a valid header value.
    HeaderValue::from_str(&format!("\"{desired_version}\""))
        .unwrap_or(HeaderValue::from_static("\"0\""))
}

/// `If-Match`: `None` when absent or `*` (any version); else the version
/// in its (possibly weak) entity tag.
fn if_match_version(headers: &HeaderMap) -> Result<Option<i64>, ApiError> {
    let Some(value) = headers.get(IF_MATCH) else {
        return Ok(None);
    };
    let bad = || {
        ApiError::BadRequest(
            "`If-Match` must be `*` or the desired version's ETag, e.g. `\"3\"`".to_owned(),
        )
    };
    let text = value.to_str().map_err(|_| bad())?.trim();
    if text == "*" {
        return Ok(None);
    }
    let tag = text.strip_prefix("W/").unwrap_or(text);
    tag.strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .and_then(|t| t.parse::<i64>().ok())
        .map(Some)
        .ok_or_else(bad)
}

/// A device's state (any role of the tenant). `ETag` is the desired version.
#[utoipa::path(get, path = "/v1/tenants/{t}/devices/{d}/state", operation_id = "get_device_state", tag = "state",
    params(DevicePath),
    responses(
        (status = 200, description = "The device's state", body = DeviceStateView,
         headers(("ETag" = String, description = "The desired version, quoted"))),
        NoSuchDevice,
    ))]
pub(crate) async fn read_state(at: InDevice<Read>) -> Result<Response, ApiError> {
    let (t, d) = (at.t(), at.d());
    let document = at.store().get_device_state(t, d).await?;
    let view = state_view(at.state(), t, d, document).await?;
    Ok(([(ETAG, etag(view.versions.desired))], ApiJson(view)).into_response())
}

/// `document` with the device's presence and retained topics as they are now.
async fn state_view(
    state: &AppState,
    t: &str,
    d: &str,
    document: DeviceState,
) -> Result<DeviceStateView, ApiError> {
    let presence = state.store.get_presence(t, d).await?;
    let now = Utc::now();
    let mut retained = state
        .store
        .list_retained(t, &topics::device_prefix(d), now, MAX_RETAINED_PER_PREFIX)
        .await?;
    retained.extend(
        state
            .store
            .list_retained(t, &topics::command_prefix(d), now, MAX_RETAINED_PER_PREFIX)
            .await?,
    );
    let online = presence
        .as_ref()
        .is_some_and(|p| p.status == PresenceStatus::Online);
    let view = DeviceStateView {
        status: if online { "online" } else { "offline" },
        last_seen: presence.as_ref().map(|p| p.last_seen),
        connected_at: presence
            .as_ref()
            .filter(|_| online)
            .and_then(|p| p.connected_at),
        credential: presence.as_ref().and_then(|p| p.credential.clone()),
        remote_addr: presence.as_ref().and_then(|p| p.remote_addr.clone()),
        protocol: presence.as_ref().and_then(|p| p.protocol.clone()),
        disconnect_reason: presence
            .as_ref()
            .filter(|_| !online)
            .and_then(|p| p.disconnect_reason.clone()),
        delta: document.delta(),
        versions: StateVersions {
            reported: document.reported_version,
            desired: document.desired_version,
        },
        reported_at: document.reported_at,
        desired_at: document.desired_at,
        reported_error: document.reported_error,
        reported: document.reported,
        desired: document.desired,
        retained: retained.into_iter().map(RetainedView::from).collect(),
    };
    Ok(view)
}

/// Change a device's desired state with a JSON merge patch (operator,
/// tenant-admin), then publish the whole desired document retained (QoS 1)
/// to `commands/{d}/state/desired`.
///
/// With `If-Match: "N"`, only if desired is still at version N (else 412).
/// 503 when the MQTT broker is not available: nothing is stored then. If
/// the publish fails after the change was stored, the answer is 503 too;
/// `PUT {}` publishes the stored document again.
#[utoipa::path(put, path = "/v1/tenants/{t}/devices/{d}/state/desired", operation_id = "put_desired_state", tag = "state",
    params(DevicePath,
        ("If-Match" = Option<String>, Header, nullable = false, description = "The ETag of the desired version this change is based on, or `*`",
            pattern = "^(\\*|(W/)?\"[0-9]{1,18}\")$")),
    request_body(content = Object, content_type = "application/merge-patch+json"),
    responses(
        (status = 200, description = "The device's state after the change", body = DeviceStateView,
         headers(("ETag" = String, description = "The new desired version, quoted"))),
        (status = 400, description = "The patch is not a JSON object", body = crate::Problem, content_type = "application/problem+json"),
        (status = 403, description = "Viewer role", body = crate::Problem, content_type = "application/problem+json"),
        NoSuchDevice,
        (status = 412, description = "Desired is no longer at the `If-Match` version", body = crate::Problem, content_type = "application/problem+json"),
        MqttUnavailable,
    ))]
pub(crate) async fn put_desired(
    at: InDevice<Write>,
    headers: HeaderMap,
    ApiJson(patch): ApiJson<Value>,
) -> Result<Response, ApiError> {
    let (t, d) = (at.t(), at.d());
    let expected = if_match_version(&headers)?;
    let commands = at
        .state()
        .commands
        .clone()
        .ok_or_else(|| ApiError::unavailable("MQTT not available"))?;
    // The entry and `at.state().desired` give the new version, which the store
    // sets; the event commits with the document, whether or not the
    // broker then takes it.
    let stored = |document: &DeviceState| {
        at.audit(
            "device.state.desired",
            format!("tenants/{t}/devices/{d}/state"),
            json!({ "version": document.desired_version }),
        )
        .with_event(at.event(catalogue::Event::StateDesired(StateDesired {
            device_id: d.to_string(),
            desired: document.desired.clone(),
            version: document.desired_version,
            delta: document.delta(),
        })))
    };
    let document = at
        .store()
        .merge_desired(t, d, &patch, expected, Utc::now(), Some(&stored))
        .await?;
    let topic = topics::desired_state(d);
    let payload = serde_json::to_vec(&document.desired).map_err(ApiError::internal)?;
    commands
        .publish_retained(t, &topic, payload)
        .await
        .map_err(|e| ApiError::Unavailable {
            detail: format!(
                "desired state stored at version {} but not published; PUT {{}} to publish it again",
                document.desired_version
            ),
            source: Some(Box::new(e)),
        })?;
    tracing::info!(tenant = %t, device = %d, version = document.desired_version, "desired state published");
    let version = document.desired_version;
    let view = state_view(at.state(), t, d, document).await?;
    Ok(([(ETAG, etag(version))], ApiJson(view)).into_response())
}

/// A message a device published.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct RecentMessageView {
    pub topic: String,
    #[serde(flatten)]
    pub payload: Payload,
    /// The payload was longer and has been cut.
    pub truncated: bool,
    pub qos: u8,
    pub retain: bool,
    pub received_at: DateTime<Utc>,
}

impl From<RecentMessage> for RecentMessageView {
    fn from(m: RecentMessage) -> Self {
        RecentMessageView {
            payload: Payload::of(&m.payload),
            topic: m.topic,
            truncated: m.truncated,
            qos: m.qos,
            retain: m.retain,
            received_at: m.received_at,
        }
    }
}

item_list!(
    pub(crate) RecentMessagesView,
    RecentMessageView,
    "The device's last messages.",
    items = "Newest first."
);

/// The last messages a device published, newest first (any role of the
/// tenant). `?limit=` 1 to 100, default 20. Kept in memory by this node:
/// bounded per device, and empty after a restart.
#[utoipa::path(get, path = "/v1/tenants/{t}/devices/{d}/messages", operation_id = "list_device_messages", tag = "state",
    params(DevicePath,
        ("limit" = Option<u32>, Query, description = "1 to 100; default 20", minimum = 1, maximum = 100)),
    responses(
        (status = 200, description = "The messages", body = RecentMessagesView),
        NoSuchDevice,
        MqttUnavailable,
    ))]
pub(crate) async fn recent_messages(
    at: InDevice<Read>,
    RawQuery(raw): RawQuery,
) -> Result<ApiJson<RecentMessagesView>, ApiError> {
    let (t, d) = (at.t(), at.d());
    let limit = parse_limit(raw.as_deref())?;
    let recent = at
        .state()
        .recent_messages
        .clone()
        .ok_or_else(|| ApiError::unavailable("MQTT not available"))?;
    at.store().get_device(t, d).await?;
    Ok(ApiJson(recent.recent(t, d, limit).into()))
}

fn parse_limit(raw: Option<&str>) -> Result<usize, ApiError> {
    let mut limit = 20;
    for pair in raw.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let bad =
            || ApiError::BadRequest("`limit` must be 1 to 100; no other parameters".to_owned());
        let value = pair.strip_prefix("limit=").ok_or_else(bad)?;
        limit = value
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=MAX_RECENT).contains(n))
            .ok_or_else(bad)?;
    }
    Ok(limit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn if_match_forms() {
        let with = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(IF_MATCH, HeaderValue::from_str(v).unwrap());
            if_match_version(&h)
        };
        assert_eq!(if_match_version(&HeaderMap::new()).unwrap(), None);
        assert_eq!(with("*").unwrap(), None);
        assert_eq!(with("\"3\"").unwrap(), Some(3));
        assert_eq!(with("W/\"12\"").unwrap(), Some(12));
        assert!(with("3").is_err());
        assert!(with("\"x\"").is_err());
    }

    #[test]
    fn payloads_are_text_or_base64() {
        let text = Payload::of(b"{\"on\":true}");
        assert_eq!(
            (text.payload.as_str(), text.encoding),
            ("{\"on\":true}", "utf-8")
        );
        let binary = Payload::of(&[0xff, 0x00]);
        assert_eq!(
            (binary.payload.as_str(), binary.encoding),
            ("/wA=", "base64")
        );
    }

    #[test]
    fn limits() {
        assert_eq!(parse_limit(None).unwrap(), 20);
        assert_eq!(parse_limit(Some("limit=5")).unwrap(), 5);
        assert!(parse_limit(Some("limit=0")).is_err());
        assert!(parse_limit(Some("limit=101")).is_err());
        assert!(parse_limit(Some("other=1")).is_err());
    }
}
