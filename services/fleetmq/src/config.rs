//! Settings layered as flags > environment > config file > defaults.
//!
//! clap already puts flags above environment variables, so each setting is
//! `flag_or_env.or(file).unwrap_or(default)`. Values are checked here, once,
//! and every error names the setting in all the forms a user may have used.

use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::cli::{LogFormat, ServeArgs, StorageArgs};
use crate::error::Error;

/// One setting's three spellings, for error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Setting {
    pub flag: &'static str,
    pub env: &'static str,
    pub key: &'static str,
}

impl fmt::Display for Setting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} / {}", self.flag, self.env)
    }
}

macro_rules! setting {
    ($name:ident, $flag:literal, $env:literal, $key:literal) => {
        pub const $name: Setting = Setting {
            flag: $flag,
            env: $env,
            key: $key,
        };
    };
}

/// A number setting's accepted range; the hint repeats it for the error
/// message.
struct Bounds {
    setting: Setting,
    range: std::ops::RangeInclusive<u64>,
    hint: &'static str,
}

/// A number setting's [`Setting`] (public, for messages) and its [`Bounds`].
macro_rules! limit {
    ($bounds:ident, $setting:ident, $flag:literal, $env:literal, $key:literal, $range:expr, $hint:literal) => {
        setting!($setting, $flag, $env, $key);
        const $bounds: Bounds = Bounds {
            setting: $setting,
            range: $range,
            hint: $hint,
        };
    };
}

impl Bounds {
    /// The flag's, else the file's, else the default value, in range and
    /// in the type the broker wants (the ranges fit those types).
    fn resolve<T: TryFrom<u64>>(
        &self,
        flag: Option<u64>,
        file: Option<u64>,
        default: u64,
    ) -> Result<T, Error> {
        let value = flag.or(file).unwrap_or(default);
        in_range(self.setting, value, self.range.clone(), self.hint)
    }

    /// `value` (the flag's, else the file's) in range and in the type its
    /// user wants; `default` as it is when the setting is not given.
    fn given<T: TryFrom<u64>>(&self, value: Option<u64>, default: T) -> Result<T, Error> {
        value.map_or(Ok(default), |value| {
            in_range(self.setting, value, self.range.clone(), self.hint)
        })
    }
}

setting!(DATA_DIR, "--data-dir", "FLEETMQ_DATA_DIR", "data_dir");
setting!(
    DATABASE_URL,
    "--database-url",
    "FLEETMQ_DATABASE_URL",
    "database_url"
);
setting!(
    MQTT_LISTEN,
    "--mqtt-listen",
    "FLEETMQ_MQTT_LISTEN",
    "mqtt_listen"
);
setting!(
    MQTTS_LISTEN,
    "--mqtts-listen",
    "FLEETMQ_MQTTS_LISTEN",
    "mqtts_listen"
);
setting!(WS_LISTEN, "--ws-listen", "FLEETMQ_WS_LISTEN", "ws_listen");
setting!(
    HTTP_LISTEN,
    "--http-listen",
    "FLEETMQ_HTTP_LISTEN",
    "http_listen"
);
setting!(
    ALLOW_ANONYMOUS,
    "--allow-anonymous",
    "FLEETMQ_ALLOW_ANONYMOUS",
    "allow_anonymous"
);
limit!(
    SHUTDOWN_TIMEOUT_BOUNDS,
    SHUTDOWN_TIMEOUT,
    "--shutdown-timeout",
    "FLEETMQ_SHUTDOWN_TIMEOUT",
    "shutdown_timeout",
    1..=3600,
    "expected 1 to 3600 seconds"
);
limit!(
    RETAINED_PURGE_INTERVAL_BOUNDS,
    RETAINED_PURGE_INTERVAL,
    "--retained-purge-interval",
    "FLEETMQ_RETAINED_PURGE_INTERVAL",
    "retained_purge_interval",
    1..=86_400,
    "expected 1 to 86400 seconds"
);
setting!(TLS_CERT, "--tls-cert", "FLEETMQ_TLS_CERT", "tls_cert");
setting!(TLS_KEY, "--tls-key", "FLEETMQ_TLS_KEY", "tls_key");

