//! The webhook outbox table (`webhook_outbox`): SQL only, no HTTP and no clock.
//!
//! A row is one event. It is *pending* (`delivered_at` and `dead_at` NULL),
//! *delivered*, or *dead* (dead-lettered after `max_age`; kept until requeued).
//! `seq` is the emission order; among pending events of one `call_session_id`
//! only the lowest `seq` is *eligible* ("head of its session"): a later event
//! waits while an earlier one of the same call is pending. Events without a
//! session, and different sessions, never wait for each other.
//!
//! The delivery worker (`webhook::delivery`) drives these functions through the
//! store's writer thread; `sipbridge webhooks status|retry-dead` runs them on its
//! own connection (WAL allows it while the daemon runs). For technicians:
//! `SELECT state, count(*) FROM webhook_outbox_state GROUP BY state`.

use std::time::SystemTime;

use rusqlite::{Connection, OptionalExtension, Row, params};

use super::{parse_timestamp, timestamp};

/// A new event for the outbox.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    /// `data.id` (UUID v4, lowercase hyphenated).
    pub event_id: String,
    /// `data.event_type`.
    pub event_type: String,
    /// Session whose order this event keeps; `None` for events outside calls.
    pub call_session_id: Option<String>,
    /// `data.occurred_at`.
    pub occurred_at: SystemTime,
    /// JSON of the envelope's `data` object (`webhook::envelope::data_json`).
    pub data_json: String,
    /// The call's own webhook URL (Telnyx `webhook_url`), else `None` for
    /// `[webhooks] url`.
    pub webhook_url: Option<String>,
}

/// A pending event as the delivery worker sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct PendingEvent {
    /// Emission order (row id).
    pub seq: i64,
    /// `data.id`.
    pub event_id: String,
    /// `data.event_type`.
    pub event_type: String,
    /// Session, if any.
    pub call_session_id: Option<String>,
    /// JSON of `data`.
    pub data_json: String,
    /// When emitted or last requeued; `max_age` counts from here.
    pub queued_at: SystemTime,
    /// POSTs so far (the next one is `meta.attempt = attempts + 1`).
    pub attempts: u32,
    /// Failed POSTs since `queued_at` (drives backoff and failover).
    pub failures: u32,
    /// The call's own webhook URL, if it has one.
    pub webhook_url: Option<String>,
}

/// The result of one POST, to be recorded.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// 2xx from `target`.
    Delivered {
        /// URL that answered 2xx.
        target: String,
    },
    /// Failed; try again at `next_attempt_at`.
    Retry {
        /// URL that failed.
        target: String,
        /// What went wrong (status and body excerpt, or transport error).
        error: String,
        /// When the next POST is due.
        next_attempt_at: SystemTime,
    },
    /// Failed and out of time: dead-lettered.
    Dead {
        /// URL that failed last.
        target: String,
        /// What went wrong.
        error: String,
    },
}

/// One event's row, as `sipbridge webhooks status` shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct EventRow {
    /// Emission order.
    pub seq: i64,
    /// `data.id`.
    pub event_id: String,
    /// `data.event_type`.
    pub event_type: String,
    /// Session, if any.
    pub call_session_id: Option<String>,
    /// `data.occurred_at`.
    pub occurred_at: Option<SystemTime>,
    /// Emitted or requeued.
    pub queued_at: Option<SystemTime>,
    /// POSTs so far.
    pub attempts: u32,
    /// Failed POSTs since `queued_at`.
    pub failures: u32,
    /// When the next POST is due (pending events).
    pub next_attempt_at: Option<SystemTime>,
    /// URL of the last POST.
    pub target: Option<String>,
    /// Last failure.
    pub last_error: Option<String>,
    /// Delivered at.
    pub delivered_at: Option<SystemTime>,
    /// Dead-lettered at.
    pub dead_at: Option<SystemTime>,
}

/// Counts for `sipbridge webhooks status`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct OutboxStatus {
    /// Not yet delivered, not dead.
    pub pending: u64,
    /// Dead-lettered, waiting for `retry-dead`.
    pub dead: u64,
    /// Delivered and not yet pruned.
    pub delivered: u64,
    /// The pending event emitted first.
    pub oldest_pending: Option<EventRow>,
    /// The dead event emitted first.
    pub oldest_dead: Option<EventRow>,
}

const PENDING: &str = "delivered_at IS NULL AND dead_at IS NULL";

