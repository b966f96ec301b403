//! Shared helpers for integration tests: start the real `sipbridge` binary with a
//! config of the test's own, listen on a systemd notify socket the test owns, and
//! stop the process by pid (always, also when a test fails). Daemons and SIPp runs
//! also die with the test process itself ([`spawn_tied`]): a test ended by
//! nextest's timeout (or any `kill -9`) leaves no orphan holding its ports.
#![allow(dead_code)] // each test binary uses a different subset

pub mod agent;
pub mod audio;
pub mod baresip;
pub mod gateway;
#[path = "../receivers/harness.rs"]
pub mod receivers;
pub mod recorded;
pub mod rtp;
pub mod s3;
pub mod spectrum;

use std::os::unix::net::UnixDatagram;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Mutex, OnceLock, mpsc};
use std::time::{Duration, Instant, SystemTime};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// Path of the binary under test.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_sipbridge"))
}

/// A spawn request for the spawner thread: the command and where its result goes.
type SpawnRequest = (Command, mpsc::Sender<std::io::Result<Child>>);

/// Spawns `cmd` so that its process is killed (SIGKILL) when the test process
/// dies, however it dies: `prctl(PR_SET_PDEATHSIG, SIGKILL)` in the child before
/// `exec` (kept across `exec`, so also through `sh -c 'exec ...'`).
///
/// The kernel sends that signal when the *thread* that forked the child ends, not
/// the process. Tests spawn from `spawn_blocking` threads, which tokio ends when
/// idle, so every tied child is forked by one thread of the harness's own that
/// lives as long as the test process.
pub fn spawn_tied(mut cmd: Command) -> std::io::Result<Child> {
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<SpawnRequest>>> = OnceLock::new();
    let parent = std::process::id() as i32;
    // SAFETY: only async-signal-safe calls between fork and exec (two syscalls;
    // the errors are made from raw errno values, without allocating).
    unsafe {
        cmd.pre_exec(move || {
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(|e| std::io::Error::from_raw_os_error(e as i32))?;
            // The test process died between fork and prctl: no signal will come.
            if nix::unistd::getppid().as_raw() != parent {
                return Err(std::io::Error::from_raw_os_error(nix::libc::ESRCH));
            }
            Ok(())
        });
    }
    let spawner = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnRequest>();
        std::thread::Builder::new()
            .name("spawner".into())
            .spawn(move || {
                for (mut cmd, back) in rx {
                    let _ = back.send(cmd.spawn());
                }
            })
            .expect("the spawner thread");
        Mutex::new(tx)
    });
    let (back, result) = mpsc::channel();
    spawner.lock().unwrap_or_else(|e| e.into_inner()).send((cmd, back)).expect("the spawner thread runs");
    result.recv().expect("the spawner thread answers")
}

/// A systemd-style notify socket (`NOTIFY_SOCKET`) owned by the test.
pub struct NotifySocket {
    pub path: PathBuf,
    sock: UnixDatagram,
    /// Every message received so far, in order.
    pub seen: Vec<String>,
}

impl NotifySocket {
    pub fn bind(dir: &Path) -> Self {
        let path = dir.join("notify.sock");
        let sock = UnixDatagram::bind(&path).expect("bind notify socket");
        Self { path, sock, seen: Vec::new() }
    }

    /// Waits (at most `limit`) for a datagram containing the line `line`; returns
    /// that datagram.
    pub fn wait_for(&mut self, line: &str, limit: Duration) -> Option<String> {
        let deadline = Instant::now() + limit;
        let mut buf = [0u8; 4096];
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            self.sock.set_read_timeout(Some(left.max(Duration::from_millis(1)))).ok()?;
            match self.sock.recv(&mut buf) {
                Ok(n) => {
                    let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
                    self.seen.push(msg.clone());
                    if msg.lines().any(|l| l == line || (line.ends_with('=') && l.starts_with(line))) {
                        return Some(msg);
                    }
                }
                Err(_) => return None,
            }
        }
    }
}

/// A running daemon; killed (SIGKILL, by pid) on drop if still running.
pub struct Daemon {
    pub child: Child,
    pub stderr_path: PathBuf,
}

