//! Plivo audio-stream messages, sans-IO
//! (<https://www.plivo.com/docs/voice/audio-streaming/audio-streaming>,
//! <https://www.plivo.com/docs/voice/xml/the-stream-element/checkpoint-event/>).
//!
//! Box → agent, JSON text frames; `sequenceNumber` and `chunk` are JSON numbers,
//! `timestamp` a string of Unix milliseconds:
//! `start` (`sequenceNumber` 1, `start.{callId, streamId, accountId, tracks,
//! mediaFormat{encoding "audio/x-mulaw"|"audio/x-l16", sampleRate}}`,
//! `extra_headers`), `media` (`streamId`, `media.{track, timestamp, chunk,
//! payload}`), `dtmf` (`dtmf.{track, digit}`), `playedStream` (`name`: a
//! checkpoint reached by playback), `clearedAudio` (the queue was cleared). Plivo
//! sends no `connected` and no `stop`: the stream ends with the WebSocket close.
//!
//! Agent → box: `playAudio` (`media.{contentType, sampleRate, payload}`; the
//! format must be the stream's, Plivo does not switch codecs mid-stream),
//! `checkpoint` (`name`), `clearAudio`. A checkpoint pending at a `clearAudio` is
//! not reported (`playedStream` means "played"); `sendDTMF` is not supported.
//! Errors are logged by the caller; Plivo has no error frame.
//!
//! Ids are sipbridge's: `streamId` = the `stream_id` of `streaming.*` events,
//! `callId` = `call_control_id`, `accountId` = `connection_id`. L16 is
//! little-endian on the wire (raw PCM as Plivo agents send it; Plivo's docs name
//! no byte order).

use super::protocol::{Frame, Inbound, InboundError, JsonOut, StartInfo, Track, decode_payload, malformed, mark_name};
use crate::config::{Encoding, StreamTrack};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;

/// Plivo's `contentType` for an encoding.
pub const fn content_type(encoding: Encoding) -> &'static str {
    match encoding {
        Encoding::L16 => "audio/x-l16",
        _ => "audio/x-mulaw",
    }
}

/// Builds the box → agent frames of one stream, numbering them.
#[derive(Debug)]
pub struct Outbound {
    stream_id: String,
    account: String,
    track: StreamTrack,
    sequence: u64,
    chunks: [u64; 2],
    started_unix_ms: u64,
}

impl Outbound {
    /// Frames of the stream `stream_id` that started at `started_unix_ms`
    /// (milliseconds since the Unix epoch; media timestamps count from it), of a
    /// call on the trunk `connection_id` (the account id), streaming `track`.
    pub fn new(stream_id: String, started_unix_ms: u64, connection_id: String, track: StreamTrack) -> Self {
        Self { stream_id, account: connection_id, track, sequence: 0, chunks: [0, 0], started_unix_ms }
    }

    fn next_sequence(&mut self) -> String {
        self.sequence += 1;
        self.sequence.to_string()
    }

    /// `{"event": event, "sequenceNumber": n` (the caller adds the rest).
    fn frame(&mut self, event: &str) -> JsonOut {
        let seq = self.next_sequence();
        let mut out = JsonOut::object(192);
        out.str("event", event).raw("sequenceNumber", &seq);
        out
    }

    /// The `start` frame (Plivo's first).
    pub fn start(&mut self, info: &StartInfo) -> String {
        let tracks = match self.track {
            StreamTrack::InboundTrack => r#"["inbound"]"#,
            StreamTrack::OutboundTrack => r#"["outbound"]"#,
            StreamTrack::BothTracks => r#"["inbound","outbound"]"#,
        };
        let mut out = self.frame("start");
        out.open("start").str("callId", &info.call_control_id).str("streamId", &self.stream_id);
        out.str("accountId", &self.account).raw("tracks", tracks).open("mediaFormat");
        out.str("encoding", content_type(info.encoding)).raw("sampleRate", &info.sample_rate.to_string());
        out.close().close().str("extra_headers", "").finish()
    }

