//! Webhook delivery end to end, without SIP calls: sipbridge's real outbox, store
//! and delivery worker (in-process, or the `webhook_emitter` example as a separate
//! process for the SIGKILL test) against `tests/receivers/webhook_receiver.py`, a
//! Python backend that verifies every signature with `cryptography`'s Ed25519 and
//! the base64 public key printed by `sipbridge keygen`, and rejects stale
//! timestamps. Every test also asserts the receiver rejected nothing.

#[path = "receivers/harness.rs"]
mod harness;

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use harness::{Receiver, delivered, delivered_ids, duplicates, keygen, order_by_session, rejected};
use serde_json::{Map, Value, json};
use sipbridge::call::event::CallEvent;
use sipbridge::store::{Store, StoreHandle};
use sipbridge::webhook::{DeliveryPolicy, Outbox, Targets, Worker, cli, envelope, key};

const LIMIT: Duration = Duration::from_secs(60);

/// Retries in tens of milliseconds so tests run fast; otherwise the defaults.
fn fast_policy() -> DeliveryPolicy {
    DeliveryPolicy {
        timeout: Duration::from_secs(5),
        retry_initial: Duration::from_millis(20),
        retry_max: Duration::from_millis(200),
        idle_poll: Duration::from_millis(100),
        ..DeliveryPolicy::default()
    }
}

fn open(dir: &Path) -> StoreHandle {
    StoreHandle::start(Store::open(dir).expect("open store")).expect("start store writer")
}

fn start_worker(store: &StoreHandle, outbox: &Outbox, key: &Path, targets: Targets, policy: DeliveryPolicy) -> Worker {
    let signing = key::load_signing_key(key).expect("signing key");
    Worker::start(store.clone(), outbox.waker(), targets, signing, policy).expect("start worker")
}

fn to(url: url::Url) -> Targets {
    Targets { url, failover_url: None }
}

fn event(session: Option<&str>, n: usize) -> CallEvent {
    let mut p = Map::new();
    p.insert("call_control_id".into(), json!(format!("v3:{}", session.unwrap_or("none"))));
    if let Some(s) = session {
        p.insert("call_session_id".into(), json!(s));
    }
    p.insert("n".into(), json!(n));
    CallEvent::new("call.test", session.map(str::to_string), p)
}

