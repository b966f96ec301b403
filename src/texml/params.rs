//! The call's parameters in every request to the app server, in TwiML's names
//! (www.twilio.com/docs/voice/twiml#request-parameters), which Telnyx TeXML
//! sends too (developers.telnyx.com/docs/voice/programmable-voice/texml-fundamentals),
//! plus Telnyx's `CallSessionId`/`ConnectionId` and Exotel's `CallFrom`/`CallTo`
//! (its Passthru applet's names for `From`/`To`).
//!
//! Values: `CallSid` = `call_control_id` (the id the control API and the agent
//! streams' `callSid` use), `AccountSid` = `connection_id` (the trunk, as the
//! Twilio stream framing gives it), `ApiVersion` = `2010-04-01` (TwiML's),
//! `Direction` = `inbound`, `CallStatus` = `ringing` before the answer,
//! `in-progress` after, `completed` in `statusCallback`.

use crate::call::CallInfo;

/// TwiML's API version string.
pub const API_VERSION: &str = "2010-04-01";

/// The form fields of the call `info` with `CallStatus` `status`.
pub fn call(info: &CallInfo, status: &str) -> Vec<(String, String)> {
    let direction = if info.direction.as_str() == "incoming" { "inbound" } else { "outbound-api" };
    [
        ("CallSid", info.ids.call_control_id.as_str()),
        ("CallSessionId", info.ids.call_session_id.as_str()),
        ("AccountSid", info.connection_id.as_str()),
        ("ConnectionId", info.connection_id.as_str()),
        ("From", info.from.as_str()),
        ("To", info.to.as_str()),
        ("Called", info.to.as_str()),
        ("Caller", info.from.as_str()),
        ("CallStatus", status),
        ("Direction", direction),
        ("ApiVersion", API_VERSION),
        // Exotel's Passthru names of the same numbers.
        ("CallFrom", info.from.as_str()),
        ("CallTo", info.to.as_str()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::call::{CallIds, Direction};

    #[test]
    fn the_call_is_described_with_twiml_names() {
        let info = CallInfo {
            ids: CallIds::new_session(),
            direction: Direction::Incoming,
            from: "+13125550001".into(),
            to: "+13125550100".into(),
            connection_id: "carrier".into(),
            sip_call_id: "c".into(),
            start_time: std::time::SystemTime::now(),
            client_state: None,
            custom_headers: vec![],
            webhook_url: None,
        };
        let p = call(&info, "ringing");
        let get = |k: &str| p.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("CallSid"), Some(info.ids.call_control_id.as_str()));
        assert_eq!(get("AccountSid"), Some("carrier"));
        assert_eq!((get("From"), get("To")), (Some("+13125550001"), Some("+13125550100")));
        assert_eq!((get("CallFrom"), get("CallTo")), (Some("+13125550001"), Some("+13125550100")));
        assert_eq!(
            (get("CallStatus"), get("Direction"), get("ApiVersion")),
            (Some("ringing"), Some("inbound"), Some("2010-04-01"))
        );
    }
}
