//! Test databases (feature `testing`): a fresh, migrated [`Store`] per test
//! on every available backend, dropped afterwards.
//!
//! - SQLite always: a new file in a new temporary directory.
//! - Postgres when `TEST_DATABASE_URL` (or else `DATABASE_URL`) is a
//!   `postgres://` URL: `CREATE DATABASE fleetmq_test_<uuid>` through that
//!   URL, dropped `WITH (FORCE)` by [`TestDb::cleanup`] or, if the test
//!   panicked, on drop. Tests therefore run in parallel. When neither
//!   variable is set, Postgres tests pass after printing one line saying they
//!   were skipped.
//!
//! Three ways to use it from another crate's tests (add
//! `store = { workspace = true, features = ["testing"] }` to its
//! `[dev-dependencies]`):
//!
//! ```ignore
//! // 1. One test function per backend: `tenant_crud::sqlite`, `tenant_crud::postgres`.
//! async fn tenant_crud(db: &TestDb) -> anyhow::Result<()> { /* db.store() */ Ok(()) }
//! store::backend_tests!(tenant_crud);
//!
//! // 2. One test, looping over the backends.
//! #[tokio::test]
//! async fn works_everywhere() {
//!     store::testing::for_each_backend(|store| async move { /* … */ }).await;
//! }
//!
//! // 3. By hand.
//! let db = TestDb::sqlite().await;
//! let store = db.store().clone();
//! db.cleanup().await;
//! ```

// This module is test support: a failed setup must fail the test, loudly.
#![allow(clippy::expect_used, clippy::panic)]

use std::fmt::Debug;
use std::future::Future;
use std::sync::Once;

use sqlx::{AssertSqlSafe, Connection, PgConnection};

use crate::{Backend, Error, NewTenant, Store};

/// Where the admin connection for Postgres test databases comes from, in
/// order of preference.
pub const POSTGRES_URL_VARS: [&str; 2] = ["TEST_DATABASE_URL", "DATABASE_URL"];

/// A database that exists for one test.
pub struct TestDb {
    store: Store,
    url: String,
    place: Place,
    cleaned_up: bool,
}

enum Place {
    /// Dropping the directory deletes the database, WAL and shm files.
    Sqlite {
        _dir: tempfile::TempDir,
    },
    Postgres {
        admin_url: String,
        name: String,
    },
}

impl TestDb {
    /// A migrated SQLite database in a fresh temporary directory.
    pub async fn sqlite() -> TestDb {
        Self::create_sqlite(true).await
    }

    /// Like [`TestDb::sqlite`], without running migrations.
    pub async fn sqlite_unmigrated() -> TestDb {
        Self::create_sqlite(false).await
    }

    /// A migrated Postgres database of its own, or `None` (after saying so
    /// once) when no Postgres URL is configured.
    pub async fn postgres() -> Option<TestDb> {
        Self::create_postgres(true).await
    }

    /// Like [`TestDb::postgres`], without running migrations.
    pub async fn postgres_unmigrated() -> Option<TestDb> {
        Self::create_postgres(false).await
    }

    /// A database on `backend`; `None` only for Postgres when unconfigured.
    pub async fn new(backend: Backend, migrated: bool) -> Option<TestDb> {
        match backend {
            Backend::Sqlite => Some(Self::create_sqlite(migrated).await),
            Backend::Postgres => Self::create_postgres(migrated).await,
        }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Creates tenant `id`, named after itself, the fixture most tests
    /// start from; returns the store.
    pub async fn with_tenant(&self, id: &str) -> &Store {
        let tenant = NewTenant {
            id: id.into(),
            name: id.into(),
        };
        self.store
            .create_tenant(&tenant)
            .await
            .expect("create the test tenant");
        &self.store
    }

    /// Every event in the webhook outbox, oldest first, fanned out or not.
    pub async fn outbox(&self) -> Vec<crate::OutboxEvent> {
        self.store
            .outbox_events()
            .await
            .expect("read the webhook outbox")
    }

    /// The database URL, for opening a second `Store` on the same database.
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn backend(&self) -> Backend {
        self.store.backend()
    }

    /// Run one statement that the repositories would not, such as faking a
    /// migration row. `'static` SQL only: no values spliced in.
    pub async fn execute(&self, sql: &'static str) -> Result<u64, Error> {
        self.store.execute_raw(sql).await
    }

    /// Close the store and delete the database. Prefer this to relying on
    /// drop: it runs on the test's own runtime.
    pub async fn cleanup(mut self) {
        self.cleaned_up = true;
        self.store.close().await;
        if let Place::Postgres { admin_url, name } = &self.place {
            drop_database(admin_url, name).await;
        }
    }

    async fn create_sqlite(migrated: bool) -> TestDb {
        let dir = tempfile::Builder::new()
            .prefix("fleetmq-test-")
            .tempdir()
            .expect("create a temporary directory");
        let url = crate::sqlite_url(&dir.path().join("fleetmq.db"));
        let store = open(&url, migrated).await;
        TestDb {
            store,
            url,
            place: Place::Sqlite { _dir: dir },
            cleaned_up: false,
        }
    }

    async fn create_postgres(migrated: bool) -> Option<TestDb> {
        let admin_url = postgres_admin_url()?;
        let name = format!("fleetmq_test_{}", uuid::Uuid::new_v4().simple());
        let mut admin = PgConnection::connect(&admin_url).await.unwrap_or_else(|e| {
            panic!(
                "postgres test database: cannot connect to {}: {e}",
                crate::redact_url(&admin_url)
            )
        });
        // `name` is ours (a prefix and hex digits), so splicing it is safe.
        sqlx::query(AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
            .execute(&mut admin)
            .await
            .unwrap_or_else(|e| panic!("postgres test database: CREATE DATABASE {name}: {e}"));
        let _ = admin.close().await;

        let mut url = url::Url::parse(&admin_url).expect("a postgres URL parses");
        url.set_path(&format!("/{name}"));
        let url = url.to_string();
        // From here on, a panic drops `db` and with it the database.
        let db = TestDb {
            store: open(&url, false).await,
            url,
            place: Place::Postgres { admin_url, name },
            cleaned_up: false,
        };
        if migrated {
            db.store.migrate().await.expect("migrate the test database");
        }
        Some(db)
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if self.cleaned_up {
            return;
        }
        if let Place::Postgres { admin_url, name } = &self.place {
            // No runtime to await on in `drop` (we may be unwinding out of
            // one): drop the database from a thread with its own.
            let (admin_url, name) = (admin_url.clone(), name.clone());
            let dropper = std::thread::spawn(move || {
                match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt.block_on(drop_database(&admin_url, &name)),
                    Err(e) => eprintln!("test database {name} not dropped: {e}"),
                }
            });
            let _ = dropper.join();
        }
    }
}

async fn open(url: &str, migrated: bool) -> Store {
    let store = Store::open(url).await.expect("open the test database");
    if migrated {
        store.migrate().await.expect("migrate the test database");
    }
    store
}

async fn drop_database(admin_url: &str, name: &str) {
    let result = async {
        let mut admin = PgConnection::connect(admin_url).await?;
        sqlx::query(AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
        )))
        .execute(&mut admin)
        .await?;
        admin.close().await
    }
    .await;
    if let Err(e) = result {
        // Not a test failure: the test itself is what matters.
        eprintln!("test database {name} not dropped: {e}");
    }
}

