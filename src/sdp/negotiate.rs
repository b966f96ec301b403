//! RFC 3264 offer/answer for one audio stream: answering a peer's offer (inbound
//! legs, re-INVITEs), building our offer and applying the peer's answer (outbound
//! legs, offerless INVITEs).
//!
//! Codecs: PCMU, PCMA (RFC 3551 §4.5.14), G.722 (`G722/8000`, RFC 3551 §4.5.2) and
//! Opus (`opus/48000/2`, RFC 7587 §7), as the leg's trunk allows them.
//!
//! Policy, in RFC terms: the codec is the first codec of THIS LEG's list (the
//! trunk's `codecs` order) that the offer carries (RFC 3264 §6.1 lets the answerer
//! choose among the offered formats; the trunk's order is how a technician prefers
//! wideband or a law); the answer carries that one codec (one codec per leg keeps
//! the media path free of mid-call codec switches), telephone-event at the codec's
//! RTP clock rate with the offerer's payload type when offered (RFC 4733 §2.1:
//! `telephone-event/48000` beside Opus), the offered ptime (20 ms when absent; Opus
//! only in whole 10/20/40/60 ms frames), `a=rtcp-mux` when offered, and the
//! mirrored direction. Every other m= line is rejected with port 0. An Opus answer
//! asks for mono 16 kHz speech with in-band FEC (RFC 7587 §6.1: `useinbandfec=1;
//! maxplaybackrate=16000;stereo=0;sprop-maxcapturerate=16000`).

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};

use super::SdpError;
use super::description::{Direction, MediaDescription, SessionDescription};
use crate::sdp::codec::{AudioCodec, TELEPHONE_EVENT_48K_PAYLOAD_TYPE, TELEPHONE_EVENT_PAYLOAD_TYPE};

/// Default packet time when the peer states none (RFC 3551 Table 1: 20 ms for G.711).
pub const DEFAULT_PTIME_MS: u32 = 20;
/// Packet times accepted from a peer, in ms; others fall back to the default.
pub const PTIME_RANGE_MS: std::ops::RangeInclusive<u32> = 10..=120;
/// The telephone-event events this gateway declares (`a=fmtp:101 0-16`: DTMF and flash).
pub const TELEPHONE_EVENT_FMTP: &str = "0-16";
/// `s=` of every description this gateway writes.
pub const SESSION_NAME: &str = "sipbridge";
/// The Opus parameters this gateway asks for (RFC 7587 §6.1): mono speech at 16
/// kHz with in-band forward error correction.
pub const OPUS_FMTP: &str = "useinbandfec=1;maxplaybackrate=16000;stereo=0;sprop-maxcapturerate=16000";
/// Opus frame durations this gateway encodes, ms (RFC 6716 §2.1.4, without 2.5 and 5).
const OPUS_PTIMES_MS: [u32; 4] = [10, 20, 40, 60];

/// This leg's side of the media: what it may use and where it listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalAudio {
    /// Allowed codecs in the trunk's preference order (used as is in our offers,
    /// and to choose among an offer's codecs).
    pub codecs: Vec<AudioCodec>,
    /// Address written in `o=` and `c=` (the public/advertised media address).
    pub address: IpAddr,
    /// Local RTP port.
    pub port: u16,
}

/// Our `o=` line across a dialog: the session id stays, the version increases
/// whenever the description we send changes (RFC 3264 §8).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalSession {
    session_id: u64,
    version: u64,
    /// Body of the last description, without the o= line, to tell a change.
    last_body: Option<String>,
}

impl LocalSession {
    /// A session with `session_id` (any number unique enough; e.g. random from
    /// `rand_core::OsRng`, or derived from the Call-ID) and version = session id,
    /// the usual NTP-free convention.
    pub fn new(session_id: u64) -> LocalSession {
        // RFC 4566 §5.2 suggests NTP timestamps; any 63-bit number works. Keeping it
        // below 2^62 leaves room for version increments.
        let id = session_id & 0x3fff_ffff_ffff_ffff;
        LocalSession { session_id: id, version: id, last_body: None }
    }

    /// The session id written in `o=`.
    pub fn session_id(&self) -> u64 {
        self.session_id
    }

