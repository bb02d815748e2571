//! fleetmq, the one binary: configuration, wiring and the command line.
//!
//! - [`cli`]: the clap definitions of every subcommand and flag.
//! - [`config`]: layering flags > environment > config file > defaults into a
//!   validated [`config::ServeConfig`].
//! - [`datadir`]: the data directory (0700), its exclusive lock, and 0600 secret files.
//! - [`listen`]: binding listeners with errors that name the flag to change.
//! - [`tls`]: the MQTT/TLS server certificate, given or generated into the data dir.
//! - [`telemetry`]: the tracing subscriber (`--log-format`, `RUST_LOG`).
//! - [`cmd`]: one file per subcommand (`serve`, `migrate`, `admin`).
//! - [`error`]: the binary's error type and its exit codes.

pub mod cli;
pub mod cmd;
pub mod config;
pub mod datadir;
pub mod error;
pub mod listen;
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
