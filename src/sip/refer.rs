//! Blind transfer by SIP REFER (RFC 3515), as Telnyx's `refer` command: the box
//! sends REFER (`Refer-To: <sip_address>`) in the call's dialog; the peer accepts
//! it (202) and reports the new call's progress in NOTIFYs whose body is a
//! `message/sipfrag` status line (RFC 3420), e.g. `SIP/2.0 200 OK`.
//!
//! This file is the SIP side: sending the REFER ([`send`]) and reading the
//! NOTIFYs' sipfrag status ([`notify_status`]). What they mean for the call —
//! `call.refer.started`, `call.refer.completed`, `call.refer.failed` with
//! `sip_notify_response` (developers.telnyx.com, Call Commands → SIP Refer a
//! call) — is decided by the call core (`call::core`, `DialogInput::ReferAnswered`
//! and `ReferNotify`). The call itself stays up: the peer usually hangs up (BYE)
//! after a successful transfer.

use rsipstack::dialog::invite_dialog::InviteDialog;
use rsipstack::sip::{Header, Request};

use super::msg;

pub use crate::call::control::{Refer, check_address};

/// The status code of a `message/sipfrag` body (RFC 3420; RFC 3515 §2.4.5): its
/// first line `SIP/2.0 <code> <reason>`. `None` when it is not one.
pub fn sipfrag_status(body: &[u8]) -> Option<u16> {
    let line = std::str::from_utf8(body).ok()?.lines().next()?.trim();
    let mut parts = line.split_whitespace();
    if !parts.next()?.eq_ignore_ascii_case("SIP/2.0") {
        return None;
    }
    parts.next()?.parse().ok().filter(|c| (100..700).contains(c))
}

/// The REFER progress a NOTIFY carries: its sipfrag status when it is a NOTIFY
/// of the `refer` event package (RFC 3515 §2.4.4: `Event: refer`, possibly with
/// an `id` parameter); `None` for any other NOTIFY.
pub fn notify_status(req: &Request) -> Option<u16> {
    let event = msg::header(req, "Event", Some("o"))?;
    let package = event.split(';').next().unwrap_or_default().trim();
    if !package.eq_ignore_ascii_case("refer") {
        return None;
    }
    sipfrag_status(&req.body)
}

/// Sends the REFER in `dialog` and waits for its final response (bounded by the
/// transaction timer, 32 s): `Ok(status)` of that response (202 when accepted).
///
/// # Errors
/// The dialog is not confirmed, or the request could not be sent.
pub async fn send(dialog: &InviteDialog, refer: &Refer) -> Result<u16, String> {
    let headers: Vec<Header> = refer.headers.iter().map(|(n, v)| Header::Other(n.clone(), v.clone())).collect();
    match dialog.refer(format!("<{}>", refer.sip_address), Some(headers), None).await {
        Ok(Some(resp)) => Ok(u16::from(resp.status_code)),
        Ok(None) => Err("the call is not answered (no confirmed dialog to send REFER in)".into()),
        Err(e) => Err(format!("REFER could not be sent: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sipfrag_status_lines() {
        assert_eq!(sipfrag_status(b"SIP/2.0 200 OK\r\n"), Some(200));
        assert_eq!(sipfrag_status(b"SIP/2.0 100 Trying"), Some(100));
        assert_eq!(sipfrag_status(b"sip/2.0 486 Busy Here\r\nContent-Length: 0\r\n"), Some(486));
        assert_eq!(sipfrag_status(b"INVITE sip:a@b SIP/2.0"), None);
        assert_eq!(sipfrag_status(b"SIP/2.0 99 Nope"), None);
        assert_eq!(sipfrag_status(b""), None);
        assert_eq!(sipfrag_status(&[0xff, 0xfe]), None);
    }

    #[test]
    fn addresses_are_checked() {
        assert!(check_address("sip:+13125550199@10.0.0.9:5060").is_ok());
        assert!(check_address("sips:agent@pbx.example.com;transport=tls").is_ok());
        assert!(check_address("tel:+13125550199").is_err());
        assert!(check_address("sip:").is_err());
        assert!(check_address("sip:a@").is_err());
        assert!(check_address("sip:a@b> ;x").is_err());
    }
}
