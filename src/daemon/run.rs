//! `sipbridge run`: the daemon's startup order, signal handling and shutdown.
//!
//! Startup: config → logging → data dir lock → store → listeners → `READY=1`.
//! Signals: SIGTERM/SIGINT drain and exit 0; SIGHUP re-reads the config and applies
//! it only when it is valid (see [`reload`]). The watchdog is pinged from a task
//! on the main runtime, so a wedged runtime stops the pings and systemd restarts us.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;

use super::logging::{self, LogHandle};
use super::{lock, notify};
use crate::call::EventBus;
use crate::call::lifecycle::Lifecycle;
use crate::call::services::{CallControl, CallServices};
use crate::config::{self, Config, Loaded};
use crate::sip::SipStack;
use crate::sip::register::RegStates;
use crate::store::Store;
use tokio_util::sync::CancellationToken;

/// Exit status for a config the daemon cannot start with (sysexits EX_CONFIG);
/// the unit sets `RestartPreventExitStatus=78` so systemd does not loop on it.
pub const EXIT_CONFIG: i32 = 78;

/// Everything running parts of the daemon share.
pub struct Daemon {
    /// The config file path (re-read on SIGHUP).
    pub config_path: PathBuf,
    /// The config in force; replaced on a valid reload.
    pub config: watch::Sender<Arc<Config>>,
    /// Call admission and draining.
    pub lifecycle: Arc<Lifecycle>,
    /// Call events (webhooks, API, logs).
    pub events: EventBus,
    /// Cancelled when the shutdown grace is over: calls still up hang up.
    pub hangup_all: CancellationToken,
    /// Registration state of registering trunks.
    pub registrations: watch::Receiver<RegStates>,
    /// Outcomes of SIGHUP reloads, for the API's `GET /v2/config`.
    pub reloads: crate::api::console::ReloadLog,
}

impl Daemon {
    /// The systemd `STATUS=` line.
    pub fn status_line(&self) -> String {
        let cfg = self.config.borrow();
        if !self.lifecycle.accepting() {
            return format!("stopping: {} active calls", self.lifecycle.active());
        }
        if cfg.trunks.is_empty() {
            return format!("not accepting calls: no [[trunk]] configured in {}", self.config_path.display());
        }
        let regs = self.registrations.borrow();
        let trunks: Vec<String> = cfg
            .trunks
            .iter()
            .map(|t| match regs.get(&t.name) {
                Some(state) => format!("{} {state}", t.name),
                None => t.name.clone(),
            })
            .collect();
        format!("{} active calls; trunks: {}", self.lifecycle.active(), trunks.join(", "))
    }
}

/// Runs the daemon until it is stopped; returns the process exit status.
/// Threads tokio may start for blocking work; with the workers (one per core) and
/// the few threads of our own (store writer, recorders' flushers) well under the
/// unit's `TasksMax=256`.
pub const MAX_BLOCKING_THREADS: usize = 128;

pub fn run(config_path: &Path) -> i32 {
    let loaded = match config::load(config_path) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("{e}");
            eprintln!(
                "sipbridge: not started: {} has errors (check with: sipbridge check-config -c {})",
                config_path.display(),
                config_path.display()
            );
            return EXIT_CONFIG;
        }
    };
    let log = logging::init(&loaded.config.log);
    for w in &loaded.warnings {
        tracing::warn!("config: {w}");
    }
    // Blocking work (store, files, DNS) gets at most MAX_BLOCKING_THREADS threads, so
    // the process stays under the unit's TasksMax= (systemd/sipbridge.service)
    // however much of it is queued (tokio's default allows 512).
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("sipbridge")
        .max_blocking_threads(MAX_BLOCKING_THREADS)
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!("cannot start the async runtime: {e}");
            return 1;
        }
    };
    runtime.block_on(serve(loaded, log))
}

fn create_data_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new().recursive(true).mode(0o750).create(dir)
}

