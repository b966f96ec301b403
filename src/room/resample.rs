//! 8000 ↔ 16000 Hz conversion at the edges of a wideband room: a narrowband
//! participant's 20 ms frame is upsampled before it is mixed, and its mix-minus is
//! downsampled after (see `room::mixer`).
//!
//! One 63-tap half-band FIR (windowed sinc, Blackman window, cutoff 4000 Hz at
//! 16000 Hz) serves both ways. A half-band filter has every other coefficient
//! zero, so the 2× upsampler copies each input sample to the odd outputs and
//! computes the even ones with 32 taps, and the 2× downsampler needs 33 taps per
//! output: ~5 k multiply-adds per 20 ms frame each way, vectorized (see [`fir`]). Response (Blackman,
//! 63 taps): flat to ~3.3 kHz (the G.711 band ends at 3.4 kHz), −6 dB at 4 kHz,
//! ≥ 70 dB down above ~4.7 kHz. Delay: 31 samples at 16000 Hz (1.94 ms) each way.
//!
//! Own code rather than `media::transcode`'s rubato resampler: that one works on
//! stream bytes with a pending `Vec` and emits through closures per 10 ms; here
//! the room needs fixed 20 ms frames in fixed arrays with no allocation, and the
//! half-band structure halves the work. Sans-IO, no allocation after `new`.

/// Taps of the half-band filter (odd: symmetric around tap 31).
const TAPS: usize = 63;
/// Index of the centre tap.
const CENTRE: usize = TAPS / 2;
/// Input samples of history kept by the upsampler (8000 Hz side).
const UP_HISTORY: usize = CENTRE;
/// Largest input frame: 20 ms at 16000 Hz.
const MAX_INPUT: usize = 320;

/// The filter's even-indexed taps h[0], h[2], …, h[62] (the odd ones are zero
/// except the centre, 0.5), scaled so that they sum to exactly 0.5: DC passes
/// with gain 1 in both polyphase branches. Symmetric, so the order of the
/// multiply-adds below (tap j against sample p + j) is the convolution.
fn even_taps() -> [f32; CENTRE + 1] {
    let mut taps = [0f64; CENTRE + 1];
    for (i, tap) in taps.iter_mut().enumerate() {
        let n = 2 * i;
        let x = n as f64 - CENTRE as f64; // odd, never 0
        let sinc = (std::f64::consts::FRAC_PI_2 * x).sin() / (std::f64::consts::PI * x);
        let phase = 2.0 * std::f64::consts::PI * n as f64 / (TAPS - 1) as f64;
        let blackman = 0.42 - 0.5 * phase.cos() + 0.08 * (2.0 * phase).cos();
        *tap = sinc * blackman;
    }
    let sum: f64 = taps.iter().sum();
    let mut out = [0f32; CENTRE + 1];
    for (o, t) in out.iter_mut().zip(taps) {
        *o = (t * 0.5 / sum) as f32;
    }
    out
}

/// Rounds half away from zero and saturates (`as` saturates float → int).
/// Not `f32::round`: without SSE4.1 (baseline x86-64) that is a libm call per
/// sample, which cost more than the whole filter (measured: 5 µs per frame).
#[inline]
fn to_i16(x: f32) -> i16 {
    (x + 0.5f32.copysign(x)) as i16
}

/// `acc[p] = Σ_j taps[j] · samples[p + j]` for every `p < acc.len()`: the FIR
/// over a whole frame, tap by tap, so the inner loop runs along the frame with
/// no reduction and vectorizes on any target (SSE2, NEON); a per-output dot
/// product is a float reduction, which the compiler may not reorder.
#[inline]
fn fir(taps: &[f32; CENTRE + 1], samples: &[f32], acc: &mut [f32]) {
    acc.fill(0.0);
    for (j, &t) in taps.iter().enumerate() {
        for (a, &x) in acc.iter_mut().zip(&samples[j..]) {
            *a += t * x;
        }
    }
}

/// 8000 → 16000 Hz, one frame at a time, keeping the filter history between
/// frames. Input sample n comes out at output 2n + 31.
#[derive(Debug, Clone)]
pub struct Upsampler {
    taps: [f32; CENTRE + 1],
    /// `UP_HISTORY` samples of history followed by the current input.
    buf: [f32; UP_HISTORY + MAX_INPUT / 2],
}

