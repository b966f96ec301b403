//! Local rooms in Telnyx's conference shapes (developers.telnyx.com, Call Control
//! → Conference commands): `POST /v2/conferences` (create from a call),
//! `GET /v2/conferences[/{id}]`, `GET /v2/conferences/{id}/participants`, and
//! `POST /v2/conferences/{id}/actions/{join,leave,mute,unmute,hold,unhold,play,end}`.
//! `{id}` is the `conference_id` or the room's name. Events (`conference.*`) come
//! from the room engine through `call::rooms`.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use serde_json::{Map, Value, json};

use super::ApiState;
use super::calls::{object, run, string};
use super::error::ApiError;
use crate::call::control::{Action, RoomJoin, RoomRef};
use crate::room::{ParticipantInfo, RoomInfo, RoomOptions};

fn conference_json(r: &RoomInfo) -> Value {
    json!({
        "record_type": "conference",
        "id": r.conference_id.to_string(),
        "name": r.name,
        "created_at": crate::call::rfc3339_micros(r.created_at),
        "status": "in_progress",
        "max_participants": r.options.max_participants,
        "participants": r.participants,
    })
}

/// A participant; `info` (the call's, for SIP legs) adds its `from` and `to`.
fn participant_json(r: &RoomInfo, p: &ParticipantInfo, info: Option<&crate::call::CallInfo>) -> Value {
    let call = p.participant_id.strip_suffix(":agent").unwrap_or(&p.participant_id);
    let mut v = json!({
        "record_type": "participant",
        "id": p.participant_id,
        "call_control_id": call,
        "participant_type": p.kind.as_str(),
        "conference": {"id": r.conference_id.to_string(), "name": r.name},
        "muted": p.muted,
        "on_hold": p.held,
        "status": "joined",
        "created_at": crate::call::rfc3339_micros(p.joined_at),
    });
    if let (Some(i), Some(o)) = (info, v.as_object_mut()) {
        o.insert("from".into(), json!(i.from));
        o.insert("to".into(), json!(i.to));
    }
    v
}

fn find(st: &ApiState, id: &str) -> Result<RoomInfo, ApiError> {
    st.control.services.rooms.find(id).ok_or_else(|| ApiError::not_found("conference", id))
}

/// `GET /v2/conferences` (optionally `filter[name]`).
pub async fn list(
    State(st): State<ApiState>,
    axum::extract::Query(q): axum::extract::Query<std::collections::HashMap<String, String>>,
) -> Json<Value> {
    let name = q.get("filter[name]");
    let mut rooms: Vec<RoomInfo> = st
        .control
        .services
        .rooms
        .list()
        .into_iter()
        .filter(|r| !r.name.starts_with(crate::call::rooms::BRIDGE_PREFIX))
        .filter(|r| name.is_none_or(|n| &r.name == n))
        .collect();
    rooms.sort_by_key(|r| r.created_at);
    let data: Vec<Value> = rooms.iter().map(conference_json).collect();
    Json(json!({"data": data, "meta": {"total_results": data.len()}}))
}

/// `GET /v2/conferences/{id}`.
pub async fn get(State(st): State<ApiState>, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    Ok(Json(json!({"data": conference_json(&find(&st, &id)?)})))
}

/// `GET /v2/conferences/{id}/participants`.
pub async fn participants(
    State(st): State<ApiState>,
    axum::Extension(access): axum::Extension<super::Access>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    super::webrtc::allow_room(&access, &st, &id)?;
    let room = find(&st, &id)?;
    let ps = st
        .control
        .services
        .rooms
        .participants(room.conference_id)
        .await
        .map_err(|_| ApiError::not_found("conference", &id))?;
    // A guest (join token) sees who is in the room, not their numbers.
    let guest = access != super::Access::Full;
    let info = |id: &str| match st.calls.get(id) {
        crate::call::control::Lookup::Live(view) if !guest => Some(view.info),
        _ => None,
    };
    let data: Vec<Value> = ps.iter().map(|p| participant_json(&room, p, info(&p.participant_id).as_ref())).collect();
    Ok(Json(json!({"data": data, "meta": {"total_results": data.len()}})))
}

