//! One client connection, generic over the byte stream (TCP, TLS,
//! WebSocket): the CONNECT handshake ([`handshake`]), the read/write loop
//! (here), packet handling ([`inbound`]), encoding and batching
//! ([`outbound`]) and what happens when it ends ([`will`]).
//!
//! The loop is one task. Each turn it moves queued deliveries from the
//! session into the encode buffer (up to the client's Receive Maximum of
//! QoS 1/2 in flight), writes the buffer in one go, then waits for the
//! first of: bytes from the client, a wake of its `ConnControl` (new
//! deliveries, a takeover, shutdown), the keep-alive deadline. Nothing
//! that wait polls holds state of its own but the timer: the read goes
//! through [`buffers::poll_read_pooled`], the wake is an `AtomicWaker` in
//! the `ConnControl`, so a waiting connection's future stays small
//! (issue 16). Writes happen outside the wait, under `write_timeout`: a
//! client that stops reading is disconnected. Waiting, a connection holds
//! no read or encode buffer ([`buffers`]).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::num::NonZeroU16;
use std::sync::Arc;
use std::task::Poll;

use bytes::BytesMut;
use mqtt::{ConnAck, Disconnect, LastWill, ProtocolVersion, ReasonCode, TopicName, decode};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, error, info, info_span, warn};

use crate::Error;
use crate::auth::Identity;
use crate::broker::Broker;
use crate::metrics;
use crate::session::{ConnControl, Session};
use crate::tenant::Tenant;

pub(crate) mod buffers;
mod handshake;
mod inbound;
mod outbound;
mod throttle;
mod will;

pub(crate) use will::arm_restored;

use outbound::Outbound;
use throttle::{Pace, Stalled};

/// Batch size per turn: bounds how long one busy session keeps its
/// connection from reading.
const PUMP_BATCH: usize = 256;

/// How a connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum End {
    /// The socket closed or failed without a DISCONNECT.
    Lost,
    /// The client sent DISCONNECT with this reason.
    Client(ReasonCode),
    /// We close it with this reason.
    Server(ReasonCode),
}

/// A connection after a successful CONNECT.
pub(crate) struct Conn {
    /// Where the client connects from, and over what: for [`Conn::span`].
    peer_addr: SocketAddr,
    proto: &'static str,
    broker: Broker,
    tenant: Arc<Tenant>,
    session: Arc<Session>,
    ctl: Arc<ConnControl>,
    identity: Identity,
    client_id: Arc<str>,
    version: ProtocolVersion,
    /// 1.5 × the keep alive in force (MQTT-3.1.2-22), if any.
    keep_alive: Option<Duration>,
    /// Boxed, like `stalled`: most connections have none, and a
    /// connection is kept small for the many that sit idle (issue 16).
    will: Option<Box<LastWill>>,
    /// Session Expiry Interval in force, seconds.
    session_expiry: u32,
    out: Outbound,
    /// The client's Receive Maximum: our in-flight window (MQTT-3.3.4-7).
    receive_maximum: usize,
    /// Client → server topic aliases (3.3.2.3.4); made at the first one
    /// (most clients never send one). Boxed although a map is on the heap
    /// already: `None` is 8 bytes of every idle connection, an empty map 48.
    #[allow(clippy::box_collection)]
    in_aliases: Option<Box<HashMap<NonZeroU16, TopicName>>>,
    /// Whether an existing session was resumed (Session Present).
    resumed: bool,
    /// PUBACK/PUBREC waiting for the retained store (QoS 1/2 retained
    /// publishes), and those queued behind them; sent before the next write.
    deferred: Vec<(Option<crate::store::Durability>, mqtt::Packet)>,
    /// The publish rate limiter; `None` when nothing is limited. Boxed:
    /// about a hundred bytes that most connections would hold unused.
    limiter: Option<Box<crate::limits::Limiter>>,
    /// MQTT 5 PUBLISHes refused for the rate limit in a row.
    strikes: u32,
    /// A 3.1.1 PUBLISH held back by the rate limit.
    stalled: Option<Box<Stalled>>,
    /// Sessions the last PUBLISH left at their high-water mark: the
    /// socket is not read until they drain (`crate::backpressure`).
    paused: Vec<Arc<Session>>,
    /// The listener's place the connection holds (`Admission::places`):
    /// here rather than in the task's future, where it would be 16 bytes
    /// more of every connection's task for its whole life (issue 16).
    place: Option<tokio::sync::OwnedSemaphorePermit>,
    /// The `conn` span of the current stretch of work (see
    /// [`Conn::span`]): made at its first use, dropped before waiting.
    /// Boxed: 40 bytes of every idle connection for a value it holds only
    /// while working (a box costs far less than the span it holds).
    active_span: Option<Box<tracing::Span>>,
}

