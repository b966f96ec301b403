//! Recordings shipped to S3-compatible storage (issue 24), against a real S3 API:
//! moto's server on loopback (`common::s3`), with authentication on from the
//! first request, so every request the uploader makes is checked for a valid AWS
//! Signature V4 of the test's access key.
//!
//! The uploader runs over a real store (the same queue the daemon uses); the
//! objects are downloaded back with boto3 and compared by SHA-256 with the files.

mod common;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use common::s3::{BUCKET, KEY, S3Server, SECRET};
use sipbridge::record::upload::{Attempt, Uploader};
use sipbridge::store::event::{CallEvent, EventSink};
use sipbridge::store::recordings::{self, NewRecording};
use sipbridge::store::uploads;
use sipbridge::store::{Store, StoreHandle};
use tokio::sync::watch;

const WAIT: Duration = Duration::from_secs(90);

#[derive(Default)]
struct Events(Mutex<Vec<CallEvent>>);

impl EventSink for Events {
    fn emit_event(&self, event: CallEvent) {
        self.0.lock().unwrap().push(event);
    }
}

fn config(dir: &Path, endpoint: &str, secret: &str) -> Arc<sipbridge::config::Config> {
    let path = dir.join("sipbridge.toml");
    let text = format!(
        "[node]\nname = \"shop-1\"\ndata_dir = {:?}\n[recording]\ndir = {:?}\n[recording.upload]\nendpoint = {endpoint:?}\n\
         bucket = {BUCKET:?}\nprefix = \"{{node}}/{{yyyy}}/{{mm}}/\"\naccess_key_id = {KEY:?}\npath_style = true\n\
         part_size = \"5MiB\"\ndelete_local_after = \"0s\"\nurl_lifetime = \"1h\"\n",
        dir.join("data").display().to_string(),
        dir.join("rec").display().to_string(),
    );
    std::fs::write(&path, text).unwrap();
    let env = [("SIPBRIDGE_RECORDING__UPLOAD__SECRET_ACCESS_KEY".to_string(), secret.to_string())];
    Arc::new(sipbridge::config::load_with_env(&path, env).expect("test config loads").config)
}

