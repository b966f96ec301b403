//! One recording span: a [`Timeline`] feeding a [`WavFile`] or an [`Mp3File`].
//!
//! The call/media task owns a `Recorder` from answer (or `record_start`) to
//! hangup (or `record_stop`), pushes both directions' PCM16 into it with their
//! arrival `Instant`s, calls [`Recorder::tick`] on a timer (every 20–200 ms), and
//! ends it with [`Recorder::finish`]. A write error stops the recording, never
//! the call: pushes after it are ignored and `finish` salvages the file.
//! [`Recorder::pause`] / [`Recorder::resume`] leave the paused span out of the
//! file (Telnyx `record_pause` / `record_resume`), and the recorder tracks
//! how long the recorded audio has been silent after speech (`timeout_secs`).
//! Every method may block on the disk (write, fdatasync): run it on a blocking
//! thread, not on the async reactor.

use std::path::Path;
use std::time::Instant;

use super::RecordError;
use super::mp3::Mp3File;
use super::timeline::Timeline;
use super::wav::{SavedFile, WavFile, WriterOptions};
use crate::config::{Channels, RecordingFormat};

/// A sample at or above this magnitude (about −30 dBFS) counts as sound for the
/// silence timer (`timeout_secs`): speech peaks well above it, comfort noise
/// and line hiss stay below.
pub const SOUND_LEVEL: i16 = 1000;

/// The file a span writes.
#[derive(Debug)]
pub enum RecordingFile {
    /// PCM16 WAV.
    Wav(WavFile),
    /// MP3.
    Mp3(Mp3File),
}

impl RecordingFile {
    /// Creates the `.part` file of `format` (see [`WavFile::create`], [`Mp3File::create`]).
    pub fn create(
        format: RecordingFormat,
        final_path: &Path,
        sample_rate_hz: u32,
        channels: u16,
        opts: WriterOptions,
        now: Instant,
    ) -> Result<Self, RecordError> {
        Ok(match format {
            RecordingFormat::Wav => Self::Wav(WavFile::create(final_path, sample_rate_hz, channels, opts, now)?),
            RecordingFormat::Mp3 => Self::Mp3(Mp3File::create(final_path, sample_rate_hz, channels, opts, now)?),
        })
    }

    fn write(&mut self, interleaved: &[i16], now: Instant) -> Result<(), RecordError> {
        match self {
            Self::Wav(f) => f.write(interleaved, now),
            Self::Mp3(f) => f.write(interleaved, now),
        }
    }

    fn checkpoint(&mut self, now: Instant) -> Result<(), RecordError> {
        match self {
            Self::Wav(f) => f.checkpoint(now),
            Self::Mp3(f) => f.checkpoint(now),
        }
    }

    /// The `.part` path being written.
    pub fn part_path(&self) -> &Path {
        match self {
            Self::Wav(f) => f.part_path(),
            Self::Mp3(f) => f.part_path(),
        }
    }

    /// Checkpoint and sync counters.
    pub fn stats(&self) -> super::wav::WriterStats {
        match self {
            Self::Wav(f) => f.stats(),
            Self::Mp3(f) => f.stats(),
        }
    }

    /// Frames (samples per channel) written so far.
    pub fn frames(&self) -> u64 {
        match self {
            Self::Wav(f) => f.frames(),
            Self::Mp3(f) => f.frames(),
        }
    }

    fn finish(self) -> Result<SavedFile, RecordError> {
        match self {
            Self::Wav(f) => f.finish(),
            Self::Mp3(f) => f.finish(),
        }
    }
}

/// A recording in progress; see the module documentation.
#[derive(Debug)]
pub struct Recorder {
    timeline: Timeline,
    file: RecordingFile,
    /// Reused output buffer: at most one second of frames.
    frames: Vec<i16>,
    error: Option<RecordError>,
    /// Frame position after the last frame with sound ([`SOUND_LEVEL`]), once any was heard.
    last_sound: Option<u64>,
}

impl Recorder {
    /// Starts a recording whose sample 0 is at `start`, at `sample_rate_hz`
    /// (8000, or 16000 for an L16/16000 agent stream), stereo (`Dual`: L = caller's
    /// leg, R = other side) or a mono mix (`Single`), written to
    /// `<final_path>.part` (renamed to `final_path` by `finish`) as WAV.
    pub fn start(
        final_path: &Path,
        start: Instant,
        sample_rate_hz: u32,
        channels: Channels,
        opts: WriterOptions,
    ) -> Result<Self, RecordError> {
        Self::start_as(RecordingFormat::Wav, final_path, start, sample_rate_hz, channels, opts)
    }

    /// [`Self::start`] in `format` (WAV or MP3).
    pub fn start_as(
        format: RecordingFormat,
        final_path: &Path,
        start: Instant,
        sample_rate_hz: u32,
        channels: Channels,
        opts: WriterOptions,
    ) -> Result<Self, RecordError> {
        let timeline = Timeline::new(start, sample_rate_hz, channels);
        let file = RecordingFile::create(format, final_path, sample_rate_hz, timeline.channel_count(), opts, start)?;
        let frames = Vec::with_capacity(sample_rate_hz as usize * usize::from(timeline.channel_count()));
        Ok(Self { timeline, file, frames, error: None, last_sound: None })
    }

