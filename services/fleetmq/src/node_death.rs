//! When a cluster node dies (kill -9, a lost machine), the survivors take
//! over what it left (issue 15), within about 20 s of the death:
//!
//! 1. Detection: every [`POLL`], each member asks the database which nodes
//!    rows name as serving something now (sessions, connected or held
//!    offline, and online devices: `Store::nodes_in_use`) and NATS whether each of those
//!    holds its name lease (`cluster::Leases`). A node named there whose
//!    lease is gone is dead: leases are rewritten every 5 s and lapse
//!    15 s after the last write, so that is 10 to 15 s after the death,
//!    plus at most one poll. (nats-server 2.9 writes no delete marker
//!    when a key ages out, so the leases are looked at, not watched.)
//! 2. Claim: the survivor creates the dead node's lease key itself
//!    (`Leases::claim`, atomic in JetStream). Only one survivor gets it,
//!    and the dead node, restarted meanwhile under its name, waits for it
//!    instead of loading sessions the survivor is taking.
//! 3. Devices: its online devices are set offline as of its last lease
//!    write (`Store::set_node_offline`, one `UPDATE … RETURNING`: each
//!    row changes once, for one caller) and their retained
//!    `devices/{d}/status` says `offline`, reason `node_lost`.
//! 4. Sessions: every session row naming it is given to this node in one
//!    transaction (`Store::adopt_node_sessions`: connected ones released
//!    as of its last lease write, so their expiry and will delay run from
//!    then); every statement is guarded by the dead node's name, so each
//!    row is taken by one node even if two ever raced. The claim is then
//!    released.
//! 5. The broker takes them in offline with their subscriptions and
//!    queues (`Broker::adopt_sessions`): this node's interest now routes
//!    their messages here, where they are queued durably; once NATS has
//!    that interest, wills due go out (from this node only: no other node
//!    holds the session) and the other deadlines are armed. A client that
//!    reconnects anywhere gets its session by the usual takeover.
//! 6. What was published between the death and step 5 reached nobody:
//!    the cluster's journal is replayed into the adopted sessions from the
//!    dead node's last lease write (`cluster::journal`), skipping what a
//!    session holds already; what the dead node had delivered since that
//!    write may come again (at least once).
//!
//! Why the claim and the single statements both: the statements alone
//! make the takeover exclusive and idempotent (a second survivor, or a
//! retry after a failure halfway, finds nothing left), but not against
//! the dead node coming back between a survivor's look at its lease and
//! its `UPDATE`: that node could have loaded sessions the survivor then
//! takes from under it. The claim closes that window; a claimer that dies
//! too leaves a claim that lapses with the lease TTL.
//!
//! No split brain: a node cut off from NATS fences itself after a third
//! of the TTL (`fence`), closing its connections and flushing their
//! sessions, long before its lease lapses and a survivor takes over. A
//! member that is not ready itself (NATS down, lease lost) decides
//! nothing, and a lease that cannot be read is never taken for a death.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use broker::TenantId;
use chrono::{DateTime, Utc};
use store::SessionKey;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::presence_status::StatusPublisher;

/// How often the leases of the nodes the database names are looked at.
pub const POLL: Duration = Duration::from_secs(2);
/// The presence rows' disconnect reason.
const REASON: &str = "node lost";
/// Counts the dead nodes this node took over.
const TAKEN_OVER: &str = "cluster_nodes_taken_over_total";
/// Counts the sessions this node adopted from dead nodes.
const ADOPTED: &str = "cluster_sessions_adopted_total";

/// What watching needs.
pub struct Watcher {
    pub me: cluster::NodeName,
    pub leases: cluster::Leases,
    pub readiness: cluster::Readiness,
    pub lease_ttl: Duration,
    pub store: store::Store,
    pub broker: broker::Broker,
    pub status: Arc<StatusPublisher>,
    /// Where the messages routed while nobody held the sessions are read
    /// back from.
    pub journal: cluster::journal::Journal,
}

/// The watching task; [`NodeDeath::stop`] at shutdown.
#[derive(Debug)]
pub struct NodeDeath {
    task: JoinHandle<()>,
    stop: CancellationToken,
}

impl NodeDeath {
    pub fn spawn(watcher: Watcher) -> NodeDeath {
        let stop = CancellationToken::new();
        let task = tokio::spawn(watch(watcher, stop.clone()));
        NodeDeath { task, stop }
    }

    /// Stops between two takeovers, never in the middle of one.
    pub async fn stop(self) {
        self.stop.cancel();
        if let Err(e) = self.task.await {
            tracing::warn!(error = %e, "the node-death watch ended abnormally");
        }
    }
}

async fn watch(mut w: Watcher, stop: CancellationToken) {
    // When each live node last wrote its lease, as last seen: a dead
    // node's last sign of life.
    let mut seen: HashMap<String, SystemTime> = HashMap::new();
    let mut tick = tokio::time::interval(POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        if w.readiness.check().is_err() {
            continue;
        }
        w.round(&mut seen).await;
    }
}

