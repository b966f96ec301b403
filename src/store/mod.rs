//! The SQLite store at `{data_dir}/sipbridge.db`: one file a field technician can
//! open with `sqlite3`. WAL journal, `synchronous=FULL` (a committed transaction
//! survives a power cut), versioned migrations applied at startup.
//!
//! Owns the schema and the connection. Tables: `daemon_starts`, `calls` (one row per
//! call leg, [`calls`], written from the call events themselves ([`event`],
//! [`call_events`]), with the leg's jitter/loss series in `quality_samples`),
//! `webhook_outbox` (durable webhook events, [`outbox`]), `recordings` (one row
//! per recording file, also written from the events, [`recordings`]) and
//! `recording_uploads` (the durable upload queue of `[recording.upload]`, [`uploads`]).
//! New tables come as new entries of [`MIGRATIONS`], never by editing old ones.
//!
//! At run time one thread owns the connection and does every write ([`writer`]):
//! callers send it jobs and await the commit. Power-cut settings (see
//! `docs/webhooks.md`): `journal_mode=WAL` + `synchronous=FULL` fsync the WAL at
//! every commit, so a transaction reported committed survives a power cut, and the
//! file is never corrupted by one (only transactions not yet reported are lost).
//!
//! Times are TEXT, RFC 3339 UTC with exactly six fractional digits
//! ([`timestamp`]), so they read well in `sqlite3` and sort correctly as text.

pub mod call_events;
pub mod calls;
pub mod event;
pub mod outbox;
pub mod recordings;
pub mod uploads;
pub mod writer;

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::Connection;

pub use writer::{Committed, StoreHandle};

/// File name of the store inside `data_dir`.
pub const DB_FILE: &str = "sipbridge.db";

/// The writer's SQLite page cache, as `PRAGMA cache_size` takes it (negative:
/// KiB). SQLite's default, 2 000 KiB, filled with the records of the first few
/// hundred calls and so grew the daemon by ~1.9 KiB per call up to that point
/// (heaptrack, 400 relayed calls, issue 20); the writer appends, and the B-trees'
/// inner pages it walks fit in 512 KiB.
const PAGE_CACHE_KIB: i64 = -512;

