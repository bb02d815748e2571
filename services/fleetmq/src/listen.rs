//! Binding listeners. A taken port is the most common first-run failure (this
//! very machine may run another MQTT broker on 1883), so the error names the
//! port and the flag and environment variable that move it.

use std::io::ErrorKind;
use std::net::SocketAddr;

use tokio::net::TcpListener;

use crate::config::Setting;
use crate::error::Error;

pub async fn bind(
    what: &'static str,
    addr: SocketAddr,
    setting: Setting,
) -> Result<TcpListener, Error> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| match source.kind() {
            ErrorKind::AddrInUse => Error::PortInUse {
                what,
                addr,
                setting,
            },
            _ => Error::Bind {
                what,
                addr,
                setting,
                source,
            },
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::HTTP_LISTEN;

    #[tokio::test]
    async fn taken_port_names_port_flag_and_env() {
        let taken = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = taken.local_addr().unwrap();
        let msg = bind("HTTP", addr, HTTP_LISTEN)
            .await
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains(&format!("port {} is already in use", addr.port())),
            "{msg}"
        );
        assert!(
            msg.contains("--http-listen") && msg.contains("FLEETMQ_HTTP_LISTEN"),
            "{msg}"
        );
    }

    #[tokio::test]
    async fn port_zero_picks_a_free_port() {
        let listener = bind("HTTP", "127.0.0.1:0".parse().unwrap(), HTTP_LISTEN)
            .await
            .unwrap();
        assert_ne!(listener.local_addr().unwrap().port(), 0);
    }
}
