//! Voice agents: the WebSocket client of Telnyx's media-stream protocol
//! (PROTOCOLS.md §3). `protocol` (message shapes), `playout` (the bidirectional
//! agent's paced playback queue with marks) and `transcode` (stream encoding ↔ call
//! audio) are sans-IO; `stream` is the tokio shell that connects to the agent and
//! moves messages.

pub mod playout;
pub mod protocol;
pub mod stream;
pub mod transcode;
