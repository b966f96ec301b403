use crate::sip::prelude::HeadersExt;
use crate::sip::SipMessage;
use crate::{
    transport::{
        connection::{TransportSender, KEEPALIVE_REQUEST, KEEPALIVE_RESPONSE},
        stream_limits::StreamRefusal,
        SipAddr, SipConnection, TransportEvent,
    },
    Result,
};
use bytes::{Buf, BytesMut};
use core::time::Duration;
use memchr::{memchr, memmem};
use std::time::Instant;
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    sync::Mutex,
};
use tokio_util::codec::{Decoder, Encoder};
use tracing::{debug, info, warn};

pub(super) const MAX_SIP_MESSAGE_SIZE: usize = 65535;
const CL_FULL_NAME: &[u8] = b"content-length";
const CL_SHORT_NAME: &[u8] = b"l";

pub struct SipCodec {}

impl SipCodec {
    pub fn new() -> Self {
        Self {}
    }
}

impl Default for SipCodec {
    fn default() -> Self {
        Self::new()
    }
}

#[derive(Debug, Clone)]
pub enum SipCodecType {
    Message(SipMessage),
    KeepaliveRequest,
    KeepaliveResponse,
}

impl std::fmt::Display for SipCodecType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SipCodecType::Message(msg) => write!(f, "{}", msg),
            SipCodecType::KeepaliveRequest => write!(f, "Keepalive Request"),
            SipCodecType::KeepaliveResponse => write!(f, "Keepalive Response"),
        }
    }
}

impl Decoder for SipCodec {
    type Item = SipCodecType;
    type Error = crate::Error;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Self::Item>> {
        Ok(match self.decode_frame(src)? {
            None => None,
            Some(SipFrame::Message(bytes)) => {
                Some(SipCodecType::Message(SipMessage::try_from(&bytes[..])?))
            }
            Some(SipFrame::KeepaliveRequest) => Some(SipCodecType::KeepaliveRequest),
            Some(SipFrame::KeepaliveResponse) => Some(SipCodecType::KeepaliveResponse),
        })
    }
}

/// One unit cut from a stream, before parsing (sipbridge patch: the serve loop
/// rate-limits messages before paying for the parse).
pub(crate) enum SipFrame {
    /// The bytes of one complete message (headers, CRLFCRLF, Content-Length body).
    Message(BytesMut),
    /// RFC 5626 §3.5.1 CRLFCRLF ping.
    KeepaliveRequest,
    /// RFC 5626 §3.5.1 CRLF pong.
    KeepaliveResponse,
}

impl SipCodec {
    /// Cuts the next frame from `src`: `Ok(None)` until one is complete. Errors
    /// when the Content-Length is not a number, or the message (announced or
    /// buffered) is larger than 65 535 bytes.
    pub(crate) fn decode_frame(&mut self, src: &mut BytesMut) -> Result<Option<SipFrame>> {
        if src.len() >= 4 && &src[0..4] == KEEPALIVE_REQUEST {
            src.advance(4);
            return Ok(Some(SipFrame::KeepaliveRequest));
        }

        if src.len() >= 2 && &src[0..2] == KEEPALIVE_RESPONSE {
            src.advance(2);
            return Ok(Some(SipFrame::KeepaliveResponse));
        }

        if let Some(headers_end) = memmem::find(src, b"\r\n\r\n") {
            let headers = &src[..headers_end + 4]; // include CRLFCRLF

            // Parse Content-Length as u32 without UTF-8 conversion
            let mut content_length: usize = 0;
            let mut start = 0;
            while start < headers.len() {
                // find end of line with memchr
                let end = memchr(b'\n', &headers[start..])
                    .map(|p| start + p)
                    .unwrap_or(headers.len());

                let mut line = &headers[start..end];
                if let Some(&b'\r') = line.last() {
                    line = &line[..line.len().saturating_sub(1)];
                }

                if let Some(colon) = memchr(b':', line) {
                    let header = &line[..colon];
                    let is_cl = if header.len() == CL_FULL_NAME.len()
                        && header
                            .iter()
                            .zip(CL_FULL_NAME.iter())
                            .all(|(&a, &b)| a.to_ascii_lowercase() == b)
                    {
                        true
                    } else {
                        header.len() == CL_SHORT_NAME.len()
                            && header
                                .iter()
                                .zip(CL_SHORT_NAME.iter())
                                .all(|(&a, &b)| a.to_ascii_lowercase() == b)
                    };

                    if is_cl {
                        // parse value
                        let value_buf = &line[colon + 1..];
                        content_length = std::str::from_utf8(value_buf)
                            .map_err(|_| crate::Error::Error("Invalid Content-Length".to_string()))?
                            .trim()
                            .parse()
                            .map_err(|_| {
                                crate::Error::Error("Invalid Content-Length value".to_string())
                            })?;
                        break;
                    }
                }

                start = if end < headers.len() { end + 1 } else { end };
            }

            // sipbridge patch: refuse an announced size past the cap at once
            // (and never overflow on a huge Content-Length) instead of
            // buffering toward it.
            let total_len = (headers_end + 4)
                .checked_add(content_length)
                .filter(|&n| n <= MAX_SIP_MESSAGE_SIZE)
                .ok_or_else(|| crate::Error::Error("SIP message too large".to_string()))?;

            if src.len() >= total_len {
                return Ok(Some(SipFrame::Message(src.split_to(total_len))));
            }
        }

        if src.len() > MAX_SIP_MESSAGE_SIZE {
            return Err(crate::Error::Error("SIP message too large".to_string()));
        }
        Ok(None)
    }
}

