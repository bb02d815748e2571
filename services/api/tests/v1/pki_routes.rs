//! Certificates, CAs, CRLs, passwords, service credentials and policies
//! over HTTP, with a real PKI (root generated here) and a listener on the
//! change feed that records what live sessions would be told.

use std::sync::{Arc, Mutex};

use api::{Pki, Role};
use chrono::Utc;
use events::change::{Change, ChangeFeed, ChangeListener, Origin};
use http::Method;
use pki::{Kek, RootCa, TrustRegistry};
use serde_json::{Value, json};
use store::testing::TestDb;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::{TestApp, request};

/// What the API told the session side, in order.
#[derive(Default)]
pub(crate) struct Told(Mutex<Vec<String>>);

impl Told {
    pub(crate) fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }

    /// Asserts that what was told since the last look is `expected`, in order.
    #[track_caller]
    pub(crate) fn assert(&self, expected: &[&str]) {
        assert_eq!(self.take(), expected);
    }
    fn push(&self, what: String) {
        self.0.lock().unwrap().push(what);
    }
}

/// The change feed's changes as the lines the tests expect; CA additions
/// (every first certificate makes the tenant's CA) are left out.
#[async_trait::async_trait]
impl ChangeListener for Told {
    async fn apply(&self, change: &Change, _: &Origin) {
        let line = match change {
            Change::CertificateRevoked {
                tenant,
                device,
                serial,
            } => format!("revoked {tenant}/{device}/{serial}"),
            Change::DeviceFloorRaised { tenant, device }
            | Change::DeviceDisabled { tenant, device }
            | Change::DeviceDeleted { tenant, device }
            | Change::DevicePasswordChanged { tenant, device } => {
                format!("device {tenant}/{device}")
            }
            Change::TenantFloorRaised { tenant } | Change::TenantCaRemoved { tenant, .. } => {
                format!("tenant {tenant}")
            }
            Change::TenantDeleted { tenant } => format!("tenant deleted {tenant}"),
            Change::ServiceCredentialDeleted { tenant, name } => {
                format!("service credential {tenant}/{name}")
            }
            Change::PoliciesChanged { tenant } => format!("policies {tenant}"),
            Change::PublishLimitsChanged { tenant, device } => {
                format!("limits {tenant}/{}", device.as_deref().unwrap_or("*"))
            }
            _ => return,
        };
        self.push(line);
    }
}

pub(crate) struct PkiApp {
    pub(crate) app: TestApp,
    pub(crate) told: Arc<Told>,
    trust: TrustRegistry,
    root_pem: String,
}

/// The app with PKI and a change feed, and `tenants` created.
pub(crate) async fn pki_app(db: &TestDb, tenants: &[&str]) -> PkiApp {
    let root = RootCa::generate(Utc::now(), chrono::Duration::days(3650)).unwrap();
    let root_pem = root.cert_pem().to_owned();
    let trust = TrustRegistry::new(root.cert_der().clone(), "fleetmq.local").unwrap();
    let pki = Arc::new(Pki::new(
        Arc::new(root),
        Arc::new(Kek::generate().unwrap()),
        trust.clone(),
        "fleetmq.local",
    ));
    let told = Arc::new(Told::default());
    let feed = ChangeFeed::new();
    let app = TestApp::with(db, |state| {
        // As the binary wires it: the trust set follows CA changes first.
        feed.subscribe(Arc::new(api::PkiChanges::new(
            pki.clone(),
            state.store().clone(),
        )));
        feed.subscribe(told.clone());
        state.with_pki(pki).with_change_feed(feed)
    })
    .await;
    for id in tenants {
        app.tenant(id).await;
    }
    PkiApp {
        app,
        told,
        trust,
        root_pem,
    }
}

fn ders(pem: &str) -> Vec<rustls_pki_types::CertificateDer<'static>> {
    pki::pem_to_der_chain(pem).unwrap()
}

