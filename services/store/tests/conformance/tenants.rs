//! Tenants: CRUD, uniqueness, paging.

use std::collections::BTreeSet;

use store::testing::TestDb;
use store::{Error, NewTenant, Page, TenantPatch};

use super::{acme, tenant};

async fn tenant_crud(db: &TestDb) -> anyhow::Result<()> {
    let store = db.store();
    let created = store
        .create_tenant(&NewTenant {
            id: "acme".into(),
            name: "Acme Corp ✓".into(),
        })
        .await?;
    assert_eq!(created.id, "acme");
    assert_eq!(created.name, "Acme Corp ✓");
    assert_eq!(created.created_at, created.updated_at);
    // What was written is what is read, timestamps included.
    assert_eq!(store.get_tenant("acme").await?, created);
    assert!(store.tenant_exists("acme").await?);

    let updated = store
        .update_tenant(
            "acme",
            &TenantPatch {
                name: Some("Acme Inc".into()),
            },
        )
        .await?;
    assert_eq!(updated.name, "Acme Inc");
    assert_eq!(updated.created_at, created.created_at);
    assert!(updated.updated_at >= created.updated_at);
    // An empty patch changes nothing but updated_at.
    let same = store.update_tenant("acme", &TenantPatch::default()).await?;
    assert_eq!(same.name, "Acme Inc");
    assert_eq!(store.get_tenant("acme").await?, same);

    let listed = store.list_tenants(&Page::default()).await?;
    assert_eq!(listed.items, vec![same]);
    assert_eq!(listed.next_cursor, None);

    store.delete_tenant("acme").await?;
    assert!(!store.tenant_exists("acme").await?);
    assert!(matches!(
        store.get_tenant("acme").await,
        Err(Error::NotFound { kind: "tenant", ref id }) if id == "acme"
    ));
    Ok(())
}

async fn duplicate_tenant_already_exists(db: &TestDb) -> anyhow::Result<()> {
    let store = acme(db).await?;
    let err = tenant(store, "acme").await.expect_err("duplicate");
    let err = err.downcast::<Error>()?;
    assert!(
        matches!(&err, Error::AlreadyExists { kind: "tenant", id } if id == "acme"),
        "{err:?}"
    );
    assert_eq!(err.to_string(), "tenant acme already exists");
    Ok(())
}

async fn missing_tenant_not_found(db: &TestDb) -> anyhow::Result<()> {
    let store = db.store();
    let not_found = |r: Result<_, Error>| matches!(r, Err(Error::NotFound { kind: "tenant", ref id }) if id == "ghost");
    assert!(not_found(store.get_tenant("ghost").await.map(|_| ())));
    assert!(not_found(
        store
            .update_tenant("ghost", &TenantPatch::default())
            .await
            .map(|_| ())
    ));
    assert!(not_found(store.delete_tenant("ghost").await));
    Ok(())
}

async fn invalid_tenant_ids_are_refused(db: &TestDb) -> anyhow::Result<()> {
    for bad in ["ab", "Acme", "a_b", "a/b/c", "x".repeat(64).as_str()] {
        let err = tenant(db.store(), bad).await.expect_err(bad);
        assert!(
            matches!(
                err.downcast_ref::<Error>(),
                Some(Error::InvalidId { kind: "tenant", .. })
            ),
            "{bad}: {err:?}"
        );
    }
    assert!(
        db.store()
            .list_tenants(&Page::default())
            .await?
            .items
            .is_empty()
    );
    Ok(())
}

async fn tenants_page_in_id_order(db: &TestDb) -> anyhow::Result<()> {
    let store = db.store();
    let mut ids: Vec<String> = (0..25)
        .map(|i| format!("tenant-{:02}", (i * 7) % 25))
        .collect();
    for id in &ids {
        tenant(store, id).await?;
    }
    ids.sort();

    let mut seen = Vec::new();
    let mut page = Page::first(4);
    let mut pages = 0;
    loop {
        let got = store.list_tenants(&page).await?;
        pages += 1;
        assert!(got.items.len() <= 4);
        seen.extend(got.items.into_iter().map(|t| t.id));
        match got.next_cursor {
            Some(cursor) => page = Page::after(4, cursor),
            None => break,
        }
    }
    assert_eq!(seen, ids);
    assert_eq!(pages, 7); // 6 full pages and one of 1
    assert_eq!(seen.iter().collect::<BTreeSet<_>>().len(), 25);

    // Exactly a multiple of the limit: the last full page has no cursor.
    let all = store.list_tenants(&Page::first(25)).await?;
    assert_eq!(all.items.len(), 25);
    assert_eq!(all.next_cursor, None);
    Ok(())
}

async fn bad_cursors_are_refused(db: &TestDb) -> anyhow::Result<()> {
    let store = db.store();
    for i in 0..3 {
        tenant(store, &format!("tenant-{i}")).await?;
    }
    let first = store.list_tenants(&Page::first(1)).await?;
    let cursor = first.next_cursor.expect("more pages");
    for bad in ["nope", "", "0011", &format!("{cursor}0")] {
        assert!(
            matches!(
                store.list_tenants(&Page::after(1, bad)).await,
                Err(Error::InvalidCursor)
            ),
            "{bad:?}"
        );
    }
    // A tenant cursor is not a device cursor.
    let filter = store::DeviceFilter::default();
    assert!(matches!(
        store
            .list_devices("tenant-0", &filter, &Page::after(1, cursor))
            .await,
        Err(Error::InvalidCursor)
    ));
    Ok(())
}

store::backend_tests!(
    tenant_crud,
    duplicate_tenant_already_exists,
    missing_tenant_not_found,
    invalid_tenant_ids_are_refused,
    tenants_page_in_id_order,
    bad_cursors_are_refused,
);
