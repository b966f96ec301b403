//! Local rooms end to end (issue 10): the daemon binary takes SIPp calls
//! (signalling) whose audio is sent and received by scripted RTP phones in the
//! test, routed to rooms; the conference API drives them; webhooks go to the
//! verifying Python receiver. Audio checks are spectral (Goertzel): each caller
//! sends its own tone and must hear the others' and not its own.

mod common;

use std::path::Path;
use std::time::Duration;

use common::agent::PyAgent;
use common::audio::level;
use common::gateway::{Gateway, Trunk};
use common::rtp::{Packet, Script, place_calls_from, tone};
use common::*;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(40);
const TOKEN: &str = "rooms-test-token-0123";

/// The daemon with `routes` (TOML blocks after trunk `pbx`), recording on, signed
/// webhooks to a verifying receiver, the control API with [`TOKEN`].
fn start(dir: &Path, routes: &str) -> Gateway {
    Gateway::builder(dir)
        .trunk(Trunk::new("pbx").allow("127.0.0.0/8"))
        .blocks(routes)
        .recording("")
        .webhooks("")
        .api(TOKEN)
        .log_level("debug")
        .start()
}

fn count(data: &[Value], event_type: &str) -> usize {
    data.iter().filter(|d| d["event_type"] == event_type).count()
}

/// The `conference.*` events (not recordings) in the order they occurred. Not in
/// delivery order: webhooks are ordered per call session (each participant's
/// events follow its own call's), and sessions are delivered side by side, so a
/// second caller's `participant.joined` may arrive before the first caller's
/// `conference.created`.
fn types(data: &[Value]) -> Vec<&str> {
    let mut conf: Vec<&Value> = data
        .iter()
        .filter(|d| {
            d["event_type"].as_str().is_some_and(|t| t.starts_with("conference.") && !t.ends_with(".recording.saved"))
        })
        .collect();
    // RFC 3339 UTC with microseconds: text order is time order.
    conf.sort_by_key(|d| d["occurred_at"].as_str().unwrap_or_default().to_string());
    conf.iter().filter_map(|d| d["event_type"].as_str()).collect()
}

/// The PCMU audio a phone received between `from` and `to` (seconds into its run).
fn heard(packets: &[Packet], from: f64, to: f64) -> Vec<i16> {
    packets
        .iter()
        .filter(|p| p.payload_type == 0 && (from..to).contains(&p.at.as_secs_f64()))
        .flat_map(|p| p.pcm())
        .collect()
}

fn script(hz: f64, ms: u64, digits: Vec<(usize, char)>) -> Script {
    Script {
        audio: tone(hz, 5000.0, ms as usize),
        digits,
        gaps: vec![],
        send_for: Duration::from_millis(ms),
        duration: Duration::from_millis(ms + 300),
    }
}

const TONES: [f64; 3] = [400.0, 700.0, 1100.0];

