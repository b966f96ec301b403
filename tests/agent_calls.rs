//! Voice agents over WebSocket, end to end with real peers: the daemon binary takes
//! SIPp calls (signalling) whose audio is sent and received by a scripted RTP phone
//! in the test, and streams them to a Python agent speaking Telnyx's media-stream
//! protocol (`tests/agents/telnyx_agent.py`, which also validates every frame the box
//! sends against PROTOCOLS.md §3). Webhooks go to the Python receiver, which verifies
//! their Ed25519 signatures.

mod common;

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use common::agent::PyAgent;
use common::gateway::{Gateway, GatewayBuilder, Trunk, event_type, payload};
use common::rtp::{frequency, loud, place_calls, script, tone};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(40);

/// The daemon with `agents_and_routes` (TOML `[[agent]]` and `[[route]]` blocks),
/// webhooks to a verifying receiver, recording on.
fn gateway(dir: &Path, agents_and_routes: &str) -> GatewayBuilder {
    Gateway::builder(dir)
        .max_calls(50)
        .trunk(Trunk::new("telnyx-ip").allow("127.0.0.0/8"))
        .blocks(agents_and_routes)
        .recording("")
        .webhooks("")
        .log_level("debug")
}

/// Events of one call (by `call_control_id`), in delivery order.
fn of_call<'a>(bodies: &'a [Value], call_control_id: &str) -> Vec<&'a Value> {
    bodies.iter().filter(|b| payload(b)["call_control_id"] == call_control_id).collect()
}

fn agent_block(name: &str, url: &str, extra: &str) -> String {
    format!("[[agent]]\nname = \"{name}\"\nurl = \"{url}\"\n{extra}\n")
}

fn route(to: &str, agent: &str, extra: &str) -> String {
    format!("[[route]]\nto = \"{to}\"\nagent = \"{agent}\"\n{extra}\n")
}

fn messages(conn: &Value) -> Vec<&Value> {
    conn["messages"].as_array().map(|a| a.iter().collect()).unwrap_or_default()
}

