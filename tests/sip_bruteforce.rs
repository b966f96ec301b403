//! Password guessing is cut off (issue 17, point 4), tried with the tool attackers
//! use: SIPVicious `svcrack` guesses the digest password of a trunk that admits
//! callers by credentials (a LiveKit-style outbound trunk) from a 30-word
//! dictionary whose last word is right. It must see at most 5 answered guesses,
//! then silence, and never find the password; the ban is logged once and counted
//! in `/metrics`; a caller from another address with the right password still gets
//! in (the ban is per source, not a lockout of the account).

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::gateway::{Gateway, Route, Trunk};
use common::*;
use nix::sys::signal::Signal;

const WAIT: Duration = Duration::from_secs(30);
const TOKEN: &str = "bruteforce-test-token-0123456789";

fn start(dir: &Path) -> (Gateway, u16, u16) {
    let gw = Gateway::builder(dir)
        .rtp_range(40_000, 49_999)
        .trunk(
            Trunk::new("livekit")
                .provider("livekit")
                .proxy("sip:127.0.0.9:5999")
                .extra("inbound_username = \"lk\"\ninbound_password = \"pw-right-30\""),
        )
        .agent("echo", "builtin:echo", "")
        .route(Route::new().agent("echo"))
        .api(TOKEN)
        .start();
    let (port, api) = (gw.sip_port, gw.api_port());
    (gw, port, api)
}

fn metric(api: u16, name: &str) -> f64 {
    scrape_metric(api, TOKEN, name)
}

#[test]
fn svcrack_sees_five_answered_guesses_then_silence_and_never_the_password() {
    let dir = tempfile::tempdir().unwrap();
    let (mut gw, port, api) = start(dir.path());
    let dict = dir.path().join("passwords.txt");
    let words: Vec<String> = (1..30).map(|i| format!("guess-{i}")).chain(["pw-right-30".to_string()]).collect();
    std::fs::write(&dict, words.join("\n") + "\n").unwrap();

    let svcrack = std::env::current_dir().unwrap().join("tests/.venv/bin/sipvicious_svcrack");
    let out = Command::new("timeout")
        .arg("120")
        .arg(&svcrack)
        .args(["-vv", "-u", "lk", "-m", "INVITE", "--maximumtime", "3", "-t", "0.05"])
        .arg("-d")
        .arg(&dict)
        .args(["-P", &free_port().to_string(), "-p", &port.to_string(), "127.0.0.1"])
        .output()
        .expect("run svcrack (scripts/setup-tests installs it in tests/.venv)");
    let log = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));

    // svcrack's own account: each "trying WORD" and whether a response followed it
    // before the next guess.
    let mut answered = Vec::new();
    let mut current: Option<&str> = None;
    for line in log.lines() {
        if let Some(word) = line.split("DEBUG:ASipOfRedWine:trying ").nth(1) {
            current = Some(word.trim());
        } else if line.contains("Received response: SIP/2.0") {
            if let Some(w) = current.take() {
                answered.push(w.to_string());
            }
        }
    }
    assert!(log.contains("trying guess-6"), "svcrack went on guessing:\n{log}");
    assert_eq!(answered, ["guess-1", "guess-2", "guess-3", "guess-4", "guess-5"], "\n{log}");
    assert!(log.contains("found nothing"), "{log}");

    // Logged once, counted; the box is fine.
    let stderr = gw.daemon.stderr();
    assert_eq!(stderr.matches("source banned").count(), 1, "{stderr}");
    assert_eq!(metric(api, "sipbridge_sip_auth_bans_total"), 1.0);
    assert!(metric(api, "sipbridge_sip_auth_failures_total") >= 5.0);
    assert!(metric(api, "sipbridge_sip_banned_dropped_total") >= 1.0);

    // Another source with the right password is admitted: a ban, not a lockout.
    let target = format!("127.0.0.1:{port}");
    let mut ok = Sipp::start(
        dir.path(),
        "rightful",
        &sipp_args(
            "uac_auth.xml",
            "+13125550100",
            &target,
            "127.0.0.6",
            &["-t", "u1", "-au", "lk", "-ap", "pw-right-30"],
        ),
    );
    assert_eq!(ok.wait(WAIT), 0, "{}\n{}", ok.report(), gw.daemon.stderr());

    assert!(gw.daemon.is_running(), "{}", gw.daemon.stderr());
    gw.daemon.signal(Signal::SIGTERM);
    assert_eq!(gw.daemon.wait_exit(WAIT).and_then(|s| s.code()), Some(0));
}
