//! Recorded calls all the way to S3-compatible storage (issue 24): the real daemon
//! takes a SIPp call on a recorded route (the test's RTP phone sends a tone to
//! the built-in echo agent), writes the WAV, and `[recording.upload]` ships it to
//! moto's S3 server on loopback (`common::s3`: SigV4 checked on every request,
//! presigned GETs included). What a backend sees is checked from the outside:
//! the signed webhooks (`call.recording.saved`, then `call.recording.uploaded`),
//! the object in the bucket (downloaded with boto3), the presigned URL of the
//! event (a plain GET without credentials), the control API (`GET
//! /v2/recordings/{id}`, `GET /v2/status`) and the recordings directory.
//!
//! With `delete_local_after = "0s"` the local WAV goes once uploaded, so the test
//! hashes it while the upload cannot have happened yet: in the first test the S3
//! server starts only after the daemon has tried (and failed) to reach it, in the
//! second the daemon's secret is wrong until a reload fixes it. Both are also the
//! outages an operator meets: nothing is lost, the error says what to fix.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use common::audio::{read_stereo, rms};
use common::gateway::{Gateway, Route, Trunk, time};
use common::rtp::{Script, place_calls};
use common::s3::{BUCKET, KEY, S3Server, SECRET};
use common::*;
use nix::sys::signal::Signal;
use serde_json::Value;

const TOKEN: &str = "s3-calls-token-0123456789";
const NODE: &str = "shop-7";
const WRONG_SECRET: &str = "not-the-secret-0123456789abcdef";
/// `[recording.upload] url_lifetime`.
const URL_LIFETIME: Duration = Duration::from_secs(600);
/// Timeout of the test's own requests to the S3 server (every other wait is the
/// harness's, `common::gateway::WAIT`).
const HTTP_TIMEOUT: Duration = Duration::from_secs(30);

/// `[recording.upload]` to `endpoint`; the secret in the file when given (else
/// from the environment, as the operator guide advises).
fn upload_section(endpoint: &str, secret: Option<&str>) -> String {
    let mut s = format!(
        "[recording.upload]\nendpoint = {endpoint:?}\nregion = \"us-east-1\"\nbucket = {BUCKET:?}\n\
         prefix = \"{{node}}/{{trunk}}/{{yyyy}}/{{mm}}/{{dd}}/{{call_control_id}}/\"\naccess_key_id = {KEY:?}\n\
         path_style = true\ndelete_local_after = \"0s\"\nurl_lifetime = \"{}s\"\n",
        URL_LIFETIME.as_secs()
    );
    if let Some(secret) = secret {
        s.push_str(&format!("secret_access_key = {secret:?}\n"));
    }
    s
}

/// The daemon: the echo agent on a recorded route (dual-channel WAV), signed
/// webhooks, the control API, and `upload` as raw TOML.
fn gateway(dir: &Path, upload: &str, env: &[(&str, &str)]) -> Gateway {
    let mut b = Gateway::builder(dir)
        .node_name(NODE)
        .trunk(Trunk::new("carrier").allow("127.0.0.0/8"))
        .agent("echo", "builtin:echo", "")
        .route(Route::new().agent("echo").record())
        .recording("channels = \"dual\"")
        .webhooks("")
        .api(TOKEN)
        .extra(upload);
    for (k, v) in env {
        b = b.env(k, v);
    }
    b.start()
}

/// One SIPp call to the box whose phone sends 1 s of a 440 Hz tone (PCMU) and
/// listens to the echo; SIPp hangs up after 1.5 s.
async fn call(gw: &Gateway, dir: &Path) {
    let tone: Vec<i16> =
        (0..8000).map(|n| (8000.0 * (2.0 * std::f64::consts::PI * 440.0 * n as f64 / 8000.0).sin()) as i16).collect();
    let script = Script {
        audio: tone,
        digits: vec![],
        send_for: Duration::from_millis(1000),
        duration: Duration::from_millis(1300),
        gaps: vec![],
    };
    let (d, port) = (dir.to_path_buf(), gw.sip_port);
    let (code, report, _) =
        tokio::task::spawn_blocking(move || place_calls(&d, port, "127.0.0.1", "+13125550100", 1500, vec![script]))
            .await
            .unwrap();
    assert_eq!(code, 0, "{report}");
}