impl Daemon {
    /// Starts `sipbridge run -c config` with `NOTIFY_SOCKET` and, when given, the
    /// watchdog variables. `WATCHDOG_PID` is the daemon's own pid: a shell exports
    /// `$$` and then `exec`s the daemon, which keeps the pid.
    pub fn start(config: &Path, notify: Option<&Path>, watchdog_usec: Option<u64>, env: &[(&str, &str)]) -> Self {
        let dir = config.parent().unwrap();
        let stderr_path = dir.join(format!("stderr-{}.log", Instant::now().elapsed().as_nanos() ^ rand_suffix()));
        let stderr = std::fs::File::create(&stderr_path).unwrap();
        let mut cmd = Command::new("sh");
        let script = if watchdog_usec.is_some() {
            "export WATCHDOG_PID=$$; exec \"$0\" run -c \"$1\""
        } else {
            "exec \"$0\" run -c \"$1\""
        };
        cmd.arg("-c").arg(script).arg(bin()).arg(config);
        cmd.env_remove("RUST_LOG").env_remove("JOURNAL_STREAM").env_remove("NOTIFY_SOCKET");
        cmd.env_remove("WATCHDOG_USEC").env_remove("WATCHDOG_PID");
        if let Some(n) = notify {
            cmd.env("NOTIFY_SOCKET", n);
        }
        if let Some(us) = watchdog_usec {
            cmd.env("WATCHDOG_USEC", us.to_string());
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(stderr);
        let child = spawn_tied(cmd).expect("spawn sipbridge");
        Self { child, stderr_path }
    }

    pub fn pid(&self) -> Pid {
        Pid::from_raw(self.child.id() as i32)
    }

    pub fn signal(&self, sig: Signal) {
        kill(self.pid(), sig).expect("send signal");
    }

    /// Waits at most `limit` for the process to exit.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        wait_child(&mut self.child, limit)
    }

    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = kill(self.pid(), Signal::SIGKILL);
            let _ = self.child.wait();
        }
    }
}

fn rand_suffix() -> u128 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    u128::from(N.fetch_add(1, Ordering::Relaxed)) << 64 | u128::from(std::process::id())
}

/// Runs the binary to completion with a bounded wait; returns (status, stdout, stderr).
pub fn run_cli(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut cmd = Command::new(bin());
    cmd.args(args).env_remove("SIPBRIDGE_CONFIG");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run sipbridge");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Writes `text` as `dir/sipbridge.toml`, starts the daemon on it with a notify
/// socket in `dir`, and waits (at most 30 s) for `READY=1`; panics with the
/// daemon's stderr otherwise.
pub fn start_ready(dir: &Path, text: &str) -> Daemon {
    let path = dir.join("sipbridge.toml");
    std::fs::write(&path, text).unwrap();
    let mut notify = NotifySocket::bind(dir);
    let d = Daemon::start(&path, Some(&notify.path), None, &[]);
    notify.wait_for("READY=1", Duration::from_secs(30)).unwrap_or_else(|| panic!("daemon not ready:\n{}", d.stderr()));
    d
}

/// One sample of `/metrics` on the API at `127.0.0.1:api_port` (plain HTTP/1.1,
/// `Authorization: Bearer token`): the value of the line starting with `name`.
/// Panics with the whole page when the sample is missing.
pub fn scrape_metric(api_port: u16, token: &str, name: &str) -> f64 {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", api_port)).expect("API");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(s, "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).expect("metrics answer");
    body.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
        .unwrap_or_else(|| panic!("{name} not in /metrics:\n{body}"))
}