    /// The version of the last description written.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Completes `body` (everything after the o= line) into a description: the
    /// version increments unless `body` equals the previous one.
    fn finish(&mut self, address: IpAddr, body: String) -> String {
        match &self.last_body {
            Some(previous) if *previous == body => {}
            Some(_) => self.version += 1,
            None => {}
        }
        let mut out = String::with_capacity(body.len() + 64);
        let _ = write!(out, "v=0\r\no=- {} {} IN {} {}\r\n", self.session_id, self.version, ip_kind(address), address);
        out.push_str(&body);
        self.last_body = Some(body);
        out
    }
}

/// `IP4` or `IP6` for the `c=`/`o=` address type.
fn ip_kind(address: IpAddr) -> &'static str {
    if address.is_ipv4() { "IP4" } else { "IP6" }
}

/// The outcome of a negotiation, for the media layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NegotiatedAudio {
    /// The codec of the call leg.
    pub codec: AudioCodec,
    /// Payload type to send audio with (the remote's number for the codec).
    pub payload_type: u8,
    /// Payload type audio arrives with (ours; equal to `payload_type` when we answered).
    pub receive_payload_type: u8,
    /// Payload type to send RFC 4733 events with, if the peer takes them.
    pub telephone_event: Option<u8>,
    /// Payload type RFC 4733 events arrive with, if negotiated.
    pub receive_telephone_event: Option<u8>,
    /// Where to send RTP; `None` while the peer is on hold with `c=0.0.0.0` or has
    /// no port (the latching layer may still learn it from arriving packets).
    pub remote_rtp: Option<SocketAddr>,
    /// Where to send RTCP: the RTP address with rtcp-mux, `a=rtcp` when given,
    /// else RTP port + 1 (RFC 3550 §11).
    pub remote_rtcp: Option<SocketAddr>,
    /// RTP and RTCP share one port (RFC 5761).
    pub rtcp_mux: bool,
    /// Packet time to send with, in ms (160 bytes per 20 ms of G.711 or G.722).
    pub ptime_ms: u32,
    /// Our direction: whether this gateway may send and/or receive on the leg.
    pub direction: Direction,
}

/// An answer to send, and what it set up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    /// The SDP body (CRLF line endings).
    pub body: String,
    /// The negotiated stream.
    pub audio: NegotiatedAudio,
}

/// What we put in an offer, needed to apply the answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OfferedAudio {
    /// Codecs offered, in order (each at [`AudioCodec::offered_payload_type`]).
    pub codecs: Vec<AudioCodec>,
    /// Payload type offered for telephone-event/8000.
    pub telephone_event: u8,
    /// Payload type offered for telephone-event/48000 (when Opus was offered).
    pub telephone_event_48k: Option<u8>,
    /// Whether `a=rtcp-mux` was offered.
    pub rtcp_mux: bool,
    /// Offered ptime, ms.
    pub ptime_ms: u32,
}

/// An offer to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Offer {
    /// The SDP body (CRLF line endings).
    pub body: String,
    /// What it offered.
    pub offered: OfferedAudio,
}

/// Options for [`build_offer`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OfferOptions {
    /// Direction to offer (sendonly to put the peer on hold).
    pub direction: Direction,
    /// Offer `a=rtcp-mux` (the RTP socket must then also accept RTCP).
    pub rtcp_mux: bool,
    /// ptime to offer, ms.
    pub ptime_ms: u32,
}

impl Default for OfferOptions {
    fn default() -> Self {
        OfferOptions { direction: Direction::SendRecv, rtcp_mux: false, ptime_ms: DEFAULT_PTIME_MS }
    }
}

/// The direction a description really expresses: `c=0.0.0.0` (RFC 2543 hold,
/// RFC 3264 §8.4) means "do not send to me", so it removes the receive half.
fn effective_direction(m: &MediaDescription) -> Direction {
    if m.connection.is_some_and(|a| a.is_unspecified()) {
        match m.direction {
            Direction::SendRecv => Direction::SendOnly,
            Direction::RecvOnly => Direction::Inactive,
            other => other,
        }
    } else {
        m.direction
    }
}