impl Default for Upsampler {
    fn default() -> Self {
        Self::new()
    }
}

impl Upsampler {
    /// A resampler with silent history.
    pub fn new() -> Self {
        Upsampler { taps: even_taps(), buf: [0.0; UP_HISTORY + MAX_INPUT / 2] }
    }

    /// Upsamples `input` (PCM16 mono 8000 Hz, at most 160 samples) into
    /// `output[..2 * input.len()]` (PCM16 mono 16000 Hz); returns the samples
    /// written. Never allocates.
    pub fn process(&mut self, input: &[i16], output: &mut [i16]) -> usize {
        let n = input.len().min(MAX_INPUT / 2).min(output.len() / 2);
        for (b, &s) in self.buf[UP_HISTORY..UP_HISTORY + n].iter_mut().zip(input) {
            *b = f32::from(s);
        }
        // Even output 2p: the 32 even taps over x[p − 31] … x[p] (buf[p..=p+31]),
        // doubled (zero-stuffing halves the level).
        let mut acc = [0f32; MAX_INPUT / 2];
        fir(&self.taps, &self.buf[..UP_HISTORY + n], &mut acc[..n]);
        for (p, pair) in output[..2 * n].chunks_exact_mut(2).enumerate() {
            pair[0] = to_i16(2.0 * acc[p]);
            // Odd output 2p+1: the centre tap alone (0.5, doubled), i.e. x[p − 15].
            pair[1] = self.buf[p + UP_HISTORY - CENTRE / 2] as i16;
        }
        self.buf.copy_within(n..n + UP_HISTORY, 0);
        2 * n
    }

    /// Forgets the history (silence before the next frame).
    pub fn reset(&mut self) {
        self.buf.fill(0.0);
    }
}

/// 16000 → 8000 Hz, one frame at a time, keeping the filter history between
/// frames. Input sample 2n comes out at output n + 15.5 (31 input samples late).
#[derive(Debug, Clone)]
pub struct Downsampler {
    taps: [f32; CENTRE + 1],
    /// Even input samples x[0], x[2], … after `CENTRE` samples of history.
    even: [f32; CENTRE + MAX_INPUT / 2],
    /// Odd input samples x[1], x[3], … after `CENTRE` samples of history.
    odd: [f32; CENTRE + MAX_INPUT / 2],
}

impl Default for Downsampler {
    fn default() -> Self {
        Self::new()
    }
}

impl Downsampler {
    /// A resampler with silent history.
    pub fn new() -> Self {
        Downsampler { taps: even_taps(), even: [0.0; CENTRE + MAX_INPUT / 2], odd: [0.0; CENTRE + MAX_INPUT / 2] }
    }

    /// Downsamples `input` (PCM16 mono 16000 Hz, at most 320 samples, even
    /// length) into `output[..input.len() / 2]` (PCM16 mono 8000 Hz); returns the
    /// samples written. Never allocates.
    pub fn process(&mut self, input: &[i16], output: &mut [i16]) -> usize {
        let n = (input.len().min(MAX_INPUT) / 2).min(output.len());
        for (k, pair) in input[..2 * n].chunks_exact(2).enumerate() {
            self.even[CENTRE + k] = f32::from(pair[0]);
            self.odd[CENTRE + k] = f32::from(pair[1]);
        }
        // y[k] = Σ_i h[2i]·x[2k − 2i] + 0.5·x[2k − 31]; x[2m] = even[31 + m],
        // x[2m + 1] = odd[31 + m].
        let mut acc = [0f32; MAX_INPUT / 2];
        fir(&self.taps, &self.even[..CENTRE + n], &mut acc[..n]);
        for (k, out) in output[..n].iter_mut().enumerate() {
            *out = to_i16(acc[k] + 0.5 * self.odd[k + CENTRE / 2]);
        }
        self.even.copy_within(n..n + CENTRE, 0);
        self.odd.copy_within(n..n + CENTRE, 0);
        n
    }

