//! Per-caller rate limit: a token bucket for each authenticated caller
//! (token subject, role and tenant, so each API key has its own), checked
//! by the [`Principal`](super::Principal) extractor. Over the limit → 429
//! with `Retry-After`.
//!
//! In memory, per process: with N nodes a caller gets up to N times the
//! rate. Buckets that have refilled are dropped when the map grows large.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Requests per second sustained, and how many may come at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Refill rate; 0 is taken as 1.
    pub per_second: u32,
    /// Bucket size; 0 is taken as 1.
    pub burst: u32,
}

impl Default for RateLimit {
    fn default() -> Self {
        Self {
            per_second: 50,
            burst: 200,
        }
    }
}

/// Above this many buckets, full ones are dropped.
const MAX_BUCKETS: usize = 100_000;

#[derive(Debug)]
pub(crate) struct RateLimiter {
    limit: RateLimit,
    // A std Mutex: nothing awaits under it.
    buckets: Mutex<HashMap<String, Bucket>>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl RateLimiter {
    pub(crate) fn new(limit: RateLimit) -> Self {
        Self {
            limit,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Take one request from `caller`'s bucket, or say how long until one
    /// is available.
    pub(crate) fn check(&self, caller: &str) -> Result<(), Duration> {
        self.check_at(caller, Instant::now())
    }

    /// [`Self::check`] at a given moment, so tests need no sleeping clock.
    fn check_at(&self, caller: &str, now: Instant) -> Result<(), Duration> {
        let burst = f64::from(self.limit.burst.max(1));
        let rate = f64::from(self.limit.per_second.max(1));
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        if buckets.len() >= MAX_BUCKETS {
            buckets.retain(|_, b| b.tokens + now.duration_since(b.at).as_secs_f64() * rate < burst);
        }
        let bucket = buckets.entry(caller.to_owned()).or_insert(Bucket {
            tokens: burst,
            at: now,
        });
        let refilled = bucket.tokens + now.duration_since(bucket.at).as_secs_f64() * rate;
        bucket.tokens = refilled.min(burst);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - bucket.tokens) / rate))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_refuse_then_refill() {
        let limiter = RateLimiter::new(RateLimit {
            per_second: 1000,
            burst: 3,
        });
        let start = Instant::now();
        for _ in 0..3 {
            limiter.check_at("a", start).unwrap();
        }
        let wait = limiter.check_at("a", start).unwrap_err();
        assert_eq!(wait, Duration::from_millis(1));
        limiter.check_at("b", start).unwrap();
        limiter
            .check_at("a", start + Duration::from_millis(5))
            .unwrap();
    }
}
