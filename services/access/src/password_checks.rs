//! [`PasswordChecks`]: where MQTT password checks run. Each argon2id check
//! takes about 19 MiB and tens of milliseconds of CPU, so an unbounded
//! number of them at once is a memory blow-up anyone can trigger without
//! credentials (200 parallel wrong CONNECTs took 4 GB). Here:
//!
//! - at most `concurrency` checks run at once, on as many threads of
//!   their own, each reusing one argon2 buffer (so memory stays at about
//!   `concurrency` × 19 MiB, where fresh buffers on the blocking pool's
//!   threads left an allocator arena holding 19 MiB per thread);
//! - the others wait in a [`fair::FairQueue`] keyed by tenant, served
//!   round-robin: one tenant's flood (or a flood against one tenant's
//!   device names) delays another tenant's checks by one check per tenant
//!   waiting, never by the flood's length;
//! - at most `max_waiting` checks wait (`per_tenant_waiting` per tenant);
//!   beyond that the CONNECT is refused at once with Server busy (0x89;
//!   3.1.1: 0x03);
//! - each client address has a failure budget: every check charges it up
//!   front (refunded on success), so once an address has `address_burst`
//!   failed or pending checks it is refused at once, as a wrong password
//!   (0x86; 3.1.1: 0x04), without argon2, until the budget refills
//!   (`address_refill` per failure);
//! - a verified (password, hash) pair is remembered as a keyed hash (HMAC
//!   under a key of this process, never the password) in a bounded cache,
//!   so a device reconnecting with its right password costs no argon2.
//!
//! Metrics: `fleetmq_password_checks_total{outcome}` (`match`, `mismatch`,
//! `cached`, `busy`, `over_budget`), `fleetmq_password_checks_refused_total
//! {tenant, reason}` and the gauge `fleetmq_password_checks_waiting`.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use aws_lc_rs::hmac;
use bytes::Bytes;
use fair::{Bounds, FairQueue};
use tokio::sync::oneshot;

use crate::password::{decoy_verify_in, verify_password_in};

/// How [`PasswordChecks`] bounds its work. See the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PasswordCheckLimits {
    /// Checks running at once (each holds about 19 MiB while it runs).
    pub concurrency: usize,
    /// Checks waiting, all tenants together.
    pub max_waiting: usize,
    /// Checks waiting for one tenant.
    pub per_tenant_waiting: usize,
    /// Failed (or pending) checks one client address may have before it is
    /// refused without a check.
    pub address_burst: u32,
    /// One failure is forgiven per this period.
    pub address_refill: Duration,
    /// Verified (password, hash) pairs remembered.
    pub cache_entries: usize,
}

impl Default for PasswordCheckLimits {
    /// As many checks at once as the machine has cores; 256 waiting, 64 per
    /// tenant; 20 failures per address, one forgiven every 3 s; 4,096
    /// verified pairs remembered.
    fn default() -> Self {
        PasswordCheckLimits {
            concurrency: std::thread::available_parallelism().map_or(2, usize::from),
            max_waiting: 256,
            per_tenant_waiting: 64,
            address_burst: 20,
            address_refill: Duration::from_secs(3),
            cache_entries: 4096,
        }
    }
}

/// Why a check was not made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CheckRefused {
    /// Too many checks waiting (0x89 Server busy).
    #[error("too many password checks waiting")]
    Busy,
    /// The client address used up its failure budget (0x86).
    #[error("too many failed password checks from this address")]
    OverBudget,
}

/// The password checks of one process. Cheap to share (`Arc`).
pub struct PasswordChecks {
    limits: PasswordCheckLimits,
    work: Arc<Work>,
    budgets: Mutex<HashMap<IpAddr, Budget>>,
    verified: Mutex<Verified>,
    cache_key: hmac::Key,
}

impl std::fmt::Debug for PasswordChecks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PasswordChecks")
            .field("limits", &self.limits)
            .field("waiting", &self.work.queue.len())
            .finish_non_exhaustive()
    }
}

