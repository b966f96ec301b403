//! Voice agents: the WebSocket client of Telnyx's media-stream protocol
//! (PROTOCOLS.md §3). `protocol` (message shapes) is sans-IO; `stream` is the
//! tokio shell that connects to the agent and moves messages. The audio it needs,
//! `media::playout` (the paced playback queue with marks) and `media::transcode`
//! (stream encoding ↔ call audio, the 8/16 kHz converter), is media code that
//! rooms and call legs use too.

pub mod protocol;
pub mod stream;
