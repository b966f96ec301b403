//! Issue 21 point 5, recording options, on the real daemon with real callers:
//! SIPp places the calls, the test's RTP phones send known audio (the speech of
//! SIPp's `g711a.pcap`, tones) to the built-in echo agent, the API starts,
//! pauses and resumes recordings with Telnyx's `record_start` options, and the
//! files are decoded by `sox` (MP3 through libmad) and measured.
//!
//! - MP3: a dual-channel MP3 recording decodes with sox, its left channel
//!   correlates with the speech the caller sent, `recording_urls.mp3` and the
//!   download (`audio/mpeg`) work; `record_pause` / `record_resume` around a
//!   1 kHz tone the caller sends (the "card number") leave the tone out of the
//!   file on both channels and the file shorter than the call by the pause.
//! - `max_length`, `timeout_secs` (the span ends by itself with its own
//!   `call.recording.saved` while the call goes on), `recording_track`
//!   (`inbound` = only the caller, `outbound` = only what the caller hears,
//!   mono), `play_beep` (the caller hears a 1 kHz beep; it is on the outbound
//!   track only), and the 400 / 422 answers of bad bodies.
//! - `kill -9` mid-call with `[recording] format = "mp3"`: the `.mp3.part` left
//!   on disk already decodes; the restarted daemon finalizes it as `.mp3`.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::audio::{align, level, match_segments, pcmu_round_trip, rms};
use common::gateway::{Api, Gateway, Route, Trunk, files_ending};
use common::rtp::{Packet, RtpPhone, Script, answers_in_trace, offers_in_trace, place_calls_from, tone};
use common::*;
use serde_json::{Value, json};
use sipbridge::media::g711::G711;

const TOKEN: &str = "test-token-0123456789";
const WAIT: Duration = Duration::from_secs(30);

/// The speech of SIPp's `g711a.pcap` (7.08 s of A-law), decoded to PCM16 8 kHz.
fn speech() -> Vec<i16> {
    let packets = common::audio::pcap_rtp(Path::new("/usr/share/sip-tester/g711a.pcap"));
    packets.iter().flat_map(|(_, payload)| payload.iter().map(|&b| G711::Pcma.decode_sample(b))).collect()
}

/// The daemon with the echo agent on every call, the API, signed webhooks and
/// `[recording]` in `dir/recordings` with `recording` extra lines; `record`
/// records every call from the answer.
fn start(dir: &Path, recording: &str, record: bool) -> Gateway {
    let route = if record { Route::new().agent("echo").record() } else { Route::new().agent("echo") };
    Gateway::builder(dir)
        .rtp_range(45_000, 49_999)
        .trunk(Trunk::new("pbx").allow("127.0.0.0/8"))
        .agent("echo", "builtin:echo", "")
        .route(route)
        .recording(recording)
        .webhooks("")
        .api(TOKEN)
        .start()
}

/// Decodes `path` (any format sox reads: MP3 through libmad) to PCM16 8 kHz
/// channels.
fn decode(path: &Path, kind: &str) -> Vec<Vec<i16>> {
    let out = path.with_extension("decoded.wav");
    let o =
        Command::new("sox").args(["-t", kind]).arg(path).args(["-b", "16", "-e", "signed-integer"]).arg(&out).output();
    let o = o.expect("sox is installed (scripts/setup-tests)");
    assert!(o.status.success(), "sox decodes {}: {}", path.display(), String::from_utf8_lossy(&o.stderr));
    let mut r = hound::WavReader::open(&out).unwrap();
    let spec = r.spec();
    assert_eq!(spec.sample_rate, 8000, "{}", path.display());
    let s: Vec<i16> = r.samples::<i16>().map(|x| x.unwrap()).collect();
    let n = usize::from(spec.channels);
    (0..n).map(|c| s.iter().skip(c).step_by(n).copied().collect()).collect()
}

