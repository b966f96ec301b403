//! The store's single owner: one OS thread holds the SQLite connection and runs
//! every job (write or read) that the rest of the daemon sends it.
//!
//! rusqlite is blocking, so the connection lives on a dedicated thread, fed by a
//! channel. The thread takes every job that arrives within [`COMMIT_WINDOW`] of
//! the first (up to [`MAX_BATCH`]), runs them in one `BEGIN IMMEDIATE … COMMIT` transaction, each
//! inside its own savepoint, and only after the commit (one WAL fsync with
//! `synchronous=FULL`) answers each caller. So a caller whose future resolved with
//! `Ok` knows its write is on disk, and concurrent callers share one fsync (group
//! commit). A failing job rolls back to its savepoint and leaves the others intact;
//! a failing commit fails every job of the batch. Jobs run, commit and are answered
//! in submission order; [`StoreHandle::submit_then`] adds a hook that runs on this
//! thread right after the commit, in that order (the event bus publishes committed
//! events from it).
//!
//! Typed operations are added as `impl StoreHandle` blocks beside their SQL
//! (`store::calls`, `store::outbox`).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc;

use rusqlite::Connection;
use tokio::sync::oneshot;

use super::{Store, StoreError};

/// Most jobs committed in one transaction.
pub const MAX_BATCH: usize = 1024;

/// How long the writer gathers event jobs after the first before it commits them
/// together; a job someone waits on ([`StoreHandle::run`]: API reads, the webhook
/// worker) ends the wait. Each commit is a WAL write and an fsync. A call's events
/// come in bursts (both legs' `call.initiated`, `call.answered`, `call.bridged`
/// within a few ms) and calls arrive every few ms under load: committing each
/// burst alone made the store ~35 % of the box's CPU per call set up or torn
/// down, half of it in commits. Measured with `scripts/bench-media` (400 calls at
/// 100 calls/s): 4 ms took a relayed call's signalling from 2.1–2.6 to 1.8 ms,
/// 16 ms to 1.5 ms (issue 19). An event is durable (and delivered) at most this
/// much later; on an SD card it also means fewer flash writes.
pub const COMMIT_WINDOW: std::time::Duration = std::time::Duration::from_millis(16);

/// What a job hands back after running: called once the batch's fate is known,
/// with `Err(message)` when the commit failed.
type Completion = Box<dyn FnOnce(Result<(), &str>) + Send>;

/// One unit of work for the writer thread.
trait Job: Send {
    /// Runs inside the batch transaction; `true` when it succeeded (its savepoint
    /// is released), `false` when it failed (rolled back).
    fn run(self: Box<Self>, conn: &Connection) -> (bool, Completion);
    /// The batch could not start: tell the caller without running.
    fn fail(self: Box<Self>, message: &str);
    /// Someone is waiting for this job now ([`StoreHandle::run`]): its batch
    /// commits without waiting out [`COMMIT_WINDOW`].
    fn urgent(&self) -> bool;
}

/// Runs on the writer thread once a job's fate is known, before its caller learns it.
type After<R> = Box<dyn FnOnce(&Result<R, StoreError>) + Send>;

struct Task<F, R> {
    f: F,
    reply: oneshot::Sender<Result<R, StoreError>>,
    path: Arc<PathBuf>,
    after: Option<After<R>>,
    urgent: bool,
}

impl<F, R> Job for Task<F, R>
where
    R: Send + 'static,
    F: FnOnce(&Connection) -> rusqlite::Result<R> + Send + 'static,
{
    fn run(self: Box<Self>, conn: &Connection) -> (bool, Completion) {
        let Task { f, reply, path, after, .. } = *self;
        let result = f(conn);
        let ok = result.is_ok();
        let done: Completion = Box::new(move |commit| {
            let answer = match (commit, result) {
                (Err(message), _) => Err(StoreError::Commit { path: path.to_path_buf(), message: message.to_string() }),
                (Ok(()), Ok(r)) => Ok(r),
                (Ok(()), Err(source)) => Err(StoreError::Sqlite { path: path.to_path_buf(), source }),
            };
            if let Some(after) = after {
                after(&answer);
            }
            // The caller may have gone away (e.g. cancelled); the write stands.
            let _ = reply.send(answer);
        });
        (ok, done)
    }

    fn fail(self: Box<Self>, message: &str) {
        let answer = Err(StoreError::Commit { path: self.path.to_path_buf(), message: message.to_string() });
        if let Some(after) = self.after {
            after(&answer);
        }
        let _ = self.reply.send(answer);
    }

    fn urgent(&self) -> bool {
        self.urgent
    }
}

