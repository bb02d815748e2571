//! The operator's view of a tenant's persistent MQTT sessions (issue 14):
//! `GET /v1/tenants/{t}/sessions` (paged), `GET …/sessions/{client_id}`,
//! `DELETE …/sessions/{client_id}` (ends it with its queue: its
//! connection, if any, is closed with 0x98 Administrative action). Read
//! from the database, so `connected` and `node` hold across nodes. Clean
//! sessions are never stored and are not listed.

use axum::Router;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::routing::get;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::json;
use utoipa::ToSchema;

use super::audit::{Event, RequestId, record};
use super::query;
use crate::auth::{Access, Principal};
use crate::{ApiError, ApiJson, AppState};

pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/tenants/{t}/sessions", get(list))
        .route(
            "/v1/tenants/{t}/sessions/{client_id}",
            get(read).delete(remove),
        )
}

/// A persistent MQTT session.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub(crate) struct Session {
    /// The MQTT client id.
    client_id: String,
    /// The device id or credential that created it (only it may resume it).
    owner: String,
    /// `3.1.1` or `5.0`.
    protocol: String,
    /// Whether a connection holds it now.
    connected: bool,
    /// The node serving it, or that served it last.
    node: Option<String>,
    /// Its subscriptions.
    subscriptions: u64,
    /// QoS 1/2 messages waiting to be sent.
    queued: u64,
    /// Messages sent and not yet acknowledged by the client.
    in_flight: u64,
    /// When it ends unless the client comes back; `null` while connected
    /// or for a session that never expires.
    expires_at: Option<DateTime<Utc>>,
    connected_at: DateTime<Utc>,
    disconnected_at: Option<DateTime<Utc>>,
}

impl From<store::SessionSummary> for Session {
    fn from(s: store::SessionSummary) -> Self {
        Session {
            client_id: s.client_id,
            owner: s.owner,
            protocol: s.protocol,
            connected: s.connected,
            node: s.node_id,
            subscriptions: s.subscriptions,
            queued: s.queued,
            in_flight: s.in_flight,
            expires_at: s.expires_at,
            connected_at: s.connected_at,
            disconnected_at: s.disconnected_at,
        }
    }
}

/// A page of persistent sessions, in client id order.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub(crate) struct SessionPage {
    items: Vec<Session>,
    /// Pass as `?cursor=` for the next page; `null` on the last page.
    next_cursor: Option<String>,
}

/// List a tenant's persistent MQTT sessions (any role of the tenant).
#[utoipa::path(get, path = "/v1/tenants/{t}/sessions", operation_id = "list_sessions", tag = "sessions",
    params(("t" = String, Path, description = "Tenant id", pattern = "^[a-z0-9-]{3,63}$"),
        super::PageParams),
    responses((status = 200, description = "A page of sessions", body = SessionPage)))]
pub(crate) async fn list(
    State(state): State<AppState>,
    who: Principal,
    Path(t): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<ApiJson<SessionPage>, ApiError> {
    who.require(&t, Access::Read)?;
    let q = query::parse(raw.as_deref(), &[], &[])?;
    let page = state.store.list_sessions(&t, &q.page).await?;
    Ok(ApiJson(SessionPage {
        items: page.items.into_iter().map(Session::from).collect(),
        next_cursor: page.next_cursor,
    }))
}

/// One persistent MQTT session (any role of the tenant).
#[utoipa::path(get, path = "/v1/tenants/{t}/sessions/{client_id}", operation_id = "get_session", tag = "sessions",
    params(("t" = String, Path, description = "Tenant id", pattern = "^[a-z0-9-]{3,63}$"),
        ("client_id" = String, Path, description = "MQTT client id", min_length = 1, max_length = 1024)),
    responses((status = 200, description = "The session", body = Session)))]
pub(crate) async fn read(
    State(state): State<AppState>,
    who: Principal,
    Path((t, client_id)): Path<(String, String)>,
) -> Result<ApiJson<Session>, ApiError> {
    who.require(&t, Access::Read)?;
    Ok(ApiJson(
        state.store.session_summary(&t, &client_id).await?.into(),
    ))
}

/// End a persistent MQTT session with everything queued for it
/// (operator): its connection, if any, is closed with DISCONNECT 0x98.
/// The client's next connect starts a new session.
#[utoipa::path(delete, path = "/v1/tenants/{t}/sessions/{client_id}", operation_id = "delete_session", tag = "sessions",
    params(("t" = String, Path, description = "Tenant id", pattern = "^[a-z0-9-]{3,63}$"),
        ("client_id" = String, Path, description = "MQTT client id", min_length = 1, max_length = 1024)),
    responses((status = 204, description = "Ended")))]
pub(crate) async fn remove(
    State(state): State<AppState>,
    who: Principal,
    request_id: RequestId,
    Path((t, client_id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    who.require(&t, Access::WriteDevices)?;
    // The broker first, so that it writes nothing more for the session;
    // then the database, which also covers tenants not in memory.
    let ended = state
        .sessions()
        .is_some_and(|s| s.end_session(&t, &client_id));
    let deleted = state.store.delete_session(&t, &client_id).await?;
    if !ended && !deleted {
        return Err(ApiError::NotFound {
            resource: "session".to_owned(),
            id: client_id,
        });
    }
    // Not in the deletion's transaction: the broker's part cannot be.
    let event = Event {
        tenant: Some(&t),
        action: "session.delete",
        target: format!("tenants/{t}/sessions/{client_id}"),
        details: json!({ "connected": ended }),
    };
    record(&state, &who, &request_id, event).await?;
    Ok(StatusCode::NO_CONTENT)
}
