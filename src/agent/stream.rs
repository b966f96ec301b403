//! One call's stream to a voice agent: the WebSocket client of Telnyx's
//! media-stream protocol (PROTOCOLS.md §3), as Telnyx itself connects to a
//! `stream_url`.
//!
//! The task connects (TCP with `TCP_NODELAY`, TLS with rustls/ring for `wss://`,
//! `Authorization: Bearer <auth_token>`, all within `connect_timeout`), sends
//! `connected` and `start`, then moves the call's audio chunks (from the media task's
//! [`PcmEndpoint`]) out as `media` frames in the stream's encoding and, in
//! bidirectional mode, the agent's `media`/`mark`/`clear` into the media task's
//! playback queue. DTMF from the call goes out as `dtmf` frames. A WebSocket ping
//! every [`PING_INTERVAL`] checks the agent is alive.
//!
//! Events for webhooks: `streaming.started` once the handshake is done,
//! `streaming.stopped` when the box ends the stream, `streaming.failed`
//! (`failure_reason`) when the connection is refused, times out or drops. The call
//! hears about a failure through [`AgentStream::next_event`] and applies the agent's
//! `on_disconnect`.

use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::{self, Message};

use super::protocol::{Inbound, Outbound, StartInfo, Track, parse_inbound};
use crate::config::{Agent, Encoding, StreamTrack};
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
    /// `ws://` or `wss://` URL.
    pub url: url::Url,
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
}

impl StreamSpec {
    /// The spec of a configured WebSocket agent; `None` for `builtin:echo`.
    pub fn from_agent(agent: &Agent) -> Option<Self> {
        let crate::config::AgentUrl::WebSocket(url) = &agent.url else { return None };
        Some(Self {
            name: agent.name.clone(),
            url: url.clone(),
            auth_token: agent.auth_token.as_ref().map(|s| s.expose().to_string()),
            encoding: agent.encoding,
            sample_rate: agent.sample_rate,
            track: agent.track,
            bidirectional: agent.bidirectional,
            connect_timeout: agent.connect_timeout,
        })
    }

