//! Voice agents: the WebSocket client of Telnyx's media-stream protocol
//! (PROTOCOLS.md §3). `protocol` (message shapes) is sans-IO; `stream` is the
//! tokio shell that connects to the agent and moves messages. The paced playback
//! queue with marks (`media::playout`) and the stream encodings ↔ call audio
//! (`media::transcode`) are media work and live in `media`.

pub mod protocol;
pub mod stream;

// The playout queue and the stream codecs moved to `media` (they are media
// work, and media must not import agent); the old paths stay for callers not
// yet updated.
pub use crate::media::{playout, transcode};
