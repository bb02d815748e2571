//! Publish rate limits: [`PublishLimits`] (what an identity is allowed)
//! and the per-connection `Limiter` of two token buckets that enforces
//! them. A limiter belongs to one connection task and is never shared, so
//! the hot path takes no lock and touches no other connection's state.

use tokio::time::{Duration, Instant};

/// One rate: a steady `per_second` and a `burst` that may be spent at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Tokens added per second (at least 1).
    pub per_second: u64,
    /// Bucket size: how much may be spent at once after a quiet spell (at
    /// least 1).
    pub burst: u64,
}

impl Rate {
    /// `per_second` with `burst` (one second's worth when `None`); zeros are
    /// raised to 1 so a bucket always refills.
    pub fn new(per_second: u64, burst: Option<u64>) -> Rate {
        let per_second = per_second.max(1);
        Rate {
            per_second,
            burst: burst.unwrap_or(per_second).max(1),
        }
    }
}

/// What a client may publish: messages and payload bytes per second, each
/// optional (`None`: not limited). The default limits nothing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PublishLimits {
    /// PUBLISH packets per second.
    pub messages: Option<Rate>,
    /// Payload bytes per second.
    pub bytes: Option<Rate>,
}

impl PublishLimits {
    /// Whether nothing is limited.
    pub fn is_unlimited(&self) -> bool {
        self.messages.is_none() && self.bytes.is_none()
    }
}

/// A token bucket. Tokens are `f64` so any rate refills smoothly; a take
/// may leave the bucket in debt (see [`TokenBucket::wait`]).
#[derive(Debug, Clone)]
pub(crate) struct TokenBucket {
    rate: f64,
    capacity: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub(crate) fn new(rate: Rate, now: Instant) -> TokenBucket {
        // u64 → f64 loses precision only above 2^53 per second: irrelevant.
        let (per_second, burst) = (rate.per_second as f64, rate.burst as f64);
        TokenBucket {
            rate: per_second,
            capacity: burst,
            tokens: burst,
            last: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        if now > self.last {
            let elapsed = now.duration_since(self.last).as_secs_f64();
            self.tokens = (self.tokens + elapsed * self.rate).min(self.capacity);
            self.last = now;
        }
    }

    /// How long until `cost` may be taken; `None`: now. A cost above the
    /// burst needs a full bucket rather than never passing; the debt it
    /// leaves then holds back what follows, so the average still holds.
    pub(crate) fn wait(&mut self, now: Instant, cost: f64) -> Option<Duration> {
        self.refill(now);
        let need = cost.min(self.capacity);
        if self.tokens >= need {
            return None;
        }
        // Rounded up to a microsecond so that waiting that long is enough.
        let secs = (need - self.tokens) / self.rate + 1e-6;
        Some(Duration::try_from_secs_f64(secs).unwrap_or(Duration::MAX))
    }

    pub(crate) fn take(&mut self, cost: f64) {
        self.tokens -= cost;
    }
}

/// Both buckets of one connection.
#[derive(Debug, Clone)]
pub(crate) struct Limiter {
    messages: Option<TokenBucket>,
    bytes: Option<TokenBucket>,
}

impl Limiter {
    /// A limiter for `limits`, or `None` when nothing is limited (so an
    /// unlimited connection pays one `Option` check per PUBLISH).
    pub(crate) fn new(limits: PublishLimits, now: Instant) -> Option<Limiter> {
        if limits.is_unlimited() {
            return None;
        }
        Some(Limiter {
            messages: limits.messages.map(|r| TokenBucket::new(r, now)),
            bytes: limits.bytes.map(|r| TokenBucket::new(r, now)),
        })
    }

