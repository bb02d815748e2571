//! The node-name lease: one key per node in a JetStream key-value bucket
//! whose entries expire after the TTL. A node creates its key at start
//! (refused while another live node holds it) and rewrites it every third
//! of the TTL with a compare-and-set on its last revision; a node that dies
//! stops rewriting, and its name is free once the TTL has passed.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_nats::jetstream::kv::{self, CreateErrorKind, Operation, Store};
use async_nats::jetstream::stream;
use bytes::Bytes;
use tokio_util::sync::CancellationToken;

use crate::Error;
use crate::node::NodeName;

/// The bucket of node leases.
pub const BUCKET: &str = "fleetmq_nodes";

/// Who holds a lease: one run of one node. Written as the key's value, so
/// a refused node can say who holds its name, and a node restarted after a
/// crash can tell its own stale lease from a live other node's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    /// Unique per process run.
    pub instance: String,
    pub host: String,
    /// The data directory the holder runs on (absolute).
    pub data_dir: String,
}

impl Holder {
    pub fn new(host: String, data_dir: String) -> Holder {
        Holder {
            instance: uuid::Uuid::new_v4().simple().to_string(),
            host,
            data_dir,
        }
    }

    fn encode(&self) -> Bytes {
        // The data dir last: it is the only field that may hold spaces.
        Bytes::from(format!(
            "v1 {} {} {}",
            self.instance, self.host, self.data_dir
        ))
    }

    fn decode(value: &[u8]) -> Option<Holder> {
        let text = std::str::from_utf8(value).ok()?;
        let mut parts = text.splitn(4, ' ');
        if parts.next()? != "v1" {
            return None;
        }
        Some(Holder {
            instance: parts.next()?.to_owned(),
            host: parts.next()?.to_owned(),
            data_dir: parts.next()?.to_owned(),
        })
    }

    /// Whether `other` is an earlier run of this same node: the same host
    /// and data directory. The caller holds that directory's exclusive
    /// lock, so such a holder is no longer running and its lease is stale.
    fn is_earlier_run_of(&self, other: &Holder) -> bool {
        self.instance != other.instance
            && self.host == other.host
            && self.data_dir == other.data_dir
    }
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "on host {} with data dir {}", self.host, self.data_dir)
    }
}

/// The bucket, created on first use. Its max age is the lease TTL.
pub(crate) async fn bucket(
    js: &async_nats::jetstream::Context,
    ttl: Duration,
) -> Result<Store, Error> {
    if let Ok(store) = js.get_key_value(BUCKET).await {
        return Ok(store);
    }
    // The stream a key-value bucket is, made directly: the client's
    // `create_key_value` first reads account details that servers before
    // 2.10 (Debian's 2.9) do not send, and fails on them. Two nodes
    // starting at once create the same configuration: the server answers
    // both with the one stream.
    js.create_stream(stream::Config {
        name: format!("KV_{BUCKET}"),
        description: Some("fleetmq node-name leases".to_owned()),
        subjects: vec![format!("$KV.{BUCKET}.>")],
        max_messages_per_subject: 1,
        max_age: ttl,
        storage: stream::StorageType::File,
        num_replicas: 1,
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        discard: stream::DiscardPolicy::New,
        ..Default::default()
    })
    .await
    .map_err(|e| Error::JetStream(format!("creating the key-value bucket {BUCKET}: {e}")))?;
    js.get_key_value(BUCKET)
        .await
        .map_err(|e| Error::JetStream(format!("opening the key-value bucket {BUCKET}: {e}")))
}

/// Takes `name`'s lease for `me`, or says who holds it.
pub(crate) async fn acquire(
    store: &Store,
    name: &NodeName,
    me: &Holder,
    ttl: Duration,
) -> Result<u64, Error> {
    let key = name.as_str();
    match store.create(key, me.encode()).await {
        Ok(revision) => return Ok(revision),
        Err(e) if e.kind() == CreateErrorKind::AlreadyExists => {}
        Err(e) => {
            return Err(Error::JetStream(format!(
                "taking the lease on node name {name}: {e}"
            )));
        }
    }
    let entry = store
        .entry(key)
        .await
        .map_err(|e| Error::JetStream(format!("reading the lease on node name {name}: {e}")))?;
    let Some(entry) = entry.filter(|e| e.operation == Operation::Put) else {
        // Freed between our create and our read: one more try.
        return store
            .create(key, me.encode())
            .await
            .map_err(|e| Error::JetStream(format!("taking the lease on node name {name}: {e}")));
    };
    let holder = Holder::decode(&entry.value);
    match &holder {
        Some(holder) if me.is_earlier_run_of(holder) => {
            tracing::info!(node = %name, "taking over the lease a crashed earlier run of this node left");
            store
                .update(key, me.encode(), entry.revision)
                .await
                .map_err(|_| Error::NameInUse {
                    name: name.clone(),
                    holder: "another node that took it just now".to_owned(),
                    ttl,
                })
        }
        _ => Err(Error::NameInUse {
            name: name.clone(),
            holder: holder.map_or_else(|| "an unknown holder".to_owned(), |h| h.to_string()),
            ttl,
        }),
    }
}

