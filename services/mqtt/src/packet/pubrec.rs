//! PUBREC (3.5): first reply in the QoS 2 flow (publish received).

super::ack::ack_packet!(
    /// PUBREC (3.5).
    PubRec,
    PubRec,
    flags = 0,
    new_doc = "A successful PUBREC without properties."
);
