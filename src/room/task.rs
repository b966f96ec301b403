//! The tokio task of one room: owns the [`Mixer`], the participants' channels and
//! their jitter buffers / playout queues, and ticks every 20 ms on the box's
//! clock. Commands (join, leave, mute, hold, list, end) arrive on an unbounded
//! channel from the registry and from participant handles.
//!
//! Pacing is the box's one 20 ms schedule (`media::pacer::Pacer`, the same the
//! media engine's PCM jobs follow): one frame per 20 ms deadline; a late wake-up
//! mixes up to 5 frames at once to catch up, and beyond 100 ms behind the
//! schedule restarts from now. Each frame mixed more than 5 ms after
//! its deadline (and each skipped one) counts as a late tick in [`RoomStats`].
//!
//! Per tick nothing is allocated: chunks and frames are fixed-size values sent
//! with `try_send` (a slow participant loses frames, counted, and never stalls
//! the room), G.711 is decoded into a stack buffer, the jitter buffers and the
//! mixer use their own fixed arrays. Joins and leaves allocate.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, SystemTime};

use tokio::sync::mpsc::error::{TryRecvError, TrySendError};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use uuid::Uuid;

use super::jitter::JitterBuffer;
use super::mixer::{Mixer, ParticipantKey, Rate, Role};
use super::{
    Attachment, EndReason, JoinError, LeaveReason, Participant, ParticipantInfo, ParticipantKind, RoomEvent,
    RoomOptions, RoomStats,
};
use crate::media::g711::G711;
use crate::media::pacer::Pacer;
use crate::media::pcm::{CHUNK_BYTES, Chunk, Direction, PcmEndpoint, PcmFrame, Playback};
use crate::media::playout::{FRAME_SAMPLES, Playout};

/// Agent audio queued beyond this is dropped (two minutes, as for a call).
const MAX_AGENT_QUEUE: usize = 8000 * 120;

/// Which participants a command is for.
pub(super) enum Target {
    /// The membership made by one join (a [`super::ParticipantHandle`]).
    Serial(u64),
    /// These participant ids; empty = every participant (Telnyx
    /// `call_control_ids` left out).
    Ids(Vec<String>),
}

/// A request to the room task.
pub(super) enum Command {
    Join { participant: Participant, serial: u64, reply: oneshot::Sender<Result<(), (JoinError, Participant)>> },
    Leave { target: Target, reason: LeaveReason, reply: Option<oneshot::Sender<usize>> },
    SetMuted { target: Target, muted: bool, reply: Option<oneshot::Sender<usize>> },
    SetHeld { target: Target, held: bool, reply: Option<oneshot::Sender<usize>> },
    Participants { reply: oneshot::Sender<Vec<ParticipantInfo>> },
    End { reply: oneshot::Sender<()> },
}

/// Pacing counters written by the task, read by the registry.
#[derive(Default)]
pub(super) struct Counters {
    ticks: AtomicU64,
    late_ticks: AtomicU64,
    catch_up_ticks: AtomicU64,
    resyncs: AtomicU64,
    max_lateness_ns: AtomicU64,
    busy_ns: AtomicU64,
    dropped_frames: AtomicU64,
}

impl Counters {
    pub(super) fn snapshot(&self) -> RoomStats {
        RoomStats {
            ticks: self.ticks.load(Ordering::Relaxed),
            late_ticks: self.late_ticks.load(Ordering::Relaxed),
            catch_up_ticks: self.catch_up_ticks.load(Ordering::Relaxed),
            resyncs: self.resyncs.load(Ordering::Relaxed),
            max_lateness: Duration::from_nanos(self.max_lateness_ns.load(Ordering::Relaxed)),
            busy: Duration::from_nanos(self.busy_ns.load(Ordering::Relaxed)),
            dropped_frames: self.dropped_frames.load(Ordering::Relaxed),
        }
    }
}

/// What the registry and the task share about one room.
pub(super) struct Shared {
    pub(super) id: Uuid,
    pub(super) name: String,
    pub(super) created_at: SystemTime,
    pub(super) options: RoomOptions,
    /// Participants now (listeners not counted).
    pub(super) participants: AtomicUsize,
    pub(super) counters: Counters,
}

