//! Call recording end to end (issue 7), with the real daemon binary and real peers:
//! SIPp places the calls (signalling), the test's RTP phone (`common::rtp`) sends
//! known speech as PCMU — the A-law announcement shipped with SIPp
//! (`/usr/share/sip-tester/g711a.pcap`), decoded — to the built-in echo agent,
//! which plays it back 200 ms later. The WAV files are read with `hound` and
//! checked with `sox`; webhooks go to the Python receiver, which verifies their
//! signatures.
//!
//! What is checked: the left channel is the caller's audio (sample-level
//! correlation after alignment, and bit-exact G.711 round trip), the right channel
//! its echo 200 ms later, the duration is the recorded span (webhook times, SIPp's
//! own ACK → BYE timestamps, `sox --i -D`); a 2 s hold is 2 s of silence, not a
//! gap; `kill -9` mid-call leaves a `.wav.part` that the restarted daemon repairs
//! into a file `sox` reads, holding all audio up to one second before the kill; a
//! recording directory the daemon cannot write leaves the call working.

mod common;
#[path = "receivers/harness.rs"]
mod harness;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use common::rtp::{Packet, RtpPhone, Script, answers_in_trace, offers_in_trace, place_calls};
use common::*;
use harness::{Receiver, delivered, keygen, rejected};
use nix::sys::signal::Signal;
use serde_json::Value;
use sipbridge::media::g711::G711;

const WAIT: Duration = Duration::from_secs(30);
/// Samples per 20 ms packet at 8 kHz.
const PKT: usize = 160;
/// The echo agent's delay.
const ECHO: Duration = Duration::from_millis(200);

// ---------------------------------------------------------------------------
// Known audio

/// The speech of SIPp's `g711a.pcap` (7.08 s of A-law RTP in Ethernet/IPv4/UDP
/// frames), decoded to PCM16 8 kHz.
fn speech() -> Vec<i16> {
    let pcap = std::fs::read("/usr/share/sip-tester/g711a.pcap").expect("sip-tester's g711a.pcap");
    assert_eq!(&pcap[..4], &[0xd4, 0xc3, 0xb2, 0xa1], "little-endian microsecond pcap");
    assert_eq!(u32::from_le_bytes(pcap[20..24].try_into().unwrap()), 1, "Ethernet link type");
    let mut out = Vec::new();
    let mut off = 24;
    while off + 16 <= pcap.len() {
        let incl = u32::from_le_bytes(pcap[off + 8..off + 12].try_into().unwrap()) as usize;
        let frame = &pcap[off + 16..off + 16 + incl];
        off += 16 + incl;
        let ip = &frame[14..];
        let udp = &ip[usize::from(ip[0] & 0x0f) * 4..];
        let rtp = &udp[8..];
        let head = 12 + 4 * usize::from(rtp[0] & 0x0f);
        assert_eq!(rtp[1] & 0x7f, 8, "PCMA");
        out.extend(rtp[head..].iter().map(|&b| G711::Pcma.decode_sample(b)));
    }
    out
}

/// What the box receives from `audio` sent as PCMU: the μ-law round trip.
fn pcmu_round_trip(audio: &[i16]) -> Vec<i16> {
    audio.iter().map(|&s| G711::Pcmu.decode_sample(G711::Pcmu.encode_sample(s))).collect()
}

fn script(audio: Vec<i16>, send_ms: u64, total_ms: u64, gaps: Vec<(usize, usize)>) -> Script {
    Script {
        audio,
        digits: vec![],
        send_for: Duration::from_millis(send_ms),
        duration: Duration::from_millis(total_ms),
        gaps,
    }
}

// ---------------------------------------------------------------------------
// Signal measurements

/// Normalized cross-correlation of `a[i]` and `b[i + lag]` over their overlap
/// (`lag` may be negative), and the overlap length.
fn ncc_at(a: &[i16], b: &[i16], lag: i64) -> (f64, usize) {
    let (a0, b0) = if lag >= 0 { (0usize, lag as usize) } else { ((-lag) as usize, 0usize) };
    if a0 >= a.len() || b0 >= b.len() {
        return (0.0, 0);
    }
    let n = (a.len() - a0).min(b.len() - b0);
    let (mut ab, mut aa, mut bb) = (0f64, 0f64, 0f64);
    for i in 0..n {
        let (x, y) = (f64::from(a[a0 + i]), f64::from(b[b0 + i]));
        ab += x * y;
        aa += x * x;
        bb += y * y;
    }
    if aa == 0.0 || bb == 0.0 { (0.0, n) } else { (ab / (aa * bb).sqrt(), n) }
}

