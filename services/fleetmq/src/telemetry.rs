//! The tracing subscriber, set up once per process. `RUST_LOG` picks what is
//! logged (default `info`); `--log-format` picks how.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::cli::LogFormat;
use crate::error::Error;

pub fn init(format: LogFormat) -> Result<(), Error> {
    let filter = EnvFilter::try_from_default_env().or_else(|e| {
        // A set but unparsable RUST_LOG is a mistake worth saying, not ignoring.
        match std::env::var_os("RUST_LOG") {
            Some(_) => Err(Error::Telemetry(format!("RUST_LOG is invalid: {e}"))),
            None => Ok(EnvFilter::new("info")),
        }
    })?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let result = match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .try_init(),
        LogFormat::Pretty => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
    };
    result.map_err(|e| Error::Telemetry(e.to_string()))
}
