//! Real TLS handshakes (tokio-rustls over an in-memory duplex) through
//! [`crate::DeviceCertVerifier`], and OpenSSL's view of what we issue.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration as StdDuration;

use chrono::{Duration, Utc};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::test_support::{Fixture, leaf_params};
use crate::{DeviceCertVerifier, DeviceKey, IssuedDeviceCert, TrustRegistry};

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

fn server_config(f: &Fixture, registry: &TrustRegistry) -> Arc<ServerConfig> {
    let server = f
        .root
        .issue_server_cert(&["localhost".to_owned()], Utc::now(), Duration::days(1))
        .unwrap();
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(Arc::new(DeviceCertVerifier::new(registry.clone())))
        .with_single_cert(server.chain_der.clone(), server.private_key_der())
        .unwrap();
    // As the broker must: a resumed session skips the verifier, so a CA
    // removed (or a certificate revoked) since would still get in.
    config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    Arc::new(config)
}

/// A CA fixture, its trust registry, and a server that verifies client
/// certificates against that registry.
fn served() -> (Fixture, TrustRegistry, Arc<ServerConfig>) {
    let f = Fixture::new();
    let registry = f.registry();
    let server = server_config(&f, &registry);
    (f, registry, server)
}

fn client_config(
    f: &Fixture,
    client: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    roots.add(f.root.cert_der().clone()).unwrap();
    let builder = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots);
    let config = match client {
        Some((chain, key)) => builder.with_client_auth_cert(chain, key).unwrap(),
        None => builder.with_no_client_auth(),
    };
    Arc::new(config)
}

fn key_der(pem: &str) -> PrivateKeyDer<'static> {
    PrivateKeyDer::from_pem_slice(pem.as_bytes()).unwrap()
}

fn device_credentials(
    issued: &IssuedDeviceCert,
    full_chain: bool,
) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
    let mut chain = vec![issued.certificate_der.clone()];
    if full_chain {
        chain.extend(crate::pem_to_der_chain(&issued.chain_pem).unwrap());
    }
    let key = key_der(issued.private_key_pem.as_ref().unwrap().expose());
    (chain, key)
}

/// A client presenting `issued` (with its chain or the leaf only).
fn device_client(
    f: &Fixture,
    issued: &IssuedDeviceCert,
    full_chain: bool,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Arc<ClientConfig> {
    client_config(f, Some(device_credentials(issued, full_chain)), versions)
}

/// Whether `openssl` is missing, so that the interop test is skipped
/// (with a note).
fn openssl_missing() -> bool {
    let missing = std::process::Command::new("openssl")
        .arg("version")
        .output()
        .is_err();
    if missing {
        eprintln!("openssl not found: interop test skipped");
    }
    missing
}

/// Run one handshake and a ping/pong; the server's view: the peer's
/// certificates on success, the error text on refusal.
async fn handshake(
    server: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
) -> Result<Option<Vec<CertificateDer<'static>>>, String> {
    let (client_io, server_io) = tokio::io::duplex(64 * 1024);
    let server_task = tokio::spawn(async move {
        let mut tls = TlsAcceptor::from(server)
            .accept(server_io)
            .await
            .map_err(|e| e.to_string())?;
        let mut ping = [0u8; 4];
        tls.read_exact(&mut ping).await.map_err(|e| e.to_string())?;
        tls.write_all(b"pong").await.map_err(|e| e.to_string())?;
        tls.flush().await.map_err(|e| e.to_string())?;
        let peer = tls.get_ref().1.peer_certificates().map(|c| c.to_vec());
        Ok::<_, String>(peer)
    });
    let client_task = async move {
        let name = ServerName::try_from("localhost").unwrap();
        let mut tls = TlsConnector::from(client).connect(name, client_io).await?;
        tls.write_all(b"ping").await?;
        tls.flush().await?;
        let mut pong = [0u8; 4];
        tls.read_exact(&mut pong).await?;
        Ok::<_, std::io::Error>(())
    };
    // Generous: the machine is shared; this only guards against a hang.
    let (server_result, _client_result) = tokio::time::timeout(StdDuration::from_secs(60), async {
        tokio::join!(server_task, client_task)
    })
    .await
    .expect("handshake hung");
    server_result.unwrap()
}

const TLS13: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13];
const TLS12: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS12];

