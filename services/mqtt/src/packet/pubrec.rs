//! PUBREC (3.5): first reply in the QoS 2 flow (publish received).

use bytes::BytesMut;

use super::{PacketId, PacketType, ProtocolVersion, ack};
use crate::codec::Reader;
use crate::error::{EncodeError, Error};
use crate::properties::{Properties, PropertyContext};
use crate::reason::ReasonCode;

/// PUBREC (3.5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PubRec {
    /// The identifier of the PUBLISH flow being acknowledged.
    pub packet_id: PacketId,
    /// Outcome; always `Success` on 3.1.1, which has no reason code here.
    pub reason_code: ReasonCode,
    /// MQTT 5 properties (Reason String, User Property).
    pub properties: Properties,
}

impl PubRec {
    /// A successful PUBREC without properties.
    pub fn new(packet_id: PacketId) -> Self {
        Self {
            packet_id,
            reason_code: ReasonCode::Success,
            properties: Properties::default(),
        }
    }

    pub(crate) fn read(r: &mut Reader, version: ProtocolVersion) -> Result<Self, Error> {
        let parts = ack::read(r, version, PacketType::PubRec, PropertyContext::PubRec)?;
        Ok(Self {
            packet_id: parts.packet_id,
            reason_code: parts.reason_code,
            properties: parts.properties,
        })
    }

    /// Writes the body; returns the fixed header flags.
    pub(crate) fn write(
        &self,
        version: ProtocolVersion,
        dst: &mut BytesMut,
    ) -> Result<u8, EncodeError> {
        let parts = (self.packet_id, self.reason_code, &self.properties);
        ack::write(
            parts,
            version,
            PacketType::PubRec,
            PropertyContext::PubRec,
            dst,
        )?;
        Ok(0)
    }
}
