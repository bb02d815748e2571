//! Webhooks: endpoints, the outbox and its fan-out, the delivery queue.

use std::time::Duration;

use chrono::Utc;
use serde_json::json;
use store::testing::TestDb;
use store::{
    AttemptOutcome, AttemptRecord, AttemptRecorded, BatchLimits, ClaimedDelivery, DeliveryStatus,
    NewOutboxEvent, NewWebhookEndpoint, Route, Store, WebhookEndpoint,
};

const NO_BATCH: BatchLimits = BatchLimits {
    max_events: 10,
    max_wait: Duration::from_secs(3600),
};
const LEASE: Duration = Duration::from_secs(60);

/// Claims what is due, up to 10 deliveries and 10 per endpoint.
async fn claim(store: &Store) -> Result<Vec<ClaimedDelivery>, store::Error> {
    store.claim_webhook_deliveries(10, 10, LEASE).await
}

/// The store with tenant acme and one endpoint of its for
/// `device.connected`, where most tests here start.
async fn acme_hook(db: &TestDb) -> anyhow::Result<(&Store, WebhookEndpoint)> {
    let store = super::acme(db).await?;
    let hook = endpoint(store, "acme", &["device.connected"]).await?;
    Ok((store, hook))
}

async fn endpoint(store: &Store, tenant: &str, types: &[&str]) -> anyhow::Result<WebhookEndpoint> {
    Ok(store
        .create_webhook_endpoint(
            &NewWebhookEndpoint {
                tenant_id: tenant.into(),
                url: "https://example.com/hook".into(),
                event_types: types.iter().map(|t| t.to_string()).collect(),
                topic_filter: None,
                secret: "whsec_c2VjcmV0".into(),
            },
            None,
        )
        .await?)
}

fn device_event(tenant: &str, device: &str, n: i64) -> NewOutboxEvent {
    NewOutboxEvent {
        device_id: Some(device.into()),
        device_seq: Some(n),
        ..NewOutboxEvent::new(tenant, "device.connected", json!({"n": n}))
    }
}

/// Route by exact type match (the `webhooks` crate does the real matching).
fn by_type(event: &store::OutboxEvent, endpoint: &WebhookEndpoint) -> Route {
    if endpoint.event_types.contains(&event.event_type) {
        Route::Single
    } else {
        Route::Skip
    }
}

fn ok_record() -> AttemptRecord {
    AttemptRecord {
        status_code: Some(200),
        latency: Duration::from_millis(5),
        response: Some("ok".into()),
        error: None,
    }
}

/// A backlog of `n` "busy" events of acme's, then one "quiet" event of
/// `quiet_tenant`'s.
async fn busy_then_quiet(store: &Store, n: usize, quiet_tenant: &str) -> anyhow::Result<()> {
    let backlog: Vec<_> = (0..n)
        .map(|n| NewOutboxEvent::new("acme", "busy", json!({"n": n})))
        .collect();
    store.append_outbox_events(&backlog).await?;
    let quiet = NewOutboxEvent::new(quiet_tenant, "quiet", json!({}));
    store.append_outbox_events(&[quiet]).await?;
    Ok(())
}

/// Appends `events` and fans them out, one delivery each (routed by type).
async fn fan_out(store: &Store, events: &[NewOutboxEvent]) -> anyhow::Result<()> {
    store.append_outbox_events(events).await?;
    store.fan_out_outbox(1000, NO_BATCH, by_type).await?;
    Ok(())
}

/// What a claim of up to 100 deliveries gives tenant beta.
async fn beta_claims(store: &Store) -> anyhow::Result<Vec<ClaimedDelivery>> {
    let all = store.claim_webhook_deliveries(100, 10, LEASE).await?;
    Ok(all
        .into_iter()
        .filter(|c| c.delivery.tenant_id == "beta")
        .collect())
}

/// Records an attempt of `delivery_id` that ended in `outcome` (a 200 for
/// `Delivered`, a 500 otherwise).
async fn attempt(
    store: &Store,
    delivery_id: i64,
    outcome: AttemptOutcome,
    disable_after: u32,
) -> anyhow::Result<AttemptRecorded> {
    let record = match outcome {
        AttemptOutcome::Delivered => ok_record(),
        _ => failed_record(),
    };
    Ok(store
        .record_webhook_attempt(delivery_id, &record, &outcome, disable_after)
        .await?)
}

