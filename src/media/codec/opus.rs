//! Opus (RFC 6716; RTP payload RFC 7587) at 16000 Hz mono through `opus-rs`, a
//! pure-Rust port of libopus 1.6 (BSD-3-Clause; chosen by measurement against
//! `opus-pure` and libopus itself: docs/benchmarks.md, "Wideband codecs" — it
//! decodes SILK, hybrid and CELT stereo packets sample-exactly like libopus).
//!
//! The decoder takes any Opus packet a peer may send (SILK, CELT or hybrid;
//! narrowband to fullband, resampled to 16 kHz; stereo packets downmixed, RFC 7587
//! §3.4) and conceals lost packets with the codec's own packet-loss concealment.
//! The encoder codes speech for a Pi-class box: VOIP application, voice signal,
//! wideband at most, [`BITRATE_BPS`] variable rate with in-band FEC
//! ([`EXPECTED_LOSS_PERCENT`]) at [`COMPLEXITY`]. Both states are boxed once at
//! creation (the library's `heap` feature boxes its working buffers, and the
//! decoder's float output buffer is boxed here), so nothing allocates per packet
//! (measured by codecbench's counting allocator).

use opus_rs::Application;

/// PCM rate of both directions, Hz (`AudioCodec::Opus.sample_rate()`).
pub(super) const RATE_HZ: i32 = 16_000;
/// Longest packet, samples at [`RATE_HZ`]: 120 ms (RFC 6716 §3.2.5; the
/// module's `MAX_FRAME_SAMPLES`, asserted equal there).
pub(super) const MAX_PACKET_SAMPLES: usize = 1920;
/// Largest packet the encoder writes, bytes: one frame's maximum (RFC 6716 §3.2.1),
/// within the module's `MAX_PAYLOAD_BYTES`.
pub(super) const MAX_PACKET_BYTES: usize = 1275;
/// Samples in one 2.5 ms step at [`RATE_HZ`]: concealment lengths are multiples
/// of it (RFC 6716 §2.1.4, the shortest frame).
const STEP: usize = 40;
/// Target bitrate of the encoder, bit/s: variable rate, speech averages ~28 kbit/s
/// at this target, FEC copy included (RFC 6716 §2.1.7). With [`COMPLEXITY`] 5 it
/// scored PESQ-WB 3.66 on espeak-ng speech, libopus 1.3.1 3.52 with the same
/// settings (docs/benchmarks.md, "Wideband codecs").
pub const BITRATE_BPS: i32 = 32_000;
/// The loss rate the encoder plans for, percent: what makes it spend bits on
/// in-band FEC (RFC 6716 §2.1.7); a carrier or browser path loses 1–5 %.
pub const EXPECTED_LOSS_PERCENT: i32 = 5;
/// Encoder complexity, 0–10, chosen by measurement (docs/benchmarks.md, "Wideband
/// codecs"): 5 costs ~160 µs per 20 ms on the amd64 test box against 222 µs at 6
/// and 304 µs at 8 (PESQ-WB 3.66 / 3.91 / 4.07 at [`BITRATE_BPS`]), which keeps a
/// Pi-class core at a few percent per call.
pub const COMPLEXITY: i32 = 5;

/// Samples at [`RATE_HZ`] that the packet decodes to, from its TOC byte and
/// frame count (RFC 6716 §3.1 Table 2, §3.2), checked against the 120 ms limit
/// (§3.2.5) before any decoding work. The frame lengths themselves are checked
/// by the decoder.
pub(super) fn packet_samples(packet: &[u8]) -> Result<usize, &'static str> {
    let toc = *packet.first().ok_or("empty packet")?;
    let config = toc >> 3;
    // 2.5 ms units per frame: SILK-only 10/20/40/60 ms, hybrid 10/20 ms, CELT-only
    // 2.5/5/10/20 ms.
    let units = match config {
        0..=11 => [4, 8, 16, 24][usize::from(config % 4)],
        12..=15 => [4, 8][usize::from(config % 2)],
        _ => [1, 2, 4, 8][usize::from(config % 4)],
    };
    let frames = match toc & 3 {
        0 => 1,
        1 | 2 => 2,
        _ => usize::from(*packet.get(1).ok_or("code 3 packet without a frame count")? & 0x3f),
    };
    if frames == 0 {
        return Err("code 3 packet of zero frames");
    }
    let samples = frames * units * STEP;
    if samples > MAX_PACKET_SAMPLES {
        return Err("packet longer than 120 ms");
    }
    Ok(samples)
}

