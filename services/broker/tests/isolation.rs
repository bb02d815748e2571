//! Property: tenants and identities are walls. Over random tenants,
//! identities, topics and filters, driven through the broker's public API
//! (`run_listener` on 127.0.0.1:0) with real MQTT packets from our codec,
//! no message, retained message, will, status or session crosses a tenant
//! or an identity boundary — and nothing that should arrive is lost, so
//! the check cannot pass by delivering nothing.
//!
//! Every tenant has the same identities (`d0`..`d2`, plus `ctl`) and the
//! same client ids, so that every name collides across tenants. The ACL is
//! a device policy: publish `devices/${principal}/#` and `commands/#`,
//! subscribe `devices/#` and `commands/${principal}/#` — so commands to a
//! device reach only that device's sessions, whatever filter another
//! device asks for.
//!
//! A scenario:
//! 1. retained publishes from devices and retained status messages from
//!    the platform (`Broker::publish`, the path presence status takes);
//! 2. subscribers connect (3.1.1 or 5, persistent sessions) and subscribe
//!    to random filters; the ACL grants some;
//! 3. live publishes from devices (allowed or not) and status messages;
//! 4. publishers with wills drop their sockets: the wills go out;
//! 5. a sentinel per subscriber, then every subscriber's received set must
//!    equal the model's exactly;
//! 6. subscribers leave, messages are published while they are away, and
//!    they resume: session present, and exactly their own queued messages.
//!
//! No timing is asserted: every wait is for a message the model says must
//! come (with the harness's generous liveness timeout). Sentinels are
//! published last and a session's queue is FIFO, so once a subscriber has
//! its sentinels every earlier delivery to it has arrived too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::num::NonZeroU16;
use std::sync::Arc;

use broker::{Broker, Event, Identity, MemoryAuthenticator, MemoryEvents, TemplateAcl, TenantId};
use bytes::Bytes;
use common::{Raw, TestBroker};
use mqtt::{
    Connect, Disconnect, LastWill, Packet, Properties, ProtocolVersion, PubAck, Publish, QoS,
    ReasonCode, Subscribe, SubscriptionOptions, TopicFilter, TopicName,
};
use proptest::prelude::*;

const TENANTS: [&str; 3] = ["ten-0", "ten-1", "ten-2"];
const DEVICES: [&str; 3] = ["d0", "d1", "d2"];
/// Each tenant's control identity: it watches wills and publishes nothing.
const CTL: &str = "ctl";

fn tenant(i: usize) -> TenantId {
    TenantId::parse(TENANTS[i]).unwrap()
}

fn user(t: usize, principal: &str) -> String {
    format!("{principal}@{}", TENANTS[t])
}

fn broker(events: Arc<MemoryEvents>) -> Broker {
    let mut auth = MemoryAuthenticator::new();
    for t in 0..TENANTS.len() {
        for p in DEVICES.iter().copied().chain([CTL]) {
            auth = auth.with_user(
                user(t, p),
                "pw",
                Identity {
                    tenant: tenant(t),
                    principal: p.into(),
                    limits: None,
                },
            );
        }
    }
    let acl = TemplateAcl::new()
        .publish("devices/${principal}/#")
        .publish("commands/#")
        .subscribe("devices/#")
        .subscribe("commands/${principal}/#");
    Broker::builder(Arc::new(auth))
        .authorizer(Arc::new(acl))
        .events(events)
        .build()
}

// ---- the scenario ----------------------------------------------------

#[derive(Debug, Clone)]
struct Sub {
    tenant: usize,
    /// Index into DEVICES.
    device: usize,
    v5: bool,
    filters: Vec<String>,
}

#[derive(Debug, Clone)]
enum Pub {
    /// A device publishes over MQTT (QoS 1).
    Device {
        tenant: usize,
        device: usize,
        topic: String,
        retain: bool,
    },
    /// The platform publishes a status message into a tenant.
    Status {
        tenant: usize,
        device: usize,
        retain: bool,
    },
}

#[derive(Debug, Clone)]
struct Scenario {
    retained: Vec<Pub>,
    subs: Vec<Sub>,
    live: Vec<Pub>,
    /// (tenant, device) of publishers that leave a will.
    wills: Vec<(usize, usize)>,
    offline: Vec<Pub>,
}

