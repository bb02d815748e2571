//! What the API needs from the broker, as traits the binary implements:
//! [`DeviceCommands`] (publish a retained command to a device),
//! [`RecentMessages`] (the last messages each device published), with
//! [`InMemoryRecentMessages`], a bounded implementation the broker can feed,
//! and [`BrokerDrops`] (messages the broker dropped, per session and per
//! tenant).

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use serde::Serialize;
use utoipa::ToSchema;

/// Why a command could not be published.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// The broker is not running (starting, or shutting down).
    #[error("the MQTT broker is not available")]
    Unavailable,
    /// The broker refused or failed the publish.
    #[error("publish failed: {0}")]
    Failed(String),
}

/// Publishes to devices through the broker (the binary implements it).
pub trait DeviceCommands: Send + Sync {
    /// Publish `payload` retained at QoS 1 on `topic` (tenant-relative,
    /// e.g. `commands/d1/state/desired`) in `tenant`; done once the
    /// retained message is stored.
    fn publish_retained<'a>(
        &'a self,
        tenant: &'a str,
        topic: &'a str,
        payload: Vec<u8>,
    ) -> BoxFuture<'a, Result<(), CommandError>>;
}

/// One message a device published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecentMessage {
    pub topic: String,
    /// Possibly cut to the store's per-message limit; see `truncated`.
    pub payload: Vec<u8>,
    pub truncated: bool,
    pub qos: u8,
    pub retain: bool,
    pub received_at: DateTime<Utc>,
}

/// The last messages per device (the binary feeds it from the broker).
pub trait RecentMessages: Send + Sync {
    /// Remember a message `device` of `tenant` published.
    fn record(&self, tenant: &str, device: &str, message: RecentMessage);
    /// Up to `limit` of the device's last messages, newest first.
    fn recent(&self, tenant: &str, device: &str, limit: usize) -> Vec<RecentMessage>;
}

/// Messages the broker dropped for one session, by reason, counted by the
/// node that holds the session in memory since it took the session (a
/// restart or a move to another node starts again at 0).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
pub struct SessionDrops {
    /// Its queue was at its bound in messages while it was not a slow
    /// consumer (e.g. with the slow-consumer timeout at 0).
    pub queue_full: u64,
    /// Its queue was at its bound in bytes, likewise.
    pub queue_bytes: u64,
    /// Its queue was full after it had stayed behind past the
    /// slow-consumer timeout: publishers no longer waited for it.
    pub slow_consumer: u64,
    /// The tenant's queues together were at their bound.
    pub tenant_queue_full: u64,
    /// QoS 0 messages for it while its client was offline.
    pub offline_qos0: u64,
    /// Their Message Expiry Interval ran out before they were sent.
    pub expired: u64,
    /// Larger than the Maximum Packet Size its client announced.
    pub too_large: u64,
}

/// Messages the broker dropped for a tenant's subscribers, counted by this
/// node since it started (each node counts its own sessions).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
pub struct TenantDrops {
    /// For its slow consumers: subscribers that stayed behind past the
    /// slow-consumer timeout.
    pub slow_consumer: u64,
    /// Because its sessions' queues together were at the tenant's bound.
    pub tenant_queue_full: u64,
}

/// What the broker dropped (the binary implements it on the broker). Both
/// answer from this node's memory only.
pub trait BrokerDrops: Send + Sync {
    /// The drops of session `client_id` of `tenant`, if this node holds
    /// it in memory.
    fn session(&self, tenant: &str, client_id: &str) -> Option<SessionDrops>;
    /// The drops of `tenant`'s subscribers on this node (all 0 for a
    /// tenant it has not served since it started).
    fn tenant(&self, tenant: &str) -> TenantDrops;
}

/// Bounds of [`InMemoryRecentMessages`]: memory is at most about
/// `max_devices × per_device × max_payload_bytes` (plus topics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecentMessagesLimits {
    /// Messages kept per device. Default 50.
    pub per_device: usize,
    /// Devices kept, all tenants together; past it the device that
    /// published least recently *in the tenant keeping the most devices*
    /// is forgotten, so one tenant's many devices never push out another
    /// tenant's (a tenant keeps at least its fair share). Default 10,000.
    pub max_devices: usize,
    /// Payload bytes kept per message; the rest is cut. Default 4 KiB.
    pub max_payload_bytes: usize,
}

impl Default for RecentMessagesLimits {
    fn default() -> Self {
        RecentMessagesLimits {
            per_device: 50,
            max_devices: 10_000,
            max_payload_bytes: 4096,
        }
    }
}

type DeviceKey = (String, String);

#[derive(Default)]
struct Ring {
    /// device → (its last write tick, its messages, oldest first).
    devices: HashMap<DeviceKey, (u64, VecDeque<RecentMessage>)>,
    /// Per tenant, last write tick → device: the least recently written
    /// is first.
    by_tick: HashMap<String, BTreeMap<u64, String>>,
    /// (devices kept, tenant): the tenant keeping the most is last.
    sizes: BTreeSet<(usize, String)>,
    tick: u64,
}

impl Ring {
    /// Forget the least recently written device of the tenant keeping the
    /// most devices.
    fn evict_one(&mut self) -> bool {
        let Some((size, tenant)) = self.sizes.pop_last() else {
            return false;
        };
        let Some(ticks) = self.by_tick.get_mut(&tenant) else {
            return false;
        };
        let Some((_, device)) = ticks.pop_first() else {
            return false;
        };
        if ticks.is_empty() {
            self.by_tick.remove(&tenant);
        }
        if size > 1 {
            self.sizes.insert((size - 1, tenant.clone()));
        }
        self.devices.remove(&(tenant, device));
        true
    }

