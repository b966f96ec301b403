//! Call control from outside the call's task (the HTTP API, Telnyx Call Control
//! shapes, PROTOCOLS.md §4): a registry of live calls by `call_control_id`, each with
//! a command channel into its task, and the commands those tasks understand.
//!
//! A call registers when it is admitted and deregisters when it ends; ended calls are
//! remembered (bounded) so the API can answer 422 "call has already ended" rather
//! than 404 for a call that existed.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};

use super::CallInfo;
use super::listen::{ListenTap, Listener};
use crate::agent::stream::StreamSpec;

/// What the API asks of a call. Each command is answered through its reply channel.
#[derive(Debug)]
pub enum Action {
    /// Answer a parked call (`answer`), optionally streaming it to an agent.
    Answer {
        /// `stream_url` and friends.
        stream: Option<Box<StreamSpec>>,
    },
    /// Refuse a parked call (`reject`) with this SIP status (486 busy, 603 decline).
    Reject {
        /// SIP status code.
        sip_code: u16,
    },
    /// End the call (BYE after answer, 480 before).
    Hangup,
    /// RFC 4733 digits, each held for the duration (`send_dtmf`).
    SendDtmf {
        /// `0-9*#A-D`.
        digits: String,
        /// Per digit.
        duration: Duration,
    },
    /// Stop (`true`) or resume passing the caller's audio to the other side.
    Mute(bool),
    /// Suppress noise on these directions from now on (`suppression_start`;
    /// `suppression_stop` is `Suppression::OFF`).
    Suppress(crate::media::suppress::Suppression),
    /// Replace `client_state` for later events.
    ClientState(Option<String>),
    /// Start streaming to an agent (`streaming_start`); replaces the built-in echo.
    StreamingStart(Box<StreamSpec>),
    /// Stop the agent stream (`streaming_stop`); the call stays up with silence.
    StreamingStop,
    /// Play a WAV file (path or http(s) URL) into the call (`playback_start`).
    /// The API loads the audio before it sends the command, so the call's loop
    /// never waits on a file or a download.
    PlaybackStart {
        /// `audio_url` (as given, for `media_url` in events).
        url: String,
        /// The audio (8 kHz, and 16 kHz when its source had the band).
        pcm: std::sync::Arc<crate::media::clip::Clip>,
        /// `loop`.
        loops: crate::call::playback::Loops,
        /// `overlay`: mix over the agent's audio instead of pausing it.
        overlay: bool,
    },
    /// Stop playback (`playback_stop`).
    PlaybackStop,
    /// Start a recording span (`record_start`) with its options (`format`,
    /// `channels`, `recording_track`, `max_length`, `timeout_secs`, `play_beep`).
    RecordStart(super::recording::StartOptions),
    /// Stop the running span (`record_stop`): `call.recording.saved`.
    RecordStop,
    /// Pause the running span (`record_pause`): the paused time is left out of the file.
    RecordPause,
    /// Resume the paused span (`record_resume`).
    RecordResume,
    /// Blind transfer by SIP REFER (`refer`, RFC 3515).
    Refer(Refer),
    /// Join a local room (Telnyx `POST /conferences` from a call, or a
    /// conference's `join`); the call's agent stream, if any, follows it into the
    /// room as a participant of its own (`{call_control_id}:agent`).
    JoinRoom(RoomJoin),
    /// Leave the room the call is in (it stays up, hearing silence).
    LeaveRoom,
    /// Collect DTMF (`gather`, `gather_using_audio`, `gather_using_speak`):
    /// `call.gather.ended` follows. The prompt's audio, if any, is loaded or
    /// synthesized by the API before the command is sent.
    Gather(Box<GatherRequest>),
    /// End the gather in progress as `cancelled` (`gather_stop`).
    GatherStop,
    /// Speak synthesized text into the call (`speak`): `call.speak.started`,
    /// then `call.speak.ended`. The API synthesizes before it sends the command.
    Speak {
        /// The speech (8 kHz, and 16 kHz when the engine's audio had the band).
        pcm: std::sync::Arc<crate::media::clip::Clip>,
        /// `stop`: end the audio playing on the call first.
        stop: bool,
    },
}

