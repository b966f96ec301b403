//! `sipbridge webhooks status` and `sipbridge webhooks retry-dead`: the outbox
//! seen from the box's console. Both open `{data_dir}/sipbridge.db` on their own
//! connection, so they work whether or not the daemon runs (WAL lets a second
//! process read and write); a running daemon picks requeued events up within its
//! idle poll (5 s).

use std::io::Write;
use std::path::Path;
use std::time::{Duration, SystemTime};

use super::delivery::loggable;
use super::retry::DeliveryPolicy;
use crate::config::Config;
use crate::store::outbox::{self, EventRow, OutboxStatus};
use crate::store::{Store, StoreError, timestamp};

/// `sipbridge webhooks status`: prints the webhook targets, the pending,
/// dead-lettered and delivered counts, and the oldest pending and dead events, to
/// stdout. Exit status 0, or 1 when the store cannot be read (message on stderr).
pub fn status(config: &Config) -> i32 {
    let out = &mut std::io::stdout().lock();
    match status_to(out, config) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("sipbridge webhooks status: {e}");
            1
        }
    }
}

/// `sipbridge webhooks retry-dead`: requeues every dead-lettered event (due now,
/// `max_age` counting from now) and prints how many. Exit status 0, or 1 when the
/// store cannot be written (message on stderr).
pub fn retry_dead(config: &Config) -> i32 {
    let out = &mut std::io::stdout().lock();
    match retry_dead_to(out, &config.node.data_dir) {
        Ok(_) => 0,
        Err(e) => {
            eprintln!("sipbridge webhooks retry-dead: {e}");
            1
        }
    }
}

/// Errors of the webhook commands.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The store could not be opened or queried.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Writing to stdout failed.
    #[error("cannot write the output: {0}")]
    Output(#[from] std::io::Error),
}

/// [`status`], writing to `out`.
pub fn status_to(out: &mut dyn Write, config: &Config) -> Result<(), CliError> {
    let w = &config.webhooks;
    match &w.url {
        Some(url) => {
            write!(out, "webhooks: {}", loggable(url))?;
            match &w.failover_url {
                Some(f) => writeln!(out, " (failover {})", loggable(f))?,
                None => writeln!(out, " (no failover_url)")?,
            }
        }
        None => writeln!(out, "webhooks: disabled ([webhooks].url is not set); events are not queued")?,
    }
    let store = match Store::open_existing(&config.node.data_dir) {
        Ok(s) => s,
        Err(StoreError::Missing { path }) => {
            writeln!(out, "store: {} does not exist yet: nothing queued", path.display())?;
            return Ok(());
        }
        Err(e) => return Err(e.into()),
    };
    let st = outbox::status(store.conn()).map_err(|e| store.err(e))?;
    writeln!(out, "store: {}", store.path().display())?;
    render(out, &st, &DeliveryPolicy::from_config(w))?;
    Ok(())
}

fn render(out: &mut dyn Write, st: &OutboxStatus, policy: &DeliveryPolicy) -> std::io::Result<()> {
    writeln!(out, "pending: {}", st.pending)?;
    if let Some(e) = &st.oldest_pending {
        writeln!(out, "  oldest pending: {}", describe(e))?;
        if let Some(next) = e.next_attempt_at {
            writeln!(out, "    next attempt: {}", timestamp(next))?;
        }
        if let Some(err) = &e.last_error {
            writeln!(out, "    last error: {err}")?;
        }
    }
    let dead_hint = if st.dead > 0 { " (kept; requeue with: sipbridge webhooks retry-dead)" } else { "" };
    writeln!(out, "dead-lettered: {}{dead_hint}", st.dead)?;
    if let Some(e) = &st.oldest_dead {
        writeln!(out, "  oldest dead: {}", describe(e))?;
        if let Some(err) = &e.last_error {
            writeln!(out, "    last error: {err}")?;
        }
    }
    let kept = match policy.delivered_retention {
        Duration::MAX => "kept forever".to_string(),
        d if d.as_secs() % 86_400 == 0 => format!("kept {} days", d.as_secs() / 86_400),
        d => format!("kept {}", humantime::format_duration(d)),
    };
    writeln!(out, "delivered ({kept}): {}", st.delivered)?;
    Ok(())
}

