//! What a connection sends: packets are encoded into one buffer and written
//! together (batched writes), within the client's Maximum Packet Size, with
//! server → client topic aliases when the client allows them.

use std::collections::HashMap;
use std::num::NonZeroU16;

use bytes::BytesMut;
use mqtt::{EncodeError, Packet, ProtocolVersion, Publish, TopicName};

use crate::Error;

/// The encode buffer and the client's limits.
#[derive(Debug)]
pub(crate) struct Outbound {
    pub(crate) buf: BytesMut,
    version: ProtocolVersion,
    /// The client's Maximum Packet Size (MQTT-3.1.2-24).
    max_packet_size: usize,
    /// Aliases we use: the client's Topic Alias Maximum (3.1.2.11.5),
    /// capped at [`MAX_ALIASES`]; 0 = none.
    alias_max: u16,
    /// Made at the first aliased PUBLISH: most connections never send
    /// one, and each holds its `Outbound` while idle (issue 16).
    aliases: Option<Box<Aliases>>,
}

/// The topic aliases of one connection (server → client).
#[derive(Debug, Default)]
struct Aliases {
    assigned: HashMap<TopicName, Slot>,
    /// Topics sent without an alias since the table filled, with how often:
    /// one that gets busier than the least used aliased topic takes its
    /// alias. Bounded: cleared when it reaches [`MAX_CANDIDATES`].
    candidates: HashMap<TopicName, u32>,
}

/// Server → client aliases we keep per connection (the scan for the least
/// used one is linear in this).
const MAX_ALIASES: u16 = 64;
const MAX_CANDIDATES: usize = 1024;

#[derive(Debug, Clone, Copy)]
struct Slot {
    alias: NonZeroU16,
    hits: u32,
}

/// What to do with a topic's alias for one PUBLISH.
enum AliasUse {
    None,
    /// Known alias: send it without the topic name.
    Reuse(NonZeroU16),
    /// New mapping: send topic and alias; `evict` loses its alias.
    Assign {
        alias: NonZeroU16,
        evict: Option<TopicName>,
        hits: u32,
    },
}

impl Outbound {
    pub(crate) fn new(version: ProtocolVersion, max_packet_size: usize, alias_max: u16) -> Self {
        Self {
            // Allocated by the first packet, released when idle (`buffers`).
            buf: BytesMut::new(),
            version,
            max_packet_size,
            alias_max: alias_max.min(MAX_ALIASES),
            aliases: None,
        }
    }

    /// Decides the alias for `topic`: reuse, assign a free one, or take the
    /// least used one when `topic` has become busier (3.3.2.3.4 lets the
    /// sender remap an alias by sending it with a topic name).
    fn plan_alias(&mut self, topic: &TopicName) -> AliasUse {
        let alias_max = self.alias_max;
        let table = self.aliases.get_or_insert_default();
        if let Some(slot) = table.assigned.get_mut(topic) {
            slot.hits = slot.hits.saturating_add(1);
            return AliasUse::Reuse(slot.alias);
        }
        if let Some(alias) = u16::try_from(table.assigned.len() + 1)
            .ok()
            .filter(|n| *n <= alias_max)
            .and_then(NonZeroU16::new)
        {
            return AliasUse::Assign {
                alias,
                evict: None,
                hits: 1,
            };
        }
        if table.candidates.len() >= MAX_CANDIDATES {
            table.candidates.clear();
        }
        let seen = table.candidates.entry(topic.clone()).or_insert(0);
        *seen = seen.saturating_add(1);
        let seen = *seen;
        let coldest = table
            .assigned
            .iter()
            .min_by_key(|(_, s)| s.hits)
            .map(|(t, s)| (t.clone(), *s));
        match coldest {
            Some((cold, slot)) if seen > slot.hits => AliasUse::Assign {
                alias: slot.alias,
                evict: Some(cold),
                hits: seen,
            },
            _ => AliasUse::None,
        }
    }

