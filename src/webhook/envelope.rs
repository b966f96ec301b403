//! Telnyx's webhook envelope and Ed25519 signature (PROTOCOLS.md §2), sans-IO.
//!
//! Body of every POST (`Content-Type: application/json`):
//!
//! ```json
//! {"data":{"record_type":"event","event_type":"call.hangup","id":"<uuid v4>",
//!          "occurred_at":"2026-11-22T08:30:00.123456Z","payload":{...}},
//!  "meta":{"attempt":1,"delivered_to":"https://backend/webhooks"}}
//! ```
//!
//! `data` is rendered once when the event is emitted and stored as text in the
//! outbox; `meta` changes with every attempt, so the body is assembled per attempt
//! around the stored `data` bytes. Headers (Telnyx docs, "Webhook signing";
//! the Telnyx SDKs' `webhooks.signature.verify`):
//! `telnyx-signature-ed25519` = base64 (standard, padded) of the 64-byte Ed25519
//! signature over the bytes `"{timestamp}|{body}"`, and `telnyx-timestamp` = the
//! same timestamp in Unix seconds. Receivers reject timestamps older than 5 minutes.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use ed25519_dalek::{Signer, SigningKey};
use serde::Serialize;

use crate::store::event::CallEvent;
use crate::store::timestamp;

/// Header carrying the base64 Ed25519 signature.
pub const SIGNATURE_HEADER: &str = "telnyx-signature-ed25519";
/// Header carrying the signing time, Unix seconds.
pub const TIMESTAMP_HEADER: &str = "telnyx-timestamp";

#[derive(Serialize)]
struct Data<'a> {
    record_type: &'static str,
    event_type: &'a str,
    id: String,
    occurred_at: String,
    payload: &'a serde_json::Map<String, serde_json::Value>,
}

/// JSON of the envelope's `data` object: `record_type` (`"event"`),
/// `event_type`, `id` (lowercase hyphenated UUID), `occurred_at` (RFC 3339 UTC
/// with microseconds, e.g. `2026-11-22T08:30:00.123456Z`), `payload`.
pub fn data_json(event: &CallEvent) -> String {
    let data = Data {
        record_type: "event",
        event_type: &event.event_type,
        id: event.id.hyphenated().to_string(),
        occurred_at: timestamp(event.occurred_at),
        payload: &event.payload,
    };
    // Serializing strings and a map of `Value`s cannot fail.
    serde_json::to_string(&data).unwrap_or_else(|_| String::from("{}"))
}

/// The full POST body around stored `data` JSON: `{"data":…,"meta":{"attempt":n,"delivered_to":url}}`.
/// `attempt` counts from 1 over every POST of this event, whatever the URL.
pub fn body(data_json: &str, attempt: u32, delivered_to: &str) -> String {
    let meta = serde_json::json!({ "attempt": attempt, "delivered_to": delivered_to });
    format!("{{\"data\":{data_json},\"meta\":{meta}}}")
}

/// The two signature headers of one POST.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature {
    /// `telnyx-timestamp`: Unix seconds.
    pub timestamp: u64,
    /// `telnyx-signature-ed25519`: base64 of the 64-byte signature.
    pub signature: String,
}

/// Signs `body` as sent at `now`: Ed25519 over `"{unix seconds}|{body}"`.
pub fn sign(key: &SigningKey, now: SystemTime, body: &[u8]) -> Signature {
    let timestamp = now.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let mut message = Vec::with_capacity(body.len() + 21);
    message.extend_from_slice(timestamp.to_string().as_bytes());
    message.push(b'|');
    message.extend_from_slice(body);
    let signature = base64::engine::general_purpose::STANDARD.encode(key.sign(&message).to_bytes());
    Signature { timestamp, signature }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::{Verifier, VerifyingKey};
    use std::time::Duration;

    fn event() -> CallEvent {
        let mut payload = serde_json::Map::new();
        payload.insert("call_control_id".into(), "v3:abc".into());
        payload.insert("hangup_cause".into(), "normal_clearing".into());
        CallEvent {
            id: uuid::Uuid::parse_str("8f0e5a3c-2b7d-4c1e-9a6f-0123456789ab").unwrap(),
            event_type: "call.hangup".into(),
            occurred_at: UNIX_EPOCH + Duration::from_micros(1_800_000_000_000_042),
            call_session_id: Some("sess".into()),
            payload,
            record: Default::default(),
            webhook_url: None,
        }
    }

    /// Telnyx's envelope and nothing else: what the event carries for the call
    /// record only (`CallEvent::record`, e.g. a leg's quality series) is not in it.
    #[test]
    fn envelope_has_telnyx_shape_exactly() {
        let samples = serde_json::json!({"interval": "rtcp", "points": [{"t_ms": 2500}]});
        let event = event().with_route("front desk").with_quality_samples(Some(samples));
        let data = data_json(&event);
        let b = body(&data, 3, "https://backend.example/hook");
        let v: serde_json::Value = serde_json::from_str(&b).unwrap();
        let expected = serde_json::json!({
            "data": {
                "record_type": "event",
                "event_type": "call.hangup",
                "id": "8f0e5a3c-2b7d-4c1e-9a6f-0123456789ab",
                "occurred_at": "2027-01-15T08:00:00.000042Z",
                "payload": {"call_control_id": "v3:abc", "hangup_cause": "normal_clearing"}
            },
            "meta": {"attempt": 3, "delivered_to": "https://backend.example/hook"}
        });
        assert_eq!(v, expected);
        assert!(b.starts_with("{\"data\":{\"record_type\":\"event\","), "data bytes are kept as stored: {b}");
    }

    #[test]
    fn delivered_to_is_json_escaped() {
        let b = body("{}", 1, "http://h/p?a=\"b\"");
        let v: serde_json::Value = serde_json::from_str(&b).unwrap();
        assert_eq!(v["meta"]["delivered_to"], "http://h/p?a=\"b\"");
    }

    #[test]
    fn signature_verifies_over_timestamp_pipe_body_and_nothing_else() {
        let key = SigningKey::from_bytes(&[7u8; 32]);
        let b = body(&data_json(&event()), 1, "http://x");
        let now = UNIX_EPOCH + Duration::from_millis(1_800_000_000_999);
        let s = sign(&key, now, b.as_bytes());
        assert_eq!(s.timestamp, 1_800_000_000);
        let raw = base64::engine::general_purpose::STANDARD.decode(&s.signature).unwrap();
        let sig = ed25519_dalek::Signature::from_slice(&raw).unwrap();
        let vk: VerifyingKey = key.verifying_key();
        vk.verify(format!("1800000000|{b}").as_bytes(), &sig).unwrap();
        assert!(vk.verify(format!("1800000001|{b}").as_bytes(), &sig).is_err(), "timestamp is signed");
        assert!(vk.verify(b.as_bytes(), &sig).is_err(), "body alone does not verify");
    }
}
