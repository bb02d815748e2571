//! MQTT topics and filters as NATS subjects (issue 15).
//!
//! A tenant's message on topic `a/b` travels on `fleetmq.msg.{j}.{tenant}.a.b`,
//! `{j}` being `1` for a QoS 1/2 message (which the cluster's journal
//! keeps, [`crate::journal`]) and `0` for QoS 0 (which it does not: no
//! disk for QoS 0); a node's subscriptions take both (`*`), so that one
//! subscription keeps a publisher's order across QoS. A retained change
//! travels on `fleetmq.retained.{tenant}.a.b`. Each topic level
//! becomes one subject token through an escaping that is injective and
//! reversible ([`escape_level`], [`unescape_token`]): every byte NATS
//! reserves or handles badly in a token ('.', '*', '>', whitespace, control
//! and non-ASCII bytes, a leading '$', the escape character '%' itself)
//! becomes `%XX` (upper-case hex), and an empty level becomes the lone
//! token `%`, which no non-empty level escapes to. A filter maps `+` to `*`
//! and a trailing `#` to `>`; as `a/#` also matches `a` in MQTT (4.7.1.2),
//! it takes two subjects, `a` and `a.>`.
//!
//! nats-server's own MQTT support maps '.' to a double slash and keeps the
//! other bytes; a per-byte escape is used here instead so that every token
//! is plain printable ASCII, whatever a device puts in its topic.
//!
//! The platform namespace's filters (`{tenant}/{topic}`, the first level a
//! tenant id or a wildcard) map onto the same subjects with the first level
//! in the tenant's place ([`platform_filter_subjects`]).

use std::fmt::Write;

use mqtt::{TopicFilter, TopicName};

/// Where tenants' messages travel.
pub const MSG_PREFIX: &str = "fleetmq.msg";
/// The token after [`MSG_PREFIX`] of messages the journal keeps (QoS 1/2).
pub const JOURNALED: &str = "1";
/// The token after [`MSG_PREFIX`] of messages it does not (QoS 0).
pub const NOT_JOURNALED: &str = "0";
/// Where retained changes travel (every node listens to all of them).
pub const RETAINED_PREFIX: &str = "fleetmq.retained";
/// Longest subject sent or subscribed: nats-server's control line (the
/// `PUB`/`SUB` line with the subject) is 4096 bytes by default, and a
/// longer one closes the whole connection. Topics whose escaped subject is
/// longer are not routed between nodes (counted).
pub const MAX_SUBJECT_LEN: usize = 3500;

const ESCAPE: u8 = b'%';

fn plain(byte: u8, first: bool) -> bool {
    byte.is_ascii_graphic()
        && !matches!(byte, b'.' | b'*' | b'>' | ESCAPE)
        && !(first && byte == b'$')
}

/// Appends the token for one topic level to `out`.
pub fn escape_level(level: &str, out: &mut String) {
    if level.is_empty() {
        out.push('%');
        return;
    }
    for (i, byte) in level.bytes().enumerate() {
        if plain(byte, i == 0) {
            out.push(char::from(byte));
        } else {
            // Infallible: writing to a String.
            let _ = write!(out, "%{byte:02X}");
        }
    }
}

/// The topic level a token stands for; `None` for a token no level
/// escapes to (so the mapping stays one to one).
pub fn unescape_token(token: &str) -> Option<String> {
    if token == "%" {
        return Some(String::new());
    }
    let mut bytes = Vec::with_capacity(token.len());
    let mut rest = token.as_bytes();
    while let Some((&byte, tail)) = rest.split_first() {
        if byte != ESCAPE {
            if !plain(byte, bytes.is_empty()) {
                return None;
            }
            bytes.push(byte);
            rest = tail;
            continue;
        }
        let (hex, tail) = tail.split_at_checked(2)?;
        if !hex.iter().all(|h| matches!(h, b'0'..=b'9' | b'A'..=b'F')) {
            return None;
        }
        let value = u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?;
        // An escape of a byte that is kept plain is not canonical.
        if plain(value, bytes.is_empty()) {
            return None;
        }
        bytes.push(value);
        rest = tail;
    }
    String::from_utf8(bytes).ok()
}

