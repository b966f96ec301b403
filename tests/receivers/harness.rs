//! Test-side control of `webhook_receiver.py`: start it on loopback, stop it by
//! pid ("backend down"), start it again on the same port, change its answers, and
//! read what it recorded (one JSON line per request). Included by
//! `tests/webhooks.rs` with `#[path]`.
#![allow(dead_code)] // not every test uses every helper

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The test venv's Python (`scripts/setup-tests` creates it).
pub fn python() -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/.venv/bin/python");
    assert!(p.exists(), "{} is missing: run scripts/setup-tests first", p.display());
    p
}

/// Runs the real `sipbridge keygen --out <dir>/webhook.key`; returns the key path
/// and the base64 public key it printed.
pub fn keygen(dir: &Path) -> (PathBuf, String) {
    let key = dir.join("webhook.key");
    let out = Command::new(env!("CARGO_BIN_EXE_sipbridge"))
        .arg("keygen")
        .arg("--out")
        .arg(&key)
        .output()
        .expect("run sipbridge keygen");
    assert!(out.status.success(), "keygen failed: {}", String::from_utf8_lossy(&out.stderr));
    let public = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert_eq!(public.len(), 44, "base64 of 32 bytes: {public:?}");
    (key, public)
}

/// A running (or stopped) receiver.
pub struct Receiver {
    child: Option<Child>,
    /// Loopback port, fixed after the first start.
    pub port: u16,
    /// The JSONL record (kept across restarts).
    pub log: PathBuf,
    name: String,
    dir: PathBuf,
    /// The public key it verifies signatures with (base64).
    pub public_key: String,
    args: Vec<String>,
}

impl Receiver {
    /// Starts a receiver called `name` (its URL path) with extra `args`.
    pub fn start(dir: &Path, name: &str, public_key: &str, args: &[&str]) -> Self {
        let mut r = Self {
            child: None,
            port: 0,
            log: dir.join(format!("{name}.jsonl")),
            name: name.into(),
            dir: dir.into(),
            public_key: public_key.into(),
            args: args.iter().map(|s| s.to_string()).collect(),
        };
        r.spawn();
        r
    }

    fn spawn(&mut self) {
        let port_file = self.dir.join(format!("{}.port", self.name));
        let _ = std::fs::remove_file(&port_file);
        let stderr = std::fs::File::create(self.dir.join(format!("{}.stderr", self.name))).unwrap();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/receivers/webhook_receiver.py");
        let mut child = Command::new(python())
            .arg(script)
            .args(["--public-key", &self.public_key])
            .arg("--log")
            .arg(&self.log)
            .args(["--port", &self.port.to_string()])
            .arg("--port-file")
            .arg(&port_file)
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("start webhook_receiver.py");
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Ok(text) = std::fs::read_to_string(&port_file) {
                self.port = text.trim().parse().expect("port file holds a port");
                break;
            }
            if let Ok(Some(status)) = child.try_wait() {
                let err = std::fs::read_to_string(self.dir.join(format!("{}.stderr", self.name))).unwrap_or_default();
                panic!("webhook_receiver.py exited ({status}) before listening:\n{err}");
            }
            assert!(Instant::now() < deadline, "webhook_receiver.py did not start listening within 15 s");
            std::thread::sleep(Duration::from_millis(20));
        }
        self.child = Some(child);
    }

    /// `http://127.0.0.1:<port>/<name>`.
    pub fn url(&self) -> url::Url {
        url::Url::parse(&format!("http://127.0.0.1:{}/{}", self.port, self.name)).unwrap()
    }

    /// Stops the process (SIGKILL by pid): connections are refused from now on.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(c.id() as i32), nix::sys::signal::SIGKILL);
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port, with the same log.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// Changes its answers (`{"status": 500}`, `{"fail_session": null}`, `{"delay_ms": 0}`).
    pub fn control(&self, change: Value) {
        let body = change.to_string();
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.port)).expect("connect to receiver");
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        write!(
            s,
            "POST /_control HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut answer = String::new();
        let _ = s.read_to_string(&mut answer);
        assert!(answer.starts_with("HTTP/1.1 200"), "control answer: {answer}");
    }

    /// Every request recorded so far, in arrival order.
    pub fn entries(&self) -> Vec<Value> {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        // A line being written may be incomplete: keep complete lines only.
        text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
    }

    /// Waits (at most `limit`) until `done(entries)`; panics with `what` otherwise.
    pub async fn wait_until(&self, what: &str, limit: Duration, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let deadline = Instant::now() + limit;
        loop {
            let e = self.entries();
            if done(&e) {
                return e;
            }
            assert!(Instant::now() < deadline, "{what}: not within {limit:?}; receiver got {} requests", e.len());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Requests the receiver accepted and answered 2xx.
pub fn delivered(entries: &[Value]) -> Vec<&Value> {
    entries.iter().filter(|e| e["answered"].as_u64().is_some_and(|s| (200..300).contains(&s))).collect()
}

/// Requests it rejected (bad signature, stale timestamp, not an envelope).
pub fn rejected(entries: &[Value]) -> Vec<&Value> {
    entries.iter().filter(|e| e.get("rejected").is_some()).collect()
}

/// Distinct event ids delivered (2xx).
pub fn delivered_ids(entries: &[Value]) -> std::collections::HashSet<String> {
    delivered(entries).iter().filter_map(|e| e["event_id"].as_str().map(str::to_string)).collect()
}

/// Per session, `payload.n` of each first 2xx delivery, in arrival order.
pub fn order_by_session(entries: &[Value]) -> BTreeMap<String, Vec<u64>> {
    let mut seen = std::collections::HashSet::new();
    let mut out: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for e in delivered(entries) {
        let id = e["event_id"].as_str().unwrap_or_default().to_string();
        if !seen.insert(id) {
            continue;
        }
        let session = e["session"].as_str().unwrap_or("-").to_string();
        out.entry(session).or_default().push(e["body"]["data"]["payload"]["n"].as_u64().unwrap_or(u64::MAX));
    }
    out
}

/// How many ids were delivered (2xx) more than once, and how many extra times.
pub fn duplicates(entries: &[Value]) -> (usize, usize) {
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for e in delivered(entries) {
        *counts.entry(e["event_id"].as_str().unwrap_or_default()).or_default() += 1;
    }
    let dup_ids = counts.values().filter(|&&c| c > 1).count();
    let extra = counts.values().map(|c| c - 1).sum();
    (dup_ids, extra)
}
