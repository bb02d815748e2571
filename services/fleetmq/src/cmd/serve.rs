//! `fleetmq serve`: lock the data dir, bind every listener, migrate, serve,
//! and on SIGINT/SIGTERM drain for a bounded time, close the database, exit 0.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

use crate::cli::ServeArgs;
use crate::config::{
    self, ALLOW_ANONYMOUS, HTTP_LISTEN, MQTT_LISTEN, MQTTS_LISTEN, ServeConfig, WS_LISTEN,
};
use crate::datadir::DataDir;
use crate::error::Error;
use crate::pki_boot::{self, Platform};
use crate::{bridge, listen, telemetry, tls};

pub fn run(args: ServeArgs) -> Result<(), Error> {
    let config = config::resolve_serve(&args)?;
    telemetry::init(config.storage.log_format)?;
    super::runtime()?.block_on(serve(config))
}

async fn serve(config: ServeConfig) -> Result<(), Error> {
    // Signals are hooked first so a Ctrl-C during a slow start is still a clean stop.
    let shutdown = CancellationToken::new();
    let mut signals = Signals::new()?;
    crate::fdlimit::raise_and_check(&config);

    let data_dir = DataDir::open(&config.storage.data_dir)?;
    let node = crate::cluster_boot::node_name(&config.cluster, &data_dir)?;
    // Bind before the (possibly slow) migration so a taken port fails fast.
    let http = listen::bind("HTTP", config.http_listen, HTTP_LISTEN).await?;
    let http_addr = http.local_addr().map_err(|source| Error::Bind {
        what: "HTTP",
        addr: config.http_listen,
        setting: HTTP_LISTEN,
        source,
    })?;

    let mqtt = listen::bind("MQTT", config.mqtt_listen, MQTT_LISTEN).await?;
    let mqtts = listen::bind("MQTT over TLS", config.mqtts_listen, MQTTS_LISTEN).await?;
    let mqtt_ws = listen::bind("MQTT over WebSocket", config.ws_listen, WS_LISTEN).await?;
    let local = |l: &tokio::net::TcpListener, what: &'static str, addr, setting| {
        l.local_addr().map_err(|source| Error::Bind {
            what,
            addr,
            setting,
            source,
        })
    };
    let mqtt_addr = local(&mqtt, "MQTT", config.mqtt_listen, MQTT_LISTEN)?;
    let mqtts_addr = local(&mqtts, "MQTT over TLS", config.mqtts_listen, MQTTS_LISTEN)?;
    let ws_addr = local(&mqtt_ws, "MQTT over WebSocket", config.ws_listen, WS_LISTEN)?;
    // The operator's certificate files are checked now, before anything slow.
    let given_cert = tls::read_given(config.tls.as_ref())?;

    let url = config.storage.effective_database_url();
    let (store, status) = super::open_and_migrate(&url).await?;
    tracing::info!(
        database = %store::redact_url(&url),
        backend = %store.backend(),
        schema_version = status.applied,
        newly_applied = status.newly_applied,
        "database ready"
    );
    // A cluster member takes its name before anything is created: a
    // second live node with the same name stops here.
    let cluster = match crate::cluster_boot::join(&config.cluster, &node, &data_dir).await {
        Ok(cluster) => cluster,
        Err(e) => {
            store.close().await;
            return Err(e);
        }
    };
    // Before the services start: what they record at once (the webhook
    // worker's first queue depths) must not go to the no-op recorder.
    let started = async {
        let metrics = api::install_metrics_recorder().map_err(|e| Error::Metrics(e.to_string()))?;
        let (broker, platform, services, server_tls) = start_platform(
            &config,
            &store,
            &url,
            &data_dir,
            given_cert,
            &node,
            cluster.as_ref(),
        )
        .await?;
        // The token signing keys, sealed with the key-encryption key (keys an
        // older version stored bare are sealed now, at start).
        let keys = api::Keys::load_or_create_sealed(&store, platform.kek.clone())
            .await
            .map_err(|e| Error::Token(e.to_string()))?;
        Ok((metrics, broker, platform, services, server_tls, keys))
    };
    let (metrics, broker, _, services, server_tls, keys) = match started.await {
        Ok(started) => started,
        Err(e) => {
            if let Some(cluster) = cluster {
                cluster.leave().await;
            }
            store.close().await;
            return Err(e);
        }
    };
    let mut state = services.wire_api(
        api::AppState::new(store.clone(), metrics).with_keys(keys),
        &config,
    );
    // Changes made on other nodes reach this one's sessions, and this
    // one's reach theirs, from before the first client is served.
    let mut feed_link = None;
    if let Some(joined) = &cluster {
        state = state.with_readiness_check(Arc::new(crate::cluster_boot::NatsReadiness {
            cluster: joined.readiness(),
            broker: broker.clone(),
        }));
        match cluster::feed::carry(joined, &services.changes).await {
            Ok(link) => feed_link = Some(link),
            Err(e) => {
                // Nothing is served yet: stop what started, cleanly.
                services.shutdown().await;
                if let Some(joined) = cluster {
                    joined.leave().await;
                }
                store.close().await;
                return Err(Error::Cluster(e));
            }
        }
    }
    let app = api::router(
        state,
        &api::HttpLimits {
            rate_limit: config.rate_limit,
            token_rate_limit: config.token_rate_limit,
            ..api::HttpLimits::default()
        },
    );
    let server = tokio::spawn(api::serve_with(
        http,
        app,
        config.http_conn,
        shutdown.clone().cancelled_owned(),
    ));
    let purge = state::RetainedPurge::spawn(store.clone(), config.retained_purge_interval);
    let memory_upkeep = crate::memory_upkeep::MemoryUpkeep::spawn();
    let session_sweep = crate::session_sweep::SessionSweep::spawn(
        store.clone(),
        broker.clone(),
        services.durable_sessions.clone(),
        config.retained_purge_interval,
    );
    // A member cut off from NATS stops serving MQTT before its lease lapses.
    let fence = cluster.as_ref().map(|joined| {
        crate::fence::Fence::spawn(
            joined.node_name().to_string(),
            joined.readiness(),
            broker.clone(),
            services.durable_sessions.clone(),
            crate::fence::grace(cluster::DEFAULT_LEASE_TTL),
        )
    });
    // Survivors take over a dead member's devices, wills and sessions.
    let node_death = cluster.as_ref().map(|joined| {
        crate::node_death::NodeDeath::spawn(crate::node_death::Watcher {
            me: joined.node_name().clone(),
            leases: joined.leases(),
            readiness: joined.readiness(),
            lease_ttl: cluster::DEFAULT_LEASE_TTL,
            store: store.clone(),
            broker: broker.clone(),
            status: services.status.clone(),
            journal: joined.journal(),
        })
    });
    let mqtt_tasks = [
        tokio::spawn(broker::run_listener(mqtt, broker.clone(), shutdown.clone())),
        tokio::spawn(broker::run_tls_listener(
            mqtts,
            broker.clone(),
            server_tls.config.clone(),
            shutdown.clone(),
        )),
        tokio::spawn(broker::run_ws_listener(mqtt_ws, broker, shutdown.clone())),
    ];

    announce(
        &config,
        &data_dir,
        Addrs {
            http: http_addr,
            mqtt: mqtt_addr,
            mqtts: mqtts_addr,
            ws: ws_addr,
        },
        &server_tls,
        &url,
        status.applied,
    );

    let mut server = server;
    let aborts: Vec<_> = std::iter::once(server.abort_handle())
        .chain(mqtt_tasks.iter().map(|t| t.abort_handle()))
        .collect();
    let served = tokio::select! {
        joined = &mut server => Some(joined),
        name = signals.next() => {
            tracing::info!(signal = name, "shutting down: no new connections, draining");
            None
        }
    };
    shutdown.cancel();
    // Open event streams would hold the HTTP drain until its deadline.
    services.events.close_streams();
    let result = match served {
        Some(joined) => {
            aborts.iter().for_each(|a| a.abort());
            flatten(joined)
        }
        None => {
            // Every listener stops accepting at once; HTTP requests finish and
            // MQTT v5 clients are sent DISCONNECT 0x8B (server shutting down).
            let drain = async {
                let http = (&mut server).await;
                for task in mqtt_tasks {
                    if let Ok(Err(e)) = task.await {
                        tracing::warn!(error = %e, "MQTT listener ended with an error");
                    }
                }
                http
            };
            tokio::select! {
                drained = tokio::time::timeout(config.shutdown_timeout, drain) => match drained {
                    Ok(joined) => flatten(joined),
                    Err(_) => {
                        tracing::warn!(timeout_secs = config.shutdown_timeout.as_secs(), "drain timed out; closing the remaining connections");
                        aborts.iter().for_each(|a| a.abort());
                        Ok(())
                    }
                },
                name = signals.next() => {
                    tracing::warn!(signal = name, "second signal: closing the remaining connections now");
                    aborts.iter().for_each(|a| a.abort());
                    Ok(())
                }
            }
        }
    };
    purge.stop();
    session_sweep.stop();
    memory_upkeep.stop();
    if let Some(fence) = fence {
        fence.stop().await;
    }
    if let Some(node_death) = node_death {
        node_death.stop().await;
    }
    services.shutdown().await;
    drop(feed_link);
    if let Some(cluster) = cluster {
        cluster.leave().await;
    }
    store.close().await;
    drop(data_dir);
    tracing::info!("stopped");
    result
}

