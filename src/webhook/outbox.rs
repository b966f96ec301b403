//! The durable event sink calls emit into, and the startup of webhook delivery.
//!
//! [`Outbox::emit`] renders the event's envelope `data` and commits it to the
//! `webhook_outbox` table (WAL fsync'd, group-committed with concurrent emits)
//! before it returns: once `emit` is `Ok`, the event survives a crash or power cut
//! and will be delivered. It then wakes the delivery worker. In the same store
//! job (so in the same transaction) the event's change to its leg's call record
//! is written (`store::call_events`): a record and its events commit together.
//!
//! With `[webhooks].url` unset the outbox is disabled: `emit` stores no outbox
//! row, but still writes the call record (the `calls` table remains the durable
//! trace).

use std::sync::Arc;
use std::time::SystemTime;

use serde_json::{Map, Value};
use tokio::sync::Notify;

use super::delivery::{DeliveryError, Targets, Worker};
use super::envelope;
use super::key::{self, KeyError};
use super::retry::DeliveryPolicy;
use crate::config::Webhooks;
use crate::store::call_events::RecordUpdate;
use crate::store::calls::{self, CallRecord};
use crate::store::event::CallEvent;
use crate::store::outbox::{self, NewEvent, OutboxStatus};
use crate::store::{Committed, StoreError, StoreHandle, timestamp};

