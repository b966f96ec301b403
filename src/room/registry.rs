//! The daemon's rooms by name: join (creating the room on first join), leave,
//! mute, hold, list, end. One [`Rooms`] per daemon, cloned into the SIP dispatch
//! and the HTTP API; each room runs as a timer job on the media engine
//! (`room::task`) and this registry only holds its command channel, shared
//! counters and engine task.
//!
//! The map is a `std::sync::Mutex` held for a lookup and a channel send, never
//! across an await. A room removes itself from the map under the same lock
//! before it answers the joins still queued with [`JoinError::Ended`], so a join
//! by name that meets a room in its last moments retries on a new room.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Instant, SystemTime};

use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use crate::media::engine::Engine;

use super::task::{Command, Counters, Entry, Map, RoomCommands, RoomJob, Shared, Target};
use super::{
    JoinError, JoinRefused, LeaveReason, Participant, ParticipantInfo, ParticipantKind, RoomError, RoomEvent, RoomInfo,
    RoomOptions,
};

/// Longest room name accepted, in bytes.
const MAX_NAME_BYTES: usize = 256;

/// Tries of a join by name that meets rooms ending under it.
const JOIN_TRIES: usize = 3;

struct Inner {
    rooms: Arc<Map>,
    events: mpsc::UnboundedSender<RoomEvent>,
    serial: AtomicU64,
    /// Where rooms run (the calls' media engine).
    engine: Arc<Engine>,
}

/// The registry of rooms; cheap to clone (one `Arc`).
#[derive(Clone)]
pub struct Rooms {
    inner: Arc<Inner>,
}

/// A participant's membership in a room, returned by [`Rooms::join`]. Dropping it
/// removes the participant (reason [`LeaveReason::Hangup`]): keep it as long as
/// the call is in the room.
pub struct ParticipantHandle {
    conference_id: Uuid,
    name: String,
    participant_id: String,
    serial: u64,
    commands: RoomCommands,
    left: bool,
}

impl ParticipantHandle {
    /// The room's id (Telnyx `conference_id`).
    pub fn conference_id(&self) -> Uuid {
        self.conference_id
    }

    /// The room's name.
    pub fn room_name(&self) -> &str {
        &self.name
    }

    /// The participant's id as given at join.
    pub fn participant_id(&self) -> &str {
        &self.participant_id
    }

    /// Leaves the room (reason [`LeaveReason::Left`]). Does nothing if the room
    /// already removed the participant.
    pub fn leave(mut self) {
        self.left = true;
        let target = Target::Serial(self.serial);
        let _ = self.commands.send(Command::Leave { target, reason: LeaveReason::Left, reply: None });
    }

    /// Leaves the room with `reason` (a failed connection). Does nothing if the
    /// room already removed the participant.
    pub fn leave_because(mut self, reason: LeaveReason) {
        self.left = true;
        let target = Target::Serial(self.serial);
        let _ = self.commands.send(Command::Leave { target, reason, reply: None });
    }

    /// Mutes or unmutes this participant (takes effect at once).
    pub fn set_muted(&self, muted: bool) {
        let _ = self.commands.send(Command::SetMuted { target: Target::Serial(self.serial), muted, reply: None });
    }

    /// Holds or resumes this participant (takes effect at once).
    pub fn set_held(&self, held: bool) {
        let _ = self.commands.send(Command::SetHeld { target: Target::Serial(self.serial), held, reply: None });
    }
}

impl Drop for ParticipantHandle {
    fn drop(&mut self) {
        if !self.left {
            let target = Target::Serial(self.serial);
            let _ = self.commands.send(Command::Leave { target, reason: LeaveReason::Hangup, reply: None });
        }
    }
}

impl std::fmt::Debug for ParticipantHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ParticipantHandle")
            .field("conference_id", &self.conference_id)
            .field("name", &self.name)
            .field("participant_id", &self.participant_id)
            .finish()
    }
}

fn info(shared: &Shared) -> RoomInfo {
    RoomInfo {
        conference_id: shared.id,
        name: shared.name.clone(),
        created_at: shared.created_at,
        participants: shared.participants.load(Ordering::Relaxed),
        wideband: shared.wideband.load(Ordering::Relaxed),
        options: shared.options,
        stats: shared.counters.snapshot(),
    }
}