/// Three callers in one room, each sending its own tone: each hears the other two
/// and not itself (mix-minus); a conference `mute` of caller 0 (over the API, 2.5 s
/// or more in: later when the box is loaded) takes its tone out of what the others
/// hear from then on; the conference events come in
/// order; a caller's recording holds its own tone left and the others right.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_callers_hear_each_other_but_not_themselves() {
    let dir = tempfile::tempdir().unwrap();
    let gw = start(dir.path(), "[[route]]\nroom = \"support\"\nrecord = true\n");
    let (d, sip) = (dir.path().to_path_buf(), gw.sip_port);
    let callers: Vec<String> = (1..=3).map(|i| format!("+1415555010{i}")).collect();
    // The phones' clocks start after this: a packet at phone time t left at t or
    // later on this clock.
    let started = std::time::Instant::now();
    let calls = tokio::task::spawn_blocking(move || {
        let scripts = TONES.iter().map(|&hz| script(hz, 8000, vec![])).collect();
        place_calls_from(&d, sip, "127.0.0.1", "+13125550100", 9000, scripts, &callers)
    });
    // Once all three are in, mute caller 0 over the API.
    let data = gw.event_data("three joined", |d| count(d, "conference.participant.joined") == 3).await;
    let conference_id =
        data.iter().find(|d| d["event_type"] == "conference.created").unwrap()["payload"]["conference_id"]
            .as_str()
            .unwrap()
            .to_string();
    let (code, list) = gw.api().call(reqwest::Method::GET, "/v2/conferences", None).await;
    assert_eq!(code, 200);
    assert_eq!(list["data"][0]["name"], "support");
    assert_eq!(list["data"][0]["participants"], 3);
    let (code, parts) = gw.api().call(reqwest::Method::GET, "/v2/conferences/support/participants", None).await;
    assert_eq!(code, 200, "{parts}");
    let rec = format!("/v2/conferences/{conference_id}/actions/record_start");
    let (code, e) = gw.api().call(reqwest::Method::POST, &rec, Some(json!({"format": "wav"}))).await;
    assert_eq!(code, 200, "{e}");
    assert_eq!(gw.api().call(reqwest::Method::POST, &rec, Some(json!({}))).await.0, 422, "one recording per room");
    // A supervisor listens to the room: the full mix as Telnyx media frames.
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", gw.api_port())).await.unwrap();
    let mut req = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(format!(
        "ws://127.0.0.1:{}/v2/conferences/support/listen",
        gw.api_port()
    ))
    .unwrap();
    req.headers_mut().insert("Authorization", format!("Bearer {TOKEN}").parse().unwrap());
    let (mut listen, _) = tokio_tungstenite::client_async(req, tcp).await.expect("listen socket");
    let mut frames = Vec::new();
    while frames.len() < 40 {
        use futures_util::StreamExt;
        let msg = tokio::time::timeout(WAIT, listen.next()).await.expect("listen frame").unwrap().unwrap();
        frames.push(serde_json::from_str::<Value>(msg.to_text().unwrap()).unwrap());
    }
    drop(listen);
    assert_eq!((frames[0]["event"].as_str(), frames[1]["event"].as_str()), (Some("connected"), Some("start")));
    assert_eq!(frames[1]["start"]["call_control_id"], conference_id.as_str());
    let mix: Vec<i16> = frames[2..]
        .iter()
        .flat_map(|f| {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD.decode(f["media"]["payload"].as_str().unwrap()).unwrap()
        })
        .map(|b| sipbridge::media::g711::G711::Pcmu.decode_sample(b))
        .collect();
    for hz in TONES {
        assert!(level(&mix, hz) > 1000.0, "the listener hears {hz} Hz");
    }
    let ids: Vec<String> =
        parts["data"].as_array().unwrap().iter().map(|p| p["call_control_id"].as_str().unwrap().to_string()).collect();
    assert_eq!(ids.len(), 3);
    // Which participant is caller 0 (400 Hz): by its from number.
    let joined: Vec<&Value> = data.iter().filter(|d| d["event_type"] == "conference.participant.joined").collect();
    let first = joined.iter().find(|d| d["payload"]["from"] == "+14155550101").unwrap()["payload"]["call_control_id"]
        .as_str()
        .unwrap()
        .to_string();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let (code, e) = gw
        .api()
        .call(
            reqwest::Method::POST,
            &format!("/v2/conferences/{conference_id}/actions/mute"),
            Some(json!({"call_control_ids": [first]})),
        )
        .await;
    assert_eq!(code, 200, "{e}");
    let muted_at = started.elapsed().as_secs_f64();
    let (code, report, received) = calls.await.unwrap();
    assert_eq!(code, 0, "{report}");

    // Before the mute (0.5–2 s): everyone hears the other two tones, not its own.
    for (i, packets) in received.iter().enumerate() {
        let pcm = heard(packets, 0.5, 2.0);
        assert!(pcm.len() > 8000, "caller {i} heard {} samples", pcm.len());
        for (j, &hz) in TONES.iter().enumerate() {
            let l = level(&pcm, hz);
            if i == j {
                assert!(l < 150.0, "caller {i} hears its own {hz} Hz at {l:.0}");
            } else {
                assert!(l > 1000.0, "caller {i} hears {hz} Hz at only {l:.0}");
            }
        }
    }
    // From 0.5 s after the mute on: callers 1 and 2 no longer hear caller 0's 400 Hz.
    assert!(muted_at < 6.5, "the mute came {muted_at:.1} s in: too late to hear its effect");
    for (i, packets) in received.iter().enumerate().skip(1) {
        let pcm = heard(packets, muted_at + 0.5, 7.8);
        assert!(level(&pcm, TONES[0]) < 150.0, "caller {i} still hears the muted 400 Hz");
        assert!(level(&pcm, TONES[3 - i]) > 1000.0, "caller {i} hears the other unmuted caller");
    }

    let data = gw
        .event_data("room ended and recordings saved", |d| {
            count(d, "conference.ended") == 1
                && count(d, "call.recording.saved") == 3
                && count(d, "conference.recording.saved") == 1
        })
        .await;
    // The room's own recording: mono, all three callers' tones.
    let room_rec = data.iter().find(|d| d["event_type"] == "conference.recording.saved").unwrap();
    assert_eq!(room_rec["payload"]["conference_id"], conference_id.as_str());
    let mut r = hound::WavReader::open(room_rec["payload"]["file_path"].as_str().unwrap()).unwrap();
    assert_eq!((r.spec().channels, r.spec().sample_rate), (1, 8000));
    let mix: Vec<i16> = r.samples::<i16>().map(|x| x.unwrap()).collect();
    assert!(mix.len() > 2 * 8000, "{} samples", mix.len());
    assert!(level(&mix[..8000], 700.0) > 1000.0 && level(&mix[..8000], 1100.0) > 1000.0, "the mix holds the callers");
    let conf = types(&data);
    assert_eq!(conf.first(), Some(&"conference.created"), "{conf:?}");
    assert_eq!(conf.last(), Some(&"conference.ended"), "{conf:?}");
    assert_eq!(conf.iter().filter(|t| **t == "conference.participant.left").count(), 3, "{conf:?}");
    let ended = data.iter().find(|d| d["event_type"] == "conference.ended").unwrap();
    assert_eq!(ended["payload"]["reason"], "all_left");
    // Caller 1's recording: its 700 Hz left, the others (400 + 1100 Hz) right.
    let saved = data
        .iter()
        .find(|d| d["event_type"] == "call.recording.saved" && d["payload"]["from"] == "+14155550102")
        .unwrap();
    let mut r = hound::WavReader::open(saved["payload"]["file_path"].as_str().unwrap()).unwrap();
    let s: Vec<i16> = r.samples::<i16>().map(|x| x.unwrap()).collect();
    let (left, right): (Vec<i16>, Vec<i16>) = s.chunks_exact(2).map(|f| (f[0], f[1])).unzip();
    let (l, rr) = (&left[8000..16000], &right[8000..16000]);
    assert!(level(l, 700.0) > 1000.0 && level(l, 400.0) < 150.0, "left is the caller");
    assert!(level(rr, 400.0) > 1000.0 && level(rr, 1100.0) > 1000.0 && level(rr, 700.0) < 150.0, "right is the room");
    gw.stop();
}

