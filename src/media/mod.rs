//! Media: a call's audio path.
//!
//! The sans-IO cores are plain functions and structs fed bytes, packets and
//! timestamps by the caller, with no sockets, no tokio and no clock: `g711`
//! (PCMU/PCMA codec and transcoding), `rtp` (zero-copy packet views, in-place
//! rewrite, header builder), `stats` (RFC 3550 receiver statistics), `quality` (Telnyx
//! `call_quality_stats`), `mos` (E-model MOS estimate), `dtmf` (RFC 4733 payload,
//! detector, generator) and `latch` (which source a leg takes media from and answers
//! to: learning window, strict source, RTCP), `rtcp` (reports), `transcode` (voice
//! agent stream encodings, the 8000 ↔ 16000 Hz converter), `suppress` (RNNoise
//! noise suppression) and `playout` (paced
//! playback queue with marks). The tokio shell
//! around them — `ports` (RTP port pool), `leg` (sockets, pacing), `pcm` (a leg
//! to a PCM endpoint: voice agent, room) and `bridge` (the relay between two legs)
//! — only moves bytes and drives timers.

pub mod amd;
pub mod bridge;
pub mod clip;
pub mod codec;
pub mod dtmf;
pub mod engine;
pub mod g711;
pub mod latch;
pub mod leg;
pub mod mos;
pub mod pacer;
pub mod pcm;
pub mod playout;
pub mod ports;
pub mod quality;
pub mod rtcp;
pub mod rtp;
pub mod session;
pub mod stats;
pub mod suppress;
pub mod transcode;
