//! Issue 23 point 1 on the real daemon with real callers: routes with
//! `answer_url` fetch TeXML/TwiML documents from `tests/receivers/answer_server.py`
//! (which records every request it gets, form fields included), SIPp places the
//! calls, the test's RTP phones key digits and record what they hear, and
//! `[tts]` is `tests/receivers/tts_server.py`, whose speech is a 1 s tone of
//! 300 Hz + 100 Hz per word: what a caller hears tells which `<Say>` it was.
//!
//! - answered flows: `<Say>`, `<Play>`, `<Pause>`, `<Gather>` (a key press →
//!   `Digits` at `action`, whose document runs), `<Redirect>`, `<Hangup>`; a dead
//!   answer URL → `fallback_url` (with `ErrorCode`/`ErrorUrl`), an unsupported
//!   verb skipped and reported; `<Connect><Stream>` to `tests/agents/stream_agent.py`
//!   (Twilio protocol, `<Parameter>`s as `customParameters`), the document going
//!   on after the stream ends;
//! - refusals: `<Reject reason="busy">` (486), a bad document with a dead
//!   fallback (500, `call.texml.failed` twice), a `<Redirect>` loop (bounded:
//!   500 after the 11th fetch).

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::agent::PyAgent;
use common::gateway::{Gateway, Route, Trunk};
use common::rtp::{Packet, Script, place_calls_from, tone};
use common::{Sipp, free_port, scenario, sipp_args, sipp_uas};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(30);

/// A Python helper in `tests/receivers` printing `LISTENING <port>`; stopped by pid on drop.
struct PyServer {
    child: std::process::Child,
    port: u16,
    log: PathBuf,
}

impl PyServer {
    fn start(dir: &Path, script: &str, name: &str, args: &[&str]) -> Self {
        let python = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/.venv/bin/python");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/receivers").join(script);
        let log = dir.join(format!("{name}.jsonl"));
        let mut child = std::process::Command::new(python)
            .arg(script)
            .arg("--log")
            .arg(&log)
            .args(args)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("start a Python helper");
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.take().unwrap()), &mut line).unwrap();
        let port = line.strip_prefix("LISTENING ").and_then(|p| p.trim().parse().ok()).expect("helper port");
        Self { child, port, log }
    }

    /// The app server with `docs` (path → document or special answer).
    fn answer(dir: &Path, docs: &Value) -> Self {
        let file = dir.join("docs.json");
        std::fs::write(&file, docs.to_string()).unwrap();
        Self::start(dir, "answer_server.py", "answers", &["--docs", file.to_str().unwrap()])
    }

    fn requests(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// The requests to `path`.
    fn to(&self, path: &str) -> Vec<Value> {
        self.requests().into_iter().filter(|r| r["path"] == path).collect()
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}

impl Drop for PyServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A TCP port nothing listens on (bound, then closed).
fn dead_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The daemon: `[tts]` the test engine, `[media]` allowing loopback URLs, webhooks on,
/// and one `answer_url` route per (number, route TOML lines).
fn start(dir: &Path, tts_port: u16, routes: &[(&str, String)]) -> Gateway {
    start_with(dir, tts_port, routes, None, false)
}

/// [`start`] with a `carrier` trunk whose proxy is 127.0.0.3:`carrier_port`.
fn start_with(
    dir: &Path,
    tts_port: u16,
    routes: &[(&str, String)],
    carrier_port: Option<u16>,
    recording: bool,
) -> Gateway {
    let blocks = format!(
        "[tts]\nengine = \"http\"\nurl = \"http://127.0.0.1:{tts_port}/v1/audio/speech\"\n\
         cache_dir = \"{}\"\n[media]\ndir = \"{}\"\nallow_private_urls = true\n",
        dir.join("tts").display(),
        dir.display()
    );
    let mut b =
        Gateway::builder(dir).rtp_range(45_000, 47_999).trunk(Trunk::new("pbx").allow("127.0.0.0/8")).blocks(&blocks);
    if let Some(port) = carrier_port {
        b = b.trunk(Trunk::new("carrier").proxy(&format!("sip:127.0.0.3:{port}")).allow("127.0.0.3/32"));
    }
    for (number, lines) in routes {
        b = b.route(Route::new().to(number).extra(lines));
    }
    if recording {
        b = b.recording("");
    }
    b.webhooks("").start()
}

/// Packets with a tone at `hz` (±40 Hz) the phone heard.
fn tone_packets(received: &[Packet], hz: f64) -> usize {
    received
        .iter()
        .filter(|p| p.payload_type == 0 && p.rms() > 500.0)
        .filter(|p| {
            let pcm = p.pcm();
            let crossings = pcm.windows(2).filter(|w| (w[0] < 0) != (w[1] < 0)).count();
            let f = crossings as f64 / 2.0 / (pcm.len() as f64 / 8000.0);
            (hz - 40.0..hz + 40.0).contains(&f)
        })
        .count()
}

/// One caller to `number` keying `digits` (packet slot, digit), hung up by SIPp
/// after `ms` unless the box sends BYE first.
fn caller(
    dir: &Path,
    sip: u16,
    number: &'static str,
    ms: u64,
    digits: Vec<(usize, char)>,
) -> tokio::task::JoinHandle<(i32, String, Vec<Vec<Packet>>)> {
    speaking_caller(dir, sip, number, ms, digits, vec![])
}

/// [`caller`] sending `audio` (PCM16 8 kHz) first.
fn speaking_caller(
    dir: &Path,
    sip: u16,
    number: &'static str,
    ms: u64,
    digits: Vec<(usize, char)>,
    audio: Vec<i16>,
) -> tokio::task::JoinHandle<(i32, String, Vec<Vec<Packet>>)> {
    let d = dir.to_path_buf();
    let script = Script {
        audio,
        digits,
        gaps: vec![],
        send_for: Duration::from_millis(ms),
        duration: Duration::from_millis(ms),
    };
    tokio::task::spawn_blocking(move || {
        place_calls_from(&d, sip, "127.0.0.1", number, ms, vec![script], &["+15550000100".to_string()])
    })
}

/// One caller to `number` that must be refused with `code`; SIPp's exit code.
fn refused(dir: &Path, sip: u16, number: &'static str, code: u16) -> tokio::task::JoinHandle<i32> {
    let sf = dir.join(format!("uac_refused_{number}.xml"));
    let text = std::fs::read_to_string(scenario("uac_refused.xml.in"))
        .unwrap()
        .replace("CODE", &code.to_string())
        .replace("CHECK_HEADER", "To:");
    std::fs::write(&sf, text).unwrap();
    let mut args = sipp_args("uac_call.xml", number, &format!("127.0.0.1:{sip}"), "127.0.0.1", &[]);
    args[1] = sf.display().to_string();
    let d = dir.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let mut sipp = Sipp::start(&d, &format!("refused_{number}"), &args);
        sipp.wait(WAIT)
    })
}

