//! The `/v1` API over HTTP, through `api::router` (and once on a real
//! port): every test runs as `name::sqlite` and `name::postgres` (the latter
//! when TEST_DATABASE_URL or DATABASE_URL is set), each on a fresh database.

// A test crate: panics are how helpers fail a test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod api_keys;
mod audit;
mod auth;
mod certificate_events;
mod device_import;
mod devices;
mod events;
mod fleet;
mod idempotency;
mod pki_routes;
mod platform_access;
mod presence_settings;
mod publish_limits;
mod sessions;
mod state;
mod tenants;
mod webhooks;

use std::time::Duration;

use api::{AppState, HttpLimits, Keys, Role};
use axum::Router;
use axum::body::Body;
use http::{HeaderMap, Method, Request};
use http_body_util::BodyExt as _;
use serde_json::{Value, json};
use store::testing::TestDb;
use store::{Store, TenantId};
use tower::ServiceExt as _;

pub const PROBLEMS: &str = "https://fleetmq.dev/problems/";

/// The wired app on a test database, and a platform-admin token.
pub struct TestApp {
    pub app: Router,
    pub keys: Keys,
    pub store: Store,
    pub admin: String,
}

/// One response: status, headers, and the body as JSON (`Null` if empty).
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Value,
}

impl Resp {
    /// Asserts the status (showing the body if it differs).
    #[track_caller]
    pub fn expect(self, status: u16) -> Resp {
        assert_eq!(self.status, status, "{}", self.body);
        self
    }

    /// Asserts a problem with `status` and type slug `slug`.
    #[track_caller]
    pub fn problem(self, status: u16, slug: &str) -> Resp {
        assert_eq!(self.status, status, "{}", self.body);
        assert_eq!(
            self.headers[http::header::CONTENT_TYPE],
            "application/problem+json"
        );
        assert_eq!(
            self.body["type"],
            format!("{PROBLEMS}{slug}"),
            "{}",
            self.body
        );
        assert_eq!(self.body["status"], status);
        self
    }

    /// Asserts a 201 carrying a secret shown this once (never cached);
    /// returns the body.
    #[track_caller]
    pub fn shown_once(self) -> Value {
        let r = self.expect(201);
        assert_eq!(r.headers[http::header::CACHE_CONTROL], "no-store");
        r.body
    }

    /// Asserts a 422 whose first field error is at `pointer`.
    #[track_caller]
    pub fn invalid_at(self, pointer: &str) -> Resp {
        let r = self.problem(422, "validation");
        assert_eq!(r.pointer(), pointer, "{}", r.body);
        r
    }

    /// The JSON pointer of the first field error.
    pub fn pointer(&self) -> &str {
        self.body["errors"][0]["pointer"].as_str().unwrap_or("")
    }
}

impl TestApp {
    pub async fn new(db: &TestDb) -> TestApp {
        TestApp::with(db, |state| state).await
    }

    /// The app with `tenants` created.
    pub async fn with_tenants(db: &TestDb, tenants: &[&str]) -> TestApp {
        let t = TestApp::new(db).await;
        for id in tenants {
            t.tenant(id).await;
        }
        t
    }

    /// The app with `configure` applied to its state (hooks the binary wires).
    pub async fn with(db: &TestDb, configure: impl FnOnce(AppState) -> AppState) -> TestApp {
        let store = db.store().clone();
        let keys = Keys::load_or_create(&store).await.unwrap();
        let metrics = api::install_metrics_recorder().unwrap();
        let state = configure(AppState::new(store.clone(), metrics).with_keys(keys.clone()));
        // Tests make hundreds of requests with one token: no rate limits
        // here (auth::rate_limited and api_keys::token_exchange_is_rate_limited
        // test them).
        let limits = HttpLimits {
            rate_limit: None,
            token_rate_limit: None,
            ..HttpLimits::default()
        };
        let app = api::router(state, &limits);
        let admin = keys
            .issue(Role::PlatformAdmin, None, Duration::from_secs(600))
            .unwrap();
        TestApp {
            app,
            keys,
            store,
            admin,
        }
    }

