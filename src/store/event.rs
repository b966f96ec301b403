//! Call events as data: one [`CallEvent`] per Telnyx webhook event
//! (`call.initiated`, `call.answered`, `call.hangup`, ...), created where the thing
//! happened and handed to `call::EventBus`, which commits it here first.
//!
//! The payload is already in Telnyx's field names (PROTOCOLS.md §2); the envelope
//! (`data.record_type`, `data.id`, `data.occurred_at`, `meta`) is added by
//! `webhook::envelope` when the event is delivered. [`CallEvent::record`] carries
//! what the call record needs beyond the payload (route and agent names, the
//! leg's quality series); it is never delivered.
//!
//! Defined in the store, not in `call`, because the store persists events (the
//! `webhook_outbox` row, the `calls` and `recordings` rows written from them:
//! [`super::call_events`], [`super::recordings`]) and must not depend on the call
//! code that emits them. `call::CallEvent` is this type.

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
    /// Facts for the call record (`calls` table) that the payload does not carry.
    /// Never part of the webhook.
    pub record: RecordExtras,
    /// The call's own webhook URL (Telnyx `webhook_url` on dial/transfer): where
    /// this event goes instead of `[webhooks] url`. `None` for `[webhooks] url`.
    pub webhook_url: Option<String>,
}

/// Call-record facts Telnyx payloads have no field for: stored in the leg's
/// `calls` row when the event is committed, never delivered in a webhook. Set
/// them where they are known (`None` leaves the column as it is), e.g.
/// `info.initiated("parked").with_route(&route.name)` or, for a route to an
/// agent, `.with_agent(name)` on `call.initiated` or `streaming.started`; the
/// leg's jitter/loss series with `.with_quality_samples(..)` on `call.hangup`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecordExtras {
    /// `[[route]]` name that took the call (`calls.route`).
    pub route: Option<String>,
    /// `[[agent]]` name the call is streamed to (`calls.agent`).
    pub agent: Option<String>,
    /// The leg's jitter and loss over time (`calls.quality_samples`), the JSON
    /// of `call::quality_series::QualitySeries::to_json`:
    /// `{"interval": "rtcp", "points": [{"t_ms", "jitter_ms", "loss_percent", "packets"}]}`.
    pub quality_samples: Option<Value>,
}

impl RecordExtras {
    /// Whether there is nothing to record.
    pub fn is_empty(&self) -> bool {
        self.route.is_none() && self.agent.is_none() && self.quality_samples.is_none()
    }
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
            record: RecordExtras::default(),
            webhook_url: None,
        }
    }

    /// This event, recording `route` as the leg's `[[route]]` name (`calls.route`).
    pub fn with_route(mut self, route: &str) -> Self {
        self.record.route = Some(route.to_string());
        self
    }

    /// This event, recording `agent` as the leg's `[[agent]]` name (`calls.agent`).
    pub fn with_agent(mut self, agent: &str) -> Self {
        self.record.agent = Some(agent.to_string());
        self
    }

    /// This event, recording the leg's quality series (`calls.quality_samples`;
    /// `None` leaves the column as it is).
    pub fn with_quality_samples(mut self, samples: Option<Value>) -> Self {
        self.record.quality_samples = samples;
        self
    }
}

/// Where events go, for code below the call layer (the agent stream, crash
/// recovery): `call::EventBus` implements it (committed, then delivered).
pub trait EventSink: Send + Sync {
    /// Emits one event (committed and delivered like any call event).
    fn emit_event(&self, event: CallEvent);
}
