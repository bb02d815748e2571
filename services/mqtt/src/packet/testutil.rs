//! Helpers for the packet unit tests.

use bytes::BytesMut;

use super::{MAX_PACKET_SIZE, Packet, ProtocolVersion, decode};
use crate::error::Error;

/// The two protocol versions, short, for byte tables.
pub(crate) const V4: ProtocolVersion = ProtocolVersion::V311;
pub(crate) const V5: ProtocolVersion = ProtocolVersion::V5;

/// Decodes `bytes` as exactly one whole packet.
pub(crate) fn decode_one(bytes: &[u8], version: ProtocolVersion) -> Result<Packet, Error> {
    let mut buf = BytesMut::from(bytes);
    let packet = decode(&mut buf, version, MAX_PACKET_SIZE)?.expect("a whole packet");
    assert!(buf.is_empty(), "decode left {} bytes", buf.len());
    Ok(packet)
}

/// Checks that `packet` encodes for `version` to exactly `bytes`, and that
/// `bytes` decode back to it.
pub(crate) fn assert_round_trip(packet: &Packet, version: ProtocolVersion, bytes: &[u8]) {
    assert_eq!(encode(packet, version), bytes, "encoded {packet:?}");
    assert_eq!(
        decode_one(bytes, version).as_ref(),
        Ok(packet),
        "decoded {bytes:02X?}"
    );
}

/// Encodes `packet` for `version`.
pub(crate) fn encode(packet: &Packet, version: ProtocolVersion) -> Vec<u8> {
    let mut buf = BytesMut::new();
    packet.encode(version, &mut buf).expect("encodable");
    buf.to_vec()
}
