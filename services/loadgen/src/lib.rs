//! `fleetmq-loadgen`: an MQTT fan-in / fan-out and connect-storm load generator built on rumqttc, a
//! client neither fleetmq nor Mosquitto ships, so both brokers are measured
//! by the same outside tool.
//!
//! N publisher connections each send M messages of S bytes to their own
//! topic `bench/<n>`; K subscribers on `bench/#` count what arrives. Every
//! payload starts with a 16-byte header (publisher, sequence, send time), so
//! subscribers can drop duplicates and measure end-to-end latency against
//! one in-process clock.
//!
//! Module map:
//!
//! - [`config`]: command-line arguments ([`Args`]) and their validation into
//!   a [`Config`]; only loopback targets are accepted.
//! - [`payload`]: the payload header, written by publishers and read by
//!   subscribers.
//! - [`stats`]: latency percentiles and the [`Report`] printed at the end.
//! - [`run`]: the run itself: connect subscribers, then publishers, start
//!   them together, stop when everything arrived, the broker went quiet, or
//!   the time bound passed.
//! - [`idle`]: `fleetmq-loadgen idle`, N idle connections held open for
//!   the broker's memory per connection (`conn-memory.sh`).
//! - [`storm`]: the connect storm (`--mode storm`): fresh connections, plain
//!   or TLS 1.3 with a client certificate each, C at a time.
//! - [`error`]: [`Error`], what can go wrong in setup.

pub mod config;
pub mod error;
pub mod idle;
pub mod payload;
pub mod run;
pub mod stats;
pub mod storm;

pub use config::{Args, Config, Mode, StormConfig};
pub use error::Error;
pub use run::run;
pub use stats::Report;
pub use storm::{StormReport, storm};
