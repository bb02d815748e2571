//! SUBACK (3.9): one reason code per requested subscription.

use bytes::{BufMut, BytesMut};

use super::ack::{check_reason, read_reason};
use super::{PacketId, PacketType, ProtocolVersion, list};
use crate::codec::Reader;
use crate::error::{EncodeError, Error};
use crate::properties::Properties;
use crate::reason::ReasonCode;

/// SUBACK (3.9).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubAck {
    /// Packet Identifier of the SUBSCRIBE.
    pub packet_id: PacketId,
    /// One per subscription, in order (MQTT-3.8.4-6). On 3.1.1 every
    /// failure is sent as 0x80.
    pub reason_codes: Vec<ReasonCode>,
    /// SUBACK properties (MQTT 5).
    pub properties: Properties,
}

/// 3.1.1 SUBACK return codes (3.9.3): granted QoS or 0x80 failure.
fn from_v311(code: u8) -> Result<ReasonCode, Error> {
    match code {
        0x00 => Ok(ReasonCode::Success),
        0x01 => Ok(ReasonCode::GrantedQoS1),
        0x02 => Ok(ReasonCode::GrantedQoS2),
        0x80 => Ok(ReasonCode::UnspecifiedError),
        _ => Err(Error::InvalidReasonCode {
            packet: PacketType::SubAck,
            code,
        }),
    }
}

list::list_packet!(SubAck, reason_codes: ReasonCode, flags = 0, new);

fn read_entry(r: &mut Reader, version: ProtocolVersion) -> Result<ReasonCode, Error> {
    match version {
        ProtocolVersion::V311 => from_v311(r.u8()?),
        ProtocolVersion::V5 => read_reason(r, PacketType::SubAck),
    }
}

/// On 3.1.1 every failure is 0x80 (3.9.3).
fn write_entry(
    &rc: &ReasonCode,
    version: ProtocolVersion,
    dst: &mut BytesMut,
) -> Result<(), EncodeError> {
    check_reason(rc, PacketType::SubAck)?;
    dst.put_u8(match version {
        ProtocolVersion::V5 => rc.to_u8(),
        ProtocolVersion::V311 if rc.is_error() => 0x80,
        ProtocolVersion::V311 => rc.to_u8(),
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::Packet;
    use crate::packet::testutil::{V4, V5, assert_round_trip, decode_one, encode};

    #[test]
    fn v5_failures_become_0x80_on_v311() {
        let codes = vec![ReasonCode::GrantedQoS1, ReasonCode::NotAuthorized];
        let p = Packet::from(SubAck::new(PacketId::new(1).unwrap(), codes));
        assert_eq!(encode(&p, V4), [0x90, 0x04, 0x00, 0x01, 0x01, 0x80]);
        assert_round_trip(&p, V5, &[0x90, 0x05, 0x00, 0x01, 0x00, 0x01, 0x87]);
    }

    #[test]
    fn rejects_unknown_codes_and_empty_lists() {
        assert_eq!(
            decode_one(&[0x90, 0x03, 0x00, 0x01, 0x03], V4),
            Err(Error::InvalidReasonCode {
                packet: PacketType::SubAck,
                code: 3
            })
        );
        assert_eq!(
            decode_one(&[0x90, 0x04, 0x00, 0x01, 0x00, 0x92], V5),
            Err(Error::InvalidReasonCode {
                packet: PacketType::SubAck,
                code: 0x92
            })
        );
        assert_eq!(
            decode_one(&[0x90, 0x02, 0x00, 0x01], V4),
            Err(Error::EmptyPayload(PacketType::SubAck))
        );
    }
}
