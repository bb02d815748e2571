//! [`SessionWrites`]: one batch of changes to persistent sessions for
//! [`crate::Store::write_sessions`] (in `session_writes.rs`), its checks, and what
//! it did ([`SessionWriteCount`]).

use std::collections::HashSet;
use std::hash::Hash;

use chrono::{DateTime, Utc};

use crate::sessions::invalid;
use crate::{
    Error, QueueEntry, QueueState, SessionKey, SessionMessage, SessionRecord, SessionSubscription,
};

/// A session went offline: its deadlines start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionDisconnect {
    pub key: SessionKey,
    pub at: DateTime<Utc>,
    /// When the session ends unless resumed; `None`: never.
    pub expires_at: Option<DateTime<Utc>>,
    /// When its will is due; `None` discards the will (a normal
    /// DISCONNECT, or it was published already).
    pub will_due_at: Option<DateTime<Utc>>,
}

/// A subscription added (or replaced) or removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubscriptionWrite {
    Set(SessionKey, SessionSubscription),
    Remove(SessionKey, String),
}

impl SubscriptionWrite {
    pub(crate) fn key(&self) -> (&SessionKey, &str) {
        match self {
            SubscriptionWrite::Set(k, s) => (k, &s.filter),
            SubscriptionWrite::Remove(k, f) => (k, f),
        }
    }
}

/// A queued delivery changed state, or (`to: None`) is done: acknowledged,
/// expired, dropped or given to another member of its shared group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueTransition {
    pub key: SessionKey,
    pub seq: u64,
    pub to: Option<QueueState>,
}

/// A persistent session completed the routed QoS 2 message `routed_id`
/// (its client sent PUBREC; see migration 0017): a journal replay into
/// the session skips it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompletedWrite {
    pub key: SessionKey,
    pub routed_id: [u8; 16],
}

/// An incoming QoS 2 packet id now awaiting PUBREL, or released.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncomingWrite {
    pub key: SessionKey,
    pub packet_id: u16,
    pub awaiting: bool,
}

/// One batch for [`crate::Store::write_sessions`]; see its docs.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SessionWrites {
    /// Sessions deleted with everything they hold, first: ended, or about
    /// to be replaced by a clean start (also in `upserted`).
    pub deleted: Vec<SessionKey>,
    /// Session rows created or replaced (at CONNECT); keeps what the
    /// session holds unless also in `deleted`. Bumps the generation.
    pub upserted: Vec<SessionRecord>,
    pub disconnected: Vec<SessionDisconnect>,
    /// Wills published (or dropped): never sent again.
    pub wills_cleared: Vec<SessionKey>,
    pub subscriptions: Vec<SubscriptionWrite>,
    /// Bodies the new queue rows reference (each once).
    pub messages: Vec<SessionMessage>,
    pub enqueued: Vec<(SessionKey, QueueEntry)>,
    pub transitions: Vec<QueueTransition>,
    pub incoming: Vec<IncomingWrite>,
    /// Written with the queue transitions, in the same transaction.
    pub completed: Vec<CompletedWrite>,
}

impl SessionWrites {
    pub fn is_empty(&self) -> bool {
        self.deleted.is_empty()
            && self.upserted.is_empty()
            && self.disconnected.is_empty()
            && self.wills_cleared.is_empty()
            && self.subscriptions.is_empty()
            && self.messages.is_empty()
            && self.enqueued.is_empty()
            && self.transitions.is_empty()
            && self.incoming.is_empty()
            && self.completed.is_empty()
    }

    /// Every change well-formed, so that the database never refuses one
    /// (and with it the whole batch).
    pub fn check(&self) -> Result<(), Error> {
        let keys = self
            .deleted
            .iter()
            .chain(&self.wills_cleared)
            .chain(self.disconnected.iter().map(|d| &d.key))
            .chain(self.subscriptions.iter().map(|s| s.key().0))
            .chain(self.enqueued.iter().map(|(k, _)| k))
            .chain(self.transitions.iter().map(|t| &t.key))
            .chain(self.incoming.iter().map(|i| &i.key))
            .chain(self.completed.iter().map(|c| &c.key));
        for key in keys {
            key.check()?;
        }
        for r in &self.upserted {
            r.check()?;
        }
        for s in &self.subscriptions {
            if let SubscriptionWrite::Set(_, s) = s {
                s.check()?;
            }
        }
        for m in &self.messages {
            m.check()?;
        }
        for (_, e) in &self.enqueued {
            e.check()?;
        }
        for t in &self.transitions {
            if i64::try_from(t.seq).is_err() {
                return Err(invalid("seq below 2^63"));
            }
            t.to.map_or(Ok(()), |s| s.check(None))?;
        }
        if self.incoming.iter().any(|i| i.packet_id == 0) {
            return Err(invalid("packet id 0"));
        }
        Ok(())
    }
}

/// What a [`crate::Store::write_sessions`] batch did (rows affected).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SessionWriteCount {
    pub sessions_deleted: u64,
    pub sessions_upserted: u64,
    pub sessions_updated: u64,
    pub subscriptions: u64,
    pub messages: u64,
    pub enqueued: u64,
    pub transitions: u64,
    pub incoming: u64,
    /// Bodies deleted because no queue row references them any more.
    pub collected: u64,
}

impl SessionWriteCount {
    /// Every row written.
    pub fn rows(&self) -> u64 {
        self.sessions_deleted
            + self.sessions_upserted
            + self.sessions_updated
            + self.subscriptions
            + self.messages
            + self.enqueued
            + self.transitions
            + self.incoming
            + self.collected
    }
}

/// The last item of each key, in the order given.
pub(crate) fn last_per<'a, T, K: Hash + Eq>(
    items: &'a [T],
    key: impl Fn(&'a T) -> K,
) -> Vec<&'a T> {
    let mut seen = HashSet::with_capacity(items.len());
    let mut kept: Vec<&T> = items.iter().rev().filter(|t| seen.insert(key(t))).collect();
    kept.reverse();
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_last_write_of_a_key_counts() {
        let items = [("a", 1), ("b", 1), ("a", 2), ("c", 1), ("b", 2)];
        let kept = last_per(&items, |(k, _)| *k);
        assert_eq!(kept, [&("a", 2), &("c", 1), &("b", 2)]);
    }
}
