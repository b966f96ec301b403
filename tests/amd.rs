//! Issue 21 point 4: answering-machine detection (Telnyx `answering_machine_detection`).
//!
//! - **The corpus** (`the_generated_corpus_is_classified`): ≥ 20 variants made at
//!   test time — espeak-ng voices and rates, added noise, a G.711 round trip —
//!   of a person answering ("Hello?" then silence), a voicemail greeting of 6–12 s
//!   ending in a beep, and a silent line, run through the sans-IO detector
//!   (`sipbridge::media::amd`) exactly as the call feeds it (20 ms packets). It
//!   prints the confusion matrix (copied into docs/benchmarks.md) and asserts a
//!   floor.
//! - **Real calls** (`dialled_calls_report_human_machine_and_not_sure`): the box
//!   dials out (`POST /v2/calls` with `answering_machine_detection`: `detect`,
//!   `detect_beep`, `greeting_end`; and a `transfer` with `detect`) to SIPp UASes
//!   that answer and play a generated pcap of each case; the signed webhooks and
//!   `/v2/events` carry `call.machine.detection.ended` and
//!   `call.machine.greeting.ended` with Telnyx's fields.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::gateway::{Gateway, Trunk};
use common::{Sipp, free_even_block, free_port, scenario};
use serde_json::{Value, json};
use sipbridge::media::amd::{AmdConfig, AmdEvent, Detection, Detector, Greeting, Mode};
use sipbridge::media::g711::G711;

const TOKEN: &str = "test-token-0123456789";
const RATE: usize = 8000;

/// `text` spoken by espeak-ng `voice` at `wpm` words per minute, 8 kHz mono
/// PCM16 (resampled by sox).
fn speak(dir: &Path, name: &str, voice: &str, wpm: u32, text: &str) -> Vec<i16> {
    let raw = dir.join(format!("{name}.espeak.wav"));
    let out = Command::new("espeak-ng")
        .args(["-v", voice, "-s", &wpm.to_string(), "-w"])
        .arg(&raw)
        .arg(text)
        .output()
        .expect("espeak-ng is installed (scripts/setup-tests)");
    assert!(out.status.success(), "espeak-ng: {}", String::from_utf8_lossy(&out.stderr));
    let wav = dir.join(format!("{name}.wav"));
    let out = Command::new("sox")
        .arg(&raw)
        .args(["-r", "8000", "-c", "1", "-b", "16", "-e", "signed-integer"])
        .arg(&wav)
        .output()
        .expect("sox is installed (scripts/setup-tests)");
    assert!(out.status.success(), "sox: {}", String::from_utf8_lossy(&out.stderr));
    common::audio::read_mono(&wav)
}

fn silence(ms: usize) -> Vec<i16> {
    vec![0; RATE * ms / 1000]
}

fn tone(hz: f64, amplitude: f64, ms: usize) -> Vec<i16> {
    common::rtp::tone(hz, amplitude, ms)
}

/// Deterministic white noise (xorshift32), RMS `rms`.
fn noise(rms: f64, n: usize, seed: &mut u32) -> Vec<f64> {
    // Uniform in ±a has RMS a/√3.
    let a = rms * 3f64.sqrt();
    (0..n)
        .map(|_| {
            *seed ^= *seed << 13;
            *seed ^= *seed >> 17;
            *seed ^= *seed << 5;
            (f64::from(*seed) / f64::from(u32::MAX) * 2.0 - 1.0) * a
        })
        .collect()
}

/// `audio` with white noise `snr_db` below its speech level (RMS of the samples
/// above a tenth of the peak), `None` = clean.
fn with_noise(audio: &[i16], snr_db: Option<f64>, seed: u32) -> Vec<i16> {
    let Some(snr) = snr_db else { return audio.to_vec() };
    let peak = audio.iter().map(|s| s.unsigned_abs()).max().unwrap_or(0) as f64;
    let loud: Vec<f64> = audio.iter().map(|&s| f64::from(s)).filter(|s| s.abs() > peak / 10.0).collect();
    let speech_rms = (loud.iter().map(|s| s * s).sum::<f64>() / loud.len().max(1) as f64).sqrt();
    let mut seed = seed;
    let n = noise(speech_rms / 10f64.powf(snr / 20.0), audio.len(), &mut seed);
    audio.iter().zip(n).map(|(&s, x)| (f64::from(s) + x).clamp(-32768.0, 32767.0) as i16).collect()
}