/// A cheap, cloneable handle to the store's writer thread. The thread ends (and
/// closes the connection) when the last handle is dropped.
#[derive(Clone)]
pub struct StoreHandle {
    jobs: mpsc::Sender<Box<dyn Job>>,
    path: Arc<PathBuf>,
}

impl StoreHandle {
    /// Moves an open store onto a new writer thread (`sipbridge-store`).
    pub fn start(store: Store) -> Result<Self, StoreError> {
        let path = Arc::new(store.path().to_path_buf());
        let (jobs, rx) = mpsc::channel::<Box<dyn Job>>();
        let thread_path = path.clone();
        std::thread::Builder::new()
            .name("sipbridge-store".into())
            .spawn(move || writer_loop(store, rx, &thread_path))
            .map_err(|e| StoreError::Commit {
                path: path.to_path_buf(),
                message: format!("cannot start the writer thread: {e}"),
            })?;
        Ok(Self { jobs, path })
    }

    /// Path of the database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` on the writer thread inside a transaction and resolves once that
    /// transaction is committed (durably: WAL fsync'd). `f`'s error rolls back `f`'s
    /// own writes only. Keep `f` short: it holds up every other writer.
    ///
    /// The caller waits: the batch this job lands in commits at once, without
    /// waiting out [`COMMIT_WINDOW`] for more jobs (API reads, the webhook
    /// worker's updates).
    pub async fn run<R, F>(&self, f: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&Connection) -> rusqlite::Result<R> + Send + 'static,
    {
        self.enqueue(f, None, true).await
    }

    /// Like [`StoreHandle::run`], but the job is queued *now*, before this returns
    /// (so jobs submitted one after another from one task run in that order, even
    /// from synchronous code); await the returned [`Committed`] to learn the result.
    /// Dropping it does not cancel the job. Its batch may wait up to
    /// [`COMMIT_WINDOW`] for more jobs before it commits.
    pub fn submit<R, F>(&self, f: F) -> Committed<R>
    where
        R: Send + 'static,
        F: FnOnce(&Connection) -> rusqlite::Result<R> + Send + 'static,
    {
        self.enqueue(f, None, false)
    }

    /// Like [`StoreHandle::submit`], and `after` runs on the writer thread as soon
    /// as the job's fate is known: after its transaction committed (`Ok`), or
    /// failed, before the returned [`Committed`] resolves. Jobs' `after`s run in
    /// submission order, so it can publish results in that order (the event bus
    /// broadcasts committed events this way). Keep it short and non-blocking: it
    /// holds up the writer. Not called when the job panicked or the writer is gone.
    pub fn submit_then<R, F, A>(&self, f: F, after: A) -> Committed<R>
    where
        R: Send + 'static,
        F: FnOnce(&Connection) -> rusqlite::Result<R> + Send + 'static,
        A: FnOnce(&Result<R, StoreError>) + Send + 'static,
    {
        self.enqueue(f, Some(Box::new(after)), false)
    }

    fn enqueue<R, F>(&self, f: F, after: Option<After<R>>, urgent: bool) -> Committed<R>
    where
        R: Send + 'static,
        F: FnOnce(&Connection) -> rusqlite::Result<R> + Send + 'static,
    {
        let (reply, rx) = oneshot::channel::<Result<R, StoreError>>();
        let job: Box<dyn Job> = Box::new(Task { f, reply, path: self.path.clone(), after, urgent });
        // A failed send drops the job and its reply sender: `rx` then yields `Closed`.
        let _ = self.jobs.send(job);
        Committed { rx, path: self.path.clone() }
    }
}

