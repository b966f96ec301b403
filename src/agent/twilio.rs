//! Twilio Media Streams and Exotel Voicebot/Stream messages, box → agent, sans-IO.
//! Exotel's protocol is Twilio's with snake_case names, so one builder serves both
//! ([`Dialect`]). Agent → box, both send Telnyx's shapes (`media.payload`,
//! `mark.name`, `clear`; an extra `streamSid`/`stream_sid` is ignored), which
//! [`super::protocol::parse_inbound`] reads.
//!
//! Twilio (<https://www.twilio.com/docs/voice/media-streams/websocket-messages>):
//! `{"event":"connected","protocol":"Call","version":"1.0.0"}`, then `start`
//! (`sequenceNumber` "1", `streamSid`, `start.{streamSid, accountSid, callSid,
//! tracks, customParameters, mediaFormat{encoding "audio/x-mulaw", sampleRate 8000,
//! channels 1}}`), `media` (`media.{track, chunk, timestamp, payload}`), `dtmf`
//! (`dtmf.{track "inbound_track", digit}`), `mark` (`mark.name`, returned when the
//! audio before it played, or at a `clear`), `stop` (`stop.{accountSid, callSid}`).
//! Every number is a string; `sequenceNumber` counts every message after
//! `connected` from 1, `chunk` counts per track from 1, `timestamp` is ms since
//! the stream started.
//!
//! Exotel (<https://developer.exotel.com/docs/agentstream/websocket-protocol>,
//! <https://developer.exotel.com/docs/agentstream/stream-voicebot-applet>):
//! `{"event":"connected"}`, `start` (`sequence_number`, `stream_sid`,
//! `start.{stream_sid, call_sid, account_sid, from, to, custom_parameters,
//! media_format{encoding "audio/x-raw", sample_rate "8000", bit_rate "16"}}`),
//! `media` (`media.{chunk, timestamp, payload}`, no track: only the caller's audio
//! is sent), `dtmf` (`dtmf.digit`), `mark`, `stop` (`stop.{call_sid, account_sid,
//! reason}`). Payloads are base64 of 16-bit little-endian linear PCM ("raw/slin").
//!
//! The ids are sipbridge's own, so an agent can use them with its API and match
//! them with webhooks: `streamSid` = the `stream_id` of `streaming.*` events,
//! `callSid` = `call_control_id`, `accountSid` = `connection_id` (the trunk); they
//! do not carry Twilio's `MZ`/`CA`/`AC` prefixes.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;

use super::protocol::{JsonOut, StartInfo, Track};
use crate::config::StreamTrack;

/// Which provider's names the frames use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// Twilio: camelCase (`streamSid`, `sequenceNumber`).
    Twilio,
    /// Exotel: snake_case (`stream_sid`, `sequence_number`).
    Exotel,
}

/// Field names of one dialect.
struct Names {
    sequence: &'static str,
    stream: &'static str,
    call: &'static str,
    account: &'static str,
}

impl Dialect {
    const fn names(self) -> Names {
        match self {
            Dialect::Twilio => {
                Names { sequence: "sequenceNumber", stream: "streamSid", call: "callSid", account: "accountSid" }
            }
            Dialect::Exotel => {
                Names { sequence: "sequence_number", stream: "stream_sid", call: "call_sid", account: "account_sid" }
            }
        }
    }
}

/// Builds the box → agent frames of one stream, numbering them.
#[derive(Debug)]
pub struct Outbound {
    dialect: Dialect,
    stream_id: String,
    account: String,
    track: StreamTrack,
    sequence: u64,
    chunks: [u64; 2],
}

impl Outbound {
    /// Frames of the stream `stream_id` in `dialect`, of a call on the trunk
    /// `connection_id` (the account id), streaming `track`.
    pub fn new(dialect: Dialect, stream_id: String, connection_id: String, track: StreamTrack) -> Self {
        Self { dialect, stream_id, account: connection_id, track, sequence: 0, chunks: [0, 0] }
    }

    fn next_sequence(&mut self) -> String {
        self.sequence += 1;
        self.sequence.to_string()
    }

    /// `{"event": event, <sequence>, <stream>` (the caller adds the body and
    /// finishes it).
    fn frame(&mut self, event: &str) -> JsonOut {
        let n = self.dialect.names();
        let seq = self.next_sequence();
        let mut out = JsonOut::object(256);
        out.str("event", event).str(n.sequence, &seq).str(n.stream, &self.stream_id);
        out
    }

    /// The `connected` frame.
    pub fn connected(&self) -> String {
        match self.dialect {
            Dialect::Twilio => r#"{"event":"connected","protocol":"Call","version":"1.0.0"}"#,
            Dialect::Exotel => r#"{"event":"connected"}"#,
        }
        .to_string()
    }