/// The lag in `lags` at which `b` best matches `excerpt` of `a` (correlating only
/// the excerpt keeps the search cheap), and the excerpt's correlation there.
fn align(a: &[i16], excerpt: std::ops::Range<usize>, b: &[i16], lags: std::ops::Range<i64>) -> (i64, f64) {
    let ex = &a[excerpt.clone()];
    let mut best = (lags.start, f64::MIN);
    for lag in lags {
        let at = excerpt.start as i64 + lag;
        if at < 0 || at as usize + ex.len() > b.len() {
            continue;
        }
        let (c, _) = ncc_at(ex, &b[at as usize..at as usize + ex.len()], 0);
        if c > best.1 {
            best = (lag, c);
        }
    }
    best
}

/// How `a[range]` is found in `b`, 0.5 s at a time.
#[derive(Debug)]
struct Matched {
    /// Pooled normalized correlation of all segments at their own lags.
    ncc: f64,
    /// Lowest segment correlation.
    min_ncc: f64,
    /// Fraction of the samples equal to the sample (bit-exact).
    exact: f64,
    /// Each segment's (start in `a`, lag into `b`).
    lags: Vec<(usize, i64)>,
}

/// `a[range]` cut into 0.5 s segments (those with audio), each aligned with `b`
/// on its own within ±`search` samples of the previous segment's lag (the first:
/// of `lag0`). Per-segment alignment keeps the check sample-exact while
/// tolerating a scheduling hiccup of the test's own phone thread under load
/// (a packet more than 60 ms late), which the recorder rightly follows.
fn match_segments(a: &[i16], range: std::ops::Range<usize>, b: &[i16], lag0: i64, search: i64) -> Matched {
    const SEG: usize = 4000;
    let (mut ab, mut aa, mut bb, mut equal, mut total) = (0f64, 0f64, 0f64, 0usize, 0usize);
    let (mut min_ncc, mut lags, mut prev) = (1.0f64, Vec::new(), lag0);
    for s in range.clone().step_by(SEG) {
        let seg = s..(s + SEG).min(range.end);
        if seg.len() < SEG / 2 || rms(&a[seg.clone()]) < 30.0 {
            continue;
        }
        let (lag, c) = align(a, seg.clone(), b, prev - search..prev + search + 1);
        let from = seg.start as i64 + lag;
        if c == f64::MIN || from < 0 || from as usize + seg.len() > b.len() {
            break;
        }
        let y = &b[from as usize..from as usize + seg.len()];
        for (&x, &y) in a[seg.clone()].iter().zip(y) {
            let (x, y) = (f64::from(x), f64::from(y));
            (ab, aa, bb) = (ab + x * y, aa + x * x, bb + y * y);
        }
        equal += a[seg.clone()].iter().zip(y).filter(|(x, y)| x == y).count();
        total += seg.len();
        min_ncc = min_ncc.min(c);
        lags.push((seg.start, lag));
        prev = lag;
    }
    let ncc = if aa == 0.0 || bb == 0.0 { 0.0 } else { ab / (aa * bb).sqrt() };
    Matched { ncc, min_ncc, exact: equal as f64 / total.max(1) as f64, lags }
}

/// The middle value of the segments' lags.
fn median_lag(m: &Matched) -> i64 {
    let mut v: Vec<i64> = m.lags.iter().map(|l| l.1).collect();
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or(i64::MIN)
}

fn rms(v: &[i16]) -> f64 {
    (v.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>() / v.len().max(1) as f64).sqrt()
}

/// A stereo PCM16 recording split into (left, right), with its spec.
fn read_wav(path: &Path) -> (hound::WavSpec, Vec<i16>, Vec<i16>) {
    let mut r = hound::WavReader::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let spec = r.spec();
    let s: Vec<i16> = r.samples::<i16>().map(|x| x.unwrap()).collect();
    let left = s.iter().step_by(2).copied().collect();
    let right = s.iter().skip(1).step_by(2).copied().collect();
    (spec, left, right)
}

