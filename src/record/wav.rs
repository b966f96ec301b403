//! The crash-safe WAV writer and the startup repair pass.
//!
//! A recording is written to `<name>.wav.part` as a canonical 44-byte-header PCM16
//! WAV file (RIFF/WAVE, `fmt ` chunk with `WAVE_FORMAT_PCM`, then `data`; Microsoft
//! "Multimedia Programming Interface and Data Specifications 1.0", 1991, and
//! RFC 2361). The format is produced by `hound`; hound's `WavWriter::flush()` is
//! what keeps the file valid while it grows: it pushes the buffered samples to the
//! kernel and rewrites the RIFF and `data` sizes in place, so a `.part` file is a
//! playable WAV up to its last checkpoint even if the process dies (`kill -9`).
//! Checkpoints happen at least every [`WriterOptions::checkpoint_every`] (500 ms);
//! `fdatasync` (what survives a power cut) every [`WriterOptions::sync_every`].
//! With the timeline's 100 ms output lag and the recorder's ≤ 100 ms tick, a
//! `kill -9` loses at most ~0.7 s: everything up to one second before it is on disk.
//!
//! [`WavFile::finish`] writes the final header, syncs, renames `.part` → `.wav`
//! atomically (rename(2)), syncs the directory, and hashes the result (SHA-256 of
//! the whole file, read back once: the header is only final at the end).
//!
//! [`repair`] runs at startup: every `*.wav.part` left by a crash gets its RIFF
//! and `data` sizes set from the file length (truncated to whole frames) and is
//! renamed to `.wav`; the caller reports the list.
//!
//! Errors (disk full, permission denied, read-only file system) are returned as
//! [`RecordError`]; after the first write error the writer takes no more audio
//! and [`WavFile::finish`] salvages what reached the disk. The operations here
//! block (write, fdatasync, rename): run them off the async reactor.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::RecordError;

/// Suffix of a recording being written.
pub const PART_SUFFIX: &str = ".part";

/// Bytes buffered in memory per recording before a `write(2)`: one second of
/// 8 kHz stereo PCM16 (32 000 B/s) fits, so a checkpoint is usually one write.
const BUFFER_BYTES: usize = 32 * 1024;

/// Largest sane header scan: chunks before `data` (hound writes `fmt ` only).
const MAX_CHUNKS: usize = 16;

/// How often the writer makes its file durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriterOptions {
    /// Push buffered audio to the kernel and rewrite the header sizes at least this
    /// often: bounds what `kill -9` loses. Default 500 ms, so that with the
    /// timeline's [`super::timeline::LATENCY`] (100 ms) and a tick every ≤ 100 ms
    /// everything older than one second is in the file.
    pub checkpoint_every: Duration,
    /// `fdatasync` at most this often: bounds what a power cut loses, at the cost
    /// of SD-card writes. Default 2 s (see docs/benchmarks.md, `## Recording`).
    pub sync_every: Duration,
}

impl Default for WriterOptions {
    fn default() -> Self {
        Self { checkpoint_every: Duration::from_millis(500), sync_every: Duration::from_secs(2) }
    }
}

/// A finished recording file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SavedFile {
    /// The final `.wav` path.
    pub path: PathBuf,
    /// File size in bytes, header included.
    pub size_bytes: u64,
    /// Audio frames (samples per channel).
    pub frames: u64,
    /// Sample rate in Hz.
    pub sample_rate_hz: u32,
    /// 1 (mono mix) or 2 (stereo).
    pub channels: u16,
    /// SHA-256 of the whole file, lowercase hex.
    pub sha256: String,
    /// Set when audio was lost to a write error (disk full, ...): the file holds
    /// what reached the disk before it. The reason, as [`RecordError::reason`].
    pub write_error: Option<&'static str>,
}

impl SavedFile {
    /// `frames / sample_rate_hz`.
    pub fn duration(&self) -> Duration {
        frames_duration(self.frames, self.sample_rate_hz)
    }
}

