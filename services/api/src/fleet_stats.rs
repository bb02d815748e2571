//! [`FleetStats`]: what the dashboard charts, kept in this node's memory
//! and bounded: per tenant, a ring of 360 ten-second buckets (the last hour)
//! of messages, connects, disconnects and connections; messages per device
//! in one-minute buckets over the same hour (top talkers); and the last
//! lifecycle events of the tenant and of each device (presence history).
//!
//! It is fed by the binary: as an [`EventListener`] on the event hub
//! (lifecycle, presence) and through [`CountingRecentMessages`], which
//! counts each device message on its way into the recent-messages ring. A
//! restart starts empty, as the recent messages do; durable history is the
//! audit log's and the webhooks'.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use ::events::EventType;
use chrono::{DateTime, TimeZone, Utc};
use serde_json::Value;

use crate::device_io::{RecentMessage, RecentMessages};
use crate::events::{EventListener, PlatformEvent};

/// Seconds per series bucket.
pub const BUCKET_SECONDS: i64 = 10;
/// Buckets kept: one hour.
pub const BUCKETS: usize = 360;
/// Seconds per top-talker bucket (coarser: it is kept per device).
const TALKER_BUCKET_SECONDS: i64 = 60;
const TALKER_BUCKETS: usize = 60;
/// Lifecycle events kept per tenant and per device.
pub const LIFECYCLE_PER_TENANT: usize = 100;
pub const PRESENCE_PER_DEVICE: usize = 50;
/// Devices per tenant tracked for top talkers and presence; past it the
/// least recently active device is forgotten.
const MAX_DEVICES_PER_TENANT: usize = 10_000;

/// One ten-second bucket of a tenant's series.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Bucket {
    /// Start, in seconds since the epoch.
    pub start: i64,
    pub messages: u64,
    pub connects: u64,
    pub disconnects: u64,
    /// The most device connections open at once during the bucket.
    pub connections: u64,
    /// Device connections open at its end.
    pub open_at_end: u64,
}

/// A connect, disconnect or other device lifecycle event, as remembered.
#[derive(Debug, Clone, PartialEq)]
pub struct LifecycleEntry {
    pub at: DateTime<Utc>,
    /// The platform event type, e.g. `device.connected`.
    pub event_type: String,
    pub device_id: String,
    /// Why a session ended (the MQTT reason), when it did.
    pub reason: Option<String>,
    pub graceful: Option<bool>,
    pub remote_addr: Option<String>,
}

#[derive(Default)]
struct TenantStats {
    /// Oldest first; contiguous is not required (idle buckets are absent).
    buckets: VecDeque<Bucket>,
    /// Device connections open now (connects minus disconnects: a session
    /// takeover is one of each, so it stays right).
    connections: u64,
    /// device → (minute index, messages), oldest first.
    talkers: HashMap<String, VecDeque<(i64, u64)>>,
    lifecycle: VecDeque<LifecycleEntry>,
    presence: HashMap<String, VecDeque<LifecycleEntry>>,
    /// When a tenant of this id was last deleted: lifecycle events stamped
    /// earlier belong to that one, not to this.
    born: Option<DateTime<Utc>>,
}

impl TenantStats {
    fn bucket(&mut self, now: i64) -> &mut Bucket {
        let start = now - now.rem_euclid(BUCKET_SECONDS);
        if self.buckets.back().is_none_or(|b| b.start < start) {
            self.buckets.push_back(Bucket {
                start,
                connections: self.connections,
                open_at_end: self.connections,
                ..Bucket::default()
            });
            while self.buckets.len() > BUCKETS {
                self.buckets.pop_front();
            }
        }
        // A clock that stepped back lands in the newest bucket. The deque
        // is never empty here: a bucket was pushed above if there was none.
        let newest = self.buckets.len() - 1;
        &mut self.buckets[newest]
    }
}

/// The per-tenant series, top talkers and lifecycle rings. Cheap to share
/// (`Arc`); every method takes the one lock for a few map operations.
#[derive(Default)]
pub struct FleetStats {
    tenants: Mutex<HashMap<String, TenantStats>>,
}