/// `value` if `range` holds it, in the type its user wants (the ranges fit
/// those types), else the error naming `setting` and `hint`: the one check
/// of every number setting.
fn in_range<T: TryFrom<u64>>(
    setting: Setting,
    value: u64,
    range: std::ops::RangeInclusive<u64>,
    hint: &'static str,
) -> Result<T, Error> {
    range
        .contains(&value)
        .then(|| T::try_from(value).ok())
        .flatten()
        .ok_or_else(|| Error::invalid(setting, &value.to_string(), hint))
}

mod limits;
pub use limits::*;
mod webhook_settings;
pub use webhook_settings::WebhookSettings;
mod session_settings;
pub use session_settings::SessionSettings;
mod cluster_settings;
mod password_checks;
pub use cluster_settings::{ClusterSettings, NATS_URL, NODE_NAME};
setting!(KEK_FILE, "--kek-file", "FLEETMQ_KEK_FILE", "kek_file");
setting!(
    RATE_LIMIT,
    "--rate-limit",
    "FLEETMQ_RATE_LIMIT",
    "rate_limit"
);
setting!(
    TOKEN_RATE_LIMIT,
    "--token-rate-limit",
    "FLEETMQ_TOKEN_RATE_LIMIT",
    "token_rate_limit"
);

pub const DEFAULT_DATA_DIR: &str = "./fleetmq-data";
pub const SQLITE_FILE: &str = "fleetmq.db";

/// The config file. Unknown keys are an error: a typo must not be ignored.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub data_dir: Option<PathBuf>,
    pub database_url: Option<String>,
    pub log_format: Option<LogFormat>,
    pub mqtt_listen: Option<String>,
    pub mqtts_listen: Option<String>,
    pub ws_listen: Option<String>,
    pub http_listen: Option<String>,
    pub webhook_allow_private: Option<bool>,
    pub allow_anonymous: Option<String>,
    pub shutdown_timeout: Option<u64>,
    pub retained_purge_interval: Option<u64>,
    pub session_flush_ms: Option<u64>,
    pub session_buffer: Option<u64>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub password_check_concurrency: Option<u64>,
    pub password_check_queue: Option<u64>,
    pub password_failures_per_address: Option<u64>,
    pub mqtt_max_connections: Option<u64>,
    pub mqtt_max_packet_size: Option<u64>,
    pub mqtt_receive_maximum: Option<u64>,
    pub mqtt_max_keep_alive: Option<u64>,
    pub mqtt_max_session_expiry: Option<u64>,
    pub mqtt_max_queued_messages: Option<u64>,
    pub mqtt_max_queued_bytes: Option<u64>,
    pub mqtt_max_tenant_queued_messages: Option<u64>,
    pub mqtt_max_tenant_queued_bytes: Option<u64>,
    pub mqtt_max_inflight_messages: Option<u64>,
    pub mqtt_max_retained_per_subscribe: Option<u64>,
    pub mqtt_max_topic_depth: Option<u64>,
    pub mqtt_max_topic_length: Option<u64>,
    pub mqtt_max_subscriptions: Option<u64>,
    pub mqtt_max_subscription_bytes: Option<u64>,
    pub mqtt_retained_per_client: Option<u64>,
    pub mqtt_retained_bytes_per_client: Option<u64>,
    pub mqtt_retained_per_tenant: Option<u64>,
    pub mqtt_retained_bytes_per_tenant: Option<u64>,
    pub mqtt_topic_alias_maximum: Option<u64>,
    pub mqtt_connect_timeout: Option<u64>,
    pub mqtt_max_pending_connects: Option<u64>,
    pub mqtt_max_pending_connects_per_address: Option<u64>,
    pub mqtt_max_will_size: Option<u64>,
    pub mqtt_publish_rate: Option<u64>,
    pub mqtt_publish_burst: Option<u64>,
    pub mqtt_publish_byte_rate: Option<u64>,
    pub mqtt_publish_byte_burst: Option<u64>,
    pub mqtt_rate_limit_strikes: Option<u64>,
    pub mqtt_slow_consumer_timeout: Option<u64>,
    pub mqtt_slow_consumer_policy: Option<crate::cli::SlowConsumerPolicy>,
    pub http_max_connections: Option<u64>,
    pub http_max_connections_per_address: Option<u64>,
    pub http_header_timeout: Option<u64>,
    pub rate_limit: Option<String>,
    pub token_rate_limit: Option<String>,
    pub webhook_retry_schedule: Option<String>,
    pub webhook_request_timeout: Option<String>,
    pub webhook_disable_after_failures: Option<u64>,
    pub webhook_batch_max_messages: Option<u64>,
    pub webhook_batch_max_wait: Option<String>,
    pub webhook_max_pending_events: Option<u64>,
    // Cluster (issue 15).
    pub nats_url: Option<String>,
    pub node_name: Option<String>,
    pub kek_file: Option<PathBuf>,
}

