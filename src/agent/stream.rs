//! One call's stream to a voice agent, as Telnyx (PROTOCOLS.md §3), Twilio,
//! Exotel or Plivo connect to a stream URL, or as Asterisk connects to an
//! AudioSocket server (the stream's `protocol`).
//!
//! A tokio task connects ([`Link`], within `connect_timeout`); then one of the
//! agent I/O threads (`hub`, issue 20) drives the connected stream: it sends
//! the protocol's opening frames (`connected` and `start`, ...), moves the
//! call's audio chunks (from the media engine's [`PcmEndpoint`]) out as `media`
//! frames in the stream's encoding and, in bidirectional mode, the agent's
//! audio, marks and clears into the leg's playback queue — the same playout,
//! pacing and mark handling for every protocol; only [`Framing`] differs. DTMF
//! from the call goes out in the protocol's shape. A WebSocket ping every
//! [`PING_INTERVAL`] checks the agent is alive.
//!
//! Nothing waits on a slow party: an agent that does not read gets at most
//! `link::MAX_QUEUED` bytes kept for it (later frames are dropped and counted);
//! a full playback queue pauses reading the agent (its TCP window fills) and
//! loses nothing.
//!
//! Events for webhooks (the same whatever the protocol): `streaming.started` once
//! the handshake is done, `streaming.stopped` when the box ends the stream,
//! `streaming.failed` (`failure_reason`) when the connection is refused, times out
//! or drops. The call hears about a failure through [`AgentStream::next_event`]
//! and applies the agent's `on_disconnect`.

use std::os::fd::BorrowedFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::framing::{Frame, Framing, swap16};
use super::hub::{self, Driven, Step, Wants, Why};
use super::link::{Link, Received, Sent};
use super::protocol::{Inbound, InboundError, StartInfo, Track};
use crate::config::{Agent, Encoding, StreamProtocol, StreamTrack};
use crate::media::pcm::{Chunk, Direction, PcmEndpoint, Playback};
use crate::media::transcode::{FromStream, ToStream};
use crate::store::event::{CallEvent, EventSink};

/// How often the box pings the agent.
pub const PING_INTERVAL: Duration = Duration::from_secs(10);
/// The connection counts as lost after this long without any frame from the agent
/// (pongs included).
pub const DEAD_AFTER: Duration = Duration::from_secs(30);

/// What the call hears from its stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamEvent {
    /// The stream ended without the box asking (refused, timed out, dropped, closed
    /// by the agent): the reason, as in `streaming.failed.failure_reason`.
    Failed(String),
}

enum Command {
    Dtmf(char),
    Stop,
}

/// Where and how to stream (from `[[agent]]` or an API `streaming_start`).
#[derive(Debug, Clone)]
pub struct StreamSpec {
    /// Agent name, for logs.
    pub name: String,
    /// `ws://` or `wss://` URL; `tcp://` or `audiosocket://` for AudioSocket.
    pub url: url::Url,
    /// The message shapes (Telnyx, Twilio, ...).
    pub protocol: StreamProtocol,
    /// Sent as `Authorization: Bearer`.
    pub auth_token: Option<String>,
    /// Stream encoding and rate.
    pub encoding: Encoding,
    /// Hz.
    pub sample_rate: u32,
    /// Which audio is streamed.
    pub track: StreamTrack,
    /// The agent's audio is played into the call.
    pub bidirectional: bool,
    /// TCP + TLS + WebSocket handshake limit.
    pub connect_timeout: Duration,
    /// Sent in the opening frame (Twilio `customParameters`, TeXML `<Parameter>`s).
    pub custom_parameters: serde_json::Map<String, serde_json::Value>,
}

impl StreamSpec {
    /// The spec of a configured WebSocket agent; `None` for `builtin:echo`.
    pub fn from_agent(agent: &Agent) -> Option<Self> {
        let crate::config::AgentUrl::WebSocket(url) = &agent.url else { return None };
        Some(Self {
            name: agent.name.clone(),
            url: url.clone(),
            protocol: agent.protocol,
            auth_token: agent.auth_token.as_ref().map(|s| s.expose().to_string()),
            encoding: agent.encoding,
            sample_rate: agent.sample_rate,
            track: agent.track,
            bidirectional: agent.bidirectional,
            connect_timeout: agent.connect_timeout,
            custom_parameters: serde_json::Map::new(),
        })
    }

    /// Rate of the box's playout and of the call's recording for this stream, Hz:
    /// 16000 for L16 at 16000 Hz (the agent's audio keeps its band up to the leg's
    /// G.711 encoder, and the recording keeps it), 8000 otherwise (ISSUE 7 point 1).
    pub fn playout_rate(&self) -> u32 {
        if self.encoding != Encoding::Pcmu && self.encoding != Encoding::Pcma && self.sample_rate == 16000 {
            16000
        } else {
            8000
        }
    }
}

