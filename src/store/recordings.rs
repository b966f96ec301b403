//! The recordings index: table `recordings`, one row per recording span (one WAV
//! file), keyed by `recording_id`. A field technician reads it with
//! `sqlite3 /var/lib/sipbridge/sipbridge.db 'SELECT recording_id, file_path, status FROM recordings'`.
//!
//! Rows are written from the `call.recording.saved` event itself
//! ([`NewRecording::of`], applied by `store::call_events` in the event's own
//! transaction, beside its outbox row), so an event that was emitted always has its
//! row. Field names follow Telnyx's recording object (API v2 "Retrieve a call
//! recording") and the event payload (PROTOCOLS.md §2): `call_control_id`,
//! `call_leg_id`, `call_session_id`, `channels` (`single`/`dual`),
//! `recording_started_at`, `recording_ended_at`, `duration_millis`; `trunk` is the
//! event's `connection_id`.
//!
//! A row is never removed: when its file goes, `status` becomes `deleted` and
//! `deleted_at` / `deleted_reason` say when and why — `api` (`DELETE
//! /v2/recordings/{id}`), `retention` (the `[recording]` retention and disk-quota
//! sweep, via [`mark_deleted_paths`]) or `missing` (the API found the file gone,
//! e.g. removed by hand, and marked it when it was asked for it).

use std::time::SystemTime;

use rusqlite::types::Value as SqlValue;
use rusqlite::{Connection, OptionalExtension, Row, params, params_from_iter};
use serde_json::{Map, Value};

use super::event::CallEvent;
use super::{Page, parse_timestamp, timestamp};

/// `recordings.status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordingStatus {
    /// The file was saved and is on disk (Telnyx `status: "completed"`).
    Completed,
    /// The file was deleted; the row stays as the trace.
    Deleted,
}

impl RecordingStatus {
    /// As stored and served: `completed` / `deleted`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Completed => "completed",
            Self::Deleted => "deleted",
        }
    }

    /// Parses [`RecordingStatus::as_str`]'s forms.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "completed" => Some(Self::Completed),
            "deleted" => Some(Self::Deleted),
            _ => None,
        }
    }
}

/// Why a recording's file is gone (`recordings.deleted_reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeletedReason {
    /// `DELETE /v2/recordings/{id}`.
    Api,
    /// The retention / disk-quota sweep of `[recording]`.
    Retention,
    /// Found missing on disk when the API looked (removed outside sipbridge).
    Missing,
    /// Uploaded to `[recording.upload]` and deleted locally (`delete_local_after`);
    /// the object stays in the bucket.
    Uploaded,
}

impl DeletedReason {
    /// As stored: `api`, `retention`, `missing`, `uploaded`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Api => "api",
            Self::Retention => "retention",
            Self::Missing => "missing",
            Self::Uploaded => "uploaded",
        }
    }
}

/// What `call.recording.saved` says about one recording span.
#[derive(Debug, Clone, PartialEq)]
pub struct NewRecording {
    /// sipbridge's `recording_id` (the row's key; the download route's file name).
    pub recording_id: String,
    /// Telnyx `call_control_id` of the recorded leg.
    pub call_control_id: String,
    /// Telnyx `call_leg_id`.
    pub call_leg_id: String,
    /// Telnyx `call_session_id`.
    pub call_session_id: String,
    /// `[[trunk]]` name (the event's `connection_id`), when the leg has one.
    pub trunk: Option<String>,
    /// The leg's Telnyx `from`.
    pub from: Option<String>,
    /// The leg's Telnyx `to`.
    pub to: Option<String>,
    /// `single` (mono mix) or `dual` (stereo: caller left, other side right).
    pub channels: String,
    /// Sample rate of the file in Hz (8000 or 16000).
    pub sample_rate_hz: Option<u32>,
    /// Absolute path of the WAV file on the box.
    pub file_path: String,
    /// File size in bytes.
    pub size_bytes: Option<u64>,
    /// SHA-256 of the file, lowercase hex.
    pub sha256: Option<String>,
    /// Wall-clock time of the first frame.
    pub recording_started_at: SystemTime,
    /// Wall-clock time of the last frame.
    pub recording_ended_at: SystemTime,
    /// Audio length in milliseconds.
    pub duration_millis: u64,
    /// `recording_stop_reason` when the span stopped early (`disk_full`, ...).
    pub stop_reason: Option<String>,
    /// When the recording was saved: the event's `occurred_at` (Telnyx `created_at`).
    pub created_at: SystemTime,
}

