//! Browser participants over WebRTC (issue 12): a browser joins a local room, or
//! listens to / barges in on one call, with WHIP-style signaling on the control
//! API (one SDP offer in, one SDP answer out, RFC 9725 §4.2) and media over ICE
//! (RFC 8445, host candidates; optional 1:1 NAT address and STUN), DTLS-SRTP
//! (RFC 5763/5764) and Opus (RFC 7587, WebRTC's mandatory codec, RFC 7874 §3)
//! with G.711 (PCMU/PCMA, RFC 3551 §4.5.14) as the fallback every browser offers.
//!
//! The stack is webrtc-rs (`webrtc` on its sans-IO core `rtc`, ring crypto). A
//! browser is a room participant like a SIP leg ([`crate::room::Participant::webrtc`]).
//! The codec is the first of the offer's formats the box speaks
//! ([`offered_codec`]): Opus (`opus/48000/2`) when the build has it — browsers
//! list it first — else PCMU or PCMA. The answer then carries Opus
//! (`minptime=10;useinbandfec=1`) followed by the offered G.711 laws, or the one
//! law alone.
//!
//! - **Opus**: the browser joins its room as a wideband (16 kHz) participant.
//!   Its packets are decoded in order (`media::codec::Decoder`, 16 kHz mono out)
//!   and handed to the room as 16 kHz `L16Wide` chunks at their RTP timestamp
//!   (48 kHz clock ÷ 3); a gap of up to 5 sequence numbers is filled by the
//!   decoder (the packet just before the gap's end from that packet's in-band
//!   FEC, RFC 6716 §2.1.7, the others by concealment), a duplicate or a packet older than the last decoded
//!   is dropped, and a payload the decoder rejects is dropped and counted (never
//!   a panic). The room's 20 ms mix-minus (320 samples) is Opus-encoded
//!   (`media::codec::Encoder`) and sent with the timestamp advancing 960 per
//!   frame. A G.711 packet the browser might send instead (a codec of the
//!   answer) is handed over as G.711; the room converts it.
//! - **G.711**: 8 kHz, as the SIP legs of G.711 calls: the payload bytes go to
//!   the room as they are, and its 160-sample frames are encoded by table.
//!
//! Neither direction allocates or locks per packet in this module: the decoder,
//! encoder and their buffers are made when the track starts, chunks are
//! fixed-size values sent with `try_send`, and payloads are cut from one
//! 64 KiB buffer (`bytes::BytesMut`, reused once webrtc-rs lets go of earlier
//! packets). webrtc-rs itself (SRTP, its interceptors, `write_rtp`) has its own
//! costs per packet.
//!
//! A session ends when the browser leaves (`DELETE` on its resource, or the
//! page's own leave), when its connection fails — ICE never connects
//! (`ice_failed`), DTLS never completes (`dtls_failed`), or the browser stops
//! answering ICE consent checks (`consent_expired`, RFC 7675 §5.1) — or when the
//! room ends or the call it monitors ends. Each is a
//! `conference.participant.left` with that `reason` (monitor rooms are silent).

pub mod token;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use uuid::Uuid;

use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodecParameters, RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
};
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::media_stream::{MediaStreamTrack, Track};
use webrtc::peer_connection::{
    MediaEngine, PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler, RTCConfigurationBuilder,
    RTCIceConnectionState, RTCIceGatheringState, RTCIceServer, RTCPeerConnectionState, RTCSessionDescription, Registry,
    SettingEngineBuilder, register_default_interceptors,
};

use crate::call::control::{CallRegistry, Lookup};
use crate::call::rooms::WEBRTC_PREFIX;
use crate::config;
use crate::media::codec::{Decoder, Encoder, MAX_FRAME_SAMPLES, MAX_PAYLOAD_BYTES};
use crate::media::g711::G711;
use crate::media::pcm::{CHUNK_BYTES, Chunk, ChunkFormat, Direction, PcmFrame, PcmPort, room_pair};
use crate::room::{LeaveReason, Participant, ParticipantHandle, Rate, RoomOptions, Rooms};
use crate::sdp::codec::AudioCodec;

/// Chunks buffered from a browser toward its room (about 320 ms of G.711).
const BROWSER_DEPTH: usize = 16;

/// The same for an Opus browser, whose 16 kHz chunks hold 5 ms each.
const WIDE_BROWSER_DEPTH: usize = 4 * BROWSER_DEPTH;

/// The Opus fmtp of the answer (RFC 7587 §6.1): 10 ms packets or longer, in-band
/// FEC welcome. Browsers offer the same.
const OPUS_FMTP: &str = "minptime=10;useinbandfec=1";

/// RTP clock units (48 kHz) per sample at 16 kHz, for Opus.
const OPUS_UNITS_PER_SAMPLE: u32 = 3;

/// Lost Opus packets in a row filled by the decoder's concealment (100 ms of
/// 20 ms packets); a longer gap is left to the room's jitter buffer.
const MAX_CONCEALED: u16 = 5;

/// Sequence numbers this far from the last one (either way) start the stream
/// anew (a new SSRC, a restarted sender) instead of counting as loss or as a
/// reordered packet.
const SEQUENCE_JUMP: i16 = 100;

/// Bytes of the buffer RTP payloads toward the browser are cut from.
const PAYLOAD_POOL: usize = 64 * 1024;

/// Longest wait for our ICE candidates before the answer goes out without the
/// rest (a STUN server that does not answer must not hold the API call).
const GATHER_LIMIT: Duration = Duration::from_secs(2);

/// What a browser joins.
#[derive(Debug, Clone)]
pub enum Target {
    /// A room by id or name; a name that is no room yet creates it.
    Room(String),
    /// One call: `talk` = barge-in (the call's parties hear the browser),
    /// otherwise listen only.
    Call {
        /// The call's `call_control_id`.
        call_control_id: String,
        /// Speak into the call.
        talk: bool,
    },
}

/// Why a browser could not join.
#[derive(Debug, thiserror::Error)]
pub enum WebRtcError {
    /// `[webrtc] enabled = false`.
    #[error("WebRTC is disabled on this box ([webrtc] enabled = false)")]
    Disabled,
    /// The box holds `[webrtc] max_participants` browsers already.
    #[error("the box already holds its {0} WebRTC participants ([webrtc] max_participants)")]
    Full(usize),
    /// The room holds `[webrtc] max_participants_per_room` browsers already (join
    /// token joins only).
    #[error("the room already holds its {0} WebRTC participants ([webrtc] max_participants_per_room)")]
    RoomFull(usize),
    /// The offer is not a usable WebRTC audio offer; the text says why.
    #[error("bad SDP offer: {0}")]
    BadSdp(String),
    /// No such room or call, or it ended.
    #[error("{0}")]
    NotFound(String),
    /// The room refused the participant (full, ended).
    #[error("{0}")]
    Refused(String),
    /// The WebRTC stack failed (sockets, certificates).
    #[error("WebRTC could not start: {0}")]
    Stack(String),
}

/// A browser in a room, as the API answers it.
#[derive(Debug, Clone)]
pub struct Joined {
    /// The session resource's id (`/v2/webrtc/{session_id}`).
    pub session_id: Uuid,
    /// The participant id in the room and its events (`webrtc:{session_id}`).
    pub participant_id: String,
    /// The room's id.
    pub conference_id: Uuid,
    /// The room's name.
    pub room: String,
    /// The SDP answer.
    pub answer: String,
    /// The session's own secret (32 random bytes, base64url): with it, and only
    /// with it or the API token, the session can be ended (`DELETE` on its
    /// `Location`, which carries it as `?secret=`).
    pub secret: String,
}

