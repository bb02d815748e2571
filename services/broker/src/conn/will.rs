//! After a connection: the Last Will (3.1.2.5) with its delay, and the
//! Session Expiry timer (3.1.2.11.2).

use std::sync::Arc;
use std::time::SystemTime;

use mqtt::LastWill;
use tokio::time::{Duration, Instant};
use tracing::debug;

use crate::auth::Identity;
use crate::broker::Broker;
use crate::message::Message;
use crate::router;
use crate::session::Session;
use crate::session_store::Disconnected;
use crate::tenant::{Detached, Restored, Tenant};

/// A will that is due, with who left it.
pub(crate) struct PendingWill {
    pub(crate) will: LastWill,
    pub(crate) identity: Identity,
    pub(crate) client_id: Arc<str>,
}

fn publish_will(broker: &Broker, tenant: &Tenant, pending: PendingWill) {
    let PendingWill {
        will,
        identity,
        client_id,
    } = pending;
    if !broker.authorizer().can_publish(&identity, &will.topic) {
        debug!(topic = %will.topic, "will not authorized; dropped");
        return;
    }
    let mut properties = will.properties;
    // Will Delay is for us, not for subscribers.
    properties.will_delay_interval = None;
    let message = Message::new(
        will.topic,
        will.payload,
        will.qos,
        will.retain, // MQTT-3.1.2-17: Will Retain
        properties,
        Some(client_id.clone()),
        Instant::now(),
    );
    if !tenant.id.is_platform() {
        router::publish(broker, tenant, &client_id, message);
        return;
    }
    // A platform client's will goes into the tenant it names, if that
    // tenant is in memory (the will cannot wait for a load).
    match crate::platform::target(broker, &message.topic) {
        Ok((target, inner)) => {
            let mut message = message.with_topic(inner);
            message.platform_origin = true;
            router::publish(broker, &target, &client_id, message);
        }
        Err(e) => debug!(topic = %message.topic, error = %e, "platform will dropped"),
    }
}

/// Detaches the connection from its session, then publishes the will now
/// or after its delay, and arms the session expiry.
pub(crate) fn after_disconnect(
    broker: &Broker,
    tenant: &Arc<Tenant>,
    session: &Arc<Session>,
    conn_id: u64,
    expiry: u32,
    will: Option<PendingWill>,
) {
    let delay = will
        .as_ref()
        .and_then(|w| w.will.properties.will_delay_interval)
        .unwrap_or(0);
    let expiry_secs = expiry;
    match tenant.detach(session, conn_id, expiry) {
        Detached::NotCurrent => {
            // Taken over: a new connection exists, so a delayed will is
            // cancelled (3.1.3.2.2); an immediate one goes out.
            if let Some(w) = will.filter(|_| delay == 0) {
                publish_will(broker, tenant, w);
            }
        }
        Detached::Ended => {
            // The session ended now, so any delay is over (3.1.3.2.2).
            if let Some(w) = will {
                publish_will(broker, tenant, w);
            }
        }
        Detached::Kept { generation } => {
            let will = match will {
                Some(w) if delay == 0 => {
                    publish_will(broker, tenant, w);
                    None
                }
                other => other,
            };
            let expiry = Duration::from_secs(u64::from(expiry));
            let due = Duration::from_secs(u64::from(delay)).min(expiry);
            if session.lock().durable
                && let Some(store) = tenant.session_store()
            {
                // Absolute deadlines: time the broker is down counts.
                let wall = SystemTime::now();
                let expires_at = crate::tenant::deadline(wall, expiry_secs);
                store.disconnect(
                    &tenant.id,
                    session.client_id(),
                    &Disconnected {
                        at: wall,
                        expires_at,
                        will_due_at: will.as_ref().map(|_| wall + due),
                    },
                );
            }
            arm(
                broker,
                tenant,
                session,
                generation,
                will.map(|w| (w, Instant::now() + due)),
                Some(Instant::now() + expiry),
            );
        }
    }
}

/// Tells the store a persistent session's will is gone (published or
/// cancelled), so that a restart does not send it again.
fn will_gone(tenant: &Tenant, session: &Session) {
    if session.lock().durable
        && let Some(store) = tenant.session_store()
    {
        store.will_done(&tenant.id, session.client_id());
    }
}

/// One timer per offline period: the delayed will (published at the
/// earlier of its delay and the session's end, 3.1.3.2.2), then expiry.
/// `expires`: `None`, never.
fn arm(
    broker: &Broker,
    tenant: &Arc<Tenant>,
    session: &Arc<Session>,
    generation: u64,
    will: Option<(PendingWill, Instant)>,
    expires: Option<Instant>,
) {
    let broker = broker.clone();
    let tenant = tenant.clone();
    let session = session.clone();
    // One timer per offline period: the delayed will, then expiry. A
    // resume ends it at once, will and all: nothing of an offline period
    // outlives it, however often a client reconnects (issue 13 item 16).
    tokio::spawn(async move {
        // This offline period is over once the session was resumed (a
        // new generation) or ended; `wait_for` looks at every change.
        let over = |st: &crate::session::SessionState| st.generation != generation || st.ended;
        if session.lock().generation != generation {
            return;
        }
        if let Some((w, due)) = will {
            // Until the delay is over, a Clean Start reconnect discarded
            // the session, or (3.1.3.2.2) it was resumed: then no will.
            session.wait_for(Some(due), over).await;
            // Not resumed by a reconnect in the meantime (3.1.3.2.2):
            // either still offline, or ended without being resumed.
            let due_now = {
                let st = session.lock();
                st.generation == generation && (st.ended || st.conn.is_none())
            };
            if due_now {
                publish_will(&broker, &tenant, w);
                will_gone(&tenant, &session);
            } else if session.lock().generation != generation {
                debug!(client_id = %session.client_id(), "session resumed; delayed will dropped");
            }
        }
        // Nothing left to expire once ended, and the next offline period
        // has its own timer: neither holds this task for days.
        if session.wait_for(expires, over).await {
            return;
        }
        if tenant.expire(&session, generation) {
            debug!(client_id = %session.client_id(), "session expired");
        }
    });
}

/// Deadlines of sessions restored after a restart: a will that fell due
/// while the broker was down goes out now, a session past its expiry ends
/// now (after its will), the others get their timers. Wall-clock
/// deadlines become instants here.
pub(crate) fn arm_restored(broker: &Broker, tenant: &Arc<Tenant>, restored: Vec<Restored>) {
    let wall = SystemTime::now();
    let now = Instant::now();
    let at = |t: SystemTime| now + t.duration_since(wall).unwrap_or_default();
    for r in restored {
        let will = match (r.will, r.will_due_at) {
            (Some((will, owner)), Some(due)) => Some((
                PendingWill {
                    will,
                    identity: Identity {
                        tenant: tenant.id.clone(),
                        principal: owner,
                        limits: None,
                    },
                    client_id: r.session.client_id().clone(),
                },
                at(due),
            )),
            _ => None,
        };
        if r.expires_at.is_some_and(|e| e <= wall) {
            // Ended while the broker was down: gone before anyone can
            // resume it; its will goes out first.
            if let Some((w, _)) = will {
                publish_will(broker, tenant, w);
            }
            tenant.expire(&r.session, r.generation);
            continue;
        }
        arm(
            broker,
            tenant,
            &r.session,
            r.generation,
            will,
            r.expires_at.map(at),
        );
    }
}
