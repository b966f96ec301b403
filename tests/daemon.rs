//! The daemon's lifecycle as systemd sees it, on the real binary: sd_notify
//! READY/WATCHDOG/STOPPING, SIGTERM, SIGHUP reloads, the data-dir lock, logs free
//! of secrets; and the CLI's check-config and keygen.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use base64::Engine;
use common::*;
use ed25519_dalek::{Signer, Verifier, VerifyingKey};
use nix::sys::signal::Signal;

const WAIT: Duration = Duration::from_secs(20);

#[test]
fn notify_ready_watchdog_stopping_and_clean_exit_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "");
    let mut notify = NotifySocket::bind(dir.path());
    // WATCHDOG_USEC = 200 ms: the daemon must ping every 100 ms.
    let mut d = Daemon::start(&config, Some(&notify.path), Some(200_000), &[]);

    let ready = notify.wait_for("READY=1", WAIT).unwrap_or_else(|| panic!("no READY=1; stderr:\n{}", d.stderr()));
    assert!(ready.lines().any(|l| l.starts_with("STATUS=")), "READY carries a STATUS line: {ready:?}");
    for i in 0..3 {
        notify.wait_for("WATCHDOG=1", WAIT).unwrap_or_else(|| panic!("watchdog ping {i} missing"));
    }
    d.signal(Signal::SIGTERM);
    notify.wait_for("STOPPING=1", WAIT).expect("STOPPING=1 after SIGTERM");
    let status = d.wait_exit(WAIT).expect("exits after SIGTERM");
    assert_eq!(status.code(), Some(0), "stderr:\n{}", d.stderr());
}

#[test]
fn no_watchdog_pings_for_another_pid() {
    // WATCHDOG_PID names another process: sd_watchdog_enabled(3) says no.
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "");
    let mut notify = NotifySocket::bind(dir.path());
    let mut d = Daemon::start(&config, Some(&notify.path), None, &[("WATCHDOG_USEC", "100000"), ("WATCHDOG_PID", "1")]);
    notify.wait_for("READY=1", WAIT).expect("READY=1");
    d.signal(Signal::SIGTERM);
    notify.wait_for("STOPPING=1", WAIT).expect("STOPPING=1");
    assert_eq!(d.wait_exit(WAIT).and_then(|s| s.code()), Some(0));
    assert!(!notify.seen.iter().any(|m| m.contains("WATCHDOG=1")), "pinged for a watchdog that is not ours");
}

#[test]
fn sighup_with_a_broken_config_keeps_running_and_logs_every_error() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "");
    let mut notify = NotifySocket::bind(dir.path());
    let mut d = Daemon::start(&config, Some(&notify.path), None, &[]);
    notify.wait_for("READY=1", WAIT).expect("READY=1");

    let good = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, format!("{good}\n[rtp]\ntimeout = \"soon\"\n[bogus]\n")).unwrap();
    d.signal(Signal::SIGHUP);
    notify.wait_for("RELOADING=1", WAIT).expect("RELOADING=1");
    let after = notify.wait_for("READY=1", WAIT).expect("READY=1 after the failed reload");
    assert!(after.contains("config reload failed (2 errors), old config kept"), "{after:?}");
    assert!(d.is_running(), "a bad reload must not stop the daemon");
    let log = d.stderr();
    let path = config.display().to_string();
    assert!(log.contains(&format!("{path}:13: rtp.timeout: \"soon\" is not a duration")), "log:\n{log}");
    assert!(log.contains(&format!("{path}:14: bogus: unknown key")), "log:\n{log}");

    // A valid config is then applied.
    std::fs::write(&config, format!("{good}\n[rtp]\ntimeout = \"45s\"\n")).unwrap();
    d.signal(Signal::SIGHUP);
    notify.wait_for("RELOADING=1", WAIT).expect("RELOADING=1");
    let ok = notify.wait_for("READY=1", WAIT).expect("READY=1");
    assert!(!ok.contains("reload failed"), "{ok:?}");
    assert!(d.stderr().contains("configuration reloaded"));

    d.signal(Signal::SIGTERM);
    assert_eq!(d.wait_exit(WAIT).and_then(|s| s.code()), Some(0));
}

