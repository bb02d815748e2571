//! AUTH (3.15): MQTT 5 extended authentication exchange.

use bytes::BytesMut;

use super::ack::read_reason_and_properties;
use super::disconnect::write_reason_and_properties;
use super::{Body, PacketType, ProtocolVersion};
use crate::codec::Reader;
use crate::error::{EncodeError, Error};
use crate::properties::{Properties, PropertyContext};
use crate::reason::ReasonCode;

/// AUTH (3.15). Does not exist in 3.1.1: type 15 is reserved there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Auth {
    /// Success, Continue authentication or Re-authenticate.
    pub reason_code: ReasonCode,
    /// Authentication Method and Data, Reason String, User Property.
    pub properties: Properties,
}

impl Auth {
    pub(crate) fn read(r: &mut Reader) -> Result<Self, Error> {
        read_reason_and_properties(
            r,
            ProtocolVersion::V5,
            PacketType::Auth,
            PropertyContext::Auth,
        )
        .map(|(reason_code, properties)| Self {
            reason_code,
            properties,
        })
    }
}

impl Body for Auth {
    fn write(&self, version: ProtocolVersion, dst: &mut BytesMut) -> Result<u8, EncodeError> {
        if version == ProtocolVersion::V311 {
            return Err(EncodeError::NotInVersion(PacketType::Auth));
        }
        let ctx = PropertyContext::Auth;
        write_reason_and_properties(
            self.reason_code,
            &self.properties,
            PacketType::Auth,
            ctx,
            dst,
        )?;
        Ok(0)
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::packet::Packet;
    use crate::packet::testutil::{decode_one, encode};

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
        let p = Packet::Auth(auth);
        assert_eq!(encode(&p, ProtocolVersion::V5), bytes);
        assert_eq!(decode_one(&bytes, ProtocolVersion::V5).unwrap(), p);
    }

    #[test]
    fn not_in_v311() {
        assert_eq!(
            decode_one(&[0xF0, 0x00], ProtocolVersion::V311),
            Err(Error::ReservedPacketType(15))
        );
        let mut buf = BytesMut::new();
        let p = Packet::Auth(Auth {
            reason_code: ReasonCode::Success,
            properties: Properties::default(),
        });
        assert_eq!(
            p.encode(ProtocolVersion::V311, &mut buf),
            Err(EncodeError::NotInVersion(PacketType::Auth))
        );
    }
}
