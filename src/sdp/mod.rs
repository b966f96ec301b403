//! SDP for audio calls: parsing session descriptions (RFC 4566) and RFC 3264
//! offer/answer for one G.711 stream with RFC 4733 telephone-event.
//!
//! `description` turns an SDP body into typed m= lines (the `sdp-types` crate does
//! the line syntax, robust to the real-world deviations measured in `tests.rs`);
//! `negotiate` answers offers, builds offers and applies answers, writing the SDP
//! text itself. Sans-IO: no sockets, no clock, no randomness (the caller supplies
//! the session id). Errors say what a field technician needs, and
//! [`SdpError::sip_status`] gives the SIP response (400 or 488).

pub mod codec;
pub mod description;
pub mod negotiate;

#[cfg(test)]
mod tests;

pub use description::{Direction, MediaDescription, Origin, PayloadFormat, RtcpAttribute, SessionDescription};
pub use negotiate::{
    Answer, LocalAudio, LocalSession, NegotiatedAudio, Offer, OfferOptions, OfferedAudio, answer_offer, apply_answer,
    build_offer,
};

/// Why an SDP body cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SdpError {
    /// Not valid SDP (RFC 4566 syntax), as reported by the parser.
    #[error("SDP syntax error: {0}")]
    Syntax(String),
    /// A `c=` address that is not an IP address (e.g. a host name).
    #[error("SDP c= address {address:?} is not an IP address (sipbridge does not resolve host names in SDP)")]
    BadAddress {
        /// The address as written.
        address: String,
    },
    /// No audio m= line with a port (all absent or disabled).
    #[error("the SDP has no active audio stream (m=audio)")]
    NoAudio,
    /// The audio transport is not plain RTP/AVP.
    #[error("audio transport {proto} is not supported: sipbridge speaks RTP/AVP only (no SRTP, no DTLS/WebRTC)")]
    UnsupportedTransport {
        /// The transport as written, e.g. `RTP/SAVP`.
        proto: String,
    },
    /// The audio stream has no `c=` address at media or session level.
    #[error("the audio stream has no connection address (c= line)")]
    MissingConnection,
    /// None of the peer's codecs is allowed on this leg.
    #[error("no common audio codec: the peer has {offered}; this leg allows {allowed}")]
    NoCommonCodec {
        /// The peer's formats, e.g. `G729/8000 telephone-event/8000`.
        offered: String,
        /// This leg's allowed codecs, e.g. `PCMU PCMA`.
        allowed: String,
    },
    /// The answer disabled our audio stream (port 0).
    #[error("the answer rejected the audio stream (port 0)")]
    AudioRejected,
    /// The answer does not match the offer's structure.
    #[error("SDP answer does not match the offer: {0}")]
    BadAnswer(String),
}

impl SdpError {
    /// The SIP final response for an offer failing this way: 400 Bad Request for
    /// malformed SDP, 488 Not Acceptable Here for well-formed SDP we cannot accept
    /// (RFC 3261 §21.4.26, RFC 3264 §6).
    pub fn sip_status(&self) -> u16 {
        match self {
            SdpError::Syntax(_) | SdpError::MissingConnection => 400,
            _ => 488,
        }
    }
}
