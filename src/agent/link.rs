//! The connection to an agent: a WebSocket (TCP with `TCP_NODELAY`, TLS with
//! rustls/ring for `wss://`, `Authorization: Bearer <auth_token>`) for the JSON
//! protocols, or a plain TCP stream (`tcp://host:port` or `audiosocket://host:port`)
//! for AudioSocket. It only moves [`Frame`]s out and parsed messages in; what they
//! mean is `framing`'s, what to do with them `stream`'s.
//!
//! [`Link::connect`] runs on the async runtime (DNS, TCP, TLS, the WebSocket
//! upgrade, all within the caller's `connect_timeout`). The connected link is
//! then plain non-blocking I/O, driven by an agent I/O thread (`hub`) from its
//! level-triggered epoll: [`Link::recv`] reads the socket at most once per
//! readiness report ([`Link::readable`]) and otherwise only drains what is
//! already buffered, so a frame costs one `recvfrom` and no `EAGAIN` read;
//! [`Link::send`] writes at once and keeps what the socket refuses, bounded by
//! [`MAX_QUEUED`], for [`Link::flush`] when the socket can take more.

use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::HandshakeError;
use tokio_tungstenite::tungstenite::handshake::client::ClientHandshake;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::{self, Message, WebSocket};

use super::audiosocket::Decoder;
use super::framing::{Frame, Framing};
use super::protocol::{Inbound, InboundError, malformed};
use crate::config::StreamProtocol;

/// What one receive brought.
pub enum Received {
    /// A message of the protocol, or why it is not one (the stream goes on).
    Message(Result<Inbound, InboundError>),
    /// Something only the transport cares about (a WebSocket ping or pong).
    Control,
    /// The connection ended: the `failure_reason`.
    Ended(String),
}

/// What [`Link::send`] did with a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sent {
    /// Written, with everything queued before it.
    Written,
    /// Queued behind bytes the socket has not taken yet ([`Link::flush`] when
    /// the socket reports room).
    Queued,
    /// Not queued: [`MAX_QUEUED`] bytes already wait for the agent to read (the
    /// frame is dropped; media is real-time, late audio is worth nothing).
    Dropped,
}

/// Bytes asked of the socket per read. tungstenite zero-fills the free part of
/// its read buffer, up to this much, before every read: with its default
/// (128 KiB) and 50 small frames a second per call that memset was ~5 % of the
/// box's CPU while agent calls were set up (issue 19, `perf` of
/// `scripts/bench-media`), and at 8 KiB it was still 1.7 % of the daemon's
/// samples at 800 agent calls (issue 20). A 20 ms media frame is 250–1 200
/// bytes (PCMU to L16/16000 in base64 JSON); a larger frame still arrives whole,
/// in more reads (the buffer grows to the frame's announced length).
const READ_BUFFER: usize = 2 * 1024;

/// The largest message (and frame) taken from an agent: 4 MiB, about 2 minutes
/// of base64 PCMU or 65 s of L16 at 16 kHz in one `media` message (agents that
/// send a whole prompt at once stay well under it). tungstenite's defaults
/// (64 MiB / 16 MiB) let one agent make the box buffer 64 MiB per call; a
/// larger message fails the stream ("Message too long", `streaming.failed`)
/// and `on_disconnect` applies. AudioSocket messages are bounded by their
/// 16-bit length field (64 KiB).
pub const MAX_MESSAGE: usize = 4 * 1024 * 1024;

/// Bytes the box keeps for an agent that does not read: 256 KiB, 5–20 s of
/// media frames. Beyond it frames are dropped ([`Sent::Dropped`]) rather than
/// buffered without bound; the agent's silence is caught by the pings
/// (`stream::DEAD_AFTER`).
pub const MAX_QUEUED: usize = 256 * 1024;

fn ws_config() -> tungstenite::protocol::WebSocketConfig {
    tungstenite::protocol::WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER)
        .max_message_size(Some(MAX_MESSAGE))
        .max_frame_size(Some(MAX_MESSAGE))
        .max_write_buffer_size(MAX_QUEUED)
}

fn lost(e: impl std::fmt::Display) -> String {
    format!("connection lost: {e}")
}

/// A non-blocking TCP socket that reads from the kernel at most once per
/// readiness report: after one read, further reads say `WouldBlock` without a
/// system call until [`Link::readable`] (the epoll is level-triggered, so bytes
/// left in the socket are reported again). Writes go straight through.
#[derive(Debug)]
pub struct Gated {
    tcp: Sock,
    /// A read may go to the kernel.
    open: bool,
    /// Gate reads (off while the handshake runs on the async runtime).
    gating: bool,
}