/// A room with a PIN: the right PIN (keyed after the prompt) joins the room; three
/// wrong entries end the call with `call_rejected` and never join.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pin_admits_the_right_caller_and_rejects_after_three_wrong_entries() {
    let dir = tempfile::tempdir().unwrap();
    let gw = start(dir.path(), "[[route]]\nroom = \"board\"\npin = \"2468\"\n");
    let (d, sip) = (dir.path().to_path_buf(), gw.sip_port);
    // Right PIN: keys from 1 s (packet 50), a key every 300 ms.
    let right: Vec<(usize, char)> = "2468".chars().enumerate().map(|(i, c)| (50 + 15 * i, c)).collect();
    let wrong: Vec<(usize, char)> = "111111111111".chars().enumerate().map(|(i, c)| (50 + 15 * i, c)).collect();
    let callers = vec!["+14155550111".to_string(), "+14155550112".to_string()];
    let (code, report, received) = tokio::task::spawn_blocking(move || {
        place_calls_from(
            &d,
            sip,
            "127.0.0.1",
            "+13125550100",
            8000,
            vec![script(500.0, 7000, right), script(900.0, 7000, wrong)],
            &callers,
        )
    })
    .await
    .unwrap();
    assert_eq!(code, 0, "{report}");
    // Both heard the prompt (440 then 660 Hz) before keying.
    for (i, packets) in received.iter().enumerate() {
        let pcm = heard(packets, 0.0, 1.0);
        assert!(level(&pcm, 440.0) > 500.0 || level(&pcm, 660.0) > 500.0, "caller {i} heard the PIN prompt");
    }
    let data =
        gw.event_data("both calls ended", |d| count(d, "call.hangup") == 2 && count(d, "conference.ended") == 1).await;
    let joined: Vec<&Value> = data.iter().filter(|d| d["event_type"] == "conference.participant.joined").collect();
    assert_eq!(joined.len(), 1, "only the right PIN joined");
    assert_eq!(joined[0]["payload"]["from"], "+14155550111");
    let rejected =
        data.iter().find(|d| d["event_type"] == "call.hangup" && d["payload"]["from"] == "+14155550112").unwrap();
    assert_eq!(rejected["payload"]["hangup_cause"], "call_rejected", "{rejected}");
    assert_eq!(rejected["payload"]["hangup_source"], "callee");
    gw.stop();
}

