//! The local HTTP API (axum) on `[api].listen`: Telnyx-shaped call control
//! (`/v2/calls`, PROTOCOLS.md §4), recordings and call records from the store
//! (`/v2/recordings`, `/v2/call_records`), the live event socket (`/v2/events`),
//! and what an operator's monitoring wants (`/healthz`, `/readyz`, `/metrics`).
//!
//! Every route except `/healthz` needs `Authorization: Bearer <[api].token>`
//! (compared in constant time); without a configured token only `/healthz` answers.
//! With `[api] tls_certificate` and `tls_private_key` the same router is served
//! over HTTPS ([`tls`]).

pub mod calls;
pub mod conferences;
pub mod error;
pub mod events;
pub mod openapi;
pub mod ops;
pub mod query;
pub mod recordings;
pub mod records;
pub mod tls;
pub mod webrtc;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::serve::ListenerExt;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::call::EventBus;
use crate::call::control::CallRegistry;
use crate::config::Config;
use crate::sip::register::RegStates;
use error::ApiError;

/// What the handlers share.
#[derive(Clone)]
pub struct ApiState {
    /// Live calls.
    pub calls: CallRegistry,
    /// The SIP side (dialling).
    pub sip: Arc<crate::sip::SipContext>,
    /// The config in force (token, recording dir...).
    pub config: watch::Receiver<Arc<Config>>,
    /// Call events (the event socket subscribes).
    pub events: EventBus,
    /// Registration state of registering trunks.
    pub registrations: watch::Receiver<RegStates>,
    /// Counters fed from the events.
    pub metrics: Arc<ops::Counters>,
    /// The store: writes go through its writer thread; listings read the same
    /// file ([`crate::store::StoreHandle::path`]) on read-only connections.
    pub store: crate::store::StoreHandle,
    /// Browser (WebRTC) participants and their join tokens.
    pub webrtc: crate::webrtc::WebRtcHub,
}

/// What a request's credentials reach: everything (the API token), or one room
/// (a join token: its WebRTC join/leave, participants and events).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    /// `Authorization: Bearer <[api] token>`.
    Full,
    /// A join token for this room name.
    Room(String),
}

/// Routes a join token may reach (matched route paths).
const JOIN_TOKEN_ROUTES: &[&str] = &[
    "/v2/conferences/{conference_id}/webrtc",
    "/v2/conferences/{conference_id}/participants",
    "/v2/webrtc/{session_id}",
    "/v2/events",
];

/// The router with every route (used by [`serve`] and by tests).
pub fn router(state: ApiState) -> Router {
    let v2 = Router::new()
        .route("/v2/calls", get(calls::list).post(calls::dial))
        .route("/v2/calls/{call_control_id}", get(calls::get))
        .route("/v2/calls/{call_control_id}/actions/{action}", post(calls::action))
        .route("/v2/calls/{call_control_id}/listen", get(events::listen))
        .route("/v2/events", get(events::socket))
        .route("/v2/conferences", get(conferences::list).post(conferences::create))
        .route("/v2/conferences/{conference_id}", get(conferences::get))
        .route("/v2/conferences/{conference_id}/participants", get(conferences::participants))
        .route("/v2/conferences/{conference_id}/listen", get(conferences::listen))
        .route("/v2/conferences/{conference_id}/actions/{action}", post(conferences::action))
        .route("/v2/conferences/{conference_id}/webrtc", post(webrtc::join_conference))
        .route("/v2/conferences/{conference_id}/join_tokens", post(webrtc::join_token))
        .route("/v2/calls/{call_control_id}/webrtc", post(webrtc::join_call))
        .route("/v2/webrtc/{session_id}", delete(webrtc::leave))
        .route("/v2/recordings", get(recordings::list))
        // `{id}` and `{id}.wav` share the segment; the handler tells them apart.
        .route("/v2/recordings/{recording_id}", get(recordings::get).delete(recordings::delete))
        .route("/v2/call_records", get(records::list))
        .route("/v2/openapi.json", get(openapi::serve))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .route_layer(middleware::from_fn_with_state(state.clone(), auth));
    Router::new()
        .route("/healthz", get(ops::healthz))
        .route("/rooms/{name}", get(webrtc::page))
        .merge(v2)
        .fallback(|| async { ApiError::not_found("route", "").into_response() })
        .with_state(state)
}

/// Bearer token check (constant-time compare).
async fn auth(State(st): State<ApiState>, mut req: Request, next: Next) -> Response {
    let token = st.config.borrow().api.token.clone();
    let header = req
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let full = match (&token, header) {
        (Some(t), Some(g)) => {
            use subtle::ConstantTimeEq;
            bool::from(t.expose().as_bytes().ct_eq(g.as_bytes()))
        }
        _ => false,
    };
    let access = if full {
        Some(Access::Full)
    } else {
        // A join token: in the header, or (browsers cannot set headers on a
        // WebSocket) as `?token=` on the event socket.
        let route = req.extensions().get::<axum::extract::MatchedPath>().map(|p| p.as_str().to_string());
        let query_token = || {
            url::form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes())
                .find(|(k, _)| k == "token")
                .map(|(_, v)| v.into_owned())
        };
        let given =
            header.map(str::to_string).or_else(|| (route.as_deref() == Some("/v2/events")).then(query_token).flatten());
        match (route, given) {
            (Some(route), Some(given)) if token.is_some() && JOIN_TOKEN_ROUTES.contains(&route.as_str()) => {
                st.webrtc.tokens().verify(&given, std::time::SystemTime::now()).ok().map(Access::Room)
            }
            _ => None,
        }
    };
    match access {
        Some(a) => {
            req.extensions_mut().insert(a);
            next.run(req).await
        }
        None => ApiError::unauthorized().into_response(),
    }
}

/// Serves the API on `listener` until `shutdown` is cancelled: over HTTPS when
/// `[api] tls_certificate` and `tls_private_key` are set ([`tls::server_config`];
/// unusable files are logged and nothing is served), plain HTTP otherwise.
pub async fn serve(listener: tokio::net::TcpListener, state: ApiState, shutdown: CancellationToken) {
    let tls = {
        let cfg = state.config.borrow();
        match (&cfg.api.tls_certificate, &cfg.api.tls_private_key) {
            (Some(cert), Some(key)) => match tls::server_config(cert, key) {
                Ok(c) => Some(c),
                Err(e) => {
                    tracing::error!("control API not served: [api] TLS: {e}");
                    return;
                }
            },
            _ => None,
        }
    };
    tokio::spawn(ops::count_events(state.events.subscribe(), Arc::clone(&state.metrics), shutdown.clone()));
    let app = router(state).into_make_service_with_connect_info::<SocketAddr>();
    let stop = shutdown.clone();
    let graceful = async move { stop.cancelled().await };
    let r = match tls {
        None => axum::serve(listener, app).with_graceful_shutdown(graceful).await,
        Some(config) => match tls::TlsListener::start(listener, config, shutdown.clone()) {
            // The no-op tap makes axum's ConnectInfo<SocketAddr> available as on
            // the plain listener (axum implements it for tapped listeners).
            Ok(l) => {
                tracing::info!("control API: HTTPS (rustls)");
                axum::serve(l.tap_io(|_| {}), app).with_graceful_shutdown(graceful).await
            }
            Err(e) => Err(e),
        },
    };
    if let Err(e) = r {
        tracing::warn!(error = %e, "API server stopped");
    }
}
