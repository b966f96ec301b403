//! Packet identity inside a G.711 payload, robust to re-encoding.
//!
//! A stamp is 10 bytes — stream id (24 bits), sequence number (24 bits), send time
//! (32 bits, µs since the generator started) — plus a CRC-8, written as 22 nibbles
//! after a 4-nibble sync word. Each nibble is one G.711 sample taken from a
//! 16-code alphabet: µ-law codes `0xC0..=0xC7` (+1884 … +1436) and `0x40..=0x47`
//! (−1884 … −1436) for PCMU, and their A-law images for PCMA. Every code of the
//! alphabet maps to itself through:
//!
//! * µ-law → PCM16 → µ-law and A-law → PCM16 → A-law (G.191 reference codec),
//! * µ-law → A-law → µ-law by G.711 Tables 3/4, and by decode-then-encode,
//!
//! and the µ-law and A-law alphabets are disjoint, so a payload can be read without
//! knowing which law it arrived in. The unit tests check all of this against
//! sipbridge's own `media::g711`.
//!
//! The 26-sample code word is written four times (offsets 0, 40, 80, 120) into a
//! 160-sample payload filled with near-silence; [`read`] tries those offsets and then
//! scans, so a path that re-chunks audio at another boundary still yields the stamp
//! of one of the packets the window overlaps.

/// Samples in a 20 ms G.711 frame (the payload size `rtpload` sends).
pub const FRAME: usize = 160;
/// Length of one code word in samples: 4 sync + 20 data + 2 CRC nibbles.
pub const WORD: usize = 26;
/// Offsets where [`write`] places copies of the code word.
const COPIES: [usize; 4] = [0, 40, 80, 120];
/// Sync nibbles at the start of every code word.
const SYNC: [u8; 4] = [0xA, 0x5, 0xC, 0x3];

/// Largest stream id a stamp carries (24 bits).
pub const MAX_STREAM: u32 = (1 << 24) - 1;

/// G.711 law of a payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Law {
    /// µ-law, RTP payload type 0.
    Pcmu,
    /// A-law, RTP payload type 8.
    Pcma,
}

impl Law {
    /// The law of RTP static payload type 0 or 8.
    pub fn from_payload_type(pt: u8) -> Option<Law> {
        match pt {
            0 => Some(Law::Pcmu),
            8 => Some(Law::Pcma),
            _ => None,
        }
    }

    /// RTP static payload type.
    pub fn payload_type(self) -> u8 {
        match self {
            Law::Pcmu => 0,
            Law::Pcma => 8,
        }
    }

    /// The filler code around the code words: PCM16 +8 (near silence) in both laws,
    /// which, unlike µ-law's 0 (`0xFF`), survives PCMU → PCMA → PCMU.
    pub fn filler(self) -> u8 {
        match self {
            Law::Pcmu => 0xFE,
            Law::Pcma => 0xD5,
        }
    }

    /// The 16 codes nibble 0..=15 is written as.
    pub fn alphabet(self) -> &'static [u8; 16] {
        match self {
            Law::Pcmu => &ALPHABET_PCMU,
            Law::Pcma => &ALPHABET_PCMA,
        }
    }
}

/// µ-law codes of nibbles 0..=15.
pub const ALPHABET_PCMU: [u8; 16] =
    [0xC0, 0xC1, 0xC2, 0xC3, 0xC4, 0xC5, 0xC6, 0xC7, 0x40, 0x41, 0x42, 0x43, 0x44, 0x45, 0x46, 0x47];
/// A-law codes of nibbles 0..=15 (G.711 Table 3 images of [`ALPHABET_PCMU`]).
pub const ALPHABET_PCMA: [u8; 16] =
    [0xE8, 0xE9, 0xEE, 0xEF, 0xEC, 0xED, 0xE2, 0xE3, 0x68, 0x69, 0x6E, 0x6F, 0x6C, 0x6D, 0x62, 0x63];

/// code → nibble for both alphabets; 0xFF = not a symbol.
const DECODE: [u8; 256] = {
    let mut t = [0xFFu8; 256];
    let mut i = 0;
    while i < 16 {
        t[ALPHABET_PCMU[i] as usize] = i as u8;
        t[ALPHABET_PCMA[i] as usize] = i as u8;
        i += 1;
    }
    t
};

/// What a packet carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// Stream index (one direction of one call), ≤ [`MAX_STREAM`].
    pub stream: u32,
    /// Packet number within the stream (24 bits; wraps).
    pub seq: u32,
    /// Send time, µs since the generator's start (wraps after 71 min).
    pub sent_us: u32,
}

