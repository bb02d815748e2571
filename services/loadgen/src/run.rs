//! One load run: connect K subscribers on `bench/#` and wait for their
//! SUBACKs, connect N publishers and wait for their CONNACKs, then start
//! all publishers at once and watch until every message arrived, the broker
//! went quiet after the last publish, or the time bound passed.
//!
//! Each client's rumqttc event loop runs in its own task and is only ever
//! stopped by aborting that task at the end of the run: `EventLoop::poll`
//! is not cancel-safe (a packet can be half handled), so it never sits in a
//! `select!` next to a timer. The tasks share what they count through
//! mutexes that the controller reads on a tick.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rumqttc::{AsyncClient, Event, MqttOptions, Outgoing, Packet, SubscribeReasonCode};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinSet;
use tokio::time::{Instant, sleep, timeout_at};

use crate::config::{Config, Qos};
use crate::error::Error;
use crate::payload::Header;
use crate::stats::{Latency, Report, rate};

/// The subscribers' filter; publishers use `bench/<index>`.
pub const FILTER: &str = "bench/#";
/// How long the broker may stay silent after the last publisher finished
/// before the run stops waiting for stragglers (lost QoS 0 messages).
const DRAIN_GRACE: Duration = Duration::from_secs(2);
/// How often the controller looks at the counters.
const TICK: Duration = Duration::from_millis(10);
/// rumqttc's request queue per client. Small, so the send time stamped in a
/// payload is close to when the client really sends it.
const REQUEST_CAP: usize = 16;
/// Bound on the DISCONNECT handshake at the end of a publisher.
const DISCONNECT_WAIT: Duration = Duration::from_secs(1);

/// Runs the load described by `config` and reports what it measured.
///
/// Fails only if setup fails (a client cannot connect or subscribe before
/// the time bound); errors during the measured phase end up in
/// [`Report::errors`].
pub async fn run(config: &Config) -> Result<Report, Error> {
    let origin = Instant::now();
    let deadline = origin + config.timeout;
    let mut tasks = JoinSet::new();
    let result = measure(config, origin, deadline, &mut tasks).await;
    // Every client stops here, whatever happened.
    tasks.shutdown().await;
    result
}

async fn measure(
    config: &Config,
    origin: Instant,
    deadline: Instant,
    tasks: &mut JoinSet<()>,
) -> Result<Report, Error> {
    let run_id = std::process::id();

    let mut subscribers = Vec::new();
    let mut ready = Vec::new();
    for k in 0..config.subscribers {
        let id = format!("fleetmq-loadgen-{run_id}-s{k}");
        let shared = Arc::new(Mutex::new(SubscriberState::new(config)));
        let (tx, rx) = oneshot::channel();
        tasks.spawn(subscriber(
            id.clone(),
            nth_port(&config.subscriber_ports, k),
            config.clone(),
            origin,
            Arc::clone(&shared),
            tx,
        ));
        subscribers.push(shared);
        ready.push((id, rx));
    }
    wait_ready(ready, origin, deadline).await?;

    let (start_tx, start_rx) = watch::channel(false);
    let mut publishers = Vec::new();
    let mut ready = Vec::new();
    for n in 0..config.publishers {
        let id = format!("fleetmq-loadgen-{run_id}-p{n}");
        let shared = Arc::new(Mutex::new(PublisherState::default()));
        let (tx, rx) = oneshot::channel();
        let p = Publisher {
            id: id.clone(),
            index: n,
            config: config.clone(),
            origin,
            start: start_rx.clone(),
            shared: Arc::clone(&shared),
        };
        tasks.spawn(p.run(tx));
        publishers.push(shared);
        ready.push((id, rx));
    }
    wait_ready(ready, origin, deadline).await?;

    let start = Instant::now();
    // Receivers live in the publisher tasks; none has ended yet, so this
    // cannot fail in a way that matters: a task that is gone has recorded
    // its error.
    let _ = start_tx.send(true);

    let expected = config.expected_deliveries();
    let mut timed_out = false;
    loop {
        sleep(TICK).await;
        let now = Instant::now();
        let delivered: u64 = subscribers.iter().map(|s| lock(s).delivered).sum();
        let pubs_over = publishers.iter().all(|p| lock(p).is_over());
        // Deliveries can complete before the last PUBACK is read, so a
        // complete run waits for both.
        if delivered >= expected && pubs_over {
            break;
        }
        if now >= deadline {
            timed_out = delivered < expected || !pubs_over;
            break;
        }
        let subs_over = subscribers.iter().all(|s| lock(s).error.is_some());
        if subs_over {
            break;
        }
        if pubs_over {
            let quiet_since = subscribers
                .iter()
                .filter_map(|s| lock(s).last_delivery)
                .chain(publishers.iter().filter_map(|p| lock(p).finished_at))
                .max()
                .unwrap_or(start);
            if now.saturating_duration_since(quiet_since) >= DRAIN_GRACE {
                break;
            }
        }
    }
    let stopped = Instant::now();
    Ok(report(
        config,
        start,
        stopped,
        timed_out,
        &publishers,
        &subscribers,
    ))
}