/// Schema migrations; entry `i` moves the schema from version `i` to `i + 1`
/// (`PRAGMA user_version`).
pub const MIGRATIONS: &[&str] = &[
    // 1: when and which build the daemon started; a technician's first question.
    "CREATE TABLE daemon_starts (
        started_at TEXT NOT NULL,   -- RFC 3339 UTC
        version    TEXT NOT NULL,
        pid        INTEGER NOT NULL
    );",
    // 2: call records, one row per call leg (store::calls).
    "CREATE TABLE calls (
        call_leg_id      TEXT PRIMARY KEY,  -- Telnyx call_leg_id
        call_control_id  TEXT NOT NULL,
        call_session_id  TEXT NOT NULL,     -- shared by the legs of one call
        trunk            TEXT,              -- [[trunk]] name = webhook connection_id
        direction        TEXT NOT NULL CHECK (direction IN ('incoming', 'outgoing')),
        from_number      TEXT NOT NULL,     -- Telnyx `from` (number or SIP URI)
        to_number        TEXT NOT NULL,     -- Telnyx `to`
        route            TEXT,              -- [[route]] name
        agent            TEXT,              -- [[agent]] name
        state            TEXT NOT NULL CHECK (state IN ('initiated', 'answered', 'ended')),
        start_time       TEXT NOT NULL,
        answer_time      TEXT,
        end_time         TEXT,
        hangup_cause     TEXT,              -- normal_clearing, user_busy, ..., unspecified
        hangup_source    TEXT,              -- caller | callee | unknown
        sip_hangup_cause TEXT,              -- SIP status code as text
        quality_stats    TEXT,              -- JSON, Telnyx call_quality_stats shape
        recording_paths  TEXT NOT NULL DEFAULT '[]',  -- JSON array of file paths
        updated_at       TEXT NOT NULL
    );
    CREATE INDEX calls_session ON calls (call_session_id);
    CREATE INDEX calls_start ON calls (start_time);
    CREATE INDEX calls_open ON calls (call_leg_id) WHERE end_time IS NULL;",
    // 3: the webhook outbox (store::outbox): an event counts as emitted once its row
    // is committed; rows are kept after delivery for a while and after dead-lettering
    // until someone requeues them.
    "CREATE TABLE webhook_outbox (
        seq              INTEGER PRIMARY KEY AUTOINCREMENT,  -- emission order
        event_id         TEXT NOT NULL UNIQUE,   -- data.id (UUID v4)
        event_type       TEXT NOT NULL,          -- data.event_type
        call_session_id  TEXT,                   -- one session's events go out in seq order
        occurred_at      TEXT NOT NULL,          -- data.occurred_at
        body             TEXT NOT NULL,          -- JSON of the envelope's `data`; `meta` is added per attempt
        queued_at        TEXT NOT NULL,          -- emitted or requeued; max_age counts from here
        attempts         INTEGER NOT NULL DEFAULT 0,  -- POSTs so far (= meta.attempt of the last one)
        failures         INTEGER NOT NULL DEFAULT 0,  -- failed POSTs since queued_at
        next_attempt_at  TEXT NOT NULL,
        target           TEXT,                   -- URL of the last POST
        last_error       TEXT,
        delivered_at     TEXT,
        dead_at          TEXT                    -- dead-lettered: kept until `sipbridge webhooks retry-dead`
    );
    CREATE INDEX webhook_outbox_pending ON webhook_outbox (next_attempt_at)
        WHERE delivered_at IS NULL AND dead_at IS NULL;
    CREATE INDEX webhook_outbox_session ON webhook_outbox (call_session_id, seq)
        WHERE delivered_at IS NULL AND dead_at IS NULL;
    CREATE INDEX webhook_outbox_queued ON webhook_outbox (queued_at)
        WHERE delivered_at IS NULL AND dead_at IS NULL;
    CREATE INDEX webhook_outbox_dead ON webhook_outbox (dead_at) WHERE dead_at IS NOT NULL;
    CREATE INDEX webhook_outbox_delivered ON webhook_outbox (delivered_at) WHERE delivered_at IS NOT NULL;
    CREATE VIEW webhook_outbox_state AS
        SELECT seq, event_id, event_type, call_session_id,
               CASE WHEN delivered_at IS NOT NULL THEN 'delivered'
                    WHEN dead_at IS NOT NULL THEN 'dead'
                    ELSE 'pending' END AS state,
               attempts, next_attempt_at, target, last_error, queued_at, delivered_at, dead_at
        FROM webhook_outbox;",
    // 4: call-record facts taken from call events (store::call_events).
    "ALTER TABLE calls ADD COLUMN custom_headers TEXT;      -- JSON [{name, value}]: the INVITE's X- headers
    ALTER TABLE calls ADD COLUMN stream_url TEXT;           -- agent WebSocket URL (streaming.started), no query
    ALTER TABLE calls ADD COLUMN bridged_call_leg_id TEXT;  -- the other leg of a bridge (call.bridged)
    ALTER TABLE calls ADD COLUMN bridged_call_control_id TEXT;",
    // 5: the recordings index (store::recordings), one row per recording file,
    // written with its call.recording.saved event; rows stay when files go.
    "CREATE TABLE recordings (
        recording_id         TEXT PRIMARY KEY,  -- call.recording.saved recording_id
        call_control_id      TEXT NOT NULL,
        call_leg_id          TEXT NOT NULL,
        call_session_id      TEXT NOT NULL,
        trunk                TEXT,              -- [[trunk]] name = connection_id
        from_number          TEXT,              -- the leg's Telnyx `from`
        to_number            TEXT,              -- the leg's Telnyx `to`
        channels             TEXT NOT NULL CHECK (channels IN ('single', 'dual')),
        sample_rate          INTEGER,           -- Hz
        file_path            TEXT NOT NULL,     -- absolute path of the WAV file
        size_bytes           INTEGER,
        sha256               TEXT,              -- lowercase hex
        recording_started_at TEXT NOT NULL,
        recording_ended_at   TEXT NOT NULL,
        duration_millis      INTEGER NOT NULL,
        stop_reason          TEXT,              -- recording_stop_reason (disk_full, ...)
        created_at           TEXT NOT NULL,     -- occurred_at of call.recording.saved
        status               TEXT NOT NULL CHECK (status IN ('completed', 'deleted')),
        updated_at           TEXT NOT NULL,
        deleted_at           TEXT,              -- when the file was deleted
        deleted_reason       TEXT               -- api | retention | missing
    );
    CREATE INDEX recordings_created ON recordings (created_at);
    CREATE INDEX recordings_session ON recordings (call_session_id);
    CREATE INDEX recordings_leg ON recordings (call_leg_id);
    CREATE INDEX recordings_control ON recordings (call_control_id);
    CREATE INDEX recordings_file ON recordings (file_path);",
    // 6: per-call webhook URLs (Telnyx `webhook_url` on dial/transfer).
    "ALTER TABLE webhook_outbox ADD COLUMN webhook_url TEXT;  -- NULL: [webhooks] url",
    // 7: the recording upload queue (store::uploads), one row per recording to ship
    // to `[recording.upload]`; a multipart upload's parts are committed one by one.
    "CREATE TABLE recording_uploads (
        recording_id     TEXT PRIMARY KEY,   -- recordings.recording_id
        file_path        TEXT NOT NULL,      -- the local WAV file
        bucket           TEXT NOT NULL,
        object_key       TEXT NOT NULL,
        state            TEXT NOT NULL CHECK (state IN ('pending', 'done')),
        upload_id        TEXT,               -- S3 UploadId of a multipart upload in progress
        parts            TEXT NOT NULL DEFAULT '[]',  -- JSON array: ETags of the parts done, in order
        attempts         INTEGER NOT NULL DEFAULT 0,  -- failed attempts since queued
        next_attempt_at  TEXT NOT NULL,
        last_error       TEXT,
        queued_at        TEXT NOT NULL,
        uploaded_at      TEXT,
        location         TEXT,               -- object URL (without credentials) once done
        local_deleted_at TEXT                -- the local file was deleted after the upload
    );
    CREATE INDEX recording_uploads_due ON recording_uploads (next_attempt_at) WHERE state = 'pending';
    CREATE INDEX recording_uploads_file ON recording_uploads (file_path);",
    // 8: a leg's jitter and loss over time (call::quality_series), written with its
    // call.hangup from the event's record extras (never part of the webhook).
    "ALTER TABLE calls ADD COLUMN quality_samples TEXT;  -- JSON {interval: 'rtcp', points: [{t_ms, jitter_ms, loss_percent, packets}]}",
];