impl FileConfig {
    pub fn load(path: &Path) -> Result<Self, Error> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::ConfigRead {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text).map_err(|message| Error::ConfigInvalid {
            path: path.to_owned(),
            message,
        })
    }

    /// Parses TOML text; the error is one line with the line number, since
    /// toml's own Display spans several lines with a source excerpt.
    pub fn parse(text: &str) -> Result<Self, String> {
        toml::from_str(text).map_err(|e| {
            let message = e.message().trim().replace('\n', " ");
            match e.span() {
                Some(span) => {
                    let line = text
                        .get(..span.start)
                        .map_or(0, |s| s.matches('\n').count())
                        + 1;
                    format!("line {line}: {message}")
                }
                None => message,
            }
        })
    }
}

/// Where the data lives: shared by `serve` and `migrate`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageConfig {
    pub data_dir: PathBuf,
    /// The database URL; `None` means the embedded SQLite file in the data dir.
    pub database_url: Option<String>,
    pub log_format: LogFormat,
    /// `--kek-file`: the key-encryption key elsewhere than the data dir.
    pub kek_file: Option<PathBuf>,
}

impl StorageConfig {
    /// Where the key-encryption key is read: `--kek-file`, or
    /// `<data-dir>/kek.hex` (created there by the first node).
    pub fn kek_path(&self) -> PathBuf {
        self.kek_file
            .clone()
            .unwrap_or_else(|| self.data_dir.join(crate::pki_boot::KEK_FILE))
    }

    /// The URL to open: the explicit one, or SQLite inside the data dir.
    pub fn effective_database_url(&self) -> String {
        match &self.database_url {
            Some(url) => url.clone(),
            None => format!("sqlite://{}", self.data_dir.join(SQLITE_FILE).display()),
        }
    }
}

/// Everything `serve` needs, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServeConfig {
    pub storage: StorageConfig,
    pub mqtt_listen: SocketAddr,
    pub mqtts_listen: SocketAddr,
    pub ws_listen: SocketAddr,
    pub http_listen: SocketAddr,
    pub webhook_allow_private: bool,
    pub allow_anonymous: Option<String>,
    pub shutdown_timeout: Duration,
    /// How often expired retained messages are deleted from the database.
    pub retained_purge_interval: Duration,
    /// The operator's MQTT/TLS certificate; `None`: issued by the platform root.
    pub tls: Option<TlsFiles>,
    pub mqtt_limits: MqttLimits,
    /// The HTTP listener's connection cap and header (idle) timeout.
    pub http_conn: api::ConnLimits,
    /// Per authenticated caller on `/v1`; `None` when `off`.
    pub rate_limit: Option<api::auth::RateLimit>,
    /// `POST /v1/auth/token` per client address and per (API key, address).
    pub token_rate_limit: Option<api::auth::RateLimit>,
    /// Retries, timeouts, batching and the outbox bound of webhooks.
    pub webhooks: WebhookSettings,
    /// Persistent sessions' write-behind window and buffer bound.
    pub sessions: SessionSettings,
    /// How many MQTT password checks run and wait, and the failure budget
    /// per client address.
    pub password_checks: access::PasswordCheckLimits,
    /// `--nats-url` and `--node-name` (issue 15).
    pub cluster: ClusterSettings,
}

/// A certificate chain and its key, both PEM files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

fn load_file(path: Option<&Path>) -> Result<FileConfig, Error> {
    path.map_or_else(|| Ok(FileConfig::default()), FileConfig::load)
}

pub fn resolve_storage(args: &StorageArgs) -> Result<StorageConfig, Error> {
    let file = load_file(args.config.as_deref())?;
    storage_from(args, &file)
}

