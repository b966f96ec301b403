//! Noise suppression of call audio with RNNoise (Valin, "A Hybrid DSP/Deep
//! Learning Approach to Real-Time Full-Band Speech Enhancement", 2018), through
//! `nnnoiseless`, its pure-Rust port. Telnyx `suppression_start` /
//! `suppression_stop` (Call Control v2, `direction` `inbound` | `outbound` |
//! `both`) and the route/agent setting `noise_suppression`.
//!
//! RNNoise works on 48 kHz audio in 10 ms frames (480 samples, f32 at PCM16
//! scale). A [`Suppressor`] takes the call's PCM16 at 8000 or 16000 Hz, resamples it
//! to 48 kHz (`transcode::WholeRatio`, windowed sinc), runs RNNoise per 10 ms and
//! resamples back, in place: what goes in is what comes out, `frame.len()`
//! samples each call, 27.9 ms later (measured by `suppressbench`: 223 samples at
//! 8 kHz, 447 at 16 kHz; about 4 ms in each resampler, the rest RNNoise's
//! overlapping analysis windows). Packets of a whole number of 10 ms (10, 20,
//! 30 ms ptime) pass without buffering; any other size adds its remainder to the
//! delay once.
//!
//! [`Suppression`] says which directions of a leg are suppressed: the media
//! engine's jobs hold one `Suppressor` per suppressed direction, made when the
//! direction is turned on (`LegCommand::Suppress`) and dropped when it is turned
//! off. Sans-IO: no socket, no clock.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};

use nnnoiseless::DenoiseState;

use super::g711::G711;
use super::transcode::{TranscodeError, WholeRatio};

/// RNNoise's sample rate, Hz.
const MODEL_RATE: u32 = 48_000;
/// RNNoise's frame: 10 ms at 48 kHz.
const MODEL_FRAME: usize = DenoiseState::FRAME_SIZE;

pub use crate::config::Suppression;

/// A count of running suppressors against a cap.
struct Limiter {
    active: AtomicUsize,
    limit: AtomicUsize,
}

impl Limiter {
    const fn new() -> Self {
        Limiter { active: AtomicUsize::new(0), limit: AtomicUsize::new(usize::MAX) }
    }

    /// Takes a slot, or `Err(limit)` when all are taken.
    fn acquire(&'static self) -> Result<Slot, usize> {
        let limit = self.limit.load(Ordering::Relaxed);
        match self.active.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| (n < limit).then_some(n + 1)) {
            Ok(_) => Ok(Slot(self)),
            Err(_) => Err(limit),
        }
    }

    fn available(&self) -> bool {
        self.active.load(Ordering::Relaxed) < self.limit.load(Ordering::Relaxed)
    }
}

/// The process's suppressors (`[rtp] max_suppressed_streams`, set at start).
static LIMITER: Limiter = Limiter::new();

/// Caps the suppressors that may run at once (each costs about 0.6 % of an x86
/// core, several times that on a Pi: docs/benchmarks.md): beyond it a direction
/// stays unsuppressed and `sipbridge_noise_suppression_refused_total` counts it.
pub fn set_limit(limit: usize) {
    LIMITER.limit.store(limit, Ordering::Relaxed);
}

/// Suppressors running now (`sipbridge_noise_suppression_active`).
pub fn active() -> usize {
    LIMITER.active.load(Ordering::Relaxed)
}

/// Whether another suppressor may start now (the API answers 503 when not; a
/// job that finds none free later logs and counts it).
pub fn available() -> bool {
    LIMITER.available()
}

/// One direction's noise suppressor for PCM16 mono at 8000 or 16000 Hz.
/// About 30 KiB (RNNoise's state, the two resamplers), built once per suppressed
/// direction, never per packet.
pub struct Suppressor {
    pipe: Pipeline,
    /// Scratch for G.711 payloads (60 ms at 8 kHz per step).
    scratch: Box<[i16; G711_STEP]>,
    _slot: Slot,
}

