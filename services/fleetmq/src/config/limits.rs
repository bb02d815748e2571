//! The broker's limits as `serve` settings (`--mqtt-max-connections` …),
//! each bounded, resolved into a [`broker::Config`]. Defaults are the
//! broker's own ([`broker::Config::default`]), so they live in one place.

use std::time::Duration;

use super::{Bounds, FileConfig, Setting};
use crate::cli::MqttLimitArgs;
use crate::error::Error;

/// The broker limits `serve` was given, validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MqttLimits {
    pub max_connections: u32,
    pub max_packet_size: u32,
    pub receive_maximum: u16,
    pub max_keep_alive: Option<u16>,
    pub max_session_expiry: u32,
    pub max_queued_messages: u32,
    pub max_queued_bytes: u64,
    pub max_tenant_queued_messages: u64,
    pub max_tenant_queued_bytes: u64,
    pub max_inflight_messages: u16,
    pub max_retained_per_subscribe: u32,
    pub max_topic_depth: u16,
    pub max_topic_length: u32,
    pub max_subscriptions: u32,
    pub max_subscription_bytes: u32,
    pub retained_per_client: u32,
    pub retained_bytes_per_client: u64,
    pub retained_per_tenant: u32,
    pub retained_bytes_per_tenant: u64,
    pub topic_alias_maximum: u16,
    pub connect_timeout: Duration,
    pub max_pending_connects: u32,
    pub max_pending_connects_per_address: u32,
    pub max_will_size: u32,
    /// The platform-wide publish limits (unlimited by default).
    pub publish_limits: broker::PublishLimits,
    pub rate_limit_strikes: u32,
    pub slow_consumer_timeout: Duration,
    pub slow_consumer_policy: broker::SlowConsumerPolicy,
}

impl MqttLimits {
    /// The broker configuration with these limits; the rest keeps its defaults.
    pub fn broker_config(&self) -> broker::Config {
        let usize_of = |n: u32| usize::try_from(n).unwrap_or(usize::MAX);
        let usize_of64 = |n: u64| usize::try_from(n).unwrap_or(usize::MAX);
        broker::Config {
            max_connections: usize_of(self.max_connections),
            max_packet_size: self.max_packet_size,
            receive_maximum: self.receive_maximum,
            max_keep_alive: self.max_keep_alive,
            max_session_expiry: self.max_session_expiry,
            max_queued_messages: usize_of(self.max_queued_messages),
            max_queued_bytes: usize_of64(self.max_queued_bytes),
            max_tenant_queued_messages: usize_of64(self.max_tenant_queued_messages),
            max_tenant_queued_bytes: usize_of64(self.max_tenant_queued_bytes),
            max_inflight_messages: self.max_inflight_messages,
            max_retained_per_subscribe: usize_of(self.max_retained_per_subscribe),
            topic_alias_maximum: self.topic_alias_maximum,
            connect_timeout: self.connect_timeout,
            topic_limits: broker::TopicLimits {
                max_depth: self.max_topic_depth,
                max_length: usize_of(self.max_topic_length),
            },
            max_subscriptions_per_session: usize_of(self.max_subscriptions),
            max_subscription_bytes_per_session: usize_of(self.max_subscription_bytes),
            retained_per_client: broker::RetainedLimit {
                messages: usize_of(self.retained_per_client),
                bytes: usize::try_from(self.retained_bytes_per_client).unwrap_or(usize::MAX),
            },
            retained_per_tenant: broker::RetainedLimit {
                messages: usize_of(self.retained_per_tenant),
                bytes: usize::try_from(self.retained_bytes_per_tenant).unwrap_or(usize::MAX),
            },
            max_pending_connects: usize_of(self.max_pending_connects),
            max_pending_connects_per_address: usize_of(self.max_pending_connects_per_address),
            max_will_size: usize_of(self.max_will_size),
            publish_limits: self.publish_limits,
            rate_limit_strikes: self.rate_limit_strikes,
            slow_consumer_timeout: self.slow_consumer_timeout,
            slow_consumer_policy: self.slow_consumer_policy,
            ..broker::Config::default()
        }
    }
}