struct Job {
    password: Bytes,
    hash: Option<String>,
    reply: oneshot::Sender<bool>,
}

/// What the checking threads share with [`PasswordChecks`].
struct Work {
    queue: FairQueue<Job>,
    /// Set when dropped. Held to test "nothing queued" and wait, and to
    /// wake a thread after a push, so no wake-up is lost between the two.
    closed: Mutex<bool>,
    wake: Condvar,
}

impl Work {
    fn wake_one(&self) {
        let _held = lock(&self.closed);
        self.wake.notify_one();
    }
}

impl Drop for PasswordChecks {
    fn drop(&mut self) {
        self.work.queue.close();
        *lock(&self.work.closed) = true;
        self.work.wake.notify_all();
    }
}

/// A checking thread: one of `concurrency`, for the process's life (or
/// the [`PasswordChecks`]'). Its argon2 memory is one buffer, reused: with
/// a new one per check, each thread's allocator arena would keep its own
/// 19 MiB, and the blocking pool has hundreds of threads.
fn checker(work: &Work) {
    let mut blocks = Vec::new();
    let mut batch = Vec::with_capacity(1);
    loop {
        if work.queue.take_batch(&mut batch, 1) > 0 {
            metrics::gauge!("fleetmq_password_checks_waiting").set(work.queue.len() as f64);
            for (_, job) in batch.drain(..) {
                let matched = match &job.hash {
                    Some(hash) => verify_password_in(&job.password, hash, &mut blocks),
                    None => {
                        decoy_verify_in(&job.password, &mut blocks);
                        false
                    }
                };
                // The client may have gone: nobody to tell.
                let _ = job.reply.send(matched);
            }
            continue;
        }
        let closed = lock(&work.closed);
        if *closed {
            return;
        }
        if !work.queue.is_empty() {
            continue;
        }
        // A push takes `closed` before waking us: it cannot slip in between
        // the test above and this wait.
        drop(
            work.wake
                .wait(closed)
                .unwrap_or_else(PoisonError::into_inner),
        );
    }
}

/// A failure token bucket: `tokens` left as of `at`.
#[derive(Debug, Clone, Copy)]
struct Budget {
    tokens: f64,
    at: Instant,
}

/// Keyed hashes of verified (hash, password) pairs, oldest evicted first.
#[derive(Default)]
struct Verified {
    set: HashSet<[u8; 32]>,
    order: VecDeque<[u8; 32]>,
}

