//! The delivery worker: fans the outbox out into deliveries, claims due
//! deliveries, POSTs them signed, and records every attempt.
//!
//! One loop per process. Each round: fan out new events, claim what is due
//! (the store keeps it fair across tenants and their endpoints, ordered per
//! device, and within each endpoint's and each tenant's in-flight limit), and send each claimed delivery on a
//! task of its own, which then sends the device's next deliveries on the
//! same slot while they go through (a bounded chain), so a device's
//! events do not wait a round each. The loop sleeps `poll_interval` when idle; producers can
//! wake it at once with [`Worker::wake`].

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use events::EventType;
use serde_json::{Value, json};
use store::{AttemptOutcome, AttemptRecord, BatchLimits, ClaimedDelivery, OutboxEvent, Store};
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::metrics as m;
use crate::signing::{MessageIdKey, signature_header};
use crate::ssrf::{GuardedResolver, UrlPolicy};
use crate::{Error, routing};

/// Most of a response body kept in the attempt log.
pub const RESPONSE_EXCERPT_BYTES: usize = 1024;

/// How the worker behaves. [`WorkerConfig::default`] is production's.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// The delay before each attempt, the first included: attempt `n`
    /// (counting from one) waits `retry_schedule[n - 1]` after the previous
    /// one failed. Its length is the number of attempts.
    pub retry_schedule: Vec<Duration>,
    /// Each delay is spread by up to ± this fraction (0.0–1.0), so that
    /// retries after an outage do not arrive all at once.
    pub jitter: f64,
    pub request_timeout: Duration,
    /// Deliveries in flight to one endpoint at once (across all workers).
    pub per_endpoint_concurrency: u32,
    /// Deliveries in flight in this worker at once.
    pub max_in_flight: u32,
    /// Deliveries of one tenant in flight at once (across all workers): a
    /// tenant with many slow endpoints never holds every slot.
    pub per_tenant_in_flight: u32,
    /// Sleep between rounds when there is nothing to do.
    pub poll_interval: Duration,
    /// Deliveries failed for good (retry schedule exhausted) in a row after
    /// which an endpoint is disabled; attempts still to be retried do not
    /// count, so an outage shorter than the schedule disables nothing.
    pub disable_after_failures: u32,
    /// Batching of message events on endpoints with a topic filter;
    /// `max_events` 1 turns it off.
    pub batch: BatchLimits,
    pub url_policy: UrlPolicy,
    /// Makes each delivery's `webhook-id`; the binary derives it from the
    /// key-encryption key so ids are stable across nodes and restarts.
    pub message_ids: MessageIdKey,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        const MIN: u64 = 60;
        const HOUR: u64 = 60 * MIN;
        WorkerConfig {
            retry_schedule: [
                0,
                5,
                5 * MIN,
                30 * MIN,
                2 * HOUR,
                5 * HOUR,
                10 * HOUR,
                10 * HOUR,
            ]
            .into_iter()
            .map(Duration::from_secs)
            .collect(),
            jitter: 0.1,
            request_timeout: Duration::from_secs(15),
            per_endpoint_concurrency: 4,
            max_in_flight: 256,
            per_tenant_in_flight: 64,
            poll_interval: Duration::from_millis(500),
            disable_after_failures: 50,
            batch: BatchLimits {
                max_events: 100,
                max_wait: Duration::from_secs(1),
            },
            url_policy: UrlPolicy::default(),
            message_ids: MessageIdKey::random(),
        }
    }
}

/// Events fanned out per round.
const FAN_OUT_LIMIT: u32 = 500;
/// Events of one tenant fanned out per round: a tenant's backlog delays
/// another tenant's events by one round at most.
const FAN_OUT_PER_TENANT: u32 = 100;
/// How often the queue-depth gauges are refreshed.
const DEPTH_INTERVAL: Duration = Duration::from_secs(5);
/// A claim outlives the request by this much before another worker may
/// take the delivery over.
const LEASE_MARGIN: Duration = Duration::from_secs(30);