/// A running stream; dropping it aborts the task (use [`AgentStream::stop`]).
pub struct AgentStream {
    commands: mpsc::Sender<Command>,
    events: mpsc::UnboundedReceiver<StreamEvent>,
    task: Option<JoinHandle<()>>,
    /// Set when this handle is dropped without [`AgentStream::stop`]: the stream
    /// then ends without a word (no stop frame, no `streaming.stopped`).
    abandoned: Arc<AtomicBool>,
    /// Telnyx `stream_id` (UUID v4).
    pub stream_id: String,
    /// What it streams to (kept to restart it elsewhere, e.g. into a room).
    pub spec: StreamSpec,
}

impl AgentStream {
    /// Starts streaming the call `info` to `spec`'s agent; `endpoint` is the media
    /// task's side of the bridge. `streaming.*` events go to `bus`.
    pub fn start(spec: StreamSpec, info: StreamCall, bus: Arc<dyn EventSink>, endpoint: PcmEndpoint) -> Self {
        let stream_id = uuid::Uuid::new_v4().to_string();
        let (cmd_tx, cmd_rx) = mpsc::channel(32);
        let (ev_tx, ev_rx) = mpsc::unbounded_channel();
        let abandoned = Arc::new(AtomicBool::new(false));
        let task = Task {
            spec: spec.clone(),
            info,
            bus,
            stream_id: stream_id.clone(),
            events: ev_tx,
            abandoned: Arc::clone(&abandoned),
        };
        let handle = tokio::spawn(task.run(endpoint, cmd_rx));
        Self { commands: cmd_tx, events: ev_rx, task: Some(handle), abandoned, stream_id, spec }
    }

    /// Forwards a DTMF key press to the agent (`dtmf` frame).
    pub fn dtmf(&self, digit: char) {
        let _ = self.commands.try_send(Command::Dtmf(digit));
    }

    /// The next event; pending forever once the stream ended.
    pub async fn next_event(&mut self) -> StreamEvent {
        match self.events.recv().await {
            Some(e) => e,
            None => std::future::pending().await,
        }
    }

    /// Ends the stream: `stop` frame, close handshake (at most 2 s), and
    /// `streaming.stopped` when it was running.
    pub async fn stop(mut self) {
        let _ = self.commands.send(Command::Stop).await;
        if let Some(task) = self.task.take() {
            let abort = task.abort_handle();
            if tokio::time::timeout(Duration::from_secs(3), task).await.is_err() {
                abort.abort();
            }
        }
    }
}

impl Drop for AgentStream {
    fn drop(&mut self) {
        if let Some(t) = &self.task {
            // Before the command channel closes (the fields drop after this).
            self.abandoned.store(true, Ordering::Release);
            t.abort();
        }
    }
}

/// The call a stream carries, as its events and `start` frame name it (Telnyx
/// field names; the call layer fills it from its call info).
#[derive(Debug, Clone)]
pub struct StreamCall {
    /// Telnyx `call_control_id`.
    pub call_control_id: String,
    /// Telnyx `call_leg_id`.
    pub call_leg_id: String,
    /// Telnyx `call_session_id`.
    pub call_session_id: String,
    /// Telnyx `connection_id` (the trunk).
    pub connection_id: String,
    /// Base64 client state echoed in events.
    pub client_state: Option<String>,
    /// Caller.
    pub from: String,
    /// Callee.
    pub to: String,
    /// The call's own webhook URL (`None`: `[webhooks] url`).
    pub webhook_url: Option<String>,
}

#[derive(Clone)]
struct Task {
    spec: StreamSpec,
    info: StreamCall,
    bus: Arc<dyn EventSink>,
    stream_id: String,
    events: mpsc::UnboundedSender<StreamEvent>,
    abandoned: Arc<AtomicBool>,
}

impl Task {
    fn event(&self, event_type: &str, failure_reason: Option<&str>) {
        let i = &self.info;
        let mut p = serde_json::Map::new();
        p.insert("call_control_id".into(), json!(i.call_control_id));
        p.insert("call_leg_id".into(), json!(i.call_leg_id));
        p.insert("call_session_id".into(), json!(i.call_session_id));
        p.insert("connection_id".into(), json!(i.connection_id));
        p.insert("client_state".into(), json!(i.client_state));
        p.insert("stream_id".into(), json!(self.stream_id));
        p.insert("stream_url".into(), json!(self.spec.url.as_str()));
        p.insert("stream_type".into(), json!("websocket"));
        let track = match self.spec.track {
            StreamTrack::InboundTrack => "inbound_track",
            StreamTrack::OutboundTrack => "outbound_track",
            StreamTrack::BothTracks => "both_tracks",
        };
        p.insert("stream_params".into(), json!({"stream_url": self.spec.url.as_str(), "stream_track": track}));
        if let Some(r) = failure_reason {
            p.insert("failure_reason".into(), json!(r));
        }
        let mut event = CallEvent::new(event_type, Some(i.call_session_id.clone()), p).with_agent(&self.spec.name);
        event.webhook_url = i.webhook_url.clone();
        self.bus.emit_event(event);
    }

