//! Which endpoints an event goes to: event-type patterns (the catalogue's
//! matcher, [`events::matches_any`]) and MQTT topic filters (the mqtt
//! crate's [`TopicFilter`]: one filter implementation on the platform).

use mqtt::TopicFilter;
use store::{OutboxEvent, Route, WebhookEndpoint};

use crate::Error;

/// Longest topic filter accepted (MQTT allows 65,535 bytes; no receiver
/// needs that much).
const MAX_FILTER_LEN: usize = 1024;

/// Check an endpoint's MQTT topic filter: a valid MQTT filter (MQTT 4.7),
/// at most 1024 bytes, and not a shared subscription (`$share/…` means
/// nothing to a webhook).
pub fn validate_topic_filter(filter: &str) -> Result<TopicFilter, Error> {
    if filter.len() > MAX_FILTER_LEN {
        return Err(Error::InvalidTopicFilter {
            reason: "longer than 1024 bytes".to_owned(),
        });
    }
    let parsed = TopicFilter::parse(filter).map_err(|e| Error::InvalidTopicFilter {
        reason: e.to_string(),
    })?;
    if parsed.shared().is_some() {
        return Err(Error::InvalidTopicFilter {
            reason: "a shared subscription ($share/…) is not a topic filter here".to_owned(),
        });
    }
    Ok(parsed)
}

/// Does `topic` match the stored `filter`? A stored filter that no longer
/// parses matches nothing (it was checked when stored).
pub fn topic_matches(filter: &str, topic: &str) -> bool {
    TopicFilter::parse(filter).is_ok_and(|f| f.matches_str(topic))
}

/// The fan-out decision for one event and one endpoint. Events with a topic
/// (messages) must match the endpoint's topic filter, if it has one, and
/// are batched when `batching` is on and the endpoint has a filter.
pub fn route(event: &OutboxEvent, endpoint: &WebhookEndpoint, batching: bool) -> Route {
    if !events::matches_any(&endpoint.event_types, &event.event_type) {
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
    use super::*;

    #[test]
    fn filters_match_like_mqtt() {
        for (filter, topic, expected) in [
            ("a/b", "a/b", true),
            ("a/+", "a/b/c", false),
            ("a/#", "a", true),
            ("#", "$SYS/x", false),
            ("devices/+/temp", "devices/d1/temp", true),
            ("a/#/b", "a/x/b", false),
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
        let long = "a".repeat(1025);
        for bad in [
            "",
            "a/#/b",
            "a#",
            "a/b+",
            "+a",
            "a\0b",
            "$share/g/a/#",
            &long,
        ] {
            assert!(validate_topic_filter(bad).is_err(), "{bad:?}");
        }
        for good in ["#", "+", "a/+/b/#", "devices/d1/temp", "/"] {
            validate_topic_filter(good).unwrap();
        }
    }
}
