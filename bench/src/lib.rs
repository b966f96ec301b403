//! Shared pieces of sipbridge's media benchmark tools (`rtpload`, `wsecho`).
//!
//! [`stamp`] is the packet identity carried inside the G.711 payload of every RTP
//! packet `rtpload` sends: stream id, sequence number and send time, written with a
//! 16-symbol alphabet of G.711 codes that come through decode → PCM16 → encode and
//! through PCMU ↔ PCMA transcoding (table or via linear) unchanged. A relay or an
//! agent path may rewrite the RTP header (SSRC, sequence, timestamp, payload type)
//! and re-encode the audio; the stamp still identifies the packet.
//! [`hist`] is the latency histogram.

pub mod hist;
pub mod kstamp;
pub mod stamp;
