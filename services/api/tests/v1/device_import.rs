use api::Role;
use axum::body::Body;
use http::Request;
use serde_json::Value;
use store::testing::TestDb;

use crate::{Resp, TestApp};

async fn import(t: &TestApp, token: &str, query: &str, body: &str) -> Resp {
    let req = Request::post(format!("/v1/tenants/acme/devices:import{query}"))
        .header(http::header::AUTHORIZATION, format!("Bearer {token}"))
        .header(http::header::CONTENT_TYPE, "application/x-ndjson")
        .body(Body::from(body.to_owned()))
        .unwrap();
    t.send(req).await
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

async fn ndjson_import(db: &TestDb) {
    let t = TestApp::new(db).await;
    t.tenant("acme").await;
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
    let s = |v: &[(u64, &str)]| -> Vec<(u64, String)> {
        v.iter().map(|(l, s)| (*l, (*s).to_owned())).collect()
    };

    // All or nothing: the invalid lines stop everything before the store.
    let r = import(&t, &op, "?all_or_nothing=true", body)
        .await
        .expect(200)
        .body;
    assert_eq!(r["applied"], false);
    assert_eq!(
        statuses(&r),
        s(&[
            (1, "not_attempted"),
            (3, "failed"),
            (4, "not_attempted"),
            (5, "failed"),
            (6, "failed"),
            (7, "not_attempted")
        ])
    );
    assert_eq!(r["results"][1]["error"]["errors"][0]["pointer"], "/id");
    assert_eq!(r["results"][4]["error"]["errors"][0]["pointer"], "/extra");
    // Valid lines, but a duplicate: rolled back.
    let valid = "{\"id\":\"i1\"}\n{\"id\":\"dup\"}\n{\"id\":\"i3\"}\n";
    let r = import(&t, &op, "?all_or_nothing=true", valid)
        .await
        .expect(200)
        .body;
    assert_eq!(r["applied"], false);
    assert_eq!(
        statuses(&r),
        s(&[(1, "rolled_back"), (2, "failed"), (3, "not_attempted")])
    );
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
    let i3 = t
        .get("/v1/tenants/acme/devices/i3", &op)
        .await
        .expect(200)
        .body;
    assert_eq!(i3["enabled"], false);
    let log = t
        .get("/v1/tenants/acme/audit?limit=1", &t.admin)
        .await
        .expect(200)
        .body;
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
    let req = Request::post("/v1/tenants/acme/devices:import")
        .header(http::header::AUTHORIZATION, format!("Bearer {op}"))
        .header(http::header::CONTENT_TYPE, "text/csv")
        .body(Body::from("id\nx\n"))
        .unwrap();
    t.send(req).await.problem(415, "unsupported-media-type");
}

store::backend_tests!(ndjson_import);
