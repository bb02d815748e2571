//! [`Router`]: the broker's [`Interconnect`] over core NATS (issue 15).
//!
//! - Interest: for each distinct filter a namespace has on this node, one
//!   NATS subscription per subject of it ([`subjects`]; two for `x/#`);
//!   withdrawn when the filter's last local subscription goes. A node
//!   without a matching subscription is sent nothing by NATS.
//! - Outbound: each message published here goes out once, on its topic's
//!   subject, in publish order through one task on one connection (so
//!   order per publisher and topic holds, across QoS too). The connection
//!   is opened with no echo: a node never hears its own messages back.
//!   Each carries an id ([`broker::MessageId`]: this run's random origin
//!   and a count). A QoS 1/2 one is a JetStream publish into the journal
//!   ([`crate::journal`]), whose ack the publisher's acknowledgement waits
//!   for (at most [`crate::journal::ACK_WAIT`]); a message that cannot be
//!   queued (full, stopped, a subject too long) fails that wait at once.
//! - Shared groups: a queue subscription per subject of the inner filter,
//!   in the group's queue ([`subjects::queue_group`]), on a connection with
//!   echo: NATS picks one node for each message, this one included.
//! - Inbound: what a filter's subscription receives is delivered by the
//!   broker to that filter's local subscriptions only
//!   ([`broker::Broker::deliver_remote`]), so overlapping filters on one
//!   node never deliver a message twice to one subscription.
//! - Retained: every retained change also goes out on
//!   `fleetmq.retained.{tenant}.{levels}`; every node listens to all of
//!   them and applies them to its in-memory cache (the origin node stored
//!   it in Postgres). A cache miss cannot tell "none" from "not heard of",
//!   and a wildcard subscribe would have to read the database each time;
//!   one small message per change keeps every cache current instead.
//!
//! A new interest is confirmed by NATS (a round trip after the SUBs) before
//! the SUBACK that made it is sent (bounded by [`INTEREST_WAIT`]): after its
//! SUBACK a subscription gets every other node's next message (with one
//! NATS server; a NATS cluster spreads interest between its servers a
//! moment later). A second subscription to a filter still being confirmed
//! does not wait.
//!
//! The broker calls in on its publish and subscribe paths: nothing here
//! blocks there. Outbound messages wait in a bounded queue fair per tenant
//! (`fair::FairQueue`: a tenant past its share is dropped and counted
//! with its tenant label, as when NATS is unreachable for long, and never
//! crowds out another tenant's messages); interest
//! changes in an unbounded one (one entry per filter change).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use async_nats::Client;
use async_nats::jetstream;
use broker::{
    Broker, Durability, HandoffError, Interconnect, MessageId, Outbound, SessionHandoff,
    StoreError, TenantId,
};
use bytes::Bytes;
use fair::{Bounds, FairQueue, Refused};
use futures::StreamExt;
use mqtt::{TopicFilter, TopicName};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;

use crate::subjects;
use crate::wire;

/// How many messages may wait for the NATS connection.
pub const OUTBOUND_QUEUE: usize = 65_536;
/// Of those, what one tenant may hold (it gets less when others wait).
pub const OUTBOUND_PER_TENANT: usize = 16_384;
/// Frames the publishing task takes per turn.
const PUBLISH_BATCH: usize = 1024;

/// Metric names (the binary installs the Prometheus recorder).
mod metric {
    pub const FORWARDED: &str = "cluster_messages_forwarded_total";
    pub const RECEIVED: &str = "cluster_messages_received_total";
    pub const DROPPED: &str = "cluster_messages_dropped_total";
    pub const RETAINED: &str = "cluster_retained_changes_total";
    pub const INTEREST: &str = "cluster_interest_subjects";
    pub const JOURNALED: &str = "cluster_journal_acked_total";
    pub const REPLAYED: &str = "cluster_journal_replayed_total";
    pub const JOURNAL_FAILED: &str = "cluster_journal_failed_total";
    pub const JOURNAL_TIMEOUTS: &str = "cluster_journal_ack_timeouts_total";
    pub const INTEREST_UNCONFIRMED: &str = "cluster_interest_unconfirmed_total";
    /// Sessions taken from a node that did not let go of them, and read
    /// back from the journal.
    pub const SESSIONS_RECOVERED: &str = "cluster_sessions_recovered_total";
    /// Times a filter's messages from other nodes waited for a full
    /// subscriber here.
    pub const HELD_BACK: &str = "cluster_inbound_held_back_total";
}

