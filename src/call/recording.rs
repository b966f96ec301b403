//! Recording of one call: the media task hands each packet's G.711 payload to a
//! tap (a bounded, non-blocking channel: the media path never waits for the
//! disk), a dedicated thread decodes it and feeds `record::Recorder`, which aligns
//! both channels and writes the crash-safe WAV. Left = audio from the caller's
//! leg, right = audio sent to the caller (ARCHITECTURE.md, issue 7).
//!
//! Two levels:
//! - [`CallRecording`] is one span (answer or `record_start` → hangup or
//!   `record_stop`): one file, one writer thread, one `call.recording.saved`.
//! - [`CallRecorder`] is the call's recording control: it owns a tap that the
//!   media task keeps for the whole call and points it at the current span (or at
//!   nothing), so `record_start` / `record_stop` work mid-call any number of
//!   times without touching the media task. Span 1 is `{call_session_id}.wav`,
//!   span n > 1 is `{call_session_id}-n.wav` (`record::recording_path`).
//!
//! Options of a span ([`StartOptions`], Telnyx `record_start`): `format` (WAV or
//! MP3), `channels`, `recording_track` (both directions, or only what the caller
//! says / hears, as mono), `max_length` and `timeout_secs` (the span ends by
//! itself: `call.recording.saved` comes from the writer thread through the
//! recorder's [`SpanSink`]). `record_pause` / `record_resume` leave the paused
//! time out of the file: no audio from inside a pause reaches the disk (a packet
//! that overlaps the pause is dropped whole), and the audio after it follows the
//! audio before it with no gap. A write error is reported once through the sink
//! (`call.recording.error`).
//!
//! If the channel is full (the disk stalls) packets are dropped and counted; the
//! timeline turns them into silence, so the file stays aligned. Disk errors stop
//! the recording, never the call; so does free space falling below the floor
//! (checked every [`DISK_CHECK_EVERY`]), with `recording_stop_reason` saying why.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, TrySendError, sync_channel};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use crate::config::{Channels, Recording, RecordingFormat};
use crate::media::g711::G711;
use crate::media::leg::Tap;
use crate::media::pcm::WIDE_FRAME_SAMPLES;
use crate::media::transcode::RateConverter;
use crate::record::path::PathIds;
use crate::record::retention::{MIN_FREE_BYTES, can_start, fs_usage};
use crate::record::{DEFAULT_TEMPLATE, RecordError, Recorder, SavedRecording, WriterOptions, recording_path};

/// Which directions a span records (Telnyx `record_start`'s `recording_track`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RecordingTrack {
    /// Both: stereo (caller left) or the mono mix, per `channels`.
    #[default]
    Both,
    /// Only the audio received from the caller's leg, mono.
    Inbound,
    /// Only the audio sent to the caller, mono.
    Outbound,
}

impl RecordingTrack {
    /// `both`, `inbound` or `outbound`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "both" => Some(Self::Both),
            "inbound" => Some(Self::Inbound),
            "outbound" => Some(Self::Outbound),
            _ => None,
        }
    }
}

/// The options of one span (Telnyx Call Control `record_start`,
/// developers.telnyx.com/api-reference/call-commands/recording-start).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StartOptions {
    /// `channels`: `single` | `dual`; `None` takes `[recording] channels`.
    pub channels: Option<Channels>,
    /// `format`: `wav` | `mp3`; `None` takes `[recording] format`.
    pub format: Option<RecordingFormat>,
    /// `recording_track`.
    pub track: RecordingTrack,
    /// `max_length` (seconds, 0 = none): the span ends by itself after this much
    /// recorded audio (paused time does not count).
    pub max_length: Option<Duration>,
    /// `timeout_secs` (0 = none): the span ends by itself after this much
    /// silence, counted from the last sound once any sound was recorded.
    pub timeout: Option<Duration>,
    /// `play_beep`: a beep is played into the call as the span starts (the call's
    /// action code plays it; the span records it).
    pub play_beep: bool,
}

