//! `GET /openapi.json`: the OpenAPI 3.1 document, generated from the
//! handlers' `#[utoipa::path]` attributes and the types they take and give.
//! The operations come from the routers themselves
//! ([`documented`](super::documented)): a route is documented because it
//! is routed, with no list to keep here.
//!
//! Errors every `/v1` operation can answer (400, 401, 403, 404 under a
//! path id, 413/415/422 with a body, 500, 503) are added by [`Errors`]
//! rather than repeated on each handler; problems several operations
//! describe alike are types here ([`problem_responses!`]), named in their
//! `responses(...)`.

use std::collections::BTreeMap;

use ::events::openapi::Webhooks as EventWebhooks;
use axum::response::IntoResponse;
use http::header::CONTENT_TYPE;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{Content, OpenApi as Document, RefOr, Response, ResponseBuilder};
use utoipa::{Modify, OpenApi};

use crate::PROBLEM_JSON;
use crate::error::{FieldError, Problem};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "fleetmq",
        description = "Multi-tenant IoT platform API. Errors are RFC 9457 \
            application/problem+json with a stable `type`. Lists page with \
            `?limit=&cursor=` and answer `{items, next_cursor}`.",
    ),
    // The rest come with the operations that use them; these two are
    // named by `Errors` only.
    components(schemas(Problem, FieldError)),
    security(("bearer" = [])),
    modifiers(&EventWebhooks),
    tags(
        (name = "tenants", description = "Tenants: the unit of isolation."),
        (name = "devices", description = "A tenant's devices."),
        (name = "audit", description = "Who changed what, when."),
        (name = "api-keys", description = "Tenants' API keys, exchanged for short-lived tokens."),
        (name = "pki", description = "CAs, device certificates, revocation and CRLs."),
        (name = "credentials", description = "Device passwords, tenant service credentials and platform service credentials for MQTT."),
        (name = "policies", description = "A tenant's ACL policy templates and topic hygiene rules."),
        (name = "publish-limits", description = "MQTT publish rate limits per tenant (default) and per device (override)."),
        (name = "operations", description = "Probes, metrics and this document; no token needed."),
        (name = "state", description = "Devices' presence, state documents and recent messages."),
        (name = "events", description = "Live platform events (server-sent events)."),
        (name = "fleet", description = "A tenant's last hour for dashboards: series, top talkers, lifecycle and presence history."),
        (name = "webhooks", description = "Signed HTTP callbacks for platform events."),
        (name = "sessions", description = "Persistent MQTT sessions kept in the database: list, inspect, end."),
    ),
)]
pub(crate) struct ApiDoc;

/// The document, as served.
pub fn document() -> Document {
    let mut doc = ApiDoc::openapi();
    doc.merge(super::documented());
    // After the merge: the shared errors go on every operation.
    Errors.modify(&mut doc);
    doc
}

pub(crate) fn router() -> super::Routes {
    super::Routes::new().routes(utoipa_axum::routes!(serve))
}

/// This document (OpenAPI 3.1). No token needed.
#[utoipa::path(get, path = "/openapi.json", operation_id = "openapi", tag = "operations",
    security(()),
    responses((status = 200, description = "The OpenAPI document", body = Object,
        content_type = "application/json")))]
pub(crate) async fn serve() -> impl IntoResponse {
    match document().to_json() {
        Ok(json) => ([(CONTENT_TYPE, "application/json")], json).into_response(),
        Err(e) => crate::ApiError::internal(e).into_response(),
    }
}

/// A problem response: `description`, with a [`Problem`] as
/// `application/problem+json`.
fn problem(description: &str) -> RefOr<Response> {
    RefOr::T(
        ResponseBuilder::new()
            .description(description)
            .content(
                PROBLEM_JSON,
                Content::new(Some(RefOr::Ref(utoipa::openapi::Ref::from_schema_name(
                    "Problem",
                )))),
            )
            .build(),
    )
}