impl Encoder<SipMessage> for SipCodec {
    type Error = crate::Error;

    fn encode(&mut self, item: SipMessage, dst: &mut BytesMut) -> Result<()> {
        // Use to_bytes() (not to_string()) so binary bodies are preserved
        // byte-for-byte; a SIP body is opaque octets (RFC 3261 §7.4).
        dst.extend_from_slice(&item.to_bytes());
        Ok(())
    }
}

pub struct StreamConnectionInner<R, W>
where
    R: AsyncRead + Unpin + Send,
    W: AsyncWrite + Unpin + Send,
{
    pub local_addr: SipAddr,
    pub remote_addr: SipAddr,
    pub read_half: Mutex<Option<R>>,
    pub write_half: Mutex<W>,
}

impl<R, W> StreamConnectionInner<R, W>
where
    R: AsyncRead + Unpin + Send,
    W: AsyncWrite + Unpin + Send,
{
    pub fn new(local_addr: SipAddr, remote_addr: SipAddr, read_half: R, write_half: W) -> Self {
        Self {
            local_addr,
            remote_addr,
            read_half: Mutex::new(Some(read_half)),
            write_half: Mutex::new(write_half),
        }
    }

    pub async fn send_message(&self, msg: SipMessage) -> Result<()> {
        let cseq = msg
            .cseq_header()
            .map(|c| c.value().to_string())
            .unwrap_or_default();
        info!(
            src = %self.local_addr,
            dest = %self.remote_addr,
            cseq = %cseq,
            raw_message = ?msg.to_string(),
            "stream send"
        );
        send_to_stream(&self.write_half, msg).await
    }

    pub async fn send_raw(&self, data: &[u8]) -> Result<()> {
        send_raw_to_stream(&self.write_half, data).await
    }

    pub async fn serve_loop(
        &self,
        sender: TransportSender,
        connection: SipConnection,
        idle_timeout: Duration,
    ) -> Result<()> {
        self.serve_loop_with(sender, connection, &ServeOptions::plain(idle_timeout))
            .await
            .map(|_| ())
    }

    /// sipbridge patch: serves the connection under `options` until the peer
    /// closes, an error occurs, or a deadline passes (returned). The read buffer
    /// starts empty and grows with the data up to the 65 535-byte message cap; it
    /// is dropped again once a large message has been consumed, so an idle
    /// connection holds about 1 KiB.
    pub(crate) async fn serve_loop_with(
        &self,
        sender: TransportSender,
        connection: SipConnection,
        options: &ServeOptions,
    ) -> Result<Option<StreamRefusal>> {
        let mut read_half = match self.read_half.lock().await.take() {
            Some(read_half) => read_half,
            None => {
                warn!(local = %self.local_addr, "Connection already closed");
                return Ok(None);
            }
        };

        let remote_addr = self.remote_addr.clone();
        let remote_socket_addr = remote_addr.get_socketaddr()?;

        let mut codec = SipCodec::new();
        let mut buffer = BytesMut::new();
        let mut clock = StreamClock::new(Instant::now());
        loop {
            reserve_for_read(&mut buffer);
            let read = match clock.deadline(options) {
                None => read_half.read_buf(&mut buffer).await,
                Some((at, why)) => {
                    match tokio::time::timeout_at(at.into(), read_half.read_buf(&mut buffer)).await
                    {
                        Ok(read) => read,
                        Err(_) => {
                            debug!(
                                local = %self.local_addr,
                                remote = %remote_addr,
                                %why,
                                "closing stream connection"
                            );
                            return Ok(Some(why));
                        }
                    }
                }
            };
            match read {
                Ok(0) => {
                    debug!(local = %self.local_addr, remote = %remote_addr, "Connection closed");
                    return Ok(None);
                }
                Ok(_) => clock.bytes_arrived(Instant::now()),
                Err(e) => {
                    debug!(error = %e, src = %remote_addr, "Error reading from stream");
                    return Ok(None);
                }
            }

            let mut frames = 0usize;
            while let Some(frame) = codec.decode_frame(&mut buffer)? {
                frames += 1;
                match frame {
                    SipFrame::Message(bytes) => {
                        clock.message_completed();
                        if !options.allows_one_more(&remote_addr).await {
                            continue;
                        }
                        let sip_msg = SipMessage::try_from(&bytes[..])?;
                        drop(bytes);
                        info!(src = %remote_addr, raw_message = ?sip_msg.to_string(), "received message");
                        let sip_msg = SipConnection::update_msg_received(
                            sip_msg,
                            remote_socket_addr,
                            remote_addr.r#type.unwrap_or_default(),
                        )?;

                        if let Err(e) = sender.send(TransportEvent::Incoming(
                            sip_msg,
                            connection.clone(),
                            remote_addr.clone(),
                        )) {
                            warn!(error = ?e, "Error sending incoming message");
                            return Err(e.into());
                        }
                    }
                    SipFrame::KeepaliveRequest => {
                        if options.allows_one_more(&remote_addr).await {
                            self.send_raw(KEEPALIVE_RESPONSE).await?;
                        }
                    }
                    SipFrame::KeepaliveResponse => {}
                }
            }
            clock.buffer_state(frames > 0, !buffer.is_empty());
            if buffer.is_empty() && buffer.capacity() > SHRINK_ABOVE {
                buffer = BytesMut::new();
            }
        }
    }

    pub async fn close(&self) -> Result<()> {
        let mut write_half = self.write_half.lock().await;
        write_half
            .shutdown()
            .await
            .map_err(|e| crate::Error::Error(format!("Failed to shutdown write half: {}", e)))?;
        Ok(())
    }
}

