//! Bad days, through the real binary (issue 13, "Faults", and the fairness
//! rule for the database pool):
//!
//! - the database unreachable for 30 s (Postgres behind a [`TcpProxy`]
//!   the test cuts; SQLite is a local file with no network to lose, so
//!   that test runs on Postgres only and says so when skipped): connected
//!   devices keep talking, REST answers 503 problem+json, the reported
//!   state write-behind overflows into a counted metric, and after the
//!   database is back, state, presence and retained messages catch up;
//! - a webhook receiver down (ten minutes in production, 20 s here against
//!   a retry schedule shortened by `--webhook-retry-schedule`), then back:
//!   every event delivered, in order per device;
//! - one tenant's REST flood and another tenant's REST calls: the second
//!   tenant's calls all succeed (latency printed, not asserted).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use fleetmq_tests::hooks::HookReceiver;
use fleetmq_tests::proxy::TcpProxy;
use fleetmq_tests::{Api, Server, TestDb, fleetmq, platform_server};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, Publish, QoS};
use serde_json::{Value, json};
use tokio::sync::mpsc;

const WAIT: Duration = Duration::from_secs(120);

/// A connected MQTT 3.1.1 client (rumqttc) and the messages it receives.
struct Client {
    client: AsyncClient,
    received: mpsc::UnboundedReceiver<Publish>,
}

impl Client {
    async fn connect(server: &Server, id: &str, user: &str, password: &str) -> Client {
        let mut opts = MqttOptions::new(id, "127.0.0.1", server.mqtt().port());
        opts.set_credentials(user, password);
        opts.set_keep_alive(Duration::from_secs(60));
        opts.set_max_packet_size(1 << 20, 1 << 20);
        let (client, mut el) = AsyncClient::new(opts, 20_000);
        let (tx, received) = mpsc::unbounded_channel();
        let (connected, is_connected) = tokio::sync::oneshot::channel();
        let mut connected = Some(connected);
        let id = id.to_owned();
        tokio::spawn(async move {
            loop {
                match el.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        if let Some(tx) = connected.take() {
                            let _ = tx.send(());
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let _ = tx.send(p);
                    }
                    Ok(_) => {}
                    Err(e) => {
                        eprintln!("{id}: connection ended: {e}");
                        return;
                    }
                }
            }
        });
        tokio::time::timeout(WAIT, is_connected)
            .await
            .expect("CONNACK in time")
            .expect("connected");
        Client { client, received }
    }

    async fn subscribe(&mut self, filter: &str) {
        self.client
            .subscribe(filter, QoS::AtLeastOnce)
            .await
            .unwrap();
        // rumqttc has no SUBACK future: one round trip through the broker
        // (a message to ourselves would need a publish right) is enough
        // once the next message arrives; callers wait for messages anyway.
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    /// The next message, within `within`.
    async fn next(&mut self, within: Duration) -> Option<Publish> {
        tokio::time::timeout(within, self.received.recv())
            .await
            .ok()
            .flatten()
    }
}

/// `url` with its host and port replaced by `proxy`.
fn through_proxy(url: &str, proxy: &TcpProxy) -> String {
    let (scheme, rest) = url.split_once("://").expect("a URL");
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let (userinfo, _) = authority
        .rsplit_once('@')
        .map_or(("", authority), |(u, h)| (u, h));
    let at = if userinfo.is_empty() { "" } else { "@" };
    format!("{scheme}://{userinfo}{at}{}/{path}", proxy.addr())
}

/// The `host:port` a database URL names, resolved.
async fn database_addr(url: &str) -> SocketAddr {
    let rest = url.split_once("://").expect("a URL").1;
    let authority = rest.split('/').next().unwrap_or(rest);
    let host_port = authority.rsplit('@').next().unwrap_or(authority);
    let host_port = if host_port.contains(':') {
        host_port.to_owned()
    } else {
        format!("{host_port}:5432")
    };
    tokio::net::lookup_host(host_port)
        .await
        .unwrap()
        .next()
        .expect("the database host resolves")
}

/// The sum of a counter's series whose line contains every `labels` part.
fn counter(metrics: &str, name: &str, labels: &[&str]) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(name) && labels.iter().all(|part| l.contains(part)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let at = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(at).copied().unwrap_or_default()
}

