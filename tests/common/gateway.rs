//! The box as every integration test runs it: one builder for the daemon's config,
//! one way to start it, wait for it and stop it, and one client for its control API.
//!
//! A test describes the box it needs in typed pieces — node, SIP listeners, RTP
//! range, trunks, agents, routes, recording, webhooks, the control API, WebRTC,
//! logging — plus, for anything else, raw TOML lines (`*_extra`, or [`GatewayBuilder::extra`]
//! for whole sections). [`GatewayBuilder::start`] renders that as
//! `sipbridge.toml` in the test's own temporary directory, picks the free loopback
//! ports it needs, starts the real binary (`CARGO_BIN_EXE_sipbridge`) with a
//! `NOTIFY_SOCKET` the test owns, and returns once the daemon said `READY=1`
//! (panicking with the daemon's stderr if it never does). The [`Gateway`] it returns
//! knows its ports, paths, API base URL and token, the webhook [`Receiver`] (the
//! Python receiver that verifies every Ed25519 signature), and the call store; it is
//! stopped by pid — SIGTERM and a clean exit in [`Gateway::stop`], `kill -9` in
//! [`Gateway::kill_9`], SIGKILL on drop when a test fails — never by name.
//!
//! Tests assert on what the box does on the outside: webhooks
//! ([`Gateway::events`]), call records (the API's `/v2/...` through [`Api`], or
//! [`Gateway::call_record`] from the store), and the wire (SIPp traces, RTP
//! captured by the test's phones), rather than on log text.
//!
//! ```ignore
//! use common::gateway::{Gateway, Route, Trunk};
//!
//! let dir = tempfile::tempdir().unwrap();
//! let gw = Gateway::builder(dir.path())
//!     .trunk(Trunk::new("pbx").allow("127.0.0.0/8"))
//!     .agent("echo", "builtin:echo", "")
//!     .route(Route::new().agent("echo").record())
//!     .recording("")
//!     .webhooks("")
//!     .api("test-token-0123456789")
//!     .start();
//! // ... place a call to 127.0.0.1:{gw.sip_port} ...
//! let bodies = gw.events("the call ended", |b| b.iter().any(|b| b["data"]["event_type"] == "call.hangup")).await;
//! let (code, calls) = gw.api().get("/v2/calls").await;
//! gw.stop(); // SIGTERM, exit code 0
//! ```
#![allow(dead_code)] // each test binary uses a different subset

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use serde_json::Value;

use super::receivers::{Receiver, delivered, keygen, rejected};
use super::{Daemon, NotifySocket, free_even_block, free_port};

/// Upper bound of the harness's own waits (READY, the API, webhooks, exit).
pub const WAIT: Duration = Duration::from_secs(40);

/// A `[[trunk]]` block.
#[derive(Clone, Debug, Default)]
pub struct Trunk {
    name: String,
    provider: Option<String>,
    proxy: Option<String>,
    inbound_allow: Vec<String>,
    numbers: Vec<String>,
    extra: String,
}

impl Trunk {
    pub fn new(name: &str) -> Self {
        Self { name: name.into(), ..Self::default() }
    }
    pub fn provider(mut self, p: &str) -> Self {
        self.provider = Some(p.into());
        self
    }
    pub fn proxy(mut self, p: &str) -> Self {
        self.proxy = Some(p.into());
        self
    }
    /// One `inbound_allow` CIDR.
    pub fn allow(mut self, cidr: &str) -> Self {
        self.inbound_allow.push(cidr.into());
        self
    }
    pub fn number(mut self, n: &str) -> Self {
        self.numbers.push(n.into());
        self
    }
    /// Raw TOML lines inside the block.
    pub fn extra(mut self, lines: &str) -> Self {
        self.extra.push_str(lines);
        self.extra.push('\n');
        self
    }
    fn render(&self, out: &mut String) {
        let _ = writeln!(out, "[[trunk]]\nname = \"{}\"", self.name);
        if let Some(p) = &self.provider {
            let _ = writeln!(out, "provider = \"{p}\"");
        }
        if let Some(p) = &self.proxy {
            let _ = writeln!(out, "proxy = \"{p}\"");
        }
        if !self.inbound_allow.is_empty() {
            let _ = writeln!(out, "inbound_allow = {}", toml_list(&self.inbound_allow));
        }
        if !self.numbers.is_empty() {
            let _ = writeln!(out, "numbers = {}", toml_list(&self.numbers));
        }
        out.push_str(&self.extra);
    }
}

