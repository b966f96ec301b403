//! The crash-safe MP3 writer and the startup repair of `.mp3.part` files.
//!
//! An MP3 stream (ISO/IEC 11172-3 and 13818-3, MPEG Layer III) is a sequence of
//! frames, each with its own 32-bit header; there is no file header to keep up
//! to date. The encoder ([shine-rs], a pure-Rust port of the `shine` fixed-point
//! encoder) runs on the recording's writer thread and hands out whole frames; the
//! writer keeps them in memory and appends them to `<name>.mp3.part` at each
//! checkpoint (every [`WriterOptions::checkpoint_every`], as the WAV writer), with
//! `fdatasync` every [`WriterOptions::sync_every`]. Only whole frames are ever
//! written, so a `kill -9` leaves a file that decoders (ffmpeg, sox/libmad) play
//! up to its last checkpoint; a power cut may tear the last frame, which
//! [`repair_one`] cuts off at the next start.
//!
//! Bit rates: 32 kbit/s per channel (mono 32, dual 64), constant, at 8000 Hz
//! (MPEG-2.5) and 16000 Hz (MPEG-2), 576 samples per frame. docs/benchmarks.md
//! (`## MP3 encoder`) has the measured quality and CPU. The decoded stream starts
//! with the encoder's delay (about 1057 samples of silence, no gapless header) and
//! ends with the flush padding; `SavedFile::frames` counts the recorded samples.
//!
//! [shine-rs]: https://crates.io/crates/shine-rs

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use super::RecordError;
use super::wav::{Repaired, SavedFile, WriterOptions, WriterStats, part_path, sha256_file, sync_dir};

/// Bit rate per channel, kbit/s (a rate the shine encoder handles correctly at
/// 8 and 16 kHz: checked by the tests below, decoded by sox).
pub const KBPS_PER_CHANNEL: u32 = 32;

/// Samples per channel in one MPEG-2/2.5 Layer III frame.
pub const SAMPLES_PER_FRAME: u32 = 576;

/// Encoded bytes kept in memory before a write is forced (about 16 s at 64 kbit/s),
/// whatever the checkpoint clock says.
const MAX_PENDING: usize = 128 * 1024;

/// One MP3 recording file being written; see the module documentation.
pub struct Mp3File {
    final_path: PathBuf,
    part_path: PathBuf,
    /// `None` once a write failed: no more audio goes in.
    file: Option<File>,
    encoder: shine_rs::Mp3Encoder,
    /// Whole encoded frames not yet written.
    pending: Vec<u8>,
    sample_rate_hz: u32,
    channels: u16,
    frames: u64,
    opts: WriterOptions,
    last_checkpoint: Instant,
    last_sync: Instant,
    created_synced: bool,
    write_error: Option<&'static str>,
    stats: WriterStats,
}

impl std::fmt::Debug for Mp3File {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mp3File").field("part_path", &self.part_path).field("frames", &self.frames).finish()
    }
}

fn encoder_error(path: &Path, e: impl std::fmt::Display) -> RecordError {
    RecordError::io("encode", path, io::Error::other(e.to_string()))
}

impl Mp3File {
    /// Creates `<final_path>.part` (and missing parent directories) for an MP3
    /// stream at `sample_rate_hz` (8000 or 16000) with `channels` (1, or 2 coded
    /// as stereo: L = caller, R = other side). No `fsync` here (the first
    /// [`Self::checkpoint`] syncs the file and its directory entry). Fails with
    /// [`RecordError::Exists`] if the final file or the `.part` already exists.
    pub fn create(
        final_path: &Path,
        sample_rate_hz: u32,
        channels: u16,
        opts: WriterOptions,
        now: Instant,
    ) -> Result<Self, RecordError> {
        let part = part_path(final_path);
        let channels = channels.clamp(1, 2);
        let mode = if channels == 2 { shine_rs::StereoMode::Stereo } else { shine_rs::StereoMode::Mono };
        let config = shine_rs::Mp3EncoderConfig::new()
            .sample_rate(sample_rate_hz)
            .bitrate(KBPS_PER_CHANNEL * u32::from(channels))
            .channels(channels as u8)
            .stereo_mode(mode);
        let encoder = shine_rs::Mp3Encoder::new(config).map_err(|e| encoder_error(&part, e))?;
        let dir = final_path.parent().unwrap_or(Path::new("."));
        fs::create_dir_all(dir).map_err(|e| RecordError::io("create directory", dir, e))?;
        if final_path.exists() {
            return Err(RecordError::Exists(final_path.to_path_buf()));
        }
        let file = OpenOptions::new().read(true).write(true).create_new(true).open(&part).map_err(|e| {
            if e.kind() == io::ErrorKind::AlreadyExists {
                RecordError::Exists(part.clone())
            } else {
                RecordError::io("create", &part, e)
            }
        })?;
        Ok(Self {
            final_path: final_path.to_path_buf(),
            part_path: part,
            file: Some(file),
            encoder,
            pending: Vec::with_capacity(16 * 1024),
            sample_rate_hz,
            channels,
            frames: 0,
            opts,
            last_checkpoint: now,
            last_sync: now,
            created_synced: false,
            write_error: None,
            stats: WriterStats::default(),
        })
    }