    /// Admits one message of `payload` bytes (charging both buckets), or
    /// says how long to wait (charging nothing: a refused message costs
    /// the client no tokens, so slowing down is enough to recover).
    pub(crate) fn acquire(&mut self, now: Instant, payload: usize) -> Result<(), Duration> {
        let size = payload as f64;
        let wait_messages = self.messages.as_mut().and_then(|b| b.wait(now, 1.0));
        let wait_bytes = self.bytes.as_mut().and_then(|b| b.wait(now, size));
        if let Some(wait) = wait_messages.max(wait_bytes) {
            return Err(wait);
        }
        if let Some(b) = &mut self.messages {
            b.take(1.0);
        }
        if let Some(b) = &mut self.bytes {
            b.take(size);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn limits(msgs: Option<(u64, u64)>, bytes: Option<(u64, u64)>) -> PublishLimits {
        PublishLimits {
            messages: msgs.map(|(r, b)| Rate::new(r, Some(b))),
            bytes: bytes.map(|(r, b)| Rate::new(r, Some(b))),
        }
    }

    #[test]
    fn unlimited_needs_no_limiter() {
        assert!(Limiter::new(PublishLimits::default(), Instant::now()).is_none());
        assert_eq!(Rate::new(0, Some(0)), Rate::new(1, Some(1)));
        assert_eq!(Rate::new(7, None).burst, 7);
    }

    #[test]
    fn burst_then_steady_rate() {
        let t0 = Instant::now();
        let mut l = Limiter::new(limits(Some((10, 5)), None), t0).unwrap();
        for _ in 0..5 {
            assert_eq!(l.acquire(t0, 1), Ok(()));
        }
        let wait = l.acquire(t0, 1).unwrap_err();
        assert!(wait > Duration::from_millis(99) && wait < Duration::from_millis(101));
        assert_eq!(l.acquire(t0 + wait, 1), Ok(()));
        assert!(l.acquire(t0 + wait, 1).is_err());
    }

    #[test]
    fn a_message_larger_than_the_burst_passes_on_a_full_bucket_and_leaves_debt() {
        let t0 = Instant::now();
        let mut l = Limiter::new(limits(None, Some((100, 100))), t0).unwrap();
        assert_eq!(l.acquire(t0, 300), Ok(()));
        // 200 bytes of debt plus 1 byte for the next: just over 2 s.
        let wait = l.acquire(t0, 1).unwrap_err();
        assert!(wait >= Duration::from_millis(2000), "{wait:?}");
        assert!(l.acquire(t0 + Duration::from_millis(2011), 1).is_ok());
    }

    #[test]
    fn a_refused_message_charges_neither_bucket() {
        let t0 = Instant::now();
        let mut l = Limiter::new(limits(Some((1, 1)), Some((1000, 1000))), t0).unwrap();
        assert_eq!(l.acquire(t0, 600), Ok(()));
        // Refused by the message bucket: the 600 bytes are not charged.
        assert!(l.acquire(t0, 600).is_err());
        let later = t0 + Duration::from_millis(1001);
        assert_eq!(l.acquire(later, 400), Ok(()));
    }

    proptest! {
        /// Whatever the timing, no more than burst + rate × elapsed
        /// messages (and bytes, plus one message's overshoot) are admitted,
        /// and waiting the returned time always admits the message.
        #[test]
        fn admits_at_most_burst_plus_rate_times_elapsed(
            rate in 1u64..200,
            burst in 1u64..50,
            byte_rate in 1u64..10_000,
            byte_burst in 1u64..5_000,
            steps in prop::collection::vec((0u64..300, 0usize..3_000), 1..200),
        ) {
            let t0 = Instant::now();
            let mut l = Limiter::new(
                limits(Some((rate, burst)), Some((byte_rate, byte_burst))),
                t0,
            ).unwrap();
            let (mut now, mut admitted, mut bytes, mut largest) = (t0, 0u64, 0u64, 0u64);
            for (gap_ms, size) in steps {
                now += Duration::from_millis(gap_ms);
                match l.acquire(now, size) {
                    Ok(()) => {}
                    Err(wait) => {
                        now += wait;
                        prop_assert_eq!(l.acquire(now, size), Ok(()));
                    }
                }
                admitted += 1;
                bytes += size as u64;
                largest = largest.max(size as u64);
                let elapsed = now.duration_since(t0).as_secs_f64();
                prop_assert!(admitted as f64 <= burst as f64 + rate as f64 * elapsed + 1e-6);
                prop_assert!(
                    bytes as f64 <= (byte_burst + largest) as f64 + byte_rate as f64 * elapsed + 1e-3
                );
            }
        }
    }
}
