//! Issue 11, scenarios 2 and 3, end to end on real peers: calls that leave the box.
//!
//! - **From the API** (`POST /v2/calls`): the box dials through a Telnyx-shaped
//!   trunk whose peer is baresip (auto-answer, on 127.0.0.2), streams the answered
//!   call to the Python agent (`prompt-echo`), records it from the answer, and hangs
//!   up on the API's `hangup`. Checked as scenario 1: the agent's protocol log, the
//!   stereo recording (callee's espeak-ng sentence left, agent's prompt right),
//!   what baresip heard, the signed webhooks in order, the call record.
//! - **LiveKit's outbound trunk through the box to Telnyx**: a SIPp UAC on
//!   127.0.0.4 authenticates with digest credentials (the trunk's
//!   `inbound_username`/`inbound_password`, as LiveKit's `auth_username`/
//!   `auth_password`) and calls a number the route forwards to the Telnyx trunk,
//!   whose peer is a SIPp UAS with `-rtp_echo` on 127.0.0.3. Media is anchored
//!   (both SDPs carry the box's address) and recorded (speech left, its echo
//!   right); both legs share a `call_session_id`; a BYE from either end tears down
//!   both legs (two runs). Telnyx never answering the box's BYE is
//!   `tests/bye_unanswered.rs`'s.

mod common;
#[path = "e2e/gateway.rs"]
mod gateway;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::agent::PyAgent;
use common::audio::{self, Found};
use common::baresip::{Baresip, Phone};
use common::{free_port, scenario};
use gateway::*;
use serde_json::{Value, json};