/// The whole protocol on one call: connected/start/media/dtmf/stop with the call's
/// ids and numbers, 160-byte PCMU chunks, the agent's echo heard by the caller, the
/// bearer token, and webhooks streaming.started → dtmf → streaming.stopped in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_streams_to_a_telnyx_agent_and_the_caller_hears_it() {
    let dir = tempfile::tempdir().unwrap();
    let agent = PyAgent::start(dir.path(), "agent", "echo", &["--require-token", "s3cret"]);
    let cfg = agent_block("bot", &agent.url("/telnyx?x=1"), "auth_token = \"s3cret\"\ntrack = \"both_tracks\"")
        + &route("+13125550100", "bot", "record = true");
    let gw = gateway(dir.path(), &cfg).start();
    let (d, port) = (dir.path().to_path_buf(), gw.sip_port);
    let (code, report, received) = tokio::task::spawn_blocking(move || {
        let s = script(tone(440.0, 8000.0, 2400), vec![(40, '1'), (70, '#')], 2500, 3300);
        place_calls(&d, port, "127.0.0.1", "+13125550100", 3000, vec![s])
    })
    .await
    .unwrap();
    assert_eq!(code, 0, "{report}");

    let conns = agent.wait_connections(1, WAIT);
    assert_eq!(conns.len(), 1, "{conns:?}");
    let c = &conns[0];
    assert_eq!(
        c["protocol_errors"],
        serde_json::json!([]),
        "the box spoke Telnyx's protocol: {}",
        c["protocol_errors"]
    );
    assert_eq!(c["path"], "/telnyx?x=1");
    assert_eq!(c["headers"]["authorization"], "Bearer s3cret");
    let msgs = messages(c);
    let events: Vec<&str> = msgs.iter().map(|m| m["event"].as_str().unwrap_or("?")).collect();
    assert_eq!(&events[..2], ["connected", "start"]);
    assert_eq!(events.last(), Some(&"stop"));
    let start = &msgs[1]["start"];
    assert_eq!(start["from"], "+14155550123");
    assert_eq!(start["to"], "+13125550100");
    assert_eq!(start["media_format"], serde_json::json!({"encoding": "PCMU", "sample_rate": 8000, "channels": 1}));
    let summary = &c["summary"];
    assert_eq!(summary["dtmf"], "1#", "{summary}");
    let inbound = summary["inbound_media"].as_u64().unwrap();
    let outbound = summary["outbound_media"].as_u64().unwrap();
    // 2.5 s of caller audio at 50 packets/s, minus the 16 DTMF packets.
    assert!((100..=170).contains(&inbound), "inbound media frames: {inbound}");
    assert!(outbound >= 100, "both_tracks streams what the caller hears too: {outbound}");

    // The caller heard the agent: its 440 Hz tone came back.
    let heard = loud(&received[0]);
    assert!(heard.len() >= 80, "loud packets heard by the caller: {} of {}", heard.len(), received[0].len());
    let f = frequency(&heard);
    assert!((400.0..480.0).contains(&f), "the echo carries the caller's tone: {f} Hz");

    let ccid = start["call_control_id"].as_str().unwrap().to_string();
    let bodies = gw.events("the call's events", |b| b.iter().any(|x| event_type(x) == "call.recording.saved")).await;
    let types: Vec<&str> = of_call(&bodies, &ccid).iter().map(|b| event_type(b)).collect();
    assert_eq!(
        types,
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
    let calls = of_call(&bodies, &ccid);
    assert_eq!(payload(calls[3])["digit"], "1");
    assert_eq!(payload(calls[4])["digit"], "#");
    let started = payload(calls[2]);
    assert_eq!(started["stream_url"], agent.url("/telnyx?x=1"));
    assert_eq!(started["stream_id"], msgs[1]["stream_id"]);
    assert_eq!(started["call_session_id"], start["call_session_id"]);
    gw.stop();
}

/// A long agent message is paced at real time (not burst), and its mark comes back
/// only after it played.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_prompt_is_paced_and_its_mark_returns_after_it_played() {
    let dir = tempfile::tempdir().unwrap();
    let prompt = dir.path().join("prompt.wav");
    let spec =
        hound::WavSpec { channels: 1, sample_rate: 8000, bits_per_sample: 16, sample_format: hound::SampleFormat::Int };
    let mut w = hound::WavWriter::create(&prompt, spec).unwrap();
    for s in tone(600.0, 8000.0, 1500) {
        w.write_sample(s).unwrap();
    }
    w.finalize().unwrap();
    let agent = PyAgent::start(dir.path(), "agent", "prompt-echo", &["--prompt", prompt.to_str().unwrap()]);
    let cfg = agent_block("bot", &agent.url("/"), "") + &route("+13125550100", "bot", "");
    let gw = gateway(dir.path(), &cfg).start();
    let (d, port) = (dir.path().to_path_buf(), gw.sip_port);
    let (code, report, received) = tokio::task::spawn_blocking(move || {
        // The caller stays silent: everything loud it hears is the prompt.
        place_calls(&d, port, "127.0.0.1", "+13125550100", 3000, vec![script(Vec::new(), vec![], 2800, 3200)])
    })
    .await
    .unwrap();
    assert_eq!(code, 0, "{report}");
    let heard = loud(&received[0]);
    // 1.5 s of prompt = 75 packets of 20 ms, spread over ~1.5 s, not burst.
    assert!((70..=78).contains(&heard.len()), "prompt packets heard: {}", heard.len());
    let span = heard.last().unwrap().at - heard[0].at;
    assert!(span >= Duration::from_millis(1300), "played at real time, not burst: {span:?}");
    assert!((560.0..640.0).contains(&frequency(&heard)), "{}", frequency(&heard));
    assert!(heard[0].marker, "the talkspurt starts with the RTP marker bit");

    let conns = agent.wait_connections(1, WAIT);
    let c = &conns[0];
    assert_eq!(c["protocol_errors"], serde_json::json!([]), "{}", c["protocol_errors"]);
    let sent_t = c["sent"].as_array().unwrap().iter().find(|m| m["event"] == "media").unwrap()["_t"].as_f64().unwrap();
    let marks = c["summary"]["marks_returned"].as_array().unwrap();
    assert_eq!(marks.len(), 1, "{marks:?}");
    assert_eq!(marks[0][0], "prompt-end");
    let back = marks[0][1].as_f64().unwrap() - sent_t;
    assert!(back >= 1.4, "the mark returned {back:.3} s after the 1.5 s prompt was sent");
    gw.stop();
}