    /// The `start` frame.
    pub fn start(&mut self, info: &StartInfo) -> String {
        let n = self.dialect.names();
        let mut out = self.frame("start");
        out.open("start")
            .str(n.stream, &self.stream_id)
            .str(n.account, &self.account)
            .str(n.call, &info.call_control_id);
        let rate = info.sample_rate.to_string();
        match self.dialect {
            Dialect::Twilio => {
                let tracks = match self.track {
                    StreamTrack::InboundTrack => r#"["inbound"]"#,
                    StreamTrack::OutboundTrack => r#"["outbound"]"#,
                    StreamTrack::BothTracks => r#"["inbound","outbound"]"#,
                };
                // Twilio passes <Parameter>s here; the caller and callee are what an
                // agent most often asks for there.
                out.raw("tracks", tracks).open("customParameters").str("from", &info.from).str("to", &info.to);
                for (k, v) in &info.custom_parameters {
                    if let Some(v) = v.as_str().filter(|_| k != "from" && k != "to") {
                        out.str(k, v);
                    }
                }
                out.close().open("mediaFormat").str("encoding", "audio/x-mulaw").raw("sampleRate", &rate);
                out.raw("channels", "1").close();
            }
            Dialect::Exotel => {
                out.str("from", &info.from).str("to", &info.to).open("custom_parameters");
                for (k, v) in &info.custom_parameters {
                    if let Some(v) = v.as_str() {
                        out.str(k, v);
                    }
                }
                out.close().open("media_format").str("encoding", "audio/x-raw").str("sample_rate", &rate);
                out.str("bit_rate", "16").close();
            }
        }
        out.close().finish()
    }

