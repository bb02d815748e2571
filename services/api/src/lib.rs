//! fleetmq HTTP API: the axum app shared by the `fleetmq` binary and tests.
//!
//! Module map:
//!
//! - `lib.rs` — [`AppState`] (what handlers get: the store, the metrics
//!   handle; config values, no globals), [`HttpLimits`], this crate's
//!   startup [`Error`].
//! - `router.rs` — [`router()`] builds the whole app: routes, the 404
//!   fallback and the layers, in one documented order.
//! - [`error`] — RFC 9457 `application/problem+json`: [`Problem`],
//!   [`ApiError`] (one variant per status) and the one mapping from
//!   `store::Error`.
//! - [`auth`] — bearer JWTs: [`Keys`] (ES256 signing keys kept in the
//!   store, rotation by `kid`, [`Keys::issue`] for `fleetmq admin token`),
//!   [`Role`], the [`Principal`] extractor with its access checks and the
//!   per-caller rate limit.
//! - [`events`] — the `events` crate's [`EventHub`] re-exported for the
//!   routes: platform events (device lifecycle, presence, state) for SSE
//!   and, through an [`EventListener`] such as the webhooks
//!   `OutboxWriter`, the webhook outbox.
//! - [`device_io`] — what the binary provides from the broker:
//!   [`DeviceCommands`] (retained publishes), [`RecentMessages`] (with the
//!   bounded [`InMemoryRecentMessages`]) and [`BrokerDrops`] (messages
//!   dropped per session and tenant).
//! - [`model`] — what the API sends (its own types, with OpenAPI schemas).
//! - [`extract`] — [`ApiJson`], the JSON body extractor whose rejections
//!   are problems, with the JSON pointer of the bad field.
//! - `middleware` — request ids, problem bodies for errors made outside
//!   handlers, timeout, concurrency limit, panic response, request span.
//! - [`telemetry`] — the process-wide Prometheus recorder
//!   ([`install_metrics_recorder`]) and the HTTP request metrics.
//! - `routes/` — one file per resource, each with `router()`, merged in
//!   `routes/mod.rs`: `health` (`/healthz`, `/readyz`), `metrics`
//!   (`/metrics`), `openapi` (`/openapi.json`, [`openapi_document`]);
//!   under `/v1`: `tenants`, `devices`, `device_import`
//!   (`devices:import`, NDJSON and, in `device_csv`, CSV), `audit`, `api_keys` (with `/v1/auth/token`),
//!   `state` (device state, desired, recent messages), `events` (SSE),
//!   `webhooks`, `ca` (root, tenant chain, CRL), `byo_ca`, `certificates`,
//!   `credentials` (device passwords, tenant service credentials),
//!   `platform_credentials` (`/v1/service-credentials`), `policies`,
//!   `publish_limits`, `topic_rules`, `presence_settings`, `sessions`
//!   (persistent MQTT sessions), `fleet` (the dashboard's series, lifecycle
//!   and presence, from [`fleet_stats`]); and what they share: `scope`
//!   (the `InTenant`/`InDevice`/`AsPlatform` extractors that parse and
//!   authorize path ids, and the audit helper), `query` (strict list query
//!   strings), `validate` (bounds, merge patch), `etag` (`ETag`/`If-Match`)
//!   and `idempotency` (the `Idempotency-Key` middleware on creates).
//! - [`fleet_stats`] — [`FleetStats`]: per-tenant series of the last hour,
//!   top talkers and lifecycle rings, in memory.
//! - [`platform_pki`] — [`Pki`], which the binary sets on [`AppState`]
//!   for the certificate, CA and credential routes, and [`PkiChanges`],
//!   its listener on the change feed.
//! - `server.rs` — [`serve`]: the app on a bound listener until a shutdown
//!   future completes.
//! - `test_support.rs` (tests only) — apps on `store::testing` databases,
//!   `oneshot` helpers.
//! - `testing` (feature `testing`, and this crate's tests) — the app served
//!   on a real socket and raw HTTP/1.1 requests to it.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use ::events::change::{Change, ChangeFeed};
use metrics_exporter_prometheus::PrometheusHandle;
use store::Store;
use tokio::sync::OnceCell;

pub mod auth;
mod dashboard;
pub mod device_io;
pub mod error;
pub mod events;
pub mod extract;
pub mod fleet_stats;
mod middleware;
pub mod model;
pub mod platform_pki;
mod router;
mod routes;
mod server;
pub mod telemetry;
mod tenant_limit;
#[cfg(test)]
mod test_support;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

