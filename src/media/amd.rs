//! Answering-machine detection (AMD), sans-IO: PCM16 mono of the called party in,
//! Telnyx's two AMD results out. No clock, no thread: the caller passes each
//! chunk's time since detection started ([`Detector::push`]) and says when time
//! passed without audio ([`Detector::advance`]); results come from
//! [`Detector::poll_event`].
//!
//! What it implements: Telnyx Call Control `answering_machine_detection`
//! (`detect`, `detect_beep`, `greeting_end`) with its
//! `answering_machine_detection_config` keys and defaults (Telnyx "Dial" API
//! reference; the defaults as in Telnyx's own SDKs, e.g. team-telnyx/telnyx-dotnet
//! `AnsweringMachineDetectionConfig`), reporting `call.machine.detection.ended`
//! (`human`, `machine`, `not_sure`) and `call.machine.greeting.ended`
//! (`beep_detected`, `ended`, `not_sure`) (developers.telnyx.com
//! api-reference/callbacks/call-machine-greeting-ended).
//!
//! How: voice activity by 20 ms frames (mean absolute amplitude, 0..32767, above
//! both `silence_threshold` and twice the line's noise floor, the quietest frame
//! of the last 2–2.5 s), then timing
//! in the manner of the classic energy-based detectors (Asterisk `AMD()`):
//!
//! - a *word* is a run of voice of at least [`MIN_WORD`] that follows at least
//!   `between_words_silence_millis` (to the 20 ms frame below) of silence or of
//!   a dip (voice 12 dB below the previous word's loudest frame: words spoken
//!   without a pause);
//! - in order, each frame: `total_analysis_time_millis` passed → `not_sure`; no
//!   word yet and `initial_silence_millis` of silence → `machine`; a greeting
//!   (a word) then `after_greeting_silence_millis` of silence → `human`; one word
//!   longer than `maximum_word_length_millis`, more than
//!   `maximum_number_of_words` words, or a greeting longer than
//!   `greeting_duration_millis` (from its first word) → `machine`; a beep (below)
//!   before any result → `machine`.
//!
//! With Telnyx's defaults `initial_silence_millis` equals
//! `total_analysis_time_millis` (3500), and the total is checked first: a line
//! that stays silent is `not_sure`.
//!
//! After `machine`, `detect_beep` and `greeting_end` go on listening for the end of
//! the greeting for at most `greeting_total_analysis_time_millis`: a *beep* is a
//! single steady tone (300–2500 Hz: one Goertzel bin holds ≥ 70 % of the frame's
//! power, the frequency stays within 2 % frame to frame) lasting at least
//! [`MIN_BEEP`]; it is reported when the tone stops (the machine records from
//! there). `greeting_end` also ends the greeting on
//! `greeting_silence_duration_millis` of silence (`ended`) and reports `not_sure`
//! at the time limit; `detect_beep` reports only a beep (Telnyx: "only if a beep
//! is detected").
//!
//! Cost: one pass over each frame for its level; a voiced frame while beeps are
//! looked for also gets a Goertzel scan (45 + 11 bins of one frame, ≈ 9 000
//! multiply-adds at 8 kHz). Nothing allocates after [`Detector::new`].

use std::time::Duration;

/// Frame length the detector decides on.
pub const FRAME: Duration = Duration::from_millis(20);

/// Shortest run of voice that counts as a word (Asterisk's `min_word_length`
/// default; Telnyx has no key for it).
pub const MIN_WORD: Duration = Duration::from_millis(100);

/// Shortest steady tone that counts as a beep.
pub const MIN_BEEP: Duration = Duration::from_millis(120);

/// A tone longer than this is reported without waiting for its end.
const MAX_BEEP_WAIT: Duration = Duration::from_millis(1500);

/// Voice is this many times louder than the noise floor (6 dB).
const FLOOR_MARGIN: f32 = 2.0;

/// A voiced frame below this share of its word's loudest frame is a dip
/// between words (−12 dB).
const DIP: f32 = 0.25;

/// Voice that short (two frames) does not end a silence (clicks, pops).
const MIN_VOICE: Duration = Duration::from_millis(40);