/// A cap on browsers in one room for joins made with a join token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomCap {
    /// The room's name (as the token names it).
    pub room: String,
    /// Browsers allowed in it (`[webrtc] max_participants_per_room`).
    pub max: usize,
}

/// A session as listed by the registry.
#[derive(Debug, Clone)]
pub struct SessionInfo {
    /// The room the browser is in.
    pub room: String,
    /// The room's id.
    pub conference_id: Uuid,
    /// Its participant id.
    pub participant_id: String,
}

struct Entry {
    info: SessionInfo,
    stop: mpsc::Sender<()>,
    secret: String,
}

struct Inner {
    config: config::WebRtc,
    room_options: RoomOptions,
    rooms: Rooms,
    calls: CallRegistry,
    sessions: Mutex<HashMap<Uuid, Entry>>,
}

/// The box's WebRTC sessions; cheap to clone.
#[derive(Clone)]
pub struct WebRtcHub {
    inner: Arc<Inner>,
}

impl WebRtcHub {
    /// A hub for `config`, joining browsers to `rooms` (new rooms get
    /// `room_options`) and monitoring `calls`. Join tokens are not the hub's: the
    /// API keys them from the API token in force ([`token::JoinTokens::new`]).
    pub fn new(config: config::WebRtc, room_options: RoomOptions, rooms: Rooms, calls: CallRegistry) -> Self {
        let inner = Inner { config, room_options, rooms, calls, sessions: Mutex::default() };
        WebRtcHub { inner: Arc::new(inner) }
    }

    /// Whether `given` is session `id`'s secret (constant-time compare); false
    /// when there is no such session.
    pub fn secret_matches(&self, id: Uuid, given: &str) -> bool {
        use subtle::ConstantTimeEq;
        self.sessions().get(&id).is_some_and(|e| bool::from(e.secret.as_bytes().ct_eq(given.as_bytes())))
    }

    /// `[webrtc] join_token_ttl`.
    pub fn default_token_ttl(&self) -> Duration {
        self.inner.config.join_token_ttl
    }

    /// Browsers on the box now.
    pub fn active(&self) -> usize {
        self.sessions().len()
    }

    /// A session by id.
    pub fn session(&self, id: Uuid) -> Option<SessionInfo> {
        self.sessions().get(&id).map(|e| e.info.clone())
    }