/// `sox --i` of a file: (duration in seconds from `-D`, the full report).
fn sox_info(path: &Path) -> (f64, String) {
    let run = |arg: &str| {
        let out = std::process::Command::new("sox").arg("--i").arg(arg).arg(path).output().expect("sox is installed");
        assert!(out.status.success(), "sox reads {}: {}", path.display(), String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let d: f64 = run("-D").trim().parse().expect("sox --i -D prints seconds");
    (d, run("-V1"))
}

/// The time SIPp logged for the first message it sent that starts with `start`
/// (its trace: `----- 2026-11-22 04:06:44.820604` then `UDP message sent`).
fn sipp_sent_at(trace: &str, start: &str) -> SystemTime {
    let lines: Vec<&str> = trace.lines().collect();
    for (i, l) in lines.iter().enumerate() {
        let Some(stamp) = l.strip_prefix("-----").map(|r| r.trim_start_matches('-').trim()) else { continue };
        let sent = lines.get(i + 1).is_some_and(|n| n.contains("message sent"));
        let first = lines[i + 1..].iter().skip(1).find(|n| !n.trim().is_empty());
        if sent && first.is_some_and(|f| f.trim_start().starts_with(start)) {
            // SIPp writes local time; only differences are used (same zone).
            return humantime::parse_rfc3339(&format!("{}Z", stamp.replace(' ', "T")))
                .unwrap_or_else(|e| panic!("SIPp time {stamp:?}: {e}"));
        }
    }
    panic!("SIPp sent no {start}");
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

// ---------------------------------------------------------------------------
// The gateway

struct Gateway {
    daemon: Daemon,
    port: u16,
    config: PathBuf,
    recordings: PathBuf,
    receiver: Option<Receiver>,
}

impl Gateway {
    /// The daemon with the built-in echo agent on a recorded route, recordings in
    /// `recordings`, webhooks to a verifying receiver when `webhooks`.
    fn start(dir: &Path, recordings: &Path, webhooks: bool) -> Self {
        let receiver = webhooks.then(|| {
            let (key, public) = keygen(dir);
            (Receiver::start(dir, "hook", &public, &[]), key)
        });
        let hooks = match &receiver {
            Some((r, key)) => format!("[webhooks]\nurl = \"{}\"\nsigning_key = \"{}\"\n", r.url(), key.display()),
            None => String::new(),
        };
        let port = free_port();
        let base = (free_even_block(2) & !0x3ff).max(20_000);
        let config = dir.join("sipbridge.toml");
        std::fs::write(
            &config,
            format!(
                "[node]\ndata_dir = \"{data}\"\nshutdown_grace = \"1s\"\n[sip]\nlisten = [\"udp://127.0.0.1:{port}\"]\n\
                 [rtp]\nport_range = \"{lo}-{hi}\"\n[[trunk]]\nname = \"carrier\"\ninbound_allow = [\"127.0.0.0/8\"]\n\
                 [[agent]]\nname = \"echo\"\nurl = \"builtin:echo\"\n[[route]]\nagent = \"echo\"\nrecord = true\n\
                 [recording]\n# a size, not a share of whatever else fills the test machine's disk\nmax_disk_usage = \"4GiB\"\nenabled = true\ndir = \"{rec}\"\nchannels = \"dual\"\n{hooks}[log]\nformat = \"text\"\n",
                data = dir.join("data").display(),
                lo = base,
                hi = base + 999,
                rec = recordings.display(),
            ),
        )
        .unwrap();
        let daemon = Self::launch(dir, &config);
        Self { daemon, port, config, recordings: recordings.to_path_buf(), receiver: receiver.map(|(r, _)| r) }
    }

    /// Starts the daemon on `config` and waits for READY=1 (sd-notify).
    fn launch(dir: &Path, config: &Path) -> Daemon {
        let _ = std::fs::remove_file(dir.join("notify.sock"));
        let mut notify = NotifySocket::bind(dir);
        let mut daemon = Daemon::start(config, Some(&notify.path), None, &[]);
        let t0 = Instant::now();
        // `wait_for` also returns early on a receive error (EINTR): wait again
        // while the daemon runs and time is left.
        while notify.wait_for("READY=1", WAIT.saturating_sub(t0.elapsed())).is_none() {
            if t0.elapsed() >= WAIT || !daemon.is_running() {
                panic!(
                    "daemon ready after {:?} (running: {}, notifications: {:?}): {}",
                    t0.elapsed(),
                    daemon.is_running(),
                    notify.seen,
                    daemon.stderr()
                );
            }
        }
        daemon
    }

    /// Webhook bodies delivered so far, after waiting until `done` holds for them.
    async fn events(&self, what: &str, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let receiver = self.receiver.as_ref().expect("webhooks on");
        let entries = receiver
            .wait_until(what, WAIT, |e| {
                let bodies: Vec<Value> = delivered(e).iter().map(|x| x["body"].clone()).collect();
                done(&bodies)
            })
            .await;
        assert!(rejected(&entries).is_empty(), "every signature verified: {:?}", rejected(&entries));
        delivered(&entries).iter().map(|x| x["body"].clone()).collect()
    }

    fn stop(mut self) {
        self.daemon.signal(Signal::SIGTERM);
        assert_eq!(self.daemon.wait_exit(WAIT).and_then(|s| s.code()), Some(0), "{}", self.daemon.stderr());
    }
}

fn event_type(b: &Value) -> &str {
    b["data"]["event_type"].as_str().unwrap_or_default()
}

fn payload(b: &Value) -> &Value {
    &b["data"]["payload"]
}

fn time(p: &Value, key: &str) -> SystemTime {
    humantime::parse_rfc3339(p[key].as_str().unwrap_or_else(|| panic!("{key} in {p}"))).unwrap()
}

/// The SIPp trace files of a test directory, concatenated.
fn traces(dir: &Path) -> String {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".messages.log"))
        .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
        .collect()
}

/// Files under `dir` (recursively) whose name ends with `suffix`.
fn files_ending(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.to_string_lossy().ends_with(suffix) {
                out.push(p);
            }
        }
    }
    out
}

