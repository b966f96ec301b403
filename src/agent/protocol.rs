//! Telnyx media-stream messages (PROTOCOLS.md §3; Telnyx "Stream call media over
//! WebSocket"), sans-IO.
//!
//! Box → agent: `connected`, `start`, `media`, `dtmf`, `mark` (a mark the agent sent,
//! returned when playback reached it), `error`, `stop` — text frames of JSON built by
//! [`Outbound`], which numbers them: `sequence_number` counts every message after
//! `connected` from 1, `media.chunk` counts per track from 1, both as strings as
//! Telnyx sends them.
//!
//! Agent → box (bidirectional mode): `media` (base64 audio in the stream's
//! encoding), `mark`, `clear`, parsed by [`parse_inbound`]. Anything else is an
//! [`InboundError`], answered with an `error` frame; the call goes on.
//!
//! The types every stream protocol shares live here too: [`StartInfo`] (what the
//! opening frames describe), [`Track`], [`Inbound`] (what an agent's frame asks
//! for) and [`InboundError`]. Twilio and Exotel agents send the same `media` /
//! `mark` / `clear` shapes, so [`parse_inbound`] reads theirs as well.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Map, Value};

use crate::config::{Encoding, StreamTrack};

/// Telnyx `error` frame codes (media streaming).
pub mod error_code {
    /// The frame is not JSON or misses a required field.
    pub const MALFORMED_FRAME: u32 = 100_003;
    /// The frame's media payload cannot be decoded.
    pub const INVALID_MEDIA: u32 = 100_004;
    /// An event the box does not know.
    pub const UNKNOWN_EVENT: u32 = 100_002;
}

/// Which audio a `media` frame carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Track {
    /// Audio received from the caller.
    Inbound,
    /// Audio sent to the caller (the agent's own playback, prompts).
    Outbound,
}

impl Track {
    /// Telnyx's name (`media.track`).
    pub const fn as_str(self) -> &'static str {
        match self {
            Track::Inbound => "inbound",
            Track::Outbound => "outbound",
        }
    }

    /// Whether `stream_track` includes this track.
    pub fn selected_by(self, stream_track: StreamTrack) -> bool {
        matches!(
            (self, stream_track),
            (_, StreamTrack::BothTracks)
                | (Track::Inbound, StreamTrack::InboundTrack)
                | (Track::Outbound, StreamTrack::OutboundTrack)
        )
    }
}

/// The encoding's name in `media_format.encoding`.
pub const fn encoding_name(encoding: Encoding) -> &'static str {
    match encoding {
        Encoding::Pcmu => "PCMU",
        Encoding::Pcma => "PCMA",
        Encoding::L16 => "L16",
        Encoding::G722 => "G722",
        Encoding::Opus => "OPUS",
    }
}

/// The longest mark (Twilio, Telnyx, Exotel) or checkpoint (Plivo) name the box
/// takes, in bytes: names are held until playback reaches them, so their size is
/// bounded like everything else an agent sends. A longer one is a malformed frame.
pub const MAX_MARK_NAME: usize = 256;

/// What `start.start` describes.
#[derive(Debug, Clone)]
pub struct StartInfo {
    /// Telnyx `call_control_id` of the streamed leg (also Twilio's `callSid`,
    /// Plivo's `callId`, Exotel's `call_sid`).
    pub call_control_id: String,
    /// Telnyx `call_session_id`.
    pub call_session_id: String,
    /// Caller (E.164 or SIP URI as received).
    pub from: String,
    /// Callee.
    pub to: String,
    /// Opaque state from the backend (base64), or none.
    pub client_state: Option<String>,
    /// `custom_parameters` passed through to the agent.
    pub custom_parameters: Map<String, Value>,
    /// Stream encoding.
    pub encoding: Encoding,
    /// Stream sample rate in Hz.
    pub sample_rate: u32,
}