/// A `[[route]]` block.
#[derive(Clone, Debug, Default)]
pub struct Route {
    lines: Vec<String>,
}

impl Route {
    pub fn new() -> Self {
        Self::default()
    }
    fn set(mut self, key: &str, value: &str) -> Self {
        self.lines.push(format!("{key} = \"{value}\""));
        self
    }
    pub fn name(self, n: &str) -> Self {
        self.set("name", n)
    }
    pub fn trunk(self, t: &str) -> Self {
        self.set("trunk", t)
    }
    pub fn to(self, number: &str) -> Self {
        self.set("to", number)
    }
    pub fn agent(self, a: &str) -> Self {
        self.set("agent", a)
    }
    pub fn room(self, r: &str) -> Self {
        self.set("room", r)
    }
    /// `record = true`.
    pub fn record(mut self) -> Self {
        self.lines.push("record = true".into());
        self
    }
    /// Raw TOML lines inside the block.
    pub fn extra(mut self, lines: &str) -> Self {
        self.lines.push(lines.trim_end_matches('\n').to_string());
        self
    }
    fn render(&self, out: &mut String) {
        out.push_str("[[route]]\n");
        for l in &self.lines {
            out.push_str(l);
            out.push('\n');
        }
    }
}

fn toml_list(items: &[String]) -> String {
    format!("[{}]", items.iter().map(|s| format!("\"{s}\"")).collect::<Vec<_>>().join(", "))
}

/// Where SIP listens: UDP on a free loopback port (the default), or listeners
/// of the test's own.
#[derive(Clone, Debug)]
enum Listen {
    /// `udp://127.0.0.1:<free port>`; the port is [`Gateway::sip_port`].
    Udp,
    /// These URLs verbatim; `sip_port` is the given one.
    Urls(Vec<String>, u16),
}

/// The daemon's config, piece by piece; [`GatewayBuilder::start`] runs it.
#[must_use]
pub struct GatewayBuilder {
    dir: PathBuf,
    node_name: Option<String>,
    shutdown_grace: String,
    max_calls: Option<u32>,
    node_extra: String,
    sip_port: Option<u16>,
    listen: Listen,
    sip_extra: String,
    rtp_range: Option<(u16, u16)>,
    rtp_extra: String,
    trunks: Vec<Trunk>,
    /// Agents and routes, in the order given (their relative order is kept).
    blocks: String,
    recording: Option<(PathBuf, String)>,
    webhooks: Option<String>,
    receiver_args: Vec<String>,
    api: Option<(String, String)>,
    api_port: Option<u16>,
    webrtc: Option<String>,
    log_level: Option<String>,
    extra: String,
    env: Vec<(String, String)>,
}

impl GatewayBuilder {
    fn new(dir: &Path) -> Self {
        Self {
            dir: dir.to_path_buf(),
            node_name: None,
            shutdown_grace: "1s".into(),
            max_calls: None,
            node_extra: String::new(),
            sip_port: None,
            listen: Listen::Udp,
            sip_extra: String::new(),
            rtp_range: None,
            rtp_extra: String::new(),
            trunks: Vec::new(),
            blocks: String::new(),
            recording: None,
            webhooks: None,
            receiver_args: Vec::new(),
            api: None,
            api_port: None,
            webrtc: None,
            log_level: None,
            extra: String::new(),
            env: Vec::new(),
        }
    }

