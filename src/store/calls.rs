//! Call records: table `calls`, one row per call leg, written when the leg starts
//! and completed at answer and hangup. A field technician reads them with
//! `sqlite3 /var/lib/sipbridge/sipbridge.db 'SELECT * FROM calls ORDER BY start_time DESC LIMIT 20'`.
//!
//! Field names follow Telnyx's webhook payloads (PROTOCOLS.md §2): `call_leg_id`,
//! `call_control_id`, `call_session_id`, `direction` (`incoming`/`outgoing`),
//! `hangup_cause`, `hangup_source`, `sip_hangup_cause`, `call_quality_stats`.
//! `from`/`to` are columns `from_number`/`to_number` (SQL keywords otherwise).
//! `quality_samples` (not a Telnyx field) is the leg's jitter and loss over time,
//! JSON `{"interval": "rtcp", "points": [{"t_ms", "jitter_ms", "loss_percent",
//! "packets"}]}` (`call::quality_series`), set once, at hangup.
//!
//! After a crash some rows have no `end_time`: [`close_interrupted`] ends them
//! with cause `unspecified` at the next start, before any new call is taken.

use std::time::SystemTime;

use rusqlite::types::Value as SqlValue;
use rusqlite::{Connection, OptionalExtension, Row, params, params_from_iter};
use serde_json::Value;

use super::{Page, StoreError, StoreHandle, parse_timestamp, timestamp};

/// Direction of a leg as Telnyx reports it (`direction`), stored as `incoming` /
/// `outgoing`. The call module re-exports it as `call::Direction`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// The box received the INVITE.
    Incoming,
    /// The box sent the INVITE.
    Outgoing,
}

impl Direction {
    /// `"incoming"` / `"outgoing"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Incoming => "incoming",
            Self::Outgoing => "outgoing",
        }
    }
}

fn parse_direction(s: &str) -> Option<Direction> {
    match s {
        "incoming" => Some(Direction::Incoming),
        "outgoing" => Some(Direction::Outgoing),
        _ => None,
    }
}

/// What is known when a leg starts (`call.initiated`).
#[derive(Debug, Clone, PartialEq)]
pub struct CallStart {
    /// Telnyx `call_leg_id`; the row's key.
    pub call_leg_id: String,
    /// Telnyx `call_control_id` (the id commands address).
    pub call_control_id: String,
    /// Telnyx `call_session_id`, shared by the legs of one call.
    pub call_session_id: String,
    /// `[[trunk]]` name (webhook `connection_id`); `None` for legs without one
    /// (e.g. an agent or room participant).
    pub trunk: Option<String>,
    /// Telnyx `direction`.
    pub direction: Direction,
    /// Telnyx `from`: E.164 number or SIP URI.
    pub from: String,
    /// Telnyx `to`.
    pub to: String,
    /// Telnyx `start_time`.
    pub start_time: SystemTime,
    /// `[[route]]` name that took the call, when routed.
    pub route: Option<String>,
    /// `[[agent]]` name the call is bridged to, when any.
    pub agent: Option<String>,
    /// Telnyx `custom_headers` of `call.initiated` (the INVITE's X- headers) as
    /// JSON, `[{"name": .., "value": ..}]`; `None` when not known.
    pub custom_headers: Option<Value>,
}

/// What is known when a leg ends (`call.hangup`).
#[derive(Debug, Clone, PartialEq)]
pub struct CallEnd {
    /// Telnyx `end_time`.
    pub end_time: SystemTime,
    /// Telnyx `hangup_cause`: `normal_clearing`, `originator_cancel`,
    /// `call_rejected`, `user_busy`, `not_found`, `no_answer`, `timeout`,
    /// `unspecified` (Telnyx's `time_limit` is never reported: the box sets no
    /// call time limit).
    pub hangup_cause: String,
    /// Telnyx `hangup_source`: `caller`, `callee`, `unknown`.
    pub hangup_source: String,
    /// Telnyx `sip_hangup_cause`: the SIP status code as text (`"486"`), when a
    /// SIP response or BYE ended the leg.
    pub sip_hangup_cause: Option<String>,
    /// Telnyx `call_quality_stats` object (`inbound`/`outbound`: `packet_count`,
    /// `skip_packet_count`, `jitter_max_variance`, `jitter_packet_count`, `mos`).
    pub quality_stats: Option<Value>,
}