/// How far behind an audio chunk's time the detector's clock may fall (RTP
/// arrives in bursts) before the missing time is taken as silence.
const LATE: Duration = Duration::from_millis(120);

/// Lowest and highest beep frequency looked for (Hz), and the coarse scan step.
const BEEP_LOW_HZ: f32 = 300.0;
const BEEP_HIGH_HZ: f32 = 2500.0;
const SCAN_STEP_HZ: f32 = 50.0;

/// Share of a frame's power one frequency must hold for the frame to be tonal.
const TONAL_RATIO: f32 = 0.7;

/// `answering_machine_detection`, other than `disabled` (no detector at all).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `detect`: `call.machine.detection.ended` only.
    Detect,
    /// `detect_beep`: after `machine`, `call.machine.greeting.ended` with
    /// `beep_detected` if a beep is heard.
    DetectBeep,
    /// `greeting_end`: after `machine`, `call.machine.greeting.ended` with
    /// `beep_detected`, `ended` (silence) or `not_sure` (time limit).
    GreetingEnd,
}

impl Mode {
    /// The Telnyx name.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Detect => "detect",
            Mode::DetectBeep => "detect_beep",
            Mode::GreetingEnd => "greeting_end",
        }
    }
}

/// Telnyx `answering_machine_detection_config`: durations in milliseconds,
/// `silence_threshold` a mean absolute sample value on 0..32767. `Default` is
/// Telnyx's defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AmdConfig {
    /// Longest analysis before `not_sure` (default 3500).
    pub total_analysis_time_millis: u32,
    /// Silence after a greeting that makes it a human (default 800).
    pub after_greeting_silence_millis: u32,
    /// Silence that separates two words (default 50).
    pub between_words_silence_millis: u32,
    /// Longest human greeting; longer is a machine (default 3500).
    pub greeting_duration_millis: u32,
    /// After `machine` (`greeting_end`): silence that ends the greeting
    /// (default 1500).
    pub greeting_silence_duration_millis: u32,
    /// After `machine`: how long to look for the greeting's end (default 5000).
    pub greeting_total_analysis_time_millis: u32,
    /// Silence before any word that makes it a machine (default 3500).
    pub initial_silence_millis: u32,
    /// More words than this is a machine (default 5).
    pub maximum_number_of_words: u32,
    /// One word longer than this is a machine (default 3500).
    pub maximum_word_length_millis: u32,
    /// Level below which a frame is silence (default 256).
    pub silence_threshold: u32,
}

impl Default for AmdConfig {
    fn default() -> Self {
        Self {
            total_analysis_time_millis: 3500,
            after_greeting_silence_millis: 800,
            between_words_silence_millis: 50,
            greeting_duration_millis: 3500,
            greeting_silence_duration_millis: 1500,
            greeting_total_analysis_time_millis: 5000,
            initial_silence_millis: 3500,
            maximum_number_of_words: 5,
            maximum_word_length_millis: 3500,
            silence_threshold: 256,
        }
    }
}

/// What a dial or transfer asked for: `answering_machine_detection` other than
/// `disabled`, and its `answering_machine_detection_config`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AmdRequest {
    /// `detect`, `detect_beep` or `greeting_end`.
    pub mode: Mode,
    /// The config, Telnyx's defaults for keys not given.
    pub config: AmdConfig,
}

/// `call.machine.detection.ended` `result`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Detection {
    /// A person answered.
    Human,
    /// An answering machine or voicemail answered.
    Machine,
    /// No decision within `total_analysis_time_millis`.
    NotSure,
}

impl Detection {
    /// The Telnyx value.
    pub fn as_str(self) -> &'static str {
        match self {
            Detection::Human => "human",
            Detection::Machine => "machine",
            Detection::NotSure => "not_sure",
        }
    }
}

/// `call.machine.greeting.ended` `result`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Greeting {
    /// The greeting ended with a beep.
    BeepDetected,
    /// The greeting ended in silence (`greeting_end`).
    Ended,
    /// No end found within `greeting_total_analysis_time_millis` (`greeting_end`).
    NotSure,
}