    /// `[node] name`.
    pub fn node_name(mut self, n: &str) -> Self {
        self.node_name = Some(n.into());
        self
    }
    /// `[node] shutdown_grace` (default `"1s"`).
    pub fn shutdown_grace(mut self, g: &str) -> Self {
        self.shutdown_grace = g.into();
        self
    }
    /// `[node] max_calls`.
    pub fn max_calls(mut self, n: u32) -> Self {
        self.max_calls = Some(n);
        self
    }
    /// Raw lines in `[node]`.
    pub fn node_extra(mut self, lines: &str) -> Self {
        push_lines(&mut self.node_extra, lines);
        self
    }
    /// SIP over UDP on this port (instead of a free one).
    pub fn sip_port(mut self, port: u16) -> Self {
        self.sip_port = Some(port);
        self
    }
    /// `[sip] listen` verbatim; `port` is what [`Gateway::sip_port`] reports.
    pub fn sip_listen(mut self, urls: &[&str], port: u16) -> Self {
        self.listen = Listen::Urls(urls.iter().map(|s| s.to_string()).collect(), port);
        self
    }
    /// Raw lines in `[sip]`.
    pub fn sip_extra(mut self, lines: &str) -> Self {
        push_lines(&mut self.sip_extra, lines);
        self
    }
    /// `[rtp] port_range = "lo-hi"` (default: a free block of 1000 from 20000 up).
    pub fn rtp_range(mut self, lo: u16, hi: u16) -> Self {
        self.rtp_range = Some((lo, hi));
        self
    }
    /// Raw lines in `[rtp]`.
    pub fn rtp_extra(mut self, lines: &str) -> Self {
        push_lines(&mut self.rtp_extra, lines);
        self
    }
    pub fn trunk(mut self, t: Trunk) -> Self {
        self.trunks.push(t);
        self
    }
    /// An `[[agent]]` block: `name`, `url`, and raw `extra` lines.
    pub fn agent(mut self, name: &str, url: &str, extra: &str) -> Self {
        let _ = writeln!(self.blocks, "[[agent]]\nname = \"{name}\"\nurl = \"{url}\"");
        push_lines(&mut self.blocks, extra);
        self
    }
    pub fn route(mut self, r: Route) -> Self {
        r.render(&mut self.blocks);
        self
    }
    /// `[[trunk]]`/`[[agent]]`/`[[route]]` blocks written as TOML by the test,
    /// placed after the typed trunks, in order with the typed agents and routes.
    pub fn blocks(mut self, toml: &str) -> Self {
        push_lines(&mut self.blocks, toml);
        self
    }
    /// `[recording]` on, into `<dir>/recordings`, 4 GiB at most (a size, not a
    /// share of whatever else fills the test machine's disk), plus raw `extra`
    /// lines (e.g. `channels = "dual"`).
    pub fn recording(self, extra: &str) -> Self {
        let dir = self.dir.join("recordings");
        self.recording_in(&dir, extra)
    }
    /// [`Self::recording`] into `dir`.
    pub fn recording_in(mut self, dir: &Path, extra: &str) -> Self {
        self.recording = Some((dir.to_path_buf(), extra.to_string()));
        self
    }
    /// Signed webhooks to a verifying receiver (started by `start`, key made by
    /// `sipbridge keygen`), plus raw `extra` lines in `[webhooks]`.
    pub fn webhooks(mut self, extra: &str) -> Self {
        self.webhooks = Some(extra.to_string());
        self
    }
    /// Extra command-line arguments of the webhook receiver (e.g. `--status 500`:
    /// it answers 500 until told otherwise with [`Receiver::control`]).
    pub fn receiver_args(mut self, args: &[&str]) -> Self {
        self.receiver_args.extend(args.iter().map(|a| a.to_string()));
        self
    }
    /// The control API on a free loopback port with this bearer token.
    pub fn api(mut self, token: &str) -> Self {
        self.api = Some((token.to_string(), String::new()));
        self
    }
    /// The control API on this port.
    pub fn api_port(mut self, port: u16) -> Self {
        self.api_port = Some(port);
        self
    }
    /// Raw lines in `[api]` (after `listen` and `token`).
    pub fn api_extra(mut self, lines: &str) -> Self {
        let api = self.api.as_mut().expect("api(token) before api_extra");
        push_lines(&mut api.1, lines);
        self
    }
    /// `[webrtc]` with `address = "127.0.0.1"` and raw `lines`.
    pub fn webrtc(mut self, lines: &str) -> Self {
        self.webrtc = Some(lines.to_string());
        self
    }
    /// `[log] level` (the format is always `text`).
    pub fn log_level(mut self, level: &str) -> Self {
        self.log_level = Some(level.into());
        self
    }
    /// Whole sections verbatim, appended at the end of the file.
    pub fn extra(mut self, toml: &str) -> Self {
        push_lines(&mut self.extra, toml);
        self
    }
    /// An environment variable for the daemon.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Writes `sipbridge.toml`, starts the daemon and waits for `READY=1`.
    pub fn start(self) -> Gateway {
        // Tests talk to the box with reqwest (rustls without a default provider).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = self.dir.clone();
        let receiver = self.webhooks.as_ref().map(|_| {
            let (key, public) = keygen(&dir);
            let args: Vec<&str> = self.receiver_args.iter().map(String::as_str).collect();
            (Receiver::start(&dir, "hook", &public, &args), key)
        });
        let sip_port = match &self.listen {
            Listen::Udp => self.sip_port.unwrap_or_else(free_port),
            Listen::Urls(_, p) => *p,
        };
        let api_port = self.api.as_ref().map(|_| self.api_port.unwrap_or_else(free_port));
        let (lo, hi) = self.rtp_range.unwrap_or_else(|| {
            let base = (free_even_block(2) & !0x3ff).clamp(20_000, 60_000);
            (base, base + 999)
        });
        let data = dir.join("data");
        let mut t = String::new();
        t.push_str("[node]\n");
        if let Some(n) = &self.node_name {
            let _ = writeln!(t, "name = \"{n}\"");
        }
        let _ = writeln!(t, "data_dir = \"{}\"\nshutdown_grace = \"{}\"", data.display(), self.shutdown_grace);
        if let Some(m) = self.max_calls {
            let _ = writeln!(t, "max_calls = {m}");
        }
        t.push_str(&self.node_extra);
        t.push_str("[sip]\n");
        match &self.listen {
            Listen::Udp => {
                let _ = writeln!(t, "listen = [\"udp://127.0.0.1:{sip_port}\"]");
            }
            Listen::Urls(urls, _) => {
                let _ = writeln!(t, "listen = {}", toml_list(urls));
            }
        }
        t.push_str(&self.sip_extra);
        let _ = writeln!(t, "[rtp]\nport_range = \"{lo}-{hi}\"");
        t.push_str(&self.rtp_extra);
        for tr in &self.trunks {
            tr.render(&mut t);
        }
        t.push_str(&self.blocks);
        let recordings = self.recording.as_ref().map(|(d, _)| d.clone()).unwrap_or_else(|| dir.join("recordings"));
        if let Some((rec, extra)) = &self.recording {
            let _ = write!(
                t,
                "[recording]\n# a size, not a share of whatever else fills the test machine's disk\n\
                 max_disk_usage = \"4GiB\"\nenabled = true\ndir = \"{}\"\n",
                rec.display()
            );
            push_lines(&mut t, extra);
        }
        if let (Some(extra), Some((r, key))) = (&self.webhooks, &receiver) {
            let _ = writeln!(t, "[webhooks]\nurl = \"{}\"\nsigning_key = \"{}\"", r.url(), key.display());
            push_lines(&mut t, extra);
        }
        if let (Some((token, extra)), Some(port)) = (&self.api, api_port) {
            let _ = writeln!(t, "[api]\nlisten = \"127.0.0.1:{port}\"\ntoken = \"{token}\"");
            t.push_str(extra);
        }
        if let Some(lines) = &self.webrtc {
            t.push_str("[webrtc]\naddress = \"127.0.0.1\"\n");
            push_lines(&mut t, lines);
        }
        t.push_str("[log]\nformat = \"text\"\n");
        if let Some(l) = &self.log_level {
            let _ = writeln!(t, "level = \"{l}\"");
        }
        t.push_str(&self.extra);
        let config = dir.join("sipbridge.toml");
        std::fs::write(&config, &t).unwrap();
        let env: Vec<(String, String)> = self.env.clone();
        let (daemon, notify) = launch(&dir, &config, &env);
        Gateway {
            daemon,
            notify,
            sip_port,
            api_port,
            token: self.api.map(|a| a.0),
            config,
            data,
            recordings,
            receiver: receiver.map(|(r, _)| r),
            dir,
            env,
        }
    }
}

