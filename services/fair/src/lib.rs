//! [`FairQueue`]: one queue that many tenants share without one tenant's
//! load starving, evicting or delaying another's.
//!
//! Each tenant (a key) has a FIFO of its own. Consumers take batches
//! round-robin over the tenants that have something waiting, one item per
//! tenant per turn, so a tenant with a backlog of a million waits its turn
//! like one with a single item: an item of tenant B waits behind at most
//! one batch's worth of other tenants' items per batch before it, whatever A
//! has queued. Order is kept within a tenant.
//!
//! Bounds: a tenant holds at most `per_key` items; when the whole queue
//! holds `total` or more, a tenant holding its fair share (`total` divided
//! by the tenants waiting) or more is refused too, while a tenant below its
//! share is still admitted (so memory stays under about twice `total`).
//! A refused push gives the item back: the producer counts it against
//! that tenant and tells the tenant, never another one.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard, PoisonError};

use tokio::sync::Notify;

/// How much a [`FairQueue`] holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    /// Items one key may have waiting.
    pub per_key: usize,
    /// Items all keys together may have waiting before keys at or over
    /// their fair share are refused.
    pub total: usize,
}

/// Why [`FairQueue::push`] gave an item back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The key holds `per_key` items, or its fair share of a full queue.
    Full,
    /// The queue was closed.
    Closed,
}

#[derive(Debug)]
struct Inner<T> {
    queues: HashMap<String, VecDeque<T>>,
    /// Keys with items waiting, in turn order.
    turns: VecDeque<String>,
    len: usize,
    closed: bool,
}

/// A queue of `T` per key (tenant), drained round-robin. See the crate docs.
#[derive(Debug)]
pub struct FairQueue<T> {
    bounds: Bounds,
    inner: Mutex<Inner<T>>,
    ready: Notify,
}

impl<T> FairQueue<T> {
    pub fn new(bounds: Bounds) -> Self {
        FairQueue {
            bounds: Bounds {
                per_key: bounds.per_key.max(1),
                total: bounds.total.max(1),
            },
            inner: Mutex::new(Inner {
                queues: HashMap::new(),
                turns: VecDeque::new(),
                len: 0,
                closed: false,
            }),
            ready: Notify::new(),
        }
    }

    // A std Mutex: held for a few pointer moves, never across an await.
    fn inner(&self) -> MutexGuard<'_, Inner<T>> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queue `item` for `key` without waiting; gives it back if the key is
    /// over its bound or the queue is closed.
    pub fn push(&self, key: &str, item: T) -> Result<(), (Refused, T)> {
        let mut inner = self.inner();
        if inner.closed {
            return Err((Refused::Closed, item));
        }
        let held = inner.queues.get(key).map_or(0, VecDeque::len);
        let waiting_keys = inner.turns.len() + usize::from(held == 0);
        let fair_share = (self.bounds.total / waiting_keys.max(1)).max(1);
        if held >= self.bounds.per_key || (inner.len >= self.bounds.total && held >= fair_share) {
            return Err((Refused::Full, item));
        }
        if held == 0 {
            inner.turns.push_back(key.to_owned());
        }
        inner
            .queues
            .entry(key.to_owned())
            .or_default()
            .push_back(item);
        inner.len += 1;
        drop(inner);
        self.ready.notify_one();
        Ok(())
    }

