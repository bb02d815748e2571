//! [`Router`]: the broker's [`Interconnect`] over core NATS (issue 15).
//!
//! - Interest: for each distinct filter a namespace has on this node, one
//!   NATS subscription per subject of it ([`subjects`]; two for `x/#`);
//!   withdrawn when the filter's last local subscription goes. A node
//!   without a matching subscription is sent nothing by NATS.
//! - Outbound: each message published here goes out once, on its topic's
//!   subject, in publish order through one task on one connection (so
//!   order per publisher and topic holds). The connection is opened with
//!   no echo: a node never hears its own messages back.
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
//! A new interest is confirmed by NATS (a flush after the SUBs) before
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

use async_nats::Client;
use broker::{Broker, Durability, HandoffError, Interconnect, Outbound, SessionHandoff, TenantId};
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
const PUBLISH_BATCH: usize = 256;

/// Metric names (the binary installs the Prometheus recorder).
mod metric {
    pub const FORWARDED: &str = "cluster_messages_forwarded_total";
    pub const RECEIVED: &str = "cluster_messages_received_total";
    pub const DROPPED: &str = "cluster_messages_dropped_total";
    pub const RETAINED: &str = "cluster_retained_changes_total";
    pub const INTEREST: &str = "cluster_interest_subjects";
}

fn dropped(reason: &'static str) {
    metrics::counter!(metric::DROPPED, "reason" => reason).increment(1);
}

struct Frame {
    subject: String,
    body: Bytes,
}

/// What the interest task is told, in the order it happened.
enum Told {
    Interest(Interest),
    /// Answered once NATS has confirmed every interest told before it.
    Settled(oneshot::Sender<()>),
}

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

/// The broker's side: hands interest changes, messages and retained
/// changes to the tasks [`Pending::start`] runs.
pub struct Router {
    node: String,
    /// For session takeover requests ([`crate::handoff`]).
    client: Client,
    /// Fair per tenant: one tenant's flood fills its own share, never
    /// another tenant's.
    outbound: Arc<FairQueue<Frame>>,
    interest: mpsc::UnboundedSender<Told>,
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
                client: client.clone(),
                outbound: outbound.clone(),
                interest: int_tx,
            },
            Pending {
                client,
                shared,
                node: node.to_owned(),
                outbound,
                interest: int_rx,
            },
        )
    }

    fn send(
        &self,
        tenant: &TenantId,
        subject: Option<String>,
        body: Result<Bytes, wire::WireError>,
    ) -> bool {
        let Some(subject) = subject else {
            dropped("subject_too_long");
            return false;
        };
        let body = match body {
            Ok(body) => body,
            Err(e) => {
                tracing::warn!(error = %e, "message not routed to other nodes");
                dropped("encode");
                return false;
            }
        };
        match self.outbound.push(tenant.as_str(), Frame { subject, body }) {
            Ok(()) => true,
            Err((Refused::Full, _)) => {
                metrics::counter!(metric::DROPPED, "reason" => "queue_full", "tenant" => tenant.to_string())
                    .increment(1);
                false
            }
            Err((Refused::Closed, _)) => {
                dropped("stopped");
                false
            }
        }
    }
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
            let _ = tokio::time::timeout(INTEREST_WAIT, confirmed).await;
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

    fn forward(&self, tenant: &TenantId, message: &Outbound<'_>) {
        let subject = subjects::message_subject(tenant.as_str(), message.topic);
        self.send(tenant, subject, wire::encode(&self.node, message));
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
        if self.send(tenant, subject, body) {
            metrics::counter!(metric::RETAINED, "direction" => "sent").increment(1);
        }
    }
}

impl Pending {
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
        ));
        let stop = tokio_util::sync::CancellationToken::new();
        let publisher = tokio::spawn(publish(self.client.clone(), self.outbound, stop.clone()));
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

/// Publishes queued frames, round-robin over the tenants and in order
/// within each, until `stop`; then what is left.
async fn publish(
    client: Client,
    outbound: Arc<FairQueue<Frame>>,
    stop: tokio_util::sync::CancellationToken,
) {
    let mut batch = Vec::with_capacity(PUBLISH_BATCH);
    loop {
        // Cancel-safe: a batch is taken only when next_batch returns it.
        let taken = tokio::select! {
            taken = outbound.next_batch(&mut batch, PUBLISH_BATCH) => taken,
            () = stop.cancelled() => break,
        };
        if taken == 0 {
            return;
        }
        for (_, frame) in batch.drain(..) {
            send(&client, frame).await;
        }
    }
    outbound.close();
    while outbound.take_batch(&mut batch, PUBLISH_BATCH) > 0 {
        for (_, frame) in batch.drain(..) {
            send(&client, frame).await;
        }
    }
}

async fn send(client: &Client, frame: Frame) {
    match client.publish(frame.subject, frame.body).await {
        Ok(()) => metrics::counter!(metric::FORWARDED).increment(1),
        Err(e) => {
            tracing::warn!(error = %e, "a message was not routed to other nodes");
            dropped("nats");
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
    let mut live: HashMap<(TenantId, TopicFilter), JoinSet<()>> = HashMap::new();
    while let Some(told) = changes.recv().await {
        let change = match told {
            Told::Interest(change) => change,
            Told::Settled(done) => {
                // The SUBs before are on both connections already: a PING
                // on each after them confirms them all.
                let (client, shared) = (client.clone(), shared.clone());
                tokio::spawn(async move {
                    if client.flush().await.is_ok() && shared.flush().await.is_ok() {
                        let _ = done.send(());
                    }
                });
                continue;
            }
        };
        let key = (change.namespace, change.filter);
        if !change.present {
            if let Some(set) = live.remove(&key) {
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
                    set.spawn(receive(
                        sub,
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
        live.insert(key, set);
        // A PING after the SUBs on the same connection: its PONG means the
        // server has them, and another node's next message is routed here.
        if let Some(ready) = change.ready {
            let connection = if group.is_some() {
                shared.clone()
            } else {
                client.clone()
            };
            tokio::spawn(async move {
                if connection.flush().await.is_ok() {
                    let _ = ready.send(());
                }
            });
        }
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

async fn receive(
    mut sub: async_nats::Subscriber,
    broker: Broker,
    node: String,
    namespace: TenantId,
    filter: TopicFilter,
) {
    let not_from = filter.shared().is_none().then_some(node.as_str());
    while let Some(message) = sub.next().await {
        metrics::counter!(metric::RECEIVED).increment(1);
        if let Some((tenant, envelope)) = inbound(message, not_from) {
            broker.deliver_remote(&namespace, &filter, &tenant, envelope.message);
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