limit!(
    MAX_CONNECTIONS,
    MQTT_MAX_CONNECTIONS,
    "--mqtt-max-connections",
    "FLEETMQ_MQTT_MAX_CONNECTIONS",
    "mqtt_max_connections",
    1..=10_000_000,
    "expected 1 to 10000000 connections per listener"
);
// At least room for a CONNECT with credentials and a will; at most the
// largest packet MQTT can frame (2.2.3: a 4-byte remaining length).
limit!(
    MAX_PACKET_SIZE,
    MQTT_MAX_PACKET_SIZE,
    "--mqtt-max-packet-size",
    "FLEETMQ_MQTT_MAX_PACKET_SIZE",
    "mqtt_max_packet_size",
    1024..=268_435_460,
    "expected 1024 to 268435460 bytes"
);
// 0 is a protocol error (3.2.2.3.3).
limit!(
    RECEIVE_MAXIMUM,
    MQTT_RECEIVE_MAXIMUM,
    "--mqtt-receive-maximum",
    "FLEETMQ_MQTT_RECEIVE_MAXIMUM",
    "mqtt_receive_maximum",
    1..=65_535,
    "expected 1 to 65535"
);
limit!(
    MAX_KEEP_ALIVE,
    MQTT_MAX_KEEP_ALIVE,
    "--mqtt-max-keep-alive",
    "FLEETMQ_MQTT_MAX_KEEP_ALIVE",
    "mqtt_max_keep_alive",
    1..=65_535,
    "expected 1 to 65535 seconds (leave it unset for no maximum)"
);
limit!(
    MAX_SESSION_EXPIRY,
    MQTT_MAX_SESSION_EXPIRY,
    "--mqtt-max-session-expiry",
    "FLEETMQ_MQTT_MAX_SESSION_EXPIRY",
    "mqtt_max_session_expiry",
    0..=4_294_967_295,
    "expected 0 to 4294967295 seconds"
);
limit!(
    MAX_QUEUED_MESSAGES,
    MQTT_MAX_QUEUED_MESSAGES,
    "--mqtt-max-queued-messages",
    "FLEETMQ_MQTT_MAX_QUEUED_MESSAGES",
    "mqtt_max_queued_messages",
    1..=10_000_000,
    "expected 1 to 10000000 messages per session"
);
// At least one message of the smallest packet size fits.
limit!(
    MAX_QUEUED_BYTES,
    MQTT_MAX_QUEUED_BYTES,
    "--mqtt-max-queued-bytes",
    "FLEETMQ_MQTT_MAX_QUEUED_BYTES",
    "mqtt_max_queued_bytes",
    1024..=1_099_511_627_776,
    "expected 1024 to 1099511627776 bytes per session"
);
limit!(
    MAX_TENANT_QUEUED_MESSAGES,
    MQTT_MAX_TENANT_QUEUED_MESSAGES,
    "--mqtt-max-tenant-queued-messages",
    "FLEETMQ_MQTT_MAX_TENANT_QUEUED_MESSAGES",
    "mqtt_max_tenant_queued_messages",
    1..=1_000_000_000,
    "expected 1 to 1000000000 messages per tenant"
);
limit!(
    MAX_TENANT_QUEUED_BYTES,
    MQTT_MAX_TENANT_QUEUED_BYTES,
    "--mqtt-max-tenant-queued-bytes",
    "FLEETMQ_MQTT_MAX_TENANT_QUEUED_BYTES",
    "mqtt_max_tenant_queued_bytes",
    1024..=1_099_511_627_776,
    "expected 1024 to 1099511627776 bytes per tenant"
);
// Packet ids are 16 bits (2.2.1).
limit!(
    MAX_INFLIGHT_MESSAGES,
    MQTT_MAX_INFLIGHT_MESSAGES,
    "--mqtt-max-inflight-messages",
    "FLEETMQ_MQTT_MAX_INFLIGHT_MESSAGES",
    "mqtt_max_inflight_messages",
    1..=65_535,
    "expected 1 to 65535 messages per client"
);
limit!(
    MAX_RETAINED_PER_SUBSCRIBE,
    MQTT_MAX_RETAINED_PER_SUBSCRIBE,
    "--mqtt-max-retained-per-subscribe",
    "FLEETMQ_MQTT_MAX_RETAINED_PER_SUBSCRIBE",
    "mqtt_max_retained_per_subscribe",
    0..=10_000_000,
    "expected 0 to 10000000 messages"
);
limit!(
    MAX_TOPIC_DEPTH,
    MQTT_MAX_TOPIC_DEPTH,
    "--mqtt-max-topic-depth",
    "FLEETMQ_MQTT_MAX_TOPIC_DEPTH",
    "mqtt_max_topic_depth",
    1..=65_535,
    "expected 1 to 65535 levels"
);
limit!(
    MAX_TOPIC_LENGTH,
    MQTT_MAX_TOPIC_LENGTH,
    "--mqtt-max-topic-length",
    "FLEETMQ_MQTT_MAX_TOPIC_LENGTH",
    "mqtt_max_topic_length",
    1..=65_535,
    "expected 1 to 65535 bytes"
);
limit!(
    MAX_SUBSCRIPTIONS,
    MQTT_MAX_SUBSCRIPTIONS,
    "--mqtt-max-subscriptions",
    "FLEETMQ_MQTT_MAX_SUBSCRIPTIONS",
    "mqtt_max_subscriptions",
    1..=10_000_000,
    "expected 1 to 10000000 subscriptions per session"
);
limit!(
    MAX_SUBSCRIPTION_BYTES,
    MQTT_MAX_SUBSCRIPTION_BYTES,
    "--mqtt-max-subscription-bytes",
    "FLEETMQ_MQTT_MAX_SUBSCRIPTION_BYTES",
    "mqtt_max_subscription_bytes",
    1..=4_294_967_295,
    "expected 1 to 4294967295 bytes per session"
);
limit!(
    RETAINED_PER_CLIENT,
    MQTT_RETAINED_PER_CLIENT,
    "--mqtt-retained-per-client",
    "FLEETMQ_MQTT_RETAINED_PER_CLIENT",
    "mqtt_retained_per_client",
    0..=10_000_000,
    "expected 0 to 10000000 messages per client identity"
);
limit!(
    RETAINED_BYTES_PER_CLIENT,
    MQTT_RETAINED_BYTES_PER_CLIENT,
    "--mqtt-retained-bytes-per-client",
    "FLEETMQ_MQTT_RETAINED_BYTES_PER_CLIENT",
    "mqtt_retained_bytes_per_client",
    0..=1_099_511_627_776,
    "expected 0 to 1099511627776 bytes per client identity"
);
limit!(
    RETAINED_PER_TENANT,
    MQTT_RETAINED_PER_TENANT,
    "--mqtt-retained-per-tenant",
    "FLEETMQ_MQTT_RETAINED_PER_TENANT",
    "mqtt_retained_per_tenant",
    0..=100_000_000,
    "expected 0 to 100000000 messages per tenant"
);
limit!(
    RETAINED_BYTES_PER_TENANT,
    MQTT_RETAINED_BYTES_PER_TENANT,
    "--mqtt-retained-bytes-per-tenant",
    "FLEETMQ_MQTT_RETAINED_BYTES_PER_TENANT",
    "mqtt_retained_bytes_per_tenant",
    0..=1_099_511_627_776,
    "expected 0 to 1099511627776 bytes per tenant"
);
limit!(
    TOPIC_ALIAS_MAXIMUM,
    MQTT_TOPIC_ALIAS_MAXIMUM,
    "--mqtt-topic-alias-maximum",
    "FLEETMQ_MQTT_TOPIC_ALIAS_MAXIMUM",
    "mqtt_topic_alias_maximum",
    0..=65_535,
    "expected 0 (no aliases) to 65535"
);
limit!(
    CONNECT_TIMEOUT,
    MQTT_CONNECT_TIMEOUT,
    "--mqtt-connect-timeout",
    "FLEETMQ_MQTT_CONNECT_TIMEOUT",
    "mqtt_connect_timeout",
    1..=300,
    "expected 1 to 300 seconds"
);
limit!(
    MAX_PENDING_CONNECTS,
    MQTT_MAX_PENDING_CONNECTS,
    "--mqtt-max-pending-connects",
    "FLEETMQ_MQTT_MAX_PENDING_CONNECTS",
    "mqtt_max_pending_connects",
    1..=10_000_000,
    "expected 1 to 10000000 sockets per listener"
);
limit!(
    MAX_PENDING_CONNECTS_PER_ADDRESS,
    MQTT_MAX_PENDING_CONNECTS_PER_ADDRESS,
    "--mqtt-max-pending-connects-per-address",
    "FLEETMQ_MQTT_MAX_PENDING_CONNECTS_PER_ADDRESS",
    "mqtt_max_pending_connects_per_address",
    1..=10_000_000,
    "expected 1 to 10000000 sockets per address"
);
// Counted as held in memory, which can be more than the CONNECT's size.
limit!(
    MAX_WILL_SIZE,
    MQTT_MAX_WILL_SIZE,
    "--mqtt-max-will-size",
    "FLEETMQ_MQTT_MAX_WILL_SIZE",
    "mqtt_max_will_size",
    0..=4_294_967_295,
    "expected 0 to 4294967295 bytes"
);

