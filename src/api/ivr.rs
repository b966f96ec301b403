//! Bodies of the IVR commands on a call: `gather`, `gather_using_audio`,
//! `gather_using_speak` and `speak` (Telnyx "Call Commands": Gather, Gather using
//! audio, Gather using speak, Speak text; developers.telnyx.com/api-reference/
//! call-commands/…). Every field is checked with a 400 naming it; prompt audio is
//! loaded (`[media]` policy, as `playback_start`) or synthesized (`[tts]`) here, in
//! the request's task, before the command goes to the call: the call's loop never
//! waits on a file, a download or a speech engine.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value};

use super::ApiState;
use super::body::string;
use super::error::ApiError;
use crate::call::control::{Action, GatherPrompt, GatherRequest};
use crate::call::gather::{GatherSpec, MAX_DIGITS};

/// An optional whole number in `range`, else `default`; 400 naming the field.
fn number(
    body: &Map<String, Value>,
    key: &str,
    range: std::ops::RangeInclusive<u64>,
    default: u64,
) -> Result<u64, ApiError> {
    let bad = || ApiError::bad_field(&format!("/{key}"), format!("{key} must be {} to {}", range.start(), range.end()));
    match body.get(key) {
        None | Some(Value::Null) => Ok(default),
        Some(Value::Number(n)) => n.as_u64().filter(|n| range.contains(n)).ok_or_else(bad),
        Some(_) => Err(bad()),
    }
}

/// Timers: 100 ms to 1 h (Telnyx gives no bounds; these keep a call's timer sane).
fn millis(body: &Map<String, Value>, key: &str, default_ms: u64) -> Result<Duration, ApiError> {
    number(body, key, 100..=3_600_000, default_ms).map(Duration::from_millis)
}

fn is_dtmf(c: char) -> bool {
    matches!(c, '0'..='9' | '*' | '#' | 'A'..='D')
}

/// The gather parameters common to the three commands, with Telnyx's defaults:
/// `minimum_digits` 1, `maximum_digits` 128, `terminating_digit` `#` (`""`: none),
/// `valid_digits` `0123456789#*`, `timeout_millis` 60000,
/// `inter_digit_timeout_millis` 5000, `initial_timeout_millis` 5000 (plain gather),
/// `maximum_tries` 3 (with a prompt, 1 to 10).
pub fn gather_spec(body: &Map<String, Value>) -> Result<GatherSpec, ApiError> {
    let d = GatherSpec::default();
    let max = MAX_DIGITS as u64;
    let minimum_digits = number(body, "minimum_digits", 1..=max, d.minimum_digits as u64)? as usize;
    let maximum_digits = number(body, "maximum_digits", 1..=max, d.maximum_digits as u64)? as usize;
    if maximum_digits < minimum_digits {
        return Err(ApiError::bad_field("/maximum_digits", "maximum_digits must not be below minimum_digits"));
    }
    let terminating_digit = match string(body, "terminating_digit")? {
        None => d.terminating_digit,
        Some(s) if s.is_empty() => None,
        Some(s) => {
            let mut chars = s.chars();
            match (chars.next(), chars.next()) {
                (Some(c), None) if is_dtmf(c) => Some(c),
                _ => {
                    return Err(ApiError::bad_field("/terminating_digit", "terminating_digit must be one DTMF digit"));
                }
            }
        }
    };
    let valid_digits = match string(body, "valid_digits")? {
        None => d.valid_digits,
        Some(s) if !s.is_empty() && s.len() <= 32 && s.chars().all(is_dtmf) => s,
        Some(_) => {
            return Err(ApiError::bad_field("/valid_digits", "valid_digits must be DTMF digits (0-9, *, #, A-D)"));
        }
    };
    Ok(GatherSpec {
        minimum_digits,
        maximum_digits,
        terminating_digit,
        valid_digits,
        timeout: millis(body, "timeout_millis", 60_000)?,
        inter_digit_timeout: millis(body, "inter_digit_timeout_millis", 5000)?,
        initial_timeout: millis(body, "initial_timeout_millis", 5000)?,
        maximum_tries: number(body, "maximum_tries", 1..=10, 3)? as u32,
    })
}

