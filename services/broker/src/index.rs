//! The per-tenant subscription index: a trie over topic levels.
//!
//! Matching walks the topic's levels and at each node looks up at most three
//! children (the literal level, `+` and `#`), so its cost grows with topic
//! depth (and the number of wildcard branches that actually exist), not with
//! the number of subscriptions. Shared subscriptions (4.8.2) live at the
//! node of their inner filter, one [`Group`] per share name, and each
//! matching group yields exactly one member, chosen round-robin.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use mqtt::{SubscriptionOptions, TopicFilter, TopicName};

use crate::session::Session;

/// A session's subscription as the index keeps it.
#[derive(Debug, Clone)]
pub(crate) struct Subscriber {
    pub(crate) session: Arc<Session>,
    pub(crate) options: SubscriptionOptions,
    /// Subscription Identifier (3.8.2.1.2).
    pub(crate) id: Option<u32>,
}

/// One match of a topic: the subscriber and, when it came through a shared
/// subscription, that `$share/` filter (No Local and the one-copy merge do
/// not apply to those).
#[derive(Debug, Clone)]
pub(crate) struct Matched {
    pub(crate) subscriber: Subscriber,
    pub(crate) shared: Option<TopicFilter>,
}

#[derive(Debug)]
struct Group {
    /// The whole `$share/{group}/{filter}`.
    filter: TopicFilter,
    members: Vec<(Arc<str>, Subscriber)>,
    /// Round-robin cursor; atomic so matching needs only a read lock.
    next: AtomicUsize,
}

impl Group {
    /// The next member, preferring one that is connected.
    fn pick(&self) -> Option<&Subscriber> {
        let n = self.members.len();
        if n == 0 {
            return None;
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed) % n;
        let ordered = self.members.iter().cycle().skip(start).take(n);
        let mut first = None;
        for (_, sub) in ordered {
            if sub.session.is_online() {
                return Some(sub);
            }
            first.get_or_insert(sub);
        }
        first
    }
}

#[derive(Debug, Default)]
struct Node {
    children: crate::child_map::ChildMap<Node>,
    subscribers: HashMap<Arc<str>, Subscriber>,
    groups: HashMap<Box<str>, Group>,
}

impl Node {
    fn is_empty(&self) -> bool {
        self.children.is_empty() && self.subscribers.is_empty() && self.groups.is_empty()
    }

    fn collect(&self, out: &mut Vec<Matched>) {
        out.extend(self.subscribers.values().map(|s| Matched {
            subscriber: s.clone(),
            shared: None,
        }));
        out.extend(self.groups.values().filter_map(|g| {
            g.pick().map(|s| Matched {
                subscriber: s.clone(),
                shared: Some(g.filter.clone()),
            })
        }));
    }

    /// Every subscription matching `levels`, walked with an explicit stack
    /// of (node, level index): a topic's depth is the peer's to choose, so
    /// no walk of this trie recurses per level.
    fn walk(&self, levels: &[&str], system: bool, out: &mut Vec<Matched>) {
        let mut stack: Vec<(&Node, usize)> = vec![(self, 0)];
        while let Some((node, depth)) = stack.pop() {
            let Some(level) = levels.get(depth) else {
                node.collect(out);
                // 4.7.1.2: `a/#` also matches `a`.
                if let Some(hash) = node.children.get("#") {
                    hash.collect(out);
                }
                continue;
            };
            if let Some(child) = node.children.get(level) {
                stack.push((child, depth + 1));
            }
            // MQTT-4.7.2-1: a filter starting with a wildcard does not
            // match a topic starting with `$`.
            if !(depth == 0 && system) {
                if let Some(plus) = node.children.get("+") {
                    stack.push((plus, depth + 1));
                }
                if let Some(hash) = node.children.get("#") {
                    hash.collect(out);
                }
            }
        }
    }

    /// Removes `client`'s entry at the end of `levels`; returns whether it
    /// was there.
    fn remove_entry(&mut self, group: Option<&str>, client: &str) -> bool {
        match group {
            None => self.subscribers.remove(client).is_some(),
            Some(g) => {
                let Some(grp) = self.groups.get_mut(g) else {
                    return false;
                };
                let before = grp.members.len();
                grp.members.retain(|(c, _)| &**c != client);
                let removed = grp.members.len() != before;
                if grp.members.is_empty() {
                    self.groups.remove(g);
                }
                removed
            }
        }
    }

