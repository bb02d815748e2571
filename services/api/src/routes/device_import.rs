//! `POST /v1/tenants/{t}/devices:import`: many devices at once, as NDJSON
//! (one `CreateDevice` object per line) or CSV (a header row, then a
//! device per row; see `device_csv`), with a result per line.
//!
//! `?all_or_nothing=true` applies every line or none: any invalid line, or
//! any line the store refuses (a duplicate id), and nothing is created.
//! Otherwise each valid line the store accepts is created. The answer is always
//! 200 with an [`ImportReport`]: `applied` says whether anything persisted.

use axum::body::Bytes;
use axum::extract::RawQuery;
use http::HeaderMap;
use http::header::CONTENT_TYPE;
use serde::Serialize;
use serde_json::json;
use utoipa::ToSchema;

use super::devices::{CreateDevice, new_device};
use super::query;
use super::scope::{InTenant, TenantPath, Write};
use crate::{ApiError, ApiJson, FieldError};

/// Most lines in one import.
pub(crate) const MAX_LINES: usize = 10_000;
/// Most device ids kept in the audit entry of one import.
const MAX_AUDITED_IDS: usize = 1_000;

/// Each device of a body with its 1-based line number, or what is wrong
/// with it.
pub(crate) type ParsedLines = Vec<(usize, Result<store::NewDevice, ApiError>)>;

/// The outcome of an import.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ImportReport {
    /// Whether any device was created (false after an all-or-nothing
    /// import with a failure).
    applied: bool,
    created: usize,
    failed: usize,
    /// One per non-empty line, in order.
    results: Vec<LineResult>,
}

/// What happened to one line.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct LineResult {
    /// 1-based line number in the request body.
    line: usize,
    /// The device id, when the line had one.
    id: Option<String>,
    /// `created`, `failed`, `rolled_back` (valid, but the all-or-nothing
    /// import failed elsewhere) or `not_attempted`.
    #[schema(pattern = "^(created|failed|rolled_back|not_attempted)$")]
    status: &'static str,
    /// Why it failed: a problem type slug and detail, and field errors.
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<LineError>,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct LineError {
    #[schema(example = "https://fleetmq.dev/problems/already-exists")]
    r#type: String,
    detail: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    errors: Vec<FieldError>,
}

impl LineError {
    fn from_api(e: &ApiError) -> Self {
        let p = e.to_problem();
        LineError {
            r#type: p.type_uri,
            detail: p.detail.unwrap_or(p.title),
            errors: p.errors,
        }
    }
}

