//! Audio codecs of SIP legs behind one interface: [`Decoder`] turns an RTP payload
//! into PCM16 mono at the codec's [`AudioCodec::sample_rate`] (8000 Hz for G.711,
//! 16000 Hz for G.722 and Opus), [`Encoder`] turns such PCM into a payload. Both are
//! sans-IO, keep their state between packets (G.722's ADPCM predictors, Opus's
//! range coder and concealment history), and never allocate per packet: the caller
//! owns the buffers, sized by [`MAX_FRAME_SAMPLES`] and [`MAX_PAYLOAD_BYTES`].
//!
//! G.711 is `media::g711`'s lookup tables; G.722 (`g722`, the ITU-T algorithm in
//! Rust) and Opus (`opus`, the pure-Rust libopus port `opus-rs`) live in submodules
//! (docs/benchmarks.md, "Wideband codecs", has the measurements behind them).

mod g722;
mod opus;

pub use self::opus::{BITRATE_BPS as OPUS_BITRATE_BPS, COMPLEXITY as OPUS_COMPLEXITY};

use crate::sdp::codec::{AudioCodec, G711};

/// Largest PCM frame a decoder writes or an encoder takes: 120 ms at 16000 Hz (Opus's
/// longest packet, RFC 6716 §3.2.5; G.711 and G.722 packets longer than that are
/// refused).
pub const MAX_FRAME_SAMPLES: usize = 1920;
/// Largest payload an encoder writes: 120 ms of G.711 (960 bytes) or G.722; an
/// Opus frame is far smaller at the bitrates used here (RFC 6716 §3.4: ≤ 1275 bytes).
pub const MAX_PAYLOAD_BYTES: usize = 1920;

const _: () = assert!(opus::MAX_PACKET_SAMPLES == MAX_FRAME_SAMPLES && opus::MAX_PACKET_BYTES <= MAX_PAYLOAD_BYTES);

/// The duration of an Opus packet in samples at 16000 Hz, from its TOC byte and
/// frame count (RFC 6716 §3.1–3.2), or `None` for an empty or malformed packet or
/// one longer than 120 ms. Reads two bytes at most; decodes nothing.
pub fn opus_packet_samples(packet: &[u8]) -> Option<usize> {
    opus::packet_samples(packet).ok()
}

/// What a codec could not do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// The payload is not valid for the codec (a malformed Opus packet, a payload
    /// that decodes to more than [`MAX_FRAME_SAMPLES`]).
    #[error("{codec:?} payload of {len} bytes cannot be decoded: {reason}")]
    BadPayload {
        /// The codec.
        codec: AudioCodec,
        /// Payload length, bytes.
        len: usize,
        /// Why.
        reason: &'static str,
    },
    /// The PCM frame has a length the codec cannot encode (Opus takes 10, 20, 40 or
    /// 60 ms; G.722 an even number of samples).
    #[error("{codec:?} cannot encode a frame of {samples} samples")]
    BadFrame {
        /// The codec.
        codec: AudioCodec,
        /// Samples offered.
        samples: usize,
    },
    /// The codec's implementation is not available in this build.
    #[error("{0:?} is not available in this build")]
    Unavailable(AudioCodec),
}

/// Decodes one leg's received payloads (one decoder per received stream).
pub struct Decoder {
    inner: DecoderKind,
}

enum DecoderKind {
    G711(G711),
    G722(Box<g722::G722Decoder>),
    Opus(opus::OpusDecoder),
}

impl Decoder {
    /// A decoder for `codec`, in its initial state.
    ///
    /// # Errors
    /// [`CodecError::Unavailable`] when this build has no implementation of `codec`.
    pub fn new(codec: AudioCodec) -> Result<Decoder, CodecError> {
        let inner = match codec {
            AudioCodec::G722 => DecoderKind::G722(Box::new(g722::G722Decoder::new())),
            AudioCodec::Opus => DecoderKind::Opus(opus::OpusDecoder::new().ok_or(CodecError::Unavailable(codec))?),
            _ => match codec.g711() {
                Some(law) => DecoderKind::G711(law),
                None => return Err(CodecError::Unavailable(codec)),
            },
        };
        Ok(Decoder { inner })
    }