/// What the case is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Truth {
    Human,
    Machine,
    Silence,
}

impl Truth {
    fn expected(self) -> Detection {
        match self {
            Truth::Human => Detection::Human,
            Truth::Machine => Detection::Machine,
            Truth::Silence => Detection::NotSure,
        }
    }
}

struct Case {
    name: String,
    truth: Truth,
    audio: Vec<i16>,
}

const HELLOS: &[&str] = &[
    "Hello?",
    "Hello?",
    "Yes, hello?",
    "Hi, who is this?",
    "Hello, Smith residence.",
    "Yeah?",
    "Hello, this is Maria.",
    "Good morning?",
    "Hello, speaking.",
    "Hi there?",
];

const GREETINGS: &[&str] = &[
    "Hi, you have reached John Smith. I am not available to take your call right now. \
     Please leave a message after the tone.",
    "Hello, you've reached the voicemail of Maria Garcia. Sorry I missed you. \
     Leave your name, number and a short message, and I will call you back.",
    "The person you are calling is not available. Please leave your message after the tone. \
     When you are finished, you may hang up.",
    "Thank you for calling Acme Plumbing. Our office is closed. Please leave a message \
     with your name and phone number after the beep, and we will return your call.",
];

const VOICES: &[&str] = &["en-us", "en-gb+f3", "en-gb-scotland+m3", "en-029+f4", "en-gb-x-rp+m7", "en-us+f2"];

/// The corpus: 10 people, 12 machines, 8 silent lines, each through G.711 (μ-law).
fn corpus(dir: &Path) -> Vec<Case> {
    let mut cases = Vec::new();
    let snrs = [None, Some(30.0), Some(20.0), Some(15.0)];
    for (i, text) in HELLOS.iter().enumerate() {
        let voice = VOICES[i % VOICES.len()];
        let wpm = [140, 175, 200, 160][i % 4];
        let snr = snrs[i % snrs.len()];
        let mut audio = silence(200 + 100 * (i % 5));
        audio.extend(speak(dir, &format!("human{i}"), voice, wpm, text));
        audio.extend(silence(3000));
        let audio = with_noise(&audio, snr, 17 + i as u32);
        let name = format!("human {i} {voice} {wpm} wpm, noise {snr:?} dB: {text:?}");
        cases.push(Case { name, truth: Truth::Human, audio });
    }
    for i in 0..12 {
        let text = GREETINGS[i % GREETINGS.len()];
        let voice = VOICES[(i + 2) % VOICES.len()];
        let wpm = [160, 180, 200, 170][i % 4];
        let snr = snrs[(i + 1) % snrs.len()];
        let beep_hz = [1000.0, 1000.0, 800.0, 1400.0, 440.0, 950.0][i % 6];
        let mut audio = silence(300 + 150 * (i % 4));
        audio.extend(speak(dir, &format!("machine{i}"), voice, wpm, text));
        audio.extend(silence(300 + 100 * (i % 5)));
        audio.extend(tone(beep_hz, 6000.0, 400 + 100 * (i % 5)));
        let beep_end_ms = audio.len() * 1000 / RATE;
        audio.extend(silence(2000));
        let audio = with_noise(&audio, snr, 101 + i as u32);
        let secs = audio.len() as f64 / RATE as f64;
        let name = format!(
            "machine {i} {voice} {wpm} wpm, noise {snr:?} dB, beep {beep_hz} Hz ending at {beep_end_ms} ms, {secs:.1} s"
        );
        cases.push(Case { name, truth: Truth::Machine, audio });
    }
    for i in 0..8 {
        // Digital silence, line hiss of several levels, a mains hum.
        let mut seed = 900 + i as u32;
        let n = RATE * 5;
        let audio: Vec<i16> = match i {
            0 => silence(5000),
            1..=5 => noise([0.0, 10.0, 40.0, 90.0, 150.0, 200.0][i], n, &mut seed).iter().map(|&x| x as i16).collect(),
            _ => tone(60.0 * (i - 5) as f64, 300.0, 5000),
        };
        cases.push(Case { name: format!("silence {i}"), truth: Truth::Silence, audio });
    }
    for c in &mut cases {
        c.audio = common::audio::pcmu_round_trip(&c.audio);
    }
    cases
}

