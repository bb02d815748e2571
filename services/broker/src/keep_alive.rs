//! [`KeepAliveWheel`]: every connection's keep-alive deadline (MQTT-3.1.2-22)
//! in one hashed timing wheel, so that a waiting connection holds no timer
//! of its own.
//!
//! A tokio `Sleep` per connection was 112 bytes of every idle connection's
//! future (one 128-byte step of its task, issue 16), and one was made and
//! dropped for every wait, that is for every read of a busy publisher. The
//! wheel keeps 24 bytes per connection and is lazy: a read only stores its
//! time in the connection's [`ConnControl`]; the deadline it implies is
//! looked at when the entry's slot comes round, and an entry whose
//! connection heard from its client since moves on to its new deadline. So
//! the sweeper's work is one look per connection per keep-alive period, and
//! an idle node wakes it ten times a second.
//!
//! Entries live in a slab with intrusive slot lists, so that a connection's
//! end takes its entry out at once: a client cannot leave entries behind by
//! connecting and leaving (the ids and lists are `u32`: four billion live
//! connections per node is not a limit anyone meets).

use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError, Weak};
use std::time::Duration;

use tokio::time::Instant;

use crate::session::ConnControl;

/// How often the sweeper looks, and so how late past its deadline a
/// connection may be closed.
const TICK: Duration = Duration::from_millis(100);
/// Slots in the wheel: a deadline further out than this many ticks is
/// looked at once per lap on its way.
const SLOTS: usize = 1024;
/// The end of a list.
const NIL: u32 = u32::MAX;

/// All of a broker's keep-alive deadlines; see the module docs.
#[derive(Debug)]
pub(crate) struct KeepAliveWheel {
    /// What `ConnControl::last_heard` counts from.
    epoch: Instant,
    wheel: Mutex<Wheel>,
    /// Started at the first registration (inside a runtime).
    sweeper: OnceLock<()>,
}

#[derive(Debug)]
struct Wheel {
    entries: Vec<Entry>,
    /// Free places in `entries`.
    free: Vec<u32>,
    /// The first entry of each slot's list.
    heads: Vec<u32>,
    /// The next tick the sweeper looks at.
    next_tick: u64,
}

#[derive(Debug)]
struct Entry {
    /// `None` while the place is free.
    ctl: Option<Arc<ConnControl>>,
    /// The keep-alive period, milliseconds (1.5 x the keep alive).
    period_ms: u64,
    /// The slot whose list holds it; `NIL` once it fired.
    slot: u32,
    prev: u32,
    next: u32,
}

/// A connection's place in the wheel; taken out when dropped.
#[derive(Debug)]
pub(crate) struct Registration {
    wheel: Arc<KeepAliveWheel>,
    key: u32,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.wheel.remove(self.key);
    }
}

impl Registration {
    /// Puts the entry back in the wheel after it fired for a connection
    /// that, it turned out, had heard from its client in between.
    pub(crate) fn rearm(&self) {
        let mut w = self.wheel.lock();
        let Some(e) = w.entries.get(self.key as usize) else {
            return;
        };
        if e.slot == NIL
            && let Some(ctl) = &e.ctl
        {
            let deadline = ctl.last_heard().saturating_add(e.period_ms);
            w.link(self.key, tick_of(deadline));
        }
    }
}

