//! The control API on the real daemon, driven over HTTP while a real call is up
//! (SIPp signalling, the test's RTP phone for audio): bearer auth, Telnyx error
//! shapes (400 naming the field, 404, 422 90018), `send_dtmf` heard as RFC 4733 by
//! the caller, `streaming_start`/`mute`/`streaming_stop` against the Python agent,
//! `hangup` sending BYE, the event socket carrying the webhook bodies, `/metrics`.

mod common;

use std::path::Path;
use std::time::Duration;

use common::agent::PyAgent;
use common::gateway::{Api, Gateway, Route, Trunk};
use common::receivers::{Receiver, delivered};
use common::rtp::{Packet, Script, place_calls, tone};
use common::*;
use futures_util::StreamExt;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(40);
const TOKEN: &str = "test-token-0123456789";

fn start(dir: &Path) -> Gateway {
    start_with(dir, "")
}

/// The daemon with trunk `pbx`, `extra` (TOML after it: trunks, sections), every
/// call to the built-in echo agent, signed webhooks to a verifying receiver, and
/// the control API with [`TOKEN`].
fn start_with(dir: &Path, extra: &str) -> Gateway {
    Gateway::builder(dir)
        .rtp_range(30_000, 39_999)
        .trunk(Trunk::new("pbx").allow("127.0.0.0/8"))
        .blocks(extra)
        .agent("echo", "builtin:echo", "")
        .route(Route::new().agent("echo"))
        .webhooks("")
        .api(TOKEN)
        .start()
}

