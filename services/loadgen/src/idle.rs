//! `fleetmq-loadgen idle`: opens N MQTT connections, waits for every
//! CONNACK, prints one line (`connected N ...`) and holds them until the
//! hold time passes or the process is signalled (SIGINT/SIGTERM). It
//! measures the broker's memory per idle connection (see
//! `conn-memory.sh`), so the client side is as small as possible.
//!
//! Why not rumqttc here: a rumqttc client is an event loop with its own
//! request channel, read buffer and state (tens of KB) per connection, and
//! held connections need nothing but a CONNECT, a CONNACK and an occasional
//! PINGREQ. So each connection is one tokio task with a raw MQTT 3.1.1
//! CONNECT over a `TcpStream` (or tokio-rustls over it) and a 16-byte read
//! buffer; what is measured is the broker.
//!
//! TLS: `--tls-ca FILE` trusts that CA (PEM); `--tls-certs DIR` presents
//! a client certificate per connection: connection `n` (0-based) uses
//! `DIR/<n>.crt` (PEM, leaf first) and `DIR/<n>.key` (PKCS#8 PEM), and its
//! client id is `DIR/<n>.id` (one line) when that file exists, else
//! `<prefix><n>` as for plain connections.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use clap::Parser;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::config::loopback;
use crate::error::Error;

/// Most connections one run holds.
pub const MAX_CONNECTIONS: u64 = 100_000;
/// Longest hold: one day.
pub const MAX_HOLD_SECS: u64 = 86_400;

/// Hold N idle MQTT 3.1.1 connections open. Loopback targets only.
#[derive(Debug, Clone, Parser)]
#[command(name = "fleetmq-loadgen idle")]
pub struct IdleArgs {
    /// Broker address: a loopback IP or `localhost`.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Broker port (required, never 0).
    #[arg(long)]
    pub port: u16,
    /// Connections to open and hold.
    #[arg(long, default_value_t = 5000)]
    pub connections: u64,
    /// How long to hold them once all are connected, in seconds; 0 holds
    /// until SIGINT/SIGTERM.
    #[arg(long, default_value_t = 0)]
    pub hold: u64,
    /// Keep Alive in the CONNECT, seconds (0 = none). With one, each
    /// connection sends a PINGREQ every half of it.
    #[arg(long, default_value_t = 60)]
    pub keep_alive: u16,
    /// Connection attempts in flight at once (fleetmq lets 64 sockets per
    /// address wait for their CONNECT by default).
    #[arg(long, default_value_t = 32)]
    pub parallel: usize,
    /// Client id prefix; connection n is `<prefix><n>`. Default
    /// `idle-<pid>-`.
    #[arg(long)]
    pub client_id_prefix: Option<String>,
    /// User name in the CONNECT.
    #[arg(long)]
    pub username: Option<String>,
    /// Password in the CONNECT (needs --username).
    #[arg(long, requires = "username")]
    pub password: Option<String>,
    /// Connect with TLS, trusting this CA (PEM).
    #[arg(long)]
    pub tls_ca: Option<PathBuf>,
    /// Per-connection client certificates: DIR/<n>.crt, DIR/<n>.key and
    /// optionally DIR/<n>.id (needs --tls-ca).
    #[arg(long, requires = "tls_ca")]
    pub tls_certs: Option<PathBuf>,
    /// Server name the TLS certificate is checked against.
    #[arg(long, default_value = "localhost")]
    pub tls_server_name: String,
    /// Bound on connecting everything, in seconds.
    #[arg(long, default_value_t = 120)]
    pub connect_timeout: u64,
}

/// What one idle run saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdleReport {
    /// Connections that got a CONNACK.
    pub connected: usize,
    /// Of those, connections the broker closed during the hold.
    pub lost: usize,
}