/// Problem responses that several operations declare with the same
/// description (beyond the shared ones [`Errors`] adds): each is a type
/// (never a value) implementing [`utoipa::IntoResponses`], for
/// `responses(...)` of `#[utoipa::path]`.
macro_rules! problem_responses {
    ($($name:ident = $status:literal, $description:literal;)*) => {$(
        #[doc = concat!($status, ": ", $description, ".")]
        pub(crate) enum $name {}

        impl utoipa::IntoResponses for $name {
            fn responses() -> BTreeMap<String, RefOr<Response>> {
                BTreeMap::from([($status.to_owned(), problem($description))])
            }
        }
    )*};
}

problem_responses! {
    NoSuchTenant = "404", "No such tenant";
    NoSuchDevice = "404", "No such device (or tenant)";
    NoSuchEndpoint = "404", "No such endpoint";
    StaleVersion = "412", "If-Match does not name the current version";
    PkiUnconfigured = "503", "The PKI is not configured";
    MqttUnavailable = "503", "MQTT not available";
    PlatformCa = "409", "The platform-issued CA";
    InvalidPublishLimits = "422", "A value out of range, or a burst without its rate";
}

/// Adds the bearer scheme and the shared error responses.
struct Errors;

impl Modify for Errors {
    fn modify(&self, doc: &mut Document) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some(
                        "ES256 JWT from `fleetmq admin token` (roles: platform-admin, \
                         tenant-admin, operator, viewer)",
                    ))
                    .build(),
            ),
        );
        for (path, item) in doc.paths.paths.iter_mut() {
            let has_id = path.contains('{');
            let ops = [
                (&mut item.get, false),
                (&mut item.post, true),
                (&mut item.patch, true),
                (&mut item.put, true),
                (&mut item.delete, false),
            ];
            for (op, has_body) in ops {
                let Some(op) = op.as_mut() else { continue };
                // Probes, metrics and the document declare their own few
                // answers: no body, query, token or rate limit to go wrong.
                if !path.starts_with("/v1/") {
                    continue;
                }
                // `security(())` on the operation: no bearer token (the token
                // exchange), so no 403 either.
                let public = op.security.as_ref().is_some_and(|requirements| {
                    requirements
                        .iter()
                        .all(|r| serde_json::to_value(r).is_ok_and(|v| v == serde_json::json!({})))
                });
                let mut add = |status: &str, description: &str| {
                    op.responses
                        .responses
                        .entry(status.to_owned())
                        .or_insert_with(|| problem(description));
                };
                add(
                    "400",
                    "Malformed request (query string, JSON syntax, paging cursor)",
                );
                if !public {
                    add(
                        "401",
                        "Missing or invalid bearer token (see WWW-Authenticate)",
                    );
                    add("403", "The token's role may not do this");
                }
                if has_id {
                    add("404", "No such resource, or one of another tenant");
                }
                if has_body {
                    add("413", "Request body too large");
                    add("415", "Content-Type is not JSON");
                    add(
                        "422",
                        "Invalid fields; `errors` has a JSON pointer for each",
                    );
                }
                add("429", "Over the caller's rate limit; see Retry-After");
                add("500", "Our fault; the request id finds it in the logs");
                add("503", "Database unavailable or request timed out");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn document_is_3_1_with_every_route_and_its_errors() {
        let doc = serde_json::to_value(document()).unwrap();
        assert_eq!(doc["openapi"], "3.1.0");
        let paths = doc["paths"].as_object().unwrap();
        for (path, methods) in [
            ("/v1/tenants", &["get", "post"][..]),
            ("/v1/tenants/{t}", &["get", "patch", "delete"]),
            ("/v1/tenants/{t}/devices", &["get", "post"]),
            ("/v1/tenants/{t}/devices/{d}", &["get", "patch", "delete"]),
            ("/v1/tenants/{t}/audit", &["get"]),
            ("/v1/audit", &["get"]),
            ("/v1/tenants/{t}/devices/{d}/certificates", &["get", "post"]),
            ("/v1/tenants/{t}/ca/crl", &["get"]),
            ("/v1/tenants/{t}/policies/{name}", &["get", "put", "delete"]),
            ("/v1/tenants/{t}/service-credentials", &["get", "post"]),
            ("/v1/tenants/{t}/presence-settings", &["get", "put"]),
            ("/v1/service-credentials", &["get", "post"]),
            ("/v1/service-credentials/{id}", &["delete"]),
            ("/v1/tenants/{t}/topic-rules", &["get", "put"]),
        ] {
            for method in methods {
                let op = &paths[path][*method];
                assert!(op.is_object(), "{method} {path} missing");
                let responses = op["responses"].as_object().unwrap();
                for status in ["400", "401", "403", "500"] {
                    assert!(responses.contains_key(status), "{method} {path} {status}");
                }
            }
        }
        // Generators need unique operation ids and parameters.
        let mut ids = std::collections::BTreeSet::new();
        for (path, item) in paths {
            for (method, op) in item.as_object().unwrap() {
                let id = op["operationId"].as_str().unwrap();
                assert!(ids.insert(id.to_owned()), "duplicate operationId {id}");
                let params: Vec<(String, String)> = op["parameters"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|p| (p["in"].to_string(), p["name"].to_string()))
                    .collect();
                let unique: std::collections::BTreeSet<_> = params.iter().collect();
                assert_eq!(unique.len(), params.len(), "{method} {path}: {params:?}");
            }
        }
        assert_eq!(
            doc["components"]["securitySchemes"]["bearer"]["scheme"],
            "bearer"
        );
        // Every operation says how it authenticates and what errors it can
        // answer, each as problem+json.
        assert_eq!(doc["security"], serde_json::json!([{"bearer": []}]));
        for (path, item) in paths {
            for (method, op) in item.as_object().unwrap() {
                let responses = op["responses"].as_object().unwrap();
                let public = op["security"] == serde_json::json!([{}]);
                if !path.starts_with("/v1/") {
                    assert!(public && op["tags"][0] == "operations", "{method} {path}");
                    assert!(responses.contains_key("200"), "{method} {path}");
                    continue;
                }
                let mut expected = vec!["400", "429", "500", "503"];
                if public {
                    assert!(
                        matches!(path.as_str(), "/v1/auth/token" | "/v1/ca"),
                        "{method} {path} is public"
                    );
                    assert!(!responses.contains_key("403"), "{method} {path}");
                    // The token exchange refuses bad API keys; the root CA
                    // takes no credential at all.
                    if path == "/v1/auth/token" {
                        expected.push("401");
                    }
                } else {
                    expected.extend(["401", "403"]);
                }
                if path.contains('{') {
                    expected.push("404");
                }
                if matches!(method.as_str(), "post" | "patch" | "put") {
                    expected.extend(["413", "415", "422"]);
                }
                // An operation that takes If-Match can fail its precondition.
                let conditional = op["parameters"]
                    .as_array()
                    .is_some_and(|params| params.iter().any(|p| p["name"] == "If-Match"));
                if conditional {
                    expected.push("412");
                }
                for status in expected {
                    let content = &responses[status]["content"];
                    assert!(
                        content[PROBLEM_JSON].is_object(),
                        "{method} {path} {status}: {content}"
                    );
                }
            }
        }
        assert!(doc["components"]["schemas"]["Problem"].is_object());
    }

    /// The committed document is what the code generates, so clients built
    /// from openapi/openapi.json match the server.
    #[test]
    fn committed_openapi_json_matches_the_code() {
        let committed = concat!(env!("CARGO_MANIFEST_DIR"), "/../../openapi/openapi.json");
        let generated = serde_json::to_string_pretty(&document()).unwrap() + "\n";
        if std::env::var_os("FLEETMQ_WRITE_OPENAPI").is_some() {
            std::fs::write(committed, &generated).unwrap();
        }
        let on_disk = std::fs::read_to_string(committed).unwrap_or_default();
        assert!(
            on_disk == generated,
            "openapi/openapi.json is out of date with the code; regenerate it with\n  \
             FLEETMQ_WRITE_OPENAPI=1 cargo nextest run -p api committed_openapi_json\n\
             and commit the result"
        );
    }
}