/// Above this many addresses, refilled budgets are dropped.
const MAX_ADDRESSES: usize = 100_000;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A std Mutex: held for a few map operations, never across an await.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl PasswordChecks {
    /// Checks bounded by `limits` (zeros are taken as one).
    pub fn new(limits: PasswordCheckLimits) -> PasswordChecks {
        let mut key = [0u8; 32];
        // Without OS randomness the cache is keyed by a constant; it still
        // never holds a password, and only successes are cached.
        let _ = aws_lc_rs::rand::fill(&mut key);
        let limits = PasswordCheckLimits {
            concurrency: limits.concurrency.max(1),
            max_waiting: limits.max_waiting.max(1),
            per_tenant_waiting: limits.per_tenant_waiting.max(1),
            address_burst: limits.address_burst.max(1),
            ..limits
        };
        let work = Arc::new(Work {
            queue: FairQueue::new(Bounds {
                per_key: limits.per_tenant_waiting,
                total: limits.max_waiting,
            }),
            closed: Mutex::new(false),
            wake: Condvar::new(),
        });
        for n in 0..limits.concurrency {
            let work = work.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("password-check-{n}"))
                .spawn(move || checker(&work));
            if let Err(e) = spawned {
                // Fewer threads check more slowly; none at all would hang
                // every password CONNECT, so the first failure is loud.
                tracing::error!(error = %e, threads = n, "cannot start a password check thread");
            }
        }
        PasswordChecks {
            work,
            budgets: Mutex::new(HashMap::new()),
            verified: Mutex::new(Verified::default()),
            cache_key: hmac::Key::new(hmac::HMAC_SHA256, &key),
            limits,
        }
    }

    /// The limits in force.
    pub fn limits(&self) -> PasswordCheckLimits {
        self.limits
    }

    /// Whether `password` matches the PHC string `hash`, checked for a
    /// client at `peer` claiming `tenant`. With no hash (unknown user), the
    /// time of a check is spent on a decoy and the answer is false.
    pub async fn verify(
        &self,
        tenant: &str,
        peer: IpAddr,
        password: Bytes,
        hash: Option<String>,
    ) -> Result<bool, CheckRefused> {
        let fingerprint = hash.as_deref().map(|h| self.fingerprint(h, &password));
        if fingerprint.is_some_and(|f| lock(&self.verified).set.contains(&f)) {
            metrics::counter!("fleetmq_password_checks_total", "outcome" => "cached").increment(1);
            return Ok(true);
        }
        if !self.charge(peer, Instant::now()) {
            self.refused(tenant, "over_budget");
            return Err(CheckRefused::OverBudget);
        }
        let (reply, answer) = oneshot::channel();
        let job = Job {
            password,
            hash,
            reply,
        };
        // The fair queue may admit a tenant below its share past its total
        // (many tenants, one check each); the hard bound is the first test.
        let queue = &self.work.queue;
        if queue.len() >= self.limits.max_waiting || queue.push(tenant, job).is_err() {
            self.refund(peer);
            self.refused(tenant, "busy");
            return Err(CheckRefused::Busy);
        }
        metrics::gauge!("fleetmq_password_checks_waiting").set(queue.len() as f64);
        self.work.wake_one();
        // A dropped reply means the blocking task died: count it as wrong.
        let matched = answer.await.unwrap_or(false);
        if matched {
            self.refund(peer);
            if let Some(f) = fingerprint {
                self.remember(f);
            }
        }
        let outcome = if matched { "match" } else { "mismatch" };
        metrics::counter!("fleetmq_password_checks_total", "outcome" => outcome).increment(1);
        Ok(matched)
    }

    fn refused(&self, tenant: &str, reason: &'static str) {
        metrics::counter!("fleetmq_password_checks_total", "outcome" => reason).increment(1);
        metrics::counter!("fleetmq_password_checks_refused_total",
            "tenant" => tenant.to_owned(), "reason" => reason)
        .increment(1);
    }

    /// Take one token from `peer`'s failure budget; false if none is left.
    fn charge(&self, peer: IpAddr, now: Instant) -> bool {
        let burst = f64::from(self.limits.address_burst);
        let rate = 1.0 / self.limits.address_refill.as_secs_f64().max(0.001);
        let mut budgets = lock(&self.budgets);
        if budgets.len() >= MAX_ADDRESSES {
            budgets.retain(|_, b| b.tokens + now.duration_since(b.at).as_secs_f64() * rate < burst);
        }
        let budget = budgets.entry(peer).or_insert(Budget {
            tokens: burst,
            at: now,
        });
        budget.tokens =
            (budget.tokens + now.duration_since(budget.at).as_secs_f64() * rate).min(burst);
        budget.at = now;
        if budget.tokens >= 1.0 {
            budget.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Give back the token a check took (it succeeded, or never ran).
    fn refund(&self, peer: IpAddr) {
        let burst = f64::from(self.limits.address_burst);
        if let Some(budget) = lock(&self.budgets).get_mut(&peer) {
            budget.tokens = (budget.tokens + 1.0).min(burst);
        }
    }

    fn fingerprint(&self, hash: &str, password: &[u8]) -> [u8; 32] {
        let mut ctx = hmac::Context::with_key(&self.cache_key);
        ctx.update(hash.as_bytes());
        ctx.update(&[0]);
        ctx.update(password);
        let mut out = [0u8; 32];
        out.copy_from_slice(ctx.sign().as_ref());
        out
    }

    fn remember(&self, fingerprint: [u8; 32]) {
        let mut verified = lock(&self.verified);
        if !verified.set.insert(fingerprint) {
            return;
        }
        verified.order.push_back(fingerprint);
        while verified.order.len() > self.limits.cache_entries {
            if let Some(old) = verified.order.pop_front() {
                verified.set.remove(&old);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::password::hash_password;

    fn limits() -> PasswordCheckLimits {
        PasswordCheckLimits {
            concurrency: 1,
            max_waiting: 4,
            per_tenant_waiting: 2,
            address_burst: 3,
            address_refill: Duration::from_secs(3600),
            cache_entries: 2,
        }
    }

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    /// `checks.verify` in tenant `acme` from `ip(from)`.
    async fn attempt(
        checks: &PasswordChecks,
        from: u8,
        password: &'static [u8],
        hash: &str,
    ) -> Result<bool, CheckRefused> {
        checks
            .verify(
                "acme",
                ip(from),
                Bytes::from_static(password),
                Some(hash.to_owned()),
            )
            .await
    }

    #[tokio::test]
    async fn an_address_over_its_failure_budget_is_refused_without_a_check() {
        let checks = PasswordChecks::new(limits());
        let hash = hash_password("right").unwrap();
        for _ in 0..3 {
            assert_eq!(attempt(&checks, 1, b"wrong", &hash).await, Ok(false));
        }
        assert_eq!(
            attempt(&checks, 1, b"right", &hash).await,
            Err(CheckRefused::OverBudget)
        );
        // Another address is not affected, and success costs no budget.
        for _ in 0..5 {
            assert_eq!(attempt(&checks, 2, b"right", &hash).await, Ok(true));
        }
    }

    #[tokio::test]
    async fn successes_are_cached_by_keyed_hash_and_evicted_oldest_first() {
        let checks = PasswordChecks::new(limits());
        let hash = hash_password("right").unwrap();
        assert!(!checks.verified_contains(&hash, b"right"));
        assert_eq!(attempt(&checks, 1, b"right", &hash).await, Ok(true));
        assert!(checks.verified_contains(&hash, b"right"));
        assert!(!checks.verified_contains(&hash, b"wrong"));
        let entry = *lock(&checks.verified).order.front().unwrap();
        assert!(
            !entry.windows(5).any(|w| w == b"right"),
            "never the password"
        );
        for other in ["a", "b"] {
            let other_hash = hash_password(other).unwrap();
            let ok = attempt(&checks, 1, other.as_bytes(), &other_hash).await;
            assert_eq!(ok, Ok(true));
        }
        assert!(!checks.verified_contains(&hash, b"right"), "evicted");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_full_queue_refuses_busy_and_every_admitted_check_completes() {
        let checks = Arc::new(PasswordChecks::new(PasswordCheckLimits {
            address_burst: 1000,
            ..limits()
        }));
        let hash = hash_password("right").unwrap();
        let mut tasks = Vec::new();
        for i in 0..40u8 {
            let (checks, hash) = (checks.clone(), hash.clone());
            tasks.push(tokio::spawn(async move {
                let tenant = if i % 2 == 0 { "flood" } else { "other" };
                checks
                    .verify(tenant, ip(i), Bytes::from_static(b"wrong"), Some(hash))
                    .await
            }));
        }
        let mut busy = 0;
        let mut checked = 0;
        for task in tasks {
            match task.await.unwrap() {
                Ok(false) => checked += 1,
                Err(CheckRefused::Busy) => busy += 1,
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(busy + checked, 40);
        assert!(busy > 0, "40 at once over 1 running and 4 waiting");
        assert!(checked >= 1);
        assert!(checks.work.queue.is_empty(), "nothing stranded");
    }

    impl PasswordChecks {
        fn verified_contains(&self, hash: &str, password: &[u8]) -> bool {
            lock(&self.verified)
                .set
                .contains(&self.fingerprint(hash, password))
        }
    }
}