/// `calls.state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordState {
    /// Started, not answered.
    Initiated,
    /// Answered, not ended.
    Answered,
    /// Ended (`end_time` set).
    Ended,
}

impl RecordState {
    /// As stored: `initiated`, `answered`, `ended`.
    pub fn as_str(self) -> &'static str {
        match self {
            RecordState::Initiated => "initiated",
            RecordState::Answered => "answered",
            RecordState::Ended => "ended",
        }
    }

    /// Parses [`RecordState::as_str`]'s forms.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "initiated" => Some(RecordState::Initiated),
            "answered" => Some(RecordState::Answered),
            "ended" => Some(RecordState::Ended),
            _ => None,
        }
    }
}

/// One row of `calls`, as read back.
#[derive(Debug, Clone, PartialEq)]
pub struct CallRecord {
    /// Everything known at start.
    pub start: CallStart,
    /// `calls.state`.
    pub state: RecordState,
    /// When the leg was answered.
    pub answer_time: Option<SystemTime>,
    /// Hangup details, once ended.
    pub end: Option<CallEnd>,
    /// Recording files of this leg, in the order they were started.
    pub recording_paths: Vec<String>,
    /// The voice agent's WebSocket URL (`streaming.started`), without query or
    /// credentials.
    pub stream_url: Option<String>,
    /// The other leg of a bridge (`call.bridged`): its `call_leg_id`.
    pub bridged_call_leg_id: Option<String>,
    /// The other leg of a bridge: its `call_control_id`.
    pub bridged_call_control_id: Option<String>,
    /// The leg's jitter and loss over time (module docs), once it ended with
    /// media.
    pub quality_samples: Option<Value>,
}

const COLUMNS: &str = "call_leg_id, call_control_id, call_session_id, trunk, direction, from_number, to_number, \
     route, agent, state, start_time, answer_time, end_time, hangup_cause, hangup_source, sip_hangup_cause, \
     quality_stats, recording_paths, custom_headers, stream_url, bridged_call_leg_id, bridged_call_control_id, \
     quality_samples";

fn bad_column(i: usize, what: &str) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, what.to_string().into())
}

fn time_at(row: &Row<'_>, i: usize) -> rusqlite::Result<Option<SystemTime>> {
    let s: Option<String> = row.get(i)?;
    s.map(|s| parse_timestamp(&s).ok_or_else(|| bad_column(i, "not an RFC 3339 time"))).transpose()
}

fn record_from_row(row: &Row<'_>) -> rusqlite::Result<CallRecord> {
    let direction: String = row.get(4)?;
    let state: String = row.get(9)?;
    let start_time = time_at(row, 10)?.ok_or_else(|| bad_column(10, "start_time is empty"))?;
    let end_time = time_at(row, 12)?;
    let quality: Option<String> = row.get(16)?;
    let recordings: String = row.get(17)?;
    let headers: Option<String> = row.get(18)?;
    let samples: Option<String> = row.get(22)?;
    let end = match end_time {
        Some(end_time) => Some(CallEnd {
            end_time,
            hangup_cause: row.get::<_, Option<String>>(13)?.unwrap_or_else(|| "unspecified".into()),
            hangup_source: row.get::<_, Option<String>>(14)?.unwrap_or_else(|| "unknown".into()),
            sip_hangup_cause: row.get(15)?,
            quality_stats: quality
                .as_deref()
                .map(serde_json::from_str)
                .transpose()
                .map_err(|_| bad_column(16, "not JSON"))?,
        }),
        None => None,
    };
    Ok(CallRecord {
        start: CallStart {
            call_leg_id: row.get(0)?,
            call_control_id: row.get(1)?,
            call_session_id: row.get(2)?,
            trunk: row.get(3)?,
            direction: parse_direction(&direction).ok_or_else(|| bad_column(4, "unknown direction"))?,
            from: row.get(5)?,
            to: row.get(6)?,
            route: row.get(7)?,
            agent: row.get(8)?,
            start_time,
            custom_headers: headers
                .as_deref()
                .map(serde_json::from_str)
                .transpose()
                .map_err(|_| bad_column(18, "not JSON"))?,
        },
        state: RecordState::parse(&state).ok_or_else(|| bad_column(9, "unknown state"))?,
        answer_time: time_at(row, 11)?,
        end,
        recording_paths: serde_json::from_str(&recordings).map_err(|_| bad_column(17, "not a JSON array"))?,
        stream_url: row.get(19)?,
        bridged_call_leg_id: row.get(20)?,
        bridged_call_control_id: row.get(21)?,
        quality_samples: samples
            .as_deref()
            .map(serde_json::from_str)
            .transpose()
            .map_err(|_| bad_column(22, "not JSON"))?,
    })
}