    fn sessions(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, Entry>> {
        // A panic while holding this lock leaves a plain map: keep using it.
        self.inner.sessions.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Ends session `id` (the browser leaves, reason `left`). False when there is
    /// no such session.
    pub fn leave(&self, id: Uuid) -> bool {
        match self.sessions().get(&id) {
            Some(e) => {
                let _ = e.stop.try_send(());
                true
            }
            None => false,
        }
    }

    /// Answers a browser's SDP `offer` and joins it to `target`: the answer
    /// carries our ICE candidates (gathered before it returns: no trickle).
    ///
    /// # Errors
    /// [`WebRtcError`]: disabled, box full, bad SDP (with the reason), no such
    /// room or call, room refused, stack failure.
    /// With `cap` (a join token's join), the room may hold at most `cap.max`
    /// browsers, counting those still joining.
    pub async fn join(&self, offer: &str, target: Target, cap: Option<RoomCap>) -> Result<Joined, WebRtcError> {
        let cfg = &self.inner.config;
        if !cfg.enabled {
            return Err(WebRtcError::Disabled);
        }
        let codec = offered_codec(offer)?;
        let session_id = Uuid::new_v4();
        let participant_id = format!("{WEBRTC_PREFIX}{session_id}");
        let secret = new_secret()?;
        let (stop_tx, stop_rx) = mpsc::channel(1);
        {
            // Reserve the slot now, so concurrent offers cannot overshoot the limit.
            let mut sessions = self.sessions();
            if sessions.len() >= cfg.max_participants {
                return Err(WebRtcError::Full(cfg.max_participants));
            }
            let room = match &cap {
                Some(cap) => {
                    let in_room = sessions.values().filter(|e| e.info.room == cap.room).count();
                    if in_room >= cap.max {
                        return Err(WebRtcError::RoomFull(cap.max));
                    }
                    cap.room.clone()
                }
                None => String::new(),
            };
            let info = SessionInfo { room, conference_id: Uuid::nil(), participant_id: participant_id.clone() };
            sessions.insert(session_id, Entry { info, stop: stop_tx, secret: secret.clone() });
        }
        // Frees the slot if the join fails, or if the request is dropped half-way
        // (the browser gave up): a started session frees it itself when it ends.
        let mut slot = Slot { hub: self, id: session_id, armed: true };
        let mut joined = self.start(session_id, &participant_id, offer, codec, target, stop_rx).await?;
        joined.secret = secret;
        slot.armed = false;
        if let Some(e) = self.sessions().get_mut(&session_id) {
            e.info.room = joined.room.clone();
            e.info.conference_id = joined.conference_id;
        }
        Ok(joined)
    }

    async fn start(
        &self,
        session_id: Uuid,
        participant_id: &str,
        offer: &str,
        codec: BrowserCodec,
        target: Target,
        stop: mpsc::Receiver<()>,
    ) -> Result<Joined, WebRtcError> {
        let (room, monitored, listen_only) = self.resolve(&target).await?;
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let wide = codec.codec.is_wideband();
        let (mut port, endpoint) = room_pair(if wide { WIDE_BROWSER_DEPTH } else { BROWSER_DEPTH }, true, false);
        let rate = if wide { Rate::Wideband } else { Rate::Narrowband };
        port.sample_rate = rate.hz();
        // The encoder is made before anything joins: a build without Opus never
        // chose it ([`offered_codec`]), but an error here must refuse, not panic.
        let outbound = Outbound::new(codec).map_err(|e| WebRtcError::Stack(e.to_string()))?;
        // The room's mixes for the browser: taken here, the session reads them.
        let frames = port.frames.take().ok_or_else(|| WebRtcError::Stack("no frame channel for the room".into()))?;
        let (gathered_tx, gathered) = tokio::sync::watch::channel(false);
        let handler = Arc::new(Handler {
            events: events_tx,
            gathered: gathered_tx,
            chunks: port.chunks.clone(),
            forward: !listen_only,
            codec,
        });
        let pc = self.peer_connection(codec, handler).await?;
        let track = Arc::new(TrackLocalStaticRTP::new(MediaStreamTrack::new(
            format!("sipbridge-{session_id}"),
            format!("room-{session_id}"),
            "sipbridge room".to_string(),
            RtpCodecKind::Audio,
            vec![RTCRtpEncodingParameters {
                rtp_coding_parameters: RTCRtpCodingParameters { ssrc: Some(rand_u32()), ..Default::default() },
                codec: codec_of(codec.codec, codec.payload_type).rtp_codec,
                ..Default::default()
            }],
        )));
        let answer = match negotiate(&pc, Arc::clone(&track) as Arc<dyn TrackLocal>, offer, gathered).await {
            Ok(a) => match self.inner.config.public_address {
                Some(public) => with_public_address(&a, public),
                None => a,
            },
            Err(e) => {
                let _ = pc.close().await;
                return Err(e);
            }
        };
        let mut p = Participant::webrtc(participant_id.to_string(), endpoint).with_rate(rate);
        p.muted = listen_only;
        let joined = match &room {
            RoomChoice::Existing(id) => self.inner.rooms.join_existing(*id, p).await,
            RoomChoice::Named(name, options) => self.inner.rooms.join(name, *options, p).await,
        };
        let handle = match joined {
            Ok(h) => h,
            Err(refused) => {
                let _ = pc.close().await;
                return Err(WebRtcError::Refused(refused.error.to_string()));
            }
        };
        let joined = Joined {
            session_id,
            participant_id: participant_id.to_string(),
            conference_id: handle.conference_id(),
            room: handle.room_name().to_string(),
            answer,
            secret: String::new(),
        };
        tracing::info!(
            session = %session_id,
            room = %joined.room,
            codec = codec.codec.encoding_name(),
            listen_only,
            "WebRTC participant joined"
        );
        // The room is the only sender of frames: when it drops the participant
        // (room ended, `leave` by the API), `frames` closes.
        let PcmPort { control, playback, chunks, .. } = port;
        drop((control, playback));
        let session = Session {
            hub: self.clone(),
            session_id,
            pc,
            track,
            handle: Some(handle),
            frames,
            _chunks: chunks,
            outbound,
            events: events_rx,
            stop,
            monitored,
            consent_timeout: self.inner.config.consent_timeout,
        };
        tokio::spawn(session.run());
        Ok(joined)
    }

    /// The room a target joins, the call it monitors, and whether the browser
    /// only listens.
    async fn resolve(&self, target: &Target) -> Result<(RoomChoice, Option<String>, bool), WebRtcError> {
        let rooms = &self.inner.rooms;
        match target {
            Target::Room(id_or_name) => match rooms.find(id_or_name) {
                Some(r) => Ok((RoomChoice::Existing(r.conference_id), None, false)),
                None if Uuid::parse_str(id_or_name).is_ok() => {
                    Err(WebRtcError::NotFound(format!("no conference {id_or_name}")))
                }
                None => Ok((RoomChoice::Named(id_or_name.clone(), self.inner.room_options), None, false)),
            },
            Target::Call { call_control_id, talk } => {
                match self.inner.calls.get(call_control_id) {
                    Lookup::Live(_) => {}
                    _ => return Err(WebRtcError::NotFound(format!("no live call {call_control_id}"))),
                }
                // A call already in a room (a conference, a bridge) is monitored
                // there; otherwise it moves into a private monitor room first.
                for r in rooms.list() {
                    let Ok(ps) = rooms.participants(r.conference_id).await else { continue };
                    if ps.iter().any(|p| p.participant_id == *call_control_id) {
                        return Ok((RoomChoice::Existing(r.conference_id), Some(call_control_id.clone()), !talk));
                    }
                }
                let name = format!("{}{call_control_id}", crate::call::rooms::MONITOR_PREFIX);
                let join = crate::call::control::RoomJoin {
                    room: crate::call::control::RoomRef::Name(name.clone()),
                    options: RoomOptions {
                        max_participants: 2 + self.inner.config.max_participants.max(1),
                        ..Default::default()
                    },
                    muted: false,
                    held: false,
                };
                match self.inner.calls.command(call_control_id, crate::call::control::Action::JoinRoom(join)).await {
                    Some(Ok(())) => {}
                    Some(Err(e)) => {
                        return Err(WebRtcError::Refused(format!("the call could not be monitored: {}", e.detail)));
                    }
                    None => return Err(WebRtcError::NotFound(format!("no live call {call_control_id}"))),
                }
                let room = rooms
                    .find(&name)
                    .ok_or_else(|| WebRtcError::NotFound(format!("no live call {call_control_id}")))?;
                Ok((RoomChoice::Existing(room.conference_id), Some(call_control_id.clone()), !talk))
            }
        }
    }

    async fn peer_connection(
        &self,
        codec: BrowserCodec,
        handler: Arc<Handler>,
    ) -> Result<Arc<dyn PeerConnection>, WebRtcError> {
        let cfg = &self.inner.config;
        let stack = |e: webrtc::error::Error| WebRtcError::Stack(e.to_string());
        let mut tries = match cfg.port_range {
            Some((a, b)) => usize::from(b - a).min(16) + 1,
            None => 1,
        };
        loop {
            let mut media = MediaEngine::default();
            for c in codec.answered() {
                media.register_codec(c, RtpCodecKind::Audio).map_err(stack)?;
            }
            let registry = register_default_interceptors(Registry::new(), &mut media).map_err(stack)?;
            // ICE consent (RFC 7675): checks every second; disconnected after a
            // third of the timeout without a response (never under 2.5 checks, or
            // a healthy connection flaps between checks), failed at the timeout.
            let keepalive = Duration::from_secs(1);
            let disconnected = (cfg.consent_timeout / 3).max(keepalive * 5 / 2).min(cfg.consent_timeout / 2);
            let mut settings = SettingEngineBuilder::new().with_ice_timeouts(
                Some(disconnected),
                Some(cfg.consent_timeout - disconnected),
                Some(keepalive),
            );
            if cfg.address.is_loopback() {
                settings = settings.with_include_loopback_candidate(true);
            }
            let ice_servers = if cfg.stun_servers.is_empty() {
                Vec::new()
            } else {
                vec![RTCIceServer { urls: cfg.stun_servers.clone(), ..Default::default() }]
            };
            let port = match cfg.port_range {
                Some((a, b)) => a + (rand_u32() % (u32::from(b - a) + 1)) as u16,
                None => 0,
            };
            let built = PeerConnectionBuilder::new()
                .with_configuration(RTCConfigurationBuilder::new().with_ice_servers(ice_servers).build())
                .with_media_engine(media)
                .with_setting_engine(settings.build())
                .with_interceptor_registry(registry)
                .with_handler(Arc::clone(&handler) as Arc<dyn PeerConnectionEventHandler>)
                .with_udp_addrs(vec![SocketAddr::new(cfg.address, port)])
                .build()
                .await;
            match built {
                Ok(pc) => return Ok(Arc::new(pc)),
                Err(e) if tries > 1 => {
                    tracing::debug!(port, error = %e, "WebRTC socket: trying another port");
                    tries -= 1;
                }
                Err(e) => return Err(stack(e)),
            }
        }
    }
}

/// A reserved place in the hub's sessions, given back on drop while armed.
/// 32 random bytes, base64url: a session's secret.
fn new_secret() -> Result<String, WebRtcError> {
    use base64::Engine;
    let mut k = [0u8; 32];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut k)
        .map_err(|_| WebRtcError::Stack("no random numbers for the session secret".into()))?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(k))
}

struct Slot<'a> {
    hub: &'a WebRtcHub,
    id: Uuid,
    armed: bool,
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.hub.sessions().remove(&self.id);
        }
    }
}

enum RoomChoice {
    Existing(Uuid),
    Named(String, RoomOptions),
}

fn rand_u32() -> u32 {
    let mut b = [0u8; 4];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b);
    u32::from_be_bytes(b)
}

/// The codec a browser's audio uses, chosen from its offer ([`offered_codec`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BrowserCodec {
    /// Opus, PCMU or PCMA.
    pub codec: AudioCodec,
    /// Its payload type in the offer (static 0 and 8 for G.711; Opus's is
    /// dynamic: 111 in Chromium, 109 in Firefox).
    pub payload_type: u8,
}

