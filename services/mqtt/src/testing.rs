//! Helpers for tests (feature `testing`, and this crate's own tests): topic
//! names and filters from literals the test knows to be valid.
//!
//! Enable it from other crates' [dev-dependencies]:
//! `mqtt = { workspace = true, features = ["testing"] }`.

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
