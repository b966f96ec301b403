//! One stream's framing, whatever its protocol: the sans-IO builders and parsers
//! of `protocol` (Telnyx), `twilio` (Twilio, Exotel), `plivo` and `audiosocket`
//! behind one [`Framing`], so `stream` drives every protocol the same way. A
//! protocol without some message (Plivo has no `connected` or `stop`, AudioSocket
//! no marks, only Telnyx has `error` frames) answers `None` and nothing is sent.

use super::protocol::{self, Inbound, InboundError, StartInfo, Track};
use super::{audiosocket, plivo, twilio};
use crate::config::{Encoding, StreamProtocol, StreamTrack};

/// A message for the agent: a WebSocket text frame or AudioSocket bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// JSON text (WebSocket protocols).
    Text(String),
    /// Bytes for the TCP stream (AudioSocket).
    Binary(Vec<u8>),
}

#[derive(Debug)]
enum Builder {
    Telnyx(protocol::Outbound),
    Twilio(twilio::Outbound),
    Plivo(plivo::Outbound),
    AudioSocket(uuid::Uuid),
}

/// Builds the box → agent frames and parses the agent's text frames of one stream.
#[derive(Debug)]
pub struct Framing {
    builder: Builder,
    encoding: Encoding,
    sample_rate: u32,
}

impl Framing {
    /// The framing of stream `stream_id` (a UUID) in `protocol`, of a call on the
    /// trunk `connection_id` (Twilio's `accountSid`, ...), streaming `track`,
    /// started at `started_unix_ms` (Plivo's media timestamps count from it),
    /// carrying `encoding` at `sample_rate` Hz.
    pub fn new(
        protocol: StreamProtocol,
        stream_id: &str,
        connection_id: &str,
        track: StreamTrack,
        started_unix_ms: u64,
        encoding: Encoding,
        sample_rate: u32,
    ) -> Self {
        let (id, account) = (stream_id.to_string(), connection_id.to_string());
        let builder = match protocol {
            StreamProtocol::Telnyx => Builder::Telnyx(protocol::Outbound::new(id)),
            StreamProtocol::Twilio => {
                Builder::Twilio(twilio::Outbound::new(twilio::Dialect::Twilio, id, account, track))
            }
            StreamProtocol::Exotel => {
                Builder::Twilio(twilio::Outbound::new(twilio::Dialect::Exotel, id, account, track))
            }
            StreamProtocol::Plivo => Builder::Plivo(plivo::Outbound::new(id, started_unix_ms, account, track)),
            StreamProtocol::AudioSocket => Builder::AudioSocket(uuid::Uuid::parse_str(stream_id).unwrap_or_default()),
        };
        Self { builder, encoding, sample_rate }
    }

    /// The frames that open the stream, in order (`connected` + `start`; Plivo's
    /// `start` alone; AudioSocket's UUID).
    pub fn opening(&mut self, info: &StartInfo) -> Vec<Frame> {
        match &mut self.builder {
            Builder::Telnyx(o) => vec![Frame::Text(o.connected()), Frame::Text(o.start(info))],
            Builder::Twilio(o) => vec![Frame::Text(o.connected()), Frame::Text(o.start(info))],
            Builder::Plivo(o) => vec![Frame::Text(o.start(info))],
            Builder::AudioSocket(id) => vec![Frame::Binary(audiosocket::uuid(id))],
        }
    }

    /// One 20 ms frame of `track`: `payload` in the stream's wire encoding (L16
    /// already in the protocol's byte order), `elapsed_ms` since the stream started.
    /// `None` when the protocol does not carry that track (Exotel, AudioSocket:
    /// the caller's audio only).
    pub fn media(&mut self, track: Track, elapsed_ms: u64, payload: &[u8]) -> Option<Frame> {
        match &mut self.builder {
            Builder::Telnyx(o) => Some(Frame::Text(o.media(track, elapsed_ms, payload))),
            Builder::Twilio(o) => o.media(track, elapsed_ms, payload).map(Frame::Text),
            Builder::Plivo(o) => Some(Frame::Text(o.media(track, elapsed_ms, payload))),
            Builder::AudioSocket(_) => (track == Track::Inbound).then(|| Frame::Binary(audiosocket::audio(payload))),
        }
    }