impl FleetStats {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, TenantStats>> {
        match self.tenants.lock() {
            Ok(t) => t,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Forget everything about `tenant` (deleted): a tenant created again
    /// under its id starts empty. Events stamped before `deleted_at` that
    /// were still on their way are not counted for it.
    pub fn forget_tenant(&self, tenant: &str, deleted_at: DateTime<Utc>) {
        let mut tenants = self.lock();
        tenants.insert(
            tenant.to_owned(),
            TenantStats {
                born: Some(deleted_at),
                ..TenantStats::default()
            },
        );
    }

    /// Count one message `device` of `tenant` published at `now`.
    pub fn message_at(&self, tenant: &str, device: &str, now: DateTime<Utc>) {
        let secs = now.timestamp();
        let mut tenants = self.lock();
        let stats = tenants.entry(tenant.to_owned()).or_default();
        stats.bucket(secs).messages += 1;
        let minute = secs.div_euclid(TALKER_BUCKET_SECONDS);
        if !stats.talkers.contains_key(device) && stats.talkers.len() >= MAX_DEVICES_PER_TENANT {
            let quietest = stats
                .talkers
                .iter()
                .min_by_key(|(_, ring)| ring.back().map_or(i64::MIN, |(m, _)| *m))
                .map(|(d, _)| d.clone());
            if let Some(quietest) = quietest {
                stats.talkers.remove(&quietest);
            }
        }
        let ring = stats.talkers.entry(device.to_owned()).or_default();
        match ring.back_mut() {
            Some((m, n)) if *m >= minute => *n += 1,
            _ => ring.push_back((minute, 1)),
        }
        while ring
            .front()
            .is_some_and(|(m, _)| *m <= minute - TALKER_BUCKETS as i64)
        {
            ring.pop_front();
        }
    }

    /// Remember a lifecycle event (and count it in the series when it is a
    /// connect or disconnect).
    pub fn lifecycle(&self, tenant: &str, entry: LifecycleEntry) {
        let secs = entry.at.timestamp();
        let mut tenants = self.lock();
        let stats = tenants.entry(tenant.to_owned()).or_default();
        if stats.born.is_some_and(|born| entry.at < born) {
            return;
        }
        let presence = match entry.event_type.parse() {
            Ok(EventType::DeviceConnected) => {
                stats.connections += 1;
                let connections = stats.connections;
                let bucket = stats.bucket(secs);
                bucket.connects += 1;
                bucket.connections = bucket.connections.max(connections);
                bucket.open_at_end = connections;
                true
            }
            Ok(EventType::DeviceDisconnected) => {
                // The bucket first: it opens with the count before this one
                // went.
                stats.bucket(secs);
                stats.connections = stats.connections.saturating_sub(1);
                let connections = stats.connections;
                let bucket = stats.bucket(secs);
                bucket.disconnects += 1;
                bucket.open_at_end = connections;
                true
            }
            _ => false,
        };
        if presence {
            if !stats.presence.contains_key(&entry.device_id)
                && stats.presence.len() >= MAX_DEVICES_PER_TENANT
            {
                let stalest = stats
                    .presence
                    .iter()
                    .min_by_key(|(_, ring)| ring.back().map(|e| e.at))
                    .map(|(d, _)| d.clone());
                if let Some(stalest) = stalest {
                    stats.presence.remove(&stalest);
                }
            }
            // Most devices connect and stay: room for one entry at first,
            // not the four a default deque grows to (issue 16: a fleet of
            // idle devices paid for three unused entries each).
            let ring = stats
                .presence
                .entry(entry.device_id.clone())
                .or_insert_with(|| VecDeque::with_capacity(1));
            ring.push_back(entry.clone());
            while ring.len() > PRESENCE_PER_DEVICE {
                ring.pop_front();
            }
        }
        if entry.event_type == EventType::DeviceDeleted {
            stats.presence.remove(&entry.device_id);
            stats.talkers.remove(&entry.device_id);
        }
        stats.lifecycle.push_back(entry);
        while stats.lifecycle.len() > LIFECYCLE_PER_TENANT {
            stats.lifecycle.pop_front();
        }
    }

    /// The last hour of `tenant` up to `now`: [`BUCKETS`] buckets, oldest
    /// first, idle ones filled in (connections carried over), and the
    /// connections open now.
    pub fn series_at(&self, tenant: &str, now: DateTime<Utc>) -> (Vec<Bucket>, u64) {
        let secs = now.timestamp();
        let last = secs - secs.rem_euclid(BUCKET_SECONDS);
        let first = last - (BUCKETS as i64 - 1) * BUCKET_SECONDS;
        let tenants = self.lock();
        let Some(stats) = tenants.get(tenant) else {
            let empty = (0..BUCKETS as i64)
                .map(|i| Bucket {
                    start: first + i * BUCKET_SECONDS,
                    ..Bucket::default()
                })
                .collect();
            return (empty, 0);
        };
        let mut kept = stats.buckets.iter().peekable();
        // What was open when the window began: the gauge of the last bucket
        // before it, if any.
        let mut open = 0;
        while let Some(b) = kept.next_if(|b| b.start < first) {
            open = b.open_at_end;
        }
        let mut out = Vec::with_capacity(BUCKETS);
        for i in 0..BUCKETS as i64 {
            let start = first + i * BUCKET_SECONDS;
            match kept.next_if(|b| b.start == start) {
                Some(b) => {
                    open = b.open_at_end;
                    out.push(*b);
                }
                None => out.push(Bucket {
                    start,
                    connections: open,
                    open_at_end: open,
                    ..Bucket::default()
                }),
            }
        }
        (out, stats.connections)
    }

    /// The `limit` devices of `tenant` with the most messages in the hour
    /// up to `now`, most first (ties by id).
    pub fn top_talkers_at(
        &self,
        tenant: &str,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Vec<(String, u64)> {
        let oldest = now.timestamp().div_euclid(TALKER_BUCKET_SECONDS) - TALKER_BUCKETS as i64 + 1;
        let tenants = self.lock();
        let Some(stats) = tenants.get(tenant) else {
            return Vec::new();
        };
        let mut counts: Vec<(String, u64)> = stats
            .talkers
            .iter()
            .map(|(d, ring)| {
                let n = ring
                    .iter()
                    .filter(|(m, _)| *m >= oldest)
                    .map(|(_, n)| n)
                    .sum();
                (d.clone(), n)
            })
            .filter(|(_, n)| *n > 0)
            .collect();
        counts.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        counts.truncate(limit);
        counts
    }

    /// The tenant's last lifecycle events, newest first.
    pub fn recent_lifecycle(&self, tenant: &str) -> Vec<LifecycleEntry> {
        self.lock()
            .get(tenant)
            .map(|s| s.lifecycle.iter().rev().cloned().collect())
            .unwrap_or_default()
    }

    /// The device's last connects and disconnects, newest first.
    pub fn presence(&self, tenant: &str, device: &str) -> Vec<LifecycleEntry> {
        self.lock()
            .get(tenant)
            .and_then(|s| s.presence.get(device))
            .map(|ring| ring.iter().rev().cloned().collect())
            .unwrap_or_default()
    }
}

fn text(data: &Value, key: &str) -> Option<String> {
    data.get(key).and_then(Value::as_str).map(str::to_owned)
}

/// Device lifecycle events (`device.*`) from the hub.
impl EventListener for FleetStats {
    fn on_event(&self, event: &PlatformEvent) {
        let Some(device) = &event.device else {
            return;
        };
        if !::events::pattern_matches("device.*", &event.event_type) {
            return;
        }
        self.lifecycle(
            &event.tenant,
            LifecycleEntry {
                at: event.timestamp,
                event_type: event.event_type.clone(),
                device_id: device.clone(),
                reason: text(&event.data, "reason"),
                graceful: event.data.get("graceful").and_then(Value::as_bool),
                remote_addr: text(&event.data, "remote_addr"),
            },
        );
    }
}

/// A [`RecentMessages`] that counts every message in [`FleetStats`] before
/// handing it on: the one place the broker reports device messages.
pub struct CountingRecentMessages {
    pub inner: Arc<dyn RecentMessages>,
    pub stats: Arc<FleetStats>,
}

impl RecentMessages for CountingRecentMessages {
    fn record(&self, tenant: &str, device: &str, message: RecentMessage) {
        self.stats.message_at(tenant, device, message.received_at);
        self.inner.record(tenant, device, message);
    }

    fn recent(&self, tenant: &str, device: &str, limit: usize) -> Vec<RecentMessage> {
        self.inner.recent(tenant, device, limit)
    }
}

/// Seconds since the epoch as a time (for views).
pub(crate) fn at_secs(secs: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(secs, 0).single().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn t(secs: i64) -> DateTime<Utc> {
        at_secs(1_800_000_000 + secs)
    }

    fn event(kind: &str, device: &str, at: DateTime<Utc>) -> LifecycleEntry {
        LifecycleEntry {
            at,
            event_type: kind.to_owned(),
            device_id: device.to_owned(),
            reason: None,
            graceful: None,
            remote_addr: None,
        }
    }

    #[test]
    fn series_fills_an_hour_of_ten_second_buckets() {
        let stats = FleetStats::new();
        stats.lifecycle("acme", event("device.connected", "d1", t(0)));
        stats.message_at("acme", "d1", t(1));
        stats.message_at("acme", "d1", t(2));
        stats.lifecycle("acme", event("device.connected", "d2", t(25)));
        stats.message_at("acme", "d2", t(26));
        stats.lifecycle("acme", event("device.disconnected", "d1", t(41)));
        let (buckets, open) = stats.series_at("acme", t(45));
        assert_eq!(buckets.len(), BUCKETS);
        assert_eq!(open, 1);
        let last5: Vec<(u64, u64, u64, u64)> = buckets[BUCKETS - 5..]
            .iter()
            .map(|b| (b.messages, b.connects, b.disconnects, b.connections))
            .collect();
        assert_eq!(
            last5,
            [
                (2, 1, 0, 1),
                (0, 0, 0, 1),
                (1, 1, 0, 2),
                (0, 0, 0, 2),
                (0, 0, 1, 2)
            ]
        );
        assert_eq!(buckets[BUCKETS - 1].start, t(40).timestamp());
        assert!(
            buckets
                .windows(2)
                .all(|w| w[1].start - w[0].start == BUCKET_SECONDS)
        );
        // An hour later everything has left the window but the gauge.
        let (later, open) = stats.series_at("acme", t(45 + 3600));
        assert_eq!(later.iter().map(|b| b.messages).sum::<u64>(), 0);
        assert_eq!(later[0].connections, 1);
        assert_eq!(open, 1);
        let (none, zero) = stats.series_at("other", t(0));
        assert_eq!((none.len(), zero), (BUCKETS, 0));
    }

    #[test]
    fn top_talkers_count_the_last_hour() {
        let stats = FleetStats::new();
        for _ in 0..3 {
            stats.message_at("acme", "busy", t(0));
        }
        stats.message_at("acme", "quiet", t(100));
        stats.message_at("acme", "old", t(-4000));
        stats.message_at("other", "x", t(0));
        assert_eq!(
            stats.top_talkers_at("acme", t(120), 10),
            [("busy".to_owned(), 3), ("quiet".to_owned(), 1)]
        );
        assert_eq!(stats.top_talkers_at("acme", t(120), 1).len(), 1);
        assert_eq!(
            stats.top_talkers_at("acme", t(100 + 3500), 10),
            [("quiet".to_owned(), 1)]
        );
    }

    #[test]
    fn presence_and_lifecycle_rings_are_bounded_and_newest_first() {
        let stats = FleetStats::new();
        for i in 0..(PRESENCE_PER_DEVICE as i64 + 5) {
            stats.lifecycle("acme", event("device.connected", "d1", t(2 * i)));
            stats.lifecycle("acme", event("device.disconnected", "d1", t(2 * i + 1)));
        }
        let history = stats.presence("acme", "d1");
        assert_eq!(history.len(), PRESENCE_PER_DEVICE);
        assert_eq!(history[0].event_type, "device.disconnected");
        assert!(history[0].at > history[1].at);
        assert_eq!(stats.recent_lifecycle("acme").len(), LIFECYCLE_PER_TENANT);
        assert!(stats.presence("acme", "d2").is_empty());
        stats.lifecycle("acme", event("device.deleted", "d1", t(500)));
        assert!(stats.presence("acme", "d1").is_empty());
        assert_eq!(
            stats.recent_lifecycle("acme")[0].event_type,
            "device.deleted"
        );
    }

    #[test]
    fn hub_events_with_reasons_feed_presence() {
        let stats = FleetStats::new();
        stats.on_event(
            &PlatformEvent::named(
                "acme",
                "device.disconnected",
                json!({"reason": "KeepAliveTimeout", "graceful": false}),
            )
            .for_device("d1", Some(3)),
        );
        stats.on_event(
            &PlatformEvent::named("acme", "state.reported", json!({})).for_device("d1", None),
        );
        stats.on_event(&PlatformEvent::named("acme", "device.created", json!({})));
        let history = stats.presence("acme", "d1");
        assert_eq!(history.len(), 1);
        assert_eq!(history[0].reason.as_deref(), Some("KeepAliveTimeout"));
        assert_eq!(history[0].graceful, Some(false));
        assert_eq!(stats.recent_lifecycle("acme").len(), 1);
    }
}
