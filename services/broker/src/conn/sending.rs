//! What the connection sends: queued deliveries into the encode buffer
//! within the client's in-flight window ([`Conn::pump`]), resends on a
//! resumed session, and the buffer onto the socket ([`Conn::flush`]).

use std::task::Poll;

use bytes::BytesMut;
use mqtt::{PubRel, QoS};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

use super::{Conn, PUMP_BATCH};
use crate::Error;
use crate::metrics::{self, DropReason};
use crate::session::Outgoing;

/// Writes and flushes what `buf` holds as far as `stream` takes it
/// without waiting, dropping what was written from `buf`; whether all of
/// it went. Where it stopped, the task is woken when `stream` can take
/// more (and maybe, harmlessly, later).
fn write_without_waiting<S>(
    stream: &mut S,
    cx: &mut std::task::Context<'_>,
    buf: &mut BytesMut,
) -> std::io::Result<bool>
where
    S: AsyncWrite + Unpin,
{
    while !buf.is_empty() {
        match std::pin::Pin::new(&mut *stream).poll_write(cx, buf) {
            Poll::Ready(Ok(0)) => return Err(std::io::ErrorKind::WriteZero.into()),
            Poll::Ready(Ok(n)) => bytes::Buf::advance(buf, n),
            Poll::Ready(Err(e)) => return Err(e),
            Poll::Pending => return Ok(false),
        }
    }
    match std::pin::Pin::new(&mut *stream).poll_flush(cx) {
        Poll::Ready(result) => result.map(|()| true),
        Poll::Pending => Ok(false),
    }
}

impl Conn {
    /// Writes the encode buffer in one go (batched writes).
    pub(super) async fn flush<S>(&mut self, stream: &mut S) -> Result<(), Error>
    where
        S: AsyncWrite + Unpin,
    {
        let len = self.out.buf.len();
        if len == 0 {
            return Ok(());
        }
        // Most writes are taken by the socket at once: tried first with no
        // timer armed, so the write's `Sleep` is not room in every
        // connection's future (issue 16) nor a timer per write.
        let out = &mut self.out.buf;
        let done =
            std::future::poll_fn(|cx| Poll::Ready(write_without_waiting(stream, cx, out))).await?;
        if !done {
            let limit = self.broker.config().write_timeout;
            let rest = async {
                stream.write_all(out).await?;
                stream.flush().await
            };
            // Boxed: only a client that is slow to read waits here.
            Box::pin(tokio::time::timeout(limit, rest))
                .await
                .map_err(|_| Error::WriteTimeout(limit))??;
        }
        metrics::bytes_out(len);
        self.out.buf.clear();
        Ok(())
    }

    /// Moves queued deliveries into the encode buffer within the in-flight
    /// window; returns whether more are waiting that fit the window.
    pub(super) fn pump(&mut self) -> Result<bool, Error> {
        let now = Instant::now();
        let mut batch = Vec::new();
        // Stored deliveries dropped on the way.
        let mut gone = Vec::new();
        let (more, relieved) = {
            let mut st = self.session.lock();
            while batch.len() < PUMP_BATCH {
                let Some(front) = st.pending.front() else {
                    break;
                };
                // Order is kept: a QoS 1/2 message waiting for the window
                // holds back what is queued behind it.
                if front.qos != QoS::AtMostOnce && st.inflight.len() >= self.receive_maximum {
                    break;
                }
                let Some(d) = st.pending.pop_front() else {
                    break;
                };
                // 3.3.2.3.3: an expired message is not sent.
                if d.message.expired(now) {
                    st.count_drop(DropReason::Expired);
                    if d.seq.is_some() {
                        gone.push(d.seq);
                    }
                    continue;
                }
                if d.qos == QoS::AtMostOnce {
                    batch.push((None, d));
                    continue;
                }
                let Some(id) = st.next_packet_id() else {
                    st.pending.push_front(d);
                    break;
                };
                st.inflight.insert(id, Outgoing::Publish(d.clone()));
                batch.push((Some(id), d));
            }
            let more = batch.len() == PUMP_BATCH && !st.pending.is_empty();
            (more, st.relieve())
        };
        if relieved {
            self.session.changed();
        }
        for seq in gone {
            self.delivered(seq);
        }
        for (id, d) in batch {
            let mut publish = d.to_publish(now);
            publish.packet_id = id;
            // A stored delivery's packet id is written before the PUBLISH:
            // durably for QoS 2, so that a restart resends it with the same
            // id and the client's deduplication holds (write-behind for
            // QoS 1: at worst a message is sent twice).
            let sent = match (d.seq, id, self.session_store(true)) {
                (Some(seq), Some(id), Some(store)) => store.delivery_state(
                    &self.tenant.id,
                    &self.client_id,
                    seq,
                    crate::session_store::DeliveryState::Sent(id),
                    d.qos == QoS::ExactlyOnce,
                ),
                _ => None,
            };
            if sent.is_some() || !self.deferred.is_empty() {
                // Behind what waits, in order; written once durable.
                self.acknowledge(publish.into(), sent)?;
                metrics::message_out(d.qos);
                continue;
            }
            if self.out.publish(publish)? {
                metrics::message_out(d.qos);
            } else {
                let mut st = self.session.lock();
                st.count_drop(DropReason::TooLarge);
                if let Some(id) = id {
                    st.inflight.remove(&id);
                }
                drop(st);
                self.delivered(d.seq);
            }
        }
        // Deferred packets are written at the next turn: come back.
        if !self.deferred.is_empty() {
            self.ctl.wake();
        }
        Ok(more)
    }

    /// MQTT-4.4.0-1: on a resumed session, resend unacknowledged PUBLISH
    /// (with DUP) and PUBREL with their original packet ids.
    pub(super) fn resend_inflight(&mut self) -> Result<(), Error> {
        let now = Instant::now();
        let inflight: Vec<_> = self
            .session
            .lock()
            .inflight
            .iter()
            .map(|(id, o)| (*id, o.clone()))
            .collect();
        for (id, outgoing) in inflight {
            match outgoing {
                Outgoing::Publish(d) => {
                    let mut publish = d.to_publish(now);
                    publish.packet_id = Some(id);
                    publish.dup = true; // MQTT-3.3.1-1
                    if !self.out.publish(publish)? {
                        self.session.lock().inflight.remove(&id);
                        self.delivered(d.seq);
                    }
                }
                Outgoing::Released(_) => self.out.send(PubRel::new(id))?,
            }
        }
        Ok(())
    }
}
