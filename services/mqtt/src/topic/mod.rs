//! Topic names, topic filters, shared subscriptions and matching (4.7, 4.8.2).
//!
//! [`TopicName`] and [`TopicFilter`] can only be built through `parse`, so a
//! value of either type is always valid. Matching walks levels with
//! `split('/')` and never slices by byte offset, so multibyte characters
//! anywhere (first one included) are safe.

use std::fmt;

/// Longest topic in bytes: it must fit a UTF-8 string field (MQTT-4.7.3-3).
pub const MAX_TOPIC_LEN: usize = 65_535;

/// Prefix of a shared subscription filter (4.8.2).
pub const SHARE_PREFIX: &str = "$share/";

/// Why a string is not a valid topic name or filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TopicError {
    /// Topics are at least one character long (MQTT-4.7.3-1).
    #[error("topic is empty")]
    Empty,
    /// Longer than 65,535 bytes (MQTT-4.7.3-3).
    #[error("topic is {0} bytes long, more than 65535")]
    TooLong(usize),
    /// Contains U+0000 (MQTT-4.7.3-2).
    #[error("topic contains U+0000")]
    NullCharacter,
    /// A topic name contains `+` or `#` (MQTT-3.3.2-2, MQTT-4.7.0-1).
    #[error("topic name contains a wildcard")]
    WildcardInName,
    /// `#` is not a whole level, or not the last level (MQTT-4.7.1-1).
    #[error("'#' must be the last level on its own")]
    MisplacedMultiLevelWildcard,
    /// `+` is not a whole level (MQTT-4.7.1-2).
    #[error("'+' must occupy a whole level")]
    MisplacedSingleLevelWildcard,
    /// The ShareName of `$share/{ShareName}/{filter}` is empty or contains
    /// `/`, `+` or `#` (4.8.2).
    #[error("invalid share name")]
    InvalidShareName,
    /// `$share/{ShareName}` with no filter after it (4.8.2).
    #[error("shared subscription without a topic filter")]
    EmptySharedFilter,
    /// Not a `$share/` filter.
    #[error("not a shared subscription")]
    NotShared,
    /// `$share/{ShareName}/$share/…`: the filter of a shared subscription
    /// is itself shared. Refused: matching would strip the prefix twice
    /// while the trie and `SharedSubscription::parse` strip it once, and
    /// no client means it.
    #[error("the filter of a shared subscription cannot be shared")]
    NestedShare,
}

fn check_common(s: &str) -> Result<(), TopicError> {
    if s.is_empty() {
        return Err(TopicError::Empty); // MQTT-4.7.3-1
    }
    if s.len() > MAX_TOPIC_LEN {
        return Err(TopicError::TooLong(s.len())); // MQTT-4.7.3-3
    }
    if s.contains('\0') {
        return Err(TopicError::NullCharacter); // MQTT-4.7.3-2
    }
    Ok(())
}

/// Wildcard placement rules on a (non-shared) filter.
fn check_filter_levels(s: &str) -> Result<(), TopicError> {
    let mut levels = s.split('/').peekable();
    while let Some(level) = levels.next() {
        match level {
            "#" if levels.peek().is_some() => {
                return Err(TopicError::MisplacedMultiLevelWildcard); // MQTT-4.7.1-1
            }
            "#" | "+" => {}
            _ if level.contains('#') => return Err(TopicError::MisplacedMultiLevelWildcard),
            _ if level.contains('+') => {
                return Err(TopicError::MisplacedSingleLevelWildcard); // MQTT-4.7.1-2
            }
            _ => {}
        }
    }
    Ok(())
}

/// A topic name as used in PUBLISH: no wildcards.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicName(String);

impl TopicName {
    /// Validates `s` as a topic name (4.7.3, MQTT-3.3.2-2).
    pub fn parse(s: impl Into<String>) -> Result<Self, TopicError> {
        let s = s.into();
        check_common(&s)?;
        if s.contains(['+', '#']) {
            return Err(TopicError::WildcardInName);
        }
        Ok(Self(s))
    }