fn report(
    config: &Config,
    start: Instant,
    stopped: Instant,
    timed_out: bool,
    publishers: &[Arc<Mutex<PublisherState>>],
    subscribers: &[Arc<Mutex<SubscriberState>>],
) -> Report {
    let mut errors = Vec::new();
    let mut published = 0;
    let mut publish_end = Some(start);
    for p in publishers {
        let p = lock(p);
        published += p.completed;
        publish_end = match (publish_end, p.finished_at) {
            (Some(end), Some(at)) => Some(end.max(at)),
            _ => None,
        };
        errors.extend(p.error.clone());
    }
    let publish_secs = publish_end
        .unwrap_or(stopped)
        .saturating_duration_since(start)
        .as_secs_f64();

    let (mut delivered, mut duplicates, mut foreign) = (0, 0, 0);
    let mut last_delivery = start;
    let mut samples = Vec::new();
    for s in subscribers {
        let mut s = lock(s);
        delivered += s.delivered;
        duplicates += s.duplicates;
        foreign += s.foreign;
        last_delivery = last_delivery.max(s.last_delivery.unwrap_or(start));
        samples.append(&mut s.latencies_us);
        errors.extend(s.error.clone());
    }
    let deliver_secs = last_delivery.saturating_duration_since(start).as_secs_f64();
    let expected = config.expected_deliveries();
    Report {
        broker: std::net::SocketAddr::new(config.host, config.port).to_string(),
        qos: config.qos.level(),
        publishers: config.publishers,
        messages: config.messages,
        payload_bytes: config.payload,
        subscribers: config.subscribers,
        published,
        publish_secs,
        publish_rate: rate(published, publish_secs),
        expected,
        delivered,
        duplicates,
        foreign,
        deliver_secs,
        delivery_rate: rate(delivered, deliver_secs),
        delivery_ratio: if expected == 0 {
            0.0
        } else {
            delivered as f64 / expected as f64
        },
        latency: Latency::from_samples(&mut samples),
        timed_out,
        errors,
    }
}

/// Waits for every client's ready signal, each bounded by `deadline`.
async fn wait_ready(
    ready: Vec<(String, oneshot::Receiver<Result<(), Error>>)>,
    origin: Instant,
    deadline: Instant,
) -> Result<(), Error> {
    for (client, rx) in ready {
        match timeout_at(deadline, rx).await {
            Ok(Ok(result)) => result?,
            // The task ended without a word: only if it was aborted.
            Ok(Err(_)) => {
                return Err(Error::Setup {
                    client,
                    reason: "client task ended during setup".into(),
                });
            }
            Err(_) => {
                return Err(Error::SetupTimeout {
                    client,
                    waited: origin.elapsed(),
                });
            }
        }
    }
    Ok(())
}

/// A std mutex: nothing awaits while holding it, and a poisoned one (a task
/// panicked mid-update) still holds counts worth reporting.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The `n`-th connection's port among `ports` (never empty).
fn nth_port(ports: &[u16], n: u32) -> u16 {
    ports[n as usize % ports.len()]
}

fn options(config: &Config, client_id: &str, port: u16) -> MqttOptions {
    let mut o = MqttOptions::new(client_id, config.host.to_string(), port);
    o.set_keep_alive(Duration::from_secs(30));
    o.set_clean_session(true);
    // Room for the payload plus topic, header and properties.
    let max = config.payload + 1024;
    o.set_max_packet_size(max, max);
    o
}

