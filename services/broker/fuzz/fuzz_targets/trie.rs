//! The subscription trie and the retained trie under random sequences of
//! subscribe / unsubscribe / publish and retain / clear / lookup, each
//! answer checked against a model kept beside them and matched with
//! `TopicFilter::matches`, the crate's one topic-filter matcher.
//!
//! Topics and filters are built from a small alphabet of levels (so that
//! they collide and share trie nodes) and are at most `MAX_LEVELS` deep:
//! the tries recurse per level today, and a topic of tens of thousands of
//! levels overflows the stack (issue 13, item 1, fixed separately with
//! iterative walks and a depth limit), which is not this target's question.

#![no_main]

use std::collections::{BTreeMap, BTreeSet};

use broker::fuzzing::{Match, RetainedTrie, SubscriptionTrie};
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use mqtt::{TopicFilter, TopicName};

const MAX_LEVELS: usize = 32;

#[derive(Debug, Arbitrary)]
enum Level {
    A,
    B,
    Empty,
    Dollar,
    Multibyte,
    Plus,
    Hash,
    Byte(u8),
}

impl Level {
    fn text(&self) -> String {
        match self {
            Level::A => "a".into(),
            Level::B => "b".into(),
            Level::Empty => String::new(),
            Level::Dollar => "$sys".into(),
            Level::Multibyte => "ü€".into(),
            Level::Plus => "+".into(),
            Level::Hash => "#".into(),
            // Anything else, wildcards and separators included, so that
            // the parsers also see malformed levels.
            Level::Byte(b) => char::from(*b).to_string(),
        }
    }
}

fn join(levels: &[Level]) -> String {
    let texts: Vec<String> = levels.iter().take(MAX_LEVELS).map(Level::text).collect();
    texts.join("/")
}

/// A client and a filter, shared (`$share/g{group}/…`) or not.
#[derive(Debug, Arbitrary)]
struct Target {
    client: u8,
    levels: Vec<Level>,
    group: Option<u8>,
}

impl Target {
    /// The filter and client, if the filter is valid (invalid ones only
    /// exercise the parser).
    fn get(&self) -> Option<(TopicFilter, String)> {
        Some((
            filter(&self.levels, self.group)?,
            format!("c{}", self.client % 8),
        ))
    }
}

#[derive(Debug, Arbitrary)]
enum Op {
    Subscribe(Target),
    Unsubscribe(Target),
    Publish { levels: Vec<Level> },
    Retain { levels: Vec<Level>, payload: u8 },
    Clear { levels: Vec<Level> },
    Lookup { levels: Vec<Level>, cap: u8 },
}

/// `$share/g{n}/` + the levels, or just the levels.
fn filter(levels: &[Level], group: Option<u8>) -> Option<TopicFilter> {
    let inner = join(levels);
    let text = match group {
        Some(g) => format!("$share/g{}/{inner}", g % 4),
        None => inner,
    };
    TopicFilter::parse(text).ok()
}

#[derive(Default)]
struct Model {
    /// (filter, client) → subscription id.
    subs: BTreeMap<(TopicFilter, String), u32>,
    retained: BTreeMap<String, u8>,
}

