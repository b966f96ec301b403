//! One call's stream to a voice agent, as Telnyx (PROTOCOLS.md §3), Twilio,
//! Exotel or Plivo connect to a stream URL, or as Asterisk connects to an
//! AudioSocket server (the stream's `protocol`).
//!
//! The task connects ([`Link`], within `connect_timeout`), sends the protocol's
//! opening frames (`connected` and `start`, ...), then moves the call's audio
//! chunks (from the media task's [`PcmEndpoint`]) out as `media` frames in the
//! stream's encoding and, in bidirectional mode, the agent's audio, marks and
//! clears into the media task's playback queue — the same playout, pacing and mark
//! handling for every protocol; only [`Framing`] differs. DTMF from the call goes
//! out in the protocol's shape. A WebSocket ping every [`PING_INTERVAL`] checks
//! the agent is alive.
//!
//! Events for webhooks (the same whatever the protocol): `streaming.started` once
//! the handshake is done, `streaming.stopped` when the box ends the stream,
//! `streaming.failed` (`failure_reason`) when the connection is refused, times out
//! or drops. The call hears about a failure through [`AgentStream::next_event`]
//! and applies the agent's `on_disconnect`.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::framing::{Framing, swap16};
use super::link::{Link, Received};
use super::protocol::{Inbound, StartInfo, Track};
use crate::config::{Agent, Encoding, StreamProtocol, StreamTrack};
use crate::media::pcm::{Direction, PcmEndpoint, Playback};
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
        let task = Task { spec: spec.clone(), info, bus, stream_id: stream_id.clone(), events: ev_tx };
        let handle = tokio::spawn(task.run(endpoint, cmd_rx));
        Self { commands: cmd_tx, events: ev_rx, task: Some(handle), stream_id, spec }
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

struct Task {
    spec: StreamSpec,
    info: StreamCall,
    bus: Arc<dyn EventSink>,
    stream_id: String,
    events: mpsc::UnboundedSender<StreamEvent>,
}

/// How the stream ended.
enum End {
    /// The box stopped it.
    Stopped,
    /// It failed (reason).
    Failed(String),
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