    /// The codec decoded.
    pub fn codec(&self) -> AudioCodec {
        match self.inner {
            DecoderKind::G711(law) => law.into(),
            DecoderKind::G722(_) => AudioCodec::G722,
            DecoderKind::Opus(_) => AudioCodec::Opus,
        }
    }

    /// Decodes `payload` into `out` (PCM16 mono at [`AudioCodec::sample_rate`]) and
    /// returns the samples written.
    ///
    /// G.722: two samples per byte (RFC 3551 §4.5.2), every byte valid. Opus: one
    /// packet of any mode, bandwidth and channel count (RFC 6716 §3; RFC 7587
    /// §3.4: stereo is downmixed), 2.5 to 120 ms.
    ///
    /// # Errors
    /// [`CodecError::BadPayload`] for a payload the codec rejects (an empty or
    /// malformed Opus packet: bad frame-length coding, a frame count over 120 ms)
    /// or that would not fit in `out` or in [`MAX_FRAME_SAMPLES`]; the decoder's
    /// state is then as if the packet were lost.
    pub fn decode(&mut self, payload: &[u8], out: &mut [i16]) -> Result<usize, CodecError> {
        let bad = |codec, reason| CodecError::BadPayload { codec, len: payload.len(), reason };
        match &mut self.inner {
            DecoderKind::G711(law) => {
                if payload.len() > out.len() {
                    return Err(bad((*law).into(), "too long"));
                }
                Ok(law.decode(payload, out))
            }
            DecoderKind::G722(dec) => {
                let samples = payload.len().saturating_mul(2);
                if samples > out.len() || samples > MAX_FRAME_SAMPLES {
                    return Err(bad(AudioCodec::G722, "too long"));
                }
                Ok(dec.decode(payload, out))
            }
            DecoderKind::Opus(dec) => dec.decode(payload, out).map_err(|reason| bad(AudioCodec::Opus, reason)),
        }
    }

    /// Stands in for the packet lost just before `next` (the packet that arrived
    /// after the gap) and returns the samples written: Opus rebuilds it from
    /// `next`'s in-band FEC where `next` carries one (RFC 6716 §2.1.7; the lost
    /// packet taken to be as long as `next`) and conceals otherwise; the other
    /// codecs conceal [`Decoder::conceal`]-style for `out.len()` samples. `next`
    /// itself is not consumed: decode it with [`Decoder::decode`] afterwards.
    ///
    /// # Errors
    /// [`CodecError::BadPayload`] for an Opus `next` that is not a packet or
    /// would not fit in `out`.
    pub fn decode_fec(&mut self, next: &[u8], out: &mut [i16]) -> Result<usize, CodecError> {
        match &mut self.inner {
            DecoderKind::Opus(dec) => dec.decode_fec(next, out).map_err(|reason| CodecError::BadPayload {
                codec: AudioCodec::Opus,
                len: next.len(),
                reason,
            }),
            _ => Ok(self.conceal(out)),
        }
    }

    /// Fills `out` with audio standing in for lost packets (Opus's concealment; a
    /// fade to silence for codecs without one) and returns the samples written
    /// (`out.len()`, rounded down to what the codec can conceal).
    ///
    /// Opus: the decoder's packet-loss concealment (RFC 6716 §4.4: SILK's
    /// pitch-repeating extrapolation, CELT's periodic/noise continuation), in
    /// 2.5 ms steps, at most [`MAX_FRAME_SAMPLES`]; silence before the first
    /// packet. G.711 and G.722: silence.
    pub fn conceal(&mut self, out: &mut [i16]) -> usize {
        match &mut self.inner {
            DecoderKind::G711(_) | DecoderKind::G722(_) => {
                out.fill(0);
                out.len()
            }
            DecoderKind::Opus(dec) => dec.conceal(out),
        }
    }
}

