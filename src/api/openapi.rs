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
            (
                "audio_url",
                "string",
                "a WAV file in [media] dir (name or absolute path, file://) or a public http(s) URL",
            ),
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
    (
        "bridge",
        "Bridge this call's audio with another call: call.bridged on both; when one hangs up, so does the other.",
        &[("call_control_id", "string", "the other call")],
    ),
    (
        "transfer",
        "Dial a new leg and bridge it with this call when it answers (this call stays up if it fails).",
        &[
            ("to", "string", "number or SIP user to dial"),
            ("from", "string", "caller ID (default: this call's from)"),
            ("timeout_secs", "integer", "5 to 600, default 30"),
            ("connection_id", "string", "trunk (sipbridge; default: this call's trunk)"),
        ],
    ),
    (
        "refer",
        "Blind transfer by SIP REFER (RFC 3515): call.refer.started, then call.refer.completed or call.refer.failed.",
        &[
            ("sip_address", "string", "sip: or sips: URI the peer is to call"),
            ("custom_headers", "array", "[{name, value}] added to the REFER"),
        ],
    ),
];

/// Conference actions served, with their body fields.
pub const CONFERENCE_ACTIONS: &[(&str, &str, &[Field])] = &[
    (
        "join",
        "Put a call in the room (its agent stream follows it in).",
        &[
            ("call_control_id", "string", "the call"),
            ("mute", "boolean", "join muted"),
            ("hold", "boolean", "join on hold"),
        ],
    ),
    (
        "leave",
        "Take a call (or a call's agent, {id}:agent) out of the room.",
        &[("call_control_id", "string", "the call")],
    ),
    ("mute", "Participants contribute nothing (they still hear).", &[("call_control_ids", "array", "all when absent")]),
    ("unmute", "Undo mute.", &[("call_control_ids", "array", "all when absent")]),
    ("hold", "Participants hear silence and contribute nothing.", &[("call_control_ids", "array", "all when absent")]),
    ("unhold", "Undo hold.", &[("call_control_ids", "array", "all when absent")]),
    (
        "play",
        "Play a WAV file to everyone in the room.",
        &[(
            "audio_url",
            "string",
            "a WAV file in [media] dir (name or absolute path, file://) or a public http(s) URL",
        )],
    ),
    ("end", "End the room: every participant's call is hung up.", &[]),
    ("record_start", "Record the room's mix (mono WAV).", &[("format", "string", "wav")]),
    ("record_stop", "Stop recording the room: conference.recording.saved.", &[]),
];

/// `components.schemas.CallRecord`: one leg's record (`api::records::record_json`),
/// with `quality_samples` (`QualitySamples`), the leg's jitter and loss over time.
fn call_record_schema() -> Value {
    let text = |d: &str| json!({"type": ["string", "null"], "description": d});
    let time = |d: &str| json!({"type": ["string", "null"], "format": "date-time", "description": d});
    json!({
        "type": "object",
        "properties": {
            "record_type": {"const": "call_record"},
            "call_leg_id": {"type": "string"},
            "call_control_id": {"type": "string"},
            "call_session_id": {"type": "string"},
            "connection_id": text("trunk name"),
            "from": {"type": "string"},
            "to": {"type": "string"},
            "direction": {"enum": ["incoming", "outgoing"]},
            "state": {"enum": ["initiated", "answered", "ended"]},
            "start_time": time("RFC 3339 UTC, µs"),
            "answer_time": time("null until answered"),
            "end_time": time("null while up"),
            "duration_secs": {"type": ["integer", "null"], "description": "start to end; null while up"},
            "billable_secs": {"type": ["integer", "null"], "description": "answer to end"},
            "hangup_cause": text("Telnyx hangup_cause"),
            "hangup_source": text("caller | callee | unknown"),
            "sip_hangup_cause": text("SIP status code"),
            "call_quality_stats": {"type": ["object", "null"], "description": "as in call.hangup: inbound/outbound packet_count, skip_packet_count, jitter_max_variance, jitter_packet_count, mos"},
            "route": text("[[route]] name"),
            "agent": text("[[agent]] name"),
            "stream_url": text("agent WebSocket URL, no query or credentials"),
            "bridged_call_leg_id": text("the other leg of a bridge"),
            "bridged_call_control_id": text("the other leg of a bridge"),
            "custom_headers": {"type": ["array", "null"], "items": {"type": "object", "properties": {"name": {"type": "string"}, "value": {"type": "string"}}}},
            "recording_ids": {"type": "array", "items": {"type": "string"}},
            "recording_paths": {"type": "array", "items": {"type": "string"}},
            "quality_samples": {"oneOf": [{"$ref": "#/components/schemas/QualitySamples"}, {"type": "null"}]},
        }
    })
}