fn failed_record() -> AttemptRecord {
    AttemptRecord {
        status_code: Some(500),
        latency: Duration::from_millis(5),
        response: None,
        error: Some("HTTP 500".into()),
    }
}

async fn endpoint_crud_and_rotation(db: &TestDb) -> anyhow::Result<()> {
    let store = super::acme(db).await?;
    let created = endpoint(store, "acme", &["device.connected"]).await?;
    assert!(created.id.starts_with("wh_") && created.enabled);
    assert_eq!(
        store.get_webhook_endpoint("acme", &created.id).await?,
        created
    );
    assert!(
        !format!("{created:?}").contains("whsec_"),
        "Debug hides the secret"
    );
    assert_eq!(
        store.list_webhook_endpoints("acme").await?,
        std::slice::from_ref(&created)
    );

    let until = Utc::now() + chrono::Duration::hours(1);
    let rotated = store
        .rotate_webhook_secret("acme", &created.id, "whsec_bmV3", until, None)
        .await?;
    assert_eq!(rotated.secret, "whsec_bmV3");
    assert_eq!(rotated.previous_secret.as_deref(), Some("whsec_c2VjcmV0"));
    assert_eq!(
        rotated.signing_secrets(Utc::now()),
        ["whsec_bmV3", "whsec_c2VjcmV0"]
    );
    assert_eq!(rotated.signing_secrets(until), ["whsec_bmV3"]);

    let off = store
        .set_webhook_endpoint_enabled("acme", &created.id, false)
        .await?;
    assert!(!off.enabled);
    // Another tenant's endpoint is not found.
    super::tenant(store, "other").await?;
    assert!(matches!(
        store.get_webhook_endpoint("other", &created.id).await,
        Err(store::Error::NotFound { .. })
    ));
    let missing = store
        .create_webhook_endpoint(
            &NewWebhookEndpoint {
                tenant_id: "nope".into(),
                ..NewWebhookEndpoint {
                    tenant_id: String::new(),
                    url: "https://x".into(),
                    event_types: vec![],
                    topic_filter: None,
                    secret: "whsec_eA==".into(),
                }
            },
            None,
        )
        .await;
    assert!(matches!(
        missing,
        Err(store::Error::NotFound { kind: "tenant", .. })
    ));
    store
        .delete_webhook_endpoint("acme", &created.id, None)
        .await?;
    assert!(store.list_webhook_endpoints("acme").await?.is_empty());
    Ok(())
}

async fn outbox_is_transactional_and_fans_out_once(db: &TestDb) -> anyhow::Result<()> {
    let store = super::acme(db).await?;
    let connected = endpoint(store, "acme", &["device.connected"]).await?;
    let other = endpoint(store, "acme", &["device.disconnected"]).await?;

    let mut tx = store.begin().await?;
    tx.append_outbox_events(&[device_event("acme", "d1", 1)])
        .await?;
    tx.rollback().await?;
    assert_eq!(
        store.undispatched_outbox_len().await?,
        0,
        "rolled back with the change"
    );

    let mut tx = store.begin().await?;
    tx.append_outbox_events(&[device_event("acme", "d1", 1)])
        .await?;
    tx.commit().await?;
    store
        .append_outbox_events(&[device_event("acme", "d1", 2), device_event("acme", "d2", 1)])
        .await?;
    assert_eq!(store.undispatched_outbox_len().await?, 3);

    let done = store.fan_out_outbox(100, NO_BATCH, by_type).await?;
    assert_eq!((done.events, done.deliveries_created), (3, 3));
    assert_eq!(store.undispatched_outbox_len().await?, 0);
    let again = store.fan_out_outbox(100, NO_BATCH, by_type).await?;
    assert_eq!(again.events, 0, "each event fans out once");

    let list = store
        .list_webhook_deliveries("acme", &connected.id, None, None, 100)
        .await?;
    assert_eq!(list.len(), 3);
    assert!(
        store
            .list_webhook_deliveries("acme", &other.id, None, None, 100)
            .await?
            .is_empty()
    );
    let events = store.delivery_events(list[2].id).await?;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].payload, json!({"n": 1}));
    assert_eq!(events[0].device_id.as_deref(), Some("d1"));
    Ok(())
}

