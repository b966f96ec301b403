//! Whole audio clips made off the call (speech from a TTS engine): a tolerant
//! reader of 16-bit PCM WAV (RIFF, WAVE `fmt ` format 1 or 0xFFFE, any rate and
//! channel count), a resampler of a whole clip to the call's 8000 Hz (and to
//! 16000 Hz for wideband calls), and [`Clip`], audio the box plays at both rates.
//!
//! The reader accepts the streamed WAV that `espeak-ng --stdout` and HTTP TTS
//! servers write: RIFF and `data` sizes of 0x7FFFFFFF/0xFFFFFFFF ("unknown") are
//! clamped to the bytes present. Anything else (8-bit, float, compressed) is an
//! error naming the format.
//!
//! Resampling is rubato's sinc resampler (Blackman window, 128 taps, linear
//! interpolation of a 256× oversampled table) run over the whole clip with its
//! delay removed; G.711 audio needs nothing finer.

use rubato::audioadapter_buffers::direct::SequentialSlice;
use rubato::{Async, FixedAsync, Resampler, SincInterpolationParameters, SincInterpolationType, WindowFunction};

/// The call's sample rate, Hz.
pub const CALL_RATE_HZ: u32 = 8000;

/// The samples (PCM16, channels averaged to mono) and sample rate (Hz) of a
/// 16-bit PCM WAV file.
///
/// # Errors
/// Not RIFF/WAVE, no `fmt ` or `data` chunk, or a format other than 16-bit PCM.
pub fn wav_pcm16(bytes: &[u8]) -> Result<(Vec<i16>, u32), String> {
    if bytes.len() < 12 || &bytes[..4] != b"RIFF" || &bytes[8..12] != b"WAVE" {
        return Err("not a WAV file (no RIFF/WAVE header)".into());
    }
    let u16_at = |i: usize| u16::from_le_bytes([bytes[i], bytes[i + 1]]);
    let u32_at = |i: usize| u32::from_le_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
    let mut at = 12;
    let mut format: Option<(u16, u32)> = None;
    while at + 8 <= bytes.len() {
        let (id, size) = (&bytes[at..at + 4], u32_at(at + 4) as usize);
        let body = at + 8;
        let end = body.saturating_add(size).min(bytes.len());
        match id {
            b"fmt " if end - body >= 16 => {
                let (tag, channels, rate, bits) = (u16_at(body), u16_at(body + 2), u32_at(body + 4), u16_at(body + 14));
                if !(tag == 1 || tag == 0xFFFE) || bits != 16 || channels == 0 {
                    return Err(format!("unsupported WAV format {tag:#x}, {bits}-bit: 16-bit PCM is needed"));
                }
                format = Some((channels, rate));
            }
            b"data" => {
                let (channels, rate) = format.ok_or("WAV data before its fmt chunk")?;
                let samples: Vec<i16> =
                    bytes[body..end].chunks_exact(2).map(|b| i16::from_le_bytes([b[0], b[1]])).collect();
                let n = usize::from(channels);
                let mono = samples
                    .chunks_exact(n)
                    .map(|f| (f.iter().map(|&s| i32::from(s)).sum::<i32>() / n as i32) as i16)
                    .collect();
                return Ok((mono, rate));
            }
            _ => {}
        }
        // Chunks are padded to an even length (RIFF).
        at = body.saturating_add(size).saturating_add(size & 1);
    }
    Err("WAV file without a data chunk".into())
}

/// The rate of a wideband call's audio, Hz (G.722, Opus, L16/16000; issue 22).
pub const WIDE_RATE_HZ: u32 = 16_000;

/// Audio the box plays into a call (a `playback_start` file, `speak` speech, a
/// gather prompt, a beep): PCM16 mono at 8000 Hz, and at 16000 Hz as well when
/// its source carried that band (a source at 16 kHz or more), so a wideband call
/// (G.722, Opus) plays it without passing through 8 kHz.
///
/// Both versions are made from the source once, when the clip is loaded or
/// synthesized, not per play; the 8 kHz one is exactly what a narrowband-only box
/// made before (the same resampler, straight from the source rate).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Clip {
    /// PCM16 mono, 8000 Hz.
    pub narrow: Vec<i16>,
    /// The same audio at 16000 Hz (`len` ≈ 2 × `narrow.len()`); `None` when the
    /// source was narrowband (a wideband call then plays `narrow` upsampled).
    pub wide: Option<Vec<i16>>,
}

impl Clip {
    /// A clip that only exists at 8000 Hz (a tone, an 8 kHz file).
    pub fn narrowband(pcm: Vec<i16>) -> Self {
        Clip { narrow: pcm, wide: None }
    }

