//! `fleetmq serve`: lock the data dir, bind every listener, migrate, serve,
//! and on SIGINT/SIGTERM drain for a bounded time, close the database, exit 0.

use std::net::SocketAddr;

use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

use crate::cli::ServeArgs;
use crate::config::{self, HTTP_LISTEN, ServeConfig};
use crate::datadir::DataDir;
use crate::error::Error;
use crate::{listen, telemetry};

pub fn run(args: ServeArgs) -> Result<(), Error> {
    let config = config::resolve_serve(&args)?;
    telemetry::init(config.storage.log_format)?;
    super::runtime()?.block_on(serve(config))
}

async fn serve(config: ServeConfig) -> Result<(), Error> {
    // Signals are hooked first so a Ctrl-C during a slow start is still a clean stop.
    let shutdown = CancellationToken::new();
    let mut signals = Signals::new()?;

    let data_dir = DataDir::open(&config.storage.data_dir)?;
    // Bind before the (possibly slow) migration so a taken port fails fast.
    let http = listen::bind("HTTP", config.http_listen, HTTP_LISTEN).await?;
    let http_addr = http.local_addr().map_err(|source| Error::Bind {
        what: "HTTP",
        addr: config.http_listen,
        setting: HTTP_LISTEN,
        source,
    })?;

    let url = config.storage.effective_database_url();
    let (store, status) = super::open_and_migrate(&url).await?;
    tracing::info!(
        database = %store::redact_url(&url),
        backend = %store.backend(),
        schema_version = status.applied,
        newly_applied = status.newly_applied,
        "database ready"
    );
    if let Some(tenant) = &config.allow_anonymous {
        tracing::warn!(
            tenant,
            "ANONYMOUS MQTT ACCESS IS ON: unauthenticated clients get full access to this tenant; never use this in production"
        );
    }

    let metrics = api::install_metrics_recorder().map_err(|e| Error::Metrics(e.to_string()))?;
    let app = api::router(
        api::AppState::new(store.clone(), metrics),
        &api::HttpLimits::default(),
    );
    let server = tokio::spawn(api::serve(http, app, shutdown.clone().cancelled_owned()));

    announce(&config, &data_dir, http_addr, &url, status.applied);

    let mut server = server;
    let served = tokio::select! {
        joined = &mut server => Some(joined),
        name = signals.next() => {
            tracing::info!(signal = name, "shutting down: no new connections, draining");
            None
        }
    };
    shutdown.cancel();
    let result = match served {
        Some(joined) => flatten(joined),
        None => {
            tokio::select! {
                drained = tokio::time::timeout(config.shutdown_timeout, &mut server) => match drained {
                    Ok(joined) => flatten(joined),
                    Err(_) => {
                        tracing::warn!(timeout_secs = config.shutdown_timeout.as_secs(), "drain timed out; closing the remaining connections");
                        server.abort();
                        Ok(())
                    }
                },
                name = signals.next() => {
                    tracing::warn!(signal = name, "second signal: closing the remaining connections now");
                    server.abort();
                    Ok(())
                }
            }
        }
    };
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

/// Tells a person (stdout) and the log where everything is.
fn announce(config: &ServeConfig, data_dir: &DataDir, http: SocketAddr, url: &str, schema: i64) {
    let browse = match http.ip().is_unspecified() {
        true => SocketAddr::new([127, 0, 0, 1].into(), http.port()),
        false => http,
    };
    let database = store::redact_url(url);
    println!("fleetmq {} is up", env!("CARGO_PKG_VERSION"));
    println!("fleetmq: http listening on {http}");
    println!(
        "  REST API and dashboard  http://{browse}/   (health: /healthz /readyz, metrics: /metrics)"
    );
    println!("  data dir                {}", data_dir.path().display());
    println!("  database                {database} (schema version {schema})");
    println!("  stop with Ctrl-C");
    tracing::info!(
        %http,
        data_dir = %data_dir.path().display(),
        %database,
        mqtt = %config.mqtt_listen,
        mqtts = %config.mqtts_listen,
        ws = %config.ws_listen,
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