/// The caller heard audio (the echo): decoded PCMU packets louder than RMS 300.
fn loud(received: &[Packet]) -> usize {
    received.iter().filter(|p| p.payload_type == 0 && p.rms() > 300.0).count()
}

/// The recording of the one call a test made: its `call.recording.saved` payload,
/// the file's channels, and the recorded span as SIPp saw it (ACK sent → BYE sent).
struct Recorded {
    saved: Value,
    path: PathBuf,
    left: Vec<i16>,
    right: Vec<i16>,
    sipp_span: Duration,
}

impl Recorded {
    async fn of_the_call(gw: &Gateway, dir: &Path) -> Self {
        let bodies =
            gw.events("call.recording.saved", |b| b.iter().any(|x| event_type(x) == "call.recording.saved")).await;
        let types: Vec<&str> = bodies.iter().map(event_type).collect();
        assert_eq!(types, ["call.initiated", "call.answered", "call.hangup", "call.recording.saved"], "{types:?}");
        let saved = payload(bodies.iter().find(|b| event_type(b) == "call.recording.saved").unwrap()).clone();
        let path = PathBuf::from(saved["file_path"].as_str().unwrap());
        assert!(path.starts_with(&gw.recordings), "{path:?}");
        assert!(files_ending(&gw.recordings, ".part").is_empty(), "no .part left after the call");
        let (spec, left, right) = read_wav(&path);
        assert_eq!(
            (spec.channels, spec.sample_rate, spec.bits_per_sample, spec.sample_format),
            (2, 8000, 16, hound::SampleFormat::Int),
            "stereo PCM16 8 kHz"
        );
        let trace = traces(dir);
        let sipp_span = sipp_sent_at(&trace, "BYE ").duration_since(sipp_sent_at(&trace, "ACK ")).unwrap();
        Self { saved, path, left, right, sipp_span }
    }