impl Watcher {
    async fn round(&mut self, seen: &mut HashMap<String, SystemTime>) {
        let nodes = match self.store.nodes_in_use().await {
            Ok(nodes) => nodes,
            Err(e) => {
                tracing::warn!(error = %e, "reading which nodes serve what failed; retried next round");
                return;
            }
        };
        seen.retain(|name, _| nodes.contains(name));
        for name in nodes.iter().filter(|n| *n != self.me.as_str()) {
            // Not a cluster member's name (a single node's host name with
            // a dot, say): no lease to look for.
            let Ok(node) = cluster::NodeName::parse(name) else {
                continue;
            };
            match self.leases.last_renewed(&node).await {
                Ok(Some(at)) => {
                    seen.insert(name.clone(), at);
                }
                Ok(None) => {
                    let since = seen.remove(name.as_str()).unwrap_or_else(|| {
                        // Never seen alive: as old as a lease can be.
                        SystemTime::now()
                            .checked_sub(self.lease_ttl)
                            .unwrap_or(SystemTime::UNIX_EPOCH)
                    });
                    self.take_over(&node, since).await;
                }
                Err(e) => {
                    tracing::warn!(node = %node, error = %e, "reading a node's lease failed; no decision this round");
                }
            }
        }
    }

    /// Takes over dead `node`, whose last sign of life was `since`.
    async fn take_over(&self, node: &cluster::NodeName, since: SystemTime) {
        let claim = match self.leases.claim(node).await {
            Ok(Some(claim)) => claim,
            // Back alive, or another survivor is at it.
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(node = %node, error = %e, "claiming a dead node's name failed; retried next round");
                return;
            }
        };
        let started = tokio::time::Instant::now();
        let at = DateTime::<Utc>::from(since);
        let taken = async {
            let devices = self
                .store
                .set_node_offline(node.as_str(), at, REASON)
                .await?;
            let sessions = self
                .store
                .adopt_node_sessions(node.as_str(), self.me.as_str(), at)
                .await?;
            Ok::<_, store::Error>((devices, sessions))
        }
        .await;
        // Committed (or not at all): the dead node may start again.
        claim.release().await;
        let (devices, sessions) = match taken {
            Ok(taken) => taken,
            Err(e) => {
                tracing::error!(node = %node, error = %e, "taking over a dead node failed; retried next round");
                return;
            }
        };
        let devices: Vec<(TenantId, String)> = devices
            .into_iter()
            .filter_map(|(tenant, device)| Some((TenantId::parse(&tenant).ok()?, device)))
            .collect();
        self.status.node_lost(&devices);
        let (adopted, replayed) = self.adopt(&sessions, since).await;
        metrics::counter!(TAKEN_OVER).increment(1);
        metrics::counter!(ADOPTED).increment(adopted as u64);
        tracing::warn!(
            node = %node,
            devices_offline = devices.len(),
            sessions_taken = sessions.len(),
            sessions_adopted = adopted,
            replayed,
            last_seen_ms_ago = u64::try_from(
                SystemTime::now().duration_since(since).unwrap_or_default().as_millis()
            )
            .unwrap_or(u64::MAX),
            took_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            "a dead node was taken over: its devices are offline, its sessions are here"
        );
    }

    /// Hands the sessions taken to the broker, tenant by tenant, and once
    /// their interest is in force replays the journal into them from
    /// `since`; returns how many sessions the broker took in (the others
    /// came back to a client meanwhile) and how many copies the replay
    /// queued.
    async fn adopt(&self, sessions: &[SessionKey], since: SystemTime) -> (usize, u64) {
        let mut by_tenant: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        for key in sessions {
            by_tenant
                .entry(&key.tenant_id)
                .or_default()
                .push(key.client_id.clone());
        }
        let (mut adopted, mut replayed) = (0, 0);
        for (tenant, clients) in by_tenant {
            let Ok(id) = TenantId::parse(tenant) else {
                tracing::warn!(tenant, "stored session of an invalid tenant id");
                continue;
            };
            match self.broker.adopt_sessions(&id, &clients).await {
                Ok(n) => adopted += n,
                // In the store as this node's: a client's CONNECT still
                // finds them there (`claim_session`).
                Err(e) => {
                    tracing::error!(tenant, error = %e, "adopted sessions not loaded; they load when their clients come back");
                    continue;
                }
            }
            let from = cluster::journal::Since::Time(since);
            match self.journal.replay(&self.broker, &id, &clients, from).await {
                Ok(done) => replayed += done.delivered,
                Err(e) => {
                    tracing::error!(tenant, error = %e, "replaying the journal into adopted sessions failed; what was published while the node was dead is lost for them")
                }
            }
        }
        (adopted, replayed)
    }
}