/// A media load's failure as the API's 422 (as `playback_start`).
fn media_error(pointer: &str, detail: String) -> ApiError {
    ApiError {
        status: axum::http::StatusCode::UNPROCESSABLE_ENTITY,
        code: "90045",
        title: "Media could not be played",
        detail,
        pointer: Some(pointer.into()),
    }
}

/// Telnyx's speech fields: `payload` (or `invalid_payload`; text, or SSML with
/// `payload_type: "ssml"`, at most 3000 characters), `voice`, `language`.
/// `service_level` and `voice_settings` are accepted and ignored.
pub fn speech(body: &Map<String, Value>, key: &str) -> Result<Option<crate::tts::Speech>, ApiError> {
    let Some(payload) = string(body, key)? else { return Ok(None) };
    let ssml = match string(body, "payload_type")?.as_deref() {
        None | Some("text") => false,
        Some("ssml") => true,
        Some(other) => return Err(ApiError::bad_field("/payload_type", format!("{other:?} is not text or ssml"))),
    };
    let segments = crate::tts::segments(&payload, ssml).map_err(|e| ApiError::bad_field(&format!("/{key}"), e))?;
    let voice = string(body, "voice")?;
    if voice.as_ref().is_some_and(|v| v.len() > 128 || v.chars().any(char::is_control)) {
        return Err(ApiError::bad_field("/voice", "voice must be at most 128 printable characters"));
    }
    let language = string(body, "language")?;
    if let Some(l) = &language {
        if l.is_empty() || l.len() > 16 || !l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
            return Err(ApiError::bad_field("/language", format!("{l:?} is not a language tag like en-US")));
        }
    }
    Ok(Some(crate::tts::Speech { segments, voice, language }))
}

/// The speech of `speech` by `[tts]`; a failure is logged and answered 422.
pub async fn synthesize(
    st: &ApiState,
    speech: &crate::tts::Speech,
    who: &str,
) -> Result<crate::media::clip::Clip, ApiError> {
    let cfg = st.config.borrow().tts.clone();
    crate::tts::synthesize(&cfg, speech).await.map_err(|e| {
        tracing::warn!(%who, "speech not synthesized: {e}");
        ApiError {
            status: axum::http::StatusCode::UNPROCESSABLE_ENTITY,
            code: "90046",
            title: "Speech could not be synthesized",
            detail: e.to_string(),
            pointer: None,
        }
    })
}

/// `speak`: the speech synthesized, and `stop` (`current` or `all`: both end
/// what plays first). A synthesis failure is also reported as
/// `call.speak.ended` with `status: "failed"`.
pub async fn speak(st: &ApiState, id: &str, body: &Map<String, Value>) -> Result<Action, ApiError> {
    let view = match st.calls.get(id) {
        crate::call::control::Lookup::Live(v) => v,
        crate::call::control::Lookup::Ended => {
            return Err(ApiError::from_action(crate::call::control::ActionError::ended()));
        }
        crate::call::control::Lookup::Unknown => return Err(ApiError::not_found("call", id)),
    };
    let speech = speech(body, "payload")?.ok_or_else(|| ApiError::bad_field("/payload", "payload is required"))?;
    let stop = match string(body, "stop")?.as_deref() {
        None => false,
        Some("current" | "all") => true,
        Some(other) => return Err(ApiError::bad_field("/stop", format!("{other:?} is not current or all"))),
    };
    match string(body, "target_legs")?.as_deref() {
        None | Some("self") => {}
        Some(other) => {
            return Err(ApiError::bad_field("/target_legs", format!("{other:?} is not supported; only \"self\"")));
        }
    }
    match synthesize(st, &speech, id).await {
        Ok(pcm) => Ok(Action::Speak { pcm: Arc::new(pcm), stop }),
        Err(e) => {
            let mut info = view.info;
            if let Some(state) = string(body, "client_state")? {
                info.client_state = Some(state);
            }
            crate::call::actions::speak_event(&st.events, &info, "call.speak.ended", Some("failed"));
            Err(e)
        }
    }
}