fn dropped(reason: &'static str) {
    metrics::counter!(metric::DROPPED, "reason" => reason).increment(1);
}

struct Frame {
    subject: String,
    body: Bytes,
    /// For a journaled (QoS 1/2) message: told the journal's answer.
    ack: Option<oneshot::Sender<Result<(), String>>>,
}

/// What the interest task is told, in the order it happened.
enum Told {
    Interest(Interest),
    /// Answered once NATS has confirmed every interest told before it.
    Settled(oneshot::Sender<()>),
    /// Answered once every message this node's subscriptions had received
    /// when it was told has been delivered into the broker
    /// ([`Drainer::drained`]).
    Drained(oneshot::Sender<()>),
}

/// Asks the interest task for [`Told::Drained`]: what a release waits for
/// before the session goes (`crate::handoff::serve`).
#[derive(Clone)]
pub(crate) struct Drainer(mpsc::UnboundedSender<Told>);

impl Drainer {
    /// Returns once every message that reached this node's routing
    /// subscriptions before the call is delivered into the broker
    /// (bounded by [`DRAIN_WAIT`]). Why: a message another node routed
    /// here before a takeover request arrived on the same connection was
    /// dispatched to its subscription's queue first, but its task may not
    /// have delivered it yet (a loaded machine); the session released now
    /// would lose it, and the new node, whose interest came after it, never
    /// had it.
    pub(crate) async fn drained(&self) {
        let (tx, rx) = oneshot::channel();
        if self.0.send(Told::Drained(tx)).is_ok() {
            let _ = tokio::time::timeout(DRAIN_WAIT, rx).await;
        }
    }
}

/// The longest a release waits for the routing subscriptions to deliver
/// what they hold: below the release's own bound less the takeover timeout.
const DRAIN_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// One routing subscription's task's side of [`Told::Drained`]: each
/// sender is answered once what the subscription held then is delivered.
type DrainAsk = mpsc::UnboundedSender<oneshot::Sender<()>>;

/// What the publisher of a journaled message waits for.
type Acked = oneshot::Receiver<Result<(), String>>;

struct Interest {
    namespace: TenantId,
    filter: TopicFilter,
    present: bool,
    /// Told once NATS has the subscription (a new interest only).
    ready: Option<oneshot::Sender<()>>,
}

/// How long a SUBACK waits for NATS to confirm a new interest; past it the
/// subscription is acknowledged anyway (NATS is down: other nodes' traffic
/// comes once the connection is back and resubscribed).
pub const INTEREST_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// How long before a silent node's last lease write a recovery reads the
/// journal from: what it heard just before then may not have reached the
/// store (written behind) when it fell silent.
const RECOVERY_MARGIN: std::time::Duration = std::time::Duration::from_secs(2);

/// The broker's side: hands interest changes, messages and retained
/// changes to the tasks [`Pending::start`] runs.
pub struct Router {
    node: String,
    /// This run's half of every [`MessageId`]: random, so that a restart
    /// never reuses an id.
    origin: u64,
    /// The other half: messages published by this run so far.
    seq: AtomicU64,
    /// For session takeover requests ([`crate::handoff`]).
    client: Client,
    /// Fair per tenant: one tenant's flood fills its own share, never
    /// another tenant's.
    outbound: Arc<FairQueue<Frame>>,
    interest: mpsc::UnboundedSender<Told>,
    /// When a node that did not let go of a session was last heard
    /// ([`SessionHandoff::recover`]), and its lease's TTL.
    leases: Option<(crate::Leases, std::time::Duration)>,
}

