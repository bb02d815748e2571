//! `/v1/tenants/{t}/devices`: create, list (filters `status`, `label`),
//! read, update with a JSON merge patch, delete; a device's notes (its
//! maintenance log). Reading needs any role of the tenant; the rest needs
//! operator, tenant-admin or platform-admin.

use ::events as catalogue;
use ::events::change::Change;
use ::events::payload::DeviceDeleted;
use axum::extract::RawQuery;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use http::HeaderMap;
use http::header::IF_MATCH;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use store::{
    Attributes, DeviceFilter, DeviceId, DeviceNote, DevicePatch, Labels, MAX_NOTE_CHARS, NewDevice,
    PresenceStatus,
};
use utoipa::ToSchema;
use utoipa_axum::routes;

use super::etag::ETag;
use super::openapi::StaleVersion;
use super::scope::{DevicePath, InDevice, InTenant, Read, TenantPath, Write};
use super::tenants::id_detail;
use super::{Routes, nullable, query, validate};
use crate::model::{Device, DevicePage, item_list};
use crate::{ApiError, ApiJson, AppState, FieldError};

pub(crate) fn router() -> Routes {
    Routes::new()
        .routes(routes!(list, create))
        .routes(routes!(super::device_import::import))
        .routes(routes!(read, update, remove))
        .routes(routes!(notes, add_note))
}

/// A new device.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateDevice {
    /// `[A-Za-z0-9._-]{1,128}`; substituted into topics, certificates and URLs.
    #[schema(example = "sensor-1", pattern = "^[A-Za-z0-9._-]{1,128}$")]
    id: String,
    #[serde(default)]
    #[schema(schema_with = validate::labels_schema)]
    labels: Labels,
    #[serde(default)]
    #[schema(schema_with = validate::attributes_schema)]
    attributes: Attributes,
    /// Default true.
    #[serde(default)]
    enabled: Option<bool>,
}

/// The device `body` describes, or what is wrong with it.
pub(crate) fn new_device(body: CreateDevice) -> Result<NewDevice, Vec<FieldError>> {
    let mut errors = Vec::new();
    if let Err(e) = DeviceId::parse(&body.id) {
        errors.push(FieldError::new("/id", id_detail(&e)));
    }
    validate::labels(&body.labels, "/labels", &mut errors);
    validate::attributes(&body.attributes, "/attributes", &mut errors);
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(NewDevice {
        id: body.id,
        labels: body.labels,
        attributes: body.attributes,
        enabled: body.enabled.unwrap_or(true),
    })
}

/// Changes to a device, as a JSON merge patch (RFC 7396): `labels` and
/// `attributes` merge key by key (`null` removes a key; `null` for the
/// whole member empties it), `enabled` replaces.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PatchDevice {
    #[serde(default, deserialize_with = "nullable")]
    #[schema(schema_with = validate::labels_patch_schema)]
    labels: Option<Option<Map<String, Value>>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(schema_with = validate::attributes_patch_schema)]
    attributes: Option<Option<Map<String, Value>>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = bool)]
    enabled: Option<Option<bool>>,
}

/// Create a device (operator, tenant-admin). Honours `Idempotency-Key`.
#[utoipa::path(post, path = "/v1/tenants/{t}/devices", operation_id = "create_device", tag = "devices",
    params(TenantPath, super::IdempotencyKeyHeader),
    request_body = CreateDevice,
    responses(
        (status = 201, description = "The device", body = Device),
        (status = 409, description = "A device with this id exists in the tenant, or the first request with this Idempotency-Key is still running",
         body = crate::Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn create(
    scope: InTenant<Write>,
    ApiJson(body): ApiJson<CreateDevice>,
) -> Result<(StatusCode, ApiJson<Device>), ApiError> {
    let t = scope.t();
    let new = new_device(body).map_err(ApiError::Validation)?;
    // The entry and `device.created` (with the device as stored) commit
    // with the device.
    let audit = |created: &store::Device| {
        let device = Device::from(created.clone());
        scope
            .audit(
                "device.create",
                target(t, &device.id),
                json!({ "enabled": device.enabled }),
            )
            .with_event(scope.device_event(
                &device.id,
                catalogue::Event::DeviceCreated(device.snapshot()),
            ))
    };
    let device = Device::from(scope.store().create_device_audited(t, &new, &audit).await?);
    Ok((StatusCode::CREATED, ApiJson(device)))
}

/// List a tenant's devices in id order (any role of the tenant).
///
/// `?status=enabled|disabled` and `?label=key=value` (repeatable, all must
/// match), `?status=online|offline` (presence).
#[utoipa::path(get, path = "/v1/tenants/{t}/devices", operation_id = "list_devices", tag = "devices",
    params(TenantPath, super::PageParams, DeviceFilters),
    responses((status = 200, description = "A page of devices", body = DevicePage)))]
