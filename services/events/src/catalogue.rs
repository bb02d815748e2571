//! [`EventType`] and [`Event`], generated from one table so that a name, its
//! variant and its payload type cannot drift apart.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

use crate::payload::{
    CertificateIssued, CertificateRevoked, DeviceConnected, DeviceDeleted, DeviceDisconnected,
    DeviceSnapshot, EndpointDisabled, EventsDropped, MessageBatch, MessagePublished, StateDesired,
    StateReported, WebhookRef,
};

macro_rules! catalogue {
    ($(
        $(#[doc = $doc:literal])*
        $variant:ident = $name:literal, $payload:ty, device: $device:literal;
    )*) => {
        /// Every platform event type. [`EventType::as_str`] is its wire name,
        /// the `type` of webhook bodies and SSE frames.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum EventType {
            $( $(#[doc = $doc])* $variant, )*
        }

        impl EventType {
            /// Every event type, in catalogue order.
            pub const ALL: &'static [EventType] = &[$(EventType::$variant,)*];

            /// The wire name, e.g. `device.connected`.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $( EventType::$variant => $name, )*
                }
            }

            /// Whether the event is about one device: its `data` then
            /// carries `device_id` and, where the store could number it,
            /// `seq` (the device's event sequence number).
            pub const fn is_device_event(self) -> bool {
                match self {
                    $( EventType::$variant => $device, )*
                }
            }

            /// What the payload is, for the OpenAPI document.
            pub fn description(self) -> &'static str {
                match self {
                    $( EventType::$variant => concat!($($doc, "\n",)*).trim_ascii(), )*
                }
            }
        }

        /// An event with its typed payload. Serialises as the body
        /// envelope's `{type, data}`.
        #[derive(Debug, Clone, PartialEq, Serialize)]
        #[serde(tag = "type", content = "data")]
        pub enum Event {
            $(
                $(#[doc = $doc])*
                #[serde(rename = $name)]
                $variant($payload),
            )*
        }

        impl Event {
            /// Its type.
            pub fn event_type(&self) -> EventType {
                match self {
                    $( Event::$variant(_) => EventType::$variant, )*
                }
            }

            /// The payload as the `data` clients receive. Serialising these
            /// plain structs cannot fail; were it ever to, the event still
            /// goes out, with `null` data, rather than not at all.
            pub fn data(&self) -> Value {
                let data = match self {
                    $( Event::$variant(payload) => serde_json::to_value(payload), )*
                };
                data.unwrap_or(Value::Null)
            }
        }

        /// The payload schemas and the envelope of each event type, for
        /// [`crate::openapi`].
        pub(crate) fn payload_schemas() -> Vec<(EventType, crate::openapi::PayloadSchema)> {
            vec![$( (EventType::$variant, crate::openapi::PayloadSchema::of::<$payload>()), )*]
        }
    };
}

catalogue! {
    /// A device was created (by REST, import, or just in time by the broker).
    DeviceCreated = "device.created", DeviceSnapshot, device: true;
    /// A device's labels, attributes or `enabled` changed.
    DeviceUpdated = "device.updated", DeviceSnapshot, device: true;
    /// A device was deleted.
    DeviceDeleted = "device.deleted", DeviceDeleted, device: true;
    /// A device connected to the broker.
    DeviceConnected = "device.connected", DeviceConnected, device: true;
    /// A device's connection ended.
    DeviceDisconnected = "device.disconnected", DeviceDisconnected, device: true;
    /// A device published its reported state.
    StateReported = "state.reported", StateReported, device: true;
    /// A device's desired state was set (by REST).
    StateDesired = "state.desired", StateDesired, device: true;
    /// A certificate was issued to a device.
    CertificateIssued = "certificate.issued", CertificateIssued, device: true;
    /// A certificate was revoked, or every certificate of a device or
    /// tenant issued before a time was (`scope`).
    CertificateRevoked = "certificate.revoked", CertificateRevoked, device: true;
    /// A device published an MQTT message that an endpoint's topic filter
    /// takes.
    MessagePublished = "message.published", MessagePublished, device: true;
    /// Several `message.published` events in one delivery (endpoints with a
    /// topic filter, when batching is on).
    MessageBatch = "message.batch", MessageBatch, device: false;
    /// A test delivery, asked for by REST.
    WebhookPing = "webhook.ping", WebhookRef, device: false;
    /// The platform disabled an endpoint after failing deliveries.
    WebhookEndpointDisabled = "webhook.endpoint_disabled", EndpointDisabled, device: false;
    /// Events of the tenant were dropped before they reached the outbox
    /// (the platform was overloaded).
    WebhookEventsDropped = "webhook.events_dropped", EventsDropped, device: false;
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A name that is no event type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownEventType(pub String);

impl fmt::Display for UnknownEventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown event type {:?}", self.0)
    }
}

impl std::error::Error for UnknownEventType {}

impl FromStr for EventType {
    type Err = UnknownEventType;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        EventType::ALL
            .iter()
            .copied()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| UnknownEventType(s.to_owned()))
    }
}

impl From<EventType> for String {
    fn from(t: EventType) -> String {
        t.as_str().to_owned()
    }
}

impl PartialEq<str> for EventType {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for EventType {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl PartialEq<EventType> for str {
    fn eq(&self, other: &EventType) -> bool {
        self == other.as_str()
    }
}

impl PartialEq<EventType> for &str {
    fn eq(&self, other: &EventType) -> bool {
        *self == other.as_str()
    }
}

impl PartialEq<EventType> for String {
    fn eq(&self, other: &EventType) -> bool {
        self == other.as_str()
    }
}

impl Serialize for EventType {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for EventType {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        name.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_are_unique() {
        for t in EventType::ALL {
            assert_eq!(t.as_str().parse::<EventType>(), Ok(*t));
            assert_eq!(serde_json::to_value(t).unwrap(), t.as_str());
            assert!(!t.description().is_empty(), "{t}");
        }
        let mut names: Vec<_> = EventType::ALL.iter().map(|t| t.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), EventType::ALL.len());
        assert!("device.nope".parse::<EventType>().is_err());
    }
}
