//! The TLS and WebSocket listeners, with real clients: rumqttc over TLS
//! (rustls, aws-lc-rs) and over WebSocket, and `mosquitto_sub --cafile` when
//! installed. Certificates are generated per run (never committed).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use broker::testing::Served;
use broker::{Broker, Config};
use common::*;
use rumqttc::{QoS, TlsConfiguration, Transport};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

struct Certs {
    cert_der: CertificateDer<'static>,
    cert_pem: String,
    server: Arc<rustls::ServerConfig>,
}

fn certs() -> Certs {
    let ck =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .unwrap();
    let cert_der = ck.cert.der().clone();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(ck.signing_key.serialize_der()));
    let server = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert_der.clone()], key)
        .unwrap();
    Certs {
        cert_der,
        cert_pem: ck.cert.pem(),
        server: Arc::new(server),
    }
}

/// An anonymous broker of tenant `dev`.
fn dev_broker() -> Broker {
    init_tracing();
    Broker::allow_anonymous(tenant("dev"), Config::default())
}

#[tokio::test]
async fn tls_listener_serves_rumqttc() {
    let certs = certs();
    let served = Served::tls(dev_broker(), certs.server.clone()).await;
    let port = served.port();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(certs.cert_der.clone()).unwrap();
    let client = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tls = |id: &str| {
        let mut o = rumqttc::MqttOptions::new(id, "localhost", port);
        o.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
            Arc::new(client.clone()),
        )));
        o
    };
    let (sub, mut srx, _t1) = v4_with(tls("tls-sub"));
    sub.subscribe("secure/#", QoS::AtLeastOnce).await.unwrap();
    v4_suback(&mut srx).await;
    let (publ, _prx, _t2) = v4_with(tls("tls-pub"));
    v4_send(&publ, "secure/1", QoS::AtLeastOnce, false, "sealed").await;
    assert_eq!(&v4_publish(&mut srx).await.payload[..], b"sealed");
    served.shutdown.cancel();
}

#[tokio::test]
async fn tls_listener_serves_mosquitto_clients() {
    if std::process::Command::new("mosquitto_sub")
        .arg("--help")
        .output()
        .is_err()
    {
        eprintln!("mosquitto clients not installed; skipping");
        return;
    }
    let certs = certs();
    let served = Served::tls(dev_broker(), certs.server.clone()).await;
    let port = served.port();
    let dir = tempfile_dir();
    let ca = dir.join("ca.pem");
    std::fs::write(&ca, &certs.cert_pem).unwrap();
    let port_s = port.to_string();
    let ca_s = ca.to_str().unwrap();
    let args = ["-h", "localhost", "-p", &port_s, "--cafile", ca_s];
    let status = tokio::process::Command::new("mosquitto_pub")
        .args(args)
        .args(["-t", "tls/r", "-m", "over-tls", "-r", "-q", "1"])
        .status()
        .await
        .unwrap();
    assert!(status.success());
    let out = tokio::time::timeout(
        WAIT,
        tokio::process::Command::new("mosquitto_sub")
            .args(args)
            .args(["-t", "tls/#", "-C", "1", "-v"])
            .output(),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "tls/r over-tls"
    );
    let _ = std::fs::remove_dir_all(&dir);
    served.shutdown.cancel();
}

