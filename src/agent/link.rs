//! The connection to an agent: a WebSocket (TCP with `TCP_NODELAY`, TLS with
//! rustls/ring for `wss://`, `Authorization: Bearer <auth_token>`) for the JSON
//! protocols, or a plain TCP stream (`tcp://host:port` or `audiosocket://host:port`)
//! for AudioSocket. It only moves [`Frame`]s out and parsed messages in; what they
//! mean is `framing`'s, what to do with them `stream`'s. Every receive is
//! cancel-safe (the stream task selects over it).

use std::sync::Arc;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::{self, Message};

use super::audiosocket::Decoder;
use super::framing::{Frame, Framing};
use super::protocol::{Inbound, InboundError, malformed};
use crate::config::StreamProtocol;

/// A byte stream under a WebSocket: TCP, or TLS over TCP.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}
/// A WebSocket to the agent.
pub type Ws = WebSocketStream<Box<dyn Io>>;

/// An open connection to the agent.
pub enum Link {
    /// A WebSocket (Telnyx, Twilio, Exotel, Plivo).
    Ws(Box<Ws>),
    /// An AudioSocket TCP stream and the decoder of what the agent sends.
    Socket(TcpStream, Decoder),
}

/// What one receive brought.
pub enum Received {
    /// A message of the protocol, or why it is not one (the stream goes on).
    Message(Result<Inbound, InboundError>),
    /// Something only the transport cares about (a WebSocket ping or pong).
    Control,
    /// The connection ended: the `failure_reason`.
    Ended(String),
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

fn ws_config() -> tungstenite::protocol::WebSocketConfig {
    tungstenite::protocol::WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER)
        .max_message_size(Some(MAX_MESSAGE))
        .max_frame_size(Some(MAX_MESSAGE))
}

fn lost(e: impl std::fmt::Display) -> String {
    format!("connection lost: {e}")
}

impl Link {
    /// TCP (+ TLS + WebSocket handshake, except for AudioSocket) to `url`, with
    /// `auth_token` as a bearer token (WebSocket only). Errors are
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
        if protocol == StreamProtocol::AudioSocket {
            return Ok(Link::Socket(tcp, Decoder::new()));
        }
        let io: Box<dyn Io> = if tls {
            let name = rustls::pki_types::ServerName::try_from(bare_host.clone())
                .map_err(|e| format!("bad TLS server name {bare_host}: {e}"))?;
            let connector = tokio_rustls::TlsConnector::from(tls_config()?);
            Box::new(
                connector
                    .connect(name, tcp)
                    .await
                    .map_err(|e| format!("TLS handshake with {host}:{port} failed: {e}"))?,
            )
        } else {
            Box::new(tcp)
        };
        let mut request = url.as_str().into_client_request().map_err(|e| format!("bad URL: {e}"))?;
        if let Some(token) = auth_token {
            let value = HeaderValue::from_str(&format!("Bearer {token}"))
                .map_err(|_| "auth_token is not a valid header value")?;
            request.headers_mut().insert("Authorization", value);
        }
        match tokio_tungstenite::client_async_with_config(request, io, Some(ws_config())).await {
            Ok((ws, _)) => Ok(Link::Ws(Box::new(ws))),
            Err(tungstenite::Error::Http(resp)) => Err(format!("handshake rejected: HTTP {}", resp.status().as_u16())),
            Err(e) => Err(format!("WebSocket handshake failed: {e}")),
        }
    }

    /// Sends one frame; the error is a `failure_reason`.
    pub async fn send(&mut self, frame: Frame) -> Result<(), String> {
        match (self, frame) {
            (Link::Ws(ws), Frame::Text(t)) => ws.send(Message::text(t)).await.map_err(lost),
            (Link::Ws(ws), Frame::Binary(b)) => ws.send(Message::binary(b)).await.map_err(lost),
            (Link::Socket(s, _), Frame::Binary(b)) => s.write_all(&b).await.map_err(lost),
            (Link::Socket(s, _), Frame::Text(t)) => s.write_all(t.as_bytes()).await.map_err(lost),
        }
    }

    /// Whether the transport has pings to check the agent is alive (WebSocket).
    pub fn pings(&self) -> bool {
        matches!(self, Link::Ws(_))
    }

    /// A WebSocket ping (nothing for AudioSocket).
    pub async fn ping(&mut self) -> Result<(), String> {
        match self {
            Link::Ws(ws) => ws.send(Message::Ping(Vec::new().into())).await.map_err(lost),
            Link::Socket(..) => Ok(()),
        }
    }

    /// The next message from the agent, parsed by `framing`. Cancel-safe.
    pub async fn recv(&mut self, framing: &Framing) -> Received {
        match self {
            Link::Ws(ws) => match ws.next().await {
                Some(Ok(Message::Text(t))) => Received::Message(framing.parse(t.as_str())),
                Some(Ok(Message::Binary(_))) => Received::Message(Err(malformed(
                    "binary frames are not part of the protocol; send JSON text frames",
                ))),
                Some(Ok(Message::Close(frame))) => {
                    let why = frame
                        .map(|f| format!(" (code {}, {:?})", u16::from(f.code), f.reason.as_str()))
                        .unwrap_or_default();
                    Received::Ended(format!("closed by the agent{why}"))
                }
                // Ping/pong: tungstenite answers pings itself.
                Some(Ok(_)) => Received::Control,
                Some(Err(e)) => Received::Ended(lost(e)),
                None => Received::Ended(lost("end of stream")),
            },
            Link::Socket(s, decoder) => loop {
                // The decoder keeps partial messages, so a cancelled read loses nothing.
                if let Some(m) = decoder.next_message() {
                    return Received::Message(m);
                }
                match s.read_buf(decoder.buffer()).await {
                    Ok(0) => return Received::Ended("closed by the agent".into()),
                    Ok(_) => {}
                    Err(e) => return Received::Ended(lost(e)),
                }
            },
        }
    }

    /// Ends the connection: WebSocket close handshake, or TCP shutdown; then reads
    /// until the agent closes too. The caller bounds the wait.
    pub async fn close(&mut self) {
        match self {
            Link::Ws(ws) => {
                let _ = (**ws).close(None).await;
                while let Some(Ok(_)) = ws.next().await {}
            }
            Link::Socket(s, decoder) => {
                let _ = s.shutdown().await;
                let buf = decoder.buffer();
                loop {
                    buf.clear();
                    match s.read_buf(buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {}
                    }
                }
            }
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
