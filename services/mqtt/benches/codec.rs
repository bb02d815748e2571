//! Encode and decode of the hot packets: PUBLISH (QoS 0 small and 1 KiB,
//! QoS 1 with MQTT 5 properties), CONNECT and SUBSCRIBE.
//!
//! Throughput is the encoded packet size, so MiB/s figures compare across
//! packets. Decode includes the zero-copy split off the input buffer but not
//! refilling it (that is the socket read's job), hence `iter_batched_ref`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::num::{NonZeroU16, NonZeroU32};

use bytes::{Bytes, BytesMut};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use mqtt::testing::{filter, topic};
use mqtt::{
    Connect, LastWill, MAX_PACKET_SIZE, Packet, PacketId, PayloadFormat, Properties,
    ProtocolVersion, Publish, QoS, RetainHandling, Subscribe, Subscription, SubscriptionOptions,
    UserProperties, decode,
};

fn pid(n: u16) -> PacketId {
    PacketId::new(n).unwrap()
}

fn publish_qos0(payload_len: usize) -> Packet {
    Publish::new(
        topic("tenants/acme/devices/sensor-0042/telemetry"),
        vec![0x5a; payload_len],
    )
    .into()
}

fn publish_qos1_v5() -> Packet {
    let mut p = Publish::new(
        topic("tenants/acme/devices/sensor-0042/telemetry"),
        vec![0x5a; 1024],
    );
    p.qos = QoS::AtLeastOnce;
    p.packet_id = Some(pid(4242));
    p.properties = Properties {
        payload_format_indicator: Some(PayloadFormat::Utf8),
        message_expiry_interval: Some(3600),
        content_type: Some("application/json".into()),
        response_topic: Some(topic("tenants/acme/devices/sensor-0042/reply")),
        correlation_data: Some(Bytes::from_static(b"0123456789abcdef")),
        topic_alias: Some(NonZeroU16::new(7).unwrap()),
        user_properties: UserProperties::from_pairs([
            ("trace-id", "4bf92f3577b34da6a3ce929d0e0e4736"),
            ("firmware", "2.4.1"),
        ])
        .unwrap(),
        ..Properties::default()
    };
    p.into()
}

fn connect(version: ProtocolVersion) -> Packet {
    let mut c = Connect::new(version, "sensor-0042");
    c.keep_alive = 30;
    c.username = Some("acme/sensor-0042".into());
    c.password = Some(Bytes::from_static(b"not-a-real-secret-0123456789"));
    c.will = Some(LastWill {
        topic: topic("tenants/acme/devices/sensor-0042/status"),
        payload: Bytes::from_static(b"offline"),
        qos: QoS::AtLeastOnce,
        retain: true,
        properties: Properties::default(),
    });
    if version == ProtocolVersion::V5 {
        c.properties = Properties {
            session_expiry_interval: Some(86_400),
            receive_maximum: Some(NonZeroU16::new(64).unwrap()),
            maximum_packet_size: Some(NonZeroU32::new(256 * 1024).unwrap()),
            topic_alias_maximum: Some(16),
            user_properties: UserProperties::from_pairs([("model", "th-200")]).unwrap(),
            ..Properties::default()
        };
        if let Some(will) = c.will.as_mut() {
            will.properties.will_delay_interval = Some(30);
        }
    }
    Packet::Connect(Box::new(c))
}

fn subscribe(version: ProtocolVersion) -> Packet {
    // 3.1.1 has only the QoS; the other options would not round-trip.
    let retain_handling = match version {
        ProtocolVersion::V311 => RetainHandling::SendOnSubscribe,
        ProtocolVersion::V5 => RetainHandling::SendIfNew,
    };
    let opts = |qos| SubscriptionOptions {
        retain_handling,
        ..SubscriptionOptions::new(qos)
    };
    let subscriptions = vec![
        Subscription {
            filter: filter("tenants/acme/devices/+/telemetry"),
            options: opts(QoS::AtLeastOnce),
        },
        Subscription {
            filter: filter("tenants/acme/devices/sensor-0042/#"),
            options: opts(QoS::AtMostOnce),
        },
        Subscription {
            filter: filter("$share/workers/tenants/acme/jobs/+"),
            options: opts(QoS::ExactlyOnce),
        },
    ];
    let mut properties = Properties::default();
    if version == ProtocolVersion::V5 {
        properties.subscription_identifiers = vec![17];
    }
    Packet::Subscribe(Subscribe {
        packet_id: pid(9),
        subscriptions,
        properties,
    })
}

/// Benches encode and decode of `packet` under `group/name`.
fn encode_decode(c: &mut Criterion, group: &str, name: &str, packet: &Packet, v: ProtocolVersion) {
    let mut wire = BytesMut::new();
    packet.encode(v, &mut wire).unwrap();
    let wire = wire.freeze();
    // A round trip check, so a codec regression cannot hide behind a fast
    // but wrong figure.
    let back = decode(&mut BytesMut::from(&wire[..]), v, MAX_PACKET_SIZE)
        .unwrap()
        .expect("whole packet");
    assert_eq!(&back, packet, "{group}/{name} does not round-trip");

    let mut g = c.benchmark_group(group);
    g.throughput(Throughput::Bytes(wire.len() as u64));
    let mut out = BytesMut::with_capacity(wire.len());
    g.bench_function(format!("encode/{name}"), |b| {
        b.iter(|| {
            out.clear();
            black_box(packet).encode(v, &mut out).unwrap();
            black_box(&out);
        });
    });
    g.bench_function(format!("decode/{name}"), |b| {
        b.iter_batched_ref(
            || BytesMut::from(&wire[..]),
            |buf| decode(black_box(buf), v, MAX_PACKET_SIZE).unwrap(),
            BatchSize::SmallInput,
        );
    });
    g.finish();
}

fn bench_publish(c: &mut Criterion) {
    let v5 = ProtocolVersion::V5;
    encode_decode(
        c,
        "publish",
        "qos0_16B_v311",
        &publish_qos0(16),
        ProtocolVersion::V311,
    );
    encode_decode(c, "publish", "qos0_16B_v5", &publish_qos0(16), v5);
    encode_decode(c, "publish", "qos0_1KiB_v5", &publish_qos0(1024), v5);
    encode_decode(c, "publish", "qos1_1KiB_v5_props", &publish_qos1_v5(), v5);
}

fn bench_connect(c: &mut Criterion) {
    for (name, v) in [("v311", ProtocolVersion::V311), ("v5", ProtocolVersion::V5)] {
        encode_decode(c, "connect", name, &connect(v), v);
    }
}

fn bench_subscribe(c: &mut Criterion) {
    for (name, v) in [
        ("3_filters_v311", ProtocolVersion::V311),
        ("3_filters_v5", ProtocolVersion::V5),
    ] {
        encode_decode(c, "subscribe", name, &subscribe(v), v);
    }
}

criterion_group!(benches, bench_publish, bench_connect, bench_subscribe);
criterion_main!(benches);