/// The detector's events for `audio` fed as the call feeds it: 20 ms packets
/// on time, then nothing (ticks) until it is done.
fn detect(mode: Mode, cfg: AmdConfig, audio: &[i16]) -> Vec<AmdEvent> {
    let mut d = Detector::new(mode, cfg, 8000);
    let mut out = Vec::new();
    let frame = Duration::from_millis(20);
    let mut k = 0u32;
    for chunk in audio.chunks(160) {
        d.push(frame * k, chunk);
        out.extend(std::iter::from_fn(|| d.poll_event()));
        k += 1;
    }
    for _ in 0..5000 {
        if d.is_done() {
            break;
        }
        d.advance(frame * k);
        out.extend(std::iter::from_fn(|| d.poll_event()));
        k += 1;
    }
    out
}

/// The config the corpus runs with: Telnyx's defaults, with the greeting's end
/// looked for up to 15 s after `machine` (the greetings are 6–12 s long).
fn corpus_config() -> AmdConfig {
    AmdConfig { greeting_total_analysis_time_millis: 15_000, ..AmdConfig::default() }
}

#[test]
fn the_generated_corpus_is_classified() {
    let dir = tempfile::tempdir().unwrap();
    let cases = corpus(dir.path());
    assert!(cases.len() >= 20);
    let truths = [Truth::Human, Truth::Machine, Truth::Silence];
    let results = [Detection::Human, Detection::Machine, Detection::NotSure];
    let mut matrix = [[0usize; 3]; 3];
    let (mut beeps, mut correct) = (0, 0);
    let mut lines = Vec::new();
    let (mut spent, mut audio_secs) = (Duration::ZERO, 0.0);
    for c in &cases {
        let t0 = std::time::Instant::now();
        let events = detect(Mode::DetectBeep, corpus_config(), &c.audio);
        spent += t0.elapsed();
        audio_secs += c.audio.len() as f64 / RATE as f64;
        let (result, at) = events
            .iter()
            .find_map(|e| match e {
                AmdEvent::DetectionEnded(d, at) => Some((*d, *at)),
                _ => None,
            })
            .expect("a detection result always comes");
        let beep = events.iter().find_map(|e| match e {
            AmdEvent::GreetingEnded(Greeting::BeepDetected, at) => Some(*at),
            _ => None,
        });
        let row = truths.iter().position(|t| *t == c.truth).unwrap();
        let col = results.iter().position(|r| *r == result).unwrap();
        matrix[row][col] += 1;
        if result == c.truth.expected() {
            correct += 1;
        }
        if c.truth == Truth::Machine && beep.is_some() {
            beeps += 1;
        }
        // A beep is only ever found on a machine's line.
        assert!(beep.is_none() || c.truth == Truth::Machine, "{}: {events:?}", c.name);
        lines.push(format!(
            "{:<9} after {:>5} ms{}  {}",
            result.as_str(),
            at.as_millis(),
            beep.map(|b| format!(", beep at {:>5} ms", b.as_millis())).unwrap_or_default(),
            c.name
        ));
    }
    let machines = cases.iter().filter(|c| c.truth == Truth::Machine).count();
    println!("{}", lines.join("\n"));
    println!("\n| truth \\ result | human | machine | not_sure |\n|---|---|---|---|");
    for (t, row) in ["human", "machine", "silence"].iter().zip(matrix) {
        println!("| {t} | {} | {} | {} |", row[0], row[1], row[2]);
    }
    println!("\ncorrect: {correct}/{} ; beeps found: {beeps}/{machines} machines", cases.len());
    println!(
        "detector CPU: {:.1} µs per second of audio ({audio_secs:.0} s of audio in {:.1} ms, this build)",
        spent.as_secs_f64() * 1e6 / audio_secs,
        spent.as_secs_f64() * 1e3
    );
    assert!(correct * 100 >= cases.len() * 80, "{correct}/{} correct", cases.len());
    assert!(beeps * 100 >= machines * 80, "{beeps}/{machines} beeps");
}

