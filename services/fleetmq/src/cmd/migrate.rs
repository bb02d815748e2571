//! `fleetmq migrate`: apply pending migrations and exit.

use crate::cli::StorageArgs;
use crate::datadir::DataDir;
use crate::error::Error;
use crate::{config, telemetry};

pub fn run(args: StorageArgs) -> Result<(), Error> {
    let config = config::resolve_storage(&args)?;
    telemetry::init(config.log_format)?;
    super::runtime()?.block_on(async {
        // The embedded database lives in the data dir: take its lock so a
        // running server and this command never write one SQLite file at once.
        // A database elsewhere (Postgres) is migrated while servers run.
        let _data_dir = match config.database_url {
            None => Some(DataDir::open(&config.data_dir)?),
            Some(_) => None,
        };
        let url = config.effective_database_url();
        let (store, status) = super::open_and_migrate(&url).await?;
        println!(
            "fleetmq: database {} ({}) is at schema version {}; {} migration(s) applied now",
            store::redact_url(&url),
            store.backend(),
            status.applied,
            status.newly_applied
        );
        store.close().await;
        Ok(())
    })
}
