//! A tenant's topic hygiene rules (`GET|PUT /v1/tenants/{t}/topic-rules`):
//! optional, all off by default. The broker applies them to the tenant's
//! publishes and subscriptions as soon as they are stored, without a
//! restart: refused publishes get PUBACK/PUBREC 0x90 (QoS 0: dropped and
//! counted), refused subscriptions SUBACK 0x8F (0x97 over the catch-all
//! limit; 0x80 in 3.1.1), each with a reason string in MQTT 5.

use ::events::change::Change;
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;
use utoipa_axum::routes;

use super::Routes;
use super::scope::{Admin, InTenant, Read, TenantPath};
use crate::{ApiError, ApiJson, FieldError};

pub(crate) fn router() -> Routes {
    Routes::new().routes(routes!(read, put))
}

/// Topic hygiene rules; an absent or `null` limit is no limit, `false`
/// switches a check off.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct TopicRules {
    /// Most levels a topic name or filter may have.
    #[serde(default)]
    #[schema(minimum = 1, maximum = 65535)]
    max_depth: Option<u32>,
    /// Refuse topic names and filters that start with `/` (an empty first
    /// level, a classic mistake).
    #[serde(default)]
    forbid_leading_slash: bool,
    /// Refuse topic names and filters that contain a space.
    #[serde(default)]
    forbid_spaces: bool,
    /// Most live subscriptions in the tenant to catch-all filters (`#`,
    /// `+/#`, `+/+/#`, … — every level a wildcard, the last `#`),
    /// shared ones included; 0 refuses them all.
    #[serde(default)]
    #[schema(minimum = 0, maximum = 2147483647)]
    max_catch_all_subscriptions: Option<u32>,
}

impl From<store::TopicRules> for TopicRules {
    fn from(r: store::TopicRules) -> Self {
        TopicRules {
            max_depth: r.max_depth.map(u32::from),
            forbid_leading_slash: r.forbid_leading_slash,
            forbid_spaces: r.forbid_spaces,
            max_catch_all_subscriptions: r.max_catch_all_subscriptions,
        }
    }
}

impl TopicRules {
    fn parse(self) -> Result<store::TopicRules, ApiError> {
        let mut errors = Vec::new();
        let max_depth = match self.max_depth.map(u16::try_from) {
            None => None,
            Some(Ok(d)) if d >= 1 => Some(d),
            Some(_) => {
                errors.push(FieldError::new("/max_depth", "expected 1 to 65535"));
                None
            }
        };
        if self
            .max_catch_all_subscriptions
            .is_some_and(|n| i32::try_from(n).is_err())
        {
            errors.push(FieldError::new(
                "/max_catch_all_subscriptions",
                "expected 0 to 2147483647",
            ));
        }
        if !errors.is_empty() {
            return Err(ApiError::Validation(errors));
        }
        Ok(store::TopicRules {
            max_depth,
            forbid_leading_slash: self.forbid_leading_slash,
            forbid_spaces: self.forbid_spaces,
            max_catch_all_subscriptions: self.max_catch_all_subscriptions,
        })
    }
}

/// The tenant's topic hygiene rules (any role of the tenant).
#[utoipa::path(get, path = "/v1/tenants/{t}/topic-rules", operation_id = "get_topic_rules", tag = "policies",
    params(TenantPath),
    responses((status = 200, description = "The rules (all off unless set)", body = TopicRules)))]
pub(crate) async fn read(scope: InTenant<Read>) -> Result<ApiJson<TopicRules>, ApiError> {
    let t = scope.t();
    Ok(ApiJson(scope.store().topic_rules(t).await?.into()))
}

/// Replace the tenant's topic hygiene rules (tenant-admin). Live sessions
/// are held to them from their next packet.
#[utoipa::path(put, path = "/v1/tenants/{t}/topic-rules", operation_id = "put_topic_rules", tag = "policies",
    params(TenantPath),
    request_body = TopicRules,
    responses((status = 200, description = "The rules now in force", body = TopicRules)))]
pub(crate) async fn put(
    scope: InTenant<Admin>,
    ApiJson(body): ApiJson<TopicRules>,
) -> Result<ApiJson<TopicRules>, ApiError> {
    let t = scope.t();
    let rules = body.parse()?;
    let audit = scope.audit(
        "topic_rules.put",
        format!("tenants/{t}/topic-rules"),
        json!(TopicRules::from(rules)),
    );
    scope
        .store()
        .set_topic_rules(t, &rules, Some(&audit))
        .await?;
    scope
        .tenant_changed(|tenant| Change::TopicRulesChanged { tenant })
        .await;
    Ok(ApiJson(rules.into()))
}