/// How a span ended by itself, or failed, as the writer thread reports it.
#[derive(Debug)]
pub enum SpanEnd {
    /// Finished by `max_length` or `timeout_secs` (`stop_reason` says which):
    /// `call.recording.saved`.
    Saved(SavedRecording),
    /// Writing failed (disk full, permission, ...): `call.recording.error` with
    /// this reason ([`RecordError::reason`]); the span keeps what reached the disk.
    Error(&'static str),
}

/// Where a span's own end and errors go (the call's event bus).
pub type SpanSink = Arc<dyn Fn(SpanEnd) + Send + Sync>;

/// The `play_beep` tone: 1 kHz for 250 ms at −12 dBFS with 10 ms ramps, PCM16
/// mono 8 kHz.
pub fn beep_pcm() -> Vec<i16> {
    const RATE: f64 = 8000.0;
    let n = 2000usize;
    let ramp = 80usize;
    (0..n)
        .map(|i| {
            let gain = (i.min(n - 1 - i) as f64 / ramp as f64).min(1.0);
            (8192.0 * gain * (2.0 * std::f64::consts::PI * 1000.0 * i as f64 / RATE).sin()) as i16
        })
        .collect()
}

/// `record_pause` / `record_resume` as the writer thread applies them.
#[derive(Debug, Clone, Copy)]
enum Control {
    Pause(Instant),
    Resume(Instant),
}

/// Pause windows remembered per span to drop late packets from inside them.
const MAX_WINDOWS: usize = 16;

/// Largest payload carried (60 ms of G.711).
const SLOT: usize = 480;

/// Packets queued between the media task and the writer thread (≈ 5 s of both
/// directions at 20 ms): beyond it packets are dropped (recorded as silence).
const QUEUE: usize = 512;

/// How often a running recording checks the free space of its file system.
pub const DISK_CHECK_EVERY: Duration = Duration::from_secs(5);

// Fixed-size on purpose: a payload travels without a heap allocation per packet.
#[allow(clippy::large_enum_variant)]
enum TapMsg {
    Audio {
        right: bool,
        codec: G711,
        len: u16,
        payload: [u8; SLOT],
        at: Instant,
    },
    /// 16 kHz PCM16 sent to the caller (an L16/16000 agent's audio before the
    /// leg's G.711 encoder) or, `right: false`, heard from a wideband (G.722,
    /// Opus) leg, for a 16 kHz span.
    Wideband {
        right: bool,
        len: u16,
        samples: [i16; WIDE_FRAME_SAMPLES],
        at: Instant,
    },
}

/// The writer thread takes its queue in batches this far apart (it is unparked
/// early when the span ends): no thread wake-up per packet, which cost about
/// 10 µs of CPU per recorded packet (scripts/bench-media relay-rec, issue 7 point 7).
const BATCH: Duration = Duration::from_millis(100);

/// The media task's handle on one span: cheap to clone, never blocks.
#[derive(Clone)]
pub struct RecordingTap {
    tx: SyncSender<TapMsg>,
    dropped: Arc<AtomicU64>,
    /// The span records at 16000 Hz.
    wideband: bool,
}

impl Tap for RecordingTap {
    fn heard(&self, codec: G711, payload: &[u8]) {
        self.left(codec, payload);
    }

    fn said(&self, codec: G711, payload: &[u8]) {
        self.right(codec, payload);
    }

    fn said_wideband(&self, codec: G711, payload: &[u8], wideband: &[i16]) {
        self.wide(true, codec, payload, wideband);
    }

    fn heard_wideband(&self, codec: G711, payload: &[u8], wideband: &[i16]) {
        self.wide(false, codec, payload, wideband);
    }
}

impl RecordingTap {
    /// 16 kHz audio to a 16 kHz span; an 8 kHz span takes the G.711 version.
    fn wide(&self, right: bool, codec: G711, payload: &[u8], wideband: &[i16]) {
        if !self.wideband || wideband.len() > WIDE_FRAME_SAMPLES {
            self.send(right, codec, payload);
            return;
        }
        let mut samples = [0i16; WIDE_FRAME_SAMPLES];
        samples[..wideband.len()].copy_from_slice(wideband);
        let msg = TapMsg::Wideband { right, len: wideband.len() as u16, samples, at: Instant::now() };
        if let Err(TrySendError::Full(_)) = self.tx.try_send(msg) {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

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

/// Why a recording span did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// `record_start` while a span is running.
    #[error("already recording")]
    AlreadyRecording,
    /// Free space on the recordings' file system is below the floor.
    #[error("not recording: less than {0} bytes free on the recordings' file system")]
    LowDiskSpace(u64),
    /// The file could not be created (permission denied, read-only, bad template...).
    #[error("{0} ({reason})", reason = .0.reason())]
    File(RecordError),
    /// The writer thread could not be spawned.
    #[error("recording thread: {0}")]
    Thread(std::io::Error),
    /// The 16 kHz span's resampler could not be built (a bug, not input).
    #[error("recording resampler: {0}")]
    Resampler(String),
}

impl StartError {
    /// A short machine-readable reason for events and logs: `"already_recording"`,
    /// `"low_disk_space"`, a [`RecordError::reason`], or `"thread"`.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::AlreadyRecording => "already_recording",
            Self::LowDiskSpace(_) => "low_disk_space",
            Self::File(e) => e.reason(),
            Self::Thread(_) => "thread",
            Self::Resampler(_) => "resampler",
        }
    }
}

/// What one span needs besides the ids (the unit tests shorten the disk check).
#[derive(Debug, Clone, Copy)]
struct SpanOptions {
    channels: Channels,
    format: RecordingFormat,
    track: RecordingTrack,
    max_length: Option<Duration>,
    timeout: Option<Duration>,
    /// 8000, or 16000 when the call's agent streams L16/16000.
    sample_rate_hz: u32,
    min_free_bytes: u64,
    disk_check_every: Duration,
    writer: WriterOptions,
}

/// One recording span in progress: stop it to get the saved file.
pub struct CallRecording {
    tap: RecordingTap,
    thread: Option<std::thread::JoinHandle<Option<SavedRecording>>>,
    path: PathBuf,
    span: u32,
    /// The span's end, shared with the writer thread: once set, the writer
    /// records what was queued before it and finishes the file at that instant.
    end: Arc<OnceLock<Instant>>,
    /// Pause / resume requests for the writer thread, in order.
    controls: Arc<Mutex<Vec<Control>>>,
    /// Set by the writer thread when the span ended by itself (reported through the sink).
    done: Arc<std::sync::atomic::AtomicBool>,
    paused: bool,
}

impl CallRecording {
    /// Starts recording now into `[recording]`'s directory with its `channels`,
    /// file named after the call session (span `span` of the call, from 1: span
    /// 1 is `{call_session_id}.wav`, span n is `{call_session_id}-n.wav`).
    /// Creates the directory and the file and writes its header: file-system
    /// calls without `fsync` (the writer thread syncs), well under a millisecond
    /// on a local disk, so the call task may call it directly. `sample_rate_hz`:
    /// 16000 when a party is wideband (a forwarded G.722/Opus leg), else 8000.
    pub fn start(
        cfg: &Recording,
        call_session_id: &str,
        call_control_id: &str,
        span: u32,
        sample_rate_hz: u32,
    ) -> Result<Self, StartError> {
        let opts = SpanOptions {
            channels: cfg.channels,
            format: cfg.format,
            track: RecordingTrack::Both,
            max_length: None,
            timeout: None,
            sample_rate_hz,
            min_free_bytes: MIN_FREE_BYTES,
            disk_check_every: DISK_CHECK_EVERY,
            writer: WriterOptions::default(),
        };
        Self::start_span(&cfg.dir, call_session_id, call_control_id, span, opts, None)
    }