/// `certificate_pem` + `chain_pem` verify to the root: by x509-parser
/// signature checks, and by the same registry the broker's verifier reads.
fn check_chain(p: &PkiApp, issued: &Value, tenant: &str, device: &str) {
    let leaf = ders(issued["certificate_pem"].as_str().unwrap());
    let chain = ders(issued["chain_pem"].as_str().unwrap());
    assert_eq!(chain.len(), 2, "tenant CA then root");
    assert_eq!(ders(&p.root_pem)[0], chain[1]);
    let (_, leaf_x) = X509Certificate::from_der(&leaf[0]).unwrap();
    let (_, ca_x) = X509Certificate::from_der(&chain[0]).unwrap();
    let (_, root_x) = X509Certificate::from_der(&chain[1]).unwrap();
    leaf_x.verify_signature(Some(ca_x.public_key())).unwrap();
    ca_x.verify_signature(Some(root_x.public_key())).unwrap();
    let cn = leaf_x.subject().iter_common_name().next().unwrap();
    assert_eq!(cn.as_str().unwrap(), device);
    assert_eq!(
        leaf_x
            .raw_serial_as_string()
            .replace(':', "")
            .trim_start_matches('0'),
        issued["serial"].as_str().unwrap().trim_start_matches('0')
    );
    let mut presented = leaf.clone();
    presented.extend(chain);
    let identity = p.trust.identify(&presented, Utc::now()).unwrap();
    assert_eq!(identity.tenant, tenant);
    assert_eq!(identity.device, device);
    assert_eq!(identity.serial, issued["serial"]);
}