    /// A key press of the caller.
    pub fn dtmf(&mut self, digit: char) -> Frame {
        match &mut self.builder {
            Builder::Telnyx(o) => Frame::Text(o.dtmf(digit)),
            Builder::Twilio(o) => Frame::Text(o.dtmf(digit)),
            Builder::Plivo(o) => Frame::Text(o.dtmf(digit)),
            Builder::AudioSocket(_) => Frame::Binary(audiosocket::dtmf(digit)),
        }
    }

    /// The agent's mark (checkpoint) `name` has been reached.
    pub fn mark(&mut self, name: &str) -> Option<Frame> {
        match &mut self.builder {
            Builder::Telnyx(o) => Some(Frame::Text(o.mark(name))),
            Builder::Twilio(o) => Some(Frame::Text(o.mark(name))),
            Builder::Plivo(o) => Some(Frame::Text(o.played(name))),
            Builder::AudioSocket(_) => None,
        }
    }

    /// The answer to a clear (Plivo's `clearedAudio`); the others answer with the
    /// pending marks only.
    pub fn cleared(&mut self) -> Option<Frame> {
        match &mut self.builder {
            Builder::Plivo(o) => Some(Frame::Text(o.cleared())),
            _ => None,
        }
    }

    /// Whether marks pending at a clear are returned (Telnyx, Twilio, Exotel) or
    /// dropped (Plivo: `playedStream` only for audio that played).
    pub fn returns_marks_on_clear(&self) -> bool {
        !matches!(self.builder, Builder::Plivo(_))
    }

    /// The answer to a frame the box could not use (Telnyx's `error` frame); the
    /// other protocols have none (the box only logs).
    pub fn error(&mut self, err: &InboundError) -> Option<Frame> {
        match &mut self.builder {
            Builder::Telnyx(o) => Some(Frame::Text(o.error(err))),
            _ => None,
        }
    }

    /// The frame that ends the stream (`stop`; AudioSocket's hangup; Plivo: none,
    /// the close says it).
    pub fn stop(&mut self, info: &StartInfo) -> Option<Frame> {
        match &mut self.builder {
            Builder::Telnyx(o) => Some(Frame::Text(o.stop(&info.call_control_id, &info.call_session_id))),
            Builder::Twilio(o) => Some(Frame::Text(o.stop(info))),
            Builder::Plivo(_) => None,
            Builder::AudioSocket(_) => Some(Frame::Binary(audiosocket::hangup())),
        }
    }

    /// Parses one text frame from the agent.
    pub fn parse(&self, text: &str) -> Result<Inbound, InboundError> {
        match &self.builder {
            Builder::Plivo(_) => plivo::parse_inbound(text, self.encoding, self.sample_rate),
            Builder::AudioSocket(_) => Err(protocol::malformed("AudioSocket carries no text")),
            _ => protocol::parse_inbound(text),
        }
    }
}

