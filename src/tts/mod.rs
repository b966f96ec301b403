//! Text to speech for `speak` and `gather_using_speak` (Telnyx "Speak text",
//! developers.telnyx.com/api-reference/call-commands/speak): the payload (text, or
//! the SSML subset of [`ssml`]) becomes a [`Clip`] for the call's player: PCM16
//! mono at 8 kHz, and at 16 kHz for wideband calls when the engine's audio has
//! that band (espeak-ng's 22.05 kHz does).
//!
//! Engines (`[tts] engine`, operator config only): `espeak-ng`, the local program
//! ([`espeak`]), or `http`, an OpenAI-compatible `/v1/audio/speech` endpoint
//! ([`http`]). Each text segment is looked up in the prompt cache ([`cache`])
//! first; a miss is synthesized, resampled to 8 and 16 kHz ([`crate::media::clip`]) and
//! stored. SSML breaks become silence. At most [`MAX_SYNTHESES`] syntheses run at
//! once over the box; more wait.
//!
//! Where it runs: in the API request's task (file and resampling work on blocking
//! threads), before the command goes to the call, as `playback_start` loads its
//! file: never on a call's loop or a media thread. A failure is a [`TtsError`]
//! for the request, never a stuck call.
//!
//! Must not touch: calls, SIP, the media engine (it only returns samples).

pub mod cache;
pub mod espeak;
pub mod http;
pub mod ssml;

use std::time::{Duration, Instant};

use crate::config::{Tts, TtsEngine};
use crate::media::clip::Clip;
pub use ssml::{MAX_PAYLOAD_CHARS, Segment};

/// Syntheses at once over the box (a Raspberry Pi has 4 cores and calls to run).
pub const MAX_SYNTHESES: usize = 2;

static SYNTHESES: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(MAX_SYNTHESES);

/// Why speech could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TtsError {
    /// The engine failed (could not run, error status, bad audio).
    #[error("speech engine: {0}")]
    Engine(String),
    /// The engine took longer than `[tts] timeout`.
    #[error("speech engine: no answer within {0:?}")]
    Timeout(Duration),
}

/// What to say: Telnyx's `payload`, `payload_type`, `voice` and `language`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Speech {
    /// The text and pauses, from [`segments`].
    pub segments: Vec<Segment>,
    /// Telnyx `voice`: `male`/`female`, a voice name of the HTTP engine; Telnyx
    /// provider voices (`AWS.Polly.Joanna`, anything with a `.`) mean `[tts] voice`.
    pub voice: Option<String>,
    /// Telnyx `language` (`en-US`): espeak-ng's voice when given.
    pub language: Option<String>,
}

/// The segments of a payload: plain text as one segment, SSML parsed.
///
/// # Errors
/// Empty, longer than 3000 characters, or SSML outside the subset (the text says
/// why, for the API's 400).
pub fn segments(payload: &str, is_ssml: bool) -> Result<Vec<Segment>, String> {
    if payload.chars().count() > MAX_PAYLOAD_CHARS {
        return Err(format!("the payload is longer than {MAX_PAYLOAD_CHARS} characters"));
    }
    let segments = if is_ssml {
        ssml::parse(payload)?
    } else {
        let words = payload.split_whitespace().collect::<Vec<_>>().join(" ");
        if words.is_empty() { Vec::new() } else { vec![Segment::Text(words)] }
    };
    if !segments.iter().any(|s| matches!(s, Segment::Text(_))) {
        return Err("the payload has no text to speak".into());
    }
    Ok(segments)
}

/// The engine's name for `speech`'s voice (see [`Speech::voice`]).
fn engine_voice(cfg: &Tts, speech: &Speech) -> String {
    let named = speech.voice.as_deref().filter(|v| !v.contains('.') && *v != "male" && *v != "female");
    match cfg.engine {
        TtsEngine::EspeakNg => {
            let base = speech.language.as_deref().map_or_else(|| cfg.voice.clone(), str::to_ascii_lowercase);
            match speech.voice.as_deref() {
                Some("female") => format!("{base}+f3"),
                Some("male") => format!("{base}+m3"),
                _ => base,
            }
        }
        TtsEngine::Http => named.unwrap_or(&cfg.voice).to_string(),
    }
}

/// `speech` as a clip (8 kHz, and 16 kHz when every text segment has it).
///
/// # Errors
/// [`TtsError`]: the engine failed or timed out (logged by the caller).
pub async fn synthesize(cfg: &Tts, speech: &Speech) -> Result<Clip, TtsError> {
    let voice = engine_voice(cfg, speech);
    let engine = match cfg.engine {
        TtsEngine::EspeakNg => "espeak-ng",
        TtsEngine::Http => "http",
    };
    let language = speech.language.clone().unwrap_or_default();
    let mut out = Clip::empty();
    for segment in &speech.segments {
        match segment {
            Segment::Break(d) => out.append_silence(d.as_millis() as usize),
            Segment::Text(text) => {
                let key = cache::key(engine, &voice, &language, text);
                let pcm = match cached(cfg, &key).await {
                    Some(pcm) => pcm,
                    None => {
                        let pcm = synthesize_text(cfg, engine, &voice, text).await?;
                        store(cfg, key, &pcm).await;
                        pcm
                    }
                };
                out.append(&pcm);
            }
        }
    }
    Ok(out)
}

