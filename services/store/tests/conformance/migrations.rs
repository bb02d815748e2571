//! Migrations: apply, re-apply, refuse newer and edited schemas.

use store::testing::TestDb;
use store::{Backend, Error, MigrationStatus, Store};

async fn migrate_twice_is_a_noop(db: &TestDb) -> anyhow::Result<()> {
    let store = db.store();
    let latest = store.latest_known_version();
    assert!(latest >= 1);
    let before = store.migration_status().await?;
    assert_eq!(
        before,
        MigrationStatus {
            applied: 0,
            latest_known: latest,
            newly_applied: 0
        }
    );
    assert!(!before.is_current());

    let first = store.migrate().await?;
    assert_eq!(first.applied, latest);
    assert!(first.newly_applied >= 1);
    assert!(first.is_current());

    let second = store.migrate().await?;
    assert_eq!(
        second,
        MigrationStatus {
            applied: latest,
            latest_known: latest,
            newly_applied: 0
        }
    );
    assert_eq!(store.migration_status().await?, second);
    Ok(())
}

async fn check_ready_reports_pending_migrations(db: &TestDb) -> anyhow::Result<()> {
    let store = db.store();
    let latest = store.latest_known_version();
    match store.check_ready().await {
        Err(Error::MigrationsPending { applied, latest: l }) => {
            assert_eq!((applied, l), (0, latest));
        }
        other => panic!("expected MigrationsPending, got {other:?}"),
    }
    store.migrate().await?;
    store.check_ready().await?;
    Ok(())
}

async fn open_does_not_migrate(db: &TestDb) -> anyhow::Result<()> {
    let again = Store::open(db.url()).await?;
    assert_eq!(again.backend(), db.backend());
    assert_eq!(again.migration_status().await?.applied, 0);
    again.close().await;
    Ok(())
}

async fn concurrent_migrations_agree(db: &TestDb) -> anyhow::Result<()> {
    let other = Store::open(db.url()).await?;
    let (a, b) = tokio::join!(db.store().migrate(), other.migrate());
    let (a, b) = (a?, b?);
    assert!(a.is_current() && b.is_current());
    // Versions need not be contiguous (numbers are assigned per feature
    // branch), so count the migration files rather than trust the newest.
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../migrations/sqlite");
    let migrations = std::fs::read_dir(dir)?
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "sql"))
        })
        .count();
    assert_eq!(a.newly_applied + b.newly_applied, migrations);
    other.close().await;
    Ok(())
}

store::backend_tests!(
    unmigrated: migrate_twice_is_a_noop,
    check_ready_reports_pending_migrations,
    open_does_not_migrate,
    concurrent_migrations_agree,
);

async fn newer_database_is_refused(db: &TestDb) -> anyhow::Result<()> {
    let store = db.store();
    let latest = store.latest_known_version();
    db.execute(match db.backend() {
        Backend::Sqlite => {
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
             VALUES (999999, 'from the future', TRUE, X'00', 0)"
        }
        Backend::Postgres => {
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
             VALUES (999999, 'from the future', TRUE, '\\x00'::bytea, 0)"
        }
    })
    .await?;

    let err = store
        .migrate()
        .await
        .expect_err("a newer database is refused");
    assert!(
        matches!(
            err,
            Error::DatabaseNewer { database_version: 999999, binary_version } if binary_version == latest
        ),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        format!(
            "the database is at schema version 999999 but this fleetmq knows only up to {latest}; \
             upgrade fleetmq (or point it at another database)"
        )
    );
    assert!(matches!(
        store.check_ready().await,
        Err(Error::DatabaseNewer { .. })
    ));
    // Reported, not refused, by the read-only status.
    let status = store.migration_status().await?;
    assert_eq!((status.applied, status.latest_known), (999999, latest));
    assert!(!status.is_current());
    Ok(())
}