    /// A `media` frame: `payload` = audio in the stream's encoding (μ-law, or L16
    /// little-endian), `elapsed_ms` = ms since the stream started.
    pub fn media(&mut self, track: Track, elapsed_ms: u64, payload: &[u8]) -> String {
        let i = track as usize;
        self.chunks[i] += 1;
        // Hand-written: this frame goes out 50 times a second per track.
        let seq = self.next_sequence();
        let mut s = String::with_capacity(160 + payload.len() * 4 / 3 + self.stream_id.len());
        s.push_str(r#"{"event":"media","sequenceNumber":"#);
        s.push_str(&seq);
        s.push_str(r#","streamId":""#);
        s.push_str(&self.stream_id);
        s.push_str(r#"","media":{"track":""#);
        s.push_str(track.as_str());
        s.push_str(r#"","timestamp":""#);
        s.push_str(&(self.started_unix_ms + elapsed_ms).to_string());
        s.push_str(r#"","chunk":"#);
        s.push_str(&self.chunks[i].to_string());
        s.push_str(r#","payload":""#);
        B64.encode_string(payload, &mut s);
        s.push_str(r#""}}"#);
        s
    }

    /// A `dtmf` frame for one key press of the caller.
    pub fn dtmf(&mut self, digit: char) -> String {
        let mut b = [0u8; 4];
        let digit = digit.encode_utf8(&mut b);
        let mut out = self.frame("dtmf");
        out.str("streamId", &self.stream_id).open("dtmf").str("track", "inbound").str("digit", digit);
        out.close().finish()
    }

    /// `playedStream`: the checkpoint `name` has been reached by playback.
    pub fn played(&mut self, name: &str) -> String {
        self.frame("playedStream").str("streamId", &self.stream_id).str("name", name).finish()
    }

    /// `clearedAudio`: the answer to `clearAudio`.
    pub fn cleared(&mut self) -> String {
        self.frame("clearedAudio").str("streamId", &self.stream_id).finish()
    }
}

/// Parses one text frame from a Plivo agent whose stream carries `encoding` at
/// `sample_rate` Hz.
///
/// Errors (the same codes as Telnyx's, for the log): not JSON, a field of the
/// wrong type, no `media.payload` / `name`, or a `playAudio` whose
/// `contentType`/`sampleRate` is not the stream's → `100003`; bad base64 →
/// `100004`; another event → `100002`.
pub fn parse_inbound(text: &str, encoding: Encoding, sample_rate: u32) -> Result<Inbound, InboundError> {
    let frame: Frame<'_> = serde_json::from_str(text).map_err(|e| malformed(format!("not a Plivo frame: {e}")))?;
    match &*frame.event {
        "playAudio" => {
            let media = frame.media.ok_or_else(|| malformed("playAudio without media"))?;
            let want = content_type(encoding);
            if media.content_type.as_deref().is_some_and(|c| c != want)
                || media.sample_rate.is_some_and(|r| r != sample_rate)
            {
                return Err(malformed(format!(
                    "playAudio is {} at {} Hz; this stream is {want} at {sample_rate} Hz",
                    media.content_type.as_deref().unwrap_or(want),
                    media.sample_rate.unwrap_or(sample_rate)
                )));
            }
            let payload = media.payload.ok_or_else(|| malformed("playAudio without media.payload"))?;
            decode_payload(&payload).map(Inbound::Media)
        }
        "checkpoint" => mark_name(&frame.name.ok_or_else(|| malformed("checkpoint without name"))?),
        "clearAudio" => Ok(Inbound::Clear),
        other => Err(InboundError {
            code: super::protocol::error_code::UNKNOWN_EVENT,
            title: "Unknown Event",
            detail: format!("unknown event {other:?}; expected playAudio, checkpoint or clearAudio"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::super::protocol::error_code;
    use super::*;
    use serde_json::{Value, json};

    fn info() -> StartInfo {
        StartInfo::sample()
    }

    fn parse(s: &str) -> Value {
        serde_json::from_str(s).unwrap()
    }

    #[test]
    fn frames_have_plivos_names_and_number_types() {
        let mut o = Outbound::new("s-3".into(), 1_700_000_000_000, "carrier".into(), StreamTrack::InboundTrack);
        let s = parse(&o.start(&info()));
        assert_eq!(
            s,
            json!({"event": "start", "sequenceNumber": 1, "extra_headers": "",
                   "start": {"callId": "v3:abc", "streamId": "s-3", "accountId": "carrier", "tracks": ["inbound"],
                             "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000}}})
        );
        let m = parse(&o.media(Track::Inbound, 40, &[1, 2, 3]));
        assert_eq!(
            m,
            json!({"event": "media", "sequenceNumber": 2, "streamId": "s-3",
                   "media": {"track": "inbound", "timestamp": "1700000000040", "chunk": 1, "payload": "AQID"}})
        );
        assert_eq!(parse(&o.media(Track::Inbound, 60, &[]))["media"]["chunk"], 2);
        assert_eq!(
            parse(&o.dtmf('9')),
            json!({"event": "dtmf", "sequenceNumber": 4, "streamId": "s-3", "dtmf": {"track": "inbound", "digit": "9"}})
        );
        assert_eq!(
            parse(&o.played("greeting")),
            json!({"event": "playedStream", "sequenceNumber": 5, "streamId": "s-3", "name": "greeting"})
        );
        assert_eq!(parse(&o.cleared()), json!({"event": "clearedAudio", "sequenceNumber": 6, "streamId": "s-3"}));
        let mut i = info();
        i.encoding = Encoding::L16;
        i.sample_rate = 16000;
        let mut o = Outbound::new("s-4".into(), 0, "carrier".into(), StreamTrack::BothTracks);
        let s = parse(&o.start(&i));
        assert_eq!(s["start"]["mediaFormat"], json!({"encoding": "audio/x-l16", "sampleRate": 16000}));
        assert_eq!(s["start"]["tracks"], json!(["inbound", "outbound"]));
    }

    #[test]
    fn agent_frames_parse_and_bad_ones_say_why() {
        // pipecat's PlivoFrameSerializer sends exactly these shapes.
        let play = r#"{"event":"playAudio","media":{"contentType":"audio/x-mulaw","sampleRate":8000,"payload":"AQID"},"streamId":"s"}"#;
        assert_eq!(parse_inbound(play, Encoding::Pcmu, 8000).unwrap(), Inbound::Media(vec![1, 2, 3]));
        assert_eq!(
            parse_inbound(r#"{"event":"clearAudio","streamId":"s"}"#, Encoding::Pcmu, 8000).unwrap(),
            Inbound::Clear
        );
        let cp = r#"{"event":"checkpoint","streamId":"s","name":"customer greeting audio"}"#;
        assert_eq!(parse_inbound(cp, Encoding::Pcmu, 8000).unwrap(), Inbound::Mark("customer greeting audio".into()));
        // Without contentType/sampleRate: the stream's format.
        let bare = r#"{"event":"playAudio","media":{"payload":"AAE="}}"#;
        assert_eq!(parse_inbound(bare, Encoding::L16, 16000).unwrap(), Inbound::Media(vec![0, 1]));

        let code = |t: &str| parse_inbound(t, Encoding::Pcmu, 8000).unwrap_err().code;
        assert_eq!(code("not json"), error_code::MALFORMED_FRAME);
        assert_eq!(code(r#"{"media":{}}"#), error_code::MALFORMED_FRAME);
        assert_eq!(code(r#"{"event":"playAudio"}"#), error_code::MALFORMED_FRAME);
        assert_eq!(code(r#"{"event":"playAudio","media":{}}"#), error_code::MALFORMED_FRAME);
        assert_eq!(code(r#"{"event":"playAudio","media":{"sampleRate":"8000","payload":"AQID"}}"#), 100_003);
        assert_eq!(code(r#"{"event":"playAudio","media":{"payload":"%%"}}"#), error_code::INVALID_MEDIA);
        assert_eq!(code(r#"{"event":"checkpoint"}"#), error_code::MALFORMED_FRAME);
        assert_eq!(code(&format!(r#"{{"event":"checkpoint","name":"{}"}}"#, "n".repeat(300))), 100_003);
        assert_eq!(code(r#"{"event":"sendDTMF","dtmf":"1"}"#), error_code::UNKNOWN_EVENT);
        let wrong =
            r#"{"event":"playAudio","media":{"contentType":"audio/x-l16","sampleRate":16000,"payload":"AQID"}}"#;
        let e = parse_inbound(wrong, Encoding::Pcmu, 8000).unwrap_err();
        assert!(e.detail.contains("audio/x-l16 at 16000 Hz; this stream is audio/x-mulaw at 8000 Hz"), "{}", e.detail);
    }
}