    /// The `.mp3.part` path being written.
    pub fn part_path(&self) -> &Path {
        &self.part_path
    }

    /// The `.mp3` path the file gets on `finish`.
    pub fn final_path(&self) -> &Path {
        &self.final_path
    }

    /// Checkpoint and sync counters.
    pub fn stats(&self) -> WriterStats {
        self.stats
    }

    /// PCM frames (samples per channel) encoded so far.
    pub fn frames(&self) -> u64 {
        self.frames
    }

    /// Encodes interleaved PCM16 frames (`[L, R, ..]` for stereo), then
    /// checkpoints if one is due at `now`. After an error the writer is stopped.
    pub fn write(&mut self, interleaved: &[i16], now: Instant) -> Result<(), RecordError> {
        if self.file.is_none() {
            return Err(RecordError::Stopped(self.part_path.clone()));
        }
        let ch = usize::from(self.channels);
        let whole = interleaved.len() / ch * ch;
        if whole > 0 {
            match self.encoder.encode_interleaved(&interleaved[..whole]) {
                Ok(frames) => frames.iter().for_each(|f| self.pending.extend_from_slice(f)),
                Err(e) => {
                    let err = encoder_error(&self.part_path, e);
                    self.stop(&err);
                    return Err(err);
                }
            }
            self.frames += (whole / ch) as u64;
        }
        if self.pending.len() >= MAX_PENDING {
            self.flush_pending()?;
        }
        self.checkpoint(now)
    }

    fn stop(&mut self, err: &RecordError) {
        self.file = None;
        self.write_error = Some(err.reason());
    }

    /// Appends the pending whole frames to the file (one `write(2)` or a few).
    fn flush_pending(&mut self) -> Result<(), RecordError> {
        let Some(file) = self.file.as_mut() else {
            return Err(RecordError::Stopped(self.part_path.clone()));
        };
        if let Err(e) = file.write_all(&self.pending) {
            let err = RecordError::io("write", &self.part_path, e);
            self.stop(&err);
            return Err(err);
        }
        self.pending.clear();
        Ok(())
    }

    /// Writes the pending frames if `checkpoint_every` has passed since the last
    /// checkpoint, and `fdatasync`s if `sync_every` has. Call it on a timer too.
    pub fn checkpoint(&mut self, now: Instant) -> Result<(), RecordError> {
        if !self.created_synced {
            self.sync(true)?;
        }
        if now.saturating_duration_since(self.last_checkpoint) < self.opts.checkpoint_every {
            return Ok(());
        }
        self.flush_pending()?;
        self.last_checkpoint = now;
        self.stats.checkpoints += 1;
        if now.saturating_duration_since(self.last_sync) >= self.opts.sync_every {
            self.sync(false)?;
            self.last_sync = now;
        }
        Ok(())
    }

    fn sync(&mut self, created: bool) -> Result<(), RecordError> {
        let Some(file) = self.file.as_ref() else {
            return Err(RecordError::Stopped(self.part_path.clone()));
        };
        let t = Instant::now();
        let mut r = file.sync_data().map_err(|e| RecordError::io("sync", &self.part_path, e));
        self.stats.syncs += 1;
        self.stats.sync_time += t.elapsed();
        if created && r.is_ok() {
            r = sync_dir(self.final_path.parent().unwrap_or(Path::new(".")));
            self.created_synced = r.is_ok();
        }
        if let Err(e) = &r {
            self.stop(e);
        }
        r
    }