const BOX_NUMBER: &str = "+13125550100";
const CUSTOMER: &str = "+14155550199";
const DIGITS: &str = "79";

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_call_out_through_the_trunk_is_streamed_recorded_reported_and_hung_up() {
    let dir = tempfile::tempdir().unwrap();
    // The customer answers and talks; its file is long (20 s of silence after the
    // sentence) so that the API's hangup, not the file's end, ends the call.
    let callee_wav =
        audio::espeak(dir.path(), "callee", "en", "Hello, this is the customer. Yes, I can talk now.", 300, 20_000);
    let prompt_wav =
        audio::espeak(dir.path(), "prompt", "en+f3", "Hi, this is the pharmacy calling about your prescription.", 0, 0);
    let callee = audio::read_mono(&callee_wav);
    let prompt = audio::read_mono(&prompt_wav);
    let speech_end = audio::speech_windows(&callee, 300.0).last().expect("espeak-ng spoke").end;
    let mut phone = Baresip::start(
        dir.path(),
        "customer-phone",
        Phone { ip: "127.0.0.2", user: CUSTOMER, auto_answer: true, source: &callee_wav, max: Duration::from_secs(90) },
    );
    let agent = PyAgent::start(dir.path(), "agent", "prompt-echo", &["--prompt", prompt_wav.to_str().unwrap()]);
    let body = format!(
        "[[trunk]]\nname = \"telnyx-ip\"\nprovider = \"telnyx\"\nproxy = \"sip:127.0.0.2:{port}\"\n\
         inbound_allow = [\"127.0.0.2/32\"]\nnumbers = [\"{BOX_NUMBER}\"]\n",
        port = phone.sip_port
    );
    let gw = start(dir.path(), &body);

    let (code, created) = gw
        .api()
        .call(
            reqwest::Method::POST,
            "/v2/calls",
            Some(json!({
                "connection_id": "telnyx-ip",
                "to": CUSTOMER,
                "from": BOX_NUMBER,
                "timeout_secs": 20,
                "client_state": "cmVmaWxsLTQy",
                "stream_url": agent.url("/outbound"),
                "stream_track": "both_tracks",
                "stream_bidirectional_mode": "rtp",
                "record": "record-from-answer",
                "record_channels": "dual",
            })),
        )
        .await;
    assert_eq!(code, 200, "{created}");
    let ccid = created["data"]["call_control_id"].as_str().expect("call_control_id").to_string();
    let answered = phone.wait_event("CALL_ESTABLISHED", WAIT);
    assert!(answered.is_some(), "baresip answered: {}\n{}", phone.log(), gw.daemon.stderr());
    let answered_at = Instant::now();
    std::thread::sleep(Duration::from_secs_f64(audio::seconds(speech_end) + 0.4).saturating_sub(answered_at.elapsed()));
    for d in DIGITS.chars() {
        phone.press(d);
        std::thread::sleep(Duration::from_millis(400));
    }
    // Let the prompt finish if it is longer than the customer's sentence.
    let prompt_end = Duration::from_secs_f64(audio::seconds(prompt.len()) + 0.6);
    std::thread::sleep(prompt_end.saturating_sub(answered_at.elapsed()));
    let (code, e) =
        gw.api().call(reqwest::Method::POST, &format!("/v2/calls/{ccid}/actions/hangup"), Some(json!({}))).await;
    assert_eq!(code, 200, "{e}");
    let closed = phone.wait_event("CALL_CLOSED", WAIT);
    assert!(closed.is_some(), "the box's BYE reached baresip: {}", phone.log());
    let call_secs = answered_at.elapsed().as_secs_f64();
    let (code, e) =
        gw.api().call(reqwest::Method::POST, &format!("/v2/calls/{ccid}/actions/hangup"), Some(json!({}))).await;
    assert_eq!((code, e["errors"][0]["code"].as_str()), (422, Some("90018")), "the call has ended: {e}");

    // --- the agent ---
    let conns = agent.wait_connections(1, WAIT);
    assert_eq!(conns.len(), 1, "{conns:?}");
    let c = &conns[0];
    assert_eq!(c["protocol_errors"], json!([]), "{}", c["protocol_errors"]);
    assert_eq!(c["path"], "/outbound");
    let msgs: Vec<&Value> = c["messages"].as_array().unwrap().iter().collect();
    let kinds: Vec<&str> = msgs.iter().map(|m| m["event"].as_str().unwrap_or("?")).collect();
    assert_eq!(&kinds[..2], ["connected", "start"], "{kinds:?}");
    assert_eq!(kinds.last(), Some(&"stop"), "{kinds:?}");
    let start = &msgs[1]["start"];
    assert_eq!(start["call_control_id"], ccid.as_str());
    assert_eq!((start["from"].as_str(), start["to"].as_str()), (Some(BOX_NUMBER), Some(CUSTOMER)), "{start}");
    assert_eq!(start["client_state"], "cmVmaWxsLTQy");
    let summary = &c["summary"];
    assert_eq!(summary["dtmf"], DIGITS, "{summary}");
    assert!(summary["inbound_media"].as_u64().unwrap_or(0) as f64 >= (call_secs - 1.5) * 50.0, "{summary}");
    assert!(summary["outbound_media"].as_u64().unwrap_or(0) >= 50, "both tracks: {summary}");

    // --- the webhooks ---
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
            "streaming.stopped",
            "call.hangup",
            "call.recording.saved"
        ]
    );
    let digits: String = call.iter().filter_map(|b| payload(b)["digit"].as_str()).collect();
    assert_eq!(digits, DIGITS);
    for b in &call {
        let p = payload(b);
        assert_eq!(p["connection_id"], "telnyx-ip", "{}", event_type(b));
        assert_eq!(p["call_session_id"], start["call_session_id"], "{}", event_type(b));
        assert_eq!(p["client_state"], "cmVmaWxsLTQy", "{}", event_type(b));
        let numbered = ["call.initiated", "call.answered", "call.dtmf.received", "call.hangup"];
        if numbered.contains(&event_type(b)) || !p["from"].is_null() {
            assert_eq!((p["from"].as_str(), p["to"].as_str()), (Some(BOX_NUMBER), Some(CUSTOMER)), "{}", event_type(b));
        }
        if numbered.contains(&event_type(b)) {
            assert_eq!(p["direction"], "outgoing", "{}", event_type(b));
        }
    }
    let hangup = payload(call[6]);
    assert_eq!(hangup["hangup_cause"], "normal_clearing", "{hangup}");
    assert_eq!(hangup["hangup_source"], "caller", "the box, this leg's caller, hung up: {hangup}");
    let saved = payload(call[7]);

    // --- the recording, from the answer: the customer left, the agent right ---
    let path = PathBuf::from(saved["file_path"].as_str().expect("file_path"));
    let (spec, left, right) = audio::read_stereo(&path);
    assert_eq!((spec.channels, spec.sample_rate), (2, 8000));
    let within = -8000..(2 * 8000);
    let callee_left = audio::find(&audio::pcmu_round_trip(&callee[..speech_end]), &left, within.clone());
    let prompt_right = audio::find(&audio::pcmu_round_trip(&prompt), &right, within.clone());
    let prompt_left = audio::find(&prompt, &left, within.clone());
    let heard = phone.heard().map(|p| audio::read_mono(&p)).unwrap_or_default();
    let prompt_heard = audio::find(&audio::pcmu_round_trip(&prompt), &heard, within);
    eprintln!(
        "recording {:.2} s (answer → hangup {call_secs:.2} s): customer on the left {}; prompt on the right {}; \
         prompt on the left {}; baresip heard the prompt {}",
        audio::seconds(left.len()),
        show(&callee_left),
        show(&prompt_right),
        show(&prompt_left),
        show(&prompt_heard)
    );
    assert!(callee_left.is_clear(), "the customer's speech is on the left: {callee_left:?}");
    assert!(prompt_right.is_clear(), "the agent's prompt is on the right: {prompt_right:?}");
    assert!(prompt_left.ncc < 0.3, "not swapped: {prompt_left:?}");
    assert!(prompt_heard.is_clear(), "the customer heard the prompt: {prompt_heard:?}");
    let recorded = audio::seconds(left.len());
    assert!((recorded - call_secs).abs() < 1.0, "recorded from the answer: {recorded:.2} s vs {call_secs:.2} s");

    // --- the call record ---
    let row = gw.call_record(&ccid);
    eprintln!("calls row: {}", Value::Object(row.clone()));
    let row_v = Value::Object(row.clone());
    for (k, v) in [
        ("direction", "outgoing"),
        ("trunk", "telnyx-ip"),
        ("from_number", BOX_NUMBER),
        ("to_number", CUSTOMER),
        ("state", "ended"),
        ("hangup_cause", "normal_clearing"),
        ("hangup_source", "caller"),
    ] {
        assert_eq!(row[k].as_str(), Some(v), "calls.{k}: {row_v}");
    }
    assert_eq!(row["call_session_id"], start["call_session_id"]);
    assert_eq!(row["call_leg_id"], payload(call[0])["call_leg_id"]);
    assert_eq!(row["stream_url"].as_str(), Some(agent.url("/outbound").as_str()));
    assert!(time(&row_v, "start_time") <= time(&row_v, "answer_time"));
    assert!(time(&row_v, "answer_time") <= time(&row_v, "end_time"));
    let paths: Value = serde_json::from_str(row["recording_paths"].as_str().unwrap_or("[]")).unwrap();
    assert_eq!(paths, json!([path.display().to_string()]));
    let stats: Value = serde_json::from_str(row["quality_stats"].as_str().unwrap_or("null")).unwrap();
    assert_eq!(stats, hangup["call_quality_stats"]);
    gw.stop();
}

