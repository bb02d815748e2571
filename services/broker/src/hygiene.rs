//! Topic hygiene per tenant. The rules and their checks are the `mqtt`
//! crate's ([`mqtt::hygiene`]), so the store keeps the very [`TopicRules`]
//! the broker applies; the platform sets a tenant's rules with
//! [`crate::Broker::set_topic_rules`] and they count from the next packet.
//! Here: `Shown`, how a peer's topic goes into a log line.

pub use mqtt::hygiene::{TopicLimits, TopicRefusal, TopicRules, is_catch_all};

/// A peer's topic in a log line, cut after 200 bytes (at a character
/// boundary): a topic may be 64 KiB of anything.
pub(crate) struct Shown<'a>(pub(crate) &'a str);

impl std::fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        const MAX: usize = 200;
        if self.0.len() <= MAX {
            return f.write_str(self.0);
        }
        let cut = (0..=MAX)
            .rev()
            .find(|&i| self.0.is_char_boundary(i))
            .unwrap_or(0);
        write!(f, "{}… ({} bytes)", &self.0[..cut], self.0.len())
    }
}