    /// Removes `client`'s entry below this node and prunes the nodes left
    /// empty, without recursion: one descent to remove, one to find the
    /// highest node that only led to the emptied leaf, and one cut there
    /// (the chain below is dropped by [`Node`]'s iterative `Drop`).
    fn remove(&mut self, levels: &[&str], group: Option<&str>, client: &str) -> bool {
        let mut node = &mut *self;
        for level in levels {
            match node.children.get_mut(level) {
                Some(child) => node = child,
                None => return false,
            }
        }
        if !node.remove_entry(group, client) {
            return false;
        }
        if node.is_empty() {
            prune(self, levels, |n| {
                !n.subscribers.is_empty() || !n.groups.is_empty()
            });
        }
        true
    }
}

/// Cuts the chain of nodes along `levels` that holds nothing but the path
/// to an emptied leaf: the cut is below the deepest node that `keeps`
/// (or has another child), or below the root. Iterative; shared by the
/// subscription index and the retained trie through [`Children`].
pub(crate) fn prune<N: Children>(root: &mut N, levels: &[&str], keeps: impl Fn(&N) -> bool) {
    let mut cut = 0;
    let mut node = &*root;
    for (depth, level) in levels.iter().enumerate() {
        let Some(child) = node.child(level) else {
            return;
        };
        let below = depth + 1;
        if below < levels.len() && (keeps(child) || child.child_count() > 1) {
            cut = below;
        }
        node = child;
    }
    let mut node = &mut *root;
    for level in levels.iter().take(cut) {
        match node.child_mut(level) {
            Some(child) => node = child,
            None => return,
        }
    }
    if let Some(level) = levels.get(cut) {
        node.remove_child(level);
    }
}

/// What [`prune`] and [`drop_iteratively`] need of a trie node.
pub(crate) trait Children: Sized {
    fn child(&self, level: &str) -> Option<&Self>;
    fn child_mut(&mut self, level: &str) -> Option<&mut Self>;
    fn child_count(&self) -> usize;
    fn remove_child(&mut self, level: &str);
    /// Moves every child out (into `into`), leaving this node childless.
    fn take_children(&mut self, into: &mut Vec<Self>);
}

/// Drops the children of `node` without recursing: each node is emptied of
/// its children before it is dropped, so a chain as deep as a peer's topic
/// drops in constant stack.
pub(crate) fn drop_iteratively<N: Children>(node: &mut N) {
    let mut stack = Vec::new();
    node.take_children(&mut stack);
    while let Some(mut n) = stack.pop() {
        n.take_children(&mut stack);
    }
}

/// Implements [`Children`] and the iterative `Drop` for a trie node type
/// whose children are in `children: ChildMap<Self>` (`crate::child_map`).
macro_rules! trie_node {
    ($node:ty) => {
        impl $crate::index::Children for $node {
            fn child(&self, level: &str) -> Option<&Self> {
                self.children.get(level)
            }
            fn child_mut(&mut self, level: &str) -> Option<&mut Self> {
                self.children.get_mut(level)
            }
            fn child_count(&self) -> usize {
                self.children.len()
            }
            fn remove_child(&mut self, level: &str) {
                self.children.remove(level);
            }
            fn take_children(&mut self, into: &mut Vec<Self>) {
                self.children.drain_into(into);
            }
        }

        impl Drop for $node {
            fn drop(&mut self) {
                $crate::index::drop_iteratively(self);
            }
        }
    };
}
pub(crate) use trie_node;

trie_node!(Node);

/// The filter levels and share name of a (possibly shared) filter.
fn split(filter: &TopicFilter) -> (Option<String>, TopicFilter) {
    match filter.shared() {
        Some(s) => (Some(s.group), s.filter),
        None => (None, filter.clone()),
    }
}

/// All subscriptions of one tenant.
#[derive(Debug, Default)]
pub(crate) struct SubscriptionIndex {
    root: Node,
    len: usize,
    /// How many of them are catch-all filters (`#`, `+/#`, …).
    catch_all: usize,
}

impl SubscriptionIndex {
    /// Adds or replaces `client`'s subscription to `filter`; returns whether
    /// one existed (for Retain Handling 1, 3.8.3.1).
    pub(crate) fn insert(
        &mut self,
        filter: &TopicFilter,
        client: &Arc<str>,
        sub: Subscriber,
    ) -> bool {
        let (group, inner) = split(filter);
        let mut node = &mut self.root;
        for level in inner.as_str().split('/') {
            node = node.children.get_or_default(level);
        }
        let existed = match group {
            None => node.subscribers.insert(client.clone(), sub).is_some(),
            Some(g) => {
                let grp = node
                    .groups
                    .entry(Box::from(g.as_str()))
                    .or_insert_with(|| Group {
                        filter: filter.clone(),
                        members: Vec::new(),
                        next: AtomicUsize::new(0),
                    });
                match grp.members.iter_mut().find(|(c, _)| c == client) {
                    Some(slot) => {
                        slot.1 = sub;
                        true
                    }
                    None => {
                        grp.members.push((client.clone(), sub));
                        false
                    }
                }
            }
        };
        if !existed {
            self.len += 1;
            if crate::hygiene::is_catch_all(filter) {
                self.catch_all += 1;
            }
        }
        existed
    }

