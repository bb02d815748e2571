//! `GET /v1/tenants/{t}/events/stream`: the tenant's platform events as
//! server-sent events, for the dashboard (any role of the tenant).
//!
//! Each event: `id:` the event id, `event:` its type, `data:` JSON
//! `{type, timestamp, data, device, seq}` (the webhook body, plus the device
//! and its sequence number). A client that falls too far behind, or whose
//! tenant's events were dropped before they reached the stream (the
//! tenant's share of the platform event queue overflowed), gets a `lagged`
//! event saying how many it missed, never a silent gap; counted in
//! `fleetmq_sse_events_missed_total{tenant}`. Only events
//! published after the client connected are sent (no replay). Streams end
//! when the server shuts down ([`crate::EventHub::close_streams`]).

use std::collections::BTreeSet;
use std::time::Duration;

use axum::extract::RawQuery;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use futures::Stream;
use serde_json::json;
use store::DeviceId;
use tokio::sync::broadcast::error::RecvError;

use utoipa_axum::routes;

use super::Routes;
use super::openapi::NoSuchTenant;
use super::scope::{InTenant, Read, TenantPath};
use crate::ApiError;
use crate::events::{PlatformEvent, StreamItem};

/// Time between keep-alive comments, so proxies keep the stream open.
const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// Most comma-separated type patterns in `?type=`.
const MAX_TYPE_PATTERNS: usize = 32;

pub(crate) fn router() -> Routes {
    Routes::new().routes(routes!(stream))
}

/// Which events a client wants.
#[derive(Debug, Default, PartialEq)]
struct EventFilter {
    devices: BTreeSet<String>,
    types: Vec<String>,
}

impl EventFilter {
    fn parse(raw: Option<&str>) -> Result<EventFilter, ApiError> {
        let mut filter = EventFilter::default();
        for pair in raw.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            // Ids and type names need no percent-decoding except the comma.
            let value = value.replace("%2C", ",").replace("%2c", ",");
            let items = value.split(',').filter(|v| !v.is_empty());
            match name {
                "device" => {
                    for d in items {
                        DeviceId::parse(d).map_err(|_| {
                            ApiError::BadRequest(format!("`device`: {d:?} is not a device id"))
                        })?;
                        filter.devices.insert(d.to_owned());
                    }
                }
                "type" => {
                    for ty in items {
                        if ty.len() > 128
                            || !ty
                                .chars()
                                .all(|c| c.is_ascii_alphanumeric() || "._-*".contains(c))
                        {
                            return Err(ApiError::BadRequest(format!(
                                "`type`: {ty:?} is not an event type or `prefix.*`"
                            )));
                        }
                        filter.types.push(ty.to_owned());
                    }
                    if filter.types.len() > MAX_TYPE_PATTERNS {
                        return Err(ApiError::BadRequest(format!(
                            "at most {MAX_TYPE_PATTERNS} `type` patterns"
                        )));
                    }
                }
                other => {
                    return Err(ApiError::BadRequest(format!(
                        "unknown query parameter `{other}`; use `device` and `type`"
                    )));
                }
            }
        }
        Ok(filter)
    }

    fn accepts(&self, tenant: &str, event: &PlatformEvent) -> bool {
        event.tenant == tenant
            && (self.devices.is_empty()
                || event
                    .device
                    .as_ref()
                    .is_some_and(|d| self.devices.contains(d)))
            && (self.types.is_empty()
                || self
                    .types
                    .iter()
                    .any(|p| ::events::pattern_matches(p, &event.event_type)))
    }
}

fn sse_event(event: &PlatformEvent) -> SseEvent {
    let body = json!({
        "type": event.event_type,
        "timestamp": event.timestamp,
        "data": event.data,
        "device": event.device,
        "seq": event.seq,
    });
    SseEvent::default()
        .id(event.id.clone())
        .event(event.event_type.clone())
        .data(body.to_string())
}

/// Stream the tenant's events (any role of the tenant).
///
/// `?device=d1,d2` and `?type=device.*,state.reported` (comma-separated;
/// `prefix.*` patterns) narrow it. Keep-alive comments every 15 s.
/// One server-sent event as a client parses it (each field a line of the
/// stream); `data` is the JSON text of the event body.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)] // documents the stream's frames; never built as a value
pub(crate) struct SseFrame {
    /// The event id (UUIDv7); absent on `lagged`.
    id: Option<String>,
    /// The event type, or `lagged`.
    event: String,
    /// `{type, timestamp, data, device, seq}`, or `{missed}` for `lagged`.
    data: String,
}