fn push_lines(out: &mut String, lines: &str) {
    if !lines.is_empty() {
        out.push_str(lines);
        if !lines.ends_with('\n') {
            out.push('\n');
        }
    }
}

/// A running box and its backend.
pub struct Gateway {
    pub daemon: Daemon,
    /// The daemon's `NOTIFY_SOCKET` (kept open: later `STATUS=` lines arrive here).
    pub notify: NotifySocket,
    /// SIP (UDP) on 127.0.0.1.
    pub sip_port: u16,
    /// The control API on 127.0.0.1, when configured.
    pub api_port: Option<u16>,
    /// Its bearer token.
    pub token: Option<String>,
    pub config: PathBuf,
    /// `[node] data_dir` (the call store is `sipbridge.db` in it).
    pub data: PathBuf,
    /// `[recording] dir`.
    pub recordings: PathBuf,
    /// The verifying webhook receiver, when webhooks are on.
    pub receiver: Option<Receiver>,
    dir: PathBuf,
    env: Vec<(String, String)>,
}

impl Gateway {
    pub fn builder(dir: &Path) -> GatewayBuilder {
        GatewayBuilder::new(dir)
    }

    /// The test's directory (config, logs, SIPp traces).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The control API's port (panics when the config has no `[api]`).
    pub fn api_port(&self) -> u16 {
        self.api_port.expect("the gateway has an [api]")
    }