/// A minimal valid config in `dir` with its own data dir; `extra` is appended.
pub fn write_config(dir: &Path, extra: &str) -> PathBuf {
    let data = dir.join("data");
    let text = format!(
        "[node]\nname = \"test\"\ndata_dir = \"{}\"\nshutdown_grace = \"2s\"\n\n[sip]\nlisten = [\"udp://127.0.0.1:0\"]\n\n[log]\nformat = \"text\"\n{extra}",
        data.display()
    );
    let path = dir.join("sipbridge.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// `root` and every process under it, by parent pid from /proc (a browser makes
/// process groups of its own, so a group kill misses some): for stopping by pid.
pub fn process_tree(root: u32) -> Vec<nix::unistd::Pid> {
    let parent_of = |pid: i32| -> Option<i32> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        stat.rsplit_once(')')?.1.split_whitespace().nth(1)?.parse().ok()
    };
    let all: Vec<i32> = std::fs::read_dir("/proc")
        .map(|d| d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok()).collect())
        .unwrap_or_default();
    let mut ours = vec![root as i32];
    let mut grew = true;
    while grew {
        grew = false;
        for &p in &all {
            if !ours.contains(&p) && parent_of(p).is_some_and(|pp| ours.contains(&pp)) {
                ours.push(p);
                grew = true;
            }
        }
    }
    ours.into_iter().map(nix::unistd::Pid::from_raw).collect()
}

/// A port that is free for both UDP and TCP on 127.0.0.1 right now (the kernel
/// picks it; the socket is closed again, so a small race remains, acceptable for
/// loopback tests whose ports come from the ephemeral range).
/// Waits at most `limit` for `child` to exit (polled every 20 ms); `None` if it
/// is still running then.
pub fn wait_child(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return Some(st);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn free_port() -> u16 {
    for _ in 0..50 {
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = udp.local_addr().unwrap().port();
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port");
}

/// An even port whose next `span` ports are free on UDP (SIPp's media ports).
pub fn free_even_block(span: u16) -> u16 {
    for _ in 0..200 {
        let p = free_port() & !1;
        if p < 1024 || p.checked_add(span).is_none() {
            continue;
        }
        if (p..p + span).all(|q| std::net::UdpSocket::bind(("127.0.0.1", q)).is_ok()) {
            return p;
        }
    }
    panic!("no free port block");
}

/// The time SIPp logged for the first message it `sent` (else received) that
/// starts with `start`, in its message trace `trace` ([`Sipp::messages`]:
/// `----- 2026-11-22 04:06:44.820604` then `UDP message sent` or `UDP message
/// received`).
pub fn sipp_at(trace: &str, sent: bool, start: &str) -> SystemTime {
    let (kind, what) = if sent { ("message sent", "sent") } else { ("message received", "received") };
    let lines: Vec<&str> = trace.lines().collect();
    for (i, l) in lines.iter().enumerate() {
        let Some(stamp) = l.strip_prefix("-----").map(|r| r.trim_start_matches('-').trim()) else { continue };
        let kind_matches = lines.get(i + 1).is_some_and(|n| n.contains(kind));
        let first = lines[i + 1..].iter().skip(1).find(|n| !n.trim().is_empty());
        if kind_matches && first.is_some_and(|f| f.trim_start().starts_with(start)) {
            // SIPp writes local time, which `Sipp::start` sets to UTC.
            return humantime::parse_rfc3339(&format!("{}Z", stamp.replace(' ', "T")))
                .unwrap_or_else(|e| panic!("SIPp time {stamp:?}: {e}"));
        }
    }
    panic!("SIPp {what} no {start}");
}

/// Path of a SIPp scenario in tests/sipp.
pub fn scenario(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/sipp").join(name)
}

/// A SIPp run (the real SIPp 3.6 from Debian's sip-tester), stopped by pid if it
/// outlives its limit.
pub struct Sipp {
    pub child: Child,
    pub dir: PathBuf,
    pub name: String,
}

impl Sipp {
    /// Starts `sipp` with `args` in `dir` (logs go there).
    pub fn start(dir: &Path, name: &str, args: &[String]) -> Self {
        let mut cmd = Command::new("sipp");
        // SIPp stamps its trace in local time: UTC makes the stamps comparable
        // with the daemon's (webhook times are UTC).
        cmd.current_dir(dir)
            .env("TZ", "UTC")
            .args(args)
            .args(["-nostdin", "-trace_err", "-error_file"])
            .arg(dir.join(format!("{name}.errors.log")))
            .args(["-trace_msg", "-message_file"])
            .arg(dir.join(format!("{name}.messages.log")))
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(dir.join(format!("{name}.stdout"))).unwrap())
            .stderr(std::fs::File::create(dir.join(format!("{name}.stderr"))).unwrap());
        let child = spawn_tied(cmd).expect("sipp (Debian package sip-tester) must be installed: scripts/setup-tests");
        Self { child, dir: dir.to_path_buf(), name: name.to_string() }
    }

    /// Waits at most `limit`; returns SIPp's exit code (0 = every call passed).
    pub fn wait(&mut self, limit: Duration) -> i32 {
        match wait_child(&mut self.child, limit) {
            Some(st) => st.code().unwrap_or(-1),
            None => {
                let _ = kill(Pid::from_raw(self.child.id() as i32), Signal::SIGKILL);
                let _ = self.child.wait();
                -2
            }
        }
    }

    /// SIPp's error log and message trace, for assertion messages.
    pub fn report(&self) -> String {
        let read = |s: &str| std::fs::read_to_string(self.dir.join(format!("{}.{s}", self.name))).unwrap_or_default();
        let msgs = read("messages.log");
        let tail: String = msgs.chars().rev().take(6000).collect::<Vec<_>>().into_iter().rev().collect();
        format!("--- sipp errors ---\n{}\n--- sipp messages (tail) ---\n{tail}", read("errors.log"))
    }

    /// The whole message trace.
    pub fn messages(&self) -> String {
        std::fs::read_to_string(self.dir.join(format!("{}.messages.log", self.name))).unwrap_or_default()
    }
}

impl Drop for Sipp {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = kill(Pid::from_raw(self.child.id() as i32), Signal::SIGKILL);
            let _ = self.child.wait();
        }
    }
}

