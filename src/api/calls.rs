//! `/v2/calls`: live calls and Telnyx Call Control actions (PROTOCOLS.md §4;
//! Telnyx "Call Commands" API reference). Bodies are validated field by field so a
//! 400 names the field (`source.pointer`).

use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use serde_json::{Map, Value, json};

use super::ApiState;
pub use super::body::{object, string};
use super::error::ApiError;
use crate::agent::stream::StreamSpec;
use crate::call::control::{Action, Lookup};
use crate::call::playback::Loops;
use crate::config::{Encoding, StreamProtocol, StreamTrack};

/// `GET /v2/calls`: the live calls, oldest first.
pub async fn list(State(st): State<ApiState>) -> Json<Value> {
    let calls: Vec<Value> = st.calls.list().iter().map(|c| c.to_json(true)).collect();
    let n = calls.len();
    Json(json!({"data": calls, "meta": {"total_results": n}}))
}

/// `GET /v2/calls/{call_control_id}`: the call; an ended one answers
/// `is_alive: false` (Telnyx "Retrieve a call status").
pub async fn get(State(st): State<ApiState>, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    match st.calls.get(&id) {
        Lookup::Live(c) => Ok(Json(json!({"data": c.to_json(true)}))),
        Lookup::Ended => Ok(Json(json!({"data": {"record_type": "call", "call_control_id": id, "is_alive": false}}))),
        Lookup::Unknown => Err(ApiError::not_found("call", &id)),
    }
}

/// `POST /v2/calls` (Telnyx "Dial"): `connection_id` (the trunk's name), `to`,
/// `from`, optional `timeout_secs` (ring limit, default 30), `client_state`,
/// `stream_url` with `stream_track`/`stream_bidirectional_mode`/
/// `stream_bidirectional_codec`/`stream_bidirectional_sampling_rate`/
/// `stream_auth_token`, or `agent` (a configured `[[agent]]`, sipbridge's own
/// field), `record: "record-from-answer"`, `answering_machine_detection` with
/// `answering_machine_detection_config` (see [`answering_machine_detection`]).
/// Answers at once with the call's ids;
/// the outcome follows as events (`call.initiated`, `call.answered`/`call.hangup`).
pub async fn dial(State(st): State<ApiState>, body: Bytes) -> Result<Json<Value>, ApiError> {
    let body = object(&body)?;
    let required = |key: &str| -> Result<String, ApiError> {
        string(&body, key)?
            .filter(|s| !s.trim().is_empty())
            .ok_or_else(|| ApiError::bad_field(&format!("/{key}"), format!("{key} is required")))
    };
    let trunk = required("connection_id")?;
    let to = required("to")?;
    let from = required("from")?;
    check_numbers(&to, &from)?;
    let timeout = timeout_secs(&body)?;
    let record = match string(&body, "record")?.as_deref() {
        None => false,
        Some("record-from-answer") => true,
        Some(other) => {
            return Err(ApiError::bad_field(
                "/record",
                format!("{other:?} is not supported; use \"record-from-answer\""),
            ));
        }
    };
    let record_format = match string(&body, "record_format")?.as_deref() {
        None => None,
        Some("wav") => Some(crate::config::RecordingFormat::Wav),
        Some("mp3") => Some(crate::config::RecordingFormat::Mp3),
        Some(other) => return Err(ApiError::bad_field("/record_format", format!("{other:?} is not wav or mp3"))),
    };
    let webhook_url = webhook_url(&st.config.borrow(), &body)?;
    let stream = match (string(&body, "stream_url")?, string(&body, "agent")?) {
        (Some(_), Some(_)) => return Err(ApiError::bad_field("/agent", "give stream_url or agent, not both")),
        (Some(_), None) => match streaming_start(&body)? {
            Action::StreamingStart(spec) => Some(*spec),
            _ => None,
        },
        (None, Some(name)) => {
            let cfg = st.config.borrow().clone();
            let agent = cfg
                .agent(&name)
                .ok_or_else(|| ApiError::bad_field("/agent", format!("no [[agent]] named {name:?}")))?;
            Some(StreamSpec::from_agent(agent).ok_or_else(|| {
                ApiError::bad_field("/agent", "builtin:echo cannot be dialled out; use a WebSocket agent")
            })?)
        }
        (None, None) => None,
    };
    let req = crate::call::services::DialRequest {
        trunk,
        from,
        to,
        timeout: Duration::from_secs(timeout),
        client_state: string(&body, "client_state")?,
        stream,
        record,
        record_format,
        webhook_url,
        bridge_with: None,
        answering_machine_detection: answering_machine_detection(&body)?,
    };
    let view = st.control.dial(req).await.map_err(ApiError::from_action)?;
    Ok(Json(json!({"data": view.to_json(true)})))
}