fn topic() -> impl Strategy<Value = String> {
    (
        prop::sample::select(vec!["devices", "devices", "commands"]),
        prop::sample::select(vec!["d0", "d1", "d2"]),
        prop::sample::select(vec!["x", "y", "status"]),
        prop::sample::select(vec![1usize, 2, 2, 2]),
    )
        .prop_map(|(a, b, c, n)| [a, b, c][..=n].join("/"))
}

fn filter() -> impl Strategy<Value = String> {
    let level = |named: Vec<&'static str>| {
        let mut all = named;
        all.extend(["+", "#"]);
        prop::sample::select(all)
    };
    (
        level(vec!["devices", "devices", "devices", "commands"]),
        level(vec!["d0", "d1", "d2"]),
        level(vec!["x", "y", "status"]),
        0..3usize,
    )
        .prop_filter_map("valid filter", |(a, b, c, n)| {
            let f = [a, b, c][..=n].join("/");
            TopicFilter::parse(f.clone()).ok().map(|_| f)
        })
}

fn publication() -> impl Strategy<Value = Pub> {
    prop_oneof![
        3 => (0..3usize, 0..3usize, topic(), any::<bool>(), prop::bool::weighted(0.7)).prop_map(
            |(tenant, device, topic, retain, own)| {
                // Mostly under its own `devices/{d}/`, which it may publish to.
                let topic = match topic.split_once('/') {
                    Some(("devices", rest)) if own => {
                        let tail = rest.split_once('/').map_or("", |(_, t)| t);
                        let mine = format!("devices/{}", DEVICES[device]);
                        if tail.is_empty() { mine } else { format!("{mine}/{tail}") }
                    }
                    _ => topic,
                };
                Pub::Device { tenant, device, topic, retain }
            }
        ),
        1 => (0..3usize, 0..3usize, any::<bool>())
            .prop_map(|(tenant, device, retain)| Pub::Status { tenant, device, retain }),
    ]
}

fn scenario() -> impl Strategy<Value = Scenario> {
    let sub = (
        0..3usize,
        0..3usize,
        any::<bool>(),
        prop::collection::vec(filter(), 1..4),
    )
        .prop_map(|(tenant, device, v5, filters)| Sub {
            tenant,
            device,
            v5,
            filters,
        });
    (
        prop::collection::vec(publication(), 0..8),
        prop::collection::vec(sub, 2..8),
        prop::collection::vec(publication(), 8..30),
        prop::collection::vec((0..3usize, 0..3usize), 0..3),
        prop::collection::vec(publication(), 4..12),
    )
        .prop_map(|(retained, subs, live, wills, offline)| Scenario {
            retained,
            subs,
            live,
            wills,
            offline,
        })
}

// ---- the model -------------------------------------------------------

/// A message as a subscriber sees it; payloads are unique per publish.
type Msg = (String, String);

/// One message that was accepted into a tenant.
#[derive(Debug, Clone)]
struct Accepted {
    tenant: usize,
    topic: String,
    payload: String,
}

fn matches(filter: &str, topic: &str) -> bool {
    TopicFilter::parse(filter)
        .unwrap()
        .matches(&TopicName::parse(topic).unwrap())
}

/// The policy, written out independently of `TemplateAcl`: what the
/// broker must have granted.
fn may_subscribe(principal: &str, filter: &str) -> bool {
    let f = TopicFilter::parse(filter).unwrap();
    let own = TopicFilter::parse(format!("commands/{principal}/#")).unwrap();
    let devices = TopicFilter::parse("devices/#").unwrap();
    devices.covers(&f) || own.covers(&f)
}

fn may_publish(principal: &str, topic: &str) -> bool {
    topic.starts_with(&format!("devices/{principal}/"))
        || topic == format!("devices/{principal}")
        || topic.starts_with("commands/")
        || topic == "commands"
}

/// What `filters` in `tenant` must see of `messages`.
fn expected(tenant: usize, filters: &[String], messages: &[Accepted]) -> BTreeSet<Msg> {
    messages
        .iter()
        .filter(|m| m.tenant == tenant && filters.iter().any(|f| matches(f, &m.topic)))
        .map(|m| (m.topic.clone(), m.payload.clone()))
        .collect()
}

// ---- driving the broker ----------------------------------------------