async fn certificates_issue_list_revoke_crl(db: &TestDb) {
    let p = pki_app(db, &["acme"]).await;
    let t = &p.app;
    // Made with the tenant: stored sealed and trusted at once.
    assert_eq!(
        t.store.list_tenant_cas(Some("acme")).await.unwrap().len(),
        1
    );
    assert_eq!(p.trust.len(), 1, "the tenant CA");
    t.device("acme", "s-1").await;
    let op = t.token(Role::Operator, "acme");
    let base = "/v1/tenants/acme/devices/s-1/certificates";

    // Server-made key: returned once, never cached.
    let server = t.post(base, &op, json!({})).await.shown_once();
    let key = server["private_key_pem"].as_str().unwrap();
    assert!(key.starts_with("-----BEGIN PRIVATE KEY-----"), "{key}");
    assert_eq!(server["fingerprint_sha256"].as_str().unwrap().len(), 64);
    check_chain(&p, &server, "acme", "s-1");

    // From a CSR: the device keeps its key; the subject asked for is ignored.
    let device_key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["evil.example".to_owned()]).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "someone-else");
    let csr = params
        .serialize_request(&device_key)
        .unwrap()
        .pem()
        .unwrap();
    let from_csr = t
        .post(base, &op, json!({"csr_pem": csr, "validity_days": 30}))
        .await
        .expect(201)
        .body;
    assert!(from_csr.get("private_key_pem").is_none(), "{from_csr}");
    check_chain(&p, &from_csr, "acme", "s-1");
    let leaf = ders(from_csr["certificate_pem"].as_str().unwrap());
    let (_, leaf_x) = X509Certificate::from_der(&leaf[0]).unwrap();
    assert_eq!(
        leaf_x.public_key().subject_public_key.data.as_ref(),
        rcgen::PublicKeyData::der_bytes(&device_key)
    );
    let days = (leaf_x.validity().not_after.timestamp() - Utc::now().timestamp()) / 86_400;
    assert!((29..=30).contains(&days), "{days} days");

    // Bad CSRs: 400 saying why.
    let r = t
        .post(base, &op, json!({"csr_pem": "not a csr"}))
        .await
        .problem(400, "bad-request");
    assert!(
        r.body["detail"].as_str().unwrap().contains("csr_pem"),
        "{}",
        r.body
    );
    let mut tampered = csr.clone().into_bytes();
    let mid = tampered.len() / 2;
    tampered[mid] = if tampered[mid] == b'A' { b'B' } else { b'A' };
    t.post(
        base,
        &op,
        json!({"csr_pem": String::from_utf8(tampered).unwrap()}),
    )
    .await
    .problem(400, "bad-request");
    t.post(base, &op, json!({"validity_days": 0}))
        .await
        .problem(422, "validation");

    // List.
    let viewer = t.token(Role::Viewer, "acme");
    let list = t.fetch(base, &viewer).await;
    let items = list["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    assert!(items.iter().all(|c| c["status"] == "active"));
    assert!(items.iter().all(|c| c.get("private_key_pem").is_none()));

    // Revoke: status, session control, CRL (DER and PEM).
    let serial = server["serial"].as_str().unwrap();
    p.told.take();
    t.post(
        &format!("{base}/{serial}/revoke"),
        &op,
        json!({"reason": "bogus"}),
    )
    .await
    .problem(422, "validation");
    let revoked = t
        .post(
            &format!("{base}/{serial}/revoke"),
            &op,
            json!({"reason": "key_compromise"}),
        )
        .await
        .expect(200)
        .body;
    assert_eq!(revoked["status"], "revoked");
    assert_eq!(revoked["revocation_reason"], "key_compromise");
    assert_eq!(p.told.take(), vec![format!("revoked acme/s-1/{serial}")]);
    t.post(&format!("{base}/00ff/revoke"), &op, json!({}))
        .await
        .problem(404, "not-found");

    let (status, headers, der) = t
        .send_raw(request(
            Method::GET,
            "/v1/tenants/acme/ca/crl",
            Some(&viewer),
            None,
            &[],
        ))
        .await;
    assert_eq!(status, 200);
    assert_eq!(headers[http::header::CONTENT_TYPE], "application/pkix-crl");
    let (_, crl) = x509_parser::parse_x509_crl(&der).unwrap();
    let listed: Vec<String> = crl
        .iter_revoked_certificates()
        .map(|c| {
            hex::encode(c.raw_serial())
                .trim_start_matches('0')
                .to_owned()
        })
        .collect();
    assert_eq!(listed, vec![serial.trim_start_matches('0').to_owned()]);
    let ca_pem = t
        .send_raw(request(
            Method::GET,
            "/v1/tenants/acme/ca",
            Some(&viewer),
            None,
            &[],
        ))
        .await;
    assert_eq!(ca_pem.0, 200);
    assert_eq!(
        ca_pem.1[http::header::CONTENT_TYPE],
        "application/x-pem-file"
    );
    let ca_chain = ders(std::str::from_utf8(&ca_pem.2).unwrap());
    let (_, ca_x) = X509Certificate::from_der(&ca_chain[0]).unwrap();
    crl.verify_signature(ca_x.public_key()).unwrap();
    for (uri, accept) in [
        ("/v1/tenants/acme/ca/crl?format=pem", None),
        ("/v1/tenants/acme/ca/crl", Some("application/x-pem-file")),
    ] {
        let headers: Vec<(&str, &str)> = accept.map(|a| ("accept", a)).into_iter().collect();
        let (status, h, body) = t
            .send_raw(request(Method::GET, uri, Some(&viewer), None, &headers))
            .await;
        assert_eq!(status, 200);
        assert_eq!(h[http::header::CONTENT_TYPE], "application/x-pem-file");
        assert!(body.starts_with(b"-----BEGIN X509 CRL-----"));
    }
    t.get("/v1/tenants/acme/ca/crl?format=txt", &viewer)
        .await
        .problem(400, "bad-request");

    // Floors: per device and per tenant; never in the future.
    let floor = t
        .post(&format!("{base}:revoke-before"), &op, json!({}))
        .await
        .expect(200)
        .body;
    let floors = t.store.cert_floors("acme", "s-1").await.unwrap();
    assert_eq!(
        floors.device.map(|f| f.timestamp_millis()),
        Some(
            floor["before"]
                .as_str()
                .unwrap()
                .parse::<chrono::DateTime<Utc>>()
                .unwrap()
                .timestamp_millis()
        )
    );
    p.told.assert(&["device acme/s-1"]);
    let tenant_floor = "/v1/tenants/acme/certificates:revoke-before";
    let earlier = "2020-01-01T00:00:00Z";
    t.post(tenant_floor, &op, json!({"before": earlier}))
        .await
        .expect(200);
    let floors = t.store.cert_floors("acme", "s-1").await.unwrap();
    assert_eq!(
        floors.tenant.unwrap().to_rfc3339(),
        "2020-01-01T00:00:00+00:00"
    );
    p.told.assert(&["tenant acme"]);
    t.post(tenant_floor, &op, json!({"before": "2999-01-01T00:00:00Z"}))
        .await
        .problem(422, "validation");

    // Disabling and deleting the device end its sessions; other changes
    // (labels) do not.
    let device = "/v1/tenants/acme/devices/s-1";
    for change in [json!({"enabled": false}), json!({"labels": {"a": "b"}})] {
        t.patch(device, &op, change).await.expect(200);
    }
    t.delete(device, &op).await.expect(204);
    p.told.assert(&["device acme/s-1", "device acme/s-1"]);

    // Every mutation is in the audit log.
    t.assert_audited(
        "/v1/tenants/acme/audit",
        &[
            "certificate.issue",
            "certificate.revoke",
            "certificate.revoke_before",
        ],
    )
    .await;
}