/// The result of a submitted job, available once its transaction committed (or
/// failed). A future: `.await` it.
pub struct Committed<R> {
    rx: oneshot::Receiver<Result<R, StoreError>>,
    path: Arc<PathBuf>,
}

impl<R> Committed<R> {
    /// An already-finished result (for callers with nothing to write).
    pub fn ready(result: Result<R, StoreError>, path: &Path) -> Self {
        let (tx, rx) = oneshot::channel();
        let _ = tx.send(result);
        Self { rx, path: Arc::new(path.to_path_buf()) }
    }
}

impl<R> std::future::Future for Committed<R> {
    type Output = Result<R, StoreError>;

    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<Self::Output> {
        match std::pin::Pin::new(&mut self.rx).poll(cx) {
            std::task::Poll::Ready(Ok(r)) => std::task::Poll::Ready(r),
            std::task::Poll::Ready(Err(_)) => {
                std::task::Poll::Ready(Err(StoreError::Closed { path: self.path.to_path_buf() }))
            }
            std::task::Poll::Pending => std::task::Poll::Pending,
        }
    }
}

fn writer_loop(mut store: Store, rx: mpsc::Receiver<Box<dyn Job>>, path: &Path) {
    while let Ok(first) = rx.recv() {
        let deadline = std::time::Instant::now() + COMMIT_WINDOW;
        let mut gather = !first.urgent();
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            let next = if gather {
                rx.recv_timeout(deadline.saturating_duration_since(std::time::Instant::now())).ok()
            } else {
                rx.try_recv().ok()
            };
            let Some(job) = next else { break };
            gather &= !job.urgent();
            batch.push(job);
        }
        run_batch(store.conn_mut(), batch, path);
    }
    tracing::debug!(path = %path.display(), "store writer stopped");
}

/// A transaction-control statement, prepared once (`execute_batch` parsed it anew
/// for every job).
fn statement(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([]).map(|_| ())
}

