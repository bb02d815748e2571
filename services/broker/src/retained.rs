//! The per-tenant retained message trie.
//!
//! A wildcard SUBSCRIBE walks only the branches its filter can match
//! (literal levels are one hash lookup; `+` visits one level of children;
//! `#` a subtree), never every retained topic, and stops at a cap.

use std::collections::HashMap;
use std::sync::Arc;

use mqtt::{TopicFilter, TopicName};
use tokio::time::Instant;

use crate::index::prune;
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
    children: crate::child_map::ChildMap<Node>,
    message: Option<Arc<Message>>,
    /// Whose quota the message counts against (`None`: published by the
    /// platform, or stored before the store recorded owners).
    owner: Option<Arc<str>>,
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

impl Lookup {
    fn push(&mut self, node: &Node, now: Instant, cap: usize) {
        if let Some(m) = &node.message {
            if m.expired(now) {
                self.expired.push(m.topic.clone());
            } else if self.messages.len() >= cap {
                self.truncated = true;
            } else {
                self.messages.push(m.clone());
            }
        }
    }
}

impl Node {
    fn is_empty(&self) -> bool {
        self.children.is_empty() && self.message.is_none()
    }

    /// Pushes every message of this subtree (`$` children of the root
    /// skipped when `skip_system`) until the cap is hit. Depth-first with
    /// an explicit stack: no recursion per level.
    fn subtree(&self, skip_system: bool, now: Instant, cap: usize, out: &mut Lookup) {
        out.push(self, now, cap);
        let mut stack: Vec<&Node> = self
            .children
            .iter()
            .filter(|(name, _)| !(skip_system && name.starts_with('$')))
            .map(|(_, n)| n)
            .collect();
        while let Some(node) = stack.pop() {
            if out.truncated {
                return;
            }
            out.push(node, now, cap);
            stack.extend(node.children.values());
        }
    }

    /// The messages matching the filter `levels`, iteratively: a stack of
    /// (node, index of the next filter level).
    fn walk(&self, levels: &[&str], now: Instant, cap: usize, out: &mut Lookup) {
        let mut stack: Vec<(&Node, usize)> = vec![(self, 0)];
        while let Some((node, depth)) = stack.pop() {
            if out.truncated {
                return;
            }
            // MQTT-4.7.2-1: wildcards in the first level skip `$` topics.
            let first = depth == 0;
            match levels.get(depth) {
                None => out.push(node, now, cap),
                // 4.7.1.2: `a/#` matches `a` too; the root itself holds
                // nothing.
                Some(&"#") => node.subtree(first, now, cap, out),
                Some(&"+") => stack.extend(
                    node.children
                        .iter()
                        .filter(|(name, _)| !(first && name.starts_with('$')))
                        .map(|(_, child)| (child, depth + 1)),
                ),
                Some(level) => {
                    if let Some(child) = node.children.get(level) {
                        stack.push((child, depth + 1));
                    }
                }
            }
        }
    }
}

crate::index::trie_node!(Node);

/// Retained messages and bytes (topic + payload) held by one owner or a
/// whole tenant.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Usage {
    pub(crate) count: usize,
    pub(crate) bytes: usize,
}

impl Usage {
    fn add(&mut self, bytes: usize) {
        self.count += 1;
        self.bytes += bytes;
    }

    fn sub(&mut self, bytes: usize) {
        self.count = self.count.saturating_sub(1);
        self.bytes = self.bytes.saturating_sub(bytes);
    }
}

/// What one owner (device or credential) and one tenant may keep retained;
/// [`crate::Config`] has the defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RetainedQuota {
    pub(crate) per_owner: Usage,
    pub(crate) per_tenant: Usage,
}

/// Why a retained message was not kept.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum QuotaRefusal {
    #[error("retained quota of this {who} reached ({max_count} messages, {max_bytes} bytes)")]
    Exceeded {
        who: &'static str,
        max_count: usize,
        max_bytes: usize,
    },
}