fn tempfile_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("broker-tls-{}", uuid_like()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn uuid_like() -> String {
    use std::time::{SystemTime, UNIX_EPOCH};
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{}-{nanos}", std::process::id())
}

#[tokio::test]
async fn ws_listener_serves_rumqttc_on_path_mqtt() {
    let served = Served::ws(dev_broker()).await;
    let port = served.port();
    let ws = |id: &str| {
        let mut o = rumqttc::v5::MqttOptions::new(id, format!("ws://127.0.0.1:{port}/mqtt"), port);
        o.set_transport(Transport::Ws);
        o.set_max_packet_size(Some(1 << 20));
        o
    };
    let (sub, mut srx, _t1) = v5_client(ws("ws-sub"));
    sub.subscribe("web/#", rumqttc::v5::mqttbytes::QoS::ExactlyOnce)
        .await
        .unwrap();
    v5_suback(&mut srx).await;
    let (publ, _prx, _t2) = v5_client(ws("ws-pub"));
    // Big enough to span WebSocket frames and MQTT reads.
    let big = vec![b'w'; 100_000];
    publ.publish(
        "web/1",
        rumqttc::v5::mqttbytes::QoS::ExactlyOnce,
        false,
        big.clone(),
    )
    .await
    .unwrap();
    let got = v5_publish(&mut srx).await;
    assert_eq!(got.payload.len(), big.len());

    // A plain TCP MQTT client on the WS port is refused (no upgrade).
    let mut raw = Raw::open(port, mqtt::ProtocolVersion::V311).await;
    raw.send(connect(mqtt::ProtocolVersion::V311, "raw")).await;
    assert!(raw.until_closed().await.is_empty());

    served.stop().await;
}

#[tokio::test]
async fn ws_wrong_path_or_subprotocol_is_refused() {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let served = Served::ws(dev_broker()).await;
    let port = served.port();
    for (path, proto) in [
        ("/other", Some("mqtt")),
        ("/mqtt", None),
        ("/mqtt", Some("chat")),
    ] {
        let mut req = format!("ws://127.0.0.1:{port}{path}")
            .into_client_request()
            .unwrap();
        if let Some(p) = proto {
            req.headers_mut()
                .insert("sec-websocket-protocol", p.parse().unwrap());
        }
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        let res = tokio_tungstenite::client_async(req, tcp).await;
        assert!(res.is_err(), "{path} {proto:?} was accepted");
    }
    let mut req = format!("ws://127.0.0.1:{port}/mqtt")
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("sec-websocket-protocol", "mqtt".parse().unwrap());
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let (_ws, resp) = tokio_tungstenite::client_async(req, tcp).await.unwrap();
    assert_eq!(
        resp.headers().get("sec-websocket-protocol").unwrap(),
        "mqtt"
    );
    served.shutdown.cancel();
}

/// Records what the TLS layer handed to the authenticator.
struct SeesCertificates {
    seen: std::sync::Mutex<Vec<Option<usize>>>,
}

#[async_trait::async_trait]
impl broker::Authenticator for SeesCertificates {
    async fn authenticate(
        &self,
        request: &broker::AuthRequest,
    ) -> Result<broker::Identity, broker::AuthError> {
        self.seen
            .lock()
            .unwrap()
            .push(request.peer_certificates.as_ref().map(Vec::len));
        Ok(broker::Identity {
            tenant: tenant("dev"),
            principal: request.client_id.clone(),
            limits: None,
        })
    }
}

#[tokio::test]
async fn tls_client_certificates_reach_the_authenticator() {
    let client = rcgen::generate_simple_self_signed(vec!["device-1".to_owned()]).unwrap();
    let client_der = client.cert.der().clone();
    let client_key =
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(client.signing_key.serialize_der()));
    // The server trusts the client's certificate as its own anchor; the PKI
    // issue brings real tenant CAs.
    let mut client_roots = rustls::RootCertStore::empty();
    client_roots.add(client_der.clone()).unwrap();
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(client_roots),
        provider(),
    )
    .allow_unauthenticated()
    .build()
    .unwrap();
    let server_key = {
        // The server's own identity.
        let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        (
            ck.cert.der().clone(),
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(ck.signing_key.serialize_der())),
        )
    };
    let server = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(vec![server_key.0.clone()], server_key.1)
        .unwrap();

    let auth = Arc::new(SeesCertificates {
        seen: std::sync::Mutex::new(Vec::new()),
    });
    let broker = Broker::builder(auth.clone()).build();
    let served = Served::tls(broker, Arc::new(server)).await;
    let port = served.port();

    let mut roots = rustls::RootCertStore::empty();
    roots.add(server_key.0).unwrap();
    let with_cert = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots.clone())
        .with_client_auth_cert(vec![client_der], client_key)
        .unwrap();
    let without = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    for (id, config) in [("with-cert", with_cert), ("anonymous", without)] {
        let mut o = rumqttc::MqttOptions::new(id, "localhost", port);
        o.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
            Arc::new(config),
        )));
        let (_c, mut rx, _t) = v4_with(o);
        next_matching(&mut rx, |p| {
            matches!(p, rumqttc::Packet::ConnAck(_)).then_some(())
        })
        .await;
    }
    assert_eq!(*auth.seen.lock().unwrap(), [Some(1), None]);
    served.shutdown.cancel();
}
