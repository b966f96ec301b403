//! Call events as the rest of sipbridge sees them: one struct per Telnyx webhook
//! event (`call.initiated`, `call.answered`, `call.hangup`, ...), created where the
//! thing happened and handed to the [`EventBus`].
//!
//! The payload is already in Telnyx's field names (PROTOCOLS.md §2); the envelope
//! (`data.record_type`, `data.id`, `data.occurred_at`, `meta`) is added by
//! `webhook::envelope` when the event is delivered. [`CallEvent::record`] carries
//! what the call record needs beyond the payload (route and agent names); it is
//! never delivered.
//!
//! **Emitted = committed.** With a store attached, [`EventBus::emit`] queues the
//! event to the store's single writer, which in one transaction inserts its
//! `webhook_outbox` row (when webhooks are on) and updates the `calls` row it
//! concerns (`store::call_events`). Only after that transaction is committed
//! (WAL fsync'd) do live subscribers see the event, in emission order. Code that
//! must not go on before the commit awaits [`EventBus::emit_durable`].

use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use serde_json::{Map, Value};
use tokio::sync::broadcast;

use crate::store::Committed;

/// One event, ready to be persisted and delivered.
#[derive(Debug, Clone, PartialEq)]
pub struct CallEvent {
    /// `data.id`: unique per event (UUID v4); receivers drop duplicates by it.
    pub id: uuid::Uuid,
    /// `data.event_type`, e.g. `"call.hangup"`.
    pub event_type: String,
    /// `data.occurred_at` (rendered as RFC 3339 UTC with microseconds).
    pub occurred_at: SystemTime,
    /// The call session this event belongs to: events of one session are delivered
    /// in the order they occurred. `None` for events outside calls.
    pub call_session_id: Option<String>,
    /// `data.payload`, Telnyx field names (`call_control_id`, `hangup_cause`, ...).
    pub payload: Map<String, Value>,
    /// Facts for the call record (`calls` table) that the payload does not carry.
    /// Never part of the webhook.
    pub record: RecordExtras,
    /// The call's own webhook URL (Telnyx `webhook_url` on dial/transfer): where
    /// this event goes instead of `[webhooks] url`. `None` for `[webhooks] url`.
    pub webhook_url: Option<String>,
}

/// Call-record facts Telnyx payloads have no field for: stored in the leg's
/// `calls` row when the event is committed, never delivered in a webhook. Set
/// them where they are known (`None` leaves the column as it is), e.g.
/// `info.initiated("parked").with_route(&route.name)` or, for a route to an
/// agent, `.with_agent(name)` on `call.initiated` or `streaming.started`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecordExtras {
    /// `[[route]]` name that took the call (`calls.route`).
    pub route: Option<String>,
    /// `[[agent]]` name the call is streamed to (`calls.agent`).
    pub agent: Option<String>,
}

impl RecordExtras {
    /// Whether there is nothing to record.
    pub fn is_empty(&self) -> bool {
        self.route.is_none() && self.agent.is_none()
    }
}

impl CallEvent {
    /// A new event of `event_type` occurring now.
    pub fn new(event_type: &str, call_session_id: Option<String>, payload: Map<String, Value>) -> Self {
        Self {
            id: uuid::Uuid::new_v4(),
            event_type: event_type.to_string(),
            occurred_at: SystemTime::now(),
            call_session_id,
            payload,
            record: RecordExtras::default(),
            webhook_url: None,
        }
    }

    /// This event, recording `route` as the leg's `[[route]]` name (`calls.route`).
    pub fn with_route(mut self, route: &str) -> Self {
        self.record.route = Some(route.to_string());
        self
    }

    /// This event, recording `agent` as the leg's `[[agent]]` name (`calls.agent`).
    pub fn with_agent(mut self, agent: &str) -> Self {
        self.record.agent = Some(agent.to_string());
        self
    }
}

/// Where events go: first the store (when attached: the webhook outbox row and
/// the call record, committed together by the store's single writer in emission
/// order), then — once committed — every live subscriber (API event socket,
/// tests), in emission order. Cloning is cheap.
#[derive(Clone)]
pub struct EventBus {
    tx: broadcast::Sender<Arc<CallEvent>>,
    outbox: Option<crate::webhook::Outbox>,
}

impl std::fmt::Debug for EventBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventBus").field("outbox", &self.outbox.is_some()).finish()
    }
}

impl Default for EventBus {
    fn default() -> Self {
        Self::new()
    }
}

/// What [`EventBus::emit_durable`] returns: a future that resolves once the event
/// is committed (`Ok`) or could not be (`Err`: disk full, I/O error; logged too).
pub type Emitted = Committed<()>;

impl EventBus {
    /// A bus without a store: events go to live subscribers at once, nothing is
    /// persisted (tests of the SIP side). Subscribers may lag by up to 4096 events
    /// before they lose some (a lagging subscriber is told how many it missed; the
    /// store never lags: it is not a subscriber).
    pub fn new() -> Self {
        Self { tx: broadcast::channel(4096).0, outbox: None }
    }