fn flatten(joined: Result<std::io::Result<()>, tokio::task::JoinError>) -> Result<(), Error> {
    match joined {
        Ok(result) => result.map_err(Error::Serve),
        Err(e) => Err(Error::Serve(std::io::Error::other(e))),
    }
}

/// What runs beside the broker and must be flushed when it stops.
struct Services {
    retained: Arc<state::DurableRetained>,
    durable_sessions: Arc<state::DurableSessions>,
    presence: Arc<state::Presence>,
    reported: Arc<state::ReportedState>,
    webhooks: webhooks::Worker,
    events: events::hub::EventHub,
    recent: Arc<dyn api::device_io::RecentMessages>,
    /// REST changes that live sessions must see; its listeners (PKI,
    /// access cache and broker, status topics, webhook message routes)
    /// are subscribed in `start_platform`.
    changes: events::change::ChangeFeed,
    pki: Arc<api::Pki>,
    commands: Arc<bridge::BrokerCommands>,
    fleet_stats: Arc<api::FleetStats>,
    platform_events: Arc<bridge::PlatformEvents>,
    outbox_task: webhooks::OutboxWriterTask,
    stop_refresh: CancellationToken,
    status: Arc<crate::presence_status::StatusPublisher>,
    /// Message routing between cluster nodes (`--nats-url`).
    routing: Option<cluster::routing::Routing>,
}

