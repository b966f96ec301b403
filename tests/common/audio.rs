//! Real speech for end-to-end tests, and the measurements that find it again in a
//! recording: WAVs spoken by `espeak-ng` and brought to 8 kHz mono PCM16 by `sox`
//! (generated at test time, never committed), SIPp's own G.711 speech pcap decoded,
//! and a matcher that says where (and how well) a known piece of audio sits in a
//! recorded channel.
//!
//! The matcher is made for what the box does to audio: a G.711 round trip (sample
//! values change a little), an unknown offset (the call's setup, tens of ms of
//! scheduling), and a few ms of re-timing per packet burst when a loaded machine
//! delays a sender. It aligns coarsely on 10 ms energy envelopes (robust to all
//! three), then sample by sample, 0.5 s segment by segment, and reports the pooled
//! normalized cross-correlation of the segments at their own lags.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::process::Command;

use sipbridge::media::g711::G711;

/// Samples per second of every WAV made here.
pub const RATE: usize = 8000;

/// Speaks `text` with espeak-ng `voice` (e.g. `"en"`, `"en+f3"`) into
/// `dir/<name>.wav`, 8 kHz mono 16-bit signed PCM (resampled by sox), with
/// `lead_ms` of silence before and `tail_ms` after. Returns the path.
pub fn espeak(dir: &Path, name: &str, voice: &str, text: &str, lead_ms: u32, tail_ms: u32) -> PathBuf {
    espeak_at(dir, name, voice, text, lead_ms, tail_ms, RATE as u32)
}

/// [`espeak`] at `rate` Hz (espeak-ng speaks at 22050 Hz, with fricatives up to
/// 8 kHz and beyond: at 16000 Hz the WAV is wideband speech).
pub fn espeak_at(dir: &Path, name: &str, voice: &str, text: &str, lead_ms: u32, tail_ms: u32, rate: u32) -> PathBuf {
    let raw = dir.join(format!("{name}.espeak.wav"));
    let out = Command::new("espeak-ng")
        .args(["-v", voice, "-s", "150", "-w"])
        .arg(&raw)
        .arg(text)
        .output()
        .expect("espeak-ng is installed (scripts/setup-tests)");
    assert!(out.status.success(), "espeak-ng: {}", String::from_utf8_lossy(&out.stderr));
    let wav = dir.join(format!("{name}.wav"));
    let out = Command::new("sox")
        .arg(&raw)
        .args(["-r", &rate.to_string(), "-c", "1", "-b", "16", "-e", "signed-integer"])
        .arg(&wav)
        .args(["pad", &format!("{:.3}", f64::from(lead_ms) / 1000.0), &format!("{:.3}", f64::from(tail_ms) / 1000.0)])
        .output()
        .expect("sox is installed (scripts/setup-tests)");
    assert!(out.status.success(), "sox: {}", String::from_utf8_lossy(&out.stderr));
    wav
}

/// The samples of a mono 16-bit WAV at 8 kHz.
pub fn read_mono(path: &Path) -> Vec<i16> {
    let mut r = hound::WavReader::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let spec = r.spec();
    assert_eq!((spec.channels, spec.sample_rate, spec.bits_per_sample), (1, 8000, 16), "{}", path.display());
    r.samples::<i16>().map(|s| s.unwrap()).collect()
}

/// A stereo PCM16 WAV split into (spec, left, right).
pub fn read_stereo(path: &Path) -> (hound::WavSpec, Vec<i16>, Vec<i16>) {
    let mut r = hound::WavReader::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let spec = r.spec();
    let s: Vec<i16> = r.samples::<i16>().map(|x| x.unwrap()).collect();
    let left = s.iter().step_by(2).copied().collect();
    let right = s.iter().skip(1).step_by(2).copied().collect();
    (spec, left, right)
}