impl BrowserCodec {
    /// The codecs the answer may carry, the chosen one first: Opus with PCMU and
    /// PCMA as fallbacks, or the one G.711 law. webrtc-rs answers those of them
    /// the offer has, in the offer's order, with the offer's payload types.
    fn answered(self) -> Vec<RTCRtpCodecParameters> {
        let mut codecs = vec![codec_of(self.codec, self.payload_type)];
        if self.codec == AudioCodec::Opus {
            for law in [G711::Pcmu, G711::Pcma] {
                codecs.push(codec_of(law.into(), law.payload_type()));
            }
        }
        codecs
    }
}

/// The webrtc-rs parameters of `codec` at `payload_type`: G.711 at 8000 Hz mono,
/// Opus at 48000 Hz with 2 channels (RFC 7587 §7) and [`OPUS_FMTP`].
fn codec_of(codec: AudioCodec, payload_type: u8) -> RTCRtpCodecParameters {
    let opus = codec == AudioCodec::Opus;
    RTCRtpCodecParameters {
        rtp_codec: RTCRtpCodec {
            mime_type: format!("audio/{}", codec.encoding_name()),
            clock_rate: codec.rtp_clock_rate(),
            channels: codec.rtpmap_channels().map_or(1, u16::from),
            sdp_fmtp_line: if opus { OPUS_FMTP.to_string() } else { String::new() },
            rtcp_feedback: vec![],
        },
        payload_type,
    }
}

/// Whether this build decodes and encodes Opus (`media::codec`).
fn opus_available() -> bool {
    Decoder::new(AudioCodec::Opus).is_ok() && Encoder::new(AudioCodec::Opus).is_ok()
}

/// Checks that `offer` is a WebRTC audio offer this box can answer and picks the
/// browser's codec: the first of its audio formats, in its order of preference
/// (RFC 3264 §6.1), that is `opus/48000/2` (when this build has Opus), PCMU/8000
/// (0) or PCMA/8000 (8).
///
/// # Errors
/// [`WebRtcError::BadSdp`] naming what is wrong: not SDP, no audio, no ICE
/// credentials or DTLS fingerprint, no codec of the box.
pub fn offered_codec(offer: &str) -> Result<BrowserCodec, WebRtcError> {
    choose_codec(offer, opus_available())
}

fn choose_codec(offer: &str, opus: bool) -> Result<BrowserCodec, WebRtcError> {
    let bad = |s: &str| Err(WebRtcError::BadSdp(s.to_string()));
    if offer.trim().is_empty() {
        return bad("the body is empty; send the offer as application/sdp");
    }
    let sdp =
        crate::sdp::SessionDescription::parse(offer.as_bytes()).map_err(|e| WebRtcError::BadSdp(e.to_string()))?;
    let Some(audio) = sdp.media.iter().find(|m| m.media == "audio" && m.port != 0) else {
        return bad("no audio m= line");
    };
    if !audio.proto.to_ascii_uppercase().contains("SAVPF") && !audio.proto.to_ascii_uppercase().contains("SAVP") {
        return bad(&format!("audio transport {:?} is not DTLS-SRTP (UDP/TLS/RTP/SAVPF)", audio.proto));
    }
    let text = offer.to_ascii_lowercase();
    if !text.contains("a=ice-ufrag:") || !text.contains("a=ice-pwd:") {
        return bad("no ICE credentials (a=ice-ufrag, a=ice-pwd)");
    }
    if !text.contains("a=fingerprint:") {
        return bad("no DTLS fingerprint (a=fingerprint)");
    }
    audio
        .formats
        .iter()
        .find_map(|f| {
            let name = f.encoding_name.as_deref()?;
            let codec = AudioCodec::from_rtpmap(name, f.clock_rate_hz, Some(f.channels))?;
            let usable = match codec.g711() {
                Some(law) => f.payload_type == law.payload_type(),
                None => opus && codec == AudioCodec::Opus,
            };
            usable.then_some(BrowserCodec { codec, payload_type: f.payload_type })
        })
        .map_or_else(
            || {
                let opus = if opus { "opus/48000/2, " } else { "" };
                bad(&format!("the audio offers no codec of this box ({opus}PCMU/8000 (0), PCMA/8000 (8))"))
            },
            Ok,
        )
}

/// Applies the offer, answers it and waits (at most [`GATHER_LIMIT`]) for our
/// candidates; returns the answer's SDP.
async fn negotiate(
    pc: &Arc<dyn PeerConnection>,
    track: Arc<dyn TrackLocal>,
    offer: &str,
    mut gathered: tokio::sync::watch::Receiver<bool>,
) -> Result<String, WebRtcError> {
    let bad = |e: webrtc::error::Error| WebRtcError::BadSdp(e.to_string());
    let stack = |e: webrtc::error::Error| WebRtcError::Stack(e.to_string());
    pc.add_track(track).await.map_err(stack)?;
    pc.set_remote_description(RTCSessionDescription::offer(offer.to_string()).map_err(bad)?).await.map_err(bad)?;
    let answer = pc.create_answer(None).await.map_err(bad)?;
    pc.set_local_description(answer).await.map_err(stack)?;
    if tokio::time::timeout(GATHER_LIMIT, gathered.wait_for(|done| *done)).await.is_err() {
        tracing::debug!("WebRTC answer sent before ICE gathering completed ({GATHER_LIMIT:?})");
    }
    pc.local_description()
        .await
        .map(|d| d.sdp)
        .ok_or_else(|| WebRtcError::Stack("no local description after the answer".into()))
}

/// `answer` with a server-reflexive candidate at `public` beside each host
/// candidate of the same IP family (same port: a 1:1 NAT or a forwarded port
/// range maps it to the box), so browsers beyond the NAT reach the box and LAN
/// browsers keep the direct path (RFC 8445 §5.1.1.2: a server-reflexive candidate
/// with its base as `raddr`/`rport`). webrtc-rs 0.21 stores but never applies its
/// own 1:1 NAT setting, hence this.
fn with_public_address(answer: &str, public: IpAddr) -> String {
    // type preference 100 (server reflexive), local preference 65535, component 1.
    const PRIORITY: u32 = (100 << 24) | (65_535 << 8) | 255;
    let mut out = String::with_capacity(answer.len() + 256);
    for (i, line) in answer.split_inclusive('\n').enumerate() {
        out.push_str(line);
        let Some(cand) = line.trim_end().strip_prefix("a=candidate:") else { continue };
        let f: Vec<&str> = cand.split_whitespace().collect();
        // foundation component transport priority address port "typ" type ...
        if f.len() < 8 || f[6] != "typ" || f[7] != "host" || !f[2].eq_ignore_ascii_case("udp") {
            continue;
        }
        let Ok(base) = f[4].parse::<IpAddr>() else { continue };
        if base.is_ipv4() != public.is_ipv4() || base == public {
            continue;
        }
        let eol = if line.ends_with("\r\n") { "\r\n" } else { "\n" };
        out.push_str(&format!(
            "a=candidate:sbnat{i} {} udp {PRIORITY} {public} {} typ srflx raddr {base} rport {}{eol}",
            f[1], f[5], f[5]
        ));
    }
    out
}

/// What the peer connection reports to its session.
enum PcEvent {
    Ice(RTCIceConnectionState),
    Peer(RTCPeerConnectionState),
}