/// The heads: per `call_session_id`, the pending event with the lowest `seq`, plus
/// every pending event without a session. A loose index scan over the partial
/// index `webhook_outbox_session` (call_session_id, seq): one index probe per
/// session with pending events, not one row per pending event, so a backlog of
/// tens of thousands of events costs no more than the number of calls in it.
const HEADS: &str = "WITH RECURSIVE sessions(id) AS ( \
       SELECT min(call_session_id) FROM webhook_outbox \
           WHERE delivered_at IS NULL AND dead_at IS NULL AND call_session_id IS NOT NULL \
       UNION ALL \
       SELECT (SELECT min(call_session_id) FROM webhook_outbox \
               WHERE delivered_at IS NULL AND dead_at IS NULL AND call_session_id > sessions.id) \
           FROM sessions WHERE sessions.id IS NOT NULL), \
     heads(seq) AS ( \
       SELECT (SELECT min(seq) FROM webhook_outbox \
               WHERE delivered_at IS NULL AND dead_at IS NULL AND call_session_id = sessions.id) \
           FROM sessions WHERE sessions.id IS NOT NULL \
       UNION ALL \
       SELECT seq FROM webhook_outbox \
           WHERE delivered_at IS NULL AND dead_at IS NULL AND call_session_id IS NULL)";

/// Joined with [`HEADS`]: `o` is a head and not in flight (`:in_flight` is a JSON
/// array of the `seq`s being delivered right now).
const ELIGIBLE: &str = "FROM heads JOIN webhook_outbox o ON o.seq = heads.seq \
     WHERE o.seq NOT IN (SELECT value FROM json_each(:in_flight))";

fn json_seqs(seqs: &[i64]) -> String {
    serde_json::Value::from(seqs.to_vec()).to_string()
}

fn time_col(row: &Row<'_>, i: usize) -> rusqlite::Result<Option<SystemTime>> {
    Ok(row.get::<_, Option<String>>(i)?.as_deref().and_then(parse_timestamp))
}

/// Inserts an event as pending and due now; returns its `seq`.
pub fn insert(conn: &Connection, e: &NewEvent, now: SystemTime) -> rusqlite::Result<i64> {
    let now = timestamp(now);
    super::execute(
        conn,
        "INSERT INTO webhook_outbox (event_id, event_type, call_session_id, occurred_at, body, queued_at, \
         next_attempt_at, webhook_url) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6, ?7)",
        params![e.event_id, e.event_type, e.call_session_id, timestamp(e.occurred_at), e.data_json, now, e.webhook_url],
    )?;
    Ok(conn.last_insert_rowid())
}

/// What the worker may send now, and when to look again.
#[derive(Debug, Clone, PartialEq)]
pub struct Due {
    /// Eligible events due at `now`, in `seq` order, at most `limit`.
    pub events: Vec<PendingEvent>,
    /// Earliest `next_attempt_at` among the other eligible events (not in flight,
    /// not in `events`): when the next one becomes due.
    pub next_due: Option<SystemTime>,
}

