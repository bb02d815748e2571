use std::sync::Arc;

use api::{
    CommandError, DeviceCommands, InMemoryRecentMessages, RecentMessage, RecentMessages,
    RecentMessagesLimits, Role,
};
use chrono::Utc;
use futures::future::BoxFuture;
use http::Method;
use serde_json::json;
use store::testing::TestDb;
use store::{PresenceStatus, PresenceUpdate, RetainedMessage, RetainedWrite, Store};

use crate::{TestApp, request};

/// Publishes the way the broker's durable retained store ends up: the
/// retained message is written to the database (QoS 1: acknowledged once
/// stored).
struct RetainedInStore(Store);

impl DeviceCommands for RetainedInStore {
    fn publish_retained<'a>(
        &'a self,
        tenant: &'a str,
        topic: &'a str,
        payload: Vec<u8>,
    ) -> BoxFuture<'a, Result<(), CommandError>> {
        Box::pin(async move {
            let message = RetainedMessage {
                tenant_id: tenant.to_owned(),
                topic: topic.to_owned(),
                payload,
                qos: 1,
                properties: json!({}),
                expires_at: None,
                updated_at: Utc::now(),
                owner: None,
            };
            self.0
                .write_retained(&[RetainedWrite::Set(message)])
                .await
                .map(|_| ())
                .map_err(|e| CommandError::Failed(e.to_string()))
        })
    }
}

async fn put_desired(
    t: &TestApp,
    uri: &str,
    token: &str,
    body: serde_json::Value,
    if_match: Option<&str>,
) -> crate::Resp {
    let headers: Vec<(&str, &str)> = if_match.map(|v| ("if-match", v)).into_iter().collect();
    t.send(request(Method::PUT, uri, Some(token), Some(body), &headers))
        .await
}

async fn desired_state(db: &TestDb) {
    let store = db.store().clone();
    let t = TestApp::with(db, |s| {
        s.with_device_commands(Arc::new(RetainedInStore(store)))
    })
    .await;
    t.tenant("acme").await;
    t.tenant("other").await;
    t.device("acme", "d1").await;
    let state_uri = "/v1/tenants/acme/devices/d1/state";
    let desired_uri = "/v1/tenants/acme/devices/d1/state/desired";
    let viewer = t.token(Role::Viewer, "acme");
    let operator = t.token(Role::Operator, "acme");

    let fresh = t.get(state_uri, &viewer).await.expect(200);
    assert_eq!(fresh.headers["etag"], "\"0\"");
    assert_eq!(fresh.body["status"], "offline");
    assert_eq!(fresh.body["versions"], json!({"reported": 0, "desired": 0}));
    assert_eq!(fresh.body["retained"], json!([]));

    put_desired(&t, desired_uri, &viewer, json!({"led": "on"}), None)
        .await
        .problem(403, "forbidden");
    let first = put_desired(
        &t,
        desired_uri,
        &operator,
        json!({"led": "on", "rate": 5}),
        Some("\"0\""),
    )
    .await
    .expect(200);
    assert_eq!(first.headers["etag"], "\"1\"");
    assert_eq!(first.body["desired"], json!({"led": "on", "rate": 5}));
    assert_eq!(first.body["delta"], json!({"led": "on", "rate": 5}));
    // Published retained to the device's command topic.
    let retained = &first.body["retained"];
    assert_eq!(retained.as_array().unwrap().len(), 1, "{retained}");
    assert_eq!(retained[0]["topic"], "commands/d1/state/desired");
    assert_eq!(retained[0]["qos"], 1);
    assert_eq!(retained[0]["encoding"], "utf-8");
    let published: serde_json::Value =
        serde_json::from_str(retained[0]["payload"].as_str().unwrap()).unwrap();
    assert_eq!(published, json!({"led": "on", "rate": 5}));

    // A stale If-Match loses; no If-Match merges.
    put_desired(
        &t,
        desired_uri,
        &operator,
        json!({"led": "off"}),
        Some("\"0\""),
    )
    .await
    .problem(412, "precondition-failed");
    put_desired(&t, desired_uri, &operator, json!({"rate": null}), None)
        .await
        .expect(200);
    put_desired(&t, desired_uri, &operator, json!([1]), None)
        .await
        .problem(400, "bad-request");
    put_desired(&t, desired_uri, &operator, json!({}), Some("nonsense"))
        .await
        .problem(400, "bad-request");

    // The device reports; delta is what still differs; presence shows.
    t.store
        .merge_reported("acme", "d1", &json!({"led": "off", "temp": 21}), Utc::now())
        .await
        .unwrap();
    let now = Utc::now();
    t.store
        .update_presence(&[PresenceUpdate {
            tenant_id: "acme".into(),
            device_id: "d1".into(),
            status: PresenceStatus::Online,
            at: now,
            connected_at: Some(now),
            remote_addr: None,
            protocol: Some("mqtt-5".into()),
            credential: None,
            disconnect_reason: None,
            node_id: None,
        }])
        .await
        .unwrap();
    let after = t.get(state_uri, &viewer).await.expect(200);
    assert_eq!(after.headers["etag"], "\"2\"");
    assert_eq!(after.body["status"], "online");
    assert!(after.body["connected_at"].is_string());
    assert_eq!(after.body["desired"], json!({"led": "on"}));
    assert_eq!(after.body["delta"], json!({"led": "on"}));
    assert_eq!(after.body["versions"], json!({"reported": 1, "desired": 2}));

    // Device status in the device resource and the list filter.
    let device = t
        .get("/v1/tenants/acme/devices/d1", &viewer)
        .await
        .expect(200);
    assert_eq!(device.body["status"], "online");
    t.device("acme", "d2").await;
    let online = t
        .get("/v1/tenants/acme/devices?status=online", &viewer)
        .await
        .expect(200);
    let ids: Vec<&str> = online.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["d1"]);
    assert_eq!(online.body["items"][0]["status"], "online");
    let offline = t
        .get("/v1/tenants/acme/devices?status=offline", &viewer)
        .await
        .expect(200);
    assert_eq!(offline.body["items"][0]["id"], "d2");
    assert_eq!(offline.body["items"][0]["status"], "offline");

    // Another tenant's device is not there; a missing device is 404.
    let stranger = t.token(Role::TenantAdmin, "other");
    t.get(state_uri, &stranger).await.problem(404, "not-found");
    put_desired(&t, desired_uri, &stranger, json!({"x": 1}), None)
        .await
        .problem(404, "not-found");
    t.get("/v1/tenants/acme/devices/nope/state", &viewer)
        .await
        .problem(404, "not-found");
}

