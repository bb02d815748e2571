//! MQTT over TLS on rustls's unbuffered API, so that an idle TLS connection
//! holds no buffer (issue 16).
//!
//! rustls's buffered connection (what `tokio_rustls` drives) keeps a 4 KiB
//! read buffer for each connection from its first read to its end: for a
//! fleet that sits idle between PINGREQs that was a quarter of a TLS
//! connection's memory. Here the buffers are ours: ciphertext is read
//! through the connection layer's per-thread scratch buffer and appended
//! to `incoming` only as it arrives, and `incoming`, `plaintext` and
//! `outgoing` are let go whenever they are empty, as the plain
//! connection's buffers are (`conn::buffers`). rustls keeps only its
//! record keys and handshake state.
//!
//! Reads are cancel-safe like a socket's: bytes read from the socket are
//! kept in `incoming` until rustls takes them.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes, BytesMut};
use rustls::server::UnbufferedServerConnection;
use rustls::unbuffered::{ConnectionState, EncodeError, EncryptError, UnbufferedStatus};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::conn::buffers::{Pool, poll_read_pooled, release_if_empty};

/// Plaintext taken per `poll_write`: bounds `outgoing` when the socket
/// is slower than the connection's writes.
const MAX_WRITE: usize = 64 * 1024;

/// A server-side TLS stream over `S` (a TCP socket).
pub(crate) struct TlsStream<S> {
    io: S,
    conn: UnbufferedServerConnection,
    /// Ciphertext from the peer that rustls has not taken yet.
    incoming: BytesMut,
    /// Decrypted application data not yet read.
    plaintext: BytesMut,
    /// Records encoded or encrypted, not yet written to the socket.
    outgoing: BytesMut,
    /// The peer sent close_notify or closed its socket.
    read_closed: bool,
    /// We sent close_notify: nothing more may be written.
    write_closed: bool,
}

/// What [`TlsStream::process`] does once rustls has taken every whole
/// record: nothing more, encrypt application data, or close.
#[derive(Clone, Copy)]
enum Then<'a> {
    Read,
    Encrypt(&'a [u8]),
    CloseNotify,
}

/// How a handshake failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HandshakeError {
    #[error("{0}")]
    Tls(#[from] rustls::Error),
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("peer closed the connection during the handshake")]
    Closed,
}

/// Runs the server side of a TLS handshake on `io`.
pub(crate) async fn accept<S>(
    config: Arc<rustls::ServerConfig>,
    io: S,
) -> Result<TlsStream<S>, HandshakeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut tls = TlsStream {
        io,
        conn: UnbufferedServerConnection::new(config)?,
        incoming: BytesMut::new(),
        plaintext: BytesMut::new(),
        outgoing: BytesMut::new(),
        read_closed: false,
        write_closed: false,
    };
    loop {
        let processed = tls.process(Then::Read);
        // Our flight, or the alert that says why the handshake failed.
        let flushed = std::future::poll_fn(|cx| tls.poll_flush_outgoing(cx)).await;
        processed?;
        flushed?;
        if !tls.conn.is_handshaking() {
            return Ok(tls);
        }
        if tls.read_closed {
            return Err(HandshakeError::Closed);
        }
        let TlsStream { io, incoming, .. } = &mut tls;
        if std::future::poll_fn(|cx| poll_read_pooled(Pool::Transport, io, cx, incoming)).await?
            == 0
        {
            return Err(HandshakeError::Closed);
        }
    }
}

impl<S> TlsStream<S> {
    /// The client's certificate chain (DER, leaf first), if it sent one.
    pub(crate) fn peer_certificates(&self) -> Option<Vec<Bytes>> {
        self.conn.peer_certificates().map(|chain| {
            chain
                .iter()
                .map(|c| Bytes::copy_from_slice(c.as_ref()))
                .collect()
        })
    }

    /// Lets rustls take every whole record in `incoming`: application data
    /// goes to `plaintext`, handshake records, alerts and what `then` asks
    /// for to `outgoing`. Returns whether `then` was done (it needs the
    /// handshake complete and the connection not closed for writing).
    fn process(&mut self, then: Then<'_>) -> Result<bool, rustls::Error> {
        let mut done = matches!(then, Then::Read);
        loop {
            let UnbufferedStatus { mut discard, state } =
                self.conn.process_tls_records(&mut self.incoming);
            let mut stop = false;
            let state = match state {
                Ok(state) => state,
                Err(e) => {
                    self.incoming.advance(discard);
                    self.queue_alert();
                    return Err(e);
                }
            };
            match state {
                ConnectionState::ReadTraffic(mut traffic) => {
                    while let Some(record) = traffic.next_record() {
                        let record = record?;
                        discard += record.discard;
                        self.plaintext.extend_from_slice(record.payload);
                    }
                }
                ConnectionState::EncodeTlsData(mut encode) => {
                    append(&mut self.outgoing, 0, |out| match encode.encode(out) {
                        Ok(n) => Ok(n),
                        Err(EncodeError::InsufficientSize(e)) => Err(Some(e.required_size)),
                        Err(EncodeError::AlreadyEncoded) => Err(None),
                    })?;
                }
                // `outgoing` is ours to write; rustls only needs to know
                // that the records are taken.
                ConnectionState::TransmitTlsData(transmit) => transmit.done(),
                ConnectionState::WriteTraffic(mut traffic) => {
                    match then {
                        Then::Read => {}
                        Then::Encrypt(data) => {
                            // A record's header, tag and content type per
                            // 16 KiB of data.
                            let hint = data.len() + (data.len() / 16_384 + 1) * 64;
                            append(&mut self.outgoing, hint, |out| {
                                traffic.encrypt(data, out).map_err(encrypt_room)
                            })?;
                            done = true;
                        }
                        Then::CloseNotify => {
                            append(&mut self.outgoing, 64, |out| {
                                traffic.queue_close_notify(out).map_err(encrypt_room)
                            })?;
                            self.write_closed = true;
                            done = true;
                        }
                    }
                    stop = true;
                }
                ConnectionState::BlockedHandshake => stop = true,
                ConnectionState::PeerClosed => self.read_closed = true,
                ConnectionState::Closed => {
                    self.read_closed = true;
                    stop = true;
                }
                // 0-RTT data is off (`max_early_data_size` 0); a state a
                // later rustls adds is not one we know how to serve.
                _ => {
                    return Err(rustls::Error::General(
                        "unexpected TLS connection state".into(),
                    ));
                }
            }
            self.incoming.advance(discard);
            if stop {
                release_if_empty(&mut self.incoming);
                return Ok(done);
            }
        }
    }

