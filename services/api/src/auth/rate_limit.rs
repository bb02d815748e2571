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

/// `requests` per `per` sustained, and how many may come at once.
///
/// Written (in configuration) as `RATE[,burst=N]` with `RATE` one of
/// `N/s`, `N/min` or `N/h`, e.g. `50/s,burst=200`; see [`RateLimit::parse`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Refill: this many requests per [`Self::per`]; 0 is taken as 1.
    pub requests: u32,
    /// The period `requests` refill over; zero is taken as one second.
    pub per: Duration,
    /// Bucket size; 0 is taken as 1.
    pub burst: u32,
}

impl Default for RateLimit {
    /// The per-caller limit of `/v1`: 50/s, bursts of 200.
    fn default() -> Self {
        Self::per_second(50, 200)
    }
}

impl RateLimit {
    /// `requests` per second, bursts of `burst`.
    pub fn per_second(requests: u32, burst: u32) -> Self {
        Self {
            requests,
            per: Duration::from_secs(1),
            burst,
        }
    }

    /// The limit on `POST /v1/auth/token` per client address and per
    /// (API key, client address), against secret guessing: 10/min, bursts
    /// of 10.
    pub fn token_exchange_default() -> Self {
        Self {
            requests: 10,
            per: Duration::from_secs(60),
            burst: 10,
        }
    }

    /// Parses `off` (no limit: `None`) or `RATE[,burst=N]`, `RATE` being
    /// `N/s`, `N/min` or `N/h` with N from 1 to 1000000; the burst defaults
    /// to N. The error says what was expected.
    pub fn parse(text: &str) -> Result<Option<RateLimit>, &'static str> {
        const EXPECTED: &str = "expected `off` or RATE[,burst=N] with RATE like 50/s, 10/min or 100/h              (1 to 1000000)";
        let text = text.trim();
        if text.eq_ignore_ascii_case("off") {
            return Ok(None);
        }
        let count = |s: &str| {
            s.trim()
                .parse::<u32>()
                .ok()
                .filter(|n| (1..=1_000_000).contains(n))
        };
        let (rate, burst) = match text.split_once(',') {
            Some((rate, burst)) => {
                let burst = burst
                    .trim()
                    .strip_prefix("burst=")
                    .and_then(count)
                    .ok_or(EXPECTED)?;
                (rate, Some(burst))
            }
            None => (text, None),
        };
        let (n, unit) = rate.split_once('/').ok_or(EXPECTED)?;
        let requests = count(n).ok_or(EXPECTED)?;
        let per = match unit.trim() {
            "s" => Duration::from_secs(1),
            "min" => Duration::from_secs(60),
            "h" => Duration::from_secs(3600),
            _ => return Err(EXPECTED),
        };
        Ok(Some(RateLimit {
            requests,
            per,
            burst: burst.unwrap_or(requests),
        }))
    }

    /// Requests per second, as the bucket refills.
    fn rate(&self) -> f64 {
        let per = if self.per.is_zero() {
            1.0
        } else {
            self.per.as_secs_f64()
        };
        f64::from(self.requests.max(1)) / per
    }
}

impl std::fmt::Display for RateLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let unit = match self.per.as_secs() {
            60 => "min",
            3600 => "h",
            _ => "s",
        };
        write!(f, "{}/{unit},burst={}", self.requests, self.burst)
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

/// The limiter of `POST /v1/auth/token` (a type of its own so the two
/// limiters are told apart among the request's extensions). Callers are
/// `addr:{client ip}` and `key:{api key id}@{client ip}`.
#[derive(Debug)]
pub(crate) struct TokenRateLimiter(pub RateLimiter);

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
        let rate = self.limit.rate();
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
        let limiter = RateLimiter::new(RateLimit::per_second(1000, 3));
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

    #[test]
    fn per_minute_refills_slowly() {
        let limiter = RateLimiter::new(RateLimit::token_exchange_default());
        let start = Instant::now();
        for _ in 0..10 {
            limiter.check_at("k", start).unwrap();
        }
        let wait = limiter.check_at("k", start).unwrap_err();
        assert_eq!(wait, Duration::from_secs(6));
        limiter
            .check_at("k", start + Duration::from_secs(6))
            .unwrap();
    }

    #[test]
    fn parses_the_configuration_syntax() {
        assert_eq!(RateLimit::parse("off"), Ok(None));
        assert_eq!(
            RateLimit::parse("50/s,burst=200"),
            Ok(Some(RateLimit::default()))
        );
        assert_eq!(
            RateLimit::parse("10/min"),
            Ok(Some(RateLimit::token_exchange_default()))
        );
        let hourly = RateLimit::parse(" 100/h , burst=5 ").unwrap().unwrap();
        assert_eq!(hourly.per, Duration::from_secs(3600));
        assert_eq!(hourly.burst, 5);
        for bad in [
            "",
            "0/s",
            "5",
            "5/d",
            "5/s,burst=0",
            "5/s,b=3",
            "-1/s",
            "9999999/s",
        ] {
            assert!(RateLimit::parse(bad).is_err(), "{bad:?}");
        }
        for limit in [
            RateLimit::default(),
            RateLimit::token_exchange_default(),
            hourly,
        ] {
            assert_eq!(RateLimit::parse(&limit.to_string()), Ok(Some(limit)));
        }
    }
}