const MAX_RATE: u64 = 1_000_000_000_000;
limit!(
    PUBLISH_RATE,
    MQTT_PUBLISH_RATE,
    "--mqtt-publish-rate",
    "FLEETMQ_MQTT_PUBLISH_RATE",
    "mqtt_publish_rate",
    0..=MAX_RATE,
    "expected 0 (unlimited) to 1000000000000 messages per second"
);
limit!(
    PUBLISH_BURST,
    MQTT_PUBLISH_BURST,
    "--mqtt-publish-burst",
    "FLEETMQ_MQTT_PUBLISH_BURST",
    "mqtt_publish_burst",
    1..=MAX_RATE,
    "expected 1 to 1000000000000 messages, with --mqtt-publish-rate set"
);
limit!(
    PUBLISH_BYTE_RATE,
    MQTT_PUBLISH_BYTE_RATE,
    "--mqtt-publish-byte-rate",
    "FLEETMQ_MQTT_PUBLISH_BYTE_RATE",
    "mqtt_publish_byte_rate",
    0..=MAX_RATE,
    "expected 0 (unlimited) to 1000000000000 bytes per second"
);
limit!(
    PUBLISH_BYTE_BURST,
    MQTT_PUBLISH_BYTE_BURST,
    "--mqtt-publish-byte-burst",
    "FLEETMQ_MQTT_PUBLISH_BYTE_BURST",
    "mqtt_publish_byte_burst",
    1..=MAX_RATE,
    "expected 1 to 1000000000000 bytes, with --mqtt-publish-byte-rate set"
);
limit!(
    RATE_LIMIT_STRIKES,
    MQTT_RATE_LIMIT_STRIKES,
    "--mqtt-rate-limit-strikes",
    "FLEETMQ_MQTT_RATE_LIMIT_STRIKES",
    "mqtt_rate_limit_strikes",
    1..=1_000_000,
    "expected 1 to 1000000 refusals in a row"
);

