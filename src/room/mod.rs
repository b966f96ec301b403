//! Local rooms (issue 10): N-party audio mixing on the box, the local counterpart
//! of a Telnyx conference (PROTOCOLS.md §4) and of a LiveKit room (§5).
//!
//! A room is one job on the media engine ([`task`]: a `media::engine::TimerJob`,
//! no tokio task) that owns a mix-minus [`mixer::Mixer`] and is woken by a media
//! worker's timer wheel every 20 ms on the box's one schedule
//! (`media::pacer`), with bounded catch-up; it takes its commands at those
//! wake-ups. Each participant is attached through the `media::pcm` channel pair
//! the call already uses for voice agents:
//!
//! * a **SIP leg**: the room holds the leg's [`PcmEndpoint`] (the leg task
//!   `media::engine::PcmJob` owns the [`PcmPort`], made by
//!   `room_pair(depth, true, false)`). Heard chunks go through a per-participant
//!   [`jitter::JitterBuffer`] keyed by `Chunk::rtp_timestamp`; the participant's
//!   mix-minus goes back every tick as a `PcmFrame` on the pair's frame channel.
//!   A leg whose codec is wideband (G.722, Opus: issue 22) joins at
//!   [`Rate::Wideband`] ([`Participant::with_rate`], its port's `sample_rate` =
//!   16000): its chunks are `ChunkFormat::L16Wide`, its jitter buffer runs at
//!   16 kHz, its frames are 320 samples, and the room mixes at 16 kHz while it
//!   is in ([`mixer`]); a browser on Opus is the same;
//! * a **voice agent**: the room holds the [`PcmPort`] half (the agent stream
//!   `agent::stream::AgentStream::start` got the endpoint). It hears its
//!   mix-minus as PCMU `Heard` chunks and speaks through `Playback::Audio`,
//!   `Mark`, `Clear` into a `media::playout::Playout`, pulled one frame per tick;
//!   reached marks go back on `port.marks`;
//! * a **listener** (a listen-in socket): hears the full mix as G.711 chunks,
//!   contributes nothing, does not count as a participant and keeps no room alive.
//!
//! The registry [`Rooms`] (cheap to clone, one per daemon) creates a room on the
//! first join by name, ends it when the last participant leaves (after an optional
//! linger), and reports [`RoomEvent`]s — created, ended, participant joined/left —
//! for the `conference.*` webhooks. Recording needs nothing here: a SIP
//! participant's own PCM job's tap records what it says (L) and what the room plays
//! to it (R).
//!
//! This module owns room membership and mixing, and what a room does at each
//! 20 ms tick; the engine's wheel only wakes it. It does not know SIP, the
//! HTTP API or webhooks; it never hangs a call up (a participant removed by the
//! room is reported, and the caller decides).

pub mod jitter;
pub mod mixer;
mod registry;
mod task;
#[cfg(test)]
mod task_tests;
#[cfg(test)]
pub(crate) mod test_signal;
#[cfg(test)]
mod tests;

use std::time::{Duration, SystemTime};

use tokio::sync::mpsc;
use uuid::Uuid;

use crate::media::g711::G711;
use crate::media::pcm::{Chunk, PcmEndpoint, PcmPort};

pub use mixer::Rate;
pub use registry::{ParticipantHandle, Rooms};

/// Default cap on participants in one room (listeners not counted). The mixer
/// benchmark (docs/benchmarks.md, "Rooms") shows what the box holds.
pub const DEFAULT_MAX_PARTICIPANTS: usize = 50;

/// A room's settings, fixed when it is created (by its first join).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoomOptions {
    /// Participants allowed at once (Telnyx `max_participants`); joins beyond it
    /// are refused with [`JoinError::Full`]. Listeners are not counted.
    pub max_participants: usize,
    /// How long an empty room waits for a new participant before it ends
    /// (zero: it ends when the last participant leaves).
    pub linger: Duration,
    /// Jitter buffer target delay of SIP participants
    /// ([`jitter::DEFAULT_TARGET_DELAY`], 40 ms).
    pub jitter_delay: Duration,
}

impl Default for RoomOptions {
    fn default() -> Self {
        RoomOptions {
            max_participants: DEFAULT_MAX_PARTICIPANTS,
            linger: Duration::ZERO,
            jitter_delay: jitter::DEFAULT_TARGET_DELAY,
        }
    }
}

impl crate::config::Rooms {
    /// The room engine's options for a new room from `[rooms]` (defined here so
    /// that the config does not depend on the room engine).
    pub fn options(&self) -> RoomOptions {
        RoomOptions { max_participants: self.max_participants, linger: self.linger, ..Default::default() }
    }
}

