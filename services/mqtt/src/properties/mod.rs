//! MQTT 5 properties (2.2.2) with the spec's allowed-per-packet table.
//!
//! One [`Properties`] struct serves every packet; [`PropertyId::allowed_in`]
//! is the table from 2.2.2.2, enforced on decode and on encode. Every
//! property may appear once, except User Property (anywhere) and
//! Subscription Identifier (repeated in PUBLISH only, 3.3.2.3.8).

use std::num::{NonZeroU16, NonZeroU32};

use bytes::{BufMut, Bytes, BytesMut};

use crate::codec::{MAX_VARINT, Reader, put_binary, put_string, put_varint};
use crate::error::{EncodeError, Error};
use crate::packet::{ProtocolVersion, QoS};
use crate::topic::TopicName;

mod id;
mod user;

pub use id::{PropertyContext, PropertyId};
pub use user::{Iter as UserPropertiesIter, UserProperties};

/// Payload Format Indicator values (3.3.2.3.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PayloadFormat {
    /// 0: unspecified bytes.
    Unspecified,
    /// 1: UTF-8 encoded character data.
    Utf8,
}

/// The properties of one packet, will or property list. Absent properties
/// are `None` or empty; see 3.x.2.x of the spec for each one's meaning.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Properties {
    /// 0x01 Payload Format Indicator.
    pub payload_format_indicator: Option<PayloadFormat>,
    /// 0x02 Message Expiry Interval, seconds.
    pub message_expiry_interval: Option<u32>,
    /// 0x03 Content Type.
    pub content_type: Option<String>,
    /// 0x08 Response Topic; must not contain wildcards (MQTT-3.3.2-14).
    pub response_topic: Option<TopicName>,
    /// 0x09 Correlation Data.
    pub correlation_data: Option<Bytes>,
    /// 0x0B Subscription Identifiers, 1..=268,435,455; at most one outside
    /// PUBLISH.
    pub subscription_identifiers: Vec<u32>,
    /// 0x11 Session Expiry Interval, seconds.
    pub session_expiry_interval: Option<u32>,
    /// 0x12 Assigned Client Identifier.
    pub assigned_client_identifier: Option<String>,
    /// 0x13 Server Keep Alive, seconds.
    pub server_keep_alive: Option<u16>,
    /// 0x15 Authentication Method.
    pub authentication_method: Option<String>,
    /// 0x16 Authentication Data.
    pub authentication_data: Option<Bytes>,
    /// 0x17 Request Problem Information.
    pub request_problem_information: Option<bool>,
    /// 0x18 Will Delay Interval, seconds.
    pub will_delay_interval: Option<u32>,
    /// 0x19 Request Response Information.
    pub request_response_information: Option<bool>,
    /// 0x1A Response Information.
    pub response_information: Option<String>,
    /// 0x1C Server Reference.
    pub server_reference: Option<String>,
    /// 0x1F Reason String.
    pub reason_string: Option<String>,
    /// 0x21 Receive Maximum; 0 is a Protocol Error.
    pub receive_maximum: Option<NonZeroU16>,
    /// 0x22 Topic Alias Maximum.
    pub topic_alias_maximum: Option<u16>,
    /// 0x23 Topic Alias; 0 is a Protocol Error (MQTT-3.3.2-8).
    pub topic_alias: Option<NonZeroU16>,
    /// 0x24 Maximum QoS: only 0 or 1 may be sent.
    pub maximum_qos: Option<QoS>,
    /// 0x25 Retain Available.
    pub retain_available: Option<bool>,
    /// 0x26 User Properties, in order, duplicates allowed; in wire form,
    /// so a clone shares them.
    pub user_properties: UserProperties,
    /// 0x27 Maximum Packet Size; 0 is a Protocol Error.
    pub maximum_packet_size: Option<NonZeroU32>,
    /// 0x28 Wildcard Subscription Available.
    pub wildcard_subscription_available: Option<bool>,
    /// 0x29 Subscription Identifiers Available.
    pub subscription_identifier_available: Option<bool>,
    /// 0x2A Shared Subscription Available.
    pub shared_subscription_available: Option<bool>,
}

/// Stores `value` in `slot` unless the property was already seen.
fn set_once<T>(slot: &mut Option<T>, value: T, id: PropertyId) -> Result<(), Error> {
    if slot.is_some() {
        return Err(Error::DuplicateProperty(id));
    }
    *slot = Some(value);
    Ok(())
}

