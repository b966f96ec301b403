//! `GET /v2/call_records`: the call records of the SQLite `calls` table
//! (`store::calls`, one row per leg), newest first, with Telnyx's field names
//! (webhook payloads, PROTOCOLS.md §2) and Telnyx's pagination (`page[number]`,
//! `page[size]`, `meta`).
//!
//! Parameters: `from` / `to` (RFC 3339 instants: legs that *started* in that
//! window, both ends inclusive), `trunk` (alias `connection_id`),
//! `call_session_id`, `call_leg_id`, `call_control_id`, `direction`
//! (`incoming`/`outgoing`), `state` (`initiated`/`answered`/`ended`),
//! `hangup_cause`. A bad value or an unknown parameter is a 400 naming it
//! (`source.parameter`).
//!
//! Beyond Telnyx's fields, each record has `quality_samples`: the leg's jitter
//! and loss over time (`call::quality_series`), `null` until the leg ended with
//! media:
//!
//! ```json
//! {"interval": "rtcp",
//!  "points": [{"t_ms": 2500, "jitter_ms": 1.2, "loss_percent": 0.0, "packets": 125}, ...]}
//! ```
//!
//! One point per RTCP report of the leg (about every 5 s, the first 2.5 s after
//! its media started) and one when its media stopped; `t_ms` = end of the
//! point's interval in ms since the media started, `jitter_ms` = interarrival
//! jitter (RFC 3550) at that moment, `loss_percent` and `packets` = loss and
//! packets received *in the interval*, all for what the box received from the
//! leg's peer. A long call's points are merged pairwise so at most 240 remain
//! (a merged point: the worse jitter, the loss of both).

use axum::Json;
use axum::extract::{RawQuery, State};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::ApiState;
use super::error::ApiError;
use super::query::Params;
use super::recordings::read;
use crate::call::Direction;
use crate::store::calls::{self, CallFilter, CallRecord, RecordState};
use crate::store::{recordings, timestamp};

/// One leg's record in the API's shape (`record_type: "call_record"`):
/// ids, `connection_id` (trunk), `from`, `to`, `direction`, `state`,
/// `start_time`, `answer_time`, `end_time`, `duration_secs` (start to end, also for
/// unanswered legs), `billable_secs` (answer to end), `hangup_cause`,
/// `hangup_source`, `sip_hangup_cause`, `call_quality_stats`, `route`, `agent`,
/// `stream_url`, `bridged_call_leg_id` / `bridged_call_control_id`,
/// `custom_headers`, `recording_ids`, `recording_paths` and `quality_samples`
/// (module docs).
pub fn record_json(r: &CallRecord, recording_ids: &[String]) -> Value {
    let s = &r.start;
    let end = r.end.as_ref();
    let secs = |from: Option<std::time::SystemTime>| {
        let (from, to) = (from?, end?.end_time);
        Some(to.duration_since(from).map_or(0, |d| d.as_secs()))
    };
    json!({
        "record_type": "call_record",
        "call_leg_id": s.call_leg_id,
        "call_control_id": s.call_control_id,
        "call_session_id": s.call_session_id,
        "connection_id": s.trunk,
        "from": s.from,
        "to": s.to,
        "direction": s.direction.as_str(),
        "state": r.state.as_str(),
        "start_time": timestamp(s.start_time),
        "answer_time": r.answer_time.map(timestamp),
        "end_time": end.map(|e| timestamp(e.end_time)),
        "duration_secs": secs(Some(s.start_time)),
        "billable_secs": secs(r.answer_time),
        "hangup_cause": end.map(|e| e.hangup_cause.as_str()),
        "hangup_source": end.map(|e| e.hangup_source.as_str()),
        "sip_hangup_cause": end.and_then(|e| e.sip_hangup_cause.as_deref()),
        "call_quality_stats": end.and_then(|e| e.quality_stats.clone()),
        "route": s.route,
        "agent": s.agent,
        "stream_url": r.stream_url,
        "bridged_call_leg_id": r.bridged_call_leg_id,
        "bridged_call_control_id": r.bridged_call_control_id,
        "custom_headers": s.custom_headers,
        "recording_ids": recording_ids,
        "recording_paths": r.recording_paths,
        "quality_samples": r.quality_samples,
    })
}

/// `GET /v2/call_records`.
pub async fn list(State(st): State<ApiState>, RawQuery(q): RawQuery) -> Response {
    match list_inner(&st, q.as_deref()).await {
        Ok(v) => Json(v).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn list_inner(st: &ApiState, q: Option<&str>) -> Result<Value, ApiError> {
    let mut p = Params::parse(q);
    let trunk = p.text("trunk");
    let connection_id = p.text("connection_id");
    let filter = CallFilter {
        start_time_gte: p.instant("from")?,
        start_time_lte: p.instant("to")?,
        trunk: trunk.or(connection_id),
        call_session_id: p.text("call_session_id"),
        call_leg_id: p.text("call_leg_id"),
        call_control_id: p.text("call_control_id"),
        direction: p.choice("direction", &[("incoming", Direction::Incoming), ("outgoing", Direction::Outgoing)])?,
        state: p.choice(
            "state",
            &[
                ("initiated", RecordState::Initiated),
                ("answered", RecordState::Answered),
                ("ended", RecordState::Ended),
            ],
        )?,
        hangup_cause: p.text("hangup_cause"),
    };
    if let (Some(from), Some(to)) = (filter.start_time_gte, filter.start_time_lte) {
        if to < from {
            return Err(ApiError::bad_parameter("to", "is before from: the window is empty"));
        }
    }
    let page = p.page()?;
    p.finish(
        "from, to, trunk (or connection_id), call_session_id, call_leg_id, call_control_id, direction, state, \
         hangup_cause, page[number], page[size]",
    )?;
    let (rows, total, links) = read(st, move |c| {
        let (rows, total) = calls::list(c, &filter, page)?;
        let legs: Vec<&str> = rows.iter().map(|r| r.start.call_leg_id.as_str()).collect();
        let links = recordings::ids_of_legs(c, &legs)?;
        Ok((rows, total, links))
    })
    .await?;
    let data: Vec<Value> = rows
        .iter()
        .map(|r| {
            let ids: Vec<String> =
                links.iter().filter(|(leg, _)| *leg == r.start.call_leg_id).map(|(_, id)| id.clone()).collect();
            record_json(r, &ids)
        })
        .collect();
    Ok(json!({"data": data, "meta": page.meta(total)}))
}
