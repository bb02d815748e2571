//! Byte-stream adapters for transports that are not a plain socket: TLS on
//! rustls's unbuffered API ([`tls`]) and WebSocket ([`ws`]).

pub(crate) mod tls;
pub(crate) mod ws;