async fn serve(loaded: Loaded, log: LogHandle) -> i32 {
    let Loaded { config, path, .. } = loaded;
    // Signal handlers first: a SIGHUP right after READY must not kill us.
    let (mut term, mut int, mut hup) =
        match (signal(SignalKind::terminate()), signal(SignalKind::interrupt()), signal(SignalKind::hangup())) {
            (Ok(t), Ok(i), Ok(h)) => (t, i, h),
            _ => {
                tracing::error!("cannot install signal handlers");
                return 1;
            }
        };

    let data_dir = config.node.data_dir.clone();
    if let Err(e) = create_data_dir(&data_dir) {
        tracing::error!("cannot create data_dir {}: {e}", data_dir.display());
        return 1;
    }
    // The directory playback reads from ([media] dir): created (0750) when missing,
    // so a fresh install has a place to put prompts; a failure is not fatal (file
    // playback then answers 422 naming the directory).
    if !config.media.dir.exists() {
        if let Err(e) = create_data_dir(&config.media.dir) {
            tracing::warn!("cannot create [media] dir {}: {e}", config.media.dir.display());
        }
    }
    let _lock = match lock::lock_data_dir(&data_dir) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("sipbridge: {e}");
            return 1;
        }
    };
    let store = match Store::open(&data_dir) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("{e}");
            return 1;
        }
    };
    if let Err(e) = store.record_start(&humantime::format_rfc3339_micros(SystemTime::now()).to_string()) {
        tracing::warn!("{e}");
    }
    // One writer thread owns the store from here on.
    let store = match crate::store::StoreHandle::start(store) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("{e}");
            return 1;
        }
    };
    let (outbox, webhook_worker) = match crate::webhook::start(
        store.clone(),
        &config.webhooks,
        crate::webhook::DeliveryPolicy::from_config(&config.webhooks),
    ) {
        Ok(x) => x,
        Err(e) => {
            tracing::error!("webhooks: {e}");
            eprintln!("sipbridge: webhooks: {e}");
            return 1;
        }
    };
    // Calls that were up when the process died: close their records (and tell the
    // backend) before any new call is accepted.
    match outbox.close_interrupted_calls(SystemTime::now()).await {
        Ok(closed) if !closed.is_empty() => {
            tracing::warn!(calls = closed.len(), "closed the records of calls interrupted by a crash")
        }
        Ok(_) => {}
        Err(e) => tracing::warn!("closing interrupted calls failed: {e}"),
    }

    // Recordings left by a crash or power cut: finalize them before new calls
    // (announced below, once events can be emitted).
    let mut repaired = Vec::new();
    if config.recording.enabled && config.recording.dir.exists() {
        match crate::record::repair(&config.recording.dir) {
            Ok(r) => {
                for f in &r.repaired {
                    tracing::warn!(
                        file = %f.final_path.display(), frames = f.frames,
                        "recording left by a crash repaired and finalized"
                    );
                }
                for e in &r.failed {
                    tracing::warn!("recording could not be repaired: {e}");
                }
                repaired = r.repaired;
            }
            Err(e) => tracing::warn!("recordings repair pass failed: {e}"),
        }
    }
    spawn_recording_sweeper(config.recording.clone(), store.clone());

    // rustls: the ring provider, installed once (never aws-lc; ARCHITECTURE.md).
    let _ = rustls::crypto::ring::default_provider().install_default();

    let (config_tx, _) = watch::channel(Arc::new(config));
    let lifecycle = Lifecycle::new(config_tx.borrow().node.max_calls);
    let events = EventBus::with_outbox(outbox);
    crate::record::recovered::announce(&store, &events, &repaired, &config_tx.borrow().api.base_url()).await;
    let hangup_all = CancellationToken::new();
    // Recordings to [recording.upload] (S3-compatible storage), from the store's queue.
    let upload_stop = CancellationToken::new();
    tokio::spawn(
        crate::record::upload::Uploader::new(store.clone(), config_tx.subscribe(), Arc::new(events.clone()))
            .run(upload_stop.clone()),
    );
    // The composition root: the call layer's handles, shared by the SIP stack,
    // the control API and WebRTC (none of them reaches into another).
    let services = match CallServices::new(
        config_tx.subscribe(),
        events.clone(),
        crate::call::control::CallRegistry::default(),
        hangup_all.clone(),
    ) {
        Ok(s) => s,
        Err(e) => {
            let e = format!("cannot start the media engine ([rtp] workers): {e}");
            tracing::error!("{e}");
            eprintln!("sipbridge: {e}");
            return 1;
        }
    };
    let sip = match SipStack::start(services.clone(), Arc::clone(&lifecycle)).await {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("sipbridge: {e}");
            return 1;
        }
    };
    let daemon = Arc::new(Daemon {
        config_path: path,
        lifecycle,
        config: config_tx,
        events,
        hangup_all,
        registrations: sip.registrations.clone(),
        reloads: crate::api::console::ReloadLog::default(),
    });
    // Registration changes show in systemd's STATUS=.
    {
        let daemon = Arc::clone(&daemon);
        let mut regs = sip.registrations.clone();
        tokio::spawn(async move {
            while regs.changed().await.is_ok() {
                notify::status(&daemon.status_line());
            }
        });
    }

    // The control API. A port already taken is logged, not fatal: calls are the
    // box's main job and routes handle them without the API.
    let api_stop = CancellationToken::new();
    let (api_enabled, api_listen) = {
        let cfg = daemon.config.borrow();
        (cfg.api.enabled, cfg.api.listen)
    };
    match if api_enabled { Some(tokio::net::TcpListener::bind(api_listen).await) } else { None } {
        None => tracing::info!("no [api] section: the control API is not served"),
        Some(Ok(listener)) => {
            let state = crate::api::ApiState {
                calls: services.calls.clone(),
                control: CallControl::new(services.clone(), Arc::new(Arc::clone(&sip.ctx))),
                sip_listeners: sip.ctx.listeners.iter().map(|(t, a)| format!("{t}://{a}")).collect(),
                lifecycle: Arc::clone(&daemon.lifecycle),
                config: daemon.config.subscribe(),
                events: daemon.events.clone(),
                registrations: sip.registrations.clone(),
                trunk_activity: sip.ctx.activity.clone(),
                metrics: Arc::default(),
                store: store.clone(),
                config_path: Some(daemon.config_path.clone()),
                reloads: daemon.reloads.clone(),
                webrtc: {
                    let cfg = daemon.config.borrow();
                    crate::webrtc::WebRtcHub::new(
                        cfg.webrtc.clone(),
                        cfg.rooms.options(),
                        services.rooms.clone(),
                        services.calls.clone(),
                    )
                },
            };
            tracing::info!(listen = %api_listen, "control API listening");
            tokio::spawn(crate::api::serve(listener, state, api_stop.clone()));
        }
        Some(Err(e)) => tracing::error!("control API not started: cannot listen on {api_listen} ([api] listen): {e}"),
    }

    let status = daemon.status_line();
    notify::ready(&status);
    tracing::info!(node = %daemon.config.borrow().node.name, version = env!("CARGO_PKG_VERSION"), "sipbridge ready: {status}");

    if let Some(every) = notify::watchdog_interval() {
        tracing::debug!(interval_ms = every.as_millis() as u64, "systemd watchdog enabled");
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                notify::watchdog();
            }
        });
    }

    loop {
        tokio::select! {
            _ = term.recv() => { tracing::info!("SIGTERM received"); break; }
            _ = int.recv() => { tracing::info!("SIGINT received"); break; }
            _ = hup.recv() => reload(&daemon, &log),
        }
    }
    shutdown(&daemon).await;
    api_stop.cancel();
    upload_stop.cancel();
    sip.stop().await;
    // Barrier: the writer runs jobs in order, so once this no-op is committed every
    // event the calls emitted without waiting (their hangups) is on disk too.
    if let Err(e) = store.run(|_| Ok(())).await {
        tracing::warn!("store: flushing the last events failed: {e}");
    }
    if let Some(w) = webhook_worker {
        w.shutdown(Duration::from_secs(5)).await;
    }
    drop(store);
    0
}