/// Encodes PCM for one leg's sent stream (one encoder per sent stream).
pub struct Encoder {
    inner: EncoderKind,
}

enum EncoderKind {
    G711(G711),
    G722(Box<g722::G722Encoder>),
    Opus(opus::OpusEncoder),
}

impl Encoder {
    /// An encoder for `codec`, in its initial state.
    ///
    /// # Errors
    /// [`CodecError::Unavailable`] when this build has no implementation of `codec`.
    ///
    /// Opus is set up for speech: [`OPUS_BITRATE_BPS`] variable rate, in-band
    /// FEC, complexity [`OPUS_COMPLEXITY`], wideband at most (RFC 7587 §3.1.1).
    pub fn new(codec: AudioCodec) -> Result<Encoder, CodecError> {
        let inner = match codec {
            AudioCodec::G722 => EncoderKind::G722(Box::new(g722::G722Encoder::new())),
            AudioCodec::Opus => EncoderKind::Opus(opus::OpusEncoder::new().ok_or(CodecError::Unavailable(codec))?),
            _ => match codec.g711() {
                Some(law) => EncoderKind::G711(law),
                None => return Err(CodecError::Unavailable(codec)),
            },
        };
        Ok(Encoder { inner })
    }

    /// An Opus encoder as [`Encoder::new`] makes it but at `bitrate_bps` (clamped
    /// to 6000–510000 bit/s, RFC 6716 §2.1.1) and `complexity` (clamped to 0–10):
    /// for benchmarks and for a future per-call setting.
    ///
    /// # Errors
    /// [`CodecError::Unavailable`] if the library refuses the settings.
    pub fn opus_with(bitrate_bps: i32, complexity: i32) -> Result<Encoder, CodecError> {
        let enc = opus::OpusEncoder::with(bitrate_bps.clamp(6000, 510_000), complexity.clamp(0, 10))
            .ok_or(CodecError::Unavailable(AudioCodec::Opus))?;
        Ok(Encoder { inner: EncoderKind::Opus(enc) })
    }

    /// The codec encoded.
    pub fn codec(&self) -> AudioCodec {
        match self.inner {
            EncoderKind::G711(law) => law.into(),
            EncoderKind::G722(_) => AudioCodec::G722,
            EncoderKind::Opus(_) => AudioCodec::Opus,
        }
    }

    /// Encodes one frame of PCM16 mono at [`AudioCodec::sample_rate`] into `out`
    /// and returns the payload length in bytes.
    ///
    /// # Errors
    /// [`CodecError::BadFrame`] for a frame length the codec cannot encode or a
    /// payload that would not fit in `out`.
    ///
    /// G.722: any even number of samples up to [`MAX_FRAME_SAMPLES`], one byte per
    /// two samples (20 ms = 320 samples = 160 bytes). Opus: 10, 20, 40 or 60 ms
    /// (160, 320, 640 or 960 samples), one packet of at most [`MAX_PAYLOAD_BYTES`].
    pub fn encode(&mut self, pcm: &[i16], out: &mut [u8]) -> Result<usize, CodecError> {
        let codec = self.codec();
        let bad = CodecError::BadFrame { codec, samples: pcm.len() };
        match &mut self.inner {
            EncoderKind::G711(law) => {
                if pcm.len() > out.len() {
                    return Err(bad);
                }
                Ok(law.encode(pcm, out))
            }
            EncoderKind::G722(enc) => {
                if pcm.len() % 2 != 0 || pcm.len() > MAX_FRAME_SAMPLES || pcm.len() / 2 > out.len() {
                    return Err(bad);
                }
                Ok(enc.encode(pcm, out))
            }
            EncoderKind::Opus(enc) => {
                if !opus::OpusEncoder::frame_ok(pcm.len()) {
                    return Err(bad);
                }
                enc.encode(pcm, out).map_err(|()| bad)
            }
        }
    }
}

#[cfg(test)]
mod tests;
