use bytes::Bytes;
use proptest::prelude::*;

use super::*;
use crate::packet::strategy::properties;

const ALL_CONTEXTS: [PropertyContext; 14] = [
    PropertyContext::Connect,
    PropertyContext::ConnAck,
    PropertyContext::Publish,
    PropertyContext::Will,
    PropertyContext::PubAck,
    PropertyContext::PubRec,
    PropertyContext::PubRel,
    PropertyContext::PubComp,
    PropertyContext::Subscribe,
    PropertyContext::SubAck,
    PropertyContext::Unsubscribe,
    PropertyContext::UnsubAck,
    PropertyContext::Disconnect,
    PropertyContext::Auth,
];

/// Reads `body` (without its length) as a property list.
fn read(body: &[u8], ctx: PropertyContext) -> Result<Properties, Error> {
    let mut bytes = BytesMut::new();
    put_varint(&mut bytes, body.len());
    bytes.extend_from_slice(body);
    let mut r = Reader::new(bytes.freeze());
    let p = Properties::read(&mut r, ctx)?;
    r.finish()?;
    Ok(p)
}

#[test]
fn allowed_table_spot_checks() {
    use PropertyContext as C;
    use PropertyId as P;
    let allowed_count = |id: PropertyId| ALL_CONTEXTS.iter().filter(|&&c| id.allowed_in(c)).count();
    assert_eq!(allowed_count(P::UserProperty), 14);
    assert_eq!(allowed_count(P::ReasonString), 9);
    assert_eq!(allowed_count(P::WillDelayInterval), 1);
    assert!(P::TopicAlias.allowed_in(C::Publish));
    assert!(!P::TopicAlias.allowed_in(C::Will));
    assert!(P::SessionExpiryInterval.allowed_in(C::Disconnect));
    assert!(!P::SessionExpiryInterval.allowed_in(C::Will));
    assert!(P::ServerReference.allowed_in(C::Disconnect));
    assert!(!P::ReceiveMaximum.allowed_in(C::Disconnect));
    assert!(P::AuthenticationData.allowed_in(C::Auth));
    assert!(!P::ReasonString.allowed_in(C::Connect));
}

#[test]
fn byte_exact_mixed_properties() {
    let mut p = Properties {
        message_expiry_interval: Some(60),
        subscription_identifiers: vec![1, 268_435_455],
        ..Properties::default()
    };
    p.user_properties.push("k", "v").unwrap();
    p.user_properties.push("k", "w").unwrap();
    let mut b = BytesMut::new();
    p.write(PropertyContext::Publish, &mut b).unwrap();
    let expected: &[u8] = &[
        26, 0x02, 0, 0, 0, 60, 0x0B, 0x01, 0x0B, 0xFF, 0xFF, 0xFF, 0x7F, 0x26, 0, 1, b'k', 0, 1,
        b'v', 0x26, 0, 1, b'k', 0, 1, b'w',
    ];
    assert_eq!(&b[..], expected);
    assert_eq!(read(&expected[1..], PropertyContext::Publish).unwrap(), p);
}

#[test]
fn duplicates_rejected_except_user_property_and_publish_subscription_ids() {
    let twice = [0x02, 0, 0, 0, 1, 0x02, 0, 0, 0, 2];
    assert_eq!(
        read(&twice, PropertyContext::Publish),
        Err(Error::DuplicateProperty(PropertyId::MessageExpiryInterval))
    );
    let sub_ids = [0x0B, 1, 0x0B, 2];
    assert_eq!(
        read(&sub_ids, PropertyContext::Publish)
            .unwrap()
            .subscription_identifiers,
        [1, 2]
    );
    assert_eq!(
        read(&sub_ids, PropertyContext::Subscribe),
        Err(Error::DuplicateProperty(PropertyId::SubscriptionIdentifier))
    );
    let users = [0x26, 0, 1, b'a', 0, 0, 0x26, 0, 1, b'a', 0, 0];
    assert_eq!(
        read(&users, PropertyContext::Disconnect)
            .unwrap()
            .user_properties
            .len(),
        2
    );
    let p = Properties {
        subscription_identifiers: vec![1, 2],
        ..Properties::default()
    };
    assert_eq!(
        p.write(PropertyContext::Subscribe, &mut BytesMut::new()),
        Err(EncodeError::DuplicateProperty(
            PropertyId::SubscriptionIdentifier
        ))
    );
}