async fn root_and_lazy_tenant_ca(db: &TestDb) {
    // A tenant made before the PKI was configured.
    let plain = TestApp::with_tenants(db, &["old-one"]).await;
    plain.device("old-one", "d1").await;
    plain
        .post(
            "/v1/tenants/old-one/devices/d1/certificates",
            &plain.admin,
            json!({}),
        )
        .await
        .problem(503, "unavailable");
    plain
        .get("/v1/ca", &plain.admin)
        .await
        .problem(503, "unavailable");
    assert!(
        db.store()
            .list_tenant_cas(Some("old-one"))
            .await
            .unwrap()
            .is_empty()
    );

    let p = pki_app(db, &[]).await;
    let t = &p.app;
    // The root needs no token.
    let (status, headers, body) = t
        .send_raw(request(Method::GET, "/v1/ca", None, None, &[]))
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        headers[http::header::CONTENT_TYPE],
        "application/x-pem-file"
    );
    assert_eq!(std::str::from_utf8(&body).unwrap(), p.root_pem);
    let issued = t
        .post(
            "/v1/tenants/old-one/devices/d1/certificates",
            &t.token(Role::TenantAdmin, "old-one"),
            json!({}),
        )
        .await
        .expect(201)
        .body;
    check_chain(&p, &issued, "old-one", "d1");
    assert_eq!(
        t.store
            .list_tenant_cas(Some("old-one"))
            .await
            .unwrap()
            .len(),
        1
    );
    // Unknown device and tenant: 404, and no CA made for a missing tenant.
    t.post(
        "/v1/tenants/old-one/devices/nope/certificates",
        &t.admin,
        json!({}),
    )
    .await
    .problem(404, "not-found");
    t.get("/v1/tenants/no-such/ca", &t.admin)
        .await
        .problem(404, "not-found");
}

