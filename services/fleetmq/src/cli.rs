//! Command-line definitions. Every value is optional here so that
//! [`crate::config`] can tell a flag or environment variable (which clap reads)
//! from a config-file value or a default.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "fleetmq",
    version,
    about = "fleetmq: a multi-tenant IoT device platform (MQTT broker, PKI, REST API, webhooks)"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the platform: broker, REST API, webhooks and dashboard in one process.
    Serve(Box<ServeArgs>),
    /// Apply pending database migrations and exit.
    Migrate(StorageArgs),
    /// Administration with the same config and data as `serve`.
    #[command(subcommand)]
    Admin(AdminCommand),
}

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Print a bearer token for the REST API (safe while the server runs).
    Token(TokenArgs),
}

#[derive(Debug, Clone, Args)]
pub struct TokenArgs {
    #[command(flatten)]
    pub storage: StorageArgs,

    /// platform-admin, tenant-admin, operator or viewer.
    #[arg(long, value_name = "ROLE")]
    pub role: String,

    /// The tenant the token is for; required for every role but platform-admin.
    #[arg(long, value_name = "TENANT")]
    pub tenant: Option<String>,

    /// Lifetime: seconds, or a number with s, m, h or d (at most 30d).
    #[arg(long, value_name = "TTL", default_value = "1h")]
    pub ttl: String,
}

/// Options shared by every subcommand that touches the data directory or database.
#[derive(Debug, Clone, Default, Args)]
pub struct StorageArgs {
    /// TOML config file; its keys are the long flag names with `_` for `-`
    /// (e.g. `http_listen = "0.0.0.0:8080"`). Flags and environment win over it.
    #[arg(long, env = "FLEETMQ_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Directory for the SQLite database, keys and the lock file; created with
    /// mode 0700. [default: ./fleetmq-data]
    #[arg(long, env = "FLEETMQ_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// Database: `postgres://user@host:port/db` or `sqlite://path`.
    /// [default: sqlite://<data-dir>/fleetmq.db]
    #[arg(long, env = "FLEETMQ_DATABASE_URL", value_name = "URL")]
    pub database_url: Option<String>,

    /// Log format on stderr; filter with RUST_LOG (e.g. `RUST_LOG=fleetmq=debug`).
    /// [default: pretty]
    #[arg(long, env = "FLEETMQ_LOG_FORMAT", value_name = "FORMAT")]
    pub log_format: Option<LogFormat>,

    /// The key-encryption key (64 hex digits, mode 0600) that seals the CA
    /// and token keys; never created. Every node on one database needs the
    /// same key. [default: <data-dir>/kek.hex, created by the first start]
    #[arg(long, env = "FLEETMQ_KEK_FILE", value_name = "FILE")]
    pub kek_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Default, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub storage: StorageArgs,

    /// MQTT over TCP listen address; port 0 picks a free port. [default: 0.0.0.0:1883]
    #[arg(long, env = "FLEETMQ_MQTT_LISTEN", value_name = "ADDR")]
    pub mqtt_listen: Option<String>,

    /// MQTT over TLS listen address. [default: 0.0.0.0:8883]
    #[arg(long, env = "FLEETMQ_MQTTS_LISTEN", value_name = "ADDR")]
    pub mqtts_listen: Option<String>,

    /// MQTT over WebSocket listen address (path /mqtt). [default: 0.0.0.0:8083]
    #[arg(long, env = "FLEETMQ_WS_LISTEN", value_name = "ADDR")]
    pub ws_listen: Option<String>,

    /// HTTP listen address for the REST API, dashboard, /healthz, /readyz and
    /// /metrics; port 0 picks a free port. [default: 0.0.0.0:8080]
    #[arg(long, env = "FLEETMQ_HTTP_LISTEN", value_name = "ADDR")]
    pub http_listen: Option<String>,