impl Stamp {
    fn bytes(&self) -> [u8; 10] {
        let s = self.stream.to_be_bytes();
        let q = self.seq.to_be_bytes();
        let t = self.sent_us.to_be_bytes();
        [s[1], s[2], s[3], q[1], q[2], q[3], t[0], t[1], t[2], t[3]]
    }

    fn from_bytes(b: &[u8; 10]) -> Stamp {
        Stamp {
            stream: u32::from_be_bytes([0, b[0], b[1], b[2]]),
            seq: u32::from_be_bytes([0, b[3], b[4], b[5]]),
            sent_us: u32::from_be_bytes([b[6], b[7], b[8], b[9]]),
        }
    }
}

/// CRC-8 (polynomial 0x07, init 0) of `data`.
fn crc8(data: &[u8]) -> u8 {
    let mut crc = 0u8;
    for &b in data {
        crc ^= b;
        for _ in 0..8 {
            crc = if crc & 0x80 != 0 { (crc << 1) ^ 0x07 } else { crc << 1 };
        }
    }
    crc
}

/// Writes one code word for `stamp` into `out[..WORD]`.
fn write_word(law: Law, stamp: &Stamp, out: &mut [u8]) {
    let abc = law.alphabet();
    let bytes = stamp.bytes();
    let crc = crc8(&bytes);
    let mut i = 0;
    for n in SYNC {
        out[i] = abc[n as usize];
        i += 1;
    }
    for b in bytes.iter().chain(std::iter::once(&crc)) {
        out[i] = abc[(b >> 4) as usize];
        out[i + 1] = abc[(b & 0x0F) as usize];
        i += 2;
    }
}

/// Fills `payload` (any length ≥ [`WORD`]) with the filler code and as many copies of the
/// code word of `stamp` as fit at offsets 0, 40, 80, 120.
pub fn write(law: Law, stamp: &Stamp, payload: &mut [u8]) {
    payload.fill(law.filler());
    for off in COPIES {
        if off + WORD <= payload.len() {
            write_word(law, stamp, &mut payload[off..off + WORD]);
        }
    }
}

/// Reads a code word starting at `w[0]`.
fn read_word(w: &[u8]) -> Option<Stamp> {
    if w.len() < WORD {
        return None;
    }
    for (k, n) in SYNC.iter().enumerate() {
        if DECODE[w[k] as usize] != *n {
            return None;
        }
    }
    let mut bytes = [0u8; 11];
    for (j, b) in bytes.iter_mut().enumerate() {
        let hi = DECODE[w[4 + 2 * j] as usize];
        let lo = DECODE[w[5 + 2 * j] as usize];
        if hi > 15 || lo > 15 {
            return None;
        }
        *b = (hi << 4) | lo;
    }
    let data: [u8; 10] = bytes[..10].try_into().ok()?;
    (crc8(&data) == bytes[10]).then(|| Stamp::from_bytes(&data))
}