fn text(p: &Map<String, Value>, key: &str) -> Option<String> {
    match p.get(key)? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn number(p: &Map<String, Value>, key: &str) -> Option<u64> {
    match p.get(key)? {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

impl NewRecording {
    /// The index row of a `call.recording.saved` event (payload fields of
    /// `record::event::recording_saved_fields` plus the call's common fields);
    /// `None` for other events or when `recording_id`, `file_path` or a call id is
    /// missing. Missing times fall back to the event's `occurred_at`.
    pub fn of(event: &CallEvent) -> Option<Self> {
        if event.event_type != "call.recording.saved" {
            return None;
        }
        let p = &event.payload;
        let time = |key: &str| p.get(key).and_then(Value::as_str).and_then(parse_timestamp);
        let started = time("recording_started_at").unwrap_or(event.occurred_at);
        let ended = time("recording_ended_at").unwrap_or(event.occurred_at);
        let duration_millis = number(p, "duration_millis")
            .unwrap_or_else(|| ended.duration_since(started).map_or(0, |d| d.as_millis() as u64));
        Some(Self {
            recording_id: text(p, "recording_id")?,
            call_control_id: text(p, "call_control_id")?,
            call_leg_id: text(p, "call_leg_id")?,
            call_session_id: text(p, "call_session_id").or_else(|| event.call_session_id.clone())?,
            trunk: text(p, "connection_id"),
            from: text(p, "from"),
            to: text(p, "to"),
            channels: match p.get("channels").and_then(Value::as_str) {
                Some("single") => "single".into(),
                _ => "dual".into(),
            },
            sample_rate_hz: number(p, "sample_rate").and_then(|n| u32::try_from(n).ok()),
            file_path: text(p, "file_path")?,
            size_bytes: number(p, "size_bytes"),
            sha256: text(p, "sha256"),
            recording_started_at: started,
            recording_ended_at: ended,
            duration_millis,
            stop_reason: text(p, "recording_stop_reason"),
            created_at: event.occurred_at,
        })
    }
}

/// One row of `recordings`, as read back.
#[derive(Debug, Clone, PartialEq)]
pub struct Recording {
    /// What the event said.
    pub saved: NewRecording,
    /// `completed` or `deleted`.
    pub status: RecordingStatus,
    /// Last change of the row (Telnyx `updated_at`).
    pub updated_at: SystemTime,
    /// When the file was deleted.
    pub deleted_at: Option<SystemTime>,
    /// Why: `api`, `retention` or `missing`.
    pub deleted_reason: Option<String>,
}

/// Filters of `GET /v2/recordings` (Telnyx's `filter[...]` names); `None` = any.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RecordingFilter {
    /// `filter[call_session_id]`.
    pub call_session_id: Option<String>,
    /// `filter[call_leg_id]`.
    pub call_leg_id: Option<String>,
    /// `filter[call_control_id]`.
    pub call_control_id: Option<String>,
    /// `filter[connection_id]`: the trunk's name.
    pub connection_id: Option<String>,
    /// `filter[from]` (exact, case-sensitive).
    pub from: Option<String>,
    /// `filter[to]` (exact, case-sensitive).
    pub to: Option<String>,
    /// `filter[created_at][gte]`: saved at or after.
    pub created_at_gte: Option<SystemTime>,
    /// `filter[created_at][lte]`: saved at or before.
    pub created_at_lte: Option<SystemTime>,
    /// `filter[status]`.
    pub status: Option<RecordingStatus>,
}

const COLUMNS: &str = "recording_id, call_control_id, call_leg_id, call_session_id, trunk, from_number, to_number, \
     channels, sample_rate, file_path, size_bytes, sha256, recording_started_at, recording_ended_at, \
     duration_millis, stop_reason, created_at, status, updated_at, deleted_at, deleted_reason";

fn bad_column(i: usize, what: &str) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, what.to_string().into())
}

