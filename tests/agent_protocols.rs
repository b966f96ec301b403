//! Stream protocols per agent (issue 23), end to end with real peers: the daemon
//! binary takes SIPp calls whose audio a scripted RTP phone in the test sends and
//! receives, and streams them to `tests/agents/stream_agent.py` playing an agent
//! written for Twilio Media Streams, Exotel's Voicebot applet, Plivo audio streams
//! or Asterisk AudioSocket. The agent validates every message the box sends
//! against the provider's published shape (`protocol_errors`), independently of
//! the Rust framing. Each test checks: audio both ways (the caller hears its tone
//! back; the agent hears it as the provider's format decodes it, so a byte-order
//! mistake is caught in either direction), DTMF in the provider's shape, marks or
//! checkpoints, clear, and the end of the stream; webhooks are Telnyx's whatever
//! the protocol.

mod common;

use std::path::Path;
use std::time::Duration;

use common::agent::PyAgent;
use common::gateway::{Gateway, GatewayBuilder, Trunk, event_type, payload};
use common::rtp::{Packet, Script, frequency, loud, place_calls, script, tone};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(40);
const NUMBER: &str = "+13125550100";

fn gateway(dir: &Path, toml: &str) -> GatewayBuilder {
    Gateway::builder(dir)
        .max_calls(20)
        .trunk(Trunk::new("carrier").allow("127.0.0.0/8"))
        .blocks(toml)
        .recording("")
        .webhooks("")
        .log_level("debug")
}

/// An `[[agent]]` speaking `protocol` at `url`, routed from [`NUMBER`].
fn config(protocol: &str, url: &str, extra: &str) -> String {
    format!(
        "[[agent]]\nname = \"bot\"\nurl = \"{url}\"\nprotocol = \"{protocol}\"\n{extra}\n\n\
         [[route]]\nto = \"{NUMBER}\"\nagent = \"bot\"\nrecord = true\n"
    )
}

fn agent(dir: &Path, protocol: &str, mode: &str, args: &[&str]) -> PyAgent {
    let mut all = vec!["--protocol", protocol];
    all.extend_from_slice(args);
    PyAgent::start_script(dir, "stream_agent.py", protocol, mode, &all)
}

fn url(protocol: &str, a: &PyAgent) -> String {
    if protocol == "audiosocket" { format!("tcp://127.0.0.1:{}", a.port) } else { a.url("/stream") }
}

/// One call to [`NUMBER`] playing `s`; returns what the caller heard.
async fn call(gw: &Gateway, dir: &Path, hold_ms: u64, s: Script) -> Vec<Packet> {
    let (d, port) = (dir.to_path_buf(), gw.sip_port);
    let (code, report, mut received) =
        tokio::task::spawn_blocking(move || place_calls(&d, port, "127.0.0.1", NUMBER, hold_ms, vec![s]))
            .await
            .unwrap();
    assert_eq!(code, 0, "{report}");
    received.remove(0)
}

/// The agent's one connection log, checked free of protocol errors.
fn connection(a: &PyAgent) -> Value {
    let conns = a.wait_connections(1, WAIT);
    assert_eq!(conns.len(), 1, "{conns:?}");
    let c = conns[0].clone();
    assert_eq!(c["protocol_errors"], json!([]), "the box spoke the provider's protocol: {}", c["protocol_errors"]);
    c
}