    /// Items waiting, all keys together.
    pub fn len(&self) -> usize {
        self.inner().len
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Items waiting for `key`.
    pub fn len_of(&self, key: &str) -> usize {
        self.inner().queues.get(key).map_or(0, VecDeque::len)
    }

    /// Whether [`FairQueue::close`] was called.
    pub fn is_closed(&self) -> bool {
        self.inner().closed
    }

    /// Refuse further pushes; what is queued still comes out.
    pub fn close(&self) {
        self.inner().closed = true;
        self.ready.notify_waiters();
        self.ready.notify_one();
    }

    /// Move up to `max` items into `batch`, round-robin over the keys, as
    /// `(key, item)`; without waiting. Returns how many.
    pub fn take_batch(&self, batch: &mut Vec<(String, T)>, max: usize) -> usize {
        let mut inner = self.inner();
        let mut taken = 0;
        while taken < max {
            let Some(key) = inner.turns.pop_front() else {
                break;
            };
            let (item, more) = match inner.queues.get_mut(&key) {
                Some(queue) => (queue.pop_front(), !queue.is_empty()),
                None => (None, false),
            };
            if more {
                inner.turns.push_back(key.clone());
            } else {
                inner.queues.remove(&key);
            }
            if let Some(item) = item {
                inner.len -= 1;
                batch.push((key, item));
                taken += 1;
            }
        }
        taken
    }

    /// Wait until something is queued (or the queue is closed), then take
    /// up to `max` items as [`FairQueue::take_batch`] does. 0 means the
    /// queue is closed and empty.
    pub async fn next_batch(&self, batch: &mut Vec<(String, T)>, max: usize) -> usize {
        loop {
            let notified = self.ready.notified();
            let taken = self.take_batch(batch, max.max(1));
            if taken > 0 {
                // Others may wait for what is left.
                if !self.is_empty() {
                    self.ready.notify_one();
                }
                return taken;
            }
            if self.inner().closed {
                return 0;
            }
            notified.await;
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use proptest::prelude::*;

    fn bounds(per_key: usize, total: usize) -> Bounds {
        Bounds { per_key, total }
    }

    /// Queues 0, 1, … `n - 1` under `key`, each one admitted.
    fn fill(q: &FairQueue<i32>, key: &str, n: i32) {
        for i in 0..n {
            q.push(key, i).unwrap();
        }
    }

    #[test]
    fn round_robin_keeps_order_within_a_key() {
        let q = FairQueue::new(bounds(100, 1000));
        fill(&q, "a", 5);
        q.push("b", 100).unwrap();
        q.push("b", 101).unwrap();
        let mut batch = Vec::new();
        assert_eq!(q.take_batch(&mut batch, 4), 4);
        let got: Vec<_> = batch.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        assert_eq!(got, [("a", 0), ("b", 100), ("a", 1), ("b", 101)]);
        batch.clear();
        q.take_batch(&mut batch, 10);
        let got: Vec<_> = batch.iter().map(|(_, v)| *v).collect();
        assert_eq!(got, [2, 3, 4]);
        assert!(q.is_empty());
    }

    #[test]
    fn a_full_key_is_refused_and_others_are_not() {
        let q = FairQueue::new(bounds(3, 1000));
        fill(&q, "a", 3);
        assert_eq!(q.push("a", 3), Err((Refused::Full, 3)));
        q.push("b", 0).unwrap();
        assert_eq!(q.len_of("a"), 3);
        q.close();
        assert_eq!(q.push("b", 1), Err((Refused::Closed, 1)));
    }

    #[test]
    fn a_full_queue_still_admits_a_key_below_its_share() {
        let q = FairQueue::new(bounds(100, 10));
        fill(&q, "a", 10);
        assert_eq!(q.push("a", 10), Err((Refused::Full, 10)));
        // Two keys waiting: b's share is 5.
        fill(&q, "b", 5);
        assert_eq!(q.push("b", 5), Err((Refused::Full, 5)));
    }

    #[tokio::test]
    async fn next_batch_waits_and_ends_when_closed() {
        let q = std::sync::Arc::new(FairQueue::new(bounds(10, 10)));
        let consumer = {
            let q = q.clone();
            tokio::spawn(async move {
                let mut all = Vec::new();
                let mut batch = Vec::new();
                while q.next_batch(&mut batch, 2).await > 0 {
                    all.append(&mut batch);
                }
                all.len()
            })
        };
        for i in 0..5 {
            q.push("a", i).unwrap();
            tokio::task::yield_now().await;
        }
        q.close();
        assert_eq!(consumer.await.unwrap(), 5);
    }

    proptest! {
        /// Whatever one key floods, another key's items are never refused
        /// while it holds less than its share, and each of its items comes
        /// out within `keys` items of the round it was pushed before.
        #[test]
        fn a_flood_never_crowds_out_another_key(flood in 0usize..500, others in 1usize..20) {
            let q = FairQueue::new(bounds(1000, 100));
            for i in 0..flood {
                let _ = q.push("a", i);
            }
            for i in 0..others {
                prop_assert!(q.push("b", i).is_ok());
            }
            let mut batch = Vec::new();
            q.take_batch(&mut batch, usize::MAX);
            let b_positions: Vec<usize> = batch
                .iter()
                .enumerate()
                .filter(|(_, (k, _))| k == "b")
                .map(|(at, _)| at)
                .collect();
            prop_assert_eq!(b_positions.len(), others);
            for (n, at) in b_positions.iter().enumerate() {
                prop_assert!(*at <= 2 * n + 1, "b's item {} came out at {}", n, at);
            }
        }
    }
}
