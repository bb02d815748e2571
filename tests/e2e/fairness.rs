//! Fairness between tenants through the real binary (issue 13, item 15
//! and the fairness rule): tenant A's device floods state reports at full
//! speed while tenant B's device reports at a steady pace; B's SSE stream
//! and B's webhook receive every one of B's events, in order, with no
//! `lagged` frame and no `webhook.events_dropped`, whatever A loses. The
//! shared resources on the way: the platform event queue, the event hub,
//! the webhook outbox writer, the fan-out, the delivery slots and the
//! database pool. B's latency and A's losses are printed, not asserted.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use fleetmq_tests::hooks::HookReceiver;
use fleetmq_tests::sse::{SseFrame, SseStream};
use fleetmq_tests::{Api, Server, platform_server};
use serde_json::json;

/// A's flood: this many QoS 0 state reports, as fast as rumqttc sends.
const FLOOD: usize = 20_000;
/// B's reports, one every [`B_PACE`].
const B_REPORTS: usize = 111;
const B_PACE: Duration = Duration::from_millis(20);
const WAIT: Duration = Duration::from_secs(120);

/// A connected MQTT 3.1.1 client (rumqttc) with a password.
async fn device(
    server: &Server,
    id: &str,
    (user, password): &(String, String),
) -> rumqttc::AsyncClient {
    let mut opts = rumqttc::MqttOptions::new(id, "127.0.0.1", server.mqtt().port());
    opts.set_credentials(user, password);
    opts.set_keep_alive(Duration::from_secs(60));
    let (client, mut el) = rumqttc::AsyncClient::new(opts, 1000);
    let (connected, is_connected) = tokio::sync::oneshot::channel();
    let mut connected = Some(connected);
    tokio::spawn(async move {
        loop {
            match el.poll().await {
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(_))) => {
                    if let Some(tx) = connected.take() {
                        let _ = tx.send(());
                    }
                }
                Ok(_) => {}
                Err(_) => return,
            }
        }
    });
    tokio::time::timeout(WAIT, is_connected)
        .await
        .unwrap()
        .unwrap();
    client
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let at = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(at).copied().unwrap_or_default()
}

fn state_numbers(frames: &[SseFrame]) -> Vec<i64> {
    frames
        .iter()
        .filter(|f| f.event == "state.reported")
        .filter_map(|f| f.data["data"]["reported"]["n"].as_i64())
        .collect()
}

