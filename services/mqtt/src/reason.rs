//! Reason codes (2.4) and the one place errors become them.
//!
//! [`ReasonCode`] covers every MQTT 5 reason code; 3.1.1 has only CONNACK
//! return codes and SUBACK return codes, which [`ReasonCode::v311_connack_code`]
//! and the SUBACK codec derive from it.

use crate::byte_enum::byte_enum;
use crate::error::Error;
use crate::packet::PacketType;

byte_enum! {
    /// An MQTT 5 reason code (2.4).
    ///
    /// `0x00` is spelled `Success` here; the spec also calls it "Normal
    /// disconnection" (DISCONNECT) and "Granted QoS 0" (SUBACK), see the
    /// associated constants.
    ///
    /// Not `non_exhaustive`: the set is fixed by the spec, so callers may
    /// match exhaustively.
    ReasonCode {
        /// 0x00 Success / Normal disconnection / Granted QoS 0.
        Success = 0x00,
        /// 0x01 Granted QoS 1.
        GrantedQoS1 = 0x01,
        /// 0x02 Granted QoS 2.
        GrantedQoS2 = 0x02,
        /// 0x04 Disconnect with Will Message.
        DisconnectWithWillMessage = 0x04,
        /// 0x10 No matching subscribers.
        NoMatchingSubscribers = 0x10,
        /// 0x11 No subscription existed.
        NoSubscriptionExisted = 0x11,
        /// 0x18 Continue authentication.
        ContinueAuthentication = 0x18,
        /// 0x19 Re-authenticate.
        ReAuthenticate = 0x19,
        /// 0x80 Unspecified error.
        UnspecifiedError = 0x80,
        /// 0x81 Malformed Packet.
        MalformedPacket = 0x81,
        /// 0x82 Protocol Error.
        ProtocolError = 0x82,
        /// 0x83 Implementation specific error.
        ImplementationSpecificError = 0x83,
        /// 0x84 Unsupported Protocol Version.
        UnsupportedProtocolVersion = 0x84,
        /// 0x85 Client Identifier not valid.
        ClientIdentifierNotValid = 0x85,
        /// 0x86 Bad User Name or Password.
        BadUserNameOrPassword = 0x86,
        /// 0x87 Not authorized.
        NotAuthorized = 0x87,
        /// 0x88 Server unavailable.
        ServerUnavailable = 0x88,
        /// 0x89 Server busy.
        ServerBusy = 0x89,
        /// 0x8A Banned.
        Banned = 0x8A,
        /// 0x8B Server shutting down.
        ServerShuttingDown = 0x8B,
        /// 0x8C Bad authentication method.
        BadAuthenticationMethod = 0x8C,
        /// 0x8D Keep Alive timeout.
        KeepAliveTimeout = 0x8D,
        /// 0x8E Session taken over.
        SessionTakenOver = 0x8E,
        /// 0x8F Topic Filter invalid.
        TopicFilterInvalid = 0x8F,
        /// 0x90 Topic Name invalid.
        TopicNameInvalid = 0x90,
        /// 0x91 Packet Identifier in use.
        PacketIdentifierInUse = 0x91,
        /// 0x92 Packet Identifier not found.
        PacketIdentifierNotFound = 0x92,
        /// 0x93 Receive Maximum exceeded.
        ReceiveMaximumExceeded = 0x93,
        /// 0x94 Topic Alias invalid.
        TopicAliasInvalid = 0x94,
        /// 0x95 Packet too large.
        PacketTooLarge = 0x95,
        /// 0x96 Message rate too high.
        MessageRateTooHigh = 0x96,
        /// 0x97 Quota exceeded.
        QuotaExceeded = 0x97,
        /// 0x98 Administrative action.
        AdministrativeAction = 0x98,
        /// 0x99 Payload format invalid.
        PayloadFormatInvalid = 0x99,
        /// 0x9A Retain not supported.
        RetainNotSupported = 0x9A,
        /// 0x9B QoS not supported.
        QoSNotSupported = 0x9B,
        /// 0x9C Use another server.
        UseAnotherServer = 0x9C,
        /// 0x9D Server moved.
        ServerMoved = 0x9D,
        /// 0x9E Shared Subscriptions not supported.
        SharedSubscriptionsNotSupported = 0x9E,
        /// 0x9F Connection rate exceeded.
        ConnectionRateExceeded = 0x9F,
        /// 0xA0 Maximum connect time.
        MaximumConnectTime = 0xA0,
        /// 0xA1 Subscription Identifiers not supported.
        SubscriptionIdentifiersNotSupported = 0xA1,
        /// 0xA2 Wildcard Subscriptions not supported.
        WildcardSubscriptionsNotSupported = 0xA2,
    }
}