#[test]
fn a_second_instance_on_the_same_data_dir_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "");
    let mut notify = NotifySocket::bind(dir.path());
    let mut first = Daemon::start(&config, Some(&notify.path), None, &[]);
    notify.wait_for("READY=1", WAIT).expect("first instance READY=1");

    let mut second = Daemon::start(&config, None, None, &[]);
    let status = second.wait_exit(WAIT).expect("the second instance fails fast");
    assert_eq!(status.code(), Some(1));
    let msg = second.stderr();
    assert!(
        msg.contains(&format!("another sipbridge (pid {}) is already running", first.child.id())),
        "stderr:\n{msg}"
    );
    assert!(first.is_running());
    first.signal(Signal::SIGTERM);
    assert_eq!(first.wait_exit(WAIT).and_then(|s| s.code()), Some(0));
}

#[test]
fn secrets_stay_out_of_the_log_even_at_trace_level() {
    let dir = tempfile::tempdir().unwrap();
    let extra = r#"
[[trunk]]
name = "carrier"
proxy = "sip:127.0.0.1:5999"
username = "user"
password = "trunk-password-SECRET1"
inbound_username = "peer"
inbound_password = "inbound-password-SECRET2"

[[agent]]
name = "a"
url = "ws://127.0.0.1:9/x"
auth_token = "agent-token-SECRET3"

[api]
token = "api-token-SECRET4"
"#;
    let config = write_config(dir.path(), extra);
    let mut notify = NotifySocket::bind(dir.path());
    let mut d = Daemon::start(&config, Some(&notify.path), None, &[("RUST_LOG", "trace")]);
    notify.wait_for("READY=1", WAIT).expect("READY=1");
    d.signal(Signal::SIGHUP);
    notify.wait_for("READY=1", WAIT).expect("READY=1 after reload");
    d.signal(Signal::SIGTERM);
    assert_eq!(d.wait_exit(WAIT).and_then(|s| s.code()), Some(0));
    let log = d.stderr();
    assert!(log.contains("sipbridge ready"), "the log was captured: {log}");
    for secret in ["SECRET1", "SECRET2", "SECRET3", "SECRET4"] {
        assert!(!log.contains(secret), "{secret} leaked into the log:\n{log}");
    }
}

#[test]
fn run_with_a_bad_config_exits_78_and_lists_the_errors() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "[rtp]\nport_range = \"5-4\"\n");
    let mut d = Daemon::start(&config, None, None, &[]);
    let status = d.wait_exit(WAIT).expect("exits");
    assert_eq!(status.code(), Some(78));
    assert!(d.stderr().contains("rtp.port_range"), "{}", d.stderr());
}

#[test]
fn check_config_exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    let good = write_config(dir.path(), "");
    let (code, out, _) = run_cli(&["check-config", "-c", good.to_str().unwrap()], &[]);
    assert_eq!(code, 0);
    assert!(out.contains(": OK"));

    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[node]\nmax_calls = -1\n\n[[trunk]]\nname = \"t\"\ninbound_allow = [\"64.16.250\"]\n")
        .unwrap();
    let (code, _, err) = run_cli(&["check-config", "-c", bad.to_str().unwrap()], &[]);
    assert_eq!(code, 78, "EX_CONFIG, like `run`");
    let b = bad.display();
    assert!(err.contains(&format!("{b}:2: node.max_calls: -1 is out of range")), "{err}");
    assert!(
        err.contains(&format!("{b}:6: trunk[0].inbound_allow[0]: \"64.16.250\" is not an IP address or CIDR")),
        "{err}"
    );
    assert!(err.contains("2 errors"), "{err}");

    // The environment overrides the file, and its errors name the variable.
    let (code, _, err) =
        run_cli(&["check-config", "-c", good.to_str().unwrap()], &[("SIPBRIDGE_NODE__MAX_CALLS", "many")]);
    assert_eq!(code, 78);
    assert!(
        err.contains("environment SIPBRIDGE_NODE__MAX_CALLS: node.max_calls: \"many\" is not a whole number"),
        "{err}"
    );

    let (code, _, err) = run_cli(&["check-config", "-c", "/nonexistent.toml"], &[]);
    assert_eq!(code, 78);
    assert!(err.contains("cannot read the config file"), "{err}");
}

