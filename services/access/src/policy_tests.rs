use mqtt::testing::{filter, topic};
use proptest::prelude::*;
use serde_json::json;

use super::*;

fn doc(value: serde_json::Value) -> serde_json::Map<String, serde_json::Value> {
    match value {
        serde_json::Value::Object(map) => map,
        other => panic!("not an object: {other}"),
    }
}

/// The template named `name` whose document holds `rules`.
fn parse_template(name: &str, rules: serde_json::Value) -> PolicyTemplate {
    PolicyTemplate::parse(name, &doc(json!({ "rules": rules }))).unwrap()
}

/// The policy of template `name` (holding `rules`) for device d1.
fn d1_policy(name: &str, rules: serde_json::Value) -> CompiledPolicy {
    parse_template(name, rules).compile(&device_vars("d1"))
}

fn device_vars(device: &str) -> Variables<'_> {
    Variables {
        tenant: "acme",
        device: Some(device),
        client_id: Some(device),
        username: None,
    }
}

#[test]
fn default_device_policy() {
    let p = PolicyTemplate::default_device().compile(&device_vars("d1"));
    assert!(p.decide_publish(&topic("devices/d1/state")).allowed);
    assert!(!p.decide_publish(&topic("devices/d2/state")).allowed);
    assert!(!p.decide_publish(&topic("commands/d1/x")).allowed);
    assert!(p.decide_subscribe(&filter("commands/d1/#")).allowed);
    assert!(p.decide_subscribe(&filter("commands/d1/+/x")).allowed);
    assert!(!p.decide_subscribe(&filter("commands/+/x")).allowed);
    assert!(!p.decide_subscribe(&filter("#")).allowed);
    assert_eq!(
        &*p.decide_subscribe(&filter("#")).rule,
        "default deny",
        "nothing matched"
    );
    assert_eq!(
        &*p.decide_publish(&topic("devices/d1/state")).rule,
        "default device policy"
    );
}

#[test]
fn deny_beats_allow_whatever_the_order() {
    let p = d1_policy(
        "p",
        json!([
            {"effect": "allow", "action": "both", "filters": ["devices/${device}/#"]},
            {"effect": "deny", "action": "publish", "filters": ["devices/${device}/secret"]},
        ]),
    );
    assert!(p.decide_publish(&topic("devices/d1/state")).allowed);
    let denied = p.decide_publish(&topic("devices/d1/secret"));
    assert!(!denied.allowed);
    assert_eq!(&*denied.rule, "policy p rule 1");
    // Deny for subscribe: overlapping filters are refused, even when an
    // allow covers them (a `#` would receive the denied topic).
    let p = d1_policy(
        "q",
        json!([
            {"effect": "deny", "action": "subscribe", "filters": ["devices/${device}/secret"]},
            {"effect": "allow", "action": "subscribe", "filters": ["devices/${device}/#"]},
        ]),
    );
    assert!(!p.decide_subscribe(&filter("devices/d1/#")).allowed);
    assert!(!p.decide_subscribe(&filter("devices/d1/+")).allowed);
    assert!(p.decide_subscribe(&filter("devices/d1/state/#")).allowed);
    assert!(p.decide_subscribe(&filter("devices/d1/state")).allowed);
}

#[test]
fn unsafe_substitutions_match_nothing_and_deny_stays_in_force() {
    let template = parse_template(
        "p",
        json!([
            {"effect": "allow", "action": "both", "filters": ["users/${username}/#"]},
            {"effect": "allow", "action": "publish", "filters": ["up/${client_id}"]},
            {"effect": "deny", "action": "publish", "filters": ["up/${username}/x"]},
        ]),
    );
    for crafted in ["+", "#", "a/b", "", "x+"] {
        let vars = Variables {
            tenant: "acme",
            device: Some("d1"),
            client_id: Some(crafted),
            username: Some(crafted),
        };
        let p = template.compile(&vars);
        assert!(
            !p.decide_publish(&topic("users/a/b/c")).allowed,
            "{crafted:?}"
        );
        assert!(
            !p.decide_subscribe(&filter("users/+/#")).allowed,
            "{crafted:?}"
        );
        assert!(!p.decide_publish(&topic("up/a")).allowed, "{crafted:?}");
    }
    // A missing value: the allow rules using it are inert.
    let p = template.compile(&Variables {
        tenant: "acme",
        device: Some("d1"),
        client_id: Some("d1"),
        username: None,
    });
    assert!(!p.decide_publish(&topic("users/x/y")).allowed);
    // The deny rule is unusable too, so it refuses all publishes.
    assert!(!p.decide_publish(&topic("up/d1")).allowed);
    let safe = template.compile(&Variables {
        tenant: "acme",
        device: Some("d1"),
        client_id: Some("d1"),
        username: Some("d1@acme"),
    });
    assert!(safe.decide_publish(&topic("up/d1")).allowed);
    assert!(safe.decide_publish(&topic("users/d1@acme/x")).allowed);
}

