//! Recordings over the API, in Telnyx's shapes (API v2 "Call Recordings": List all
//! call recordings, Retrieve a call recording, Delete a call recording), from the
//! recordings index (`store::recordings`):
//!
//! - `GET /v2/recordings`: `filter[call_session_id]`, `filter[call_leg_id]`,
//!   `filter[call_control_id]`, `filter[connection_id]`, `filter[from]`,
//!   `filter[to]`, `filter[created_at][gte|lte]`, `filter[status]`,
//!   `filter[conference_id]` (rooms are not recorded as such: matches nothing),
//!   `page[number]`, `page[size]` → `{"data": [...], "meta": {...}}`;
//! - `GET /v2/recordings/{id}` → `{"data": {...}}`;
//! - each recording carries `upload`: where `[recording.upload]` put it (state,
//!   bucket, key, url, errors), `null` when it is not queued;
//! - `GET /v2/recordings/{id}.wav` (or `.mp3`) → the file (`audio/wav`, `audio/mpeg`), with `Range`
//!   (206 / 416), `Accept-Ranges`, `Last-Modified`, `ETag` (the file's SHA-256);
//! - `DELETE /v2/recordings/{id}` → deletes the file, keeps the row (`status:
//!   "deleted"`), answers the recording.
//!
//! `{id}` and `{id}.wav` are one path segment: axum's router cannot tell a
//! parameter from a parameter with a suffix there, so one route takes the segment
//! and [`get`] picks the representation by the `.wav`/`.mp3` suffix (a `recording_id` is
//! a UUID: it never ends in either).
//!
//! Files are served only from under `[recording] dir` (the stored path is
//! resolved, symlinks included, and must lie inside it). A row whose file is gone
//! from disk is marked `deleted` (`deleted_reason: "missing"`) when the API finds
//! out, so listings tell the truth about what can still be downloaded.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use axum::Json;
use axum::extract::{Path as UrlPath, RawQuery, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::ApiState;
use super::error::ApiError;
use super::query::Params;
use crate::config::RecordingFormat;
use crate::store::recordings::{self, DeletedReason, Recording, RecordingFilter, RecordingStatus};
use crate::store::timestamp;

/// Runs `f` on a read-only store connection on a blocking thread.
pub(crate) async fn read<R, F>(st: &ApiState, f: F) -> Result<R, ApiError>
where
    R: Send + 'static,
    F: FnOnce(&rusqlite::Connection) -> rusqlite::Result<R> + Send + 'static,
{
    let db = st.store.path().to_path_buf();
    let r = tokio::task::spawn_blocking(move || {
        let conn = crate::store::open_read_only(&db).map_err(|e| e.to_string())?;
        f(&conn).map_err(|e| format!("store {}: {e}", db.display()))
    })
    .await;
    match r {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => {
            tracing::warn!("API: reading the store failed: {e}");
            Err(ApiError::internal("The store could not be read (see the box's log)."))
        }
        Err(_) => Err(ApiError::internal("The store read did not complete (see the box's log).")),
    }
}

/// Telnyx's recording object for `r`, plus sipbridge's own fields
/// (`connection_id`, `from`, `to`, `file_path`, `size_bytes`, `sha256`,
/// `sample_rate`, `recording_stop_reason`, `deleted_at`, `deleted_reason`).
/// `download_urls` is empty once the file is deleted.
pub fn recording_json(r: &Recording, api_base: &str) -> Value {
    let s = &r.saved;
    let download = match r.status {
        RecordingStatus::Completed => {
            let format = RecordingFormat::of_path(Path::new(&s.file_path));
            json!({ format.as_str(): crate::record::event::recording_url(api_base, &s.recording_id, format) })
        }
        RecordingStatus::Deleted => json!({}),
    };
    json!({
        "record_type": "recording",
        "id": s.recording_id,
        "call_control_id": s.call_control_id,
        "call_leg_id": s.call_leg_id,
        "call_session_id": s.call_session_id,
        "conference_id": null,
        "connection_id": s.trunk,
        "from": s.from,
        "to": s.to,
        "channels": s.channels,
        "source": "call",
        "status": r.status.as_str(),
        "created_at": timestamp(s.created_at),
        "updated_at": timestamp(r.updated_at),
        "recording_started_at": timestamp(s.recording_started_at),
        "recording_ended_at": timestamp(s.recording_ended_at),
        "duration_millis": s.duration_millis,
        "download_urls": download,
        "file_path": s.file_path,
        "size_bytes": s.size_bytes,
        "sha256": s.sha256,
        "sample_rate": s.sample_rate_hz,
        "recording_stop_reason": s.stop_reason,
        "deleted_at": r.deleted_at.map(timestamp),
        "deleted_reason": r.deleted_reason,
    })
}

/// `path` resolved (symlinks and `..` followed), if it exists and lies under the
/// resolved `dir`. `Err(true)` = it does not exist; `Err(false)` = outside `dir`.
fn resolve_under(dir: &Path, path: &Path) -> Result<PathBuf, bool> {
    let file = std::fs::canonicalize(path).map_err(|_| true)?;
    let root = std::fs::canonicalize(dir).map_err(|_| false)?;
    if file.starts_with(&root) && file.is_file() { Ok(file) } else { Err(false) }
}

/// Marks rows whose files are gone from disk (`deleted_reason: "missing"`) and
/// returns them updated; rows already deleted, and rows whose file exists, are
/// returned as they are.
async fn reconcile(st: &ApiState, rows: Vec<Recording>) -> Vec<Recording> {
    let checked = tokio::task::spawn_blocking(move || {
        rows.into_iter()
            .map(|r| {
                // Only a definite "not found" counts: an unreadable directory is not a deletion.
                let gone = r.status == RecordingStatus::Completed
                    && matches!(Path::new(&r.saved.file_path).try_exists(), Ok(false));
                (r, gone)
            })
            .collect::<Vec<_>>()
    })
    .await
    .unwrap_or_default();
    let now = SystemTime::now();
    let missing: Vec<String> =
        checked.iter().filter(|(_, gone)| *gone).map(|(r, _)| r.saved.recording_id.clone()).collect();
    // One store job (one commit) for the whole page. The rows are read back in
    // it: another writer may have got there first (the uploader deleting its
    // local copy records `uploaded`), and the answer shows what is stored.
    let mut stored = std::collections::HashMap::new();
    if !missing.is_empty() {
        let n = missing.len();
        let r = st
            .store
            .run(move |c| {
                let mut rows = Vec::with_capacity(missing.len());
                let mut marked = 0;
                for id in &missing {
                    marked += usize::from(recordings::mark_deleted(c, id, now, DeletedReason::Missing)?);
                    if let Some(row) = recordings::get(c, id)? {
                        rows.push(row);
                    }
                }
                Ok((marked, rows))
            })
            .await;
        match r {
            Ok((marked, rows)) => {
                if marked > 0 {
                    tracing::info!(
                        recordings = marked,
                        "recording files gone from disk: marked deleted (deleted_reason missing)"
                    );
                }
                tracing::debug!(checked = n, "recordings without their files read back");
                stored.extend(rows.into_iter().map(|r| (r.saved.recording_id.clone(), r)));
            }
            Err(e) => tracing::warn!("marking missing recordings failed: {e}"),
        }
    }
    checked
        .into_iter()
        .map(|(r, gone)| match stored.remove(&r.saved.recording_id) {
            Some(now_stored) if gone => now_stored,
            _ => r,
        })
        .collect()
}

/// The recording `id`, checked against the disk; 404 when unknown.
async fn one(st: &ApiState, id: &str) -> Result<Recording, ApiError> {
    let key = id.to_string();
    let row = read(st, move |c| recordings::get(c, &key)).await?;
    let row = row.ok_or_else(|| ApiError::not_found("recording", id))?;
    reconcile(st, vec![row])
        .await
        .pop()
        .ok_or_else(|| ApiError::internal("Checking the recording's file did not complete (see the box's log)."))
}

fn gone(r: &Recording) -> ApiError {
    let when = r.deleted_at.map(timestamp).unwrap_or_default();
    let why = match r.deleted_reason.as_deref() {
        Some("api") => "deleted over the API",
        Some("retention") => "deleted by the [recording] retention or disk quota",
        Some("missing") => "no longer on disk (removed outside sipbridge)",
        Some("uploaded") => "deleted from the box after its upload (see its upload.url)",
        _ => "deleted",
    };
    ApiError {
        status: StatusCode::NOT_FOUND,
        code: "10005",
        title: "Resource not found",
        detail: format!("The file of recording {:?} is gone: {why} at {when}.", r.saved.recording_id),
        pointer: None,
    }
}

/// `GET /v2/recordings`.
pub async fn list(State(st): State<ApiState>, RawQuery(q): RawQuery) -> Response {
    match list_inner(&st, q.as_deref()).await {
        Ok(v) => Json(v).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn list_inner(st: &ApiState, q: Option<&str>) -> Result<Value, ApiError> {
    let mut p = Params::parse(q);
    let filter = RecordingFilter {
        call_session_id: p.text("filter[call_session_id]"),
        call_leg_id: p.text("filter[call_leg_id]"),
        call_control_id: p.text("filter[call_control_id]"),
        connection_id: p.text("filter[connection_id]"),
        from: p.text("filter[from]"),
        to: p.text("filter[to]"),
        created_at_gte: p.instant("filter[created_at][gte]")?,
        created_at_lte: p.instant("filter[created_at][lte]")?,
        status: p.choice(
            "filter[status]",
            &[("completed", RecordingStatus::Completed), ("deleted", RecordingStatus::Deleted)],
        )?,
    };
    let conference = p.text("filter[conference_id]");
    let page = p.page()?;
    p.finish(
        "filter[call_session_id], filter[call_leg_id], filter[call_control_id], filter[connection_id], \
         filter[from], filter[to], filter[created_at][gte], filter[created_at][lte], filter[status], \
         filter[conference_id], page[number], page[size]",
    )?;
    let (rows, total) = if conference.is_some() {
        (Vec::new(), 0)
    } else {
        read(st, move |c| recordings::list(c, &filter, page)).await?
    };
    let rows = reconcile(st, rows).await;
    let base = st.config.borrow().api.base_url();
    let mut data: Vec<Value> = rows.iter().map(|r| recording_json(r, &base)).collect();
    with_uploads(st, &mut data).await?;
    Ok(json!({"data": data, "meta": page.meta(total)}))
}

/// Adds `upload` to each recording: where it went in `[recording.upload]`
/// (`{"state": "pending"|"done", "bucket", "key", "url", "uploaded_at",
/// "attempts", "last_error", "local_deleted_at"}`), `null` when not queued.
async fn with_uploads(st: &ApiState, data: &mut [Value]) -> Result<(), ApiError> {
    let ids: Vec<String> = data.iter().filter_map(|r| r["id"].as_str().map(str::to_string)).collect();
    let rows = read(st, move |c| crate::store::uploads::get_many(c, &ids)).await?;
    for r in data.iter_mut() {
        let up = rows.iter().find(|u| r["id"] == u.recording_id.as_str()).map(|u| {
            json!({
                "state": u.state.as_str(),
                "bucket": u.bucket,
                "key": u.object_key,
                "url": u.location,
                "uploaded_at": u.uploaded_at.map(timestamp),
                "attempts": u.attempts,
                "last_error": u.last_error,
                "local_deleted_at": u.local_deleted_at.map(timestamp),
            })
        });
        r["upload"] = up.unwrap_or(Value::Null);
    }
    Ok(())
}

/// `GET /v2/recordings/{id}` (the recording) and `GET /v2/recordings/{id}.wav`
/// or `{id}.mp3` (its file, in the format it was recorded in).
pub async fn get(State(st): State<ApiState>, UrlPath(segment): UrlPath<String>, req: Request) -> Response {
    let file = segment
        .strip_suffix(".wav")
        .map(|id| (id, RecordingFormat::Wav))
        .or_else(|| segment.strip_suffix(".mp3").map(|id| (id, RecordingFormat::Mp3)));
    let result = match file {
        Some((id, format)) => download(&st, id, format, req).await,
        None => match one(&st, &segment).await {
            Ok(r) => {
                let base = st.config.borrow().api.base_url();
                let mut data = [recording_json(&r, &base)];
                with_uploads(&st, &mut data).await.map(|()| {
                    let [d] = data;
                    Json(json!({ "data": d })).into_response()
                })
            }
            Err(e) => Err(e),
        },
    };
    result.unwrap_or_else(IntoResponse::into_response)
}

async fn download(st: &ApiState, id: &str, format: RecordingFormat, req: Request) -> Result<Response, ApiError> {
    let r = one(st, id).await?;
    if r.status == RecordingStatus::Deleted {
        return Err(gone(&r));
    }
    let recorded = RecordingFormat::of_path(Path::new(&r.saved.file_path));
    if recorded != format {
        return Err(ApiError {
            status: StatusCode::NOT_FOUND,
            code: "10005",
            title: "Resource not found",
            detail: format!(
                "Recording {id:?} was recorded as {}: download it as {id}.{}.",
                recorded.as_str(),
                recorded.as_str()
            ),
            pointer: None,
        });
    }
    let dir = st.config.borrow().recording.dir.clone();
    let stored = PathBuf::from(&r.saved.file_path);
    let file = match tokio::task::spawn_blocking(move || resolve_under(&dir, &stored)).await {
        Ok(Ok(f)) => f,
        Ok(Err(true)) => return Err(gone(&one(st, id).await?)),
        Ok(Err(false)) | Err(_) => {
            tracing::warn!(recording_id = id, file = %r.saved.file_path, "refused to serve a recording outside [recording] dir");
            return Err(ApiError {
                status: StatusCode::NOT_FOUND,
                code: "10005",
                title: "Resource not found",
                detail: format!(
                    "The file of recording {id:?} is not under [recording] dir (moved, or dir changed since it was saved); it is not served."
                ),
                pointer: None,
            });
        }
    };
    let etag = r.saved.sha256.as_deref().and_then(|h| HeaderValue::from_str(&format!("\"{h}\"")).ok());
    if let (Some(tag), Some(asked)) = (&etag, req.headers().get(header::IF_NONE_MATCH)) {
        let asked = asked.to_str().unwrap_or_default();
        if asked
            .split(',')
            .any(|t| t.trim() == "*" || t.trim().trim_start_matches("W/") == tag.to_str().unwrap_or_default())
        {
            let mut resp = StatusCode::NOT_MODIFIED.into_response();
            resp.headers_mut().insert(header::ETAG, tag.clone());
            return Ok(resp);
        }
    }
    let served = tower_http::services::ServeFile::new(&file).try_call(req).await.map_err(|e| {
        tracing::warn!(file = %file.display(), "serving a recording failed: {e}");
        ApiError::internal(format!("The file of recording {id:?} could not be read."))
    })?;
    let mut resp = served.map(axum::body::Body::new);
    let ok = resp.status().is_success();
    let h = resp.headers_mut();
    if ok {
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static(format.content_type()));
    }
    if let Some(tag) = etag {
        h.insert(header::ETAG, tag);
    }
    if let Ok(v) = HeaderValue::from_str(&format!(
        "attachment; filename=\"{}.{}\"",
        crate::record::path::sanitize_id(id),
        format.as_str()
    )) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(resp)
}

/// `DELETE /v2/recordings/{id}`: removes the file (when under `[recording] dir`)
/// and marks the row; answers the recording as it is now. Deleting a recording
/// already deleted answers it again (idempotent).
pub async fn delete(State(st): State<ApiState>, UrlPath(segment): UrlPath<String>) -> Response {
    let id = segment.strip_suffix(".wav").or_else(|| segment.strip_suffix(".mp3")).unwrap_or(&segment).to_string();
    match delete_inner(&st, &id).await {
        Ok(r) => {
            let base = st.config.borrow().api.base_url();
            Json(json!({"data": recording_json(&r, &base)})).into_response()
        }
        Err(e) => e.into_response(),
    }
}

async fn delete_inner(st: &ApiState, id: &str) -> Result<Recording, ApiError> {
    let r = one(st, id).await?;
    if r.status == RecordingStatus::Deleted {
        return Ok(r);
    }
    let dir = st.config.borrow().recording.dir.clone();
    let stored = PathBuf::from(&r.saved.file_path);
    let removed = tokio::task::spawn_blocking(move || match resolve_under(&dir, &stored) {
        Ok(file) => std::fs::remove_file(&file).map_err(|e| e.to_string()),
        Err(true) => Ok(()),
        Err(false) => Err("it is not under [recording] dir; not deleted".into()),
    })
    .await
    .unwrap_or_else(|_| Err("the deletion did not complete".into()));
    if let Err(e) = removed {
        tracing::warn!(recording_id = id, file = %r.saved.file_path, "recording not deleted: {e}");
        return Err(ApiError::internal(format!("The file of recording {id:?} could not be deleted: {e}.")));
    }
    let (key, now) = (id.to_string(), SystemTime::now());
    st.store
        .run(move |c| recordings::mark_deleted(c, &key, now, DeletedReason::Api))
        .await
        .map_err(|e| ApiError::internal(format!("The file was deleted but the store was not updated: {e}")))?;
    tracing::info!(recording_id = id, file = %r.saved.file_path, "recording deleted over the API");
    one(st, id).await
}

/// The body of `record_start` (Telnyx Call Control,
/// developers.telnyx.com/api-reference/call-commands/recording-start):
/// `format` `wav` | `mp3` (default `[recording] format`), `channels` `single` |
/// `dual`, `recording_track` `both` | `inbound` | `outbound`, `play_beep`
/// (boolean), `max_length` (whole seconds 0–14400, 0 = none) and `timeout_secs`
/// (whole seconds 0–14400, 0 = none). Telnyx's `trim`, `custom_file_name` and
/// transcription fields are accepted and ignored (docs/api.md). A field of the
/// wrong type or value is a 400 naming it (`source.pointer`).
pub fn record_start_options(
    body: &serde_json::Map<String, Value>,
) -> Result<crate::call::recording::StartOptions, ApiError> {
    use super::body::string;
    use crate::call::recording::{RecordingTrack, StartOptions};
    use crate::config::{Channels, RecordingFormat};
    let format = match string(body, "format")?.as_deref() {
        None => None,
        Some("wav") => Some(RecordingFormat::Wav),
        Some("mp3") => Some(RecordingFormat::Mp3),
        Some(other) => {
            return Err(ApiError::bad_field("/format", format!("{other:?} is not wav or mp3")));
        }
    };
    let channels = match string(body, "channels")?.as_deref() {
        None => None,
        Some("dual") => Some(Channels::Dual),
        Some("single") => Some(Channels::Single),
        Some(other) => {
            return Err(ApiError::bad_field("/channels", format!("{other:?} is not single or dual")));
        }
    };
    let track = match string(body, "recording_track")?.as_deref() {
        None => RecordingTrack::Both,
        Some(t) => RecordingTrack::parse(t).ok_or_else(|| {
            ApiError::bad_field("/recording_track", format!("{t:?} is not both, inbound or outbound"))
        })?,
    };
    let play_beep = match body.get("play_beep") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(other) => {
            return Err(ApiError::bad_field("/play_beep", format!("play_beep must be a boolean, not {other}")));
        }
    };
    let seconds = |key: &str| -> Result<Option<std::time::Duration>, ApiError> {
        let bad =
            || ApiError::bad_field(&format!("/{key}"), format!("{key} must be a whole number of seconds, 0 to 14400"));
        match body.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => {
                let s = n.as_u64().filter(|s| *s <= MAX_RECORDING_SECS).ok_or_else(bad)?;
                Ok((s > 0).then(|| std::time::Duration::from_secs(s)))
            }
            Some(_) => Err(bad()),
        }
    };
    let max_length = seconds("max_length")?;
    let timeout = seconds("timeout_secs")?;
    Ok(StartOptions { channels, format, track, max_length, timeout, play_beep })
}

/// Largest `max_length` / `timeout_secs`, seconds (Telnyx: 14400, four hours).
pub const MAX_RECORDING_SECS: u64 = 14_400;