struct Handler {
    events: mpsc::UnboundedSender<PcEvent>,
    gathered: tokio::sync::watch::Sender<bool>,
    chunks: mpsc::Sender<Chunk>,
    forward: bool,
    codec: BrowserCodec,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            self.gathered.send_replace(true);
        }
    }

    async fn on_ice_connection_state_change(&self, state: RTCIceConnectionState) {
        let _ = self.events.send(PcEvent::Ice(state));
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        let _ = self.events.send(PcEvent::Peer(state));
    }

    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        let chunks = self.chunks.clone();
        // Listen-only: nothing of the browser reaches the room (its packets are
        // still taken off the track, so that nothing queues up behind it).
        let made = if self.forward { Some(Inbound::new(self.codec)) } else { None };
        let mut inbound = match made.transpose() {
            Ok(i) => i,
            Err(e) => {
                tracing::warn!(error = %e, "WebRTC track: no decoder, the browser is not heard");
                None
            }
        };
        tokio::spawn(async move {
            let mut dropped = 0u64;
            while let Some(event) = track.poll().await {
                let TrackRemoteEvent::OnRtpPacket(packet) = event else { continue };
                let Some(inbound) = inbound.as_mut() else { continue };
                let h = &packet.header;
                inbound.packet(h.payload_type, h.sequence_number, h.timestamp, &packet.payload, |c| {
                    if chunks.try_send(c).is_err() {
                        dropped += 1;
                    }
                });
            }
            let stats = inbound.map(|i| i.stats).unwrap_or_default();
            if dropped > 0 || stats.rejected > 0 {
                tracing::debug!(dropped, ?stats, "WebRTC track ended: chunks dropped toward the room, packets refused");
            }
        });
    }
}

/// What a browser's received audio did (for the log at its end).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct InboundStats {
    /// Opus payloads the decoder refused (malformed: dropped).
    rejected: u64,
    /// Opus packets dropped as duplicates or older than the last decoded.
    late: u64,
    /// Lost Opus packets filled by the decoder's concealment.
    concealed: u64,
    /// Packets of another payload type (comfort noise, DTMF events, unknown).
    ignored: u64,
}

/// The last Opus packet decoded: where the next one goes.
#[derive(Clone, Copy)]
struct LastOpus {
    sequence: u16,
    rtp_timestamp: u32,
    /// Its first sample's position, 16 kHz samples.
    position: u32,
    /// Samples it decoded to (16 kHz).
    samples: u32,
}

/// A browser's RTP turned into the room's chunks (sans-IO: packets in, chunks
/// out through a callback). G.711 payloads go as they are; Opus is decoded in
/// sequence order to 16 kHz, lost packets concealed (module docs).
struct Inbound {
    /// The offer's Opus payload type and the decoder (Opus sessions only).
    opus: Option<(u8, Decoder)>,
    /// One packet's decoded audio (boxed once: 3.75 KiB).
    pcm: Box<[i16; MAX_FRAME_SAMPLES]>,
    last: Option<LastOpus>,
    stats: InboundStats,
}

impl Inbound {
    /// The receiving side of a `codec` session.
    ///
    /// # Errors
    /// The codec is not available in this build.
    fn new(codec: BrowserCodec) -> Result<Self, crate::media::codec::CodecError> {
        let opus = match codec.codec {
            AudioCodec::Opus => Some((codec.payload_type, Decoder::new(AudioCodec::Opus)?)),
            _ => None,
        };
        Ok(Inbound { opus, pcm: Box::new([0; MAX_FRAME_SAMPLES]), last: None, stats: InboundStats::default() })
    }

    /// One received RTP packet (its header's payload type, sequence number and
    /// timestamp, and its payload); `emit` gets the room's chunks, in order.
    fn packet(&mut self, payload_type: u8, sequence: u16, rtp_timestamp: u32, payload: &[u8], emit: impl FnMut(Chunk)) {
        match self.opus.as_ref().map(|(pt, _)| *pt) {
            Some(pt) if pt == payload_type => self.opus(sequence, rtp_timestamp, payload, emit),
            _ => match G711::from_payload_type(payload_type) {
                Some(law) => g711_chunks(law, rtp_timestamp, payload, emit),
                None => self.stats.ignored += 1,
            },
        }
    }

    fn opus(&mut self, sequence: u16, rtp_timestamp: u32, payload: &[u8], mut emit: impl FnMut(Chunk)) {
        let Some((_, decoder)) = self.opus.as_mut() else { return };
        let (position, lost) = match self.last {
            None => (rtp_timestamp / OPUS_UNITS_PER_SAMPLE, 0),
            Some(last) => {
                let ahead = sequence.wrapping_sub(last.sequence) as i16;
                if (-SEQUENCE_JUMP..=0).contains(&ahead) {
                    // A duplicate, or reordered behind audio already decoded: Opus
                    // decodes in order, and the gap was concealed.
                    self.stats.late += 1;
                    return;
                }
                let next = last.position.wrapping_add(last.samples);
                let delta = rtp_timestamp.wrapping_sub(last.rtp_timestamp) as i32;
                let restart = !(1..=SEQUENCE_JUMP).contains(&ahead);
                // Up to 10 s ahead: the timestamp places it; otherwise (a sender
                // restarting its clock) it follows on.
                let position = if delta > 0 && delta <= 480_000 && !restart {
                    last.position.wrapping_add(delta as u32 / OPUS_UNITS_PER_SAMPLE)
                } else {
                    next
                };
                let lost = if restart { 0 } else { (ahead as u16).saturating_sub(1) };
                (position, if lost <= MAX_CONCEALED { lost } else { 0 })
            }
        };
        if let Some(last) = self.last {
            // The lost packets' audio, at their places after the last decoded one.
            let len = (last.samples as usize).min(MAX_FRAME_SAMPLES);
            let mut at = last.position.wrapping_add(last.samples);
            for k in 0..lost {
                // The packet just before this one comes back from this one's
                // in-band FEC when it carries one (RFC 6716 §2.1.7); the others
                // are concealed.
                let out = &mut self.pcm[..len];
                let n = if k + 1 == lost {
                    decoder.decode_fec(payload, out).unwrap_or_else(|_| decoder.conceal(out))
                } else {
                    decoder.conceal(out)
                };
                wide_chunks(at, &self.pcm[..n], &mut emit);
                at = at.wrapping_add(n as u32);
                self.stats.concealed += 1;
            }
        }
        let samples = match decoder.decode(payload, &mut self.pcm[..]) {
            Ok(n) => {
                wide_chunks(position, &self.pcm[..n], &mut emit);
                n as u32
            }
            Err(e) => {
                // Malformed (a hostile or broken sender): dropped; the room's
                // jitter buffer covers the hole.
                self.stats.rejected += 1;
                tracing::trace!(error = %e, "WebRTC: Opus payload refused");
                self.last.map_or(0, |l| l.samples)
            }
        };
        self.last = Some(LastOpus { sequence, rtp_timestamp, position, samples });
    }
}

/// G.711 `payload` as the room's chunks (160 bytes at most each).
fn g711_chunks(law: G711, rtp_timestamp: u32, payload: &[u8], mut emit: impl FnMut(Chunk)) {
    let mut ts = rtp_timestamp;
    for part in payload.chunks(CHUNK_BYTES) {
        let mut c = Chunk {
            direction: Direction::Heard,
            codec: ChunkFormat::G711(law),
            rtp_timestamp: ts,
            len: part.len() as u16,
            data: [0; CHUNK_BYTES],
        };
        c.data[..part.len()].copy_from_slice(part);
        emit(c);
        ts = ts.wrapping_add(part.len() as u32);
    }
}