/// A page of a listing, Telnyx's `page[number]` (from 1) and `page[size]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    /// 1-based page number.
    pub number: u32,
    /// Rows per page (at least 1).
    pub size: u32,
}

impl Page {
    /// Rows before this page (SQL `OFFSET`).
    pub fn offset(self) -> i64 {
        i64::from(self.number.max(1) - 1) * i64::from(self.size)
    }

    /// Telnyx's `meta` object for this page of `total` rows:
    /// `{"page_number", "page_size", "total_pages", "total_results"}`.
    pub fn meta(self, total: u64) -> serde_json::Value {
        let size = u64::from(self.size.max(1));
        serde_json::json!({
            "page_number": self.number,
            "page_size": self.size,
            "total_pages": total.div_ceil(size),
            "total_results": total,
        })
    }
}

/// Renders a time as stored: RFC 3339 UTC with exactly six fractional digits
/// (`2026-11-22T08:30:00.123456Z`), the form of Telnyx's `occurred_at`. Times
/// before 1970 render as the epoch (the clock is not trusted to be sane).
pub fn timestamp(t: SystemTime) -> String {
    // humantime formats years up to 9999 only.
    const MAX: Duration = Duration::from_secs(253_402_300_799);
    let since = t.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO).min(MAX);
    humantime::format_rfc3339_micros(UNIX_EPOCH + since).to_string()
}