    /// Let webhooks target loopback and private addresses (development and tests only).
    #[arg(long, env = "FLEETMQ_WEBHOOK_ALLOW_PRIVATE", value_name = "BOOL",
          num_args = 0..=1, default_missing_value = "true",
          value_parser = clap::builder::BoolishValueParser::new())]
    pub webhook_allow_private: Option<bool>,

    /// Let unauthenticated MQTT clients in, with full access to TENANT's topics
    /// (created if missing). Development and benchmarks only; off by default.
    #[arg(long, env = "FLEETMQ_ALLOW_ANONYMOUS", value_name = "TENANT")]
    pub allow_anonymous: Option<String>,

    /// Seconds to drain connections after SIGINT/SIGTERM before closing anyway.
    /// [default: 10]
    #[arg(long, env = "FLEETMQ_SHUTDOWN_TIMEOUT", value_name = "SECS")]
    pub shutdown_timeout: Option<u64>,

    /// Seconds between deletions of expired retained messages from the
    /// database (expired ones are never delivered in between). [default: 60]
    #[arg(long, env = "FLEETMQ_RETAINED_PURGE_INTERVAL", value_name = "SECS")]
    pub retained_purge_interval: Option<u64>,

    /// PEM certificate chain (leaf first) for MQTT over TLS; needs --tls-key.
    /// [default: issued by the platform root CA at start; clients trust <data-dir>/ca.pem]
    #[arg(long, env = "FLEETMQ_TLS_CERT", value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key of --tls-cert.
    #[arg(long, env = "FLEETMQ_TLS_KEY", value_name = "FILE")]
    pub tls_key: Option<PathBuf>,

    /// REST requests per authenticated caller: `off`, or RATE[,burst=N] with
    /// RATE like 50/s, 600/min or 10000/h; over it, 429 with Retry-After.
    /// [default: 50/s,burst=200]
    #[arg(long, env = "FLEETMQ_RATE_LIMIT", value_name = "LIMIT")]
    pub rate_limit: Option<String>,

    /// `POST /v1/auth/token` attempts per client address and per (API key, address),
    /// against secret guessing; same syntax as --rate-limit.
    /// [default: 10/min,burst=10]
    #[arg(long, env = "FLEETMQ_TOKEN_RATE_LIMIT", value_name = "LIMIT")]
    pub token_rate_limit: Option<String>,

    #[command(flatten)]
    pub mqtt_limits: MqttLimitArgs,

    #[command(flatten)]
    pub http_limits: HttpLimitArgs,

    #[command(flatten)]
    pub webhooks: WebhookArgs,

    #[command(flatten)]
    pub sessions: SessionArgs,

    #[command(flatten)]
    pub password_checks: PasswordCheckArgs,

    #[command(flatten)]
    pub cluster: ClusterArgs,
}

/// Cluster membership over NATS (issue 15).
#[derive(Debug, Clone, Default, Args)]
#[command(next_help_heading = "Cluster")]
pub struct ClusterArgs {
    /// NATS server(s), nats://HOST:PORT[,…], with JetStream on: makes this
    /// node a cluster member (needs a postgres:// --database-url shared by
    /// every node). [default: none, a single node]
    #[arg(long, env = "FLEETMQ_NATS_URL", value_name = "URL")]
    pub nats_url: Option<String>,

    /// This node's name, unique among the live nodes (A-Z a-z 0-9 - _).
    /// [default: <host>-<random>, made once and kept in <data-dir>/node-name]
    #[arg(long, env = "FLEETMQ_NODE_NAME", value_name = "NAME")]
    pub node_name: Option<String>,
}

/// Persistent MQTT sessions kept in the database (issue 14).
#[derive(Debug, Clone, Default, Args)]
#[command(next_help_heading = "Persistent sessions")]
pub struct SessionArgs {
    /// Longest a session change nobody waits for (a QoS 1 delivery
    /// acknowledged, a disconnect) stays in memory before it is written;
    /// what an acknowledgement waits for is written at once. [default: 100]
    #[arg(long, env = "FLEETMQ_SESSION_FLUSH_MS", value_name = "MS")]
    pub session_flush_ms: Option<u64>,