impl KeepAliveWheel {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self {
            epoch: Instant::now(),
            wheel: Mutex::new(Wheel {
                entries: Vec::new(),
                free: Vec::new(),
                heads: vec![NIL; SLOTS],
                next_tick: 0,
            }),
            sweeper: OnceLock::new(),
        })
    }

    /// Milliseconds since the wheel was made: what a connection stores as
    /// the time it last heard from its client.
    pub(crate) fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Watches `ctl`'s connection: once `period` passes without it hearing
    /// from its client (`ConnControl::heard_at`) and while it is not
    /// holding its reads back, it is woken with its keep-alive expired.
    pub(crate) fn register(
        self: &Arc<Self>,
        ctl: Arc<ConnControl>,
        period: Duration,
    ) -> Registration {
        self.sweeper.get_or_init(|| {
            tokio::spawn(sweep(Arc::downgrade(self)));
        });
        let now = self.now_ms();
        ctl.heard_at(now);
        let period_ms = u64::try_from(period.as_millis()).unwrap_or(u64::MAX / 2);
        let mut w = self.lock();
        let entry = Entry {
            ctl: Some(ctl),
            period_ms,
            slot: NIL,
            prev: NIL,
            next: NIL,
        };
        let key = match w.free.pop() {
            Some(key) => {
                w.entries[key as usize] = entry;
                key
            }
            None => {
                w.entries.push(entry);
                u32::try_from(w.entries.len() - 1).unwrap_or(NIL)
            }
        };
        w.link(key, tick_of(now.saturating_add(period_ms)));
        Registration {
            wheel: self.clone(),
            key,
        }
    }

    fn remove(&self, key: u32) {
        let mut w = self.lock();
        if w.entries.get(key as usize).is_some_and(|e| e.ctl.is_some()) {
            w.unlink(key);
            w.entries[key as usize].ctl = None;
            w.free.push(key);
        }
    }

    fn lock(&self) -> MutexGuard<'_, Wheel> {
        self.wheel.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Looks at every slot due by now: fires what is past its deadline,
    /// moves the rest on to theirs.
    fn advance(&self) {
        let now = self.now_ms();
        let due_tick = now / tick_ms();
        let mut fired = Vec::new();
        {
            let mut w = self.lock();
            // Far behind (a stalled runtime): one lap looks at every slot.
            let first = w.next_tick.max(due_tick.saturating_sub(SLOTS as u64 - 1));
            for tick in first..=due_tick {
                let slot = slot_of(tick);
                let mut key = w.heads[slot];
                w.heads[slot] = NIL;
                while key != NIL {
                    let next = w.entries[key as usize].next;
                    let e = &mut w.entries[key as usize];
                    e.slot = NIL;
                    let (ctl, period) = match &e.ctl {
                        Some(ctl) => (ctl.clone(), e.period_ms),
                        None => {
                            key = next;
                            continue;
                        }
                    };
                    // Holding its reads back, the client's silence is ours.
                    let heard = if ctl.is_holding_reads() {
                        now
                    } else {
                        ctl.last_heard()
                    };
                    let deadline = heard.saturating_add(period);
                    if deadline <= now {
                        fired.push(ctl);
                    } else {
                        w.link(key, tick_of(deadline).max(due_tick + 1));
                    }
                    key = next;
                }
            }
            w.next_tick = due_tick + 1;
        }
        // Woken outside the lock: a wake may run the connection's task.
        for ctl in &fired {
            ctl.expire_keep_alive();
        }
    }
}

impl Wheel {
    /// Puts `key` at the head of the slot of `tick`.
    fn link(&mut self, key: u32, tick: u64) {
        // Never behind the sweeper: a slot it already passed would wait a lap.
        let tick = tick.max(self.next_tick);
        let slot = slot_of(tick);
        let head = self.heads[slot];
        if head != NIL {
            self.entries[head as usize].prev = key;
        }
        let e = &mut self.entries[key as usize];
        e.slot = u32::try_from(slot).unwrap_or(NIL);
        e.prev = NIL;
        e.next = head;
        self.heads[slot] = key;
    }

    /// Takes `key` out of its slot's list, if it is in one.
    fn unlink(&mut self, key: u32) {
        let (slot, prev, next) = {
            let e = &self.entries[key as usize];
            (e.slot, e.prev, e.next)
        };
        if slot == NIL {
            return;
        }
        if prev == NIL {
            self.heads[slot as usize] = next;
        } else {
            self.entries[prev as usize].next = next;
        }
        if next != NIL {
            self.entries[next as usize].prev = prev;
        }
        let e = &mut self.entries[key as usize];
        e.slot = NIL;
        e.prev = NIL;
        e.next = NIL;
    }
}

fn tick_ms() -> u64 {
    u64::try_from(TICK.as_millis()).unwrap_or(100)
}

/// The first tick at or after `ms`.
fn tick_of(ms: u64) -> u64 {
    ms.div_ceil(tick_ms())
}

fn slot_of(tick: u64) -> usize {
    // The remainder is below SLOTS.
    usize::try_from(tick % SLOTS as u64).unwrap_or(0)
}