/// Remote RTP and RTCP addresses of a stream (None on hold / port 0).
fn remote_addresses(m: &MediaDescription, rtcp_mux: bool) -> (Option<SocketAddr>, Option<SocketAddr>) {
    let Some(ip) = m.connection.filter(|a| !a.is_unspecified()) else { return (None, None) };
    if m.port == 0 {
        return (None, None);
    }
    let rtp = SocketAddr::new(ip, m.port);
    let rtcp = if rtcp_mux {
        rtp
    } else if let Some(attr) = m.rtcp {
        SocketAddr::new(attr.address.unwrap_or(ip), attr.port)
    } else {
        SocketAddr::new(ip, m.port.wrapping_add(1))
    };
    (Some(rtp), Some(rtcp))
}

/// The ptime to use given the peer's `a=ptime`/`a=maxptime`.
fn choose_ptime(ptime_ms: Option<u32>, maxptime_ms: Option<u32>) -> u32 {
    let wanted = ptime_ms.filter(|p| PTIME_RANGE_MS.contains(p)).unwrap_or(DEFAULT_PTIME_MS);
    match maxptime_ms.filter(|m| PTIME_RANGE_MS.contains(m)) {
        Some(max) => wanted.min(max),
        None => wanted,
    }
}

/// The ptime for `codec`: Opus only in the frame sizes it encodes (20 ms otherwise).
fn codec_ptime(codec: AudioCodec, ptime_ms: u32) -> u32 {
    if codec == AudioCodec::Opus && !OPUS_PTIMES_MS.contains(&ptime_ms) { DEFAULT_PTIME_MS } else { ptime_ms }
}

/// Names of an m= line's formats, for error messages: `PCMU/8000 G729/8000 101`.
fn describe_formats(m: &MediaDescription) -> String {
    let names: Vec<String> = m
        .formats
        .iter()
        .map(|f| match &f.encoding_name {
            Some(name) => format!("{name}/{}", f.clock_rate_hz),
            None => f.payload_type.to_string(),
        })
        .collect();
    names.join(" ")
}

fn describe_codecs(codecs: &[AudioCodec]) -> String {
    let names: Vec<&str> = codecs.iter().map(|c| c.encoding_name()).collect();
    if names.is_empty() { "nothing".to_string() } else { names.join(" ") }
}

/// The codec `f` carries, if it is one this gateway speaks (name, clock and
/// channels as RFC 3551 / RFC 7587 write them).
fn format_codec(f: &crate::sdp::description::PayloadFormat) -> Option<AudioCodec> {
    AudioCodec::from_rtpmap(f.encoding_name.as_deref()?, f.clock_rate_hz, Some(f.channels))
}

/// The first of `preferred` (this leg's order) that `m` carries: `(codec, the
/// payload type m gives it)`.
fn first_common_codec(m: &MediaDescription, preferred: &[AudioCodec]) -> Option<(AudioCodec, u8)> {
    preferred
        .iter()
        .find_map(|&codec| m.formats.iter().find(|f| format_codec(f) == Some(codec)).map(|f| (codec, f.payload_type)))
}

/// The payload type `m` gives telephone-event at `codec`'s RTP clock (RFC 4733 §2.1).
fn telephone_event_for(m: &MediaDescription, codec: AudioCodec) -> Option<u8> {
    m.format("telephone-event", codec.rtp_clock_rate()).map(|f| f.payload_type)
}

