//! Audio the box plays into a call (`playback_start`): a WAV file on the box or at
//! an http(s) URL, decoded with hound and converted to the media path's PCM16 mono
//! 8 kHz (channels averaged; 16 kHz resampled with the agent's resampler).
//!
//! Errors say what is wrong with the file: not found, not a WAV, an unsupported
//! sample rate (8000 and 16000 Hz are accepted), too large (more than
//! [`MAX_BYTES`]).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::agent::transcode::FromStream;
use crate::config::Encoding;

/// Largest file accepted (about 50 min of 8 kHz 16-bit mono).
pub const MAX_BYTES: usize = 50 * 1024 * 1024;

/// Loads `source` (`/path/file.wav`, `file:///path`, `http(s)://...`) as PCM16 8 kHz.
pub async fn load(source: &str) -> Result<Vec<i16>, String> {
    let bytes = if source.starts_with("http://") || source.starts_with("https://") {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(20))
            .build()
            .map_err(|e| format!("HTTP client: {e}"))?;
        let resp = client.get(source).send().await.map_err(|e| format!("cannot fetch {source}: {e}"))?;
        if !resp.status().is_success() {
            return Err(format!("fetching {source} answered HTTP {}", resp.status().as_u16()));
        }
        if resp.content_length().is_some_and(|n| n as usize > MAX_BYTES) {
            return Err(format!("{source} is larger than {MAX_BYTES} bytes"));
        }
        resp.bytes().await.map_err(|e| format!("cannot fetch {source}: {e}"))?.to_vec()
    } else {
        let path = source.strip_prefix("file://").unwrap_or(source);
        if !path.starts_with('/') {
            return Err(format!("{source:?} is neither an absolute path nor an http(s) URL"));
        }
        let meta = tokio::fs::metadata(path).await.map_err(|e| format!("{path}: {e}"))?;
        if meta.len() as usize > MAX_BYTES {
            return Err(format!("{path} is larger than {MAX_BYTES} bytes"));
        }
        tokio::fs::read(path).await.map_err(|e| format!("{path}: {e}"))?
    };
    tokio::task::spawn_blocking(move || decode(&bytes)).await.map_err(|e| e.to_string())?
}

/// Decodes WAV bytes to PCM16 mono 8 kHz.
pub fn decode(bytes: &[u8]) -> Result<Vec<i16>, String> {
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
        8000 => Ok(mono),
        16000 => {
            let mut from = FromStream::new(Encoding::L16, 16000).map_err(|e| e.to_string())?;
            let be: Vec<u8> = mono.iter().flat_map(|s| s.to_be_bytes()).collect();
            let mut out = Vec::with_capacity(mono.len() / 2 + 64);
            from.convert(&be, &mut out);
            from.flush(&mut out);
            Ok(out)
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
    pub pcm: Arc<Vec<i16>>,
    /// Runs left including the current one.
    pub loops: Loops,
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
    fn wav_files_become_8khz_mono() {
        assert_eq!(decode(&wav(8000, 1, &[1, 2, 3])).unwrap(), vec![1, 2, 3]);
        assert_eq!(decode(&wav(8000, 2, &[100, 200, -4, 4])).unwrap(), vec![150, 0], "channels averaged");
        let one_second: Vec<i16> = (0..16000).map(|i| ((i as f64 * 0.3).sin() * 1000.0) as i16).collect();
        let n = decode(&wav(16000, 1, &one_second)).unwrap().len();
        assert!((7900..=8100).contains(&n), "16 kHz resampled to 8 kHz: {n} samples");
        assert!(decode(&wav(44100, 1, &[0; 10])).unwrap_err().contains("44100"));
        assert!(decode(b"RIFF....nope").unwrap_err().contains("not a WAV"));
    }

    #[tokio::test]
    async fn sources_are_checked() {
        assert!(load("relative.wav").await.unwrap_err().contains("absolute"));
        assert!(load("/nonexistent/x.wav").await.unwrap_err().contains("/nonexistent/x.wav"));
    }
}
