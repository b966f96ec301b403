//! Request bodies of the Telnyx-shaped commands: the JSON object and its typed
//! fields, each refused with a 400 that names it (`source.pointer`). Shared by
//! the call, conference, IVR and status handlers.

use serde_json::{Map, Value};

use super::error::ApiError;

/// The body as a JSON object (empty body = `{}`).
pub fn object(body: &[u8]) -> Result<Map<String, Value>, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(ApiError::bad_body("the body must be a JSON object")),
        Err(e) => Err(ApiError::bad_body(format!("the body is not valid JSON: {e}"))),
    }
}

/// An optional string field; 400 naming it when it has another type.
pub fn string(body: &Map<String, Value>, key: &str) -> Result<Option<String>, ApiError> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(ApiError::bad_field(&format!("/{key}"), format!("{key} must be a string, not {other}"))),
    }
}
