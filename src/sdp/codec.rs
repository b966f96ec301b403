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
