//! Packet types and the framing around them (2.1): [`decode`] splits one
//! packet off a buffer, [`Packet::encode`] writes one.
//!
//! Each packet lives in its own file with its `read` (body after the fixed
//! header) and `write` (body without the fixed header).

use bytes::{BufMut, BytesMut};

use crate::byte_enum::byte_enum;
use crate::codec::{MAX_VARINT, Reader, Varint, put_varint, scan_varint, varint_size};
use crate::error::{EncodeError, Error};

mod ack;
mod auth;
mod connack;
mod connect;
mod disconnect;
mod list;
mod ping;
mod puback;
mod pubcomp;
mod publish;
mod pubrec;
mod pubrel;
mod suback;
mod subscribe;
mod unsuback;
mod unsubscribe;

pub use auth::Auth;
pub use connack::ConnAck;
pub use connect::{Connect, LastWill};
pub use disconnect::Disconnect;
pub use puback::PubAck;
pub use pubcomp::PubComp;
pub use publish::Publish;
pub use pubrec::PubRec;
pub use pubrel::PubRel;
pub use suback::SubAck;
pub use subscribe::{RetainHandling, Subscribe, Subscription, SubscriptionOptions};
pub use unsuback::UnsubAck;
pub use unsubscribe::Unsubscribe;

/// A non-zero packet identifier (2.2.1, MQTT-2.2.1-3).
pub type PacketId = std::num::NonZeroU16;

/// Largest possible packet: 1 type byte, 4 length bytes, 268,435,455 body.
pub const MAX_PACKET_SIZE: usize = 1 + 4 + 268_435_455;

/// The protocol version of a connection, from CONNECT's protocol level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProtocolVersion {
    /// MQTT 3.1.1, protocol level 4.
    V311,
    /// MQTT 5.0, protocol level 5.
    V5,
}

impl ProtocolVersion {
    /// The CONNECT protocol level byte.
    pub fn level(self) -> u8 {
        match self {
            ProtocolVersion::V311 => 4,
            ProtocolVersion::V5 => 5,
        }
    }
}

/// Quality of service (4.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum QoS {
    /// 0: at most once.
    AtMostOnce,
    /// 1: at least once.
    AtLeastOnce,
    /// 2: exactly once.
    ExactlyOnce,
}

impl QoS {
    /// The two-bit value.
    pub fn to_u8(self) -> u8 {
        match self {
            QoS::AtMostOnce => 0,
            QoS::AtLeastOnce => 1,
            QoS::ExactlyOnce => 2,
        }
    }

    /// The QoS for 0, 1 or 2; 3 is malformed (MQTT-3.3.1-4).
    pub fn from_u8(v: u8) -> Result<Self, Error> {
        match v {
            0 => Ok(QoS::AtMostOnce),
            1 => Ok(QoS::AtLeastOnce),
            2 => Ok(QoS::ExactlyOnce),
            _ => Err(Error::InvalidQoS(v)),
        }
    }
}

byte_enum! {
    /// The control packet type from the fixed header (2.1.2); its byte is
    /// the type nibble.
    PacketType {
        /// CONNECT.
        Connect = 1,
        /// CONNACK.
        ConnAck = 2,
        /// PUBLISH.
        Publish = 3,
        /// PUBACK.
        PubAck = 4,
        /// PUBREC.
        PubRec = 5,
        /// PUBREL.
        PubRel = 6,
        /// PUBCOMP.
        PubComp = 7,
        /// SUBSCRIBE.
        Subscribe = 8,
        /// SUBACK.
        SubAck = 9,
        /// UNSUBSCRIBE.
        Unsubscribe = 10,
        /// UNSUBACK.
        UnsubAck = 11,
        /// PINGREQ.
        PingReq = 12,
        /// PINGRESP.
        PingResp = 13,
        /// DISCONNECT.
        Disconnect = 14,
        /// AUTH, MQTT 5 only.
        Auth = 15,
    }
}

impl PacketType {
    /// The type of a fixed header's type nibble: 0, and AUTH outside MQTT
    /// 5, are reserved.
    fn from_nibble(v: u8, version: ProtocolVersion) -> Result<Self, Error> {
        Self::from_u8(v)
            .filter(|&t| t != PacketType::Auth || version == ProtocolVersion::V5)
            .ok_or(Error::ReservedPacketType(v))
    }