/// The Postgres URL tests create their databases through, if configured.
/// Prints once per process why Postgres tests are skipped otherwise.
pub fn postgres_admin_url() -> Option<String> {
    static SKIPPED: Once = Once::new();
    for var in POSTGRES_URL_VARS {
        if let Ok(url) = std::env::var(var)
            && !url.is_empty()
        {
            if matches!(Backend::from_url(&url), Ok(Backend::Postgres)) {
                return Some(url);
            }
            SKIPPED.call_once(|| {
                eprintln!("postgres conformance: skipped ({var} is not a postgres:// URL)");
            });
            return None;
        }
    }
    SKIPPED.call_once(|| {
        eprintln!(
            "postgres conformance: skipped (set TEST_DATABASE_URL or DATABASE_URL to run it)"
        );
    });
    None
}

/// Run `test` on a fresh migrated database on each available backend in
/// turn (SQLite, then Postgres if configured), cleaning up after each.
/// Panics, naming the backend, if `test` returns an error.
pub async fn for_each_backend<F, Fut>(mut test: F)
where
    F: FnMut(Store) -> Fut,
    Fut: Future,
    Fut::Output: TestOutcome,
{
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let Some(db) = TestDb::new(backend, true).await else {
            continue;
        };
        let outcome = test(db.store().clone()).await;
        db.cleanup().await;
        outcome.check(backend);
    }
}

/// What a test body may return: `()` or a `Result` whose `Err` fails it.
pub trait TestOutcome {
    fn check(self, backend: Backend);
}

impl TestOutcome for () {
    fn check(self, _: Backend) {}
}

impl<T, E: Debug> TestOutcome for Result<T, E> {
    fn check(self, backend: Backend) {
        if let Err(e) = self {
            panic!("failed on {backend}: {e:?}");
        }
    }
}

/// One `#[tokio::test]` per backend for each named `async fn(&TestDb) ->
/// () | Result<_, _>`: `name::sqlite` and `name::postgres` (which passes,
/// after saying so, when Postgres is not configured). Prefix the list with
/// `unmigrated:` to get databases with no migrations applied.
///
/// The calling crate needs `tokio` with the `macros` and `rt-multi-thread`
/// features.
#[macro_export]
macro_rules! backend_tests {
    (unmigrated: $($name:ident),+ $(,)?) => {
        $( $crate::backend_tests!(@one $name, false); )+
    };
    ($($name:ident),+ $(,)?) => {
        $( $crate::backend_tests!(@one $name, true); )+
    };
    (@one $name:ident, $migrated:expr) => {
        mod $name {
            #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                $crate::testing::run_on($crate::Backend::Sqlite, $migrated, |db| {
                    ::std::boxed::Box::pin(super::$name(db))
                })
                .await;
            }

            #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                $crate::testing::run_on($crate::Backend::Postgres, $migrated, |db| {
                    ::std::boxed::Box::pin(super::$name(db))
                })
                .await;
            }
        }
    };
}

/// The body of each test that [`backend_tests!`] generates.
#[doc(hidden)]
pub async fn run_on<R: TestOutcome>(
    backend: Backend,
    migrated: bool,
    test: impl for<'a> FnOnce(&'a TestDb) -> std::pin::Pin<Box<dyn Future<Output = R> + 'a>>,
) {
    let Some(db) = TestDb::new(backend, migrated).await else {
        return;
    };
    let outcome = test(&db).await;
    db.cleanup().await;
    outcome.check(backend);
}
