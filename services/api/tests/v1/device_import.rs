use api::Role;
use axum::body::Body;
use http::Request;
use serde_json::Value;
use store::testing::TestDb;

use crate::{Resp, TestApp};

async fn import(t: &TestApp, token: &str, query: &str, body: &str) -> Resp {
    import_as(t, token, "application/x-ndjson", query, body).await
}

async fn import_as(t: &TestApp, token: &str, media_type: &str, query: &str, body: &str) -> Resp {
    let req = Request::post(format!("/v1/tenants/acme/devices:import{query}"))
        .header(http::header::AUTHORIZATION, format!("Bearer {token}"))
        .header(http::header::CONTENT_TYPE, media_type)
        .body(Body::from(body.to_owned()))
        .unwrap();
    t.send(req).await
}

/// An all-or-nothing NDJSON import that applies nothing, with the
/// `(line, status)` pairs `expected`; its report.
async fn refused(t: &TestApp, token: &str, body: &str, expected: &[(u64, &str)]) -> Value {
    let r = import(t, token, "?all_or_nothing=true", body)
        .await
        .expect(200)
        .body;
    assert_eq!(r["applied"], false);
    assert_eq!(statuses(&r), s(expected));
    r
}

fn statuses(report: &Value) -> Vec<(u64, String)> {
    report["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["line"].as_u64().unwrap(),
                r["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// `(line, status)` pairs as [`statuses`] gives them.
fn s(v: &[(u64, &str)]) -> Vec<(u64, String)> {
    v.iter().map(|(l, s)| (*l, (*s).to_owned())).collect()
}

async fn ndjson_import(db: &TestDb) {
    let t = TestApp::with_tenants(db, &["acme"]).await;
    t.device("acme", "dup").await;
    let op = t.token(Role::Operator, "acme");
    let body = concat!(
        "{\"id\":\"i1\",\"labels\":{\"k\":\"v\"}}\n",
        "\n",
        "{\"id\":\"bad/id\"}\n",
        "{\"id\":\"dup\"}\n",
        "not json\n",
        "{\"id\":\"i2\",\"extra\":1}\n",
        "{\"id\":\"i3\",\"enabled\":false}\n",
    );

    // All or nothing: the invalid lines stop everything before the store.
    let r = refused(
        &t,
        &op,
        body,
        &[
            (1, "not_attempted"),
            (3, "failed"),
            (4, "not_attempted"),
            (5, "failed"),
            (6, "failed"),
            (7, "not_attempted"),
        ],
    )
    .await;
    assert_eq!(r["results"][1]["error"]["errors"][0]["pointer"], "/id");
    assert_eq!(r["results"][4]["error"]["errors"][0]["pointer"], "/extra");
    // Valid lines, but a duplicate: rolled back.
    let valid = "{\"id\":\"i1\"}\n{\"id\":\"dup\"}\n{\"id\":\"i3\"}\n";
    let r = refused(
        &t,
        &op,
        valid,
        &[(1, "rolled_back"), (2, "failed"), (3, "not_attempted")],
    )
    .await;
    assert_eq!(
        r["results"][1]["error"]["type"],
        "https://fleetmq.dev/problems/already-exists"
    );
    t.get("/v1/tenants/acme/devices/i1", &op)
        .await
        .problem(404, "not-found");

    // Line by line: the good ones go in.
    let r = import(&t, &op, "", body).await.expect(200).body;
    assert_eq!(r["applied"], true);
    assert_eq!(
        (r["created"].as_u64(), r["failed"].as_u64()),
        (Some(2), Some(4))
    );
    assert_eq!(
        statuses(&r),
        s(&[
            (1, "created"),
            (3, "failed"),
            (4, "failed"),
            (5, "failed"),
            (6, "failed"),
            (7, "created")
        ])
    );
    let i3 = t.fetch("/v1/tenants/acme/devices/i3", &op).await;
    assert_eq!(i3["enabled"], false);
    let log = t.fetch("/v1/tenants/acme/audit?limit=1", &t.admin).await;
    assert_eq!(log["items"][0]["action"], "device.import");
    assert_eq!(
        log["items"][0]["details"]["ids"],
        serde_json::json!(["i1", "i3"])
    );

    // All or nothing, all fine.
    let r = import(
        &t,
        &op,
        "?all_or_nothing=true",
        "{\"id\":\"j1\"}\n{\"id\":\"j2\"}",
    )
    .await
    .expect(200)
    .body;
    assert_eq!(r["created"], 2);

    // Access and media type.
    let viewer = t.token(Role::Viewer, "acme");
    import(&t, &viewer, "", valid)
        .await
        .problem(403, "forbidden");
    let other = t.token(Role::Operator, "other");
    import(&t, &other, "", valid)
        .await
        .problem(404, "not-found");
    import(&t, &op, "?all_or_nothing=maybe", valid)
        .await
        .problem(400, "bad-request");
    import_as(&t, &op, "application/json", "", "{\"id\":\"x\"}")
        .await
        .problem(415, "unsupported-media-type");
}

/// CSV: same results per row (numbered by line), same all-or-nothing.
async fn csv_import(db: &TestDb) {
    let t = TestApp::with_tenants(db, &["acme"]).await;
    t.device("acme", "dup").await;
    let op = t.token(Role::Operator, "acme");
    let csv = |query: &'static str, body: &'static str| {
        let (t, op) = (&t, &op);
        async move { import_as(t, op, "text/csv; charset=utf-8", query, body).await }
    };
    let body = concat!(
        "id,enabled,label.site,attributes\r\n",
        "c1,,berlin,\"{\"\"fw\"\":\"\"1.2\"\"}\"\r\n",
        "bad id,,,\r\n",
        "dup,,,\r\n",
        "c2,false,,\r\n",
    );

    let r = csv("?all_or_nothing=true", body).await.expect(200).body;
    assert_eq!(r["applied"], false);
    assert_eq!(
        statuses(&r),
        s(&[
            (2, "not_attempted"),
            (3, "failed"),
            (4, "not_attempted"),
            (5, "not_attempted")
        ])
    );
    assert_eq!(r["results"][1]["error"]["errors"][0]["pointer"], "/id");
    t.get("/v1/tenants/acme/devices/c1", &op)
        .await
        .problem(404, "not-found");

    let r = csv("", body).await.expect(200).body;
    assert_eq!(
        statuses(&r),
        s(&[(2, "created"), (3, "failed"), (4, "failed"), (5, "created")])
    );
    assert_eq!(
        r["results"][2]["error"]["type"],
        "https://fleetmq.dev/problems/already-exists"
    );
    let c1 = t.fetch("/v1/tenants/acme/devices/c1", &op).await;
    assert_eq!(c1["labels"]["site"], "berlin");
    assert_eq!(c1["attributes"]["fw"], "1.2");
    assert!(c1["enabled"].as_bool().unwrap());
    let c2 = t.fetch("/v1/tenants/acme/devices/c2", &op).await;
    assert_eq!(c2["enabled"], false);

    // All or nothing, all fine.
    let r = csv("?all_or_nothing=true", "id\nc3\nc4\n")
        .await
        .expect(200)
        .body;
    assert_eq!(
        (r["applied"].as_bool(), r["created"].as_u64()),
        (Some(true), Some(2))
    );

    // A header we do not understand refuses the whole body.
    let r = csv("", "id,colour\nc5,red\n")
        .await
        .problem(400, "bad-request")
        .body;
    assert!(r["detail"].as_str().unwrap().contains("colour"), "{r}");
    t.get("/v1/tenants/acme/devices/c5", &op)
        .await
        .problem(404, "not-found");
}

store::backend_tests!(ndjson_import, csv_import);