/// Writes `audio` as a pcap of PCMU RTP (payload type 0, 20 ms packets, 20 ms
/// apart) in Ethernet/IPv4/UDP frames, the format SIPp's `play_pcap_audio`
/// plays (little-endian microsecond pcap, link type Ethernet).
fn write_pcap(path: &Path, audio: &[i16]) {
    let mut out = Vec::new();
    // Global header: magic, version 2.4, zone, sigfigs, snaplen, Ethernet.
    out.extend(0xa1b2_c3d4u32.to_le_bytes());
    out.extend(2u16.to_le_bytes());
    out.extend(4u16.to_le_bytes());
    for w in [0u32, 0, 65_535, 1] {
        out.extend(w.to_le_bytes());
    }
    for (k, chunk) in audio.chunks(160).enumerate() {
        let mut payload = [0xffu8; 160];
        G711::Pcmu.encode(chunk, &mut payload);
        let mut rtp = vec![0x80, 0x00];
        rtp.extend((k as u16).to_be_bytes());
        rtp.extend((160 * k as u32).to_be_bytes());
        rtp.extend(0x5eed_0001u32.to_be_bytes());
        rtp.extend(payload);
        let udp_len = 8 + rtp.len() as u16;
        let ip_len = 20 + udp_len;
        let mut frame = vec![0, 1, 2, 3, 4, 5, 0, 1, 2, 3, 4, 6, 0x08, 0x00];
        frame.extend([0x45, 0]);
        frame.extend(ip_len.to_be_bytes());
        frame.extend([0, 0, 0, 0, 64, 17, 0, 0, 127, 0, 0, 3, 127, 0, 0, 1]);
        frame.extend(6000u16.to_be_bytes());
        frame.extend(6002u16.to_be_bytes());
        frame.extend(udp_len.to_be_bytes());
        frame.extend([0, 0]);
        frame.extend(&rtp);
        let usecs = 20_000 * k as u64;
        out.extend(((usecs / 1_000_000) as u32).to_le_bytes());
        out.extend(((usecs % 1_000_000) as u32).to_le_bytes());
        out.extend((frame.len() as u32).to_le_bytes());
        out.extend((frame.len() as u32).to_le_bytes());
        out.extend(frame);
    }
    std::fs::write(path, out).unwrap();
}

