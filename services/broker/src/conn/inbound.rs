//! Packets from the client after CONNECT (3.3 – 3.15).

use std::collections::HashMap;
use std::sync::Arc;

use mqtt::{
    Packet, ProtocolVersion, PubAck, PubComp, PubRec, PubRel, Publish, QoS, ReasonCode,
    RetainHandling, SubAck, Subscribe, UnsubAck, Unsubscribe,
};
use tokio::time::Instant;
use tracing::{Instrument, debug, warn};

use super::{Conn, End};
use crate::Error;
use crate::message::{Delivery, Message};
use crate::metrics;
use crate::session::Outgoing;
use crate::store::Durability;

/// Sessions reached and what the acknowledgement waits for, or why the
/// publish was refused (reason code, reason string).
type Routed = Result<(usize, Option<Durability>), (ReasonCode, String)>;

fn granted(qos: QoS) -> ReasonCode {
    match qos {
        QoS::AtMostOnce => ReasonCode::GRANTED_QOS_0,
        QoS::AtLeastOnce => ReasonCode::GrantedQoS1,
        QoS::ExactlyOnce => ReasonCode::GrantedQoS2,
    }
}

impl Conn {
    /// Handles one packet; `Some(end)` closes the connection.
    pub(super) fn handle(&mut self, packet: Packet) -> Result<Option<End>, Error> {
        debug!(packet = ?packet.packet_type(), "received");
        match packet {
            Packet::Publish(p) => self.on_publish(p)?,
            Packet::PubAck(a) => {
                let mut st = self.session.lock();
                if let Some(Outgoing::Publish(d)) = st.inflight.get(&a.packet_id)
                    && d.qos == QoS::AtLeastOnce
                {
                    let seq = d.seq;
                    st.inflight.remove(&a.packet_id);
                    drop(st);
                    self.delivered(seq);
                }
            }
            Packet::PubRec(r) => self.on_pubrec(r)?,
            Packet::PubComp(c) => {
                let mut st = self.session.lock();
                if let Some(Outgoing::Released(seq)) = st.inflight.get(&c.packet_id) {
                    let seq = *seq;
                    st.inflight.remove(&c.packet_id);
                    drop(st);
                    self.delivered(seq);
                }
            }
            Packet::PubRel(r) => {
                let (known, durable) = {
                    let mut st = self.session.lock();
                    (st.incoming_qos2.remove(&r.packet_id), st.durable)
                };
                let mut comp = PubComp::new(r.packet_id);
                if !known {
                    comp.reason_code = ReasonCode::PacketIdentifierNotFound;
                }
                // A client reuses the id once it has PUBCOMP: its removal
                // must be durable first.
                let released = self.session_store(durable && known).and_then(|s| {
                    s.incoming_qos2(&self.tenant.id, &self.client_id, r.packet_id, false)
                });
                self.acknowledge(comp.into(), released)?;
            }
            Packet::Subscribe(s) => self.on_subscribe(s)?,
            Packet::Unsubscribe(u) => self.on_unsubscribe(u)?,
            Packet::PingReq => self.out.send(Packet::PingResp)?,
            Packet::Disconnect(d) => {
                if let Some(expiry) = d.properties.session_expiry_interval {
                    // MQTT-3.14.2-2: 0 at CONNECT may not become non-zero.
                    if self.session_expiry == 0 && expiry > 0 {
                        return Err(Error::protocol(
                            ReasonCode::ProtocolError,
                            "session expiry set at DISCONNECT after 0 at CONNECT",
                        ));
                    }
                    self.session_expiry = expiry.min(self.broker.config().max_session_expiry);
                }
                return Ok(Some(End::Client(d.reason_code)));
            }
            // Enhanced auth is refused at CONNECT (CONNACK 0x8C), so no
            // method is in force and an AUTH is a Protocol Error (4.12);
            // 0x8C is not a DISCONNECT reason code (3.14.2.1).
            Packet::Auth(_) => {
                return Err(Error::protocol(
                    ReasonCode::ProtocolError,
                    "AUTH without an authentication method",
                ));
            }
            // MQTT-3.1.0-2: a second CONNECT is a Protocol Error.
            Packet::Connect(_) => {
                return Err(Error::protocol(ReasonCode::ProtocolError, "second CONNECT"));
            }
            Packet::ConnAck(_) | Packet::SubAck(_) | Packet::UnsubAck(_) | Packet::PingResp => {
                return Err(Error::protocol(
                    ReasonCode::ProtocolError,
                    "server-to-client packet sent by the client",
                ));
            }
        }
        Ok(None)
    }