#[test]
fn not_allowed_unknown_and_bad_values() {
    use PropertyContext as C;
    use PropertyId as P;
    assert_eq!(
        read(&[0x23, 0, 1], C::Connect),
        Err(Error::PropertyNotAllowed {
            property: P::TopicAlias,
            context: C::Connect
        })
    );
    assert_eq!(read(&[0x04, 0], C::Publish), Err(Error::UnknownProperty(4)));
    assert_eq!(
        read(&[0x80, 0x01], C::Publish),
        Err(Error::UnknownProperty(128))
    );
    let bad: [(&[u8], C, P); 9] = [
        (&[0x23, 0, 0], C::Publish, P::TopicAlias),
        (&[0x21, 0, 0], C::Connect, P::ReceiveMaximum),
        (&[0x27, 0, 0, 0, 0], C::ConnAck, P::MaximumPacketSize),
        (&[0x24, 2], C::ConnAck, P::MaximumQoS),
        (&[0x25, 2], C::ConnAck, P::RetainAvailable),
        (&[0x17, 7], C::Connect, P::RequestProblemInformation),
        (&[0x01, 2], C::Will, P::PayloadFormatIndicator),
        (&[0x0B, 0], C::Subscribe, P::SubscriptionIdentifier),
        (&[0x08, 0, 1, b'#'], C::Publish, P::ResponseTopic),
    ];
    for (body, ctx, id) in bad {
        assert_eq!(
            read(body, ctx),
            Err(Error::InvalidPropertyValue(id)),
            "{id:?}"
        );
    }
    // A length running past the packet.
    let mut r = Reader::new(Bytes::from_static(&[5, 0x01]));
    assert_eq!(
        Properties::read(&mut r, C::Publish),
        Err(Error::UnexpectedEnd)
    );
    // A value cut short inside the list.
    assert_eq!(read(&[0x02, 0, 0], C::Publish), Err(Error::UnexpectedEnd));
    let mut p = Properties {
        maximum_qos: Some(QoS::ExactlyOnce),
        ..Properties::default()
    };
    assert_eq!(
        p.write(C::ConnAck, &mut BytesMut::new()),
        Err(EncodeError::InvalidPropertyValue(P::MaximumQoS))
    );
    p.maximum_qos = None;
    p.topic_alias = NonZeroU16::new(1);
    assert_eq!(
        p.write(C::Will, &mut BytesMut::new()),
        Err(EncodeError::PropertyNotAllowed {
            property: P::TopicAlias,
            context: C::Will
        })
    );
}

fn context_and_properties() -> impl Strategy<Value = (PropertyContext, Properties)> {
    prop::sample::select(ALL_CONTEXTS.to_vec()).prop_flat_map(|ctx| (Just(ctx), properties(ctx)))
}

proptest! {
    #[test]
    fn properties_round_trip_in_every_context((ctx, p) in context_and_properties()) {
        let mut b = BytesMut::new();
        p.write(ctx, &mut b).unwrap();
        let mut r = Reader::new(b.freeze());
        prop_assert_eq!(Properties::read(&mut r, ctx).unwrap(), p);
        prop_assert!(r.is_empty());
    }
}

#[test]
fn user_properties_split_by_other_properties_keep_their_order() {
    // k=v, Content Type "c", x=y, a=b: two runs of pairs.
    let bytes: &[u8] = &[
        0x26, 0, 1, b'k', 0, 1, b'v', 0x03, 0, 1, b'c', 0x26, 0, 1, b'x', 0, 1, b'y', 0x26, 0, 1,
        b'a', 0, 1, b'b',
    ];
    let p = read(bytes, PropertyContext::Publish).unwrap();
    assert_eq!(p.user_properties, [("k", "v"), ("x", "y"), ("a", "b")]);
    assert_eq!(p.content_type.as_deref(), Some("c"));
    assert_eq!(p.user_properties.wire_len(), 21);
}

#[test]
fn contiguous_user_properties_are_a_slice_of_the_packet() {
    let mut list = vec![0x02, 0, 0, 0, 9];
    for _ in 0..1000 {
        list.extend_from_slice(&[0x26, 0, 1, b'k', 0, 1, b'v']);
    }
    list.extend_from_slice(&[0x03, 0, 1, b'c']);
    let mut packet = BytesMut::new();
    put_varint(&mut packet, list.len());
    packet.extend_from_slice(&list);
    let packet = packet.freeze();
    let range = packet.as_ptr_range();
    let mut r = Reader::new(packet.clone());
    let p = Properties::read(&mut r, PropertyContext::Publish).unwrap();
    assert_eq!(p.user_properties.len(), 1000);
    assert!(range.contains(&p.user_properties.iter().next().unwrap().0.as_ptr()));
}