/// Where a connection comes from.
#[derive(Debug, Clone)]
pub(crate) struct Peer {
    pub(crate) addr: SocketAddr,
    /// `tcp`, `tls` or `ws`.
    pub(crate) proto: &'static str,
    /// The TLS client certificate chain (DER, leaf first), if any.
    pub(crate) certificates: Option<Vec<bytes::Bytes>>,
}

/// A socket's standing with its listener: pending until its CONNECT
/// arrives, then it needs one of the listener's `places`.
#[derive(Debug)]
pub(crate) struct Admission {
    pub(crate) pending: crate::admission::Pending,
    pub(crate) places: Arc<tokio::sync::Semaphore>,
}

#[cfg(test)]
impl Admission {
    /// Room for everyone, for tests that do not exercise the caps.
    pub(crate) fn unlimited() -> Self {
        let pending = crate::admission::PendingConnects::new(usize::MAX, usize::MAX);
        Self {
            pending: pending
                .admit(std::net::IpAddr::from([127, 0, 0, 1]))
                .unwrap_or_else(|_| unreachable!("no cap")),
            places: Arc::new(tokio::sync::Semaphore::new(
                tokio::sync::Semaphore::MAX_PERMITS,
            )),
        }
    }
}

/// Serves one connection until it ends; never fails the caller.
///
/// Not an `async fn`: its arguments would be kept in its future once more
/// beside the block that owns them, for the connection's life (issue 16).
pub(crate) fn serve<S>(
    mut stream: S,
    peer: Peer,
    broker: Broker,
    shutdown: CancellationToken,
    admission: Admission,
) -> impl std::future::Future<Output = ()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let conn_id = broker.next_conn_id();
    // The handshake's; the tenant and client id are recorded once known.
    // Not held past it: see [`Conn::span`].
    let span = conn_span(conn_id, peer.addr, peer.proto, None, None);
    // One box for what only the handshake needs: what the block captures
    // keeps its room in the future for the connection's life, moved out
    // or not (176 bytes of every connection, issue 16); a box, 8.
    let opening = Box::new((peer, admission, span, conn_id));
    async move {
        // In a block of its own: a box moved out of is freed only where
        // its binding goes out of scope, the end of the connection
        // otherwise (heaptrack: 168 bytes of every idle connection).
        let (peer, admission, span, conn_id) = {
            let opening = opening;
            *opening
        };
        // Grows only with what the client sends (see `buffers`).
        let mut inbuf = BytesMut::new();
        // Boxed, and gone once it returns: the CONNECT, the CONNACK and the
        // handshake's own states would otherwise stay in the task's future
        // (a value moved out of a local keeps its room there) for as long
        // as the connection lives, several times the size of a `Conn`.
        // Matched as a temporary: a local `Opened` would keep its room in
        // the future after being taken apart.
        let (mut conn, failed_start) = match Box::pin(
            open(&mut stream, &mut inbuf, peer, &broker, admission, conn_id).instrument(span),
        )
        .await
        {
            Opened::Refused => {
                let _ = tokio::time::timeout(Duration::from_secs(1), stream.shutdown()).await;
                return;
            }
            Opened::Closed => {
                let _ = tokio::time::timeout(Duration::from_secs(1), stream.shutdown()).await;
                metrics::connection_closed();
                return;
            }
            Opened::Conn { conn, failed_start } => (conn, failed_start),
        };
        let end = match failed_start {
            Some(end) => end,
            None => conn.run(&mut stream, &mut inbuf, &shutdown).await,
        };
        // Always: the session must be let go of. Boxed, one state for the
        // whole goodbye: its locals would otherwise be room kept in every
        // connection's future from its start (issue 16).
        Box::pin(goodbye(conn, &mut stream, end)).await;
    }
}

