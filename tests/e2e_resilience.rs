//! Issue 11, scenario 5: things going wrong during the real-peer inbound scenario
//! (baresip on 127.0.0.2 through the Telnyx-shaped trunk to the Python agent,
//! recorded, signed webhooks; see `e2e_inbound.rs`).
//!
//! - The agent drops its TCP connection mid-call (no close frame) on an agent with
//!   `on_disconnect = "continue"`: the call stays up until the caller hangs up,
//!   baresip keeps receiving RTP, the recording goes on to the end with the
//!   caller's whole sentence, and `streaming.failed` says why.
//! - The webhook receiver is down for the whole call: once it is back, it gets
//!   every event of the call, verified, in order.
//! - `kill -9` of the daemon mid-call: after the restart the `.wav.part` left on
//!   disk is repaired into a WAV holding the caller's speech up to the last second
//!   before the kill, and every event that was not delivered before the kill
//!   arrives, plus the `call.hangup` that closes the interrupted call.
//!   (`tests/recording.rs` and `tests/webhook_crash.rs` test the same mechanisms
//!   with scripted peers and load; here they run inside the real-peer scenario.)

mod common;
#[path = "e2e/gateway.rs"]
mod gateway;

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::agent::PyAgent;
use common::audio;
use common::receivers::delivered;
use gateway::*;
use serde_json::{Value, json};