/// The sweeper: one task per broker, gone once the broker is.
async fn sweep(wheel: Weak<KeepAliveWheel>) {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(wheel) = wheel.upgrade() else {
            return;
        };
        wheel.advance();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctl(id: u64) -> Arc<ConnControl> {
        ConnControl::new(id)
    }

    /// Advances paused time by `d` and lets the sweeper run.
    async fn pass(d: Duration) {
        tokio::time::sleep(d).await;
        tokio::task::yield_now().await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_connection_expires_once_its_period_is_over() {
        let wheel = KeepAliveWheel::new();
        let c = ctl(1);
        let _r = wheel.register(c.clone(), Duration::from_millis(1500));
        pass(Duration::from_millis(1400)).await;
        assert!(!c.keep_alive_expired());
        pass(Duration::from_millis(300)).await;
        assert!(c.keep_alive_expired());
    }

    #[tokio::test(start_paused = true)]
    async fn hearing_from_the_client_moves_the_deadline() {
        let wheel = KeepAliveWheel::new();
        let c = ctl(1);
        let _r = wheel.register(c.clone(), Duration::from_secs(15));
        for _ in 0..10 {
            pass(Duration::from_secs(9)).await;
            c.heard_at(wheel.now_ms());
        }
        assert!(!c.keep_alive_expired());
        pass(Duration::from_millis(15_200)).await;
        assert!(c.keep_alive_expired());
    }

    #[tokio::test(start_paused = true)]
    async fn holding_reads_back_suspends_the_deadline() {
        let wheel = KeepAliveWheel::new();
        let c = ctl(1);
        let _r = wheel.register(c.clone(), Duration::from_secs(2));
        c.hold_reads(true);
        pass(Duration::from_secs(10)).await;
        assert!(!c.keep_alive_expired());
        c.hold_reads(false);
        c.heard_at(wheel.now_ms());
        pass(Duration::from_millis(2200)).await;
        assert!(c.keep_alive_expired());
    }

    #[tokio::test(start_paused = true)]
    async fn deadlines_beyond_one_lap_still_fire_on_time() {
        let wheel = KeepAliveWheel::new();
        let c = ctl(1);
        // 65,535 s x 1.5, the longest MQTT allows: hundreds of laps.
        let period = Duration::from_millis(65_535 * 1500);
        let _r = wheel.register(c.clone(), period);
        pass(period - Duration::from_secs(1)).await;
        assert!(!c.keep_alive_expired());
        pass(Duration::from_millis(1200)).await;
        assert!(c.keep_alive_expired());
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_that_ended_leaves_nothing_behind() {
        let wheel = KeepAliveWheel::new();
        let kept = ctl(0);
        let _kept = wheel.register(kept.clone(), Duration::from_secs(60));
        for id in 1..=1000 {
            let c = ctl(id);
            let r = wheel.register(c.clone(), Duration::from_secs(60));
            drop(r);
            // The wheel held the only other reference.
            assert_eq!(Arc::strong_count(&c), 1);
        }
        let w = wheel.lock();
        // One place reused over and over, the kept one besides.
        assert_eq!(w.entries.len(), 2);
        let linked: usize = w
            .heads
            .iter()
            .map(|&h| {
                let mut n = 0;
                let mut k = h;
                while k != NIL {
                    n += 1;
                    k = w.entries[k as usize].next;
                }
                n
            })
            .sum();
        assert_eq!(linked, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn many_connections_fire_in_deadline_order_and_only_the_silent_ones() {
        let wheel = KeepAliveWheel::new();
        let conns: Vec<_> = (0..200u64).map(ctl).collect();
        let regs: Vec<_> = conns
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let period = Duration::from_millis(1500 + 100 * i as u64);
                wheel.register(c.clone(), period)
            })
            .collect();
        // Every other one keeps talking.
        for _ in 0..30 {
            pass(Duration::from_secs(1)).await;
            for c in conns.iter().step_by(2) {
                c.heard_at(wheel.now_ms());
            }
        }
        for (i, c) in conns.iter().enumerate() {
            assert_eq!(c.keep_alive_expired(), i % 2 == 1, "connection {i}");
        }
        drop(regs);
    }

    #[tokio::test(start_paused = true)]
    async fn a_rearmed_entry_fires_again_later() {
        let wheel = KeepAliveWheel::new();
        let c = ctl(1);
        let r = wheel.register(c.clone(), Duration::from_secs(2));
        pass(Duration::from_millis(2200)).await;
        assert!(c.keep_alive_expired());
        c.clear_keep_alive_expired();
        c.heard_at(wheel.now_ms());
        r.rearm();
        pass(Duration::from_millis(1500)).await;
        assert!(!c.keep_alive_expired());
        pass(Duration::from_millis(700)).await;
        assert!(c.keep_alive_expired());
    }
}