/// The stamp in `payload`, in either law: the copies at the usual offsets first,
/// then any offset (audio re-chunked along the way).
pub fn read(payload: &[u8]) -> Option<Stamp> {
    for off in COPIES {
        if let Some(s) = payload.get(off..).and_then(read_word) {
            return Some(s);
        }
    }
    (0..payload.len().saturating_sub(WORD - 1)).find_map(|off| read_word(&payload[off..]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use sipbridge::media::g711::{G711, alaw_to_ulaw, transcode_in_place, ulaw_to_alaw};

    fn stamps() -> Vec<Stamp> {
        vec![
            Stamp { stream: 0, seq: 0, sent_us: 0 },
            Stamp { stream: 1, seq: 2, sent_us: 3 },
            Stamp { stream: 4095, seq: 1999, sent_us: 41_000_000 },
            Stamp { stream: MAX_STREAM, seq: 0xFF_FFFF, sent_us: u32::MAX },
            Stamp { stream: 0x12_3456, seq: 0xAB_CDEF, sent_us: 0xDEAD_BEEF },
        ]
    }

    fn law_of(l: Law) -> G711 {
        match l {
            Law::Pcmu => G711::Pcmu,
            Law::Pcma => G711::Pcma,
        }
    }

    fn frame(law: Law, s: &Stamp) -> Vec<u8> {
        let mut p = vec![0u8; FRAME];
        write(law, s, &mut p);
        p
    }

    #[test]
    fn alphabets_survive_sipbridge_g711_every_way() {
        for i in 0..16 {
            let (u, a) = (ALPHABET_PCMU[i], ALPHABET_PCMA[i]);
            assert_eq!(G711::Pcmu.encode_sample(G711::Pcmu.decode_sample(u)), u, "µ round trip {u:#x}");
            assert_eq!(G711::Pcma.encode_sample(G711::Pcma.decode_sample(a)), a, "A round trip {a:#x}");
            assert_eq!(ulaw_to_alaw(u), a, "Table 3 {u:#x}");
            assert_eq!(alaw_to_ulaw(a), u, "Table 4 {a:#x}");
            assert_eq!(G711::Pcma.encode_sample(G711::Pcmu.decode_sample(u)), a, "µ→lin→A {u:#x}");
            assert_eq!(G711::Pcmu.encode_sample(G711::Pcma.decode_sample(a)), u, "A→lin→µ {a:#x}");
        }
        for l in [Law::Pcmu, Law::Pcma] {
            let g = law_of(l);
            assert_eq!(g.encode_sample(g.decode_sample(l.filler())), l.filler());
            assert!(!l.alphabet().contains(&l.filler()));
        }
        assert_eq!(ulaw_to_alaw(Law::Pcmu.filler()), Law::Pcma.filler());
        assert_eq!(alaw_to_ulaw(Law::Pcma.filler()), Law::Pcmu.filler());
        assert!(ALPHABET_PCMU.iter().all(|c| !ALPHABET_PCMA.contains(c)), "alphabets must be disjoint");
    }

    #[test]
    fn stamp_round_trips_in_both_laws() {
        for l in [Law::Pcmu, Law::Pcma] {
            for s in stamps() {
                assert_eq!(read(&frame(l, &s)), Some(s));
            }
        }
    }

    #[test]
    fn stamp_survives_decode_encode_and_transcoding() {
        for from in [Law::Pcmu, Law::Pcma] {
            for to in [Law::Pcmu, Law::Pcma] {
                for s in stamps() {
                    let p = frame(from, &s);
                    // The agent path: decode to PCM16, re-encode in the stream's law,
                    // decode again, re-encode in the call's law.
                    let mut pcm = [0i16; FRAME];
                    law_of(from).decode(&p, &mut pcm);
                    let mut mid = [0u8; FRAME];
                    law_of(to).encode(&pcm, &mut mid);
                    assert_eq!(read(&mid), Some(s), "{from:?}→lin→{to:?}");
                    law_of(to).decode(&mid, &mut pcm);
                    let mut back = [0u8; FRAME];
                    law_of(from).encode(&pcm, &mut back);
                    assert_eq!(back.as_slice(), p.as_slice(), "{from:?}→{to:?}→{from:?} must be lossless");
                    // The relay path: table transcoding in place, and back.
                    let mut t = p.clone();
                    transcode_in_place(law_of(from), law_of(to), &mut t);
                    assert_eq!(read(&t), Some(s), "table {from:?}→{to:?}");
                    transcode_in_place(law_of(to), law_of(from), &mut t);
                    assert_eq!(t, p);
                }
            }
        }
    }

    #[test]
    fn rechunked_audio_still_yields_a_stamp_of_an_overlapped_packet() {
        let (a, b) = (Stamp { stream: 7, seq: 10, sent_us: 100 }, Stamp { stream: 7, seq: 11, sent_us: 20_100 });
        for l in [Law::Pcmu, Law::Pcma] {
            let mut two = frame(l, &a);
            two.extend(frame(l, &b));
            for shift in 0..=FRAME {
                let got = read(&two[shift..shift + FRAME]);
                assert!(got == Some(a) || got == Some(b), "shift {shift}: {got:?}");
            }
        }
    }

    #[test]
    fn damaged_or_foreign_payloads_are_rejected() {
        assert_eq!(read(&[0xFF; FRAME]), None);
        assert_eq!(read(&[0xD5; FRAME]), None);
        assert_eq!(read(&[0xC0; 10]), None);
        let s = Stamp { stream: 3, seq: 4, sent_us: 5 };
        let mut p = frame(Law::Pcmu, &s);
        // One data symbol changed in every copy: the CRC catches it.
        for off in COPIES {
            p[off + 10] = if p[off + 10] == ALPHABET_PCMU[1] { ALPHABET_PCMU[2] } else { ALPHABET_PCMU[1] };
        }
        assert_eq!(read(&p), None);
    }
}
