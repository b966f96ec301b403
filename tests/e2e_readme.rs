//! Issue 11, scenario 4: the README's first command works as written.
//!
//! The command is read from README.md (the first line of its first code block), so
//! this test follows the README when it changes, and run as written with `bash -c`
//! from the repository's root: today `scripts/demo`, which builds the release binary
//! (`cargo run --release --locked`) and runs it on `config/demo.toml` with its data
//! in `./var`. Then, as the README says, a call from this machine: SIPp's
//! `uac_pcap` (G.711 A-law speech played from SIPp's pcap, then an RFC 2833 digit)
//! to `echo@127.0.0.1:5060`. What SIPp gets back is captured on loopback with
//! tshark and must be its own speech, echoed ~200 ms later by the built-in echo
//! agent; the recording must be under `./var/recordings/`, speech left, echo right.
//!
//! The demo listens on fixed ports (SIP 5060 UDP/TCP, API 8080): if one is taken
//! the test fails saying so. It stops the daemon by its pid and removes only what
//! it created under `./var`. The pid: `bash -c` execs `scripts/demo`, which execs
//! `cargo run`, which on Unix execs the binary, so the process the test started
//! becomes the daemon; the test does not rely on it and looks for the process
//! whose executable is `sipbridge` in the tree it started (/proc).
//!
//! The first run compiles the release profile: 14 min on a 2-core machine shared
//! with other builds (measured 2026-11-22); later runs take seconds. The wait for
//! READY is bounded by `BUILD_AND_START` and the test prints how long build and
//! start took.

mod common;

use std::collections::HashSet;
use std::net::{TcpListener, UdpSocket};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::audio;
use common::{NotifySocket, Sipp, free_even_block, free_port};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use sipbridge::media::g711::G711;

/// Bound of the wait for READY=1: a release build from scratch on a 2-core box
/// plus the start.
const BUILD_AND_START: Duration = Duration::from_secs(40 * 60);
const WAIT: Duration = Duration::from_secs(40);

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The lines of README.md's first fenced code block.
fn readme_first_block() -> Vec<String> {
    let readme = std::fs::read_to_string(repo().join("README.md")).expect("README.md");
    let mut lines = readme.lines().skip_while(|l| !l.starts_with("```"));
    lines.next().expect("README.md has a code block");
    lines.take_while(|l| !l.starts_with("```")).map(str::to_string).collect()
}

/// The first line of README.md's first fenced code block.
fn readme_first_command() -> String {
    readme_first_block().into_iter().next().expect("README.md's first code block is empty")
}

/// The README's second command is the test command, and CI runs exactly it.
#[test]
fn the_readmes_second_command_is_what_ci_runs() {
    let block = readme_first_block();
    let second = block.get(1).expect("README.md's first code block has a second command");
    let command = second.split('#').next().unwrap_or_default().trim();
    assert!(!command.is_empty(), "{second:?}");
    let program = repo().join(command.split_whitespace().next().unwrap());
    assert!(program.is_file(), "the README's second command {command:?} exists in the repository");
    let ci = std::fs::read_to_string(repo().join(".ci/run")).expect(".ci/run exists");
    let calls: Vec<&str> = ci
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.split(|c: char| c.is_whitespace() || c == ';' || c == '|').any(|w| w == command))
        .collect();
    assert!(!calls.is_empty(), ".ci/run calls the README's test command {command:?}:\n{ci}");
}

/// Fails the test with a clear message when the demo's fixed ports are taken.
fn demo_ports_free() {
    let taken = |what: &str, r: std::io::Result<()>| {
        if let Err(e) = r {
            panic!(
                "{what} on 127.0.0.1 is busy ({e}): the README's demo (config/demo.toml) needs it. Another SIP \
                 server, another sipbridge or another run of this test uses it; stop it and run again"
            );
        }
    };
    taken("port 5060/udp", UdpSocket::bind("127.0.0.1:5060").map(drop));
    taken("port 5060/tcp", TcpListener::bind("127.0.0.1:5060").map(drop));
    taken("port 8080/tcp (the demo's API)", TcpListener::bind("127.0.0.1:8080").map(drop));
}

