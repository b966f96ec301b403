//! WebRTC signaling on the control API (issue 12), WHIP-shaped (RFC 9725 §4.2):
//! the browser POSTs its SDP offer (`Content-Type: application/sdp`) and gets
//! `201 Created` with the SDP answer and `Location: /v2/webrtc/{session_id}`;
//! `DELETE` on that resource leaves.
//!
//! - `POST /v2/conferences/{id}/webrtc`: join a room (id or name; a name that is
//!   no room yet creates it).
//! - `POST /v2/calls/{call_control_id}/webrtc?mode=listen|talk`: listen to one
//!   call (default) or barge in (`talk`: both parties hear the browser).
//! - `DELETE /v2/webrtc/{session_id}?secret=…`: leave (`204`). The `Location` of
//!   the join carries the session's own secret, so a page (or WHIP client) that
//!   DELETEs its `Location` leaves; the API token may end any session. A join
//!   token alone ends none: one guest cannot remove another.
//! - `POST /v2/conferences/{id}/join_tokens` (`{"ttl_secs": n}` optional): a
//!   token that lets a page join that room without the API token, and the page's
//!   address `/rooms/{name}#token=…`. Joins with it are capped per room
//!   (`[webrtc] max_participants_per_room`), and tokens are keyed from the API
//!   token in force: changing `[api] token` (and reloading) revokes them all.
//! - `GET /rooms/{name}`: the page (plain HTML/JS shipped in the binary).

use std::time::SystemTime;

use axum::Extension;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::error::ApiError;
use super::{Access, ApiState};
use crate::webrtc::{Joined, Target, WebRtcError};

/// The room page, served at `/rooms/{name}`.
const ROOM_PAGE: &str = include_str!("../../assets/room.html");

/// Longest join token lifetime a request may ask for (7 days).
const MAX_TOKEN_TTL_SECS: u64 = 7 * 86_400;

fn error(e: WebRtcError) -> ApiError {
    let (status, code, title, pointer) = match &e {
        WebRtcError::BadSdp(_) => (StatusCode::BAD_REQUEST, "10015", "Bad SDP offer", Some("/sdp".to_string())),
        WebRtcError::Disabled => (StatusCode::FORBIDDEN, "90060", "WebRTC disabled", None),
        WebRtcError::Full(_) | WebRtcError::RoomFull(_) => {
            (StatusCode::SERVICE_UNAVAILABLE, "90061", "WebRTC participant limit reached", None)
        }
        WebRtcError::NotFound(_) => (StatusCode::NOT_FOUND, "10005", "Resource not found", None),
        WebRtcError::Refused(_) => (StatusCode::CONFLICT, "90062", "Participant refused", None),
        WebRtcError::Stack(_) => (StatusCode::INTERNAL_SERVER_ERROR, "10007", "WebRTC failure", None),
    };
    ApiError { status, code, title, detail: e.to_string(), pointer }
}

fn offer(headers: &HeaderMap, body: &Bytes) -> Result<String, ApiError> {
    let ct = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    if !ct.trim().to_ascii_lowercase().starts_with("application/sdp") {
        return Err(ApiError {
            status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
            code: "10015",
            title: "Unsupported media type",
            detail: format!("send the SDP offer as Content-Type: application/sdp (got {ct:?})"),
            pointer: None,
        });
    }
    String::from_utf8(body.to_vec()).map_err(|_| error(WebRtcError::BadSdp("the offer is not UTF-8 text".into())))
}

fn created(j: Joined) -> Response {
    let mut r = (StatusCode::CREATED, j.answer).into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/sdp"));
    if let Ok(v) = HeaderValue::from_str(&format!("/v2/webrtc/{}?secret={}", j.session_id, j.secret)) {
        h.insert(header::LOCATION, v);
    }
    if let Ok(v) = HeaderValue::from_str(&j.participant_id) {
        h.insert("x-participant-id", v);
    }
    if let Ok(v) = HeaderValue::from_str(&j.conference_id.to_string()) {
        h.insert("x-conference-id", v);
    }
    r
}

/// The room name `id_or_name` refers to: an existing room's name, or the
/// name itself (a room created on first join).
fn room_name(st: &ApiState, id_or_name: &str) -> String {
    st.control.services.rooms.find(id_or_name).map_or_else(|| id_or_name.to_string(), |r| r.name)
}

/// A join token reaches only its own room.
pub fn allow_room(access: &Access, st: &ApiState, id_or_name: &str) -> Result<(), ApiError> {
    match access {
        Access::Full => Ok(()),
        Access::Room(room) if *room == room_name(st, id_or_name) => Ok(()),
        Access::Room(_) => Err(ApiError::unauthorized()),
    }
}

/// `POST /v2/conferences/{id}/webrtc`: SDP offer in, `201` SDP answer out.
pub async fn join_conference(
    State(st): State<ApiState>,
    Extension(access): Extension<Access>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    allow_room(&access, &st, &id)?;
    let offer = offer(&headers, &body)?;
    if st.control.services.rooms.find(&id).is_none() && uuid::Uuid::parse_str(&id).is_err() {
        check_name(&id).map_err(|e| ApiError::bad_parameter("conference_id", e))?;
    }
    let cap = match &access {
        Access::Full => None,
        Access::Room(room) => Some(crate::webrtc::RoomCap {
            room: room.clone(),
            max: st.config.borrow().webrtc.max_participants_per_room,
        }),
    };
    let joined = st.webrtc.join(&offer, Target::Room(id), cap).await.map_err(error)?;
    Ok(created(joined))
}