/// Emits `per_session` events for each session, each session's one after another,
/// the sessions concurrently (so their events interleave in the outbox).
async fn emit_interleaved(outbox: &Outbox, sessions: &[&str], per_session: usize) -> Vec<CallEvent> {
    let mut tasks = Vec::new();
    for s in sessions {
        let (outbox, s) = (outbox.clone(), s.to_string());
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::new();
            for n in 0..per_session {
                let e = event(Some(&s), n);
                outbox.emit(&e).await.expect("emit");
                out.push(e);
            }
            out
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all
}

fn ids(events: &[CallEvent]) -> HashSet<String> {
    events.iter().map(|e| e.id.to_string()).collect()
}

fn in_order(n: usize) -> Vec<u64> {
    (0..n as u64).collect()
}

async fn pending(store: &StoreHandle) -> (u64, u64) {
    let st = store.run(sipbridge::store::outbox::status).await.unwrap();
    (st.pending, st.dead)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_calls_events_arrive_in_order_with_calls_interleaved() {
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = keygen(dir.path());
    let rx = Receiver::start(dir.path(), "hook", &public, &["--delay-ms", "2"]);
    let store = open(dir.path());
    let outbox = Outbox::new(store.clone(), true);
    let worker = start_worker(&store, &outbox, &key, to(rx.url()), fast_policy());

    let sessions = ["s0", "s1", "s2", "s3", "s4", "s5", "s6", "s7"];
    let mut sent = emit_interleaved(&outbox, &sessions, 25).await;
    for n in 0..10 {
        let e = event(None, n);
        outbox.emit(&e).await.unwrap();
        sent.push(e);
    }
    let want = ids(&sent);
    let got = rx.wait_until("all 210 events delivered", LIMIT, |e| delivered_ids(e).is_superset(&want)).await;

    assert!(rejected(&got).is_empty(), "receiver rejected: {:?}", rejected(&got));
    assert_eq!(delivered(&got).len(), 210, "each event exactly once when nothing fails");
    let order = order_by_session(&got);
    for s in sessions {
        assert_eq!(order[s], in_order(25), "order of {s}");
    }
    // Exact envelope: field names, types, formats.
    let first = delivered(&got)[0]["body"].clone();
    let data = first["data"].as_object().unwrap();
    let keys: Vec<&str> = data.keys().map(String::as_str).collect();
    assert_eq!(keys, ["event_type", "id", "occurred_at", "payload", "record_type"]);
    assert_eq!(data["record_type"], "event");
    assert_eq!(data["event_type"], "call.test");
    let occurred = data["occurred_at"].as_str().unwrap();
    assert!(occurred.len() == 27 && occurred.ends_with('Z') && &occurred[19..20] == ".", "{occurred}");
    assert!(sipbridge::store::parse_timestamp(occurred).is_some());
    assert_eq!(first["meta"], json!({"attempt": 1, "delivered_to": rx.url().as_str()}));
    let original = sent.iter().find(|e| e.id.to_string() == data["id"].as_str().unwrap()).unwrap();
    assert_eq!(data["payload"], Value::Object(original.payload.clone()));

    worker.shutdown(Duration::from_secs(5)).await;
    let st = outbox.status().await.unwrap();
    assert_eq!((st.pending, st.dead, st.delivered), (0, 0, 210));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_stuck_in_retries_does_not_hold_up_other_calls() {
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = keygen(dir.path());
    let rx = Receiver::start(dir.path(), "hook", &public, &["--fail-session", "stuck"]);
    let store = open(dir.path());
    let outbox = Outbox::new(store.clone(), true);
    let worker = start_worker(&store, &outbox, &key, to(rx.url()), fast_policy());

    let sent = emit_interleaved(&outbox, &["stuck", "a", "b", "c"], 5).await;
    let others: HashSet<String> =
        sent.iter().filter(|e| e.call_session_id.as_deref() != Some("stuck")).map(|e| e.id.to_string()).collect();
    // The other calls all get through, and `stuck`'s head has failed at least twice meanwhile.
    let got = rx
        .wait_until("other calls delivered while `stuck` fails", LIMIT, |e| {
            let stuck_tries = e.iter().filter(|x| x["session"] == "stuck").count();
            delivered_ids(e).is_superset(&others) && stuck_tries >= 2
        })
        .await;
    let stuck: Vec<&Value> = got.iter().filter(|e| e["session"] == "stuck").collect();
    assert!(
        stuck.iter().all(|e| e["answered"] == 500 && e["body"]["data"]["payload"]["n"] == 0),
        "only the head was tried"
    );
    let attempts: Vec<u64> = stuck.iter().map(|e| e["attempt"].as_u64().unwrap()).collect();
    assert_eq!(attempts, in_order(attempts.len()).iter().map(|a| a + 1).collect::<Vec<_>>(), "meta.attempt counts");

    rx.control(json!({"fail_session": null}));
    let want = ids(&sent);
    let got = rx.wait_until("`stuck` delivered after recovery", LIMIT, |e| delivered_ids(e).is_superset(&want)).await;
    assert_eq!(order_by_session(&got)["stuck"], in_order(5));
    assert!(rejected(&got).is_empty());
    worker.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receiver_down_for_a_while_then_everything_arrives_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = keygen(dir.path());
    let mut rx = Receiver::start(dir.path(), "hook", &public, &[]);
    rx.stop();
    let store = open(dir.path());
    let outbox = Outbox::new(store.clone(), true);
    let worker = start_worker(&store, &outbox, &key, to(rx.url()), fast_policy());

    let sessions = ["d0", "d1", "d2", "d3"];
    let sent = emit_interleaved(&outbox, &sessions, 10).await;
    // Down long enough that every session's head failed at least twice.
    let deadline = Instant::now() + LIMIT;
    loop {
        let heads_retried: i64 = store
            .run(|c| c.query_row("SELECT count(*) FROM webhook_outbox WHERE attempts >= 2", [], |r| r.get(0)))
            .await
            .unwrap();
        if heads_retried >= 4 {
            break;
        }
        assert!(Instant::now() < deadline, "heads were not retried while the receiver was down");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let row = store.run(sipbridge::store::outbox::status).await.unwrap().oldest_pending.unwrap();
    assert!(row.last_error.unwrap().contains("onnect"), "a refused connection is recorded as such");

    rx.restart();
    let want = ids(&sent);
    let got = rx
        .wait_until("all 40 events after the receiver returned", LIMIT, |e| delivered_ids(e).is_superset(&want))
        .await;
    let order = order_by_session(&got);
    for s in sessions {
        assert_eq!(order[s], in_order(10), "order of {s}");
    }
    let head_attempts: Vec<u64> = delivered(&got)
        .iter()
        .filter(|e| e["body"]["data"]["payload"]["n"] == 0)
        .map(|e| e["attempt"].as_u64().unwrap())
        .collect();
    assert!(head_attempts.iter().all(|&a| a >= 3), "heads arrive with their attempt count: {head_attempts:?}");
    assert!(rejected(&got).is_empty());
    worker.shutdown(Duration::from_secs(5)).await;
    assert_eq!(pending(&store).await, (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_answering_500_makes_events_go_to_the_failover_url() {
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = keygen(dir.path());
    let primary = Receiver::start(dir.path(), "primary", &public, &["--status", "500"]);
    let failover = Receiver::start(dir.path(), "failover", &public, &[]);
    let store = open(dir.path());
    let outbox = Outbox::new(store.clone(), true);
    let targets = Targets { url: primary.url(), failover_url: Some(failover.url()) };
    let worker = start_worker(&store, &outbox, &key, targets, fast_policy());

    let sent = emit_interleaved(&outbox, &["f"], 2).await;
    let want = ids(&sent);
    let got =
        failover.wait_until("both events at the failover URL", LIMIT, |e| delivered_ids(e).is_superset(&want)).await;
    let at_primary = primary.entries();
    for (n, e) in sent.iter().enumerate() {
        let id = e.id.to_string();
        let tries: Vec<(u64, u64)> = at_primary
            .iter()
            .filter(|x| x["event_id"] == id.as_str())
            .map(|x| (x["attempt"].as_u64().unwrap(), x["answered"].as_u64().unwrap()))
            .collect();
        assert_eq!(tries, [(1, 500), (2, 500), (3, 500)], "event {n}: three tries at the primary URL");
        let there: Vec<&Value> = got.iter().filter(|x| x["event_id"] == id.as_str()).collect();
        assert_eq!(there.len(), 1);
        assert_eq!(there[0]["attempt"], 4);
        assert_eq!(there[0]["delivered_to"], failover.url().as_str());
    }
    assert_eq!(order_by_session(&got)["f"], in_order(2));
    assert!(rejected(&got).is_empty() && rejected(&at_primary).is_empty());
    worker.shutdown(Duration::from_secs(5)).await;
}

fn config_for(dir: &Path, key: &Path, url: &url::Url) -> sipbridge::config::Config {
    let path = dir.join("sipbridge.toml");
    let text = format!(
        "[node]\ndata_dir = {:?}\n\n[webhooks]\nurl = {:?}\nsigning_key = {:?}\nmax_age = \"1s\"\n",
        dir.display().to_string(),
        url.as_str(),
        key.display().to_string()
    );
    std::fs::write(&path, text).unwrap();
    sipbridge::config::load_with_env(&path, std::iter::empty()).expect("test config loads").config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_older_than_max_age_are_dead_lettered_kept_and_requeued_by_retry_dead() {
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = keygen(dir.path());
    let mut rx = Receiver::start(dir.path(), "hook", &public, &[]);
    rx.stop();
    let store = open(dir.path());
    let outbox = Outbox::new(store.clone(), true);
    let policy =
        DeliveryPolicy { max_age: Duration::from_secs(1), retry_initial: Duration::from_millis(100), ..fast_policy() };
    let worker = start_worker(&store, &outbox, &key, to(rx.url()), policy);

    let mut sent = emit_interleaved(&outbox, &["x"], 3).await;
    let lone = event(None, 0);
    outbox.emit(&lone).await.unwrap();
    sent.push(lone);
    let deadline = Instant::now() + LIMIT;
    while pending(&store).await != (0, 4) {
        assert!(Instant::now() < deadline, "not dead-lettered: {:?}", pending(&store).await);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // What a technician sees.
    let config = config_for(dir.path(), &key, &rx.url());
    let mut text = Vec::new();
    cli::status_to(&mut text, &config).unwrap();
    let text = String::from_utf8(text).unwrap();
    assert!(text.contains("pending: 0\n") && text.contains("dead-lettered: 4 (kept;"), "{text}");

    rx.restart();
    let mut out = Vec::new();
    assert_eq!(cli::retry_dead_to(&mut out, dir.path()).unwrap(), 4);
    let want = ids(&sent);
    let got = rx.wait_until("requeued events delivered", LIMIT, |e| delivered_ids(e).is_superset(&want)).await;
    assert_eq!(order_by_session(&got)["x"], in_order(3));
    assert!(rejected(&got).is_empty());
    worker.shutdown(Duration::from_secs(5)).await;
    assert_eq!(pending(&store).await, (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_events_survive_dropping_the_worker_and_reopening_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = keygen(dir.path());
    let mut rx = Receiver::start(dir.path(), "hook", &public, &["--delay-ms", "5"]);
    let sessions: Vec<String> = (0..10).map(|i| format!("r{i}")).collect();
    let names: Vec<&str> = sessions.iter().map(String::as_str).collect();
    let sent = {
        let store = open(dir.path());
        let outbox = Outbox::new(store.clone(), true);
        let worker = start_worker(&store, &outbox, &key, to(rx.url()), fast_policy());
        let sent = emit_interleaved(&outbox, &names, 30).await;
        // Some delivered, some in flight, most pending: stop mid-flight.
        worker.abort().await;
        rx.stop();
        sent
    };
    let (left, _) = pending(&open(dir.path())).await;
    assert!(left > 0, "the test must stop with events pending");

    rx.restart();
    let store = open(dir.path());
    let outbox = Outbox::new(store.clone(), true);
    let worker = start_worker(&store, &outbox, &key, to(rx.url()), fast_policy());
    let want = ids(&sent);
    let got = rx.wait_until("all 300 events after the restart", LIMIT, |e| delivered_ids(e).is_superset(&want)).await;
    let order = order_by_session(&got);
    for s in &names {
        assert_eq!(order[*s], in_order(30), "order of {s}");
    }
    let (dup_ids, extra) = duplicates(&got);
    eprintln!("restart: {left} pending at the stop; duplicates: {dup_ids} events delivered {extra} extra times");
    assert!(rejected(&got).is_empty());
    worker.shutdown(Duration::from_secs(5)).await;
}

/// Builds `examples/webhook_emitter.rs` (same profile as this test) and returns its path.
fn emitter() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(Path::parent).unwrap().to_path_buf();
    let target_dir = profile_dir.parent().unwrap();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "--quiet", "--example", "webhook_emitter", "--target-dir"]).arg(target_dir);
    cmd.current_dir(env!("CARGO_MANIFEST_DIR"));
    if profile_dir.file_name().is_some_and(|n| n == "release") {
        cmd.arg("--release");
    }
    let st = cmd.status().expect("cargo build --example webhook_emitter");
    assert!(st.success(), "building the emitter example failed");
    profile_dir.join("examples/webhook_emitter")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_with_hundreds_of_events_pending_loses_none() {
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = keygen(dir.path());
    // `fail-*` calls are answered 500 (their events stay pending); `ok-*` slowly.
    let rx = Receiver::start(dir.path(), "hook", &public, &["--fail-session", "fail-", "--delay-ms", "20"]);
    let bin = emitter();
    let data = dir.path().join("data");
    let run = |events: usize| {
        let mut cmd = Command::new(&bin);
        cmd.arg("--data-dir").arg(&data).arg("--key").arg(&key).args(["--url", rx.url().as_str()]);
        cmd.args(["--events", &events.to_string(), "--session-prefixes", "ok-,fail-", "--sessions-per-prefix", "10"]);
        cmd.args(["--retry-initial-ms", "20", "--retry-max-ms", "200", "--payload-bytes", "600"]);
        cmd.stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn().expect("start webhook_emitter")
    };

    let mut child = run(800);
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let stdout = child.stdout.take().unwrap();
    // Read acknowledgements on a thread (bounded by the child's life: SIGKILL closes the pipe).
    let (tx, acks) = std::sync::mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut acknowledged: Vec<(String, String)> = Vec::new();
    let deadline = Instant::now() + LIMIT;
    while acknowledged.len() < 500 {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = acks.recv_timeout(left).expect("emitter acknowledged 500 events in time");
        let f: Vec<&str> = line.split(' ').collect();
        if f[0] == "emitted" {
            acknowledged.push((f[1].to_string(), f[2].to_string()));
        }
    }
    // Mid-emit and mid-delivery: the process dies without any chance to clean up.
    nix::sys::signal::kill(pid, nix::sys::signal::SIGKILL).unwrap();
    let _ = child.wait();
    reader.join().unwrap();
    acknowledged.extend(acks.try_iter().filter_map(|l| {
        let f: Vec<&str> = l.split(' ').collect();
        (f[0] == "emitted").then(|| (f[1].to_string(), f[2].to_string()))
    }));
    let failing_acked = acknowledged.iter().filter(|(_, s)| s.starts_with("fail-")).count();
    let (left, _) = pending(&open(&data)).await;
    assert!(left as usize >= failing_acked && failing_acked >= 200, "{left} pending, {failing_acked} of failing calls");

    rx.control(json!({"fail_session": null, "delay_ms": 0}));
    let mut child = run(0);
    let st = wait_child(&mut child, LIMIT);
    assert_eq!(st, Some(0), "the restarted emitter drained the outbox");
    let got = rx.entries();
    let arrived = delivered_ids(&got);
    let want: HashSet<String> = acknowledged.iter().map(|(id, _)| id.clone()).collect();
    let missing: Vec<&String> = want.difference(&arrived).collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged events never arrived: {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    for (session, order) in order_by_session(&got) {
        assert_eq!(order, in_order(order.len()), "order of {session}");
    }
    let (dup_ids, extra) = duplicates(&got);
    eprintln!(
        "SIGKILL: {} acknowledged, {left} pending at the kill, all arrived; duplicates: {dup_ids} events delivered {extra} extra times",
        want.len()
    );
    assert!(rejected(&got).is_empty());
}

fn wait_child(child: &mut std::process::Child, limit: Duration) -> Option<i32> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return st.code();
        }
        if Instant::now() >= deadline {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::SIGKILL);
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_receiver_rejects_forged_and_stale_requests() {
    // The checks above mean something only if the receiver really verifies.
    let dir = tempfile::tempdir().unwrap();
    let (_key, public) = keygen(dir.path());
    let rx = Receiver::start(dir.path(), "hook", &public, &[]);
    let other = ed25519_dalek::SigningKey::from_bytes(&[9u8; 32]);
    let body = envelope::body(&envelope::data_json(&event(Some("z"), 0)), 1, rx.url().as_str());
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::new();
    let send = |sig: envelope::Signature, body: String| {
        client
            .post(rx.url())
            .header(envelope::SIGNATURE_HEADER, sig.signature)
            .header(envelope::TIMESTAMP_HEADER, sig.timestamp.to_string())
            .body(body)
            .send()
    };
    let forged = envelope::sign(&other, std::time::SystemTime::now(), body.as_bytes());
    assert_eq!(send(forged, body.clone()).await.unwrap().status(), 401);
    let real_key = key::load_signing_key(&dir.path().join("webhook.key")).unwrap();
    let stale = envelope::sign(&real_key, std::time::SystemTime::now() - Duration::from_secs(301), body.as_bytes());
    assert_eq!(send(stale, body.clone()).await.unwrap().status(), 400);
    let good = envelope::sign(&real_key, std::time::SystemTime::now(), body.as_bytes());
    let tampered = body.replace("\"n\":0", "\"n\":1");
    assert_eq!(send(good.clone(), tampered).await.unwrap().status(), 401);
    assert_eq!(send(good, body).await.unwrap().status(), 200);
    let reasons: Vec<String> =
        rejected(&rx.entries()).iter().map(|e| e["rejected"].as_str().unwrap().to_string()).collect();
    assert_eq!(reasons, ["bad signature", "stale timestamp", "bad signature"]);
}