fn frames_duration(frames: u64, rate_hz: u32) -> Duration {
    Duration::from_nanos((u128::from(frames) * 1_000_000_000 / u128::from(rate_hz.max(1))) as u64)
}

/// Counters of one writer, for the benchmark and metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct WriterStats {
    /// Header checkpoints (`hound` flush) done.
    pub checkpoints: u64,
    /// `fdatasync` calls done.
    pub syncs: u64,
    /// Wall time spent in `fdatasync`.
    pub sync_time: Duration,
}

/// `<final>.part`.
pub fn part_path(final_path: &Path) -> PathBuf {
    let mut s = final_path.as_os_str().to_owned();
    s.push(PART_SUFFIX);
    PathBuf::from(s)
}

/// One recording file being written; see the module documentation.
pub struct WavFile {
    final_path: PathBuf,
    part_path: PathBuf,
    /// `None` once a write failed: no more audio goes in.
    wav: Option<hound::WavWriter<BufWriter<File>>>,
    /// A second descriptor of the same open file, for `fdatasync` (hound keeps the first).
    sync_fd: File,
    sample_rate_hz: u32,
    channels: u16,
    frames: u64,
    opts: WriterOptions,
    last_checkpoint: Instant,
    last_sync: Instant,
    /// The new file and its directory entry were synced (first checkpoint).
    created_synced: bool,
    write_error: Option<&'static str>,
    stats: WriterStats,
}

impl std::fmt::Debug for WavFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WavFile").field("part_path", &self.part_path).field("frames", &self.frames).finish()
    }
}

fn hound_err(op: &'static str, path: &Path, e: hound::Error) -> RecordError {
    match e {
        hound::Error::IoError(e) => RecordError::io(op, path, e),
        other => RecordError::io(op, path, io::Error::other(other.to_string())),
    }
}

/// fsync(2) on a directory, so a rename or a new entry in it survives a power cut.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), RecordError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(|e| RecordError::io("sync directory", dir, e))
}

