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

/// Some or no `value` for the property `id` where `ctx` may carry it, else
/// always none, so that every generated set is encodable.
fn allowed<T: Clone + std::fmt::Debug + 'static>(
    ctx: PropertyContext,
    id: PropertyId,
    value: impl Strategy<Value = T> + 'static,
) -> BoxedStrategy<Option<T>> {
    if id.allowed_in(ctx) {
        of(value).boxed()
    } else {
        Just(None).boxed()
    }
}

/// Random properties valid in `ctx`.
pub(crate) fn properties(ctx: PropertyContext) -> impl Strategy<Value = Properties> {
    use PropertyId as P;
    let format = prop_oneof![Just(PayloadFormat::Unspecified), Just(PayloadFormat::Utf8)];
    let sub_ids = allowed(ctx, P::SubscriptionIdentifier, vec(1..=MAX_VARINT, 1..3));
    let a = (
        allowed(ctx, P::PayloadFormatIndicator, format),
        allowed(ctx, P::MessageExpiryInterval, any::<u32>()),
        allowed(ctx, P::ContentType, string()),
        allowed(ctx, P::ResponseTopic, topic_name()),
        allowed(ctx, P::CorrelationData, bytes()),
        sub_ids,
        allowed(ctx, P::SessionExpiryInterval, any::<u32>()),
        allowed(ctx, P::AssignedClientIdentifier, string()),
        allowed(ctx, P::ServerKeepAlive, any::<u16>()),
        allowed(ctx, P::AuthenticationMethod, string()),
        allowed(ctx, P::AuthenticationData, bytes()),
        allowed(ctx, P::RequestProblemInformation, any::<bool>()),
    );
    let b = (
        allowed(ctx, P::WillDelayInterval, any::<u32>()),
        allowed(ctx, P::RequestResponseInformation, any::<bool>()),
        allowed(ctx, P::ResponseInformation, string()),
        allowed(ctx, P::ServerReference, string()),
        allowed(ctx, P::ReasonString, string()),
        allowed(ctx, P::ReceiveMaximum, any::<NonZeroU16>()),
        allowed(ctx, P::TopicAliasMaximum, any::<u16>()),
        allowed(ctx, P::TopicAlias, any::<NonZeroU16>()),
        allowed(
            ctx,
            P::MaximumQoS,
            prop_oneof![Just(QoS::AtMostOnce), Just(QoS::AtLeastOnce)],
        ),
        allowed(ctx, P::RetainAvailable, any::<bool>()),
        vec((string(), string()), 0..3),
        allowed(ctx, P::MaximumPacketSize, any::<NonZeroU32>()),
    );
    let c = (
        allowed(ctx, P::WildcardSubscriptionAvailable, any::<bool>()),
        allowed(ctx, P::SubscriptionIdentifierAvailable, any::<bool>()),
        allowed(ctx, P::SharedSubscriptionAvailable, any::<bool>()),
    );
    (a, b, c).prop_map(move |(a, b, c)| {
        let mut subscription_identifiers = a.5.unwrap_or_default();
        if ctx != PropertyContext::Publish {
            subscription_identifiers.truncate(1);
        }
        // 3.1.2.11.10: no Authentication Data without a method.
        let authentication_data =
            a.10.filter(|_| ctx != PropertyContext::Connect || a.9.is_some());
        Properties {
            payload_format_indicator: a.0,
            message_expiry_interval: a.1,
            content_type: a.2,
            response_topic: a.3,
            correlation_data: a.4,
            subscription_identifiers,
            session_expiry_interval: a.6,
            assigned_client_identifier: a.7,
            server_keep_alive: a.8,
            authentication_method: a.9,
            authentication_data,
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
        }
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

/// PUBACK, PUBREC, PUBREL or PUBCOMP (`packet`), made by `from_parts`.
fn ack_packet<P: Into<Packet>>(
    v: ProtocolVersion,
    (packet, ctx): Kind,
    from_parts: fn(ack::AckParts) -> P,
) -> impl Strategy<Value = Packet> {
    let code = match v {
        ProtocolVersion::V311 => Just(ReasonCode::Success).boxed(),
        ProtocolVersion::V5 => reason(packet).boxed(),
    };
    (packet_id(), code, props(v, ctx)).prop_map(move |(packet_id, reason_code, properties)| {
        from_parts(ack::AckParts {
            packet_id,
            reason_code,
            properties,
        })
        .into()
    })
}

/// SUBSCRIBE, SUBACK, UNSUBSCRIBE or UNSUBACK: a packet identifier,
/// `entries` and properties for `ctx`, made by `from_parts`.
fn list_packet<T: std::fmt::Debug, P: Into<Packet>>(
    v: ProtocolVersion,
    ctx: PropertyContext,
    entries: impl Strategy<Value = Vec<T>>,
    from_parts: fn(list::ListParts<T>) -> P,
) -> impl Strategy<Value = Packet> {
    (packet_id(), entries, props(v, ctx)).prop_map(move |(packet_id, items, properties)| {
        from_parts(list::ListParts {
            packet_id,
            properties,
            items,
        })
        .into()
    })
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
    list_packet(
        v,
        PropertyContext::Subscribe,
        vec(sub, 1..4),
        Subscribe::from_parts,
    )
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
    list_packet(
        v,
        PropertyContext::SubAck,
        vec(code, 1..4),
        SubAck::from_parts,
    )
}

fn unsubscribe(v: ProtocolVersion) -> impl Strategy<Value = Packet> {
    list_packet(
        v,
        PropertyContext::Unsubscribe,
        vec(topic_filter(), 1..4),
        Unsubscribe::from_parts,
    )
}

fn unsuback(v: ProtocolVersion) -> impl Strategy<Value = Packet> {
    let codes = match v {
        ProtocolVersion::V311 => Just(Vec::new()).boxed(),
        ProtocolVersion::V5 => vec(reason(PacketType::UnsubAck), 1..4).boxed(),
    };
    list_packet(v, PropertyContext::UnsubAck, codes, UnsubAck::from_parts)
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
        ack_packet(v, PubAck::KIND, PubAck::from_parts),
        ack_packet(v, PubRec::KIND, PubRec::from_parts),
        ack_packet(v, PubRel::KIND, PubRel::from_parts),
        ack_packet(v, PubComp::KIND, PubComp::from_parts),
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
