//! The test harness itself: a daemon a test starts dies with the test process,
//! however that process ends. A test ended by nextest's timeout (SIGTERM, then
//! SIGKILL of the test process) once left its daemon holding SIP and API ports for
//! minutes; `common::spawn_tied` gives every daemon `PR_SET_PDEATHSIG` = SIGKILL.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::gateway::Gateway;
use common::spawn_tied;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// The holder's directory; set only for the holder run as a child process.
/// (Not `SIPBRIDGE_*`: the daemon inherits it, and refuses unknown variables of
/// its own prefix.)
const HOLDER_DIR: &str = "TEST_HARNESS_HOLDER_DIR";
const WAIT: Duration = Duration::from_secs(40);

/// A daemon started from a thread that then ends (as tokio's blocking threads do
/// when idle) outlives that thread: `spawn_tied` forks from a thread of its own,
/// not the caller's (`PR_SET_PDEATHSIG` fires when the forking *thread* ends).
///
/// [`a_daemon_dies_with_the_test_process_that_started_it`] also runs this test as
/// a process of its own, with [`HOLDER_DIR`] set: then it keeps the daemon,
/// writes `<daemon pid> <sip port>` to `daemon` there and waits to be killed.
#[test]
fn a_daemon_outlives_the_thread_that_started_it() {
    let holder = std::env::var(HOLDER_DIR).ok().map(PathBuf::from);
    let tmp = tempfile::tempdir().unwrap();
    let dir = holder.clone().unwrap_or_else(|| tmp.path().to_path_buf());
    let d = dir.clone();
    let mut gw = std::thread::spawn(move || Gateway::builder(&d).start()).join().unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert!(gw.daemon.is_running(), "the daemon outlives the thread that started it:\n{}", gw.stderr());
    if holder.is_none() {
        gw.stop();
        return;
    }
    std::fs::write(dir.join("daemon.part"), format!("{} {}", gw.daemon.child.id(), gw.sip_port)).unwrap();
    std::fs::rename(dir.join("daemon.part"), dir.join("daemon")).unwrap();
    std::thread::sleep(Duration::from_secs(120));
}

/// Whether `pid` is gone: no such process, or a zombie (dead, not yet reaped by
/// whoever adopted it).
fn gone(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

fn read_daemon(dir: &Path) -> Option<(i32, u16)> {
    let text = std::fs::read_to_string(dir.join("daemon")).ok()?;
    let (pid, port) = text.split_once(' ')?;
    Some((pid.parse().ok()?, port.parse().ok()?))
}

#[test]
fn a_daemon_dies_with_the_test_process_that_started_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(["a_daemon_outlives_the_thread_that_started_it", "--exact", "--nocapture"])
        .env(HOLDER_DIR, dir.path())
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(dir.path().join("holder.out")).unwrap())
        .stderr(std::fs::File::create(dir.path().join("holder.err")).unwrap());
    let mut holder = spawn_tied(cmd).expect("run the holder");
    let report = || {
        let read = |f: &str| std::fs::read_to_string(dir.path().join(f)).unwrap_or_default();
        format!("--- holder ---\n{}{}", read("holder.out"), read("holder.err"))
    };
    let deadline = Instant::now() + WAIT;
    let (pid, port) = loop {
        if let Some(d) = read_daemon(dir.path()) {
            break d;
        }
        assert!(holder.try_wait().unwrap().is_none(), "the holder ended early\n{}", report());
        assert!(Instant::now() < deadline, "the holder never started its daemon\n{}", report());
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(!gone(pid), "the daemon runs while the holder does");

    // The test process is killed, as nextest's timeout does: nothing of its own
    // runs (no Drop), only the kernel can end the daemon.
    kill(Pid::from_raw(holder.id() as i32), Signal::SIGKILL).unwrap();
    holder.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !gone(pid) {
        if Instant::now() >= deadline {
            // Do not leave it behind when the harness is broken.
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            panic!("the daemon (pid {pid}) outlived its test process\n{}", report());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    // And its SIP port is free again: once its last thread has exited (the
    // leader shows as a zombie while the other threads still close the files they
    // share), so this waits too, within the same bound.
    loop {
        match std::net::UdpSocket::bind(("127.0.0.1", port)) {
            Ok(_) => break,
            Err(e) => assert!(Instant::now() < deadline, "SIP port {port} still held: {e}"),
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
