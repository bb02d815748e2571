//! Event-type patterns, as webhook endpoints list them (`events`) and SSE
//! clients filter with (`?types=`): an exact name, `prefix.*` (every type
//! whose name starts with `prefix.`), or `*` (everything). Nothing else is
//! a wildcard: `dev*` matches only a type literally named `dev*`.

/// Whether `event_type` matches `pattern`.
pub fn pattern_matches(pattern: &str, event_type: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some("") => true,
        Some(prefix) if prefix.ends_with('.') => event_type.starts_with(prefix),
        _ => pattern == event_type,
    }
}

/// Whether any of `patterns` matches `event_type`.
pub fn matches_any<P: AsRef<str>>(patterns: &[P], event_type: &str) -> bool {
    patterns
        .iter()
        .any(|p| pattern_matches(p.as_ref(), event_type))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::EventType;

    #[test]
    fn patterns() {
        assert!(pattern_matches("device.*", "device.connected"));
        assert!(!pattern_matches("device.*", "devices.x"));
        assert!(!pattern_matches("device.*", "state.reported"));
        assert!(pattern_matches("*", "state.reported"));
        assert!(pattern_matches("state.desired", "state.desired"));
        assert!(!pattern_matches("state.desired", "state.desired2"));
        assert!(!pattern_matches("dev*", "device.created"));
        assert!(matches_any(
            &["a", "message.published"],
            "message.published"
        ));
        assert!(!matches_any::<&str>(&[], "message.published"));
    }

    #[test]
    fn every_type_matches_its_name_its_family_and_star() {
        for t in EventType::ALL {
            let name = t.as_str();
            let family = format!("{}.*", name.split('.').next().unwrap_or_default());
            assert!(matches_any(&[name], name));
            assert!(pattern_matches(&family, name), "{family} {name}");
            assert!(pattern_matches("*", name));
        }
    }
}