/// A tenant `acme` with a backend credential that may subscribe to
/// everything, and devices `ids` with passwords.
async fn acme(api: &Api, ids: &[&str]) -> ((String, String), Vec<(String, String)>) {
    api.post("/v1/tenants", json!({"id": "acme", "name": "Acme"}))
        .await;
    let backend = api
        .post(
            "/v1/tenants/acme/service-credentials",
            json!({"name": "watcher", "subscribe": ["devices/#"]}),
        )
        .await;
    let backend = (
        backend["username"].as_str().unwrap().to_owned(),
        backend["password"].as_str().unwrap().to_owned(),
    );
    let mut devices = Vec::new();
    for id in ids {
        devices.push(api.password_device("acme", id).await);
    }
    (backend, devices)
}

/// Polls `done` on `path` until it holds, for up to [`WAIT`], whatever the
/// status meanwhile (the database may still be coming back); on failure,
/// says what the server logged.
async fn eventually(
    server: &mut Server,
    api: &Api,
    path: &str,
    what: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let (status, body) = api.call(reqwest::Method::GET, path, None).await;
        if status == 200 && done(&body) {
            return body;
        }
        if Instant::now() > deadline {
            let log: Vec<String> = server
                .drain_stderr()
                .into_iter()
                .filter(|l| !l.contains("finished processing request"))
                .collect();
            let tail = &log[log.len().saturating_sub(60)..];
            panic!(
                "{what} never seen at {path}: {status} {body}\nserver log:\n{}",
                tail.join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

const OUTAGE: Duration = Duration::from_secs(30);
/// State reports sent during the outage: more than the 10,000 of one
/// tenant the reported-state queue holds, so that it overflows.
const OUTAGE_REPORTS: usize = 12_000;

#[tokio::test]
async fn database_unreachable_for_30_s() {
    let Some(db) = TestDb::postgres_unmigrated().await else {
        eprintln!(
            "skipped: the database outage test needs Postgres (TEST_DATABASE_URL); \
             SQLite is a local file with no network to lose"
        );
        return;
    };
    let proxy = TcpProxy::start(database_addr(db.url()).await).await;
    let url = through_proxy(db.url(), &proxy);
    let db_args = ["--database-url", url.as_str()];
    let cwd = tempfile::tempdir().unwrap();
    let (mut server, token) = platform_server(cwd.path(), &db_args, &[]).await;
    let api = Api::new(&server, token);
    let ((bu, bp), devices) = acme(&api, &["d1", "d2"]).await;
    let mut watcher = Client::connect(&server, "watcher", &bu, &bp).await;
    watcher.subscribe("devices/+/telemetry").await;
    let d1 = Client::connect(&server, "d1", &devices[0].0, &devices[0].1).await;
    let d2 = Client::connect(&server, "d2", &devices[1].0, &devices[1].1).await;
    d1.client
        .publish(
            "devices/d1/state/reported",
            QoS::AtLeastOnce,
            false,
            r#"{"phase":"before"}"#,
        )
        .await
        .unwrap();
    let state = "/v1/tenants/acme/devices/d1/state";
    eventually(&mut server, &api, state, "the first report", |s| {
        s["reported"]["phase"] == "before"
    })
    .await;
    eventually(
        &mut server,
        &api,
        "/v1/tenants/acme/devices/d2/state",
        "d2 online",
        |s| s["status"] == "online",
    )
    .await;

    proxy.cut();
    let cut_at = Instant::now();
    // A retained QoS 0 change and the state reports, all while the
    // database is away: written behind, after it comes back.
    d1.client
        .publish("devices/d1/config", QoS::AtMostOnce, true, "set-in-outage")
        .await
        .unwrap();
    d1.client
        .publish(
            "devices/d1/state/reported",
            QoS::AtMostOnce,
            false,
            r#"{"phase":"outage"}"#,
        )
        .await
        .unwrap();
    for n in 0..OUTAGE_REPORTS {
        d1.client
            .publish(
                "devices/d1/state/reported",
                QoS::AtMostOnce,
                false,
                format!(r#"{{"n":{n}}}"#),
            )
            .await
            .unwrap();
    }
    // Devices keep talking, REST says 503 problem+json, every second.
    let mut rest_latencies = Vec::new();
    let mut statuses = BTreeMap::new();
    let mut talked = 0;
    let mut d2 = Some(d2);
    while cut_at.elapsed() < OUTAGE {
        let (status, content_type, body) = {
            let started = Instant::now();
            let got = api
                .call_typed(reqwest::Method::GET, "/v1/tenants/acme/devices", None)
                .await;
            rest_latencies.push(started.elapsed());
            got
        };
        *statuses.entry(status).or_insert(0) += 1;
        assert_eq!(status, 503, "REST during the outage: {body}");
        assert_eq!(content_type, "application/problem+json", "{body}");
        assert_eq!(body["status"], 503, "{body}");
        for (client, device) in [(Some(&d1), "d1"), (d2.as_ref(), "d2")] {
            let Some(client) = client else { continue };
            let payload = format!("{device}-{talked}");
            client
                .client
                .publish(
                    format!("devices/{device}/telemetry"),
                    QoS::AtLeastOnce,
                    false,
                    payload.clone(),
                )
                .await
                .unwrap();
            let got = watcher
                .next(Duration::from_secs(20))
                .await
                .unwrap_or_else(|| panic!("{payload} never reached the backend"));
            assert_eq!(got.payload, payload.as_bytes(), "{}", got.topic);
        }
        talked += 1;
        // Halfway: d2 leaves; its presence is written when the database
        // is back.
        if cut_at.elapsed() > OUTAGE / 2
            && let Some(d2) = d2.take()
        {
            d2.client.disconnect().await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    proxy.restore();
    let restored_at = Instant::now();

    // Catching up: presence; the overflow counted; every report not
    // counted as dropped applied, in order (the reported version counts
    // them); then a report sent now.
    eventually(
        &mut server,
        &api,
        "/v1/tenants/acme/devices/d2/state",
        "d2 offline",
        |s| s["status"] == "offline",
    )
    .await;
    let presence_back = restored_at.elapsed();
    // Every report of the flood is either applied (the reported version
    // counts them) or counted as dropped by the reported-state write-behind
    // (its own event sink on the broker); the counter and the version are
    // read together until they add up, as the sink may lag the broker.
    let deadline = Instant::now() + WAIT;
    let (drained, dropped) = loop {
        let metrics = server.get("/metrics").await.unwrap().text().await.unwrap();
        let dropped = counter(
            &metrics,
            "fleetmq_write_behind_dropped_total",
            &["buffer=\"reported\"", "tenant=\"acme\""],
        ) as i64;
        let (status, body) = api.call(reqwest::Method::GET, state, None).await;
        // "before", "outage", and the flood's reports less those dropped.
        let applied = 2 + OUTAGE_REPORTS as i64 - dropped;
        if status == 200 && body["versions"]["reported"].as_i64() == Some(applied) {
            break (body, dropped);
        }
        assert!(
            Instant::now() < deadline,
            "reports applied ({}) and dropped ({dropped}) never add up to the {} sent",
            body["versions"]["reported"],
            2 + OUTAGE_REPORTS
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        dropped > 0,
        "the overflow of the outage's reports is not counted"
    );
    assert_eq!(drained["reported"]["phase"], "outage", "{drained}");
    let state_back = restored_at.elapsed();
    d1.client
        .publish(
            "devices/d1/state/reported",
            QoS::AtLeastOnce,
            false,
            r#"{"phase":"after"}"#,
        )
        .await
        .unwrap();
    let after = eventually(&mut server, &api, state, "the report after", |s| {
        s["reported"]["phase"] == "after"
    })
    .await;
    assert_eq!(after["status"], "online", "{after}");
    rest_latencies.sort();
    println!(
        "database outage [postgres]: {OUTAGE:?} cut; {talked} rounds of device-to-backend messages all delivered; \
         REST {statuses:?} in p50 {:?}, max {:?}; {OUTAGE_REPORTS} state reports sent in the outage, {dropped} dropped and counted, \
         the other {} applied in order (last n = {}); presence caught up {presence_back:?} and state {state_back:?} after the database came back",
        percentile(&rest_latencies, 0.5),
        rest_latencies.last().copied().unwrap_or_default(),
        OUTAGE_REPORTS as i64 - dropped,
        drained["reported"]["n"],
    );
    let _ = d1.client.disconnect().await;
    let _ = watcher.client.disconnect().await;
    server.stop().await.unwrap();

    // The retained change made during the outage is in the database: a
    // fresh server on it delivers it.
    let mut cmd = fleetmq(cwd.path());
    cmd.args(["serve", "--http-listen", "127.0.0.1:0"])
        .args(db_args);
    let server = Server::start(cmd).await.unwrap();
    let mut watcher = Client::connect(&server, "watcher", &bu, &bp).await;
    watcher.subscribe("devices/d1/config").await;
    let retained = watcher.next(WAIT).await.expect("the retained message");
    assert_eq!(retained.payload, "set-in-outage".as_bytes());
    assert!(retained.retain);
    let _ = watcher.client.disconnect().await;
    server.stop().await.unwrap();
    drop(proxy);
    db.cleanup().await;
}

/// Steps summing to a minute: the production schedule (about 28 h over 8
/// attempts) outlasts a ten-minute outage, and so does this one a 20 s
/// outage.
const SCHEDULE: &str = "0s,1s,2s,4s,8s,16s,32s";
const RECEIVER_DOWN: Duration = Duration::from_secs(20);
/// Each device's oldest report is retried about five times in the 20 s
/// (later ones wait behind it, in order): twelve devices make more failed
/// attempts than `--webhook-disable-after-failures`' 50, which must not
/// disable the endpoint while every delivery still has retries left.
const HOOK_DEVICES: [&str; 12] = [
    "h1", "h2", "h3", "h4", "h5", "h6", "h7", "h8", "h9", "h10", "h11", "h12",
];

/// Report `{"n": n}` from each of [`HOOK_DEVICES`].
async fn report_round(devices: &[Client], n: usize) {
    for (id, device) in HOOK_DEVICES.iter().zip(devices) {
        device
            .client
            .publish(
                format!("devices/{id}/state/reported"),
                QoS::AtLeastOnce,
                false,
                format!(r#"{{"n":{n}}}"#),
            )
            .await
            .unwrap();
    }
}

async fn webhook_receiver_down_then_back(db_args: &[&str]) {
    let cwd = tempfile::tempdir().unwrap();
    let (server, token) = platform_server(
        cwd.path(),
        db_args,
        &[
            "--webhook-allow-private",
            "--webhook-retry-schedule",
            SCHEDULE,
        ],
    )
    .await;
    let api = Api::new(&server, token);
    let (_, creds) = acme(&api, &HOOK_DEVICES).await;
    let mut hook = HookReceiver::start().await;
    let endpoint = api
        .post(
            "/v1/tenants/acme/webhooks",
            json!({"url": hook.url(), "events": ["state.reported"]}),
        )
        .await;
    let mut devices = Vec::new();
    for (id, (user, password)) in HOOK_DEVICES.iter().zip(&creds) {
        devices.push(Client::connect(&server, id, user, password).await);
    }
    let mut sent = 0;
    // Before, during and after the outage: a report per device a second.
    for _ in 0..3 {
        report_round(&devices, sent).await;
        sent += 1;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    hook.down().await;
    let down_at = Instant::now();
    while down_at.elapsed() < RECEIVER_DOWN {
        report_round(&devices, sent).await;
        sent += 1;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    hook.up().await;
    let up_at = Instant::now();
    for _ in 0..3 {
        report_round(&devices, sent).await;
        sent += 1;
    }

    // Every report of every device, in the order it was sent (at least
    // once: a repeat, if any, comes right after the original).
    let per_device = |events: &[(String, Value)]| {
        let mut by_device: BTreeMap<String, Vec<i64>> = BTreeMap::new();
        for (kind, data) in events {
            if kind != "state.reported" {
                continue;
            }
            let seen = by_device
                .entry(data["device_id"].as_str().unwrap_or("").to_owned())
                .or_default();
            let n = data["reported"]["n"].as_i64().unwrap_or(-1);
            if seen.last() != Some(&n) {
                seen.push(n);
            }
        }
        by_device
    };
    let deadline = Instant::now() + WAIT;
    let delivered = loop {
        let got = per_device(&hook.events());
        let complete = HOOK_DEVICES
            .iter()
            .all(|d| got.get(*d).is_some_and(|seen| seen.len() >= sent));
        if complete || Instant::now() > deadline {
            break got;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let all_in = up_at.elapsed();
    let expected: Vec<i64> = (0..i64::try_from(sent).unwrap()).collect();
    for id in HOOK_DEVICES {
        assert_eq!(
            delivered.get(id),
            Some(&expected),
            "{id}'s reports, in the order the receiver got them"
        );
    }
    let webhook = api
        .get(&format!(
            "/v1/tenants/acme/webhooks/{}",
            endpoint["id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(webhook["enabled"], true, "{webhook}");
    let requests = hook.received().len();
    println!(
        "webhook receiver down [{}]: {RECEIVER_DOWN:?} down on schedule {SCHEDULE}; {} devices x {sent} reports all delivered \
         in order per device, {requests} requests received, the last {all_in:?} after the receiver came back",
        if db_args.is_empty() {
            "sqlite"
        } else {
            "postgres"
        },
        HOOK_DEVICES.len(),
    );
    for device in devices {
        let _ = device.client.disconnect().await;
    }
    let mut server = server;
    server.signal("INT").await.unwrap();
    let stopped = server.wait(Duration::from_secs(60)).await.unwrap();
    assert!(stopped.success(), "{stopped}");
}

/// Tenant A's concurrent REST callers (rate limit off, as an operator may
/// set it) against the database pool; tenant B's calls meanwhile.
const FLOOD_CALLERS: usize = 64;
const B_CALLS: usize = 100;

async fn one_tenants_rest_flood_leaves_the_pool_to_another(db_args: &[&str]) {
    let cwd = tempfile::tempdir().unwrap();
    let (server, token) = platform_server(cwd.path(), db_args, &["--rate-limit", "off"]).await;
    let api = Api::new(&server, token);
    for tenant in ["acme", "beta"] {
        api.post("/v1/tenants", json!({"id": tenant, "name": tenant}))
            .await;
    }
    // Enough devices that a page of them is real work for the database.
    let lines: String = (0..500)
        .map(|n| format!("{{\"id\":\"dev-{n}\"}}\n"))
        .collect();
    let (status, body) = {
        let res = api
            .http
            .post(format!("{}/v1/tenants/acme/devices:import", api.base))
            .bearer_auth(&api.token)
            .header("content-type", "application/x-ndjson")
            .body(lines)
            .send()
            .await
            .unwrap();
        (res.status().as_u16(), res.text().await.unwrap())
    };
    assert!((200..300).contains(&status), "import: {status} {body}");
    api.post("/v1/tenants/beta/devices", json!({"id": "b-1"}))
        .await;

    let baseline = b_calls(&api, 20).await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut flood = tokio::task::JoinSet::new();
    for _ in 0..FLOOD_CALLERS {
        let api = api.with_token(api.token.clone());
        let stop = stop.clone();
        flood.spawn(async move {
            let mut statuses: BTreeMap<u16, u64> = BTreeMap::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let (status, _) = api
                    .call(
                        reqwest::Method::GET,
                        "/v1/tenants/acme/devices?limit=500",
                        None,
                    )
                    .await;
                *statuses.entry(status).or_default() += 1;
            }
            statuses
        });
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let under_flood = b_calls(&api, B_CALLS).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut a_statuses: BTreeMap<u16, u64> = BTreeMap::new();
    while let Some(done) = flood.join_next().await {
        for (status, n) in done.unwrap() {
            *a_statuses.entry(status).or_default() += n;
        }
    }
    let metrics = server.get("/metrics").await.unwrap().text().await.unwrap();
    let waits = counter(&metrics, "http_tenant_concurrency_waits_total", &[]);
    println!(
        "REST pool fairness [{}]: A's {FLOOD_CALLERS} callers got {a_statuses:?} ({waits} waits for A's turn); \
         B alone p50 {:?} max {:?}; B under A's flood: {B_CALLS} calls all 200, p50 {:?} p99 {:?} max {:?}",
        if db_args.is_empty() {
            "sqlite"
        } else {
            "postgres"
        },
        percentile(&baseline, 0.5),
        baseline.last().copied().unwrap_or_default(),
        percentile(&under_flood, 0.5),
        percentile(&under_flood, 0.99),
        under_flood.last().copied().unwrap_or_default(),
    );
    server.stop().await.unwrap();
}

/// `n` of tenant B's calls, one after another, each asserted to succeed;
/// their latencies, sorted.
async fn b_calls(api: &Api, n: usize) -> Vec<Duration> {
    let mut latencies = Vec::with_capacity(n);
    for _ in 0..n {
        let started = Instant::now();
        let (status, body) = api
            .call(reqwest::Method::GET, "/v1/tenants/beta/devices/b-1", None)
            .await;
        latencies.push(started.elapsed());
        assert_eq!(status, 200, "tenant B's call under A's flood: {body}");
    }
    latencies.sort();
    latencies
}

fleetmq_tests::binary_backend_tests!(
    webhook_receiver_down_then_back,
    one_tenants_rest_flood_leaves_the_pool_to_another,
);