/// A gather and its prompts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatherRequest {
    /// The rules and timers.
    pub spec: super::gather::GatherSpec,
    /// The prompt (`audio_url` or `payload`) and the invalid prompt
    /// (`invalid_audio_url` or `invalid_payload`) as clips; `None` for
    /// a plain `gather`.
    pub prompt: Option<GatherPrompt>,
}

/// The audio of a gather's prompts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatherPrompt {
    /// Played at the start of each try.
    pub prompt: std::sync::Arc<crate::media::clip::Clip>,
    /// Played before the prompt after an invalid entry.
    pub invalid: Option<std::sync::Arc<crate::media::clip::Clip>>,
}

/// What Telnyx's `refer` asks: the target and extra headers for the REFER.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refer {
    /// `sip_address`: the `sip:`/`sips:` URI the peer is to call.
    pub sip_address: String,
    /// `custom_headers` (`X-` name/value pairs), added to the REFER.
    pub headers: Vec<(String, String)>,
}

/// Checks a `sip_address`: a `sip:` or `sips:` URI with a host, no spaces, no
/// angle brackets (it goes inside `Refer-To: <...>`).
///
/// # Errors
/// What is wrong, for the API's 400.
pub fn check_address(uri: &str) -> Result<(), String> {
    let lower = uri.to_ascii_lowercase();
    let rest = lower.strip_prefix("sip:").or_else(|| lower.strip_prefix("sips:"));
    let Some(rest) = rest else { return Err(format!("{uri:?} is not a sip: or sips: URI")) };
    let host = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
    if host.is_empty() || host.starts_with([';', ':']) {
        return Err(format!("{uri:?} has no host"));
    }
    if uri.chars().any(|c| c.is_whitespace() || c == '<' || c == '>' || c.is_control()) {
        return Err(format!("{uri:?} contains spaces or angle brackets"));
    }
    Ok(())
}

/// Which room a call joins, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomJoin {
    /// By name (created when new) or by `conference_id`.
    pub room: RoomRef,
    /// Options of a room created by this join.
    pub options: crate::room::RoomOptions,
    /// Join muted (contributes nothing).
    pub muted: bool,
    /// Join on hold (hears silence, contributes nothing).
    pub held: bool,
}

/// A room by name or by id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoomRef {
    /// A name: the room is created by the first join.
    Name(String),
    /// An existing room's `conference_id`.
    Id(uuid::Uuid),
}

/// Why a command failed: HTTP status, Telnyx error code and detail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActionError {
    /// HTTP status for the API.
    pub status: u16,
    /// Telnyx-style error code (string of digits).
    pub code: &'static str,
    /// Title.
    pub title: &'static str,
    /// What was wrong.
    pub detail: String,
}

impl ActionError {
    /// 422 with Telnyx code 90018: the call has already ended.
    pub fn ended() -> Self {
        Self {
            status: 422,
            code: "90018",
            title: "Call has already ended",
            detail: "This call is no longer active and can't receive commands.".into(),
        }
    }

    /// 422: the command does not apply to the call in its current state.
    pub fn invalid(detail: impl Into<String>) -> Self {
        Self { status: 422, code: "90015", title: "Invalid call state", detail: detail.into() }
    }

    /// 503 with code 90040: no call can be placed now (`node.max_calls`,
    /// shutting down, no RTP ports); `detail` says which.
    pub fn no_capacity(detail: impl Into<String>) -> Self {
        Self { status: 503, code: "90040", title: "Cannot place the call now", detail: detail.into() }
    }
}

/// A command with its reply.
#[derive(Debug)]
pub struct Command {
    /// What to do (boxed: the channel's first block holds 32 commands, and a
    /// call's channel lives as long as the call; 80-byte slots made it 2.6 KiB
    /// per call, issue 20).
    pub action: Box<Action>,
    /// `Ok` once done (or accepted), the error otherwise.
    pub reply: oneshot::Sender<Result<(), ActionError>>,
}

