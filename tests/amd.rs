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
//!   dials out (`POST /v2/calls` with `answering_machine_detection`) to SIPp UASes
//!   that answer and play a generated pcap of each case; the signed webhooks and
//!   `/v2/events` carry `call.machine.detection.ended` and
//!   `call.machine.greeting.ended` with Telnyx's fields.

mod common;

use std::path::{Path, PathBuf};
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
        audio.extend(silence(2000));
        let audio = with_noise(&audio, snr, 101 + i as u32);
        let secs = audio.len() as f64 / RATE as f64;
        let name = format!("machine {i} {voice} {wpm} wpm, noise {snr:?} dB, beep {beep_hz} Hz, {secs:.1} s");
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
    for c in &cases {
        let events = detect(Mode::DetectBeep, corpus_config(), &c.audio);
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
    assert!(correct * 100 >= cases.len() * 80, "{correct}/{} correct", cases.len());
    assert!(beeps * 100 >= machines * 80, "{beeps}/{machines} beeps");
}
