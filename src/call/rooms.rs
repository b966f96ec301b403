//! Calls in local rooms (conference membership, issue 10): the dispatch of room routes (LiveKit's
//! dispatch rules: `room` = direct, optionally with a PIN; `room_per_caller` =
//! individual), joining a call's leg to a room, and the translation of the room
//! engine's events into Telnyx's `conference.*` webhooks.
//!
//! Telnyx shapes (developers.telnyx.com, Call Control → Conference commands and
//! callbacks): `conference.created`, `conference.participant.joined`,
//! `conference.participant.left`, `conference.ended` with `conference_id` and the
//! participant's call ids. Rooms whose name starts with [`BRIDGE_PREFIX`] carry a
//! `bridge` between two calls and report `call.bridged` from the calls instead.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::{Map, Value, json};
use tokio::sync::mpsc;

use crate::agent::stream::AgentStream;
use crate::call::control::{Action, CallRegistry, Lookup, RoomJoin, RoomRef};
use crate::call::{CallEvent, CallInfo, EventBus};
use crate::config::RouteTarget;
use crate::media::engine::Engine;
use crate::media::leg::Tap;
use crate::media::pcm::{Playback, pcm_pair, room_pair};
use crate::room::{LeaveReason, Participant, ParticipantHandle, Rate, RoomEvent, Rooms};

/// Name prefix of the private two-party rooms that carry `bridge`/`transfer`.
pub const BRIDGE_PREFIX: &str = "bridge:";

/// Name prefix of the private rooms that carry a WebRTC listen-in or barge-in on
/// one call (`POST /v2/calls/{id}/webrtc`): silent like bridge rooms.
pub const MONITOR_PREFIX: &str = "monitor:";

/// Id prefix of browser (WebRTC) participants: `webrtc:{session id}`.
pub const WEBRTC_PREFIX: &str = "webrtc:";

/// The `participant_type` of a room participant by its id: `{call}:agent` is an
/// agent, `webrtc:…` a browser, anything else a SIP leg.
pub fn participant_type(participant_id: &str) -> &'static str {
    if participant_id.ends_with(":agent") {
        "agent"
    } else if participant_id.starts_with(WEBRTC_PREFIX) {
        "webrtc"
    } else {
        "sip"
    }
}

/// Chunks buffered from a leg toward its room (about 320 ms of 20 ms packets).
const LEG_DEPTH: usize = 16;

/// The same for a wideband leg, whose 16 kHz chunks hold 5 ms each (`media::pcm::CHUNK_BYTES`).
const WIDE_LEG_DEPTH: usize = 4 * LEG_DEPTH;

/// The room a call routed by `target` joins: `room` as named, `room_per_caller`
/// = prefix + the caller's number (its `+` and digits; anything else dropped, so
/// the name stays within the room-name alphabet). `None` for other targets.
pub fn room_for(target: &RouteTarget, caller: &str) -> Option<String> {
    match target {
        RouteTarget::Room(name) => Some(name.clone()),
        RouteTarget::RoomPerCaller(prefix) => {
            let number: String = caller.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '+').collect();
            Some(format!("{prefix}{}", if number.is_empty() { "anonymous" } else { &number }))
        }
        _ => None,
    }
}

/// Joins the call `info`, whose media is `media`, to a room (`join.room`; a room
/// joined by name is created with `join.options` when new): the leg's media
/// switches to a PCM bridge toward the room (the recording tap `tap` keeps hearing
/// both directions: L = the caller, R = what the caller hears, i.e. the room's
/// mix-minus).
///
/// A leg whose negotiated codec is wideband (G.722, Opus: issue 22) joins at 16
/// kHz: its port's `sample_rate` is 16000, so its PCM job hands the room 16 kHz
/// chunks decoded from the leg (never through 8 kHz) and plays the room's 16 kHz
/// mix-minus; the room mixes at 16 kHz while such a leg is in. G.711 legs join
/// at 8 kHz as before.
///
/// # Errors
/// The media could not switch, or the room refused (full, ended, invalid name).
pub async fn join_leg(
    rooms: &Rooms,
    media: &mut crate::media::session::MediaSession,
    tap: Option<Arc<dyn Tap>>,
    info: &CallInfo,
    join: &RoomJoin,
) -> Result<ParticipantHandle, String> {
    let wide = media.audio().codec.is_wideband();
    let (mut port, endpoint) = room_pair(if wide { WIDE_LEG_DEPTH } else { LEG_DEPTH }, true, false);
    let rate = if wide {
        port.sample_rate = Rate::Wideband.hz();
        Rate::Wideband
    } else {
        Rate::Narrowband
    };
    media.switch_to_pcm(tap, port).await?;
    let mut p = Participant::leg(info.ids.call_control_id.clone(), endpoint).with_rate(rate);
    (p.muted, p.held) = (join.muted, join.held);
    let joined = match &join.room {
        RoomRef::Name(name) => rooms.join(name, join.options, p).await,
        RoomRef::Id(id) => rooms.join_existing(*id, p).await,
    };
    joined.map_err(|refused| refused.error.to_string())
}

