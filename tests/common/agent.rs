//! Test-side control of `tests/agents/telnyx_agent.py` (a Telnyx media-stream voice
//! agent in Python `websockets`) and `tests/agents/stream_agent.py` (Twilio, Exotel,
//! Plivo, AudioSocket): start one in a mode, read the port it listens on, stop it
//! by pid, read its per-connection JSON log.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;

/// A running agent process.
pub struct PyAgent {
    child: Child,
    /// Its loopback port.
    pub port: u16,
    /// Its JSONL log (one line per WebSocket connection, written when it ends).
    pub log: PathBuf,
}

impl PyAgent {
    /// Starts the agent in `mode` with extra `args`; logs go to `dir/<name>.jsonl`.
    pub fn start(dir: &Path, name: &str, mode: &str, args: &[&str]) -> Self {
        Self::start_script(dir, "telnyx_agent.py", name, mode, args)
    }

    /// [`PyAgent::start`] of another agent in `tests/agents/` (`stream_agent.py`).
    pub fn start_script(dir: &Path, script: &str, name: &str, mode: &str, args: &[&str]) -> Self {
        let python = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/.venv/bin/python");
        assert!(python.exists(), "{} is missing: run scripts/setup-tests first", python.display());
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/agents").join(script);
        let log = dir.join(format!("{name}.jsonl"));
        let mut child = Command::new(python)
            .arg(script)
            .args(["--mode", mode, "--port", "0", "--max-seconds", "120", "--log"])
            .arg(&log)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(dir.join(format!("{name}.stderr"))).unwrap())
            .spawn()
            .expect("start the Python agent");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let port = line
            .strip_prefix("LISTENING ")
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or_else(|| panic!("agent did not start: {line:?}"));
        Self { child, port, log }
    }

    /// `ws://127.0.0.1:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("ws://127.0.0.1:{}{path}", self.port)
    }

    /// The log lines so far.
    pub fn connections(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Waits until `n` connections have been logged.
    pub fn wait_connections(&self, n: usize, limit: Duration) -> Vec<Value> {
        let deadline = Instant::now() + limit;
        loop {
            let c = self.connections();
            if c.len() >= n || Instant::now() >= deadline {
                return c;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for PyAgent {
    fn drop(&mut self) {
        let _ = kill(Pid::from_raw(self.child.id() as i32), Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if self.child.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = kill(Pid::from_raw(self.child.id() as i32), Signal::SIGKILL);
        let _ = self.child.wait();
    }
}
