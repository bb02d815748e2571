use http::Method;
use serde_json::json;
use store::testing::TestDb;

use api::Role;

use crate::{TestApp, request};

/// Every mutation leaves an entry: actor, tenant, action, target, time,
/// request id; tenant-admins read their tenant's, newest first.
async fn mutations_are_audited(db: &TestDb) {
    let t = TestApp::new(db).await;
    let send = async |method: Method, uri: &str, token: &str, body, id: &str| {
        let req = request(method, uri, Some(token), body, &[("x-request-id", id)]);
        t.send(req).await
    };
    send(
        Method::POST,
        "/v1/tenants",
        &t.admin,
        Some(json!({"id": "acme", "name": "A"})),
        "r1",
    )
    .await
    .expect(201);
    let op = t.token(Role::Operator, "acme");
    let dev = "/v1/tenants/acme/devices";
    send(Method::POST, dev, &op, Some(json!({"id": "d1"})), "r2")
        .await
        .expect(201);
    send(
        Method::PATCH,
        &format!("{dev}/d1"),
        &op,
        Some(json!({"enabled": false})),
        "r3",
    )
    .await
    .expect(200);
    send(Method::DELETE, &format!("{dev}/d1"), &op, None, "r4")
        .await
        .expect(204);
    let ta = t.token(Role::TenantAdmin, "acme");
    send(
        Method::PATCH,
        "/v1/tenants/acme",
        &ta,
        Some(json!({"name": "B"})),
        "r5",
    )
    .await
    .expect(200);
    // Failed mutations and reads are not audited.
    send(Method::POST, dev, &op, Some(json!({"id": "bad/id"})), "x1")
        .await
        .expect(422);
    t.get(dev, &op).await.expect(200);

    let log = t.fetch("/v1/tenants/acme/audit", &ta).await;
    let items = log["items"].as_array().unwrap();
    let summary: Vec<(String, String, String, String)> = items
        .iter()
        .map(|e| {
            (
                e["action"].as_str().unwrap().to_owned(),
                e["actor"].as_str().unwrap().to_owned(),
                e["target"].as_str().unwrap().to_owned(),
                e["request_id"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let row = |a: &str, who: &str, target: &str, id: &str| {
        (
            a.to_owned(),
            who.to_owned(),
            target.to_owned(),
            id.to_owned(),
        )
    };
    assert_eq!(
        summary,
        [
            row("tenant.update", "tenant-admin:tester", "tenants/acme", "r5"),
            row(
                "device.delete",
                "operator:tester",
                "tenants/acme/devices/d1",
                "r4"
            ),
            row(
                "device.update",
                "operator:tester",
                "tenants/acme/devices/d1",
                "r3"
            ),
            row(
                "device.create",
                "operator:tester",
                "tenants/acme/devices/d1",
                "r2"
            ),
            row("tenant.create", "platform-admin:cli", "tenants/acme", "r1"),
        ]
    );
    assert!(
        items
            .iter()
            .all(|e| e["tenant_id"] == "acme" && e["at"].is_string())
    );

    // Paging, and the platform-wide log.
    let page = t.fetch("/v1/tenants/acme/audit?limit=2", &ta).await;
    assert_eq!(page["items"].as_array().unwrap().len(), 2);
    let next = page["next_cursor"].as_str().unwrap();
    let page = t
        .fetch(
            &format!("/v1/tenants/acme/audit?limit=2&cursor={next}"),
            &ta,
        )
        .await;
    assert_eq!(page["items"][0]["request_id"], "r3");
    let all = t.fetch("/v1/audit", &t.admin).await;
    assert_eq!(all["items"].as_array().unwrap().len(), 5);

    // The trail outlives the tenant, for the platform admin.
    t.delete("/v1/tenants/acme", &t.admin).await.expect(204);
    let log = t.fetch("/v1/tenants/acme/audit", &t.admin).await;
    assert_eq!(log["items"][0]["action"], "tenant.delete");
}

/// A change whose audit entry cannot be written is not made: the request
/// fails (500) and the data is as before.
async fn unaudited_changes_roll_back(db: &TestDb) {
    let t = TestApp::with_tenants(db, &["acme"]).await;
    let a = &t.admin;
    t.device("acme", "d1").await;
    db.execute("DROP TABLE audit_log").await.unwrap();

    // Each change leaves what a GET of its URI (the resource, or the
    // collection it would have joined) answers as it was.
    let d1 = "/v1/tenants/acme/devices/d1";
    for (method, uri, body) in [
        (
            Method::POST,
            "/v1/tenants/acme/devices",
            Some(json!({"id": "d2"})),
        ),
        (Method::PATCH, d1, Some(json!({"enabled": false}))),
        (Method::DELETE, d1, None),
        (
            Method::POST,
            "/v1/tenants",
            Some(json!({"id": "globex", "name": "G"})),
        ),
        (
            Method::PATCH,
            "/v1/tenants/acme",
            Some(json!({"name": "Renamed"})),
        ),
        (Method::DELETE, "/v1/tenants/acme", None),
        (
            Method::POST,
            "/v1/tenants/acme/api-keys",
            Some(json!({"name": "ci", "role": "viewer"})),
        ),
    ] {
        let before = t.fetch(uri, a).await;
        t.call(method.clone(), uri, Some(a.as_str()), body)
            .await
            .problem(500, "internal");
        assert_eq!(t.fetch(uri, a).await, before, "{method} {uri}");
    }
}

store::backend_tests!(mutations_are_audited, unaudited_changes_roll_back);
