//! The local HTTP API (axum) on `[api].listen`: Telnyx-shaped call control
//! (`/v2/calls`, PROTOCOLS.md §4), recordings and call records from the store
//! (`/v2/recordings`, `/v2/call_records`), the box's status, trunks and routes
//! and the webhook dead letters (`/v2/status`, `/v2/trunks`, `/v2/routes`,
//! `/v2/webhooks/retry_dead`: [`status`]), the effective config and the last
//! reloads (`/v2/config`) and the technician's console page (`/console`:
//! [`console`]), the live event socket (`/v2/events`),
//! and what an operator's monitoring wants (`/healthz`, `/readyz`, `/metrics`).
//!
//! Every route except `/healthz`, the room page (`/rooms/{name}`), the console
//! page (`/console`, [`console`]) and a WebRTC session's `DELETE` (the API token
//! or that session's own secret, see [`webrtc::leave`]) needs
//! `Authorization: Bearer <[api].token>` (compared in constant time), or for a
//! room's routes a join token; the WebSockets (`/v2/events`,
//! `/v2/calls/{id}/listen`) also take it as `?token=`, since browsers cannot set
//! headers on them. Without a configured token only `/healthz` answers.
//!
//! The server is hyper's HTTP/1.1 under this module's accept loop: at most
//! `[api] max_connections` connections at once (one more is closed at once), and
//! each must send its request headers within `[api] header_read_timeout` (an
//! upgraded WebSocket keeps its slot until it closes).
//! With `[api] tls_certificate` and `tls_private_key` the same router is served
//! over HTTPS ([`tls`]).

pub mod body;
pub mod calls;
pub mod conferences;
pub mod console;
pub mod error;
pub mod events;
pub mod ivr;
pub mod openapi;
pub mod ops;
pub mod query;
pub mod recordings;
pub mod records;
pub mod status;
pub mod tls;
pub mod webrtc;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
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
    /// Call control: config, events, live calls, rooms, and dialling.
    pub control: crate::call::services::CallControl,
    /// The SIP listeners, as `udp://ip:port` (`/readyz`).
    pub sip_listeners: Vec<String>,
    /// Admission and draining (`/readyz`).
    pub lifecycle: Arc<crate::call::lifecycle::Lifecycle>,
    /// The config in force (token, recording dir...).
    pub config: watch::Receiver<Arc<Config>>,
    /// Call events (the event socket subscribes).
    pub events: EventBus,
    /// Registration state of registering trunks.
    pub registrations: watch::Receiver<RegStates>,
    /// When each trunk last sent OPTIONS and INVITE (`GET /v2/trunks`).
    pub trunk_activity: crate::sip::trunk::TrunkActivity,
    /// Counters fed from the events.
    pub metrics: Arc<ops::Counters>,
    /// The store: writes go through its writer thread; listings read the same
    /// file ([`crate::store::StoreHandle::path`]) on read-only connections.
    pub store: crate::store::StoreHandle,
    /// Browser (WebRTC) participants and their join tokens.
    pub webrtc: crate::webrtc::WebRtcHub,
    /// The config file the daemon reads (`GET /v2/config`); `None` when unknown.
    pub config_path: Option<std::path::PathBuf>,
    /// What SIGHUP reloads did (`GET /v2/config`); the daemon records into it.
    pub reloads: console::ReloadLog,
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
const JOIN_TOKEN_ROUTES: &[&str] =
    &["/v2/conferences/{conference_id}/webrtc", "/v2/conferences/{conference_id}/participants", "/v2/events"];

/// The join tokens under the API token in force (so a changed `[api] token`
/// revokes them on reload). Without a token none are accepted anyway.
pub fn join_tokens(st: &ApiState) -> crate::webrtc::token::JoinTokens {
    let cfg = st.config.borrow();
    crate::webrtc::token::JoinTokens::new(cfg.api.token.as_ref().map(|t| t.expose().as_bytes()))
}

/// WebSocket routes that also take their credentials as `?token=` (the API token,
/// or for `/v2/events` a join token): browsers cannot set `Authorization` on a
/// WebSocket.
const QUERY_TOKEN_ROUTES: &[&str] = &["/v2/events", "/v2/calls/{call_control_id}/listen"];

/// Whether `headers` carry `Authorization: Bearer <[api] token>` (constant-time compare).
pub fn is_api_token(st: &ApiState, headers: &axum::http::HeaderMap) -> bool {
    headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .is_some_and(|g| token_is(st, g))
}