/// How a participant is connected to the room.
pub enum Attachment {
    /// A SIP leg: the endpoint half of the leg's `room_pair(depth, true, false)`;
    /// the leg's media-engine job (`media::engine::PcmJob`) holds the port half.
    Leg(PcmEndpoint),
    /// A browser over WebRTC: the same endpoint half as a leg's, its port half
    /// driven by the WebRTC session (G.711 chunks, or 16 kHz `L16Wide` chunks
    /// decoded from the browser's Opus).
    WebRtc(PcmEndpoint),
    /// A voice agent: the port half of a `pcm_pair`; the agent stream got the
    /// endpoint half. The port's `control` sender is dropped by the room.
    Agent(PcmPort),
    /// A listener: hears the full room mix as `Heard` chunks of 20 ms in `codec`
    /// (`try_send`: a slow listener loses chunks); contributes nothing.
    Listener {
        /// Where the chunks go.
        chunks: mpsc::Sender<Chunk>,
        /// G.711 law of the chunks.
        codec: G711,
    },
}

/// Someone joining a room.
pub struct Participant {
    /// The participant's id, chosen by the caller and unique in the room: the
    /// call's `call_control_id` for calls and agents.
    pub id: String,
    /// The media connection.
    pub attachment: Attachment,
    /// Join muted (Telnyx join `mute`).
    pub muted: bool,
    /// Join on hold (Telnyx join `hold`).
    pub held: bool,
    /// The rate of a leg's or browser's audio ([`Rate::Narrowband`] unless
    /// [`Participant::with_rate`] says otherwise): the rate of its jitter buffer
    /// and of the frames the room sends it, which must be its port's
    /// `PcmPort::sample_rate`. An agent's rate is its port's `sample_rate`
    /// (an L16/16000 agent, a player of a 16 kHz clip); a wideband listener
    /// ([`Participant::with_rate`]) gets the full mix as 16 kHz `L16Wide` chunks.
    pub rate: Rate,
}

impl Participant {
    /// A SIP leg participant, not muted, not held.
    pub fn leg(id: impl Into<String>, endpoint: PcmEndpoint) -> Self {
        Participant {
            id: id.into(),
            attachment: Attachment::Leg(endpoint),
            muted: false,
            held: false,
            rate: Rate::Narrowband,
        }
    }

    /// A voice agent participant, not muted, not held.
    pub fn agent(id: impl Into<String>, port: PcmPort) -> Self {
        Participant {
            id: id.into(),
            rate: Rate::from_hz(port.sample_rate).unwrap_or(Rate::Narrowband),
            attachment: Attachment::Agent(port),
            muted: false,
            held: false,
        }
    }

    /// A browser (WebRTC) participant: media like a SIP leg's (G.711 chunks in,
    /// mix frames out), reported as `participant_type: "webrtc"`.
    pub fn webrtc(id: impl Into<String>, endpoint: PcmEndpoint) -> Self {
        Participant {
            id: id.into(),
            attachment: Attachment::WebRtc(endpoint),
            muted: false,
            held: false,
            rate: Rate::Narrowband,
        }
    }

    /// A listener.
    pub fn listener(id: impl Into<String>, chunks: mpsc::Sender<Chunk>, codec: G711) -> Self {
        Participant {
            id: id.into(),
            attachment: Attachment::Listener { chunks, codec },
            muted: false,
            held: false,
            rate: Rate::Narrowband,
        }
    }

    /// The participant with its audio at `rate` (a wideband leg or browser:
    /// [`Rate::Wideband`], with its port's `sample_rate` = 16000). Ignored for
    /// agents (their port's rate decides).
    pub fn with_rate(mut self, rate: Rate) -> Self {
        self.rate = rate;
        self
    }

    /// The kind of attachment.
    pub fn kind(&self) -> ParticipantKind {
        match self.attachment {
            Attachment::Leg(_) => ParticipantKind::Leg,
            Attachment::WebRtc(_) => ParticipantKind::WebRtc,
            Attachment::Agent(_) => ParticipantKind::Agent,
            Attachment::Listener { .. } => ParticipantKind::Listener,
        }
    }
}

/// The kind of a participant's attachment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParticipantKind {
    /// A SIP leg.
    Leg,
    /// A voice agent stream.
    Agent,
    /// A listener.
    Listener,
    /// A browser over WebRTC (issue 12).
    WebRtc,
}

impl ParticipantKind {
    /// The `participant_type` of the API and events: `sip`, `agent`, `listener`,
    /// `webrtc`.
    pub const fn as_str(self) -> &'static str {
        match self {
            ParticipantKind::Leg => "sip",
            ParticipantKind::Agent => "agent",
            ParticipantKind::Listener => "listener",
            ParticipantKind::WebRtc => "webrtc",
        }
    }
}

/// Why a participant left a room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaveReason {
    /// Asked to leave (Telnyx `leave`, or [`ParticipantHandle::leave`]).
    Left,
    /// Its media went away: the leg task or agent stream closed its channels, or
    /// its [`ParticipantHandle`] was dropped (the call ended).
    Hangup,
    /// The room was ended (Telnyx `end`): the caller should hang the call up.
    RoomEnded,
    /// Its connection failed (a WebRTC participant: ICE never connected, the DTLS
    /// handshake failed, or ICE consent expired); the text is the event's `reason`.
    Failed(&'static str),
}

