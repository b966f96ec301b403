//! The delivery worker: one tokio task that takes due events from the outbox,
//! POSTs them signed (`envelope`), and records each outcome (`store::outbox`).
//!
//! Ordering: only the head of each call session's pending events is eligible, and
//! it stays pending while its POST is in flight, so one call's events reach the
//! backend in the order they occurred (a later event waits while an earlier one is
//! retried). Different sessions are independent: up to `max_in_flight` POSTs run
//! at once, and a session stuck in retries does not hold up the others.
//!
//! Delivery is at-least-once: an outcome is recorded after the POST returns (by
//! the worker, batched with its next look at the outbox: one commit per turn, not
//! per POST), so a crash in between repeats the POST at the next start (receivers
//! drop duplicates by `data.id`). The worker wakes on a new event (`Notify` from the outbox), on a
//! finished POST, when the next retry or dead-lettering is due, and every
//! `idle_poll` (to notice `sipbridge webhooks retry-dead` run from a shell).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use ed25519_dalek::SigningKey;
use rand_core::RngCore;
use tokio::sync::{Notify, watch};
use tokio::task::{JoinHandle, JoinSet};

use super::envelope::{self, SIGNATURE_HEADER, TIMESTAMP_HEADER};
use super::retry::{DeliveryPolicy, Next, Target, jitter_from_bits};
use crate::store::StoreHandle;
use crate::store::outbox::{self, Outcome, PendingEvent};

/// Where events go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Targets {
    /// `[webhooks].url`.
    pub url: url::Url,
    /// `[webhooks].failover_url`.
    pub failover_url: Option<url::Url>,
}

impl Targets {
    fn get(&self, t: Target) -> &url::Url {
        match (t, &self.failover_url) {
            (Target::Failover, Some(u)) => u,
            _ => &self.url,
        }
    }
}

/// Errors starting the worker.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    /// The HTTP client could not be built (e.g. no CA certificates for https).
    #[error(
        "webhooks: cannot set up HTTPS: {0} (is the ca-certificates package installed? /etc/ssl/certs must hold the CA roots)"
    )]
    Client(String),
}

/// URL without user info, query or fragment: what logs may show (webhook URLs
/// often carry a token in the query).
pub fn loggable(url: &url::Url) -> String {
    let mut u = url.clone();
    let _ = u.set_username("");
    let _ = u.set_password(None);
    u.set_query(None);
    u.set_fragment(None);
    u.to_string()
}

fn http_client(policy: &DeliveryPolicy, targets: &Targets) -> Result<reqwest::Client, DeliveryError> {
    // ring only (no aws-lc); a provider installed earlier by the daemon wins.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let builder = || {
        reqwest::Client::builder()
            .timeout(policy.timeout)
            .connect_timeout(policy.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("sipbridge/", env!("CARGO_PKG_VERSION")))
            .pool_idle_timeout(Duration::from_secs(60))
    };
    match builder().build() {
        Ok(c) => Ok(c),
        Err(e) => {
            let https = std::iter::once(&targets.url).chain(&targets.failover_url).any(|u| u.scheme() == "https");
            if https {
                return Err(DeliveryError::Client(error_chain(&e)));
            }
            // Plain-HTTP targets need no CA roots.
            builder().tls_certs_only(std::iter::empty()).build().map_err(|e| DeliveryError::Client(error_chain(&e)))
        }
    }
}

fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let part = c.to_string();
        if !s.contains(&part) {
            s.push_str(": ");
            s.push_str(&part);
        }
        cur = c.source();
    }
    s
}

/// Everything an attempt needs, shared by the worker and its POST tasks.
struct Ctx {
    store: StoreHandle,
    client: reqwest::Client,
    key: SigningKey,
    targets: Targets,
    policy: DeliveryPolicy,
}

/// How the worker should stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Run,
    /// Deliver what is due now, then stop.
    Drain,
}

/// The running worker. Dropping it without [`Worker::shutdown`] aborts it
/// (pending events stay in the outbox for the next start).
pub struct Worker {
    mode: watch::Sender<Mode>,
    task: Option<JoinHandle<()>>,
}

impl Worker {
    /// Starts the worker on the current tokio runtime. `wake` is the outbox's
    /// notifier (new events).
    pub fn start(
        store: StoreHandle,
        wake: Arc<Notify>,
        targets: Targets,
        key: SigningKey,
        policy: DeliveryPolicy,
    ) -> Result<Self, DeliveryError> {
        let client = http_client(&policy, &targets)?;
        let ctx = Arc::new(Ctx { store, client, key, targets, policy });
        let (mode, mode_rx) = watch::channel(Mode::Run);
        let task = tokio::spawn(run(ctx, wake, mode_rx));
        Ok(Self { mode, task: Some(task) })
    }