/// `components.schemas.QualitySamples` (`call::quality_series`).
fn quality_samples_schema() -> Value {
    json!({
        "type": "object",
        "description": "The leg's jitter and loss over time, for what the box received from the leg's peer: one point per RTCP report (about every 5 s, the first 2.5 s after its media started) and one when its media stopped; a long call's points are merged pairwise so at most 240 remain (a merged point keeps the worse jitter and the loss of both). Null until the leg ended with media.",
        "required": ["interval", "points"],
        "properties": {
            "interval": {"const": "rtcp"},
            "points": {"type": "array", "maxItems": 240, "items": {
                "type": "object",
                "required": ["t_ms", "jitter_ms", "loss_percent", "packets"],
                "properties": {
                    "t_ms": {"type": "integer", "description": "end of the point's interval, ms since the leg's media started"},
                    "jitter_ms": {"type": "number", "description": "interarrival jitter (RFC 3550 §6.4.1) at that moment, ms, 0.1 steps"},
                    "loss_percent": {"type": "number", "minimum": 0, "maximum": 100, "description": "packets lost in the interval / expected in it (RFC 3550 A.3), %"},
                    "packets": {"type": "integer", "description": "RTP packets received in the interval"}
                }
            }}
        }
    })
}

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
    let conf_param = json!({"name": "conference_id", "in": "path", "required": true, "schema": {"type": "string"}, "description": "conference_id or room name"});
    paths.insert(
        "/v2/conferences".into(),
        json!({
            "get": {"summary": "Local rooms", "responses": {"200": {"description": "{\"data\": [conference]}"}}},
            "post": {"summary": "Create (or join by name) a room from a call",
                     "requestBody": {"content": {"application/json": {"schema": {"type": "object", "properties": {
                         "call_control_id": {"type": "string"}, "name": {"type": "string"}, "max_participants": {"type": "integer"}}}}}},
                     "responses": {"200": {"description": "{\"data\": conference}"}, "400": error_response("Bad field"), "404": error_response("Unknown call")}}
        }),
    );
    paths.insert(
        "/v2/conferences/{conference_id}".into(),
        json!({"get": {"summary": "One room", "parameters": [conf_param], "responses": {"200": {"description": "{\"data\": conference}"}, "404": error_response("Unknown conference")}}}),
    );
    paths.insert(
        "/v2/conferences/{conference_id}/participants".into(),
        json!({"get": {"summary": "A room's participants", "parameters": [conf_param], "responses": {"200": {"description": "{\"data\": [participant]}"}, "404": error_response("Unknown conference")}}}),
    );
    paths.insert(
        "/v2/conferences/{conference_id}/listen".into(),
        json!({"get": {"summary": "WebSocket: the room's full mix as Telnyx media frames", "parameters": [conf_param], "responses": {"101": {"description": "Switching protocols"}, "404": error_response("Unknown conference")}}}),
    );
    for (name, summary, fields) in CONFERENCE_ACTIONS {
        let props: serde_json::Map<String, Value> =
            fields.iter().map(|(f, t, d)| (f.to_string(), json!({"type": t, "description": d}))).collect();
        paths.insert(
            format!("/v2/conferences/{{conference_id}}/actions/{name}"),
            json!({"post": {
                "summary": summary,
                "parameters": [conf_param],
                "requestBody": {"content": {"application/json": {"schema": {"type": "object", "properties": props}}}},
                "responses": {
                    "200": {"description": "{\"data\":{\"result\":\"ok\"}}"},
                    "400": error_response("Bad field"),
                    "404": error_response("Unknown conference, call or participant"),
                    "422": error_response("Not applicable now")
                }
            }}),
        );
    }
    let sdp_body = json!({"required": true, "content": {"application/sdp": {"schema": {"type": "string"}, "description": "The browser's SDP offer (ICE gathered: no trickle)"}}});
    let sdp_answer = json!({
        "description": "The SDP answer; Location: /v2/webrtc/{session_id}?secret=... (the session's own secret: DELETE it to leave), X-Participant-Id, X-Conference-Id",
        "content": {"application/sdp": {"schema": {"type": "string"}}}
    });
    paths.insert(
        "/v2/conferences/{conference_id}/webrtc".into(),
        json!({"post": {"summary": "WHIP-style: a browser joins the room (a new name creates it); API token or the room's join token",
                        "parameters": [conf_param], "requestBody": sdp_body,
                        "responses": {"201": sdp_answer, "400": error_response("Bad SDP (the detail says why)"),
                                      "401": error_response("No valid token for this room"),
                                      "404": error_response("Unknown conference id"), "409": error_response("The room refused (full, ended)"),
                                      "415": error_response("Not application/sdp"),
                                      "503": error_response("[webrtc] max_participants reached, or (join token) max_participants_per_room")}}}),
    );
    paths.insert(
        "/v2/calls/{call_control_id}/webrtc".into(),
        json!({"post": {"summary": "WHIP-style: a browser listens to (mode=listen) or barges in on (mode=talk) one call",
                        "parameters": [id_param, {"name": "mode", "in": "query", "schema": {"type": "string", "enum": ["listen", "talk"], "default": "listen"}}],
                        "requestBody": sdp_body,
                        "responses": {"201": sdp_answer, "400": error_response("Bad SDP or mode"), "404": error_response("No live call"),
                                      "503": error_response("[webrtc] max_participants reached")}}}),
    );
    paths.insert(
        "/v2/webrtc/{session_id}".into(),
        json!({"delete": {"summary": "The browser leaves: the API token ends any session, the session's own secret (from its Location) ends that one; a join token alone ends none",
                          "security": [{"bearer": []}, {}],
                          "parameters": [{"name": "session_id", "in": "path", "required": true, "schema": {"type": "string", "format": "uuid"}},
                                         {"name": "secret", "in": "query", "required": false, "schema": {"type": "string"}}],
                          "responses": {"204": {"description": "Left"}, "401": error_response("Neither the API token nor a secret"),
                                        "404": error_response("No such session, or not its secret")}}}),
    );
    paths.insert(
        "/v2/conferences/{conference_id}/join_tokens".into(),
        json!({"post": {"summary": "A join token for one room (its WebRTC join/leave, participants, events) and the page's address",
                        "parameters": [conf_param],
                        "requestBody": {"content": {"application/json": {"schema": {"type": "object", "properties": {
                            "ttl_secs": {"type": "integer", "minimum": 1, "maximum": 604800}}}}}},
                        "responses": {"201": {"description": "{\"data\": {\"token\", \"conference_name\", \"expires_at\", \"room_url\"}}"},
                                      "400": error_response("Bad ttl_secs or a private room name"), "404": error_response("Unknown conference id")}}}),
    );
    paths.insert(
        "/rooms/{name}".into(),
        json!({"get": {"summary": "The room page (HTML; the join token goes in the URL fragment: #token=...)", "security": [],
                       "parameters": [{"name": "name", "in": "path", "required": true, "schema": {"type": "string"}}],
                       "responses": {"200": {"description": "text/html"}}}}),
    );
    paths.insert(
        "/v2/calls/{call_control_id}/listen".into(),
        json!({"get": {"summary": "WebSocket: live audio of both tracks (Telnyx media frames); the API token also as ?token= (browsers cannot set headers on a WebSocket)", "parameters": [id_param, {"name": "token", "in": "query", "schema": {"type": "string"}}], "responses": {"101": {"description": "Switching protocols"}}}}),
    );
    paths.insert(
        "/v2/events".into(),
        json!({"get": {"summary": "WebSocket: every event as the webhook body; the API token (or a join token) also as ?token=", "parameters": [{"name": "token", "in": "query", "schema": {"type": "string"}}], "responses": {"101": {"description": "Switching protocols"}}}}),
    );
    let rec_param = json!({"name": "recording_id", "in": "path", "required": true, "schema": {"type": "string"}});
    let query = |name: &str, description: &str| json!({"name": name, "in": "query", "schema": {"type": "string"}, "description": description});
    let page_params = [
        json!({"name": "page[number]", "in": "query", "schema": {"type": "integer", "minimum": 1, "default": 1}}),
        json!({"name": "page[size]", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 250, "default": 20}}),
    ];
    let mut list_params: Vec<Value> = [
        ("filter[call_session_id]", "exact"),
        ("filter[call_leg_id]", "exact"),
        ("filter[call_control_id]", "exact"),
        ("filter[connection_id]", "trunk name"),
        ("filter[from]", "exact, case-sensitive"),
        ("filter[to]", "exact, case-sensitive"),
        ("filter[created_at][gte]", "RFC 3339 instant"),
        ("filter[created_at][lte]", "RFC 3339 instant"),
        ("filter[status]", "completed | deleted"),
        ("filter[conference_id]", "accepted; rooms are not recorded per conference, so it matches nothing"),
    ]
    .iter()
    .map(|(n, d)| query(n, d))
    .collect();
    list_params.extend(page_params.iter().cloned());
    paths.insert(
        "/v2/recordings".into(),
        json!({"get": {
            "summary": "List recordings (Telnyx GET /v2/recordings), newest first",
            "parameters": list_params,
            "responses": {"200": {"description": "{\"data\": [recording], \"meta\": {page_number, page_size, total_pages, total_results}}"},
                          "400": error_response("Bad parameter (source.parameter names it)")}
        }}),
    );
    paths.insert(
        "/v2/recordings/{recording_id}".into(),
        json!({
            "get": {"summary": "A recording (Telnyx shape: record_type, id, call ids, channels, status, download_urls.wav, ...)",
                    "parameters": [rec_param], "responses": {"200": {"description": "{\"data\": recording}"}, "404": error_response("Unknown recording")}},
            "delete": {"summary": "Delete the recording's file; the record stays with status deleted",
                       "parameters": [rec_param], "responses": {"200": {"description": "{\"data\": recording}"}, "404": error_response("Unknown recording")}}
        }),
    );
    paths.insert(
        "/v2/recordings/{recording_id}.wav".into(),
        json!({"get": {
            "summary": "The WAV file (audio/wav); Range requests answered with 206, unsatisfiable ones with 416",
            "parameters": [rec_param, {"name": "Range", "in": "header", "schema": {"type": "string"}, "description": "bytes=first-last"}],
            "responses": {"200": {"description": "audio/wav"}, "206": {"description": "Partial content"}, "304": {"description": "ETag matched If-None-Match"},
                          "404": error_response("Unknown recording, or its file was deleted"), "416": {"description": "Range not satisfiable"}}
        }}),
    );
    let mut record_params: Vec<Value> = [
        ("from", "RFC 3339 instant: legs that started at or after it"),
        ("to", "RFC 3339 instant: legs that started at or before it"),
        ("trunk", "trunk name (alias: connection_id)"),
        ("connection_id", "trunk name"),
        ("call_session_id", "exact"),
        ("call_leg_id", "exact"),
        ("call_control_id", "exact"),
        ("direction", "incoming | outgoing"),
        ("state", "initiated | answered | ended"),
        ("hangup_cause", "Telnyx hangup_cause"),
    ]
    .iter()
    .map(|(n, d)| query(n, d))
    .collect();
    record_params.extend(page_params);
    paths.insert(
        "/v2/call_records".into(),
        json!({"get": {
            "summary": "Call records (one per leg) from the box's store, newest first",
            "parameters": record_params,
            "responses": {"200": {"description": "{\"data\": [call_record], \"meta\": {...}}",
                                  "content": {"application/json": {"schema": {"type": "object", "properties": {
                                      "data": {"type": "array", "items": {"$ref": "#/components/schemas/CallRecord"}},
                                      "meta": {"type": "object"}}}}}},
                          "400": error_response("Bad parameter (source.parameter names it)")}
        }}),
    );
    paths.insert(
        "/v2/status".into(),
        json!({"get": {"summary": "The box at a glance: node, version, uptime, memory, disk (free, low), calls now and in the last hour (ended, failed = never answered), webhook queue, upload queue",
                       "responses": {"200": {"description": "{\"data\": {node, version, started_at, uptime_seconds, memory, disk, calls, webhooks, uploads}}"}}}}),
    );
    paths.insert(
        "/v2/trunks".into(),
        json!({"get": {"summary": "Trunks in config order with registration state (registering | registered | failed | not_registering), last error, last INVITE and last OPTIONS keepalive seen; no passwords",
                       "responses": {"200": {"description": "{\"data\": [{name, provider, proxy, register, registration, numbers, inbound_allow, last_invite_at, last_options: null | {at, source}, seen_since_start: {options, invites}}]}"}}}}),
    );
    paths.insert(
        "/v2/routes".into(),
        json!({"get": {"summary": "Routes in config order (first match wins): numbers and target (agent | room | room_per_caller | forward | park); a PIN shows as pin_set",
                       "responses": {"200": {"description": "{\"data\": [{index, name, trunk, to, from, target: {type, name}, record, ring_for_ms, pin_set}]}"}}}}),
    );
    paths.insert(
        "/v2/routes/{index}/test".into(),
        json!({"post": {"summary": "Place a short test call to one route (by its index) through the box's own SIP listener, and report what happened once it has ended (result, sip_response, setup_ms, talk_ms, media that came back, the events of every leg). The calling side sends silence; an agent route's agent gets a real stream, a forward route dials its trunk.",
                        "parameters": [{"name": "index", "in": "path", "required": true, "schema": {"type": "integer", "minimum": 0}}],
                        "requestBody": {"required": false, "content": {"application/json": {"schema": {"type": "object", "properties": {
                            "to": {"type": "string", "description": "number to dial (default: the route's number; required for a forward route matching a prefix)"},
                            "from": {"type": "string", "description": "caller number (default: route-test; a forward: the far trunk's first number)"},
                            "talk_secs": {"type": "integer", "minimum": 1, "maximum": 30, "description": "how long the answered call lasts (default 5)"}}}}}},
                        "responses": {"200": {"description": "{\"data\": {route, to, from, call_session_id, call_control_id, result: answered | not_answered | refused | incomplete, summary, sip_response, setup_ms, talk_ms, hangup_cause, hangup_source, media: {packets_received, packets_lost, jitter_max_ms, mos}, events: [...], tested_at}}"},
                                      "400": error_response("Bad index or body field"), "404": error_response("No such route"),
                                      "422": error_response("Nothing to dial (forward route matching a prefix), or no UDP/TCP SIP listener"),
                                      "429": error_response("Two route tests are already running"), "503": error_response("No capacity or RTP ports")}}}),
    );
    paths.insert(
        "/v2/webhooks/retry_dead".into(),
        json!({"post": {"summary": "Requeue every dead-lettered webhook event (as `sipbridge webhooks retry-dead`)",
                        "responses": {"200": {"description": "{\"data\": {\"requeued\": n}}"}, "500": error_response("The store could not be written")}}}),
    );
    paths.insert(
        "/v2/config".into(),
        json!({"get": {"summary": "The config in force (secrets masked: ****, at most the last 4 characters; durations as \"30s\") and the SIGHUP reloads since start (the errors of the last rejected one)",
                       "responses": {"200": {"description": "{\"data\": {\"path\", \"config\": {...}, \"reload\": {\"last_applied_at\", \"last_rejected\": null | {\"at\", \"errors\": [string]}}}}"}}}}),
    );
    paths.insert(
        "/console".into(),
        json!({"get": {"summary": "The technician's console (HTML; asks for the API token and keeps it in the tab's sessionStorage)", "security": [],
                       "responses": {"200": {"description": "text/html"}}}}),
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
            "schemas": {"CallRecord": call_record_schema(), "QualitySamples": quality_samples_schema(), "Errors": {"type": "object", "properties": {"errors": {"type": "array", "items": {
                "type": "object",
                "properties": {"code": {"type": "string"}, "title": {"type": "string"}, "detail": {"type": "string"},
                               "source": {"type": "object", "properties": {"pointer": {"type": "string"}, "parameter": {"type": "string"}}}}
            }}}}}
        },
        "paths": paths,
    })
}

/// `GET /v2/openapi.json`.
pub async fn serve() -> Json<Value> {
    Json(document())
}
