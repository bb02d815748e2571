//! fleetmq storage: one repository API over two backends, SQLite (the
//! embedded default) and PostgreSQL, chosen at runtime from the URL scheme.
//!
//! Module map:
//! - `store.rs` — [`Store`] (a cheap-to-clone pool handle): `open`, `close`,
//!   [`Backend`], [`redact_url`], [`sqlite_url`].
//! - `migrate.rs` — embedded migrations (`/migrations/{sqlite,postgres}`),
//!   [`Store::migrate`], [`Store::migration_status`], [`Store::check_ready`].
//! - `tenants.rs`, `devices.rs`, `audit.rs` — one file per aggregate: its
//!   domain types and its repository methods on [`Store`].
//! - `change_events.rs` — [`ChangeEvent`]: the events a change causes,
//!   written with its audit entry in its transaction and announced on the
//!   store's event hub once it commits.
//! - `webhook_endpoints.rs`, `webhook_outbox.rs`, `webhook_deliveries.rs`,
//!   `webhook_claims.rs` — webhooks: endpoints, the outbox and its fan-out,
//!   the delivery queue and its attempt log, claiming.
//! - `api_keys.rs` — tenants' API keys (hashed secrets).
//! - `signing_keys.rs` — the API's JWT signing keys (rotation by `kid`).
//! - `pki.rs`, `certificates.rs`, `credentials.rs`, `policies.rs` — issue 5:
//!   the platform and tenant CAs (sealed keys), device certificates and
//!   revocation floors, device passwords and service credentials, ACL policies.
//! - `publish_limits.rs` — issue 5: publish rate limits per tenant (default)
//!   and per device (override).
//! - `service_credentials.rs` — issue 5: service credentials for backends,
//!   a tenant's or the platform's ([`CredentialScope`]), one type and one
//!   set of queries.
//! - `platform_access.rs` — issue 5: every tenant's id, per-tenant topic
//!   hygiene rules.
//! - `idempotency.rs` — first responses kept for `Idempotency-Key` retries.
//! - `retained.rs`, `presence.rs`, `device_state.rs` — what the broker
//!   keeps about devices (issue 6): durable retained messages, presence,
//!   the reported/desired state document and event sequence numbers.
//! - `sessions.rs`, `session_queue.rs`, `session_batch.rs`,
//!   `session_writes.rs` — persistent MQTT sessions (issue 14): sessions
//!   with subscriptions, wills and incoming QoS 2 ids; message bodies
//!   stored once and per-session queues; one batch of changes
//!   ([`SessionWrites`]) applied by [`Store::write_sessions`] in one
//!   transaction; expiry and deletion.
//! - `page.rs` — cursor paging ([`Page`] → [`Paged`]).
//! - [`TenantId`] and [`DeviceId`] are the `ids` crate's (parse, don't
//!   validate), re-exported; the repositories take `&str` (the api crate
//!   parses at its edge) but check ids again on create, and the schema has
//!   the same checks as a backstop.
//! - `codec.rs` — the timestamp column type shared by both backends.
//! - `error.rs` — [`Error`], and the mapping from sqlx errors.
//! - `testing.rs` (feature `testing`) — fresh, migrated databases per test on
//!   each available backend, for this crate's tests and other crates'.
//!
//! Queries are plain `sqlx::query`/`query_as` with `FromRow` (no
//! compile-time checked macros: there is no `DATABASE_URL` at build time);
//! the conformance tests in `tests/` run every one on both backends.
//!
//! ```no_run
//! # async fn demo() -> Result<(), store::Error> {
//! let store = store::Store::open("sqlite://./fleetmq-data/fleetmq.db").await?;
//! store.migrate().await?;
//! let acme = store
//!     .create_tenant(&store::NewTenant { id: "acme".into(), name: "Acme".into() })
//!     .await?;
//! let page = store.list_tenants(&store::Page::first(50)).await?;
//! # let _ = (acme, page);
//! # Ok(()) }
//! ```

/// Run `$body` with `$pool` bound to the store's concrete pool, whichever
/// backend it is. The body is compiled once per backend, so the same query
/// text and row type are type-checked against both.
macro_rules! on_pool {
    ($store:expr, $pool:ident => $body:expr) => {
        match &$store.pool {
            $crate::store::Pool::Sqlite($pool) => $body,
            $crate::store::Pool::Postgres($pool) => $body,
        }
    };
}

/// `Debug` for a type that holds secrets: the fields named, then `..`
/// (what is left out never reaches a log).
macro_rules! debug_fields {
    ($first:ident, $($more:ident),+ { $($fields:tt)* }) => {
        debug_fields!($first { $($fields)* });
        debug_fields!($($more),+ { $($fields)* });
    };
    ($ty:ident { $($field:ident),+ $(,)? }) => {
        impl std::fmt::Debug for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct(stringify!($ty))
                    $(.field(stringify!($field), &self.$field))+
                    .finish_non_exhaustive()
            }
        }
    };
}

/// [`on_pool!`] for a [`StoreTx`] (`&mut`): `$body` with `$conn` the
/// transaction's connection, compiled for each backend.
macro_rules! on_tx {
    ($tx:expr, $conn:ident => $body:expr) => {
        match $tx {
            $crate::StoreTx::Sqlite(tx) => {
                let $conn: &mut sqlx::SqliteConnection = tx;
                $body
            }
            $crate::StoreTx::Postgres(tx) => {
                let $conn: &mut sqlx::PgConnection = tx;
                $body
            }
        }
    };
}