/// First read reservation of a connection's buffer, in bytes (sipbridge patch).
const INITIAL_READ: usize = 1024;
/// An empty buffer with more capacity than this is given back (sipbridge patch).
const SHRINK_ABOVE: usize = 8 * 1024;

/// Makes room for the next read: 1 KiB for an empty buffer, then as much again as
/// is buffered (a partial message doubles), never past the message cap.
fn reserve_for_read(buffer: &mut BytesMut) {
    let spare = buffer.capacity() - buffer.len();
    if spare >= INITIAL_READ / 2 {
        return;
    }
    let room_to_cap = (MAX_SIP_MESSAGE_SIZE + 1).saturating_sub(buffer.len());
    buffer.reserve(buffer.len().max(INITIAL_READ).min(room_to_cap).max(1));
}

/// sipbridge patch: how a stream connection is served.
#[derive(Clone)]
pub(crate) struct ServeOptions {
    /// Close after this long without a byte (`ZERO`: never).
    pub idle_timeout: Duration,
    /// Close when no complete message arrived this long after serving began, or
    /// a started message stays incomplete this long (`ZERO`: no such deadline).
    pub first_message_timeout: Duration,
    /// Asked (`allow(source)`) before each message or keepalive is processed.
    pub whitelist: Option<super::transport_layer::TransportWhitelistRef>,
    /// The peer's address, for the whitelist.
    pub source: Option<core::net::IpAddr>,
}

impl ServeOptions {
    /// Only an idle timeout, no per-message check (upstream behaviour).
    pub(crate) fn plain(idle_timeout: Duration) -> Self {
        Self {
            idle_timeout,
            first_message_timeout: Duration::ZERO,
            whitelist: None,
            source: None,
        }
    }

    /// Whether the next message or keepalive from this peer may be processed.
    async fn allows_one_more(&self, remote: &SipAddr) -> bool {
        match (&self.whitelist, self.source) {
            (Some(w), Some(ip)) => {
                let ok = w.allow(ip).await;
                if !ok {
                    debug!(src = %remote, "stream message dropped by the whitelist");
                }
                ok
            }
            _ => true,
        }
    }
}

