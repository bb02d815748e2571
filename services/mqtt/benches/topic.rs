//! Topic filter matching and topic name/filter parsing.
//!
//! `TopicFilter::matches` is one filter against one topic; the broker's
//! subscription index calls it (or replaces it) per candidate, so the
//! per-call figures here are the floor for a naive scan, which
//! `scan_1000_filters` shows at scale.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use mqtt::{TopicFilter, TopicName};

/// A topic of `depth` levels, `l0/l1/…`.
fn deep(depth: usize) -> String {
    (0..depth)
        .map(|i| format!("l{i}"))
        .collect::<Vec<_>>()
        .join("/")
}

fn bench_matches(c: &mut Criterion) {
    let deep_topic = deep(32);
    // Same depth, a `+` at every other level: the worst case for a walk.
    let deep_plus = (0..32)
        .map(|i| {
            if i % 2 == 0 {
                "+".to_owned()
            } else {
                format!("l{i}")
            }
        })
        .collect::<Vec<_>>()
        .join("/");
    let deep_hash = format!("{}/#", deep(31));
    let cases: [(&str, &str, &str, bool); 11] = [
        (
            "exact_hit",
            "tenants/acme/devices/d1/state",
            "tenants/acme/devices/d1/state",
            true,
        ),
        // Differs only at the last level: the walk goes all the way.
        (
            "exact_miss_last",
            "tenants/acme/devices/d1/state",
            "tenants/acme/devices/d1/stats",
            false,
        ),
        (
            "exact_miss_first",
            "tenants/acme/devices/d1/state",
            "tenants/beta/devices/d1/state",
            false,
        ),
        (
            "plus_hit",
            "tenants/acme/devices/+/state",
            "tenants/acme/devices/d1/state",
            true,
        ),
        (
            "plus_miss_short",
            "tenants/acme/devices/+/state",
            "tenants/acme/devices/d1",
            false,
        ),
        (
            "hash_hit",
            "tenants/acme/#",
            "tenants/acme/devices/d1/state",
            true,
        ),
        ("hash_parent", "tenants/acme/#", "tenants/acme", true),
        ("deep32_exact", &deep_topic, &deep_topic, true),
        ("deep32_plus", &deep_plus, &deep_topic, true),
        ("deep32_hash", &deep_hash, &deep_topic, true),
        // MQTT-4.7.2-1: leading wildcards never match `$` topics.
        (
            "dollar_vs_hash",
            "#",
            "$SYS/broker/clients/connected",
            false,
        ),
    ];
    let mut g = c.benchmark_group("matches");
    g.throughput(Throughput::Elements(1));
    for (name, f, t, expected) in cases {
        let f = TopicFilter::parse(f).unwrap();
        let t = TopicName::parse(t).unwrap();
        assert_eq!(f.matches(&t), expected, "{name}");
        g.bench_function(name, |b| b.iter(|| black_box(&f).matches(black_box(&t))));
    }
    let f = TopicFilter::parse("$SYS/broker/#").unwrap();
    let t = TopicName::parse("$SYS/broker/clients/connected").unwrap();
    assert!(f.matches(&t));
    g.bench_function("dollar_explicit", |b| {
        b.iter(|| black_box(&f).matches(black_box(&t)))
    });
    g.finish();

    // One topic against 1,000 device filters (one matches): what a broker
    // without an index would pay per PUBLISH.
    let filters: Vec<TopicFilter> = (0..1000)
        .map(|i| TopicFilter::parse(format!("tenants/acme/devices/d{i}/+")).unwrap())
        .collect();
    let t = TopicName::parse("tenants/acme/devices/d999/state").unwrap();
    assert_eq!(filters.iter().filter(|f| f.matches(&t)).count(), 1);
    let mut g = c.benchmark_group("matches_scan");
    g.throughput(Throughput::Elements(filters.len() as u64));
    g.bench_function("scan_1000_filters", |b| {
        b.iter(|| {
            black_box(&filters)
                .iter()
                .filter(|f| f.matches(black_box(&t)))
                .count()
        })
    });
    g.finish();
}

fn bench_parse(c: &mut Criterion) {
    let deep_topic = deep(32);
    let unicode = "tenants/ácmé/устройства/传感器-42/état";
    let names: [(&str, &str); 3] = [
        ("name_short", "tenants/acme/devices/d1/state"),
        ("name_deep32", &deep_topic),
        ("name_unicode", unicode),
    ];
    let filters: [(&str, &str); 4] = [
        ("filter_exact", "tenants/acme/devices/d1/state"),
        ("filter_wildcards", "tenants/+/devices/+/#"),
        (
            "filter_shared",
            "$share/workers/tenants/acme/devices/+/state",
        ),
        ("filter_dollar", "$SYS/broker/#"),
    ];
    let mut g = c.benchmark_group("parse");
    for (name, s) in names {
        TopicName::parse(s).unwrap();
        g.throughput(Throughput::Bytes(s.len() as u64));
        g.bench_function(name, |b| b.iter(|| TopicName::parse(black_box(s)).unwrap()));
    }
    for (name, s) in filters {
        TopicFilter::parse(s).unwrap();
        g.throughput(Throughput::Bytes(s.len() as u64));
        g.bench_function(name, |b| {
            b.iter(|| TopicFilter::parse(black_box(s)).unwrap())
        });
    }
    // Parsing must reject fast too: a wildcard in a PUBLISH topic.
    let bad = "tenants/acme/devices/+/state";
    g.throughput(Throughput::Bytes(bad.len() as u64));
    g.bench_function("name_rejects_wildcard", |b| {
        b.iter(|| TopicName::parse(black_box(bad)).is_err())
    });
    g.finish();
}

criterion_group!(benches, bench_matches, bench_parse);
criterion_main!(benches);
