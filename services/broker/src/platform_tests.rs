//! The platform namespace: tenant messages mounted under the tenant id for
//! platform subscribers, platform publishes routed into the tenant they
//! name, retained messages of every tenant, and isolation between tenants.

use std::sync::Arc;

use bytes::Bytes;
use mqtt::testing::topic;
use mqtt::{Properties, QoS, SubscriptionOptions, TopicFilter};
use proptest::prelude::*;
use tokio::time::Instant;

use super::*;
use crate::auth::AllowAnonymous;
use crate::session::Session;
use crate::{Broker, Config};

fn broker() -> Broker {
    Broker::builder(Arc::new(AllowAnonymous {
        tenant: TenantId::parse("dev").unwrap(),
    }))
    .config(Config::default())
    .build()
}

fn id(s: &str) -> TenantId {
    TenantId::parse(s).unwrap()
}

fn message(t: &str, retain: bool, origin: &str) -> Message {
    Message::new(
        topic(t),
        Bytes::from_static(b"p"),
        QoS::AtLeastOnce,
        retain,
        Properties::default(),
        Some(Arc::from(origin)),
        Instant::now(),
    )
}

/// A connected session in `ns` subscribed to `filter`.
fn subscriber(ns: &Tenant, client: &str, filter: &str, no_local: bool) -> Arc<Session> {
    let s = ns.attach_for_test(client, 100);
    let mut o = SubscriptionOptions::new(QoS::AtLeastOnce);
    o.no_local = no_local;
    ns.subscribe(&s, &TopicFilter::parse(filter).unwrap(), o, None);
    s
}

fn received(s: &Session) -> Vec<String> {
    let mut st = s.lock();
    let mut v: Vec<String> = std::iter::from_fn(|| st.pending.pop_front())
        .map(|d| d.message.topic.as_str().to_owned())
        .collect();
    v.sort();
    v
}

#[tokio::test]
async fn tenant_messages_reach_platform_subscribers_mounted_and_nobody_else() {
    let b = broker();
    let (a, bb) = (
        b.tenant(&id("tenant-a")).await.unwrap(),
        b.tenant(&id("tenant-b")).await.unwrap(),
    );
    let platform = b.tenant(&TenantId::platform()).await.unwrap();
    let watcher = subscriber(&platform, "backend", "+/devices/+/status", false);
    let a_all = subscriber(&a, "spy", "#", false);
    let b_all = subscriber(&bb, "spy", "#", false);

    router::publish(&b, &a, "d1", message("devices/d1/status", false, "d1"));
    router::publish(&b, &bb, "d2", message("devices/d2/status", false, "d2"));
    router::publish(&b, &a, "d1", message("devices/d1/other", false, "d1"));

    assert_eq!(
        received(&watcher),
        ["tenant-a/devices/d1/status", "tenant-b/devices/d2/status"]
    );
    assert_eq!(received(&a_all), ["devices/d1/other", "devices/d1/status"]);
    assert_eq!(received(&b_all), ["devices/d2/status"]);
}

#[tokio::test]
async fn platform_publishes_land_in_the_named_tenant_only() {
    let b = broker();
    let a = b.tenant(&id("tenant-a")).await.unwrap();
    let bb = b.tenant(&id("tenant-b")).await.unwrap();
    let platform = b.tenant(&TenantId::platform()).await.unwrap();
    let device = subscriber(&a, "d1", "commands/d1/#", false);
    let a_all = subscriber(&a, "spy", "#", false);
    let b_all = subscriber(&bb, "spy", "#", false);
    // The sender sees its own command mounted unless it asks for No Local;
    // a tenant client with the same client id is another client.
    let sender = subscriber(&platform, "backend", "+/commands/#", true);
    let other = subscriber(&platform, "audit", "tenant-a/#", false);
    let namesake = subscriber(&a, "backend", "commands/#", true);

    let (tenant, inner) = target(&b, &topic("tenant-a/commands/d1/reboot")).unwrap();
    assert_eq!(tenant.id, id("tenant-a"));
    let mut m = message(inner.as_str(), false, "backend");
    m.platform_origin = true;
    let n = router::publish(&b, &tenant, "backend", m);

    assert_eq!(n, 4);
    assert_eq!(received(&device), ["commands/d1/reboot"]);
    assert_eq!(received(&a_all), ["commands/d1/reboot"]);
    assert_eq!(received(&namesake), ["commands/d1/reboot"]);
    assert_eq!(received(&other), ["tenant-a/commands/d1/reboot"]);
    assert!(received(&sender).is_empty());
    assert!(received(&b_all).is_empty());
}

