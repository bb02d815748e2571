//! A device key that never leaves the device (issue 5): a CSR made with
//! rcgen, signed over REST, and used by rumqttc (MQTT 5 over TLS with a
//! client certificate) — its own topics pass, another device's are refused
//! with v5 reason codes, and desired state reaches it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use fleetmq_tests::{Server, admin_token, fleetmq};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{Packet, PubAckReason, SubscribeReasonCode};
use rumqttc::{TlsConfiguration, Transport};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use serde_json::{Value, json};
use tokio::sync::mpsc::unbounded_channel;

const WAIT: Duration = Duration::from_secs(20);

#[tokio::test]
async fn csr_certificate_with_rumqttc_over_tls() {
    let cwd = tempfile::tempdir().unwrap();
    let mut cmd = fleetmq(cwd.path());
    cmd.args(["serve", "--http-listen", "127.0.0.1:0"]);
    let server = Server::start(cmd).await.unwrap();
    let token = admin_token(cwd.path(), &["--role", "platform-admin"]).await;
    let http = reqwest::Client::new();
    let post = |path: &str, body: Value| {
        http.post(server.url(path))
            .bearer_auth(&token)
            .timeout(WAIT)
            .json(&body)
            .send()
    };
    post("/v1/tenants", json!({"id": "acme", "name": "Acme"}))
        .await
        .unwrap();
    post("/v1/tenants/acme/devices", json!({"id": "csr-1"}))
        .await
        .unwrap();

    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "csr-1");
    let csr = params.serialize_request(&key).unwrap().pem().unwrap();
    let res = post(
        "/v1/tenants/acme/devices/csr-1/certificates",
        json!({"csr_pem": csr}),
    )
    .await
    .unwrap();
    assert_eq!(res.status(), 201);
    let issued: Value = res.json().await.unwrap();
    assert!(issued["private_key_pem"].is_null(), "{issued}");

    let chain = format!(
        "{}{}",
        issued["certificate_pem"].as_str().unwrap(),
        issued["chain_pem"].as_str().unwrap()
    );
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(chain.as_bytes())
        .map(Result::unwrap)
        .collect();
    let ca = std::fs::read(server.mqtts_ca_file()).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&ca) {
        roots.add(cert.unwrap()).unwrap();
    }
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_client_auth_cert(
        certs,
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
    )
    .unwrap();
    let mut opts = rumqttc::v5::MqttOptions::new("csr-1", "localhost", server.mqtts().port());
    opts.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
        Arc::new(tls),
    )));
    let (client, mut el) = rumqttc::v5::AsyncClient::new(opts, 100);
    let (tx, mut incoming) = unbounded_channel();
    tokio::spawn(async move {
        while let Ok(event) = el.poll().await {
            if let rumqttc::v5::Event::Incoming(p) = event
                && tx.send(p).is_err()
            {
                return;
            }
        }
    });
    let mut next = async || {
        tokio::time::timeout(WAIT, incoming.recv())
            .await
            .expect("no packet in time")
            .expect("client ended")
    };

    client
        .subscribe("commands/csr-1/#", QoS::AtLeastOnce)
        .await
        .unwrap();
    client
        .subscribe("devices/other/#", QoS::AtLeastOnce)
        .await
        .unwrap();
    client
        .publish("devices/other/x", QoS::AtLeastOnce, false, "no")
        .await
        .unwrap();
    let (mut subacks, mut pubacks) = (Vec::new(), Vec::new());
    while subacks.len() < 2 || pubacks.is_empty() {
        match next().await {
            Packet::SubAck(ack) => subacks.extend(ack.return_codes),
            Packet::PubAck(ack) => pubacks.push(ack.reason),
            _ => {}
        }
    }
    assert_eq!(
        subacks,
        [
            SubscribeReasonCode::Success(QoS::AtLeastOnce),
            SubscribeReasonCode::NotAuthorized
        ]
    );
    assert_eq!(pubacks, [PubAckReason::NotAuthorized]);

    let res = http
        .put(server.url("/v1/tenants/acme/devices/csr-1/state/desired"))
        .bearer_auth(&token)
        .json(&json!({"mode": "eco"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let desired = loop {
        if let Packet::Publish(p) = next().await {
            break p;
        }
    };
    assert_eq!(&desired.topic[..], b"commands/csr-1/state/desired");
    let doc: Value = serde_json::from_slice(&desired.payload).unwrap();
    assert_eq!(doc["mode"], "eco", "{doc}");
    server.stop().await.unwrap();
}
