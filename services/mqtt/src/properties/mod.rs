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
        self.present().is_empty()
    }

    /// The identifiers of the properties that are set, in identifier order,
    /// once each.
    pub fn present(&self) -> Vec<PropertyId> {
        use PropertyId as P;
        let flags = [
            (
                P::PayloadFormatIndicator,
                self.payload_format_indicator.is_some(),
            ),
            (
                P::MessageExpiryInterval,
                self.message_expiry_interval.is_some(),
            ),
            (P::ContentType, self.content_type.is_some()),
            (P::ResponseTopic, self.response_topic.is_some()),
            (P::CorrelationData, self.correlation_data.is_some()),
            (
                P::SubscriptionIdentifier,
                !self.subscription_identifiers.is_empty(),
            ),
            (
                P::SessionExpiryInterval,
                self.session_expiry_interval.is_some(),
            ),
            (
                P::AssignedClientIdentifier,
                self.assigned_client_identifier.is_some(),
            ),
            (P::ServerKeepAlive, self.server_keep_alive.is_some()),
            (
                P::AuthenticationMethod,
                self.authentication_method.is_some(),
            ),
            (P::AuthenticationData, self.authentication_data.is_some()),
            (
                P::RequestProblemInformation,
                self.request_problem_information.is_some(),
            ),
            (P::WillDelayInterval, self.will_delay_interval.is_some()),
            (
                P::RequestResponseInformation,
                self.request_response_information.is_some(),
            ),
            (P::ResponseInformation, self.response_information.is_some()),
            (P::ServerReference, self.server_reference.is_some()),
            (P::ReasonString, self.reason_string.is_some()),
            (P::ReceiveMaximum, self.receive_maximum.is_some()),
            (P::TopicAliasMaximum, self.topic_alias_maximum.is_some()),
            (P::TopicAlias, self.topic_alias.is_some()),
            (P::MaximumQoS, self.maximum_qos.is_some()),
            (P::RetainAvailable, self.retain_available.is_some()),
            (P::UserProperty, !self.user_properties.is_empty()),
            (P::MaximumPacketSize, self.maximum_packet_size.is_some()),
            (
                P::WildcardSubscriptionAvailable,
                self.wildcard_subscription_available.is_some(),
            ),
            (
                P::SubscriptionIdentifierAvailable,
                self.subscription_identifier_available.is_some(),
            ),
            (
                P::SharedSubscriptionAvailable,
                self.shared_subscription_available.is_some(),
            ),
        ];
        flags
            .into_iter()
            .filter(|&(_, set)| set)
            .map(|(id, _)| id)
            .collect()
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
        use PropertyId as P;
        fn id(b: &mut BytesMut, p: PropertyId) {
            b.put_u8(p.to_u8());
        }
        if let Some(v) = self.payload_format_indicator {
            id(b, P::PayloadFormatIndicator);
            b.put_u8(u8::from(v == PayloadFormat::Utf8));
        }
        if let Some(v) = self.message_expiry_interval {
            id(b, P::MessageExpiryInterval);
            b.put_u32(v);
        }
        if let Some(v) = &self.content_type {
            id(b, P::ContentType);
            put_string(b, v)?;
        }
        if let Some(v) = &self.response_topic {
            id(b, P::ResponseTopic);
            put_string(b, v.as_str())?;
        }
        if let Some(v) = &self.correlation_data {
            id(b, P::CorrelationData);
            put_binary(b, v)?;
        }
        for &v in &self.subscription_identifiers {
            id(b, P::SubscriptionIdentifier);
            put_varint(b, usize::try_from(v).unwrap_or(0));
        }
        if let Some(v) = self.session_expiry_interval {
            id(b, P::SessionExpiryInterval);
            b.put_u32(v);
        }
        if let Some(v) = &self.assigned_client_identifier {
            id(b, P::AssignedClientIdentifier);
            put_string(b, v)?;
        }
        if let Some(v) = self.server_keep_alive {
            id(b, P::ServerKeepAlive);
            b.put_u16(v);
        }
        if let Some(v) = &self.authentication_method {
            id(b, P::AuthenticationMethod);
            put_string(b, v)?;
        }
        if let Some(v) = &self.authentication_data {
            id(b, P::AuthenticationData);
            put_binary(b, v)?;
        }
        if let Some(v) = self.request_problem_information {
            id(b, P::RequestProblemInformation);
            b.put_u8(u8::from(v));
        }
        if let Some(v) = self.will_delay_interval {
            id(b, P::WillDelayInterval);
            b.put_u32(v);
        }
        if let Some(v) = self.request_response_information {
            id(b, P::RequestResponseInformation);
            b.put_u8(u8::from(v));
        }
        if let Some(v) = &self.response_information {
            id(b, P::ResponseInformation);
            put_string(b, v)?;
        }
        if let Some(v) = &self.server_reference {
            id(b, P::ServerReference);
            put_string(b, v)?;
        }
        if let Some(v) = &self.reason_string {
            id(b, P::ReasonString);
            put_string(b, v)?;
        }
        if let Some(v) = self.receive_maximum {
            id(b, P::ReceiveMaximum);
            b.put_u16(v.get());
        }
        if let Some(v) = self.topic_alias_maximum {
            id(b, P::TopicAliasMaximum);
            b.put_u16(v);
        }
        if let Some(v) = self.topic_alias {
            id(b, P::TopicAlias);
            b.put_u16(v.get());
        }
        if let Some(v) = self.maximum_qos {
            id(b, P::MaximumQoS);
            b.put_u8(v.to_u8());
        }
        if let Some(v) = self.retain_available {
            id(b, P::RetainAvailable);
            b.put_u8(u8::from(v));
        }
        // Already in wire form, identifiers included, checked when built.
        b.extend_from_slice(self.user_properties.wire());
        if let Some(v) = self.maximum_packet_size {
            id(b, P::MaximumPacketSize);
            b.put_u32(v.get());
        }
        let flags = [
            (
                P::WildcardSubscriptionAvailable,
                self.wildcard_subscription_available,
            ),
            (
                P::SubscriptionIdentifierAvailable,
                self.subscription_identifier_available,
            ),
            (
                P::SharedSubscriptionAvailable,
                self.shared_subscription_available,
            ),
        ];
        for (p, v) in flags {
            if let Some(v) = v {
                id(b, p);
                b.put_u8(u8::from(v));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
