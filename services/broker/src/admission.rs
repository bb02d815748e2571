//! Who gets a listener's places (issue 13, item 8). A socket that has not
//! sent CONNECT yet holds no connection place: it is counted among the
//! listener's *pending* sockets, with a cap per peer address and one for
//! the listener, and still has only the connect timeout to speak. A
//! connection place (`max_connections`) is taken once a CONNECT has
//! arrived, so silent sockets can never lock real clients out:
//!
//! - over the per-address cap, a new socket is closed at once;
//! - over the listener's pending cap, the *oldest* pending socket is closed
//!   to make room, so a flood can only ever cost a real client the time it
//!   takes to send its CONNECT, never its place.
//!
//! Both count in `mqtt_connections_refused_total` (reasons
//! `pending_per_address`, `pending_evicted`); `mqtt_pending_connects` is
//! the gauge of sockets waiting for their CONNECT.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio_util::sync::CancellationToken;

use crate::metrics;

/// Sockets waiting for their CONNECT on one listener.
#[derive(Debug)]
pub(crate) struct PendingConnects {
    max_total: usize,
    max_per_address: usize,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    next_id: u64,
    /// Pending sockets not yet evicted, oldest first (ids only grow).
    order: BTreeMap<u64, CancellationToken>,
    /// Pending sockets per peer address, evicted ones included until their
    /// task lets go.
    per_address: HashMap<IpAddr, usize>,
}

/// Why a socket was closed without being served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// Its address already has `max_per_address` pending sockets.
    PerAddress,
}

impl PendingConnects {
    pub(crate) fn new(max_total: usize, max_per_address: usize) -> Arc<Self> {
        Arc::new(Self {
            max_total: max_total.max(1),
            max_per_address: max_per_address.max(1),
            state: Mutex::default(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts a new socket from `addr` as pending, making room by evicting
    /// the oldest pending socket if the listener is at its cap.
    pub(crate) fn admit(self: &Arc<Self>, addr: IpAddr) -> Result<Pending, Refused> {
        let mut st = self.lock();
        let from_addr = st.per_address.get(&addr).copied().unwrap_or(0);
        if from_addr >= self.max_per_address {
            drop(st);
            metrics::connection_refused("pending_per_address");
            return Err(Refused::PerAddress);
        }
        if st.order.len() >= self.max_total
            && let Some((_, oldest)) = st.order.pop_first()
        {
            oldest.cancel();
            metrics::connection_refused("pending_evicted");
        }
        let id = st.next_id;
        st.next_id += 1;
        let evicted = CancellationToken::new();
        st.order.insert(id, evicted.clone());
        *st.per_address.entry(addr).or_insert(0) += 1;
        metrics::pending_connects(1.0);
        Ok(Pending {
            owner: self.clone(),
            id,
            addr,
            evicted,
        })
    }
}

/// A socket counted as pending until this is dropped (its CONNECT arrived,
/// or it closed).
#[derive(Debug)]
pub(crate) struct Pending {
    owner: Arc<PendingConnects>,
    id: u64,
    addr: IpAddr,
    /// Cancelled when a newer socket needed the place.
    pub(crate) evicted: CancellationToken,
}

impl Drop for Pending {
    fn drop(&mut self) {
        let mut st = self.owner.lock();
        st.order.remove(&self.id);
        if let Some(n) = st.per_address.get_mut(&self.addr) {
            *n -= 1;
            if *n == 0 {
                st.per_address.remove(&self.addr);
            }
        }
        metrics::pending_connects(-1.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([127, 0, 0, last])
    }

    #[test]
    fn per_address_cap_refuses_and_frees_on_drop() {
        let p = PendingConnects::new(100, 2);
        let a = p.admit(ip(1)).unwrap();
        let _b = p.admit(ip(1)).unwrap();
        assert_eq!(p.admit(ip(1)).unwrap_err(), Refused::PerAddress);
        // Another address is not affected.
        let _c = p.admit(ip(2)).unwrap();
        drop(a);
        let _d = p.admit(ip(1)).unwrap();
    }

    #[test]
    fn listener_cap_evicts_the_oldest() {
        let p = PendingConnects::new(2, 10);
        let a = p.admit(ip(1)).unwrap();
        let b = p.admit(ip(2)).unwrap();
        let c = p.admit(ip(3)).unwrap();
        assert!(a.evicted.is_cancelled());
        assert!(!b.evicted.is_cancelled() && !c.evicted.is_cancelled());
        // The evicted one still counts for its address until it lets go.
        drop(a);
        let d = p.admit(ip(4)).unwrap();
        assert!(b.evicted.is_cancelled());
        assert!(!d.evicted.is_cancelled());
        assert_eq!(p.lock().order.len(), 2);
    }
}