/// Telnyx actions sipbridge does not perform yet: answered 501 rather than 404 so a
/// backend sees the difference between a typo and a missing feature.
const NOT_YET: &[&str] = &["fork_start", "fork_stop", "transcription_start", "transcription_stop"];

/// `POST /v2/calls/{call_control_id}/actions/{action}` → `{"data":{"result":"ok"}}`.
pub async fn action(
    State(st): State<ApiState>,
    Path((id, name)): Path<(String, String)>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let body = object(&body)?;
    // Telnyx `command_id`: a repeated command is ignored (answered ok, not run).
    if let Some(command_id) = string(&body, "command_id")? {
        if st.calls.repeated_command(&id, &command_id) {
            return Ok(Json(json!({"data": {"result": "ok"}})));
        }
    }
    let action = match name.as_str() {
        "hangup" => Action::Hangup,
        "answer" => {
            let stream = match string(&body, "stream_url")? {
                Some(_) => match streaming_start(&body)? {
                    Action::StreamingStart(spec) => Some(spec),
                    _ => None,
                },
                None => None,
            };
            Action::Answer { stream }
        }
        "reject" => {
            let sip_code = match string(&body, "cause")?.as_deref() {
                None | Some("CALL_REJECTED") => 603,
                Some("USER_BUSY") => 486,
                Some(other) => {
                    return Err(ApiError::bad_field("/cause", format!("{other:?} is not CALL_REJECTED or USER_BUSY")));
                }
            };
            Action::Reject { sip_code }
        }
        "send_dtmf" => send_dtmf(&body)?,
        "mute" => Action::Mute(true),
        "unmute" => Action::Mute(false),
        "suppression_start" => suppression_start(&body)?,
        "suppression_stop" => Action::Suppress(crate::media::suppress::Suppression::OFF),
        "client_state_update" => {
            let state = string(&body, "client_state")?
                .ok_or_else(|| ApiError::bad_field("/client_state", "client_state is required"))?;
            Action::ClientState(Some(state))
        }
        "streaming_start" => streaming_start(&body)?,
        "streaming_stop" => Action::StreamingStop,
        "playback_start" => {
            // Loaded here, in the request's task: the call's loop never waits on a
            // file or a download (a BYE meanwhile ends the call at once).
            view(&st, &id)?;
            let (url, loops, overlay) = playback_start(&body)?;
            let policy = st.config.borrow().media.clone();
            let pcm = crate::call::playback::load(&url, &policy).await.map_err(|e| ApiError {
                status: axum::http::StatusCode::UNPROCESSABLE_ENTITY,
                code: "90045",
                title: "Media could not be played",
                detail: e,
                pointer: Some("/audio_url".into()),
            })?;
            Action::PlaybackStart { url, pcm: std::sync::Arc::new(pcm), loops, overlay }
        }
        "playback_stop" => Action::PlaybackStop,
        "record_start" => Action::RecordStart(super::recordings::record_start_options(&body)?),
        "record_stop" => Action::RecordStop,
        "record_pause" => Action::RecordPause,
        "record_resume" => Action::RecordResume,
        "speak" => super::ivr::speak(&st, &id, &body).await?,
        "gather" | "gather_using_audio" | "gather_using_speak" => {
            view(&st, &id)?;
            super::ivr::gather(&st, &name, &body).await?
        }
        "gather_stop" => Action::GatherStop,
        "refer" => refer(&body)?,
        "bridge" => {
            if let Some(state) = string(&body, "client_state")? {
                run(&st, &id, Action::ClientState(Some(state))).await?;
            }
            bridge(&st, &id, &body).await?;
            return Ok(Json(json!({"data": {"result": "ok"}})));
        }
        "transfer" => {
            transfer(&st, &id, &body).await?;
            return Ok(Json(json!({"data": {"result": "ok"}})));
        }
        n if NOT_YET.contains(&n) => {
            return Err(ApiError {
                status: axum::http::StatusCode::NOT_IMPLEMENTED,
                code: "10006",
                title: "Not implemented",
                detail: format!("The action {n:?} is not available in this version of sipbridge."),
                pointer: None,
            });
        }
        other => return Err(ApiError::not_found("call action", other)),
    };
    // Any command may carry client_state (Telnyx): it applies before the command.
    if name != "client_state_update" {
        if let Some(state) = string(&body, "client_state")? {
            run(&st, &id, Action::ClientState(Some(state))).await?;
        }
    }
    run(&st, &id, action).await?;
    Ok(Json(json!({"data": {"result": "ok"}})))
}