    /// Session changes that may wait to be written; beyond it QoS 1/2
    /// messages for persistent sessions are refused (PUBACK/PUBREC 0x83, a
    /// 3.1.1 connection is closed). [default: 1000000]
    #[arg(long, env = "FLEETMQ_SESSION_BUFFER", value_name = "N")]
    pub session_buffer: Option<u64>,
}

/// MQTT password checks (argon2id, about 19 MiB each while it runs).
#[derive(Debug, Clone, Default, Args)]
#[command(next_help_heading = "Password checks")]
pub struct PasswordCheckArgs {
    /// Password checks running at once; the others wait, served fairly per
    /// tenant. [default: the number of CPU cores]
    #[arg(long, env = "FLEETMQ_PASSWORD_CHECK_CONCURRENCY", value_name = "N")]
    pub password_check_concurrency: Option<u64>,

    /// Password checks waiting, all tenants together (a quarter of it per
    /// tenant); past it a CONNECT is refused with Server busy (0x89, 3.1.1
    /// 0x03). [default: 256]
    #[arg(long, env = "FLEETMQ_PASSWORD_CHECK_QUEUE", value_name = "N")]
    pub password_check_queue: Option<u64>,

    /// Failed password checks one client address may have before its
    /// CONNECTs are refused (0x86, 3.1.1 0x04) without a check; one is
    /// forgiven every 3 s. [default: 20]
    #[arg(long, env = "FLEETMQ_PASSWORD_FAILURES_PER_ADDRESS", value_name = "N")]
    pub password_failures_per_address: Option<u64>,
}

/// Webhook delivery: retries, timeouts, batching, the outbox bound.
#[derive(Debug, Clone, Default, Args)]
#[command(next_help_heading = "Webhooks")]
pub struct WebhookArgs {
    /// Wait before each delivery attempt, the first included, comma-separated
    /// (ms, s, m, h, d); its length is the number of attempts. Each wait is
    /// spread by ±10%. [default: 0s,5s,5m,30m,2h,5h,10h,10h]
    #[arg(long, env = "FLEETMQ_WEBHOOK_RETRY_SCHEDULE", value_name = "WAITS")]
    pub webhook_retry_schedule: Option<String>,

    /// Time a receiver has to answer one request. [default: 15s]
    #[arg(long, env = "FLEETMQ_WEBHOOK_REQUEST_TIMEOUT", value_name = "DURATION")]
    pub webhook_request_timeout: Option<String>,

    /// Deliveries failed for good (their retry schedule exhausted) in a row
    /// after which an endpoint is disabled (with a
    /// `webhook.endpoint_disabled` event). [default: 50]
    #[arg(long, env = "FLEETMQ_WEBHOOK_DISABLE_AFTER_FAILURES", value_name = "N")]
    pub webhook_disable_after_failures: Option<u64>,

    /// Messages per request for endpoints with a topic filter (a
    /// `message.batch`); 1 sends each message alone. [default: 100]
    #[arg(long, env = "FLEETMQ_WEBHOOK_BATCH_MAX_MESSAGES", value_name = "N")]
    pub webhook_batch_max_messages: Option<u64>,

    /// Longest a batch waits for more messages before it is sent. [default: 1s]
    #[arg(long, env = "FLEETMQ_WEBHOOK_BATCH_MAX_WAIT", value_name = "DURATION")]
    pub webhook_batch_max_wait: Option<String>,

    /// Events waiting in the database to be fanned out beyond which new
    /// ones are dropped, counted and reported as `webhook.events_dropped`.
    /// [default: 1000000]
    #[arg(long, env = "FLEETMQ_WEBHOOK_MAX_PENDING_EVENTS", value_name = "N")]
    pub webhook_max_pending_events: Option<u64>,
}

/// The HTTP listener's connection limits.
#[derive(Debug, Clone, Default, Args)]
#[command(next_help_heading = "HTTP limits")]
pub struct HttpLimitArgs {
    /// HTTP connections open at once; more are answered 503 and closed.
    /// [default: 1024]
    #[arg(long, env = "FLEETMQ_HTTP_MAX_CONNECTIONS", value_name = "N")]
    pub http_max_connections: Option<u64>,