fn max_participants(st: &ApiState, body: &Map<String, Value>) -> Result<RoomOptions, ApiError> {
    let mut options = st.config.borrow().rooms.options();
    match body.get("max_participants") {
        None | Some(Value::Null) => {}
        Some(Value::Number(n)) => match n.as_u64() {
            Some(m @ 2..=1000) => options.max_participants = m as usize,
            _ => return Err(ApiError::bad_field("/max_participants", "max_participants must be 2 to 1000")),
        },
        Some(_) => return Err(ApiError::bad_field("/max_participants", "max_participants must be a number")),
    }
    Ok(options)
}

fn flag(body: &Map<String, Value>, key: &str) -> Result<bool, ApiError> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(ApiError::bad_field(&format!("/{key}"), format!("{key} must be true or false"))),
    }
}

fn required(body: &Map<String, Value>, key: &str) -> Result<String, ApiError> {
    string(body, key)?.ok_or_else(|| ApiError::bad_field(&format!("/{key}"), format!("{key} is required")))
}

/// `POST /v2/conferences`: `call_control_id` (the call that creates and joins it),
/// `name`, optional `max_participants` (default 50). Joining an existing name
/// joins that room.
pub async fn create(State(st): State<ApiState>, body: Bytes) -> Result<Json<Value>, ApiError> {
    let body = object(&body)?;
    let call = required(&body, "call_control_id")?;
    let name = required(&body, "name")?;
    if name.is_empty() || name.len() > 256 || name.starts_with(crate::call::rooms::BRIDGE_PREFIX) {
        return Err(ApiError::bad_field("/name", "name must be 1 to 256 bytes and not start with \"bridge:\""));
    }
    let options = max_participants(&st, &body)?;
    let join = RoomJoin { room: RoomRef::Name(name.clone()), options, muted: false, held: false };
    run(&st, &call, Action::JoinRoom(join)).await?;
    let room = find(&st, &name)?;
    Ok(Json(json!({"data": conference_json(&room)})))
}

/// `call_control_ids` of a mute/hold body (all participants when absent or empty).
fn ids(body: &Map<String, Value>) -> Result<Vec<String>, ApiError> {
    match body.get("call_control_ids") {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| v.as_str().map(str::to_string))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| ApiError::bad_field("/call_control_ids", "call_control_ids must be strings")),
        Some(_) => Err(ApiError::bad_field("/call_control_ids", "call_control_ids must be an array")),
    }
}

/// `POST /v2/conferences/{id}/actions/{action}` → `{"data":{"result":"ok"}}`.
pub async fn action(
    State(st): State<ApiState>,
    Path((id, name)): Path<(String, String)>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let body = object(&body)?;
    let room = find(&st, &id)?;
    let rooms = &st.control.services.rooms;
    let gone = |_| ApiError::not_found("conference", &id);
    match name.as_str() {
        "join" => {
            let call = required(&body, "call_control_id")?;
            let join = RoomJoin {
                room: RoomRef::Id(room.conference_id),
                options: RoomOptions::default(),
                muted: flag(&body, "mute")?,
                held: flag(&body, "hold")?,
            };
            run(&st, &call, Action::JoinRoom(join)).await?;
        }
        "leave" => {
            let who = required(&body, "call_control_id")?;
            // A call leaves through its own task (it keeps its membership); an
            // agent that followed a call in (`{id}:agent`) is removed directly.
            if who.ends_with(":agent") {
                if rooms.leave(room.conference_id, std::slice::from_ref(&who)).await.map_err(gone)? == 0 {
                    return Err(ApiError::not_found("participant", &who));
                }
            } else {
                run(&st, &who, Action::LeaveRoom).await?;
            }
        }
        "mute" | "unmute" | "hold" | "unhold" => {
            let who = ids(&body)?;
            let matched = match name.as_str() {
                "mute" => rooms.mute(room.conference_id, &who).await,
                "unmute" => rooms.unmute(room.conference_id, &who).await,
                "hold" => rooms.hold(room.conference_id, &who).await,
                _ => rooms.unhold(room.conference_id, &who).await,
            }
            .map_err(gone)?;
            if matched == 0 && !who.is_empty() {
                return Err(ApiError::not_found("participant", &who.join(",")));
            }
        }
        "play" => {
            let url = required(&body, "audio_url")?;
            let policy = st.config.borrow().media.clone();
            let pcm = crate::call::playback::load(&url, &policy).await.map_err(|e| ApiError {
                status: axum::http::StatusCode::UNPROCESSABLE_ENTITY,
                code: "90045",
                title: "Media could not be played",
                detail: e,
                pointer: Some("/audio_url".into()),
            })?;
            crate::call::rooms::play(rooms, room.conference_id, pcm).await.map_err(|e| ApiError {
                status: axum::http::StatusCode::UNPROCESSABLE_ENTITY,
                code: "90020",
                title: "Conference action failed",
                detail: e,
                pointer: None,
            })?;
        }
        "speak" => {
            // Telnyx "Speak text to conference": the room hears it (no events).
            let speech = super::ivr::speech(&body, "payload")?
                .ok_or_else(|| ApiError::bad_field("/payload", "payload is required"))?;
            let pcm = super::ivr::synthesize(&st, &speech, &id).await?;
            crate::call::rooms::play(rooms, room.conference_id, pcm).await.map_err(|e| ApiError {
                status: axum::http::StatusCode::UNPROCESSABLE_ENTITY,
                code: "90020",
                title: "Conference action failed",
                detail: e,
                pointer: None,
            })?;
        }
        "end" => rooms.end(room.conference_id).await.map_err(gone)?,
        "record_start" => {
            match string(&body, "format")?.as_deref() {
                None | Some("wav") => {}
                Some(other) => {
                    return Err(ApiError::bad_field("/format", format!("{other:?} is not supported; use \"wav\"")));
                }
            }
            st.control.services.room_recordings.start(room.conference_id, &room.name).await.map_err(|e| ApiError {
                status: axum::http::StatusCode::UNPROCESSABLE_ENTITY,
                code: "90055",
                title: "Recording could not start",
                detail: e,
                pointer: None,
            })?;
        }
        "record_stop" => st.control.services.room_recordings.stop(room.conference_id).map_err(|e| ApiError {
            status: axum::http::StatusCode::UNPROCESSABLE_ENTITY,
            code: "90055",
            title: "Not recording",
            detail: e,
            pointer: None,
        })?,
        other => return Err(ApiError::not_found("conference action", other)),
    }
    Ok(Json(json!({"data": {"result": "ok"}})))
}

