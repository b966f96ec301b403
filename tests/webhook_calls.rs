//! Webhooks from real calls: the daemon binary takes a SIPp call (Telnyx-shaped),
//! and the Python receiver — verifying every Ed25519 signature with the public key
//! `sipbridge keygen` printed — gets call.initiated, call.answered, call.hangup in
//! order with Telnyx's envelope and field names; what only the call record keeps
//! (the leg's quality series) is not in the webhook.

mod common;

use std::time::Duration;

use common::gateway::{Gateway, Route, Trunk};
use common::*;

const WAIT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_produces_signed_telnyx_webhooks_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let gw = Gateway::builder(dir.path())
        .trunk(Trunk::new("telnyx-ip").allow("127.0.0.2/32"))
        .agent("echo", "builtin:echo", "")
        .route(Route::new().agent("echo"))
        .webhooks("")
        .start();
    let port = gw.sip_port;
    let target = format!("127.0.0.1:{port}");
    let dd = dir.path().to_path_buf();
    let code = tokio::task::spawn_blocking(move || {
        let mut s =
            Sipp::start(&dd, "call", &sipp_args("uac_telnyx.xml", "+13125550100", &target, "127.0.0.2", &["-t", "u1"]));
        (s.wait(WAIT), s.report())
    })
    .await
    .unwrap();
    assert_eq!(code.0, 0, "{}", code.1);
    // Delivered, every signature verified.
    let bodies = gw.events("three call events", |b| b.len() >= 3).await;
    let types: Vec<&str> = bodies.iter().map(|b| b["data"]["event_type"].as_str().unwrap()).collect();
    assert_eq!(types, ["call.initiated", "call.answered", "call.hangup"]);
    for b in &bodies {
        assert_eq!(b["data"]["record_type"], "event");
        assert!(b["data"]["id"].as_str().is_some_and(|id| uuid::Uuid::parse_str(id).is_ok()));
        assert!(b["data"]["occurred_at"].as_str().is_some_and(|t| t.ends_with('Z')));
        assert_eq!(b["meta"]["attempt"], 1);
        let p = &b["data"]["payload"];
        assert_eq!(p["connection_id"], "telnyx-ip");
        assert_eq!(p["from"], "+14155550123");
        assert_eq!(p["to"], "+13125550100");
        assert_eq!(p["direction"], "incoming");
        assert_eq!(p["call_control_id"], bodies[0]["data"]["payload"]["call_control_id"]);
    }
    let hangup = &bodies[2]["data"]["payload"];
    assert_eq!(hangup["hangup_cause"], "normal_clearing");
    assert_eq!(hangup["hangup_source"], "caller");
    assert_eq!(hangup["sip_hangup_cause"], "200");
    assert!(hangup["call_quality_stats"]["inbound"]["mos"].is_string(), "{hangup}");
    // Telnyx's call.hangup fields (PROTOCOLS.md §2), nothing of the box's own.
    let mut keys: Vec<&str> = hangup.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "call_control_id",
            "call_leg_id",
            "call_quality_stats",
            "call_session_id",
            "client_state",
            "connection_id",
            "direction",
            "end_time",
            "from",
            "hangup_cause",
            "hangup_source",
            "sip_hangup_cause",
            "start_time",
            "state",
            "to"
        ],
        "{hangup}"
    );
    let (config, data) = (gw.config.clone(), gw.data.clone());
    gw.stop();
    // The call record, written from those events, as `sqlite3` shows it.
    let db =
        rusqlite::Connection::open_with_flags(data.join("sipbridge.db"), rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    let columns = "call_leg_id, call_control_id, call_session_id, trunk, direction, from_number, to_number, state, \
                   start_time, answer_time, end_time, hangup_cause, hangup_source, sip_hangup_cause, quality_stats, \
                   custom_headers, recording_paths, quality_samples";
    let rows: Vec<Vec<Option<String>>> = db
        .prepare(&format!("SELECT {columns} FROM calls"))
        .unwrap()
        .query_map([], |r| (0..18).map(|i| r.get::<_, Option<String>>(i)).collect())
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(rows.len(), 1, "one row for the one leg");
    let r: Vec<&str> = rows[0].iter().map(|c| c.as_deref().unwrap_or("NULL")).collect();
    let p0 = &bodies[0]["data"]["payload"];
    assert_eq!(
        r[0..3],
        [
            p0["call_leg_id"].as_str().unwrap(),
            p0["call_control_id"].as_str().unwrap(),
            p0["call_session_id"].as_str().unwrap()
        ]
    );
    assert_eq!(r[3..8], ["telnyx-ip", "incoming", "+14155550123", "+13125550100", "ended"]);
    assert_eq!(r[8], p0["start_time"].as_str().unwrap(), "start_time as in call.initiated");
    assert_eq!(r[9], bodies[1]["data"]["occurred_at"].as_str().unwrap(), "answer_time = call.answered's occurred_at");
    assert_eq!(r[10], hangup["end_time"].as_str().unwrap());
    assert_eq!(r[11..14], ["normal_clearing", "caller", "200"]);
    let quality: serde_json::Value = serde_json::from_str(r[14]).unwrap();
    assert_eq!(quality, hangup["call_quality_stats"]);
    let headers: serde_json::Value = serde_json::from_str(r[15]).unwrap();
    assert!(
        headers.as_array().unwrap().iter().any(|h| h["name"] == "X-Telnyx-Session-Id"),
        "the INVITE's X- headers: {headers}"
    );
    assert_eq!(r[16], "[]", "no recording on this route");
    // The series is in the record, not in the webhook.
    let samples: serde_json::Value = serde_json::from_str(r[17]).unwrap();
    assert_eq!(samples["interval"], "rtcp", "{samples}");
    assert!(!samples["points"].as_array().unwrap().is_empty(), "{samples}");
    // The CLI sees the outbox too.
    let (code, out, _) = run_cli(&["webhooks", "status", "-c", config.to_str().unwrap()], &[]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("pending"), "{out}");
}
