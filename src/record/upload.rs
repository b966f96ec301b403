//! The uploader: ships finished recordings to `[recording.upload]` from the
//! durable queue in the store (`store::uploads`), one at a time.
//!
//! Every pass it queues the completed recordings that have no queue row yet
//! (so nothing saved before a crash is missed), then takes the row that is due:
//! a file up to `part_size` goes up in one `PutObject`; a larger one as a
//! multipart upload whose `UploadId` and each part's ETag are committed as they
//! happen, so a crash or power cut resumes at the next part (a server that lost
//! the upload answers `NoSuchUpload`, or keeps answering errors to its parts from
//! the third failed attempt on, and the file starts over). A failure (backend
//! down, wrong credentials, full bucket) is kept in the row's `last_error` and the
//! row is retried with a doubling delay (1 s up to 5 min): rows are never given
//! up. Once uploaded, a `call.recording.uploaded` event carries presigned GET
//! URLs in Telnyx's `recording_urls` / `public_recording_urls` shape and where
//! the object is; the local file is deleted `delete_local_after` later.
//!
//! The uploader reads the config in force at every pass: a reload with new
//! credentials applies to the next attempt.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde_json::{Map, Value, json};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::s3::{S3Client, S3Error};
use crate::config::{Config, RecordingUpload};
use crate::store::event::{CallEvent, EventSink};
use crate::store::recordings;
use crate::store::uploads::{self, Unqueued, Upload};
use crate::store::{StoreHandle, timestamp};

/// Longest wait between retries of a failing upload.
pub const MAX_RETRY_DELAY: Duration = Duration::from_secs(300);

/// The delay before retry number `attempts + 1`: 1 s doubling, at most
/// [`MAX_RETRY_DELAY`].
pub fn retry_delay(attempts: u32) -> Duration {
    Duration::from_secs(1u64 << attempts.min(16)).min(MAX_RETRY_DELAY)
}

/// The object key of a recording: `prefix` with its placeholders filled in
/// (`{node}`, `{yyyy}`, `{mm}`, `{dd}` of the recording's save time in UTC,
/// `{call_session_id}`, `{call_control_id}`, `{trunk}`: `none` without one),
/// followed by `<recording_id>.wav` (`.mp3` for an MP3 file).
pub fn object_key(prefix: &str, node: &str, r: &Unqueued) -> String {
    let date = timestamp(r.created_at);
    let (yyyy, mm, dd) = (&date[0..4], &date[5..7], &date[8..10]);
    let key = prefix
        .replace("{node}", node)
        .replace("{yyyy}", yyyy)
        .replace("{mm}", mm)
        .replace("{dd}", dd)
        .replace("{call_session_id}", &r.call_session_id)
        .replace("{call_control_id}", &r.call_control_id)
        .replace("{trunk}", r.trunk.as_deref().unwrap_or("none"));
    let ext = crate::config::RecordingFormat::of_path(Path::new(&r.file_path)).as_str();
    format!("{key}{}.{ext}", crate::record::path::sanitize_id(&r.recording_id))
}

/// What one attempt did.
#[derive(Debug)]
pub enum Attempt {
    /// Nothing was due.
    Idle,
    /// This recording is in the bucket now.
    Uploaded(String),
    /// This recording's attempt failed (kept in its row, retried later).
    Failed(String, String),
}

/// The uploader's handles.
#[derive(Clone)]
pub struct Uploader {
    store: StoreHandle,
    config: watch::Receiver<Arc<Config>>,
    events: Arc<dyn EventSink>,
    client: Option<(RecordingUpload, S3Client)>,
}

impl Uploader {
    /// An uploader over `store`, reading `[recording.upload]` from `config` and
    /// emitting `call.recording.uploaded` to `events`.
    pub fn new(store: StoreHandle, config: watch::Receiver<Arc<Config>>, events: Arc<dyn EventSink>) -> Self {
        Self { store, config, events, client: None }
    }

