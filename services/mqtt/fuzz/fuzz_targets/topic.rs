//! Topic names, topic filters and shared subscriptions on hostile strings,
//! and `TopicFilter::matches` against a reference written from the spec's
//! words (4.7) rather than from the crate's code.
//!
//! Input: `filter 0xFF topic`; without 0xFF the whole input is tried as
//! both. Invalid UTF-8 is lossily converted so that the parsers still see
//! replacement characters and multibyte text.

#![no_main]

use libfuzzer_sys::fuzz_target;
use mqtt::{SharedSubscription, TopicFilter, TopicName};

fuzz_target!(|data: &[u8]| {
    let (f, t) = match data.iter().position(|&b| b == 0xFF) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, data),
    };
    let f = String::from_utf8_lossy(f).into_owned();
    let t = String::from_utf8_lossy(t).into_owned();

    let name = TopicName::parse(t.clone());
    let filter = TopicFilter::parse(f.clone());
    let shared = SharedSubscription::parse(&f);

    if let Ok(n) = &name {
        assert_eq!(n.as_str(), t);
        assert!(!t.contains(['+', '#']) && !t.is_empty() && !t.contains('\0'));
        assert_eq!(n.is_system(), t.starts_with('$'));
        assert_eq!(n.levels().count(), t.split('/').count());
        // A name without wildcards is a filter that matches itself,
        // except a `$share/` one, which is a shared filter.
        if !t.starts_with("$share/") {
            let own = TopicFilter::parse(t.clone()).expect("a valid name is a valid filter");
            assert!(own.matches(n), "{t:?} does not match itself");
            assert!(!own.has_wildcards());
        }
    }
    match (&filter, &shared) {
        (Ok(fl), Ok(s)) => {
            assert!(f.starts_with("$share/"));
            assert_eq!(fl.shared().as_ref(), Some(s));
            assert!(!s.group.is_empty() && !s.group.contains(['/', '+', '#']));
        }
        (Ok(fl), Err(_)) => {
            assert!(
                !f.starts_with("$share/"),
                "{f:?} parses as a filter but not as shared"
            );
            assert!(fl.shared().is_none());
        }
        (Err(_), Ok(s)) => panic!("{f:?} parses as shared ({s:?}) but not as a filter"),
        (Err(_), Err(_)) => {}
    }
    if let (Ok(fl), Ok(n)) = (&filter, &name) {
        let inner = match &shared {
            Ok(s) => s.filter.as_str().to_owned(),
            Err(_) => f.clone(),
        };
        assert_eq!(
            fl.matches(n),
            reference_matches(&inner, n.as_str()),
            "filter {f:?} topic {t:?}"
        );
        if let Ok(s) = &shared {
            assert_eq!(fl.matches(n), s.filter.matches(n));
        }
    }
});

/// 4.7: levels compared one by one; `+` is any one level, `#` (last) is any
/// number of levels including none (so `a/#` matches `a`); a filter whose
/// first level is a wildcard never matches a `$` topic (4.7.2).
fn reference_matches(filter: &str, topic: &str) -> bool {
    let f: Vec<&str> = filter.split('/').collect();
    let t: Vec<&str> = topic.split('/').collect();
    if topic.starts_with('$') && matches!(f.first(), Some(&"+") | Some(&"#")) {
        return false;
    }
    let mut i = 0;
    loop {
        match (f.get(i), t.get(i)) {
            (Some(&"#"), _) => return i + 1 == f.len(),
            (Some(&"+"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
        i += 1;
    }
}