    fn start_span(
        dir: &Path,
        call_session_id: &str,
        call_control_id: &str,
        span: u32,
        opts: SpanOptions,
        sink: Option<SpanSink>,
    ) -> Result<Self, StartError> {
        // The wall-clock and monotonic origins of the span, taken together: the
        // event's times are derived from them and the file's frame count.
        let started_at = SystemTime::now();
        let start = Instant::now();
        let recording_id = uuid::Uuid::new_v4().to_string();
        let ids = PathIds { call_session_id, call_control_id, recording_id: &recording_id };
        let mut path = recording_path(DEFAULT_TEMPLATE, dir, ids, started_at, span).map_err(StartError::File)?;
        if opts.format == RecordingFormat::Mp3 {
            path.set_extension("mp3");
        }
        let rate = if opts.sample_rate_hz == 16000 { 16000 } else { 8000 };
        // One direction is recorded as mono (Telnyx: `channels` is ignored then).
        let channels = if opts.track == RecordingTrack::Both { opts.channels } else { Channels::Single };
        // A 16 kHz span hears the legs' 8 kHz G.711 through one upsampler per channel.
        let upsample = if rate == 16000 {
            match (RateConverter::up(), RateConverter::up()) {
                (Ok(l), Ok(r)) => Some([l, r]),
                (Err(e), _) | (_, Err(e)) => return Err(StartError::Resampler(e.to_string())),
            }
        } else {
            None
        };
        let (tx, rx) = sync_channel(QUEUE);
        let dropped = Arc::new(AtomicU64::new(0));
        let end = Arc::new(OnceLock::new());
        let controls = Arc::new(Mutex::new(Vec::new()));
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        // The file is created on the writer thread (the MP3 encoder stays on the
        // thread that uses it) and the result comes back here at once, so a
        // `record_start` that cannot create its file fails synchronously.
        let (ready_tx, ready_rx) = sync_channel::<Result<(), RecordError>>(1);
        let (format, writer_opts) = (opts.format, opts.writer);
        let (thread_end, thread_controls, thread_done, thread_path) =
            (end.clone(), controls.clone(), done.clone(), path.clone());
        let thread = std::thread::Builder::new()
            .name("sipbridge-rec".into())
            .spawn(move || {
                let mut writer = Writer {
                    end: thread_end,
                    rec: None,
                    path: thread_path,
                    recording_id,
                    start,
                    started_at,
                    channels,
                    track: opts.track,
                    max_length: opts.max_length,
                    timeout: opts.timeout,
                    min_free_bytes: opts.min_free_bytes,
                    disk_check_every: opts.disk_check_every,
                    warned: false,
                    upsample,
                    wide: Vec::with_capacity(4 * SLOT),
                    controls: thread_controls,
                    windows: Vec::new(),
                    done: thread_done,
                    sink,
                };
                match Recorder::start_as(format, &writer.path, start, rate, writer.channels, writer_opts) {
                    Ok(mut r) => {
                        if let Some(max) = writer.max_length {
                            r.set_limit(max);
                        }
                        writer.rec = Some(r);
                        let _ = ready_tx.send(Ok(()));
                        writer.run(rx)
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        None
                    }
                }
            })
            .map_err(StartError::Thread)?;
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(StartError::File(e)),
            Err(_) => return Err(StartError::Thread(std::io::Error::other("recording thread ended at start"))),
        }
        Ok(Self {
            tap: RecordingTap { tx, dropped, wideband: rate == 16000 },
            thread: Some(thread),
            path,
            span,
            end,
            controls,
            done,
            paused: false,
        })
    }

    /// Pauses the span now (`record_pause`); false if it is already paused.
    pub fn pause(&mut self) -> bool {
        self.control(true)
    }

    /// Resumes the span now (`record_resume`); false unless it is paused.
    pub fn resume(&mut self) -> bool {
        self.control(false)
    }

    fn control(&mut self, pause: bool) -> bool {
        if self.paused == pause {
            return false;
        }
        self.paused = pause;
        let now = Instant::now();
        let c = if pause { Control::Pause(now) } else { Control::Resume(now) };
        match self.controls.lock() {
            Ok(mut g) => g.push(c),
            Err(poisoned) => poisoned.into_inner().push(c),
        }
        if let Some(t) = &self.thread {
            t.thread().unpark();
        }
        true
    }

    /// True once the span ended by itself (`max_length`, `timeout_secs`) and
    /// was reported through its sink.
    pub fn is_done(&self) -> bool {
        self.done.load(Ordering::Acquire)
    }

    /// The tap for the media task.
    pub fn tap(&self) -> Arc<dyn Tap> {
        Arc::new(self.tap.clone())
    }

    /// The `.wav` path this span is written to (`.part` appended while it runs).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The span's number within its call, from 1.
    pub fn span(&self) -> u32 {
        self.span
    }

    /// Packets the tap dropped because the writer thread fell behind (recorded
    /// as silence), so far.
    pub fn dropped_packets(&self) -> u64 {
        self.tap.dropped.load(Ordering::Relaxed)
    }

