//! Recording of one call: the media task hands each packet's G.711 payload to a
//! [`RecordingTap`] (a bounded, non-blocking channel: the media path never waits
//! for the disk), a dedicated thread decodes it and feeds `record::Recorder`,
//! which aligns both channels and writes the crash-safe WAV. Left = audio from the
//! caller's leg, right = audio sent to the caller (ARCHITECTURE.md, issue 7).
//!
//! If the channel is full (the disk stalls) packets are dropped and counted; the
//! timeline turns them into silence, so the file stays aligned. Disk errors stop
//! the recording, never the call.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel};
use std::time::{Duration, Instant, SystemTime};

use crate::config::Recording;
use crate::media::g711::G711;
use crate::record::path::PathIds;
use crate::record::{DEFAULT_TEMPLATE, Recorder, SavedRecording, WriterOptions, recording_path};

/// Largest payload carried (60 ms of G.711).
const SLOT: usize = 480;

// Fixed-size on purpose: a payload travels without a heap allocation per packet.
#[allow(clippy::large_enum_variant)]
enum TapMsg {
    Audio { right: bool, codec: G711, len: u16, payload: [u8; SLOT], at: Instant },
    Stop(Instant),
}

/// The media task's handle: cheap to clone, never blocks.
#[derive(Clone)]
pub struct RecordingTap {
    tx: SyncSender<TapMsg>,
    dropped: Arc<AtomicU64>,
}

impl crate::media::leg::Tap for RecordingTap {
    fn heard(&self, codec: G711, payload: &[u8]) {
        self.left(codec, payload);
    }

    fn said(&self, codec: G711, payload: &[u8]) {
        self.right(codec, payload);
    }
}

impl RecordingTap {
    fn send(&self, right: bool, codec: G711, payload: &[u8]) {
        if payload.len() > SLOT {
            return;
        }
        let mut buf = [0u8; SLOT];
        buf[..payload.len()].copy_from_slice(payload);
        let msg = TapMsg::Audio { right, codec, len: payload.len() as u16, payload: buf, at: Instant::now() };
        if let Err(TrySendError::Full(_)) = self.tx.try_send(msg) {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Audio received from the caller's leg (G.711 bytes in `codec`).
    pub fn left(&self, codec: G711, payload: &[u8]) {
        self.send(false, codec, payload);
    }

    /// Audio sent to the caller.
    pub fn right(&self, codec: G711, payload: &[u8]) {
        self.send(true, codec, payload);
    }
}

/// A recording in progress: stop it to get the saved file.
pub struct CallRecording {
    tap: RecordingTap,
    thread: Option<std::thread::JoinHandle<Option<SavedRecording>>>,
}

impl CallRecording {
    /// Starts recording now into `[recording]`'s directory, file named after the
    /// call session (span `span` of the call, from 1).
    pub fn start(cfg: &Recording, call_session_id: &str, call_control_id: &str, span: u32) -> Result<Self, String> {
        let started_at = SystemTime::now();
        let recording_id = uuid::Uuid::new_v4().to_string();
        let ids = PathIds { call_session_id, call_control_id, recording_id: &recording_id };
        let path = recording_path(DEFAULT_TEMPLATE, &cfg.dir, ids, started_at, span).map_err(|e| e.to_string())?;
        let start = Instant::now();
        let recorder = Recorder::start(&path, start, 8000, cfg.channels, WriterOptions::default())
            .map_err(|e| format!("{} ({})", e, e.reason()))?;
        let (tx, rx) = sync_channel(512);
        let dropped = Arc::new(AtomicU64::new(0));
        let channels = cfg.channels;
        let thread = std::thread::Builder::new()
            .name("sipbridge-rec".into())
            .spawn(move || run(recorder, rx, path, recording_id, started_at, channels))
            .map_err(|e| e.to_string())?;
        Ok(Self { tap: RecordingTap { tx, dropped }, thread: Some(thread) })
    }

    /// The tap for the media task.
    pub fn tap(&self) -> Arc<dyn crate::media::leg::Tap> {
        Arc::new(self.tap.clone())
    }

    /// Stops now and waits for the file to be finished (fsync, rename, SHA-256);
    /// runs on a blocking thread, so call it from `spawn_blocking` or a sync context.
    pub fn stop_blocking(mut self) -> Option<SavedRecording> {
        let _ = self.tap.tx.send(TapMsg::Stop(Instant::now()));
        let dropped = self.tap.dropped.load(Ordering::Relaxed);
        if dropped > 0 {
            tracing::warn!(dropped, "recording fell behind: packets dropped (recorded as silence)");
        }
        self.thread.take().and_then(|t| t.join().ok()).flatten()
    }
}

fn run(
    mut rec: Recorder,
    rx: Receiver<TapMsg>,
    path: PathBuf,
    recording_id: String,
    started_at: SystemTime,
    channels: crate::config::Channels,
) -> Option<SavedRecording> {
    let mut pcm = [0i16; SLOT];
    let end = loop {
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(TapMsg::Audio { right, codec, len, payload, at }) => {
                let n = codec.decode(&payload[..usize::from(len)], &mut pcm);
                if right {
                    rec.push_right(&pcm[..n], at);
                } else {
                    rec.push_left(&pcm[..n], at);
                }
            }
            Ok(TapMsg::Stop(end)) => break end,
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break Instant::now(),
        }
        if let Some(e) = rec.tick(Instant::now()) {
            tracing::warn!(file = %path.display(), "recording stopped: {e} (the call goes on)");
        }
    };
    let stop_reason = rec.error().map(|e| e.reason().to_string());
    match rec.finish(end) {
        Ok(file) => {
            tracing::info!(file = %file.path.display(), seconds = file.duration().as_secs_f64(), "recording saved");
            Some(SavedRecording { recording_id, channels, started_at, ended_at: SystemTime::now(), file, stop_reason })
        }
        Err(e) => {
            tracing::warn!(file = %path.display(), "recording could not be finished: {e}");
            None
        }
    }
}