/// The live calls' ids by caller (`from`), once `n` are answered.
async fn answered_by_caller(api: &Api, n: usize) -> std::collections::HashMap<String, String> {
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

/// `call.recording.saved` payloads of the call `id` among `data`.
fn saved_of<'a>(data: &'a [Value], id: &str) -> Vec<&'a Value> {
    data.iter()
        .filter(|e| e["event_type"] == "call.recording.saved" && e["payload"]["call_control_id"] == id)
        .map(|e| &e["payload"])
        .collect()
}

/// Loudest `hz` level over 100 ms windows of `pcm`.
fn max_tone(pcm: &[i16], hz: f64) -> f64 {
    pcm.chunks(800).map(|w| level(w, hz)).fold(0.0, f64::max)
}

/// 20 ms windows of `pcm` that hold a loud pure `hz` tone (its level at least
/// 80 % of the window's peak amplitude, RMS × √2): a tone, not speech, which
/// spreads its energy over many frequencies.
fn tone_windows(pcm: &[i16], hz: f64) -> usize {
    pcm.chunks_exact(160).filter(|w| rms(w) > 700.0 && level(w, hz) >= 0.8 * rms(w) * std::f64::consts::SQRT_2).count()
}

/// Where `file` holds `sent`: the lag (file index − sent index) and its
/// correlation over one second, found coarsely on 10 ms RMS envelopes over
/// every overlap, then to the sample within ±200 samples. Cheap whatever the
/// offset (a call's recording may start seconds after the phone did).
fn locate(sent: &[i16], file: &[i16]) -> (i64, f64) {
    let env = |v: &[i16]| -> Vec<i16> { v.chunks_exact(80).map(|w| rms(w) as i16).collect() };
    let (a, b) = (env(sent), env(file));
    let mut best = (0i64, f64::MIN);
    for k in -(a.len() as i64) + 100..(b.len() as i64) - 100 {
        let (c, n) = common::audio::ncc_at(&a, &b, k);
        if n >= 100 && c > best.1 {
            best = (k, c);
        }
    }
    let coarse = best.0 * 80;
    // One second of `sent` inside the overlap, as far in as it goes.
    let from = (-coarse).max(0) as usize + 800;
    let to = (from + 8000).min(sent.len()).min((file.len() as i64 - coarse).max(0) as usize);
    if to <= from + 800 {
        return (coarse, 0.0);
    }
    align(sent, from..to, file, coarse - 200..coarse + 201)
}

/// Segments of a [`match_segments`] result (0.5 s each) whose own correlation
/// at their own lag is at least 0.9. A media or phone-thread stall over 60 ms on
/// a loaded machine shifts the timeline (it follows arrival times) and spoils
/// the segment it falls in; the rest stay sample-aligned.
fn good_segments(sent: &[i16], file: &[i16], m: &common::audio::Matched) -> usize {
    m.lags
        .iter()
        .filter(|&&(start, lag)| {
            let seg = &sent[start..(start + 4000).min(sent.len())];
            let at = start as i64 + lag;
            at >= 0 && (at as usize) + seg.len() <= file.len() && {
                let (c, _) = common::audio::ncc_at(seg, &file[at as usize..at as usize + seg.len()], 0);
                c >= 0.9
            }
        })
        .count()
}

const OK: &str = r#"{"data":{"result":"ok"}}"#;

