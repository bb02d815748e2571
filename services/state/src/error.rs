//! The `state` crate's errors. At the broker edge they become a
//! [`broker::StoreError`] (and so a CONNACK / PUBACK reason code there).

/// What can go wrong keeping device state.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The database failed.
    #[error(transparent)]
    Store(#[from] store::Error),
    /// A stored retained message that cannot be turned back into one.
    #[error("retained message {tenant}/{topic} in the database is unreadable: {reason}")]
    CorruptRow {
        tenant: String,
        topic: String,
        reason: &'static str,
    },
    /// The write-behind buffer holds as many topics as it may.
    #[error("retained write buffer full ({capacity} topics waiting)")]
    BufferFull { capacity: usize },
    /// Changes could not be committed (the transaction's error, as text:
    /// it may have been shared by many waiters).
    #[error("retained changes not durable: {0}")]
    NotDurable(String),
    /// The writer was shut down; nothing more is persisted.
    #[error("retained writer stopped")]
    Stopped,
    /// The session write buffer holds as many changes as it may.
    #[error("session write buffer full ({capacity} changes waiting)")]
    SessionBufferFull { capacity: usize },
    /// Session changes could not be committed (the transaction's error).
    #[error("session changes not durable: {0}")]
    SessionsNotDurable(String),
    /// The session writer was shut down; nothing more is persisted.
    #[error("session writer stopped")]
    SessionsStopped,
}

impl From<&Error> for broker::StoreError {
    fn from(e: &Error) -> Self {
        broker::StoreError(e.to_string())
    }
}
