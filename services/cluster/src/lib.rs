//! Cluster membership and routing over NATS (issue 15): many identical
//! fleetmq nodes on one Postgres database, with NATS between them.
//!
//! - [`Cluster::join`] connects to NATS (reconnecting for as long as the
//!   process runs) and takes this node's name lease in a JetStream
//!   key-value bucket ([`lease`]): a second live node with the same name is
//!   refused; a dead node's name is free again after the lease TTL.
//! - [`Cluster::readiness`] is what `/readyz` reports: NATS connected and
//!   the lease held.
//! - [`Cluster::leases`]: whether another node is alive (its lease), and
//!   the claim a survivor takes on a dead node's name while it takes over
//!   its devices, wills and sessions (`fleetmq::node_death`).
//! - [`NodeName`]: the node's checked name, and a unique default.
//! - [`Cluster::router`]: message routing between nodes ([`routing`]), the
//!   broker's `Interconnect` over core NATS, on a connection of its own.
//! - [`feed`]: the change feed (`events::change`) carried between nodes
//!   on core NATS, and [`Cluster::gaps`], when this node may have missed
//!   some of it.
//!
//! # Routing (issue 15)
//!
//! - Subjects ([`subjects`]): a message on topic `a/b` in tenant `t`
//!   travels on `fleetmq.msg.1.t.a.b` (QoS 1/2, kept by the journal) or
//!   `fleetmq.msg.0.t.a.b` (QoS 0), each level escaped into one token
//!   (reversibly; `.`, `*`, `>`, whitespace, non-ASCII, a leading `$` and
//!   empty levels cannot be tokens as they are). A filter maps `+` to `*`
//!   and `#` to `>`, `x/#` to both `x` and `x.>`.
//! - Interest: the broker tells the router when a namespace's first
//!   non-shared subscription of a distinct filter (or first member of a
//!   shared group) arrives and when its last one leaves; the router holds
//!   one NATS subscription per subject of each such filter. The platform
//!   namespace's filters (`{tenant}/…`) map onto the same subjects. Nodes without a matching
//!   subscription are sent nothing, and a tenant's traffic never reaches
//!   another tenant's subjects.
//! - Outbound: each message published on a node is sent once, in publish
//!   order, by one task on one connection (order per publisher and topic
//!   holds), as [`wire`]: an MQTT 5 PUBLISH with the time of expiry left,
//!   plus the origin client id (No Local), whether it is a platform
//!   client, the retained owner and the node. The connection has no echo,
//!   so a node never hears its own messages.
//! - Inbound: a message a filter's subscription receives is delivered by
//!   the broker to that filter's subscriptions only, with every
//!   subscription's semantics, and is not forwarded, stored or announced
//!   again. One NATS subscription per filter means overlapping filters on a
//!   node each get their copy (one per matching subscription, which MQTT 5
//!   allows) and none twice. A new interest is confirmed by NATS before
//!   the SUBACK that made it leaves (at most 2 s), so a subscriber gets
//!   every other node's next message once it has its SUBACK.
//! - Retained: every retained set or delete also goes to
//!   `fleetmq.retained.t.…`, which every node follows and applies to its
//!   in-memory cache; the origin node alone writes Postgres. Reading the
//!   database on a cache miss was the other choice: a miss cannot tell
//!   "none" from "not heard of", so every subscribe would read it.
//! - Shared subscriptions: a node with members of `$share/g/f` in tenant
//!   `t` holds a NATS queue subscription on `f`'s subjects in the queue
//!   group `t_g` (escaped), so NATS gives each message to one node's
//!   subscription; that node gives it to one of its members. A clustered
//!   node routes its own publishes to shared groups that way too (on a
//!   second connection, with echo), never locally as well.
//! - Sessions ([`handoff`]): a CONNECT takes its client id over from the
//!   node the session's stored row names (0x8E there, the session
//!   written and forgotten), then loads it from Postgres. Meanwhile a
//!   stand-in of the session on the new node catches what is routed for
//!   it, and follows the stored queue less what that already holds
//!   (by [`broker::MessageId`]): nothing is missed while it moves.
//! - Acknowledged means durable across nodes ([`journal`]): every QoS 1/2
//!   message routed is also kept in a JetStream stream, and its
//!   publisher's PUBACK / PUBREC waits for that stream's ack (bounded;
//!   past the bound it is not a success). A node whose routing
//!   connection dropped replays the journal into its sessions once back;
//!   [`Cluster::replay`] does it for any sessions (a dead node's adopted).
//! - Not yet: the journal is one stream on one NATS server's disk (a NATS
//!   cluster with replicas would keep it through the loss of a server);
//!   messages replayed after a reconnect follow those that arrived live
//!   after it.
//!
//! This crate knows NATS; of MQTT only topics and the PUBLISH codec (the
//! `mqtt` crate) and the broker's `Interconnect`; of the platform only the
//! `events` crate's changes, carried as they are; nothing of HTTP or SQL.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_nats::connection::State;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::{CancellationToken, DropGuard};