/// `clear` drops the queued audio at once and returns the pending marks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clear_cuts_playback_and_returns_pending_marks() {
    let dir = tempfile::tempdir().unwrap();
    let agent = PyAgent::start(dir.path(), "agent", "mark-clear", &["--clear-after", "1.0"]);
    let cfg = agent_block("bot", &agent.url("/"), "") + &route("+13125550100", "bot", "");
    let gw = gateway(dir.path(), &cfg).start();
    let (d, port) = (dir.path().to_path_buf(), gw.sip_port);
    let (code, report, received) = tokio::task::spawn_blocking(move || {
        place_calls(&d, port, "127.0.0.1", "+13125550100", 3000, vec![script(Vec::new(), vec![], 2800, 3200)])
    })
    .await
    .unwrap();
    assert_eq!(code, 0, "{report}");
    let conns = agent.wait_connections(1, WAIT);
    let c = &conns[0];
    assert_eq!(c["protocol_errors"], serde_json::json!([]), "{}", c["protocol_errors"]);
    let clear_t = c["sent"].as_array().unwrap().iter().find(|m| m["event"] == "clear").unwrap()["_t"].as_f64().unwrap();
    let marks = c["summary"]["marks_returned"].as_array().unwrap();
    let names: Vec<&str> = marks.iter().map(|m| m[0].as_str().unwrap()).collect();
    assert_eq!(names, ["m1", "m2"], "both marks were pending at the clear");
    for m in marks {
        let after = m[1].as_f64().unwrap() - clear_t;
        assert!((0.0..0.5).contains(&after), "returned by the clear, not by playback: {after:.3} s");
    }
    // 5 s of tone were queued; about 1 s (50 packets) played before the clear.
    let heard = loud(&received[0]);
    assert!((35..=65).contains(&heard.len()), "tone packets heard: {}", heard.len());
    gw.stop();
}

/// L16 at 16 kHz: 640-byte chunks to the agent, its L16 audio resampled back to the
/// call's 8 kHz G.711.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_l16_16khz_stream_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let agent = PyAgent::start(dir.path(), "agent", "echo", &[]);
    let cfg = agent_block("bot", &agent.url("/"), "encoding = \"L16\"\nsample_rate = 16000")
        + &route("+13125550100", "bot", "");
    let gw = gateway(dir.path(), &cfg).start();
    let (d, port) = (dir.path().to_path_buf(), gw.sip_port);
    let (code, report, received) = tokio::task::spawn_blocking(move || {
        place_calls(
            &d,
            port,
            "127.0.0.1",
            "+13125550100",
            3000,
            vec![script(tone(500.0, 8000.0, 2000), vec![], 2000, 2800)],
        )
    })
    .await
    .unwrap();
    assert_eq!(code, 0, "{report}");
    let conns = agent.wait_connections(1, WAIT);
    let c = &conns[0];
    assert_eq!(c["protocol_errors"], serde_json::json!([]), "{}", c["protocol_errors"]);
    assert_eq!(
        c["summary"]["media_format"],
        serde_json::json!({"encoding": "L16", "sample_rate": 16000, "channels": 1})
    );
    let media: Vec<&Value> = messages(c).into_iter().filter(|m| m["event"] == "media").collect();
    assert!(media.len() >= 90, "{}", media.len());
    let heard = loud(&received[0]);
    assert!(heard.len() >= 80, "{}", heard.len());
    let f = frequency(&heard);
    assert!((460.0..540.0).contains(&f), "{f}");
    gw.stop();
}