#[cfg(test)]
impl StartInfo {
    /// The framers' unit-test call: `v3:abc` / `sess`, +13125550001 →
    /// +13125550100, PCMU 8 kHz, no client state or parameters.
    pub(crate) fn sample() -> Self {
        StartInfo {
            call_control_id: "v3:abc".into(),
            call_session_id: "sess".into(),
            from: "+13125550001".into(),
            to: "+13125550100".into(),
            client_state: None,
            custom_parameters: Map::new(),
            encoding: Encoding::Pcmu,
            sample_rate: 8000,
        }
    }
}

/// Builds the box → agent frames of one stream, numbering them.
#[derive(Debug)]
pub struct Outbound {
    stream_id: String,
    sequence: u64,
    chunks: [u64; 2],
}

impl Outbound {
    /// Frames of the stream `stream_id` (a UUID).
    pub fn new(stream_id: String) -> Self {
        Self { stream_id, sequence: 0, chunks: [0, 0] }
    }

    /// The stream's id.
    pub fn stream_id(&self) -> &str {
        &self.stream_id
    }

    fn next_sequence(&mut self) -> String {
        self.sequence += 1;
        self.sequence.to_string()
    }

    /// `{"event":"connected","version":"1.0.0"}`.
    pub fn connected(&self) -> String {
        r#"{"event":"connected","version":"1.0.0"}"#.to_string()
    }

    /// `{"event": event, "sequence_number": n, "stream_id": ..` (the caller adds
    /// the body and finishes it).
    fn frame(&mut self, event: &str) -> JsonOut {
        let seq = self.next_sequence();
        let mut out = JsonOut::object(256);
        out.str("event", event).str("sequence_number", &seq).str("stream_id", &self.stream_id);
        out
    }

    /// The `start` frame.
    pub fn start(&mut self, info: &StartInfo) -> String {
        let mut out = self.frame("start");
        out.open("start").str("call_control_id", &info.call_control_id);
        out.str("call_session_id", &info.call_session_id).str("from", &info.from).str("to", &info.to);
        match &info.client_state {
            Some(state) => out.str("client_state", state),
            None => out.raw("client_state", "null"),
        };
        out.raw("custom_parameters", &Value::Object(info.custom_parameters.clone()).to_string());
        out.open("media_format").str("encoding", encoding_name(info.encoding));
        out.raw("sample_rate", &info.sample_rate.to_string()).raw("channels", "1");
        out.close().close().finish()
    }

