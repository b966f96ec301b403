//! The typed configuration: what the rest of sipbridge reads. Built only by
//! `config::load`, which validated every field; nothing here parses.
//!
//! Key names follow `sipbridge.example.toml` in the design folder; every key,
//! default and unit is documented in `config/sipbridge.toml` of the repository.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;
use serde::Serialize;

use super::secret::Secret;
use super::values::{DiskBudget, Listen, NumberPattern, PortRange, SipUri};

/// The whole configuration.
#[derive(Debug, Clone, Serialize)]
pub struct Config {
    /// `[node]`
    pub node: Node,
    /// `[sip]`
    pub sip: Sip,
    /// `[rtp]`
    pub rtp: Rtp,
    /// `[[trunk]]`, in file order.
    pub trunks: Vec<Trunk>,
    /// `[[agent]]`, in file order.
    pub agents: Vec<Agent>,
    /// `[[route]]`, in file order (first match wins).
    pub routes: Vec<Route>,
    /// `[rooms]`
    pub rooms: Rooms,
    /// `[webrtc]`
    pub webrtc: WebRtc,
    /// `[media]`
    pub media: Media,
    /// `[tts]`
    pub tts: Tts,
    /// `[recording]`
    pub recording: Recording,
    /// `[recording.upload]`: recordings shipped to S3-compatible storage; `None`
    /// keeps them on the box only. (Beside [`Recording`], not in it, so code that
    /// builds a `Recording` by hand is not concerned.)
    pub recording_upload: Option<RecordingUpload>,
    /// `[webhooks]`
    pub webhooks: Webhooks,
    /// `[api]`
    pub api: Api,
    /// `[log]`
    pub log: Log,
}

/// `[node]`: identity and limits of this box.
#[derive(Debug, Clone, Serialize)]
pub struct Node {
    /// Shown in logs, webhooks and the SIP User-Agent header.
    pub name: String,
    /// SQLite store, lock file; recordings unless `[recording].dir` is set.
    pub data_dir: PathBuf,
    /// Address put in Contact/Via/SDP.
    pub public_address: PublicAddress,
    /// Concurrent calls; beyond this new calls get 503 + Retry-After.
    pub max_calls: u32,
    /// SIGTERM: how long active calls may continue before they are hung up.
    pub shutdown_grace: Duration,
}

/// What to advertise in Contact/Via/SDP.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum PublicAddress {
    /// The local address of the interface towards the peer.
    Auto,
    /// A fixed IP (e.g. the router's public IP with forwarded ports).
    Ip(IpAddr),
    /// A fixed host name.
    Host(String),
}

/// `[sip]`: signaling listeners.
#[derive(Debug, Clone, Serialize)]
pub struct Sip {
    /// Listeners (`udp://0.0.0.0:5060`, ...).
    pub listen: Vec<Listen>,
    /// PEM certificate chain for `tls://` listeners.
    pub tls_certificate: Option<PathBuf>,
    /// PEM private key for `tls://` listeners.
    pub tls_private_key: Option<PathBuf>,
    /// PEM CA bundle to verify trunks' TLS certificates; system roots when unset.
    pub tls_ca_file: Option<PathBuf>,
    /// Banning of password guessers (`auth_max_failures`, `auth_failure_window`,
    /// `auth_ban_time`).
    pub auth_ban: BanPolicy,
    /// What an out-of-dialog request from a source that matches no trunk gets
    /// (`unknown_source`, default [`UnknownSource::Drop`]).
    pub unknown_source: UnknownSource,
    /// `User-Agent`/`Server` value on messages to trunks (`user_agent`, default
    /// `"sipbridge"`, no version); empty = no such header. Never sent to non-trunks.
    pub user_agent: String,
    /// Bounds on TCP/TLS connections accepted by the listeners.
    pub streams: SipStreams,
}

/// When a source is banned (`[sip] auth_max_failures`, `auth_failure_window`,
/// `auth_ban_time`); applied by `sip::ban`, which re-exports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct BanPolicy {
    /// Failed attempts within `window` that ban the source (0 = never ban).
    pub max_failures: u32,
    /// How far back failures count.
    pub window: Duration,
    /// How long a banned source is dropped.
    pub ban_time: Duration,
}