    /// Checks the file's duration against the event, SIPp and sox; returns
    /// (file seconds, event span, SIPp span, sox seconds) for the report.
    fn check_duration(&self) -> (f64, f64, f64, f64) {
        let file = self.left.len() as f64 / 8000.0;
        let event = secs(
            time(&self.saved, "recording_ended_at").duration_since(time(&self.saved, "recording_started_at")).unwrap(),
        );
        let (sox, info) = sox_info(&self.path);
        assert!(info.contains("Channels       : 2") && info.contains("Sample Rate    : 8000"), "{info}");
        assert!(info.contains("16-bit Signed Integer PCM"), "{info}");
        assert!((file - event).abs() <= 0.020, "file {file:.4} s vs recording_started_at→ended_at {event:.4} s");
        assert_eq!(self.saved["duration_millis"].as_u64().unwrap(), self.left.len() as u64 / 8);
        assert!((sox - file).abs() < 0.001, "sox says {sox} s, hound {file} s");
        let sipp = secs(self.sipp_span);
        assert!((file - sipp).abs() <= 0.020, "file {file:.4} s vs SIPp's ACK → BYE {sipp:.4} s");
        (file, event, sipp, sox)
    }
}

// ---------------------------------------------------------------------------
// Tests

/// Known speech to the echo agent: left = what the caller sent (correlation and
/// bit-exact μ-law round trip), right = the echo 200 ms later, duration = span.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wav_holds_the_callers_speech_left_and_its_echo_right_for_the_recorded_span() {
    let dir = tempfile::tempdir().unwrap();
    let gw = Gateway::start(dir.path(), &dir.path().join("recordings"), true);
    let speech = speech();
    let sent_ms = (speech.len() / 8) as u64;
    let (d, port, audio) = (dir.path().to_path_buf(), gw.port, speech.clone());
    let (code, report, received) = tokio::task::spawn_blocking(move || {
        // The phone sends the speech once, then listens until the echo ends; SIPp
        // hangs up 0.5 s after the last packet.
        let s = script(audio, sent_ms, sent_ms + 300, vec![]);
        place_calls(&d, port, "127.0.0.1", "+13125550100", sent_ms + 500, vec![s])
    })
    .await
    .unwrap();
    assert_eq!(code, 0, "{report}");
    assert!(loud(&received[0]) >= 150, "the caller heard the echo: {} loud packets", loud(&received[0]));

    let rec = Recorded::of_the_call(&gw, dir.path()).await;
    let (file, event, sipp, sox) = rec.check_duration();

    // Left: the speech as the box received it, at the offset where the phone
    // started (a few ms after the answer). Search ±1 s around the start.
    let sent = pcmu_round_trip(&speech);
    let (lag, _) = align(&sent, 8000..24_000, &rec.left, -8000..8000);
    let left = match_segments(&sent, 0..sent.len(), &rec.left, lag, 800);
    // Right: the left channel again, delayed by the echo (the agent's 200 ms).
    let echo_lag = align(&rec.left, 16_000..32_000, &rec.right, 800..3200).0;
    let right = match_segments(&rec.left, 0..rec.left.len() - 2400, &rec.right, echo_lag, 400);
    let echo = Duration::from_micros(median_lag(&right).max(0) as u64 * 125);
    let (full, _) = ncc_at(&sent, &rec.left, lag);
    eprintln!(
        "recording: file {file:.4} s, event span {event:.4} s, SIPp ACK→BYE {sipp:.4} s, sox {sox:.4} s; \
         left vs sent: lag {lag} samples ({:.1} ms), ncc {:.4} (one lag for all 7.08 s: {full:.4}; \
         lowest 0.5 s segment {:.4}), bit-exact {:.2} % over {} segments; \
         right vs left: echo {echo:?}, ncc {:.4} (lowest segment {:.4}) over {} segments",
        lag as f64 / 8.0,
        left.ncc,
        left.min_ncc,
        left.exact * 100.0,
        left.lags.len(),
        right.ncc,
        right.min_ncc,
        right.lags.len(),
    );
    let voiced = (0..sent.len()).step_by(4000).filter(|&s| rms(&sent[s..(s + 4000).min(sent.len())]) >= 30.0).count();
    assert!(
        left.lags.len() + 1 >= voiced,
        "all of the speech is in the file: {} of {voiced} segments",
        left.lags.len()
    );
    // Issue 7's bar: correlation ≥ 0.95 after alignment. Bit-exactness per 0.5 s
    // segment is checked too, with room for one or two segments: on a loaded
    // 2-core CI box a media-task stall over 60 ms makes the timeline insert
    // silence (alignment follows arrival times), shifting the segment it falls in.
    assert!(left.ncc >= 0.95, "left channel vs sent speech: {left:?}");
    assert!(left.exact >= 0.85, "left channel = μ-law round trip of the sent speech: {left:?}");
    assert!(right.ncc >= 0.9 && right.lags.len() >= 10, "right channel vs left: {right:?}");
    assert!(echo.abs_diff(ECHO) <= Duration::from_millis(30), "the echo is {echo:?} late, the agent delays 200 ms");
    gw.stop();
}