    /// Runs passes until `stop`: when nothing is due it waits for the next due
    /// row (at most 1 s, to pick up new recordings) or a config change.
    pub async fn run(mut self, stop: CancellationToken) {
        let mut next_sweep = std::time::Instant::now();
        loop {
            let busy = match self.pass().await {
                Ok(Attempt::Idle) => false,
                Ok(Attempt::Uploaded(id)) => {
                    tracing::info!(recording_id = %id, "recording uploaded");
                    // `delete_local_after = "0s"`: the local copy goes now, not at
                    // the next 10 s sweep.
                    if self.config.borrow().recording_upload.as_ref().and_then(|u| u.delete_local_after)
                        == Some(Duration::ZERO)
                    {
                        next_sweep = std::time::Instant::now();
                    }
                    true
                }
                Ok(Attempt::Failed(id, e)) => {
                    tracing::warn!(recording_id = %id, "recording upload failed (retried later): {e}");
                    false
                }
                Err(e) => {
                    tracing::warn!("recording uploads: {e}");
                    false
                }
            };
            if std::time::Instant::now() >= next_sweep {
                next_sweep = std::time::Instant::now() + Duration::from_secs(10);
                if let Err(e) = self.delete_uploaded_local_copies().await {
                    tracing::warn!("deleting uploaded recordings' local copies: {e}");
                }
            }
            if busy {
                continue;
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = self.config.changed() => {}
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }

    fn settings(&self) -> Option<(RecordingUpload, String)> {
        let cfg = self.config.borrow();
        Some((cfg.recording_upload.clone()?, cfg.node.name.clone()))
    }

    fn client(&mut self, cfg: &RecordingUpload) -> Result<S3Client, S3Error> {
        if let Some((c, client)) = &self.client
            && c == cfg
        {
            return Ok(client.clone());
        }
        // A part must go up within the timeout even on a slow uplink (1 Mbit/s).
        let timeout = Duration::from_secs(60 + cfg.part_size / 100_000);
        let client = S3Client::new(cfg, timeout)?;
        self.client = Some((cfg.clone(), client.clone()));
        Ok(client)
    }

    /// One pass: queue new recordings, then try the upload that is due, if any.
    pub async fn pass(&mut self) -> Result<Attempt, String> {
        let Some((cfg, node)) = self.settings() else { return Ok(Attempt::Idle) };
        let (prefix, bucket) = (cfg.prefix.clone(), cfg.bucket.clone());
        let now = SystemTime::now();
        self.store
            .run(move |c| {
                for r in uploads::unqueued(c, 100)? {
                    let key = object_key(&prefix, &node, &r);
                    uploads::enqueue(c, &r.recording_id, &r.file_path, &bucket, &key, now)?;
                }
                Ok(())
            })
            .await
            .map_err(|e| e.to_string())?;
        let due = self.store.run(move |c| uploads::next_due(c, now)).await.map_err(|e| e.to_string())?;
        let Some(row) = due else { return Ok(Attempt::Idle) };
        let id = row.recording_id.clone();
        let result = match self.client(&cfg) {
            Ok(client) => self.upload(&client, &cfg, &row).await,
            Err(e) => Err(e.to_string()),
        };
        match result {
            Ok(location) => {
                let at = SystemTime::now();
                let (key, loc) = (id.clone(), location.clone());
                self.store.run(move |c| uploads::done(c, &key, &loc, at)).await.map_err(|e| e.to_string())?;
                self.announce(&cfg, &row, &location).await;
                Ok(Attempt::Uploaded(id))
            }
            Err(e) => {
                let next = SystemTime::now() + retry_delay(row.attempts);
                let (key, msg) = (id.clone(), e.clone());
                self.store.run(move |c| uploads::failed(c, &key, &msg, next)).await.map_err(|e| e.to_string())?;
                Ok(Attempt::Failed(id, e))
            }
        }
    }

    /// Uploads `row`'s file; the object's location.
    async fn upload(&self, client: &S3Client, cfg: &RecordingUpload, row: &Upload) -> Result<String, String> {
        let path = Path::new(&row.file_path).to_path_buf();
        let size = tokio::fs::metadata(&path)
            .await
            .map_err(|e| format!("local file {}: {e} (kept in the queue)", path.display()))?
            .len();
        let key = row.object_key.as_str();
        if size <= cfg.part_size {
            let body = tokio::fs::read(&path).await.map_err(|e| format!("reading {}: {e}", path.display()))?;
            client.put_object(key, body).await.map_err(|e| e.to_string())?;
        } else {
            self.multipart(client, cfg.part_size, row, size).await?;
        }
        client.object_url(key).map(|u| u.to_string()).map_err(|e| e.to_string())
    }

    async fn multipart(&self, client: &S3Client, part_size: u64, row: &Upload, size: u64) -> Result<(), String> {
        let id = row.recording_id.clone();
        let key = row.object_key.as_str();
        let (upload_id, mut etags) = match &row.upload_id {
            Some(u) => (u.clone(), row.parts.clone()),
            None => {
                let u = client.create_multipart(key).await.map_err(|e| e.to_string())?;
                let (k, v) = (id.clone(), u.clone());
                self.store.run(move |c| uploads::set_upload_id(c, &k, Some(&v))).await.map_err(|e| e.to_string())?;
                (u, Vec::new())
            }
        };
        let parts = size.div_ceil(part_size) as u32;
        // The server no longer knows the upload (S3 answers NoSuchUpload; some
        // servers that lost their state answer 500 again and again): start over
        // next time.
        let stale = row.attempts >= 2;
        let forget = |e: S3Error| {
            let store = self.store.clone();
            let id = id.clone();
            async move {
                if e.no_such_upload() || (stale && matches!(e, S3Error::Service { .. })) {
                    let _ = store.run(move |c| uploads::set_upload_id(c, &id, None)).await;
                }
                e.to_string()
            }
        };
        for n in (etags.len() as u32 + 1)..=parts {
            let offset = u64::from(n - 1) * part_size;
            let len = part_size.min(size - offset) as usize;
            let body = read_at(&row.file_path, offset, len).await?;
            let etag = match client.upload_part(key, &upload_id, n, body).await {
                Ok(t) => t,
                Err(e) => return Err(forget(e).await),
            };
            let (k, t) = (id.clone(), etag.clone());
            self.store.run(move |c| uploads::add_part(c, &k, n, &t)).await.map_err(|e| e.to_string())?;
            etags.push(etag);
        }
        if let Err(e) = client.complete_multipart(key, &upload_id, &etags).await {
            return Err(forget(e).await);
        }
        Ok(())
    }

    /// Emits `call.recording.uploaded` for `row` (the recording's call fields,
    /// presigned URLs, and where the object is).
    async fn announce(&self, cfg: &RecordingUpload, row: &Upload, location: &str) {
        let key = row.recording_id.clone();
        let rec = match self.store.run(move |c| recordings::get(c, &key)).await {
            Ok(Some(r)) => r,
            _ => return,
        };
        let client = match &self.client {
            Some((_, c)) => c.clone(),
            None => return,
        };
        let url = client.presigned_get(&row.object_key, cfg.url_lifetime);
        let s = &rec.saved;
        let mut p = Map::new();
        p.insert("call_control_id".into(), json!(s.call_control_id));
        p.insert("call_leg_id".into(), json!(s.call_leg_id));
        p.insert("call_session_id".into(), json!(s.call_session_id));
        p.insert("connection_id".into(), s.trunk.as_ref().map_or(Value::Null, |t| json!(t)));
        p.insert("from".into(), s.from.as_ref().map_or(Value::Null, |v| json!(v)));
        p.insert("to".into(), s.to.as_ref().map_or(Value::Null, |v| json!(v)));
        p.insert("recording_id".into(), json!(s.recording_id));
        p.insert("channels".into(), json!(s.channels));
        p.insert("recording_started_at".into(), json!(timestamp(s.recording_started_at)));
        p.insert("recording_ended_at".into(), json!(timestamp(s.recording_ended_at)));
        p.insert("duration_millis".into(), json!(s.duration_millis));
        p.insert("size_bytes".into(), json!(s.size_bytes));
        p.insert("sha256".into(), json!(s.sha256));
        let format = crate::config::RecordingFormat::of_path(Path::new(&s.file_path)).as_str();
        p.insert("recording_urls".into(), json!({ format: url }));
        p.insert("public_recording_urls".into(), json!({ format: url }));
        p.insert("recording_urls_expire_at".into(), json!(timestamp(SystemTime::now() + cfg.url_lifetime)));
        p.insert("storage".into(), json!({"bucket": row.bucket, "key": row.object_key, "url": location}));
        self.events.emit_event(CallEvent::new("call.recording.uploaded", Some(s.call_session_id.clone()), p));
    }

    /// Deletes local copies uploaded at least `delete_local_after` ago and marks
    /// them in the recordings index (`deleted_reason: "uploaded"`).
    pub async fn delete_uploaded_local_copies(&self) -> Result<usize, String> {
        let Some((cfg, _)) = self.settings() else { return Ok(0) };
        let Some(after) = cfg.delete_local_after else { return Ok(0) };
        let Some(before) = SystemTime::now().checked_sub(after) else { return Ok(0) };
        let copies = self
            .store
            .run(move |c| uploads::local_copies_uploaded_before(c, before))
            .await
            .map_err(|e| e.to_string())?;
        let mut n = 0;
        for (id, path) in copies {
            match tokio::fs::remove_file(&path).await {
                Ok(()) => n += 1,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::warn!(file = %path, "uploaded recording not deleted locally: {e}");
                    continue;
                }
            }
            let now = SystemTime::now();
            self.store.run(move |c| uploads::local_copy_deleted(c, &id, now)).await.map_err(|e| e.to_string())?;
        }
        Ok(n)
    }
}

async fn read_at(path: &str, offset: u64, len: usize) -> Result<Vec<u8>, String> {
    use tokio::io::{AsyncReadExt, AsyncSeekExt};
    let mut f = tokio::fs::File::open(path).await.map_err(|e| format!("local file {path}: {e}"))?;
    f.seek(std::io::SeekFrom::Start(offset)).await.map_err(|e| format!("local file {path}: {e}"))?;
    let mut buf = vec![0u8; len];
    f.read_exact(&mut buf).await.map_err(|e| format!("reading {path}: {e}"))?;
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_fill_the_prefix_and_retries_back_off_to_five_minutes() {
        let r = Unqueued {
            recording_id: "0b5e-rec".into(),
            file_path: "/r/a.wav".into(),
            call_session_id: "sess-1".into(),
            call_control_id: "v3:cc".into(),
            trunk: Some("telnyx".into()),
            created_at: std::time::UNIX_EPOCH + Duration::from_secs(1_714_564_800),
        };
        assert_eq!(object_key("{node}/{yyyy}/{mm}/{dd}/", "shop-1", &r), "shop-1/2024/05/01/0b5e-rec.wav");
        assert_eq!(object_key("{trunk}/{call_session_id}-", "n", &r), "telnyx/sess-1-0b5e-rec.wav");
        assert_eq!(retry_delay(0), Duration::from_secs(1));
        assert_eq!(retry_delay(3), Duration::from_secs(8));
        assert_eq!(retry_delay(40), MAX_RETRY_DELAY);
    }
}
