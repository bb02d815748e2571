//! Persistent sessions' settings (`--session-flush-ms`,
//! `--session-buffer`), resolved into a [`state::SessionsConfig`]. Defaults
//! are the `state` crate's own, so they live in one place.

use std::time::Duration;

use super::{FileConfig, Setting, in_range};
use crate::cli::SessionArgs;
use crate::error::Error;

setting!(
    FLUSH_MS,
    "--session-flush-ms",
    "FLEETMQ_SESSION_FLUSH_MS",
    "session_flush_ms"
);
setting!(
    BUFFER,
    "--session-buffer",
    "FLEETMQ_SESSION_BUFFER",
    "session_buffer"
);

/// The session settings `serve` was given, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionSettings {
    /// Write-behind window.
    pub flush_window: Duration,
    /// Most changes waiting to be written.
    pub max_pending: usize,
}

impl SessionSettings {
    /// The session store's configuration for node `node_id`.
    pub fn config(&self, node_id: String) -> state::SessionsConfig {
        state::SessionsConfig {
            flush_window: self.flush_window,
            max_pending: self.max_pending,
            ..state::SessionsConfig::new(node_id)
        }
    }
}

pub(super) fn resolve(args: &SessionArgs, file: &FileConfig) -> Result<SessionSettings, Error> {
    let defaults = state::SessionsConfig::new("");
    let flush_window = match args.session_flush_ms.or(file.session_flush_ms) {
        None => defaults.flush_window,
        Some(ms) => Duration::from_millis(in_range(
            FLUSH_MS,
            ms,
            1..=10_000,
            "expected 1 to 10000 milliseconds",
        )?),
    };
    let max_pending = match args.session_buffer.or(file.session_buffer) {
        None => defaults.max_pending,
        Some(n) => in_range(
            BUFFER,
            n,
            1_000..=100_000_000,
            "expected 1000 to 100000000 changes",
        )?,
    };
    Ok(SessionSettings {
        flush_window,
        max_pending,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_come_from_the_state_crate_and_bounds_are_checked() {
        let file = FileConfig::default();
        let resolve = |args: &SessionArgs| resolve(args, &file);
        let none = resolve(&SessionArgs::default()).unwrap();
        assert_eq!(none.flush_window, Duration::from_millis(100));
        assert_eq!(none.max_pending, 1_000_000);
        let set = resolve(&SessionArgs {
            session_flush_ms: Some(20),
            session_buffer: Some(5_000),
        })
        .unwrap();
        assert_eq!(
            set.config("n".into()).flush_window,
            Duration::from_millis(20)
        );
        assert!(
            resolve(&SessionArgs {
                session_flush_ms: Some(0),
                ..SessionArgs::default()
            })
            .is_err()
        );
        assert!(
            resolve(&SessionArgs {
                session_buffer: Some(10),
                ..SessionArgs::default()
            })
            .is_err()
        );
    }
}
