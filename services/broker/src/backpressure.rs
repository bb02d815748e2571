//! Back-pressure from a full subscriber to its publishers (issue 16).
//!
//! Routing runs on the publisher's connection task, so a burst from many
//! publishers fills a subscriber's queue far faster than one socket drains
//! it. Instead of dropping at the bound, a session whose queue reaches its
//! high-water mark ([`Marks`]) makes every publisher that adds to it stop
//! reading its socket (TCP then slows the client, as the 3.1.1 rate limit
//! does) until the queue drains below the low-water mark; the subscriber's
//! connection wakes them ([`crate::session::Session::drained`]), nobody
//! polls.
//!
//! Nothing is lost on the way: the message that crosses the mark is
//! queued, and publishers already past their check when the mark is
//! reached each add at most one more message per full session before they
//! stop. That overshoot fits between the high-water mark and the bound
//! (the last eighth of it), so the configured bound stays the bound on
//! memory.
//!
//! The pause is bounded ([`Config::slow_consumer_timeout`]): a subscriber
//! that stays above the mark that long is a slow consumer, handled by
//! [`SlowConsumerPolicy`], and publishers stop waiting for it until it has
//! drained below the low-water mark again.
//!
//! [`Config::slow_consumer_timeout`]: crate::Config::slow_consumer_timeout

use std::sync::Arc;

use tokio::time::{Duration, Instant};

use crate::session::Session;

/// What happens to a subscriber whose queue stayed above its high-water
/// mark for longer than the slow-consumer timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SlowConsumerPolicy {
    /// Publishers no longer wait for it: messages past its bound are
    /// dropped and counted (per session, per tenant and in
    /// `mqtt_messages_dropped_total{reason="slow_consumer"}`).
    #[default]
    Drop,
    /// Its connection is closed: MQTT 5 gets DISCONNECT 0x97 Quota
    /// exceeded (an administrative limit, 4.13: 0x93 Receive Maximum
    /// exceeded is about the client's own PUBLISHes, not ours), 3.1.1 a
    /// closed socket.
    Disconnect,
}

impl SlowConsumerPolicy {
    /// The name in settings and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            SlowConsumerPolicy::Drop => "drop",
            SlowConsumerPolicy::Disconnect => "disconnect",
        }
    }
}

/// Where back-pressure starts and ends for a queue bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Marks {
    /// From here on, publishers adding to the queue pause.
    pub(crate) high: usize,
    /// Below this, paused publishers go on.
    pub(crate) low: usize,
}

impl Marks {
    /// The marks for a bound of `bound` (messages or bytes): the high
    /// mark leaves an eighth of it for publishers already past their
    /// check; the low one waits for half to drain, so that publishers do
    /// not wake for every message sent.
    pub(crate) fn of(bound: usize) -> Self {
        Self {
            high: bound - bound / 8,
            low: bound / 2,
        }
    }
}

/// A session's standing with its publishers (in its state, under its lock).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Backlog {
    /// When the queue reached its high-water mark while connected; `None`
    /// once it drained below the low-water mark.
    pub(crate) since: Option<Instant>,
    /// It stayed full past the bound: publishers no longer wait for it.
    pub(crate) slow: bool,
}

