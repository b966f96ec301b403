//! Outbound call legs (UAC, RFC 3261 §13.2): INVITE through a trunk's proxy with
//! our SDP offer, digest answers to 401/407 with the trunk's credentials (once;
//! a second challenge fails the call), 180/183 (183 with SDP = early media), ring
//! timeout → CANCEL (`no_answer`), final failures mapped to Telnyx hangup causes
//! with `sip_hangup_cause`, then the confirmed dialog until BYE.
//!
//! Callable from Rust ([`OutboundLeg::dial`]); the forward route (B2BUA) and, later,
//! the control API's `POST /v2/calls` use it.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rsipstack::dialog::authenticate::Credential;
use rsipstack::dialog::dialog::{DialogState, DialogStateReceiver, TerminatedReason};
use rsipstack::dialog::invitation::{InviteAsyncResult, InviteOption};
use rsipstack::dialog::invite_dialog::InviteDialog;
use rsipstack::sip::{Header, StatusCode};
use tokio::task::JoinHandle;

use super::{SipContext, addr};
use crate::call::session::{MediaSession, Reject};
use crate::call::{CallIds, CallInfo, CallState, CallStateMachine, Direction, Hangup, HangupCause, HangupSource};
use crate::config::Trunk;

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
    /// Extra headers (`X-...`) for the INVITE.
    pub headers: Vec<(String, String)>,
    /// Telnyx `client_state` to echo in events.
    pub client_state: Option<String>,
    /// Telnyx `webhook_url`: this leg's events go there instead of `[webhooks] url`.
    pub webhook_url: Option<String>,
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

/// What happened next on the leg.
#[derive(Debug, Clone, PartialEq)]
pub enum Progress {
    /// 180 Ringing (or 183 without SDP).
    Ringing,
    /// 183 with SDP: the far end's early media is negotiated.
    EarlyMedia,
    /// 200 OK (ACK sent): the call is up.
    Answered,
    /// The leg ended (failure before answer, or BYE after).
    Ended(Hangup),
}

/// One outbound leg.
pub struct OutboundLeg {
    /// Ids and numbers of this leg.
    pub info: CallInfo,
    /// The media of this leg (our offer, then the answer).
    pub media: MediaSession,
    /// The leg's dialog (REFER is sent in it).
    pub dialog: InviteDialog,
    states: DialogStateReceiver,
    invite: Option<JoinHandle<InviteAsyncResult>>,
    sm: CallStateMachine,
    ctx: Arc<SipContext>,
    ring_deadline: tokio::time::Instant,
    early_applied: bool,
    ended: bool,
}

impl OutboundLeg {
    /// Sends the INVITE; emits `call.initiated` (direction `outgoing`).
    pub async fn dial(ctx: &Arc<SipContext>, dial: Dial) -> Result<Self, DialError> {
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
        media.set_rtp_timeout(ctx.config.borrow().rtp.timeout);
        media.set_latch((&ctx.config.borrow().rtp).into());

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
        let headers: Vec<Header> = dial.headers.iter().map(|(n, v)| Header::Other(n.clone(), v.clone())).collect();
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
        ctx.events.emit(info.initiated("bridging"));
        Ok(Self {
            info,
            media,
            dialog,
            states,
            invite: Some(invite),
            sm: CallStateMachine::default(),
            ctx: Arc::clone(ctx),
            ring_deadline: tokio::time::Instant::now() + dial.ring_timeout,
            early_applied: false,
            ended: false,
        })
    }

    /// The leg's state.
    pub fn state(&self) -> CallState {
        self.sm.state()
    }

    /// Waits for the next change; after `Ended` it never resolves again.
    pub async fn progress(&mut self) -> Progress {
        loop {
            if self.ended {
                return std::future::pending().await;
            }
            let ringing = self.sm.state() < CallState::Answered;
            tokio::select! {
                st = self.states.recv() => {
                    let Some(st) = st else {
                        return self.end(Hangup { cause: HangupCause::Unspecified, source: HangupSource::Unknown, sip_code: 500 });
                    };
                    if let Some(p) = self.on_state(st).await {
                        return p;
                    }
                }
                r = async { match self.invite.as_mut() { Some(h) => h.await, None => std::future::pending().await } } => {
                    self.invite = None;
                    if let Ok(Ok((_, Some(resp)))) = r {
                        let code = resp.status_code.code();
                        if code >= 300 && self.sm.state() < CallState::Answered {
                            return self.end(Hangup { cause: HangupCause::from_sip_status(code), source: HangupSource::Callee, sip_code: code });
                        }
                    } else if let Ok(Err(e)) = r {
                        if self.sm.state() < CallState::Answered {
                            tracing::info!(call_control_id = %self.info.ids.call_control_id, error = %e, "INVITE failed");
                            return self.end(Hangup { cause: HangupCause::Timeout, source: HangupSource::Unknown, sip_code: 408 });
                        }
                    }
                }
                _ = tokio::time::sleep_until(self.ring_deadline), if ringing => {
                    tracing::info!(call_control_id = %self.info.ids.call_control_id, "not answered in time: CANCEL");
                    let _ = self.dialog.cancel().await;
                    return self.end(Hangup { cause: HangupCause::NoAnswer, source: HangupSource::Unknown, sip_code: 487 });
                }
            }
        }
    }