/// `GET /v2/conferences/{id}/listen` (WebSocket): the room's full mix as Telnyx
/// media frames (`connected`, `start` with `call_control_id` = `call_session_id`
/// = the `conference_id`, then `media` on track `inbound`, PCMU 20 ms, and `stop`
/// when the room ends). The listener is a room participant that only hears; a
/// slow client loses frames, never slows the room.
pub async fn listen(
    State(st): State<ApiState>,
    Path(id): Path<String>,
    ws: axum::extract::ws::WebSocketUpgrade,
) -> Result<axum::response::Response, ApiError> {
    let room = find(&st, &id)?;
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let who = format!("listen:{}", uuid::Uuid::new_v4());
    let participant = crate::room::Participant::listener(who, tx, crate::media::g711::G711::Pcmu);
    let handle = st
        .control
        .services
        .rooms
        .join_existing(room.conference_id, participant)
        .await
        .map_err(|_| ApiError::not_found("conference", &id))?;
    Ok(ws.on_upgrade(move |socket| listen_stream(socket, room, rx, handle)))
}

async fn listen_stream(
    mut socket: axum::extract::ws::WebSocket,
    room: RoomInfo,
    mut rx: tokio::sync::mpsc::Receiver<crate::media::pcm::Chunk>,
    handle: crate::room::ParticipantHandle,
) {
    use super::events::send;
    use crate::agent::protocol::{Outbound, StartInfo, Track};
    use axum::extract::ws::Message;
    let id = room.conference_id.to_string();
    let mut out = Outbound::new(uuid::Uuid::new_v4().to_string());
    let start = StartInfo {
        call_control_id: id.clone(),
        call_session_id: id.clone(),
        from: String::new(),
        to: room.name.clone(),
        client_state: None,
        custom_parameters: Map::new(),
        encoding: crate::config::Encoding::Pcmu,
        sample_rate: 8000,
    };
    if !send(&mut socket, out.connected()).await || !send(&mut socket, out.start(&start)).await {
        return;
    }
    let started = tokio::time::Instant::now();
    loop {
        tokio::select! {
            c = rx.recv() => match c {
                Some(chunk) => {
                    let ts = started.elapsed().as_millis() as u64;
                    if !send(&mut socket, out.media(Track::Inbound, ts, chunk.audio())).await {
                        break;
                    }
                }
                None => {
                    let _ = send(&mut socket, out.stop(&id, &id)).await;
                    let _ = socket.send(Message::Close(None)).await;
                    break;
                }
            },
            msg = socket.recv() => match msg {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => {}
            },
        }
    }
    drop(handle);
}