/// Answers `offer` (RFC 3264 §6) for this leg. The SIP layer maps every error to
/// its [`SdpError::sip_status`] (488 for no common codec or no usable audio).
pub fn answer_offer(
    offer: &SessionDescription,
    local: &LocalAudio,
    session: &mut LocalSession,
) -> Result<Answer, SdpError> {
    // Pick the first usable audio stream; remember why others were unusable.
    let mut first_problem: Option<SdpError> = None;
    let mut chosen: Option<(usize, AudioCodec, u8)> = None;
    for (index, m) in offer.media.iter().enumerate() {
        if !m.media.eq_ignore_ascii_case("audio") || m.port == 0 {
            continue;
        }
        if !m.is_rtp_avp() {
            first_problem.get_or_insert(SdpError::UnsupportedTransport { proto: m.proto.clone() });
            continue;
        }
        if m.connection.is_none() {
            first_problem.get_or_insert(SdpError::MissingConnection);
            continue;
        }
        match first_common_codec(m, &local.codecs) {
            Some((law, pt)) => {
                chosen = Some((index, law, pt));
                break;
            }
            None => {
                first_problem.get_or_insert(SdpError::NoCommonCodec {
                    offered: describe_formats(m),
                    allowed: describe_codecs(&local.codecs),
                });
            }
        }
    }
    let Some((audio_index, codec, payload_type)) = chosen else {
        return Err(first_problem.unwrap_or(SdpError::NoAudio));
    };
    let Some(m) = offer.media.get(audio_index) else { return Err(SdpError::NoAudio) };

    let telephone_event = telephone_event_for(m, codec);
    let ptime_ms = codec_ptime(codec, choose_ptime(m.ptime_ms, m.maxptime_ms));
    let rtcp_mux = m.rtcp_mux;
    let direction = effective_direction(m).reversed();
    let (remote_rtp, remote_rtcp) = remote_addresses(m, rtcp_mux);

    let mut body = String::with_capacity(256);
    let _ = write!(body, "s={SESSION_NAME}\r\nc=IN {} {}\r\nt=0 0\r\n", ip_kind(local.address), local.address);
    for (index, other) in offer.media.iter().enumerate() {
        if index == audio_index {
            write_audio(&mut body, local.port, codec, payload_type, telephone_event, ptime_ms, rtcp_mux, direction);
        } else {
            // Rejected stream: port 0, same transport and formats (RFC 3264 §6).
            let _ = write!(body, "m={} 0 {} {}\r\n", other.media, other.proto, other.fmt);
        }
    }
    let body = session.finish(local.address, body);
    let audio = NegotiatedAudio {
        codec,
        payload_type,
        receive_payload_type: payload_type,
        telephone_event,
        receive_telephone_event: telephone_event,
        remote_rtp,
        remote_rtcp,
        rtcp_mux,
        ptime_ms,
        direction,
    };
    Ok(Answer { body, audio })
}

/// Writes our audio m= section: one codec plus telephone-event.
#[allow(clippy::too_many_arguments)]
fn write_audio(
    out: &mut String,
    port: u16,
    codec: AudioCodec,
    payload_type: u8,
    telephone_event: Option<u8>,
    ptime_ms: u32,
    rtcp_mux: bool,
    direction: Direction,
) {
    let _ = write!(out, "m=audio {port} RTP/AVP {payload_type}");
    if let Some(te) = telephone_event {
        let _ = write!(out, " {te}");
    }
    out.push_str("\r\n");
    write_rtpmap(out, codec, payload_type);
    if let Some(te) = telephone_event {
        write_telephone_event(out, te, codec.rtp_clock_rate());
    }
    let _ = write!(out, "a=ptime:{ptime_ms}\r\n");
    if rtcp_mux {
        out.push_str("a=rtcp-mux\r\n");
    }
    let _ = write!(out, "a={}\r\n", direction.attribute());
}

/// `a=rtpmap` (and Opus's `a=fmtp`) of `codec` at `payload_type`.
fn write_rtpmap(out: &mut String, codec: AudioCodec, payload_type: u8) {
    let _ = write!(out, "a=rtpmap:{payload_type} {}/{}", codec.encoding_name(), codec.rtp_clock_rate());
    if let Some(channels) = codec.rtpmap_channels() {
        let _ = write!(out, "/{channels}");
    }
    out.push_str("\r\n");
    if codec == AudioCodec::Opus {
        let _ = write!(out, "a=fmtp:{payload_type} {OPUS_FMTP}\r\n");
    }
}

/// `a=rtpmap`/`a=fmtp` of telephone-event at `clock_rate` Hz.
fn write_telephone_event(out: &mut String, payload_type: u8, clock_rate: u32) {
    let _ = write!(
        out,
        "a=rtpmap:{payload_type} telephone-event/{clock_rate}\r\na=fmtp:{payload_type} {TELEPHONE_EVENT_FMTP}\r\n"
    );
}

