//! Publish rate limits on the connection (the buckets are in
//! [`crate::limits`]). Over the limit:
//! - MQTT 5: QoS 1/2 get PUBACK/PUBREC 0x97 Quota exceeded and are not
//!   routed (0x96 Message rate too high is not allowed in those packets,
//!   3.4.2.1), QoS 0 is dropped; both are counted. After
//!   `Config::rate_limit_strikes` such refusals in a row the client is
//!   disconnected with DISCONNECT 0x96 Message rate too high.
//! - MQTT 3.1.1 has no way to say no, so the connection holds the PUBLISH
//!   and stops reading its socket until the buckets allow it: TCP
//!   back-pressure slows the client, and nothing is refused or lost.

use mqtt::{Packet, QoS};
use tokio::time::Instant;
use tracing::{debug, warn};

use super::Conn;
use crate::Error;
use crate::limits::Limiter;
use crate::metrics::{self, Throttle};

/// A 3.1.1 PUBLISH waiting for its tokens; the socket is not read
/// meanwhile.
pub(super) struct Stalled {
    pub(super) packet: Packet,
    pub(super) until: Instant,
}

/// Whether a packet may be handled now.
pub(super) enum Pace {
    Go(Packet),
    Wait(Stalled),
}

impl Conn {
    /// Picks up limits the platform set while we were connected.
    fn refresh_limits(&mut self, now: Instant) {
        if let Some(limits) = self.ctl.take_limits() {
            debug!(?limits, "publish limits changed");
            self.limiter = Limiter::new(limits, now).map(Box::new);
        }
    }

    /// MQTT 3.1.1: whether `packet` (if a PUBLISH) has to wait for its
    /// tokens; if not, it is admitted and charged. `first`: the
    /// packet was not held back before (it is counted once).
    pub(super) fn hold_back(&mut self, packet: Packet, first: bool) -> Pace {
        let Packet::Publish(p) = &packet else {
            return Pace::Go(packet);
        };
        let now = Instant::now();
        self.refresh_limits(now);
        let Some(limiter) = &mut self.limiter else {
            return Pace::Go(packet);
        };
        match limiter.acquire(now, p.payload.len()) {
            Ok(()) => Pace::Go(packet),
            Err(wait) => {
                if first {
                    metrics::throttled(&self.tenant.id, Throttle::Delayed);
                    debug!(
                        wait_ms = wait.as_millis(),
                        "publish held back by the rate limit"
                    );
                }
                Pace::Wait(Stalled {
                    packet,
                    until: now + wait,
                })
            }
        }
    }

    /// MQTT 5: whether a PUBLISH of `payload` bytes is admitted (and
    /// charged). A refusal is counted; too many in a row end the
    /// connection.
    pub(super) fn admit(&mut self, qos: QoS, payload: usize) -> Result<bool, Error> {
        let now = Instant::now();
        self.refresh_limits(now);
        let Some(limiter) = &mut self.limiter else {
            return Ok(true);
        };
        if limiter.acquire(now, payload).is_ok() {
            self.strikes = 0;
            return Ok(true);
        }
        self.strikes = self.strikes.saturating_add(1);
        let what = if qos == QoS::AtMostOnce {
            Throttle::Dropped
        } else {
            Throttle::Refused
        };
        metrics::throttled(&self.tenant.id, what);
        debug!(strikes = self.strikes, ?what, "publish over the rate limit");
        if self.strikes >= self.broker.config().rate_limit_strikes {
            metrics::rate_limit_disconnect(&self.tenant.id);
            warn!(
                strikes = self.strikes,
                "client keeps publishing over its rate limit"
            );
            return Err(Error::RateLimited {
                strikes: self.strikes,
            });
        }
        Ok(false)
    }
}
