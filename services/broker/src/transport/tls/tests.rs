//! The unbuffered TLS stream against tokio-rustls's client (rustls's
//! buffered API: a client we did not write over the same protocol), in
//! memory.

use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio_rustls::TlsConnector;

use super::*;

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

fn key_pair(name: &str) -> (CertificateDer<'static>, PrivateKeyDer<'static>) {
    let ck = rcgen::generate_simple_self_signed(vec![name.to_owned()]).unwrap();
    (
        ck.cert.der().clone(),
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(ck.signing_key.serialize_der())),
    )
}

struct Pki {
    server: Arc<rustls::ServerConfig>,
    server_cert: CertificateDer<'static>,
    device: (CertificateDer<'static>, PrivateKeyDer<'static>),
}

/// A server that asks for a client certificate and requires one when
/// `required`, trusting the device's self-signed certificate.
fn pki(required: bool) -> Pki {
    let device = key_pair("device-1");
    let mut roots = rustls::RootCertStore::empty();
    roots.add(device.0.clone()).unwrap();
    let verifier =
        rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider());
    let verifier = if required {
        verifier.build()
    } else {
        verifier.allow_unauthenticated().build()
    }
    .unwrap();
    let (server_cert, server_key) = key_pair("localhost");
    let server = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(vec![server_cert.clone()], server_key)
        .unwrap();
    Pki {
        server: Arc::new(server),
        server_cert,
        device,
    }
}

fn client(pki: &Pki, with_cert: bool, tls12: bool) -> TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(pki.server_cert.clone()).unwrap();
    let versions: &[&rustls::SupportedProtocolVersion] = if tls12 {
        &[&rustls::version::TLS12]
    } else {
        &[&rustls::version::TLS13]
    };
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots);
    let config = if with_cert {
        builder
            .with_client_auth_cert(vec![pki.device.0.clone()], pki.device.1.clone_key())
            .unwrap()
    } else {
        builder.with_no_client_auth()
    };
    TlsConnector::from(Arc::new(config))
}

async fn pair(
    pki: &Pki,
    with_cert: bool,
    tls12: bool,
) -> (
    TlsStream<DuplexStream>,
    tokio_rustls::client::TlsStream<DuplexStream>,
) {
    let (ours, theirs) = tokio::io::duplex(64 * 1024);
    let name = ServerName::try_from("localhost").unwrap();
    let connector = client(pki, with_cert, tls12);
    let (server, client) = tokio::join!(
        accept(pki.server.clone(), ours),
        connector.connect(name, theirs)
    );
    (server.unwrap(), client.unwrap())
}

/// Every buffer the stream owns, in bytes of capacity.
fn held<S>(tls: &TlsStream<S>) -> usize {
    tls.incoming.capacity() + tls.plaintext.capacity() + tls.outgoing.capacity()
}

#[tokio::test]
async fn data_crosses_both_ways_in_tls_1_3_and_1_2_and_an_idle_stream_holds_no_buffer() {
    let pki = pki(false);
    for tls12 in [false, true] {
        let (mut server, mut client) = pair(&pki, true, tls12).await;
        assert_eq!(
            server.peer_certificates().unwrap().len(),
            1,
            "tls12 {tls12}"
        );

        client.write_all(b"CONNECT").await.unwrap();
        client.flush().await.unwrap();
        // As the connection reads: through its own pooled scratch buffer.
        let mut got = bytes::BytesMut::new();
        while got.len() < 7 {
            crate::conn::buffers::read_pooled(&mut server, &mut got)
                .await
                .unwrap();
        }
        assert_eq!(&got[..], b"CONNECT");

        // Larger than a record and than one poll_write takes.
        let big: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let reader = tokio::spawn(async move {
            let mut back = vec![0u8; 200_000];
            client.read_exact(&mut back).await.unwrap();
            (client, back)
        });
        server.write_all(&big).await.unwrap();
        server.flush().await.unwrap();
        let (mut client, back) = reader.await.unwrap();
        assert!(back == big, "tls12 {tls12}");
        assert_eq!(held(&server), 0, "tls12 {tls12}: buffers kept while idle");

        // close_notify from the client reads as the end of the stream.
        client.shutdown().await.unwrap();
        let mut rest = Vec::new();
        server.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty());
    }
}