impl Default for BanPolicy {
    /// 5 failures in 10 minutes ban for 10 minutes.
    fn default() -> Self {
        Self { max_failures: 5, window: Duration::from_secs(600), ban_time: Duration::from_secs(600) }
    }
}

/// `[sip] unknown_source`: the answer to a request from a source that matches no
/// trunk (issue 17: unknown sources learn nothing).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum UnknownSource {
    /// No answer at all (the default): a scanner cannot tell a SIP server is there.
    Drop,
    /// `403 Forbidden`, without `User-Agent`/`Server`.
    Reject,
}

/// `[sip]` bounds on accepted TCP/TLS connections (issue 17). Connections from
/// trunk addresses are not counted, never refused by the caps and not held to the
/// first-message and idle timeouts. Read at start: changes need a restart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SipStreams {
    /// `max_connections`: connections from non-trunk sources at one time, all
    /// stream listeners together (default 1024).
    pub max_connections: u32,
    /// `max_connections_per_source`: connections from one non-trunk IP address at
    /// one time (default 16).
    pub max_connections_per_source: u32,
    /// `tls_handshake_timeout`: accept to finished TLS handshake, any peer
    /// (default 10 s).
    pub tls_handshake_timeout: Duration,
    /// `first_message_timeout`: start of a connection (after TLS) to its first
    /// complete SIP message, and the most a started message may take to complete
    /// (default 10 s).
    pub first_message_timeout: Duration,
    /// `idle_timeout`: a non-trunk connection receiving nothing (not even an RFC
    /// 5626 CRLF keepalive) for this long is closed (default 180 s: longer than the
    /// 95–120 s keepalive interval RFC 5626 §4.4.1 gives clients on TCP/TLS).
    pub idle_timeout: Duration,
}

impl Default for SipStreams {
    fn default() -> Self {
        Self {
            max_connections: 1024,
            max_connections_per_source: 16,
            tls_handshake_timeout: Duration::from_secs(10),
            first_message_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(180),
        }
    }
}

/// `[rtp]`: media ports and timeouts.
#[derive(Debug, Clone, Serialize)]
pub struct Rtp {
    /// Even RTP port / odd RTCP port pairs are taken from this range.
    pub port_range: PortRange,
    /// Hang up when no RTP has arrived for this long.
    pub timeout: Duration,
    /// RTP latching: after the answer and after each re-negotiation, a new source
    /// may latch for this long (the SDP address wins within it); afterwards
    /// packets from other sources are dropped. Default 3 s.
    pub learning_window: Duration,
    /// The latched source must have been silent this long before the SDP address
    /// may take it over. Default 2 s.
    pub relatch_after: Duration,
    /// Accept and answer RTP/RTCP only from the SDP addresses (no latching, no
    /// NAT traversal). Default false.
    pub strict_source: bool,
    /// Media engine worker threads (`media::engine`); 0 = one per core the
    /// daemon may run on (the default). Read at start.
    pub workers: usize,
    /// Noise-suppressed directions that may run at once (`media::suppress`,
    /// about 0.6 % of an x86 core each, more on a Pi); 0 = 16 per media worker
    /// (the default). Beyond it a direction stays unsuppressed and the API's
    /// `suppression_start` answers 503. Read at start.
    pub max_suppressed_streams: usize,
}

/// Presets that fill trunk defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    /// Telnyx SIP connection (credentials or IP).
    Telnyx,
    /// LiveKit SIP inbound/outbound trunks.
    Livekit,
    /// Any RFC 3261 carrier.
    Generic,
}

/// Audio codecs the box offers and accepts on a trunk: G.711 (RFC 3551
/// §4.5.14), G.722 (§4.5.2) and Opus (RFC 7587), by Telnyx's codec names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Codec {
    /// G.711 µ-law, RTP payload type 0.
    #[serde(rename = "PCMU")]
    Pcmu,
    /// G.711 A-law, RTP payload type 8.
    #[serde(rename = "PCMA")]
    Pcma,
    /// G.722 wideband (16 kHz audio), RTP payload type 9.
    #[serde(rename = "G722")]
    G722,
    /// Opus (`opus/48000/2`), mono 16 kHz speech here.
    #[serde(rename = "OPUS")]
    Opus,
}

impl Provider {
    /// The codecs the provider's SIP side carries (Telnyx: G.711, G.722, Opus
    /// among others; LiveKit SIP: G.711 and G.722, no Opus on SIP trunks —
    /// livekit/sip #281; a generic carrier: anything offered).
    pub fn supports(self, codec: Codec) -> bool {
        !matches!((self, codec), (Provider::Livekit, Codec::Opus))
    }
}