    async fn run(self, endpoint: PcmEndpoint, mut commands: mpsc::Receiver<Command>) {
        let id = self.info.call_control_id.clone();
        let connect = Link::connect(&self.spec.url, self.spec.protocol, self.spec.auth_token.as_deref());
        let connect = tokio::time::timeout(self.spec.connect_timeout, connect);
        let link = tokio::select! {
            r = connect => match r {
                Ok(Ok(link)) => link,
                Ok(Err(reason)) => return self.fail(reason),
                Err(_) => return self.fail(format!("connect timeout after {}", humantime::format_duration(self.spec.connect_timeout))),
            },
            // Hung up while connecting: nothing was started, nothing to report.
            _ = wait_stop(&mut commands) => return,
        };
        tracing::info!(call_control_id = %id, agent = %self.spec.name, stream_id = %self.stream_id, "agent stream connected");
        // From here on an agent I/O thread drives the stream; this task only
        // waits for its end (dropping it, as `AgentStream`'s drop does, ends the
        // stream without a word).
        let (done, ended) = oneshot::channel();
        let reporter = self.clone();
        if let Err((session, reason)) = hub::attach(Session::new(self, link, endpoint, commands, done)) {
            session.task.fail(reason);
            return;
        }
        // The session always says it ended; a dropped sender means its code
        // panicked or its I/O thread ended (both logged): the call must hear
        // of it, as of any other failure.
        if ended.await.is_err() {
            reporter.fail("internal error: the agent I/O thread dropped the stream".into());
        }
    }

    fn fail(&self, reason: String) {
        tracing::warn!(
            call_control_id = %self.info.call_control_id, agent = %self.spec.name,
            url = %self.spec.url, "agent stream failed: {reason}"
        );
        self.event("streaming.failed", Some(&reason));
        let _ = self.events.send(StreamEvent::Failed(reason));
    }
}

/// How long a full playback queue waits before the box offers its frame again
/// (the leg takes from it every 20 ms).
const PLAYBACK_RETRY: Duration = Duration::from_millis(20);
/// The close handshake's limit once the box stops a stream.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// One connected stream, as its agent I/O thread drives it (`hub`): the call's
/// audio chunks out as `media` frames in the stream's encoding, the agent's
/// audio, marks and clears into the leg's playback queue, DTMF, pings, and the
/// stop. Every step is non-blocking.
struct Session {
    task: Task,
    link: Link,
    endpoint: PcmEndpoint,
    commands: mpsc::Receiver<Command>,
    /// Sent when the stream ends (its task waits for it).
    done: Option<oneshot::Sender<()>>,
    out: Framing,
    info: StartInfo,
    started: Instant,
    /// To the stream (heard, said), from it; `None`: the format is not supported.
    transcoders: Option<(ToStream, ToStream, FromStream)>,
    /// L16 leaves the transcoder big-endian (RFC 2586); these protocols carry it
    /// little-endian, swapped in place (no copy).
    little_endian: bool,
    /// Bytes of 20 ms in the stream's encoding (G.711: 1 byte/sample, L16: 2).
    frame_bytes: usize,
    heard_bytes: Vec<u8>,
    said_bytes: Vec<u8>,
    /// Wideband chunks' samples (reused: no allocation per chunk).
    wide: Vec<i16>,
    packet: Vec<u8>,
    last_heard: Instant,
    next_ping: Option<Instant>,
    playback_closed: bool,
    chunks_open: bool,
    /// Marks in the playout queue, and how many of the next returned ones a
    /// clear dropped (Plivo reports only checkpoints whose audio played).
    marks_queued: usize,
    marks_cleared: usize,
    /// A playback request the leg's full queue could not take yet: reading the
    /// agent pauses until it is in (the agent's TCP window fills, as a slow
    /// reader's should).
    blocked: Option<Playback>,
    retry_at: Option<Instant>,
    /// Bytes wait for the socket.
    unflushed: bool,
    /// The stop's close handshake runs until this instant.
    closing: Option<Instant>,
    /// Frames not sent because the agent had not read [`link::MAX_QUEUED`] bytes.
    dropped: u64,
}

/// How a stream ended.
enum End {
    /// The box stopped it.
    Stopped,
    /// It failed (reason).
    Failed(String),
    /// Its task was aborted (the call went without stopping it): no event.
    Abandoned,
}

