//! The webhook worker's and outbox's settings (`--webhook-retry-schedule`
//! …), resolved into a [`webhooks::WorkerConfig`] and a
//! [`webhooks::OutboxWriterConfig`]. Defaults are the `webhooks` crate's
//! own, so they live in one place.

use std::time::Duration;

use super::{Bounds, FileConfig, Setting};
use crate::cli::WebhookArgs;
use crate::error::Error;

setting!(
    RETRY_SCHEDULE,
    "--webhook-retry-schedule",
    "FLEETMQ_WEBHOOK_RETRY_SCHEDULE",
    "webhook_retry_schedule"
);
setting!(
    REQUEST_TIMEOUT,
    "--webhook-request-timeout",
    "FLEETMQ_WEBHOOK_REQUEST_TIMEOUT",
    "webhook_request_timeout"
);
limit!(
    DISABLE_AFTER_FAILURES_BOUNDS,
    DISABLE_AFTER_FAILURES,
    "--webhook-disable-after-failures",
    "FLEETMQ_WEBHOOK_DISABLE_AFTER_FAILURES",
    "webhook_disable_after_failures",
    1..=1_000_000,
    "expected 1 to 1000000 failed deliveries in a row"
);
limit!(
    BATCH_MAX_MESSAGES_BOUNDS,
    BATCH_MAX_MESSAGES,
    "--webhook-batch-max-messages",
    "FLEETMQ_WEBHOOK_BATCH_MAX_MESSAGES",
    "webhook_batch_max_messages",
    1..=10_000,
    "expected 1 (no batching) to 10000 messages"
);
setting!(
    BATCH_MAX_WAIT,
    "--webhook-batch-max-wait",
    "FLEETMQ_WEBHOOK_BATCH_MAX_WAIT",
    "webhook_batch_max_wait"
);
limit!(
    MAX_PENDING_EVENTS_BOUNDS,
    MAX_PENDING_EVENTS,
    "--webhook-max-pending-events",
    "FLEETMQ_WEBHOOK_MAX_PENDING_EVENTS",
    "webhook_max_pending_events",
    1..=1_000_000_000,
    "expected 1 to 1000000000 events"
);

/// Most steps a retry schedule may have.
const MAX_STEPS: usize = 32;
/// Longest wait between two attempts.
const MAX_STEP: Duration = Duration::from_secs(7 * 86_400);

/// The webhook settings `serve` was given, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookSettings {
    /// The wait before each attempt, the first included.
    pub retry_schedule: Vec<Duration>,
    pub request_timeout: Duration,
    pub disable_after_failures: u32,
    /// Messages per batched request (endpoints with a topic filter); 1: no batching.
    pub batch_max_messages: u32,
    pub batch_max_wait: Duration,
    /// Events written to the outbox but not yet fanned out beyond which new
    /// ones are dropped (and counted, and reported).
    pub max_pending_events: i64,
}

impl WebhookSettings {
    /// The worker's configuration with these settings.
    pub fn worker_config(&self, url_policy: webhooks::UrlPolicy) -> webhooks::WorkerConfig {
        webhooks::WorkerConfig {
            retry_schedule: self.retry_schedule.clone(),
            request_timeout: self.request_timeout,
            disable_after_failures: self.disable_after_failures,
            batch: store::BatchLimits {
                max_events: self.batch_max_messages,
                max_wait: self.batch_max_wait,
            },
            url_policy,
            ..webhooks::WorkerConfig::default()
        }
    }

    /// The outbox writer's bounds with these settings.
    pub fn outbox_config(&self) -> webhooks::OutboxWriterConfig {
        webhooks::OutboxWriterConfig {
            max_undispatched: self.max_pending_events,
            ..webhooks::OutboxWriterConfig::default()
        }
    }
}

/// `250ms`, `5s`, `5m`, `2h`, `1d`; a bare number is seconds.
pub(super) fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(at) => text.split_at_checked(at)?,
        None => (text, "s"),
    };
    let n: u64 = number.parse().ok()?;
    let (n, scale_ms) = match unit {
        "ms" => (n, 1),
        "s" => (n, 1000),
        "m" => (n, 60_000),
        "h" => (n, 3_600_000),
        "d" => (n, 86_400_000),
        _ => return None,
    };
    n.checked_mul(scale_ms).map(Duration::from_millis)
}

fn schedule(text: &str) -> Result<Vec<Duration>, Error> {
    const HINT: &str =
        "expected 1 to 32 comma-separated waits of at most 7d, such as 0s,5s,5m,30m,2h,5h,10h,10h";
    let steps: Option<Vec<Duration>> = text
        .split(',')
        .map(|step| parse_duration(step).filter(|d| *d <= MAX_STEP))
        .collect();
    match steps {
        Some(steps) if !steps.is_empty() && steps.len() <= MAX_STEPS => Ok(steps),
        _ => Err(Error::invalid(RETRY_SCHEDULE, text, HINT)),
    }
}