/// Says goodbye ([`Conn::finish`]), closes the socket and gives the
/// connection's place back.
async fn goodbye<S>(mut conn: Box<Conn>, stream: &mut S, end: End)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let span = conn.span();
    let told = conn.finish(stream, end).instrument(span).await;
    // Held through the linger below: a closing socket still counts.
    let place = conn.place.take();
    // Done with: not kept (nor its span) through the linger below.
    drop(conn);
    // Best effort, and bounded: the peer may be gone or, with TLS
    // or WebSocket, not reading the close we try to write.
    let _ = tokio::time::timeout(Duration::from_secs(1), stream.shutdown()).await;
    if told {
        // Closing with the client's bytes unread (a flooding
        // client's PUBLISHes) makes the kernel send a reset,
        // which can destroy our DISCONNECT before the client
        // reads it: read and drop until it closes, briefly.
        let _ = tokio::time::timeout(LINGER, discard_until_eof(stream)).await;
    }
    drop(place);
    metrics::connection_closed();
}

/// The `conn` span: a connection's fields on every event logged in it.
fn conn_span(
    conn_id: u64,
    peer: SocketAddr,
    proto: &'static str,
    tenant: Option<&str>,
    client_id: Option<&str>,
) -> tracing::Span {
    // No parent, as when it was made in the connection's own task.
    info_span!(
        parent: None,
        "conn",
        conn_id,
        peer = %peer,
        proto,
        // Unset (recorded later) when `None`.
        tenant,
        client_id,
    )
}

/// What [`open`] made of a socket.
enum Opened {
    /// Never a connection (evicted, closed or refused before a place was
    /// taken): nothing was counted.
    Refused,
    /// Counted as opened, then refused or closed before the CONNACK.
    Closed,
    /// A connection: its CONNACK is queued, unless `failed_start` says how
    /// it ends without one.
    Conn {
        /// Holding its place (`Conn::place`).
        conn: Box<Conn>,
        failed_start: Option<End>,
    },
}

/// From a fresh socket to a connection: reads the CONNECT, takes a place,
/// runs the handshake and queues the CONNACK.
async fn open<S>(
    stream: &mut S,
    inbuf: &mut BytesMut,
    peer: Peer,
    broker: &Broker,
    admission: Admission,
    conn_id: u64,
) -> Opened
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let Admission { pending, places } = admission;
    let read = tokio::select! {
        read = handshake::read_connect_timed(stream, inbuf, broker) => read,
        () = pending.evicted.cancelled() => {
            debug!("pending socket evicted for a newer one before its CONNECT");
            return Opened::Refused;
        }
    };
    // From here on the socket is a connection, or gone: its pending
    // place is free either way.
    drop(pending);
    let connect = match read {
        Ok(connect) => connect,
        Err(e) => {
            debug!(error = %e, "closed before CONNECT");
            return Opened::Refused;
        }
    };
    if !broker.accepting() {
        metrics::connection_refused("not_accepting");
        debug!("not accepting connections now; CONNECT refused as server unavailable");
        if let Err(e) = handshake::refuse_unavailable(stream, connect.protocol).await {
            debug!(error = %e, "could not answer server unavailable");
        }
        return Opened::Refused;
    }
    let Ok(place) = places.try_acquire_owned() else {
        metrics::connection_refused("max_connections");
        // Per CONNECT, so not a warning: the metric says how many.
        debug!(
            max_connections = broker.config().max_connections,
            "connection limit reached; CONNECT refused as server busy"
        );
        if let Err(e) = handshake::refuse_busy(stream, connect.protocol).await {
            debug!(error = %e, "could not answer server busy");
        }
        return Opened::Refused;
    };
    metrics::connection_opened();
    match handshake::handshake(stream, connect, peer, broker, conn_id).await {
        Ok(Some((conn, ack))) => {
            let mut conn = Box::new(conn);
            conn.place = Some(place);
            let failed_start = conn.start(ack).err().map(|e| {
                error!(error = %e, "could not encode CONNACK or resends");
                End::Server(ReasonCode::from(&e))
            });
            Opened::Conn { conn, failed_start }
        }
        Ok(None) => Opened::Closed,
        Err(e) => {
            debug!(error = %e, "connection closed before CONNACK");
            Opened::Closed
        }
    }
}

