//! A session description (RFC 4566) reduced to what audio offer/answer needs:
//! origin, connection addresses, and per m= line the port, transport, payload
//! formats (`a=rtpmap`, `a=fmtp`), `a=ptime`/`a=maxptime`, direction, `a=rtcp` and
//! `a=rtcp-mux`. Line syntax is the `sdp-types` crate's (lenient: tolerates a
//! missing `s=`/`t=`, unknown lines, LF-only endings); the meaning is ours.
//!
//! Every m= line is kept, audio or not, because an answer must mirror the offer's
//! m= lines one for one (RFC 3264 §6).

use std::net::IpAddr;

use super::SdpError;

/// `a=sendrecv` / `sendonly` / `recvonly` / `inactive` (RFC 4566 §6, RFC 3264 §5.1),
/// always from the point of view of the side that wrote the description.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Direction {
    /// Sends and receives (the default when no attribute is present).
    #[default]
    SendRecv,
    /// Only sends (the usual "I put you on hold" offer).
    SendOnly,
    /// Only receives.
    RecvOnly,
    /// Neither.
    Inactive,
}

impl Direction {
    /// The direction an answer takes for an offer with this one (RFC 3264 §6.1):
    /// sendonly ↔ recvonly, the others unchanged.
    pub fn reversed(self) -> Direction {
        match self {
            Direction::SendOnly => Direction::RecvOnly,
            Direction::RecvOnly => Direction::SendOnly,
            other => other,
        }
    }

    /// The attribute name, e.g. `"sendrecv"`.
    pub fn attribute(self) -> &'static str {
        match self {
            Direction::SendRecv => "sendrecv",
            Direction::SendOnly => "sendonly",
            Direction::RecvOnly => "recvonly",
            Direction::Inactive => "inactive",
        }
    }

    /// Whether the writer of the description sends media.
    pub fn sends(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::SendOnly)
    }

    /// Whether the writer of the description receives media.
    pub fn receives(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::RecvOnly)
    }

    fn from_attribute(name: &str) -> Option<Direction> {
        match name {
            "sendrecv" => Some(Direction::SendRecv),
            "sendonly" => Some(Direction::SendOnly),
            "recvonly" => Some(Direction::RecvOnly),
            "inactive" => Some(Direction::Inactive),
            _ => None,
        }
    }
}

/// One payload format of an m= line: its number and, from `a=rtpmap` or the
/// RFC 3551 static table, its encoding.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PayloadFormat {
    /// RTP payload type, 0–127.
    pub payload_type: u8,
    /// Encoding name as written (`PCMU`, `telephone-event`, `opus`); `None` for a
    /// dynamic type without `a=rtpmap`.
    pub encoding_name: Option<String>,
    /// RTP clock rate in Hz (8000 for G.711 and telephone-event/8000).
    pub clock_rate_hz: u32,
    /// Audio channels (`/2` in `opus/48000/2`), 1 when not given.
    pub channels: u8,
    /// The `a=fmtp` parameters, e.g. `0-16` for telephone-event.
    pub fmtp: Option<String>,
}

impl PayloadFormat {
    /// Whether the encoding name equals `name`, case-insensitively (RFC 4566 §6).
    pub fn is(&self, name: &str) -> bool {
        self.encoding_name.as_deref().is_some_and(|n| n.eq_ignore_ascii_case(name))
    }
}

/// Encodings of the RFC 3551 static audio payload types, for m= lines that list
/// them without `a=rtpmap` (allowed, and done by SIPp's `uac` scenario).
fn static_payload_type(pt: u8) -> Option<(&'static str, u32, u8)> {
    match pt {
        0 => Some(("PCMU", 8000, 1)),
        3 => Some(("GSM", 8000, 1)),
        4 => Some(("G723", 8000, 1)),
        8 => Some(("PCMA", 8000, 1)),
        9 => Some(("G722", 8000, 1)),
        13 => Some(("CN", 8000, 1)),
        18 => Some(("G729", 8000, 1)),
        _ => None,
    }
}

