//! One room as a job of the media engine ([`RoomJob`], a
//! `media::engine::TimerJob`): owns the [`Mixer`], the participants' channels and
//! their jitter buffers / playout queues, and is woken by its worker's timer
//! wheel on the box's 20 ms schedule. Sans-IO as far as the room goes: no socket,
//! no clock of its own (the worker passes `now`), no await; it runs on a media
//! worker thread beside calls' RTP, so it never blocks (the registry's map lock,
//! taken once when the room ends, is only ever held for a lookup and a send).
//!
//! Commands (join, leave, mute, hold, list, end) arrive on an unbounded channel
//! from the registry and from participant handles ([`RoomCommands`]); sending one
//! also wakes the job on its worker (`engine::Commands::wake`), which takes them
//! with `try_recv` at once: a command takes effect and is answered without
//! waiting for the next 20 ms tick. The empty-room linger is the job's other
//! deadline.
//!
//! Pacing is the box's one 20 ms schedule (`media::pacer::Pacer`, the same the
//! media engine's PCM jobs follow): one frame per 20 ms deadline; a late wake-up
//! mixes up to 5 frames at once to catch up, and beyond 100 ms behind the
//! schedule restarts from now. Each frame mixed more than 5 ms after
//! its deadline (and each skipped one) counts as a late tick in [`RoomStats`].
//!
//! Per tick nothing is allocated: chunks and frames are fixed-size values sent
//! with `try_send` (a slow participant loses frames, counted, and never stalls
//! the room), G.711 and 16 kHz `L16Wide` chunks are unpacked into a stack buffer, the jitter buffers and the
//! mixer use their own fixed arrays. Joins and leaves allocate.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::mpsc::error::{TryRecvError, TrySendError};
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use super::jitter::JitterBuffer;
use super::mixer::{Mixer, ParticipantKey, Rate, Role};
use super::{
    Attachment, EndReason, JoinError, LeaveReason, Participant, ParticipantInfo, ParticipantKind, RoomEvent,
    RoomOptions, RoomStats,
};
use crate::media::engine::{Task, TimerJob, TimerOutcome};
use crate::media::g711::G711;
use crate::media::pacer::Pacer;
use crate::media::pcm::{
    CHUNK_BYTES, Chunk, ChunkFormat, Direction, PcmEndpoint, PcmFrame, Playback, WIDE_FRAME_SAMPLES,
};
use crate::media::playout::Playout;

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

/// A request to the room job.
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
    /// The room mixes at 16 kHz now (a wideband participant is in it).
    pub(super) wideband: std::sync::atomic::AtomicBool,
    pub(super) counters: Counters,
    /// The room's job on the media engine, kept here so that nothing but the
    /// room ending itself stops it (dropping a `Task` stops its job); taken
    /// when the room ends. `None` until the registry has spawned it.
    pub(super) task: Mutex<Option<Task>>,
}

/// The registry's map entry of a room.
pub(super) struct Entry {
    pub(super) shared: Arc<Shared>,
    pub(super) commands: RoomCommands,
}

/// The sending end of a room's commands. Each command also wakes the room's job
/// on the media engine, so it is taken at once (as on the room's own task
/// before), not at the next 20 ms tick; the job's timer pass is what takes it.
#[derive(Clone)]
pub(super) struct RoomCommands {
    tx: mpsc::UnboundedSender<Command>,
    job: Arc<std::sync::OnceLock<crate::media::engine::Commands>>,
}

impl RoomCommands {
    /// Commands into `tx`; they wake the job once [`RoomCommands::set_job`] is
    /// called (until then the job, about to start, takes them when it starts).
    pub(super) fn new(tx: mpsc::UnboundedSender<Command>) -> Self {
        Self { tx, job: Arc::default() }
    }

    /// The room's job, to wake.
    pub(super) fn set_job(&self, job: crate::media::engine::Commands) {
        let _ = self.job.set(job);
    }

    /// Queues `command` and wakes the job. Errors when the room has ended.
    pub(super) fn send(&self, command: Command) -> Result<(), mpsc::error::SendError<Command>> {
        self.tx.send(command)?;
        if let Some(job) = self.job.get() {
            job.wake();
        }
        Ok(())
    }
}

