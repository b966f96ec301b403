//! Issue 11, scenario 1, end to end on real peers: an inbound call through a
//! Telnyx-shaped IP trunk to a voice agent.
//!
//! - baresip (a real softphone, headless) on 127.0.0.2 stands in for Telnyx's
//!   proxy: the trunk admits 127.0.0.2/32 only, as a Telnyx IP connection does. It
//!   calls the box's number playing a sentence spoken by espeak-ng, then keys DTMF
//!   with RFC 4733 events, and hangs up when its WAV ends.
//! - The route streams the call to `tests/agents/telnyx_agent.py --mode
//!   prompt-echo`: at `start` the agent sends its own espeak-ng prompt (another
//!   voice, another sentence) in one message, then echoes. Its log is checked
//!   independently of the Rust code (`protocol_errors`).
//! - Afterwards: the agent saw connected/start/media/dtmf/stop with the call's ids
//!   and numbers; the stereo recording holds the caller's sentence on the left and
//!   the agent's prompt on the right (and not the other way round); baresip heard
//!   the prompt; the webhook receiver got every event, signature-verified, in the
//!   call's order with the exact digits; the SQLite call record is complete.

mod common;
#[path = "e2e/gateway.rs"]
mod gateway;

use std::time::Duration;

use common::agent::PyAgent;
use common::audio::{self, Found};
use gateway::*;
use serde_json::{Value, json};