limit!(
    SLOW_CONSUMER_TIMEOUT,
    MQTT_SLOW_CONSUMER_TIMEOUT,
    "--mqtt-slow-consumer-timeout",
    "FLEETMQ_MQTT_SLOW_CONSUMER_TIMEOUT",
    "mqtt_slow_consumer_timeout",
    0..=3600,
    "expected 0 (no back-pressure) to 3600 seconds"
);

/// One rate and its burst: `None` when the rate is 0 (unlimited); a burst
/// without a rate is a mistake, not silently ignored.
fn rate(
    (rate, rate_flag, rate_file): (&Bounds, Option<u64>, Option<u64>),
    (burst, burst_flag, burst_file): (&Bounds, Option<u64>, Option<u64>),
) -> Result<Option<broker::Rate>, Error> {
    let per_second: u64 = rate.resolve(rate_flag, rate_file, 0)?;
    let Some(given) = burst_flag.or(burst_file) else {
        return Ok((per_second > 0).then(|| broker::Rate::new(per_second, None)));
    };
    let value: u64 = burst.resolve(Some(given), None, 0)?;
    if per_second == 0 {
        return Err(Error::invalid(
            burst.setting,
            &given.to_string(),
            burst.hint,
        ));
    }
    Ok(Some(broker::Rate::new(per_second, Some(value))))
}