    /// The topic as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether this is a `$`-topic, reserved for server use (4.7.2).
    pub fn is_system(&self) -> bool {
        self.0.starts_with('$')
    }

    /// The levels between `/` separators (empty levels included).
    pub fn levels(&self) -> std::str::Split<'_, char> {
        self.0.split('/')
    }

    /// Gives back the inner string.
    pub fn into_string(self) -> String {
        self.0
    }
}

/// A topic filter as used in SUBSCRIBE and UNSUBSCRIBE: may contain `+` and a
/// trailing `#`, and may be a `$share/{group}/{filter}` shared subscription.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicFilter(String);

impl TopicFilter {
    /// Validates `s` as a topic filter (4.7.1, 4.7.3); a `$share/` filter must
    /// also be a valid shared subscription (4.8.2).
    pub fn parse(s: impl Into<String>) -> Result<Self, TopicError> {
        let s = s.into();
        check_common(&s)?;
        match s.strip_prefix(SHARE_PREFIX) {
            Some(rest) => {
                split_share(rest)?;
            }
            None => check_filter_levels(&s)?,
        }
        Ok(Self(s))
    }

    /// The filter as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether the filter contains `+` or `#`.
    pub fn has_wildcards(&self) -> bool {
        self.match_filter().split('/').any(|l| l == "+" || l == "#")
    }

    /// The `$share/{group}/` parts, if this is a shared subscription.
    pub fn shared(&self) -> Option<SharedSubscription> {
        SharedSubscription::parse(&self.0).ok()
    }

    /// The filter that topics are matched against: the inner filter of a
    /// shared subscription, otherwise the whole filter.
    fn match_filter(&self) -> &str {
        self.0
            .strip_prefix(SHARE_PREFIX)
            .and_then(|rest| split_share(rest).ok())
            .map_or(self.0.as_str(), |(_, filter)| filter)
    }

    /// Whether `topic` matches this filter (4.7). A shared subscription
    /// matches like its inner filter.
    ///
    /// Filters starting with `+` or `#` do not match `$`-topics
    /// (MQTT-4.7.2-1); `a/#` also matches `a` (4.7.1.2).
    pub fn matches(&self, topic: &TopicName) -> bool {
        self.matches_str(topic.as_str())
    }

    /// [`TopicFilter::matches`] for a topic held as a string (a stored
    /// event's topic, say), without parsing it into a [`TopicName`]
    /// first. A string that is not a valid topic name matches nothing more
    /// than its levels allow: a `+` level in it is compared as a literal.
    pub fn matches_str(&self, topic: &str) -> bool {
        let filter = self.match_filter();
        let mut topic_levels = topic.split('/');
        let mut filter_levels = filter.split('/').peekable();
        // MQTT-4.7.2-1
        if topic.starts_with('$') && matches!(filter_levels.peek(), Some(&"+" | &"#")) {
            return false;
        }
        for f in filter_levels {
            match f {
                "#" => return true,
                "+" => {
                    if topic_levels.next().is_none() {
                        return false;
                    }
                }
                literal => {
                    if topic_levels.next() != Some(literal) {
                        return false;
                    }
                }
            }
        }
        topic_levels.next().is_none()
    }

    /// Whether every topic that `other` matches is matched by `self` too:
    /// an ACL rule's filter covering a subscription. Shared subscriptions
    /// are looked through on both sides, as in [`TopicFilter::matches`].
    ///
    /// Exact, not conservative: `+/#` covers `#` (topics have at least
    /// one level), and no filter starting with a wildcard covers a
    /// `$`-filter (MQTT-4.7.2-1: it matches none of its topics).
    pub fn covers(&self, other: &TopicFilter) -> bool {
        let (outer, inner) = (self.match_filter(), other.match_filter());
        if is_system(inner) && starts_with_wildcard(outer) {
            return false;
        }
        let mut o = leading_levels(outer);
        let mut i = leading_levels(inner);
        loop {
            match (o.next(), i.next()) {
                // `#` takes the rest, the parent level included.
                (Some("#"), _) | (None, None) => return true,
                // `+` takes any one level, but not the many of an inner `#`.
                (Some("+"), Some(level)) if level != "#" => {}
                (Some(a), Some(b)) if a == b => {}
                _ => return false,
            }
        }
    }