    /// Rate of the box's playout and of the call's recording for this stream, Hz:
    /// 16000 for L16 at 16000 Hz (the agent's audio keeps its band up to the leg's
    /// G.711 encoder, and the recording keeps it), 8000 otherwise (ISSUE 7 point 1).
    pub fn playout_rate(&self) -> u32 {
        if self.encoding == Encoding::L16 && self.sample_rate == 16000 { 16000 } else { 8000 }
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

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}
type Ws = WebSocketStream<Box<dyn Io>>;

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
        let connect = tokio::time::timeout(self.spec.connect_timeout, connect(&self.spec));
        let ws = tokio::select! {
            r = connect => match r {
                Ok(Ok(ws)) => ws,
                Ok(Err(reason)) => return self.fail(reason),
                Err(_) => return self.fail(format!("connect timeout after {}", humantime::format_duration(self.spec.connect_timeout))),
            },
            // Hung up while connecting: nothing was started, nothing to report.
            _ = wait_stop(&mut commands) => return,
        };
        tracing::info!(call_control_id = %id, agent = %self.spec.name, stream_id = %self.stream_id, "agent stream connected");
        match self.stream(ws, &mut endpoint, &mut commands).await {
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

    async fn stream(&self, mut ws: Ws, endpoint: &mut PcmEndpoint, commands: &mut mpsc::Receiver<Command>) -> End {
        let spec = &self.spec;
        let mut out = Outbound::new(self.stream_id.clone());
        let start = StartInfo {
            call_control_id: self.info.call_control_id.clone(),
            call_session_id: self.info.call_session_id.clone(),
            from: self.info.from.clone(),
            to: self.info.to.clone(),
            client_state: self.info.client_state.clone(),
            custom_parameters: serde_json::Map::new(),
            encoding: spec.encoding,
            sample_rate: spec.sample_rate,
        };
        for frame in [out.connected(), out.start(&start)] {
            if let Err(e) = ws.send(Message::text(frame)).await {
                return End::Failed(format!("connection lost: {e}"));
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
        // Bytes of 20 ms in the stream's encoding (G.711: 1 byte/sample, L16: 2).
        let bytes_per_sample = if spec.encoding == Encoding::L16 { 2 } else { 1 };
        let frame_bytes = (spec.sample_rate as usize / 50) * bytes_per_sample;
        let (mut heard_bytes, mut said_bytes) = (Vec::with_capacity(2048), Vec::with_capacity(2048));
        let mut pcm = Vec::new();
        let mut ping = tokio::time::interval_at(started + PING_INTERVAL, PING_INTERVAL);
        let mut last_heard = Instant::now();
        let mut playback_closed = false;
        let mut chunks_open = true;
        loop {
            tokio::select! {
                msg = ws.next() => {
                    last_heard = Instant::now();
                    let text = match msg {
                        Some(Ok(Message::Text(t))) => t,
                        Some(Ok(Message::Binary(_))) => {
                            let err = super::protocol::InboundError {
                                code: super::protocol::error_code::MALFORMED_FRAME,
                                title: "Malformed Frame",
                                detail: "binary frames are not part of the protocol; send JSON text frames".into(),
                            };
                            tracing::debug!(agent = %spec.name, "binary frame from the agent");
                            if let Err(e) = ws.send(Message::text(out.error(&err))).await {
                                return End::Failed(format!("connection lost: {e}"));
                            }
                            continue;
                        }
                        Some(Ok(Message::Close(frame))) => {
                            let why = frame.map(|f| format!(" (code {}, {:?})", u16::from(f.code), f.reason.as_str())).unwrap_or_default();
                            return End::Failed(format!("closed by the agent{why}"));
                        }
                        Some(Ok(_)) => continue, // ping/pong: tungstenite answers pings itself
                        Some(Err(e)) => return End::Failed(format!("connection lost: {e}")),
                        None => return End::Failed("connection lost: end of stream".into()),
                    };
                    match parse_inbound(text.as_str()) {
                        Ok(Inbound::Media(bytes)) if spec.bidirectional && !playback_closed => {
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
                                if let Err(e) = ws.send(Message::text(out.mark(&name))).await {
                                    return End::Failed(format!("connection lost: {e}"));
                                }
                            } else if endpoint.playback.send(Playback::Mark(name)).await.is_err() {
                                playback_closed = true;
                            }
                        }
                        Ok(Inbound::Clear) => {
                            // The cleared audio's partial chunk must not leak into the next.
                            from_agent.reset();
                            if !playback_closed && endpoint.playback.send(Playback::Clear).await.is_err() {
                                playback_closed = true;
                            }
                        }
                        Ok(Inbound::Media(_)) => {
                            tracing::debug!(agent = %spec.name, "media from a stream that is not bidirectional: ignored");
                        }
                        Ok(Inbound::Ignored) => {}
                        Err(err) => {
                            tracing::info!(agent = %spec.name, code = err.code, "bad frame from the agent: {}", err.detail);
                            if let Err(e) = ws.send(Message::text(out.error(&err))).await {
                                return End::Failed(format!("connection lost: {e}"));
                            }
                        }
                    }
                }
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
                    tx.convert(chunk.codec, chunk.audio(), pending);
                    while pending.len() >= frame_bytes {
                        let ts = started.elapsed().as_millis() as u64;
                        let frame = out.media(track, ts, &pending[..frame_bytes]);
                        pending.drain(..frame_bytes);
                        if let Err(e) = ws.send(Message::text(frame)).await {
                            return End::Failed(format!("connection lost: {e}"));
                        }
                    }
                }
                Some(name) = endpoint.marks.recv() => {
                    if let Err(e) = ws.send(Message::text(out.mark(&name))).await {
                        return End::Failed(format!("connection lost: {e}"));
                    }
                }
                c = commands.recv() => match c {
                    Some(Command::Dtmf(d)) => {
                        if let Err(e) = ws.send(Message::text(out.dtmf(d))).await {
                            return End::Failed(format!("connection lost: {e}"));
                        }
                    }
                    Some(Command::Stop) | None => {
                        let stop = out.stop(&self.info.call_control_id, &self.info.call_session_id);
                        let _ = ws.send(Message::text(stop)).await;
                        let _ = tokio::time::timeout(Duration::from_secs(2), async {
                            let _ = ws.close(None).await;
                            // Drain until the agent's close frame (or the end).
                            while let Some(Ok(_)) = ws.next().await {}
                        })
                        .await;
                        return End::Stopped;
                    }
                },
                _ = ping.tick() => {
                    if last_heard.elapsed() >= DEAD_AFTER {
                        return End::Failed(format!("no answer to pings for {}s", DEAD_AFTER.as_secs()));
                    }
                    if let Err(e) = ws.send(Message::Ping(Vec::new().into())).await {
                        return End::Failed(format!("connection lost: {e}"));
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

fn tls_config() -> Result<Arc<rustls::ClientConfig>, String> {
    use rustls_platform_verifier::BuilderVerifierExt;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_platform_verifier()
        .map_err(|e| format!("no TLS trust roots: {e}"))?
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// TCP (+ TLS) + WebSocket handshake. Errors are `failure_reason` strings.
/// Bytes asked of the socket per read. tungstenite's default (128 KiB) is
/// zero-filled before every read: with 50 small frames a second per call that
/// memset was ~5 % of the box's CPU while agent calls were set up (issue 19,
/// `perf` of `scripts/bench-media`). A media frame is well under 2 KiB; a larger frame still
/// arrives whole (the buffer grows to the frame's announced length).
const READ_BUFFER: usize = 8 * 1024;

/// The largest message (and frame) taken from an agent: 4 MiB, about 2 minutes
/// of base64 PCMU or 65 s of L16 at 16 kHz in one `media` message (agents that
/// send a whole prompt at once stay well under it). tungstenite's defaults
/// (64 MiB / 16 MiB) let one agent make the box buffer 64 MiB per call; a
/// larger message fails the stream ("Message too long", `streaming.failed`)
/// and `on_disconnect` applies.
pub const MAX_MESSAGE: usize = 4 * 1024 * 1024;

fn ws_config() -> tungstenite::protocol::WebSocketConfig {
    tungstenite::protocol::WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER)
        .max_message_size(Some(MAX_MESSAGE))
        .max_frame_size(Some(MAX_MESSAGE))
}

async fn connect(spec: &StreamSpec) -> Result<Ws, String> {
    let url = &spec.url;
    let host = url.host_str().ok_or("the URL has no host")?.to_string();
    let tls = url.scheme() == "wss";
    let port = url.port_or_known_default().unwrap_or(if tls { 443 } else { 80 });
    let bare_host = host.trim_start_matches('[').trim_end_matches(']').to_string();
    let tcp = tokio::net::TcpStream::connect((bare_host.as_str(), port))
        .await
        .map_err(|e| format!("connection failed to {host}:{port}: {e}"))?;
    let _ = tcp.set_nodelay(true);
    let io: Box<dyn Io> = if tls {
        let name = rustls::pki_types::ServerName::try_from(bare_host.clone())
            .map_err(|e| format!("bad TLS server name {bare_host}: {e}"))?;
        let connector = tokio_rustls::TlsConnector::from(tls_config()?);
        Box::new(
            connector.connect(name, tcp).await.map_err(|e| format!("TLS handshake with {host}:{port} failed: {e}"))?,
        )
    } else {
        Box::new(tcp)
    };
    let mut request = url.as_str().into_client_request().map_err(|e| format!("bad URL: {e}"))?;
    if let Some(token) = &spec.auth_token {
        let value =
            HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| "auth_token is not a valid header value")?;
        request.headers_mut().insert("Authorization", value);
    }
    match tokio_tungstenite::client_async_with_config(request, io, Some(ws_config())).await {
        Ok((ws, _)) => Ok(ws),
        Err(tungstenite::Error::Http(resp)) => Err(format!("handshake rejected: HTTP {}", resp.status().as_u16())),
        Err(e) => Err(format!("WebSocket handshake failed: {e}")),
    }
}
