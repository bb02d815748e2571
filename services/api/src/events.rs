//! The platform event hub, as the API uses it: it lives in the `events`
//! crate ([`events::hub`](::events::hub)), below the API and the webhooks,
//! so that the broker's events reach the webhooks outbox without passing
//! through the HTTP crate. Re-exported here for the API's routes.

pub use ::events::hub::{
    DEFAULT_EVENT_BUFFER, EventHub, EventListener, EventNumbers, PlatformEvent, StreamItem,
};
