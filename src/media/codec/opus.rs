//! Opus (RFC 6716; RTP payload RFC 7587) at 16000 Hz mono through `opus-pure`, a
//! pure-Rust port of libopus (BSD-3-Clause; chosen by measurement against
//! `opus-rs` and libopus itself: docs/benchmarks.md, "Wideband codecs").
//!
//! The decoder takes any Opus packet a peer may send (SILK, CELT or hybrid;
//! narrowband to fullband, resampled to 16 kHz; stereo packets downmixed, RFC 7587
//! §3.4) and conceals lost packets with the codec's own packet-loss concealment.
//! The encoder codes speech for a Pi-class box: VOIP application, voice signal,
//! wideband at most, [`BITRATE_BPS`] variable rate with in-band FEC
//! ([`EXPECTED_LOSS_PERCENT`]) at [`COMPLEXITY`]. Both states are boxed once at
//! creation; the library keeps its scratch buffers in them, so nothing allocates
//! per packet (measured by codecbench's counting allocator).

use opus_pure::{Application, Bandwidth, Signal};

/// PCM rate of both directions, Hz (`AudioCodec::Opus.sample_rate()`).
pub(super) const RATE_HZ: i32 = 16_000;
/// Samples in one 2.5 ms step at [`RATE_HZ`]: concealment lengths are multiples
/// of it (RFC 6716 §2.1.4, the shortest frame).
const STEP: usize = 40;
/// Target bitrate of the encoder, bit/s (wideband SILK speech is transparent-ish
/// from ~24 kbit/s; the in-band FEC copy takes a share of it, RFC 6716 §2.1.7).
pub const BITRATE_BPS: i32 = 28_000;
/// The loss rate the encoder plans for, percent: what makes it spend bits on
/// in-band FEC (RFC 6716 §2.1.7); a carrier or browser path loses 1–5 %.
pub const EXPECTED_LOSS_PERCENT: i32 = 5;
/// Encoder complexity, 0–10 (docs/benchmarks.md, "Wideband codecs": the
/// quality/CPU measurements that chose it).
pub const COMPLEXITY: i32 = 5;

/// Decoder state for one received stream.
pub(super) struct OpusDecoder {
    dec: Box<opus_pure::OpusDecoder>,
}

impl OpusDecoder {
    /// A mono decoder at 16 kHz; `None` if the library refuses (it cannot for
    /// these constant arguments).
    pub(super) fn new() -> Option<OpusDecoder> {
        opus_pure::OpusDecoder::new(RATE_HZ, 1).ok().map(|dec| OpusDecoder { dec: Box::new(dec) })
    }

    /// Decodes one packet into `out`, returning the samples written, or why the
    /// packet was refused.
    pub(super) fn decode(&mut self, payload: &[u8], out: &mut [i16]) -> Result<usize, &'static str> {
        if payload.is_empty() {
            return Err("empty packet");
        }
        // The packet's length from its TOC and frame count (RFC 6716 §3.2),
        // refused above 120 ms before any decoding work.
        let samples = opus_pure::packet::samples(payload, RATE_HZ).map_err(|_| "malformed TOC or frame count")?;
        if samples > out.len() {
            return Err("decodes to more samples than the buffer holds");
        }
        self.dec.decode_s16(payload, samples, &mut out[..samples]).map_err(|_| "malformed packet")
    }

    /// Rebuilds the packet lost before `next` from `next`'s in-band FEC (RFC 6716
    /// §2.1.7), concealing when `next` carries none; the lost packet is taken to be
    /// as long as `next`.
    pub(super) fn decode_fec(&mut self, next: &[u8], out: &mut [i16]) -> Result<usize, &'static str> {
        if next.is_empty() {
            return Err("empty packet");
        }
        let samples = opus_pure::packet::samples(next, RATE_HZ).map_err(|_| "malformed TOC or frame count")?;
        if samples > out.len() {
            return Err("decodes to more samples than the buffer holds");
        }
        self.dec.decode_fec_s16(next, samples, &mut out[..samples]).map_err(|_| "malformed packet")
    }

    /// Packet-loss concealment into `out`, rounded down to 2.5 ms steps and at
    /// most 120 ms; returns the samples written.
    pub(super) fn conceal(&mut self, out: &mut [i16]) -> usize {
        let n = out.len().min(super::MAX_FRAME_SAMPLES) / STEP * STEP;
        if n == 0 {
            return 0;
        }
        match self.dec.decode_s16(&[], n, &mut out[..n]) {
            Ok(m) => m.min(n),
            Err(_) => {
                out[..n].fill(0);
                n
            }
        }
    }
}

/// Encoder state for one sent stream.
pub(super) struct OpusEncoder {
    enc: Box<opus_pure::OpusEncoder>,
}

impl OpusEncoder {
    /// A mono VOIP encoder at 16 kHz with the settings above; `None` if the
    /// library refuses (it cannot for these constant arguments).
    pub(super) fn new() -> Option<OpusEncoder> {
        let mut enc = opus_pure::OpusEncoder::new(RATE_HZ, 1, Application::Voip).ok()?;
        enc.bitrate_bps = BITRATE_BPS;
        enc.complexity = COMPLEXITY;
        enc.use_inband_fec = true;
        enc.packet_loss_perc = EXPECTED_LOSS_PERCENT;
        enc.signal_type = Some(Signal::Voice);
        enc.max_bandwidth = Bandwidth::Wideband;
        enc.lsb_depth = 16;
        Some(OpusEncoder { enc: Box::new(enc) })
    }

    /// Whether the encoder takes frames of `samples` samples: 10, 20, 40 or 60 ms.
    pub(super) fn frame_ok(samples: usize) -> bool {
        matches!(samples, 160 | 320 | 640 | 960)
    }

    /// Encodes one frame (checked by [`OpusEncoder::frame_ok`]) into `out`,
    /// returning the payload length.
    pub(super) fn encode(&mut self, pcm: &[i16], out: &mut [u8]) -> Result<usize, ()> {
        let cap = out.len().min(super::MAX_PAYLOAD_BYTES);
        self.enc.encode_s16(pcm, pcm.len(), &mut out[..cap]).map_err(|_| ())
    }
}
