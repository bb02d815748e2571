//! proptest strategies producing valid packets for a given version: every
//! value generated here must encode, and decode back equal.

use std::num::{NonZeroU16, NonZeroU32};

use bytes::Bytes;
use proptest::collection::vec;
use proptest::option::of;
use proptest::prelude::*;

use super::*;
use crate::codec::MAX_VARINT;
use crate::properties::{PayloadFormat, Properties, PropertyContext, PropertyId, UserProperties};
use crate::reason::ReasonCode;
use crate::topic::{TopicFilter, TopicName};

/// Short strings with multibyte characters; `\PC` never yields U+0000.
pub(crate) fn string() -> impl Strategy<Value = String> {
    prop_oneof![Just(String::new()), "\\PC{1,6}", "[a-z]{1,4}"]
}

pub(crate) fn bytes() -> impl Strategy<Value = Bytes> {
    vec(any::<u8>(), 0..12).prop_map(Bytes::from)
}

fn level() -> impl Strategy<Value = String> {
    prop_oneof!["[a-z]{0,3}", "[€日üa]{1,2}", Just("$SYS".to_owned())]
}

pub(crate) fn topic_name() -> impl Strategy<Value = TopicName> {
    vec(level(), 1..4).prop_filter_map("valid name", |l| TopicName::parse(l.join("/")).ok())
}

pub(crate) fn topic_filter() -> impl Strategy<Value = TopicFilter> {
    let flevel = prop_oneof![3 => level(), 1 => Just("+".to_owned())];
    (vec(flevel, 1..4), any::<bool>(), of("[a-z€]{1,3}")).prop_filter_map(
        "valid filter",
        |(mut levels, hash, share)| {
            if hash {
                levels.push("#".to_owned());
            }
            let mut s = levels.join("/");
            if let Some(group) = share {
                s = format!("$share/{group}/{s}");
            }
            TopicFilter::parse(s).ok()
        },
    )
}

pub(crate) fn packet_id() -> impl Strategy<Value = PacketId> {
    (1u16..).prop_map(|v| PacketId::new(v).unwrap())
}

fn qos() -> impl Strategy<Value = QoS> {
    prop_oneof![
        Just(QoS::AtMostOnce),
        Just(QoS::AtLeastOnce),
        Just(QoS::ExactlyOnce)
    ]
}

pub(crate) fn reason(packet: PacketType) -> impl Strategy<Value = ReasonCode> {
    let allowed: Vec<ReasonCode> = ReasonCode::ALL
        .iter()
        .copied()
        .filter(|c| c.allowed_in(packet))
        .collect();
    prop::sample::select(allowed)
}

/// Clears every property `ctx` may not carry, so the rest is encodable.
fn mask(mut p: Properties, ctx: PropertyContext) -> Properties {
    for id in p.present() {
        if id.allowed_in(ctx) {
            continue;
        }
        match id {
            PropertyId::PayloadFormatIndicator => p.payload_format_indicator = None,
            PropertyId::MessageExpiryInterval => p.message_expiry_interval = None,
            PropertyId::ContentType => p.content_type = None,
            PropertyId::ResponseTopic => p.response_topic = None,
            PropertyId::CorrelationData => p.correlation_data = None,
            PropertyId::SubscriptionIdentifier => p.subscription_identifiers.clear(),
            PropertyId::SessionExpiryInterval => p.session_expiry_interval = None,
            PropertyId::AssignedClientIdentifier => p.assigned_client_identifier = None,
            PropertyId::ServerKeepAlive => p.server_keep_alive = None,
            PropertyId::AuthenticationMethod => p.authentication_method = None,
            PropertyId::AuthenticationData => p.authentication_data = None,
            PropertyId::RequestProblemInformation => p.request_problem_information = None,
            PropertyId::WillDelayInterval => p.will_delay_interval = None,
            PropertyId::RequestResponseInformation => p.request_response_information = None,
            PropertyId::ResponseInformation => p.response_information = None,
            PropertyId::ServerReference => p.server_reference = None,
            PropertyId::ReasonString => p.reason_string = None,
            PropertyId::ReceiveMaximum => p.receive_maximum = None,
            PropertyId::TopicAliasMaximum => p.topic_alias_maximum = None,
            PropertyId::TopicAlias => p.topic_alias = None,
            PropertyId::MaximumQoS => p.maximum_qos = None,
            PropertyId::RetainAvailable => p.retain_available = None,
            PropertyId::UserProperty => p.user_properties.clear(),
            PropertyId::MaximumPacketSize => p.maximum_packet_size = None,
            PropertyId::WildcardSubscriptionAvailable => p.wildcard_subscription_available = None,
            PropertyId::SubscriptionIdentifierAvailable => {
                p.subscription_identifier_available = None;
            }
            PropertyId::SharedSubscriptionAvailable => p.shared_subscription_available = None,
        }
    }
    if ctx != PropertyContext::Publish {
        p.subscription_identifiers.truncate(1);
    }
    if ctx == PropertyContext::Connect && p.authentication_method.is_none() {
        p.authentication_data = None;
    }
    p
}

