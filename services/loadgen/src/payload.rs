//! The payload header: publisher index, sequence number and send time, so a
//! subscriber can deduplicate and measure latency. The rest of the payload
//! is filler up to `--payload` bytes.

/// Bytes taken by the header; the smallest allowed `--payload`.
pub const HEADER_LEN: usize = 16;

/// What a publisher stamps on each message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Publisher index, `0..publishers`.
    pub publisher: u32,
    /// Sequence number within that publisher, `0..messages`.
    pub seq: u32,
    /// Send time, in nanoseconds since the run's clock origin.
    pub sent_ns: u64,
}

impl Header {
    /// A payload of `len` bytes (at least [`HEADER_LEN`]) starting with this
    /// header.
    pub fn to_payload(self, len: usize) -> Vec<u8> {
        let mut p = Vec::with_capacity(len.max(HEADER_LEN));
        p.extend_from_slice(&self.publisher.to_be_bytes());
        p.extend_from_slice(&self.seq.to_be_bytes());
        p.extend_from_slice(&self.sent_ns.to_be_bytes());
        p.resize(len.max(HEADER_LEN), b'x');
        p
    }

    /// Reads the header off a received payload; `None` if it is too short
    /// (not one of ours).
    pub fn parse(payload: &[u8]) -> Option<Self> {
        let (publisher, rest) = payload.split_first_chunk::<4>()?;
        let (seq, rest) = rest.split_first_chunk::<4>()?;
        let (sent_ns, _) = rest.split_first_chunk::<8>()?;
        Some(Self {
            publisher: u32::from_be_bytes(*publisher),
            seq: u32::from_be_bytes(*seq),
            sent_ns: u64::from_be_bytes(*sent_ns),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_pads() {
        let h = Header {
            publisher: 49,
            seq: 1999,
            sent_ns: 123_456_789_012,
        };
        let p = h.to_payload(64);
        assert_eq!(p.len(), 64);
        assert_eq!(Header::parse(&p), Some(h));
        // A payload below the header size still carries the whole header.
        assert_eq!(h.to_payload(3).len(), HEADER_LEN);
    }

    #[test]
    fn short_payloads_are_not_ours() {
        assert_eq!(Header::parse(b""), None);
        assert_eq!(Header::parse(&[0; HEADER_LEN - 1]), None);
    }
}