/// Parses a stored time (any RFC 3339 UTC form [`timestamp`] or `sqlite3` users
/// write); `None` when it is not one.
pub fn parse_timestamp(s: &str) -> Option<SystemTime> {
    humantime::parse_rfc3339_weak(s).ok()
}

/// A read-only connection to the existing store file `db` (a [`StoreHandle::path`]),
/// beside the writer thread (WAL lets readers run while it commits): for listings
/// that must not hold up the writer. Waits up to 5 s for a lock.
pub fn open_read_only(db: &Path) -> Result<Connection, StoreError> {
    if !db.exists() {
        return Err(StoreError::Missing { path: db.to_path_buf() });
    }
    let err = |source| StoreError::Sqlite { path: db.to_path_buf(), source };
    let conn = Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).map_err(err)?;
    conn.busy_timeout(Duration::from_secs(5)).map_err(err)?;
    Ok(conn)
}

/// Errors opening or migrating the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite failed.
    #[error("store {path}: {source}")]
    Sqlite {
        /// Database file.
        path: PathBuf,
        /// SQLite's error.
        source: rusqlite::Error,
    },
    /// The database was written by a newer sipbridge.
    #[error(
        "store {path} has schema version {found}, newer than this sipbridge knows ({known}); install the newer version or move the file away"
    )]
    TooNew {
        /// Database file.
        path: PathBuf,
        /// Version in the file.
        found: i64,
        /// Latest version this build knows.
        known: i64,
    },
    /// A batch of writes could not be committed (disk full, I/O error): none of its
    /// writes happened.
    #[error("store {path}: commit failed: {message}")]
    Commit {
        /// Database file.
        path: PathBuf,
        /// SQLite's error, rendered.
        message: String,
    },
    /// The writer thread is gone, or the job panicked (a bug, logged).
    #[error("store {path}: the store writer did not complete the job (stopped, or a bug: see the log)")]
    Closed {
        /// Database file.
        path: PathBuf,
    },
    /// `{data_dir}/sipbridge.db` does not exist (and was not to be created).
    #[error("store {path} does not exist (the daemon creates it at its first start)")]
    Missing {
        /// Database file.
        path: PathBuf,
    },
}

/// An open, migrated store (one connection). At run time hand it to
/// [`StoreHandle::start`], which moves it onto the writer thread.
pub struct Store {
    conn: Connection,
    path: PathBuf,
}

impl Store {
    /// Opens `{data_dir}/sipbridge.db` only if it exists (for command-line tools
    /// that must not create an empty store), then migrates it like [`Store::open`].
    pub fn open_existing(data_dir: &Path) -> Result<Self, StoreError> {
        let path = data_dir.join(DB_FILE);
        if !path.exists() {
            return Err(StoreError::Missing { path });
        }
        Self::open(data_dir)
    }

