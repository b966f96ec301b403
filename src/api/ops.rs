//! Operations: `/healthz` (liveness, no token), `/readyz` (listeners up, accepting
//! calls, store writable, trunk registrations), `/metrics` (Prometheus text
//! exposition format 0.0.4: active calls, calls by `hangup_cause`, RTP packets and
//! loss, webhook queue depth and dead letters, trunk registration state, free disk
//! for recordings, process RSS).

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use super::ApiState;
use crate::call::CallEvent;
use crate::sip::register::RegState;

/// Counters derived from the call events.
#[derive(Default)]
pub struct Counters {
    /// Ended calls by `hangup_cause`.
    pub calls_by_cause: Mutex<std::collections::BTreeMap<String, u64>>,
    /// RTP packets received (sum of `call_quality_stats.inbound.packet_count`).
    pub rtp_packets: AtomicU64,
    /// RTP packets lost (sum of `inbound.skip_packet_count`).
    pub rtp_lost: AtomicU64,
    /// Events emitted.
    pub events: AtomicU64,
}

/// Keeps `counters` up to date from the event bus until `stop`.
pub async fn count_events(
    mut rx: broadcast::Receiver<Arc<CallEvent>>,
    counters: Arc<Counters>,
    stop: CancellationToken,
) {
    loop {
        let ev = tokio::select! {
            ev = rx.recv() => ev,
            _ = stop.cancelled() => return,
        };
        let ev = match ev {
            Ok(ev) => ev,
            Err(broadcast::error::RecvError::Lagged(_)) => continue,
            Err(broadcast::error::RecvError::Closed) => return,
        };
        counters.events.fetch_add(1, Ordering::Relaxed);
        if ev.event_type != "call.hangup" {
            continue;
        }
        let cause = ev.payload.get("hangup_cause").and_then(Value::as_str).unwrap_or("unspecified").to_string();
        *counters.calls_by_cause.lock().unwrap_or_else(|e| e.into_inner()).entry(cause).or_default() += 1;
        let inbound = ev.payload.get("call_quality_stats").and_then(|q| q.get("inbound"));
        let num = |k: &str| {
            inbound
                .and_then(|i| i.get(k))
                .and_then(|v| v.as_str().and_then(|s| s.parse().ok()).or(v.as_u64()))
                .unwrap_or(0)
        };
        counters.rtp_packets.fetch_add(num("packet_count"), Ordering::Relaxed);
        counters.rtp_lost.fetch_add(num("skip_packet_count"), Ordering::Relaxed);
    }
}

/// `GET /healthz`: the process answers.
pub async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// `GET /readyz`: 200 when trunks are configured, the SIP listeners are bound,
/// the daemon accepts calls (not draining), the store is writable and no
/// registering trunk failed; else 503. The body says which:
/// `{"status", "active_calls", "accepting_calls", "listeners": {"sip": ["udp://..."],
/// "api": "https://..."}, "trunks": {name: state}, "store_writable",
/// "recording_disk_free_bytes"}`.
pub async fn readyz(State(st): State<ApiState>) -> Response {
    let regs = st.registrations.borrow().clone();
    let mut ready = true;
    let trunks: serde_json::Map<String, Value> = regs
        .iter()
        .map(|(name, state)| {
            if matches!(state, RegState::Failed { .. }) {
                ready = false;
            }
            (name.clone(), json!(state.to_string()))
        })
        .collect();
    let cfg = st.config.borrow().clone();
    if cfg.trunks.is_empty() {
        ready = false;
    }
    let store_ok = std::fs::OpenOptions::new().append(true).open(st.store.path()).is_ok();
    ready &= store_ok;
    // Bound at startup (the daemon does not start without them); listed so a
    // technician sees what the box listens on.
    let sip: Vec<String> = st.sip_listeners.clone();
    ready &= !sip.is_empty();
    let accepting = st.lifecycle.accepting();
    ready &= accepting;
    let disk_free = if cfg.recording.enabled {
        free_bytes(&cfg.recording.dir).or_else(|| free_bytes(&cfg.node.data_dir))
    } else {
        None
    };
    let code = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let db = st.store.path().to_path_buf();
    let uploads = tokio::task::spawn_blocking(move || {
        let conn = crate::store::open_read_only(&db).ok()?;
        crate::store::uploads::status(&conn).ok()
    })
    .await
    .ok()
    .flatten();
    let body = json!({
        "status": if ready { "ready" } else { "not ready" },
        "active_calls": st.calls.len(),
        "accepting_calls": accepting,
        "listeners": {"sip": sip, "api": cfg.api.base_url()},
        "trunks": trunks,
        "store_writable": store_ok,
        "recording_disk_free_bytes": disk_free,
        // Reported, not a reason to take the box out of service: recordings stop
        // by themselves at the free-space floor.
        "recording_disk_low": disk_low(disk_free),
        "recording_uploads": uploads.map(|u| json!({
            "enabled": cfg.recording_upload.is_some(),
            "pending": u.pending,
            "failing": u.failing,
            "oldest_pending_at": u.oldest_pending.map(crate::store::timestamp),
            "last_error": u.last_error,
        })),
    });
    (code, Json(body)).into_response()
}

