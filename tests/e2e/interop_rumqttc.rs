//! Interop with rumqttc (MQTT 3.1.1 and 5.0) against the real binary: QoS
//! 0/1/2 both ways, persistent sessions, QoS 2 redelivered with DUP across a
//! reconnect, takeover, and the TLS (trusting the CA the server printed) and
//! WebSocket listeners.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use fleetmq_tests::rumqtt::{WAIT, next, v5, v5_publish, v5_suback};
use fleetmq_tests::{Server, anonymous_server};
use rumqttc::v5::mqttbytes::v5::Packet as V5Packet;
use rumqttc::{Packet, QoS, TlsConfiguration, Transport};
use tokio::sync::mpsc::{UnboundedReceiver, unbounded_channel};
use tokio::task::JoinHandle;

/// A v3.1.1 client whose event loop feeds incoming packets to a channel.
fn v4(
    opts: rumqttc::MqttOptions,
) -> (
    rumqttc::AsyncClient,
    UnboundedReceiver<Packet>,
    JoinHandle<()>,
) {
    let (client, mut el) = rumqttc::AsyncClient::new(opts, 100);
    let (tx, rx) = unbounded_channel();
    let task = tokio::spawn(async move {
        while let Ok(event) = el.poll().await {
            if let rumqttc::Event::Incoming(p) = event
                && tx.send(p).is_err()
            {
                return;
            }
        }
    });
    (client, rx, task)
}

async fn v4_publish(rx: &mut UnboundedReceiver<Packet>) -> rumqttc::Publish {
    next(rx, |p| match p {
        Packet::Publish(p) => Some(p),
        _ => None,
    })
    .await
}

async fn v4_suback(rx: &mut UnboundedReceiver<Packet>) {
    next(rx, |p| matches!(p, Packet::SubAck(_)).then_some(())).await;
}

fn v4_opts(server: &Server, id: &str) -> rumqttc::MqttOptions {
    let mut o = rumqttc::MqttOptions::new(id, "127.0.0.1", server.mqtt().port());
    o.set_keep_alive(Duration::from_secs(30));
    o
}

fn v5_opts(server: &Server, id: &str) -> rumqttc::v5::MqttOptions {
    let mut o = rumqttc::v5::MqttOptions::new(id, "127.0.0.1", server.mqtt().port());
    o.set_keep_alive(Duration::from_secs(30));
    o
}

#[tokio::test]
async fn v311_qos_0_1_2_both_ways_and_a_persistent_session() {
    let (_cwd, server) = anonymous_server().await;
    let (sub, mut srx, _t1) = v4(v4_opts(&server, "v4-sub"));
    sub.subscribe("v4/#", QoS::ExactlyOnce).await.unwrap();
    v4_suback(&mut srx).await;
    let (publ, _prx, _t2) = v4(v4_opts(&server, "v4-pub"));
    for qos in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce] {
        let payload = format!("{qos:?}");
        publ.publish("v4/t", qos, false, payload.clone())
            .await
            .unwrap();
        let got = v4_publish(&mut srx).await;
        assert_eq!((&got.payload[..], got.qos), (payload.as_bytes(), qos));
    }

    // Clean Session 0: the subscription stays and QoS 1/2 wait offline.
    let mut opts = v4_opts(&server, "v4-persistent");
    opts.set_clean_session(false);
    let (keeper, mut krx, task) = v4(opts.clone());
    keeper.subscribe("kept/#", QoS::AtLeastOnce).await.unwrap();
    v4_suback(&mut krx).await;
    keeper.disconnect().await.unwrap();
    let _ = tokio::time::timeout(WAIT, task).await;
    publ.publish("kept/1", QoS::AtLeastOnce, false, "while away")
        .await
        .unwrap();
    publ.publish("kept/2", QoS::ExactlyOnce, false, "also away")
        .await
        .unwrap();
    // Wait for the broker to have both (a round trip on the same connection).
    publ.subscribe("v4/#", QoS::AtMostOnce).await.unwrap();
    let (_keeper, mut krx, _t3) = v4(opts);
    let session_present = next(&mut krx, |p| match p {
        Packet::ConnAck(a) => Some(a.session_present),
        _ => None,
    })
    .await;
    assert!(session_present);
    assert_eq!(&v4_publish(&mut krx).await.payload[..], b"while away");
    assert_eq!(&v4_publish(&mut krx).await.payload[..], b"also away");
    server.stop().await.unwrap();
}

