//! The per-tenant retained message trie.
//!
//! A wildcard SUBSCRIBE walks only the branches its filter can match
//! (literal levels are one hash lookup; `+` visits one level of children;
//! `#` a subtree), never every retained topic, and stops at a cap.

use std::collections::HashMap;
use std::sync::Arc;

use mqtt::{TopicFilter, TopicName};
use tokio::time::Instant;

use crate::message::Message;

/// What [`RetainedTrie::set`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Change {
    Added,
    Replaced,
    Removed,
    Unchanged,
}

#[derive(Debug, Default)]
struct Node {
    children: HashMap<Box<str>, Node>,
    message: Option<Arc<Message>>,
}

/// Outcome of a lookup.
#[derive(Debug, Default)]
pub(crate) struct Lookup {
    pub(crate) messages: Vec<Arc<Message>>,
    /// Whether more matched than the cap allowed.
    pub(crate) truncated: bool,
    /// Matching topics whose message has expired, to be removed.
    pub(crate) expired: Vec<TopicName>,
}

impl Node {
    fn is_empty(&self) -> bool {
        self.children.is_empty() && self.message.is_none()
    }

    fn push(&self, now: Instant, cap: usize, out: &mut Lookup) {
        if let Some(m) = &self.message {
            if m.expired(now) {
                out.expired.push(m.topic.clone());
            } else if out.messages.len() >= cap {
                out.truncated = true;
            } else {
                out.messages.push(m.clone());
            }
        }
    }

    fn subtree(&self, skip_system: bool, now: Instant, cap: usize, out: &mut Lookup) {
        self.push(now, cap, out);
        for (name, child) in &self.children {
            if out.truncated {
                return;
            }
            if skip_system && name.starts_with('$') {
                continue;
            }
            child.subtree(false, now, cap, out);
        }
    }

    fn walk(&self, levels: &[&str], depth: usize, now: Instant, cap: usize, out: &mut Lookup) {
        if out.truncated {
            return;
        }
        // MQTT-4.7.2-1: wildcards in the first level skip `$` topics.
        let first = depth == 0;
        match levels.split_first() {
            None => self.push(now, cap, out),
            Some((&"#", _)) => {
                // 4.7.1.2: `a/#` matches `a` too; the root itself holds
                // nothing.
                self.subtree(first, now, cap, out);
            }
            Some((&"+", rest)) => {
                for (name, child) in &self.children {
                    if first && name.starts_with('$') {
                        continue;
                    }
                    child.walk(rest, depth + 1, now, cap, out);
                }
            }
            Some((level, rest)) => {
                if let Some(child) = self.children.get(*level) {
                    child.walk(rest, depth + 1, now, cap, out);
                }
            }
        }
    }

    fn remove(&mut self, levels: &[&str]) -> bool {
        match levels.split_first() {
            None => self.message.take().is_some(),
            Some((level, rest)) => {
                let Some(child) = self.children.get_mut(*level) else {
                    return false;
                };
                let removed = child.remove(rest);
                if child.is_empty() {
                    self.children.remove(*level);
                }
                removed
            }
        }
    }
}

/// The retained messages of one tenant.
#[derive(Debug, Default)]
pub(crate) struct RetainedTrie {
    root: Node,
    len: usize,
}

impl RetainedTrie {
    /// Sets (`Some`) or deletes (`None`) the retained message of `topic`
    /// (MQTT-3.3.1-5, MQTT-3.3.1-6, MQTT-3.3.1-7).
    pub(crate) fn set(&mut self, topic: &TopicName, message: Option<Arc<Message>>) -> Change {
        match message {
            Some(m) => {
                let mut node = &mut self.root;
                for level in topic.levels() {
                    node = node.children.entry(Box::from(level)).or_default();
                }
                if node.message.replace(m).is_some() {
                    Change::Replaced
                } else {
                    self.len += 1;
                    Change::Added
                }
            }
            None => {
                let levels: Vec<&str> = topic.levels().collect();
                if self.root.remove(&levels) {
                    self.len = self.len.saturating_sub(1);
                    Change::Removed
                } else {
                    Change::Unchanged
                }
            }
        }
    }

