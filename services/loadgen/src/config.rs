//! Command-line arguments and their validation. Every count and size is
//! bounded so one run is bounded in memory and time, and only loopback
//! targets pass: this tool loads the local machine, nothing else.

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};

use crate::error::Error;
use crate::payload::HEADER_LEN;

/// Most connections of each kind.
pub const MAX_PUBLISHERS: u64 = 10_000;
/// Most messages per publisher.
pub const MAX_MESSAGES: u64 = 10_000_000;
/// Largest payload: 1 MiB.
pub const MAX_PAYLOAD: u64 = 1024 * 1024;
/// Most subscribers: enough for a 1 → 1000 fan-out.
pub const MAX_SUBSCRIBERS: u64 = 1000;
/// Most connections of one connect storm.
pub const MAX_CONNECTIONS: u64 = 100_000;
/// Most storm connections in flight at once.
pub const MAX_CONCURRENCY: u64 = 10_000;
/// Longest run: one hour.
pub const MAX_TIMEOUT_SECS: u64 = 3600;
/// Most deliveries one run records: each keeps a latency sample (8 bytes).
pub const MAX_DELIVERIES: u64 = 20_000_000;

/// MQTT load on a loopback broker. `--mode fan-in` (the default): N
/// publishers × M messages of S bytes to `bench/<n>`, K subscribers on
/// `bench/#` (one publisher and many subscribers is a fan-out).
/// `--mode storm`: a connect storm, plain or TLS 1.3 with a client
/// certificate per connection.
#[derive(Debug, Clone, Parser)]
#[command(name = "fleetmq-loadgen", version)]
pub struct Args {
    /// Broker address: a loopback IP or `localhost`.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Broker port. Required, so a run never lands on a default broker by
    /// accident.
    #[arg(long)]
    pub port: u16,
    /// Publisher connections.
    #[arg(long, default_value_t = 50)]
    pub publishers: u64,
    /// Messages per publisher.
    #[arg(long, default_value_t = 1000)]
    pub messages: u64,
    /// Payload size in bytes (at least 16: the header).
    #[arg(long, default_value_t = 64)]
    pub payload: u64,
    /// QoS of publishes and of the subscription: 0 or 1.
    #[arg(long, default_value_t = 0)]
    pub qos: u8,
    /// Subscriber connections, each on `bench/#`.
    #[arg(long, default_value_t = 1)]
    pub subscribers: u64,
    /// Ports the publishers connect to, in turn (publisher n to the n-th
    /// modulo their number): the nodes of a cluster. Default: `--port`.
    #[arg(long, value_delimiter = ',', value_name = "PORT,...")]
    pub publisher_ports: Vec<u16>,
    /// Ports the subscribers connect to, in turn. Default: `--port`.
    #[arg(long, value_delimiter = ',', value_name = "PORT,...")]
    pub subscriber_ports: Vec<u16>,
    /// Bound on the whole run, setup included, in seconds.
    #[arg(long, default_value_t = 60)]
    pub timeout: u64,
    /// Print the result as one JSON line instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Subscribers connect with a persistent session (MQTT 3.1.1 clean
    /// session 0), so each QoS 1 message is stored before its PUBACK.
    #[arg(long)]
    pub persistent_subscribers: bool,
    /// What to run.
    #[arg(long, value_enum, default_value_t = Mode::FanIn)]
    pub mode: Mode,
    /// Storm: connections to open (each connects, gets its CONNACK and
    /// disconnects).
    #[arg(long, default_value_t = 1000)]
    pub connections: u64,
    /// Storm: connections in flight at once.
    #[arg(long, default_value_t = 100)]
    pub concurrency: u64,
    /// Storm over TLS 1.3: the CA file that signed the broker's certificate.
    /// Needs `--certs`.
    #[arg(long, value_name = "FILE", requires = "certs")]
    pub tls_ca: Option<PathBuf>,
    /// Storm over TLS: a directory of client certificates, `NAME.crt` with
    /// `NAME.key` (PEM); NAME is the client id. One pair per connection.
    #[arg(long, value_name = "DIR", requires = "tls_ca")]
    pub certs: Option<PathBuf>,
    /// Storm over TLS: the name the broker's certificate is checked for.
    #[arg(long, default_value = "localhost")]
    pub server_name: String,
}

/// What one invocation runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// Publishers to subscribers through `bench/#` (fan-in or fan-out).
    FanIn,
    /// A connect storm.
    Storm,
}