/// How long a graceful stop waits for queued webhook events to be written.
const OUTBOX_FLUSH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

impl Services {
    /// The REST API's hooks into the PKI, the broker and the event hub.
    fn wire_api(&self, state: api::AppState, config: &ServeConfig) -> api::AppState {
        state
            .with_pki(self.pki.clone())
            .with_change_feed(self.changes.clone())
            .with_event_hub(self.events.clone())
            .with_device_commands(self.commands.clone())
            .with_recent_messages(self.recent.clone())
            .with_broker_drops(Arc::new(bridge::BrokerDropCounts {
                broker: self.commands.broker.clone(),
            }))
            .with_fleet_stats(self.fleet_stats.clone())
            .with_webhook_url_policy(url_policy(config))
    }

    /// After the listeners have returned: nothing new arrives, so what is
    /// buffered is written now.
    async fn shutdown(self) {
        // The shutdown's offline statuses go out before retained stops.
        self.status
            .shutdown(std::time::Duration::from_secs(5))
            .await;
        // What the drain and the statuses published reaches the other nodes.
        if let Some(routing) = self.routing {
            routing.stop().await;
        }
        if let Err(e) = self.retained.shutdown().await {
            tracing::error!(error = %e, "flushing retained messages at shutdown failed");
        }
        // The disconnects of the sessions the drain closed are written.
        if let Err(e) = self.durable_sessions.shutdown().await {
            tracing::error!(error = %e, "flushing persistent sessions at shutdown failed");
        }
        if let Err(e) = self.presence.shutdown().await {
            tracing::error!(error = %e, "flushing presence at shutdown failed");
        }
        self.reported.shutdown().await;
        // Queued platform events (the last disconnects among them) reach
        // the outbox writer, and it writes everything it holds.
        self.stop_refresh.cancel();
        let flush = async {
            self.platform_events.close().await;
            self.outbox_task.close().await;
        };
        if tokio::time::timeout(OUTBOX_FLUSH_TIMEOUT, flush)
            .await
            .is_err()
        {
            tracing::error!(
                timeout_secs = OUTBOX_FLUSH_TIMEOUT.as_secs(),
                "writing queued webhook events at shutdown timed out; they are lost"
            );
        }
        self.webhooks.shutdown().await;
    }
}

