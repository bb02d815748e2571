//! Broker + state + store together, on both backends, with a real MQTT
//! client: retained messages survive a restart (graceful, and for QoS 1 a
//! crash), coalescing writes fewer rows than updates, presence follows the
//! connections.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use broker::testing::Served;
use broker::{AllowAnonymous, Broker, TenantId};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use state::{DurableRetained, Fanout, Presence, PresenceConfig, RetainedConfig};
use store::testing::TestDb;
use store::{NewDevice, PresenceStatus, Store};
use tokio::sync::mpsc;

const WAIT: Duration = Duration::from_secs(20);

struct Node {
    store: Store,
    retained: Arc<DurableRetained>,
    presence: Arc<Presence>,
    port: u16,
    served: Served,
}

impl Node {
    async fn start(url: &str, flush_window: Duration) -> Node {
        let store = Store::open(url).await.unwrap();
        let retained = DurableRetained::start(
            store.clone(),
            RetainedConfig {
                flush_window,
                ..RetainedConfig::default()
            },
        );
        let presence = Presence::start(
            store.clone(),
            PresenceConfig {
                flush_interval: Duration::from_millis(50),
                ..PresenceConfig::new("node-1")
            },
        )
        .await
        .unwrap();
        let broker = Broker::builder(Arc::new(AllowAnonymous {
            tenant: TenantId::parse("acme").unwrap(),
        }))
        .retained_store(retained.clone())
        .events(Arc::new(Fanout::new(vec![presence.clone()])))
        .build();
        let served = Served::tcp(broker).await;
        Node {
            store,
            retained,
            presence,
            port: served.port(),
            served,
        }
    }

    /// Stops the listeners (every connection ends), then the writers.
    async fn stop(self) {
        self.served.stop().await;
        self.retained.shutdown().await.unwrap();
        self.presence.shutdown().await.unwrap();
        self.store.close().await;
    }
}

fn client(port: u16, id: &str) -> (AsyncClient, mpsc::UnboundedReceiver<Packet>) {
    let mut opts = MqttOptions::new(id, "127.0.0.1", port);
    opts.set_credentials(id, "");
    opts.set_keep_alive(Duration::from_secs(30));
    opts.set_inflight(100);
    let (client, mut events) = AsyncClient::new(opts, 1_000);
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok(event) = events.poll().await {
            if let Event::Incoming(p) = event
                && tx.send(p).is_err()
            {
                return;
            }
        }
    });
    (client, rx)
}