    /// Retained messages matching a non-shared `filter`, at most `cap`.
    pub(crate) fn lookup(&self, filter: &TopicFilter, now: Instant, cap: usize) -> Lookup {
        let levels: Vec<&str> = filter.as_str().split('/').collect();
        let mut out = Lookup::default();
        self.root.walk(&levels, 0, now, cap, &mut out);
        out
    }

    /// Removes the retained message of `topic` if it has expired by `now`;
    /// returns whether it did.
    pub(crate) fn remove_expired(&mut self, topic: &TopicName, now: Instant) -> bool {
        let mut node = &self.root;
        for level in topic.levels() {
            match node.children.get(level) {
                Some(child) => node = child,
                None => return false,
            }
        }
        if !node.message.as_ref().is_some_and(|m| m.expired(now)) {
            return false;
        }
        self.set(topic, None) == Change::Removed
    }

    /// Number of retained topics.
    pub(crate) fn len(&self) -> usize {
        self.len
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use mqtt::{Properties, QoS};

    fn msg(topic: &str) -> Arc<Message> {
        Arc::new(Message::new(
            TopicName::parse(topic).unwrap(),
            Bytes::from_static(b"x"),
            QoS::AtMostOnce,
            true,
            Properties::default(),
            None,
            Instant::now(),
        ))
    }

    fn found(trie: &RetainedTrie, filter: &str) -> Vec<String> {
        let mut v: Vec<String> = trie
            .lookup(&TopicFilter::parse(filter).unwrap(), Instant::now(), 100)
            .messages
            .iter()
            .map(|m| m.topic.as_str().to_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn lookup_agrees_with_the_matcher() {
        let topics = ["a", "a/b", "a/b/c", "a/c", "$SYS/x", "/a", "b/b", "a//b"];
        let filters = [
            "#", "+", "a/#", "a/+", "+/b", "$SYS/#", "+/+", "/+", "a/+/b", "a/b",
        ];
        let mut trie = RetainedTrie::default();
        for t in topics {
            assert_eq!(
                trie.set(&TopicName::parse(t).unwrap(), Some(msg(t))),
                Change::Added
            );
        }
        for f in filters {
            let filter = TopicFilter::parse(f).unwrap();
            let mut want: Vec<String> = topics
                .iter()
                .filter(|t| filter.matches(&TopicName::parse(**t).unwrap()))
                .map(|t| t.to_string())
                .collect();
            want.sort();
            assert_eq!(found(&trie, f), want, "filter {f}");
        }
    }

    #[test]
    fn set_replace_delete_and_cap() {
        let mut trie = RetainedTrie::default();
        let t = TopicName::parse("a/b").unwrap();
        assert_eq!(trie.set(&t, Some(msg("a/b"))), Change::Added);
        assert_eq!(trie.set(&t, Some(msg("a/b"))), Change::Replaced);
        assert_eq!(trie.len(), 1);
        assert_eq!(trie.set(&t, None), Change::Removed);
        assert_eq!(trie.set(&t, None), Change::Unchanged);
        assert!(trie.root.is_empty());
        for i in 0..10 {
            let t = format!("x/{i}");
            trie.set(&TopicName::parse(t.clone()).unwrap(), Some(msg(&t)));
        }
        let l = trie.lookup(&TopicFilter::parse("x/+").unwrap(), Instant::now(), 3);
        assert_eq!(l.messages.len(), 3);
        assert!(l.truncated);
    }

    #[tokio::test(start_paused = true)]
    async fn expired_messages_are_reported_and_removed() {
        let mut trie = RetainedTrie::default();
        let t = TopicName::parse("e/1").unwrap();
        let p = Properties {
            message_expiry_interval: Some(5),
            ..Properties::default()
        };
        let m = Message::new(
            t.clone(),
            Bytes::new(),
            QoS::AtMostOnce,
            true,
            p,
            None,
            Instant::now(),
        );
        trie.set(&t, Some(Arc::new(m)));
        assert!(!trie.remove_expired(&t, Instant::now()));
        tokio::time::advance(std::time::Duration::from_secs(6)).await;
        let l = trie.lookup(&TopicFilter::parse("e/#").unwrap(), Instant::now(), 10);
        assert!(l.messages.is_empty());
        assert_eq!(l.expired, std::slice::from_ref(&t));
        assert!(trie.remove_expired(&t, Instant::now()));
        assert_eq!(trie.len(), 0);
    }
}
