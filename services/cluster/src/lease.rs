//! The node-name lease: one key per node in a JetStream key-value bucket
//! whose entries expire after the TTL. A node creates its key at start
//! (refused while another live node holds it) and rewrites it every third
//! of the TTL with a compare-and-set on its last revision; a node that dies
//! stops rewriting, and its name is free once the TTL has passed.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

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
    if Claim::is_claim(&entry.value) {
        // A survivor is cleaning up after this name's last run (it died):
        // the name is free once it is done, within the TTL at worst.
        return acquire_after_claim(store, name, me, ttl).await;
    }
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

/// Takes `name` once the survivor's [`Claim`] on it is released (or has
/// lapsed), trying every [`CLAIM_RETRY`] for at most the TTL.
async fn acquire_after_claim(
    store: &Store,
    name: &NodeName,
    me: &Holder,
    ttl: Duration,
) -> Result<u64, Error> {
    tracing::info!(node = %name, "another node is taking over what this node's last run left; waiting for it");
    let deadline = tokio::time::Instant::now() + ttl;
    loop {
        tokio::time::sleep(CLAIM_RETRY).await;
        match store.create(name.as_str(), me.encode()).await {
            Ok(revision) => return Ok(revision),
            Err(e) if e.kind() == CreateErrorKind::AlreadyExists => {}
            Err(e) => {
                return Err(Error::JetStream(format!(
                    "taking the lease on node name {name}: {e}"
                )));
            }
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(Error::NameInUse {
                name: name.clone(),
                holder: "a node taking over after its last run".to_owned(),
                ttl,
            });
        }
    }
}

/// How often a starting node looks whether a [`Claim`] on its name is gone.
const CLAIM_RETRY: Duration = Duration::from_millis(250);

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

/// The leases as other nodes see them: whether a node is alive, and the
/// claim a survivor takes on a dead node's name while it cleans up after
/// it (`fleetmq::node_death`).
#[derive(Debug, Clone)]
pub struct Leases {
    store: Store,
    /// This node, named in the claims it takes.
    me: NodeName,
}

impl Leases {
    pub(crate) fn new(store: Store, me: NodeName) -> Leases {
        Leases { store, me }
    }

    /// When `node` last rewrote its lease; `None` when it holds none (it
    /// stopped, or died and its lease lapsed). A name under a survivor's
    /// claim counts as held: the claimer is at work on it.
    pub async fn last_renewed(&self, node: &NodeName) -> Result<Option<SystemTime>, Error> {
        self.written(node, |_| true).await
    }

    /// When `node` itself last wrote its lease; `None` when it holds none
    /// (it stopped, or its lease lapsed) or a survivor's claim stands in
    /// its place (whose time says nothing of when `node` was last heard).
    pub async fn heard_from(&self, node: &NodeName) -> Result<Option<SystemTime>, Error> {
        self.written(node, |value| !Claim::is_claim(value)).await
    }

    /// When `node`'s key was last written, if it holds a value `counts`.
    async fn written(
        &self,
        node: &NodeName,
        counts: impl Fn(&[u8]) -> bool,
    ) -> Result<Option<SystemTime>, Error> {
        let entry =
            self.store.entry(node.as_str()).await.map_err(|e| {
                Error::JetStream(format!("reading the lease on node name {node}: {e}"))
            })?;
        Ok(entry
            .filter(|e| e.operation == Operation::Put && counts(&e.value))
            .map(|e| SystemTime::from(e.created)))
    }

    /// Takes `node`'s name while this node cleans up after it; `None` when
    /// the name is held (the node is alive again, or another survivor
    /// claimed it first).
    ///
    /// Why a claim on the name itself: the create is atomic in JetStream,
    /// so it both proves the lease lapsed and keeps the dead node from
    /// starting again under its name (its `acquire` waits) until the
    /// claim is released; without it, a node restarting between a
    /// survivor's look at its lease and the survivor taking its sessions
    /// could load sessions the survivor then takes from under it. A
    /// claimer that dies too leaves a claim that lapses with the TTL.
    pub async fn claim(&self, node: &NodeName) -> Result<Option<Claim>, Error> {
        let value = Claim::encode(&self.me);
        match self.store.create(node.as_str(), value).await {
            Ok(revision) => Ok(Some(Claim {
                store: self.store.clone(),
                node: node.clone(),
                revision,
            })),
            Err(e) if e.kind() == CreateErrorKind::AlreadyExists => Ok(None),
            Err(e) => Err(Error::JetStream(format!(
                "claiming the node name {node}: {e}"
            ))),
        }
    }
}

/// A survivor's hold on a dead node's name ([`Leases::claim`]); call
/// [`Claim::release`] when done (dropped, it lapses after the TTL).
#[derive(Debug)]
pub struct Claim {
    store: Store,
    node: NodeName,
    revision: u64,
}

impl Claim {
    const PREFIX: &'static [u8] = b"claim ";

    fn encode(claimer: &NodeName) -> Bytes {
        Bytes::from(format!("claim {claimer}"))
    }

    fn is_claim(value: &[u8]) -> bool {
        value.starts_with(Self::PREFIX)
    }

    /// Frees the name: the dead node may start again under it.
    pub async fn release(self) {
        release(&self.store, &self.node, self.revision).await;
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
    fn a_claim_is_no_holder_and_a_holder_no_claim() {
        let claim = Claim::encode(&NodeName::parse("node-2").unwrap());
        assert!(Claim::is_claim(&claim));
        assert_eq!(Holder::decode(&claim), None);
        let me = Holder::new("host-a".into(), "/data".into());
        assert!(!Claim::is_claim(&me.encode()));
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