/// A slot of a [`Limiter`], given back on drop.
struct Slot(&'static Limiter);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Why a suppressor was not made.
#[derive(Debug, thiserror::Error)]
pub enum SuppressError {
    /// Not 8000 or 16000 Hz, or the resampler could not be built (a bug).
    #[error(transparent)]
    Rate(TranscodeError),
    /// `[rtp] max_suppressed_streams` suppressors already run.
    #[error("{0} noise-suppressed streams already run ([rtp] max_suppressed_streams)")]
    Capacity(usize),
}

/// Resampler up, RNNoise, resampler down.
struct Pipeline {
    denoise: Box<DenoiseState<'static>>,
    up: WholeRatio,
    down: WholeRatio,
    /// 48 kHz samples waiting for a full RNNoise frame (PCM16 scale).
    pending: Vec<f32>,
    model_out: Box<[f32; MODEL_FRAME]>,
    /// RNNoise's output as PCM16, for the down resampler.
    model_pcm: Box<[i16; MODEL_FRAME]>,
    /// Call-rate samples ready to go out, oldest first.
    ready: VecDeque<i16>,
}

/// Samples of a G.711 payload suppressed per step (60 ms at 8 kHz).
const G711_STEP: usize = 480;

impl std::fmt::Debug for Suppressor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Suppressor").field("ready", &self.pipe.ready.len()).finish_non_exhaustive()
    }
}

impl Suppressor {
    /// A suppressor for audio at `sample_rate` Hz (8000 or 16000).
    ///
    /// # Errors
    /// [`SuppressError::Rate`] for another rate (or a resampler that cannot be
    /// built: a bug); [`SuppressError::Capacity`] when the process already runs
    /// its limit of suppressors ([`set_limit`]).
    pub fn new(sample_rate: u32) -> Result<Self, SuppressError> {
        if sample_rate != 8000 && sample_rate != 16000 {
            return Err(SuppressError::Rate(TranscodeError::UnsupportedRate {
                encoding: "L16",
                sample_rate,
                allowed: "noise suppression runs at 8000 or 16000 Hz",
            }));
        }
        // From here the slot is held: a failure below gives it back.
        let slot = LIMITER.acquire().map_err(|limit| {
            crate::security::NOISE_SUPPRESSION_REFUSED.inc();
            SuppressError::Capacity(limit)
        })?;
        let pipe = Pipeline {
            denoise: DenoiseState::new(),
            up: WholeRatio::new(sample_rate, MODEL_RATE).map_err(SuppressError::Rate)?,
            down: WholeRatio::new(MODEL_RATE, sample_rate).map_err(SuppressError::Rate)?,
            pending: Vec::with_capacity(MODEL_FRAME),
            model_out: Box::new([0.0; MODEL_FRAME]),
            model_pcm: Box::new([0; MODEL_FRAME]),
            ready: VecDeque::with_capacity(2 * MODEL_FRAME),
        };
        Ok(Suppressor { pipe, scratch: Box::new([0; G711_STEP]), _slot: slot })
    }

    /// Suppresses noise in `frame` in place: the same number of samples comes
    /// back, the denoised audio of a fixed time earlier (module docs).
    pub fn process(&mut self, frame: &mut [i16]) {
        self.pipe.run(frame);
    }

    /// Suppresses noise in a G.711 `payload` in place (8000 Hz audio in `codec`).
    pub fn process_g711(&mut self, codec: G711, payload: &mut [u8]) {
        for part in payload.chunks_mut(G711_STEP) {
            let n = codec.decode(part, &mut self.scratch[..]);
            self.pipe.run(&mut self.scratch[..n]);
            codec.encode(&self.scratch[..n], part);
        }
    }
}

impl Pipeline {
    fn run(&mut self, frame: &mut [i16]) {
        let Pipeline { denoise, up, down, pending, model_out, model_pcm, ready } = self;
        up.process(frame, |s| {
            pending.push(f32::from(s));
            if pending.len() == MODEL_FRAME {
                denoise.process_frame(&mut model_out[..], &pending[..]);
                for (o, &x) in model_pcm.iter_mut().zip(model_out.iter()) {
                    *o = x.round().clamp(-32768.0, 32767.0) as i16;
                }
                down.process(&model_pcm[..], |o| ready.push_back(o));
                pending.clear();
            }
        });
        // A size that is not whole 10 ms: the shortfall becomes delay, once.
        let n = frame.len();
        while ready.len() < n {
            ready.push_front(0);
        }
        for (out, s) in frame.iter_mut().zip(ready.drain(..n)) {
            *out = s;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic room-like noise: xorshift white noise, uniform in
    /// ±`amplitude`, through a one-pole low-pass (energy falling with frequency,
    /// as fans, traffic and rooms sound; RNNoise leaves steady white hiss at
    /// some levels mostly in place, measured, so it is not the test signal).
    fn noise(len: usize, amplitude: f32, seed: u32) -> Vec<i16> {
        let mut x = seed.max(1);
        let mut low = 0.0f32;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                let white = (x as f32 / u32::MAX as f32 * 2.0 - 1.0) * amplitude;
                low = 0.9 * low + 0.3 * white;
                low as i16
            })
            .collect()
    }