impl Greeting {
    /// The Telnyx value.
    pub fn as_str(self) -> &'static str {
        match self {
            Greeting::BeepDetected => "beep_detected",
            Greeting::Ended => "ended",
            Greeting::NotSure => "not_sure",
        }
    }
}

/// What the detector reports, each at most once, in this order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AmdEvent {
    /// `call.machine.detection.ended`, at the time given (since the start).
    DetectionEnded(Detection, Duration),
    /// `call.machine.greeting.ended`, at the time given.
    GreetingEnded(Greeting, Duration),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Before the first word.
    Initial,
    /// Words heard, no result yet.
    Greeting,
    /// `machine`: looking for the greeting's end.
    AfterMachine,
    /// Nothing more to report.
    Done,
}

/// One call's detector (see the module docs). Audio at 8000 or 16000 Hz.
#[derive(Debug)]
pub struct Detector {
    mode: Mode,
    cfg: AmdConfig,
    rate_hz: u32,
    /// Samples per frame (20 ms).
    frame_len: usize,
    /// The frame being filled.
    frame: Vec<i16>,
    /// Time of the start of `frame` (frames decided so far × 20 ms).
    clock: Duration,
    phase: Phase,
    /// The line's noise floor.
    floor: Floor,
    /// Silence in a row (frames below the voice level).
    silence_run: Duration,
    /// Silence or dips in a row (what separates words).
    gap_run: Duration,
    /// Voice in a row, in the current word.
    voice_run: Duration,
    /// Loudest frame of the current word.
    word_peak: f32,
    in_word: bool,
    words: u32,
    greeting_start: Duration,
    machine_at: Duration,
    tone: ToneRun,
    events: [Option<AmdEvent>; 2],
}

/// The line's noise floor by minimum statistics: the quietest frame of the
/// last [`FLOOR_BLOCKS`] blocks of [`FLOOR_BLOCK`] frames (2–2.5 s; speech
/// falls to the floor between words far more often), so it follows a line's
/// noise up within 2.5 s and down at once, and speech never pulls it up; a
/// steady sound longer than that becomes the floor. Before the first block ends
/// it is the quietest frame so far.
#[derive(Debug, Clone, Copy)]
struct Floor {
    /// The minima of the last blocks, oldest overwritten first.
    blocks: [f32; FLOOR_BLOCKS],
    current: f32,
    frames: u32,
    next: usize,
}

/// Frames per block of the floor's minimum (500 ms).
const FLOOR_BLOCK: u32 = 25;

/// Blocks the floor remembers.
const FLOOR_BLOCKS: usize = 4;

impl Default for Floor {
    fn default() -> Self {
        Self { blocks: [f32::INFINITY; FLOOR_BLOCKS], current: f32::INFINITY, frames: 0, next: 0 }
    }
}

impl Floor {
    /// Takes a frame's level; the floor after it.
    fn update(&mut self, level: f32) -> f32 {
        self.current = self.current.min(level);
        self.frames += 1;
        let floor = self.blocks.iter().fold(self.current, |m, b| m.min(*b));
        if self.frames == FLOOR_BLOCK {
            self.blocks[self.next] = self.current;
            self.next = (self.next + 1) % FLOOR_BLOCKS;
            self.current = f32::INFINITY;
            self.frames = 0;
        }
        floor
    }
}

/// A run of tonal frames.
#[derive(Debug, Clone, Copy, Default)]
struct ToneRun {
    hz: f32,
    length: Duration,
}

impl Detector {
    /// A detector for `mode` with `cfg`, fed audio at `rate_hz` (8000 or 16000;
    /// anything else is taken as 8000).
    pub fn new(mode: Mode, cfg: AmdConfig, rate_hz: u32) -> Self {
        let rate_hz = if rate_hz == 16000 { 16000 } else { 8000 };
        let frame_len = (rate_hz / 50) as usize;
        Self {
            mode,
            cfg,
            rate_hz,
            frame_len,
            frame: Vec::with_capacity(frame_len),
            clock: Duration::ZERO,
            phase: Phase::Initial,
            floor: Floor::default(),
            silence_run: Duration::ZERO,
            gap_run: Duration::ZERO,
            voice_run: Duration::ZERO,
            word_peak: 0.0,
            in_word: false,
            words: 0,
            greeting_start: Duration::ZERO,
            machine_at: Duration::ZERO,
            tone: ToneRun::default(),
            events: [None, None],
        }
    }