    /// HTTP connections open at once from one client address.
    /// [default: 256]
    #[arg(
        long,
        env = "FLEETMQ_HTTP_MAX_CONNECTIONS_PER_ADDRESS",
        value_name = "N"
    )]
    pub http_max_connections_per_address: Option<u64>,

    /// Seconds a client has to send a request's headers, from connecting
    /// and after each response (so also the idle timeout). [default: 10]
    #[arg(long, env = "FLEETMQ_HTTP_HEADER_TIMEOUT", value_name = "SECS")]
    pub http_header_timeout: Option<u64>,
}

/// The broker's limits; defaults suit a small fleet.
#[derive(Debug, Clone, Default, Args)]
#[command(next_help_heading = "MQTT limits")]
pub struct MqttLimitArgs {
    /// Connections served at once per MQTT listener; more are answered
    /// "server busy". [default: 10000]
    #[arg(long, env = "FLEETMQ_MQTT_MAX_CONNECTIONS", value_name = "N")]
    pub mqtt_max_connections: Option<u64>,

    /// Largest MQTT packet accepted, in bytes (announced to v5 clients).
    /// [default: 1048576]
    #[arg(long, env = "FLEETMQ_MQTT_MAX_PACKET_SIZE", value_name = "BYTES")]
    pub mqtt_max_packet_size: Option<u64>,

    /// Receive Maximum: unacknowledged QoS 1/2 messages a client may send
    /// us at once. [default: 64]
    #[arg(long, env = "FLEETMQ_MQTT_RECEIVE_MAXIMUM", value_name = "N")]
    pub mqtt_receive_maximum: Option<u64>,

    /// Largest keep alive accepted, in seconds; longer (or none) becomes
    /// this for v5 clients and is refused for 3.1.1. [default: no maximum]
    #[arg(long, env = "FLEETMQ_MQTT_MAX_KEEP_ALIVE", value_name = "SECS")]
    pub mqtt_max_keep_alive: Option<u64>,

    /// Longest Session Expiry Interval granted, in seconds. [default: 604800]
    #[arg(long, env = "FLEETMQ_MQTT_MAX_SESSION_EXPIRY", value_name = "SECS")]
    pub mqtt_max_session_expiry: Option<u64>,

    /// Messages queued per session before new ones are dropped and counted.
    /// [default: 10000]
    #[arg(long, env = "FLEETMQ_MQTT_MAX_QUEUED_MESSAGES", value_name = "N")]
    pub mqtt_max_queued_messages: Option<u64>,

    /// Bytes (about the wire size of each message) queued per session
    /// before new messages are dropped and counted. [default: 16777216]
    #[arg(long, env = "FLEETMQ_MQTT_MAX_QUEUED_BYTES", value_name = "BYTES")]
    pub mqtt_max_queued_bytes: Option<u64>,