/// What the registry knows of a live call.
#[derive(Debug, Clone)]
pub struct CallView {
    /// Ids, numbers, trunk.
    pub info: CallInfo,
    /// `parked`, `ringing`, `answered`, `bridging`...
    pub state: String,
    /// Stream id while an agent stream runs.
    pub stream_id: Option<String>,
    /// Telnyx `park_after_unbridge: "self"` (and TeXML `<Dial>`): when its
    /// bridge partner hangs up, this call leaves the bridge and stays up
    /// instead of being hung up with it.
    pub park_after_unbridge: bool,
}

impl CallView {
    /// The Telnyx `call` object (`GET /v2/calls/{id}`).
    pub fn to_json(&self, alive: bool) -> Value {
        let i = &self.info;
        json!({
            "record_type": "call",
            "call_control_id": i.ids.call_control_id,
            "call_leg_id": i.ids.call_leg_id,
            "call_session_id": i.ids.call_session_id,
            "connection_id": i.connection_id,
            "client_state": i.client_state,
            "from": i.from,
            "to": i.to,
            "direction": i.direction.as_str(),
            "state": self.state,
            "is_alive": alive,
            "start_time": super::rfc3339_micros(i.start_time),
            "stream_id": self.stream_id,
        })
    }
}

struct Entry {
    view: CallView,
    commands: mpsc::Sender<Command>,
    listen: ListenTap,
    /// The last [`COMMAND_IDS_REMEMBERED`] `command_id`s sent to the call.
    command_ids: VecDeque<String>,
}

/// How many `command_id`s are remembered per call (Telnyx: a command repeating
/// one is ignored).
const COMMAND_IDS_REMEMBERED: usize = 32;

/// Live calls by `call_control_id`. Cloning is cheap; one lock for the map only,
/// never held across an await or on the media path.
#[derive(Clone, Default)]
pub struct CallRegistry {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Default)]
struct Inner {
    live: HashMap<String, Entry>,
    ended: VecDeque<String>,
}

/// How many ended call ids are remembered for 422 answers.
const ENDED_REMEMBERED: usize = 10_000;

/// The call task's side: commands arrive here; dropping it deregisters the call.
pub struct Registration {
    registry: CallRegistry,
    id: String,
    /// Commands for the call.
    pub commands: mpsc::Receiver<Command>,
    /// The call's listen channel: give [`crate::call::listen::call_tap`] of it to the
    /// media task.
    pub listen: ListenTap,
}

impl Registration {
    /// Updates what the registry shows for the call.
    pub fn update(&self, f: impl FnOnce(&mut CallView)) {
        let mut inner = self.registry.inner.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(e) = inner.live.get_mut(&self.id) {
            f(&mut e.view);
        }
    }

    /// The next command; pending forever if none can come.
    pub async fn next(&mut self) -> Command {
        match self.commands.recv().await {
            Some(c) => c,
            None => std::future::pending().await,
        }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut inner = self.registry.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.live.remove(&self.id);
        inner.ended.push_back(self.id.clone());
        if inner.ended.len() > ENDED_REMEMBERED {
            inner.ended.pop_front();
        }
    }
}

/// Result of looking a call up.
pub enum Lookup {
    /// Live.
    Live(Box<CallView>),
    /// Existed and ended.
    Ended,
    /// Never seen (or forgotten).
    Unknown,
}