/// The RTP packets of a pcap of RTP in Ethernet/IPv4/UDP frames (a little-endian
/// microsecond pcap, link type Ethernet), as (payload type, payload), in order.
pub fn pcap_rtp(path: &Path) -> Vec<(u8, Vec<u8>)> {
    let pcap = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(&pcap[..4], &[0xd4, 0xc3, 0xb2, 0xa1], "little-endian microsecond pcap");
    assert_eq!(u32::from_le_bytes(pcap[20..24].try_into().unwrap()), 1, "Ethernet link type");
    let mut out = Vec::new();
    let mut off = 24;
    while off + 16 <= pcap.len() {
        let incl = u32::from_le_bytes(pcap[off + 8..off + 12].try_into().unwrap()) as usize;
        let frame = &pcap[off + 16..off + 16 + incl];
        off += 16 + incl;
        let ip = &frame[14..];
        let rtp = &ip[usize::from(ip[0] & 0x0f) * 4 + 8..];
        let head = 12 + 4 * usize::from(rtp[0] & 0x0f);
        out.push((rtp[1] & 0x7f, rtp[head..].to_vec()));
    }
    out
}

/// The speech of a pcap of G.711 RTP in Ethernet/IPv4/UDP frames (SIPp's
/// `/usr/share/sip-tester/g711a.pcap`: 7.08 s of A-law), decoded to PCM16 8 kHz
/// (packets of other payload types are skipped).
pub fn pcap_speech(path: &Path) -> Vec<i16> {
    let mut out = Vec::new();
    for (pt, payload) in pcap_rtp(path) {
        let law = match pt {
            0 => G711::Pcmu,
            8 => G711::Pcma,
            _ => continue,
        };
        out.extend(payload.iter().map(|&b| law.decode_sample(b)));
    }
    out
}

/// What the far end receives of `audio` sent as PCMU: the μ-law round trip.
pub fn pcmu_round_trip(audio: &[i16]) -> Vec<i16> {
    audio.iter().map(|&s| G711::Pcmu.decode_sample(G711::Pcmu.encode_sample(s))).collect()
}

/// The audio of a Telnyx media-stream log's `media` messages on `track`
/// (`"inbound"` = what the caller said, as the agent received it): the base64
/// PCMU payloads in order, decoded to PCM16.
pub fn stream_audio(messages: &[&serde_json::Value], track: &str) -> Vec<i16> {
    messages
        .iter()
        .filter(|m| m["event"] == "media" && m["media"]["track"] == track)
        .filter_map(|m| m["media"]["payload"].as_str())
        .flat_map(base64_decode)
        .map(|b| G711::Pcmu.decode_sample(b))
        .collect()
}

