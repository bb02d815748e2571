//! Metric names and the helpers that record them (`metrics` crate; the
//! binary installs the Prometheus recorder).

use std::sync::atomic::{AtomicU64, Ordering};

use mqtt::QoS;

/// Why a message was not delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DropReason {
    QueueFull,
    OfflineQoS0,
    Expired,
    TooLarge,
    QueueBytes,
    TenantQueueFull,
    /// The queue was full after it was found a slow consumer.
    SlowConsumer,
}

impl DropReason {
    fn label(self) -> &'static str {
        match self {
            DropReason::QueueFull => "queue_full",
            DropReason::OfflineQoS0 => "offline_qos0",
            DropReason::Expired => "expired",
            DropReason::TooLarge => "too_large",
            DropReason::QueueBytes => "queue_bytes",
            DropReason::TenantQueueFull => "tenant_queue_full",
            DropReason::SlowConsumer => "slow_consumer",
        }
    }
}

fn qos_label(qos: QoS) -> &'static str {
    match qos {
        QoS::AtMostOnce => "0",
        QoS::AtLeastOnce => "1",
        QoS::ExactlyOnce => "2",
    }
}

pub(crate) fn dropped(reason: DropReason) {
    metrics::counter!("mqtt_messages_dropped_total", "reason" => reason.label()).increment(1);
}

/// A PUBLISH refused (not authorized, no such tenant, …), by reason code;
/// the only trace of a refused QoS 0 message.
pub(crate) fn refused(reason: mqtt::ReasonCode) {
    metrics::counter!("mqtt_publishes_refused_total", "reason_code" => format!("0x{:02x}", reason.to_u8()))
        .increment(1);
}

/// A message dropped because its tenant's queues together were full; per
/// tenant, so the tenant it hits can see it (only drops get here).
pub(crate) fn tenant_queue_dropped(tenant: &str) {
    metrics::counter!("mqtt_tenant_queue_dropped_total", "tenant" => tenant.to_owned())
        .increment(1);
}

/// A message dropped for a slow consumer, per tenant (only drops get
/// here).
pub(crate) fn slow_consumer_dropped(tenant: &str) {
    metrics::counter!("mqtt_slow_consumer_dropped_total", "tenant" => tenant.to_owned())
        .increment(1);
}

/// A subscriber found a slow consumer, by the policy applied to it.
pub(crate) fn slow_consumer(tenant: &str, policy: crate::backpressure::SlowConsumerPolicy) {
    metrics::counter!(
        "mqtt_slow_consumers_total",
        "tenant" => tenant.to_owned(),
        "policy" => policy.as_str()
    )
    .increment(1);
}

pub(crate) fn retained_cap_hit() {
    metrics::counter!("mqtt_messages_dropped_total", "reason" => "retained_cap").increment(1);
}

/// Connections opened, refused and closed since start: how much the
/// connection set has moved, for the binary's allocator upkeep (a
/// connect storm's freed memory is given back once it ends).
static CONNECTION_CHURN: AtomicU64 = AtomicU64::new(0);

/// Connections opened, refused and closed since the process started.
pub fn connection_churn() -> u64 {
    CONNECTION_CHURN.load(Ordering::Relaxed)
}

pub(crate) fn connection_opened() {
    CONNECTION_CHURN.fetch_add(1, Ordering::Relaxed);
    metrics::counter!("mqtt_connections_total").increment(1);
    metrics::gauge!("mqtt_connections").increment(1.0);
}

/// A connection answered and closed before CONNECT was served.
pub(crate) fn connection_refused(reason: &'static str) {
    CONNECTION_CHURN.fetch_add(1, Ordering::Relaxed);
    metrics::counter!("mqtt_connections_refused_total", "reason" => reason).increment(1);
}

/// Sockets waiting for their CONNECT (see `admission`).
pub(crate) fn pending_connects(delta: f64) {
    metrics::gauge!("mqtt_pending_connects").increment(delta);
}

/// A live subscription removed because a policy no longer allows it.
pub(crate) fn subscription_revoked() {
    metrics::counter!("mqtt_subscriptions_revoked_total").increment(1);
}

pub(crate) fn connection_closed() {
    CONNECTION_CHURN.fetch_add(1, Ordering::Relaxed);
    metrics::gauge!("mqtt_connections").decrement(1.0);
}

/// Counters bumped once per message, their handles kept per thread.
///
/// `counter!` looks its key up in the recorder's registry at each call
/// (hashing name and labels, cloning and dropping the handle's `Arc`): a
/// tenth of the broker's CPU in a QoS 0 fan-in (perf, issue 16). A handle
/// is valid for the recorder that made it, so the cache remembers which
/// one that was (by address) and starts again when another is in force:
/// the global one installed after a first message, or a test's local
/// recorder. The global recorder is set once per process; only a local
/// recorder dropped and another made at the same address could be taken
/// for the same one, which tests avoid by keeping theirs alive.
struct PerMessage {
    recorder: *const (),
    received: [metrics::Counter; 3],
    sent: [metrics::Counter; 3],
}

thread_local! {
    static PER_MESSAGE: std::cell::RefCell<Option<PerMessage>> = const { std::cell::RefCell::new(None) };
}

