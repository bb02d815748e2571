//! Joining the cluster at start (issue 15): this node's name (given, or
//! made once per data dir and kept there), the NATS connection and the
//! name lease, and `/readyz`'s view of them.

use std::path::Path;

use crate::config::ClusterSettings;
use crate::datadir::DataDir;
use crate::error::Error;

/// The file in the data dir that keeps a generated node name, so a node
/// keeps its name (and its presence rows) across restarts.
pub const NODE_NAME_FILE: &str = "node-name";

/// This node's name in presence rows and session ownership: `--node-name`;
/// for a cluster member without one, the data dir's kept name (made on
/// first start); for a single node without one, the host name, as before.
pub fn node_name(settings: &ClusterSettings, data_dir: &DataDir) -> Result<String, Error> {
    if let Some(name) = &settings.node_name {
        return Ok(name.as_str().to_owned());
    }
    if settings.nats_url.is_none() {
        return Ok(cluster::hostname());
    }
    kept_or_new(data_dir).map(|name| name.as_str().to_owned())
}

fn kept_or_new(data_dir: &DataDir) -> Result<cluster::NodeName, Error> {
    let path = data_dir.path().join(NODE_NAME_FILE);
    let file_error = |source| Error::NodeNameFile {
        path: path.clone(),
        source,
    };
    match std::fs::read_to_string(&path) {
        Ok(text) => cluster::NodeName::parse(text.trim())
            .map_err(|rule| file_error(std::io::Error::new(std::io::ErrorKind::InvalidData, rule))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let name = cluster::NodeName::generate(&cluster::hostname());
            data_dir
                .write_secret(NODE_NAME_FILE, format!("{name}\n").as_bytes())
                .map_err(file_error)?;
            tracing::info!(node = %name, path = %path.display(), "made this node's name");
            Ok(name)
        }
        Err(e) => Err(file_error(e)),
    }
}

/// Connects to NATS and takes the name lease; `None` for a single node.
pub async fn join(
    settings: &ClusterSettings,
    node_name: &str,
    data_dir: &DataDir,
) -> Result<Option<cluster::Cluster>, Error> {
    let Some(nats_url) = &settings.nats_url else {
        return Ok(None);
    };
    let node_name = cluster::NodeName::parse(node_name)
        .map_err(|rule| Error::Usage(format!("node name '{node_name}': {rule}")))?;
    let holder = cluster::Holder::new(cluster::hostname(), absolute(data_dir.path()));
    let config = cluster::ClusterConfig {
        nats_url: nats_url.clone(),
        node_name,
        holder,
        lease_ttl: cluster::DEFAULT_LEASE_TTL,
    };
    match cluster::Cluster::join(config).await {
        Ok(joined) => Ok(Some(joined)),
        Err(e @ cluster::Error::NameInUse { .. }) => Err(Error::NodeNameInUse(e)),
        Err(e) => Err(Error::Cluster(e)),
    }
}

fn absolute(path: &Path) -> String {
    std::fs::canonicalize(path)
        .unwrap_or_else(|_| path.to_owned())
        .display()
        .to_string()
}

/// `/readyz` answers 503 while NATS is down or the name lease is lost.
pub struct NatsReadiness {
    pub cluster: cluster::Readiness,
    /// Ready means MQTT connections are taken too: after NATS comes back
    /// the fence reopens the broker a moment later, and a load balancer
    /// must not send clients before (they would get 0x88).
    pub broker: broker::Broker,
}

impl api::ReadinessCheck for NatsReadiness {
    fn check(&self) -> Result<(), String> {
        self.cluster.check().map_err(|e| e.to_string())?;
        if !self.broker.accepting() {
            return Err("MQTT connections are refused for now (fenced off the cluster)".to_owned());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster_settings(name: Option<&str>) -> ClusterSettings {
        ClusterSettings {
            nats_url: Some("nats://127.0.0.1:4222".into()),
            node_name: name.map(|n| cluster::NodeName::parse(n).unwrap()),
        }
    }

    #[test]
    fn a_generated_name_is_kept_in_the_data_dir() {
        let root = tempfile::tempdir().unwrap();
        let dir = DataDir::open(root.path()).unwrap();
        let first = node_name(&cluster_settings(None), &dir).unwrap();
        assert_eq!(first, node_name(&cluster_settings(None), &dir).unwrap());
        let kept = std::fs::read_to_string(root.path().join(NODE_NAME_FILE)).unwrap();
        assert_eq!(kept.trim(), first);
        // A given name wins and does not replace the kept one.
        let given = node_name(&cluster_settings(Some("edge-1")), &dir).unwrap();
        assert_eq!(given, "edge-1");
        assert_eq!(node_name(&cluster_settings(None), &dir).unwrap(), first);
    }

    #[test]
    fn a_single_node_keeps_the_host_name() {
        let root = tempfile::tempdir().unwrap();
        let dir = DataDir::open(root.path()).unwrap();
        let single = ClusterSettings::default();
        assert_eq!(node_name(&single, &dir).unwrap(), cluster::hostname());
        assert!(!root.path().join(NODE_NAME_FILE).exists());
    }

    #[test]
    fn a_damaged_name_file_is_reported() {
        let root = tempfile::tempdir().unwrap();
        let dir = DataDir::open(root.path()).unwrap();
        std::fs::write(root.path().join(NODE_NAME_FILE), "not a.name").unwrap();
        let err = node_name(&cluster_settings(None), &dir)
            .unwrap_err()
            .to_string();
        assert!(err.contains(NODE_NAME_FILE), "{err}");
    }
}
