//! Call recording: dual-channel (or mono-mix) WAV or MP3 files that survive `kill -9`
//! and power cuts, their file names, their `call.recording.saved` payload, and
//! the disk budget (retention, `max_disk_usage`, free-space floor).
//!
//! - [`timeline`]: sans-IO alignment of the two channels to the call's wall clock.
//! - [`wav`]: the crash-safe writer (`<name>.wav.part` → `<name>.wav`) and the
//!   startup [`repair`] pass.
//! - [`mp3`]: the crash-safe MP3 writer (whole frames only) and its repair.
//! - [`recorder`]: one recording span = timeline + writer, the object a call owns.
//! - [`path`]: the file-name template.
//! - [`event`]: the `call.recording.saved` payload fields.
//! - [`retention`]: the sweep that deletes old recordings and keeps the disk budget.
//! - [`recovered`]: the `call.recording.saved` events of files repaired at startup.
//! - [`upload`]: the uploader of `[recording.upload]` (durable queue in the store),
//!   over [`s3`], the S3 requests (SigV4-signed, multipart, presigned GET URLs).
//!
//! This module does not know about the call code or SIP: the call/media tasks feed
//! it PCM16 and `Instant`s and run its blocking file operations where they see fit.
//! Only [`recovered`] reads the store (the call records of a repaired file) and
//! hands its events to an [`recovered::EventSink`] (the daemon's event bus).

pub mod event;
pub mod mp3;
pub mod path;
pub mod recorder;
pub mod recovered;
pub mod retention;
pub mod s3;
pub mod timeline;
pub mod upload;
pub mod wav;

use std::io;
use std::path::PathBuf;

pub use event::{SavedRecording, recording_saved_fields};
pub use path::{DEFAULT_TEMPLATE, recording_path};
pub use recorder::Recorder;
pub use retention::{SweepReport, can_start, sweep, sweep_keeping};
pub use timeline::{Timeline, TimelineStats};
pub use wav::{RepairReport, Repaired, SavedFile, WavFile, WriterOptions};

/// Startup pass over `dir` (recursively): every `*.wav.part` left by a crash is
/// repaired to a playable `.wav` ([`wav::repair_one`]), every `*.mp3.part` cut
/// to its last whole frame and renamed `.mp3` ([`mp3::repair_one`]); `.part`
/// files with no audio are deleted. Only run it before calls are accepted.
pub fn repair(dir: &std::path::Path) -> Result<RepairReport, RecordError> {
    wav::repair_kinds(dir, &[(".wav.part", wav::repair_one), (".mp3.part", mp3::repair_one)])
}

/// Why a recording operation failed, with the file it concerns.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// A file-system operation failed (disk full, permission denied, read-only, ...).
    #[error("recording {op} {path}: {source}")]
    Io {
        /// What was being done: "create", "write", "sync", "rename", ...
        op: &'static str,
        /// The file or directory concerned.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// The target file already exists; recordings are never overwritten.
    #[error("recording {0} already exists")]
    Exists(PathBuf),
    /// A `.wav.part` file without a readable RIFF/WAVE header.
    #[error("recording {path}: not a WAV file ({reason})")]
    NotWav {
        /// The file.
        path: PathBuf,
        /// What is wrong with its header.
        reason: &'static str,
    },
    /// The path template is invalid or would leave the recordings directory.
    #[error("recording path template {template:?}: {reason}")]
    Template {
        /// The template as configured.
        template: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The writer failed earlier and takes no more audio; finish it.
    #[error("recording {0} stopped after an earlier error")]
    Stopped(PathBuf),
}

impl RecordError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Self::Io { op, path: path.into(), source }
    }

    /// A short machine-readable reason for events and logs: `"disk_full"`,
    /// `"permission_denied"`, `"read_only_file_system"`, `"exists"` or `"io_error"`.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Io { source, .. } => match source.raw_os_error() {
                Some(nix::libc::ENOSPC) | Some(nix::libc::EDQUOT) => "disk_full",
                Some(nix::libc::EACCES) | Some(nix::libc::EPERM) => "permission_denied",
                Some(nix::libc::EROFS) => "read_only_file_system",
                _ => "io_error",
            },
            Self::Exists(_) => "exists",
            Self::NotWav { .. } => "not_wav",
            Self::Template { .. } => "invalid_template",
            Self::Stopped(_) => "stopped",
        }
    }
}