async fn device_passwords(db: &TestDb) {
    let p = pki_app(db, &["acme"]).await;
    let t = &p.app;
    t.device("acme", "s-1").await;
    let url = "/v1/tenants/acme/devices/s-1/password";
    let op = t.token(Role::Operator, "acme");
    t.post(url, &t.token(Role::Viewer, "acme"), json!({}))
        .await
        .problem(403, "forbidden");
    let r = t.post(url, &op, json!({})).await.shown_once();
    assert_eq!(r["username"], "s-1@acme");
    let first = r["password"].as_str().unwrap().to_owned();
    let hash = t.store.device_password_hash("acme", "s-1").await.unwrap();
    crate::assert_hash_of(&hash.unwrap(), &r["password"]);
    // A new one replaces it.
    let second = t.post(url, &op, json!({})).await.expect(201).body;
    assert_ne!(second["password"], first);
    let hash = t
        .store
        .device_password_hash("acme", "s-1")
        .await
        .unwrap()
        .unwrap();
    assert!(!access::verify_password(first.as_bytes(), &hash));
    p.told.assert(&["device acme/s-1", "device acme/s-1"]);
    t.delete(url, &op).await.expect(204);
    assert!(
        t.store
            .device_password_hash("acme", "s-1")
            .await
            .unwrap()
            .is_none()
    );
    t.delete(url, &op).await.problem(404, "not-found");
    t.post("/v1/tenants/acme/devices/ghost/password", &op, json!({}))
        .await
        .problem(404, "not-found");
}

async fn service_credentials(db: &TestDb) {
    let p = pki_app(db, &["acme"]).await;
    let t = &p.app;
    let url = "/v1/tenants/acme/service-credentials";
    let admin = t.token(Role::TenantAdmin, "acme");
    t.post(
        url,
        &t.token(Role::Operator, "acme"),
        json!({"name": "ingest"}),
    )
    .await
    .problem(403, "forbidden");
    let ingest = json!({"name": "ingest", "subscribe": ["devices/+/telemetry"]});
    let created = t.post(url, &admin, ingest).await.shown_once();
    assert_eq!(created["username"], "service:acme:ingest");
    let stored = t
        .store
        .service_credential_by_username("service:acme:ingest");
    let stored = stored.await.unwrap().unwrap();
    crate::assert_hash_of(&stored.password_hash, &created["password"]);
    assert_eq!(stored.subscribe, vec!["devices/+/telemetry".to_owned()]);
    t.post(url, &admin, json!({"name": "ingest"}))
        .await
        .problem(409, "already-exists");
    let r = t
        .post(
            url,
            &admin,
            json!({"name": "bad name", "publish": ["a/#/b"]}),
        )
        .await
        .problem(422, "validation");
    let pointers: Vec<&str> = r.body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["pointer"].as_str())
        .collect();
    assert_eq!(pointers, vec!["/name", "/publish/0"]);

    let list = t.fetch(url, &t.token(Role::Viewer, "acme")).await;
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
    assert!(list["items"][0].get("password").is_none());
    assert!(list["items"][0].get("password_hash").is_none());
    let id = created["id"].as_str().unwrap();
    t.delete(&format!("{url}/{id}"), &admin).await.expect(204);
    t.delete(&format!("{url}/{id}"), &admin)
        .await
        .problem(404, "not-found");
    p.told.assert(&["service credential acme/ingest"]);
}

async fn policies_round_trip(db: &TestDb) {
    let p = pki_app(db, &["acme"]).await;
    let t = &p.app;
    let admin = t.token(Role::TenantAdmin, "acme");
    let url = "/v1/tenants/acme/policies/sensors";
    let document = json!({"rules": [
        {"effect": "allow", "action": "publish", "filters": ["devices/${device}/#"]},
        {"effect": "deny", "action": "both", "filters": ["devices/${device}/secret"]},
    ]});
    let put = |token: String, body: Value| {
        let uri = url.to_owned();
        async move { t.put(&uri, &token, body).await }
    };
    put(t.token(Role::Operator, "acme"), document.clone())
        .await
        .problem(403, "forbidden");
    let stored = put(admin.clone(), document.clone()).await.expect(200).body;
    assert_eq!(stored["name"], "sensors");
    assert_eq!(stored["document"], document);
    p.told.assert(&["policies acme"]);
    let viewer = t.token(Role::Viewer, "acme");
    assert_eq!(t.fetch(url, &viewer).await["document"], document);
    let list = t.fetch("/v1/tenants/acme/policies", &viewer).await;
    assert_eq!(list["items"][0]["name"], "sensors");

    // Invalid documents: 422 pointing at the bad part; nothing stored.
    for (bad, pointer) in [
        (
            json!({"rules": [{"effect": "allow", "action": "publish", "filters": ["ok/#", "a/#/b"]}]}),
            "/rules/0/filters/1",
        ),
        (
            json!({"rules": [{"effect": "allow", "action": "publish", "filters": ["x/${nobody}"]}]}),
            "/rules/0/filters/0",
        ),
        (
            json!({"rules": [{"effect": "maybe", "action": "publish", "filters": []}]}),
            "",
        ),
        (json!({"rulez": []}), ""),
    ] {
        put(admin.clone(), bad.clone()).await.invalid_at(pointer);
    }
    assert_eq!(t.fetch(url, &viewer).await["document"], document);
    p.told.assert(&[]);
    t.put(
        "/v1/tenants/acme/policies/bad%20name",
        &admin,
        document.clone(),
    )
    .await
    .problem(400, "bad-request");

    t.delete(url, &admin).await.expect(204);
    t.get(url, &viewer).await.problem(404, "not-found");
    t.delete(url, &admin).await.problem(404, "not-found");
    p.told.assert(&["policies acme"]);
}

