//! [`Fanout`]: the broker takes one `EventSink`; presence, webhooks and the
//! dashboard each want the events.

use std::sync::Arc;

use broker::{Event, EventSink};

/// Hands every event to each of its sinks, in order.
#[derive(Clone)]
pub struct Fanout {
    sinks: Vec<Arc<dyn EventSink>>,
    wants_published: bool,
}

impl Fanout {
    pub fn new(sinks: Vec<Arc<dyn EventSink>>) -> Self {
        let wants_published = sinks.iter().any(|s| s.wants_published());
        Self {
            sinks,
            wants_published,
        }
    }
}

impl std::fmt::Debug for Fanout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fanout")
            .field("sinks", &self.sinks.len())
            .finish()
    }
}

impl EventSink for Fanout {
    fn emit(&self, event: Event) {
        let published = matches!(event, Event::Published { .. });
        let Some((last, rest)) = self.sinks.split_last() else {
            return;
        };
        for sink in rest {
            if !published || sink.wants_published() {
                sink.emit(event.clone());
            }
        }
        if !published || last.wants_published() {
            last.emit(event);
        }
    }

    fn wants_published(&self) -> bool {
        self.wants_published
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use broker::{MemoryEvents, NoEvents, TenantId};

    #[test]
    fn every_sink_gets_what_it_wants() {
        let a = Arc::new(MemoryEvents::new());
        let b = Arc::new(MemoryEvents::new());
        let fanout = Fanout::new(vec![a.clone(), Arc::new(NoEvents), b.clone()]);
        assert!(fanout.wants_published());
        let event = Event::RetainedChanged {
            tenant: TenantId::parse("acme").unwrap(),
            topic: mqtt::TopicName::parse("t").unwrap(),
            payload: None,
        };
        fanout.emit(event.clone());
        assert_eq!(a.snapshot(), std::slice::from_ref(&event));
        assert_eq!(b.snapshot(), [event]);
        assert!(!Fanout::new(vec![Arc::new(NoEvents)]).wants_published());
    }
}