/// The `data.payload` of the first delivered webhook of type `kind` (waits for it).
async fn event(gw: &Gateway, kind: &str) -> Value {
    let has = |d: &[Value]| d.iter().any(|x| x["event_type"] == kind);
    let data = gw.event_data(kind, has).await;
    data.iter().find(|x| x["event_type"] == kind).unwrap()["payload"].clone()
}

fn sha256(bytes: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, bytes).as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// The WAV the daemon wrote, read while it is still on the box: its bytes'
/// SHA-256 (equal to the event's) and a check that it is the call's audio, a
/// stereo PCM16 8 kHz WAV (left: the tone the caller sent; right: its echo).
fn local_wav(saved: &Value, recordings: &Path) -> (PathBuf, Vec<u8>, String) {
    let path = PathBuf::from(saved["file_path"].as_str().unwrap());
    assert!(path.starts_with(recordings), "{path:?}");
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let sha = sha256(&bytes);
    assert_eq!(saved["sha256"], sha.as_str(), "call.recording.saved's sha256 is the file's");
    assert_eq!(saved["size_bytes"], bytes.len());
    let (spec, left, right) = read_stereo(&path);
    assert_eq!(
        (spec.channels, spec.sample_rate, spec.bits_per_sample, spec.sample_format),
        (2, 8000, 16, hound::SampleFormat::Int),
        "stereo PCM16 8 kHz"
    );
    assert!(rms(&left) > 2000.0 && rms(&right) > 1000.0, "tone left, echo right: {} / {}", rms(&left), rms(&right));
    (path, bytes, sha)
}

/// The object key `[recording.upload] prefix` gives this recording:
/// `{node}/{trunk}/{yyyy}/{mm}/{dd}/{call_control_id}/<recording_id>.wav`, the
/// date of the recording's `created_at` (UTC).
fn expected_key(saved: &Value, created_at: &str) -> String {
    let (yyyy, mm, dd) = (&created_at[0..4], &created_at[5..7], &created_at[8..10]);
    let (cc, id) = (saved["call_control_id"].as_str().unwrap(), saved["recording_id"].as_str().unwrap());
    assert!(cc.starts_with("v3:"), "{cc}");
    format!("{NODE}/carrier/{yyyy}/{mm}/{dd}/{cc}/{id}.wav")
}

/// `call.recording.uploaded` against the recording saved, the object in the
/// bucket and its presigned URL; returns the object key.
async fn check_uploaded(gw: &Gateway, s3: &S3Server, saved: &Value, bytes: &[u8], sha: &str) -> String {
    let up = event(gw, "call.recording.uploaded").await;
    for k in ["recording_id", "call_control_id", "call_leg_id", "call_session_id", "sha256", "size_bytes", "channels"] {
        assert_eq!(up[k], saved[k], "{k}: {up}");
    }
    assert_eq!(up["connection_id"], "carrier");
    let id = saved["recording_id"].as_str().unwrap();
    let (code, rec) = gw.api().get(&format!("/v2/recordings/{id}")).await;
    assert_eq!(code, 200, "{rec}");
    let key = expected_key(saved, rec["data"]["created_at"].as_str().unwrap());
    assert_eq!(up["storage"]["bucket"], BUCKET);
    assert_eq!(up["storage"]["key"], key.as_str(), "the prefix's placeholders filled in: {up}");
    let location = format!("{}/{BUCKET}/{}", s3.endpoint(), key.replace(':', "%3A"));
    assert_eq!(up["storage"]["url"], location.as_str(), "path-style location");

    // boto3's signed GetObject: the bucket holds exactly this file.
    let objects = s3.objects();
    assert_eq!(objects.keys().collect::<Vec<_>>(), [&key], "{objects:?}");
    assert_eq!(objects[&key]["sha256"], sha, "the object is the WAV the daemon wrote");
    assert_eq!(objects[&key]["size"], bytes.len());
    assert_eq!(objects[&key]["content_type"], "audio/wav", "stored with its media type");

    // The presigned URL, as a backend would use it: a plain GET, no credentials.
    let url = up["recording_urls"]["wav"].as_str().unwrap();
    assert_eq!(up["public_recording_urls"]["wav"], url);
    assert!(url.starts_with(&format!("{location}?")) && url.contains("X-Amz-Signature="), "{url}");
    assert!(url.contains(&format!("X-Amz-Expires={}", URL_LIFETIME.as_secs())), "{url}");
    let expire_at = time(&up, "recording_urls_expire_at");
    assert!(expire_at > SystemTime::now() && expire_at <= SystemTime::now() + URL_LIFETIME, "{up}");
    let http = reqwest::Client::builder().timeout(HTTP_TIMEOUT).build().unwrap();
    let resp = http.get(url).send().await.expect("the S3 server answers");
    assert_eq!(resp.status().as_u16(), 200, "presigned GET: {:?}", resp.text().await);
    let served_as = resp.headers().get(reqwest::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_owned);
    assert_eq!(served_as.as_deref(), Some("audio/wav"), "a browser plays it inline");
    let body = resp.bytes().await.unwrap().to_vec();
    assert_eq!(sha256(&body), sha, "the presigned URL serves the WAV the daemon wrote");
    let wav = hound::WavReader::new(std::io::Cursor::new(&body)).expect("a WAV");
    let spec = wav.spec();
    assert_eq!((spec.channels, spec.sample_rate, spec.bits_per_sample), (2, 8000, 16));
    assert_eq!(u64::from(wav.duration()) / 8, saved["duration_millis"].as_u64().unwrap(), "frames at 8 kHz");
    // The server does check that signature: one character off is a 403.
    let last = url.chars().last().unwrap();
    let forged = format!("{}{}", &url[..url.len() - 1], if last == '0' { '1' } else { '0' });
    let resp = http.get(&forged).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 403);
    assert!(resp.text().await.unwrap().contains("SignatureDoesNotMatch"));
    key
}

