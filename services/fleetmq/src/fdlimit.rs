//! The open-file limit: every connection is a file descriptor, so when the
//! limit is reached, accepts fail on every listener at once. At start the
//! soft limit is raised to the hard one (systemd's `LimitNOFILE`, see
//! `deploy/fleetmq.service`), and a warning names the settings to change
//! when the connection caps cannot fit under it.

use crate::config::ServeConfig;

/// Descriptors kept for what is not a client connection: the database
/// pool, the data directory, listeners, webhook requests, logs.
const RESERVED: u64 = 512;

/// Raise the soft limit to the hard one; warn when the caps do not fit.
/// Returns the limit in force.
pub fn raise_and_check(config: &ServeConfig) -> Option<u64> {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    let mut current = limit.current;
    if limit.current != limit.maximum {
        let raised = Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        };
        match setrlimit(Resource::Nofile, raised) {
            Ok(()) => {
                tracing::info!(from = ?limit.current, to = ?limit.maximum, "open-file limit raised to the hard limit");
                current = limit.maximum;
            }
            Err(e) => tracing::warn!(error = %e, "could not raise the open-file limit"),
        }
    }
    // None is "unlimited".
    let current = current?;
    let mqtt = u64::from(config.mqtt_limits.max_connections).saturating_mul(3);
    let http = u64::try_from(config.http_conn.max_connections).unwrap_or(u64::MAX);
    let needed = mqtt.saturating_add(http).saturating_add(RESERVED);
    if needed > current {
        tracing::warn!(
            open_file_limit = current,
            needed,
            "the connection caps do not fit the open-file limit: at full load accepts fail with \
             \"Too many open files\"; raise LimitNOFILE (ulimit -n) or lower \
             --mqtt-max-connections (per listener, 3 listeners) and --http-max-connections"
        );
    }
    Some(current)
}
