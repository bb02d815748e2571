//! ACL policy templates: the JSON document tenants store, its variables,
//! and the compiled form the authorizer evaluates on every PUBLISH and
//! SUBSCRIBE.
//!
//! A document is `{"rules": [{"effect": "allow"|"deny", "action":
//! "publish"|"subscribe"|"both", "filters": ["devices/${device}/#", …]}]}`.
//! Deny by default; a matching deny beats any allow.

use std::sync::Arc;

use mqtt::{TopicFilter, TopicName};
use serde::Deserialize;

/// Why a policy document was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// Not the expected JSON shape (unknown field, wrong type, bad enum).
    #[error("policy {policy:?} is not a valid document: {reason}")]
    Malformed {
        /// The policy's name.
        policy: String,
        /// What serde said.
        reason: String,
    },
    /// `${name}` with a name we do not know, or an unclosed `${`.
    #[error("policy {policy:?} uses unknown variable {variable:?} in {filter:?}")]
    UnknownVariable {
        /// The policy's name.
        policy: String,
        /// The filter template.
        filter: String,
        /// The variable as written.
        variable: String,
    },
    /// A filter that is not a valid MQTT topic filter.
    #[error("policy {policy:?} has an invalid topic filter {filter:?}: {reason}")]
    InvalidFilter {
        /// The policy's name.
        policy: String,
        /// The filter template.
        filter: String,
        /// Why.
        reason: String,
    },
}

/// Allow or deny.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Effect {
    /// Grants the action.
    Allow,
    /// Refuses the action, whatever any allow says.
    Deny,
}

/// What a rule is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// PUBLISH.
    Publish,
    /// SUBSCRIBE.
    Subscribe,
    /// Both.
    Both,
}

impl Action {
    fn includes(self, other: Action) -> bool {
        self == Action::Both || self == other
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DocumentJson {
    rules: Vec<RuleJson>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleJson {
    effect: Effect,
    action: Action,
    filters: Vec<String>,
}

/// The variables a template may use.
const VARIABLES: [&str; 4] = ["tenant", "device", "client_id", "username"];

/// One template rule, with where it came from (for the debug log).
#[derive(Debug, Clone)]
struct RuleTemplate {
    source: Arc<str>,
    effect: Effect,
    action: Action,
    filters: Vec<String>,
}

/// A tenant's rules before variables are filled in: parsed and checked
/// once when the policies are loaded.
#[derive(Debug, Clone, Default)]
pub struct PolicyTemplate {
    rules: Vec<RuleTemplate>,
}

/// The values substituted into a template for one identity. `None` (or an
/// unsafe value) makes the rules that use the variable inert; see
/// [`PolicyTemplate::compile`].
#[derive(Debug, Clone, Default)]
pub struct Variables<'a> {
    /// `${tenant}`.
    pub tenant: &'a str,
    /// `${device}`.
    pub device: Option<&'a str>,
    /// `${client_id}`.
    pub client_id: Option<&'a str>,
    /// `${username}`.
    pub username: Option<&'a str>,
}

impl Variables<'_> {
    fn get(&self, name: &str) -> Option<&str> {
        match name {
            "tenant" => Some(self.tenant),
            "device" => self.device,
            "client_id" => self.client_id,
            "username" => self.username,
            _ => None,
        }
    }
}

/// Replace every `${name}` in `template`. `Err(variable)` for an unknown
/// name or unclosed `${`; `Ok(None)` when a value is missing, empty or
/// contains `+`, `#` or `/` (it would widen or reshape the filter).
fn substitute(template: &str, vars: &Variables<'_>) -> Result<Option<String>, String> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    let mut usable = true;
    while let Some(start) = rest.find("${") {
        let (before, after) = rest.split_at(start);
        out.push_str(before);
        let after = after.get(2..).unwrap_or_default();
        let Some(end) = after.find('}') else {
            return Err(format!("${{{after}"));
        };
        let (name, tail) = after.split_at(end);
        if !VARIABLES.contains(&name) {
            return Err(format!("${{{name}}}"));
        }
        match vars.get(name) {
            Some(v) if !v.is_empty() && !v.contains(['+', '#', '/']) => out.push_str(v),
            _ => usable = false,
        }
        rest = tail.get(1..).unwrap_or_default();
    }
    out.push_str(rest);
    Ok(usable.then_some(out))
}

impl PolicyTemplate {
    /// The default device policy: publish `devices/${device}/#`, subscribe
    /// `commands/${device}/#`.
    pub fn default_device() -> PolicyTemplate {
        let source: Arc<str> = Arc::from("default device policy");
        let rule = |action, filter: &str| RuleTemplate {
            source: Arc::clone(&source),
            effect: Effect::Allow,
            action,
            filters: vec![filter.to_owned()],
        };
        PolicyTemplate {
            rules: vec![
                rule(Action::Publish, "devices/${device}/#"),
                rule(Action::Subscribe, "commands/${device}/#"),
            ],
        }
    }