impl ReasonCode {
    /// 0x00 in DISCONNECT.
    pub const NORMAL_DISCONNECTION: ReasonCode = ReasonCode::Success;
    /// 0x00 in SUBACK.
    pub const GRANTED_QOS_0: ReasonCode = ReasonCode::Success;

    /// Whether this code reports a failure (0x80 and above, 2.4).
    pub fn is_error(self) -> bool {
        self.to_u8() >= 0x80
    }

    /// Whether the spec allows this code in `packet` (tables in 3.2.2.2,
    /// 3.4.2.1, 3.5.2.1, 3.6.2.1, 3.7.2.1, 3.9.3, 3.11.3, 3.14.2.1, 3.15.2.1).
    pub fn allowed_in(self, packet: PacketType) -> bool {
        use ReasonCode as R;
        match packet {
            PacketType::ConnAck => matches!(
                self,
                R::Success
                    | R::UnspecifiedError
                    | R::MalformedPacket
                    | R::ProtocolError
                    | R::ImplementationSpecificError
                    | R::UnsupportedProtocolVersion
                    | R::ClientIdentifierNotValid
                    | R::BadUserNameOrPassword
                    | R::NotAuthorized
                    | R::ServerUnavailable
                    | R::ServerBusy
                    | R::Banned
                    | R::BadAuthenticationMethod
                    | R::TopicNameInvalid
                    | R::PacketTooLarge
                    | R::QuotaExceeded
                    | R::PayloadFormatInvalid
                    | R::RetainNotSupported
                    | R::QoSNotSupported
                    | R::UseAnotherServer
                    | R::ServerMoved
                    | R::ConnectionRateExceeded
            ),
            PacketType::PubAck | PacketType::PubRec => matches!(
                self,
                R::Success
                    | R::NoMatchingSubscribers
                    | R::UnspecifiedError
                    | R::ImplementationSpecificError
                    | R::NotAuthorized
                    | R::TopicNameInvalid
                    | R::PacketIdentifierInUse
                    | R::QuotaExceeded
                    | R::PayloadFormatInvalid
            ),
            PacketType::PubRel | PacketType::PubComp => {
                matches!(self, R::Success | R::PacketIdentifierNotFound)
            }
            PacketType::SubAck => matches!(
                self,
                R::Success
                    | R::GrantedQoS1
                    | R::GrantedQoS2
                    | R::UnspecifiedError
                    | R::ImplementationSpecificError
                    | R::NotAuthorized
                    | R::TopicFilterInvalid
                    | R::PacketIdentifierInUse
                    | R::QuotaExceeded
                    | R::SharedSubscriptionsNotSupported
                    | R::SubscriptionIdentifiersNotSupported
                    | R::WildcardSubscriptionsNotSupported
            ),
            PacketType::UnsubAck => matches!(
                self,
                R::Success
                    | R::NoSubscriptionExisted
                    | R::UnspecifiedError
                    | R::ImplementationSpecificError
                    | R::NotAuthorized
                    | R::TopicFilterInvalid
                    | R::PacketIdentifierInUse
            ),
            PacketType::Disconnect => matches!(
                self,
                R::Success
                    | R::DisconnectWithWillMessage
                    | R::UnspecifiedError
                    | R::MalformedPacket
                    | R::ProtocolError
                    | R::ImplementationSpecificError
                    | R::NotAuthorized
                    | R::ServerBusy
                    | R::ServerShuttingDown
                    | R::KeepAliveTimeout
                    | R::SessionTakenOver
                    | R::TopicFilterInvalid
                    | R::TopicNameInvalid
                    | R::ReceiveMaximumExceeded
                    | R::TopicAliasInvalid
                    | R::PacketTooLarge
                    | R::MessageRateTooHigh
                    | R::QuotaExceeded
                    | R::AdministrativeAction
                    | R::PayloadFormatInvalid
                    | R::RetainNotSupported
                    | R::QoSNotSupported
                    | R::UseAnotherServer
                    | R::ServerMoved
                    | R::SharedSubscriptionsNotSupported
                    | R::ConnectionRateExceeded
                    | R::MaximumConnectTime
                    | R::SubscriptionIdentifiersNotSupported
                    | R::WildcardSubscriptionsNotSupported
            ),
            PacketType::Auth => matches!(
                self,
                R::Success | R::ContinueAuthentication | R::ReAuthenticate
            ),
            PacketType::Connect
            | PacketType::Publish
            | PacketType::Subscribe
            | PacketType::Unsubscribe
            | PacketType::PingReq
            | PacketType::PingResp => false,
        }
    }