/// Every path under `dir` (files and directories).
fn tree(dir: &Path) -> HashSet<PathBuf> {
    let mut out = HashSet::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p.clone());
            }
            out.insert(p);
        }
    }
    out
}

/// Removes what appeared under `./var` since `before` (all of `./var` if it did
/// not exist), on drop: also when the test fails.
struct VarCleanup {
    var: PathBuf,
    existed: bool,
    before: HashSet<PathBuf>,
}

impl Drop for VarCleanup {
    fn drop(&mut self) {
        if !self.existed {
            let _ = std::fs::remove_dir_all(&self.var);
            return;
        }
        let mut new: Vec<PathBuf> = tree(&self.var).difference(&self.before).cloned().collect();
        // Deepest first, so directories are empty when their turn comes.
        new.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
        for p in new {
            if p.is_dir() {
                let _ = std::fs::remove_dir(&p);
            } else {
                let _ = std::fs::remove_file(&p);
            }
        }
    }
}

/// The parent pid of `pid`, from /proc.
fn ppid(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // `pid (comm) state ppid ...`; comm may hold spaces and parentheses.
    stat.rsplit_once(')')?.1.split_whitespace().nth(1)?.parse().ok()
}

/// The process `root` or one of its descendants whose executable is named
/// `sipbridge`.
fn find_daemon(root: i32) -> Option<i32> {
    let pids: Vec<i32> =
        std::fs::read_dir("/proc").ok()?.flatten().filter_map(|e| e.file_name().to_str()?.parse().ok()).collect();
    pids.into_iter().find(|&p| {
        let is_daemon = std::fs::read_link(format!("/proc/{p}/exe"))
            .is_ok_and(|exe| exe.file_name().is_some_and(|n| n == "sipbridge"));
        let mut up = Some(p);
        let mut under_root = false;
        for _ in 0..16 {
            match up {
                Some(q) if q == root => {
                    under_root = true;
                    break;
                }
                Some(q) if q > 1 => up = ppid(q),
                _ => break,
            }
        }
        is_daemon && under_root
    })
}

/// The README's command, in a process group of its own (so that a failed test can
/// stop cargo and its compilers with it), and the daemon once it runs.
struct Demo {
    child: Child,
    daemon: Option<i32>,
}

impl Drop for Demo {
    fn drop(&mut self) {
        if let Some(d) = self.daemon {
            let _ = kill(Pid::from_raw(d), Signal::SIGKILL);
        }
        if self.child.try_wait().ok().flatten().is_none() {
            // The group this test created for the command: cargo and what it runs.
            let _ = kill(Pid::from_raw(-(self.child.id() as i32)), Signal::SIGKILL);
            let _ = self.child.wait();
        }
    }
}

/// tshark capturing UDP to and from `port` on loopback into `file` (classic pcap).
struct Capture {
    child: Child,
    file: PathBuf,
}

