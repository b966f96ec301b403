//! Codec names as SDP and RTP carry them: the G.711 laws (RFC 3551 §4.5.14,
//! static payload types 0 and 8, Table 4) and the payload type the box offers
//! for RFC 4733 telephone-event. Names only: the codecs themselves are in
//! `media` (`media::g711` implements G.711 on this [`G711`]).

/// RTP payload type of PCMU (µ-law), RFC 3551 Table 4.
pub const PCMU_PAYLOAD_TYPE: u8 = 0;
/// RTP payload type of PCMA (A-law), RFC 3551 Table 4.
pub const PCMA_PAYLOAD_TYPE: u8 = 8;
/// Sample rate and RTP clock rate of G.711, in Hz (RFC 3551 §4.5.14).
pub const CLOCK_RATE_HZ: u32 = 8000;

/// One of the two G.711 laws, named by its RTP encoding name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum G711 {
    /// µ-law, `PCMU/8000`, payload type 0 (North America, Japan; Telnyx's default).
    Pcmu,
    /// A-law, `PCMA/8000`, payload type 8 (most of the rest of the world).
    Pcma,
}

impl G711 {
    /// The static RTP payload type (RFC 3551 Table 4): 0 or 8.
    pub const fn payload_type(self) -> u8 {
        match self {
            G711::Pcmu => PCMU_PAYLOAD_TYPE,
            G711::Pcma => PCMA_PAYLOAD_TYPE,
        }
    }

    /// The law carried by static payload type `pt`, if it is 0 or 8.
    pub const fn from_payload_type(pt: u8) -> Option<G711> {
        match pt {
            PCMU_PAYLOAD_TYPE => Some(G711::Pcmu),
            PCMA_PAYLOAD_TYPE => Some(G711::Pcma),
            _ => None,
        }
    }

    /// The SDP/RTP encoding name, `"PCMU"` or `"PCMA"` (RFC 3551 §4.5.14).
    pub const fn encoding_name(self) -> &'static str {
        match self {
            G711::Pcmu => "PCMU",
            G711::Pcma => "PCMA",
        }
    }

    /// The law whose encoding name is `name` (case-insensitive, as RFC 4566 §6
    /// compares rtpmap encoding names).
    pub fn from_encoding_name(name: &str) -> Option<G711> {
        if name.eq_ignore_ascii_case("PCMU") {
            Some(G711::Pcmu)
        } else if name.eq_ignore_ascii_case("PCMA") {
            Some(G711::Pcma)
        } else {
            None
        }
    }
}

/// The dynamic payload type this gateway offers for telephone-event (common
/// practice; RFC 4733 §2.1 leaves it to the offer).
pub const TELEPHONE_EVENT_PAYLOAD_TYPE: u8 = 101;

/// RTP payload type of G.722, RFC 3551 Table 4.
pub const G722_PAYLOAD_TYPE: u8 = 9;
/// The dynamic payload type this gateway offers for Opus (the common choice; RFC
/// 7587 §7 leaves it to the offer).
pub const OPUS_PAYLOAD_TYPE: u8 = 111;
/// The dynamic payload type this gateway offers for telephone-event at 48000 Hz
/// beside Opus (RFC 4733 §2.1: one payload type per clock rate).
pub const TELEPHONE_EVENT_48K_PAYLOAD_TYPE: u8 = 110;

/// An audio codec a SIP leg may carry, named by its RTP encoding name: the G.711
/// laws, G.722 (RFC 3551 §4.5.2) and Opus (RFC 7587).
///
/// Two rates matter per codec and differ for two of them:
/// - [`AudioCodec::rtp_clock_rate`]: the RTP timestamp clock written in `a=rtpmap`
///   (8000 Hz for G.722 although it samples at 16000 Hz, an erratum kept by RFC 3551
///   §4.5.2 for compatibility; 48000 Hz for Opus whatever its internal rate, RFC 7587
///   §4.1);
/// - [`AudioCodec::sample_rate`]: the PCM rate the box decodes to and encodes from:
///   8000 Hz for G.711, 16000 Hz for G.722 and Opus (wideband; Opus is asked for
///   `maxplaybackrate=16000`, and a decoder at 16000 Hz takes any Opus packet).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AudioCodec {
    /// G.711 µ-law, `PCMU/8000`, payload type 0.
    Pcmu,
    /// G.711 A-law, `PCMA/8000`, payload type 8.
    Pcma,
    /// G.722 64 kbit/s sub-band ADPCM, `G722/8000`, payload type 9, 16 kHz audio.
    G722,
    /// Opus, `opus/48000/2` (RFC 7587 §7), a dynamic payload type, mono at 16 kHz here.
    Opus,
}

impl AudioCodec {
    /// Every codec, in the box's default preference order for wideband-capable peers.
    pub const ALL: [AudioCodec; 4] = [AudioCodec::Opus, AudioCodec::G722, AudioCodec::Pcmu, AudioCodec::Pcma];