/// `room_per_caller`: each caller gets a room of its own, named prefix + number.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn room_per_caller_gives_each_caller_its_own_room() {
    let dir = tempfile::tempdir().unwrap();
    let gw = start(dir.path(), "[[route]]\nroom_per_caller = \"call-\"\n");
    let (d, sip) = (dir.path().to_path_buf(), gw.sip_port);
    let callers = vec!["+14155550121".to_string(), "+14155550122".to_string()];
    let (code, report, received) = tokio::task::spawn_blocking(move || {
        place_calls_from(
            &d,
            sip,
            "127.0.0.1",
            "+13125550100",
            3000,
            vec![script(500.0, 2000, vec![]), script(900.0, 2000, vec![])],
            &callers,
        )
    })
    .await
    .unwrap();
    assert_eq!(code, 0, "{report}");
    // Alone in its room, nobody hears the other.
    assert!(level(&heard(&received[0], 0.5, 1.8), 900.0) < 150.0);
    assert!(level(&heard(&received[1], 0.5, 1.8), 500.0) < 150.0);
    let data = gw.event_data("two rooms ended", |d| count(d, "conference.ended") == 2).await;
    let mut names: Vec<&str> = data
        .iter()
        .filter(|d| d["event_type"] == "conference.created")
        .map(|d| d["payload"]["name"].as_str().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["call-+14155550121", "call-+14155550122"]);
    gw.stop();
}

