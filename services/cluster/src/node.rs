//! A node's name: unique among the live nodes of one cluster, used as its
//! key in the lease bucket and, later, in NATS subjects and presence rows.

use std::fmt;

/// Longest node name accepted.
pub const MAX_NAME_LEN: usize = 64;

/// How many hex digits follow the host name in a derived default.
const SUFFIX_LEN: usize = 6;

/// A checked node name: 1 to 64 of `A-Z a-z 0-9 - _`. No dots: a name
/// becomes one token of a NATS subject and one key of a key-value bucket,
/// where `.` separates tokens.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NodeName(String);

/// Why a text is not a node name.
pub const NAME_RULE: &str = "a node name is 1 to 64 characters of A-Z, a-z, 0-9, - and _";

impl NodeName {
    pub fn parse(text: &str) -> Result<NodeName, &'static str> {
        let ok = !text.is_empty()
            && text.len() <= MAX_NAME_LEN
            && text
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        match ok {
            true => Ok(NodeName(text.to_owned())),
            false => Err(NAME_RULE),
        }
    }

    /// A fresh default: this host's name (its first label, made valid) and
    /// a short random suffix, so two nodes on one host differ.
    pub fn generate(hostname: &str) -> NodeName {
        let random = uuid::Uuid::new_v4();
        let suffix = hex::encode(random.as_bytes());
        Self::derive(hostname, &suffix[..SUFFIX_LEN])
    }

    fn derive(hostname: &str, suffix: &str) -> NodeName {
        let label = hostname.split('.').next().unwrap_or_default();
        let mut host: String = label
            .chars()
            .map(
                |c| match c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    true => c,
                    false => '-',
                },
            )
            .take(MAX_NAME_LEN - SUFFIX_LEN - 1)
            .collect();
        if host.is_empty() {
            host.push_str("fleetmq");
        }
        NodeName(format!("{host}-{suffix}"))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for NodeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// This machine's host name, or `fleetmq` when it has none.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "fleetmq".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        for good in ["a", "node-1", "eu_west_2", &"x".repeat(MAX_NAME_LEN)] {
            assert_eq!(NodeName::parse(good).unwrap().as_str(), good);
        }
        for bad in ["", "a.b", "a b", "nöde", "a/b", "*", ">", &"x".repeat(65)] {
            assert_eq!(NodeName::parse(bad), Err(NAME_RULE), "{bad:?}");
        }
    }

    #[test]
    fn a_derived_name_is_valid_and_keeps_the_host() {
        let name = NodeName::derive("web-3.eu.example.com", "a1b2c3");
        assert_eq!(name.as_str(), "web-3-a1b2c3");
        let odd = NodeName::derive("höst name", "a1b2c3");
        assert_eq!(odd.as_str(), "h-st-name-a1b2c3");
        assert_eq!(NodeName::derive("", "a1b2c3").as_str(), "fleetmq-a1b2c3");
        let long = NodeName::derive(&"h".repeat(200), "a1b2c3");
        assert_eq!(long.as_str().len(), MAX_NAME_LEN);
        for name in [name, odd, long] {
            assert!(NodeName::parse(name.as_str()).is_ok(), "{name}");
        }
    }

    #[test]
    fn generated_names_differ_on_one_host() {
        let a = NodeName::generate("same-host");
        let b = NodeName::generate("same-host");
        assert_ne!(a, b);
        assert!(a.as_str().starts_with("same-host-"), "{a}");
        assert!(NodeName::parse(a.as_str()).is_ok());
    }
}