const DIGITS: &str = "42#";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_telnyx_trunk_call_reaches_the_agent_and_is_recorded_reported_and_kept() {
    let dir = tempfile::tempdir().unwrap();
    // The caller: 0.3 s of silence, the sentence, then 3.5 s of silence for the
    // key presses; baresip hangs up when the file ends.
    let caller_wav = audio::espeak(
        dir.path(),
        "caller",
        "en",
        "Hello, I am calling about my order. It has not arrived yet.",
        300,
        3500,
    );
    let prompt_wav =
        audio::espeak(dir.path(), "prompt", "en+f3", "Thank you for calling. Please tell me how I can help.", 0, 0);
    let caller = audio::read_mono(&caller_wav);
    let prompt = audio::read_mono(&prompt_wav);
    let spoken = audio::speech_windows(&caller, 300.0);
    let speech_end = spoken.last().expect("espeak-ng spoke").end;

    let agent = PyAgent::start(dir.path(), "agent", "prompt-echo", &["--prompt", prompt_wav.to_str().unwrap()]);
    let gw = start(dir.path(), &telnyx_trunk_to_agent(&agent.url("/telnyx"), ""));
    // The digits after the sentence.
    let keys_at = Duration::from_secs_f64(audio::seconds(speech_end) + 0.4);
    let (phone, answered_at) = call_in(dir.path(), gw.sip_port, &caller_wav, keys_at, DIGITS);
    let closed = phone.wait_event("CALL_CLOSED", WAIT).unwrap_or_else(|| panic!("call ended: {}", phone.log()));
    eprintln!("baresip: call closed after {:.2} s: {}", answered_at.elapsed().as_secs_f64(), closed["param"]);

    // --- the agent's view ---
    let conns = agent.wait_connections(1, WAIT);
    assert_eq!(conns.len(), 1, "one WebSocket connection: {conns:?}");
    let c = &conns[0];
    assert_eq!(c["protocol_errors"], json!([]), "the box spoke Telnyx's protocol: {}", c["protocol_errors"]);
    assert_eq!(c["path"], "/telnyx");
    let msgs: Vec<&Value> = c["messages"].as_array().unwrap().iter().collect();
    let kinds: Vec<&str> = msgs.iter().map(|m| m["event"].as_str().unwrap_or("?")).collect();
    assert_eq!(&kinds[..2], ["connected", "start"], "{kinds:?}");
    assert_eq!(kinds.last(), Some(&"stop"), "{kinds:?}");
    let start = &msgs[1]["start"];
    assert_eq!((start["from"].as_str(), start["to"].as_str()), (Some(CALLER), Some(NUMBER)), "{start}");
    let ccid = start["call_control_id"].as_str().unwrap().to_string();
    let stop = msgs.last().unwrap();
    assert_eq!(stop["stop"]["call_control_id"], ccid.as_str());
    let summary = &c["summary"];
    assert_eq!(summary["dtmf"], DIGITS, "the agent got the exact key presses: {summary}");
    let inbound = summary["inbound_media"].as_u64().unwrap_or(0);
    let call_secs = audio::seconds(caller.len());
    // 50 frames a second while the caller's file plays, minus the key presses.
    assert!(inbound as f64 >= (call_secs - 1.5) * 50.0, "{inbound} media frames for a {call_secs:.1} s call");
    assert_eq!(summary["marks_returned"][0][0], "prompt-end", "the prompt played to its end: {summary}");
    let streamed = audio::stream_audio(&msgs, "inbound");
    let caller_streamed = audio::find(&audio::pcmu_round_trip(&caller), &streamed, -8000..16_000);
    eprintln!("the agent received the caller's sentence {}", show(&caller_streamed));
    assert!(caller_streamed.is_clear(), "the agent received the caller's speech: {caller_streamed:?}");

    // --- the webhooks: every event, verified, in the call's order ---
    let bodies = gw
        .unique_events("the call's events through call.recording.saved", |b| {
            b.iter().any(|x| event_type(x) == "call.recording.saved" && payload(x)["call_control_id"] == ccid.as_str())
        })
        .await;
    let call = of_leg(&bodies, &ccid);
    assert_eq!(
        types(&call),
        [
            "call.initiated",
            "call.answered",
            "streaming.started",
            "call.dtmf.received",
            "call.dtmf.received",
            "call.dtmf.received",
            "streaming.stopped",
            "call.hangup",
            "call.recording.saved"
        ],
        "webhooks of the call, in order"
    );
    let digits: String = call.iter().filter_map(|b| payload(b)["digit"].as_str()).collect();
    assert_eq!(digits, DIGITS);
    let session = payload(call[0])["call_session_id"].as_str().unwrap();
    assert_eq!(start["call_session_id"], session, "the agent and the webhooks name the same session");
    for b in &call {
        let p = payload(b);
        assert_eq!(p["connection_id"], "telnyx-ip", "{}", event_type(b));
        assert_eq!(p["call_session_id"], session, "{}", event_type(b));
        // Telnyx's streaming.* and call.recording.saved carry no numbers; the
        // call events do, and must carry the caller's and the dialled one.
        let numbered = ["call.initiated", "call.answered", "call.dtmf.received", "call.hangup"];
        if numbered.contains(&event_type(b)) || !p["from"].is_null() {
            assert_eq!((p["from"].as_str(), p["to"].as_str()), (Some(CALLER), Some(NUMBER)), "{}", event_type(b));
        }
        if numbered.contains(&event_type(b)) {
            assert_eq!(p["direction"], "incoming", "{}", event_type(b));
        }
    }
    assert_eq!(payload(call[2])["stream_id"], msgs[1]["stream_id"]);
    let hangup = payload(call[7]);
    assert_eq!(
        (hangup["hangup_cause"].as_str(), hangup["hangup_source"].as_str()),
        (Some("normal_clearing"), Some("caller"))
    );
    let received = hangup["call_quality_stats"]["inbound"]["packet_count"].as_str().and_then(|n| n.parse::<f64>().ok());
    assert!(received.is_some_and(|n| n >= (call_secs - 1.5) * 50.0), "RTP from baresip counted: {hangup}");
    let saved = payload(call[8]);
    assert_eq!(saved["channels"], "dual");

    // --- the recording: caller left, agent right ---
    let path = std::path::PathBuf::from(saved["file_path"].as_str().expect("file_path"));
    assert!(path.starts_with(&gw.recordings) && path.exists(), "{}", path.display());
    let (spec, left, right) = audio::read_stereo(&path);
    assert_eq!((spec.channels, spec.sample_rate, spec.bits_per_sample), (2, 8000, 16));
    let within = -8000..(2 * 8000);
    let caller_left = audio::find(&audio::pcmu_round_trip(&caller), &left, within.clone());
    let prompt_right = audio::find(&audio::pcmu_round_trip(&prompt), &right, within.clone());
    let prompt_left = audio::find(&prompt, &left, within.clone());
    let heard = phone.heard().map(|p| audio::read_mono(&p)).unwrap_or_default();
    let prompt_heard = audio::find(&audio::pcmu_round_trip(&prompt), &heard, within);
    eprintln!(
        "recording {:.2} s: caller's sentence on the left {}; agent prompt on the right {}; \
         prompt on the left {}; baresip heard the prompt {}",
        audio::seconds(left.len()),
        show(&caller_left),
        show(&prompt_right),
        show(&prompt_left),
        show(&prompt_heard)
    );
    assert!(caller_left.is_clear(), "the caller's speech is on the left channel: {caller_left:?}");
    assert!(prompt_right.is_clear(), "the agent's prompt is on the right channel: {prompt_right:?}");
    assert!(prompt_left.ncc < 0.3, "the prompt is not on the left channel: {prompt_left:?}");
    assert!(prompt_heard.is_clear(), "the caller heard the agent's prompt: {prompt_heard:?}");
    let recorded = audio::seconds(left.len());
    assert!(
        (recorded - call_secs).abs() < 1.0,
        "the file spans the call: {recorded:.2} s, caller's WAV {call_secs:.2} s"
    );
    assert!(
        audio::sox_channel_rms(&path, 1) > 0.01 && audio::sox_channel_rms(&path, 2) > 0.01,
        "sox hears both channels"
    );

    // --- the call record ---
    let row = gw.call_record(&ccid);
    eprintln!("calls row: {}", Value::Object(row.clone()));
    let expect = |k: &str, v: &str| assert_eq!(row[k].as_str(), Some(v), "calls.{k}: {row:?}");
    expect("call_leg_id", payload(call[0])["call_leg_id"].as_str().unwrap());
    expect("call_session_id", session);
    expect("trunk", "telnyx-ip");
    expect("direction", "incoming");
    expect("from_number", CALLER);
    expect("to_number", NUMBER);
    expect("route", "main number to the agent");
    expect("agent", "support-bot");
    expect("state", "ended");
    expect("hangup_cause", "normal_clearing");
    expect("hangup_source", "caller");
    expect("stream_url", &agent.url("/telnyx"));
    assert_eq!(row["sip_hangup_cause"], hangup["sip_hangup_cause"]);
    let (t0, t1, t2) = (
        time(&Value::Object(row.clone()), "start_time"),
        time(&Value::Object(row.clone()), "answer_time"),
        time(&Value::Object(row.clone()), "end_time"),
    );
    assert!(t0 <= t1 && t1 <= t2, "start ≤ answer ≤ end: {row:?}");
    let stats: Value = serde_json::from_str(row["quality_stats"].as_str().unwrap_or("null")).unwrap();
    assert_eq!(stats, hangup["call_quality_stats"], "the record keeps the hangup's quality stats");
    let paths: Value = serde_json::from_str(row["recording_paths"].as_str().unwrap_or("[]")).unwrap();
    assert_eq!(paths, json!([path.display().to_string()]));
    let empty: Vec<&String> = row
        .iter()
        .filter(|(k, v)| {
            v.is_null() && !["custom_headers", "bridged_call_leg_id", "bridged_call_control_id"].contains(&k.as_str())
        })
        .map(|(k, _)| k)
        .collect();
    assert!(empty.is_empty(), "every column of an ended, recorded, streamed call is filled: {empty:?}");
    gw.stop();
}