/// A recording file of `len` bytes of deterministic noise, and its index row.
async fn recording(store: &StoreHandle, dir: &Path, id: &str, len: usize) -> (PathBuf, String) {
    let path = dir.join("rec").join(format!("{id}.wav"));
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let mut x: u32 = 0x1234_5678 ^ len as u32;
    let bytes: Vec<u8> = (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect();
    std::fs::write(&path, &bytes).unwrap();
    let sha = sipbridge::record::s3::sha256_hex(&bytes);
    let now = SystemTime::now();
    let row = NewRecording {
        recording_id: id.into(),
        call_control_id: format!("v3:{id}"),
        call_leg_id: format!("leg-{id}"),
        call_session_id: format!("sess-{id}"),
        trunk: Some("pbx".into()),
        from: Some("+15550001".into()),
        to: Some("+15550002".into()),
        channels: "dual".into(),
        sample_rate_hz: Some(8000),
        file_path: path.display().to_string(),
        size_bytes: Some(len as u64),
        sha256: Some(sha.clone()),
        recording_started_at: now,
        recording_ended_at: now,
        duration_millis: 1000,
        stop_reason: None,
        created_at: now,
    };
    store.run(move |c| recordings::insert(c, &row, now)).await.unwrap();
    (path, sha)
}

async fn row(store: &StoreHandle, id: &str) -> uploads::Upload {
    let id = id.to_string();
    store.run(move |c| uploads::get(c, &id)).await.unwrap().expect("queued")
}

/// Waits (bounded) until `done` holds for the row of `id`.
async fn until(store: &StoreHandle, id: &str, what: &str, done: impl Fn(&uploads::Upload) -> bool) -> uploads::Upload {
    let deadline = Instant::now() + WAIT;
    loop {
        let key = id.to_string();
        let r = store.run(move |c| uploads::get(c, &key)).await.unwrap();
        if let Some(r) = r.as_ref().filter(|r| done(r)) {
            return r.clone();
        }
        assert!(Instant::now() < deadline, "{what}: {r:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recordings_reach_the_bucket_through_wrong_credentials_a_crash_and_a_server_restart() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let port = common::free_port();
    // rec-third's parts after the first get no answer from this server: it is
    // stopped with that upload surely in the middle.
    let server = S3Server::start_holding(d, port, 1, Some(("/rec-third.wav", 1)));
    std::fs::create_dir_all(d.join("data")).unwrap();
    let store = StoreHandle::start(Store::open(&d.join("data")).unwrap()).unwrap();
    let (small, small_sha) = recording(&store, d, "rec-small", 200_000).await;
    let (big, big_sha) = recording(&store, d, "rec-big", 12 * 1024 * 1024 + 4321).await;

    // Wrong secret: a clear error, the file stays, the row waits for a retry.
    let (cfg_tx, cfg_rx) = watch::channel(config(d, &server.endpoint(), "not-the-secret"));
    let events = Arc::new(Events::default());
    let mut uploader = Uploader::new(store.clone(), cfg_rx.clone(), events.clone());
    match uploader.pass().await.unwrap() {
        Attempt::Failed(id, e) => {
            assert_eq!(id, "rec-small");
            assert!(e.contains("SignatureDoesNotMatch") && e.contains("secret_access_key"), "{e}");
        }
        other => panic!("{other:?}"),
    }
    let r = row(&store, "rec-small").await;
    assert_eq!((r.state, r.attempts), (uploads::UploadState::Pending, 1));
    assert!(small.exists());

    // The right secret (a reload): the uploader runs; it is "killed" once the big
    // file's first part is committed, and a new one resumes at the next part.
    cfg_tx.send_replace(config(d, &server.endpoint(), SECRET));
    let stop = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn(Uploader::new(store.clone(), cfg_rx.clone(), events.clone()).run(stop.clone()));
    let t0 = Instant::now();
    let cut = until(&store, "rec-big", "a first part", |r| !r.parts.is_empty()).await;
    task.abort();
    let _ = task.await;
    assert!(cut.upload_id.is_some());
    let mut resumed = Uploader::new(store.clone(), cfg_rx.clone(), events.clone());
    let deadline = Instant::now() + WAIT;
    let mut secs = None;
    for id in ["rec-big", "rec-small"] {
        // rec-small waits out its retry delay (1 s) after the failure above.
        while row(&store, id).await.state != uploads::UploadState::Done {
            assert!(Instant::now() < deadline, "{:?}", row(&store, id).await);
            match resumed.pass().await.unwrap() {
                Attempt::Failed(id, e) => panic!("{id}: {e}"),
                Attempt::Idle => tokio::time::sleep(Duration::from_millis(50)).await,
                Attempt::Uploaded(_) => {}
            }
        }
        secs.get_or_insert(t0.elapsed().as_secs_f64());
    }
    eprintln!("12 MiB multipart upload (with one resume) to moto: {:.1} MB/s", 12.6 / secs.unwrap());

    // The server goes away mid-upload and comes back empty: the file goes up again.
    let (third, third_sha) = recording(&store, d, "rec-third", 11 * 1024 * 1024).await;
    let task = tokio::spawn(Uploader::new(store.clone(), cfg_rx.clone(), events.clone()).run(stop.clone()));
    until(&store, "rec-third", "a first part", |r| !r.parts.is_empty()).await;
    let first_log = server.stop();
    assert_eq!(
        first_log.matches("rec-big.wav?partNumber=1&").count(),
        1,
        "rec-big's part 1 went up once (resumed):\n{first_log}"
    );
    let down = until(&store, "rec-third", "a failure while the server is down", |r| r.attempts > 0).await;
    assert!(down.last_error.as_deref().unwrap_or_default().contains("not reached"), "{down:?}");
    assert!(third.exists());
    let server = S3Server::start(d, port, 2);
    let done =
        until(&store, "rec-third", "the upload after the restart", |r| r.state == uploads::UploadState::Done).await;
    stop.cancel();
    let _ = task.await;
    assert!(done.location.as_deref().unwrap().ends_with(&done.object_key), "{done:?}");

    let objects = server.objects();
    let third_key = &done.object_key;
    assert_eq!(objects[third_key.as_str()]["sha256"], third_sha.as_str(), "{objects:?}");
    assert_eq!(objects[third_key.as_str()]["content_type"], "audio/wav", "set by CreateMultipartUpload");
    assert!(third_key.starts_with("shop-1/") && third_key.ends_with("/rec-third.wav"), "{third_key}");
    let _ = (big_sha, small_sha); // their objects went with the first server's memory

    // One call.recording.uploaded per recording, Telnyx-shaped presigned URLs.
    let evs = events.0.lock().unwrap().clone();
    let mut ids: Vec<&str> = evs.iter().map(|e| e.payload["recording_id"].as_str().unwrap()).collect();
    ids.sort();
    assert_eq!(ids, ["rec-big", "rec-small", "rec-third"]);
    for e in &evs {
        assert_eq!(e.event_type, "call.recording.uploaded");
        let url = e.payload["recording_urls"]["wav"].as_str().unwrap();
        assert!(url.contains("X-Amz-Signature=") && url.contains(BUCKET), "{url}");
        assert_eq!(e.payload["public_recording_urls"], e.payload["recording_urls"]);
        assert_eq!(e.payload["storage"]["bucket"], BUCKET);
    }

    // delete_local_after = "0s": local copies go (the running uploader's own sweep
    // may have taken some already), the index says why.
    Uploader::new(store.clone(), cfg_rx.clone(), events.clone()).delete_uploaded_local_copies().await.unwrap();
    assert!(!small.exists() && !big.exists() && !third.exists());
    let r = store.run(|c| recordings::get(c, "rec-big")).await.unwrap().unwrap();
    assert_eq!(r.deleted_reason.as_deref(), Some("uploaded"));
    server.stop();
}