/// QoS levels the tool publishes and subscribes with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Qos {
    /// QoS 0: done once written to the socket.
    AtMostOnce,
    /// QoS 1: done once PUBACKed.
    AtLeastOnce,
}

impl Qos {
    /// The wire value.
    pub fn level(self) -> u8 {
        match self {
            Qos::AtMostOnce => 0,
            Qos::AtLeastOnce => 1,
        }
    }

    pub(crate) fn to_rumqttc(self) -> rumqttc::QoS {
        match self {
            Qos::AtMostOnce => rumqttc::QoS::AtMostOnce,
            Qos::AtLeastOnce => rumqttc::QoS::AtLeastOnce,
        }
    }
}

/// A validated run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Broker IP, always a loopback address.
    pub host: IpAddr,
    /// Broker port, never 0.
    pub port: u16,
    /// Publisher connections.
    pub publishers: u32,
    /// Where publisher n connects: `publisher_ports[n % len]`; never empty.
    pub publisher_ports: Vec<u16>,
    /// Where subscriber k connects: `subscriber_ports[k % len]`; never empty.
    pub subscriber_ports: Vec<u16>,
    /// Messages per publisher.
    pub messages: u32,
    /// Payload bytes, header included.
    pub payload: usize,
    /// Publish and subscribe QoS.
    pub qos: Qos,
    /// Subscriber connections.
    pub subscribers: u32,
    /// Bound on the whole run.
    pub timeout: Duration,
    /// Subscribers keep a persistent session.
    pub persistent_subscribers: bool,
}

impl Config {
    /// Deliveries a complete run sees: every message reaches every
    /// subscriber.
    pub fn expected_deliveries(&self) -> u64 {
        u64::from(self.publishers) * u64::from(self.messages) * u64::from(self.subscribers)
    }
}

impl TryFrom<Args> for Config {
    type Error = Error;

    fn try_from(a: Args) -> Result<Self, Error> {
        let host = loopback(&a.host)?;
        let ports = |given: &[u16]| match given {
            [] => vec![a.port],
            some => some.to_vec(),
        };
        let (publisher_ports, subscriber_ports) =
            (ports(&a.publisher_ports), ports(&a.subscriber_ports));
        if a.port == 0 || publisher_ports.contains(&0) || subscriber_ports.contains(&0) {
            return Err(Error::PortZero);
        }
        let qos = match a.qos {
            0 => Qos::AtMostOnce,
            1 => Qos::AtLeastOnce,
            other => return Err(Error::UnsupportedQoS(other)),
        };
        let publishers = bounded("publishers", a.publishers, 1, MAX_PUBLISHERS)?;
        let messages = bounded("messages", a.messages, 1, MAX_MESSAGES)?;
        let payload = bounded("payload", a.payload, HEADER_LEN as u64, MAX_PAYLOAD)?;
        let subscribers = bounded("subscribers", a.subscribers, 1, MAX_SUBSCRIBERS)?;
        let timeout = bounded("timeout", a.timeout, 1, MAX_TIMEOUT_SECS)?;
        let config = Config {
            host,
            port: a.port,
            publishers,
            publisher_ports,
            subscriber_ports,
            messages,
            payload: usize::try_from(payload).map_err(|_| out_of_range("payload", a.payload))?,
            qos,
            subscribers,
            timeout: Duration::from_secs(timeout.into()),
            persistent_subscribers: a.persistent_subscribers,
        };
        let deliveries = config.expected_deliveries();
        if deliveries > MAX_DELIVERIES {
            return Err(Error::TooManyDeliveries {
                deliveries,
                max: MAX_DELIVERIES,
            });
        }
        Ok(config)
    }
}

/// A validated connect storm.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StormConfig {
    /// Broker IP, always a loopback address.
    pub host: IpAddr,
    /// Broker port, never 0.
    pub port: u16,
    /// Connections to open.
    pub connections: u32,
    /// Connections in flight at once.
    pub concurrency: u32,
    /// TLS files; `None` for plain TCP.
    pub tls: Option<TlsFiles>,
    /// The name the broker's certificate must carry.
    pub server_name: String,
    /// Bound on the whole storm.
    pub timeout: Duration,
}

/// Where a TLS storm finds its trust anchor and client certificates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// CA file for the broker's certificate.
    pub ca: PathBuf,
    /// Directory of `NAME.crt` / `NAME.key` pairs.
    pub certs: PathBuf,
}

impl TryFrom<&Args> for StormConfig {
    type Error = Error;

