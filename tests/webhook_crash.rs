//! `kill -9` of the real daemon in the middle of real calls, with hundreds of
//! webhook events undelivered: after a restart on the same config and data dir,
//! every event that was committed reaches the backend (duplicates counted and
//! printed, none missing), each call's events in order; the calls that were up at
//! the kill get their records closed (`unspecified`) and a `call.hangup`; and the
//! `calls` table and the outbox agree at the kill (a record and its events
//! commit together).
//!
//! Peers: SIPp (Telnyx-shaped INVITEs from `tests/sipp/uac_telnyx.xml`, with the
//! call held 2 s instead of 0.5 s so that calls are up at the kill) against an
//! echo-agent route, and `tests/receivers/webhook_receiver.py` verifying every
//! signature — answering 500 until the kill, 200 after it.

mod common;
use common::receivers as harness;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::gateway::{Gateway, Route, Trunk};
use common::*;
use harness::{delivered, duplicates, rejected};
use rusqlite::{Connection, OpenFlags};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(60);
/// Calls SIPp places, at most 20 at once; each emits 3 events.
const CALLS: &str = "150";
/// Committed events at which the daemon is killed (of ~450).
const KILL_AT: usize = 300;

/// `uac_telnyx.xml` with the answered call held 2 s, written to `dir`.
fn long_call_scenario(dir: &Path) -> PathBuf {
    let text = std::fs::read_to_string(scenario("uac_telnyx.xml")).unwrap();
    let pause = "<pause milliseconds=\"500\"/>";
    assert!(text.contains(pause), "uac_telnyx.xml changed: update this test");
    let path = dir.join("uac_telnyx_2s.xml");
    std::fs::write(&path, text.replace(pause, "<pause milliseconds=\"2000\"/>")).unwrap();
    path
}