/// The deadlines of one stream connection (sans-IO: the caller passes the time).
#[derive(Debug, Clone, Copy)]
struct StreamClock {
    started: Instant,
    last_bytes: Instant,
    message_seen: bool,
    partial_since: Option<Instant>,
}

impl StreamClock {
    fn new(now: Instant) -> Self {
        Self {
            started: now,
            last_bytes: now,
            message_seen: false,
            partial_since: None,
        }
    }

    fn bytes_arrived(&mut self, now: Instant) {
        self.last_bytes = now;
    }

    fn message_completed(&mut self) {
        self.message_seen = true;
    }

    /// After a read has been decoded: `decoded` frames came out of it, and
    /// `partial` bytes of a next message remain buffered.
    fn buffer_state(&mut self, decoded: bool, partial: bool) {
        self.partial_since = match (partial, decoded) {
            (false, _) => None,
            (true, true) => Some(self.last_bytes),
            (true, false) => self.partial_since.or(Some(self.last_bytes)),
        };
    }

    /// The next deadline and what passing it means, if any.
    fn deadline(&self, o: &ServeOptions) -> Option<(Instant, StreamRefusal)> {
        let first = o.first_message_timeout;
        if !first.is_zero() {
            if !self.message_seen {
                return Some((self.started + first, StreamRefusal::FirstMessageTimeout));
            }
            if let Some(since) = self.partial_since {
                return Some((since + first, StreamRefusal::IncompleteMessageTimeout));
            }
        }
        if o.idle_timeout.is_zero() {
            None
        } else {
            Some((
                self.last_bytes + o.idle_timeout,
                StreamRefusal::IdleTimeout,
            ))
        }
    }
}

#[async_trait::async_trait]
pub trait StreamConnection: Send + Sync + 'static {
    fn get_addr(&self) -> &SipAddr;
    fn get_remote_addr(&self) -> &SipAddr;
    async fn send_message(&self, msg: SipMessage) -> Result<()>;
    async fn send_raw(&self, data: &[u8]) -> Result<()>;
    /// Serve the connection until the peer closes, an error occurs, or no
    /// bytes arrive for `idle_timeout` (`Duration::ZERO` = wait forever).
    async fn serve_loop(&self, sender: TransportSender, idle_timeout: Duration) -> Result<()>;
    async fn close(&self) -> Result<()>;
}

pub async fn send_to_stream<W>(write_half: &Mutex<W>, msg: SipMessage) -> Result<()>
where
    W: AsyncWrite + Unpin + Send,
{
    send_raw_to_stream(write_half, &msg.to_bytes()).await
}