    fn on_publish(&mut self, mut p: Publish) -> Result<(), Error> {
        // MQTT-3.3.4-6: a client may not send Subscription Identifiers.
        if !p.properties.subscription_identifiers.is_empty() {
            return Err(Error::protocol(
                ReasonCode::ProtocolError,
                "subscription identifier in a client PUBLISH",
            ));
        }
        let topic = match (p.topic.take(), p.properties.topic_alias) {
            (topic, Some(alias)) => {
                // MQTT-3.3.2-9: 0 (caught by the codec) or above our maximum.
                if alias.get() > self.broker.config().topic_alias_maximum {
                    return Err(Error::protocol(
                        ReasonCode::TopicAliasInvalid,
                        "topic alias above our maximum",
                    ));
                }
                match topic {
                    Some(t) => {
                        self.in_aliases
                            .get_or_insert_default()
                            .insert(alias, t.clone());
                        t
                    }
                    None => self
                        .in_aliases
                        .as_ref()
                        .and_then(|a| a.get(&alias))
                        .cloned()
                        .ok_or(Error::protocol(
                            ReasonCode::ProtocolError,
                            "unknown topic alias",
                        ))?,
                }
            }
            (Some(t), None) => t,
            (None, None) => {
                return Err(Error::protocol(
                    ReasonCode::ProtocolError,
                    "PUBLISH without topic",
                ));
            }
        };
        let qos = p.qos;
        let id = p.packet_id;
        let mut awaiting = None;
        if qos == QoS::ExactlyOnce
            && let Some(id) = id
        {
            let mut st = self.session.lock();
            if st.incoming_qos2.contains(&id) {
                // A resend of a message already delivered onward (4.3.3):
                // acknowledge again, do not deliver twice.
                drop(st);
                return self.acknowledge(PubRec::new(id).into(), None);
            }
            // MQTT-3.3.4-9: more unacknowledged QoS 2 than our maximum.
            if st.incoming_qos2.len() >= usize::from(self.broker.config().receive_maximum) {
                return Err(Error::protocol(
                    ReasonCode::ReceiveMaximumExceeded,
                    "receive maximum exceeded",
                ));
            }
            st.incoming_qos2.insert(id);
            let durable = st.durable;
            drop(st);
            awaiting = self
                .session_store(durable)
                .and_then(|s| s.incoming_qos2(&self.tenant.id, &self.client_id, id, true));
        }
        // 3.1.1 PUBLISHes were paced before decoding got here (throttle).
        let admitted = self.version != ProtocolVersion::V5 || self.admit(qos, p.payload.len())?;
        let mut durability = None;
        let mut why = None;
        let reason = if !admitted {
            // 0x96 is not a PUBACK/PUBREC code (3.4.2.1, 3.5.2.1; clients
            // such as rumqttc reject it): 0x97 says an administrative
            // limit was hit, and 0x96 is kept for the DISCONNECT.
            ReasonCode::QuotaExceeded
        } else if !self.broker.authorizer().can_publish(&self.identity, &topic) {
            warn!(topic = %topic, "publish not authorized");
            ReasonCode::NotAuthorized
        } else {
            match self.route_publish(p, topic) {
                Ok((delivered, durable)) => {
                    durability = durable;
                    if delivered == 0 && self.version == ProtocolVersion::V5 {
                        ReasonCode::NoMatchingSubscribers
                    } else {
                        ReasonCode::Success
                    }
                }
                Err((reason, detail)) => {
                    why = Some(detail);
                    reason
                }
            }
        };
        if reason.is_error() {
            // QoS 0 has no acknowledgement to say so: counted instead.
            metrics::refused(reason);
        }
        // A 3.1.1 PUBACK cannot refuse: a topic over the limits or a
        // retained message over the quota closes the connection instead,
        // so the client does not take it as stored (MQTT-3.3.5-2 lets a
        // server close on a PUBLISH it will not accept).
        if self.version != ProtocolVersion::V5
            && matches!(
                reason,
                ReasonCode::TopicNameInvalid | ReasonCode::QuotaExceeded
            )
        {
            return Err(Error::protocol(
                reason,
                "publish refused: topic limits or retained quota",
            ));
        }
        // A reason string only where the packet can carry one (3.4.2.2.2).
        let properties = mqtt::Properties {
            reason_string: why.filter(|_| self.version == ProtocolVersion::V5),
            ..Default::default()
        };
        match (qos, id) {
            (QoS::AtLeastOnce, Some(id)) => {
                let mut ack = PubAck::new(id);
                ack.reason_code = reason;
                ack.properties = properties;
                self.acknowledge(ack.into(), durability)?;
            }
            (QoS::ExactlyOnce, Some(id)) => {
                let mut rec = PubRec::new(id);
                rec.reason_code = reason;
                rec.properties = properties;
                if reason.is_error() {
                    // 4.3.3: a failed PUBREC ends the exchange.
                    let durable = {
                        let mut st = self.session.lock();
                        st.incoming_qos2.remove(&id);
                        st.durable
                    };
                    if let Some(s) = self.session_store(durable) {
                        drop(s.incoming_qos2(&self.tenant.id, &self.client_id, id, false));
                    }
                    awaiting = None;
                }
                let durability = crate::session_store::all_durable([durability, awaiting]);
                self.acknowledge(rec.into(), durability)?;
            }
            _ => {}
        }
        Ok(())
    }