/// `[[trunk]]`: a SIP peer the box exchanges calls with.
#[derive(Debug, Clone, Serialize)]
pub struct Trunk {
    /// Unique name; the `connection_id` in webhooks.
    pub name: String,
    /// Preset used for defaults.
    pub provider: Provider,
    /// Where outbound requests (INVITE, REGISTER) go.
    pub proxy: Option<SipUri>,
    /// Digest username for REGISTER and outbound INVITEs.
    pub username: Option<String>,
    /// Digest password for REGISTER and outbound INVITEs.
    pub password: Option<Secret>,
    /// REGISTER to `proxy` and take inbound calls over the registration.
    pub register: bool,
    /// Expiry asked for in REGISTER (the registrar may grant less).
    pub register_expires: Duration,
    /// Numbers that belong to this trunk (E.164); the caller ID of outbound calls.
    pub numbers: Vec<String>,
    /// Codecs in order of preference.
    pub codecs: Vec<Codec>,
    /// Sources whose INVITEs belong to this trunk.
    pub inbound_allow: Vec<IpNet>,
    /// Credentials the peer must present (the box challenges with 401).
    pub inbound_username: Option<String>,
    /// Password for `inbound_username`.
    pub inbound_password: Option<Secret>,
    /// Realm whose challenges (401/407) `username`/`password` answer; `None` = the
    /// realm of any challenge from the trunk's proxy (outbound requests are always
    /// sent to `proxy`, never to a host named in a Request-URI).
    pub auth_realm: Option<String>,
}

/// Audio encoding of an agent stream (Telnyx media streaming).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Encoding {
    /// G.711 µ-law, 8000 Hz.
    #[serde(rename = "PCMU")]
    Pcmu,
    /// G.711 A-law, 8000 Hz.
    #[serde(rename = "PCMA")]
    Pcma,
    /// Linear PCM 16-bit big-endian (RFC 2586), 8000 or 16000 Hz.
    #[serde(rename = "L16")]
    L16,
    /// G.722 at 16000 Hz: one 20 ms packet (160 bytes) per `media` message.
    #[serde(rename = "G722")]
    G722,
    /// Opus at 16000 Hz (RFC 6716): one 20 ms Opus packet per `media` message.
    #[serde(rename = "OPUS")]
    Opus,
}

impl Encoding {
    /// The only rate a coded encoding streams at (16000 Hz), `None` for the others.
    pub const fn fixed_rate(self) -> Option<u32> {
        match self {
            Encoding::G722 | Encoding::Opus => Some(16_000),
            _ => None,
        }
    }
}

/// Which audio an agent stream carries (Telnyx `stream_track`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StreamTrack {
    /// The caller's audio.
    InboundTrack,
    /// The audio sent to the caller.
    OutboundTrack,
    /// Both.
    BothTracks,
}

/// What happens to the call when the agent's WebSocket fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OnDisconnect {
    /// End the call (the cause is recorded).
    Hangup,
    /// Keep the call up with silence; recording goes on.
    Continue,
}

/// The message shapes an agent stream speaks (`[[agent]] protocol`, the API's
/// `stream_protocol`). Each is framed by its own sans-IO module in `agent/`; the
/// audio path (playout, marks, clear) is the same for all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StreamProtocol {
    /// Telnyx media streaming (the default).
    Telnyx,
    /// Twilio Media Streams: PCMU at 8000 Hz only.
    Twilio,
    /// Exotel Voicebot/Stream applet: L16 little-endian, 8000 or 16000 Hz.
    Exotel,
    /// Plivo audio streams: PCMU at 8000 Hz, or L16 little-endian at 8000/16000 Hz.
    Plivo,
    /// Asterisk AudioSocket over TCP: L16 little-endian at 8000 Hz only.
    AudioSocket,
}

impl StreamProtocol {
    /// Names as written in the config and the API, with their values.
    pub const CHOICES: [(&'static str, StreamProtocol); 5] = [
        ("telnyx", StreamProtocol::Telnyx),
        ("twilio", StreamProtocol::Twilio),
        ("exotel", StreamProtocol::Exotel),
        ("plivo", StreamProtocol::Plivo),
        ("audiosocket", StreamProtocol::AudioSocket),
    ];

    /// The protocol named `name` (`"twilio"`), if any.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::CHOICES.iter().find(|(n, _)| *n == name).map(|(_, p)| *p)
    }

