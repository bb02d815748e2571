//! MQTT over TLS with a client certificate, as a device presents one:
//! rumqttc on rustls, trusting the server's MQTT/TLS CA file.

use std::path::PathBuf;
use std::sync::Arc;

use rumqttc::{TlsConfiguration, Transport};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::{API_WAIT, Server};

/// A rustls client on aws-lc-rs trusting every CA in the PEM files `ca_files`.
fn trusting_builder(
    ca_files: &[PathBuf],
) -> rustls::ConfigBuilder<rustls::ClientConfig, rustls::client::WantsClientCert> {
    let mut roots = rustls::RootCertStore::empty();
    for file in ca_files {
        let pem = std::fs::read(file).unwrap();
        for c in CertificateDer::pem_slice_iter(&pem) {
            roots.add(c.unwrap()).unwrap();
        }
    }
    rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
}

/// rumqttc's TLS transport to `server`, presenting `cert` (PKCS#8 `key`).
pub fn transport(server: &Server, cert: CertificateDer<'static>, key: Vec<u8>) -> Transport {
    let config = trusting_builder(&[server.mqtts_ca_file()])
        .with_client_auth_cert(
            vec![cert],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key)),
        )
        .unwrap();
    Transport::tls_with_config(TlsConfiguration::Rustls(Arc::new(config)))
}

/// rumqttc's TLS transport without a client certificate, trusting every
/// CA in the PEM files `ca_files` (e.g. nodes that each made their own root).
pub fn trusting(ca_files: &[PathBuf]) -> Transport {
    let config = trusting_builder(ca_files).with_no_client_auth();
    Transport::tls_with_config(TlsConfiguration::Rustls(Arc::new(config)))
}

/// MQTT 5 CONNECT over TLS as `client_id`: the CONNACK code (as rumqttc
/// names it), or the transport error if there was no CONNACK.
pub async fn connect_v5(
    server: &Server,
    client_id: &str,
    cert: CertificateDer<'static>,
    key: Vec<u8>,
) -> String {
    use rumqttc::v5::{ConnectionError, Event, MqttOptions, mqttbytes::v5::Packet};
    let mut opts = MqttOptions::new(client_id, "localhost", server.mqtts().port());
    opts.set_transport(transport(server, cert, key));
    let (_client, mut el) = rumqttc::v5::AsyncClient::new(opts, 10);
    let outcome = tokio::time::timeout(API_WAIT, async {
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