/// Import devices from NDJSON or CSV (operator, tenant-admin).
///
/// NDJSON: one `CreateDevice` JSON object per line. CSV (RFC 4180): a
/// header row naming the columns `id` (required), `enabled` (`true`,
/// `false` or empty), `attributes` (a JSON object or empty) and
/// `label.KEY` (one per label key; empty cells set no label), then one
/// device per row. At most 10000 devices. An unknown or repeated CSV column
/// refuses the whole body (400).
#[utoipa::path(post, path = "/v1/tenants/{t}/devices:import", tag = "devices",
    operation_id = "import_devices",
    params(TenantPath,
        ("all_or_nothing" = Option<bool>, Query, description = "Apply every line or none")),
    request_body(description = "Devices as NDJSON or CSV, at most 10000",
        content(
            (String = "application/x-ndjson", example = json!("{\"id\":\"s-1\",\"labels\":{\"site\":\"berlin\"}}\n{\"id\":\"s-2\"}\n")),
            (String = "text/csv", example = json!("id,enabled,label.site,attributes\ns-1,,berlin,\ns-2,false,,\"{\"\"fw\"\":\"\"1.2\"\"}\"\n")),
        )),
    responses(
        (status = 200, description = "A result per line", body = ImportReport),
        (status = 415, description = "Content-Type is neither application/x-ndjson nor text/csv",
         body = crate::Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn import(
    scope: InTenant<Write>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Result<ApiJson<ImportReport>, ApiError> {
    let t = scope.t();
    let q = query::parse(raw.as_deref(), &["all_or_nothing"], &[])?;
    let all_or_nothing = match q.filters.first().map(|(_, v)| v.as_str()) {
        None | Some("false") => false,
        Some("true") => true,
        Some(_) => {
            return Err(ApiError::BadRequest(
                "`all_or_nothing` must be `true` or `false`".to_owned(),
            ));
        }
    };
    let media_type = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase());
    // Parse and validate every line first.
    let parsed = match media_type.as_deref() {
        Some("application/x-ndjson") => ndjson_lines(&body)?,
        Some("text/csv") => super::device_csv::rows(&body)?,
        _ => {
            return Err(ApiError::UnsupportedMediaType(
                "expected `Content-Type: application/x-ndjson` or `text/csv`".to_owned(),
            ));
        }
    };
    let mut results: Vec<LineResult> = parsed
        .iter()
        .map(|(line, device)| LineResult {
            line: *line,
            id: device.as_ref().ok().map(|d| d.id.clone()),
            status: "not_attempted",
            error: device.as_ref().err().map(LineError::from_api),
        })
        .collect();
    for r in &mut results {
        if r.error.is_some() {
            r.status = "failed";
        }
    }
    let invalid = results.iter().any(|r| r.error.is_some());
    let valid: Vec<(usize, store::NewDevice)> = parsed
        .into_iter()
        .enumerate()
        .filter_map(|(i, (_, d))| d.ok().map(|d| (i, d)))
        .collect();

    if !(all_or_nothing && invalid) {
        let devices: Vec<store::NewDevice> = valid.iter().map(|(_, d)| d.clone()).collect();
        // The entry lists the devices created, which the store knows only
        // in the transaction it writes the entry in.
        let audit = |outcomes: &[Result<store::Device, store::Error>]| {
            let created: Vec<&str> = outcomes
                .iter()
                .filter_map(|o| o.as_ref().ok())
                .map(|d| d.id.as_str())
                .collect();
            scope.audit(
                "device.import",
                format!("tenants/{t}/devices"),
                json!({
                    "created": created.len(),
                    "ids": created.iter().take(MAX_AUDITED_IDS).collect::<Vec<_>>(),
                    "ids_truncated": created.len() > MAX_AUDITED_IDS,
                    "all_or_nothing": all_or_nothing,
                }),
            )
        };
        let outcomes = scope
            .store()
            .import_devices(t, &devices, all_or_nothing, Some(&audit))
            .await?;
        let committed = !all_or_nothing || outcomes.iter().all(Result::is_ok);
        for ((i, _), outcome) in valid.iter().zip(outcomes) {
            let Some(r) = results.get_mut(*i) else {
                continue;
            };
            match outcome {
                Ok(_) if committed => r.status = "created",
                Ok(_) => r.status = "rolled_back",
                Err(e) => {
                    r.status = "failed";
                    r.error = Some(LineError::from_api(&ApiError::from(e)));
                }
            }
        }
    }
    let created: Vec<&str> = results
        .iter()
        .filter(|r| r.status == "created")
        .filter_map(|r| r.id.as_deref())
        .collect();
    let failed = results.iter().filter(|r| r.status == "failed").count();
    Ok(ApiJson(ImportReport {
        applied: !created.is_empty(),
        created: created.len(),
        failed,
        results,
    }))
}

/// Every non-blank NDJSON line with its 1-based number, as a device or what
/// is wrong with it.
fn ndjson_lines(body: &[u8]) -> Result<ParsedLines, ApiError> {
    let mut parsed = Vec::new();
    for (index, line) in body.split(|b| *b == b'\n').enumerate() {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        if parsed.len() == MAX_LINES {
            return Err(ApiError::BadRequest(format!(
                "at most {MAX_LINES} lines per import"
            )));
        }
        let device = ApiJson::<CreateDevice>::from_bytes(line)
            .and_then(|ApiJson(body)| new_device(body).map_err(ApiError::Validation));
        parsed.push((index + 1, device));
    }
    Ok(parsed)
}