/// The tasks' side, started once the broker exists (the broker is built
/// with the [`Router`], and the tasks deliver into it).
pub struct Pending {
    client: Client,
    /// For queue subscriptions: with echo, see [`crate::Cluster::router`].
    shared: Client,
    node: String,
    outbound: Arc<FairQueue<Frame>>,
    interest: mpsc::UnboundedReceiver<Told>,
    drainer: Drainer,
    /// Changes when the connection may have missed messages, and since
    /// when ([`Pending::catching_up`]).
    gaps: Option<(tokio::sync::watch::Receiver<u64>, crate::Since)>,
}

/// The running tasks; dropped or stopped, they end (subscriptions go).
pub struct Routing {
    tasks: JoinSet<()>,
    /// The publishing task, stopped apart: what is queued still goes out.
    publisher: tokio::task::JoinHandle<()>,
    stop: tokio_util::sync::CancellationToken,
    client: Client,
}

impl Router {
    /// A router on `client` (a connection of its own, opened with no
    /// echo) and `shared` (for shared groups' queue subscriptions) for node
    /// `node`.
    pub fn new(client: Client, shared: Client, node: &str) -> (Router, Pending) {
        let outbound = Arc::new(FairQueue::new(Bounds {
            per_key: OUTBOUND_PER_TENANT,
            total: OUTBOUND_QUEUE,
        }));
        let (int_tx, int_rx) = mpsc::unbounded_channel();
        (
            Router {
                node: node.to_owned(),
                origin: u64::from_be_bytes(
                    uuid::Uuid::new_v4().as_bytes()[..8]
                        .try_into()
                        .unwrap_or_default(),
                ),
                seq: AtomicU64::new(0),
                client: client.clone(),
                outbound: outbound.clone(),
                interest: int_tx.clone(),
                leases: None,
            },
            Pending {
                client,
                shared,
                node: node.to_owned(),
                outbound,
                interest: int_rx,
                drainer: Drainer(int_tx),
                gaps: None,
            },
        )
    }

    /// Recovers sessions taken from a node that did not answer
    /// ([`SessionHandoff::recover`]) from the journal, from when that
    /// node last wrote its lease in `leases` (TTL `lease_ttl`).
    pub fn recovering_with(
        mut self,
        leases: crate::Leases,
        lease_ttl: std::time::Duration,
    ) -> Router {
        self.leases = Some((leases, lease_ttl));
        self
    }

    /// From when a session taken from `node`, which did not let go of it,
    /// is read back from the journal. A node cut off from NATS (or dead)
    /// stops writing its lease; what it heard until a little before its
    /// last write the store holds. A node with no lease of its own any
    /// more (it lapsed, or a survivor's claim stands) was last heard at
    /// an unknown time: everything the journal keeps, duplicates being
    /// better than losses.
    async fn silent_since(&self, node: &str) -> SystemTime {
        let now = SystemTime::now();
        let whole_journal = now
            .checked_sub(crate::journal::MAX_AGE)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let Some((leases, _)) = &self.leases else {
            return whole_journal;
        };
        let Ok(name) = crate::NodeName::parse(node) else {
            return whole_journal;
        };
        match leases.heard_from(&name).await {
            Ok(Some(at)) => at
                .checked_sub(RECOVERY_MARGIN)
                .unwrap_or(whole_journal)
                .max(whole_journal),
            Ok(None) => whole_journal,
            Err(e) => {
                tracing::warn!(node, error = %e, "the silent node's lease could not be read; the whole journal is read back");
                whole_journal
            }
        }
    }

    /// Queues a frame; `journaled`: what its publisher waits for (the
    /// journal's ack), or why it was not queued.
    fn send(
        &self,
        tenant: &TenantId,
        subject: Option<String>,
        body: Result<Bytes, wire::WireError>,
        journaled: bool,
    ) -> Result<Option<Acked>, &'static str> {
        let Some(subject) = subject else {
            dropped("subject_too_long");
            return Err("the topic is too long to route between nodes");
        };
        let body = match body {
            Ok(body) => body,
            Err(e) => {
                tracing::warn!(tenant = %tenant, error = %e, "message not routed to other nodes");
                dropped("encode");
                return Err("the message cannot be routed between nodes");
            }
        };
        let (ack, acked) = match journaled {
            true => {
                let (tx, rx) = oneshot::channel();
                (Some(tx), Some(rx))
            }
            false => (None, None),
        };
        match self
            .outbound
            .push(tenant.as_str(), Frame { subject, body, ack })
        {
            Ok(()) => Ok(acked),
            Err((Refused::Full, _)) => {
                metrics::counter!(metric::DROPPED, "reason" => "queue_full", "tenant" => tenant.to_string())
                    .increment(1);
                Err("the queue to the other nodes is full")
            }
            Err((Refused::Closed, _)) => {
                dropped("stopped");
                Err("the node is stopping")
            }
        }
    }
}