    /// `http://127.0.0.1:<api port>`.
    pub fn api_base(&self) -> String {
        format!("http://127.0.0.1:{}", self.api_port())
    }

    /// The control API's bearer token.
    pub fn token(&self) -> &str {
        self.token.as_deref().expect("the gateway has an [api]")
    }

    /// A client of the control API with the bearer token.
    pub fn api(&self) -> Api {
        Api::new(&self.api_base(), self.token())
    }

    /// The webhook receiver (panics when webhooks are off).
    pub fn hooks(&self) -> &Receiver {
        self.receiver.as_ref().expect("webhooks on")
    }

    pub fn hooks_mut(&mut self) -> &mut Receiver {
        self.receiver.as_mut().expect("webhooks on")
    }

    /// The daemon's stderr so far (its log).
    pub fn stderr(&self) -> String {
        self.daemon.stderr()
    }

    fn delivered_entries(&self, what: &str, done: impl Fn(&[Value]) -> bool) -> impl Future<Output = Vec<Value>> {
        let receiver = self.hooks();
        async move {
            let entries = receiver.wait_until(what, WAIT, done).await;
            assert!(rejected(&entries).is_empty(), "every signature verified: {:?}", rejected(&entries));
            entries
        }
    }

    /// Webhook bodies delivered (2xx) so far, in arrival order, after waiting
    /// until `done` holds for them. Every request the receiver got had a valid
    /// signature.
    pub async fn events(&self, what: &str, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let bodies = |e: &[Value]| -> Vec<Value> { delivered(e).iter().map(|x| x["body"].clone()).collect() };
        bodies(&self.delivered_entries(what, |e| done(&bodies(e))).await)
    }

    /// [`Self::events`], each body's `data` only.
    pub async fn event_data(&self, what: &str, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let data = |e: &[Value]| -> Vec<Value> { delivered(e).iter().map(|x| x["body"]["data"].clone()).collect() };
        data(&self.delivered_entries(what, |e| done(&data(e))).await)
    }

    /// [`Self::events`], the first delivery of each event id only (retries of
    /// an event already delivered are left out).
    pub async fn unique_events(&self, what: &str, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let firsts = |e: &[Value]| -> Vec<Value> {
            let mut seen = std::collections::HashSet::new();
            delivered(e)
                .iter()
                .filter(|x| seen.insert(x["event_id"].as_str().unwrap_or_default().to_string()))
                .map(|x| x["body"].clone())
                .collect()
        };
        firsts(&self.delivered_entries(what, |e| done(&firsts(e))).await)
    }

    /// The `calls` row of a leg in the call store, by `call_control_id`, as
    /// column → value (read-only, as a technician's `sqlite3` would).
    pub fn call_record(&self, call_control_id: &str) -> serde_json::Map<String, Value> {
        self.call_rows("WHERE call_control_id = ?1", call_control_id)
            .pop()
            .unwrap_or_else(|| panic!("no calls row for {call_control_id}"))
    }