    /// Audio (`pcm`, PCM16 mono at the detector's rate) whose first sample was
    /// heard at `at` since the start. Time missing before it (no packets) counts
    /// as silence; audio after the detector is done is ignored.
    pub fn push(&mut self, at: Duration, pcm: &[i16]) {
        if self.phase == Phase::Done {
            return;
        }
        self.silence_until(at.saturating_sub(LATE));
        for chunk in pcm.chunks(self.frame_len) {
            let room = self.frame_len - self.frame.len();
            let (now, rest) = chunk.split_at(room.min(chunk.len()));
            self.frame.extend_from_slice(now);
            if self.frame.len() == self.frame_len {
                self.decide_frame();
            }
            self.frame.extend_from_slice(rest);
        }
    }

    /// Time passed to `now` (since the start): audio that did not come by then
    /// (less a short allowance for late packets) is silence, so the time limits
    /// fire on a line that sends nothing.
    pub fn advance(&mut self, now: Duration) {
        self.silence_until(now.saturating_sub(LATE));
    }

    /// The next result, if any.
    pub fn poll_event(&mut self) -> Option<AmdEvent> {
        let e = self.events[0].take();
        self.events.swap(0, 1);
        e
    }

    /// True once everything the mode can report is reported (drop the feed).
    pub fn is_done(&self) -> bool {
        self.phase == Phase::Done
    }

    /// Words counted so far (for logs and tests).
    pub fn words(&self) -> u32 {
        self.words
    }

    fn emit(&mut self, e: AmdEvent) {
        if self.events[0].is_none() {
            self.events[0] = Some(e);
        } else {
            self.events[1] = Some(e);
        }
    }

    /// Completes frames with silence until the clock reaches `t`.
    fn silence_until(&mut self, t: Duration) {
        // Bounded: at most one frame per 20 ms of the (caller-given) gap, and the
        // detector is done after the longest time limit anyway.
        while self.phase != Phase::Done && self.clock + FRAME <= t {
            self.frame.resize(self.frame_len, 0);
            self.decide_frame();
        }
    }

    fn decide_frame(&mut self) {
        let frame = std::mem::take(&mut self.frame);
        self.frame_decision(&frame);
        self.frame = frame;
        self.frame.clear();
        self.clock += FRAME;
    }

    fn frame_decision(&mut self, frame: &[i16]) {
        let level = mean_abs(frame);
        let floor = self.floor.update(level);
        let loud = level > self.cfg.silence_threshold as f32;
        let now = self.clock + FRAME;
        // Beeps are looked for in every frame above the threshold (a steady tone
        // can sit close to the floor of a noisy line); a beep is voice. (`detect`
        // is done at its result: it looks for beeps only as a sign of a machine.)
        let tonal = if loud { tone_hz(frame, self.rate_hz) } else { None };
        let voiced = (loud && level > FLOOR_MARGIN * floor) || tonal.is_some();
        let beep_ended = self.track_tone(tonal);
        // A dip: voice well below the word's peak (between words spoken without
        // a pause; synthetic and fast speech rarely falls to silence).
        let dip = voiced && self.in_word && level < DIP * self.word_peak;
        if voiced && !dip {
            self.voice_run += FRAME;
            self.gap_run = Duration::ZERO;
            self.word_peak = self.word_peak.max(level);
            if self.voice_run >= MIN_VOICE {
                self.silence_run = Duration::ZERO;
            }
            if !self.in_word && self.voice_run >= MIN_WORD {
                self.in_word = true;
                self.words += 1;
                if self.phase == Phase::Initial {
                    self.phase = Phase::Greeting;
                    self.greeting_start = now.saturating_sub(self.voice_run);
                }
            }
        } else {
            if !voiced {
                self.silence_run += FRAME;
            }
            self.gap_run += FRAME;
            // At least between_words_silence_millis, to the frame below (one frame at least).
            let between = ms(self.cfg.between_words_silence_millis / 20 * 20).max(FRAME);
            if self.gap_run >= between {
                self.in_word = false;
                self.voice_run = Duration::ZERO;
                self.word_peak = 0.0;
            }
        }
        match self.phase {
            Phase::Initial | Phase::Greeting => self.detect(now, beep_ended),
            Phase::AfterMachine => self.greeting_end(now, beep_ended),
            Phase::Done => {}
        }
    }