/// The daemon's store, read-only (as a technician's `sqlite3` would open it).
fn open_db(data: &Path) -> Connection {
    let c = Connection::open_with_flags(data.join("sipbridge.db"), OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    c.busy_timeout(Duration::from_secs(5)).unwrap();
    c
}

/// One `webhook_outbox` row.
#[derive(Debug, Clone)]
struct Row {
    seq: i64,
    event_id: String,
    event_type: String,
    session: String,
    payload: Value,
    delivered: bool,
}

fn outbox_rows(c: &Connection) -> Vec<Row> {
    let sql = "SELECT seq, event_id, event_type, call_session_id, body, delivered_at IS NOT NULL \
               FROM webhook_outbox ORDER BY seq";
    c.prepare(sql)
        .unwrap()
        .query_map([], |r| {
            let body: String = r.get(4)?;
            let data: Value = serde_json::from_str(&body).unwrap();
            Ok(Row {
                seq: r.get(0)?,
                event_id: r.get(1)?,
                event_type: r.get(2)?,
                session: r.get::<_, Option<String>>(3)?.unwrap_or_default(),
                payload: data["payload"].clone(),
                delivered: r.get(5)?,
            })
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// One `calls` row: (leg, session, state, hangup_cause, hangup_source, answered, quality JSON).
type CallRow = (String, String, String, Option<String>, Option<String>, bool, Option<String>);

fn call_rows(c: &Connection) -> BTreeMap<String, CallRow> {
    c.prepare(
        "SELECT call_leg_id, call_session_id, state, hangup_cause, hangup_source, answer_time IS NOT NULL, \
         quality_stats FROM calls",
    )
    .unwrap()
    .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?)))
    .unwrap()
    .map(|r| {
        let r: CallRow = r.unwrap();
        (r.0.clone(), r)
    })
    .collect()
}

fn committed_count(data: &Path) -> usize {
    if !data.join("sipbridge.db").exists() {
        return 0;
    }
    let c = open_db(data);
    c.query_row("SELECT count(*) FROM webhook_outbox", [], |r| r.get::<_, i64>(0)).unwrap_or(0) as usize
}

fn leg_of(p: &Value) -> String {
    p["call_leg_id"].as_str().unwrap_or_default().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_calls_with_hundreds_of_events_pending_loses_none() {
    let dir = tempfile::tempdir().unwrap();
    let mut gw = Gateway::builder(dir.path())
        .trunk(Trunk::new("telnyx-ip").allow("127.0.0.2/32"))
        .agent("echo", "builtin:echo", "")
        .route(Route::new().agent("echo"))
        .webhooks("retry_initial = \"200ms\"\nretry_max = \"2s\"\nmax_in_flight = 8")
        .receiver_args(&["--status", "500"])
        .start();
    let (port, data, config) = (gw.sip_port, gw.data.clone(), gw.config.clone());

    // Real calls, 20 at a time, 50 new ones per second at most.
    let long = long_call_scenario(dir.path());
    let target = format!("127.0.0.1:{port}");
    let args = sipp_args(
        long.to_str().unwrap(),
        "+13125550100",
        &target,
        "127.0.0.2",
        &["-t", "u1", "-m", CALLS, "-l", "20", "-r", "50"],
    );
    let sipp = Sipp::start(dir.path(), "calls", &args);
    let deadline = Instant::now() + WAIT;
    while committed_count(&data) < KILL_AT {
        assert!(gw.daemon.is_running(), "daemon died: {}", gw.stderr());
        assert!(Instant::now() < deadline, "only {} events committed; {}", committed_count(&data), sipp.report());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Killed by the signal (SIGKILL, by pid).
    gw.kill_9();
    drop(sipp); // its calls are dead with the daemon; stop it by pid

    // What was committed at the kill, read from the file the daemon left.
    let (rows, records) = {
        let c = open_db(&data);
        (outbox_rows(&c), call_rows(&c))
    };
    let before = gw.hooks().entries();
    let pending_at_kill = rows.iter().filter(|r| !r.delivered).count();
    assert!(delivered(&before).is_empty(), "the receiver answered 500 until the kill");
    assert!(pending_at_kill >= KILL_AT, "hundreds pending: {pending_at_kill}");
    let tried_at_kill = before.len();

    // The records and the events agree: each committed with the other.
    let initiated: HashSet<String> =
        rows.iter().filter(|r| r.event_type == "call.initiated").map(|r| leg_of(&r.payload)).collect();
    let ended: HashMap<String, String> = rows
        .iter()
        .filter(|r| r.event_type == "call.hangup")
        .map(|r| (leg_of(&r.payload), r.payload["hangup_cause"].as_str().unwrap().to_string()))
        .collect();
    let legs: HashSet<String> = records.keys().cloned().collect();
    assert_eq!(legs, initiated, "one calls row per committed call.initiated, and no other");
    let open: Vec<String> = records.values().filter(|r| r.2 != "ended").map(|r| r.0.clone()).collect();
    for r in records.values() {
        match ended.get(&r.0) {
            Some(cause) => {
                assert_eq!((r.2.as_str(), r.3.as_deref()), ("ended", Some(cause.as_str())), "{r:?}");
                assert_eq!((r.3.as_deref(), r.4.as_deref(), r.5), (Some("normal_clearing"), Some("caller"), true));
                assert!(r.6.as_deref().is_some_and(|q| q.contains("\"inbound\"")), "quality stats: {r:?}");
            }
            None => assert_ne!(r.2, "ended", "a record ended without its call.hangup committed: {r:?}"),
        }
    }
    assert!(!open.is_empty(), "calls were up at the kill (held 2 s each)");

    // Backend back; the daemon restarts on the same config and data dir.
    gw.hooks().control(json!({"status": 200}));
    gw.restart();
    let want: HashSet<String> = rows.iter().map(|r| r.event_id.clone()).collect();
    let open_set: HashSet<String> = open.iter().cloned().collect();
    let interrupted = |e: &[Value]| -> HashSet<String> {
        delivered(e)
            .iter()
            .filter(|x| x["event_type"] == "call.hangup")
            .map(|x| &x["body"]["data"]["payload"])
            .filter(|p| p["hangup_cause"] == "unspecified" && open_set.contains(&leg_of(p)))
            .map(leg_of)
            .collect()
    };
    let got = gw
        .hooks()
        .wait_until("every committed event and one hangup per interrupted call", WAIT, |e| {
            let ids: HashSet<String> =
                delivered(e).iter().filter_map(|x| x["event_id"].as_str().map(str::to_string)).collect();
            ids.is_superset(&want) && interrupted(e).len() == open.len()
        })
        .await;

    let arrived: HashSet<String> =
        delivered(&got).iter().filter_map(|x| x["event_id"].as_str().map(str::to_string)).collect();
    let missing: Vec<&String> = want.difference(&arrived).collect();
    assert!(missing.is_empty(), "{} committed events never arrived", missing.len());
    assert!(rejected(&got).is_empty(), "every signature verified: {:?}", rejected(&got));
    // Per call: first deliveries in commit order, the interrupted hangup last.
    let seq_of: HashMap<&str, i64> = rows.iter().map(|r| (r.event_id.as_str(), r.seq)).collect();
    let mut first_seen = HashSet::new();
    let mut by_session: BTreeMap<String, Vec<(i64, String)>> = BTreeMap::new();
    for e in delivered(&got) {
        let id = e["event_id"].as_str().unwrap().to_string();
        if first_seen.insert(id.clone()) {
            let seq = seq_of.get(id.as_str()).copied().unwrap_or(i64::MAX);
            let ty = e["event_type"].as_str().unwrap().to_string();
            by_session.entry(e["session"].as_str().unwrap_or("-").to_string()).or_default().push((seq, ty));
        }
    }
    for (session, events) in &by_session {
        let seqs: Vec<i64> = events.iter().map(|e| e.0).collect();
        let mut sorted = seqs.clone();
        sorted.sort();
        assert_eq!(seqs, sorted, "order of session {session}: {events:?}");
        let types: Vec<&str> = events.iter().map(|e| e.1.as_str()).collect();
        assert_eq!(types[0], "call.initiated", "session {session}: {types:?}");
        assert_eq!(types.last(), Some(&"call.hangup"), "every call ends with a hangup: {types:?}");
    }
    let sessions: HashSet<&String> = rows.iter().map(|r| &r.session).collect();
    assert!(sessions.iter().all(|s| by_session.contains_key(*s)), "every committed call's session arrived");
    let (dup_ids, extra) = duplicates(&got);

    // The startup pass closed the records of the calls that were up.
    let log = gw.stop();
    let after = call_rows(&open_db(&data));
    for leg in &open {
        let r = &after[leg];
        assert_eq!(
            (r.2.as_str(), r.3.as_deref(), r.4.as_deref()),
            ("ended", Some("unspecified"), Some("unknown")),
            "interrupted leg {leg}"
        );
    }
    assert!(log.contains("closed the records of calls interrupted by a crash"), "{log}");
    let (code, out, _) = run_cli(&["webhooks", "status", "-c", config.to_str().unwrap()], &[]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("pending: 0\n"), "{out}");
    eprintln!(
        "kill -9: {} events committed at the kill ({pending_at_kill} pending, {tried_at_kill} POSTs answered 500 before), \
         {} calls recorded, {} up at the kill; after the restart all {} arrived plus {} interrupted-call hangups; \
         duplicates: {dup_ids} events delivered {extra} extra times",
        rows.len(),
        records.len(),
        open.len(),
        want.len(),
        open.len()
    );
}
