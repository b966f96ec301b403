//! The recording upload queue: table `recording_uploads`, one row per recording to
//! ship to `[recording.upload]` (S3-compatible storage), keyed by `recording_id`.
//! A technician reads it with
//! `sqlite3 /var/lib/sipbridge/sipbridge.db 'SELECT recording_id, state, attempts, last_error FROM recording_uploads'`.
//!
//! A row is queued for every `completed` row of `recordings` that has none
//! ([`unqueued`] → [`enqueue`]), so a recording saved just before a crash or power
//! cut is still found and shipped after the restart. The uploader takes the row
//! that is due ([`next_due`]); a multipart upload's `UploadId` ([`set_upload_id`])
//! and each part's ETag ([`add_part`]) are committed as they happen, so an upload
//! cut off by a crash resumes at the next part. A failure keeps the row `pending`
//! with `last_error` and a later `next_attempt_at` ([`failed`]): rows are never
//! given up, whatever the backend's outage. [`pending_files`] is what the
//! retention sweep must not delete.
//!
//! Times are stored as in every table ([`super::timestamp`]).

use std::time::SystemTime;

use rusqlite::{Connection, OptionalExtension, Row, params};

use super::recordings::DeletedReason;
use super::{parse_timestamp, timestamp};

/// `recording_uploads.state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UploadState {
    /// Not uploaded yet (never tried, in progress, or failing and retried).
    Pending,
    /// The object is in the bucket.
    Done,
}

impl UploadState {
    /// As stored and served: `pending` / `done`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Done => "done",
        }
    }
}

/// One row of `recording_uploads`.
#[derive(Debug, Clone, PartialEq)]
pub struct Upload {
    /// The recording (`recordings.recording_id`).
    pub recording_id: String,
    /// The local WAV file.
    pub file_path: String,
    /// The bucket it goes to.
    pub bucket: String,
    /// Its object key in the bucket.
    pub object_key: String,
    /// `pending` or `done`.
    pub state: UploadState,
    /// S3 `UploadId` of the multipart upload in progress, if one was created.
    pub upload_id: Option<String>,
    /// ETags of the parts uploaded so far (part `i + 1` at index `i`).
    pub parts: Vec<String>,
    /// Failed attempts since queued.
    pub attempts: u32,
    /// Not tried again before this.
    pub next_attempt_at: SystemTime,
    /// Why the last attempt failed (the S3 error code and message).
    pub last_error: Option<String>,
    /// When the row was queued.
    pub queued_at: SystemTime,
    /// When the upload completed.
    pub uploaded_at: Option<SystemTime>,
    /// The object's URL without credentials (`<endpoint>/<bucket>/<key>` or
    /// `https://<bucket>.<endpoint host>/<key>`), once done.
    pub location: Option<String>,
    /// When the local file was deleted after the upload (`delete_local_after`).
    pub local_deleted_at: Option<SystemTime>,
}

/// A completed recording that has no queue row yet.
#[derive(Debug, Clone, PartialEq)]
pub struct Unqueued {
    /// `recording_id`.
    pub recording_id: String,
    /// The local WAV file.
    pub file_path: String,
    /// Telnyx `call_session_id`.
    pub call_session_id: String,
    /// Telnyx `call_control_id`.
    pub call_control_id: String,
    /// `[[trunk]]` name (`connection_id`).
    pub trunk: Option<String>,
    /// When the recording was saved.
    pub created_at: SystemTime,
}

/// The queue at a glance (`/readyz`, `/metrics`, `GET /v2/status`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QueueStatus {
    /// Rows not uploaded yet.
    pub pending: u64,
    /// Pending rows whose last attempt failed.
    pub failing: u64,
    /// Rows uploaded.
    pub done: u64,
    /// Queue time of the oldest pending row.
    pub oldest_pending: Option<SystemTime>,
    /// The most recent `last_error` among pending rows.
    pub last_error: Option<String>,
}