fn subject(prefix: &str, tenant: &str, levels: std::str::Split<'_, char>) -> Option<String> {
    let mut out = String::with_capacity(prefix.len() + tenant.len() + 32);
    out.push_str(prefix);
    out.push('.');
    escape_level(tenant, &mut out);
    for level in levels {
        out.push('.');
        escape_level(level, &mut out);
    }
    (out.len() <= MAX_SUBJECT_LEN).then_some(out)
}

/// The subject a message on `topic` in `tenant` is published on
/// (`journaled`: a QoS 1/2 message, which the journal keeps); `None` when
/// it would be longer than [`MAX_SUBJECT_LEN`].
pub fn message_subject(tenant: &str, topic: &TopicName, journaled: bool) -> Option<String> {
    let prefix = match journaled {
        true => journaled_prefix(),
        false => format!("{MSG_PREFIX}.{NOT_JOURNALED}"),
    };
    subject(&prefix, tenant, topic.levels())
}

fn journaled_prefix() -> String {
    format!("{MSG_PREFIX}.{JOURNALED}")
}

/// Every journaled message of every tenant: what the journal's stream
/// captures.
pub fn all_journaled() -> String {
    format!("{}.>", journaled_prefix())
}

/// Every journaled message of `tenant`; of every tenant for the platform
/// namespace (its filters span tenants).
pub fn tenant_journaled(tenant: &str, platform: bool) -> String {
    if platform {
        return all_journaled();
    }
    let mut out = journaled_prefix();
    out.push('.');
    escape_level(tenant, &mut out);
    out.push_str(".>");
    out
}

/// The subject a retained change of `topic` in `tenant` is published on.
pub fn retained_subject(tenant: &str, topic: &TopicName) -> Option<String> {
    subject(RETAINED_PREFIX, tenant, topic.levels())
}

/// Every retained change of every tenant.
pub fn all_retained() -> String {
    format!("{RETAINED_PREFIX}.>")
}

/// The tenant and topic a message or retained subject names, if it is one
/// [`message_subject`] or [`retained_subject`] makes.
pub fn parse_subject(subject: &str) -> Option<(String, TopicName)> {
    let rest = match subject.strip_prefix(MSG_PREFIX) {
        Some(rest) => {
            let rest = rest.strip_prefix('.')?;
            rest.strip_prefix(JOURNALED)
                .or_else(|| rest.strip_prefix(NOT_JOURNALED))?
        }
        None => subject.strip_prefix(RETAINED_PREFIX)?,
    }
    .strip_prefix('.')?;
    let mut tokens = rest.split('.');
    let tenant = unescape_token(tokens.next()?)?;
    let levels: Option<Vec<String>> = tokens.map(unescape_token).collect();
    let levels = levels?;
    if levels.is_empty() {
        return None;
    }
    let topic = TopicName::parse(levels.join("/")).ok()?;
    Some((tenant, topic))
}

/// Filter tokens after the prefix: literal levels escaped, `+` as `*`, a
/// trailing `#` as `>` with its parent as a second subject.
fn filter_subjects<'a>(
    head: Option<&str>,
    levels: impl Iterator<Item = &'a str>,
) -> Option<Vec<String>> {
    // Journaled or not: one subscription for both keeps their order.
    let mut base = format!("{MSG_PREFIX}.*");
    let push = |level: &str, out: &mut String| {
        out.push('.');
        match level {
            "+" => out.push('*'),
            _ => escape_level(level, out),
        }
    };
    if let Some(head) = head {
        push(head, &mut base);
    }
    // Whether a topic level precedes (the tenant is none).
    let mut any = false;
    for level in levels {
        if level == "#" {
            // `#` is last (the filter parsed): `x/#` is `x` and `x.>`; `#`
            // alone is every subject below the tenant (a topic has a level).
            let mut subjects = Vec::with_capacity(2);
            if any {
                subjects.push(base.clone());
            }
            subjects.push(format!("{base}.>"));
            return check(subjects);
        }
        push(level, &mut base);
        any = true;
    }
    check(vec![base])
}