/// The trunk admits Telnyx's proxy (127.0.0.2) only: the same softphone calling
/// from 127.0.0.5 gets 403 (`[sip] unknown_source = "reject"`; the default drops
/// it unanswered, see tests/sip_security.rs), and no call starts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_from_outside_the_trunks_allow_list_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let source = audio::espeak(dir.path(), "caller", "en", "Let me in.", 300, 1000);
    let gw = start(dir.path(), &telnyx_trunk_to_agent("ws://127.0.0.1:9/unused", ""));
    let text = std::fs::read_to_string(&gw.config).unwrap().replace("[sip]\n", "[sip]\nunknown_source = \"reject\"\n");
    std::fs::write(&gw.config, text).unwrap();
    gw.daemon.signal(nix::sys::signal::Signal::SIGHUP);
    let reloaded = std::time::Instant::now() + WAIT;
    while !gw.daemon.stderr().contains("configuration reloaded") {
        assert!(std::time::Instant::now() < reloaded, "no reload: {}", gw.daemon.stderr());
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut phone = common::baresip::Baresip::start(
        dir.path(),
        "stranger-phone",
        common::baresip::Phone {
            ip: "127.0.0.5",
            user: CALLER,
            auto_answer: false,
            source: &source,
            max: Duration::from_secs(30),
        },
    );
    phone.dial(&format!("sip:{NUMBER}@127.0.0.1:{}", gw.sip_port));
    let closed = phone.wait_event("CALL_CLOSED", WAIT).unwrap_or_else(|| panic!("{}", phone.log()));
    assert!(closed["param"].as_str().is_some_and(|p| p.contains("403")), "refused with 403: {closed}");
    assert!(phone.events().iter().all(|e| e["type"] != "CALL_ESTABLISHED"), "{}", phone.log());
    // After a clean stop every committed event has been offered to the backend.
    let hooks = gw.hooks().log.clone();
    gw.stop();
    let got = std::fs::read_to_string(hooks).unwrap_or_default();
    assert!(got.is_empty(), "no call, no events: {got}");
}

fn show(f: &Found) -> String {
    format!(
        "at {:.3} s (envelope r {:.2}, ncc {:.3}, {}/{} segments)",
        f.at_seconds(),
        f.envelope,
        f.ncc,
        f.segments.0,
        f.segments.1
    )
}
