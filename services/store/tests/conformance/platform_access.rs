//! Migration 0007: platform service credentials, every tenant's id and
//! per-tenant topic hygiene rules.

use store::testing::TestDb;
use store::{CredentialScope, Error, NewServiceCredential, TopicRules};

use crate::tenant;

fn credential(id: &str, name: &str) -> NewServiceCredential {
    NewServiceCredential {
        id: id.into(),
        scope: CredentialScope::Platform,
        name: name.into(),
        username: format!("platform:{name}"),
        password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into(),
        publish: vec![],
        subscribe: vec!["+/devices/+/status".into()],
    }
}

async fn platform_credentials_create_find_list_delete(db: &TestDb) -> anyhow::Result<()> {
    let store = db.store();
    let made = store
        .create_service_credential(&credential("c1", "ops"), None)
        .await?;
    assert_eq!(made.username, "platform:ops");
    assert_eq!(made.subscribe, ["+/devices/+/status"]);
    assert!(matches!(
        store
            .create_service_credential(&credential("c2", "ops"), None)
            .await,
        Err(Error::AlreadyExists { .. })
    ));
    store
        .create_service_credential(&credential("c3", "audit"), None)
        .await?;
    let found = store
        .platform_credential_by_username("platform:ops")
        .await?;
    assert_eq!(found.map(|c| c.id), Some("c1".to_owned()));
    assert!(
        store
            .platform_credential_by_username("ops")
            .await?
            .is_none()
    );
    let names = super::listed(
        store.list_service_credentials(&CredentialScope::Platform),
        |c| c.name,
    )
    .await?;
    assert_eq!(names, ["audit", "ops"]);
    assert_eq!(
        store
            .delete_service_credential(&CredentialScope::Platform, "c1", None)
            .await?
            .name,
        "ops"
    );
    assert!(matches!(
        store
            .delete_service_credential(&CredentialScope::Platform, "c1", None)
            .await,
        Err(Error::NotFound { .. })
    ));
    assert!(
        store
            .platform_credential_by_username("platform:ops")
            .await?
            .is_none()
    );
    Ok(())
}

async fn tenant_ids_and_topic_rules(db: &TestDb) -> anyhow::Result<()> {
    let store = db.store();
    tenant(store, "beta").await?;
    tenant(store, "alpha").await?;
    assert_eq!(store.all_tenant_ids().await?, ["alpha", "beta"]);
    assert_eq!(store.topic_rules("alpha").await?, TopicRules::default());
    let rules = TopicRules {
        max_depth: Some(8),
        forbid_leading_slash: true,
        forbid_spaces: true,
        max_catch_all_subscriptions: Some(0),
    };
    store.set_topic_rules("alpha", &rules, None).await?;
    assert_eq!(store.topic_rules("alpha").await?, rules);
    let relaxed = TopicRules {
        max_catch_all_subscriptions: Some(2),
        ..TopicRules::default()
    };
    store.set_topic_rules("alpha", &relaxed, None).await?;
    assert_eq!(store.topic_rules("alpha").await?, relaxed);
    assert_eq!(store.topic_rules("beta").await?, TopicRules::default());
    assert_eq!(
        store.all_topic_rules().await?,
        [("alpha".to_owned(), relaxed)]
    );
    assert!(matches!(
        store.topic_rules("gamma").await,
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        store.set_topic_rules("gamma", &rules, None).await,
        Err(Error::NotFound { .. })
    ));
    // Rules go with their tenant.
    store.delete_tenant("alpha").await?;
    tenant(store, "alpha").await?;
    assert_eq!(store.topic_rules("alpha").await?, TopicRules::default());
    Ok(())
}

store::backend_tests!(
    platform_credentials_create_find_list_delete,
    tenant_ids_and_topic_rules,
);