/// A dual-channel MP3 of known speech, with a 1 kHz tone in the middle that the
/// recording is paused for: the file decodes, correlates with the speech, and
/// holds no tone and none of the paused time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mp3_recording_decodes_to_the_speech_and_pause_leaves_the_tone_out() {
    let dir = tempfile::tempdir().unwrap();
    let gw = start(dir.path(), "", false);
    let api = gw.api();
    // The phone: 3 s of speech, the digit 1 (the test pauses), 1 s of silence,
    // 2 s of a 1 kHz tone, 1 s of silence, the digit 2 (the test resumes), 1 s of
    // silence, 3 s of speech; SIPp hangs up at 12.5 s.
    let s = speech();
    let mut audio: Vec<i16> = s[..3 * 8000].to_vec();
    audio.extend(vec![0; 8000 + 800]); // the digit's 8 packet slots, then 1 s
    audio.extend(tone(1000.0, 8000.0, 2000));
    let tone_end = audio.len();
    audio.extend(vec![0; 8000 + 8 * 160 + 8000]);
    let after = audio.len();
    audio.extend_from_slice(&s[3 * 8000..6 * 8000]);
    let digit1 = 3 * 50;
    let digit2 = (tone_end + 8000) / 160;
    let script = Script {
        audio: audio.clone(),
        digits: vec![(digit1, '1'), (digit2, '2')],
        send_for: Duration::from_millis(12_000),
        duration: Duration::from_millis(12_300),
        gaps: vec![],
    };
    let (d, port) = (dir.path().to_path_buf(), gw.sip_port);
    let call = tokio::task::spawn_blocking(move || {
        place_calls_from(&d, port, "127.0.0.1", "+13125550100", 12_500, vec![script], &["+15550001000".into()])
    });
    let ids = answered_by_caller(&api, 1).await;
    let id = ids["+15550001000"].clone();
    let start_body = json!({"format": "mp3", "channels": "dual", "client_state": "cmVj"}).to_string();
    let (code, body) = api.action(&id, "record_start", &start_body).await;
    assert_eq!((code, body.to_string()), (200, OK.to_string()));
    let (code, e) = api.action(&id, "record_resume", "{}").await;
    assert_eq!(code, 422, "resume without a pause: {e}");
    let digit = |d: &'static str| {
        move |data: &[Value]| data.iter().any(|e| e["event_type"] == "call.dtmf.received" && e["payload"]["digit"] == d)
    };
    gw.event_data("the digit 1", digit("1")).await;
    assert_eq!(api.action(&id, "record_pause", "{}").await, (200, serde_json::from_str(OK).unwrap()));
    assert_eq!(api.action(&id, "record_pause", "{}").await.0, 422, "already paused");
    gw.event_data("the digit 2", digit("2")).await;
    assert_eq!(api.action(&id, "record_resume", "{}").await, (200, serde_json::from_str(OK).unwrap()));
    let data =
        gw.event_data("call.recording.saved", |d| d.iter().any(|e| e["event_type"] == "call.recording.saved")).await;
    let (code, report, received) = call.await.unwrap();
    assert_eq!(code, 0, "{report}");
    assert!(received[0].iter().filter(|p| p.rms() > 300.0).count() > 200, "the caller heard the echo");
    let saved = saved_of(&data, &id)[0].clone();
    let path = PathBuf::from(saved["file_path"].as_str().unwrap());
    assert_eq!(path.extension().unwrap(), "mp3");
    assert_eq!(saved["channels"], "dual");
    assert_eq!(saved["format"], "mp3");
    assert_eq!(saved["client_state"], "cmVj");
    let rid = saved["recording_id"].as_str().unwrap();
    assert!(saved["recording_urls"]["mp3"].as_str().unwrap().ends_with(&format!("/v2/recordings/{rid}.mp3")));
    assert_eq!(saved["public_recording_urls"], saved["recording_urls"]);

    // The download is the file, as audio/mpeg.
    let resp = api.request(reqwest::Method::GET, &format!("/v2/recordings/{rid}.mp3"), Some(TOKEN)).await;
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(resp.headers()["content-type"], "audio/mpeg");
    let bytes = resp.bytes().await.unwrap();
    assert_eq!(bytes.len() as u64, std::fs::metadata(&path).unwrap().len());
    let (code, listed) = api.get(&format!("/v2/recordings/{rid}")).await;
    assert_eq!(code, 200);
    assert!(listed["data"]["download_urls"]["mp3"].as_str().is_some(), "{listed}");

    let ch = decode(&path, "mp3");
    assert_eq!(ch.len(), 2, "stereo");
    let (left, right) = (&ch[0], &ch[1]);
    let sent = pcmu_round_trip(&audio);
    // The speech before the pause: aligned (the MP3 adds its encoder delay).
    let (lag, _) = align(&sent, 8000..16_000, left, -8000..12_000);
    let before = match_segments(&sent, 0..3 * 8000, left, lag, 800);
    // The speech after the resume sits right after it in the file: the paused
    // time is not in the file (it would push it ~6 s later).
    let between = (digit2 - digit1) as i64 * 160;
    let lag2 = align(&sent, after + 4000..after + 12_000, left, lag - between - 8000..lag - between + 8000).0;
    let resumed = match_segments(&sent, after..after + 3 * 8000, left, lag2, 800);
    let cut = lag - lag2; // samples left out of the file
    let file_secs = left.len() as f64 / 8000.0;
    let tone_level = max_tone(left, 1000.0).max(max_tone(right, 1000.0));
    let tone_in_file = tone_windows(left, 1000.0) + tone_windows(right, 1000.0);
    // The check itself finds the tone where it is: in what the caller sent.
    assert!(tone_windows(&sent, 1000.0) >= 90, "the sent tone is found: {}", tone_windows(&sent, 1000.0));
    let speech_level = rms(&left[(lag.max(0) as usize)..(lag.max(0) as usize + 3 * 8000).min(left.len())]);
    eprintln!(
        "mp3: {} bytes, decoded {file_secs:.3} s (event {} ms); speech before the pause: lag {lag}, ncc {:.4} over {} \
         segments; after the resume: lag {lag2}, ncc {:.4} over {} segments; {:.3} s of the call left out; \
         1 kHz: loudest 100 ms level {tone_level:.0} (the tone is sent at 8000), 20 ms windows of pure tone \
         {tone_in_file}; speech rms {speech_level:.0}",
        bytes.len(),
        saved["duration_millis"],
        before.ncc,
        before.lags.len(),
        resumed.ncc,
        resumed.lags.len(),
        cut as f64 / 8000.0
    );
    // Unloaded runs give ncc 0.9995 on every segment; a loaded machine may spoil one or two.
    let (good_before, good_after) = (good_segments(&sent, left, &before), good_segments(&sent, left, &resumed));
    eprintln!(
        "mp3: segments correlating ≥ 0.9: {good_before} of {} before, {good_after} of {} after",
        before.lags.len(),
        resumed.lags.len()
    );
    assert!(good_before >= 3 && before.lags.len() >= 4, "the speech before the pause: {before:?}");
    assert!(good_after >= 3 && resumed.lags.len() >= 4, "the speech after the resume: {resumed:?}");
    // Paused from (digit 1 + API latency) to (digit 2 + API latency): at least the
    // 4.3 s between the digits minus latencies, at most 6 s.
    assert!(cut > between - 8000 && cut < between + 8000, "left out {cut} samples, the digits are {between} apart");
    assert_eq!(tone_in_file, 0, "no 20 ms of the tone in the file (loudest 1 kHz level {tone_level})");
    // The file's length: the call's recorded time minus the pause.
    let duration_ms = saved["duration_millis"].as_f64().unwrap();
    assert!((file_secs * 1000.0 - duration_ms).abs() < 250.0, "decoded {file_secs} s vs {duration_ms} ms");
    gw.stop();
}

