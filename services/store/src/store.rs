//! [`Store`]: opening, identifying and closing the database, whichever it is.

use std::fmt;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::Connection;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteSynchronous,
};

use crate::Error;

/// Where `fleetmq serve` keeps its database when given no URL.
pub const DEFAULT_SQLITE_URL: &str = "sqlite://./fleetmq-data/fleetmq.db";

/// How long a SQLite write waits for another writer before failing.
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a caller waits for a pooled connection before `Unavailable`.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);
/// SQLite readers run in parallel under WAL; there is only ever one writer.
const SQLITE_MAX_CONNECTIONS: u32 = 8;
const POSTGRES_MAX_CONNECTIONS: u32 = 10;

/// Which database a [`Store`] talks to; chosen at runtime from the URL scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        })
    }
}

impl Backend {
    /// The backend a database URL names: `sqlite://…`/`sqlite:…` or
    /// `postgres://…`/`postgresql://…`.
    pub fn from_url(url: &str) -> Result<Backend, Error> {
        let scheme = url.split_once(':').map_or("", |(scheme, _)| scheme);
        match scheme.to_ascii_lowercase().as_str() {
            "sqlite" => Ok(Backend::Sqlite),
            "postgres" | "postgresql" => Ok(Backend::Postgres),
            _ => Err(Error::UnsupportedUrl {
                scheme: printable_scheme(scheme),
            }),
        }
    }
}

/// The scheme as it may appear in an error: only if it looks like a scheme
/// (so a URL missing its scheme cannot leak, say, a password into the log).
fn printable_scheme(scheme: &str) -> String {
    let looks_like_scheme = (1..=32).contains(&scheme.len())
        && scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    if looks_like_scheme {
        scheme.to_owned()
    } else {
        "(none)".to_owned()
    }
}

/// The pool behind a [`Store`]. Repositories dispatch on it with `on_pool!`.
#[derive(Clone)]
pub(crate) enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// The database: a cheap-to-clone handle on a connection pool, SQLite or
/// Postgres. Repository methods live in `tenants.rs`, `devices.rs`,
/// `audit.rs`; migrations in `migrate.rs`.
#[derive(Clone)]
pub struct Store {
    pub(crate) pool: Pool,
    /// Where committed change events are announced (`change_events.rs`).
    pub(crate) events: events::hub::EventHub,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("backend", &self.backend())
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Connect to `url`. A SQLite file is created if missing (its directory
    /// is not). Does not migrate: call [`Store::migrate`]. An unreachable
    /// Postgres is retried for up to 10 s before `Unavailable`.
    #[tracing::instrument(name = "store_open", skip_all, fields(url = %redact_url(url)))]
    pub async fn open(url: &str) -> Result<Store, Error> {
        let backend = Backend::from_url(url)?;
        let pool = match backend {
            Backend::Sqlite => Pool::Sqlite(open_sqlite(url).await?),
            Backend::Postgres => Pool::Postgres(open_postgres(url).await?),
        };
        tracing::info!(%backend, "database opened");
        Ok(Store {
            pool,
            events: events::hub::EventHub::default(),
        })
    }

    pub fn backend(&self) -> Backend {
        match self.pool {
            Pool::Sqlite(_) => Backend::Sqlite,
            Pool::Postgres(_) => Backend::Postgres,
        }
    }

    /// Close the pool, waiting for connections in use to come back. On
    /// SQLite, closing the last connection checkpoints the WAL into the main
    /// file. Further calls on this store (or its clones) fail `Unavailable`.
    pub async fn close(&self) {
        match &self.pool {
            Pool::Sqlite(pool) => pool.close().await,
            Pool::Postgres(pool) => pool.close().await,
        }
        tracing::info!(backend = %self.backend(), "database closed");
    }

    /// Run a statement with no parameters and no result: for tests and
    /// tooling that need to reach past the repositories.
    #[cfg(any(test, feature = "testing"))]
    pub(crate) async fn execute_raw(&self, sql: &'static str) -> Result<u64, Error> {
        let done = sql!(self, execute => sql)?;
        Ok(done)
    }
}

/// A query built at run time over one tenant's rows: `head` ends in
/// `tenant_id = `, and the tenant is bound there; the caller pushes the rest.
pub(crate) fn tenant_query<'a, DB: sqlx::Database>(
    head: &'static str,
    tenant_id: &'a str,
) -> sqlx::QueryBuilder<DB>
where
    <DB as sqlx::Database>::Arguments: Default,
    &'a str: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
{
    let mut q = sqlx::QueryBuilder::new(head);
    q.push_bind(tenant_id);
    q
}