    /// Flushes the encoder (its delay and last partial frame, padded with
    /// silence), writes the rest, `fdatasync`, renames `.part` → `.mp3`, syncs
    /// the directory, hashes the file. After a write error the file holds the
    /// whole frames that reached the disk (cut to the last whole frame).
    pub fn finish(mut self) -> Result<SavedFile, RecordError> {
        let mut frames = self.frames;
        if self.file.is_some() {
            // The encoder holds about two frames of delay: a frame of silence
            // pushes the last recorded samples out before the final flush.
            let silence = vec![0i16; SAMPLES_PER_FRAME as usize * 2 * usize::from(self.channels)];
            let tail = self.encoder.encode_interleaved(&silence).and_then(|f| {
                f.iter().for_each(|f| self.pending.extend_from_slice(f));
                self.encoder.finish()
            });
            match tail {
                Ok(last) => self.pending.extend_from_slice(&last),
                Err(e) => self.stop(&encoder_error(&self.part_path, e)),
            }
        }
        if self.file.is_some() {
            let _ = self.flush_pending();
        }
        let file = match self.file.take() {
            Some(f) => f,
            None => {
                // Salvage: the whole frames on disk.
                let f = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(&self.part_path)
                    .map_err(|e| RecordError::io("repair", &self.part_path, e))?;
                let scan = truncate_to_frames(&f, &self.part_path)?;
                frames = frames.min(scan.samples);
                f
            }
        };
        file.sync_data().map_err(|e| RecordError::io("sync", &self.part_path, e))?;
        drop(file);
        fs::rename(&self.part_path, &self.final_path).map_err(|e| RecordError::io("rename", &self.part_path, e))?;
        sync_dir(self.final_path.parent().unwrap_or(Path::new(".")))?;
        let (size_bytes, sha256) = sha256_file(&self.final_path)?;
        Ok(SavedFile {
            path: self.final_path,
            size_bytes,
            frames,
            sample_rate_hz: self.sample_rate_hz,
            channels: self.channels,
            sha256,
            write_error: self.write_error,
        })
    }
}

/// What a scan of an MP3 stream found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Scan {
    /// Whole frames from the start of the file.
    pub frames: u64,
    /// Their samples per channel (frames × 576 or 1152).
    pub samples: u64,
    /// Bytes the whole frames take.
    pub bytes: u64,
    /// Sample rate of the first frame, Hz.
    pub sample_rate_hz: u32,
    /// 1 (mono) or 2.
    pub channels: u16,
}

/// One Layer III frame header (ISO/IEC 11172-3 §2.4.2.3, 13818-3 §2.4.2.3):
/// (frame length in bytes, samples per channel, sample rate Hz, channels).
pub fn frame_header(h: [u8; 4]) -> Option<(u32, u32, u32, u16)> {
    if h[0] != 0xFF || h[1] & 0xE0 != 0xE0 {
        return None;
    }
    let version = (h[1] >> 3) & 3; // 0 = MPEG-2.5, 2 = MPEG-2, 3 = MPEG-1
    if version == 1 || (h[1] >> 1) & 3 != 1 {
        return None; // reserved version, or not Layer III
    }
    let bitrate_idx = usize::from(h[2] >> 4);
    let rate_idx = usize::from((h[2] >> 2) & 3);
    if bitrate_idx == 0 || bitrate_idx == 15 || rate_idx == 3 {
        return None; // free format or invalid
    }
    const V1: [u32; 15] = [0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320];
    const V2: [u32; 15] = [0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160];
    const RATES: [u32; 3] = [44_100, 48_000, 32_000];
    let (kbps, rate, samples, coef) = match version {
        3 => (V1[bitrate_idx], RATES[rate_idx], 1152, 144),
        2 => (V2[bitrate_idx], RATES[rate_idx] / 2, 576, 72),
        _ => (V2[bitrate_idx], RATES[rate_idx] / 4, 576, 72),
    };
    let padding = u32::from((h[2] >> 1) & 1);
    let len = coef * kbps * 1000 / rate + padding;
    let channels = if h[3] >> 6 == 3 { 1 } else { 2 };
    Some((len, samples, rate, channels))
}

