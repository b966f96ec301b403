//! The official Telnyx SDKs verify sipbridge's webhooks (issue 11, point 6).
//!
//! For each SDK — PyPI `telnyx[webhooks]` 4.189.0 and npm `telnyx` 7.24.0, pinned in
//! `tests/requirements.txt` and `examples/webhook-verify/node/package-lock.json` —
//! the example backend in `examples/webhook-verify/<sdk>/` runs with
//! `TELNYX_PUBLIC_KEY` = the public key `sipbridge keygen` printed, and verifies
//! every request with the SDK's own `client.webhooks.unwrap()`. The real daemon
//! takes a Telnyx-shaped SIPp call to the recording echo route and posts its
//! webhooks to the app through a transparent relay of the test's, which keeps a
//! copy of every request. Checked:
//!
//! - the SDK verified `call.initiated`, `call.answered`, `call.hangup`,
//!   `call.recording.saved` of the call, in order, and rejected nothing; the Python
//!   SDK also typed each one as its own event class;
//! - the SDK rejects (400) a genuine request with one byte of the body changed, a
//!   genuine body carrying another event's signature, and a correctly signed request
//!   whose timestamp is 10 minutes old (the SDKs' 300 s tolerance: the box's clock
//!   must be right), while it accepts the genuine request replayed and a fresh one
//!   signed the same way (so each rejection is about the one thing changed).

mod common;
use common::receivers as harness;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use common::gateway::{Gateway, Route, Trunk};
use common::*;
use ed25519_dalek::Signer;
use ed25519_dalek::pkcs8::DecodePrivateKey;
use harness::keygen;
use nix::sys::signal::Signal;
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(30);
/// Starting an app includes importing the SDK (seconds for Python's on a busy machine).
const APP_START: Duration = Duration::from_secs(120);
/// The call's events, in the order the daemon emits them for a recorded echo call.
const CALL_EVENTS: [&str; 4] = ["call.initiated", "call.answered", "call.hangup", "call.recording.saved"];

#[derive(Debug, Clone, Copy, PartialEq)]
enum Sdk {
    Python,
    Node,
}

/// One example backend (`examples/webhook-verify/<sdk>/app.*`), killed by pid on drop.
struct App {
    child: Child,
    stdout: PathBuf,
    stderr: PathBuf,
    port: u16,
}