struct Harness {
    tb: TestBroker,
    events: Arc<MemoryEvents>,
    next: u32,
    /// payload → tenant, for every message accepted anywhere.
    origin: BTreeMap<String, usize>,
    /// (tenant, client id, principal) of every CONNECT we made.
    logins: BTreeSet<(TenantId, String, String)>,
    /// One connected publisher per (tenant, device), and its last packet id.
    publishers: BTreeMap<(usize, usize), (Raw, u16)>,
}

/// A connected subscriber and what it has received so far.
struct Client {
    raw: Raw,
    sub: Sub,
    id: String,
    principal: String,
    granted: Vec<String>,
    got: BTreeSet<Msg>,
}

fn connect_packet(v5: bool, id: &str, username: &str) -> Connect {
    let version = if v5 {
        ProtocolVersion::V5
    } else {
        ProtocolVersion::V311
    };
    let mut c = Connect::new(version, id);
    c.keep_alive = 0;
    c.clean_start = false;
    c.username = Some(username.into());
    c.password = Some(Bytes::from_static(b"pw"));
    if v5 {
        c.properties.session_expiry_interval = Some(600);
    }
    c
}

fn version(v5: bool) -> ProtocolVersion {
    if v5 {
        ProtocolVersion::V5
    } else {
        ProtocolVersion::V311
    }
}

impl Harness {
    /// A broker with the scenario's identities and ACL, on 127.0.0.1:0.
    async fn start() -> Harness {
        let events = Arc::new(MemoryEvents::new());
        Harness {
            tb: TestBroker::with_broker(broker(events.clone())).await,
            events,
            next: 0,
            origin: BTreeMap::new(),
            logins: BTreeSet::new(),
            publishers: BTreeMap::new(),
        }
    }

    fn payload(&mut self) -> String {
        self.next += 1;
        format!("p{}", self.next)
    }

    async fn connect(&mut self, v5: bool, id: &str, username: &str) -> (Raw, mqtt::ConnAck) {
        let (principal, t) = username.split_once('@').unwrap();
        self.logins.insert((
            TenantId::parse(t).unwrap(),
            id.to_owned(),
            principal.to_owned(),
        ));
        Raw::connect(
            self.tb.port(),
            version(v5),
            connect_packet(v5, id, username),
        )
        .await
    }

    /// Publishes `p`; the message if the broker accepted it.
    async fn publish(&mut self, p: &Pub) -> Option<Accepted> {
        let payload = self.payload();
        match p {
            Pub::Device {
                tenant,
                device,
                topic,
                retain,
            } => {
                let principal = DEVICES[*device];
                if !self.publishers.contains_key(&(*tenant, *device)) {
                    let id = format!("pub-{principal}");
                    let (raw, ack) = self.connect(true, &id, &user(*tenant, principal)).await;
                    assert_eq!(ack.reason_code, ReasonCode::Success);
                    self.publishers.insert((*tenant, *device), (raw, 0));
                }
                let (raw, last) = self.publishers.get_mut(&(*tenant, *device)).unwrap();
                *last += 1;
                let mut publish =
                    Publish::new(TopicName::parse(topic.clone()).unwrap(), payload.clone());
                publish.qos = QoS::AtLeastOnce;
                publish.retain = *retain;
                publish.packet_id = NonZeroU16::new(*last);
                raw.send(publish).await;
                let accepted = match raw.recv().await {
                    Some(Packet::PubAck(a)) => !a.reason_code.is_error(),
                    other => panic!("expected PUBACK, got {other:?}"),
                };
                assert_eq!(
                    accepted,
                    may_publish(principal, topic),
                    "{principal}@{} publishing {topic}",
                    TENANTS[*tenant]
                );
                accepted.then(|| self.accepted(*tenant, topic.clone(), payload))
            }
            Pub::Status {
                tenant,
                device,
                retain,
            } => {
                let topic = format!("devices/{}/status", DEVICES[*device]);
                self.tb
                    .broker
                    .publish(
                        &self::tenant(*tenant),
                        TopicName::parse(topic.clone()).unwrap(),
                        Bytes::from(payload.clone()),
                        QoS::AtLeastOnce,
                        *retain,
                        Properties::default(),
                    )
                    .await
                    .unwrap();
                Some(self.accepted(*tenant, topic, payload))
            }
        }
    }