/// Waits for `n` packets that `pick` accepts; returns what it picked.
async fn collect<T>(
    rx: &mut mpsc::UnboundedReceiver<Packet>,
    n: usize,
    mut pick: impl FnMut(Packet) -> Option<T>,
) -> Vec<T> {
    let mut got = Vec::new();
    tokio::time::timeout(WAIT, async {
        while got.len() < n {
            if let Some(t) = pick(rx.recv().await.expect("connection ended")) {
                got.push(t);
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("only {} of {n} packets arrived", got.len()));
    got
}

fn is_puback(p: Packet) -> Option<()> {
    matches!(p, Packet::PubAck(_)).then_some(())
}

/// The retained messages a new subscriber to `#` receives, sorted.
async fn retained_seen(port: u16, expected: usize) -> Vec<(String, String)> {
    let (sub, mut rx) = client(port, "watcher");
    sub.subscribe("#", QoS::AtLeastOnce).await.unwrap();
    let mut got = collect(&mut rx, expected, |p| match p {
        Packet::Publish(p) if p.retain => Some((
            p.topic.clone(),
            String::from_utf8_lossy(&p.payload).into_owned(),
        )),
        _ => None,
    })
    .await;
    // Nothing more than expected.
    let extra = tokio::time::timeout(Duration::from_millis(300), async {
        loop {
            if let Some(Packet::Publish(p)) = rx.recv().await {
                return p.topic;
            }
        }
    })
    .await;
    assert!(extra.is_err(), "unexpected retained message {extra:?}");
    got.sort();
    got
}

async fn tenant_with_devices(db: &TestDb, devices: &[&str]) {
    let store = db.with_tenant("acme").await;
    for d in devices {
        store
            .create_device("acme", &NewDevice::new(*d))
            .await
            .unwrap();
    }
}

async fn retained_survive_a_graceful_restart(db: &TestDb) -> anyhow::Result<()> {
    tenant_with_devices(db, &[]).await;
    let node = Node::start(db.url(), Duration::from_millis(50)).await;
    let (publisher, mut rx) = client(node.port, "publisher");
    // 50 topics updated 4 times at QoS 1, 100 topics once at QoS 0.
    for round in 0..4 {
        for d in 0..50 {
            let topic = format!("devices/d{d}/state");
            publisher
                .publish(topic, QoS::AtLeastOnce, true, format!("r{round}"))
                .await?;
        }
    }
    for d in 0..100 {
        let topic = format!("devices/q{d}/state");
        publisher.publish(topic, QoS::AtMostOnce, true, "q").await?;
    }
    // A retained delete.
    publisher
        .publish("devices/q0/state", QoS::AtLeastOnce, true, "")
        .await?;
    collect(&mut rx, 201, is_puback).await;
    let stats = node.retained.stats();
    node.stop().await;
    assert_eq!(stats.saves, 301);

    let node = Node::start(db.url(), Duration::from_millis(50)).await;
    let seen = retained_seen(node.port, 149).await;
    assert!(seen.contains(&("devices/d7/state".into(), "r3".into())));
    assert!(seen.contains(&("devices/q99/state".into(), "q".into())));
    assert!(!seen.iter().any(|(t, _)| t == "devices/q0/state"));
    assert!(
        seen.iter()
            .filter(|(t, _)| t.starts_with("devices/d"))
            .all(|(_, p)| p == "r3")
    );
    node.stop().await;
    Ok(())
}

async fn acknowledged_qos1_survives_a_crash(db: &TestDb) -> anyhow::Result<()> {
    tenant_with_devices(db, &[]).await;
    // An hour-long window: QoS 0 changes stay in memory, as they would
    // when the process is killed between two flushes.
    let crashed = Node::start(db.url(), Duration::from_secs(3600)).await;
    let (publisher, mut rx) = client(crashed.port, "publisher");
    for d in 0..100 {
        let topic = format!("devices/d{d}/state");
        publisher
            .publish(topic, QoS::AtLeastOnce, true, "acked")
            .await?;
    }
    collect(&mut rx, 100, is_puback).await;
    let stats = crashed.retained.stats();
    // Group commit: fewer transactions than acknowledged publishes.
    assert!(stats.transactions <= 100, "{stats:?}");
    // A QoS 0 change after them waits for the window. (Sent before the
    // last PUBACK, it could ride in the acknowledged batch's transaction,
    // as group commit writes whatever is buffered: the test saw it back
    // about once in a hundred runs under load.)
    publisher
        .publish("devices/lost/state", QoS::AtMostOnce, true, "q")
        .await?;
    tokio::time::timeout(WAIT, async {
        while crashed.retained.stats().saves < 101 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the QoS 0 change reached the retained store");
    let stats = crashed.retained.stats();
    assert_eq!((stats.rows_written, stats.backlog), (100, 1), "{stats:?}");

    // A second process on the same database, the first never flushing again.
    let node = Node::start(db.url(), Duration::from_millis(50)).await;
    let seen = retained_seen(node.port, 100).await;
    assert!(
        seen.iter()
            .all(|(t, p)| t.starts_with("devices/d") && p == "acked")
    );
    node.stop().await;
    crashed.served.shutdown.cancel();
    crashed.store.close().await;
    Ok(())
}

async fn coalescing_writes_fewer_rows_than_updates(db: &TestDb) -> anyhow::Result<()> {
    tenant_with_devices(db, &[]).await;
    let node = Node::start(db.url(), Duration::from_millis(200)).await;
    let (publisher, mut rx) = client(node.port, "publisher");
    for i in 0..1_000 {
        let topic = format!("devices/d{}/state", i % 10);
        publisher
            .publish(topic, QoS::AtMostOnce, true, i.to_string())
            .await?;
    }
    // A QoS 1 marker behind them: once acknowledged, all are written.
    publisher
        .publish("devices/marker/state", QoS::AtLeastOnce, true, "m")
        .await?;
    collect(&mut rx, 1, is_puback).await;
    let stats = node.retained.stats();
    assert_eq!(stats.saves, 1_001);
    assert!(
        stats.rows_written < stats.saves / 10,
        "coalescing should write far fewer rows: {stats:?}"
    );
    let rows = node.store.load_retained("acme", chrono::Utc::now()).await?;
    assert_eq!(rows.len(), 11);
    let d9 = rows.iter().find(|r| r.topic == "devices/d9/state").unwrap();
    assert_eq!(d9.payload, b"999");
    node.stop().await;
    Ok(())
}

async fn eventually_status(
    store: &Store,
    device: &str,
    want: PresenceStatus,
) -> store::DevicePresence {
    tokio::time::timeout(WAIT, async {
        loop {
            if let Some(p) = store.get_presence("acme", device).await.unwrap()
                && p.status == want
            {
                return p;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{device} never became {want:?}"))
}

async fn presence_follows_connections_takeover_and_crash(db: &TestDb) -> anyhow::Result<()> {
    tenant_with_devices(db, &["d1", "d2"]).await;
    let node = Node::start(db.url(), Duration::from_millis(50)).await;
    let store = node.store.clone();

    let (first, _rx1) = client(node.port, "d1");
    let p = eventually_status(&store, "d1", PresenceStatus::Online).await;
    assert_eq!(p.protocol.as_deref(), Some("3.1.1"));
    assert_eq!(p.node_id.as_deref(), Some("node-1"));
    assert!(p.remote_addr.unwrap().starts_with("127.0.0.1:"));
    // A takeover: the first connection ends, the device stays online.
    let (second, _rx2) = client(node.port, "d1");
    tokio::time::sleep(Duration::from_millis(300)).await;
    node.presence.flush().await?;
    let p = eventually_status(&store, "d1", PresenceStatus::Online).await;
    assert!(p.disconnect_reason.is_none());
    second.disconnect().await?;
    let p = eventually_status(&store, "d1", PresenceStatus::Offline).await;
    assert!(p.disconnect_reason.unwrap().contains("Success"));
    assert!(p.disconnected_at.is_some());
    drop(first);

    // A client id that is no device (a backend) is not recorded.
    let (_backend, _rx3) = client(node.port, "backend-1");
    // The status filter of the device list agrees.
    let (_d2, _rx4) = client(node.port, "d2");
    eventually_status(&store, "d2", PresenceStatus::Online).await;
    let online = store
        .list_devices(
            "acme",
            &store::DeviceFilter {
                presence: Some(PresenceStatus::Online),
                ..Default::default()
            },
            &store::Page::default(),
        )
        .await?;
    assert_eq!(
        online
            .items
            .iter()
            .map(|d| d.id.as_str())
            .collect::<Vec<_>>(),
        ["d2"]
    );
    assert!(store.get_presence("acme", "backend-1").await?.is_none());

    // A crash: the node never writes d2 offline. Its next start does.
    // Presence stops writing before the listener is told to stop: the
    // other order lets the shutdown's disconnects race into the last flush.
    node.presence.shutdown().await?;
    node.served.stop().await;
    node.retained.shutdown().await?;
    assert_eq!(
        store.get_presence("acme", "d2").await?.unwrap().status,
        PresenceStatus::Online
    );
    let restarted = Node::start(db.url(), Duration::from_millis(50)).await;
    assert_eq!(
        restarted.presence.recovered(),
        [(TenantId::parse("acme").unwrap(), "d2".to_owned())]
    );
    let p = store.get_presence("acme", "d2").await?.unwrap();
    assert_eq!(p.status, PresenceStatus::Offline);
    assert_eq!(p.disconnect_reason.as_deref(), Some("node restarted"));
    restarted.stop().await;
    store.close().await;
    Ok(())
}

store::backend_tests!(
    retained_survive_a_graceful_restart,
    acknowledged_qos1_survives_a_crash,
    coalescing_writes_fewer_rows_than_updates,
    presence_follows_connections_takeover_and_crash
);