/// `gather`, `gather_using_audio` and `gather_using_speak`: the action to send to
/// the call (its prompts loaded under `[media]`, or synthesized by `[tts]`).
pub async fn gather(st: &ApiState, name: &str, body: &Map<String, Value>) -> Result<Action, ApiError> {
    let spec = gather_spec(body)?;
    let prompt = match name {
        "gather_using_speak" => {
            let speech =
                speech(body, "payload")?.ok_or_else(|| ApiError::bad_field("/payload", "payload is required"))?;
            let invalid = speech_of(body, "invalid_payload", &speech)?;
            let prompt = synthesize(st, &speech, "gather_using_speak").await?;
            let invalid = match invalid {
                Some(s) => Some(Arc::new(synthesize(st, &s, "gather_using_speak").await?)),
                None => None,
            };
            Some(GatherPrompt { prompt: Arc::new(prompt), invalid })
        }
        "gather_using_audio" => {
            for key in ["media_name", "invalid_media_name"] {
                if string(body, key)?.is_some() {
                    return Err(ApiError::bad_field(
                        &format!("/{key}"),
                        format!("{key} is not supported: give a URL or a file in [media] dir"),
                    ));
                }
            }
            let url =
                string(body, "audio_url")?.ok_or_else(|| ApiError::bad_field("/audio_url", "audio_url is required"))?;
            let invalid_url = string(body, "invalid_audio_url")?;
            let policy = st.config.borrow().media.clone();
            let prompt = crate::call::playback::load(&url, &policy).await.map_err(|e| media_error("/audio_url", e))?;
            let invalid = match invalid_url {
                Some(u) => Some(Arc::new(
                    crate::call::playback::load(&u, &policy).await.map_err(|e| media_error("/invalid_audio_url", e))?,
                )),
                None => None,
            };
            Some(GatherPrompt { prompt: Arc::new(prompt), invalid })
        }
        _ => None,
    };
    Ok(Action::Gather(Box::new(GatherRequest { spec, prompt })))
}

/// `invalid_payload` in the voice and language of the prompt.
fn speech_of(
    body: &Map<String, Value>,
    key: &str,
    prompt: &crate::tts::Speech,
) -> Result<Option<crate::tts::Speech>, ApiError> {
    Ok(speech(body, key)?.map(|s| crate::tts::Speech {
        voice: prompt.voice.clone(),
        language: prompt.language.clone(),
        ..s
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => unreachable!(),
        }
    }

    fn pointer(r: Result<GatherSpec, ApiError>) -> String {
        r.unwrap_err().pointer.unwrap_or_default()
    }

    #[test]
    fn gather_fields_default_as_telnyx_and_name_the_bad_one() {
        let s = gather_spec(&Map::new()).unwrap();
        assert_eq!(s, GatherSpec::default());
        assert_eq!((s.minimum_digits, s.maximum_digits, s.terminating_digit), (1, 128, Some('#')));
        assert_eq!(s.timeout, Duration::from_secs(60));
        let s = gather_spec(&body(serde_json::json!({
            "minimum_digits": 2, "maximum_digits": 4, "terminating_digit": "*", "valid_digits": "123",
            "timeout_millis": 1000, "inter_digit_timeout_millis": 200, "initial_timeout_millis": 300,
        })))
        .unwrap();
        assert_eq!((s.minimum_digits, s.maximum_digits, s.terminating_digit), (2, 4, Some('*')));
        assert_eq!((s.valid_digits.as_str(), s.initial_timeout), ("123", Duration::from_millis(300)));
        assert_eq!(gather_spec(&body(serde_json::json!({"terminating_digit": ""}))).unwrap().terminating_digit, None);
        for (bad, field) in [
            (serde_json::json!({"minimum_digits": 0}), "/minimum_digits"),
            (serde_json::json!({"maximum_digits": 129}), "/maximum_digits"),
            (serde_json::json!({"minimum_digits": 5, "maximum_digits": 4}), "/maximum_digits"),
            (serde_json::json!({"terminating_digit": "##"}), "/terminating_digit"),
            (serde_json::json!({"terminating_digit": "x"}), "/terminating_digit"),
            (serde_json::json!({"valid_digits": "12x"}), "/valid_digits"),
            (serde_json::json!({"timeout_millis": "5"}), "/timeout_millis"),
            (serde_json::json!({"inter_digit_timeout_millis": 5}), "/inter_digit_timeout_millis"),
            (serde_json::json!({"maximum_tries": 0}), "/maximum_tries"),
        ] {
            assert_eq!(pointer(gather_spec(&body(bad.clone()))), field, "{bad}");
        }
    }
}