pub async fn send_raw_to_stream<W>(write_half: &Mutex<W>, data: &[u8]) -> Result<()>
where
    W: AsyncWrite + Unpin + Send,
{
    let mut lock = write_half.lock().await;
    lock.write_all(data).await?;
    lock.flush().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::connection::{KEEPALIVE_REQUEST, KEEPALIVE_RESPONSE};
    use bytes::BytesMut;
    use tokio_util::codec::Decoder;

    fn make_codec() -> SipCodec {
        SipCodec::new()
    }

    // Minimal valid INVITE with the given body.
    fn invite_bytes(body: &str) -> Vec<u8> {
        let msg = format!(
            concat!(
                "INVITE sip:bob@biloxi.com SIP/2.0\r\n",
                "Via: SIP/2.0/UDP pc33.atlanta.com;branch=z9hG4bK776\r\n",
                "To: Bob <sip:bob@biloxi.com>\r\n",
                "From: Alice <sip:alice@atlanta.com>;tag=123\r\n",
                "Call-ID: abc@test\r\n",
                "CSeq: 1 INVITE\r\n",
                "Content-Type: application/sdp\r\n",
                "Content-Length: {}\r\n",
                "\r\n",
                "{}"
            ),
            body.len(),
            body
        );
        msg.into_bytes()
    }

    fn register_bytes() -> Vec<u8> {
        concat!(
            "REGISTER sip:registrar.example.com SIP/2.0\r\n",
            "Via: SIP/2.0/UDP bob:5060;branch=z9hG4bKnashds8\r\n",
            "To: Bob <sip:bob@example.com>\r\n",
            "From: Bob <sip:bob@example.com>;tag=456\r\n",
            "Call-ID: 843817637@998sdasdh09\r\n",
            "CSeq: 1 REGISTER\r\n",
            "Content-Length: 0\r\n",
            "\r\n",
        )
        .as_bytes()
        .to_vec()
    }

    // ── binary body ──────────────────────────────────────────────────────────

    #[test]
    fn encode_preserves_binary_body() {
        use crate::sip::{Request, SipMessage};
        // A SIP body is opaque octets (RFC 3261 §7.4); the stream codec must
        // emit it byte-for-byte, including bytes that are invalid as UTF-8.
        let mut req: Request = invite_bytes("").as_slice().try_into().unwrap();
        let binary_body: Vec<u8> = vec![0x00, 0x80, 0xFF, 0xC0, 0xC1, 0xFE, 0x01, 0x7F];
        req.body = binary_body.clone();

        let mut codec = make_codec();
        let mut dst = BytesMut::new();
        codec
            .encode(SipMessage::Request(req), &mut dst)
            .expect("encode");

        assert!(
            dst.ends_with(&binary_body),
            "stream codec corrupted binary body"
        );
    }

    // ── basic decoding ─────────────────────────────────────────────────────────

    #[test]
    fn decode_complete_message_no_body() {
        let mut codec = make_codec();
        let mut buf = BytesMut::from(register_bytes().as_slice());
        let result = codec.decode(&mut buf).unwrap();
        assert!(matches!(result, Some(SipCodecType::Message(_))));
        assert_eq!(buf.len(), 0, "buffer should be fully consumed");
    }

    #[test]
    fn decode_complete_message_with_body() {
        let body = "v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\n";
        let mut codec = make_codec();
        let mut buf = BytesMut::from(invite_bytes(body).as_slice());
        let result = codec.decode(&mut buf).unwrap();
        assert!(matches!(result, Some(SipCodecType::Message(_))));
        assert_eq!(buf.len(), 0);
    }

    // ── partial packet: header incomplete ──────────────────────────────────

    #[test]
    fn decode_returns_none_when_headers_incomplete() {
        let mut codec = make_codec();
        let full = register_bytes();
        // Feed only the first half of the message.
        let half = &full[..full.len() / 2];
        let mut buf = BytesMut::from(half);
        let result = codec.decode(&mut buf).unwrap();
        assert!(result.is_none(), "should wait for more data");
        // Buffer must be untouched.
        assert_eq!(buf.as_ref(), half);
    }

    // ── partial packet: body incomplete ────────────────────────────────────

    #[test]
    fn decode_returns_none_when_body_incomplete() {
        let body = "v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\n";
        let mut codec = make_codec();
        let full = invite_bytes(body);
        // Feed headers + CRLFCRLF but only half the body.
        let headers_end = memmem::find(&full, b"\r\n\r\n").unwrap() + 4;
        let partial_body = body.len() / 2;
        let partial = &full[..headers_end + partial_body];
        let mut buf = BytesMut::from(partial);
        let result = codec.decode(&mut buf).unwrap();
        assert!(result.is_none());
        assert_eq!(buf.len(), partial.len());
    }

    // ── coalesced: two messages in one read ────────────────────────────────

    #[test]
    fn decode_two_back_to_back_messages() {
        let mut codec = make_codec();
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&register_bytes());
        buf.extend_from_slice(&register_bytes());

        let first = codec.decode(&mut buf).unwrap();
        assert!(matches!(first, Some(SipCodecType::Message(_))));

        let second = codec.decode(&mut buf).unwrap();
        assert!(matches!(second, Some(SipCodecType::Message(_))));

        assert_eq!(buf.len(), 0);
    }

    // ── short-form Content-Length ('l') ───────────────────────────────────

    #[test]
    fn decode_short_content_length_header() {
        let body = "hello";
        let raw = format!(
            concat!(
                "INVITE sip:bob@example.com SIP/2.0\r\n",
                "Via: SIP/2.0/UDP pc;branch=z9hG4bK1\r\n",
                "To: <sip:bob@example.com>\r\n",
                "From: <sip:alice@example.com>;tag=1\r\n",
                "Call-ID: x@y\r\n",
                "CSeq: 1 INVITE\r\n",
                "l: {}\r\n",
                "\r\n",
                "{}"
            ),
            body.len(),
            body
        );
        let mut codec = make_codec();
        let mut buf = BytesMut::from(raw.as_bytes());
        let result = codec.decode(&mut buf).unwrap();
        assert!(matches!(result, Some(SipCodecType::Message(_))));
    }

    // ── keepalive frame ───────────────────────────────────────────────────────

    #[test]
    fn decode_keepalive_request() {
        let mut codec = make_codec();
        let mut buf = BytesMut::from(KEEPALIVE_REQUEST.as_ref());
        let result = codec.decode(&mut buf).unwrap();
        assert!(matches!(result, Some(SipCodecType::KeepaliveRequest)));
        assert_eq!(buf.len(), 0);
    }

    #[test]
    fn decode_keepalive_response() {
        let mut codec = make_codec();
        let mut buf = BytesMut::from(KEEPALIVE_RESPONSE.as_ref());
        let result = codec.decode(&mut buf).unwrap();
        assert!(matches!(result, Some(SipCodecType::KeepaliveResponse)));
        assert_eq!(buf.len(), 0);
    }

    // ── sipbridge patch: announced size, buffer growth, deadlines ──────────

    #[test]
    fn decode_rejects_a_huge_content_length_without_waiting_or_overflowing() {
        let mut codec = make_codec();
        for cl in ["70000", "18446744073709551615"] {
            let raw = format!(
                "MESSAGE sip:a@b SIP/2.0\r\nVia: SIP/2.0/TCP h;branch=z9hG4bK1\r\nContent-Length: {cl}\r\n\r\n"
            );
            let mut buf = BytesMut::from(raw.as_bytes());
            assert!(codec.decode(&mut buf).is_err(), "Content-Length {cl}");
        }
    }

    #[test]
    fn the_read_buffer_starts_at_1_kib_and_grows_with_a_partial_message_up_to_the_cap() {
        let mut buf = BytesMut::new();
        reserve_for_read(&mut buf);
        assert!((INITIAL_READ..2 * INITIAL_READ).contains(&buf.capacity()), "{}", buf.capacity());
        let mut steps = 0;
        while buf.len() <= MAX_SIP_MESSAGE_SIZE {
            reserve_for_read(&mut buf);
            let spare = buf.capacity() - buf.len();
            assert!(spare > 0);
            buf.extend_from_slice(&vec![b'x'; spare]);
            steps += 1;
            assert!(steps < 200);
        }
        assert!(buf.capacity() <= 2 * (MAX_SIP_MESSAGE_SIZE + 1), "{}", buf.capacity());
    }

    #[test]
    fn deadlines_first_message_then_incomplete_message_then_idle() {
        let o = ServeOptions {
            idle_timeout: Duration::from_secs(60),
            first_message_timeout: Duration::from_secs(10),
            whitelist: None,
            source: None,
        };
        let t0 = Instant::now();
        let mut c = StreamClock::new(t0);
        assert_eq!(c.deadline(&o), Some((t0 + Duration::from_secs(10), StreamRefusal::FirstMessageTimeout)));
        // A keepalive (bytes, no message) does not move the first-message deadline.
        c.bytes_arrived(t0 + Duration::from_secs(3));
        c.buffer_state(true, false);
        assert_eq!(c.deadline(&o).map(|d| d.1), Some(StreamRefusal::FirstMessageTimeout));
        // First message complete, nothing buffered: idle deadline from the last bytes.
        let t1 = t0 + Duration::from_secs(5);
        c.bytes_arrived(t1);
        c.message_completed();
        c.buffer_state(true, false);
        assert_eq!(c.deadline(&o), Some((t1 + Duration::from_secs(60), StreamRefusal::IdleTimeout)));
        // Half a message arrives and trickles on: its deadline stays at its start.
        let t2 = t1 + Duration::from_secs(30);
        c.bytes_arrived(t2);
        c.buffer_state(false, true);
        c.bytes_arrived(t2 + Duration::from_secs(4));
        c.buffer_state(false, true);
        assert_eq!(c.deadline(&o), Some((t2 + Duration::from_secs(10), StreamRefusal::IncompleteMessageTimeout)));
        // Plain options (upstream): only the idle timeout.
        assert_eq!(c.deadline(&ServeOptions::plain(Duration::ZERO)), None);
    }

    // ── message too large ─────────────────────────────────────────────────

    #[test]
    fn decode_rejects_oversized_buffer() {
        let mut codec = make_codec();
        let mut buf = BytesMut::from(vec![b'X'; MAX_SIP_MESSAGE_SIZE + 1].as_slice());
        let result = codec.decode(&mut buf);
        assert!(result.is_err());
    }
}
