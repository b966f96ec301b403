//! Drives sipbridge's real webhook outbox and delivery worker without SIP calls:
//! emits N events over several call sessions (each session's events one after
//! another, the sessions concurrently, as calls do), then waits until every
//! pending event is delivered.
//!
//! Used by `tests/webhooks.rs` (SIGKILL while hundreds of events are pending,
//! then a restart must deliver every acknowledged event) and by
//! `scripts/bench-webhooks` (events/s accepted with durable commits, and delivered).
//!
//! stdout, one line each, flushed: `emitted <event id> <session> <n>` after each
//! `emit` returned Ok (the event is on disk); `all-emitted <count> <seconds>`;
//! `drained <seconds>` once nothing is pending. Exit 0, or 2 when not drained
//! within --drain-timeout-s.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use serde_json::{Map, Value};
use sipbridge::call::event::CallEvent;
use sipbridge::store::{Store, StoreHandle};
use sipbridge::webhook::{DeliveryPolicy, Outbox, Targets, Worker, key};

/// Emit webhook events through the durable outbox and deliver them.
#[derive(Parser)]
struct Args {
    /// Directory of sipbridge.db (created if missing).
    #[arg(long)]
    data_dir: PathBuf,
    /// Ed25519 signing key (PKCS#8 PEM, `sipbridge keygen`).
    #[arg(long)]
    key: PathBuf,
    /// Webhook URL; without it events are only stored (measures accepting alone).
    #[arg(long)]
    url: Option<url::Url>,
    /// Failover URL.
    #[arg(long)]
    failover_url: Option<url::Url>,
    /// Events to emit in total (0: only deliver what the store holds).
    #[arg(long, default_value_t = 0)]
    events: usize,
    /// Session name prefixes; sessions are `<prefix><i>`.
    #[arg(long, value_delimiter = ',', default_value = "s-")]
    session_prefixes: Vec<String>,
    /// Sessions per prefix; events are spread evenly over all sessions.
    #[arg(long, default_value_t = 10)]
    sessions_per_prefix: usize,
    /// Bytes of filler in each payload (a real call.hangup is ~800 bytes of JSON).
    #[arg(long, default_value_t = 0)]
    payload_bytes: usize,
    /// Nominal delay after a first failure, ms.
    #[arg(long, default_value_t = 1000)]
    retry_initial_ms: u64,
    /// Backoff cap, ms.
    #[arg(long, default_value_t = 300_000)]
    retry_max_ms: u64,
    /// Concurrent POSTs.
    #[arg(long, default_value_t = 16)]
    max_in_flight: usize,
    /// Give up waiting for delivery after this long, s.
    #[arg(long, default_value_t = 300)]
    drain_timeout_s: u64,
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    std::process::exit(run(args).await);
}

async fn run(args: Args) -> i32 {
    if let Err(e) = std::fs::create_dir_all(&args.data_dir) {
        eprintln!("webhook_emitter: {}: {e}", args.data_dir.display());
        return 1;
    }
    let store = match Store::open(&args.data_dir).and_then(StoreHandle::start) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("webhook_emitter: {e}");
            return 1;
        }
    };
    let signing_key = match key::load_signing_key(&args.key) {
        Ok(k) => k,
        Err(e) => {
            eprintln!("webhook_emitter: {e}");
            return 1;
        }
    };
    let outbox = Outbox::new(store.clone(), true);
    let policy = DeliveryPolicy {
        retry_initial: Duration::from_millis(args.retry_initial_ms),
        retry_max: Duration::from_millis(args.retry_max_ms),
        max_in_flight: args.max_in_flight,
        idle_poll: Duration::from_millis(200),
        ..DeliveryPolicy::default()
    };
    let worker = match &args.url {
        Some(url) => {
            let targets = Targets { url: url.clone(), failover_url: args.failover_url.clone() };
            match Worker::start(store.clone(), outbox.waker(), targets, signing_key, policy) {
                Ok(w) => Some(w),
                Err(e) => {
                    eprintln!("webhook_emitter: {e}");
                    return 1;
                }
            }
        }
        None => None,
    };

    let sessions: Vec<String> = args
        .session_prefixes
        .iter()
        .flat_map(|p| (0..args.sessions_per_prefix).map(move |i| format!("{p}{i}")))
        .collect();
    let started = Instant::now();
    let filler = Arc::new("x".repeat(args.payload_bytes));
    let mut tasks = Vec::new();
    for (si, session) in sessions.iter().enumerate() {
        // Session si gets events si, si + S, si + 2S, ... of the total.
        let count = (args.events + sessions.len() - 1 - si) / sessions.len().max(1);
        let (outbox, session, filler) = (outbox.clone(), session.clone(), filler.clone());
        tasks.push(tokio::spawn(async move {
            for n in 0..count {
                let mut p = Map::new();
                p.insert("call_control_id".into(), Value::from(format!("v3:{session}")));
                p.insert("call_session_id".into(), Value::from(session.clone()));
                p.insert("n".into(), Value::from(n));
                if !filler.is_empty() {
                    p.insert("filler".into(), Value::from(filler.as_str()));
                }
                let event = CallEvent::new("call.test", Some(session.clone()), p);
                if let Err(e) = outbox.emit(&event).await {
                    eprintln!("webhook_emitter: emit failed: {e}");
                    return false;
                }
                say(&format!("emitted {} {session} {n}", event.id));
            }
            true
        }));
    }
    let mut ok = true;
    for t in tasks {
        ok &= t.await.unwrap_or(false);
    }
    if !ok {
        return 1;
    }
    let emitted_s = started.elapsed().as_secs_f64();
    say(&format!("all-emitted {} {emitted_s:.3}", args.events));
    let Some(worker) = worker else {
        return 0;
    };
    let deadline = Instant::now() + Duration::from_secs(args.drain_timeout_s);
    loop {
        match outbox.pending().await {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) => eprintln!("webhook_emitter: {e}"),
        }
        if Instant::now() >= deadline {
            eprintln!("webhook_emitter: not drained within {} s", args.drain_timeout_s);
            return 2;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    say(&format!("drained {:.3}", started.elapsed().as_secs_f64()));
    worker.shutdown(Duration::from_secs(1)).await;
    0
}
