//! After a connection: the Last Will (3.1.2.5) with its delay, and the
//! Session Expiry timer (3.1.2.11.2).

use std::sync::Arc;

use mqtt::LastWill;
use tokio::time::{Duration, Instant};
use tracing::debug;

use crate::auth::Identity;
use crate::broker::Broker;
use crate::message::Message;
use crate::router;
use crate::session::Session;
use crate::tenant::{Detached, Tenant};

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
            let broker = broker.clone();
            let tenant = tenant.clone();
            let session = session.clone();
            let expiry = Duration::from_secs(u64::from(expiry));
            // One timer per offline period: the delayed will (published at
            // the earlier of its delay and the session's end), then expiry.
            // A resume ends it at once, will and all: nothing of an offline
            // period outlives it, however often a client reconnects.
            tokio::spawn(async move {
                let start = Instant::now();
                let resumed = session.resumed.notified();
                tokio::pin!(resumed);
                // Registered before looking, so a resume between the detach
                // and this point is not missed.
                resumed.as_mut().enable();
                if session.lock().generation != generation {
                    return;
                }
                if let Some(w) = will {
                    let due = Duration::from_secs(u64::from(delay)).min(expiry);
                    tokio::select! {
                        () = tokio::time::sleep_until(start + due) => {}
                        // A Clean Start reconnect discarded the session.
                        () = session.ended_signal.cancelled() => {}
                        // 3.1.3.2.2: resumed before the delay: no will.
                        () = &mut resumed => {
                            debug!(client_id = %session.client_id(), "session resumed; delayed will dropped");
                            return;
                        }
                    }
                    // Not resumed by a reconnect in the meantime (3.1.3.2.2):
                    // either still offline, or ended without being resumed.
                    let due_now = {
                        let st = session.lock();
                        st.generation == generation && (st.ended || st.conn.is_none())
                    };
                    if due_now {
                        publish_will(&broker, &tenant, w);
                    }
                }
                tokio::select! {
                    () = tokio::time::sleep_until(start + expiry) => {}
                    // Nothing left to expire; do not hold the task for days.
                    () = session.ended_signal.cancelled() => return,
                    // This offline period is over; the next has its timer.
                    () = &mut resumed => return,
                }
                if tenant.expire(&session, generation) {
                    debug!(client_id = %session.client_id(), "session expired");
                }
            });
        }
    }
}
