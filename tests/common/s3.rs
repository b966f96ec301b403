//! A real S3 API on loopback for the tests of `[recording.upload]`: moto's server
//! (`tests/receivers/s3_server.py`, from the test venv) with authentication on
//! from the first request, one IAM user whose key is [`KEY`] / [`SECRET`] and one
//! bucket, [`BUCKET`]. Every request must carry a valid AWS Signature V4 of that
//! key, in its `Authorization` header or, for a presigned GET, in its query
//! string (checked by the helper's own layer in front of moto, with botocore).
//!
//! The server keeps its objects in memory: [`S3Server::stop`] (SIGTERM, by pid)
//! and a new [`S3Server::start`] on the same port is a server that lost
//! everything. [`S3Server::objects`] downloads the bucket with boto3.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use serde_json::Value;

/// The access key id the server knows.
pub const KEY: &str = "AKIASIPBRIDGETEST001";
/// Its secret.
pub const SECRET: &str = "s3-test-secret-0123456789abcdef";
/// The one bucket, created at start.
pub const BUCKET: &str = "sipbridge-rec";

fn python() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/.venv/bin/python")
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/receivers/s3_server.py")
}

/// moto's S3 server, stopped by pid (SIGKILL on drop if still running).
pub struct S3Server {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl S3Server {
    /// Starts the server on `127.0.0.1:port` (its log is `dir/s3-<run>.log`) and
    /// returns once the bucket exists; panics with the log if it cannot start.
    pub fn start(dir: &Path, port: u16, run: u32) -> Self {
        Self::start_holding(dir, port, run, None)
    }

    /// [`S3Server::start`], and with `hold = Some((suffix, n))` the UploadPart
    /// requests of an object whose key ends in `suffix`, numbered above `n`, get
    /// no answer: a [`S3Server::stop`] then surely lands in the middle of that
    /// upload, however loaded the machine is.
    pub fn start_holding(dir: &Path, port: u16, run: u32, hold: Option<(&str, u32)>) -> Self {
        let log = dir.join(format!("s3-{run}.log"));
        let mut cmd = Command::new(python());
        cmd.arg(script()).args([
            "serve",
            "--port",
            &port.to_string(),
            "--access-key",
            KEY,
            "--secret",
            SECRET,
            "--bucket",
            BUCKET,
        ]);
        if let Some((suffix, n)) = hold {
            cmd.arg("--hold-parts").arg(format!("{suffix}:{n}"));
        }
        cmd.stdout(Stdio::piped()).stderr(std::fs::File::create(&log).unwrap());
        let mut child = super::spawn_tied(cmd).expect("moto starts (scripts/setup-tests installs it)");
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        // Bounded: the helper exits (EOF) if moto cannot start.
        out.read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "READY", "moto did not start:\n{}", std::fs::read_to_string(&log).unwrap_or_default());
        Self { child, port, log }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The server's request log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM by pid, and its exit (in-flight requests are cut); returns its
    /// request log. Panics if it has not exited 10 s after the signal (it is
    /// then killed, by pid, on drop).
    pub fn stop(mut self) -> String {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.child.id() as i32), nix::sys::signal::Signal::SIGTERM)
            .unwrap();
        let exited = super::wait_child(&mut self.child, std::time::Duration::from_secs(10));
        assert!(exited.is_some(), "moto did not exit 10 s after SIGTERM:\n{}", self.log());
        self.log()
    }

    /// Every object in the bucket, downloaded (signed GetObject): key → `{"size",
    /// "sha256", "content_type"}`.
    pub fn objects(&self) -> serde_json::Map<String, Value> {
        let out = Command::new(python())
            .arg(script())
            .args(["objects", "--endpoint", &self.endpoint(), "--access-key", KEY, "--secret", SECRET])
            .args(["--bucket", BUCKET])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice::<Value>(&out.stdout).unwrap().as_object().unwrap().clone()
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
