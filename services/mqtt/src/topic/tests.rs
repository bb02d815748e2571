use proptest::prelude::*;

use super::*;
use crate::testing::{filter, filter_strings, topic as name, topic_strings};

#[test]
fn topic_name_rules() {
    assert_eq!(TopicName::parse(""), Err(TopicError::Empty));
    assert_eq!(TopicName::parse("a/+"), Err(TopicError::WildcardInName));
    assert_eq!(TopicName::parse("a/#"), Err(TopicError::WildcardInName));
    assert_eq!(TopicName::parse("a\0b"), Err(TopicError::NullCharacter));
    assert_eq!(
        TopicName::parse("a".repeat(65_536)),
        Err(TopicError::TooLong(65_536))
    );
    assert!(TopicName::parse("a".repeat(65_535)).is_ok());
    for ok in ["/", "//", "a", "/a/", "$SYS/x", "ü/日本", " "] {
        assert!(TopicName::parse(ok).is_ok(), "{ok}");
    }
}

#[test]
fn topic_filter_rules() {
    for ok in [
        "#",
        "+",
        "+/+",
        "a/#",
        "/#",
        "+/a/#",
        "a//+",
        "$SYS/#",
        "日本/+/#",
    ] {
        assert!(TopicFilter::parse(ok).is_ok(), "{ok}");
    }
    let bad = [
        ("", TopicError::Empty),
        ("a/#/b", TopicError::MisplacedMultiLevelWildcard),
        ("a#", TopicError::MisplacedMultiLevelWildcard),
        ("a/b#", TopicError::MisplacedMultiLevelWildcard),
        ("#/", TopicError::MisplacedMultiLevelWildcard),
        ("a+", TopicError::MisplacedSingleLevelWildcard),
        ("a/+b", TopicError::MisplacedSingleLevelWildcard),
        ("a\0", TopicError::NullCharacter),
    ];
    for (s, e) in bad {
        assert_eq!(TopicFilter::parse(s), Err(e), "{s}");
    }
}

#[test]
fn spec_matching_examples() {
    // 4.7.1.2
    let f = filter("sport/tennis/player1/#");
    assert!(f.matches(&name("sport/tennis/player1")));
    assert!(f.matches(&name("sport/tennis/player1/ranking")));
    assert!(f.matches(&name("sport/tennis/player1/score/wimbledon")));
    assert!(filter("sport/#").matches(&name("sport")));
    // 4.7.1.3
    let f = filter("sport/tennis/+");
    assert!(f.matches(&name("sport/tennis/player1")));
    assert!(!f.matches(&name("sport/tennis/player1/ranking")));
    assert!(!filter("sport/+").matches(&name("sport")));
    assert!(filter("sport/+").matches(&name("sport/")));
    assert!(filter("+/+").matches(&name("/finance")));
    assert!(filter("/+").matches(&name("/finance")));
    assert!(!filter("+").matches(&name("/finance")));
    assert!(filter("#").matches(&name("/")));
}

#[test]
fn dollar_topics_not_matched_by_leading_wildcards() {
    // MQTT-4.7.2-1
    assert!(!filter("#").matches(&name("$SYS/uptime")));
    assert!(!filter("+/monitor/Clients").matches(&name("$SYS/monitor/Clients")));
    assert!(filter("$SYS/#").matches(&name("$SYS/monitor/Clients")));
    assert!(filter("$SYS/monitor/+").matches(&name("$SYS/monitor/Clients")));
}

#[test]
fn multibyte_first_characters_are_safe() {
    // rumqtt's `topic[..1]` panics here; walking levels does not.
    assert!(filter("€/+").matches(&name("€/x")));
    assert!(!filter("+/x").matches(&name("ü")));
    assert!(filter("#").matches(&name("日本")));
    assert!(!filter("日/#").matches(&name("日本")));
}

