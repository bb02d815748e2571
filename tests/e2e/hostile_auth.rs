//! Hostile authentication through the real binary (issue 13, items 2, 9,
//! 10, 11 and 12): floods of wrong passwords, another tenant's CA with the
//! same subject, a deleted and re-created tenant, wrong API key guesses
//! from another address, and what the database keeps of signing keys and
//! webhook ids. SQLite, and Postgres when TEST_DATABASE_URL is set.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{IpAddr, Ipv4Addr};

use fleetmq_tests::{API_WAIT, Api, Server, admin_token, platform_server};
use serde_json::{Value, json};

/// POST `/v1/auth/token` with `secret`, from the loopback address `from`.
async fn exchange(server: &Server, from: Ipv4Addr, secret: &str) -> (u16, Value) {
    let http = reqwest::Client::builder()
        .local_address(IpAddr::V4(from))
        .timeout(API_WAIT)
        .build()
        .unwrap();
    let res = http
        .post(server.url("/v1/auth/token"))
        .json(&json!({ "api_key": secret }))
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

async fn tenant(api: &Api, id: &str) {
    api.post("/v1/tenants", json!({ "id": id, "name": id }))
        .await;
}

/// Item 11: ten wrong guesses at an API key from another address (the key
/// id is the secret's visible prefix) do not lock its owner out; the
/// guessing address is the one that backs off.
async fn api_key_guesses_do_not_lock_out_the_owner(db: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let (server, token) = platform_server(dir.path(), db, &[]).await;
    let api = Api::new(&server, token);
    tenant(&api, "acme").await;
    let key = api
        .post(
            "/v1/tenants/acme/api-keys",
            json!({ "name": "backend", "role": "operator" }),
        )
        .await;
    let secret = key["secret"].as_str().unwrap().to_owned();
    let (prefix, _) = secret.rsplit_once('_').unwrap();
    let wrong = format!("{prefix}_{}", "0".repeat(64));
    let owner = Ipv4Addr::new(127, 0, 0, 1);
    let guesser = Ipv4Addr::new(127, 0, 0, 2);
    for _ in 0..10 {
        let (status, body) = exchange(&server, guesser, &wrong).await;
        assert_eq!(status, 401, "{body}");
    }
    let (status, body) = exchange(&server, guesser, &wrong).await;
    assert_eq!(status, 429, "the guessing address backs off: {body}");
    let (status, body) = exchange(&server, owner, &secret).await;
    assert_eq!(status, 200, "the owner still gets a token: {body}");
    assert!(body["access_token"].as_str().is_some(), "{body}");
    server.stop().await.unwrap();
}

/// One MQTT session of `(user, password)` as client `id`: mosquitto_pub
/// connects, publishes one QoS 1 message on `devices/{id}/hello` and
/// disconnects.
async fn mosquitto_pub_once(server: &Server, id: &str, (user, password): &(String, String)) {
    let port = server.mqtt().port().to_string();
    let topic = format!("devices/{id}/hello");
    let out = tokio::process::Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &port, "-V", "mqttv311", "-q", "1"])
        .args([
            "-i", id, "-u", user, "-P", password, "-t", &topic, "-m", "hi",
        ])
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "mosquitto_pub: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Item 10: a tenant deleted and created again under the same id inherits
/// nothing: the old tenant's tokens (minted by the CLI or exchanged for an
/// API key) are refused, and neither its audit entries nor its lifecycle
/// events are visible.
async fn recreated_tenant_inherits_nothing(db: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let (server, token) = platform_server(dir.path(), db, &[]).await;
    let platform = Api::new(&server, token);
    tenant(&platform, "phoenix").await;
    let cli_token = admin_token(
        dir.path(),
        &[&["--role", "tenant-admin", "--tenant", "phoenix"], db].concat(),
    )
    .await;
    let old = platform.with_token(cli_token);
    let credentials = old.password_device("phoenix", "sensor-1").await;
    mosquitto_pub_once(&server, "sensor-1", &credentials).await;
    old.wait_for(
        "/v1/tenants/phoenix/lifecycle",
        "sensor-1's connect",
        |body| {
            body["items"]
                .as_array()
                .is_some_and(|items| !items.is_empty())
        },
    )
    .await;
    let key = old
        .post(
            "/v1/tenants/phoenix/api-keys",
            json!({ "name": "backend", "role": "tenant-admin" }),
        )
        .await;
    let (status, exchanged) = exchange(
        &server,
        Ipv4Addr::LOCALHOST,
        key["secret"].as_str().unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{exchanged}");
    let old_key = platform.with_token(exchanged["access_token"].as_str().unwrap());
    let audit = old.get("/v1/tenants/phoenix/audit").await;
    assert!(audit["items"].as_array().unwrap().len() >= 3, "{audit}");

    let (status, body) = platform
        .call(reqwest::Method::DELETE, "/v1/tenants/phoenix", None)
        .await;
    assert_eq!(status, 204, "{body}");
    tenant(&platform, "phoenix").await;

    for (what, api) in [("CLI token", &old), ("API key token", &old_key)] {
        let (status, body) = api
            .call(reqwest::Method::GET, "/v1/tenants/phoenix", None)
            .await;
        assert_eq!(status, 401, "the old tenant's {what} is refused: {body}");
        assert!(
            body["detail"].as_str().unwrap_or("").contains("deleted"),
            "{body}"
        );
    }
    let new = platform.with_token(
        admin_token(
            dir.path(),
            &[&["--role", "tenant-admin", "--tenant", "phoenix"], db].concat(),
        )
        .await,
    );
    let audit = new.get("/v1/tenants/phoenix/audit").await;
    let actions: Vec<&str> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        ["tenant.create"],
        "only the new tenant's trail: {audit}"
    );
    let lifecycle = new.get("/v1/tenants/phoenix/lifecycle").await;
    assert_eq!(
        lifecycle["items"],
        json!([]),
        "no old lifecycle events: {lifecycle}"
    );
    // The platform keeps the whole trail, the deletion included.
    let all = platform.get("/v1/audit?limit=100").await;
    let deleted = all["items"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["action"] == "tenant.delete" && e["tenant_id"] == "phoenix");
    assert!(deleted, "{all}");
    server.stop().await.unwrap();
}

