//! Noise suppression on real peers (issue 21 point 3): baresip calls the box
//! playing an espeak-ng sentence with sox's pink noise mixed under it (about
//! 6 dB speech-to-noise), and the route streams it to the Python Telnyx agent,
//! recorded. The same call runs on a box without suppression and on one whose
//! agent has `noise_suppression = "inbound"`; what the agent received and the
//! recording's caller channel are compared: the speech-to-noise ratio (energy
//! where the sentence is spoken against energy where only noise is) rises by
//! more than 10 dB with suppression, and the sentence is still there. The API's
//! `suppression_start` / `suppression_stop` answer as Telnyx's do and refuse
//! what sipbridge does not have.

mod common;
#[path = "e2e/gateway.rs"]
mod gateway;

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::agent::PyAgent;
use common::audio;
use gateway::*;

/// Silence (noise only) before the sentence and after it, in ms.
const LEAD_MS: u32 = 2000;
const TAIL_MS: u32 = 1500;

/// The caller's audio: (the noisy WAV baresip plays, the clean sentence).
fn noisy_caller(dir: &Path) -> (PathBuf, Vec<i16>) {
    let clean_wav = audio::espeak(
        dir,
        "clean",
        "en",
        "Hello, I am calling about my order. It has not arrived yet.",
        LEAD_MS,
        TAIL_MS,
    );
    let clean = audio::read_mono(&clean_wav);
    let noise_wav = dir.join("noise.wav");
    let secs = format!("{:.3}", audio::seconds(clean.len()));
    let out = Command::new("sox")
        .args(["-R", "-n", "-r", "8000", "-c", "1", "-b", "16", "-e", "signed-integer"])
        .arg(&noise_wav)
        .args(["synth", &secs, "pinknoise"])
        .output()
        .expect("sox is installed (scripts/setup-tests)");
    assert!(out.status.success(), "sox: {}", String::from_utf8_lossy(&out.stderr));
    let noise = audio::read_mono(&noise_wav);
    // Noise 6 dB under the speech (RMS over the spoken windows).
    let spoken = audio::speech_windows(&clean, 300.0);
    let speech_rms = energy_in(&clean, &spoken, 0).sqrt();
    let gain = speech_rms / 2.0 / audio::rms(&noise);
    let noisy: Vec<i16> = clean
        .iter()
        .zip(noise.iter().chain(std::iter::repeat(&0)))
        .map(|(&s, &n)| (f64::from(s) + f64::from(n) * gain).round().clamp(-32768.0, 32767.0) as i16)
        .collect();
    let path = dir.join("noisy.wav");
    let spec =
        hound::WavSpec { channels: 1, sample_rate: 8000, bits_per_sample: 16, sample_format: hound::SampleFormat::Int };
    let mut w = hound::WavWriter::create(&path, spec).unwrap();
    noisy.iter().for_each(|&s| w.write_sample(s).unwrap());
    w.finalize().unwrap();
    (path, clean)
}

/// Mean energy of `v` over `ranges` shifted by `shift` samples (parts outside
/// `v` are left out).
fn energy_in(v: &[i16], ranges: &[Range<usize>], shift: i64) -> f64 {
    let (mut sum, mut n) = (0f64, 0usize);
    for r in ranges {
        let (a, b) = (r.start as i64 + shift, r.end as i64 + shift);
        let (a, b) = (a.clamp(0, v.len() as i64) as usize, b.clamp(0, v.len() as i64) as usize);
        for &x in &v[a..b] {
            sum += f64::from(x).powi(2);
        }
        n += b - a;
    }
    sum / n.max(1) as f64
}

