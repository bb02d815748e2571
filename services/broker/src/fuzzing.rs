//! The two tries behind a narrow public face, for the cargo-fuzz targets in
//! `fuzz/` only: compiled with the `fuzzing` feature, which nothing the
//! platform ships turns on. The targets drive these with random
//! subscribe/unsubscribe/publish and retain/lookup sequences and compare
//! every answer with `TopicFilter::matches`, the crate's one matcher.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use mqtt::{Properties, QoS, SubscriptionOptions, TopicFilter, TopicName};
use tokio::time::Instant;

use crate::index::{Subscriber, SubscriptionIndex};
use crate::message::Message;
use crate::retained::RetainedTrie as Retained;
use crate::session::Session;

/// One subscription a topic matched.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Match {
    /// The subscribing client.
    pub client: String,
    /// The id given to [`SubscriptionTrie::subscribe`].
    pub id: u32,
    /// The `$share/` filter it came through, if shared.
    pub shared: Option<String>,
}

/// The per-tenant subscription index.
#[derive(Debug, Default)]
pub struct SubscriptionTrie {
    index: SubscriptionIndex,
    sessions: HashMap<String, Arc<Session>>,
}

impl SubscriptionTrie {
    /// Adds or replaces `client`'s subscription to `filter`, tagged `id`;
    /// whether one existed.
    pub fn subscribe(&mut self, filter: &TopicFilter, client: &str, id: u32) -> bool {
        let session = self
            .sessions
            .entry(client.to_owned())
            .or_insert_with(|| Arc::new(Session::with_bound(Arc::from(client), 1)))
            .clone();
        let key = session.client_id().clone();
        let sub = Subscriber {
            session,
            options: SubscriptionOptions::new(QoS::AtMostOnce),
            id: Some(id),
        };
        self.index.insert(filter, &key, sub)
    }

    /// Removes `client`'s subscription to `filter`; whether it existed.
    pub fn unsubscribe(&mut self, filter: &TopicFilter, client: &str) -> bool {
        self.index.remove(filter, client)
    }

    /// Whether `client` holds a subscription to `filter`.
    pub fn contains(&self, filter: &TopicFilter, client: &str) -> bool {
        self.index.contains(filter, client)
    }

    /// Every subscription `topic` reaches (one member per shared group).
    pub fn matches(&self, topic: &TopicName) -> Vec<Match> {
        let mut out = Vec::new();
        self.index.matches(topic, &mut out);
        out.into_iter()
            .map(|m| Match {
                client: m.subscriber.session.client_id().to_string(),
                id: m.subscriber.id.unwrap_or(0),
                shared: m.shared.map(TopicFilter::into_string),
            })
            .collect()
    }

    /// Number of subscriptions.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Number of catch-all subscriptions.
    pub fn catch_all(&self) -> usize {
        self.index.catch_all()
    }
}

/// The per-tenant retained message trie.
#[derive(Debug, Default)]
pub struct RetainedTrie {
    trie: Retained,
}

impl RetainedTrie {
    /// Retains (`Some`) or clears (`None`) `topic`'s message.
    pub fn set(&mut self, topic: &TopicName, payload: Option<&[u8]>) {
        let message = payload.map(|p| {
            Arc::new(Message::new(
                topic.clone(),
                Bytes::copy_from_slice(p),
                QoS::AtMostOnce,
                true,
                Properties::default(),
                None,
                Instant::now(),
            ))
        });
        self.trie.set(topic, message);
    }

    /// Topics and payloads retained under a non-shared `filter`, at most
    /// `cap`, and whether more matched.
    pub fn lookup(&self, filter: &TopicFilter, cap: usize) -> (Vec<(String, Vec<u8>)>, bool) {
        let found = self.trie.lookup(filter, Instant::now(), cap);
        let messages = found
            .messages
            .iter()
            .map(|m| (m.topic.as_str().to_owned(), m.payload.to_vec()))
            .collect();
        (messages, found.truncated)
    }
}