    /// Waits (at most `WAIT`) until `n` legs have ended in the call store and
    /// returns their rows, oldest first: what a call left behind, read the way a
    /// technician's `sqlite3` would (no log text).
    pub fn ended_calls(&self, n: usize) -> Vec<serde_json::Map<String, Value>> {
        let deadline = Instant::now() + WAIT;
        loop {
            let rows = if self.data.join("sipbridge.db").exists() {
                self.call_rows("WHERE end_time IS NOT NULL AND ?1 = ?1 ORDER BY start_time", "")
            } else {
                Vec::new()
            };
            if rows.len() >= n {
                return rows;
            }
            assert!(Instant::now() < deadline, "{} of {n} calls ended:\n{}", rows.len(), self.stderr());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn call_rows(&self, filter: &str, arg: &str) -> Vec<serde_json::Map<String, Value>> {
        let c = rusqlite::Connection::open_with_flags(
            self.data.join("sipbridge.db"),
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )
        .expect("the call store exists");
        c.busy_timeout(Duration::from_secs(5)).unwrap();
        let mut stmt = c.prepare(&format!("SELECT * FROM calls {filter}")).unwrap();
        let names: Vec<String> = stmt.column_names().iter().map(|s| s.to_string()).collect();
        stmt.query_map([arg], |r| {
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
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
    }

    /// `kill -9` of the daemon, by pid; returns once it is dead.
    pub fn kill_9(&mut self) {
        self.daemon.signal(Signal::SIGKILL);
        let status = self.daemon.wait_exit(WAIT).expect("the daemon died");
        assert_eq!(std::os::unix::process::ExitStatusExt::signal(&status), Some(9));
    }

    /// Starts the daemon again on the same config, data dir and ports, and waits
    /// for `READY=1`.
    pub fn restart(&mut self) {
        (self.daemon, self.notify) = launch(&self.dir, &self.config, &self.env);
    }

    /// Sends `sig` to the daemon (by pid).
    pub fn signal(&self, sig: Signal) {
        self.daemon.signal(sig);
    }

    /// Waits (at most `WAIT`) until the daemon's log contains `needle`; returns
    /// the log. Panics with the log otherwise.
    pub fn wait_log(&self, needle: &str) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let log = self.daemon.stderr();
            if log.contains(needle) {
                return log;
            }
            assert!(Instant::now() < deadline, "log never showed {needle:?}:\n{log}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM, then a clean exit (0) within the bound; returns the daemon's log.
    pub fn stop(self) -> String {
        self.signal(Signal::SIGTERM);
        self.exited()
    }

    /// A clean exit (0) within the bound, without a signal of its own (after
    /// [`Self::signal`]); returns the daemon's whole log.
    pub fn exited(mut self) -> String {
        assert_eq!(self.daemon.wait_exit(WAIT).and_then(|s| s.code()), Some(0), "{}", self.daemon.stderr());
        self.daemon.stderr()
    }
}

/// Starts the daemon on `config` with a notify socket in `dir` and waits for
/// `READY=1`; panics with the notifications and the daemon's stderr otherwise.
pub fn launch(dir: &Path, config: &Path, env: &[(String, String)]) -> (Daemon, NotifySocket) {
    let _ = std::fs::remove_file(dir.join("notify.sock"));
    let mut notify = NotifySocket::bind(dir);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let mut daemon = Daemon::start(config, Some(&notify.path), None, &env);
    let t0 = Instant::now();
    // `wait_for` also returns early on a receive error (EINTR): wait again while
    // the daemon runs and time is left (in short slices, so that a daemon that
    // refuses its config is reported at once).
    while notify.wait_for("READY=1", WAIT.saturating_sub(t0.elapsed()).min(Duration::from_millis(250))).is_none() {
        if t0.elapsed() >= WAIT || !daemon.is_running() {
            panic!(
                "daemon not ready after {:?} (running: {}, notifications: {:?}):\n{}",
                t0.elapsed(),
                daemon.is_running(),
                notify.seen,
                daemon.stderr()
            );
        }
    }
    (daemon, notify)
}

/// A client of the control API: base URL, bearer token, one `reqwest` client.
pub struct Api {
    pub base: String,
    pub token: String,
    pub http: reqwest::Client,
}

impl Api {
    /// Plain HTTP at `base` (`http://127.0.0.1:<port>`).
    pub fn new(base: &str, token: &str) -> Self {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder().timeout(WAIT).build().unwrap();
        Self { base: base.to_string(), token: token.to_string(), http }
    }

    /// HTTPS at `https://127.0.0.1:<port>`, trusting only `cert` (PEM).
    pub fn tls(port: u16, cert: &Path, token: &str) -> Self {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let pem = std::fs::read(cert).unwrap();
        let http = reqwest::Client::builder()
            .tls_certs_only([reqwest::Certificate::from_pem(&pem).unwrap()])
            .timeout(WAIT)
            .build()
            .unwrap();
        Self { base: format!("https://127.0.0.1:{port}"), token: token.to_string(), http }
    }

    /// `base` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// `METHOD path` with `token` (none: unauthenticated) and a raw JSON body.
    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&str>,
        token: Option<&str>,
    ) -> (u16, Value) {
        let mut r = self.http.request(method, self.url(path));
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        if let Some(b) = body {
            r = r.header("content-type", "application/json").body(b.to_string());
        }
        let resp = r.send().await.expect("the API answers");
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    /// `METHOD path` with the token and an optional JSON body; (status, JSON
    /// body, or the text as a JSON string when it is not JSON).
    pub async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let body = body.map(|b| b.to_string());
        self.send(method, path, body.as_deref(), Some(&self.token.clone())).await
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        self.call(reqwest::Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }

    pub async fn delete(&self, path: &str) -> (u16, Value) {
        self.call(reqwest::Method::DELETE, path, None).await
    }

    /// `POST /v2/calls/{id}/actions/{action}` with a raw JSON body.
    pub async fn action(&self, id: &str, action: &str, body: &str) -> (u16, Value) {
        self.send(reqwest::Method::POST, &format!("/v2/calls/{id}/actions/{action}"), Some(body), Some(&self.token))
            .await
    }

    /// The raw response of `METHOD path` with `token`.
    pub async fn request(&self, method: reqwest::Method, path: &str, token: Option<&str>) -> reqwest::Response {
        let mut r = self.http.request(method, self.url(path));
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        r.send().await.expect("the API answers")
    }

    /// GET of a full `url` with the token and extra headers: status, headers and
    /// body bytes.
    pub async fn fetch(&self, url: &str, headers: &[(&str, &str)]) -> (u16, reqwest::header::HeaderMap, Vec<u8>) {
        let mut r = self.http.get(url).bearer_auth(&self.token);
        for (k, v) in headers {
            r = r.header(*k, *v);
        }
        let resp = r.send().await.expect("download answers");
        let (status, h) = (resp.status().as_u16(), resp.headers().clone());
        (status, h, resp.bytes().await.unwrap().to_vec())
    }

    /// Polls `GET path` (asserting 200) until `done` holds for its body.
    pub async fn wait_for(&self, path: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + WAIT;
        loop {
            let (code, body) = self.get(path).await;
            assert_eq!(code, 200, "{path}: {body}");
            if done(&body) {
                return body;
            }
            assert!(Instant::now() < deadline, "{what}: last answer {body}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Polls `GET /v2/calls/{id}` until the call's `state` is `state`.
    pub async fn wait_call_state(&self, id: &str, state: &str) -> Value {
        self.wait_for(&format!("/v2/calls/{id}"), &format!("call {id} {state}"), |b| b["data"]["state"] == state).await
    }

    /// The `/metrics` page (the token's, plain text).
    pub async fn metrics(&self) -> String {
        let r = self.request(reqwest::Method::GET, "/metrics", Some(&self.token)).await;
        assert_eq!(r.status().as_u16(), 200, "/metrics");
        r.text().await.unwrap()
    }

    /// The value of the `/metrics` sample line starting with `name` (the full
    /// name with labels, e.g. `sipbridge_calls_active{trunk="pbx"}`); panics
    /// with the page when it is missing.
    pub async fn metric(&self, name: &str) -> f64 {
        let page = self.metrics().await;
        metric_in(&page, name).unwrap_or_else(|| panic!("{name} not in /metrics:\n{page}"))
    }
}

/// The value of the sample line starting with `name` in a `/metrics` page.
pub fn metric_in(page: &str, name: &str) -> Option<f64> {
    page.lines().find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
}

/// A webhook body's `data.event_type`.
pub fn event_type(b: &Value) -> &str {
    b["data"]["event_type"].as_str().unwrap_or_default()
}

/// A webhook body's `data.payload`.
pub fn payload(b: &Value) -> &Value {
    &b["data"]["payload"]
}

/// An RFC 3339 time field of a payload or record.
pub fn time(v: &Value, key: &str) -> std::time::SystemTime {
    humantime::parse_rfc3339(v[key].as_str().unwrap_or_else(|| panic!("{key} in {v}")))
        .unwrap_or_else(|e| panic!("{key} in {v}: {e}"))
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