/// mosquitto_pub (MQTT 5) from loopback address `from` as `id` with
/// `(user, password)`: `Ok` if it published, else its error output.
async fn mosquitto_pub_from(
    server: &Server,
    from: Ipv4Addr,
    id: &str,
    (user, password): (&str, &str),
) -> Result<(), String> {
    let port = server.mqtt().port().to_string();
    let topic = format!("devices/{id}/hello");
    let out = tokio::process::Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &port, "-V", "mqttv5", "-q", "1"])
        .args([
            "-A",
            &from.to_string(),
            "-i",
            id,
            "-u",
            user,
            "-P",
            password,
        ])
        .args(["-t", &topic, "-m", "hi"])
        .kill_on_drop(true)
        .output()
        .await
        .unwrap();
    match out.status.success() {
        true => Ok(()),
        false => Err(String::from_utf8_lossy(&out.stderr).into_owned()),
    }
}

/// Resident and peak memory of process `pid`, in KiB.
fn memory_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .unwrap()
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// A counter's value in `/metrics` (0 when absent).
async fn metric(server: &Server, series: &str) -> f64 {
    let text = server.get("/metrics").await.unwrap().text().await.unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(series))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Item 2: 200 parallel CONNECTs with wrong passwords (each from its own
/// address, so the per-address budget does not stop them: the bounded,
/// per-tenant fair queue must) leave memory nearly flat, and a device of
/// another tenant connects meanwhile; an address that keeps failing is
/// refused without a check, others are not.
async fn wrong_password_flood_is_bounded_and_fair(db: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let (server, token) =
        platform_server(dir.path(), db, &["--password-check-concurrency", "2"]).await;
    let api = Api::new(&server, token);
    tenant(&api, "flooded").await;
    tenant(&api, "bystander").await;
    let (target, _) = api.password_device("flooded", "target").await;
    let (good_user, good_password) = api.password_device("bystander", "good").await;
    let good = (good_user.as_str(), good_password.as_str());
    let bystander = Ipv4Addr::new(127, 0, 0, 2);
    mosquitto_pub_from(&server, bystander, "good", good)
        .await
        .unwrap();
    let (rss_before, _) = memory_kib(server.pid());

    let mut flood = tokio::task::JoinSet::new();
    for i in 0..200u32 {
        let from = Ipv4Addr::new(127, 0, 1 + (i / 250) as u8, (i % 250 + 1) as u8);
        let (server_mqtt, target) = (server.mqtt(), target.clone());
        let port = server_mqtt.port().to_string();
        flood.spawn(async move {
            let out = tokio::process::Command::new("mosquitto_pub")
                .args(["-h", "127.0.0.1", "-p", &port, "-V", "mqttv5", "-q", "1"])
                .args(["-A", &from.to_string(), "-i", "target", "-u", &target])
                .args(["-P", "wrong-password", "-t", "devices/target/x", "-m", "x"])
                .kill_on_drop(true)
                .output()
                .await
                .unwrap();
            (
                out.status.success(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            )
        });
    }
    // While the flood is queued: the other tenant's device gets its turn.
    mosquitto_pub_from(&server, bystander, "good", good)
        .await
        .expect("a device of another tenant connects during the flood");
    let (mut refused_bad, mut refused_busy) = (0, 0);
    while let Some(done) = flood.join_next().await {
        let (ok, stderr) = done.unwrap();
        assert!(!ok, "a wrong password was accepted");
        let lower = stderr.to_lowercase();
        if lower.contains("busy") {
            refused_busy += 1;
        } else if lower.contains("bad user name or password") {
            refused_bad += 1;
        } else {
            panic!("unexpected refusal: {stderr}");
        }
    }
    let (rss_after, peak) = memory_kib(server.pid());
    let growth_mib = rss_after.saturating_sub(rss_before) / 1024;
    println!(
        "200 wrong CONNECTs: {refused_bad} refused 0x86 after a check, {refused_busy} refused \
         0x89 busy; RSS {} MiB -> {} MiB (+{growth_mib} MiB), peak {} MiB",
        rss_before / 1024,
        rss_after / 1024,
        peak / 1024
    );
    assert_eq!(refused_bad + refused_busy, 200);
    // Two checks at once of 19 MiB each; before the bound: 4 GB.
    assert!(growth_mib < 100, "RSS grew {growth_mib} MiB");

    // One address failing again and again is refused without a check once
    // over its budget (20); the bystander is not.
    let guesser = Ipv4Addr::new(127, 0, 0, 3);
    for _ in 0..25 {
        let refused = mosquitto_pub_from(&server, guesser, "target", (&target, "nope"))
            .await
            .unwrap_err();
        assert!(
            refused.to_lowercase().contains("bad user name or password"),
            "{refused}"
        );
    }
    let over = metric(
        &server,
        "fleetmq_password_checks_total{outcome=\"over_budget\"}",
    )
    .await;
    assert!(over >= 5.0, "over-budget refusals counted: {over}");
    mosquitto_pub_from(&server, bystander, "good", good)
        .await
        .unwrap();
    let cached = metric(&server, "fleetmq_password_checks_total{outcome=\"cached\"}").await;
    assert!(cached >= 1.0, "a repeat success costs no argon2: {cached}");
    server.stop().await.unwrap();
}

/// The database the server in `dir` runs on (`db` as given to it).
fn database_url(dir: &std::path::Path, db: &[&str]) -> String {
    match db {
        [_, url] => (*url).to_owned(),
        _ => format!("sqlite://{}", dir.join("fleetmq-data/fleetmq.db").display()),
    }
}

/// Item 12, signing keys: stored sealed with the key-encryption key; a key
/// an older version stored bare is sealed when the server starts, and
/// still signs and verifies.
async fn signing_keys_are_sealed_at_rest(db: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let (server, token) = platform_server(dir.path(), db, &[]).await;
    server.stop().await.unwrap();
    let url = database_url(dir.path(), db);
    // What a version before sealing stored: a bare PKCS#8 key, the newest.
    let store = store::Store::open(&url).await.unwrap();
    let bare = rcgen::KeyPair::generate().unwrap();
    store
        .create_signing_key(&store::NewSigningKey {
            kid: "zz-bare-from-an-older-version".to_owned(),
            algorithm: "ES256".to_owned(),
            private_key: bare.serialize_der(),
            public_key: bare.public_key_raw().to_vec(),
        })
        .await
        .unwrap();
    store.close().await;

    let (server, new_token) = platform_server(dir.path(), db, &[]).await;
    let store = store::Store::open(&url).await.unwrap();
    let keys = store.list_signing_keys().await.unwrap();
    assert_eq!(keys.len(), 2);
    for key in &keys {
        // Sealed: version byte 1, nonce, ciphertext; a bare key is DER
        // (SEQUENCE, 0x30) and holds the PKCS#8 bytes.
        assert_eq!(key.private_key[0], 1, "{} is sealed", key.kid);
        assert!(
            !key.private_key
                .windows(32)
                .any(|w| bare.serialize_der().windows(32).any(|b| b == w)),
            "{}: no trace of the bare key",
            key.kid
        );
    }
    store.close().await;
    // The newest (formerly bare) key signed the new token; the first
    // start's token still verifies.
    let header = new_token.split('.').next().unwrap();
    let header = String::from_utf8(
        base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, header).unwrap(),
    )
    .unwrap();
    assert!(header.contains("zz-bare-from-an-older-version"), "{header}");
    for token in [token, new_token] {
        let (status, body) = Api::new(&server, token)
            .call(reqwest::Method::GET, "/v1/tenants", None)
            .await;
        assert_eq!(status, 200, "{body}");
    }
    server.stop().await.unwrap();
}

/// Item 12, webhook ids: random-looking per delivery (no counter across
/// tenants that reveals event volume), the same on every attempt at one
/// delivery.
async fn webhook_ids_are_random_per_delivery(db: &[&str]) {
    use axum::http::{HeaderMap, StatusCode};
    let (tx, mut ids) = tokio::sync::mpsc::unbounded_channel::<String>();
    let attempts = std::sync::Arc::new(std::sync::Mutex::new(std::collections::HashMap::<
        String,
        u32,
    >::new()));
    let receiver = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap| {
            let (tx, attempts) = (tx.clone(), attempts.clone());
            async move {
                let id = headers
                    .get("webhook-id")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned();
                let _ = tx.send(id.clone());
                // Each delivery fails once, so its retry shows its id again.
                let mut attempts = attempts.lock().unwrap();
                let n = attempts.entry(id).or_default();
                *n += 1;
                if *n == 1 {
                    StatusCode::SERVICE_UNAVAILABLE
                } else {
                    StatusCode::NO_CONTENT
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook_url = format!("http://{}/hook", listener.local_addr().unwrap());
    let serving = tokio::spawn(async move { axum::serve(listener, receiver).await });

    let dir = tempfile::tempdir().unwrap();
    let extra = [
        "--webhook-allow-private",
        "--webhook-retry-schedule",
        "0s,1s",
    ];
    let (server, token) = platform_server(dir.path(), db, &extra).await;
    let api = Api::new(&server, token);
    tenant(&api, "hooked").await;
    api.post(
        "/v1/tenants/hooked/webhooks",
        json!({ "url": hook_url, "events": ["device.*"] }),
    )
    .await;
    for d in ["d-1", "d-2", "d-3"] {
        api.post("/v1/tenants/hooked/devices", json!({ "id": d }))
            .await;
    }
    // Every attempt's id: each delivery's first attempt fails, its retry
    // must carry the same id.
    let mut seen = std::collections::HashMap::<String, u32>::new();
    while seen.values().filter(|n| **n >= 2).count() < 3 {
        let id = tokio::time::timeout(API_WAIT, ids.recv())
            .await
            .expect("three devices' events, each delivery attempted twice")
            .unwrap();
        *seen.entry(id).or_default() += 1;
    }
    for id in seen.keys() {
        let hex = id.strip_prefix("msg_").unwrap_or_default();
        assert!(
            hex.len() == 32 && hex.chars().all(|c| c.is_ascii_hexdigit()),
            "{id}"
        );
    }
    server.stop().await.unwrap();
    serving.abort();
}

/// A CA of a tenant's own with `subject`, registered for `tenant` over
/// REST with proof of possession; its issuer signs leaves.
async fn register_own_ca(
    api: &Api,
    tenant: &str,
    subject: &str,
) -> rcgen::Issuer<'static, rcgen::KeyPair> {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, subject);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let pem = params.self_signed(&key).unwrap().pem();
    let issuer = rcgen::Issuer::new(params, key);
    let code = api
        .post(
            &format!("/v1/tenants/{tenant}/ca/registration-code"),
            json!({}),
        )
        .await["code"]
        .as_str()
        .unwrap()
        .to_owned();
    let (proof, _) = leaf_without_aki(&issuer, &code);
    let proof = pem_of(&proof);
    let registered = api
        .post(
            &format!("/v1/tenants/{tenant}/cas"),
            json!({ "ca_pem": pem, "verification_pem": proof, "code": code }),
        )
        .await;
    assert_eq!(registered["kind"], "registered", "{registered}");
    issuer
}

/// A client certificate for `cn` signed by `issuer`, with no Authority Key
/// Identifier (as some older CAs make them): its DER and PKCS#8 key.
fn leaf_without_aki(
    issuer: &rcgen::Issuer<'static, rcgen::KeyPair>,
    cn: &str,
) -> (rustls::pki_types::CertificateDer<'static>, Vec<u8>) {
    let mut params = rcgen::CertificateParams::default();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, cn);
    params.is_ca = rcgen::IsCa::ExplicitNoCa;
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    params.use_authority_key_identifier_extension = false;
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, issuer).unwrap();
    (cert.der().clone(), key.serialize_der())
}

fn pem_of(der: &rustls::pki_types::CertificateDer<'_>) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der.as_ref());
    let lines: Vec<&str> = b64
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    format!(
        "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
        lines.join("\n")
    )
}

/// MQTT 5 CONNECT over TLS presenting `(cert, key)`: the CONNACK code.
async fn connect_with_certificate(
    server: &Server,
    client_id: &str,
    (cert, key): (rustls::pki_types::CertificateDer<'static>, Vec<u8>),
) -> String {
    fleetmq_tests::tls_client::connect_v5(server, client_id, cert, key).await
}

/// Item 9: tenant B registering a CA with the same subject as tenant A's
/// does not lock out A's devices whose certificates lack the Authority Key
/// Identifier (found by issuer name, then by the key that signed them);
/// B's own devices work too.
async fn same_subject_ca_of_another_tenant_locks_no_one_out(db: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let (server, token) = platform_server(dir.path(), db, &[]).await;
    let api = Api::new(&server, token);
    for (t, d) in [("alpha", "meter-a"), ("bravo", "meter-b")] {
        tenant(&api, t).await;
        api.post(&format!("/v1/tenants/{t}/devices"), json!({ "id": d }))
            .await;
    }
    let subject = "Factory Devices Root";
    let alpha = register_own_ca(&api, "alpha", subject).await;
    let alpha_leaf = leaf_without_aki(&alpha, "meter-a");
    assert_eq!(
        connect_with_certificate(&server, "meter-a", alpha_leaf.clone()).await,
        "Success"
    );
    let bravo = register_own_ca(&api, "bravo", subject).await;
    assert_eq!(
        connect_with_certificate(&server, "meter-a", alpha_leaf).await,
        "Success",
        "alpha's device after bravo registered a CA of the same subject"
    );
    assert_eq!(
        connect_with_certificate(&server, "meter-b", leaf_without_aki(&bravo, "meter-b")).await,
        "Success"
    );
    // Bravo's CA does not vouch for alpha's device id: bravo has no such
    // device, and the certificate names bravo's CA, not alpha's.
    let forged = leaf_without_aki(&bravo, "meter-a");
    assert_eq!(
        connect_with_certificate(&server, "meter-a", forged).await,
        "BadUserNamePassword"
    );
    server.stop().await.unwrap();
}

fleetmq_tests::binary_backend_tests!(
    same_subject_ca_of_another_tenant_locks_no_one_out,
    signing_keys_are_sealed_at_rest,
    webhook_ids_are_random_per_delivery,
    wrong_password_flood_is_bounded_and_fair,
    api_key_guesses_do_not_lock_out_the_owner,
    recreated_tenant_inherits_nothing,
);
