//! The HTTP engine: an OpenAI-compatible speech endpoint (`POST /v1/audio/speech`,
//! platform.openai.com/docs/api-reference/audio/createSpeech; also served by
//! local servers such as Kokoro-FastAPI, openedai-speech, LocalAI). Body
//! `{"model", "input", "voice", "response_format"}`, `Authorization: Bearer`
//! with `[tts] api_key`; the answer is a WAV file or raw 16-bit LE mono PCM.
//!
//! The URL is the operator's (`[tts] url`), never the API caller's. No redirects,
//! no proxy from the environment, one timeout over the whole request
//! (`[tts] timeout`), and the body is counted while it streams in (at most
//! [`MAX_BODY_BYTES`]).

use std::time::Duration;

use super::TtsError;
use crate::config::{Tts, TtsFormat};

/// Largest answer read: 32 MiB (about 11 minutes of 24 kHz PCM).
pub const MAX_BODY_BYTES: usize = 32 * 1024 * 1024;

/// The audio the endpoint makes of `text` with `voice`: (PCM16 mono, rate in Hz).
///
/// # Errors
/// No URL, the request failed or timed out, a non-2xx status, a body too
/// large or not audio of the configured format.
pub async fn synthesize(cfg: &Tts, voice: &str, text: &str) -> Result<(Vec<i16>, u32), TtsError> {
    let url = cfg.url.clone().ok_or_else(|| TtsError::Engine("[tts] url is not set".into()))?;
    let client = client(cfg.timeout, url.scheme() == "https")?;
    let format = match cfg.response_format {
        TtsFormat::Wav => "wav",
        TtsFormat::Pcm => "pcm",
    };
    let body = serde_json::json!({"model": cfg.model, "input": text, "voice": voice, "response_format": format});
    let mut req = client.post(url.clone()).json(&body);
    if let Some(key) = &cfg.api_key {
        req = req.bearer_auth(key.expose());
    }
    let host = url.host_str().unwrap_or_default().to_string();
    let err = |e: reqwest::Error| {
        if e.is_timeout() { TtsError::Timeout(cfg.timeout) } else { TtsError::Engine(format!("{host}: {e}")) }
    };
    let work = async {
        let mut resp = req.send().await.map_err(err)?;
        let status = resp.status();
        if !status.is_success() {
            return Err(TtsError::Engine(format!("{host} answered HTTP {}", status.as_u16())));
        }
        let mut bytes = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(err)? {
            if bytes.len() + chunk.len() > MAX_BODY_BYTES {
                return Err(TtsError::Engine(format!("{host} answered more than {MAX_BODY_BYTES} bytes")));
            }
            bytes.extend_from_slice(&chunk);
        }
        Ok(bytes)
    };
    let bytes = tokio::time::timeout(cfg.timeout, work).await.map_err(|_| TtsError::Timeout(cfg.timeout))??;
    match cfg.response_format {
        TtsFormat::Wav => crate::media::clip::wav_pcm16(&bytes).map_err(|e| TtsError::Engine(format!("{host}: {e}"))),
        TtsFormat::Pcm => {
            Ok((bytes.chunks_exact(2).map(|b| i16::from_le_bytes([b[0], b[1]])).collect(), cfg.pcm_sample_rate))
        }
    }
}

fn client(timeout: Duration, https: bool) -> Result<reqwest::Client, TtsError> {
    plain_client(timeout, https).map_err(|e| TtsError::Engine(format!("HTTP client: {e}")))
}

/// An HTTP client for a request to an operator- or app-named server (the TTS
/// engine, a TeXML app server): `timeout` for the connect and the whole
/// exchange, no redirects followed, no proxy from the environment, rustls on
/// ring (a provider the daemon installed earlier wins); for a plain `http://`
/// URL a client without root certificates when the system has none.
///
/// # Errors
/// reqwest could not build the client (no TLS roots for an `https://` URL).
pub fn plain_client(timeout: Duration, https: bool) -> Result<reqwest::Client, reqwest::Error> {
    // ring only (no aws-lc); a provider installed earlier by the daemon wins.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let builder = || {
        reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .user_agent(concat!("sipbridge/", env!("CARGO_PKG_VERSION")))
    };
    match builder().build() {
        Err(_) if !https => builder().tls_certs_only(std::iter::empty()).build(),
        other => other,
    }
}