pub(crate) async fn list(
    scope: InTenant<Read>,
    RawQuery(raw): RawQuery,
) -> Result<ApiJson<DevicePage>, ApiError> {
    let t = scope.t();
    let q = query::parse(raw.as_deref(), &["status", "label"], &["label"])?;
    let mut filter = DeviceFilter::default();
    for (name, value) in q.filters {
        if name == "status" {
            match value.as_str() {
                "enabled" => filter.enabled = Some(true),
                "disabled" => filter.enabled = Some(false),
                "online" => filter.presence = Some(PresenceStatus::Online),
                "offline" => filter.presence = Some(PresenceStatus::Offline),
                _ => {
                    return Err(ApiError::BadRequest(
                        "`status` must be `enabled`, `disabled`, `online` or `offline`".to_owned(),
                    ));
                }
            }
        } else {
            let (key, value) = value
                .split_once('=')
                .filter(|(k, _)| validate::label_key_ok(k))
                .ok_or_else(|| {
                    ApiError::BadRequest(
                        "`label` must be `key=value` with a valid label key".to_owned(),
                    )
                })?;
            if filter.labels.len() >= query::MAX_LABEL_FILTERS {
                return Err(ApiError::BadRequest(format!(
                    "at most {} `label` filters",
                    query::MAX_LABEL_FILTERS
                )));
            }
            filter.labels.insert(key.to_owned(), value.to_owned());
        }
    }
    let page = scope.store().list_devices(t, &filter, &q.page).await?;
    let ids: Vec<String> = page.items.iter().map(|d| d.id.clone()).collect();
    let online = scope.store().online_devices(t, &ids).await?;
    let mut page = DevicePage::from(page);
    for device in &mut page.items {
        device.status = if online.contains(&device.id) {
            "online"
        } else {
            "offline"
        };
    }
    Ok(ApiJson(page))
}

/// Device list filters (documentation only: the handler parses the query
/// string itself, strictly).
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
struct DeviceFilters {
    /// `enabled`, `disabled`, `online` or `offline`.
    #[param(pattern = "^(enabled|disabled|online|offline)$")]
    status: Option<String>,
    /// `key=value`; repeat for several (all must match), at most 16.
    #[param(style = Form, explode, schema_with = label_filters_schema)]
    label: Option<Vec<String>>,
}

/// `?label=` values: a label key (as in `labels`), `=`, any value.
fn label_filters_schema() -> utoipa::openapi::Array {
    use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, Type};
    ArrayBuilder::new()
        .items(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .pattern(Some("^[A-Za-z0-9._/-]{1,63}=.*$")),
        )
        .max_items(Some(query::MAX_LABEL_FILTERS))
        .build()
}

/// Read a device (any role of the tenant). The `ETag` names this version,
/// for `If-Match` on a later update.
#[utoipa::path(get, path = "/v1/tenants/{t}/devices/{d}", operation_id = "get_device", tag = "devices",
    params(DevicePath),
    responses((status = 200, description = "The device", body = Device,
        headers(("ETag" = String, description = "This version of the device")))))]
pub(crate) async fn read(at: InDevice<Read>) -> Result<(ETag, ApiJson<Device>), ApiError> {
    tagged_with_status(at.state(), at.store().get_device(at.t(), at.d()).await?).await
}