    async fn on_state(&mut self, st: DialogState) -> Option<Progress> {
        match st {
            DialogState::Early(_, resp) => {
                if !resp.body.is_empty() && !self.early_applied && self.media.apply_answer(&resp.body).is_ok() {
                    self.early_applied = true;
                    self.sm.ringing();
                    return Some(Progress::EarlyMedia);
                }
                self.sm.ringing().then_some(Progress::Ringing)
            }
            DialogState::Confirmed(_, resp) if self.sm.state() < CallState::Answered => {
                if !resp.body.is_empty() {
                    if let Err(Reject::NotAcceptable(why) | Reject::Malformed(why)) =
                        self.media.apply_answer(&resp.body)
                    {
                        tracing::warn!(call_control_id = %self.info.ids.call_control_id, "unusable SDP answer: {why}: BYE");
                        let _ = self.dialog.bye().await;
                        return Some(self.end(Hangup {
                            cause: HangupCause::CallRejected,
                            source: HangupSource::Unknown,
                            sip_code: 488,
                        }));
                    }
                }
                self.sm.answered();
                tracing::info!(call_control_id = %self.info.ids.call_control_id, "answered");
                self.ctx.events.emit(self.info.answered());
                Some(Progress::Answered)
            }
            DialogState::Updated(_, req, handle) => {
                let (status, body) = if req.body.is_empty() {
                    (StatusCode::OK, (req.method == rsipstack::sip::Method::Invite).then(|| self.media.current_sdp()))
                } else {
                    match self.media.reoffer(&req.body) {
                        Ok(sdp) => (StatusCode::OK, Some(sdp)),
                        Err(_) => (StatusCode::NotAcceptableHere, None),
                    }
                };
                let h = body.as_ref().map(|_| vec![Header::ContentType("application/sdp".into())]);
                let _ = handle.respond(status, h, body).await;
                None
            }
            DialogState::Info(_, _, handle) | DialogState::Options(_, _, handle) => {
                let _ = handle.reply(StatusCode::OK).await;
                None
            }
            DialogState::Notify(_, req, handle) => {
                let _ = handle.reply(StatusCode::OK).await;
                super::refer::on_notify(&self.ctx, &self.info, &req);
                None
            }
            DialogState::Refer(_, _, handle) | DialogState::Message(_, _, handle) => {
                let _ = handle.reply(StatusCode::Decline).await;
                None
            }
            DialogState::Terminated(_, reason) => {
                let answered = self.sm.state() == CallState::Answered;
                let h = match reason {
                    TerminatedReason::UasBye => {
                        Hangup { cause: HangupCause::NormalClearing, source: HangupSource::Callee, sip_code: 200 }
                    }
                    TerminatedReason::UacBye => {
                        Hangup { cause: HangupCause::NormalClearing, source: HangupSource::Caller, sip_code: 200 }
                    }
                    TerminatedReason::UacCancel => {
                        Hangup { cause: HangupCause::OriginatorCancel, source: HangupSource::Caller, sip_code: 487 }
                    }
                    TerminatedReason::UasBusy | TerminatedReason::UacBusy => {
                        Hangup { cause: HangupCause::UserBusy, source: HangupSource::Callee, sip_code: 486 }
                    }
                    TerminatedReason::UasDecline => {
                        Hangup { cause: HangupCause::CallRejected, source: HangupSource::Callee, sip_code: 603 }
                    }
                    TerminatedReason::ProxyAuthRequired => {
                        Hangup { cause: HangupCause::CallRejected, source: HangupSource::Callee, sip_code: 407 }
                    }
                    TerminatedReason::Timeout if !answered => {
                        Hangup { cause: HangupCause::Timeout, source: HangupSource::Unknown, sip_code: 408 }
                    }
                    TerminatedReason::Timeout => {
                        Hangup { cause: HangupCause::Timeout, source: HangupSource::Unknown, sip_code: 408 }
                    }
                    TerminatedReason::ProxyError(c) | TerminatedReason::UacOther(c) | TerminatedReason::UasOther(c) => {
                        let code = c.code();
                        Hangup {
                            cause: HangupCause::from_sip_status(code),
                            source: HangupSource::Callee,
                            sip_code: code,
                        }
                    }
                };
                Some(self.end(h))
            }
            _ => None,
        }
    }

    fn end(&mut self, h: Hangup) -> Progress {
        self.ended = true;
        let h = self.sm.end(h).or(self.sm.hangup()).unwrap_or(h);
        Progress::Ended(h)
    }

    /// CANCEL before answer or BYE after; the leg then ends with `cause` from us.
    pub async fn hangup(&mut self, cause: HangupCause) -> Hangup {
        let h = if self.sm.state() == CallState::Answered {
            let _ = self.dialog.bye().await;
            Hangup { cause, source: HangupSource::Caller, sip_code: 200 }
        } else {
            let _ = self.dialog.cancel().await;
            Hangup { cause, source: HangupSource::Caller, sip_code: 487 }
        };
        match self.end(h) {
            Progress::Ended(h) => h,
            _ => h,
        }
    }

    /// Final bookkeeping: emits `call.hangup` for this leg (waiting until it is
    /// committed) and forgets the dialog.
    pub async fn finish(&mut self, quality: Option<serde_json::Value>) {
        let h = self.sm.hangup().unwrap_or(Hangup {
            cause: HangupCause::Unspecified,
            source: HangupSource::Unknown,
            sip_code: 500,
        });
        self.ctx.dialogs.remove_dialog(&self.dialog.id());
        if let Some(inv) = self.invite.take() {
            inv.abort();
        }
        tracing::info!(
            call_control_id = %self.info.ids.call_control_id,
            cause = h.cause.as_str(), source = h.source.as_str(), sip_code = h.sip_code,
            "hangup"
        );
        // Durable before the leg counts as finished (and its permit is released).
        let _ = self.ctx.events.emit_durable(self.info.hangup(h, SystemTime::now(), quality)).await;
    }
}