/// Whether `given` is the `[api] token` in force (constant-time compare; `false`
/// without a token).
fn token_is(st: &ApiState, given: &str) -> bool {
    use subtle::ConstantTimeEq;
    let token = st.config.borrow().api.token.clone();
    token.is_some_and(|t| bool::from(t.expose().as_bytes().ct_eq(given.as_bytes())))
}

/// The router with every route (used by [`serve`] and by tests).
pub fn router(state: ApiState) -> Router {
    std::sync::LazyLock::force(&status::STARTED);
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
        .route("/v2/recordings", get(recordings::list))
        // `{id}` and `{id}.wav` share the segment; the handler tells them apart.
        .route("/v2/recordings/{recording_id}", get(recordings::get).delete(recordings::delete))
        .route("/v2/call_records", get(records::list))
        .route("/v2/status", get(status::status))
        .route("/v2/trunks", get(status::trunks))
        .route("/v2/routes", get(status::routes))
        .route("/v2/routes/{index}/test", post(status::test_route))
        .route("/v2/webhooks/retry_dead", post(status::retry_dead))
        .route("/v2/config", get(console::config))
        .route("/v2/openapi.json", get(openapi::serve))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .route_layer(middleware::from_fn_with_state(state.clone(), auth));
    Router::new()
        .route("/healthz", get(ops::healthz))
        .route("/rooms/{name}", get(webrtc::page))
        .route("/console", get(console::page))
        // Its own credentials: the API token or the session's secret.
        .route("/v2/webrtc/{session_id}", delete(webrtc::leave))
        .merge(v2)
        .fallback(|| async { ApiError::not_found("route", "").into_response() })
        .with_state(state)
}