    /// URL schemes of the agent's address: `tcp`/`audiosocket` for AudioSocket,
    /// `ws`/`wss` for the others.
    pub fn schemes(self) -> &'static [&'static str] {
        match self {
            StreamProtocol::AudioSocket => &["tcp", "audiosocket"],
            _ => &["ws", "wss"],
        }
    }

    /// The encoding when none is given: what the provider sends by default.
    pub fn default_encoding(self) -> Encoding {
        match self {
            StreamProtocol::Exotel | StreamProtocol::AudioSocket => Encoding::L16,
            _ => Encoding::Pcmu,
        }
    }

    /// Whether 16-bit linear audio is little-endian on this protocol's wire
    /// (Exotel, Plivo, AudioSocket); Telnyx's L16 is big-endian (RFC 2586).
    pub fn little_endian(self) -> bool {
        !matches!(self, StreamProtocol::Telnyx | StreamProtocol::Twilio)
    }

    /// Whether the provider carries `encoding` at `sample_rate` Hz; the error
    /// says what it does carry.
    pub fn check_format(self, encoding: Encoding, sample_rate: u32) -> Result<(), &'static str> {
        let ok = match self {
            StreamProtocol::Telnyx => encoding.fixed_rate().is_none_or(|r| r == sample_rate),
            StreamProtocol::Twilio => encoding == Encoding::Pcmu,
            StreamProtocol::Exotel => encoding == Encoding::L16,
            StreamProtocol::Plivo => matches!(encoding, Encoding::Pcmu | Encoding::L16),
            StreamProtocol::AudioSocket => encoding == Encoding::L16 && sample_rate == 8000,
        };
        ok.then_some(()).ok_or(match self {
            StreamProtocol::Twilio => "Twilio streams are PCMU at 8000 Hz only",
            StreamProtocol::Exotel => "Exotel streams are L16 (little-endian) at 8000 or 16000 Hz",
            StreamProtocol::Plivo => "Plivo streams are PCMU at 8000 Hz or L16 (little-endian) at 8000/16000 Hz",
            StreamProtocol::Telnyx => "G722 and OPUS streams are 16000 Hz",
            _ => "AudioSocket streams are L16 (slin, little-endian) at 8000 Hz only",
        })
    }
}

/// Where an agent lives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum AgentUrl {
    /// `builtin:echo`: in-process, plays the caller's audio back.
    BuiltinEcho,
    /// The agent's server: a `ws://`/`wss://` URL, or `tcp://`/`audiosocket://`
    /// for `protocol = "audiosocket"` (see [`StreamProtocol::schemes`]).
    WebSocket(url::Url),
}

/// `[[agent]]`: a voice agent speaking one of the stream protocols.
#[derive(Debug, Clone, Serialize)]
pub struct Agent {
    /// Unique name that routes refer to.
    pub name: String,
    /// Where to connect.
    pub url: AgentUrl,
    /// The message shapes it speaks.
    pub protocol: StreamProtocol,
    /// Sent as `Authorization: Bearer`.
    pub auth_token: Option<Secret>,
    /// Stream encoding.
    pub encoding: Encoding,
    /// Stream sample rate in Hz (16000 only with L16).
    pub sample_rate: u32,
    /// Which audio is streamed.
    pub track: StreamTrack,
    /// The agent may send audio back.
    pub bidirectional: bool,
    /// Behaviour when the WebSocket fails.
    pub on_disconnect: OnDisconnect,
    /// Time allowed for TCP + TLS + WebSocket handshake.
    pub connect_timeout: Duration,
    /// `noise_suppression`: RNNoise on the caller's audio before this agent
    /// hears it (`inbound`), on the agent's audio (`outbound`), `both` or
    /// `disabled` (default); a route's own setting wins.
    pub noise_suppression: Suppression,
}