    /// Ends the span at `at` (the first call wins) without blocking: the writer
    /// thread records the audio queued so far and finishes the file in the
    /// background. The tap must not be fed afterwards (audio after `at` is cut).
    pub fn end_at(&self, at: Instant) {
        let _ = self.end.set(at);
        // The writer drains its queue and sees `end` at once.
        if let Some(t) = &self.thread {
            t.thread().unpark();
        }
    }

    /// Stops (at the instant `record_stop` fixed, else now) and waits for the
    /// file to be finished (fsync, rename, SHA-256); blocks, so call it from
    /// `spawn_blocking` or a sync context. `None` if the file could not be
    /// finished (logged; a `.part` left behind is repaired at the next start).
    pub fn stop_blocking(mut self) -> Option<SavedRecording> {
        self.end_at(Instant::now());
        let dropped = self.tap.dropped.load(Ordering::Relaxed);
        if dropped > 0 {
            tracing::warn!(dropped, "recording fell behind: packets dropped (recorded as silence)");
        }
        self.thread.take().and_then(|t| t.join().ok()).flatten()
    }
}

/// The writer thread's state of one span.
struct Writer {
    /// `None` once stopped early (low disk space): the rest of the queue is discarded.
    rec: Option<Recorder>,
    end: Arc<OnceLock<Instant>>,
    path: PathBuf,
    recording_id: String,
    start: Instant,
    started_at: SystemTime,
    channels: Channels,
    track: RecordingTrack,
    max_length: Option<Duration>,
    timeout: Option<Duration>,
    min_free_bytes: u64,
    disk_check_every: Duration,
    /// The write error that stopped the file was logged.
    warned: bool,
    /// 16 kHz span: the left and right channels' 8 → 16 kHz converters.
    upsample: Option<[RateConverter; 2]>,
    /// Scratch for upsampled audio (no allocation per packet).
    wide: Vec<i16>,
    controls: Arc<Mutex<Vec<Control>>>,
    /// Pause windows applied so far (start, end once resumed), the last [`MAX_WINDOWS`].
    windows: Vec<(Instant, Option<Instant>)>,
    done: Arc<std::sync::atomic::AtomicBool>,
    sink: Option<SpanSink>,
}

impl Writer {
    fn run(mut self, rx: Receiver<TapMsg>) -> Option<SavedRecording> {
        let mut pcm = [0i16; SLOT];
        let mut saved = None;
        let mut next_disk_check = self.start;
        let mut pending: Vec<Control> = Vec::new();
        let end = loop {
            // Read the end first: everything queued before it was set is drained
            // below. The tap may still be attached then (`CallRecorder::end_at`
            // fixes the end at the hangup, before the media stops): audio it
            // queued after the end is cut by `finish(end)`.
            let ended = self.end.get().copied();
            // Controls requested so far apply in time order with the audio.
            match self.controls.lock() {
                Ok(mut g) => pending.append(&mut g),
                Err(poisoned) => pending.append(&mut poisoned.into_inner()),
            }
            let disconnected = loop {
                match rx.try_recv() {
                    Ok(msg) => self.take(msg, &mut pcm, &mut pending),
                    Err(TryRecvError::Empty) => break false,
                    Err(TryRecvError::Disconnected) => break true,
                }
            };
            self.apply_controls(&mut pending, None);
            if let Some(end) = ended {
                break end;
            }
            if disconnected {
                break *self.end.get_or_init(Instant::now);
            }
            let now = Instant::now();
            if let Some(rec) = self.rec.as_mut() {
                // The error stays (the writer takes no more audio): say it once.
                if let Some(e) = rec.tick(now).filter(|_| !self.warned) {
                    tracing::warn!(file = %self.path.display(), "recording stopped: {e} (the call goes on)");
                    self.warned = true;
                    if let Some(sink) = &self.sink {
                        sink(SpanEnd::Error(e.reason()));
                    }
                }
            }
            if let Some((at, reason)) = self.self_end(now) {
                let saved = self.finish(at, Some(reason.into()));
                self.done.store(true, Ordering::Release);
                match (saved, &self.sink) {
                    (Some(s), Some(sink)) => sink(SpanEnd::Saved(s)),
                    (Some(s), None) => return Some(s),
                    (None, _) => {}
                }
                return None;
            }
            if self.rec.is_some() && now >= next_disk_check {
                next_disk_check = now + self.disk_check_every;
                let dir = self.path.parent().unwrap_or(Path::new("."));
                if fs_usage(dir).is_ok_and(|u| u.available_bytes < self.min_free_bytes) {
                    tracing::warn!(
                        file = %self.path.display(), min_free_bytes = self.min_free_bytes,
                        "recording stopped: low disk space (the call goes on)"
                    );
                    saved = self.finish(now, Some("low_disk_space".into()));
                }
            }
            // Until the next batch, or the span's end (`end_at` unparks).
            std::thread::park_timeout(BATCH);
        };
        if self.rec.is_some() {
            let reason = self.rec.as_ref().and_then(|r| r.error()).map(|e| e.reason().to_string());
            saved = self.finish(end, reason);
        }
        saved
    }

    /// The instant and reason the span ends by itself at `now`, if it does:
    /// `max_length` of recorded audio, or `timeout_secs` of silence after sound.
    fn self_end(&self, now: Instant) -> Option<(Instant, &'static str)> {
        let rec = self.rec.as_ref()?;
        if rec.is_paused() {
            return None;
        }
        if let Some(max) = self.max_length {
            let at = rec.timeline().start() + max;
            if now >= at {
                return Some((at, "max_length"));
            }
        }
        match (self.timeout, rec.silence_after_sound()) {
            (Some(t), Some(silent)) if silent >= t => Some((now, "timeout_secs")),
            _ => None,
        }
    }