impl QuotaRefusal {
    /// Metric label.
    pub(crate) fn scope(&self) -> &'static str {
        match self {
            QuotaRefusal::Exceeded { who, .. } => who,
        }
    }
}

fn size(m: &Message) -> usize {
    m.topic.as_str().len() + m.payload.len()
}

/// The retained messages of one tenant.
#[derive(Debug, Default)]
pub(crate) struct RetainedTrie {
    root: Node,
    usage: Usage,
    owners: HashMap<Arc<str>, Usage>,
}

impl RetainedTrie {
    /// Sets (`Some`) or deletes (`None`) the retained message of `topic`
    /// (MQTT-3.3.1-5, MQTT-3.3.1-6, MQTT-3.3.1-7), unchecked.
    pub(crate) fn set(&mut self, topic: &TopicName, message: Option<Arc<Message>>) -> Change {
        // Without a quota nothing is refused.
        self.set_checked(topic, message, None, None)
            .unwrap_or(Change::Unchanged)
    }

    /// As [`RetainedTrie::set`], refused when storing `message` would take
    /// `owner` or the tenant over `quota` (a replacement counts only its
    /// growth; a delete is never refused).
    pub(crate) fn set_checked(
        &mut self,
        topic: &TopicName,
        message: Option<Arc<Message>>,
        owner: Option<Arc<str>>,
        quota: Option<&RetainedQuota>,
    ) -> Result<Change, QuotaRefusal> {
        let Some(m) = message else {
            return Ok(self.delete(topic));
        };
        if let Some(q) = quota {
            self.check(topic, &m, owner.as_deref(), q)?;
        }
        let mut node = &mut self.root;
        for level in topic.levels() {
            node = node.children.get_or_default(level);
        }
        let new = size(&m);
        let old = node.message.replace(m);
        let old_owner = std::mem::replace(&mut node.owner, owner.clone());
        let change = match &old {
            Some(o) => {
                let n = size(o);
                self.usage.sub(n);
                if let Some(who) = old_owner {
                    self.release(&who, n);
                }
                Change::Replaced
            }
            None => Change::Added,
        };
        self.usage.add(new);
        if let Some(who) = owner {
            self.owners.entry(who).or_default().add(new);
        }
        Ok(change)
    }

    fn release(&mut self, owner: &Arc<str>, bytes: usize) {
        if let Some(u) = self.owners.get_mut(owner) {
            u.sub(bytes);
            if u.count == 0 {
                self.owners.remove(owner);
            }
        }
    }

    /// Whether `m` fits: what it would replace at `topic` is given back
    /// first (only to its owner, if that is `owner`).
    fn check(
        &self,
        topic: &TopicName,
        m: &Message,
        owner: Option<&str>,
        q: &RetainedQuota,
    ) -> Result<(), QuotaRefusal> {
        let mut node = Some(&self.root);
        for level in topic.levels() {
            node = node.and_then(|n| n.children.get(level));
        }
        let existing = node.and_then(|n| n.message.as_ref().map(|o| (size(o), n.owner.clone())));
        let new = size(m);
        let fits = |used: Usage, freed: Option<usize>, max: Usage| {
            let count = used.count - usize::from(freed.is_some()) + 1;
            let bytes = used.bytes - freed.unwrap_or(0) + new;
            count <= max.count && bytes <= max.bytes
        };
        let freed = existing.as_ref().map(|(n, _)| *n);
        if !fits(self.usage, freed, q.per_tenant) {
            return Err(QuotaRefusal::Exceeded {
                who: "tenant",
                max_count: q.per_tenant.count,
                max_bytes: q.per_tenant.bytes,
            });
        }
        if let Some(who) = owner {
            let used = self.owners.get(who).copied().unwrap_or_default();
            let mine = existing
                .as_ref()
                .filter(|(_, o)| o.as_deref() == Some(who))
                .map(|(n, _)| *n);
            if !fits(used, mine, q.per_owner) {
                return Err(QuotaRefusal::Exceeded {
                    who: "client",
                    max_count: q.per_owner.count,
                    max_bytes: q.per_owner.bytes,
                });
            }
        }
        Ok(())
    }