    /// Routes an authorized publish: in this connection's tenant, or for a
    /// platform client in the tenant its first topic level names. Refused
    /// with the reason code and a reason string for the client.
    fn route_publish(&mut self, p: Publish, topic: mqtt::TopicName) -> Routed {
        let origin = Some(self.client_id.clone());
        let quota = |e: crate::retained::QuotaRefusal| {
            warn!(topic = %topic, reason = %e, "retained publish refused");
            (ReasonCode::QuotaExceeded, e.to_string())
        };
        let (tenant, inner, platform_origin) = if self.tenant.id.is_platform() {
            let (tenant, inner) = crate::platform::target(&self.broker, &topic).map_err(|e| {
                warn!(topic = %topic, error = %e, "platform publish refused");
                (ReasonCode::TopicNameInvalid, e.to_string())
            })?;
            (tenant, inner, true)
        } else {
            (self.tenant.clone(), topic.clone(), false)
        };
        if let Err(e) = tenant.check_topic(&inner) {
            // An empty retained PUBLISH still clears what was stored under
            // such a topic before the limits (or a tenant rule) came in;
            // it reaches no subscriber.
            if p.retain && p.payload.is_empty() {
                let durable = p.qos != QoS::AtMostOnce;
                return Ok((
                    0,
                    crate::router::clear_retained(&self.broker, &tenant, &inner, durable),
                ));
            }
            warn!(topic = %crate::hygiene::Shown(topic.as_str()), reason = %e, "publish refused by the topic limits or rules");
            metrics::topic_refused("publish", e.label());
            return Err((e.publish_reason(), e.to_string()));
        }
        let mut message = Message::from_publish(p, inner, origin, Instant::now());
        message.platform_origin = platform_origin;
        let routed = crate::router::publish_durable(
            &self.broker,
            &tenant,
            &self.client_id,
            Some(&self.identity.principal),
            message,
            Some(&mut self.paused),
        )
        .map_err(quota);
        // Never wait for our own session: it drains only as we read its
        // acknowledgements, which pausing would stop.
        self.paused.retain(|s| !Arc::ptr_eq(s, &self.session));
        if self.broker.config().slow_consumer_timeout.is_zero() {
            self.paused.clear();
        }
        routed
    }

