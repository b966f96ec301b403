//! Outbound call legs (UAC, RFC 3261 §13.2): INVITE through a trunk's proxy with
//! our SDP offer, digest answers to 401/407 with the trunk's credentials (once;
//! a second challenge fails the call), 180/183 (183 with SDP = early media), ring
//! timeout → CANCEL (`no_answer`), final failures mapped to Telnyx hangup causes
//! with `sip_hangup_cause`, then the confirmed dialog until BYE.
//!
//! [`dial`] sends the INVITE; the leg's dialog is then followed by
//! [`SipLeg`] in the call's shell. The forward route (B2BUA) and the control
//! API's `POST /v2/calls` use it.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rsipstack::dialog::authenticate::Credential;
use rsipstack::dialog::invitation::InviteOption;
use rsipstack::sip::Header;

use super::leg::SipLeg;
use super::{SipContext, addr};
use crate::call::{CallIds, CallInfo, Direction};
use crate::config::Trunk;
use crate::media::session::MediaSession;

/// What to dial.
#[derive(Debug, Clone)]
pub struct Dial {
    /// The trunk to send the INVITE through (its `proxy`, credentials, codecs).
    pub trunk: Trunk,
    /// Caller number (From user part).
    pub from: String,
    /// Callee number (Request-URI user part).
    pub to: String,
    /// Give up (CANCEL, `no_answer`) when not answered within this.
    pub ring_timeout: Duration,
    /// Join this call session (B2BUA legs share it); `None` starts a new one.
    pub call_session_id: Option<String>,
    /// Extra headers (`X-...`) for the INVITE; also the leg's `custom_headers`
    /// in `call.initiated`.
    pub headers: Vec<(String, String)>,
    /// Headers for the INVITE only: never in events or call records (the route
    /// test's key, `route_test`).
    pub private_headers: Vec<(String, String)>,
    /// Telnyx `client_state` to echo in events.
    pub client_state: Option<String>,
    /// Telnyx `webhook_url`: this leg's events go there instead of `[webhooks] url`.
    pub webhook_url: Option<String>,
    /// RFC 4028: ask the far end for this session interval (seconds;
    /// `Session-Expires` with `Supported: timer`); a B2BUA passes the caller's on.
    pub session_expires: Option<u64>,
}

/// Why a leg could not even be started.
#[derive(Debug, thiserror::Error)]
pub enum DialError {
    /// The trunk has no proxy to send to.
    #[error("trunk {0} has no proxy")]
    NoProxy(String),
    /// No RTP ports.
    #[error("no RTP ports left")]
    NoPorts,
    /// `to` or `from` is not a plain SIP user / dial string ([`super::dialstring`]).
    #[error("{0}")]
    BadNumber(String),
    /// rsipstack refused to build or send the INVITE.
    #[error("cannot send INVITE: {0}")]
    Sip(String),
}

