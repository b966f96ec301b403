//! Calls: everything about a call that is not SIP or RTP. `core` is one call's
//! control logic without I/O (state machine, the Telnyx action table, the hangup
//! mapping, PIN, park, session timers, B2BUA pairing); `shell` is the one tokio
//! loop that drives it for every kind of leg; `actions` does an accepted action's
//! media work; `rooms` is room membership and `conference.*` events; `services`
//! is what the API, WebRTC and SIP share (`CallControl`); `quality_series` is a
//! leg's jitter and loss over time for its call record. Also Telnyx-style ids
//! and hangup causes, the events calls emit and their common payload fields.
//! Map: `docs/architecture.md`.

pub mod actions;
pub mod amd;
pub mod control;
pub mod core;
pub mod event;
pub mod gather;
pub mod ids;
pub mod lifecycle;
pub mod listen;
pub mod media_source;
pub mod pin;
pub mod playback;
pub mod quality_series;
pub mod recording;
pub mod rooms;
pub mod services;
pub mod shell;
pub mod state;

use std::time::SystemTime;

use serde_json::{Map, Value, json};

/// Direction of a leg as Telnyx reports it (defined with the call records).
pub use crate::store::calls::Direction;
pub use event::{CallEvent, EventBus};
pub use ids::CallIds;
pub use state::{CallState, CallStateMachine, Hangup, HangupCause, HangupSource};

/// What is known about a leg from its INVITE on: the fields every event carries.
#[derive(Debug, Clone)]
pub struct CallInfo {
    /// Telnyx ids.
    pub ids: CallIds,
    /// Incoming or outgoing.
    pub direction: Direction,
    /// Caller: E.164 or SIP user part of From (Telnyx `from`).
    pub from: String,
    /// Callee: Request-URI user part (Telnyx `to`).
    pub to: String,
    /// Trunk name (Telnyx `connection_id`).
    pub connection_id: String,
    /// SIP Call-ID of the leg.
    pub sip_call_id: String,
    /// When the INVITE arrived or was sent.
    pub start_time: SystemTime,
    /// Base64 client state set by the API, echoed in events.
    pub client_state: Option<String>,
    /// X- headers of the INVITE (Telnyx `custom_headers`: name/value pairs).
    pub custom_headers: Vec<(String, String)>,
    /// Where this call's events go instead of `[webhooks] url` (Telnyx
    /// `webhook_url` on dial/transfer); `None` for the configured URL.
    pub webhook_url: Option<String>,
}

/// RFC 3339 UTC with microseconds, as Telnyx renders times.
pub fn rfc3339_micros(t: SystemTime) -> String {
    humantime::format_rfc3339_micros(t).to_string()
}

impl CallInfo {
    /// The payload fields common to every call event (PROTOCOLS.md §2).
    pub fn payload(&self, state: &str) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("call_control_id".into(), json!(self.ids.call_control_id));
        m.insert("call_leg_id".into(), json!(self.ids.call_leg_id));
        m.insert("call_session_id".into(), json!(self.ids.call_session_id));
        m.insert("connection_id".into(), json!(self.connection_id));
        m.insert("client_state".into(), json!(self.client_state));
        m.insert("from".into(), json!(self.from));
        m.insert("to".into(), json!(self.to));
        m.insert("direction".into(), json!(self.direction.as_str()));
        m.insert("state".into(), json!(state));
        m.insert("start_time".into(), json!(rfc3339_micros(self.start_time)));
        m
    }

    /// A new event of this call.
    pub fn event(&self, event_type: &str, payload: Map<String, Value>) -> CallEvent {
        let mut e = CallEvent::new(event_type, Some(self.ids.call_session_id.clone()), payload);
        e.webhook_url = self.webhook_url.clone();
        e
    }

    /// `call.initiated` (`state`: `parked` for an incoming call waiting for its
    /// route, `bridging` for a leg dialled to be bridged).
    pub fn initiated(&self, state: &str) -> CallEvent {
        let mut p = self.payload(state);
        let headers: Vec<Value> = self.custom_headers.iter().map(|(n, v)| json!({"name": n, "value": v})).collect();
        p.insert("custom_headers".into(), Value::Array(headers));
        self.event("call.initiated", p)
    }

    /// The call as an agent stream names it (`start` frame, `streaming.*` events).
    pub fn stream_call(&self) -> crate::agent::stream::StreamCall {
        crate::agent::stream::StreamCall {
            call_control_id: self.ids.call_control_id.clone(),
            call_leg_id: self.ids.call_leg_id.clone(),
            call_session_id: self.ids.call_session_id.clone(),
            connection_id: self.connection_id.clone(),
            client_state: self.client_state.clone(),
            from: self.from.clone(),
            to: self.to.clone(),
            webhook_url: self.webhook_url.clone(),
        }
    }

    /// `call.answered`.
    pub fn answered(&self) -> CallEvent {
        self.event("call.answered", self.payload("answered"))
    }

    /// `call.hangup` with cause, source, SIP code and end time; `quality` is the
    /// `call_quality_stats` object when media ran. The event occurred at
    /// `end_time` (Telnyx's `occurred_at`: when it happened, not when it was
    /// sent), however long the box then took to stop the media, close the
    /// agent's stream and finish the BYE transactions.
    pub fn hangup(&self, h: Hangup, end_time: SystemTime, quality: Option<Value>) -> CallEvent {
        let mut p = self.payload("hangup");
        p.insert("hangup_cause".into(), json!(h.cause.as_str()));
        p.insert("hangup_source".into(), json!(h.source.as_str()));
        p.insert("sip_hangup_cause".into(), json!(h.sip_code.to_string()));
        p.insert("end_time".into(), json!(rfc3339_micros(end_time)));
        p.insert("call_quality_stats".into(), quality.unwrap_or(Value::Null));
        let mut e = self.event("call.hangup", p);
        e.occurred_at = end_time;
        e
    }
}

#[cfg(test)]
#[path = "core_tests.rs"]
mod core_tests;