    /// Appends a control packet.
    pub(crate) fn send(&mut self, packet: impl Into<Packet>) -> Result<(), Error> {
        let packet = packet.into();
        match packet.encode_limited(self.version, self.max_packet_size, &mut self.buf) {
            Ok(()) => Ok(()),
            // A DISCONNECT or ack with a long reason string over the limit:
            // MQTT-3.1.2-25 says drop it; the connection goes on.
            Err(EncodeError::PacketTooLarge { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Appends a PUBLISH; returns `false` if it exceeds the client's Maximum
    /// Packet Size and was discarded (MQTT-3.1.2-25).
    pub(crate) fn publish(&mut self, mut publish: Publish) -> Result<bool, Error> {
        let mut plan = AliasUse::None;
        if self.version == ProtocolVersion::V5
            && self.alias_max > 0
            && let Some(topic) = &publish.topic
        {
            plan = self.plan_alias(topic);
            match &plan {
                AliasUse::None => {}
                AliasUse::Reuse(alias) => {
                    // MQTT-3.3.2-10 keeps it within the client's maximum.
                    publish.topic = None;
                    publish.properties.topic_alias = Some(*alias);
                }
                AliasUse::Assign { alias, .. } => {
                    publish.properties.topic_alias = Some(*alias);
                }
            }
        }
        let topic = publish.topic.clone();
        let packet = Packet::Publish(publish);
        match packet.encode_limited(self.version, self.max_packet_size, &mut self.buf) {
            Ok(()) => {
                // Only a mapping the client has seen is remembered.
                if let (AliasUse::Assign { alias, evict, hits }, Some(topic)) = (plan, topic) {
                    let table = self.aliases.get_or_insert_default();
                    if let Some(cold) = evict {
                        table.assigned.remove(&cold);
                    }
                    table.candidates.remove(&topic);
                    table.assigned.insert(topic, Slot { alias, hits });
                }
                Ok(true)
            }
            Err(EncodeError::PacketTooLarge { .. }) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    /// The PUBLISHes written so far: their topic and topic alias.
    fn sent(out: &mut Outbound) -> Vec<(Option<String>, Option<u16>)> {
        let mut got = Vec::new();
        while let Some(Packet::Publish(p)) =
            decode(&mut out.buf, ProtocolVersion::V5, 1 << 20).unwrap()
        {
            got.push((
                p.topic.map(|t| t.into_string()),
                p.properties.topic_alias.map(|a| a.get()),
            ));
        }
        got
    }

    #[test]
    fn a_busier_topic_takes_the_least_used_alias() {
        let mut out = Outbound::new(ProtocolVersion::V5, 1 << 20, 1);
        for _ in 0..2 {
            out.publish(publish("cold", b"x")).unwrap();
        }
        for _ in 0..3 {
            out.publish(publish("hot", b"x")).unwrap();
        }
        out.publish(publish("hot", b"x")).unwrap();
        let hot = |a| (Some("hot".to_owned()), a);
        assert_eq!(
            sent(&mut out)[2..],
            [
                hot(None),
                hot(None),
                // Seen 3 times > "cold"'s 2: alias 1 is remapped.
                hot(Some(1)),
                (None, Some(1)),
            ]
        );
    }

    use super::*;
    use mqtt::decode;

    fn publish(topic: &str, payload: &'static [u8]) -> Publish {
        Publish::new(TopicName::parse(topic).unwrap(), payload)
    }

    #[test]
    fn aliases_are_assigned_then_reused_up_to_the_clients_maximum() {
        let mut out = Outbound::new(ProtocolVersion::V5, 1 << 20, 1);
        assert!(out.publish(publish("a/b", b"1")).unwrap());
        assert!(out.publish(publish("a/b", b"2")).unwrap());
        assert!(out.publish(publish("c", b"3")).unwrap());
        assert_eq!(
            sent(&mut out),
            [
                (Some("a/b".into()), Some(1)),
                (None, Some(1)),
                (Some("c".into()), None)
            ]
        );
    }

    #[test]
    fn oversized_publishes_are_discarded_not_fatal() {
        let mut out = Outbound::new(ProtocolVersion::V311, 10, 0);
        assert!(!out.publish(publish("topic", b"0123456789")).unwrap());
        assert!(out.buf.is_empty());
        assert!(out.publish(publish("t", b"x")).unwrap());
    }
}
