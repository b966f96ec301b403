//! Voice agents: the client side of media streams — Telnyx's (PROTOCOLS.md §3),
//! Twilio's, Exotel's, Plivo's over WebSocket, and Asterisk AudioSocket over TCP.
//! The framing is sans-IO: `protocol` (Telnyx, and the types every protocol
//! shares), `twilio` (Twilio and Exotel), `plivo`, `audiosocket`, and `framing`,
//! which puts them behind one interface. `link` is the connection (WebSocket or
//! TCP); `stream` is one call's stream: connected by a tokio task, then driven
//! by one of the agent I/O threads (`hub`), off the media workers and the
//! runtime. The audio it
//! needs, `media::playout` (the paced playback queue with marks) and
//! `media::transcode` (stream encoding ↔ call audio, the 8/16 kHz converter), is
//! media code that rooms and call legs use too.

pub mod audiosocket;
pub mod framing;
pub mod hub;
pub mod link;
pub mod plivo;
pub mod protocol;
pub mod stream;
pub mod twilio;
