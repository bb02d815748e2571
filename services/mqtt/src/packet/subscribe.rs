//! SUBSCRIBE (3.8): topic filters with their subscription options.

use bytes::{BufMut, BytesMut};

use super::{PacketId, ProtocolVersion, QoS, list};
use crate::codec::{Reader, put_string};
use crate::error::{EncodeError, Error};
use crate::properties::Properties;
use crate::topic::TopicFilter;

const NO_LOCAL: u8 = 0b0000_0100;
const RETAIN_AS_PUBLISHED: u8 = 0b0000_1000;
/// Bits 7-6 in 5.0 (MQTT-3.8.3-5).
const V5_RESERVED: u8 = 0b1100_0000;
/// Bits 7-2 in 3.1.1 (MQTT-3-8.3-4).
const V311_RESERVED: u8 = 0b1111_1100;

/// When retained messages are sent for a new subscription (3.8.3.1).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum RetainHandling {
    /// 0: send retained messages at the time of the subscribe.
    #[default]
    SendOnSubscribe,
    /// 1: send them only if the subscription did not already exist.
    SendIfNew,
    /// 2: do not send them.
    DoNotSend,
}

impl RetainHandling {
    fn to_u8(self) -> u8 {
        match self {
            RetainHandling::SendOnSubscribe => 0,
            RetainHandling::SendIfNew => 1,
            RetainHandling::DoNotSend => 2,
        }
    }
}

/// Subscription Options (3.8.3.1). 3.1.1 has only the QoS; the other
/// fields are dropped when encoding for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SubscriptionOptions {
    /// Maximum QoS.
    pub qos: QoS,
    /// No Local: not on shared subscriptions (MQTT-3.8.3-4).
    pub no_local: bool,
    /// Retain As Published.
    pub retain_as_published: bool,
    /// Retain Handling.
    pub retain_handling: RetainHandling,
}

impl SubscriptionOptions {
    /// Options with `qos` and everything else at its default.
    pub fn new(qos: QoS) -> Self {
        Self {
            qos,
            no_local: false,
            retain_as_published: false,
            retain_handling: RetainHandling::SendOnSubscribe,
        }
    }

    fn read(byte: u8, version: ProtocolVersion) -> Result<Self, Error> {
        let reserved = match version {
            ProtocolVersion::V311 => V311_RESERVED,
            ProtocolVersion::V5 => V5_RESERVED,
        };
        if byte & reserved != 0 {
            return Err(Error::SubscriptionOptionsReserved(byte));
        }
        let retain_handling = match (byte >> 4) & 0b11 {
            0 => RetainHandling::SendOnSubscribe,
            1 => RetainHandling::SendIfNew,
            2 => RetainHandling::DoNotSend,
            _ => return Err(Error::InvalidRetainHandling),
        };
        Ok(Self {
            qos: QoS::from_u8(byte & 0b11)?,
            no_local: byte & NO_LOCAL != 0,
            retain_as_published: byte & RETAIN_AS_PUBLISHED != 0,
            retain_handling,
        })
    }

    fn to_u8(self, version: ProtocolVersion) -> u8 {
        let mut byte = self.qos.to_u8();
        if version == ProtocolVersion::V5 {
            byte |= self.retain_handling.to_u8() << 4;
            if self.no_local {
                byte |= NO_LOCAL;
            }
            if self.retain_as_published {
                byte |= RETAIN_AS_PUBLISHED;
            }
        }
        byte
    }
}

/// One topic filter and its options.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Subscription {
    /// The filter, possibly a `$share/` shared subscription.
    pub filter: TopicFilter,
    /// Its options.
    pub options: SubscriptionOptions,
}

/// SUBSCRIBE (3.8).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscribe {
    /// Packet Identifier.
    pub packet_id: PacketId,
    /// At least one subscription (MQTT-3.8.3-2).
    pub subscriptions: Vec<Subscription>,
    /// SUBSCRIBE properties (MQTT 5): Subscription Identifier, User Property.
    pub properties: Properties,
}

impl Subscribe {
    /// A SUBSCRIBE of one `filter` with `options`, without properties.
    pub fn new(packet_id: PacketId, filter: TopicFilter, options: SubscriptionOptions) -> Self {
        Self {
            packet_id,
            subscriptions: vec![Subscription { filter, options }],
            properties: Properties::default(),
        }
    }
}

// MQTT-3.8.1-1: flags 0b0010.
list::list_packet!(Subscribe, subscriptions: Subscription, flags = 0b0010);