    /// A `media` frame: `payload` = audio in the stream's encoding (no RTP header),
    /// `timestamp_ms` = milliseconds since the stream started.
    pub fn media(&mut self, track: Track, timestamp_ms: u64, payload: &[u8]) -> String {
        let i = track as usize;
        self.chunks[i] += 1;
        // Hand-written: this frame goes out 50 times a second per track.
        let seq = self.next_sequence();
        let mut s = String::with_capacity(160 + payload.len() * 4 / 3 + self.stream_id.len());
        s.push_str(r#"{"event":"media","sequence_number":""#);
        s.push_str(&seq);
        s.push_str(r#"","stream_id":""#);
        s.push_str(&self.stream_id);
        s.push_str(r#"","media":{"track":""#);
        s.push_str(track.as_str());
        s.push_str(r#"","chunk":""#);
        s.push_str(&self.chunks[i].to_string());
        s.push_str(r#"","timestamp":""#);
        s.push_str(&timestamp_ms.to_string());
        s.push_str(r#"","payload":""#);
        B64.encode_string(payload, &mut s);
        s.push_str(r#""}}"#);
        s
    }

    /// A `dtmf` frame for one key press.
    pub fn dtmf(&mut self, digit: char) -> String {
        let mut b = [0u8; 4];
        self.frame("dtmf").open("dtmf").str("digit", digit.encode_utf8(&mut b)).close().finish()
    }

    /// A `mark` frame returning the agent's mark `name`.
    pub fn mark(&mut self, name: &str) -> String {
        self.frame("mark").open("mark").str("name", name).close().finish()
    }

    /// An `error` frame about something the agent sent.
    pub fn error(&mut self, err: &InboundError) -> String {
        let mut out = self.frame("error");
        out.open("payload").raw("code", &err.code.to_string()).str("title", err.title).str("detail", &err.detail);
        out.close().finish()
    }

    /// The `stop` frame.
    pub fn stop(&mut self, call_control_id: &str, call_session_id: &str) -> String {
        let mut out = self.frame("stop");
        out.open("stop").str("call_control_id", call_control_id).str("call_session_id", call_session_id);
        out.close().finish()
    }
}

/// A JSON object written field by field into one `String` (the Twilio, Exotel
/// and Plivo frames): a few calls per frame instead of `serde_json::json!`, whose
/// expansion costs ~200 bytes of machine code per field (issue 18's size budget).
/// Keys and string values are escaped (RFC 8259 §7).
#[derive(Debug)]
pub struct JsonOut(String);

impl JsonOut {
    /// `{` and room for `capacity` bytes.
    pub fn object(capacity: usize) -> Self {
        let mut s = String::with_capacity(capacity);
        s.push('{');
        Self(s)
    }

    fn key(&mut self, key: &str) -> &mut Self {
        if !self.0.ends_with('{') {
            self.0.push(',');
        }
        self.string(key);
        self.0.push(':');
        self
    }

    /// `"key":"value"`, both escaped.
    pub fn str(&mut self, key: &str, value: &str) -> &mut Self {
        self.key(key);
        self.string(value)
    }

    fn string(&mut self, value: &str) -> &mut Self {
        self.0.push('"');
        for c in value.chars() {
            match c {
                '"' => self.0.push_str("\\\""),
                '\\' => self.0.push_str("\\\\"),
                c if u32::from(c) < 0x20 => {
                    self.0.push_str(&format!("\\u{:04x}", u32::from(c)));
                }
                c => self.0.push(c),
            }
        }
        self.0.push('"');
        self
    }

    /// `"key":raw`: a number, `true`, or JSON the caller wrote.
    pub fn raw(&mut self, key: &str, raw: &str) -> &mut Self {
        self.key(key);
        self.0.push_str(raw);
        self
    }

    /// `"key":{`; fields until [`JsonOut::close`] go inside.
    pub fn open(&mut self, key: &str) -> &mut Self {
        self.key(key);
        self.0.push('{');
        self
    }

    /// `}`.
    pub fn close(&mut self) -> &mut Self {
        self.0.push('}');
        self
    }

    /// The text, the outer object closed.
    pub fn finish(&mut self) -> String {
        self.0.push('}');
        std::mem::take(&mut self.0)
    }
}

/// A frame from the agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inbound {
    /// Audio to play into the call, decoded from base64, in the stream's encoding.
    Media(Vec<u8>),
    /// Return this mark once the audio queued before it has played.
    Mark(String),
    /// Drop all queued audio now (barge-in); return pending marks.
    Clear,
    /// Frames the box accepts and ignores (`connected`/`start`/`stop` echoes, `ping`).
    Ignored,
    /// The agent ends the call (AudioSocket `0x00` hangup): handled as the agent
    /// closing its connection.
    Hangup,
}

/// Why a frame from the agent was not understood (sent back as an `error` frame).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboundError {
    /// Telnyx error code (see [`error_code`]).
    pub code: u32,
    /// Short title.
    pub title: &'static str,
    /// What was wrong, for the agent's developer.
    pub detail: String,
}

/// An [`InboundError`] `100003 Malformed Frame` saying `detail`.
pub fn malformed(detail: impl Into<String>) -> InboundError {
    InboundError { code: error_code::MALFORMED_FRAME, title: "Malformed Frame", detail: detail.into() }
}

/// Parses one text frame from the agent.
///
/// Errors: not JSON / no `event` / missing fields → `100003 Malformed Frame`;
/// payload not base64 → `100004 Invalid Media`; unknown `event` → `100002`.
pub fn parse_inbound(text: &str) -> Result<Inbound, InboundError> {
    // A media frame comes 50 times a second per call: parsed into borrowed
    // fields (no map, no key or value strings allocated). A frame that does not
    // fit this shape is parsed again as a JSON value for an exact error.
    let Ok(frame) = serde_json::from_str::<Frame<'_>>(text) else { return parse_value(text) };
    match &*frame.event {
        "media" => {
            let payload =
                frame.media.and_then(|m| m.payload).ok_or_else(|| malformed("media frame without media.payload"))?;
            decode_payload(&payload).map(Inbound::Media)
        }
        "mark" => {
            let name = frame.mark.and_then(|m| m.name).ok_or_else(|| malformed("mark frame without mark.name"))?;
            mark_name(&name)
        }
        other => event_without_body(other),
    }
}

/// The fields of an agent's frame the box reads, Telnyx's and Plivo's (one
/// parser for both); any others are ignored.
#[derive(serde::Deserialize)]
pub struct Frame<'a> {
    /// `event`.
    #[serde(borrow)]
    pub event: std::borrow::Cow<'a, str>,
    /// `media` (Telnyx, Twilio, Exotel `media`; Plivo `playAudio`).
    #[serde(borrow, default)]
    pub media: Option<MediaBody<'a>>,
    #[serde(borrow, default)]
    mark: Option<MarkBody<'a>>,
    /// Plivo's `checkpoint.name`.
    #[serde(borrow, default)]
    pub name: Option<std::borrow::Cow<'a, str>>,
}

/// `media` of an agent's frame.
#[derive(serde::Deserialize)]
pub struct MediaBody<'a> {
    /// Base64 audio.
    #[serde(borrow, default)]
    pub payload: Option<std::borrow::Cow<'a, str>>,
    /// Plivo's `contentType` (`audio/x-mulaw`, `audio/x-l16`).
    #[serde(borrow, default, rename = "contentType")]
    pub content_type: Option<std::borrow::Cow<'a, str>>,
    /// Plivo's `sampleRate`, Hz.
    #[serde(default, rename = "sampleRate")]
    pub sample_rate: Option<u32>,
}

#[derive(serde::Deserialize)]
struct MarkBody<'a> {
    #[serde(borrow, default)]
    name: Option<std::borrow::Cow<'a, str>>,
}

/// A mark (or checkpoint) named `name`, at most [`MAX_MARK_NAME`] bytes.
pub fn mark_name(name: &str) -> Result<Inbound, InboundError> {
    if name.len() > MAX_MARK_NAME {
        return Err(malformed(format!("mark name of {} bytes; at most {MAX_MARK_NAME}", name.len())));
    }
    Ok(Inbound::Mark(name.to_string()))
}

/// Base64 `payload` → audio bytes; else `100004 Invalid Media`.
pub fn decode_payload(payload: &str) -> Result<Vec<u8>, InboundError> {
    B64.decode(payload.trim()).map_err(|e| InboundError {
        code: error_code::INVALID_MEDIA,
        title: "Invalid Media",
        detail: format!("media.payload is not base64: {e}"),
    })
}

fn event_without_body(event: &str) -> Result<Inbound, InboundError> {
    match event {
        "clear" => Ok(Inbound::Clear),
        "connected" | "start" | "stop" | "ping" | "pong" => Ok(Inbound::Ignored),
        other => Err(InboundError {
            code: error_code::UNKNOWN_EVENT,
            title: "Unknown Event",
            detail: format!("unknown event {other:?}; expected media, mark or clear"),
        }),
    }
}

/// [`parse_inbound`] through a JSON value: frames whose fields have other types
/// than the fast path expects (a `media` that is not an object, ...).
fn parse_value(text: &str) -> Result<Inbound, InboundError> {
    let v: Value = serde_json::from_str(text).map_err(|e| malformed(format!("not JSON: {e}")))?;
    let event = v.get("event").and_then(Value::as_str).ok_or_else(|| malformed("no \"event\" string"))?;
    match event {
        "media" => {
            let payload = v
                .get("media")
                .and_then(|m| m.get("payload"))
                .and_then(Value::as_str)
                .ok_or_else(|| malformed("media frame without media.payload"))?;
            decode_payload(payload).map(Inbound::Media)
        }
        "mark" => {
            let name = v
                .get("mark")
                .and_then(|m| m.get("name"))
                .and_then(Value::as_str)
                .ok_or_else(|| malformed("mark frame without mark.name"))?;
            mark_name(name)
        }
        other => event_without_body(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn info() -> StartInfo {
        StartInfo::sample()
    }

    #[test]
    fn frames_are_numbered_as_telnyx_numbers_them() {
        let mut o = Outbound::new("s-1".into());
        let c: Value = serde_json::from_str(&o.connected()).unwrap();
        assert_eq!(c, json!({"event": "connected", "version": "1.0.0"}));
        let s: Value = serde_json::from_str(&o.start(&info())).unwrap();
        assert_eq!(s["sequence_number"], "1");
        assert_eq!(s["stream_id"], "s-1");
        assert_eq!(s["start"]["media_format"], json!({"encoding": "PCMU", "sample_rate": 8000, "channels": 1}));
        assert_eq!(s["start"]["client_state"], Value::Null);
        assert_eq!(s["start"]["from"], "+13125550001");
        let m1: Value = serde_json::from_str(&o.media(Track::Inbound, 0, &[0xff; 160])).unwrap();
        let m2: Value = serde_json::from_str(&o.media(Track::Outbound, 20, &[0x7f; 160])).unwrap();
        let m3: Value = serde_json::from_str(&o.media(Track::Inbound, 20, &[1, 2, 3])).unwrap();
        assert_eq!(m1["sequence_number"], "2");
        assert_eq!(m1["media"]["track"], "inbound");
        assert_eq!(m1["media"]["chunk"], "1");
        assert_eq!(m1["media"]["timestamp"], "0");
        assert_eq!(B64.decode(m1["media"]["payload"].as_str().unwrap()).unwrap(), vec![0xff; 160]);
        assert_eq!(m2["media"]["chunk"], "1", "chunks count per track");
        assert_eq!(m2["media"]["track"], "outbound");
        assert_eq!(m3["media"]["chunk"], "2");
        assert_eq!(m3["sequence_number"], "4");
        assert_eq!(m3["media"]["payload"], "AQID");
        let d: Value = serde_json::from_str(&o.dtmf('#')).unwrap();
        assert_eq!(d, json!({"event": "dtmf", "sequence_number": "5", "stream_id": "s-1", "dtmf": {"digit": "#"}}));
        let k: Value = serde_json::from_str(&o.mark("end")).unwrap();
        assert_eq!(k["mark"]["name"], "end");
        let e: Value = serde_json::from_str(&o.error(&parse_inbound("{").unwrap_err())).unwrap();
        assert_eq!(e["payload"]["code"], 100_003);
        let st: Value = serde_json::from_str(&o.stop("v3:abc", "sess")).unwrap();
        assert_eq!(st["stop"]["call_control_id"], "v3:abc");
        assert_eq!(st["sequence_number"], "8");
    }

    #[test]
    fn agent_frames_parse_and_bad_ones_say_why() {
        assert_eq!(
            parse_inbound(r#"{"event":"media","media":{"payload":"AQID"}}"#).unwrap(),
            Inbound::Media(vec![1, 2, 3])
        );
        // pipecat's TelnyxFrameSerializer sends exactly this shape.
        assert_eq!(parse_inbound(r#"{"event":"clear"}"#).unwrap(), Inbound::Clear);
        assert_eq!(parse_inbound(r#"{"event":"mark","mark":{"name":"x"}}"#).unwrap(), Inbound::Mark("x".into()));
        assert_eq!(parse_inbound(r#"{"event":"connected","version":"1.0.0"}"#).unwrap(), Inbound::Ignored);
        assert_eq!(parse_inbound("not json{").unwrap_err().code, error_code::MALFORMED_FRAME);
        assert_eq!(parse_inbound(r#"{"media":{}}"#).unwrap_err().code, error_code::MALFORMED_FRAME);
        assert_eq!(parse_inbound(r#"{"event":"media","media":{}}"#).unwrap_err().code, error_code::MALFORMED_FRAME);
        assert_eq!(
            parse_inbound(r#"{"event":"media","media":{"payload":"%%%"}}"#).unwrap_err().code,
            error_code::INVALID_MEDIA
        );
        let e = parse_inbound(r#"{"event":"bogus"}"#).unwrap_err();
        assert_eq!(e.code, error_code::UNKNOWN_EVENT);
        assert!(e.detail.contains("bogus"));
    }

    #[test]
    fn full_frames_escapes_and_odd_field_types_parse_as_before() {
        // A frame as pipecat's Telnyx serializer sends it: extra fields ignored.
        let full = r#"{"event":"media","stream_id":"s1","sequence_number":"4","media":{"track":"outbound","chunk":"2","timestamp":"40","payload":"AQID"}}"#;
        assert_eq!(parse_inbound(full).unwrap(), Inbound::Media(vec![1, 2, 3]));
        // JSON escapes in strings (not borrowed, still decoded).
        assert_eq!(
            parse_inbound(r#"{"event":"media","media":{"payload":"AQ\u0049D"}}"#).unwrap(),
            Inbound::Media(vec![1, 2, 3])
        );
        assert_eq!(parse_inbound(r#"{"event":"mark","mark":{"name":"a\"b"}}"#).unwrap(), Inbound::Mark("a\"b".into()));
        // Fields of other types than the fast path reads: the value path decides.
        assert_eq!(
            parse_inbound(r#"{"event":"mark","mark":{"name":"x"},"media":"oops"}"#).unwrap(),
            Inbound::Mark("x".into())
        );
        assert_eq!(parse_inbound(r#"{"event":"clear","mark":7}"#).unwrap(), Inbound::Clear);
        let e = parse_inbound(r#"{"event":"media","media":{"payload":7}}"#).unwrap_err();
        assert_eq!((e.code, e.detail.as_str()), (error_code::MALFORMED_FRAME, "media frame without media.payload"));
        assert_eq!(parse_inbound(r#"{"event":5}"#).unwrap_err().code, error_code::MALFORMED_FRAME);
    }

    #[test]
    fn json_out_writes_valid_escaped_json() {
        let text = JsonOut::object(64)
            .str("a", "q\"b\\s\n\u{1}é")
            .raw("n", "7")
            .open("o")
            .str("x", "")
            .open("p")
            .close()
            .close()
            .raw("z", "[1]")
            .str("k\"", "v")
            .finish();
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v, json!({"a": "q\"b\\s\n\u{1}é", "n": 7, "o": {"x": "", "p": {}}, "z": [1], "k\"": "v"}));
        assert_eq!(JsonOut::object(0).finish(), "{}");
    }

    #[test]
    fn mark_names_are_bounded() {
        let ok = "m".repeat(MAX_MARK_NAME);
        let frame = format!(r#"{{"event":"mark","mark":{{"name":"{ok}"}}}}"#);
        assert_eq!(parse_inbound(&frame).unwrap(), Inbound::Mark(ok));
        let long = "m".repeat(MAX_MARK_NAME + 1);
        let frame = format!(r#"{{"event":"mark","mark":{{"name":"{long}"}}}}"#);
        let e = parse_inbound(&frame).unwrap_err();
        assert_eq!(e.code, error_code::MALFORMED_FRAME);
        assert!(e.detail.contains("257 bytes"), "{}", e.detail);
        // The value path (odd field types elsewhere) bounds it too.
        let frame = format!(r#"{{"event":"mark","mark":{{"name":"{long}"}},"media":1}}"#);
        assert_eq!(parse_inbound(&frame).unwrap_err().code, error_code::MALFORMED_FRAME);
    }

    #[test]
    fn tracks_follow_stream_track() {
        assert!(Track::Inbound.selected_by(StreamTrack::InboundTrack));
        assert!(!Track::Outbound.selected_by(StreamTrack::InboundTrack));
        assert!(Track::Outbound.selected_by(StreamTrack::OutboundTrack));
        assert!(
            Track::Inbound.selected_by(StreamTrack::BothTracks) && Track::Outbound.selected_by(StreamTrack::BothTracks)
        );
    }
}