pub use crate::events::{EventHub, EventListener, PlatformEvent};
pub use auth::{Keys, Principal, Role};
pub use device_io::{
    BrokerDrops, CommandError, DeviceCommands, InMemoryRecentMessages, RecentMessage,
    RecentMessages, RecentMessagesLimits, SessionDrops, TenantDrops,
};
pub use error::{ApiError, FieldError, PROBLEM_JSON, Problem};
pub use extract::{ApiJson, ShownOnce};
pub use fleet_stats::{CountingRecentMessages, FleetStats};
pub use middleware::{MAX_REQUEST_ID_LEN, X_REQUEST_ID, is_valid_request_id};
pub use platform_pki::{Pki, PkiChanges, trust_stored_cas};
pub use router::router;
pub use routes::openapi_document;
pub use server::{ConnLimits, serve, serve_with};
pub use telemetry::install_metrics_recorder;

/// Something besides the database that `/readyz` must see ready, such as
/// a cluster member's NATS connection. Asked on every probe: keep it cheap.
pub trait ReadinessCheck: Send + Sync {
    /// `Err(detail)` while not ready; the detail is the 503's.
    fn check(&self) -> Result<(), String>;
}

/// What every handler can reach. Cheap to clone (handles only).
#[derive(Clone)]
pub struct AppState {
    pub(crate) store: Store,
    pub(crate) metrics: PrometheusHandle,
    /// Loaded (or created) on first use unless given by [`AppState::with_keys`].
    keys: Arc<OnceCell<Keys>>,
    /// `None` until the binary wires the broker: desired state answers 503.
    pub(crate) commands: Option<Arc<dyn DeviceCommands>>,
    /// `None` until the binary wires the broker: recent messages answer 503.
    pub(crate) recent_messages: Option<Arc<dyn RecentMessages>>,
    /// `None` until the binary wires the broker: sessions and series
    /// carry no drop counts (`drops` is `null`).
    pub(crate) drops: Option<Arc<dyn BrokerDrops>>,
    /// Which webhook URLs tenants may register.
    pub(crate) webhook_url_policy: webhooks::UrlPolicy,
    /// Set by [`AppState::with_pki`]; the certificate and CA routes answer
    /// 503 without it.
    pub(crate) pki: Option<Arc<Pki>>,
    /// Where changes that live sessions must see are published, after
    /// they are stored ([`AppState::with_change_feed`]); nothing listens
    /// to the default one.
    pub(crate) changes: ChangeFeed,
    /// The dashboard's series, top talkers and presence history; an empty
    /// one (nothing feeds it) unless [`AppState::with_fleet_stats`].
    pub(crate) fleet_stats: Arc<FleetStats>,
    /// What `/readyz` asks besides the database ([`AppState::with_readiness_check`]).
    pub(crate) readiness: Vec<Arc<dyn ReadinessCheck>>,
}

impl AppState {
    /// `metrics` is the handle from [`install_metrics_recorder`]. The token
    /// keys are loaded from `store` (created there on first start) when the
    /// first authenticated request arrives; see [`AppState::with_keys`].
    pub fn new(store: Store, metrics: PrometheusHandle) -> Self {
        Self {
            store,
            metrics,
            keys: Arc::new(OnceCell::new()),
            commands: None,
            recent_messages: None,
            drops: None,
            webhook_url_policy: webhooks::UrlPolicy::default(),
            pki: None,
            changes: ChangeFeed::new(),
            fleet_stats: Arc::new(FleetStats::new()),
            readiness: Vec::new(),
        }
    }

    /// `/readyz` answers 503 with `check`'s detail while it fails.
    #[must_use]
    pub fn with_readiness_check(mut self, check: Arc<dyn ReadinessCheck>) -> Self {
        self.readiness.push(check);
        self
    }

    /// Serve the dashboard's series and presence history from `stats`
    /// (which the binary feeds from the event hub and the broker).
    #[must_use]
    pub fn with_fleet_stats(self, stats: Arc<FleetStats>) -> Self {
        Self {
            fleet_stats: stats,
            ..self
        }
    }

    /// Serve certificates and CAs from `pki`.
    #[must_use]
    pub fn with_pki(self, pki: Arc<Pki>) -> Self {
        Self {
            pki: Some(pki),
            ..self
        }
    }

    /// Publish revocations, deletions, policy, limit, rule, presence and
    /// webhook changes on `feed`, whose listeners apply them to live
    /// sessions (on every node, in a cluster).
    #[must_use]
    pub fn with_change_feed(self, feed: ChangeFeed) -> Self {
        Self {
            changes: feed,
            ..self
        }
    }

    /// The change is stored: every listener of the feed applies it before
    /// this returns (each logs its own failures).
    pub(crate) async fn changed(&self, change: Change) {
        self.changes.publish(change).await;
    }

