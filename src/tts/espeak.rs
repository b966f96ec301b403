//! The local engine: `espeak-ng --stdout -v <voice> --stdin` as a child process
//! (Debian's `espeak-ng` package, runs on a Raspberry Pi). The text goes in on
//! stdin (never on the command line, where `ps` shows it); a streamed 16-bit WAV
//! at 22050 Hz comes out on stdout.
//!
//! Bounded: at most [`MAX_OUTPUT_BYTES`] of output are read (a longer answer is
//! an error and the child is killed), and the whole run is limited by `[tts]
//! timeout`; either way the child is killed and reaped. Runs on a blocking
//! thread, never on a call's loop or a media thread.

use std::io::{Read, Write};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::TtsError;

/// Largest WAV read from espeak-ng: 16 MiB, about 6 minutes at 22050 Hz (a
/// 3000-character payload speaks in about 3).
pub const MAX_OUTPUT_BYTES: u64 = 16 * 1024 * 1024;

/// The WAV bytes espeak-ng makes of `text` with `voice`.
///
/// # Errors
/// The program could not start, failed, timed out or said too much.
pub async fn synthesize(program: &str, voice: &str, text: &str, timeout: Duration) -> Result<Vec<u8>, TtsError> {
    let mut child = Command::new(program)
        .args(["--stdout", "-v", voice, "--stdin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| TtsError::Engine(format!("cannot run {program:?}: {e}")))?;
    let (stdin, stdout, pid) = (child.stdin.take(), child.stdout.take(), child.id());
    let child = Arc::new(Mutex::new(child));
    let text = text.to_string();
    let reader = Arc::clone(&child);
    let run = tokio::task::spawn_blocking(move || -> Result<Vec<u8>, TtsError> {
        // At most 3000 characters: within the pipe's buffer, so this write
        // never waits on the child reading.
        if let Some(mut stdin) = stdin {
            stdin.write_all(text.as_bytes()).map_err(|e| TtsError::Engine(format!("espeak-ng stdin: {e}")))?;
        }
        let mut out = Vec::new();
        if let Some(stdout) = stdout {
            stdout
                .take(MAX_OUTPUT_BYTES + 1)
                .read_to_end(&mut out)
                .map_err(|e| TtsError::Engine(format!("espeak-ng stdout: {e}")))?;
        }
        let mut child = reader.lock().unwrap_or_else(|e| e.into_inner());
        if out.len() as u64 > MAX_OUTPUT_BYTES {
            let _ = child.kill();
            let _ = child.wait();
            return Err(TtsError::Engine(format!("espeak-ng wrote more than {MAX_OUTPUT_BYTES} bytes")));
        }
        let status = child.wait().map_err(|e| TtsError::Engine(format!("espeak-ng: {e}")))?;
        if !status.success() {
            return Err(TtsError::Engine(format!("espeak-ng exited with {status}")));
        }
        Ok(out)
    });
    tokio::pin!(run);
    match tokio::time::timeout(timeout, &mut run).await {
        Ok(joined) => joined.map_err(|e| TtsError::Engine(e.to_string()))?,
        Err(_) => {
            kill(&child, pid);
            // Killed: its stdout closes, the reader returns and reaps it.
            let _ = run.await;
            Err(TtsError::Timeout(timeout))
        }
    }
}

/// Kills the child unless it has been reaped already (`Child::kill` on a reaped
/// child does nothing: the pid is never signalled after reuse). When the reader
/// holds the child (it is in `wait`: the child has closed its output but not
/// exited), the signal goes by `pid`, which `wait` has not released yet.
fn kill(child: &Arc<Mutex<Child>>, pid: u32) {
    match child.try_lock() {
        Ok(mut c) => {
            let _ = c.kill();
        }
        Err(_) => {
            if let Ok(pid) = i32::try_from(pid) {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
            }
        }
    }
}