/// Where the clean sentence is (spoken windows) and where only noise is: the
/// lead from 0.6 s (RNNoise has heard the noise by then) to 0.2 s before the
/// first word, and the tail from 0.3 s after the last word.
fn windows(clean: &[i16]) -> (Vec<Range<usize>>, Vec<Range<usize>>) {
    let spoken = audio::speech_windows(clean, 300.0);
    let first = spoken.first().expect("espeak-ng spoke").start;
    let last = spoken.last().expect("espeak-ng spoke").end;
    let quiet = vec![4800..first.saturating_sub(1600), (last + 2400).min(clean.len())..clean.len() - 800];
    (spoken, quiet)
}

/// What one call left: the agent's inbound audio and the recording's left
/// (caller) channel, and their speech-to-noise ratios in dB after aligning each
/// on the clean sentence.
struct Heard {
    agent_snr: f64,
    recording_snr: f64,
    agent_ncc: f64,
}

/// One call of `noisy` through a box whose agent has `agent_extra`.
fn call_through(noisy: &Path, clean: &[i16], agent_extra: &str) -> Heard {
    let dir = tempfile::tempdir().unwrap();
    let agent = PyAgent::start(dir.path(), "agent", "silent", &[]);
    let gw = start(dir.path(), &telnyx_trunk_to_agent(&agent.url("/telnyx"), agent_extra));
    let (phone, _) = call_in(dir.path(), gw.sip_port, noisy, Duration::ZERO, "");
    phone.wait_event("CALL_CLOSED", WAIT).unwrap_or_else(|| panic!("call ended: {}", phone.log()));
    let conns = agent.wait_connections(1, WAIT);
    let msgs: Vec<&serde_json::Value> = conns[0]["messages"].as_array().unwrap().iter().collect();
    let streamed = audio::stream_audio(&msgs, "inbound");
    let ccid = msgs[1]["start"]["call_control_id"].as_str().expect("start names the call").to_string();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let bodies = rt.block_on(gw.unique_events("call.recording.saved", |b| {
        b.iter().any(|x| event_type(x) == "call.recording.saved" && payload(x)["call_control_id"] == ccid.as_str())
    }));
    let saved = bodies.iter().find(|b| event_type(b) == "call.recording.saved").unwrap();
    let path = PathBuf::from(payload(saved)["file_path"].as_str().expect("file_path"));
    let (_, left, _) = audio::read_stereo(&path);
    gw.stop();

    let (spoken, quiet) = windows(clean);
    let reference = audio::pcmu_round_trip(clean);
    let snr = |v: &[i16]| {
        let found = audio::find(&reference, v, -8000..16_000);
        let s = energy_in(v, &spoken, found.at);
        let n = energy_in(v, &quiet, found.at).max(1.0);
        (10.0 * (s / n).log10(), found)
    };
    let (agent_snr, found) = snr(&streamed);
    let (recording_snr, _) = snr(&left);
    eprintln!(
        "{agent_extra:?}: speech-to-noise at the agent {agent_snr:.1} dB (sentence {:.2} s in, ncc {:.2}), \
         in the recording {recording_snr:.1} dB",
        found.at_seconds(),
        found.ncc
    );
    Heard { agent_snr, recording_snr, agent_ncc: found.ncc }
}

#[test]
fn inbound_suppression_cleans_what_the_agent_and_the_recording_hear() {
    let dir = tempfile::tempdir().unwrap();
    let (noisy, clean) = noisy_caller(dir.path());
    let plain = call_through(&noisy, &clean, "");
    let suppressed = call_through(&noisy, &clean, "noise_suppression = \"inbound\"");
    eprintln!(
        "speech-to-noise gained: agent {:.1} dB, recording {:.1} dB",
        suppressed.agent_snr - plain.agent_snr,
        suppressed.recording_snr - plain.recording_snr
    );
    assert!(plain.agent_snr < 12.0, "the plain call carries the noise: {:.1} dB", plain.agent_snr);
    assert!(
        suppressed.agent_snr > plain.agent_snr + 10.0,
        "the agent hears the noise taken down: {:.1} → {:.1} dB",
        plain.agent_snr,
        suppressed.agent_snr
    );
    assert!(
        suppressed.recording_snr > plain.recording_snr + 10.0,
        "the recording's caller channel too: {:.1} → {:.1} dB",
        plain.recording_snr,
        suppressed.recording_snr
    );
    assert!(suppressed.agent_ncc > 0.5, "the sentence is still there: ncc {:.2}", suppressed.agent_ncc);
}