    fn accepted(&mut self, tenant: usize, topic: String, payload: String) -> Accepted {
        self.origin.insert(payload.clone(), tenant);
        Accepted {
            tenant,
            topic,
            payload,
        }
    }

    /// Connects `sub` as its own identity with client id `id` (ids collide
    /// across tenants on purpose) and subscribes its filters.
    async fn subscriber(&mut self, sub: &Sub, id: String, principal: &str) -> Client {
        let (raw, ack) = self
            .connect(sub.v5, &id, &user(sub.tenant, principal))
            .await;
        assert_eq!(ack.reason_code, ReasonCode::Success);
        assert!(
            !ack.session_present,
            "{id} in {} is new",
            TENANTS[sub.tenant]
        );
        let mut client = Client {
            raw,
            sub: sub.clone(),
            id,
            principal: principal.to_owned(),
            granted: Vec::new(),
            got: BTreeSet::new(),
        };
        // Its sentinel topic first, so that it is granted whatever else is.
        let mut filters = vec![sentinel_topic(principal, &client.id)];
        filters.extend(sub.filters.iter().cloned());
        for (n, f) in filters.into_iter().enumerate() {
            client
                .raw
                .send(Subscribe::new(
                    NonZeroU16::new(u16::try_from(n + 1).unwrap()).unwrap(),
                    TopicFilter::parse(f.clone()).unwrap(),
                    SubscriptionOptions::new(QoS::AtLeastOnce),
                ))
                .await;
            // Retained messages may come before the SUBACK.
            let granted = loop {
                match client.next().await {
                    Packet::SubAck(a) => break !a.reason_codes[0].is_error(),
                    Packet::Publish(p) => client.record(p).await,
                    other => panic!("expected SUBACK, got {other:?}"),
                }
            };
            assert_eq!(
                granted,
                may_subscribe(principal, &f),
                "{principal} asking {f}"
            );
            if granted {
                client.granted.push(f);
            }
        }
        client
    }
}

fn sentinel_topic(principal: &str, id: &str) -> String {
    format!("commands/{principal}/{id}")
}

impl Client {
    async fn next(&mut self) -> Packet {
        self.raw
            .recv()
            .await
            .expect("the broker closed the connection")
    }

    async fn record(&mut self, p: Publish) {
        if let Some(id) = p.packet_id {
            self.raw.send(PubAck::new(id)).await;
        }
        let topic = p
            .topic
            .expect("no topic aliases were offered")
            .into_string();
        let payload = String::from_utf8(p.payload.to_vec()).unwrap();
        self.got.insert((topic, payload));
    }

    /// Reads until every message of `sentinels` has arrived.
    async fn until(&mut self, sentinels: &BTreeSet<Msg>) {
        while !sentinels.is_subset(&self.got) {
            match self.next().await {
                Packet::Publish(p) => self.record(p).await,
                other => panic!("unexpected {other:?}"),
            }
        }
    }
}

/// Publishes one sentinel per subscriber (from the platform, into its
/// tenant), then waits for each subscriber to have every sentinel it must
/// see and checks what it received against `messages`.
async fn settle(h: &mut Harness, clients: &mut [Client], mut messages: Vec<Accepted>, round: &str) {
    let mut sentinels = Vec::new();
    for c in clients.iter() {
        let topic = sentinel_topic(&c.principal, &c.id);
        let payload = h.payload();
        h.tb.broker
            .publish(
                &tenant(c.sub.tenant),
                TopicName::parse(topic.clone()).unwrap(),
                Bytes::from(payload.clone()),
                QoS::AtLeastOnce,
                false,
                Properties::default(),
            )
            .await
            .unwrap();
        sentinels.push(h.accepted(c.sub.tenant, topic, payload));
    }
    messages.extend(sentinels.iter().cloned());
    for c in clients.iter_mut() {
        let must = expected(c.sub.tenant, &c.granted, &sentinels);
        c.until(&must).await;
        let want = expected(c.sub.tenant, &c.granted, &messages);
        let got = std::mem::take(&mut c.got);
        let leaked: Vec<_> = got.difference(&want).collect();
        let lost: Vec<_> = want.difference(&got).collect();
        assert!(
            leaked.is_empty() && lost.is_empty(),
            "{round}: {} ({}@{}, filters {:?}) leaked {leaked:?} lost {lost:?}",
            c.id,
            c.principal,
            TENANTS[c.sub.tenant],
            c.granted
        );
    }
}

