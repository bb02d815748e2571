//! Feeds arbitrary bytes to `mqtt::decode` as both protocol versions.
//! Decoding must never panic, and whatever decodes must encode again and
//! decode back to the same packet.

#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use mqtt::{MAX_PACKET_SIZE, Packet, ProtocolVersion, decode};

fuzz_target!(|data: &[u8]| {
    for version in [ProtocolVersion::V311, ProtocolVersion::V5] {
        let mut buf = BytesMut::from(data);
        while let Ok(Some(packet)) = decode(&mut buf, version, 1 << 16) {
            // CONNECT carries its own version; everything else uses the
            // connection's.
            let v = match &packet {
                Packet::Connect(c) => c.protocol,
                _ => version,
            };
            let mut out = BytesMut::new();
            packet
                .encode(v, &mut out)
                .expect("a decoded packet re-encodes");
            let again = decode(&mut out, v, MAX_PACKET_SIZE)
                .expect("re-encoded packet decodes")
                .expect("whole packet");
            assert_eq!(again, packet);
            assert!(out.is_empty());
        }
    }
});
