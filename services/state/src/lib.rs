//! Device state that survives a restart (issue 6), between the broker's
//! traits and the store. Platform layer: depends on `broker` and `store`,
//! never the other way round.
//!
//! Module map:
//! - `retained.rs` — [`DurableRetained`], the broker's `RetainedStore` on
//!   the database: write-behind and coalesced for QoS 0, group commit for
//!   QoS 1/2, bounded, flushed on shutdown.
//! - `sessions/` — [`DurableSessions`], the broker's `SessionStore` on the
//!   database (issue 14): changes coalesced per session (`batch.rs`),
//!   group commit for what acknowledgements wait on, write-behind for the
//!   rest, one body per message; `codec.rs` maps broker types to rows.
//!   Design: `services/state/sessions.md`.
//! - `presence.rs` — [`Presence`], an `EventSink` that turns connects,
//!   disconnects and publishes into batched presence rows.
//! - `reported.rs` — [`ReportedState`], an `EventSink` merging what devices
//!   publish on `devices/{d}/state/reported` into their state document.
//! - `purge.rs` — [`RetainedPurge`], the timer deleting expired retained
//!   rows.
//! - `fanout.rs` — [`Fanout`], one `EventSink` feeding several.
//! - `writer.rs` — the background writer task each buffer has, and the
//!   group-commit loop it runs.
//! - `codec.rs` — broker retained messages ↔ store rows.
//! - `error.rs` — [`Error`].
//!
//! Wiring (what `fleetmq serve` does with these):
//!
//! ```no_run
//! # async fn wire(store: store::Store, auth: std::sync::Arc<dyn broker::Authenticator>) -> Result<(), state::Error> {
//! use std::sync::Arc;
//! let retained = state::DurableRetained::start(store.clone(), state::RetainedConfig::default());
//! let presence = state::Presence::start(store.clone(), state::PresenceConfig::new("node-1")).await?;
//! let broker = broker::Broker::builder(auth)
//!     .retained_store(retained.clone())
//!     .events(Arc::new(state::Fanout::new(vec![presence.clone()])))
//!     .build();
//! // … serve; on shutdown, after the listeners have returned:
//! retained.shutdown().await?;
//! presence.shutdown().await?;
//! # let _ = broker; Ok(()) }
//! ```

mod codec;
mod error;
mod fanout;
mod presence;
mod purge;
mod reported;
mod retained;
mod sessions;
mod writer;

pub use error::Error;
pub use fanout::Fanout;
pub use presence::{Presence, PresenceConfig, credential_text};
pub use purge::{RetainedPurge, purge_once as purge_expired_retained};
pub use reported::ReportedState;
pub use retained::{DurableRetained, RetainedConfig, RetainedStats};
pub use sessions::{DurableSessions, SessionStats, SessionsConfig};

#[cfg(test)]
mod test_support {
    #![allow(clippy::unwrap_used)]
    use store::testing::TestDb;

    /// A SQLite database with tenant `acme` and `devices` in it.
    pub(crate) async fn acme(devices: &[&str]) -> TestDb {
        let db = TestDb::sqlite().await;
        let store = db.with_tenant("acme").await;
        for d in devices {
            store
                .create_device("acme", &store::NewDevice::new(*d))
                .await
                .unwrap();
        }
        db
    }
}