/// Opens, holds and closes the connections `args` describe.
pub async fn run_idle(args: IdleArgs) -> Result<IdleReport, Error> {
    let host = loopback(&args.host)?;
    if args.port == 0 {
        return Err(Error::PortZero);
    }
    let count = crate::config::bounded("connections", args.connections, 1, MAX_CONNECTIONS)?;
    crate::config::bounded("hold", args.hold, 0, MAX_HOLD_SECS)?;
    let tls = match &args.tls_ca {
        Some(ca) => Some(TlsSetup::load(ca, &args.tls_server_name)?),
        None => None,
    };
    let prefix = args
        .client_id_prefix
        .clone()
        .unwrap_or_else(|| format!("idle-{}-", std::process::id()));
    let shared = Arc::new(Shared {
        addr: SocketAddr::new(host, args.port),
        keep_alive: args.keep_alive,
        username: args.username.clone(),
        password: args.password.clone(),
        tls,
        certs: args.tls_certs.clone(),
        prefix,
        lost: AtomicUsize::new(0),
        ready: Semaphore::new(0),
        gate: Semaphore::new(args.parallel.max(1)),
    });

    let origin = Instant::now();
    let mut tasks = JoinSet::new();
    for n in 0..count {
        let shared = Arc::clone(&shared);
        tasks.spawn(async move { shared.connection(n).await });
    }
    let deadline = origin + Duration::from_secs(args.connect_timeout.max(1));
    // Each connection adds one permit once CONNACKed; a failure ends its
    // task with an error, which ends the run.
    let wanted = count;
    loop {
        let have = shared.ready.available_permits();
        if have >= usize::try_from(wanted).unwrap_or(usize::MAX) {
            break;
        }
        tokio::select! {
            done = tasks.join_next() => {
                let outcome = done.map(|j| j.unwrap_or_else(|e| Err(Error::Idle {
                    connection: u32::MAX,
                    reason: e.to_string(),
                })));
                match outcome {
                    Some(Err(e)) => {
                        tasks.shutdown().await;
                        return Err(e);
                    }
                    // Closed by the broker right after its CONNACK.
                    Some(Ok(())) => {}
                    None => return Err(Error::IdleTimeout { connected: have, wanted: count, waited: origin.elapsed() }),
                }
            }
            () = tokio::time::sleep_until(deadline) => {
                tasks.shutdown().await;
                return Err(Error::IdleTimeout { connected: have, wanted: count, waited: deadline - origin });
            }
            () = tokio::time::sleep(Duration::from_millis(20)) => {}
        }
    }
    let connected = usize::try_from(count).unwrap_or(usize::MAX);
    println!(
        "connected {connected} in {:.2}s",
        origin.elapsed().as_secs_f64()
    );
    hold(args.hold).await;
    let lost = shared.lost.load(Ordering::Relaxed);
    tasks.shutdown().await;
    Ok(IdleReport { connected, lost })
}