/// A call's place in a room: its leg, and its agent stream when one followed it
/// in. Dropping a handle leaves the room.
pub struct Membership {
    /// The call's leg.
    pub leg: ParticipantHandle,
    /// The call's agent (`{call_control_id}:agent`), while it streams in the room.
    pub agent: Option<ParticipantHandle>,
}

/// Moves a call's running agent stream into the room `leg` is in: the stream
/// restarts (a new `start` for the agent) attached to the room as participant
/// `{call_control_id}:agent`, hearing the room's mix-minus and speaking into it
/// (the hot-transfer recipe: the agent stays until `streaming_stop`).
///
/// # Errors
/// The room refused the agent (full, ended); the old stream is stopped anyway.
pub async fn move_agent(
    rooms: &Rooms,
    events: &EventBus,
    agent: AgentStream,
    info: &CallInfo,
    leg: &ParticipantHandle,
) -> Result<(AgentStream, ParticipantHandle), String> {
    let spec = agent.spec.clone();
    agent.stop().await;
    let (mut port, endpoint) = pcm_pair(64, true, false);
    // An L16/16000 agent hears and speaks the room at 16 kHz.
    port.sample_rate = spec.playout_rate();
    let id = format!("{}:agent", info.ids.call_control_id);
    let handle = rooms
        .join_existing(leg.conference_id(), Participant::agent(id, port))
        .await
        .map_err(|refused| refused.error.to_string())?;
    Ok((AgentStream::start(spec, info.stream_call(), Arc::new(events.clone()), endpoint), handle))
}

/// Id prefix of the box's own players in a room (conference `play`): they make
/// no `conference.participant.*` events.
pub const PLAYER_PREFIX: &str = "play:";

/// Plays `clip` to everyone in the room `conference_id` (Telnyx conference
/// `play`): a player joins as a participant that only speaks, and leaves when its
/// audio has played (at most 10 minutes). In a room that mixes at 16 kHz (a
/// wideband participant is in it) a clip with a 16 kHz version plays at 16 kHz;
/// otherwise at 8 kHz, so a narrowband room stays narrowband.
///
/// # Errors
/// The room refused the player (ended, full).
pub async fn play(rooms: &Rooms, conference_id: uuid::Uuid, clip: crate::media::clip::Clip) -> Result<(), String> {
    let (mut port, endpoint) = pcm_pair(4, false, false);
    let wide = rooms.find(&conference_id.to_string()).is_some_and(|r| r.wideband);
    let seconds = clip.seconds() as u64 + 2;
    let pcm = match clip.wide {
        Some(w) if wide => {
            port.sample_rate = crate::media::clip::WIDE_RATE_HZ;
            w
        }
        _ => clip.narrow,
    };
    let id = format!("{PLAYER_PREFIX}{}", uuid::Uuid::new_v4());
    let handle =
        rooms.join_existing(conference_id, Participant::agent(id, port)).await.map_err(|r| r.error.to_string())?;
    let _ = endpoint.playback.send(Playback::Audio(pcm)).await;
    let _ = endpoint.playback.send(Playback::Mark("end".into())).await;
    tokio::spawn(async move {
        // The whole endpoint, not only its marks (a closure captures the fields
        // it names): the room takes a closed playback channel for the player's
        // end, and removed it after its first frame.
        let mut endpoint = endpoint;
        let limit = std::time::Duration::from_secs(seconds.min(600));
        let _ = tokio::time::timeout(limit, endpoint.marks.recv()).await;
        handle.leave();
    });
    Ok(())
}

/// The join of either call of a bridge keyed by `first` (the call `bridge` or
/// `transfer` was issued on): a private room of at most 4 (two calls and their
/// agents, if any).
pub fn bridge_join(first: &str) -> RoomJoin {
    RoomJoin {
        room: RoomRef::Name(format!("{BRIDGE_PREFIX}{first}")),
        options: crate::room::RoomOptions { max_participants: 4, ..Default::default() },
        muted: false,
        held: false,
    }
}