    fn try_from(a: &Args) -> Result<Self, Error> {
        let host = loopback(&a.host)?;
        if a.port == 0 {
            return Err(Error::PortZero);
        }
        let tls = match (&a.tls_ca, &a.certs) {
            (Some(ca), Some(certs)) => Some(TlsFiles {
                ca: ca.clone(),
                certs: certs.clone(),
            }),
            // clap's `requires` makes these a pair.
            _ => None,
        };
        Ok(StormConfig {
            host,
            port: a.port,
            connections: bounded("connections", a.connections, 1, MAX_CONNECTIONS)?,
            concurrency: bounded("concurrency", a.concurrency, 1, MAX_CONCURRENCY)?,
            tls,
            server_name: a.server_name.clone(),
            timeout: Duration::from_secs(
                bounded("timeout", a.timeout, 1, MAX_TIMEOUT_SECS)?.into(),
            ),
        })
    }
}

/// `localhost` or a loopback IP (brackets allowed around IPv6). Other names
/// are refused rather than resolved: a name could point anywhere.
pub(crate) fn loopback(host: &str) -> Result<IpAddr, Error> {
    let refused = || Error::NotLoopback {
        host: host.to_owned(),
    };
    if host.eq_ignore_ascii_case("localhost") {
        return Ok(IpAddr::V4(Ipv4Addr::LOCALHOST));
    }
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let ip: IpAddr = bare.parse().map_err(|_| refused())?;
    // `::ffff:127.0.0.1` is loopback too; `to_canonical` unwraps it.
    if ip.to_canonical().is_loopback() {
        Ok(ip)
    } else {
        Err(refused())
    }
}

pub(crate) fn bounded(option: &'static str, value: u64, min: u64, max: u64) -> Result<u32, Error> {
    if (min..=max).contains(&value) {
        u32::try_from(value).map_err(|_| out_of_range(option, value))
    } else {
        Err(Error::OutOfRange {
            option,
            value,
            min,
            max,
        })
    }
}

