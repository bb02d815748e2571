//! Bring-your-own CA through the real binary over real TLS (issue 5): a CA
//! the test owns (made with rcgen) is registered over REST with proof of
//! possession; certificates it signs are then refused at CONNECT with the
//! right CONNACK (v5 0x86, 3.1.1 0x04) and a log line saying why when
//! expired, not yet valid, naming another tenant in the SPIFFE SAN, or when
//! the CA certificate itself is presented; a valid one is accepted; an
//! unknown device is refused while just-in-time registration is off and
//! created on first connect (audited) once it is on. SQLite, and Postgres
//! when TEST_DATABASE_URL is set.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use fleetmq_tests::tls_client::{connect_v5, transport};
use fleetmq_tests::{Api, Server, TestDb, admin_token, fleetmq};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType, date_time_ymd,
};
use rustls::pki_types::CertificateDer;
use serde_json::json;

const WAIT: Duration = Duration::from_secs(20);

/// The tenant's own CA: certificate, and the issuer that signs with its key.
struct OwnCa {
    pem: String,
    der: CertificateDer<'static>,
    key_der: Vec<u8>,
    issuer: Issuer<'static, KeyPair>,
}

fn own_ca() -> OwnCa {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::default();
    params
        .distinguished_name
        .push(DnType::CommonName, "Acme Factory CA");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let cert = params.self_signed(&key).unwrap();
    OwnCa {
        pem: cert.pem(),
        der: cert.der().clone(),
        key_der: key.serialize_der(),
        issuer: Issuer::new(params, key),
    }
}

/// A client leaf for `cn`, with `san` as its SPIFFE URI if given.
fn leaf(cn: &str, san: Option<&str>) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, cn);
    if let Some(uri) = san {
        params.subject_alt_names = vec![SanType::URI(uri.try_into().unwrap())];
    }
    params.is_ca = IsCa::ExplicitNoCa;
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params.use_authority_key_identifier_extension = true;
    params
}

/// Signed by `ca`: the leaf's DER and its PKCS#8 key.
fn sign(ca: &OwnCa, params: &CertificateParams) -> (CertificateDer<'static>, Vec<u8>) {
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &ca.issuer).unwrap();
    (cert.der().clone(), key.serialize_der())
}

fn spiffe(tenant: &str, device: &str) -> String {
    format!("spiffe://fleetmq.local/tenant/{tenant}/device/{device}")
}

/// MQTT 3.1.1 CONNECT over TLS: the CONNACK code as rumqttc names it.
async fn connect_v311(
    server: &Server,
    client_id: &str,
    cert: CertificateDer<'static>,
    key: Vec<u8>,
) -> String {
    use rumqttc::{ConnectionError, Event, MqttOptions, Packet};
    let mut opts = MqttOptions::new(client_id, "localhost", server.mqtts().port());
    opts.set_transport(transport(server, cert, key));
    let (_client, mut el) = rumqttc::AsyncClient::new(opts, 10);
    let outcome = tokio::time::timeout(WAIT, async {
        loop {
            match el.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(ack))) => return format!("{:?}", ack.code),
                Ok(_) => {}
                Err(ConnectionError::ConnectionRefused(code)) => return format!("{code:?}"),
                Err(e) => return format!("transport: {e}"),
            }
        }
    })
    .await;
    outcome.expect("no CONNACK in time")
}

/// Waits for a server log line containing every one of `needles`.
fn logged(server: &mut Server, seen: &mut Vec<String>, needles: &[&str]) -> bool {
    seen.extend(server.drain_stderr());
    seen.iter()
        .any(|line| needles.iter().all(|n| line.contains(n)))
}