/// The registry's map entry of a room.
pub(super) struct Entry {
    pub(super) shared: Arc<Shared>,
    pub(super) commands: mpsc::UnboundedSender<Command>,
}

/// The registry's state, as far as a room task needs it (to remove itself).
pub(super) type Map = Mutex<std::collections::HashMap<String, Entry>>;

/// A participant's media connection and its per-participant state.
enum Media {
    Leg {
        endpoint: PcmEndpoint,
        jitter: Box<JitterBuffer>,
    },
    Agent {
        playback: mpsc::Receiver<Playback>,
        chunks: mpsc::Sender<Chunk>,
        marks: mpsc::UnboundedSender<String>,
        want_heard: bool,
        want_said: bool,
        playout: Box<Playout>,
        heard_timestamp: u32,
        said_timestamp: u32,
    },
    Listener {
        chunks: mpsc::Sender<Chunk>,
        codec: G711,
        timestamp: u32,
    },
}

struct Member {
    id: String,
    serial: u64,
    key: ParticipantKey,
    kind: ParticipantKind,
    joined_at: SystemTime,
    muted: bool,
    held: bool,
    media: Media,
    /// Set when its channels closed during a tick; removed after the tick.
    gone: bool,
}

impl Member {
    fn matches(&self, target: &Target) -> bool {
        match target {
            Target::Serial(s) => self.serial == *s,
            Target::Ids(ids) => self.kind != ParticipantKind::Listener && (ids.is_empty() || ids.contains(&self.id)),
        }
    }
}

/// A chunk of one frame of `pcm` (160 samples) encoded in `codec`.
fn chunk(direction: Direction, codec: G711, rtp_timestamp: u32, pcm: &[i16]) -> Chunk {
    let mut c = Chunk { direction, codec, len: 0, rtp_timestamp, data: [0; CHUNK_BYTES] };
    c.len = codec.encode(pcm, &mut c.data) as u16;
    c
}

/// True when a `try_send` failed because the receiver is gone; counts a full channel.
fn closed<T>(r: Result<(), TrySendError<T>>, dropped: &mut u64) -> bool {
    match r {
        Ok(()) => false,
        Err(TrySendError::Full(_)) => {
            *dropped += 1;
            false
        }
        Err(TrySendError::Closed(_)) => true,
    }
}

struct Room {
    shared: Arc<Shared>,
    registry: Weak<Map>,
    events: mpsc::UnboundedSender<RoomEvent>,
    mixer: Mixer,
    members: Vec<Member>,
}

impl Room {
    fn event(&self, event: RoomEvent) {
        let _ = self.events.send(event);
    }

    fn participant_count(&self) -> usize {
        self.members.iter().filter(|m| m.kind != ParticipantKind::Listener).count()
    }

    fn join(&mut self, participant: Participant, serial: u64) -> Result<(), (JoinError, Participant)> {
        if self.members.iter().any(|m| m.id == participant.id) {
            return Err((JoinError::AlreadyJoined(participant.id.clone()), participant));
        }
        let kind = participant.kind();
        let max = self.shared.options.max_participants;
        if kind != ParticipantKind::Listener && self.participant_count() >= max {
            let error = JoinError::Full { name: self.shared.name.clone(), max_participants: max };
            return Err((error, participant));
        }
        let Participant { id, attachment, muted, held } = participant;
        let (role, media) = match attachment {
            Attachment::Leg(endpoint) | Attachment::WebRtc(endpoint) => {
                let jitter = Box::new(JitterBuffer::new(8000, self.shared.options.jitter_delay));
                (Role::Participant, Media::Leg { endpoint, jitter })
            }
            Attachment::Agent(port) => {
                // The room keeps no sender into its own playback channel, so the
                // channel reports the agent stream's end.
                drop(port.control);
                let media = Media::Agent {
                    playback: port.playback,
                    chunks: port.chunks,
                    marks: port.marks,
                    want_heard: port.want_heard,
                    want_said: port.want_said,
                    playout: Box::new(Playout::new(MAX_AGENT_QUEUE)),
                    heard_timestamp: 0,
                    said_timestamp: 0,
                };
                (Role::Participant, media)
            }
            Attachment::Listener { chunks, codec } => (Role::Listener, Media::Listener { chunks, codec, timestamp: 0 }),
        };
        let key = self.mixer.add(Rate::Narrowband, role);
        self.mixer.set_muted(key, muted);
        self.mixer.set_held(key, held);
        if kind != ParticipantKind::Listener {
            self.event(RoomEvent::ParticipantJoined {
                conference_id: self.shared.id,
                name: self.shared.name.clone(),
                participant_id: id.clone(),
                occurred_at: SystemTime::now(),
            });
        }
        tracing::debug!(conference_id = %self.shared.id, room = %self.shared.name, participant = %id, ?kind, "joined room");
        let member = Member { id, serial, key, kind, joined_at: SystemTime::now(), muted, held, media, gone: false };
        self.members.push(member);
        self.shared.participants.store(self.participant_count(), Ordering::Relaxed);
        Ok(())
    }