/// `a=rtcp:<port> [IN IP4 <addr>]` (RFC 3605).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RtcpAttribute {
    /// RTCP port.
    pub port: u16,
    /// RTCP address when it differs from the connection address.
    pub address: Option<IpAddr>,
}

/// One m= line with its attributes resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MediaDescription {
    /// Media type: `audio`, `video`, `application`, …
    pub media: String,
    /// Transport port; 0 means the stream is disabled/rejected (RFC 3264 §5.1).
    pub port: u16,
    /// Transport protocol as written: `RTP/AVP`, `RTP/SAVP`, `UDP/TLS/RTP/SAVPF`, …
    pub proto: String,
    /// The format list exactly as on the m= line (to echo it when rejecting).
    pub fmt: String,
    /// Payload formats in m= line order (the sender's preference, RFC 3264 §5.1),
    /// for RTP transports; empty otherwise.
    pub formats: Vec<PayloadFormat>,
    /// Connection address for this stream: media-level `c=`, else session-level.
    /// `0.0.0.0` marks old-style hold (RFC 3264 §8.4).
    pub connection: Option<IpAddr>,
    /// Direction: media-level attribute, else session-level, else sendrecv.
    pub direction: Direction,
    /// `a=ptime`, in ms.
    pub ptime_ms: Option<u32>,
    /// `a=maxptime`, in ms.
    pub maxptime_ms: Option<u32>,
    /// `a=rtcp` (RFC 3605).
    pub rtcp: Option<RtcpAttribute>,
    /// `a=rtcp-mux` (RFC 5761).
    pub rtcp_mux: bool,
}

impl MediaDescription {
    /// Whether the transport is plain RTP with the AVP profile (what this gateway
    /// speaks): `RTP/AVP`, case-insensitively.
    pub fn is_rtp_avp(&self) -> bool {
        self.proto.eq_ignore_ascii_case("RTP/AVP")
    }

    /// The first format with encoding `name` at `clock_rate_hz`.
    pub fn format(&self, name: &str, clock_rate_hz: u32) -> Option<&PayloadFormat> {
        self.formats.iter().find(|f| f.is(name) && f.clock_rate_hz == clock_rate_hz)
    }
}

/// The `o=` line (RFC 4566 §5.2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Origin {
    /// Username, `-` when none.
    pub username: String,
    /// Session id (numeric by the RFC, kept as written).
    pub session_id: String,
    /// Session version, incremented by the writer on every change (RFC 3264 §8).
    pub session_version: u64,
    /// Address of the originating host as written.
    pub address: String,
}

/// A parsed session description.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionDescription {
    /// The `o=` line.
    pub origin: Origin,
    /// Session-level `c=` address, if any.
    pub connection: Option<IpAddr>,
    /// Session-level direction attribute, if any.
    pub direction: Option<Direction>,
    /// Every m= line, in order.
    pub media: Vec<MediaDescription>,
}

impl SessionDescription {
    /// Parses an SDP body (RFC 4566). Syntax errors, unparsable `c=` addresses
    /// (host names are not resolved) and malformed `a=rtpmap` lines are errors;
    /// attributes this gateway does not use are ignored.
    pub fn parse(body: &[u8]) -> Result<SessionDescription, SdpError> {
        let session = sdp_types::Session::parse(body).map_err(|e| SdpError::Syntax(e.to_string()))?;
        let connection = session.connection.as_ref().map(parse_connection).transpose()?;
        let direction = direction_of(&session.attributes);
        let media = session
            .medias
            .iter()
            .map(|m| parse_media(m, connection, direction))
            .collect::<Result<Vec<_>, SdpError>>()?;
        let origin = Origin {
            username: session.origin.username.clone().unwrap_or_else(|| "-".to_string()),
            session_id: session.origin.sess_id.clone(),
            session_version: session.origin.sess_version,
            address: session.origin.unicast_address.clone(),
        };
        Ok(SessionDescription { origin, connection, direction, media })
    }
}

