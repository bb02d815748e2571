//! CONNECT → CONNACK (3.1, 3.2): read CONNECT within the timeout,
//! authenticate, settle client id, keep alive and session, answer.

use std::num::{NonZeroU16, NonZeroU32};
use std::sync::Arc;

use bytes::BytesMut;
use mqtt::{ConnAck, Connect, Packet, ProtocolVersion, ReasonCode, decode};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::time::Duration;
use tracing::{Span, debug, info, warn};

use super::{Conn, Outbound, Peer};
use crate::Error;
use crate::auth::AuthRequest;
use crate::broker::Broker;
use crate::events::Event;
use crate::session::ConnControl;

/// Byte offset of the protocol level in a CONNECT body: "MQTT" as a UTF-8
/// string is 6 bytes (3.1.2.1).
const LEVEL_OFFSET: usize = 6;

/// The protocol level a (possibly malformed) CONNECT claims, read before
/// decoding so a failure can still be answered in the client's version.
fn claimed_level(buf: &[u8]) -> Option<u8> {
    // Fixed header: 1 type byte, then 1-4 length bytes ending without the
    // continuation bit.
    let len_bytes = buf.iter().skip(1).take(4).position(|b| b & 0x80 == 0)? + 1;
    buf.get(1 + len_bytes + LEVEL_OFFSET).copied()
}

async fn write_packet<S>(
    stream: &mut S,
    version: ProtocolVersion,
    packet: Packet,
) -> Result<(), Error>
where
    S: AsyncWrite + Unpin,
{
    let mut buf = BytesMut::new();
    packet.encode(version, &mut buf)?;
    stream.write_all(&buf).await?;
    stream.flush().await?;
    Ok(())
}

/// Refuses a CONNECT: CONNACK with `reason` (3.1.1 maps it to its return
/// codes), then the caller closes.
async fn refuse<S>(
    stream: &mut S,
    version: ProtocolVersion,
    reason: ReasonCode,
) -> Result<(), Error>
where
    S: AsyncWrite + Unpin,
{
    write_packet(stream, version, ConnAck::new(reason, false).into()).await
}

async fn read_connect<S>(stream: &mut S, inbuf: &mut BytesMut, max: usize) -> Result<Connect, Error>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    loop {
        let level = claimed_level(inbuf);
        match decode(inbuf, ProtocolVersion::V5, max) {
            Ok(Some(Packet::Connect(c))) => return Ok(*c),
            // MQTT-3.1.0-1: the first packet must be CONNECT.
            Ok(Some(other)) => return Err(Error::NotConnect(other.packet_type())),
            Ok(None) => {}
            Err(e) => {
                let reason = ReasonCode::from(&e);
                match (&e, level) {
                    // MQTT-3.1.2-2 (3.1.1: return code 0x01; 5.0: 0x84).
                    (mqtt::Error::UnsupportedProtocolLevel(_), _) => {
                        refuse(stream, ProtocolVersion::V311, reason).await?;
                    }
                    // 5.0 4.13.1: a CONNACK with the reason may precede the
                    // close; 3.1.1 just closes (MQTT-4.8.0-1).
                    (_, Some(5)) => refuse(stream, ProtocolVersion::V5, reason).await?,
                    _ => {}
                }
                return Err(e.into());
            }
        }
        if super::buffers::read_pooled(stream, inbuf).await? == 0 {
            return Err(Error::Io(std::io::ErrorKind::UnexpectedEof.into()));
        }
    }
}

/// What a will costs to hold: its topic and payload, and its properties
/// with what each user property costs beyond its text (two `String`s and
/// their allocations): a CONNECT of one-character user properties is
/// small on the wire and about sixteen times larger in memory.
pub(crate) fn will_size(will: &mqtt::LastWill) -> usize {
    const PER_USER_PROPERTY: usize = 2 * std::mem::size_of::<String>() + 16;
    let p = &will.properties;
    let user: usize = p
        .user_properties
        .iter()
        .map(|(k, v)| k.len() + v.len() + PER_USER_PROPERTY)
        .sum();
    will.topic.as_str().len()
        + will.payload.len()
        + user
        + p.content_type.as_ref().map_or(0, String::len)
        + p.response_topic.as_ref().map_or(0, |t| t.as_str().len())
        + p.correlation_data.as_ref().map_or(0, bytes::Bytes::len)
}