/// The `call.texml.failed` payloads so far.
fn failures(events: &[Value]) -> Vec<Value> {
    events.iter().filter(|e| e["event_type"] == "call.texml.failed").map(|e| e["payload"].clone()).collect()
}

const IVR: &str = "+13125550101";
const FALLBACK: &str = "+13125550104";
const STREAM: &str = "+13125550105";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn say_play_gather_redirect_fallback_and_stream_run_for_real_callers() {
    let dir = tempfile::tempdir().unwrap();
    let tts = PyServer::start(dir.path(), "tts_server.py", "tts", &[]);
    let agent = PyAgent::start_script(
        dir.path(),
        "stream_agent.py",
        "twilio",
        "hangup-after",
        &["--protocol", "twilio", "--hangup-after", "2"],
    );
    let docs = json!({
        // "one two" → 500 Hz; the WAV → 1000 Hz; the prompt "one two three" → 600 Hz;
        // "four words here now" → 700 Hz; "this is never heard at all" → 900 Hz.
        "/ivr": "<?xml version=\"1.0\"?><Response><Say voice=\"woman\">one two</Say><Play>/tone.wav</Play>\
                 <Pause length=\"1\"/><Gather action=\"menu\" numDigits=\"1\" timeout=\"10\">\
                 <Say>one two three</Say></Gather><Say>this is never heard at all</Say></Response>",
        "/tone.wav": {"wav_hz": 1000, "ms": 1000},
        "/menu": "<Response><Say>four words here now</Say><Redirect method=\"GET\">/bye</Redirect>\
                  <Say>this is never heard at all</Say></Response>",
        "/bye": "<Response><Hangup/></Response>",
        "/fallback": "<Response><Enqueue>support</Enqueue><Say>one two</Say><Hangup/></Response>",
        "/stream": format!(
            "<Response><Connect><Stream url=\"{}\"><Parameter name=\"lang\" value=\"fr\"/>\
             <Parameter name=\"a&amp;b\" value=\"x y\"/></Stream></Connect><Say>four words here now</Say></Response>",
            agent.url("/stream")
        ),
    });
    let app = PyServer::answer(dir.path(), &docs);
    let dead = format!("http://127.0.0.1:{}/answer", dead_port());
    let routes = [
        (IVR, format!("answer_url = \"{}\"", app.url("/ivr"))),
        (
            FALLBACK,
            format!("answer_url = \"{dead}\"\nanswer_method = \"GET\"\nfallback_url = \"{}\"", app.url("/fallback")),
        ),
        (STREAM, format!("answer_url = \"{}\"", app.url("/stream"))),
    ];
    let gw = start(dir.path(), tts.port, &routes);
    let sip = gw.sip_port;

    // The IVR caller keys 5 from 6 s on, once a second (the first inside the
    // gather ends it; earlier or later ones are no part of it).
    let keys: Vec<(usize, char)> = (0..8).map(|i| (300 + 50 * i, '5')).collect();
    let ivr = caller(dir.path(), sip, IVR, 30_000, keys);
    let fallback = caller(dir.path(), sip, FALLBACK, 20_000, vec![]);
    let stream = caller(dir.path(), sip, STREAM, 20_000, vec![]);

    let (code, report, ivr_heard) = ivr.await.unwrap();
    assert_eq!(code, 0, "{report}");
    let (code, report, fallback_heard) = fallback.await.unwrap();
    assert_eq!(code, 0, "{report}");
    let (code, report, stream_heard) = stream.await.unwrap();
    assert_eq!(code, 0, "{report}");
    let count = |d: &[Value], t: &str| d.iter().filter(|e| e["event_type"] == t).count();
    let events = gw
        .event_data("three call.hangup and the fallback call's two call.texml.failed", |d| {
            count(d, "call.hangup") >= 3 && count(d, "call.texml.failed") >= 2
        })
        .await;

    // The IVR: the answer URL got the call's parameters in TwiML's names.
    let first = &app.to("/ivr")[0];
    assert_eq!(
        (first["method"].as_str(), first["content_type"].as_str()),
        (Some("POST"), Some("application/x-www-form-urlencoded"))
    );
    let f = &first["form"];
    assert_eq!((f["From"].as_str(), f["To"].as_str()), (Some("+15550000100"), Some(IVR)), "{f}");
    assert_eq!((f["CallStatus"].as_str(), f["Direction"].as_str()), (Some("ringing"), Some("inbound")), "{f}");
    assert_eq!((f["AccountSid"].as_str(), f["ApiVersion"].as_str()), (Some("pbx"), Some("2010-04-01")), "{f}");
    let call_sid = f["CallSid"].as_str().expect("CallSid").to_string();
    assert!(
        events.iter().any(|e| e["payload"]["call_control_id"] == call_sid.as_str()),
        "CallSid is the call_control_id"
    );
    // <Play> fetched the WAV; the gather's action got the digit and ran.
    assert_eq!(app.to("/tone.wav").len(), 1);
    let menu = app.to("/menu");
    assert_eq!(menu.len(), 1, "{menu:?}");
    assert_eq!(
        (menu[0]["form"]["Digits"].as_str(), menu[0]["form"]["CallStatus"].as_str()),
        (Some("5"), Some("in-progress"))
    );
    assert_eq!(menu[0]["form"]["CallSid"], call_sid.as_str());
    // <Redirect method="GET"> followed with the call's parameters in the query.
    let bye = app.to("/bye");
    assert_eq!((bye.len(), bye[0]["method"].as_str()), (1, Some("GET")), "{bye:?}");
    assert_eq!(bye[0]["query"]["CallSid"], call_sid.as_str());
    // What the caller heard, in order of the documents; nothing after the gather
    // or the redirect.
    // (The gather's prompt is cut by the first key press, which may come at any
    // point of it when the box runs late: that it was synthesized is checked.)
    for (hz, what) in [(500.0, "<Say> one two"), (1000.0, "<Play>"), (700.0, "/menu's <Say>")] {
        assert!(tone_packets(&ivr_heard[0], hz) >= 25, "{what} heard: {} packets", tone_packets(&ivr_heard[0], hz));
    }
    let spoken: Vec<String> =
        tts.requests().iter().filter_map(|r| r["body"]["input"].as_str().map(str::to_string)).collect();
    assert!(spoken.iter().any(|t| t == "one two three"), "the gather's nested <Say> was synthesized: {spoken:?}");
    assert!(!spoken.iter().any(|t| t.contains("never")), "nothing after the gather was synthesized: {spoken:?}");
    assert_eq!(tone_packets(&ivr_heard[0], 900.0), 0, "the verbs after <Gather>/<Redirect> never ran");
    let hangup = |id: &str| {
        events.iter().find(|e| e["event_type"] == "call.hangup" && e["payload"]["call_control_id"] == id).cloned()
    };
    let h = hangup(&call_sid).expect("the IVR call's hangup");
    assert_eq!(h["payload"]["hangup_source"], "callee", "<Hangup/> ended it: {h}");

    // The dead answer URL: GET failed, the fallback (same method) got TwiML's
    // ErrorCode/ErrorUrl, its <Enqueue> was reported as unsupported and skipped.
    let fb = app.to("/fallback");
    assert_eq!(fb.len(), 1, "{fb:?}");
    let q = &fb[0]["query"];
    assert_eq!(
        (fb[0]["method"].as_str(), q["ErrorCode"].as_str(), q["ErrorUrl"].as_str()),
        (Some("GET"), Some("11200"), Some(dead.as_str())),
        "{q}"
    );
    let fails = failures(&events);
    let of = |sid: &Value| fails.iter().filter(|p| p["call_control_id"] == *sid).cloned().collect::<Vec<_>>();
    let fb_fails = of(&q["CallSid"]);
    assert_eq!(fb_fails.len(), 2, "{fb_fails:?}");
    // (Webhooks of one call may arrive in any order: found by stage.)
    let stage =
        |s: &str| fb_fails.iter().find(|p| p["stage"] == s).cloned().unwrap_or_else(|| panic!("{s}: {fb_fails:?}"));
    assert_eq!(stage("fetch")["url"], dead.as_str());
    assert!(stage("verb")["reason"].as_str().unwrap().contains("<Enqueue> is not supported"), "{fb_fails:?}");
    assert!(tone_packets(&fallback_heard[0], 500.0) >= 25, "the fallback's <Say> was heard");
    assert!(of(&json!(call_sid)).is_empty(), "the IVR ran without a failure: {fails:?}");

    // The stream: Twilio's frames with the <Parameter>s; after the agent closed
    // it (2 s), the document went on with <Say> and ended.
    let conns = agent.wait_connections(1, WAIT);
    assert_eq!(conns.len(), 1);
    assert_eq!(conns[0]["protocol_errors"], json!([]), "{}", conns[0]);
    let start = &conns[0]["summary"]["start"]["start"];
    let custom = &start["customParameters"];
    assert_eq!((custom["lang"].as_str(), custom["a&b"].as_str()), (Some("fr"), Some("x y")), "{start}");
    let stream_sid = app.to("/stream")[0]["form"]["CallSid"].as_str().unwrap().to_string();
    assert_eq!(start["callSid"], stream_sid.as_str());
    assert!(tone_packets(&stream_heard[0], 700.0) >= 25, "the <Say> after the stream was heard");
    assert!(hangup(&stream_sid).is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reject_bad_documents_and_redirect_loops_end_the_call_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let tts = PyServer::start(dir.path(), "tts_server.py", "tts", &[]);
    let docs = json!({
        "/busy": "<Response><Reject reason=\"busy\"/><Say>never</Say></Response>",
        "/bad": "<Response><Say>unclosed</Response>",
        "/loop": "<Response><Redirect>/loop</Redirect></Response>",
        "/error": {"status": 500},
        "/status": "",
    });
    let app = PyServer::answer(dir.path(), &docs);
    let dead = format!("http://127.0.0.1:{}/fallback", dead_port());
    let routes = [
        (
            "+13125550102",
            format!("answer_url = \"{}\"\nstatus_callback = \"{}\"", app.url("/busy"), app.url("/status")),
        ),
        ("+13125550103", format!("answer_url = \"{}\"\nfallback_url = \"{dead}\"", app.url("/bad"))),
        ("+13125550106", format!("answer_url = \"{}\"", app.url("/loop"))),
        ("+13125550107", format!("answer_url = \"{}\"\nfallback_url = \"{}\"", app.url("/error"), app.url("/bad"))),
    ];
    let gw = start(dir.path(), tts.port, &routes);
    let sip = gw.sip_port;
    let busy = refused(dir.path(), sip, "+13125550102", 486);
    let bad = refused(dir.path(), sip, "+13125550103", 500);
    let looping = refused(dir.path(), sip, "+13125550106", 500);
    let error = refused(dir.path(), sip, "+13125550107", 500);
    assert_eq!(busy.await.unwrap(), 0, "<Reject reason=busy> is 486");
    assert_eq!(bad.await.unwrap(), 0, "a bad document and a dead fallback: 500");
    assert_eq!(looping.await.unwrap(), 0, "a redirect loop ends in 500");
    assert_eq!(error.await.unwrap(), 0, "HTTP 500 then a bad fallback: 500");
    let count = |d: &[Value], t: &str| d.iter().filter(|e| e["event_type"] == t).count();
    let events = gw
        .event_data("four call.hangup and five call.texml.failed", |d| {
            count(d, "call.hangup") >= 4 && count(d, "call.texml.failed") >= 5
        })
        .await;
    let sid = |path: &str| app.to(path)[0]["form"]["CallSid"].as_str().unwrap().to_string();
    let fails = failures(&events);
    let stages = |id: &str| -> Vec<String> {
        // Sorted: webhooks of one call may arrive in any order.
        let mut v: Vec<String> = fails
            .iter()
            .filter(|p| p["call_control_id"] == id)
            .map(|p| p["stage"].as_str().unwrap().to_string())
            .collect();
        v.sort();
        v
    };
    assert!(stages(&sid("/busy")).is_empty(), "{fails:?}");
    let deadline = std::time::Instant::now() + WAIT;
    while app.to("/status").is_empty() {
        assert!(std::time::Instant::now() < deadline, "no statusCallback for the rejected call");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let f = &app.to("/status")[0]["form"];
    assert_eq!((f["CallStatus"].as_str(), f["CallDuration"].as_str()), (Some("busy"), Some("0")), "{f}");
    assert_eq!(f["CallSid"], sid("/busy").as_str());
    assert_eq!(stages(&sid("/bad")), ["fetch", "parse"], "{fails:?}");
    let bad_reason = fails.iter().find(|p| p["call_control_id"] == sid("/bad").as_str()).unwrap()["reason"].clone();
    assert!(bad_reason.as_str().unwrap().contains("not well-formed"), "{bad_reason}");
    assert_eq!(app.to("/loop").len(), 11, "one answer fetch and ten redirects, then no more");
    assert_eq!(stages(&sid("/loop")), ["limit"], "{fails:?}");
    // HTTP 500 at the answer URL: the fallback got ErrorCode 11200, and its bad
    // document ended the call.
    let error_call = sid("/error");
    let fallback =
        app.to("/bad").into_iter().find(|r| r["form"]["CallSid"] == error_call.as_str()).expect("fallback fetched");
    assert_eq!(fallback["form"]["ErrorCode"], "11200");
    assert_eq!(stages(&error_call), ["fetch", "parse"], "{fails:?}");
    for id in [sid("/busy"), sid("/bad"), sid("/loop"), error_call] {
        assert!(
            events.iter().any(|e| e["event_type"] == "call.hangup" && e["payload"]["call_control_id"] == id.as_str()),
            "{id} ended with call.hangup"
        );
    }
}

/// A carrier on 127.0.0.3:`port` playing `scenario_file` once.
fn carrier(dir: &Path, scenario_file: &str, port: u16) -> Sipp {
    sipp_uas(dir, "carrier", scenario_file, port, false)
}

const DIAL: &str = "+13125550108";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dial_calls_a_number_through_a_trunk_and_reports_to_action() {
    let dir = tempfile::tempdir().unwrap();
    let tts = PyServer::start(dir.path(), "tts_server.py", "tts", &[]);
    let docs = json!({
        "/dial": "<Response><Dial action=\"/dialed\" timeout=\"10\" callerId=\"+13125550000\" trunk=\"carrier\">\
                  <Number>+13125550199</Number></Dial><Say>this is never heard at all</Say></Response>",
        "/dialed": "<Response><Say>one two</Say><Hangup/></Response>",
    });
    let app = PyServer::answer(dir.path(), &docs);
    let port = free_port();
    let gw = start_with(
        dir.path(),
        tts.port,
        &[(DIAL, format!("answer_url = \"{}\"", app.url("/dial")))],
        Some(port),
        false,
    );

    // 1. The carrier answers busy: the action gets DialCallStatus busy and its
    // document runs for the caller.
    let mut far = tokio::task::spawn_blocking({
        let d = dir.path().to_path_buf();
        move || carrier(&d, "uas_busy.xml", port)
    })
    .await
    .unwrap();
    let (code, report, heard) = caller(dir.path(), gw.sip_port, DIAL, 12_000, vec![]).await.unwrap();
    assert_eq!(code, 0, "{report}");
    assert_eq!(tokio::task::spawn_blocking(move || far.wait(WAIT)).await.unwrap(), 0, "the carrier was called");
    let dialed = app.to("/dialed");
    assert_eq!(dialed.len(), 1, "{dialed:?}");
    let f = &dialed[0]["form"];
    let sid = app.to("/dial")[0]["form"]["CallSid"].as_str().unwrap().to_string();
    assert_eq!((f["DialCallStatus"].as_str(), f["CallSid"].as_str()), (Some("busy"), Some(sid.as_str())), "{f}");
    assert_eq!(f["DialCallDuration"], "0");
    assert!(tone_packets(&heard[0], 500.0) >= 25, "the action's <Say> was heard");
    assert_eq!(tone_packets(&heard[0], 900.0), 0, "the verbs after <Dial action> never ran");
    let events = gw
        .event_data("the first caller's call.hangup", |d| {
            d.iter().any(|e| e["event_type"] == "call.hangup" && e["payload"]["call_control_id"] == sid.as_str())
        })
        .await;
    let h = events
        .iter()
        .find(|e| e["event_type"] == "call.hangup" && e["payload"]["call_control_id"] == sid.as_str())
        .unwrap();
    assert_eq!(h["payload"]["hangup_source"], "callee", "the action's <Hangup/> ended the call: {h}");

    // 2. The carrier answers, and hangs up 1 s later: the two were bridged; the
    // caller stays up (TwiML) and the action, told DialCallStatus completed, runs
    // for it: its <Say> is heard, its <Hangup/> ends the call.
    let mut far = tokio::task::spawn_blocking({
        let d = dir.path().to_path_buf();
        move || carrier(&d, "uas_answer_then_bye.xml", port)
    })
    .await
    .unwrap();
    let (code, report, heard) = caller(dir.path(), gw.sip_port, DIAL, 12_000, vec![]).await.unwrap();
    assert_eq!(code, 0, "{report}");
    assert_eq!(tokio::task::spawn_blocking(move || far.wait(WAIT)).await.unwrap(), 0, "answered, then BYE");
    assert!(tone_packets(&heard[0], 500.0) >= 25, "the caller outlived the bridge and heard the action's <Say>");
    assert_eq!(tone_packets(&heard[0], 900.0), 0, "the verbs after <Dial action> never ran");
    let count = |d: &[Value], t: &str| d.iter().filter(|e| e["event_type"] == t).count();
    let events = gw
        .event_data("four call.hangup and two call.bridged", |d| {
            count(d, "call.hangup") >= 4 && count(d, "call.bridged") >= 2
        })
        .await;
    let sid = app.to("/dial")[1]["form"]["CallSid"].as_str().unwrap().to_string();
    let deadline = std::time::Instant::now() + WAIT;
    let f = loop {
        if let Some(r) = app.to("/dialed").into_iter().find(|r| r["form"]["CallSid"] == sid.as_str()) {
            break r["form"].clone();
        }
        assert!(std::time::Instant::now() < deadline, "the action was requested");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(f["DialCallStatus"], "completed", "{f}");
    let far_sid = f["DialCallSid"].as_str().unwrap();
    let far_initiated = events
        .iter()
        .find(|e| e["event_type"] == "call.initiated" && e["payload"]["call_control_id"] == far_sid)
        .expect("the dialled leg's call.initiated");
    let p = &far_initiated["payload"];
    assert_eq!(
        (p["from"].as_str(), p["to"].as_str(), p["connection_id"].as_str()),
        (Some("+13125550000"), Some("+13125550199"), Some("carrier")),
        "{p}"
    );
    assert!(
        events.iter().any(|e| e["event_type"] == "call.bridged" && e["payload"]["call_control_id"] == sid.as_str()),
        "the caller was bridged with the number"
    );
    let h = events
        .iter()
        .find(|e| e["event_type"] == "call.hangup" && e["payload"]["call_control_id"] == sid.as_str())
        .unwrap();
    assert_eq!(h["payload"]["hangup_source"], "callee", "the action's <Hangup/> ended the call: {h}");
}

const RECORD: &str = "+13125550109";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn record_reports_to_action_and_its_status_callback_and_the_call_end_is_posted() {
    let dir = tempfile::tempdir().unwrap();
    let tts = PyServer::start(dir.path(), "tts_server.py", "tts", &[]);
    let docs = json!({
        "/record": "<Response><Say>one two</Say><Record action=\"/recorded\" maxLength=\"15\" finishOnKey=\"#\" \
                    recordingStatusCallback=\"/recstatus\"/><Say>this is never heard at all</Say></Response>",
        "/recorded": "<Response><Say>four words here now</Say><Hangup/></Response>",
        "/status": "<Response/>",
        "/recstatus": "<Response/>",
    });
    let app = PyServer::answer(dir.path(), &docs);
    let route = format!("answer_url = \"{}\"\nstatus_callback = \"{}\"", app.url("/record"), app.url("/status"));
    let gw = start_with(dir.path(), tts.port, &[(RECORD, route)], None, true);
    // The caller speaks (a 440 Hz tone) for 8 s and keys # from 5 s on, once a
    // second: the first # inside the recording ends it.
    let keys: Vec<(usize, char)> = (0..5).map(|i| (250 + 50 * i, '#')).collect();
    let (code, report, heard) =
        speaking_caller(dir.path(), gw.sip_port, RECORD, 16_000, keys, tone(440.0, 8000.0, 8000)).await.unwrap();
    assert_eq!(code, 0, "{report}");
    let events = gw
        .event_data("the recording and the hangup", |d| {
            d.iter().any(|e| e["event_type"] == "call.recording.saved")
                && d.iter().any(|e| e["event_type"] == "call.hangup")
        })
        .await;
    let saved = &events.iter().find(|e| e["event_type"] == "call.recording.saved").unwrap()["payload"];
    let sid = app.to("/record")[0]["form"]["CallSid"].as_str().unwrap().to_string();

    let recstatus = app.to("/recstatus");
    assert_eq!(recstatus.len(), 1, "{recstatus:?}");
    let f = &recstatus[0]["form"];
    assert_eq!((f["RecordingStatus"].as_str(), f["CallSid"].as_str()), (Some("completed"), Some(sid.as_str())), "{f}");
    assert_eq!(f["RecordingUrl"], saved["recording_urls"]["wav"], "{f}");
    assert_eq!(f["RecordingSid"], saved["recording_id"]);
    let secs: u64 = f["RecordingDuration"].as_str().unwrap().parse().unwrap();
    assert!((1..=14).contains(&secs), "{f}");
    let recorded = app.to("/recorded");
    assert_eq!(recorded.len(), 1, "{recorded:?}");
    let f = &recorded[0]["form"];
    assert_eq!(
        (f["Digits"].as_str(), f["RecordingUrl"].as_str()),
        (Some("#"), saved["recording_urls"]["wav"].as_str()),
        "{f}"
    );
    // The beep, then the action's document.
    assert!(tone_packets(&heard[0], 1000.0) >= 8, "the beep was heard");
    assert!(tone_packets(&heard[0], 700.0) >= 25, "the action's <Say> was heard");
    assert_eq!(tone_packets(&heard[0], 900.0), 0, "the verbs after <Record> never ran");

    // statusCallback once the call ended.
    let deadline = std::time::Instant::now() + WAIT;
    let status = loop {
        if let Some(r) = app.to("/status").pop() {
            break r;
        }
        assert!(std::time::Instant::now() < deadline, "no statusCallback");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let f = &status["form"];
    assert_eq!((f["CallStatus"].as_str(), f["CallSid"].as_str()), (Some("completed"), Some(sid.as_str())), "{f}");
    let duration: u64 = f["CallDuration"].as_str().unwrap().parse().unwrap();
    assert!((2..=16).contains(&duration), "{f}");
}