/// Standard base64 (RFC 4648 §4, with padding) to bytes; invalid input stops the
/// decoding there.
fn base64_decode(text: &str) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in text.bytes().take_while(|&c| c != b'=') {
        let Some(v) = ALPHABET.iter().position(|&a| a == c) else { break };
        acc = (acc << 6) | v as u32;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

/// Root mean square of PCM16 samples.
pub fn rms(v: &[i16]) -> f64 {
    (v.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>() / v.len().max(1) as f64).sqrt()
}

/// Seconds of audio in `samples` at 8 kHz.
pub fn seconds(samples: usize) -> f64 {
    samples as f64 / RATE as f64
}

/// 10 ms windows whose RMS is above `threshold`, merged into ranges of samples
/// (gaps under 200 ms are bridged): where someone speaks.
pub fn speech_windows(v: &[i16], threshold: f64) -> Vec<Range<usize>> {
    let mut out: Vec<Range<usize>> = Vec::new();
    for (i, w) in v.chunks(80).enumerate() {
        if rms(w) < threshold {
            continue;
        }
        let r = i * 80..i * 80 + w.len();
        match out.last_mut() {
            Some(last) if r.start <= last.end + 1600 => last.end = r.end,
            _ => out.push(r),
        }
    }
    out
}

/// log10 energy per 10 ms window (80 samples), floored so silence is flat.
fn envelope(v: &[i16]) -> Vec<f64> {
    v.chunks(80).map(|w| (rms(w) + 10.0).log10()).collect()
}

/// Pearson correlation of `a` and `b[lag..]` over their overlap.
fn pearson_at(a: &[f64], b: &[f64], lag: i64) -> f64 {
    let (a0, b0) = if lag >= 0 { (0usize, lag as usize) } else { ((-lag) as usize, 0usize) };
    if a0 >= a.len() || b0 >= b.len() {
        return 0.0;
    }
    let n = (a.len() - a0).min(b.len() - b0);
    if n < 10 {
        return 0.0;
    }
    let (x, y) = (&a[a0..a0 + n], &b[b0..b0 + n]);
    let (mx, my) = (x.iter().sum::<f64>() / n as f64, y.iter().sum::<f64>() / n as f64);
    let (mut xy, mut xx, mut yy) = (0.0, 0.0, 0.0);
    for (p, q) in x.iter().zip(y) {
        xy += (p - mx) * (q - my);
        xx += (p - mx).powi(2);
        yy += (q - my).powi(2);
    }
    if xx == 0.0 || yy == 0.0 { 0.0 } else { xy / (xx * yy).sqrt() }
}

/// Normalized cross-correlation of two equally long slices.
fn ncc(a: &[i16], b: &[i16]) -> f64 {
    let (mut ab, mut aa, mut bb) = (0f64, 0f64, 0f64);
    for (&x, &y) in a.iter().zip(b) {
        let (x, y) = (f64::from(x), f64::from(y));
        (ab, aa, bb) = (ab + x * y, aa + x * x, bb + y * y);
    }
    if aa == 0.0 || bb == 0.0 { 0.0 } else { ab / (aa * bb).sqrt() }
}

/// Where a known piece of audio was found in a recorded channel.
#[derive(Debug, Clone)]
pub struct Found {
    /// Offset of the needle's first sample in the haystack, in samples (the
    /// median of the segments' own offsets).
    pub at: i64,
    /// Correlation of the 10 ms energy envelopes at the coarse offset.
    pub envelope: f64,
    /// Pooled normalized cross-correlation of the voiced 0.5 s segments, each at
    /// its own offset (within ±20 ms of its neighbour's).
    pub ncc: f64,
    /// Voiced segments of the needle found in the haystack / voiced segments.
    pub segments: (usize, usize),
}

impl Found {
    /// The offset in seconds.
    pub fn at_seconds(&self) -> f64 {
        self.at as f64 / RATE as f64
    }

    /// Found well: envelope and waveform agree, every voiced segment is there.
    pub fn is_clear(&self) -> bool {
        self.envelope >= 0.7 && self.ncc >= 0.85 && self.segments.0 == self.segments.1 && self.segments.1 > 0
    }
}

/// Finds `needle` in `haystack` with its first sample at an offset within
/// `offsets` (samples; clipped to where it fits at least half).
pub fn find(needle: &[i16], haystack: &[i16], offsets: Range<i64>) -> Found {
    const SEG: usize = 4000;
    let (en, eh) = (envelope(needle), envelope(haystack));
    let (lo, hi) = (offsets.start / 80, offsets.end / 80 + 1);
    let (coarse, env) =
        (lo..hi).map(|l| (l, pearson_at(&en, &eh, l))).fold((lo, f64::MIN), |b, x| if x.1 > b.1 { x } else { b });
    let mut prev = coarse * 80;
    let (mut ab, mut aa, mut bb) = (0f64, 0f64, 0f64);
    let (mut found, mut voiced, mut lags) = (0usize, 0usize, Vec::new());
    for s in (0..needle.len()).step_by(SEG) {
        let seg = &needle[s..(s + SEG).min(needle.len())];
        if seg.len() < SEG / 2 || rms(seg) < 100.0 {
            continue;
        }
        voiced += 1;
        // Searched within ±20 ms of the previous segment (the first: of the
        // coarse offset, whose envelope step is 10 ms). A segment may hang over
        // either end of the haystack (a recording that starts a few ms into the
        // needle's leading silence): the overlap counts when it is at least half
        // the segment.
        let overlap = |lag: i64| -> Option<(Range<usize>, usize)> {
            let from = s as i64 + lag;
            let skip = (-from).max(0) as usize;
            let end = (haystack.len() as i64 - from).min(seg.len() as i64);
            (end > skip as i64 && end as usize - skip >= SEG / 2)
                .then(|| (skip..end as usize, (from + skip as i64) as usize))
        };
        let mut best = (prev, f64::MIN);
        for lag in prev - 160..=prev + 160 {
            if let Some((part, at)) = overlap(lag) {
                let c = ncc(&seg[part.clone()], &haystack[at..at + part.len()]);
                if c > best.1 {
                    best = (lag, c);
                }
            }
        }
        let Some((part, at)) = overlap(best.0).filter(|_| best.1 > f64::MIN) else { continue };
        for (&x, &y) in seg[part.clone()].iter().zip(&haystack[at..at + part.len()]) {
            let (x, y) = (f64::from(x), f64::from(y));
            (ab, aa, bb) = (ab + x * y, aa + x * x, bb + y * y);
        }
        if best.1 >= 0.5 {
            found += 1;
            prev = best.0;
        }
        lags.push(best.0);
    }
    lags.sort();
    let pooled = if aa == 0.0 || bb == 0.0 { 0.0 } else { ab / (aa * bb).sqrt() };
    Found {
        at: lags.get(lags.len() / 2).copied().unwrap_or(coarse * 80),
        envelope: env,
        ncc: pooled,
        segments: (found, voiced),
    }
}

/// Reads `sox FILE -n stat` for one channel (`remix N`): the RMS amplitude
/// (0..1), an independent check of a recording's channel with a second tool.
pub fn sox_channel_rms(path: &Path, channel: u32) -> f64 {
    let out = Command::new("sox")
        .arg(path)
        .args(["-n", "remix", &channel.to_string(), "stat"])
        .output()
        .expect("sox is installed");
    let text = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "sox stat {}: {text}", path.display());
    text.lines()
        .find(|l| l.starts_with("RMS     amplitude:"))
        .and_then(|l| l.split(':').nth(1))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no RMS amplitude in sox stat: {text}"))
}

