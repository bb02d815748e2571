//! Helpers for tests (feature `testing`, and this crate's own tests): topic
//! names and filters from literals the test knows to be valid, and proptest
//! strategies for random ones.
//!
//! Enable it from other crates' [dev-dependencies]:
//! `mqtt = { workspace = true, features = ["testing"] }`.

use std::ops::Range;

use proptest::prelude::*;

use crate::{TopicFilter, TopicName};

/// The topic name `s`, which the test wrote to be valid.
///
/// # Panics
/// If `s` is not a valid topic name: the test itself is wrong.
pub fn topic(s: &str) -> TopicName {
    TopicName::parse(s).unwrap_or_else(|e| panic!("{s:?} is not a topic name: {e}"))
}

/// The topic filter `s`, which the test wrote to be valid.
///
/// # Panics
/// If `s` is not a valid topic filter: the test itself is wrong.
pub fn filter(s: &str) -> TopicFilter {
    TopicFilter::parse(s).unwrap_or_else(|e| panic!("{s:?} is not a topic filter: {e}"))
}

/// Topic names as strings: 1 to 4 levels drawn from `level`, joined by `/`.
/// Not every one is valid (all levels empty, say): the test filters.
pub fn topic_strings(level: impl Strategy<Value = String>) -> impl Strategy<Value = String> {
    proptest::collection::vec(level, 1..5).prop_map(|levels| levels.join("/"))
}

/// Topic filters as strings: `levels` levels, each drawn from `level` or
/// (one in four) `+`, then perhaps `#`. Not every one is valid: the test
/// filters.
pub fn filter_strings(
    level: impl Strategy<Value = String>,
    levels: Range<usize>,
) -> impl Strategy<Value = String> {
    let level = prop_oneof![3 => level, 1 => Just("+".to_owned())];
    (proptest::collection::vec(level, levels), any::<bool>()).prop_map(|(mut levels, hash)| {
        if hash {
            levels.push("#".to_owned());
        }
        levels.join("/")
    })
}