/// `suppression_start` / `suppression_stop` on a live call: 200 for Telnyx's
/// directions and its `Denoiser` engine, 400 naming the field for a bad
/// direction or an engine sipbridge does not have, 404 for an unknown call, and
/// 503 once `[rtp] max_suppressed_streams` (1 here) directions run; the gauge
/// in `/metrics` follows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_starts_and_stops_suppression_as_telnyx_does() {
    let dir = tempfile::tempdir().unwrap();
    let clean_wav = audio::espeak(dir.path(), "caller", "en", "Hello there.", 300, 8000);
    let agent = PyAgent::start(dir.path(), "agent", "echo", &[]);
    let gw = common::gateway::Gateway::builder(dir.path())
        .node_name("e2e")
        .blocks(&telnyx_trunk_to_agent(&agent.url("/telnyx"), ""))
        .recording("channels = \"dual\"")
        .rtp_extra("max_suppressed_streams = 1")
        .webhooks("retry_initial = \"200ms\"\nretry_max = \"1s\"")
        .api(TOKEN)
        .start();
    let sip_port = gw.sip_port;
    let d = dir.path().to_path_buf();
    let (phone, _) =
        tokio::task::spawn_blocking(move || call_in(&d, sip_port, &clean_wav, Duration::ZERO, "")).await.unwrap();
    let bodies = gw.unique_events("call.answered", |b| b.iter().any(|x| event_type(x) == "call.answered")).await;
    let answered = bodies.iter().find(|b| event_type(b) == "call.answered").unwrap();
    let ccid = payload(answered)["call_control_id"].as_str().unwrap().to_string();
    let api = gw.api();
    // The job applies a command after the API answers: wait for the gauge.
    let running = |n: f64| {
        let api = &api;
        async move {
            let deadline = std::time::Instant::now() + WAIT;
            while api.metric("sipbridge_noise_suppression_active").await != n {
                assert!(std::time::Instant::now() < deadline, "{n} suppressed directions in /metrics");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    let ok = |code: u16, answer: &serde_json::Value| code == 200 && answer["data"]["result"] == "ok";
    let (code, answer) = api.action(&ccid, "suppression_start", "{}").await;
    assert!(ok(code, &answer), "inbound by default: {code} {answer}");
    running(1.0).await;
    let (code, answer) = api.action(&ccid, "suppression_start", r#"{"direction":"both"}"#).await;
    assert_eq!((code, answer["errors"][0]["code"].as_str()), (503, Some("90040")), "at capacity: {answer}");
    for (body, pointer) in [
        (r#"{"direction":"sideways"}"#, "/direction"),
        (r#"{"direction":"inbound","noise_suppression_engine":"Krisp"}"#, "/noise_suppression_engine"),
    ] {
        let (code, answer) = api.action(&ccid, "suppression_start", body).await;
        assert_eq!(code, 400, "{body}: {answer}");
        assert_eq!(answer["errors"][0]["source"]["pointer"], pointer, "{answer}");
    }
    let (code, answer) = api.action(&ccid, "suppression_stop", "{}").await;
    assert!(ok(code, &answer), "{code} {answer}");
    running(0.0).await;
    let body = r#"{"direction":"outbound","noise_suppression_engine":"Denoiser"}"#;
    let (code, answer) = api.action(&ccid, "suppression_start", body).await;
    assert!(ok(code, &answer), "{code} {answer}");
    running(1.0).await;
    let (code, answer) = api.action("no-such-call", "suppression_start", "{}").await;
    assert_eq!(code, 404, "{answer}");
    drop(phone);
    gw.stop();
}
