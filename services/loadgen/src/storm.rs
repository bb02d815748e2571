//! Connect storm (`--mode storm`): N clients connect, each on a fresh TCP
//! connection (and, with `--tls-ca`, a full TLS 1.3 handshake presenting its
//! own client certificate), C at a time. Each one sends an MQTT 3.1.1
//! CONNECT, waits for a CONNACK accepting it, then says DISCONNECT and
//! closes. Reports connects/s and the connect latency (TCP connect to
//! CONNACK) percentiles.
//!
//! The packets are written by hand rather than through rumqttc: a storm
//! wants one CONNECT and one CONNACK per connection and nothing else (no
//! event loop, no keep alive, no reconnect), and TLS resumption off, which
//! is easiest with our own rustls config per client.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use rustls::pki_types::ServerName;
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tokio::time::{Instant, timeout, timeout_at};
use tokio_rustls::TlsConnector;

use crate::config::StormConfig;
use crate::error::Error;
use crate::stats::{Latency, rate};

/// Bound on one connection, TCP connect to CONNACK.
const CONNECT_WAIT: Duration = Duration::from_secs(30);
/// Errors kept in the report; the rest are only counted.
const ERRORS_KEPT: usize = 10;
/// MQTT 3.1.1 DISCONNECT.
const DISCONNECT: [u8; 2] = [0xE0, 0x00];

/// What one storm measured. Serialized as the `--json` line.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StormReport {
    /// `host:port` of the broker.
    pub broker: String,
    /// Whether each connect was a TLS 1.3 handshake with a client certificate.
    pub tls: bool,
    /// Connections attempted.
    pub connections: u32,
    /// Connections in flight at once.
    pub concurrency: u32,
    /// Connections that got a CONNACK accepting them.
    pub connected: u64,
    /// Connections that failed (refused, reset, timed out).
    pub failed: u64,
    /// Seconds from the first connect to the last one ending.
    pub secs: f64,
    /// `connected / secs`.
    pub connect_rate: f64,
    /// TCP connect to CONNACK, accepted connections only.
    pub latency: Option<Latency>,
    /// Whether the run hit `--timeout` before every connection was tried.
    pub timed_out: bool,
    /// The first few failures.
    pub errors: Vec<String>,
}

impl std::fmt::Display for StormReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = if self.tls {
            "TLS 1.3 + client cert"
        } else {
            "TCP"
        };
        writeln!(
            f,
            "broker {}  connect storm ({kind})  {} connections, {} at a time",
            self.broker, self.connections, self.concurrency
        )?;
        writeln!(
            f,
            "connected   {:>10}  in {:>8.3} s  {:>12.0} connects/s  ({} failed)",
            self.connected, self.secs, self.connect_rate, self.failed
        )?;
        match self.latency {
            Some(l) => writeln!(f, "latency     {l}")?,
            None => writeln!(f, "latency     n/a (nothing connected)")?,
        }
        if self.timed_out {
            writeln!(f, "timed out before every connection was tried")?;
        }
        for e in &self.errors {
            writeln!(f, "error       {e}")?;
        }
        Ok(())
    }
}

/// One client of the storm: its client id and, for TLS, its own config.
struct Client {
    id: String,
    tls: Option<Arc<rustls::ClientConfig>>,
}

/// What one worker saw.
#[derive(Default)]
struct Tally {
    latencies_us: Vec<u64>,
    failed: u64,
    errors: Vec<String>,
}

