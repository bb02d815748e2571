//! Topic hygiene per tenant ([`TopicRules`], optional, all off by
//! default): a maximum depth, no leading `/`, no spaces, and a cap on
//! catch-all subscriptions. The platform sets a tenant's rules with
//! [`crate::Broker::set_topic_rules`]; they count from the next packet.

use mqtt::{ReasonCode, TopicFilter};

/// A tenant's topic hygiene rules. `Default` is every rule off.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TopicRules {
    /// Most levels a topic name or filter may have.
    pub max_depth: Option<u16>,
    /// Refuse topic names and filters starting with `/` (an empty first
    /// level).
    pub forbid_leading_slash: bool,
    /// Refuse topic names and filters containing a space.
    pub forbid_spaces: bool,
    /// Most live subscriptions to catch-all filters ([`is_catch_all`]) in
    /// the tenant, shared ones included; `Some(0)` refuses them all.
    pub max_catch_all_subscriptions: Option<u32>,
}

/// Why a topic or subscription was refused; the message is the reason
/// string an MQTT 5 client gets.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicRefusal {
    /// More levels than `max`.
    #[error("topic has {depth} levels; this tenant allows at most {max}")]
    TooDeep {
        /// Levels found.
        depth: usize,
        /// The tenant's maximum.
        max: u16,
    },
    /// Starts with `/`.
    #[error("topic starts with '/'; this tenant does not allow an empty first level")]
    LeadingSlash,
    /// Contains a space.
    #[error("topic contains a space; this tenant does not allow spaces in topics")]
    Space,
    /// The tenant's catch-all subscriptions are at the cap.
    #[error("this tenant allows at most {max} subscriptions to catch-all filters (#, +/#, ...)")]
    CatchAllLimit {
        /// The tenant's cap.
        max: u32,
    },
}

impl TopicRefusal {
    /// The PUBACK/PUBREC reason code (3.4.2.1): 0x90 Topic Name invalid.
    pub fn publish_reason(&self) -> ReasonCode {
        ReasonCode::TopicNameInvalid
    }

    /// The SUBACK reason code (3.9.3): 0x97 Quota exceeded over the
    /// catch-all cap, else 0x8F Topic Filter invalid (0x80 in 3.1.1).
    pub fn subscribe_reason(&self) -> ReasonCode {
        match self {
            TopicRefusal::CatchAllLimit { .. } => ReasonCode::QuotaExceeded,
            _ => ReasonCode::TopicFilterInvalid,
        }
    }
}

impl TopicRules {
    /// Whether no rule is on (the tenant pays nothing).
    pub fn is_off(&self) -> bool {
        *self == TopicRules::default()
    }

    /// Checks a topic name, or a filter without its `$share/{group}/`.
    pub fn check(&self, topic: &str) -> Result<(), TopicRefusal> {
        if self.forbid_leading_slash && topic.starts_with('/') {
            return Err(TopicRefusal::LeadingSlash);
        }
        if self.forbid_spaces && topic.contains(' ') {
            return Err(TopicRefusal::Space);
        }
        if let Some(max) = self.max_depth {
            // Counting stops past the maximum: a long topic costs no more.
            let depth = topic.split('/').take(usize::from(max) + 1).count();
            if depth > usize::from(max) {
                return Err(TopicRefusal::TooDeep {
                    depth: topic.split('/').count(),
                    max,
                });
            }
        }
        Ok(())
    }
}

/// Whether `filter` (shared or not) matches every topic of some depth
/// range: every level `+`, the last `#` (`#`, `+/#`, `+/+/#`, …) — the
/// fan-out a catch-all cap guards against.
pub fn is_catch_all(filter: &TopicFilter) -> bool {
    let inner = filter.shared().map_or_else(|| filter.clone(), |s| s.filter);
    let mut levels = inner.as_str().rsplit('/');
    levels.next() == Some("#") && levels.all(|l| l == "+")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_refuse_what_they_say_and_nothing_else() {
        let off = TopicRules::default();
        assert!(off.is_off());
        for t in ["/a", "a b", "a/b/c/d/e/f"] {
            assert_eq!(off.check(t), Ok(()));
        }
        let on = TopicRules {
            max_depth: Some(3),
            forbid_leading_slash: true,
            forbid_spaces: true,
            max_catch_all_subscriptions: Some(0),
        };
        assert_eq!(on.check("a/b/c"), Ok(()));
        assert_eq!(on.check("a/+/#"), Ok(()));
        assert_eq!(
            on.check("a/b/c/d"),
            Err(TopicRefusal::TooDeep { depth: 4, max: 3 })
        );
        assert_eq!(on.check("/a"), Err(TopicRefusal::LeadingSlash));
        assert_eq!(on.check("a/b c"), Err(TopicRefusal::Space));
        assert_eq!(
            TopicRefusal::Space.publish_reason(),
            ReasonCode::TopicNameInvalid
        );
        assert_eq!(
            TopicRefusal::CatchAllLimit { max: 0 }.subscribe_reason(),
            ReasonCode::QuotaExceeded
        );
    }

    #[test]
    fn catch_all_filters_are_wildcards_ending_in_hash() {
        let f = |s: &str| TopicFilter::parse(s).unwrap();
        for yes in ["#", "+/#", "+/+/#", "$share/g/#", "$share/g/+/#"] {
            assert!(is_catch_all(&f(yes)), "{yes}");
        }
        for no in ["a/#", "+/a/#", "+", "+/+", "a", "$share/g/a/#", "#/"] {
            if let Ok(filter) = TopicFilter::parse(no) {
                assert!(!is_catch_all(&filter), "{no}");
            }
        }
    }
}
