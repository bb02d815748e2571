//! Errors of a load run.

use std::path::PathBuf;
use std::time::Duration;

/// Why a load run could not be set up or measured.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The target is not a loopback address; the tool only loads the local
    /// machine.
    #[error(
        "refusing to target {host}: only loopback addresses (127.0.0.0/8, ::1, localhost) are allowed"
    )]
    NotLoopback {
        /// The host as given.
        host: String,
    },
    /// A numeric option is outside its allowed range.
    #[error("--{option} must be between {min} and {max}, got {value}")]
    OutOfRange {
        /// The option's long name.
        option: &'static str,
        /// The value given.
        value: u64,
        /// Smallest allowed value.
        min: u64,
        /// Largest allowed value.
        max: u64,
    },
    /// Port 0 cannot be connected to.
    #[error("--port, --publisher-ports and --subscriber-ports must not hold 0")]
    PortZero,
    /// --qos is not 0 or 1.
    #[error("--qos must be 0 or 1, got {0}")]
    UnsupportedQoS(u8),
    /// publishers × messages × subscribers is more than the run may record.
    #[error(
        "{deliveries} expected deliveries is more than the {max} one run may record; lower --publishers, --messages or --subscribers"
    )]
    TooManyDeliveries {
        /// publishers × messages × subscribers.
        deliveries: u64,
        /// The bound.
        max: u64,
    },
    /// A client could not connect or subscribe before the time bound.
    #[error("{client}: not ready after {waited:?}")]
    SetupTimeout {
        /// Client id.
        client: String,
        /// How long we waited.
        waited: Duration,
    },
    /// A client's connection failed during setup.
    #[error("{client}: {reason}")]
    Setup {
        /// Client id.
        client: String,
        /// What went wrong, from rumqttc.
        reason: String,
    },
    /// The broker refused the `bench/#` subscription.
    #[error("{client}: subscription to {filter} refused by the broker")]
    SubscriptionRefused {
        /// Client id.
        client: String,
        /// The filter.
        filter: &'static str,
    },
    /// An idle connection failed before its CONNACK.
    #[error("idle connection {connection}: {reason}")]
    Idle {
        /// 0-based connection number.
        connection: u32,
        /// What went wrong.
        reason: String,
    },
    /// Not every idle connection was CONNACKed in time.
    #[error("{connected} of {wanted} connections CONNACKed after {waited:?}")]
    IdleTimeout {
        /// CONNACKed so far.
        connected: usize,
        /// Asked for.
        wanted: u32,
        /// How long we waited.
        waited: Duration,
    },
    /// A CA file, a client certificate or key, or the directory of them
    /// (idle connections, connect storms) could not be used.
    #[error("{}: {reason}", path.display())]
    Tls {
        /// The file or directory.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
}
