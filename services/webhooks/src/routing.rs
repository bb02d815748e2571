//! Which endpoints an event goes to: event type patterns and MQTT topic
//! filters (a small matcher of our own, to keep this crate free of MQTT
//! framing).

use store::{OutboxEvent, Route, WebhookEndpoint};

use crate::Error;

/// Longest topic filter accepted (MQTT allows 65,535 bytes; no receiver
/// needs that much).
const MAX_FILTER_LEN: usize = 1024;

/// Check an MQTT topic filter: non-empty, `#` only as the whole last level,
/// `+` only as a whole level, no NUL.
pub fn validate_topic_filter(filter: &str) -> Result<(), Error> {
    if filter.is_empty() {
        return Err(Error::InvalidTopicFilter { reason: "empty" });
    }
    if filter.len() > MAX_FILTER_LEN {
        return Err(Error::InvalidTopicFilter {
            reason: "longer than 1024 bytes",
        });
    }
    if filter.contains('\0') {
        return Err(Error::InvalidTopicFilter {
            reason: "contains NUL",
        });
    }
    let mut levels = filter.split('/').peekable();
    while let Some(level) = levels.next() {
        // MQTT-4.7.1-2: '#' alone, and last.
        if level.contains('#') && (level != "#" || levels.peek().is_some()) {
            return Err(Error::InvalidTopicFilter {
                reason: "'#' must be the whole last level",
            });
        }
        // MQTT-4.7.1-3: '+' occupies a whole level.
        if level.contains('+') && level != "+" {
            return Err(Error::InvalidTopicFilter {
                reason: "'+' must be a whole level",
            });
        }
    }
    Ok(())
}

/// Does `topic` match `filter` (MQTT rules)? Wildcards at the first level do
/// not match topics starting with `$` (MQTT-4.7.2-1).
pub fn topic_matches(filter: &str, topic: &str) -> bool {
    if topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        return false;
    }
    let mut filter_levels = filter.split('/');
    let mut topic_levels = topic.split('/');
    loop {
        match (filter_levels.next(), topic_levels.next()) {
            // '#' also matches the parent level: "a/#" matches "a".
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(f), Some(t)) if f == t => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// Does an endpoint's list of event types take `event_type`? Entries are
/// exact names, `"*"` (everything) or `prefix.*` (e.g. `device.*`).
pub fn event_type_matches(patterns: &[String], event_type: &str) -> bool {
    patterns.iter().any(|p| {
        p == "*"
            || p == event_type
            || p.strip_suffix('*')
                .is_some_and(|prefix| prefix.ends_with('.') && event_type.starts_with(prefix))
    })
}

/// The fan-out decision for one event and one endpoint. Events with a topic
/// (messages) must match the endpoint's topic filter, if it has one, and
/// are batched when `batching` is on and the endpoint has a filter.
pub fn route(event: &OutboxEvent, endpoint: &WebhookEndpoint, batching: bool) -> Route {
    if !event_type_matches(&endpoint.event_types, &event.event_type) {
        return Route::Skip;
    }
    match (&endpoint.topic_filter, &event.topic) {
        (Some(filter), Some(topic)) if topic_matches(filter, topic) => {
            if batching {
                Route::Batch
            } else {
                Route::Single
            }
        }
        (Some(_), Some(_)) => Route::Skip,
        _ => Route::Single,
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// The MQTT rules written as directly as possible, over level lists.
    fn naive(filter: &[&str], topic: &[&str]) -> bool {
        match (filter.split_first(), topic.split_first()) {
            (Some((&"#", _)), _) => true,
            (Some((&"+", f_rest)), Some((_, t_rest))) => naive(f_rest, t_rest),
            (Some((f, f_rest)), Some((t, t_rest))) => f == t && naive(f_rest, t_rest),
            (None, None) => true,
            _ => false,
        }
    }

    fn level() -> impl Strategy<Value = String> {
        prop_oneof![
            Just(String::new()),
            Just("a".to_owned()),
            Just("b".to_owned()),
            Just("$SYS".to_owned()),
            Just("ü".to_owned()),
            "[a-c€]{1,3}",
        ]
    }

    fn filter_level() -> impl Strategy<Value = String> {
        prop_oneof![level(), Just("+".to_owned())]
    }

    proptest! {
        #[test]
        fn matcher_agrees_with_the_naive_model(
            mut filter in prop::collection::vec(filter_level(), 1..5),
            multi in any::<bool>(),
            topic in prop::collection::vec(level(), 1..6),
        ) {
            if multi {
                filter.push("#".to_owned());
            }
            let filter = filter.join("/");
            let topic = topic.join("/");
            // One empty level makes the empty filter, which MQTT forbids.
            prop_assume!(!filter.is_empty());
            prop_assert!(validate_topic_filter(&filter).is_ok());
            let f: Vec<&str> = filter.split('/').collect();
            let t: Vec<&str> = topic.split('/').collect();
            let dollar = topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#'));
            prop_assert_eq!(topic_matches(&filter, &topic), !dollar && naive(&f, &t));
        }

        #[test]
        fn any_text_is_checked_without_panicking(filter in "\\PC{0,40}", topic in "\\PC{0,40}") {
            let _ = validate_topic_filter(&filter);
            let _ = topic_matches(&filter, &topic);
        }
    }

    #[test]
    fn filters_match_like_mqtt() {
        for (filter, topic, expected) in [
            ("a/b", "a/b", true),
            ("a/b", "a/c", false),
            ("a/+", "a/b", true),
            ("a/+", "a/b/c", false),
            ("a/+/c", "a/x/c", true),
            ("a/#", "a", true),
            ("a/#", "a/b/c", true),
            ("#", "anything/at/all", true),
            ("+", "", true),
            ("+/+", "/x", true),
            ("#", "$SYS/x", false),
            ("+/x", "$SYS/x", false),
            ("$SYS/#", "$SYS/x", true),
            ("devices/+/temp", "devices/d1/temp", true),
            ("d/ü/+", "d/ü/x", true),
        ] {
            assert_eq!(
                topic_matches(filter, topic),
                expected,
                "{filter} vs {topic}"
            );
        }
    }

    #[test]
    fn bad_filters_are_refused() {
        for bad in ["", "a/#/b", "a#", "a/b+", "+a", "a\0b"] {
            assert!(validate_topic_filter(bad).is_err(), "{bad:?}");
        }
        for good in ["#", "+", "a/+/b/#", "devices/d1/temp", "/"] {
            validate_topic_filter(good).unwrap();
        }
    }

    #[test]
    fn event_type_patterns() {
        let p = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(event_type_matches(&p(&["*"]), "device.connected"));
        assert!(event_type_matches(&p(&["device.*"]), "device.connected"));
        assert!(!event_type_matches(&p(&["device.*"]), "message.published"));
        assert!(!event_type_matches(&p(&["dev*"]), "device.connected"));
        assert!(event_type_matches(
            &p(&["a", "message.published"]),
            "message.published"
        ));
        assert!(!event_type_matches(&p(&[]), "message.published"));
    }
}
