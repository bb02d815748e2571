//! The platform authenticator and authorizer behind a real TLS listener:
//! an in-process broker with `pki::DeviceCertVerifier`, devices in the
//! store, and clients we did not write (rumqttc, mosquitto_pub/sub).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use access::{AccessCache, PlatformAuthenticator, PolicyAuthorizer, Revocations};
use broker::testing::{Served, WAIT, next_matching, v5_client};
use broker::{AuthError, AuthRequest, Authenticator, Broker, CancellationToken};
use bytes::Bytes;
use chrono::Utc;
use pki::{DeviceCertParams, DeviceKey, IssuedDeviceCert, RootCa, TenantCa, TrustRegistry};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{Packet, PubAckReason, SubscribeReasonCode};
use rumqttc::{TlsConfiguration, Transport};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use store::testing::TestDb;
use store::{
    CredentialScope, NewDevice, NewDeviceCertificate, NewServiceCredential, NewTenant, Store,
};
use tokio::sync::mpsc;

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

struct Platform {
    root: RootCa,
    cas: Vec<TenantCa>,
    store: Store,
    trust: TrustRegistry,
    broker: Broker,
    cache: AccessCache,
    revocations: Revocations,
    port: u16,
    shutdown: CancellationToken,
    dir: tempfile::TempDir,
}

impl Platform {
    async fn start(store: &Store, tenants: &[&str]) -> Platform {
        if std::env::var_os("TEST_LOG").is_some() {
            let _ = tracing_subscriber::fmt()
                .with_env_filter("access=debug,broker=info")
                .with_test_writer()
                .try_init();
        }
        let now = Utc::now();
        let root = RootCa::generate(now, chrono::Duration::days(365)).unwrap();
        let trust = TrustRegistry::new(root.cert_der().clone(), pki::DEFAULT_TRUST_DOMAIN).unwrap();
        let mut cas = Vec::new();
        for t in tenants {
            store
                .create_tenant(&NewTenant {
                    id: (*t).into(),
                    name: (*t).into(),
                })
                .await
                .unwrap();
            let ca = root
                .issue_tenant_ca(t, now, chrono::Duration::days(365))
                .unwrap();
            trust.add_tenant_ca(&ca).unwrap();
            cas.push(ca);
        }
        let cache = AccessCache::new(store.clone());
        let broker = Broker::builder(Arc::new(PlatformAuthenticator::new(
            trust.clone(),
            cache.clone(),
        )))
        .authorizer(Arc::new(PolicyAuthorizer::new(cache.clone())))
        .build();
        let revocations = Revocations::new(cache.clone(), broker.clone());

        let server = root
            .issue_server_cert(&["localhost".to_owned()], now, chrono::Duration::days(1))
            .unwrap();
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_client_cert_verifier(Arc::new(pki::DeviceCertVerifier::new(trust.clone())))
            .with_single_cert(server.chain_der.clone(), server.private_key_der())
            .unwrap();
        // A resumed session skips the verifier: resumption off.
        config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
        config.send_tls13_tickets = 0;
        let served = Served::tls(broker.clone(), Arc::new(config)).await;
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("root.pem"), root.cert_pem()).unwrap();
        Platform {
            root,
            cas,
            store: store.clone(),
            trust,
            broker,
            cache,
            revocations,
            port: served.port(),
            shutdown: served.shutdown,
            dir,
        }
    }

    fn ca(&self, tenant: &str) -> &TenantCa {
        self.cas.iter().find(|c| c.tenant() == tenant).unwrap()
    }

    async fn device(&self, tenant: &str, device: &str) {
        self.store
            .create_device(tenant, &NewDevice::new(device))
            .await
            .unwrap();
    }

    /// Issue at `now` (recorded in the store) for a device that exists.
    async fn cert(
        &self,
        tenant: &str,
        device: &str,
        now: chrono::DateTime<Utc>,
    ) -> IssuedDeviceCert {
        let issued = issue(self.ca(tenant), device, now);
        self.store
            .create_device_certificate(
                &NewDeviceCertificate {
                    tenant_id: tenant.into(),
                    device_id: device.into(),
                    serial: issued.serial.clone(),
                    fingerprint: issued.fingerprint_sha256.clone(),
                    issuer_key_id: hex_key(self.ca(tenant)),
                    not_before: issued.not_before,
                    not_after: issued.not_after,
                },
                None,
            )
            .await
            .unwrap();
        issued
    }

    fn tls(&self, client: Option<(&str, &str)>) -> Transport {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.root.cert_der().clone()).unwrap();
        let builder = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots);
        let config = match client {
            Some((cert_pem, key_pem)) => builder
                .with_client_auth_cert(
                    vec![CertificateDer::from_pem_slice(cert_pem.as_bytes()).unwrap()],
                    PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).unwrap(),
                )
                .unwrap(),
            None => builder.with_no_client_auth(),
        };
        Transport::tls_with_config(TlsConfiguration::Rustls(Arc::new(config)))
    }

    fn with_cert(&self, client_id: &str, cert: &IssuedDeviceCert) -> Client {
        let key = cert.private_key_pem.as_ref().unwrap().expose().to_owned();
        let mut o = rumqttc::v5::MqttOptions::new(client_id, "localhost", self.port);
        o.set_transport(self.tls(Some((&cert.certificate_pem, &key))));
        Client::start(o)
    }

    fn with_password(&self, client_id: &str, user: &str, password: &str) -> Client {
        let mut o = rumqttc::v5::MqttOptions::new(client_id, "localhost", self.port);
        o.set_transport(self.tls(None));
        o.set_credentials(user, password);
        Client::start(o)
    }

    /// PEM files for the mosquitto clients; returns (cert, key) paths.
    fn files(&self, name: &str, cert: &IssuedDeviceCert) -> (String, String) {
        let write = |file: String, text: &str| {
            let path = self.dir.path().join(file);
            std::fs::write(&path, text).unwrap();
            path.display().to_string()
        };
        (
            write(format!("{name}.pem"), &cert.certificate_pem),
            write(
                format!("{name}.key"),
                cert.private_key_pem.as_ref().unwrap().expose(),
            ),
        )
    }

    fn cafile(&self) -> String {
        self.dir.path().join("root.pem").display().to_string()
    }
}

