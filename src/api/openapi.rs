//! `GET /v2/openapi.json`: an OpenAPI 3.1 description of the routes this build
//! serves (a test requests every documented operation and checks it is routed).

use axum::Json;
use serde_json::{Value, json};

/// A body field: name, JSON type, description.
pub type Field = (&'static str, &'static str, &'static str);

/// Call actions served, with their body fields.
pub const ACTIONS: &[(&str, &str, &[Field])] = &[
    (
        "answer",
        "Answer a parked call (a route with park = true), optionally streaming it.",
        &[("stream_url", "string", "ws:// or wss:// agent; plus the streaming_start fields")],
    ),
    ("reject", "Refuse a parked call.", &[("cause", "string", "CALL_REJECTED (603, default) | USER_BUSY (486)")]),
    ("hangup", "End the call (BYE, or 480 before answer).", &[]),
    (
        "send_dtmf",
        "Send RFC 4733 key presses.",
        &[("digits", "string", "0-9, *, #, A-D"), ("duration_millis", "integer", "100 to 500, default 250")],
    ),
    ("mute", "Stop passing the caller's audio to the other side (the recording keeps it).", &[]),
    ("unmute", "Resume passing the caller's audio.", &[]),
    ("client_state_update", "Replace client_state for later events.", &[("client_state", "string", "base64")]),
    (
        "streaming_start",
        "Stream the call to a WebSocket agent (Telnyx media-stream protocol).",
        &[
            ("stream_url", "string", "ws:// or wss:// URL"),
            ("stream_track", "string", "inbound_track | outbound_track | both_tracks"),
            ("stream_bidirectional_mode", "string", "rtp: the agent's audio is played into the call"),
            ("stream_bidirectional_codec", "string", "PCMU | PCMA | L16"),
            ("stream_bidirectional_sampling_rate", "integer", "8000, or 16000 with L16"),
            ("stream_auth_token", "string", "sent as Authorization: Bearer"),
        ],
    ),
    ("streaming_stop", "Stop the stream; the call stays up.", &[]),
    (
        "playback_start",
        "Play a WAV file (8 or 16 kHz) from the box or an http(s) URL.",
        &[
            ("audio_url", "string", "absolute path, file:// or http(s) URL"),
            ("loop", "string", "1 to 100, or infinity"),
            ("overlay", "boolean", "mix over the agent's audio"),
        ],
    ),
    ("playback_stop", "Stop playback.", &[]),
    (
        "record_start",
        "Start a recording span (a new WAV file).",
        &[("format", "string", "wav"), ("channels", "string", "single | dual")],
    ),
    ("record_stop", "Stop the recording span: call.recording.saved.", &[]),
];

fn error_response(description: &str) -> Value {
    json!({"description": description, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Errors"}}}})
}

/// The document.
pub fn document() -> Value {
    let mut paths = serde_json::Map::new();
    let id_param = json!({"name": "call_control_id", "in": "path", "required": true, "schema": {"type": "string"}});
    paths.insert(
        "/v2/calls".into(),
        json!({
            "get": {"summary": "List live calls", "responses": {"200": {"description": "Calls"}}},
            "post": {
                "summary": "Dial (Telnyx POST /v2/calls)",
                "requestBody": {"required": true, "content": {"application/json": {"schema": {
                    "type": "object",
                    "required": ["connection_id", "to", "from"],
                    "properties": {
                        "connection_id": {"type": "string", "description": "trunk name"},
                        "to": {"type": "string"}, "from": {"type": "string"},
                        "timeout_secs": {"type": "integer", "minimum": 5, "maximum": 600},
                        "client_state": {"type": "string"},
                        "stream_url": {"type": "string"}, "agent": {"type": "string", "description": "a configured [[agent]]"},
                        "record": {"type": "string", "enum": ["record-from-answer"]}
                    }
                }}}},
                "responses": {"200": {"description": "The call's ids"}, "400": error_response("Bad field"), "422": error_response("Unknown trunk"), "503": error_response("No capacity")}
            }
        }),
    );
    paths.insert(
        "/v2/calls/{call_control_id}".into(),
        json!({"get": {"summary": "Call status", "parameters": [id_param], "responses": {"200": {"description": "The call (is_alive false once ended)"}, "404": error_response("Unknown call")}}}),
    );
    for (name, summary, fields) in ACTIONS {
        let props: serde_json::Map<String, Value> = fields
            .iter()
            .chain(std::iter::once(&("client_state", "string", "base64; applies before the command")))
            .map(|(f, t, d)| (f.to_string(), json!({"type": t, "description": d})))
            .collect();
        paths.insert(
            format!("/v2/calls/{{call_control_id}}/actions/{name}"),
            json!({"post": {
                "summary": summary,
                "parameters": [id_param],
                "requestBody": {"content": {"application/json": {"schema": {"type": "object", "properties": props}}}},
                "responses": {
                    "200": {"description": "{\"data\":{\"result\":\"ok\"}}"},
                    "400": error_response("Bad field (source.pointer names it)"),
                    "404": error_response("Unknown call"),
                    "422": error_response("Call ended (90018) or command not applicable")
                }
            }}),
        );
    }
    paths.insert(
        "/v2/calls/{call_control_id}/listen".into(),
        json!({"get": {"summary": "WebSocket: live audio of both tracks (Telnyx media frames)", "parameters": [id_param], "responses": {"101": {"description": "Switching protocols"}}}}),
    );
    paths.insert(
        "/v2/events".into(),
        json!({"get": {"summary": "WebSocket: every event as the webhook body", "responses": {"101": {"description": "Switching protocols"}}}}),
    );
    paths.insert(
        "/v2/openapi.json".into(),
        json!({"get": {"summary": "This document", "responses": {"200": {"description": "OpenAPI 3.1"}}}}),
    );
    paths.insert(
        "/healthz".into(),
        json!({"get": {"summary": "Liveness (no token)", "security": [], "responses": {"200": {"description": "ok"}}}}),
    );
    paths.insert("/readyz".into(), json!({"get": {"summary": "Readiness", "responses": {"200": {"description": "ready"}, "503": {"description": "not ready"}}}}));
    paths.insert(
        "/metrics".into(),
        json!({"get": {"summary": "Prometheus metrics", "responses": {"200": {"description": "text/plain; version=0.0.4"}}}}),
    );
    json!({
        "openapi": "3.1.0",
        "info": {"title": "sipbridge control API", "version": env!("CARGO_PKG_VERSION"),
                 "description": "Telnyx Call Control shapes served by the box ([api] in the config)."},
        "security": [{"bearer": []}],
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {"Errors": {"type": "object", "properties": {"errors": {"type": "array", "items": {
                "type": "object",
                "properties": {"code": {"type": "string"}, "title": {"type": "string"}, "detail": {"type": "string"},
                               "source": {"type": "object", "properties": {"pointer": {"type": "string"}}}}
            }}}}}
        },
        "paths": paths,
    })
}

/// `GET /v2/openapi.json`.
pub async fn serve() -> Json<Value> {
    Json(document())
}
