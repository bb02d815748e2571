//! PUBCOMP (3.7): last step of the QoS 2 flow (publish complete).

super::ack::ack_packet!(
    /// PUBCOMP (3.7).
    PubComp,
    PubComp,
    flags = 0,
    new_doc = "A successful PUBCOMP without properties."
);
