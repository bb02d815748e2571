//! `GET|PUT /v1/tenants/{t}/presence-settings`: defaults, roles, audit,
//! validation, and the broker's view told at once.

use std::sync::Arc;

use api::Role;
use events::change::ChangeFeed;
use serde_json::json;
use store::testing::TestDb;

use crate::TestApp;

async fn presence_settings(db: &TestDb) {
    // The broker's view, fed by the change feed as the binary wires it.
    let topics = access::StatusTopics::new();
    let feed = ChangeFeed::new();
    feed.subscribe(Arc::new(topics.clone()));
    let t = TestApp::with(db, |s| s.with_change_feed(feed)).await;
    t.tenant("acme").await;
    let uri = "/v1/tenants/acme/presence-settings";
    let viewer = t.token(Role::Viewer, "acme");
    let admin = t.token(Role::TenantAdmin, "acme");

    let fresh = t.get(uri, &viewer).await.expect(200);
    assert_eq!(fresh.body["publish_status"], true);
    assert_eq!(fresh.body["status_topic"], "devices/{d}/status");
    assert!(fresh.body["updated_at"].is_null());

    t.put(uri, &viewer, json!({"publish_status": false}))
        .await
        .problem(403, "forbidden");
    assert!(topics.publishes("acme"));
    t.put(uri, &admin, json!({"publish": false}))
        .await
        .problem(422, "validation");
    t.put(uri, &admin, json!({}))
        .await
        .problem(422, "validation");

    let off = t
        .put(uri, &admin, json!({"publish_status": false}))
        .await
        .expect(200);
    assert_eq!(off.body["publish_status"], false);
    assert!(off.body["updated_at"].is_string());
    assert!(!topics.publishes("acme"));
    assert_eq!(t.fetch(uri, &viewer).await["publish_status"], false);

    let audit = t.get("/v1/tenants/acme/audit", &t.admin).await.expect(200);
    let entry = audit.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["action"] == "presence_settings.put")
        .expect("audited");
    assert_eq!(entry["details"], json!({"publish_status": false}));

    t.get("/v1/tenants/nobody/presence-settings", &t.admin)
        .await
        .problem(404, "not-found");
}

store::backend_tests!(presence_settings);
