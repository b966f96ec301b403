//! The technician's console (`/console`, issue 24) in a real browser: Debian's
//! Chromium, headless, driven by playwright-core (`tests/browser/console.mjs`).
//! The box registers a trunk with a SIPp registrar, records a call from an RTP
//! caller (a tone into the built-in echo), and holds a live SIPp call; a reload
//! with a broken config is refused. In the page: a wrong token is refused, the
//! right one logs in (kept in `sessionStorage` only), the trunk shows
//! `registered`, the recorded call has its jitter/loss plot over time (from its
//! record's `quality_samples`: a sparkline, then the full plot with ms and %
//! scales), the live call is listed and hung up from the page (SIPp gets the
//! BYE), the recording plays in an `<audio>` element, the first route's Test
//! button places a call to the echo agent and shows it answered with RTP back,
//! and every view is
//! screenshotted on a desktop and a phone-sized viewport (which must not scroll
//! sideways).
//!
//! Screenshots go to `target/console-screenshots/` (CI keeps them; not committed).

mod common;

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::gateway::{Gateway, Route, Trunk};
use common::rtp::{Script, place_calls, tone};
use common::{Sipp, free_port, sipp_args};
use nix::sys::signal::Signal;
use serde_json::{Value, json};

const TOKEN: &str = "console-browser-token-0123456789";
const WAIT: Duration = Duration::from_secs(40);

/// A registrar that accepts the first REGISTER for an hour (no challenge: the
/// digest is tested in `sip_calls`), so the trunk stays registered for the test.
const REGISTRAR: &str = r#"<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="uas registrar, one hour">
  <recv request="REGISTER" crlf="true"/>
  <send>
    <![CDATA[
      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:];tag=[pid]SIPpTag01[call_number]
      [last_Call-ID:]
      [last_CSeq:]
      [last_Contact:];expires=3600
      Expires: 3600
      Content-Length: 0

    ]]>
  </send>
</scenario>
"#;

/// `node tests/browser/console.mjs` and the Chromium under it, its JSON lines read
/// as they come; stopped by pid.
struct Driver {
    child: Child,
    lines: std::sync::mpsc::Receiver<Value>,
    seen: Vec<Value>,
}

impl Driver {
    fn start(args: &[&str]) -> Self {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut child = Command::new("node")
            .arg(root.join("tests/browser/console.mjs"))
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("node runs (scripts/setup-tests installs it)");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
                let v = serde_json::from_str(&line).unwrap_or_else(|_| json!({"event": "text", "text": line}));
                if tx.send(v).is_err() {
                    break;
                }
            }
        });
        Driver { child, lines, seen: Vec::new() }
    }

    /// Lines until `done`; panics with everything seen on `error` or after `limit`.
    fn finish(&mut self, limit: Duration) -> Value {
        let deadline = Instant::now() + limit;
        loop {
            match self.lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(v) => {
                    eprintln!("browser: {v}");
                    self.seen.push(v.clone());
                    match v["event"].as_str() {
                        Some("done") => return v,
                        Some("error") => panic!("the browser failed: {v:#}"),
                        _ => {}
                    }
                }
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                    panic!(
                        "the browser driver exited ({:?}) before finishing; seen: {:#?}",
                        self.child.wait(),
                        self.seen
                    )
                }
                Err(_) => panic!("the browser did not finish within {limit:?}; seen: {:#?}", self.seen),
            }
        }
    }
    /// The driver and every process under it (Chromium makes process groups of
    /// its own).
    fn processes(&self) -> Vec<nix::unistd::Pid> {
        common::process_tree(self.child.id())
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            for p in self.processes() {
                let _ = nix::sys::signal::kill(p, Signal::SIGKILL);
            }
        }
        let _ = self.child.wait();
    }
}