fn resolve_publish_limits(
    args: &MqttLimitArgs,
    file: &FileConfig,
) -> Result<broker::PublishLimits, Error> {
    Ok(broker::PublishLimits {
        messages: rate(
            (
                &PUBLISH_RATE,
                args.mqtt_publish_rate,
                file.mqtt_publish_rate,
            ),
            (
                &PUBLISH_BURST,
                args.mqtt_publish_burst,
                file.mqtt_publish_burst,
            ),
        )?,
        bytes: rate(
            (
                &PUBLISH_BYTE_RATE,
                args.mqtt_publish_byte_rate,
                file.mqtt_publish_byte_rate,
            ),
            (
                &PUBLISH_BYTE_BURST,
                args.mqtt_publish_byte_burst,
                file.mqtt_publish_byte_burst,
            ),
        )?,
    })
}

limit!(
    HTTP_MAX_CONNECTIONS_BOUNDS,
    HTTP_MAX_CONNECTIONS,
    "--http-max-connections",
    "FLEETMQ_HTTP_MAX_CONNECTIONS",
    "http_max_connections",
    1..=10_000_000,
    "expected 1 to 10000000 connections"
);
limit!(
    HTTP_MAX_PER_ADDRESS_BOUNDS,
    HTTP_MAX_CONNECTIONS_PER_ADDRESS,
    "--http-max-connections-per-address",
    "FLEETMQ_HTTP_MAX_CONNECTIONS_PER_ADDRESS",
    "http_max_connections_per_address",
    1..=10_000_000,
    "expected 1 to 10000000 connections"
);
limit!(
    HTTP_HEADER_TIMEOUT_BOUNDS,
    HTTP_HEADER_TIMEOUT,
    "--http-header-timeout",
    "FLEETMQ_HTTP_HEADER_TIMEOUT",
    "http_header_timeout",
    1..=3600,
    "expected 1 to 3600 seconds"
);

/// The HTTP listener's limits; defaults are [`api::ConnLimits::default`].
pub(super) fn resolve_http(
    args: &crate::cli::HttpLimitArgs,
    file: &FileConfig,
) -> Result<api::ConnLimits, Error> {
    let d = api::ConnLimits::default();
    let wide = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
    Ok(api::ConnLimits {
        max_connections: HTTP_MAX_CONNECTIONS_BOUNDS.resolve(
            args.http_max_connections,
            file.http_max_connections,
            wide(d.max_connections),
        )?,
        max_per_address: HTTP_MAX_PER_ADDRESS_BOUNDS.resolve(
            args.http_max_connections_per_address,
            file.http_max_connections_per_address,
            wide(d.max_per_address),
        )?,
        header_read_timeout: Duration::from_secs(HTTP_HEADER_TIMEOUT_BOUNDS.resolve(
            args.http_header_timeout,
            file.http_header_timeout,
            d.header_read_timeout.as_secs(),
        )?),
    })
}

