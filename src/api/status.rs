//! What the console (and a technician's `curl`) asks about the box as a whole:
//!
//! - `GET /v2/status` → `{"data": {"node", "version", "started_at", "uptime_seconds",
//!   "memory": {"resident_bytes"}, "disk": {"recording_dir", "free_bytes", "low"},
//!   "calls": {"active", "last_hour": {"ended", "failed"}}, "webhooks": {"pending",
//!   "dead", "oldest_pending_at", "oldest_dead_at"}, "uploads": {"enabled", "pending",
//!   "failing", "done", "oldest_pending_at", "last_error"}}}`. A failed call is a leg
//!   that ended without being answered; `disk.low` is free space under
//!   `record::retention::LOW_DISK_BYTES` (256 MiB).
//! - `GET /v2/trunks` → `{"data": [{"name", "provider", "proxy", "register",
//!   "registration": {"state": "registering"|"registered"|"failed"|"not_registering",
//!   "expires_seconds", "last_error"}, "numbers", "inbound_allow",
//!   "last_invite_at", "last_options": null | {"at", "source"}, "seen_since_start":
//!   {"options", "invites"}}]}` in config order (`last_invite_at`: the last INVITE
//!   the trunk sent, or the start of its last incoming call in the call records
//!   when later — they survive a restart; `last_options`: the trunk's last OPTIONS
//!   keepalive since the daemon started). Passwords never appear.
//! - `GET /v2/routes` → `{"data": [{"index", "name", "trunk", "to", "from",
//!   "target": {"type": "agent"|"room"|"room_per_caller"|"forward"|"park"|"answer_url",
//!   "name"}, "record", "ring_for_ms", "pin_set"}]}` in config order (first match
//!   wins); the PIN itself is not shown.
//! - `POST /v2/routes/{index}/test`, body `{"to"?, "from"?, "talk_secs"?: 1–30,
//!   "ring_secs"?: 1–60}`
//!   (all optional) → `{"data": report}`: the box calls route `index` through its
//!   own SIP listener, talks `talk_secs` (default 5) and hangs up; the report
//!   (result, SIP response, setup and talk time, what RTP came back, the events
//!   of both legs) is `sip::route_test::run`'s. Answers when the test call has
//!   ended (at most ring + talk + 15 s). At most `sip::route_test::AT_ONCE` run at once (429).
//! - `POST /v2/webhooks/retry_dead` → `{"data": {"requeued": n}}`: every
//!   dead-lettered webhook event is pending again (as `sipbridge webhooks
//!   retry-dead`).

use std::sync::LazyLock;
use std::time::{Duration, SystemTime};

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::ApiState;
use super::error::ApiError;
use super::recordings::read;
use crate::sip::register::RegState;
use crate::store::timestamp;

/// When this process started serving (the first use of the API module).
pub static STARTED: LazyLock<SystemTime> = LazyLock::new(SystemTime::now);

/// Free bytes for recordings (the recordings dir, or the data dir before it exists).
pub fn recording_free_bytes(st: &ApiState) -> Option<u64> {
    let cfg = st.config.borrow().clone();
    let free = |p: &std::path::Path| {
        let s = nix::sys::statvfs::statvfs(p).ok()?;
        Some(s.blocks_available() as u64 * s.fragment_size() as u64)
    };
    free(&cfg.recording.dir).or_else(|| free(&cfg.node.data_dir))
}