fn bad(i: usize, what: &str) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, what.to_string().into())
}

fn time_at(row: &Row<'_>, i: usize) -> rusqlite::Result<Option<SystemTime>> {
    let s: Option<String> = row.get(i)?;
    s.map(|s| parse_timestamp(&s).ok_or_else(|| bad(i, "not an RFC 3339 time"))).transpose()
}

const COLUMNS: &str = "recording_id, file_path, bucket, object_key, state, upload_id, parts, attempts, \
     next_attempt_at, last_error, queued_at, uploaded_at, location, local_deleted_at";

fn from_row(row: &Row<'_>) -> rusqlite::Result<Upload> {
    let state: String = row.get(4)?;
    let parts: String = row.get(6)?;
    Ok(Upload {
        recording_id: row.get(0)?,
        file_path: row.get(1)?,
        bucket: row.get(2)?,
        object_key: row.get(3)?,
        state: match state.as_str() {
            "pending" => UploadState::Pending,
            "done" => UploadState::Done,
            _ => return Err(bad(4, "unknown state")),
        },
        upload_id: row.get(5)?,
        parts: serde_json::from_str(&parts).map_err(|_| bad(6, "parts is not a JSON array of strings"))?,
        attempts: row.get(7)?,
        next_attempt_at: time_at(row, 8)?.ok_or_else(|| bad(8, "empty"))?,
        last_error: row.get(9)?,
        queued_at: time_at(row, 10)?.ok_or_else(|| bad(10, "empty"))?,
        uploaded_at: time_at(row, 11)?,
        location: row.get(12)?,
        local_deleted_at: time_at(row, 13)?,
    })
}

/// Up to `limit` completed recordings without a queue row, oldest first.
pub fn unqueued(conn: &Connection, limit: u32) -> rusqlite::Result<Vec<Unqueued>> {
    let mut stmt = conn.prepare_cached(
        "SELECT r.recording_id, r.file_path, r.call_session_id, r.call_control_id, r.trunk, r.created_at
         FROM recordings r LEFT JOIN recording_uploads u ON u.recording_id = r.recording_id
         WHERE u.recording_id IS NULL AND r.status = 'completed'
         ORDER BY r.created_at LIMIT ?1",
    )?;
    stmt.query_map([limit], |row| {
        Ok(Unqueued {
            recording_id: row.get(0)?,
            file_path: row.get(1)?,
            call_session_id: row.get(2)?,
            call_control_id: row.get(3)?,
            trunk: row.get(4)?,
            created_at: time_at(row, 5)?.ok_or_else(|| bad(5, "empty"))?,
        })
    })?
    .collect()
}

/// Queues `recording_id` for upload to `bucket`/`object_key`, due at once;
/// `false` when it is queued already.
pub fn enqueue(
    conn: &Connection,
    recording_id: &str,
    file_path: &str,
    bucket: &str,
    object_key: &str,
    now: SystemTime,
) -> rusqlite::Result<bool> {
    let t = timestamp(now);
    let n = conn.prepare_cached(
        "INSERT OR IGNORE INTO recording_uploads (recording_id, file_path, bucket, object_key, state, next_attempt_at, queued_at)
         VALUES (?1, ?2, ?3, ?4, 'pending', ?5, ?5)",
    )?
    .execute(params![recording_id, file_path, bucket, object_key, t])?;
    Ok(n == 1)
}

/// The pending row due first at `now` (oldest `next_attempt_at`), if any.
pub fn next_due(conn: &Connection, now: SystemTime) -> rusqlite::Result<Option<Upload>> {
    conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM recording_uploads WHERE state = 'pending' AND next_attempt_at <= ?1
         ORDER BY next_attempt_at, queued_at LIMIT 1"
    ))?
    .query_row([timestamp(now)], from_row)
    .optional()
}