#[tokio::test]
async fn a_server_close_reaches_the_client_as_close_notify() {
    let pki = pki(false);
    let (mut server, mut client) = pair(&pki, false, false).await;
    assert!(server.peer_certificates().is_none());
    server.write_all(b"bye").await.unwrap();
    server.shutdown().await.unwrap();
    let mut got = Vec::new();
    // tokio-rustls reports a close without close_notify as an error.
    client.read_to_end(&mut got).await.unwrap();
    assert_eq!(got, b"bye");
    assert!(server.write_all(b"more").await.is_err());
}

#[tokio::test]
async fn a_missing_required_certificate_fails_the_handshake_with_an_alert() {
    let pki = pki(true);
    let (ours, theirs) = tokio::io::duplex(64 * 1024);
    let name = ServerName::try_from("localhost").unwrap();
    let connector = client(&pki, false, false);
    let server = tokio::spawn(accept(pki.server.clone(), ours));
    // TLS 1.3: the client learns of it at its first read.
    let mut client = connector.connect(name, theirs).await.unwrap();
    let err = server.await.unwrap().err().unwrap();
    assert!(
        err.to_string().contains("certificate"),
        "server side: {err}"
    );
    let mut buf = [0u8; 1];
    let read = client.read(&mut buf).await.unwrap_err();
    assert!(
        read.to_string().to_lowercase().contains("certificate"),
        "client side: {read}"
    );
}

#[tokio::test]
async fn bytes_that_are_not_tls_fail_the_handshake() {
    let pki = pki(false);
    let (ours, mut theirs) = tokio::io::duplex(1024);
    let server = tokio::spawn(accept(pki.server.clone(), ours));
    theirs
        .write_all(b"\x10\x0c\x00\x04MQTT\x04\x02\x00\x3c\x00\x00")
        .await
        .unwrap();
    assert!(matches!(server.await.unwrap(), Err(HandshakeError::Tls(_))));
}

#[tokio::test]
async fn a_peer_that_leaves_mid_handshake_is_reported_closed() {
    let pki = pki(false);
    let (ours, theirs) = tokio::io::duplex(1024);
    drop(theirs);
    assert!(matches!(
        accept(pki.server.clone(), ours).await,
        Err(HandshakeError::Closed | HandshakeError::Io(_))
    ));
}

#[tokio::test]
async fn a_peer_that_does_not_read_our_replies_is_not_read_either() {
    let pki = pki(false);
    let (ours, theirs) = tokio::io::duplex(4 * 1024);
    let name = ServerName::try_from("localhost").unwrap();
    let (server, client) = tokio::join!(
        accept(pki.server.clone(), ours),
        client(&pki, false, false).connect(name, theirs)
    );
    let (mut server, mut client) = (server.unwrap(), client.unwrap());
    client.write_all(b"ping").await.unwrap();
    client.flush().await.unwrap();
    // Owed to a peer whose socket is full (it is not reading): as if its
    // key updates had piled up replies.
    server
        .outgoing
        .extend_from_slice(&vec![0u8; MAX_WRITE + 16 * 1024]);
    let mut got = [0u8; 4];
    let read = tokio::time::timeout(
        std::time::Duration::from_millis(200),
        server.read_exact(&mut got),
    )
    .await;
    assert!(
        read.is_err(),
        "read on while {} bytes were owed",
        server.outgoing.len()
    );
    // Once the peer reads, so do we (what it reads is not TLS: it only
    // has to be taken off the socket).
    let drain = tokio::spawn(async move {
        let mut sink = vec![0u8; 64 * 1024];
        let inner = client.get_mut().0;
        while inner.read(&mut sink).await.is_ok_and(|n| n > 0) {}
    });
    tokio::time::timeout(
        std::time::Duration::from_secs(5),
        server.read_exact(&mut got),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(&got, b"ping");
    drain.abort();
}