impl Capture {
    fn start(dir: &Path, port: u16) -> Self {
        let file = dir.join("echo.pcap");
        let log = dir.join("tshark.log");
        let child = Command::new("tshark")
            .args(["-i", "lo", "-F", "pcap", "-f", &format!("udp port {port}"), "-w"])
            .arg(&file)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("tshark is installed (scripts/setup-tests)");
        let mut c = Self { child, file };
        let deadline = Instant::now() + WAIT;
        loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if text.contains("Capturing on") {
                return c;
            }
            let exited = c.child.try_wait().ok().flatten();
            assert!(
                exited.is_none() && Instant::now() < deadline,
                "tshark cannot capture on lo (it needs root or CAP_NET_RAW): {text}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops it (SIGINT by pid: it finishes the file) and returns the file.
    fn stop(mut self) -> PathBuf {
        let _ = kill(Pid::from_raw(self.child.id() as i32), Signal::SIGINT);
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        self.file.clone()
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = kill(Pid::from_raw(self.child.id() as i32), Signal::SIGKILL);
            let _ = self.child.wait();
        }
    }
}

/// One captured RTP packet.
struct Rtp {
    at: f64,
    to_port: u16,
    sequence: u16,
    payload_type: u8,
    payload: Vec<u8>,
}

/// The RTP packets of a classic pcap captured on Linux loopback (Ethernet
/// link type, IPv4, UDP).
fn rtp_packets(file: &Path) -> Vec<Rtp> {
    let pcap = std::fs::read(file).unwrap_or_default();
    let mut out = Vec::new();
    if pcap.len() < 24 || pcap[..4] != [0xd4, 0xc3, 0xb2, 0xa1] {
        return out;
    }
    let mut off = 24;
    while off + 16 <= pcap.len() {
        let u32_at = |i: usize| u32::from_le_bytes(pcap[i..i + 4].try_into().unwrap());
        let at = f64::from(u32_at(off)) + f64::from(u32_at(off + 4)) / 1e6;
        let incl = u32_at(off + 8) as usize;
        let Some(frame) = pcap.get(off + 16..off + 16 + incl) else { break };
        off += 16 + incl;
        if frame.len() < 14 + 20 + 8 + 12 || frame[12..14] != [0x08, 0x00] {
            continue;
        }
        let ip = &frame[14..];
        let udp = &ip[usize::from(ip[0] & 0x0f) * 4..];
        let to_port = u16::from_be_bytes([udp[2], udp[3]]);
        let rtp = &udp[8..];
        if rtp.len() < 12 || rtp[0] >> 6 != 2 || (200..=204).contains(&rtp[1]) {
            continue;
        }
        let head = 12 + 4 * usize::from(rtp[0] & 0x0f);
        out.push(Rtp {
            at,
            to_port,
            sequence: u16::from_be_bytes([rtp[2], rtp[3]]),
            payload_type: rtp[1] & 0x7f,
            payload: rtp.get(head..).unwrap_or_default().to_vec(),
        });
    }
    out
}

/// Decoded audio of G.711 packets, in sequence order, and the time of the first
/// loud one.
fn decode(packets: &[&Rtp]) -> (Vec<i16>, Option<f64>) {
    let base = packets.first().map_or(0, |p| p.sequence);
    let mut sorted: Vec<&Rtp> =
        packets.iter().copied().filter(|p| p.payload_type == 0 || p.payload_type == 8).collect();
    sorted.sort_by_key(|p| p.sequence.wrapping_sub(base));
    let mut pcm = Vec::new();
    let mut first_loud = None;
    for p in sorted {
        let law = if p.payload_type == 0 { G711::Pcmu } else { G711::Pcma };
        let s: Vec<i16> = p.payload.iter().map(|&b| law.decode_sample(b)).collect();
        if first_loud.is_none() && audio::rms(&s) > 300.0 {
            first_loud = Some(p.at);
        }
        pcm.extend(s);
    }
    (pcm, first_loud)
}

/// The environment of a user's shell: without the variables `cargo test` gives a
/// test (CARGO_MANIFEST_DIR, CARGO_PKG_*, OUT_DIR, ...). ring's build script reruns
/// when CARGO_MANIFEST_DIR changes, so with them the README's `cargo run --release`
/// rebuilt ring and everything above it, and the package build after the tests
/// rebuilt it all again (issue 18: one release build per run).
fn shell_environment(cmd: &mut Command) {
    // What cargo (and nextest) set for a test process; a user's own CARGO_HOME,
    // CARGO_TARGET_DIR, CARGO_BUILD_* and the like stay.
    const SET_FOR_TESTS: [&str; 9] = [
        "CARGO",
        "CARGO_MANIFEST_DIR",
        "CARGO_MANIFEST_PATH",
        "CARGO_CRATE_NAME",
        "CARGO_BIN_NAME",
        "CARGO_PRIMARY_PACKAGE",
        "CARGO_TARGET_TMPDIR",
        "CARGO_RUSTC_CURRENT_DIR",
        "OUT_DIR",
    ];
    for (key, _) in std::env::vars_os() {
        let Some(key) = key.to_str() else { continue };
        if SET_FOR_TESTS.contains(&key)
            || key.starts_with("CARGO_PKG_")
            || key.starts_with("CARGO_BIN_EXE_")
            || key.starts_with("NEXTEST")
        {
            cmd.env_remove(key);
        }
    }
}

#[test]
fn the_readmes_first_command_runs_the_demo_that_echoes_and_records_a_call() {
    let command = readme_first_command();
    demo_ports_free();
    let var = repo().join("var");
    let _cleanup = VarCleanup { existed: var.exists(), before: tree(&var), var: var.clone() };
    let recordings_before = tree(&var.join("recordings"));
    let dir = tempfile::tempdir().unwrap();
    let mut notify = NotifySocket::bind(dir.path());

    // The command as written, from the repository's root.
    let t0 = Instant::now();
    let mut bash = Command::new("bash");
    shell_environment(&mut bash);
    let mut demo = Demo {
        child: bash
            .arg("-c")
            .arg(&command)
            .current_dir(repo())
            .env("NOTIFY_SOCKET", &notify.path)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(dir.path().join("demo.stdout")).unwrap())
            .stderr(std::fs::File::create(dir.path().join("demo.stderr")).unwrap())
            .process_group(0)
            .spawn()
            .expect("bash runs the README's command"),
        daemon: None,
    };
    let output = || {
        let text = std::fs::read_to_string(dir.path().join("demo.stderr")).unwrap_or_default()
            + &std::fs::read_to_string(dir.path().join("demo.stdout")).unwrap_or_default();
        let tail: String = text.chars().rev().take(6000).collect::<Vec<_>>().into_iter().rev().collect();
        format!("README command {command:?}, output (tail):\n{tail}")
    };
    while notify.wait_for("READY=1", Duration::from_secs(5)).is_none() {
        if let Some(status) = demo.child.try_wait().unwrap() {
            panic!("the README's command exited ({status}) before the daemon was ready: {}", output());
        }
        assert!(t0.elapsed() < BUILD_AND_START, "not ready within {BUILD_AND_START:?}: {}", output());
    }
    let ready_after = t0.elapsed();
    let daemon = find_daemon(demo.child.id() as i32).unwrap_or_else(|| panic!("no sipbridge under it: {}", output()));
    demo.daemon = Some(daemon);
    let cmdline = std::fs::read(format!("/proc/{daemon}/cmdline")).unwrap_or_default();
    let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
    let cwd = std::fs::read_link(format!("/proc/{daemon}/cwd")).unwrap_or_default();
    eprintln!(
        "README command {command:?}: daemon ready {:.1} s after the command started (build + start); \
         pid {daemon}: {cmdline}in {}",
        ready_after.as_secs_f64(),
        cwd.display()
    );
    assert!(cmdline.contains("run -c config/demo.toml"), "{cmdline}");
    assert_eq!(cwd.canonicalize().ok(), repo().canonicalize().ok(), "the daemon runs in the repository");

