//! Whole audio clips made off the call (speech from a TTS engine): a tolerant
//! reader of 16-bit PCM WAV (RIFF, WAVE `fmt ` format 1 or 0xFFFE, any rate and
//! channel count) and a resampler of a whole clip to the call's 8000 Hz.
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

/// `pcm` (PCM16 mono at `rate_hz`, 4000 to 192000 Hz) at 8000 Hz, the clip's
/// length scaled by the ratio (rounded up).
///
/// # Errors
/// A rate out of range, or the resampler refusing its parameters.
pub fn to_call_rate(pcm: &[i16], rate_hz: u32) -> Result<Vec<i16>, String> {
    if rate_hz == CALL_RATE_HZ || pcm.is_empty() {
        return Ok(pcm.to_vec());
    }
    if !(4000..=192_000).contains(&rate_hz) {
        return Err(format!("unsupported sample rate {rate_hz} Hz"));
    }
    let ratio = f64::from(CALL_RATE_HZ) / f64::from(rate_hz);
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
}