/// The single target of a route.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RouteTarget {
    /// Stream to this `[[agent]]` (by name).
    Agent(String),
    /// Join this local room.
    Room(String),
    /// A new room per caller, named this prefix + the caller's number.
    RoomPerCaller(String),
    /// Send the call out through this `[[trunk]]` (by name).
    Forward(String),
    /// `park = true`: the call rings, parked, until the control API answers or
    /// rejects it (Telnyx's inbound flow: `call.initiated` → `answer`).
    Park,
    /// `answer_url = "https://…"`: the box fetches a TeXML/TwiML document from
    /// this app server and runs it on the call (`docs/texml.md`).
    AnswerUrl(Box<AnswerUrl>),
}

/// Where a TeXML route fetches its documents: `answer_url`, `answer_method`,
/// `answer_timeout`, `fallback_url` of a `[[route]]` (Telnyx TeXML application
/// "Voice URL"/"Voice Method"/"Fallback URL"; Twilio's `VoiceUrl`,
/// `VoiceMethod`, `VoiceFallbackUrl`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AnswerUrl {
    /// The first document (http or https).
    pub url: url::Url,
    /// `POST` (default; form-encoded body) or `GET` (query string).
    pub method: HttpMethod,
    /// Whole-request limit of each document fetch (default 5 s, 1–30 s).
    pub timeout: Duration,
    /// Fetched (same method) when a document cannot be fetched or parsed.
    pub fallback_url: Option<url::Url>,
    /// `status_callback`: POSTed the call's final `CallStatus` when it ends.
    pub status_callback: Option<url::Url>,
}

/// How a document is requested.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum HttpMethod {
    /// Parameters as `application/x-www-form-urlencoded` body.
    Post,
    /// Parameters in the query string.
    Get,
}

impl RouteTarget {
    /// The target as the API shows it (`GET /v2/routes`, route tests):
    /// `{"type": "agent" | "room" | "room_per_caller" | "forward" | "park" |
    /// "answer_url", "name"}` (`name`: the agent, room, room prefix, trunk or
    /// answer URL; `null` for park).
    pub fn to_json(&self) -> serde_json::Value {
        let (kind, name) = match self {
            Self::Agent(a) => ("agent", Some(a.as_str())),
            Self::Room(n) => ("room", Some(n.as_str())),
            Self::RoomPerCaller(p) => ("room_per_caller", Some(p.as_str())),
            Self::Forward(t) => ("forward", Some(t.as_str())),
            Self::Park => ("park", None),
            Self::AnswerUrl(a) => ("answer_url", Some(a.url.as_str())),
        };
        serde_json::json!({"type": kind, "name": name})
    }
}

/// `[[route]]`: which calls go where. First match wins.
#[derive(Debug, Clone, Serialize)]
pub struct Route {
    /// Name in logs and call records.
    pub name: String,
    /// Only calls arriving on this trunk.
    pub trunk: Option<String>,
    /// Dialled number (Request-URI user part).
    pub to: Option<NumberPattern>,
    /// Caller number (From user part).
    pub from: Option<NumberPattern>,
    /// Where the call goes.
    pub target: RouteTarget,
    /// Record the call.
    pub record: bool,
    /// Ring (180 Ringing) this long before answering; zero answers at once.
    pub ring_for: Duration,
    /// PIN the caller keys in by DTMF (rooms only).
    pub pin: Option<String>,
    /// `noise_suppression`: RNNoise on these directions of the caller's leg
    /// from the answer (Telnyx's `inbound` | `outbound` | `both` | `disabled`);
    /// `None` when not set (an agent route then uses its agent's).
    pub noise_suppression: Option<Suppression>,
    /// `record_format` (Telnyx's name on dial and answer): `wav` or `mp3` for
    /// this route's `record = true` recordings; `None` takes `[recording] format`.
    pub record_format: Option<RecordingFormat>,
}

/// Which directions of one leg are noise-suppressed (`media::suppress`; Telnyx
/// `suppression_start` `direction`): `inbound` is
/// what the leg's peer says (before the agent, the recording and the far leg
/// hear it), `outbound` what the box sends to the peer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Suppression {
    /// Audio from the peer.
    pub inbound: bool,
    /// Audio to the peer.
    pub outbound: bool,
}

impl Suppression {
    /// Nothing suppressed.
    pub const OFF: Suppression = Suppression { inbound: false, outbound: false };

    /// Telnyx's `direction` value: `inbound`, `outbound` or `both`; `None` for
    /// anything else.
    pub fn from_direction(direction: &str) -> Option<Self> {
        match direction {
            "inbound" => Some(Suppression { inbound: true, outbound: false }),
            "outbound" => Some(Suppression { inbound: false, outbound: true }),
            "both" => Some(Suppression { inbound: true, outbound: true }),
            _ => None,
        }
    }