async fn open_sqlite(url: &str) -> Result<SqlitePool, Error> {
    let options = SqliteConnectOptions::from_str(url)
        .map_err(Error::InvalidUrl)?
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        // NORMAL is durable under WAL except for the last commits on power loss.
        .synchronous(SqliteSynchronous::Normal)
        .foreign_keys(true)
        .busy_timeout(SQLITE_BUSY_TIMEOUT);
    if let Some(dir) = options.get_filename().parent()
        && !dir.as_os_str().is_empty()
        && !tokio::fs::try_exists(dir).await.unwrap_or(false)
    {
        return Err(Error::DataDirMissing {
            dir: dir.to_path_buf(),
        });
    }
    // Switch the file to WAL (persistent) on one connection before the pool
    // opens several at once: connections racing to change the journal mode
    // of a fresh file get "database is locked" without waiting.
    let first = SqliteConnection::connect_with(&options)
        .await
        .map_err(Error::Unavailable)?;
    first.close().await.map_err(Error::Unavailable)?;
    SqlitePoolOptions::new()
        .max_connections(SQLITE_MAX_CONNECTIONS)
        // Keep one connection for the life of the pool: an in-memory database
        // lives only as long as a connection to it, and reopening a file
        // costs a WAL recovery for nothing.
        .min_connections(1)
        .idle_timeout(None)
        .max_lifetime(None)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .connect_with(options)
        .await
        .map_err(Error::Unavailable)
}

async fn open_postgres(url: &str) -> Result<PgPool, Error> {
    let options = PgConnectOptions::from_str(url).map_err(Error::InvalidUrl)?;
    PgPoolOptions::new()
        .max_connections(POSTGRES_MAX_CONNECTIONS)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .connect_with(options)
        .await
        .map_err(Error::Unavailable)
}

/// A `sqlite://` URL for a file path, escaping what sqlx would otherwise read
/// as URL syntax. Non-UTF-8 bytes in the path are replaced.
pub fn sqlite_url(path: &Path) -> String {
    let mut url = String::from("sqlite://");
    for c in path.to_string_lossy().chars() {
        match c {
            '%' => url.push_str("%25"),
            '?' => url.push_str("%3F"),
            '#' => url.push_str("%23"),
            c => url.push(c),
        }
    }
    url
}

/// `url` with passwords removed, for logs: the userinfo password and any
/// `password`/`sslpassword` query parameter become `REDACTED`.
pub fn redact_url(url: &str) -> String {
    const REDACTED: &str = "REDACTED";
    let is_secret = |key: &str| key.to_ascii_lowercase().ends_with("password");
    let mut parsed = match url::Url::parse(url) {
        // `scheme:user:pass@host` parses as a path: the parser saw no userinfo.
        Ok(parsed) if !(parsed.cannot_be_a_base() && url.contains('@')) => parsed,
        _ => return redact_unparsed(url),
    };
    let mut changed = false;
    if parsed.password().is_some() {
        // Fails only for URLs that cannot have a password, which this one has.
        changed |= parsed.set_password(Some(REDACTED)).is_ok();
    }
    if parsed.query_pairs().any(|(k, _)| is_secret(&k)) {
        let pairs: Vec<(String, String)> = parsed
            .query_pairs()
            .map(|(k, v)| {
                let v = if is_secret(&k) { REDACTED.into() } else { v };
                (k.into_owned(), v.into_owned())
            })
            .collect();
        parsed.query_pairs_mut().clear().extend_pairs(pairs);
        changed = true;
    }
    if changed {
        parsed.to_string()
    } else {
        url.to_owned()
    }
}

