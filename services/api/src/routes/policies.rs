//! A tenant's ACL policy templates: `GET /v1/tenants/{t}/policies` and
//! `GET|PUT|DELETE /v1/tenants/{t}/policies/{name}`. Reading needs any
//! role of the tenant, changing needs tenant-admin. A document is checked
//! with `access::PolicyTemplate::parse` before it is stored (422 with the
//! JSON pointer of the bad part), and live sessions reload the tenant's
//! policies after a change.

use ::events::change::Change;
use access::{PolicyError, PolicyTemplate};
use axum::extract::Path;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use store::AclPolicy;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::routes;

use super::Routes;
use super::credentials::name_ok;
use super::scope::{Admin, InTenant, Read, TenantPath};
use crate::model::item_list;
use crate::{ApiError, ApiJson, FieldError};

/// Most rules in one document; more is a mistake, and every session
/// compiles them.
const MAX_RULES: usize = 256;

pub(crate) fn router() -> Routes {
    Routes::new()
        .routes(routes!(list))
        .routes(routes!(read, put, remove))
}

/// The `{name}` of a policy's path.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub(crate) struct PolicyPath {
    /// Policy name
    #[param(pattern = "^[A-Za-z0-9._-]{1,64}$")]
    name: String,
}

/// A stored policy.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Policy {
    name: String,
    /// `{"rules": [{"effect": "allow"|"deny", "action":
    /// "publish"|"subscribe"|"both", "filters": ["devices/${device}/#"]}]}`;
    /// variables `${tenant}`, `${device}`, `${client_id}`, `${username}`.
    #[schema(value_type = Object)]
    document: Map<String, Value>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl From<AclPolicy> for Policy {
    fn from(p: AclPolicy) -> Self {
        Policy {
            name: p.name,
            document: p.document,
            created_at: p.created_at,
            updated_at: p.updated_at,
        }
    }
}

item_list!(pub(crate) PolicyList, Policy, "A tenant's policies, by name.");

/// `document` as the broker will read it, or the field error saying where
/// it is wrong.
pub(crate) fn check_document(
    name: &str,
    document: &Map<String, Value>,
) -> Result<PolicyTemplate, FieldError> {
    let rules = document.get("rules").and_then(Value::as_array);
    if rules.is_some_and(|r| r.len() > MAX_RULES) {
        return Err(FieldError::new(
            "/rules",
            format!("at most {MAX_RULES} rules"),
        ));
    }
    PolicyTemplate::parse(name, document).map_err(|e| {
        let filter = match &e {
            PolicyError::UnknownVariable { filter, .. }
            | PolicyError::InvalidFilter { filter, .. } => Some(filter.as_str()),
            _ => None,
        };
        FieldError::new(filter_pointer(rules, filter), e.to_string())
    })
}

/// Where `filter` first appears in `rules` (`/rules/i/filters/j`); the
/// whole document when it cannot be found.
fn filter_pointer(rules: Option<&Vec<Value>>, filter: Option<&str>) -> String {
    let (Some(rules), Some(filter)) = (rules, filter) else {
        return String::new();
    };
    for (i, rule) in rules.iter().enumerate() {
        let filters = rule.get("filters").and_then(Value::as_array);
        for (j, f) in filters.into_iter().flatten().enumerate() {
            if f.as_str() == Some(filter) {
                return format!("/rules/{i}/filters/{j}");
            }
        }
    }
    String::new()
}

fn check_name(name: &str) -> Result<(), ApiError> {
    if name_ok(name) {
        Ok(())
    } else {
        Err(ApiError::BadRequest(
            "policy names are 1-64 of A-Z, a-z, 0-9, '.', '_' and '-'".to_owned(),
        ))
    }
}

/// A tenant's policies by name (any role of the tenant).
#[utoipa::path(get, path = "/v1/tenants/{t}/policies", operation_id = "list_policies", tag = "policies",
    params(TenantPath),
    responses((status = 200, description = "The policies", body = PolicyList)))]
pub(crate) async fn list(scope: InTenant<Read>) -> Result<ApiJson<PolicyList>, ApiError> {
    let t = scope.existing().await?;
    Ok(ApiJson(scope.store().list_acl_policies(t).await?.into()))
}

/// One policy (any role of the tenant).
#[utoipa::path(get, path = "/v1/tenants/{t}/policies/{name}", operation_id = "get_policy", tag = "policies",
    params(TenantPath, PolicyPath),
    responses((status = 200, description = "The policy", body = Policy)))]
pub(crate) async fn read(
    scope: InTenant<Read>,
    Path(PolicyPath { name }): Path<PolicyPath>,
) -> Result<ApiJson<Policy>, ApiError> {
    let t = scope.t();
    Ok(ApiJson(
        scope.store().get_acl_policy(t, &name).await?.into(),
    ))
}

/// Create or replace a policy (tenant-admin). The body is the document.
#[utoipa::path(put, path = "/v1/tenants/{t}/policies/{name}", operation_id = "put_policy", tag = "policies",
    params(TenantPath, PolicyPath),
    request_body(content = Object, description = "The policy document"),
    responses(
        (status = 200, description = "The stored policy", body = Policy),
    ))]
pub(crate) async fn put(
    scope: InTenant<Admin>,
    Path(PolicyPath { name }): Path<PolicyPath>,
    ApiJson(document): ApiJson<Map<String, Value>>,
) -> Result<ApiJson<Policy>, ApiError> {
    let t = scope.t();
    check_name(&name)?;
    check_document(&name, &document).map_err(|e| ApiError::Validation(vec![e]))?;
    let audit = scope.audit("policy.put", target(t, &name), json!({}));
    let stored = scope
        .store()
        .put_acl_policy(t, &name, &document, Some(&audit))
        .await?;
    scope
        .tenant_changed(|tenant| Change::PoliciesChanged { tenant })
        .await;
    Ok(ApiJson(stored.into()))
}

/// Delete a policy (tenant-admin).
#[utoipa::path(delete, path = "/v1/tenants/{t}/policies/{name}", operation_id = "delete_policy", tag = "policies",
    params(TenantPath, PolicyPath),
    responses((status = 204, description = "Deleted")))]
pub(crate) async fn remove(
    scope: InTenant<Admin>,
    Path(PolicyPath { name }): Path<PolicyPath>,
) -> Result<StatusCode, ApiError> {
    let t = scope.t();
    let audit = scope.audit("policy.delete", target(t, &name), json!({}));
    scope
        .store()
        .delete_acl_policy(t, &name, Some(&audit))
        .await?;
    scope
        .tenant_changed(|tenant| Change::PoliciesChanged { tenant })
        .await;
    Ok(StatusCode::NO_CONTENT)
}

fn target(t: &str, name: &str) -> String {
    format!("tenants/{t}/policies/{name}")
}