/// The phone goes silent for 2 s mid-call (hold / silence suppression: no RTP at
/// all): the file keeps the call's duration, the window is digital silence on
/// both channels, and the speech after it is where the wall clock puts it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_seconds_without_rtp_are_two_seconds_of_silence_not_a_gap() {
    let dir = tempfile::tempdir().unwrap();
    let gw = Gateway::start(dir.path(), &dir.path().join("recordings"), true);
    let speech = speech();
    // 6 s of speech with nothing sent in packets 100..200 (2 s → 4 s of the phone's clock).
    let audio: Vec<i16> = speech.iter().cycle().take(6 * 8000).copied().collect();
    let gap = (100usize, 200usize);
    let (d, port, a) = (dir.path().to_path_buf(), gw.port, audio.clone());
    let (code, report, _) = tokio::task::spawn_blocking(move || {
        place_calls(&d, port, "127.0.0.1", "+13125550100", 6500, vec![script(a, 6000, 6300, vec![gap])])
    })
    .await
    .unwrap();
    assert_eq!(code, 0, "{report}");
    let rec = Recorded::of_the_call(&gw, dir.path()).await;
    let (file, event, sipp, _) = rec.check_duration();

    let sent = pcmu_round_trip(&audio);
    // Where the speech before the hold is, and where the speech after it is
    // (searched ±0.5 s around the place the wall clock gives it).
    let lag0 = align(&sent, 4000..15_000, &rec.left, -8000..8000).0;
    let before = match_segments(&sent, 0..gap.0 * PKT, &rec.left, lag0, 800);
    let lag_before = before.lags.last().map_or(lag0, |l| l.1);
    let resumed = gap.1 * PKT;
    let lag_after = align(&sent, resumed..resumed + 4000, &rec.left, lag_before - 4000..lag_before + 4001).0;
    let after = match_segments(&sent, resumed..sent.len(), &rec.left, lag_after, 800);
    let at = |packet: usize, lag: i64| (packet as i64 * PKT as i64 + lag) as usize;
    // The silent window in the file, 60 ms (the timeline's jitter tolerance) in from each side.
    let (from, to) = (at(gap.0, lag_before) + 480, at(gap.1, lag_after) - 480);
    let left_silent = rec.left[from..to].iter().all(|&s| s == 0);
    let echo = 1600; // 200 ms
    let right_silent = rec.right[from + echo..to + echo].iter().all(|&s| s == 0);
    eprintln!(
        "hold: file {file:.4} s, event span {event:.4} s, SIPp ACK→BYE {sipp:.4} s; speech before the hold at lag \
         {lag_before}, after it at {lag_after} samples; ncc before {:.4}, after {:.4} (bit-exact {:.2} %, {:.2} %); \
         silent window {:.3}–{:.3} s; rms before/after the window {:.0}/{:.0}",
        before.ncc,
        after.ncc,
        before.exact * 100.0,
        after.exact * 100.0,
        from as f64 / 8000.0,
        to as f64 / 8000.0,
        rms(&rec.left[from - 8000..from - 480]),
        rms(&rec.left[to + 480..to + 8000]),
    );
    assert!(before.ncc >= 0.95 && before.lags.len() >= 3, "speech before the hold: {before:?}");
    assert!(after.ncc >= 0.95 && after.lags.len() >= 3, "speech after the hold: {after:?}");
    // A gap instead of silence would pull the later speech 2 s (16 000 samples) earlier.
    assert!((lag_after - lag_before).abs() <= 800, "speech after the hold is in place: {lag_before} → {lag_after}");
    assert!(to - from >= 14_000, "a 1.75 s window at least: {from}..{to}");
    assert!(left_silent, "the caller's channel is silent during the hold");
    assert!(right_silent, "the echo's channel is silent during the hold, 200 ms later");
    assert!(rms(&rec.left[from - 8000..from - 480]) > 300.0 && rms(&rec.left[to + 480..to + 8000]) > 300.0);
    gw.stop();
}