/// Why a room ended (Telnyx `conference.ended` `reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    /// The last participant left (and the linger time passed): `all_left`.
    AllLeft,
    /// Ended by [`Rooms::end`] (Telnyx `end` command).
    EndedViaApi,
}

impl EndReason {
    /// The Telnyx name: `all_left` or `ended_via_api`.
    pub const fn as_str(self) -> &'static str {
        match self {
            EndReason::AllLeft => "all_left",
            EndReason::EndedViaApi => "ended_via_api",
        }
    }
}

/// What happened in a room, in order per room, for `conference.*` webhooks and
/// the event socket. Listeners produce no events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoomEvent {
    /// `conference.created`: the first join by name created the room.
    Created {
        /// The room's id (Telnyx `conference_id`).
        conference_id: Uuid,
        /// The room's name.
        name: String,
        /// The participant whose join created it (`call_control_id`).
        created_by: String,
        /// When.
        occurred_at: SystemTime,
    },
    /// `conference.participant.joined`.
    ParticipantJoined {
        /// The room's id.
        conference_id: Uuid,
        /// The room's name.
        name: String,
        /// The participant (`call_control_id`).
        participant_id: String,
        /// When.
        occurred_at: SystemTime,
    },
    /// `conference.participant.left`.
    ParticipantLeft {
        /// The room's id.
        conference_id: Uuid,
        /// The room's name.
        name: String,
        /// The participant (`call_control_id`).
        participant_id: String,
        /// Why.
        reason: LeaveReason,
        /// When.
        occurred_at: SystemTime,
    },
    /// `conference.ended`: after the last `ParticipantLeft` of the room.
    Ended {
        /// The room's id.
        conference_id: Uuid,
        /// The room's name.
        name: String,
        /// Why.
        reason: EndReason,
        /// When.
        occurred_at: SystemTime,
    },
}

/// Why a join was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JoinError {
    /// The room holds `max_participants` already.
    #[error("room {name:?} is full ({max_participants} participants)")]
    Full {
        /// The room's name.
        name: String,
        /// Its cap.
        max_participants: usize,
    },
    /// The room ended while joining (a join by id; joins by name retry on a new room).
    #[error("the room has ended")]
    Ended,
    /// No room has this id.
    #[error("no room with conference_id {0}")]
    NotFound(Uuid),
    /// A participant with this id is in the room already.
    #[error("participant {0:?} is already in the room")]
    AlreadyJoined(String),
    /// The room name is empty or longer than 256 bytes, or the participant id is empty.
    #[error("invalid room name or participant id: {0}")]
    Invalid(&'static str),
}

/// A refused join: the error, and the participant (its channels) back, unless
/// the room job died with it.
pub struct JoinRefused {
    /// Why.
    pub error: JoinError,
    /// The participant, to attach elsewhere or drop.
    pub participant: Option<Participant>,
}

impl std::fmt::Debug for JoinRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JoinRefused").field("error", &self.error).finish_non_exhaustive()
    }
}

impl std::fmt::Display for JoinRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.error.fmt(f)
    }
}

impl std::error::Error for JoinRefused {}

/// A command on a room that does not exist (any more).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RoomError {
    /// No room has this id (never existed, or ended).
    #[error("no room with conference_id {0}")]
    NotFound(Uuid),
}

/// Pacing counters of one room since it was created.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RoomStats {
    /// 20 ms frames mixed.
    pub ticks: u64,
    /// Frames mixed more than 5 ms after their deadline on the box's clock, plus
    /// frames skipped when the task was more than 5 frames (100 ms) behind.
    pub late_ticks: u64,
    /// Frames mixed in a catch-up burst (beyond the first of a wake-up).
    pub catch_up_ticks: u64,
    /// Times the schedule restarted from now (more than 100 ms behind).
    pub resyncs: u64,
    /// Largest lateness of a frame.
    pub max_lateness: Duration,
    /// Time spent mixing and moving audio (wall clock inside the ticks).
    pub busy: Duration,
    /// Frames a participant could not take (its channel full) and lost.
    pub dropped_frames: u64,
}

/// A room as listed by [`Rooms::list`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomInfo {
    /// Telnyx `conference_id`.
    pub conference_id: Uuid,
    /// The room's name.
    pub name: String,
    /// When the first join created it.
    pub created_at: SystemTime,
    /// Participants in it now (listeners not counted).
    pub participants: usize,
    /// It mixes at 16 kHz now: a wideband participant is in it.
    pub wideband: bool,
    /// Its settings.
    pub options: RoomOptions,
    /// Its pacing counters.
    pub stats: RoomStats,
}

/// A participant as listed by [`Rooms::participants`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParticipantInfo {
    /// The participant's id (`call_control_id`).
    pub participant_id: String,
    /// How it is attached.
    pub kind: ParticipantKind,
    /// Muted (contributes nothing, hears).
    pub muted: bool,
    /// On hold (contributes nothing, hears silence).
    pub held: bool,
    /// When it joined.
    pub joined_at: SystemTime,
}