/// Sends the INVITE; emits `call.initiated` (direction `outgoing`). Returns the
/// leg's ids and its signalling (the shell follows it from here).
///
/// # Errors
/// No proxy on the trunk, a number that is not a dial string, no RTP ports, or
/// rsipstack could not build or send the INVITE.
pub async fn dial(ctx: &Arc<SipContext>, dial: Dial) -> Result<(CallInfo, SipLeg), DialError> {
    let proxy = dial.trunk.proxy.clone().ok_or_else(|| DialError::NoProxy(dial.trunk.name.clone()))?;
    // Numbers become URI user parts: nothing that could add a host, a parameter
    // or a header may pass (issue 17: toll fraud through a smuggled host).
    for (what, v) in [("to", &dial.to), ("from", &dial.from)] {
        if !super::dialstring::is_user(v) {
            return Err(DialError::BadNumber(format!("{what} {v:?} is not a number or SIP user")));
        }
    }
    let port = proxy.port.unwrap_or(if proxy.secure { 5061 } else { 5060 });
    let peer_ip = tokio::net::lookup_host((proxy.host.as_str(), port))
        .await
        .ok()
        .and_then(|mut a| a.next())
        .map(|a| a.ip())
        .unwrap_or(std::net::IpAddr::from([127, 0, 0, 1]));
    let local_ip = match &ctx.public_address {
        crate::config::PublicAddress::Ip(ip) => *ip,
        _ => addr::local_ip_towards(peer_ip),
    };
    let (mut media, offer) =
        MediaSession::offer(&ctx.media, &dial.trunk.codecs, local_ip).map_err(|_| DialError::NoPorts)?;
    media.set_rtp_timeout(ctx.services.config.borrow().rtp.timeout);
    media.set_latch((&ctx.services.config.borrow().rtp).into());

    let transport = proxy.transport.map(|t| format!(";transport={t}")).unwrap_or_default();
    let host = if proxy.host.contains(':') { format!("[{}]", proxy.host) } else { proxy.host.clone() };
    let host_port = match proxy.port {
        Some(p) => format!("{host}:{p}"),
        None => host.clone(),
    };
    let scheme = if proxy.secure { "sips" } else { "sip" };
    let uri = |s: &str| rsipstack::sip::Uri::try_from(s).map_err(|e| DialError::Sip(format!("{s}: {e}")));
    let callee = uri(&format!("{scheme}:{}@{host_port}{transport}", super::dialstring::uri_user(&dial.to)))?;
    // The INVITE goes to the trunk's proxy, whatever the Request-URI says
    // (RFC 3261 §8.1.2 lets a UAC send to an outbound proxy): the destination is
    // pinned, not derived from a user part.
    let destination = uri(&format!("{scheme}:{host_port}{transport}"))
        .and_then(|u| rsipstack::transport::SipAddr::try_from(&u).map_err(|e| DialError::Sip(e.to_string())))?;
    let local_host = addr::advertised_host(&ctx.public_address, local_ip, peer_ip);
    let listener_port = ctx.listeners.first().map(|(_, a)| a.port()).unwrap_or(5060);
    let caller = uri(&format!("sip:{}@{local_host}", super::dialstring::uri_user(&dial.from)))?;
    let contact = uri(&format!("sip:sipbridge@{local_host}:{listener_port}"))?;
    let credential = match (&dial.trunk.username, &dial.trunk.password) {
        (Some(u), Some(p)) => Some(Credential {
            username: u.clone(),
            password: p.expose().to_string(),
            // Answered only to a challenge in this realm when the trunk names one
            // (`auth_realm`; rsipstack sipbridge patch 7); the challenge can only
            // come from the pinned proxy in any case.
            realm: dial.trunk.auth_realm.clone(),
            ..Default::default()
        }),
        _ => None,
    };
    let mut headers: Vec<Header> =
        dial.headers.iter().chain(&dial.private_headers).map(|(n, v)| Header::Other(n.clone(), v.clone())).collect();
    if let Some(se) = dial.session_expires {
        headers.push(Header::Supported("timer".into()));
        headers.push(Header::SessionExpires(se.to_string().into()));
    }
    let opt = InviteOption {
        caller,
        callee,
        contact,
        credential,
        content_type: Some("application/sdp".into()),
        offer: Some(offer),
        destination: Some(destination),
        headers: (!headers.is_empty()).then_some(headers),
        ..Default::default()
    };
    let (state_tx, states) = ctx.dialogs.new_dialog_state_channel();
    let (dialog, invite) = ctx.dialogs.do_invite_async(opt, state_tx).map_err(|e| DialError::Sip(e.to_string()))?;
    let ids = match &dial.call_session_id {
        Some(s) => CallIds::new_leg(s),
        None => CallIds::new_session(),
    };
    let info = CallInfo {
        ids,
        direction: Direction::Outgoing,
        from: dial.from.clone(),
        to: dial.to.clone(),
        connection_id: dial.trunk.name.clone(),
        sip_call_id: dialog.id().call_id.clone(),
        start_time: SystemTime::now(),
        client_state: dial.client_state.clone(),
        custom_headers: dial.headers.clone(),
        webhook_url: dial.webhook_url.clone(),
    };
    tracing::info!(
        call_control_id = %info.ids.call_control_id, trunk = %dial.trunk.name,
        from = %info.from, to = %info.to, "outgoing call"
    );
    ctx.services.events.emit(info.initiated("bridging"));
    Ok((info, SipLeg::client(Arc::clone(ctx), dialog, states, media, invite, dial.ring_timeout)))
}