    /// The flags the spec fixes for this type (2.1.3); PUBLISH has none.
    fn fixed_flags(self) -> Option<u8> {
        match self {
            PacketType::Publish => None,
            // MQTT-3.6.1-1, MQTT-3.8.1-1, MQTT-3.10.1-1
            PacketType::PubRel | PacketType::Subscribe | PacketType::Unsubscribe => Some(0b0010),
            _ => Some(0),
        }
    }
}

/// Any MQTT control packet, for either protocol version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet {
    /// CONNECT (3.1). Boxed: it is by far the largest packet and is seen
    /// once per connection.
    Connect(Box<Connect>),
    /// CONNACK (3.2).
    ConnAck(ConnAck),
    /// PUBLISH (3.3).
    Publish(Publish),
    /// PUBACK (3.4).
    PubAck(PubAck),
    /// PUBREC (3.5).
    PubRec(PubRec),
    /// PUBREL (3.6).
    PubRel(PubRel),
    /// PUBCOMP (3.7).
    PubComp(PubComp),
    /// SUBSCRIBE (3.8).
    Subscribe(Subscribe),
    /// SUBACK (3.9).
    SubAck(SubAck),
    /// UNSUBSCRIBE (3.10).
    Unsubscribe(Unsubscribe),
    /// UNSUBACK (3.11).
    UnsubAck(UnsubAck),
    /// PINGREQ (3.12).
    PingReq,
    /// PINGRESP (3.13).
    PingResp,
    /// DISCONNECT (3.14).
    Disconnect(Disconnect),
    /// AUTH (3.15), MQTT 5 only.
    Auth(Auth),
}

/// Decodes one packet from the front of `buf`.
///
/// - `Ok(None)`: not a whole packet yet; nothing is consumed, and room for
///   the rest is reserved once its size is known.
/// - `Ok(Some(_))`: exactly that packet's bytes were consumed; binary fields
///   are zero-copy slices of them.
/// - `Err(_)`: the connection must be closed; answer with
///   `ReasonCode::from(&err)` where the protocol allows.
///
/// `max_packet_size` bounds the whole packet (fixed header included, as
/// Maximum Packet Size does in 3.1.2.11.4) and is checked as soon as the
/// remaining length is known, before anything is buffered.
///
/// CONNECT is decoded by its own protocol level whatever `version` says;
/// pass the resulting [`Connect::protocol`] for the rest of the connection.
pub fn decode(
    buf: &mut BytesMut,
    version: ProtocolVersion,
    max_packet_size: usize,
) -> Result<Option<Packet>, Error> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    let packet_type = PacketType::from_nibble(first >> 4, version)?;
    let flags = first & 0x0F;
    // MQTT-2.1.3-1
    if packet_type
        .fixed_flags()
        .is_some_and(|expected| flags != expected)
    {
        return Err(Error::InvalidHeaderFlags {
            packet: packet_type,
            flags,
        });
    }
    let after_type = buf.get(1..).unwrap_or_default();
    let (remaining, len_bytes) = match scan_varint(after_type)? {
        Varint::Incomplete => return Ok(None),
        Varint::Done(remaining, used) => (remaining, used),
    };
    let remaining = usize::try_from(remaining).map_err(|_| Error::MalformedVariableInteger)?;
    let header = 1 + len_bytes;
    let size = header + remaining;
    if size > max_packet_size {
        return Err(Error::PacketTooLarge {
            size,
            max: max_packet_size,
        });
    }
    if buf.len() < size {
        buf.reserve(size - buf.len());
        return Ok(None);
    }
    let mut frame = buf.split_to(size).freeze();
    let body = frame.split_off(header);
    let r = Reader::new(body);
    read_body(packet_type, flags, version, r).map(Some)
}