/// Reads the CONNECT within the connect timeout (3.1.4: the first packet).
pub(crate) async fn read_connect_timed<S>(
    stream: &mut S,
    inbuf: &mut BytesMut,
    broker: &Broker,
) -> Result<Connect, Error>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let config = broker.config();
    let max_packet = usize::try_from(config.max_packet_size).unwrap_or(usize::MAX);
    tokio::time::timeout(
        config.connect_timeout,
        read_connect(stream, inbuf, max_packet),
    )
    .await
    .map_err(|_| Error::ConnectTimeout(config.connect_timeout))?
}

/// Answers a CONNECT that found every connection place taken: Server Busy
/// (3.1.1: server unavailable), in the client's own protocol version.
pub(crate) async fn refuse_busy<S>(stream: &mut S, version: ProtocolVersion) -> Result<(), Error>
where
    S: AsyncWrite + Unpin,
{
    refuse(stream, version, ReasonCode::ServerBusy).await
}

/// Answers a CONNECT while the broker takes none ([`Broker::accepting`]):
/// Server Unavailable (3.1.1: return code 3), in the client's version.
pub(crate) async fn refuse_unavailable<S>(
    stream: &mut S,
    version: ProtocolVersion,
) -> Result<(), Error>
where
    S: AsyncWrite + Unpin,
{
    refuse(stream, version, ReasonCode::ServerUnavailable).await
}