/// How long a connection we closed with a DISCONNECT keeps reading, so
/// that the client can read the DISCONNECT (see `serve`).
const LINGER: Duration = Duration::from_secs(1);

async fn discard_until_eof<S: AsyncRead + Unpin>(stream: &mut S) {
    let mut sink = BytesMut::new();
    while let Ok(n) = buffers::read_pooled(stream, &mut sink).await {
        if n == 0 {
            return;
        }
        sink.clear();
    }
}

/// Brings the tenants a platform client's PUBLISH or SUBSCRIBE names
/// into memory, so that handling it (synchronous) finds them.
async fn load_tenants_for(broker: &Broker, packet: &mqtt::Packet) {
    match packet {
        mqtt::Packet::Publish(p) => {
            if let Some(topic) = &p.topic {
                crate::platform::load_for_publish(broker, topic).await;
            }
        }
        mqtt::Packet::Subscribe(s) => {
            for sub in &s.subscriptions {
                crate::platform::load_for_filter(broker, &sub.filter).await;
            }
        }
        _ => {}
    }
}

/// What ended a connection's wait (see `Conn::run_inner`).
enum Woke {
    Shutdown,
    Drained,
    Read(std::io::Result<usize>),
    Deliveries,
    Timer,
}

impl Conn {
    /// The connection's `conn` span, made for each stretch of work that
    /// may log (the packets one read brought, and what they lead to: the
    /// end, for a DISCONNECT) and let go before the connection waits: a
    /// span lives in the tracing registry and the fmt layer keeps its
    /// fields formatted, 440 bytes of every idle connection for the life
    /// of a span held by its task (heaptrack, issue 16). Made once per
    /// stretch: making one costs about 1.7 us (perf of a connect storm).
    fn span(&mut self) -> tracing::Span {
        let (id, peer, proto) = (self.ctl.id, self.peer_addr, self.proto);
        let (tenant, client_id) = (&self.identity.tenant, &self.client_id);
        self.active_span
            .get_or_insert_with(|| {
                Box::new(conn_span(
                    id,
                    peer,
                    proto,
                    Some(tenant.as_str()),
                    Some(client_id),
                ))
            })
            .as_ref()
            .clone()
    }

    /// Queues the CONNACK and, for a resumed session, the resends.
    fn start(&mut self, ack: ConnAck) -> Result<(), Error> {
        self.out.send(ack)?;
        if self.resumed {
            self.resend_inflight()?;
        }
        Ok(())
    }

