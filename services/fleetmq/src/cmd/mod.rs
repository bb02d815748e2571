//! One file per subcommand.

pub mod admin;
pub mod migrate;
pub mod serve;

use crate::error::Error;

/// Opens the database and brings its schema up to date; refuses a database
/// written by a newer fleetmq (the store's error says so).
pub(crate) async fn open_and_migrate(
    url: &str,
) -> Result<(store::Store, store::MigrationStatus), Error> {
    let store = store::Store::open(url)
        .await
        .map_err(|e| Error::store(url, e))?;
    match store.migrate().await {
        Ok(status) => Ok((store, status)),
        Err(e) => {
            store.close().await;
            Err(Error::store(url, e))
        }
    }
}

pub(crate) fn runtime() -> Result<tokio::runtime::Runtime, Error> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("fleetmq")
        .build()
        .map_err(Error::Runtime)
}