/// What a journaled message's publisher waits for: the journal's ack
/// within [`crate::journal::ACK_WAIT`] of the publish.
fn journal_wait(acked: Acked) -> Durability {
    Box::pin(async move {
        match tokio::time::timeout(crate::journal::ACK_WAIT, acked).await {
            Ok(Ok(Ok(()))) => Ok(()),
            Ok(Ok(Err(e))) => Err(StoreError(format!("cluster journal: {e}"))),
            Ok(Err(_)) => Err(StoreError("cluster journal: not published".to_owned())),
            Err(_) => {
                metrics::counter!(metric::JOURNAL_TIMEOUTS).increment(1);
                Err(StoreError(format!(
                    "cluster journal: no ack within {:?} (NATS unreachable?)",
                    crate::journal::ACK_WAIT
                )))
            }
        }
    })
}

/// The router's connection also carries session takeovers between nodes
/// ([`crate::handoff`]); its node name is the one the session store
/// records.
#[async_trait::async_trait]
impl SessionHandoff for Router {
    fn node(&self) -> &str {
        &self.node
    }

    async fn release(
        &self,
        node: &str,
        tenant: &TenantId,
        client_id: &str,
    ) -> Result<(), HandoffError> {
        crate::handoff::release(&self.client, node, tenant, client_id).await
    }

    async fn recover(
        &self,
        broker: &Broker,
        node: &str,
        tenant: &TenantId,
        client_id: &str,
    ) -> Result<u64, HandoffError> {
        let since = self.silent_since(node).await;
        let replayed = crate::journal::replay(
            &self.client,
            broker,
            tenant,
            &[client_id.to_owned()],
            crate::journal::Since::Time(since),
        )
        .await
        .map_err(|e| HandoffError(e.to_string()))?;
        metrics::counter!(metric::SESSIONS_RECOVERED).increment(1);
        Ok(replayed.delivered)
    }
}

impl Interconnect for Router {
    fn interest(
        &self,
        tenant: &TenantId,
        filter: &TopicFilter,
        present: bool,
    ) -> Option<Durability> {
        let (ready, confirmed) = match present {
            true => {
                let (tx, rx) = oneshot::channel();
                (Some(tx), Some(rx))
            }
            false => (None, None),
        };
        // Fails only once the tasks have stopped, at shutdown.
        let _ = self.interest.send(Told::Interest(Interest {
            namespace: tenant.clone(),
            filter: filter.clone(),
            present,
            ready,
        }));
        let confirmed = confirmed?;
        Some(Box::pin(async move {
            // Not confirmed in time, or not at all: acknowledged anyway.
            if !matches!(
                tokio::time::timeout(INTEREST_WAIT, confirmed).await,
                Ok(Ok(()))
            ) {
                metrics::counter!(metric::INTEREST_UNCONFIRMED).increment(1);
                tracing::warn!("NATS did not confirm a new interest in time: SUBACK sent anyway");
            }
            Ok(())
        }))
    }

    fn settled(&self) -> Option<Durability> {
        let (tx, rx) = oneshot::channel();
        let _ = self.interest.send(Told::Settled(tx));
        Some(Box::pin(async move {
            // As for a SUBACK: NATS away, it is not worth waiting for.
            let _ = tokio::time::timeout(INTEREST_WAIT, rx).await;
            Ok(())
        }))
    }

    fn next_id(&self) -> Option<MessageId> {
        Some(MessageId {
            origin: self.origin,
            seq: self.seq.fetch_add(1, Ordering::Relaxed),
        })
    }