/// When the next pending row is due (to sleep until then).
pub fn next_due_at(conn: &Connection) -> rusqlite::Result<Option<SystemTime>> {
    let s: Option<String> = conn
        .prepare_cached("SELECT min(next_attempt_at) FROM recording_uploads WHERE state = 'pending'")?
        .query_row([], |r| r.get(0))?;
    Ok(s.as_deref().and_then(parse_timestamp))
}

/// One row by `recording_id`.
pub fn get(conn: &Connection, recording_id: &str) -> rusqlite::Result<Option<Upload>> {
    conn.prepare_cached(&format!("SELECT {COLUMNS} FROM recording_uploads WHERE recording_id = ?1"))?
        .query_row([recording_id], from_row)
        .optional()
}

/// The rows of these recordings (those that have one), in no particular order.
pub fn get_many(conn: &Connection, recording_ids: &[String]) -> rusqlite::Result<Vec<Upload>> {
    let mut out = Vec::new();
    for id in recording_ids {
        if let Some(u) = get(conn, id)? {
            out.push(u);
        }
    }
    Ok(out)
}

/// Records the multipart `UploadId` (or forgets it with `None`, e.g. after the
/// server answered `NoSuchUpload`); the parts done so far are forgotten with it.
pub fn set_upload_id(conn: &Connection, recording_id: &str, upload_id: Option<&str>) -> rusqlite::Result<()> {
    conn.prepare_cached("UPDATE recording_uploads SET upload_id = ?2, parts = '[]' WHERE recording_id = ?1")?
        .execute(params![recording_id, upload_id])?;
    Ok(())
}

/// Records that part `part_number` (1-based) is uploaded with `etag`; the parts
/// before it must be recorded already.
pub fn add_part(conn: &Connection, recording_id: &str, part_number: u32, etag: &str) -> rusqlite::Result<()> {
    let parts: Option<String> = conn
        .prepare_cached("SELECT parts FROM recording_uploads WHERE recording_id = ?1")?
        .query_row([recording_id], |r| r.get(0))
        .optional()?;
    let mut parts: Vec<String> = parts.and_then(|p| serde_json::from_str(&p).ok()).unwrap_or_default();
    let i = part_number.saturating_sub(1) as usize;
    if i > parts.len() {
        return Err(bad(6, "a part before this one is not recorded"));
    }
    parts.truncate(i);
    parts.push(etag.to_string());
    let json = serde_json::to_string(&parts).map_err(|_| bad(6, "parts"))?;
    conn.prepare_cached("UPDATE recording_uploads SET parts = ?2 WHERE recording_id = ?1")?
        .execute(params![recording_id, json])?;
    Ok(())
}

/// A failed attempt: `error` kept, tried again at `next_attempt_at`.
pub fn failed(conn: &Connection, recording_id: &str, error: &str, next_attempt_at: SystemTime) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "UPDATE recording_uploads SET attempts = attempts + 1, last_error = ?2, next_attempt_at = ?3
         WHERE recording_id = ?1",
    )?
    .execute(params![recording_id, error, timestamp(next_attempt_at)])?;
    Ok(())
}

/// The upload completed: the object is at `location`.
pub fn done(conn: &Connection, recording_id: &str, location: &str, now: SystemTime) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "UPDATE recording_uploads SET state = 'done', uploaded_at = ?3, location = ?2, upload_id = NULL, last_error = NULL
         WHERE recording_id = ?1",
    )?
    .execute(params![recording_id, location, timestamp(now)])?;
    Ok(())
}

/// Local files not uploaded yet: the retention sweep keeps them.
pub fn pending_files(conn: &Connection) -> rusqlite::Result<Vec<String>> {
    conn.prepare_cached("SELECT file_path FROM recording_uploads WHERE state = 'pending'")?
        .query_map([], |r| r.get(0))?
        .collect()
}