    /// Sends a packet now, or once what it waits for is durable (a
    /// PUBACK or PUBREC for the retained store and the persistent
    /// sessions' queues, a SUBACK, PUBCOMP, PUBREL or QoS 2 PUBLISH for
    /// the session store). Acknowledgements stay in the order the
    /// PUBLISHes came in (4.6), so one that waits holds back those after it.
    pub(super) fn acknowledge(
        &mut self,
        ack: Packet,
        durable: Option<Durability>,
    ) -> Result<(), Error> {
        if durable.is_none() && self.deferred.is_empty() {
            return self.out.send(ack);
        }
        self.deferred.push((durable, ack));
        Ok(())
    }

    /// Waits for the deferred acknowledgements' durability and queues them.
    /// A message the store could not make durable is not acknowledged as a
    /// success: v5 gets 0x83 in its PUBACK/PUBREC; v3.1.1 acks cannot say
    /// no, so the connection is closed and the client sends it again.
    pub(super) async fn settle_deferred(&mut self) -> Result<(), Error> {
        if self.deferred.is_empty() {
            return Ok(());
        }
        // Boxed: only retained QoS 1/2 PUBLISHes wait here, and the wait's
        // state (an ack, the store's answer) would size every connection.
        let span = self.span();
        Box::pin(self.settle_waiting().instrument(span)).await
    }

    async fn settle_waiting(&mut self) -> Result<(), Error> {
        for (durable, mut ack) in std::mem::take(&mut self.deferred) {
            if let Some(durable) = durable
                && let Err(e) = durable.await
            {
                warn!(error = %e, "message not made durable: not acknowledged as a success");
                if self.version != ProtocolVersion::V5 {
                    return Err(Error::Store(e.0));
                }
                match &mut ack {
                    Packet::PubAck(a) => a.reason_code = ReasonCode::ImplementationSpecificError,
                    Packet::PubRec(r) => {
                        r.reason_code = ReasonCode::ImplementationSpecificError;
                        self.session.lock().incoming_qos2.remove(&r.packet_id);
                    }
                    _ => {}
                }
            }
            self.out.send(ack)?;
        }
        Ok(())
    }

    fn on_pubrec(&mut self, r: PubRec) -> Result<(), Error> {
        let mut st = self.session.lock();
        let ours = matches!(
            st.inflight.get(&r.packet_id),
            Some(Outgoing::Publish(d)) if d.qos == QoS::ExactlyOnce
        );
        if !ours {
            drop(st);
            let mut rel = PubRel::new(r.packet_id);
            rel.reason_code = ReasonCode::PacketIdentifierNotFound;
            return self.out.send(rel);
        }
        let (seq, routed) = match st.inflight.get(&r.packet_id) {
            Some(Outgoing::Publish(d)) => (d.seq, d.message.id),
            _ => (None, None),
        };
        if r.reason_code.is_error() {
            // 4.3.3: the client refused it; the packet id is free again.
            st.inflight.remove(&r.packet_id);
            drop(st);
            self.delivered(seq);
            return Ok(());
        }
        st.inflight.insert(r.packet_id, Outgoing::Released(seq));
        drop(st);
        // The client has it: a replay must not send it as a new message
        // (exactly once); written with the PUBREL state.
        if let (Some(id), Some(store)) = (routed, self.session_store(seq.is_some())) {
            store.completed(&self.tenant.id, &self.client_id, id);
        }
        // The PUBREL goes out once `released` is durable, so that a
        // restart resends the PUBREL and not the message.
        let released = seq.and_then(|seq| {
            self.session_store(true)?.delivery_state(
                &self.tenant.id,
                &self.client_id,
                seq,
                crate::session_store::DeliveryState::Released(r.packet_id),
                true,
            )
        });
        self.acknowledge(PubRel::new(r.packet_id).into(), released)
    }

    /// The session store, when this connection's session writes through
    /// to one (`durable`: the session is persistent).
    pub(super) fn session_store(
        &self,
        durable: bool,
    ) -> Option<&dyn crate::session_store::SessionStore> {
        self.tenant.session_store().filter(|_| durable)
    }