/// The hot-transfer recipe over the API: a caller talking to a voice agent is put
/// in a room (`POST /v2/conferences`; the agent follows it in), a second caller
/// (a parked call answered by the backend) joins, the two hear each other, and
/// the agent leaves with `streaming_stop`. Events in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_transfer_agent_brings_a_human_in_then_leaves() {
    let dir = tempfile::tempdir().unwrap();
    let agent = PyAgent::start(dir.path(), "agent", "echo", &[]);
    let routes = format!(
        "[[agent]]\nname = \"bot\"\nurl = \"{}\"\n[[route]]\nto = \"+13125550100\"\nagent = \"bot\"\n[[route]]\nto = \"+13125550199\"\npark = true\n",
        agent.url("/")
    );
    let gw = start(dir.path(), &routes);
    let (d, sip) = (dir.path().to_path_buf(), gw.sip_port);
    let caller = tokio::task::spawn_blocking(move || {
        place_calls_from(
            &d,
            sip,
            "127.0.0.1",
            "+13125550100",
            9000,
            vec![script(500.0, 8000, vec![])],
            &["+14155550131".to_string()],
        )
    });
    let data = gw.event_data("caller streaming", |d| count(d, "streaming.started") == 1).await;
    let a = data.iter().find(|d| d["event_type"] == "streaming.started").unwrap()["payload"]["call_control_id"]
        .as_str()
        .unwrap()
        .to_string();
    // The caller goes into a room; its agent follows.
    let (code, conf) = gw
        .api()
        .call(reqwest::Method::POST, "/v2/conferences", Some(json!({"call_control_id": a, "name": "hot"})))
        .await;
    assert_eq!(code, 200, "{conf}");
    let conference_id = conf["data"]["id"].as_str().unwrap().to_string();
    // The human: a second call, parked, answered, joined.
    let (d, sip) = (dir.path().to_path_buf(), gw.sip_port);
    let human = tokio::task::spawn_blocking(move || {
        place_calls_from(
            &d,
            sip,
            "127.0.0.1",
            "+13125550199",
            6000,
            vec![script(900.0, 5000, vec![])],
            &["+14155550132".to_string()],
        )
    });
    let b = loop {
        let (_, calls) = gw.api().call(reqwest::Method::GET, "/v2/calls", None).await;
        if let Some(c) = calls["data"].as_array().unwrap().iter().find(|c| c["state"] == "parked") {
            break c["call_control_id"].as_str().unwrap().to_string();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(
        gw.api().call(reqwest::Method::POST, &format!("/v2/calls/{b}/actions/answer"), Some(json!({}))).await.0,
        200
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (code, e) = gw
        .api()
        .call(
            reqwest::Method::POST,
            &format!("/v2/conferences/{conference_id}/actions/join"),
            Some(json!({"call_control_id": b})),
        )
        .await;
    assert_eq!(code, 200, "{e}");
    let (_, parts) =
        gw.api().call(reqwest::Method::GET, &format!("/v2/conferences/{conference_id}/participants"), None).await;
    let mut kinds: Vec<&str> =
        parts["data"].as_array().unwrap().iter().map(|p| p["participant_type"].as_str().unwrap()).collect();
    kinds.sort();
    assert_eq!(kinds, ["agent", "sip", "sip"], "{parts}");
    // The agent leaves.
    assert_eq!(
        gw.api().call(reqwest::Method::POST, &format!("/v2/calls/{a}/actions/streaming_stop"), Some(json!({}))).await.0,
        200
    );
    let (code, report, human_heard) = human.await.unwrap();
    assert_eq!(code, 0, "{report}");
    let (code, report, caller_heard) = caller.await.unwrap();
    assert_eq!(code, 0, "{report}");
    // In the room the human hears the caller's 500 Hz, the caller the human's 900 Hz.
    assert!(level(&heard(&human_heard[0], 2.0, 4.5), 500.0) > 1000.0, "the human hears the caller");
    let tail = heard(&caller_heard[0], 3.5, 5.5);
    assert!(level(&tail, 900.0) > 1000.0, "the caller hears the human");
    let data = gw.event_data("room ended", |d| count(d, "conference.ended") == 1).await;
    let seq: Vec<(String, String)> = data
        .iter()
        .filter(|d| d["event_type"].as_str().unwrap().starts_with("conference.participant"))
        .map(|d| {
            (
                d["event_type"].as_str().unwrap().to_string(),
                d["payload"]["call_control_id"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let agent_id = format!("{a}:agent");
    let pos = |t: &str, id: &str| {
        seq.iter().position(|(x, y)| x == t && y == id).unwrap_or_else(|| panic!("{t} {id}: {seq:?}"))
    };
    assert!(pos("conference.participant.joined", &a) < pos("conference.participant.joined", &agent_id));
    assert!(pos("conference.participant.joined", &agent_id) < pos("conference.participant.joined", &b));
    assert!(pos("conference.participant.joined", &b) < pos("conference.participant.left", &agent_id));
    gw.stop();
}

/// Two calls on the built-in echo, both answered: A from +14155550141 (500 Hz
/// tone for 4 s, hangs up at 5 s) and B from +14155550142 (900 Hz for 8 s, hangs
/// up at 9 s); their SIPp runs (what each heard) and their `call_control_id`s.
type Placed = tokio::task::JoinHandle<(i32, String, Vec<Vec<common::rtp::Packet>>)>;

async fn two_echo_calls(gw: &Gateway, dir: &Path) -> (Placed, Placed, String, String) {
    let (d, sip) = (dir.to_path_buf(), gw.sip_port);
    let a_call = tokio::task::spawn_blocking(move || {
        place_calls_from(
            &d,
            sip,
            "127.0.0.1",
            "+13125550100",
            5000,
            vec![script(500.0, 4000, vec![])],
            &["+14155550141".to_string()],
        )
    });
    let (d, sip) = (dir.to_path_buf(), gw.sip_port);
    let b_call = tokio::task::spawn_blocking(move || {
        place_calls_from(
            &d,
            sip,
            "127.0.0.1",
            "+13125550101",
            9000,
            vec![script(900.0, 8000, vec![])],
            &["+14155550142".to_string()],
        )
    });
    let data = gw.event_data("both answered", |d| count(d, "call.answered") == 2).await;
    let id_of = |from: &str| {
        data.iter().find(|d| d["event_type"] == "call.answered" && d["payload"]["from"] == from).unwrap()["payload"]
            ["call_control_id"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let (a, b) = (id_of("+14155550141"), id_of("+14155550142"));
    (a_call, b_call, a, b)
}

/// `bridge`: two calls on the built-in echo are bridged over the API: each then
/// hears the other's tone (not its own echo), `call.bridged` names the other on
/// both, and when caller A hangs up the box hangs up B.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bridge_joins_two_calls_and_ends_them_together() {
    let dir = tempfile::tempdir().unwrap();
    let gw = start(dir.path(), "[[agent]]\nname = \"echo\"\nurl = \"builtin:echo\"\n[[route]]\nagent = \"echo\"\n");
    // The phones' clocks start after this (a packet at phone time t left at t or later here).
    let started = std::time::Instant::now();
    let (a_call, b_call, a, b) = two_echo_calls(&gw, dir.path()).await;
    let path = format!("/v2/calls/{a}/actions/bridge");
    let (code, e) = gw.api().call(reqwest::Method::POST, &path, Some(json!({}))).await;
    assert_eq!((code, e["errors"][0]["source"]["pointer"].as_str()), (400, Some("/call_control_id")), "{e}");
    let (code, e) = gw.api().call(reqwest::Method::POST, &path, Some(json!({"call_control_id": "nope"}))).await;
    assert_eq!(code, 404, "{e}");
    let (code, e) = gw.api().call(reqwest::Method::POST, &path, Some(json!({"call_control_id": b}))).await;
    assert_eq!(code, 200, "{e}");
    let bridged_at = started.elapsed().as_secs_f64();
    let (code, report, a_heard) = a_call.await.unwrap();
    assert_eq!(code, 0, "{report}");
    let (code, report, b_heard) = b_call.await.unwrap();
    assert_eq!(code, 0, "{report}");
    // Bridged from about 0.5 s (later on a loaded box): from 0.5 s after the
    // bridge to the end of A's tone (4 s), A hears B's 900 Hz and not its own echo.
    assert!(bridged_at < 2.9, "the bridge came {bridged_at:.1} s in: too late to hear it before A's tone ends");
    let from = (bridged_at + 0.5).max(1.5);
    let pcm = heard(&a_heard[0], from, 3.9);
    assert!(level(&pcm, 900.0) > 1000.0 && level(&pcm, 500.0) < 150.0, "A hears B only");
    let pcm = heard(&b_heard[0], from, 3.9);
    assert!(level(&pcm, 500.0) > 1000.0 && level(&pcm, 900.0) < 150.0, "B hears A only");
    // B ended well before its own 9 s: the box hung it up after A left.
    assert!(b_heard[0].last().unwrap().at < Duration::from_millis(7000), "B was hung up with A");
    let data = gw.event_data("both hung up", |d| count(d, "call.hangup") == 2).await;
    let bridged: Vec<(&str, &str)> = data
        .iter()
        .filter(|d| d["event_type"] == "call.bridged")
        .map(|d| {
            (
                d["payload"]["call_control_id"].as_str().unwrap(),
                d["payload"]["bridged_call_control_id"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(bridged.len(), 2, "{bridged:?}");
    assert!(bridged.contains(&(a.as_str(), b.as_str())) && bridged.contains(&(b.as_str(), a.as_str())));
    assert_eq!(count(&data, "conference.created"), 0, "a bridge is not a conference");
    gw.stop();
}

/// `bridge` issued on B with Telnyx's `park_after_unbridge: "self"`: when A
/// hangs up, B leaves the bridge and stays up (to its own hangup at 9 s), and
/// the box's BYE never comes; any other value is a 400 naming the field.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn park_after_unbridge_keeps_the_call_up_when_the_other_hangs_up() {
    let dir = tempfile::tempdir().unwrap();
    let gw = start(dir.path(), "[[agent]]\nname = \"echo\"\nurl = \"builtin:echo\"\n[[route]]\nagent = \"echo\"\n");
    let (a_call, b_call, a, b) = two_echo_calls(&gw, dir.path()).await;
    let path = format!("/v2/calls/{b}/actions/bridge");
    let bad = json!({"call_control_id": a, "park_after_unbridge": "other"});
    let (code, e) = gw.api().call(reqwest::Method::POST, &path, Some(bad)).await;
    assert_eq!((code, e["errors"][0]["source"]["pointer"].as_str()), (400, Some("/park_after_unbridge")), "{e}");
    let body = json!({"call_control_id": a, "park_after_unbridge": "self"});
    let (code, e) = gw.api().call(reqwest::Method::POST, &path, Some(body)).await;
    assert_eq!(code, 200, "{e}");
    let (code, report, _) = a_call.await.unwrap();
    assert_eq!(code, 0, "{report}");
    let (code, report, b_heard) = b_call.await.unwrap();
    assert_eq!(code, 0, "{report}");
    // B heard A while bridged, and kept receiving the box's packets to its own end.
    let pcm = heard(&b_heard[0], 1.5, 3.5);
    assert!(level(&pcm, 500.0) > 1000.0, "B heard A while bridged");
    assert!(b_heard[0].last().unwrap().at > Duration::from_millis(8000), "B stayed up after A left");
    let data = gw.event_data("both hung up", |d| count(d, "call.hangup") == 2).await;
    let b_hangup = data
        .iter()
        .find(|d| d["event_type"] == "call.hangup" && d["payload"]["call_control_id"] == b.as_str())
        .unwrap();
    assert_eq!(b_hangup["payload"]["hangup_source"], "caller", "B hung up itself: {b_hangup}");
    gw.stop();
}

/// A SIPp UAS on 127.0.0.3 playing `scenario` (with RTP echo), on a free port.
fn uas(dir: &Path, name: &str, scenario_file: &str) -> (Sipp, u16) {
    let port = free_port();
    (sipp_uas(dir, name, scenario_file, port, true), port)
}

/// `transfer`: a parked caller answered by the API (silence) is transferred; a
/// first target that is busy gives `call.hangup` for the new leg and the caller
/// stays; a second target (a UAS echoing RTP) answers and is bridged: the caller
/// then hears its own tone back through it, `call.bridged` on both legs; when the
/// caller hangs up, the box hangs up the transferred leg (BYE to the UAS).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfer_dials_a_new_leg_and_bridges_it_on_answer() {
    let dir = tempfile::tempdir().unwrap();
    let (mut busy, busy_port) = uas(dir.path(), "busy", "uas_busy.xml");
    let (mut target, target_port) = uas(dir.path(), "target", "uas_answer.xml");
    let routes = format!(
        "[[trunk]]\nname = \"busy\"\nproxy = \"sip:127.0.0.3:{busy_port}\"\n[[trunk]]\nname = \"carrier\"\nproxy = \"sip:127.0.0.3:{target_port}\"\n[[route]]\ntrunk = \"pbx\"\npark = true\n"
    );
    let gw = start(dir.path(), &routes);
    let (d, sip) = (dir.path().to_path_buf(), gw.sip_port);
    let caller = tokio::task::spawn_blocking(move || {
        place_calls_from(
            &d,
            sip,
            "127.0.0.1",
            "+13125550100",
            8000,
            vec![script(500.0, 7000, vec![])],
            &["+14155550151".to_string()],
        )
    });
    let a = loop {
        let (_, calls) = gw.api().call(reqwest::Method::GET, "/v2/calls", None).await;
        if let Some(c) = calls["data"].as_array().unwrap().iter().find(|c| c["state"] == "parked") {
            break c["call_control_id"].as_str().unwrap().to_string();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let path = format!("/v2/calls/{a}/actions/transfer");
    let (code, e) = gw.api().call(reqwest::Method::POST, &path, Some(json!({"to": "+13125550177"}))).await;
    assert_eq!(code, 422, "not answered yet: {e}");
    assert_eq!(
        gw.api().call(reqwest::Method::POST, &format!("/v2/calls/{a}/actions/answer"), Some(json!({}))).await.0,
        200
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (code, e) = gw.api().call(reqwest::Method::POST, &path, Some(json!({}))).await;
    assert_eq!((code, e["errors"][0]["source"]["pointer"].as_str()), (400, Some("/to")), "{e}");

    // Busy: the new leg fails, the caller stays.
    let body = json!({"to": "+13125550177", "connection_id": "busy"});
    assert_eq!(gw.api().call(reqwest::Method::POST, &path, Some(body)).await.0, 200);
    let data = gw.event_data("busy leg hung up", |d| count(d, "call.hangup") == 1).await;
    let failed = data.iter().find(|d| d["event_type"] == "call.hangup").unwrap();
    assert_eq!(failed["payload"]["hangup_cause"], "user_busy", "{failed}");
    assert_ne!(failed["payload"]["call_control_id"], a.as_str());
    assert_eq!(gw.api().call(reqwest::Method::GET, &format!("/v2/calls/{a}"), None).await.1["data"]["is_alive"], true);
    assert_eq!(tokio::task::spawn_blocking(move || busy.wait(WAIT)).await.unwrap(), 0);

    // Answered: bridged.
    let body = json!({"to": "+13125550100", "connection_id": "carrier", "timeout_secs": 10});
    assert_eq!(gw.api().call(reqwest::Method::POST, &path, Some(body)).await.0, 200);
    let (code, report, heard_back) = caller.await.unwrap();
    assert_eq!(code, 0, "{report}");
    let code = tokio::task::spawn_blocking(move || (target.wait(WAIT), target.report())).await.unwrap();
    assert_eq!(code.0, 0, "the UAS got the box's BYE: {}", code.1);
    // Through the bridge the caller hears its own tone, echoed by the UAS.
    let tail = heard(&heard_back[0], 4.0, 6.5);
    assert!(level(&tail, 500.0) > 1000.0, "the caller hears the transfer target (its echo)");
    let data = gw.event_data("bridged and hung up", |d| count(d, "call.hangup") == 3).await;
    let bridged: Vec<(&str, &str)> = data
        .iter()
        .filter(|d| d["event_type"] == "call.bridged")
        .map(|d| {
            (
                d["payload"]["call_control_id"].as_str().unwrap(),
                d["payload"]["bridged_call_control_id"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(bridged.len(), 2, "{bridged:?}");
    assert!(bridged.iter().any(|(me, _)| *me == a));
    let b = bridged.iter().find(|(me, _)| *me != a).unwrap().0;
    let initiated =
        data.iter().find(|d| d["event_type"] == "call.initiated" && d["payload"]["call_control_id"] == b).unwrap();
    assert_eq!(initiated["payload"]["to"], "+13125550100");
    assert_eq!(initiated["payload"]["from"], "+14155550151", "from defaults to the caller's number");
    gw.stop();
}