/// Inserts the row of a starting leg. Fails (constraint) if the leg id exists.
pub fn insert(conn: &Connection, c: &CallStart, now: SystemTime) -> rusqlite::Result<()> {
    super::execute(
        conn,
        "INSERT INTO calls (call_leg_id, call_control_id, call_session_id, trunk, direction, from_number, \
         to_number, route, agent, state, start_time, updated_at, custom_headers) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, 'initiated', ?10, ?11, ?12)",
        params![
            c.call_leg_id,
            c.call_control_id,
            c.call_session_id,
            c.trunk,
            c.direction.as_str(),
            c.from,
            c.to,
            c.route,
            c.agent,
            timestamp(c.start_time),
            timestamp(now),
            c.custom_headers.as_ref().map(Value::to_string),
        ],
    )
    .map(|_| ())
}

/// Whether a leg's row exists.
pub fn exists(conn: &Connection, call_leg_id: &str) -> rusqlite::Result<bool> {
    conn.prepare_cached("SELECT 1 FROM calls WHERE call_leg_id = ?1")?.exists([call_leg_id])
}

/// Marks a leg answered; `false` when no open leg has that id.
pub fn answer(conn: &Connection, call_leg_id: &str, at: SystemTime) -> rusqlite::Result<bool> {
    super::execute(
        conn,
        "UPDATE calls SET state = 'answered', answer_time = ?2, updated_at = ?2 \
         WHERE call_leg_id = ?1 AND end_time IS NULL",
        params![call_leg_id, timestamp(at)],
    )
    .map(|n| n == 1)
}

/// Sets the route and/or agent of a leg, keeping what is there where an
/// argument is `None`; `false` when the leg is unknown.
pub fn add_route(
    conn: &Connection,
    call_leg_id: &str,
    route: Option<&str>,
    agent: Option<&str>,
    now: SystemTime,
) -> rusqlite::Result<bool> {
    super::execute(
        conn,
        "UPDATE calls SET route = coalesce(?2, route), agent = coalesce(?3, agent), updated_at = ?4 \
         WHERE call_leg_id = ?1",
        params![call_leg_id, route, agent, timestamp(now)],
    )
    .map(|n| n == 1)
}

/// Sets the voice agent's stream URL of a leg; `false` when the leg is unknown.
pub fn set_stream(conn: &Connection, call_leg_id: &str, stream_url: &str, now: SystemTime) -> rusqlite::Result<bool> {
    super::execute(
        conn,
        "UPDATE calls SET stream_url = ?2, updated_at = ?3 WHERE call_leg_id = ?1",
        params![call_leg_id, stream_url, timestamp(now)],
    )
    .map(|n| n == 1)
}

/// Links two bridged legs: `call_leg_id` gets the peer's ids; the peer's row (when
/// it exists and is not linked yet) gets this leg's. `false` when `call_leg_id`
/// is unknown.
pub fn set_bridged(
    conn: &Connection,
    call_leg_id: &str,
    peer_leg_id: &str,
    peer_control_id: Option<&str>,
    now: SystemTime,
) -> rusqlite::Result<bool> {
    let now = timestamp(now);
    let n = super::execute(
        conn,
        "UPDATE calls SET bridged_call_leg_id = ?2, bridged_call_control_id = ?3, updated_at = ?4 \
         WHERE call_leg_id = ?1",
        params![call_leg_id, peer_leg_id, peer_control_id, now],
    )?;
    super::execute(
        conn,
        "UPDATE calls SET bridged_call_leg_id = ?1, \
         bridged_call_control_id = (SELECT call_control_id FROM calls WHERE call_leg_id = ?1), updated_at = ?3 \
         WHERE call_leg_id = ?2 AND bridged_call_leg_id IS NULL",
        params![call_leg_id, peer_leg_id, now],
    )?;
    Ok(n == 1)
}

/// Sets a leg's quality series (module docs) unless it has one: the first
/// hangup's wins, as for the other hangup columns. `false` when the leg is
/// unknown or already has one.
pub fn set_quality_samples(
    conn: &Connection,
    call_leg_id: &str,
    samples: &Value,
    now: SystemTime,
) -> rusqlite::Result<bool> {
    super::execute(
        conn,
        "UPDATE calls SET quality_samples = ?2, updated_at = ?3 WHERE call_leg_id = ?1 AND quality_samples IS NULL",
        params![call_leg_id, samples.to_string(), timestamp(now)],
    )
    .map(|n| n == 1)
}