pub(super) fn resolve(args: &MqttLimitArgs, file: &FileConfig) -> Result<MqttLimits, Error> {
    let d = broker::Config::default();
    let wide = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
    let max_keep_alive = match args.mqtt_max_keep_alive.or(file.mqtt_max_keep_alive) {
        Some(secs) => Some(MAX_KEEP_ALIVE.resolve(Some(secs), None, 0)?),
        None => d.max_keep_alive,
    };
    Ok(MqttLimits {
        max_connections: MAX_CONNECTIONS.resolve(
            args.mqtt_max_connections,
            file.mqtt_max_connections,
            wide(d.max_connections),
        )?,
        max_packet_size: MAX_PACKET_SIZE.resolve(
            args.mqtt_max_packet_size,
            file.mqtt_max_packet_size,
            u64::from(d.max_packet_size),
        )?,
        receive_maximum: RECEIVE_MAXIMUM.resolve(
            args.mqtt_receive_maximum,
            file.mqtt_receive_maximum,
            u64::from(d.receive_maximum),
        )?,
        max_keep_alive,
        max_session_expiry: MAX_SESSION_EXPIRY.resolve(
            args.mqtt_max_session_expiry,
            file.mqtt_max_session_expiry,
            u64::from(d.max_session_expiry),
        )?,
        max_queued_messages: MAX_QUEUED_MESSAGES.resolve(
            args.mqtt_max_queued_messages,
            file.mqtt_max_queued_messages,
            wide(d.max_queued_messages),
        )?,
        max_queued_bytes: MAX_QUEUED_BYTES.resolve(
            args.mqtt_max_queued_bytes,
            file.mqtt_max_queued_bytes,
            wide(d.max_queued_bytes),
        )?,
        max_tenant_queued_messages: MAX_TENANT_QUEUED_MESSAGES.resolve(
            args.mqtt_max_tenant_queued_messages,
            file.mqtt_max_tenant_queued_messages,
            wide(d.max_tenant_queued_messages),
        )?,
        max_tenant_queued_bytes: MAX_TENANT_QUEUED_BYTES.resolve(
            args.mqtt_max_tenant_queued_bytes,
            file.mqtt_max_tenant_queued_bytes,
            wide(d.max_tenant_queued_bytes),
        )?,
        max_inflight_messages: MAX_INFLIGHT_MESSAGES.resolve(
            args.mqtt_max_inflight_messages,
            file.mqtt_max_inflight_messages,
            u64::from(d.max_inflight_messages),
        )?,
        max_retained_per_subscribe: MAX_RETAINED_PER_SUBSCRIBE.resolve(
            args.mqtt_max_retained_per_subscribe,
            file.mqtt_max_retained_per_subscribe,
            wide(d.max_retained_per_subscribe),
        )?,
        max_topic_depth: MAX_TOPIC_DEPTH.resolve(
            args.mqtt_max_topic_depth,
            file.mqtt_max_topic_depth,
            u64::from(d.topic_limits.max_depth),
        )?,
        max_topic_length: MAX_TOPIC_LENGTH.resolve(
            args.mqtt_max_topic_length,
            file.mqtt_max_topic_length,
            wide(d.topic_limits.max_length),
        )?,
        max_subscriptions: MAX_SUBSCRIPTIONS.resolve(
            args.mqtt_max_subscriptions,
            file.mqtt_max_subscriptions,
            wide(d.max_subscriptions_per_session),
        )?,
        max_subscription_bytes: MAX_SUBSCRIPTION_BYTES.resolve(
            args.mqtt_max_subscription_bytes,
            file.mqtt_max_subscription_bytes,
            wide(d.max_subscription_bytes_per_session),
        )?,
        retained_per_client: RETAINED_PER_CLIENT.resolve(
            args.mqtt_retained_per_client,
            file.mqtt_retained_per_client,
            wide(d.retained_per_client.messages),
        )?,
        retained_bytes_per_client: RETAINED_BYTES_PER_CLIENT.resolve(
            args.mqtt_retained_bytes_per_client,
            file.mqtt_retained_bytes_per_client,
            wide(d.retained_per_client.bytes),
        )?,
        retained_per_tenant: RETAINED_PER_TENANT.resolve(
            args.mqtt_retained_per_tenant,
            file.mqtt_retained_per_tenant,
            wide(d.retained_per_tenant.messages),
        )?,
        retained_bytes_per_tenant: RETAINED_BYTES_PER_TENANT.resolve(
            args.mqtt_retained_bytes_per_tenant,
            file.mqtt_retained_bytes_per_tenant,
            wide(d.retained_per_tenant.bytes),
        )?,
        topic_alias_maximum: TOPIC_ALIAS_MAXIMUM.resolve(
            args.mqtt_topic_alias_maximum,
            file.mqtt_topic_alias_maximum,
            u64::from(d.topic_alias_maximum),
        )?,
        connect_timeout: Duration::from_secs(CONNECT_TIMEOUT.resolve::<u64>(
            args.mqtt_connect_timeout,
            file.mqtt_connect_timeout,
            d.connect_timeout.as_secs(),
        )?),
        max_pending_connects: MAX_PENDING_CONNECTS.resolve(
            args.mqtt_max_pending_connects,
            file.mqtt_max_pending_connects,
            wide(d.max_pending_connects),
        )?,
        max_pending_connects_per_address: MAX_PENDING_CONNECTS_PER_ADDRESS.resolve(
            args.mqtt_max_pending_connects_per_address,
            file.mqtt_max_pending_connects_per_address,
            wide(d.max_pending_connects_per_address),
        )?,
        max_will_size: MAX_WILL_SIZE.resolve(
            args.mqtt_max_will_size,
            file.mqtt_max_will_size,
            wide(d.max_will_size),
        )?,
        publish_limits: resolve_publish_limits(args, file)?,
        rate_limit_strikes: RATE_LIMIT_STRIKES.resolve(
            args.mqtt_rate_limit_strikes,
            file.mqtt_rate_limit_strikes,
            u64::from(d.rate_limit_strikes),
        )?,
        slow_consumer_timeout: Duration::from_secs(SLOW_CONSUMER_TIMEOUT.resolve::<u64>(
            args.mqtt_slow_consumer_timeout,
            file.mqtt_slow_consumer_timeout,
            d.slow_consumer_timeout.as_secs(),
        )?),
        slow_consumer_policy: args
            .mqtt_slow_consumer_policy
            .or(file.mqtt_slow_consumer_policy)
            .map_or(d.slow_consumer_policy, Into::into),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_broker_s_own() {
        let limits = resolve(&MqttLimitArgs::default(), &FileConfig::default()).unwrap();
        let ours = limits.broker_config();
        assert_eq!(ours, broker::Config::default());
        assert!(ours.publish_limits.is_unlimited());
    }

    #[test]
    fn slow_consumer_settings_from_flags_and_file() {
        let file = FileConfig::parse(
            "mqtt_slow_consumer_timeout = 2\nmqtt_slow_consumer_policy = \"disconnect\"\n",
        )
        .unwrap();
        let c = resolve(&MqttLimitArgs::default(), &file)
            .unwrap()
            .broker_config();
        assert_eq!(c.slow_consumer_timeout, Duration::from_secs(2));
        assert_eq!(
            c.slow_consumer_policy,
            broker::SlowConsumerPolicy::Disconnect
        );
        let args = MqttLimitArgs {
            mqtt_slow_consumer_timeout: Some(0),
            mqtt_slow_consumer_policy: Some(crate::cli::SlowConsumerPolicy::Drop),
            ..Default::default()
        };
        let c = resolve(&args, &file).unwrap().broker_config();
        assert!(c.slow_consumer_timeout.is_zero());
        assert_eq!(c.slow_consumer_policy, broker::SlowConsumerPolicy::Drop);
        let too_long = MqttLimitArgs {
            mqtt_slow_consumer_timeout: Some(3601),
            ..Default::default()
        };
        let err = resolve(&too_long, &FileConfig::default()).unwrap_err();
        assert!(
            err.to_string().contains("--mqtt-slow-consumer-timeout"),
            "{err}"
        );
    }

    #[test]
    fn publish_limits_from_flags_and_file() {
        let file = FileConfig::parse(
            "mqtt_publish_rate = 50\nmqtt_publish_byte_rate = 4096\n\
             mqtt_publish_byte_burst = 8192\nmqtt_rate_limit_strikes = 5\n",
        )
        .unwrap();
        let args = MqttLimitArgs {
            mqtt_publish_burst: Some(100),
            ..Default::default()
        };
        let c = resolve(&args, &file).unwrap().broker_config();
        assert_eq!(
            c.publish_limits.messages,
            Some(broker::Rate::new(50, Some(100)))
        );
        assert_eq!(
            c.publish_limits.bytes,
            Some(broker::Rate::new(4096, Some(8192)))
        );
        assert_eq!(c.rate_limit_strikes, 5);
        // A burst alone would look like a limit and be none.
        let lonely = MqttLimitArgs {
            mqtt_publish_byte_burst: Some(10),
            ..Default::default()
        };
        let err = resolve(&lonely, &FileConfig::default()).unwrap_err();
        assert!(
            err.to_string().contains("--mqtt-publish-byte-burst"),
            "{err}"
        );
        // Without a burst, one second's worth.
        let only_rate = MqttLimitArgs {
            mqtt_publish_rate: Some(7),
            ..Default::default()
        };
        let c = resolve(&only_rate, &FileConfig::default())
            .unwrap()
            .broker_config();
        assert_eq!(
            c.publish_limits.messages,
            Some(broker::Rate::new(7, Some(7)))
        );
        assert_eq!(c.publish_limits.bytes, None);
    }

    #[test]
    fn flag_beats_file_and_every_value_lands_in_the_broker_config() {
        let file = FileConfig::parse(
            "mqtt_max_connections = 5\nmqtt_receive_maximum = 7\nmqtt_max_keep_alive = 30\n\
             mqtt_max_packet_size = 4096\nmqtt_max_session_expiry = 0\n\
             mqtt_max_queued_messages = 9\nmqtt_max_retained_per_subscribe = 3\n\
             mqtt_topic_alias_maximum = 0\nmqtt_connect_timeout = 2\n",
        )
        .unwrap();
        let args = MqttLimitArgs {
            mqtt_max_connections: Some(6),
            ..Default::default()
        };
        let c = resolve(&args, &file).unwrap().broker_config();
        assert_eq!(c.max_connections, 6);
        assert_eq!(c.receive_maximum, 7);
        assert_eq!(c.max_keep_alive, Some(30));
        assert_eq!(c.max_packet_size, 4096);
        assert_eq!(c.max_session_expiry, 0);
        assert_eq!(c.max_queued_messages, 9);
        assert_eq!(c.max_retained_per_subscribe, 3);
        assert_eq!(c.topic_alias_maximum, 0);
        assert_eq!(c.connect_timeout, Duration::from_secs(2));
    }

    #[test]
    fn out_of_range_values_name_the_setting_and_the_range() {
        let cases: [(MqttLimitArgs, &str); 4] = [
            (
                MqttLimitArgs {
                    mqtt_receive_maximum: Some(0),
                    ..Default::default()
                },
                "--mqtt-receive-maximum",
            ),
            (
                MqttLimitArgs {
                    mqtt_receive_maximum: Some(70_000),
                    ..Default::default()
                },
                "FLEETMQ_MQTT_RECEIVE_MAXIMUM",
            ),
            (
                MqttLimitArgs {
                    mqtt_max_packet_size: Some(10),
                    ..Default::default()
                },
                "--mqtt-max-packet-size",
            ),
            (
                MqttLimitArgs {
                    mqtt_max_keep_alive: Some(0),
                    ..Default::default()
                },
                "--mqtt-max-keep-alive",
            ),
        ];
        for (args, name) in cases {
            let err = resolve(&args, &FileConfig::default()).unwrap_err();
            assert_eq!(err.exit_code(), 2);
            let msg = err.to_string();
            assert!(msg.contains(name) && msg.contains("expected"), "{msg}");
        }
    }
}
