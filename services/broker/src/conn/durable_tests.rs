//! Persistent sessions written through a [`SessionStore`] (issue 14): a
//! second broker on the same store stands for the process after a
//! restart. The database-backed store is exercised end to end in
//! `tests/e2e/sessions.rs`; here the broker's side of it.

use std::num::NonZeroU16;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use mqtt::{
    Connect, Disconnect, Packet, ProtocolVersion, PubAck, Publish, QoS, ReasonCode, TopicName,
};

use super::tests::{Client, suback, subscribe};
use crate::session_store::{Disconnected, MemorySessionStore, SessionStore};
use crate::{AllowAnonymous, Broker, TenantId};

const V5: ProtocolVersion = ProtocolVersion::V5;

fn dev() -> TenantId {
    TenantId::parse("dev").unwrap()
}

/// A broker on `store`: building another on the same store is a restart.
fn broker(store: &Arc<MemorySessionStore>) -> Broker {
    Broker::builder(Arc::new(AllowAnonymous { tenant: dev() }))
        .session_store(store.clone())
        .build()
}

fn persistent(id: &str) -> Connect {
    let mut c = Connect::new(V5, id);
    c.clean_start = false;
    c.keep_alive = 0;
    c.properties.session_expiry_interval = Some(3600);
    c
}

async fn connect_present(b: &Broker, c: Connect) -> (Client, bool) {
    let mut client = Client::open_as(b, c.protocol);
    client.send(c).await;
    match client.recv().await {
        Some(Packet::ConnAck(a)) if a.reason_code == ReasonCode::Success => {
            (client, a.session_present)
        }
        other => panic!("CONNACK expected, got {other:?}"),
    }
}

/// A client connected with `c` and subscribed to `filter`.
async fn subscribed(b: &Broker, c: Connect, filter: &str) -> Client {
    let (mut client, _) = connect_present(b, c).await;
    subscribe(&mut client, filter).await;
    client
}

/// A persistent subscriber to `a/#` that went offline.
async fn offline_subscriber(b: &Broker) {
    let mut sub = subscribed(b, persistent("sub"), "a/#").await;
    sub.send(Disconnect::new(ReasonCode::Success)).await;
    assert_eq!(sub.recv().await, None);
}

async fn publish_acked(b: &Broker, n: u16) {
    let mut publisher = Client::connect(b, Connect::new(V5, "pub")).await;
    for i in 1..=n {
        let mut p = Publish::new(TopicName::parse("a/b").unwrap(), format!("m{i}"));
        p.qos = QoS::AtLeastOnce;
        p.packet_id = NonZeroU16::new(i);
        publisher.send(p).await;
        assert!(
            matches!(publisher.recv().await, Some(Packet::PubAck(a)) if a.packet_id.get() == i)
        );
    }
}

async fn received(client: &mut Client, n: usize) -> Vec<Publish> {
    let mut got = Vec::new();
    while got.len() < n {
        match client.recv().await {
            Some(Packet::Publish(p)) => got.push(p),
            other => panic!("PUBLISH expected, got {other:?}"),
        }
    }
    got
}

fn payloads(got: &[Publish]) -> Vec<String> {
    got.iter()
        .map(|p| String::from_utf8_lossy(&p.payload).into_owned())
        .collect()
}

#[tokio::test]
async fn queued_and_in_flight_messages_outlive_the_broker() {
    let store = Arc::new(MemorySessionStore::new());
    let first = broker(&store);
    let (mut sub, present) = connect_present(&first, persistent("sub")).await;
    assert!(!present);
    subscribe(&mut sub, "a/#").await;
    sub.send(Disconnect::new(ReasonCode::Success)).await;
    assert_eq!(sub.recv().await, None);
    publish_acked(&first, 3).await;

    // After a restart: session present, the subscription and the queue
    // are back, in order.
    let second = broker(&store);
    let (mut sub, present) = connect_present(&second, persistent("sub")).await;
    assert!(present);
    let got = received(&mut sub, 3).await;
    assert_eq!(payloads(&got), ["m1", "m2", "m3"]);
    assert!(got.iter().all(|p| !p.dup));
    // Only the first is acknowledged before the next restart.
    sub.send(PubAck::new(got[0].packet_id.unwrap())).await;
    sub.send(Disconnect::new(ReasonCode::Success)).await;
    assert_eq!(sub.recv().await, None);

    // The two in flight come again, with DUP and their packet ids.
    let third = broker(&store);
    let (mut sub, present) = connect_present(&third, persistent("sub")).await;
    assert!(present);
    let again = received(&mut sub, 2).await;
    assert_eq!(payloads(&again), ["m2", "m3"]);
    assert!(again.iter().all(|p| p.dup));
    assert_eq!(
        again.iter().map(|p| p.packet_id).collect::<Vec<_>>(),
        [got[1].packet_id, got[2].packet_id]
    );
    // And the subscription still routes.
    publish_acked(&third, 1).await;
    assert_eq!(payloads(&received(&mut sub, 1).await), ["m1"]);
}