    /// After a fatal error rustls has an alert for the peer: encoded into
    /// `outgoing`, written if the socket takes it.
    fn queue_alert(&mut self) {
        let UnbufferedStatus { state, .. } = self.conn.process_tls_records(&mut []);
        if let Ok(ConnectionState::EncodeTlsData(mut encode)) = state {
            let _ = append(&mut self.outgoing, 0, |out| match encode.encode(out) {
                Ok(n) => Ok(n),
                Err(EncodeError::InsufficientSize(e)) => Err(Some(e.required_size)),
                Err(EncodeError::AlreadyEncoded) => Err(None),
            });
        }
    }
}

impl<S: AsyncWrite + Unpin> TlsStream<S> {
    /// Writes `outgoing` to the socket.
    fn poll_flush_outgoing(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.outgoing.is_empty() {
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, &self.outgoing))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.outgoing.advance(n);
        }
        release_if_empty(&mut self.outgoing);
        Poll::Ready(Ok(()))
    }
}

/// Appends what `write` puts into a slice of `out`: `Err(Some(n))` asks for
/// `n` bytes of room (nothing was written), `Err(None)` fails.
fn append(
    out: &mut BytesMut,
    hint: usize,
    mut write: impl FnMut(&mut [u8]) -> Result<usize, Option<usize>>,
) -> Result<(), rustls::Error> {
    let start = out.len();
    let mut room = hint;
    loop {
        out.resize(start + room, 0);
        match write(&mut out[start..]) {
            Ok(n) => {
                out.truncate(start + n);
                return Ok(());
            }
            Err(Some(needed)) if needed > room => {
                room = needed;
            }
            Err(_) => {
                out.truncate(start);
                return Err(rustls::Error::General("cannot encode a TLS record".into()));
            }
        }
    }
}

fn encrypt_room(e: EncryptError) -> Option<usize> {
    match e {
        EncryptError::InsufficientSize(e) => Some(e.required_size),
        EncryptError::EncryptExhausted => None,
    }
}

fn tls_io(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for TlsStream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if !this.plaintext.is_empty() {
                let n = buf.remaining().min(this.plaintext.len());
                buf.put_slice(&this.plaintext[..n]);
                this.plaintext.advance(n);
                release_if_empty(&mut this.plaintext);
                return Poll::Ready(Ok(()));
            }
            if this.read_closed {
                return Poll::Ready(Ok(()));
            }
            if let Err(e) = this.process(Then::Read) {
                // The alert that says why, if the socket takes it now.
                let _ = this.poll_flush_outgoing(cx);
                return Poll::Ready(Err(tls_io(e)));
            }
            // A reply rustls owes the peer (a key update, an alert) goes
            // out when the socket takes it; a socket that does not is
            // noticed by the connection's own writes.
            if !this.outgoing.is_empty() {
                let _ = this.poll_flush_outgoing(cx)?;
            }
            if !this.plaintext.is_empty() || this.read_closed {
                continue;
            }
            // A peer that sends what needs replies (key updates) and never
            // reads them would grow `outgoing` without bound: past
            // MAX_WRITE unsent, it is not read until it reads.
            if this.outgoing.len() > MAX_WRITE {
                ready!(this.poll_flush_outgoing(cx))?;
            }
            let TlsStream { io, incoming, .. } = this;
            if ready!(poll_read_pooled(Pool::Transport, io, cx, incoming))? == 0 {
                this.read_closed = true;
            }
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for TlsStream<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if data.is_empty() {
            return Poll::Ready(Ok(0));
        }
        // What was encrypted before goes first: `outgoing` stays bounded.
        ready!(this.poll_flush_outgoing(cx))?;
        if this.write_closed {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        let data = &data[..data.len().min(MAX_WRITE)];
        if !this.process(Then::Encrypt(data)).map_err(tls_io)? {
            // Only before the handshake ends or after close_notify.
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::NotConnected,
                "TLS connection cannot carry data now",
            )));
        }
        // Written now if the socket takes it, else by the next flush.
        let _ = this.poll_flush_outgoing(cx)?;
        Poll::Ready(Ok(data.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_flush_outgoing(cx))?;
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.write_closed {
            // Best effort: a connection that failed has no close_notify to send.
            let _ = this.process(Then::CloseNotify);
            this.write_closed = true;
        }
        ready!(this.poll_flush_outgoing(cx))?;
        Pin::new(&mut this.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests;