fn duration_in(
    setting: Setting,
    text: Option<&str>,
    default: Duration,
    range: std::ops::RangeInclusive<Duration>,
    hint: &'static str,
) -> Result<Duration, Error> {
    let Some(text) = text else {
        return Ok(default);
    };
    parse_duration(text)
        .filter(|d| range.contains(d))
        .ok_or_else(|| Error::invalid(setting, text, hint))
}

pub(super) fn resolve(args: &WebhookArgs, file: &FileConfig) -> Result<WebhookSettings, Error> {
    let worker = webhooks::WorkerConfig::default();
    let outbox = webhooks::OutboxWriterConfig::default();
    let pick = |flag: &Option<String>, file: &Option<String>| flag.clone().or_else(|| file.clone());
    let retry_schedule = match pick(&args.webhook_retry_schedule, &file.webhook_retry_schedule) {
        Some(text) => schedule(&text)?,
        None => worker.retry_schedule,
    };
    Ok(WebhookSettings {
        retry_schedule,
        request_timeout: duration_in(
            REQUEST_TIMEOUT,
            pick(&args.webhook_request_timeout, &file.webhook_request_timeout).as_deref(),
            worker.request_timeout,
            Duration::from_secs(1)..=Duration::from_secs(300),
            "expected 1s to 300s",
        )?,
        disable_after_failures: DISABLE_AFTER_FAILURES_BOUNDS.given(
            args.webhook_disable_after_failures
                .or(file.webhook_disable_after_failures),
            worker.disable_after_failures,
        )?,
        batch_max_messages: BATCH_MAX_MESSAGES_BOUNDS.given(
            args.webhook_batch_max_messages
                .or(file.webhook_batch_max_messages),
            worker.batch.max_events,
        )?,
        batch_max_wait: duration_in(
            BATCH_MAX_WAIT,
            pick(&args.webhook_batch_max_wait, &file.webhook_batch_max_wait).as_deref(),
            worker.batch.max_wait,
            Duration::ZERO..=Duration::from_secs(3600),
            "expected 0s to 1h, such as 500ms or 2s",
        )?,
        max_pending_events: MAX_PENDING_EVENTS_BOUNDS.given(
            args.webhook_max_pending_events
                .or(file.webhook_max_pending_events),
            outbox.max_undispatched,
        )?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_crates() {
        let s = resolve(&WebhookArgs::default(), &FileConfig::default()).unwrap();
        let worker = webhooks::WorkerConfig::default();
        assert_eq!(s.retry_schedule, worker.retry_schedule);
        assert_eq!(s.request_timeout, worker.request_timeout);
        assert_eq!(s.disable_after_failures, worker.disable_after_failures);
        assert_eq!(s.batch_max_messages, worker.batch.max_events);
        assert_eq!(
            s.max_pending_events,
            webhooks::OutboxWriterConfig::default().max_undispatched
        );
    }

    #[test]
    fn flags_win_over_the_file_and_are_checked() {
        let file = FileConfig::parse(
            "webhook_retry_schedule = \"1s,2s\"\nwebhook_request_timeout = \"20s\"\nwebhook_batch_max_wait = \"250ms\"\n",
        )
        .unwrap();
        let args = WebhookArgs {
            webhook_retry_schedule: Some("0s, 1s ,2m".into()),
            webhook_disable_after_failures: Some(3),
            ..WebhookArgs::default()
        };
        let s = resolve(&args, &file).unwrap();
        let secs = Duration::from_secs;
        assert_eq!(s.retry_schedule, [secs(0), secs(1), secs(120)]);
        assert_eq!(s.request_timeout, secs(20));
        assert_eq!(s.batch_max_wait, Duration::from_millis(250));
        assert_eq!(s.disable_after_failures, 3);
        let worker = s.worker_config(webhooks::UrlPolicy::default());
        assert_eq!(worker.retry_schedule.len(), 3);
        assert_eq!(worker.batch.max_wait, Duration::from_millis(250));

        for (args, flag) in [
            (
                WebhookArgs {
                    webhook_retry_schedule: Some("1s,,2s".into()),
                    ..WebhookArgs::default()
                },
                "--webhook-retry-schedule",
            ),
            (
                WebhookArgs {
                    webhook_retry_schedule: Some("8d".into()),
                    ..WebhookArgs::default()
                },
                "--webhook-retry-schedule",
            ),
            (
                WebhookArgs {
                    webhook_request_timeout: Some("0s".into()),
                    ..WebhookArgs::default()
                },
                "--webhook-request-timeout",
            ),
            (
                WebhookArgs {
                    webhook_batch_max_messages: Some(0),
                    ..WebhookArgs::default()
                },
                "--webhook-batch-max-messages",
            ),
        ] {
            let e = resolve(&args, &FileConfig::default())
                .unwrap_err()
                .to_string();
            assert!(e.contains(flag), "{e}");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("90"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("5m"), Some(Duration::from_secs(300)));
        assert_eq!(parse_duration("10h"), Some(Duration::from_secs(36_000)));
        for bad in ["", "s", "1x", "1.5s", "-1s", "99999999999999999999d"] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
    }
}
