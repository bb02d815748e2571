//! PUBREL (3.6): second step of the QoS 2 flow (publish release).

// MQTT-3.6.1-1: the fixed header flags of PUBREL are 0b0010.
super::ack::ack_packet!(
    /// PUBREL (3.6).
    PubRel,
    PubRel,
    flags = 0b0010,
    new_doc = "A successful PUBREL without properties."
);
