//! Byte-stream adapters for transports that are not a plain socket. TLS
//! needs none (`tokio_rustls` streams are `AsyncRead + AsyncWrite`).

pub(crate) mod ws;