fuzz_target!(|ops: Vec<Op>| {
    let mut trie = SubscriptionTrie::default();
    let mut retained = RetainedTrie::default();
    let mut model = Model::default();
    let mut next_id = 1u32;
    for op in &ops {
        match op {
            Op::Subscribe(target) => {
                let Some((f, c)) = target.get() else {
                    continue;
                };
                let id = next_id;
                next_id += 1;
                let existed = trie.subscribe(&f, &c, id);
                let was = model.subs.insert((f.clone(), c.clone()), id);
                assert_eq!(existed, was.is_some(), "subscribe {f} {c}");
                assert!(trie.contains(&f, &c));
            }
            Op::Unsubscribe(target) => {
                let Some((f, c)) = target.get() else {
                    continue;
                };
                let removed = trie.unsubscribe(&f, &c);
                let was = model.subs.remove(&(f.clone(), c.clone()));
                assert_eq!(removed, was.is_some(), "unsubscribe {f} {c}");
                assert!(!trie.contains(&f, &c));
            }
            Op::Publish { levels } => {
                if let Ok(t) = TopicName::parse(join(levels)) {
                    check_publish(&trie, &model, &t);
                }
            }
            Op::Retain { levels, payload } => {
                if let Ok(t) = TopicName::parse(join(levels)) {
                    retained.set(&t, Some(&[*payload]));
                    model.retained.insert(t.into_string(), *payload);
                }
            }
            Op::Clear { levels } => {
                if let Ok(t) = TopicName::parse(join(levels)) {
                    retained.set(&t, None);
                    model.retained.remove(t.as_str());
                }
            }
            Op::Lookup { levels, cap } => {
                if let Some(f) = filter(levels, None) {
                    check_lookup(&retained, &model, &f, usize::from(*cap % 8));
                }
            }
        }
        assert_eq!(trie.len(), model.subs.len());
        let catch_all = model
            .subs
            .keys()
            .filter(|(f, _)| broker::hygiene::is_catch_all(f))
            .count();
        assert_eq!(trie.catch_all(), catch_all);
    }
    // Taking everything out leaves nothing behind.
    for (f, c) in model.subs.keys() {
        assert!(trie.unsubscribe(f, c), "{f} {c} was lost");
    }
    assert!(trie.is_empty());
});

fn check_publish(trie: &SubscriptionTrie, model: &Model, topic: &TopicName) {
    let got = trie.matches(topic);
    let mut plain: Vec<(String, u32)> = got
        .iter()
        .filter(|m| m.shared.is_none())
        .map(|m| (m.client.clone(), m.id))
        .collect();
    plain.sort();
    let mut want: Vec<(String, u32)> = model
        .subs
        .iter()
        .filter(|((f, _), _)| f.shared().is_none() && f.matches(topic))
        .map(|((_, c), id)| (c.clone(), *id))
        .collect();
    want.sort();
    assert_eq!(plain, want, "non-shared matches of {topic}");

    // Each matching group yields exactly one of its members, with that
    // member's subscription id.
    let mut groups: BTreeMap<String, BTreeSet<(String, u32)>> = BTreeMap::new();
    for ((f, c), id) in &model.subs {
        if f.shared().is_some() && f.matches(topic) {
            groups
                .entry(f.as_str().to_owned())
                .or_default()
                .insert((c.clone(), *id));
        }
    }
    let shared: Vec<&Match> = got.iter().filter(|m| m.shared.is_some()).collect();
    assert_eq!(shared.len(), groups.len(), "one per group for {topic}");
    for m in shared {
        let members = m
            .shared
            .as_ref()
            .and_then(|g| groups.get(g))
            .unwrap_or_else(|| panic!("{m:?} from no matching group"));
        assert!(members.contains(&(m.client.clone(), m.id)), "{m:?}");
    }
}

fn check_lookup(retained: &RetainedTrie, model: &Model, filter: &TopicFilter, cap: usize) {
    let (got, truncated) = retained.lookup(filter, cap);
    let want: BTreeMap<String, u8> = model
        .retained
        .iter()
        .filter(|(t, _)| TopicName::parse(t.as_str()).is_ok_and(|t| filter.matches(&t)))
        .map(|(t, p)| (t.clone(), *p))
        .collect();
    assert_eq!(got.len(), want.len().min(cap), "lookup {filter} cap {cap}");
    assert_eq!(truncated, want.len() > cap, "lookup {filter} cap {cap}");
    let mut seen = BTreeSet::new();
    for (t, p) in &got {
        assert!(seen.insert(t.clone()), "{t} twice for {filter}");
        assert_eq!(
            want.get(t).map(|p| vec![*p]).as_ref(),
            Some(p),
            "{t} for {filter}"
        );
    }
}