    /// `pcm` (PCM16 mono at `rate_hz`, 4000 to 192000 Hz) at 8000 Hz, and at
    /// 16000 Hz too when `rate_hz` ≥ 16000. Blocking (seconds of audio take
    /// milliseconds): run it on a blocking thread.
    ///
    /// # Errors
    /// A rate out of range, or the resampler refusing its parameters.
    pub fn from_source(pcm: &[i16], rate_hz: u32) -> Result<Self, String> {
        let narrow = resample(pcm, rate_hz, CALL_RATE_HZ)?;
        let wide = if rate_hz >= WIDE_RATE_HZ { Some(resample(pcm, rate_hz, WIDE_RATE_HZ)?) } else { None };
        Ok(Clip { narrow, wide })
    }

    /// The clip's length, seconds.
    pub fn seconds(&self) -> f64 {
        self.narrow.len() as f64 / f64::from(CALL_RATE_HZ)
    }

    /// An empty clip to build from parts with [`Clip::append`]: it has a wide
    /// version until a part without one is appended.
    pub fn empty() -> Self {
        Clip { narrow: Vec::new(), wide: Some(Vec::new()) }
    }

    /// Appends `other` (each rate to its own; the wide version survives only
    /// when both have one).
    pub fn append(&mut self, other: &Clip) {
        self.wide = match (self.wide.take(), &other.wide) {
            (Some(mut a), Some(b)) => {
                a.extend_from_slice(b);
                Some(a)
            }
            _ => None,
        };
        self.narrow.extend_from_slice(&other.narrow);
    }

    /// Keeps at most `ms` of the clip (both rates).
    pub fn truncate_ms(&mut self, ms: usize) {
        self.narrow.truncate(ms * 8);
        if let Some(w) = self.wide.as_mut() {
            w.truncate(ms * 16);
        }
    }

    /// Appends `ms` of silence at both rates.
    pub fn append_silence(&mut self, ms: usize) {
        self.narrow.resize(self.narrow.len() + ms * 8, 0);
        if let Some(w) = self.wide.as_mut() {
            w.resize(w.len() + ms * 16, 0);
        }
    }
}

/// `pcm` (PCM16 mono at `rate_hz`, 4000 to 192000 Hz) at 8000 Hz, the clip's
/// length scaled by the ratio (rounded up).
///
/// # Errors
/// A rate out of range, or the resampler refusing its parameters.
pub fn to_call_rate(pcm: &[i16], rate_hz: u32) -> Result<Vec<i16>, String> {
    resample(pcm, rate_hz, CALL_RATE_HZ)
}