fn run_batch(conn: &mut Connection, batch: Vec<Box<dyn Job>>, path: &Path) {
    if let Err(e) = statement(conn, "BEGIN IMMEDIATE") {
        let message = e.to_string();
        tracing::error!(path = %path.display(), "store: cannot begin a transaction: {message}");
        batch.into_iter().for_each(|job| job.fail(&message));
        return;
    }
    let mut done = Vec::with_capacity(batch.len());
    for job in batch {
        if let Err(e) = statement(conn, "SAVEPOINT job") {
            job.fail(&e.to_string());
            continue;
        }
        let (ok, completion) = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job.run(conn))) {
            Ok(r) => r,
            Err(_) => {
                // Its reply sender was dropped with it: the caller sees `Closed`.
                tracing::error!("store: a job panicked; its writes are rolled back");
                (false, Box::new(|_: Result<(), &str>| {}) as Completion)
            }
        };
        let rollback = if ok { Ok(()) } else { statement(conn, "ROLLBACK TO job") };
        if let Err(e) = rollback.and_then(|()| statement(conn, "RELEASE job")) {
            tracing::error!("store: savepoint: {e}");
        }
        done.push(completion);
    }
    match statement(conn, "COMMIT") {
        Ok(()) => done.into_iter().for_each(|c| c(Ok(()))),
        Err(e) => {
            let message = e.to_string();
            tracing::error!(path = %path.display(), "store: commit failed: {message}");
            let _ = statement(conn, "ROLLBACK");
            done.into_iter().for_each(|c| c(Err(&message)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn handle() -> (tempfile::TempDir, StoreHandle) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        (dir, StoreHandle::start(store).unwrap())
    }

    #[tokio::test]
    async fn a_failing_job_leaves_its_batch_neighbours_committed() {
        let (dir, h) = handle();
        h.run(|c| c.execute_batch("CREATE TABLE t (x INTEGER NOT NULL UNIQUE)")).await.unwrap();
        let mut joins = Vec::new();
        for x in [1, 2, 2, 3] {
            let h = h.clone();
            joins.push(tokio::spawn(async move { h.run(move |c| c.execute("INSERT INTO t VALUES (?1)", [x])).await }));
        }
        let mut failed = 0;
        for j in joins {
            if j.await.unwrap().is_err() {
                failed += 1;
            }
        }
        assert_eq!(failed, 1, "the duplicate insert fails, and only it");
        drop(h);
        // Read back with a second connection: the commits are visible to others.
        let s = Store::open(dir.path()).unwrap();
        let n: i64 = s.conn().query_row("SELECT count(*) FROM t", [], |r| r.get(0)).unwrap();
        assert_eq!(n, 3);
    }

    #[tokio::test]
    async fn results_come_back_and_errors_are_typed() {
        let (_dir, h) = handle();
        let v: i64 = h.run(|c| c.query_row("SELECT 40 + 2", [], |r| r.get(0))).await.unwrap();
        assert_eq!(v, 42);
        let e = h.run(|c| c.execute_batch("SELECT * FROM no_such_table")).await.unwrap_err();
        assert!(matches!(e, StoreError::Sqlite { .. }), "{e}");
    }

    #[tokio::test]
    async fn submitted_jobs_run_in_submission_order() {
        let (_dir, h) = handle();
        h.run(|c| c.execute_batch("CREATE TABLE t (seq INTEGER PRIMARY KEY, x INTEGER)")).await.unwrap();
        // Submitted from synchronous code, awaited in reverse: order is submission order.
        let pending: Vec<_> =
            (0..50).map(|x| h.submit(move |c| c.execute("INSERT INTO t (x) VALUES (?1)", [x]))).collect();
        for p in pending.into_iter().rev() {
            p.await.unwrap();
        }
        let xs: Vec<i64> =
            h.run(|c| c.prepare("SELECT x FROM t ORDER BY seq")?.query_map([], |r| r.get(0))?.collect()).await.unwrap();
        assert_eq!(xs, (0..50).collect::<Vec<i64>>());
    }

    #[tokio::test]
    async fn after_sees_the_commit_and_runs_in_submission_order() {
        let (dir, h) = handle();
        h.run(|c| c.execute_batch("CREATE TABLE t (x INTEGER)")).await.unwrap();
        let path = dir.path().join(crate::store::DB_FILE);
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let pending: Vec<_> = (0..20)
            .map(|x| {
                let (path, seen) = (path.clone(), seen.clone());
                h.submit_then(
                    move |c| c.execute("INSERT INTO t VALUES (?1)", [x]),
                    move |r| {
                        // Another connection (another process would do the same)
                        // already sees the row: `after` runs after the commit.
                        let other = Connection::open(&path).unwrap();
                        let n: i64 = other.query_row("SELECT count(*) FROM t WHERE x = ?1", [x], |r| r.get(0)).unwrap();
                        seen.lock().unwrap().push((x, r.is_ok(), n));
                    },
                )
            })
            .collect();
        for p in pending {
            p.await.unwrap();
        }
        let seen = seen.lock().unwrap().clone();
        assert_eq!(seen, (0..20).map(|x| (x, true, 1)).collect::<Vec<_>>());
        // A failing job's `after` learns the failure.
        let failed = Arc::new(std::sync::Mutex::new(None));
        let f2 = failed.clone();
        let r = h
            .submit_then(|c| c.execute_batch("SELECT * FROM nowhere"), move |r| *f2.lock().unwrap() = Some(r.is_err()));
        assert!(r.await.is_err());
        assert_eq!(*failed.lock().unwrap(), Some(true));
    }

    #[tokio::test]
    async fn a_panicking_job_does_not_stop_the_writer() {
        let (_dir, h) = handle();
        let e = h.run(|_| -> rusqlite::Result<()> { panic!("job bug") }).await.unwrap_err();
        assert!(matches!(e, StoreError::Closed { .. }));
        let v: i64 = h.run(|c| c.query_row("SELECT 1", [], |r| r.get(0))).await.unwrap();
        assert_eq!(v, 1);
    }
}
