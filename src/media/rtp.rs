//! RTP packets (RFC 3550 §5.1) as zero-copy views over the caller's datagram buffer.
//!
//! [`RtpPacket`] validates a received datagram once (version, fixed header, CSRC list,
//! header extension, padding) and then reads fields straight from the bytes;
//! [`RtpPacketMut`] additionally rewrites payload type, sequence number, timestamp
//! and SSRC in place for pass-through relaying; [`RtpHeader`] writes a 12-byte header
//! (plus payload) into a caller-provided buffer. Nothing here allocates, so the relay
//! hot path is parse → rewrite → send on the same buffer. Any byte string is either
//! a valid packet or a typed [`RtpError`]; no input panics.
//!
//! Not here: sockets, RTCP parsing (only [`is_rtcp`] for rtcp-mux demultiplexing),
//! SRTP.

/// RTP version carried in every packet (RFC 3550 §5.1, `V`).
pub const RTP_VERSION: u8 = 2;
/// Length in bytes of the fixed RTP header, without CSRCs or extension.
pub const FIXED_HEADER_LEN: usize = 12;

/// Why a datagram is not an acceptable RTP packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RtpError {
    /// Shorter than the 12-byte fixed header.
    #[error("RTP packet of {len} bytes is shorter than the 12-byte fixed header")]
    TooShort {
        /// Datagram length in bytes.
        len: usize,
    },
    /// The version field is not 2.
    #[error("RTP version {version} is not 2")]
    BadVersion {
        /// Value of the two version bits.
        version: u8,
    },
    /// The CSRC list announced by the CC field runs past the end of the datagram.
    #[error("RTP packet of {len} bytes cannot hold its {csrc_count} CSRC identifiers")]
    CsrcTruncated {
        /// Datagram length in bytes.
        len: usize,
        /// The CC field.
        csrc_count: u8,
    },
    /// The header extension (X bit) runs past the end of the datagram.
    #[error("RTP header extension runs past the end of the {len}-byte packet")]
    ExtensionTruncated {
        /// Datagram length in bytes.
        len: usize,
    },
    /// The P bit is set but the padding count is 0 or larger than the payload.
    #[error("RTP padding count {padding} does not fit the {available} bytes after the header")]
    BadPadding {
        /// Last byte of the packet (the padding count).
        padding: u8,
        /// Bytes after the header, padding included.
        available: usize,
    },
    /// The caller's output buffer cannot hold the packet being written.
    #[error("buffer of {have} bytes cannot hold a {need}-byte RTP packet")]
    BufferTooSmall {
        /// Bytes the packet needs.
        need: usize,
        /// Bytes the buffer has.
        have: usize,
    },
}

/// Where the payload sits inside a validated packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Layout {
    payload_start: usize,
    payload_end: usize,
}

/// Validates `buf` as an RTP packet (RFC 3550 §5.1, and the validity checks of
/// Appendix A.1 that need no per-source state).
fn validate(buf: &[u8]) -> Result<Layout, RtpError> {
    let len = buf.len();
    let (first, _) = match buf.split_first_chunk::<FIXED_HEADER_LEN>() {
        Some(split) => split,
        None => return Err(RtpError::TooShort { len }),
    };
    let version = first[0] >> 6;
    if version != RTP_VERSION {
        return Err(RtpError::BadVersion { version });
    }
    let csrc_count = first[0] & 0x0f;
    let mut header_len = FIXED_HEADER_LEN + 4 * usize::from(csrc_count);
    if header_len > len {
        return Err(RtpError::CsrcTruncated { len, csrc_count });
    }
    if first[0] & 0x10 != 0 {
        // 4-byte extension header: profile-defined id, then length in 32-bit words.
        let words = match buf.get(header_len + 2..header_len + 4) {
            Some(&[hi, lo]) => usize::from(u16::from_be_bytes([hi, lo])),
            _ => return Err(RtpError::ExtensionTruncated { len }),
        };
        header_len += 4 + 4 * words;
        if header_len > len {
            return Err(RtpError::ExtensionTruncated { len });
        }
    }
    let mut payload_end = len;
    if first[0] & 0x20 != 0 {
        let available = len - header_len;
        let padding = buf.last().copied().unwrap_or(0);
        if padding == 0 || usize::from(padding) > available {
            return Err(RtpError::BadPadding { padding, available });
        }
        payload_end -= usize::from(padding);
    }
    Ok(Layout { payload_start: header_len, payload_end })
}