    /// A `media` frame: `payload` = audio in the stream's encoding (G.711 bytes,
    /// or L16 little-endian for Exotel), `timestamp_ms` = ms since the stream
    /// started. `None` for Exotel's outbound track (Exotel streams the caller only).
    pub fn media(&mut self, track: Track, timestamp_ms: u64, payload: &[u8]) -> Option<String> {
        if self.dialect == Dialect::Exotel && track == Track::Outbound {
            return None;
        }
        let i = track as usize;
        self.chunks[i] += 1;
        let n = self.dialect.names();
        // Hand-written: this frame goes out 50 times a second per track.
        let seq = self.next_sequence();
        let mut s = String::with_capacity(160 + payload.len() * 4 / 3 + self.stream_id.len());
        s.push_str(r#"{"event":"media",""#);
        s.push_str(n.sequence);
        s.push_str(r#"":""#);
        s.push_str(&seq);
        s.push_str(r#"",""#);
        s.push_str(n.stream);
        s.push_str(r#"":""#);
        s.push_str(&self.stream_id);
        s.push_str(r#"","media":{"#);
        if self.dialect == Dialect::Twilio {
            s.push_str(r#""track":""#);
            s.push_str(track.as_str());
            s.push_str(r#"","#);
        }
        s.push_str(r#""chunk":""#);
        s.push_str(&self.chunks[i].to_string());
        s.push_str(r#"","timestamp":""#);
        s.push_str(&timestamp_ms.to_string());
        s.push_str(r#"","payload":""#);
        B64.encode_string(payload, &mut s);
        s.push_str(r#""}}"#);
        Some(s)
    }

    /// A `dtmf` frame for one key press of the caller.
    pub fn dtmf(&mut self, digit: char) -> String {
        let mut b = [0u8; 4];
        let digit = digit.encode_utf8(&mut b);
        let mut out = self.frame("dtmf");
        out.open("dtmf");
        if self.dialect == Dialect::Twilio {
            out.str("track", "inbound_track");
        }
        out.str("digit", digit).close().finish()
    }

    /// A `mark` frame returning the agent's mark `name`.
    pub fn mark(&mut self, name: &str) -> String {
        self.frame("mark").open("mark").str("name", name).close().finish()
    }

    /// The `stop` frame.
    pub fn stop(&mut self, info: &StartInfo) -> String {
        let n = self.dialect.names();
        let mut out = self.frame("stop");
        out.open("stop").str(n.account, &self.account).str(n.call, &info.call_control_id);
        if self.dialect == Dialect::Exotel {
            out.str("reason", "stopped");
        }
        out.close().finish()
    }
}

#[cfg(test)]
mod tests {
    use super::super::protocol::{Inbound, parse_inbound};
    use super::*;
    use crate::config::Encoding;
    use serde_json::{Value, json};

    fn info() -> StartInfo {
        StartInfo::sample()
    }

    fn parse(s: &str) -> Value {
        serde_json::from_str(s).unwrap()
    }

    #[test]
    fn twilio_frames_have_twilios_names_and_string_numbers() {
        let mut o = Outbound::new(Dialect::Twilio, "s-1".into(), "carrier".into(), StreamTrack::BothTracks);
        assert_eq!(parse(&o.connected()), json!({"event": "connected", "protocol": "Call", "version": "1.0.0"}));
        let s = parse(&o.start(&info()));
        assert_eq!(s["event"], "start");
        assert_eq!(s["sequenceNumber"], "1");
        assert_eq!(s["streamSid"], "s-1");
        assert_eq!(s["start"]["streamSid"], "s-1");
        assert_eq!(s["start"]["accountSid"], "carrier");
        assert_eq!(s["start"]["callSid"], "v3:abc");
        assert_eq!(s["start"]["tracks"], json!(["inbound", "outbound"]));
        assert_eq!(s["start"]["mediaFormat"], json!({"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}));
        assert_eq!(s["start"]["customParameters"], json!({"from": "+13125550001", "to": "+13125550100"}));
        let m1 = parse(&o.media(Track::Inbound, 0, &[0xff; 160]).unwrap());
        let m2 = parse(&o.media(Track::Outbound, 20, &[1, 2, 3]).unwrap());
        let m3 = parse(&o.media(Track::Inbound, 20, &[1, 2, 3]).unwrap());
        assert_eq!(m1["sequenceNumber"], "2");
        assert_eq!(m1["streamSid"], "s-1");
        assert_eq!(m1["media"]["track"], "inbound");
        assert_eq!(m1["media"]["chunk"], "1");
        assert_eq!(m1["media"]["timestamp"], "0");
        assert_eq!(B64.decode(m1["media"]["payload"].as_str().unwrap()).unwrap(), vec![0xff; 160]);
        assert_eq!((m2["media"]["track"].as_str(), m2["media"]["chunk"].as_str()), (Some("outbound"), Some("1")));
        assert_eq!((m3["media"]["chunk"].as_str(), m3["sequenceNumber"].as_str()), (Some("2"), Some("4")));
        assert_eq!(m3["media"]["payload"], "AQID");
        let d = parse(&o.dtmf('7'));
        assert_eq!(
            d,
            json!({"event": "dtmf", "sequenceNumber": "5", "streamSid": "s-1", "dtmf": {"track": "inbound_track", "digit": "7"}})
        );
        let k = parse(&o.mark("end"));
        assert_eq!(k, json!({"event": "mark", "sequenceNumber": "6", "streamSid": "s-1", "mark": {"name": "end"}}));
        let st = parse(&o.stop(&info()));
        assert_eq!(
            st,
            json!({"event": "stop", "sequenceNumber": "7", "streamSid": "s-1", "stop": {"accountSid": "carrier", "callSid": "v3:abc"}})
        );
    }

    #[test]
    fn exotel_frames_have_exotels_names_and_no_outbound_track() {
        let mut o = Outbound::new(Dialect::Exotel, "s-2".into(), "carrier".into(), StreamTrack::BothTracks);
        assert_eq!(parse(&o.connected()), json!({"event": "connected"}));
        let mut i = info();
        i.encoding = Encoding::L16;
        let s = parse(&o.start(&i));
        assert_eq!(s["sequence_number"], "1");
        assert_eq!(s["stream_sid"], "s-2");
        let b = &s["start"];
        assert_eq!((b["stream_sid"].as_str(), b["call_sid"].as_str()), (Some("s-2"), Some("v3:abc")));
        assert_eq!(b["account_sid"], "carrier");
        assert_eq!((b["from"].as_str(), b["to"].as_str()), (Some("+13125550001"), Some("+13125550100")));
        assert_eq!(b["custom_parameters"], json!({}));
        assert_eq!(b["media_format"], json!({"encoding": "audio/x-raw", "sample_rate": "8000", "bit_rate": "16"}));
        assert!(o.media(Track::Outbound, 0, &[0; 320]).is_none(), "Exotel carries the caller's audio only");
        let m = parse(&o.media(Track::Inbound, 40, &[0, 1]).unwrap());
        assert_eq!(
            m,
            json!({"event": "media", "sequence_number": "2", "stream_sid": "s-2",
                   "media": {"chunk": "1", "timestamp": "40", "payload": "AAE="}})
        );
        assert_eq!(parse(&o.dtmf('#'))["dtmf"], json!({"digit": "#"}));
        assert_eq!(parse(&o.mark("m"))["mark"], json!({"name": "m"}));
        let st = parse(&o.stop(&i));
        assert_eq!(st["sequence_number"], "5");
        assert_eq!(st["stop"], json!({"call_sid": "v3:abc", "account_sid": "carrier", "reason": "stopped"}));
    }

    #[test]
    fn twilio_and_exotel_agent_frames_parse() {
        // As pipecat's TwilioFrameSerializer / ExotelFrameSerializer send them.
        let media = r#"{"event":"media","streamSid":"MZ1","media":{"payload":"AQID"}}"#;
        assert_eq!(parse_inbound(media).unwrap(), Inbound::Media(vec![1, 2, 3]));
        assert_eq!(parse_inbound(r#"{"event":"clear","streamSid":"MZ1"}"#).unwrap(), Inbound::Clear);
        assert_eq!(parse_inbound(r#"{"event":"clear","stream_sid":"x"}"#).unwrap(), Inbound::Clear);
        let mark = r#"{"event":"mark","stream_sid":"x","mark":{"name":"a"}}"#;
        assert_eq!(parse_inbound(mark).unwrap(), Inbound::Mark("a".into()));
        assert!(parse_inbound(r#"{"event":"media","streamSid":"MZ1","media":{"payload":"*"}}"#).is_err());
    }
}