    /// Removes the members matching `target`; returns how many.
    fn leave(&mut self, target: &Target, reason: LeaveReason) -> usize {
        let mut removed = 0;
        let mut i = 0;
        while i < self.members.len() {
            if self.members[i].matches(target) {
                let m = self.members.swap_remove(i);
                self.remove(m, reason);
                removed += 1;
            } else {
                i += 1;
            }
        }
        removed
    }

    fn remove(&mut self, m: Member, reason: LeaveReason) {
        self.mixer.remove(m.key);
        tracing::debug!(conference_id = %self.shared.id, participant = %m.id, ?reason, "left room");
        if m.kind != ParticipantKind::Listener {
            self.event(RoomEvent::ParticipantLeft {
                conference_id: self.shared.id,
                name: self.shared.name.clone(),
                participant_id: m.id,
                reason,
                occurred_at: SystemTime::now(),
            });
        }
        self.shared.participants.store(self.participant_count(), Ordering::Relaxed);
    }

    fn set(&mut self, target: &Target, muted: Option<bool>, held: Option<bool>) -> usize {
        let mut n = 0;
        for m in self.members.iter_mut().filter(|m| m.matches(target)) {
            if let Some(muted) = muted {
                m.muted = muted;
                self.mixer.set_muted(m.key, muted);
            }
            if let Some(held) = held {
                if m.held && !held {
                    // Off hold: the audio buffered while held is stale.
                    if let Media::Leg { jitter, .. } = &mut m.media {
                        jitter.reset();
                    }
                }
                m.held = held;
                self.mixer.set_held(m.key, held);
            }
            n += 1;
        }
        n
    }

    fn participants(&self) -> Vec<ParticipantInfo> {
        self.members
            .iter()
            .filter(|m| m.kind != ParticipantKind::Listener)
            .map(|m| ParticipantInfo {
                participant_id: m.id.clone(),
                kind: m.kind,
                muted: m.muted,
                held: m.held,
                joined_at: m.joined_at,
            })
            .collect()
    }