async fn a_flood_in_one_tenant_costs_another_nothing(db_args: &[&str]) {
    let cwd = tempfile::tempdir().unwrap();
    let (server, token) = platform_server(cwd.path(), db_args, &["--webhook-allow-private"]).await;
    let api = Api::new(&server, token.clone());
    for tenant in ["acme", "beta"] {
        api.post("/v1/tenants", json!({"id": tenant, "name": tenant}))
            .await;
    }
    let a_creds = api.password_device("acme", "a1").await;
    let b_creds = api.password_device("beta", "b1").await;
    let hook_a = HookReceiver::start().await;
    let hook_b = HookReceiver::start().await;
    let events = ["state.reported", "webhook.events_dropped"];
    api.post(
        "/v1/tenants/acme/webhooks",
        json!({"url": hook_a.url(), "events": events}),
    )
    .await;
    api.post(
        "/v1/tenants/beta/webhooks",
        json!({"url": hook_b.url(), "events": events}),
    )
    .await;
    let stream = "/events/stream?type=state.reported";
    let mut sse_a = SseStream::open(&api.base, &token, &format!("/v1/tenants/acme{stream}")).await;
    let mut sse_b = SseStream::open(&api.base, &token, &format!("/v1/tenants/beta{stream}")).await;

    let a = device(&server, "a1", &a_creds).await;
    let b = device(&server, "b1", &b_creds).await;
    let flood = tokio::spawn(async move {
        let started = Instant::now();
        for n in 0..FLOOD {
            let payload = format!(r#"{{"n":{n},"pad":"flood"}}"#);
            a.publish(
                "devices/a1/state/reported",
                rumqttc::QoS::AtMostOnce,
                false,
                payload,
            )
            .await
            .unwrap();
        }
        (a, started.elapsed())
    });
    let mut sent = Vec::with_capacity(B_REPORTS);
    for n in 0..B_REPORTS {
        sent.push(Instant::now());
        b.publish(
            "devices/b1/state/reported",
            rumqttc::QoS::AtLeastOnce,
            false,
            format!(r#"{{"n":{n}}}"#),
        )
        .await
        .unwrap();
        tokio::time::sleep(B_PACE).await;
    }
    let (a, flood_took) = flood.await.unwrap();

    // B's stream: every report, in order, nothing missed.
    let frames = sse_b
        .collect(WAIT, |got| state_numbers(got).len() >= B_REPORTS)
        .await;
    let lagged: Vec<_> = frames.iter().filter(|f| f.event == "lagged").collect();
    assert!(lagged.is_empty(), "B's stream lagged: {lagged:?}");
    assert_eq!(
        state_numbers(&frames),
        (0..B_REPORTS as i64).collect::<Vec<_>>(),
        "B's SSE stream lost or reordered reports"
    );
    let mut latencies: Vec<Duration> = frames
        .iter()
        .filter(|f| f.event == "state.reported")
        .filter_map(|f| {
            let n = usize::try_from(f.data["data"]["reported"]["n"].as_i64()?).ok()?;
            Some(f.arrived.saturating_duration_since(*sent.get(n)?))
        })
        .collect();
    latencies.sort();

    // B's webhook: every report, in sequence order, no drop notice.
    let deadline = Instant::now() + WAIT;
    let b_started = Instant::now();
    let b_events = loop {
        let got = hook_b.events();
        let reports = got.iter().filter(|(t, _)| t == "state.reported").count();
        if reports >= B_REPORTS || Instant::now() > deadline {
            break got;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let b_webhook_wait = b_started.elapsed();
    assert!(
        b_events.iter().all(|(t, _)| t != "webhook.events_dropped"),
        "B was told of drops: {b_events:?}"
    );
    let mut b_seqs: Vec<(i64, i64)> = b_events
        .iter()
        .filter(|(t, _)| t == "state.reported")
        .map(|(_, d)| {
            (
                d["seq"].as_i64().unwrap(),
                d["reported"]["n"].as_i64().unwrap(),
            )
        })
        .collect();
    b_seqs.sort();
    // At least once: a delivery whose attempt could not be recorded in
    // time is sent again.
    b_seqs.dedup();
    let b_numbers: Vec<i64> = b_seqs.iter().map(|(_, n)| *n).collect();
    assert_eq!(
        b_numbers,
        (0..B_REPORTS as i64).collect::<Vec<_>>(),
        "B's webhook lost reports"
    );

    // A's side, for the report: what reached its stream, what it missed.
    let a_frames = sse_a.collect(Duration::from_secs(5), |_| false).await;
    let a_missed: u64 = a_frames
        .iter()
        .filter(|f| f.event == "lagged")
        .filter_map(|f| f.data["missed"].as_u64())
        .sum();
    let metrics = server.get("/metrics").await.unwrap().text().await.unwrap();
    let dropped: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("fleetmq_platform_events_dropped_total"))
        .collect();
    println!(
        "fairness [{}]: A sent {FLOOD} reports in {flood_took:?} ({:.0}/s); A's SSE got {} and was told of {a_missed} missed; platform queue drops {dropped:?}; \
         B's {B_REPORTS} reports all on SSE (latency p50 {:?}, p99 {:?}, max {:?}) and on its webhook ({:?} after B's last report)",
        if db_args.is_empty() {
            "sqlite"
        } else {
            "postgres"
        },
        FLOOD as f64 / flood_took.as_secs_f64(),
        state_numbers(&a_frames).len(),
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        latencies.last().copied().unwrap_or_default(),
        b_webhook_wait,
    );
    assert!(
        dropped.iter().all(|l| !l.contains("tenant=\"beta\"")),
        "B's events were dropped: {dropped:?}"
    );
    // Leave quietly, so the stop measures the server, not open sessions.
    let _ = a.disconnect().await;
    let _ = b.disconnect().await;
    drop((sse_a, sse_b));
    // The webhook worker finishes A's deliveries in flight: more than
    // Server::stop's 20 s on a loaded machine.
    let mut server = server;
    server.signal("INT").await.unwrap();
    let stopped = match server.wait(Duration::from_secs(90)).await {
        Ok(stopped) => stopped,
        Err(e) => {
            let log: Vec<String> = server
                .drain_stderr()
                .into_iter()
                .filter(|l| !l.contains("finished processing request") && !l.contains("DEBUG"))
                .collect();
            panic!(
                "{e}; the server's last lines:\n{}",
                log[log.len().saturating_sub(30)..].join("\n")
            )
        }
    };
    assert!(stopped.success(), "{stopped}");
}

fleetmq_tests::binary_backend_tests!(a_flood_in_one_tenant_costs_another_nothing);
