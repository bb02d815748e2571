use api::Role;
use http::Method;
use serde_json::{Value, json};
use store::testing::TestDb;

use crate::{Resp, TestApp, request};

async fn post_with_key(t: &TestApp, uri: &str, token: &str, body: Value, key: &str) -> Resp {
    t.send(request(
        Method::POST,
        uri,
        Some(token),
        Some(body),
        &[("idempotency-key", key)],
    ))
    .await
}

async fn retries_get_the_first_response(db: &TestDb) {
    let t = TestApp::new(db).await;
    let create = || {
        post_with_key(
            &t,
            "/v1/tenants",
            &t.admin,
            json!({"id": "acme", "name": "A"}),
            "k-1",
        )
    };
    let first = create().await.expect(201);
    assert!(!first.headers.contains_key("idempotent-replayed"));
    let retry = create().await.expect(201);
    assert_eq!(retry.headers["idempotent-replayed"], "true");
    assert_eq!(retry.body, first.body);
    // Without the key, the duplicate is a 409 as usual.
    t.post("/v1/tenants", &t.admin, json!({"id": "acme", "name": "A"}))
        .await
        .problem(409, "already-exists");
    // The same key for a different request.
    post_with_key(
        &t,
        "/v1/tenants",
        &t.admin,
        json!({"id": "beta", "name": "B"}),
        "k-1",
    )
    .await
    .problem(422, "idempotency-key-reused");

    // Devices: scoped per tenant, bound to the caller.
    let op = t.token(Role::Operator, "acme");
    let dev = "/v1/tenants/acme/devices";
    let first = post_with_key(&t, dev, &op, json!({"id": "d1"}), "k-1")
        .await
        .expect(201);
    let retry = post_with_key(&t, dev, &op, json!({"id": "d1"}), "k-1")
        .await
        .expect(201);
    assert_eq!(retry.body, first.body);
    let list = t.fetch(dev, &op).await;
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
    let other = t.token(Role::TenantAdmin, "acme");
    let other = crate::TestApp {
        app: t.app.clone(),
        keys: t.keys.clone(),
        store: t.store.clone(),
        admin: other,
    };
    post_with_key(&other, dev, &other.admin, json!({"id": "d1"}), "k-1")
        .await
        .problem(422, "idempotency-key-reused");
    // Client errors are kept too: the retry of a 422 is the same 422.
    let bad = post_with_key(&t, dev, &op, json!({"id": "no/slash"}), "k-2")
        .await
        .problem(422, "validation");
    let again = post_with_key(&t, dev, &op, json!({"id": "no/slash"}), "k-2")
        .await
        .problem(422, "validation");
    assert_eq!(again.headers["idempotent-replayed"], "true");
    assert_eq!(again.body["errors"], bad.body["errors"]);
    // 401s are never stored.
    let req = request(
        Method::POST,
        dev,
        None,
        Some(json!({"id": "d2"})),
        &[("idempotency-key", "k-3")],
    );
    t.send(req).await.problem(401, "unauthorized");
    post_with_key(&t, dev, &op, json!({"id": "d2"}), "k-3")
        .await
        .expect(201);
    // Malformed keys.
    for key in ["", &"k".repeat(256), "has space"] {
        post_with_key(&t, dev, &op, json!({"id": "d3"}), key)
            .await
            .problem(400, "bad-request");
    }
}

store::backend_tests!(retries_get_the_first_response);