    /// One 20 ms frame: inputs, mix, outputs. Returns frames participants lost.
    fn tick(&mut self) -> u64 {
        let mut dropped = 0u64;
        let mut pcm = [0i16; CHUNK_BYTES];
        let mut frame = [0i16; FRAME_SAMPLES];
        // Inputs.
        for m in self.members.iter_mut() {
            match &mut m.media {
                Media::Leg { endpoint, jitter } => {
                    loop {
                        match endpoint.chunks.try_recv() {
                            Ok(c) if c.direction == Direction::Heard => {
                                let n = c.codec.decode(c.audio(), &mut pcm);
                                jitter.push(c.rtp_timestamp, &pcm[..n]);
                            }
                            Ok(_) => {}
                            Err(TryRecvError::Empty) => break,
                            Err(TryRecvError::Disconnected) => {
                                m.gone = true;
                                break;
                            }
                        }
                    }
                    if let Some(input) = self.mixer.input_mut(m.key) {
                        jitter.pop_frame(input);
                    }
                }
                Media::Agent { playback, chunks, marks, want_said, playout, said_timestamp, .. } => {
                    loop {
                        match playback.try_recv() {
                            Ok(Playback::Audio(audio)) => playout.push(&audio),
                            Ok(Playback::Mark(name)) => playout.mark(name),
                            Ok(Playback::Clear) => {
                                for name in playout.clear() {
                                    let _ = marks.send(name);
                                }
                            }
                            // Box playback belongs to a call's own leg, not to a room.
                            Ok(Playback::Play { .. } | Playback::StopPlay) => {}
                            Err(TryRecvError::Empty) => break,
                            Err(TryRecvError::Disconnected) => {
                                m.gone = true;
                                break;
                            }
                        }
                    }
                    playout.next_frame(&mut frame);
                    while let Some(name) = playout.pop_reached() {
                        let _ = marks.send(name);
                    }
                    if let Some(input) = self.mixer.input_mut(m.key) {
                        input.copy_from_slice(&frame);
                    }
                    if *want_said {
                        let c = chunk(Direction::Said, G711::Pcmu, *said_timestamp, &frame);
                        m.gone |= closed(chunks.try_send(c), &mut dropped);
                    }
                    *said_timestamp = said_timestamp.wrapping_add(FRAME_SAMPLES as u32);
                }
                Media::Listener { .. } => {}
            }
        }
        self.mixer.mix();
        // Outputs.
        for m in self.members.iter_mut() {
            let Some(out) = self.mixer.output(m.key) else { continue };
            match &mut m.media {
                Media::Leg { endpoint, .. } => {
                    let mut f = PcmFrame { len: out.len() as u16, samples: [0; 320] };
                    f.samples[..out.len()].copy_from_slice(out);
                    if let Some(frames) = &endpoint.frames {
                        m.gone |= closed(frames.try_send(f), &mut dropped);
                    }
                }
                Media::Agent { chunks, want_heard, heard_timestamp, .. } => {
                    if *want_heard {
                        let c = chunk(Direction::Heard, G711::Pcmu, *heard_timestamp, out);
                        m.gone |= closed(chunks.try_send(c), &mut dropped);
                    }
                    *heard_timestamp = heard_timestamp.wrapping_add(out.len() as u32);
                }
                Media::Listener { chunks, codec, timestamp } => {
                    let c = chunk(Direction::Heard, *codec, *timestamp, out);
                    m.gone |= closed(chunks.try_send(c), &mut dropped);
                    *timestamp = timestamp.wrapping_add(out.len() as u32);
                }
            }
        }
        dropped
    }

    /// Removes members whose channels closed during the last tick.
    fn sweep(&mut self) -> bool {
        if !self.members.iter().any(|m| m.gone) {
            return false;
        }
        let mut i = 0;
        while i < self.members.len() {
            if self.members[i].gone {
                let m = self.members.swap_remove(i);
                self.remove(m, LeaveReason::Hangup);
            } else {
                i += 1;
            }
        }
        true
    }

    /// Ends the room: remaining members leave with `RoomEnded`, the room leaves
    /// the registry, queued commands are answered, and `Ended` is reported.
    fn end(&mut self, reason: EndReason, commands: &mut mpsc::UnboundedReceiver<Command>) {
        self.leave(&Target::Ids(Vec::new()), LeaveReason::RoomEnded);
        while let Some(m) = self.members.pop() {
            self.remove(m, LeaveReason::RoomEnded); // listeners
        }
        if let Some(registry) = self.registry.upgrade() {
            let mut map = registry.lock().unwrap_or_else(PoisonError::into_inner);
            if map.get(&self.shared.name).is_some_and(|e| e.shared.id == self.shared.id) {
                map.remove(&self.shared.name);
            }
        }
        // Nothing can be queued after this: the sender left the registry above,
        // and handles only send leave/mute/hold, answered here with 0.
        commands.close();
        while let Ok(c) = commands.try_recv() {
            match c {
                Command::Join { participant, reply, .. } => {
                    let _ = reply.send(Err((JoinError::Ended, participant)));
                }
                Command::Leave { reply, .. } | Command::SetMuted { reply, .. } | Command::SetHeld { reply, .. } => {
                    if let Some(r) = reply {
                        let _ = r.send(0);
                    }
                }
                Command::Participants { reply } => {
                    let _ = reply.send(Vec::new());
                }
                Command::End { reply } => {
                    let _ = reply.send(());
                }
            }
        }
        tracing::info!(conference_id = %self.shared.id, room = %self.shared.name, reason = reason.as_str(), "room ended");
        self.event(RoomEvent::Ended {
            conference_id: self.shared.id,
            name: self.shared.name.clone(),
            reason,
            occurred_at: SystemTime::now(),
        });
    }
}

