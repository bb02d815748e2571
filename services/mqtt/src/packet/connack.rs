//! CONNACK (3.2): the server's answer to CONNECT.

use bytes::{BufMut, BytesMut};

use super::ack::{check_reason, read_reason};
use super::{Body, PacketType, ProtocolVersion};
use crate::codec::Reader;
use crate::error::{EncodeError, Error};
use crate::properties::{Properties, PropertyContext};
use crate::reason::ReasonCode;

const SESSION_PRESENT: u8 = 0b0000_0001;

/// CONNACK (3.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnAck {
    /// Session Present; must be false with a failure code (MQTT-3.2.2-6).
    pub session_present: bool,
    /// The outcome. On 3.1.1 it is sent as the nearest return code
    /// ([`ReasonCode::v311_connack_code`]).
    pub reason_code: ReasonCode,
    /// CONNACK properties (MQTT 5).
    pub properties: Properties,
}

impl ConnAck {
    /// A CONNACK with `reason_code` and no properties.
    pub fn new(reason_code: ReasonCode, session_present: bool) -> Self {
        Self {
            session_present,
            reason_code,
            properties: Properties::default(),
        }
    }

    pub(crate) fn read(r: &mut Reader, version: ProtocolVersion) -> Result<Self, Error> {
        let flags = r.u8()?;
        if flags & !SESSION_PRESENT != 0 {
            return Err(Error::ConnAckReservedFlags(flags)); // MQTT-3.2.2-1
        }
        let session_present = flags & SESSION_PRESENT != 0;
        let (reason_code, properties) = match version {
            ProtocolVersion::V311 => {
                let code = r.u8()?;
                let rc =
                    ReasonCode::from_v311_connack_code(code).ok_or(Error::InvalidReasonCode {
                        packet: PacketType::ConnAck,
                        code,
                    })?;
                (rc, Properties::default())
            }
            ProtocolVersion::V5 => {
                let rc = read_reason(r, PacketType::ConnAck)?;
                (rc, Properties::read(r, PropertyContext::ConnAck)?)
            }
        };
        // MQTT-3.2.2-6 (5.0), MQTT-3.2.2-4 (3.1.1)
        if session_present && reason_code.is_error() {
            return Err(Error::SessionPresentOnFailure);
        }
        Ok(Self {
            session_present,
            reason_code,
            properties,
        })
    }
}

impl Body for ConnAck {
    fn write(&self, version: ProtocolVersion, dst: &mut BytesMut) -> Result<u8, EncodeError> {
        if self.session_present && self.reason_code.is_error() {
            return Err(EncodeError::SessionPresentOnFailure);
        }
        dst.put_u8(u8::from(self.session_present));
        match version {
            ProtocolVersion::V311 => dst.put_u8(self.reason_code.v311_connack_code()),
            ProtocolVersion::V5 => {
                check_reason(self.reason_code, PacketType::ConnAck)?;
                dst.put_u8(self.reason_code.to_u8());
                self.properties.write(PropertyContext::ConnAck, dst)?;
            }
        }
        Ok(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::Packet;
    use crate::packet::testutil::{V4, V5, decode_one, encode};

    #[test]
    fn byte_exact_v311_and_v5() {
        let ok = Packet::ConnAck(ConnAck::new(ReasonCode::Success, true));
        assert_eq!(encode(&ok, V4), [0x20, 0x02, 0x01, 0x00]);
        assert_eq!(encode(&ok, V5), [0x20, 0x03, 0x01, 0x00, 0x00]);
        assert_eq!(decode_one(&[0x20, 0x02, 0x01, 0x00], V4).unwrap(), ok);
        assert_eq!(decode_one(&[0x20, 0x03, 0x01, 0x00, 0x00], V5).unwrap(), ok);
    }

    #[test]
    fn v5_codes_fall_back_to_v311_return_codes() {
        let banned = Packet::ConnAck(ConnAck::new(ReasonCode::Banned, false));
        assert_eq!(encode(&banned, V4), [0x20, 0x02, 0x00, 0x05]);
        let bad = Packet::ConnAck(ConnAck::new(ReasonCode::BadUserNameOrPassword, false));
        assert_eq!(encode(&bad, V4), [0x20, 0x02, 0x00, 0x04]);
        assert_eq!(encode(&bad, V5), [0x20, 0x03, 0x00, 0x86, 0x00]);
    }

    #[test]
    fn rejects_reserved_flags_unknown_codes_and_session_present_on_failure() {
        assert_eq!(
            decode_one(&[0x20, 0x02, 0x02, 0x00], V4),
            Err(Error::ConnAckReservedFlags(2))
        );
        assert_eq!(
            decode_one(&[0x20, 0x02, 0x00, 0x06], V4),
            Err(Error::InvalidReasonCode {
                packet: PacketType::ConnAck,
                code: 6
            })
        );
        assert_eq!(
            decode_one(&[0x20, 0x03, 0x00, 0x91, 0x00], V5),
            Err(Error::InvalidReasonCode {
                packet: PacketType::ConnAck,
                code: 0x91
            })
        );
        assert_eq!(
            decode_one(&[0x20, 0x02, 0x01, 0x05], V4),
            Err(Error::SessionPresentOnFailure)
        );
        let mut buf = BytesMut::new();
        let bad = Packet::ConnAck(ConnAck::new(ReasonCode::NotAuthorized, true));
        assert_eq!(
            bad.encode(V5, &mut buf),
            Err(EncodeError::SessionPresentOnFailure)
        );
        let wrong = Packet::ConnAck(ConnAck::new(ReasonCode::GrantedQoS1, false));
        assert!(matches!(
            wrong.encode(V5, &mut buf),
            Err(EncodeError::ReasonCodeNotAllowed { .. })
        ));
    }
}