impl Session {
    fn new(
        task: Task,
        link: Link,
        endpoint: PcmEndpoint,
        commands: mpsc::Receiver<Command>,
        done: oneshot::Sender<()>,
    ) -> Self {
        let spec = &task.spec;
        let unix_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let (id, trunk) = (&task.stream_id, &task.info.connection_id);
        let out = Framing::new(spec.protocol, id, trunk, spec.track, unix_ms, spec.encoding, spec.sample_rate);
        let info = StartInfo {
            call_control_id: task.info.call_control_id.clone(),
            call_session_id: task.info.call_session_id.clone(),
            from: task.info.from.clone(),
            to: task.info.to.clone(),
            client_state: task.info.client_state.clone(),
            custom_parameters: spec.custom_parameters.clone(),
            encoding: spec.encoding,
            sample_rate: spec.sample_rate,
        };
        let transcoders = match (
            ToStream::new(spec.encoding, spec.sample_rate),
            ToStream::new(spec.encoding, spec.sample_rate),
            FromStream::new_at(spec.encoding, spec.sample_rate, spec.playout_rate()),
        ) {
            (Ok(heard), Ok(said), Ok(from)) => Some((heard, said, from)),
            _ => None,
        };
        let little_endian = spec.encoding == Encoding::L16 && spec.protocol.little_endian();
        let bytes_per_sample = if spec.encoding == Encoding::L16 { 2 } else { 1 };
        let frame_bytes = (spec.sample_rate as usize / 50) * bytes_per_sample;
        let now = Instant::now();
        Self {
            task,
            link,
            endpoint,
            commands,
            done: Some(done),
            out,
            info,
            started: now,
            transcoders,
            little_endian,
            frame_bytes,
            heard_bytes: Vec::with_capacity(2048),
            said_bytes: Vec::with_capacity(2048),
            wide: Vec::with_capacity(crate::media::pcm::CHUNK_BYTES / 2),
            packet: Vec::with_capacity(crate::media::codec::MAX_PAYLOAD_BYTES),
            last_heard: now,
            next_ping: None,
            playback_closed: false,
            chunks_open: true,
            marks_queued: 0,
            marks_cleared: 0,
            blocked: None,
            retry_at: None,
            unflushed: false,
            closing: None,
            dropped: 0,
        }
    }

    fn send(&mut self, frame: Frame) -> Result<(), End> {
        put(&mut self.link, &mut self.unflushed, &mut self.dropped, frame)
    }

    /// The opening frames, `streaming.started`, then whatever already waits.
    fn start(&mut self, cx: &mut Context<'_>, now: Instant) -> Result<(), End> {
        for frame in self.out.opening(&self.info) {
            self.send(frame)?;
        }
        self.task.event("streaming.started", None);
        self.started = now;
        self.last_heard = now;
        self.next_ping = self.link.pings().then(|| now + PING_INTERVAL);
        if self.transcoders.is_none() {
            let spec = &self.task.spec;
            return Err(End::Failed(format!(
                "unsupported stream format {:?} at {} Hz",
                spec.encoding, spec.sample_rate
            )));
        }
        self.inputs(cx, now)
    }

    /// The channels: call audio, reached marks, the call's commands.
    fn inputs(&mut self, cx: &mut Context<'_>, now: Instant) -> Result<(), End> {
        if self.closing.is_some() {
            return Ok(());
        }
        while self.chunks_open {
            match self.endpoint.chunks.poll_recv(cx) {
                Poll::Ready(Some(chunk)) => self.chunk(&chunk)?,
                // The call (or room) side closed: no more audio to send; the
                // stream stays up until it is stopped.
                Poll::Ready(None) => self.chunks_open = false,
                Poll::Pending => break,
            }
        }
        while let Poll::Ready(Some(name)) = self.endpoint.marks.poll_recv(cx) {
            self.mark_reached(&name)?;
        }
        loop {
            match self.commands.poll_recv(cx) {
                Poll::Ready(Some(Command::Dtmf(d))) => {
                    let frame = self.out.dtmf(d);
                    self.send(frame)?;
                }
                Poll::Ready(Some(Command::Stop)) => return self.stop(now),
                // The handle went without `stop` (it says so before its
                // sender closes the channel).
                Poll::Ready(None) if self.task.abandoned.load(Ordering::Acquire) => return Err(End::Abandoned),
                Poll::Ready(None) => return self.stop(now),
                Poll::Pending => return Ok(()),
            }
        }
    }