/// A SIPp UAS (a carrier or a called party) on 127.0.0.3:`port` playing
/// `scenario_file` once, within 30 s; with `rtp_echo` it sends back the RTP it
/// gets. Logs go to `dir` under `name`.
pub fn sipp_uas(dir: &Path, name: &str, scenario_file: &str, port: u16, rtp_echo: bool) -> Sipp {
    let mut args: Vec<String> = [
        "-sf",
        &scenario(scenario_file).display().to_string(),
        "-i",
        "127.0.0.3",
        "-p",
        &port.to_string(),
        "-mp",
        &free_even_block(4).to_string(),
        "-m",
        "1",
        "-timeout",
        "30s",
        "-timeout_error",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    if rtp_echo {
        args.push("-rtp_echo".into());
    }
    Sipp::start(dir, name, &args)
}

/// A carrier: SIPp running `scenario_file` (a name in tests/sipp, or a path)
/// as UAS on 127.0.0.3:`port` for one call, media on a free even block; it
/// fails (non-zero exit) if the call has not ended within 30 s.
pub fn sipp_carrier(dir: &Path, name: &str, scenario_file: &str, port: u16) -> Sipp {
    let media = free_even_block(4).to_string();
    let sf = scenario(scenario_file).display().to_string();
    let port = port.to_string();
    let args = ["-sf", &sf, "-i", "127.0.0.3", "-p", &port, "-mp", &media];
    let args: Vec<String> = args
        .into_iter()
        .chain(["-m", "1", "-t", "u1", "-timeout", "30s", "-timeout_error"])
        .map(str::to_string)
        .collect();
    Sipp::start(dir, name, &args)
}

/// Standard SIPp arguments for one scenario run against `target`.
pub fn sipp_args(scenario_file: &str, service: &str, target: &str, local_ip: &str, extra: &[&str]) -> Vec<String> {
    let local_port = free_port();
    let media_port = free_even_block(4);
    let mut v: Vec<String> = vec![
        "-sf".into(),
        scenario(scenario_file).display().to_string(),
        "-s".into(),
        service.into(),
        target.into(),
        "-i".into(),
        local_ip.into(),
        "-p".into(),
        local_port.to_string(),
        "-mp".into(),
        media_port.to_string(),
        "-m".into(),
        "1".into(),
        "-timeout".into(),
        "30s".into(),
        "-timeout_error".into(),
    ];
    v.extend(extra.iter().map(|s| s.to_string()));
    v
}
