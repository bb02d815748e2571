//! Cluster membership (issue 15): `--nats-url` makes the node a member of
//! a cluster on one shared PostgreSQL database; `--node-name` names it
//! (unique among live nodes; a default is made once per data dir).

use super::{FileConfig, Setting, StorageConfig};
use crate::cli::ClusterArgs;
use crate::error::Error;

setting!(NATS_URL, "--nats-url", "FLEETMQ_NATS_URL", "nats_url");
setting!(NODE_NAME, "--node-name", "FLEETMQ_NODE_NAME", "node_name");

/// The cluster settings `serve` was given, validated.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ClusterSettings {
    /// `None`: a single node, no NATS.
    pub nats_url: Option<String>,
    /// `None`: the data dir's remembered name, or a new default.
    pub node_name: Option<cluster::NodeName>,
}

pub(super) fn resolve(
    args: &ClusterArgs,
    file: &FileConfig,
    storage: &StorageConfig,
) -> Result<ClusterSettings, Error> {
    let nats_url = args.nats_url.clone().or_else(|| file.nats_url.clone());
    if let Some(url) = &nats_url {
        // Never echo the URL: it may hold a password or token.
        cluster::check_url(url).map_err(|hint| Error::invalid(NATS_URL, "<redacted>", hint))?;
        let postgres = storage
            .database_url
            .as_deref()
            .is_some_and(|u| u.starts_with("postgres://") || u.starts_with("postgresql://"));
        if !postgres {
            return Err(Error::Usage(format!(
                "{NATS_URL} makes this node a cluster member, and cluster members share one PostgreSQL database: give --database-url postgres://… (SQLite is one node's own file)"
            )));
        }
    }
    let node_name = args
        .node_name
        .as_deref()
        .or(file.node_name.as_deref())
        .map(|text| {
            cluster::NodeName::parse(text).map_err(|hint| Error::invalid(NODE_NAME, text, hint))
        })
        .transpose()?;
    Ok(ClusterSettings {
        nats_url,
        node_name,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn storage(url: Option<&str>) -> StorageConfig {
        StorageConfig {
            data_dir: "d".into(),
            database_url: url.map(str::to_owned),
            log_format: crate::cli::LogFormat::Pretty,
            kek_file: None,
        }
    }

    fn args(url: Option<&str>, name: Option<&str>) -> ClusterArgs {
        ClusterArgs {
            nats_url: url.map(str::to_owned),
            node_name: name.map(str::to_owned),
        }
    }

    #[test]
    fn no_nats_url_is_a_single_node() {
        let file = FileConfig::default();
        let got = resolve(&args(None, None), &file, &storage(None)).unwrap();
        assert_eq!(got, ClusterSettings::default());
    }

    #[test]
    fn a_cluster_needs_postgres() {
        let file = FileConfig::default();
        let nats = Some("nats://127.0.0.1:4222");
        for db in [None, Some("sqlite://x.db"), Some("sqlite:x.db")] {
            let err = resolve(&args(nats, None), &file, &storage(db))
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("--nats-url") && err.contains("PostgreSQL") && !err.contains('\n'),
                "{err}"
            );
        }
        let pg = storage(Some("postgres://u@h/db"));
        let got = resolve(&args(nats, Some("n1")), &file, &pg).unwrap();
        assert_eq!(got.nats_url.as_deref(), nats);
        assert_eq!(got.node_name.unwrap().as_str(), "n1");
    }

    #[test]
    fn bad_values_name_the_setting_and_hide_the_url() {
        let file = FileConfig::default();
        let pg = storage(Some("postgres://u@h/db"));
        let err = resolve(&args(Some("http://u:hunter2@h:1"), None), &file, &pg)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("--nats-url") && !err.contains("hunter2"),
            "{err}"
        );
        let err = resolve(&args(None, Some("a.b")), &file, &pg)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("--node-name") && err.contains("'a.b'"),
            "{err}"
        );
    }

    #[test]
    fn the_file_is_read_below_flags() {
        let file =
            FileConfig::parse("nats_url = \"nats://h:4222\"\nnode_name = \"from-file\"\n").unwrap();
        let pg = storage(Some("postgres://u@h/db"));
        let got = resolve(&args(None, Some("from-flag")), &file, &pg).unwrap();
        assert_eq!(got.nats_url.as_deref(), Some("nats://h:4222"));
        assert_eq!(got.node_name.unwrap().as_str(), "from-flag");
    }
}