    fn forward(&self, tenant: &TenantId, message: &Outbound<'_>) -> Option<Durability> {
        let journaled = message.qos != mqtt::QoS::AtMostOnce;
        let subject = subjects::message_subject(tenant.as_str(), message.topic, journaled);
        match self.send(
            tenant,
            subject,
            wire::encode(&self.node, message),
            journaled,
        ) {
            Ok(acked) => acked.map(journal_wait),
            Err(why) if journaled => Some(broker::session_store::not_durable(format!(
                "cluster journal: {why}"
            ))),
            Err(_) => None,
        }
    }

    fn retained_changed(
        &self,
        tenant: &TenantId,
        topic: &TopicName,
        retained: Option<&Outbound<'_>>,
    ) {
        let subject = subjects::retained_subject(tenant.as_str(), topic);
        let body = match retained {
            Some(m) => wire::encode(&self.node, &Outbound { retain: true, ..*m }),
            None => wire::encode_delete(&self.node, topic),
        };
        if self.send(tenant, subject, body, false).is_ok() {
            metrics::counter!(metric::RETAINED, "direction" => "sent").increment(1);
        }
    }
}

impl Pending {
    /// Once started, each time `gaps` changes, replays the journal since
    /// the time `since` holds (less [`GAP_MARGIN`]) into every session
    /// this node holds: what other nodes routed here while the connection
    /// was down.
    pub fn catching_up(
        mut self,
        gaps: tokio::sync::watch::Receiver<u64>,
        since: crate::Since,
    ) -> Pending {
        self.gaps = Some((gaps, since));
        self
    }

    /// Starts publishing, following interest and applying retained
    /// changes, delivering into `broker`.
    pub async fn start(self, broker: Broker) -> Result<Routing, crate::Error> {
        let mut tasks = JoinSet::new();
        let retained = self
            .client
            .subscribe(subjects::all_retained())
            .await
            .map_err(|e| crate::Error::Routing(e.to_string()))?;
        tasks.spawn(apply_retained(retained, broker.clone(), self.node.clone()));
        let releases = self
            .client
            .subscribe(crate::handoff::subject(&self.node))
            .await
            .map_err(|e| crate::Error::Routing(e.to_string()))?;
        tasks.spawn(crate::handoff::serve(
            releases,
            self.client.clone(),
            broker.clone(),
            self.drainer,
        ));
        let stop = tokio_util::sync::CancellationToken::new();
        let publisher = tokio::spawn(publish(self.client.clone(), self.outbound, stop.clone()));
        if let Some((gaps, since)) = self.gaps {
            tasks.spawn(catch_up(self.client.clone(), broker.clone(), gaps, since));
        }
        tasks.spawn(follow_interest(
            [self.client.clone(), self.shared],
            broker,
            self.node,
            self.interest,
        ));
        Ok(Routing {
            tasks,
            publisher,
            stop,
            client: self.client,
        })
    }
}

impl Routing {
    /// Stops receiving; publishes what is queued (the shutdown's last
    /// statuses and wills among it) and flushes it, for a bounded time.
    pub async fn stop(mut self) {
        self.tasks.abort_all();
        while self.tasks.join_next().await.is_some() {}
        self.stop.cancel();
        let drain = async {
            let _ = (&mut self.publisher).await;
            self.client.flush().await
        };
        let drained = tokio::time::timeout(std::time::Duration::from_secs(2), drain).await;
        self.publisher.abort();
        if !matches!(drained, Ok(Ok(()))) {
            tracing::warn!("NATS did not confirm the last routed messages at stop");
        }
    }
}

/// A journal publish in flight and whom to tell its answer.
type InFlight = (
    jetstream::context::PublishAckFuture,
    oneshot::Sender<Result<(), String>>,
);