/// Random properties valid in `ctx`.
pub(crate) fn properties(ctx: PropertyContext) -> impl Strategy<Value = Properties> {
    let format = prop_oneof![Just(PayloadFormat::Unspecified), Just(PayloadFormat::Utf8)];
    let a = (
        of(format),
        of(any::<u32>()),
        of(string()),
        of(topic_name()),
        of(bytes()),
        vec(1..=MAX_VARINT, 0..3),
        of(any::<u32>()),
        of(string()),
        of(any::<u16>()),
        of(string()),
        of(bytes()),
        of(any::<bool>()),
    );
    let b = (
        of(any::<u32>()),
        of(any::<bool>()),
        of(string()),
        of(string()),
        of(string()),
        of(any::<NonZeroU16>()),
        of(any::<u16>()),
        of(any::<NonZeroU16>()),
        of(prop_oneof![Just(QoS::AtMostOnce), Just(QoS::AtLeastOnce)]),
        of(any::<bool>()),
        vec((string(), string()), 0..3),
        of(any::<NonZeroU32>()),
    );
    let c = (of(any::<bool>()), of(any::<bool>()), of(any::<bool>()));
    (a, b, c).prop_map(move |(a, b, c)| {
        let p = Properties {
            payload_format_indicator: a.0,
            message_expiry_interval: a.1,
            content_type: a.2,
            response_topic: a.3,
            correlation_data: a.4,
            subscription_identifiers: a.5,
            session_expiry_interval: a.6,
            assigned_client_identifier: a.7,
            server_keep_alive: a.8,
            authentication_method: a.9,
            authentication_data: a.10,
            request_problem_information: a.11,
            will_delay_interval: b.0,
            request_response_information: b.1,
            response_information: b.2,
            server_reference: b.3,
            reason_string: b.4,
            receive_maximum: b.5,
            topic_alias_maximum: b.6,
            topic_alias: b.7,
            maximum_qos: b.8,
            retain_available: b.9,
            // `string()` has no U+0000, so every pair is sendable.
            user_properties: UserProperties::from_pairs(b.10).unwrap_or_default(),
            maximum_packet_size: b.11,
            wildcard_subscription_available: c.0,
            subscription_identifier_available: c.1,
            shared_subscription_available: c.2,
        };
        mask(p, ctx)
    })
}

/// Properties for `ctx` on 5.0, none on 3.1.1.
fn props(version: ProtocolVersion, ctx: PropertyContext) -> BoxedStrategy<Properties> {
    match version {
        ProtocolVersion::V5 => properties(ctx).boxed(),
        ProtocolVersion::V311 => Just(Properties::default()).boxed(),
    }
}