/// Sends `action` to the call `id`: 404 unknown, the action's error, or done.
pub async fn run(st: &ApiState, id: &str, action: Action) -> Result<(), ApiError> {
    match st.calls.command(id, action).await {
        None => Err(ApiError::not_found("call", id)),
        Some(Err(e)) => Err(ApiError::from_action(e)),
        Some(Ok(())) => Ok(()),
    }
}

/// Telnyx `webhook_url` of a dial or transfer: an `http(s)://` URL that gets the
/// new call's events instead of `[webhooks] url` (signed with the same key;
/// `[webhooks] failover_url` stays the failover). Needs `[webhooks] url` set
/// (the delivery worker and its key run only then).
fn webhook_url(cfg: &crate::config::Config, body: &Map<String, Value>) -> Result<Option<String>, ApiError> {
    let Some(raw) = string(body, "webhook_url")? else { return Ok(None) };
    let url = url::Url::parse(&raw).map_err(|e| ApiError::bad_field("/webhook_url", format!("not a URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(ApiError::bad_field("/webhook_url", "webhook_url must be an http:// or https:// URL"));
    }
    if cfg.webhooks.url.is_none() {
        return Err(ApiError::bad_field(
            "/webhook_url",
            "per-call webhook URLs need webhooks on: set [webhooks] url and signing_key",
        ));
    }
    Ok(Some(url.to_string()))
}

/// `timeout_secs` of a dial or transfer: 5–600, default 30.
fn timeout_secs(body: &Map<String, Value>) -> Result<u64, ApiError> {
    match body.get("timeout_secs") {
        None | Some(Value::Null) => Ok(30),
        Some(Value::Number(n)) => match n.as_u64() {
            Some(s @ 5..=600) => Ok(s),
            _ => Err(ApiError::bad_field("/timeout_secs", "timeout_secs must be 5 to 600")),
        },
        Some(_) => Err(ApiError::bad_field("/timeout_secs", "timeout_secs must be a number")),
    }
}

/// Telnyx `answering_machine_detection` of a dial or transfer: `detect`,
/// `detect_beep`, `greeting_end` or `disabled` (default), with
/// `answering_machine_detection_config` (an object of the keys of
/// [`crate::media::amd::AmdConfig`], each an integer: durations 1–60000 ms,
/// `maximum_number_of_words` 1–100, `silence_threshold` 1–32767; keys not given
/// take Telnyx's defaults; checked even with detection `disabled`). `detect_words`
/// and `premium` (Telnyx's speech-model modes) are refused with a 400 naming the
/// field, as are unknown config keys.
fn answering_machine_detection(body: &Map<String, Value>) -> Result<Option<crate::media::amd::AmdRequest>, ApiError> {
    use crate::media::amd::Mode;
    // The config is checked even when detection is off: a typo is a 400 either way.
    let config = amd_config(body)?;
    let mode = match string(body, "answering_machine_detection")?.as_deref() {
        None | Some("disabled") => return Ok(None),
        Some("detect") => Mode::Detect,
        Some("detect_beep") => Mode::DetectBeep,
        Some("greeting_end") => Mode::GreetingEnd,
        Some(other @ ("detect_words" | "premium")) => {
            return Err(ApiError::bad_field(
                "/answering_machine_detection",
                format!("{other:?} is not supported; use detect, detect_beep, greeting_end or disabled"),
            ));
        }
        Some(other) => {
            return Err(ApiError::bad_field(
                "/answering_machine_detection",
                format!("{other:?} is not one of detect, detect_beep, greeting_end, disabled"),
            ));
        }
    };
    Ok(Some(crate::media::amd::AmdRequest { mode, config }))
}

/// `answering_machine_detection_config` (see [`answering_machine_detection`]).
fn amd_config(body: &Map<String, Value>) -> Result<crate::media::amd::AmdConfig, ApiError> {
    let mut config = crate::media::amd::AmdConfig::default();
    let given = match body.get("answering_machine_detection_config") {
        None | Some(Value::Null) => return Ok(config),
        Some(Value::Object(m)) => m,
        Some(_) => {
            return Err(ApiError::bad_field(
                "/answering_machine_detection_config",
                "answering_machine_detection_config must be an object",
            ));
        }
    };
    const MILLIS: std::ops::RangeInclusive<u64> = 1..=60_000;
    for (key, value) in given {
        let (slot, range) = match key.as_str() {
            "total_analysis_time_millis" => (&mut config.total_analysis_time_millis, MILLIS),
            "after_greeting_silence_millis" => (&mut config.after_greeting_silence_millis, MILLIS),
            "between_words_silence_millis" => (&mut config.between_words_silence_millis, MILLIS),
            "greeting_duration_millis" => (&mut config.greeting_duration_millis, MILLIS),
            "greeting_silence_duration_millis" => (&mut config.greeting_silence_duration_millis, MILLIS),
            "greeting_total_analysis_time_millis" => (&mut config.greeting_total_analysis_time_millis, MILLIS),
            "initial_silence_millis" => (&mut config.initial_silence_millis, MILLIS),
            "maximum_number_of_words" => (&mut config.maximum_number_of_words, 1..=100),
            "maximum_word_length_millis" => (&mut config.maximum_word_length_millis, MILLIS),
            "silence_threshold" => (&mut config.silence_threshold, 1..=32_767),
            _ => {
                return Err(ApiError::bad_field(
                    &format!("/answering_machine_detection_config/{key}"),
                    format!("{key:?} is not an answering_machine_detection_config key sipbridge knows"),
                ));
            }
        };
        match value.as_u64().filter(|n| range.contains(n)) {
            Some(n) => *slot = n as u32,
            None => {
                return Err(ApiError::bad_field(
                    &format!("/answering_machine_detection_config/{key}"),
                    format!("{key} must be an integer from {} to {}", range.start(), range.end()),
                ));
            }
        }
    }
    Ok(config)
}

/// `to`/`from` of a dial or transfer: a number or SIP user (they become URI users).
fn check_numbers(to: &str, from: &str) -> Result<(), ApiError> {
    for (key, v) in [("to", to), ("from", from)] {
        if v.contains(|c: char| c.is_whitespace() || c == '@' || c == '<' || c == '>' || c == ';') {
            return Err(ApiError::bad_field(
                &format!("/{key}"),
                format!("{key} must be a number or SIP user, not {v:?}"),
            ));
        }
    }
    Ok(())
}

/// `bridge` (Telnyx: `call_control_id` = the other call): both calls' audio meet
/// in a private two-party room (`bridge:{id}`; their agents, if any, follow them
/// in and hear both); `call.bridged` on each, naming the other. When either call
/// hangs up the other is hung up too (Telnyx's default), except this call with
/// `park_after_unbridge: "self"`: it leaves the bridge and stays up.
async fn bridge(st: &ApiState, id: &str, body: &Map<String, Value>) -> Result<(), ApiError> {
    let other = string(body, "call_control_id")?.ok_or_else(|| {
        ApiError::bad_field("/call_control_id", "call_control_id (the call to bridge with) is required")
    })?;
    if other == id {
        return Err(ApiError::bad_field("/call_control_id", "a call cannot be bridged with itself"));
    }
    let park = match string(body, "park_after_unbridge")?.as_deref() {
        None => false,
        Some("self") => true,
        Some(other) => {
            return Err(ApiError::bad_field(
                "/park_after_unbridge",
                format!("{other:?} is not supported; use \"self\""),
            ));
        }
    };
    let views = [view(st, id)?, view(st, &other)?];
    st.calls.set_park_after_unbridge(id, park);
    let join = crate::call::rooms::bridge_join(id);
    run(st, id, Action::JoinRoom(join.clone())).await?;
    if let Err(e) = run(st, &other, Action::JoinRoom(join)).await {
        let _ = run(st, id, Action::LeaveRoom).await;
        return Err(e);
    }
    crate::call::rooms::emit_bridged(&st.events, &views[0].info, &views[1].info);
    Ok(())
}

/// `transfer` (Telnyx: a new outbound leg to `to`, bridged with this call when
/// it answers; if it fails, `call.hangup` for the new leg and this call stays
/// up). Body: `to` (required), `from` (default: this call's `from`),
/// `timeout_secs` (5–600, default 30), `client_state` (of the new leg),
/// `answering_machine_detection` and its config (on the new leg, as on dial), and
/// sipbridge's `connection_id` (the trunk; default: this call's trunk).
async fn transfer(st: &ApiState, id: &str, body: &Map<String, Value>) -> Result<(), ApiError> {
    let me = view(st, id)?;
    if me.state != "answered" {
        return Err(ApiError::from_action(crate::call::control::ActionError::invalid("the call is not answered yet")));
    }
    let to = string(body, "to")?
        .filter(|s| !s.trim().is_empty())
        .ok_or_else(|| ApiError::bad_field("/to", "to is required"))?;
    let from = string(body, "from")?.unwrap_or_else(|| me.info.from.clone());
    check_numbers(&to, &from)?;
    let timeout = timeout_secs(body)?;
    let webhook_url = webhook_url(&st.config.borrow(), body)?;
    let req = crate::call::services::DialRequest {
        trunk: string(body, "connection_id")?.unwrap_or_else(|| me.info.connection_id.clone()),
        from,
        to,
        timeout: Duration::from_secs(timeout),
        client_state: string(body, "client_state")?,
        stream: None,
        record: false,
        record_format: None,
        webhook_url,
        bridge_with: Some(id.to_string()),
        answering_machine_detection: answering_machine_detection(body)?,
    };
    st.control.dial(req).await.map_err(ApiError::from_action)?;
    Ok(())
}

fn view(st: &ApiState, id: &str) -> Result<crate::call::control::CallView, ApiError> {
    match st.calls.get(id) {
        Lookup::Live(v) => Ok(*v),
        Lookup::Ended => Err(ApiError::from_action(crate::call::control::ActionError::ended())),
        Lookup::Unknown => Err(ApiError::not_found("call", id)),
    }
}

/// `refer`: `sip_address` (required), `custom_headers` (`[{name, value}]`, X- only).
fn refer(body: &Map<String, Value>) -> Result<Action, ApiError> {
    let sip_address =
        string(body, "sip_address")?.ok_or_else(|| ApiError::bad_field("/sip_address", "sip_address is required"))?;
    crate::call::control::check_address(&sip_address).map_err(|e| ApiError::bad_field("/sip_address", e))?;
    let headers = custom_headers(body)?;
    Ok(Action::Refer(crate::call::control::Refer { sip_address, headers }))
}

/// Telnyx `custom_headers`: `[{"name": "X-...", "value": "..."}]`. Names are
/// RFC 3261 §25.1 tokens; values single-line (no header injection).
pub fn custom_headers(body: &Map<String, Value>) -> Result<Vec<(String, String)>, ApiError> {
    let items = match body.get("custom_headers") {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(items)) => items,
        Some(_) => return Err(ApiError::bad_field("/custom_headers", "custom_headers must be an array")),
    };
    let token = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b));
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let pointer = format!("/custom_headers/{i}");
        let (Some(name), Some(value)) =
            (item.get("name").and_then(Value::as_str), item.get("value").and_then(Value::as_str))
        else {
            return Err(ApiError::bad_field(&pointer, "each custom header is {\"name\": string, \"value\": string}"));
        };
        if !token(name) {
            return Err(ApiError::bad_field(&format!("{pointer}/name"), format!("{name:?} is not a SIP header name")));
        }
        if value.chars().any(|c| c.is_control() && c != '\t') {
            return Err(ApiError::bad_field(&format!("{pointer}/value"), "header values are one line"));
        }
        out.push((name.to_string(), value.to_string()));
    }
    Ok(out)
}