    /// Whether `client` has a subscription to `filter`.
    pub(crate) fn contains(&self, filter: &TopicFilter, client: &str) -> bool {
        let (group, inner) = split(filter);
        let mut node = &self.root;
        for level in inner.as_str().split('/') {
            match node.children.get(level) {
                Some(child) => node = child,
                None => return false,
            }
        }
        match group {
            None => node.subscribers.contains_key(client),
            Some(g) => node
                .groups
                .get(g.as_str())
                .is_some_and(|grp| grp.members.iter().any(|(c, _)| &**c == client)),
        }
    }

    /// The node of `filter`'s inner filter, if it exists.
    fn node_at(&self, filter: &TopicFilter) -> Option<&Node> {
        let (_, inner) = split(filter);
        let mut node = &self.root;
        for level in inner.as_str().split('/') {
            node = node.children.get(level)?;
        }
        Some(node)
    }

    /// Whether `filter` has a subscription: any non-shared one to it, or,
    /// for `$share/{group}/{f}`, any member of that group. What the node's
    /// interest in other nodes' traffic is made of.
    pub(crate) fn is_live(&self, filter: &TopicFilter) -> bool {
        let (group, _) = split(filter);
        self.node_at(filter).is_some_and(|n| match group {
            None => !n.subscribers.is_empty(),
            Some(g) => n.groups.contains_key(g.as_str()),
        })
    }

    /// Appends the non-shared subscriptions to exactly `filter`, or for a
    /// `$share/` filter one member of its group, to `out`.
    pub(crate) fn matches_at(&self, filter: &TopicFilter, out: &mut Vec<Matched>) {
        if filter.shared().is_some() {
            out.extend(self.pick_shared(filter).map(|subscriber| Matched {
                subscriber,
                shared: Some(filter.clone()),
            }));
            return;
        }
        if let Some(node) = self.node_at(filter) {
            out.extend(node.subscribers.values().map(|s| Matched {
                subscriber: s.clone(),
                shared: None,
            }));
        }
    }

    /// Number of catch-all subscriptions.
    pub(crate) fn catch_all(&self) -> usize {
        self.catch_all
    }

    /// Removes `client`'s subscription to `filter`; returns whether it
    /// existed.
    pub(crate) fn remove(&mut self, filter: &TopicFilter, client: &str) -> bool {
        let (group, inner) = split(filter);
        let levels: Vec<&str> = inner.as_str().split('/').collect();
        let removed = self.root.remove(&levels, group.as_deref(), client);
        if removed {
            self.len = self.len.saturating_sub(1);
            if crate::hygiene::is_catch_all(filter) {
                self.catch_all = self.catch_all.saturating_sub(1);
            }
        }
        removed
    }

    /// The next member of the shared subscription `filter`, if any is
    /// left (used to redistribute a leaving member's messages).
    pub(crate) fn pick_shared(&self, filter: &TopicFilter) -> Option<Subscriber> {
        let (Some(group), inner) = split(filter) else {
            return None;
        };
        let mut node = &self.root;
        for level in inner.as_str().split('/') {
            node = node.children.get(level)?;
        }
        node.groups.get(group.as_str())?.pick().cloned()
    }