#[test]
fn shared_subscriptions() {
    let s = SharedSubscription::parse("$share/g1/a/+/c").unwrap();
    assert_eq!(s.group, "g1");
    assert_eq!(s.filter.as_str(), "a/+/c");
    let f = filter("$share/g1/a/#");
    assert_eq!(f.shared().unwrap().group, "g1");
    assert!(f.matches(&name("a/b")));
    assert!(!f.matches(&name("$share/g1/a")));
    assert!(f.has_wildcards());
    assert!(!filter("$share/g/a").has_wildcards());
    let bad = [
        ("$share/", TopicError::EmptySharedFilter),
        ("$share/g", TopicError::EmptySharedFilter),
        ("$share/g/", TopicError::EmptySharedFilter),
        ("$share//a", TopicError::InvalidShareName),
        ("$share/g+/a", TopicError::InvalidShareName),
        ("$share/#/a", TopicError::InvalidShareName),
        ("$share/g/a/#/b", TopicError::MisplacedMultiLevelWildcard),
    ];
    for (s, e) in bad {
        assert_eq!(TopicFilter::parse(s), Err(e), "{s}");
        assert_eq!(SharedSubscription::parse(s), Err(e), "{s}");
    }
    assert_eq!(SharedSubscription::parse("a/b"), Err(TopicError::NotShared));
    assert_eq!(filter("$sharex/a").shared(), None);
}

/// Reference matcher written the slow, obvious way on level slices.
fn naive(f: &[&str], t: &[&str]) -> bool {
    match (f.split_first(), t.split_first()) {
        (None, None) => true,
        (Some((&"#", _)), _) => true,
        (Some((&"+", fr)), Some((_, tr))) => naive(fr, tr),
        (Some((fl, fr)), Some((tl, tr))) => fl == tl && naive(fr, tr),
        _ => false,
    }
}

fn naive_matches(f: &str, t: &str) -> bool {
    let fl: Vec<&str> = f.split('/').collect();
    let tl: Vec<&str> = t.split('/').collect();
    if t.starts_with('$') && matches!(fl.first(), Some(&"+" | &"#")) {
        return false;
    }
    naive(&fl, &tl)
}

fn level() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        Just("a".to_owned()),
        Just("b".to_owned()),
        Just("ü".to_owned()),
        Just("日本".to_owned()),
        Just("$SYS".to_owned()),
        Just("€x".to_owned()),
        "[^/+#\u{0}]{1,3}",
    ]
}

fn topic_string() -> impl Strategy<Value = String> {
    topic_strings(level()).prop_filter("non-empty", |s| !s.is_empty())
}

fn filter_string() -> impl Strategy<Value = String> {
    filter_strings(level(), 0..5).prop_filter("non-empty, not shared", |s| {
        !s.is_empty() && !s.starts_with(SHARE_PREFIX)
    })
}

proptest! {
    #[test]
    fn matcher_agrees_with_naive_model(f in filter_string(), t in topic_string()) {
        let filter = TopicFilter::parse(f.clone()).unwrap();
        let topic = TopicName::parse(t.clone()).unwrap();
        prop_assert_eq!(filter.matches(&topic), naive_matches(&f, &t));
    }

    #[test]
    fn every_topic_matches_itself_and_hash(t in topic_string()) {
        let topic = TopicName::parse(t.clone()).unwrap();
        prop_assert!(TopicFilter::parse(t).unwrap().matches(&topic));
        prop_assert_eq!(TopicFilter::parse("#").unwrap().matches(&topic), !topic.is_system());
    }

    #[test]
    fn parse_never_panics_on_unicode(s in "\\PC{0,12}") {
        let _ = TopicName::parse(s.clone());
        // A literal filter matches the identical name.
        let f = TopicFilter::parse(s.clone()).ok().filter(|f| f.shared().is_none());
        if let (Some(f), Ok(n)) = (f, TopicName::parse(s)) {
            prop_assert!(f.matches(&n));
        }
    }

    #[test]
    fn unicode_names_round_trip(t in topic_string()) {
        let topic = TopicName::parse(t.clone()).unwrap();
        prop_assert_eq!(topic.as_str(), t.as_str());
        prop_assert_eq!(topic.levels().count(), t.split('/').count());
    }
}

/// Fuzz finding (topic target): `$share/g/$share/` was a valid filter whose
/// `shared()` was `None`, so the trie stored it as a plain filter while
/// `matches` stripped `$share/g/`; `$share/g/$share/h/x` had its prefix
/// stripped once by the trie and twice by `matches`. Nested shares are
/// refused everywhere alike.
#[test]
fn a_shared_filter_cannot_itself_be_shared() {
    for s in [
        "$share/g/$share/",
        "$share/g/$share/h/x",
        "$share/g/$share/h/#",
    ] {
        assert_eq!(TopicFilter::parse(s), Err(TopicError::NestedShare), "{s}");
        assert_eq!(
            SharedSubscription::parse(s),
            Err(TopicError::NestedShare),
            "{s}"
        );
    }
    // `$share` as a plain level of the inner filter is still a filter.
    let f = filter("$share/g/$share");
    assert_eq!(f.shared().unwrap().filter.as_str(), "$share");
    assert!(f.matches(&name("$share")));
    assert!(filter("$share/g/a/$share/x").matches(&name("a/$share/x")));
}