/// Publishes queued frames, round-robin over the tenants and in order
/// within each, until `stop`; then what is left. Journaled frames are
/// JetStream publishes on the same connection (so in the same order);
/// their acks are awaited apart (`acks`), so the next frames need not wait.
async fn publish(
    client: Client,
    outbound: Arc<FairQueue<Frame>>,
    stop: tokio_util::sync::CancellationToken,
) {
    // A publish past the in-flight bound waits for room (backpressure);
    // the publisher's own wait is bounded anyway (`journal_wait`).
    let js = jetstream::ContextBuilder::new()
        .timeout(crate::journal::ACK_WAIT)
        .max_ack_inflight(OUTBOUND_QUEUE)
        .build(client.clone());
    let (in_flight, waiting) = mpsc::unbounded_channel::<InFlight>();
    let acks = tokio::spawn(await_acks(waiting));
    let mut batch = Vec::with_capacity(PUBLISH_BATCH);
    loop {
        // Cancel-safe: a batch is taken only when next_batch returns it.
        let taken = tokio::select! {
            taken = outbound.next_batch(&mut batch, PUBLISH_BATCH) => taken,
            () = stop.cancelled() => break,
        };
        if taken == 0 {
            break;
        }
        // One task drains what every publisher connection of the node
        // fills: under tokio's per-poll budget it would send ~128 frames
        // a turn while dozens of publishers each add as many, and the
        // queue would overflow while NATS idles. A whole batch per turn
        // (NATS's own buffer still pushes back), then a yield.
        tokio::task::unconstrained(async {
            for (_, frame) in batch.drain(..) {
                send(&client, &js, &in_flight, frame).await;
            }
        })
        .await;
        tokio::task::yield_now().await;
    }
    outbound.close();
    while outbound.take_batch(&mut batch, PUBLISH_BATCH) > 0 {
        for (_, frame) in batch.drain(..) {
            send(&client, &js, &in_flight, frame).await;
        }
    }
    drop(in_flight);
    let _ = acks.await;
}

async fn send(
    client: &Client,
    js: &jetstream::Context,
    in_flight: &mpsc::UnboundedSender<InFlight>,
    frame: Frame,
) {
    let Some(ack) = frame.ack else {
        match client.publish(frame.subject, frame.body).await {
            Ok(()) => metrics::counter!(metric::FORWARDED).increment(1),
            Err(e) => {
                tracing::warn!(error = %e, "a message was not routed to other nodes");
                dropped("nats");
            }
        }
        return;
    };
    match js.publish(frame.subject, frame.body).await {
        Ok(pending) => {
            metrics::counter!(metric::FORWARDED).increment(1);
            // Fails only once the ack task is gone: at the end, when no
            // publisher waits any more.
            let _ = in_flight.send((pending, ack));
        }
        Err(e) => {
            tracing::warn!(error = %e, "a QoS 1/2 message was not journaled nor routed to other nodes");
            dropped("nats");
            metrics::counter!(metric::JOURNAL_FAILED).increment(1);
            let _ = ack.send(Err(e.to_string()));
        }
    }
}

/// Tells each journal publish's waiter its ack, many awaited at once.
async fn await_acks(mut waiting: mpsc::UnboundedReceiver<InFlight>) {
    let mut pending = futures::stream::FuturesUnordered::new();
    let mut open = true;
    loop {
        tokio::select! {
            next = waiting.recv(), if open => match next {
                Some((ack, tell)) => pending.push(async move {
                    let answer = ack.await.map(|_| ()).map_err(|e| e.to_string());
                    match &answer {
                        Ok(()) => metrics::counter!(metric::JOURNALED).increment(1),
                        Err(_) => metrics::counter!(metric::JOURNAL_FAILED).increment(1),
                    }
                    // The publisher may have stopped waiting.
                    let _ = tell.send(answer);
                }),
                None => open = false,
            },
            Some(()) = pending.next(), if !pending.is_empty() => {}
            else => break,
        }
    }
}

/// How long before a gap's first sign a replay starts: what was on the
/// wire when the connection dropped was lost too.
pub const GAP_MARGIN: std::time::Duration = std::time::Duration::from_secs(1);