    /// Follows steady tones; true on the frame a beep is over (or has lasted
    /// [`MAX_BEEP_WAIT`]).
    fn track_tone(&mut self, tonal: Option<f32>) -> bool {
        match tonal {
            Some(hz) if self.tone.length > Duration::ZERO && (hz - self.tone.hz).abs() <= 0.02 * self.tone.hz => {
                self.tone.length += FRAME;
                self.tone.hz = 0.5 * (self.tone.hz + hz);
                self.tone.length >= MAX_BEEP_WAIT
            }
            Some(hz) => {
                let was_beep = self.tone.length >= MIN_BEEP;
                self.tone = ToneRun { hz, length: FRAME };
                was_beep
            }
            None => {
                let was_beep = self.tone.length >= MIN_BEEP;
                self.tone = ToneRun::default();
                was_beep
            }
        }
    }

    fn detect(&mut self, now: Duration, beep: bool) {
        let c = &self.cfg;
        let result = if now >= ms(c.total_analysis_time_millis) {
            Some(Detection::NotSure)
        } else if self.phase == Phase::Initial && self.silence_run >= ms(c.initial_silence_millis) {
            Some(Detection::Machine)
        } else if self.phase == Phase::Greeting && self.silence_run >= ms(c.after_greeting_silence_millis) {
            Some(Detection::Human)
        } else if self.voice_run > ms(c.maximum_word_length_millis)
            || self.words > c.maximum_number_of_words
            || (self.phase == Phase::Greeting
                && now.saturating_sub(self.greeting_start) > ms(c.greeting_duration_millis))
            || beep
        {
            Some(Detection::Machine)
        } else {
            None
        };
        let Some(result) = result else { return };
        self.emit(AmdEvent::DetectionEnded(result, now));
        if result == Detection::Machine && self.mode != Mode::Detect {
            self.phase = Phase::AfterMachine;
            self.machine_at = now;
            if beep {
                self.greeting_end(now, true);
            }
        } else {
            self.phase = Phase::Done;
        }
    }

    fn greeting_end(&mut self, now: Duration, beep: bool) {
        let c = &self.cfg;
        let timed_out = now.saturating_sub(self.machine_at) >= ms(c.greeting_total_analysis_time_millis);
        let result = if beep {
            Some(Greeting::BeepDetected)
        } else if self.mode == Mode::GreetingEnd && self.silence_run >= ms(c.greeting_silence_duration_millis) {
            Some(Greeting::Ended)
        } else if timed_out && self.mode == Mode::GreetingEnd {
            Some(Greeting::NotSure)
        } else {
            None
        };
        if let Some(g) = result {
            self.emit(AmdEvent::GreetingEnded(g, now));
        }
        // `detect_beep` reports nothing when no beep came.
        if result.is_some() || timed_out {
            self.phase = Phase::Done;
        }
    }
}

fn ms(millis: u32) -> Duration {
    Duration::from_millis(u64::from(millis))
}

/// Mean absolute amplitude of a frame (0..32768).
fn mean_abs(frame: &[i16]) -> f32 {
    if frame.is_empty() {
        return 0.0;
    }
    let sum: u64 = frame.iter().map(|s| u64::from(s.unsigned_abs())).sum();
    sum as f32 / frame.len() as f32
}