/// Reads a big-endian u16 at `at`; callers only pass offsets inside the
/// validated fixed header.
fn be16(buf: &[u8], at: usize) -> u16 {
    match buf.get(at..at + 2) {
        Some(&[a, b]) => u16::from_be_bytes([a, b]),
        _ => 0,
    }
}

/// Reads a big-endian u32 at `at`; see [`be16`].
fn be32(buf: &[u8], at: usize) -> u32 {
    match buf.get(at..at + 4) {
        Some(&[a, b, c, d]) => u32::from_be_bytes([a, b, c, d]),
        _ => 0,
    }
}

/// A validated, read-only RTP packet borrowing the datagram bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RtpPacket<'a> {
    buf: &'a [u8],
    layout: Layout,
}

impl<'a> RtpPacket<'a> {
    /// Validates `buf` (one UDP datagram) as an RTP packet.
    pub fn parse(buf: &'a [u8]) -> Result<Self, RtpError> {
        validate(buf).map(|layout| RtpPacket { buf, layout })
    }

    /// The marker bit (`M`): start of a talkspurt for audio (RFC 3551 §4.1), first
    /// packet of an event for telephone-event (RFC 4733 §2.5.1.1).
    pub fn marker(&self) -> bool {
        self.buf.get(1).is_some_and(|b| b & 0x80 != 0)
    }

    /// The 7-bit payload type (`PT`).
    pub fn payload_type(&self) -> u8 {
        self.buf.get(1).map_or(0, |b| b & 0x7f)
    }

    /// The 16-bit sequence number (wraps; see `stats` for the extended one).
    pub fn sequence_number(&self) -> u16 {
        be16(self.buf, 2)
    }

    /// The 32-bit RTP timestamp, in units of the payload's clock rate (8000 Hz for
    /// G.711 and telephone-event/8000).
    pub fn timestamp(&self) -> u32 {
        be32(self.buf, 4)
    }

    /// The synchronization source identifier.
    pub fn ssrc(&self) -> u32 {
        be32(self.buf, 8)
    }

    /// Number of CSRC identifiers (`CC`, 0–15).
    pub fn csrc_count(&self) -> u8 {
        self.buf.first().map_or(0, |b| b & 0x0f)
    }

    /// The contributing source identifiers, in header order.
    pub fn csrcs(&self) -> impl Iterator<Item = u32> + 'a {
        let buf = self.buf;
        (0..usize::from(self.csrc_count())).map(move |i| be32(buf, FIXED_HEADER_LEN + 4 * i))
    }

    /// Whether the `X` bit announces a header extension.
    pub fn has_extension(&self) -> bool {
        self.buf.first().is_some_and(|b| b & 0x10 != 0)
    }

    /// Whether the `P` bit announces padding (already excluded from [`payload`](Self::payload)).
    pub fn has_padding(&self) -> bool {
        self.buf.first().is_some_and(|b| b & 0x20 != 0)
    }

    /// Header length in bytes: fixed header, CSRCs and extension.
    pub fn header_len(&self) -> usize {
        self.layout.payload_start
    }

    /// The payload, without header and padding (for G.711: one byte per sample).
    pub fn payload(&self) -> &'a [u8] {
        self.buf.get(self.layout.payload_start..self.layout.payload_end).unwrap_or(&[])
    }

    /// The whole datagram.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.buf
    }
}

/// A validated RTP packet whose header can be rewritten in place (relaying).
#[derive(Debug, PartialEq, Eq)]
pub struct RtpPacketMut<'a> {
    buf: &'a mut [u8],
    layout: Layout,
}

