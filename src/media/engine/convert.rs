//! Codec conversion inside media jobs, for legs whose codec is not G.711 or
//! whose two sides differ beyond PCMU↔PCMA (issue 22):
//!
//! - [`Inbound`]: a leg's received payloads decoded once (`media::codec::Decoder`)
//!   to PCM16 at the codec's rate, plus, for a wideband (16 kHz) codec, the same
//!   audio taken to 8 kHz and µ-law encoded for consumers that work in G.711 (taps
//!   on 8 kHz recordings, listeners, rooms, 8 kHz agent streams).
//! - [`Outbound`]: PCM16 at 8 or 16 kHz encoded for a leg (`media::codec::Encoder`),
//!   through the box's 8000 ↔ 16000 Hz converter (`media::transcode::RateConverter`)
//!   when the rates differ, in whole frames of the input's duration.
//!
//! Both own fixed buffers (boxed once per leg): no allocation per packet.

use crate::media::codec::{CodecError, Decoder, Encoder, MAX_FRAME_SAMPLES, MAX_PAYLOAD_BYTES};
use crate::media::transcode::RateConverter;
use crate::sdp::codec::{AudioCodec, G711};

/// The law a wideband leg's audio takes for G.711 consumers.
pub const NARROW_LAW: G711 = G711::Pcmu;

/// Samples in 20 ms at 16000 Hz: the largest piece handed to a tap at once.
const PIECE_WIDE: usize = 320;

/// A leg's received audio, decoded once per packet.
pub struct Inbound {
    decoder: Decoder,
    /// 16000 → 8000 Hz, for wideband codecs.
    down: Option<RateConverter>,
    pcm: [i16; MAX_FRAME_SAMPLES],
    pcm_len: usize,
    narrow: [u8; MAX_FRAME_SAMPLES],
    narrow_len: usize,
}

impl Inbound {
    /// The decoder side of a `codec` leg.
    ///
    /// # Errors
    /// The codec is not available in this build, or the converter cannot be made.
    pub fn new(codec: AudioCodec) -> Result<Box<Inbound>, CodecError> {
        let down = if codec.is_wideband() {
            Some(RateConverter::down().map_err(|_| CodecError::Unavailable(codec))?)
        } else {
            None
        };
        Ok(Box::new(Inbound {
            decoder: Decoder::new(codec)?,
            down,
            pcm: [0; MAX_FRAME_SAMPLES],
            pcm_len: 0,
            narrow: [0; MAX_FRAME_SAMPLES],
            narrow_len: 0,
        }))
    }

    /// The codec decoded.
    pub fn codec(&self) -> AudioCodec {
        self.decoder.codec()
    }

    /// Decodes one payload; `false` (and nothing kept) when the codec rejects it.
    pub fn decode(&mut self, payload: &[u8]) -> bool {
        self.pcm_len = 0;
        self.narrow_len = 0;
        match self.decoder.decode(payload, &mut self.pcm) {
            Ok(n) => self.pcm_len = n,
            Err(e) => {
                tracing::trace!("payload not decoded: {e}");
                return false;
            }
        }
        if let Some(down) = self.down.as_mut() {
            let (narrow, len) = (&mut self.narrow, &mut self.narrow_len);
            down.process(&self.pcm[..self.pcm_len], |s| {
                if *len < narrow.len() {
                    narrow[*len] = NARROW_LAW.encode_sample(s);
                    *len += 1;
                }
            });
        }
        true
    }

    /// The last payload's PCM16 at the codec's rate.
    pub fn pcm(&self) -> &[i16] {
        &self.pcm[..self.pcm_len]
    }

    /// Hands the last payload to `f` in pieces of at most 20 ms: ([`NARROW_LAW`]
    /// bytes at 8 kHz, PCM16 at 16 kHz), for a wideband codec's taps.
    pub fn pieces(&self, mut f: impl FnMut(&[u8], &[i16])) {
        let narrow = &self.narrow[..self.narrow_len];
        for (i, wide) in self.pcm().chunks(PIECE_WIDE).enumerate() {
            let from = (i * PIECE_WIDE / 2).min(narrow.len());
            let to = ((i + 1) * PIECE_WIDE / 2).min(narrow.len());
            f(&narrow[from..to], wide);
        }
    }

    /// The last payload's audio at 8 kHz in [`NARROW_LAW`] (wideband codecs only).
    pub fn narrow(&self) -> &[u8] {
        &self.narrow[..self.narrow_len]
    }
}

