//! SQLite specifics: the file, WAL, and shutdown.

use sqlx::{Connection, SqliteConnection};
use store::testing::TestDb;
use store::{Backend, Error, Store, sqlite_url};

#[tokio::test]
async fn open_creates_the_file_but_not_its_directory() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("fleetmq.db");
    let store = Store::open(&sqlite_url(&file)).await?;
    assert_eq!(store.backend(), Backend::Sqlite);
    assert_eq!(store.backend().to_string(), "sqlite");
    assert!(file.exists());
    store.close().await;

    let missing = dir.path().join("no-such-dir").join("fleetmq.db");
    let err = Store::open(&sqlite_url(&missing))
        .await
        .expect_err("no dir");
    assert!(matches!(err, Error::DataDirMissing { .. }), "{err:?}");
    assert!(!missing.parent().unwrap().exists());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_colon_form_and_memory_work() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("plain.db");
    let store = Store::open(&format!("sqlite:{}", file.display())).await?;
    store.migrate().await?;
    store.check_ready().await?;
    store.close().await;
    assert!(file.exists());

    // An in-memory database lives as long as the pool: migrations and data
    // must be visible from every pooled connection.
    let mem = Store::open("sqlite::memory:").await?;
    mem.migrate().await?;
    super::tenant(&mem, "acme").await?;
    let reads: Vec<_> = (0..8)
        .map(|_| {
            let mem = mem.clone();
            tokio::spawn(async move { mem.get_tenant("acme").await })
        })
        .collect();
    for read in reads {
        assert_eq!(read.await??.id, "acme");
    }
    mem.close().await;
    Ok(())
}

#[tokio::test]
async fn wal_mode_is_on() -> anyhow::Result<()> {
    let db = TestDb::sqlite().await;
    // WAL is a property of the file: a connection of our own sees it.
    let mut conn = SqliteConnection::connect(db.url()).await?;
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(&mut conn)
        .await?;
    assert_eq!(mode, "wal");
    conn.close().await?;
    db.cleanup().await;
    Ok(())
}

#[tokio::test]
async fn close_checkpoints_the_wal() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("fleetmq.db");
    let store = Store::open(&sqlite_url(&file)).await?;
    store.migrate().await?;
    for i in 0..20 {
        super::tenant(&store, &format!("tenant-{i:02}")).await?;
    }
    let wal = dir.path().join("fleetmq.db-wal");
    assert!(wal.exists(), "writes go to the WAL first");
    store.close().await;
    let wal_len = std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
    assert_eq!(wal_len, 0, "the WAL is checkpointed and removed on close");

    // And everything is in the main file.
    let again = Store::open(&sqlite_url(&file)).await?;
    let all = again.list_tenants(&store::Page::first(100)).await?;
    assert_eq!(all.items.len(), 20);
    again.close().await;
    Ok(())
}
