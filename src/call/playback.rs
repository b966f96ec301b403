//! Audio the box plays into a call (`playback_start`) or a room (conference
//! `play`): a WAV file in `[media] dir` or at an http(s) URL, read under the policy
//! of [`crate::call::media_source`], decoded with hound into a [`Clip`]: PCM16
//! mono 8 kHz (channels averaged; 16 kHz resampled with the agent's resampler),
//! and a 16 kHz file also kept as it is, for wideband calls.
//!
//! Loading runs in the API request's task (and the decode on a blocking thread),
//! never in a call's control loop: a slow fetch delays only the request that asked
//! for it, and the call ends at once on BYE. At most [`MAX_LOADS`] loads run at
//! once over the box; more wait.
//!
//! Errors say what is wrong with the file: refused by the policy, not found, not a
//! WAV, an unsupported sample rate (8000 and 16000 Hz are accepted), too large
//! (more than `[media] max_fetch_bytes`).

use std::collections::HashMap;
use std::sync::Arc;

use crate::config::Encoding;
use crate::media::clip::Clip;
use crate::media::transcode::FromStream;

/// Loads (reads or fetches, then decodes) at once over the box; each holds up to
/// `[media] max_fetch_bytes` plus its decoded samples.
pub const MAX_LOADS: usize = 4;

static LOADS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(MAX_LOADS);

/// Loads `source` (`name.wav` or `/path/file.wav` inside `[media] dir`,
/// `file:///path`, `http(s)://...`) under `policy` as a clip.
///
/// # Errors
/// The text for the API caller: the policy's refusal or the read error
/// ([`crate::call::media_source::MediaError`]), or why the bytes are no usable WAV.
pub async fn load(source: &str, policy: &crate::config::Media) -> Result<Clip, String> {
    let _slot = LOADS.acquire().await.map_err(|e| e.to_string())?;
    let bytes = crate::call::media_source::read(source, policy).await.map_err(|e| e.to_string())?;
    tokio::task::spawn_blocking(move || decode(&bytes)).await.map_err(|e| e.to_string())?
}

/// Decodes WAV bytes to a clip: 8 kHz, and 16 kHz as well for a 16 kHz file.
pub fn decode(bytes: &[u8]) -> Result<Clip, String> {
    let mut reader = hound::WavReader::new(std::io::Cursor::new(bytes)).map_err(|e| format!("not a WAV file: {e}"))?;
    let spec = reader.spec();
    let channels = usize::from(spec.channels.max(1));
    let samples: Vec<i32> = match (spec.sample_format, spec.bits_per_sample) {
        (hound::SampleFormat::Int, 8..=16) => reader
            .samples::<i16>()
            .map(|s| s.map(|v| i32::from(v) << (16 - spec.bits_per_sample)))
            .collect::<Result<_, _>>(),
        (hound::SampleFormat::Int, 17..=32) => {
            reader.samples::<i32>().map(|s| s.map(|v| v >> (spec.bits_per_sample - 16))).collect::<Result<_, _>>()
        }
        (hound::SampleFormat::Float, 32) => {
            reader.samples::<f32>().map(|s| s.map(|v| (v.clamp(-1.0, 1.0) * 32767.0) as i32)).collect::<Result<_, _>>()
        }
        (f, b) => return Err(format!("unsupported WAV sample format {f:?} {b}-bit")),
    }
    .map_err(|e| format!("corrupt WAV data: {e}"))?;
    let mono: Vec<i16> = samples
        .chunks(channels)
        .map(|frame| (frame.iter().sum::<i32>() / frame.len() as i32).clamp(-32768, 32767) as i16)
        .collect();
    match spec.sample_rate {
        8000 => Ok(Clip::narrowband(mono)),
        16000 => {
            let mut from = FromStream::new(Encoding::L16, 16000).map_err(|e| e.to_string())?;
            let be: Vec<u8> = mono.iter().flat_map(|s| s.to_be_bytes()).collect();
            let mut out = Vec::with_capacity(mono.len() / 2 + 64);
            from.convert(&be, &mut out);
            from.flush(&mut out);
            Ok(Clip { narrow: out, wide: Some(mono) })
        }
        r => Err(format!("unsupported sample rate {r} Hz: use 8000 or 16000 Hz WAV files")),
    }
}

/// How many times a playback runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loops {
    /// This many times (≥ 1).
    Times(u32),
    /// Until stopped (`loop: "infinity"`).
    Forever,
}

/// One playback in progress on a call.
#[derive(Debug, Clone)]
pub struct Playing {
    /// As given (`media_url` in events).
    pub url: String,
    /// Mixed over the other audio.
    pub overlay: bool,
    /// The audio, kept for loops.
    pub pcm: Arc<Clip>,
    /// Runs left including the current one.
    pub loops: Loops,
    /// Speech of `speak`: reported as `call.speak.*`, not `call.playback.*`.
    pub speak: bool,
}

/// Playbacks of a call by id.
pub type Playbacks = HashMap<u64, Playing>;

#[cfg(test)]
mod tests {
    use super::*;

    fn wav(rate: u32, channels: u16, samples: &[i16]) -> Vec<u8> {
        let mut buf = std::io::Cursor::new(Vec::new());
        let spec = hound::WavSpec {
            channels,
            sample_rate: rate,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let mut w = hound::WavWriter::new(&mut buf, spec).unwrap();
        for s in samples {
            w.write_sample(*s).unwrap();
        }
        w.finalize().unwrap();
        buf.into_inner()
    }

    #[test]
    fn wav_files_become_8khz_mono_and_16khz_files_keep_their_band() {
        assert_eq!(decode(&wav(8000, 1, &[1, 2, 3])).unwrap(), Clip::narrowband(vec![1, 2, 3]));
        assert_eq!(decode(&wav(8000, 2, &[100, 200, -4, 4])).unwrap().narrow, vec![150, 0], "channels averaged");
        let one_second: Vec<i16> = (0..16000).map(|i| ((i as f64 * 0.3).sin() * 1000.0) as i16).collect();
        let clip = decode(&wav(16000, 1, &one_second)).unwrap();
        let n = clip.narrow.len();
        assert!((7900..=8100).contains(&n), "16 kHz resampled to 8 kHz: {n} samples");
        assert_eq!(clip.wide.as_deref(), Some(&one_second[..]), "the 16 kHz file as it is, for wideband calls");
        assert!(decode(&wav(44100, 1, &[0; 10])).unwrap_err().contains("44100"));
        assert!(decode(b"RIFF....nope").unwrap_err().contains("not a WAV"));
    }

    #[tokio::test]
    async fn sources_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("tone.wav"), wav(8000, 1, &[5, 6])).unwrap();
        std::fs::write(dir.path().join("junk.wav"), b"junk").unwrap();
        let policy = crate::config::Media {
            dir: dir.path().to_path_buf(),
            max_fetch_bytes: 1 << 20,
            fetch_timeout: std::time::Duration::from_secs(1),
            allow_private_urls: false,
        };
        assert_eq!(load("tone.wav", &policy).await.unwrap(), Clip::narrowband(vec![5, 6]));
        assert!(load("junk.wav", &policy).await.unwrap_err().contains("not a WAV"));
        assert!(load("/nonexistent/x.wav", &policy).await.unwrap_err().contains("/nonexistent/x.wav"));
        assert!(load("/etc/passwd", &policy).await.unwrap_err().contains("[media] dir"));
    }
}