/// `call.bridged` on each of two bridged calls, naming the other
/// (`bridged_call_control_id`, `bridged_call_leg_id`).
pub fn emit_bridged(bus: &EventBus, a: &CallInfo, b: &CallInfo) {
    for (me, them) in [(a, b), (b, a)] {
        let mut p = me.payload("answered");
        p.insert("bridged_call_control_id".into(), json!(them.ids.call_control_id));
        p.insert("bridged_call_leg_id".into(), json!(them.ids.call_leg_id));
        bus.emit(me.event("call.bridged", p));
    }
}

/// Call info remembered per participant while it is in a room (the call may be
/// gone from the registry by the time it has left).
struct Known {
    info: Option<CallInfo>,
}

/// Turns room events into `conference.*` webhooks (and `call.bridged` nothing:
/// bridge rooms are silent here) until the registry is dropped. A participant
/// removed by `end` has its call hung up.
pub fn spawn_events(mut rx: mpsc::UnboundedReceiver<RoomEvent>, bus: EventBus, calls: CallRegistry) {
    tokio::spawn(async move {
        let mut known: HashMap<(uuid::Uuid, String), Known> = HashMap::new();
        // The ordering key (call_session_id) of each room's events: its creator's,
        // then of whoever joined or left last, so created < joined < left < ended.
        let mut keys: HashMap<uuid::Uuid, Option<String>> = HashMap::new();
        // The calls in each bridge room.
        let mut bridges: HashMap<uuid::Uuid, Vec<String>> = HashMap::new();
        while let Some(ev) = rx.recv().await {
            let name = match &ev {
                RoomEvent::Created { name, .. }
                | RoomEvent::ParticipantJoined { name, .. }
                | RoomEvent::ParticipantLeft { name, .. }
                | RoomEvent::Ended { name, .. } => name.clone(),
            };
            let player = match &ev {
                RoomEvent::ParticipantJoined { participant_id, .. }
                | RoomEvent::ParticipantLeft { participant_id, .. } => participant_id.starts_with(PLAYER_PREFIX),
                _ => false,
            };
            if name.starts_with(BRIDGE_PREFIX) {
                unbridge(&ev, &mut bridges, &calls);
                continue;
            }
            if name.starts_with(MONITOR_PREFIX) {
                continue;
            }
            if player {
                continue;
            }
            let info_of = |id: &str| match calls.get(id) {
                Lookup::Live(view) => Some(view.info),
                _ => None,
            };
            let event = match ev {
                RoomEvent::Created { conference_id, name, created_by, occurred_at } => {
                    let info = info_of(&created_by);
                    keys.insert(conference_id, info.as_ref().map(|i| i.ids.call_session_id.clone()));
                    let mut p = participant_payload(conference_id, &created_by, info.as_ref());
                    p.insert("name".into(), json!(name));
                    event("conference.created", occurred_at, keys[&conference_id].clone(), p)
                }
                RoomEvent::ParticipantJoined { conference_id, name, participant_id, occurred_at } => {
                    let info = info_of(&participant_id);
                    let key = ordering_key(&mut keys, conference_id, info.as_ref());
                    let mut p = participant_payload(conference_id, &participant_id, info.as_ref());
                    p.insert("name".into(), json!(name));
                    known.insert((conference_id, participant_id), Known { info });
                    event("conference.participant.joined", occurred_at, key, p)
                }
                RoomEvent::ParticipantLeft { conference_id, name, participant_id, reason, occurred_at } => {
                    let info = known.remove(&(conference_id, participant_id.clone())).and_then(|k| k.info);
                    let key = ordering_key(&mut keys, conference_id, info.as_ref());
                    let mut p = participant_payload(conference_id, &participant_id, info.as_ref());
                    p.insert("name".into(), json!(name));
                    p.insert(
                        "reason".into(),
                        json!(match reason {
                            LeaveReason::Left => "left",
                            LeaveReason::Hangup => "hangup",
                            LeaveReason::RoomEnded => "conference_ended",
                            LeaveReason::Failed(why) => why,
                        }),
                    );
                    if reason == LeaveReason::RoomEnded && participant_type(&participant_id) == "sip" {
                        // Telnyx `end`: the participants' calls are hung up.
                        let calls = calls.clone();
                        let id = participant_id.clone();
                        tokio::spawn(async move { calls.command(&id, Action::Hangup).await });
                    }
                    event("conference.participant.left", occurred_at, key, p)
                }
                RoomEvent::Ended { conference_id, name, reason, occurred_at } => {
                    let key = keys.remove(&conference_id).flatten();
                    let mut p = Map::new();
                    p.insert("conference_id".into(), json!(conference_id.to_string()));
                    p.insert("name".into(), json!(name));
                    p.insert("reason".into(), json!(reason.as_str()));
                    event("conference.ended", occurred_at, key, p)
                }
            };
            bus.emit(event);
        }
    });
}