    /// The MQTT 3.1.1 CONNACK return code (3.2.2.3) to send instead of this
    /// code. 3.1.1 has six; every other failure falls back to the nearest:
    /// credential problems to 4, authorization to 5, everything else to 3
    /// (Server unavailable).
    ///
    /// For malformed packets and protocol errors 3.1.1 expects the server
    /// to close the connection without any CONNACK (MQTT-3.1.4-1), so the
    /// broker should not send this at all for those.
    pub fn v311_connack_code(self) -> u8 {
        use ReasonCode as R;
        match self {
            R::Success => 0x00,
            R::UnsupportedProtocolVersion => 0x01,
            R::ClientIdentifierNotValid => 0x02,
            R::BadUserNameOrPassword | R::BadAuthenticationMethod => 0x04,
            R::NotAuthorized | R::Banned => 0x05,
            _ => 0x03,
        }
    }

    /// The reason code for an MQTT 3.1.1 CONNACK return code (3.2.2.3).
    pub fn from_v311_connack_code(code: u8) -> Option<Self> {
        match code {
            0x00 => Some(ReasonCode::Success),
            0x01 => Some(ReasonCode::UnsupportedProtocolVersion),
            0x02 => Some(ReasonCode::ClientIdentifierNotValid),
            0x03 => Some(ReasonCode::ServerUnavailable),
            0x04 => Some(ReasonCode::BadUserNameOrPassword),
            0x05 => Some(ReasonCode::NotAuthorized),
            _ => None,
        }
    }
}

impl From<&Error> for ReasonCode {
    /// The reason code to put in the CONNACK or DISCONNECT that answers a
    /// decode error (4.13). This is the only mapping; do not add another.
    fn from(e: &Error) -> Self {
        match e {
            Error::PacketTooLarge { .. } => ReasonCode::PacketTooLarge,
            Error::InvalidProtocolName | Error::UnsupportedProtocolLevel(_) => {
                ReasonCode::UnsupportedProtocolVersion
            }
            Error::InvalidTopicName(_) => ReasonCode::TopicNameInvalid,
            Error::InvalidTopicFilter(_) => ReasonCode::TopicFilterInvalid,
            // Semantically wrong but well-formed packets: Protocol Error.
            Error::ZeroPacketId(_)
            | Error::MissingTopic
            | Error::EmptyPayload(_)
            | Error::PasswordWithoutUsername
            | Error::SessionPresentOnFailure
            | Error::InvalidRetainHandling
            | Error::NoLocalOnSharedSubscription
            | Error::PropertyNotAllowed { .. }
            | Error::DuplicateProperty(_)
            | Error::InvalidPropertyValue(_)
            | Error::AuthDataWithoutMethod => ReasonCode::ProtocolError,
            // Bytes that do not parse as the spec lays them out.
            Error::MalformedVariableInteger
            | Error::NonMinimalVariableInteger
            | Error::ReservedPacketType(_)
            | Error::InvalidHeaderFlags { .. }
            | Error::InvalidQoS(_)
            | Error::UnexpectedEnd
            | Error::TrailingBytes(_)
            | Error::InvalidUtf8
            | Error::NullCharacter
            | Error::ConnectReservedFlag
            | Error::WillFlagsWithoutWill
            | Error::DupOnQoS0
            | Error::ConnAckReservedFlags(_)
            | Error::InvalidReasonCode { .. }
            | Error::SubscriptionOptionsReserved(_)
            | Error::UnknownProperty(_) => ReasonCode::MalformedPacket,
        }
    }
}