async fn run(s: Scenario) {
    let mut h = Harness::start().await;

    // 1. Retained state before anyone subscribes: the last retained
    // message of each topic, per tenant.
    let mut retained: BTreeMap<(usize, String), Accepted> = BTreeMap::new();
    for p in &s.retained {
        if let Some(m) = h.publish(p).await {
            let retain = match p {
                Pub::Device { retain, .. } | Pub::Status { retain, .. } => *retain,
            };
            if retain {
                retained.insert((m.tenant, m.topic.clone()), m);
            }
        }
    }

    // 2. Subscribers, with client ids numbered per tenant so that every
    // tenant has a "c0"; a control client per tenant watching wills.
    let mut clients = Vec::new();
    let mut per_tenant = [0usize; 3];
    for sub in &s.subs {
        let id = format!("c{}", per_tenant[sub.tenant]);
        per_tenant[sub.tenant] += 1;
        clients.push(h.subscriber(sub, id, DEVICES[sub.device]).await);
    }
    let mut controls = Vec::new();
    for t in 0..TENANTS.len() {
        let sub = Sub {
            tenant: t,
            device: 0,
            v5: true,
            filters: vec!["devices/+/will/#".into()],
        };
        controls.push(h.subscriber(&sub, "ctl".into(), CTL).await);
    }
    let mut messages: Vec<Accepted> = retained.into_values().collect();

    // 3. Live traffic.
    for p in &s.live {
        if let Some(m) = h.publish(p).await {
            messages.push(m);
        }
    }

    // 4. Wills: publishers that connect with one and drop the socket.
    let mut wills = Vec::new();
    for (n, (t, d)) in s.wills.iter().enumerate() {
        let principal = DEVICES[*d];
        let topic = format!("devices/{principal}/will/{n}");
        let payload = h.payload();
        let id = format!("w{n}");
        h.logins
            .insert((tenant(*t), id.clone(), principal.to_owned()));
        let mut c = connect_packet(true, &id, &user(*t, principal));
        c.clean_start = true;
        c.properties.session_expiry_interval = None;
        c.will = Some(LastWill::new(
            TopicName::parse(topic.clone()).unwrap(),
            payload.clone(),
            QoS::AtLeastOnce,
            false,
        ));
        let (raw, ack) = Raw::connect(h.tb.port(), ProtocolVersion::V5, c).await;
        assert_eq!(ack.reason_code, ReasonCode::Success);
        drop(raw);
        wills.push(h.accepted(*t, topic, payload));
    }
    // Each tenant's control client sees exactly its own tenant's wills;
    // once it has them, they have been routed to everyone else too.
    for ctl in &mut controls {
        let must = expected(ctl.sub.tenant, &ctl.granted, &wills);
        ctl.until(&must).await;
    }
    messages.extend(wills);

    // 5. Everyone has exactly what the model says.
    let mut everyone: Vec<Client> = clients.into_iter().chain(controls).collect();
    settle(&mut h, &mut everyone, messages, "live").await;

    // 6. Leave, miss some messages, resume: each session is its own.
    for c in &mut everyone {
        c.raw.send(Disconnect::new(ReasonCode::Success)).await;
        assert!(c.raw.until_closed().await.is_empty());
    }
    let mut offline = Vec::new();
    for p in &s.offline {
        if let Some(m) = h.publish(p).await {
            offline.push(m);
        }
    }
    let mut resumed = Vec::new();
    for c in everyone {
        let (raw, ack) = h
            .connect(c.sub.v5, &c.id, &user(c.sub.tenant, &c.principal))
            .await;
        assert_eq!(ack.reason_code, ReasonCode::Success);
        assert!(ack.session_present, "{} resumes its session", c.id);
        resumed.push(c.reconnected(raw));
    }
    settle(&mut h, &mut resumed, offline, "resumed").await;

    // Events carry the tenant and identity they happened in.
    for e in h.events.snapshot() {
        match e {
            Event::Published {
                tenant, payload, ..
            } => {
                let p = String::from_utf8(payload.to_vec()).unwrap();
                let from = h.origin.get(&p).map(|t| self::tenant(*t));
                assert_eq!(from.as_ref(), Some(&tenant), "event for {p}");
            }
            Event::Connected {
                tenant,
                client_id,
                principal,
                ..
            } => {
                let login = (tenant, client_id, principal);
                assert!(h.logins.contains(&login), "connected event {login:?}");
            }
            _ => {}
        }
    }
    drop(resumed);
    h.publishers.clear();
    h.tb.stop().await;
}