/// The ordering key (`call_session_id`) of a participant's event: its call's
/// session; a participant that is no call (a call's agent) keeps the room's
/// current key, so its events stay in the room's order. Becomes the room's key.
fn ordering_key(
    keys: &mut HashMap<uuid::Uuid, Option<String>>,
    conference_id: uuid::Uuid,
    info: Option<&CallInfo>,
) -> Option<String> {
    let key = match info {
        Some(i) => Some(i.ids.call_session_id.clone()),
        None => keys.get(&conference_id).cloned().flatten(),
    };
    keys.insert(conference_id, key.clone());
    key
}

/// Bookkeeping of a bridge room's event: when one bridged call hangs up, the
/// other is hung up too (Telnyx's default), or only leaves the bridge when it
/// asked for `park_after_unbridge`.
fn unbridge(ev: &RoomEvent, bridges: &mut HashMap<uuid::Uuid, Vec<String>>, calls: &CallRegistry) {
    match ev {
        RoomEvent::ParticipantJoined { conference_id, participant_id, .. }
            if participant_type(participant_id) == "sip" =>
        {
            bridges.entry(*conference_id).or_default().push(participant_id.clone());
        }
        RoomEvent::ParticipantLeft { conference_id, participant_id, reason, .. } => {
            let Some(ids) = bridges.get_mut(conference_id) else { return };
            ids.retain(|id| id != participant_id);
            if *reason == LeaveReason::Hangup && participant_type(participant_id) == "sip" {
                for other in ids.drain(..) {
                    let calls = calls.clone();
                    // `park_after_unbridge`: out of the bridge, still up.
                    let park = matches!(calls.get(&other), Lookup::Live(v) if v.park_after_unbridge);
                    let action = if park { Action::LeaveRoom } else { Action::Hangup };
                    tokio::spawn(async move { calls.command(&other, action).await });
                }
            }
        }
        RoomEvent::Ended { conference_id, .. } => {
            bridges.remove(conference_id);
        }
        _ => {}
    }
}

fn event(event_type: &str, at: std::time::SystemTime, key: Option<String>, payload: Map<String, Value>) -> CallEvent {
    let mut e = CallEvent::new(event_type, key, payload);
    e.occurred_at = at;
    e
}

/// Telnyx's participant fields: `conference_id` and the call's ids (when the
/// participant is a known call).
fn participant_payload(conference_id: uuid::Uuid, participant_id: &str, info: Option<&CallInfo>) -> Map<String, Value> {
    let mut p = Map::new();
    p.insert("conference_id".into(), json!(conference_id.to_string()));
    p.insert("call_control_id".into(), json!(participant_id));
    p.insert("participant_type".into(), json!(participant_type(participant_id)));
    if let Some(i) = info {
        p.insert("call_leg_id".into(), json!(i.ids.call_leg_id));
        p.insert("call_session_id".into(), json!(i.ids.call_session_id));
        p.insert("connection_id".into(), json!(i.connection_id));
        p.insert("client_state".into(), json!(i.client_state));
        p.insert("from".into(), json!(i.from));
        p.insert("to".into(), json!(i.to));
    }
    p
}

/// The rooms of a new SIP stack, running on `engine`, with their event
/// translation running.
pub fn start(bus: &EventBus, calls: &CallRegistry, engine: Arc<Engine>) -> Rooms {
    let (tx, rx) = mpsc::unbounded_channel();
    spawn_events(rx, bus.clone(), calls.clone());
    Rooms::new(tx, engine)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_names_of_routes() {
        assert_eq!(room_for(&RouteTarget::Room("support".into()), "+1415"), Some("support".into()));
        assert_eq!(
            room_for(&RouteTarget::RoomPerCaller("call-".into()), "+14155550123"),
            Some("call-+14155550123".into())
        );
        assert_eq!(room_for(&RouteTarget::RoomPerCaller("call-".into()), "sip:a b"), Some("call-sipab".into()));
        assert_eq!(room_for(&RouteTarget::RoomPerCaller("c-".into()), ""), Some("c-anonymous".into()));
        assert_eq!(room_for(&RouteTarget::Agent("x".into()), "+1"), None);
    }
}