#[test]
fn covers_examples() {
    for (outer, inner, expected) in [
        ("a/#", "a/b", true),
        ("a/#", "a", true),
        ("a/#", "a/+/c", true),
        ("a/+", "a/b", true),
        ("a/+", "a/#", false),
        ("a/+", "a/b/c", false),
        ("a/b", "a/+", false),
        ("#", "+/#", true),
        ("+/#", "#", true),
        ("+", "#", false),
        ("#", "$SYS/x", false),
        ("+/x", "$SYS/x", false),
        ("$SYS/#", "$SYS/x", true),
        ("commands/d1/#", "$share/g/commands/d1/+", true),
    ] {
        assert_eq!(
            filter(outer).covers(&filter(inner)),
            expected,
            "{outer} covers {inner}"
        );
    }
}

#[test]
fn overlaps_examples() {
    for (a, b, expected) in [
        ("a/#", "a", true),
        ("a/+", "+/b", true),
        ("a/b", "a/c", false),
        ("a/+", "a/b/c", false),
        ("#", "$SYS/x", false),
        ("+/x", "$SYS/+", false),
        ("$SYS/#", "$SYS/+", true),
    ] {
        assert_eq!(filter(a).overlaps(&filter(b)), expected, "{a} ~ {b}");
        assert_eq!(filter(b).overlaps(&filter(a)), expected, "{b} ~ {a}");
    }
}

/// Every topic of up to one level more than the longer filter, built from
/// the filters' own literal levels and one fresh level: where two filters
/// differ on some topic, they differ on one of these. The empty string is
/// among them: it is no valid topic name, but `covers` and `overlaps` work
/// on levels and count it (for a deny rule, `/#` overlapping `+` errs on
/// the safe side).
fn witness_topics(a: &str, b: &str) -> Vec<String> {
    let mut levels: Vec<&str> = a
        .split('/')
        .chain(b.split('/'))
        .filter(|l| *l != "+" && *l != "#")
        .chain(["z", "$z"])
        .collect();
    levels.sort_unstable();
    levels.dedup();
    let depth = a.split('/').count().max(b.split('/').count()) + 1;
    let mut all = Vec::new();
    let mut frontier = vec![String::new()];
    for d in 0..depth {
        let mut next = Vec::new();
        for prefix in &frontier {
            for level in &levels {
                let t = if d == 0 {
                    (*level).to_owned()
                } else {
                    format!("{prefix}/{level}")
                };
                all.push(t.clone());
                next.push(t);
            }
        }
        frontier = next;
    }
    all
}

fn small_filter() -> impl Strategy<Value = String> {
    let level = prop_oneof![Just("a"), Just("b"), Just("$SYS"), Just(""), Just("+")];
    (prop::collection::vec(level, 0..4), any::<bool>()).prop_filter_map(
        "non-empty",
        |(levels, hash)| {
            let mut s = levels.join("/");
            if hash {
                s = if levels.is_empty() {
                    "#".to_owned()
                } else {
                    format!("{s}/#")
                };
            }
            (!s.is_empty()).then_some(s)
        },
    )
}

proptest! {
    #[test]
    fn covers_agrees_with_the_topics_each_matches(o in small_filter(), i in small_filter()) {
        let (outer, inner) = (filter(&o), filter(&i));
        let model = witness_topics(&o, &i)
            .iter()
            .all(|t| !inner.matches_str(t) || outer.matches_str(t));
        prop_assert_eq!(outer.covers(&inner), model, "{} covers {}", o, i);
    }

    #[test]
    fn overlaps_agrees_with_the_topics_both_match(a in small_filter(), b in small_filter()) {
        let (fa, fb) = (filter(&a), filter(&b));
        let model = witness_topics(&a, &b)
            .iter()
            .any(|t| fa.matches_str(t) && fb.matches_str(t));
        prop_assert_eq!(fa.overlaps(&fb), model, "{} ~ {}", a, b);
        prop_assert_eq!(fb.overlaps(&fa), model);
    }

    #[test]
    fn matches_str_is_matches(f in filter_string(), t in topic_string()) {
        let topic = TopicName::parse(t.clone()).unwrap();
        prop_assert_eq!(filter(&f).matches_str(&t), filter(&f).matches(&topic));
    }
}