/// Builds our offer for an outbound leg (or an offerless INVITE's 200 OK): every
/// allowed codec in the trunk's order ([`AudioCodec::offered_payload_type`]: the
/// static types, 111 for Opus), then telephone-event/8000 at payload type 101 and,
/// when Opus is offered, telephone-event/48000 at 110 (RFC 4733 §2.1), with `0-16`.
pub fn build_offer(local: &LocalAudio, options: OfferOptions, session: &mut LocalSession) -> Offer {
    let te = TELEPHONE_EVENT_PAYLOAD_TYPE;
    let te_48k = local.codecs.contains(&AudioCodec::Opus).then_some(TELEPHONE_EVENT_48K_PAYLOAD_TYPE);
    let mut body = String::with_capacity(384);
    let _ = write!(body, "s={SESSION_NAME}\r\nc=IN {} {}\r\nt=0 0\r\n", ip_kind(local.address), local.address);
    let _ = write!(body, "m=audio {} RTP/AVP", local.port);
    for codec in &local.codecs {
        let _ = write!(body, " {}", codec.offered_payload_type());
    }
    let _ = write!(body, " {te}");
    if let Some(te_48k) = te_48k {
        let _ = write!(body, " {te_48k}");
    }
    body.push_str("\r\n");
    for &codec in &local.codecs {
        write_rtpmap(&mut body, codec, codec.offered_payload_type());
    }
    write_telephone_event(&mut body, te, 8000);
    if let Some(te_48k) = te_48k {
        write_telephone_event(&mut body, te_48k, 48_000);
    }
    let _ = write!(body, "a=ptime:{}\r\n", options.ptime_ms);
    if options.rtcp_mux {
        body.push_str("a=rtcp-mux\r\n");
    }
    let _ = write!(body, "a={}\r\n", options.direction.attribute());
    let body = session.finish(local.address, body);
    Offer {
        body,
        offered: OfferedAudio {
            codecs: local.codecs.clone(),
            telephone_event: te,
            telephone_event_48k: te_48k,
            rtcp_mux: options.rtcp_mux,
            ptime_ms: options.ptime_ms,
        },
    }
}

/// Applies the peer's answer to our offer (RFC 3264 §7): the audio stream must be
/// accepted (port ≠ 0) with one of the offered codecs; the answer's first such
/// codec is used, at the answer's payload type for sending.
pub fn apply_answer(offered: &OfferedAudio, answer: &SessionDescription) -> Result<NegotiatedAudio, SdpError> {
    let m = match answer.media.as_slice() {
        [m] if m.media.eq_ignore_ascii_case("audio") => m,
        [] => return Err(SdpError::NoAudio),
        _ => {
            return Err(SdpError::BadAnswer(format!(
                "expected one audio m= line (as offered), got {}",
                answer.media.len()
            )));
        }
    };
    if m.port == 0 {
        return Err(SdpError::AudioRejected);
    }
    if !m.is_rtp_avp() {
        return Err(SdpError::UnsupportedTransport { proto: m.proto.clone() });
    }
    if m.connection.is_none() {
        return Err(SdpError::MissingConnection);
    }
    let Some((codec, payload_type)) = first_common_codec(m, &offered.codecs) else {
        return Err(SdpError::NoCommonCodec {
            offered: describe_formats(m),
            allowed: describe_codecs(&offered.codecs),
        });
    };
    let telephone_event = telephone_event_for(m, codec);
    let rtcp_mux = offered.rtcp_mux && m.rtcp_mux;
    let (remote_rtp, remote_rtcp) = remote_addresses(m, rtcp_mux);
    let ptime_ms = match m.ptime_ms {
        Some(_) => choose_ptime(m.ptime_ms, m.maxptime_ms),
        None => offered.ptime_ms,
    };
    let ptime_ms = codec_ptime(codec, ptime_ms);
    let our_telephone_event =
        if codec.rtp_clock_rate() == 48_000 { offered.telephone_event_48k } else { Some(offered.telephone_event) };
    Ok(NegotiatedAudio {
        codec,
        payload_type,
        receive_payload_type: codec.offered_payload_type(),
        telephone_event,
        receive_telephone_event: telephone_event.and(our_telephone_event),
        remote_rtp,
        remote_rtcp,
        rtcp_mux,
        ptime_ms,
        direction: effective_direction(m).reversed(),
    })
}