/// A SIPp UAS on 127.0.0.3 that answers and plays `audio`; its SIP port.
fn called_party(dir: &Path, name: &str, audio: &[i16]) -> (Sipp, u16) {
    let d = dir.join(name);
    std::fs::create_dir_all(d.join("pcap")).unwrap();
    write_pcap(&d.join("pcap/amd.pcap"), audio);
    let port = free_port();
    let args: Vec<String> = [
        "-sf",
        &scenario("uas_amd.xml").display().to_string(),
        "-i",
        "127.0.0.3",
        "-p",
        &port.to_string(),
        "-mp",
        &free_even_block(4).to_string(),
        "-m",
        "1",
        "-timeout",
        "60s",
        "-timeout_error",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    (Sipp::start(&d, name, &args), port)
}

/// The AMD events (`call.machine.*`) among webhook or socket event bodies' `data`.
fn machine_events(data: &[Value]) -> Vec<&Value> {
    data.iter().filter(|d| d["event_type"].as_str().is_some_and(|t| t.starts_with("call.machine."))).collect()
}

fn has(data: &[Value], id: &str, event_type: &str) -> bool {
    data.iter().any(|d| d["event_type"] == event_type && d["payload"]["call_control_id"] == id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dialled_calls_report_human_machine_and_not_sure() {
    use futures_util::StreamExt;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // The three called parties: a person, a voicemail (≈ 9 s greeting, then a
    // 1 kHz beep), a silent line (reached by a transfer).
    let mut hello = silence(300);
    hello.extend(speak(d, "hello", "en-us", 160, "Hello?"));
    hello.extend(silence(6000));
    let mut voicemail = silence(300);
    voicemail.extend(speak(d, "greeting", "en-gb+f3", 170, GREETINGS[0]));
    voicemail.extend(silence(500));
    let greeting_end = voicemail.len();
    voicemail.extend(tone(1000.0, 6000.0, 600));
    voicemail.extend(silence(4000));
    let greeting_secs = greeting_end as f64 / RATE as f64;
    assert!((6.0..=12.0).contains(&greeting_secs), "the greeting is 6–12 s: {greeting_secs}");
    let (mut human_uas, human_port) = called_party(d, "human", &hello);
    let (mut machine_uas, machine_port) = called_party(d, "machine", &voicemail);
    let (mut machine2_uas, machine2_port) = called_party(d, "machine2", &voicemail);
    let (mut silent_uas, silent_port) = called_party(d, "silent", &silence(10_000));

    let gw = Gateway::builder(d)
        .rtp_range(45_000, 49_999)
        .trunk(Trunk::new("pbx").allow("127.0.0.1/32"))
        .trunk(Trunk::new("human").proxy(&format!("sip:127.0.0.3:{human_port}")))
        .trunk(Trunk::new("machine").proxy(&format!("sip:127.0.0.3:{machine_port}")))
        .trunk(Trunk::new("machine2").proxy(&format!("sip:127.0.0.3:{machine2_port}")))
        .trunk(Trunk::new("silent").proxy(&format!("sip:127.0.0.3:{silent_port}")))
        .agent("echo", "builtin:echo", "")
        .route(common::gateway::Route::new().agent("echo"))
        .webhooks("")
        .api(TOKEN)
        .start();
    let api = gw.api();

    // The event socket, open before the calls.
    let api_port = gw.api_port();
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", api_port)).await.unwrap();
    let mut req = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(format!(
        "ws://127.0.0.1:{api_port}/v2/events"
    ))
    .unwrap();
    req.headers_mut().insert("Authorization", format!("Bearer {TOKEN}").parse().unwrap());
    let (mut socket, _) = tokio_tungstenite::client_async(req, tcp).await.expect("event socket");

    // Bodies are checked field by field: 400 naming the field.
    let dial = |connection: &str| json!({"connection_id": connection, "to": "+15550001000", "from": "+13125550100", "timeout_secs": 20});
    for (amd, config, pointer) in [
        (json!("premium"), Value::Null, "/answering_machine_detection"),
        (json!("maybe"), Value::Null, "/answering_machine_detection"),
        (json!(3), Value::Null, "/answering_machine_detection"),
        (json!("detect"), json!("fast"), "/answering_machine_detection_config"),
        (
            json!("detect"),
            json!({"total_analysis_time_millis": 0}),
            "/answering_machine_detection_config/total_analysis_time_millis",
        ),
        (json!("detect"), json!({"silence_threshold": 40000}), "/answering_machine_detection_config/silence_threshold"),
        (
            json!("detect"),
            json!({"maximum_number_of_words": "five"}),
            "/answering_machine_detection_config/maximum_number_of_words",
        ),
        (json!("detect"), json!({"listen_harder": true}), "/answering_machine_detection_config/listen_harder"),
        // Checked even with detection off.
        (Value::Null, json!({"silence_threshold": 0}), "/answering_machine_detection_config/silence_threshold"),
    ] {
        let mut body = dial("human");
        body["answering_machine_detection"] = amd;
        body["answering_machine_detection_config"] = config;
        let (code, e) = api.post("/v2/calls", body.clone()).await;
        assert_eq!((code, e["errors"][0]["source"]["pointer"].as_str()), (400, Some(pointer)), "{body}: {e}");
    }

    // (a) a person, (b) a voicemail: dialled with detection.
    let mut body = dial("human");
    body["answering_machine_detection"] = json!("detect");
    body["client_state"] = json!("aHVtYW4=");
    let (code, human) = api.post("/v2/calls", body).await;
    assert_eq!(code, 200, "{human}");
    let mut body = dial("machine");
    body["answering_machine_detection"] = json!("detect_beep");
    body["answering_machine_detection_config"] =
        json!({"greeting_total_analysis_time_millis": 20_000, "after_greeting_silence_millis": 800});
    let (code, machine) = api.post("/v2/calls", body).await;
    assert_eq!(code, 200, "{machine}");
    // The same voicemail with greeting_end: its beep ends the greeting too.
    let mut body = dial("machine2");
    body["answering_machine_detection"] = json!("greeting_end");
    body["answering_machine_detection_config"] = json!({"greeting_total_analysis_time_millis": 20_000});
    let (code, machine2) = api.post("/v2/calls", body).await;
    assert_eq!(code, 200, "{machine2}");
    let human = human["data"]["call_control_id"].as_str().unwrap().to_string();
    let machine = machine["data"]["call_control_id"].as_str().unwrap().to_string();
    let machine2 = machine2["data"]["call_control_id"].as_str().unwrap().to_string();

    // (c) a silent line, reached by transferring an incoming call.
    let sip = gw.sip_port;
    let d2 = d.to_path_buf();
    let caller = tokio::task::spawn_blocking(move || {
        let s = common::rtp::Script {
            audio: vec![],
            digits: vec![],
            gaps: vec![],
            send_for: Duration::from_secs(25),
            duration: Duration::from_secs(25),
        };
        common::rtp::place_calls_from(&d2, sip, "127.0.0.1", "+13125550100", 30_000, vec![s], &["+14155550123".into()])
    });
    let calls = api
        .wait_for("/v2/calls", "the incoming call answered", |b| {
            b["data"]
                .as_array()
                .is_some_and(|a| a.iter().any(|c| c["from"] == "+14155550123" && c["state"] == "answered"))
        })
        .await;
    let incoming = calls["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["from"] == "+14155550123")
        .and_then(|c| c["call_control_id"].as_str())
        .unwrap()
        .to_string();
    let (code, e) = api
        .action(
            &incoming,
            "transfer",
            &json!({"to": "+15550002000", "connection_id": "silent", "answering_machine_detection": "bogus"})
                .to_string(),
        )
        .await;
    assert_eq!(
        (code, e["errors"][0]["source"]["pointer"].as_str()),
        (400, Some("/answering_machine_detection")),
        "{e}"
    );
    let (code, e) = api
        .action(
            &incoming,
            "transfer",
            &json!({"to": "+15550002000", "connection_id": "silent", "answering_machine_detection": "detect"})
                .to_string(),
        )
        .await;
    assert_eq!(code, 200, "{e}");

    // The results, as signed webhooks.
    let hooks = gw
        .event_data("the three detections and the beep", |e| {
            machine_events(e).iter().filter(|d| d["event_type"] == "call.machine.detection.ended").count() == 4
                && has(e, &machine, "call.machine.greeting.ended")
                && has(e, &machine2, "call.machine.greeting.ended")
        })
        .await;
    let amd: Vec<&Value> = machine_events(&hooks);
    let result = |id: &str, t: &str| -> Vec<String> {
        amd.iter()
            .filter(|d| d["event_type"] == t && d["payload"]["call_control_id"] == id)
            .map(|d| d["payload"]["result"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(result(&human, "call.machine.detection.ended"), ["human"], "{amd:#?}");
    assert_eq!(result(&machine, "call.machine.detection.ended"), ["machine"], "{amd:#?}");
    assert_eq!(result(&machine, "call.machine.greeting.ended"), ["beep_detected"], "{amd:#?}");
    assert_eq!(result(&machine2, "call.machine.detection.ended"), ["machine"], "{amd:#?}");
    assert_eq!(result(&machine2, "call.machine.greeting.ended"), ["beep_detected"], "{amd:#?}");
    let transferred: Vec<&&Value> = amd
        .iter()
        .filter(|d| ![&human, &machine, &machine2].iter().any(|id| d["payload"]["call_control_id"] == id.as_str()))
        .collect();
    assert_eq!(transferred.len(), 1, "{amd:#?}");
    assert_eq!(transferred[0]["event_type"], "call.machine.detection.ended");
    assert_eq!(transferred[0]["payload"]["result"], "not_sure");
    assert_eq!(transferred[0]["payload"]["to"], "+15550002000");
    // Telnyx's payload fields.
    let h = amd.iter().find(|d| d["payload"]["call_control_id"] == human).unwrap();
    assert_eq!(h["record_type"], "event");
    for key in ["call_control_id", "call_leg_id", "call_session_id", "connection_id", "from", "to", "result"] {
        assert!(h["payload"][key].is_string(), "{key} in {h:#}");
    }
    assert_eq!(h["payload"]["client_state"], "aHVtYW4=");
    assert_eq!(h["payload"]["connection_id"], "human");
    // The beep is reported when it stops: after the greeting, within 2 s of its end.
    let answered_at = |id: &str| {
        hooks
            .iter()
            .find(|d| d["event_type"] == "call.answered" && d["payload"]["call_control_id"] == id)
            .and_then(|d| humantime::parse_rfc3339(d["occurred_at"].as_str()?).ok())
            .expect("call.answered")
    };
    let occurred = |d: &Value| humantime::parse_rfc3339(d["occurred_at"].as_str().unwrap()).unwrap();
    let beep = amd
        .iter()
        .find(|d| d["event_type"] == "call.machine.greeting.ended" && d["payload"]["call_control_id"] == machine)
        .unwrap();
    let after = occurred(beep).duration_since(answered_at(&machine)).unwrap().as_secs_f64();
    assert!((greeting_secs..greeting_secs + 2.5).contains(&after), "beep reported {after:.2} s after the answer");
    let decided = amd
        .iter()
        .find(|d| d["event_type"] == "call.machine.detection.ended" && d["payload"]["call_control_id"] == machine)
        .unwrap();
    let after = occurred(decided).duration_since(answered_at(&machine)).unwrap().as_secs_f64();
    assert!(after < 3.7, "machine decided {after:.2} s after the answer (total_analysis_time 3.5 s)");

    // Hang up: every party sees its BYE; no detection event comes later.
    for id in [&human, &machine, &machine2, &incoming] {
        let (code, e) = api.action(id, "hangup", "{}").await;
        assert_eq!(code, 200, "{e}");
    }
    for (uas, name) in [
        (&mut human_uas, "human"),
        (&mut machine_uas, "machine"),
        (&mut machine2_uas, "machine2"),
        (&mut silent_uas, "silent"),
    ] {
        assert_eq!(uas.wait(Duration::from_secs(20)), 0, "{name}: {}", uas.report());
    }
    let (code, report, _) = caller.await.unwrap();
    assert_eq!(code, 0, "{report}");

    // The event socket carried the same AMD events.
    let mut seen = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while seen.len() < amd.len() && std::time::Instant::now() < deadline {
        let Ok(Some(Ok(msg))) = tokio::time::timeout(Duration::from_secs(5), socket.next()).await else { break };
        let Ok(v) = serde_json::from_str::<Value>(msg.to_text().unwrap_or_default()) else { continue };
        if v["data"]["event_type"].as_str().is_some_and(|t| t.starts_with("call.machine.")) {
            seen.push(v["data"].clone());
        }
    }
    let ids = |v: &[&Value]| {
        let mut ids: Vec<String> = v.iter().map(|d| d["id"].as_str().unwrap().to_string()).collect();
        ids.sort();
        ids
    };
    assert_eq!(ids(&seen.iter().collect::<Vec<_>>()), ids(&amd), "the socket carried the same events");
}