async fn desired_without_mqtt_is_503(db: &TestDb) {
    let t = TestApp::with_tenants(db, &["acme"]).await;
    t.device("acme", "d1").await;
    put_desired(
        &t,
        "/v1/tenants/acme/devices/d1/state/desired",
        &t.admin,
        json!({"a": 1}),
        None,
    )
    .await
    .problem(503, "unavailable");
    // Nothing was stored.
    let state = t
        .get("/v1/tenants/acme/devices/d1/state", &t.admin)
        .await
        .expect(200);
    assert_eq!(state.body["versions"]["desired"], 0);
    t.get("/v1/tenants/acme/devices/d1/messages", &t.admin)
        .await
        .problem(503, "unavailable");
}

async fn recent_messages(db: &TestDb) {
    let ring = Arc::new(InMemoryRecentMessages::new(RecentMessagesLimits {
        per_device: 3,
        ..RecentMessagesLimits::default()
    }));
    let t = TestApp::with(db, |s| s.with_recent_messages(ring.clone())).await;
    t.tenant("acme").await;
    t.tenant("other").await;
    t.device("acme", "d1").await;
    for (i, payload) in [
        b"one".to_vec(),
        vec![0xff, 0xfe],
        b"three".to_vec(),
        b"four".to_vec(),
    ]
    .into_iter()
    .enumerate()
    {
        ring.record(
            "acme",
            "d1",
            RecentMessage {
                topic: format!("devices/d1/m{i}"),
                payload,
                truncated: false,
                qos: 0,
                retain: false,
                received_at: Utc::now(),
            },
        );
    }
    let viewer = t.token(Role::Viewer, "acme");
    let all = t
        .get("/v1/tenants/acme/devices/d1/messages", &viewer)
        .await
        .expect(200);
    let items = all.body["items"].as_array().unwrap();
    assert_eq!(items.len(), 3);
    assert_eq!(items[0]["topic"], "devices/d1/m3");
    assert_eq!(items[0]["payload"], "four");
    assert_eq!(items[2]["encoding"], "base64");
    assert_eq!(items[2]["payload"], "//4=");
    let one = t
        .get("/v1/tenants/acme/devices/d1/messages?limit=1", &viewer)
        .await
        .expect(200);
    assert_eq!(one.body["items"].as_array().unwrap().len(), 1);
    t.get("/v1/tenants/acme/devices/d1/messages?limit=0", &viewer)
        .await
        .problem(400, "bad-request");
    t.get("/v1/tenants/acme/devices/nope/messages", &viewer)
        .await
        .problem(404, "not-found");
    t.get(
        "/v1/tenants/acme/devices/d1/messages",
        &t.token(Role::Viewer, "other"),
    )
    .await
    .problem(404, "not-found");
}

store::backend_tests!(desired_state, desired_without_mqtt_is_503, recent_messages);
