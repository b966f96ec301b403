//! The SQLite store at `{data_dir}/sipbridge.db`: one file a field technician can
//! open with `sqlite3`. WAL journal, `synchronous=FULL` (a committed transaction
//! survives a power cut), versioned migrations applied at startup.
//!
//! Owns the schema and the connection; later modules (call records, webhook outbox)
//! add their tables as new entries of [`MIGRATIONS`], never by editing old ones.

use std::path::{Path, PathBuf};

use rusqlite::Connection;

/// Schema migrations; entry `i` moves the schema from version `i` to `i + 1`
/// (`PRAGMA user_version`).
pub const MIGRATIONS: &[&str] = &[
    // 1: when and which build the daemon started; a technician's first question.
    "CREATE TABLE daemon_starts (
        started_at TEXT NOT NULL,   -- RFC 3339 UTC
        version    TEXT NOT NULL,
        pid        INTEGER NOT NULL
    );",
];

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
}

/// An open, migrated store.
pub struct Store {
    conn: Connection,
    path: PathBuf,
}

impl Store {
    /// Opens (creating if needed) `{data_dir}/sipbridge.db` and applies migrations.
    pub fn open(data_dir: &Path) -> Result<Self, StoreError> {
        let path = data_dir.join("sipbridge.db");
        let err = |source| StoreError::Sqlite { path: path.clone(), source };
        let mut conn = Connection::open(&path).map_err(err)?;
        conn.pragma_update(None, "journal_mode", "WAL").map_err(err)?;
        conn.pragma_update(None, "synchronous", "FULL").map_err(err)?;
        conn.pragma_update(None, "foreign_keys", "ON").map_err(err)?;
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