impl WavFile {
    /// Creates `<final_path>.part` (and missing parent directories) holding an
    /// empty PCM16 WAV at `sample_rate_hz` Hz with `channels` (1 or 2) channels;
    /// the header is written (to the kernel) when this returns. No `fsync` here,
    /// so a call can start recording without waiting for the disk: the first
    /// [`Self::checkpoint`] (first write or tick, on the writer's thread) syncs
    /// the file and its directory entry. `now` starts the checkpoint clock. Fails
    /// with [`RecordError::Exists`] if the final file or the `.part` already exists.
    pub fn create(
        final_path: &Path,
        sample_rate_hz: u32,
        channels: u16,
        opts: WriterOptions,
        now: Instant,
    ) -> Result<Self, RecordError> {
        let part = part_path(final_path);
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
        let sync_fd = file.try_clone().map_err(|e| RecordError::io("create", &part, e))?;
        let spec = hound::WavSpec {
            channels,
            sample_rate: sample_rate_hz,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let mut wav = hound::WavWriter::new(BufWriter::with_capacity(BUFFER_BYTES, file), spec)
            .map_err(|e| hound_err("create", &part, e))?;
        wav.flush().map_err(|e| hound_err("create", &part, e))?;
        Ok(Self {
            final_path: final_path.to_path_buf(),
            part_path: part,
            wav: Some(wav),
            sync_fd,
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

    /// The `.wav.part` path being written.
    pub fn part_path(&self) -> &Path {
        &self.part_path
    }

    /// The `.wav` path the file gets on `finish`.
    pub fn final_path(&self) -> &Path {
        &self.final_path
    }

    /// Frames written so far.
    pub fn frames(&self) -> u64 {
        self.frames
    }

    /// Checkpoint and sync counters.
    pub fn stats(&self) -> WriterStats {
        self.stats
    }

    /// Appends interleaved PCM16 frames (`[L, R, ..]` for stereo; a whole number of
    /// frames), then checkpoints if one is due at `now`. After an error the writer
    /// is stopped: later calls return [`RecordError::Stopped`] without I/O.
    pub fn write(&mut self, interleaved: &[i16], now: Instant) -> Result<(), RecordError> {
        let Some(wav) = self.wav.as_mut() else {
            return Err(RecordError::Stopped(self.part_path.clone()));
        };
        let ch = usize::from(self.channels.max(1));
        let whole = interleaved.len() / ch * ch;
        // hound counts data bytes in a u32; chunk so each batch stays small.
        for chunk in interleaved[..whole].chunks(16_384 / ch * ch) {
            let mut w = wav.get_i16_writer(chunk.len() as u32);
            for &s in chunk {
                w.write_sample(s);
            }
            if let Err(e) = w.flush() {
                return Err(self.fail("write", e));
            }
        }
        self.frames += (whole / ch) as u64;
        self.checkpoint(now)
    }

    /// Checkpoints (header sizes + buffered audio to the kernel) if
    /// `checkpoint_every` has passed since the last one, and `fdatasync`s if
    /// `sync_every` has. Call it on a timer too, so a silent stretch is durable.
    pub fn checkpoint(&mut self, now: Instant) -> Result<(), RecordError> {
        if !self.created_synced {
            self.sync_created()?;
        }
        if now.saturating_duration_since(self.last_checkpoint) < self.opts.checkpoint_every {
            return Ok(());
        }
        let Some(wav) = self.wav.as_mut() else {
            return Err(RecordError::Stopped(self.part_path.clone()));
        };
        if let Err(e) = wav.flush() {
            return Err(self.fail("write", e));
        }
        self.last_checkpoint = now;
        self.stats.checkpoints += 1;
        if now.saturating_duration_since(self.last_sync) >= self.opts.sync_every {
            let t = Instant::now();
            if let Err(e) = self.sync_fd.sync_data() {
                self.wav = None;
                let err = RecordError::io("sync", &self.part_path, e);
                self.write_error = Some(err.reason());
                return Err(err);
            }
            self.stats.sync_time += t.elapsed();
            self.stats.syncs += 1;
            self.last_sync = now;
        }
        Ok(())
    }

    /// The deferred part of `create`: the header and the directory entry made durable.
    fn sync_created(&mut self) -> Result<(), RecordError> {
        let t = Instant::now();
        let dir = self.final_path.parent().unwrap_or(Path::new("."));
        if let Err(e) = self
            .sync_fd
            .sync_data()
            .map_err(|e| RecordError::io("sync", &self.part_path, e))
            .and_then(|()| sync_dir(dir))
        {
            self.wav = None;
            self.write_error = Some(e.reason());
            return Err(e);
        }
        self.created_synced = true;
        self.stats.sync_time += t.elapsed();
        self.stats.syncs += 1;
        Ok(())
    }

    fn fail(&mut self, op: &'static str, e: hound::Error) -> RecordError {
        // Dropping hound's writer tries a last header update; errors are ignored
        // there, and `finish` repairs the sizes from the file length anyway.
        self.wav = None;
        let err = hound_err(op, &self.part_path, e);
        self.write_error = Some(err.reason());
        err
    }

    /// Final header, `fdatasync`, atomic rename to the `.wav` name, directory
    /// sync, SHA-256. After a write error the header is set from what reached the
    /// disk instead ([`SavedFile::write_error`] says so). On error the `.part`
    /// file stays for [`repair`] at the next start.
    pub fn finish(mut self) -> Result<SavedFile, RecordError> {
        let finalized = match self.wav.take() {
            Some(wav) => wav.finalize().map_err(|e| hound_err("write", &self.part_path, e)),
            None => Err(RecordError::Stopped(self.part_path.clone())),
        };
        let frames = match finalized {
            Ok(()) => self.frames,
            Err(e) => {
                if self.write_error.is_none() {
                    self.write_error = Some(e.reason());
                }
                fix_header(&self.sync_fd, &self.part_path)?.frames
            }
        };
        self.sync_fd.sync_data().map_err(|e| RecordError::io("sync", &self.part_path, e))?;
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

/// Size and SHA-256 (lowercase hex) of a file, read in 64 KiB blocks.
pub fn sha256_file(path: &Path) -> Result<(u64, String), RecordError> {
    let mut f = File::open(path).map_err(|e| RecordError::io("read", path, e))?;
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    let mut buf = vec![0u8; 64 * 1024];
    let mut size = 0u64;
    loop {
        let n = f.read(&mut buf).map_err(|e| RecordError::io("read", path, e))?;
        if n == 0 {
            break;
        }
        size += n as u64;
        ctx.update(&buf[..n]);
    }
    let hex = ctx.finish().as_ref().iter().map(|b| format!("{b:02x}")).collect();
    Ok((size, hex))
}

/// What a header fix found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Fixed {
    frames: u64,
    sample_rate_hz: u32,
    channels: u16,
}

/// Reads the RIFF/WAVE header of `file`, truncates the data to whole frames, and
/// sets the RIFF size (file length − 8) and the `data` size from the file length.
/// Writes only inside the existing header: works on a full disk.
fn fix_header(file: &File, path: &Path) -> Result<Fixed, RecordError> {
    let not_wav = |reason| RecordError::NotWav { path: path.to_path_buf(), reason };
    let io_err = |e: io::Error| RecordError::io("repair", path, e);
    let len = file.metadata().map_err(io_err)?.len();
    let mut head = [0u8; 12];
    if len < 12 || file.read_exact_at(&mut head, 0).is_err() {
        return Err(not_wav("shorter than a RIFF header"));
    }
    if &head[0..4] != b"RIFF" || &head[8..12] != b"WAVE" {
        return Err(not_wav("no RIFF/WAVE signature"));
    }
    let mut off = 12u64;
    let mut fmt: Option<(u16, u32, u16)> = None;
    for _ in 0..MAX_CHUNKS {
        let mut ch = [0u8; 8];
        file.read_exact_at(&mut ch, off).map_err(|_| not_wav("no data chunk"))?;
        let size = u64::from(u32::from_le_bytes([ch[4], ch[5], ch[6], ch[7]]));
        match &ch[0..4] {
            b"fmt " => {
                let mut f = [0u8; 16];
                file.read_exact_at(&mut f, off + 8).map_err(|_| not_wav("short fmt chunk"))?;
                let channels = u16::from_le_bytes([f[2], f[3]]);
                let rate = u32::from_le_bytes([f[4], f[5], f[6], f[7]]);
                let block_align = u16::from_le_bytes([f[12], f[13]]);
                if channels == 0 || block_align == 0 {
                    return Err(not_wav("fmt chunk with zero channels"));
                }
                fmt = Some((channels, rate, block_align));
            }
            b"data" => {
                let (channels, sample_rate_hz, block_align) = fmt.ok_or(not_wav("data before fmt"))?;
                let data_start = off + 8;
                let avail = len.saturating_sub(data_start);
                let max = u64::from(u32::MAX) - data_start;
                let data_len = avail.min(max) / u64::from(block_align) * u64::from(block_align);
                file.set_len(data_start + data_len).map_err(io_err)?;
                let riff = (data_start + data_len - 8) as u32;
                file.write_all_at(&riff.to_le_bytes(), 4).map_err(io_err)?;
                file.write_all_at(&(data_len as u32).to_le_bytes(), off + 4).map_err(io_err)?;
                return Ok(Fixed { frames: data_len / u64::from(block_align), sample_rate_hz, channels });
            }
            _ => {}
        }
        off += 8 + size + (size & 1);
    }
    Err(not_wav("no data chunk"))
}

/// One leftover `.wav.part` handled by [`repair`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Repaired {
    /// The `.wav.part` found.
    pub part_path: PathBuf,
    /// The `.wav` it became.
    pub final_path: PathBuf,
    /// Audio frames kept.
    pub frames: u64,
    /// Sample rate in Hz (from its header).
    pub sample_rate_hz: u32,
    /// Channels (from its header).
    pub channels: u16,
    /// Size of the repaired file in bytes.
    pub size_bytes: u64,
}

impl Repaired {
    /// Duration of the audio kept.
    pub fn duration(&self) -> Duration {
        frames_duration(self.frames, self.sample_rate_hz)
    }
}

/// What [`repair`] did.
#[derive(Debug, Default)]
pub struct RepairReport {
    /// Files finalized as `.wav` (or `.mp3`).
    pub repaired: Vec<Repaired>,
    /// `.wav.part` files shorter than a WAV header (a crash before the first
    /// write reached the disk): no audio, deleted.
    pub removed_empty: Vec<PathBuf>,
    /// Files that could not be repaired; they stay in place.
    pub failed: Vec<RecordError>,
}

/// Deepest directory level under the recordings dir that is searched
/// (`{yyyy}/{mm}/{dd}` is 3).
const MAX_DEPTH: usize = 8;

/// Repairs one leftover `.part` of some format: `Ok(None)` when it held no
/// audio (deleted), the finalized file otherwise.
pub type RepairOne = fn(&Path) -> Result<Option<Repaired>, RecordError>;

/// Startup pass over `dir` (recursively, [`MAX_DEPTH`] levels): every
/// `*.wav.part` gets its RIFF/`data` sizes from its length (whole frames), is
/// `fdatasync`ed and renamed to `.wav`. Only run it while no recording is being
/// written (before calls are accepted). A missing `dir` is an empty report.
/// `record::repair` does the same for every format.
pub fn repair(dir: &Path) -> Result<RepairReport, RecordError> {
    repair_kinds(dir, &[(".wav.part", repair_one)])
}

/// [`repair`] for the `.part` files whose names end in each suffix of `kinds`,
/// with that suffix's repair function.
pub fn repair_kinds(dir: &Path, kinds: &[(&str, RepairOne)]) -> Result<RepairReport, RecordError> {
    let mut report = RepairReport::default();
    let mut parts = Vec::new();
    collect(dir, 0, &mut |p| {
        let name = p.as_os_str().to_string_lossy();
        if let Some((_, f)) = kinds.iter().find(|(suffix, _)| name.ends_with(suffix)) {
            parts.push((p.to_path_buf(), *f));
        }
    })?;
    for (part, repair_one) in parts {
        match repair_one(&part) {
            Ok(Some(r)) => report.repaired.push(r),
            Ok(None) => report.removed_empty.push(part),
            Err(e) => report.failed.push(e),
        }
    }
    Ok(report)
}

/// Calls `f` for every regular file under `dir`, depth-first, up to [`MAX_DEPTH`].
pub(crate) fn collect(dir: &Path, depth: usize, f: &mut dyn FnMut(&Path)) -> Result<(), RecordError> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound && depth == 0 => return Ok(()),
        Err(e) => return Err(RecordError::io("list", dir, e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| RecordError::io("list", dir, e))?;
        let ty = entry.file_type().map_err(|e| RecordError::io("list", entry.path(), e))?;
        if ty.is_dir() && depth < MAX_DEPTH {
            collect(&entry.path(), depth + 1, f)?;
        } else if ty.is_file() {
            f(&entry.path());
        }
    }
    Ok(())
}

/// Repairs one `.wav.part` (see [`repair`]).
pub fn repair_one(part: &Path) -> Result<Option<Repaired>, RecordError> {
    let s = part.as_os_str().to_string_lossy();
    let final_path = PathBuf::from(s.strip_suffix(PART_SUFFIX).unwrap_or(&s));
    let file = OpenOptions::new().read(true).write(true).open(part).map_err(|e| RecordError::io("repair", part, e))?;
    let fixed = match fix_header(&file, part) {
        Ok(f) => f,
        Err(RecordError::NotWav { .. }) if file.metadata().map(|m| m.len() < 44).unwrap_or(false) => {
            drop(file);
            fs::remove_file(part).map_err(|e| RecordError::io("remove", part, e))?;
            return Ok(None);
        }
        Err(e) => return Err(e),
    };
    file.sync_data().map_err(|e| RecordError::io("sync", part, e))?;
    let size_bytes = file.metadata().map_err(|e| RecordError::io("repair", part, e))?.len();
    drop(file);
    if final_path.exists() {
        return Err(RecordError::Exists(final_path));
    }
    fs::rename(part, &final_path).map_err(|e| RecordError::io("rename", part, e))?;
    sync_dir(final_path.parent().unwrap_or(Path::new(".")))?;
    Ok(Some(Repaired {
        part_path: part.to_path_buf(),
        final_path,
        frames: fixed.frames,
        sample_rate_hz: fixed.sample_rate_hz,
        channels: fixed.channels,
        size_bytes,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(frames: usize, offset: usize) -> Vec<i16> {
        (0..frames).flat_map(|i| [((i + offset) % 1000) as i16, -(((i + offset) % 1000) as i16)]).collect()
    }

    #[test]
    fn finished_file_is_a_valid_stereo_wav_with_matching_hash() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("2024/05/01/call.wav");
        let t0 = Instant::now();
        let mut w = WavFile::create(&path, 8000, 2, WriterOptions::default(), t0).unwrap();
        assert!(w.part_path().exists());
        for k in 0..150usize {
            w.write(&tone(160, k * 160), t0 + Duration::from_millis(20 * (k as u64 + 1))).unwrap();
        }
        assert_eq!(w.stats().checkpoints, 6);
        // The creation sync (first write) and one every 2 s.
        assert_eq!(w.stats().syncs, 2);
        let saved = w.finish().unwrap();
        assert_eq!(saved.path, path);
        assert!(!part_path(&path).exists());
        assert_eq!(saved.frames, 24_000);
        assert_eq!(saved.duration(), Duration::from_secs(3));
        assert_eq!(saved.size_bytes, 44 + 24_000 * 4);
        assert_eq!(saved.write_error, None);
        let bytes = fs::read(&path).unwrap();
        let digest = ring::digest::digest(&ring::digest::SHA256, &bytes);
        let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(saved.sha256, hex);
        let mut r = hound::WavReader::open(&path).unwrap();
        assert_eq!(r.spec().channels, 2);
        assert_eq!(r.spec().sample_rate, 8000);
        assert_eq!(r.duration(), 24_000);
        let got: Vec<i16> = r.samples::<i16>().map(|s| s.unwrap()).collect();
        assert_eq!(got, tone(24_000, 0));
    }

    #[test]
    fn power_cut_mid_write_is_repaired_to_a_playable_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("live.wav");
        let t0 = Instant::now();
        let opts = WriterOptions { checkpoint_every: Duration::from_secs(1), sync_every: Duration::from_secs(2) };
        let mut w = WavFile::create(&path, 8000, 2, opts, t0).unwrap();
        // 2.9 s written; the last checkpoint was at 2 s, 0.9 s is still in the buffer.
        for k in 0..145usize {
            w.write(&tone(160, k * 160), t0 + Duration::from_millis(20 * (k as u64 + 1))).unwrap();
        }
        // The power goes out now: take the .part exactly as it is on disk, while
        // the writer is still open (its buffer and a final header never arrive).
        let crash_dir = dir.path().join("after-crash");
        fs::create_dir(&crash_dir).unwrap();
        let crashed = crash_dir.join("live.wav.part");
        fs::copy(w.part_path(), &crashed).unwrap();
        drop(w);
        // The .part as found is already a playable WAV holding the 2 s checkpointed.
        assert_eq!(hound::WavReader::open(&crashed).unwrap().duration(), 16_000);
        // A torn last frame (a sample half written) must be cut.
        let f = OpenOptions::new().append(true).open(&crashed).unwrap();
        f.write_all_at(&[1, 2, 3], f.metadata().unwrap().len()).unwrap();
        drop(f);

        let report = repair(dir.path()).unwrap();
        assert_eq!(report.repaired.len(), 2, "{report:?}");
        let r = report.repaired.iter().find(|r| r.part_path == crashed).unwrap();
        assert_eq!(r.final_path, crash_dir.join("live.wav"));
        assert!(r.duration() >= Duration::from_secs(2));
        assert_eq!(r.channels, 2);
        assert!(!crashed.exists());
        let mut reader = hound::WavReader::open(&r.final_path).unwrap();
        assert_eq!(u64::from(reader.duration()), r.frames);
        let got: Vec<i16> = reader.samples::<i16>().map(|s| s.unwrap()).collect();
        assert!(got.len() >= 2 * 16_000);
        assert_eq!(got, tone(got.len() / 2, 0));
        assert_eq!(r.size_bytes, 44 + got.len() as u64 * 2);
    }

    #[test]
    fn repair_handles_headerless_and_nested_leftovers() {
        let dir = tempfile::tempdir().unwrap();
        let deep = dir.path().join("2024/01/02");
        fs::create_dir_all(&deep).unwrap();
        fs::write(deep.join("empty.wav.part"), b"RIFF").unwrap();
        fs::write(deep.join("junk.wav.part"), vec![7u8; 100]).unwrap();
        fs::write(deep.join("done.wav"), b"not touched").unwrap();
        let report = repair(dir.path()).unwrap();
        assert_eq!(report.removed_empty, vec![deep.join("empty.wav.part")]);
        assert!(report.repaired.is_empty());
        assert_eq!(report.failed.len(), 1);
        assert_eq!(report.failed[0].reason(), "not_wav");
        assert!(deep.join("junk.wav.part").exists());
        assert_eq!(fs::read(deep.join("done.wav")).unwrap(), b"not touched");
        assert!(repair(&dir.path().join("missing")).unwrap().repaired.is_empty());
    }

    #[test]
    fn existing_recordings_are_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.wav");
        fs::write(&path, b"x").unwrap();
        let e = WavFile::create(&path, 8000, 2, WriterOptions::default(), Instant::now()).unwrap_err();
        assert!(matches!(e, RecordError::Exists(_)));
        assert_eq!(fs::read(&path).unwrap(), b"x");
    }

    #[test]
    fn file_system_errors_are_typed_with_actionable_reasons() {
        let dir = tempfile::tempdir().unwrap();
        let blocker = dir.path().join("not-a-dir");
        fs::write(&blocker, b"x").unwrap();
        let e = WavFile::create(&blocker.join("a.wav"), 8000, 2, WriterOptions::default(), Instant::now()).unwrap_err();
        assert!(matches!(e, RecordError::Io { op: "create directory", .. }), "{e}");
        for (errno, reason) in [
            (nix::libc::ENOSPC, "disk_full"),
            (nix::libc::EDQUOT, "disk_full"),
            (nix::libc::EACCES, "permission_denied"),
            (nix::libc::EROFS, "read_only_file_system"),
            (nix::libc::EIO, "io_error"),
        ] {
            let e = RecordError::io("write", "/r/a.wav.part", io::Error::from_raw_os_error(errno));
            assert_eq!(e.reason(), reason);
        }
    }

    #[test]
    fn disk_full_stops_the_writer_and_finish_salvages_the_file() {
        // /dev/full: every write fails with ENOSPC. Build a WavFile around it by hand.
        let Ok(full) = OpenOptions::new().read(true).write(true).open("/dev/full") else {
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("full.wav");
        let t0 = Instant::now();
        let mut w = WavFile::create(&path, 8000, 2, WriterOptions::default(), t0).unwrap();
        w.write(&tone(8000, 0), t0 + Duration::from_secs(1)).unwrap();
        let spec = w.wav.as_ref().unwrap().spec();
        // hound's header stays in the buffer; the next write spills it to /dev/full.
        w.wav = Some(hound::WavWriter::new(BufWriter::with_capacity(BUFFER_BYTES, full), spec).unwrap());
        let e = w.write(&tone(8000, 0), t0 + Duration::from_secs(2)).unwrap_err();
        assert_eq!(e.reason(), "disk_full");
        assert!(matches!(w.write(&tone(10, 0), t0 + Duration::from_secs(3)), Err(RecordError::Stopped(_))));
        let saved = w.finish().unwrap();
        assert_eq!(saved.write_error, Some("disk_full"));
        assert_eq!(saved.frames, 8000);
        assert_eq!(hound::WavReader::open(&saved.path).unwrap().duration(), 8000);
    }
}
