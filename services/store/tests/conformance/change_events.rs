//! A change's events: written with its audit entry in its transaction, so
//! one exists exactly when its change committed, and announced on the
//! store's hub only after the commit.

use chrono::Utc;
use events::Event;
use events::hub::{EventHub, StreamItem};
use events::payload::{CertificateRevoked, DeviceDeleted, RevocationScope};
use store::testing::TestDb;
use store::{ChangeEvent, Device, DevicePatch, Error, NewAuditEntry, NewDevice, Page};
use tokio::sync::broadcast;

use crate::tenant;

fn entry(action: &str) -> NewAuditEntry {
    NewAuditEntry {
        tenant_id: Some("acme".into()),
        ..NewAuditEntry::new("tenant-admin:t", action, "tenants/acme")
    }
}

/// A device event (any type will do).
fn device_event(device: &str) -> ChangeEvent {
    ChangeEvent {
        tenant_id: "acme".into(),
        device_id: Some(device.into()),
        event: Event::DeviceDeleted(DeviceDeleted {
            device_id: device.into(),
        }),
    }
}

fn tenant_floor() -> ChangeEvent {
    ChangeEvent {
        tenant_id: "acme".into(),
        device_id: None,
        event: Event::CertificateRevoked(CertificateRevoked::Floor {
            scope: RevocationScope::Tenant,
            issued_before: Utc::now(),
        }),
    }
}

/// What the hub announced since the last call.
fn announced(rx: &mut broadcast::Receiver<StreamItem>) -> Vec<events::hub::PlatformEvent> {
    let mut got = Vec::new();
    while let Ok(item) = rx.try_recv() {
        match item {
            StreamItem::Event(e) => got.push((*e).clone()),
            StreamItem::Missed(n) => panic!("missed {n}"),
        }
    }
    got
}

async fn an_event_exists_exactly_when_its_change_committed(db: &TestDb) -> anyhow::Result<()> {
    let hub = EventHub::new(64);
    let store = db.store().clone().with_event_hub(hub.clone());
    let mut rx = hub.subscribe("acme");
    tenant(&store, "acme").await?;

    // Committed: the event is in the outbox, numbered, and announced with
    // its row once the transaction is done.
    let d1 = store
        .create_device_audited("acme", &NewDevice::new("d1"), &|d| {
            entry("device.create").with_event(device_event(&d.id))
        })
        .await?;
    let written = db.outbox().await;
    assert_eq!(written.len(), 1);
    assert_eq!(written[0].device_id.as_deref(), Some("d1"));
    assert_eq!(written[0].device_seq, Some(1));
    assert_eq!(written[0].payload["seq"], 1);
    let heard = announced(&mut rx);
    assert_eq!(heard.len(), 1);
    assert_eq!(heard[0].outbox_id, Some(written[0].id));
    assert_eq!(heard[0].data, written[0].payload);
    assert_eq!(heard[0].timestamp, written[0].created_at);

    // A change refused (a stale precondition): no event, none announced.
    let updated = |d: &Device| entry("device.update").with_event(device_event(&d.id));
    let before = d1.updated_at - chrono::Duration::seconds(1);
    let patch = DevicePatch::default();
    let stale = store
        .update_device_audited("acme", "d1", &patch, Some(before), &updated)
        .await;
    assert!(matches!(stale, Err(Error::Modified { .. })), "{stale:?}");
    assert_eq!(db.outbox().await.len(), 1);
    assert!(announced(&mut rx).is_empty());

    // An event that cannot be written (its device does not exist) undoes
    // the change it came with: no floor, no entry, no event.
    let floor = store
        .set_tenant_cert_floor(
            "acme",
            Utc::now(),
            Some(
                &entry("certificate.revoke_before")
                    .with_event(tenant_floor())
                    .with_event(device_event("ghost")),
            ),
        )
        .await;
    assert!(matches!(floor, Err(Error::NotFound { .. })), "{floor:?}");
    assert_eq!(store.cert_floors("acme", "d1").await?.tenant, None);
    assert_eq!(db.outbox().await.len(), 1);
    assert!(announced(&mut rx).is_empty());
    let entries = store.list_audit(Some("acme"), &Page::first(10)).await?;
    assert_eq!(entries.items.len(), 1, "only the creation's: {entries:?}");

    // A tenant-wide event has no device and no number.
    store
        .set_tenant_cert_floor(
            "acme",
            Utc::now(),
            Some(&entry("certificate.revoke_before").with_event(tenant_floor())),
        )
        .await?;
    let written = db.outbox().await;
    assert_eq!(written.len(), 2);
    assert_eq!(
        (written[1].device_id.as_deref(), written[1].device_seq),
        (None, None)
    );
    assert_eq!(announced(&mut rx).len(), 1);

    // A deletion's event is numbered before its device (and its sequence)
    // goes; deleting a device that is not there writes nothing.
    store
        .delete_device_audited(
            "acme",
            "d1",
            &entry("device.delete").with_event(device_event("d1")),
        )
        .await?;
    let written = db.outbox().await;
    assert_eq!(written.len(), 3);
    assert_eq!(written[2].device_seq, Some(2));
    assert_eq!(announced(&mut rx).len(), 1);
    let again = store
        .delete_device_audited(
            "acme",
            "d1",
            &entry("device.delete").with_event(device_event("d1")),
        )
        .await;
    assert!(matches!(again, Err(Error::NotFound { .. })), "{again:?}");
    assert_eq!(db.outbox().await.len(), 3);
    assert!(announced(&mut rx).is_empty());

    // An entry appended on its own takes its events along.
    store
        .append_audit(&entry("session.end").with_event(tenant_floor()))
        .await?;
    assert_eq!(db.outbox().await.len(), 4);
    assert_eq!(announced(&mut rx).len(), 1);
    Ok(())
}

store::backend_tests!(an_event_exists_exactly_when_its_change_committed);