/// `GET /v2/status`.
pub async fn status(State(st): State<ApiState>) -> Response {
    let hour_ago = timestamp(SystemTime::now() - Duration::from_secs(3600));
    let r = read(&st, move |c| {
        let (ended, failed): (u64, u64) = c.query_row(
            "SELECT count(*), coalesce(sum(answer_time IS NULL), 0) FROM calls WHERE end_time >= ?1",
            [&hour_ago],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        let outbox = crate::store::outbox::status(c)?;
        let uploads = crate::store::uploads::status(c)?;
        Ok((ended, failed, outbox, uploads))
    })
    .await;
    let (ended, failed, outbox, uploads) = match r {
        Ok(v) => v,
        Err(e) => return e.into_response(),
    };
    let cfg = st.config.borrow().clone();
    let free = recording_free_bytes(&st);
    let started = *STARTED;
    let at = |t: Option<SystemTime>| t.map(timestamp);
    Json(json!({"data": {
        "node": cfg.node.name,
        "version": env!("CARGO_PKG_VERSION"),
        "started_at": timestamp(started),
        "uptime_seconds": SystemTime::now().duration_since(started).unwrap_or_default().as_secs(),
        "memory": {"resident_bytes": super::ops::resident_bytes()},
        "disk": {"recording_dir": cfg.recording.dir, "free_bytes": free, "low": super::ops::disk_low(free)},
        "calls": {"active": st.calls.len(), "last_hour": {"ended": ended, "failed": failed}},
        "webhooks": {
            "pending": outbox.pending,
            "dead": outbox.dead,
            "oldest_pending_at": at(outbox.oldest_pending.and_then(|e| e.queued_at)),
            "oldest_dead_at": at(outbox.oldest_dead.and_then(|e| e.dead_at)),
        },
        "uploads": {
            "enabled": cfg.recording_upload.is_some(),
            "pending": uploads.pending,
            "failing": uploads.failing,
            "done": uploads.done,
            "oldest_pending_at": at(uploads.oldest_pending),
            "last_error": uploads.last_error,
        },
    }}))
    .into_response()
}

/// `GET /v2/trunks`.
pub async fn trunks(State(st): State<ApiState>) -> Response {
    let last = read(&st, |c| {
        c.prepare("SELECT trunk, max(start_time) FROM calls WHERE direction = 'incoming' AND trunk IS NOT NULL GROUP BY trunk")?
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?
            .collect::<rusqlite::Result<std::collections::HashMap<_, _>>>()
    })
    .await;
    let last = match last {
        Ok(v) => v,
        Err(e) => return e.into_response(),
    };
    let cfg = st.config.borrow().clone();
    let regs = st.registrations.borrow().clone();
    let data: Vec<Value> = cfg
        .trunks
        .iter()
        .map(|t| {
            let seen = st.trunk_activity.get(&t.name);
            let registration = match regs.get(&t.name) {
                Some(RegState::Registering) => json!({"state": "registering"}),
                Some(RegState::Registered { expires }) => json!({"state": "registered", "expires_seconds": expires}),
                Some(RegState::Failed { reason }) => json!({"state": "failed", "last_error": reason}),
                None => json!({"state": "not_registering"}),
            };
            json!({
                "name": t.name,
                "provider": t.provider,
                "proxy": t.proxy,
                "register": t.register,
                "registration": registration,
                "numbers": t.numbers,
                "inbound_allow": t.inbound_allow.iter().map(|n| n.to_string()).collect::<Vec<_>>(),
                "last_invite_at": std::cmp::max(last.get(&t.name).cloned(), seen.last_invite.map(|(at, _)| timestamp(at))),
                "last_options": seen.last_options.map(|(at, ip)| json!({"at": timestamp(at), "source": ip.to_string()})),
                "seen_since_start": {"options": seen.options, "invites": seen.invites},
            })
        })
        .collect();
    Json(json!({ "data": data })).into_response()
}

/// `GET /v2/routes`.
pub async fn routes(State(st): State<ApiState>) -> Response {
    let cfg = st.config.borrow().clone();
    let data: Vec<Value> = cfg
        .routes
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let pattern = |p: &Option<crate::config::values::NumberPattern>| {
                p.as_ref().and_then(|p| serde_json::to_value(p).ok())
            };
            json!({
                "index": i,
                "name": r.name,
                "trunk": r.trunk,
                "to": pattern(&r.to),
                "from": pattern(&r.from),
                "target": r.target.to_json(),
                "record": r.record,
                "ring_for_ms": r.ring_for.as_millis() as u64,
                "noise_suppression": r.noise_suppression.map(|s| s.direction()),
                "pin_set": r.pin.is_some(),
            })
        })
        .collect();
    Json(json!({ "data": data })).into_response()
}

/// `POST /v2/routes/{index}/test`.
pub async fn test_route(
    State(st): State<ApiState>,
    axum::extract::Path(index): axum::extract::Path<String>,
    body: axum::body::Bytes,
) -> Response {
    let Ok(index) = index.parse::<usize>() else {
        return ApiError::bad_parameter("index", format!("{index:?} is not a route index (0, 1, ...)")).into_response();
    };
    let request = match route_test_request(index, &body) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    match st.control.test_route(request).await {
        Ok(report) => Json(json!({ "data": report })).into_response(),
        Err(e) => ApiError::from_action(e).into_response(),
    }
}

/// An optional whole number of seconds, 1 to `max`; 400 naming the field otherwise.
fn seconds(body: &serde_json::Map<String, Value>, key: &str, max: u64) -> Result<Option<Duration>, ApiError> {
    let bad = || ApiError::bad_field(&format!("/{key}"), format!("{key} must be a number of seconds, 1 to {max}"));
    match body.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => match n.as_u64() {
            Some(s) if (1..=max).contains(&s) => Ok(Some(Duration::from_secs(s))),
            _ => Err(bad()),
        },
        Some(_) => Err(bad()),
    }
}

fn route_test_request(index: usize, body: &[u8]) -> Result<crate::call::services::RouteTestRequest, ApiError> {
    use super::calls::{object, string};
    let body = object(body)?;
    let number = |key: &str| -> Result<Option<String>, ApiError> {
        match string(&body, key)? {
            Some(v) if !crate::sip::dialstring::is_user(&v) => {
                Err(ApiError::bad_field(&format!("/{key}"), format!("{key} must be a number or SIP user, not {v:?}")))
            }
            v => Ok(v),
        }
    };
    let talk = seconds(&body, "talk_secs", 30)?;
    let ring = seconds(&body, "ring_secs", 60)?;
    Ok(crate::call::services::RouteTestRequest { index, to: number("to")?, from: number("from")?, talk, ring })
}

/// `POST /v2/webhooks/retry_dead`.
pub async fn retry_dead(State(st): State<ApiState>) -> Response {
    let now = SystemTime::now();
    match st.store.run(move |c| crate::store::outbox::requeue_dead(c, now)).await {
        Ok(n) => {
            tracing::info!(events = n, "dead-lettered webhook events requeued over the API");
            Json(json!({"data": {"requeued": n}})).into_response()
        }
        Err(e) => ApiError::internal(format!("The dead-lettered events could not be requeued: {e}")).into_response(),
    }
}