/// Appends a recording file path to a leg; `false` when the leg is unknown.
pub fn add_recording(conn: &Connection, call_leg_id: &str, path: &str, now: SystemTime) -> rusqlite::Result<bool> {
    super::execute(
        conn,
        "UPDATE calls SET recording_paths = json_insert(recording_paths, '$[#]', ?2), updated_at = ?3 \
         WHERE call_leg_id = ?1",
        params![call_leg_id, path, timestamp(now)],
    )
    .map(|n| n == 1)
}

/// Completes a leg at hangup; `false` when no open leg has that id (already
/// ended: the first hangup wins).
pub fn end(conn: &Connection, call_leg_id: &str, e: &CallEnd) -> rusqlite::Result<bool> {
    let quality = e.quality_stats.as_ref().map(Value::to_string);
    super::execute(
        conn,
        "UPDATE calls SET state = 'ended', end_time = ?2, hangup_cause = ?3, hangup_source = ?4, \
         sip_hangup_cause = ?5, quality_stats = ?6, updated_at = ?2 \
         WHERE call_leg_id = ?1 AND end_time IS NULL",
        params![call_leg_id, timestamp(e.end_time), e.hangup_cause, e.hangup_source, e.sip_hangup_cause, quality],
    )
    .map(|n| n == 1)
}

/// Reads one leg.
pub fn get(conn: &Connection, call_leg_id: &str) -> rusqlite::Result<Option<CallRecord>> {
    conn.query_row(&format!("SELECT {COLUMNS} FROM calls WHERE call_leg_id = ?1"), [call_leg_id], record_from_row)
        .optional()
}

/// Filters of `GET /v2/call_records`; `None` = any. Times compare with the leg's
/// `start_time`, both bounds inclusive.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CallFilter {
    /// Legs that started at or after this instant (`from=`).
    pub start_time_gte: Option<SystemTime>,
    /// Legs that started at or before this instant (`to=`).
    pub start_time_lte: Option<SystemTime>,
    /// `[[trunk]]` name (`connection_id`).
    pub trunk: Option<String>,
    /// Telnyx `call_session_id`.
    pub call_session_id: Option<String>,
    /// Telnyx `call_leg_id`.
    pub call_leg_id: Option<String>,
    /// Telnyx `call_control_id`.
    pub call_control_id: Option<String>,
    /// Telnyx `direction`.
    pub direction: Option<Direction>,
    /// `calls.state`.
    pub state: Option<RecordState>,
    /// Telnyx `hangup_cause`.
    pub hangup_cause: Option<String>,
}

/// One page of the legs matching `filter`, latest `start_time` first, and the
/// number of all matching legs.
pub fn list(conn: &Connection, filter: &CallFilter, page: Page) -> rusqlite::Result<(Vec<CallRecord>, u64)> {
    let mut clauses: Vec<&str> = Vec::new();
    let mut values: Vec<SqlValue> = Vec::new();
    let mut eq = |clause: &'static str, v: Option<String>| {
        if let Some(v) = v {
            clauses.push(clause);
            values.push(SqlValue::Text(v));
        }
    };
    eq("start_time >= ?", filter.start_time_gte.map(timestamp));
    eq("start_time <= ?", filter.start_time_lte.map(timestamp));
    eq("trunk = ?", filter.trunk.clone());
    eq("call_session_id = ?", filter.call_session_id.clone());
    eq("call_leg_id = ?", filter.call_leg_id.clone());
    eq("call_control_id = ?", filter.call_control_id.clone());
    eq("direction = ?", filter.direction.map(|d| d.as_str().to_string()));
    eq("state = ?", filter.state.map(|s| s.as_str().to_string()));
    eq("hangup_cause = ?", filter.hangup_cause.clone());
    let filtered = if clauses.is_empty() { String::new() } else { format!(" WHERE {}", clauses.join(" AND ")) };
    let total: u64 =
        conn.query_row(&format!("SELECT count(*) FROM calls{filtered}"), params_from_iter(values.iter()), |r| {
            r.get(0)
        })?;
    values.push(SqlValue::Integer(i64::from(page.size)));
    values.push(SqlValue::Integer(page.offset()));
    let rows = conn
        .prepare(&format!(
            "SELECT {COLUMNS} FROM calls{filtered} ORDER BY start_time DESC, call_leg_id LIMIT ? OFFSET ?"
        ))?
        .query_map(params_from_iter(values.iter()), record_from_row)?
        .collect::<Result<Vec<_>, _>>()?;
    Ok((rows, total))
}

