//! Answering-machine detection on a call (Telnyx `answering_machine_detection`
//! on `POST /v2/calls` and `transfer`): the thin adapter between the call's media
//! and the sans-IO detector (`media::amd`).
//!
//! From the answer, the call's tap hands each packet the called party sends
//! (`Tap::heard`: G.711 bytes, stamped on arrival) over a bounded channel
//! (`try_send`: a full channel drops the packet, the media worker never waits) to
//! one tokio task per detection, which decodes it, feeds the detector, ticks it
//! every [`TICK`] so its time limits fire on a silent line, and emits
//! `call.machine.detection.ended` / `call.machine.greeting.ended` through the
//! event bus (webhooks and `/v2/events`). When the detector is done (or the call
//! ends) the task stops and the tap goes inert: one atomic load per packet for
//! the rest of the call. The call's media, agent stream and recording are never
//! held back by detection (as on Telnyx, the stream may start before the result).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::CallInfo;
use super::control::Lookup;
use super::services::CallServices;
pub use crate::media::amd::AmdRequest;
use crate::media::amd::{AmdEvent, Detector};
use crate::media::g711::G711;
use crate::media::leg::Tap;

/// How often the detector is told time passed (for a line that sends nothing).
pub const TICK: Duration = Duration::from_millis(100);

/// Largest payload carried (60 ms of G.711); longer packets are cut.
const SLOT: usize = 480;

/// Packets queued between the media worker and the detector (≈ 1.3 s at 20 ms).
const QUEUE: usize = 64;

/// One packet of the called party's audio.
struct Chunk {
    codec: G711,
    len: u16,
    data: [u8; SLOT],
    at: Instant,
}

/// The media task's side: copies what the called party says while detection runs.
struct AmdTap {
    active: AtomicBool,
    tx: mpsc::Sender<Chunk>,
}

impl Tap for AmdTap {
    fn heard(&self, codec: G711, payload: &[u8]) {
        if !self.active.load(Ordering::Relaxed) {
            return;
        }
        let len = payload.len().min(SLOT);
        let mut c = Chunk { codec, len: len as u16, data: [0; SLOT], at: Instant::now() };
        c.data[..len].copy_from_slice(&payload[..len]);
        // Full (the task is behind) or closed (it ended): the packet is dropped.
        let _ = self.tx.try_send(c);
    }

    fn said(&self, _codec: G711, _payload: &[u8]) {}
}

/// A detection in progress on one call; dropping it (the call ends) stops it
/// without an event.
pub struct AmdRun {
    tap: Arc<AmdTap>,
    task: tokio::task::AbortHandle,
}

impl Drop for AmdRun {
    fn drop(&mut self) {
        self.tap.active.store(false, Ordering::Relaxed);
        self.task.abort();
    }
}

impl AmdRun {
    /// Starts detecting now (the call was just answered) on the call `info`.
    /// Must be called within the tokio runtime.
    pub fn start(services: &CallServices, info: &CallInfo, req: AmdRequest) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        let tap = Arc::new(AmdTap { active: AtomicBool::new(true), tx });
        let detector = Detector::new(req.mode, req.config, 8000);
        tracing::info!(
            call_control_id = %info.ids.call_control_id, mode = req.mode.as_str(),
            "answering machine detection started"
        );
        let feed = Feed {
            rx,
            detector,
            start: Instant::now(),
            services: services.clone(),
            info: info.clone(),
            tap: tap.clone(),
        };
        let task = tokio::spawn(feed.run()).abort_handle();
        Self { tap, task }
    }

    /// The tap to add to the call's media.
    pub fn tap(&self) -> Arc<dyn Tap> {
        self.tap.clone()
    }
}

/// The call's tap with detection's added (when it runs).
pub fn with_amd(tap: Option<Arc<dyn Tap>>, amd: Option<&AmdRun>) -> Option<Arc<dyn Tap>> {
    match (tap, amd) {
        (t, None) => t,
        (None, Some(a)) => Some(a.tap()),
        (Some(t), Some(a)) => Some(Arc::new(super::listen::Taps(vec![t, a.tap()]))),
    }
}

/// The detection task's state.
struct Feed {
    rx: mpsc::Receiver<Chunk>,
    detector: Detector,
    start: Instant,
    services: CallServices,
    info: CallInfo,
    tap: Arc<AmdTap>,
}

impl Feed {
    async fn run(mut self) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut pcm = [0i16; SLOT];
        // Bounded: the detector is done after its longest time limit (at most
        // total + greeting analysis, each ≤ 60 s by the API's checks), and the
        // tick advances it at least every TICK.
        while !self.detector.is_done() {
            tokio::select! {
                biased;
                c = self.rx.recv() => match c {
                    Some(c) => {
                        let n = c.codec.decode(&c.data[..usize::from(c.len)], &mut pcm);
                        self.detector.push(c.at.saturating_duration_since(self.start), &pcm[..n]);
                    }
                    None => break,
                },
                _ = tick.tick() => self.detector.advance(self.start.elapsed()),
            }
            while let Some(e) = self.detector.poll_event() {
                self.emit(e);
            }
        }
        self.tap.active.store(false, Ordering::Relaxed);
    }

    fn emit(&self, e: AmdEvent) {
        // The call's current client_state (it may have changed since the answer).
        let info = match self.services.calls.get(&self.info.ids.call_control_id) {
            Lookup::Live(view) => view.info,
            _ => self.info.clone(),
        };
        let (event_type, result, at) = match e {
            AmdEvent::DetectionEnded(d, at) => ("call.machine.detection.ended", d.as_str(), at),
            AmdEvent::GreetingEnded(g, at) => ("call.machine.greeting.ended", g.as_str(), at),
        };
        tracing::info!(
            call_control_id = %info.ids.call_control_id, result, words = self.detector.words(),
            after_ms = at.as_millis() as u64, "{event_type}"
        );
        let mut p = info.payload("answered");
        p.insert("result".into(), serde_json::json!(result));
        self.services.events.emit(info.event(event_type, p));
    }
}