#[tokio::test]
async fn a_platform_topic_must_name_a_tenant_in_memory() {
    let b = broker();
    b.tenant(&id("tenant-a")).await.unwrap();
    assert!(target(&b, &topic("tenant-a/x")).is_ok());
    for (t, want) in [
        ("tenant-z/x", MountError::NoTenant("tenant-z".into())),
        (
            "Not_A_Tenant/x",
            MountError::NoTenant("Not_A_Tenant".into()),
        ),
        ("tenant-a", MountError::NoTopic("tenant-a".into())),
        ("tenant-a/", MountError::NoTopic("tenant-a".into())),
        ("$platform/x", MountError::NoTenant("$platform".into())),
    ] {
        assert_eq!(target(&b, &topic(t)).err(), Some(want), "{t}");
    }
    // Without a directory, a tenant nobody used is unknown.
    assert!(b.load_if_exists(&id("tenant-z")).await.is_none());
}

struct Directory(Vec<&'static str>);

#[async_trait]
impl TenantDirectory for Directory {
    async fn exists(&self, tenant: &TenantId) -> Result<bool, StoreError> {
        Ok(self.0.contains(&tenant.as_str()))
    }
    async fn list(&self) -> Result<Vec<TenantId>, StoreError> {
        Ok(self.0.iter().map(|t| id(t)).collect())
    }
}

#[tokio::test]
async fn retained_messages_of_every_tenant_come_mounted_and_capped() {
    let store = Arc::new(crate::MemoryRetainedStore::new());
    let b = Broker::builder(Arc::new(AllowAnonymous { tenant: id("dev") }))
        .retained_store(store)
        .tenant_directory(Arc::new(Directory(vec![
            "tenant-a", "tenant-b", "tenant-c",
        ])))
        .build();
    let a = b.tenant(&id("tenant-a")).await.unwrap();
    let bb = b.tenant(&id("tenant-b")).await.unwrap();
    router::publish(&b, &a, "d1", message("devices/d1/status", true, "d1"));
    router::publish(&b, &bb, "d2", message("devices/d2/status", true, "d2"));
    router::publish(&b, &bb, "d2", message("devices/d2/config", true, "d2"));
    router::publish(&b, &bb, "x", message("$SYS/hidden", true, "x"));
    // tenant-c exists but nobody used it: the directory brings it in.
    assert!(b.existing(&id("tenant-c")).is_none());
    load_for_filter(&b, &TopicFilter::parse("+/devices/#").unwrap()).await;
    assert!(b.existing(&id("tenant-c")).is_some());
    assert!(b.load_if_exists(&id("tenant-z")).await.is_none());

    let now = Instant::now();
    let found = |f: &str, cap| {
        let l = retained_for(&b, &TopicFilter::parse(f).unwrap(), now, cap);
        let mut v: Vec<String> = l
            .messages
            .iter()
            .map(|m| {
                assert!(m.retain);
                m.topic.as_str().to_owned()
            })
            .collect();
        v.sort();
        (v, l.truncated)
    };
    assert_eq!(
        found("+/devices/+/status", 100).0,
        ["tenant-a/devices/d1/status", "tenant-b/devices/d2/status"]
    );
    assert_eq!(
        found("#", 100).0,
        [
            "tenant-a/devices/d1/status",
            "tenant-b/devices/d2/config",
            "tenant-b/devices/d2/status"
        ]
    );
    assert_eq!(
        found("tenant-b/devices/d2/+", 100).0,
        ["tenant-b/devices/d2/config", "tenant-b/devices/d2/status"]
    );
    assert!(found("tenant-b/$SYS/#", 100).0.is_empty());
    assert!(found("+", 100).0.is_empty());
    assert!(found("tenant-z/#", 100).0.is_empty());
    let (capped, truncated) = found("#", 2);
    assert_eq!((capped.len(), truncated), (2, true));
    // Shared platform subscriptions mount the same way.
    assert_eq!(
        found("$share/g/+/devices/+/status", 100).0.len(),
        2,
        "the lookup itself ignores the share"
    );
}

#[tokio::test]
async fn without_platform_subscriptions_nothing_is_mounted() {
    let b = broker();
    let a = b.tenant(&id("tenant-a")).await.unwrap();
    let platform = b.tenant(&TenantId::platform()).await.unwrap();
    assert!(!platform.has_subscriptions());
    let m = Arc::new(message("devices/d1/status", false, "d1"));
    assert_eq!(fan_out(&b, &a, &m), 0);
    let s = subscriber(&platform, "backend", "#", false);
    assert!(platform.has_subscriptions());
    assert_eq!(fan_out(&b, &a, &m), 1);
    // A tenant's `$` topics stay in the tenant.
    assert_eq!(
        fan_out(&b, &a, &Arc::new(message("$SYS/x", false, "d1"))),
        0
    );
    assert!(platform.unsubscribe(&s, &TopicFilter::parse("#").unwrap()));
    assert!(!platform.has_subscriptions());
    assert_eq!(fan_out(&b, &a, &m), 0);
}

#[tokio::test]
async fn platform_shared_subscriptions_get_one_copy_per_group() {
    let b = broker();
    let a = b.tenant(&id("tenant-a")).await.unwrap();
    let platform = b.tenant(&TenantId::platform()).await.unwrap();
    let w1 = subscriber(&platform, "w1", "$share/g/+/devices/+/status", false);
    let w2 = subscriber(&platform, "w2", "$share/g/+/devices/+/status", false);
    for _ in 0..4 {
        router::publish(&b, &a, "d1", message("devices/d1/status", false, "d1"));
    }
    let (r1, r2) = (received(&w1), received(&w2));
    assert_eq!(r1.len() + r2.len(), 4);
    assert!(!r1.is_empty() && !r2.is_empty());
    assert!(
        r1.iter()
            .chain(&r2)
            .all(|t| t == "tenant-a/devices/d1/status")
    );
}

fn level() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("a".to_owned()),
        Just("b".to_owned()),
        Just("devices".to_owned()),
        Just("ü".to_owned()),
        Just(String::new()),
    ]
}

