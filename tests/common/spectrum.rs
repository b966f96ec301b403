//! How much of a signal lies above 4 kHz: the measure that tells wideband audio
//! (G.722, Opus, L16/16000: 50–7000 Hz) from narrowband audio (G.711: 300–3400 Hz,
//! nothing above the 4 kHz Nyquist limit of 8000 samples a second).
//!
//! - [`band_ratio_db`]: the energy in [`HIGH`] (4.5–7.5 kHz) over the energy in
//!   [`LOW`] (0.3–3.4 kHz), in dB, from a Welch-averaged power spectrum (Hann
//!   windows of [`FFT_LEN`] samples, half overlapping; a plain radix-2 FFT here, no
//!   crate). The bands leave the 3.4–4.5 kHz transition out: G.722's QMF split
//!   and every resampler's anti-alias filter live there.
//! - A signal at 8000 Hz has no [`HIGH`] band at all: [`band_ratio_db`] gives
//!   `-inf`. To put a number on "narrowband", bring it to 16000 Hz first
//!   ([`resample`], sox's own resampler) and measure what a 16 kHz recorder would
//!   hold: the resampler's stop band, some 80 dB down.
//! - WAVs of any rate ([`read_wav`]): baresip's `snd/` dumps are at the codec's
//!   rate (8000 G.711, 16000 G.722, 48000 Opus).
//!
//! Figures measured on baresip ↔ baresip calls (tests/wideband.rs, `harness`):
//! see the thresholds there.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The band that only wideband audio carries, in Hz.
pub const HIGH: Range<f64> = 4500.0..7500.0;
/// The telephone band every codec carries, in Hz.
pub const LOW: Range<f64> = 300.0..3400.0;
/// Samples per FFT frame (a power of two).
pub const FFT_LEN: usize = 1024;

/// A mono 16-bit PCM WAV of any sample rate: (rate in Hz, samples).
pub fn read_wav(path: &Path) -> (u32, Vec<i16>) {
    let mut r = hound::WavReader::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let spec = r.spec();
    assert_eq!((spec.channels, spec.bits_per_sample), (1, 16), "mono 16-bit: {}", path.display());
    (spec.sample_rate, r.samples::<i16>().map(|s| s.unwrap()).collect())
}

/// Writes mono 16-bit `samples` at `rate` Hz to `path`.
pub fn write_wav(path: &Path, rate: u32, samples: &[i16]) {
    let spec =
        hound::WavSpec { channels: 1, sample_rate: rate, bits_per_sample: 16, sample_format: hound::SampleFormat::Int };
    let mut w = hound::WavWriter::create(path, spec).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    for &s in samples {
        w.write_sample(s).unwrap();
    }
    w.finalize().unwrap();
}

/// `input` resampled by sox to `rate` Hz, mono 16-bit, as `<input stem>.<rate>.wav`
/// beside it.
pub fn resample(input: &Path, rate: u32) -> PathBuf {
    let stem = input.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let out = input.with_file_name(format!("{stem}.{rate}.wav"));
    let run = Command::new("sox")
        .arg(input)
        .args(["-r", &rate.to_string(), "-c", "1", "-b", "16", "-e", "signed-integer"])
        .arg(&out)
        .output()
        .expect("sox is installed (scripts/setup-tests)");
    assert!(run.status.success(), "sox {}: {}", input.display(), String::from_utf8_lossy(&run.stderr));
    out
}

/// A 16 kHz mono 16-bit test source in `dir/<name>.wav`: `seconds` of a linear
/// chirp from 300 to 7000 Hz at half of full scale (sox `synth`, `:` is sox's
/// linear sweep; `-` would be exponential), with `lead_ms` of silence before and
/// `tail_ms` after. About as much of its energy is in [`HIGH`] as in [`LOW`].
pub fn chirp(dir: &Path, name: &str, seconds: f64, lead_ms: u32, tail_ms: u32) -> PathBuf {
    let wav = dir.join(format!("{name}.wav"));
    let run = Command::new("sox")
        .args(["-n", "-r", "16000", "-c", "1", "-b", "16", "-e", "signed-integer"])
        .arg(&wav)
        .args(["synth", &format!("{seconds:.3}"), "sine", "300:7000", "vol", "0.5"])
        .args(["pad", &format!("{:.3}", f64::from(lead_ms) / 1000.0), &format!("{:.3}", f64::from(tail_ms) / 1000.0)])
        .output()
        .expect("sox is installed (scripts/setup-tests)");
    assert!(run.status.success(), "sox synth: {}", String::from_utf8_lossy(&run.stderr));
    wav
}

/// In-place iterative radix-2 FFT of (re, im); `re.len()` is a power of two.
fn fft(re: &mut [f64], im: &mut [f64]) {
    let n = re.len();
    let mut j = 0;
    for i in 1..n {
        let mut bit = n >> 1;
        while j & bit != 0 {
            j ^= bit;
            bit >>= 1;
        }
        j |= bit;
        if i < j {
            re.swap(i, j);
            im.swap(i, j);
        }
    }
    let mut len = 2;
    while len <= n {
        let angle = -2.0 * std::f64::consts::PI / len as f64;
        for k in 0..len / 2 {
            let (wr, wi) = ((angle * k as f64).cos(), (angle * k as f64).sin());
            for start in (0..n).step_by(len) {
                let (a, b) = (start + k, start + k + len / 2);
                let (tr, ti) = (re[b] * wr - im[b] * wi, re[b] * wi + im[b] * wr);
                (re[b], im[b]) = (re[a] - tr, im[a] - ti);
                (re[a], im[a]) = (re[a] + tr, im[a] + ti);
            }
        }
        len <<= 1;
    }
}