/// Recordings of whole rooms (conference `record_start`/`record_stop`): a
/// listener hears the full mix and feeds one mono WAV per span
/// (`{conference_id}.wav` under `[recording] dir`); `record_stop` (or the room
/// ending) finishes it and emits `conference.recording.saved`. The listener is
/// G.711 at 8 kHz, so a room that mixes at 16 kHz is recorded narrowband (a
/// wideband participant's own call recording comes from its leg's tap).
#[derive(Clone)]
pub struct RoomRecordings {
    active: Arc<std::sync::Mutex<HashMap<uuid::Uuid, tokio::sync::oneshot::Sender<()>>>>,
    config: tokio::sync::watch::Receiver<Arc<crate::config::Config>>,
    rooms: Rooms,
    events: EventBus,
}

impl RoomRecordings {
    /// Recordings of `rooms`' mixes, per the `[recording]` in force, reported on
    /// `events`.
    pub fn new(
        config: tokio::sync::watch::Receiver<Arc<crate::config::Config>>,
        rooms: Rooms,
        events: EventBus,
    ) -> Self {
        Self { active: Arc::default(), config, rooms, events }
    }

    /// Starts recording the room `conference_id` (named `name`).
    ///
    /// # Errors
    /// Recording is disabled, a recording of this room runs already, the file
    /// could not be created, or the room is gone.
    pub async fn start(&self, conference_id: uuid::Uuid, name: &str) -> Result<(), String> {
        let cfg = self.config.borrow().clone();
        if !cfg.recording.enabled {
            return Err("recording is disabled ([recording] enabled = false)".into());
        }
        if self.lock().contains_key(&conference_id) {
            return Err("the conference is already being recorded".into());
        }
        let mut rec_cfg = cfg.recording.clone();
        rec_cfg.channels = crate::config::Channels::Single;
        let id = conference_id.to_string();
        // A room that mixes at 16 kHz now (a wideband participant is in it) is
        // recorded at 16 kHz, and keeps mixing at 16 kHz while it is recorded.
        let wide = self.rooms.find(&id).is_some_and(|r| r.wideband);
        let (rate, hz) =
            if wide { (crate::room::Rate::Wideband, 16_000) } else { (crate::room::Rate::Narrowband, 8000) };
        let rec = crate::call::recording::CallRecording::start(&rec_cfg, &id, &id, 1, hz).map_err(|e| e.to_string())?;
        let (tx, mut chunks) = mpsc::channel(64);
        let listener = Participant::listener(format!("rec:{id}"), tx, crate::media::g711::G711::Pcmu).with_rate(rate);
        let handle = self.rooms.join_existing(conference_id, listener).await.map_err(|r| r.error.to_string())?;
        let (stop_tx, mut stop) = tokio::sync::oneshot::channel();
        self.lock().insert(conference_id, stop_tx);
        let (me, bus, api_base, name) = (self.clone(), self.events.clone(), cfg.api.base_url(), name.to_string());
        tokio::spawn(async move {
            let tap = rec.tap();
            let mut wide = Vec::with_capacity(crate::media::pcm::CHUNK_BYTES / 2);
            loop {
                tokio::select! {
                    c = chunks.recv() => match c {
                        Some(c) => match c.g711() {
                            Some((law, bytes)) => tap.heard(law, bytes),
                            None => {
                                // A 16 kHz span records the samples; the G.711 version is unused.
                                wide.clear();
                                c.wide_samples(&mut wide);
                                tap.heard_wideband(crate::media::g711::G711::Pcmu, &[], &wide);
                            }
                        },
                        None => break, // the room ended
                    },
                    _ = &mut stop => break,
                }
            }
            drop(handle);
            me.lock().remove(&conference_id);
            let saved = tokio::task::spawn_blocking(move || rec.stop_blocking()).await.ok().flatten();
            if let Some(saved) = saved {
                let mut p = crate::record::recording_saved_fields(&saved, &api_base);
                // Not in the recordings index (no call): no download route.
                p.remove("recording_urls");
                p.remove("public_recording_urls");
                p.insert("conference_id".into(), json!(conference_id.to_string()));
                p.insert("name".into(), json!(name));
                p.insert("format".into(), json!("wav"));
                bus.emit(CallEvent::new("conference.recording.saved", None, p));
            }
        });
        Ok(())
    }

    /// Stops the room's recording (its event follows once the file is finished).
    ///
    /// # Errors
    /// The room is not being recorded.
    pub fn stop(&self, conference_id: uuid::Uuid) -> Result<(), String> {
        match self.lock().remove(&conference_id) {
            Some(stop) => {
                let _ = stop.send(());
                Ok(())
            }
            None => Err("the conference is not being recorded".into()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<uuid::Uuid, tokio::sync::oneshot::Sender<()>>> {
        self.active.lock().unwrap_or_else(|e| e.into_inner())
    }
}