/// Until `secs` passed (0: forever) or SIGINT/SIGTERM.
async fn hold(secs: u64) {
    let timer = async {
        if secs == 0 {
            std::future::pending::<()>().await;
        } else {
            tokio::time::sleep(Duration::from_secs(secs)).await;
        }
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = timer => {}
        () = term => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

struct TlsSetup {
    roots: Arc<rustls::RootCertStore>,
    /// The config without a client certificate, shared by every connection
    /// when there are no per-connection certificates.
    anonymous: Arc<rustls::ClientConfig>,
    server_name: ServerName<'static>,
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

impl TlsSetup {
    fn load(ca: &Path, server_name: &str) -> Result<Self, Error> {
        let bad = |reason: String| Error::Tls {
            path: ca.to_owned(),
            reason,
        };
        let roots = Arc::new(ca_roots(ca)?);
        let anonymous = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| bad(e.to_string()))?
            .with_root_certificates(Arc::clone(&roots))
            .with_no_client_auth();
        let server_name = ServerName::try_from(server_name.to_owned())
            .map_err(|e| bad(format!("server name {server_name}: {e}")))?;
        Ok(Self {
            roots,
            anonymous: Arc::new(anonymous),
            server_name,
        })
    }

    /// The config presenting `DIR/<n>.crt` with `DIR/<n>.key`.
    fn with_cert(&self, dir: &Path, n: u32) -> Result<Arc<rustls::ClientConfig>, Error> {
        let (crt, chain, key_der) = client_identity(dir, &n.to_string())?;
        let bad = |path: &Path, reason: String| Error::Tls {
            path: path.to_owned(),
            reason,
        };
        let config = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| bad(&crt, e.to_string()))?
            .with_root_certificates(Arc::clone(&self.roots))
            .with_client_auth_cert(chain, key_der)
            .map_err(|e| bad(&crt, e.to_string()))?;
        Ok(Arc::new(config))
    }
}

struct Shared {
    addr: SocketAddr,
    keep_alive: u16,
    username: Option<String>,
    password: Option<String>,
    tls: Option<TlsSetup>,
    certs: Option<PathBuf>,
    prefix: String,
    /// Connections closed by the broker during the hold.
    lost: AtomicUsize,
    /// One permit per CONNACKed connection.
    ready: Semaphore,
    /// Bounds connection attempts in flight.
    gate: Semaphore,
}

impl Shared {
    async fn connection(&self, n: u32) -> Result<(), Error> {
        let failed = |reason: String| Error::Idle {
            connection: n,
            reason,
        };
        let permit = self
            .gate
            .acquire()
            .await
            .map_err(|e| failed(e.to_string()))?;
        let tcp = TcpStream::connect(self.addr)
            .await
            .map_err(|e| failed(format!("connect: {e}")))?;
        let client_id = match &self.certs {
            Some(dir) => match std::fs::read_to_string(dir.join(format!("{n}.id"))) {
                Ok(id) => id.trim().to_owned(),
                Err(_) => format!("{}{n}", self.prefix),
            },
            None => format!("{}{n}", self.prefix),
        };
        let connect = connect_packet(
            &client_id,
            self.keep_alive,
            self.username.as_deref(),
            self.password.as_deref(),
        )
        .map_err(failed)?;
        match &self.tls {
            None => self.session(tcp, &connect, permit, n).await,
            Some(tls) => {
                let config = match &self.certs {
                    Some(dir) => tls.with_cert(dir, n)?,
                    None => Arc::clone(&tls.anonymous),
                };
                let stream = tokio_rustls::TlsConnector::from(config)
                    .connect(tls.server_name.clone(), tcp)
                    .await
                    .map_err(|e| failed(format!("TLS: {e}")))?;
                self.session(stream, &connect, permit, n).await
            }
        }
    }

    /// CONNECT, CONNACK, then read until the broker closes, pinging when a
    /// keep alive is set.
    async fn session<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        mut stream: S,
        connect: &[u8],
        permit: tokio::sync::SemaphorePermit<'_>,
        n: u32,
    ) -> Result<(), Error> {
        let failed = |reason: String| Error::Idle {
            connection: n,
            reason,
        };
        stream
            .write_all(connect)
            .await
            .map_err(|e| failed(format!("CONNECT: {e}")))?;
        let mut ack = [0u8; 4];
        stream
            .read_exact(&mut ack)
            .await
            .map_err(|e| failed(format!("CONNACK: {e}")))?;
        if ack[0] != 0x20 || ack[1] != 2 || ack[3] != 0 {
            return Err(failed(format!("refused: CONNACK bytes {ack:02x?}")));
        }
        drop(permit);
        self.ready.add_permits(1);
        let ping = (self.keep_alive > 0).then(|| Duration::from_secs(self.keep_alive.into()) / 2);
        let mut scratch = [0u8; 16];
        loop {
            tokio::select! {
                read = stream.read(&mut scratch) => {
                    // PINGRESPs are read and dropped; EOF or an error is a
                    // connection the broker closed.
                    if !matches!(read, Ok(n) if n > 0) {
                        self.lost.fetch_add(1, Ordering::Relaxed);
                        return Ok(());
                    }
                }
                () = sleep_or_never(ping) => {
                    if stream.write_all(&[0xC0, 0x00]).await.is_err() {
                        self.lost.fetch_add(1, Ordering::Relaxed);
                        return Ok(());
                    }
                }
            }
        }
    }
}

async fn sleep_or_never(d: Option<Duration>) {
    match d {
        Some(d) => tokio::time::sleep(d).await,
        None => std::future::pending().await,
    }
}

