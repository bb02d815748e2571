//! MQTT over WebSocket (MQTT 5.0 chapter 6): the handshake (path `/mqtt`,
//! subprotocol `mqtt`) and [`WsStream`], which turns binary frames into
//! the byte stream the connection code reads. An MQTT packet may span
//! frames and a frame may hold several packets (MQTT-6.0.0-2), so frames
//! are just chunks of the stream.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use futures::{Sink, Stream};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::Error;

/// The WebSocket path clients connect to.
pub(crate) const PATH: &str = "/mqtt";

fn reject(status: StatusCode, why: &str) -> ErrorResponse {
    let mut r = ErrorResponse::new(Some(why.to_owned()));
    *r.status_mut() = status;
    r
}

/// Checks the upgrade request: path `/mqtt`, and `mqtt` among the offered
/// subprotocols (MQTT-6.0.0-3), which the response then names.
#[allow(clippy::result_large_err)] // the shape tungstenite's callback asks for
fn check(request: &Request, mut response: Response) -> Result<Response, ErrorResponse> {
    if request.uri().path() != PATH {
        return Err(reject(StatusCode::NOT_FOUND, "MQTT is served on /mqtt"));
    }
    let offers_mqtt = request
        .headers()
        .get_all("sec-websocket-protocol")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.trim().eq_ignore_ascii_case("mqtt"));
    if !offers_mqtt {
        return Err(reject(StatusCode::BAD_REQUEST, "subprotocol mqtt required"));
    }
    response
        .headers_mut()
        .insert("sec-websocket-protocol", HeaderValue::from_static("mqtt"));
    Ok(response)
}

/// Largest binary frame we write: a write of the connection (a batch of
/// packets) goes out as frames of at most this, so the write buffer never
/// has to hold a whole batch (MQTT-6.0.0-2 lets packets span frames).
const OUT_FRAME_MAX: usize = 64 * 1024;
/// Bytes tungstenite gathers before writing to the socket.
const WRITE_BUFFER: usize = 64 * 1024;
/// Cap on tungstenite's write buffer: one gathered buffer, one frame and
/// its header, and room for the control frames it answers by itself. The
/// default is unlimited, and a peer that sends pings and never reads made
/// pongs pile up there without bound (issue 13, item 14).
const MAX_WRITE_BUFFER: usize = WRITE_BUFFER + OUT_FRAME_MAX + 4096;
/// Pings that found the previous pong still unwritten, in a row, after
/// which the peer is taken for one that does not read and disconnected.
/// A reading peer empties the socket, so its pongs are flushed at once.
const MAX_UNFLUSHED_PINGS: u32 = 16;

/// Runs the WebSocket handshake. `max_packet_size` bounds what tungstenite
/// buffers per message before the MQTT decoder sees it (a message may hold
/// several packets, hence the slack).
pub(crate) async fn accept(stream: TcpStream, max_packet_size: usize) -> Result<WsStream, Error> {
    let limit = max_packet_size.saturating_add(64 * 1024);
    let config = WebSocketConfig::default()
        .max_message_size(Some(limit))
        .max_frame_size(Some(limit))
        .write_buffer_size(WRITE_BUFFER)
        .max_write_buffer_size(MAX_WRITE_BUFFER);
    let ws = tokio_tungstenite::accept_hdr_async_with_config(stream, check, Some(config))
        .await
        .map_err(|e| Error::Handshake(e.to_string()))?;
    Ok(WsStream {
        inner: ws,
        chunk: Bytes::new(),
        unflushed_pings: 0,
    })
}

/// A WebSocket connection as a byte stream.
pub(crate) struct WsStream {
    inner: WebSocketStream<TcpStream>,
    /// The rest of the last binary frame.
    chunk: Bytes,
    /// Pings in a row that arrived while our writes were blocked.
    unflushed_pings: u32,
}

fn to_io(e: tokio_tungstenite::tungstenite::Error) -> io::Error {
    io::Error::other(e)
}

impl AsyncRead for WsStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            if !self.chunk.is_empty() {
                let n = self.chunk.len().min(buf.remaining());
                let chunk = self.chunk.split_to(n);
                buf.put_slice(&chunk);
                return Poll::Ready(Ok(()));
            }
            match ready!(Pin::new(&mut self.inner).poll_next(cx)) {
                None | Some(Ok(Message::Close(_))) => return Poll::Ready(Ok(())),
                Some(Ok(Message::Binary(b))) => self.chunk = b,
                // Pings are answered by tungstenite itself; whether the
                // answer got out says whether the peer reads at all.
                Some(Ok(Message::Ping(_))) => {
                    match Sink::<Message>::poll_flush(Pin::new(&mut self.inner), cx) {
                        Poll::Ready(Ok(())) => self.unflushed_pings = 0,
                        Poll::Ready(Err(e)) => return Poll::Ready(Err(to_io(e))),
                        Poll::Pending => {
                            self.unflushed_pings += 1;
                            if self.unflushed_pings > MAX_UNFLUSHED_PINGS {
                                crate::metrics::connection_refused("ws_unread_pongs");
                                return Poll::Ready(Err(io::Error::new(
                                    io::ErrorKind::InvalidData,
                                    "WebSocket peer sends pings but does not read the pongs",
                                )));
                            }
                        }
                    }
                }
                Some(Ok(Message::Pong(_) | Message::Frame(_))) => {}
                // MQTT-6.0.0-1: anything but binary frames closes.
                Some(Ok(Message::Text(_))) => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "text frame on an MQTT WebSocket",
                    )));
                }
                Some(Err(e)) => return Poll::Ready(Err(to_io(e))),
            }
        }
    }
}

impl AsyncWrite for WsStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let inner = Pin::new(&mut self.inner);
        ready!(Sink::<Message>::poll_ready(inner, cx)).map_err(to_io)?;
        // One binary frame per write, of at most OUT_FRAME_MAX: the
        // connection writes a whole batch of packets at once, and the
        // caller's write_all comes back for the rest once this is out.
        let n = buf.len().min(OUT_FRAME_MAX);
        let frame = buf.get(..n).unwrap_or(buf);
        Pin::new(&mut self.inner)
            .start_send(Message::Binary(Bytes::copy_from_slice(frame)))
            .map_err(to_io)?;
        Poll::Ready(Ok(n))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Sink::<Message>::poll_flush(Pin::new(&mut self.inner), cx).map_err(to_io)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Sink::<Message>::poll_close(Pin::new(&mut self.inner), cx).map_err(to_io)
    }
}