/// Who may do what, and another tenant's token sees nothing (404).
async fn roles_and_tenant_isolation(db: &TestDb) {
    let p = pki_app(db, &["acme", "beta"]).await;
    let t = &p.app;
    t.device("acme", "s-1").await;
    let certs = "/v1/tenants/acme/devices/s-1/certificates";
    t.post(certs, &t.token(Role::Viewer, "acme"), json!({}))
        .await
        .problem(403, "forbidden");
    t.post(certs, &t.token(Role::TenantAdmin, "acme"), json!({}))
        .await
        .expect(201);
    let other = t.token(Role::TenantAdmin, "beta");
    for (method, uri) in [
        (Method::POST, certs.to_owned()),
        (Method::GET, certs.to_owned()),
        (Method::POST, format!("{certs}/01/revoke")),
        (Method::POST, format!("{certs}:revoke-before")),
        (
            Method::POST,
            "/v1/tenants/acme/certificates:revoke-before".to_owned(),
        ),
        (Method::GET, "/v1/tenants/acme/ca".to_owned()),
        (Method::GET, "/v1/tenants/acme/ca/crl".to_owned()),
        (
            Method::POST,
            "/v1/tenants/acme/devices/s-1/password".to_owned(),
        ),
        (
            Method::DELETE,
            "/v1/tenants/acme/devices/s-1/password".to_owned(),
        ),
        (
            Method::GET,
            "/v1/tenants/acme/service-credentials".to_owned(),
        ),
        (
            Method::POST,
            "/v1/tenants/acme/service-credentials".to_owned(),
        ),
        (
            Method::DELETE,
            "/v1/tenants/acme/service-credentials/x".to_owned(),
        ),
        (
            Method::POST,
            "/v1/tenants/acme/ca/registration-code".to_owned(),
        ),
        (Method::GET, "/v1/tenants/acme/cas".to_owned()),
        (Method::POST, "/v1/tenants/acme/cas".to_owned()),
        (Method::DELETE, "/v1/tenants/acme/cas/00".to_owned()),
        (Method::GET, "/v1/tenants/acme/policies".to_owned()),
        (Method::GET, "/v1/tenants/acme/policies/p".to_owned()),
        (Method::PUT, "/v1/tenants/acme/policies/p".to_owned()),
        (Method::DELETE, "/v1/tenants/acme/policies/p".to_owned()),
    ] {
        // Valid bodies: the tenant check, not the body, must answer.
        let body = match method {
            Method::PUT => Some(json!({"rules": []})),
            Method::POST if uri.ends_with("service-credentials") => Some(json!({"name": "x"})),
            Method::POST if uri.ends_with("/cas") => {
                Some(json!({"ca_pem": "x", "verification_pem": "x", "code": "x"}))
            }
            Method::POST => Some(json!({})),
            _ => None,
        };
        let r = t.call(method.clone(), &uri, Some(&other), body).await;
        assert_eq!(r.status, 404, "{method} {uri}: {}", r.body);
    }
    // Without a token: 401 everywhere but the root.
    t.call(Method::GET, certs, None, None)
        .await
        .problem(401, "unauthorized");
    // Deleting a tenant forgets its CA and tells the session side.
    p.told.take();
    assert_eq!(p.trust.len(), 2);
    t.delete("/v1/tenants/beta", &t.admin).await.expect(204);
    assert_eq!(p.trust.len(), 1);
    p.told.assert(&["tenant deleted beta"]);
}

