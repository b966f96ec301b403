//! The disk budget of recordings: retention, `max_disk_usage`, free-space floor.
//!
//! [`plan_sweep`] is the pure part: given the finished recordings
//! (path, modification time, size), the clock, `retention`, the budget and the
//! file system's usage, it picks what to delete: everything older than
//! `retention`, then the oldest first until the budget holds. [`sweep`] is the
//! thin file-system layer around it (lists `*.wav` under the recordings dir,
//! `statvfs(3)`, deletes). Files being written (`*.wav.part`) are never touched.
//! [`can_start`] tells whether a new recording may start (free-space floor).

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::RecordError;
use crate::config::values::DiskBudget;

/// A finished recording on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordingFile {
    /// Its path.
    pub path: PathBuf,
    /// Last modification (≈ the end of the recording).
    pub modified: SystemTime,
    /// Size in bytes.
    pub size_bytes: u64,
}

/// Use of a file system, in bytes (`statvfs(3)`), as `df(1)` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FsUsage {
    /// In use: `(f_blocks − f_bfree) × f_frsize` (df's "Used").
    pub used_bytes: u64,
    /// Free for unprivileged users: `f_bavail × f_frsize` (df's "Avail").
    pub available_bytes: u64,
}

impl FsUsage {
    /// `used + available`: what a percentage budget refers to, as df's "Use%".
    /// Blocks reserved for root (ext4's 5 %) or held back by the host are neither
    /// used by anyone nor usable by the daemon: counting them as used would make
    /// a disk look fuller than `df` says (on a volume with a large reserve, over
    /// any budget, and the sweep would delete every recording).
    pub fn usable_bytes(&self) -> u64 {
        self.used_bytes.saturating_add(self.available_bytes)
    }

    /// df's "Use%": `used / (used + available) × 100`.
    pub fn used_percent(&self) -> f64 {
        match self.usable_bytes() {
            0 => 0.0,
            n => self.used_bytes as f64 * 100.0 / n as f64,
        }
    }
}

/// Indices into `files` to delete, oldest first. Files older than `retention` at
/// `now` always go; then, with `DiskBudget::Percent(p)`, the oldest go while the
/// file system's used share ([`FsUsage::used_percent`], df's "Use%") exceeds
/// `p` %; with `DiskBudget::Bytes(b)`, while the recordings together exceed `b` bytes.
pub fn plan_sweep(
    files: &[RecordingFile],
    now: SystemTime,
    retention: Option<Duration>,
    budget: DiskBudget,
    fs: FsUsage,
) -> Vec<usize> {
    let mut order: Vec<usize> = (0..files.len()).collect();
    order.sort_by_key(|&i| (files[i].modified, files[i].path.clone()));
    let mut used = fs.used_bytes;
    // Deleting moves bytes from used to available: the sum stays.
    let usable = fs.usable_bytes();
    let mut recordings: u64 = files.iter().map(|f| f.size_bytes).sum();
    let over = |used: u64, recordings: u64| match budget {
        DiskBudget::Percent(p) => usable > 0 && (used as f64) > usable as f64 * p / 100.0,
        DiskBudget::Bytes(b) => recordings > b,
    };
    let mut delete = Vec::new();
    for i in order {
        let f = &files[i];
        let expired = retention.is_some_and(|r| now.duration_since(f.modified).is_ok_and(|age| age > r));
        if !expired && !over(used, recordings) {
            break;
        }
        used = used.saturating_sub(f.size_bytes);
        recordings = recordings.saturating_sub(f.size_bytes);
        delete.push(i);
    }
    delete
}

/// What one [`sweep`] did.
#[derive(Debug, Default)]
pub struct SweepReport {
    /// Recordings deleted.
    pub deleted: Vec<PathBuf>,
    /// Bytes freed.
    pub freed_bytes: u64,
    /// Deletions that failed (the file stays; the next sweep tries again).
    pub failed: Vec<RecordError>,
}