fn time_at(row: &Row<'_>, i: usize) -> rusqlite::Result<Option<SystemTime>> {
    let s: Option<String> = row.get(i)?;
    s.map(|s| parse_timestamp(&s).ok_or_else(|| bad_column(i, "not an RFC 3339 time"))).transpose()
}

fn required_time(row: &Row<'_>, i: usize) -> rusqlite::Result<SystemTime> {
    time_at(row, i)?.ok_or_else(|| bad_column(i, "time is empty"))
}

fn from_row(row: &Row<'_>) -> rusqlite::Result<Recording> {
    let status: String = row.get(17)?;
    Ok(Recording {
        saved: NewRecording {
            recording_id: row.get(0)?,
            call_control_id: row.get(1)?,
            call_leg_id: row.get(2)?,
            call_session_id: row.get(3)?,
            trunk: row.get(4)?,
            from: row.get(5)?,
            to: row.get(6)?,
            channels: row.get(7)?,
            sample_rate_hz: row.get(8)?,
            file_path: row.get(9)?,
            size_bytes: row.get(10)?,
            sha256: row.get(11)?,
            recording_started_at: required_time(row, 12)?,
            recording_ended_at: required_time(row, 13)?,
            duration_millis: row.get(14)?,
            stop_reason: row.get(15)?,
            created_at: required_time(row, 16)?,
        },
        status: RecordingStatus::parse(&status).ok_or_else(|| bad_column(17, "unknown status"))?,
        updated_at: required_time(row, 18)?,
        deleted_at: time_at(row, 19)?,
        deleted_reason: row.get(20)?,
    })
}

/// Adds the row of a saved recording; `false` when its `recording_id` is already
/// there (the event was applied before: the first one stands).
pub fn insert(conn: &Connection, r: &NewRecording, now: SystemTime) -> rusqlite::Result<bool> {
    super::execute(
        conn,
        "INSERT INTO recordings (recording_id, call_control_id, call_leg_id, call_session_id, trunk, from_number, \
         to_number, channels, sample_rate, file_path, size_bytes, sha256, recording_started_at, recording_ended_at, \
         duration_millis, stop_reason, created_at, status, updated_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, 'completed', ?18) \
         ON CONFLICT (recording_id) DO NOTHING",
        params![
            r.recording_id,
            r.call_control_id,
            r.call_leg_id,
            r.call_session_id,
            r.trunk,
            r.from,
            r.to,
            r.channels,
            r.sample_rate_hz,
            r.file_path,
            r.size_bytes,
            r.sha256,
            timestamp(r.recording_started_at),
            timestamp(r.recording_ended_at),
            r.duration_millis,
            r.stop_reason,
            timestamp(r.created_at),
            timestamp(now),
        ],
    )
    .map(|n| n == 1)
}

/// Reads one recording.
pub fn get(conn: &Connection, recording_id: &str) -> rusqlite::Result<Option<Recording>> {
    conn.query_row(&format!("SELECT {COLUMNS} FROM recordings WHERE recording_id = ?1"), [recording_id], from_row)
        .optional()
}

/// One page of the recordings matching `filter`, newest (`created_at`) first, and
/// the number of all matching rows.
pub fn list(conn: &Connection, filter: &RecordingFilter, page: Page) -> rusqlite::Result<(Vec<Recording>, u64)> {
    let mut clauses: Vec<&str> = Vec::new();
    let mut values: Vec<SqlValue> = Vec::new();
    let mut eq = |clause: &'static str, v: &Option<String>| {
        if let Some(v) = v {
            clauses.push(clause);
            values.push(SqlValue::Text(v.clone()));
        }
    };
    eq("call_session_id = ?", &filter.call_session_id);
    eq("call_leg_id = ?", &filter.call_leg_id);
    eq("call_control_id = ?", &filter.call_control_id);
    eq("trunk = ?", &filter.connection_id);
    eq("from_number = ?", &filter.from);
    eq("to_number = ?", &filter.to);
    eq("created_at >= ?", &filter.created_at_gte.map(timestamp));
    eq("created_at <= ?", &filter.created_at_lte.map(timestamp));
    eq("status = ?", &filter.status.map(|s| s.as_str().to_string()));
    let filtered = if clauses.is_empty() { String::new() } else { format!(" WHERE {}", clauses.join(" AND ")) };
    let total: u64 =
        conn.query_row(&format!("SELECT count(*) FROM recordings{filtered}"), params_from_iter(values.iter()), |r| {
            r.get(0)
        })?;
    values.push(SqlValue::Integer(i64::from(page.size)));
    values.push(SqlValue::Integer(page.offset()));
    let rows = conn
        .prepare(&format!(
            "SELECT {COLUMNS} FROM recordings{filtered} ORDER BY created_at DESC, recording_id LIMIT ? OFFSET ?"
        ))?
        .query_map(params_from_iter(values.iter()), from_row)?
        .collect::<Result<Vec<_>, _>>()?;
    Ok((rows, total))
}

