use serde_json::json;
use store::testing::TestDb;

use crate::TestApp;

async fn tenant_crud(db: &TestDb) {
    let t = TestApp::new(db).await;
    let a = &t.admin;
    let created = t
        .post("/v1/tenants", a, json!({"id": "acme", "name": "Acme"}))
        .await
        .expect(201)
        .body;
    assert_eq!(created["id"], "acme");
    assert_eq!(created["name"], "Acme");
    assert!(created["created_at"].is_string());

    let got = t.fetch("/v1/tenants/acme", a).await;
    assert_eq!(got, created);

    t.tenant("beta").await;
    let list = t.fetch("/v1/tenants?limit=1", a).await;
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
    assert_eq!(list["items"][0]["id"], "acme");
    let cursor = list["next_cursor"].as_str().unwrap().to_owned();
    let list = t
        .fetch(&format!("/v1/tenants?limit=1&cursor={cursor}"), a)
        .await;
    assert_eq!(list["items"][0]["id"], "beta");
    assert!(list["next_cursor"].is_null());

    let patched = t
        .patch("/v1/tenants/acme", a, json!({"name": "Acme Corp"}))
        .await
        .expect(200)
        .body;
    assert_eq!(patched["name"], "Acme Corp");
    // An empty merge patch changes nothing.
    let same = t
        .patch("/v1/tenants/acme", a, json!({}))
        .await
        .expect(200)
        .body;
    assert_eq!(same["name"], "Acme Corp");

    t.device("acme", "d1").await;
    t.delete("/v1/tenants/acme", a).await.expect(204);
    t.get("/v1/tenants/acme", a).await.problem(404, "not-found");
    t.get("/v1/tenants/acme/devices/d1", a)
        .await
        .problem(404, "not-found");
    t.delete("/v1/tenants/acme", a)
        .await
        .problem(404, "not-found");
    t.patch("/v1/tenants/acme", a, json!({"name": "x"}))
        .await
        .problem(404, "not-found");
}

async fn tenant_validation(db: &TestDb) {
    let t = TestApp::with_tenants(db, &["acme"]).await;
    let a = &t.admin;
    let r = t
        .post("/v1/tenants", a, json!({"id": "acme", "name": "Again"}))
        .await
        .problem(409, "already-exists");
    assert!(r.body["detail"].as_str().unwrap().contains("acme"));

    for bad in ["ab", "Acme", "a_b", "a/b", "a b", "x@y", &"a".repeat(64)] {
        t.post("/v1/tenants", a, json!({"id": bad, "name": "n"}))
            .await
            .invalid_at("/id");
    }
    t.post("/v1/tenants", a, json!({"id": "ok-id", "name": ""}))
        .await
        .invalid_at("/name");
    t.post(
        "/v1/tenants",
        a,
        json!({"id": "ok-id", "name": "n", "plan": "gold"}),
    )
    .await
    .invalid_at("/plan");
    t.post("/v1/tenants", a, json!({"name": "n"}))
        .await
        .invalid_at("/id");
    t.patch("/v1/tenants/acme", a, json!({"name": null}))
        .await
        .invalid_at("/name");
    t.patch("/v1/tenants/acme", a, json!({"id": "other"}))
        .await
        .invalid_at("/id");

    for q in ["limit=0", "limit=1001", "cursor=zz", "bogus=1"] {
        t.get(&format!("/v1/tenants?{q}"), a)
            .await
            .problem(400, "bad-request");
    }
    // The largest limit is allowed.
    t.get("/v1/tenants?limit=1000", a).await.expect(200);
}

store::backend_tests!(tenant_crud, tenant_validation);

/// The OpenAPI document is served without a token, as JSON.
async fn openapi_is_served(db: &TestDb) {
    let t = TestApp::new(db).await;
    let r = t
        .call(http::Method::GET, "/openapi.json", None, None)
        .await
        .expect(200);
    assert_eq!(r.headers[http::header::CONTENT_TYPE], "application/json");
    assert_eq!(r.body["openapi"], "3.1.0");
    assert!(r.body["paths"]["/v1/tenants/{t}/devices/{d}"]["patch"].is_object());
}

/// `application/merge-patch+json` is the PATCH media type (plain JSON too).
async fn merge_patch_media_type(db: &TestDb) {
    let t = TestApp::with_tenants(db, &["acme"]).await;
    let req = http::Request::patch("/v1/tenants/acme")
        .header(http::header::AUTHORIZATION, format!("Bearer {}", t.admin))
        .header(http::header::CONTENT_TYPE, "application/merge-patch+json")
        .body(axum::body::Body::from(r#"{"name":"Merged"}"#))
        .unwrap();
    let r = t.send(req).await.expect(200);
    assert_eq!(r.body["name"], "Merged");
    let req = http::Request::patch("/v1/tenants/acme")
        .header(http::header::AUTHORIZATION, format!("Bearer {}", t.admin))
        .header(http::header::CONTENT_TYPE, "text/plain")
        .body(axum::body::Body::from(r#"{"name":"x"}"#))
        .unwrap();
    t.send(req).await.problem(415, "unsupported-media-type");
}

store::backend_tests!(openapi_is_served, merge_patch_media_type);