/// `max_length`, `timeout_secs`, `recording_track` and `play_beep` on four calls
/// at once, and the bodies the API refuses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_length_timeout_track_and_beep_shape_each_recording() {
    let dir = tempfile::tempdir().unwrap();
    let gw = start(dir.path(), "", false);
    let api = gw.api();
    let s = speech();
    let speech_for = |ms: u64, total: u64| Script {
        audio: s.iter().cycle().take(ms as usize * 8).copied().collect(),
        digits: vec![],
        send_for: Duration::from_millis(total),
        duration: Duration::from_millis(total + 300),
        gaps: vec![],
    };
    let callers: Vec<String> = (1..=4).map(|n| format!("+1555000200{n}")).collect();
    // 1: max_length 2 of a 9 s call; 2: speech for 3 s then silence (timeout_secs 1);
    // 3: inbound track with a beep; 4: outbound track with a beep.
    let scripts = vec![speech_for(9000, 9000), speech_for(3000, 9000), speech_for(7000, 9000), speech_for(7000, 9000)];
    let (d, port, c2) = (dir.path().to_path_buf(), gw.sip_port, callers.clone());
    let calls = tokio::task::spawn_blocking(move || {
        place_calls_from(&d, port, "127.0.0.1", "+13125550100", 9500, scripts, &c2)
    });
    let ids = answered_by_caller(&api, 4).await;
    let id = |n: usize| ids[&callers[n - 1]].clone();

    for (body, field) in [
        (r#"{"format": "ogg"}"#, "/format"),
        (r#"{"channels": "quad"}"#, "/channels"),
        (r#"{"recording_track": "left"}"#, "/recording_track"),
        (r#"{"max_length": -1}"#, "/max_length"),
        (r#"{"max_length": 14401}"#, "/max_length"),
        (r#"{"timeout_secs": "5"}"#, "/timeout_secs"),
        (r#"{"play_beep": "yes"}"#, "/play_beep"),
    ] {
        let (code, e) = api.action(&id(1), "record_start", body).await;
        assert_eq!((code, e["errors"][0]["source"]["pointer"].as_str()), (400, Some(field)), "{body}: {e}");
    }
    let (code, e) = api.action(&id(1), "record_pause", "{}").await;
    assert_eq!(code, 422, "nothing to pause: {e}");

    let ok: Value = serde_json::from_str(OK).unwrap();
    let go = |n: usize, body: Value| {
        let api = &api;
        let id = id(n);
        async move { api.action(&id, "record_start", &body.to_string()).await }
    };
    assert_eq!(go(1, json!({"format": "wav", "max_length": 2})).await, (200, ok.clone()));
    assert_eq!(go(1, json!({"format": "wav"})).await.0, 422, "one recording at a time");
    assert_eq!(go(2, json!({"format": "wav", "timeout_secs": 1})).await, (200, ok.clone()));
    let inbound = json!({"format": "wav", "channels": "dual", "recording_track": "inbound", "play_beep": true});
    assert_eq!(go(3, inbound).await, (200, ok.clone()));
    let outbound = json!({"format": "mp3", "recording_track": "outbound", "play_beep": true});
    assert_eq!(go(4, outbound).await, (200, ok.clone()));

    // Calls 1 and 2 end their recordings themselves, while the calls go on.
    let data = gw
        .event_data("recordings 1 and 2 end before the calls", |d| {
            !saved_of(d, &id(1)).is_empty() && !saved_of(d, &id(2)).is_empty()
        })
        .await;
    let hung_up = |n: usize| {
        data.iter().any(|e| e["event_type"] == "call.hangup" && e["payload"]["call_control_id"] == id(n).as_str())
    };
    assert!(!hung_up(1) && !hung_up(2), "the recordings ended before the calls did");
    // Their record_stop: nothing runs any more.
    assert_eq!(api.action(&id(1), "record_stop", "{}").await.0, 422);
    let data = gw.event_data("every recording saved", |d| (1..=4).all(|n| !saved_of(d, &id(n)).is_empty())).await;
    let (code, report, received) = calls.await.unwrap();
    assert_eq!(code, 0, "{report}");
    let saved = |n: usize| saved_of(&data, &id(n))[0].clone();

    // 1: exactly 2 s, by max_length.
    let s1 = saved(1);
    assert_eq!(s1["recording_stop_reason"], "max_length");
    assert_eq!(s1["duration_millis"], 2000);
    let one = decode(Path::new(s1["file_path"].as_str().unwrap()), "wav");
    assert_eq!(one[0].len(), 16_000, "2 s to the sample");

    // 2: speech for 3 s, then 1 s of silence ends it (timeout_secs).
    let s2 = saved(2);
    assert_eq!(s2["recording_stop_reason"], "timeout_secs");
    let two = decode(Path::new(s2["file_path"].as_str().unwrap()), "wav");
    let secs2 = two[0].len() as f64 / 8000.0;
    let tail = &two[0][two[0].len().saturating_sub(6400)..];
    let tail_r = &two[1][two[1].len().saturating_sub(6400)..];
    eprintln!("timeout_secs 1: recording {secs2:.3} s, last 0.8 s rms {:.0}/{:.0}", rms(tail), rms(tail_r));
    let loudest = two[0][..two[0].len().saturating_sub(8000)].chunks(4000).map(rms).fold(0.0, f64::max);
    assert!(loudest > 300.0, "speech before the silence: loudest 0.5 s rms {loudest}");
    assert!((1.0..6.0).contains(&secs2), "speech, its echo, then 1 s of silence, in a 9 s call: {secs2} s");
    assert!(rms(tail) < 50.0 && rms(tail_r) < 50.0, "it ended on silence");

    // 3: inbound: mono, the caller's speech only, no beep; 4: outbound: mono,
    // the beep, none of the caller's speech.
    let s3 = saved(3);
    assert_eq!(s3["channels"], "single", "one track is mono");
    let three = decode(Path::new(s3["file_path"].as_str().unwrap()), "wav");
    let s4 = saved(4);
    assert_eq!(s4["channels"], "single");
    assert!(s4["recording_urls"]["mp3"].is_string());
    let four = decode(Path::new(s4["file_path"].as_str().unwrap()), "mp3");
    assert_eq!((three.len(), four.len()), (1, 1));
    let sent = pcmu_round_trip(&s);
    let (lag3, _) = locate(&sent, &three[0]);
    // The part of the sent speech inside the file (match_segments stops at its edges).
    let inside = ((-lag3).max(0) as usize + 800)..sent.len().min((three[0].len() as i64 - lag3 - 800).max(0) as usize);
    let m3 = match_segments(&sent, inside.clone(), &three[0], lag3, 800);
    let beep3 = max_tone(&three[0][..8000], 1000.0);
    let beep4 = max_tone(&four[0][..8000.min(four[0].len())], 1000.0);
    let heard_beep = received[3]
        .iter()
        .filter(|p: &&Packet| p.payload_type == 0 && p.at < Duration::from_secs(3))
        .any(|p| level(&p.pcm(), 1000.0) > 1000.0);
    eprintln!(
        "inbound track: ncc {:.4} with the sent speech over {} segments, 1 kHz level in its first second {beep3:.0}; \
         outbound track: 1 kHz level in its first second {beep4:.0}; the caller heard the beep: {heard_beep}; \
         inbound file {:.2} s, speech at lag {lag3}, compared over sent {inside:?}",
        m3.ncc,
        m3.lags.len(),
        three[0].len() as f64 / 8000.0
    );
    // The mix of the speech and its 200 ms echo would correlate far less.
    assert!(m3.ncc >= 0.95 && m3.lags.len() >= 5, "inbound = the caller's speech alone: {m3:?}");
    assert!(beep3 < 1500.0, "the beep is not on the inbound track: {beep3}");
    assert!(beep4 > 4000.0, "the beep is on the outbound track: {beep4}");
    assert!(heard_beep, "the caller heard the beep");
    // The built-in echo stops echoing once a playback (the beep) replaces its
    // audio path, so the outbound track holds the beep and silence; what matters
    // is that none of the caller's speech (sent all along) is in it.
    let (_, c4) = locate(&sent, &four[0]);
    assert!(c4 < 0.3, "the caller's speech is not on the outbound track: ncc {c4}");
    gw.stop();
}

/// One call whose SIPp and phone the test drives itself (the daemon is killed
/// under it), as in tests/recording.rs.
struct LiveCall {
    sipp: Sipp,
    phone: std::thread::JoinHandle<Vec<Packet>>,
}

impl LiveCall {
    fn start(dir: &Path, port: u16, hold_ms: u64, script: Script) -> Self {
        let phone = RtpPhone::bind();
        let template = std::fs::read_to_string(scenario("uac_agent.xml.in")).unwrap();
        let sf = dir.join("uac_live.xml");
        std::fs::write(&sf, template.replace("@HOLD_MS@", &hold_ms.to_string())).unwrap();
        let csv = dir.join("uac_live.csv");
        std::fs::write(&csv, format!("SEQUENTIAL\n{};\n", phone.port())).unwrap();
        let mut args = sipp_args("uac_call.xml", "+13125550100", &format!("127.0.0.1:{port}"), "127.0.0.1", &[]);
        args[1] = sf.display().to_string();
        args.extend(["-inf", &csv.display().to_string(), "-key", "rtp_ip", "127.0.0.1"].map(String::from));
        let sipp = Sipp::start(dir, "live", &args);
        let deadline = Instant::now() + WAIT;
        let remote = loop {
            let trace = sipp.messages();
            let answers = answers_in_trace(&trace);
            if let Some(a) = offers_in_trace(&trace).keys().find_map(|call_id| answers.get(call_id)) {
                break *a;
            }
            assert!(Instant::now() < deadline, "the call was answered: {}", sipp.report());
            std::thread::sleep(Duration::from_millis(5));
        };
        let phone = std::thread::spawn(move || phone.run(remote, &script));
        Self { sipp, phone }
    }
}

/// `kill -9` three seconds into a call recorded as MP3 (`[recording] format =
/// "mp3"`): the `.mp3.part` the crash leaves decodes as it is, holding the
/// caller's speech up to a second before the kill; the restarted daemon
/// finalizes it as `.mp3` (still decodable, same audio).
#[test]
fn kill_9_mid_mp3_recording_leaves_a_playable_file() {
    let dir = tempfile::tempdir().unwrap();
    let recordings = dir.path().join("recordings");
    let mut gw = start(dir.path(), "format = \"mp3\"\nchannels = \"dual\"", true);
    let s = speech();
    let script = Script {
        audio: s.clone(),
        digits: vec![],
        send_for: Duration::from_millis(4500),
        duration: Duration::from_millis(4500),
        gaps: vec![],
    };
    let call = LiveCall::start(dir.path(), gw.sip_port, 4500, script);
    let deadline = Instant::now() + WAIT;
    let (part, started) = loop {
        if let Some(p) = files_ending(&recordings, ".mp3.part").pop() {
            break (p, Instant::now());
        }
        assert!(Instant::now() < deadline, "a .mp3.part appears at the answer: {}", gw.daemon.stderr());
        std::thread::sleep(Duration::from_millis(2));
    };
    // Let three seconds of the call reach the file, then SIGKILL by pid.
    std::thread::sleep(Duration::from_secs(3));
    assert!(!call.phone.is_finished(), "the phone is still sending");
    let killed = Instant::now();
    gw.kill_9();
    let recorded_until_kill = killed - started;
    assert!(part.exists() && files_ending(&recordings, ".mp3").is_empty(), "only the .part is on disk");
    let crash_copy = dir.path().join("as-left-by-the-crash.mp3");
    std::fs::copy(&part, &crash_copy).unwrap();
    let left_by_crash = decode(&crash_copy, "mp3");
    assert_eq!(left_by_crash.len(), 2);
    let kept = Duration::from_micros(left_by_crash[0].len() as u64 * 125);

    gw.restart();
    let log = gw.daemon.stderr();
    let mp3 = PathBuf::from(part.to_string_lossy().strip_suffix(".part").unwrap());
    assert!(!part.exists() && mp3.exists(), "renamed to {}: {log}", mp3.display());
    let line = log
        .lines()
        .find(|l| l.contains("recording left by a crash repaired and finalized"))
        .unwrap_or_else(|| panic!("the startup report names the repaired file: {log}"));
    assert!(line.contains(&mp3.display().to_string()), "{line}");
    let repaired = decode(&mp3, "mp3");
    assert_eq!(repaired[0].len(), left_by_crash[0].len(), "whole frames were on disk: nothing to cut");
    let sent = pcmu_round_trip(&s);
    let (lag, _) = align(&sent, 4000..12_000, &repaired[0], -8000..12_000);
    let audio_end = (repaired[0].len() as i64 - lag).clamp(0, sent.len() as i64) as usize;
    let m = match_segments(&sent, 0..audio_end, &repaired[0], lag, 800);
    let last = m.lags.last().map_or(0, |l| l.0 as i64 + l.1 + 4000);
    eprintln!(
        "kill -9 (mp3): answer → kill {:.3} s, decodable at the crash {:.3} s (encoder delay included), \
         speech ncc {:.4} over {} segments, last matched sample {last} of {}",
        recorded_until_kill.as_secs_f64(),
        kept.as_secs_f64(),
        m.ncc,
        m.lags.len(),
        repaired[0].len()
    );
    // 0.9995 on an idle machine; under load the timeline turns late packets
    // into silence (it follows arrival times), which lowers it.
    assert!(m.ncc >= 0.8, "the caller's speech: {m:?}");
    // Everything up to a second before the kill (+ the MP3's ~0.13 s encoder delay).
    assert!(last as f64 / 8000.0 + 1.2 >= recorded_until_kill.as_secs_f64(), "speech to the last second: {m:?}");
    assert!(kept <= recorded_until_kill + Duration::from_millis(300), "no audio from after the kill: {kept:?}");

    let mut sipp = call.sipp;
    let _ = call.phone.join();
    let _ = sipp.wait(Duration::from_secs(5));
    gw.stop();
}

/// A route's `record_format = "mp3"` wins over `[recording]`'s default WAV: the
/// route's recording from the answer is an MP3 (`format`, `recording_urls.mp3`,
/// the `.mp3` file) that sox decodes to the call's length.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_records_in_its_own_record_format() {
    let dir = tempfile::tempdir().unwrap();
    let gw = Gateway::builder(dir.path())
        .trunk(Trunk::new("pbx").allow("127.0.0.0/8"))
        .agent("echo", "builtin:echo", "")
        .route(Route::new().agent("echo").record().extra("record_format = \"mp3\""))
        .recording("")
        .webhooks("")
        .api(TOKEN)
        .start();
    let script = Script {
        audio: speech()[..3 * 8000].to_vec(),
        digits: vec![],
        send_for: Duration::from_millis(3000),
        duration: Duration::from_millis(3300),
        gaps: vec![],
    };
    let (d, port) = (dir.path().to_path_buf(), gw.sip_port);
    let (code, report, _) = tokio::task::spawn_blocking(move || {
        place_calls_from(&d, port, "127.0.0.1", "+13125550100", 3500, vec![script], &["+15550002001".to_string()])
    })
    .await
    .unwrap();
    assert_eq!(code, 0, "{report}");
    let data =
        gw.event_data("call.recording.saved", |d| d.iter().any(|e| e["event_type"] == "call.recording.saved")).await;
    let saved = data.iter().find(|e| e["event_type"] == "call.recording.saved").unwrap();
    let p = &saved["payload"];
    assert_eq!(p["format"], "mp3", "{p}");
    assert!(p["recording_urls"]["mp3"].is_string() && p["recording_urls"]["wav"].is_null(), "{p}");
    let path = PathBuf::from(p["file_path"].as_str().unwrap());
    assert_eq!(path.extension().and_then(|e| e.to_str()), Some("mp3"), "{}", path.display());
    let secs = decode(&path, "mp3")[0].len() as f64 / 8000.0;
    assert!((2.0..6.0).contains(&secs), "the call's length decoded: {secs:.2} s");
    gw.stop();
}