fn send_dtmf(body: &Map<String, Value>) -> Result<Action, ApiError> {
    let digits = string(body, "digits")?.ok_or_else(|| ApiError::bad_field("/digits", "digits is required"))?;
    if digits.is_empty() {
        return Err(ApiError::bad_field("/digits", "digits must not be empty"));
    }
    // Telnyx also accepts 'w'/'W' pauses; sipbridge sends key presses only.
    if let Some(bad) = digits.chars().find(|c| crate::media::dtmf::digit_to_event(*c).is_none()) {
        return Err(ApiError::bad_field("/digits", format!("{bad:?} is not a DTMF digit (0-9, *, #, A-D)")));
    }
    let duration = match body.get("duration_millis") {
        None | Some(Value::Null) => 250,
        Some(Value::Number(n)) => match n.as_u64() {
            Some(ms @ 100..=500) => ms,
            _ => return Err(ApiError::bad_field("/duration_millis", "duration_millis must be 100 to 500")),
        },
        Some(_) => return Err(ApiError::bad_field("/duration_millis", "duration_millis must be a number")),
    };
    Ok(Action::SendDtmf { digits, duration: Duration::from_millis(duration) })
}

/// `suppression_start`: `direction` (`inbound` default, `outbound`, `both`) and
/// `noise_suppression_engine` (Telnyx's `Denoiser`, the default, is RNNoise here;
/// the others are Telnyx-hosted models sipbridge does not have).
fn suppression_start(body: &Map<String, Value>) -> Result<Action, ApiError> {
    let direction = string(body, "direction")?.unwrap_or_else(|| "inbound".into());
    let suppression = crate::media::suppress::Suppression::from_direction(&direction)
        .ok_or_else(|| ApiError::bad_field("/direction", format!("{direction:?} is not inbound, outbound or both")))?;
    match string(body, "noise_suppression_engine")?.as_deref() {
        None | Some("Denoiser" | "A") => {}
        Some(other) => {
            return Err(ApiError::bad_field(
                "/noise_suppression_engine",
                format!("{other:?} is not available on sipbridge; Denoiser (RNNoise, on the box) is"),
            ));
        }
    }
    Ok(Action::Suppress(suppression))
}