#[tokio::test]
async fn v5_qos2_is_redelivered_with_dup_across_a_reconnect() {
    let (_cwd, server) = anonymous_server().await;
    let mut opts = v5_opts(&server, "v5-dup");
    opts.set_clean_start(false);
    opts.set_session_expiry_interval(Some(60));
    // Manual acks: the first delivery is never acknowledged.
    opts.set_manual_acks(true);
    let (sub, mut srx, task) = v5(opts.clone());
    sub.subscribe("dup/t", rumqttc::v5::mqttbytes::QoS::ExactlyOnce)
        .await
        .unwrap();
    v5_suback(&mut srx).await;
    let (publ, _prx, _t2) = v5(v5_opts(&server, "v5-dup-pub"));
    publ.publish(
        "dup/t",
        rumqttc::v5::mqttbytes::QoS::ExactlyOnce,
        false,
        "exactly once",
    )
    .await
    .unwrap();
    let first = v5_publish(&mut srx).await;
    assert!(!first.dup);
    // The connection drops before PUBREC.
    task.abort();
    drop(sub);
    let (sub, mut srx, _t3) = v5(opts);
    let again = v5_publish(&mut srx).await;
    assert_eq!(&again.payload[..], b"exactly once");
    assert!(again.dup, "redelivery must carry DUP (MQTT-4.4.0-1)");
    assert_eq!(again.pkid, first.pkid);
    sub.ack(&again).await.unwrap();
    // Completed: a fresh message comes with a new flow, not this one again.
    publ.publish(
        "dup/t",
        rumqttc::v5::mqttbytes::QoS::ExactlyOnce,
        false,
        "next",
    )
    .await
    .unwrap();
    let next_one = v5_publish(&mut srx).await;
    assert_eq!(&next_one.payload[..], b"next");
    server.stop().await.unwrap();
}

#[tokio::test]
async fn v5_takeover_ends_the_older_connection() {
    let (_cwd, server) = anonymous_server().await;
    let (_old, mut orx, _t1) = v5(v5_opts(&server, "twin"));
    next(&mut orx, |p| {
        matches!(p, Ok(V5Packet::ConnAck(_))).then_some(())
    })
    .await;
    let (new, mut nrx, _t2) = v5(v5_opts(&server, "twin"));
    next(&mut nrx, |p| {
        matches!(p, Ok(V5Packet::ConnAck(_))).then_some(())
    })
    .await;
    // rumqttc decodes the DISCONNECT's reason (the broker writes its
    // property length even when empty).
    let ended = next(&mut orx, |p| match p {
        Ok(V5Packet::Disconnect(d)) => Some(format!("{:?}", d.reason_code)),
        Err(e) => Some(e),
        _ => None,
    })
    .await;
    assert!(ended.contains("SessionTakenOver"), "{ended}");
    // The newer connection is the one that works.
    new.subscribe("twin/t", rumqttc::v5::mqttbytes::QoS::AtLeastOnce)
        .await
        .unwrap();
    v5_suback(&mut nrx).await;
    server.stop().await.unwrap();
}

#[tokio::test]
async fn tls_with_the_printed_ca_and_websocket() {
    let (_cwd, server) = anonymous_server().await;
    let pem = std::fs::read(server.mqtts_ca_file()).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::pem::PemObject::pem_slice_iter(&pem) {
        roots.add(cert.unwrap()).unwrap();
    }
    let client = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let mut tls = rumqttc::v5::MqttOptions::new("tls-v5", "localhost", server.mqtts().port());
    tls.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
        Arc::new(client),
    )));
    let (sub, mut srx, _t1) = v5(tls);
    sub.subscribe("secure/#", rumqttc::v5::mqttbytes::QoS::AtLeastOnce)
        .await
        .unwrap();
    v5_suback(&mut srx).await;

    let ws_port = server.ws().port();
    let mut ws =
        rumqttc::MqttOptions::new("ws-v4", format!("ws://127.0.0.1:{ws_port}/mqtt"), ws_port);
    ws.set_transport(Transport::Ws);
    let (publ, _prx, _t2) = v4(ws);
    publ.publish("secure/x", QoS::AtLeastOnce, false, "ws to tls")
        .await
        .unwrap();
    let got = v5_publish(&mut srx).await;
    assert_eq!(&got.payload[..], b"ws to tls");
    server.stop().await.unwrap();
}