/// Power of `hz` in `pcm` at `rate` (Goertzel), as the amplitude of a sine at
/// that frequency: a full-scale tone of amplitude A gives about A.
fn tone_level(pcm: &[i16], hz: f64, rate: f64) -> f64 {
    let w = 2.0 * std::f64::consts::PI * hz / rate;
    let (mut s1, mut s2) = (0.0f64, 0.0f64);
    for &x in pcm {
        let s0 = f64::from(x) + 2.0 * w.cos() * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    let power = s1 * s1 + s2 * s2 - 2.0 * w.cos() * s1 * s2;
    2.0 * power.sqrt() / pcm.len().max(1) as f64
}

/// An L16/16000 agent is played and recorded at 16 kHz (issue 7 point 1): the
/// recording is 16 kHz stereo, its right channel keeps the agent's 6 kHz tone
/// (above what any 8 kHz path can carry), its left the caller's 500 Hz; the
/// caller's G.711 gets the prompt band-limited (the 6 kHz tone filtered out, not
/// aliased to 2 kHz).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_l16_16khz_agent_is_recorded_at_16khz_with_its_full_band() {
    let dir = tempfile::tempdir().unwrap();
    let prompt = dir.path().join("prompt16k.wav");
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 16000,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(&prompt, spec).unwrap();
    let sine = |hz: f64, n: usize| {
        (0..n).map(move |i| (8000.0 * (2.0 * std::f64::consts::PI * hz * i as f64 / 16000.0).sin()) as i16)
    };
    for s in sine(1000.0, 16000).chain(sine(6000.0, 16000)) {
        w.write_sample(s).unwrap();
    }
    w.finalize().unwrap();
    let agent = PyAgent::start(dir.path(), "agent", "prompt-echo", &["--prompt", prompt.to_str().unwrap()]);
    let cfg = agent_block("bot", &agent.url("/"), "encoding = \"L16\"\nsample_rate = 16000")
        + &route("+13125550100", "bot", "record = true");
    let gw = gateway(dir.path(), &cfg).start();
    let (d, port) = (dir.path().to_path_buf(), gw.sip_port);
    let (code, report, received) = tokio::task::spawn_blocking(move || {
        place_calls(
            &d,
            port,
            "127.0.0.1",
            "+13125550100",
            3000,
            vec![script(tone(500.0, 6000.0, 3000), vec![], 3000, 3200)],
        )
    })
    .await
    .unwrap();
    assert_eq!(code, 0, "{report}");
    let bodies = gw.events("call.recording.saved", |b| b.iter().any(|x| event_type(x) == "call.recording.saved")).await;
    let saved = bodies.iter().find(|x| event_type(x) == "call.recording.saved").unwrap();
    assert_eq!(payload(saved)["sample_rate"], 16000, "{saved}");
    let path = payload(saved)["file_path"].as_str().unwrap();
    let mut r = hound::WavReader::open(path).unwrap();
    assert_eq!((r.spec().channels, r.spec().sample_rate, r.spec().bits_per_sample), (2, 16000, 16));
    let samples: Vec<i16> = r.samples::<i16>().map(|s| s.unwrap()).collect();
    let (left, right): (Vec<i16>, Vec<i16>) = samples.chunks_exact(2).map(|f| (f[0], f[1])).unzip();
    let secs = left.len() as f64 / 16000.0;
    assert!((2.8..3.6).contains(&secs), "recorded {secs} s");
    // Left: the caller's 500 Hz.
    assert!(tone_level(&left[8000..24000], 500.0, 16000.0) > 3000.0);
    // Right: in some 100 ms window, the agent's 6 kHz tone at full level.
    let six_k = right.chunks_exact(1600).map(|w| tone_level(w, 6000.0, 16000.0)).fold(0.0, f64::max);
    let one_k = right.chunks_exact(1600).map(|w| tone_level(w, 1000.0, 16000.0)).fold(0.0, f64::max);
    assert!(six_k > 5000.0, "6 kHz in the recording's right channel: {six_k:.0}");
    assert!(one_k > 5000.0, "1 kHz in the recording's right channel: {one_k:.0}");
    // The caller heard the 1 kHz part; the 6 kHz part was filtered, not aliased to 2 kHz.
    let heard: Vec<i16> = received[0].iter().filter(|p| p.payload_type == 0).flat_map(|p| p.pcm()).collect();
    let one_k_heard = heard.chunks_exact(800).map(|w| tone_level(w, 1000.0, 8000.0)).fold(0.0, f64::max);
    let alias = heard.chunks_exact(800).map(|w| tone_level(w, 2000.0, 8000.0)).fold(0.0, f64::max);
    assert!(one_k_heard > 5000.0, "1 kHz heard by the caller: {one_k_heard:.0}");
    assert!(alias < 200.0, "2 kHz alias of the 6 kHz tone heard by the caller: {alias:.0}");
    gw.stop();
}