    /// Number of subscriptions.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Appends every subscription matching `topic` to `out` (one member per
    /// matching shared group).
    pub(crate) fn matches(&self, topic: &TopicName, out: &mut Vec<Matched>) {
        let levels: Vec<&str> = topic.levels().collect();
        self.root.walk(&levels, topic.is_system(), out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::Session;
    use mqtt::QoS;

    fn sub() -> Subscriber {
        Subscriber {
            session: Arc::new(Session::with_bound(Arc::from("s"), 10)),
            options: SubscriptionOptions::new(QoS::AtMostOnce),
            id: None,
        }
    }

    fn names(idx: &SubscriptionIndex, topic: &str) -> Vec<String> {
        let mut out = Vec::new();
        idx.matches(&TopicName::parse(topic).unwrap(), &mut out);
        let mut v: Vec<String> = out
            .iter()
            .map(|m| m.subscriber.session.client_id().to_string())
            .collect();
        v.sort();
        v
    }

    fn add(idx: &mut SubscriptionIndex, filter: &str, client: &str) -> bool {
        let mut s = sub();
        s.session = Arc::new(Session::with_bound(Arc::from(client), 10));
        idx.insert(&TopicFilter::parse(filter).unwrap(), &Arc::from(client), s)
    }

    /// An index holding each `(filter, client)` of `subscriptions`.
    fn index_of(subscriptions: &[(&str, &str)]) -> SubscriptionIndex {
        let mut idx = SubscriptionIndex::default();
        for (filter, client) in subscriptions {
            add(&mut idx, filter, client);
        }
        idx
    }

    fn remove(idx: &mut SubscriptionIndex, filter: &str, client: &str) -> bool {
        idx.remove(&TopicFilter::parse(filter).unwrap(), client)
    }

    #[test]
    fn matches_like_the_naive_matcher() {
        let filters = [
            "a/b", "a/+", "a/#", "#", "+/+", "+", "a/b/c", "+/b/#", "$SYS/#", "$SYS/+", "/a",
            "+/a", "a//b", "a/+/b",
        ];
        let topics = [
            "a", "a/b", "a/b/c", "a/c", "$SYS/x", "$SYS", "/a", "a//b", "b/b/x", "x",
        ];
        let mut idx = SubscriptionIndex::default();
        for (i, f) in filters.iter().enumerate() {
            assert!(!add(&mut idx, f, &format!("c{i}")));
        }
        assert_eq!(idx.len(), filters.len());
        for t in topics {
            let topic = TopicName::parse(t).unwrap();
            let mut want: Vec<String> = filters
                .iter()
                .enumerate()
                .filter(|(_, f)| TopicFilter::parse(**f).unwrap().matches(&topic))
                .map(|(i, _)| format!("c{i}"))
                .collect();
            want.sort();
            assert_eq!(names(&idx, t), want, "topic {t}");
        }
    }

    #[test]
    fn remove_prunes_and_reports() {
        let mut idx = index_of(&[("a/b/c", "x")]);
        assert!(add(&mut idx, "a/b/c", "x"));
        assert_eq!(idx.len(), 1);
        assert!(remove(&mut idx, "a/b/c", "x"));
        assert!(!remove(&mut idx, "a/b/c", "x"));
        assert!(idx.root.is_empty());
        assert_eq!(idx.len(), 0);
    }

    #[test]
    fn shared_groups_yield_one_member_round_robin() {
        let mut idx = index_of(&[
            ("$share/g/a/+", "m1"),
            ("$share/g/a/+", "m2"),
            ("$share/h/a/#", "m3"),
        ]);
        let mut seen = Vec::new();
        for _ in 0..4 {
            let got = names(&idx, "a/b");
            assert_eq!(got.len(), 2, "{got:?}");
            assert!(got.contains(&"m3".to_string()));
            seen.extend(got.into_iter().filter(|n| n != "m3"));
        }
        assert_eq!(seen.iter().filter(|n| *n == "m1").count(), 2);
        assert_eq!(seen.iter().filter(|n| *n == "m2").count(), 2);
        assert!(remove(&mut idx, "$share/g/a/+", "m1"));
        assert_eq!(names(&idx, "a/b"), ["m2", "m3"]);
    }

    #[test]
    fn deep_chains_match_remove_and_drop_without_recursion() {
        // 65,000 levels (the most a topic string allows) overflow a
        // recursive walk on a test thread.
        let deep = format!("a{}", "/".repeat(65_000));
        let deep_plus = format!("{deep}/+");
        let mut idx = index_of(&[(&deep, "deep"), (&deep_plus, "plus"), ("a/#", "hash")]);
        assert_eq!(names(&idx, &deep), ["deep", "hash"]);
        assert_eq!(names(&idx, &format!("{deep}/x")), ["hash", "plus"]);
        assert!(remove(&mut idx, &deep, "deep"));
        assert_eq!(names(&idx, &format!("{deep}/x")), ["hash", "plus"]);
        assert!(remove(&mut idx, &deep_plus, "plus"));
        assert!(remove(&mut idx, "a/#", "hash"));
        assert!(idx.root.is_empty());
        // And a whole deep index dropped at once.
        add(&mut idx, &deep, "deep");
        drop(idx);
    }

    #[test]
    fn remove_keeps_the_branches_others_use() {
        let mut idx = index_of(&[("a/b/c/d", "x"), ("a/b", "y"), ("a/b/e", "z")]);
        assert!(remove(&mut idx, "a/b/c/d", "x"));
        assert_eq!(names(&idx, "a/b"), ["y"]);
        assert_eq!(names(&idx, "a/b/e"), ["z"]);
        assert!(remove(&mut idx, "a/b", "y"));
        assert_eq!(names(&idx, "a/b/e"), ["z"]);
        assert!(remove(&mut idx, "a/b/e", "z"));
        assert!(idx.root.is_empty());
    }
}