/// A running worker. Dropping it stops the loop (in-flight requests are
/// abandoned; their deliveries are claimed again when the lease runs out).
pub struct Worker {
    wake: Arc<Notify>,
    cancel: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Worker {
    /// Start the worker on the current runtime.
    pub fn spawn(store: Store, config: WorkerConfig) -> Result<Worker, Error> {
        let client = http_client(&config)?;
        let wake = Arc::new(Notify::new());
        let cancel = CancellationToken::new();
        let state = Arc::new(Shared {
            store,
            config,
            client,
            cancel: cancel.clone(),
        });
        let task = tokio::spawn(run(state, wake.clone(), cancel.clone()));
        Ok(Worker {
            wake,
            cancel,
            task: Some(task),
        })
    }

    /// Start a round now (after appending events, say).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// What [`Worker::wake`] notifies, for producers that outlive a borrow
    /// of the worker (such as an [`crate::OutboxWriter`]).
    pub fn waker(&self) -> Arc<Notify> {
        self.wake.clone()
    }

    /// Stop taking work and wait for in-flight requests to finish.
    pub async fn shutdown(mut self) {
        self.cancel.cancel();
        if let Some(task) = self.task.take()
            && let Err(e) = task.await
        {
            tracing::error!(error = %e, "webhook worker task failed");
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

fn http_client(config: &WorkerConfig) -> Result<reqwest::Client, Error> {
    reqwest::Client::builder()
        .timeout(config.request_timeout)
        .connect_timeout(config.request_timeout)
        .redirect(reqwest::redirect::Policy::none())
        // A proxy would connect on our behalf, past the resolver's check.
        .no_proxy()
        .https_only(!config.url_policy.allow_http)
        .dns_resolver(GuardedResolver {
            policy: config.url_policy,
        })
        .user_agent(concat!("fleetmq-webhooks/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(Error::Client)
}

struct Shared {
    store: Store,
    config: WorkerConfig,
    client: reqwest::Client,
    /// Stops delivery chains (see [`deliver_in_order`]) at shutdown.
    cancel: CancellationToken,
}

async fn run(state: Arc<Shared>, wake: Arc<Notify>, cancel: CancellationToken) {
    tracing::info!("webhook worker started");
    let mut in_flight = JoinSet::new();
    let mut last_depths = Instant::now()
        .checked_sub(DEPTH_INTERVAL)
        .unwrap_or_else(Instant::now);
    let mut reported: HashSet<(String, String)> = HashSet::new();
    while !cancel.is_cancelled() {
        while in_flight.try_join_next().is_some() {}
        let busy = match round(&state, &mut in_flight).await {
            Ok(busy) => busy,
            Err(e) => {
                tracing::error!(error = %e, "webhook worker round failed");
                false
            }
        };
        if last_depths.elapsed() >= DEPTH_INTERVAL {
            last_depths = Instant::now();
            report_depths(&state.store, &mut reported).await;
        }
        if busy {
            continue;
        }
        tokio::select! {
            () = cancel.cancelled() => break,
            () = wake.notified() => {}
            () = tokio::time::sleep(state.config.poll_interval) => {}
            Some(_) = in_flight.join_next(), if !in_flight.is_empty() => {}
        }
    }
    while in_flight.join_next().await.is_some() {}
    tracing::info!("webhook worker stopped");
}

/// One round; true when it found work (so the next round starts at once).
async fn round(state: &Arc<Shared>, in_flight: &mut JoinSet<()>) -> Result<bool, Error> {
    let config = &state.config;
    let batching = config.batch.max_events > 1;
    let fanned = state
        .store
        .fan_out_outbox_fair(
            FAN_OUT_LIMIT,
            FAN_OUT_PER_TENANT,
            config.batch,
            |event, endpoint| routing::route(event, endpoint, batching),
        )
        .await?;
    let room = usize::try_from(config.max_in_flight)
        .unwrap_or(usize::MAX)
        .saturating_sub(in_flight.len());
    let room = u32::try_from(room).unwrap_or(u32::MAX);
    if room == 0 {
        return Ok(false);
    }
    let claimed = state
        .store
        .claim_webhook_deliveries_fair(
            room,
            config.per_endpoint_concurrency.max(1),
            config.per_tenant_in_flight.max(1),
            config.request_timeout + LEASE_MARGIN,
        )
        .await?;
    let found = !claimed.is_empty() || fanned.events > 0;
    for delivery in claimed {
        let state = state.clone();
        in_flight.spawn(async move { deliver_in_order(&state, delivery).await });
    }
    Ok(found)
}

/// Deliveries one ordering key (device) may chain on one slot before the
/// slot goes back to the round: a device with a backlog goes at the
/// endpoint's pace, yet the endpoint's other devices get their turn.
const CHAIN_MAX: u32 = 32;

/// [`deliver`] `claimed`, then, while it goes out, the next deliveries of
/// its ordering key on the same slot (up to [`CHAIN_MAX`]); without this a
/// device's events would leave one per worker round, and a round takes
/// long while another tenant has a backlog.
async fn deliver_in_order(state: &Shared, claimed: ClaimedDelivery) {
    let mut next = Some(claimed);
    let mut chained = 0;
    while let Some(claimed) = next.take() {
        let delivered = deliver(state, &claimed).await;
        let Some(key) = claimed.delivery.ordering_key.as_deref() else {
            return;
        };
        chained += 1;
        if !delivered || chained >= CHAIN_MAX || state.cancel.is_cancelled() {
            return;
        }
        let lease = state.config.request_timeout + LEASE_MARGIN;
        match state
            .store
            .claim_next_in_order(&claimed.endpoint.id, key, lease)
            .await
        {
            Ok(claimed) => next = claimed,
            // The next round claims it.
            Err(e) => tracing::warn!(error = %e, "claiming the next delivery in order failed"),
        }
    }
}

/// Send one claimed delivery and record the attempt; whether it was
/// delivered (and recorded so).
#[tracing::instrument(skip_all, fields(
    tenant = %claimed.delivery.tenant_id,
    webhook_id = %claimed.endpoint.id,
    delivery_id = claimed.delivery.id,
    attempt = claimed.delivery.attempts + 1,
))]
async fn deliver(state: &Shared, claimed: &ClaimedDelivery) -> bool {
    let config = &state.config;
    let started = Instant::now();
    let result = send(state, claimed).await;
    let latency = started.elapsed();
    let (record, outcome) = match result {
        Ok((status, excerpt)) => {
            let outcome = if (200..300).contains(&status) {
                AttemptOutcome::Delivered
            } else if status == 410 {
                AttemptOutcome::FailedAndDisable {
                    reason: "the endpoint answered 410 Gone".into(),
                }
            } else {
                next_outcome(config, claimed.delivery.attempts)
            };
            let error = (!(200..300).contains(&status)).then(|| format!("HTTP {status}"));
            let record = AttemptRecord {
                status_code: Some(status),
                latency,
                response: Some(excerpt),
                error,
            };
            (record, outcome)
        }
        Err(error) => {
            let record = AttemptRecord {
                status_code: None,
                latency,
                response: None,
                error: Some(error),
            };
            (record, next_outcome(config, claimed.delivery.attempts))
        }
    };
    m::record_attempt(&outcome, latency);
    let delivered = matches!(outcome, AttemptOutcome::Delivered);
    match state
        .store
        .record_webhook_attempt(
            claimed.delivery.id,
            &record,
            &outcome,
            config.disable_after_failures,
        )
        .await
    {
        Ok(recorded) => {
            tracing::debug!(status = %recorded.status, "webhook attempt recorded");
            if recorded.endpoint_disabled.is_some() {
                m::endpoint_disabled();
            }
            delivered
        }
        // The endpoint was deleted meanwhile, and its deliveries with it.
        Err(store::Error::NotFound { .. }) => {
            tracing::debug!("webhook delivery deleted while in flight");
            false
        }
        // The lease runs out and the delivery is tried again.
        Err(e) => {
            tracing::error!(error = %e, "recording a webhook attempt failed");
            false
        }
    }
}

/// Retry on the schedule, or give up after its last step.
fn next_outcome(config: &WorkerConfig, attempts_before: i32) -> AttemptOutcome {
    let next = usize::try_from(attempts_before)
        .unwrap_or(0)
        .saturating_add(1);
    match config.retry_schedule.get(next) {
        Some(delay) => {
            let delay = jittered(*delay, config.jitter);
            let delay = chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::MAX);
            AttemptOutcome::Retry {
                at: Utc::now() + delay,
            }
        }
        None => AttemptOutcome::Failed,
    }
}

/// `delay` spread uniformly over ± `jitter` of itself.
fn jittered(delay: Duration, jitter: f64) -> Duration {
    let jitter = jitter.clamp(0.0, 1.0);
    // A v4 UUID is 122 random bits from the OS; 53 of them make a uniform f64.
    let unit = (uuid::Uuid::new_v4().as_u128() >> 75) as f64 / (1u64 << 53) as f64;
    let factor = 1.0 + jitter * (2.0 * unit - 1.0);
    delay.mul_f64(factor.max(0.0))
}

/// POST the delivery; the status and a response excerpt, or why no
/// response came.
async fn send(state: &Shared, claimed: &ClaimedDelivery) -> Result<(u16, String), String> {
    let endpoint = &claimed.endpoint;
    let url = state
        .config
        .url_policy
        .check_without_dns(&endpoint.url)
        .map_err(|e| e.to_string())?;
    let body = serde_json::to_vec(&request_body(&claimed.delivery.event_type, &claimed.events))
        .map_err(|e| format!("encoding the body: {e}"))?;
    let webhook_id = state.config.message_ids.webhook_id(claimed.delivery.id);
    let now = Utc::now();
    let timestamp = now.timestamp();
    let signature = signature_header(
        &endpoint.signing_secrets(now),
        &webhook_id,
        timestamp,
        &body,
    )
    .map_err(|e| e.to_string())?;
    let response = state
        .client
        .post(url)
        .header("content-type", "application/json")
        .header("webhook-id", &webhook_id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signature)
        .body(body)
        .send()
        .await
        .map_err(|e| describe(&e))?;
    let status = response.status().as_u16();
    Ok((status, excerpt(response).await))
}

/// The request body: `{type, timestamp, data}`; a batch's `data` is
/// `{messages: [{type, timestamp, data}, …]}`.
pub fn request_body(event_type: &str, events: &[OutboxEvent]) -> Value {
    let one = |e: &OutboxEvent| {
        json!({
            "type": e.event_type,
            "timestamp": e.created_at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            "data": e.payload,
        })
    };
    match events {
        [event] if event_type != EventType::MessageBatch => one(event),
        _ => json!({
            "type": event_type,
            "timestamp": events.first().map_or_else(Utc::now, |e| e.created_at)
                .to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            "data": {"messages": events.iter().map(one).collect::<Vec<_>>()},
        }),
    }
}

/// At most [`RESPONSE_EXCERPT_BYTES`] of the body, read no further.
async fn excerpt(mut response: reqwest::Response) -> String {
    let mut kept = Vec::new();
    while kept.len() < RESPONSE_EXCERPT_BYTES {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                let take = chunk.len().min(RESPONSE_EXCERPT_BYTES - kept.len());
                kept.extend_from_slice(chunk.get(..take).unwrap_or_default());
            }
            Ok(None) | Err(_) => break,
        }
    }
    let mut text = String::from_utf8_lossy(&kept).into_owned();
    // Lossy decoding may have grown it (a cut multi-byte character).
    while text.len() > RESPONSE_EXCERPT_BYTES {
        text.pop();
    }
    text
}

