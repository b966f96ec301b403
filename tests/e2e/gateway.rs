//! The box as the end-to-end scenarios run it: the real daemon binary on loopback
//! with a config of the scenario's own (trunks, agents, routes), recording on,
//! Ed25519-signed webhooks to `tests/receivers/webhook_receiver.py` (which verifies
//! every signature with the public key `sipbridge keygen` printed), the control API
//! on a free port. Also: `kill -9` and restart on the same config and data dir, the
//! control API over HTTP, and the call records read from `{data_dir}/sipbridge.db`
//! as a technician's `sqlite3` would. Included with `#[path]` by `tests/e2e_*.rs`,
//! next to `common` and `harness`.
#![allow(dead_code)] // each scenario file uses a different subset

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use serde_json::Value;

use crate::common::baresip::{Baresip, Phone};
use crate::common::{Daemon, NotifySocket, free_even_block, free_port};
use crate::harness::{Receiver, delivered, keygen, rejected};

/// Upper bound of every wait in the scenarios.
pub const WAIT: Duration = Duration::from_secs(40);
/// The control API's bearer token.
pub const TOKEN: &str = "e2e-token-0123456789";
/// The caller's number (baresip's account) on inbound calls.
pub const CALLER: &str = "+14155550123";
/// The box's number on the Telnyx trunk.
pub const NUMBER: &str = "+13125550100";

/// A Telnyx IP connection to the box (calls come from 127.0.0.2 only), an agent
/// named `support-bot` at `agent_url` (with `agent_extra` TOML lines), and the
/// route that sends the box's number to it, recorded.
pub fn telnyx_trunk_to_agent(agent_url: &str, agent_extra: &str) -> String {
    format!(
        "[[trunk]]\nname = \"telnyx-ip\"\nprovider = \"telnyx\"\nproxy = \"sip:127.0.0.2:5060\"\n\
         inbound_allow = [\"127.0.0.2/32\"]\nnumbers = [\"{NUMBER}\"]\n\
         [[agent]]\nname = \"support-bot\"\nurl = \"{agent_url}\"\n{agent_extra}\n\
         [[route]]\nname = \"main number to the agent\"\ntrunk = \"telnyx-ip\"\nto = \"{NUMBER}\"\n\
         agent = \"support-bot\"\nrecord = true\n"
    )
}

/// baresip on 127.0.0.2 (as Telnyx's proxy) calls the box's number at `sip_port`
/// playing `source` (it hangs up when the file ends), and once answered presses
/// `digits` 400 ms apart from `keys_at` after the answer. Returns the phone and
/// when the call was answered.
pub fn call_in(dir: &Path, sip_port: u16, source: &Path, keys_at: Duration, digits: &str) -> (Baresip, Instant) {
    let mut phone = Baresip::start(
        dir,
        "caller-phone",
        Phone { ip: "127.0.0.2", user: CALLER, auto_answer: false, source, max: Duration::from_secs(90) },
    );
    phone.dial(&format!("sip:{NUMBER}@127.0.0.1:{sip_port}"));
    assert!(phone.wait_event("CALL_ESTABLISHED", WAIT).is_some(), "the box answered: {}", phone.log());
    let answered = Instant::now();
    if !digits.is_empty() {
        std::thread::sleep(keys_at.saturating_sub(answered.elapsed()));
        for d in digits.chars() {
            phone.press(d);
            std::thread::sleep(Duration::from_millis(400));
        }
    }
    (phone, answered)
}

/// A running box and its backend.
pub struct Gateway {
    pub daemon: Daemon,
    /// SIP (UDP) on 127.0.0.1.
    pub sip_port: u16,
    /// The control API on 127.0.0.1.
    pub api_port: u16,
    pub config: PathBuf,
    pub data: PathBuf,
    pub recordings: PathBuf,
    pub receiver: Receiver,
    dir: PathBuf,
}

impl Gateway {
    /// Starts the box with `body` (its `[[trunk]]`, `[[agent]]` and `[[route]]`
    /// blocks) and waits for READY=1. Webhooks retry fast (200 ms, at most 1 s
    /// apart) so a backend that comes back is served within a second.
    pub fn start(dir: &Path, body: &str) -> Self {
        let (key, public) = keygen(dir);
        let receiver = Receiver::start(dir, "hook", &public, &[]);
        let (sip_port, api_port) = (free_port(), free_port());
        let base = (free_even_block(2) & !0x3ff).clamp(20_000, 60_000);
        let data = dir.join("data");
        let recordings = dir.join("recordings");
        let config = dir.join("sipbridge.toml");
        std::fs::write(
            &config,
            format!(
                "[node]\nname = \"e2e\"\ndata_dir = \"{data}\"\nshutdown_grace = \"1s\"\n\
                 [sip]\nlisten = [\"udp://127.0.0.1:{sip_port}\"]\n\
                 [rtp]\nport_range = \"{lo}-{hi}\"\n\
                 {body}\n\
                 [recording]\n# a size, not a share of whatever else fills the test machine's disk\nmax_disk_usage = \"4GiB\"\nenabled = true\ndir = \"{rec}\"\nchannels = \"dual\"\n\
                 [webhooks]\nurl = \"{url}\"\nsigning_key = \"{key}\"\nretry_initial = \"200ms\"\nretry_max = \"1s\"\n\
                 [api]\nlisten = \"127.0.0.1:{api_port}\"\ntoken = \"{TOKEN}\"\n\
                 [log]\nformat = \"text\"\nlevel = \"debug\"\n",
                data = data.display(),
                lo = base,
                hi = base + 999,
                rec = recordings.display(),
                url = receiver.url(),
                key = key.display(),
            ),
        )
        .unwrap();
        let daemon = launch(dir, &config);
        Self { daemon, sip_port, api_port, config, data, recordings, receiver, dir: dir.to_path_buf() }
    }

