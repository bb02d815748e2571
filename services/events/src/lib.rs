//! fleetmq's event catalogue: the one place that names platform events.
//!
//! - [`EventType`]: every event type and its wire name (`device.connected`,
//!   …). Nothing else spells an event type.
//! - [`Event`]: one variant per event type carrying its typed payload; its
//!   [`Event::data`] is the `data` of the webhook body and SSE frame, the
//!   JSON clients already see (the payload tests pin it).
//! - [`pattern`]: the event-type pattern syntax of webhook subscriptions
//!   and SSE filters (`device.connected`, `device.*`, `*`), matched in one
//!   function.
//! - [`openapi`]: the payloads as OpenAPI 3.1 `webhooks`, so customers can
//!   generate receivers.
//! - [`hub`]: [`hub::EventHub`], the in-process stream of events that
//!   producers (broker bridge, REST API) publish to and consumers (webhooks
//!   outbox, SSE, fleet stats) listen on.
//! - [`change`]: [`change::ChangeFeed`], the one feed of REST changes that
//!   live sessions must see ([`change::Change`]), applied by the access
//!   cache, the broker's sessions and the rest, and carried between
//!   cluster nodes.
//!
//! The crate sits below `store`, `webhooks` and `api` and knows none of
//! them: producers build an [`Event`], consumers match on names; the store
//! numbers device events through [`hub::EventNumbers`].

mod catalogue;
pub mod change;
pub mod hub;
pub mod openapi;
pub mod pattern;
pub mod payload;

pub use catalogue::{Event, EventType, UnknownEventType};
pub use pattern::{matches_any, pattern_matches};