fn storage_from(args: &StorageArgs, file: &FileConfig) -> Result<StorageConfig, Error> {
    let data_dir = args
        .data_dir
        .clone()
        .or_else(|| file.data_dir.clone())
        .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
    if data_dir.as_os_str().is_empty() {
        return Err(Error::invalid(DATA_DIR, "", "must not be empty"));
    }
    let database_url = args
        .database_url
        .clone()
        .or_else(|| file.database_url.clone());
    if let Some(url) = &database_url {
        check_database_url(url)?;
    }
    Ok(StorageConfig {
        data_dir,
        database_url,
        log_format: args
            .log_format
            .or(file.log_format)
            .unwrap_or(LogFormat::Pretty),
        kek_file: args.kek_file.clone().or_else(|| file.kek_file.clone()),
    })
}

fn check_database_url(url: &str) -> Result<(), Error> {
    const SCHEMES: [&str; 4] = ["postgres://", "postgresql://", "sqlite://", "sqlite:"];
    if SCHEMES.iter().any(|s| url.starts_with(s)) {
        Ok(())
    } else {
        // Never echo the URL: it may hold a password.
        Err(Error::invalid(
            DATABASE_URL,
            "<redacted>",
            "expected postgres://user@host:port/db or sqlite://path",
        ))
    }
}

