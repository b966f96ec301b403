//! Call events as the rest of sipbridge sees them: one struct per Telnyx webhook
//! event (`call.initiated`, `call.answered`, `call.hangup`, ...), created where the
//! thing happened and handed to the event sink (the durable webhook outbox, then the
//! API's event socket).
//!
//! The payload is already in Telnyx's field names (PROTOCOLS.md §2); the envelope
//! (`data.record_type`, `data.id`, `data.occurred_at`, `meta`) is added by
//! `webhook::envelope` when the event is delivered.

use std::time::SystemTime;

use serde_json::{Map, Value};

/// One event, ready to be persisted and delivered.
#[derive(Debug, Clone, PartialEq)]
pub struct CallEvent {
    /// `data.id`: unique per event (UUID v4); receivers drop duplicates by it.
    pub id: uuid::Uuid,
    /// `data.event_type`, e.g. `"call.hangup"`.
    pub event_type: String,
    /// `data.occurred_at` (rendered as RFC 3339 UTC with microseconds).
    pub occurred_at: SystemTime,
    /// The call session this event belongs to: events of one session are delivered
    /// in the order they occurred. `None` for events outside calls.
    pub call_session_id: Option<String>,
    /// `data.payload`, Telnyx field names (`call_control_id`, `hangup_cause`, ...).
    pub payload: Map<String, Value>,
}

impl CallEvent {
    /// A new event of `event_type` occurring now.
    pub fn new(event_type: &str, call_session_id: Option<String>, payload: Map<String, Value>) -> Self {
        Self {
            id: uuid::Uuid::new_v4(),
            event_type: event_type.to_string(),
            occurred_at: SystemTime::now(),
            call_session_id,
            payload,
        }
    }
}

/// Where events go: first the durable webhook outbox (when attached: queued to the
/// store's single writer in emission order, so per-call order survives), then every
/// live subscriber (API event socket, tests), in emission order. Cloning is cheap.
#[derive(Clone)]
pub struct EventBus {
    tx: tokio::sync::broadcast::Sender<std::sync::Arc<CallEvent>>,
    outbox: Option<crate::webhook::Outbox>,
}

impl std::fmt::Debug for EventBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventBus").field("outbox", &self.outbox.is_some()).finish()
    }
}

impl Default for EventBus {
    fn default() -> Self {
        Self::new()
    }
}

impl EventBus {
    /// A bus whose subscribers may lag by up to 4096 events before they lose some
    /// (a lagging subscriber is told how many it missed; the durable outbox must
    /// never lag: it commits before the bus is used).
    pub fn new() -> Self {
        Self { tx: tokio::sync::broadcast::channel(4096).0, outbox: None }
    }

    /// A bus whose events are first committed to the webhook outbox.
    pub fn with_outbox(outbox: crate::webhook::Outbox) -> Self {
        Self { outbox: Some(outbox), ..Self::new() }
    }

    /// Publishes an event: queued to the outbox's writer (durable once the store
    /// commits it; ordered with every earlier event), then broadcast.
    pub fn emit(&self, event: CallEvent) {
        tracing::debug!(event_type = %event.event_type, id = %event.id, "event");
        if let Some(outbox) = &self.outbox {
            let committed = outbox.submit(&event);
            let id = event.id;
            tokio::spawn(async move {
                if let Err(e) = committed.await {
                    tracing::error!(event_id = %id, "event not stored for webhook delivery: {e}");
                }
            });
        }
        let _ = self.tx.send(std::sync::Arc::new(event));
    }

    /// A new subscriber that sees events emitted from now on.
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<std::sync::Arc<CallEvent>> {
        self.tx.subscribe()
    }
}
