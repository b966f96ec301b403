//! Call records written from call events: each event a call emits is also the
//! change it makes to its leg's row in `calls` ([`super::calls`]). The SIP and
//! media code never writes records itself; the event bus hands every event to the
//! store's single writer, which applies [`RecordUpdate::of`] in the same
//! transaction as the event's outbox row. So a record and its events commit
//! together and in event order, and a crash leaves them consistent.
//!
//! | event | change to the leg's row (key: payload `call_leg_id`) |
//! |---|---|
//! | `call.initiated` | insert: ids, `connection_id` → `trunk`, `direction`, `from`, `to`, `start_time`, `custom_headers` |
//! | `call.answered` | `answer_time` = `occurred_at` |
//! | `call.hangup` | `end_time`, `hangup_cause`, `hangup_source`, `sip_hangup_cause`, `call_quality_stats` → `quality_stats` |
//! | `call.recording.saved` | `file_path` appended to `recording_paths`; a row in `recordings` ([`super::recordings`]), even for a leg without a record |
//! | `streaming.started` | `stream_url` (without query or credentials) |
//! | `call.bridged` | `bridged_call_leg_id` / `bridged_call_control_id`, on both legs |
//! | any | `route` / `agent` / `quality_samples` (the leg's jitter and loss over time, set by the shell on `call.hangup`; the first series wins) from the event's [`RecordExtras`] when set |
//!
//! Sans-IO apart from [`RecordUpdate::apply`], which runs the SQL on the writer's
//! connection. Events of other types, or without a `call_leg_id`, change nothing.

use std::time::SystemTime;

use rusqlite::Connection;
use serde_json::{Map, Value};

use super::calls::{self, CallEnd, CallStart, Direction};
use super::event::{CallEvent, RecordExtras};
use super::parse_timestamp;
use super::recordings::{self, NewRecording};

/// What an event changes in its leg's record.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// `call.initiated`: the row is created.
    Start(Box<CallStart>),
    /// `call.answered` at this time.
    Answer(SystemTime),
    /// `call.hangup`.
    End(CallEnd),
    /// `call.recording.saved`: a file path, and the recordings-index row when the
    /// event carries what it needs (`recording_id`, call ids).
    Recording(String, Option<Box<NewRecording>>),
    /// `streaming.started`: the stream URL.
    Stream(String),
    /// `call.bridged`: the other leg's `call_leg_id` and `call_control_id`.
    Bridged(String, Option<String>),
    /// Only [`RecordExtras`] to store.
    Extras,
}

/// One event's change to one leg's record.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordUpdate {
    /// The leg (`calls.call_leg_id`).
    pub call_leg_id: String,
    /// The change.
    pub change: Change,
    /// Route and agent names and the quality series, when the event carries them.
    pub extras: RecordExtras,
}