    /// Stream platform events from `hub` (the store's own otherwise), on
    /// which the store announces the events of REST changes once they
    /// commit; the binary shares it with the broker's event feed and
    /// attaches the webhooks outbox with [`EventHub::add_listener`].
    #[must_use]
    pub fn with_event_hub(self, hub: EventHub) -> Self {
        Self {
            store: self.store.with_event_hub(hub),
            ..self
        }
    }

    /// Publish desired state to devices through `commands`.
    #[must_use]
    pub fn with_device_commands(self, commands: Arc<dyn DeviceCommands>) -> Self {
        Self {
            commands: Some(commands),
            ..self
        }
    }

    /// Serve `GET …/devices/{d}/messages` from `recent`.
    #[must_use]
    pub fn with_recent_messages(self, recent: Arc<dyn RecentMessages>) -> Self {
        Self {
            recent_messages: Some(recent),
            ..self
        }
    }

    /// Show the broker's drop counts from `drops` in sessions and series.
    #[must_use]
    pub fn with_broker_drops(self, drops: Arc<dyn BrokerDrops>) -> Self {
        Self {
            drops: Some(drops),
            ..self
        }
    }

    /// Check webhook URLs with `policy` (default: https only, no private
    /// or loopback addresses).
    #[must_use]
    pub fn with_webhook_url_policy(self, policy: webhooks::UrlPolicy) -> Self {
        Self {
            webhook_url_policy: policy,
            ..self
        }
    }

    /// The platform event hub.
    pub fn events(&self) -> &EventHub {
        self.store.event_hub()
    }

    /// Use `keys` (from [`Keys::load_or_create_sealed`] or
    /// [`Keys::load_or_create`] on the same store) rather than loading them
    /// on first use.
    #[must_use]
    pub fn with_keys(self, keys: Keys) -> Self {
        Self {
            keys: Arc::new(OnceCell::new_with(Some(keys))),
            ..self
        }
    }

    /// The token keys, loaded or created on first call.
    pub async fn keys(&self) -> Result<&Keys, auth::AuthError> {
        // With the PKI wired, its key-encryption key seals them too.
        let kek = self.pki.as_deref().map(Pki::kek);
        self.keys
            .get_or_try_init(|| async {
                match kek {
                    Some(kek) => Keys::load_or_create_sealed(&self.store, kek).await,
                    None => Keys::load_or_create(&self.store).await,
                }
            })
            .await
    }

    /// The database.
    pub fn store(&self) -> &Store {
        &self.store
    }
}

impl fmt::Debug for AppState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AppState")
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

/// Bounds on each HTTP request, applied by [`router()`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpLimits {
    /// Largest request body accepted; larger ones get 413. Default 1 MiB.
    pub body_limit_bytes: usize,
    /// Longest a request may take up to its response head, queueing
    /// included; then 503 (see [`ApiError::Timeout`]). Default 30 s.
    pub request_timeout: Duration,
    /// Most `/v1` requests in handlers at once; more wait (within
    /// `request_timeout`). `None` for no limit; `Some(0)` means 1. Probes
    /// and `/metrics` are never limited. Default 1024.
    pub concurrency_limit: Option<usize>,
    /// Most `/v1/tenants/{t}/…` requests of one tenant in handlers at
    /// once; more wait their turn (within `request_timeout`) before the
    /// global limit, so one tenant's flood holds at most this many
    /// database connections and never the whole pool (10 on Postgres, 8
    /// on SQLite). `None` for no limit. Default 4.
    pub tenant_concurrency: Option<usize>,
    /// Requests per authenticated caller (token subject), answered 429
    /// with `Retry-After` beyond it. `None` for no limit. Default 50/s,
    /// bursts of 200.
    pub rate_limit: Option<auth::RateLimit>,
    /// `POST /v1/auth/token` attempts per API key id and, separately, per
    /// client address (whichever runs out first), against secret
    /// guessing; 429 with `Retry-After` beyond it. `None` for no limit.
    /// Default 10/min, bursts of 10.
    pub token_rate_limit: Option<auth::RateLimit>,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            body_limit_bytes: 1024 * 1024,
            request_timeout: Duration::from_secs(30),
            concurrency_limit: Some(1024),
            tenant_concurrency: Some(4),
            rate_limit: Some(auth::RateLimit::default()),
            token_rate_limit: Some(auth::RateLimit::token_exchange_default()),
        }
    }
}

/// Errors setting up the HTTP side (handlers use [`ApiError`]).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Another `metrics` recorder was installed first, or the builder
    /// rejected its settings.
    #[error("cannot install the Prometheus metrics recorder")]
    MetricsRecorder(#[source] metrics_exporter_prometheus::BuildError),
    /// The thread that keeps histogram memory bounded did not start.
    #[error("cannot start the metrics upkeep thread")]
    MetricsUpkeep(#[source] std::io::Error),
}