#[test]
fn the_design_example_passes_check_config_with_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("webhook.key");
    let (code, _, _) = run_cli(&["keygen", "--out", key.to_str().unwrap()], &[]);
    assert_eq!(code, 0);
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/sipbridge.example.toml");
    let (code, out, err) =
        run_cli(&["check-config", "-c", example], &[("SIPBRIDGE_WEBHOOKS__SIGNING_KEY", key.to_str().unwrap())]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("OK"));
    // Without its key the example is refused, and the fix is named.
    let (code, _, err) = run_cli(
        &["check-config", "-c", example],
        &[("SIPBRIDGE_WEBHOOKS__SIGNING_KEY", dir.path().join("missing.key").to_str().unwrap())],
    );
    assert_eq!(code, 78);
    assert!(err.contains("sipbridge keygen --out"), "{err}");
}

#[test]
fn keygen_writes_a_0600_key_whose_public_key_verifies_signatures() {
    let dir = tempfile::tempdir().unwrap();
    let key_path = dir.path().join("webhook.key");
    let (code, out, _) = run_cli(&["keygen", "--out", key_path.to_str().unwrap()], &[]);
    assert_eq!(code, 0);
    let mode = std::fs::metadata(&key_path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);

    // The printed public key (base64 of 32 bytes, as Telnyx SDKs take it) verifies a
    // signature made with the written private key.
    let public = base64::engine::general_purpose::STANDARD.decode(out.trim()).unwrap();
    let public = VerifyingKey::from_bytes(&public.try_into().unwrap()).unwrap();
    let private = {
        use ed25519_dalek::pkcs8::DecodePrivateKey;
        ed25519_dalek::SigningKey::from_pkcs8_pem(&std::fs::read_to_string(&key_path).unwrap()).unwrap()
    };
    let msg = b"1700000000|{\"data\":{}}";
    public.verify(msg, &private.sign(msg)).unwrap();

    // `pubkey` prints the same key; keygen refuses to overwrite without --force.
    let (_, again, _) = run_cli(&["pubkey", key_path.to_str().unwrap()], &[]);
    assert_eq!(again.trim(), out.trim());
    let (code, _, err) = run_cli(&["keygen", "--out", key_path.to_str().unwrap()], &[]);
    assert_eq!(code, 1);
    assert!(err.contains("--force"), "{err}");
}

#[test]
fn version_and_help() {
    let (code, out, _) = run_cli(&["version"], &[]);
    assert_eq!(code, 0);
    assert!(out.starts_with(&format!("sipbridge {}", env!("CARGO_PKG_VERSION"))));
    let (code, out, _) = run_cli(&["--help"], &[]);
    assert_eq!(code, 0);
    for cmd in ["run", "check-config", "keygen", "version"] {
        assert!(out.contains(cmd), "--help lists {cmd}");
    }
}

#[test]
fn log_formats_json_and_auto() {
    // json: one JSON object per line.
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "");
    let text = std::fs::read_to_string(&config).unwrap().replace("format = \"text\"", "format = \"json\"");
    std::fs::write(&config, text).unwrap();
    let mut notify = NotifySocket::bind(dir.path());
    let mut d = Daemon::start(&config, Some(&notify.path), None, &[]);
    notify.wait_for("READY=1", WAIT).expect("READY=1");
    d.signal(Signal::SIGTERM);
    assert_eq!(d.wait_exit(WAIT).and_then(|s| s.code()), Some(0));
    let log = d.stderr();
    let lines: Vec<&str> = log.lines().collect();
    assert!(lines.len() >= 2, "{log}");
    for line in lines {
        let v: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(v.get("level").is_some() && v.get("fields").is_some(), "{line}");
    }

    // auto with a JOURNAL_STREAM that is not our stderr: plain text, not the journal.
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "");
    let text = std::fs::read_to_string(&config).unwrap().replace("format = \"text\"", "format = \"auto\"");
    std::fs::write(&config, text).unwrap();
    let mut notify = NotifySocket::bind(dir.path());
    let mut d = Daemon::start(&config, Some(&notify.path), None, &[("JOURNAL_STREAM", "1:1")]);
    notify.wait_for("READY=1", WAIT).expect("READY=1");
    d.signal(Signal::SIGTERM);
    assert_eq!(d.wait_exit(WAIT).and_then(|s| s.code()), Some(0));
    assert!(d.stderr().contains("INFO sipbridge ready"), "{}", d.stderr());
}
