//! What the state benches share.

use store::Backend;
use store::testing::TestDb;

/// The runtime every bench runs on: two workers, as on the CI machine.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// A fresh, migrated database on `backend` with tenant `bench` in it;
/// `None` when that backend is not configured.
pub async fn fresh_db(backend: Backend) -> Option<TestDb> {
    let db = TestDb::new(backend, true).await?;
    db.with_tenant("bench").await;
    Some(db)
}