pub mod feed;
pub mod handoff;
pub mod journal;
pub mod lease;
mod node;
pub mod routing;
pub mod subjects;
#[cfg(feature = "testing")]
pub mod testing;
pub mod wire;

pub use lease::{Claim, Holder, Leases};
pub use node::{MAX_NAME_LEN, NAME_RULE, NodeName, hostname};

/// How long a node's name stays taken after it stops renewing (a crash).
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(15);

/// How long a clean stop waits to release the lease and flush.
const LEAVE_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot connect to NATS at {url}: {reason}")]
    Connect { url: String, reason: String },

    #[error(
        "node name '{name}' is held by a live node ({holder}); names of nodes that stopped are free {} s after their last sign of life",
        ttl.as_secs()
    )]
    NameInUse {
        name: NodeName,
        holder: String,
        ttl: Duration,
    },

    #[error("NATS JetStream (is the server started with -js?): {0}")]
    JetStream(String),

    #[error("the change feed on NATS: {0}")]
    Feed(String),
    #[error("NATS subscription for routing: {0}")]
    Routing(String),
}

/// What joining needs.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// One or more `nats://HOST:PORT` (or `tls://`), comma-separated.
    pub nats_url: String,
    pub node_name: NodeName,
    /// Who this run is, written into the lease.
    pub holder: Holder,
    pub lease_ttl: Duration,
}

/// Why the node is not ready to serve as a cluster member.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NotReady {
    #[error("the NATS connection is down (reconnecting)")]
    NatsDown,
    #[error("another node holds this node's name")]
    LeaseLost,
}

/// A joined node: the NATS connection and the renewed name lease.
/// Dropped without [`Cluster::leave`], the lease is no longer renewed and
/// lapses after its TTL, as when the process dies.
#[derive(Debug)]
pub struct Cluster {
    client: async_nats::Client,
    name: NodeName,
    /// Counts the times this node may have missed messages: a reconnect
    /// after the connection was lost, or the server dropping messages for
    /// a slow subscriber.
    gaps: watch::Sender<u64>,
    held: Arc<AtomicBool>,
    stop: CancellationToken,
    _stop_on_drop: DropGuard,
    heartbeat: JoinHandle<u64>,
    store: async_nats::jetstream::kv::Store,
    lease_ttl: Duration,
    /// For the routing connection ([`Cluster::router`]).
    nats_url: String,
}

impl Cluster {
    /// Connects and takes the name lease; refuses (with who holds it) when
    /// a live node has this name.
    pub async fn join(config: ClusterConfig) -> Result<Cluster, Error> {
        let url = redact_url(&config.nats_url);
        let name = config.node_name.clone();
        let log_name = name.clone();
        let (gaps, _) = watch::channel(0u64);
        let gap_seen = Gaps::new(gaps.clone());
        let client = connect(
            async_nats::ConnectOptions::new().name(format!("fleetmq {name}")),
            &config.nats_url,
            log_name,
            Some(gap_seen),
        )
        .await?;
        let js = async_nats::jetstream::new(client.clone());
        let store = lease::bucket(&js, config.lease_ttl).await?;
        journal::ensure(&js).await?;
        let revision = lease::acquire(&store, &name, &config.holder, config.lease_ttl).await?;
        tracing::info!(node = %name, nats = %url, "joined the cluster");
        let held = Arc::new(AtomicBool::new(true));
        let stop = CancellationToken::new();
        let heartbeat = tokio::spawn(lease::heartbeat(
            store.clone(),
            name.clone(),
            config.holder,
            config.lease_ttl,
            revision,
            held.clone(),
            stop.clone(),
        ));
        Ok(Cluster {
            client,
            name,
            gaps,
            held,
            _stop_on_drop: stop.clone().drop_guard(),
            stop,
            heartbeat,
            store,
            lease_ttl: config.lease_ttl,
            nats_url: config.nats_url,
        })
    }

