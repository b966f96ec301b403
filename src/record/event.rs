//! The recording-specific payload fields of `call.recording.saved`.
//!
//! Field names follow Telnyx Call Control's `call.recording.saved` webhook
//! (PROTOCOLS.md §2): `channels`, `recording_started_at`, `recording_ended_at`
//! (RFC 3339 UTC with microseconds), `recording_urls` / `public_recording_urls`
//! (`{"wav": url}` or `{"mp3": url}`, by the file's format), plus sipbridge's own `recording_id`, `duration_millis`,
//! `size_bytes`, `sha256`, `file_path`. The caller merges these into the call's
//! common fields (`CallInfo::payload`); this module knows nothing about calls.

use std::time::SystemTime;

use serde_json::{Map, Value, json};

use super::wav::SavedFile;
use crate::config::{Channels, RecordingFormat};
use crate::store::timestamp;

/// One finished recording span, as the event reports it.
#[derive(Debug, Clone)]
pub struct SavedRecording {
    /// Id of this span's recording (also the download route's file name).
    pub recording_id: String,
    /// Dual (stereo) or single (mono mix).
    pub channels: Channels,
    /// Wall-clock time of the first frame (answer or `record_start`).
    pub started_at: SystemTime,
    /// Wall-clock time of the last frame (hangup or `record_stop`).
    pub ended_at: SystemTime,
    /// The file written.
    pub file: SavedFile,
    /// Why the recording stopped early, if it did (`"disk_full"`,
    /// `"low_disk_space"`, `"permission_denied"`, ...); reported as `recording_stop_reason`.
    pub stop_reason: Option<String>,
}

/// The download route of a recording: `<api_base>/v2/recordings/<recording_id>.wav`
/// (or `.mp3`; `api_base` without a trailing slash is expected; one is tolerated).
pub fn recording_url(api_base: &str, recording_id: &str, format: RecordingFormat) -> String {
    format!(
        "{}/v2/recordings/{}.{}",
        api_base.trim_end_matches('/'),
        super::path::sanitize_id(recording_id),
        format.as_str()
    )
}

/// The `call.recording.saved` fields of `rec`, with download URLs under `api_base`
/// (e.g. `http://10.0.0.5:8080`).
pub fn recording_saved_fields(rec: &SavedRecording, api_base: &str) -> Map<String, Value> {
    let format = RecordingFormat::of_path(&rec.file.path);
    let url = recording_url(api_base, &rec.recording_id, format);
    let channels = match rec.channels {
        Channels::Dual => "dual",
        Channels::Single => "single",
    };
    let mut m = Map::new();
    m.insert("recording_id".into(), json!(rec.recording_id));
    m.insert("channels".into(), json!(channels));
    m.insert("recording_started_at".into(), json!(timestamp(rec.started_at)));
    m.insert("recording_ended_at".into(), json!(timestamp(rec.ended_at)));
    m.insert("recording_urls".into(), json!({ format.as_str(): url }));
    m.insert("public_recording_urls".into(), json!({ format.as_str(): url }));
    m.insert("format".into(), json!(format.as_str()));
    m.insert("duration_millis".into(), json!(rec.file.duration().as_millis() as u64));
    m.insert("size_bytes".into(), json!(rec.file.size_bytes));
    m.insert("sha256".into(), json!(rec.file.sha256));
    m.insert("file_path".into(), json!(rec.file.path.to_string_lossy()));
    m.insert("sample_rate".into(), json!(rec.file.sample_rate_hz));
    let reason = rec.stop_reason.as_deref().or(rec.file.write_error);
    if let Some(reason) = reason {
        m.insert("recording_stop_reason".into(), json!(reason));
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;
    use std::time::{Duration, UNIX_EPOCH};

    fn rec(write_error: Option<&'static str>) -> SavedRecording {
        SavedRecording {
            recording_id: "0b5e6c1a-rec".into(),
            channels: Channels::Dual,
            started_at: UNIX_EPOCH + Duration::from_micros(1_714_564_800_123_456),
            ended_at: UNIX_EPOCH + Duration::from_micros(1_714_564_861_623_456),
            file: SavedFile {
                path: PathBuf::from("/rec/2024/05/01/s.wav"),
                size_bytes: 44 + 61_500 * 32,
                frames: 492_000,
                sample_rate_hz: 8000,
                channels: 2,
                sha256: "ab".repeat(32),
                write_error,
            },
            stop_reason: None,
        }
    }

    #[test]
    fn telnyx_fields_and_download_urls() {
        let m = recording_saved_fields(&rec(None), "http://10.0.0.5:8080/");
        let v = Value::Object(m);
        assert_eq!(v["channels"], "dual");
        assert_eq!(v["recording_started_at"], "2024-05-01T12:00:00.123456Z");
        assert_eq!(v["recording_ended_at"], "2024-05-01T12:01:01.623456Z");
        assert_eq!(v["recording_urls"]["wav"], "http://10.0.0.5:8080/v2/recordings/0b5e6c1a-rec.wav");
        assert_eq!(v["public_recording_urls"], v["recording_urls"]);
        assert_eq!(v["duration_millis"], 61_500);
        assert_eq!(v["size_bytes"], 44 + 61_500 * 32);
        assert_eq!(v["sha256"].as_str().unwrap().len(), 64);
        assert_eq!(v["file_path"], "/rec/2024/05/01/s.wav");
        assert!(v.get("recording_stop_reason").is_none());
        assert_eq!(v["format"], "wav");
        let mut mp3 = rec(None);
        mp3.file.path = PathBuf::from("/rec/2024/05/01/s.mp3");
        let v = Value::Object(recording_saved_fields(&mp3, "http://h"));
        assert_eq!(v["recording_urls"], json!({"mp3": "http://h/v2/recordings/0b5e6c1a-rec.mp3"}));
        assert_eq!(v["public_recording_urls"], v["recording_urls"]);
        assert_eq!(v["format"], "mp3");
    }

    #[test]
    fn stop_reasons_are_reported() {
        let v = Value::Object(recording_saved_fields(&rec(Some("disk_full")), "http://h"));
        assert_eq!(v["recording_stop_reason"], "disk_full");
        let mut r = rec(None);
        r.channels = Channels::Single;
        r.stop_reason = Some("low_disk_space".into());
        let v = Value::Object(recording_saved_fields(&r, "http://h"));
        assert_eq!(v["recording_stop_reason"], "low_disk_space");
        assert_eq!(v["channels"], "single");
    }
}