    /// `kill -9` of the daemon, by pid; returns once it is dead.
    pub fn kill_9(&mut self) {
        self.daemon.signal(Signal::SIGKILL);
        let status = self.daemon.wait_exit(WAIT).expect("the daemon died");
        assert_eq!(std::os::unix::process::ExitStatusExt::signal(&status), Some(9));
    }

    /// Starts the daemon again on the same config, data dir and ports.
    pub fn restart(&mut self) {
        self.daemon = launch(&self.dir, &self.config);
    }

    /// Webhook bodies delivered (2xx) so far, first delivery of each event id, in
    /// arrival order, after waiting until `done` holds for them. Every request the
    /// receiver got had a valid signature.
    pub async fn events(&self, what: &str, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let firsts = |e: &[Value]| -> Vec<Value> {
            let mut seen = std::collections::HashSet::new();
            delivered(e)
                .iter()
                .filter(|x| seen.insert(x["event_id"].as_str().unwrap_or_default().to_string()))
                .map(|x| x["body"].clone())
                .collect()
        };
        let entries = self.receiver.wait_until(what, WAIT, |e| done(&firsts(e))).await;
        assert!(rejected(&entries).is_empty(), "every signature verified: {:?}", rejected(&entries));
        firsts(&entries)
    }

    /// The `calls` row of a leg, by `call_control_id`, as column → value.
    pub fn call_record(&self, call_control_id: &str) -> serde_json::Map<String, Value> {
        let c = rusqlite::Connection::open_with_flags(
            self.data.join("sipbridge.db"),
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )
        .expect("the call store exists");
        c.busy_timeout(Duration::from_secs(5)).unwrap();
        let mut stmt = c.prepare("SELECT * FROM calls WHERE call_control_id = ?1").unwrap();
        let names: Vec<String> = stmt.column_names().iter().map(|s| s.to_string()).collect();
        stmt.query_row([call_control_id], |r| {
            let mut m = serde_json::Map::new();
            for (i, n) in names.iter().enumerate() {
                let v = match r.get_ref(i)? {
                    rusqlite::types::ValueRef::Null => Value::Null,
                    rusqlite::types::ValueRef::Integer(x) => Value::from(x),
                    rusqlite::types::ValueRef::Real(x) => Value::from(x),
                    rusqlite::types::ValueRef::Text(t) => Value::from(String::from_utf8_lossy(t).into_owned()),
                    rusqlite::types::ValueRef::Blob(b) => Value::from(b.len()),
                };
                m.insert(n.clone(), v);
            }
            Ok(m)
        })
        .unwrap_or_else(|e| panic!("no calls row for {call_control_id}: {e}"))
    }

    /// `METHOD /path` on the control API with the bearer token; (status, JSON body).
    pub async fn api(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut r = reqwest::Client::new()
            .request(method, format!("http://127.0.0.1:{}{path}", self.api_port))
            .bearer_auth(TOKEN)
            .timeout(WAIT);
        if let Some(b) = body {
            r = r.header("content-type", "application/json").body(b.to_string());
        }
        let resp = r.send().await.expect("the API answers");
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    /// SIGTERM, then a clean exit (0) within the bound.
    pub fn stop(mut self) {
        self.daemon.signal(Signal::SIGTERM);
        assert_eq!(self.daemon.wait_exit(WAIT).and_then(|s| s.code()), Some(0), "{}", self.daemon.stderr());
    }
}

/// Starts the daemon on `config` and waits for READY=1 (sd-notify).
pub fn launch(dir: &Path, config: &Path) -> Daemon {
    let _ = std::fs::remove_file(dir.join("notify.sock"));
    let mut notify = NotifySocket::bind(dir);
    let mut daemon = Daemon::start(config, Some(&notify.path), None, &[]);
    let t0 = Instant::now();
    // `wait_for` also returns early on a receive error (EINTR): wait again while
    // the daemon runs and time is left.
    while notify.wait_for("READY=1", WAIT.saturating_sub(t0.elapsed())).is_none() {
        assert!(t0.elapsed() < WAIT && daemon.is_running(), "daemon not ready: {}", daemon.stderr());
    }
    daemon
}

pub fn event_type(b: &Value) -> &str {
    b["data"]["event_type"].as_str().unwrap_or_default()
}

pub fn payload(b: &Value) -> &Value {
    &b["data"]["payload"]
}

/// Events of one leg (by `call_control_id`), in delivery order.
pub fn of_leg<'a>(bodies: &'a [Value], call_control_id: &str) -> Vec<&'a Value> {
    bodies.iter().filter(|b| payload(b)["call_control_id"] == call_control_id).collect()
}

/// Their event types.
pub fn types<'a>(bodies: &[&'a Value]) -> Vec<&'a str> {
    bodies.iter().map(|b| event_type(b)).collect()
}

/// Files under `dir` (recursively) whose name ends with `suffix`.
pub fn files_ending(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.to_string_lossy().ends_with(suffix) {
                out.push(p);
            }
        }
    }
    out
}

/// An RFC 3339 time field of a payload or record.
pub fn time(v: &Value, key: &str) -> std::time::SystemTime {
    humantime::parse_rfc3339(v[key].as_str().unwrap_or_else(|| panic!("{key} in {v}")))
        .unwrap_or_else(|e| panic!("{key} in {v}: {e}"))
}