/// The socket: the runtime's while the WebSocket handshake awaits readiness,
/// then a plain one for the I/O thread's epoll.
#[derive(Debug)]
enum Sock {
    Async(TcpStream),
    Sync(std::net::TcpStream),
}

impl Gated {
    fn new(tcp: TcpStream) -> Self {
        Self { tcp: Sock::Async(tcp), open: true, gating: false }
    }

    /// Leaves the async runtime: the connection continues on a duplicate of
    /// the descriptor (non-blocking, as the open file is), the runtime's
    /// socket is dropped (deregistered, its descriptor closed; no FIN while the
    /// duplicate lives), and reads are gated from now on. Errors: no
    /// descriptor left to duplicate (`EMFILE`).
    fn detach(&mut self) -> io::Result<()> {
        if let Sock::Async(t) = &self.tcp {
            let tcp = std::net::TcpStream::from(t.as_fd().try_clone_to_owned()?);
            tcp.set_nonblocking(true)?;
            self.tcp = Sock::Sync(tcp);
        }
        self.gating = true;
        Ok(())
    }

    fn fd(&self) -> BorrowedFd<'_> {
        match &self.tcp {
            Sock::Async(t) => t.as_fd(),
            Sock::Sync(t) => t.as_fd(),
        }
    }

    /// Waits (on the runtime) until the socket is readable.
    async fn ready(&self) {
        if let Sock::Async(t) = &self.tcp {
            let _ = t.readable().await;
        }
    }

    fn shutdown(&self) {
        if let Sock::Sync(t) = &self.tcp {
            let _ = t.shutdown(std::net::Shutdown::Write);
        }
    }
}

impl Read for Gated {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.gating {
            if !self.open {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            self.open = false;
        }
        match &mut self.tcp {
            Sock::Async(t) => t.try_read(buf),
            Sock::Sync(t) => t.read(buf),
        }
    }
}

impl Write for Gated {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &mut self.tcp {
            Sock::Async(t) => t.try_write(buf),
            Sock::Sync(t) => t.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The byte stream under a WebSocket: TCP, or TLS over TCP.
pub enum Conn {
    /// `ws://`.
    Plain(Gated),
    /// `wss://` (rustls; the handshake was done on the async runtime).
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, Gated>>),
}

impl Conn {
    fn gated(&mut self) -> &mut Gated {
        match self {
            Conn::Plain(g) => g,
            Conn::Tls(s) => &mut s.sock,
        }
    }

    fn gated_ref(&self) -> &Gated {
        match self {
            Conn::Plain(g) => g,
            Conn::Tls(s) => &s.sock,
        }
    }
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Conn::Plain(g) => g.read(buf),
            Conn::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Conn::Plain(g) => g.write(buf),
            Conn::Tls(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Conn::Plain(g) => g.flush(),
            Conn::Tls(s) => s.flush(),
        }
    }
}

/// An open connection to the agent.
pub enum Link {
    /// A WebSocket (Telnyx, Twilio, Exotel, Plivo).
    Ws(Box<WebSocket<Conn>>),
    /// An AudioSocket TCP stream, the decoder of what the agent sends, and the
    /// bytes the socket has not taken yet.
    Socket(Gated, Decoder, Vec<u8>),
}