async fn expect_log(server: &mut Server, seen: &mut Vec<String>, needles: &[&str]) {
    let deadline = Instant::now() + WAIT;
    while !logged(server, seen, needles) {
        assert!(
            Instant::now() < deadline,
            "no log line with {needles:?}:\n{}",
            seen.join("\n")
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn byo_ca_refusals_and_jit_on_sqlite() {
    byo_ca_refusals_and_jit(&[]).await;
}

#[tokio::test]
async fn byo_ca_refusals_and_jit_on_postgres() {
    // Skipped (TestDb prints why) when TEST_DATABASE_URL is not set.
    let Some(db) = TestDb::postgres_unmigrated().await else {
        return;
    };
    byo_ca_refusals_and_jit(&["--database-url", db.url()]).await;
    db.cleanup().await;
}

async fn byo_ca_refusals_and_jit(db_args: &[&str]) {
    let cwd = tempfile::tempdir().unwrap();
    let mut cmd = fleetmq(cwd.path());
    cmd.args(["serve", "--http-listen", "127.0.0.1:0"])
        .args(db_args)
        .env("RUST_LOG", "info");
    let mut server = Server::start(cmd).await.unwrap();
    let token = admin_token(
        cwd.path(),
        &[&["--role", "platform-admin"], db_args].concat(),
    )
    .await;
    let api = Api::new(&server, token);
    use reqwest::Method;
    for t in ["acme", "beta"] {
        api.ok(
            Method::POST,
            "/v1/tenants",
            Some(json!({"id": t, "name": t})),
        )
        .await;
    }
    api.ok(
        Method::POST,
        "/v1/tenants/acme/devices",
        Some(json!({"id": "byo-1"})),
    )
    .await;

    // Register the CA: proof of possession over a server-issued code.
    let ca = own_ca();
    let code = api
        .ok(Method::POST, "/v1/tenants/acme/ca/registration-code", None)
        .await["code"]
        .as_str()
        .unwrap()
        .to_owned();
    let proof = leaf(&code, None)
        .signed_by(&KeyPair::generate().unwrap(), &ca.issuer)
        .unwrap()
        .pem();
    let registered = api
        .ok(
            Method::POST,
            "/v1/tenants/acme/cas",
            Some(json!({"ca_pem": ca.pem, "verification_pem": proof, "code": code})),
        )
        .await;
    assert_eq!(registered["kind"], "registered", "{registered}");
    assert_eq!(registered["jit_registration"], false, "{registered}");
    let key_id = registered["key_id"].as_str().unwrap().to_owned();

    let mut seen = Vec::new();
    // Expired, not yet valid, another tenant's SAN, the CA itself: all
    // chain to the registered CA, all refused at CONNECT with 0x86 and a
    // log line saying why.
    let mut expired = leaf("byo-1", Some(&spiffe("acme", "byo-1")));
    expired.not_before = date_time_ymd(2020, 1, 1);
    expired.not_after = date_time_ymd(2021, 1, 1);
    let mut early = leaf("byo-1", Some(&spiffe("acme", "byo-1")));
    early.not_before = date_time_ymd(2090, 1, 1);
    early.not_after = date_time_ymd(2091, 1, 1);
    let wrong_tenant = leaf("byo-1", Some(&spiffe("beta", "byo-1")));
    let cases = [
        ("expired", sign(&ca, &expired), "expired at"),
        ("not yet valid", sign(&ca, &early), "not valid before"),
        (
            "wrong-tenant SAN",
            sign(&ca, &wrong_tenant),
            "names tenant beta but was issued by the CA of tenant acme",
        ),
        (
            "CA as client",
            (ca.der.clone(), ca.key_der.clone()),
            "a CA certificate cannot be used as a client certificate",
        ),
    ];
    for (case, (cert, key), why) in cases {
        let v5 = connect_v5(&server, "byo-1", cert.clone(), key.clone()).await;
        assert_eq!(v5, "BadUserNamePassword", "{case} (v5: 0x86)");
        let v311 = connect_v311(&server, "byo-1", cert, key).await;
        assert_eq!(v311, "BadUserNamePassword", "{case} (3.1.1: 0x04)");
        expect_log(&mut server, &mut seen, &["connection refused", why]).await;
    }

    // A valid certificate from the CA, for a registered device.
    let (cert, key) = sign(&ca, &leaf("byo-1", Some(&spiffe("acme", "byo-1"))));
    assert_eq!(connect_v5(&server, "byo-1", cert, key).await, "Success");

    // An unknown device: refused while just-in-time registration is off.
    let (cert, key) = sign(&ca, &leaf("jit-1", Some(&spiffe("acme", "jit-1"))));
    assert_eq!(
        connect_v5(&server, "jit-1", cert.clone(), key.clone()).await,
        "BadUserNamePassword"
    );
    expect_log(
        &mut server,
        &mut seen,
        &["connection refused", "just-in-time registration is off"],
    )
    .await;
    let (status, _) = api
        .call(Method::GET, "/v1/tenants/acme/devices/jit-1", None)
        .await;
    assert_eq!(status, 404);

    // On: created at first connect, audited, then accepted.
    let patched = api
        .ok(
            Method::PATCH,
            &format!("/v1/tenants/acme/cas/{key_id}"),
            Some(json!({"jit_registration": true})),
        )
        .await;
    assert_eq!(patched["jit_registration"], true, "{patched}");
    assert_eq!(connect_v311(&server, "jit-1", cert, key).await, "Success");
    let device = api
        .ok(Method::GET, "/v1/tenants/acme/devices/jit-1", None)
        .await;
    assert_eq!(device["enabled"], true, "{device}");
    let audit = api.ok(Method::GET, "/v1/tenants/acme/audit", None).await;
    let created = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["action"] == "device.create" && e["target"] == "tenants/acme/devices/jit-1")
        .unwrap_or_else(|| panic!("audited: {audit}"));
    assert_eq!(created["actor"], "mqtt:jit-registration", "{created}");
    expect_log(&mut server, &mut seen, &["device registered just in time"]).await;

    // The platform-issued CA has no such switch.
    let cas = api.ok(Method::GET, "/v1/tenants/acme/cas", None).await;
    let issued = cas["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["kind"] == "issued")
        .unwrap();
    let (status, problem) = api
        .call(
            Method::PATCH,
            &format!(
                "/v1/tenants/acme/cas/{}",
                issued["key_id"].as_str().unwrap()
            ),
            Some(json!({"jit_registration": true})),
        )
        .await;
    assert_eq!(status, 409, "{problem}");
    server.stop().await.unwrap();
}