impl App {
    fn start(sdk: Sdk, dir: &Path, public_key: &str) -> Self {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut cmd = match sdk {
            Sdk::Python => {
                let mut c = Command::new(harness::python());
                c.arg(root.join("examples/webhook-verify/python/app.py"));
                c
            }
            Sdk::Node => {
                let app = root.join("examples/webhook-verify/node");
                assert!(
                    app.join("node_modules/telnyx/package.json").exists(),
                    "{}/node_modules is missing: run scripts/setup-tests first",
                    app.display()
                );
                let mut c = Command::new("node");
                c.arg(app.join("app.js"));
                c
            }
        };
        let stdout = dir.join(format!("{sdk:?}.stdout"));
        let stderr = dir.join(format!("{sdk:?}.stderr"));
        cmd.args(["--port", "0"])
            .env("TELNYX_PUBLIC_KEY", public_key)
            .env_remove("TELNYX_API_KEY")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&stdout).unwrap())
            .stderr(std::fs::File::create(&stderr).unwrap());
        let child = cmd.spawn().unwrap_or_else(|e| panic!("start the {sdk:?} example app: {e}"));
        let mut app = Self { child, stdout, stderr, port: 0 };
        let deadline = Instant::now() + APP_START;
        loop {
            if let Some(p) = app.lines().iter().find_map(|l| l["listening"].as_u64()) {
                app.port = p as u16;
                return app;
            }
            if let Ok(Some(status)) = app.child.try_wait() {
                panic!("{sdk:?} app exited ({status}) before listening:\n{}", app.err());
            }
            assert!(Instant::now() < deadline, "{sdk:?} app not listening within {APP_START:?}:\n{}", app.err());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The JSON lines printed so far (a line being written is skipped).
    fn lines(&self) -> Vec<Value> {
        let text = std::fs::read_to_string(&self.stdout).unwrap_or_default();
        text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
    }

    fn err(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    fn verified(&self) -> Vec<Value> {
        self.lines().into_iter().filter(|l| l.get("verified").is_some()).collect()
    }

    fn rejected(&self) -> Vec<String> {
        self.lines().iter().filter_map(|l| l["rejected"].as_str().map(str::to_string)).collect()
    }

    /// Waits (at most `limit`) until `done(lines)`.
    async fn wait_until(&self, what: &str, limit: Duration, done: impl Fn(&[Value]) -> bool) {
        let deadline = Instant::now() + limit;
        loop {
            let lines = self.lines();
            if done(&lines) {
                return;
            }
            assert!(Instant::now() < deadline, "{what}: not within {limit:?}; app printed {lines:?}\n{}", self.err());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for App {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.child.id() as i32), Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

/// One HTTP request or response as it crossed the relay.
#[derive(Debug, Clone)]
struct Message {
    /// Start line and header lines, without the blank line.
    head: String,
    body: Vec<u8>,
}

impl Message {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// Reads one HTTP/1.1 message (Content-Length framed) from `s`; `None` at a clean EOF.
fn read_message(s: &mut TcpStream) -> Option<Message> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        match s.read(&mut byte) {
            Ok(1) => buf.push(byte[0]),
            _ => return None,
        }
        if buf.len() > 64 * 1024 {
            return None;
        }
    }
    let head = String::from_utf8_lossy(&buf[..buf.len() - 4]).into_owned();
    let mut m = Message { head, body: Vec::new() };
    let len: usize = m.header("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
    m.body = vec![0; len];
    s.read_exact(&mut m.body).ok()?;
    Some(m)
}

/// A transparent relay between the daemon and the app: every request is passed on
/// unchanged (bytes as received) and answered with the app's answer, and kept.
struct Relay {
    port: u16,
    seen: Arc<Mutex<Vec<Message>>>,
    stop: Arc<AtomicBool>,
}

impl Relay {
    fn start(app_port: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (seen2, stop2) = (seen.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop2.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((conn, _)) => {
                        let seen = seen2.clone();
                        std::thread::spawn(move || relay_connection(conn, app_port, &seen));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        Self { port, seen, stop }
    }

    fn requests(&self) -> Vec<Message> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Serves one keep-alive connection from the daemon: each request goes to the app
/// on a fresh connection, its answer comes back.
fn relay_connection(mut conn: TcpStream, app_port: u16, seen: &Mutex<Vec<Message>>) {
    let _ = conn.set_nonblocking(false);
    let _ = conn.set_read_timeout(Some(Duration::from_secs(60)));
    while let Some(req) = read_message(&mut conn) {
        seen.lock().unwrap().push(req.clone());
        let Ok(mut app) = TcpStream::connect(("127.0.0.1", app_port)) else { return };
        let _ = app.set_read_timeout(Some(WAIT));
        let mut bytes = format!("{}\r\n\r\n", req.head).into_bytes();
        bytes.extend_from_slice(&req.body);
        if app.write_all(&bytes).is_err() {
            return;
        }
        let Some(answer) = read_message(&mut app) else { return };
        let mut back = format!("{}\r\n\r\n", answer.head).into_bytes();
        back.extend_from_slice(&answer.body);
        if conn.write_all(&back).is_err() {
            return;
        }
    }
}

/// POSTs `body` with the two Telnyx signature headers straight to the app; returns
/// the HTTP status.
fn post(port: u16, timestamp: &str, signature: &str, body: &[u8]) -> u16 {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect to the app");
    s.set_read_timeout(Some(WAIT)).unwrap();
    let head = format!(
        "POST /webhooks HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n\
         telnyx-signature-ed25519: {signature}\r\ntelnyx-timestamp: {timestamp}\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let answer = read_message(&mut s).expect("the app answers");
    answer.head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).expect("an HTTP status line")
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

async fn sdk_verifies_a_real_call(sdk: Sdk) {
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = keygen(dir.path());
    let app = App::start(sdk, dir.path(), &public);
    let relay = Relay::start(app.port);
    // Webhooks go to the relay (not the harness's receiver), signed with the key
    // the app was given.
    let gw = Gateway::builder(dir.path())
        .trunk(Trunk::new("telnyx-ip").provider("telnyx").allow("127.0.0.2/32"))
        .agent("echo", "builtin:echo", "")
        .route(Route::new().agent("echo").record())
        .extra(&format!(
            "[webhooks]\nurl = \"http://127.0.0.1:{relay}/webhooks\"\nsigning_key = \"{key}\"",
            relay = relay.port,
            key = key.display()
        ))
        .start();
    let sip_port = gw.sip_port;

    let target = format!("127.0.0.1:{sip_port}");
    let dd = dir.path().to_path_buf();
    let (code, report) = tokio::task::spawn_blocking(move || {
        let mut s =
            Sipp::start(&dd, "call", &sipp_args("uac_telnyx.xml", "+13125550100", &target, "127.0.0.2", &["-t", "u1"]));
        (s.wait(WAIT), s.report())
    })
    .await
    .unwrap();
    assert_eq!(code, 0, "{report}");

    app.wait_until("the call's four events verified by the SDK", WAIT, |l| {
        l.iter().filter(|x| x.get("verified").is_some()).count() >= CALL_EVENTS.len()
    })
    .await;
    gw.stop();

    // What the SDK verified: the call's events, in order, nothing rejected.
    assert!(app.rejected().is_empty(), "{sdk:?} SDK rejected genuine webhooks: {:?}", app.rejected());
    let verified = app.verified();
    let types: Vec<&str> = verified.iter().map(|v| v["verified"].as_str().unwrap_or_default()).collect();
    assert_eq!(types, CALL_EVENTS, "{sdk:?}: {verified:?}");
    let session = verified[0]["call_session_id"].as_str().expect("call_session_id in the SDK's event");
    assert!(!session.is_empty());
    assert!(verified.iter().all(|v| v["call_session_id"] == session), "one call: {verified:?}");
    if sdk == Sdk::Python {
        // The SDK parsed each body into its own typed event class.
        let classes: Vec<&str> = verified.iter().map(|v| v["sdk_type"].as_str().unwrap_or_default()).collect();
        assert_eq!(
            classes,
            [
                "CallInitiatedWebhookEvent",
                "CallAnsweredWebhookEvent",
                "CallHangupWebhookEvent",
                "CallRecordingSavedWebhookEvent"
            ]
        );
    }
    // ... and they are exactly what the daemon sent (the relay kept each request).
    let sent = relay.requests();
    let sent_ids: Vec<String> = sent
        .iter()
        .map(|m| {
            let v: Value = serde_json::from_slice(&m.body).expect("a JSON body");
            v["data"]["id"].as_str().unwrap_or_default().to_string()
        })
        .collect();
    let verified_ids: Vec<String> = verified.iter().map(|v| v["id"].as_str().unwrap_or_default().to_string()).collect();
    assert_eq!(sent_ids, verified_ids, "each POST verified once, in order");

    // Tampering, straight to the app with the genuine headers.
    let genuine = &sent[0];
    let ts = genuine.header("telnyx-timestamp").expect("telnyx-timestamp").to_string();
    let sig = genuine.header("telnyx-signature-ed25519").expect("telnyx-signature-ed25519").to_string();
    let before = app.lines().len();
    assert_eq!(post(app.port, &ts, &sig, &genuine.body), 200, "the genuine request replayed verifies");

    let text = String::from_utf8(genuine.body.clone()).unwrap();
    assert!(text.contains("+13125550100"));
    let tampered = text.replacen("+13125550100", "+13125550199", 1);
    assert_eq!(post(app.port, &ts, &sig, tampered.as_bytes()), 400, "one digit of the body changed");

    let other_sig = sent[1].header("telnyx-signature-ed25519").unwrap().to_string();
    assert_ne!(other_sig, sig);
    assert_eq!(post(app.port, &ts, &other_sig, &genuine.body), 400, "another event's signature");

    // Signed with the box's own key (read from the PKCS#8 file keygen wrote):
    // accepted when fresh, rejected when 10 minutes old.
    let pem = std::fs::read_to_string(&key).unwrap();
    let signing = ed25519_dalek::SigningKey::from_pkcs8_pem(&pem).expect("keygen writes PKCS#8 PEM");
    assert_eq!(B64.encode(signing.verifying_key().as_bytes()), public);
    let sign = |t: &str| B64.encode(signing.sign(&[t.as_bytes(), b"|", &genuine.body].concat()).to_bytes());
    let fresh = unix_now().to_string();
    assert_eq!(post(app.port, &fresh, &sign(&fresh), &genuine.body), 200, "freshly signed");
    let stale = (unix_now() - 600).to_string();
    assert_eq!(post(app.port, &stale, &sign(&stale), &genuine.body), 400, "timestamp 600 s old");

    app.wait_until("the SDK's verdicts on the five requests", WAIT, |l| l.len() >= before + 5).await;
    let verdicts: Vec<Value> = app.lines()[before..].to_vec();
    assert_eq!(verdicts[0]["verified"], "call.initiated", "{verdicts:?}");
    assert_eq!(verdicts[3]["verified"], "call.initiated", "{verdicts:?}");
    for i in [1, 2] {
        let why = verdicts[i]["rejected"].as_str().unwrap_or_default();
        assert!(why.contains("does not match"), "request {i}: the SDK's reason is the signature: {why:?}");
    }
    let why = verdicts[4]["rejected"].as_str().unwrap_or_default();
    assert!(why.contains("too old"), "the SDK's reason is the timestamp: {why:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_telnyx_python_sdk_verifies_a_calls_webhooks_and_rejects_tampering() {
    sdk_verifies_a_real_call(Sdk::Python).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_telnyx_node_sdk_verifies_a_calls_webhooks_and_rejects_tampering() {
    sdk_verifies_a_real_call(Sdk::Node).await;
}