fn read_body(
    packet_type: PacketType,
    flags: u8,
    version: ProtocolVersion,
    mut r: Reader,
) -> Result<Packet, Error> {
    let packet = match packet_type {
        PacketType::Connect => Packet::Connect(Box::new(Connect::read(&mut r)?)),
        PacketType::ConnAck => Packet::ConnAck(ConnAck::read(&mut r, version)?),
        PacketType::Publish => Packet::Publish(Publish::read(&mut r, flags, version)?),
        PacketType::PubAck => Packet::PubAck(PubAck::read(&mut r, version)?),
        PacketType::PubRec => Packet::PubRec(PubRec::read(&mut r, version)?),
        PacketType::PubRel => Packet::PubRel(PubRel::read(&mut r, version)?),
        PacketType::PubComp => Packet::PubComp(PubComp::read(&mut r, version)?),
        PacketType::Subscribe => Packet::Subscribe(Subscribe::read(&mut r, version)?),
        PacketType::SubAck => Packet::SubAck(SubAck::read(&mut r, version)?),
        PacketType::Unsubscribe => Packet::Unsubscribe(Unsubscribe::read(&mut r, version)?),
        PacketType::UnsubAck => Packet::UnsubAck(UnsubAck::read(&mut r, version)?),
        PacketType::PingReq => Packet::PingReq,
        PacketType::PingResp => Packet::PingResp,
        PacketType::Disconnect => Packet::Disconnect(Disconnect::read(&mut r, version)?),
        PacketType::Auth => Packet::Auth(Auth::read(&mut r, version)?),
    };
    r.finish()?;
    Ok(packet)
}

impl Packet {
    /// This packet's type.
    pub fn packet_type(&self) -> PacketType {
        match self {
            Packet::Connect(_) => PacketType::Connect,
            Packet::ConnAck(_) => PacketType::ConnAck,
            Packet::Publish(_) => PacketType::Publish,
            Packet::PubAck(_) => PacketType::PubAck,
            Packet::PubRec(_) => PacketType::PubRec,
            Packet::PubRel(_) => PacketType::PubRel,
            Packet::PubComp(_) => PacketType::PubComp,
            Packet::Subscribe(_) => PacketType::Subscribe,
            Packet::SubAck(_) => PacketType::SubAck,
            Packet::Unsubscribe(_) => PacketType::Unsubscribe,
            Packet::UnsubAck(_) => PacketType::UnsubAck,
            Packet::PingReq => PacketType::PingReq,
            Packet::PingResp => PacketType::PingResp,
            Packet::Disconnect(_) => PacketType::Disconnect,
            Packet::Auth(_) => PacketType::Auth,
        }
    }

    /// Appends this packet, encoded for `version`, to `dst`; no size limit
    /// beyond the protocol's own.
    ///
    /// MQTT 5-only content (properties, reason codes other than those 3.1.1
    /// has) is dropped or mapped for [`ProtocolVersion::V311`]; AUTH cannot
    /// be encoded for 3.1.1. On error `dst` is unchanged.
    pub fn encode(&self, version: ProtocolVersion, dst: &mut BytesMut) -> Result<(), EncodeError> {
        self.encode_limited(version, MAX_PACKET_SIZE, dst)
    }

    /// Like [`Packet::encode`], but refuses a packet larger than
    /// `max_packet_size` bytes, the receiver's Maximum Packet Size
    /// (MQTT-3.1.2-24, MQTT-3.2.2-15).
    pub fn encode_limited(
        &self,
        version: ProtocolVersion,
        max_packet_size: usize,
        dst: &mut BytesMut,
    ) -> Result<(), EncodeError> {
        let mut body = BytesMut::new();
        let flags = match self {
            Packet::Connect(p) => p.write(version, &mut body)?,
            Packet::ConnAck(p) => p.write(version, &mut body)?,
            Packet::Publish(p) => p.write(version, &mut body)?,
            Packet::PubAck(p) => p.write(version, &mut body)?,
            Packet::PubRec(p) => p.write(version, &mut body)?,
            Packet::PubRel(p) => p.write(version, &mut body)?,
            Packet::PubComp(p) => p.write(version, &mut body)?,
            Packet::Subscribe(p) => p.write(version, &mut body)?,
            Packet::SubAck(p) => p.write(version, &mut body)?,
            Packet::Unsubscribe(p) => p.write(version, &mut body)?,
            Packet::UnsubAck(p) => p.write(version, &mut body)?,
            Packet::PingReq | Packet::PingResp => ping::write(),
            Packet::Disconnect(p) => p.write(version, &mut body)?,
            Packet::Auth(p) => p.write(version, &mut body)?,
        };
        // PUBLISH payloads skip the scratch buffer.
        let payload: &[u8] = match self {
            Packet::Publish(p) => &p.payload,
            _ => &[],
        };
        let remaining = body.len() + payload.len();
        let size = 1 + varint_size(remaining) + remaining;
        let limit = max_packet_size.min(MAX_PACKET_SIZE);
        let too_large = || EncodeError::PacketTooLarge { size, max: limit };
        if size > limit || u32::try_from(remaining).map_or(true, |r| r > MAX_VARINT) {
            return Err(too_large());
        }
        dst.reserve(size);
        dst.put_u8((self.packet_type().to_u8() << 4) | flags);
        put_varint(dst, remaining);
        dst.extend_from_slice(&body);
        dst.extend_from_slice(payload);
        Ok(())
    }
}