fn screenshots() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/console-screenshots");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_technician_logs_in_sees_the_box_hangs_up_a_call_and_plays_a_recording() {
    let dir = tempfile::tempdir().unwrap();

    // The carrier's registrar, on 127.0.0.3.
    let reg_port = free_port();
    let registrar_xml = dir.path().join("registrar.xml");
    std::fs::write(&registrar_xml, REGISTRAR).unwrap();
    let mut registrar = Sipp::start(
        dir.path(),
        "registrar",
        &["-sf", &registrar_xml.display().to_string(), "-i", "127.0.0.3", "-p", &reg_port.to_string()]
            .iter()
            .map(|s| s.to_string())
            .chain(["-m", "1", "-t", "u1", "-timeout", "30s", "-timeout_error"].iter().map(|s| s.to_string()))
            .collect::<Vec<_>>(),
    );

    let gw = Gateway::builder(dir.path())
        .node_name("shop-7")
        .trunk(
            Trunk::new("carrier")
                .proxy(&format!("sip:127.0.0.3:{reg_port}"))
                .allow("127.0.0.1/32")
                .number("+13125550100")
                .extra("username = \"shop042\"\npassword = \"reg-pass-secret\"\nregister = true"),
        )
        .agent("echo", "builtin:echo", "")
        .route(Route::new().name("front desk").to("+13125550100").agent("echo").record())
        .recording("")
        .api(TOKEN)
        .start();
    let api = gw.api();
    assert_eq!(registrar.wait(WAIT), 0, "{}\n{}", registrar.report(), gw.stderr());
    api.wait_for("/v2/trunks", "the trunk registered", |b| b["data"][0]["registration"]["state"] == "registered").await;

    // A recorded call: 6 s of 440 Hz into the echo, long enough for an RTCP
    // report (2.5 s after the media started) before the sample taken at hangup.
    let (d, sip) = (dir.path().to_path_buf(), gw.sip_port);
    let (code, trace, _) = tokio::task::spawn_blocking(move || {
        let s = Script {
            audio: tone(440.0, 8000.0, 6000),
            digits: vec![],
            gaps: vec![],
            send_for: Duration::from_millis(6000),
            duration: Duration::from_millis(6200),
        };
        place_calls(&d, sip, "127.0.0.1", "+13125550100", 6000, vec![s])
    })
    .await
    .unwrap();
    assert_eq!(code, 0, "{trace}");
    api.wait_for("/v2/recordings", "the recording saved", |b| b["data"][0]["status"] == "completed").await;
    // Its record has the jitter/loss series the page plots: two points or more,
    // every packet of the tone in one of them, nothing lost on loopback.
    let (_, recs) = api.get("/v2/call_records?state=ended").await;
    let recorded = &recs["data"][0];
    let samples = &recorded["quality_samples"];
    assert_eq!(samples["interval"], "rtcp", "{recorded}");
    let points = samples["points"].as_array().unwrap();
    assert!(points.len() >= 2, "an RTCP report's point and the hangup's: {samples}");
    let packets: u64 = points.iter().map(|p| p["packets"].as_u64().unwrap()).sum();
    assert!((250..=310).contains(&packets), "6 s of 20 ms packets: {samples}");
    assert!(points.iter().all(|p| p["loss_percent"] == 0.0 && p["jitter_ms"].as_f64().is_some()), "{samples}");
    let t: Vec<u64> = points.iter().map(|p| p["t_ms"].as_u64().unwrap()).collect();
    assert!(t.windows(2).all(|w| w[0] < w[1]) && (2400..=2600).contains(&t[0]), "{t:?}");
    let recorded_leg = recorded["call_leg_id"].as_str().unwrap().to_string();

    // A live call that stays up until the box hangs up (the page will).
    let wait_bye = std::fs::read_to_string(common::scenario("uac_wait_bye.xml"))
        .unwrap()
        .replace("timeout=\"20000\"", "timeout=\"150000\"");
    let wait_bye_xml = dir.path().join("uac_wait_bye_long.xml");
    std::fs::write(&wait_bye_xml, wait_bye).unwrap();
    let mut args =
        sipp_args("uac_wait_bye.xml", "+13125550100", &format!("127.0.0.1:{sip}"), "127.0.0.1", &["-t", "u1"]);
    args[1] = wait_bye_xml.display().to_string();
    let at = args.iter().position(|a| a == "-timeout").unwrap();
    args[at + 1] = "170s".into();
    let mut caller = Sipp::start(dir.path(), "live", &args);
    let live = api
        .wait_for("/v2/calls", "the live call answered", |b| b["data"].get(0).is_some_and(|c| c["state"] == "answered"))
        .await;
    let call = live["data"][0]["call_control_id"].as_str().unwrap().to_string();

    // A reload the box refuses: the config view shows why.
    let text =
        std::fs::read_to_string(&gw.config).unwrap().replace("max_disk_usage = \"4GiB\"", "max_disk_usage = \"lots\"");
    std::fs::write(&gw.config, text).unwrap();
    gw.signal(Signal::SIGHUP);
    gw.wait_log("config reload failed");

    let token_file = dir.path().join("token");
    std::fs::write(&token_file, TOKEN).unwrap();
    let out = screenshots();
    let url = gw.api_base() + "/console";
    let mut driver = Driver::start(&[
        "--url",
        &url,
        "--token-file",
        &token_file.display().to_string(),
        "--trunk",
        "carrier",
        "--call",
        &call,
        "--record",
        &recorded_leg,
        "--out",
        &out.display().to_string(),
    ]);
    let done = driver.finish(Duration::from_secs(170));
    let status = driver.child.wait().unwrap();
    assert!(status.success(), "driver exit {status:?}");

    // The page's hang-up reached the caller as a BYE, and the call ended.
    assert_eq!(caller.wait(WAIT), 0, "{}\n{}", caller.report(), gw.stderr());
    let (_, rec) = api.get(&format!("/v2/call_records?call_control_id={call}")).await;
    assert_eq!(rec["data"][0]["state"], "ended", "{rec}");
    // The recording played is the one the box saved, and it had length.
    let (_, recs) = api.get("/v2/recordings").await;
    let ids: Vec<&Value> = recs["data"].as_array().unwrap().iter().map(|r| &r["id"]).collect();
    assert!(ids.contains(&&done["played"]["id"]), "{done} {recs}");
    assert!(done["played"]["duration"].as_f64().unwrap() > 0.5, "{done}");
    // The route test from the page: the echo agent answered and RTP came back.
    assert_eq!(done["routeTest"]["result"], "answered", "{done}");
    assert!(done["routeTest"]["text"].as_str().unwrap().contains("RTP packets came back"), "{done}");
    for view in ["overview", "trunks", "routes", "calls", "recordings", "webhooks", "config"] {
        for size in ["desktop", "phone"] {
            let shot = out.join(format!("{size}-{view}.png"));
            assert!(std::fs::metadata(&shot).is_ok_and(|m| m.len() > 1000), "{} missing", shot.display());
        }
    }
    drop(driver);
    gw.signal(Signal::SIGTERM);
    let log = gw.exited();
    assert!(!log.contains(TOKEN), "the token is not logged");
}