/// One call whose SIPp and phone the test drives itself (no waiting for the call
/// to end: the daemon is killed under it).
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

/// `kill -9` three seconds into a recorded call: the `.wav.part` on disk is the
/// crash's leftover; the restarted daemon repairs and finalizes it before taking
/// calls, says so in its log, and the file (`sox` reads it) holds the caller's
/// speech up to at least one second before the kill.
#[test]
fn kill_9_mid_call_leaves_a_file_the_restart_repairs_with_audio_to_the_last_second() {
    let dir = tempfile::tempdir().unwrap();
    let recordings = dir.path().join("recordings");
    let mut gw = Gateway::start(dir.path(), &recordings, false);
    let speech = speech();
    let call = LiveCall::start(dir.path(), gw.port, 4500, script(speech.clone(), 4500, 4500, vec![]));
    // The recording starts at the answer: its .part appears then.
    let deadline = Instant::now() + WAIT;
    let (part, started) = loop {
        if let Some(p) = files_ending(&recordings, ".wav.part").pop() {
            break (p, Instant::now());
        }
        assert!(Instant::now() < deadline, "a .wav.part appears at the answer: {}", gw.daemon.stderr());
        std::thread::sleep(Duration::from_millis(2));
    };
    // Three seconds into the call, while the phone still sends: SIGKILL by pid.
    std::thread::sleep(Duration::from_secs(3));
    assert!(!call.phone.is_finished(), "the phone is still sending");
    let killed = Instant::now();
    gw.daemon.signal(Signal::SIGKILL);
    let status = gw.daemon.wait_exit(WAIT).expect("the daemon died");
    assert_eq!(std::os::unix::process::ExitStatusExt::signal(&status), Some(9));
    let recorded_until_kill = killed - started;
    // What the crash left: the .part, already a WAV whose header covers its last checkpoint.
    assert!(part.exists() && files_ending(&recordings, ".wav").is_empty(), "only the .part is on disk");
    let left_by_crash = hound::WavReader::open(&part).map(|r| r.duration()).unwrap_or(0);

    // Restart on the same config, data dir and ports: the startup pass repairs it.
    gw.daemon = Gateway::launch(dir.path(), &gw.config);
    let log = gw.daemon.stderr();
    let wav = PathBuf::from(part.to_string_lossy().strip_suffix(".part").unwrap());
    assert!(
        !part.exists() && wav.exists(),
        "renamed to {} (part exists: {}, wav exists: {}, files: {:?}): {log}",
        wav.display(),
        part.exists(),
        wav.exists(),
        files_ending(&recordings, "")
    );
    let line =
        log.lines().find(|l| l.contains("recording left by a crash repaired and finalized")).unwrap_or_else(|| {
            panic!("the startup report names the repaired file: {log}");
        });
    assert!(line.contains(&wav.display().to_string()), "{line}");
    let (sox, info) = sox_info(&wav);
    assert!(info.contains("Channels       : 2") && info.contains("Sample Rate    : 8000"), "{info}");
    let (_, left, right) = read_wav(&wav);
    let kept = Duration::from_micros(left.len() as u64 * 125);
    eprintln!(
        "kill -9: answer → kill {:.3} s (measured by the test), .part header at the crash {:.3} s, \
         repaired file {:.3} s (sox {sox:.3} s), lost {:.3} s",
        secs(recorded_until_kill),
        f64::from(left_by_crash) / 8000.0,
        secs(kept),
        secs(recorded_until_kill.saturating_sub(kept))
    );
    assert!(kept + Duration::from_secs(1) >= recorded_until_kill, "all audio up to 1 s before the kill: {kept:?}");
    assert!(kept <= recorded_until_kill + Duration::from_millis(50), "no audio from after the kill: {kept:?}");
    assert!((sox - secs(kept)).abs() < 0.001);
    // And that audio is the caller's speech (to its last second) and the echo.
    let sent = pcmu_round_trip(&speech);
    let lag = align(&sent, 4000..12_000, &left, -8000..8000).0;
    let kept_speech = (left.len() as i64 - lag).clamp(0, sent.len() as i64) as usize;
    let m = match_segments(&sent, 0..kept_speech, &left, lag, 800);
    let last = m.lags.last().map_or(0, |l| l.0 as i64 + l.1 + 4000);
    assert!(m.ncc >= 0.95, "the caller's speech: {m:?}");
    assert!(last + 8000 >= left.len() as i64, "speech to the last second of the file: {m:?}");
    assert!(rms(&right) > 300.0, "the echo on the right");

    // The restarted daemon answers the caller's late BYE (481): SIPp ends; it is
    // stopped by pid if it is still retransmitting.
    let mut sipp = call.sipp;
    let _ = call.phone.join();
    let _ = sipp.wait(Duration::from_secs(5));
    gw.stop();
}