macro_rules! into_packet {
    ($($variant:ident($ty:ty) => $wrap:expr,)*) => {
        $(impl From<$ty> for Packet {
            fn from(p: $ty) -> Self {
                Packet::$variant($wrap(p))
            }
        })*
    };
}

into_packet! {
    Connect(Connect) => Box::new,
    ConnAck(ConnAck) => std::convert::identity,
    Publish(Publish) => std::convert::identity,
    PubAck(PubAck) => std::convert::identity,
    PubRec(PubRec) => std::convert::identity,
    PubRel(PubRel) => std::convert::identity,
    PubComp(PubComp) => std::convert::identity,
    Subscribe(Subscribe) => std::convert::identity,
    SubAck(SubAck) => std::convert::identity,
    Unsubscribe(Unsubscribe) => std::convert::identity,
    UnsubAck(UnsubAck) => std::convert::identity,
    Disconnect(Disconnect) => std::convert::identity,
    Auth(Auth) => std::convert::identity,
}

/// A packet's body: everything after the fixed header. Each packet's file
/// implements it; [`Packet::encode_limited`] adds the fixed header.
pub(crate) trait Body {
    /// Writes the body for `version`; returns the fixed header flags.
    fn write(&self, version: ProtocolVersion, dst: &mut BytesMut) -> Result<u8, EncodeError>;
}

/// The packet type and property context of a packet, for the helpers that
/// read and write the layouts several packets share (ack.rs, list.rs).
pub(crate) type Kind = (PacketType, crate::properties::PropertyContext);

/// Implements `read` and [`Body`] for the packet `$name` of a shared layout:
/// `$read(r, version, kind)` reads it, `$write(packet, version, kind, dst)`
/// writes it, with `kind` its [`Kind`].
macro_rules! impl_codec {
    ($name:ident, read = $read:expr, write = $write:expr) => {
        impl $name {
            pub(crate) const KIND: $crate::packet::Kind = (
                $crate::packet::PacketType::$name,
                $crate::properties::PropertyContext::$name,
            );

            pub(crate) fn read(
                r: &mut $crate::codec::Reader,
                version: $crate::packet::ProtocolVersion,
            ) -> Result<Self, $crate::error::Error> {
                $read(r, version, Self::KIND)
            }
        }

        impl $crate::packet::Body for $name {
            fn write(
                &self,
                version: $crate::packet::ProtocolVersion,
                dst: &mut bytes::BytesMut,
            ) -> Result<u8, $crate::error::EncodeError> {
                $write(self, version, Self::KIND, dst)
            }
        }
    };
}
pub(crate) use impl_codec;

/// Reads a packet identifier that must not be 0 (MQTT-2.2.1-3).
pub(crate) fn read_packet_id(r: &mut Reader, packet: PacketType) -> Result<PacketId, Error> {
    PacketId::new(r.u16()?).ok_or(Error::ZeroPacketId(packet))
}

#[cfg(test)]
mod interop_tests;
#[cfg(test)]
pub(crate) mod strategy;
#[cfg(test)]
mod tests;
#[cfg(test)]
pub(crate) mod testutil;
