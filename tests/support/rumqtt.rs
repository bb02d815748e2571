//! rumqttc (a client we did not write) as the tests drive it: an MQTT 5
//! client whose incoming packets arrive on a channel, and waiting for the
//! next packet of a kind.

use std::time::Duration;

use rumqttc::v5::mqttbytes::v5::{Packet as V5Packet, Publish as V5Publish};
use tokio::sync::mpsc::{UnboundedReceiver, unbounded_channel};
use tokio::task::JoinHandle;

/// How long [`next`] waits for a packet.
pub const WAIT: Duration = Duration::from_secs(20);

/// What a [`v5`] client's event loop received (an error ends it).
pub type V5Incoming = UnboundedReceiver<Result<V5Packet, String>>;

/// A v5 client; the error that ends its event loop arrives as `Err`.
pub fn v5(
    opts: rumqttc::v5::MqttOptions,
) -> (
    rumqttc::v5::AsyncClient,
    UnboundedReceiver<Result<V5Packet, String>>,
    JoinHandle<()>,
) {
    let (client, mut el) = rumqttc::v5::AsyncClient::new(opts, 100);
    let (tx, rx) = unbounded_channel();
    let task = tokio::spawn(async move {
        loop {
            let item = match el.poll().await {
                Ok(rumqttc::v5::Event::Incoming(p)) => Ok(p),
                Ok(_) => continue,
                Err(e) => Err(format!("{e:?}")),
            };
            let ended = item.is_err();
            if tx.send(item).is_err() || ended {
                return;
            }
        }
    });
    (client, rx, task)
}

/// A [`v5`] client once its CONNACK came; with the CONNACK's Session
/// Present.
pub async fn v5_connected(
    opts: rumqttc::v5::MqttOptions,
) -> (rumqttc::v5::AsyncClient, V5Incoming, bool) {
    let (client, mut rx, _task) = v5(opts);
    let present = next(&mut rx, |p| match p {
        Ok(V5Packet::ConnAck(ack)) => Some(ack.session_present),
        Err(e) => panic!("connect failed: {e}"),
        _ => None,
    })
    .await;
    (client, rx, present)
}

/// The first packet `pick` takes, within [`WAIT`].
pub async fn next<P, T>(rx: &mut UnboundedReceiver<P>, mut pick: impl FnMut(P) -> Option<T>) -> T {
    tokio::time::timeout(WAIT, async {
        loop {
            if let Some(t) = pick(rx.recv().await.expect("client ended")) {
                return t;
            }
        }
    })
    .await
    .expect("timed out waiting for a packet")
}

pub async fn v5_publish(rx: &mut UnboundedReceiver<Result<V5Packet, String>>) -> V5Publish {
    next(rx, |p| match p {
        Ok(V5Packet::Publish(p)) => Some(p),
        Err(e) => panic!("client failed: {e}"),
        _ => None,
    })
    .await
}

pub async fn v5_suback(rx: &mut UnboundedReceiver<Result<V5Packet, String>>) {
    next(rx, |p| match p {
        Ok(V5Packet::SubAck(_)) => Some(()),
        Err(e) => panic!("client failed: {e}"),
        _ => None,
    })
    .await;
}

/// Publishes `payloads` on `topic` at QoS 1 and waits for every PUBACK.
pub async fn v5_publish_acked(
    client: &rumqttc::v5::AsyncClient,
    rx: &mut V5Incoming,
    topic: &str,
    payloads: &[String],
) {
    v5_publish_confirmed(
        client,
        rx,
        topic,
        rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
        payloads,
    )
    .await;
}

/// Publishes `payloads` on `topic` at `qos` (1 or 2) and waits for every
/// PUBACK (QoS 1) or PUBCOMP (QoS 2).
pub async fn v5_publish_confirmed(
    client: &rumqttc::v5::AsyncClient,
    rx: &mut V5Incoming,
    topic: &str,
    qos: rumqttc::v5::mqttbytes::QoS,
    payloads: &[String],
) {
    for p in payloads {
        client
            .publish(topic, qos, false, p.clone().into_bytes())
            .await
            .expect("publish queued");
    }
    for _ in payloads {
        next(rx, |p| match p {
            Ok(V5Packet::PubAck(_)) if qos == rumqttc::v5::mqttbytes::QoS::AtLeastOnce => Some(()),
            Ok(V5Packet::PubComp(_)) if qos == rumqttc::v5::mqttbytes::QoS::ExactlyOnce => Some(()),
            Err(e) => panic!("publisher failed: {e}"),
            _ => None,
        })
        .await;
    }
}

/// The payloads (UTF-8) of the next `n` application messages.
pub async fn v5_payloads(rx: &mut V5Incoming, n: usize) -> Vec<String> {
    let mut got = Vec::with_capacity(n);
    while got.len() < n {
        let m = v5_publish(rx).await;
        got.push(String::from_utf8(m.payload.to_vec()).expect("UTF-8 payload"));
    }
    got
}