    /// A bus whose events are committed to the store first: outbox row (when the
    /// outbox is enabled) and call record.
    pub fn with_outbox(outbox: crate::webhook::Outbox) -> Self {
        Self { outbox: Some(outbox), ..Self::new() }
    }

    /// Publishes an event without waiting: it is queued to the store's writer
    /// before this returns (so events emitted one after another keep that order,
    /// also from synchronous code), and broadcast once committed. A failed commit
    /// is logged; the event is then neither delivered nor broadcast.
    pub fn emit(&self, event: CallEvent) {
        drop(self.emit_durable(event));
    }

    /// Like [`EventBus::emit`] (queued in order before this returns), and the
    /// returned future resolves once the event is committed — durable across a
    /// crash or power cut — and broadcast. Await it where the call must not go on
    /// before the event is safe (e.g. at hangup, before the leg's resources go).
    /// Dropping the future does not cancel anything.
    pub fn emit_durable(&self, event: CallEvent) -> Emitted {
        tracing::debug!(event_type = %event.event_type, id = %event.id, "event");
        let event = Arc::new(event);
        let Some(outbox) = &self.outbox else {
            let _ = self.tx.send(event);
            return Committed::ready(Ok(()), Path::new(""));
        };
        let tx = self.tx.clone();
        let published = Arc::clone(&event);
        outbox.submit_then(&event, move |result| match result {
            Ok(()) => {
                let _ = tx.send(published);
            }
            Err(e) => tracing::error!(
                event_id = %published.id, event_type = %published.event_type,
                "event lost: not committed to the store, so neither delivered nor recorded: {e}"
            ),
        })
    }

    /// A new subscriber that sees events committed from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<CallEvent>> {
        self.tx.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Store, StoreHandle};

    fn bus(enabled: bool) -> (tempfile::TempDir, StoreHandle, EventBus) {
        let dir = tempfile::tempdir().unwrap();
        let h = StoreHandle::start(Store::open(dir.path()).unwrap()).unwrap();
        let bus = EventBus::with_outbox(crate::webhook::Outbox::new(h.clone(), enabled));
        (dir, h, bus)
    }

    fn ev(n: u64) -> CallEvent {
        let mut p = Map::new();
        p.insert("n".into(), n.into());
        CallEvent::new("call.test", Some("s".into()), p)
    }

    #[tokio::test]
    async fn subscribers_see_an_event_only_once_its_outbox_row_is_committed() {
        let (dir, _h, bus) = bus(true);
        let mut rx = bus.subscribe();
        let sent: Vec<CallEvent> = (0..50).map(ev).collect();
        for e in &sent {
            bus.emit(e.clone());
        }
        let other = Store::open(dir.path()).unwrap();
        for e in &sent {
            let got = rx.recv().await.unwrap();
            assert_eq!(got.id, e.id, "emission order");
            // Read on another connection as soon as the subscriber has it.
            let row = crate::store::outbox::event(other.conn(), &e.id.to_string()).unwrap();
            assert!(row.is_some(), "event {} broadcast before its commit", e.id);
        }
    }

    #[tokio::test]
    async fn emit_durable_resolves_after_the_commit() {
        let (dir, _h, bus) = bus(true);
        let e = ev(1);
        bus.emit_durable(e.clone()).await.unwrap();
        let other = Store::open(dir.path()).unwrap();
        assert!(crate::store::outbox::event(other.conn(), &e.id.to_string()).unwrap().is_some());
        // The same id twice: the second is refused by the outbox, and not broadcast.
        let mut rx = bus.subscribe();
        assert!(bus.emit_durable(e.clone()).await.is_err());
        let next = ev(2);
        bus.emit_durable(next.clone()).await.unwrap();
        assert_eq!(rx.recv().await.unwrap().id, next.id, "the refused event was not broadcast");
    }

    #[tokio::test]
    async fn without_webhooks_events_still_reach_subscribers_after_the_store() {
        let (_dir, h, bus) = bus(false);
        let mut rx = bus.subscribe();
        let e = ev(7);
        bus.emit_durable(e.clone()).await.unwrap();
        assert_eq!(rx.recv().await.unwrap().id, e.id);
        let n: i64 = h.run(|c| c.query_row("SELECT count(*) FROM webhook_outbox", [], |r| r.get(0))).await.unwrap();
        assert_eq!(n, 0, "no outbox rows with webhooks off");
    }

    #[test]
    fn a_bus_without_store_broadcasts_at_once_outside_a_runtime() {
        let bus = EventBus::new();
        let mut rx = bus.subscribe();
        let e = ev(3);
        bus.emit(e.clone());
        assert_eq!(rx.try_recv().unwrap().id, e.id);
        assert_eq!(
            e.clone().with_route("sales").with_agent("bot").record,
            RecordExtras { route: Some("sales".into()), agent: Some("bot".into()) }
        );
    }
}