/// Issue 13, item 4: `intruder` (another identity of the same tenant)
/// connects with the client id of `owner`'s session, first while the owner
/// is away with a command queued, then while it is connected. Either the
/// CONNECT is refused or it gets a session of its own: never the owner's
/// subscriptions or queue, never the owner kicked off.
async fn run_takeover(t: usize, owner: usize, intruder: &'static str, v5: bool) {
    let mut h = Harness::start().await;
    let sub = Sub {
        tenant: t,
        device: owner,
        v5,
        filters: vec![format!("commands/{}/#", DEVICES[owner])],
    };
    let id = "taken".to_owned();
    let mut o = h.subscriber(&sub, id.clone(), DEVICES[owner]).await;
    o.raw.send(Disconnect::new(ReasonCode::Success)).await;
    assert!(o.raw.until_closed().await.is_empty());
    // A command for the owner while it is away.
    let command = Pub::Device {
        tenant: t,
        device: (owner + 1) % DEVICES.len(),
        topic: format!("commands/{}/x", DEVICES[owner]),
        retain: false,
    };
    let command = h
        .publish(&command)
        .await
        .expect("commands/# may be published");

    for owner_online in [false, true] {
        let mut owner_conn = None;
        if owner_online {
            let (raw, ack) = h.connect(v5, &id, &user(t, DEVICES[owner])).await;
            assert_eq!(ack.reason_code, ReasonCode::Success);
            owner_conn = Some(o.reconnected(raw));
        }
        let (mut raw, ack) = h.connect(v5, &id, &user(t, intruder)).await;
        if ack.reason_code == ReasonCode::Success {
            assert!(
                !ack.session_present,
                "{intruder} resumed {}'s session",
                DEVICES[owner]
            );
            // Anything queued for the owner would come before the reply to
            // this ping.
            raw.send(Packet::PingReq).await;
            let got = raw.recv().await;
            assert_eq!(
                got,
                Some(Packet::PingResp),
                "{intruder} got the owner's messages"
            );
            raw.send(Disconnect::new(ReasonCode::Success)).await;
            raw.until_closed().await;
        }
        if let Some(mut c) = owner_conn {
            // Still connected: a ping is answered, nothing else arrives
            // but what it is owed.
            c.raw.send(Packet::PingReq).await;
            loop {
                match c.next().await {
                    Packet::PingResp => break,
                    Packet::Publish(p) => c.record(p).await,
                    other => panic!("owner kicked: {other:?}"),
                }
            }
            o = c;
        }
    }
    // The owner's session kept its subscription and its queue.
    if o.got.is_empty() {
        let (raw, ack) = h.connect(v5, &id, &user(t, DEVICES[owner])).await;
        assert!(ack.session_present);
        o = o.reconnected(raw);
    }
    settle(&mut h, std::slice::from_mut(&mut o), vec![command], "owner").await;
    h.tb.stop().await;
}

impl Client {
    /// The same subscriber on a new connection, nothing received yet.
    fn reconnected(&self, raw: Raw) -> Client {
        Client {
            raw,
            sub: self.sub.clone(),
            id: self.id.clone(),
            principal: self.principal.clone(),
            granted: self.granted.clone(),
            got: BTreeSet::new(),
        }
    }
}

proptest! {
    // Each case starts a broker and runs a few dozen connections on
    // loopback: a bounded count keeps this to seconds in the suite.
    #![proptest_config(ProptestConfig {
        cases: 24,
        // tests/ has no lib.rs for proptest to store regressions beside.
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn nothing_crosses_a_tenant_or_identity_boundary(s in scenario()) {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(run(s));
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 8,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn a_session_is_never_taken_over_by_another_identity(
        t in 0..3usize,
        owner in 0..3usize,
        other in 0..3usize,
        v5 in any::<bool>(),
    ) {
        let intruder = if other == owner { CTL } else { DEVICES[other] };
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(run_takeover(t, owner, intruder, v5));
    }
}
