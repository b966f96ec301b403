//! The shipped unit file, checked by systemd's own tools: `systemd-analyze verify`
//! must print nothing on stderr (it exits 0 even on unknown keys), and
//! `systemd-analyze security --offline=true` must rate the exposure at 2.0 or lower.

use std::path::Path;
use std::process::Command;

fn unit_text() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/systemd/sipbridge.service")).unwrap()
}

/// A copy of the unit whose commands point at the binary under test (the installed
/// path does not exist on a build machine; the package test verifies the installed
/// unit as it is).
fn unit_copy(dir: &Path) -> std::path::PathBuf {
    let text = unit_text().replace("/usr/bin/sipbridge", env!("CARGO_BIN_EXE_sipbridge"));
    let path = dir.join("sipbridge.service");
    std::fs::write(&path, text).unwrap();
    path
}

fn systemd_analyze(args: &[&str]) -> std::process::Output {
    Command::new("systemd-analyze")
        .args(args)
        .output()
        .expect("systemd-analyze is missing: scripts/test installs it (Debian package systemd)")
}

#[test]
fn unit_verifies_without_complaints() {
    let dir = tempfile::tempdir().unwrap();
    let unit = unit_copy(dir.path());
    // --man=no: the man page is installed by the package, not present here.
    let out = systemd_analyze(&["verify", "--man=no", unit.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && stderr.trim().is_empty(), "systemd-analyze verify:\n{stderr}");
}

#[test]
fn unit_exposure_is_at_most_2_0() {
    let dir = tempfile::tempdir().unwrap();
    let unit = unit_copy(dir.path());
    let out = systemd_analyze(&["security", "--offline=true", "--no-pager", unit.to_str().unwrap()]);
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let line = text.lines().find(|l| l.contains("Overall exposure level")).unwrap_or_else(|| panic!("{text}"));
    let level: f64 = line
        .split(':')
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("cannot read the level from {line:?}"));
    assert!(level <= 2.0, "exposure {level} > 2.0:\n{text}");
}

/// Issue 17: memory and task limits suited to a 1 GiB box, and above what the
/// daemon itself may use (its blocking-thread cap).
#[test]
fn unit_caps_memory_and_tasks_for_a_1_gib_box() {
    let text = unit_text();
    let value = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key).and_then(|v| v.strip_prefix('=')))
            .unwrap_or_else(|| panic!("{key}= missing"))
            .trim()
            .to_string()
    };
    let mib = |v: &str| -> u64 {
        let n: u64 = v.trim_end_matches(['M', 'G']).parse().unwrap();
        if v.ends_with('G') { n * 1024 } else { n }
    };
    let (high, max) = (mib(&value("MemoryHigh")), mib(&value("MemoryMax")));
    assert!(high < max && max <= 1024 && high >= 256, "MemoryHigh={high}M MemoryMax={max}M");
    let tasks: usize = value("TasksMax").parse().unwrap();
    assert!((sipbridge::daemon::run::MAX_BLOCKING_THREADS + 64..=1024).contains(&tasks), "TasksMax={tasks}");
}

#[test]
fn unit_has_what_the_daemon_relies_on() {
    let text = unit_text();
    for line in [
        "Type=notify",
        "Restart=on-failure",
        "User=sipbridge",
        "StateDirectory=sipbridge",
        "ConfigurationDirectory=sipbridge",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "RestartPreventExitStatus=78",
        "CapabilityBoundingSet=",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "SystemCallFilter=@system-service",
    ] {
        assert!(text.lines().any(|l| l == line), "unit lacks {line:?}");
    }
    assert!(text.lines().any(|l| l.starts_with("WatchdogSec=")));
}