/// Errors starting webhook delivery; each stops the daemon's startup.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// `[webhooks].url` is set but the signing key cannot be used.
    #[error("webhooks.signing_key: {0} (create it with: sipbridge keygen --out <path>)")]
    Key(#[from] KeyError),
    /// The HTTP client could not be set up.
    #[error(transparent)]
    Delivery(#[from] DeliveryError),
}

/// Where calls hand their events. Cheap to clone (one per call).
#[derive(Clone)]
pub struct Outbox {
    store: StoreHandle,
    wake: Arc<Notify>,
    enabled: bool,
}

impl Outbox {
    /// An outbox over `store`; `enabled = false` makes [`Outbox::emit`] a no-op.
    /// Deliveries need a [`Worker`] started with [`Outbox::waker`].
    pub fn new(store: StoreHandle, enabled: bool) -> Self {
        Self { store, wake: Arc::new(Notify::new()), enabled }
    }

    /// Whether events are stored and delivered (`[webhooks].url` is set).
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// The notifier the delivery worker waits on.
    pub fn waker(&self) -> Arc<Notify> {
        self.wake.clone()
    }

    /// The store this outbox writes to.
    pub fn store(&self) -> &StoreHandle {
        &self.store
    }

    /// Commits `event` to the outbox durably, then wakes the worker. Events of one
    /// `call_session_id` are delivered in the order they were emitted: emit them
    /// one after another from the call's task.
    pub async fn emit(&self, event: &CallEvent) -> Result<(), StoreError> {
        self.submit(event).await
    }

    /// [`Outbox::emit`] for synchronous code (a call's state machine): the event is
    /// queued for the store before this returns, so events submitted one after
    /// another keep their order; it is durable once the returned [`Committed`]
    /// resolves `Ok`. Dropping that future does not cancel the write.
    pub fn submit(&self, event: &CallEvent) -> Committed<()> {
        self.submit_then(event, |_| {})
    }

    /// [`Outbox::submit`], and `after` runs on the store's writer thread once the
    /// event's transaction is committed (`Ok`) or failed, before the returned
    /// future resolves; `after`s run in submission order (the event bus broadcasts
    /// from there). Keep `after` short.
    ///
    /// One store job: the outbox row (when enabled; an id already stored fails the
    /// job), then the leg's call-record change. A record change that does not apply
    /// (unknown leg, already ended) is logged at debug level and does not fail the
    /// event: the webhook matters more than the local record.
    pub fn submit_then(
        &self,
        event: &CallEvent,
        after: impl FnOnce(&Result<(), StoreError>) + Send + 'static,
    ) -> Committed<()> {
        let row = self.enabled.then(|| new_event(event));
        let record = RecordUpdate::of(event);
        let wake = self.wake.clone();
        let (event_id, event_type) = (event.id, event.event_type.clone());
        self.store.submit_then(
            move |c| {
                let now = SystemTime::now();
                if let Some(row) = &row {
                    outbox::insert(c, row, now)?;
                    // The worker's next look at the outbox is a store job too, so it
                    // runs after this batch has committed: waking it now is safe.
                    wake.notify_one();
                }
                if let Some(record) = &record {
                    let leg = &record.call_leg_id;
                    match record.apply(c, now) {
                        Ok(true) => {}
                        Ok(false) => {
                            tracing::debug!(%event_id, %event_type, %leg, "call record: nothing to update")
                        }
                        Err(e) => tracing::warn!(%event_id, %event_type, %leg, "call record not updated: {e}"),
                    }
                }
                Ok(())
            },
            after,
        )
    }

    /// Counts and oldest events (as `sipbridge webhooks status` prints them).
    pub async fn status(&self) -> Result<OutboxStatus, StoreError> {
        self.store.run(outbox::status).await
    }

    /// Number of pending (not yet delivered, not dead) events.
    pub async fn pending(&self) -> Result<u64, StoreError> {
        self.store.run(outbox::pending_count).await
    }

    /// Requeues every dead-lettered event; returns how many.
    pub async fn retry_dead(&self) -> Result<usize, StoreError> {
        let n = self.store.run(|c| outbox::requeue_dead(c, SystemTime::now())).await?;
        self.wake.notify_one();
        Ok(n)
    }

    /// The startup pass after a crash: ends every call record left open (cause
    /// `unspecified`, source `unknown`, end time `now`) and, when webhooks are
    /// enabled, emits a `call.hangup` for each in the same transaction, so the
    /// backend learns that those calls ended. Run it before any call is taken.
    pub async fn close_interrupted_calls(&self, now: SystemTime) -> Result<Vec<CallRecord>, StoreError> {
        let emit = self.enabled;
        let closed = self
            .store
            .run(move |c| {
                let closed = calls::close_interrupted(c, now)?;
                if emit {
                    for r in &closed {
                        outbox::insert(c, &new_event(&interrupted_hangup(r, now)), now)?;
                    }
                }
                Ok(closed)
            })
            .await?;
        if !closed.is_empty() {
            tracing::warn!(
                calls = closed.len(),
                "closed call records left open by an earlier run (hangup_cause unspecified)"
            );
            self.wake.notify_one();
        }
        Ok(closed)
    }
}

fn new_event(event: &CallEvent) -> NewEvent {
    NewEvent {
        event_id: event.id.hyphenated().to_string(),
        event_type: event.event_type.clone(),
        call_session_id: event.call_session_id.clone(),
        occurred_at: event.occurred_at,
        data_json: envelope::data_json(event),
        webhook_url: event.webhook_url.clone(),
    }
}

/// The `call.hangup` of a leg the daemon lost track of (PROTOCOLS.md §2 fields).
pub fn interrupted_hangup(r: &CallRecord, now: SystemTime) -> CallEvent {
    let s = &r.start;
    let mut p = Map::new();
    p.insert("call_control_id".into(), s.call_control_id.clone().into());
    p.insert("call_leg_id".into(), s.call_leg_id.clone().into());
    p.insert("call_session_id".into(), s.call_session_id.clone().into());
    p.insert("connection_id".into(), s.trunk.clone().map_or(Value::Null, Value::from));
    p.insert("from".into(), s.from.clone().into());
    p.insert("to".into(), s.to.clone().into());
    p.insert("direction".into(), s.direction.as_str().into());
    p.insert("state".into(), "hangup".into());
    p.insert("start_time".into(), timestamp(s.start_time).into());
    // Occurred at its end, as every call.hangup (`CallInfo::hangup`).
    let end_time = r.end.as_ref().map_or(now, |e| e.end_time);
    p.insert("end_time".into(), timestamp(end_time).into());
    p.insert("hangup_cause".into(), "unspecified".into());
    p.insert("hangup_source".into(), "unknown".into());
    p.insert("sip_hangup_cause".into(), "unspecified".into());
    CallEvent {
        id: uuid::Uuid::new_v4(),
        event_type: "call.hangup".into(),
        occurred_at: end_time,
        call_session_id: Some(s.call_session_id.clone()),
        payload: p,
        record: Default::default(),
        webhook_url: None,
    }
}

/// Starts webhooks as the daemon does: an [`Outbox`] over `store`, and — when
/// `[webhooks].url` is set — the signing key loaded from `signing_key` (an
/// unreadable key is an error) and a delivery [`Worker`] on the current runtime.
pub fn start(
    store: StoreHandle,
    config: &Webhooks,
    policy: DeliveryPolicy,
) -> Result<(Outbox, Option<Worker>), StartError> {
    let Some(url) = config.url.clone() else {
        tracing::info!("webhooks: no [webhooks].url, events are not sent");
        return Ok((Outbox::new(store, false), None));
    };
    let key = key::load_signing_key(&config.signing_key)?;
    tracing::info!(public_key = %key::public_key_base64(&key), "webhooks: signing with Ed25519");
    let outbox = Outbox::new(store.clone(), true);
    let targets = Targets { url, failover_url: config.failover_url.clone() };
    let worker = Worker::start(store, outbox.waker(), targets, key, policy)?;
    Ok((outbox, Some(worker)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;
    use crate::store::calls::{CallStart, Direction};
    use std::time::{Duration, UNIX_EPOCH};

    fn handle() -> (tempfile::TempDir, StoreHandle) {
        let dir = tempfile::tempdir().unwrap();
        let h = StoreHandle::start(Store::open(dir.path()).unwrap()).unwrap();
        (dir, h)
    }

    fn ev(session: &str) -> CallEvent {
        CallEvent::new("call.initiated", Some(session.into()), Map::new())
    }

    #[tokio::test]
    async fn emit_is_committed_when_it_returns() {
        let (dir, h) = handle();
        let out = Outbox::new(h.clone(), true);
        let e = ev("s1");
        out.emit(&e).await.unwrap();
        // A second connection (another process would do the same) sees it.
        let other = Store::open(dir.path()).unwrap();
        let row = outbox::event(other.conn(), &e.id.to_string()).unwrap().expect("committed");
        assert_eq!((row.event_type.as_str(), row.attempts), ("call.initiated", 0));
        let body: String =
            other.conn().query_row("SELECT body FROM webhook_outbox WHERE seq = ?1", [row.seq], |r| r.get(0)).unwrap();
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["id"], e.id.to_string());
        assert_eq!(v["record_type"], "event");
        assert!(out.emit(&e).await.is_err(), "an event id is emitted once");
    }

    #[tokio::test]
    async fn submit_keeps_the_order_of_synchronous_callers() {
        let (_dir, h) = handle();
        let out = Outbox::new(h.clone(), true);
        let events: Vec<CallEvent> = (0..20).map(|_| ev("sync")).collect();
        let committed: Vec<Committed<()>> = events.iter().map(|e| out.submit(e)).collect();
        drop(committed); // not awaited: the writes still happen
        // This job is queued after the 20 inserts, so it sees them all.
        let ids: Vec<String> = h
            .run(|c| {
                c.prepare("SELECT event_id FROM webhook_outbox ORDER BY seq")?.query_map([], |r| r.get(0))?.collect()
            })
            .await
            .unwrap();
        let want: Vec<String> = events.iter().map(|e| e.id.to_string()).collect();
        assert_eq!(ids, want);
    }

    #[tokio::test]
    async fn a_disabled_outbox_stores_nothing() {
        let (_dir, h) = handle();
        let out = Outbox::new(h, false);
        out.emit(&ev("s1")).await.unwrap();
        assert_eq!(out.status().await.unwrap().pending, 0);
    }

    #[tokio::test]
    async fn interrupted_calls_are_closed_and_reported_after_their_pending_events() {
        let (_dir, h) = handle();
        let out = Outbox::new(h.clone(), true);
        let start = CallStart {
            call_leg_id: "leg-1".into(),
            call_control_id: "v3:leg-1".into(),
            call_session_id: "sess-1".into(),
            trunk: Some("telnyx".into()),
            direction: Direction::Incoming,
            from: "+13125550199".into(),
            to: "+13125550100".into(),
            start_time: UNIX_EPOCH + Duration::from_secs(1_800_000_000),
            route: None,
            agent: None,
            custom_headers: None,
        };
        h.call_started(start).await.unwrap();
        let initiated = ev("sess-1");
        out.emit(&initiated).await.unwrap();
        let now = UNIX_EPOCH + Duration::from_secs(1_800_000_100);
        let closed = out.close_interrupted_calls(now).await.unwrap();
        assert_eq!(closed.len(), 1);
        assert_eq!(h.call("leg-1").await.unwrap().unwrap().end.unwrap().hangup_cause, "unspecified");

        let due = h.run(move |c| outbox::due(c, now, &[], 10)).await.unwrap().events;
        assert_eq!(due.len(), 1, "the hangup waits behind the session's initiated event");
        assert_eq!(due[0].event_id, initiated.id.to_string());
        let all: Vec<String> = h
            .run(|c| c.prepare("SELECT body FROM webhook_outbox ORDER BY seq")?.query_map([], |r| r.get(0))?.collect())
            .await
            .unwrap();
        let hangup: Value = serde_json::from_str(&all[1]).unwrap();
        assert_eq!(hangup["event_type"], "call.hangup");
        let p = &hangup["payload"];
        assert_eq!(p["hangup_cause"], "unspecified");
        assert_eq!(p["hangup_source"], "unknown");
        assert_eq!(p["call_leg_id"], "leg-1");
        assert_eq!(p["connection_id"], "telnyx");
        assert_eq!(p["start_time"], "2027-01-15T08:00:00.000000Z");
        assert_eq!(p["end_time"], "2027-01-15T08:01:40.000000Z");
        assert_eq!(hangup["occurred_at"], p["end_time"], "a call.hangup occurred at its end_time");
        assert!(out.close_interrupted_calls(now).await.unwrap().is_empty());
    }
}
