//! fleetmq, the one binary: configuration, wiring and the command line.
//!
//! - [`cli`]: the clap definitions of every subcommand and flag.
//! - [`config`]: layering flags > environment > config file > defaults into a
//!   validated [`config::ServeConfig`].
//! - [`datadir`]: the data directory (0700), its exclusive lock, and 0600 secret files.
//! - [`listen`]: binding listeners with errors that name the flag to change.
//! - [`fdlimit`]: the open-file limit raised at start, and checked against the connection caps.
//! - [`memory_upkeep`]: freed memory given back to the system once a connect storm is over.
//! - [`anonymous`]: `--allow-anonymous`: unknown clients fall back to one tenant.
//! - [`bridge`]: the API's hooks implemented on the broker, and broker events as platform events.
//! - [`message_events`]: MQTT messages some webhook wants as `message.published` events.
//! - [`presence_status`]: retained `devices/{d}/status` presence messages published by the broker.
//! - [`pki_boot`]: the key-encryption key, the platform root CA and the trust set at start.
//! - [`cluster_boot`]: a cluster member's name, its NATS connection and name lease (issue 15).
//! - [`node_death`]: survivors take over a dead member's devices, wills and sessions (issue 15).
//! - [`tls`]: the MQTT/TLS listener: the server certificate (given, or issued by the root) and the device-certificate verifier.
//! - [`telemetry`]: the tracing subscriber (`--log-format`, `RUST_LOG`).
//! - [`cmd`]: one file per subcommand (`serve`, `migrate`, `admin`).
//! - [`error`]: the binary's error type and its exit codes.

pub mod anonymous;
pub mod bridge;
pub mod cli;
pub mod cluster_boot;
pub mod cmd;
pub mod config;
pub mod datadir;
pub mod error;
pub mod fdlimit;
pub mod fence;
pub mod listen;
pub mod memory_upkeep;
pub mod message_events;
pub mod node_death;
pub mod pki_boot;
pub mod presence_status;
pub mod session_sweep;
pub mod telemetry;
pub mod tls;

pub use error::Error;

/// Runs one parsed command line to completion.
pub fn run(cli: cli::Cli) -> Result<(), Error> {
    match cli.command {
        cli::Command::Serve(args) => cmd::serve::run(*args),
        cli::Command::Migrate(args) => cmd::migrate::run(args),
        cli::Command::Admin(cli::AdminCommand::Token(args)) => cmd::admin::token(args),
    }
}