    /// Messages queued in all sessions of one tenant together before new
    /// ones are dropped and counted for the tenant. [default: 1000000]
    #[arg(
        long,
        env = "FLEETMQ_MQTT_MAX_TENANT_QUEUED_MESSAGES",
        value_name = "N"
    )]
    pub mqtt_max_tenant_queued_messages: Option<u64>,

    /// Bytes queued in all sessions of one tenant together.
    /// [default: 536870912]
    #[arg(
        long,
        env = "FLEETMQ_MQTT_MAX_TENANT_QUEUED_BYTES",
        value_name = "BYTES"
    )]
    pub mqtt_max_tenant_queued_bytes: Option<u64>,

    /// Unacknowledged QoS 1/2 messages sent to one client at most; a
    /// smaller Receive Maximum from the client wins (3.1.1 clients
    /// announce none). [default: 32]
    #[arg(long, env = "FLEETMQ_MQTT_MAX_INFLIGHT_MESSAGES", value_name = "N")]
    pub mqtt_max_inflight_messages: Option<u64>,

    /// Retained messages one SUBSCRIBE may deliver. [default: 10000]
    #[arg(
        long,
        env = "FLEETMQ_MQTT_MAX_RETAINED_PER_SUBSCRIBE",
        value_name = "N"
    )]
    pub mqtt_max_retained_per_subscribe: Option<u64>,

    /// Most levels in a topic name or filter (0x90 / 0x8F beyond); a tenant's max_depth rule replaces it. [default: 128]
    #[arg(long, env = "FLEETMQ_MQTT_MAX_TOPIC_DEPTH", value_name = "N")]
    pub mqtt_max_topic_depth: Option<u64>,

    /// Most bytes in a topic name or filter (0x90 / 0x8F beyond). [default: 4096]
    #[arg(long, env = "FLEETMQ_MQTT_MAX_TOPIC_LENGTH", value_name = "BYTES")]
    pub mqtt_max_topic_length: Option<u64>,

    /// Subscriptions one session may hold; more are refused 0x97 (3.1.1: 0x80). [default: 1000]
    #[arg(long, env = "FLEETMQ_MQTT_MAX_SUBSCRIPTIONS", value_name = "N")]
    pub mqtt_max_subscriptions: Option<u64>,

    /// Bytes of topic filters one session may hold; more are refused 0x97 (3.1.1: 0x80). [default: 65536]
    #[arg(
        long,
        env = "FLEETMQ_MQTT_MAX_SUBSCRIPTION_BYTES",
        value_name = "BYTES"
    )]
    pub mqtt_max_subscription_bytes: Option<u64>,

    /// Retained messages one device or credential may keep in a tenant; more are refused 0x97 (3.1.1: disconnect). [default: 1000]
    #[arg(long, env = "FLEETMQ_MQTT_RETAINED_PER_CLIENT", value_name = "N")]
    pub mqtt_retained_per_client: Option<u64>,

    /// Bytes (topic + payload) of retained messages one device or credential may keep in a tenant. [default: 16777216]
    #[arg(
        long,
        env = "FLEETMQ_MQTT_RETAINED_BYTES_PER_CLIENT",
        value_name = "BYTES"
    )]
    pub mqtt_retained_bytes_per_client: Option<u64>,

    /// Retained messages one tenant may keep. [default: 100000]
    #[arg(long, env = "FLEETMQ_MQTT_RETAINED_PER_TENANT", value_name = "N")]
    pub mqtt_retained_per_tenant: Option<u64>,

    /// Bytes (topic + payload) of retained messages one tenant may keep. [default: 268435456]
    #[arg(
        long,
        env = "FLEETMQ_MQTT_RETAINED_BYTES_PER_TENANT",
        value_name = "BYTES"
    )]
    pub mqtt_retained_bytes_per_tenant: Option<u64>,

    /// Topic Alias Maximum announced to v5 clients; 0 turns client aliases
    /// off. [default: 64]
    #[arg(long, env = "FLEETMQ_MQTT_TOPIC_ALIAS_MAXIMUM", value_name = "N")]
    pub mqtt_topic_alias_maximum: Option<u64>,

    /// Seconds a new connection has to send CONNECT. [default: 10]
    #[arg(long, env = "FLEETMQ_MQTT_CONNECT_TIMEOUT", value_name = "SECS")]
    pub mqtt_connect_timeout: Option<u64>,

    /// Sockets per MQTT listener that have not sent CONNECT yet (they hold
    /// no connection place); past it the oldest is closed. [default: 4096]
    #[arg(long, env = "FLEETMQ_MQTT_MAX_PENDING_CONNECTS", value_name = "N")]
    pub mqtt_max_pending_connects: Option<u64>,

    /// Sockets per peer address that have not sent CONNECT yet; more are
    /// closed at once. [default: 64]
    #[arg(
        long,
        env = "FLEETMQ_MQTT_MAX_PENDING_CONNECTS_PER_ADDRESS",
        value_name = "N"
    )]
    pub mqtt_max_pending_connects_per_address: Option<u64>,

    /// Largest Last Will accepted (topic, payload and properties as held
    /// in memory), in bytes; a larger will is refused at CONNECT (0x95).
    /// [default: 65536]
    #[arg(long, env = "FLEETMQ_MQTT_MAX_WILL_SIZE", value_name = "BYTES")]
    pub mqtt_max_will_size: Option<u64>,

    /// Platform-wide publish limit per client, in messages per second, for
    /// clients whose tenant or device has none set by REST; 0 is
    /// unlimited. [default: 0]
    #[arg(long, env = "FLEETMQ_MQTT_PUBLISH_RATE", value_name = "N")]
    pub mqtt_publish_rate: Option<u64>,

    /// Messages a client may publish at once above --mqtt-publish-rate.
    /// [default: one second's worth]
    #[arg(long, env = "FLEETMQ_MQTT_PUBLISH_BURST", value_name = "N")]
    pub mqtt_publish_burst: Option<u64>,

    /// Platform-wide publish limit per client, in payload bytes per second;
    /// 0 is unlimited. [default: 0]
    #[arg(long, env = "FLEETMQ_MQTT_PUBLISH_BYTE_RATE", value_name = "BYTES")]
    pub mqtt_publish_byte_rate: Option<u64>,

    /// Payload bytes a client may publish at once above
    /// --mqtt-publish-byte-rate. [default: one second's worth]
    #[arg(long, env = "FLEETMQ_MQTT_PUBLISH_BYTE_BURST", value_name = "BYTES")]
    pub mqtt_publish_byte_burst: Option<u64>,

    /// PUBLISHes refused for the rate limit in a row after which an MQTT 5
    /// client is disconnected (0x96). [default: 20]
    #[arg(long, env = "FLEETMQ_MQTT_RATE_LIMIT_STRIKES", value_name = "N")]
    pub mqtt_rate_limit_strikes: Option<u64>,

    /// Seconds a subscriber's queue may stay above its high-water mark
    /// (7/8 of its bound) while the publishers adding to it are paused
    /// (their sockets not read); past it the subscriber is a slow consumer
    /// (--mqtt-slow-consumer-policy). 0: no pausing, messages past the
    /// bound are dropped at once. [default: 5]
    #[arg(long, env = "FLEETMQ_MQTT_SLOW_CONSUMER_TIMEOUT", value_name = "SECS")]
    pub mqtt_slow_consumer_timeout: Option<u64>,

    /// What becomes of a slow consumer: its messages past the bound are
    /// dropped and counted, or it is disconnected (MQTT 5: DISCONNECT 0x97
    /// Quota exceeded). [default: drop]
    #[arg(long, env = "FLEETMQ_MQTT_SLOW_CONSUMER_POLICY", value_name = "POLICY")]
    pub mqtt_slow_consumer_policy: Option<SlowConsumerPolicy>,
}

