//! G.722 at 64 kbit/s (ITU-T G.722 (09/2012), mode 1; RTP payload RFC 3551 §4.5.2):
//! 16 kHz PCM16 split by a 24-tap QMF into two 8 kHz sub-bands, the lower coded by
//! 6-bit and the upper by 2-bit ADPCM; one byte (`ihigh << 6 | ilow`) per pair of
//! input samples, so 20 ms = 320 samples = 160 bytes.
//!
//! The blocks follow the ITU-T recommendation's fixed-point description (block
//! names in the comments: QUANTL, INVQAL, LOGSCL, SCALEL, UPPOL1/2, UPZERO, FILTEP,
//! FILTEZ, …), so that the bitstream and the decoded PCM match other G.722 codecs
//! (ffmpeg's, checked by `decodes_the_ffmpeg_reference_vector` below and by
//! scripts/bench-codecs). All arithmetic is on `i32` with the recommendation's
//! 16-bit saturations; nothing allocates and every input byte is valid.

/// QMF coefficients (ITU-T G.722 Table 11, one half of the symmetric 24 taps).
const QMF_COEFFS: [i32; 12] = [3, -11, 12, 32, -210, 951, 3876, -805, 362, -156, 53, -11];
/// Lower-band quantiser decision levels (Table 14), scaled by 8.
const Q6: [i32; 32] = [
    0, 35, 72, 110, 150, 190, 233, 276, 323, 370, 422, 473, 530, 587, 650, 714, 786, 858, 940, 1023, 1121, 1219, 1339,
    1458, 1612, 1765, 1980, 2195, 2557, 2919, 0, 0,
];
/// Lower-band codes for a negative / positive difference, by quantiser interval.
const ILN: [i32; 32] = [
    0, 63, 62, 31, 30, 29, 28, 27, 26, 25, 24, 23, 22, 21, 20, 19, 18, 17, 16, 15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5,
    4, 0,
];
const ILP: [i32; 32] = [
    0, 61, 60, 59, 58, 57, 56, 55, 54, 53, 52, 51, 50, 49, 48, 47, 46, 45, 44, 43, 42, 41, 40, 39, 38, 37, 36, 35, 34,
    33, 32, 0,
];
/// Lower-band log scale factor multipliers (Table 16) and the 4-bit code → index map.
const WL: [i32; 8] = [-60, -30, 58, 172, 334, 538, 1198, 3042];
const RL42: [i32; 16] = [0, 7, 6, 5, 4, 3, 2, 1, 7, 6, 5, 4, 3, 2, 1, 0];
/// Inverse log table of the scale factor (Table 17).
const ILB: [i32; 32] = [
    2048, 2093, 2139, 2186, 2233, 2282, 2332, 2383, 2435, 2489, 2543, 2599, 2656, 2714, 2774, 2834, 2896, 2960, 3025,
    3091, 3158, 3228, 3298, 3371, 3444, 3520, 3597, 3676, 3756, 3838, 3922, 4008,
];
/// Lower-band inverse quantiser outputs, 4-bit (for adaptation) and 6-bit (for output).
const QM4: [i32; 16] =
    [0, -20456, -12896, -8968, -6288, -4240, -2584, -1200, 20456, 12896, 8968, 6288, 4240, 2584, 1200, 0];
const QM6: [i32; 64] = [
    -136, -136, -136, -136, -24808, -21904, -19008, -16704, -14984, -13512, -12280, -11192, -10232, -9360, -8576,
    -7856, -7192, -6576, -6000, -5456, -4944, -4464, -4008, -3576, -3168, -2776, -2400, -2032, -1688, -1360, -1040,
    -728, 24808, 21904, 19008, 16704, 14984, 13512, 12280, 11192, 10232, 9360, 8576, 7856, 7192, 6576, 6000, 5456,
    4944, 4464, 4008, 3576, 3168, 2776, 2400, 2032, 1688, 1360, 1040, 728, 432, 136, -432, -136,
];
/// Higher band: inverse quantiser, log scale multipliers, code maps (Tables 15, 16).
const QM2: [i32; 4] = [-7408, -1616, 7408, 1616];
const WH: [i32; 3] = [0, -214, 798];
const RH2: [i32; 4] = [2, 1, 2, 1];
const IHN: [i32; 3] = [0, 1, 0];
const IHP: [i32; 3] = [0, 3, 2];

fn saturate(v: i32) -> i32 {
    v.clamp(i32::from(i16::MIN), i32::from(i16::MAX))
}

