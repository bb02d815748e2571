//! Devices: CRUD, tenant scoping, cascade, filters, paging under inserts.

use std::collections::BTreeSet;

use serde_json::json;
use store::testing::TestDb;
use store::{DeviceFilter, DevicePatch, Error, Labels, NewDevice, Page, Store};

use super::{acme, device_ids, tenant};

/// The error creating device `id` in `tenant_id` fails with.
async fn create_error(store: &Store, tenant_id: &str, id: &str) -> Error {
    let created = store.create_device(tenant_id, &NewDevice::new(id)).await;
    created.expect_err("the device is refused")
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

async fn device_crud(db: &TestDb) -> anyhow::Result<()> {
    let store = acme(db).await?;
    let attributes =
        json!({"model": "X-1", "fw": {"version": [1, 2, 3]}, "ok": true, "note": "ünïcødé"});
    let new = NewDevice {
        id: "Sensor_1.a-b".into(),
        labels: labels(&[("site", "berlin"), ("floor", "3")]),
        attributes: attributes.as_object().cloned().unwrap(),
        enabled: true,
    };
    let created = store.create_device("acme", &new).await?;
    assert_eq!(created.tenant_id, "acme");
    assert_eq!(created.id, new.id);
    assert_eq!(created.labels, new.labels);
    assert_eq!(
        serde_json::Value::Object(created.attributes.clone()),
        attributes
    );
    assert!(created.enabled);
    assert_eq!(created.created_at, created.updated_at);
    assert_eq!(store.get_device("acme", "Sensor_1.a-b").await?, created);

    // A patch changes only what it names; labels are replaced whole.
    let disabled = store
        .update_device(
            "acme",
            "Sensor_1.a-b",
            &DevicePatch {
                enabled: Some(false),
                ..DevicePatch::default()
            },
        )
        .await?;
    assert!(!disabled.enabled);
    assert_eq!(disabled.labels, created.labels);
    assert_eq!(disabled.attributes, created.attributes);
    assert_eq!(disabled.created_at, created.created_at);
    assert!(disabled.updated_at >= created.updated_at);

    let relabelled = store
        .update_device(
            "acme",
            "Sensor_1.a-b",
            &DevicePatch {
                labels: Some(labels(&[("site", "paris")])),
                attributes: Some(serde_json::Map::new()),
                enabled: None,
            },
        )
        .await?;
    assert_eq!(relabelled.labels, labels(&[("site", "paris")]));
    assert!(relabelled.attributes.is_empty());
    assert!(!relabelled.enabled);
    assert_eq!(store.get_device("acme", "Sensor_1.a-b").await?, relabelled);

    store.delete_device("acme", "Sensor_1.a-b").await?;
    assert!(matches!(
        store.get_device("acme", "Sensor_1.a-b").await,
        Err(Error::NotFound { kind: "device", ref id }) if id == "acme/Sensor_1.a-b"
    ));
    assert!(matches!(
        store.delete_device("acme", "Sensor_1.a-b").await,
        Err(Error::NotFound { kind: "device", .. })
    ));
    assert!(matches!(
        store
            .update_device("acme", "Sensor_1.a-b", &DevicePatch::default())
            .await,
        Err(Error::NotFound { kind: "device", .. })
    ));
    Ok(())
}

async fn device_ids_are_scoped_to_a_tenant(db: &TestDb) -> anyhow::Result<()> {
    let store = acme(db).await?;
    tenant(store, "globex").await?;
    store.create_device("acme", &NewDevice::new("s-1")).await?;
    let err = create_error(store, "acme", "s-1").await;
    assert!(
        matches!(&err, Error::AlreadyExists { kind: "device", id } if id == "acme/s-1"),
        "{err:?}"
    );
    // The same id in another tenant is another device.
    store
        .create_device("globex", &NewDevice::new("s-1"))
        .await?;
    store
        .create_device("globex", &NewDevice::new("s-2"))
        .await?;
    let acme = store
        .list_devices("acme", &DeviceFilter::default(), &Page::default())
        .await?;
    assert_eq!(acme.items.len(), 1);
    assert!(acme.items.iter().all(|d| d.tenant_id == "acme"));
    assert!(matches!(
        store.get_device("acme", "s-2").await,
        Err(Error::NotFound { .. })
    ));
    Ok(())
}

async fn device_in_missing_tenant_is_not_found(db: &TestDb) -> anyhow::Result<()> {
    let store = db.store();
    let err = create_error(store, "ghost", "s-1").await;
    assert!(
        matches!(&err, Error::NotFound { kind: "tenant", id } if id == "ghost"),
        "{err:?}"
    );
    assert!(matches!(
        store
            .list_devices("ghost", &DeviceFilter::default(), &Page::default())
            .await,
        Err(Error::NotFound { kind: "tenant", .. })
    ));
    // An existing tenant with no devices is an empty list, not an error.
    tenant(store, "empty").await?;
    let none = store
        .list_devices("empty", &DeviceFilter::default(), &Page::default())
        .await?;
    assert!(none.items.is_empty() && none.next_cursor.is_none());
    Ok(())
}

async fn invalid_device_ids_are_refused(db: &TestDb) -> anyhow::Result<()> {
    let store = acme(db).await?;
    for bad in ["", "a/b", "a+b", "a#", "a b", "é", &"a".repeat(129)] {
        let err = create_error(store, "acme", bad).await;
        assert!(
            matches!(err, Error::InvalidId { kind: "device", .. }),
            "{bad:?}: {err:?}"
        );
    }
    Ok(())
}

async fn deleting_a_tenant_deletes_its_devices(db: &TestDb) -> anyhow::Result<()> {
    let store = acme(db).await?;
    tenant(store, "globex").await?;
    for i in 0..5 {
        store
            .create_device("acme", &NewDevice::new(format!("d{i}")))
            .await?;
    }
    store.create_device("globex", &NewDevice::new("d0")).await?;
    store.delete_tenant("acme").await?;
    assert!(matches!(
        store.get_device("acme", "d0").await,
        Err(Error::NotFound { .. })
    ));
    // The same id again starts from nothing.
    tenant(store, "acme").await?;
    let list = store
        .list_devices("acme", &DeviceFilter::default(), &Page::default())
        .await?;
    assert!(list.items.is_empty());
    assert_eq!(store.get_device("globex", "d0").await?.id, "d0");
    Ok(())
}

async fn filters_by_enabled_and_labels(db: &TestDb) -> anyhow::Result<()> {
    let store = acme(db).await?;
    type Spec<'a> = (&'a str, &'a [(&'a str, &'a str)], bool);
    let specs: [Spec; 6] = [
        ("a", &[("site", "berlin"), ("kind", "meter")], true),
        ("b", &[("site", "berlin"), ("kind", "valve")], true),
        ("c", &[("site", "paris"), ("kind", "meter")], false),
        ("d", &[("site", "berlin"), ("kind", "meter")], false),
        ("e", &[], true),
        // Keys and values that are awkward in JSON paths and SQL.
        (
            "f",
            &[("a.b", "x\"y"), ("$[0]", "it's"), ("kind", "meter")],
            true,
        ),
    ];
    for (id, l, enabled) in specs {
        let new = NewDevice {
            labels: labels(l),
            enabled,
            ..NewDevice::new(id)
        };
        store.create_device("acme", &new).await?;
    }
    // Another tenant's matching device never shows up.
    tenant(store, "globex").await?;
    let other = NewDevice {
        labels: labels(&[("site", "berlin")]),
        ..NewDevice::new("a")
    };
    store.create_device("globex", &other).await?;

    let ids = |enabled: Option<bool>, l: &[(&str, &str)]| {
        let filter = DeviceFilter {
            enabled,
            labels: labels(l),
            ..DeviceFilter::default()
        };
        device_ids(store, filter)
    };
    assert_eq!(ids(None, &[]).await?, ["a", "b", "c", "d", "e", "f"]);
    assert_eq!(ids(Some(true), &[]).await?, ["a", "b", "e", "f"]);
    assert_eq!(ids(Some(false), &[]).await?, ["c", "d"]);
    assert_eq!(ids(None, &[("site", "berlin")]).await?, ["a", "b", "d"]);
    assert_eq!(
        ids(None, &[("site", "berlin"), ("kind", "meter")]).await?,
        ["a", "d"]
    );
    assert_eq!(
        ids(Some(true), &[("site", "berlin"), ("kind", "meter")]).await?,
        ["a"]
    );
    assert_eq!(ids(None, &[("site", "rome")]).await?, Vec::<String>::new());
    assert_eq!(
        ids(None, &[("SITE", "berlin")]).await?,
        Vec::<String>::new()
    );
    assert_eq!(ids(None, &[("a.b", "x\"y")]).await?, ["f"]);
    assert_eq!(ids(None, &[("$[0]", "it's")]).await?, ["f"]);
    assert_eq!(ids(None, &[("kind", "meter")]).await?, ["a", "c", "d", "f"]);

    // Filters and paging together.
    let filter = DeviceFilter {
        enabled: None,
        labels: labels(&[("kind", "meter")]),
        ..DeviceFilter::default()
    };
    let first = store.list_devices("acme", &filter, &Page::first(3)).await?;
    let ids1: Vec<_> = first.items.iter().map(|d| d.id.as_str()).collect();
    assert_eq!(ids1, ["a", "c", "d"]);
    let rest = store
        .list_devices(
            "acme",
            &filter,
            &Page::after(3, first.next_cursor.expect("one more")),
        )
        .await?;
    let ids2: Vec<_> = rest.items.iter().map(|d| d.id.as_str()).collect();
    assert_eq!(ids2, ["f"]);
    assert_eq!(rest.next_cursor, None);
    Ok(())
}

/// 250 devices read in pages of 7 while 100 more are inserted, some before
/// and some after the cursor: every original device is seen exactly once,
/// in order, and nothing is seen twice.
async fn paging_has_no_gaps_or_duplicates_under_inserts(db: &TestDb) -> anyhow::Result<()> {
    let store = acme(db).await?;
    let originals: BTreeSet<String> = (0..250).map(|i| format!("dev-{i:03}")).collect();
    for id in &originals {
        store.create_device("acme", &NewDevice::new(id)).await?;
    }

    let writer = {
        let store = store.clone();
        tokio::spawn(async move {
            for i in 0..100 {
                // Scattered over the key space: "dev-123-late" sorts right
                // after "dev-123".
                let id = format!("dev-{:03}-late", (i * 37) % 250);
                store.create_device("acme", &NewDevice::new(id)).await?;
                tokio::task::yield_now().await;
            }
            anyhow::Ok(())
        })
    };

    // Besides the writer's, between pages we insert one device just behind
    // the cursor and one just ahead of it: the first must never show up, the
    // second always.
    let (mut behind, mut ahead) = (Vec::new(), Vec::new());
    let mut seen: Vec<String> = Vec::new();
    let mut page = Page::first(7);
    loop {
        let got = store
            .list_devices("acme", &DeviceFilter::default(), &page)
            .await?;
        assert!(got.items.len() <= 7);
        if let Some(last) = got.items.last() {
            let n = behind.len();
            behind.push(format!("dev-000-behind-{n:02}"));
            ahead.push(format!("{}-ahead", last.id));
            for id in [&behind[n], &ahead[n]] {
                store.create_device("acme", &NewDevice::new(id)).await?;
            }
        }
        seen.extend(got.items.into_iter().map(|d| d.id));
        match got.next_cursor {
            Some(cursor) => page = Page::after(7, cursor),
            None => break,
        }
    }
    writer.await??;

    assert!(
        seen.windows(2).all(|w| w[0] < w[1]),
        "in order, no duplicates"
    );
    let seen_originals = seen.iter().filter(|id| originals.contains(*id)).count();
    assert_eq!(seen_originals, 250, "no gaps");
    assert!(behind.iter().all(|id| !seen.contains(id)));
    // The last page's "ahead" device came after the last read.
    let (last_ahead, read_ahead) = ahead.split_last().expect("pages were read");
    assert!(read_ahead.iter().all(|id| seen.contains(id)));
    assert!(!seen.contains(last_ahead));

    let total = store
        .list_devices("acme", &DeviceFilter::default(), &Page::first(1000))
        .await?;
    assert_eq!(total.items.len(), 250 + 100 + 2 * ahead.len());
    Ok(())
}

store::backend_tests!(
    device_crud,
    device_ids_are_scoped_to_a_tenant,
    device_in_missing_tenant_is_not_found,
    invalid_device_ids_are_refused,
    deleting_a_tenant_deletes_its_devices,
    filters_by_enabled_and_labels,
    paging_has_no_gaps_or_duplicates_under_inserts,
);
