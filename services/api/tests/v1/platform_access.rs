//! Platform service credentials (`/v1/service-credentials`) and a
//! tenant's topic hygiene rules (`/v1/tenants/{t}/topic-rules`): roles,
//! validation, audit, and what the session side is told.

use std::sync::{Arc, Mutex};

use api::Role;
use events::change::{Change, ChangeFeed, ChangeListener, Origin};
use serde_json::json;
use store::testing::TestDb;

use crate::TestApp;

#[derive(Default)]
struct Told(Mutex<Vec<String>>);

#[async_trait::async_trait]
impl ChangeListener for Told {
    async fn apply(&self, change: &Change, _: &Origin) {
        let line = match change {
            Change::PlatformCredentialDeleted { name } => format!("deleted {name}"),
            Change::TopicRulesChanged { tenant } => format!("rules {tenant}"),
            _ => return,
        };
        self.0.lock().unwrap().push(line);
    }
}

async fn app(db: &TestDb) -> (TestApp, Arc<Told>) {
    let told = Arc::new(Told::default());
    let feed = ChangeFeed::new();
    feed.subscribe(told.clone());
    let app = TestApp::with(db, |state| state.with_change_feed(feed)).await;
    (app, told)
}

async fn platform_credentials_are_for_platform_admins(db: &TestDb) {
    let (t, told) = app(db).await;
    t.tenant("acme").await;
    let url = "/v1/service-credentials";
    let tenant_admin = t.token(Role::TenantAdmin, "acme");
    t.post(url, &tenant_admin, json!({"name": "ops"}))
        .await
        .problem(403, "forbidden");
    t.get(url, &tenant_admin).await.problem(403, "forbidden");
    t.post(url, &t.admin, json!({"name": "bad name"}))
        .await
        .invalid_at("/name");
    let r = t
        .post(
            url,
            &t.admin,
            json!({"name": "ops", "subscribe": ["a/#/b"]}),
        )
        .await
        .problem(422, "validation");
    assert!(r.pointer().starts_with("/subscribe"), "{}", r.body);

    let ops = json!({"name": "ops", "subscribe": ["+/devices/+/status"]});
    let created = t.post(url, &t.admin, ops).await.shown_once();
    assert_eq!(created["username"], "platform:ops");
    let stored = t.store.platform_credential_by_username("platform:ops");
    let stored = stored.await.unwrap().unwrap();
    crate::assert_hash_of(&stored.password_hash, &created["password"]);
    t.post(url, &t.admin, json!({"name": "ops"}))
        .await
        .problem(409, "already-exists");

    let list = t.fetch(url, &t.admin).await;
    assert_eq!(list["items"][0]["name"], "ops");
    assert!(list["items"][0].get("password").is_none());

    let id = created["id"].as_str().unwrap();
    t.delete(&format!("{url}/{id}"), &tenant_admin)
        .await
        .problem(403, "forbidden");
    t.delete(&format!("{url}/{id}"), &t.admin).await.expect(204);
    t.delete(&format!("{url}/{id}"), &t.admin)
        .await
        .problem(404, "not-found");
    assert_eq!(*told.0.lock().unwrap(), ["deleted ops"]);

    t.assert_audited(
        "/v1/audit",
        &["platform_credential.create", "platform_credential.delete"],
    )
    .await;
}

async fn topic_rules_get_put(db: &TestDb) {
    let (t, told) = app(db).await;
    t.tenant("acme").await;
    let url = "/v1/tenants/acme/topic-rules";
    let viewer = t.token(Role::Viewer, "acme");
    let admin = t.token(Role::TenantAdmin, "acme");
    let off = t.fetch(url, &viewer).await;
    assert_eq!(
        off,
        json!({"max_depth": null, "forbid_leading_slash": false, "forbid_spaces": false,
               "max_catch_all_subscriptions": null})
    );
    let rules = json!({"max_depth": 4, "forbid_leading_slash": true, "forbid_spaces": true,
                       "max_catch_all_subscriptions": 0});
    t.put(url, &viewer, rules.clone())
        .await
        .problem(403, "forbidden");
    t.put(url, &admin, json!({"max_depth": 0}))
        .await
        .invalid_at("/max_depth");
    t.put(url, &admin, json!({"depth": 3}))
        .await
        .problem(422, "validation");
    let put = t.put(url, &admin, rules.clone()).await.expect(200).body;
    assert_eq!(put, rules);
    assert_eq!(t.fetch(url, &viewer).await, rules);
    assert_eq!(*told.0.lock().unwrap(), ["rules acme"]);
    t.get("/v1/tenants/nope/topic-rules", &t.admin)
        .await
        .problem(404, "not-found");
    let log = t.fetch("/v1/tenants/acme/audit", &admin).await;
    assert_eq!(log["items"][0]["action"], "topic_rules.put", "{log}");
}

store::backend_tests!(
    platform_credentials_are_for_platform_admins,
    topic_rules_get_put
);