/// The CA certificates of the PEM file `ca`, as trust roots (idle
/// connections and connect storms).
pub(crate) fn ca_roots(ca: &Path) -> Result<rustls::RootCertStore, Error> {
    let bad = |e: &dyn std::fmt::Display| Error::Tls {
        path: ca.to_owned(),
        reason: e.to_string(),
    };
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).map_err(|e| bad(&e))? {
        roots.add(cert.map_err(|e| bad(&e))?).map_err(|e| bad(&e))?;
    }
    Ok(roots)
}

/// `DIR/<stem>.crt` (a PEM chain) and `DIR/<stem>.key`, the client identity
/// of one connection (idle connections and connect storms); the
/// certificate's path comes back for later errors about it.
pub(crate) fn client_identity(
    dir: &Path,
    stem: &str,
) -> Result<
    (
        PathBuf,
        Vec<CertificateDer<'static>>,
        PrivateKeyDer<'static>,
    ),
    Error,
> {
    let crt = dir.join(format!("{stem}.crt"));
    let key = dir.join(format!("{stem}.key"));
    let bad = |path: &Path, reason: String| Error::Tls {
        path: path.to_owned(),
        reason,
    };
    let chain = CertificateDer::pem_file_iter(&crt)
        .map_err(|e| bad(&crt, e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(&crt, e.to_string()))?;
    let key_der = PrivateKeyDer::from_pem_file(&key).map_err(|e| bad(&key, e.to_string()))?;
    Ok((crt, chain, key_der))
}

pub(crate) fn connect_packet(
    client_id: &str,
    keep_alive: u16,
    username: Option<&str>,
    password: Option<&str>,
) -> Result<Vec<u8>, String> {
    let mut body = Vec::with_capacity(64);
    body.extend_from_slice(&[0, 4, b'M', b'Q', b'T', b'T', 4]);
    let mut flags = 0x02u8;
    if username.is_some() {
        flags |= 0x80;
    }
    if password.is_some() {
        flags |= 0x40;
    }
    body.push(flags);
    body.extend_from_slice(&keep_alive.to_be_bytes());
    for field in [Some(client_id), username, password].into_iter().flatten() {
        let len = u16::try_from(field.len()).map_err(|_| format!("{field:?} is too long"))?;
        body.extend_from_slice(&len.to_be_bytes());
        body.extend_from_slice(field.as_bytes());
    }
    let mut packet = vec![0x10];
    let mut len = body.len();
    loop {
        let mut byte = u8::try_from(len % 128).unwrap_or(0);
        len /= 128;
        if len > 0 {
            byte |= 0x80;
        }
        packet.push(byte);
        if len == 0 {
            break;
        }
    }
    packet.extend_from_slice(&body);
    Ok(packet)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_packet_is_mqtt_311() {
        let p = connect_packet("c1", 60, None, None).unwrap();
        assert_eq!(
            p,
            [
                0x10, 14, 0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 60, 0, 2, b'c', b'1'
            ]
        );
        let p = connect_packet("c", 0, Some("u"), Some("pw")).unwrap();
        assert_eq!(p[9], 0xC2);
        assert_eq!(&p[p.len() - 4..], &[0, 2, b'p', b'w']);
    }

    #[test]
    fn long_remaining_length_uses_two_bytes() {
        let id = "x".repeat(200);
        let p = connect_packet(&id, 0, None, None).unwrap();
        // 10 bytes of variable header + 2 + 200 = 212 = 0xD4 0x01.
        assert_eq!(&p[..3], &[0x10, 0xD4, 0x01]);
        assert_eq!(p.len(), 3 + 212);
    }

    #[test]
    fn args_parse_and_tls_certs_need_a_ca() {
        let a = IdleArgs::try_parse_from(["idle", "--port", "1", "--connections", "3"]).unwrap();
        assert_eq!((a.connections, a.hold, a.keep_alive), (3, 0, 60));
        assert!(IdleArgs::try_parse_from(["idle", "--port", "1", "--tls-certs", "d"]).is_err());
        assert!(IdleArgs::try_parse_from(["idle", "--port", "1", "--password", "p"]).is_err());
    }
}