/// `--mqtt-slow-consumer-policy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SlowConsumerPolicy {
    /// Publishers stop waiting for it; its messages past the bound are
    /// dropped and counted.
    Drop,
    /// Its connection is closed.
    Disconnect,
}

impl From<SlowConsumerPolicy> for broker::SlowConsumerPolicy {
    fn from(p: SlowConsumerPolicy) -> Self {
        match p {
            SlowConsumerPolicy::Drop => broker::SlowConsumerPolicy::Drop,
            SlowConsumerPolicy::Disconnect => broker::SlowConsumerPolicy::Disconnect,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable, coloured when stderr is a terminal.
    Pretty,
    /// One JSON object per line, for log shippers.
    Json,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn boolean_flag_accepts_bare_and_explicit_values() {
        let parse = |args: &[&str]| match Cli::try_parse_from(args).unwrap().command {
            Command::Serve(s) => s.webhook_allow_private,
            _ => unreachable!(),
        };
        assert_eq!(parse(&["fleetmq", "serve"]), None);
        assert_eq!(
            parse(&["fleetmq", "serve", "--webhook-allow-private"]),
            Some(true)
        );
        assert_eq!(
            parse(&["fleetmq", "serve", "--webhook-allow-private=false"]),
            Some(false)
        );
        assert!(
            Cli::try_parse_from(["fleetmq", "serve", "--webhook-allow-private=maybe"]).is_err()
        );
    }
}
