//! Byte-exact tests against a real client and broker: traffic between
//! mosquitto_pub/mosquitto_sub 2.0.11 and mosquitto 2.0.11, captured on
//! loopback through a logging TCP proxy. Client to server is `C>`, server to
//! client `S<`.

use super::testutil::{V4, V5, decode_one, encode};
use super::*;
use crate::properties::PropertyContext;
use crate::reason::ReasonCode;

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// One captured packet: direction and session, version, bytes, and whether
/// our encoder produces exactly the same bytes (we write properties in
/// identifier order, mosquitto does not; the packet is still equal once decoded).
struct Capture {
    what: &'static str,
    version: ProtocolVersion,
    hex: &'static str,
    canonical: bool,
}

const CAPTURES: &[Capture] = &[
    // mosquitto_pub -V mqttv311 -i pub4 -t a/b -m hello -q 1 -u user -P pass
    //   --will-topic w --will-payload bye --will-qos 1 --will-retain -k 30
    Capture {
        what: "C> CONNECT 3.1.1 will+auth",
        version: V4,
        hex: "102400044d51545404ee001e0004707562340001770003627965000475736572000470617373",
        canonical: true,
    },
    Capture {
        what: "S< CONNACK 3.1.1",
        version: V4,
        hex: "20020000",
        canonical: true,
    },
    Capture {
        what: "C> PUBLISH 3.1.1 QoS 1",
        version: V4,
        hex: "320c0003612f62000168656c6c6f",
        canonical: true,
    },
    Capture {
        what: "S< PUBACK 3.1.1",
        version: V4,
        hex: "40020001",
        canonical: true,
    },
    Capture {
        what: "C> DISCONNECT 3.1.1",
        version: V4,
        hex: "e000",
        canonical: true,
    },
    // mosquitto_sub -V mqttv5 -i sub5 -t a/+ -q 2 -C 1
    //   -D subscribe subscription-identifier 7
    Capture {
        what: "C> CONNECT 5 receive max",
        version: V5,
        hex: "101400044d5154540502003c03210001000473756235",
        canonical: true,
    },
    Capture {
        what: "S< CONNACK 5 with properties",
        version: V5,
        hex: "200900000622000a210014",
        canonical: false,
    },
    Capture {
        what: "C> SUBSCRIBE 5 subscription id",
        version: V5,
        hex: "820b0001020b070003612f2b02",
        canonical: true,
    },
    Capture {
        what: "S< SUBACK 5",
        version: V5,
        hex: "900400010002",
        canonical: true,
    },
    Capture {
        what: "S< PUBLISH 5 QoS 2 forwarded",
        version: V5,
        hex: "34250003612f6200011b0b072600016b00017603000a746578742f706c61696e020000003c6869",
        canonical: false,
    },
    Capture {
        what: "C> PUBREC 5",
        version: V5,
        hex: "50020001",
        canonical: true,
    },
    Capture {
        what: "S< PUBREL 5",
        version: V5,
        hex: "62020001",
        canonical: true,
    },
    Capture {
        what: "C> PUBCOMP 5",
        version: V5,
        hex: "70020001",
        canonical: true,
    },
    // mosquitto_pub -V mqttv5 -i pub5 -t a/b -m hi -q 2
    //   -D connect session-expiry-interval 30 -D publish user-property k v
    //   -D publish content-type text/plain -D publish message-expiry-interval 60
    Capture {
        what: "C> CONNECT 5 session expiry",
        version: V5,
        hex: "101900044d5154540502003c08110000001e210014000470756235",
        canonical: true,
    },
    Capture {
        what: "C> PUBLISH 5 QoS 2 properties",
        version: V5,
        hex: "34230003612f620001192600016b00017603000a746578742f706c61696e020000003c6869",
        canonical: false,
    },
    Capture {
        what: "C> DISCONNECT 5",
        version: V5,
        hex: "e000",
        canonical: true,
    },
    // mosquitto_sub -V mqttv5 -i u5 -t 'x/#' -U 'x/#' -E
    Capture {
        what: "C> SUBSCRIBE 5",
        version: V5,
        hex: "82090001000003782f2300",
        canonical: true,
    },
    Capture {
        what: "S< SUBACK 5 QoS 0",
        version: V5,
        hex: "900400010000",
        canonical: true,
    },
    Capture {
        what: "C> UNSUBSCRIBE 5",
        version: V5,
        hex: "a2080002000003782f23",
        canonical: true,
    },
];

#[test]
fn captured_traffic_decodes_and_reencodes() {
    for c in CAPTURES {
        let bytes = hex(c.hex);
        let packet = decode_one(&bytes, c.version).unwrap_or_else(|e| panic!("{}: {e}", c.what));
        let again = encode(&packet, c.version);
        if c.canonical {
            assert_eq!(again, bytes, "{}", c.what);
        } else {
            assert_eq!(again.len(), bytes.len(), "{}", c.what);
            assert_eq!(decode_one(&again, c.version).unwrap(), packet, "{}", c.what);
        }
    }
}

#[test]
fn captured_fields() {
    let Packet::Connect(c) = decode_one(&hex(CAPTURES[0].hex), V4).unwrap() else {
        panic!("not CONNECT")
    };
    assert_eq!((c.client_id.as_str(), c.keep_alive), ("pub4", 30));
    assert_eq!(c.username.as_deref(), Some("user"));
    assert_eq!(c.password.as_deref(), Some(&b"pass"[..]));
    let will = c.will.as_ref().unwrap();
    assert_eq!((will.topic.as_str(), &will.payload[..]), ("w", &b"bye"[..]));
    assert_eq!((will.qos, will.retain), (QoS::AtLeastOnce, true));

    let Packet::ConnAck(ack) = decode_one(&hex(CAPTURES[6].hex), V5).unwrap() else {
        panic!("not CONNACK")
    };
    assert_eq!(ack.reason_code, ReasonCode::Success);
    assert_eq!(ack.properties.topic_alias_maximum, Some(10));
    assert_eq!(ack.properties.receive_maximum.map(|v| v.get()), Some(20));

    let Packet::Subscribe(sub) = decode_one(&hex(CAPTURES[7].hex), V5).unwrap() else {
        panic!("not SUBSCRIBE")
    };
    assert_eq!(sub.properties.subscription_identifiers, [7]);
    assert_eq!(sub.subscriptions[0].filter.as_str(), "a/+");
    assert_eq!(sub.subscriptions[0].options.qos, QoS::ExactlyOnce);

    let Packet::Publish(p) = decode_one(&hex(CAPTURES[9].hex), V5).unwrap() else {
        panic!("not PUBLISH")
    };
    assert_eq!(p.topic.as_ref().map(|t| t.as_str()), Some("a/b"));
    assert_eq!(
        (p.qos, p.packet_id.map(|i| i.get())),
        (QoS::ExactlyOnce, Some(1))
    );
    assert_eq!(&p.payload[..], b"hi");
    assert_eq!(p.properties.subscription_identifiers, [7]);
    assert_eq!(p.properties.content_type.as_deref(), Some("text/plain"));
    assert_eq!(p.properties.message_expiry_interval, Some(60));
    assert_eq!(p.properties.user_properties, [("k", "v")]);
    assert!(
        p.properties
            .present()
            .iter()
            .all(|id| id.allowed_in(PropertyContext::Publish))
    );
}
