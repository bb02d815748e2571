//! [`ConnControl`]: the link between a session and the connection serving
//! it, through which the rest of the broker reaches a connection: waking
//! it for deliveries, kicking it, shutdown, its keep-alive state, and
//! notices from the platform (new publish limits). Kept small: one per
//! connection for its whole life (issue 16).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};

use futures::task::AtomicWaker;
use mqtt::ReasonCode;

use crate::PublishLimits;
use crate::signal::Signal;

/// The link between a session and the connection currently serving it.
#[derive(Debug)]
pub(crate) struct ConnControl {
    pub(crate) id: u64,
    /// The one thing a waiting connection waits on besides its socket:
    /// woken when deliveries are queued, when it is kicked and at shutdown
    /// ([`ConnControl::wake`]). A `Notify`'s waiter and a shutdown
    /// token's were 136 bytes of every waiting connection's future, and
    /// the kick's own `Notify` 40 bytes here (issue 16).
    waker: AtomicWaker,
    /// A wake not yet seen by the connection (a `notify_one` permit).
    woken: AtomicBool,
    /// When the connection last heard from its client, milliseconds on
    /// the broker's `KeepAliveWheel` clock.
    last_heard: AtomicU64,
    /// Whether the connection holds its reads back (a held-back PUBLISH,
    /// full subscribers): the client's silence is ours then, and keeps no
    /// keep-alive deadline.
    holding_reads: AtomicBool,
    /// Set, with a wake, by the `KeepAliveWheel` once the keep-alive
    /// period passed in silence.
    keep_alive_expired: AtomicBool,
    /// Set to close the connection (session takeover, MQTT-3.1.4-3, or an
    /// administrative disconnect), with a wake: the connection looks at
    /// it whenever it wakes.
    kicked: AtomicBool,
    /// What the platform told the connection: made at the first notice,
    /// since most connections never get one (boxed: 88 bytes inline of
    /// every idle connection otherwise, issue 16).
    notices: Mutex<Option<Box<Notices>>>,
    /// Fired by the connection once it has let go of the session.
    pub(crate) finished: Signal,
    /// Whether `notices` holds publish limits not yet picked up, so the
    /// hot path reads one atomic and no lock.
    limits_changed: AtomicBool,
    /// Who authenticated the connection, so that deleting a credential
    /// can end the sessions it opened. Set once, at CONNECT (shared with
    /// the session's owner).
    pub(crate) principal: std::sync::OnceLock<Arc<str>>,
    /// The connection's protocol, so that the platform can tell whether a
    /// DISCONNECT can reach it. Set once, at CONNECT.
    pub(crate) version: std::sync::OnceLock<mqtt::ProtocolVersion>,
}

/// See [`ConnControl::notices`].
#[derive(Debug, Default)]
struct Notices {
    /// The reason the DISCONNECT gives when `kicked` fires; takeover when
    /// unset. With a Reason String for the client, if any.
    kick: Option<(ReasonCode, Option<String>)>,
    /// Publish limits set by the platform while connected, for the
    /// connection to pick up at its next PUBLISH.
    limits: Option<PublishLimits>,
}

impl ConnControl {
    pub(crate) fn new(id: u64) -> Arc<Self> {
        Arc::new(Self {
            id,
            waker: AtomicWaker::new(),
            woken: AtomicBool::new(false),
            last_heard: AtomicU64::new(0),
            holding_reads: AtomicBool::new(false),
            keep_alive_expired: AtomicBool::new(false),
            kicked: AtomicBool::new(false),
            notices: Mutex::new(None),
            finished: Signal::default(),
            limits_changed: AtomicBool::new(false),
            principal: std::sync::OnceLock::new(),
            version: std::sync::OnceLock::new(),
        })
    }

    /// Gives the connection new publish limits, in force from its next
    /// PUBLISH (with full buckets).
    pub(crate) fn set_limits(&self, limits: PublishLimits) {
        self.notices().get_or_insert_default().limits = Some(limits);
        self.limits_changed.store(true, Ordering::Release);
    }