    /// The message router for the broker ([`routing`]), on a NATS
    /// connection of its own: opened with no echo (a node never hears its
    /// own messages), and so that message traffic never queues the lease
    /// heartbeat behind it.
    pub async fn router(&self) -> Result<(routing::Router, routing::Pending), Error> {
        let options = async_nats::ConnectOptions::new()
            .name(format!("fleetmq {} routing", self.name))
            .no_echo();
        // What this connection misses while it is down is read back from
        // the journal once it is up again (`journal`).
        let (missed, _) = watch::channel(0u64);
        let gaps = Gaps::new(missed.clone());
        let since = gaps.since.clone();
        let client = connect(options, &self.nats_url, self.name.clone(), Some(gaps)).await?;
        // Queue subscriptions (shared groups) on another connection: with
        // no echo, NATS would never pick this node's own member for a
        // message this node published.
        let options =
            async_nats::ConnectOptions::new().name(format!("fleetmq {} shared", self.name));
        let shared = connect(options, &self.nats_url, self.name.clone(), None).await?;
        let (router, pending) = routing::Router::new(client, shared, self.name.as_str());
        let router = router.recovering_with(self.leases(), self.lease_ttl);
        Ok((router, pending.catching_up(missed.subscribe(), since)))
    }

    /// Replays the journal into sessions this node holds: see
    /// [`journal::replay`] (e.g. the adoption of a dead node's sessions,
    /// with `since` its last lease write).
    pub async fn replay(
        &self,
        broker: &broker::Broker,
        namespace: &broker::TenantId,
        client_ids: &[String],
        since: journal::Since,
    ) -> Result<journal::Replayed, Error> {
        journal::replay(&self.client, broker, namespace, client_ids, since).await
    }

    /// The journal, for tasks that replay it after this borrow ends.
    pub fn journal(&self) -> journal::Journal {
        journal::Journal::new(self.client.clone())
    }

    /// The other nodes' leases: who is alive, and claims on dead nodes'
    /// names ([`Leases::claim`]).
    pub fn leases(&self) -> Leases {
        Leases::new(self.store.clone(), self.name.clone())
    }

    pub fn node_name(&self) -> &NodeName {
        &self.name
    }

    /// The NATS connection, for the parts that route over it.
    pub fn client(&self) -> &async_nats::Client {
        &self.client
    }

    /// Changes each time this node may have missed what other nodes sent
    /// (see [`feed`]).
    pub fn gaps(&self) -> watch::Receiver<u64> {
        self.gaps.subscribe()
    }

    /// Ready while NATS is connected and the name lease is held.
    pub fn readiness(&self) -> Readiness {
        Readiness {
            client: self.client.clone(),
            held: self.held.clone(),
        }
    }

    /// A clean stop: the lease is released (the name is free at once) and
    /// what was published is flushed, each for a bounded time.
    pub async fn leave(self) {
        self.stop.cancel();
        let revision = match self.heartbeat.await {
            Ok(revision) => revision,
            Err(e) => {
                tracing::warn!(node = %self.name, error = %e, "the lease heartbeat ended abnormally");
                return;
            }
        };
        let held = self.held.load(Ordering::Relaxed);
        let release = async {
            if held {
                lease::release(&self.store, &self.name, revision).await;
            }
            if let Err(e) = self.client.flush().await {
                tracing::warn!(node = %self.name, error = %e, "flushing NATS at stop failed");
            }
        };
        if tokio::time::timeout(LEAVE_TIMEOUT, release).await.is_err() {
            tracing::warn!(node = %self.name, "NATS did not answer at stop; the name lease lapses by itself");
        }
        tracing::info!(node = %self.name, "left the cluster");
    }
}

/// The node's readiness as a cluster member, cheap to clone and to ask.
#[derive(Debug, Clone)]
pub struct Readiness {
    client: async_nats::Client,
    held: Arc<AtomicBool>,
}

impl Readiness {
    /// Ready while NATS is connected and the name lease is held.
    pub fn check(&self) -> Result<(), NotReady> {
        if self.client.connection_state() != State::Connected {
            return Err(NotReady::NatsDown);
        }
        match self.held.load(Ordering::Relaxed) {
            true => Ok(()),
            false => Err(NotReady::LeaseLost),
        }
    }
}

/// Turns connection events into gaps: what was sent while the connection
/// was down, or dropped as a slow consumer, never arrives.
struct Gaps {
    count: watch::Sender<u64>,
    down: Arc<AtomicBool>,
    /// When the gap not yet dealt with began (taken by who deals with it).
    since: Since,
}