/// Waits (bounded) until the local copy of an uploaded recording is gone, then
/// checks what the API says about it: deleted because uploaded, and where it is.
async fn check_local_copy_gone(gw: &Gateway, id: &str, path: &Path, key: &str, location: &Value) -> Value {
    let api = gw.api();
    let path_of = format!("/v2/recordings/{id}");
    api.wait_for(&path_of, "the local copy deleted after the upload", |b| {
        !b["data"]["upload"]["local_deleted_at"].is_null()
    })
    .await;
    assert!(!path.exists(), "{path:?} still on the box");
    // Read again: the answer that saw the deletion may have checked the disk in
    // the middle of it (the file gone, the index not yet marked) and reported the
    // file "missing" itself (src/api/recordings.rs reconcile); what the index
    // keeps is asked now.
    let (code, rec) = api.get(&path_of).await;
    assert_eq!(code, 200, "{rec}");
    let d = &rec["data"];
    assert_eq!((d["status"].as_str(), d["deleted_reason"].as_str()), (Some("deleted"), Some("uploaded")), "{rec}");
    let u = &d["upload"];
    assert_eq!((u["state"].as_str(), u["bucket"].as_str(), u["key"].as_str()), (Some("done"), Some(BUCKET), Some(key)));
    assert_eq!(&u["url"], location);
    assert!(u["last_error"].is_null() && !u["uploaded_at"].is_null(), "{u}");
    // The list shows the same remote location.
    let (code, list) = api.get("/v2/recordings").await;
    assert_eq!(code, 200, "{list}");
    let row = list["data"].as_array().unwrap().iter().find(|r| r["id"] == id).expect("listed");
    assert_eq!(row["upload"], *u);
    // Its download route says where it went instead.
    let (code, gone) = api.get(&format!("/v2/recordings/{id}.wav")).await;
    assert_eq!(code, 404, "{gone}");
    assert!(gone.to_string().contains("after its upload"), "{gone}");
    let status = api.get("/v2/status").await.1;
    let up = &status["data"]["uploads"];
    assert_eq!(
        (up["enabled"].as_bool(), up["pending"].as_u64(), up["failing"].as_u64(), up["done"].as_u64()),
        (Some(true), Some(0), Some(0), Some(1)),
        "{status}"
    );
    assert!(up["last_error"].is_null(), "{status}");
    u.clone()
}

