//! `/v2/events`: every call event as a WebSocket text frame, exactly the webhook's
//! body (`{"data":{...},"meta":{"attempt":1,"delivered_to":"/v2/events"}}`), to any
//! number of local clients. A client that falls behind is dropped (the broadcast
//! channel's lag, or a send that takes more than 2 s): it never slows calls.

use std::time::Duration;

use axum::extract::State;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::response::Response;
use tokio::sync::broadcast::error::RecvError;

use super::ApiState;
use crate::webhook::envelope;

/// Where `meta.delivered_to` says the socket's copies went.
pub const DELIVERED_TO: &str = "/v2/events";

/// Upgrades to the event stream.
pub async fn socket(
    State(st): State<ApiState>,
    axum::Extension(access): axum::Extension<super::Access>,
    ws: WebSocketUpgrade,
) -> Response {
    let rx = st.events.subscribe();
    let room = match access {
        super::Access::Full => None,
        super::Access::Room(name) => Some(name),
    };
    ws.on_upgrade(move |socket| stream(socket, rx, room))
}

/// Whether a join token for `room` sees `ev`: only that room's `conference.*`
/// events (and those without [`GUEST_HIDDEN`] fields).
fn visible(ev: &crate::call::CallEvent, room: Option<&str>) -> bool {
    match room {
        None => true,
        Some(room) => {
            ev.event_type.starts_with("conference.") && ev.payload.get("name").and_then(|n| n.as_str()) == Some(room)
        }
    }
}

/// Payload fields a join token's holder (a guest in the room) does not see: the
/// parties' numbers, the backend's `client_state`, SIP headers.
pub const GUEST_HIDDEN: &[&str] = &["from", "to", "client_state", "custom_headers"];

/// `ev` as a guest sees it: without [`GUEST_HIDDEN`] fields.
fn for_guest(ev: &crate::call::CallEvent) -> crate::call::CallEvent {
    let mut ev = ev.clone();
    for k in GUEST_HIDDEN {
        ev.payload.remove(*k);
    }
    ev
}

async fn stream(
    mut socket: WebSocket,
    mut rx: tokio::sync::broadcast::Receiver<std::sync::Arc<crate::call::CallEvent>>,
    room: Option<String>,
) {
    loop {
        tokio::select! {
            ev = rx.recv() => match ev {
                Ok(ev) if !visible(&ev, room.as_deref()) => {}
                Ok(ev) => {
                    let data = match room {
                        None => envelope::data_json(&ev),
                        Some(_) => envelope::data_json(&for_guest(&ev)),
                    };
                    let body = envelope::body(&data, 1, DELIVERED_TO);
                    match tokio::time::timeout(Duration::from_secs(2), socket.send(Message::Text(body.into()))).await {
                        Ok(Ok(())) => {}
                        _ => return,
                    }
                }
                Err(RecvError::Lagged(n)) => {
                    tracing::info!(missed = n, "event socket client too slow: closed");
                    let frame = CloseFrame { code: 1008, reason: format!("too slow: {n} events missed").into() };
                    let _ = socket.send(Message::Close(Some(frame))).await;
                    return;
                }
                Err(RecvError::Closed) => return,
            },
            msg = socket.recv() => match msg {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => {}
            },
        }
    }
}

/// `GET /v2/calls/{call_control_id}/listen`: the call's live audio, both tracks, as
/// Telnyx media-stream frames (`connected`, `start` with the call's ids and codec,
/// then `media` with `track` inbound/outbound and base64 G.711, `stop` when the call
/// ends). A listener that falls behind skips chunks; the call never waits.
pub async fn listen(
    State(st): State<ApiState>,
    axum::extract::Path(id): axum::extract::Path<String>,
    ws: WebSocketUpgrade,
) -> Result<Response, super::error::ApiError> {
    let (view, rx) = match st.calls.listen(&id) {
        Some(l) => l,
        None => {
            return Err(match st.calls.get(&id) {
                crate::call::control::Lookup::Unknown => super::error::ApiError::not_found("call", &id),
                _ => super::error::ApiError::from_action(crate::call::control::ActionError::ended()),
            });
        }
    };
    Ok(ws.on_upgrade(move |socket| listen_stream(socket, view, rx)))
}

/// Sends one text frame; `false` when the client is gone or takes over 2 s.
pub(crate) async fn send(socket: &mut WebSocket, text: String) -> bool {
    matches!(tokio::time::timeout(Duration::from_secs(2), socket.send(Message::Text(text.into()))).await, Ok(Ok(())))
}

async fn listen_stream(
    mut socket: WebSocket,
    view: crate::call::control::CallView,
    mut listener: crate::call::listen::Listener,
) {
    let rx = &mut listener.rx;
    use crate::agent::protocol::{Outbound, StartInfo};
    use crate::config::Encoding;
    let mut out = Outbound::new(uuid::Uuid::new_v4().to_string());
    let started = tokio::time::Instant::now();
    let mut sent_start = false;
    if !send(&mut socket, out.connected()).await {
        return;
    }
    loop {
        tokio::select! {
            c = rx.recv() => match c {
                Ok(chunk) => {
                    if !sent_start {
                        sent_start = true;
                        let encoding = match chunk.codec {
                            crate::media::g711::G711::Pcmu => Encoding::Pcmu,
                            crate::media::g711::G711::Pcma => Encoding::Pcma,
                        };
                        let start = StartInfo {
                            call_control_id: view.info.ids.call_control_id.clone(),
                            call_session_id: view.info.ids.call_session_id.clone(),
                            from: view.info.from.clone(),
                            to: view.info.to.clone(),
                            client_state: view.info.client_state.clone(),
                            custom_parameters: serde_json::Map::new(),
                            encoding,
                            sample_rate: 8000,
                        };
                        if !send(&mut socket, out.start(&start)).await {
                            return;
                        }
                    }
                    let ts = started.elapsed().as_millis() as u64;
                    if !send(&mut socket, out.media(chunk.track, ts, chunk.audio())).await {
                        return;
                    }
                }
                Err(RecvError::Lagged(_)) => continue,
                Err(RecvError::Closed) => {
                    let stop = out.stop(&view.info.ids.call_control_id, &view.info.ids.call_session_id);
                    let _ = send(&mut socket, stop).await;
                    let _ = socket.send(Message::Close(None)).await;
                    return;
                }
            },
            msg = socket.recv() => match msg {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => {}
            },
        }
    }
}