/// Amplitude of `hz` in `pcm` (8 kHz), Goertzel: a sine of amplitude A gives ~A.
pub fn level(pcm: &[i16], hz: f64) -> f64 {
    let w = 2.0 * std::f64::consts::PI * hz / 8000.0;
    let (mut s1, mut s2) = (0.0f64, 0.0f64);
    for &x in pcm {
        let s0 = f64::from(x) + 2.0 * w.cos() * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    2.0 * (s1 * s1 + s2 * s2 - 2.0 * w.cos() * s1 * s2).max(0.0).sqrt() / pcm.len().max(1) as f64
}

// ---------------------------------------------------------------------------
// Sample-exact matching (recordings of a known signal)

/// Normalized cross-correlation of `a[i]` and `b[i + lag]` over their overlap
/// (`lag` may be negative), and the overlap length.
pub fn ncc_at(a: &[i16], b: &[i16], lag: i64) -> (f64, usize) {
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
pub fn align(a: &[i16], excerpt: std::ops::Range<usize>, b: &[i16], lags: std::ops::Range<i64>) -> (i64, f64) {
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
pub struct Matched {
    /// Pooled normalized correlation of all segments at their own lags.
    pub ncc: f64,
    /// Lowest segment correlation.
    pub min_ncc: f64,
    /// Fraction of the samples equal to the sample (bit-exact).
    pub exact: f64,
    /// Each segment's (start in `a`, lag into `b`).
    pub lags: Vec<(usize, i64)>,
}

/// `a[range]` cut into 0.5 s segments (those with audio), each aligned with `b`
/// on its own within ±`search` samples of the previous segment's lag (the first:
/// of `lag0`). Per-segment alignment keeps the check sample-exact while
/// tolerating a scheduling hiccup of the test's own phone thread under load
/// (a packet more than 60 ms late), which the recorder rightly follows.
pub fn match_segments(a: &[i16], range: std::ops::Range<usize>, b: &[i16], lag0: i64, search: i64) -> Matched {
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
pub fn median_lag(m: &Matched) -> i64 {
    let mut v: Vec<i64> = m.lags.iter().map(|l| l.1).collect();
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or(i64::MIN)
}

/// `sox --i` of a file: (duration in seconds from `-D`, the full report).
pub fn sox_info(path: &Path) -> (f64, String) {
    let run = |arg: &str| {
        let out = std::process::Command::new("sox").arg("--i").arg(arg).arg(path).output().expect("sox is installed");
        assert!(out.status.success(), "sox reads {}: {}", path.display(), String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let d: f64 = run("-D").trim().parse().expect("sox --i -D prints seconds");
    (d, run("-V1"))
}