impl From<Error> for ReasonCode {
    fn from(e: Error) -> Self {
        ReasonCode::from(&e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topic::TopicError;

    #[test]
    fn bytes_round_trip_for_every_code() {
        for &code in ReasonCode::ALL {
            assert_eq!(ReasonCode::from_u8(code.to_u8()), Some(code));
        }
        assert_eq!(ReasonCode::ALL.len(), 43);
        assert_eq!(ReasonCode::from_u8(0x03), None);
        assert_eq!(ReasonCode::from_u8(0xA3), None);
    }

    #[test]
    fn errors_map_to_spec_codes() {
        let cases = [
            (Error::UnexpectedEnd, 0x81),
            (Error::ZeroPacketId(PacketType::PubAck), 0x82),
            (Error::PacketTooLarge { size: 10, max: 5 }, 0x95),
            (Error::InvalidTopicName(TopicError::WildcardInName), 0x90),
            (Error::InvalidTopicFilter(TopicError::Empty), 0x8F),
            (Error::UnsupportedProtocolLevel(3), 0x84),
            (Error::InvalidProtocolName, 0x84),
            (Error::MalformedVariableInteger, 0x81),
        ];
        for (e, code) in cases {
            assert_eq!(ReasonCode::from(&e).to_u8(), code, "{e}");
        }
    }

    #[test]
    fn mapped_codes_can_be_sent() {
        // Every decode error becomes a code the server may put in a
        // DISCONNECT, or in a CONNACK for errors only CONNECT can raise.
        let errors = [
            Error::MalformedVariableInteger,
            Error::PacketTooLarge { size: 2, max: 1 },
            Error::InvalidTopicName(TopicError::Empty),
            Error::InvalidTopicFilter(TopicError::Empty),
            Error::DuplicateProperty(crate::properties::PropertyId::TopicAlias),
            Error::UnsupportedProtocolLevel(6),
            Error::InvalidProtocolName,
        ];
        for e in errors {
            let rc = ReasonCode::from(&e);
            assert!(rc.is_error(), "{e}");
            assert!(
                rc.allowed_in(PacketType::Disconnect) || rc.allowed_in(PacketType::ConnAck),
                "{e} -> {rc:?}"
            );
        }
    }

    #[test]
    fn v311_fallback() {
        assert_eq!(ReasonCode::Success.v311_connack_code(), 0);
        assert_eq!(
            ReasonCode::UnsupportedProtocolVersion.v311_connack_code(),
            1
        );
        assert_eq!(ReasonCode::ClientIdentifierNotValid.v311_connack_code(), 2);
        assert_eq!(ReasonCode::ServerBusy.v311_connack_code(), 3);
        assert_eq!(ReasonCode::BadUserNameOrPassword.v311_connack_code(), 4);
        assert_eq!(ReasonCode::Banned.v311_connack_code(), 5);
        for code in 0..=5 {
            let rc = ReasonCode::from_v311_connack_code(code).unwrap();
            assert_eq!(rc.v311_connack_code(), code);
            assert!(rc.allowed_in(PacketType::ConnAck));
        }
        assert_eq!(ReasonCode::from_v311_connack_code(6), None);
    }
}