/// Refused, hanging, dropped and oversized-message agents, each under `on_disconnect = "hangup"` and
/// `"continue"`: streaming.failed with a reason; hangup ends the call from the box,
/// continue keeps it up (silence to the caller) and the recording covers it all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_failures_follow_on_disconnect() {
    let dir = tempfile::tempdir().unwrap();
    let refuse = PyAgent::start(dir.path(), "refuse", "refuse", &[]);
    let hang = PyAgent::start(dir.path(), "hang", "hang", &[]);
    let drop = PyAgent::start(dir.path(), "drop", "drop-after", &["--drop-after", "1.0"]);
    // An agent sending one message over the box's 4 MiB cap: the stream fails
    // (the box never buffers a message of any size an agent announces).
    let huge = PyAgent::start(dir.path(), "huge", "huge", &[]);
    let mut cfg = String::new();
    let cases = [
        ("refuse", &refuse, "403"),
        ("hang", &hang, "timeout"),
        ("drop", &drop, "connection lost"),
        ("huge", &huge, "Message too long"),
    ];
    for (i, (name, a, _)) in cases.iter().enumerate() {
        for (j, mode) in ["hangup", "continue"].iter().enumerate() {
            let agent = format!("{name}-{mode}");
            cfg += &agent_block(&agent, &a.url("/"), &format!("on_disconnect = \"{mode}\"\nconnect_timeout = \"1s\""));
            cfg += &route(&format!("+1312555{i}{j}00"), &agent, "record = true");
        }
    }
    let gw = gateway(dir.path(), &cfg).start();
    for (i, (name, _, reason)) in cases.iter().enumerate() {
        for (j, mode) in ["hangup", "continue"].iter().enumerate() {
            let number = format!("+1312555{i}{j}00");
            let (d, port, n) = (dir.path().to_path_buf(), gw.sip_port, number.clone());
            let (code, report, received) = tokio::task::spawn_blocking(move || {
                place_calls(
                    &d,
                    port,
                    "127.0.0.1",
                    &n,
                    4000,
                    vec![script(tone(440.0, 8000.0, 4000), vec![], 4000, 4300)],
                )
            })
            .await
            .unwrap();
            assert_eq!(code, 0, "{name}/{mode}: {report}");
            let bodies = gw
                .events(&format!("{name}/{mode} events"), |b| {
                    b.iter().any(|x| event_type(x) == "call.recording.saved" && payload(x)["to"] == number)
                })
                .await;
            let ccid = bodies.iter().find(|b| payload(b)["to"] == number).unwrap();
            let calls = of_call(&bodies, payload(ccid)["call_control_id"].as_str().unwrap());
            let types: Vec<&str> = calls.iter().map(|b| event_type(b)).collect();
            let failed = calls.iter().find(|b| event_type(b) == "streaming.failed").expect("streaming.failed");
            let why = payload(failed)["failure_reason"].as_str().unwrap();
            assert!(why.contains(reason), "{name}/{mode}: failure_reason {why:?}");
            let hangup = payload(calls.iter().find(|b| event_type(b) == "call.hangup").unwrap());
            let saved = payload(calls.iter().find(|b| event_type(b) == "call.recording.saved").unwrap());
            let t = |k: &str| humantime::parse_rfc3339(saved[k].as_str().unwrap()).unwrap();
            let recorded = t("recording_ended_at").duration_since(t("recording_started_at")).unwrap();
            if *mode == "hangup" {
                assert_eq!(hangup["hangup_source"], "callee", "{name}/{mode}: the box hung up: {types:?}");
                assert!(recorded < Duration::from_millis(3500), "{name}/{mode}: ended early: {recorded:?}");
            } else {
                assert_eq!(hangup["hangup_source"], "caller", "{name}/{mode}: the call stayed up: {types:?}");
                assert_eq!(hangup["hangup_cause"], "normal_clearing");
                assert!(recorded >= Duration::from_millis(3800), "{name}/{mode}: recorded to the end: {recorded:?}");
                // Packets kept flowing to the caller (silence) until it hung up.
                let last = received[0].last().map(|p| p.at).unwrap_or_default();
                assert!(last >= Duration::from_millis(3500), "{name}/{mode}: media until the end: {last:?}");
            }
            assert!(!types.contains(&"streaming.stopped"), "{name}/{mode}: {types:?}");
        }
    }
    gw.stop();
}