/// See [`Pending::catching_up`]. A replay that fails is logged; the next
/// gap tries again from its own start.
async fn catch_up(
    client: Client,
    broker: Broker,
    mut gaps: tokio::sync::watch::Receiver<u64>,
    since: crate::Since,
) {
    while gaps.changed().await.is_ok() {
        let began = since.lock().unwrap_or_else(|p| p.into_inner()).take();
        let Some(began) = began else {
            continue;
        };
        let from = began.checked_sub(GAP_MARGIN).unwrap_or(began);
        let took = SystemTime::now()
            .duration_since(began)
            .unwrap_or_default()
            .as_millis();
        tracing::info!(
            gap_ms = took,
            "NATS routing connection back: replaying the journal since the gap began"
        );
        for (namespace, client_ids) in broker.held_sessions() {
            if client_ids.is_empty() {
                continue;
            }
            let replayed = crate::journal::replay(
                &client,
                &broker,
                &namespace,
                &client_ids,
                crate::journal::Since::Time(from),
            )
            .await;
            match replayed {
                Ok(done) => {
                    metrics::counter!(metric::REPLAYED).increment(done.delivered);
                }
                Err(e) => {
                    tracing::warn!(tenant = %namespace, error = %e, "journal replay after a gap failed");
                }
            }
        }
    }
}

/// One task per namespace filter; dropping its [`JoinSet`] aborts them,
/// and the subscriptions they held are unsubscribed.
async fn follow_interest(
    [client, shared]: [Client; 2],
    broker: Broker,
    node: String,
    mut changes: mpsc::UnboundedReceiver<Told>,
) {
    let mut live: HashMap<(TenantId, TopicFilter), (JoinSet<()>, Vec<DrainAsk>)> = HashMap::new();
    while let Some(told) = changes.recv().await {
        let change = match told {
            Told::Interest(change) => change,
            Told::Settled(done) => {
                // The SUBs before are on both connections already: a PING
                // on each after them confirms them all.
                let (client, shared) = (client.clone(), shared.clone());
                tokio::spawn(async move {
                    if server_has_all_before(&client).await && server_has_all_before(&shared).await
                    {
                        let _ = done.send(());
                    }
                });
                continue;
            }
            Told::Drained(done) => {
                let asked: Vec<oneshot::Receiver<()>> = live
                    .values()
                    .flat_map(|(_, asks)| asks)
                    .filter_map(|ask| {
                        let (tx, rx) = oneshot::channel();
                        ask.send(tx).ok().map(|()| rx)
                    })
                    .collect();
                tokio::spawn(async move {
                    // A task gone answers at once (its sender dropped).
                    futures::future::join_all(asked).await;
                    let _ = done.send(());
                });
                continue;
            }
        };
        let key = (change.namespace, change.filter);
        if !change.present {
            if let Some((set, _)) = live.remove(&key) {
                metrics::gauge!(metric::INTEREST).decrement(set.len() as f64);
            }
            continue;
        }
        // Told again after a tenant was loaded twice at once: one is enough.
        if live.contains_key(&key) {
            if let Some(ready) = change.ready {
                let _ = ready.send(());
            }
            continue;
        }
        let (namespace, filter) = &key;
        let group = filter.shared();
        let inner = group.as_ref().map_or(filter, |g| &g.filter);
        let subjects = match namespace.is_platform() {
            true => subjects::platform_filter_subjects(inner),
            false => subjects::tenant_filter_subjects(namespace.as_str(), inner),
        };
        let Some(subjects) = subjects else {
            tracing::warn!(tenant = %namespace, topic = %filter, "filter too long to subscribe on other nodes");
            dropped("subject_too_long");
            continue;
        };
        let mut set = JoinSet::new();
        let mut asks = Vec::new();
        for subject in subjects {
            let subscribed = match &group {
                None => client.subscribe(subject).await,
                Some(g) => {
                    let queue = subjects::queue_group(namespace.as_str(), &g.group);
                    shared.queue_subscribe(subject, queue).await
                }
            };
            match subscribed {
                Ok(sub) => {
                    let (ask, asked) = mpsc::unbounded_channel();
                    asks.push(ask);
                    set.spawn(receive(
                        sub,
                        asked,
                        broker.clone(),
                        node.clone(),
                        namespace.clone(),
                        filter.clone(),
                    ));
                }
                Err(e) => {
                    tracing::warn!(tenant = %namespace, topic = %filter, error = %e, "NATS subscribe failed");
                }
            }
        }
        metrics::gauge!(metric::INTEREST).increment(set.len() as f64);
        live.insert(key, (set, asks));
        // A round trip after the SUBs on the same connection: its answer
        // means the server has them, and another node's next message is
        // routed here.
        if let Some(ready) = change.ready {
            let connection = if group.is_some() {
                shared.clone()
            } else {
                client.clone()
            };
            tokio::spawn(async move {
                if server_has_all_before(&connection).await {
                    let _ = ready.send(());
                }
            });
        }
    }
}