    /// A service credential's own filters, as allow rules; an empty list
    /// stands for everything in the tenant (`#`).
    pub fn service_credential(name: &str, publish: &[String], subscribe: &[String]) -> Self {
        let source: Arc<str> = Arc::from(format!("service credential {name}"));
        let everything = || vec!["#".to_owned()];
        let filters = |list: &[String]| {
            if list.is_empty() {
                everything()
            } else {
                list.to_vec()
            }
        };
        PolicyTemplate {
            rules: vec![
                RuleTemplate {
                    source: Arc::clone(&source),
                    effect: Effect::Allow,
                    action: Action::Publish,
                    filters: filters(publish),
                },
                RuleTemplate {
                    source,
                    effect: Effect::Allow,
                    action: Action::Subscribe,
                    filters: filters(subscribe),
                },
            ],
        }
    }

    /// Parse and check one stored document (`name` is for messages and
    /// logs). The API calls this before storing a policy.
    pub fn parse(
        name: &str,
        document: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<Self, PolicyError> {
        let parsed: DocumentJson =
            serde_json::from_value(serde_json::Value::Object(document.clone())).map_err(|e| {
                PolicyError::Malformed {
                    policy: name.to_owned(),
                    reason: e.to_string(),
                }
            })?;
        // Every variable set to a harmless value: what is left must be a
        // valid filter whatever the identity.
        let probe = Variables {
            tenant: "t",
            device: Some("d"),
            client_id: Some("c"),
            username: Some("u"),
        };
        let mut rules = Vec::with_capacity(parsed.rules.len());
        for (index, rule) in parsed.rules.into_iter().enumerate() {
            for filter in &rule.filters {
                let expanded = substitute(filter, &probe).map_err(|variable| {
                    PolicyError::UnknownVariable {
                        policy: name.to_owned(),
                        filter: filter.clone(),
                        variable,
                    }
                })?;
                let expanded = expanded.unwrap_or_default();
                TopicFilter::parse(expanded).map_err(|e| PolicyError::InvalidFilter {
                    policy: name.to_owned(),
                    filter: filter.clone(),
                    reason: e.to_string(),
                })?;
            }
            rules.push(RuleTemplate {
                source: Arc::from(format!("policy {name} rule {index}")),
                effect: rule.effect,
                action: rule.action,
                filters: rule.filters,
            });
        }
        Ok(PolicyTemplate { rules })
    }

    /// All rules of several templates (a tenant's policies all apply).
    pub fn merge(templates: impl IntoIterator<Item = PolicyTemplate>) -> PolicyTemplate {
        PolicyTemplate {
            rules: templates.into_iter().flat_map(|t| t.rules).collect(),
        }
    }

    /// Whether there are no rules at all.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Fill in `vars`. An allow rule whose substitution is unsafe (value
    /// missing, empty, or containing `+`, `#` or `/`) matches nothing, so a
    /// crafted id cannot widen its own access. A deny rule in that case
    /// matches everything for its action: dropping it would widen access
    /// just the same.
    pub fn compile(&self, vars: &Variables<'_>) -> CompiledPolicy {
        let rules = self
            .rules
            .iter()
            .map(|rule| {
                let expanded: Option<Vec<TopicFilter>> = rule
                    .filters
                    .iter()
                    .map(|f| {
                        substitute(f, vars)
                            .ok()
                            .flatten()
                            .and_then(|s| TopicFilter::parse(s).ok())
                    })
                    .collect();
                let scope = match (expanded, rule.effect) {
                    (Some(filters), _) => Scope::Filters(filters),
                    (None, Effect::Allow) => Scope::Nothing,
                    (None, Effect::Deny) => Scope::Everything,
                };
                CompiledRule {
                    source: Arc::clone(&rule.source),
                    effect: rule.effect,
                    action: rule.action,
                    scope,
                }
            })
            .collect();
        CompiledPolicy { rules }
    }
}

#[derive(Debug, Clone)]
enum Scope {
    Filters(Vec<TopicFilter>),
    Nothing,
    Everything,
}

#[derive(Debug, Clone)]
struct CompiledRule {
    source: Arc<str>,
    effect: Effect,
    action: Action,
    scope: Scope,
}

/// The outcome of one check, with the rule that decided it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Allowed or not.
    pub allowed: bool,
    /// `policy NAME rule N`, `default device policy`, … or `default deny`.
    pub rule: Arc<str>,
}

/// A template with one identity's values filled in.
#[derive(Debug, Clone)]
pub struct CompiledPolicy {
    rules: Vec<CompiledRule>,
}

impl CompiledPolicy {
    /// May the identity publish to `topic`?
    pub fn decide_publish(&self, topic: &TopicName) -> Decision {
        self.decide(Action::Publish, |f| f.matches(topic))
    }