    /// Deletes `topic`'s message; iterative descent and prune.
    fn delete(&mut self, topic: &TopicName) -> Change {
        let levels: Vec<&str> = topic.levels().collect();
        let mut node = &mut self.root;
        for level in &levels {
            match node.children.get_mut(level) {
                Some(child) => node = child,
                None => return Change::Unchanged,
            }
        }
        let Some(old) = node.message.take() else {
            return Change::Unchanged;
        };
        let owner = node.owner.take();
        let emptied = node.is_empty();
        let n = size(&old);
        self.usage.sub(n);
        if let Some(who) = owner {
            self.release(&who, n);
        }
        if emptied {
            prune(&mut self.root, &levels, |n| n.message.is_some());
        }
        Change::Removed
    }

    /// Retained messages matching a non-shared `filter`, at most `cap`.
    pub(crate) fn lookup(&self, filter: &TopicFilter, now: Instant, cap: usize) -> Lookup {
        let levels: Vec<&str> = filter.as_str().split('/').collect();
        let mut out = Lookup::default();
        if cap > 0 {
            self.root.walk(&levels, now, cap, &mut out);
        } else {
            out.truncated = self.usage.count > 0;
        }
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
        self.usage.count
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

    #[test]
    fn deep_topics_set_look_up_delete_and_drop_without_recursion() {
        let deep = format!("devices/sensor-1{}", "/".repeat(65_000));
        let t = TopicName::parse(deep.clone()).unwrap();
        let mut trie = RetainedTrie::default();
        trie.set(
            &TopicName::parse("devices/x").unwrap(),
            Some(msg("devices/x")),
        );
        assert_eq!(trie.set(&t, Some(msg(&deep))), Change::Added);
        assert_eq!(found(&trie, "devices/#").len(), 2);
        assert_eq!(found(&trie, "devices/+").len(), 1);
        assert_eq!(trie.set(&t, None), Change::Removed);
        assert_eq!(found(&trie, "devices/#"), ["devices/x"]);
        trie.set(&t, Some(msg(&deep)));
        drop(trie);
    }

    #[test]
    fn quotas_count_owners_and_the_tenant_and_give_back_on_replace() {
        let q = RetainedQuota {
            per_owner: Usage {
                count: 2,
                bytes: 100,
            },
            per_tenant: Usage {
                count: 3,
                bytes: 1000,
            },
        };
        let mut trie = RetainedTrie::default();
        let me: Option<Arc<str>> = Some(Arc::from("d1"));
        let set = |trie: &mut RetainedTrie, t: &str, who: &Option<Arc<str>>| {
            trie.set_checked(
                &TopicName::parse(t).unwrap(),
                Some(msg(t)),
                who.clone(),
                Some(&q),
            )
        };
        assert_eq!(set(&mut trie, "a", &me), Ok(Change::Added));
        assert_eq!(set(&mut trie, "b", &me), Ok(Change::Added));
        // Replacing one's own message frees its place first.
        assert_eq!(set(&mut trie, "b", &me), Ok(Change::Replaced));
        assert!(set(&mut trie, "c", &me).is_err());
        let other: Option<Arc<str>> = Some(Arc::from("d2"));
        assert_eq!(set(&mut trie, "c", &other), Ok(Change::Added));
        assert!(matches!(
            set(&mut trie, "d", &other),
            Err(QuotaRefusal::Exceeded { who: "tenant", .. })
        ));
        trie.set(&TopicName::parse("a").unwrap(), None);
        assert_eq!(set(&mut trie, "c2", &me), Ok(Change::Added));
        assert_eq!(trie.len(), 3);
    }
}
