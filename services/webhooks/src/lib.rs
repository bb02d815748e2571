//! fleetmq webhooks: device events pushed to customers' HTTP endpoints,
//! signed, retried, logged and replayable. Storage (endpoints, outbox,
//! delivery queue, attempt log) is the `store` crate's; this crate decides
//! and sends.
//!
//! Module map:
//! - `signing.rs` — Standard Webhooks signatures and `whsec_` secrets.
//! - `ssrf.rs` — [`UrlPolicy`] and the resolver that keeps requests off
//!   internal addresses.
//! - `routing.rs` — the fan-out decision, with the event catalogue's
//!   pattern matcher and the mqtt crate's topic filters.
//! - `worker.rs` — [`Worker`]: fan-out, claiming, sending, retries.
//! - `endpoints.rs` — create and update (checked), rotate, ping, redeliver: what the
//!   REST API calls.
//! - `outbox_writer.rs` — [`OutboxWriter`]: a non-blocking, bounded, batching
//!   way into the outbox for high-rate producers.
//! - `message_routes.rs` — [`MessageRoutes`]: which MQTT messages any
//!   endpoint wants, cached so unwatched messages cost nothing.
//! - `metrics.rs` — counters, latency histogram, queue depth gauges.
//! - `error.rs` — [`Error`].
//!
//! Producers append events with `Store::append_outbox_events` (or
//! `StoreTx::append_outbox_events` inside their own transaction), or at
//! high rates through an [`OutboxWriter`], and may call [`Worker::wake`].

mod endpoints;
mod error;
mod message_routes;
mod metrics;
mod outbox_writer;
pub mod routing;
pub mod signing;
pub mod ssrf;
mod worker;

pub use endpoints::{
    EndpointRequest, create_endpoint, redeliver, rotate_secret, send_test_ping, update_endpoint,
};
pub use error::Error;
pub use message_routes::MessageRoutes;
pub use outbox_writer::{OutboxWriter, OutboxWriterConfig, OutboxWriterTask};
pub use signing::MessageIdKey;
pub use ssrf::UrlPolicy;
pub use worker::{RESPONSE_EXCERPT_BYTES, Worker, WorkerConfig, request_body};
