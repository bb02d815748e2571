//! What the REST API reads and changes beyond the broker's own writes:
//! presence of a page of devices, webhook endpoint changes.

use chrono::Utc;
use store::testing::TestDb;
use store::{NewDevice, NewWebhookEndpoint, PresenceStatus, PresenceUpdate, WebhookEndpointChange};

use super::{acme, tenant};

fn presence(tenant_id: &str, device: &str, status: PresenceStatus) -> PresenceUpdate {
    PresenceUpdate {
        tenant_id: tenant_id.into(),
        device_id: device.into(),
        status,
        at: Utc::now(),
        connected_at: Some(Utc::now()),
        remote_addr: None,
        protocol: None,
        credential: None,
        disconnect_reason: None,
        node_id: None,
    }
}

async fn online_devices_of_a_page(db: &TestDb) -> anyhow::Result<()> {
    let store = acme(db).await?;
    tenant(store, "other").await?;
    for d in ["a", "b", "c"] {
        store.create_device("acme", &NewDevice::new(d)).await?;
    }
    store.create_device("other", &NewDevice::new("a")).await?;
    store
        .update_presence(&[
            presence("acme", "a", PresenceStatus::Online),
            presence("acme", "b", PresenceStatus::Offline),
            presence("other", "a", PresenceStatus::Online),
        ])
        .await?;
    let ids: Vec<String> = ["a", "b", "c", "zz"].map(String::from).to_vec();
    let online = store.online_devices("acme", &ids).await?;
    assert_eq!(online.into_iter().collect::<Vec<_>>(), ["a"]);
    assert!(store.online_devices("acme", &[]).await?.is_empty());
    assert!(
        store
            .online_devices("other", &["b".to_owned()])
            .await?
            .is_empty()
    );
    Ok(())
}

async fn webhook_endpoint_changes(db: &TestDb) -> anyhow::Result<()> {
    let store = acme(db).await?;
    let created = store
        .create_webhook_endpoint(
            &NewWebhookEndpoint {
                tenant_id: "acme".into(),
                url: "https://example.com/hook".into(),
                event_types: vec!["device.*".into()],
                topic_filter: Some("devices/#".into()),
                secret: "whsec_c2VjcmV0".into(),
            },
            None,
        )
        .await?;
    let id = &created.id;

    let unchanged = store
        .update_webhook_endpoint("acme", id, &WebhookEndpointChange::default(), None)
        .await?;
    assert_eq!(unchanged.url, created.url);
    assert_eq!(unchanged.event_types, created.event_types);
    assert_eq!(unchanged.topic_filter, created.topic_filter);

    let changed = store
        .update_webhook_endpoint(
            "acme",
            id,
            &WebhookEndpointChange {
                url: Some("https://example.org/new".into()),
                event_types: Some(vec!["state.reported".into(), "device.connected".into()]),
                topic_filter: Some(None),
                enabled: None,
            },
            None,
        )
        .await?;
    assert_eq!(changed.url, "https://example.org/new");
    assert_eq!(changed.event_types, ["state.reported", "device.connected"]);
    assert_eq!(changed.topic_filter, None);
    assert_eq!(changed.secret, created.secret);
    assert_eq!(store.get_webhook_endpoint("acme", id).await?, changed);

    let filtered = store
        .update_webhook_endpoint(
            "acme",
            id,
            &WebhookEndpointChange {
                topic_filter: Some(Some("devices/+/t".into())),
                ..WebhookEndpointChange::default()
            },
            None,
        )
        .await?;
    assert_eq!(filtered.topic_filter.as_deref(), Some("devices/+/t"));
    assert_eq!(filtered.url, "https://example.org/new");

    // The enabled flag changes with the rest, or alone.
    let disabled = store
        .update_webhook_endpoint(
            "acme",
            id,
            &WebhookEndpointChange {
                event_types: Some(vec!["*".into()]),
                enabled: Some(false),
                ..WebhookEndpointChange::default()
            },
            None,
        )
        .await?;
    assert!(!disabled.enabled);
    assert_eq!(disabled.event_types, ["*"]);
    assert_eq!(disabled.topic_filter.as_deref(), Some("devices/+/t"));
    let untouched = store
        .update_webhook_endpoint("acme", id, &WebhookEndpointChange::default(), None)
        .await?;
    assert_eq!(untouched, disabled);
    let enabled = store
        .update_webhook_endpoint(
            "acme",
            id,
            &WebhookEndpointChange {
                enabled: Some(true),
                ..WebhookEndpointChange::default()
            },
            None,
        )
        .await?;
    assert!(enabled.enabled);
    assert_eq!(enabled.consecutive_failures, 0);
    assert_eq!(enabled.disabled_reason, None);
    assert_eq!(enabled.event_types, ["*"]);

    let missing = store
        .update_webhook_endpoint("other", id, &WebhookEndpointChange::default(), None)
        .await;
    assert!(
        matches!(missing, Err(store::Error::NotFound { .. })),
        "{missing:?}"
    );
    Ok(())
}

store::backend_tests!(online_devices_of_a_page, webhook_endpoint_changes);
