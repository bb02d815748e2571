//! AUTH (3.15): MQTT 5 extended authentication exchange.

use super::PacketType;
use crate::error::EncodeError;
use crate::properties::Properties;
use crate::reason::ReasonCode;

/// AUTH (3.15). Does not exist in 3.1.1: type 15 is reserved there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Auth {
    /// Success, Continue authentication or Re-authenticate.
    pub reason_code: ReasonCode,
    /// Authentication Method and Data, Reason String, User Property.
    pub properties: Properties,
}

super::disconnect::reason_packet!(
    Auth,
    v311 = Err(EncodeError::NotInVersion(PacketType::Auth))
);

#[cfg(test)]
mod tests {
    use bytes::{Bytes, BytesMut};

    use super::*;
    use crate::error::Error;
    use crate::packet::Packet;
    use crate::packet::testutil::{V4, V5, assert_round_trip, decode_one};

    #[test]
    fn continue_authentication_byte_exact() {
        let mut auth = Auth {
            reason_code: ReasonCode::ContinueAuthentication,
            properties: Properties::default(),
        };
        auth.properties.authentication_method = Some("SCRAM".to_owned());
        auth.properties.authentication_data = Some(Bytes::from_static(b"\x01"));
        let bytes = [
            0xF0, 0x0E, 0x18, 0x0C, 0x15, 0x00, 0x05, b'S', b'C', b'R', b'A', b'M', 0x16, 0x00,
            0x01, 0x01,
        ];
        assert_round_trip(&Packet::Auth(auth), V5, &bytes);
    }

    #[test]
    fn not_in_v311() {
        assert_eq!(
            decode_one(&[0xF0, 0x00], V4),
            Err(Error::ReservedPacketType(15))
        );
        let mut buf = BytesMut::new();
        let p = Packet::Auth(Auth {
            reason_code: ReasonCode::Success,
            properties: Properties::default(),
        });
        assert_eq!(
            p.encode(V4, &mut buf),
            Err(EncodeError::NotInVersion(PacketType::Auth))
        );
    }
}