    /// Pauses at `at` (`record_pause`): the file ends its current stretch at
    /// `at`, and audio pushed until [`Self::resume`] is dropped, never written.
    pub fn pause(&mut self, at: Instant) {
        self.drain(at);
        self.timeline.pause(at);
        self.drain(at);
    }

    /// Resumes at `at` (`record_resume`): the next audio follows the audio from
    /// before the pause in the file, with no silence for the paused time.
    pub fn resume(&mut self, at: Instant) {
        self.timeline.resume(at);
    }

    /// Caps the recording at `d` of audio (`max_length`): see [`Timeline::set_limit`].
    pub fn set_limit(&mut self, d: std::time::Duration) {
        self.timeline.set_limit(d);
    }

    /// True between [`Self::pause`] and [`Self::resume`].
    pub fn is_paused(&self) -> bool {
        self.timeline.is_paused()
    }

    /// How long the recorded audio has been silent since the last sound, once
    /// any sound was recorded (`None` before: Telnyx's `timeout_secs` timer
    /// starts with speech).
    pub fn silence_after_sound(&self) -> Option<std::time::Duration> {
        let last = self.last_sound?;
        let silent = self.timeline.frames_emitted().saturating_sub(last);
        Some(std::time::Duration::from_nanos(
            (u128::from(silent) * 1_000_000_000 / u128::from(self.timeline.sample_rate_hz())) as u64,
        ))
    }

    /// Audio received from the caller's leg: PCM16 mono, native endian, at the
    /// recording's sample rate; its last sample arrived at `at`.
    pub fn push_left(&mut self, pcm: &[i16], at: Instant) {
        self.drain(at);
        self.timeline.push_left(pcm, at);
    }

    /// Audio sent to the caller: same shape as [`Self::push_left`].
    pub fn push_right(&mut self, pcm: &[i16], at: Instant) {
        self.drain(at);
        self.timeline.push_right(pcm, at);
    }

    /// Writes the frames due at `now` (silence where nothing arrived) and
    /// checkpoints the file when due. Returns the write error that stopped the
    /// recording, once it has happened (the call should log it and `finish`).
    pub fn tick(&mut self, now: Instant) -> Option<&RecordError> {
        self.drain(now);
        if self.error.is_none() {
            self.error = self.file.checkpoint(now).err();
        }
        self.error.as_ref()
    }

    /// The error that stopped writing, if any.
    pub fn error(&self) -> Option<&RecordError> {
        self.error.as_ref()
    }

    /// The timeline (position, gap and drop counters).
    pub fn timeline(&self) -> &Timeline {
        &self.timeline
    }

    /// The file being written.
    pub fn file(&self) -> &RecordingFile {
        &self.file
    }

    fn drain(&mut self, now: Instant) {
        // At most one second per poll; a stalled caller gets the rest in a few rounds.
        let rounds = self.timeline.pending_frames(now) / u64::from(self.timeline.sample_rate_hz()) + 2;
        for _ in 0..rounds {
            self.frames.clear();
            let n = self.timeline.poll_frames(now, &mut self.frames);
            if n == 0 {
                break;
            }
            let ch = usize::from(self.timeline.channel_count());
            if let Some(i) = self.frames.iter().rposition(|s| s.unsigned_abs() >= SOUND_LEVEL.unsigned_abs()) {
                self.last_sound = Some(self.timeline.frames_emitted() - n as u64 + (i / ch) as u64 + 1);
            }
            if self.error.is_none() {
                self.error = self.file.write(&self.frames, now).err();
            }
        }
    }

    /// Ends the recording at `end` (hangup or `record_stop`): writes the frames up
    /// to exactly `end`, then the final header, sync and rename. The file's
    /// duration is `end − start` (to the sample) unless a write error cut it short
    /// ([`SavedFile::write_error`]).
    pub fn finish(mut self, end: Instant) -> Result<SavedFile, RecordError> {
        self.timeline.stop(end);
        self.drain(end);
        self.file.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn recorded_span_equals_the_file_duration() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.wav");
        let t0 = Instant::now();
        let mut r = Recorder::start(&path, t0, 8000, Channels::Dual, WriterOptions::default()).unwrap();
        for k in 0..250u64 {
            let at = t0 + Duration::from_millis(20 * (k + 1));
            r.push_left(&[1000; 160], at);
            // The other side is silent (suppressed) for the first second.
            if k >= 50 {
                r.push_right(&[-1000; 160], at);
            }
            if k % 5 == 0 {
                assert!(r.tick(at).is_none());
            }
        }
        // Hold: 3 s without audio, the timer keeps ticking.
        for k in 0..30u64 {
            r.tick(t0 + Duration::from_millis(5000 + 100 * k));
        }
        let end = t0 + Duration::from_millis(8_007);
        let saved = r.finish(end).unwrap();
        assert_eq!(saved.frames, 8 * 8000 + 56);
        let mut reader = hound::WavReader::open(&saved.path).unwrap();
        assert_eq!(u64::from(reader.duration()), saved.frames);
        let s: Vec<i16> = reader.samples::<i16>().map(|s| s.unwrap()).collect();
        assert_eq!((s[0], s[1]), (1000, 0));
        assert_eq!((s[2 * 8000 * 2], s[2 * 8000 * 2 + 1]), (1000, -1000));
        assert!(s[2 * 5 * 8000..].iter().all(|&x| x == 0));
    }
}
