use std::net::SocketAddr;
use std::time::Duration;

use api::auth::RateLimit;
use api::{AppState, HttpLimits, Role};
use axum::extract::ConnectInfo;
use http::Method;
use serde_json::json;
use store::testing::TestDb;

use crate::{TestApp, request};

async fn api_keys_are_exchanged_for_tokens(db: &TestDb) {
    let t = TestApp::with_tenants(db, &["acme", "other"]).await;
    let ta = t.token(Role::TenantAdmin, "acme");
    let keys = "/v1/tenants/acme/api-keys";
    let created = t
        .post(keys, &ta, json!({"name": "billing", "role": "operator"}))
        .await
        .expect(201)
        .body;
    let secret = created["secret"].as_str().unwrap().to_owned();
    let id = created["id"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("fmq_"), "{secret}");
    assert_eq!(created["role"], "operator");
    assert_eq!(created["tenant_id"], "acme");

    // Listed without the secret.
    let list = t.fetch(keys, &ta).await;
    assert_eq!(list["items"][0]["id"], id.as_str());
    assert!(list["items"][0].get("secret").is_none());
    assert!(!list.to_string().contains(&secret));

    // Exchange: no bearer needed; the token has the key's role and tenant.
    let exchange = async |secret: &str| {
        t.call(
            Method::POST,
            "/v1/auth/token",
            None,
            Some(json!({ "api_key": secret })),
        )
        .await
    };
    let got = exchange(&secret).await.expect(200).body;
    assert_eq!(got["token_type"], "Bearer");
    assert_eq!(got["expires_in"], 900);
    let token = got["access_token"].as_str().unwrap().to_owned();
    t.post("/v1/tenants/acme/devices", &token, json!({"id": "d1"}))
        .await
        .expect(201);
    t.patch("/v1/tenants/acme", &token, json!({"name": "x"}))
        .await
        .problem(403, "forbidden");
    t.get("/v1/tenants/other/devices", &token)
        .await
        .problem(404, "not-found");
    let log = t.fetch("/v1/tenants/acme/audit", &ta).await;
    assert_eq!(log["items"][0]["actor"], format!("operator:api-key:{id}"));
    assert_eq!(log["items"][1]["action"], "api_key.create");

    // Wrong secrets.
    let wrong = format!("{}0", &secret[..secret.len() - 1]);
    let wrong = if wrong == secret {
        format!("{}1", &secret[..secret.len() - 1])
    } else {
        wrong
    };
    for bad in [
        wrong.as_str(),
        "fmq_nope_x",
        "garbage",
        "",
        &"x".repeat(500),
    ] {
        exchange(bad).await.problem(401, "unauthorized");
    }
    t.call(
        Method::POST,
        "/v1/auth/token",
        None,
        Some(json!({"key": "x"})),
    )
    .await
    .problem(422, "validation");

    // Revoked: no more tokens.
    t.delete(&format!("{keys}/{id}"), &ta).await.expect(204);
    exchange(&secret).await.problem(401, "unauthorized");
    let list = t.fetch(keys, &ta).await;
    assert!(list["items"][0]["revoked_at"].is_string());
}

async fn api_key_access(db: &TestDb) {
    let t = TestApp::with_tenants(db, &["acme", "other"]).await;
    let keys = "/v1/tenants/acme/api-keys";
    for role in [Role::Operator, Role::Viewer] {
        let tok = t.token(role, "acme");
        t.post(keys, &tok, json!({"name": "n", "role": "viewer"}))
            .await
            .problem(403, "forbidden");
        t.get(keys, &tok).await.problem(403, "forbidden");
        t.delete(&format!("{keys}/x"), &tok)
            .await
            .problem(403, "forbidden");
    }
    let other_admin = t.token(Role::TenantAdmin, "other");
    t.post(keys, &other_admin, json!({"name": "n", "role": "viewer"}))
        .await
        .problem(404, "not-found");
    t.get(keys, &other_admin).await.problem(404, "not-found");
    let ta = t.token(Role::TenantAdmin, "acme");
    t.post(keys, &ta, json!({"name": "n", "role": "platform-admin"}))
        .await
        .invalid_at("/role");
    t.delete(&format!("{keys}/nope"), &ta)
        .await
        .problem(404, "not-found");
    // Platform admin may manage any tenant's keys; missing tenants are 404.
    t.post(keys, &t.admin, json!({"name": "n", "role": "viewer"}))
        .await
        .expect(201);
    t.get("/v1/tenants/missing/api-keys", &t.admin)
        .await
        .problem(404, "not-found");
    t.post(
        "/v1/tenants/missing/api-keys",
        &t.admin,
        json!({"name": "n", "role": "viewer"}),
    )
    .await
    .problem(404, "not-found");
}