/// Update a device with a JSON merge patch (operator, tenant-admin). With
/// `If-Match`, only if the device is still the version that `ETag` names.
#[utoipa::path(patch, path = "/v1/tenants/{t}/devices/{d}", operation_id = "update_device", tag = "devices",
    params(DevicePath, super::IfMatchHeader),
    request_body(content = PatchDevice, content_type = "application/merge-patch+json"),
    responses(
        (status = 200, description = "The updated device", body = Device,
         headers(("ETag" = String, description = "The new version of the device"))),
        StaleVersion,
    ))]
pub(crate) async fn update(
    at: InDevice<Write>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<PatchDevice>,
) -> Result<(ETag, ApiJson<Device>), ApiError> {
    let (t, d) = (at.t(), at.d());
    let current = at.store().get_device(t, d).await?;
    let read_at = current.updated_at;
    let was_enabled = current.enabled;
    let conditional = headers.contains_key(IF_MATCH);
    ETag::of(&Device::from(current.clone()))?.check_if_match(&headers)?;
    let mut errors = Vec::new();
    let labels = match body.labels {
        None => None,
        Some(None) => Some(Labels::new()),
        Some(Some(patch)) => {
            let mut merged: Map<String, Value> = current
                .labels
                .into_iter()
                .map(|(k, v)| (k, Value::String(v)))
                .collect();
            validate::merge_patch(&mut merged, patch);
            let mut labels = Labels::new();
            for (k, v) in merged {
                match v {
                    Value::String(s) => {
                        labels.insert(k, s);
                    }
                    _ => errors.push(FieldError::new(
                        format!("/labels/{}", validate::escape(&k)),
                        "label values are strings (or null to remove the label)",
                    )),
                }
            }
            validate::labels(&labels, "/labels", &mut errors);
            Some(labels)
        }
    };
    let attributes = match body.attributes {
        None => None,
        Some(None) => Some(Attributes::new()),
        Some(Some(patch)) => {
            let mut merged = current.attributes;
            validate::merge_patch(&mut merged, patch);
            validate::attributes(&merged, "/attributes", &mut errors);
            Some(merged)
        }
    };
    let enabled = match body.enabled {
        None => None,
        Some(None) => {
            errors.push(FieldError::new("/enabled", "must be true or false"));
            None
        }
        Some(Some(b)) => Some(b),
    };
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let details = json!({
        "labels": labels.is_some(),
        "attributes": attributes.is_some(),
        "enabled": enabled,
    });
    // Enabled state is what live sessions and the access cache depend on.
    let enabled_changes = enabled.is_some_and(|e| e != was_enabled);
    let patch = DevicePatch {
        labels,
        attributes,
        enabled,
    };
    // `device.updated` carries the device as stored, with its presence as
    // of just before the change.
    let online = is_online(at.state(), t, d).await?;
    let audit = |updated: &store::Device| {
        let device = Device::from(updated.clone()).online(online);
        at.audit("device.update", at.target(), details.clone())
            .with_event(at.event(catalogue::Event::DeviceUpdated(device.snapshot())))
    };
    // The merge was computed from `current`: with If-Match, a change made
    // since then must fail the update rather than be overwritten.
    let device = at
        .store()
        .update_device_audited(t, d, &patch, conditional.then_some(read_at), &audit)
        .await?;
    let tag = ETag::of(&Device::from(device.clone()))?;
    if enabled_changes {
        at.device_changed(|tenant, device| Change::DeviceDisabled { tenant, device })
            .await;
    }
    Ok((tag, ApiJson(Device::from(device).online(online))))
}

/// Delete a device (operator, tenant-admin).
#[utoipa::path(delete, path = "/v1/tenants/{t}/devices/{d}", operation_id = "delete_device", tag = "devices",
    params(DevicePath),
    responses((status = 204, description = "Deleted")))]