    /// May the identity subscribe to `filter`? Allowed when an allow rule's
    /// filter covers it (every topic it can match) and no deny rule's filter
    /// overlaps it (shares a topic). `$share/{group}/` is looked through.
    pub fn decide_subscribe(&self, filter: &TopicFilter) -> Decision {
        let inner = filter.shared().map_or_else(|| filter.clone(), |s| s.filter);
        let allow = |f: &TopicFilter| f.covers(&inner);
        let deny = |f: &TopicFilter| f.overlaps(&inner);
        self.decide_with(Action::Subscribe, allow, deny)
    }

    fn decide(&self, action: Action, matches: impl Fn(&TopicFilter) -> bool) -> Decision {
        self.decide_with(action, &matches, &matches)
    }

    fn decide_with(
        &self,
        action: Action,
        allow_matches: impl Fn(&TopicFilter) -> bool,
        deny_matches: impl Fn(&TopicFilter) -> bool,
    ) -> Decision {
        let applies = |rule: &CompiledRule, matches: &dyn Fn(&TopicFilter) -> bool| {
            rule.action.includes(action)
                && match &rule.scope {
                    Scope::Filters(filters) => filters.iter().any(matches),
                    Scope::Nothing => false,
                    Scope::Everything => true,
                }
        };
        let relevant = |effect| self.rules.iter().filter(move |r| r.effect == effect);
        if let Some(rule) = relevant(Effect::Deny).find(|r| applies(r, &deny_matches)) {
            return Decision {
                allowed: false,
                rule: Arc::clone(&rule.source),
            };
        }
        match relevant(Effect::Allow).find(|r| applies(r, &allow_matches)) {
            Some(rule) => Decision {
                allowed: true,
                rule: Arc::clone(&rule.source),
            },
            None => Decision {
                allowed: false,
                rule: Arc::from("default deny"),
            },
        }
    }
}

#[cfg(test)]
#[path = "policy_tests.rs"]
mod tests;
