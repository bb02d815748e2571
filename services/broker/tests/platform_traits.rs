//! The traits the platform implements, exercised through real clients:
//! events out, retained messages persisted and reloaded, ACL decisions.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use broker::{
    AllowAnonymous, Broker, Config, Event, MemoryEvents, MemoryRetainedStore, TemplateAcl,
};
use common::*;
use mqtt::{Packet, ProtocolVersion, ReasonCode};
use rumqttc::QoS;

const V5: ProtocolVersion = ProtocolVersion::V5;

#[tokio::test]
async fn events_and_retained_persistence_across_a_restart() {
    let store = Arc::new(MemoryRetainedStore::new());
    let events = Arc::new(MemoryEvents::new());
    let build = || {
        Broker::builder(Arc::new(AllowAnonymous {
            tenant: tenant("acme"),
        }))
        .retained_store(store.clone())
        .events(events.clone())
        .build()
    };
    let b = TestBroker::with_broker(build()).await;
    let (c, mut rx, task) = v4_client(b.port(), "dev-1", true);
    next_matching(&mut rx, |p| {
        matches!(p, rumqttc::Packet::ConnAck(_)).then_some(())
    })
    .await;
    v4_send(&c, "devices/dev-1/state", QoS::AtLeastOnce, true, "on").await;
    v4_send(&c, "devices/dev-1/tmp", QoS::AtLeastOnce, true, "x").await;
    v4_send(&c, "devices/dev-1/tmp", QoS::AtLeastOnce, true, "").await;
    next_matching(&mut rx, |p| {
        matches!(p, rumqttc::Packet::PubAck(_)).then_some(())
    })
    .await;
    c.disconnect().await.unwrap();
    let _ = tokio::time::timeout(WAIT, task).await;
    eventually(|| {
        events
            .snapshot()
            .iter()
            .any(|e| matches!(e, Event::Disconnected { .. }))
    })
    .await;
    b.stop().await;

    let seen = events.snapshot();
    assert!(matches!(&seen[0], Event::Connected { client_id, .. } if client_id == "dev-1"));
    assert!(seen.iter().any(|e| matches!(e,
        Event::Published { topic, payload, retain: true, .. }
            if topic.as_str() == "devices/dev-1/state" && &payload[..] == b"on")));
    assert!(seen.iter().any(|e| matches!(e,
        Event::RetainedChanged { topic, payload: None, .. } if topic.as_str() == "devices/dev-1/tmp")));
    assert!(seen.iter().any(|e| matches!(e,
        Event::Disconnected { client_id, graceful: true, .. } if client_id == "dev-1")));

    // A new broker on the same store: the retained message is back.
    let b = TestBroker::with_broker(build()).await;
    let (s, mut srx, _t) = v4_client(b.port(), "reader", true);
    s.subscribe("devices/#", QoS::AtMostOnce).await.unwrap();
    let p = v4_publish(&mut srx).await;
    assert_eq!(
        (&p.topic[..], &p.payload[..]),
        ("devices/dev-1/state", &b"on"[..])
    );
    assert!(p.retain);
    assert_eq!(b.broker.tenant_stats(&tenant("acme")).unwrap().retained, 1);
    b.stop().await;
}