/// What one subscriber has seen.
struct SubscriberState {
    /// One bit per (publisher, seq), to tell first deliveries from repeats.
    seen: Vec<u64>,
    publishers: u32,
    messages: u32,
    delivered: u64,
    duplicates: u64,
    foreign: u64,
    latencies_us: Vec<u64>,
    last_delivery: Option<Instant>,
    error: Option<String>,
}

impl SubscriberState {
    fn new(config: &Config) -> Self {
        let total = u64::from(config.publishers) * u64::from(config.messages);
        // `Config` bounds the total, so this fits in memory and in usize.
        let words = usize::try_from(total.div_ceil(64)).unwrap_or(0);
        Self {
            seen: vec![0; words],
            publishers: config.publishers,
            messages: config.messages,
            delivered: 0,
            duplicates: 0,
            foreign: 0,
            latencies_us: Vec::new(),
            last_delivery: None,
            error: None,
        }
    }

    fn record(&mut self, payload: &[u8], now: Instant, origin: Instant) {
        let Some(h) = Header::parse(payload) else {
            self.foreign += 1;
            return;
        };
        if h.publisher >= self.publishers || h.seq >= self.messages {
            self.foreign += 1;
            return;
        }
        let index = u64::from(h.publisher) * u64::from(self.messages) + u64::from(h.seq);
        let (word, bit) = (index / 64, index % 64);
        let Some(slot) = usize::try_from(word)
            .ok()
            .and_then(|w| self.seen.get_mut(w))
        else {
            self.foreign += 1;
            return;
        };
        if *slot & (1 << bit) != 0 {
            self.duplicates += 1;
            return;
        }
        *slot |= 1 << bit;
        self.delivered += 1;
        self.last_delivery = Some(now);
        let now_ns = nanos(now.saturating_duration_since(origin));
        self.latencies_us
            .push(now_ns.saturating_sub(h.sent_ns) / 1000);
    }
}

async fn subscriber(
    id: String,
    port: u16,
    config: Config,
    origin: Instant,
    shared: Arc<Mutex<SubscriberState>>,
    ready: oneshot::Sender<Result<(), Error>>,
) {
    let mut opts = options(&config, &id, port);
    opts.set_clean_session(!config.persistent_subscribers);
    let (client, mut events) = AsyncClient::new(opts, REQUEST_CAP);
    // Queued now, sent by the event loop right after CONNACK.
    if let Err(e) = client.subscribe(FILTER, config.qos.to_rumqttc()).await {
        let _ = ready.send(Err(setup_error(&id, e)));
        return;
    }
    loop {
        match events.poll().await {
            Ok(Event::Incoming(Packet::SubAck(ack))) => {
                let granted = ack
                    .return_codes
                    .iter()
                    .all(|c| matches!(c, SubscribeReasonCode::Success(_)));
                let result = if granted {
                    Ok(())
                } else {
                    Err(Error::SubscriptionRefused {
                        client: id.clone(),
                        filter: FILTER,
                    })
                };
                let failed = result.is_err();
                let _ = ready.send(result);
                if failed {
                    return;
                }
                break;
            }
            Ok(_) => {}
            Err(e) => {
                let _ = ready.send(Err(setup_error(&id, e)));
                return;
            }
        }
    }
    loop {
        match events.poll().await {
            Ok(Event::Incoming(Packet::Publish(p))) => {
                lock(&shared).record(&p.payload, Instant::now(), origin);
            }
            Ok(_) => {}
            Err(e) => {
                lock(&shared).error = Some(format!("{id}: {e}"));
                return;
            }
        }
    }
    // `client` lives to here: dropping it would end the event loop.
}

/// What one publisher has done.
#[derive(Default)]
struct PublisherState {
    completed: u64,
    finished_at: Option<Instant>,
    error: Option<String>,
}

impl PublisherState {
    fn is_over(&self) -> bool {
        self.finished_at.is_some() || self.error.is_some()
    }
}

struct Publisher {
    id: String,
    index: u32,
    config: Config,
    origin: Instant,
    start: watch::Receiver<bool>,
    shared: Arc<Mutex<PublisherState>>,
}