    /// One chunk of call audio: whole 20 ms frames of it to the agent.
    fn chunk(&mut self, chunk: &Chunk) -> Result<(), End> {
        let Some((heard_tx, said_tx, _)) = self.transcoders.as_mut() else { return Ok(()) };
        let (track, tx, pending) = match chunk.direction {
            Direction::Heard => (Track::Inbound, heard_tx, &mut self.heard_bytes),
            Direction::Said => (Track::Outbound, said_tx, &mut self.said_bytes),
        };
        if !track.selected_by(self.task.spec.track) {
            return Ok(());
        }
        // Whole 20 ms frames only: the resampler's output per chunk varies
        // around the nominal size.
        match chunk.g711() {
            Some((law, bytes)) => tx.convert(law, bytes, pending),
            None => {
                self.wide.clear();
                chunk.wide_samples(&mut self.wide);
                tx.convert_wide(&self.wide, pending);
            }
        }
        // G722/OPUS: one whole codec packet per `media` message.
        if tx.is_packetized() {
            self.packet.clear();
            while tx.next_packet(&mut self.packet) {
                let ts = self.started.elapsed().as_millis() as u64;
                let frame = self.out.media(track, ts, &self.packet);
                self.packet.clear();
                if let Some(frame) = frame {
                    put(&mut self.link, &mut self.unflushed, &mut self.dropped, frame)?;
                }
            }
            return Ok(());
        }
        let frame_bytes = self.frame_bytes;
        while pending.len() >= frame_bytes {
            let ts = self.started.elapsed().as_millis() as u64;
            if self.little_endian {
                swap16(&mut pending[..frame_bytes]);
            }
            let frame = self.out.media(track, ts, &pending[..frame_bytes]);
            pending.drain(..frame_bytes);
            if let Some(frame) = frame {
                put(&mut self.link, &mut self.unflushed, &mut self.dropped, frame)?;
            }
        }
        Ok(())
    }

    fn mark_reached(&mut self, name: &str) -> Result<(), End> {
        self.marks_queued = self.marks_queued.saturating_sub(1);
        if self.marks_cleared > 0 {
            self.marks_cleared -= 1;
            return Ok(());
        }
        match self.out.mark(name) {
            Some(frame) => self.send(frame),
            None => Ok(()),
        }
    }

    /// Offers `request` to the leg's playback queue: `false` when the queue is
    /// gone; a full queue keeps it in `blocked` (reading pauses).
    fn play(&mut self, request: Playback) -> bool {
        match self.endpoint.playback.try_send(request) {
            Ok(()) => true,
            Err(TrySendError::Full(request)) => {
                self.blocked = Some(request);
                self.retry_at = Some(Instant::now() + PLAYBACK_RETRY);
                true
            }
            Err(TrySendError::Closed(_)) => false,
        }
    }

    /// What the agent sent, until the socket has no more or playback is full.
    fn read(&mut self, now: Instant) -> Result<(), End> {
        while self.blocked.is_none() {
            let Some(received) = self.link.recv(&self.out) else { return Ok(()) };
            self.last_heard = now;
            match received {
                Received::Message(m) => self.message(m)?,
                Received::Control => {}
                Received::Ended(reason) => return Err(End::Failed(reason)),
            }
        }
        Ok(())
    }

    fn message(&mut self, message: Result<Inbound, InboundError>) -> Result<(), End> {
        let bidirectional = self.task.spec.bidirectional;
        let mut reply = None;
        match message {
            Ok(Inbound::Media(mut bytes)) if bidirectional && !self.playback_closed => {
                if self.little_endian {
                    swap16(&mut bytes);
                }
                let Some((_, _, from_agent)) = self.transcoders.as_mut() else { return Ok(()) };
                // One allocation per frame (the samples go to the media worker):
                // at most one sample per payload byte, plus the resampler's carry.
                let mut pcm = Vec::with_capacity(bytes.len() + 16);
                from_agent.convert(&bytes, &mut pcm);
                if !self.play(Playback::AudioAt(pcm, std::time::Instant::now())) {
                    self.playback_closed = true;
                }
            }
            Ok(Inbound::Mark(name)) => {
                if self.playback_closed || !bidirectional {
                    // Nothing is playing: a mark is returned at once.
                    reply = self.out.mark(&name);
                } else if !self.play(Playback::Mark(name)) {
                    self.playback_closed = true;
                } else {
                    self.marks_queued += 1;
                }
            }
            Ok(Inbound::Clear) => {
                // The cleared audio's partial chunk must not leak into the next.
                if let Some((_, _, from_agent)) = self.transcoders.as_mut() {
                    from_agent.reset();
                }
                if !self.playback_closed && !self.play(Playback::Clear) {
                    self.playback_closed = true;
                }
                if !self.out.returns_marks_on_clear() {
                    self.marks_cleared = self.marks_queued;
                }
                reply = self.out.cleared();
            }
            Ok(Inbound::Media(_)) => {
                tracing::debug!(agent = %self.task.spec.name, "media from a stream that is not bidirectional: ignored");
            }
            Ok(Inbound::Ignored) => {}
            Ok(Inbound::Hangup) => return Err(End::Failed("closed by the agent (hangup)".into())),
            Err(err) => {
                tracing::info!(agent = %self.task.spec.name, code = err.code, "bad frame from the agent: {}", err.detail);
                reply = self.out.error(&err);
            }
        }
        match reply {
            Some(frame) => self.send(frame),
            None => Ok(()),
        }
    }

