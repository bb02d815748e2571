//! fleetmq's MQTT 3.1.1/5.0 broker: listeners, sessions, QoS flows, the
//! subscription index, retained messages, wills and expiry, per tenant.
//! Packets come from the `mqtt` crate; identity, ACLs, persistence and
//! events go out through traits the platform implements.
//!
//! Module map (see `architecture.md` for how a connection, a publish and a
//! subscribe flow):
//!
//! - [`server`]: `run_listener` (TCP), `run_tls_listener`,
//!   `run_ws_listener`: accept loops, connection cap, shutdown.
//! - `admission` (private): sockets before CONNECT, counted apart from
//!   connections, capped per address and per listener.
//! - `transport` (private): WebSocket adapter to a byte stream.
//! - `conn` (private): one connection: `handshake.rs` (CONNECT → CONNACK),
//!   `mod.rs` (read/write loop, batching, keep alive), `inbound.rs`
//!   (packets from the client), `outbound.rs` (encoding, topic aliases,
//!   maximum packet size), `will.rs` (will delay, session expiry),
//!   `throttle.rs` (publish rate limits: 0x97/0x96 for v5, back-pressure
//!   for 3.1.1).
//! - [`limits`]: [`PublishLimits`] and the per-connection token buckets.
//! - [`broker`]: [`Broker`], the shared state, and its builder.
//! - `tenant` (private): one namespace: its sessions, index and retained.
//! - `platform` (private): the platform namespace, where every tenant's
//!   topics are mounted under the tenant id; [`TenantDirectory`].
//! - `session` (private): state that outlives a connection: queue, in-flight.
//! - `signal` (private): a one-shot flag that can be awaited, stored inline
//!   (a connection's kick and end, a session's end).
//! - `backpressure` (private): a full subscriber pauses its publishers'
//!   reads, for a bounded time ([`SlowConsumerPolicy`] after it).
//! - `index` (private): the subscription trie, shared subscriptions.
//! - `retained` (private): the retained trie with capped wildcard lookup.
//! - `router` (private): publishing one message: retained, fan-out, events.
//! - `message` (private): a routed message and one delivery of it.
//! - [`auth`]: [`Authenticator`], [`Authorizer`], [`AllowAnonymous`] and
//!   in-memory implementations.
//! - [`events`]: [`EventSink`] and [`Event`].
//! - [`interconnect`]: [`Interconnect`], how a cluster's nodes exchange
//!   interest, messages and retained changes, and the inbound side.
//! - [`hygiene`]: per-tenant [`TopicRules`] and [`TopicRefusal`].
//! - [`store`]: [`RetainedStore`] and the in-memory store.
//! - [`config`]: [`Config`]. [`error`]: [`Error`]. [`TenantId`] is the `ids`
//!   crate's, re-exported.
//! - `testing` (feature `testing`): a broker listening on a free port, for
//!   tests here and in other crates.
//! - `metrics` (private): metric names.
//!
//! Wiring (what `fleetmq serve --allow-anonymous dev` does, minus config):
//!
//! ```no_run
//! use broker::{Broker, CancellationToken, Config, TenantId};
//! # async fn wire() -> Result<(), Box<dyn std::error::Error>> {
//! let broker = Broker::allow_anonymous(TenantId::parse("dev")?, Config::default());
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! println!("mqtt listening on {}", listener.local_addr()?);
//! let shutdown = CancellationToken::new();
//! let tcp = tokio::spawn(broker::run_listener(listener, broker.clone(), shutdown.clone()));
//! // … on SIGTERM:
//! shutdown.cancel();
//! tcp.await??; // returns once every connection has closed
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

mod admission;
pub mod auth;
mod backpressure;
pub mod broker;
mod child_map;
pub mod config;
mod conn;
mod conn_control;
pub mod error;
pub mod events;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
pub mod handoff;
pub mod hygiene;
mod index;
#[cfg(test)]
mod index_props;
pub mod interconnect;
mod keep_alive;
pub mod limits;
mod message;
mod metrics;
mod platform;
mod retained;
mod router;
pub mod server;
mod session;
pub mod session_store;
mod signal;
pub mod store;
mod tenant;
#[cfg(feature = "testing")]
pub mod testing;
mod transport;

pub use auth::{
    AllowAll, AllowAnonymous, AuthError, AuthRequest, Authenticator, Authorizer, Identity,
    MemoryAuthenticator, TemplateAcl,
};
pub use backpressure::SlowConsumerPolicy;
pub use broker::{Broker, BrokerBuilder, SERVER_CLIENT_ID};
pub use config::{Config, RetainedLimit};
pub use error::Error;
pub use events::{Credential, Event, EventSink, MemoryEvents, NoEvents};
pub use handoff::{HandoffError, SessionHandoff};
pub use hygiene::{TopicLimits, TopicRefusal, TopicRules};
pub use ids::TenantId;
pub use interconnect::{Completed, HeldBack, Inbound, Interconnect, MessageId, Outbound};
pub use limits::{PublishLimits, Rate};
pub use metrics::connection_churn;
pub use platform::TenantDirectory;
pub use server::{run_listener, run_tls_listener, run_ws_listener};
pub use session::DropCounters;
pub use store::{Durability, MemoryRetainedStore, RetainedStore, StoreError, StoredRetained};
pub use tenant::TenantStats;
pub use tokio_util::sync::CancellationToken;
