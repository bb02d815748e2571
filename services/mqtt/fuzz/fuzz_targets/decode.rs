//! The MQTT decoder on hostile bytes, as both 3.1.1 and 5.0.
//!
//! Properties beyond "never panics":
//! - whatever decodes re-encodes, and the encoding decodes to the same
//!   packet (CONNECT in its own version, which the decoder takes from the
//!   packet whatever the connection's version says);
//! - every strict prefix of a packet that decoded is "not yet" (`Ok(None)`),
//!   never an error or another packet: the broker feeds TCP reads in
//!   whatever pieces they arrive;
//! - a buffer is consumed packet by packet until it is empty, incomplete or
//!   malformed, with the same caps the broker uses.

#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use mqtt::{Packet, ProtocolVersion, decode};

/// The broker's default maximum packet size is far larger than any input
/// libFuzzer makes; a small one exercises the refusal too.
const LIMITS: [usize; 2] = [mqtt::MAX_PACKET_SIZE, 64];

fuzz_target!(|data: &[u8]| {
    for version in [ProtocolVersion::V311, ProtocolVersion::V5] {
        for limit in LIMITS {
            stream(data, version, limit);
        }
    }
});

fn stream(data: &[u8], version: ProtocolVersion, limit: usize) {
    let mut buf = BytesMut::from(data);
    let mut version = version;
    // Each round either consumes at least one whole packet or stops.
    while !buf.is_empty() {
        let before = buf.len();
        let packet = match decode(&mut buf, version, limit) {
            Ok(Some(p)) => p,
            Ok(None) | Err(_) => return,
        };
        let used = before - buf.len();
        assert!(used >= 2, "a packet is at least two bytes");
        let start = data.len() - before;
        prefixes_are_incomplete(&data[start..start + used], version, limit);
        if let Packet::Connect(c) = &packet {
            // The rest of the connection speaks CONNECT's version.
            version = c.protocol;
        }
        round_trip(&packet, version);
    }
}

fn prefixes_are_incomplete(frame: &[u8], version: ProtocolVersion, limit: usize) {
    let n = frame.len();
    for cut in [0, 1, 2, n / 2, n - 1] {
        if cut >= n {
            continue;
        }
        let mut part = BytesMut::from(&frame[..cut]);
        match decode(&mut part, version, limit) {
            Ok(None) => {}
            other => panic!("prefix {cut} of a {n}-byte packet gave {other:?}"),
        }
    }
}

fn round_trip(packet: &Packet, version: ProtocolVersion) {
    let mut out = BytesMut::new();
    if let Err(e) = packet.encode(version, &mut out) {
        panic!("decoded {packet:?} does not re-encode: {e}");
    }
    let again = decode(&mut out, version, mqtt::MAX_PACKET_SIZE);
    match again {
        Ok(Some(p)) => assert_eq!(&p, packet, "re-encoded packet decodes differently"),
        other => panic!("re-encoded {packet:?} decodes to {other:?}"),
    }
    assert!(out.is_empty(), "re-encoding wrote trailing bytes");
}