    /// A token for `role` in `tenant` (none for platform-admin).
    pub fn token(&self, role: Role, tenant: &str) -> String {
        let tenant = (role != Role::PlatformAdmin).then(|| TenantId::parse(tenant).unwrap());
        self.keys
            .issue_for("tester", role, tenant.as_ref(), Duration::from_secs(600))
            .unwrap()
    }

    /// `req`'s status, headers and raw body (for PEM and DER answers).
    pub async fn send_raw(&self, req: Request<Body>) -> (u16, HeaderMap, Vec<u8>) {
        let response = self.app.clone().oneshot(req).await.unwrap();
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        (status, headers, bytes.to_vec())
    }

    pub async fn send(&self, req: Request<Body>) -> Resp {
        let response = self.app.clone().oneshot(req).await.unwrap();
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&bytes)))
        };
        Resp {
            status,
            headers,
            body,
        }
    }

    /// `method uri` with bearer `token` and a JSON `body`.
    pub async fn call(
        &self,
        method: Method,
        uri: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Resp {
        self.send(request(method, uri, token, body, &[])).await
    }

    pub async fn get(&self, uri: &str, token: &str) -> Resp {
        self.call(Method::GET, uri, Some(token), None).await
    }

    pub async fn post(&self, uri: &str, token: &str, body: Value) -> Resp {
        self.call(Method::POST, uri, Some(token), Some(body)).await
    }

    pub async fn patch(&self, uri: &str, token: &str, body: Value) -> Resp {
        self.call(Method::PATCH, uri, Some(token), Some(body)).await
    }

    pub async fn put(&self, uri: &str, token: &str, body: Value) -> Resp {
        self.call(Method::PUT, uri, Some(token), Some(body)).await
    }

    pub async fn delete(&self, uri: &str, token: &str) -> Resp {
        self.call(Method::DELETE, uri, Some(token), None).await
    }

    /// The body of `GET uri` as `token`, which must answer 200.
    pub async fn fetch(&self, uri: &str, token: &str) -> Value {
        self.get(uri, token).await.expect(200).body
    }

    /// Create tenant `id` as platform-admin.
    pub async fn tenant(&self, id: &str) {
        self.post("/v1/tenants", &self.admin, json!({"id": id, "name": id}))
            .await
            .expect(201);
    }

    /// Assert that the audit log at `log` (`/v1/audit` or a tenant's),
    /// read as platform-admin, has an entry of each of `actions`.
    pub async fn assert_audited(&self, log: &str, actions: &[&str]) {
        let log = self
            .get(&format!("{log}?limit=100"), &self.admin)
            .await
            .expect(200)
            .body;
        let found: Vec<&str> = log["items"]
            .as_array()
            .expect("a page of entries")
            .iter()
            .filter_map(|e| e["action"].as_str())
            .collect();
        for action in actions {
            assert!(found.contains(action), "{action} not audited: {found:?}");
        }
    }

    /// Disable device `d` of `t` as platform-admin.
    pub async fn disable(&self, t: &str, d: &str) {
        let uri = format!("/v1/tenants/{t}/devices/{d}");
        let off = json!({"enabled": false});
        self.patch(&uri, &self.admin, off).await.expect(200);
    }

    /// Create device `d` in `t` as platform-admin.
    pub async fn device(&self, t: &str, d: &str) -> Value {
        self.post(
            &format!("/v1/tenants/{t}/devices"),
            &self.admin,
            json!({ "id": d }),
        )
        .await
        .expect(201)
        .body
    }
}

/// Asserts that `hash` is the argon2id hash of `password`.
#[track_caller]
pub fn assert_hash_of(hash: &str, password: &Value) {
    let password = password.as_str().expect("a password");
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    assert!(!hash.contains(password));
    assert!(access::verify_password(password.as_bytes(), hash));
}

pub fn request(
    method: Method,
    uri: &str,
    token: Option<&str>,
    body: Option<Value>,
    headers: &[(&str, &str)],
) -> Request<Body> {
    let mut req = Request::builder().method(method).uri(uri);
    if let Some(token) = token {
        req = req.header(http::header::AUTHORIZATION, format!("Bearer {token}"));
    }
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    match body {
        Some(body) => req
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Body::from(body.to_string()))
            .unwrap(),
        None => req.body(Body::empty()).unwrap(),
    }
}
