//! Per-tenant presence settings and the just-in-time flag of registered CAs.

use store::testing::TestDb;
use store::{Error, backend_tests};

use crate::acme;

backend_tests!(presence_settings_default_on_then_set);

async fn presence_settings_default_on_then_set(db: &TestDb) -> anyhow::Result<()> {
    let store = acme(db).await?;
    let before = store.get_presence_settings("acme").await?;
    assert!(before.publish_status);
    assert_eq!(before.updated_at, None);
    assert!(store.list_presence_settings().await?.is_empty());
    let off = store.put_presence_settings("acme", false, None).await?;
    assert!(!off.publish_status && off.updated_at.is_some());
    assert_eq!(store.get_presence_settings("acme").await?, off);
    assert_eq!(store.list_presence_settings().await?, vec![off]);
    assert!(
        store
            .put_presence_settings("acme", true, None)
            .await?
            .publish_status
    );
    assert!(matches!(
        store.put_presence_settings("nobody", true, None).await,
        Err(Error::NotFound { kind: "tenant", .. })
    ));
    Ok(())
}