/// Ends every leg still open (the process died during those calls): `end_time =
/// now`, `hangup_cause = 'unspecified'`, `hangup_source = 'unknown'`. Returns the
/// closed records, as they are now. Call only before any new call is taken.
pub fn close_interrupted(conn: &Connection, now: SystemTime) -> rusqlite::Result<Vec<CallRecord>> {
    let legs: Vec<String> = conn
        .prepare("SELECT call_leg_id FROM calls WHERE end_time IS NULL ORDER BY start_time")?
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    let end = CallEnd {
        end_time: now,
        hangup_cause: "unspecified".into(),
        hangup_source: "unknown".into(),
        sip_hangup_cause: None,
        quality_stats: None,
    };
    let mut closed = Vec::with_capacity(legs.len());
    for leg in legs {
        self::end(conn, &leg, &end)?;
        if let Some(r) = get(conn, &leg)? {
            closed.push(r);
        }
    }
    Ok(closed)
}

/// Durable call-record operations; each resolves once committed.
impl StoreHandle {
    /// Writes the row of a starting leg.
    pub async fn call_started(&self, c: CallStart) -> Result<(), StoreError> {
        self.run(move |conn| insert(conn, &c, SystemTime::now())).await
    }

    /// Reads one leg's record.
    pub async fn call(&self, call_leg_id: &str) -> Result<Option<CallRecord>, StoreError> {
        let leg = call_leg_id.to_string();
        self.run(move |conn| get(conn, &leg)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;
    use std::time::{Duration, UNIX_EPOCH};

    fn at(s: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_micros(s * 1_000_000 + 123_456)
    }

    fn start(leg: &str) -> CallStart {
        CallStart {
            call_leg_id: leg.into(),
            call_control_id: format!("v3:{leg}"),
            call_session_id: "sess-1".into(),
            trunk: Some("telnyx".into()),
            direction: Direction::Incoming,
            from: "+13125550199".into(),
            to: "+13125550100".into(),
            start_time: at(1_800_000_000),
            route: Some("sales line".into()),
            agent: Some("sales".into()),
            custom_headers: Some(serde_json::json!([{"name": "X-Shop", "value": "42"}])),
        }
    }

    #[test]
    fn a_leg_is_written_at_start_and_completed_at_hangup() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        let c = s.conn();
        insert(c, &start("leg-a"), at(1_800_000_000)).unwrap();
        assert!(insert(c, &start("leg-a"), at(1_800_000_000)).is_err(), "leg ids are unique");
        let r = get(c, "leg-a").unwrap().unwrap();
        assert_eq!((r.state, r.end.is_none()), (RecordState::Initiated, true));
        assert_eq!(r.start, start("leg-a"), "times keep their microseconds");

        assert!(answer(c, "leg-a", at(1_800_000_002)).unwrap());
        assert!(add_recording(c, "leg-a", "/rec/a.wav", at(1_800_000_002)).unwrap());
        let stats = serde_json::json!({"inbound": {"packet_count": 500, "mos": "4.3"}});
        let e = CallEnd {
            end_time: at(1_800_000_060),
            hangup_cause: "normal_clearing".into(),
            hangup_source: "caller".into(),
            sip_hangup_cause: Some("200".into()),
            quality_stats: Some(stats),
        };
        assert!(end(c, "leg-a", &e).unwrap());
        let late = CallEnd { hangup_cause: "timeout".into(), ..e.clone() };
        assert!(!end(c, "leg-a", &late).unwrap(), "the first hangup wins");
        assert!(!answer(c, "leg-a", at(1_800_000_070)).unwrap(), "an ended leg is not answered again");

        let samples = serde_json::json!({"interval": "rtcp", "points": [
            {"t_ms": 2500, "jitter_ms": 0.4, "loss_percent": 0.0, "packets": 125}
        ]});
        assert_eq!(get(c, "leg-a").unwrap().unwrap().quality_samples, None);
        assert!(set_quality_samples(c, "leg-a", &samples, at(1_800_000_060)).unwrap());
        let other = serde_json::json!({"interval": "rtcp", "points": []});
        assert!(!set_quality_samples(c, "leg-a", &other, at(1_800_000_070)).unwrap(), "the first series wins");
        assert!(!set_quality_samples(c, "no-such-leg", &other, at(1_800_000_070)).unwrap());

        let r = get(c, "leg-a").unwrap().unwrap();
        assert_eq!(r.state, RecordState::Ended);
        assert_eq!(r.quality_samples, Some(samples));
        assert_eq!(r.answer_time, Some(at(1_800_000_002)));
        assert_eq!(r.end, Some(e));
        assert_eq!(r.recording_paths, vec!["/rec/a.wav".to_string()]);
        let raw: String =
            c.query_row("SELECT answer_time FROM calls WHERE call_leg_id = 'leg-a'", [], |r| r.get(0)).unwrap();
        assert_eq!(raw, "2027-01-15T08:00:02.123456Z", "readable in sqlite3");
    }

    #[test]
    fn interrupted_legs_are_closed_as_unspecified() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        let c = s.conn();
        for leg in ["open-1", "open-2", "done"] {
            insert(c, &start(leg), at(1_800_000_000)).unwrap();
        }
        answer(c, "open-2", at(1_800_000_001)).unwrap();
        let e = CallEnd {
            end_time: at(1_800_000_009),
            hangup_cause: "user_busy".into(),
            hangup_source: "callee".into(),
            sip_hangup_cause: Some("486".into()),
            quality_stats: None,
        };
        end(c, "done", &e).unwrap();

        let closed = close_interrupted(c, at(1_800_000_100)).unwrap();
        let legs: Vec<&str> = closed.iter().map(|r| r.start.call_leg_id.as_str()).collect();
        assert_eq!(legs.len(), 2);
        assert!(legs.contains(&"open-1") && legs.contains(&"open-2"));
        for r in &closed {
            let end = r.end.as_ref().unwrap();
            assert_eq!((end.hangup_cause.as_str(), end.hangup_source.as_str()), ("unspecified", "unknown"));
            assert_eq!(end.end_time, at(1_800_000_100));
        }
        assert_eq!(get(c, "done").unwrap().unwrap().end.unwrap().hangup_cause, "user_busy", "ended legs untouched");
        assert!(close_interrupted(c, at(1_800_000_200)).unwrap().is_empty(), "a second pass finds nothing");
    }

