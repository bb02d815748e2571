//! The cluster's journal (issue 15): "acknowledged means durable" across
//! nodes. A JetStream stream ([`STREAM`], file storage, limits retention:
//! [`MAX_AGE`], [`MAX_BYTES`], [`MAX_MESSAGES`], the oldest dropped first)
//! captures every QoS 1/2 message a node routes: they travel on
//! `fleetmq.msg.1.…` ([`subjects`]), which the stream takes, QoS 0 on
//! `fleetmq.msg.0.…`, which it does not (QoS 0 pays no disk).
//!
//! - Publishing: the router's one task sends a QoS 1/2 message as a
//!   JetStream publish on the same connection and in the same order as
//!   its QoS 0 messages (order per publisher and topic holds across QoS);
//!   the publisher's PUBACK / PUBREC waits for the stream's ack, besides
//!   this node's own stores, for at most [`ACK_WAIT`]. Past it, or with
//!   NATS unreachable, the message is not acknowledged as a success (v5
//!   0x83, v3.1.1 connection closed), never acknowledged and lost.
//! - Reading back ([`replay`]): an ordered consumer (ephemeral, one filter
//!   subject: nats-server 2.9) on one tenant's journaled subjects, from a
//!   time or a stream sequence to the stream's end when called; each
//!   message is matched locally (`mqtt::TopicFilter`, the one matcher)
//!   against the named sessions' subscriptions by the broker
//!   ([`Broker::deliver_replayed`]), which skips a session that holds its
//!   [`broker::MessageId`] already.
//!
//! Who replays: a node whose routing connection to NATS dropped and came
//! back replays, for every session it holds, what was journaled since the
//! drop (a second before it: messages on the wire then were lost too); the
//! adoption of a dead node's sessions replays since that node's last lease
//! write. Replayed messages follow what arrived live after the reconnect:
//! order per publisher holds within each part, not across the gap.

use std::time::{Duration, SystemTime};

use async_nats::Client;
use async_nats::jetstream::{self, consumer, stream};
use broker::{Broker, TenantId};
use futures::StreamExt;

use crate::{Error, subjects, wire};

/// The stream's name.
pub const STREAM: &str = "fleetmq_journal";
/// How long the journal keeps a message: longer than a session takeover,
/// the fence's grace and the lease TTL, with room for an adopting node to
/// read it back.
pub const MAX_AGE: Duration = Duration::from_secs(300);
/// Bytes the journal keeps at most (the oldest go first).
pub const MAX_BYTES: i64 = 1 << 30;
/// Messages the journal keeps at most (the oldest go first).
pub const MAX_MESSAGES: i64 = 5_000_000;
/// The longest a publisher's acknowledgement waits for the journal: below
/// the fence's 5 s grace, so that a node cut off from NATS answers its
/// publishers with a failure before it closes their connections.
pub const ACK_WAIT: Duration = Duration::from_secs(4);
/// How long a replay waits for the next message before it takes the
/// stream as read (the consumer's end is known, this bounds a stall).
const READ_IDLE: Duration = Duration::from_secs(5);

/// The journal's stream, created at join if missing. Two nodes starting at
/// once create the same configuration: the server answers both with one
/// stream.
pub(crate) async fn ensure(js: &jetstream::Context) -> Result<(), Error> {
    if js.get_stream(STREAM).await.is_ok() {
        return Ok(());
    }
    js.create_stream(stream::Config {
        name: STREAM.to_owned(),
        description: Some("fleetmq: QoS 1/2 messages routed between nodes".to_owned()),
        subjects: vec![subjects::all_journaled()],
        retention: stream::RetentionPolicy::Limits,
        max_age: MAX_AGE,
        max_bytes: MAX_BYTES,
        max_messages: MAX_MESSAGES,
        storage: stream::StorageType::File,
        num_replicas: 1,
        discard: stream::DiscardPolicy::Old,
        ..Default::default()
    })
    .await
    .map_err(|e| Error::JetStream(format!("creating the journal stream {STREAM}: {e}")))?;
    Ok(())
}

/// Where a replay starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Since {
    /// The first message the journal received at or after this time.
    Time(SystemTime),
    /// This stream sequence (a publish ack's, or a replay's `last + 1`).
    Sequence(u64),
}