impl Publisher {
    async fn run(self, ready: oneshot::Sender<Result<(), Error>>) {
        let (client, mut events) = AsyncClient::new(
            options(
                &self.config,
                &self.id,
                nth_port(&self.config.publisher_ports, self.index),
            ),
            REQUEST_CAP,
        );
        match events.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                let _ = ready.send(Ok(()));
            }
            Ok(other) => {
                let _ = ready.send(Err(Error::Setup {
                    client: self.id,
                    reason: format!("expected CONNACK, got {other:?}"),
                }));
                return;
            }
            Err(e) => {
                let _ = ready.send(Err(setup_error(&self.id, e)));
                return;
            }
        }
        // The feeder hands messages to rumqttc while this task drives the
        // connection; it ends by itself after the last message.
        let feeder = tokio::spawn(feed(
            client.clone(),
            self.index,
            self.config.clone(),
            self.origin,
            self.start.clone(),
        ));
        let messages = u64::from(self.config.messages);
        let mut completed = 0;
        while completed < messages {
            let done = match events.poll().await {
                // QoS 0 is done once written: rumqttc flushes before it
                // reports the outgoing PUBLISH.
                Ok(Event::Outgoing(Outgoing::Publish(_))) => self.config.qos == Qos::AtMostOnce,
                Ok(Event::Incoming(Packet::PubAck(_))) => self.config.qos == Qos::AtLeastOnce,
                Ok(_) => false,
                Err(e) => {
                    lock(&self.shared).error = Some(format!("{}: {e}", self.id));
                    feeder.abort();
                    return;
                }
            };
            if done {
                completed += 1;
                lock(&self.shared).completed = completed;
            }
        }
        lock(&self.shared).finished_at = Some(Instant::now());
        // A clean goodbye so the broker does not log a lost connection;
        // bounded, and outside the measurement.
        if client.disconnect().await.is_ok() {
            let _ = tokio::time::timeout(DISCONNECT_WAIT, async {
                while let Ok(e) = events.poll().await {
                    if matches!(e, Event::Outgoing(Outgoing::Disconnect)) {
                        break;
                    }
                }
            })
            .await;
        }
    }
}

async fn feed(
    client: AsyncClient,
    index: u32,
    config: Config,
    origin: Instant,
    mut start: watch::Receiver<bool>,
) {
    if start.wait_for(|go| *go).await.is_err() {
        return;
    }
    let topic = format!("bench/{index}");
    let qos = config.qos.to_rumqttc();
    for seq in 0..config.messages {
        let header = Header {
            publisher: index,
            seq,
            sent_ns: nanos(origin.elapsed()),
        };
        let payload = header.to_payload(config.payload);
        if client
            .publish(topic.as_str(), qos, false, payload)
            .await
            .is_err()
        {
            // The event loop is gone; its task recorded why.
            return;
        }
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

fn setup_error(client: &str, e: impl std::fmt::Display) -> Error {
    Error::Setup {
        client: client.to_owned(),
        reason: e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Args;
    use clap::Parser;

    fn config(publishers: &str, messages: &str) -> Config {
        let args = Args::try_parse_from([
            "fleetmq-loadgen",
            "--port",
            "18830",
            "--publishers",
            publishers,
            "--messages",
            messages,
        ])
        .unwrap();
        Config::try_from(args).unwrap()
    }

    #[test]
    fn subscriber_counts_firsts_repeats_and_strangers() {
        let origin = Instant::now();
        let mut s = SubscriberState::new(&config("3", "100"));
        let payload = |publisher, seq| {
            Header {
                publisher,
                seq,
                sent_ns: 0,
            }
            .to_payload(32)
        };
        s.record(&payload(0, 0), origin, origin);
        s.record(&payload(2, 99), origin, origin);
        s.record(&payload(2, 99), origin, origin);
        s.record(&payload(3, 0), origin, origin); // no publisher 3
        s.record(&payload(0, 100), origin, origin); // no seq 100
        s.record(b"hello", origin, origin);
        assert_eq!((s.delivered, s.duplicates, s.foreign), (2, 1, 3));
        assert_eq!(s.latencies_us.len(), 2);
    }

    #[tokio::test]
    async fn setup_fails_fast_when_nothing_listens() {
        // Bind then drop: a loopback port nobody listens on.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let args = Args::try_parse_from([
            "fleetmq-loadgen",
            "--port",
            &port.to_string(),
            "--publishers",
            "1",
            "--messages",
            "1",
            "--timeout",
            "5",
        ])
        .unwrap();
        let err = run(&Config::try_from(args).unwrap()).await.unwrap_err();
        assert!(matches!(err, Error::Setup { .. }), "{err}");
    }
}