/// Share of the frame's power at `hz` (1.0 for a pure tone at `hz`): the
/// Goertzel power at `hz`, 2·|X(hz)|² / (N·Σx²).
fn tone_share(frame: &[i16], rate_hz: u32, hz: f32, energy: f32) -> f32 {
    let w = 2.0 * std::f32::consts::PI * hz / rate_hz as f32;
    let coeff = 2.0 * w.cos();
    let (mut s1, mut s2) = (0.0f32, 0.0f32);
    for &x in frame {
        let s0 = f32::from(x) + coeff * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    let power = s1 * s1 + s2 * s2 - coeff * s1 * s2;
    2.0 * power / (frame.len() as f32 * energy)
}

/// The frame's frequency if it is one steady tone in the beep band: the best
/// of a coarse Goertzel scan, refined in 5 Hz steps, holding at least
/// [`TONAL_RATIO`] of the frame's power.
fn tone_hz(frame: &[i16], rate_hz: u32) -> Option<f32> {
    let energy: f32 = frame.iter().map(|&x| f32::from(x) * f32::from(x)).sum();
    if energy <= 0.0 {
        return None;
    }
    let best_of = |lo: f32, step: f32, n: usize| {
        (0..n)
            .map(|k| lo + step * k as f32)
            .map(|hz| (hz, tone_share(frame, rate_hz, hz, energy)))
            .fold((0.0f32, 0.0f32), |best, x| if x.1 > best.1 { x } else { best })
    };
    let steps = ((BEEP_HIGH_HZ - BEEP_LOW_HZ) / SCAN_STEP_HZ) as usize + 1;
    let (coarse, _) = best_of(BEEP_LOW_HZ, SCAN_STEP_HZ, steps);
    let (hz, share) = best_of(coarse - 25.0, 5.0, 11);
    (share >= TONAL_RATIO).then_some(hz)
}

#[cfg(test)]
mod tests {
    use super::*;

    const RATE: usize = 8000;

    fn tone(hz: f32, amp: f32, ms: usize) -> Vec<i16> {
        (0..RATE * ms / 1000)
            .map(|i| (amp * (2.0 * std::f32::consts::PI * hz * i as f32 / RATE as f32).sin()) as i16)
            .collect()
    }

    /// Deterministic noise (xorshift), uniform in ±amp.
    fn noise(amp: f32, ms: usize, seed: &mut u32) -> Vec<i16> {
        (0..RATE * ms / 1000)
            .map(|_| {
                *seed ^= *seed << 13;
                *seed ^= *seed >> 17;
                *seed ^= *seed << 5;
                ((*seed as f32 / u32::MAX as f32) * 2.0 - 1.0) * amp
            })
            .map(|x| x as i16)
            .collect()
    }

    fn silence(ms: usize) -> Vec<i16> {
        vec![0; RATE * ms / 1000]
    }

    /// Word-like bursts: `n` bursts of `on` ms of noise with `off` ms gaps.
    fn words(n: usize, on: usize, off: usize, seed: &mut u32) -> Vec<i16> {
        let mut v = Vec::new();
        for _ in 0..n {
            v.extend(noise(6000.0, on, seed));
            v.extend(silence(off));
        }
        v
    }

    /// Feeds `audio` in 20 ms packets on time; the events and when they came.
    fn run(mode: Mode, cfg: AmdConfig, audio: &[i16]) -> Vec<AmdEvent> {
        let mut d = Detector::new(mode, cfg, RATE as u32);
        let mut out = Vec::new();
        for (k, chunk) in audio.chunks(160).enumerate() {
            d.push(FRAME * k as u32, chunk);
            out.extend(std::iter::from_fn(|| d.poll_event()));
        }
        // Then nothing comes: the time limits still fire.
        let end = FRAME * (audio.len() / 160) as u32;
        for k in 0..1000u32 {
            d.advance(end + FRAME * k);
            out.extend(std::iter::from_fn(|| d.poll_event()));
            if d.is_done() {
                break;
            }
        }
        out
    }

    fn results(events: &[AmdEvent]) -> Vec<String> {
        events
            .iter()
            .map(|e| match e {
                AmdEvent::DetectionEnded(d, _) => d.as_str().to_string(),
                AmdEvent::GreetingEnded(g, _) => format!("greeting:{}", g.as_str()),
            })
            .collect()
    }

    fn at(e: &AmdEvent) -> Duration {
        match e {
            AmdEvent::DetectionEnded(_, t) | AmdEvent::GreetingEnded(_, t) => *t,
        }
    }

    #[test]
    fn a_short_hello_then_silence_is_a_human() {
        let mut seed = 7;
        let mut audio = silence(400);
        audio.extend(words(2, 200, 80, &mut seed));
        audio.extend(silence(3000));
        let ev = run(Mode::DetectBeep, AmdConfig::default(), &audio);
        assert_eq!(results(&ev), ["human"]);
        // 400 + 2×280 ms of "hello", then 800 ms of silence (less the 80 ms gap
        // already counted).
        let t = at(&ev[0]).as_millis();
        assert!((1600..=1800).contains(&t), "{t}");
    }

    #[test]
    fn many_words_are_a_machine_and_its_beep_ends_the_greeting() {
        let mut seed = 11;
        let mut audio = silence(300);
        audio.extend(words(12, 220, 120, &mut seed));
        audio.extend(silence(400));
        audio.extend(tone(1000.0, 8000.0, 500));
        audio.extend(silence(2000));
        for mode in [Mode::DetectBeep, Mode::GreetingEnd] {
            let cfg = AmdConfig { greeting_total_analysis_time_millis: 10_000, ..AmdConfig::default() };
            let ev = run(mode, cfg, &audio);
            assert_eq!(results(&ev), ["machine", "greeting:beep_detected"], "{mode:?}");
            // Sixth word → machine at about 300 + 5×340 + 100 ms.
            let t = at(&ev[0]).as_millis();
            assert!((2000..=2300).contains(&t), "{t}");
            // The beep is reported when it stops: 300 + 12×340 + 400 + 500 ms.
            let t = at(&ev[1]).as_millis();
            assert!((5260..=5340).contains(&t), "{t}");
        }
        // `detect` stops at the result.
        assert_eq!(results(&run(Mode::Detect, AmdConfig::default(), &audio)), ["machine"]);
    }

    #[test]
    fn silence_is_not_sure_even_when_no_packet_comes() {
        assert_eq!(results(&run(Mode::GreetingEnd, AmdConfig::default(), &silence(4000))), ["not_sure"]);
        let ev = run(Mode::Detect, AmdConfig::default(), &[]);
        assert_eq!(results(&ev), ["not_sure"]);
        // Allowance for late packets: decided 120 ms after the limit at most.
        assert!((3500..=3640).contains(&(at(&ev[0]).as_millis())), "{ev:?}");
        // With a longer total, initial silence is the machine rule.
        let cfg = AmdConfig { total_analysis_time_millis: 6000, initial_silence_millis: 2500, ..AmdConfig::default() };
        assert_eq!(results(&run(Mode::Detect, cfg, &silence(3000))), ["machine"]);
    }

    #[test]
    fn greeting_end_reports_silence_or_the_time_limit() {
        let mut seed = 3;
        let greeting = words(10, 200, 100, &mut seed);
        let mut a = greeting.clone();
        a.extend(silence(3000));
        assert_eq!(results(&run(Mode::GreetingEnd, AmdConfig::default(), &a)), ["machine", "greeting:ended"]);
        // detect_beep: silence is no end, and no beep means no greeting event.
        assert_eq!(results(&run(Mode::DetectBeep, AmdConfig::default(), &a)), ["machine"]);
        // A greeting that talks on past greeting_total_analysis_time_millis.
        let long = words(40, 200, 100, &mut seed);
        assert_eq!(results(&run(Mode::GreetingEnd, AmdConfig::default(), &long)), ["machine", "greeting:not_sure"]);
    }

    #[test]
    fn one_long_word_or_a_long_greeting_is_a_machine() {
        let mut seed = 5;
        let cfg = AmdConfig { maximum_word_length_millis: 1000, ..AmdConfig::default() };
        let mut audio = silence(300);
        audio.extend(noise(5000.0, 2000, &mut seed));
        let ev = run(Mode::Detect, cfg, &audio);
        assert_eq!(results(&ev), ["machine"]);
        assert!((1300..=1400).contains(&(at(&ev[0]).as_millis())), "{ev:?}");
        let cfg = AmdConfig { greeting_duration_millis: 1500, maximum_number_of_words: 50, ..AmdConfig::default() };
        let mut audio = silence(200);
        audio.extend(words(10, 200, 100, &mut seed));
        let ev = run(Mode::Detect, cfg, &audio);
        assert_eq!(results(&ev), ["machine"]);
        assert!((1700..=1800).contains(&(at(&ev[0]).as_millis())), "{ev:?}");
    }

    #[test]
    fn tones_are_told_from_noise_and_speech_like_bursts() {
        let mut seed = 9;
        for hz in [400.0, 440.0, 1000.0, 1400.0, 2000.0] {
            let t = tone(hz, 6000.0, 20);
            let found = tone_hz(&t, 8000).unwrap_or_else(|| panic!("{hz} Hz is a tone"));
            assert!((found - hz).abs() <= 5.0, "{hz} → {found}");
            // With noise 20 dB below it.
            let n = noise(6000.0 / 10.0 * 1.7, 20, &mut seed);
            let noisy: Vec<i16> = t.iter().zip(&n).map(|(a, b)| a.saturating_add(*b)).collect();
            assert!(tone_hz(&noisy, 8000).is_some(), "{hz} Hz in noise");
        }
        assert!(tone_hz(&noise(6000.0, 20, &mut seed), 8000).is_none());
        // Two tones at once (a DTMF-like pair) are not one beep.
        let pair: Vec<i16> = tone(770.0, 4000.0, 20).iter().zip(tone(1336.0, 4000.0, 20)).map(|(a, b)| a + b).collect();
        assert!(tone_hz(&pair, 8000).is_none());
        // A beep needs MIN_BEEP of one steady tone: 60 ms is none.
        let mut audio = words(8, 200, 100, &mut seed);
        audio.extend(tone(1000.0, 8000.0, 60));
        audio.extend(silence(3000));
        let cfg = AmdConfig { greeting_total_analysis_time_millis: 3000, ..AmdConfig::default() };
        assert_eq!(results(&run(Mode::DetectBeep, cfg, &audio)), ["machine"]);
    }

    #[test]
    fn a_beep_before_any_result_is_a_machine_at_16_khz_too() {
        let tone16: Vec<i16> = (0..16 * 600)
            .map(|i| (8000.0 * (2.0 * std::f32::consts::PI * 1000.0 * i as f32 / 16000.0).sin()) as i16)
            .collect();
        let mut audio = vec![0i16; 16 * 300];
        audio.extend(&tone16);
        audio.extend(vec![0i16; 16 * 1000]);
        let mut d = Detector::new(Mode::GreetingEnd, AmdConfig::default(), 16000);
        let mut ev = Vec::new();
        for (k, chunk) in audio.chunks(320).enumerate() {
            d.push(FRAME * k as u32, chunk);
            ev.extend(std::iter::from_fn(|| d.poll_event()));
        }
        assert_eq!(results(&ev), ["machine", "greeting:beep_detected"]);
        assert!(d.is_done());
    }

    #[test]
    fn late_and_odd_sized_packets_keep_the_timeline() {
        // 30 ms packets arriving in bursts of four, 120 ms late at most: the
        // clock follows the audio, not the arrival, and no silence is invented.
        let mut seed = 1;
        let mut audio = silence(200);
        audio.extend(words(2, 200, 80, &mut seed));
        audio.extend(silence(2000));
        let mut d = Detector::new(Mode::Detect, AmdConfig::default(), 8000);
        let mut ev = Vec::new();
        for (k, chunk) in audio.chunks(240).enumerate() {
            let arrival = Duration::from_millis(30 * (k as u64 / 4 * 4 + 3));
            d.push(arrival, chunk);
            ev.extend(std::iter::from_fn(|| d.poll_event()));
        }
        assert_eq!(results(&ev), ["human"]);
        assert_eq!(d.words(), 2);
    }
}