#[tokio::test]
async fn the_authorizer_decides_publish_and_subscribe() {
    let acl = TemplateAcl::new()
        .publish("devices/${principal}/#")
        .subscribe("commands/${principal}/#");
    let broker = Broker::builder(Arc::new(AllowAnonymous {
        tenant: tenant("acme"),
    }))
    .authorizer(Arc::new(acl))
    .config(Config::default())
    .build();
    let b = TestBroker::with_broker(broker).await;
    // AllowAnonymous takes the principal from the username.
    let mut c = connect(V5, "d1");
    c.username = Some("d1".into());
    let (mut raw, _) = Raw::connect(b.port(), V5, c).await;
    raw.send(mqtt::Subscribe {
        packet_id: mqtt::PacketId::new(1).unwrap(),
        subscriptions: ["commands/d1/#", "commands/d2/#"]
            .into_iter()
            .map(|f| mqtt::Subscription {
                filter: mqtt::TopicFilter::parse(f).unwrap(),
                options: mqtt::SubscriptionOptions::new(mqtt::QoS::AtLeastOnce),
            })
            .collect(),
        properties: Default::default(),
    })
    .await;
    match raw.recv().await {
        Some(Packet::SubAck(a)) => {
            assert_eq!(
                a.reason_codes,
                [ReasonCode::GrantedQoS1, ReasonCode::NotAuthorized]
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        puback_reason(&mut raw, "devices/d2/state", 2).await,
        ReasonCode::NotAuthorized
    );
    assert_eq!(
        puback_reason(&mut raw, "devices/d1/state", 3).await,
        ReasonCode::NoMatchingSubscribers
    );
    b.stop().await;
}

/// `raw` publishes "x" to `topic` at QoS 1 (packet id `id`); the reason
/// code of its PUBACK.
async fn puback_reason(raw: &mut Raw, topic: &str, id: u16) -> ReasonCode {
    let mut p = mqtt::Publish::new(mqtt::TopicName::parse(topic).unwrap(), "x");
    p.qos = mqtt::QoS::AtLeastOnce;
    p.packet_id = mqtt::PacketId::new(id);
    raw.send(p).await;
    match raw.recv().await {
        Some(Packet::PubAck(a)) => a.reason_code,
        other => panic!("PUBACK expected, got {other:?}"),
    }
}

/// A store that makes QoS 1/2 retained writes durable only when the test
/// says so (`release`), or fails them; and whose loads fail when its
/// database is `down`.
struct GatedStore {
    saves: std::sync::Mutex<Vec<(String, bool)>>,
    gate: tokio::sync::watch::Sender<Option<Result<(), broker::StoreError>>>,
    /// What every load fails with, if anything.
    load_error: Option<broker::StoreError>,
    /// Loads so far; each takes a while, as a database's would.
    loads: std::sync::atomic::AtomicUsize,
}

impl GatedStore {
    fn new() -> Self {
        Self {
            saves: Default::default(),
            gate: tokio::sync::watch::channel(None).0,
            load_error: None,
            loads: Default::default(),
        }
    }
    /// A store whose database is down: every load fails.
    fn down() -> Self {
        Self {
            load_error: Some(broker::StoreError("connection refused".into())),
            ..Self::new()
        }
    }
    fn release(&self, outcome: Result<(), broker::StoreError>) {
        self.gate.send_replace(Some(outcome));
    }
}

#[async_trait::async_trait]
impl broker::RetainedStore for GatedStore {
    async fn load(
        &self,
        _: &broker::TenantId,
    ) -> Result<Vec<broker::StoredRetained>, broker::StoreError> {
        self.loads.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        // A database that is down takes longer to say so.
        let took = if self.load_error.is_some() { 200 } else { 20 };
        tokio::time::sleep(Duration::from_millis(took)).await;
        match &self.load_error {
            Some(e) => Err(e.clone()),
            None => Ok(Vec::new()),
        }
    }
    fn save(
        &self,
        _: &broker::TenantId,
        topic: &mqtt::TopicName,
        _: Option<&broker::StoredRetained>,
        durable: bool,
    ) -> Option<broker::Durability> {
        self.saves
            .lock()
            .unwrap()
            .push((topic.as_str().to_owned(), durable));
        if !durable {
            return None;
        }
        let mut gate = self.gate.subscribe();
        Some(Box::pin(async move {
            let outcome = gate.wait_for(Option::is_some).await.unwrap().clone();
            outcome.unwrap()
        }))
    }
}

async fn gated_broker(store: &Arc<GatedStore>) -> TestBroker {
    let broker = Broker::builder(Arc::new(AllowAnonymous {
        tenant: tenant("acme"),
    }))
    .retained_store(store.clone())
    .build();
    TestBroker::with_broker(broker).await
}

fn retained_publish(topic: &str, qos: mqtt::QoS, id: u16) -> mqtt::Publish {
    let mut p = mqtt::Publish::new(mqtt::TopicName::parse(topic).unwrap(), "v");
    p.qos = qos;
    p.retain = true;
    p.packet_id = mqtt::PacketId::new(id);
    p
}

#[tokio::test]
async fn qos1_and_qos2_retained_are_acknowledged_only_once_durable() {
    let store = Arc::new(GatedStore::new());
    let b = gated_broker(&store).await;
    let (mut raw, _) = Raw::connect(b.port(), V5, connect(V5, "c")).await;
    raw.send(retained_publish("r/0", mqtt::QoS::AtMostOnce, 0))
        .await;
    raw.send(retained_publish("r/1", mqtt::QoS::AtLeastOnce, 1))
        .await;
    raw.send(retained_publish("r/2", mqtt::QoS::ExactlyOnce, 2))
        .await;
    // A non-retained QoS 1 behind them waits too: acks stay in order.
    let mut plain = retained_publish("p", mqtt::QoS::AtLeastOnce, 3);
    plain.retain = false;
    raw.send(plain).await;
    eventually(|| store.saves.lock().unwrap().len() == 3).await;
    assert_eq!(
        *store.saves.lock().unwrap(),
        [
            ("r/0".to_owned(), false),
            ("r/1".to_owned(), true),
            ("r/2".to_owned(), true)
        ]
    );
    assert!(
        tokio::time::timeout(Duration::from_millis(300), raw.recv())
            .await
            .is_err(),
        "acknowledged before durable"
    );
    store.release(Ok(()));
    let mut acks = Vec::new();
    for _ in 0..3 {
        acks.push(raw.recv().await.unwrap());
    }
    assert!(matches!(&acks[0], Packet::PubAck(a) if a.packet_id.get() == 1));
    assert!(matches!(&acks[1], Packet::PubRec(r) if r.packet_id.get() == 2));
    assert!(matches!(&acks[2], Packet::PubAck(a) if a.packet_id.get() == 3));
    b.stop().await;
}

#[tokio::test]
async fn a_retained_write_that_fails_is_not_acknowledged_as_success() {
    let store = Arc::new(GatedStore::new());
    store.release(Err(broker::StoreError("disk full".into())));
    let b = gated_broker(&store).await;
    let (mut raw, _) = Raw::connect(b.port(), V5, connect(V5, "c")).await;
    raw.send(retained_publish("r/1", mqtt::QoS::AtLeastOnce, 1))
        .await;
    assert!(matches!(
        raw.recv().await,
        Some(Packet::PubAck(a)) if a.reason_code == ReasonCode::ImplementationSpecificError
    ));
    // v3.1.1 has no failure ack: the connection closes so the client resends.
    let v4 = ProtocolVersion::V311;
    let (mut raw, _) = Raw::connect(b.port(), v4, connect(v4, "d")).await;
    raw.send(retained_publish("r/1", mqtt::QoS::AtLeastOnce, 1))
        .await;
    assert!(raw.until_closed().await.is_empty());
    b.stop().await;
}

#[tokio::test]
async fn a_tenant_that_cannot_load_is_refused_with_server_unavailable() {
    let store = Arc::new(GatedStore::down());
    let b = gated_broker(&store).await;
    let mut raw = Raw::open(b.port(), V5).await;
    raw.send(connect(V5, "c")).await;
    raw.assert_refused(ReasonCode::ServerUnavailable).await;
    // Connects that wait for one failing load share its failure; the next
    // connect after it tries again.
    let mut connects = tokio::task::JoinSet::new();
    for i in 0..10 {
        let port = b.port();
        connects.spawn(async move {
            let mut raw = Raw::open(port, V5).await;
            raw.send(connect(V5, &format!("c{i}"))).await;
            raw.assert_refused(ReasonCode::ServerUnavailable).await;
        });
    }
    connects.join_all().await;
    let loads = store.loads.load(std::sync::atomic::Ordering::SeqCst);
    // One load each, in turn behind the gate, would make 11.
    assert!((2..=6).contains(&loads), "{loads} loads");
    b.stop().await;
}

/// After a start, the connects that miss a tenant together wait for one
/// load of it (each read the tenant's whole retained set before).
#[tokio::test]
async fn connects_that_miss_a_tenant_together_load_it_once() {
    let store = Arc::new(GatedStore::new());
    let b = gated_broker(&store).await;
    let mut connects = tokio::task::JoinSet::new();
    for i in 0..20 {
        let port = b.port();
        connects.spawn(async move {
            let (raw, ack) = Raw::connect(port, V5, connect(V5, &format!("c{i}"))).await;
            (raw, ack.reason_code)
        });
    }
    let acked = connects.join_all().await;
    assert!(
        acked
            .iter()
            .all(|(_, reason)| *reason == ReasonCode::Success)
    );
    assert_eq!(store.loads.load(std::sync::atomic::Ordering::SeqCst), 1);
    b.stop().await;
}

/// The platform retains `payload` on `topic` in tenant `dev` (QoS 1);
/// returns for how many sessions it was queued.
async fn retain(b: &TestBroker, topic: &str, payload: &'static [u8]) -> usize {
    b.broker
        .publish(
            &tenant("dev"),
            mqtt::TopicName::parse(topic).unwrap(),
            bytes::Bytes::from_static(payload),
            mqtt::QoS::AtLeastOnce,
            true,
            Default::default(),
        )
        .await
        .unwrap()
}

#[tokio::test]
async fn the_platform_can_publish_and_disconnect_devices() {
    let b = TestBroker::start().await;
    let dev = tenant("dev");
    // Desired state as a retained command, before the device is online.
    let queued = retain(&b, "commands/d1/state/desired", b"{\"led\":true}").await;
    assert_eq!(queued, 0);
    let mut c = connect(V5, "d1");
    c.will = Some(will(
        "devices/d1/status",
        "offline",
        mqtt::QoS::AtMostOnce,
        true,
    ));
    let (mut raw, _) = Raw::connect(b.port(), V5, c).await;
    raw.send(mqtt::Subscribe::new(
        mqtt::PacketId::new(1).unwrap(),
        mqtt::TopicFilter::parse("commands/d1/#").unwrap(),
        mqtt::SubscriptionOptions::new(mqtt::QoS::AtLeastOnce),
    ))
    .await;
    assert!(matches!(raw.recv().await, Some(Packet::SubAck(_))));
    match raw.recv().await {
        Some(Packet::Publish(p)) => {
            assert_eq!(&p.payload[..], b"{\"led\":true}");
            assert!(p.retain);
        }
        other => panic!("{other:?}"),
    }

    assert!(b.broker.disconnect_client(&dev, "d1"));
    assert!(!b.broker.disconnect_client(&dev, "nobody"));
    raw.assert_disconnected(ReasonCode::AdministrativeAction)
        .await;
    // Not the device's choice, so its will is published.
    eventually(|| b.broker.tenant_stats(&dev).is_some_and(|s| s.retained == 2)).await;
    b.stop().await;
}

#[tokio::test]
async fn removing_a_tenant_ends_its_sessions_and_forgets_its_state() {
    let b = TestBroker::start().await;
    let dev = tenant("dev");
    retain(&b, "devices/d1/state", b"kept?").await;
    let (mut first, _) = Raw::connect(b.port(), V5, connect(V5, "d1")).await;
    let (mut second, _) = Raw::connect(b.port(), V5, connect(V5, "backend")).await;
    assert_eq!(b.broker.tenant_stats(&dev).map(|s| s.retained), Some(1));

    assert_eq!(b.broker.remove_tenant(&dev), 2);
    for raw in [&mut first, &mut second] {
        raw.assert_disconnected(ReasonCode::AdministrativeAction)
            .await;
    }
    assert!(b.broker.tenant_stats(&dev).is_none());
    assert_eq!(b.broker.remove_tenant(&dev), 0);
    // The platform namespace is never removed.
    assert_eq!(b.broker.remove_tenant(&broker::TenantId::platform()), 0);
    b.stop().await;
}