/// Uploaded recordings whose local file is still there and that were uploaded
/// at or before `uploaded_before`: `(recording_id, file_path)`.
pub fn local_copies_uploaded_before(
    conn: &Connection,
    uploaded_before: SystemTime,
) -> rusqlite::Result<Vec<(String, String)>> {
    conn.prepare_cached(
        "SELECT recording_id, file_path FROM recording_uploads
         WHERE state = 'done' AND local_deleted_at IS NULL AND uploaded_at <= ?1",
    )?
    .query_map([timestamp(uploaded_before)], |r| Ok((r.get(0)?, r.get(1)?)))?
    .collect()
}

/// The local copy of an uploaded recording was deleted at `now`.
pub fn mark_local_deleted(conn: &Connection, recording_id: &str, now: SystemTime) -> rusqlite::Result<()> {
    conn.prepare_cached("UPDATE recording_uploads SET local_deleted_at = ?2 WHERE recording_id = ?1")?
        .execute(params![recording_id, timestamp(now)])?;
    Ok(())
}

/// The uploader deleted the local copy of an uploaded recording at `now`: the
/// queue row says when ([`mark_local_deleted`]) and the recordings index marks the
/// recording deleted with `deleted_reason = "uploaded"`, in one call.
///
/// Also over a `missing` mark: the API checks the files of the recordings it lists
/// and marks a file gone from disk `missing` ("removed outside sipbridge"); one
/// listed between the uploader's delete and this call was not missing, it was
/// uploaded, and the index says so. Another reason (`api`, `retention`) stays.
pub fn local_copy_deleted(conn: &Connection, recording_id: &str, now: SystemTime) -> rusqlite::Result<()> {
    mark_local_deleted(conn, recording_id, now)?;
    conn.prepare_cached(
        "UPDATE recordings SET status = 'deleted', deleted_at = ?2, deleted_reason = ?3, updated_at = ?2
         WHERE recording_id = ?1 AND (status <> 'deleted' OR deleted_reason = ?4)",
    )?
    .execute(params![
        recording_id,
        timestamp(now),
        DeletedReason::Uploaded.as_str(),
        DeletedReason::Missing.as_str()
    ])?;
    Ok(())
}

