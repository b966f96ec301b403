//! Telnyx-style call identifiers (Telnyx Call Control, "call_control_id",
//! "call_leg_id", "call_session_id").
//!
//! - `call_control_id`: opaque handle for commands on one leg; Telnyx's start with
//!   `v3:` followed by URL-safe base64. Ours: `v3:` + 32 characters of URL-safe
//!   base64 of 24 random bytes.
//! - `call_leg_id`: UUID v4, one per leg.
//! - `call_session_id`: UUID v4 shared by all legs of one call (both legs of a
//!   forward, the agent stream of a call).

use base64::Engine;
use serde::Serialize;

/// The identifiers of one call leg.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct CallIds {
    /// Handle for API commands on this leg.
    pub call_control_id: String,
    /// This leg.
    pub call_leg_id: String,
    /// The session this leg belongs to.
    pub call_session_id: String,
}

impl CallIds {
    /// Ids for the first leg of a new session.
    pub fn new_session() -> Self {
        Self::new_leg(&uuid::Uuid::new_v4().to_string())
    }

    /// Ids for another leg of the session `call_session_id`.
    pub fn new_leg(call_session_id: &str) -> Self {
        let mut raw = [0u8; 24];
        raw[..16].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
        raw[16..].copy_from_slice(&uuid::Uuid::new_v4().as_bytes()[..8]);
        Self {
            call_control_id: format!("v3:{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)),
            call_leg_id: uuid::Uuid::new_v4().to_string(),
            call_session_id: call_session_id.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_have_telnyx_shapes_and_legs_share_the_session() {
        let a = CallIds::new_session();
        let b = CallIds::new_leg(&a.call_session_id);
        assert!(a.call_control_id.starts_with("v3:") && a.call_control_id.len() == 35);
        assert_ne!(a.call_control_id, b.call_control_id);
        assert_ne!(a.call_leg_id, b.call_leg_id);
        assert_eq!(a.call_session_id, b.call_session_id);
        assert!(uuid::Uuid::parse_str(&a.call_leg_id).is_ok());
    }
}