/// The recording ids of each of `call_leg_ids`, in recording order:
/// `(call_leg_id, recording_id)` pairs.
pub fn ids_of_legs(conn: &Connection, call_leg_ids: &[&str]) -> rusqlite::Result<Vec<(String, String)>> {
    let legs = Value::from(call_leg_ids.to_vec()).to_string();
    conn.prepare(
        "SELECT call_leg_id, recording_id FROM recordings \
         WHERE call_leg_id IN (SELECT value FROM json_each(?1)) ORDER BY recording_started_at, recording_id",
    )?
    .query_map([legs], |r| Ok((r.get(0)?, r.get(1)?)))?
    .collect()
}

/// Marks a recording's file deleted at `at` for `reason`; `false` when the id is
/// unknown or already marked (the first deletion stands).
pub fn mark_deleted(
    conn: &Connection,
    recording_id: &str,
    at: SystemTime,
    reason: DeletedReason,
) -> rusqlite::Result<bool> {
    super::execute(
        conn,
        "UPDATE recordings SET status = 'deleted', deleted_at = ?2, deleted_reason = ?3, updated_at = ?2 \
         WHERE recording_id = ?1 AND status <> 'deleted'",
        params![recording_id, timestamp(at), reason.as_str()],
    )
    .map(|n| n == 1)
}

