//! Browser participants over WebRTC (issue 12): a browser joins a local room, or
//! listens to / barges in on one call, with WHIP-style signaling on the control
//! API (one SDP offer in, one SDP answer out, RFC 9725 §4.2) and media over ICE
//! (RFC 8445, host candidates; optional 1:1 NAT address and STUN), DTLS-SRTP
//! (RFC 5763/5764) and G.711 (PCMU/PCMA, RFC 3551 §4.5.14), which every browser
//! offers.
//!
//! The stack is webrtc-rs (`webrtc` on its sans-IO core `rtc`, ring crypto). A
//! browser is a room participant like a SIP leg ([`crate::room::Participant::webrtc`]):
//! its RTP is handed to the room as G.711 chunks (the room's jitter buffer
//! orders them), and the room's 20 ms mix-minus frames are encoded and sent back
//! as they come. Opus is not offered: every Opus crate needs libopus (a C build,
//! cmake for the bundled one, and a cross-compiled C library for arm64/armhf),
//! and the rooms mix at 8 kHz, where G.711 loses nothing Opus would keep.
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
use crate::media::g711::G711;
use crate::media::pcm::{CHUNK_BYTES, Chunk, Direction, PcmFrame, PcmPort, room_pair};
use crate::room::{LeaveReason, Participant, ParticipantHandle, RoomOptions, Rooms};

/// Chunks buffered from a browser toward its room (about 320 ms).
const BROWSER_DEPTH: usize = 16;

/// Longest wait for our ICE candidates before the answer goes out without the
/// rest (a STUN server that does not answer must not hold the API call).
const GATHER_LIMIT: Duration = Duration::from_secs(2);

/// Samples in one 20 ms G.711 frame.
const FRAME_SAMPLES: usize = 160;

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
        codec: G711,
        target: Target,
        stop: mpsc::Receiver<()>,
    ) -> Result<Joined, WebRtcError> {
        let (room, monitored, listen_only) = self.resolve(&target).await?;
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let (mut port, endpoint) = room_pair(BROWSER_DEPTH, true, false);
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
                codec: codec_of(codec).rtp_codec,
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
        let mut p = Participant::webrtc(participant_id.to_string(), endpoint);
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
            codec = codec.encoding_name(),
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
            codec,
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
        codec: G711,
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
            media.register_codec(codec_of(codec), RtpCodecKind::Audio).map_err(stack)?;
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

/// The codec parameters of a G.711 law (static payload type, 8000 Hz, mono).
fn codec_of(codec: G711) -> RTCRtpCodecParameters {
    RTCRtpCodecParameters {
        rtp_codec: RTCRtpCodec {
            mime_type: format!("audio/{}", codec.encoding_name()),
            clock_rate: 8000,
            channels: 1,
            sdp_fmtp_line: String::new(),
            rtcp_feedback: vec![],
        },
        payload_type: codec.payload_type(),
    }
}

/// Checks that `offer` is a WebRTC audio offer this box can answer and picks the
/// first G.711 law in the browser's order of preference (RFC 3264 §6.1).
///
/// # Errors
/// [`WebRtcError::BadSdp`] naming what is wrong: not SDP, no audio, no ICE
/// credentials or DTLS fingerprint, no PCMU/PCMA.
pub fn offered_codec(offer: &str) -> Result<G711, WebRtcError> {
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
            G711::from_encoding_name(name).filter(|g| f.clock_rate_hz == 8000 && f.payload_type == g.payload_type())
        })
        .map_or_else(|| bad("the audio offers neither PCMU/8000 (0) nor PCMA/8000 (8)"), Ok)
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
    codec: G711,
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
        let (forward, codec) = (self.forward, self.codec);
        tokio::spawn(async move {
            let mut dropped = 0u64;
            while let Some(event) = track.poll().await {
                let TrackRemoteEvent::OnRtpPacket(packet) = event else { continue };
                if !forward || packet.header.payload_type != codec.payload_type() {
                    continue; // listen-only, or comfort noise / DTMF events
                }
                let mut ts = packet.header.timestamp;
                for part in packet.payload.chunks(CHUNK_BYTES) {
                    let mut c = Chunk {
                        direction: Direction::Heard,
                        codec: crate::media::pcm::ChunkFormat::G711(codec),
                        rtp_timestamp: ts,
                        len: part.len() as u16,
                        data: [0; CHUNK_BYTES],
                    };
                    c.data[..part.len()].copy_from_slice(part);
                    if chunks.try_send(c).is_err() {
                        dropped += 1;
                    }
                    ts = ts.wrapping_add(part.len() as u32);
                }
            }
            if dropped > 0 {
                tracing::debug!(dropped, "WebRTC track: chunks dropped toward the room");
            }
        });
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
    codec: G711,
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
        let mut payload = [0u8; FRAME_SAMPLES];
        let reason: Option<LeaveReason> = loop {
            tokio::select! {
                frame = self.frames.recv() => match frame {
                    Some(_) if !peer_up => {} // no media path yet
                    Some(f) => {
                        let samples = &f.samples[..usize::from(f.len).min(FRAME_SAMPLES)];
                        for (o, s) in payload.iter_mut().zip(samples) {
                            *o = self.codec.encode_sample(*s);
                        }
                        let packet = rtc::rtp::Packet {
                            header: rtc::rtp::header::Header {
                                version: 2,
                                marker: first,
                                payload_type: self.codec.payload_type(),
                                sequence_number: sequence,
                                timestamp,
                                ssrc,
                                ..Default::default()
                            },
                            payload: bytes::Bytes::copy_from_slice(&payload[..samples.len()]),
                        };
                        first = false;
                        sequence = sequence.wrapping_add(1);
                        timestamp = timestamp.wrapping_add(samples.len() as u32);
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

    #[test]
    fn a_browser_offer_gets_its_first_g711() {
        assert_eq!(offered_codec(CHROME_OFFER).unwrap(), G711::Pcmu);
        let pcma_first = CHROME_OFFER.replace("111 63 9 0 8 13", "111 63 9 8 0 13");
        assert_eq!(offered_codec(&pcma_first).unwrap(), G711::Pcma);
    }

    #[test]
    fn unusable_offers_say_why() {
        let why = |sdp: &str| offered_codec(sdp).unwrap_err().to_string();
        assert!(why("").contains("empty"), "{}", why(""));
        assert!(why("hello").contains("bad SDP offer"), "{}", why("hello"));
        let no_g711 = CHROME_OFFER.replace(" 0 8 13", " 13");
        assert!(why(&no_g711).contains("neither PCMU"), "{}", why(&no_g711));
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

    #[test]
    fn failure_reasons() {
        assert_eq!(failure(false, false), "ice_failed");
        assert_eq!(failure(true, false), "dtls_failed");
        assert_eq!(failure(true, true), "consent_expired");
    }
}