/// 16 kHz `pcm` starting at sample `position` as the room's `L16Wide` chunks
/// (80 samples each, native byte order).
fn wide_chunks(position: u32, pcm: &[i16], emit: &mut impl FnMut(Chunk)) {
    let mut ts = position;
    for part in pcm.chunks(CHUNK_BYTES / 2) {
        let mut c = Chunk {
            direction: Direction::Heard,
            codec: ChunkFormat::L16Wide,
            rtp_timestamp: ts,
            len: 0,
            data: [0; CHUNK_BYTES],
        };
        for (bytes, s) in c.data.chunks_exact_mut(2).zip(part) {
            bytes.copy_from_slice(&s.to_ne_bytes());
        }
        c.len = (part.len() * 2) as u16;
        emit(c);
        ts = ts.wrapping_add(part.len() as u32);
    }
}

/// The room's mix-minus frames as RTP payloads for the browser: G.711 by table,
/// or Opus at 16 kHz (20 ms frames, 960 RTP units each).
struct Outbound {
    codec: BrowserCodec,
    /// The Opus encoder (Opus sessions only).
    encoder: Option<Encoder>,
    /// One payload.
    payload: Box<[u8; MAX_PAYLOAD_BYTES]>,
    /// Where the payloads handed to webrtc-rs are cut from.
    pool: bytes::BytesMut,
}

impl Outbound {
    /// The sending side of a `codec` session.
    ///
    /// # Errors
    /// The codec is not available in this build.
    fn new(codec: BrowserCodec) -> Result<Self, crate::media::codec::CodecError> {
        let encoder = match codec.codec {
            AudioCodec::Opus => Some(Encoder::new(AudioCodec::Opus)?),
            _ => None,
        };
        Ok(Outbound {
            codec,
            encoder,
            payload: Box::new([0; MAX_PAYLOAD_BYTES]),
            pool: bytes::BytesMut::with_capacity(PAYLOAD_POOL),
        })
    }

    /// One frame of the room's PCM (at the session's rate) as a payload, and
    /// the RTP units it lasts; `None` when the encoder refuses it.
    fn encode(&mut self, pcm: &[i16]) -> Option<(bytes::Bytes, u32)> {
        let n = match (self.encoder.as_mut(), self.codec.codec.g711()) {
            (Some(encoder), _) => match encoder.encode(pcm, &mut self.payload[..]) {
                Ok(n) => n,
                Err(e) => {
                    tracing::debug!(error = %e, "WebRTC: frame not encoded");
                    return None;
                }
            },
            (None, Some(law)) => law.encode(&pcm[..pcm.len().min(MAX_PAYLOAD_BYTES)], &mut self.payload[..]),
            (None, None) => return None,
        };
        let units = match self.codec.codec {
            AudioCodec::Opus => pcm.len() as u32 * OPUS_UNITS_PER_SAMPLE,
            _ => pcm.len() as u32,
        };
        // Once every earlier payload is released this takes the whole pool back
        // (no allocation); otherwise a fresh pool, at most every PAYLOAD_POOL bytes.
        if self.pool.capacity() < n {
            self.pool.reserve(PAYLOAD_POOL);
        }
        self.pool.extend_from_slice(&self.payload[..n]);
        Some((self.pool.split().freeze(), units))
    }
}

/// One browser's life: the room's frames out, connection state in.
struct Session {
    hub: WebRtcHub,
    session_id: Uuid,
    pc: Arc<dyn PeerConnection>,
    track: Arc<TrackLocalStaticRTP>,
    handle: Option<ParticipantHandle>,
    frames: mpsc::Receiver<PcmFrame>,
    /// Keeps the chunk channel open while the session lives: the peer
    /// connection's handler (the other sender) goes with the connection, and
    /// the room must hear why the browser left from the session, not see a
    /// closed channel (which it reports as `hangup`).
    _chunks: mpsc::Sender<Chunk>,
    outbound: Outbound,
    events: mpsc::UnboundedReceiver<PcEvent>,
    stop: mpsc::Receiver<()>,
    monitored: Option<String>,
    consent_timeout: Duration,
}

impl Session {
    async fn run(mut self) {
        let ssrc = self.track.ssrcs().await.first().copied().unwrap_or_else(rand_u32);
        let mut sequence: u16 = rand_u32() as u16;
        let mut timestamp: u32 = rand_u32();
        let mut first = true;
        let (mut ice_up, mut peer_up) = (false, false);
        // ICE and DTLS must complete within this; consent checks take over then.
        let connect_deadline = tokio::time::sleep(self.consent_timeout.max(Duration::from_secs(10)));
        tokio::pin!(connect_deadline);
        let mut monitor = tokio::time::interval(Duration::from_secs(1));
        let reason: Option<LeaveReason> = loop {
            tokio::select! {
                frame = self.frames.recv() => match frame {
                    Some(_) if !peer_up => {} // no media path yet
                    Some(f) => {
                        let samples = &f.samples[..usize::from(f.len).min(f.samples.len())];
                        let Some((payload, units)) = self.outbound.encode(samples) else { continue };
                        let packet = rtc::rtp::Packet {
                            header: rtc::rtp::header::Header {
                                version: 2,
                                marker: first,
                                payload_type: self.outbound.codec.payload_type,
                                sequence_number: sequence,
                                timestamp,
                                ssrc,
                                ..Default::default()
                            },
                            payload,
                        };
                        first = false;
                        sequence = sequence.wrapping_add(1);
                        timestamp = timestamp.wrapping_add(units);
                        if let Err(e) = self.track.write_rtp(packet).await {
                            tracing::debug!(session = %self.session_id, error = %e, "WebRTC write failed");
                        }
                    }
                    None => break None, // removed by the room
                },
                ev = self.events.recv() => match ev {
                    Some(PcEvent::Ice(s)) => {
                        tracing::debug!(session = %self.session_id, state = %s, "WebRTC ICE state");
                        if matches!(s, RTCIceConnectionState::Connected | RTCIceConnectionState::Completed) {
                            ice_up = true;
                        }
                    }
                    Some(PcEvent::Peer(s)) => {
                        tracing::debug!(session = %self.session_id, state = %s, "WebRTC connection state");
                        match s {
                            RTCPeerConnectionState::Connected => {
                                if !peer_up {
                                    tracing::info!(session = %self.session_id, "WebRTC media connected (ICE + DTLS-SRTP)");
                                }
                                peer_up = true;
                            }
                            RTCPeerConnectionState::Failed => break Some(LeaveReason::Failed(failure(ice_up, peer_up))),
                            RTCPeerConnectionState::Closed => break Some(LeaveReason::Left),
                            _ => {}
                        }
                    }
                    None => break Some(LeaveReason::Failed(failure(ice_up, peer_up))),
                },
                _ = &mut connect_deadline, if !peer_up => {
                    break Some(LeaveReason::Failed(failure(ice_up, false)));
                }
                _ = self.stop.recv() => break Some(LeaveReason::Left),
                _ = monitor.tick(), if self.monitored.is_some() => {
                    let id = self.monitored.as_deref().unwrap_or_default();
                    if !matches!(self.hub.inner.calls.get(id), Lookup::Live(_)) {
                        break Some(LeaveReason::Hangup);
                    }
                }
            }
        };
        if let Some(handle) = self.handle.take() {
            match reason {
                Some(LeaveReason::Failed(why)) => {
                    tracing::warn!(session = %self.session_id, reason = why, "WebRTC participant removed");
                    handle.leave_because(LeaveReason::Failed(why));
                }
                Some(LeaveReason::Hangup) => drop(handle),
                _ => handle.leave(),
            }
            // Keep our ends of the channels until the room has taken the leave:
            // a room tick that found them closed first would report `hangup`.
            let drained = async { while self.frames.recv().await.is_some() {} };
            let _ = tokio::time::timeout(Duration::from_secs(2), drained).await;
        }
        let _ = self.pc.close().await;
        self.hub.sessions().remove(&self.session_id);
        tracing::info!(session = %self.session_id, "WebRTC participant left");
    }
}