/// One subscription: a filter and its options byte.
fn read_entry(r: &mut Reader, version: ProtocolVersion) -> Result<Subscription, Error> {
    let filter = TopicFilter::parse(r.string()?).map_err(Error::InvalidTopicFilter)?;
    let options = SubscriptionOptions::read(r.u8()?, version)?;
    if options.no_local && filter.shared().is_some() {
        return Err(Error::NoLocalOnSharedSubscription); // MQTT-3.8.3-4
    }
    Ok(Subscription { filter, options })
}

fn write_entry(
    sub: &Subscription,
    version: ProtocolVersion,
    dst: &mut BytesMut,
) -> Result<(), EncodeError> {
    if version == ProtocolVersion::V5 && sub.options.no_local && sub.filter.shared().is_some() {
        return Err(EncodeError::NoLocalOnSharedSubscription);
    }
    put_string(dst, sub.filter.as_str())?;
    dst.put_u8(sub.options.to_u8(version));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::testutil::{V4, V5, assert_round_trip, decode_one};
    use crate::packet::{Packet, PacketType};
    use crate::topic::TopicError;

    fn sub(filter: &str, options: SubscriptionOptions) -> Subscription {
        Subscription {
            filter: TopicFilter::parse(filter).unwrap(),
            options,
        }
    }

    #[test]
    fn byte_exact_v311_and_v5() {
        let p = Packet::Subscribe(Subscribe {
            packet_id: PacketId::new(1).unwrap(),
            subscriptions: vec![sub("a/+", SubscriptionOptions::new(QoS::AtLeastOnce))],
            properties: Properties::default(),
        });
        let v4 = [0x82, 0x08, 0x00, 0x01, 0x00, 0x03, b'a', b'/', b'+', 0x01];
        assert_round_trip(&p, V4, &v4);
        let mut opts = SubscriptionOptions::new(QoS::ExactlyOnce);
        opts.no_local = true;
        opts.retain_as_published = true;
        opts.retain_handling = RetainHandling::DoNotSend;
        let p5 = Packet::Subscribe(Subscribe {
            packet_id: PacketId::new(2).unwrap(),
            subscriptions: vec![sub("x", opts)],
            properties: Properties::default(),
        });
        let v5 = [0x82, 0x07, 0x00, 0x02, 0x00, 0x00, 0x01, b'x', 0x2E];
        assert_round_trip(&p5, V5, &v5);
    }

    #[test]
    fn rejects_invalid_subscribes() {
        let v4 = |tail: &[u8]| {
            let mut b = vec![0x82, u8::try_from(2 + tail.len()).unwrap(), 0x00, 0x01];
            b.extend_from_slice(tail);
            b
        };
        assert_eq!(
            decode_one(&v4(&[]), V4),
            Err(Error::EmptyPayload(PacketType::Subscribe))
        );
        assert_eq!(
            decode_one(&v4(&[0, 1, b'a', 0x04]), V4),
            Err(Error::SubscriptionOptionsReserved(0x04))
        );
        assert_eq!(
            decode_one(&v4(&[0, 1, b'a', 0x03]), V4),
            Err(Error::InvalidQoS(3))
        );
        assert_eq!(
            decode_one(&v4(&[0, 3, b'a', b'#', b'b', 0x00]), V4),
            Err(Error::InvalidTopicFilter(
                TopicError::MisplacedMultiLevelWildcard
            ))
        );
        assert_eq!(
            decode_one(&[0x82, 0x06, 0x00, 0x00, 0x00, 0x01, b'a', 0x00], V4),
            Err(Error::ZeroPacketId(PacketType::Subscribe))
        );
        let v5 = |opts: u8, filter: &[u8]| {
            let mut b = vec![
                0x82,
                u8::try_from(6 + filter.len()).unwrap(),
                0x00,
                0x01,
                0x00,
            ];
            b.extend_from_slice(&[0x00, u8::try_from(filter.len()).unwrap()]);
            b.extend_from_slice(filter);
            b.push(opts);
            b
        };
        assert_eq!(
            decode_one(&v5(0x30, b"a"), V5),
            Err(Error::InvalidRetainHandling)
        );
        assert_eq!(
            decode_one(&v5(0x40, b"a"), V5),
            Err(Error::SubscriptionOptionsReserved(0x40))
        );
        assert_eq!(
            decode_one(&v5(0x04, b"$share/g/a"), V5),
            Err(Error::NoLocalOnSharedSubscription)
        );
        assert!(decode_one(&v5(0x04, b"a"), V5).is_ok());
    }
}
