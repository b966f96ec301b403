//! Recordings repaired at startup (a `.wav.part` left by a crash or power cut,
//! made playable by [`super::repair`]) are announced like any other: one
//! `call.recording.saved` each, with the call's ids from the call records, so the
//! backend learns of the audio the crash interrupted (issue 7 point 3, issue 11
//! point 5). `recording_stop_reason` is `"crash_recovered"`; the span's end is
//! the file's last write and its start that minus the audio's duration.

use std::path::Path;
use std::time::SystemTime;

use serde_json::{Map, Value, json};

use super::{Repaired, SavedFile, SavedRecording, recording_saved_fields};
use crate::config::Channels;
use crate::store::calls::{self, CallFilter, CallRecord, Direction};
use crate::store::event::CallEvent;
use crate::store::{Page, StoreHandle};

pub use crate::store::event::EventSink;

/// The `call_session_id` a recording file is named after: `{id}.wav` (span 1) or
/// `{id}-{n}.wav` (span n), or the same with `.mp3`, the id being a UUID.
pub fn session_of(path: &Path) -> Option<String> {
    let name = path.file_name()?.to_str()?;
    let stem = name.strip_suffix(".wav").or_else(|| name.strip_suffix(".mp3"))?;
    if uuid::Uuid::parse_str(stem).is_ok() {
        return Some(stem.to_string());
    }
    let (id, span) = stem.rsplit_once('-')?;
    (span.parse::<u32>().is_ok() && uuid::Uuid::parse_str(id).is_ok()).then(|| id.to_string())
}

/// The `call.recording.saved` event of a repaired file; `leg` gives the call's
/// ids (the incoming leg of the session, else its first), none when unknown.
pub fn event(repaired: &Repaired, leg: Option<&CallRecord>, api_base: &str) -> Result<CallEvent, String> {
    let (size_bytes, sha256) = super::wav::sha256_file(&repaired.final_path).map_err(|e| e.to_string())?;
    let ended_at =
        std::fs::metadata(&repaired.final_path).and_then(|m| m.modified()).unwrap_or_else(|_| SystemTime::now());
    let started_at = ended_at.checked_sub(repaired.duration()).unwrap_or(ended_at);
    let saved = SavedRecording {
        recording_id: uuid::Uuid::new_v4().to_string(),
        channels: if repaired.channels == 1 { Channels::Single } else { Channels::Dual },
        started_at,
        ended_at,
        file: SavedFile {
            path: repaired.final_path.clone(),
            size_bytes,
            frames: repaired.frames,
            sample_rate_hz: repaired.sample_rate_hz,
            channels: repaired.channels,
            sha256,
            write_error: None,
        },
        stop_reason: Some("crash_recovered".into()),
    };
    let session = leg.map(|l| l.start.call_session_id.clone()).or_else(|| session_of(&repaired.final_path));
    let mut p = Map::new();
    if let Some(l) = leg {
        let s = &l.start;
        p.insert("call_control_id".into(), json!(s.call_control_id));
        p.insert("call_leg_id".into(), json!(s.call_leg_id));
        p.insert("call_session_id".into(), json!(s.call_session_id));
        p.insert("connection_id".into(), json!(s.trunk));
        p.insert("from".into(), json!(s.from));
        p.insert("to".into(), json!(s.to));
        p.insert("direction".into(), json!(s.direction.as_str()));
    } else if let Some(s) = &session {
        p.insert("call_session_id".into(), Value::String(s.clone()));
    }
    p.insert("client_state".into(), Value::Null);
    p.extend(recording_saved_fields(&saved, api_base));
    Ok(CallEvent::new("call.recording.saved", session, p))
}

/// Emits `call.recording.saved` for each repaired file (looked up in the call
/// records by the session its name carries); failures are logged.
pub async fn announce(store: &StoreHandle, events: &impl EventSink, repaired: &[Repaired], api_base: &str) {
    for r in repaired {
        let leg = match session_of(&r.final_path) {
            Some(session) => {
                let filter = CallFilter { call_session_id: Some(session), ..CallFilter::default() };
                let legs = store
                    .run(move |c| calls::list(c, &filter, Page { number: 1, size: 10 }))
                    .await
                    .map(|(legs, _)| legs)
                    .unwrap_or_default();
                let incoming = legs.iter().position(|l| l.start.direction == Direction::Incoming);
                incoming.or((!legs.is_empty()).then_some(0)).map(|i| legs[i].clone())
            }
            None => None,
        };
        match event(r, leg.as_ref(), api_base) {
            Ok(e) => events.emit_event(e),
            Err(e) => tracing::warn!(file = %r.final_path.display(), "repaired recording not announced: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_from_file_names() {
        let id = "0f8e2a4c-1b2d-4e5f-8a9b-0c1d2e3f4a5b";
        assert_eq!(session_of(Path::new(&format!("/r/2026/11/22/{id}.wav"))).as_deref(), Some(id));
        assert_eq!(session_of(Path::new(&format!("/r/{id}-3.wav"))).as_deref(), Some(id));
        assert_eq!(session_of(Path::new(&format!("/r/{id}-2.mp3"))).as_deref(), Some(id));
        assert_eq!(session_of(Path::new("/r/not-a-call.wav")), None);
        assert_eq!(session_of(Path::new(&format!("/r/{id}.wav.part"))), None);
    }
}