/// Where `needle` best matches `hay`: the offset `k` (0..=hay.len()-needle.len())
/// maximising the normalized cross-correlation of `needle` and
/// `hay[k..k + needle.len()]`, and that correlation (−1..1; 0 when either is
/// silent or `hay` is shorter than `needle`). Computed by FFT, so a search over
/// seconds of lag stays cheap.
pub fn best_match(needle: &[i16], hay: &[i16]) -> (usize, f64) {
    let m = needle.len();
    if m == 0 || hay.len() < m {
        return (0, 0.0);
    }
    let n = (hay.len() + m).next_power_of_two();
    let (mut hr, mut hi) = (vec![0.0; n], vec![0.0; n]);
    let (mut nr, mut ni) = (vec![0.0; n], vec![0.0; n]);
    hay.iter().zip(hr.iter_mut()).for_each(|(&x, r)| *r = f64::from(x));
    needle.iter().zip(nr.iter_mut()).for_each(|(&x, r)| *r = f64::from(x));
    fft(&mut hr, &mut hi);
    fft(&mut nr, &mut ni);
    // H · conj(N), then the inverse FFT as conj(FFT(conj(x))) / n.
    let (mut cr, mut ci): (Vec<f64>, Vec<f64>) =
        (0..n).map(|k| (hr[k] * nr[k] + hi[k] * ni[k], -(hi[k] * nr[k] - hr[k] * ni[k]))).unzip();
    fft(&mut cr, &mut ci);
    let needle_energy: f64 = needle.iter().map(|&x| f64::from(x).powi(2)).sum();
    let mut prefix = vec![0.0; hay.len() + 1];
    for (i, &x) in hay.iter().enumerate() {
        prefix[i + 1] = prefix[i] + f64::from(x).powi(2);
    }
    let mut best = (0, 0.0);
    for k in 0..=hay.len() - m {
        let energy = prefix[k + m] - prefix[k];
        if energy <= 0.0 || needle_energy <= 0.0 {
            continue;
        }
        let c = cr[k] / n as f64 / (energy * needle_energy).sqrt();
        if c > best.1 {
            best = (k, c);
        }
    }
    best
}

/// Welch power spectrum of `pcm`: the mean over Hann-windowed frames of
/// [`FFT_LEN`] samples (hop: half a frame) of |X(k)|², for k in 0..=FFT_LEN/2.
/// Bin k is k·rate/FFT_LEN Hz. Empty when `pcm` is shorter than one frame.
pub fn power_spectrum(pcm: &[i16]) -> Vec<f64> {
    let window: Vec<f64> =
        (0..FFT_LEN).map(|i| 0.5 - 0.5 * (2.0 * std::f64::consts::PI * i as f64 / FFT_LEN as f64).cos()).collect();
    let mut sum = vec![0.0; FFT_LEN / 2 + 1];
    let mut frames = 0usize;
    let mut start = 0;
    while start + FFT_LEN <= pcm.len() {
        let mut re: Vec<f64> =
            pcm[start..start + FFT_LEN].iter().zip(&window).map(|(&x, w)| f64::from(x) * w).collect();
        let mut im = vec![0.0; FFT_LEN];
        fft(&mut re, &mut im);
        for (k, s) in sum.iter_mut().enumerate() {
            *s += re[k] * re[k] + im[k] * im[k];
        }
        frames += 1;
        start += FFT_LEN / 2;
    }
    if frames == 0 {
        return Vec::new();
    }
    sum.iter().map(|s| s / frames as f64).collect()
}

/// Energy of `spectrum` (from [`power_spectrum`] of audio at `rate` Hz) in the bins
/// whose frequency lies in `band` (Hz); 0 for a band above rate/2.
pub fn band_energy(spectrum: &[f64], rate: u32, band: Range<f64>) -> f64 {
    let hz = f64::from(rate) / FFT_LEN as f64;
    spectrum.iter().enumerate().filter(|(k, _)| band.contains(&(*k as f64 * hz))).map(|(_, e)| e).sum()
}

/// 10·log10(energy in [`HIGH`] / energy in [`LOW`]) of `pcm` at `rate` Hz, in dB:
/// about 0 for the chirp, −10 to −30 for speech through a wideband codec, `-inf`
/// at 8000 Hz (no such band), below −60 for narrowband audio brought to 16 kHz.
/// `NaN` when there is no energy in [`LOW`] (silence).
pub fn band_ratio_db(pcm: &[i16], rate: u32) -> f64 {
    let s = power_spectrum(pcm);
    10.0 * (band_energy(&s, rate, HIGH) / band_energy(&s, rate, LOW)).log10()
}

/// [`band_ratio_db`] of a WAV file (any rate, mono 16-bit).
pub fn wav_band_ratio_db(path: &Path) -> f64 {
    let (rate, pcm) = read_wav(path);
    band_ratio_db(&pcm, rate)
}
