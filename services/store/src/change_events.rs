//! The events a change causes (REST changes: `device.created`,
//! `certificate.revoked`, …), carried on the change's [`NewAuditEntry`]:
//! numbered and written to the webhook outbox in the change's own
//! transaction, beside its audit entry, so an event exists exactly when its
//! change does; and announced on the store's [`EventHub`] (SSE, fleet
//! stats, the outbox writer's wake-up) only once that transaction has
//! committed, so nobody hears of a change that did not happen.
//!
//! Events of the broker (connects, reported state, messages) do not come
//! this way: they have no change of ours to commit with and keep their
//! fast path (the hub first, the outbox through its bounded writer).

use events::Event;
use events::hub::{EventHub, PlatformEvent};

use crate::{NewAuditEntry, Store};

/// One event of a change.
#[derive(Debug, Clone, PartialEq)]
pub struct ChangeEvent {
    pub tenant_id: String,
    /// A device event is numbered in the device's sequence (and fails the
    /// change if the device does not exist).
    pub device_id: Option<String>,
    pub event: Event,
}

impl NewAuditEntry {
    /// This entry, and `event` caused by the change it records.
    #[must_use]
    pub fn with_event(mut self, event: ChangeEvent) -> NewAuditEntry {
        self.events.push(event);
        self
    }
}

/// Numbers `$events` (a `&[ChangeEvent]`) and appends them to the outbox on
/// `$conn` (a connection or transaction of either backend). Evaluates to
/// `Result<Vec<PlatformEvent>, Error>`: the events as the hub carries
/// them, each with its outbox row, to announce after the commit.
macro_rules! write_events_in {
    ($conn:expr, $events:expr) => {{
        const APPEND: &str = concat!(
            "INSERT INTO webhook_outbox (tenant_id, event_type, payload, device_id, device_seq, ",
            "topic, created_at) VALUES ($1, $2, $3, $4, $5, NULL, $6) RETURNING id"
        );
        let events: &[$crate::change_events::ChangeEvent] = $events;
        let mut written = Vec::with_capacity(events.len());
        let mut failed = None;
        for change in events {
            let mut event = events::hub::PlatformEvent::new(&change.tenant_id, &change.event);
            // As the database keeps it, so the hub and the webhook body
            // carry the same time.
            event.timestamp = chrono::SubsecRound::trunc_subsecs(event.timestamp, 6);
            let event = match &change.device_id {
                None => event,
                Some(device) => {
                    // Numbered in this transaction: the device's row stays
                    // locked until it commits, so numbers follow commits.
                    let seq = sqlx::query_scalar::<_, i64>($crate::device_state::NEXT_EVENT_SEQ)
                        .bind(&change.tenant_id)
                        .bind(device)
                        .fetch_one(&mut *$conn)
                        .await;
                    match seq {
                        Ok(seq) => event.for_device(device, Some(seq)),
                        Err(e) => {
                            failed = Some($crate::device_state::state_error(
                                e,
                                &change.tenant_id,
                                device,
                            ));
                            break;
                        }
                    }
                }
            };
            let id = sqlx::query_scalar::<_, i64>(APPEND)
                .bind(&event.tenant)
                .bind(&event.event_type)
                .bind(sqlx::types::Json(&event.data))
                .bind(event.device.as_deref())
                .bind(event.seq)
                .bind($crate::codec::Ts(event.timestamp))
                .fetch_one(&mut *$conn)
                .await;
            match id {
                Ok(id) => written.push(events::hub::PlatformEvent {
                    outbox_id: Some(id),
                    ..event
                }),
                Err(e) => {
                    failed = Some($crate::Error::from(e));
                    break;
                }
            }
        }
        match failed {
            Some(e) => Err::<Vec<events::hub::PlatformEvent>, $crate::Error>(e),
            None => Ok(written),
        }
    }};
}
pub(crate) use write_events_in;

impl Store {
    /// The hub this store announces committed change events on.
    pub fn event_hub(&self) -> &EventHub {
        &self.events
    }

    /// This store, announcing committed change events on `hub` (the one
    /// SSE streams and the outbox writer listen on).
    #[must_use]
    pub fn with_event_hub(mut self, hub: EventHub) -> Store {
        self.events = hub;
        self
    }

    /// Announce events whose transaction has committed.
    pub(crate) fn announce(&self, committed: Vec<PlatformEvent>) {
        for event in committed {
            self.events.publish(event);
        }
    }
}