    /// A stored delivery is done with (acknowledged, refused, dropped).
    pub(super) fn delivered(&self, seq: Option<u64>) {
        if let Some(seq) = seq
            && let Some(store) = self.session_store(true)
        {
            store.delivered(&self.tenant.id, &self.client_id, seq);
        }
    }

    fn on_subscribe(&mut self, s: Subscribe) -> Result<(), Error> {
        let sub_id = s.properties.subscription_identifiers.first().copied();
        let config = self.broker.config();
        let cap = config.max_retained_per_subscribe;
        let now = Instant::now();
        let mut codes = Vec::with_capacity(s.subscriptions.len());
        let mut why: Vec<String> = Vec::new();
        // The distinct filters that want retained messages, in packet
        // order, each with its last options: a filter repeated in one
        // packet is looked up once (item 13 of issue 13: 2,000 copies of
        // `#` were 2,000 lookups).
        let mut wanted: Vec<(mqtt::TopicFilter, mqtt::SubscriptionOptions)> = Vec::new();
        let mut seen: HashMap<mqtt::TopicFilter, usize> = HashMap::new();
        let mut held = self.subscription_usage();
        // SUBACK waits for a persistent session's subscriptions to be
        // durable (a crash must not forget what SUBACK granted).
        let durable = self.session.lock().durable;
        let mut stored = Vec::new();
        for sub in s.subscriptions {
            if !self
                .broker
                .authorizer()
                .can_subscribe(&self.identity, &sub.filter)
            {
                warn!(topic = %crate::hygiene::Shown(sub.filter.as_str()), "subscribe not authorized");
                codes.push(ReasonCode::NotAuthorized);
                continue;
            }
            let opts = sub.options;
            let new = !self.session.lock().subscriptions.contains_key(&sub.filter);
            if new && let Err((limit, e)) = held.admit(sub.filter.as_str().len(), config) {
                warn!(topic = %crate::hygiene::Shown(sub.filter.as_str()), reason = %e, "subscribe refused by the session limits");
                metrics::subscription_limit_refused(limit);
                codes.push(ReasonCode::QuotaExceeded);
                note(&mut why, e);
                continue;
            }
            let existed = match self.tenant.subscribe_checked(
                &self.session,
                &sub.filter,
                opts,
                sub_id,
            ) {
                Ok((existed, routed)) => {
                    // Only a cluster's new filter has one (no allocation
                    // on a single node).
                    if routed.is_some() {
                        stored.push(routed);
                    }
                    existed
                }
                Err(e) => {
                    warn!(topic = %crate::hygiene::Shown(sub.filter.as_str()), reason = %e, "subscribe refused by the topic limits or rules");
                    metrics::topic_refused("subscribe", e.label());
                    codes.push(e.subscribe_reason());
                    note(&mut why, e.to_string());
                    continue;
                }
            };
            if new {
                held.add(sub.filter.as_str().len());
            }
            codes.push(granted(opts.qos));
            if let Some(store) = self.session_store(durable) {
                stored.push(store.subscription(
                    &self.tenant.id,
                    &self.client_id,
                    &sub.filter,
                    Some(&crate::session_store::StoredSubscription {
                        filter: sub.filter.clone(),
                        options: opts,
                        id: sub_id,
                    }),
                ));
            }
            // 3.8.3.1 Retain Handling; shared subscriptions get no retained
            // messages (4.8.2).
            let send = match opts.retain_handling {
                RetainHandling::SendOnSubscribe => true,
                RetainHandling::SendIfNew => !existed,
                RetainHandling::DoNotSend => false,
            };
            match seen.get(&sub.filter) {
                // The repeat replaced the subscription: its options count.
                Some(&i) => {
                    if let Some(slot) = wanted.get_mut(i) {
                        slot.1 = opts;
                    }
                }
                None if send && sub.filter.shared().is_none() => {
                    seen.insert(sub.filter.clone(), wanted.len());
                    wanted.push((sub.filter, opts));
                }
                None => {}
            }
        }
        // One budget for the whole packet (what the session's queue would
        // take), spent filter by filter: no lookup collects more than what
        // is left of it.
        let mut budget = self.session.retained_room(cap);
        let mut retained = Vec::new();
        for (filter, opts) in wanted {
            let found = if self.tenant.id.is_platform() {
                crate::platform::retained_for(&self.broker, &filter, now, budget)
            } else {
                crate::router::retained_for(&self.broker, &self.tenant, &filter, now, budget)
            };
            budget = budget.saturating_sub(found.messages.len());
            retained.extend(found.messages.into_iter().map(|m| Delivery {
                qos: m.qos.min(opts.qos),
                // MQTT-3.3.1-9: retained on subscribe keep RETAIN set.
                retain: true,
                subscription_ids: sub_id.into_iter().collect(),
                shared: None,
                message: m,
                seq: None,
            }));
        }
        // MQTT-3.8.4-1: SUBACK before the retained messages it triggers.
        // 3.9.2.1.2: one reason string for the packet; v5 only.
        let properties = mqtt::Properties {
            reason_string: (!why.is_empty() && self.version == ProtocolVersion::V5)
                .then(|| why.join("; ")),
            ..Default::default()
        };
        self.acknowledge(
            SubAck {
                packet_id: s.packet_id,
                reason_codes: codes,
                properties,
            }
            .into(),
            crate::session_store::all_durable(stored),
        )?;
        for d in retained {
            self.session.enqueue_retained(d, cap);
        }
        Ok(())
    }