    /// Applies the pause/resume requests made up to `until` (all with `None`).
    fn apply_controls(&mut self, pending: &mut Vec<Control>, until: Option<Instant>) {
        let due = pending
            .iter()
            .take_while(|c| {
                let (Control::Pause(at) | Control::Resume(at)) = **c;
                until.is_none_or(|u| at <= u)
            })
            .count();
        for c in pending.drain(..due) {
            match c {
                Control::Pause(at) => {
                    if self.windows.len() == MAX_WINDOWS {
                        self.windows.remove(0);
                    }
                    self.windows.push((at, None));
                    if let Some(rec) = self.rec.as_mut() {
                        rec.pause(at);
                    }
                }
                Control::Resume(at) => {
                    if let Some(w) = self.windows.last_mut() {
                        w.1 = Some(at);
                    }
                    if let Some(rec) = self.rec.as_mut() {
                        rec.resume(at);
                    }
                }
            }
        }
    }

    /// True when audio heard over `[at − duration, at]` overlaps a pause: it is
    /// dropped whole (no paused audio reaches the disk).
    fn in_pause(&self, at: Instant, duration: Duration) -> bool {
        let from = at.checked_sub(duration).unwrap_or(at);
        self.windows.iter().any(|&(p, r)| at >= p && r.is_none_or(|r| from < r))
    }

    fn take(&mut self, msg: TapMsg, pcm: &mut [i16; SLOT], pending: &mut Vec<Control>) {
        let at = match &msg {
            TapMsg::Audio { at, .. } | TapMsg::Wideband { at, .. } => *at,
        };
        self.apply_controls(pending, Some(at));
        match msg {
            TapMsg::Audio { right, codec, len, payload, at } => {
                self.push(right, codec, &payload[..usize::from(len)], at, pcm)
            }
            TapMsg::Wideband { right, len, samples, at } => {
                let samples = &samples[..usize::from(len).min(WIDE_FRAME_SAMPLES)];
                let duration = Duration::from_micros(samples.len() as u64 * 1_000_000 / 16_000);
                let wanted = match self.track {
                    RecordingTrack::Both => true,
                    RecordingTrack::Inbound => !right,
                    RecordingTrack::Outbound => right,
                };
                if !wanted || self.in_pause(at, duration) {
                    return;
                }
                match self.rec.as_mut() {
                    Some(rec) if self.upsample.is_some() && right => rec.push_right(samples, at),
                    Some(rec) if self.upsample.is_some() => rec.push_left(samples, at),
                    _ => {}
                }
            }
        }
    }

    fn push(&mut self, right: bool, codec: G711, payload: &[u8], at: Instant, pcm: &mut [i16; SLOT]) {
        let wanted = match self.track {
            RecordingTrack::Both => true,
            RecordingTrack::Inbound => !right,
            RecordingTrack::Outbound => right,
        };
        // G.711: one byte per 8 kHz sample.
        let duration = Duration::from_micros(payload.len() as u64 * 125);
        if !wanted || self.in_pause(at, duration) {
            return;
        }
        let Some(rec) = self.rec.as_mut() else { return };
        let n = codec.decode(payload, pcm);
        let audio = match self.upsample.as_mut() {
            Some(up) => {
                let wide = &mut self.wide;
                wide.clear();
                up[usize::from(right)].process(&pcm[..n], |s| wide.push(s));
                &wide[..]
            }
            None => &pcm[..n],
        };
        if right {
            rec.push_right(audio, at);
        } else {
            rec.push_left(audio, at);
        }
    }

    fn finish(&mut self, end: Instant, stop_reason: Option<String>) -> Option<SavedRecording> {
        let rec = self.rec.take()?;
        match rec.finish(end) {
            Ok(file) => {
                tracing::info!(file = %file.path.display(), seconds = file.duration().as_secs_f64(), "recording saved");
                // The last frame's wall-clock time: the file holds exactly the span
                // from `started_at` (to the sample), unless a write error cut it.
                let span = end.saturating_duration_since(self.start);
                let covered = if file.write_error.is_some() { span.min(file.duration()) } else { span };
                Some(SavedRecording {
                    recording_id: self.recording_id.clone(),
                    channels: self.channels,
                    started_at: self.started_at,
                    ended_at: self.started_at + covered,
                    file,
                    stop_reason,
                })
            }
            Err(e) => {
                tracing::warn!(file = %self.path.display(), "recording could not be finished: {e}");
                None
            }
        }
    }
}

/// Points the media task's tap at the running span, or at nothing.
#[derive(Default)]
struct SpanTap {
    current: Mutex<Option<RecordingTap>>,
}

impl SpanTap {
    fn set(&self, tap: Option<RecordingTap>) {
        match self.current.lock() {
            Ok(mut g) => *g = tap,
            Err(poisoned) => *poisoned.into_inner() = tap,
        }
    }

    fn with(&self, f: impl FnOnce(&RecordingTap)) {
        // Held only for a try_send (never blocks) or a pointer swap.
        if let Ok(g) = self.current.lock() {
            if let Some(t) = g.as_ref() {
                f(t);
            }
        }
    }
}

impl Tap for SpanTap {
    fn heard(&self, codec: G711, payload: &[u8]) {
        self.with(|t| t.left(codec, payload));
    }