    #[test]
    fn listing_filters_by_window_trunk_and_direction() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        let c = s.conn();
        for (i, (trunk, direction)) in [
            (Some("telnyx"), Direction::Incoming),
            (Some("carrier"), Direction::Outgoing),
            (Some("telnyx"), Direction::Outgoing),
            (None, Direction::Incoming),
        ]
        .into_iter()
        .enumerate()
        {
            let mut leg = start(&format!("leg-{i}"));
            leg.trunk = trunk.map(String::from);
            leg.direction = direction;
            leg.start_time = at(1_800_000_000 + 60 * i as u64);
            insert(c, &leg, leg.start_time).unwrap();
        }
        let legs = |f: &CallFilter, page: Page| {
            let (rows, total) = list(c, f, page).unwrap();
            (rows.into_iter().map(|r| r.start.call_leg_id).collect::<Vec<_>>(), total)
        };
        let all = Page { number: 1, size: 50 };
        assert_eq!(legs(&CallFilter::default(), all).0, ["leg-3", "leg-2", "leg-1", "leg-0"], "latest first");
        let window = CallFilter {
            start_time_gte: Some(at(1_800_000_060)),
            start_time_lte: Some(at(1_800_000_120)),
            ..Default::default()
        };
        assert_eq!(legs(&window, all).0, ["leg-2", "leg-1"], "both bounds inclusive");
        let telnyx = CallFilter { trunk: Some("telnyx".into()), ..Default::default() };
        assert_eq!(legs(&telnyx, all).0, ["leg-2", "leg-0"]);
        let out = CallFilter { direction: Some(Direction::Outgoing), ..telnyx.clone() };
        assert_eq!(legs(&out, all).0, ["leg-2"]);
        assert_eq!(legs(&CallFilter::default(), Page { number: 2, size: 3 }), (vec!["leg-0".to_string()], 4));
        assert_eq!(legs(&CallFilter::default(), Page { number: 3, size: 3 }), (vec![], 4), "past the end");
        let open = CallFilter { state: Some(RecordState::Ended), ..Default::default() };
        assert_eq!(legs(&open, all), (vec![], 0));
    }
}