    /// The box ends the stream: the protocol's stop frame, the close handshake
    /// (at most [`CLOSE_WAIT`]), then `streaming.stopped`.
    fn stop(&mut self, now: Instant) -> Result<(), End> {
        if let Some(stop) = self.out.stop(&self.info) {
            let _ = self.link.send(stop);
        }
        self.link.start_close();
        self.closing = Some(now + CLOSE_WAIT);
        self.blocked = None;
        self.retry_at = None;
        if self.link.closed() { Err(End::Stopped) } else { Ok(()) }
    }

    fn timer(&mut self, now: Instant) -> Result<(), End> {
        if let Some(deadline) = self.closing {
            return if now >= deadline { Err(End::Stopped) } else { Ok(()) };
        }
        if self.retry_at.is_some_and(|at| now >= at) {
            self.retry_at = None;
            if let Some(request) = self.blocked.take() {
                if !self.play(request) {
                    self.playback_closed = true;
                }
            }
            if self.blocked.is_none() {
                // The pause is the box's, not the agent's silence.
                self.last_heard = now;
                // Messages already read but not yet handled.
                self.read(now)?;
            }
        }
        if let Some(at) = self.next_ping.filter(|at| now >= *at) {
            self.next_ping = Some(at + PING_INTERVAL);
            if self.blocked.is_none() && now.duration_since(self.last_heard) >= DEAD_AFTER {
                return Err(End::Failed(format!("no answer to pings for {}s", DEAD_AFTER.as_secs())));
            }
            match self.link.ping().map_err(End::Failed)? {
                Sent::Written => self.unflushed = false,
                Sent::Queued => self.unflushed = true,
                Sent::Dropped => {}
            }
        }
        Ok(())
    }

    fn finish(&mut self, end: End) {
        if self.dropped > 0 {
            tracing::info!(
                call_control_id = %self.task.info.call_control_id, agent = %self.task.spec.name,
                frames = self.dropped, "frames not sent: the agent did not read them"
            );
        }
        match end {
            End::Stopped => self.task.event("streaming.stopped", None),
            End::Failed(reason) => self.task.fail(reason),
            End::Abandoned => {}
        }
        if let Some(done) = self.done.take() {
            let _ = done.send(());
        }
    }
}

/// Sends `frame` on `link`, noting whether bytes wait and whether it was dropped.
fn put(link: &mut Link, unflushed: &mut bool, dropped: &mut u64, frame: Frame) -> Result<(), End> {
    match link.send(frame) {
        Ok(Sent::Written) => *unflushed = false,
        Ok(Sent::Queued) => *unflushed = true,
        Ok(Sent::Dropped) => *dropped += 1,
        Err(reason) => return Err(End::Failed(reason)),
    }
    Ok(())
}

impl Driven for Session {
    fn fd(&self) -> BorrowedFd<'_> {
        self.link.fd()
    }

    fn drive(&mut self, why: Why, cx: &mut Context<'_>, now: Instant) -> Step {
        let result = match why {
            Why::Start => self.start(cx, now),
            Why::Wake => self.inputs(cx, now),
            Why::Readable => {
                self.link.readable();
                if self.closing.is_some() {
                    if self.link.closed() { Err(End::Stopped) } else { Ok(()) }
                } else {
                    self.read(now)
                }
            }
            Why::Writable => match self.link.flush() {
                Ok(done) => {
                    self.unflushed = !done;
                    Ok(())
                }
                Err(_) if self.closing.is_some() => Err(End::Stopped),
                Err(reason) => Err(End::Failed(reason)),
            },
            Why::Timer => self.timer(now),
        };
        match result {
            Ok(()) => Step::Continue,
            Err(end) => {
                self.finish(end);
                Step::Done
            }
        }
    }

    fn abort(&mut self, reason: String) {
        self.finish(End::Failed(reason));
    }

    fn wants(&self) -> Wants {
        // Closing, only the close's limit counts.
        let deadline = self.closing.or_else(|| self.retry_at.into_iter().chain(self.next_ping).min());
        Wants { read: self.blocked.is_none(), write: self.unflushed, deadline }
    }
}