#[tokio::test]
async fn good_device_certificates_connect_with_full_chain_or_leaf_only() {
    let (f, registry, server) = served();
    let issued = f.issue("acme", "sensor-1", DeviceKey::Generate);
    for (full_chain, versions) in [(true, TLS13), (false, TLS13), (false, TLS12)] {
        let client = device_client(&f, &issued, full_chain, versions);
        let peer = handshake(server.clone(), client).await.unwrap().unwrap();
        let identity = registry.identify(&peer, Utc::now()).unwrap();
        assert_eq!(
            (identity.tenant.as_str(), identity.device.as_str()),
            ("acme", "sensor-1")
        );
        assert_eq!(identity.serial, issued.serial);
    }
    // A CSR-made certificate, key kept by the device.
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
    let csr = rcgen::CertificateParams::default()
        .serialize_request(&key)
        .unwrap()
        .pem()
        .unwrap();
    let from_csr = f.issue("beta", "gw", DeviceKey::Csr(&csr));
    let client = client_config(
        &f,
        Some((
            vec![from_csr.certificate_der.clone()],
            key_der(&key.serialize_pem()),
        )),
        TLS13,
    );
    assert!(handshake(server.clone(), client).await.unwrap().is_some());
}

#[tokio::test]
async fn clients_without_a_certificate_still_connect() {
    let (f, _registry, server) = served();
    let peer = handshake(server, client_config(&f, None, TLS13))
        .await
        .unwrap();
    assert!(peer.is_none());
}

#[tokio::test]
async fn bad_certificates_fail_the_handshake_or_reach_connect_with_their_reason() {
    let (f, registry, server) = served();
    let acme = f.tenant("acme");
    let at = |now| crate::DeviceCertParams {
        now,
        ..f.params("d")
    };
    let expired = acme
        .issue_device_cert(&at(Utc::now() - Duration::days(60)), DeviceKey::Generate)
        .unwrap();
    let early = acme
        .issue_device_cert(&at(Utc::now() + Duration::days(2)), DeviceKey::Generate)
        .unwrap();
    let (wrong_tenant, wrong_key) = f.craft(
        "acme",
        &leaf_params("d", Some("spiffe://fleetmq.local/tenant/beta/device/d")),
    );
    let stranger = Fixture::new();
    let foreign = stranger.issue("acme", "d", DeviceKey::Generate);
    let ca_key = key_der(&acme.issuer().key().serialize_pem());

    // Chains we verified: the handshake passes and the broker's identify
    // (at CONNECT) gives the reason it refuses them with.
    let deferred = [
        ("expired", device_credentials(&expired, true), "Expired"),
        (
            "not yet valid",
            device_credentials(&early, false),
            "NotYetValid",
        ),
        (
            "wrong-tenant SAN",
            (vec![wrong_tenant], key_der(&wrong_key.serialize_pem())),
            "TenantMismatch { san_tenant: \"beta\", ca_tenant: \"acme\" }",
        ),
        (
            "CA as client",
            (vec![acme.cert_der().clone()], ca_key),
            "CaAsClient",
        ),
    ];
    for (case, credentials, why) in deferred {
        let client = client_config(&f, Some(credentials), TLS13);
        let peer = handshake(server.clone(), client)
            .await
            .unwrap_or_else(|e| panic!("{case}: {e}"))
            .expect("the chain reaches the broker");
        let refused = registry.identify(&peer, Utc::now()).unwrap_err();
        assert!(format!("{refused:?}").contains(why), "{case}: {refused:?}");
    }
    // Not ours at all: refused in the handshake.
    let client = device_client(&f, &foreign, true, TLS13);
    let err = handshake(server.clone(), client).await.unwrap_err();
    assert!(err.contains("UnknownIssuer"), "other root: {err}");
}

#[tokio::test]
async fn ca_changes_take_effect_without_a_new_config() {
    let (f, registry, server) = served();
    let issued = f.issue("acme", "d", DeviceKey::Generate);
    let client = device_client(&f, &issued, false, TLS13);
    assert!(handshake(server.clone(), client.clone()).await.is_ok());
    registry.remove_tenant("acme");
    assert!(handshake(server.clone(), client.clone()).await.is_err());
    registry.add_tenant_ca(f.tenant("acme")).unwrap();
    assert!(handshake(server, client).await.is_ok());
}