fn out_of_range(option: &'static str, value: u64) -> Error {
    Error::OutOfRange {
        option,
        value,
        min: 0,
        max: u64::from(u32::MAX),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(extra: &[&str]) -> Result<Args, clap::Error> {
        let mut argv = vec!["fleetmq-loadgen", "--port", "18830"];
        argv.extend_from_slice(extra);
        Args::try_parse_from(argv)
    }

    fn config(extra: &[&str]) -> Result<Config, Error> {
        Config::try_from(args(extra).unwrap())
    }

    #[test]
    fn defaults_are_a_small_qos0_fan_in_on_loopback() {
        let c = config(&[]).unwrap();
        assert_eq!(c.host, IpAddr::V4(Ipv4Addr::LOCALHOST));
        assert_eq!(c.port, 18830);
        assert_eq!((c.publishers, c.messages, c.payload), (50, 1000, 64));
        assert_eq!((c.qos, c.subscribers), (Qos::AtMostOnce, 1));
        assert_eq!(c.timeout, Duration::from_secs(60));
        assert_eq!(c.expected_deliveries(), 50_000);
        assert!(!args(&[]).unwrap().json);
    }

    #[test]
    fn publishers_and_subscribers_may_go_to_other_ports_but_never_zero() {
        let c = config(&[]).unwrap();
        assert_eq!(
            (c.publisher_ports, c.subscriber_ports),
            (vec![18830], vec![18830])
        );
        let c = config(&[
            "--publisher-ports",
            "1001,1002,1003",
            "--subscriber-ports",
            "1002",
        ])
        .unwrap();
        assert_eq!(c.publisher_ports, vec![1001, 1002, 1003]);
        assert_eq!(c.subscriber_ports, vec![1002]);
        assert!(matches!(
            config(&["--subscriber-ports", "1001,0"]),
            Err(Error::PortZero)
        ));
    }

    #[test]
    fn port_is_required_and_not_zero() {
        assert!(Args::try_parse_from(["fleetmq-loadgen"]).is_err());
        let a = Args::try_parse_from(["fleetmq-loadgen", "--port", "0"]).unwrap();
        assert!(matches!(Config::try_from(a), Err(Error::PortZero)));
    }

    #[test]
    fn all_options_parse() {
        let a = args(&[
            "--host",
            "::1",
            "--publishers",
            "5",
            "--messages",
            "200",
            "--payload",
            "128",
            "--qos",
            "1",
            "--subscribers",
            "2",
            "--timeout",
            "30",
            "--json",
        ])
        .unwrap();
        assert!(a.json);
        let c = Config::try_from(a).unwrap();
        assert_eq!(c.host, "::1".parse::<IpAddr>().unwrap());
        assert_eq!((c.publishers, c.messages, c.payload), (5, 200, 128));
        assert_eq!((c.qos, c.subscribers), (Qos::AtLeastOnce, 2));
        assert_eq!(c.timeout, Duration::from_secs(30));
        assert_eq!(c.expected_deliveries(), 2000);
    }

    #[test]
    fn loopback_hosts_are_accepted() {
        for host in [
            "127.0.0.1",
            "127.1.2.3",
            "::1",
            "[::1]",
            "localhost",
            "LOCALHOST",
            "::ffff:127.0.0.1",
        ] {
            assert!(loopback(host).is_ok(), "{host}");
        }
    }

    #[test]
    fn other_hosts_are_refused() {
        for host in [
            "0.0.0.0",
            "::",
            "10.0.0.1",
            "192.168.1.10",
            "8.8.8.8",
            "::ffff:10.0.0.1",
            "2001:db8::1",
            "example.com",
            "localhost.example.com",
            "127.0.0.1.nip.io",
            "",
            "[127.0.0.1",
        ] {
            let err = config(&["--host", host]).unwrap_err();
            assert!(matches!(err, Error::NotLoopback { .. }), "{host}: {err}");
        }
    }

    #[test]
    fn qos_above_one_is_refused() {
        assert!(matches!(
            config(&["--qos", "2"]),
            Err(Error::UnsupportedQoS(2))
        ));
    }

    #[test]
    fn counts_and_sizes_are_bounded() {
        for (option, value) in [
            ("--publishers", "0"),
            ("--publishers", "10001"),
            ("--messages", "0"),
            ("--messages", "10000001"),
            ("--payload", "15"),
            ("--payload", "1048577"),
            ("--subscribers", "0"),
            ("--subscribers", "1001"),
            ("--timeout", "0"),
            ("--timeout", "3601"),
        ] {
            let err = config(&[option, value]).unwrap_err();
            match err {
                Error::OutOfRange { option: o, .. } => assert_eq!(format!("--{o}"), option),
                other => panic!("{option} {value}: {other}"),
            }
        }
        // The edges themselves are fine.
        config(&["--payload", "16", "--publishers", "1", "--messages", "1"]).unwrap();
    }

    #[test]
    fn total_deliveries_are_bounded() {
        let err = config(&["--publishers", "10000", "--messages", "10000"]).unwrap_err();
        assert!(matches!(
            err,
            Error::TooManyDeliveries {
                deliveries: 100_000_000,
                ..
            }
        ));
    }

    #[test]
    fn storm_options_parse_and_tls_needs_both_files() {
        let a = args(&[
            "--mode",
            "storm",
            "--connections",
            "5000",
            "--concurrency",
            "100",
        ])
        .unwrap();
        assert_eq!(a.mode, Mode::Storm);
        let c = StormConfig::try_from(&a).unwrap();
        assert_eq!(
            (c.connections, c.concurrency, c.tls.clone()),
            (5000, 100, None)
        );
        assert_eq!(c.server_name, "localhost");
        let a = args(&["--mode", "storm", "--tls-ca", "ca.pem", "--certs", "d"]).unwrap();
        let tls = StormConfig::try_from(&a).unwrap().tls.unwrap();
        assert_eq!((tls.ca, tls.certs), ("ca.pem".into(), "d".into()));
        assert!(args(&["--mode", "storm", "--tls-ca", "ca.pem"]).is_err());
        assert!(args(&["--mode", "storm", "--certs", "d"]).is_err());
        for (option, value) in [("--connections", "0"), ("--concurrency", "10001")] {
            let a = args(&["--mode", "storm", option, value]).unwrap();
            assert!(matches!(
                StormConfig::try_from(&a),
                Err(Error::OutOfRange { .. })
            ));
        }
        let a = args(&["--mode", "storm", "--host", "10.0.0.1"]).unwrap();
        assert!(matches!(
            StormConfig::try_from(&a),
            Err(Error::NotLoopback { .. })
        ));
    }

    #[test]
    fn negative_or_garbage_numbers_do_not_parse() {
        assert!(args(&["--publishers", "-1"]).is_err());
        assert!(args(&["--qos", "300"]).is_err());
        assert!(args(&["--messages", "many"]).is_err());
    }
}
