//! PINGREQ (3.12) and PINGRESP (3.13): a fixed header with flags 0 and a
//! remaining length of 0 in both versions, so there is nothing to read; any
//! body byte is reported as trailing by the framing code.

/// Writes the (empty) body; returns the fixed header flags.
pub(crate) fn write() -> u8 {
    0
}