fn connect(v: ProtocolVersion) -> impl Strategy<Value = Packet> {
    let will = (
        topic_name(),
        bytes(),
        qos(),
        any::<bool>(),
        props(v, PropertyContext::Will),
    )
        .prop_map(|(topic, payload, qos, retain, properties)| LastWill {
            topic,
            payload,
            qos,
            retain,
            properties,
        });
    let fields = (
        any::<bool>(),
        any::<u16>(),
        string(),
        of(will),
        of(string()),
        of(bytes()),
    );
    (fields, props(v, PropertyContext::Connect)).prop_map(move |(f, properties)| {
        let (clean_start, keep_alive, client_id, will, mut username, password) = f;
        if v == ProtocolVersion::V311 && password.is_some() && username.is_none() {
            username = Some(String::new()); // MQTT-3.1.2-22
        }
        Packet::Connect(Box::new(Connect {
            protocol: v,
            clean_start,
            keep_alive,
            client_id,
            will,
            username,
            password,
            properties,
        }))
    })
}

fn connack(v: ProtocolVersion) -> impl Strategy<Value = Packet> {
    let code = match v {
        ProtocolVersion::V311 => prop::sample::select(
            (0..=5)
                .filter_map(ReasonCode::from_v311_connack_code)
                .collect::<Vec<_>>(),
        )
        .boxed(),
        ProtocolVersion::V5 => reason(PacketType::ConnAck).boxed(),
    };
    (any::<bool>(), code, props(v, PropertyContext::ConnAck)).prop_map(
        |(sp, reason_code, properties)| {
            let session_present = sp && !reason_code.is_error();
            Packet::ConnAck(ConnAck {
                session_present,
                reason_code,
                properties,
            })
        },
    )
}

fn publish(v: ProtocolVersion) -> impl Strategy<Value = Packet> {
    let fields = (
        any::<bool>(),
        qos(),
        any::<bool>(),
        of(topic_name()),
        packet_id(),
        bytes(),
    );
    (
        fields,
        props(v, PropertyContext::Publish),
        any::<NonZeroU16>(),
    )
        .prop_map(
            move |((dup, qos, retain, topic, id, payload), mut properties, alias)| {
                let topic = match (topic, v) {
                    (Some(t), _) => Some(t),
                    (None, ProtocolVersion::V5) => {
                        properties.topic_alias.get_or_insert(alias);
                        None
                    }
                    (None, ProtocolVersion::V311) => TopicName::parse("t").ok(),
                };
                let qos0 = qos == QoS::AtMostOnce;
                Packet::Publish(Publish {
                    dup: dup && !qos0,
                    qos,
                    retain,
                    topic,
                    packet_id: (!qos0).then_some(id),
                    payload,
                    properties,
                })
            },
        )
}

/// PUBACK/PUBREC/PUBREL/PUBCOMP parts for `packet`.
fn ack(
    v: ProtocolVersion,
    packet: PacketType,
    ctx: PropertyContext,
) -> BoxedStrategy<(PacketId, ReasonCode, Properties)> {
    let code = match v {
        ProtocolVersion::V311 => Just(ReasonCode::Success).boxed(),
        ProtocolVersion::V5 => reason(packet).boxed(),
    };
    (packet_id(), code, props(v, ctx)).boxed()
}

fn subscribe(v: ProtocolVersion) -> impl Strategy<Value = Packet> {
    let rh = prop_oneof![
        Just(RetainHandling::SendOnSubscribe),
        Just(RetainHandling::SendIfNew),
        Just(RetainHandling::DoNotSend)
    ];
    let sub = (topic_filter(), qos(), any::<bool>(), any::<bool>(), rh).prop_map(
        move |(filter, qos, nl, rap, rh)| {
            let mut options = SubscriptionOptions::new(qos);
            if v == ProtocolVersion::V5 {
                options.no_local = nl && filter.shared().is_none();
                options.retain_as_published = rap;
                options.retain_handling = rh;
            }
            Subscription { filter, options }
        },
    );
    (
        packet_id(),
        vec(sub, 1..4),
        props(v, PropertyContext::Subscribe),
    )
        .prop_map(|(packet_id, subscriptions, properties)| {
            Packet::Subscribe(Subscribe {
                packet_id,
                subscriptions,
                properties,
            })
        })
}