/// Waits until none of `full` holds its publishers back: each has drained
/// below its low-water mark, gone offline, or stayed above its high-water
/// mark for `bound` and was handled by `policy` as a slow consumer.
///
/// Why the bound: a publisher paused for one subscriber sends nothing to
/// anyone else in the tenant meanwhile. Without it, one subscriber that
/// stops reading would stall every publisher it shares a topic with, and
/// through them every other subscriber of theirs, for as long as it likes.
/// With it, the others lose at most `bound` of traffic once per time that
/// subscriber fills up; after that its messages are dropped (or it is
/// disconnected) and theirs flow at full speed until it catches up.
///
/// Cancel-safe: the state lives in the sessions; a new call picks up where
/// the last left off.
pub(crate) async fn until_drained(
    full: Vec<Arc<Session>>,
    bound: Duration,
    policy: SlowConsumerPolicy,
) {
    for session in full {
        loop {
            // Registered before the check, so a wake-up between the check
            // and the await is not lost.
            let changed = session.change();
            let Some(since) = session.holding_back() else {
                break;
            };
            tokio::select! {
                () = changed => {}
                () = tokio::time::sleep_until(since + bound) => session.slow_consumer(policy),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{Delivery, Message};
    use crate::session::{ConnControl, QueueLimits, TenantQueue};
    use bytes::Bytes;
    use futures::FutureExt;
    use mqtt::{Properties, QoS, ReasonCode, TopicName};
    use std::sync::atomic::Ordering;

    fn delivery() -> Delivery {
        Delivery {
            message: Arc::new(Message::new(
                TopicName::parse("t").unwrap(),
                Bytes::from_static(b"p"),
                QoS::AtLeastOnce,
                false,
                Properties::default(),
                None,
                Instant::now(),
            )),
            qos: QoS::AtLeastOnce,
            retain: false,
            subscription_ids: vec![],
            shared: None,
            seq: None,
        }
    }

    /// A connected session bounded at 8 messages (marks 7 and 4), in a
    /// tenant tally of its own.
    fn connected() -> (Arc<Session>, Arc<ConnControl>, Arc<TenantQueue>) {
        let tenant = Arc::new(TenantQueue::default());
        let s = Arc::new(Session::new(
            Arc::from("sub"),
            Arc::from("sub"),
            QueueLimits::messages(8),
            tenant.clone(),
        ));
        let ctl = ConnControl::new(1);
        s.lock().conn = Some(ctl.clone());
        (s, ctl, tenant)
    }

    /// Queues one delivery as routing does; whether it was queued, and
    /// whether its publisher is to wait.
    fn offer(s: &Session) -> (bool, bool) {
        match s.admit(delivery(), 0, false) {
            Some(d) => (true, s.place(d)),
            None => (false, false),
        }
    }

    /// What the subscriber's connection does: sends `n`, then relieves.
    fn drain(s: &Session, n: usize) {
        let mut st = s.lock();
        for _ in 0..n {
            st.pending.pop_front();
        }
        if st.relieve() {
            drop(st);
            s.changed();
        }
    }

    #[test]
    fn the_marks_leave_room_under_the_bound() {
        assert_eq!(
            Marks::of(10_000),
            Marks {
                high: 8750,
                low: 5000
            }
        );
        assert_eq!(Marks::of(8), Marks { high: 7, low: 4 });
        // A bound too small for a margin pauses at the bound itself.
        assert_eq!(Marks::of(1), Marks { high: 1, low: 0 });
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_queue_holds_its_publishers_back_until_it_drains() {
        let (s, _ctl, _) = connected();
        for _ in 0..6 {
            assert_eq!(offer(&s), (true, false));
        }
        // The message that reaches the mark is queued, not lost; so is
        // another publisher's, already past its check, up to the bound.
        assert_eq!(offer(&s), (true, true));
        assert_eq!(offer(&s), (true, true));
        assert_eq!(offer(&s), (false, false));
        assert_eq!(s.lock().dropped().queue_full, 1);

        let mut waiting = Box::pin(until_drained(
            vec![s.clone()],
            Duration::from_secs(5),
            SlowConsumerPolicy::Drop,
        ));
        assert!(waiting.as_mut().now_or_never().is_none());
        // Draining to just above the low-water mark wakes nobody.
        drain(&s, 3);
        assert!(waiting.as_mut().now_or_never().is_none());
        drain(&s, 1);
        assert!(waiting.as_mut().now_or_never().is_some());
        assert_eq!(s.holding_back(), None);
        assert!(!s.lock().backlog.slow);
    }

    #[tokio::test(start_paused = true)]
    async fn past_the_bound_a_slow_consumer_drops_and_holds_nobody_back() {
        let (s, ctl, tenant) = connected();
        for _ in 0..7 {
            offer(&s);
        }
        assert!(s.holding_back().is_some());
        // Nothing drains it: the bound runs out (paused clock).
        until_drained(
            vec![s.clone()],
            Duration::from_secs(5),
            SlowConsumerPolicy::Drop,
        )
        .await;
        assert_eq!(s.holding_back(), None);
        assert!(!ctl.is_kicked());
        // Publishers go on: up to the bound without waiting, then dropped
        // and counted for the session and its tenant.
        assert_eq!(offer(&s), (true, false));
        for _ in 0..3 {
            assert_eq!(offer(&s), (false, false));
        }
        assert_eq!(s.lock().dropped().slow_consumer, 3);
        assert_eq!(tenant.slow_dropped.load(Ordering::Relaxed), 3);
        // Once it has caught up it holds publishers back again.
        drain(&s, 4);
        assert!(!s.lock().backlog.slow);
        for _ in 0..2 {
            assert_eq!(offer(&s), (true, false));
        }
        assert_eq!(offer(&s), (true, true));
    }

    #[tokio::test(start_paused = true)]
    async fn the_disconnect_policy_closes_the_slow_consumer_with_quota_exceeded() {
        let (s, ctl, _) = connected();
        for _ in 0..7 {
            offer(&s);
        }
        until_drained(
            vec![s.clone()],
            Duration::from_secs(5),
            SlowConsumerPolicy::Disconnect,
        )
        .await;
        assert!(ctl.is_kicked());
        assert_eq!(ctl.kick_reason(), ReasonCode::QuotaExceeded);
        assert_eq!(s.holding_back(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn an_offline_session_never_holds_publishers_back() {
        let (s, _ctl, _) = connected();
        for _ in 0..6 {
            offer(&s);
        }
        let mut waiting = Box::pin(until_drained(
            vec![s.clone()],
            Duration::from_secs(5),
            SlowConsumerPolicy::Drop,
        ));
        assert_eq!(offer(&s), (true, true));
        assert!(waiting.as_mut().now_or_never().is_none());
        // Its connection goes: the waiting publisher is woken and goes on.
        s.lock().conn = None;
        s.stop_holding_back();
        assert!(waiting.as_mut().now_or_never().is_some());
        assert_eq!(offer(&s), (true, false));
    }
}