    /// Shutdown flush: keeps delivering until nothing is due and nothing is in
    /// flight, for at most `grace`; then stops. Events still pending (in backoff,
    /// or cut off by `grace`) stay in the outbox and go out at the next start.
    pub async fn shutdown(mut self, grace: Duration) {
        let _ = self.mode.send(Mode::Drain);
        if let Some(mut task) = self.task.take() {
            if tokio::time::timeout(grace, &mut task).await.is_err() {
                tracing::info!(
                    grace_s = grace.as_secs(),
                    "webhooks: shutdown grace over, undelivered events stay queued"
                );
                task.abort();
                let _ = task.await;
            }
        }
    }

    /// Stops at once, abandoning POSTs in flight (their events stay pending).
    pub async fn abort(mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Clamp for sleeps: never spin, never oversleep a wake-up we computed.
const MIN_SLEEP: Duration = Duration::from_millis(5);

/// A finished POST whose outcome is not yet recorded; its event stays "in flight"
/// (not eligible) until the record is committed.
struct Finished {
    seq: i64,
    attempt: u32,
    outcome: Outcome,
    at: SystemTime,
}

async fn run(ctx: Arc<Ctx>, wake: Arc<Notify>, mut mode: watch::Receiver<Mode>) {
    let mut tasks: JoinSet<Finished> = JoinSet::new();
    let mut in_flight: HashSet<i64> = HashSet::new();
    let mut finished: Vec<Finished> = Vec::new();
    let mut last_prune: Option<SystemTime> = None;
    let p = &ctx.policy;
    tracing::info!(url = %loggable(&ctx.targets.url), failover = ?ctx.targets.failover_url.as_ref().map(loggable), "webhooks: delivery started");
    loop {
        while let Some(done) = tasks.try_join_next() {
            finished.extend(done.ok());
        }
        // One transaction per turn: record every finished POST, dead-letter, prune,
        // pick the next due events. Outcomes of concurrent POSTs share its fsync.
        let now = SystemTime::now();
        let flight: Vec<i64> = in_flight.iter().copied().filter(|s| !finished.iter().any(|f| f.seq == *s)).collect();
        let free = p.max_in_flight.saturating_sub(flight.len());
        let prune =
            last_prune.is_none_or(|t| now.duration_since(t).unwrap_or(Duration::MAX) >= Duration::from_secs(3600));
        let (max_age, retention) = (p.max_age, p.delivered_retention);
        let records: Vec<(i64, u32, Outcome, SystemTime)> =
            finished.iter().map(|f| (f.seq, f.attempt, f.outcome.clone(), f.at)).collect();
        let scan = ctx
            .store
            .run(move |c| {
                for (seq, attempt, outcome, at) in &records {
                    outbox::record(c, *seq, *attempt, outcome, *at)?;
                }
                let cutoff = now.checked_sub(max_age).unwrap_or(std::time::UNIX_EPOCH);
                let dead = outbox::dead_letter_expired(c, cutoff, now, &flight)?;
                let pruned = match prune {
                    true => outbox::prune_delivered(c, now.checked_sub(retention).unwrap_or(std::time::UNIX_EPOCH))?,
                    false => 0,
                };
                let due = outbox::due(c, now, &flight, free)?;
                let oldest = outbox::oldest_queued(c, &flight)?;
                Ok((dead, pruned, due, oldest))
            })
            .await;
        let (dead, pruned, outbox::Due { events: due, next_due }, oldest_queued) = match scan {
            Ok(s) => s,
            Err(e) => {
                // Nothing of this turn happened; finished outcomes are kept for the next.
                tracing::error!("webhooks: {e}; retrying in 1 s");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = mode.changed() => {}
                }
                continue;
            }
        };
        for f in finished.drain(..) {
            in_flight.remove(&f.seq);
        }
        if prune {
            last_prune = Some(now);
        }
        if dead > 0 {
            tracing::warn!(
                dead,
                max_age_s = max_age.as_secs(),
                "webhooks: events dead-lettered after max_age (kept; requeue with: sipbridge webhooks retry-dead)"
            );
        }
        if pruned > 0 {
            tracing::debug!(pruned, "webhooks: old delivered events deleted");
        }
        let dispatched = !due.is_empty();
        for ev in due {
            in_flight.insert(ev.seq);
            let ctx = ctx.clone();
            tasks.spawn(async move { attempt(&ctx, ev).await });
        }
        if *mode.borrow() == Mode::Drain && !dispatched && tasks.is_empty() {
            return;
        }

        // Sleep until the earliest reason to look again.
        let mut until = now + p.idle_poll;
        if in_flight.len() < p.max_in_flight {
            if let Some(t) = next_due {
                until = until.min(t);
            }
        }
        if let Some(q) = oldest_queued {
            until = until.min(q + max_age);
        }
        let nap = until.duration_since(SystemTime::now()).unwrap_or(Duration::ZERO).max(MIN_SLEEP);
        tokio::select! {
            Some(done) = tasks.join_next(), if !tasks.is_empty() => finished.extend(done.ok()),
            _ = wake.notified() => {}
            _ = tokio::time::sleep(nap) => {}
            _ = mode.changed() => {}
        }
    }
}

/// One POST of one event; returns its outcome for the worker to record.
async fn attempt(ctx: &Ctx, ev: PendingEvent) -> Finished {
    let p = &ctx.policy;
    // A call's own webhook_url replaces `[webhooks] url` (failover stays the
    // configured failover_url, when there is one).
    let own = ev.webhook_url.as_deref().and_then(|u| url::Url::parse(u).ok());
    let url = match (p.target(ev.failures, ctx.targets.failover_url.is_some()), &own) {
        (Target::Primary, Some(own)) => own,
        (t, _) => ctx.targets.get(t),
    };
    let attempt = ev.attempts.saturating_add(1);
    let body = envelope::body(&ev.data_json, attempt, url.as_str());
    let sig = envelope::sign(&ctx.key, SystemTime::now(), body.as_bytes());
    let result = post(&ctx.client, url, body, &sig, p.timeout).await;
    let now = SystemTime::now();
    let target = url.to_string();
    let outcome = match result {
        Ok(()) => {
            tracing::debug!(event_id = %ev.event_id, event_type = %ev.event_type, attempt, url = %loggable(url), "webhook delivered");
            Outcome::Delivered { target }
        }
        Err(error) => {
            let failures = ev.failures.saturating_add(1);
            let jitter = jitter_from_bits(rand_core::OsRng.next_u64());
            match p.after_failure(failures, ev.queued_at, now, jitter) {
                Next::RetryAt(next_attempt_at) => {
                    let in_s = next_attempt_at.duration_since(now).unwrap_or_default().as_secs_f64();
                    if ev.failures == 0 {
                        tracing::warn!(event_id = %ev.event_id, event_type = %ev.event_type, attempt, url = %loggable(url), retry_in_s = in_s, "webhook failed: {error}");
                    } else {
                        tracing::debug!(event_id = %ev.event_id, attempt, retry_in_s = in_s, "webhook failed again: {error}");
                    }
                    Outcome::Retry { target, error, next_attempt_at }
                }
                Next::Dead => {
                    tracing::warn!(event_id = %ev.event_id, event_type = %ev.event_type, attempt, "webhook dead-lettered after max_age: {error}");
                    Outcome::Dead { target, error }
                }
            }
        }
    };
    Finished { seq: ev.seq, attempt, outcome, at: now }
}

/// Longest response-body excerpt kept in `last_error`.
const ERROR_BODY_EXCERPT: usize = 200;

async fn post(
    client: &reqwest::Client,
    url: &url::Url,
    body: String,
    sig: &envelope::Signature,
    timeout: Duration,
) -> Result<(), String> {
    let sent = client
        .post(url.clone())
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header(SIGNATURE_HEADER, &sig.signature)
        .header(TIMESTAMP_HEADER, sig.timestamp.to_string())
        .body(body)
        .send()
        .await;
    let mut resp = match sent {
        Ok(r) => r,
        Err(e) if e.is_timeout() => return Err(format!("no answer within {} s", timeout.as_secs_f64())),
        Err(e) => return Err(error_chain(&e.without_url())),
    };
    let status = resp.status();
    if status.is_success() {
        // Read the (usually empty) body so the connection can be reused.
        while let Ok(Some(_)) = resp.chunk().await {}
        return Ok(());
    }
    let mut excerpt = Vec::new();
    while excerpt.len() < ERROR_BODY_EXCERPT {
        match resp.chunk().await {
            Ok(Some(c)) => excerpt.extend_from_slice(&c),
            _ => break,
        }
    }
    excerpt.truncate(ERROR_BODY_EXCERPT);
    let text: String =
        String::from_utf8_lossy(&excerpt).chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    let text = text.trim();
    Err(if text.is_empty() { format!("HTTP {status}") } else { format!("HTTP {status}: {text}") })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logs_never_show_url_secrets() {
        let u = url::Url::parse("https://user:pw@backend.example:8443/hooks/telnyx?token=s3cret#x").unwrap();
        assert_eq!(loggable(&u), "https://backend.example:8443/hooks/telnyx");
    }

    #[test]
    fn failover_target_falls_back_to_url_when_not_configured() {
        let t = Targets { url: url::Url::parse("http://a/").unwrap(), failover_url: None };
        assert_eq!(t.get(Target::Failover).as_str(), "http://a/");
        let t = Targets { failover_url: Some(url::Url::parse("http://b/").unwrap()), ..t };
        assert_eq!(t.get(Target::Failover).as_str(), "http://b/");
        assert_eq!(t.get(Target::Primary).as_str(), "http://a/");
    }
}