/// The PKI, the broker with its platform authenticator and authorizer,
/// durable retained messages, presence, reported state and the webhook
/// worker.
async fn start_platform(
    config: &ServeConfig,
    store: &store::Store,
    url: &str,
    data_dir: &DataDir,
    given_cert: Option<tls::GivenCert>,
    node: &str,
    cluster: Option<&cluster::Cluster>,
) -> Result<(broker::Broker, Platform, Services, tls::ServerTls), Error> {
    let platform = pki_boot::load(store, &config.storage, url).await?;
    let server_tls = tls::server_config(given_cert, &platform, data_dir)?;
    let cache = access::AccessCache::new(store.clone());
    let session_cache = cache.clone();
    let pki = Arc::new(api::Pki::new(
        platform.root.clone(),
        platform.kek.clone(),
        platform.trust.clone(),
        platform.trust_domain.clone(),
    ));
    // Platform events reach SSE clients through the hub and webhooks
    // through the outbox, which wakes the worker when it has written.
    let hub = events::hub::EventHub::default();
    let platform_auth: Arc<dyn broker::Authenticator> = Arc::new(
        access::PlatformAuthenticator::new(platform.trust.clone(), cache.clone())
            .on_device_created(bridge::jit_device_created(store.clone(), hub.clone()))
            .with_password_checks(Arc::new(access::PasswordChecks::new(
                config.password_checks,
            ))),
    );
    let policy: Arc<dyn broker::Authorizer> = Arc::new(access::PolicyAuthorizer::new(cache));
    let (authenticator, authorizer): (Arc<dyn broker::Authenticator>, Arc<dyn broker::Authorizer>) =
        match &config.allow_anonymous {
            None => (platform_auth, policy),
            Some(tenant) => {
                let tenant = anonymous_tenant(store, url, tenant).await?;
                (
                    Arc::new(crate::anonymous::Fallback {
                        platform: platform_auth,
                        anonymous: broker::AllowAnonymous { tenant },
                    }),
                    Arc::new(crate::anonymous::Authorizer { policy }),
                )
            }
        };
    let status_topics = access::StatusTopics::load(store)
        .await
        .map_err(|e| Error::store(url, e))?;
    let authorizer: Arc<dyn broker::Authorizer> = Arc::new(access::StatusTopicGuard::new(
        authorizer,
        status_topics.clone(),
    ));
    let status = crate::presence_status::StatusPublisher::start(status_topics.clone());
    let retained = state::DurableRetained::start(store.clone(), state::RetainedConfig::default());
    // Persistent sessions (issue 14): this node's sessions left connected
    // by a crash are offline as of now, before anything is served.
    let durable_sessions =
        state::DurableSessions::start(store.clone(), config.sessions.config(node.to_owned()));
    match durable_sessions.recover().await {
        Ok(0) => {}
        Ok(n) => tracing::info!(
            sessions = n,
            "persistent sessions left connected by the last run released"
        ),
        Err(e) => return Err(Error::Pki(format!("persistent sessions: {e}"))),
    }
    let presence = state::Presence::start(store.clone(), state::PresenceConfig::new(node))
        .await
        .map_err(|e| Error::Pki(format!("presence: {e}")))?;
    let reported = state::ReportedState::start(store.clone(), 10_000);
    let webhooks = webhooks::Worker::spawn(
        store.clone(),
        webhooks::WorkerConfig {
            message_ids: webhooks::MessageIdKey::new(platform.kek.derive("webhook-id").as_ref()),
            ..config.webhooks.worker_config(url_policy(config))
        },
    )
    .map_err(|e| Error::Webhooks(e.to_string()))?;
    let (outbox, outbox_task) = webhooks::OutboxWriter::spawn(
        store.clone(),
        config.webhooks.outbox_config(),
        Some(webhooks.waker()),
    );
    hub.add_listener(Arc::new(outbox.clone()));
    // The dashboard's charts and presence history: lifecycle from the hub,
    // device messages counted on their way into the recent-messages ring.
    let fleet_stats = Arc::new(api::FleetStats::new());
    hub.add_listener(fleet_stats.clone());
    // Which MQTT messages any endpoint wants, in memory: the broker asks
    // for each message, so unwatched ones never reach the database.
    let webhook_routes = webhooks::MessageRoutes::load(store.clone())
        .await
        .map_err(|e| Error::Webhooks(e.to_string()))?;
    let stop_refresh = CancellationToken::new();
    webhook_routes.spawn_refresh(ROUTES_REFRESH, stop_refresh.clone());
    let recent: Arc<dyn api::device_io::RecentMessages> = Arc::new(api::CountingRecentMessages {
        inner: Arc::new(api::device_io::InMemoryRecentMessages::new(
            api::device_io::RecentMessagesLimits::default(),
        )),
        stats: fleet_stats.clone(),
    });
    let platform_events = bridge::PlatformEvents::start_with_messages(
        store.clone(),
        hub.clone(),
        recent.clone(),
        Some(crate::message_events::MessageWebhooks {
            routes: webhook_routes.clone(),
            outbox,
        }),
    );
    let events: Vec<Arc<dyn broker::EventSink>> = vec![
        presence.clone(),
        reported.clone(),
        platform_events.clone(),
        status.clone(),
    ];
    let mut builder = broker::Broker::builder(authenticator)
        .authorizer(authorizer)
        .config(config.mqtt_limits.broker_config())
        .retained_store(retained.clone())
        .session_store(durable_sessions.clone())
        .events(Arc::new(state::Fanout::new(events)))
        .tenant_directory(Arc::new(access::StoreTenants::new(store.clone())));
    // A cluster member routes messages and retained changes over NATS; a
    // single node has no interconnect and pays nothing for it.
    let pending = match cluster {
        Some(cluster) => {
            let (router, pending) = cluster.router().await.map_err(Error::Cluster)?;
            // One node name for the router and the session store: a
            // session's stored node is the one that takes its release.
            let router = Arc::new(router);
            builder = builder.interconnect(router.clone()).session_handoff(router);
            Some(pending)
        }
        None => None,
    };
    let broker = builder.build();
    let routing = match pending {
        Some(pending) => Some(
            pending
                .start(broker.clone())
                .await
                .map_err(Error::Cluster)?,
        ),
        None => None,
    };
    status.set_broker(broker.clone());
    status.node_restarted(presence.recovered());
    access::load_topic_rules(store, &broker)
        .await
        .map_err(|e| Error::store(url, e))?;
    // The PKI first: a CA removed is no longer trusted before the
    // sessions it let in end.
    let changes = events::change::ChangeFeed::new();
    changes.subscribe(Arc::new(api::PkiChanges::new(pki.clone(), store.clone())));
    changes.subscribe(Arc::new(access::LiveSessions::new(
        session_cache,
        broker.clone(),
        store.clone(),
    )));
    changes.subscribe(Arc::new(status_topics));
    changes.subscribe(Arc::new(webhook_routes));
    let services = Services {
        retained,
        durable_sessions,
        presence,
        reported,
        webhooks,
        events: hub,
        recent,
        changes,
        pki,
        commands: Arc::new(bridge::BrokerCommands {
            broker: broker.clone(),
        }),
        fleet_stats,
        platform_events,
        outbox_task,
        stop_refresh,
        status,
        routing,
    };
    Ok((broker, platform, services, server_tls))
}