#[utoipa::path(get, path = "/v1/tenants/{t}/events/stream", operation_id = "stream_events", tag = "events",
    params(TenantPath,
        ("device" = Option<String>, Query, description = "Comma-separated device ids (each at most 128 characters)",
            pattern = "^[A-Za-z0-9._-]+(,[A-Za-z0-9._-]+)*$"),
        ("type" = Option<String>, Query, description = "Comma-separated event types or `prefix.*` patterns (at most 32, each at most 128 characters)",
            pattern = "^[A-Za-z0-9._*-]+(,[A-Za-z0-9._*-]+)*$")),
    responses(
        (status = 200, description = "`text/event-stream`: `id` = event id, `event` = type, `data` = `{type, timestamp, data, device, seq}`; a `lagged` event `{missed}` when the client fell behind", content_type = "text/event-stream", body = SseFrame),
        (status = 400, description = "Bad filter", body = crate::Problem, content_type = "application/problem+json"),
        NoSuchTenant,
    ))]
pub(crate) async fn stream(
    scope: InTenant<Read>,
    RawQuery(raw): RawQuery,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, std::convert::Infallible>>>, ApiError> {
    let t = scope.t().to_owned();
    let filter = EventFilter::parse(raw.as_deref())?;
    scope.store().get_tenant(&t).await?;
    let receiver = scope.state().events().subscribe(&t);
    let closing = scope.state().events().closing();
    tracing::debug!(tenant = %t, subject = %scope.who.subject, "event stream opened");
    let events = futures::stream::unfold(
        (receiver, closing, filter, t),
        |(mut receiver, mut closing, filter, t)| async move {
            loop {
                let received = tokio::select! {
                    received = receiver.recv() => received,
                    // Shutdown (or the hub gone): end the stream.
                    _ = closing.wait_for(|closing| *closing) => return None,
                };
                let missed = match received {
                    Ok(StreamItem::Event(event)) if filter.accepts(&t, &event) => {
                        return Some((Ok(sse_event(&event)), (receiver, closing, filter, t)));
                    }
                    Ok(StreamItem::Event(_)) => continue,
                    // Dropped before the hub: this stream could not see them.
                    Ok(StreamItem::Missed(missed)) => missed,
                    // This stream was too slow for its tenant's own events.
                    Err(RecvError::Lagged(missed)) => missed,
                    Err(RecvError::Closed) => return None,
                };
                tracing::debug!(tenant = %t, missed, "event stream lagged");
                metrics::counter!("fleetmq_sse_events_missed_total", "tenant" => t.clone())
                    .increment(missed);
                let lagged = SseEvent::default()
                    .event("lagged")
                    .data(json!({ "missed": missed }).to_string());
                return Some((Ok(lagged), (receiver, closing, filter, t)));
            }
        },
    );
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(KEEP_ALIVE)))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn filters_parse_and_match() {
        let f = EventFilter::parse(Some("device=d1,d2&type=device.*%2Cstate.desired")).unwrap();
        assert_eq!(f.devices.len(), 2);
        assert_eq!(f.types, ["device.*", "state.desired"]);
        let ev = |tenant: &str, device: Option<&str>, ty: &str| {
            let e = PlatformEvent::named(tenant, ty, json!({}));
            match device {
                Some(d) => e.for_device(d, None),
                None => e,
            }
        };
        assert!(f.accepts("acme", &ev("acme", Some("d1"), "device.connected")));
        assert!(f.accepts("acme", &ev("acme", Some("d2"), "state.desired")));
        assert!(!f.accepts("acme", &ev("acme", Some("d3"), "device.connected")));
        assert!(!f.accepts("acme", &ev("acme", None, "device.connected")));
        assert!(!f.accepts("acme", &ev("acme", Some("d1"), "state.reported")));
        assert!(!f.accepts("acme", &ev("other", Some("d1"), "device.connected")));
        assert!(
            EventFilter::parse(None)
                .unwrap()
                .accepts("acme", &ev("acme", None, "x"))
        );
        assert!(EventFilter::parse(Some("device=a b")).is_err());
        assert!(EventFilter::parse(Some("type=a<b")).is_err());
        assert!(EventFilter::parse(Some("nope=1")).is_err());
    }
}