/// When a gap began, if one is open.
type Since = Arc<std::sync::Mutex<Option<std::time::SystemTime>>>;

impl Gaps {
    fn new(count: watch::Sender<u64>) -> Gaps {
        Gaps {
            count,
            down: Arc::new(AtomicBool::new(false)),
            since: Since::default(),
        }
    }

    fn on(&self, event: &async_nats::Event) {
        let began = || {
            let mut since = self.since.lock().unwrap_or_else(|p| p.into_inner());
            since.get_or_insert_with(std::time::SystemTime::now);
        };
        let gap = match event {
            async_nats::Event::Disconnected => {
                began();
                self.down.store(true, Ordering::Relaxed);
                false
            }
            async_nats::Event::Connected => self.down.swap(false, Ordering::Relaxed),
            async_nats::Event::SlowConsumer(_) => {
                // One per message a full subscription buffer dropped (as
                // far as the client's event queue keeps up).
                metrics::counter!("cluster_slow_consumer_total").increment(1);
                began();
                true
            }
            _ => false,
        };
        if gap {
            self.count.send_modify(|n| *n = n.wrapping_add(1));
        }
    }
}

/// Connects with `options` to the comma-separated `urls`, reconnecting
/// without limit (the default: a node outlives a NATS restart); `gaps`, if
/// given, counts what the connection may have missed.
async fn connect(
    options: async_nats::ConnectOptions,
    urls: &str,
    node: NodeName,
    gaps: Option<Gaps>,
) -> Result<async_nats::Client, Error> {
    options
        .connection_timeout(Duration::from_secs(5))
        .event_callback(move |event| {
            let node = node.clone();
            if let Some(gaps) = &gaps {
                gaps.on(&event);
            }
            async move { log_event(&node, &event) }
        })
        .connect(urls.split(',').map(str::trim).collect::<Vec<_>>())
        .await
        .map_err(|e| Error::Connect {
            url: redact_url(urls),
            reason: e.to_string(),
        })
}

fn log_event(node: &NodeName, event: &async_nats::Event) {
    match event {
        async_nats::Event::Connected => tracing::info!(%node, "NATS connected"),
        async_nats::Event::Disconnected => {
            tracing::warn!(%node, "NATS connection lost; reconnecting (not ready meanwhile)");
        }
        other => tracing::info!(%node, event = %other, "NATS"),
    }
}

/// A NATS URL list without user names, passwords or tokens, for messages.
pub fn redact_url(urls: &str) -> String {
    urls.split(',')
        .map(|url| {
            let url = url.trim();
            let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
            let host = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
            let redacted = host.len() != rest.len();
            match (scheme.is_empty(), redacted) {
                (true, false) => host.to_owned(),
                (true, true) => format!("***@{host}"),
                (false, false) => format!("{scheme}://{host}"),
                (false, true) => format!("{scheme}://***@{host}"),
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// Checks a `--nats-url` value without connecting: each comma-separated
/// address parses as a NATS server address. The error never repeats it.
pub fn check_url(urls: &str) -> Result<(), &'static str> {
    const HINT: &str =
        "expected nats://HOST:PORT (or tls://HOST:PORT), several separated by commas";
    if urls.trim().is_empty() {
        return Err(HINT);
    }
    for url in urls.split(',') {
        let url = url.trim();
        let has_scheme = ["nats://", "tls://", "ws://", "wss://"]
            .iter()
            .any(|s| url.starts_with(s));
        if !has_scheme || url.parse::<async_nats::ServerAddr>().is_err() {
            return Err(HINT);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_redacted() {
        assert_eq!(redact_url("nats://127.0.0.1:4222"), "nats://127.0.0.1:4222");
        assert_eq!(
            redact_url("nats://user:hunter2@h:4222, tls://tok@h2:4222"),
            "nats://***@h:4222,tls://***@h2:4222"
        );
        assert_eq!(redact_url("h:4222"), "h:4222");
    }

    #[test]
    fn urls_are_checked() {
        assert!(check_url("nats://127.0.0.1:4222").is_ok());
        assert!(check_url("nats://a:4222,nats://b:4222").is_ok());
        assert!(check_url("tls://nats.example.com:4222").is_ok());
        for bad in [
            "",
            "127.0.0.1:4222",
            "http://h:4222",
            "nats://h:4222,",
            "postgres://x",
        ] {
            assert!(check_url(bad).is_err(), "{bad:?}");
        }
    }
}