// ---------------------------------------------------------------------------
// LiveKit outbound through the box to Telnyx

/// The `c=` address of the SDP in the first message of `trace` that starts with `first_line`.
fn sdp_address(trace: &str, first_line: &str) -> Option<String> {
    trace.split("----------------------------------------------").find_map(|m| {
        let at = m.find(first_line)?;
        m[at..].lines().find_map(|l| l.trim().strip_prefix("c=IN IP4 ").map(|a| a.trim().to_string()))
    })
}

/// One LiveKit → box → Telnyx call; `livekit_hangs_up` picks which end sends BYE.
async fn livekit_call_through_the_box(livekit_hangs_up: bool) {
    let dir = tempfile::tempdir().unwrap();
    let telnyx_port = free_port();
    let gw = start(dir.path(), &livekit_to_telnyx(telnyx_port));
    let (a_sf, b_sf) = if livekit_hangs_up {
        (e2e_scenario("uac_livekit_bye.xml"), scenario("uas_answer.xml"))
    } else {
        (e2e_scenario("uac_livekit_wait_bye.xml"), e2e_scenario("uas_telnyx_bye.xml"))
    };
    let (a, b) = livekit_and_telnyx(dir.path(), &gw, &a_sf, &b_sf, telnyx_port).await;
    let who = if livekit_hangs_up { "LiveKit hangs up" } else { "Telnyx hangs up" };
    assert_eq!(a.0, 0, "{who}: the LiveKit side's scenario passed: {}\n{}", a.1.report(), gw.daemon.stderr());
    assert_eq!(b.0, 0, "{who}: the Telnyx side's scenario passed: {}\n{}", b.1.report(), gw.daemon.stderr());
    let (a_trace, b_trace) = (a.1.messages(), b.1.messages());
    assert!(a_trace.contains("SIP/2.0 401"), "LiveKit was challenged: {}", a.1.report());
    // Anchored: each side sees the box's address for media, never the other side's.
    let to_telnyx = sdp_address(&b_trace, "INVITE sip:").expect("an SDP offer reached Telnyx");
    let to_livekit = sdp_address(&a_trace, "SIP/2.0 200 OK").expect("an SDP answer reached LiveKit");
    assert_eq!((to_telnyx.as_str(), to_livekit.as_str()), ("127.0.0.1", "127.0.0.1"), "media anchored on the box");

    // Both legs in one session; both ended; BYE from one end ended the other.
    let bodies = gw
        .unique_events("both legs' hangups and the recording", |b| {
            b.iter().filter(|x| event_type(x) == "call.hangup").count() == 2
                && b.iter().any(|x| event_type(x) == "call.recording.saved")
        })
        .await;
    let first = |dir: &str| {
        bodies
            .iter()
            .find(|b| event_type(b) == "call.initiated" && payload(b)["direction"] == dir)
            .map(|b| payload(b)["call_control_id"].as_str().unwrap().to_string())
            .unwrap_or_else(|| panic!("a {dir} leg: {bodies:?}"))
    };
    let (lk, tx) = (first("incoming"), first("outgoing"));
    let (lk_events, tx_events) = (of_leg(&bodies, &lk), of_leg(&bodies, &tx));
    eprintln!("{who}: LiveKit leg {:?}; Telnyx leg {:?}", types(&lk_events), types(&tx_events));
    assert_eq!(
        types(&lk_events),
        ["call.initiated", "call.answered", "call.bridged", "call.hangup", "call.recording.saved"]
    );
    assert_eq!(types(&tx_events), ["call.initiated", "call.answered", "call.hangup"]);
    let session = payload(lk_events[0])["call_session_id"].clone();
    assert!(
        lk_events.iter().chain(&tx_events).all(|b| payload(b)["call_session_id"] == session),
        "both legs share call_session_id {session}"
    );
    assert_eq!(payload(lk_events[0])["connection_id"], "livekit");
    assert_eq!(payload(tx_events[0])["connection_id"], "telnyx");
    assert_eq!(payload(tx_events[0])["to"], BOX_NUMBER);
    let hangup = |events: &[&Value]| payload(events.iter().find(|b| event_type(b) == "call.hangup").unwrap()).clone();
    let (lk_hangup, tx_hangup) = (hangup(&lk_events), hangup(&tx_events));
    let sources = (lk_hangup["hangup_source"].as_str(), tx_hangup["hangup_source"].as_str());
    eprintln!("{who}: hangup_source LiveKit leg {:?}, Telnyx leg {:?}", sources.0, sources.1);
    assert_eq!(lk_hangup["hangup_cause"], "normal_clearing");
    assert_eq!(tx_hangup["hangup_cause"], "normal_clearing");
    if livekit_hangs_up {
        assert_eq!(lk_hangup["hangup_source"], "caller", "LiveKit hung up its leg");
    } else {
        assert_eq!(tx_hangup["hangup_source"], "callee", "Telnyx hung up its leg");
    }

    // Recorded: LiveKit's speech on the left, Telnyx's echo of it on the right.
    let saved = payload(lk_events[4]);
    let path = PathBuf::from(saved["file_path"].as_str().expect("file_path"));
    let (spec, left, right) = audio::read_stereo(&path);
    assert_eq!((spec.channels, spec.sample_rate), (2, 8000));
    let speech = audio::pcap_speech(Path::new("/usr/share/sip-tester/g711a.pcap"));
    let sent_secs = if livekit_hangs_up { audio::seconds(speech.len()) } else { 4.5 };
    let speech = &speech[..(sent_secs * 8000.0) as usize];
    let on_left = audio::find(speech, &left, 0..8000);
    let on_right = audio::find(&audio::pcmu_round_trip(speech), &right, 0..8000);
    eprintln!(
        "{who}: recording {:.2} s; LiveKit's speech on the left {}; the echo from Telnyx on the right {}",
        audio::seconds(left.len()),
        show(&on_left),
        show(&on_right)
    );
    assert!(on_left.is_clear(), "LiveKit's speech on the left: {on_left:?}");
    assert!(on_right.is_clear(), "Telnyx's echo on the right: {on_right:?}");
    assert!(on_right.at >= on_left.at, "the echo comes after the speech: {on_left:?} {on_right:?}");
    assert!(on_right.at - on_left.at < 1600, "the echo is less than 200 ms late: {on_left:?} {on_right:?}");
    gw.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn livekit_outbound_through_the_box_to_telnyx_bye_from_livekit() {
    livekit_call_through_the_box(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn livekit_outbound_through_the_box_to_telnyx_bye_from_telnyx() {
    livekit_call_through_the_box(false).await;
}