/// OpenSSL's view: our chain verifies, our CRL revokes, its CSRs are
/// accepted. Skipped (with a note) where `openssl` is not installed.
#[test]
fn openssl_agrees() {
    use std::process::Command;
    if openssl_missing() {
        return;
    }
    let f = Fixture::new();
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name);
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir.path())
            .output()
            .unwrap();
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    };
    // A new key of type `newkey` (`{name}.key`) and a CSR for it
    // (`{name}.csr`).
    let request = |newkey: &str, name: &str| {
        let (key, csr) = (format!("{name}.key"), format!("{name}.csr"));
        openssl(&[
            "req",
            "-new",
            "-newkey",
            newkey,
            "-nodes",
            "-subj",
            "/CN=whatever",
            "-keyout",
            &key,
            "-out",
            &csr,
        ])
    };
    // device.pem verified up to root.pem through tenant.pem, with `checks`.
    let verify_device = |checks: &[&str]| {
        let mut args = vec!["verify", "-CAfile", "root.pem", "-untrusted", "tenant.pem"];
        args.extend_from_slice(checks);
        args.push("device.pem");
        openssl(&args)
    };
    // A CSR made by OpenSSL, for each key type it should be accepted for.
    for (i, newkey) in ["ec:p256.param", "rsa:2048", "ed25519"].iter().enumerate() {
        if i == 0 {
            let (ok, out) = openssl(&["ecparam", "-name", "prime256v1", "-out", "p256.param"]);
            assert!(ok, "{out}");
        }
        let (ok, out) = request(newkey, "device");
        assert!(ok, "{out}");
        let csr = std::fs::read_to_string(path("device.csr")).unwrap();
        let issued = f.issue("acme", "dev-1", DeviceKey::Csr(&csr));
        std::fs::write(path("root.pem"), f.root.cert_pem()).unwrap();
        std::fs::write(path("tenant.pem"), f.acme.cert_pem()).unwrap();
        std::fs::write(path("device.pem"), &issued.certificate_pem).unwrap();
        let (ok, out) = verify_device(&["-purpose", "sslclient"]);
        assert!(ok && out.contains("device.pem: OK"), "{newkey}: {out}");

        // Revoked on the tenant CRL: OpenSSL now refuses it.
        let now = Utc::now();
        let revoked = [crate::RevokedCert {
            serial: issued.serial.clone(),
            revoked_at: now,
            reason: crate::RevocationReason::KeyCompromise,
        }];
        let crl = f
            .acme
            .crl(&revoked, 1, now, now + Duration::days(1))
            .unwrap();
        std::fs::write(path("crl.pem"), &crl.pem).unwrap();
        let (ok, out) = verify_device(&["-crl_check", "-CRLfile", "crl.pem"]);
        assert!(!ok && out.contains("certificate revoked"), "{out}");
    }
    // A 1024-bit RSA CSR is refused with a reason.
    let (ok, out) = request("rsa:1024", "small");
    if ok {
        let csr = std::fs::read_to_string(path("small.csr")).unwrap();
        let err = f
            .acme
            .issue_device_cert(&f.params("d"), DeviceKey::Csr(&csr))
            .unwrap_err();
        assert!(err.to_string().contains("1024 bits is too small"), "{err}");
    } else {
        eprintln!("openssl refused to make a 1024-bit key ({out}); that case skipped");
    }
}

/// The way mosquitto_pub connects (OpenSSL, leaf and key files, no hints
/// from the server): accepted for our device, refused for another root's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openssl_client_sends_its_leaf_without_hints() {
    use std::process::{Command, Stdio};
    if openssl_missing() {
        return;
    }
    let (f, registry, server) = served();
    let acceptor = TlsAcceptor::from(server);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("root.pem"), f.root.cert_pem()).unwrap();
    let ours = f.issue("acme", "sensor-1", DeviceKey::Generate);
    let stranger = Fixture::new();
    let theirs = stranger.issue("acme", "sensor-1", DeviceKey::Generate);

    for (name, issued, accepted) in [("ours", &ours, true), ("theirs", &theirs, false)] {
        let cert = dir.path().join(format!("{name}.pem"));
        let key = dir.path().join(format!("{name}.key"));
        std::fs::write(&cert, &issued.certificate_pem).unwrap();
        std::fs::write(&key, issued.private_key_pem.as_ref().unwrap().expose()).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let acceptor = acceptor.clone();
        let server = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let mut tls = acceptor.accept(tcp).await.map_err(|e| e.to_string())?;
            let mut ping = [0u8; 4];
            tls.read_exact(&mut ping).await.map_err(|e| e.to_string())?;
            let peer = tls.get_ref().1.peer_certificates().map(|c| c.to_vec());
            Ok::<_, String>(peer)
        });
        let root = dir.path().join("root.pem");
        let client = tokio::task::spawn_blocking(move || {
            let mut child = Command::new("openssl")
                .args([
                    "s_client",
                    "-connect",
                    &format!("127.0.0.1:{port}"),
                    "-servername",
                    "localhost",
                    "-quiet",
                ])
                .arg("-CAfile")
                .arg(&root)
                .arg("-cert")
                .arg(&cert)
                .arg("-key")
                .arg(&key)
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            use std::io::Write;
            let _ = child.stdin.take().unwrap().write_all(b"ping");
            let _ = child.wait();
        });
        let result = tokio::time::timeout(StdDuration::from_secs(60), server)
            .await
            .expect("openssl handshake hung")
            .unwrap();
        client.await.unwrap();
        if accepted {
            let peer = result.unwrap().expect("no client certificate");
            let identity = registry.identify(&peer, Utc::now()).unwrap();
            assert_eq!(identity.device, "sensor-1");
        } else {
            let err = result.unwrap_err();
            assert!(err.contains("UnknownIssuer"), "{err}");
        }
    }
}