/// Bring-your-own CA: code, proof of possession, registered and trusted,
/// listed, removed.
async fn bring_your_own_ca(db: &TestDb) {
    let p = pki_app(db, &["acme"]).await;
    let t = &p.app;
    let admin = t.token(Role::TenantAdmin, "acme");
    t.post(
        "/v1/tenants/acme/ca/registration-code",
        &t.token(Role::Operator, "acme"),
        json!({}),
    )
    .await
    .problem(403, "forbidden");
    let code = t
        .post("/v1/tenants/acme/ca/registration-code", &admin, json!({}))
        .await
        .expect(201)
        .body["code"]
        .as_str()
        .unwrap()
        .to_owned();

    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "Acme own CA");
    let ca_pem = ca_params.self_signed(&ca_key).unwrap().pem();
    let issuer = rcgen::Issuer::from_params(&ca_params, &ca_key);
    let proof = |cn: &str| {
        let mut params = rcgen::CertificateParams::new(Vec::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        let key = rcgen::KeyPair::generate().unwrap();
        params.signed_by(&key, &issuer).unwrap().pem()
    };
    let url = "/v1/tenants/acme/cas";
    // Wrong CN: refused, and the code is still good afterwards.
    let r = t
        .post(
            url,
            &admin,
            json!({"ca_pem": ca_pem, "verification_pem": proof("not-the-code"), "code": code}),
        )
        .await
        .problem(422, "validation");
    assert!(
        r.body["errors"][0]["detail"]
            .as_str()
            .unwrap()
            .contains("CN"),
        "{}",
        r.body
    );
    let registered = t
        .post(
            url,
            &admin,
            json!({"ca_pem": ca_pem, "verification_pem": proof(&code), "code": code}),
        )
        .await
        .expect(201)
        .body;
    assert_eq!(registered["kind"], "registered");
    assert_eq!(p.trust.len(), 2, "the issued and the registered CA");
    // Single use.
    t.post(
        url,
        &admin,
        json!({"ca_pem": ca_pem, "verification_pem": proof(&code), "code": code}),
    )
    .await
    .problem(422, "validation");

    let list = t.fetch(url, &t.token(Role::Viewer, "acme")).await;
    let kinds: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["kind"].as_str())
        .collect();
    assert_eq!(kinds.len(), 2);
    assert!(kinds.contains(&"issued") && kinds.contains(&"registered"));
    let issued = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["kind"] == "issued")
        .unwrap()["key_id"]
        .as_str()
        .unwrap()
        .to_owned();
    t.delete(&format!("{url}/{issued}"), &admin)
        .await
        .problem(409, "conflict");
    let key_id = registered["key_id"].as_str().unwrap();
    p.told.take();
    t.delete(&format!("{url}/{key_id}"), &admin)
        .await
        .expect(204);
    assert_eq!(p.trust.len(), 1);
    p.told.assert(&["tenant acme"]);
    t.delete(&format!("{url}/{key_id}"), &admin)
        .await
        .problem(404, "not-found");
}

store::backend_tests!(
    bring_your_own_ca,
    certificates_issue_list_revoke_crl,
    root_and_lazy_tenant_ca,
    device_passwords,
    service_credentials,
    policies_round_trip,
    roles_and_tenant_isolation
);