impl<'a> RtpPacketMut<'a> {
    /// Validates `buf` as an RTP packet for in-place rewriting.
    pub fn parse(buf: &'a mut [u8]) -> Result<Self, RtpError> {
        let layout = validate(buf)?;
        Ok(RtpPacketMut { buf, layout })
    }

    /// A read-only view of the same packet.
    pub fn view(&self) -> RtpPacket<'_> {
        RtpPacket { buf: self.buf, layout: self.layout }
    }

    /// Sets the marker bit.
    pub fn set_marker(&mut self, marker: bool) {
        if let Some(b) = self.buf.get_mut(1) {
            *b = (*b & 0x7f) | if marker { 0x80 } else { 0 };
        }
    }

    /// Sets the payload type (only the low 7 bits of `payload_type` are used);
    /// keeps the marker bit.
    pub fn set_payload_type(&mut self, payload_type: u8) {
        if let Some(b) = self.buf.get_mut(1) {
            *b = (*b & 0x80) | (payload_type & 0x7f);
        }
    }

    /// Sets the sequence number.
    pub fn set_sequence_number(&mut self, sequence_number: u16) {
        if let Some(dst) = self.buf.get_mut(2..4) {
            dst.copy_from_slice(&sequence_number.to_be_bytes());
        }
    }

    /// Sets the RTP timestamp (clock-rate units).
    pub fn set_timestamp(&mut self, timestamp: u32) {
        if let Some(dst) = self.buf.get_mut(4..8) {
            dst.copy_from_slice(&timestamp.to_be_bytes());
        }
    }

    /// Sets the SSRC.
    pub fn set_ssrc(&mut self, ssrc: u32) {
        if let Some(dst) = self.buf.get_mut(8..12) {
            dst.copy_from_slice(&ssrc.to_be_bytes());
        }
    }

    /// The payload for in-place changes of the same length (e.g. PCMU→PCMA
    /// transcoding with `g711::transcode_in_place`).
    pub fn payload_mut(&mut self) -> &mut [u8] {
        self.buf.get_mut(self.layout.payload_start..self.layout.payload_end).unwrap_or(&mut [])
    }

    /// The whole datagram, as rewritten.
    pub fn as_bytes(&self) -> &[u8] {
        self.buf
    }
}

/// The fields of a 12-byte RTP header this gateway originates (no CSRCs, no
/// extension, no padding): for audio it generates itself (agent, mixer, playback)
/// and for RFC 4733 events.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RtpHeader {
    /// Marker bit.
    pub marker: bool,
    /// Payload type, 0–127.
    pub payload_type: u8,
    /// Sequence number.
    pub sequence_number: u16,
    /// RTP timestamp in clock-rate units.
    pub timestamp: u32,
    /// Synchronization source.
    pub ssrc: u32,
}

impl RtpHeader {
    /// Writes the 12-byte header to the start of `out`; the caller then fills the
    /// payload at `out[12..]` directly (e.g. G.711 encoding into the send buffer).
    pub fn write_header(&self, out: &mut [u8]) -> Result<(), RtpError> {
        let have = out.len();
        let Some(header) = out.first_chunk_mut::<FIXED_HEADER_LEN>() else {
            return Err(RtpError::BufferTooSmall { need: FIXED_HEADER_LEN, have });
        };
        header[0] = RTP_VERSION << 6;
        header[1] = (self.payload_type & 0x7f) | if self.marker { 0x80 } else { 0 };
        header[2..4].copy_from_slice(&self.sequence_number.to_be_bytes());
        header[4..8].copy_from_slice(&self.timestamp.to_be_bytes());
        header[8..12].copy_from_slice(&self.ssrc.to_be_bytes());
        Ok(())
    }

    /// Writes header and `payload` into `out`; returns the packet length in bytes.
    pub fn write(&self, payload: &[u8], out: &mut [u8]) -> Result<usize, RtpError> {
        let need = FIXED_HEADER_LEN + payload.len();
        let have = out.len();
        let Some(dst) = out.get_mut(..need) else {
            return Err(RtpError::BufferTooSmall { need, have });
        };
        self.write_header(dst)?;
        if let Some(body) = dst.get_mut(FIXED_HEADER_LEN..) {
            body.copy_from_slice(payload);
        }
        Ok(need)
    }
}