async fn batches_fill_and_close(db: &TestDb) -> anyhow::Result<()> {
    let store = super::acme(db).await?;
    let hook = endpoint(store, "acme", &["message.published"]).await?;
    let messages: Vec<_> = (0..5)
        .map(|n| NewOutboxEvent {
            topic: Some("devices/d1/temp".into()),
            ..NewOutboxEvent::new("acme", "message.published", json!({"n": n}))
        })
        .collect();
    store.append_outbox_events(&messages).await?;
    let limits = BatchLimits {
        max_events: 2,
        max_wait: Duration::from_secs(3600),
    };
    let done = store
        .fan_out_outbox(100, limits, |_, _| Route::Batch)
        .await?;
    assert_eq!((done.batched, done.deliveries_created), (5, 3));
    // Two full batches are due now; the third waits for more or max_wait.
    let claimed = claim(store).await?;
    assert_eq!(claimed.len(), 1, "batches of one endpoint go one at a time");
    assert_eq!(
        claimed[0].delivery.event_type,
        events::EventType::MessageBatch
    );
    let ns: Vec<_> = claimed[0]
        .events
        .iter()
        .map(|e| e.payload["n"].clone())
        .collect();
    assert_eq!(ns, [json!(0), json!(1)]);
    attempt(store, claimed[0].delivery.id, AttemptOutcome::Delivered, 5).await?;
    let claimed = claim(store).await?;
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].events.len(), 2);
    attempt(store, claimed[0].delivery.id, AttemptOutcome::Delivered, 5).await?;
    assert!(claim(store).await?.is_empty());

    // One more message joins the open batch.
    store.append_outbox_events(&messages[..1]).await?;
    store
        .fan_out_outbox(100, limits, |_, _| Route::Batch)
        .await?;
    let open = store
        .list_webhook_deliveries("acme", &hook.id, Some(DeliveryStatus::Pending), None, 10)
        .await?;
    assert_eq!(open.len(), 1);
    assert_eq!(open[0].event_count, 2);
    Ok(())
}

async fn claims_are_fair_and_ordered(db: &TestDb) -> anyhow::Result<()> {
    let store = super::acme(db).await?;
    let busy = endpoint(store, "acme", &["busy"]).await?;
    let quiet = endpoint(store, "acme", &["quiet"]).await?;
    // A backlog of 50 on one endpoint (no ordering key), then one on another.
    busy_then_quiet(store, 50, "acme").await?;
    store.fan_out_outbox(1000, NO_BATCH, by_type).await?;

    let first = store.claim_webhook_deliveries(4, 3, LEASE).await?;
    let to_busy = first.iter().filter(|c| c.endpoint.id == busy.id).count();
    let to_quiet = first.iter().filter(|c| c.endpoint.id == quiet.id).count();
    assert_eq!(
        (to_busy, to_quiet),
        (3, 1),
        "quiet is not starved by busy's backlog"
    );
    // Busy has 3 in flight: its limit. Nothing more until one finishes.
    assert!(
        store
            .claim_webhook_deliveries(10, 3, LEASE)
            .await?
            .is_empty()
    );
    let done = first.iter().find(|c| c.endpoint.id == busy.id).unwrap();
    attempt(store, done.delivery.id, AttemptOutcome::Delivered, 5).await?;
    assert_eq!(store.claim_webhook_deliveries(10, 3, LEASE).await?.len(), 1);

    // One device's deliveries go one at a time, in order.
    super::tenant(store, "beta").await?;
    endpoint(store, "beta", &["device.connected"]).await?;
    fan_out(
        store,
        &[device_event("beta", "d1", 1), device_event("beta", "d1", 2)],
    )
    .await?;
    let claimed = beta_claims(store).await?;
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].events[0].device_seq, Some(1));
    // A retry keeps the next one waiting behind it.
    attempt(
        store,
        claimed[0].delivery.id,
        AttemptOutcome::Retry { at: Utc::now() },
        100,
    )
    .await?;
    let claimed = beta_claims(store).await?;
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].events[0].device_seq, Some(1), "still the first");
    Ok(())
}

async fn expired_leases_are_claimed_again(db: &TestDb) -> anyhow::Result<()> {
    let store = super::acme(db).await?;
    endpoint(store, "acme", &["device.connected"]).await?;
    fan_out(store, &[device_event("acme", "d1", 1)]).await?;
    let first = store
        .claim_webhook_deliveries(10, 10, Duration::from_millis(1))
        .await?;
    assert_eq!(first.len(), 1);
    tokio::time::sleep(Duration::from_millis(20)).await;
    // The worker that claimed it died: its lease ran out.
    let again = claim(store).await?;
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].delivery.id, first[0].delivery.id);
    assert!(claim(store).await?.is_empty());
    Ok(())
}