/// One sub-band's ADPCM state: the pole-zero predictor and the scale factor.
#[derive(Clone, Copy)]
struct Band {
    /// Predicted signal (`s`), its pole part (`sp`) and zero part (`sz`).
    s: i32,
    sp: i32,
    sz: i32,
    /// Reconstructed signal, partial reconstruction and pole coefficients (2nd order).
    r: [i32; 3],
    a: [i32; 3],
    ap: [i32; 3],
    p: [i32; 3],
    /// Quantised differences and zero coefficients (6th order).
    d: [i32; 7],
    b: [i32; 7],
    bp: [i32; 7],
    sg: [i32; 7],
    /// Log scale factor (`nb`) and scale factor (`det`).
    nb: i32,
    det: i32,
}

impl Band {
    const fn new(det: i32) -> Band {
        Band {
            s: 0,
            sp: 0,
            sz: 0,
            r: [0; 3],
            a: [0; 3],
            ap: [0; 3],
            p: [0; 3],
            d: [0; 7],
            b: [0; 7],
            bp: [0; 7],
            sg: [0; 7],
            nb: 0,
            det,
        }
    }

    /// Scale factor adaptation: LOGSCL/LOGSCH with multiplier `w` and ceiling
    /// `max_nb`, then SCALEL/SCALEH with shift base `shift`.
    fn adapt_scale(&mut self, w: i32, max_nb: i32, shift: i32) {
        self.nb = (((self.nb * 127) >> 7) + w).clamp(0, max_nb);
        let wd1 = (self.nb >> 6) & 31;
        let wd2 = shift - (self.nb >> 11);
        let wd3 = if wd2 < 0 { ILB[wd1 as usize] << -wd2 } else { ILB[wd1 as usize] >> wd2 };
        self.det = wd3 << 2;
    }

    /// Block 4: reconstruction, predictor adaptation and prediction for the next
    /// sample, from the quantised difference `d`.
    fn block4(&mut self, d: i32) {
        // RECONS, PARREC
        self.d[0] = d;
        self.r[0] = saturate(self.s + d);
        self.p[0] = saturate(self.sz + d);
        // UPPOL2
        for i in 0..3 {
            self.sg[i] = self.p[i] >> 15;
        }
        let wd1 = saturate(self.a[1] << 2);
        let wd2 = if self.sg[0] == self.sg[1] { -wd1 } else { wd1 }.min(32767);
        let mut wd3 = (wd2 >> 7) + if self.sg[0] == self.sg[2] { 128 } else { -128 };
        wd3 += (self.a[2] * 32512) >> 15;
        self.ap[2] = wd3.clamp(-12288, 12288);
        // UPPOL1
        self.sg[0] = self.p[0] >> 15;
        self.sg[1] = self.p[1] >> 15;
        let wd1 = if self.sg[0] == self.sg[1] { 192 } else { -192 };
        let wd2 = (self.a[1] * 32640) >> 15;
        let limit = saturate(15360 - self.ap[2]);
        self.ap[1] = saturate(wd1 + wd2).clamp(-limit, limit);
        // UPZERO
        let wd1 = if d == 0 { 0 } else { 128 };
        self.sg[0] = d >> 15;
        for i in 1..7 {
            self.sg[i] = self.d[i] >> 15;
            let wd2 = if self.sg[i] == self.sg[0] { wd1 } else { -wd1 };
            let wd3 = (self.b[i] * 32640) >> 15;
            self.bp[i] = saturate(wd2 + wd3);
        }
        // DELAYA
        for i in (1..7).rev() {
            self.d[i] = self.d[i - 1];
            self.b[i] = self.bp[i];
        }
        for i in (1..3).rev() {
            self.r[i] = self.r[i - 1];
            self.p[i] = self.p[i - 1];
            self.a[i] = self.ap[i];
        }
        // FILTEP
        let wd1 = (self.a[1] * saturate(self.r[1] + self.r[1])) >> 15;
        let wd2 = (self.a[2] * saturate(self.r[2] + self.r[2])) >> 15;
        self.sp = saturate(wd1 + wd2);
        // FILTEZ
        let mut sz = 0;
        for i in (1..7).rev() {
            sz += (self.b[i] * saturate(self.d[i] + self.d[i])) >> 15;
        }
        self.sz = saturate(sz);
        // PREDIC
        self.s = saturate(self.sp + self.sz);
    }
}

/// Encoder state: the transmit QMF's 24-sample history and the two bands.
#[derive(Clone)]
pub(super) struct G722Encoder {
    x: [i32; 24],
    band: [Band; 2],
}

impl G722Encoder {
    /// An encoder in the recommendation's reset state.
    pub(super) const fn new() -> G722Encoder {
        G722Encoder { x: [0; 24], band: [Band::new(32), Band::new(8)] }
    }