fn events(c: &Value) -> Vec<String> {
    c["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["event"].as_str().or(m["kind"].as_str()).unwrap_or("?").into())
        .collect()
}

/// The call's webhooks, in order, once its recording is saved.
async fn webhook_types(gw: &Gateway) -> Vec<String> {
    let bodies = gw.events("the call's events", |b| b.iter().any(|x| event_type(x) == "call.recording.saved")).await;
    bodies.iter().map(|b| event_type(b).to_string()).collect()
}

/// The same call through any protocol: echo, DTMF, stop; webhooks unchanged.
async fn echo_call(protocol: &str, start_event: &str, stop_event: Option<&str>) {
    let dir = tempfile::tempdir().unwrap();
    let a = agent(dir.path(), protocol, "echo", &[]);
    let gw = gateway(dir.path(), &config(protocol, &url(protocol, &a), "")).start();
    let heard =
        call(&gw, dir.path(), 3000, script(tone(440.0, 8000.0, 2400), vec![(40, '1'), (70, '#')], 2500, 3300)).await;

    let c = connection(&a);
    let ev = events(&c);
    assert_eq!(ev.iter().find(|e| *e != "connected").map(String::as_str), Some(start_event), "{ev:?}");
    match stop_event {
        Some(stop) => assert_eq!(ev.last().map(String::as_str), Some(stop), "the stream ends with {stop}"),
        None => assert!(!ev.iter().any(|e| e == "stop"), "{protocol} sends no stop: {ev:?}"),
    }
    assert_eq!(c["close"]["by"], "peer", "the box closed the stream: {}", c["close"]);
    let s = &c["summary"];
    assert_eq!(s["dtmf"], "1#", "{s}");
    let inbound = s["inbound_media"].as_u64().unwrap();
    assert!((100..=170).contains(&inbound), "20 ms frames of 2.5 s of caller audio: {inbound}");
    // The agent hears the caller's 440 Hz tone as its provider's format decodes it.
    let hz = s["inbound_hz"].as_f64().unwrap_or_default();
    assert!((400.0..480.0).contains(&hz), "the agent heard {hz} Hz");
    // The caller hears the agent's echo of it.
    let loud = loud(&heard);
    assert!(loud.len() >= 80, "loud packets heard: {} of {}", loud.len(), heard.len());
    let f = frequency(&loud);
    assert!((400.0..480.0).contains(&f), "the echo carries the caller's tone: {f} Hz");

    let types = webhook_types(&gw).await;
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
        ],
        "Telnyx webhooks whatever the protocol"
    );
    gw.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_twilio_agent_echoes_gets_dtmf_and_stop() {
    echo_call("twilio", "start", Some("stop")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exotel_agent_echoes_little_endian_pcm_gets_dtmf_and_stop() {
    echo_call("exotel", "start", Some("stop")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plivo_agent_echoes_with_play_audio_gets_dtmf_and_a_close() {
    echo_call("plivo", "start", None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_audiosocket_agent_echoes_slin_gets_dtmf_and_hangup() {
    echo_call("audiosocket", "uuid", Some("hangup")).await;
}

/// Marks (Twilio, Exotel) pending at a clear come back at once; Plivo answers
/// `clearAudio` with `clearedAudio` and reports no checkpoint that did not play.
/// Either way the queued tone stops: about 1 s of the 5 s queued is heard.
async fn clear_call(protocol: &str, extra: &str) {
    let dir = tempfile::tempdir().unwrap();
    let a = agent(dir.path(), protocol, "mark-clear", &["--clear-after", "1.0"]);
    let gw = gateway(dir.path(), &config(protocol, &url(protocol, &a), extra)).start();
    let heard = call(&gw, dir.path(), 3000, script(Vec::new(), vec![], 2800, 3200)).await;
    let c = connection(&a);
    let clear_t = c["sent"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["event"] == "clear" || m["event"] == "clearAudio")
        .expect("the agent cleared")["_t"]
        .as_f64()
        .unwrap();
    let marks = c["summary"]["marks_returned"].as_array().unwrap();
    if protocol == "plivo" {
        assert_eq!(marks, &Vec::<Value>::new(), "no playedStream for checkpoints that never played");
        let cleared = c["summary"]["cleared"].as_array().unwrap();
        assert_eq!(cleared.len(), 1, "one clearedAudio: {cleared:?}");
        let after = cleared[0].as_f64().unwrap() - clear_t;
        assert!((0.0..0.5).contains(&after), "clearedAudio answered the clear: {after:.3} s");
    } else {
        let names: Vec<&str> = marks.iter().map(|m| m[0].as_str().unwrap()).collect();
        assert_eq!(names, ["m1", "m2"], "both marks were pending at the clear");
        for m in marks {
            let after = m[1].as_f64().unwrap() - clear_t;
            assert!((0.0..0.5).contains(&after), "returned by the clear, not by playback: {after:.3} s");
        }
    }
    let tone = loud(&heard);
    assert!((35..=65).contains(&tone.len()), "tone packets heard: {}", tone.len());
    let f = frequency(&tone);
    assert!((950.0..1050.0).contains(&f), "the agent's 1 kHz tone, in its byte order: {f} Hz");
    gw.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_twilio_clear_drops_queued_audio_and_returns_pending_marks() {
    clear_call("twilio", "").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exotel_clear_drops_queued_audio_and_returns_pending_marks() {
    clear_call("exotel", "").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plivo_clear_audio_is_answered_with_cleared_audio() {
    clear_call("plivo", "").await;
}

/// A mark (checkpoint) after a 1 s prompt comes back once the prompt has played
/// (Twilio `mark`, Plivo `playedStream`, here over L16 at 16 kHz little-endian).
async fn prompt_call(protocol: &str, extra: &str) {
    let dir = tempfile::tempdir().unwrap();
    let a = agent(dir.path(), protocol, "prompt-mark", &[]);
    let gw = gateway(dir.path(), &config(protocol, &url(protocol, &a), extra)).start();
    let heard = call(&gw, dir.path(), 3000, script(Vec::new(), vec![], 2500, 2800)).await;
    let c = connection(&a);
    let sent_t = c["sent"].as_array().unwrap()[0]["_t"].as_f64().unwrap();
    let marks = c["summary"]["marks_returned"].as_array().unwrap();
    assert_eq!(marks.len(), 1, "{marks:?}");
    assert_eq!(marks[0][0], "prompt-end");
    let back = marks[0][1].as_f64().unwrap() - sent_t;
    assert!(back >= 0.9, "the mark returned {back:.3} s after the 1 s prompt was sent");
    let prompt = loud(&heard);
    assert!((45..=52).contains(&prompt.len()), "1 s of prompt, 50 packets: {}", prompt.len());
    let f = frequency(&prompt);
    assert!((560.0..640.0).contains(&f), "{f} Hz");
    gw.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_twilio_mark_returns_after_its_audio_played() {
    prompt_call("twilio", "").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plivo_checkpoint_returns_played_stream_after_l16_16khz_audio() {
    prompt_call("plivo", "encoding = \"L16\"\nsample_rate = 16000").await;
}

/// An AudioSocket agent ending the call with 0x00: the box hangs up
/// (`on_disconnect = "hangup"`), `streaming.failed` says the agent closed it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_audiosocket_hangup_from_the_agent_ends_the_call() {
    let dir = tempfile::tempdir().unwrap();
    let a = agent(dir.path(), "audiosocket", "hangup-after", &["--hangup-after", "1.0"]);
    let gw = gateway(dir.path(), &config("audiosocket", &url("audiosocket", &a), "")).start();
    let heard = call(&gw, dir.path(), 4000, script(tone(440.0, 8000.0, 4000), vec![], 4000, 4300)).await;
    let c = connection(&a);
    assert_eq!(c["sent"].as_array().unwrap().last().unwrap()["kind"], "hangup");
    let bodies = gw.events("the call's events", |b| b.iter().any(|x| event_type(x) == "call.recording.saved")).await;
    let failed = bodies.iter().find(|b| event_type(b) == "streaming.failed").expect("streaming.failed");
    assert_eq!(payload(failed)["failure_reason"], "closed by the agent (hangup)");
    let hangup = bodies.iter().find(|b| event_type(b) == "call.hangup").unwrap();
    assert_eq!(payload(hangup)["hangup_source"], "callee", "the box hung up");
    let last = heard.last().map(|p| p.at).unwrap_or_default();
    assert!(last < Duration::from_millis(3000), "the call ended early: last packet at {last:?}");
    gw.stop();
}

/// The API's `streaming_start` takes `stream_protocol`: bad names, URLs and
/// formats are 400s naming the field; a Twilio stream started on a live call
/// speaks Twilio's protocol.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streaming_start_takes_a_stream_protocol() {
    const TOKEN: &str = "test-token-0123456789";
    let dir = tempfile::tempdir().unwrap();
    let a = agent(dir.path(), "twilio", "echo", &[]);
    let gw = Gateway::builder(dir.path())
        .trunk(Trunk::new("carrier").allow("127.0.0.0/8"))
        .agent("echo", "builtin:echo", "")
        .route(common::gateway::Route::new().agent("echo"))
        .webhooks("")
        .api(TOKEN)
        .start();
    let api = gw.api();
    let (d, port) = (dir.path().to_path_buf(), gw.sip_port);
    let call = tokio::task::spawn_blocking(move || {
        place_calls(&d, port, "127.0.0.1", NUMBER, 4000, vec![script(tone(440.0, 8000.0, 3500), vec![], 3500, 4000)])
    });
    let deadline = std::time::Instant::now() + WAIT;
    let id = loop {
        let (_, body) = api.get("/v2/calls").await;
        if let Some(c) = body["data"].as_array().and_then(|a| a.first()).filter(|c| c["state"] == "answered") {
            break c["call_control_id"].as_str().unwrap().to_string();
        }
        assert!(std::time::Instant::now() < deadline, "no answered call listed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let url = a.url("/api");
    for (body, pointer) in [
        (json!({"stream_url": url, "stream_protocol": "vonage"}), "/stream_protocol"),
        (json!({"stream_url": url, "stream_protocol": "audiosocket"}), "/stream_url"),
        (json!({"stream_url": "tcp://127.0.0.1", "stream_protocol": "audiosocket"}), "/stream_url"),
        (
            json!({"stream_url": url, "stream_protocol": "twilio", "stream_bidirectional_codec": "L16"}),
            "/stream_bidirectional_codec",
        ),
    ] {
        let (code, e) = api.action(&id, "streaming_start", &body.to_string()).await;
        assert_eq!((code, e["errors"][0]["source"]["pointer"].as_str()), (400, Some(pointer)), "{body}: {e}");
    }
    let body = json!({"stream_url": url, "stream_protocol": "twilio", "stream_bidirectional_mode": "rtp"});
    let (code, e) = api.action(&id, "streaming_start", &body.to_string()).await;
    assert_eq!(code, 200, "{e}");
    let (code, report, _) = call.await.unwrap();
    assert_eq!(code, 0, "{report}");
    let c = connection(&a);
    assert_eq!(c["path"], "/api");
    let ev = events(&c);
    assert_eq!(&ev[..2], ["connected", "start"]);
    assert_eq!(c["summary"]["start"]["start"]["callSid"], id.as_str());
    assert!(c["summary"]["inbound_media"].as_u64().unwrap() >= 20, "{}", c["summary"]);
    gw.stop();
}

/// `stream_protocol` on `POST /v2/calls` (Telnyx Dial, as on `streaming_start`):
/// the box dials a SIPp carrier that echoes RTP back, and the new call's stream
/// reaches a Twilio Media Streams agent in Twilio's shape (`connected`, `start`
/// naming the call, `media`, `stop`), checked by the agent itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dialled_call_streams_in_the_protocol_it_asked_for() {
    const TOKEN: &str = "test-token-0123456789";
    let dir = tempfile::tempdir().unwrap();
    let a = agent(dir.path(), "twilio", "echo", &[]);
    let carrier = common::free_port();
    let gw =
        gateway(dir.path(), "").trunk(Trunk::new("out").proxy(&format!("sip:127.0.0.3:{carrier}"))).api(TOKEN).start();
    let mut uas = common::sipp_uas(dir.path(), "carrier", "uas_answer.xml", carrier, true);
    let api = gw.api();
    let body = json!({
        "connection_id": "out",
        "to": NUMBER,
        "from": "+14155550123",
        "stream_url": a.url("/dialled"),
        "stream_protocol": "twilio",
        "stream_bidirectional_mode": "rtp",
    });
    let mut bad = body.clone();
    bad["stream_protocol"] = json!("vonage");
    let (code, e) = api.post("/v2/calls", bad).await;
    assert_eq!((code, e["errors"][0]["source"]["pointer"].as_str()), (400, Some("/stream_protocol")), "{e}");
    let (code, call) = api.post("/v2/calls", body).await;
    assert_eq!(code, 200, "{call}");
    let id = call["data"]["call_control_id"].as_str().unwrap().to_string();
    api.wait_call_state(&id, "answered").await;
    gw.events("streaming.started", |b| {
        b.iter().any(|x| event_type(x) == "streaming.started" && payload(x)["call_control_id"] == id.as_str())
    })
    .await;
    // The stream is up: let the carrier's echo reach the agent for a moment.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(api.action(&id, "hangup", "{}").await.0, 200);
    let code = tokio::task::spawn_blocking(move || uas.wait(WAIT)).await.unwrap();
    assert_eq!(code, 0, "the carrier got INVITE, ACK and the box's BYE");
    let c = connection(&a);
    assert_eq!(c["path"], "/dialled");
    let ev = events(&c);
    assert_eq!(&ev[..2], ["connected", "start"], "{ev:?}");
    assert_eq!(ev.last().map(String::as_str), Some("stop"), "{ev:?}");
    assert_eq!(c["summary"]["start"]["start"]["callSid"], id.as_str());
    assert!(c["summary"]["inbound_media"].as_u64().unwrap_or(0) >= 1, "{}", c["summary"]);
    gw.stop();
}