/// The registry's state, as far as a room job needs it (to remove itself).
pub(super) type Map = Mutex<std::collections::HashMap<String, Entry>>;

/// A participant's media connection and its per-participant state.
enum Media {
    Leg {
        endpoint: PcmEndpoint,
        jitter: Box<JitterBuffer>,
        /// The rate of its chunks, jitter buffer and frames.
        rate: Rate,
    },
    Agent {
        /// Its port's rate: the rate of its playout, its frames and its chunks
        /// (G.711 at 8 kHz, `L16Wide` at 16 kHz).
        rate: Rate,
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
        /// 16 kHz: the full mix as `L16Wide` chunks (a room recording started
        /// while the room was wideband).
        rate: Rate,
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

/// One frame of `pcm` as chunks to an agent or listener at `rate`: one chunk
/// of 160 samples in `law`, or (16 kHz) `L16Wide` chunks of 80 samples each,
/// their timestamps counted from `rtp_timestamp` in samples at the rate.
/// `false` once the channel is closed; a full channel loses the chunk (counted
/// in `dropped`).
fn send_frame(
    chunks: &mpsc::Sender<Chunk>,
    direction: Direction,
    rate: Rate,
    law: G711,
    rtp_timestamp: u32,
    pcm: &[i16],
    dropped: &mut u64,
) -> bool {
    if rate == Rate::Narrowband {
        return !closed(chunks.try_send(chunk(direction, law, rtp_timestamp, pcm)), dropped);
    }
    for c in Chunk::wide(direction, rtp_timestamp, pcm) {
        if closed(chunks.try_send(c), dropped) {
            return false;
        }
    }
    true
}

/// A chunk of one frame of `pcm` (160 samples) encoded in `codec`.
fn chunk(direction: Direction, codec: G711, rtp_timestamp: u32, pcm: &[i16]) -> Chunk {
    let mut c = Chunk { direction, codec: ChunkFormat::G711(codec), len: 0, rtp_timestamp, data: [0; CHUNK_BYTES] };
    c.len = codec.encode(pcm, &mut c.data) as u16;
    c
}

/// A leg's heard chunk as PCM16 at the participant's `rate`, into `pcm`: the
/// timestamp to file it under and the samples written. A chunk in the other
/// rate's format (the leg's codec changed by a re-INVITE while in the room) is
/// converted crudely — sample repetition up, decimation down — with its
/// timestamp scaled; the jitter buffer re-anchors once on the change.
fn heard_pcm(c: &Chunk, rate: Rate, pcm: &mut [i16; 2 * CHUNK_BYTES]) -> (u32, usize) {
    let mut n = 0;
    match (c.codec, rate) {
        (ChunkFormat::G711(law), Rate::Narrowband) => (c.rtp_timestamp, law.decode(c.audio(), &mut pcm[..])),
        (ChunkFormat::G711(law), Rate::Wideband) => {
            let mut narrow = [0i16; CHUNK_BYTES];
            let len = law.decode(c.audio(), &mut narrow);
            for (pair, &s) in pcm.chunks_exact_mut(2).zip(&narrow[..len]) {
                pair.fill(s);
            }
            (c.rtp_timestamp.wrapping_mul(2), 2 * len)
        }
        (ChunkFormat::L16Wide, _) => {
            // Every sample at 16 kHz, every other one at 8 kHz.
            let step = if rate == Rate::Wideband { 2 } else { 4 };
            for (o, b) in pcm.iter_mut().zip(c.audio().chunks_exact(step)) {
                *o = i16::from_ne_bytes([b[0], b[1]]);
                n += 1;
            }
            let ts = if rate == Rate::Wideband { c.rtp_timestamp } else { c.rtp_timestamp / 2 };
            (ts, n)
        }
    }
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
        let Participant { id, attachment, muted, held, rate } = participant;
        let (role, media) = match attachment {
            Attachment::Leg(endpoint) | Attachment::WebRtc(endpoint) => {
                let jitter = Box::new(JitterBuffer::new(rate.hz(), self.shared.options.jitter_delay));
                (Role::Participant, Media::Leg { endpoint, jitter, rate })
            }
            Attachment::Agent(port) => {
                // The room keeps no sender into its own playback channel, so the
                // channel reports the agent stream's end.
                drop(port.control);
                let media = Media::Agent {
                    rate: Rate::from_hz(port.sample_rate).unwrap_or(Rate::Narrowband),
                    playback: port.playback,
                    chunks: port.chunks,
                    marks: port.marks,
                    want_heard: port.want_heard,
                    want_said: port.want_said,
                    playout: Box::new(Playout::new(MAX_AGENT_QUEUE * (port.sample_rate as usize / 8000).max(1))),
                    heard_timestamp: 0,
                    said_timestamp: 0,
                };
                (Role::Participant, media)
            }
            Attachment::Listener { chunks, codec } => {
                (Role::Listener, Media::Listener { chunks, codec, timestamp: 0, rate })
            }
        };
        let rate = match &media {
            Media::Leg { rate, .. } | Media::Agent { rate, .. } | Media::Listener { rate, .. } => *rate,
        };
        let key = self.mixer.add(rate, role);
        self.shared.wideband.store(self.mixer.rate() == Rate::Wideband, Ordering::Relaxed);
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
        self.shared.wideband.store(self.mixer.rate() == Rate::Wideband, Ordering::Relaxed);
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
        let mut pcm = [0i16; 2 * CHUNK_BYTES];
        let mut frame = [0i16; WIDE_FRAME_SAMPLES];
        // Inputs.
        for m in self.members.iter_mut() {
            match &mut m.media {
                Media::Leg { endpoint, jitter, rate } => {
                    loop {
                        match endpoint.chunks.try_recv() {
                            Ok(c) if c.direction == Direction::Heard => {
                                let (ts, n) = heard_pcm(&c, *rate, &mut pcm);
                                jitter.push(ts, &pcm[..n]);
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
                Media::Agent { rate, playback, chunks, marks, want_said, playout, said_timestamp, .. } => {
                    let frame = &mut frame[..rate.frame_samples()];
                    loop {
                        match playback.try_recv() {
                            Ok(Playback::Audio(audio) | Playback::AudioAt(audio, _)) => playout.push(&audio),
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
                    playout.next_frame(frame);
                    while let Some(name) = playout.pop_reached() {
                        let _ = marks.send(name);
                    }
                    if let Some(input) = self.mixer.input_mut(m.key) {
                        input.copy_from_slice(frame);
                    }
                    if *want_said {
                        m.gone |= !send_frame(
                            chunks,
                            Direction::Said,
                            *rate,
                            G711::Pcmu,
                            *said_timestamp,
                            frame,
                            &mut dropped,
                        );
                    }
                    *said_timestamp = said_timestamp.wrapping_add(frame.len() as u32);
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
                Media::Agent { rate, chunks, want_heard, heard_timestamp, .. } => {
                    if *want_heard {
                        m.gone |= !send_frame(
                            chunks,
                            Direction::Heard,
                            *rate,
                            G711::Pcmu,
                            *heard_timestamp,
                            out,
                            &mut dropped,
                        );
                    }
                    *heard_timestamp = heard_timestamp.wrapping_add(out.len() as u32);
                }
                Media::Listener { chunks, codec, timestamp, rate } => {
                    m.gone |= !send_frame(chunks, Direction::Heard, *rate, *codec, *timestamp, out, &mut dropped);
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

/// One room as a job of the media engine: the [`Room`], its command channel,
/// its place on the box's 20 ms schedule and its empty-room linger. The worker
/// calls [`TimerJob::on_timer`] at its deadline (the next frame, or the end of
/// the linger if sooner).
pub(super) struct RoomJob {
    room: Room,
    commands: mpsc::UnboundedReceiver<Command>,
    pacer: Pacer,
    /// Armed when the room becomes empty. Not at creation: the creating join is
    /// the first command.
    empty_until: Option<Instant>,
    ended: bool,
}

impl RoomJob {
    /// A new room, created by `created_by` (whose join is, or is about to be,
    /// queued on `commands`), its first frame due 20 ms after `now`. Reports
    /// [`RoomEvent::Created`].
    pub(super) fn new(
        shared: Arc<Shared>,
        created_by: String,
        commands: mpsc::UnboundedReceiver<Command>,
        events: mpsc::UnboundedSender<RoomEvent>,
        registry: Weak<Map>,
        now: Instant,
    ) -> Self {
        tracing::info!(conference_id = %shared.id, room = %shared.name, "room created");
        let room = Room { shared, registry, events, mixer: Mixer::new(), members: Vec::new() };
        room.event(RoomEvent::Created {
            conference_id: room.shared.id,
            name: room.shared.name.clone(),
            created_by,
            occurred_at: room.shared.created_at,
        });
        RoomJob { room, commands, pacer: Pacer::new(now), empty_until: None, ended: false }
    }

    /// Applies one command; an `End` is handed back (its reply) for the caller
    /// to end the room.
    fn command(&mut self, c: Command) -> Option<oneshot::Sender<()>> {
        let room = &mut self.room;
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
            Command::End { reply } => return Some(reply),
        }
        None
    }

    /// Ends the room (`Room::end`) and lets go of its engine task.
    fn end(&mut self, reason: EndReason) -> TimerOutcome {
        self.room.end(reason, &mut self.commands);
        self.ended = true;
        // The room's own task: dropping it asks the worker to stop a job that
        // is finishing anyway (the request finds no job and is ignored).
        let task = self.room.shared.task.lock().unwrap_or_else(PoisonError::into_inner).take();
        drop(task);
        TimerOutcome::Finished
    }

    /// The frames due at `now`: mixed, counted, then members whose channels
    /// closed are removed. Returns the frames mixed.
    fn frames(&mut self, now: Instant) -> u32 {
        let started = Instant::now();
        let due = self.pacer.handle_timeout(now);
        let mut dropped = 0;
        for _ in 0..due.frames {
            dropped += self.room.tick();
        }
        let counters = &self.room.shared.counters;
        if due.resynced {
            counters.resyncs.fetch_add(1, Ordering::Relaxed);
        }
        counters.busy_ns.fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
        counters.ticks.fetch_add(u64::from(due.frames), Ordering::Relaxed);
        counters.catch_up_ticks.fetch_add(u64::from(due.frames.saturating_sub(1)), Ordering::Relaxed);
        counters.late_ticks.fetch_add(due.late, Ordering::Relaxed);
        counters.dropped_frames.fetch_add(dropped, Ordering::Relaxed);
        counters.max_lateness_ns.fetch_max(due.max_lateness.as_nanos() as u64, Ordering::Relaxed);
        self.room.sweep();
        due.frames
    }
}

impl TimerJob for RoomJob {
    /// One wake-up: the queued commands (an `End`, or the channel closed, ends
    /// the room here), the frames due, then the empty-room check (after any
    /// command or frame, as the room's own loop did after each event).
    fn on_timer(&mut self, now: Instant) -> TimerOutcome {
        if self.ended {
            return TimerOutcome::Finished;
        }
        let mut handled = false;
        loop {
            match self.commands.try_recv() {
                Ok(c) => {
                    if let Some(reply) = self.command(c) {
                        let outcome = self.end(EndReason::EndedViaApi);
                        let _ = reply.send(());
                        return outcome;
                    }
                    handled = true;
                }
                Err(TryRecvError::Empty) => break,
                // Every sender is gone (the registry's and every handle's).
                Err(TryRecvError::Disconnected) => return self.end(EndReason::AllLeft),
            }
        }
        if now >= self.pacer.poll_timeout() && self.frames(now) > 0 {
            handled = true;
        }
        if self.room.participant_count() > 0 {
            self.empty_until = None;
        } else if let Some(until) = self.empty_until {
            if now >= until {
                return self.end(EndReason::AllLeft);
            }
        } else if handled {
            let linger = self.room.shared.options.linger;
            if linger.is_zero() {
                return self.end(EndReason::AllLeft);
            }
            self.empty_until = Some(now + linger);
        }
        TimerOutcome::Running
    }

    fn deadline(&self) -> Instant {
        let next = self.pacer.poll_timeout();
        self.empty_until.map_or(next, |until| until.min(next))
    }
}