fn describe(e: &EventRow) -> String {
    let when = e.occurred_at.map(timestamp).unwrap_or_else(|| "?".into());
    let session = e.call_session_id.as_deref().unwrap_or("-");
    let age = e
        .queued_at
        .and_then(|q| SystemTime::now().duration_since(q).ok())
        .map(|d| humantime::format_duration(std::time::Duration::from_secs(d.as_secs())).to_string())
        .unwrap_or_else(|| "?".into());
    format!(
        "{} {} (call_session_id {session}) occurred {when}, queued {age} ago, {} attempts",
        e.event_type, e.event_id, e.attempts
    )
}

/// [`retry_dead`], writing to `out`; returns how many events were requeued.
pub fn retry_dead_to(out: &mut dyn Write, data_dir: &Path) -> Result<usize, CliError> {
    let mut store = match Store::open_existing(data_dir) {
        Ok(s) => s,
        Err(StoreError::Missing { path }) => {
            writeln!(out, "store: {} does not exist yet: nothing to requeue", path.display())?;
            return Ok(0);
        }
        Err(e) => return Err(e.into()),
    };
    let path = store.path().to_path_buf();
    let n = store
        .conn_mut()
        .transaction()
        .and_then(|tx| {
            let n = outbox::requeue_dead(&tx, SystemTime::now())?;
            tx.commit().map(|_| n)
        })
        .map_err(|source| StoreError::Sqlite { path, source })?;
    if n == 0 {
        writeln!(out, "no dead-lettered events")?;
    } else {
        writeln!(out, "requeued {n} dead-lettered events; a running sipbridge sends them within seconds")?;
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::outbox::{NewEvent, Outcome};

    #[test]
    fn status_and_retry_dead_speak_to_the_technician() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let c = store.conn();
        let now = SystemTime::now();
        for n in 0..3 {
            let e = NewEvent {
                event_id: format!("id-{n}"),
                event_type: "call.hangup".into(),
                call_session_id: Some("s".into()),
                occurred_at: now,
                data_json: "{}".into(),
                webhook_url: None,
            };
            outbox::insert(c, &e, now).unwrap();
        }
        let dead = Outcome::Dead { target: "http://b/".into(), error: "HTTP 503 Service Unavailable".into() };
        outbox::record(c, 1, 4, &dead, now).unwrap();
        let st = outbox::status(c).unwrap();
        let mut text = Vec::new();
        render(&mut text, &st, &DeliveryPolicy::default()).unwrap();
        let text = String::from_utf8(text).unwrap();
        assert!(text.contains("pending: 2\n"), "{text}");
        assert!(text.contains("dead-lettered: 1 (kept; requeue with: sipbridge webhooks retry-dead)"), "{text}");
        assert!(text.contains("oldest dead: call.hangup id-0 (call_session_id s)"), "{text}");
        assert!(text.contains("4 attempts"), "{text}");
        assert!(text.contains("last error: HTTP 503 Service Unavailable"), "{text}");
        assert!(text.contains("delivered (kept 7 days): 0"), "{text}");

        let mut out = Vec::new();
        assert_eq!(retry_dead_to(&mut out, dir.path()).unwrap(), 1);
        assert_eq!(String::from_utf8(out).unwrap().lines().next().unwrap().split(' ').nth(1), Some("1"));
        assert_eq!(outbox::status(c).unwrap().dead, 0, "visible to the other connection");
    }

    #[test]
    fn a_missing_store_is_not_created() {
        let dir = tempfile::tempdir().unwrap();
        let mut out = Vec::new();
        assert_eq!(retry_dead_to(&mut out, dir.path()).unwrap(), 0);
        assert!(!dir.path().join(crate::store::DB_FILE).exists());
    }
}