/// Levels of a valid (non-empty) topic.
fn topic_levels() -> impl Strategy<Value = Vec<String>> {
    prop::collection::vec(level(), 1..4).prop_filter("empty topic", |l| !l.join("/").is_empty())
}

fn filter_level() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => level(),
        1 => Just("+".to_owned()),
        1 => Just("t-one".to_owned()),
        1 => Just("t-two".to_owned()),
    ]
}

proptest! {
    /// Mounting then unmounting gives the tenant and topic back.
    #[test]
    fn mount_round_trips(tenant in "[a-z0-9-]{3,12}", levels in topic_levels()) {
        let t = id(&tenant);
        let inner = topic(&levels.join("/"));
        let mounted = mount(&t, &inner).unwrap();
        prop_assert_eq!(unmount(&mounted).unwrap(), (t, inner));
    }

    /// A platform subscriber gets a tenant message exactly when its filter
    /// matches the mounted topic (the naive model), and tenant subscribers
    /// of another tenant never do.
    #[test]
    fn platform_routing_agrees_with_the_matcher(
        filter_levels in prop::collection::vec(filter_level(), 0..5),
        hash in any::<bool>(),
        from_one in any::<bool>(),
        levels in topic_levels(),
    ) {
        let mut f = filter_levels.join("/");
        match (f.is_empty(), hash) {
            (true, _) => f.push('#'),
            (false, true) => f.push_str("/#"),
            (false, false) => {}
        }
        let filter = TopicFilter::parse(f).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        rt.block_on(async {
            let b = broker();
            let one = b.tenant(&id("t-one")).await.unwrap();
            let two = b.tenant(&id("t-two")).await.unwrap();
            let platform = b.tenant(&TenantId::platform()).await.unwrap();
            let w = subscriber(&platform, "w", filter.as_str(), false);
            let spy = subscriber(&two, "spy", "#", false);
            let src = if from_one { &one } else { &two };
            let t = topic(&levels.join("/"));
            router::publish(&b, src, "p", message(t.as_str(), false, "p"));
            let mounted = mount(&src.id, &t).unwrap();
            let want = filter.matches(&mounted);
            prop_assert_eq!(received(&w), if want { vec![mounted.as_str().to_owned()] } else { vec![] });
            prop_assert_eq!(received(&spy).len(), usize::from(!from_one && !t.is_system()));
            Ok(())
        })?;
    }
}