fn suback(v: ProtocolVersion) -> impl Strategy<Value = Packet> {
    let code = match v {
        ProtocolVersion::V311 => prop::sample::select(vec![
            ReasonCode::Success,
            ReasonCode::GrantedQoS1,
            ReasonCode::GrantedQoS2,
            ReasonCode::UnspecifiedError,
        ])
        .boxed(),
        ProtocolVersion::V5 => reason(PacketType::SubAck).boxed(),
    };
    (
        packet_id(),
        vec(code, 1..4),
        props(v, PropertyContext::SubAck),
    )
        .prop_map(|(packet_id, reason_codes, properties)| {
            Packet::SubAck(SubAck {
                packet_id,
                reason_codes,
                properties,
            })
        })
}

fn unsubscribe(v: ProtocolVersion) -> impl Strategy<Value = Packet> {
    (
        packet_id(),
        vec(topic_filter(), 1..4),
        props(v, PropertyContext::Unsubscribe),
    )
        .prop_map(|(packet_id, filters, properties)| {
            Packet::Unsubscribe(Unsubscribe {
                packet_id,
                filters,
                properties,
            })
        })
}

fn unsuback(v: ProtocolVersion) -> impl Strategy<Value = Packet> {
    let codes = match v {
        ProtocolVersion::V311 => Just(Vec::new()).boxed(),
        ProtocolVersion::V5 => vec(reason(PacketType::UnsubAck), 1..4).boxed(),
    };
    (packet_id(), codes, props(v, PropertyContext::UnsubAck)).prop_map(
        |(packet_id, reason_codes, properties)| {
            Packet::UnsubAck(UnsubAck {
                packet_id,
                reason_codes,
                properties,
            })
        },
    )
}

fn disconnect(v: ProtocolVersion) -> impl Strategy<Value = Packet> {
    let code = match v {
        ProtocolVersion::V311 => Just(ReasonCode::Success).boxed(),
        ProtocolVersion::V5 => reason(PacketType::Disconnect).boxed(),
    };
    (code, props(v, PropertyContext::Disconnect)).prop_map(|(reason_code, properties)| {
        Packet::Disconnect(Disconnect {
            reason_code,
            properties,
        })
    })
}

fn auth() -> impl Strategy<Value = Packet> {
    (reason(PacketType::Auth), properties(PropertyContext::Auth)).prop_map(
        |(reason_code, properties)| {
            Packet::Auth(Auth {
                reason_code,
                properties,
            })
        },
    )
}

/// Any packet valid for `v`, every kind equally likely.
pub(crate) fn packet(v: ProtocolVersion) -> BoxedStrategy<Packet> {
    let common = prop_oneof![
        connect(v),
        connack(v),
        publish(v),
        ack(v, PacketType::PubAck, PropertyContext::PubAck).prop_map(
            |(packet_id, reason_code, properties)| Packet::PubAck(PubAck {
                packet_id,
                reason_code,
                properties
            })
        ),
        ack(v, PacketType::PubRec, PropertyContext::PubRec).prop_map(
            |(packet_id, reason_code, properties)| Packet::PubRec(PubRec {
                packet_id,
                reason_code,
                properties
            })
        ),
        ack(v, PacketType::PubRel, PropertyContext::PubRel).prop_map(
            |(packet_id, reason_code, properties)| Packet::PubRel(PubRel {
                packet_id,
                reason_code,
                properties
            })
        ),
        ack(v, PacketType::PubComp, PropertyContext::PubComp).prop_map(
            |(packet_id, reason_code, properties)| Packet::PubComp(PubComp {
                packet_id,
                reason_code,
                properties
            })
        ),
        subscribe(v),
        suback(v),
        unsubscribe(v),
        unsuback(v),
        Just(Packet::PingReq),
        Just(Packet::PingResp),
        disconnect(v),
    ];
    match v {
        ProtocolVersion::V311 => common.boxed(),
        ProtocolVersion::V5 => prop_oneof![14 => common, 1 => auth()].boxed(),
    }
}