    /// The subscriptions this session holds now, and their filter bytes.
    fn subscription_usage(&self) -> SubscriptionUsage {
        let st = self.session.lock();
        SubscriptionUsage {
            count: st.subscriptions.len(),
            bytes: st.subscriptions.keys().map(|f| f.as_str().len()).sum(),
        }
    }

    fn on_unsubscribe(&mut self, u: Unsubscribe) -> Result<(), Error> {
        let durable = self.session.lock().durable;
        let mut stored = Vec::new();
        let codes = u
            .filters
            .iter()
            .map(|f| {
                if self.tenant.unsubscribe(&self.session, f) {
                    if let Some(store) = self.session_store(durable) {
                        stored.push(store.subscription(&self.tenant.id, &self.client_id, f, None));
                    }
                    ReasonCode::Success
                } else {
                    ReasonCode::NoSubscriptionExisted
                }
            })
            .collect();
        self.acknowledge(
            UnsubAck {
                packet_id: u.packet_id,
                reason_codes: codes,
                properties: Default::default(),
            }
            .into(),
            crate::session_store::all_durable(stored),
        )
    }
}

/// Adds a reason to a SUBACK's reason string, each once and at most 8:
/// one packet may carry thousands of refused filters.
fn note(why: &mut Vec<String>, reason: String) {
    if why.len() < 8 && !why.contains(&reason) {
        why.push(reason);
    }
}

/// A session's subscriptions against
/// [`crate::Config::max_subscriptions_per_session`] and
/// [`crate::Config::max_subscription_bytes_per_session`].
struct SubscriptionUsage {
    count: usize,
    bytes: usize,
}

impl SubscriptionUsage {
    /// Whether one more filter of `len` bytes fits; if not, the metric
    /// label and the reason string.
    fn admit(&self, len: usize, config: &crate::Config) -> Result<(), (&'static str, String)> {
        if self.count >= config.max_subscriptions_per_session {
            return Err((
                "count",
                format!(
                    "at most {} subscriptions per session",
                    config.max_subscriptions_per_session
                ),
            ));
        }
        if self.bytes.saturating_add(len) > config.max_subscription_bytes_per_session {
            return Err((
                "bytes",
                format!(
                    "at most {} bytes of topic filters per session",
                    config.max_subscription_bytes_per_session
                ),
            ));
        }
        Ok(())
    }

    fn add(&mut self, len: usize) {
        self.count += 1;
        self.bytes += len;
    }
}