/// Eligible events due at `now` (`next_attempt_at <= now`), in `seq` order, at
/// most `limit`, leaving out `in_flight`; plus when the next other one is due.
/// One pass over the heads (see [`HEADS`]), then the chosen rows by key.
pub fn due(conn: &Connection, now: SystemTime, in_flight: &[i64], limit: usize) -> rusqlite::Result<Due> {
    let heads: Vec<(i64, String)> = conn
        .prepare_cached(&format!("{HEADS} SELECT o.seq, o.next_attempt_at {ELIGIBLE} ORDER BY o.seq"))?
        .query_map(rusqlite::named_params! {":in_flight": json_seqs(in_flight)}, |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    // Stored times are fixed-width RFC 3339: they compare correctly as text.
    let now_text = timestamp(now);
    let mut chosen = Vec::new();
    let mut next_due: Option<&str> = None;
    for (seq, next) in &heads {
        if chosen.len() < limit && next.as_str() <= now_text.as_str() {
            chosen.push(*seq);
        } else if next_due.is_none_or(|n| next.as_str() < n) {
            next_due = Some(next);
        }
    }
    let next_due = next_due.and_then(parse_timestamp);
    if chosen.is_empty() {
        return Ok(Due { events: Vec::new(), next_due });
    }
    let mut stmt = conn.prepare_cached(
        "SELECT seq, event_id, event_type, call_session_id, body, queued_at, attempts, failures, webhook_url \
         FROM webhook_outbox WHERE seq IN (SELECT value FROM json_each(?1)) ORDER BY seq",
    )?;
    let events = stmt
        .query_map([json_seqs(&chosen)], |r| {
            Ok(PendingEvent {
                seq: r.get(0)?,
                event_id: r.get(1)?,
                event_type: r.get(2)?,
                call_session_id: r.get(3)?,
                data_json: r.get(4)?,
                // An unparsable queued_at (hand-edited) counts as "now": never dies early.
                queued_at: time_col(r, 5)?.unwrap_or(now),
                attempts: r.get(6)?,
                failures: r.get(7)?,
                webhook_url: r.get(8)?,
            })
        })?
        .collect::<Result<_, _>>()?;
    Ok(Due { events, next_due })
}

/// Earliest `queued_at` of a pending event not in flight: when the next
/// dead-lettering can happen (that time + `max_age`).
pub fn oldest_queued(conn: &Connection, in_flight: &[i64]) -> rusqlite::Result<Option<SystemTime>> {
    let oldest: Option<String> = conn
        .prepare_cached(&format!(
            "SELECT min(queued_at) FROM webhook_outbox WHERE {PENDING} \
             AND seq NOT IN (SELECT value FROM json_each(?1))"
        ))?
        .query_row([json_seqs(in_flight)], |r| r.get(0))?;
    Ok(oldest.as_deref().and_then(parse_timestamp))
}

/// Records the outcome of POST number `attempt` (= `meta.attempt`) of event `seq`.
pub fn record(conn: &Connection, seq: i64, attempt: u32, outcome: &Outcome, now: SystemTime) -> rusqlite::Result<()> {
    let now = timestamp(now);
    match outcome {
        Outcome::Delivered { target } => super::execute(
            conn,
            "UPDATE webhook_outbox SET attempts = ?2, target = ?3, delivered_at = ?4, last_error = NULL WHERE seq = ?1",
            params![seq, attempt, target, now],
        ),
        Outcome::Retry { target, error, next_attempt_at } => super::execute(
            conn,
            "UPDATE webhook_outbox SET attempts = ?2, failures = failures + 1, target = ?3, last_error = ?4, \
             next_attempt_at = ?5 WHERE seq = ?1",
            params![seq, attempt, target, error, timestamp(*next_attempt_at)],
        ),
        Outcome::Dead { target, error } => super::execute(
            conn,
            "UPDATE webhook_outbox SET attempts = ?2, failures = failures + 1, target = ?3, last_error = ?4, \
             dead_at = ?5 WHERE seq = ?1",
            params![seq, attempt, target, error, now],
        ),
    }
    .map(|_| ())
}

/// Dead-letters every pending event (not in flight) queued at or before `cutoff`
/// (= now − max_age); returns how many.
pub fn dead_letter_expired(
    conn: &Connection,
    cutoff: SystemTime,
    now: SystemTime,
    in_flight: &[i64],
) -> rusqlite::Result<usize> {
    super::execute(
        conn,
        &format!(
            "UPDATE webhook_outbox SET dead_at = ?1, \
             last_error = coalesce(last_error, 'not attempted: an earlier event of its call was pending') \
             WHERE {PENDING} AND queued_at <= ?2 AND seq NOT IN (SELECT value FROM json_each(?3))"
        ),
        params![timestamp(now), timestamp(cutoff), json_seqs(in_flight)],
    )
}

/// Deletes delivered events delivered at or before `cutoff`; returns how many.
/// Pending and dead events are never deleted.
pub fn prune_delivered(conn: &Connection, cutoff: SystemTime) -> rusqlite::Result<usize> {
    super::execute(
        conn,
        "DELETE FROM webhook_outbox WHERE delivered_at IS NOT NULL AND delivered_at <= ?1",
        [timestamp(cutoff)],
    )
}

/// Requeues every dead event: pending again, due now, `max_age` counting from
/// now, backoff and failover starting over (`attempts` keeps counting, so
/// `meta.attempt` stays truthful). Returns how many.
pub fn requeue_dead(conn: &Connection, now: SystemTime) -> rusqlite::Result<usize> {
    let now = timestamp(now);
    super::execute(
        conn,
        "UPDATE webhook_outbox SET dead_at = NULL, queued_at = ?1, next_attempt_at = ?1, failures = 0 \
         WHERE dead_at IS NOT NULL",
        [now],
    )
}

const ROW_COLUMNS: &str = "seq, event_id, event_type, call_session_id, occurred_at, queued_at, attempts, failures, \
     next_attempt_at, target, last_error, delivered_at, dead_at";

fn event_row(r: &Row<'_>) -> rusqlite::Result<EventRow> {
    Ok(EventRow {
        seq: r.get(0)?,
        event_id: r.get(1)?,
        event_type: r.get(2)?,
        call_session_id: r.get(3)?,
        occurred_at: time_col(r, 4)?,
        queued_at: time_col(r, 5)?,
        attempts: r.get(6)?,
        failures: r.get(7)?,
        next_attempt_at: time_col(r, 8)?,
        target: r.get(9)?,
        last_error: r.get(10)?,
        delivered_at: time_col(r, 11)?,
        dead_at: time_col(r, 12)?,
    })
}

/// One event's row by `data.id`.
pub fn event(conn: &Connection, event_id: &str) -> rusqlite::Result<Option<EventRow>> {
    conn.query_row(&format!("SELECT {ROW_COLUMNS} FROM webhook_outbox WHERE event_id = ?1"), [event_id], event_row)
        .optional()
}

/// Number of pending events (a count over the partial index: cheap).
pub fn pending_count(conn: &Connection) -> rusqlite::Result<u64> {
    count(conn, PENDING)
}

fn count(conn: &Connection, cond: &str) -> rusqlite::Result<u64> {
    let n: i64 = conn
        .prepare_cached(&format!("SELECT count(*) FROM webhook_outbox WHERE {cond}"))?
        .query_row([], |r| r.get(0))?;
    Ok(u64::try_from(n).unwrap_or(0))
}

/// Counts and the oldest pending / dead events. Each count reads only its partial
/// index, so this stays fast with days of delivered rows kept.
pub fn status(conn: &Connection) -> rusqlite::Result<OutboxStatus> {
    let first = |cond: &str| {
        conn.query_row(
            &format!("SELECT {ROW_COLUMNS} FROM webhook_outbox WHERE {cond} ORDER BY seq LIMIT 1"),
            [],
            event_row,
        )
        .optional()
    };
    Ok(OutboxStatus {
        pending: count(conn, PENDING)?,
        dead: count(conn, "dead_at IS NOT NULL")?,
        delivered: count(conn, "delivered_at IS NOT NULL")?,
        oldest_pending: first(PENDING)?,
        oldest_dead: first("dead_at IS NOT NULL")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;
    use std::time::{Duration, UNIX_EPOCH};

    fn t(s: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_800_000_000 + s)
    }

    fn ev(n: u32, session: Option<&str>) -> NewEvent {
        NewEvent {
            event_id: format!("id-{n}"),
            event_type: "call.initiated".into(),
            call_session_id: session.map(str::to_string),
            occurred_at: t(0),
            data_json: format!("{{\"n\":{n}}}"),
            webhook_url: None,
        }
    }

    fn ids(d: &Due) -> Vec<&str> {
        d.events.iter().map(|e| e.event_id.as_str()).collect()
    }

    #[test]
    fn only_the_head_of_each_session_is_eligible() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        let c = s.conn();
        let a1 = insert(c, &ev(1, Some("A")), t(0)).unwrap();
        insert(c, &ev(2, Some("B")), t(0)).unwrap();
        insert(c, &ev(3, Some("A")), t(0)).unwrap();
        insert(c, &ev(4, None), t(0)).unwrap();
        insert(c, &ev(5, None), t(0)).unwrap();
        assert_eq!(ids(&due(c, t(0), &[], 10).unwrap()), ["id-1", "id-2", "id-4", "id-5"]);
        // A's head in flight: A's second event still waits; nothing else changes.
        assert_eq!(ids(&due(c, t(0), &[a1], 10).unwrap()), ["id-2", "id-4", "id-5"]);
        assert_eq!(ids(&due(c, t(0), &[], 2).unwrap()), ["id-1", "id-2"], "limit, in seq order");

        // A's head fails: retry later; A's second event must still wait.
        let retry = Outcome::Retry { target: "http://x".into(), error: "HTTP 500".into(), next_attempt_at: t(10) };
        record(c, a1, 1, &retry, t(1)).unwrap();
        assert_eq!(ids(&due(c, t(1), &[], 10).unwrap()), ["id-2", "id-4", "id-5"]);
        assert_eq!(due(c, t(1), &[], 10).unwrap().next_due, Some(t(10)), "A's head is due again at 10 s");
        assert_eq!(due(c, t(1), &[], 1).unwrap().next_due, Some(t(0)), "beyond the limit: due already");
        assert_eq!(oldest_queued(c, &[]).unwrap(), Some(t(0)));
        assert_eq!(ids(&due(c, t(10), &[], 10).unwrap())[0], "id-1");
        let head = &due(c, t(10), &[], 10).unwrap().events[0];
        assert_eq!((head.attempts, head.failures), (1, 1));

        record(c, a1, 2, &Outcome::Delivered { target: "http://x".into() }, t(10)).unwrap();
        assert_eq!(ids(&due(c, t(10), &[], 10).unwrap()), ["id-2", "id-3", "id-4", "id-5"]);
        let row = event(c, "id-1").unwrap().unwrap();
        assert_eq!((row.attempts, row.delivered_at, row.last_error), (2, Some(t(10)), None));
    }

    #[test]
    fn heads_match_a_brute_force_model() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        let c = s.conn();
        // 300 events over 7 sessions and none, in a scrambled but fixed order.
        let sessions = [Some("a"), Some("b"), None, Some("c"), Some("d"), Some("e"), Some("f"), Some("g")];
        let mut rows: Vec<(i64, Option<&str>, bool)> = Vec::new(); // (seq, session, pending)
        for n in 0..300u32 {
            let session = sessions[((n * 7 + n / 5) % 8) as usize];
            let seq = insert(c, &ev(n, session), t(0)).unwrap();
            rows.push((seq, session, true));
        }
        // Deliver a deterministic third of them, dead-letter some others.
        for (i, row) in rows.iter_mut().enumerate() {
            if i % 3 == 0 {
                record(c, row.0, 1, &Outcome::Delivered { target: "u".into() }, t(1)).unwrap();
                row.2 = false;
            } else if i % 11 == 0 {
                record(c, row.0, 1, &Outcome::Dead { target: "u".into(), error: "x".into() }, t(1)).unwrap();
                row.2 = false;
            }
        }
        let in_flight = [rows[4].0, rows[5].0];
        let mut want = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for (seq, session, pending) in &rows {
            if !pending {
                continue;
            }
            let head = match session {
                Some(s) => seen.insert(*s),
                None => true,
            };
            if head && !in_flight.contains(seq) {
                want.push(*seq);
            }
        }
        let got: Vec<i64> = due(c, t(5), &in_flight, 1000).unwrap().events.iter().map(|e| e.seq).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn dead_letters_are_kept_counted_and_requeued_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        let c = s.conn();
        let a1 = insert(c, &ev(1, Some("A")), t(0)).unwrap();
        insert(c, &ev(2, Some("A")), t(0)).unwrap();
        let late = insert(c, &ev(3, Some("B")), t(50)).unwrap();
        assert_eq!(oldest_queued(c, &[a1]).unwrap(), Some(t(0)));
        // max_age 30 s at t=40: A's two events die, B's is younger.
        assert_eq!(dead_letter_expired(c, t(10), t(40), &[]).unwrap(), 2);
        let st = status(c).unwrap();
        assert_eq!((st.pending, st.dead, st.delivered), (1, 2, 0));
        assert_eq!(st.oldest_dead.as_ref().unwrap().event_id, "id-1");
        assert_eq!(st.oldest_pending.as_ref().unwrap().seq, late);
        let never = event(c, "id-2").unwrap().unwrap();
        assert!(never.last_error.unwrap().contains("not attempted"));

        assert_eq!(requeue_dead(c, t(100)).unwrap(), 2);
        let st = status(c).unwrap();
        assert_eq!((st.pending, st.dead), (3, 0));
        assert_eq!(ids(&due(c, t(100), &[], 10).unwrap()), ["id-1", "id-3"], "A's order is kept after requeue");
        assert_eq!(dead_letter_expired(c, t(60), t(90), &[]).unwrap(), 1, "requeued events age from now");
    }

    #[test]
    fn delivered_rows_are_pruned_pending_and_dead_never() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        let c = s.conn();
        let a = insert(c, &ev(1, None), t(0)).unwrap();
        let b = insert(c, &ev(2, None), t(0)).unwrap();
        insert(c, &ev(3, None), t(0)).unwrap();
        record(c, a, 1, &Outcome::Delivered { target: "u".into() }, t(5)).unwrap();
        record(c, b, 1, &Outcome::Dead { target: "u".into(), error: "HTTP 410".into() }, t(5)).unwrap();
        assert_eq!(prune_delivered(c, t(100)).unwrap(), 1);
        let st = status(c).unwrap();
        assert_eq!((st.pending, st.dead, st.delivered), (1, 1, 0));
        assert_eq!(pending_count(c).unwrap(), 1);
    }
}
