//! Publish rate limits: tenant default, device override, which applies.

use store::testing::TestDb;
use store::{Error, NewDevice, PublishLimitSettings};

use crate::acme;

async fn device_beats_tenant_and_both_go_with_their_owner(db: &TestDb) -> anyhow::Result<()> {
    let store = acme(db).await?;
    for d in ["d1", "d2"] {
        store.create_device("acme", &NewDevice::new(d)).await?;
    }
    assert_eq!(store.effective_publish_limits("acme", "d1").await?, None);
    let tenant_default = PublishLimitSettings {
        messages_per_second: Some(100),
        ..Default::default()
    };
    let device = PublishLimitSettings {
        messages_per_second: Some(2),
        messages_burst: Some(4),
        bytes_per_second: Some(1000),
        bytes_burst: None,
    };
    store
        .put_tenant_publish_limits("acme", &tenant_default, None)
        .await?;
    let stored = store
        .put_device_publish_limits("acme", "d1", &device, None)
        .await?;
    assert_eq!(stored.settings, device);
    assert_eq!(store.get_device_publish_limits("acme", "d1").await?, stored);
    assert_eq!(
        store.effective_publish_limits("acme", "d1").await?,
        Some(device)
    );
    assert_eq!(
        store.effective_publish_limits("acme", "d2").await?,
        Some(tenant_default)
    );
    // Replacing keeps one row and takes every field, unset ones included.
    let fewer = PublishLimitSettings {
        messages_per_second: Some(3),
        ..Default::default()
    };
    store
        .put_device_publish_limits("acme", "d1", &fewer, None)
        .await?;
    assert_eq!(
        store.effective_publish_limits("acme", "d1").await?,
        Some(fewer)
    );
    store
        .delete_device_publish_limits("acme", "d1", None)
        .await?;
    assert_eq!(
        store.effective_publish_limits("acme", "d1").await?,
        Some(tenant_default)
    );
    assert!(matches!(
        store.delete_device_publish_limits("acme", "d1", None).await,
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        store
            .put_device_publish_limits("acme", "nope", &device, None)
            .await,
        Err(Error::NotFound { kind: "device", .. })
    ));
    assert!(matches!(
        store
            .put_tenant_publish_limits("nope", &tenant_default, None)
            .await,
        Err(Error::NotFound { kind: "tenant", .. })
    ));
    // An override goes with its device.
    store
        .put_device_publish_limits("acme", "d2", &device, None)
        .await?;
    store.delete_device("acme", "d2").await?;
    store.create_device("acme", &NewDevice::new("d2")).await?;
    assert_eq!(
        store.effective_publish_limits("acme", "d2").await?,
        Some(tenant_default)
    );
    store.delete_tenant_publish_limits("acme", None).await?;
    assert!(matches!(
        store.get_tenant_publish_limits("acme").await,
        Err(Error::NotFound { .. })
    ));
    assert_eq!(store.effective_publish_limits("acme", "d2").await?, None);
    Ok(())
}

store::backend_tests!(device_beats_tenant_and_both_go_with_their_owner);