/// How often the message routes are read whole again, for endpoint changes
/// the API did not see (another node; the worker disabling an endpoint).
const ROUTES_REFRESH: std::time::Duration = std::time::Duration::from_secs(30);

/// `--webhook-allow-private` is development mode for webhooks: loopback
/// and private addresses, and plain http, are allowed.
fn url_policy(config: &ServeConfig) -> webhooks::UrlPolicy {
    webhooks::UrlPolicy {
        allow_private: config.webhook_allow_private,
        allow_http: config.webhook_allow_private,
    }
}

/// `--allow-anonymous TENANT`: the tenant, created if missing, and a loud
/// warning.
async fn anonymous_tenant(
    store: &store::Store,
    url: &str,
    tenant: &str,
) -> Result<broker::TenantId, Error> {
    let id = broker::TenantId::parse(tenant).map_err(|_| {
        Error::invalid(
            ALLOW_ANONYMOUS,
            tenant,
            "a tenant id is 3 to 63 characters of a-z, 0-9 and -",
        )
    })?;
    let exists = store
        .tenant_exists(tenant)
        .await
        .map_err(|e| Error::store(url, e))?;
    if !exists {
        let new = store::NewTenant {
            id: tenant.to_owned(),
            name: format!("{tenant} (anonymous MQTT)"),
        };
        match store.create_tenant(&new).await {
            Ok(_) | Err(store::Error::AlreadyExists { .. }) => {}
            Err(e) => return Err(Error::store(url, e)),
        }
    }
    tracing::warn!(
        tenant,
        "ANONYMOUS MQTT ACCESS IS ON: clients without valid credentials get full access to this tenant's topics; never use this in production"
    );
    Ok(id)
}