/// Whether the server has processed everything this connection sent
/// before the call (its SUBs above all). `Client::flush` only writes the
/// buffer to the socket: the server may still handle another
/// connection's PUB first. A request nobody answers is answered by the
/// server itself ("no responders") once it reads it, and it reads a
/// connection's operations in order.
async fn server_has_all_before(connection: &Client) -> bool {
    let barrier = format!("fleetmq.barrier.{}", connection.new_inbox());
    match connection.request(barrier, bytes::Bytes::new()).await {
        Ok(_) => true,
        Err(e) => matches!(e.kind(), async_nats::client::RequestErrorKind::NoResponders),
    }
}

/// Decodes one routed message; `None` (counted) if it is not one to
/// deliver. `not_from`: this node's name where its own messages are not
/// (all but a shared group's, whose member here NATS may pick).
fn inbound(
    message: async_nats::Message,
    not_from: Option<&str>,
) -> Option<(TenantId, wire::Envelope)> {
    let Some((tenant, topic)) = subjects::parse_subject(message.subject.as_str()) else {
        dropped("bad_subject");
        return None;
    };
    let Ok(tenant) = TenantId::parse(&tenant) else {
        dropped("bad_subject");
        return None;
    };
    let envelope = match wire::decode(message.payload) {
        Ok(envelope) => envelope,
        Err(e) => {
            tracing::warn!(tenant = %tenant, error = %e, "undecodable message from another node");
            dropped("decode");
            return None;
        }
    };
    // No echo keeps our own messages away; this holds if it did not.
    if not_from == Some(envelope.node.as_str()) {
        return None;
    }
    // The subject is the topic's, or the message is not what it claims.
    if envelope.message.topic != topic {
        dropped("bad_subject");
        return None;
    }
    Some((tenant, envelope))
}

/// Delivers what `sub` receives; answers each drain request (`asked`)
/// once `sub` holds nothing more (see [`Told::Drained`]).
async fn receive(
    mut sub: async_nats::Subscriber,
    mut asked: mpsc::UnboundedReceiver<oneshot::Sender<()>>,
    broker: Broker,
    node: String,
    namespace: TenantId,
    filter: TopicFilter,
) {
    let not_from = filter.shared().is_none().then_some(node.as_str());
    loop {
        // Biased: a drain request is answered only when no message is
        // waiting, i.e. once what arrived before it is delivered.
        let message = tokio::select! {
            biased;
            message = sub.next() => message,
            Some(done) = asked.recv() => {
                let _ = done.send(());
                continue;
            }
        };
        let Some(message) = message else {
            break;
        };
        metrics::counter!(metric::RECEIVED).increment(1);
        let Some((tenant, envelope)) = inbound(message, not_from) else {
            continue;
        };
        let (_, held) = broker.deliver_remote_held(&namespace, &filter, &tenant, envelope.message);
        if let Some(held) = held {
            // A subscriber here is full: what else comes for this filter
            // waits in the subscription's buffer (bounded by the
            // slow-consumer timeout), not dropped at the full queue.
            metrics::counter!(metric::HELD_BACK).increment(1);
            held.await;
        }
    }
}

async fn apply_retained(mut sub: async_nats::Subscriber, broker: Broker, node: String) {
    while let Some(message) = sub.next().await {
        let Some((tenant, envelope)) = inbound(message, Some(&node)) else {
            continue;
        };
        metrics::counter!(metric::RETAINED, "direction" => "received").increment(1);
        let topic = envelope.message.topic.clone();
        let retained = (!envelope.message.payload.is_empty()).then_some(envelope.message);
        broker.apply_remote_retained(&tenant, &topic, retained);
    }
}