/// A leg's sent audio: PCM frames in, payloads out.
pub struct Outbound {
    encoder: Encoder,
    /// Rate of the input frames the converter was made for, and the converter.
    conv: Option<(u32, RateConverter)>,
    /// Converted samples not yet encoded.
    fifo: [i16; 2 * MAX_FRAME_SAMPLES],
    fifo_len: usize,
    payload: [u8; MAX_PAYLOAD_BYTES],
    /// Opus reframing (`encode_each`): 16 kHz samples short of a 20 ms frame,
    /// and the 8 → 16 kHz converter feeding it.
    reframe: [i16; 2 * MAX_FRAME_SAMPLES],
    reframe_len: usize,
    reframe_up: Option<RateConverter>,
}

impl Outbound {
    /// The encoder side of a `codec` leg.
    ///
    /// # Errors
    /// The codec is not available in this build.
    pub fn new(codec: AudioCodec) -> Result<Box<Outbound>, CodecError> {
        Ok(Box::new(Outbound {
            encoder: Encoder::new(codec)?,
            conv: None,
            fifo: [0; 2 * MAX_FRAME_SAMPLES],
            fifo_len: 0,
            payload: [0; MAX_PAYLOAD_BYTES],
            reframe: [0; 2 * MAX_FRAME_SAMPLES],
            reframe_len: 0,
            reframe_up: None,
        }))
    }

    /// The codec encoded.
    pub fn codec(&self) -> AudioCodec {
        self.encoder.codec()
    }

    /// Encodes one frame `pcm` at `rate` Hz (8000 or 16000) as one payload of the
    /// same duration. While the rate converter fills (its first few ms) the frame
    /// is completed with silence at its start. `None` when the codec refuses the
    /// frame (a duration Opus cannot code) or the rate cannot be converted.
    pub fn encode(&mut self, pcm: &[i16], rate: u32) -> Option<&[u8]> {
        let codec = self.encoder.codec();
        let target = codec.sample_rate();
        if rate == target {
            let n = self.encoder.encode(pcm, &mut self.payload).ok()?;
            return Some(&self.payload[..n]);
        }
        let want = pcm.len() * target as usize / rate.max(1) as usize;
        if want == 0 || want > MAX_FRAME_SAMPLES {
            return None;
        }
        if self.conv.as_ref().is_none_or(|(r, _)| *r != rate) {
            let conv = match (rate, target) {
                (8000, 16_000) => RateConverter::up(),
                (16_000, 8000) => RateConverter::down(),
                _ => return None,
            };
            self.conv = Some((rate, conv.ok()?));
            self.fifo_len = 0;
        }
        let (_, conv) = self.conv.as_mut()?;
        let (fifo, len) = (&mut self.fifo, &mut self.fifo_len);
        conv.process(pcm, |s| {
            if *len < fifo.len() {
                fifo[*len] = s;
                *len += 1;
            }
        });
        if *len < want {
            // The converter's start: silence first, then what it produced.
            let have = *len;
            fifo.copy_within(..have, want - have);
            fifo[..want - have].fill(0);
            *len = want;
        }
        let n = self.encoder.encode(&fifo[..want], &mut self.payload).ok();
        fifo.copy_within(want..*len, 0);
        *len -= want;
        Some(&self.payload[..n?])
    }
}

