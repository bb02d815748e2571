//! The binary's errors. Each Display is one line that says what went wrong and
//! what to change; `main` prints it and exits with [`Error::exit_code`].

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;

use crate::config::{DATA_DIR, KEK_FILE, NODE_NAME, Setting};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read config file {}: {source}", path.display())]
    ConfigRead { path: PathBuf, source: io::Error },

    #[error("config file {}: {message}", path.display())]
    ConfigInvalid { path: PathBuf, message: String },

    #[error("invalid value '{value}' for {setting}: {hint}")]
    InvalidSetting {
        setting: Setting,
        value: String,
        hint: &'static str,
    },

    #[error("data dir {}: cannot {action}: {source}; fix it or choose another with {DATA_DIR}", path.display())]
    DataDir {
        path: PathBuf,
        action: &'static str,
        source: io::Error,
    },

    #[error(
        "data dir {} is already in use by another fleetmq process{}; stop it or choose another with {DATA_DIR}",
        path.display(),
        holder.as_ref().map(|pid| format!(" (pid {pid})")).unwrap_or_default()
    )]
    DataDirInUse {
        path: PathBuf,
        holder: Option<String>,
    },

    #[error(
        "cannot listen for {what} on {addr}: port {} is already in use; choose another with {setting} (port 0 picks a free port)",
        addr.port()
    )]
    PortInUse {
        what: &'static str,
        addr: SocketAddr,
        setting: Setting,
    },

    #[error("cannot listen for {what} on {addr}: {source}; choose another address with {setting}")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        setting: Setting,
        source: io::Error,
    },

    #[error("database {url}: {source}")]
    Store { url: String, source: store::Error },

    #[error("{0}")]
    Usage(String),

    #[error(
        "cannot read MQTT/TLS file {}: {source}; choose another with {setting}",
        path.display()
    )]
    TlsFileRead {
        path: PathBuf,
        setting: Setting,
        source: io::Error,
    },

    #[error(
        "MQTT/TLS file {}: {message}; choose another with {setting}",
        path.display()
    )]
    TlsFileInvalid {
        path: PathBuf,
        setting: Setting,
        message: String,
    },

    #[error("cannot write MQTT/TLS file {}: {source}", path.display())]
    TlsFileWrite { path: PathBuf, source: io::Error },

    #[error("MQTT/TLS: {0}")]
    Tls(String),

    #[error("PKI: {0}")]
    Pki(String),

    #[error(
        "PKI: the database already holds a platform root CA, but there is no key-encryption key at {}: every node on one database needs the first node's key; copy its <data-dir>/kek.hex there (mode 0600) or give it with {KEK_FILE}",
        path.display()
    )]
    KekMissing { path: PathBuf },

    #[error(
        "PKI: the key-encryption key in {} is not the one that sealed the platform root CA in the database ({reason}): every node on one database needs the first node's key; copy its <data-dir>/kek.hex there or give it with {KEK_FILE}",
        path.display()
    )]
    KekMismatch { path: PathBuf, reason: String },

    #[error(
        "cluster: {0}; if that node is not this one, give this node another name with {NODE_NAME}"
    )]
    NodeNameInUse(cluster::Error),

    #[error("cluster: {0}")]
    Cluster(cluster::Error),

    #[error("node name file {}: {source}", path.display())]
    NodeNameFile { path: PathBuf, source: io::Error },

    #[error("webhooks: {0}")]
    Webhooks(String),

    #[error(
        "tenant '{0}' does not exist; create it first (POST /v1/tenants with a platform-admin token)"
    )]
    NoSuchTenant(String),

    #[error("token: {0}")]
    Token(String),

    #[error("metrics: {0}")]
    Metrics(String),

    #[error("logging: {0}")]
    Telemetry(String),

    #[error("cannot start the async runtime: {0}")]
    Runtime(io::Error),

    #[error("HTTP server failed: {0}")]
    Serve(io::Error),
}

impl Error {
    pub fn invalid(setting: Setting, value: &str, hint: &'static str) -> Self {
        Error::InvalidSetting {
            setting,
            value: value.to_owned(),
            hint,
        }
    }

    pub fn store(url: &str, source: store::Error) -> Self {
        Error::Store {
            url: store::redact_url(url),
            source,
        }
    }

    /// 2 for a configuration the user must fix (as clap does for bad flags),
    /// 1 for everything else.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::ConfigRead { .. }
            | Error::ConfigInvalid { .. }
            | Error::InvalidSetting { .. }
            | Error::TlsFileRead { .. }
            | Error::TlsFileInvalid { .. }
            | Error::KekMissing { .. }
            | Error::KekMismatch { .. }
            | Error::NodeNameInUse(_)
            | Error::Usage(_) => 2,
            _ => 1,
        }
    }
}