/// The `reason` of a failed connection: ICE never connected, DTLS never
/// completed over connected ICE, or a connection that was up lost consent.
fn failure(ice_up: bool, peer_up: bool) -> &'static str {
    match (ice_up, peer_up) {
        (false, false) => "ice_failed",
        (true, false) => "dtls_failed",
        _ => "consent_expired",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHROME_OFFER: &str = "v=0\r\no=- 4611731400430051336 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n\
a=group:BUNDLE 0\r\na=msid-semantic: WMS\r\n\
m=audio 9 UDP/TLS/RTP/SAVPF 111 63 9 0 8 13 110 126\r\nc=IN IP4 0.0.0.0\r\na=rtcp:9 IN IP4 0.0.0.0\r\n\
a=ice-ufrag:abcd\r\na=ice-pwd:aaaaaaaaaaaaaaaaaaaaaaaa\r\na=ice-options:trickle\r\n\
a=fingerprint:sha-256 00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF\r\n\
a=setup:actpass\r\na=mid:0\r\na=sendrecv\r\na=rtcp-mux\r\n\
a=rtpmap:111 opus/48000/2\r\na=rtpmap:63 red/48000/2\r\na=rtpmap:9 G722/8000\r\na=rtpmap:0 PCMU/8000\r\n\
a=rtpmap:8 PCMA/8000\r\na=rtpmap:13 CN/8000\r\na=rtpmap:110 telephone-event/48000\r\na=rtpmap:126 telephone-event/8000\r\n";

    const OPUS: BrowserCodec = BrowserCodec { codec: AudioCodec::Opus, payload_type: 111 };
    const PCMU: BrowserCodec = BrowserCodec { codec: AudioCodec::Pcmu, payload_type: 0 };

    #[test]
    fn a_browser_offer_gets_opus_and_without_it_its_first_g711() {
        assert_eq!(choose_codec(CHROME_OFFER, true).unwrap(), OPUS);
        // Firefox numbers Opus 109.
        let firefox = CHROME_OFFER.replace("111 63", "109 63").replace("rtpmap:111", "rtpmap:109");
        assert_eq!(choose_codec(&firefox, true).unwrap(), BrowserCodec { payload_type: 109, ..OPUS });
        // A build without Opus, or an offer without it: the first G.711 law.
        assert_eq!(choose_codec(CHROME_OFFER, false).unwrap(), PCMU);
        let pcma_first = CHROME_OFFER.replace("111 63 9 0 8 13", "111 63 9 8 0 13");
        assert_eq!(choose_codec(&pcma_first, false).unwrap().codec, AudioCodec::Pcma);
        let no_opus = CHROME_OFFER.replace("opus/48000/2", "x-opus/48000/2");
        assert_eq!(choose_codec(&no_opus, true).unwrap(), PCMU);
        // The browser's order decides: G.711 listed before Opus wins.
        let pcmu_first = CHROME_OFFER.replace("111 63 9 0 8 13", "0 111 63 9 8 13");
        assert_eq!(choose_codec(&pcmu_first, true).unwrap(), PCMU);
        // Opus must be opus/48000/2 (RFC 7587 §7).
        let mono = CHROME_OFFER.replace("opus/48000/2", "opus/48000");
        assert_eq!(choose_codec(&mono, true).unwrap(), PCMU);
        assert!(opus_available(), "this build has Opus (media::codec)");
        assert_eq!(offered_codec(CHROME_OFFER).unwrap(), OPUS);
    }

    #[test]
    fn the_answer_may_carry_opus_then_g711() {
        let names = |c: BrowserCodec| -> Vec<(String, u8, u32, u16)> {
            c.answered()
                .into_iter()
                .map(|p| (p.rtp_codec.mime_type, p.payload_type, p.rtp_codec.clock_rate, p.rtp_codec.channels))
                .collect()
        };
        assert_eq!(
            names(OPUS),
            [
                ("audio/opus".to_string(), 111, 48_000, 2),
                ("audio/PCMU".to_string(), 0, 8000, 1),
                ("audio/PCMA".to_string(), 8, 8000, 1)
            ]
        );
        assert_eq!(OPUS.answered()[0].rtp_codec.sdp_fmtp_line, "minptime=10;useinbandfec=1");
        assert_eq!(names(PCMU), [("audio/PCMU".to_string(), 0, 8000, 1)]);
    }

    #[test]
    fn unusable_offers_say_why() {
        let why = |sdp: &str| choose_codec(sdp, true).unwrap_err().to_string();
        assert!(why("").contains("empty"), "{}", why(""));
        assert!(why("hello").contains("bad SDP offer"), "{}", why("hello"));
        let no_codec = CHROME_OFFER.replace(" 111 63 9 0 8 13", " 63 9 13");
        assert!(why(&no_codec).contains("no codec of this box (opus/48000/2, PCMU"), "{}", why(&no_codec));
        let opus_only = CHROME_OFFER.replace(" 0 8 13", " 13");
        let e = choose_codec(&opus_only, false).unwrap_err().to_string();
        assert!(e.contains("no codec of this box (PCMU/8000"), "{e}");
        let video = CHROME_OFFER.replace("m=audio", "m=video");
        assert!(why(&video).contains("no audio"), "{}", why(&video));
        let plain = CHROME_OFFER.replace("UDP/TLS/RTP/SAVPF", "RTP/AVP");
        assert!(why(&plain).contains("DTLS-SRTP"), "{}", why(&plain));
        let no_fp = CHROME_OFFER.replace("a=fingerprint:", "a=x-fingerprint:");
        assert!(why(&no_fp).contains("fingerprint"), "{}", why(&no_fp));
        let no_ice = CHROME_OFFER.replace("a=ice-pwd:", "a=x-pwd:");
        assert!(why(&no_ice).contains("ICE credentials"), "{}", why(&no_ice));
    }

    #[test]
    fn the_public_address_rides_beside_each_host_candidate() {
        let answer = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 0\r\n\
a=candidate:1 1 udp 2130706431 192.168.1.20 40010 typ host\r\n\
a=candidate:2 1 udp 2130706431 fd00::20 40011 typ host\r\n\
a=candidate:3 1 tcp 1518280447 192.168.1.20 9 typ host tcptype passive\r\na=end-of-candidates\r\n";
        let public: IpAddr = "203.0.113.7".parse().unwrap();
        let out = with_public_address(answer, public);
        let added: Vec<&str> = out.lines().filter(|l| l.contains("typ srflx")).collect();
        assert_eq!(
            added,
            ["a=candidate:sbnat2 1 udp 1694498815 203.0.113.7 40010 typ srflx raddr 192.168.1.20 rport 40010"]
        );
        assert!(out.contains("192.168.1.20 40010 typ host"), "host candidates stay");
        assert_eq!(with_public_address(answer, "192.168.1.20".parse().unwrap()), answer);
    }

    /// Feeds `packets` (payload type, sequence, timestamp, payload) to `inbound`
    /// and returns the chunks it emitted.
    fn feed(inbound: &mut Inbound, packets: &[(u8, u16, u32, Vec<u8>)]) -> Vec<Chunk> {
        let mut out = Vec::new();
        for (pt, seq, ts, payload) in packets {
            inbound.packet(*pt, *seq, *ts, payload, |c| out.push(c));
        }
        out
    }

    #[test]
    fn g711_packets_go_to_the_room_as_they_are_and_other_types_are_ignored() {
        let mut inbound = Inbound::new(PCMU).unwrap();
        let chunks = feed(
            &mut inbound,
            &[
                (0, 1, 1000, vec![0x55; 160]),
                (13, 2, 1160, vec![0; 1]),
                (111, 3, 1160, vec![0xF8; 40]),
                (8, 4, 1160, vec![0xD5; 320]),
            ],
        );
        let got: Vec<_> = chunks.iter().map(|c| (c.codec, c.rtp_timestamp, c.len)).collect();
        assert_eq!(
            got,
            [
                (ChunkFormat::G711(G711::Pcmu), 1000, 160),
                (ChunkFormat::G711(G711::Pcma), 1160, 160),
                (ChunkFormat::G711(G711::Pcma), 1320, 160)
            ]
        );
        assert_eq!(inbound.stats.ignored, 2, "comfort noise, and Opus in a G.711 session");
        let mut out = Outbound::new(PCMU).unwrap();
        let (payload, units) = out.encode(&[1000; 160]).unwrap();
        assert_eq!((payload.len(), units), (160, 160));
        assert!(payload.iter().all(|&b| b == G711::Pcmu.encode_sample(1000)));
    }

    /// 20 ms Opus packets of a 1 kHz tone at 16 kHz, with their RTP timestamps at 48 kHz.
    fn opus_packets(n: usize, first_ts: u32) -> Vec<(u8, u16, u32, Vec<u8>)> {
        let mut enc = Encoder::new(AudioCodec::Opus).unwrap();
        let mut payload = [0u8; MAX_PAYLOAD_BYTES];
        (0..n)
            .map(|k| {
                let pcm: Vec<i16> = (0..320)
                    .map(|i| {
                        ((((k * 320 + i) as f64) * 1000.0 * std::f64::consts::TAU / 16_000.0).sin() * 8000.0) as i16
                    })
                    .collect();
                let len = enc.encode(&pcm, &mut payload).unwrap();
                (111, 60_000u16.wrapping_add(k as u16), first_ts.wrapping_add(960 * k as u32), payload[..len].to_vec())
            })
            .collect()
    }

    #[test]
    fn opus_is_decoded_to_16_khz_chunks_in_order_with_losses_concealed() {
        let mut inbound = Inbound::new(OPUS).unwrap();
        let first_ts = u32::MAX - 960 * 5; // wraps inside the run
        let mut packets = opus_packets(12, first_ts);
        packets.remove(6); // one lost
        let dup = packets[3].clone();
        packets.insert(4, dup); // one duplicate
        let late = packets[8].clone();
        packets.push(late); // one reordered past its place
        let chunks = feed(&mut inbound, &packets);
        assert!(chunks.iter().all(|c| c.codec == ChunkFormat::L16Wide && c.len == 160), "80-sample chunks");
        // 12 packets of 320 samples: 11 decoded + 1 concealed, contiguous.
        assert_eq!(chunks.len(), 12 * 4);
        let start = first_ts / 3;
        for (i, c) in chunks.iter().enumerate() {
            assert_eq!(c.rtp_timestamp, start.wrapping_add(80 * i as u32), "chunk {i}");
        }
        assert_eq!((inbound.stats.concealed, inbound.stats.late, inbound.stats.rejected), (1, 2, 0));
        // The tone survives: 1 kHz well above anything at 5 kHz in the last 100 ms.
        let mut pcm = Vec::new();
        for c in &chunks[chunks.len() - 20..] {
            c.wide_samples(&mut pcm);
        }
        let (tone, off) = (
            crate::room::test_signal::amplitude(&pcm, 1000.0, 16_000),
            crate::room::test_signal::amplitude(&pcm, 5000.0, 16_000),
        );
        assert!(tone > 2000.0 && off < tone / 20.0, "1 kHz {tone:.0}, 5 kHz {off:.0}");
    }

    #[test]
    fn hostile_opus_is_dropped_never_a_panic() {
        let mut inbound = Inbound::new(OPUS).unwrap();
        let mut seed = 0x1234_5678u32;
        let mut packets = vec![(111, 1, 0, vec![]), (111, 2, 960, vec![0xFF; 1500]), (111, 3, 1920, vec![0xFC])];
        for k in 0..2000u32 {
            let len = (seed % 300) as usize;
            let payload: Vec<u8> = (0..len)
                .map(|_| {
                    seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                    (seed >> 24) as u8
                })
                .collect();
            // Sequence numbers and timestamps all over the place too.
            packets.push((111, (k * 7919) as u16, seed, payload));
        }
        let chunks = feed(&mut inbound, &packets);
        assert!(chunks.iter().all(|c| usize::from(c.len) <= CHUNK_BYTES));
        assert!(inbound.stats.rejected > 0, "{:?}", inbound.stats);
        // Still decodes real Opus afterwards.
        let before = chunks.len();
        let good = feed(&mut inbound, &opus_packets(3, 77));
        assert!(good.len() >= 8, "{before} then {}", good.len());
    }

    #[test]
    fn the_room_mix_goes_out_as_20_ms_opus_at_960_units() {
        let mut out = Outbound::new(OPUS).unwrap();
        for _ in 0..5 {
            let (payload, units) = out.encode(&[500; 320]).unwrap();
            assert!(!payload.is_empty() && payload.len() < 400, "{}", payload.len());
            assert_eq!(units, 960);
        }
        assert!(out.encode(&[0; 100]).is_none(), "6.25 ms is no Opus frame");
    }

    /// Neither direction allocates per packet once running (the room's counting
    /// allocator, per thread): decoding Opus into chunks, encoding the mix.
    #[test]
    fn no_allocation_per_packet() {
        use crate::room::test_signal::allocations;
        let packets = opus_packets(60, 1000);
        let mut inbound = Inbound::new(OPUS).unwrap();
        let mut emitted = 0usize;
        let mut feed = |range: std::ops::Range<usize>, inbound: &mut Inbound| {
            for (pt, seq, ts, payload) in &packets[range] {
                inbound.packet(*pt, *seq, *ts, payload, |_| emitted += 1);
            }
        };
        feed(0..10, &mut inbound);
        let before = allocations();
        feed(10..60, &mut inbound);
        let decoding = allocations() - before;
        let mut out = Outbound::new(OPUS).unwrap();
        let frame = [700i16; 320];
        for _ in 0..10 {
            drop(out.encode(&frame));
        }
        let before = allocations();
        for _ in 0..50 {
            drop(out.encode(&frame));
        }
        let encoding = allocations() - before;
        assert_eq!((decoding, encoding), (0, 0), "allocations over 50 packets each way ({emitted} chunks)");
    }

    #[test]
    fn failure_reasons() {
        assert_eq!(failure(false, false), "ice_failed");
        assert_eq!(failure(true, false), "dtls_failed");
        assert_eq!(failure(true, true), "consent_expired");
    }
}
