//! The audit log: append, list per tenant and platform-wide, newest first.

use serde_json::json;
use store::testing::TestDb;
use store::{Error, NewAuditEntry, Page};

use super::tenant;

async fn audit_append_and_list(db: &TestDb) -> anyhow::Result<()> {
    let store = db.store();
    tenant(store, "acme").await?;

    let mut platform = NewAuditEntry::new("platform-admin", "tenant.create", "tenants/acme");
    platform.request_id = Some("req-1".into());
    let first = store.append_audit(&platform).await?;
    assert_eq!(first.actor, "platform-admin");
    assert_eq!(first.tenant_id, None);
    assert_eq!(first.request_id.as_deref(), Some("req-1"));
    assert_eq!(first.details, json!({}));

    let mut appended = vec![first.clone()];
    for (i, tenant_id) in ["acme", "globex", "acme", "acme", "globex"]
        .iter()
        .enumerate()
    {
        let entry = NewAuditEntry {
            tenant_id: Some(tenant_id.to_string()),
            details: json!({"n": i, "labels": {"site": "berlin"}, "list": [1, "two", null]}),
            ..NewAuditEntry::new(
                "tenant-admin:alice",
                "device.update",
                format!("devices/d{i}"),
            )
        };
        appended.push(store.append_audit(&entry).await?);
    }
    assert!(
        appended
            .windows(2)
            .all(|w| w[0].id < w[1].id && w[0].at <= w[1].at)
    );

    // Newest first, one tenant's.
    let acme = store.list_audit(Some("acme"), &Page::default()).await?;
    let targets: Vec<_> = acme.items.iter().map(|e| e.target.as_str()).collect();
    assert_eq!(targets, ["devices/d3", "devices/d2", "devices/d0"]);
    assert_eq!(acme.items[0].details["list"], json!([1, "two", null]));
    assert_eq!(acme.next_cursor, None);

    // Everything, in pages of 2, newest first.
    let mut all = Vec::new();
    let mut page = Page::first(2);
    loop {
        let got = store.list_audit(None, &page).await?;
        all.extend(got.items);
        match got.next_cursor {
            Some(c) => page = Page::after(2, c),
            None => break,
        }
    }
    appended.reverse();
    assert_eq!(all, appended);

    // The trail outlives the tenant.
    store.delete_tenant("acme").await?;
    assert_eq!(
        store
            .list_audit(Some("acme"), &Page::default())
            .await?
            .items
            .len(),
        3
    );
    assert!(
        store
            .list_audit(Some("nobody"), &Page::default())
            .await?
            .items
            .is_empty()
    );
    assert!(matches!(
        store.list_audit(None, &Page::after(2, "zz")).await,
        Err(Error::InvalidCursor)
    ));
    Ok(())
}

store::backend_tests!(audit_append_and_list);