/// Float PCM scaled to 16 bits, rounded and saturated (libopus's FLOAT2INT16).
fn to_i16(pcm: &[f32], out: &mut [i16]) {
    for (o, &f) in out.iter_mut().zip(pcm) {
        *o = (f * 32768.0).round().clamp(-32768.0, 32767.0) as i16;
    }
}

/// Decoder state for one received stream.
pub(super) struct OpusDecoder {
    dec: Box<opus_rs::OpusDecoder>,
    /// The library's float output, one packet of at most 120 ms.
    pcm: Box<[f32; MAX_PACKET_SAMPLES]>,
}

impl OpusDecoder {
    /// A mono decoder at 16 kHz; `None` if the library refuses (it cannot for
    /// these constant arguments).
    pub(super) fn new() -> Option<OpusDecoder> {
        let dec = opus_rs::OpusDecoder::new(RATE_HZ, 1).ok()?;
        Some(OpusDecoder { dec: Box::new(dec), pcm: Box::new([0.0; MAX_PACKET_SAMPLES]) })
    }

    /// Decodes one packet into `out`, returning the samples written, or why the
    /// packet was refused.
    pub(super) fn decode(&mut self, payload: &[u8], out: &mut [i16]) -> Result<usize, &'static str> {
        let samples = packet_samples(payload)?;
        if samples > out.len() {
            return Err("decodes to more samples than the buffer holds");
        }
        let n = self.dec.decode(payload, samples, &mut self.pcm[..samples]).map_err(|_| "malformed packet")?;
        let n = n.min(samples);
        to_i16(&self.pcm[..n], out);
        Ok(n)
    }

    /// Rebuilds the packet lost before `next` from `next`'s in-band FEC (RFC 6716
    /// §2.1.7), concealing when `next` carries none; the lost packet is taken to be
    /// as long as `next`.
    pub(super) fn decode_fec(&mut self, next: &[u8], out: &mut [i16]) -> Result<usize, &'static str> {
        let samples = packet_samples(next)?;
        if samples > out.len() {
            return Err("decodes to more samples than the buffer holds");
        }
        let n = self.dec.decode_fec(next, samples, &mut self.pcm[..samples]).map_err(|_| "malformed packet")?;
        let n = n.min(samples);
        to_i16(&self.pcm[..n], out);
        Ok(n)
    }

    /// Packet-loss concealment into `out`, rounded down to 2.5 ms steps and at
    /// most 120 ms; returns the samples written.
    pub(super) fn conceal(&mut self, out: &mut [i16]) -> usize {
        let n = out.len().min(MAX_PACKET_SAMPLES) / STEP * STEP;
        if n == 0 {
            return 0;
        }
        match self.dec.decode(&[], n, &mut self.pcm[..n]) {
            Ok(m) => {
                let m = m.min(n);
                to_i16(&self.pcm[..m], out);
                out[m..n].fill(0);
            }
            Err(_) => out[..n].fill(0),
        }
        n
    }
}

/// Encoder state for one sent stream.
pub(super) struct OpusEncoder {
    enc: Box<opus_rs::OpusEncoder>,
}

impl OpusEncoder {
    /// A mono VOIP encoder at 16 kHz (so SILK wideband: the API rate caps the
    /// bandwidth) with the settings above; `None` if the library refuses (it
    /// cannot for these constant arguments).
    pub(super) fn new() -> Option<OpusEncoder> {
        Self::with(BITRATE_BPS, COMPLEXITY)
    }

    /// [`OpusEncoder::new`] at another bitrate and complexity (codecbench's sweep).
    pub(super) fn with(bitrate_bps: i32, complexity: i32) -> Option<OpusEncoder> {
        let mut enc = opus_rs::OpusEncoder::new(RATE_HZ, 1, Application::Voip).ok()?;
        enc.bitrate_bps = bitrate_bps;
        enc.complexity = complexity;
        enc.use_cbr = false;
        enc.use_inband_fec = true;
        enc.packet_loss_perc = EXPECTED_LOSS_PERCENT;
        Some(OpusEncoder { enc: Box::new(enc) })
    }

    /// Whether the encoder takes frames of `samples` samples: 10, 20, 40 or 60 ms.
    pub(super) fn frame_ok(samples: usize) -> bool {
        matches!(samples, 160 | 320 | 640 | 960)
    }

    /// Encodes one frame (checked by [`OpusEncoder::frame_ok`]) into `out`,
    /// returning the payload length.
    pub(super) fn encode(&mut self, pcm: &[i16], out: &mut [u8]) -> Result<usize, ()> {
        let cap = out.len().min(MAX_PACKET_BYTES);
        self.enc.encode_i16(pcm, pcm.len(), &mut out[..cap]).map_err(|_| ())
    }
}