    /// Whether any direction is suppressed.
    pub fn any(self) -> bool {
        self.inbound || self.outbound
    }

    /// Telnyx's name for the setting: `inbound`, `outbound`, `both` or
    /// `disabled`.
    pub fn direction(self) -> &'static str {
        match (self.inbound, self.outbound) {
            (true, true) => "both",
            (true, false) => "inbound",
            (false, true) => "outbound",
            (false, false) => "disabled",
        }
    }
}

/// Stereo or mono recordings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Channels {
    /// Stereo: caller left, other side right.
    Dual,
    /// Mono mix.
    Single,
}

/// The file format of recordings (`[recording] format`, `record_start`'s
/// `format`; Telnyx Call Control `record_start`: `wav` | `mp3`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum RecordingFormat {
    /// PCM16 WAV (RIFF), the default.
    #[default]
    Wav,
    /// MPEG Layer III, constant bit rate (32 kbit/s per channel).
    Mp3,
}

impl RecordingFormat {
    /// `"wav"` or `"mp3"`: the file extension and the key of `recording_urls`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Wav => "wav",
            Self::Mp3 => "mp3",
        }
    }

    /// The HTTP media type: `audio/wav` or `audio/mpeg` (RFC 3003).
    pub fn content_type(self) -> &'static str {
        match self {
            Self::Wav => "audio/wav",
            Self::Mp3 => "audio/mpeg",
        }
    }

    /// The format of a recording file, by its extension (`.mp3`, else WAV).
    pub fn of_path(path: &std::path::Path) -> Self {
        match path.extension().and_then(|e| e.to_str()) {
            Some(e) if e.eq_ignore_ascii_case("mp3") => Self::Mp3,
            _ => Self::Wav,
        }
    }
}

/// `[rooms]`: defaults of the local rooms that routes and the API create. The
/// room engine's options for a new room are `Rooms::options`, defined in `room`
/// (it builds `room::RoomOptions`; the config does not depend on the room engine).
#[derive(Debug, Clone, Serialize)]
pub struct Rooms {
    /// Participants a room holds (2–1000, default 50); `POST /v2/conferences`
    /// may set its own.
    pub max_participants: usize,
    /// How long an empty room waits for someone to rejoin before it ends
    /// (`conference.ended`); default 0: it ends with its last participant.
    pub linger: Duration,
}

/// `[webrtc]`: browsers joining rooms and calls (issue 12).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WebRtc {
    /// Accept WebRTC participants (default true).
    pub enabled: bool,
    /// WebRTC participants on the box at once (0–500, default 20); one more gets 503.
    pub max_participants: usize,
    /// Address the media sockets bind to; `0.0.0.0` (default) offers a host
    /// candidate on every non-loopback interface.
    pub address: std::net::IpAddr,
    /// The box's address as browsers outside its NAT see it (a 1:1 NAT or a
    /// forwarded port range): offered as a server-reflexive candidate beside
    /// each host candidate, same port, so LAN browsers keep the direct path.
    pub public_address: Option<std::net::IpAddr>,
    /// STUN servers (`stun:host:port`) for a server-reflexive candidate.
    pub stun_servers: Vec<String>,
    /// UDP ports the media sockets use, inclusive (`None`: the OS picks).
    pub port_range: Option<(u16, u16)>,
    /// No ICE consent (RFC 7675 §5.1: 30 s) from a browser for this long and it
    /// is removed (`reason: "consent_expired"`).
    pub consent_timeout: Duration,
    /// Lifetime of join tokens when the request names none (default 1h, at most 7 days).
    pub join_token_ttl: Duration,
    /// Browsers a join token may bring into one room (1–500, default 10); counted
    /// over every browser in that room. The API token is not capped by it.
    pub max_participants_per_room: usize,
}

/// `[media]`: where `playback_start` and conference `play` may read audio from.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Media {
    /// Files are read only from inside this directory (default `<data_dir>/media`).
    pub dir: PathBuf,
    /// Largest file or http(s) body read, in bytes (default 20 MiB).
    pub max_fetch_bytes: u64,
    /// Whole-fetch limit for an http(s) URL: connect, headers and body (default 10 s).
    pub fetch_timeout: Duration,
    /// Allow URLs whose host resolves to a loopback, private (RFC 1918, RFC 4193),
    /// link-local, CGNAT, unspecified or multicast address (default false).
    pub allow_private_urls: bool,
}

