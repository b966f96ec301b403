//! Audio codecs of SIP legs behind one interface: [`Decoder`] turns an RTP payload
//! into PCM16 mono at the codec's [`AudioCodec::sample_rate`] (8000 Hz for G.711,
//! 16000 Hz for G.722 and Opus), [`Encoder`] turns such PCM into a payload. Both are
//! sans-IO, keep their state between packets (G.722's ADPCM predictors, Opus's
//! range coder and concealment history), and never allocate per packet: the caller
//! owns the buffers, sized by [`MAX_FRAME_SAMPLES`] and [`MAX_PAYLOAD_BYTES`].
//!
//! G.711 is `media::g711`'s lookup tables; G.722 and Opus live in submodules.

use crate::sdp::codec::{AudioCodec, G711};

/// Largest PCM frame a decoder writes or an encoder takes: 120 ms at 16000 Hz (Opus's
/// longest packet, RFC 6716 §3.2.5; G.711 and G.722 packets longer than that are
/// refused).
pub const MAX_FRAME_SAMPLES: usize = 1920;
/// Largest payload an encoder writes: 120 ms of G.711 (960 bytes) or G.722; an
/// Opus frame is far smaller at the bitrates used here (RFC 6716 §3.4: ≤ 1275 bytes).
pub const MAX_PAYLOAD_BYTES: usize = 1920;

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
}

impl Decoder {
    /// A decoder for `codec`, in its initial state.
    ///
    /// # Errors
    /// [`CodecError::Unavailable`] when this build has no implementation of `codec`.
    pub fn new(codec: AudioCodec) -> Result<Decoder, CodecError> {
        let inner = match codec.g711() {
            Some(law) => DecoderKind::G711(law),
            None => return Err(CodecError::Unavailable(codec)),
        };
        Ok(Decoder { inner })
    }

    /// The codec decoded.
    pub fn codec(&self) -> AudioCodec {
        match self.inner {
            DecoderKind::G711(law) => law.into(),
        }
    }

    /// Decodes `payload` into `out` (PCM16 mono at [`AudioCodec::sample_rate`]) and
    /// returns the samples written.
    ///
    /// # Errors
    /// [`CodecError::BadPayload`] for a payload the codec rejects or that would not
    /// fit in `out`; the decoder's state is then as if the packet were lost.
    pub fn decode(&mut self, payload: &[u8], out: &mut [i16]) -> Result<usize, CodecError> {
        match self.inner {
            DecoderKind::G711(law) => {
                if payload.len() > out.len() {
                    return Err(CodecError::BadPayload { codec: law.into(), len: payload.len(), reason: "too long" });
                }
                Ok(law.decode(payload, out))
            }
        }
    }

    /// Fills `out` with audio standing in for lost packets (Opus's concealment; a
    /// fade to silence for codecs without one) and returns the samples written
    /// (`out.len()`, rounded down to what the codec can conceal).
    pub fn conceal(&mut self, out: &mut [i16]) -> usize {
        match self.inner {
            DecoderKind::G711(_) => {
                out.fill(0);
                out.len()
            }
        }
    }
}

/// Encodes PCM for one leg's sent stream (one encoder per sent stream).
pub struct Encoder {
    inner: EncoderKind,
}

enum EncoderKind {
    G711(G711),
}

impl Encoder {
    /// An encoder for `codec`, in its initial state.
    ///
    /// # Errors
    /// [`CodecError::Unavailable`] when this build has no implementation of `codec`.
    pub fn new(codec: AudioCodec) -> Result<Encoder, CodecError> {
        let inner = match codec.g711() {
            Some(law) => EncoderKind::G711(law),
            None => return Err(CodecError::Unavailable(codec)),
        };
        Ok(Encoder { inner })
    }

    /// The codec encoded.
    pub fn codec(&self) -> AudioCodec {
        match self.inner {
            EncoderKind::G711(law) => law.into(),
        }
    }

    /// Encodes one frame of PCM16 mono at [`AudioCodec::sample_rate`] into `out`
    /// and returns the payload length in bytes.
    ///
    /// # Errors
    /// [`CodecError::BadFrame`] for a frame length the codec cannot encode or a
    /// payload that would not fit in `out`.
    pub fn encode(&mut self, pcm: &[i16], out: &mut [u8]) -> Result<usize, CodecError> {
        match self.inner {
            EncoderKind::G711(law) => {
                if pcm.len() > out.len() {
                    return Err(CodecError::BadFrame { codec: law.into(), samples: pcm.len() });
                }
                Ok(law.encode(pcm, out))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn g711_round_trips_through_the_common_interface() {
        for codec in [AudioCodec::Pcmu, AudioCodec::Pcma] {
            let pcm: Vec<i16> = (0..160).map(|i| ((i as f64 * 0.3).sin() * 8000.0) as i16).collect();
            let mut payload = [0u8; MAX_PAYLOAD_BYTES];
            let n = Encoder::new(codec).unwrap().encode(&pcm, &mut payload).unwrap();
            assert_eq!(n, 160);
            let mut back = [0i16; MAX_FRAME_SAMPLES];
            let m = Decoder::new(codec).unwrap().decode(&payload[..n], &mut back).unwrap();
            assert_eq!(m, 160);
            let err: f64 = pcm.iter().zip(&back).map(|(a, b)| f64::from(a - b).abs()).sum::<f64>() / 160.0;
            assert!(err < 200.0, "{codec:?} mean error {err}");
        }
    }
}