    async fn run(self, mut endpoint: PcmEndpoint, mut commands: mpsc::Receiver<Command>) {
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
        match self.stream(link, &mut endpoint, &mut commands).await {
            End::Stopped => self.event("streaming.stopped", None),
            End::Failed(reason) => self.fail(reason),
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

    async fn stream(&self, mut link: Link, endpoint: &mut PcmEndpoint, commands: &mut mpsc::Receiver<Command>) -> End {
        let spec = &self.spec;
        let unix_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let (id, trunk) = (&self.stream_id, &self.info.connection_id);
        let mut out = Framing::new(spec.protocol, id, trunk, spec.track, unix_ms, spec.encoding, spec.sample_rate);
        let info = StartInfo {
            call_control_id: self.info.call_control_id.clone(),
            call_session_id: self.info.call_session_id.clone(),
            from: self.info.from.clone(),
            to: self.info.to.clone(),
            client_state: self.info.client_state.clone(),
            custom_parameters: spec.custom_parameters.clone(),
            encoding: spec.encoding,
            sample_rate: spec.sample_rate,
        };
        for frame in out.opening(&info) {
            if let Err(reason) = link.send(frame).await {
                return End::Failed(reason);
            }
        }
        self.event("streaming.started", None);
        let started = Instant::now();
        // Transcoders, one per direction (each keeps its resampler state).
        let (Ok(mut heard_tx), Ok(mut said_tx), Ok(mut from_agent)) = (
            ToStream::new(spec.encoding, spec.sample_rate),
            ToStream::new(spec.encoding, spec.sample_rate),
            FromStream::new_at(spec.encoding, spec.sample_rate, spec.playout_rate()),
        ) else {
            return End::Failed(format!("unsupported stream format {:?} at {} Hz", spec.encoding, spec.sample_rate));
        };
        // L16 leaves the transcoder big-endian (RFC 2586); these protocols carry it
        // little-endian, swapped in place (no copy).
        let little_endian = spec.encoding == Encoding::L16 && spec.protocol.little_endian();
        // Bytes of 20 ms in the stream's encoding (G.711: 1 byte/sample, L16: 2).
        let bytes_per_sample = if spec.encoding == Encoding::L16 { 2 } else { 1 };
        let frame_bytes = (spec.sample_rate as usize / 50) * bytes_per_sample;
        let (mut heard_bytes, mut said_bytes) = (Vec::with_capacity(2048), Vec::with_capacity(2048));
        let mut pcm = Vec::new();
        let mut ping = tokio::time::interval_at(started + PING_INTERVAL, PING_INTERVAL);
        let mut last_heard = Instant::now();
        let mut playback_closed = false;
        let mut chunks_open = true;
        // Marks in the playout queue, and how many of the next returned ones a
        // clear dropped (Plivo reports only checkpoints whose audio played).
        let (mut marks_queued, mut marks_cleared) = (0usize, 0usize);
        // Wideband chunks' samples (reused: no allocation per chunk).
        let mut wide: Vec<i16> = Vec::with_capacity(crate::media::pcm::CHUNK_BYTES / 2);
        let mut packet: Vec<u8> = Vec::with_capacity(crate::media::codec::MAX_PAYLOAD_BYTES);
        loop {
            tokio::select! {
                // Most frequent first (a chunk of call audio every 20 ms, then the
                // agent's frames): with `biased` a ready branch is taken without
                // polling, and registering wakers on, the others (their waker
                // registrations and channel pops were ~8 % of this thread's time,
                // perf at 800 agent calls, issue 20). None can starve the rest:
                // each fires at most every few ms.
                biased;
                chunk = endpoint.chunks.recv(), if chunks_open => {
                    // The call (or room) side closed: no more audio to send; the
                    // stream stays up until it is stopped (no busy loop on None).
                    let Some(chunk) = chunk else {
                        chunks_open = false;
                        continue;
                    };
                    let (track, tx, pending) = match chunk.direction {
                        Direction::Heard => (Track::Inbound, &mut heard_tx, &mut heard_bytes),
                        Direction::Said => (Track::Outbound, &mut said_tx, &mut said_bytes),
                    };
                    if !track.selected_by(spec.track) {
                        continue;
                    }
                    // Whole 20 ms frames only: the resampler's output per chunk
                    // varies around the nominal size.
                    match chunk.g711() {
                        Some((law, bytes)) => tx.convert(law, bytes, pending),
                        None => {
                            wide.clear();
                            chunk.wide_samples(&mut wide);
                            tx.convert_wide(&wide, pending);
                        }
                    }
                    // G722/OPUS: one whole codec packet per `media` message.
                    if tx.is_packetized() {
                        packet.clear();
                        while tx.next_packet(&mut packet) {
                            let ts = started.elapsed().as_millis() as u64;
                            if let Some(frame) = out.media(track, ts, &packet) {
                                if let Err(reason) = link.send(frame).await {
                                    return End::Failed(reason);
                                }
                            }
                            packet.clear();
                        }
                        continue;
                    }
                    while pending.len() >= frame_bytes {
                        let ts = started.elapsed().as_millis() as u64;
                        if little_endian {
                            swap16(&mut pending[..frame_bytes]);
                        }
                        let frame = out.media(track, ts, &pending[..frame_bytes]);
                        pending.drain(..frame_bytes);
                        if let Some(frame) = frame {
                            if let Err(reason) = link.send(frame).await {
                                return End::Failed(reason);
                            }
                        }
                    }
                }
                received = link.recv(&out) => {
                    last_heard = Instant::now();
                    let message = match received {
                        Received::Message(m) => m,
                        Received::Control => continue,
                        Received::Ended(reason) => return End::Failed(reason),
                    };
                    let mut reply = None;
                    match message {
                        Ok(Inbound::Media(mut bytes)) if spec.bidirectional && !playback_closed => {
                            if little_endian {
                                swap16(&mut bytes);
                            }
                            pcm.clear();
                            // One allocation per frame (the samples go to the media
                            // worker): at most one sample per payload byte, plus the
                            // resampler's carry.
                            pcm.reserve(bytes.len() + 16);
                            from_agent.convert(&bytes, &mut pcm);
                            if endpoint.playback.send(Playback::AudioAt(std::mem::take(&mut pcm), std::time::Instant::now())).await.is_err() {
                                playback_closed = true;
                            }
                        }
                        Ok(Inbound::Mark(name)) => {
                            if playback_closed || !spec.bidirectional {
                                // Nothing is playing: a mark is returned at once.
                                reply = out.mark(&name);
                            } else if endpoint.playback.send(Playback::Mark(name)).await.is_err() {
                                playback_closed = true;
                            } else {
                                marks_queued += 1;
                            }
                        }
                        Ok(Inbound::Clear) => {
                            // The cleared audio's partial chunk must not leak into the next.
                            from_agent.reset();
                            if !playback_closed && endpoint.playback.send(Playback::Clear).await.is_err() {
                                playback_closed = true;
                            }
                            if !out.returns_marks_on_clear() {
                                marks_cleared = marks_queued;
                            }
                            reply = out.cleared();
                        }
                        Ok(Inbound::Media(_)) => {
                            tracing::debug!(agent = %spec.name, "media from a stream that is not bidirectional: ignored");
                        }
                        Ok(Inbound::Ignored) => {}
                        Ok(Inbound::Hangup) => return End::Failed("closed by the agent (hangup)".into()),
                        Err(err) => {
                            tracing::info!(agent = %spec.name, code = err.code, "bad frame from the agent: {}", err.detail);
                            reply = out.error(&err);
                        }
                    }
                    if let Some(frame) = reply {
                        if let Err(reason) = link.send(frame).await {
                            return End::Failed(reason);
                        }
                    }
                }
                Some(name) = endpoint.marks.recv() => {
                    marks_queued = marks_queued.saturating_sub(1);
                    if marks_cleared > 0 {
                        marks_cleared -= 1;
                        continue;
                    }
                    if let Some(frame) = out.mark(&name) {
                        if let Err(reason) = link.send(frame).await {
                            return End::Failed(reason);
                        }
                    }
                }
                c = commands.recv() => match c {
                    Some(Command::Dtmf(d)) => {
                        if let Err(reason) = link.send(out.dtmf(d)).await {
                            return End::Failed(reason);
                        }
                    }
                    Some(Command::Stop) | None => {
                        let _ = tokio::time::timeout(Duration::from_secs(2), async {
                            if let Some(stop) = out.stop(&info) {
                                let _ = link.send(stop).await;
                            }
                            link.close().await;
                        })
                        .await;
                        return End::Stopped;
                    }
                },
                _ = ping.tick(), if link.pings() => {
                    if last_heard.elapsed() >= DEAD_AFTER {
                        return End::Failed(format!("no answer to pings for {}s", DEAD_AFTER.as_secs()));
                    }
                    if let Err(reason) = link.ping().await {
                        return End::Failed(reason);
                    }
                }
            }
        }
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