    fn said(&self, codec: G711, payload: &[u8]) {
        self.with(|t| t.right(codec, payload));
    }

    fn said_wideband(&self, codec: G711, payload: &[u8], wideband: &[i16]) {
        self.with(|t| t.said_wideband(codec, payload, wideband));
    }

    fn heard_wideband(&self, codec: G711, payload: &[u8], wideband: &[i16]) {
        self.with(|t| t.heard_wideband(codec, payload, wideband));
    }
}

/// A call's recording control: start/stop spans mid-call (Telnyx `record_start` /
/// `record_stop`). Install [`Self::tap`] on the media task once, when the media
/// starts; every span then hears both directions from its start to its stop.
pub struct CallRecorder {
    dir: PathBuf,
    channels: Channels,
    format: RecordingFormat,
    sink: Option<SpanSink>,
    sample_rate_hz: u32,
    call_session_id: String,
    call_control_id: String,
    min_free_bytes: u64,
    spans: u32,
    tap: Arc<SpanTap>,
    active: Option<CallRecording>,
}

impl CallRecorder {
    /// The recorder of one call, idle: files go under `cfg.dir` with `cfg.channels`
    /// unless a `record_start` says otherwise.
    pub fn new(cfg: &Recording, call_session_id: &str, call_control_id: &str) -> Self {
        Self {
            dir: cfg.dir.clone(),
            channels: cfg.channels,
            format: cfg.format,
            sink: None,
            sample_rate_hz: 8000,
            call_session_id: call_session_id.to_string(),
            call_control_id: call_control_id.to_string(),
            min_free_bytes: MIN_FREE_BYTES,
            spans: 0,
            tap: Arc::new(SpanTap::default()),
            active: None,
        }
    }

    /// The tap for the media task, for the whole call (silent while no span runs).
    pub fn tap(&self) -> Arc<dyn Tap> {
        self.tap.clone()
    }

    /// Sets the rate of the spans started from now on: 16000 while the call's
    /// agent streams L16/16000 (its audio is recorded at full band, the caller's
    /// 8 kHz upsampled), else 8000 (issue 7 point 1). A running span keeps its rate.
    pub fn set_sample_rate(&mut self, hz: u32) {
        self.sample_rate_hz = if hz == 16000 { 16000 } else { 8000 };
    }

    /// Where spans report their own end (`max_length`, `timeout_secs`) and
    /// write errors: the call's events `call.recording.saved` / `call.recording.error`.
    pub fn set_sink(&mut self, sink: SpanSink) {
        self.sink = Some(sink);
    }

    /// True while a span is running (paused or not).
    pub fn is_recording(&self) -> bool {
        self.active.as_ref().is_some_and(|a| !a.is_done())
    }