/// `statvfs(3)` of the file system holding `dir`.
pub fn fs_usage(dir: &Path) -> Result<FsUsage, RecordError> {
    let st = nix::sys::statvfs::statvfs(dir)
        .map_err(|e| RecordError::io("statvfs", dir, std::io::Error::from_raw_os_error(e as i32)))?;
    let frsize = st.fragment_size() as u64;
    let used_blocks = (st.blocks() as u64).saturating_sub(st.blocks_free() as u64);
    Ok(FsUsage {
        used_bytes: used_blocks.saturating_mul(frsize),
        available_bytes: (st.blocks_available() as u64).saturating_mul(frsize),
    })
}

/// Finished recordings (`*.wav`, `*.mp3`) under `dir`.
pub fn list_recordings(dir: &Path) -> Result<Vec<RecordingFile>, RecordError> {
    let mut files = Vec::new();
    let mut errors = Vec::new();
    super::wav::collect(dir, 0, &mut |p| {
        if p.extension().is_some_and(|e| e == "wav" || e == "mp3") {
            match fs::metadata(p).and_then(|m| Ok((m.modified()?, m.len()))) {
                Ok((modified, size_bytes)) => files.push(RecordingFile { path: p.to_path_buf(), modified, size_bytes }),
                Err(e) => errors.push(RecordError::io("stat", p, e)),
            }
        }
    })?;
    match errors.into_iter().next() {
        Some(e) if files.is_empty() => Err(e),
        _ => Ok(files),
    }
}

/// One sweep of the recordings under `dir` at `now`: deletes what
/// [`plan_sweep`] picks. A missing `dir` is an empty sweep.
pub fn sweep(
    dir: &Path,
    now: SystemTime,
    retention: Option<Duration>,
    budget: DiskBudget,
) -> Result<SweepReport, RecordError> {
    sweep_keeping(dir, now, retention, budget, &|_| false)
}

/// [`sweep`], never deleting a file for which `keep` is true (recordings not
/// uploaded yet to `[recording.upload]`): they are not candidates, whatever their
/// age or the budget (their bytes still count in a percentage budget's "Use%").
pub fn sweep_keeping(
    dir: &Path,
    now: SystemTime,
    retention: Option<Duration>,
    budget: DiskBudget,
    keep: &dyn Fn(&Path) -> bool,
) -> Result<SweepReport, RecordError> {
    let mut files = list_recordings(dir)?;
    files.retain(|f| !keep(&f.path));
    if files.is_empty() {
        return Ok(SweepReport::default());
    }
    let usage = fs_usage(dir)?;
    let mut report = SweepReport::default();
    for i in plan_sweep(&files, now, retention, budget, usage) {
        let f = &files[i];
        match fs::remove_file(&f.path) {
            Ok(()) => {
                report.freed_bytes += f.size_bytes;
                report.deleted.push(f.path.clone());
            }
            Err(e) => report.failed.push(RecordError::io("delete", &f.path, e)),
        }
    }
    Ok(report)
}

/// The free-space floor: below it new recordings do not start and running ones
/// stop (`recording_stop_reason: "low_disk_space"`); 64 MiB is about 35 minutes of
/// 8 kHz stereo, room for the calls in progress and for SQLite to keep working.
pub const MIN_FREE_BYTES: u64 = 64 * 1024 * 1024;

/// Below this much free space the disk is reported low (`/readyz`, `/metrics`,
/// `GET /v2/status`): four times [`MIN_FREE_BYTES`], so a technician hears of it
/// before recordings stop.
pub const LOW_DISK_BYTES: u64 = 4 * MIN_FREE_BYTES;

