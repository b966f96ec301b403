//! Issue 21's IVR commands on the real daemon with real callers: SIPp places the
//! calls, the test's RTP phones key RFC 4733 digits at scripted instants, and the
//! signed webhooks tell what the box made of them.
//!
//! - `gather`: every `call.gather.ended` status from real key presses (valid by
//!   `maximum_digits`, valid by the terminating digit, invalid, timeout,
//!   `gather_stop` → cancelled, the caller's BYE → call_hangup), `command_id`,
//!   the 400/422 shapes;
//! - `gather_using_audio`: the prompt is heard until the first digit (barge-in).

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
