//! The call event bus: every [`CallEvent`] a call emits (one per Telnyx webhook
//! event, created where the thing happened) goes through the [`EventBus`]. The
//! event type itself is plain data defined with the store that persists it
//! (`store::event`), re-exported here.
//!
//! **Emitted = committed.** With a store attached, [`EventBus::emit`] queues the
//! event to the store's single writer, which in one transaction inserts its
//! `webhook_outbox` row (when webhooks are on) and updates the `calls` row it
//! concerns (`store::call_events`). Only after that transaction is committed
//! (WAL fsync'd) do live subscribers see the event, in emission order. Code that
//! must not go on before the commit awaits [`EventBus::emit_durable`].

use std::path::Path;
use std::sync::Arc;

use tokio::sync::broadcast;

use crate::store::Committed;
pub use crate::store::event::{CallEvent, RecordExtras};

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

/// Recordings repaired at startup are announced on the bus (`record::recovered`).
impl crate::store::event::EventSink for EventBus {
    fn emit_event(&self, event: CallEvent) {
        self.emit(event);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Store, StoreHandle};
    use serde_json::Map;

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
            RecordExtras { route: Some("sales".into()), agent: Some("bot".into()), quality_samples: None }
        );
    }
}