/// One statement on `$store`'s pool (or, after `in`, on the connection or
/// transaction `$conn`): `$sql` with each `$arg` bound in order, then
/// - `execute`: run, evaluating to the number of rows it affected;
/// - `$fetch as $row`: a `query_as` into `$row` (`_`: the binding's type);
/// - `$fetch scalar`: a `query_scalar`;
///
/// with `$fetch` one of `fetch_one`, `fetch_optional`, `fetch_all`. Evaluates
/// to the sqlx result, for `?` or the caller's error mapping. The binds and
/// fetch of a query are written once here rather than in every repository
/// method, and like [`on_pool!`] the statement is compiled for each backend.
macro_rules! sql {
    (@on $conn:expr, execute => $sql:expr $(, $arg:expr)* $(,)?) => {
        sqlx::query($sql)$(.bind($arg))*.execute($conn).await.map(|done| done.rows_affected())
    };
    (@on $conn:expr, $fetch:ident scalar => $sql:expr $(, $arg:expr)* $(,)?) => {
        sqlx::query_scalar($sql)$(.bind($arg))*.$fetch($conn).await
    };
    (@on $conn:expr, $fetch:ident as $row:ty => $sql:expr $(, $arg:expr)* $(,)?) => {
        sqlx::query_as::<_, $row>($sql)$(.bind($arg))*.$fetch($conn).await
    };
    (in $conn:expr, $($rest:tt)*) => {
        sql!(@on $conn, $($rest)*)
    };
    ($store:expr, $($rest:tt)*) => {
        on_pool!($store, pool => sql!(@on pool, $($rest)*))
    };
}

mod api_keys;
mod audit;
mod certificates;
mod change_events;
mod codec;
mod credentials;
mod device_state;
mod devices;
mod error;
mod idempotency;
mod migrate;
mod page;
mod pki;
mod platform_access;
mod policies;
mod presence;
mod presence_lookup;
mod presence_settings;
mod publish_limits;
mod retained;
mod service_credentials;
mod session_batch;
mod session_queue;
mod session_writes;
mod sessions;
mod signing_keys;
mod store;
mod tenants;
#[cfg(feature = "testing")]
pub mod testing;
mod webhook_claims;
mod webhook_deliveries;
mod webhook_endpoint_update;
mod webhook_endpoints;
mod webhook_outbox;

pub use api_keys::{ApiKey, NewApiKey};
pub use audit::{AuditEntry, AuditOf, NewAuditEntry};
pub use certificates::{
    CertificateFloors, CertificateStatus, DeviceCertificate, NewDeviceCertificate,
};
pub use change_events::ChangeEvent;
pub use device_state::{DeviceState, merge_patch};
// Whatever devices.rs makes public is the crate's: a new device record needs no
// line here.
pub use devices::*;
pub use error::Error;
pub use idempotency::{IdempotencyClaim, IdempotencyRecord};
pub use ids::{DeviceId, TenantId};
pub use migrate::MigrationStatus;
pub use page::{Page, Paged};
pub use pki::{NewTenantCa, PlatformCa, TenantCa, TenantCaKind, TenantCaStatus};
pub use platform_access::TopicRules;
pub use policies::{AclPolicy, PolicyDocument};
pub use presence::{DevicePresence, PresenceStatus, PresenceUpdate};
pub use presence_settings::PresenceSettings;
pub use publish_limits::{PublishLimitSettings, StoredPublishLimits};
pub use retained::{RetainedMessage, RetainedWrite, RetainedWriteCount};
pub use service_credentials::{CredentialScope, NewServiceCredential, ServiceCredential};
pub use session_batch::{
    CompletedWrite, IncomingWrite, QueueTransition, SessionDisconnect, SessionWriteCount,
    SessionWrites, SubscriptionWrite,
};
pub use session_queue::{QueueEntry, QueuePage, QueueState, SessionMessage, SessionMessageId};
pub use sessions::{
    COMPLETED_KEPT, COMPLETED_LOADED, MAX_SESSION_CLIENT_ID_BYTES, SessionKey, SessionPurge,
    SessionRecord, SessionSubscription, SessionSummary, SessionWill, StoredSession,
};
pub use signing_keys::{NewSigningKey, SigningKey};
pub use store::{Backend, DEFAULT_SQLITE_URL, Store, redact_url, sqlite_url};
pub use tenants::{NewTenant, Tenant, TenantPatch};
pub use webhook_claims::ClaimedDelivery;
pub use webhook_deliveries::{
    AttemptOutcome, AttemptRecord, AttemptRecorded, DeliveryStatus, QueueDepth, WebhookAttempt,
    WebhookDelivery,
};
pub use webhook_endpoint_update::WebhookEndpointChange;
pub use webhook_endpoints::{NewWebhookEndpoint, WebhookEndpoint};
pub use webhook_outbox::{
    BatchLimits, FanOut, NewOutboxEvent, OutboxEvent, Route, StoreTx,
    append_postgres as append_outbox_events_postgres, append_sqlite as append_outbox_events_sqlite,
};
