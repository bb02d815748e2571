//! PUBACK (3.4): the QoS 1 acknowledgement.

super::ack::ack_packet!(
    /// PUBACK (3.4).
    PubAck,
    PubAck,
    flags = 0,
    new_doc = "A successful PUBACK without properties."
);
