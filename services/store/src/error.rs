//! The store's one error type, and the mapping from sqlx errors onto it.
//!
//! Variants are named for what happened and carry ids, never secrets (no
//! URLs, no passwords). The `api` crate maps them once, in its own
//! `error.rs`: `NotFound` → 404, `AlreadyExists` → 409, `InvalidId` /
//! `InvalidCursor` → 400, everything else → 503/500 with detail in the log.

use std::path::PathBuf;

/// Everything that can go wrong in `store`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No row with this key (`kind` is "tenant", "device", …).
    #[error("{kind} {id} not found")]
    NotFound { kind: &'static str, id: String },

    /// A unique key is taken (unique violations on both backends end up here).
    #[error("{kind} {id} already exists")]
    AlreadyExists { kind: &'static str, id: String },

    /// A conditional update found the record changed since the version the
    /// caller read (its `updated_at` differs).
    #[error("{kind} {id} was changed since the version given")]
    Modified { kind: &'static str, id: String },

    /// An id that does not match its pattern (tenant `[a-z0-9-]{3,63}`,
    /// device `[A-Za-z0-9._-]{1,128}`).
    #[error("invalid {kind} id {id:?}: {expected}")]
    InvalidId {
        kind: &'static str,
        id: String,
        expected: &'static str,
    },

    /// A conditional update (`If-Match`) expected another version: someone
    /// changed the document since the caller read it.
    #[error("{kind} {id} is at version {actual}, not {expected}")]
    VersionConflict {
        kind: &'static str,
        id: String,
        expected: i64,
        actual: i64,
    },

    /// A document that is not what its column holds (state documents and
    /// their patches are JSON objects).
    #[error("invalid {kind}: {reason}")]
    InvalidDocument {
        kind: &'static str,
        reason: &'static str,
    },

    /// A paging cursor that this store did not hand out (or for another list).
    #[error("invalid paging cursor")]
    InvalidCursor,

    /// The database URL's scheme is not one we support.
    #[error(
        "unsupported database URL scheme {scheme:?}: use sqlite://PATH, sqlite:PATH, \
         postgres://… or postgresql://…"
    )]
    UnsupportedUrl { scheme: String },

    /// The URL has a supported scheme but sqlx could not parse the rest.
    #[error("invalid database URL: {0}")]
    InvalidUrl(#[source] sqlx::Error),

    /// The SQLite file's directory does not exist (we create the file, never
    /// directories: that is the caller's data dir to make).
    #[error("the directory for the SQLite database does not exist: {}", dir.display())]
    DataDirMissing { dir: PathBuf },

    /// An older fleetmq pointed at a database migrated by a newer one.
    #[error(
        "the database is at schema version {database_version} but this fleetmq knows only up \
         to {binary_version}; upgrade fleetmq (or point it at another database)"
    )]
    DatabaseNewer {
        database_version: i64,
        binary_version: i64,
    },

    /// The database is older than this binary: run `fleetmq migrate`.
    #[error(
        "the database is at schema version {applied} but this fleetmq needs {latest}; \
         run `fleetmq migrate`"
    )]
    MigrationsPending { applied: i64, latest: i64 },

    /// An applied migration's checksum differs from the embedded file.
    #[error(
        "migration {version} was changed after it was applied; restore the original file \
         (see migrations/README.md)"
    )]
    MigrationChanged { version: i64 },

    /// The database has a migration applied that this binary has never heard
    /// of, below our newest one (a build from another branch migrated it).
    #[error(
        "the database has migration {version} applied, which this fleetmq does not know; \
         it was migrated by a different build"
    )]
    MigrationUnknown { version: i64 },

    /// A migration started but did not finish.
    #[error("migration {version} was only partly applied; repair the database by hand")]
    MigrationDirty { version: i64 },

    /// Any other failure of the migrator.
    #[error("migration failed: {0}")]
    Migrate(#[source] sqlx::migrate::MigrateError),

    /// The database cannot be reached (connect, I/O, pool timeout or closed).
    #[error("database unavailable: {0}")]
    Unavailable(#[source] sqlx::Error),

    /// Any other database error (a bug, a corrupt row, a violated check).
    #[error("database error: {0}")]
    Database(#[source] sqlx::Error),
}

impl Error {
    /// No `kind` with this `id`.
    pub(crate) fn not_found(kind: &'static str, id: impl Into<String>) -> Self {
        Error::NotFound {
            kind,
            id: id.into(),
        }
    }

    /// The `kind` with this `id` exists already.
    pub(crate) fn already_exists(kind: &'static str, id: impl Into<String>) -> Self {
        Error::AlreadyExists {
            kind,
            id: id.into(),
        }
    }

    /// The `kind` with this `id` changed since the version given.
    pub(crate) fn modified(kind: &'static str, id: impl Into<String>) -> Self {
        Error::Modified {
            kind,
            id: id.into(),
        }
    }

    /// True when retrying later may help (the database is unreachable or busy).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Error::Unavailable(_))
    }
}

impl From<ids::InvalidId> for Error {
    fn from(e: ids::InvalidId) -> Self {
        let ids::InvalidId { kind, id, expected } = e;
        Error::InvalidId { kind, id, expected }
    }
}

impl From<sqlx::Error> for Error {
    fn from(e: sqlx::Error) -> Self {
        match e {
            sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed => Error::Unavailable(e),
            sqlx::Error::Migrate(m) => Error::from(*m),
            other => Error::Database(other),
        }
    }
}

impl From<sqlx::migrate::MigrateError> for Error {
    fn from(e: sqlx::migrate::MigrateError) -> Self {
        use sqlx::migrate::MigrateError as M;
        match e {
            M::VersionMismatch(version) => Error::MigrationChanged { version },
            M::VersionMissing(version) => Error::MigrationUnknown { version },
            M::Dirty(version) => Error::MigrationDirty { version },
            M::Execute(inner) => Error::from(inner),
            other => Error::Migrate(other),
        }
    }
}

/// Which constraint a failed write hit, if any.
pub(crate) enum Violation {
    Unique,
    ForeignKey,
}

pub(crate) fn violation(e: &sqlx::Error) -> Option<Violation> {
    let db = e.as_database_error()?;
    if db.is_unique_violation() {
        Some(Violation::Unique)
    } else if db.is_foreign_key_violation() {
        Some(Violation::ForeignKey)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_versions_and_the_fix() {
        let e = Error::DatabaseNewer {
            database_version: 7,
            binary_version: 5,
        };
        assert_eq!(
            e.to_string(),
            "the database is at schema version 7 but this fleetmq knows only up to 5; \
             upgrade fleetmq (or point it at another database)"
        );
        let e = Error::MigrationChanged { version: 3 };
        assert!(
            e.to_string()
                .starts_with("migration 3 was changed after it was applied")
        );
    }

    #[test]
    fn connection_failures_are_unavailable() {
        assert!(Error::from(sqlx::Error::PoolTimedOut).is_unavailable());
        assert!(!Error::from(sqlx::Error::RowNotFound).is_unavailable());
    }

    #[test]
    fn migrator_errors_map_to_named_variants() {
        use sqlx::migrate::MigrateError as M;
        assert!(matches!(
            Error::from(M::VersionMismatch(2)),
            Error::MigrationChanged { version: 2 }
        ));
        assert!(matches!(
            Error::from(sqlx::Error::Migrate(Box::new(M::Dirty(4)))),
            Error::MigrationDirty { version: 4 }
        ));
    }
}