/// Whether a new recording may start in `dir`: at least `min_free_bytes` are
/// available to the daemon's user on its file system. Also the check that stops
/// active recordings when space runs out (`"low_disk_space"`).
pub fn can_start(dir: &Path, min_free_bytes: u64) -> Result<bool, RecordError> {
    Ok(fs_usage(dir)?.available_bytes >= min_free_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    const DAY: u64 = 86_400;

    fn file(name: &str, age_days: u64, size: u64, now: SystemTime) -> RecordingFile {
        RecordingFile {
            path: PathBuf::from(name),
            modified: now - Duration::from_secs(age_days * DAY),
            size_bytes: size,
        }
    }

    #[test]
    fn retention_deletes_only_expired_files() {
        let now = UNIX_EPOCH + Duration::from_secs(1000 * DAY);
        let files = [file("new", 1, 10, now), file("old", 40, 10, now), file("older", 90, 10, now)];
        let fs = FsUsage { used_bytes: 100, available_bytes: 900 };
        let d = plan_sweep(&files, now, Some(Duration::from_secs(30 * DAY)), DiskBudget::Percent(80.0), fs);
        assert_eq!(d, vec![2, 1]);
        assert!(plan_sweep(&files, now, None, DiskBudget::Percent(80.0), fs).is_empty());
    }

    #[test]
    fn percent_budget_deletes_oldest_until_under() {
        let now = UNIX_EPOCH + Duration::from_secs(1000 * DAY);
        let files = [file("c", 1, 100, now), file("a", 3, 100, now), file("b", 2, 100, now)];
        // 950 of 1000 used: 80% needs 150 freed → the two oldest (a, b).
        let fs = FsUsage { used_bytes: 950, available_bytes: 50 };
        assert_eq!(plan_sweep(&files, now, None, DiskBudget::Percent(80.0), fs), vec![1, 2]);
        // Not enough recordings to reach the budget: all of them go, no more.
        let fs = FsUsage { used_bytes: 1000, available_bytes: 0 };
        assert_eq!(plan_sweep(&files, now, None, DiskBudget::Percent(10.0), fs).len(), 3);
    }

    /// A volume where much of the space is neither used nor available (root's
    /// reserve, a host quota): measured on the test VM, 252 G size, 44 G used,
    /// 48 G available. df says 48 %: an 80 % budget deletes nothing (counting the
    /// reserve as used made it 81 % and deleted every recording).
    #[test]
    fn percent_budget_is_dfs_use_percent_not_counting_reserved_blocks() {
        let now = UNIX_EPOCH + Duration::from_secs(1000 * DAY);
        const G: u64 = 1 << 30;
        let files = [file("a", 3, G, now), file("b", 2, G, now)];
        let fs = FsUsage { used_bytes: 44 * G, available_bytes: 48 * G };
        assert!((fs.used_percent() - 47.8).abs() < 0.1, "{}", fs.used_percent());
        assert!(plan_sweep(&files, now, None, DiskBudget::Percent(80.0), fs).is_empty());
        // 47 of 92 usable at 50 %: 1 G more than 46 → the oldest goes, not both.
        let fs = FsUsage { used_bytes: 47 * G, available_bytes: 45 * G };
        assert_eq!(plan_sweep(&files, now, None, DiskBudget::Percent(50.0), fs), vec![0]);
    }

    #[test]
    fn byte_budget_counts_recordings_only() {
        let now = UNIX_EPOCH + Duration::from_secs(1000 * DAY);
        let files = [file("c", 1, 100, now), file("a", 3, 100, now), file("b", 2, 100, now)];
        let fs = FsUsage { used_bytes: 1000, available_bytes: 0 };
        assert_eq!(plan_sweep(&files, now, None, DiskBudget::Bytes(150), fs), vec![1, 2]);
        assert!(plan_sweep(&files, now, None, DiskBudget::Bytes(300), fs).is_empty());
    }

    #[test]
    fn sweep_on_a_real_directory_keeps_parts_and_budgets() {
        let dir = tempfile::tempdir().unwrap();
        let day = dir.path().join("2024/05/01");
        fs::create_dir_all(&day).unwrap();
        let now = SystemTime::now();
        for (name, age) in [("a.wav", 3u64), ("b.wav", 2), ("c.wav", 1)] {
            let p = day.join(name);
            fs::write(&p, vec![0u8; 1000]).unwrap();
            let f = fs::File::options().write(true).open(&p).unwrap();
            f.set_modified(now - Duration::from_secs(age * DAY)).unwrap();
        }
        fs::write(day.join("live.wav.part"), vec![0u8; 5000]).unwrap();
        let r = sweep(dir.path(), now, Some(Duration::from_secs(DAY * 5 / 2)), DiskBudget::Bytes(1500)).unwrap();
        assert_eq!(r.deleted, vec![day.join("a.wav"), day.join("b.wav")]);
        assert_eq!(r.freed_bytes, 2000);
        assert!(day.join("c.wav").exists() && day.join("live.wav.part").exists());
        assert!(sweep(&dir.path().join("none"), now, None, DiskBudget::Percent(1.0)).unwrap().deleted.is_empty());
        // A file not uploaded yet is never a candidate, however old.
        let c = day.join("c.wav");
        let r = sweep_keeping(dir.path(), now, Some(Duration::ZERO), DiskBudget::Bytes(0), &|p| p == c).unwrap();
        assert!(r.deleted.is_empty() && c.exists(), "{:?}", r.deleted);
        let usage = fs_usage(dir.path()).unwrap();
        assert!(usage.used_bytes > 0 && (0.0..=100.0).contains(&usage.used_percent()), "{usage:?}");
        assert!(can_start(dir.path(), 0).unwrap());
        assert!(!can_start(dir.path(), u64::MAX).unwrap());
    }

    /// The quota alone (no retention) on real files: the oldest by modification
    /// time go first, whatever their names or folders, until the recordings fit;
    /// a second sweep has nothing left to do.
    #[test]
    fn quota_deletes_the_oldest_real_files_first() {
        let dir = tempfile::tempdir().unwrap();
        let now = SystemTime::now();
        // (folder, name, age in hours, size): names and folders sort differently from ages.
        let files = [
            ("2024/05/02", "a.wav", 1u64, 3000u64),
            ("2024/05/01", "z.wav", 5, 1000),
            ("2024/05/02", "m.wav", 3, 2000),
            ("2024/05/01", "b.wav", 2, 1500),
            ("2024/04/30", "y.wav", 4, 500),
        ];
        for (folder, name, hours, size) in files {
            let p = dir.path().join(folder).join(name);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(&p, vec![1u8; size as usize]).unwrap();
            fs::File::options()
                .write(true)
                .open(&p)
                .unwrap()
                .set_modified(now - Duration::from_secs(hours * 3600))
                .unwrap();
        }
        // 8000 bytes of recordings, 4600 allowed: z (5 h), y (4 h), m (3 h) go → 4500.
        let r = sweep(dir.path(), now, None, DiskBudget::Bytes(4600)).unwrap();
        let gone = |f: &str| dir.path().join(f);
        assert_eq!(r.deleted, vec![gone("2024/05/01/z.wav"), gone("2024/04/30/y.wav"), gone("2024/05/02/m.wav")]);
        assert_eq!(r.freed_bytes, 3500);
        assert!(r.failed.is_empty());
        let mut left: Vec<PathBuf> = list_recordings(dir.path()).unwrap().into_iter().map(|f| f.path).collect();
        left.sort();
        assert_eq!(left, vec![gone("2024/05/01/b.wav"), gone("2024/05/02/a.wav")]);
        assert!(sweep(dir.path(), now, None, DiskBudget::Bytes(4600)).unwrap().deleted.is_empty());
        // A percentage the file system already exceeds: every recording goes, oldest first.
        let r = sweep(dir.path(), now, None, DiskBudget::Percent(0.000_001)).unwrap();
        assert_eq!(r.deleted, vec![gone("2024/05/01/b.wav"), gone("2024/05/02/a.wav")]);
    }
}