    /// Not an `async fn`, as `run_inner`: an `async fn` keeps its
    /// arguments twice in its future (as given, and as its locals), and
    /// this one is every connection's for its whole life (issue 16).
    #[allow(clippy::manual_async_fn)] // see above: the size, not the style
    fn run<'a, S>(
        &'a mut self,
        stream: &'a mut S,
        inbuf: &'a mut BytesMut,
        shutdown: &'a CancellationToken,
    ) -> impl std::future::Future<Output = End> + 'a
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        async move {
            let result = self.run_inner(stream, inbuf, shutdown).await;
            let span = self.span();
            self.ended(stream, result).instrument(span).await
        }
    }

    /// How `run_inner`'s result ends the connection.
    async fn ended<S>(&mut self, stream: &mut S, result: Result<End, Error>) -> End
    where
        S: AsyncWrite + Unpin,
    {
        match result {
            Ok(end) => end,
            Err(e @ (Error::Io(_) | Error::WriteTimeout(_))) => {
                debug!(error = %e, "connection lost");
                End::Lost
            }
            Err(e @ Error::RateLimited { .. }) => {
                // The PUBLISHes before the last were answered (admitted or
                // 0x97): the client gets those answers before the DISCONNECT.
                let reason = ReasonCode::from(&e);
                warn!(error = %e, reason = reason.to_u8(), "closing connection");
                // Boxed: rare, and a timer and a write in the task's future.
                let _ = Box::pin(tokio::time::timeout(
                    Duration::from_secs(1),
                    self.flush(stream),
                ))
                .await;
                End::Server(reason)
            }
            Err(e) => {
                let reason = ReasonCode::from(&e);
                warn!(error = %e, reason = reason.to_u8(), "closing connection");
                End::Server(reason)
            }
        }
    }

    #[allow(clippy::manual_async_fn)] // the size, as `run`
    fn run_inner<'a, S>(
        &'a mut self,
        stream: &'a mut S,
        inbuf: &'a mut BytesMut,
        shutdown: &'a CancellationToken,
    ) -> impl std::future::Future<Output = Result<End, Error>> + 'a
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        async move {
            // Shut down before this connection was attached, so it was not
            // among those woken (`Broker::wake_connections`): now or never.
            if shutdown.is_cancelled() {
                return Ok(End::Server(ReasonCode::ServerShuttingDown));
            }
            // Dropped, and so out of the wheel, however this returns.
            let keep_alive = self
                .keep_alive
                .map(|period| self.broker.keep_alive().register(self.ctl.clone(), period));
            let max_packet =
                usize::try_from(self.broker.config().max_packet_size).unwrap_or(usize::MAX);
            // Packets pipelined behind CONNECT are already in the buffer.
            if let Some(end) = self.drain(inbuf, max_packet).await? {
                self.settle_deferred().await?;
                self.flush(stream).await?;
                return Ok(end);
            }
            loop {
                self.settle_deferred().await?;
                if self.pump()? {
                    // More than one batch is queued: come back without waiting.
                    self.ctl.wake();
                }
                self.flush(stream).await?;
                // About to wait: an idle connection keeps no buffers.
                buffers::release_if_empty(inbuf);
                buffers::release_if_empty(&mut self.out.buf);
                let stalled = self.stalled.as_ref().map(|s| s.until);
                let paused = !self.paused.is_empty();
                // While a PUBLISH is held back, or subscribers are full, the
                // socket is not read, so the client's silence is ours: no
                // keep-alive deadline (the wheel looks at this).
                self.ctl.hold_reads(stalled.is_some() || paused);
                // The keep-alive deadline is the wheel's; the only timer here
                // is a held-back PUBLISH's, boxed as it is rare.
                let mut timer = stalled.map(|until| Box::pin(tokio::time::sleep_until(until)));
                // Boxed, and only while paused: every idle connection's future
                // would otherwise hold this state's room.
                let drained = paused.then(|| {
                    let config = self.broker.config();
                    Box::pin(crate::backpressure::until_drained(
                        self.paused.clone(),
                        config.slow_consumer_timeout,
                        config.slow_consumer_policy,
                    ))
                });
                // A kick, as shutdown, comes through `wake` (see
                // `ConnControl::kick`, `Broker::wake_connections`) rather than a
                // wait of its own, whose state every idle connection's future
                // would hold (issue 16); it is looked at before waiting and
                // after waking, so it still goes before anything but shutdown.
                if self.ctl.is_kicked() && !shutdown.is_cancelled() {
                    return Ok(End::Server(self.ctl.kick_reason()));
                }
                self.active_span = None;
                let reading = stalled.is_none() && !paused;
                let mut drained = drained;
                let ctl = &self.ctl;
                // The wake first: a kick or shutdown goes before the
                // client's bytes, and queued deliveries before more reads.
                let woke = std::future::poll_fn(|cx| {
                    if ctl.poll_woken(cx).is_ready() {
                        // Looked at only on a wake (the token's check takes
                        // a lock every connection shares): shutdown always
                        // comes with one (`Broker::wake_connections`), and
                        // a connection attached after that sees the token
                        // cancelled when it starts (`run_inner`).
                        return Poll::Ready(if shutdown.is_cancelled() {
                            Woke::Shutdown
                        } else {
                            Woke::Deliveries
                        });
                    }
                    if let Some(d) = drained.as_mut()
                        && d.as_mut().poll(cx).is_ready()
                    {
                        return Poll::Ready(Woke::Drained);
                    }
                    if reading
                        && let Poll::Ready(read) =
                            buffers::poll_read_pooled(buffers::Pool::Connection, stream, cx, inbuf)
                    {
                        return Poll::Ready(Woke::Read(read));
                    }
                    if let Some(t) = timer.as_mut()
                        && t.as_mut().poll(cx).is_ready()
                    {
                        return Poll::Ready(Woke::Timer);
                    }
                    Poll::Pending
                })
                .await;
                // Working now: a wake meanwhile only leaves its permit, it
                // does not schedule this task again for nothing.
                self.ctl.stop_waiting();
                let end = match woke {
                    Woke::Shutdown => return Ok(End::Server(ReasonCode::ServerShuttingDown)),
                    _ if self.ctl.is_kicked() => return Ok(End::Server(self.ctl.kick_reason())),
                    Woke::Deliveries => {
                        if let Some(registration) = &keep_alive
                            && self.ctl.keep_alive_expired()
                        {
                            self.keep_alive_check(registration)?;
                        }
                        continue;
                    }
                    Woke::Timer => {
                        self.heard(keep_alive.is_some());
                        // Boxed: rare, and the loop's future would otherwise be
                        // as large as this state for every connection.
                        let span = self.span();
                        Box::pin(self.release_stalled(inbuf, max_packet).instrument(span)).await?
                    }
                    Woke::Drained => {
                        self.paused.clear();
                        self.heard(keep_alive.is_some());
                        self.drain(inbuf, max_packet).await?
                    }
                    Woke::Read(read) => {
                        let n = read?;
                        if n == 0 {
                            return Ok(End::Lost);
                        }
                        metrics::bytes_in(n);
                        self.heard(keep_alive.is_some());
                        self.drain(inbuf, max_packet).await?
                    }
                };
                if let Some(end) = end {
                    self.settle_deferred().await?;
                    self.flush(stream).await?;
                    return Ok(end);
                }
            }
        }
    }

    /// Tells the keep-alive wheel the client was heard from (or that its
    /// silence was ours), if the connection has a keep alive.
    fn heard(&self, keeping_alive: bool) {
        if keeping_alive {
            self.ctl.heard_at(self.broker.keep_alive().now_ms());
        }
    }

    /// The wheel found the keep-alive period over: so it is, unless the
    /// client was heard from since it looked (then the entry goes back).
    fn keep_alive_check(
        &self,
        registration: &crate::keep_alive::Registration,
    ) -> Result<(), Error> {
        let period = self.keep_alive.unwrap_or_default();
        let period_ms = u64::try_from(period.as_millis()).unwrap_or(u64::MAX / 2);
        let now = self.broker.keep_alive().now_ms();
        if now >= self.ctl.last_heard().saturating_add(period_ms) {
            return Err(Error::KeepAliveTimeout(period));
        }
        self.ctl.clear_keep_alive_expired();
        registration.rearm();
        Ok(())
    }

    /// Handles every whole packet in the read buffer, or stops at a 3.1.1
    /// PUBLISH the rate limit holds back. Awaits only for a platform
    /// client, whose packets may name tenants not yet in memory: boxed, so
    /// that a decoded packet (several hundred bytes) is not part of every
    /// connection's future.
    async fn drain(
        &mut self,
        inbuf: &mut BytesMut,
        max_packet: usize,
    ) -> Result<Option<End>, Error> {
        if inbuf.is_empty() {
            return Ok(None);
        }
        if self.tenant.id.is_platform() {
            let span = self.span();
            return Box::pin(self.drain_loading(inbuf, max_packet).instrument(span)).await;
        }
        self.drain_now(inbuf, max_packet)
    }

    /// [`Conn::drain`] for a client, whose packets are handled at once.
    fn drain_now(&mut self, inbuf: &mut BytesMut, max_packet: usize) -> Result<Option<End>, Error> {
        let _in_span = self.span().entered();
        while let Some(packet) = self.next_packet(inbuf, max_packet)? {
            if let Some(end) = self.pace_and_handle(packet)? {
                return Ok(Some(end));
            }
        }
        Ok(None)
    }

    /// [`Conn::drain`] for a platform client: the tenants a packet names
    /// are brought into memory before it is handled.
    async fn drain_loading(
        &mut self,
        inbuf: &mut BytesMut,
        max_packet: usize,
    ) -> Result<Option<End>, Error> {
        while let Some(packet) = self.next_packet(inbuf, max_packet)? {
            load_tenants_for(&self.broker, &packet).await;
            if let Some(end) = self.pace_and_handle(packet)? {
                return Ok(Some(end));
            }
        }
        Ok(None)
    }

    /// The next whole packet in the read buffer, unless reading is held
    /// back (a 3.1.1 PUBLISH waiting for the rate limit, full subscribers).
    fn next_packet(
        &mut self,
        inbuf: &mut BytesMut,
        max_packet: usize,
    ) -> Result<Option<mqtt::Packet>, Error> {
        if self.stalled.is_some() || !self.paused.is_empty() {
            return Ok(None);
        }
        Ok(decode(inbuf, self.version, max_packet)?)
    }

    /// Handles `packet`, or holds it back when the 3.1.1 rate limit says
    /// wait (then reading stops until its time).
    fn pace_and_handle(&mut self, mut packet: mqtt::Packet) -> Result<Option<End>, Error> {
        if self.version != ProtocolVersion::V5 {
            match self.hold_back(packet, true) {
                Pace::Go(p) => packet = p,
                Pace::Wait(stalled) => {
                    self.stalled = Some(Box::new(stalled));
                    return Ok(None);
                }
            }
        }
        self.handle(packet)
    }

    /// The held-back PUBLISH, once its time has come, then the rest of the
    /// read buffer.
    async fn release_stalled(
        &mut self,
        inbuf: &mut BytesMut,
        max_packet: usize,
    ) -> Result<Option<End>, Error> {
        let Some(stalled) = self.stalled.take() else {
            return Ok(None);
        };
        match self.hold_back(stalled.packet, false) {
            Pace::Go(packet) => {
                if let Some(end) = self.handle(packet)? {
                    return Ok(Some(end));
                }
            }
            // Not yet (the limits changed meanwhile): wait again.
            Pace::Wait(again) => {
                self.stalled = Some(Box::new(again));
                return Ok(None);
            }
        }
        self.drain(inbuf, max_packet).await
    }

    /// Says goodbye, publishes the will when due, lets go of the session.
    /// Returns whether a DISCONNECT was written.
    async fn finish<S>(&mut self, stream: &mut S, end: End) -> bool
    where
        S: AsyncWrite + Unpin,
    {
        let mut told = false;
        if let End::Server(reason) = end
            && self.version == ProtocolVersion::V5
        {
            // MQTT-4.13.1-1: tell a v5 client why before closing.
            self.out.buf.clear();
            let mut disconnect = Disconnect::new(reason);
            if self.ctl.is_kicked() {
                disconnect.properties.reason_string = self.ctl.kick_detail();
            }
            if self.out.send(disconnect).is_ok() {
                told = tokio::time::timeout(Duration::from_secs(1), self.flush(stream))
                    .await
                    .is_ok_and(|r| r.is_ok());
            }
        }
        info!(?end, "disconnected");
        // Platform clients are no tenant's clients: no lifecycle events.
        if !self.tenant.id.is_platform() {
            self.broker
                .events()
                .emit(crate::events::Event::Disconnected {
                    tenant: self.tenant.id.clone(),
                    client_id: self.client_id.to_string(),
                    principal: self.identity.principal.clone(),
                    graceful: end == End::Client(ReasonCode::Success),
                    reason: match end {
                        End::Lost => ReasonCode::UnspecifiedError,
                        End::Client(r) | End::Server(r) => r,
                    },
                });
        }
        // MQTT-3.1.2-8: the will is published unless the client said a
        // normal DISCONNECT (MQTT-3.14.4-3); 0x04 asks for it. A server
        // shutdown, or a server sending the client elsewhere (a cluster
        // node cut off), is not the client's loss.
        let will_due = match end {
            End::Lost => true,
            End::Client(r) => r == ReasonCode::DisconnectWithWillMessage,
            End::Server(r) => !matches!(
                r,
                ReasonCode::ServerShuttingDown | ReasonCode::UseAnotherServer
            ),
        };
        let will = self.will.take().filter(|_| will_due);
        will::after_disconnect(
            &self.broker,
            &self.tenant,
            &self.session,
            self.ctl.id,
            self.session_expiry,
            will.map(|w| will::PendingWill {
                will: *w,
                identity: self.identity.clone(),
                client_id: self.client_id.clone(),
            }),
        );
        self.ctl.finished.fire();
        told
    }
}

mod sending;

#[cfg(test)]
mod durable_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod throttle_tests;