fn text(p: &Map<String, Value>, key: &str) -> Option<String> {
    match p.get(key)? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn time(p: &Map<String, Value>, key: &str) -> Option<SystemTime> {
    p.get(key)?.as_str().and_then(parse_timestamp)
}

/// A URL as stored: without user info, query or fragment (agent URLs may carry
/// tokens). Text that is not a URL is kept as it is.
fn without_secrets(s: &str) -> String {
    match url::Url::parse(s) {
        Ok(mut u) => {
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.set_query(None);
            u.set_fragment(None);
            u.to_string()
        }
        Err(_) => s.to_string(),
    }
}

impl RecordUpdate {
    /// The record change `event` makes; `None` when it makes none (an event type
    /// that changes nothing and carries no extras, or a payload without
    /// `call_leg_id`, or a `call.initiated` missing a field the row needs).
    pub fn of(event: &CallEvent) -> Option<Self> {
        let p = &event.payload;
        let call_leg_id = text(p, "call_leg_id")?;
        let change = match event.event_type.as_str() {
            "call.initiated" => {
                let direction = match p.get("direction").and_then(Value::as_str) {
                    Some("incoming") => Direction::Incoming,
                    Some("outgoing") => Direction::Outgoing,
                    _ => return None,
                };
                Change::Start(Box::new(CallStart {
                    call_leg_id: call_leg_id.clone(),
                    call_control_id: text(p, "call_control_id")?,
                    call_session_id: text(p, "call_session_id").or_else(|| event.call_session_id.clone())?,
                    trunk: text(p, "connection_id"),
                    direction,
                    from: text(p, "from").unwrap_or_default(),
                    to: text(p, "to").unwrap_or_default(),
                    start_time: time(p, "start_time").unwrap_or(event.occurred_at),
                    route: event.record.route.clone(),
                    agent: event.record.agent.clone(),
                    custom_headers: p.get("custom_headers").filter(|v| v.is_array()).cloned(),
                }))
            }
            "call.answered" => Change::Answer(event.occurred_at),
            "call.hangup" => Change::End(CallEnd {
                end_time: time(p, "end_time").unwrap_or(event.occurred_at),
                hangup_cause: text(p, "hangup_cause").unwrap_or_else(|| "unspecified".into()),
                hangup_source: text(p, "hangup_source").unwrap_or_else(|| "unknown".into()),
                sip_hangup_cause: text(p, "sip_hangup_cause"),
                quality_stats: p.get("call_quality_stats").filter(|v| !v.is_null()).cloned(),
            }),
            "call.recording.saved" => match text(p, "file_path") {
                Some(path) => Change::Recording(path, NewRecording::of(event).map(Box::new)),
                None => Change::Extras,
            },
            "streaming.started" => match text(p, "stream_url") {
                Some(url) => Change::Stream(without_secrets(&url)),
                None => Change::Extras,
            },
            "call.bridged" => match text(p, "bridged_call_leg_id") {
                Some(peer) => Change::Bridged(peer, text(p, "bridged_call_control_id")),
                None => Change::Extras,
            },
            _ => Change::Extras,
        };
        if change == Change::Extras && event.record.is_empty() {
            return None;
        }
        Some(Self { call_leg_id, change, extras: event.record.clone() })
    }

    /// Applies the change on the writer's connection (inside the event's
    /// transaction). `Ok(false)` when it changed nothing: the leg is unknown, a
    /// start for a leg that exists, an answer or hangup of a leg already ended
    /// (the first hangup wins).
    pub fn apply(&self, conn: &Connection, now: SystemTime) -> rusqlite::Result<bool> {
        let leg = self.call_leg_id.as_str();
        let changed = match &self.change {
            Change::Start(start) => {
                // A leg starts once; its extras are part of the insert.
                if calls::exists(conn, leg)? {
                    return Ok(false);
                }
                calls::insert(conn, start, now)?;
                return Ok(true);
            }
            Change::Answer(at) => calls::answer(conn, leg, *at)?,
            Change::End(end) => calls::end(conn, leg, end)?,
            Change::Recording(path, index) => {
                let indexed = match index {
                    Some(r) => recordings::insert(conn, r, now)?,
                    None => false,
                };
                calls::add_recording(conn, leg, path, now)? || indexed
            }
            Change::Stream(url) => calls::set_stream(conn, leg, url, now)?,
            Change::Bridged(peer, peer_control) => calls::set_bridged(conn, leg, peer, peer_control.as_deref(), now)?,
            Change::Extras => false,
        };
        let x = &self.extras;
        let names = if x.route.is_none() && x.agent.is_none() {
            false
        } else {
            calls::add_route(conn, leg, x.route.as_deref(), x.agent.as_deref(), now)?
        };
        let samples = match &x.quality_samples {
            Some(v) => calls::set_quality_samples(conn, leg, v, now)?,
            None => false,
        };
        Ok(changed || names || samples)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::call::{CallIds, CallInfo, Hangup, HangupCause, HangupSource};
    use crate::store::Store;
    use crate::store::calls::RecordState;
    use serde_json::json;
    use std::time::{Duration, UNIX_EPOCH};

    fn at(s: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_micros(1_800_000_000_000_000 + s * 1_000_000 + 250)
    }

    fn info(ids: CallIds, direction: Direction) -> CallInfo {
        CallInfo {
            ids,
            direction,
            from: "+14155550123".into(),
            to: "+13125550100".into(),
            connection_id: "telnyx-ip".into(),
            sip_call_id: "abc@host".into(),
            start_time: at(0),
            client_state: None,
            custom_headers: vec![("X-Shop".into(), "42".into())],
            webhook_url: None,
        }
    }

    fn apply(c: &Connection, e: &CallEvent) -> bool {
        RecordUpdate::of(e).expect("a record change").apply(c, at(100)).unwrap()
    }

    #[test]
    fn a_calls_events_write_its_whole_record() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        let c = s.conn();
        let near = info(CallIds::new_session(), Direction::Incoming);
        let far = info(CallIds::new_leg(&near.ids.call_session_id), Direction::Outgoing);
        let leg = near.ids.call_leg_id.clone();

        let mut initiated = near.initiated("parked").with_route("sales line");
        initiated.occurred_at = at(0);
        assert!(apply(c, &initiated));
        assert!(!apply(c, &initiated), "a second start of the same leg changes nothing");
        assert!(apply(c, &far.initiated("bridging")));
        let mut answered = near.answered();
        answered.occurred_at = at(2);
        assert!(apply(c, &answered));

        let mut stream = near.payload("answered");
        stream.insert("stream_url".into(), json!("wss://bot:pw@agents.example/ws?token=s3cret"));
        assert!(apply(c, &near.event("streaming.started", stream).with_agent("sales-bot")));
        let mut bridged = near.payload("answered");
        bridged.insert("bridged_call_control_id".into(), json!(far.ids.call_control_id));
        bridged.insert("bridged_call_leg_id".into(), json!(far.ids.call_leg_id));
        assert!(apply(c, &near.event("call.bridged", bridged)));

        let quality = json!({"inbound": {"packet_count": 500, "mos": "4.30"}});
        let samples = json!({"interval": "rtcp", "points": [{"t_ms": 2500, "jitter_ms": 0.4, "loss_percent": 0.0, "packets": 125}]});
        let h = Hangup { cause: HangupCause::NormalClearing, source: HangupSource::Caller, sip_code: 200 };
        let hangup = near.hangup(h, at(60), Some(quality.clone())).with_quality_samples(Some(samples.clone()));
        assert!(hangup.payload.get("quality_samples").is_none(), "the series is not in the webhook's payload");
        assert!(apply(c, &hangup));
        let h2 = Hangup { cause: HangupCause::Timeout, source: HangupSource::Callee, sip_code: 408 };
        let late = near.hangup(h2, at(61), None).with_quality_samples(Some(json!({"interval": "rtcp", "points": []})));
        assert!(!apply(c, &late), "the first hangup wins");
        let mut saved = near.payload("hangup");
        saved.insert("file_path".into(), json!("/rec/s.wav"));
        saved.insert("recording_id".into(), json!("rec-1"));
        saved.insert("channels".into(), json!("single"));
        assert!(apply(c, &near.event("call.recording.saved", saved)), "recordings are saved after hangup");
        let indexed = recordings::get(c, "rec-1").unwrap().expect("an index row");
        assert_eq!((indexed.saved.file_path.as_str(), indexed.saved.channels.as_str()), ("/rec/s.wav", "single"));
        assert_eq!(indexed.saved.call_leg_id, leg);
        assert_eq!(indexed.saved.trunk.as_deref(), Some("telnyx-ip"));
        assert!(RecordUpdate::of(&near.event("call.dtmf.received", near.payload("answered"))).is_none());

        let r = calls::get(c, &leg).unwrap().unwrap();
        assert_eq!(r.state, RecordState::Ended);
        assert_eq!(r.start.trunk.as_deref(), Some("telnyx-ip"));
        assert_eq!((r.start.from.as_str(), r.start.to.as_str()), ("+14155550123", "+13125550100"));
        assert_eq!(r.start.direction, Direction::Incoming);
        assert_eq!(r.start.start_time, at(0));
        assert_eq!(r.start.route.as_deref(), Some("sales line"));
        assert_eq!(r.start.agent.as_deref(), Some("sales-bot"));
        assert_eq!(r.start.custom_headers, Some(json!([{"name": "X-Shop", "value": "42"}])));
        assert_eq!(r.answer_time, Some(at(2)));
        let end = r.end.unwrap();
        assert_eq!(end.end_time, at(60));
        assert_eq!((end.hangup_cause.as_str(), end.hangup_source.as_str()), ("normal_clearing", "caller"));
        assert_eq!(end.sip_hangup_cause.as_deref(), Some("200"));
        assert_eq!(end.quality_stats, Some(quality));
        assert_eq!(r.quality_samples, Some(samples));
        assert_eq!(r.recording_paths, ["/rec/s.wav"]);
        assert_eq!(r.stream_url.as_deref(), Some("wss://agents.example/ws"), "no credentials or tokens");
        assert_eq!(r.bridged_call_leg_id.as_deref(), Some(far.ids.call_leg_id.as_str()));
        let f = calls::get(c, &far.ids.call_leg_id).unwrap().unwrap();
        assert_eq!(f.start.direction, Direction::Outgoing);
        assert_eq!(f.bridged_call_leg_id.as_deref(), Some(leg.as_str()), "both legs are linked");
        assert_eq!(f.bridged_call_control_id.as_deref(), Some(near.ids.call_control_id.as_str()));
        assert_eq!(f.state, RecordState::Initiated);

        // What a technician's sqlite3 shows: plain text columns.
        let raw: (String, String, String) = c
            .query_row(
                "SELECT start_time, hangup_cause, quality_stats FROM calls WHERE call_leg_id = ?1",
                [&leg],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .unwrap();
        assert_eq!(raw.0, "2027-01-15T08:00:00.000250Z");
        assert_eq!(raw.1, "normal_clearing");
        assert!(raw.2.contains("\"packet_count\":500"), "{}", raw.2);
    }

    #[test]
    fn events_of_unknown_legs_or_without_legs_change_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        let c = s.conn();
        let i = info(CallIds::new_session(), Direction::Incoming);
        assert!(!apply(c, &i.answered()), "no row for this leg");
        assert!(RecordUpdate::of(&CallEvent::new("call.initiated", None, Map::new())).is_none());
        let mut no_direction = i.initiated("parked");
        no_direction.payload.remove("direction");
        assert!(RecordUpdate::of(&no_direction).is_none(), "a start without direction is not a row");
        let n: i64 = c.query_row("SELECT count(*) FROM calls", [], |r| r.get(0)).unwrap();
        assert_eq!(n, 0);
    }
}
