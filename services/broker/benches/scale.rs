//! Cost as a tenant grows (issue 16): a PUBLISH's match against 10k, 100k
//! and 1M subscriptions on distinct topics, and a wildcard SUBSCRIBE's
//! retained lookup over 10k, 100k and 1M retained topics that matches the
//! same 1,000 each time. Both should stay flat: the tries walk the levels
//! of the topic or filter, never the whole set. Run with
//! `cargo bench -p broker --features fuzzing --bench scale`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;

use broker::fuzzing::{RetainedTrie, SubscriptionTrie};
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use mqtt::{TopicFilter, TopicName};

const SIZES: [usize; 3] = [10_000, 100_000, 1_000_000];
/// Devices per site: a site's wildcard matches this many.
const PER_SITE: usize = 1_000;

fn device_topic(i: usize, leaf: &str) -> String {
    format!("site/{}/dev/{i}/{leaf}", i / PER_SITE)
}

/// One benchmark per size: `setup(n)` builds what `run` then measures.
fn over_sizes<S>(c: &mut Criterion, name: &str, setup: impl Fn(usize) -> S, run: impl Fn(&S)) {
    let mut group = c.benchmark_group(name);
    group.sample_size(20);
    for n in SIZES {
        let state = setup(n);
        group.bench_with_input(BenchmarkId::from_parameter(n), &state, |b, state| {
            b.iter(|| run(state));
        });
    }
    group.finish();
}

fn bench_matching(c: &mut Criterion) {
    let setup = |n| {
        let mut trie = SubscriptionTrie::default();
        for i in 0..n {
            // A thousand backends, each with its share of exact filters.
            let filter = TopicFilter::parse(device_topic(i, "telemetry")).unwrap();
            trie.subscribe(&filter, &format!("c{}", i % 1_000), 1);
        }
        // The wildcards a fleet has next to them.
        for filter in ["site/+/dev/+/alarm", "site/7/#", "$SYS/#"] {
            trie.subscribe(&TopicFilter::parse(filter).unwrap(), "ops", 2);
        }
        let topic = TopicName::parse(device_topic(n / 2, "telemetry")).unwrap();
        assert_eq!(trie.matches(&topic).len(), 1);
        (trie, topic)
    };
    over_sizes(c, "match_vs_subscriptions", setup, |(trie, topic)| {
        black_box(trie.matches(black_box(topic)));
    });
}

fn bench_retained(c: &mut Criterion) {
    let setup = |n| {
        let mut trie = RetainedTrie::default();
        for i in 0..n {
            trie.set(
                &TopicName::parse(device_topic(i, "state")).unwrap(),
                Some(b"{}"),
            );
        }
        let filter = TopicFilter::parse("site/3/dev/+/state").unwrap();
        let (found, truncated) = trie.lookup(&filter, usize::MAX);
        assert_eq!((found.len(), truncated), (PER_SITE, false));
        (trie, filter)
    };
    over_sizes(
        c,
        "retained_wildcard_vs_retained",
        setup,
        |(trie, filter)| {
            black_box(trie.lookup(black_box(filter), usize::MAX));
        },
    );
}

criterion_group!(benches, bench_matching, bench_retained);
criterion_main!(benches);