async fn failures_disable_the_endpoint_with_an_event(db: &TestDb) -> anyhow::Result<()> {
    let (store, hook) = acme_hook(db).await?;
    let watcher = endpoint(
        store,
        "acme",
        &[events::EventType::WebhookEndpointDisabled.as_str()],
    )
    .await?;
    fan_out(
        store,
        &[device_event("acme", "d1", 1), device_event("acme", "d2", 1)],
    )
    .await?;
    let claimed = claim(store).await?;
    assert_eq!(claimed.len(), 2);
    let first = attempt(store, claimed[0].delivery.id, AttemptOutcome::Failed, 2).await?;
    assert_eq!(
        (first.status, first.endpoint_disabled),
        (DeliveryStatus::Failed, None)
    );
    let second = attempt(store, claimed[1].delivery.id, AttemptOutcome::Failed, 2).await?;
    assert!(second.endpoint_disabled.is_some());
    let hook = store.get_webhook_endpoint("acme", &hook.id).await?;
    assert!(!hook.enabled);
    assert_eq!(hook.consecutive_failures, 2);
    assert!(hook.disabled_reason.is_some());

    // The event saying so reaches the endpoint that asked for it.
    store.fan_out_outbox(10, NO_BATCH, by_type).await?;
    let told = claim(store).await?;
    assert_eq!(told.len(), 1);
    assert_eq!(told[0].endpoint.id, watcher.id);
    assert_eq!(told[0].events[0].payload["webhook_id"], json!(hook.id));

    let attempts = store
        .list_webhook_attempts("acme", claimed[0].delivery.id)
        .await?;
    assert_eq!(attempts.len(), 1);
    assert_eq!(attempts[0].status_code, Some(500));
    assert_eq!(attempts[0].error.as_deref(), Some("HTTP 500"));

    // Re-enabled and redelivered, it goes out again.
    store
        .set_webhook_endpoint_enabled("acme", &hook.id, true)
        .await?;
    let again = store
        .redeliver_webhook_delivery("acme", claimed[0].delivery.id, None)
        .await?;
    assert_eq!((again.status, again.attempts), (DeliveryStatus::Pending, 0));
    let claimed = claim(store).await?;
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].delivery.id, again.id);

    let ping = store
        .enqueue_direct_delivery("acme", &watcher.id, "webhook.ping", json!({}), None)
        .await?;
    assert_eq!(ping.event_count, 1);
    let depths = store.webhook_queue_depths().await?;
    // Pruning keeps what is unfinished, and events it still carries.
    let (deliveries, _) = store
        .prune_webhook_history(Utc::now() + chrono::Duration::seconds(1))
        .await?;
    assert_eq!(deliveries, 1, "only the one that failed for good");
    assert!(store.get_webhook_delivery("acme", again.id).await.is_ok());
    // The ping, and the two claimed above (in flight count too).
    assert_eq!(depths.iter().map(|d| d.pending).sum::<i64>(), 3);
    Ok(())
}

async fn enabled_endpoints_by_tenant_or_all(db: &TestDb) -> anyhow::Result<()> {
    let store = super::acme(db).await?;
    super::tenant(store, "beta").await?;
    let a1 = endpoint(store, "acme", &["message.published"]).await?;
    let a2 = endpoint(store, "acme", &["*"]).await?;
    let b1 = endpoint(store, "beta", &["device.*"]).await?;
    store
        .set_webhook_endpoint_enabled("acme", &a2.id, false)
        .await?;
    let ids = |v: Vec<WebhookEndpoint>| v.into_iter().map(|e| e.id).collect::<Vec<_>>();
    assert_eq!(
        ids(store.list_enabled_webhook_endpoints(Some("acme")).await?),
        std::slice::from_ref(&a1.id)
    );
    assert_eq!(
        ids(store.list_enabled_webhook_endpoints(None).await?),
        [a1.id, b1.id]
    );
    assert!(
        store
            .list_enabled_webhook_endpoints(Some("none"))
            .await?
            .is_empty()
    );
    Ok(())
}