    /// The encoding name written in `a=rtpmap` (`PCMU`, `PCMA`, `G722`, `opus`).
    pub const fn encoding_name(self) -> &'static str {
        match self {
            AudioCodec::Pcmu => "PCMU",
            AudioCodec::Pcma => "PCMA",
            AudioCodec::G722 => "G722",
            AudioCodec::Opus => "opus",
        }
    }

    /// The static payload type (RFC 3551 Table 4), `None` for Opus (dynamic).
    pub const fn static_payload_type(self) -> Option<u8> {
        match self {
            AudioCodec::Pcmu => Some(PCMU_PAYLOAD_TYPE),
            AudioCodec::Pcma => Some(PCMA_PAYLOAD_TYPE),
            AudioCodec::G722 => Some(G722_PAYLOAD_TYPE),
            AudioCodec::Opus => None,
        }
    }

    /// The payload type this gateway uses for the codec in its own offers.
    pub const fn offered_payload_type(self) -> u8 {
        match self.static_payload_type() {
            Some(pt) => pt,
            None => OPUS_PAYLOAD_TYPE,
        }
    }

    /// The RTP timestamp clock rate in Hz, as `a=rtpmap` writes it.
    pub const fn rtp_clock_rate(self) -> u32 {
        match self {
            AudioCodec::Pcmu | AudioCodec::Pcma | AudioCodec::G722 => CLOCK_RATE_HZ,
            AudioCodec::Opus => 48_000,
        }
    }

    /// The channel count written in `a=rtpmap` (`Some(2)` for Opus, RFC 7587 §7;
    /// the stream is mono unless `stereo=1`, which this gateway never asks for).
    pub const fn rtpmap_channels(self) -> Option<u8> {
        match self {
            AudioCodec::Opus => Some(2),
            _ => None,
        }
    }

    /// The PCM sample rate the box decodes to and encodes from, Hz: 8000 or 16000.
    pub const fn sample_rate(self) -> u32 {
        match self {
            AudioCodec::Pcmu | AudioCodec::Pcma => 8000,
            AudioCodec::G722 | AudioCodec::Opus => 16_000,
        }
    }

    /// Whether the codec carries 16 kHz (wideband) audio.
    pub const fn is_wideband(self) -> bool {
        self.sample_rate() > 8000
    }

    /// RTP timestamp units per millisecond of audio (8 or 48).
    pub const fn rtp_units_per_ms(self) -> u32 {
        self.rtp_clock_rate() / 1000
    }

    /// The G.711 law, for PCMU and PCMA.
    pub const fn g711(self) -> Option<G711> {
        match self {
            AudioCodec::Pcmu => Some(G711::Pcmu),
            AudioCodec::Pcma => Some(G711::Pcma),
            _ => None,
        }
    }

    /// The codec an `a=rtpmap` names: encoding name (case-insensitive, RFC 4566 §6),
    /// clock rate in Hz and channel count (`None` when the rtpmap gives none). G.722
    /// must say 8000 (RFC 3551 §4.5.2) and Opus 48000 with 2 channels (RFC 7587 §7);
    /// anything else is not a codec this gateway speaks.
    pub fn from_rtpmap(name: &str, clock_rate: u32, channels: Option<u8>) -> Option<AudioCodec> {
        let codec = [AudioCodec::Pcmu, AudioCodec::Pcma, AudioCodec::G722, AudioCodec::Opus]
            .into_iter()
            .find(|c| c.encoding_name().eq_ignore_ascii_case(name))?;
        let channels_ok = match codec {
            AudioCodec::Opus => channels == Some(2),
            _ => matches!(channels, None | Some(1)),
        };
        (clock_rate == codec.rtp_clock_rate() && channels_ok).then_some(codec)
    }
}

impl From<G711> for AudioCodec {
    fn from(law: G711) -> AudioCodec {
        match law {
            G711::Pcmu => AudioCodec::Pcmu,
            G711::Pcma => AudioCodec::Pcma,
        }
    }
}

#[cfg(test)]
mod audio_codec_tests {
    use super::*;

    #[test]
    fn rtpmap_names_and_clocks_follow_rfc_3551_and_7587() {
        assert_eq!(AudioCodec::from_rtpmap("g722", 8000, None), Some(AudioCodec::G722));
        assert_eq!(AudioCodec::from_rtpmap("G722", 16000, None), None, "G.722's RTP clock is 8000 Hz");
        assert_eq!(AudioCodec::from_rtpmap("OPUS", 48000, Some(2)), Some(AudioCodec::Opus));
        assert_eq!(AudioCodec::from_rtpmap("opus", 48000, None), None, "RFC 7587 §7: always /2");
        assert_eq!(AudioCodec::from_rtpmap("opus", 16000, Some(2)), None);
        assert_eq!(AudioCodec::from_rtpmap("PCMU", 8000, Some(1)), Some(AudioCodec::Pcmu));
        assert_eq!(AudioCodec::from_rtpmap("G729", 8000, None), None);
        assert_eq!(AudioCodec::G722.sample_rate(), 16_000);
        assert_eq!(AudioCodec::G722.rtp_units_per_ms(), 8);
        assert_eq!(AudioCodec::Opus.rtp_units_per_ms(), 48);
        assert_eq!(AudioCodec::Opus.offered_payload_type(), OPUS_PAYLOAD_TYPE);
        assert_eq!(AudioCodec::from(G711::Pcma).g711(), Some(G711::Pcma));
    }
}
