//! Conformance suite: the same repository tests on every backend.
//!
//! Each test below runs as `name::sqlite` (always) and `name::postgres`
//! (when TEST_DATABASE_URL or DATABASE_URL is set), each on a fresh database
//! of its own; see `store::testing`.

// A test crate: clippy's allow-*-in-tests covers only `#[test]` functions,
// and most of these bodies are helpers that `backend_tests!` wraps.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod api_auth;
mod audit;
mod change_events;
mod devices;
mod migrations;
mod pki;
mod platform_access;
mod presence_settings;
mod publish_limits;
mod rest_lookups;
mod session_queue;
mod sessions;
mod sqlite;
mod state;
mod tenants;
mod webhooks;

use store::testing::TestDb;
use store::{DeviceFilter, NewTenant, Page, Store, Tenant};

/// The test's store with tenant "acme" in it, where most tests start.
async fn acme(db: &TestDb) -> anyhow::Result<&Store> {
    tenant(db.store(), "acme").await?;
    Ok(db.store())
}

/// The ids of acme's devices that `filter` selects, in order.
async fn device_ids(store: &Store, filter: DeviceFilter) -> anyhow::Result<Vec<String>> {
    let page = store
        .list_devices("acme", &filter, &Page::default())
        .await?;
    Ok(page.items.into_iter().map(|d| d.id).collect())
}

/// Assert that `change` fails; what the failure was is the caller's to check
/// where it matters.
async fn assert_fails<T: std::fmt::Debug>(change: impl Future<Output = Result<T, store::Error>>) {
    let result = change.await;
    assert!(result.is_err(), "expected an error, got {result:?}");
}

/// What `field` takes from each item that `list` returns, in order.
async fn listed<T, F>(
    list: impl Future<Output = Result<Vec<T>, store::Error>>,
    field: impl FnMut(T) -> F,
) -> anyhow::Result<Vec<F>> {
    Ok(list.await?.into_iter().map(field).collect())
}

/// Create tenant `id` named after itself.
async fn tenant(store: &Store, id: &str) -> anyhow::Result<Tenant> {
    Ok(store
        .create_tenant(&NewTenant {
            id: id.into(),
            name: format!("Tenant {id}"),
        })
        .await?)
}
