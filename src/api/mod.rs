//! The local HTTP API (axum) on `[api].listen`: Telnyx-shaped call control
//! (`/v2/calls`, PROTOCOLS.md §4), the live event socket (`/v2/events`), and what
//! an operator's monitoring wants (`/healthz`, `/readyz`, `/metrics`).
//!
//! Every route except `/healthz` needs `Authorization: Bearer <[api].token>`
//! (compared in constant time); without a configured token only `/healthz` answers.

pub mod calls;
pub mod error;
pub mod events;
pub mod openapi;
pub mod ops;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
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
}

/// The router with every route (used by [`serve`] and by tests).
pub fn router(state: ApiState) -> Router {
    let v2 = Router::new()
        .route("/v2/calls", get(calls::list).post(calls::dial))
        .route("/v2/calls/{call_control_id}", get(calls::get))
        .route("/v2/calls/{call_control_id}/actions/{action}", post(calls::action))
        .route("/v2/calls/{call_control_id}/listen", get(events::listen))
        .route("/v2/events", get(events::socket))
        .route("/v2/openapi.json", get(openapi::serve))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .route_layer(middleware::from_fn_with_state(state.clone(), auth));
    Router::new()
        .route("/healthz", get(ops::healthz))
        .merge(v2)
        .fallback(|| async { ApiError::not_found("route", "").into_response() })
        .with_state(state)
}

/// Bearer token check (constant-time compare).
async fn auth(State(st): State<ApiState>, req: Request, next: Next) -> Response {
    let token = st.config.borrow().api.token.clone();
    let given = req
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let ok = match (token, given) {
        (Some(t), Some(g)) => {
            use subtle::ConstantTimeEq;
            bool::from(t.expose().as_bytes().ct_eq(g.as_bytes()))
        }
        _ => false,
    };
    if ok { next.run(req).await } else { ApiError::unauthorized().into_response() }
}

/// Serves the API on `listener` until `shutdown` is cancelled.
pub async fn serve(listener: tokio::net::TcpListener, state: ApiState, shutdown: CancellationToken) {
    tokio::spawn(ops::count_events(state.events.subscribe(), Arc::clone(&state.metrics), shutdown.clone()));
    let app = router(state);
    let r = axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await;
    if let Err(e) = r {
        tracing::warn!(error = %e, "API server stopped");
    }
}