/// `playback_start`'s `audio_url`, `loop` and `overlay`.
fn playback_start(body: &Map<String, Value>) -> Result<(String, Loops, bool), ApiError> {
    if string(body, "media_name")?.is_some() {
        return Err(ApiError::bad_field(
            "/media_name",
            "media_name is not supported: give audio_url (a file in [media] dir or an http(s) URL)",
        ));
    }
    let url = string(body, "audio_url")?.ok_or_else(|| ApiError::bad_field("/audio_url", "audio_url is required"))?;
    let loops = match body.get("loop") {
        None | Some(Value::Null) => Loops::Times(1),
        Some(Value::String(s)) if s == "infinity" => Loops::Forever,
        Some(Value::String(s)) if s.parse::<u32>().is_ok_and(|n| (1..=100).contains(&n)) => {
            Loops::Times(s.parse().unwrap_or(1))
        }
        Some(Value::Number(n)) if n.as_u64().is_some_and(|n| (1..=100).contains(&n)) => {
            Loops::Times(n.as_u64().unwrap_or(1) as u32)
        }
        Some(_) => return Err(ApiError::bad_field("/loop", "loop must be 1 to 100 or \"infinity\"")),
    };
    let overlay = match body.get("overlay") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(ApiError::bad_field("/overlay", "overlay must be true or false")),
    };
    match string(body, "target_legs")?.as_deref() {
        None | Some("self") => {}
        Some(other) => {
            return Err(ApiError::bad_field("/target_legs", format!("{other:?} is not supported; only \"self\"")));
        }
    }
    Ok((url, loops, overlay))
}