fn read_bool(r: &mut Reader, id: PropertyId) -> Result<bool, Error> {
    match r.u8()? {
        0 => Ok(false),
        1 => Ok(true),
        _ => Err(Error::InvalidPropertyValue(id)),
    }
}

impl Properties {
    /// Whether no property is set.
    pub fn is_empty(&self) -> bool {
        self.values().next().is_none()
    }

    /// The identifiers of the properties that are set, in identifier order,
    /// once each.
    pub fn present(&self) -> Vec<PropertyId> {
        let mut ids: Vec<PropertyId> = self.values().map(|(id, _)| id).collect();
        // Several Subscription Identifiers are one property here.
        ids.dedup();
        ids
    }

    /// Every value that is set, in identifier order (the order they are
    /// written in), with the property it belongs to.
    fn values(&self) -> impl Iterator<Item = (PropertyId, Value<'_>)> {
        use PropertyId as P;
        use Value as V;
        let flag = |v: bool| V::Byte(u8::from(v));
        let format = |f: PayloadFormat| V::Byte(u8::from(f == PayloadFormat::Utf8));
        let first = [
            (
                P::PayloadFormatIndicator,
                self.payload_format_indicator.map(format),
            ),
            (
                P::MessageExpiryInterval,
                self.message_expiry_interval.map(V::Four),
            ),
            (P::ContentType, self.content_type.as_deref().map(V::Str)),
            (P::ResponseTopic, self.response_topic.as_ref().map(V::topic)),
            (
                P::CorrelationData,
                self.correlation_data.as_deref().map(V::Bin),
            ),
        ];
        let subscription_identifiers = self
            .subscription_identifiers
            .iter()
            .map(|&v| (P::SubscriptionIdentifier, Some(V::Varint(v))));
        let rest = [
            (
                P::SessionExpiryInterval,
                self.session_expiry_interval.map(V::Four),
            ),
            (
                P::AssignedClientIdentifier,
                self.assigned_client_identifier.as_deref().map(V::Str),
            ),
            (P::ServerKeepAlive, self.server_keep_alive.map(V::Two)),
            (
                P::AuthenticationMethod,
                self.authentication_method.as_deref().map(V::Str),
            ),
            (
                P::AuthenticationData,
                self.authentication_data.as_deref().map(V::Bin),
            ),
            (
                P::RequestProblemInformation,
                self.request_problem_information.map(flag),
            ),
            (P::WillDelayInterval, self.will_delay_interval.map(V::Four)),
            (
                P::RequestResponseInformation,
                self.request_response_information.map(flag),
            ),
            (
                P::ResponseInformation,
                self.response_information.as_deref().map(V::Str),
            ),
            (
                P::ServerReference,
                self.server_reference.as_deref().map(V::Str),
            ),
            (P::ReasonString, self.reason_string.as_deref().map(V::Str)),
            (
                P::ReceiveMaximum,
                self.receive_maximum.map(|v| V::Two(v.get())),
            ),
            (P::TopicAliasMaximum, self.topic_alias_maximum.map(V::Two)),
            (P::TopicAlias, self.topic_alias.map(|v| V::Two(v.get()))),
            (P::MaximumQoS, self.maximum_qos.map(|q| V::Byte(q.to_u8()))),
            (P::RetainAvailable, self.retain_available.map(flag)),
            (
                P::UserProperty,
                (!self.user_properties.is_empty()).then(|| V::Users(self.user_properties.wire())),
            ),
            (
                P::MaximumPacketSize,
                self.maximum_packet_size.map(|v| V::Four(v.get())),
            ),
            (
                P::WildcardSubscriptionAvailable,
                self.wildcard_subscription_available.map(flag),
            ),
            (
                P::SubscriptionIdentifierAvailable,
                self.subscription_identifier_available.map(flag),
            ),
            (
                P::SharedSubscriptionAvailable,
                self.shared_subscription_available.map(flag),
            ),
        ];
        first
            .into_iter()
            .chain(subscription_identifiers)
            .chain(rest)
            .filter_map(|(id, value)| Some((id, value?)))
    }