    fn energy(x: &[i16]) -> f64 {
        x.iter().map(|&s| f64::from(s) * f64::from(s)).sum::<f64>() / x.len().max(1) as f64
    }

    fn db(ratio: f64) -> f64 {
        10.0 * ratio.log10()
    }

    /// Steady noise alone is taken down by more than 10 dB once RNNoise has
    /// heard it for a moment (at both rates).
    #[test]
    fn steady_noise_is_taken_down() {
        for rate in [8000u32, 16000] {
            let frame = (rate / 50) as usize;
            let mut s = Suppressor::new(rate).unwrap();
            let input = noise(rate as usize * 3, 2000.0, 7);
            let mut output = input.clone();
            for f in output.chunks_mut(frame) {
                s.process(f);
            }
            let tail = rate as usize; // the last second
            let reduction = db(energy(&input[input.len() - tail..]) / energy(&output[output.len() - tail..]).max(1.0));
            assert!(reduction > 10.0, "{rate} Hz: noise down by {reduction:.1} dB");
        }
    }

    /// Frames of any size come back the same size; silence stays silence; a
    /// 20 ms frame needs no buffering (nothing is added to the delay).
    #[test]
    fn frames_keep_their_size_and_silence_stays_silent() {
        let mut s = Suppressor::new(8000).unwrap();
        for len in [160usize, 80, 240, 160, 7, 1000, 0, 160] {
            let mut f = vec![0i16; len];
            s.process(&mut f);
            assert_eq!(f.len(), len);
            assert!(f.iter().all(|&x| x.abs() <= 1), "silence in, silence out");
        }
        let mut fresh = Suppressor::new(8000).unwrap();
        let mut f = [0i16; 160];
        fresh.process(&mut f);
        assert!(fresh.pipe.ready.is_empty(), "a 20 ms frame passes straight through");
    }

    /// A G.711 payload is suppressed in place, in its own law, at any length.
    #[test]
    fn g711_payloads_are_suppressed_in_place() {
        for codec in [G711::Pcmu, G711::Pcma] {
            let mut s = Suppressor::new(8000).unwrap();
            let input = noise(8000 * 3, 3000.0, 11);
            let mut heard = Vec::new();
            for f in input.chunks(160) {
                let mut payload = [0u8; 160];
                codec.encode(f, &mut payload);
                s.process_g711(codec, &mut payload);
                let mut pcm = [0i16; 160];
                codec.decode(&payload, &mut pcm);
                heard.extend_from_slice(&pcm);
            }
            let reduction = db(energy(&input[16000..]) / energy(&heard[16000..]).max(1.0));
            assert!(reduction > 10.0, "{codec:?}: noise down by {reduction:.1} dB");
            let mut long = vec![codec.encode_sample(0); 1200];
            s.process_g711(codec, &mut long);
            assert_eq!(long.len(), 1200);
        }
    }

    /// The cap: beyond the limit a slot is refused, and a dropped one is free
    /// again (a limiter of the test's own: the process's is shared by the other
    /// tests' suppressors).
    #[test]
    fn the_limit_refuses_and_a_drop_frees_a_slot() {
        static L: Limiter = Limiter::new();
        L.limit.store(2, Ordering::Relaxed);
        let (a, b) = (L.acquire().unwrap(), L.acquire().unwrap());
        assert!(!L.available());
        assert_eq!(L.acquire().err(), Some(2));
        drop(a);
        assert!(L.available(), "the dropped one's slot is free");
        let c = L.acquire().unwrap();
        drop((b, c));
        assert_eq!(L.active.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn only_8_and_16_khz() {
        assert!(Suppressor::new(44100).is_err());
        assert!(Suppressor::new(48000).is_err());
        assert_eq!(Suppression::from_direction("both"), Some(Suppression { inbound: true, outbound: true }));
        assert_eq!(Suppression::from_direction("inbound"), Some(Suppression { inbound: true, outbound: false }));
        assert_eq!(Suppression::from_direction("outbound"), Some(Suppression { inbound: false, outbound: true }));
        assert_eq!(Suppression::from_direction("Inbound"), None);
        assert!(!Suppression::OFF.any());
    }
}