/// Runs the handshake from the CONNECT ([`read_connect_timed`]) up to
/// attaching the session. `Ok(None)`: the client
/// was refused (CONNACK sent). A returned [`Conn`] holds the session: the
/// caller sends the CONNACK through [`Conn::start`] and must end with
/// [`Conn::finish`] whatever happens.
pub(crate) async fn handshake<S>(
    stream: &mut S,
    connect: Connect,
    peer: Peer,
    broker: &Broker,
    conn_id: u64,
) -> Result<Option<(Conn, ConnAck)>, Error>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let config = broker.config().clone();
    let version = connect.protocol;
    let v5 = version == ProtocolVersion::V5;

    // Enhanced authentication (4.12) is not supported.
    if connect.properties.authentication_method.is_some() {
        refuse(stream, version, ReasonCode::BadAuthenticationMethod).await?;
        return Ok(None);
    }

    // A will is held for as long as the session may stay offline (its
    // delay, up to the session expiry): its size is bounded up front.
    if let Some(size) = connect.will.as_ref().map(will_size)
        && size > config.max_will_size
    {
        warn!(
            will_size = size,
            max = config.max_will_size,
            "will payload too large; CONNECT refused"
        );
        crate::metrics::connection_refused("will_too_large");
        refuse(stream, version, ReasonCode::PacketTooLarge).await?;
        return Ok(None);
    }

    let (peer_addr, proto) = (peer.addr, peer.proto);
    let request = AuthRequest {
        username: connect.username.clone(),
        password: connect.password.clone(),
        client_id: connect.client_id.clone(),
        peer: peer.addr,
        peer_certificates: peer.certificates,
        protocol: version,
    };
    let credential = crate::events::Credential::of(&request);
    let identity = match broker.authenticator().authenticate(&request).await {
        Ok(identity) => identity,
        Err(e) => {
            warn!(error = %e, "authentication failed");
            refuse(stream, version, ReasonCode::from(&e)).await?;
            return Ok(None);
        }
    };

    // Client id: an empty one is assigned (MQTT-3.1.3-6); 3.1.1 allows that
    // only with Clean Session (MQTT-3.1.3-8 in 3.1.1).
    let mut assigned = None;
    let client_id: Arc<str> = if connect.client_id.is_empty() {
        if !v5 && !connect.clean_start {
            refuse(stream, version, ReasonCode::ClientIdentifierNotValid).await?;
            return Ok(None);
        }
        let id = format!("fleetmq-{}", uuid::Uuid::new_v4().simple());
        assigned = Some(id.clone());
        Arc::from(id)
    } else {
        Arc::from(connect.client_id.as_str())
    };

    // Session expiry: 3.1.1 Clean Session 0 keeps the session (bounded by
    // our cap); 5.0 uses the property, absent = 0 (3.1.2.11.2).
    let session_expiry = if v5 {
        connect.properties.session_expiry_interval.unwrap_or(0)
    } else if connect.clean_start {
        0
    } else {
        u32::MAX
    }
    .min(config.max_session_expiry);

    // Keep alive: 0 is "off" unless we set a maximum (3.1.2.10); a v5 client
    // is told the value we use (MQTT-3.2.2-21).
    let mut keep_alive = connect.keep_alive;
    let mut server_keep_alive = None;
    if let Some(max) = config.max_keep_alive
        && (keep_alive == 0 || keep_alive > max)
    {
        if !v5 {
            // 3.1.1 cannot be told another value; refuse rather than cut
            // the client off at a deadline it does not know (as Mosquitto).
            refuse(stream, version, ReasonCode::ClientIdentifierNotValid).await?;
            return Ok(None);
        }
        keep_alive = max;
        server_keep_alive = Some(max);
    }

    let tenant = match broker.tenant(&identity.tenant).await {
        Ok(t) => t,
        Err(e) => {
            tracing::error!(error = %e, "tenant could not be loaded");
            refuse(stream, version, ReasonCode::ServerUnavailable).await?;
            return Ok(None);
        }
    };
    Span::current().record("tenant", identity.tenant.as_str());
    Span::current().record("client_id", &*client_id);

    // Client ids are unique across a cluster: the session comes here
    // from the node that holds it first.
    if let Err(e) = broker.claim_session(&tenant, &client_id).await {
        tracing::error!(error = %e, "session could not be taken over from another node");
        refuse(stream, version, ReasonCode::ServerUnavailable).await?;
        return Ok(None);
    }

    let ctl = ConnControl::new(conn_id);
    let owner: Arc<str> = Arc::from(identity.principal.as_str());
    let _ = ctl.principal.set(owner.clone());
    let _ = ctl.version.set(version);
    let mut attached = match tenant.attach(
        &client_id,
        &owner,
        connect.clean_start,
        ctl.clone(),
        crate::session::QueueLimits::of(&config),
    ) {
        Ok(attached) => attached,
        Err(crate::tenant::NotOwner::Foreign { owner }) => {
            // Neither resumed nor taken over: the owner is not disturbed.
            warn!(principal = %identity.principal, owner = %owner, "client id in use by another principal's session; refused");
            crate::metrics::connection_refused("client_id_not_owned");
            refuse(stream, version, ReasonCode::ClientIdentifierNotValid).await?;
            return Ok(None);
        }
    };
    if attached.present {
        // Policies may have changed while the session was offline: what
        // they no longer allow goes before anything is delivered.
        let revoked = tenant.revoke_subscriptions(&attached.session, |f| {
            broker.authorizer().can_subscribe(&identity, f)
        });
        if !revoked.is_empty() {
            info!(principal = %identity.principal, revoked = ?revoked, "subscriptions no longer allowed removed at resume");
        }
    }
    if let Some(previous) = attached.previous.take() {
        // MQTT-3.1.4-3: the older connection is closed with 0x8E.
        previous.take_over();
        if tokio::time::timeout(config.takeover_timeout, previous.finished.fired())
            .await
            .is_err()
        {
            warn!("previous connection did not let go of the session in time");
        }
    }

    if let Err(reason) = persist_connect(
        &tenant,
        &mut attached,
        &identity.principal,
        version,
        session_expiry,
        connect.will.as_ref(),
        connect.clean_start,
    )
    .await
    {
        // Let go of it as it was, and say no: a CONNACK promises a session
        // the store may not have.
        tenant.detach(&attached.session, conn_id, session_expiry);
        refuse(stream, version, reason).await?;
        return Ok(None);
    }

    let mut ack = ConnAck::new(ReasonCode::Success, attached.present);
    if v5 {
        let p = &mut ack.properties;
        p.receive_maximum = NonZeroU16::new(config.receive_maximum);
        p.maximum_packet_size = NonZeroU32::new(config.max_packet_size);
        p.topic_alias_maximum = Some(config.topic_alias_maximum).filter(|m| *m > 0);
        p.assigned_client_identifier = assigned;
        p.server_keep_alive = server_keep_alive;
        if connect
            .properties
            .session_expiry_interval
            .is_some_and(|s| s > session_expiry)
        {
            p.session_expiry_interval = Some(session_expiry);
        }
    }
    let client_max = connect
        .properties
        .maximum_packet_size
        .and_then(|m| usize::try_from(m.get()).ok())
        .unwrap_or(mqtt::MAX_PACKET_SIZE);
    let out = Outbound::new(
        version,
        client_max,
        if v5 {
            connect.properties.topic_alias_maximum.unwrap_or(0)
        } else {
            0
        },
    );

    let keep_alive = (keep_alive > 0).then(|| Duration::from_millis(u64::from(keep_alive) * 1500));
    let conn = Conn {
        peer_addr,
        proto,
        broker: broker.clone(),
        tenant,
        session: attached.session,
        ctl,
        identity: identity.clone(),
        client_id: client_id.clone(),
        version,
        keep_alive,
        will: connect.will.map(Box::new),
        session_expiry,
        out,
        // 3.3.4: the client's Receive Maximum (65,535 when it announces
        // none), held to ours so that a client that never acknowledges
        // holds a bounded window; the rest waits in its bounded queue.
        receive_maximum: usize::from(
            connect
                .properties
                .receive_maximum
                .map_or(u16::MAX, NonZeroU16::get)
                .min(config.max_inflight_messages.max(1)),
        ),
        in_aliases: None,
        resumed: attached.present,
        deferred: Vec::new(),
        limiter: crate::limits::Limiter::new(
            identity.limits.map_or(config.publish_limits, |l| *l),
            tokio::time::Instant::now(),
        )
        .map(Box::new),
        strikes: 0,
        stalled: None,
        paused: Vec::new(),
        place: None,
        active_span: None,
    };
    // The one line per accepted connection (the authenticator logs only
    // refusals at info): a connect storm pays for one formatted line each.
    info!(
        principal = %identity.principal,
        method = credential.method(),
        clean_start = connect.clean_start,
        session_present = attached.present,
        "connected"
    );
    debug!(
        keep_alive = connect.keep_alive,
        session_expiry, "connect parameters"
    );
    // Platform clients are no tenant's clients: no lifecycle events.
    if !identity.tenant.is_platform() {
        broker.events().emit(Event::Connected {
            tenant: identity.tenant,
            client_id: client_id.to_string(),
            principal: identity.principal,
            peer: peer.addr,
            protocol: version,
            credential,
        });
    }
    Ok(Some((conn, ack)))
}