/// `POST /v1/auth/token` is limited per API key and per client address:
/// secrets cannot be guessed at speed, whichever way the guesses spread.
async fn token_exchange_is_rate_limited(db: &TestDb) {
    let t = TestApp::with_tenants(db, &["acme"]).await;
    let ta = t.token(Role::TenantAdmin, "acme");
    let mut secrets = Vec::new();
    for name in ["a", "b"] {
        let created = t
            .post(
                "/v1/tenants/acme/api-keys",
                &ta,
                json!({"name": name, "role": "viewer"}),
            )
            .await
            .expect(201)
            .body;
        secrets.push(created["secret"].as_str().unwrap().to_owned());
    }
    let metrics = api::install_metrics_recorder().unwrap();
    let state = AppState::new(t.store.clone(), metrics).with_keys(t.keys.clone());
    let limits = HttpLimits {
        rate_limit: None,
        token_rate_limit: Some(RateLimit {
            requests: 2,
            per: Duration::from_secs(60),
            burst: 2,
        }),
        ..HttpLimits::default()
    };
    let limited = TestApp {
        app: api::router(state, &limits),
        ..t
    };
    let exchange = async |secret: &str, from: [u8; 4]| {
        let mut req = request(
            Method::POST,
            "/v1/auth/token",
            None,
            Some(json!({ "api_key": secret })),
            &[],
        );
        req.extensions_mut()
            .insert(ConnectInfo(SocketAddr::from((from, 40000))));
        limited.send(req).await
    };

    // Per (key, address): a third attempt within the minute from one
    // address is refused; the key's owner elsewhere is not locked out.
    let wrong = format!(
        "{}_{}",
        secrets[0].rsplit_once('_').unwrap().0,
        "0".repeat(64)
    );
    exchange(&wrong, [10, 0, 0, 1])
        .await
        .problem(401, "unauthorized");
    exchange(&wrong, [10, 0, 0, 1])
        .await
        .problem(401, "unauthorized");
    exchange(&secrets[0], [10, 0, 0, 2]).await.expect(200);
    let r = exchange(&secrets[0], [10, 0, 0, 1])
        .await
        .problem(429, "rate-limited");
    let retry: u64 = r.headers[http::header::RETRY_AFTER]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=31).contains(&retry), "Retry-After {retry}");
    // Another key is not affected.
    exchange(&secrets[1], [10, 0, 0, 4]).await.expect(200);

    // Per address: guesses at made-up keys use up the address's attempts.
    let guess = |n: u32| format!("fmq_{n:016x}_{}", "0".repeat(64));
    exchange(&guess(1), [10, 9, 9, 9])
        .await
        .problem(401, "unauthorized");
    exchange(&guess(2), [10, 9, 9, 9])
        .await
        .problem(401, "unauthorized");
    exchange(&guess(3), [10, 9, 9, 9])
        .await
        .problem(429, "rate-limited");
    // Even the right secret, from that address, waits.
    exchange(&secrets[1], [10, 9, 9, 9])
        .await
        .problem(429, "rate-limited");
}

store::backend_tests!(
    api_keys_are_exchanged_for_tokens,
    api_key_access,
    token_exchange_is_rate_limited
);