impl Rooms {
    /// An empty registry reporting to `events` (turned into `conference.*`
    /// webhooks by the caller), running its rooms on `engine` (the one the
    /// calls' media runs on, so that one wheel paces everything).
    pub fn new(events: mpsc::UnboundedSender<RoomEvent>, engine: Arc<Engine>) -> Self {
        Rooms { inner: Arc::new(Inner { rooms: Arc::default(), events, serial: AtomicU64::new(1), engine }) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.inner.rooms.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Puts `participant` in the room called `name`, creating it with `options`
    /// if it does not exist (`options` are ignored for an existing room; a new
    /// room starts as a job on the media engine, woken by each command, so the
    /// join is answered at once).
    ///
    /// # Errors
    /// [`JoinError::Full`] at `max_participants`, [`JoinError::AlreadyJoined`] for
    /// a participant id already there, [`JoinError::Invalid`] for an empty or
    /// over-long name, an empty id, or a listener where no room exists; the
    /// participant comes back in the error.
    pub async fn join(
        &self,
        name: &str,
        options: RoomOptions,
        participant: Participant,
    ) -> Result<ParticipantHandle, JoinRefused> {
        if name.is_empty() || name.len() > MAX_NAME_BYTES {
            return Err(JoinRefused { error: JoinError::Invalid("room name"), participant: Some(participant) });
        }
        self.join_where(Some((name, options)), None, participant).await
    }

    /// Puts `participant` in the existing room `conference_id` (Telnyx
    /// `conferences/{id}/actions/join`).
    ///
    /// # Errors
    /// [`JoinError::NotFound`] when no such room exists (or it ended), and the
    /// errors of [`Rooms::join`].
    pub async fn join_existing(
        &self,
        conference_id: Uuid,
        participant: Participant,
    ) -> Result<ParticipantHandle, JoinRefused> {
        self.join_where(None, Some(conference_id), participant).await
    }

    async fn join_where(
        &self,
        by_name: Option<(&str, RoomOptions)>,
        by_id: Option<Uuid>,
        mut participant: Participant,
    ) -> Result<ParticipantHandle, JoinRefused> {
        if participant.id.is_empty() {
            return Err(JoinRefused { error: JoinError::Invalid("participant id"), participant: Some(participant) });
        }
        for _ in 0..JOIN_TRIES {
            let serial = self.inner.serial.fetch_add(1, Ordering::Relaxed);
            let (reply, answer) = oneshot::channel();
            let participant_id = participant.id.clone();
            let (shared, commands) = {
                let mut map = self.lock();
                let existing = match (by_name, by_id) {
                    (Some((name, _)), _) => map.get(name),
                    (None, Some(id)) => map.values().find(|e| e.shared.id == id),
                    (None, None) => None,
                };
                let entry = match (existing, by_name) {
                    (Some(e), _) => (Arc::clone(&e.shared), e.commands.clone()),
                    (None, Some(_)) if participant.kind() == ParticipantKind::Listener => {
                        let error = JoinError::Invalid("a listener cannot create a room");
                        return Err(JoinRefused { error, participant: Some(participant) });
                    }
                    (None, Some((name, options))) => self.spawn(&mut map, name, options, &participant_id),
                    (None, None) => {
                        let id = by_id.unwrap_or_default();
                        return Err(JoinRefused { error: JoinError::NotFound(id), participant: Some(participant) });
                    }
                };
                if let Err(e) = entry.1.send(Command::Join { participant, serial, reply }) {
                    // The room job is gone without having removed itself (it
                    // panicked, or the engine stopped).
                    map.remove(&entry.0.name);
                    match e.0 {
                        Command::Join { participant: p, .. } => participant = p,
                        _ => return Err(JoinRefused { error: JoinError::Ended, participant: None }),
                    }
                    continue;
                }
                entry
            };
            match answer.await {
                Ok(Ok(())) => {
                    return Ok(ParticipantHandle {
                        conference_id: shared.id,
                        name: shared.name.clone(),
                        participant_id,
                        serial,
                        commands,
                        left: false,
                    });
                }
                Ok(Err((JoinError::Ended, p))) if by_name.is_some() => participant = p,
                Ok(Err((error, p))) => return Err(JoinRefused { error, participant: Some(p) }),
                Err(_) => return Err(JoinRefused { error: JoinError::Ended, participant: None }),
            }
        }
        Err(JoinRefused { error: JoinError::Ended, participant: Some(participant) })
    }

    /// Creates and starts a room (under the map lock).
    fn spawn(
        &self,
        map: &mut HashMap<String, Entry>,
        name: &str,
        options: RoomOptions,
        created_by: &str,
    ) -> (Arc<Shared>, RoomCommands) {
        let shared = Arc::new(Shared {
            id: Uuid::new_v4(),
            name: name.to_string(),
            created_at: SystemTime::now(),
            options,
            participants: AtomicUsize::new(0),
            wideband: std::sync::atomic::AtomicBool::new(false),
            counters: Counters::default(),
            task: Mutex::new(None),
        });
        let (tx, rx) = mpsc::unbounded_channel();
        let commands = RoomCommands::new(tx);
        map.insert(name.to_string(), Entry { shared: Arc::clone(&shared), commands: commands.clone() });
        let job = RoomJob::new(
            Arc::clone(&shared),
            created_by.to_string(),
            rx,
            self.inner.events.clone(),
            Arc::downgrade(&self.inner.rooms),
            Instant::now(),
        );
        let task = self.inner.engine.spawn_timer(Box::new(job));
        commands.set_job(task.commands().clone());
        *shared.task.lock().unwrap_or_else(PoisonError::into_inner) = Some(task);
        (shared, commands)
    }

    fn commands(&self, conference_id: Uuid) -> Result<RoomCommands, RoomError> {
        self.lock()
            .values()
            .find(|e| e.shared.id == conference_id)
            .map(|e| e.commands.clone())
            .ok_or(RoomError::NotFound(conference_id))
    }

    async fn ask<T: Default>(
        &self,
        conference_id: Uuid,
        command: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, RoomError> {
        let commands = self.commands(conference_id)?;
        let (reply, answer) = oneshot::channel();
        commands.send(command(reply)).map_err(|_| RoomError::NotFound(conference_id))?;
        answer.await.map_err(|_| RoomError::NotFound(conference_id))
    }

    /// The rooms now, in no particular order.
    pub fn list(&self) -> Vec<RoomInfo> {
        self.lock().values().map(|e| info(&e.shared)).collect()
    }

    /// The room whose `conference_id` (as a string) or name is `id_or_name`
    /// (Telnyx's `{id}` path parameter accepts either).
    pub fn find(&self, id_or_name: &str) -> Option<RoomInfo> {
        let map = self.lock();
        if let Some(e) = map.get(id_or_name) {
            return Some(info(&e.shared));
        }
        let id = Uuid::parse_str(id_or_name).ok()?;
        map.values().find(|e| e.shared.id == id).map(|e| info(&e.shared))
    }

    /// The participants of a room (listeners not included), in join order
    /// except after leaves.
    ///
    /// # Errors
    /// [`RoomError::NotFound`] when the room does not exist.
    pub async fn participants(&self, conference_id: Uuid) -> Result<Vec<ParticipantInfo>, RoomError> {
        self.ask(conference_id, |reply| Command::Participants { reply }).await
    }

    /// Removes the participants `participant_ids` (all of them when empty, as
    /// Telnyx's `call_control_ids` left out) with reason [`LeaveReason::Left`];
    /// returns how many left.
    ///
    /// # Errors
    /// [`RoomError::NotFound`] when the room does not exist.
    pub async fn leave(&self, conference_id: Uuid, participant_ids: &[String]) -> Result<usize, RoomError> {
        let target = Target::Ids(participant_ids.to_vec());
        self.ask(conference_id, |reply| Command::Leave { target, reason: LeaveReason::Left, reply: Some(reply) }).await
    }

    /// Telnyx `mute`: the participants (all when empty) contribute nothing but
    /// still hear; returns how many matched.
    ///
    /// # Errors
    /// [`RoomError::NotFound`] when the room does not exist.
    pub async fn mute(&self, conference_id: Uuid, participant_ids: &[String]) -> Result<usize, RoomError> {
        self.set_muted(conference_id, participant_ids, true).await
    }

    /// Telnyx `unmute`.
    ///
    /// # Errors
    /// [`RoomError::NotFound`] when the room does not exist.
    pub async fn unmute(&self, conference_id: Uuid, participant_ids: &[String]) -> Result<usize, RoomError> {
        self.set_muted(conference_id, participant_ids, false).await
    }

    async fn set_muted(&self, conference_id: Uuid, ids: &[String], muted: bool) -> Result<usize, RoomError> {
        let target = Target::Ids(ids.to_vec());
        self.ask(conference_id, |reply| Command::SetMuted { target, muted, reply: Some(reply) }).await
    }

    /// Telnyx `hold`: the participants (all when empty) contribute nothing and
    /// hear silence; returns how many matched.
    ///
    /// # Errors
    /// [`RoomError::NotFound`] when the room does not exist.
    pub async fn hold(&self, conference_id: Uuid, participant_ids: &[String]) -> Result<usize, RoomError> {
        self.set_held(conference_id, participant_ids, true).await
    }

    /// Telnyx `unhold`.
    ///
    /// # Errors
    /// [`RoomError::NotFound`] when the room does not exist.
    pub async fn unhold(&self, conference_id: Uuid, participant_ids: &[String]) -> Result<usize, RoomError> {
        self.set_held(conference_id, participant_ids, false).await
    }

    async fn set_held(&self, conference_id: Uuid, ids: &[String], held: bool) -> Result<usize, RoomError> {
        let target = Target::Ids(ids.to_vec());
        self.ask(conference_id, |reply| Command::SetHeld { target, held, reply: Some(reply) }).await
    }

    /// Telnyx `end`: every participant leaves with [`LeaveReason::RoomEnded`]
    /// (the caller hangs their calls up) and the room ends with
    /// [`super::EndReason::EndedViaApi`]. Returns once the `Ended` event is sent.
    ///
    /// # Errors
    /// [`RoomError::NotFound`] when the room does not exist.
    pub async fn end(&self, conference_id: Uuid) -> Result<(), RoomError> {
        self.ask(conference_id, |reply| Command::End { reply }).await
    }
}