/// Frames the box cannot understand get `error` frames back; the call goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_frames_from_the_agent_get_errors_and_the_call_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let agent = PyAgent::start(dir.path(), "agent", "bad-json", &[]);
    let cfg = agent_block("bot", &agent.url("/"), "") + &route("+13125550100", "bot", "");
    let gw = gateway(dir.path(), &cfg).start();
    let (d, port) = (dir.path().to_path_buf(), gw.sip_port);
    let (code, report, received) = tokio::task::spawn_blocking(move || {
        place_calls(
            &d,
            port,
            "127.0.0.1",
            "+13125550100",
            2500,
            vec![script(tone(440.0, 8000.0, 2000), vec![], 2000, 2700)],
        )
    })
    .await
    .unwrap();
    assert_eq!(code, 0, "{report}");
    let conns = agent.wait_connections(1, WAIT);
    let c = &conns[0];
    assert_eq!(c["protocol_errors"], serde_json::json!([]), "{}", c["protocol_errors"]);
    let errors: Vec<&Value> = messages(c).into_iter().filter(|m| m["event"] == "error").collect();
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert_eq!(errors[0]["payload"]["code"], 100_003);
    assert!(errors[1]["payload"]["detail"].as_str().unwrap().contains("bogus"));
    assert!(loud(&received[0]).len() >= 60, "the echo still works after the bad frames");
    gw.stop();
}

