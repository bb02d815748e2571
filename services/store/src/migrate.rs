//! Schema migrations: embedded from `/migrations/{sqlite,postgres}`, recorded
//! by sqlx in `_sqlx_migrations`, applied by [`Store::migrate`].
//!
//! We read `_sqlx_migrations` ourselves before running the migrator, to turn
//! the cases an operator meets into named errors: a database newer than the
//! binary (`DatabaseNewer`, which sqlx would call "missing in the resolved
//! migrations"), an edited migration (`MigrationChanged`), a half-applied one
//! (`MigrationDirty`).

use std::time::Duration;

use serde::Serialize;
use sqlx::Connection;
use sqlx::migrate::Migrator;

use crate::store::Pool;
use crate::{Backend, Error, Store};

static SQLITE_MIGRATOR: Migrator = sqlx::migrate!("../../migrations/sqlite");
static POSTGRES_MIGRATOR: Migrator = sqlx::migrate!("../../migrations/postgres");

/// Serializes `migrate` on SQLite within this process (see `migrate`).
static SQLITE_MIGRATE_LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The Postgres advisory lock `migrate` holds ("fleetmq" in ASCII). sqlx's
/// migrator takes its own, different, lock inside ours.
const POSTGRES_MIGRATE_LOCK_KEY: i64 = 0x0066_6c65_6574_6d71;

/// `check_ready` gives up after this long: a readiness probe must answer.
const READY_TIMEOUT: Duration = Duration::from_secs(5);

/// Where the database's schema stands relative to this binary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct MigrationStatus {
    /// The highest applied version, 0 if none.
    pub applied: i64,
    /// The highest version this binary knows.
    pub latest_known: i64,
    /// How many migrations this call applied (0 for `migration_status`).
    pub newly_applied: usize,
}

impl MigrationStatus {
    /// The schema is exactly what this binary expects.
    pub fn is_current(&self) -> bool {
        self.applied == self.latest_known
    }

    /// `Ok` if current; `MigrationsPending` or `DatabaseNewer` otherwise.
    pub fn ensure_current(&self) -> Result<(), Error> {
        match self.applied.cmp(&self.latest_known) {
            std::cmp::Ordering::Equal => Ok(()),
            std::cmp::Ordering::Less => Err(Error::MigrationsPending {
                applied: self.applied,
                latest: self.latest_known,
            }),
            std::cmp::Ordering::Greater => Err(Error::DatabaseNewer {
                database_version: self.applied,
                binary_version: self.latest_known,
            }),
        }
    }
}

/// One row of `_sqlx_migrations`.
#[derive(Debug, sqlx::FromRow)]
struct AppliedMigration {
    version: i64,
    checksum: Vec<u8>,
    success: bool,
}