/// `POST /v2/calls/{id}/webrtc?mode=listen|talk`.
pub async fn join_call(
    State(st): State<ApiState>,
    Path(id): Path<String>,
    Query(q): Query<std::collections::HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let talk = match q.get("mode").map(String::as_str) {
        None | Some("listen") => false,
        Some("talk") => true,
        Some(other) => {
            return Err(ApiError::bad_parameter(
                "mode",
                format!("{other:?} is not a mode; use \"listen\" or \"talk\""),
            ));
        }
    };
    let offer = offer(&headers, &body)?;
    let joined = st.webrtc.join(&offer, Target::Call { call_control_id: id, talk }, None).await.map_err(error)?;
    Ok(created(joined))
}

/// `DELETE /v2/webrtc/{session_id}[?secret=…]` → `204`. Served outside the
/// bearer-token layer: the API token (`Authorization: Bearer`) ends any session,
/// the session's secret (from its `Location`) ends that one; anything else is
/// `404` for a known session (nothing is learnt about it) and `401` without any
/// credential.
pub async fn leave(
    State(st): State<ApiState>,
    Path(id): Path<String>,
    Query(q): Query<std::collections::HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    let full = super::is_api_token(&st, &headers);
    let secret = q.get("secret").filter(|s| !s.is_empty());
    if !full && secret.is_none() {
        return Err(ApiError::unauthorized());
    }
    let missing = || ApiError::not_found("webrtc session", &id);
    let session_id = uuid::Uuid::parse_str(&id).map_err(|_| missing())?;
    let allowed = full || secret.is_some_and(|s| st.webrtc.secret_matches(session_id, s));
    if !allowed {
        return Err(missing());
    }
    if st.webrtc.leave(session_id) { Ok(StatusCode::NO_CONTENT) } else { Err(missing()) }
}

/// `POST /v2/conferences/{id}/join_tokens` → `201 {"data":{"token","expires_at","room_url",…}}`.
pub async fn join_token(
    State(st): State<ApiState>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<(StatusCode, axum::Json<Value>), ApiError> {
    let body =
        if body.iter().all(u8::is_ascii_whitespace) { serde_json::Map::new() } else { super::calls::object(&body)? };
    let ttl = match body.get("ttl_secs") {
        None | Some(Value::Null) => st.webrtc.default_token_ttl(),
        Some(v) => match v.as_u64() {
            Some(n) if (1..=MAX_TOKEN_TTL_SECS).contains(&n) => std::time::Duration::from_secs(n),
            _ => {
                return Err(ApiError::bad_field(
                    "/ttl_secs",
                    format!("ttl_secs must be 1–{MAX_TOKEN_TTL_SECS} seconds"),
                ));
            }
        },
    };
    let room = match st.control.services.rooms.find(&id) {
        Some(r) => r.name,
        None if uuid::Uuid::parse_str(&id).is_ok() => return Err(ApiError::not_found("conference", &id)),
        None => id,
    };
    check_name(&room).map_err(|e| ApiError::bad_parameter("conference_id", e))?;
    let (token, expires) = super::join_tokens(&st).mint(&room, ttl, SystemTime::now());
    let url = format!("/rooms/{}#token={token}", percent(&room));
    Ok((
        StatusCode::CREATED,
        axum::Json(json!({"data": {
            "record_type": "join_token",
            "token": token,
            "conference_name": room,
            "expires_at": crate::call::rfc3339_micros(expires),
            "room_url": url,
        }})),
    ))
}

/// `GET /rooms/{name}`: the room page. The name is read by the page from its
/// own address; nothing in the page is secret.
pub async fn page(Path(name): Path<String>) -> Response {
    if check_name(&name).is_err() && uuid::Uuid::parse_str(&name).is_err() {
        return ApiError::not_found("room", &name).into_response();
    }
    super::console::html_page(
        ROOM_PAGE,
        "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self' ws: wss:; \
         media-src blob: 'self'; img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    )
}

/// A room name a browser may create or be given a token for: 1–128 bytes, no
/// control characters or `/`, none of the box's private prefixes (bridges,
/// call monitors, players).
fn check_name(name: &str) -> Result<(), String> {
    use crate::call::rooms::{BRIDGE_PREFIX, MONITOR_PREFIX, PLAYER_PREFIX};
    if name.is_empty() || name.len() > 128 {
        return Err("a room name is 1–128 bytes".into());
    }
    if name.chars().any(|c| c.is_control() || c == '/') {
        return Err("a room name has no control characters or '/'".into());
    }
    if [BRIDGE_PREFIX, MONITOR_PREFIX, PLAYER_PREFIX].iter().any(|p| name.starts_with(p)) {
        return Err(format!("{name:?} is a private room of the box"));
    }
    Ok(())
}

/// Percent-encodes a path segment (RFC 3986 §3.3: unreserved characters stay).
fn percent(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn room_names_in_urls() {
        assert_eq!(super::percent("support"), "support");
        assert_eq!(super::percent("call-+1415 5"), "call-%2B1415%205");
    }
}
