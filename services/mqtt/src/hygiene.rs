//! Topic hygiene rules ([`TopicRules`], optional, all off by default): a
//! maximum depth, no leading `/`, no spaces, and a cap on catch-all
//! subscriptions; and [`TopicLimits`], the shape every topic must have.
//! fleetmq's broker applies one set of rules per tenant and its store keeps
//! them: both use this one type, which is why it lives in the crate both
//! depend on.

use crate::{ReasonCode, TopicFilter};

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
    /// Longer than the broker's maximum topic length.
    #[error("topic is {length} bytes long; at most {max} are allowed")]
    TooLong {
        /// Bytes found.
        length: usize,
        /// The maximum.
        max: usize,
    },
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

impl TopicRefusal {
    /// Metric label.
    pub fn label(&self) -> &'static str {
        match self {
            TopicRefusal::TooDeep { .. } => "depth",
            TopicRefusal::TooLong { .. } => "length",
            TopicRefusal::LeadingSlash => "leading_slash",
            TopicRefusal::Space => "space",
            TopicRefusal::CatchAllLimit { .. } => "catch_all",
        }
    }
}

/// The shape every topic name and filter must have in every tenant,
/// whatever its rules: a peer chooses a topic's depth and length, and each
/// level costs a trie node and a step of every walk. A tenant's
/// [`TopicRules::max_depth`], when set, replaces `max_depth` for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TopicLimits {
    /// Most levels (default 128).
    pub max_depth: u16,
    /// Most bytes (default 4096).
    pub max_length: usize,
}

impl Default for TopicLimits {
    /// 128 levels and 4 KiB: far above any real topic scheme (the
    /// platform's own topics have at most 6 levels, cloud IoT services
    /// allow 8 and 256 bytes), while a subscription's trie path stays
    /// under about 128 nodes and a publish's match under 128 steps.
    fn default() -> Self {
        Self {
            max_depth: 128,
            max_length: 4096,
        }
    }
}

impl TopicLimits {
    /// Checks length, then depth against `max_depth` (the tenant's own, or
    /// ours); counting stops past the maximum.
    pub fn check(&self, topic: &str, max_depth: u16) -> Result<(), TopicRefusal> {
        if topic.len() > self.max_length {
            return Err(TopicRefusal::TooLong {
                length: topic.len(),
                max: self.max_length,
            });
        }
        let depth = topic.split('/').take(usize::from(max_depth) + 1).count();
        if depth > usize::from(max_depth) {
            return Err(TopicRefusal::TooDeep {
                depth: topic.split('/').count(),
                max: max_depth,
            });
        }
        Ok(())
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