/// Digits carried by RFC 4733 packets (PT 101): one per event start timestamp.
fn dtmf_digits(packets: &[Packet]) -> String {
    let mut seen = std::collections::HashSet::new();
    let mut out = String::new();
    for p in packets.iter().filter(|p| p.payload_type == 101 && p.payload.len() >= 4) {
        // The packet's RTP timestamp is not kept by the phone: the marker bit starts
        // each event (RFC 4733 §2.5.1.3), so a marker packet = a new key press.
        if p.marker && seen.insert(p.sequence) {
            out.push("0123456789*#ABCD".chars().nth(usize::from(p.payload[0])).unwrap_or('?'));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_control_over_http_on_a_live_call() {
    let dir = tempfile::tempdir().unwrap();
    let rec = format!(
        "[recording]\n# a size, not a share of whatever else fills the test machine's disk\nmax_disk_usage = \"4GiB\"\nenabled = true\ndir = \"{}\"\n[media]\ndir = \"{}\"\n",
        dir.path().join("rec").display(),
        dir.path().display()
    );
    let gw = start_with(dir.path(), &rec);
    let (sip, api_port, receiver) = (gw.sip_port, gw.api_port(), gw.hooks());
    let api = gw.api();

    // Auth: /healthz is open, everything else needs the token.
    assert_eq!(api.send(reqwest::Method::GET, "/healthz", None, None).await.0, 200);
    let (code, body) = api.send(reqwest::Method::GET, "/v2/calls", None, None).await;
    assert_eq!(code, 401, "{body}");
    assert_eq!(body["errors"][0]["code"], "10009");
    assert_eq!(api.send(reqwest::Method::GET, "/v2/calls", None, Some("wrong")).await.0, 401);

    // The event socket, open before the call.
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", api_port)).await.unwrap();
    let mut req = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(format!(
        "ws://127.0.0.1:{api_port}/v2/events"
    ))
    .unwrap();
    req.headers_mut().insert("Authorization", format!("Bearer {TOKEN}").parse().unwrap());
    let (mut events, _) = tokio_tungstenite::client_async(req, tcp).await.expect("event socket");

    // A call that stays up until the box hangs up (8 s at most).
    let agent = PyAgent::start(dir.path(), "agent", "echo", &[]);
    let d2 = dir.path().to_path_buf();
    let call = tokio::task::spawn_blocking(move || {
        let s = Script {
            audio: tone(440.0, 8000.0, 7000),
            digits: vec![],
            gaps: vec![],
            send_for: Duration::from_millis(7000),
            duration: Duration::from_millis(7500),
        };
        place_calls(&d2, sip, "127.0.0.1", "+13125550100", 8000, vec![s])
    });

    // The call shows up.
    let deadline = std::time::Instant::now() + WAIT;
    let id = loop {
        let (code, body) = api.get("/v2/calls").await;
        assert_eq!(code, 200);
        if let Some(c) = body["data"].as_array().and_then(|a| a.first()) {
            if c["state"] == "answered" {
                break c["call_control_id"].as_str().unwrap().to_string();
            }
        }
        assert!(std::time::Instant::now() < deadline, "no answered call listed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let (code, one) = api.get(&format!("/v2/calls/{id}")).await;
    assert_eq!(code, 200);
    assert_eq!(one["data"]["is_alive"], true);
    assert_eq!(one["data"]["from"], "+14155550123");

    // Listen-in: both tracks as Telnyx media frames.
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", api_port)).await.unwrap();
    let mut req = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(format!(
        "ws://127.0.0.1:{api_port}/v2/calls/{id}/listen"
    ))
    .unwrap();
    req.headers_mut().insert("Authorization", format!("Bearer {TOKEN}").parse().unwrap());
    let (mut listen, _) = tokio_tungstenite::client_async(req, tcp).await.expect("listen socket");
    let mut frames = Vec::new();
    while frames.len() < 60 {
        let msg = tokio::time::timeout(WAIT, listen.next()).await.expect("listen frame").unwrap().unwrap();
        frames.push(serde_json::from_str::<Value>(msg.to_text().unwrap()).unwrap());
    }
    drop(listen);
    assert_eq!(frames[0]["event"], "connected");
    assert_eq!(frames[1]["event"], "start");
    assert_eq!(frames[1]["start"]["call_control_id"], id.as_str());
    assert_eq!(frames[1]["start"]["media_format"]["encoding"], "PCMU");
    let tracks: std::collections::HashSet<&str> =
        frames[2..].iter().map(|f| f["media"]["track"].as_str().unwrap()).collect();
    assert_eq!(tracks, std::collections::HashSet::from(["inbound", "outbound"]), "both tracks");

    // 400s name the field.
    let (code, e) = api.action(&id, "send_dtmf", r#"{"digits": "12x"}"#).await;
    assert_eq!((code, e["errors"][0]["source"]["pointer"].as_str()), (400, Some("/digits")), "{e}");
    let (code, e) = api.action(&id, "send_dtmf", r#"{"digits": "1", "duration_millis": 5}"#).await;
    assert_eq!((code, e["errors"][0]["source"]["pointer"].as_str()), (400, Some("/duration_millis")), "{e}");
    let (code, e) = api.action(&id, "send_dtmf", "{not json").await;
    assert_eq!(code, 400, "{e}");
    let (code, e) = api.action(&id, "streaming_start", r#"{"stream_url": "http://x"}"#).await;
    assert_eq!((code, e["errors"][0]["source"]["pointer"].as_str()), (400, Some("/stream_url")), "{e}");
    assert_eq!(api.action("no-such-call", "hangup", "{}").await.0, 404);
    assert_eq!(api.action(&id, "no_such_action", "{}").await.0, 404);

    // send_dtmf: the caller receives the key presses as RFC 4733 events.
    let (code, e) =
        api.action(&id, "send_dtmf", r#"{"digits": "19#", "duration_millis": 100, "client_state": "YWJj"}"#).await;
    assert_eq!((code, &e), (200, &json!({"data": {"result": "ok"}})));
    assert_eq!(api.get(&format!("/v2/calls/{id}")).await.1["data"]["client_state"], "YWJj");

    // streaming_start moves the call from the echo to a WebSocket agent.
    let body =
        json!({"stream_url": agent.url("/api"), "stream_track": "inbound_track", "stream_bidirectional_mode": "rtp"});
    let (code, e) = api.action(&id, "streaming_start", &body.to_string()).await;
    assert_eq!(code, 200, "{e}");
    let (code, e) = api.action(&id, "streaming_start", &body.to_string()).await;
    assert_eq!(code, 422, "a second stream: {e}");
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(api.action(&id, "mute", "{}").await.0, 200);
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(api.action(&id, "unmute", "{}").await.0, 200);
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(api.action(&id, "streaming_stop", "{}").await.0, 200);
    let conns = agent.wait_connections(1, WAIT);
    let c = &conns[0];
    assert_eq!(c["protocol_errors"], json!([]), "{}", c["protocol_errors"]);
    let media_t: Vec<f64> = c["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["event"] == "media")
        .map(|m| m["_t"].as_f64().unwrap())
        .collect();
    assert!(media_t.len() >= 40, "caller audio reached the agent: {}", media_t.len());
    // While muted (~0.8 s) nothing of the caller reached the agent: a gap in the media.
    let gap = media_t.windows(2).map(|w| w[1] - w[0]).fold(0.0, f64::max);
    assert!(gap >= 0.6, "mute stopped the caller's audio for {gap:.2} s");
    assert_eq!(c["summary"]["stopped"], true, "{}", c["summary"]);

    // playback_start: a WAV on the box, twice (loop), heard by the caller.
    let wav = dir.path().join("tone600.wav");
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 16000,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(&wav, spec).unwrap();
    for s in tone(600.0, 8000.0, 1000).iter().flat_map(|s| [*s, *s]) {
        w.write_sample(s).unwrap();
    }
    w.finalize().unwrap();
    let (code, e) = api.action(&id, "playback_start", r#"{"audio_url": "/nonexistent.wav"}"#).await;
    assert_eq!(code, 422, "{e}");
    // Outside [media] dir (the test's directory): refused, whatever the file is.
    let (code, e) = api.action(&id, "playback_start", r#"{"audio_url": "/dev/zero"}"#).await;
    assert_eq!(code, 422, "{e}");
    assert!(e["errors"][0]["detail"].as_str().unwrap().contains("[media] dir"), "{e}");
    // A URL on the box's own network: refused before any connection.
    let (code, e) = api.action(&id, "playback_start", r#"{"audio_url": "http://127.0.0.1:9/x.wav"}"#).await;
    assert_eq!(code, 422, "{e}");
    assert!(e["errors"][0]["detail"].as_str().unwrap().contains("allow_private_urls"), "{e}");
    let (code, e) = api.action(&id, "playback_start", r#"{"audio_url": "/x.wav", "loop": 0}"#).await;
    assert_eq!((code, e["errors"][0]["source"]["pointer"].as_str()), (400, Some("/loop")), "{e}");
    let body = json!({"audio_url": wav.display().to_string(), "loop": 2});
    let (code, e) = api.action(&id, "playback_start", &body.to_string()).await;
    assert_eq!(code, 200, "{e}");
    tokio::time::sleep(Duration::from_millis(2300)).await;

    // record_start/record_stop: a span of its own, then a second one ended by the
    // hangup: two files, two call.recording.saved.
    assert_eq!(api.action(&id, "record_stop", "{}").await.0, 422, "nothing recording yet");
    let (code, e) = api.action(&id, "record_start", r#"{"format": "ogg"}"#).await;
    assert_eq!((code, e["errors"][0]["source"]["pointer"].as_str()), (400, Some("/format")), "{e}");
    assert_eq!(api.action(&id, "record_start", r#"{"channels": "dual"}"#).await.0, 200);
    assert_eq!(api.action(&id, "record_start", "{}").await.0, 422, "already recording");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(api.action(&id, "record_stop", "{}").await.0, 200);
    assert_eq!(api.action(&id, "record_start", r#"{"channels": "single"}"#).await.0, 200);

    // hangup: BYE to the caller; then the call is gone (422 90018 for commands).
    assert_eq!(api.action(&id, "hangup", "{}").await.0, 200);
    let (code, report, received) = call.await.unwrap();
    assert_eq!(code, 0, "SIPp got the box's BYE: {report}");
    assert_eq!(dtmf_digits(&received[0]), "19#");
    // The 16 kHz WAV (1 s of 600 Hz), resampled to the call's 8 kHz and played
    // twice: ~100 packets of 600 Hz.
    let tone600 = received[0]
        .iter()
        .filter(|p| p.payload_type == 0 && p.rms() > 500.0)
        .filter(|p| (560.0..640.0).contains(&frequency(&p.pcm())))
        .count();
    assert!((90..=105).contains(&tone600), "600 Hz playback packets heard: {tone600}");
    let (code, e) = api.action(&id, "hangup", "{}").await;
    assert_eq!((code, e["errors"][0]["code"].as_str()), (422, Some("90018")), "{e}");
    assert_eq!(api.get(&format!("/v2/calls/{id}")).await.1["data"]["is_alive"], false);

    // The event socket carried the same events as the webhooks, in the same shape.
    let hooks = receiver
        .wait_until("call.hangup and two recordings", WAIT, |e| {
            let d = delivered(e);
            d.iter().any(|x| x["body"]["data"]["event_type"] == "call.hangup")
                && d.iter().filter(|x| x["body"]["data"]["event_type"] == "call.recording.saved").count() == 2
        })
        .await;
    let saved: Vec<&Value> = delivered(&hooks)
        .into_iter()
        .map(|x| &x["body"]["data"]["payload"])
        .filter(|p| p["recording_id"].is_string())
        .collect();
    assert_eq!(saved.len(), 2);
    assert_eq!(saved[0]["channels"], "dual");
    assert_eq!(saved[1]["channels"], "single");
    assert_ne!(saved[0]["recording_id"], saved[1]["recording_id"]);
    let hook_ids: Vec<String> =
        delivered(&hooks).iter().map(|x| x["body"]["data"]["id"].as_str().unwrap().to_string()).collect();
    let mut socket_ids = Vec::new();
    while socket_ids.len() < hook_ids.len() {
        let msg = tokio::time::timeout(WAIT, events.next()).await.expect("event").unwrap().unwrap();
        let v: Value = serde_json::from_str(msg.to_text().unwrap()).unwrap();
        assert_eq!(v["data"]["record_type"], "event");
        assert_eq!(v["meta"]["delivered_to"], "/v2/events");
        let hook = delivered(&hooks)
            .into_iter()
            .find(|x| x["body"]["data"]["id"] == v["data"]["id"])
            .map(|x| &x["body"]["data"]);
        assert_eq!(hook, Some(&v["data"]), "the socket's data equals the webhook's");
        socket_ids.push(v["data"]["id"].as_str().unwrap().to_string());
    }
    assert_eq!(socket_ids, hook_ids);
    let types: Vec<&str> =
        delivered(&hooks).iter().map(|x| x["body"]["data"]["event_type"].as_str().unwrap()).collect();
    assert!(types.contains(&"streaming.started") && types.contains(&"streaming.stopped"), "{types:?}");
    let ended: Vec<&Value> = delivered(&hooks)
        .into_iter()
        .map(|x| &x["body"]["data"])
        .filter(|d| d["event_type"] == "call.playback.ended")
        .collect();
    assert_eq!(ended.len(), 1, "{types:?}");
    assert_eq!(ended[0]["payload"]["status"], "completed");
    assert_eq!(ended[0]["payload"]["media_url"], wav.display().to_string());

    // /metrics in Prometheus text format.
    let resp = api.http.get(format!("{}/metrics", api.base)).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(resp.headers()["content-type"], "text/plain; version=0.0.4");
    let text = resp.text().await.unwrap();
    let samples = prometheus_samples(&text);
    assert_eq!(samples.get("sipbridge_active_calls"), Some(&0.0), "{text}");
    assert_eq!(samples.get("sipbridge_calls_total{hangup_cause=\"normal_clearing\"}"), Some(&1.0), "{text}");
    assert!(samples.get("sipbridge_rtp_packets_received_total").is_some_and(|n| *n > 100.0), "{text}");
    assert!(samples.get("sipbridge_process_resident_memory_bytes").is_some_and(|n| *n > 1e6), "{text}");
    let (code, ready) = api.get("/readyz").await;
    assert_eq!(code, 200, "{ready}");

    gw.stop();
}

/// Frequency of a tone from its zero crossings (8 kHz samples).
fn frequency(pcm: &[i16]) -> f64 {
    let crossings = pcm.windows(2).filter(|w| (w[0] < 0) != (w[1] < 0)).count();
    crossings as f64 / 2.0 / (pcm.len() as f64 / 8000.0)
}

/// A strict reader of the Prometheus text format 0.0.4: every line is a comment
/// (`# HELP name text` / `# TYPE name kind` with a known kind) or
/// `name{labels} value`; panics on anything else. Returns `name{labels}` → value.
fn prometheus_samples(text: &str) -> std::collections::HashMap<String, f64> {
    let mut out = std::collections::HashMap::new();
    let mut typed = std::collections::HashSet::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            match (parts.next(), parts.next(), parts.next()) {
                (Some("HELP"), Some(_), Some(_)) => {}
                (Some("TYPE"), Some(name), Some(kind)) => {
                    assert!(["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind), "{line}");
                    typed.insert(name.to_string());
                }
                _ => panic!("bad comment line: {line}"),
            }
            continue;
        }
        let (key, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("bad sample line: {line}"));
        let name = key.split('{').next().unwrap();
        assert!(name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'), "bad metric name: {line}");
        assert!(typed.contains(name), "sample before its # TYPE: {line}");
        if let Some(labels) = key.strip_prefix(name) {
            assert!(labels.is_empty() || (labels.starts_with('{') && labels.ends_with('}')), "bad labels: {line}");
        }
        out.insert(key.to_string(), value.parse::<f64>().unwrap_or_else(|_| panic!("bad value: {line}")));
    }
    out
}

/// `POST /v2/calls`: the box dials a carrier (SIPp UAS with RTP echo), streams the
/// answered call to the agent, records it, and hangs up on `hangup`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dial_out_to_an_agent_and_hang_up() {
    let dir = tempfile::tempdir().unwrap();
    let b_port = free_port();
    let extra = format!(
        "[[trunk]]\nname = \"carrier\"\nproxy = \"sip:127.0.0.3:{b_port}\"\n[recording]\n# a size, not a share of whatever else fills the test machine's disk\nmax_disk_usage = \"4GiB\"\nenabled = true\ndir = \"{}\"\n",
        dir.path().join("rec").display()
    );
    let gw = start_with(dir.path(), &extra);
    let receiver = gw.hooks();
    let api = gw.api();
    // The call's own webhook_url: its events go there, not to [webhooks] url.
    let own = Receiver::start(dir.path(), "own", &receiver.public_key, &[]);
    let agent = PyAgent::start(dir.path(), "agent", "echo", &[]);
    let media = free_even_block(4).to_string();
    let b_args: Vec<String> = [
        "-sf",
        &scenario("uas_answer.xml").display().to_string(),
        "-i",
        "127.0.0.3",
        "-p",
        &b_port.to_string(),
        "-mp",
        &media,
        "-rtp_echo",
        "-m",
        "1",
        "-timeout",
        "30s",
        "-timeout_error",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut uas = Sipp::start(dir.path(), "uas", &b_args);

    // 400s name the field.
    let (code, e) = api.send(reqwest::Method::POST, "/v2/calls", Some(r#"{"to": "+13125550100"}"#), Some(TOKEN)).await;
    assert_eq!((code, e["errors"][0]["source"]["pointer"].as_str()), (400, Some("/connection_id")), "{e}");
    let bad = r#"{"connection_id": "nope", "to": "+13125550100", "from": "+14155550123"}"#;
    assert_eq!(api.send(reqwest::Method::POST, "/v2/calls", Some(bad), Some(TOKEN)).await.0, 422);

    let body = json!({
        "connection_id": "carrier",
        "to": "+13125550100",
        "from": "+14155550123",
        "timeout_secs": 20,
        "client_state": "b3V0",
        "stream_url": agent.url("/out"),
        "stream_track": "both_tracks",
        "stream_bidirectional_mode": "rtp",
        "record": "record-from-answer",
        "webhook_url": own.url().to_string(),
    });
    let mut bad = body.clone();
    bad["webhook_url"] = json!("ftp://backend/hook");
    let (code, e) = api.send(reqwest::Method::POST, "/v2/calls", Some(&bad.to_string()), Some(TOKEN)).await;
    assert_eq!((code, e["errors"][0]["source"]["pointer"].as_str()), (400, Some("/webhook_url")), "{e}");
    let (code, call) = api.send(reqwest::Method::POST, "/v2/calls", Some(&body.to_string()), Some(TOKEN)).await;
    assert_eq!(code, 200, "{call}");
    let id = call["data"]["call_control_id"].as_str().unwrap().to_string();
    assert_eq!(call["data"]["is_alive"], true);
    assert_eq!(call["data"]["direction"], "outgoing");

    let deadline = std::time::Instant::now() + WAIT;
    while api.get(&format!("/v2/calls/{id}")).await.1["data"]["state"] != "answered" {
        assert!(std::time::Instant::now() < deadline, "not answered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(api.action(&id, "hangup", "{}").await.0, 200);
    let code = tokio::task::spawn_blocking(move || uas.wait(WAIT)).await.unwrap();
    assert_eq!(code, 0, "the carrier got INVITE, ACK and the box's BYE");

    let conns = agent.wait_connections(1, WAIT);
    let c = &conns[0];
    assert_eq!(c["protocol_errors"], json!([]), "{}", c["protocol_errors"]);
    let start = c["messages"].as_array().unwrap().iter().find(|m| m["event"] == "start").unwrap().clone();
    assert_eq!(start["start"]["call_control_id"], id.as_str());
    assert_eq!(start["start"]["to"], "+13125550100");
    assert_eq!(start["start"]["client_state"], "b3V0");
    assert!(c["summary"]["inbound_media"].as_u64().unwrap() >= 40, "{}", c["summary"]);

    let hooks = own
        .wait_until("recording saved", WAIT, |e| {
            delivered(e).iter().any(|x| x["body"]["data"]["event_type"] == "call.recording.saved")
        })
        .await;
    assert!(
        common::receivers::rejected(&hooks).is_empty(),
        "the call's webhook_url gets events signed like the others"
    );
    let main_hooks = std::fs::read_to_string(&receiver.log).unwrap_or_default();
    assert!(!main_hooks.contains(&id), "none of this call's events went to [webhooks] url");
    let mine: Vec<&Value> = delivered(&hooks)
        .into_iter()
        .map(|x| &x["body"]["data"])
        .filter(|d| d["payload"]["call_control_id"] == id.as_str())
        .collect();
    let types: Vec<&str> = mine.iter().map(|d| d["event_type"].as_str().unwrap()).collect();
    assert_eq!(
        types,
        [
            "call.initiated",
            "call.answered",
            "streaming.started",
            "streaming.stopped",
            "call.hangup",
            "call.recording.saved"
        ]
    );
    assert_eq!(mine[0]["payload"]["direction"], "outgoing");
    assert_eq!(mine[0]["payload"]["client_state"], "b3V0");
    assert_eq!(mine[4]["payload"]["hangup_source"], "caller", "the box (caller of this leg) hung up");
    gw.stop();
}

/// `/v2/openapi.json` is OpenAPI 3.1 and describes exactly what is routed: every
/// documented operation reaches a handler (not the unknown-route fallback), and
/// every route the API serves is documented.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_matches_the_routes() {
    let dir = tempfile::tempdir().unwrap();
    let gw = start(dir.path());
    let api = gw.api();
    let (code, doc) = api.get("/v2/openapi.json").await;
    assert_eq!(code, 200);
    assert_eq!(doc["openapi"], "3.1.0");
    let paths = doc["paths"].as_object().unwrap();
    for served in [
        "/v2/calls",
        "/v2/calls/{call_control_id}",
        "/v2/calls/{call_control_id}/actions/hangup",
        "/v2/calls/{call_control_id}/actions/send_dtmf",
        "/v2/calls/{call_control_id}/actions/streaming_start",
        "/v2/calls/{call_control_id}/actions/playback_start",
        "/v2/calls/{call_control_id}/listen",
        "/v2/events",
        "/v2/calls/{call_control_id}/actions/refer",
        "/v2/conferences",
        "/v2/conferences/{conference_id}",
        "/v2/conferences/{conference_id}/participants",
        "/v2/conferences/{conference_id}/actions/join",
        "/v2/conferences/{conference_id}/webrtc",
        "/v2/conferences/{conference_id}/join_tokens",
        "/v2/calls/{call_control_id}/webrtc",
        "/v2/webrtc/{session_id}",
        "/rooms/{name}",
        "/healthz",
        "/readyz",
        "/metrics",
    ] {
        assert!(paths.contains_key(served), "{served} is served but not documented");
    }
    let fallback = api.send(reqwest::Method::GET, "/v2/nothing-here", None, Some(TOKEN)).await;
    assert_eq!(fallback.0, 404);
    for (path, ops) in paths {
        for method in ops.as_object().unwrap().keys() {
            let url = path.replace("{call_control_id}", "no-such-call");
            let m = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let body = (m == reqwest::Method::POST).then_some("{}");
            let (code, answer) = api.send(m, &url, body, Some(TOKEN)).await;
            assert!(answer != fallback.1, "{method} {path} is documented but not routed ({code})");
        }
    }
    gw.stop();
}

/// Telnyx's inbound flow on a `park = true` route: the call rings parked until the
/// backend answers it (here with a stream to the agent) or rejects it (486).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parked_calls_are_answered_or_rejected_over_the_api() {
    let dir = tempfile::tempdir().unwrap();
    let routes = "[[route]]\nto = \"+13125550111\"\npark = true\n[[route]]\nto = \"+13125550122\"\npark = true\n";
    let gw = start_with(dir.path(), routes);
    let (sip, receiver) = (gw.sip_port, gw.hooks());
    let api = gw.api();
    let agent = PyAgent::start(dir.path(), "agent", "echo", &[]);

    // Answered with a stream: the caller hears the agent's echo.
    let d2 = dir.path().to_path_buf();
    let call = tokio::task::spawn_blocking(move || {
        let s = Script {
            audio: tone(440.0, 8000.0, 3000),
            digits: vec![],
            gaps: vec![],
            send_for: Duration::from_millis(3000),
            duration: Duration::from_millis(3300),
        };
        place_calls(&d2, sip, "127.0.0.1", "+13125550111", 3000, vec![s])
    });
    let deadline = std::time::Instant::now() + WAIT;
    let id = loop {
        let (_, body) = api.get("/v2/calls").await;
        if let Some(c) = body["data"].as_array().and_then(|a| a.first()) {
            assert_eq!(c["state"], "parked", "{c}");
            break c["call_control_id"].as_str().unwrap().to_string();
        }
        assert!(std::time::Instant::now() < deadline, "no parked call");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let (code, e) = api.action(&id, "send_dtmf", r#"{"digits": "1"}"#).await;
    assert_eq!(code, 422, "not answered yet: {e}");
    let body = json!({"stream_url": agent.url("/parked"), "stream_bidirectional_mode": "rtp"});
    let (code, e) = api.action(&id, "answer", &body.to_string()).await;
    assert_eq!(code, 200, "{e}");
    assert_eq!(api.action(&id, "answer", "{}").await.0, 422, "answered once");
    let (code, report, received) = call.await.unwrap();
    assert_eq!(code, 0, "{report}");
    let heard = received[0].iter().filter(|p| p.payload_type == 0 && p.rms() > 500.0).count();
    assert!(heard >= 80, "the caller heard the agent's echo: {heard} loud packets");
    let conns = agent.wait_connections(1, WAIT);
    assert_eq!(conns[0]["path"], "/parked");
    assert_eq!(conns[0]["protocol_errors"], json!([]));

    // Rejected: the caller gets 486.
    let sf = dir.path().join("uac_refused_486.xml");
    let text = std::fs::read_to_string(scenario("uac_refused.xml.in"))
        .unwrap()
        .replace("CODE", "486")
        .replace("CHECK_HEADER", "To:");
    std::fs::write(&sf, text).unwrap();
    let mut args = sipp_args("uac_call.xml", "+13125550122", &format!("127.0.0.1:{sip}"), "127.0.0.1", &[]);
    args[1] = sf.display().to_string();
    let d3 = dir.path().to_path_buf();
    let mut sipp = tokio::task::spawn_blocking(move || Sipp::start(&d3, "reject", &args)).await.unwrap();
    let deadline = std::time::Instant::now() + WAIT;
    let id2 = loop {
        let (_, body) = api.get("/v2/calls").await;
        if let Some(c) = body["data"].as_array().and_then(|a| a.iter().find(|c| c["to"] == "+13125550122")) {
            break c["call_control_id"].as_str().unwrap().to_string();
        }
        assert!(std::time::Instant::now() < deadline, "no second parked call");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let (code, e) = api.action(&id2, "reject", r#"{"cause": "BUSY"}"#).await;
    assert_eq!((code, e["errors"][0]["source"]["pointer"].as_str()), (400, Some("/cause")), "{e}");
    assert_eq!(api.action(&id2, "reject", r#"{"cause": "USER_BUSY"}"#).await.0, 200);
    let code = tokio::task::spawn_blocking(move || sipp.wait(WAIT)).await.unwrap();
    assert_eq!(code, 0, "SIPp got 486");
    let hooks = receiver
        .wait_until("the rejected call's hangup", WAIT, |e| {
            delivered(e).iter().any(|x| {
                x["body"]["data"]["event_type"] == "call.hangup"
                    && x["body"]["data"]["payload"]["call_control_id"] == id2.as_str()
            })
        })
        .await;
    let hangup = delivered(&hooks)
        .into_iter()
        .map(|x| &x["body"]["data"])
        .find(|x| x["event_type"] == "call.hangup" && x["payload"]["call_control_id"] == id2.as_str())
        .unwrap()
        .clone();
    assert_eq!(hangup["payload"]["hangup_cause"], "user_busy");
    assert_eq!(hangup["payload"]["sip_hangup_cause"], "486");
    gw.stop();
}

/// The first answered call listed by the API (SIPp's report if none comes).
async fn answered_call(api: &Api, sipp: &Sipp) -> String {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let (_, body) = api.get("/v2/calls").await;
        if let Some(c) = body["data"].as_array().and_then(|a| a.iter().find(|c| c["state"] == "answered")) {
            return c["call_control_id"].as_str().unwrap().to_string();
        }
        assert!(std::time::Instant::now() < deadline, "no answered call listed: {}", sipp.report());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `refer` (RFC 3515 blind transfer): the REFER on the wire carries Refer-To and the
/// custom header (SIPp checks both); an accepted REFER gives `call.refer.started`
/// (202) then `call.refer.completed` from the 200 NOTIFY, and the caller's BYE ends
/// the call; a declined one gives `call.refer.failed` (603) and the call stays up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refer_transfers_blind_and_reports_the_notify_outcome() {
    let dir = tempfile::tempdir().unwrap();
    let gw = start(dir.path());
    let (sip, receiver) = (gw.sip_port, gw.hooks());
    let api = gw.api();
    let target = format!("127.0.0.1:{sip}");
    let body = json!({
        "sip_address": "sip:+13125550199@127.0.0.9:5060",
        "custom_headers": [{"name": "X-Transfer-Reason", "value": "desk-7"}],
    })
    .to_string();

    // Accepted.
    let mut sipp =
        Sipp::start(dir.path(), "refer", &sipp_args("uac_refer.xml", "+13125550100", &target, "127.0.0.1", &[]));
    let id = answered_call(&api, &sipp).await;
    let (code, e) = api.action(&id, "refer", r#"{"sip_address": "tel:+13125550199"}"#).await;
    assert_eq!((code, e["errors"][0]["source"]["pointer"].as_str()), (400, Some("/sip_address")), "{e}");
    let (code, e) =
        api.action(&id, "refer", r#"{"sip_address": "sip:a@b", "custom_headers": [{"name": "X-A\r\nB"}]}"#).await;
    assert_eq!(code, 400, "{e}");
    let (code, e) = api.action(&id, "refer", &body).await;
    assert_eq!(code, 200, "{e}");
    let code = tokio::task::spawn_blocking(move || {
        let c = sipp.wait(WAIT);
        (c, sipp.report())
    })
    .await
    .unwrap();
    assert_eq!(code.0, 0, "{}", code.1);
    let hooks = receiver
        .wait_until("refer events and hangup", WAIT, |e| {
            delivered(e).iter().any(|x| x["body"]["data"]["event_type"] == "call.hangup")
        })
        .await;
    let of_call: Vec<(String, Value)> = delivered(&hooks)
        .iter()
        .map(|x| &x["body"]["data"])
        .filter(|x| x["payload"]["call_control_id"] == id.as_str())
        .map(|x| (x["event_type"].as_str().unwrap().to_string(), x["payload"]["sip_notify_response"].clone()))
        .filter(|(t, _)| t.starts_with("call.refer") || t == "call.hangup")
        .collect();
    assert_eq!(
        of_call,
        vec![
            ("call.refer.started".to_string(), json!(202)),
            ("call.refer.completed".to_string(), json!(200)),
            ("call.hangup".to_string(), Value::Null),
        ]
    );

    // Declined: the call stays up until the API hangs it up.
    let mut sipp = Sipp::start(
        dir.path(),
        "refer-no",
        &sipp_args("uac_refer_decline.xml", "+13125550100", &target, "127.0.0.1", &[]),
    );
    let id = answered_call(&api, &sipp).await;
    assert_eq!(api.action(&id, "refer", &body).await.0, 200);
    let hooks = receiver
        .wait_until("refer failed", WAIT, |e| {
            delivered(e).iter().any(|x| {
                x["body"]["data"]["event_type"] == "call.refer.failed"
                    && x["body"]["data"]["payload"]["call_control_id"] == id.as_str()
            })
        })
        .await;
    let failed = delivered(&hooks)
        .iter()
        .map(|x| &x["body"]["data"])
        .find(|x| x["event_type"] == "call.refer.failed")
        .cloned()
        .unwrap();
    assert_eq!(failed["payload"]["sip_notify_response"], 603);
    assert_eq!(api.get(&format!("/v2/calls/{id}")).await.1["data"]["is_alive"], true);
    assert_eq!(api.action(&id, "hangup", "{}").await.0, 200);
    let code = tokio::task::spawn_blocking(move || {
        let c = sipp.wait(WAIT);
        (c, sipp.report())
    })
    .await
    .unwrap();
    assert_eq!(code.0, 0, "{}", code.1);
    drop(gw);
}
