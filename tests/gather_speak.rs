//! Issue 21's IVR commands on the real daemon with real callers: SIPp places the
//! calls, the test's RTP phones key RFC 4733 digits at scripted instants, and the
//! signed webhooks tell what the box made of them.
//!
//! - `gather`: every `call.gather.ended` status from real key presses (valid by
//!   `maximum_digits`, valid by the terminating digit, invalid, timeout,
//!   `gather_stop` → cancelled, the caller's BYE → call_hangup), `command_id`,
//!   the 400/422 shapes;
//! - `gather_using_audio`: the prompt is heard until the first digit (barge-in);
//! - `speak` with espeak-ng: the caller hears exactly what `espeak-ng` itself
//!   makes of the text (resampled by the same code), `call.speak.*` with every
//!   status (completed, stopped by `playback_stop`, call_hangup), SSML checks;
//! - the HTTP engine against `tests/receivers/tts_server.py` (an OpenAI-style
//!   `/v1/audio/speech`): the prompt cache (a second speak is no second request),
//!   a failing engine (422 and `call.speak.ended` failed), `gather_using_speak`,
//!   and speech into a conference.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use common::gateway::{Api, Gateway, Route, Trunk};
use common::rtp::{Packet, Script, place_calls_from, tone};
use serde_json::{Value, json};

const TOKEN: &str = "test-token-0123456789";

/// The daemon with every call on the built-in echo, signed webhooks, the API,
/// `[media] dir` = the test's directory and `extra` TOML.
fn start(dir: &Path, extra: &str) -> Gateway {
    let media = format!("[media]\ndir = \"{}\"\n{extra}", dir.display());
    Gateway::builder(dir)
        .rtp_range(40_000, 44_999)
        .trunk(Trunk::new("pbx").allow("127.0.0.0/8"))
        .blocks(&media)
        .agent("echo", "builtin:echo", "")
        .route(Route::new().agent("echo"))
        .webhooks("")
        .api(TOKEN)
        .start()
}

/// The live calls' ids by caller (`from`), once `n` are answered.
async fn answered_by_caller(api: &Api, n: usize) -> HashMap<String, String> {
    let body = api
        .wait_for("/v2/calls", "every call answered", |b| {
            b["data"].as_array().is_some_and(|a| a.len() == n && a.iter().all(|c| c["state"] == "answered"))
        })
        .await;
    body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["from"].as_str().unwrap().to_string(), c["call_control_id"].as_str().unwrap().to_string()))
        .collect()
}

/// A phone that keys `digits` (packet slot, digit) over silence for `ms`.
fn keys(digits: &[(usize, char)], ms: u64) -> Script {
    Script {
        audio: vec![],
        digits: digits.to_vec(),
        gaps: vec![],
        send_for: Duration::from_millis(ms),
        duration: Duration::from_millis(ms),
    }
}

/// A WAV file of `hz` for `ms` at 8 kHz.
fn tone_wav(path: &Path, hz: f64, ms: usize) {
    let spec =
        hound::WavSpec { channels: 1, sample_rate: 8000, bits_per_sample: 16, sample_format: hound::SampleFormat::Int };
    let mut w = hound::WavWriter::create(path, spec).unwrap();
    for s in tone(hz, 8000.0, ms) {
        w.write_sample(s).unwrap();
    }
    w.finalize().unwrap();
}

/// Packets of the tone at `hz` (±40 Hz) the phone heard.
fn tone_packets(received: &[Packet], hz: f64) -> Vec<&Packet> {
    received
        .iter()
        .filter(|p| p.payload_type == 0 && p.rms() > 500.0)
        .filter(|p| (hz - 40.0..hz + 40.0).contains(&frequency(&p.pcm())))
        .collect()
}

async fn act(api: &Api, id: String, action: &str, body: Value) -> (u16, Value) {
    api.action(&id, action, &body.to_string()).await
}

/// Frequency of a tone from its zero crossings (8 kHz samples).
fn frequency(pcm: &[i16]) -> f64 {
    let crossings = pcm.windows(2).filter(|w| (w[0] < 0) != (w[1] < 0)).count();
    crossings as f64 / 2.0 / (pcm.len() as f64 / 8000.0)
}