    fn size_of(&self, tenant: &str) -> usize {
        self.by_tick.get(tenant).map_or(0, BTreeMap::len)
    }
}

/// A memory-bounded [`RecentMessages`].
pub struct InMemoryRecentMessages {
    limits: RecentMessagesLimits,
    // A std mutex: nothing awaits while holding it, and each critical
    // section is a few map operations.
    ring: Mutex<Ring>,
}

impl InMemoryRecentMessages {
    pub fn new(limits: RecentMessagesLimits) -> Self {
        InMemoryRecentMessages {
            limits,
            ring: Mutex::new(Ring::default()),
        }
    }

    fn ring(&self) -> std::sync::MutexGuard<'_, Ring> {
        match self.ring.lock() {
            Ok(ring) => ring,
            Err(poisoned) => poisoned.into_inner(),
        }
    }
}

impl RecentMessages for InMemoryRecentMessages {
    fn record(&self, tenant: &str, device: &str, mut message: RecentMessage) {
        let limits = self.limits;
        if limits.per_device == 0 || limits.max_devices == 0 {
            return;
        }
        if message.payload.len() > limits.max_payload_bytes {
            message.payload.truncate(limits.max_payload_bytes);
            message.truncated = true;
        }
        let mut ring = self.ring();
        ring.tick += 1;
        let tick = ring.tick;
        let key = (tenant.to_owned(), device.to_owned());
        let previous_tick = ring.devices.get(&key).map(|(t, _)| *t);
        match previous_tick {
            Some(old) => {
                if let Some(ticks) = ring.by_tick.get_mut(tenant) {
                    ticks.remove(&old);
                }
            }
            None => {
                while ring.devices.len() >= limits.max_devices && ring.evict_one() {}
                let size = ring.size_of(tenant);
                if size > 0 {
                    ring.sizes.remove(&(size, tenant.to_owned()));
                }
                ring.sizes.insert((size + 1, tenant.to_owned()));
            }
        }
        ring.by_tick
            .entry(tenant.to_owned())
            .or_default()
            .insert(tick, device.to_owned());
        let entry = ring.devices.entry(key).or_default();
        entry.0 = tick;
        entry.1.push_back(message);
        while entry.1.len() > limits.per_device {
            entry.1.pop_front();
        }
    }

    fn recent(&self, tenant: &str, device: &str, limit: usize) -> Vec<RecentMessage> {
        let ring = self.ring();
        ring.devices
            .get(&(tenant.to_owned(), device.to_owned()))
            .map(|(_, messages)| messages.iter().rev().take(limit).cloned().collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(topic: &str, payload: &[u8]) -> RecentMessage {
        RecentMessage {
            topic: topic.to_owned(),
            payload: payload.to_vec(),
            truncated: false,
            qos: 0,
            retain: false,
            received_at: Utc::now(),
        }
    }

    #[test]
    fn keeps_the_last_n_per_device_newest_first() {
        let ring = InMemoryRecentMessages::new(RecentMessagesLimits {
            per_device: 3,
            ..RecentMessagesLimits::default()
        });
        for i in 0..5 {
            ring.record("acme", "d1", message(&format!("devices/d1/{i}"), b"x"));
        }
        ring.record("other", "d1", message("devices/d1/other", b"y"));
        let topics: Vec<String> = ring
            .recent("acme", "d1", 10)
            .into_iter()
            .map(|m| m.topic)
            .collect();
        assert_eq!(topics, ["devices/d1/4", "devices/d1/3", "devices/d1/2"]);
        assert_eq!(ring.recent("acme", "d1", 1).len(), 1);
        assert_eq!(ring.recent("other", "d1", 10)[0].payload, b"y");
        assert!(ring.recent("acme", "nobody", 10).is_empty());
    }

    #[test]
    fn one_tenants_many_devices_never_push_out_anothers() {
        let ring = InMemoryRecentMessages::new(RecentMessagesLimits {
            per_device: 2,
            max_devices: 10,
            ..RecentMessagesLimits::default()
        });
        ring.record("beta", "b1", message("devices/b1/x", b"kept"));
        for i in 0..1000 {
            let device = format!("a{i}");
            ring.record("acme", &device, message("devices/a/x", b"flood"));
        }
        assert_eq!(ring.recent("beta", "b1", 10).len(), 1);
        assert_eq!(ring.recent("acme", "a999", 10).len(), 1);
        assert!(ring.recent("acme", "a0", 10).is_empty());
        let kept = ring.ring();
        assert_eq!(kept.devices.len(), 10);
        assert_eq!(kept.sizes.iter().map(|(n, _)| n).sum::<usize>(), 10);
    }

    #[test]
    fn forgets_the_least_recently_written_device_and_cuts_payloads() {
        let ring = InMemoryRecentMessages::new(RecentMessagesLimits {
            per_device: 2,
            max_devices: 2,
            max_payload_bytes: 4,
        });
        ring.record("t", "a", message("a", b"1"));
        ring.record("t", "b", message("b", b"1"));
        ring.record("t", "a", message("a", b"2"));
        ring.record("t", "c", message("c", b"123456"));
        assert!(ring.recent("t", "b", 10).is_empty(), "b was least recent");
        assert_eq!(ring.recent("t", "a", 10).len(), 2);
        let cut = &ring.recent("t", "c", 10)[0];
        assert_eq!(cut.payload, b"1234");
        assert!(cut.truncated);
        assert_eq!(ring.ring().devices.len(), 2);
        assert_eq!(
            ring.ring()
                .by_tick
                .values()
                .map(BTreeMap::len)
                .sum::<usize>(),
            2
        );
    }
}