fn per_message(f: impl FnOnce(&PerMessage)) {
    let recorder = metrics::with_recorder(|r| std::ptr::from_ref(r).cast::<()>());
    PER_MESSAGE.with_borrow_mut(|cache| {
        if cache.as_ref().is_none_or(|c| c.recorder != recorder) {
            let qos = [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce];
            *cache = Some(PerMessage {
                recorder,
                received: qos.map(
                    |q| metrics::counter!("mqtt_messages_received_total", "qos" => qos_label(q)),
                ),
                sent: qos
                    .map(|q| metrics::counter!("mqtt_messages_sent_total", "qos" => qos_label(q))),
            });
        }
        if let Some(c) = cache.as_ref() {
            f(c);
        }
    });
}

pub(crate) fn message_in(qos: QoS) {
    per_message(|c| c.received[usize::from(qos.to_u8())].increment(1));
}

pub(crate) fn message_out(qos: QoS) {
    per_message(|c| c.sent[usize::from(qos.to_u8())].increment(1));
}

pub(crate) fn bytes_in(n: usize) {
    metrics::counter!("mqtt_bytes_received_total").increment(u64::try_from(n).unwrap_or(u64::MAX));
}

pub(crate) fn bytes_out(n: usize) {
    metrics::counter!("mqtt_bytes_sent_total").increment(u64::try_from(n).unwrap_or(u64::MAX));
}

pub(crate) fn sessions(delta: f64) {
    metrics::gauge!("mqtt_sessions").increment(delta);
}

pub(crate) fn subscriptions(delta: f64) {
    metrics::gauge!("mqtt_subscriptions").increment(delta);
}

pub(crate) fn retained(delta: f64) {
    metrics::gauge!("mqtt_retained_messages").increment(delta);
}

/// What happened to a PUBLISH over its client's rate limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Throttle {
    /// MQTT 5 QoS 1/2: acknowledged with 0x96, not routed.
    Refused,
    /// MQTT 5 QoS 0: dropped.
    Dropped,
    /// MQTT 3.1.1: held back (the socket is not read) until it fits.
    Delayed,
}

impl Throttle {
    fn label(self) -> &'static str {
        match self {
            Throttle::Refused => "refused",
            Throttle::Dropped => "dropped",
            Throttle::Delayed => "delayed",
        }
    }
}

/// Off the hot path: only messages over a limit get here.
pub(crate) fn throttled(tenant: &crate::TenantId, what: Throttle) {
    metrics::counter!(
        "mqtt_messages_throttled_total",
        "tenant" => tenant.as_str().to_owned(),
        "outcome" => what.label()
    )
    .increment(1);
}

pub(crate) fn rate_limit_disconnect(tenant: &crate::TenantId) {
    metrics::counter!(
        "mqtt_rate_limit_disconnects_total",
        "tenant" => tenant.as_str().to_owned()
    )
    .increment(1);
}

/// A topic name (`packet="publish"`, `"will"`) or filter (`"subscribe"`) refused for
/// its shape: over the depth or length limit, or a tenant's rule.
pub(crate) fn topic_refused(packet: &'static str, reason: &'static str) {
    metrics::counter!("mqtt_topics_refused_total", "packet" => packet, "reason" => reason)
        .increment(1);
}

/// A stored retained message not loaded because its topic breaks the
/// limits in force (it stays in the database until cleared).
pub(crate) fn retained_skipped(reason: &'static str) {
    metrics::counter!("mqtt_retained_skipped_total", "reason" => reason).increment(1);
}

/// A retained PUBLISH refused over a quota (`scope`: client or tenant).
pub(crate) fn retained_quota_refused(tenant: &crate::TenantId, scope: &'static str) {
    metrics::counter!(
        "mqtt_retained_quota_refused_total",
        "tenant" => tenant.as_str().to_owned(),
        "scope" => scope
    )
    .increment(1);
}

/// A SUBSCRIBE filter refused over the session's subscription limits
/// (`limit`: count or bytes).
pub(crate) fn subscription_limit_refused(limit: &'static str) {
    metrics::counter!("mqtt_subscriptions_refused_total", "limit" => limit).increment(1);
}

#[cfg(test)]
mod tests {
    use metrics_util::debugging::DebuggingRecorder;

    use super::*;

    /// The per-thread handles follow the recorder in force: each of two
    /// recorders, used in turn, sees its own messages and none of the
    /// other's.
    #[test]
    fn per_message_counters_follow_the_recorder_in_force() {
        let (a, b) = (DebuggingRecorder::new(), DebuggingRecorder::new());
        let (seen_a, seen_b) = (a.snapshotter(), b.snapshotter());
        let send = |recorder: &DebuggingRecorder, n: u32| {
            metrics::with_local_recorder(recorder, || {
                message_in(QoS::AtLeastOnce);
                for _ in 0..n {
                    message_out(QoS::AtMostOnce);
                }
            });
        };
        send(&a, 1);
        send(&b, 3);
        send(&a, 1);
        for (seen, received, sent) in [(&seen_a, 2.0, 2.0), (&seen_b, 1.0, 3.0)] {
            let seen = testkit::metric_values(seen);
            assert_eq!(
                seen.get("mqtt_messages_received_total{qos=1}"),
                Some(&received)
            );
            assert_eq!(seen.get("mqtt_messages_sent_total{qos=0}"), Some(&sent));
        }
    }
}