impl Store {
    fn migrator(&self) -> &'static Migrator {
        match self.backend() {
            Backend::Sqlite => &SQLITE_MIGRATOR,
            Backend::Postgres => &POSTGRES_MIGRATOR,
        }
    }

    /// The highest migration version this binary carries for this backend.
    pub fn latest_known_version(&self) -> i64 {
        latest_version(self.migrator())
    }

    /// Apply pending migrations. Refuses a database migrated by a newer
    /// fleetmq (`DatabaseNewer`) or whose applied migrations were edited
    /// (`MigrationChanged`). Safe to run concurrently from several nodes on
    /// Postgres (an advisory lock serializes them). Running it twice is a no-op.
    #[tracing::instrument(name = "store_migrate", skip_all, fields(backend = %self.backend()))]
    pub async fn migrate(&self) -> Result<MigrationStatus, Error> {
        // Hold our own lock around the whole read-migrate-read, so that
        // `newly_applied` counts only what this call applied even when
        // several nodes migrate at once.
        match &self.pool {
            Pool::Sqlite(_) => {
                // sqlx takes no lock on SQLite; this covers several stores
                // in one process. (One SQLite file, one fleetmq process.)
                let _guard = SQLITE_MIGRATE_LOCK.lock().await;
                self.migrate_locked().await
            }
            Pool::Postgres(pool) => {
                // A connection of its own, detached from the pool: if this
                // future is dropped mid-way, the connection closes and the
                // session lock goes with it instead of returning to the pool.
                let mut conn = pool.acquire().await?.detach();
                sqlx::query("SELECT pg_advisory_lock($1)")
                    .bind(POSTGRES_MIGRATE_LOCK_KEY)
                    .execute(&mut conn)
                    .await?;
                let result = self.migrate_locked().await;
                // Closing ends the session, which releases the lock.
                if let Err(e) = conn.close().await {
                    tracing::warn!(error = %e, "closing the migration lock connection");
                }
                result
            }
        }
    }

    async fn migrate_locked(&self) -> Result<MigrationStatus, Error> {
        let before = self.applied_migrations().await?;
        let status = self.status_from(&before)?;
        if status.applied > status.latest_known {
            return Err(Error::DatabaseNewer {
                database_version: status.applied,
                binary_version: status.latest_known,
            });
        }
        match &self.pool {
            Pool::Sqlite(pool) => SQLITE_MIGRATOR.run(pool).await?,
            Pool::Postgres(pool) => POSTGRES_MIGRATOR.run(pool).await?,
        }
        let after = self.applied_migrations().await?;
        let status = MigrationStatus {
            newly_applied: after.len().saturating_sub(before.len()),
            ..self.status_from(&after)?
        };
        if status.newly_applied > 0 {
            tracing::info!(
                from = before.iter().map(|m| m.version).max().unwrap_or(0),
                to = status.applied,
                newly_applied = status.newly_applied,
                "database migrated"
            );
        } else {
            tracing::debug!(version = status.applied, "database already current");
        }
        Ok(status)
    }

    /// Where the schema stands, without changing anything. A database newer
    /// than this binary is reported (`applied > latest_known`), not refused;
    /// an edited or half-applied migration is an error.
    pub async fn migration_status(&self) -> Result<MigrationStatus, Error> {
        let applied = self.applied_migrations().await?;
        self.status_from(&applied)
    }

    /// For `/readyz`: the database answers, and its schema is current
    /// (`MigrationsPending` / `DatabaseNewer` otherwise). Two small queries.
    pub async fn check_ready(&self) -> Result<(), Error> {
        match tokio::time::timeout(READY_TIMEOUT, self.migration_status()).await {
            Ok(status) => status?.ensure_current(),
            Err(_elapsed) => Err(Error::Unavailable(sqlx::Error::PoolTimedOut)),
        }
    }

    fn status_from(&self, applied: &[AppliedMigration]) -> Result<MigrationStatus, Error> {
        let migrator = self.migrator();
        let latest_known = latest_version(migrator);
        for row in applied {
            if row.version > latest_known {
                // From a newer binary: reported through `applied` below.
                continue;
            }
            let known = migrator
                .iter()
                .find(|m| m.version == row.version && m.migration_type.is_up_migration());
            match known {
                None => {
                    return Err(Error::MigrationUnknown {
                        version: row.version,
                    });
                }
                Some(_) if !row.success => {
                    return Err(Error::MigrationDirty {
                        version: row.version,
                    });
                }
                Some(m) if *m.checksum != *row.checksum => {
                    return Err(Error::MigrationChanged {
                        version: row.version,
                    });
                }
                Some(_) => {}
            }
        }
        Ok(MigrationStatus {
            applied: applied.iter().map(|m| m.version).max().unwrap_or(0),
            latest_known,
            newly_applied: 0,
        })
    }

    /// The rows of `_sqlx_migrations`, or none if the table does not exist yet.
    async fn applied_migrations(&self) -> Result<Vec<AppliedMigration>, Error> {
        let exists: bool = match &self.pool {
            Pool::Sqlite(pool) => {
                sqlx::query_scalar(
                    "SELECT COUNT(*) > 0 FROM sqlite_master \
                     WHERE type = 'table' AND name = '_sqlx_migrations'",
                )
                .fetch_one(pool)
                .await?
            }
            Pool::Postgres(pool) => {
                sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations') IS NOT NULL")
                    .fetch_one(pool)
                    .await?
            }
        };
        if !exists {
            return Ok(Vec::new());
        }
        const SQL: &str =
            "SELECT version, checksum, success FROM _sqlx_migrations ORDER BY version";
        let rows = sql!(self, fetch_all as AppliedMigration => SQL)?;
        Ok(rows)
    }
}

fn latest_version(migrator: &Migrator) -> i64 {
    migrator
        .iter()
        .filter(|m| m.migration_type.is_up_migration())
        .map(|m| m.version)
        .max()
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_backends_know_the_same_versions() {
        let versions = |m: &Migrator| {
            m.iter()
                .map(|m| (m.version, m.description.to_string()))
                .collect::<Vec<_>>()
        };
        assert_eq!(versions(&SQLITE_MIGRATOR), versions(&POSTGRES_MIGRATOR));
        assert!(latest_version(&SQLITE_MIGRATOR) >= 1);
    }

    #[test]
    fn ensure_current_names_the_direction() {
        let s = |applied| MigrationStatus {
            applied,
            latest_known: 2,
            newly_applied: 0,
        };
        assert!(s(2).ensure_current().is_ok() && s(2).is_current());
        assert!(matches!(
            s(1).ensure_current(),
            Err(Error::MigrationsPending {
                applied: 1,
                latest: 2
            })
        ));
        assert!(matches!(
            s(3).ensure_current(),
            Err(Error::DatabaseNewer {
                database_version: 3,
                binary_version: 2
            })
        ));
    }
}