/// A tenant with many endpoints and a backlog holds at most its share of
/// the slots, and another tenant's delivery comes first in the next round.
async fn claims_are_fair_between_tenants(db: &TestDb) -> anyhow::Result<()> {
    let store = super::acme(db).await?;
    super::tenant(store, "beta").await?;
    for _ in 0..5 {
        endpoint(store, "acme", &["busy"]).await?;
    }
    let backlog: Vec<_> = (0..40)
        .map(|n| NewOutboxEvent::new("acme", "busy", json!({"n": n})))
        .collect();
    fan_out(store, &backlog).await?;
    // acme: 5 endpoints × 2 = 10 could go; its tenant limit is 6.
    let first = store
        .claim_webhook_deliveries_fair(100, 2, 6, LEASE)
        .await?;
    assert_eq!(first.len(), 6);
    endpoint(store, "beta", &["quiet"]).await?;
    fan_out(store, &[NewOutboxEvent::new("beta", "quiet", json!({}))]).await?;
    // acme is at its limit: beta's one delivery is all there is.
    let second = store
        .claim_webhook_deliveries_fair(100, 2, 6, LEASE)
        .await?;
    assert_eq!(second.len(), 1);
    assert_eq!(second[0].delivery.tenant_id, "beta");
    Ok(())
}

/// One tenant's outbox backlog delays another tenant's events by one
/// fan-out round at most.
async fn fan_out_is_fair_between_tenants(db: &TestDb) -> anyhow::Result<()> {
    let store = super::acme(db).await?;
    super::tenant(store, "beta").await?;
    busy_then_quiet(store, 300, "beta").await?;
    let round = store.fan_out_outbox_fair(50, 10, NO_BATCH, by_type).await?;
    assert_eq!(round.events, 11);
    let waiting = store.undispatched_outbox_len_of(&["acme", "beta"]).await?;
    assert_eq!(waiting.get("acme"), Some(&290));
    assert_eq!(waiting.get("beta"), None);
    Ok(())
}

async fn the_next_in_order_is_claimed_by_its_key(db: &TestDb) -> anyhow::Result<()> {
    let (store, hook) = acme_hook(db).await?;
    fan_out(
        store,
        &[
            device_event("acme", "d1", 1),
            device_event("acme", "d1", 2),
            device_event("acme", "d1", 3),
        ],
    )
    .await?;
    let first = claim(store).await?;
    assert_eq!(first.len(), 1);
    let key = first[0]
        .delivery
        .ordering_key
        .clone()
        .expect("a device key");
    // The first is in flight: nothing after it may go.
    assert!(
        store
            .claim_next_in_order(&hook.id, &key, LEASE)
            .await?
            .is_none()
    );
    attempt(store, first[0].delivery.id, AttemptOutcome::Delivered, 100).await?;
    let second = store
        .claim_next_in_order(&hook.id, &key, LEASE)
        .await?
        .expect("the second, once the first went out");
    assert_eq!(second.events[0].device_seq, Some(2));
    assert_eq!(second.endpoint.id, hook.id);
    // Claimed: the round does not take the third meanwhile.
    assert!(claim(store).await?.is_empty());
    Ok(())
}

async fn retries_do_not_count_towards_disabling(db: &TestDb) -> anyhow::Result<()> {
    let (store, hook) = acme_hook(db).await?;
    fan_out(
        store,
        &[device_event("acme", "d1", 1), device_event("acme", "d2", 1)],
    )
    .await?;
    for claimed in claim(store).await? {
        let recorded = attempt(
            store,
            claimed.delivery.id,
            AttemptOutcome::Retry { at: Utc::now() },
            1,
        )
        .await?;
        assert_eq!(recorded.endpoint_disabled, None);
    }
    let hook = store.get_webhook_endpoint("acme", &hook.id).await?;
    assert!(
        hook.enabled,
        "an outage within the schedule disables nothing"
    );
    assert_eq!(hook.consecutive_failures, 0);
    Ok(())
}

store::backend_tests!(
    the_next_in_order_is_claimed_by_its_key,
    retries_do_not_count_towards_disabling,
    fan_out_is_fair_between_tenants,
    claims_are_fair_between_tenants,
    enabled_endpoints_by_tenant_or_all,
    endpoint_crud_and_rotation,
    outbox_is_transactional_and_fans_out_once,
    batches_fill_and_close,
    claims_are_fair_and_ordered,
    expired_leases_are_claimed_again,
    failures_disable_the_endpoint_with_an_event,
);
