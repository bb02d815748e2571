//! Property tests: the subscription trie and the retained trie agree with
//! `TopicFilter::matches` (the naive model) on random topics and filters.

use std::sync::Arc;

use bytes::Bytes;
use mqtt::testing::{filter_strings, topic_strings};
use mqtt::{Properties, QoS, SubscriptionOptions, TopicFilter, TopicName};
use proptest::prelude::*;
use tokio::time::Instant;

use crate::index::{Subscriber, SubscriptionIndex};
use crate::message::Message;
use crate::retained::RetainedTrie;
use crate::session::Session;

fn level() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("a".to_owned()),
        Just("b".to_owned()),
        Just(String::new()),
        Just("$s".to_owned()),
        Just("ü".to_owned()),
    ]
}

fn topic() -> impl Strategy<Value = TopicName> {
    topic_strings(level()).prop_filter_map("valid topic", |t| TopicName::parse(t).ok())
}

fn filter() -> impl Strategy<Value = TopicFilter> {
    filter_strings(level(), 1..5).prop_filter_map("valid filter", |f| TopicFilter::parse(f).ok())
}

proptest! {
    #[test]
    fn subscription_trie_matches_the_naive_matcher(
        filters in prop::collection::vec(filter(), 1..12),
        topics in prop::collection::vec(topic(), 1..8),
    ) {
        let mut idx = SubscriptionIndex::default();
        for (i, f) in filters.iter().enumerate() {
            let id: Arc<str> = Arc::from(format!("c{i}"));
            let sub = Subscriber {
                session: Arc::new(Session::with_bound(id.clone(), 1)),
                options: SubscriptionOptions::new(QoS::AtMostOnce),
                id: None,
            };
            idx.insert(f, &id, sub);
        }
        for t in &topics {
            let mut out = Vec::new();
            idx.matches(t, &mut out);
            let mut got: Vec<String> =
                out.iter().map(|m| m.subscriber.session.client_id().to_string()).collect();
            got.sort();
            let mut want: Vec<String> = filters
                .iter()
                .enumerate()
                .filter(|(_, f)| f.matches(t))
                .map(|(i, _)| format!("c{i}"))
                .collect();
            want.sort();
            prop_assert_eq!(got, want, "topic {}", t);
        }
    }

    #[test]
    fn retained_trie_matches_the_naive_matcher(
        topics in prop::collection::vec(topic(), 1..12),
        filters in prop::collection::vec(filter(), 1..8),
    ) {
        let now = Instant::now();
        let mut trie = RetainedTrie::default();
        for t in &topics {
            let m = Message::new(t.clone(), Bytes::new(), QoS::AtMostOnce, true, Properties::default(), None, now);
            trie.set(t, Some(Arc::new(m)));
        }
        for f in &filters {
            let mut got: Vec<String> = trie
                .lookup(f, now, usize::MAX)
                .messages
                .iter()
                .map(|m| m.topic.as_str().to_owned())
                .collect();
            got.sort();
            let mut want: Vec<String> =
                topics.iter().filter(|t| f.matches(t)).map(|t| t.as_str().to_owned()).collect();
            want.sort();
            want.dedup();
            prop_assert_eq!(got, want, "filter {}", f);
        }
    }
}