impl Outbound {
    /// Encodes `pcm` at `rate` Hz for the leg and hands each payload to `emit`:
    /// one payload of the same duration, except for Opus, which codes only 10,
    /// 20, 40 or 60 ms frames: its audio goes out in 20 ms packets as it
    /// accumulates (a 30 ms G.711 packet gives one packet now and one with the
    /// next), so no audio is refused for its packet time.
    pub fn encode_each(&mut self, pcm: &[i16], rate: u32, mut emit: impl FnMut(&[u8])) {
        if self.encoder.codec() != AudioCodec::Opus {
            if let Some(payload) = self.encode(pcm, rate) {
                emit(payload);
            }
            return;
        }
        if pcm.len() * 16_000 == 320 * rate as usize {
            // A 20 ms frame: as is (the usual case; the FIFO stays empty).
            if self.reframe_len == 0 {
                if let Some(payload) = self.encode(pcm, rate) {
                    emit(payload);
                }
                return;
            }
        }
        // Other durations: through the reframing buffer, at 16 kHz.
        let mut wide = [0i16; MAX_FRAME_SAMPLES];
        let n = if rate == 16_000 {
            let n = pcm.len().min(MAX_FRAME_SAMPLES);
            wide[..n].copy_from_slice(&pcm[..n]);
            n
        } else {
            let mut n = 0;
            if self.reframe_up.is_none() {
                self.reframe_up = RateConverter::up().ok();
            }
            if let Some(up) = self.reframe_up.as_mut() {
                up.process(pcm, |s| {
                    if n < wide.len() {
                        wide[n] = s;
                        n += 1;
                    }
                });
            }
            n
        };
        for &s in &wide[..n] {
            if self.reframe_len < self.reframe.len() {
                self.reframe[self.reframe_len] = s;
                self.reframe_len += 1;
            }
        }
        while self.reframe_len >= 320 {
            let mut frame = [0i16; 320];
            frame.copy_from_slice(&self.reframe[..320]);
            self.reframe.copy_within(320..self.reframe_len, 0);
            self.reframe_len -= 320;
            if let Ok(len) = self.encoder.encode(&frame, &mut self.payload) {
                emit(&self.payload[..len]);
            }
        }
    }
}

/// `delta` RTP units of a `clock`-Hz stream in samples at `rate` Hz (G.722's
/// 8000 Hz clock at 16000 Hz is ×2, Opus's 48000 Hz at 8000 is ÷6).
pub fn rescale(delta: u32, clock: u32, rate: u32) -> u32 {
    (u64::from(delta) * u64::from(rate) / u64::from(clock.max(1))) as u32
}

/// A position on a leg's received RTP clock mapped to samples at another rate,
/// following the timestamps' differences (so 32-bit wrap-around is harmless).
#[derive(Default)]
pub struct Timeline {
    last: Option<(u32, u32)>,
}

impl Timeline {
    /// The position at `rate` Hz of RTP timestamp `rtp` on a `clock`-Hz stream.
    /// Jumps back or forward by more than 10 s restart the mapping there.
    pub fn map(&mut self, rtp: u32, clock: u32, rate: u32) -> u32 {
        let mapped = match self.last {
            Some((last_rtp, last_mapped)) => {
                let delta = rtp.wrapping_sub(last_rtp) as i32;
                if delta.unsigned_abs() > clock.saturating_mul(10) {
                    last_mapped
                } else if delta >= 0 {
                    last_mapped.wrapping_add(rescale(delta as u32, clock, rate))
                } else {
                    last_mapped.wrapping_sub(rescale(delta.unsigned_abs(), clock, rate))
                }
            }
            None => rescale(rtp, clock, rate),
        };
        self.last = Some((rtp, mapped));
        mapped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(hz: f64, rate: u32, n: usize) -> Vec<i16> {
        (0..n).map(|i| ((i as f64 * hz * std::f64::consts::TAU / f64::from(rate)).sin() * 8000.0) as i16).collect()
    }

    #[test]
    fn outbound_converts_rates_in_whole_frames() {
        let mut out = Outbound::new(AudioCodec::Pcmu).unwrap();
        // 16 kHz frames to a PCMU leg: 320 samples in, 160 bytes out every time.
        for _ in 0..10 {
            assert_eq!(out.encode(&tone(1000.0, 16_000, 320), 16_000).map(<[u8]>::len), Some(160));
        }
        // The same leg now fed 8 kHz frames: no conversion.
        assert_eq!(out.encode(&tone(1000.0, 8000, 160), 8000).map(<[u8]>::len), Some(160));
        let mut bad = Outbound::new(AudioCodec::Pcma).unwrap();
        assert!(bad.encode(&[0; 441], 44_100).is_none(), "no converter for 44.1 kHz");
    }

    #[test]
    fn timeline_follows_deltas_across_wraparound() {
        let mut t = Timeline::default();
        let start = u32::MAX - 959;
        let a = t.map(start, 48_000, 8000);
        let b = t.map(start.wrapping_add(960), 48_000, 8000);
        assert_eq!(b.wrapping_sub(a), 160);
        let c = t.map(start.wrapping_add(1920), 48_000, 8000);
        assert_eq!(c.wrapping_sub(b), 160);
        let mut g = Timeline::default();
        let x = g.map(1000, 8000, 16_000);
        assert_eq!(g.map(1160, 8000, 16_000).wrapping_sub(x), 320);
    }
}