/// The last direction attribute in `attributes`, if any.
fn direction_of(attributes: &[sdp_types::Attribute]) -> Option<Direction> {
    attributes.iter().rev().find_map(|a| Direction::from_attribute(&a.attribute))
}

fn parse_connection(c: &sdp_types::Connection) -> Result<IpAddr, SdpError> {
    // Multicast may carry "/ttl[/count]"; the address is before the first slash.
    let text = c.connection_address.split('/').next().unwrap_or_default();
    text.parse().map_err(|_| SdpError::BadAddress { address: c.connection_address.clone() })
}

fn attribute_u32(attributes: &[sdp_types::Attribute], name: &str) -> Option<u32> {
    attributes
        .iter()
        .find(|a| a.attribute == name)
        .and_then(|a| a.value.as_deref())
        .and_then(|v| v.trim().split(['.', ' ']).next())
        .and_then(|v| v.parse().ok())
}

fn parse_media(
    m: &sdp_types::Media,
    session_connection: Option<IpAddr>,
    session_direction: Option<Direction>,
) -> Result<MediaDescription, SdpError> {
    let connection = match m.connections.first() {
        Some(c) => Some(parse_connection(c)?),
        None => session_connection,
    };
    let direction = direction_of(&m.attributes).or(session_direction).unwrap_or_default();
    let is_rtp = m.proto.to_ascii_uppercase().contains("RTP/");
    let mut formats = Vec::new();
    if is_rtp {
        for token in m.fmt.split_ascii_whitespace() {
            let payload_type: u8 = match token.parse() {
                Ok(pt) if pt <= 127 => pt,
                _ => return Err(SdpError::Syntax(format!("m={} line: payload type {token:?} is not 0-127", m.media))),
            };
            let (encoding_name, clock_rate_hz, channels) = match static_payload_type(payload_type) {
                Some((name, rate, channels)) => (Some(name.to_string()), rate, channels),
                None => (None, 0, 1),
            };
            formats.push(PayloadFormat { payload_type, encoding_name, clock_rate_hz, channels, fmtp: None });
        }
        for a in &m.attributes {
            let Some(value) = a.value.as_deref() else { continue };
            let (pt_text, rest) = value.trim().split_once(' ').unwrap_or((value.trim(), ""));
            let Ok(pt) = pt_text.parse::<u8>() else { continue };
            let Some(format) = formats.iter_mut().find(|f| f.payload_type == pt) else { continue };
            match a.attribute.as_str() {
                "rtpmap" => {
                    // <encoding name>/<clock rate>[/<channels>]
                    let mut parts = rest.trim().split('/');
                    let name = parts.next().unwrap_or_default();
                    let rate = parts.next().and_then(|r| r.trim().parse().ok());
                    let (Some(rate), false) = (rate, name.is_empty()) else {
                        return Err(SdpError::Syntax(format!("a=rtpmap:{value}: expected <name>/<clock rate>")));
                    };
                    format.encoding_name = Some(name.to_string());
                    format.clock_rate_hz = rate;
                    format.channels = parts.next().and_then(|c| c.trim().parse().ok()).unwrap_or(1);
                }
                "fmtp" => format.fmtp = Some(rest.trim().to_string()),
                _ => {}
            }
        }
    }
    let rtcp = m.attributes.iter().find(|a| a.attribute == "rtcp").and_then(|a| {
        let value = a.value.as_deref()?;
        let mut parts = value.split_ascii_whitespace();
        let port = parts.next()?.parse().ok()?;
        let address = parts.nth(2).and_then(|addr| addr.parse().ok());
        Some(RtcpAttribute { port, address })
    });
    Ok(MediaDescription {
        media: m.media.clone(),
        port: m.port,
        proto: m.proto.clone(),
        fmt: m.fmt.clone(),
        formats,
        connection,
        direction,
        ptime_ms: attribute_u32(&m.attributes, "ptime"),
        maxptime_ms: attribute_u32(&m.attributes, "maxptime"),
        rtcp,
        rtcp_mux: m.attributes.iter().any(|a| a.attribute == "rtcp-mux"),
    })
}