async fn cached(cfg: &Tts, key: &str) -> Option<Clip> {
    if cfg.cache_max_bytes == 0 {
        return None;
    }
    let (dir, key) = (cfg.cache_dir.clone(), key.to_string());
    tokio::task::spawn_blocking(move || cache::get(&dir, &key)).await.ok().flatten()
}

async fn store(cfg: &Tts, key: String, pcm: &Clip) {
    if cfg.cache_max_bytes == 0 {
        return;
    }
    let (dir, max, pcm) = (cfg.cache_dir.clone(), cfg.cache_max_bytes, pcm.clone());
    let stored = tokio::task::spawn_blocking(move || cache::put(&dir, &key, &pcm, max)).await;
    if let Ok(Err(e)) = stored {
        tracing::warn!(dir = %cfg.cache_dir.display(), "tts: prompt not cached: {e}");
    }
}

/// One text through the engine, resampled to 8 kHz (and 16 kHz from a source
/// that has the band).
async fn synthesize_text(cfg: &Tts, engine: &str, voice: &str, text: &str) -> Result<Clip, TtsError> {
    let _slot = SYNTHESES.acquire().await.map_err(|e| TtsError::Engine(e.to_string()))?;
    let started = Instant::now();
    let (pcm, rate) = match cfg.engine {
        TtsEngine::EspeakNg => {
            let wav = espeak::synthesize(&cfg.program, voice, text, cfg.timeout).await?;
            crate::media::clip::wav_pcm16(&wav).map_err(|e| TtsError::Engine(format!("espeak-ng: {e}")))?
        }
        TtsEngine::Http => http::synthesize(cfg, voice, text).await?,
    };
    let pcm = tokio::task::spawn_blocking(move || Clip::from_source(&pcm, rate))
        .await
        .map_err(|e| TtsError::Engine(e.to_string()))?
        .map_err(TtsError::Engine)?;
    tracing::info!(
        engine,
        voice,
        chars = text.chars().count(),
        ms = started.elapsed().as_millis() as u64,
        "tts: synthesized {:.1} s of speech",
        pcm.seconds()
    );
    Ok(pcm)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(engine: TtsEngine) -> Tts {
        Tts {
            engine,
            voice: "en".into(),
            program: "espeak-ng".into(),
            url: None,
            model: "tts-1".into(),
            api_key: None,
            response_format: crate::config::TtsFormat::Wav,
            pcm_sample_rate: 24000,
            timeout: Duration::from_secs(10),
            cache_dir: "/nonexistent".into(),
            cache_max_bytes: 0,
        }
    }

    #[test]
    fn voices_per_engine() {
        let s = |voice: Option<&str>, language: Option<&str>| Speech {
            segments: vec![],
            voice: voice.map(Into::into),
            language: language.map(Into::into),
        };
        let e = cfg(TtsEngine::EspeakNg);
        assert_eq!(engine_voice(&e, &s(Some("female"), Some("en-US"))), "en-us+f3");
        assert_eq!(engine_voice(&e, &s(Some("AWS.Polly.Joanna"), None)), "en");
        let h = Tts { voice: "alloy".into(), ..cfg(TtsEngine::Http) };
        assert_eq!(engine_voice(&h, &s(Some("nova"), Some("en-US"))), "nova");
        assert_eq!(engine_voice(&h, &s(Some("Telnyx.KokoroTTS.af"), None)), "alloy");
        assert_eq!(engine_voice(&h, &s(Some("male"), None)), "alloy");
    }

    #[test]
    fn payloads_are_bounded_and_need_text() {
        assert_eq!(segments("  hello \n world ", false).unwrap(), vec![Segment::Text("hello world".into())]);
        assert!(segments(&"a".repeat(3001), false).unwrap_err().contains("3000"));
        assert!(segments("   ", false).is_err());
        assert!(segments(r#"<speak><break time="1s"/></speak>"#, true).unwrap_err().contains("no text"));
    }

    #[tokio::test]
    async fn a_missing_program_is_an_engine_error_not_a_hang() {
        let c = Tts { program: "/nonexistent/espeak-ng".into(), ..cfg(TtsEngine::EspeakNg) };
        let s = Speech { segments: vec![Segment::Text("hi".into())], voice: None, language: None };
        // Natively the spawn itself fails ("cannot run"); under qemu-user (the
        // arm64 unit tests) the exec fails in the child, which then exits with an
        // error. Either way: an engine error, at once.
        let r = synthesize(&c, &s).await;
        assert!(matches!(&r, Err(TtsError::Engine(e)) if e.contains("cannot run") || e.contains("espeak-ng")), "{r:?}");
    }

    #[tokio::test]
    async fn a_program_that_never_ends_is_killed_at_the_timeout() {
        // `sleep` ignores its stdin and writes nothing: only the timeout ends it.
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("slow-tts");
        std::fs::write(&script, "#!/bin/sh\nexec sleep 30\n").unwrap();
        std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        let started = Instant::now();
        let r = espeak::synthesize(script.to_str().unwrap(), "en", "hi", Duration::from_millis(500)).await;
        assert_eq!(r, Err(TtsError::Timeout(Duration::from_millis(500))));
        assert!(started.elapsed() < Duration::from_secs(20), "killed, not waited for");
    }
}