/// Runs one room until it ends. `created_by` is the participant whose join
/// (already queued on `commands`) created it.
pub(super) async fn run(
    shared: Arc<Shared>,
    created_by: String,
    mut commands: mpsc::UnboundedReceiver<Command>,
    events: mpsc::UnboundedSender<RoomEvent>,
    registry: Weak<Map>,
) {
    let mut room = Room { shared: Arc::clone(&shared), registry, events, mixer: Mixer::new(), members: Vec::new() };
    tracing::info!(conference_id = %shared.id, room = %shared.name, "room created");
    room.event(RoomEvent::Created {
        conference_id: shared.id,
        name: shared.name.clone(),
        created_by,
        occurred_at: shared.created_at,
    });
    let linger = shared.options.linger;
    // Armed when the room becomes empty. Not at creation: the creating join is
    // the first command.
    let mut empty_until: Option<Instant> = None;
    let mut pacer = Pacer::new(std::time::Instant::now());
    let counters = &shared.counters;
    let end_reason = loop {
        tokio::select! {
            c = commands.recv() => {
                let Some(c) = c else { break EndReason::AllLeft };
                match c {
                    Command::Join { participant, serial, reply } => {
                        let _ = reply.send(room.join(participant, serial));
                    }
                    Command::Leave { target, reason, reply } => {
                        let n = room.leave(&target, reason);
                        if let Some(r) = reply {
                            let _ = r.send(n);
                        }
                    }
                    Command::SetMuted { target, muted, reply } => {
                        let n = room.set(&target, Some(muted), None);
                        if let Some(r) = reply {
                            let _ = r.send(n);
                        }
                    }
                    Command::SetHeld { target, held, reply } => {
                        let n = room.set(&target, None, Some(held));
                        if let Some(r) = reply {
                            let _ = r.send(n);
                        }
                    }
                    Command::Participants { reply } => {
                        let _ = reply.send(room.participants());
                    }
                    Command::End { reply } => {
                        room.end(EndReason::EndedViaApi, &mut commands);
                        let _ = reply.send(());
                        return;
                    }
                }
            }
            _ = tokio::time::sleep_until(Instant::from_std(pacer.poll_timeout())) => {
                let now = Instant::now();
                let due = pacer.handle_timeout(now.into_std());
                if due.resynced {
                    counters.resyncs.fetch_add(1, Ordering::Relaxed);
                }
                let (due, late, max_lateness) = (due.frames, due.late, due.max_lateness);
                let mut dropped = 0;
                for _ in 0..due {
                    dropped += room.tick();
                }
                counters.busy_ns.fetch_add(now.elapsed().as_nanos() as u64, Ordering::Relaxed);
                counters.ticks.fetch_add(u64::from(due), Ordering::Relaxed);
                counters.catch_up_ticks.fetch_add(u64::from(due.saturating_sub(1)), Ordering::Relaxed);
                counters.late_ticks.fetch_add(late, Ordering::Relaxed);
                counters.dropped_frames.fetch_add(dropped, Ordering::Relaxed);
                counters.max_lateness_ns.fetch_max(max_lateness.as_nanos() as u64, Ordering::Relaxed);
                room.sweep();
            }
            _ = tokio::time::sleep_until(empty_until.unwrap_or_else(Instant::now)), if empty_until.is_some() => {
                break EndReason::AllLeft;
            }
        }
        if room.participant_count() > 0 {
            empty_until = None;
        } else if empty_until.is_none() {
            if linger.is_zero() {
                break EndReason::AllLeft;
            }
            empty_until = Some(Instant::now() + linger);
        }
    };
    room.end(end_reason, &mut commands);
}
