//! Signing keys, idempotency keys, API keys and device import.

use store::testing::TestDb;
use store::{Error, IdempotencyClaim, NewApiKey, NewDevice, NewSigningKey, Page};

use crate::acme;

fn signing_key(kid: &str) -> NewSigningKey {
    NewSigningKey {
        kid: kid.into(),
        algorithm: "ES256".into(),
        private_key: vec![1, 2, 3],
        public_key: vec![4, 5],
    }
}

async fn signing_keys_rotate(db: &TestDb) -> anyhow::Result<()> {
    let store = db.store();
    let a = store.create_signing_key(&signing_key("a")).await?;
    assert_eq!(a.private_key, [1, 2, 3]);
    assert!(!format!("{a:?}").contains("private_key"));
    assert!(matches!(
        store.create_signing_key(&signing_key("a")).await,
        Err(Error::AlreadyExists { .. })
    ));
    store.create_signing_key(&signing_key("b")).await?;
    assert_eq!(store.retire_signing_keys_except("b").await?, 1);
    let keys = store.list_signing_keys().await?;
    assert_eq!(keys.len(), 2);
    assert!(keys[0].retired_at.is_some() && keys[1].retired_at.is_none());
    let later = chrono::Utc::now() + chrono::Duration::seconds(5);
    assert_eq!(store.delete_signing_keys_retired_before(later).await?, 1);
    assert_eq!(store.list_signing_keys().await?.len(), 1);
    Ok(())
}

async fn idempotency_keys_claim_once(db: &TestDb) -> anyhow::Result<()> {
    let store = db.store();
    let claim = store.claim_idempotency_key("acme", "k", "me", "h1").await?;
    assert_eq!(claim, IdempotencyClaim::Claimed);
    let IdempotencyClaim::Existing(rec) = store
        .claim_idempotency_key("acme", "k", "you", "h2")
        .await?
    else {
        panic!("claimed twice");
    };
    assert_eq!((rec.actor.as_str(), rec.status), ("me", None));
    // Another scope is another key.
    assert_eq!(
        store
            .claim_idempotency_key("other", "k", "me", "h1")
            .await?,
        IdempotencyClaim::Claimed
    );
    store
        .complete_idempotency_key("acme", "k", 201, Some("application/json"), b"{}")
        .await?;
    let IdempotencyClaim::Existing(rec) =
        store.claim_idempotency_key("acme", "k", "me", "h1").await?
    else {
        panic!("lost");
    };
    assert_eq!(rec.status, Some(201));
    assert_eq!(rec.body.as_deref(), Some(&b"{}"[..]));
    store.release_idempotency_key("acme", "k").await?;
    assert_eq!(
        store.claim_idempotency_key("acme", "k", "me", "h1").await?,
        IdempotencyClaim::Claimed
    );
    let later = chrono::Utc::now() + chrono::Duration::seconds(5);
    assert_eq!(store.purge_idempotency_keys_before(later).await?, 2);
    Ok(())
}

async fn api_keys_revoke_and_cascade(db: &TestDb) -> anyhow::Result<()> {
    let store = acme(db).await?;
    let new = |id: &str, tenant: &str| NewApiKey {
        id: id.into(),
        tenant_id: tenant.into(),
        name: "n".into(),
        role: "viewer".into(),
        secret_hash: vec![9; 32],
    };
    store.create_api_key(&new("k1", "acme")).await?;
    store.create_api_key(&new("k2", "acme")).await?;
    assert!(matches!(
        store.create_api_key(&new("k3", "nope")).await,
        Err(Error::NotFound { kind: "tenant", .. })
    ));
    let page = store.list_api_keys("acme", &Page::first(1)).await?;
    assert_eq!(page.items[0].id, "k1");
    let next = store
        .list_api_keys("acme", &Page::after(1, page.next_cursor.unwrap()))
        .await?;
    assert_eq!(next.items[0].id, "k2");
    assert!(next.next_cursor.is_none());
    let (key, hash) = store.api_key_with_hash("k1").await?;
    assert_eq!((key.revoked_at, hash), (None, vec![9; 32]));
    let revoked = store.revoke_api_key("acme", "k1").await?;
    assert!(revoked.revoked_at.is_some());
    assert_eq!(
        store.revoke_api_key("acme", "k1").await?.revoked_at,
        revoked.revoked_at
    );
    assert!(matches!(
        store.revoke_api_key("other", "k2").await,
        Err(Error::NotFound { .. })
    ));
    store.delete_tenant("acme").await?;
    assert!(matches!(
        store.api_key_with_hash("k2").await,
        Err(Error::NotFound { .. })
    ));
    Ok(())
}

async fn import_all_or_nothing(db: &TestDb) -> anyhow::Result<()> {
    let store = acme(db).await?;
    store.create_device("acme", &NewDevice::new("dup")).await?;
    let batch = [
        NewDevice::new("a"),
        NewDevice::new("dup"),
        NewDevice::new("b"),
    ];
    let atomic = store.import_devices("acme", &batch, true, None).await?;
    assert_eq!(atomic.len(), 2);
    assert!(atomic[0].is_ok());
    assert!(matches!(atomic[1], Err(Error::AlreadyExists { .. })));
    assert!(matches!(
        store.get_device("acme", "a").await,
        Err(Error::NotFound { .. })
    ));
    let each = store.import_devices("acme", &batch, false, None).await?;
    assert_eq!(each.len(), 3);
    assert!(each[0].is_ok() && each[1].is_err() && each[2].is_ok());
    store.get_device("acme", "b").await?;
    assert!(matches!(
        store.import_devices("nope", &batch, true, None).await,
        Err(Error::NotFound { kind: "tenant", .. })
    ));
    Ok(())
}

store::backend_tests!(
    signing_keys_rotate,
    idempotency_keys_claim_once,
    api_keys_revoke_and_cascade,
    import_all_or_nothing
);
