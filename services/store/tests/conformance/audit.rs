//! The audit log: append, list per tenant and platform-wide, newest first.

use chrono::Utc;
use serde_json::json;
use store::testing::TestDb;
use store::{
    CredentialScope, Device, DevicePatch, DeviceState, Error, NewAuditEntry, NewDevice,
    NewServiceCredential, NewTenant, NewWebhookEndpoint, Page, PolicyDocument, ServiceCredential,
    TenantPatch, WebhookEndpoint,
};

use super::{acme, assert_fails};

async fn audit_append_and_list(db: &TestDb) -> anyhow::Result<()> {
    let store = acme(db).await?;

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

/// `*_audited` writes a change and its entry together: each is there after
/// success, and when the entry cannot be written the change is not either.
async fn audited_changes_commit_with_their_entry(db: &TestDb) -> anyhow::Result<()> {
    let store = db.store();
    let entry = |action: &str| {
        let mut e = NewAuditEntry::new("operator:t", action, "tenants/acme");
        e.tenant_id = Some("acme".into());
        e
    };
    let acme = NewTenant {
        id: "acme".into(),
        name: "Acme".into(),
    };
    let created = store
        .create_tenant_audited(&acme, &entry("tenant.create"))
        .await?;
    store
        .create_device_audited("acme", &NewDevice::new("d1"), &|_| entry("device.create"))
        .await?;
    let patch = DevicePatch {
        enabled: Some(false),
        ..DevicePatch::default()
    };
    let d1 = store
        .update_device_audited("acme", "d1", &patch, None, &|_| entry("device.update"))
        .await?;
    // A precondition on an old version: refused, nothing written.
    let stale = store
        .update_device_audited(
            "acme",
            "d1",
            &DevicePatch::default(),
            Some(created.updated_at - chrono::Duration::seconds(1)),
            &|_| entry("device.update"),
        )
        .await;
    assert!(matches!(stale, Err(Error::Modified { .. })), "{stale:?}");
    let current = store
        .update_device_audited("acme", "d1", &patch, Some(d1.updated_at), &|_| {
            entry("device.update")
        })
        .await?;
    assert!(!current.enabled);
    let missing = store
        .update_device_audited("acme", "ghost", &patch, Some(d1.updated_at), &|_| {
            entry("x")
        })
        .await;
    assert!(
        matches!(missing, Err(Error::NotFound { .. })),
        "{missing:?}"
    );
    let renamed = TenantPatch {
        name: Some("Acme 2".into()),
    };
    let stale = store
        .update_tenant_audited(
            "acme",
            &renamed,
            Some(d1.created_at - chrono::Duration::seconds(1)),
            &entry("t"),
        )
        .await;
    assert!(matches!(stale, Err(Error::Modified { .. })), "{stale:?}");
    store
        .update_tenant_audited(
            "acme",
            &renamed,
            Some(created.updated_at),
            &entry("tenant.update"),
        )
        .await?;
    store
        .create_device_audited("acme", &NewDevice::new("d2"), &|_| entry("device.create"))
        .await?;
    store
        .delete_device_audited("acme", "d2", &entry("device.delete"))
        .await?;
    let actions: Vec<String> = store
        .list_audit(Some("acme"), &Page::first(50))
        .await?
        .items
        .into_iter()
        .map(|e| e.action)
        .collect();
    assert_eq!(
        actions,
        [
            "device.delete",
            "device.create",
            "tenant.update",
            "device.update",
            "device.update",
            "device.create",
            "tenant.create"
        ]
    );

    // Now no entry can be written: every change fails and leaves no trace.
    db.execute("DROP TABLE audit_log").await?;
    assert_fails(
        store.create_device_audited("acme", &NewDevice::new("d3"), &|_| entry("device.create")),
    )
    .await;
    assert!(matches!(
        store.get_device("acme", "d3").await,
        Err(Error::NotFound { .. })
    ));
    assert_fails(store.update_device_audited(
        "acme",
        "d1",
        &DevicePatch {
            enabled: Some(true),
            ..DevicePatch::default()
        },
        None,
        &|_| entry("device.update"),
    ))
    .await;
    assert!(!store.get_device("acme", "d1").await?.enabled);
    assert_fails(store.delete_device_audited("acme", "d1", &entry("device.delete"))).await;
    store.get_device("acme", "d1").await?;
    let other = NewTenant {
        id: "globex".into(),
        name: "Globex".into(),
    };
    assert_fails(store.create_tenant_audited(&other, &entry("tenant.create"))).await;
    assert!(!store.tenant_exists("globex").await?);
    assert_fails(store.update_tenant_audited(
        "acme",
        &TenantPatch {
            name: Some("Nope".into()),
        },
        None,
        &entry("t"),
    ))
    .await;
    assert_eq!(store.get_tenant("acme").await?.name, "Acme 2");
    assert_fails(store.delete_tenant_audited("acme", &entry("tenant.delete"))).await;
    assert!(store.tenant_exists("acme").await?);
    Ok(())
}

/// The same for changes that take an optional entry: a policy (upsert and
/// delete), a service credential, a platform credential (whose entry is
/// made from the deleted row) and a device import (whose entry is made
/// from its results). A change that does not happen writes no entry; once
/// no entry can be written, no change persists.
async fn optional_audit_entries_commit_with_their_change(db: &TestDb) -> anyhow::Result<()> {
    let store = acme(db).await?;
    let entry = |action: &str| {
        let mut e = NewAuditEntry::new("tenant-admin:t", action, "tenants/acme");
        e.tenant_id = Some("acme".into());
        e
    };
    let document: PolicyDocument = serde_json::from_value(json!({"publish": ["#"]}))?;
    store
        .put_acl_policy("acme", "p1", &document, Some(&entry("policy.put")))
        .await?;
    // A desired state entry gives the version the store sets.
    store.create_device("acme", &NewDevice::new("sd")).await?;
    let versioned = |s: &DeviceState| NewAuditEntry {
        details: json!({ "version": s.desired_version }),
        ..entry("state.desired")
    };
    let led = json!({"led": true});
    store
        .merge_desired("acme", "sd", &led, None, Utc::now(), Some(&versioned))
        .await?;
    // A webhook endpoint's entry names the id the store makes.
    let hook = |url: &str| NewWebhookEndpoint {
        tenant_id: "acme".into(),
        url: url.into(),
        event_types: vec!["device.*".into()],
        topic_filter: None,
        secret: "whsec_c2VjcmV0".into(),
    };
    let hook_created = |e: &WebhookEndpoint| NewAuditEntry {
        target: format!("tenants/acme/webhooks/{}", e.id),
        ..entry("wh.create")
    };
    let gone = store
        .create_webhook_endpoint(&hook("https://example.com/a"), Some(&hook_created))
        .await?;
    let kept = store
        .create_webhook_endpoint(&hook("https://example.com/b"), Some(&hook_created))
        .await?;
    store
        .delete_webhook_endpoint("acme", &gone.id, Some(&entry("wh.delete")))
        .await?;
    let missing_hook = store
        .delete_webhook_endpoint("acme", &gone.id, Some(&entry("wh.delete")))
        .await;
    assert!(
        matches!(missing_hook, Err(Error::NotFound { .. })),
        "{missing_hook:?}"
    );
    let credential =
        |id: &str, scope: CredentialScope, name: &str, username: String| NewServiceCredential {
            id: id.into(),
            scope,
            name: name.into(),
            username,
            password_hash: "$argon2id$secret".into(),
            publish: vec![],
            subscribe: vec![],
        };
    let service = |id: &str, name: &str| {
        let acme = CredentialScope::Tenant("acme".into());
        credential(id, acme, name, format!("{name}@acme"))
    };
    store
        .create_service_credential(&service("sc1", "ingest"), Some(&entry("sc.create")))
        .await?;
    // Refused (the name is taken) or missing: no entry.
    let taken = store
        .create_service_credential(&service("sc2", "ingest"), Some(&entry("sc.create")))
        .await;
    assert!(
        matches!(taken, Err(Error::AlreadyExists { .. })),
        "{taken:?}"
    );
    let missing = store
        .delete_acl_policy("acme", "ghost", Some(&entry("policy.delete")))
        .await;
    assert!(
        matches!(missing, Err(Error::NotFound { .. })),
        "{missing:?}"
    );
    let platform = |id: &str, name: &str| {
        credential(
            id,
            CredentialScope::Platform,
            name,
            format!("platform:{name}"),
        )
    };
    store
        .create_service_credential(&platform("pc1", "ops"), Some(&entry("pc.create")))
        .await?;
    let named = |c: &ServiceCredential| NewAuditEntry {
        details: json!({ "name": c.name }),
        ..entry("pc.delete")
    };
    store
        .delete_service_credential(&CredentialScope::Platform, "pc1", Some(&named))
        .await?;
    assert!(matches!(
        store
            .delete_service_credential(&CredentialScope::Platform, "pc1", Some(&named))
            .await,
        Err(Error::NotFound { .. })
    ));
    // An import that skips a taken id: the entry counts what it created.
    let imported = |outcomes: &[Result<Device, Error>]| NewAuditEntry {
        details: json!({ "created": outcomes.iter().filter(|o| o.is_ok()).count() }),
        ..entry("device.import")
    };
    store
        .create_device("acme", &NewDevice::new("taken"))
        .await?;
    let batch = [
        NewDevice::new("i1"),
        NewDevice::new("taken"),
        NewDevice::new("i2"),
    ];
    let outcomes = store
        .import_devices("acme", &batch, false, Some(&imported))
        .await?;
    assert!(outcomes[0].is_ok() && outcomes[1].is_err() && outcomes[2].is_ok());
    // Refused as a whole: no entry.
    let atomic = store
        .import_devices("acme", &batch, true, Some(&imported))
        .await?;
    assert!(atomic.iter().any(Result::is_err));
    let entries = store
        .list_audit(Some("acme"), &Page::first(50))
        .await?
        .items;
    let actions: Vec<&str> = entries.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(
        actions,
        [
            "device.import",
            "pc.delete",
            "pc.create",
            "sc.create",
            "wh.delete",
            "wh.create",
            "wh.create",
            "state.desired",
            "policy.put"
        ]
    );
    assert_eq!(entries[7].details, json!({ "version": 1 }));
    assert_eq!(entries[0].details, json!({ "created": 2 }));
    assert_eq!(entries[1].details, json!({ "name": "ops" }));
    assert_eq!(
        entries[5].target,
        format!("tenants/acme/webhooks/{}", kept.id)
    );
    assert_eq!(
        entries[6].target,
        format!("tenants/acme/webhooks/{}", gone.id)
    );

    // Now no entry can be written: every change fails and leaves no trace.
    db.execute("DROP TABLE audit_log").await?;
    let other: PolicyDocument = serde_json::from_value(json!({"publish": []}))?;
    assert_fails(store.put_acl_policy("acme", "p1", &other, Some(&entry("policy.put")))).await;
    assert_fails(store.put_acl_policy("acme", "p2", &other, Some(&entry("policy.put")))).await;
    assert_eq!(store.get_acl_policy("acme", "p1").await?.document, document);
    assert!(matches!(
        store.get_acl_policy("acme", "p2").await,
        Err(Error::NotFound { .. })
    ));
    assert_fails(store.delete_acl_policy("acme", "p1", Some(&entry("policy.delete")))).await;
    store.get_acl_policy("acme", "p1").await?;
    assert_fails(
        store.create_service_credential(&service("sc3", "other"), Some(&entry("sc.create"))),
    )
    .await;
    assert_fails(store.delete_service_credential(
        &CredentialScope::Tenant("acme".into()),
        "sc1",
        Some(&|_: &ServiceCredential| entry("sc.delete")),
    ))
    .await;
    let names = super::listed(
        store.list_service_credentials(&CredentialScope::Tenant("acme".into())),
        |c| c.name,
    )
    .await?;
    assert_eq!(names, ["ingest"]);
    assert_fails(
        store.create_service_credential(&platform("pc2", "ops2"), Some(&entry("pc.create"))),
    )
    .await;
    assert!(
        store
            .list_service_credentials(&CredentialScope::Platform)
            .await?
            .is_empty()
    );
    let more = [NewDevice::new("i3"), NewDevice::new("i4")];
    assert_fails(store.import_devices("acme", &more, false, Some(&imported))).await;
    assert!(matches!(
        store.get_device("acme", "i3").await,
        Err(Error::NotFound { .. })
    ));
    assert_fails(
        store.create_webhook_endpoint(&hook("https://example.com/c"), Some(&hook_created)),
    )
    .await;
    assert_fails(store.delete_webhook_endpoint("acme", &kept.id, Some(&entry("wh.delete")))).await;
    let hooks = super::listed(store.list_webhook_endpoints("acme"), |e| e.url).await?;
    assert_eq!(hooks, ["https://example.com/b"]);
    let fan = json!({"fan": 2});
    assert_fails(store.merge_desired("acme", "sd", &fan, None, Utc::now(), Some(&versioned))).await;
    let desired = store.get_device_state("acme", "sd").await?;
    assert_eq!((desired.desired, desired.desired_version), (led, 1));
    // Without an entry the same changes still work.
    store.put_acl_policy("acme", "p2", &other, None).await?;
    store
        .create_webhook_endpoint(&hook("https://example.com/c"), None)
        .await?;
    Ok(())
}

store::backend_tests!(
    audit_append_and_list,
    audited_changes_commit_with_their_entry,
    optional_audit_entries_commit_with_their_change
);
