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
pub async fn socket(State(st): State<ApiState>, ws: WebSocketUpgrade) -> Response {
    let rx = st.events.subscribe();
    ws.on_upgrade(move |socket| stream(socket, rx))
}

async fn stream(
    mut socket: WebSocket,
    mut rx: tokio::sync::broadcast::Receiver<std::sync::Arc<crate::call::CallEvent>>,
) {
    loop {
        tokio::select! {
            ev = rx.recv() => match ev {
                Ok(ev) => {
                    let body = envelope::body(&envelope::data_json(&ev), 1, DELIVERED_TO);
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