/// Connect limit for streams started by the API (Telnyx does not expose one).
const STREAM_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

fn streaming_start(body: &Map<String, Value>) -> Result<Action, ApiError> {
    let url =
        string(body, "stream_url")?.ok_or_else(|| ApiError::bad_field("/stream_url", "stream_url is required"))?;
    let protocol = match string(body, "stream_protocol")?.as_deref() {
        None => StreamProtocol::Telnyx,
        Some(name) => StreamProtocol::from_name(name).ok_or_else(|| {
            ApiError::bad_field("/stream_protocol", "must be telnyx, twilio, exotel, plivo or audiosocket")
        })?,
    };
    let url = crate::config::values::parse_url(&url, protocol.schemes())
        .ok()
        .filter(|u| u.port_or_known_default().is_some())
        .ok_or_else(|| {
            let schemes =
                if protocol == StreamProtocol::AudioSocket { "a tcp://host:port" } else { "a ws:// or wss://" };
            ApiError::bad_field("/stream_url", format!("stream_url must be {schemes} URL"))
        })?;
    let track = match string(body, "stream_track")?.as_deref() {
        None | Some("inbound_track") => StreamTrack::InboundTrack,
        Some("outbound_track") => StreamTrack::OutboundTrack,
        Some("both_tracks") => StreamTrack::BothTracks,
        Some(other) => {
            return Err(ApiError::bad_field(
                "/stream_track",
                format!("{other:?} is not one of inbound_track, outbound_track, both_tracks"),
            ));
        }
    };
    let bidirectional = match string(body, "stream_bidirectional_mode")?.as_deref() {
        None => false,
        Some("rtp") => true,
        Some(other) => {
            return Err(ApiError::bad_field(
                "/stream_bidirectional_mode",
                format!("{other:?} is not supported; use \"rtp\""),
            ));
        }
    };
    let encoding = match string(body, "stream_bidirectional_codec")?.as_deref() {
        None => protocol.default_encoding(),
        Some("PCMU") => Encoding::Pcmu,
        Some("PCMA") => Encoding::Pcma,
        Some("L16") => Encoding::L16,
        Some("G722") => Encoding::G722,
        Some("OPUS") => Encoding::Opus,
        Some(other) => {
            return Err(ApiError::bad_field(
                "/stream_bidirectional_codec",
                format!("{other:?} is not one of PCMU, PCMA, L16, G722, OPUS"),
            ));
        }
    };
    let sample_rate = match body.get("stream_bidirectional_sampling_rate") {
        // G722 and OPUS stream at 16000 Hz whatever the default.
        None | Some(Value::Null) => encoding.fixed_rate().unwrap_or(8000),
        Some(Value::Number(n)) if n.as_u64() == Some(8000) && encoding.fixed_rate().is_none() => 8000,
        Some(Value::Number(n))
            if n.as_u64() == Some(16000) && encoding != Encoding::Pcmu && encoding != Encoding::Pcma =>
        {
            16000
        }
        Some(_) => {
            return Err(ApiError::bad_field(
                "/stream_bidirectional_sampling_rate",
                "must be 8000 (PCMU, PCMA, L16) or 16000 (L16, G722, OPUS)",
            ));
        }
    };
    protocol
        .check_format(encoding, sample_rate)
        .map_err(|why| ApiError::bad_field("/stream_bidirectional_codec", why))?;
    Ok(Action::StreamingStart(Box::new(StreamSpec {
        name: "api".into(),
        url,
        protocol,
        auth_token: string(body, "stream_auth_token")?,
        encoding,
        sample_rate,
        track,
        bidirectional,
        connect_timeout: STREAM_CONNECT_TIMEOUT,
        custom_parameters: Map::new(),
    })))
}