/// Packet slot (20 ms each) at which the phones key their first digit: 3 s after
/// the answer, time for the test to start every gather first.
const FIRST: usize = 150;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gather_ends_each_way_from_real_key_presses() {
    let dir = tempfile::tempdir().unwrap();
    let gw = start(dir.path(), "");
    let sip = gw.sip_port;
    let api = gw.api();
    tone_wav(&dir.path().join("prompt.wav"), 700.0, 6000);

    // Seven callers at once, each keying its own digits; SIPp hangs up after 9 s.
    let plan: Vec<(&str, Script)> = vec![
        ("+15550000001", keys(&[(FIRST, '1'), (FIRST + 20, '2'), (FIRST + 40, '3'), (FIRST + 60, '4')], 8000)),
        ("+15550000002", keys(&[(FIRST, '4'), (FIRST + 20, '5'), (FIRST + 40, '#')], 8000)),
        ("+15550000003", keys(&[(FIRST, '7'), (FIRST + 20, '#')], 8000)),
        ("+15550000004", keys(&[], 8000)),
        ("+15550000005", keys(&[(FIRST, '8')], 8000)),
        ("+15550000006", keys(&[], 8000)),
        ("+15550000007", keys(&[(FIRST, '2')], 8000)),
    ];
    let callers: Vec<String> = plan.iter().map(|(c, _)| c.to_string()).collect();
    let scripts: Vec<Script> = plan.into_iter().map(|(_, s)| s).collect();
    let d2 = dir.path().to_path_buf();
    let n = scripts.len();
    let calls = tokio::task::spawn_blocking(move || {
        place_calls_from(&d2, sip, "127.0.0.1", "+13125550100", 9000, scripts, &callers)
    });
    let ids = answered_by_caller(&api, n).await;
    let id = |n: u32| ids[&format!("+1555000000{n}")].clone();

    // Bodies are checked field by field (400 naming it); gather_stop without a
    // gather is a 422.
    for (body, field) in [
        (r#"{"minimum_digits": 0}"#, "/minimum_digits"),
        (r#"{"maximum_digits": 200}"#, "/maximum_digits"),
        (r#"{"valid_digits": "12x"}"#, "/valid_digits"),
        (r##"{"terminating_digit": "**"}"##, "/terminating_digit"),
        (r#"{"timeout_millis": "soon"}"#, "/timeout_millis"),
    ] {
        let (code, e) = api.action(&id(1), "gather", body).await;
        assert_eq!((code, e["errors"][0]["source"]["pointer"].as_str()), (400, Some(field)), "{body}: {e}");
    }
    let (code, e) = api.action(&id(1), "gather_stop", "{}").await;
    assert_eq!((code, e["errors"][0]["code"].as_str()), (422, Some("90015")), "{e}");
    let (code, e) = api.action(&id(7), "gather_using_audio", r#"{"audio_url": "/etc/passwd"}"#).await;
    assert_eq!((code, e["errors"][0]["source"]["pointer"].as_str()), (422, Some("/audio_url")), "{e}");

    // 1: maximum_digits ends it (the 4th key press is no part of it), with the
    // command's client_state; 2: the terminating digit; 3: too few digits;
    // 4: no key press; 5: stopped by the API; 6: the caller hangs up first;
    // 7: a prompt, stopped by the first digit.
    let ok = json!({"data": {"result": "ok"}});
    let go = |n: u32, action: &'static str, body: Value| act(&api, id(n), action, body);
    assert_eq!(go(1, "gather", json!({"maximum_digits": 3, "client_state": "b25l"})).await, (200, ok.clone()));
    assert_eq!(go(2, "gather", json!({})).await, (200, ok.clone()));
    assert_eq!(go(3, "gather", json!({"minimum_digits": 2})).await, (200, ok.clone()));
    assert_eq!(go(4, "gather", json!({"initial_timeout_millis": 1000})).await, (200, ok.clone()));
    assert_eq!(go(5, "gather", json!({"command_id": "g-5"})).await, (200, ok.clone()));
    // The same command_id again is ignored (a second gather would be a 422).
    assert_eq!(go(5, "gather", json!({"command_id": "g-5"})).await, (200, ok.clone()));
    assert_eq!(go(5, "gather", json!({})).await.0, 422, "one gather at a time");
    let long = json!({"initial_timeout_millis": 60000, "timeout_millis": 60000});
    assert_eq!(go(6, "gather", long).await, (200, ok.clone()));
    let prompt = json!({"audio_url": "prompt.wav", "maximum_digits": 1});
    assert_eq!(go(7, "gather_using_audio", prompt).await, (200, ok.clone()));

    // Call 5's key press is seen; then gather_stop ends its gather.
    gw.event_data("call 5's digit", |d| {
        d.iter().any(|e| e["event_type"] == "call.dtmf.received" && e["payload"]["call_control_id"] == id(5).as_str())
    })
    .await;
    assert_eq!(go(5, "gather_stop", json!({})).await, (200, ok.clone()));

    let ended = gw
        .event_data("a call.gather.ended and a call.hangup per call", |d| {
            let count = |t: &str| d.iter().filter(|e| e["event_type"] == t).count();
            count("call.gather.ended") >= n && count("call.hangup") >= n
        })
        .await;
    let (code, report, received) = calls.await.unwrap();
    assert_eq!(code, 0, "{report}");
    let by_call: HashMap<String, &Value> = ended
        .iter()
        .filter(|e| e["event_type"] == "call.gather.ended")
        .map(|e| (e["payload"]["call_control_id"].as_str().unwrap().to_string(), &e["payload"]))
        .collect();
    assert_eq!(by_call.len(), n, "one call.gather.ended per call: {ended:?}");
    let outcome = |n: u32| {
        let p = by_call[&id(n)];
        (p["status"].as_str().unwrap().to_string(), p["digits"].as_str().unwrap().to_string())
    };
    let want = |s: &str, d: &str| (s.to_string(), d.to_string());
    assert_eq!(outcome(1), want("valid", "123"));
    assert_eq!(by_call[&id(1)]["client_state"], "b25l");
    assert_eq!(outcome(2), want("valid", "45"));
    assert_eq!(outcome(3), want("invalid", "7"));
    assert_eq!(outcome(4), want("timeout", ""));
    assert_eq!(outcome(5), want("cancelled", "8"));
    assert_eq!(outcome(6), want("call_hangup", ""));
    assert_eq!(outcome(7), want("valid", "2"));
    for p in by_call.values() {
        for key in ["call_leg_id", "call_session_id", "connection_id", "from", "to"] {
            assert!(p[key].is_string(), "{key} in {p}");
        }
    }
    // Call 6's gather ended with the call, before its call.hangup.
    let of6: Vec<&str> = ended
        .iter()
        .filter(|e| e["payload"]["call_control_id"] == id(6).as_str())
        .map(|e| e["event_type"].as_str().unwrap())
        .collect();
    let at = |t: &str| of6.iter().position(|x| *x == t);
    assert!(at("call.gather.ended").unwrap() < at("call.hangup").unwrap(), "{of6:?}");

    // Call 7 heard the 6 s prompt only until its key press at 3 s (barge-in).
    let heard = tone_packets(&received[6], 700.0);
    assert!(heard.len() >= 25, "the prompt was heard: {} packets", heard.len());
    let key_at = Duration::from_millis(FIRST as u64 * 20);
    let last = heard.last().unwrap().at;
    assert!(last < key_at + Duration::from_millis(600), "the prompt stopped at the key press: last at {last:?}");
    assert!(heard.len() < 200, "not the whole 300-packet prompt: {}", heard.len());
}

/// Waits for the `n`-th (1-based) event of `event_type` of call `id`; its payload.
async fn nth_event(gw: &Gateway, id: &str, event_type: &str, n: usize) -> Value {
    let of = |d: &[Value]| -> Vec<Value> {
        d.iter()
            .filter(|e| e["event_type"] == event_type && e["payload"]["call_control_id"] == id)
            .map(|e| e["payload"].clone())
            .collect()
    };
    let data = gw.event_data(&format!("{event_type} #{n} of {id}"), |d| of(d).len() >= n).await;
    of(&data)[n - 1].clone()
}

/// One caller, silent for `ms`, hung up by SIPp after `ms`; the answered call's id.
fn one_call(
    dir: &Path,
    sip: u16,
    ms: u64,
    digits: &[(usize, char)],
) -> tokio::task::JoinHandle<(i32, String, Vec<Vec<Packet>>)> {
    let d = dir.to_path_buf();
    let script = keys(digits, ms - 500);
    tokio::task::spawn_blocking(move || {
        place_calls_from(&d, sip, "127.0.0.1", "+13125550100", ms, vec![script], &["+15550000100".to_string()])
    })
}

const SPOKEN: &str = "Hello from the edge box.";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn speak_with_espeak_ng_is_heard_as_espeak_ng_says_it() {
    let dir = tempfile::tempdir().unwrap();
    let tts = format!("[tts]\nengine = \"espeak-ng\"\ncache_dir = \"{}\"\n", dir.path().join("tts").display());
    let gw = start(dir.path(), &tts);
    let api = gw.api();
    let call = one_call(dir.path(), gw.sip_port, 14_000, &[]);
    let ids = answered_by_caller(&api, 1).await;
    let id = ids["+15550000100"].clone();

    // Bodies: payload required and bounded, payload_type, SSML subset, stop.
    for (body, field) in [
        (json!({}), "/payload"),
        (json!({"payload": "x".repeat(3001)}), "/payload"),
        (json!({"payload": "hi", "payload_type": "html"}), "/payload_type"),
        (json!({"payload": "<speak>hi <break time=\"1h\"/></speak>", "payload_type": "ssml"}), "/payload"),
        (json!({"payload": "no root", "payload_type": "ssml"}), "/payload"),
        (json!({"payload": "hi", "stop": "later"}), "/stop"),
        (json!({"payload": "hi", "language": "en US"}), "/language"),
    ] {
        let (code, e) = act(&api, id.clone(), "speak", body.clone()).await;
        assert_eq!((code, e["errors"][0]["source"]["pointer"].as_str()), (400, Some(field)), "{body}: {e}");
    }

    // 1: spoken to the end, with the command's client_state.
    let ok = json!({"data": {"result": "ok"}});
    let body = json!({"payload": SPOKEN, "voice": "AWS.Polly.Joanna", "client_state": "c3A="});
    assert_eq!(act(&api, id.clone(), "speak", body).await, (200, ok.clone()));
    let started = nth_event(&gw, &id, "call.speak.started", 1).await;
    assert_eq!(started["client_state"], "c3A=");
    let ended = nth_event(&gw, &id, "call.speak.ended", 1).await;
    assert_eq!(ended["status"], "completed", "{ended}");

    // 2: a long SSML prompt stopped by playback_stop.
    let long = json!({"payload": "<speak>Stop me.<break time=\"10s\"/><break time=\"10s\"/>Never heard.</speak>", "payload_type": "ssml"});
    assert_eq!(act(&api, id.clone(), "speak", long.clone()).await, (200, ok.clone()));
    nth_event(&gw, &id, "call.speak.started", 2).await;
    assert_eq!(act(&api, id.clone(), "playback_stop", json!({})).await, (200, ok.clone()));
    assert_eq!(nth_event(&gw, &id, "call.speak.ended", 2).await["status"], "stopped");

    // 3: the same prompt again (from the cache), cut by the caller's BYE.
    assert_eq!(act(&api, id.clone(), "speak", long).await, (200, ok.clone()));
    assert_eq!(nth_event(&gw, &id, "call.speak.ended", 3).await["status"], "call_hangup");
    let (code, report, received) = call.await.unwrap();
    assert_eq!(code, 0, "{report}");

    // What espeak-ng itself makes of the text, through the same WAV reader and
    // resampler, G.711-encoded as the box sends it.
    let mut child = std::process::Command::new("espeak-ng")
        .args(["--stdout", "-v", "en", "--stdin"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("espeak-ng is installed (scripts/setup-tests)");
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), SPOKEN.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let (pcm, rate) = sipbridge::media::clip::wav_pcm16(&out.stdout).unwrap();
    let expected = sipbridge::media::clip::to_call_rate(&pcm, rate).unwrap();
    let frames: Vec<Vec<u8>> = expected
        .chunks_exact(160)
        .map(|f| {
            let mut b = vec![0u8; 160];
            sipbridge::media::g711::G711::Pcmu.encode(f, &mut b);
            b
        })
        .collect();
    assert!(frames.len() > 50, "espeak-ng spoke {} frames", frames.len());
    // The first frame with speech locates the prompt in what the caller got;
    // from there every frame must be the same bytes.
    let loud = frames.iter().position(|f| f.iter().any(|&b| b < 0x70 || (0x80..0xf0).contains(&b))).unwrap();
    let audio: Vec<&Packet> = received[0].iter().filter(|p| p.payload_type == 0).collect();
    let at = audio.iter().position(|p| p.payload == frames[loud]).expect("the caller heard espeak-ng's first word");
    let start = at - loud;
    let same =
        frames.iter().enumerate().filter(|(i, f)| audio.get(start + i).is_some_and(|p| p.payload == **f)).count();
    assert_eq!(same, frames.len(), "every frame of the speech, in order, byte for byte");
    // Nothing of the second prompt was heard beyond "Stop me." (stopped).
    let names: Vec<String> = std::fs::read_dir(dir.path().join("tts"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let wide = names.iter().filter(|n| n.ends_with(".16k.pcm")).count();
    assert_eq!(names.len() - wide, 3, "three texts cached: the sentence, \"Stop me.\", \"Never heard.\": {names:?}");
    assert_eq!(wide, 3, "each also at 16 kHz (espeak-ng speaks at 22.05 kHz), for wideband calls: {names:?}");
}

/// `tests/receivers/tts_server.py`, stopped by pid on drop.
struct TtsServer {
    child: std::process::Child,
    port: u16,
    log: std::path::PathBuf,
}

impl TtsServer {
    fn start(dir: &Path) -> Self {
        let python = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/.venv/bin/python");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/receivers/tts_server.py");
        let log = dir.join("tts_requests.jsonl");
        let mut child = std::process::Command::new(python)
            .arg(script)
            .arg("--log")
            .arg(&log)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("start tts_server.py");
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.take().unwrap()), &mut line).unwrap();
        let port = line.strip_prefix("LISTENING ").and_then(|p| p.trim().parse().ok()).expect("tts server port");
        Self { child, port, log }
    }

    fn requests(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

impl Drop for TtsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_http_engine_is_cached_fails_cleanly_and_speaks_to_gathers_and_rooms() {
    let dir = tempfile::tempdir().unwrap();
    let server = TtsServer::start(dir.path());
    let tts = format!(
        "[tts]\nengine = \"http\"\nurl = \"http://127.0.0.1:{}/v1/audio/speech\"\napi_key = \"sk-test-0123456789\"\ncache_dir = \"{}\"\n",
        server.port,
        dir.path().join("tts").display()
    );
    let gw = start(dir.path(), &tts);
    let api = gw.api();
    // The caller keys 1 at 8 s, for the gather_using_speak below.
    let call = one_call(dir.path(), gw.sip_port, 14_000, &[(400, '1')]);
    let id = answered_by_caller(&api, 1).await["+15550000100"].clone();
    let ok = json!({"data": {"result": "ok"}});

    // The same text twice: one request to the engine, heard twice.
    for n in 1..=2 {
        assert_eq!(
            act(&api, id.clone(), "speak", json!({"payload": "one two", "voice": "nova"})).await,
            (200, ok.clone())
        );
        assert_eq!(nth_event(&gw, &id, "call.speak.ended", n).await["status"], "completed");
    }
    // The engine fails: a 422 for the command and call.speak.ended failed.
    let (code, e) = act(&api, id.clone(), "speak", json!({"payload": "please fail"})).await;
    assert_eq!((code, e["errors"][0]["code"].as_str()), (422, Some("90046")), "{e}");
    assert_eq!(nth_event(&gw, &id, "call.speak.ended", 3).await["status"], "failed");

    // gather_using_speak: the prompt synthesized, then the caller's key press.
    let body = json!({"payload": "press one now", "maximum_digits": 1, "voice": "female"});
    assert_eq!(act(&api, id.clone(), "gather_using_speak", body).await, (200, ok.clone()));
    let g = nth_event(&gw, &id, "call.gather.ended", 1).await;
    assert_eq!((g["status"].as_str(), g["digits"].as_str()), (Some("valid"), Some("1")), "{g}");

    // Speech into a conference the call is in.
    let (code, conf) = api.post("/v2/conferences", json!({"call_control_id": id, "name": "ivr"})).await;
    assert_eq!(code, 200, "{conf}");
    let conf_id = conf["data"]["id"].as_str().unwrap().to_string();
    let (code, e) = api.post(&format!("/v2/conferences/{conf_id}/actions/speak"), json!({"payload": "a b c d"})).await;
    assert_eq!(code, 200, "{e}");
    let (code, report, received) = call.await.unwrap();
    assert_eq!(code, 0, "{report}");

    let requests = server.requests();
    let inputs: Vec<&str> = requests.iter().map(|r| r["body"]["input"].as_str().unwrap()).collect();
    assert_eq!(
        inputs,
        ["one two", "please fail", "press one now", "a b c d"],
        "the second 'one two' came from the cache"
    );
    for r in &requests {
        assert_eq!(r["path"], "/v1/audio/speech");
        assert_eq!(r["authorization"], "Bearer sk-test-0123456789");
        assert_eq!((r["body"]["model"].as_str(), r["body"]["response_format"].as_str()), (Some("tts-1"), Some("wav")));
    }
    assert_eq!(requests[0]["body"]["voice"], "nova");
    assert_eq!(requests[2]["body"]["voice"], "alloy", "Telnyx's male/female mean the configured voice");
    // The server's tones: 300 Hz + 100 Hz per word, 1 s each.
    let heard = |hz: f64| tone_packets(&received[0], hz).len();
    assert!((80..=110).contains(&heard(500.0)), "'one two' twice: {}", heard(500.0));
    assert!((30..=55).contains(&heard(600.0)), "the gather prompt: {}", heard(600.0));
    assert!((30..=55).contains(&heard(700.0)), "the conference speech: {}", heard(700.0));
}