/// Marks a directory immutable (`chattr +i`) for the test's life, so creating
/// anything in it fails with EPERM even for root, which ignores permission bits
/// (the tests run as root; the daemon in production runs as its own user, where
/// a `0555` directory gives EACCES: the same `permission_denied` path).
struct Immutable(PathBuf);

impl Immutable {
    fn set(dir: &Path) -> Option<Self> {
        let ok = std::process::Command::new("chattr").arg("+i").arg(dir).output().is_ok_and(|o| o.status.success());
        // Some file systems (tmpfs, overlay) or containers without CAP_LINUX_IMMUTABLE refuse it.
        if !ok {
            return None;
        }
        let guard = Self(dir.to_path_buf());
        let probe = dir.join("probe");
        if std::fs::File::create(&probe).is_ok() {
            drop(guard);
            let _ = std::fs::remove_file(probe);
            return None;
        }
        Some(guard)
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        let _ = std::process::Command::new("chattr").arg("-i").arg(&self.0).output();
    }
}

/// A recording directory the daemon cannot write: the call is answered, the
/// caller hears the echo, the daemon logs why it does not record (with the OS
/// error and the machine reason), and `call.hangup` still reaches the backend.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unwritable_recording_dir_leaves_the_call_working_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let recordings = dir.path().join("recordings");
    std::fs::create_dir(&recordings).unwrap();
    // An immutable directory where chattr works; elsewhere a path whose parent is
    // a regular file (create_dir_all fails with ENOTDIR, root or not).
    let guard = Immutable::set(&recordings);
    let (rec_dir, expected) = match &guard {
        Some(_) => (recordings.clone(), "(permission_denied)"),
        None => {
            std::fs::write(dir.path().join("not-a-dir"), b"x").unwrap();
            (dir.path().join("not-a-dir/recordings"), "Not a directory")
        }
    };
    let gw = Gateway::start(dir.path(), &rec_dir, true);
    let (d, port, audio) = (dir.path().to_path_buf(), gw.port, speech());
    let (code, report, received) = tokio::task::spawn_blocking(move || {
        place_calls(&d, port, "127.0.0.1", "+13125550100", 3000, vec![script(audio, 2500, 2800, vec![])])
    })
    .await
    .unwrap();
    assert_eq!(code, 0, "the call completes: {report}");
    assert!(loud(&received[0]) >= 60, "the caller heard the echo: {} loud packets", loud(&received[0]));
    let bodies = gw.events("call.hangup", |b| b.iter().any(|x| event_type(x) == "call.hangup")).await;
    let hangup = payload(bodies.iter().find(|b| event_type(b) == "call.hangup").unwrap());
    assert_eq!(hangup["hangup_cause"], "normal_clearing");
    assert_eq!(hangup["hangup_source"], "caller");
    let log = gw.daemon.stderr();
    let line = log.lines().find(|l| l.contains("recording not started")).unwrap_or_else(|| panic!("{log}"));
    eprintln!("unwritable dir ({}): {line}", if guard.is_some() { "chattr +i" } else { "parent is a file" });
    assert!(line.contains(expected) && line.contains("the call goes on"), "{line}");
    assert!(line.contains(&rec_dir.display().to_string()), "the log names the directory: {line}");
    let receiver_log = gw.receiver.as_ref().unwrap().log.clone();
    gw.stop();
    // After a clean stop every event was delivered: none claims a recording.
    let text = std::fs::read_to_string(receiver_log).unwrap_or_default();
    assert!(!text.contains("call.recording.saved"), "no recording was saved");
    assert!(files_ending(&recordings, ".wav").is_empty() && files_ending(&recordings, ".part").is_empty());
    drop(guard);
}