impl Link {
    /// TCP (+ TLS + WebSocket handshake, except for AudioSocket) to `url`, with
    /// `auth_token` as a bearer token (WebSocket only). Runs on the async
    /// runtime; the caller bounds it (`connect_timeout`). Errors are
    /// `failure_reason` strings.
    pub async fn connect(url: &url::Url, protocol: StreamProtocol, auth_token: Option<&str>) -> Result<Self, String> {
        let host = url.host_str().ok_or("the URL has no host")?.to_string();
        let tls = url.scheme() == "wss";
        let port = url.port_or_known_default().ok_or("the URL has no port")?;
        let bare_host = host.trim_start_matches('[').trim_end_matches(']').to_string();
        let tcp = TcpStream::connect((bare_host.as_str(), port))
            .await
            .map_err(|e| format!("connection failed to {host}:{port}: {e}"))?;
        let _ = tcp.set_nodelay(true);
        let unusable = |e: io::Error| format!("connection to {host}:{port} unusable: {e}");
        if protocol == StreamProtocol::AudioSocket {
            let mut gated = Gated::new(tcp);
            gated.detach().map_err(unusable)?;
            return Ok(Link::Socket(gated, Decoder::new(), Vec::new()));
        }
        let conn = if tls {
            let name = rustls::pki_types::ServerName::try_from(bare_host.clone())
                .map_err(|e| format!("bad TLS server name {bare_host}: {e}"))?;
            let connector = tokio_rustls::TlsConnector::from(tls_config()?);
            let stream = connector
                .connect(name, tcp)
                .await
                .map_err(|e| format!("TLS handshake with {host}:{port} failed: {e}"))?;
            // rustls keeps whatever it already decrypted in the connection.
            let (tcp, session) = stream.into_inner();
            Conn::Tls(Box::new(rustls::StreamOwned::new(session, Gated::new(tcp))))
        } else {
            Conn::Plain(Gated::new(tcp))
        };
        let mut request = url.as_str().into_client_request().map_err(|e| format!("bad URL: {e}"))?;
        if let Some(token) = auth_token {
            let value = HeaderValue::from_str(&format!("Bearer {token}"))
                .map_err(|_| "auth_token is not a valid header value")?;
            request.headers_mut().insert("Authorization", value);
        }
        let mut ws = upgrade(conn, request).await?;
        ws.get_mut().gated().detach().map_err(unusable)?;
        Ok(Link::Ws(Box::new(ws)))
    }

    /// The socket, for the I/O thread's epoll.
    pub fn fd(&self) -> BorrowedFd<'_> {
        match self {
            Link::Ws(ws) => ws.get_ref().gated_ref().fd(),
            Link::Socket(g, ..) => g.fd(),
        }
    }

    /// The epoll reported the socket readable: the next [`Link::recv`] may read it.
    pub fn readable(&mut self) {
        match self {
            Link::Ws(ws) => ws.get_mut().gated().open = true,
            Link::Socket(g, ..) => g.open = true,
        }
    }

    /// Sends one frame: written now, or queued behind bytes the socket has not
    /// taken. The error is a `failure_reason`.
    pub fn send(&mut self, frame: Frame) -> Result<Sent, String> {
        match self {
            Link::Ws(ws) => {
                let message = match frame {
                    Frame::Text(t) => Message::text(t),
                    Frame::Binary(b) => Message::binary(b),
                };
                ws_sent(ws.send(message))
            }
            Link::Socket(s, _, out) => {
                let bytes = match frame {
                    Frame::Binary(b) => b,
                    Frame::Text(t) => t.into_bytes(),
                };
                if out.len() + bytes.len() > MAX_QUEUED {
                    return Ok(Sent::Dropped);
                }
                if out.is_empty() {
                    let n = write_some(s, &bytes)?;
                    out.extend_from_slice(&bytes[n..]);
                } else {
                    out.extend_from_slice(&bytes);
                    flush_socket(s, out)?;
                }
                Ok(if out.is_empty() { Sent::Written } else { Sent::Queued })
            }
        }
    }

    /// Writes what was queued; `Ok(true)` when nothing is left.
    pub fn flush(&mut self) -> Result<bool, String> {
        match self {
            Link::Ws(ws) => match ws.flush() {
                Ok(()) => Ok(true),
                Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => Ok(false),
                Err(e) => Err(lost(e)),
            },
            Link::Socket(s, _, out) => flush_socket(s, out).map(|()| out.is_empty()),
        }
    }

    /// Whether the transport has pings to check the agent is alive (WebSocket).
    pub fn pings(&self) -> bool {
        matches!(self, Link::Ws(_))
    }

    /// A WebSocket ping (nothing for AudioSocket), sent like a frame.
    pub fn ping(&mut self) -> Result<Sent, String> {
        match self {
            Link::Ws(ws) => ws_sent(ws.send(Message::Ping(Vec::new().into()))),
            Link::Socket(_, _, out) => Ok(if out.is_empty() { Sent::Written } else { Sent::Queued }),
        }
    }

    /// The next message from the agent, parsed by `framing`; `None` when nothing
    /// more can be had without a new readiness report.
    pub fn recv(&mut self, framing: &Framing) -> Option<Received> {
        match self {
            Link::Ws(ws) => match ws.read() {
                Ok(Message::Text(t)) => Some(Received::Message(framing.parse(t.as_str()))),
                Ok(Message::Binary(_)) => Some(Received::Message(Err(malformed(
                    "binary frames are not part of the protocol; send JSON text frames",
                )))),
                Ok(Message::Close(frame)) => {
                    let why = frame
                        .map(|f| format!(" (code {}, {:?})", u16::from(f.code), f.reason.as_str()))
                        .unwrap_or_default();
                    Some(Received::Ended(format!("closed by the agent{why}")))
                }
                // Ping/pong: tungstenite answers pings itself.
                Ok(_) => Some(Received::Control),
                Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => None,
                Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed) => {
                    Some(Received::Ended(lost("end of stream")))
                }
                Err(e) => Some(Received::Ended(lost(e))),
            },
            Link::Socket(s, decoder, _) => loop {
                if let Some(m) = decoder.next_message() {
                    return Some(Received::Message(m));
                }
                match read_into(s, decoder.buffer()) {
                    Ok(0) => return Some(Received::Ended("closed by the agent".into())),
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return None,
                    Err(e) => return Some(Received::Ended(lost(e))),
                }
            },
        }
    }

    /// Starts ending the connection: the WebSocket close frame, or a TCP
    /// shutdown of the box's side. [`Link::closed`] then says when the agent
    /// has closed too.
    pub fn start_close(&mut self) {
        match self {
            Link::Ws(ws) => {
                let _ = ws.close(None);
            }
            Link::Socket(s, _, out) => {
                let _ = flush_socket(s, out);
                s.shutdown();
            }
        }
    }

    /// After [`Link::start_close`]: reads and discards what the agent still
    /// sends; `true` once it has closed its side (or the connection failed),
    /// `false` while it may still.
    pub fn closed(&mut self) -> bool {
        match self {
            Link::Ws(ws) => loop {
                match ws.read() {
                    Ok(_) => {}
                    Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => return false,
                    Err(_) => return true,
                }
            },
            Link::Socket(s, decoder, _) => loop {
                let buf = decoder.buffer();
                buf.clear();
                match read_into(s, buf) {
                    Ok(0) => return true,
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                    Err(_) => return true,
                }
            },
        }
    }
}