    fn notices(&self) -> MutexGuard<'_, Option<Box<Notices>>> {
        self.notices.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// New publish limits, if the platform set some since the last call.
    pub(crate) fn take_limits(&self) -> Option<PublishLimits> {
        // A plain load first: the hot path pays no read-modify-write.
        if !self.limits_changed.load(Ordering::Relaxed)
            || !self.limits_changed.swap(false, Ordering::Acquire)
        {
            return None;
        }
        self.notices().as_mut().and_then(|n| n.limits.take())
    }

    /// Closes the connection with `reason`.
    pub(crate) fn kick(&self, reason: ReasonCode) {
        self.kick_saying(reason, None);
    }

    /// Closes the connection with `reason` and, for MQTT 5, a Reason
    /// String saying why.
    pub(crate) fn kick_saying(&self, reason: ReasonCode, why: Option<String>) {
        self.notices().get_or_insert_default().kick = Some((reason, why));
        self.take_over();
    }

    /// Closes the connection with the reason a kick gave, if any, else as
    /// taken over (MQTT-3.1.4-3).
    pub(crate) fn take_over(&self) {
        self.kicked.store(true, Ordering::Release);
        self.wake();
    }

    /// Whether the connection was told to close ([`ConnControl::kick`]).
    pub(crate) fn is_kicked(&self) -> bool {
        self.kicked.load(Ordering::Acquire)
    }

    /// Wakes the connection, or its next wait ends at once: a wake is
    /// never lost (the permit of `Notify::notify_one`).
    pub(crate) fn wake(&self) {
        self.woken.store(true, Ordering::Release);
        self.waker.wake();
    }

    /// Records that the connection heard from its client at `ms`
    /// (`KeepAliveWheel::now_ms`).
    pub(crate) fn heard_at(&self, ms: u64) {
        self.last_heard.store(ms, Ordering::Relaxed);
    }

    pub(crate) fn last_heard(&self) -> u64 {
        self.last_heard.load(Ordering::Relaxed)
    }

    /// Says whether the connection holds its reads back.
    pub(crate) fn hold_reads(&self, holding: bool) {
        // A plain load first: most turns change nothing.
        if self.holding_reads.load(Ordering::Relaxed) != holding {
            self.holding_reads.store(holding, Ordering::Relaxed);
        }
    }

    pub(crate) fn is_holding_reads(&self) -> bool {
        self.holding_reads.load(Ordering::Relaxed)
    }

    /// The keep-alive period passed in silence: wakes the connection.
    pub(crate) fn expire_keep_alive(&self) {
        self.keep_alive_expired.store(true, Ordering::Release);
        self.wake();
    }

    pub(crate) fn keep_alive_expired(&self) -> bool {
        self.keep_alive_expired.load(Ordering::Acquire)
    }

    pub(crate) fn clear_keep_alive_expired(&self) {
        self.keep_alive_expired.store(false, Ordering::Release);
    }

    /// Forgets the task the last [`ConnControl::poll_woken`] registered:
    /// while the connection works, a wake only leaves its permit.
    pub(crate) fn stop_waiting(&self) {
        drop(self.waker.take());
    }

    /// Ready once [`ConnControl::wake`] was called since the last time it
    /// was; the task of `cx` is woken by the next call otherwise.
    pub(crate) fn poll_woken(&self, cx: &mut Context<'_>) -> Poll<()> {
        // Registered before looking, so a wake in between is not missed.
        self.waker.register(cx.waker());
        if self.woken.swap(false, Ordering::AcqRel) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }

    /// Why the connection was kicked.
    pub(crate) fn kick_reason(&self) -> ReasonCode {
        self.notices()
            .as_ref()
            .and_then(|n| n.kick.as_ref())
            .map_or(ReasonCode::SessionTakenOver, |(r, _)| *r)
    }

    /// The Reason String of the kick, if it has one.
    pub(crate) fn kick_detail(&self) -> Option<String> {
        self.notices()
            .as_ref()
            .and_then(|n| n.kick.as_ref())
            .and_then(|(_, why)| why.clone())
    }
}