/// Retention and disk quota of `[recording]`: a sweep at start and every 10 minutes,
/// on a blocking thread (deleting files can stall on an SD card). Deleted files are
/// marked in the recordings index (`deleted_reason: "retention"`).
fn spawn_recording_sweeper(rec: crate::config::Recording, store: crate::store::StoreHandle) {
    if !rec.enabled {
        return;
    }
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(600));
        loop {
            every.tick().await;
            let rec = rec.clone();
            // Recordings not uploaded yet to [recording.upload] are never swept.
            let keep: std::collections::HashSet<PathBuf> = match store.run(crate::store::uploads::pending_files).await {
                Ok(files) => files.into_iter().map(PathBuf::from).collect(),
                Err(e) => {
                    tracing::warn!("recording sweep skipped: the upload queue could not be read: {e}");
                    continue;
                }
            };
            let res = tokio::task::spawn_blocking(move || {
                if !rec.dir.exists() {
                    return Ok(Default::default());
                }
                let keep = |p: &Path| keep.contains(p);
                crate::record::sweep_keeping(&rec.dir, SystemTime::now(), rec.retention, rec.max_disk_usage, &keep)
            })
            .await;
            match res {
                Ok(Ok(r)) if !r.deleted.is_empty() => {
                    tracing::info!(files = r.deleted.len(), freed_bytes = r.freed_bytes, "old recordings deleted");
                    let paths: Vec<String> = r.deleted.iter().map(|p| p.display().to_string()).collect();
                    let marked = store
                        .run(move |c| {
                            crate::store::recordings::mark_deleted_paths(
                                c,
                                &paths,
                                SystemTime::now(),
                                crate::store::recordings::DeletedReason::Retention,
                            )
                        })
                        .await;
                    if let Err(e) = marked {
                        tracing::warn!("recordings index: marking swept files failed: {e}");
                    }
                }
                Ok(Err(e)) => tracing::warn!("recording sweep failed: {e}"),
                _ => {}
            }
        }
    });
}