/// The WebSocket upgrade (RFC 6455 §4.1) on the async runtime: tungstenite's
/// client handshake over the runtime's socket, resumed whenever the socket
/// turns readable (and every 100 ms, in case the request itself was held up by
/// a full socket).
async fn upgrade(conn: Conn, request: tungstenite::handshake::client::Request) -> Result<WebSocket<Conn>, String> {
    let mut attempt = match ClientHandshake::start(conn, request, Some(ws_config())) {
        Ok(mid) => mid.handshake(),
        Err(e) => return Err(format!("WebSocket handshake failed: {e}")),
    };
    loop {
        let mid = match attempt {
            Ok((ws, _)) => return Ok(ws),
            Err(HandshakeError::Interrupted(mid)) => mid,
            Err(HandshakeError::Failure(tungstenite::Error::Http(resp))) => {
                return Err(format!("handshake rejected: HTTP {}", resp.status().as_u16()));
            }
            Err(HandshakeError::Failure(e)) => return Err(format!("WebSocket handshake failed: {e}")),
        };
        // `try_read` clears the readiness it found stale, so no wake-up is lost.
        let _ = tokio::time::timeout(Duration::from_millis(100), mid.get_ref().get_ref().gated_ref().ready()).await;
        attempt = mid.handshake();
    }
}

/// What a WebSocket send did.
fn ws_sent(result: tungstenite::Result<()>) -> Result<Sent, String> {
    match result {
        Ok(()) => Ok(Sent::Written),
        Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => Ok(Sent::Queued),
        Err(tungstenite::Error::WriteBufferFull(_)) => Ok(Sent::Dropped),
        Err(e) => Err(lost(e)),
    }
}

/// One write of `bytes`; `WouldBlock` is 0 bytes written.
fn write_some(s: &mut Gated, bytes: &[u8]) -> Result<usize, String> {
    match s.write(bytes) {
        Ok(n) => Ok(n),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(0),
        Err(e) => Err(lost(e)),
    }
}

fn flush_socket(s: &mut Gated, out: &mut Vec<u8>) -> Result<(), String> {
    while !out.is_empty() {
        let n = write_some(s, out)?;
        if n == 0 {
            break;
        }
        out.drain(..n);
    }
    Ok(())
}

/// One read into the spare capacity of `buf` (which the decoder reserved).
fn read_into(s: &mut Gated, buf: &mut Vec<u8>) -> io::Result<usize> {
    let start = buf.len();
    let spare = buf.capacity().max(start + 1024) - start;
    buf.resize(start + spare, 0);
    let r = s.read(&mut buf[start..]);
    buf.truncate(start + *r.as_ref().unwrap_or(&0));
    r
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