/// Swaps the bytes of each 16-bit sample in place: big-endian L16 (RFC 2586, the
/// box's transcoder) ↔ little-endian (Exotel, Plivo, AudioSocket). An odd last
/// byte is left as it is.
pub fn swap16(bytes: &mut [u8]) {
    for pair in bytes.chunks_exact_mut(2) {
        pair.swap(0, 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info() -> StartInfo {
        StartInfo::sample()
    }

    const ID: &str = "32de0dea-53cb-4b21-89a4-9e1819c043bc";

    fn text(f: &Frame) -> serde_json::Value {
        match f {
            Frame::Text(t) => serde_json::from_str(t).unwrap(),
            Frame::Binary(b) => panic!("binary frame {b:?}"),
        }
    }

    #[test]
    fn each_protocol_opens_and_ends_its_own_way() {
        let events = |p| {
            let mut f = Framing::new(p, ID, "carrier", StreamTrack::BothTracks, 0, Encoding::Pcmu, 8000);
            let open: Vec<String> = f.opening(&info()).iter().map(|x| text(x)["event"].to_string()).collect();
            (open, f.stop(&info()).map(|x| text(&x)["event"].to_string()))
        };
        let (c, s) = (r#""connected""#.to_string(), r#""start""#.to_string());
        assert_eq!(events(StreamProtocol::Telnyx), (vec![c.clone(), s.clone()], Some(r#""stop""#.into())));
        assert_eq!(events(StreamProtocol::Twilio), (vec![c.clone(), s.clone()], Some(r#""stop""#.into())));
        assert_eq!(events(StreamProtocol::Exotel), (vec![c, s.clone()], Some(r#""stop""#.into())));
        assert_eq!(events(StreamProtocol::Plivo), (vec![s], None));

        let mut a =
            Framing::new(StreamProtocol::AudioSocket, ID, "carrier", StreamTrack::BothTracks, 0, Encoding::L16, 8000);
        let open = a.opening(&info());
        let id = uuid::Uuid::parse_str(ID).unwrap();
        assert_eq!(open, vec![Frame::Binary([&[1u8, 0, 16][..], id.as_bytes()].concat())]);
        assert_eq!(a.stop(&info()), Some(Frame::Binary(vec![0, 0, 0])));
        assert_eq!(a.mark("m"), None, "AudioSocket has no marks");
        assert_eq!(a.media(Track::Outbound, 0, &[0; 320]), None, "nor an outbound track");
        assert_eq!(a.media(Track::Inbound, 0, &[1, 2]), Some(Frame::Binary(vec![0x10, 0, 2, 1, 2])));
        assert_eq!(a.dtmf('*'), Frame::Binary(vec![3, 0, 1, b'*']));
        assert!(a.parse("{}").is_err());
    }

    #[test]
    fn marks_clears_and_errors_per_protocol() {
        let mut t =
            Framing::new(StreamProtocol::Telnyx, ID, "carrier", StreamTrack::BothTracks, 0, Encoding::Pcmu, 8000);
        let mut p =
            Framing::new(StreamProtocol::Plivo, ID, "carrier", StreamTrack::BothTracks, 0, Encoding::Pcmu, 8000);
        let mut w =
            Framing::new(StreamProtocol::Twilio, ID, "carrier", StreamTrack::BothTracks, 0, Encoding::Pcmu, 8000);
        assert_eq!(text(&t.mark("x").unwrap())["mark"]["name"], "x");
        assert_eq!(text(&p.mark("x").unwrap())["event"], "playedStream");
        assert!(t.returns_marks_on_clear() && w.returns_marks_on_clear() && !p.returns_marks_on_clear());
        assert_eq!(text(&p.cleared().unwrap())["event"], "clearedAudio");
        assert!(t.cleared().is_none() && w.cleared().is_none());
        let err = protocol::malformed("x");
        assert_eq!(text(&t.error(&err).unwrap())["event"], "error");
        assert!(w.error(&err).is_none() && p.error(&err).is_none());
        // Each parses its own agent shapes.
        assert_eq!(w.parse(r#"{"event":"clear","streamSid":"s"}"#).unwrap(), Inbound::Clear);
        assert_eq!(p.parse(r#"{"event":"clearAudio"}"#).unwrap(), Inbound::Clear);
        assert!(p.parse(r#"{"event":"clear"}"#).is_err(), "Telnyx's clear is not Plivo's");
    }

    #[test]
    fn swap16_converts_byte_order() {
        let mut b = [0x12, 0x34, 0x56, 0x78, 0x9a];
        swap16(&mut b);
        assert_eq!(b, [0x34, 0x12, 0x78, 0x56, 0x9a]);
    }
}