    /// Reads a property length and the properties it covers (2.2.2).
    pub(crate) fn read(r: &mut Reader, ctx: PropertyContext) -> Result<Self, Error> {
        let len = r.varint_len()?;
        let mut r = r.sub(len)?;
        let mut p = Properties::default();
        let mut users = user::Decoder::default();
        while !r.is_empty() {
            let start = r.peek_rest();
            // The identifier is a variable byte integer (2.2.2.2).
            let raw = r.varint()?;
            let id = PropertyId::from_u32(raw).ok_or(Error::UnknownProperty(raw))?;
            if !id.allowed_in(ctx) {
                return Err(Error::PropertyNotAllowed {
                    property: id,
                    context: ctx,
                });
            }
            if id == PropertyId::UserProperty {
                users.read_pair(&mut r, start)?;
            } else {
                p.read_one(&mut r, id, ctx)?;
                users.interrupt();
            }
        }
        p.user_properties = users.finish();
        Ok(p)
    }

    fn read_one(
        &mut self,
        r: &mut Reader,
        id: PropertyId,
        ctx: PropertyContext,
    ) -> Result<(), Error> {
        use PropertyId as P;
        match id {
            P::PayloadFormatIndicator => {
                let v = match r.u8()? {
                    0 => PayloadFormat::Unspecified,
                    1 => PayloadFormat::Utf8,
                    _ => return Err(Error::InvalidPropertyValue(id)),
                };
                set_once(&mut self.payload_format_indicator, v, id)
            }
            P::MessageExpiryInterval => set_once(&mut self.message_expiry_interval, r.u32()?, id),
            P::ContentType => set_once(&mut self.content_type, r.string()?, id),
            P::ResponseTopic => {
                // MQTT-3.3.2-14: a topic name, so no wildcards.
                let t =
                    TopicName::parse(r.string()?).map_err(|_| Error::InvalidPropertyValue(id))?;
                set_once(&mut self.response_topic, t, id)
            }
            P::CorrelationData => set_once(&mut self.correlation_data, r.binary()?, id),
            P::SubscriptionIdentifier => {
                let v = r.varint()?;
                if v == 0 {
                    return Err(Error::InvalidPropertyValue(id)); // 3.3.2.3.8
                }
                // Only PUBLISH may carry several (3.8.2.1.2).
                if ctx != PropertyContext::Publish && !self.subscription_identifiers.is_empty() {
                    return Err(Error::DuplicateProperty(id));
                }
                self.subscription_identifiers.push(v);
                Ok(())
            }
            P::SessionExpiryInterval => set_once(&mut self.session_expiry_interval, r.u32()?, id),
            P::AssignedClientIdentifier => {
                set_once(&mut self.assigned_client_identifier, r.string()?, id)
            }
            P::ServerKeepAlive => set_once(&mut self.server_keep_alive, r.u16()?, id),
            P::AuthenticationMethod => set_once(&mut self.authentication_method, r.string()?, id),
            P::AuthenticationData => set_once(&mut self.authentication_data, r.binary()?, id),
            P::RequestProblemInformation => {
                let v = read_bool(r, id)?;
                set_once(&mut self.request_problem_information, v, id)
            }
            P::WillDelayInterval => set_once(&mut self.will_delay_interval, r.u32()?, id),
            P::RequestResponseInformation => {
                let v = read_bool(r, id)?;
                set_once(&mut self.request_response_information, v, id)
            }
            P::ResponseInformation => set_once(&mut self.response_information, r.string()?, id),
            P::ServerReference => set_once(&mut self.server_reference, r.string()?, id),
            P::ReasonString => set_once(&mut self.reason_string, r.string()?, id),
            P::ReceiveMaximum => {
                let v = NonZeroU16::new(r.u16()?).ok_or(Error::InvalidPropertyValue(id))?;
                set_once(&mut self.receive_maximum, v, id)
            }
            P::TopicAliasMaximum => set_once(&mut self.topic_alias_maximum, r.u16()?, id),
            P::TopicAlias => {
                // MQTT-3.3.2-8
                let v = NonZeroU16::new(r.u16()?).ok_or(Error::InvalidPropertyValue(id))?;
                set_once(&mut self.topic_alias, v, id)
            }
            P::MaximumQoS => {
                let v = match r.u8()? {
                    0 => QoS::AtMostOnce,
                    1 => QoS::AtLeastOnce,
                    _ => return Err(Error::InvalidPropertyValue(id)), // 3.2.2.3.4
                };
                set_once(&mut self.maximum_qos, v, id)
            }
            P::RetainAvailable => {
                let v = read_bool(r, id)?;
                set_once(&mut self.retain_available, v, id)
            }
            // Collected by `read` into one buffer; never reached.
            P::UserProperty => Err(Error::PropertyNotAllowed {
                property: id,
                context: ctx,
            }),
            P::MaximumPacketSize => {
                let v = NonZeroU32::new(r.u32()?).ok_or(Error::InvalidPropertyValue(id))?;
                set_once(&mut self.maximum_packet_size, v, id)
            }
            P::WildcardSubscriptionAvailable => {
                let v = read_bool(r, id)?;
                set_once(&mut self.wildcard_subscription_available, v, id)
            }
            P::SubscriptionIdentifierAvailable => {
                let v = read_bool(r, id)?;
                set_once(&mut self.subscription_identifier_available, v, id)
            }
            P::SharedSubscriptionAvailable => {
                let v = read_bool(r, id)?;
                set_once(&mut self.shared_subscription_available, v, id)
            }
        }
    }

