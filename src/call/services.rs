//! What every call needs from the rest of the box, in one handle the
//! composition root (`daemon::run`) builds and hands to the SIP stack, the
//! control API and WebRTC: the config in force, the event bus, the registry of
//! live calls, the media engine (the calls' RTP and the rooms' mixers), the
//! local rooms (and their recordings), and the shutdown's "hang up everything"
//! signal.
//!
//! [`CallControl`] adds the one way to place a call (the SIP stack's dialer):
//! the API and WebRTC act on calls through it, never through SIP internals.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::EventBus;
use super::control::{ActionError, CallRegistry, CallView};
use super::rooms::RoomRecordings;
use crate::agent::stream::StreamSpec;
use crate::config::Config;
use crate::media::engine::Engine;
use crate::room::Rooms;

/// Shared handles of the call layer. Cloning is cheap (every field is a handle).
#[derive(Clone)]
pub struct CallServices {
    /// The config in force (routes are re-read per call, so reloads apply to new calls).
    pub config: watch::Receiver<Arc<Config>>,
    /// Where call events go.
    pub events: EventBus,
    /// Live calls, for call control.
    pub calls: CallRegistry,
    /// The media engine (`[rtp] workers` threads): every call's RTP and every
    /// room's mixer, paced by the workers' timer wheels.
    pub engine: Arc<Engine>,
    /// Local rooms (`room` / `room_per_caller` routes, the conference API, bridges).
    pub rooms: Rooms,
    /// Recordings of whole rooms (conference `record_start`).
    pub room_recordings: RoomRecordings,
    /// Cancelled when remaining calls must hang up (end of shutdown grace).
    pub hangup_all: CancellationToken,
}

impl CallServices {
    /// The services of a new box: the media engine started (`[rtp] workers`),
    /// rooms on it with their `conference.*` event translation running.
    ///
    /// # Errors
    /// The engine's worker threads could not start (epoll/eventfd creation or
    /// thread spawn failed: resource limits).
    pub fn new(
        config: watch::Receiver<Arc<Config>>,
        events: EventBus,
        calls: CallRegistry,
        hangup_all: CancellationToken,
    ) -> std::io::Result<Self> {
        let (workers, max_suppressed) = {
            let c = config.borrow();
            (c.rtp.workers, c.rtp.max_suppressed_streams)
        };
        let engine = Engine::start(workers)?;
        // One agent I/O thread per media worker (started with the first stream).
        crate::agent::hub::set_threads(engine.workers());
        crate::media::suppress::set_limit(if max_suppressed == 0 { 16 * engine.workers() } else { max_suppressed });
        let rooms = super::rooms::start(&events, &calls, Arc::clone(&engine));
        let room_recordings = RoomRecordings::new(config.clone(), rooms.clone(), events.clone());
        Ok(Self { config, events, calls, engine, rooms, room_recordings, hangup_all })
    }
}

/// A dial request (Telnyx "Dial", `POST /v2/calls`; `transfer`'s new leg).
#[derive(Debug, Clone)]
pub struct DialRequest {
    /// Trunk name (Telnyx `connection_id`).
    pub trunk: String,
    /// Caller number.
    pub from: String,
    /// Callee number.
    pub to: String,
    /// Ring limit (`timeout_secs`).
    pub timeout: std::time::Duration,
    /// Echoed in events.
    pub client_state: Option<String>,
    /// Stream the answered call here.
    pub stream: Option<StreamSpec>,
    /// Record from answer.
    pub record: bool,
    /// Telnyx `record_format` (`wav` | `mp3`) of that recording; `None` takes
    /// `[recording] format`.
    pub record_format: Option<crate::config::RecordingFormat>,
    /// Telnyx `webhook_url`: this call's events go there instead of `[webhooks] url`.
    pub webhook_url: Option<String>,
    /// `transfer`: once answered, bridge with this call (its `call_control_id`);
    /// if that call has ended by then, this one is hung up.
    pub bridge_with: Option<String>,
    /// Telnyx `answering_machine_detection` (with its config) from the answer;
    /// `None` = `disabled`.
    pub answering_machine_detection: Option<crate::media::amd::AmdRequest>,
}

/// A route test (`POST /v2/routes/{index}/test`; see `sip::route_test`).
#[derive(Debug, Clone, Default)]
pub struct RouteTestRequest {
    /// The route's position in the config (0-based, as `GET /v2/routes` lists it).
    pub index: usize,
    /// The number to dial; `None`: the route's own number.
    pub to: Option<String>,
    /// The caller number; `None`: `route-test` (a forward: the far trunk's first number).
    pub from: Option<String>,
    /// How long the answered test call lasts; `None`: 5 s (at most 30 s).
    pub talk: Option<std::time::Duration>,
    /// How long the route may ring before the test gives up (CANCEL,
    /// `not_answered`); `None`: 30 s.
    pub ring: Option<std::time::Duration>,
}

/// The future of a route test: its report (JSON, see `sip::route_test::run`).
pub type Testing<'a> = Pin<Box<dyn Future<Output = Result<serde_json::Value, ActionError>> + Send + 'a>>;

/// The future a [`Dialer`] returns.
pub type Dialing<'a> = Pin<Box<dyn Future<Output = Result<CallView, ActionError>> + Send + 'a>>;

/// Places outgoing calls (the SIP stack implements it).
pub trait Dialer: Send + Sync {
    /// Places the call; its view as soon as the INVITE is out.
    ///
    /// # Errors
    /// Unknown trunk or one without `proxy` (422), no capacity or RTP ports
    /// (503), INVITE not sendable (500).
    fn dial(&self, req: DialRequest) -> Dialing<'_>;

    /// Places a short test call to one route and reports what happened.
    ///
    /// # Errors
    /// No such route (404), nothing to dial (422), no capacity (503).
    fn test_route(&self, req: RouteTestRequest) -> Testing<'_>;
}

/// The one call-control handle the API and WebRTC hold: the call services and
/// the dialer.
#[derive(Clone)]
pub struct CallControl {
    /// Config, events, live calls, rooms.
    pub services: CallServices,
    dialer: Arc<dyn Dialer>,
}

impl CallControl {
    /// The handle over `services` placing calls through `dialer`.
    pub fn new(services: CallServices, dialer: Arc<dyn Dialer>) -> Self {
        Self { services, dialer }
    }

    /// Places a call (see [`Dialer::dial`]).
    ///
    /// # Errors
    /// As [`Dialer::dial`].
    pub async fn dial(&self, req: DialRequest) -> Result<CallView, ActionError> {
        self.dialer.dial(req).await
    }

    /// Tests a route (see [`Dialer::test_route`]).
    ///
    /// # Errors
    /// As [`Dialer::test_route`].
    pub async fn test_route(&self, req: RouteTestRequest) -> Result<serde_json::Value, ActionError> {
        self.dialer.test_route(req).await
    }
}
