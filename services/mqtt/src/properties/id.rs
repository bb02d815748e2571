//! Property identifiers and the table of which packet may carry which
//! (2.2.2.2).

use crate::byte_enum::byte_enum;

/// Where a property list sits; decides which properties are allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PropertyContext {
    /// CONNECT variable header.
    Connect,
    /// CONNACK.
    ConnAck,
    /// PUBLISH.
    Publish,
    /// The Will Properties in the CONNECT payload (3.1.3.2).
    Will,
    /// PUBACK.
    PubAck,
    /// PUBREC.
    PubRec,
    /// PUBREL.
    PubRel,
    /// PUBCOMP.
    PubComp,
    /// SUBSCRIBE.
    Subscribe,
    /// SUBACK.
    SubAck,
    /// UNSUBSCRIBE.
    Unsubscribe,
    /// UNSUBACK.
    UnsubAck,
    /// DISCONNECT.
    Disconnect,
    /// AUTH.
    Auth,
}

byte_enum! {
    /// A property identifier (2.2.2.2).
    PropertyId {
        /// 0x01 Payload Format Indicator.
        PayloadFormatIndicator = 0x01,
        /// 0x02 Message Expiry Interval.
        MessageExpiryInterval = 0x02,
        /// 0x03 Content Type.
        ContentType = 0x03,
        /// 0x08 Response Topic.
        ResponseTopic = 0x08,
        /// 0x09 Correlation Data.
        CorrelationData = 0x09,
        /// 0x0B Subscription Identifier.
        SubscriptionIdentifier = 0x0B,
        /// 0x11 Session Expiry Interval.
        SessionExpiryInterval = 0x11,
        /// 0x12 Assigned Client Identifier.
        AssignedClientIdentifier = 0x12,
        /// 0x13 Server Keep Alive.
        ServerKeepAlive = 0x13,
        /// 0x15 Authentication Method.
        AuthenticationMethod = 0x15,
        /// 0x16 Authentication Data.
        AuthenticationData = 0x16,
        /// 0x17 Request Problem Information.
        RequestProblemInformation = 0x17,
        /// 0x18 Will Delay Interval.
        WillDelayInterval = 0x18,
        /// 0x19 Request Response Information.
        RequestResponseInformation = 0x19,
        /// 0x1A Response Information.
        ResponseInformation = 0x1A,
        /// 0x1C Server Reference.
        ServerReference = 0x1C,
        /// 0x1F Reason String.
        ReasonString = 0x1F,
        /// 0x21 Receive Maximum.
        ReceiveMaximum = 0x21,
        /// 0x22 Topic Alias Maximum.
        TopicAliasMaximum = 0x22,
        /// 0x23 Topic Alias.
        TopicAlias = 0x23,
        /// 0x24 Maximum QoS.
        MaximumQoS = 0x24,
        /// 0x25 Retain Available.
        RetainAvailable = 0x25,
        /// 0x26 User Property.
        UserProperty = 0x26,
        /// 0x27 Maximum Packet Size.
        MaximumPacketSize = 0x27,
        /// 0x28 Wildcard Subscription Available.
        WildcardSubscriptionAvailable = 0x28,
        /// 0x29 Subscription Identifier Available.
        SubscriptionIdentifierAvailable = 0x29,
        /// 0x2A Shared Subscription Available.
        SharedSubscriptionAvailable = 0x2A,
    }
}

impl PropertyId {
    /// The property for an identifier (a variable byte integer on the
    /// wire), if MQTT 5 defines one.
    pub fn from_u32(id: u32) -> Option<Self> {
        u8::try_from(id).ok().and_then(Self::from_u8)
    }

    /// Whether the property may appear in `ctx` (the table in 2.2.2.2).
    pub fn allowed_in(self, ctx: PropertyContext) -> bool {
        use PropertyContext as C;
        use PropertyId as P;
        match self {
            P::PayloadFormatIndicator
            | P::MessageExpiryInterval
            | P::ContentType
            | P::ResponseTopic
            | P::CorrelationData => matches!(ctx, C::Publish | C::Will),
            P::SubscriptionIdentifier => matches!(ctx, C::Publish | C::Subscribe),
            P::SessionExpiryInterval => matches!(ctx, C::Connect | C::ConnAck | C::Disconnect),
            P::AssignedClientIdentifier
            | P::ServerKeepAlive
            | P::ResponseInformation
            | P::MaximumQoS
            | P::RetainAvailable
            | P::WildcardSubscriptionAvailable
            | P::SubscriptionIdentifierAvailable
            | P::SharedSubscriptionAvailable => ctx == C::ConnAck,
            P::AuthenticationMethod | P::AuthenticationData => {
                matches!(ctx, C::Connect | C::ConnAck | C::Auth)
            }
            P::RequestProblemInformation | P::RequestResponseInformation => ctx == C::Connect,
            P::WillDelayInterval => ctx == C::Will,
            P::ServerReference => matches!(ctx, C::ConnAck | C::Disconnect),
            P::ReasonString => !matches!(
                ctx,
                C::Connect | C::Publish | C::Will | C::Subscribe | C::Unsubscribe
            ),
            P::ReceiveMaximum | P::TopicAliasMaximum | P::MaximumPacketSize => {
                matches!(ctx, C::Connect | C::ConnAck)
            }
            P::TopicAlias => ctx == C::Publish,
            P::UserProperty => true,
        }
    }
}
