//! A recorded call's file and events as `tests/recording.rs` and
//! `tests/bye_unanswered.rs` check them: the known speech the phone sends, the box
//! with a recorded WebSocket agent, and [`Recorded`]: the one call's
//! `call.recording.saved`, its WAV channels and SIPp's clock, checked against each
//! other.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde_json::Value;
use sipbridge::media::g711::G711;

use super::audio::{self, read_stereo as read_wav, sox_info};
use super::gateway::{Gateway, Route, Trunk, event_type, files_ending, payload, time};
use super::sipp_at;

/// The speech of SIPp's `g711a.pcap` (7.08 s of A-law RTP in Ethernet/IPv4/UDP
/// frames), decoded to PCM16 8 kHz; every packet is PCMA.
pub fn speech() -> Vec<i16> {
    let packets = audio::pcap_rtp(Path::new("/usr/share/sip-tester/g711a.pcap"));
    assert!(packets.iter().all(|(pt, _)| *pt == 8), "PCMA");
    packets.iter().flat_map(|(_, payload)| payload.iter().map(|&b| G711::Pcma.decode_sample(b))).collect()
}

/// Seconds, for reports.
pub fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// The daemon with a WebSocket agent (`agent`) on a recorded route (dual-channel
/// WAV in `recordings/`), signed webhooks to a verifying receiver.
pub fn start_with_agent(dir: &Path, agent: &super::agent::PyAgent) -> Gateway {
    Gateway::builder(dir)
        .trunk(Trunk::new("carrier").allow("127.0.0.0/8"))
        .agent("ws", &agent.url("/"), "")
        .route(Route::new().agent("ws").record())
        .recording_in(&dir.join("recordings"), "channels = \"dual\"")
        .webhooks("")
        .start()
}

/// The SIPp trace files of a test directory, concatenated.
pub fn traces(dir: &Path) -> String {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".messages.log"))
        .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
        .collect()
}

/// The recording of the one call a test made: its `call.recording.saved` payload,
/// the file's channels, and SIPp's clock: when it sent the INVITE and the ACK, and
/// when it sent (or received) the BYE.
pub struct Recorded {
    pub saved: Value,
    pub path: PathBuf,
    pub left: Vec<i16>,
    pub right: Vec<i16>,
    pub invite_sent: SystemTime,
    pub ack_sent: SystemTime,
    /// When SIPp sent its BYE, or received the box's.
    pub bye: SystemTime,
    pub bye_from_sipp: bool,
    /// `call.hangup`'s `end_time`.
    pub hangup_end: SystemTime,
}

impl Recorded {
    /// `bye_from_sipp`: SIPp hung up (else the box did).
    pub async fn of_the_call(gw: &Gateway, dir: &Path, bye_from_sipp: bool) -> Self {
        let bodies =
            gw.events("call.recording.saved", |b| b.iter().any(|x| event_type(x) == "call.recording.saved")).await;
        // The call's events (a streaming agent adds its `streaming.*` ones).
        let types: Vec<&str> = bodies.iter().map(event_type).filter(|t| t.starts_with("call.")).collect();
        assert_eq!(types, ["call.initiated", "call.answered", "call.hangup", "call.recording.saved"], "{types:?}");
        let saved = payload(bodies.iter().find(|b| event_type(b) == "call.recording.saved").unwrap()).clone();
        let hangup = bodies.iter().find(|b| event_type(b) == "call.hangup").unwrap();
        let hangup_end = time(payload(hangup), "end_time");
        // The hangup occurred at the call's end, however long the BYE then took.
        assert_eq!(time(&hangup["data"], "occurred_at"), hangup_end, "call.hangup's occurred_at is its end_time");
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
        let (invite_sent, ack_sent, bye) =
            (sipp_at(&trace, true, "INVITE "), sipp_at(&trace, true, "ACK "), sipp_at(&trace, bye_from_sipp, "BYE "));
        Self { saved, path, left, right, invite_sent, ack_sent, bye, bye_from_sipp, hangup_end }
    }

    /// Checks the file's duration against the event, SIPp and sox; returns
    /// (file seconds, event span, SIPp's ACK → BYE, sox seconds) for the report.
    ///
    /// The file holds exactly the event's span (20 ms: one frame). The span
    /// starts when the call is confirmed (the ACK has arrived; never before
    /// SIPp's INVITE) and ends at the hangup: once SIPp's BYE has arrived, or
    /// when the box decided to hang up, before SIPp got its BYE. How far apart
    /// they are is the daemon's time to act (tens of ms on a loaded CI box, so
    /// no tighter bound here): the 1 s bound only tells a span cut at the
    /// hangup from one that waits for something else (an agent's close, up to
    /// 3 s; a BYE nobody answers, up to 32 s). `call.hangup`'s `end_time` is
    /// checked the same way.
    pub fn check_duration(&self) -> (f64, f64, f64, f64) {
        let file = self.left.len() as f64 / 8000.0;
        let (started, ended) = (time(&self.saved, "recording_started_at"), time(&self.saved, "recording_ended_at"));
        let event = secs(ended.duration_since(started).unwrap());
        let (sox, info) = sox_info(&self.path);
        assert!(info.contains("Channels       : 2") && info.contains("Sample Rate    : 8000"), "{info}");
        assert!(info.contains("16-bit Signed Integer PCM"), "{info}");
        assert!((file - event).abs() <= 0.020, "file {file:.4} s vs recording_started_at→ended_at {event:.4} s");
        assert_eq!(self.saved["duration_millis"].as_u64().unwrap(), self.left.len() as u64 / 8);
        assert!((sox - file).abs() < 0.001, "sox says {sox} s, hound {file} s");
        // The daemon derives its end time from the start's wall-clock time plus
        // the monotonic span: a preemption between its two clock reads, or NTP
        // slewing the wall clock, moves it by a few ms. One frame (20 ms) of slack.
        let (slack, s) = (Duration::from_millis(20), Duration::from_secs(1));
        let within = |at: SystemTime, from: SystemTime, to: SystemTime, what: &str| {
            assert!(at >= from - slack && at < to + slack, "the {what} {at:?} is not in {from:?}..{to:?}");
        };
        within(started, self.invite_sent, self.ack_sent + s, "recording's start (SIPp's INVITE .. its ACK + 1 s)");
        let hangup = if self.bye_from_sipp { (self.bye, self.bye + s) } else { (self.bye - s, self.bye) };
        within(ended, hangup.0, hangup.1, "recording's end (at SIPp's BYE, within 1 s)");
        within(self.hangup_end, hangup.0, hangup.1, "call.hangup's end_time (at SIPp's BYE, within 1 s)");
        assert!(ended <= self.hangup_end + slack, "the recording ends by the call's end_time");
        let sipp = secs(self.bye.duration_since(self.ack_sent).unwrap());
        (file, event, sipp, sox)
    }
}