/// A request error with its causes, for the attempt log.
fn describe(e: &reqwest::Error) -> String {
    let mut text = if e.is_timeout() {
        "timed out".to_owned()
    } else {
        e.to_string()
    };
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

async fn report_depths(store: &Store, reported: &mut HashSet<(String, String)>) {
    match store.webhook_queue_depths().await {
        Ok(depths) => {
            let mut now_reported = HashSet::new();
            for d in depths {
                m::queue_depth(&d.tenant_id, &d.endpoint_id, d.pending);
                now_reported.insert((d.tenant_id, d.endpoint_id));
            }
            for (tenant, endpoint) in reported.difference(&now_reported) {
                m::queue_depth(tenant, endpoint, 0);
            }
            *reported = now_reported;
        }
        Err(e) => tracing::warn!(error = %e, "reading webhook queue depths failed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_then_failure() {
        let config = WorkerConfig {
            retry_schedule: vec![Duration::ZERO, Duration::from_secs(5)],
            jitter: 0.0,
            ..WorkerConfig::default()
        };
        match next_outcome(&config, 0) {
            AttemptOutcome::Retry { at } => {
                let wait = at - Utc::now();
                assert!(
                    wait > chrono::Duration::seconds(3) && wait <= chrono::Duration::seconds(5)
                );
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(next_outcome(&config, 1), AttemptOutcome::Failed);
        assert_eq!(WorkerConfig::default().retry_schedule.len(), 8);
    }

    #[test]
    fn jitter_stays_in_its_band() {
        let base = Duration::from_secs(100);
        for _ in 0..1000 {
            let d = jittered(base, 0.1);
            assert!(
                d >= Duration::from_secs(90) && d <= Duration::from_secs(110),
                "{d:?}"
            );
        }
        assert_eq!(jittered(base, 0.0), base);
    }
}