#[tokio::test]
async fn a_session_that_expired_while_the_broker_was_down_is_gone() {
    let store = Arc::new(MemorySessionStore::new());
    let first = broker(&store);
    offline_subscriber(&first).await;
    publish_acked(&first, 2).await;
    // As if the broker had been down for longer than the expiry.
    let past = SystemTime::now() - Duration::from_secs(10);
    store.disconnect(
        &dev(),
        "sub",
        &Disconnected {
            at: past - Duration::from_secs(3600),
            expires_at: Some(past),
            will_due_at: None,
        },
    );
    let second = broker(&store);
    let (_sub, present) = connect_present(&second, persistent("sub")).await;
    assert!(!present);
    let stored = store.load(&dev()).await.unwrap();
    let sub = stored
        .iter()
        .find(|s| &*s.record.client_id == "sub")
        .unwrap();
    assert!(sub.queue.is_empty() && sub.subscriptions.is_empty());
}

#[tokio::test]
async fn clean_start_and_expiry_zero_leave_nothing_stored() {
    let store = Arc::new(MemorySessionStore::new());
    let b = broker(&store);
    offline_subscriber(&b).await;
    // Clean Start with expiry 0 discards it, in the store as well.
    let mut clean = Connect::new(V5, "sub");
    clean.keep_alive = 0;
    let (mut c, present) = connect_present(&b, clean).await;
    assert!(!present);
    assert!(store.load(&dev()).await.unwrap().is_empty());
    c.send(Disconnect::new(ReasonCode::Success)).await;
    assert_eq!(c.recv().await, None);
    // A clean session is never written.
    assert!(store.load(&dev()).await.unwrap().is_empty());
    let after = broker(&store);
    let (_c, present) = connect_present(&after, persistent("sub")).await;
    assert!(!present);
}

#[tokio::test]
async fn qos_2_is_exactly_once_across_a_restart() {
    use mqtt::{PubComp, PubRec, PubRel};
    let store = Arc::new(MemorySessionStore::new());
    let first = broker(&store);
    let (mut sub, _) = connect_present(&first, persistent("sub")).await;
    suback(&mut sub, "a/#", QoS::ExactlyOnce).await;
    // A persistent publisher leaves with its QoS 2 message received
    // (PUBREC) but not released.
    let (mut publisher, _) = connect_present(&first, persistent("pub2")).await;
    let mut p = Publish::new(TopicName::parse("a/b").unwrap(), "once");
    p.qos = QoS::ExactlyOnce;
    p.packet_id = NonZeroU16::new(7);
    publisher.send(p.clone()).await;
    assert!(matches!(publisher.recv().await, Some(Packet::PubRec(r)) if r.packet_id.get() == 7));
    publisher.send(Disconnect::new(ReasonCode::Success)).await;
    assert_eq!(publisher.recv().await, None);
    // The subscriber got it and sent PUBREC; its PUBCOMP never came.
    let got = received(&mut sub, 1).await;
    let id = got[0].packet_id.unwrap();
    sub.send(PubRec::new(id)).await;
    assert!(matches!(sub.recv().await, Some(Packet::PubRel(r)) if r.packet_id == id));
    sub.send(Disconnect::new(ReasonCode::Success)).await;
    assert_eq!(sub.recv().await, None);

    let second = broker(&store);
    // The subscriber is sent the PUBREL again, not the message.
    let (mut sub, present) = connect_present(&second, persistent("sub")).await;
    assert!(present);
    assert!(matches!(sub.recv().await, Some(Packet::PubRel(r)) if r.packet_id == id));
    sub.send(PubComp::new(id)).await;
    // The publisher's resend of id 7 is acknowledged, not delivered twice.
    let (mut publisher, present) = connect_present(&second, persistent("pub2")).await;
    assert!(present);
    p.dup = true;
    publisher.send(p).await;
    assert!(matches!(publisher.recv().await, Some(Packet::PubRec(r)) if r.packet_id.get() == 7));
    publisher
        .send(PubRel::new(NonZeroU16::new(7).unwrap()))
        .await;
    assert!(
        matches!(publisher.recv().await, Some(Packet::PubComp(c)) if c.packet_id.get() == 7 && c.reason_code == ReasonCode::Success)
    );
    // A new message comes through; the old one did not come twice.
    publish_acked(&second, 1).await;
    let next = received(&mut sub, 1).await;
    assert_eq!(payloads(&next), ["m1"]);
}