/// `[tts]`: the speech engine of `speak` and `gather_using_speak`, and its
/// prompt cache. Operator config only: no API request chooses the engine or its URL.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Tts {
    /// Which engine synthesizes.
    pub engine: TtsEngine,
    /// Voice when the request names none the engine can use: an espeak-ng voice
    /// (`en-us`, default `en`) or the HTTP engine's voice name (default `alloy`).
    pub voice: String,
    /// espeak-ng: the program (a name on `PATH` or an absolute path; default
    /// `espeak-ng`), run as `espeak-ng --stdout -v <voice> --stdin`.
    pub program: String,
    /// HTTP engine: the OpenAI-compatible `POST /v1/audio/speech` URL.
    pub url: Option<url::Url>,
    /// HTTP engine: `model` of the request (default `tts-1`).
    pub model: String,
    /// HTTP engine: bearer token (`SIPBRIDGE_TTS__API_KEY` keeps it out of the file).
    pub api_key: Option<Secret>,
    /// HTTP engine: `response_format`, `wav` (default) or `pcm` (16-bit LE mono
    /// at `pcm_sample_rate`).
    pub response_format: TtsFormat,
    /// Rate of `pcm` answers, Hz (default 24000, OpenAI's).
    pub pcm_sample_rate: u32,
    /// Whole-synthesis limit per text (subprocess run, or request and body;
    /// default 10 s).
    pub timeout: Duration,
    /// Synthesized prompts, one file per (engine, voice, language, text) (default
    /// `<data_dir>/tts-cache`).
    pub cache_dir: PathBuf,
    /// Cache size beyond which the least recently used prompts go (default
    /// 64 MiB; `0` turns the cache off).
    pub cache_max_bytes: u64,
}

/// `[tts] engine`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum TtsEngine {
    /// The local `espeak-ng` program.
    #[serde(rename = "espeak-ng")]
    EspeakNg,
    /// An OpenAI-compatible HTTP endpoint.
    #[serde(rename = "http")]
    Http,
}

/// `[tts] response_format` of the HTTP engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum TtsFormat {
    /// A WAV file (16-bit PCM, any rate).
    #[serde(rename = "wav")]
    Wav,
    /// Raw 16-bit little-endian mono PCM.
    #[serde(rename = "pcm")]
    Pcm,
}

/// `[recording]`
#[derive(Debug, Clone, Serialize)]
pub struct Recording {
    /// Master switch; routes still choose with `record = true`.
    pub enabled: bool,
    /// Where WAV files go.
    pub dir: PathBuf,
    /// Dual or single.
    pub channels: Channels,
    /// `wav` (default) or `mp3`; `record_start` may choose per span.
    pub format: RecordingFormat,
    /// Delete recordings older than this; `None` keeps them.
    pub retention: Option<Duration>,
    /// Oldest recordings go first beyond this.
    pub max_disk_usage: DiskBudget,
}

/// `[recording.upload]`: where finished recordings are uploaded (any service with
/// the S3 API: AWS S3, MinIO, Cloudflare R2, Backblaze B2, GCS interoperability).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RecordingUpload {
    /// The S3 endpoint, e.g. `https://s3.eu-west-1.amazonaws.com` or
    /// `http://minio.lan:9000`.
    pub endpoint: url::Url,
    /// SigV4 signing region (`us-east-1` by default; R2 uses `auto`).
    pub region: String,
    /// Bucket name (3 to 63 lowercase letters, digits, `-`, `.`).
    pub bucket: String,
    /// Object-key prefix with placeholders `{node}`, `{yyyy}`, `{mm}`, `{dd}`,
    /// `{call_session_id}`, `{call_control_id}`, `{trunk}`; the key is the
    /// expanded prefix followed by `<recording_id>.wav`.
    pub prefix: String,
    /// Access key id (SigV4 credential).
    pub access_key_id: Secret,
    /// Secret access key (`SIPBRIDGE_RECORDING__UPLOAD__SECRET_ACCESS_KEY` keeps it
    /// out of the file).
    pub secret_access_key: Secret,
    /// Path-style URLs (`endpoint/bucket/key`, MinIO and most self-hosted
    /// servers) instead of virtual-hosted ones (`bucket.endpoint/key`).
    pub path_style: bool,
    /// When the local file goes after its upload: `Some(0)` at once, `Some(d)` that
    /// long after the upload, `None` ("never") only by `[recording] retention`.
    pub delete_local_after: Option<Duration>,
    /// Lifetime of the presigned GET URLs in `call.recording.uploaded` (at most
    /// 7 days, SigV4's limit).
    pub url_lifetime: Duration,
    /// Files larger than this go up in parts of this size (multipart upload,
    /// resumable part by part); 5 MiB to 5 GiB, default 8 MiB.
    pub part_size: u64,
}