pub fn resolve_serve(args: &ServeArgs) -> Result<ServeConfig, Error> {
    let file = load_file(args.storage.config.as_deref())?;
    let storage = storage_from(&args.storage, &file)?;
    let addr = |setting: Setting, flag: &Option<String>, file: &Option<String>, default: &str| {
        let text = flag.as_deref().or(file.as_deref()).unwrap_or(default);
        parse_listen_addr(setting, text)
    };
    let allow_anonymous = args
        .allow_anonymous
        .clone()
        .or_else(|| file.allow_anonymous.clone());
    if let Some(tenant) = &allow_anonymous
        && store::TenantId::parse(tenant).is_err()
    {
        return Err(Error::invalid(
            ALLOW_ANONYMOUS,
            tenant,
            "a tenant id is 3 to 63 characters of a-z, 0-9 and -",
        ));
    }
    let shutdown_secs: u64 =
        SHUTDOWN_TIMEOUT_BOUNDS.given(args.shutdown_timeout.or(file.shutdown_timeout), 10)?;
    let purge_secs: u64 = RETAINED_PURGE_INTERVAL_BOUNDS.given(
        args.retained_purge_interval
            .or(file.retained_purge_interval),
        60,
    )?;
    let tls = match (
        args.tls_cert.clone().or_else(|| file.tls_cert.clone()),
        args.tls_key.clone().or_else(|| file.tls_key.clone()),
    ) {
        (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
        (None, None) => None,
        (Some(_), None) | (None, Some(_)) => {
            return Err(Error::Usage(format!(
                "{TLS_CERT} and {TLS_KEY} go together: give both, or neither to have the platform root CA issue one"
            )));
        }
    };
    let mqtt_limits = limits::resolve(&args.mqtt_limits, &file)?;
    let http_conn = limits::resolve_http(&args.http_limits, &file)?;
    let webhooks = webhook_settings::resolve(&args.webhooks, &file)?;
    let sessions = session_settings::resolve(&args.sessions, &file)?;
    let password_checks = password_checks::resolve(&args.password_checks, &file)?;
    let cluster = cluster_settings::resolve(&args.cluster, &file, &storage)?;
    let rate_limit = |setting: Setting,
                      flag: &Option<String>,
                      file: &Option<String>,
                      default: api::auth::RateLimit| {
        match flag.as_deref().or(file.as_deref()) {
            None => Ok(Some(default)),
            Some(text) => api::auth::RateLimit::parse(text)
                .map_err(|expected| Error::invalid(setting, text, expected)),
        }
    };
    Ok(ServeConfig {
        rate_limit: rate_limit(
            RATE_LIMIT,
            &args.rate_limit,
            &file.rate_limit,
            api::auth::RateLimit::default(),
        )?,
        token_rate_limit: rate_limit(
            TOKEN_RATE_LIMIT,
            &args.token_rate_limit,
            &file.token_rate_limit,
            api::auth::RateLimit::token_exchange_default(),
        )?,
        storage,
        tls,
        mqtt_limits,
        http_conn,
        webhooks,
        sessions,
        password_checks,
        cluster,
        mqtt_listen: addr(
            MQTT_LISTEN,
            &args.mqtt_listen,
            &file.mqtt_listen,
            "0.0.0.0:1883",
        )?,
        mqtts_listen: addr(
            MQTTS_LISTEN,
            &args.mqtts_listen,
            &file.mqtts_listen,
            "0.0.0.0:8883",
        )?,
        ws_listen: addr(WS_LISTEN, &args.ws_listen, &file.ws_listen, "0.0.0.0:8083")?,
        http_listen: addr(
            HTTP_LISTEN,
            &args.http_listen,
            &file.http_listen,
            "0.0.0.0:8080",
        )?,
        webhook_allow_private: args
            .webhook_allow_private
            .or(file.webhook_allow_private)
            .unwrap_or(false),
        allow_anonymous,
        shutdown_timeout: Duration::from_secs(shutdown_secs),
        retained_purge_interval: Duration::from_secs(purge_secs),
    })
}

/// `HOST:PORT` with an IP or a resolvable name (`localhost:8080`).
fn parse_listen_addr(setting: Setting, text: &str) -> Result<SocketAddr, Error> {
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let hint = "expected HOST:PORT such as 0.0.0.0:8080 or 127.0.0.1:0 (port 0 picks a free port)";
    // Only names with an explicit port are resolved: "8080" alone is a mistake.
    if text
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok())
        && let Some(addr) = text.to_socket_addrs().ok().and_then(|mut a| a.next())
    {
        return Ok(addr);
    }
    Err(Error::invalid(setting, text, hint))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn serve_args(f: impl FnOnce(&mut ServeArgs)) -> ServeArgs {
        let mut args = ServeArgs::default();
        f(&mut args);
        args
    }

    /// Why the default arguments changed by `f` are refused; the reason
    /// names each of `names` (the flag, its variable).
    fn refusal(f: impl FnOnce(&mut ServeArgs), names: &[&str]) -> String {
        let err = resolve_serve(&serve_args(f)).unwrap_err().to_string();
        for name in names {
            assert!(err.contains(name), "{name} not in {err}");
        }
        err
    }

    #[test]
    fn defaults_follow_the_design_contract() {
        let cfg = resolve_serve(&ServeArgs::default()).unwrap();
        assert_eq!(cfg.http_listen, "0.0.0.0:8080".parse().unwrap());
        assert_eq!(cfg.mqtt_listen, "0.0.0.0:1883".parse().unwrap());
        assert_eq!(cfg.mqtts_listen, "0.0.0.0:8883".parse().unwrap());
        assert_eq!(cfg.storage.data_dir, PathBuf::from("./fleetmq-data"));
        assert_eq!(
            cfg.storage.effective_database_url(),
            "sqlite://./fleetmq-data/fleetmq.db"
        );
        assert!(!cfg.webhook_allow_private);
        assert_eq!(cfg.allow_anonymous, None);
    }

    #[test]
    fn flag_or_env_wins_over_file_which_wins_over_default() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("fleetmq.toml");
        std::fs::write(
            &file,
            "http_listen = \"127.0.0.2:0\"\nmqtt_listen = \"127.0.0.2:0\"\n",
        )
        .unwrap();
        let cfg = resolve_serve(&serve_args(|a| {
            a.storage.config = Some(file.clone());
            a.http_listen = Some("127.0.0.3:0".into());
        }))
        .unwrap();
        assert_eq!(cfg.http_listen, "127.0.0.3:0".parse().unwrap());
        assert_eq!(cfg.mqtt_listen, "127.0.0.2:0".parse().unwrap());
        assert_eq!(cfg.ws_listen, "0.0.0.0:8083".parse().unwrap());
    }

    #[test]
    fn the_shipped_example_config_is_valid() {
        let file = FileConfig::parse(include_str!("../../../deploy/fleetmq.toml")).unwrap();
        assert_eq!(file.data_dir, Some(PathBuf::from("/var/lib/fleetmq")));
        assert_eq!(file.log_format, Some(LogFormat::Json));
        let limits = limits::resolve(&Default::default(), &file).unwrap();
        assert_eq!(limits.max_connections, 50_000);
        assert_eq!(limits.max_keep_alive, Some(1200));
    }

    #[test]
    fn unknown_file_key_names_key_and_line() {
        let err = FileConfig::parse("data_dir = \"x\"\nhttp_listn = \"1\"\n").unwrap_err();
        assert!(err.starts_with("line 2:"), "{err}");
        assert!(err.contains("http_listn"), "{err}");
        assert!(!err.contains('\n'));
    }

    #[test]
    fn bad_address_names_flag_and_env() {
        let msg = refusal(
            |a| a.http_listen = Some("8080".into()),
            &["--http-listen", "FLEETMQ_HTTP_LISTEN"],
        );
        assert!(msg.contains("'8080'"), "{msg}");
    }

    #[test]
    fn resolvable_names_are_accepted() {
        let cfg =
            resolve_serve(&serve_args(|a| a.http_listen = Some("localhost:0".into()))).unwrap();
        assert!(cfg.http_listen.ip().is_loopback());
    }

    #[test]
    fn database_url_scheme_is_checked_without_echoing_it() {
        let err = refusal(
            |a| a.storage.database_url = Some("mysql://u:hunter2@h/db".into()),
            &["--database-url"],
        );
        assert!(!err.contains("hunter2"), "{err}");
    }

    #[test]
    fn anonymous_tenant_must_be_a_valid_id() {
        assert!(
            resolve_serve(&serve_args(
                |a| a.allow_anonymous = Some("Bad Tenant".into())
            ))
            .is_err()
        );
        let cfg = resolve_serve(&serve_args(|a| {
            a.allow_anonymous = Some("dev-fleet".into())
        }))
        .unwrap();
        assert_eq!(cfg.allow_anonymous.as_deref(), Some("dev-fleet"));
    }

    #[test]
    fn tls_cert_and_key_go_together() {
        refusal(
            |a| a.tls_cert = Some("c.pem".into()),
            &["--tls-cert", "--tls-key"],
        );
        let cfg = resolve_serve(&serve_args(|a| {
            a.tls_cert = Some("c.pem".into());
            a.tls_key = Some("k.pem".into());
        }))
        .unwrap();
        assert_eq!(
            cfg.tls,
            Some(TlsFiles {
                cert: "c.pem".into(),
                key: "k.pem".into()
            })
        );
        assert_eq!(resolve_serve(&ServeArgs::default()).unwrap().tls, None);
    }

    #[test]
    fn rate_limits_parse_and_can_be_off() {
        let cfg = resolve_serve(&ServeArgs::default()).unwrap();
        assert_eq!(cfg.rate_limit, Some(api::auth::RateLimit::default()));
        assert_eq!(
            cfg.token_rate_limit,
            Some(api::auth::RateLimit::token_exchange_default())
        );
        let cfg = resolve_serve(&serve_args(|a| {
            a.rate_limit = Some("off".into());
            a.token_rate_limit = Some("3/min,burst=1".into());
        }))
        .unwrap();
        assert_eq!(cfg.rate_limit, None);
        let token = cfg.token_rate_limit.unwrap();
        assert_eq!((token.requests, token.burst), (3, 1));
        refusal(
            |a| a.rate_limit = Some("fast".into()),
            &["--rate-limit", "FLEETMQ_RATE_LIMIT"],
        );
        let file = FileConfig::parse("rate_limit = \"5/s\"\ntoken_rate_limit = \"off\"\n").unwrap();
        assert_eq!(file.rate_limit.as_deref(), Some("5/s"));
        assert_eq!(file.token_rate_limit.as_deref(), Some("off"));
    }

    #[test]
    fn shutdown_timeout_is_bounded() {
        assert!(resolve_serve(&serve_args(|a| a.shutdown_timeout = Some(0))).is_err());
        let cfg = resolve_serve(&serve_args(|a| a.shutdown_timeout = Some(3))).unwrap();
        assert_eq!(cfg.shutdown_timeout, Duration::from_secs(3));
    }

    #[test]
    fn retained_purge_interval_is_bounded() {
        assert_eq!(
            resolve_serve(&serve_args(|_| ()))
                .unwrap()
                .retained_purge_interval,
            Duration::from_secs(60)
        );
        assert!(resolve_serve(&serve_args(|a| a.retained_purge_interval = Some(0))).is_err());
        let cfg = resolve_serve(&serve_args(|a| a.retained_purge_interval = Some(5))).unwrap();
        assert_eq!(cfg.retained_purge_interval, Duration::from_secs(5));
    }
}
