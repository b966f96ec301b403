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

use nnnoiseless::DenoiseState;

use super::g711::G711;
use super::transcode::{TranscodeError, WholeRatio};

/// RNNoise's sample rate, Hz.
const MODEL_RATE: u32 = 48_000;
/// RNNoise's frame: 10 ms at 48 kHz.
const MODEL_FRAME: usize = DenoiseState::FRAME_SIZE;

pub use crate::config::Suppression;

/// One direction's noise suppressor for PCM16 mono at 8000 or 16000 Hz.
/// About 30 KiB (RNNoise's state, the two resamplers), built once per suppressed
/// direction, never per packet.
pub struct Suppressor {
    pipe: Pipeline,
    /// Scratch for G.711 payloads (60 ms at 8 kHz per step).
    scratch: Box<[i16; G711_STEP]>,
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
    /// [`TranscodeError::UnsupportedRate`] for another rate;
    /// [`TranscodeError::Resampler`] if the resampler cannot be built (a bug).
    pub fn new(sample_rate: u32) -> Result<Self, TranscodeError> {
        if sample_rate != 8000 && sample_rate != 16000 {
            return Err(TranscodeError::UnsupportedRate {
                encoding: "L16",
                sample_rate,
                allowed: "noise suppression runs at 8000 or 16000 Hz",
            });
        }
        let pipe = Pipeline {
            denoise: DenoiseState::new(),
            up: WholeRatio::new(sample_rate, MODEL_RATE)?,
            down: WholeRatio::new(MODEL_RATE, sample_rate)?,
            pending: Vec::with_capacity(MODEL_FRAME),
            model_out: Box::new([0.0; MODEL_FRAME]),
            model_pcm: Box::new([0; MODEL_FRAME]),
            ready: VecDeque::with_capacity(2 * MODEL_FRAME),
        };
        Ok(Suppressor { pipe, scratch: Box::new([0; G711_STEP]) })
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