/// `[webhooks]`
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Webhooks {
    /// Where events are POSTed; `None` disables webhooks (calls are still recorded in the store).
    pub url: Option<url::Url>,
    /// Used after repeated failures of `url`.
    pub failover_url: Option<url::Url>,
    /// Ed25519 key (PKCS#8 PEM) written by `sipbridge keygen`.
    pub signing_key: PathBuf,
    /// Per-request timeout.
    pub timeout: Duration,
    /// Undelivered events older than this are dead-lettered (kept, not deleted).
    pub max_age: Duration,
    /// Delay before the first retry of a failed event; doubles per failure (with
    /// jitter: uniform in [d/2, d]). Default 1 s.
    pub retry_initial: Duration,
    /// Cap of the doubling retry delay. Default 5 min.
    pub retry_max: Duration,
    /// POSTs of an event to `url` before it goes to `failover_url` (when set).
    /// Default 3.
    pub failover_after: u32,
    /// Most POSTs in flight at once, over all calls. Default 16.
    pub max_in_flight: usize,
    /// Delivered events are deleted from the outbox this long after delivery;
    /// `None` ("forever") keeps them. Default 7 days. Pending and dead-lettered
    /// events are never deleted.
    pub delivered_retention: Option<Duration>,
}

/// `[api]`
#[derive(Debug, Clone, Serialize)]
pub struct Api {
    /// The `[api]` section is in the config: the API is served. Without it the
    /// box opens no HTTP port (nothing is taken from other software on the box).
    pub enabled: bool,
    /// HTTP listen address.
    pub listen: SocketAddr,
    /// Bearer token; without it only `/healthz` answers.
    pub token: Option<Secret>,
    /// PEM certificate chain for HTTPS (leaf first); set together with
    /// `tls_private_key`, or neither (plain HTTP).
    pub tls_certificate: Option<PathBuf>,
    /// PEM private key of `tls_certificate`.
    pub tls_private_key: Option<PathBuf>,
    /// Connections served at once (default 256); one more is closed at once.
    pub max_connections: usize,
    /// Longest a client may take to send a request's headers, and longest an
    /// idle keep-alive connection stays open (default 10 s).
    pub header_read_timeout: Duration,
}

impl Api {
    /// Whether the API is served over TLS (both PEM files are set).
    pub fn tls(&self) -> bool {
        self.tls_certificate.is_some() && self.tls_private_key.is_some()
    }

    /// The API's base URL as clients reach it, without a trailing slash:
    /// `https://<listen>` with TLS, `http://<listen>` without (used for
    /// `recording_urls` in `call.recording.saved`).
    pub fn base_url(&self) -> String {
        format!("{}://{}", if self.tls() { "https" } else { "http" }, self.listen)
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// journald under systemd (`JOURNAL_STREAM` set), text otherwise.
    Auto,
    /// Human-readable lines on stderr.
    Text,
    /// One JSON object per line on stderr.
    Json,
    /// Structured fields to the systemd journal.
    Journald,
}

/// `[log]`
#[derive(Debug, Clone, Serialize)]
pub struct Log {
    /// `error`, `warn`, `info`, `debug` or `trace` (`RUST_LOG` overrides).
    pub level: String,
    /// Output format.
    pub format: LogFormat,
}

impl Config {
    /// The trunk named `name`.
    pub fn trunk(&self, name: &str) -> Option<&Trunk> {
        self.trunks.iter().find(|t| t.name == name)
    }

    /// The agent named `name`.
    pub fn agent(&self, name: &str) -> Option<&Agent> {
        self.agents.iter().find(|a| a.name == name)
    }
}