/// Twenty calls to one agent at once: twenty connections with their own stream and
/// call ids, and each caller hears its own tone, nobody else's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_concurrent_calls_to_one_agent_stay_independent() {
    let dir = tempfile::tempdir().unwrap();
    let agent = PyAgent::start(dir.path(), "agent", "echo", &[]);
    let cfg = agent_block("bot", &agent.url("/"), "") + &route("+13125550100", "bot", "");
    let gw = gateway(dir.path(), &cfg).start();
    let (d, port) = (dir.path().to_path_buf(), gw.sip_port);
    let freqs: Vec<f64> = (0..20).map(|i| 300.0 + 60.0 * f64::from(i)).collect();
    let f2 = freqs.clone();
    let (code, report, received) = tokio::task::spawn_blocking(move || {
        let scripts = f2.iter().map(|f| script(tone(*f, 8000.0, 3000), vec![], 3000, 3800)).collect();
        place_calls(&d, port, "127.0.0.1", "+13125550100", 3500, scripts)
    })
    .await
    .unwrap();
    assert_eq!(code, 0, "{report}");
    for (i, r) in received.iter().enumerate() {
        let heard = loud(r);
        assert!(heard.len() >= 80, "call {i}: {} loud packets", heard.len());
        let f = frequency(&heard);
        assert!((f - freqs[i]).abs() < 25.0, "call {i} hears {f:.0} Hz, sent {:.0} Hz", freqs[i]);
    }
    let conns = agent.wait_connections(20, WAIT);
    assert_eq!(conns.len(), 20);
    let streams: HashSet<&str> = conns.iter().map(|c| c["summary"]["stream_id"].as_str().unwrap()).collect();
    let calls: HashSet<&str> =
        conns.iter().map(|c| messages(c)[1]["start"]["call_control_id"].as_str().unwrap()).collect();
    assert_eq!((streams.len(), calls.len()), (20, 20));
    for c in &conns {
        assert_eq!(c["protocol_errors"], serde_json::json!([]), "{}", c["protocol_errors"]);
    }
    gw.stop();
}

/// A self-signed certificate for 127.0.0.1 (openssl), returns (cert, key).
fn certificate(dir: &Path, name: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let (cert, key) = (dir.join(format!("{name}.pem")), dir.join(format!("{name}.key")));
    let ok = std::process::Command::new("openssl")
        .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=agent.test"])
        .args(["-addext", "subjectAltName=IP:127.0.0.1", "-addext", "basicConstraints=critical,CA:FALSE"])
        .args(["-addext", "extendedKeyUsage=serverAuth", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl makes the test certificate");
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    (cert, key)
}

/// `wss://`: the box verifies the agent's certificate against the system's roots
/// (here `SSL_CERT_FILE`, as rustls-native-certs reads it): a trusted agent streams,
/// an untrusted one fails with a TLS reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wss_agents_are_verified() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = certificate(dir.path(), "trusted");
    let (other, other_key) = certificate(dir.path(), "untrusted");
    let good = PyAgent::start(
        dir.path(),
        "good",
        "echo",
        &["--tls-cert", cert.to_str().unwrap(), "--tls-key", key.to_str().unwrap()],
    );
    let bad = PyAgent::start(
        dir.path(),
        "bad",
        "echo",
        &["--tls-cert", other.to_str().unwrap(), "--tls-key", other_key.to_str().unwrap()],
    );
    let wss = |a: &PyAgent| format!("wss://127.0.0.1:{}/", a.port);
    let cfg = agent_block("good", &wss(&good), "")
        + &route("+13125550100", "good", "")
        + &agent_block("bad", &wss(&bad), "")
        + &route("+13125550199", "bad", "");
    let gw = gateway(dir.path(), &cfg).env("SSL_CERT_FILE", cert.to_str().unwrap()).start();
    for number in ["+13125550100", "+13125550199"] {
        let (d, port) = (dir.path().to_path_buf(), gw.sip_port);
        let (code, report, received) = tokio::task::spawn_blocking(move || {
            place_calls(
                &d,
                port,
                "127.0.0.1",
                number,
                2500,
                vec![script(tone(440.0, 8000.0, 2000), vec![], 2000, 2700)],
            )
        })
        .await
        .unwrap();
        assert_eq!(code, 0, "{report}");
        if number.ends_with("100") {
            assert!(loud(&received[0]).len() >= 60, "the echo came back over wss");
        }
    }
    assert_eq!(good.wait_connections(1, WAIT)[0]["protocol_errors"], serde_json::json!([]));
    let bodies = gw.events("streaming.failed", |b| b.iter().any(|x| event_type(x) == "streaming.failed")).await;
    let failed = bodies.iter().find(|b| event_type(b) == "streaming.failed").unwrap();
    let why = payload(failed)["failure_reason"].as_str().unwrap();
    assert!(why.contains("TLS"), "{why}");
    assert!(bodies.iter().any(|b| event_type(b) == "streaming.started"));
    gw.stop();
}