/// The daemon's resident set size in bytes (`VmRSS` of `/proc/self/status`).
pub fn resident_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// Whether the recordings' disk is low: under `record::retention::LOW_DISK_BYTES`
/// (256 MiB) free.
pub fn disk_low(free: Option<u64>) -> bool {
    free.is_some_and(|f| f < crate::record::retention::LOW_DISK_BYTES)
}

fn free_bytes(path: &std::path::Path) -> Option<u64> {
    let s = nix::sys::statvfs::statvfs(path).ok()?;
    Some(s.blocks_available() as u64 * s.fragment_size() as u64)
}

fn label(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// `GET /metrics`: Prometheus text format.
pub async fn metrics(State(st): State<ApiState>) -> Response {
    let cfg = st.config.borrow().clone();
    let db = st.store.path().to_path_buf();
    let (outbox, uploads) = tokio::task::spawn_blocking(move || {
        let conn = crate::store::open_read_only(&db).ok()?;
        Some((crate::store::outbox::status(&conn).ok()?, crate::store::uploads::status(&conn).ok()?))
    })
    .await
    .ok()
    .flatten()
    .unzip();
    let mut out = String::with_capacity(2048);
    let mut metric = |name: &str, kind: &str, help: &str, samples: &[(String, f64)]| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (labels, v) in samples {
            let _ = writeln!(out, "{name}{labels} {v}");
        }
    };
    let m = &st.metrics;
    metric("sipbridge_active_calls", "gauge", "Calls in progress.", &[(String::new(), st.calls.len() as f64)]);
    metric(
        "sipbridge_noise_suppression_active",
        "gauge",
        "Noise-suppressed directions running (each one direction of one leg).",
        &[(String::new(), crate::media::suppress::active() as f64)],
    );
    metric(
        "sipbridge_webrtc_participants",
        "gauge",
        "Browsers (WebRTC) in rooms and on calls now.",
        &[(String::new(), st.webrtc.active() as f64)],
    );
    let by_cause: Vec<(String, f64)> = m
        .calls_by_cause
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .map(|(c, n)| (format!("{{hangup_cause=\"{}\"}}", label(c)), *n as f64))
        .collect();
    metric("sipbridge_calls_total", "counter", "Ended calls by Telnyx hangup_cause.", &by_cause);
    metric(
        "sipbridge_rtp_packets_received_total",
        "counter",
        "RTP packets received on ended calls.",
        &[(String::new(), m.rtp_packets.load(Ordering::Relaxed) as f64)],
    );
    metric(
        "sipbridge_rtp_packets_lost_total",
        "counter",
        "RTP packets lost (RFC 3550) on ended calls.",
        &[(String::new(), m.rtp_lost.load(Ordering::Relaxed) as f64)],
    );
    metric(
        "sipbridge_events_total",
        "counter",
        "Call events emitted.",
        &[(String::new(), m.events.load(Ordering::Relaxed) as f64)],
    );
    if let Some(o) = outbox {
        metric(
            "sipbridge_webhook_pending",
            "gauge",
            "Webhook events not yet delivered.",
            &[(String::new(), o.pending as f64)],
        );
        metric("sipbridge_webhook_dead", "gauge", "Dead-lettered webhook events.", &[(String::new(), o.dead as f64)]);
    }
    let regs: Vec<(String, f64)> = st
        .registrations
        .borrow()
        .iter()
        .map(|(t, s)| {
            (format!("{{trunk=\"{}\"}}", label(t)), if matches!(s, RegState::Registered { .. }) { 1.0 } else { 0.0 })
        })
        .collect();
    metric("sipbridge_trunk_registered", "gauge", "1 when the trunk's REGISTER is current.", &regs);
    if let Some(free) = free_bytes(&cfg.recording.dir).or_else(|| free_bytes(&cfg.node.data_dir)) {
        metric(
            "sipbridge_recording_disk_free_bytes",
            "gauge",
            "Free space for recordings.",
            &[(String::new(), free as f64)],
        );
        metric(
            "sipbridge_recording_disk_low",
            "gauge",
            "1 when free space for recordings is under 256 MiB.",
            &[(String::new(), if disk_low(Some(free)) { 1.0 } else { 0.0 })],
        );
    }
    if let Some(u) = uploads {
        metric(
            "sipbridge_recording_uploads_pending",
            "gauge",
            "Recordings not yet uploaded to [recording.upload].",
            &[(String::new(), u.pending as f64)],
        );
        metric(
            "sipbridge_recording_uploads_failing",
            "gauge",
            "Pending recording uploads whose last attempt failed.",
            &[(String::new(), u.failing as f64)],
        );
    }
    for (name, help, counter) in crate::security::all() {
        metric(name, "counter", help, &[(String::new(), counter.get() as f64)]);
    }
    metric(
        "sipbridge_process_resident_memory_bytes",
        "gauge",
        "Resident set size of the daemon.",
        &[(String::new(), resident_bytes() as f64)],
    );
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}