/// `pcm` (PCM16 mono at `from_hz`, 4000 to 192000 Hz) at `to_hz` (8000 or
/// 16000), the clip's length scaled by the ratio (rounded up).
///
/// # Errors
/// A rate out of range, or the resampler refusing its parameters.
pub fn resample(pcm: &[i16], from_hz: u32, to_hz: u32) -> Result<Vec<i16>, String> {
    if from_hz == to_hz || pcm.is_empty() {
        return Ok(pcm.to_vec());
    }
    if !(4000..=192_000).contains(&from_hz) {
        return Err(format!("unsupported sample rate {from_hz} Hz"));
    }
    let ratio = f64::from(to_hz) / f64::from(from_hz);
    let parameters = SincInterpolationParameters::new(128, WindowFunction::Blackman)
        .oversampling_factor(256)
        .interpolation(SincInterpolationType::Linear);
    let chunk = 1024;
    let mut resampler = Async::<f32>::new_sinc(ratio, 1.0, &parameters, chunk, 1, FixedAsync::Input)
        .map_err(|e| format!("resampler: {e}"))?;
    let input: Vec<f32> = pcm.iter().map(|&s| f32::from(s) / 32768.0).collect();
    let mut output = vec![0.0f32; resampler.process_all_needed_output_len(input.len())];
    let out_len = output.len();
    let written = {
        let src = SequentialSlice::new(&input[..], 1, input.len()).map_err(|e| format!("resampler: {e}"))?;
        let mut dst = SequentialSlice::new_mut(&mut output[..], 1, out_len).map_err(|e| format!("resampler: {e}"))?;
        resampler.process_all_into_buffer(&src, &mut dst, input.len(), None).map_err(|e| format!("resampler: {e}"))?.1
    };
    Ok(output[..written].iter().map(|&s| (s * 32768.0).round().clamp(-32768.0, 32767.0) as i16).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wav(rate: u32, channels: u16, samples: &[i16], streamed: bool) -> Vec<u8> {
        let data = (samples.len() * 2) as u32;
        let (riff, data_size) = if streamed { (0x7fff_f024, 0x7fff_f000) } else { (36 + data, data) };
        let mut b = b"RIFF".to_vec();
        b.extend(riff.to_le_bytes());
        b.extend(b"WAVEfmt ");
        b.extend(16u32.to_le_bytes());
        b.extend(1u16.to_le_bytes());
        b.extend(channels.to_le_bytes());
        b.extend(rate.to_le_bytes());
        b.extend((rate * 2 * u32::from(channels)).to_le_bytes());
        b.extend((2 * channels).to_le_bytes());
        b.extend(16u16.to_le_bytes());
        b.extend(b"data");
        b.extend(data_size.to_le_bytes());
        b.extend(samples.iter().flat_map(|s| s.to_le_bytes()));
        b
    }

    #[test]
    fn streamed_and_stereo_wav_are_read() {
        assert_eq!(wav_pcm16(&wav(22050, 1, &[1, -2, 3], true)).unwrap(), (vec![1, -2, 3], 22050));
        assert_eq!(wav_pcm16(&wav(8000, 2, &[100, 200, -4, 4], false)).unwrap(), (vec![150, 0], 8000));
        assert!(wav_pcm16(b"RIFF....WAVE").unwrap_err().contains("data"));
        assert!(wav_pcm16(b"junk").unwrap_err().contains("not a WAV"));
        let mut float = wav(8000, 1, &[0], false);
        float[20] = 3; // format tag 3: IEEE float
        assert!(wav_pcm16(&float).unwrap_err().contains("16-bit PCM"));
    }

    #[test]
    fn a_tone_keeps_its_pitch_and_length_at_8khz() {
        for rate in [22050u32, 24000, 16000, 44100] {
            let tone: Vec<i16> = (0..rate as usize)
                .map(|i| (8000.0 * (2.0 * std::f64::consts::PI * 440.0 * i as f64 / f64::from(rate)).sin()) as i16)
                .collect();
            let out = to_call_rate(&tone, rate).unwrap();
            assert!((7990..=8010).contains(&out.len()), "{rate}: {} samples", out.len());
            let mid = &out[1000..7000];
            let crossings = mid.windows(2).filter(|w| (w[0] < 0) != (w[1] < 0)).count();
            let hz = crossings as f64 / 2.0 / (mid.len() as f64 / 8000.0);
            assert!((435.0..445.0).contains(&hz), "{rate}: {hz} Hz");
            let peak = mid.iter().map(|s| s.unsigned_abs()).max().unwrap();
            assert!((7600..=8400).contains(&peak), "{rate}: level kept, peak {peak}");
        }
        assert_eq!(to_call_rate(&[1, 2, 3], 8000).unwrap(), vec![1, 2, 3]);
        assert!(to_call_rate(&[1], 1000).is_err());
    }

    #[test]
    fn a_clip_keeps_16_khz_only_from_a_source_that_has_it() {
        let tone = |rate: u32, hz: f64| -> Vec<i16> {
            (0..rate as usize)
                .map(|i| (8000.0 * (2.0 * std::f64::consts::PI * hz * i as f64 / f64::from(rate)).sin()) as i16)
                .collect()
        };
        // espeak-ng's rate: the 8 kHz version is exactly what `to_call_rate` makes.
        let src = tone(22050, 6000.0);
        let clip = Clip::from_source(&src, 22050).unwrap();
        assert_eq!(clip.narrow, to_call_rate(&src, 22050).unwrap());
        let wide = clip.wide.as_ref().expect("a 22.05 kHz source has the band");
        assert!((15_990..=16_010).contains(&wide.len()), "{}", wide.len());
        let peak = wide[2000..14_000].iter().map(|s| s.unsigned_abs()).max().unwrap();
        assert!(peak > 7000, "6 kHz kept at 16 kHz: peak {peak}");
        let narrow_peak = clip.narrow[1000..7000].iter().map(|s| s.unsigned_abs()).max().unwrap();
        assert!(narrow_peak < 400, "6 kHz is above the 8 kHz version's band: peak {narrow_peak}");
        assert_eq!(Clip::from_source(&tone(8000, 440.0), 8000).unwrap().wide, None, "nothing to keep from 8 kHz");
        // Built from parts: each rate appended to its own; a narrowband part ends the wide version.
        let mut c = Clip::empty();
        c.append(&Clip { narrow: vec![1], wide: Some(vec![1, 1]) });
        c.append_silence(1);
        assert_eq!(c, Clip { narrow: [vec![1], vec![0; 8]].concat(), wide: Some([vec![1, 1], vec![0; 16]].concat()) });
        c.truncate_ms(0);
        assert_eq!(c, Clip { narrow: vec![], wide: Some(vec![]) });
        c.append(&Clip::narrowband(vec![5]));
        assert_eq!(c, Clip::narrowband(vec![5]));
        assert!((Clip::narrowband(vec![0; 4000]).seconds() - 0.5).abs() < 1e-9);
    }
}
