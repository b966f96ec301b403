//! Asterisk AudioSocket framing, sans-IO
//! (<https://docs.asterisk.org/Configuration/Channel-Drivers/AudioSocket/>,
//! <https://github.com/CyCoreSystems/audiosocket>).
//!
//! A TCP byte stream of messages, each a 3-byte header — kind (u8), payload
//! length (u16, big-endian) — then the payload:
//!
//! | kind | payload |
//! |---|---|
//! | `0x00` | hangup (no payload; closing the socket is also enough) |
//! | `0x01` | the stream's UUID, 16 bytes, sent first |
//! | `0x03` | one DTMF digit, ASCII |
//! | `0x10` | signed linear 16-bit little-endian PCM, 8 kHz mono (20 ms = 320 bytes) |
//! | `0xff` | error; payload an optional application-specific code |
//!
//! The box plays Asterisk's part: it connects to the agent, sends `0x01` with the
//! stream's `stream_id` (the one in `streaming.*` webhooks), then `0x10` frames of
//! the caller's audio every 20 ms and `0x03` for each key press, and `0x00` when
//! the stream ends. The agent's `0x10` frames (any length up to the header's
//! 65 535 bytes, an even number) are played into the call; its `0x00` ends the
//! stream as a close by the agent; `0xff` is logged. There are no marks, no
//! clear and no outbound track in AudioSocket. The newer kinds `0x11`–`0x18`
//! (slin at 12–192 kHz) are refused: the box's AudioSocket streams are 8 kHz.

use super::protocol::{Inbound, InboundError, error_code, malformed};

/// Message kinds.
pub mod kind {
    /// Terminate the connection.
    pub const HANGUP: u8 = 0x00;
    /// The stream's UUID (16 bytes).
    pub const UUID: u8 = 0x01;
    /// One DTMF digit (1 ASCII byte).
    pub const DTMF: u8 = 0x03;
    /// slin: 16-bit little-endian PCM, 8 kHz mono.
    pub const SLIN: u8 = 0x10;
    /// An error; optional code.
    pub const ERROR: u8 = 0xff;
}

/// Header bytes before each payload.
pub const HEADER: usize = 3;
/// The largest payload the length field can announce.
pub const MAX_PAYLOAD: usize = u16::MAX as usize;