/// Whether a datagram arriving on an rtcp-mux port is RTCP rather than RTP:
/// second byte (RTCP packet type, or RTP marker+PT) in 192..=223, i.e. RTP payload
/// types 64–95 (RFC 5761 §4).
pub fn is_rtcp(datagram: &[u8]) -> bool {
    datagram.get(1).is_some_and(|b| (192..=223).contains(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// PCMU packet: M=1, PT 0, seq 0x1234, ts 0xDEADBEEF, SSRC 0x01020304, 3 bytes payload.
    const SIMPLE: [u8; 15] = [0x80, 0x80, 0x12, 0x34, 0xde, 0xad, 0xbe, 0xef, 1, 2, 3, 4, 0xff, 0xfe, 0xfd];

    #[test]
    fn parses_fixed_header_fields() {
        let p = RtpPacket::parse(&SIMPLE).unwrap();
        assert!(p.marker());
        assert_eq!(p.payload_type(), 0);
        assert_eq!(p.sequence_number(), 0x1234);
        assert_eq!(p.timestamp(), 0xdead_beef);
        assert_eq!(p.ssrc(), 0x0102_0304);
        assert_eq!(p.csrc_count(), 0);
        assert_eq!(p.header_len(), 12);
        assert_eq!(p.payload(), &[0xff, 0xfe, 0xfd]);
        assert!(!p.has_extension() && !p.has_padding());
    }

    #[test]
    fn csrcs_extension_and_padding_are_skipped() {
        let mut pkt = vec![0xb2, 8, 0, 1, 0, 0, 0, 160, 0, 0, 0, 9]; // V2 P X CC=2, PT 8
        pkt.extend_from_slice(&[0, 0, 0, 0x11, 0, 0, 0, 0x22]); // CSRCs
        pkt.extend_from_slice(&[0xbe, 0xde, 0, 1, 0x10, 0xaa, 0, 0]); // one-byte ext, 1 word
        pkt.extend_from_slice(&[0xd5, 0xd5, 0xd5, 0xd5]); // payload
        pkt.extend_from_slice(&[0, 0, 3]); // 3 bytes padding
        let p = RtpPacket::parse(&pkt).unwrap();
        assert_eq!(p.csrcs().collect::<Vec<_>>(), vec![0x11, 0x22]);
        assert_eq!(p.header_len(), 28);
        assert_eq!(p.payload(), &[0xd5; 4]);
        assert_eq!(p.payload_type(), 8);
        assert!(!p.marker());
    }

    #[test]
    fn malformed_headers_are_typed_errors() {
        assert_eq!(RtpPacket::parse(&SIMPLE[..11]), Err(RtpError::TooShort { len: 11 }));
        let mut v1 = SIMPLE;
        v1[0] = 0x40;
        assert_eq!(RtpPacket::parse(&v1), Err(RtpError::BadVersion { version: 1 }));
        let mut cc = SIMPLE;
        cc[0] = 0x81; // one CSRC needs 16 bytes, we have 15
        assert_eq!(RtpPacket::parse(&cc), Err(RtpError::CsrcTruncated { len: 15, csrc_count: 1 }));
        let mut ext = SIMPLE;
        ext[0] = 0x90; // extension header needs 4 bytes, 3 left
        assert_eq!(RtpPacket::parse(&ext), Err(RtpError::ExtensionTruncated { len: 15 }));
        let mut ext_len = SIMPLE.to_vec();
        ext_len[0] = 0x90;
        ext_len.extend_from_slice(&[0, 0xff]); // ext header 0xfffd 0x00ff: 255 words, absent
        assert_eq!(RtpPacket::parse(&ext_len), Err(RtpError::ExtensionTruncated { len: 17 }));
        let mut pad = SIMPLE;
        pad[0] = 0xa0;
        pad[14] = 4; // 4 bytes of padding but only 3 after the header
        assert_eq!(RtpPacket::parse(&pad), Err(RtpError::BadPadding { padding: 4, available: 3 }));
        pad[14] = 0;
        assert_eq!(RtpPacket::parse(&pad), Err(RtpError::BadPadding { padding: 0, available: 3 }));
        pad[14] = 3; // padding consumes the whole payload: valid, empty payload
        assert_eq!(RtpPacket::parse(&pad).unwrap().payload(), &[] as &[u8]);
    }

    #[test]
    fn random_and_truncated_buffers_never_panic() {
        // xorshift64: deterministic pseudo-random bytes.
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut valid = 0;
        let mut buf = [0u8; 96];
        for round in 0..20_000 {
            let len = (next() % 97) as usize;
            for b in buf.iter_mut() {
                *b = next() as u8;
            }
            if round % 2 == 0 {
                buf[0] = 0x80 | (buf[0] & 0x3f); // version 2, random P/X/CC: reach deeper checks
            }
            let slice = &mut buf[..len];
            if let Ok(p) = RtpPacket::parse(slice) {
                valid += 1;
                assert!(p.header_len() + p.payload().len() <= len);
                let _ = (p.marker(), p.payload_type(), p.sequence_number(), p.timestamp(), p.ssrc());
                assert_eq!(p.csrcs().count(), usize::from(p.csrc_count()));
            }
            if let Ok(mut m) = RtpPacketMut::parse(slice) {
                m.set_sequence_number(1);
                m.set_payload_type(0xff);
                let n = m.payload_mut().len();
                assert!(n <= len);
            }
            for cut in 0..len.min(20) {
                let _ = RtpPacket::parse(&buf[..cut]);
            }
            let _ = is_rtcp(&buf[..len]);
        }
        assert!(valid > 100, "the generator must also produce valid packets ({valid})");
    }

    #[test]
    fn in_place_rewrite_keeps_payload_and_other_bits() {
        let mut pkt = SIMPLE;
        let mut m = RtpPacketMut::parse(&mut pkt).unwrap();
        m.set_payload_type(8);
        m.set_sequence_number(0xfffe);
        m.set_timestamp(160);
        m.set_ssrc(0xcafe_babe);
        assert!(m.view().marker(), "PT rewrite keeps the marker");
        m.set_marker(false);
        m.payload_mut()[0] = 0x2a;
        let p = m.view();
        assert_eq!(
            (p.marker(), p.payload_type(), p.sequence_number(), p.timestamp(), p.ssrc()),
            (false, 8, 0xfffe, 160, 0xcafe_babe)
        );
        assert_eq!(p.payload(), &[0x2a, 0xfe, 0xfd]);
        assert_eq!(pkt[0], 0x80);
    }

    #[test]
    fn builder_writes_a_parseable_packet_or_refuses_a_small_buffer() {
        let header = RtpHeader { marker: true, payload_type: 101, sequence_number: 7, timestamp: 8000, ssrc: 42 };
        let mut out = [0u8; 172];
        let n = header.write(&[0x55; 160], &mut out).unwrap();
        assert_eq!(n, 172);
        let p = RtpPacket::parse(&out[..n]).unwrap();
        assert_eq!(
            (p.marker(), p.payload_type(), p.sequence_number(), p.timestamp(), p.ssrc()),
            (true, 101, 7, 8000, 42)
        );
        assert_eq!(p.payload(), &[0x55; 160]);
        assert_eq!(header.write(&[0; 161], &mut out), Err(RtpError::BufferTooSmall { need: 173, have: 172 }));
        assert_eq!(header.write_header(&mut out[..11]), Err(RtpError::BufferTooSmall { need: 12, have: 11 }));
    }

    #[test]
    fn rtcp_mux_demultiplexing() {
        assert!(is_rtcp(&[0x80, 200])); // SR
        assert!(is_rtcp(&[0x81, 201])); // RR
        assert!(!is_rtcp(&SIMPLE)); // RTP PT 0 with marker = 0x80
        assert!(!is_rtcp(&[0x80, 101])); // telephone-event
        assert!(!is_rtcp(&[0x80]));
    }
}