/// Walks the frames of `file` from offset 0 (an ID3v2 tag is not expected: the
/// writer writes none) and stops at the first byte that does not start a whole
/// frame. Reads at most the file's length; bounded by it.
pub fn scan(file: &File) -> io::Result<Scan> {
    let len = file.metadata()?.len();
    let mut s = Scan::default();
    let mut off = 0u64;
    while off + 4 <= len {
        let mut h = [0u8; 4];
        file.read_exact_at(&mut h, off)?;
        let Some((flen, samples, rate, channels)) = frame_header(h) else { break };
        if flen < 4 || off + u64::from(flen) > len {
            break;
        }
        if s.frames == 0 {
            s.sample_rate_hz = rate;
            s.channels = channels;
        }
        s.frames += 1;
        s.samples += u64::from(samples);
        off += u64::from(flen);
    }
    s.bytes = off;
    Ok(s)
}

fn truncate_to_frames(file: &File, path: &Path) -> Result<Scan, RecordError> {
    let s = scan(file).map_err(|e| RecordError::io("repair", path, e))?;
    file.set_len(s.bytes).map_err(|e| RecordError::io("repair", path, e))?;
    Ok(s)
}

/// Repairs one `.mp3.part` left by a crash: cut to its last whole frame,
/// `fdatasync`, renamed to `.mp3`. `Ok(None)` (and the file deleted) when it
/// holds no whole frame; [`RecordError::NotWav`] when it does not start with
/// an MP3 frame header.
pub fn repair_one(part: &Path) -> Result<Option<Repaired>, RecordError> {
    let s = part.as_os_str().to_string_lossy();
    let final_path = PathBuf::from(s.strip_suffix(super::wav::PART_SUFFIX).unwrap_or(&s));
    let file = OpenOptions::new().read(true).write(true).open(part).map_err(|e| RecordError::io("repair", part, e))?;
    let len = file.metadata().map_err(|e| RecordError::io("repair", part, e))?.len();
    let scan = truncate_to_frames(&file, part)?;
    if scan.frames == 0 {
        if len >= 4096 {
            // Not ours to delete: something else that is not an MP3 stream.
            return Err(RecordError::NotWav { path: part.to_path_buf(), reason: "no MPEG Layer III frame" });
        }
        drop(file);
        fs::remove_file(part).map_err(|e| RecordError::io("remove", part, e))?;
        return Ok(None);
    }
    file.sync_data().map_err(|e| RecordError::io("sync", part, e))?;
    drop(file);
    if final_path.exists() {
        return Err(RecordError::Exists(final_path));
    }
    fs::rename(part, &final_path).map_err(|e| RecordError::io("rename", part, e))?;
    sync_dir(final_path.parent().unwrap_or(Path::new(".")))?;
    Ok(Some(Repaired {
        part_path: part.to_path_buf(),
        final_path,
        frames: scan.samples,
        sample_rate_hz: scan.sample_rate_hz,
        channels: scan.channels,
        size_bytes: scan.bytes,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// A 440 Hz tone on the left, 1 kHz (half level) on the right.
    fn tones(rate: u32, channels: u16, frames: usize) -> Vec<i16> {
        let mut v = Vec::with_capacity(frames * usize::from(channels));
        for i in 0..frames {
            let t = i as f64 / f64::from(rate);
            v.push((8000.0 * (2.0 * std::f64::consts::PI * 440.0 * t).sin()) as i16);
            if channels == 2 {
                v.push((4000.0 * (2.0 * std::f64::consts::PI * 1000.0 * t).sin()) as i16);
            }
        }
        v
    }

    fn write_file(dir: &Path, rate: u32, channels: u16, secs: u64) -> SavedFile {
        let path = dir.join(format!("t-{rate}-{channels}.mp3"));
        let t0 = Instant::now();
        let mut w = Mp3File::create(&path, rate, channels, WriterOptions::default(), t0).unwrap();
        let per = rate as usize / 50;
        let pcm = tones(rate, channels, per * 50 * secs as usize);
        for (k, c) in pcm.chunks(per * usize::from(channels)).enumerate() {
            w.write(c, t0 + Duration::from_millis(20 * (k as u64 + 1))).unwrap();
        }
        w.finish().unwrap()
    }

    #[test]
    fn every_supported_shape_is_a_valid_constant_rate_stream() {
        let dir = tempfile::tempdir().unwrap();
        for (rate, channels) in [(8000, 1), (8000, 2), (16000, 1), (16000, 2)] {
            let saved = write_file(dir.path(), rate, channels, 3);
            assert_eq!(saved.frames, u64::from(rate) * 3);
            assert_eq!(saved.duration(), Duration::from_secs(3));
            let f = File::open(&saved.path).unwrap();
            let s = scan(&f).unwrap();
            assert_eq!(s.bytes, saved.size_bytes, "{rate} {channels}: trailing bytes");
            assert_eq!((s.sample_rate_hz, s.channels), (rate, channels));
            // Recorded + delay + flush: 3 s and up to four frames more.
            assert!(s.samples >= u64::from(rate) * 3 && s.samples <= u64::from(rate) * 3 + 4 * 576, "{s:?}");
            // Constant bit rate: bytes ≈ kbps × seconds / 8.
            let secs = s.samples as f64 / f64::from(rate);
            let kbps = s.bytes as f64 * 8.0 / secs / 1000.0;
            let want = f64::from(KBPS_PER_CHANNEL * u32::from(channels));
            assert!((kbps - want).abs() < 2.0, "{rate} {channels}: {kbps} kbit/s");
        }
    }

    #[test]
    fn a_crash_leaves_whole_frames_and_repair_cuts_a_torn_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("live.mp3");
        let t0 = Instant::now();
        let opts = WriterOptions { checkpoint_every: Duration::from_millis(500), sync_every: Duration::from_secs(2) };
        let mut w = Mp3File::create(&path, 8000, 2, opts, t0).unwrap();
        let pcm = tones(8000, 2, 8000 * 3);
        for (k, c) in pcm.chunks(320).enumerate() {
            w.write(c, t0 + Duration::from_millis(20 * (k as u64 + 1))).unwrap();
        }
        // The process dies now: the .part as it is on disk.
        let crashed = dir.path().join("crashed.mp3.part");
        fs::copy(w.part_path(), &crashed).unwrap();
        drop(w);
        let s = scan(&File::open(&crashed).unwrap()).unwrap();
        assert_eq!(s.bytes, fs::metadata(&crashed).unwrap().len(), "only whole frames on disk");
        assert!(s.samples >= 2 * 8000, "{s:?}");
        // A torn frame at the end (a power cut mid-write).
        let f = OpenOptions::new().append(true).open(&crashed).unwrap();
        f.write_all_at(&[0xFF, 0xE3, 0x48, 0xC4, 1, 2, 3], f.metadata().unwrap().len()).unwrap();
        drop(f);
        let r = repair_one(&crashed).unwrap().unwrap();
        assert_eq!(r.final_path, dir.path().join("crashed.mp3"));
        assert_eq!((r.frames, r.size_bytes, r.channels, r.sample_rate_hz), (s.samples, s.bytes, 2, 8000));
        assert_eq!(fs::metadata(&r.final_path).unwrap().len(), s.bytes);
        assert!(!crashed.exists());
        // Nothing usable: deleted; junk: left alone.
        fs::write(dir.path().join("empty.mp3.part"), b"").unwrap();
        assert!(repair_one(&dir.path().join("empty.mp3.part")).unwrap().is_none());
        fs::write(dir.path().join("junk.mp3.part"), vec![7u8; 5000]).unwrap();
        assert_eq!(repair_one(&dir.path().join("junk.mp3.part")).unwrap_err().reason(), "not_wav");
    }

    #[test]
    fn frame_headers_of_each_version() {
        // MPEG-2.5, 32 kbit/s, 8 kHz, mono: 72 × 32000 / 8000 = 288 bytes.
        assert_eq!(frame_header([0xFF, 0xE3, 0x48, 0xC4]), Some((288, 576, 8000, 1)));
        // MPEG-1, 128 kbit/s, 44.1 kHz, padded, stereo: 417 + 1 bytes.
        assert_eq!(frame_header([0xFF, 0xFB, 0x92, 0x00]), Some((418, 1152, 44_100, 2)));
        assert_eq!(frame_header([0xFF, 0xFB, 0xF0, 0x00]), None);
        assert_eq!(frame_header([0x49, 0x44, 0x33, 0x04]), None);
    }
}