async fn wait_stop(commands: &mut mpsc::Receiver<Command>) {
    loop {
        match commands.recv().await {
            Some(Command::Stop) | None => return,
            Some(Command::Dtmf(_)) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    //! The connected stream on its I/O thread against a real WebSocket agent on
    //! loopback (tokio-tungstenite's server side): what the box does when the
    //! agent stops reading, and when the leg's playback queue is full.

    use std::sync::Mutex;

    use futures_util::{SinkExt, StreamExt};
    use tokio::net::TcpListener;
    use tokio_tungstenite::tungstenite::Message;

    use super::*;
    use crate::media::pcm::{CHUNK_BYTES, ChunkFormat, PcmPort, pcm_pair};
    use crate::sdp::codec::G711;

    #[derive(Default)]
    struct Events(Mutex<Vec<String>>);

    impl EventSink for Events {
        fn emit_event(&self, event: CallEvent) {
            self.0.lock().unwrap().push(event.event_type.clone());
        }
    }

    fn spec(port: u16) -> StreamSpec {
        StreamSpec {
            name: "test".into(),
            url: url::Url::parse(&format!("ws://127.0.0.1:{port}/")).unwrap(),
            protocol: StreamProtocol::Telnyx,
            auth_token: None,
            encoding: Encoding::Pcmu,
            sample_rate: 8000,
            track: StreamTrack::InboundTrack,
            bidirectional: true,
            connect_timeout: Duration::from_secs(5),
            custom_parameters: serde_json::Map::new(),
        }
    }

    fn call() -> StreamCall {
        StreamCall {
            call_control_id: "v3:test".into(),
            call_leg_id: "leg".into(),
            call_session_id: "session".into(),
            connection_id: "trunk".into(),
            client_state: None,
            from: "+15550001".into(),
            to: "+15550002".into(),
            webhook_url: None,
        }
    }

    /// 20 ms of µ-law whose first byte is `tag` (the rest silence).
    fn chunk(tag: u8) -> Chunk {
        let mut data = [0xff; CHUNK_BYTES];
        data[0] = tag;
        Chunk { direction: Direction::Heard, codec: ChunkFormat::G711(G711::Pcmu), rtp_timestamp: 0, len: 160, data }
    }

    /// The next text frame's `event` and, for media, its decoded payload.
    async fn next_event(ws: &mut Agent) -> (String, Vec<u8>) {
        use base64::Engine as _;
        loop {
            let message = tokio::time::timeout(Duration::from_secs(10), ws.next()).await.unwrap().unwrap().unwrap();
            let Message::Text(text) = message else { continue };
            let v: serde_json::Value = serde_json::from_str(text.as_str()).unwrap();
            let event = v["event"].as_str().unwrap().to_string();
            let payload = v["media"]["payload"]
                .as_str()
                .map_or_else(Vec::new, |p| base64::engine::general_purpose::STANDARD.decode(p).unwrap());
            return (event, payload);
        }
    }

    type Agent = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

    /// A Telnyx stream to a WebSocket agent on loopback, past its opening frames.
    async fn connected() -> (AgentStream, PcmPort, Agent, Arc<Events>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let events = Arc::new(Events::default());
        let (port_side, endpoint) = pcm_pair(32, true, false);
        let stream = AgentStream::start(spec(port), call(), events.clone(), endpoint);
        let (tcp, _) = listener.accept().await.unwrap();
        let mut ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
        assert_eq!(next_event(&mut ws).await.0, "connected");
        assert_eq!(next_event(&mut ws).await.0, "start");
        (stream, port_side, ws, events)
    }

    /// Events as [`Events`] keeps them, but `streaming.started` panics: it is
    /// emitted inside the session's start, on its I/O thread, so this is a
    /// bug in a stream's code as the hub meets it.
    #[derive(Default)]
    struct PanicsAtStart(Events);

    impl EventSink for PanicsAtStart {
        fn emit_event(&self, event: CallEvent) {
            if event.event_type == "streaming.started" {
                panic!("test: a bug in the stream's code");
            }
            self.0.emit_event(event);
        }
    }

    /// A stream whose code panics on its I/O thread fails like any other
    /// stream: the call hears `Failed` (and applies `on_disconnect`), the
    /// backend gets `streaming.failed`, and the agent's connection is closed.
    #[tokio::test]
    async fn a_stream_whose_code_panics_fails_and_the_call_hears_of_it() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let events = Arc::new(PanicsAtStart::default());
        let (_port_side, endpoint) = pcm_pair(32, true, false);
        let mut stream = AgentStream::start(spec(port), call(), events.clone(), endpoint);
        let (tcp, _) = listener.accept().await.unwrap();
        let mut ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
        let heard = tokio::time::timeout(Duration::from_secs(10), stream.next_event()).await.expect("no event");
        assert_eq!(heard, StreamEvent::Failed("internal error: the agent I/O thread dropped the stream".into()));
        assert_eq!(*events.0.0.lock().unwrap(), ["streaming.failed"]);
        // The session was dropped with its socket: the agent sees the end.
        let limit = Duration::from_secs(10);
        while let Some(Ok(_)) = tokio::time::timeout(limit, ws.next()).await.expect("the connection stayed open") {}
    }

    /// An agent that stops reading cannot make the box buffer without bound:
    /// past `link::MAX_QUEUED` bytes frames are dropped, the call's audio keeps
    /// being taken (the media side never waits), and once the agent reads
    /// again the stream carries on, without a failure.
    #[tokio::test]
    async fn an_agent_that_stops_reading_costs_bounded_memory_and_the_stream_goes_on() {
        let (stream, port_side, mut ws, events) = connected().await;

        // 20 000 frames (400 s of audio, ~7 MB of JSON) while the agent reads nothing.
        const FRAMES: usize = 20_000;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        for _ in 0..FRAMES {
            while port_side.chunks.try_send(chunk(1)).is_err() {
                assert!(tokio::time::Instant::now() < deadline, "the stream stopped taking call audio");
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        // Let the I/O thread take the last chunks, then read what was kept.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut kept = 0;
        while let Ok(Some(Ok(m))) = tokio::time::timeout(Duration::from_millis(500), ws.next()).await {
            if matches!(m, Message::Text(_)) {
                kept += 1;
            }
        }
        assert!(kept > 0 && kept < FRAMES, "{kept} of {FRAMES} frames were kept for a stalled agent");
        // The agent reads again: a new frame arrives.
        port_side.chunks.try_send(chunk(0x42)).unwrap();
        let (event, payload) = next_event(&mut ws).await;
        assert_eq!((event.as_str(), payload.first()), ("media", Some(&0x42)));
        stream.stop().await;
        assert_eq!(*events.0.lock().unwrap(), ["streaming.started", "streaming.stopped"]);
    }

    /// The I/O thread's deadlines: a WebSocket ping every `PING_INTERVAL` while
    /// the stream is up (the agent's pong keeps it alive).
    #[tokio::test]
    async fn the_agent_is_pinged_every_ping_interval() {
        let (stream, _port_side, mut ws, events) = connected().await;
        let deadline = tokio::time::Instant::now() + PING_INTERVAL + Duration::from_secs(5);
        loop {
            match tokio::time::timeout_at(deadline, ws.next()).await.expect("no ping") {
                Some(Ok(Message::Ping(_))) => break,
                Some(Ok(_)) => {}
                other => panic!("the connection ended: {other:?}"),
            }
        }
        stream.stop().await;
        assert_eq!(*events.0.lock().unwrap(), ["streaming.started", "streaming.stopped"]);
    }

    /// A handle dropped without `stop` (the call went some other way) ends
    /// the stream without a word: the connection closes, no stop frame, no
    /// `streaming.stopped`.
    #[tokio::test]
    async fn a_stream_dropped_without_stop_ends_silently() {
        let (stream, _port_side, mut ws, events) = connected().await;
        drop(stream);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            match tokio::time::timeout_at(deadline, ws.next()).await.expect("the connection stayed open") {
                Some(Ok(Message::Text(t))) => panic!("a frame after the drop: {t}"),
                Some(Ok(Message::Close(_))) => panic!("a close handshake after the drop"),
                Some(Ok(_)) => {}
                Some(Err(_)) | None => break,
            }
        }
        assert_eq!(*events.0.lock().unwrap(), ["streaming.started"]);
    }

    /// When the leg's playback queue is full the box stops reading the agent
    /// (its TCP window fills) and loses nothing: every frame and mark arrives,
    /// in order, once the leg takes them.
    #[tokio::test]
    async fn a_full_playback_queue_pauses_the_agent_and_loses_nothing() {
        let (stream, mut port_side, mut ws, events) = connected().await;

        // 1 000 media frames (the queue holds 256), each with its index in the
        // first sample, and a mark after every 100th.
        use base64::Engine as _;
        const FRAMES: usize = 1_000;
        let sender = tokio::spawn(async move {
            for i in 0..FRAMES {
                let mut audio = vec![0xffu8; 160];
                audio[0] = (i % 128) as u8;
                let payload = base64::engine::general_purpose::STANDARD.encode(&audio);
                let media = serde_json::json!({"event": "media", "media": {"payload": payload}});
                ws.send(Message::text(media.to_string())).await.unwrap();
                if i % 100 == 99 {
                    let mark = serde_json::json!({"event": "mark", "mark": {"name": format!("m{i}")}});
                    ws.send(Message::text(mark.to_string())).await.unwrap();
                }
            }
            ws
        });
        // Nothing is taken until the agent has had time to fill the queue.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let mut frames = 0;
        let mut marks = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while frames < FRAMES || marks.len() < FRAMES / 100 {
            assert!(tokio::time::Instant::now() < deadline, "{frames} frames, {} marks arrived", marks.len());
            match tokio::time::timeout(Duration::from_millis(100), port_side.playback.recv()).await {
                Ok(Some(Playback::AudioAt(pcm, _))) => {
                    let first = G711::Pcmu.decode_sample((frames % 128) as u8);
                    assert_eq!(pcm.first(), Some(&first), "frame {frames} out of order");
                    frames += 1;
                }
                Ok(Some(Playback::Mark(name))) => {
                    assert_eq!(name, format!("m{}", frames - 1), "a mark out of place");
                    marks.push(name);
                }
                Ok(Some(other)) => panic!("unexpected {other:?}"),
                Ok(None) => panic!("the stream closed the playback queue"),
                Err(_) => {}
            }
        }
        let _ws = sender.await.unwrap();
        stream.stop().await;
        assert_eq!(*events.0.lock().unwrap(), ["streaming.started", "streaming.stopped"]);
    }
}