    /// Whether some topic name matches both filters: a deny rule's filter
    /// touching a subscription. Shared subscriptions are looked through.
    pub fn overlaps(&self, other: &TopicFilter) -> bool {
        let (a, b) = (self.match_filter(), other.match_filter());
        if (is_system(a) && starts_with_wildcard(b)) || (is_system(b) && starts_with_wildcard(a)) {
            return false;
        }
        let mut a = a.split('/');
        let mut b = b.split('/');
        loop {
            match (a.next(), b.next()) {
                (Some("#"), _) | (_, Some("#")) | (None, None) => return true,
                (Some(x), Some(y)) if x == "+" || y == "+" || x == y => {}
                _ => return false,
            }
        }
    }

    /// Gives back the inner string.
    pub fn into_string(self) -> String {
        self.0
    }
}

/// Whether a (non-shared) filter's first level is a literal starting with
/// `$`: only such filters match `$`-topics.
fn is_system(filter: &str) -> bool {
    filter.starts_with('$')
}

fn starts_with_wildcard(filter: &str) -> bool {
    matches!(filter.split('/').next(), Some("+" | "#"))
}

/// A filter's levels, with a leading `#` read as `+/#`: they match the same
/// topics (a topic has at least one level), and [`TopicFilter::covers`]
/// then needs no special case for the first level.
fn leading_levels(filter: &str) -> impl Iterator<Item = &str> {
    let expanded: &[&str] = if filter == "#" { &["+", "#"] } else { &[] };
    let plain = (filter != "#").then(|| filter.split('/'));
    expanded.iter().copied().chain(plain.into_iter().flatten())
}

/// Splits what follows `$share/` into (group, filter) and validates both.
fn split_share(rest: &str) -> Result<(&str, &str), TopicError> {
    let (group, filter) = rest.split_once('/').ok_or(TopicError::EmptySharedFilter)?;
    if group.is_empty() || group.contains(['+', '#']) {
        return Err(TopicError::InvalidShareName);
    }
    if filter.is_empty() {
        return Err(TopicError::EmptySharedFilter);
    }
    if filter.starts_with(SHARE_PREFIX) {
        return Err(TopicError::NestedShare);
    }
    check_filter_levels(filter)?;
    Ok((group, filter))
}

/// A parsed `$share/{group}/{filter}` subscription (4.8.2).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SharedSubscription {
    /// The ShareName: non-empty, no `/`, `+` or `#`.
    pub group: String,
    /// The filter that topics are matched against.
    pub filter: TopicFilter,
}

impl SharedSubscription {
    /// Parses `$share/{group}/{filter}`; fails with
    /// [`TopicError::NotShared`] for any other filter.
    pub fn parse(s: &str) -> Result<Self, TopicError> {
        check_common(s)?;
        let rest = s.strip_prefix(SHARE_PREFIX).ok_or(TopicError::NotShared)?;
        let (group, filter) = split_share(rest)?;
        Ok(Self {
            group: group.to_owned(),
            filter: TopicFilter::parse(filter)?,
        })
    }
}

impl fmt::Debug for TopicName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl fmt::Display for TopicName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for TopicFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl fmt::Display for TopicFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for TopicName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for TopicFilter {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for TopicName {
    type Err = TopicError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl std::str::FromStr for TopicFilter {
    type Err = TopicError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

#[cfg(test)]
mod tests;