/// Marks every recording whose `file_path` is one of `paths` deleted (the
/// retention sweep's report); returns how many rows changed.
pub fn mark_deleted_paths(
    conn: &Connection,
    paths: &[String],
    at: SystemTime,
    reason: DeletedReason,
) -> rusqlite::Result<usize> {
    let mut stmt = conn.prepare(
        "UPDATE recordings SET status = 'deleted', deleted_at = ?2, deleted_reason = ?3, updated_at = ?2 \
         WHERE file_path = ?1 AND status <> 'deleted'",
    )?;
    let at = timestamp(at);
    let mut n = 0;
    for p in paths {
        n += stmt.execute(params![p, at, reason.as_str()])?;
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;
    use serde_json::json;
    use std::time::{Duration, UNIX_EPOCH};

    fn at(s: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_micros(1_800_000_000_000_000 + s * 1_000_000 + 42)
    }

    fn saved(id: &str, session: &str, leg: &str, trunk: &str, created: u64) -> CallEvent {
        let p = json!({
            "call_control_id": format!("v3:{leg}"),
            "call_leg_id": leg,
            "call_session_id": session,
            "connection_id": trunk,
            "from": "+14155550123",
            "to": "+13125550100",
            "recording_id": id,
            "channels": "dual",
            "recording_started_at": humantime::format_rfc3339_micros(at(created - 10)).to_string(),
            "recording_ended_at": humantime::format_rfc3339_micros(at(created)).to_string(),
            "duration_millis": 10_000,
            "size_bytes": 320_044,
            "sha256": "ab".repeat(32),
            "file_path": format!("/rec/{id}.wav"),
            "sample_rate": 8000,
        });
        let mut e = CallEvent::new("call.recording.saved", Some(session.into()), p.as_object().unwrap().clone());
        e.occurred_at = at(created);
        e
    }

    #[test]
    fn an_event_becomes_a_row_once() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        let c = s.conn();
        let e = saved("rec-1", "sess-1", "leg-1", "pbx", 100);
        let r = NewRecording::of(&e).unwrap();
        assert!(insert(c, &r, at(101)).unwrap());
        assert!(!insert(c, &r, at(102)).unwrap(), "the same recording_id twice");
        let back = get(c, "rec-1").unwrap().unwrap();
        assert_eq!(back.saved, r);
        assert_eq!(back.saved.recording_started_at, at(90));
        assert_eq!(back.saved.trunk.as_deref(), Some("pbx"));
        assert_eq!(back.saved.sample_rate_hz, Some(8000));
        assert_eq!((back.status, back.updated_at, back.deleted_at), (RecordingStatus::Completed, at(101), None));
        assert!(get(c, "nope").unwrap().is_none());
        // Other events, or a saved event without an id or a file, make no row.
        assert!(NewRecording::of(&CallEvent::new("call.hangup", None, e.payload.clone())).is_none());
        let mut no_file = e.clone();
        no_file.payload.remove("file_path");
        assert!(NewRecording::of(&no_file).is_none());
    }

    #[test]
    fn filters_pages_and_deletions() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        let c = s.conn();
        for (i, (session, trunk)) in
            [("s1", "pbx"), ("s1", "pbx"), ("s2", "carrier"), ("s3", "pbx"), ("s3", "pbx")].into_iter().enumerate()
        {
            let e = saved(&format!("rec-{i}"), session, &format!("leg-{session}"), trunk, 100 + i as u64 * 10);
            insert(c, &NewRecording::of(&e).unwrap(), at(200)).unwrap();
        }
        let ids = |(rows, _): (Vec<Recording>, u64)| rows.into_iter().map(|r| r.saved.recording_id).collect::<Vec<_>>();
        let all = Page { number: 1, size: 20 };
        assert_eq!(
            ids(list(c, &RecordingFilter::default(), all).unwrap()),
            ["rec-4", "rec-3", "rec-2", "rec-1", "rec-0"]
        );
        let f = RecordingFilter { call_session_id: Some("s1".into()), ..Default::default() };
        assert_eq!(ids(list(c, &f, all).unwrap()), ["rec-1", "rec-0"]);
        let f = RecordingFilter { connection_id: Some("pbx".into()), ..Default::default() };
        let (rows, total) = list(c, &f, Page { number: 2, size: 3 }).unwrap();
        assert_eq!((rows.len(), total), (1, 4), "page 2 of 3-row pages: the 4th pbx recording");
        assert_eq!(rows[0].saved.recording_id, "rec-0");
        let f = RecordingFilter { created_at_gte: Some(at(110)), created_at_lte: Some(at(130)), ..Default::default() };
        assert_eq!(ids(list(c, &f, all).unwrap()), ["rec-3", "rec-2", "rec-1"], "both bounds inclusive");
        let f = RecordingFilter {
            call_leg_id: Some("leg-s2".into()),
            to: Some("+13125550100".into()),
            ..Default::default()
        };
        assert_eq!(ids(list(c, &f, all).unwrap()), ["rec-2"]);

        assert!(mark_deleted(c, "rec-2", at(300), DeletedReason::Api).unwrap());
        assert!(!mark_deleted(c, "rec-2", at(301), DeletedReason::Missing).unwrap(), "the first deletion stands");
        let paths = vec!["/rec/rec-0.wav".to_string(), "/rec/rec-2.wav".into(), "/rec/other.wav".into()];
        assert_eq!(mark_deleted_paths(c, &paths, at(400), DeletedReason::Retention).unwrap(), 1);
        let r2 = get(c, "rec-2").unwrap().unwrap();
        assert_eq!(
            (r2.status, r2.deleted_at, r2.deleted_reason.as_deref()),
            (RecordingStatus::Deleted, Some(at(300)), Some("api"))
        );
        let r0 = get(c, "rec-0").unwrap().unwrap();
        assert_eq!((r0.deleted_reason.as_deref(), r0.updated_at), (Some("retention"), at(400)));
        let f = RecordingFilter { status: Some(RecordingStatus::Completed), ..Default::default() };
        assert_eq!(ids(list(c, &f, all).unwrap()), ["rec-4", "rec-3", "rec-1"]);
        let legs = ids_of_legs(c, &["leg-s1", "leg-s3", "leg-none"]).unwrap();
        assert_eq!(legs.len(), 4);
        assert_eq!(legs[0], ("leg-s1".to_string(), "rec-0".to_string()), "in recording order");
    }
}