impl CallRegistry {
    /// Registers a call; the returned registration receives its commands.
    pub fn register(&self, info: &CallInfo, state: &str) -> Registration {
        let (tx, rx) = mpsc::channel(16);
        let id = info.ids.call_control_id.clone();
        let view =
            CallView { info: info.clone(), state: state.to_string(), stream_id: None, park_after_unbridge: false };
        let listen = ListenTap::default();
        let entry = Entry { view, commands: tx, listen: listen.clone(), command_ids: VecDeque::new() };
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).live.insert(id.clone(), entry);
        Registration { registry: self.clone(), id, commands: rx, listen }
    }

    /// Sets whether the call survives its bridge partner's hangup
    /// ([`CallView::park_after_unbridge`]); no effect on an unknown call.
    pub fn set_park_after_unbridge(&self, call_control_id: &str, park: bool) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(e) = inner.live.get_mut(call_control_id) {
            e.view.park_after_unbridge = park;
        }
    }

    /// The live calls.
    pub fn list(&self) -> Vec<CallView> {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let mut v: Vec<CallView> = inner.live.values().map(|e| e.view.clone()).collect();
        v.sort_by_key(|c| c.info.start_time);
        v
    }

    /// One call.
    pub fn get(&self, call_control_id: &str) -> Lookup {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        match inner.live.get(call_control_id) {
            Some(e) => Lookup::Live(Box::new(e.view.clone())),
            None if inner.ended.iter().any(|id| id == call_control_id) => Lookup::Ended,
            None => Lookup::Unknown,
        }
    }

    /// Sends `action` to the call and waits for its answer (at most 10 s).
    /// `None` when the call is not known at all (404).
    pub async fn command(&self, call_control_id: &str, action: Action) -> Option<Result<(), ActionError>> {
        let tx = {
            let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
            match inner.live.get(call_control_id) {
                Some(e) => e.commands.clone(),
                None if inner.ended.iter().any(|id| id == call_control_id) => return Some(Err(ActionError::ended())),
                None => return None,
            }
        };
        let (reply, answer) = oneshot::channel();
        if tx.send(Command { action: Box::new(action), reply }).await.is_err() {
            return Some(Err(ActionError::ended()));
        }
        match tokio::time::timeout(Duration::from_secs(10), answer).await {
            Ok(Ok(r)) => Some(r),
            Ok(Err(_)) => Some(Err(ActionError::ended())),
            Err(_) => Some(Err(ActionError::invalid("the call did not answer the command in 10 s"))),
        }
    }

    /// Telnyx `command_id`: `true` when the live call has already had a command
    /// with this id (the repeat is to be ignored); otherwise remembers it (the
    /// last 32 per call, at most 256 bytes each).
    pub fn repeated_command(&self, call_control_id: &str, command_id: &str) -> bool {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let Some(e) = inner.live.get_mut(call_control_id) else { return false };
        if e.command_ids.iter().any(|c| c == command_id) {
            return true;
        }
        if e.command_ids.len() >= COMMAND_IDS_REMEMBERED {
            e.command_ids.pop_front();
        }
        e.command_ids.push_back(command_id.chars().take(256).collect());
        false
    }

    /// A listener on a live call's audio (`None` when the call is not live).
    pub fn listen(&self, call_control_id: &str) -> Option<(CallView, Listener)> {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.live.get(call_control_id).map(|e| (e.view.clone(), e.listen.subscribe()))
    }

    /// Number of live calls.
    pub fn len(&self) -> usize {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).live.len()
    }

    /// Whether no call is live.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::call::{CallIds, Direction};

    fn info(id: &str) -> CallInfo {
        let mut ids = CallIds::new_session();
        ids.call_control_id = id.into();
        CallInfo {
            ids,
            direction: Direction::Incoming,
            from: "+1".into(),
            to: "+2".into(),
            connection_id: "t".into(),
            sip_call_id: "c".into(),
            start_time: std::time::SystemTime::now(),
            client_state: None,
            custom_headers: vec![],
            webhook_url: None,
        }
    }

    #[tokio::test]
    async fn commands_reach_the_call_and_ended_calls_are_remembered() {
        let reg = CallRegistry::default();
        let mut r = reg.register(&info("a"), "answered");
        assert!(matches!(reg.get("a"), Lookup::Live(v) if v.state == "answered"));
        assert!(matches!(reg.get("b"), Lookup::Unknown));
        let task = tokio::spawn(async move {
            let c = r.next().await;
            assert!(matches!(*c.action, Action::Hangup));
            let _ = c.reply.send(Ok(()));
            drop(r);
        });
        assert_eq!(reg.command("a", Action::Hangup).await, Some(Ok(())));
        task.await.unwrap();
        assert!(matches!(reg.get("a"), Lookup::Ended));
        assert_eq!(reg.command("a", Action::Hangup).await, Some(Err(ActionError::ended())));
        assert_eq!(reg.command("zzz", Action::Hangup).await, None);
        assert!(reg.is_empty());
    }
}
