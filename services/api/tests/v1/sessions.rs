//! Issue 16: the broker's drop counts in the operator's session view and
//! the tenant's series, from this node's broker (a stand-in here).

use std::sync::Arc;

use api::{BrokerDrops, Role, SessionDrops, TenantDrops};
use chrono::Utc;
use serde_json::{Value, json};
use store::testing::TestDb;
use store::{SessionRecord, SessionWrites};

use crate::TestApp;

/// A broker holding session `held` of tenant `acme` only.
struct Held;

impl BrokerDrops for Held {
    fn session(&self, tenant: &str, client_id: &str) -> Option<SessionDrops> {
        (tenant == "acme" && client_id == "held").then_some(SessionDrops {
            queue_full: 1,
            slow_consumer: 40,
            expired: 2,
            ..SessionDrops::default()
        })
    }

    fn tenant(&self, tenant: &str) -> TenantDrops {
        if tenant == "acme" {
            TenantDrops {
                slow_consumer: 40,
                tenant_queue_full: 3,
            }
        } else {
            TenantDrops::default()
        }
    }
}

/// Stores persistent sessions `clients` of `tenant` (as a broker would).
async fn stored(t: &TestApp, tenant: &str, clients: &[&str]) {
    let upserted = clients
        .iter()
        .map(|c| SessionRecord {
            tenant_id: tenant.into(),
            client_id: (*c).into(),
            owner: (*c).into(),
            protocol: "5.0".into(),
            expiry_interval: 3600,
            expires_at: None,
            connected: true,
            node_id: Some("node-1".into()),
            connected_at: Utc::now(),
            disconnected_at: None,
            will: None,
        })
        .collect();
    t.store
        .write_sessions(&SessionWrites {
            upserted,
            ..SessionWrites::default()
        })
        .await
        .unwrap();
}

fn by_client<'a>(page: &'a Value, client: &str) -> &'a Value {
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["client_id"] == client)
        .unwrap_or_else(|| panic!("{client} in {page}"))
}

async fn drops_of_sessions_held_here_and_of_the_tenant(db: &TestDb) {
    let t = TestApp::with(db, |s| s.with_broker_drops(Arc::new(Held))).await;
    t.tenant("acme").await;
    t.tenant("beta").await;
    stored(&t, "acme", &["held", "elsewhere"]).await;
    stored(&t, "beta", &["held"]).await;
    let viewer = t.token(Role::Viewer, "acme");
    let held = json!({
        "queue_full": 1, "queue_bytes": 0, "slow_consumer": 40, "tenant_queue_full": 0,
        "offline_qos0": 0, "expired": 2, "too_large": 0,
    });

    let page = t.fetch("/v1/tenants/acme/sessions", &viewer).await;
    assert_eq!(by_client(&page, "held")["drops"], held);
    // Stored, but not held by this node's broker: no counts to show.
    assert_eq!(by_client(&page, "elsewhere")["drops"], Value::Null);
    let one = t.fetch("/v1/tenants/acme/sessions/held", &viewer).await;
    assert_eq!(one["drops"], held);
    assert_eq!(one["subscriptions"], 0, "the stored fields stay: {one}");
    let other = t
        .fetch("/v1/tenants/acme/sessions/elsewhere", &viewer)
        .await;
    assert_eq!(other["drops"], Value::Null);

    // Another tenant's session of the same client id is its own.
    let beta = t.token(Role::Viewer, "beta");
    let theirs = t.fetch("/v1/tenants/beta/sessions/held", &beta).await;
    assert_eq!(theirs["drops"], Value::Null);

    let series = t.fetch("/v1/tenants/acme/metrics/series", &viewer).await;
    assert_eq!(
        series["drops"],
        json!({"slow_consumer": 40, "tenant_queue_full": 3})
    );
    let quiet = t.fetch("/v1/tenants/beta/metrics/series", &beta).await;
    assert_eq!(
        quiet["drops"],
        json!({"slow_consumer": 0, "tenant_queue_full": 0})
    );
}

store::backend_tests!(drops_of_sessions_held_here_and_of_the_tenant);

async fn without_a_broker_drops_are_null(db: &TestDb) {
    let t = TestApp::with_tenants(db, &["acme"]).await;
    stored(&t, "acme", &["c1"]).await;
    let viewer = t.token(Role::Viewer, "acme");
    let page = t.fetch("/v1/tenants/acme/sessions", &viewer).await;
    assert_eq!(by_client(&page, "c1")["drops"], Value::Null);
    let series = t.fetch("/v1/tenants/acme/metrics/series", &viewer).await;
    assert_eq!(series["drops"], Value::Null);
}

store::backend_tests!(without_a_broker_drops_are_null);