/// Rewrites the lease every third of the TTL until `stop`; `held` says
/// whether the last attempt kept it. While NATS is unreachable the
/// attempts fail and are retried; the lease lapses only if that lasts
/// longer than the TTL, and is taken again when NATS is back (unless
/// another node took the name meanwhile: then `held` stays false).
pub(crate) async fn heartbeat(
    store: Store,
    name: NodeName,
    me: Holder,
    ttl: Duration,
    mut revision: u64,
    held: Arc<AtomicBool>,
    stop: CancellationToken,
) -> u64 {
    let mut tick = tokio::time::interval(ttl / 3);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tokio::select! {
            () = stop.cancelled() => return revision,
            _ = tick.tick() => {}
        }
        match renew(&store, &name, &me, revision).await {
            Ok(Some(next)) => {
                revision = next;
                if !held.swap(true, Ordering::Relaxed) {
                    tracing::info!(node = %name, "node-name lease held again");
                }
            }
            Ok(None) => {
                if held.swap(false, Ordering::Relaxed) {
                    tracing::error!(node = %name, "another node holds this node's name now; this node is not ready until it is free again");
                }
            }
            Err(e) => {
                tracing::warn!(node = %name, error = %e, "renewing the node-name lease failed; retrying")
            }
        }
    }
}

/// One renewal: `Some(revision)` while the lease is ours, `None` when
/// another node holds the name.
async fn renew(
    store: &Store,
    name: &NodeName,
    me: &Holder,
    revision: u64,
) -> Result<Option<u64>, async_nats::Error> {
    let key = name.as_str();
    match store.update(key, me.encode(), revision).await {
        Ok(next) => return Ok(Some(next)),
        Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => {}
        Err(e) => return Err(e.into()),
    }
    // Our last write may have landed without its acknowledgement reaching
    // us, or the lease lapsed while NATS was away.
    match store.entry(key).await? {
        Some(entry) if entry.operation == Operation::Put => {
            match Holder::decode(&entry.value).is_some_and(|h| h.instance == me.instance) {
                true => Ok(Some(entry.revision)),
                false => Ok(None),
            }
        }
        _ => match store.create(key, me.encode()).await {
            Ok(next) => Ok(Some(next)),
            Err(e) if e.kind() == CreateErrorKind::AlreadyExists => Ok(None),
            Err(e) => Err(e.into()),
        },
    }
}

/// Frees the name at a clean stop, so the node can start again at once.
pub(crate) async fn release(store: &Store, name: &NodeName, revision: u64) {
    if let Err(e) = store
        .delete_expect_revision(name.as_str(), Some(revision))
        .await
    {
        tracing::warn!(node = %name, error = %e, "releasing the node-name lease failed; it lapses by itself");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holders_round_trip_with_spaces_in_the_data_dir() {
        let me = Holder::new("host-a".into(), "/srv/fleet mq/data".into());
        assert_eq!(Holder::decode(&me.encode()), Some(me.clone()));
        assert_eq!(Holder::decode(b"v2 x y z"), None);
        assert_eq!(Holder::decode(b"v1 only-two"), None);
        assert_eq!(Holder::decode(&[0xff, 0xfe]), None);
    }

    #[test]
    fn only_the_same_host_and_data_dir_is_an_earlier_run() {
        let me = Holder::new("host-a".into(), "/data".into());
        let earlier = Holder::new("host-a".into(), "/data".into());
        assert!(me.is_earlier_run_of(&earlier));
        assert!(!me.is_earlier_run_of(&me));
        assert!(!me.is_earlier_run_of(&Holder::new("host-b".into(), "/data".into())));
        assert!(!me.is_earlier_run_of(&Holder::new("host-a".into(), "/other".into())));
    }
}