    /// Pauses the running span (`record_pause`).
    ///
    /// # Errors
    /// `"not_recording"` or `"already_paused"`.
    pub fn record_pause(&mut self) -> Result<(), &'static str> {
        match self.active.as_mut().filter(|a| !a.is_done()) {
            None => Err("not_recording"),
            Some(a) => a.pause().then_some(()).ok_or("already_paused"),
        }
    }

    /// Resumes the paused span (`record_resume`).
    ///
    /// # Errors
    /// `"not_recording"` or `"not_paused"`.
    pub fn record_resume(&mut self) -> Result<(), &'static str> {
        match self.active.as_mut().filter(|a| !a.is_done()) {
            None => Err("not_recording"),
            Some(a) => a.resume().then_some(()).ok_or("not_paused"),
        }
    }

    /// Spans started so far (the number the next one gets is this + 1).
    pub fn spans_started(&self) -> u32 {
        self.spans
    }

    /// Starts a span now (`record_start`; `opts.channels` / `opts.format`
    /// override `[recording]`'s, like Telnyx's `channels` and `format`); returns
    /// the file it writes. Fails while a span runs, when free space is below the
    /// floor, or when the file cannot be created: the call goes on either way.
    /// File-system calls without `fsync` and a thread start (see
    /// [`CallRecording::start`]): fine on the call task.
    pub fn record_start(&mut self, opts: StartOptions) -> Result<&Path, StartError> {
        if self.is_recording() {
            return Err(StartError::AlreadyRecording);
        }
        // A span that ended by itself was reported already: forget it.
        if self.active.take().is_some() {
            self.tap.set(None);
        }
        // A missing dir has no statvfs yet: creating the file creates it.
        if let Ok(false) = can_start(&self.dir, self.min_free_bytes) {
            return Err(StartError::LowDiskSpace(self.min_free_bytes));
        }
        let opts = SpanOptions {
            channels: opts.channels.unwrap_or(self.channels),
            format: opts.format.unwrap_or(self.format),
            track: opts.track,
            max_length: opts.max_length.filter(|d| !d.is_zero()),
            timeout: opts.timeout.filter(|d| !d.is_zero()),
            sample_rate_hz: self.sample_rate_hz,
            min_free_bytes: self.min_free_bytes,
            disk_check_every: DISK_CHECK_EVERY,
            writer: WriterOptions::default(),
        };
        let span = self.spans + 1;
        let rec = CallRecording::start_span(
            &self.dir,
            &self.call_session_id,
            &self.call_control_id,
            span,
            opts,
            self.sink.clone(),
        )?;
        self.spans = span;
        self.tap.set(Some(rec.tap.clone()));
        Ok(self.active.insert(rec).path())
    }

    /// Ends the running span at `at` without stopping it (the first end wins:
    /// a later [`Self::record_stop`] keeps this one); the tap stays attached,
    /// and audio after `at` is cut. Nothing when no span runs.
    pub fn end_at(&self, at: Instant) {
        if let Some(rec) = &self.active {
            rec.end_at(at);
        }
    }

    /// Stops the running span now (`record_stop`, or hangup): the tap is
    /// detached at once and the span's end fixed; finish the returned span with
    /// [`CallRecording::stop_blocking`] off the reactor and emit
    /// `call.recording.saved` from its result. `None` when no span runs (one
    /// that ended by itself was reported then).
    pub fn record_stop(&mut self) -> Option<CallRecording> {
        let rec = self.active.take()?;
        self.tap.set(None);
        if rec.is_done() {
            return None;
        }
        rec.end_at(Instant::now());
        Some(rec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::values::DiskBudget;

    fn config(dir: &Path) -> Recording {
        Recording {
            enabled: true,
            dir: dir.to_path_buf(),
            channels: Channels::Dual,
            format: RecordingFormat::Wav,
            retention: None,
            max_disk_usage: DiskBudget::Percent(80.0),
        }
    }

    /// `packets` 20 ms packets of a constant level, both ways, paced by the wall
    /// clock (the writer thread timestamps them on arrival, as in a call).
    fn talk(tap: &dyn Tap, packets: usize, level: i16) {
        let mut pcmu = [0u8; 160];
        G711::Pcmu.encode(&[level; 160], &mut pcmu);
        let mut echo = [0u8; 160];
        G711::Pcmu.encode(&[-level; 160], &mut echo);
        let t0 = Instant::now();
        for k in 0..packets {
            let due = t0 + Duration::from_millis(20 * (k as u64 + 1));
            std::thread::sleep(due.saturating_duration_since(Instant::now()));
            tap.heard(G711::Pcmu, &pcmu);
            tap.said(G711::Pcmu, &echo);
        }
    }

    fn read(path: &Path) -> (hound::WavSpec, Vec<i16>) {
        let mut r = hound::WavReader::open(path).unwrap();
        (r.spec(), r.samples::<i16>().map(|s| s.unwrap()).collect())
    }

    #[test]
    fn start_stop_spans_make_one_file_each_with_their_own_fields() {
        let dir = tempfile::tempdir().unwrap();
        let mut rec = CallRecorder::new(&config(dir.path()), "sess-1", "v3:cc-1");
        let tap = rec.tap();
        // Before any span: the tap goes nowhere.
        talk(tap.as_ref(), 5, 4000);
        assert!(!rec.is_recording());
        assert!(rec.record_stop().is_none());

        let p1 = rec.record_start(StartOptions::default()).unwrap().to_path_buf();
        assert!(matches!(rec.record_start(StartOptions::default()), Err(StartError::AlreadyRecording)));
        talk(tap.as_ref(), 25, 4000);
        let s1 = rec.record_stop().unwrap();
        assert_eq!(s1.span(), 1);
        // Audio between spans is not recorded anywhere.
        talk(tap.as_ref(), 10, 8000);
        let p2 = rec
            .record_start(StartOptions { channels: Some(Channels::Single), ..StartOptions::default() })
            .unwrap()
            .to_path_buf();
        talk(tap.as_ref(), 15, 2000);
        let s2 = rec.record_stop().unwrap();
        assert_eq!((s2.span(), rec.spans_started()), (2, 2));
        let (saved1, saved2) = (s1.stop_blocking().unwrap(), s2.stop_blocking().unwrap());

        assert_eq!(p1.file_name().unwrap(), "sess-1.wav");
        assert_eq!(p2.file_name().unwrap(), "sess-1-2.wav");
        assert_eq!((saved1.file.path.clone(), saved2.file.path.clone()), (p1.clone(), p2.clone()));
        assert_ne!(saved1.recording_id, saved2.recording_id);
        assert!(saved2.started_at >= saved1.ended_at);
        for s in [&saved1, &saved2] {
            // The event's span is the file's duration, to the sample.
            let span = s.ended_at.duration_since(s.started_at).unwrap();
            let d = span.abs_diff(s.file.duration());
            assert!(d < Duration::from_micros(125), "{span:?} vs {:?}", s.file.duration());
            assert!(s.stop_reason.is_none());
        }
        assert!(saved1.file.duration() >= Duration::from_millis(480), "{:?}", saved1.file.duration());
        assert!(saved2.file.duration() >= Duration::from_millis(280), "{:?}", saved2.file.duration());

        let (spec1, s1) = read(&p1);
        assert_eq!(spec1.channels, 2);
        let loud = |v: &[i16], lo: i16, hi: i16| v.iter().filter(|x| (lo..=hi).contains(*x)).count();
        let left: Vec<i16> = s1.iter().step_by(2).copied().collect();
        let right: Vec<i16> = s1.iter().skip(1).step_by(2).copied().collect();
        // 25 packets of 4000 on the left, −4000 on the right (μ-law: ±4 %), nothing else.
        assert!(loud(&left, 3800, 4200) >= 20 * 160, "{}", loud(&left, 3800, 4200));
        assert!(loud(&right, -4200, -3800) >= 20 * 160);
        assert_eq!(loud(&left, 6000, i16::MAX), 0, "no audio from between the spans");
        let (spec2, s2) = read(&p2);
        assert_eq!(spec2.channels, 1);
        // Mono mix of +2000 and −2000: silence, and nothing from before the span
        // (each direction is placed at its own arrival, tapped microseconds
        // apart: at most one unmatched sample at each end).
        assert!(s2.iter().filter(|x| x.abs() >= 200).count() <= 2, "{:?}", s2.iter().max());
        assert_eq!(saved2.channels, Channels::Single);
    }

    #[test]
    fn paused_audio_never_reaches_the_file_and_max_length_ends_the_span_itself() {
        let dir = tempfile::tempdir().unwrap();
        let mut rec = CallRecorder::new(&config(dir.path()), "sess-p", "v3:cc-p");
        let (tx, rx) = std::sync::mpsc::channel();
        let tx = Mutex::new(tx);
        rec.set_sink(Arc::new(move |end| {
            let _ = tx.lock().unwrap().send(end);
        }));
        let tap = rec.tap();
        assert_eq!(rec.record_pause(), Err("not_recording"));
        let mp3 = StartOptions { format: Some(RecordingFormat::Mp3), ..StartOptions::default() };
        let path = rec.record_start(mp3).unwrap().to_path_buf();
        assert_eq!(path.extension().unwrap(), "mp3");
        talk(tap.as_ref(), 10, 2000);
        rec.record_pause().unwrap();
        assert_eq!(rec.record_pause(), Err("already_paused"));
        // The "card number": loud, and never written.
        talk(tap.as_ref(), 25, 20_000);
        rec.record_resume().unwrap();
        assert_eq!(rec.record_resume(), Err("not_paused"));
        talk(tap.as_ref(), 10, 2000);
        let saved = rec.record_stop().unwrap().stop_blocking().unwrap();
        assert_eq!(saved.file.path, path);
        // About 0.4 s of audio, not the 0.9 s the span lasted.
        let d = saved.file.duration();
        assert!(d >= Duration::from_millis(300) && d < Duration::from_millis(700), "{d:?}");
        let decoded = std::process::Command::new("sox")
            .arg("-t")
            .arg("mp3")
            .arg(&path)
            .args(["-t", "raw", "-b", "16", "-e", "signed-integer", "-"])
            .output();
        if let Some(out) = decoded.ok().filter(|o| o.status.success()) {
            let pcm: Vec<i16> = out.stdout.chunks_exact(2).map(|b| i16::from_ne_bytes([b[0], b[1]])).collect();
            assert!(pcm.len() > 1000, "decoded {} samples", pcm.len());
            let peak = pcm.iter().map(|s| s.unsigned_abs()).max().unwrap_or(0);
            assert!(peak < 8000, "nothing of the paused 20 000-level audio: peak {peak}");
        }

        // max_length: the span ends by itself, reported through the sink.
        let limited = StartOptions { max_length: Some(Duration::from_millis(300)), ..StartOptions::default() };
        rec.record_start(limited).unwrap();
        talk(tap.as_ref(), 25, 2000);
        let end = rx.recv_timeout(Duration::from_secs(10)).expect("the span reported its end");
        let SpanEnd::Saved(s) = end else { panic!("{end:?}") };
        assert_eq!(s.stop_reason.as_deref(), Some("max_length"));
        assert_eq!(s.file.frames, 2400, "300 ms to the sample");
        assert!(!rec.is_recording());
        assert!(rec.record_stop().is_none(), "reported already");
        assert!(rec.record_start(StartOptions::default()).is_ok(), "a new span may start");
        assert!(rec.record_stop().unwrap().stop_blocking().is_some());
    }

    #[test]
    fn a_span_that_cannot_be_created_is_an_error_and_the_next_one_works() {
        let dir = tempfile::tempdir().unwrap();
        let blocker = dir.path().join("file");
        std::fs::write(&blocker, b"x").unwrap();
        let mut rec = CallRecorder::new(&config(&blocker.join("rec")), "s", "c");
        let e = rec.record_start(StartOptions::default()).unwrap_err();
        assert!(matches!(e, StartError::File(RecordError::Io { op: "create directory", .. })), "{e}");
        assert!(e.to_string().contains("create directory") && e.to_string().ends_with("(io_error)"), "{e}");
        assert!(!rec.is_recording());
        assert_eq!(rec.spans_started(), 0);
        // Pointed at a usable directory (as a reload would), the next start works and is span 1.
        rec.dir = dir.path().join("rec");
        let p = rec.record_start(StartOptions::default()).unwrap().to_path_buf();
        assert_eq!(p.file_name().unwrap(), "s.wav");
        assert!(rec.record_stop().unwrap().stop_blocking().is_some());
    }

    #[test]
    fn low_disk_space_refuses_new_spans_and_stops_running_ones() {
        let dir = tempfile::tempdir().unwrap();
        let mut rec = CallRecorder::new(&config(dir.path()), "s", "c");
        rec.min_free_bytes = u64::MAX;
        let e = rec.record_start(StartOptions::default()).unwrap_err();
        assert_eq!(e.reason(), "low_disk_space");

        // A span running when space runs out (the floor is checked as it starts
        // and every DISK_CHECK_EVERY): it stops cleanly, the tap keeps accepting.
        let opts = SpanOptions {
            channels: Channels::Dual,
            format: RecordingFormat::Wav,
            track: RecordingTrack::Both,
            max_length: None,
            timeout: None,
            sample_rate_hz: 8000,
            min_free_bytes: u64::MAX,
            disk_check_every: Duration::ZERO,
            writer: WriterOptions::default(),
        };
        let span = CallRecording::start_span(dir.path(), "t", "c", 1, opts, None).unwrap();
        talk(span.tap().as_ref(), 10, 4000);
        let saved = span.stop_blocking().unwrap();
        assert_eq!(saved.stop_reason.as_deref(), Some("low_disk_space"));
        assert!(saved.file.duration() < Duration::from_millis(150), "{:?}", saved.file.duration());
        assert!(saved.file.path.exists());
    }
}