/// Runs the storm described by `config`.
///
/// Fails only if the certificates cannot be loaded; connection failures
/// are counted in the report.
pub async fn storm(config: &StormConfig) -> Result<StormReport, Error> {
    let clients = Arc::new(clients(config)?);
    let server_name = ServerName::try_from(config.server_name.clone()).map_err(|e| Error::Tls {
        path: PathBuf::from(&config.server_name),
        reason: format!("not a valid TLS server name: {e}"),
    })?;
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let deadline = start + config.timeout;
    let mut workers = JoinSet::new();
    for _ in 0..config.concurrency {
        let clients = Arc::clone(&clients);
        let next = Arc::clone(&next);
        let addr = std::net::SocketAddr::new(config.host, config.port);
        let server_name = server_name.clone();
        workers.spawn(async move {
            let mut tally = Tally::default();
            while Instant::now() < deadline {
                let Some(client) = clients.get(next.fetch_add(1, Ordering::Relaxed)) else {
                    break;
                };
                let began = Instant::now();
                let outcome = timeout_at(
                    deadline.min(began + CONNECT_WAIT),
                    connect(addr, &server_name, client),
                )
                .await;
                match outcome {
                    Ok(Ok(())) => tally
                        .latencies_us
                        .push(u64::try_from(began.elapsed().as_micros()).unwrap_or(u64::MAX)),
                    Ok(Err(reason)) => tally.fail(format!("{}: {reason}", client.id)),
                    Err(_) => tally.fail(format!("{}: no CONNACK in time", client.id)),
                }
            }
            tally
        });
    }
    let mut total = Tally::default();
    while let Some(joined) = workers.join_next().await {
        match joined {
            Ok(mut t) => {
                total.latencies_us.append(&mut t.latencies_us);
                total.failed += t.failed;
                for e in t.errors {
                    total.fail_kept(e);
                }
            }
            Err(e) => total.fail(format!("worker ended: {e}")),
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let tried = next.load(Ordering::Relaxed).min(clients.len());
    let connected = total.latencies_us.len() as u64;
    Ok(StormReport {
        broker: std::net::SocketAddr::new(config.host, config.port).to_string(),
        tls: config.tls.is_some(),
        connections: config.connections,
        concurrency: config.concurrency,
        connected,
        failed: total.failed,
        secs,
        connect_rate: rate(connected, secs),
        latency: Latency::from_samples(&mut total.latencies_us),
        timed_out: tried < clients.len(),
        errors: total.errors,
    })
}

impl Tally {
    fn fail(&mut self, error: String) {
        self.failed += 1;
        self.fail_kept(error);
    }

    fn fail_kept(&mut self, error: String) {
        if self.errors.len() < ERRORS_KEPT {
            self.errors.push(error);
        }
    }
}

/// The storm's clients: anonymous ids for TCP, one per certificate for TLS.
/// Certificates are all loaded before the clock starts.
fn clients(config: &StormConfig) -> Result<Vec<Client>, Error> {
    let Some(tls) = &config.tls else {
        let run = std::process::id();
        return Ok((0..config.connections)
            .map(|i| Client {
                id: format!("fleetmq-loadgen-{run}-c{i}"),
                tls: None,
            })
            .collect());
    };
    let roots = roots(&tls.ca)?;
    let stems = cert_stems(&tls.certs)?;
    let wanted = usize::try_from(config.connections).unwrap_or(usize::MAX);
    if stems.len() < wanted {
        return Err(Error::Tls {
            path: tls.certs.clone(),
            reason: format!(
                "{} certificates (NAME.crt with NAME.key) for {wanted} connections",
                stems.len()
            ),
        });
    }
    stems
        .into_iter()
        .take(wanted)
        .map(|stem| {
            let config = client_config(&tls.certs, &stem, roots.clone())?;
            Ok(Client {
                id: stem,
                tls: Some(Arc::new(config)),
            })
        })
        .collect()
}

fn roots(ca: &Path) -> Result<rustls::RootCertStore, Error> {
    let roots = crate::idle::ca_roots(ca)?;
    if roots.is_empty() {
        return Err(Error::Tls {
            path: ca.to_owned(),
            reason: "no certificate in the file".into(),
        });
    }
    Ok(roots)
}

/// Names `NAME` for which `DIR/NAME.crt` and `DIR/NAME.key` both exist,
/// sorted so runs pick the same clients.
fn cert_stems(dir: &Path) -> Result<Vec<String>, Error> {
    let entries = std::fs::read_dir(dir).map_err(|e| Error::Tls {
        path: dir.to_owned(),
        reason: e.to_string(),
    })?;
    let mut stems: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let stem = name.strip_suffix(".crt")?.to_owned();
            dir.join(format!("{stem}.key")).exists().then_some(stem)
        })
        .collect();
    stems.sort();
    Ok(stems)
}

/// TLS 1.3 only, this client's certificate and key, resumption off: every
/// connect is a full handshake.
fn client_config(
    dir: &Path,
    stem: &str,
    roots: rustls::RootCertStore,
) -> Result<rustls::ClientConfig, Error> {
    let (crt, chain, key) = crate::idle::client_identity(dir, stem)?;
    let bad = |path: &Path, reason: String| Error::Tls {
        path: path.to_owned(),
        reason,
    };
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| bad(&crt, e.to_string()))?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .map_err(|e| bad(&crt, e.to_string()))?;
    config.resumption = rustls::client::Resumption::disabled();
    Ok(config)
}

/// One connection: TCP, TLS if configured, CONNECT, CONNACK, DISCONNECT.
async fn connect(
    addr: std::net::SocketAddr,
    server_name: &ServerName<'static>,
    client: &Client,
) -> Result<(), String> {
    let tcp = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("tcp: {e}"))?;
    // Small packets, one each way: do not let Nagle hold the CONNECT.
    tcp.set_nodelay(true).map_err(|e| format!("tcp: {e}"))?;
    match &client.tls {
        None => mqtt_connect(tcp, &client.id).await,
        Some(config) => {
            let tls = TlsConnector::from(Arc::clone(config))
                .connect(server_name.clone(), tcp)
                .await
                .map_err(|e| format!("tls: {e}"))?;
            mqtt_connect(tls, &client.id).await
        }
    }
}

async fn mqtt_connect<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    client_id: &str,
) -> Result<(), String> {
    // Clean session, keep alive 60 s, no credentials: TLS clients are
    // known by their certificate.
    let packet = crate::idle::connect_packet(client_id, 60, None, None)?;
    stream
        .write_all(&packet)
        .await
        .map_err(|e| format!("CONNECT: {e}"))?;
    let mut ack = [0u8; 4];
    stream
        .read_exact(&mut ack)
        .await
        .map_err(|e| format!("no CONNACK: {e}"))?;
    match ack {
        [0x20, 0x02, _, 0x00] => {}
        [0x20, 0x02, _, code] => return Err(format!("CONNACK refused with code {code}")),
        other => return Err(format!("expected CONNACK, got {other:02x?}")),
    }
    // A clean goodbye, outside the latency but inside the worker's slot so
    // closes do not pile up behind the storm. Its failure changes nothing.
    let _ = timeout(Duration::from_secs(1), async {
        stream.write_all(&DISCONNECT).await?;
        stream.shutdown().await
    })
    .await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_complete_pairs_count_as_clients() {
        let dir = tempfile::tempdir().unwrap();
        for f in ["b.crt", "b.key", "a.crt", "a.key", "lonely.crt", "c.key"] {
            std::fs::write(dir.path().join(f), "").unwrap();
        }
        assert_eq!(cert_stems(dir.path()).unwrap(), ["a", "b"]);
    }
}