    /// Encodes `pcm` (16 kHz, an even number of samples) into `pcm.len() / 2`
    /// bytes of `out`, which the caller has checked is long enough.
    pub(super) fn encode(&mut self, pcm: &[i16], out: &mut [u8]) -> usize {
        let mut n = 0;
        for (pair, byte) in pcm.chunks_exact(2).zip(out.iter_mut()) {
            // Transmit QMF: shift in two samples, keep every other output.
            self.x.copy_within(2.., 0);
            self.x[22] = i32::from(pair[0]);
            self.x[23] = i32::from(pair[1]);
            let (mut sumodd, mut sumeven) = (0i32, 0i32);
            for i in 0..12 {
                sumodd += self.x[2 * i] * QMF_COEFFS[i];
                sumeven += self.x[2 * i + 1] * QMF_COEFFS[11 - i];
            }
            let xlow = (sumeven + sumodd) >> 14;
            let xhigh = (sumeven - sumodd) >> 14;

            // Lower band. SUBTRA, QUANTL
            let lo = &mut self.band[0];
            let el = saturate(xlow - lo.s);
            let wd = if el >= 0 { el } else { -(el + 1) };
            let mut i = 1;
            while i < 30 && wd >= (Q6[i] * lo.det) >> 12 {
                i += 1;
            }
            let ilow = if el < 0 { ILN[i] } else { ILP[i] };
            // INVQAL, LOGSCL, SCALEL
            let ril = (ilow >> 2) as usize;
            let dlow = (lo.det * QM4[ril]) >> 15;
            lo.adapt_scale(WL[RL42[ril] as usize], 18432, 8);
            lo.block4(dlow);

            // Higher band. SUBTRA, QUANTH
            let hi = &mut self.band[1];
            let eh = saturate(xhigh - hi.s);
            let wd = if eh >= 0 { eh } else { -(eh + 1) };
            let mih = if wd >= (564 * hi.det) >> 12 { 2 } else { 1 };
            let ihigh = if eh < 0 { IHN[mih] } else { IHP[mih] };
            // INVQAH, LOGSCH, SCALEH
            let dhigh = (hi.det * QM2[ihigh as usize]) >> 15;
            hi.adapt_scale(WH[RH2[ihigh as usize] as usize], 22528, 10);
            hi.block4(dhigh);

            *byte = ((ihigh << 6) | ilow) as u8;
            n += 1;
        }
        n
    }
}

/// Decoder state: the receive QMF's history and the two bands.
#[derive(Clone)]
pub(super) struct G722Decoder {
    x: [i32; 24],
    band: [Band; 2],
}

impl G722Decoder {
    /// A decoder in the recommendation's reset state.
    pub(super) const fn new() -> G722Decoder {
        G722Decoder { x: [0; 24], band: [Band::new(32), Band::new(8)] }
    }

    /// Decodes `payload` into `2 * payload.len()` samples of `out`, which the
    /// caller has checked is long enough. Every byte is a valid code word.
    pub(super) fn decode(&mut self, payload: &[u8], out: &mut [i16]) -> usize {
        let mut n = 0;
        for (&code, pair) in payload.iter().zip(out.chunks_exact_mut(2)) {
            let code = i32::from(code);
            let ilow = (code & 0x3f) as usize;
            let ihigh = ((code >> 6) & 0x03) as usize;

            // Lower band. INVQBL (6-bit, for output), RECONS, LIMIT
            let lo = &mut self.band[0];
            let rlow = (lo.s + ((lo.det * QM6[ilow]) >> 15)).clamp(-16384, 16383);
            // INVQAL (4-bit, for adaptation), LOGSCL, SCALEL
            let ril = ilow >> 2;
            let dlowt = (lo.det * QM4[ril]) >> 15;
            lo.adapt_scale(WL[RL42[ril] as usize], 18432, 8);
            lo.block4(dlowt);

            // Higher band. INVQAH, RECONS, LIMIT, LOGSCH, SCALEH
            let hi = &mut self.band[1];
            let dhigh = (hi.det * QM2[ihigh]) >> 15;
            let rhigh = (dhigh + hi.s).clamp(-16384, 16383);
            hi.adapt_scale(WH[RH2[ihigh] as usize], 22528, 10);
            hi.block4(dhigh);

            // Receive QMF.
            self.x.copy_within(2.., 0);
            self.x[22] = rlow + rhigh;
            self.x[23] = rlow - rhigh;
            let (mut xout1, mut xout2) = (0i32, 0i32);
            for i in 0..12 {
                xout2 += self.x[2 * i] * QMF_COEFFS[i];
                xout1 += self.x[2 * i + 1] * QMF_COEFFS[11 - i];
            }
            pair[0] = saturate(xout1 >> 11) as i16;
            pair[1] = saturate(xout2 >> 11) as i16;
            n += 2;
        }
        n
    }
}