/// Counts and the oldest pending row.
pub fn status(conn: &Connection) -> rusqlite::Result<QueueStatus> {
    let (pending, failing, done, oldest): (u64, u64, u64, Option<String>) = conn
        .prepare_cached(
            "SELECT coalesce(sum(state = 'pending'), 0), coalesce(sum(state = 'pending' AND attempts > 0), 0),
                    coalesce(sum(state = 'done'), 0), min(CASE WHEN state = 'pending' THEN queued_at END)
             FROM recording_uploads",
        )?
        .query_row([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?;
    let last_error: Option<String> = conn
        .prepare_cached(
            "SELECT last_error FROM recording_uploads WHERE state = 'pending' AND last_error IS NOT NULL
             ORDER BY next_attempt_at DESC LIMIT 1",
        )?
        .query_row([], |r| r.get(0))
        .optional()?;
    Ok(QueueStatus { pending, failing, done, oldest_pending: oldest.as_deref().and_then(parse_timestamp), last_error })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;
    use std::time::Duration;

    fn saved(conn: &Connection, id: &str, path: &str) {
        conn.execute(
            "INSERT INTO recordings (recording_id, call_control_id, call_leg_id, call_session_id, channels, file_path,
                 recording_started_at, recording_ended_at, duration_millis, created_at, status, updated_at)
             VALUES (?1, 'cc', 'leg', 'sess', 'dual', ?2, ?3, ?3, 1000, ?3, 'completed', ?3)",
            params![id, path, timestamp(SystemTime::now())],
        )
        .unwrap();
    }

    #[test]
    fn a_local_copy_deleted_after_its_upload_is_marked_uploaded_also_if_the_api_saw_it_missing_first() {
        use crate::store::recordings;
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let c = store.conn();
        let now = SystemTime::now();
        for id in ["r1", "r2", "r3"] {
            saved(c, id, &format!("/rec/{id}.wav"));
            enqueue(c, id, &format!("/rec/{id}.wav"), "bkt", &format!("box/{id}.wav"), now).unwrap();
            done(c, id, &format!("http://s3/bkt/box/{id}.wav"), now).unwrap();
        }
        // r2: GET /v2/recordings ran between the uploader's remove_file and its mark,
        // found no file and marked it missing. r3 was deleted over the API before.
        recordings::mark_deleted(c, "r2", now, DeletedReason::Missing).unwrap();
        recordings::mark_deleted(c, "r3", now, DeletedReason::Api).unwrap();
        for id in ["r1", "r2", "r3"] {
            local_copy_deleted(c, id, now).unwrap();
        }
        let reason = |id: &str| recordings::get(c, id).unwrap().unwrap().deleted_reason;
        assert_eq!(reason("r1").as_deref(), Some("uploaded"));
        assert_eq!(reason("r2").as_deref(), Some("uploaded"), "the uploader deleted it: not missing");
        assert_eq!(reason("r3").as_deref(), Some("api"), "an earlier deletion keeps its reason");
        assert!(local_copies_uploaded_before(c, now).unwrap().is_empty());
        assert_eq!(get(c, "r2").unwrap().unwrap().local_deleted_at.map(timestamp), Some(timestamp(now)));
    }

    #[test]
    fn a_recording_is_queued_once_resumed_part_by_part_and_kept_from_the_sweep_until_done() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let c = store.conn();
        saved(c, "r1", "/rec/a.wav");
        saved(c, "r2", "/rec/b.wav");
        let now = SystemTime::now();
        let todo = unqueued(c, 10).unwrap();
        assert_eq!(todo.len(), 2);
        assert!(enqueue(c, "r1", "/rec/a.wav", "bkt", "box/r1.wav", now).unwrap());
        assert!(!enqueue(c, "r1", "/rec/a.wav", "bkt", "box/r1.wav", now).unwrap(), "queued once");
        assert_eq!(unqueued(c, 10).unwrap().len(), 1);
        assert_eq!(pending_files(c).unwrap(), vec!["/rec/a.wav".to_string()]);

        let due = next_due(c, now).unwrap().expect("due at once");
        assert_eq!((due.recording_id.as_str(), due.state), ("r1", UploadState::Pending));
        set_upload_id(c, "r1", Some("up-1")).unwrap();
        add_part(c, "r1", 1, "\"e1\"").unwrap();
        add_part(c, "r1", 2, "\"e2\"").unwrap();
        assert!(add_part(c, "r1", 4, "\"e4\"").is_err(), "no gap");
        let row = get(c, "r1").unwrap().unwrap();
        assert_eq!((row.upload_id.as_deref(), row.parts.len()), (Some("up-1"), 2));

        failed(c, "r1", "503 SlowDown", now + Duration::from_secs(60)).unwrap();
        assert!(next_due(c, now).unwrap().is_none(), "not before next_attempt_at");
        let st = status(c).unwrap();
        assert_eq!((st.pending, st.failing, st.done), (1, 1, 0));
        assert_eq!(st.last_error.as_deref(), Some("503 SlowDown"));
        assert!(next_due(c, now + Duration::from_secs(61)).unwrap().is_some());
        assert_eq!(get(c, "r1").unwrap().unwrap().parts.len(), 2, "parts survive a failure");

        done(c, "r1", "http://s3/bkt/box/r1.wav", now).unwrap();
        assert!(pending_files(c).unwrap().is_empty());
        assert_eq!(local_copies_uploaded_before(c, now).unwrap().len(), 1);
        mark_local_deleted(c, "r1", now).unwrap();
        assert!(local_copies_uploaded_before(c, now).unwrap().is_empty());
        let st = status(c).unwrap();
        assert_eq!((st.pending, st.done, st.last_error), (0, 1, None));
    }
}