/// Issue 15: a node lets go of a session another node took over. Its
/// connection ends with DISCONNECT 0x8E, it no longer routes to it, and
/// the session (subscription and queue) is left in the store for the
/// other node: a second broker on the store stands for it.
#[tokio::test]
async fn a_released_session_leaves_with_0x8e_and_stays_in_the_store() {
    let store = Arc::new(MemorySessionStore::new());
    let first = broker(&store);
    let mut sub = subscribed(&first, persistent("sub"), "a/#").await;

    assert!(first.release_session(&dev(), "sub").await.unwrap());
    match sub.recv().await {
        Some(Packet::Disconnect(d)) => assert_eq!(d.reason_code, ReasonCode::SessionTakenOver),
        other => panic!("DISCONNECT 0x8E expected, got {other:?}"),
    }
    assert_eq!(sub.recv().await, None);
    assert!(
        !first.release_session(&dev(), "sub").await.unwrap(),
        "forgotten"
    );
    // Published on the first node after: not routed to the session it let
    // go of (the other node queues its messages).
    publish_acked(&first, 1).await;

    let second = broker(&store);
    let (mut sub, present) = connect_present(&second, persistent("sub")).await;
    assert!(present, "not ended in the store");
    publish_acked(&second, 2).await;
    assert_eq!(payloads(&received(&mut sub, 2).await), ["m1", "m2"]);
}

/// A clean session's connection with a retained will `clean/will`.
fn clean_with_will(id: &str) -> Connect {
    let mut c = Connect::new(V5, id);
    c.keep_alive = 0;
    c.will = Some(crate::testing::will(
        "clean/will",
        "gone",
        QoS::AtMostOnce,
        true,
    ));
    c
}

#[tokio::test]
async fn a_clean_sessions_will_outlives_a_crash_once() {
    let store = Arc::new(MemorySessionStore::new());
    let first = broker(&store);
    // Kept connected: the crash takes the broker with the connection.
    let _c = subscribed(&first, clean_with_will("clean"), "q/#").await;
    tokio::task::yield_now().await;
    let stored = store.load(&dev()).await.unwrap();
    let [s] = stored.as_slice() else {
        panic!("one stored session expected, got {stored:?}")
    };
    assert_eq!(s.record.expiry_interval, 0);
    assert!(s.record.will.is_some());
    // Only the will is stored, not what the session holds.
    assert!(s.queue.is_empty() && s.subscriptions.is_empty());

    // The restart sends the will (retained, so a later subscriber sees
    // it) and the stored session is gone with it.
    let second = broker(&store);
    let mut sub = Client::connect(&second, Connect::new(V5, "sub")).await;
    subscribe(&mut sub, "clean/#").await;
    let got = received(&mut sub, 1).await;
    assert_eq!(payloads(&got), ["gone"]);
    assert!(store.load(&dev()).await.unwrap().is_empty());
    // A second restart has no will left to send.
    let third = broker(&store);
    let (_c, present) = connect_present(&third, persistent("other")).await;
    assert!(!present);
    assert_eq!(store.load(&dev()).await.unwrap().len(), 1);
}

#[tokio::test]
async fn a_clean_sessions_stored_will_goes_at_a_normal_disconnect() {
    let store = Arc::new(MemorySessionStore::new());
    let b = broker(&store);
    let (mut c, _) = connect_present(&b, clean_with_will("clean")).await;
    c.send(Disconnect::new(ReasonCode::Success)).await;
    assert_eq!(c.recv().await, None);
    tokio::task::yield_now().await;
    assert!(store.load(&dev()).await.unwrap().is_empty());
}
