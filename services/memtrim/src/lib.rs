//! Gives the allocator's freed memory back to the operating system after
//! a burst, and decides when a burst has ended.
//!
//! glibc returns freed memory to the system only from the top of a heap;
//! what a connect storm frees below live allocations (TLS handshakes,
//! CONNECT buffers, a presence batch) stays resident for the life of the
//! process. With 5,000 idle connections that was 0.7 KB per connection
//! of RSS no allocation was using (issue 16; `gdb -p PID -ex 'call
//! malloc_trim(0)'` on a release broker: 53.6 -> 50.1 MB). `malloc_trim`
//! walks every arena and hands whole free pages back (`madvise`), so it
//! is run once a burst is over, not on a timer: during a storm the pages
//! would only be faulted in again.

/// Asks the allocator to return its free pages to the system; whether it
/// returned any. Walks and locks each arena in turn (milliseconds for a
/// heap of hundreds of megabytes): call it off the async workers.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
pub fn release_free_memory() -> bool {
    // SAFETY: `malloc_trim` takes no pointers and has no precondition;
    // glibc serialises it with every other allocator call on each arena.
    unsafe { libc::malloc_trim(0) == 1 }
}

/// Elsewhere (musl, macOS) there is no such call, and their allocators
/// give memory back on their own.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn release_free_memory() -> bool {
    false
}

/// When a burst of activity has ended: fed a running count of events
/// (connections opened and closed) once per tick, it answers yes once at
/// least `burst` events have happened since the last yes and the last
/// tick saw fewer than `quiet`.
#[derive(Debug, Clone)]
pub struct BurstEnd {
    burst: u64,
    quiet: u64,
    seen: Option<u64>,
    since_release: u64,
}

impl BurstEnd {
    /// `burst`: events that make a burst worth a release; `quiet`: fewer
    /// events than this in one tick and the burst is over.
    pub fn new(burst: u64, quiet: u64) -> Self {
        Self {
            burst,
            quiet,
            seen: None,
            since_release: 0,
        }
    }

    /// Takes the count's current value; true when memory should be
    /// released now. The first value read is the baseline.
    pub fn tick(&mut self, count: u64) -> bool {
        let recent = match self.seen {
            // A count that went back (a restarted counter) starts over.
            Some(seen) => count.saturating_sub(seen),
            None => 0,
        };
        self.seen = Some(count);
        self.since_release = self.since_release.saturating_add(recent);
        if self.since_release >= self.burst && recent < self.quiet {
            self.since_release = 0;
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn releases_once_after_a_burst_not_during_it() {
        let mut end = BurstEnd::new(100, 10);
        assert!(!end.tick(5_000), "the first value is a baseline");
        assert!(!end.tick(5_050), "50 is not a burst");
        assert!(!end.tick(5_400), "still going");
        assert!(!end.tick(5_900), "still going");
        assert!(end.tick(5_905), "it stopped: release");
        assert!(!end.tick(5_905), "once per burst");
        assert!(!end.tick(5_906));
    }

    #[test]
    fn a_slow_trickle_adds_up_to_a_burst() {
        let mut end = BurstEnd::new(100, 10);
        end.tick(0);
        let released = (1..=30).filter(|i| end.tick(i * 5)).count();
        assert_eq!(released, 1, "150 events, 5 per tick: one release");
    }

    #[test]
    fn a_counter_that_goes_back_is_a_new_baseline() {
        let mut end = BurstEnd::new(100, 10);
        end.tick(1_000);
        assert!(!end.tick(3));
        assert!(!end.tick(50));
        assert!(!end.tick(200), "still going");
        assert!(end.tick(201));
    }

    #[test]
    fn releasing_is_safe_to_call_any_time() {
        let churn: Vec<Vec<u8>> = (0..10_000).map(|i| vec![0; 64 + i % 512]).collect();
        drop(churn);
        // glibc may or may not have whole pages to give back; it must
        // neither fail nor disturb what is still allocated.
        let live = vec![7u8; 1 << 20];
        let _ = release_free_memory();
        assert!(live.iter().all(|&b| b == 7));
    }
}