pub(crate) async fn remove(at: InDevice<Write>) -> Result<StatusCode, ApiError> {
    let (t, d) = (at.t(), at.d());
    let audit = at
        .audit("device.delete", at.target(), json!({}))
        .with_event(at.event(catalogue::Event::DeviceDeleted(DeviceDeleted {
            device_id: d.to_owned(),
        })));
    at.store().delete_device_audited(t, d, &audit).await?;
    // Its session ends and its persistent sessions go with it: in the
    // broker (on every node), then stored.
    at.device_changed(|tenant, device| Change::DeviceDeleted { tenant, device })
        .await;
    at.store().delete_sessions_of_owner(t, d).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A note to add to a device's log.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewNote {
    /// 1 to 2000 characters, none of them U+0000.
    #[schema(min_length = 1, max_length = 2000, pattern = "^[^\\u0000]*$")]
    text: String,
}

/// An operator's note on a device.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Note {
    id: i64,
    text: String,
    /// Who wrote it: `{role}:{subject}` of the token or API key.
    #[schema(example = "operator:alice")]
    author: String,
    created_at: DateTime<Utc>,
}

impl From<DeviceNote> for Note {
    fn from(n: DeviceNote) -> Self {
        Note {
            id: n.id,
            text: n.text,
            author: n.author,
            created_at: n.created_at,
        }
    }
}

item_list!(pub(crate) NoteList, Note, "A device's notes, newest first.");

/// A device's notes, newest first: its maintenance log (any role of the
/// tenant). A device keeps its newest 100.
#[utoipa::path(get, path = "/v1/tenants/{t}/devices/{d}/notes", operation_id = "list_device_notes", tag = "devices",
    params(DevicePath),
    responses((status = 200, description = "The notes, newest first", body = NoteList)))]
pub(crate) async fn notes(at: InDevice<Read>) -> Result<ApiJson<NoteList>, ApiError> {
    let notes = at.store().list_device_notes(at.t(), at.d()).await?;
    Ok(ApiJson(notes.into()))
}

/// Add a note to a device's log (operator, tenant-admin), signed with the
/// caller's identity; past 100 notes the oldest goes.
#[utoipa::path(post, path = "/v1/tenants/{t}/devices/{d}/notes", operation_id = "add_device_note", tag = "devices",
    params(DevicePath, super::IdempotencyKeyHeader),
    request_body = NewNote,
    responses((status = 201, description = "The note as stored", body = Note)))]
pub(crate) async fn add_note(
    at: InDevice<Write>,
    ApiJson(body): ApiJson<NewNote>,
) -> Result<(StatusCode, ApiJson<Note>), ApiError> {
    let text = body.text;
    if !(1..=MAX_NOTE_CHARS).contains(&text.chars().count()) || text.contains('\0') {
        return Err(ApiError::invalid_field(
            "/text",
            format!("expected 1 to {MAX_NOTE_CHARS} characters, none of them U+0000"),
        ));
    }
    let author = at.scope.who.actor();
    let audit = |note: &DeviceNote| {
        let target = format!("{}/notes/{}", at.target(), note.id);
        at.audit("device.note.add", target, json!({ "author": note.author }))
    };
    let (t, d) = (at.t(), at.d());
    let note = at
        .store()
        .add_device_note_audited(t, d, &text, &author, &audit)
        .await?;
    Ok((StatusCode::CREATED, ApiJson(note.into())))
}

/// `device` with its presence, tagged by its stored version: connects and
/// disconnects do not change the ETag, so `If-Match` keeps working while a
/// device comes and goes.
async fn tagged_with_status(
    state: &AppState,
    device: store::Device,
) -> Result<(ETag, ApiJson<Device>), ApiError> {
    let tag = ETag::of(&Device::from(device.clone()))?;
    let online = is_online(state, &device.tenant_id, &device.id).await?;
    Ok((tag, ApiJson(Device::from(device).online(online))))
}

/// Whether the device is online.
async fn is_online(state: &AppState, t: &str, d: &str) -> Result<bool, ApiError> {
    Ok(state
        .store
        .get_presence(t, d)
        .await?
        .is_some_and(|p| p.status == PresenceStatus::Online))
}

fn target(t: &str, d: &str) -> String {
    format!("tenants/{t}/devices/{d}")
}