    /// Forgets the history (silence before the next frame).
    pub fn reset(&mut self) {
        self.even.fill(0.0);
        self.odd.fill(0.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::room::test_signal::{level_db, tone};

    #[test]
    fn taps_are_a_half_band_lowpass_with_unit_dc_gain() {
        let taps = even_taps();
        let sum: f32 = taps.iter().sum();
        assert!((sum - 0.5).abs() < 1e-6, "even taps sum {sum}");
        // Symmetric: h[2i] = h[62 − 2i].
        for i in 0..taps.len() {
            assert!((taps[i] - taps[taps.len() - 1 - i]).abs() < 1e-7, "tap {i} not symmetric");
        }
        // A DC input comes out at the same level both ways.
        let mut up = Upsampler::new();
        let mut out = [0i16; 320];
        for _ in 0..3 {
            up.process(&[1000; 160], &mut out);
        }
        assert!(out.iter().all(|&s| (s - 1000).abs() <= 1), "up DC: {:?}", &out[..8]);
        let mut down = Downsampler::new();
        let mut out = [0i16; 160];
        for _ in 0..3 {
            down.process(&[1000; 320], &mut out);
        }
        assert!(out.iter().all(|&s| (s - 1000).abs() <= 1), "down DC: {:?}", &out[..8]);
    }

    #[test]
    fn an_impulse_comes_out_with_the_documented_delay() {
        let mut up = Upsampler::new();
        let mut input = [0i16; 160];
        input[10] = 16000;
        let mut out = [0i16; 320];
        up.process(&input, &mut out);
        let peak = out.iter().enumerate().max_by_key(|(_, s)| s.unsigned_abs()).map(|(i, _)| i);
        assert_eq!(peak, Some(2 * 10 + CENTRE));

        let mut down = Downsampler::new();
        let mut input = [0i16; 320];
        input[21] = 16000; // odd input index: lands on the centre tap at output (21 + 31) / 2
        let mut out = [0i16; 160];
        down.process(&input, &mut out);
        let peak = out.iter().enumerate().max_by_key(|(_, s)| s.unsigned_abs()).map(|(i, _)| i);
        assert_eq!(peak, Some((21 + CENTRE) / 2));
    }

    #[test]
    fn passband_is_kept_and_images_and_aliases_are_removed() {
        let amplitude = 8000.0;
        for freq in [300.0, 1000.0, 3000.0] {
            // Up: the tone stays, its image at 8000 − f is gone.
            let input = tone(freq, 8000, amplitude, 8000);
            let mut up = Upsampler::new();
            let mut out = Vec::new();
            let mut frame = [0i16; 320];
            for chunk in input.chunks(160) {
                let n = up.process(chunk, &mut frame);
                out.extend_from_slice(&frame[..n]);
            }
            let kept = level_db(&out[640..], freq, 16000, amplitude);
            let image = level_db(&out[640..], 8000.0 - freq, 16000, amplitude);
            assert!((-0.5..=0.2).contains(&kept), "up {freq} Hz at {kept:.1} dB");
            assert!(image < -60.0, "up {freq} Hz: image {image:.1} dB");

            // Down: the tone stays; a tone at 8000 − f (above 4 kHz) does not alias onto it.
            let input = tone(freq, 16000, amplitude, 16000);
            let above = tone(8000.0 - freq, 16000, amplitude, 16000);
            let mut down = Downsampler::new();
            let (mut out, mut aliased) = (Vec::new(), Vec::new());
            let mut down2 = Downsampler::new();
            let mut frame = [0i16; 160];
            for (a, b) in input.chunks(320).zip(above.chunks(320)) {
                let n = down.process(a, &mut frame);
                out.extend_from_slice(&frame[..n]);
                let n = down2.process(b, &mut frame);
                aliased.extend_from_slice(&frame[..n]);
            }
            let kept = level_db(&out[320..], freq, 8000, amplitude);
            let alias = level_db(&aliased[320..], freq, 8000, amplitude);
            assert!((-0.5..=0.2).contains(&kept), "down {freq} Hz at {kept:.1} dB");
            if freq < 3000.0 {
                assert!(alias < -60.0, "down: {} Hz aliases at {alias:.1} dB", 8000.0 - freq);
            }
        }
    }
}