/// Bearer token check (constant-time compare).
async fn auth(State(st): State<ApiState>, mut req: Request, next: Next) -> Response {
    let token_set = st.config.borrow().api.token.is_some();
    let route = req.extensions().get::<axum::extract::MatchedPath>().map(|p| p.as_str().to_string());
    // Browsers cannot set headers on a WebSocket: the sockets take `?token=`.
    let socket_token = match route.as_deref() {
        Some(r) if QUERY_TOKEN_ROUTES.contains(&r) => {
            url::form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes())
                .find(|(k, _)| k == "token")
                .map(|(_, v)| v.into_owned())
        }
        _ => None,
    };
    let full = is_api_token(&st, req.headers()) || socket_token.as_deref().is_some_and(|t| token_is(&st, t));
    let header = req
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let access = if full {
        Some(Access::Full)
    } else {
        // A join token: in the header, or as `?token=` on the event socket.
        let given = header
            .map(str::to_string)
            .or_else(|| (route.as_deref() == Some("/v2/events")).then_some(socket_token).flatten());
        match (route, given) {
            (Some(route), Some(given)) if token_set && JOIN_TOKEN_ROUTES.contains(&route.as_str()) => {
                join_tokens(&st).verify(&given, std::time::SystemTime::now()).ok().map(Access::Room)
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

/// What the accept loop enforces (`[api] max_connections`, `header_read_timeout`).
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    /// Connections served at once; one more is closed as soon as it is accepted.
    pub max_connections: usize,
    /// Longest wait for a request's headers (also bounds an idle keep-alive
    /// connection): hyper's HTTP/1 `header_read_timeout`.
    pub header_read_timeout: std::time::Duration,
}

/// Serves the API on `listener` until `shutdown` is cancelled: over HTTPS when
/// `[api] tls_certificate` and `tls_private_key` are set ([`tls::server_config`];
/// unusable files are logged and nothing is served), plain HTTP otherwise. Logs a
/// warning when it listens beyond loopback without TLS (the bearer and join tokens
/// would cross the network in clear text). Connections are capped and must send
/// their headers in time ([`ConnLimits`]); refusals count in
/// [`crate::security::API_CONNECTIONS_REFUSED`].
pub async fn serve(listener: tokio::net::TcpListener, state: ApiState, shutdown: CancellationToken) {
    let (tls, limits) = {
        let cfg = state.config.borrow();
        let tls = match (&cfg.api.tls_certificate, &cfg.api.tls_private_key) {
            (Some(cert), Some(key)) => match tls::server_config(cert, key) {
                Ok(c) => Some(c),
                Err(e) => {
                    tracing::error!("control API not served: [api] TLS: {e}");
                    return;
                }
            },
            _ => None,
        };
        let limits =
            ConnLimits { max_connections: cfg.api.max_connections, header_read_timeout: cfg.api.header_read_timeout };
        (tls, limits)
    };
    if let Ok(local) = listener.local_addr()
        && plaintext_beyond_loopback(local, tls.is_some())
    {
        tracing::warn!(
            listen = %local,
            "the control API listens beyond loopback without TLS: its token and join tokens cross the network in \
             clear text (set [api] tls_certificate and tls_private_key, or listen on 127.0.0.1)"
        );
    }
    tokio::spawn(ops::count_events(state.events.subscribe(), Arc::clone(&state.metrics), shutdown.clone()));
    let app = router(state);
    match tls {
        None => accept_loop(listener, app, limits, shutdown).await,
        Some(config) => match tls::TlsListener::start(listener, config, shutdown.clone()) {
            Ok(l) => {
                tracing::info!("control API: HTTPS (rustls)");
                accept_loop(l, app, limits, shutdown).await
            }
            Err(e) => tracing::warn!(error = %e, "API server stopped"),
        },
    }
}

/// Whether serving on `local` exposes the tokens: plain HTTP on an address other
/// than loopback (127.0.0.0/8, ::1), including the wildcard addresses.
pub fn plaintext_beyond_loopback(local: SocketAddr, tls: bool) -> bool {
    !tls && !local.ip().is_loopback()
}

/// Accepts connections until `shutdown`, each served in its own task by hyper's
/// HTTP/1.1 server (with upgrades, for the WebSockets) under `limits`; on
/// shutdown every connection finishes its request in progress and closes.
async fn accept_loop<L>(mut listener: L, app: Router, limits: ConnLimits, shutdown: CancellationToken)
where
    L: axum::serve::Listener<Addr = SocketAddr>,
{
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections.max(1)));
    loop {
        let (io, peer) = tokio::select! {
            c = listener.accept() => c,
            _ = shutdown.cancelled() => return,
        };
        let Ok(permit) = Arc::clone(&slots).try_acquire_owned() else {
            crate::security::API_CONNECTIONS_REFUSED.inc();
            tracing::debug!(%peer, max = limits.max_connections, "API: connection cap reached ([api] max_connections): closed");
            drop(io);
            continue;
        };
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        let service = hyper::service::service_fn(move |mut req: Request<hyper::body::Incoming>| {
            req.extensions_mut().insert(axum::extract::ConnectInfo(peer));
            hyper::service::Service::call(&service, req)
        });
        let stop = shutdown.clone();
        // The slot goes with the socket: an upgraded WebSocket keeps it until closed.
        let io = Counted { io, _permit: permit };
        tokio::spawn(async move {
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder.timer(hyper_util::rt::TokioTimer::new()).header_read_timeout(limits.header_read_timeout);
            let conn = builder.serve_connection(hyper_util::rt::TokioIo::new(io), service).with_upgrades();
            let mut conn = std::pin::pin!(conn);
            let result = tokio::select! {
                r = conn.as_mut() => r,
                _ = stop.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    conn.as_mut().await
                }
            };
            if let Err(e) = result {
                if e.is_timeout() {
                    crate::security::API_CONNECTIONS_REFUSED.inc();
                    tracing::debug!(%peer, "API: no complete request headers in time ([api] header_read_timeout): closed");
                } else {
                    tracing::trace!(%peer, "API connection ended: {e}");
                }
            }
        });
    }
}

/// A connection's socket holding its slot of `[api] max_connections`: the slot is
/// freed when the socket is dropped, also after a WebSocket upgrade moved it out
/// of hyper's connection task.
struct Counted<T> {
    io: T,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl<T: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Counted<T> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<T: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Counted<T> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn plain_http_beyond_loopback_is_flagged() {
        let flagged = |a: &str, tls| super::plaintext_beyond_loopback(a.parse().unwrap(), tls);
        assert!(flagged("0.0.0.0:8080", false));
        assert!(flagged("[::]:8080", false));
        assert!(flagged("192.168.1.5:8080", false));
        assert!(!flagged("127.0.0.1:8080", false));
        assert!(!flagged("127.0.0.2:8080", false));
        assert!(!flagged("[::1]:8080", false));
        assert!(!flagged("0.0.0.0:8443", true), "TLS: nothing to warn about");
    }
}
