//! The relay between two SIP legs (forward routes, B2BUA): which side an event or
//! command concerns. The relay itself is a media-engine job
//! (`media::engine::RelayJob`, the per-packet rewrite in
//! `media::leg::RtpSession::relay_from`): RTP from one leg goes out on the other
//! without decoding when both use the same codec (only the payload type is
//! rewritten when the legs numbered it differently; PCMU↔PCMA is transcoded in
//! place by table); RFC 4733 events are relayed with their payload type mapped
//! and reported as digits; SSRC, sequence numbers and timestamps pass through.

/// Which leg an event or command concerns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The leg that received the call (caller side).
    A,
    /// The leg the box dialled.
    B,
}
