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
        let tcp = DrainAware(tcp);
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

/// The agent's TCP stream under its WebSocket (or TLS): reads as tokio's
/// `TcpStream` does, except that a read that returns less than it asked for
/// also clears the socket's readiness. A TCP `recv` returns less than asked only
/// when it emptied the receive queue, so the next read waits for the next epoll
/// event instead of making a `read(2)` that fails with `EAGAIN`. tungstenite
/// reads again after every message, so without this each message from the
/// agent (50 a second per call) cost two reads (issue 20: the agent path's CPU).
///
/// No data is stranded: the readiness is cleared with the readiness event taken
/// before the read (tokio's `try_io`), so an event that arrived since is kept,
/// and data that arrives later brings a new event (epoll(7), edge-triggered).
struct DrainAware(TcpStream);

impl AsyncRead for DrainAware {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        use std::io::Read as _;
        use std::task::Poll;
        let tcp = &self.0;
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        loop {
            match tcp.poll_read_ready(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(())) => {}
            }
            let unfilled = buf.initialize_unfilled();
            let want = unfilled.len();
            let mut got = 0usize;
            let read = tcp.try_io(tokio::io::Interest::READABLE, || {
                let socket = socket2::SockRef::from(tcp);
                got = (&*socket).read(unfilled)?;
                if got > 0 && got < want {
                    // Drained: tokio clears the readiness on WouldBlock; the bytes are kept.
                    return Err(std::io::ErrorKind::WouldBlock.into());
                }
                Ok(())
            });
            match read {
                Ok(()) => {
                    buf.advance(got);
                    return Poll::Ready(Ok(()));
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if got > 0 {
                        buf.advance(got);
                        return Poll::Ready(Ok(()));
                    }
                    // Nothing there after all: wait for the next event.
                }
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl AsyncWrite for DrainAware {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_shutdown(cx)
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

#[cfg(test)]
mod tests {
    use std::pin::Pin;
    use std::task::Context;
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadBuf};
    use tokio::net::TcpListener;

    use super::*;

    /// A read that empties the socket leaves the next one waiting for the next
    /// event (no `EAGAIN` read), and nothing sent in pieces of every size is lost
    /// or reordered across those waits.
    #[tokio::test]
    async fn a_drained_socket_waits_for_its_next_event_and_loses_nothing() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (client, server) = tokio::join!(TcpStream::connect(addr), listener.accept());
        let mut reader = DrainAware(client.unwrap());
        let (mut writer, _) = server.unwrap();
        writer.write_all(b"hello").await.unwrap();
        let mut buf = [0u8; 64];
        let mut got = Vec::new();
        while got.len() < 5 {
            let n = reader.read(&mut buf).await.unwrap();
            got.extend_from_slice(&buf[..n]);
        }
        assert_eq!(got, b"hello");
        let waker = futures_util::task::noop_waker();
        let mut rb = ReadBuf::new(&mut buf);
        let pending = Pin::new(&mut reader).poll_read(&mut Context::from_waker(&waker), &mut rb);
        assert!(pending.is_pending(), "drained: waits for the next event");
        // Pieces of 1 byte to 64 KiB, with pauses, read through small and large buffers.
        let sent: Vec<u8> = (0..400_000u32).map(|i| (i % 251) as u8).collect();
        let to_send = sent.clone();
        let w = tokio::spawn(async move {
            let mut at = 0;
            for size in [1usize, 7, 63, 64, 65, 4096, 65_536].iter().cycle() {
                if at >= to_send.len() {
                    break;
                }
                let end = (at + size).min(to_send.len());
                writer.write_all(&to_send[at..end]).await.unwrap();
                at = end;
                tokio::task::yield_now().await;
            }
            writer.shutdown().await.unwrap();
        });
        let mut received = Vec::new();
        let mut small = [0u8; 64];
        let n = reader.read(&mut small).await.unwrap();
        received.extend_from_slice(&small[..n]);
        tokio::time::timeout(Duration::from_secs(30), reader.read_to_end(&mut received))
            .await
            .expect("every byte arrives")
            .unwrap();
        w.await.unwrap();
        assert_eq!(received.len(), sent.len());
        assert!(received == sent, "the same bytes in the same order");
    }
}
