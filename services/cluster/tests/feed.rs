//! The change feed between two joined nodes over a real `nats-server`
//! (cluster::testing): a change published on one reaches the other's
//! listeners with its origin and never comes back to its own; a node that
//! lost its NATS connection applies `Missed` when it is back.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use cluster::testing::NatsServer;
use cluster::{Cluster, ClusterConfig, Holder, NodeName};
use events::change::{Change, ChangeFeed, ChangeListener, Origin};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};

const WAIT: Duration = Duration::from_secs(30);

struct Heard(UnboundedSender<(Change, Origin)>);

#[async_trait::async_trait]
impl ChangeListener for Heard {
    async fn apply(&self, change: &Change, origin: &Origin) {
        let _ = self.0.send((change.clone(), origin.clone()));
    }
}

async fn node(
    nats: &NatsServer,
    name: &str,
) -> (
    Cluster,
    ChangeFeed,
    cluster::feed::FeedLink,
    UnboundedReceiver<(Change, Origin)>,
) {
    let cluster = Cluster::join(ClusterConfig {
        nats_url: nats.url(),
        node_name: NodeName::parse(name).unwrap(),
        holder: Holder::new("host".into(), format!("/{name}")),
        lease_ttl: Duration::from_secs(30),
    })
    .await
    .unwrap();
    let feed = ChangeFeed::new();
    let (tx, rx) = unbounded_channel();
    feed.subscribe(Arc::new(Heard(tx)));
    let link = cluster::feed::carry(&cluster, &feed).await.unwrap();
    (cluster, feed, link, rx)
}

async fn next(rx: &mut UnboundedReceiver<(Change, Origin)>) -> (Change, Origin) {
    tokio::time::timeout(WAIT, rx.recv())
        .await
        .expect("nothing heard in time")
        .expect("the listener is gone")
}

#[tokio::test]
async fn a_change_made_on_one_node_is_applied_on_the_other() {
    let nats = NatsServer::start().await;
    let (a, feed_a, _link_a, mut heard_a) = node(&nats, "edge-a").await;
    let (b, _feed_b, _link_b, mut heard_b) = node(&nats, "edge-b").await;

    let revoked = Change::CertificateRevoked {
        tenant: "acme".into(),
        device: "d1".into(),
        serial: "0a".into(),
    };
    feed_a.publish(revoked.clone()).await;
    assert_eq!(next(&mut heard_a).await, (revoked.clone(), Origin::Here));
    assert_eq!(
        next(&mut heard_b).await,
        (revoked, Origin::Node("edge-a".into()))
    );
    // In order, and a's own change does not come back to it.
    let first = Change::PoliciesChanged {
        tenant: "acme".into(),
    };
    let second = Change::TopicRulesChanged {
        tenant: "acme".into(),
    };
    feed_a.publish(first.clone()).await;
    feed_a.publish(second.clone()).await;
    assert_eq!(next(&mut heard_b).await.0, first);
    assert_eq!(next(&mut heard_b).await.0, second);
    assert_eq!(next(&mut heard_a).await.0, first);
    assert_eq!(next(&mut heard_a).await.0, second);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(heard_a.try_recv().is_err(), "an echo reached the origin");
    a.leave().await;
    b.leave().await;
}

#[tokio::test]
async fn a_node_that_lost_nats_flushes_what_it_may_have_missed() {
    let mut nats = NatsServer::start().await;
    let (a, _feed_a, _link_a, mut heard_a) = node(&nats, "edge-a").await;
    nats.kill().await;
    nats.restart().await;
    // The client reconnects on its own (backing off up to a few seconds).
    assert_eq!(next(&mut heard_a).await, (Change::Missed, Origin::Here));
    a.leave().await;
}