/// acme's service credential `backend` (user name `acme-backend`).
fn backend(
    secret: &str,
    publish: Vec<String>,
    subscribe: Vec<String>,
) -> anyhow::Result<NewServiceCredential> {
    Ok(NewServiceCredential {
        id: "svc-1".into(),
        scope: CredentialScope::Tenant("acme".into()),
        name: "backend".into(),
        username: "acme-backend".into(),
        password_hash: access::hash_password(secret)?,
        publish,
        subscribe,
    })
}

/// What the broker asks the authenticator when client d1 connects with
/// the certificate `der` and no user name.
fn cert_login(der: &[u8], protocol: mqtt::ProtocolVersion) -> AuthRequest {
    AuthRequest {
        username: None,
        password: None,
        client_id: "d1".into(),
        peer: "127.0.0.1:1".parse().unwrap(),
        peer_certificates: Some(vec![Bytes::copy_from_slice(der)]),
        protocol,
    }
}

fn hex_key(ca: &TenantCa) -> String {
    ca.subject_key_id()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn issue(ca: &TenantCa, device: &str, now: chrono::DateTime<Utc>) -> IssuedDeviceCert {
    ca.issue_device_cert(
        &DeviceCertParams {
            trust_domain: pki::DEFAULT_TRUST_DOMAIN,
            device,
            validity: chrono::Duration::days(1),
            max_validity: chrono::Duration::days(30),
            now,
        },
        DeviceKey::Generate,
    )
    .unwrap()
}

/// A rumqttc v5 client whose incoming packets (and final error) arrive on
/// a channel.
struct Client {
    client: rumqttc::v5::AsyncClient,
    rx: mpsc::UnboundedReceiver<Result<Packet, String>>,
}

impl Client {
    fn start(mut o: rumqttc::v5::MqttOptions) -> Client {
        o.set_keep_alive(Duration::from_secs(30));
        let (client, rx, _) = v5_client(o);
        Client { client, rx }
    }

    async fn next<T>(&mut self, pick: impl FnMut(Result<Packet, String>) -> Option<T>) -> T {
        next_matching(&mut self.rx, pick).await
    }

    async fn connected(&mut self) {
        self.next(|p| match p {
            Ok(Packet::ConnAck(_)) => Some(()),
            Err(e) => panic!("connect failed: {e}"),
            _ => None,
        })
        .await;
    }

    /// Asserts the connection attempt is refused with an error naming `why`.
    async fn refused_with(&mut self, why: &str) {
        let refused = self.refused().await;
        assert!(refused.contains(why), "{refused}");
    }

    /// The error that ended the connection attempt.
    async fn refused(&mut self) -> String {
        self.next(|p| match p {
            Ok(Packet::ConnAck(c)) => panic!("connected: {c:?}"),
            Err(e) => Some(e),
            _ => None,
        })
        .await
    }

    async fn subscribe(&mut self, filter: &str) -> SubscribeReasonCode {
        self.client
            .subscribe(filter, QoS::AtLeastOnce)
            .await
            .unwrap();
        self.next(|p| match p {
            Ok(Packet::SubAck(s)) => Some(s.return_codes[0]),
            Err(e) => panic!("{e}"),
            _ => None,
        })
        .await
    }

    async fn publish(&mut self, topic: &str, payload: &'static str) -> PubAckReason {
        self.client
            .publish(topic, QoS::AtLeastOnce, false, payload)
            .await
            .unwrap();
        self.next(|p| match p {
            Ok(Packet::PubAck(a)) => Some(a.reason),
            Err(e) => panic!("{e}"),
            _ => None,
        })
        .await
    }

    async fn message(&mut self) -> (String, Bytes) {
        self.next(|p| match p {
            Ok(Packet::Publish(m)) => {
                Some((String::from_utf8_lossy(&m.topic).into_owned(), m.payload))
            }
            Err(e) => panic!("{e}"),
            _ => None,
        })
        .await
    }

    /// How the connection ended: the server's DISCONNECT reason or the error.
    async fn ended(&mut self) -> String {
        self.next(|p| match p {
            Ok(Packet::Disconnect(d)) => Some(format!("{:?}", d.reason_code)),
            Err(e) => Some(e),
            _ => None,
        })
        .await
    }

    /// Nothing but `allowed` packets arrive for `quiet` (after a positive control).
    async fn quiet(&mut self, quiet: Duration) {
        let _ = tokio::time::timeout(quiet, async {
            while let Some(p) = self.rx.recv().await {
                assert!(!matches!(p, Ok(Packet::Publish(_))), "unexpected {p:?}");
            }
        })
        .await;
    }
}

async fn certificate_devices(db: &TestDb) -> anyhow::Result<()> {
    let p = Platform::start(db.store(), &["acme", "globex"]).await;
    p.device("acme", "d1").await;
    p.device("acme", "d2").await;
    p.device("globex", "g1").await;
    let d1 = p.cert("acme", "d1", Utc::now()).await;
    let g1 = p.cert("globex", "g1", Utc::now()).await;

    // A service credential of acme sees all of acme, nothing of globex.
    let secret = access::generate_password()?;
    p.store
        .create_service_credential(&backend(&secret, vec![], vec![])?, None)
        .await?;
    let mut service = p.with_password("backend-1", "acme-backend", &secret);
    service.connected().await;
    assert!(matches!(
        service.subscribe("#").await,
        SubscribeReasonCode::Success(_)
    ));

    let mut dev = p.with_cert("d1", &d1);
    dev.connected().await;
    assert!(matches!(
        dev.subscribe("commands/d1/#").await,
        SubscribeReasonCode::Success(_)
    ));
    assert_eq!(
        dev.subscribe("commands/d2/#").await,
        SubscribeReasonCode::NotAuthorized
    );
    assert_eq!(dev.subscribe("#").await, SubscribeReasonCode::NotAuthorized);
    assert_eq!(
        dev.publish("devices/d1/state", "on").await,
        PubAckReason::Success
    );
    assert_eq!(
        service.message().await,
        ("devices/d1/state".into(), Bytes::from("on"))
    );
    assert_eq!(
        dev.publish("devices/d2/state", "spoof").await,
        PubAckReason::NotAuthorized
    );

    // globex's device publishes; acme's `#` stays quiet.
    let mut other = p.with_cert("g1", &g1);
    other.connected().await;
    // Accepted, and (0x10) no one in globex listens.
    assert_eq!(
        other.publish("devices/g1/state", "secret").await,
        PubAckReason::NoMatchingSubscribers
    );
    service.quiet(Duration::from_millis(300)).await;
    // The service may command d1 (its default: everything in the tenant).
    assert_eq!(
        service.publish("commands/d1/reboot", "now").await,
        PubAckReason::Success
    );
    assert_eq!(
        dev.message().await,
        ("commands/d1/reboot".into(), Bytes::from("now"))
    );

    // The client id must be the device id.
    p.with_cert("not-d1", &d1)
        .refused_with("ClientIdentifierNotValid")
        .await;

    // Revoke while connected: DISCONNECT 0x98 at once, refused afterwards.
    p.store
        .revoke_device_certificate("acme", "d1", &d1.serial, "key_compromise", Utc::now(), None)
        .await?;
    let revoked_at = Instant::now();
    assert!(p.revocations.certificate_revoked("acme", "d1", &d1.serial));
    // rumqttc reports the server's DISCONNECT as an error; over TLS it
    // sometimes sees the close before the packet (then: aborted).
    let ended = dev.ended().await;
    assert!(
        ended.contains("AdministrativeAction") || ended.contains("ConnectionAborted"),
        "{ended}"
    );
    let took = revoked_at.elapsed();
    eprintln!("revoked certificate's session ended after {took:?} ({ended})");
    assert!(took < WAIT);
    p.with_cert("d1", &d1).refused_with("NotAuthorized").await;

    // A newer certificate for d1 still works, until a floor refuses it.
    let d1b = p.cert("acme", "d1", Utc::now()).await;
    let mut again = p.with_cert("d1", &d1b);
    again.connected().await;
    p.store
        .set_device_cert_floor(
            "acme",
            "d1",
            Utc::now() + chrono::Duration::seconds(1),
            None,
        )
        .await?;
    assert!(p.revocations.device_changed("acme", "d1"));
    p.with_cert("d1", &d1b).refused_with("NotAuthorized").await;

    // A tenant-wide floor ends globex's certificate sessions and refuses
    // their certificates.
    p.store
        .set_tenant_cert_floor("globex", Utc::now() + chrono::Duration::seconds(1), None)
        .await?;
    assert_eq!(p.revocations.tenant_changed("globex"), 1);
    let ended = other.ended().await;
    assert!(!ended.is_empty());
    p.with_cert("g1", &g1).refused_with("NotAuthorized").await;

    // A disabled device is refused.
    p.store
        .update_device(
            "acme",
            "d2",
            &store::DevicePatch {
                enabled: Some(false),
                ..Default::default()
            },
        )
        .await?;
    p.revocations.device_changed("acme", "d2");
    let d2 = p.cert("acme", "d2", Utc::now()).await;
    p.with_cert("d2", &d2).refused_with("NotAuthorized").await;

    p.shutdown.cancel();
    Ok(())
}
store::backend_tests!(certificate_devices);

async fn bad_certificates(db: &TestDb) -> anyhow::Result<()> {
    let p = Platform::start(db.store(), &["acme", "globex"]).await;
    p.device("acme", "d1").await;
    let auth = PlatformAuthenticator::new(p.trust.clone(), AccessCache::new(p.store.clone()));
    let request = |der: &CertificateDer<'_>| cert_login(der, mqtt::ProtocolVersion::V5);
    let year = chrono::Duration::days(365);
    let expired = p.cert("acme", "d1", Utc::now() - year).await;
    let not_yet = p
        .cert("acme", "d1", Utc::now() + chrono::Duration::days(2))
        .await;
    // A CA of globex trusted as acme's: its certificates name globex.
    let stray = p.root.issue_tenant_ca("globex", Utc::now(), year)?;
    p.trust
        .add_ca("acme", pki::CaKind::Issued, stray.cert_der().clone())?;
    let wrong_san = issue(&stray, "d1", Utc::now());
    // Another root altogether.
    let other_root = RootCa::generate(Utc::now(), year)?;
    let foreign = issue(
        &other_root.issue_tenant_ca("acme", Utc::now(), year)?,
        "d1",
        Utc::now(),
    );
    for (what, cert) in [
        ("expired", &expired),
        ("not yet valid", &not_yet),
        ("wrong tenant in SAN", &wrong_san),
        ("other root", &foreign),
    ] {
        assert_eq!(
            auth.authenticate(&request(&cert.certificate_der)).await,
            Err(AuthError::BadCredentials),
            "{what}"
        );
        let refused = p.with_cert("d1", cert).refused().await;
        assert!(!refused.is_empty(), "{what}");
    }
    // The tenant CA as a client certificate.
    assert_eq!(
        auth.authenticate(&request(p.ca("acme").cert_der())).await,
        Err(AuthError::BadCredentials)
    );
    // A valid certificate whose serial was never recorded.
    let unrecorded = issue(p.ca("acme"), "d1", Utc::now());
    assert_eq!(
        auth.authenticate(&request(&unrecorded.certificate_der))
            .await,
        Err(AuthError::BadCredentials)
    );
    p.with_cert("d1", &unrecorded)
        .refused_with("BadUserNamePassword")
        .await;
    p.shutdown.cancel();
    Ok(())
}
store::backend_tests!(bad_certificates);

async fn password_devices(db: &TestDb) -> anyhow::Result<()> {
    let p = Platform::start(db.store(), &["acme"]).await;
    p.device("acme", "p1").await;
    let secret = access::generate_password()?;
    p.store
        .set_device_password("acme", "p1", &access::hash_password(&secret)?, None)
        .await?;
    // Allowed publishes are acked 0x10: accepted, no one listens here.
    let mut ok = p.with_password("p1", "p1@acme", &secret);
    ok.connected().await;
    assert_eq!(
        ok.publish("devices/p1/state", "on").await,
        PubAckReason::NoMatchingSubscribers
    );
    assert_eq!(
        ok.publish("devices/p2/state", "on").await,
        PubAckReason::NotAuthorized
    );
    for (client_id, user, password, expect) in [
        ("p1", "p1@acme", "wrong", "BadUserNamePassword"),
        ("p1", "nobody@acme", secret.as_str(), "BadUserNamePassword"),
        ("p1", "no-such-user", secret.as_str(), "BadUserNamePassword"),
        (
            "other",
            "p1@acme",
            secret.as_str(),
            "ClientIdentifierNotValid",
        ),
    ] {
        let refused = p.with_password(client_id, user, password).refused().await;
        assert!(refused.contains(expect), "{user}/{client_id}: {refused}");
    }
    // A per-device publish limit reaches the live session at once.
    let live = access::LiveLimits::new(p.cache.clone(), p.broker.clone());
    // Ten bytes at once, then one a second: a second ten-byte message
    // waits ten seconds, far longer than the test takes.
    let slow = store::PublishLimitSettings {
        bytes_per_second: Some(1),
        bytes_burst: Some(10),
        ..Default::default()
    };
    p.store
        .put_device_publish_limits("acme", "p1", &slow, None)
        .await?;
    assert!(live.device_changed("acme", "p1").await?);
    assert_eq!(
        ok.publish("devices/p1/state", "0123456789").await,
        PubAckReason::NoMatchingSubscribers
    );
    assert_eq!(
        ok.publish("devices/p1/state", "0123456789").await,
        PubAckReason::QuotaExceeded
    );
    p.store
        .delete_device_publish_limits("acme", "p1", None)
        .await?;
    assert_eq!(live.tenant_changed("acme").await?, 1);
    assert_eq!(
        ok.publish("devices/p1/state", "c").await,
        PubAckReason::NoMatchingSubscribers
    );
    // A tenant policy replaces the default device policy, live.
    let policy = serde_json::json!({"rules": [
        {"effect": "allow", "action": "publish", "filters": ["telemetry/${device}/#"]},
        {"effect": "deny", "action": "publish", "filters": ["telemetry/${device}/private"]},
    ]});
    let serde_json::Value::Object(document) = policy else {
        unreachable!()
    };
    access::PolicyTemplate::parse("telemetry", &document)?;
    p.store
        .put_acl_policy("acme", "telemetry", &document, None)
        .await?;
    // The live session follows the reloaded policies.
    p.cache.reload_policies("acme").await?;
    let fresh = &mut ok;
    assert_eq!(
        fresh.publish("telemetry/p1/temp", "20").await,
        PubAckReason::NoMatchingSubscribers
    );
    assert_eq!(
        fresh.publish("telemetry/p1/private", "x").await,
        PubAckReason::NotAuthorized
    );
    assert_eq!(
        fresh.publish("devices/p1/state", "on").await,
        PubAckReason::NotAuthorized
    );
    // Invalidated policies: checks are denied until the background reload
    // lands, then the stored policies apply again.
    p.cache.invalidate_tenant("acme");
    let deadline = Instant::now() + WAIT;
    while fresh.publish("telemetry/p1/temp", "21").await != PubAckReason::NoMatchingSubscribers {
        assert!(Instant::now() < deadline, "policies never reloaded");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    p.shutdown.cancel();
    Ok(())
}
store::backend_tests!(password_devices);

fn mosquitto(program: &str, args: &[&str]) -> std::process::Output {
    std::process::Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"))
}

/// Asserts a mosquitto client ran to success (showing what it said if not).
fn assert_succeeded(out: &std::process::Output) {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Asserts a mosquitto client failed, saying `why` (in any case).
fn assert_failed_saying(out: &std::process::Output, why: &str) {
    let said = String::from_utf8_lossy(&out.stderr).to_lowercase();
    assert!(!out.status.success() && said.contains(why), "{said}");
}

async fn mosquitto_clients(db: &TestDb) -> anyhow::Result<()> {
    let p = Platform::start(db.store(), &["acme"]).await;
    p.device("acme", "m1").await;
    let cert = p.cert("acme", "m1", Utc::now()).await;
    let (cert_path, key_path) = p.files("m1", &cert);
    let cafile = p.cafile();
    let port = p.port.to_string();
    let secret = access::generate_password()?;
    p.store
        .create_service_credential(
            &backend(
                &secret,
                vec!["commands/#".into()],
                vec!["devices/+/state".into()],
            )?,
            None,
        )
        .await?;
    let mut service = p.with_password("backend-1", "acme-backend", &secret);
    service.connected().await;
    assert!(matches!(
        service.subscribe("devices/+/state").await,
        SubscribeReasonCode::Success(_)
    ));
    assert_eq!(
        service.subscribe("#").await,
        SubscribeReasonCode::NotAuthorized
    );

    let server = ["-h", "localhost", "-p", &port, "--cafile", &cafile];
    // The server, the device's certificate, then the program's own options.
    let run = |program: &'static str, extra: &[&str]| {
        let args: Vec<String> = server
            .iter()
            .chain(&["--cert", &cert_path, "--key", &key_path, "-V", "mqttv5"])
            .chain(extra)
            .map(|s| (*s).to_owned())
            .collect();
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            mosquitto(program, &args)
        })
    };
    let publish = ["-t", "devices/m1/state", "-m", "hello", "-q", "1"];
    let out = run("mosquitto_pub", &[&["-i", "m1"][..], &publish].concat()).await?;
    assert_succeeded(&out);
    assert_eq!(
        service.message().await,
        ("devices/m1/state".into(), Bytes::from("hello"))
    );
    let out = run(
        "mosquitto_pub",
        &[&["-i", "intruder"][..], &publish].concat(),
    )
    .await?;
    assert!(
        !out.status.success(),
        "a client id other than the device id got in"
    );

    // mosquitto_sub as the device receives its command.
    let sub = run(
        "mosquitto_sub",
        &["-i", "m1", "-t", "commands/m1/#", "-C", "1", "-W", "15"],
    );
    // Publish until the subscriber (connecting in its own time) has it.
    let deadline = Instant::now() + WAIT;
    while !sub.is_finished() && Instant::now() < deadline {
        let ack = service.publish("commands/m1/ping", "ping").await;
        assert!(
            matches!(
                ack,
                PubAckReason::Success | PubAckReason::NoMatchingSubscribers
            ),
            "{ack:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let out = sub.await?;
    assert_succeeded(&out);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "ping");
    // A live mosquitto_sub session ends when its certificate is revoked.
    let watcher = run(
        "mosquitto_sub",
        &[
            "-d",
            "-i",
            "m1",
            "-t",
            "commands/m1/#",
            "-C",
            "1",
            "-W",
            "15",
        ],
    );
    let deadline = Instant::now() + WAIT;
    let acme = broker::TenantId::parse("acme")?;
    while p.broker.session_drops(&acme, "m1").is_none() {
        assert!(Instant::now() < deadline, "mosquitto_sub never connected");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    p.store
        .revoke_device_certificate("acme", "m1", &cert.serial, "superseded", Utc::now(), None)
        .await?;
    let revoked_at = Instant::now();
    assert!(
        p.revocations
            .certificate_revoked("acme", "m1", &cert.serial)
    );
    let out = watcher.await?;
    eprintln!(
        "mosquitto_sub ended {:?} after the revocation",
        revoked_at.elapsed()
    );
    let log = String::from_utf8_lossy(&out.stdout);
    assert!(log.contains("Received DISCONNECT (152)"), "{log}");
    let out = run("mosquitto_pub", &[&["-i", "m1"][..], &publish].concat()).await?;
    assert_failed_saying(&out, "not authorized");
    // 3.1.1 return codes: the revoked certificate gets 0x05 (it wins over
    // any user name), a wrong password 0x04.
    let v311 = ["-V", "mqttv311", "-i", "m1", "-t", "x", "-m", "x"];
    let out = run("mosquitto_pub", &v311).await?;
    assert_failed_saying(&out, "not authorised");
    let wrong_password = [
        "-V",
        "mqttv311",
        "-i",
        "backend-2",
        "-u",
        "acme-backend",
        "-P",
        "wrong",
        "-t",
        "x",
        "-m",
        "x",
    ];
    let out = mosquitto("mosquitto_pub", &[&server[..], &wrong_password].concat());
    assert_failed_saying(&out, "bad user name or password");
    p.shutdown.cancel();
    Ok(())
}
store::backend_tests!(mosquitto_clients);

/// Once a device's state is cached, a connect needs no database: shown by
/// closing the cache's own pool. An invalidation sends it back to the store.
async fn cached_connects_skip_the_store(db: &TestDb) -> anyhow::Result<()> {
    let p = Platform::start(db.store(), &["acme"]).await;
    p.device("acme", "d1").await;
    let cert = p.cert("acme", "d1", Utc::now()).await;
    let own_pool = Store::open(db.url()).await?;
    let cache = AccessCache::new(own_pool.clone());
    let auth = PlatformAuthenticator::new(p.trust.clone(), cache.clone());
    let request = cert_login(&cert.certificate_der, mqtt::ProtocolVersion::V311);
    let limits = store::PublishLimitSettings {
        bytes_per_second: Some(4096),
        ..Default::default()
    };
    p.store
        .put_device_publish_limits("acme", "d1", &limits, None)
        .await?;
    let identity = auth.authenticate(&request).await?;
    assert_eq!(identity.principal, "d1");
    assert_eq!(
        identity.limits.as_deref(),
        Some(&access::broker_limits(&limits))
    );
    own_pool.close().await;
    assert_eq!(auth.authenticate(&request).await, Ok(identity));
    cache.invalidate_device("acme", "d1");
    assert!(matches!(
        auth.authenticate(&request).await,
        Err(AuthError::Unavailable(_))
    ));
    p.shutdown.cancel();
    Ok(())
}
store::backend_tests!(cached_connects_skip_the_store);