/// What a replay did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Replayed {
    /// Journaled messages of the tenant read.
    pub read: u64,
    /// Copies queued for the sessions (a message may reach several, or
    /// none: not theirs, or held already).
    pub delivered: u64,
    /// The stream's last sequence when the replay began: where it ended.
    pub last: u64,
}

/// Reads the journal of `namespace` (a tenant, or the platform namespace:
/// every tenant) from `since` to its end now and delivers each message to
/// those of the sessions `client_ids` of `namespace` this node holds whose
/// subscriptions match, skipping a session that holds it already (same
/// id). Written behind to the session store (the journal holds it).
///
/// For the adoption of a dead node's sessions (serve wiring, `fleetmq`):
/// once they are loaded on this node, call
/// `cluster.replay(&broker, &tenant, &client_ids, Since::Time(last_lease_write))`
/// ([`crate::Cluster::replay`]) with the dead node's last lease write, per
/// tenant; it returns once everything journaled until the call is queued.
pub async fn replay(
    client: &Client,
    broker: &Broker,
    namespace: &TenantId,
    client_ids: &[String],
    since: Since,
) -> Result<Replayed, Error> {
    let fail = |what: &str, e: &dyn std::fmt::Display| {
        Error::JetStream(format!("replaying the journal of {namespace}: {what}: {e}"))
    };
    let js = jetstream::new(client.clone());
    let stream = js
        .get_stream(STREAM)
        .await
        .map_err(|e| fail("opening the stream", &e))?;
    let info = stream
        .get_info()
        .await
        .map_err(|e| fail("reading the stream", &e))?;
    let last = info.state.last_sequence;
    let mut done = Replayed {
        last,
        ..Replayed::default()
    };
    let deliver_policy = match since {
        Since::Sequence(seq) if seq > last => return Ok(done),
        Since::Sequence(seq) => consumer::DeliverPolicy::ByStartSequence {
            start_sequence: seq.max(1),
        },
        Since::Time(at) => {
            let nanos = at
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos());
            let start_time = async_nats::datetime::from_nanos(i128::try_from(nanos).unwrap_or(0))
                .map_err(|e| fail("the start time", &e))?;
            consumer::DeliverPolicy::ByStartTime { start_time }
        }
    };
    if last == 0 || client_ids.is_empty() {
        return Ok(done);
    }
    let consumer = stream
        .create_consumer(consumer::pull::OrderedConfig {
            filter_subject: subjects::tenant_journaled(namespace.as_str(), namespace.is_platform()),
            deliver_policy,
            ..Default::default()
        })
        .await
        .map_err(|e| fail("creating the consumer", &e))?;
    if consumer.cached_info().num_pending == 0 {
        return Ok(done);
    }
    let mut messages = consumer.messages().await.map_err(|e| fail("reading", &e))?;
    loop {
        let next = match tokio::time::timeout(READ_IDLE, messages.next()).await {
            // Nothing more of this tenant's (its last one may be before
            // the stream's end).
            Err(_) | Ok(None) => break,
            Ok(Some(next)) => next.map_err(|e| fail("reading", &e))?,
        };
        let (sequence, pending) = match next.info() {
            Ok(i) => (i.stream_sequence, i.pending),
            Err(e) => return Err(fail("a message's position", &e)),
        };
        if sequence > last {
            break;
        }
        done.read += 1;
        let Some((tenant, topic)) = subjects::parse_subject(next.subject.as_str()) else {
            continue;
        };
        let Ok(tenant) = TenantId::parse(&tenant) else {
            continue;
        };
        match wire::decode(next.payload.clone()) {
            Ok(envelope) if envelope.message.topic == topic => {
                let n = broker.deliver_replayed(namespace, client_ids, &tenant, envelope.message);
                done.delivered += n as u64;
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(tenant = %tenant, error = %e, "undecodable message in the journal");
            }
        }
        if pending == 0 || sequence == last {
            break;
        }
    }
    tracing::info!(
        tenant = %namespace,
        sessions = client_ids.len(),
        read = done.read,
        delivered = done.delivered,
        "journal replayed"
    );
    Ok(done)
}