    // The README's call: SIPp's uac_pcap to echo@127.0.0.1:5060, captured.
    std::fs::create_dir_all(dir.path().join("pcap")).unwrap();
    for f in ["g711a.pcap", "dtmf_2833_1.pcap"] {
        std::fs::copy(format!("/usr/share/sip-tester/{f}"), dir.path().join("pcap").join(f)).unwrap();
    }
    let media = free_even_block(4);
    let capture = Capture::start(dir.path(), media);
    let args: Vec<String> = [
        "-sn",
        "uac_pcap",
        "-s",
        "echo",
        "127.0.0.1:5060",
        "-m",
        "1",
        "-i",
        "127.0.0.1",
        "-p",
        &free_port().to_string(),
        "-mp",
        &media.to_string(),
        "-timeout",
        "40s",
        "-timeout_error",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut sipp = Sipp::start(dir.path(), "uac_pcap", &args);
    let code = sipp.wait(Duration::from_secs(45));
    assert_eq!(code, 0, "SIPp's uac_pcap call to the demo: {}", sipp.report());
    std::thread::sleep(Duration::from_millis(300)); // the last echoed packets
    let packets = rtp_packets(&capture.stop());
    let sent: Vec<&Rtp> = packets.iter().filter(|p| p.to_port != media).collect();
    let back: Vec<&Rtp> = packets.iter().filter(|p| p.to_port == media).collect();
    let speech = audio::pcap_speech(Path::new("/usr/share/sip-tester/g711a.pcap"));
    let (sent_pcm, sent_first) = decode(&sent);
    let (echo_pcm, echo_first) = decode(&back);
    let found = audio::find(&speech, &echo_pcm, 0..16_000);
    let delay = echo_first.zip(sent_first).map(|(e, s)| e - s);
    eprintln!(
        "uac_pcap: {} RTP packets sent ({:.2} s of G.711), {} came back; the speech is in the echo: ncc {:.3}, \
         {}/{} segments; the echo starts {:.0} ms after the speech",
        sent.len(),
        audio::seconds(sent_pcm.len()),
        back.len(),
        found.ncc,
        found.segments.0,
        found.segments.1,
        delay.unwrap_or(f64::NAN) * 1000.0
    );
    assert!(back.len() + 20 >= sent.len(), "every packet echoed: {} sent, {} back", sent.len(), back.len());
    assert!(found.is_clear(), "SIPp hears its own speech back: {found:?}");
    assert!(delay.is_some_and(|d| (0.15..0.4).contains(&d)), "echoed about 200 ms later: {delay:?}");

    // The recording, under ./var/recordings/.
    let deadline = Instant::now() + WAIT;
    let wav = loop {
        let new: Vec<PathBuf> = tree(&var.join("recordings"))
            .difference(&recordings_before)
            .filter(|p| p.extension().is_some_and(|e| e == "wav"))
            .cloned()
            .collect();
        if let Some(w) = new.first() {
            break w.clone();
        }
        assert!(Instant::now() < deadline, "no new recording under ./var/recordings/: {}", output());
        std::thread::sleep(Duration::from_millis(50));
    };
    let (spec, left, right) = audio::read_stereo(&wav);
    let on_left = audio::find(&speech, &left, -8000..16_000);
    let on_right = audio::find(&speech, &right, -8000..16_000);
    eprintln!(
        "recording {}: {:.2} s; speech on the left at {:.3} s (ncc {:.3}), echo on the right at {:.3} s (ncc {:.3})",
        wav.strip_prefix(repo()).unwrap_or(&wav).display(),
        audio::seconds(left.len()),
        on_left.at_seconds(),
        on_left.ncc,
        on_right.at_seconds(),
        on_right.ncc
    );
    assert_eq!((spec.channels, spec.sample_rate), (2, 8000));
    assert!(on_left.is_clear() && on_right.is_clear(), "{on_left:?} {on_right:?}");
    let echo_lag = on_right.at - on_left.at;
    assert!((1200..=3200).contains(&echo_lag), "the echo is ~200 ms behind: {echo_lag} samples");

    // Ctrl-C's equivalent for a service: SIGTERM to the daemon, by pid; cargo exits with it.
    kill(Pid::from_raw(daemon), Signal::SIGTERM).unwrap();
    let deadline = Instant::now() + WAIT;
    let status = loop {
        if let Some(s) = demo.child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "the demo did not stop on SIGTERM: {}", output());
        std::thread::sleep(Duration::from_millis(50));
    };
    demo.daemon = None;
    assert_eq!(status.code(), Some(0), "the demo stopped cleanly: {}", output());
}