    /// Opens (creating if needed) `{data_dir}/sipbridge.db` and applies migrations.
    pub fn open(data_dir: &Path) -> Result<Self, StoreError> {
        let path = data_dir.join(DB_FILE);
        let err = |source| StoreError::Sqlite { path: path.clone(), source };
        let mut conn = Connection::open(&path).map_err(err)?;
        conn.pragma_update(None, "journal_mode", "WAL").map_err(err)?;
        conn.pragma_update(None, "synchronous", "FULL").map_err(err)?;
        conn.pragma_update(None, "foreign_keys", "ON").map_err(err)?;
        conn.pragma_update(None, "cache_size", PAGE_CACHE_KIB).map_err(err)?;
        // Every statement the writer runs stays prepared (`execute`, `prepare_cached`).
        conn.set_prepared_statement_cache_capacity(64);
        conn.busy_timeout(std::time::Duration::from_secs(5)).map_err(err)?;
        let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0)).map_err(err)?;
        let known = MIGRATIONS.len() as i64;
        if version > known {
            return Err(StoreError::TooNew { path, found: version, known });
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            let tx = conn.transaction().map_err(err)?;
            tx.execute_batch(sql).map_err(err)?;
            tx.pragma_update(None, "user_version", (i + 1) as i64).map_err(err)?;
            tx.commit().map_err(err)?;
        }
        Ok(Self { conn, path })
    }

    /// Path of the database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The connection, for code in this crate that runs outside the writer
    /// thread (command-line tools while the daemon may be running: WAL lets them).
    pub(crate) fn conn(&self) -> &Connection {
        &self.conn
    }

    /// The connection, mutably (transactions).
    pub(crate) fn conn_mut(&mut self) -> &mut Connection {
        &mut self.conn
    }

    /// Wraps an SQLite error with this store's path.
    pub(crate) fn err(&self, source: rusqlite::Error) -> StoreError {
        StoreError::Sqlite { path: self.path.clone(), source }
    }

    /// Schema version (`PRAGMA user_version`).
    pub fn schema_version(&self) -> Result<i64, StoreError> {
        self.conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(|source| StoreError::Sqlite { path: self.path.clone(), source })
    }

    /// Records a daemon start.
    pub fn record_start(&self, started_at: &str) -> Result<(), StoreError> {
        self.conn
            .execute(
                "INSERT INTO daemon_starts (started_at, version, pid) VALUES (?1, ?2, ?3)",
                (started_at, env!("CARGO_PKG_VERSION"), std::process::id()),
            )
            .map(|_| ())
            .map_err(|source| StoreError::Sqlite { path: self.path.clone(), source })
    }
}

/// Runs one statement through the connection's prepared-statement cache: the
/// writer runs the same dozen statements for every call, and parsing each anew was
/// ~8 % of the box's CPU per call set up (issue 19, `perf` of `scripts/bench-media`).
/// Same result as [`Connection::execute`]: the number of rows changed.
pub(crate) fn execute<P: rusqlite::Params>(conn: &Connection, sql: &str, params: P) -> rusqlite::Result<usize> {
    conn.prepare_cached(sql)?.execute(params)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrates_once_and_reopens() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        assert_eq!(s.schema_version().unwrap(), MIGRATIONS.len() as i64);
        s.record_start("2026-11-22T00:00:00Z").unwrap();
        drop(s);
        let s = Store::open(dir.path()).unwrap();
        let n: i64 = s.conn.query_row("SELECT count(*) FROM daemon_starts", [], |r| r.get(0)).unwrap();
        assert_eq!(n, 1);
        let mode: String = s.conn.pragma_query_value(None, "journal_mode", |r| r.get(0)).unwrap();
        assert_eq!(mode, "wal");
        let cache: i64 = s.conn.pragma_query_value(None, "cache_size", |r| r.get(0)).unwrap();
        assert_eq!(cache, PAGE_CACHE_KIB);
    }

    #[test]
    fn refuses_a_newer_schema() {
        let dir = tempfile::tempdir().unwrap();
        let conn = Connection::open(dir.path().join("sipbridge.db")).unwrap();
        conn.pragma_update(None, "user_version", 999).unwrap();
        drop(conn);
        assert!(matches!(Store::open(dir.path()), Err(StoreError::TooNew { found: 999, .. })));
    }
}