/// Writes a persistent session's CONNECT through to the session store
/// (issue 14) and waits until it is durable, as the CONNACK must: a Clean
/// Start that discarded a stored session must not see it come back after
/// a crash. A session is persistent if its expiry is above 0 now or it
/// was (a resumed one is written until it ends). A clean session with a
/// will is written too (expiry 0, written behind), its row only, so that
/// a restart or a survivor sends the will of a node that crashed. Refused
/// with the reason code for the CONNACK.
async fn persist_connect(
    tenant: &crate::tenant::Tenant,
    attached: &mut crate::tenant::Attached,
    owner: &str,
    version: ProtocolVersion,
    session_expiry: u32,
    will: Option<&mqtt::LastWill>,
    clean_start: bool,
) -> Result<(), ReasonCode> {
    use crate::session_store::{SessionRecord, StoredWill, all_durable};
    let Some(store) = tenant.session_store().filter(|_| !tenant.id.is_platform()) else {
        return Ok(());
    };
    let (durable, will_only) = {
        let mut st = attached.session.lock();
        st.durable |= session_expiry > 0;
        // A clean session's will is stored too (a crash must not swallow
        // it), within the store's client id bound: not for its own sake,
        // so a client id the store cannot hold is no reason to refuse.
        st.will_stored = !st.durable
            && will.is_some()
            && attached.session.client_id().len() <= MAX_STORED_CLIENT_ID;
        (st.durable, st.will_stored)
    };
    let connected = (durable || will_only).then(|| {
        let will = will.map(|w| {
            let mut properties = w.properties.clone();
            let delay = properties.will_delay_interval.take().unwrap_or(0);
            StoredWill {
                topic: w.topic.clone(),
                payload: w.payload.clone(),
                qos: w.qos,
                retain: w.retain,
                properties,
                delay,
            }
        });
        let record = SessionRecord {
            client_id: attached.session.client_id().clone(),
            owner: owner.to_owned(),
            protocol: version,
            expiry_interval: session_expiry,
            will,
        };
        // A session not resumed replaces whatever was stored.
        store.connect(&tenant.id, &record, clean_start || !attached.present)
    });
    // Written behind for a clean session: its CONNACK neither waits for
    // the database nor fails with it, as before wills were stored.
    let connected = connected.filter(|_| durable);
    let Some(durable) = all_durable([connected.flatten(), attached.discarded.take()]) else {
        return Ok(());
    };
    durable.await.map_err(|e| {
        warn!(error = %e, "persistent session not stored; CONNECT refused");
        if attached.session.client_id().len() > MAX_STORED_CLIENT_ID {
            ReasonCode::ClientIdentifierNotValid
        } else {
            ReasonCode::ServerUnavailable
        }
    })
}

/// The longest client id a persistent session can have (the store's key
/// must fit a Postgres index entry).
const MAX_STORED_CLIENT_ID: usize = 1024;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claimed_level_reads_past_the_fixed_header() {
        let connect = [0x10, 0x10, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x05, 0x02];
        assert_eq!(claimed_level(&connect), Some(5));
        assert_eq!(claimed_level(&connect[..5]), None);
        assert_eq!(claimed_level(&[0x10, 0xFF, 0xFF, 0xFF, 0xFF, 0x01]), None);
        assert_eq!(claimed_level(&[]), None);
    }
}