/// Where the listeners ended up (a port of 0 is resolved).
struct Addrs {
    http: SocketAddr,
    mqtt: SocketAddr,
    mqtts: SocketAddr,
    ws: SocketAddr,
}

/// Tells a person (stdout) and the log where everything is.
fn announce(
    config: &ServeConfig,
    data_dir: &DataDir,
    addrs: Addrs,
    server_tls: &tls::ServerTls,
    url: &str,
    schema: i64,
) {
    let Addrs {
        http,
        mqtt,
        mqtts,
        ws,
    } = addrs;
    let browse = match http.ip().is_unspecified() {
        true => SocketAddr::new([127, 0, 0, 1].into(), http.port()),
        false => http,
    };
    let database = store::redact_url(url);
    let trust = server_tls.trust.display();
    println!("fleetmq {} is up", env!("CARGO_PKG_VERSION"));
    // Machine-readable lines (tests and scripts read them); http comes last.
    println!("fleetmq: mqtt listening on {mqtt}");
    println!("fleetmq: mqtts listening on {mqtts}");
    println!("fleetmq: mqtts ca-file {trust}");
    println!("fleetmq: mqtt-ws listening on {ws}");
    println!("fleetmq: http listening on {http}");
    println!(
        "  REST API and dashboard  http://{browse}/   (health: /healthz /readyz, metrics: /metrics)"
    );
    println!("  MQTT                    mqtt://{mqtt}   WebSocket: ws://{ws}/mqtt");
    println!("  MQTT over TLS           mqtts://{mqtts}   clients trust {trust}");
    if let Some(tenant) = &config.allow_anonymous {
        println!("  anonymous MQTT          ON, into tenant {tenant} (development only)");
    }
    println!("  data dir                {}", data_dir.path().display());
    println!("  database                {database} (schema version {schema})");
    println!("  stop with Ctrl-C");
    let limits = &config.mqtt_limits;
    tracing::info!(
        %http,
        data_dir = %data_dir.path().display(),
        %database,
        %mqtt,
        %mqtts,
        %ws,
        mqtts_trust = %trust,
        max_connections = limits.max_connections,
        max_packet_size = limits.max_packet_size,
        receive_maximum = limits.receive_maximum,
        webhook_allow_private = config.webhook_allow_private,
        "listening"
    );
}

struct Signals {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> Result<Self, Error> {
        Ok(Signals {
            interrupt: signal(SignalKind::interrupt()).map_err(Error::Runtime)?,
            terminate: signal(SignalKind::terminate()).map_err(Error::Runtime)?,
        })
    }

    async fn next(&mut self) -> &'static str {
        tokio::select! {
            _ = self.interrupt.recv() => "SIGINT",
            _ = self.terminate.recv() => "SIGTERM",
        }
    }
}
