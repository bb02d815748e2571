//! The operator's view of a tenant's persistent MQTT sessions (issue 14):
//! `GET /v1/tenants/{t}/sessions` (paged), `GET …/sessions/{client_id}`,
//! `DELETE …/sessions/{client_id}` (ends it with its queue: its
//! connection, if any, is closed with 0x98 Administrative action). Read
//! from the database, so `connected` and `node` hold across nodes. Clean
//! sessions are never stored and are not listed. Each session's `drops`
//! come from the broker's memory on the node that answers: only a session
//! that node holds has them.

use ::events::change::Change;
use axum::extract::Path;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde::Serialize;
use serde_json::json;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::routes;

use super::Routes;
use super::query::PageQuery;
use super::scope::{InTenant, Read, TenantPath, Write};
use crate::device_io::SessionDrops;
use crate::model::page;
use crate::{ApiError, ApiJson, AppState};

pub(crate) fn router() -> Routes {
    Routes::new()
        .routes(routes!(list))
        .routes(routes!(read, remove))
}

/// The `{client_id}` of a session's path.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub(crate) struct SessionPath {
    /// MQTT client id
    #[param(min_length = 1, max_length = 1024)]
    client_id: String,
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
    /// Messages the broker dropped for it, by reason, since the node
    /// holding it in memory took it. Counted where the session is held:
    /// `null` unless the node answering this request holds it (in a
    /// cluster, ask the node in `node`; after a restart, until the
    /// session is loaded again) or when this server runs no broker.
    drops: Option<SessionDrops>,
}

impl Session {
    /// `summary` with its drop counts from this node's broker, if it holds
    /// the session.
    fn on_this_node(state: &AppState, tenant: &str, summary: store::SessionSummary) -> Self {
        let drops = state
            .drops
            .as_ref()
            .and_then(|d| d.session(tenant, &summary.client_id));
        Session {
            drops,
            ..summary.into()
        }
    }
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
            drops: None,
        }
    }
}

page!(
    SessionPage,
    Session,
    "A page of persistent sessions, in client id order."
);

/// List a tenant's persistent MQTT sessions (any role of the tenant).
#[utoipa::path(get, path = "/v1/tenants/{t}/sessions", operation_id = "list_sessions", tag = "sessions",
    params(TenantPath,
        super::PageParams),
    responses((status = 200, description = "A page of sessions", body = SessionPage)))]
pub(crate) async fn list(
    scope: InTenant<Read>,
    PageQuery(page): PageQuery,
) -> Result<ApiJson<SessionPage>, ApiError> {
    let t = scope.t();
    let page = scope.store().list_sessions(t, &page).await?;
    Ok(ApiJson(SessionPage {
        items: page
            .items
            .into_iter()
            .map(|s| Session::on_this_node(scope.state(), t, s))
            .collect(),
        next_cursor: page.next_cursor,
    }))
}

/// One persistent MQTT session (any role of the tenant).
#[utoipa::path(get, path = "/v1/tenants/{t}/sessions/{client_id}", operation_id = "get_session", tag = "sessions",
    params(TenantPath, SessionPath),
    responses((status = 200, description = "The session", body = Session)))]
pub(crate) async fn read(
    scope: InTenant<Read>,
    Path(SessionPath { client_id }): Path<SessionPath>,
) -> Result<ApiJson<Session>, ApiError> {
    let t = scope.t();
    let summary = scope.store().session_summary(t, &client_id).await?;
    Ok(ApiJson(Session::on_this_node(scope.state(), t, summary)))
}

/// End a persistent MQTT session with everything queued for it
/// (operator): its connection, if any, is closed with DISCONNECT 0x98.
/// The client's next connect starts a new session.
#[utoipa::path(delete, path = "/v1/tenants/{t}/sessions/{client_id}", operation_id = "delete_session", tag = "sessions",
    params(TenantPath, SessionPath),
    responses((status = 204, description = "Ended")))]
pub(crate) async fn remove(
    scope: InTenant<Write>,
    Path(SessionPath { client_id }): Path<SessionPath>,
) -> Result<StatusCode, ApiError> {
    let t = scope.t();
    // Whether it is stored, and whether a connection holds it, as the
    // database says (whichever node serves it). Asked first: the broker's
    // end of the session may delete the row before this call does.
    let (stored, ended) = match scope.store().session_summary(t, &client_id).await {
        Ok(summary) => (true, summary.connected),
        Err(store::Error::NotFound { .. }) => (false, false),
        Err(e) => return Err(e.into()),
    };
    // The broker first (on every node), so that it writes nothing more for
    // the session; then the database, which also covers tenants not in
    // memory.
    scope
        .changed(Change::SessionDeleted {
            tenant: t.to_owned(),
            client_id: client_id.clone(),
        })
        .await;
    let deleted = scope.store().delete_session(t, &client_id).await?;
    if !stored && !deleted {
        return Err(ApiError::NotFound {
            resource: "session".to_owned(),
            id: client_id,
        });
    }
    // Not in the deletion's transaction: the broker's part cannot be.
    scope
        .record(
            "session.delete",
            format!("tenants/{t}/sessions/{client_id}"),
            json!({ "connected": ended }),
        )
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