async fn edited_migration_is_named(db: &TestDb) -> anyhow::Result<()> {
    db.execute(match db.backend() {
        Backend::Sqlite => "UPDATE _sqlx_migrations SET checksum = X'00' WHERE version = 1",
        Backend::Postgres => {
            "UPDATE _sqlx_migrations SET checksum = '\\x00'::bytea WHERE version = 1"
        }
    })
    .await?;
    let err = db
        .store()
        .migrate()
        .await
        .expect_err("an edited migration is refused");
    assert!(
        matches!(err, Error::MigrationChanged { version: 1 }),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .starts_with("migration 1 was changed after it was applied")
    );
    assert!(matches!(
        db.store().check_ready().await,
        Err(Error::MigrationChanged { version: 1 })
    ));
    Ok(())
}

async fn ready_when_current(db: &TestDb) -> anyhow::Result<()> {
    db.store().check_ready().await?;
    assert!(db.store().migration_status().await?.is_current());
    Ok(())
}

async fn closed_store_is_unavailable(db: &TestDb) -> anyhow::Result<()> {
    let other = Store::open(db.url()).await?;
    other.close().await;
    let err = other.check_ready().await.expect_err("closed");
    assert!(err.is_unavailable(), "{err:?}");
    Ok(())
}

store::backend_tests!(
    newer_database_is_refused,
    edited_migration_is_named,
    ready_when_current,
    closed_store_is_unavailable,
);

#[tokio::test]
async fn unsupported_urls_say_which_schemes_work() {
    for url in ["mysql://db/x", "./fleetmq.db", "http://x"] {
        let err = Store::open(url).await.expect_err(url);
        assert!(
            matches!(err, Error::UnsupportedUrl { .. }),
            "{url}: {err:?}"
        );
        let msg = err.to_string();
        assert!(
            msg.contains("sqlite://") && msg.contains("postgres://"),
            "{msg}"
        );
    }
}

#[tokio::test]
async fn unreachable_postgres_is_unavailable() {
    // Port 1 on loopback: nothing listens there.
    let err = Store::open("postgres://fleet:s3cret@127.0.0.1:1/x")
        .await
        .expect_err("nothing listens on port 1");
    assert!(err.is_unavailable(), "{err:?}");
    assert!(!err.to_string().contains("s3cret"));
}

#[tokio::test]
async fn for_each_backend_runs_on_every_configured_backend() {
    let mut ran = Vec::new();
    store::testing::for_each_backend(|store| {
        ran.push(store.backend());
        async move {
            store.check_ready().await?;
            super::tenant(&store, "acme").await?;
            anyhow::Ok(())
        }
    })
    .await;
    let mut expected = vec![Backend::Sqlite];
    if store::testing::postgres_admin_url().is_some() {
        expected.push(Backend::Postgres);
    }
    assert_eq!(ran, expected);
}

#[tokio::test]
async fn test_databases_are_removed_even_without_cleanup() -> anyhow::Result<()> {
    let db = TestDb::sqlite().await;
    let file = std::path::PathBuf::from(db.url().trim_start_matches("sqlite://"));
    assert!(file.exists());
    drop(db);
    assert!(!file.exists());

    let Some(admin_url) = store::testing::postgres_admin_url() else {
        return Ok(());
    };
    let db = TestDb::postgres().await.expect("configured");
    let name = url::Url::parse(db.url())?
        .path()
        .trim_start_matches('/')
        .to_owned();
    let exists = async |name: &str| -> anyhow::Result<bool> {
        use sqlx::Connection;
        let mut admin = sqlx::PgConnection::connect(&admin_url).await?;
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM pg_database WHERE datname = $1")
            .bind(name)
            .fetch_one(&mut admin)
            .await?;
        admin.close().await?;
        Ok(n == 1)
    };
    assert!(exists(&name).await?);
    drop(db); // as when a test panics: no cleanup().await
    assert!(!exists(&name).await?);
    Ok(())
}