#[test]
fn shared_subscriptions_are_judged_by_their_filter() {
    let p = PolicyTemplate::default_device().compile(&device_vars("d1"));
    assert!(
        p.decide_subscribe(&filter("$share/g/commands/d1/#"))
            .allowed
    );
    assert!(!p.decide_subscribe(&filter("$share/g/commands/#")).allowed);
    assert!(!p.decide_subscribe(&filter("$share/g/#")).allowed);
}

#[test]
fn service_credentials_default_to_the_whole_tenant() {
    let all = PolicyTemplate::service_credential("backend", &[], &[]).compile(&Variables {
        tenant: "acme",
        ..Variables::default()
    });
    assert!(all.decide_publish(&topic("commands/d1/reboot")).allowed);
    assert!(all.decide_subscribe(&filter("#")).allowed);
    let narrow = PolicyTemplate::service_credential(
        "reader",
        &["commands/+/ping".to_owned()],
        &["devices/+/state".to_owned()],
    )
    .compile(&Variables {
        tenant: "acme",
        ..Variables::default()
    });
    assert!(narrow.decide_publish(&topic("commands/d9/ping")).allowed);
    assert!(!narrow.decide_publish(&topic("commands/d9/reboot")).allowed);
    assert!(narrow.decide_subscribe(&filter("devices/d1/state")).allowed);
    assert!(!narrow.decide_subscribe(&filter("devices/#")).allowed);
}

#[test]
fn documents_are_checked() {
    let bad = |value: serde_json::Value| PolicyTemplate::parse("p", &doc(value)).unwrap_err();
    assert!(matches!(
        bad(json!({"rules": [{"effect": "maybe", "action": "publish", "filters": []}]})),
        PolicyError::Malformed { .. }
    ));
    assert!(matches!(
        bad(json!({"rules": [], "extra": 1})),
        PolicyError::Malformed { .. }
    ));
    assert!(matches!(
        bad(json!({"rules": [{"effect": "allow", "action": "publish", "filters": ["a/${nope}"]}]})),
        PolicyError::UnknownVariable { .. }
    ));
    assert!(matches!(
        bad(
            json!({"rules": [{"effect": "allow", "action": "publish", "filters": ["a/${device"]}]})
        ),
        PolicyError::UnknownVariable { .. }
    ));
    assert!(matches!(
        bad(json!({"rules": [{"effect": "allow", "action": "publish", "filters": ["a/#/b"]}]})),
        PolicyError::InvalidFilter { .. }
    ));
}

fn filter_strategy() -> impl Strategy<Value = String> {
    let level = prop_oneof![Just("a"), Just("b"), Just("+")];
    (prop::collection::vec(level, 1..4), any::<bool>()).prop_map(|(levels, hash)| {
        let mut s = levels.join("/");
        if hash {
            s.push_str("/#");
        }
        s
    })
}

proptest! {
    #[test]
    fn covered_filters_only_reach_allowed_topics(f in filter_strategy(), t in "[ab]{1}(/[abz]){0,4}") {
        // If the default policy lets `f` through, every topic `f` matches
        // is one the device may receive commands on.
        let p = PolicyTemplate::default_device().compile(&device_vars("a"));
        let full = format!("commands/{f}");
        let name = format!("commands/{t}");
        if p.decide_subscribe(&filter(&full)).allowed && filter(&full).matches(&topic(&name)) {
            prop_assert!(name.starts_with("commands/a"));
        }
    }
}