/// SIGHUP: re-read and validate the config; apply it when valid, else keep the
/// old one and log every problem. Settings bound at startup (listeners, data_dir,
/// port range) are logged as needing a restart.
pub fn reload(daemon: &Daemon, log: &LogHandle) {
    notify::reloading();
    tracing::info!("SIGHUP: reloading {}", daemon.config_path.display());
    match config::load(&daemon.config_path) {
        Ok(new) => {
            for w in &new.warnings {
                tracing::warn!("config: {w}");
            }
            let old = daemon.config.borrow().clone();
            let cfg = new.config;
            let mut restart = Vec::new();
            if cfg.node.data_dir != old.node.data_dir {
                restart.push("node.data_dir");
            }
            if cfg.sip.listen != old.sip.listen {
                restart.push("sip.listen");
            }
            // The SIP endpoint takes its User-Agent once, when it starts.
            if cfg.sip.user_agent != old.sip.user_agent {
                restart.push("sip.user_agent");
            }
            if cfg.rtp.port_range != old.rtp.port_range {
                restart.push("rtp.port_range");
            }
            if cfg.api.listen != old.api.listen {
                restart.push("api.listen");
            }
            if (&cfg.api.tls_certificate, &cfg.api.tls_private_key)
                != (&old.api.tls_certificate, &old.api.tls_private_key)
            {
                restart.push("api.tls_certificate/tls_private_key");
            }
            // Every [webhooks] key is read once, when delivery starts.
            if cfg.webhooks != old.webhooks {
                restart.push("webhooks");
            }
            // The WebRTC hub reads [webrtc] and keys join tokens from the API token
            // once, when the API starts.
            if cfg.webrtc != old.webrtc {
                restart.push("webrtc");
            }
            if cfg.api.token.as_ref().map(|t| t.expose().to_string())
                != old.api.token.as_ref().map(|t| t.expose().to_string())
            {
                restart.push("api.token (for join tokens)");
            }
            if !restart.is_empty() {
                tracing::warn!("changed settings take effect only after a restart: {}", restart.join(", "));
            }
            log.set_level(&cfg.log.level);
            daemon.lifecycle.set_max_calls(cfg.node.max_calls);
            daemon.config.send_replace(Arc::new(cfg));
            daemon.reloads.applied(std::time::SystemTime::now());
            let status = daemon.status_line();
            tracing::info!("configuration reloaded: {status}");
            notify::ready(&status);
        }
        Err(e) => {
            for p in &e.problems {
                tracing::error!("config reload: {p}");
            }
            daemon.reloads.rejected(std::time::SystemTime::now(), e.problems.iter().map(|p| p.to_string()).collect());
            let status = format!(
                "config reload failed ({} errors), old config kept; {}",
                e.problems.len(),
                daemon.status_line()
            );
            tracing::error!("{status}");
            notify::ready(&status);
        }
    }
}

async fn shutdown(daemon: &Daemon) {
    daemon.lifecycle.stop_accepting();
    let grace = daemon.config.borrow().node.shutdown_grace;
    let active = daemon.lifecycle.active();
    notify::stopping(&format!("stopping: waiting up to {}s for {active} active calls", grace.as_secs()));
    tracing::info!(active, grace_s = grace.as_secs(), "stopping: new calls are refused");
    if tokio::time::timeout(grace, daemon.lifecycle.drained()).await.is_err() {
        tracing::warn!(active = daemon.lifecycle.active(), "shutdown grace over: hanging up remaining calls");
        daemon.hangup_all.cancel();
        // Calls send BYE and end; give them a moment.
        let _ = tokio::time::timeout(Duration::from_secs(2), daemon.lifecycle.drained()).await;
    }
    tracing::info!("sipbridge stopped");
}