fn check(subjects: Vec<String>) -> Option<Vec<String>> {
    subjects
        .iter()
        .all(|s| s.len() <= MAX_SUBJECT_LEN)
        .then_some(subjects)
}

/// The subjects a node subscribes for a (non-shared, or the inner filter
/// of a shared) `filter` in `tenant`: one, or two for a trailing `#`.
/// `None` when one would be longer than [`MAX_SUBJECT_LEN`].
pub fn tenant_filter_subjects(tenant: &str, filter: &TopicFilter) -> Option<Vec<String>> {
    filter_subjects(Some(tenant), filter.as_str().split('/'))
}

/// The subjects for a platform namespace filter, whose first level is a
/// tenant id (or a wildcard over tenants).
pub fn platform_filter_subjects(filter: &TopicFilter) -> Option<Vec<String>> {
    filter_subjects(None, filter.as_str().split('/'))
}

/// The NATS queue group of MQTT shared group `group` in `tenant`:
/// `{tenant}_{group}`, both escaped (a tenant token has no `_`, so no two
/// pairs meet).
pub fn queue_group(tenant: &str, group: &str) -> String {
    let mut out = String::with_capacity(tenant.len() + group.len() + 1);
    escape_level(tenant, &mut out);
    out.push('_');
    escape_level(group, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use mqtt::testing::{filter, filter_strings, topic, topic_strings};
    use proptest::prelude::*;

    #[test]
    fn reserved_bytes_are_escaped() {
        let s = |t: &str| message_subject("acme", &topic(t), false).unwrap();
        assert_eq!(s("a/b"), "fleetmq.msg.0.acme.a.b");
        assert_eq!(s("a.b/c d"), "fleetmq.msg.0.acme.a%2Eb.c%20d");
        assert_eq!(s("/a//"), "fleetmq.msg.0.acme.%.a.%.%");
        assert_eq!(s("$SYS/x$"), "fleetmq.msg.0.acme.%24SYS.x$");
        assert_eq!(s("*/>/%"), "fleetmq.msg.0.acme.%2A.%3E.%25");
        assert_eq!(s("é"), "fleetmq.msg.0.acme.%C3%A9");
        assert_eq!(
            message_subject("acme", &topic("a/b"), true).unwrap(),
            "fleetmq.msg.1.acme.a.b"
        );
        assert_eq!(all_journaled(), "fleetmq.msg.1.>");
        assert_eq!(tenant_journaled("acme", false), "fleetmq.msg.1.acme.>");
        assert_eq!(tenant_journaled("$platform", true), "fleetmq.msg.1.>");
        assert_eq!(
            retained_subject("acme", &topic("a")).unwrap(),
            "fleetmq.retained.acme.a"
        );
    }

    #[test]
    fn filters_map_wildcards() {
        let f = |x: &str| tenant_filter_subjects("acme", &filter(x)).unwrap();
        assert_eq!(f("a/+/c"), ["fleetmq.msg.*.acme.a.*.c"]);
        assert_eq!(f("a/#"), ["fleetmq.msg.*.acme.a", "fleetmq.msg.*.acme.a.>"]);
        assert_eq!(f("#"), ["fleetmq.msg.*.acme.>"]);
        assert_eq!(f("+/#"), ["fleetmq.msg.*.acme.*", "fleetmq.msg.*.acme.*.>"]);
        assert_eq!(f("a.b/*"), ["fleetmq.msg.*.acme.a%2Eb.%2A"]);
        let p = |x: &str| platform_filter_subjects(&filter(x)).unwrap();
        assert_eq!(p("#"), ["fleetmq.msg.*.>"]);
        assert_eq!(
            p("+/devices/#"),
            ["fleetmq.msg.*.*.devices", "fleetmq.msg.*.*.devices.>"]
        );
        assert_eq!(p("acme/a"), ["fleetmq.msg.*.acme.a"]);
        assert_eq!(queue_group("acme", "g.1 x"), "acme_g%2E1%20x");
        assert_eq!(queue_group("$platform", "g"), "%24platform_g");
    }

    #[test]
    fn subjects_past_the_control_line_are_refused() {
        let long = "a/".repeat(2000) + "a";
        assert!(message_subject("acme", &topic(&long), true).is_none());
        assert!(tenant_filter_subjects("acme", &filter(&long)).is_none());
        let fits = "é".repeat(500);
        assert!(message_subject("acme", &topic(&fits), true).is_some());
    }

    #[test]
    fn tokens_no_level_escapes_to_are_refused() {
        for bad in ["%41", "%2e", "%4", "a%", "$x", "a.b", "%C3"] {
            assert_eq!(unescape_token(bad), None, "{bad}");
        }
        assert_eq!(parse_subject("other.acme.a"), None);
        assert_eq!(parse_subject("fleetmq.msg.1.acme"), None);
        assert_eq!(parse_subject("fleetmq.msg.acme.a"), None);
        assert_eq!(parse_subject("fleetmq.msg.2.acme.a"), None);
    }

    /// A model matcher over NATS subjects: `*` one token, `>` one or more.
    fn nats_matches(pattern: &str, subject: &str) -> bool {
        let p: Vec<&str> = pattern.split('.').collect();
        let s: Vec<&str> = subject.split('.').collect();
        for (i, token) in p.iter().enumerate() {
            match *token {
                ">" => return s.len() > i,
                "*" => {
                    if s.get(i).is_none() {
                        return false;
                    }
                }
                literal => {
                    if s.get(i) != Some(&literal) {
                        return false;
                    }
                }
            }
        }
        p.len() == s.len()
    }

    fn level() -> impl Strategy<Value = String> {
        // Bias towards the bytes that need escaping, Unicode included.
        proptest::string::string_regex("[a-c.*>%$ /é\u{1F600}\t]{0,4}")
            .unwrap()
            .prop_map(|s| s.replace('/', ""))
    }

    fn topic_strategy() -> impl Strategy<Value = TopicName> {
        topic_strings(level()).prop_filter_map("valid topic", |s| TopicName::parse(s).ok())
    }

    fn filter_strategy() -> impl Strategy<Value = TopicFilter> {
        filter_strings(level(), 1..4)
            .prop_filter_map("valid filter", |s| TopicFilter::parse(s).ok())
    }

    proptest! {
        #[test]
        fn topics_round_trip(t in topic_strategy()) {
            let s = message_subject("acme", &t, false).unwrap();
            prop_assert_eq!(
                parse_subject(&message_subject("acme", &t, true).unwrap()),
                Some(("acme".to_owned(), t.clone()))
            );
            for token in s.split('.') {
                prop_assert!(!token.is_empty());
                prop_assert!(token != "*" && token != ">");
                prop_assert!(token.bytes().all(|b| b.is_ascii_graphic()));
            }
            prop_assert_eq!(parse_subject(&s), Some(("acme".to_owned(), t)));
        }

        #[test]
        fn distinct_topics_get_distinct_subjects(a in topic_strategy(), b in topic_strategy()) {
            let (sa, sb) = (message_subject("t", &a, true), message_subject("t", &b, true));
            prop_assert_eq!(a == b, sa == sb);
        }

        /// NATS matching on the mapped subjects is MQTT matching, `$`
        /// topics aside (MQTT-4.7.2-1: the receiving node checks the
        /// filter itself, see `routing`).
        #[test]
        fn subject_matching_is_topic_matching(f in filter_strategy(), t in topic_strategy()) {
            let subjects = tenant_filter_subjects("acme", &f).unwrap();
            let subject = message_subject("acme", &t, t.levels().count() % 2 == 0).unwrap();
            let nats = subjects.iter().any(|p| nats_matches(p, &subject));
            let mqtt = f.matches(&t);
            if t.is_system() {
                prop_assert!(nats || !mqtt);
            } else {
                prop_assert_eq!(nats, mqtt, "{:?} {:?} {:?}", subjects, subject, f);
            }
            // Another tenant's subjects never match.
            let other = message_subject("acmf", &t, true).unwrap();
            prop_assert!(!subjects.iter().any(|p| nats_matches(p, &other)));
        }
    }
}