/// One message: header + `payload` (at most [`MAX_PAYLOAD`] bytes; longer is cut).
pub fn message(kind: u8, payload: &[u8]) -> Vec<u8> {
    let payload = &payload[..payload.len().min(MAX_PAYLOAD)];
    let mut out = Vec::with_capacity(HEADER + payload.len());
    out.push(kind);
    out.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// The `0x01` message for `uuid`.
pub fn uuid(uuid: &uuid::Uuid) -> Vec<u8> {
    message(kind::UUID, uuid.as_bytes())
}

/// A `0x10` message carrying `slin` (16-bit little-endian PCM, 8 kHz).
pub fn audio(slin: &[u8]) -> Vec<u8> {
    message(kind::SLIN, slin)
}

/// The `0x03` message for `digit`.
pub fn dtmf(digit: char) -> Vec<u8> {
    let mut b = [0u8; 4];
    message(kind::DTMF, digit.encode_utf8(&mut b).as_bytes())
}

/// The `0x00` hangup message.
pub fn hangup() -> Vec<u8> {
    message(kind::HANGUP, &[])
}

/// Splits the agent's byte stream into messages. Bytes are appended to
/// [`Decoder::buffer`] (by the socket's reads); [`Decoder::next_message`] takes whole
/// messages off its front. The buffer never needs more than one message
/// ([`HEADER`] + [`MAX_PAYLOAD`] bytes) before a message is complete.
#[derive(Debug, Default)]
pub struct Decoder {
    buf: Vec<u8>,
}

impl Decoder {
    /// An empty decoder with room for a few 20 ms frames.
    pub fn new() -> Self {
        Self { buf: Vec::with_capacity(4096) }
    }

    /// Where reads append bytes; reserved so one read can finish the pending
    /// message (bounded by the largest message).
    pub fn buffer(&mut self) -> &mut Vec<u8> {
        let want = match self.buf.get(1..HEADER) {
            Some(len) => HEADER + usize::from(u16::from_be_bytes([len[0], len[1]])),
            None => HEADER,
        };
        let spare = want.saturating_sub(self.buf.len()).max(1024);
        self.buf.reserve(spare);
        &mut self.buf
    }

    /// The next whole message, or `None` until more bytes arrive.
    ///
    /// `0x10` → [`Inbound::Media`] (still little-endian); `0x00` →
    /// [`Inbound::Hangup`]; `0x01`/`0x03` from the agent → [`Inbound::Ignored`].
    /// Errors (the message is consumed, the stream goes on): an odd-length slin
    /// payload or another kind → `100003`/`100002`; the agent's `0xff` error.
    pub fn next_message(&mut self) -> Option<Result<Inbound, InboundError>> {
        if self.buf.len() < HEADER {
            return None;
        }
        let len = usize::from(u16::from_be_bytes([self.buf[1], self.buf[2]]));
        if self.buf.len() < HEADER + len {
            return None;
        }
        let kind = self.buf[0];
        let payload = &self.buf[HEADER..HEADER + len];
        let result = match kind {
            kind::SLIN if len % 2 == 1 => Err(malformed(format!("slin payload of {len} bytes (odd; 16-bit samples)"))),
            kind::SLIN => Ok(Inbound::Media(payload.to_vec())),
            kind::HANGUP => Ok(Inbound::Hangup),
            kind::UUID | kind::DTMF => Ok(Inbound::Ignored),
            kind::ERROR => Err(InboundError {
                code: error_code::MALFORMED_FRAME,
                title: "Agent Error",
                detail: format!("the agent sent an AudioSocket error (code bytes {payload:02x?})"),
            }),
            0x11..=0x18 => Err(malformed(format!("slin kind {kind:#04x} is not 8 kHz; this stream is 8 kHz (0x10)"))),
            other => Err(InboundError {
                code: error_code::UNKNOWN_EVENT,
                title: "Unknown Event",
                detail: format!("unknown AudioSocket kind {other:#04x}"),
            }),
        };
        self.buf.drain(..HEADER + len);
        Some(result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_have_the_three_byte_header() {
        let id = uuid::Uuid::from_bytes([7; 16]);
        let u = uuid(&id);
        assert_eq!(&u[..3], &[0x01, 0x00, 0x10]);
        assert_eq!(&u[3..], &[7; 16]);
        let a = audio(&[0xaa; 320]);
        assert_eq!((&a[..3], a.len()), (&[0x10, 0x01, 0x40][..], 323));
        assert_eq!(dtmf('5'), vec![0x03, 0x00, 0x01, b'5']);
        assert_eq!(hangup(), vec![0x00, 0x00, 0x00]);
        assert_eq!(message(kind::SLIN, &vec![0; 70_000]).len(), HEADER + MAX_PAYLOAD, "cut to the length field");
    }

    #[test]
    fn the_decoder_takes_whole_messages_however_the_bytes_arrive() {
        let mut stream = audio(&[1, 0, 2, 0]);
        stream.extend(dtmf('1'));
        stream.extend(message(kind::SLIN, &[9; 640]));
        stream.extend(hangup());
        let mut d = Decoder::new();
        let mut got = Vec::new();
        // One byte at a time: partial headers and payloads wait for the rest.
        for b in stream {
            d.buffer().push(b);
            while let Some(m) = d.next_message() {
                got.push(m.unwrap());
            }
        }
        assert_eq!(
            got,
            vec![Inbound::Media(vec![1, 0, 2, 0]), Inbound::Ignored, Inbound::Media(vec![9; 640]), Inbound::Hangup]
        );
        assert!(d.next_message().is_none());
        assert!(d.buf.is_empty());
    }

    #[test]
    fn malformed_messages_are_errors_and_the_stream_goes_on() {
        let mut d = Decoder::new();
        d.buffer().extend(message(kind::SLIN, &[1, 2, 3]));
        d.buffer().extend(message(0x42, &[1]));
        d.buffer().extend(message(kind::ERROR, &[0x04]));
        d.buffer().extend(message(0x12, &[0; 640]));
        d.buffer().extend(audio(&[5, 0]));
        let e = d.next_message().unwrap().unwrap_err();
        assert!(e.detail.contains("odd"), "{}", e.detail);
        assert_eq!(d.next_message().unwrap().unwrap_err().code, error_code::UNKNOWN_EVENT);
        assert!(d.next_message().unwrap().unwrap_err().detail.contains("[04]"));
        assert!(d.next_message().unwrap().unwrap_err().detail.contains("0x12"));
        assert_eq!(d.next_message().unwrap().unwrap(), Inbound::Media(vec![5, 0]));
        assert!(d.next_message().is_none());
    }

    #[test]
    fn the_buffer_reserves_for_the_announced_length_only() {
        let mut d = Decoder::new();
        d.buffer().extend([kind::SLIN, 0xff, 0xff]);
        assert!(d.next_message().is_none(), "65 535 bytes announced, none arrived");
        assert!(d.buffer().capacity() >= HEADER + MAX_PAYLOAD);
        assert!(d.buffer().capacity() < 2 * (HEADER + MAX_PAYLOAD), "bounded by one message");
    }
}
