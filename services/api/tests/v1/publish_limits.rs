//! Publish rate limits over HTTP: tenant default and device override,
//! roles, validation, audit, and what the session side is told.

use api::Role;
use serde_json::{Value, json};
use store::testing::TestDb;

use crate::pki_routes::pki_app;

async fn tenant_default_and_device_override(db: &TestDb) {
    let p = pki_app(db, &["acme", "beta"]).await;
    let t = &p.app;
    t.device("acme", "d1").await;
    let tenant_url = "/v1/tenants/acme/publish-limits";
    let device_url = "/v1/tenants/acme/devices/d1/publish-limits";
    let put = |uri: &'static str, token: String, body: Value| async move {
        t.put(uri, &token, body).await
    };
    let admin = t.token(Role::TenantAdmin, "acme");
    let operator = t.token(Role::Operator, "acme");
    let viewer = t.token(Role::Viewer, "acme");
    // `body` put at `uri`: refused to `denied` (403), then stored for
    // `allowed`; the stored view.
    let set = async |uri: &'static str, denied: &str, allowed: &str, body: &Value| {
        put(uri, denied.to_owned(), body.clone())
            .await
            .problem(403, "forbidden");
        put(uri, allowed.to_owned(), body.clone())
            .await
            .expect(200)
            .body
    };

    // None set: 404 for both (the platform default applies).
    t.get(tenant_url, &viewer).await.problem(404, "not-found");
    t.get(device_url, &viewer).await.problem(404, "not-found");

    // The tenant default is tenant-admin's; the device override operator's.
    let default = json!({"messages_per_second": 100, "bytes_per_second": 65536});
    let stored = set(tenant_url, &operator, &admin, &default).await;
    assert_eq!(stored["messages_per_second"], 100);
    assert_eq!(stored["messages_burst"], Value::Null);
    assert_eq!(stored["bytes_per_second"], 65536);
    assert!(stored["updated_at"].is_string());
    p.told.assert(&["limits acme/*"]);

    let low = json!({"messages_per_second": 2, "messages_burst": 3});
    let stored = set(device_url, &viewer, &operator, &low).await;
    assert_eq!(stored["messages_burst"], 3);
    assert_eq!(stored["bytes_per_second"], Value::Null);
    p.told.assert(&["limits acme/d1"]);
    assert_eq!(t.fetch(device_url, &viewer).await["messages_per_second"], 2);

    // Invalid bodies: 422 with the pointer; nothing stored or told.
    for (bad, pointer) in [
        (json!({"messages_per_second": 0}), "/messages_per_second"),
        (json!({"bytes_burst": 10}), "/bytes_burst"),
        (json!({"messages_burst": 10}), "/messages_burst"),
        (
            json!({"bytes_per_second": 1_000_000_000_001_u64}),
            "/bytes_per_second",
        ),
    ] {
        put(device_url, operator.clone(), bad.clone())
            .await
            .invalid_at(pointer);
    }
    let typo = put(device_url, operator.clone(), json!({"messages_per_sec": 1})).await;
    assert!(
        [400, 422].contains(&typo.status),
        "unknown fields are refused: {}",
        typo.body
    );
    p.told.assert(&[]);
    assert_eq!(t.fetch(device_url, &viewer).await["messages_per_second"], 2);

    // Unknown device, other tenant's token: 404.
    put(
        "/v1/tenants/acme/devices/nope/publish-limits",
        operator.clone(),
        low.clone(),
    )
    .await
    .problem(404, "not-found");
    let other = t.token(Role::TenantAdmin, "beta");
    t.get(device_url, &other).await.problem(404, "not-found");
    put(tenant_url, other, default.clone())
        .await
        .problem(404, "not-found");

    // Removing: the override, then the default; a second time is 404.
    t.delete(device_url, &operator).await.expect(204);
    t.delete(device_url, &operator)
        .await
        .problem(404, "not-found");
    t.delete(tenant_url, &admin).await.expect(204);
    t.get(tenant_url, &viewer).await.problem(404, "not-found");
    p.told.assert(&["limits acme/d1", "limits acme/*"]);

    // Every change is audited.
    t.assert_audited(
        "/v1/tenants/acme/audit",
        &[
            "publish_limits.put",
            "publish_limits.delete",
            "device.publish_limits.put",
            "device.publish_limits.delete",
        ],
    )
    .await;
}

store::backend_tests!(tenant_default_and_device_override);