    /// Checks the properties against the table and value ranges before
    /// anything is written.
    pub(crate) fn validate(&self, ctx: PropertyContext) -> Result<(), EncodeError> {
        for id in self.present() {
            if !id.allowed_in(ctx) {
                return Err(EncodeError::PropertyNotAllowed {
                    property: id,
                    context: ctx,
                });
            }
        }
        let sub_ids = &self.subscription_identifiers;
        if ctx != PropertyContext::Publish && sub_ids.len() > 1 {
            return Err(EncodeError::DuplicateProperty(
                PropertyId::SubscriptionIdentifier,
            ));
        }
        if sub_ids.iter().any(|&v| v == 0 || v > MAX_VARINT) {
            return Err(EncodeError::InvalidPropertyValue(
                PropertyId::SubscriptionIdentifier,
            ));
        }
        if self.maximum_qos == Some(QoS::ExactlyOnce) {
            return Err(EncodeError::InvalidPropertyValue(PropertyId::MaximumQoS));
        }
        Ok(())
    }

    /// Reads the properties of a packet in `version`: they exist only in
    /// MQTT 5, so 3.1.1 gets an empty set and reads nothing.
    pub(crate) fn read_in(
        r: &mut Reader,
        version: ProtocolVersion,
        ctx: PropertyContext,
    ) -> Result<Self, Error> {
        match version {
            ProtocolVersion::V311 => Ok(Properties::default()),
            ProtocolVersion::V5 => Properties::read(r, ctx),
        }
    }

    /// Writes the properties for MQTT 5; 3.1.1 has none, so they are dropped.
    pub(crate) fn write_in(
        &self,
        version: ProtocolVersion,
        ctx: PropertyContext,
        dst: &mut BytesMut,
    ) -> Result<(), EncodeError> {
        match version {
            ProtocolVersion::V311 => Ok(()),
            ProtocolVersion::V5 => self.write(ctx, dst),
        }
    }

    /// Writes the property length and the properties, after [`Self::validate`].
    pub(crate) fn write(
        &self,
        ctx: PropertyContext,
        dst: &mut BytesMut,
    ) -> Result<(), EncodeError> {
        self.validate(ctx)?;
        let mut body = BytesMut::new();
        self.write_body(&mut body)?;
        put_varint(dst, body.len());
        dst.extend_from_slice(&body);
        Ok(())
    }

    fn write_body(&self, b: &mut BytesMut) -> Result<(), EncodeError> {
        for (id, value) in self.values() {
            value.put(id, b)?;
        }
        Ok(())
    }
}

/// A property value in its wire form (2.2.2.2): a Byte, a Two or Four Byte
/// Integer, a Variable Byte Integer, a UTF-8 Encoded String or Binary Data.
#[derive(Debug, Clone, Copy)]
enum Value<'a> {
    Byte(u8),
    Two(u16),
    Four(u32),
    Varint(u32),
    Str(&'a str),
    Bin(&'a [u8]),
    /// Every User Property, already in wire form, identifiers included
    /// (checked when built).
    Users(&'a [u8]),
}

impl<'a> Value<'a> {
    fn topic(t: &'a TopicName) -> Self {
        Value::Str(t.as_str())
    }

    /// Writes the identifier `id`, then the value (User Properties carry
    /// their own identifiers).
    fn put(self, id: PropertyId, b: &mut BytesMut) -> Result<(), EncodeError> {
        if !matches!(self, Value::Users(_)) {
            b.put_u8(id.to_u8());
        }
        match self {
            Value::Byte(v) => b.put_u8(v),
            Value::Two(v) => b.put_u16(v),
            Value::Four(v) => b.put_u32(v),
            Value::Varint(v) => put_varint(b, usize::try_from(v).unwrap_or(0)),
            Value::Str(v) => put_string(b, v)?,
            Value::Bin(v) => put_binary(b, v)?,
            Value::Users(wire) => b.extend_from_slice(wire),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