/// A recorded call while the S3 server is down: the file stays and the error is
/// reported; once the server is up the WAV reaches the bucket byte for byte, the
/// event's presigned URL serves it without credentials, and the local copy goes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recorded_call_reaches_the_bucket_and_its_presigned_url_serves_the_same_wav() {
    let t0 = std::time::Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let s3_port = free_port();
    let endpoint = format!("http://127.0.0.1:{s3_port}");
    let secret_env = [("SIPBRIDGE_RECORDING__UPLOAD__SECRET_ACCESS_KEY", SECRET)];
    let gw = gateway(d, &upload_section(&endpoint, None), &secret_env);
    call(&gw, d).await;

    let saved = event(&gw, "call.recording.saved").await;
    let id = saved["recording_id"].as_str().unwrap().to_string();
    // Queued, tried, failed: the server is not there yet. The file stays.
    let rec = gw
        .api()
        .wait_for(&format!("/v2/recordings/{id}"), "a failed upload attempt", |b| {
            b["data"]["upload"]["attempts"].as_u64() >= Some(1)
        })
        .await;
    let u = &rec["data"]["upload"];
    assert_eq!(u["state"], "pending", "{rec}");
    assert!(u["last_error"].as_str().unwrap().contains("not reached"), "{rec}");
    let (path, bytes, sha) = local_wav(&saved, &gw.recordings);

    let s3 = S3Server::start(d, s3_port, 1);
    let key = check_uploaded(&gw, &s3, &saved, &bytes, &sha).await;
    let location = Value::from(format!("{endpoint}/{BUCKET}/{}", key.replace(':', "%3A")));
    let u = check_local_copy_gone(&gw, &id, &path, &key, &location).await;
    assert!(u["attempts"].as_u64() >= Some(1), "the failures while the server was down are counted: {u}");
    gw.stop();
    s3.stop();
    eprintln!("call → bucket with one outage: {:.1} s", t0.elapsed().as_secs_f64());
}

/// A wrong secret: the daemon says so in `GET /v2/status` (which key to check,
/// no secret shown), keeps the file and retries; a reload with the right secret
/// delivers the very same bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_secret_is_reported_and_retried_and_the_recording_goes_up_after_a_reload() {
    let t0 = std::time::Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let s3 = S3Server::start(d, free_port(), 1);
    let gw = gateway(d, &upload_section(&s3.endpoint(), Some(WRONG_SECRET)), &[]);
    call(&gw, d).await;
    let saved = event(&gw, "call.recording.saved").await;
    let id = saved["recording_id"].as_str().unwrap().to_string();

    let api = gw.api();
    let status =
        api.wait_for("/v2/status", "the upload failure in /v2/status", |b| b["data"]["uploads"]["failing"] == 1).await;
    let up = &status["data"]["uploads"];
    assert_eq!((up["enabled"].as_bool(), up["pending"].as_u64(), up["done"].as_u64()), (Some(true), Some(1), Some(0)));
    let error = up["last_error"].as_str().unwrap();
    assert!(error.contains("403 SignatureDoesNotMatch") && error.contains("secret_access_key"), "{error}");
    assert!(!status.to_string().contains(&WRONG_SECRET[..12]), "no secret in the API: {status}");
    // Retried (1 s after the first failure, then 2 s), never given up; the file stays.
    let rec = api
        .wait_for(&format!("/v2/recordings/{id}"), "a retry", |b| b["data"]["upload"]["attempts"].as_u64() >= Some(2))
        .await;
    assert_eq!(rec["data"]["upload"]["state"], "pending", "{rec}");
    assert!(rec["data"]["upload"]["last_error"].as_str().unwrap().contains("SignatureDoesNotMatch"), "{rec}");
    let (path, bytes, sha) = local_wav(&saved, &gw.recordings);
    assert!(s3.objects().is_empty(), "nothing went up with the wrong secret");

    // The operator fixes the secret and reloads (systemctl reload = SIGHUP).
    let text = std::fs::read_to_string(&gw.config).unwrap();
    std::fs::write(&gw.config, text.replace(WRONG_SECRET, SECRET)).unwrap();
    gw.signal(Signal::SIGHUP);
    let key = check_uploaded(&gw, &s3, &saved, &bytes, &sha).await;
    let location = Value::from(format!("{}/{BUCKET}/{}", s3.endpoint(), key.replace(':', "%3A")));
    let u = check_local_copy_gone(&gw, &id, &path, &key, &location).await;
    assert!(u["attempts"].as_u64() >= Some(2), "{u}");
    let log = gw.stop();
    assert!(!log.contains(WRONG_SECRET) && !log.contains(SECRET), "no secret in the log");
    s3.stop();
    eprintln!("wrong secret → reload → bucket: {:.1} s", t0.elapsed().as_secs_f64());
}