/// The agent drops at 2.5 s; the caller talks for ~8 s and hangs up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_dropped_mid_call_leaves_the_call_up_and_the_recording_going() {
    let dir = tempfile::tempdir().unwrap();
    let caller_wav = audio::espeak(
        dir.path(),
        "caller",
        "en",
        "Hello, I am calling about my order. It was supposed to arrive on Monday, \
         and it is now Thursday. Could you please check where it is?",
        300,
        1000,
    );
    let caller = audio::read_mono(&caller_wav);
    let call_secs = audio::seconds(caller.len());
    assert!(call_secs > 6.0, "the sentence outlasts the agent: {call_secs:.1} s");
    let agent = PyAgent::start(dir.path(), "agent", "drop-after", &["--drop-after", "2.5"]);
    let gw = start(dir.path(), &telnyx_trunk_to_agent(&agent.url("/telnyx"), "on_disconnect = \"continue\""));
    let (phone, answered) = call_in(dir.path(), gw.sip_port, &caller_wav, Duration::ZERO, "");
    let closed = phone.wait_event("CALL_CLOSED", WAIT).unwrap_or_else(|| panic!("{}", phone.log()));
    let lasted = answered.elapsed().as_secs_f64();
    assert_eq!(closed["param"], "end of file", "baresip hung up when its file ended, not the box: {closed}");
    assert!(lasted >= call_secs - 0.5, "the call lasted {lasted:.2} s of the caller's {call_secs:.2} s");

    let conns = agent.wait_connections(1, WAIT);
    assert_eq!(conns[0]["close"]["by"], "agent-abort", "{}", conns[0]["close"]);
    let bodies = gw
        .unique_events("the call's events through call.recording.saved", |b| {
            b.iter().any(|x| event_type(x) == "call.recording.saved")
        })
        .await;
    let ccid = payload(&bodies[0])["call_control_id"].as_str().unwrap().to_string();
    let call = of_leg(&bodies, &ccid);
    assert_eq!(
        types(&call),
        [
            "call.initiated",
            "call.answered",
            "streaming.started",
            "streaming.failed",
            "call.hangup",
            "call.recording.saved"
        ]
    );
    let why = payload(call[3])["failure_reason"].as_str().unwrap_or_default();
    assert!(why.contains("connection lost"), "failure_reason: {why:?}");
    let hangup = payload(call[4]);
    assert_eq!(
        (hangup["hangup_cause"].as_str(), hangup["hangup_source"].as_str()),
        (Some("normal_clearing"), Some("caller"))
    );

    // The recording spans the whole call, and the caller's whole sentence — most
    // of it spoken after the agent was gone — is on the left.
    let saved = payload(call[5]);
    let path = PathBuf::from(saved["file_path"].as_str().unwrap());
    let (_, left, right) = audio::read_stereo(&path);
    let recorded = audio::seconds(left.len());
    let found = audio::find(&audio::pcmu_round_trip(&caller), &left, -8000..16_000);
    eprintln!(
        "agent dropped at 2.5 s: call {lasted:.2} s, recording {recorded:.2} s, caller's sentence on the left at \
         {:.3} s (ncc {:.3}, {}/{} segments); right channel rms before the drop {:.0}, after it {:.0}",
        found.at_seconds(),
        found.ncc,
        found.segments.0,
        found.segments.1,
        audio::rms(&right[..16_000.min(right.len())]),
        audio::rms(&right[28_000.min(right.len())..])
    );
    assert!((recorded - lasted).abs() < 1.0, "recorded to the end: {recorded:.2} s of a {lasted:.2} s call");
    assert!(found.is_clear(), "the caller's speech, before and after the drop: {found:?}");
    // The agent's echo is on the right until it dropped, silence after.
    assert!(audio::rms(&right[..20_000]) > 100.0, "the echo before the drop");
    assert!(audio::rms(&right[28_000..]) < 5.0, "nothing from the agent after the drop");
    // baresip kept receiving RTP (silence) from the box to the end of the call.
    let heard = phone.heard().map(|p| audio::read_mono(&p)).unwrap_or_default();
    assert!(
        audio::seconds(heard.len()) >= lasted - 1.0,
        "baresip received {:.2} s of RTP",
        audio::seconds(heard.len())
    );
    gw.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_down_for_the_whole_call_gets_every_event_once_back() {
    let dir = tempfile::tempdir().unwrap();
    let caller_wav = audio::espeak(dir.path(), "caller", "en", "Hello, is anybody there?", 300, 2500);
    let prompt_wav = audio::espeak(dir.path(), "prompt", "en+f3", "Yes, I am here.", 0, 0);
    let agent = PyAgent::start(dir.path(), "agent", "prompt-echo", &["--prompt", prompt_wav.to_str().unwrap()]);
    let mut gw = start(dir.path(), &telnyx_trunk_to_agent(&agent.url("/telnyx"), ""));
    gw.hooks_mut().stop();
    let speech_end = audio::speech_windows(&audio::read_mono(&caller_wav), 300.0).last().unwrap().end;
    let keys_at = Duration::from_secs_f64(audio::seconds(speech_end) + 0.3);
    let (phone, _) = call_in(dir.path(), gw.sip_port, &caller_wav, keys_at, "5*");
    assert!(phone.wait_event("CALL_CLOSED", WAIT).is_some(), "{}", phone.log());
    // The call is over; its last event is committed once call.recording.saved is.
    let deadline = Instant::now() + WAIT;
    let outbox = |state: &str| -> i64 {
        rusqlite::Connection::open_with_flags(gw.data.join("sipbridge.db"), rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .and_then(|c| {
                c.query_row(&format!("SELECT count(*) FROM webhook_outbox_state WHERE state = '{state}'"), [], |r| {
                    r.get(0)
                })
            })
            .unwrap_or(0)
    };
    while outbox("pending") < 8 {
        assert!(Instant::now() < deadline, "8 events pending while the backend is down: {}", outbox("pending"));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(gw.hooks().entries().is_empty(), "the backend was down");
    let (code, status, _) = common::run_cli(&["webhooks", "status", "-c", gw.config.to_str().unwrap()], &[]);
    assert_eq!(code, 0, "{status}");
    eprintln!("while the backend is down:\n{status}");
    assert!(status.contains("pending: 8\n") && status.contains("last error"), "{status}");

    // Back on the same port: everything arrives, in the call's order.
    let back = Instant::now();
    gw.receiver.as_mut().expect("webhooks on").restart();
    let bodies = gw
        .unique_events("every event after the backend came back", |b| {
            b.iter().any(|x| event_type(x) == "call.recording.saved")
        })
        .await;
    eprintln!("all events delivered {:.2} s after the backend came back", back.elapsed().as_secs_f64());
    let all: Vec<&Value> = bodies.iter().collect();
    assert_eq!(
        types(&all),
        [
            "call.initiated",
            "call.answered",
            "streaming.started",
            "call.dtmf.received",
            "call.dtmf.received",
            "streaming.stopped",
            "call.hangup",
            "call.recording.saved"
        ]
    );
    let digits: String = all.iter().filter_map(|b| payload(b)["digit"].as_str()).collect();
    assert_eq!(digits, "5*");
    let first_attempt = bodies[0]["meta"]["attempt"].as_u64().unwrap_or(0);
    assert!(first_attempt > 1, "call.initiated was retried while the backend was down: attempt {first_attempt}");
    // The receiver has every body; the worker marks the last one delivered just
    // after its 2xx, so wait for that rather than racing it.
    let deadline = Instant::now() + WAIT;
    while outbox("pending") != 0 {
        assert!(Instant::now() < deadline, "still pending after delivery: {}", outbox("pending"));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    gw.stop();
}

/// Where the recording of the call killed under the daemon ends up, and which
/// events arrived after the restart.
struct AfterKill {
    bodies: Vec<Value>,
    after_restart: Vec<Value>,
    ccid: String,
    wav: PathBuf,
    gw: Gateway,
}

/// The call is killed 3 s after the caller's DTMF; the backend answers 500 from
/// the key presses on, so the digits and everything later are undelivered at the kill.
async fn kill_9_mid_call(dir: &tempfile::TempDir) -> AfterKill {
    let caller_wav = audio::espeak(
        dir.path(),
        "caller",
        "en",
        "Hello, I am calling about my order. It was supposed to arrive on Monday, \
         and it is now Thursday. Could you please check where it is?",
        300,
        3000,
    );
    let caller = audio::read_mono(&caller_wav);
    let agent = PyAgent::start(dir.path(), "agent", "echo", &[]);
    let mut gw = start(dir.path(), &telnyx_trunk_to_agent(&agent.url("/telnyx"), ""));
    let (phone, answered) = call_in(dir.path(), gw.sip_port, &caller_wav, Duration::from_millis(1500), "");
    let bodies =
        gw.unique_events("streaming.started", |b| b.iter().any(|x| event_type(x) == "streaming.started")).await;
    let ccid = payload(&bodies[0])["call_control_id"].as_str().unwrap().to_string();
    gw.hooks().control(json!({"status": 500}));
    let mut phone = phone;
    std::thread::sleep(Duration::from_millis(1500).saturating_sub(answered.elapsed()));
    for d in "31".chars() {
        phone.press(d);
        std::thread::sleep(Duration::from_millis(400));
    }
    let part = files_ending(&gw.recordings, ".wav.part").pop().expect("a .wav.part while the call is up");
    std::thread::sleep(Duration::from_secs(5).saturating_sub(answered.elapsed()));
    let killed_after = answered.elapsed();
    gw.kill_9();
    assert!(phone.events().iter().all(|e| e["type"] != "CALL_CLOSED"), "the call was up at the kill");
    assert!(part.exists() && files_ending(&gw.recordings, ".wav").is_empty(), "only the .part is on disk");
    let before: HashSet<String> =
        delivered(&gw.hooks().entries()).iter().filter_map(|e| e["event_id"].as_str().map(str::to_string)).collect();
    let committed: Vec<(String, String)> = {
        let c = rusqlite::Connection::open_with_flags(
            gw.data.join("sipbridge.db"),
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )
        .unwrap();
        let mut s = c.prepare("SELECT event_id, event_type FROM webhook_outbox ORDER BY seq").unwrap();
        s.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).unwrap().map(|r| r.unwrap()).collect()
    };
    let missing: Vec<&(String, String)> = committed.iter().filter(|(id, _)| !before.contains(id)).collect();
    eprintln!("kill -9 {:.2} s after the answer; undelivered at the kill: {missing:?}", killed_after.as_secs_f64());
    assert!(
        missing.iter().filter(|(_, t)| t == "call.dtmf.received").count() == 2,
        "the key presses were committed and not delivered: {missing:?}"
    );

    // Backend well again; the daemon restarts on the same config and data dir.
    gw.hooks().control(json!({"status": 200}));
    gw.restart();
    let log = gw.daemon.stderr();
    let wav = PathBuf::from(part.to_string_lossy().strip_suffix(".part").unwrap());
    assert!(!part.exists() && wav.exists(), "the .part was repaired into {}: {log}", wav.display());
    assert!(log.contains("recording left by a crash repaired and finalized"), "{log}");
    let bodies = gw
        .unique_events("the undelivered events, the interrupted call's hangup and its recording", |b| {
            let ids: HashSet<&str> = b.iter().filter_map(|x| x["data"]["id"].as_str()).collect();
            let of_call =
                |t: &str| b.iter().any(|x| event_type(x) == t && payload(x)["call_control_id"] == ccid.as_str());
            missing.iter().all(|(id, _)| ids.contains(id.as_str()))
                && of_call("call.hangup")
                && of_call("call.recording.saved")
        })
        .await;
    let after_restart: Vec<Value> =
        bodies.iter().filter(|b| !before.contains(b["data"]["id"].as_str().unwrap_or_default())).cloned().collect();

    // The repaired file: the caller's speech up to at most one second before the kill.
    let (_, left, _) = audio::read_stereo(&wav);
    let kept = audio::seconds(left.len());
    let said = ((killed_after.as_secs_f64() - 1.0) * 8000.0) as usize;
    let found = audio::find(&audio::pcmu_round_trip(&caller[..said.min(caller.len())]), &left, -8000..16_000);
    eprintln!(
        "repaired {}: {kept:.2} s kept of {:.2} s recorded before the kill; caller's speech up to 1 s before \
         the kill: at {:.3} s, ncc {:.3}, {}/{} segments",
        wav.display(),
        killed_after.as_secs_f64(),
        found.at_seconds(),
        found.ncc,
        found.segments.0,
        found.segments.1
    );
    assert!(kept + 1.0 >= killed_after.as_secs_f64() && kept <= killed_after.as_secs_f64() + 0.1, "{kept:.2} s");
    assert!(found.is_clear(), "the caller's speech to the last second: {found:?}");
    drop(phone);
    AfterKill { bodies, after_restart, ccid, wav, gw }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_call_then_the_recording_is_repaired_and_the_missing_events_delivered() {
    let dir = tempfile::tempdir().unwrap();
    let k = kill_9_mid_call(&dir).await;
    let late = of_leg(&k.after_restart, &k.ccid);
    eprintln!("delivered after the restart: {:?}", types(&late));
    assert_eq!(&types(&late)[..2], ["call.dtmf.received", "call.dtmf.received"], "in the call's order");
    let digits: String = late.iter().filter_map(|b| payload(b)["digit"].as_str()).collect();
    assert_eq!(digits, "31");
    let hangup = late.iter().find(|b| event_type(b) == "call.hangup").expect("a call.hangup for the interrupted call");
    assert_eq!(
        (payload(hangup)["hangup_cause"].as_str(), payload(hangup)["hangup_source"].as_str()),
        (Some("unspecified"), Some("unknown"))
    );
    // Every event of the call, first deliveries in the order they occurred.
    let all = of_leg(&k.bodies, &k.ccid);
    let kinds = types(&all);
    assert_eq!(&kinds[..3], ["call.initiated", "call.answered", "streaming.started"], "{kinds:?}");
    assert_eq!(kinds.iter().filter(|t| **t == "call.hangup").count(), 1, "{kinds:?}");
    let row = k.gw.call_record(&k.ccid);
    assert_eq!(
        (row["state"].as_str(), row["hangup_cause"].as_str(), row["hangup_source"].as_str()),
        (Some("ended"), Some("unspecified"), Some("unknown")),
        "the record of the interrupted call is closed: {row:?}"
    );
    k.gw.stop();
}

/// A recorded call always ends with `call.recording.saved` (Telnyx's contract); a
/// recording repaired after a crash should be announced the same way and listed
/// in the call record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_call_then_the_repaired_recording_is_announced() {
    let dir = tempfile::tempdir().unwrap();
    let k = kill_9_mid_call(&dir).await;
    let late = of_leg(&k.after_restart, &k.ccid);
    let saved = late
        .iter()
        .find(|b| event_type(b) == "call.recording.saved")
        .unwrap_or_else(|| panic!("no call.recording.saved after the restart: {:?}", types(&late)));
    assert_eq!(payload(saved)["file_path"].as_str(), Some(k.wav.to_str().unwrap()));
    let row = k.gw.call_record(&k.ccid);
    let paths: Value = serde_json::from_str(row["recording_paths"].as_str().unwrap_or("[]")).unwrap();
    assert_eq!(paths, json!([k.wav.display().to_string()]));
    k.gw.stop();
}
