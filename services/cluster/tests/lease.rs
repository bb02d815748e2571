//! The name lease against a real `nats-server -js` (cluster::testing),
//! one per test on a free port.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use cluster::testing::NatsServer;
use cluster::{Cluster, ClusterConfig, Error, Holder, NodeName};

const POLL_BOUND: Duration = Duration::from_secs(60);

fn config(nats: &NatsServer, name: &str, host: &str, dir: &str, ttl: Duration) -> ClusterConfig {
    ClusterConfig {
        nats_url: nats.url(),
        node_name: NodeName::parse(name).unwrap(),
        holder: Holder::new(host.into(), dir.into()),
        lease_ttl: ttl,
    }
}

/// Node `name` joined, as `host` with data dir `dir`.
async fn join(nats: &NatsServer, name: &str, host: &str, dir: &str, ttl: Duration) -> Cluster {
    Cluster::join(config(nats, name, host, dir, ttl))
        .await
        .unwrap()
}

/// Node `name` joined and then gone without leaving (a crash): its lease is
/// no longer renewed, nor released.
async fn crashed(nats: &NatsServer, name: &str, host: &str, dir: &str, ttl: Duration) {
    drop(join(nats, name, host, dir, ttl).await);
}

/// What `attempt` gives once it gives something; fails the test as
/// `never` if that takes longer than [`POLL_BOUND`].
async fn eventually<T>(never: &str, mut attempt: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + POLL_BOUND;
    loop {
        if let Some(done) = attempt().await {
            return done;
        }
        assert!(tokio::time::Instant::now() < deadline, "{never}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn a_live_nodes_name_is_refused_and_free_after_a_clean_leave() {
    let nats = NatsServer::start().await;
    let ttl = Duration::from_secs(30);
    let first = join(&nats, "n1", "host-a", "/a", ttl).await;
    assert_eq!(first.node_name().as_str(), "n1");
    assert_eq!(first.readiness().check(), Ok(()));

    let refused = Cluster::join(config(&nats, "n1", "host-b", "/b", ttl))
        .await
        .unwrap_err();
    match &refused {
        Error::NameInUse { name, holder, .. } => {
            assert_eq!(name.as_str(), "n1");
            assert!(
                holder.contains("host-a") && holder.contains("/a"),
                "{holder}"
            );
        }
        other => panic!("expected NameInUse, got {other}"),
    }
    // Other names are free.
    let other = join(&nats, "n2", "host-b", "/b", ttl).await;

    first.leave().await;
    let again = join(&nats, "n1", "host-b", "/b2", ttl).await;
    again.leave().await;
    other.leave().await;
}

#[tokio::test]
async fn a_dead_nodes_name_is_free_after_the_ttl() {
    let nats = NatsServer::start().await;
    let ttl = Duration::from_secs(3);
    crashed(&nats, "n1", "host-a", "/a", ttl).await;
    let taken = eventually("never freed", async || {
        match Cluster::join(config(&nats, "n1", "host-b", "/b", ttl)).await {
            Ok(joined) => Some(joined),
            Err(Error::NameInUse { .. }) => None,
            Err(other) => panic!("{other}"),
        }
    })
    .await;
    // Renewed past several TTLs, the new holder keeps it.
    tokio::time::sleep(ttl * 2).await;
    assert_eq!(taken.readiness().check(), Ok(()));
    let refused = Cluster::join(config(&nats, "n1", "host-a", "/a", ttl)).await;
    assert!(matches!(refused, Err(Error::NameInUse { .. })));
    taken.leave().await;
}

#[tokio::test]
async fn a_restart_of_the_same_node_takes_its_stale_lease_over() {
    let nats = NatsServer::start().await;
    let ttl = Duration::from_secs(30);
    crashed(&nats, "n1", "host-a", "/data", ttl).await;
    // Same host and data dir (whose lock the caller holds): an earlier run.
    let restarted = join(&nats, "n1", "host-a", "/data", ttl).await;
    assert_eq!(restarted.readiness().check(), Ok(()));
    restarted.leave().await;
}

#[tokio::test]
async fn no_server_is_a_clear_error() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cfg = ClusterConfig {
        nats_url: format!("nats://user:hunter2@127.0.0.1:{port}"),
        node_name: NodeName::parse("n1").unwrap(),
        holder: Holder::new("h".into(), "/d".into()),
        lease_ttl: Duration::from_secs(5),
    };
    let err = Cluster::join(cfg).await.unwrap_err().to_string();
    assert!(err.contains("cannot connect to NATS"), "{err}");
    assert!(!err.contains("hunter2"), "{err}");
}

#[tokio::test]
async fn a_dead_nodes_name_is_claimed_by_one_survivor_and_its_restart_waits() {
    let nats = NatsServer::start().await;
    let ttl = Duration::from_secs(3);
    let survivor = join(&nats, "n2", "host-b", "/b", ttl).await;
    let other = join(&nats, "n3", "host-c", "/c", ttl).await;
    let dying = join(&nats, "n1", "host-a", "/a", ttl).await;
    let n1 = NodeName::parse("n1").unwrap();
    let leases = survivor.leases();
    assert!(leases.last_renewed(&n1).await.unwrap().is_some());
    assert!(
        leases.claim(&n1).await.unwrap().is_none(),
        "a live node's name cannot be claimed"
    );

    // Dropped without leaving: its lease lapses after the TTL.
    drop(dying);
    eventually("never lapsed", async || {
        let renewed = leases.last_renewed(&n1).await.unwrap();
        renewed.is_none().then_some(())
    })
    .await;
    let claim = leases
        .claim(&n1)
        .await
        .unwrap()
        .expect("a dead name is claimed");
    assert!(
        other.leases().claim(&n1).await.unwrap().is_none(),
        "one survivor only"
    );

    // The dead node starting again waits for the claim, then joins.
    let restart = tokio::spawn(Cluster::join(config(&nats, "n1", "host-a", "/a", ttl)));
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(!restart.is_finished(), "joined under a survivor's claim");
    claim.release().await;
    let back = tokio::time::timeout(POLL_BOUND, restart)
        .await
        .expect("joins once the claim is released")
        .unwrap()
        .unwrap();
    assert!(leases.last_renewed(&n1).await.unwrap().is_some());
    back.leave().await;
    other.leave().await;
    survivor.leave().await;
}
