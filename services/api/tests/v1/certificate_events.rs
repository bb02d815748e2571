//! `certificate.issued` and `certificate.revoked` on the event stream (SSE
//! and the webhook outbox read the same hub), numbered per device like the
//! other device events; revocation floors too.

use std::sync::Arc;

use api::{EventHub, Pki};
use chrono::Utc;
use pki::{Kek, RootCa, TrustRegistry};
use serde_json::json;
use store::testing::TestDb;

use crate::TestApp;

async fn certificate_events(db: &TestDb) {
    let root = RootCa::generate(Utc::now(), chrono::Duration::days(3650)).unwrap();
    let trust = TrustRegistry::new(root.cert_der().clone(), "fleetmq.local").unwrap();
    let pki = Arc::new(Pki::new(
        Arc::new(root),
        Arc::new(Kek::generate().unwrap()),
        trust,
        "fleetmq.local",
    ));
    let hub = EventHub::new(64);
    let mut events = hub.subscribe("acme");
    let t = TestApp::with(db, |s| s.with_pki(pki).with_event_hub(hub.clone())).await;
    t.tenant("acme").await;
    t.device("acme", "d1").await;
    let mut next = async || {
        loop {
            let e = tokio::time::timeout(std::time::Duration::from_secs(10), events.recv())
                .await
                .expect("an event in time")
                .unwrap();
            let api::events::StreamItem::Event(e) = e else {
                panic!("events missed");
            };
            if e.event_type.starts_with("certificate.") {
                return e;
            }
        }
    };

    let issued = t
        .post(
            "/v1/tenants/acme/devices/d1/certificates",
            &t.admin,
            json!({}),
        )
        .await
        .expect(201)
        .body;
    let serial = issued["serial"].as_str().unwrap();
    let e = next().await;
    assert_eq!(e.event_type, "certificate.issued");
    assert_eq!(e.tenant, "acme");
    assert_eq!(e.device.as_deref(), Some("d1"));
    assert_eq!(e.data["serial"], serial);
    assert_eq!(e.data["fingerprint_sha256"], issued["fingerprint_sha256"]);
    assert_eq!(e.data["key"], "server");
    let first_seq = e.seq.expect("numbered");
    assert_eq!(e.data["seq"], first_seq);

    t.post(
        &format!("/v1/tenants/acme/devices/d1/certificates/{serial}/revoke"),
        &t.admin,
        json!({"reason": "key_compromise"}),
    )
    .await
    .expect(200);
    let e = next().await;
    assert_eq!(e.event_type, "certificate.revoked");
    assert_eq!(e.data["serial"], serial);
    assert_eq!(e.data["reason"], "key_compromise");
    assert!(e.data["revoked_at"].is_string(), "{}", e.data);
    assert!(
        e.seq.unwrap() > first_seq,
        "later events have larger numbers"
    );

    // Floors: one event each, the device's numbered, the tenant's not.
    for (url, device, scope) in [
        (
            "/v1/tenants/acme/devices/d1/certificates:revoke-before",
            Some("d1"),
            "device",
        ),
        (
            "/v1/tenants/acme/certificates:revoke-before",
            None,
            "tenant",
        ),
    ] {
        t.post(url, &t.admin, json!({})).await.expect(200);
        let e = next().await;
        assert_eq!(e.event_type, "certificate.revoked");
        assert_eq!(e.device.as_deref(), device);
        assert_eq!(e.seq.is_some(), device.is_some());
        assert_eq!(e.data["scope"], scope);
        assert!(e.data["issued_before"].is_string(), "{}", e.data);
    }
}

store::backend_tests!(certificate_events);
