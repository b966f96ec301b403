//! sipbridge: an edge SIP gateway appliance.
//!
//! The binary (`src/main.rs`) is a thin shell around this library so that every
//! module is reachable from integration tests and benchmarks.
//!
//! The module map, with its one-way arrows and the walk of one INVITE and one
//! RTP packet through the files, is `docs/architecture.md` (kept acyclic by
//! `tests/module_graph.rs`); each module's own `//!` says what it owns.
//!
//! ```text
//! daemon → api → webrtc ─┐
//!        → sip ──────────┼→ call → agent, room → media → sdp
//!                        │       → record, webhook → store → config → credentials
//! ```

pub mod agent;
pub mod api;
pub mod call;
pub mod config;
pub mod credentials;
pub mod daemon;
#[doc(hidden)]
pub mod fuzzing;
pub mod media;
pub mod record;
pub mod room;
pub mod sdp;
pub mod security;
pub mod sip;
pub mod store;
pub mod texml;
pub mod tts;
pub mod webhook;
pub mod webrtc;