/// Best effort for strings the URL parser refuses (say, a password with an
/// unescaped `/`): keep scheme, user and host; drop the rest of the userinfo
/// and the whole query.
fn redact_unparsed(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return if url.contains('@') || url.contains('?') {
            "(unparseable database URL)".to_owned()
        } else {
            url.to_owned()
        };
    };
    let rest = match rest.split_once('?') {
        Some((before, _)) => format!("{before}?REDACTED"),
        None => rest.to_owned(),
    };
    match rest.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split_once(':').map_or(userinfo, |(user, _)| user);
            format!("{scheme}://{user}:REDACTED@{host}")
        }
        None => format!("{scheme}://{rest}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_from_scheme() {
        for (url, backend) in [
            ("sqlite://./fleetmq-data/fleetmq.db", Backend::Sqlite),
            ("sqlite:fleetmq.db", Backend::Sqlite),
            ("sqlite::memory:", Backend::Sqlite),
            ("SQLite://x.db", Backend::Sqlite),
            ("postgres://h/db", Backend::Postgres),
            ("postgresql://u:p@h:5432/db", Backend::Postgres),
        ] {
            assert_eq!(Backend::from_url(url).unwrap(), backend, "{url}");
        }
    }

    #[test]
    fn unsupported_schemes_say_what_is_accepted() {
        let e = Backend::from_url("mysql://h/db").unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("\"mysql\""), "{msg}");
        assert!(
            msg.contains("sqlite://") && msg.contains("postgres://"),
            "{msg}"
        );
        // Without a scheme, what precedes ':' may be a secret: not echoed.
        let e = Backend::from_url("hunter2/x:y@h").unwrap_err();
        assert!(!e.to_string().contains("hunter2"));
        assert!(Backend::from_url("./fleetmq.db").is_err());
    }

    #[test]
    fn redacts_passwords() {
        assert_eq!(
            redact_url("postgres://fleet:s3cret@db:5432/fleetmq"),
            "postgres://fleet:REDACTED@db:5432/fleetmq"
        );
        let r = redact_url("postgres://db/fleetmq?user=a&password=s3cret&sslmode=require");
        assert!(!r.contains("s3cret"), "{r}");
        assert!(r.contains("sslmode=require") && r.contains("user=a"), "{r}");
        let r = redact_url("postgres://db/x?sslpassword=s3cret");
        assert!(!r.contains("s3cret"), "{r}");
        // Nothing secret: unchanged, byte for byte.
        for url in [
            "sqlite://./fleetmq-data/fleetmq.db",
            "sqlite:fleetmq.db",
            "postgres://root@127.0.0.1:5432/test",
        ] {
            assert_eq!(redact_url(url), url);
        }
    }

    #[test]
    fn redacts_what_the_parser_refuses() {
        let r = redact_url("postgres://u:pa/ss@db:5432/x?password=s3cret");
        assert!(!r.contains("pa/ss") && !r.contains("s3cret"), "{r}");
        assert!(r.starts_with("postgres://u:REDACTED@"), "{r}");
        assert!(!redact_url("u:hunter2@host").contains("hunter2"));
    }

    #[test]
    fn sqlite_url_escapes_url_syntax() {
        let url = sqlite_url(Path::new("/data/a?b#c%d.db"));
        assert_eq!(url, "sqlite:///data/a%3Fb%23c%25d.db");
        let options = SqliteConnectOptions::from_str(&url).unwrap();
        assert_eq!(options.get_filename(), Path::new("/data/a?b#c%d.db"));
    }

    #[tokio::test]
    async fn sqlite_connections_are_configured() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&sqlite_url(&dir.path().join("t.db")))
            .await
            .unwrap();
        let Pool::Sqlite(pool) = &store.pool else {
            panic!("not sqlite");
        };
        // Several at once, so that more than one pooled connection answers.
        let mut conns = Vec::new();
        for _ in 0..3 {
            conns.push(pool.acquire().await.unwrap());
        }
        for conn in &mut conns {
            let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
                .fetch_one(&mut **conn)
                .await
                .unwrap();
            assert_eq!(mode, "wal");
            let pragma = async |conn: &mut sqlx::SqliteConnection, sql: &'static str| {
                sqlx::query_scalar::<_, i64>(sql)
                    .fetch_one(conn)
                    .await
                    .unwrap()
            };
            assert_eq!(pragma(conn, "PRAGMA foreign_keys").await, 1);
            assert_eq!(pragma(conn, "PRAGMA busy_timeout").await, 5000);
            assert_eq!(pragma(conn, "PRAGMA synchronous").await, 1); // NORMAL
        }
        drop(conns);
        store.close().await;
    }

    #[test]
    fn default_url_is_the_data_dir_file() {
        let options = SqliteConnectOptions::from_str(DEFAULT_SQLITE_URL).unwrap();
        assert_eq!(
            options.get_filename(),
            Path::new("./fleetmq-data/fleetmq.db")
        );
    }
}
