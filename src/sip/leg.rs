//! One call leg's signalling, as the call core sees it: the thin adapter between
//! rsipstack's INVITE dialog and `call::core`. [`SipLeg::next`] turns dialog
//! states into [`DialogInput`]s (answering in-dialog requests that need no
//! decision of the call on the way: re-INVITE/UPDATE with the leg's media,
//! OPTIONS, INFO, NOTIFY of a REFER, REFER/MESSAGE declined); [`SipLeg::send`]
//! carries out a [`SipOut`].
//!
//! The UAC side also owns the INVITE transaction: its final failure, the ring
//! timeout (CANCEL, `no_answer`) and applying the SDP answer (early or final).

use std::sync::Arc;
use std::time::Duration;

use rsipstack::dialog::dialog::{DialogState, DialogStateReceiver, TerminatedReason};
use rsipstack::dialog::invitation::InviteAsyncResult;
use rsipstack::dialog::invite_dialog::InviteDialog;
use rsipstack::sip::{Header, StatusCode};
use tokio::task::JoinHandle;

use super::{SipContext, msg};
use crate::call::CallInfo;
use crate::call::control::Refer;
use crate::call::core::{DialogInput, Role, SipOut, Termination};
use crate::call::shell::Signalling;
use crate::media::session::{MediaSession, Reject};

/// How long a CANCELed INVITE is given for its final response (487, or a 2xx
/// that crossed the CANCEL): 64·T1, after which RFC 3261 §9.1 lets the UAC
/// consider it ended (a far end that sent 18x and went silent would otherwise
/// hold it to Timer C, 180 s).
const CANCELED_INVITE_WAIT: Duration = Duration::from_secs(32);

/// A leg's dialog, its state channel and its media.
pub struct SipLeg {
    /// UAS (the box answered) or UAC (the box dialled).
    pub role: Role,
    /// The INVITE dialog (REFER is sent in it).
    pub dialog: InviteDialog,
    states: DialogStateReceiver,
    /// The leg's media: our answer (UAS) or offer (UAC).
    pub media: MediaSession,
    /// UAS: our SDP answer (180/183/200 carry it).
    answer_sdp: Vec<u8>,
    /// UAC: the INVITE's transaction, until its final response.
    invite: Option<JoinHandle<InviteAsyncResult>>,
    /// UAC: when the box gives up ringing (CANCEL, `no_answer`).
    ring_deadline: Option<tokio::time::Instant>,
    early_applied: bool,
    confirmed: bool,
    /// The dialog reported its end: nothing more will come.
    ended: bool,
    /// The box sent its BYE or CANCEL: its transaction runs on a task of its
    /// own, and the call does not wait for it.
    ending_sent: bool,
    ctx: Arc<SipContext>,
}

impl SipLeg {
    /// A UAS leg: the server dialog of a received INVITE and our SDP answer.
    pub fn server(
        ctx: Arc<SipContext>,
        dialog: InviteDialog,
        states: DialogStateReceiver,
        media: MediaSession,
        answer_sdp: Vec<u8>,
    ) -> Self {
        Self {
            role: Role::Uas,
            dialog,
            states,
            media,
            answer_sdp,
            invite: None,
            ring_deadline: None,
            early_applied: false,
            confirmed: false,
            ended: false,
            ending_sent: false,
            ctx,
        }
    }

    /// A UAC leg: the client dialog of an INVITE the box sent.
    pub fn client(
        ctx: Arc<SipContext>,
        dialog: InviteDialog,
        states: DialogStateReceiver,
        media: MediaSession,
        invite: JoinHandle<InviteAsyncResult>,
        ring_timeout: Duration,
    ) -> Self {
        Self {
            role: Role::Uac,
            dialog,
            states,
            media,
            answer_sdp: Vec::new(),
            invite: Some(invite),
            ring_deadline: Some(tokio::time::Instant::now() + ring_timeout),
            early_applied: false,
            confirmed: false,
            ended: false,
            ending_sent: false,
            ctx,
        }
    }

    /// The next thing the dialog reports for the call; pending forever once the
    /// dialog has ended. `info` names the leg in refer events and logs.
    pub async fn next(&mut self, info: &CallInfo) -> DialogInput {
        loop {
            if self.ended {
                return std::future::pending().await;
            }
            let ringing = self.ring_deadline.filter(|_| !self.confirmed);
            tokio::select! {
                st = self.states.recv() => {
                    let Some(st) = st else {
                        self.ended = true;
                        return DialogInput::Gone;
                    };
                    // Boxed while it runs: this future is rebuilt for every turn of
                    // the shell's loop and sits in it twice (near and far leg) for
                    // the whole call, and handling a state (1.4 KiB of future) is
                    // rare (issue 20: memory per call).
                    if let Some(input) = Box::pin(self.on_state(st, info)).await {
                        return input;
                    }
                }
                r = async { match self.invite.as_mut() { Some(h) => h.await, None => std::future::pending().await } } => {
                    self.invite = None;
                    if self.confirmed {
                        continue;
                    }
                    match r {
                        Ok(Ok((_, Some(resp)))) if resp.status_code.code() >= 300 => {
                            self.ended = true;
                            return DialogInput::Terminated(Termination::Status(resp.status_code.code()));
                        }
                        Ok(Err(e)) => {
                            tracing::info!(call_control_id = %info.ids.call_control_id, error = %e, "INVITE failed");
                            self.ended = true;
                            return DialogInput::Terminated(Termination::Timeout);
                        }
                        _ => {}
                    }
                }
                _ = tokio::time::sleep_until(ringing.unwrap_or_else(tokio::time::Instant::now)), if ringing.is_some() => {
                    tracing::info!(call_control_id = %info.ids.call_control_id, "not answered in time: CANCEL");
                    self.ring_deadline = None;
                    self.cancel_in_background(info);
                    self.ended = true;
                    return DialogInput::Terminated(Termination::NoAnswer);
                }
            }
        }
    }

    async fn on_state(&mut self, st: DialogState, info: &CallInfo) -> Option<DialogInput> {
        match st {
            DialogState::Early(_, resp) if self.role == Role::Uac => {
                if !resp.body.is_empty() && !self.early_applied && self.media.apply_answer(&resp.body).is_ok() {
                    self.early_applied = true;
                    return Some(DialogInput::EarlyMedia);
                }
                Some(DialogInput::Ringing)
            }
            DialogState::Confirmed(_, resp) if self.role == Role::Uac => {
                if self.confirmed {
                    return None;
                }
                self.confirmed = true;
                if !resp.body.is_empty() {
                    if let Err(Reject::NotAcceptable(why) | Reject::Malformed(why)) =
                        self.media.apply_answer(&resp.body)
                    {
                        tracing::warn!(call_control_id = %info.ids.call_control_id, "unusable SDP answer: {why}: BYE");
                        self.bye_in_background(info);
                        self.ended = true;
                        return Some(DialogInput::AnswerUnusable);
                    }
                }
                // RFC 4028 §7.2: the 200 OK's Session-Expires names the interval
                // and the refresher (the UAC, unless it says uas).
                let session_timer = msg::session_expires_of_response(&resp)
                    .map(|(secs, refresher)| (secs, refresher.as_deref() != Some("uas")));
                Some(DialogInput::Confirmed { session_timer })
            }
            DialogState::Confirmed(..) => {
                if self.confirmed {
                    return None;
                }
                self.confirmed = true;
                Some(DialogInput::Confirmed { session_timer: None })
            }
            DialogState::Updated(_, req, handle) => {
                // re-INVITE or UPDATE: hold/resume, codec change, session refresh.
                let (status, body) = if req.body.is_empty() {
                    (StatusCode::OK, (req.method == rsipstack::sip::Method::Invite).then(|| self.media.current_sdp()))
                } else {
                    match self.media.reoffer(&req.body) {
                        Ok(sdp) => (StatusCode::OK, Some(sdp)),
                        Err(_) => (StatusCode::NotAcceptableHere, None),
                    }
                };
                let refresh = msg::session_expires(&req);
                let mut h = Vec::new();
                if body.is_some() {
                    h.push(Header::ContentType("application/sdp".into()));
                }
                if let Some((se, _)) = &refresh {
                    h.push(Header::SessionExpires(format!("{se};refresher=uac").into()));
                    h.push(Header::Require("timer".into()));
                }
                let ok = status == StatusCode::OK;
                let _ = handle.respond(status, Some(h), body).await;
                ok.then_some(DialogInput::Refreshed { session_expires: refresh.map(|(se, _)| se) })
            }
            DialogState::Info(_, req, handle) => {
                let ct = msg::header(&req, "Content-Type", Some("c")).unwrap_or_default().to_ascii_lowercase();
                let dtmf = ct.starts_with("application/dtmf-relay") || ct.starts_with("application/dtmf");
                let _ = handle.reply(if dtmf { StatusCode::OK } else { StatusCode::UnsupportedMediaType }).await;
                if dtmf { msg::dtmf_from_info(&req.body).map(DialogInput::Dtmf) } else { None }
            }
            DialogState::Options(_, _, handle) | DialogState::Publish(_, _, handle) => {
                let _ = handle.reply(StatusCode::OK).await;
                None
            }
            DialogState::Refer(_, _, handle) | DialogState::Message(_, _, handle) => {
                let _ = handle.reply(StatusCode::Decline).await;
                None
            }
            DialogState::Notify(_, req, handle) => {
                let _ = handle.reply(StatusCode::OK).await;
                super::refer::notify_status(&req).map(DialogInput::ReferNotify)
            }
            DialogState::Terminated(_, reason) => {
                self.ended = true;
                Some(DialogInput::Terminated(termination(&reason)))
            }
            _ => None,
        }
    }

    /// Carries out what the core asked of this leg.
    pub async fn send(&mut self, out: SipOut, info: &CallInfo) -> Result<(), String> {
        let sdp = || Header::ContentType("application/sdp".into());
        let r = match out {
            SipOut::Ringing { early_media: false } => self.dialog.ringing(None, None).map_err(|e| e.to_string()),
            SipOut::Ringing { early_media: true } => {
                self.dialog.ringing(Some(vec![sdp()]), Some(self.answer_sdp.clone())).map_err(|e| e.to_string())
            }
            SipOut::Accept { session_expires } => {
                let mut headers = vec![sdp()];
                // RFC 4028 §9: the UAS echoes the interval; the caller refreshes.
                if let Some(se) = session_expires {
                    headers.push(Header::SessionExpires(format!("{se};refresher=uac").into()));
                    headers.push(Header::Require("timer".into()));
                }
                self.dialog.accept(Some(headers), Some(self.answer_sdp.clone())).map_err(|e| e.to_string())
            }
            SipOut::Reject(code) => self.dialog.reject(Some(StatusCode::from(code)), None).map_err(|e| e.to_string()),
            SipOut::Bye => {
                self.bye_in_background(info);
                Ok(())
            }
            SipOut::Cancel => {
                self.cancel_in_background(info);
                Ok(())
            }
            SipOut::Refresh { session_expires } => {
                let headers = vec![
                    sdp(),
                    Header::SessionExpires(format!("{session_expires};refresher=uac").into()),
                    Header::Supported("timer".into()),
                ];
                let body = self.media.current_sdp();
                match tokio::time::timeout(Duration::from_secs(32), self.dialog.reinvite(Some(headers), Some(body)))
                    .await
                {
                    Ok(Ok(Some(resp))) if resp.status_code.code() < 300 => Ok(()),
                    Ok(Ok(Some(resp))) => Err(format!("session refresh answered {}", resp.status_code.code())),
                    Ok(Ok(None)) => Err("session refresh: the dialog is not confirmed".into()),
                    Ok(Err(e)) => Err(format!("session refresh failed: {e}")),
                    Err(_) => Err("session refresh not answered in 32 s".into()),
                }
            }
        };
        if let Err(e) = &r {
            tracing::debug!(call_control_id = %info.ids.call_control_id, "{e}");
        }
        r
    }

    /// Sends the box's BYE on a task of its own ([`SipContext::endings`]): a BYE
    /// nobody answers is retransmitted until Timer F (32 s, RFC 3261
    /// §17.1.2.2), and the call's end (`call.hangup`, its record, its permit)
    /// must not wait for a peer that is gone (the usual cause of an RTP
    /// timeout). The stack's stop waits for it, briefly.
    fn bye_in_background(&mut self, info: &CallInfo) {
        self.ending_sent = true;
        let (dialog, id) = (self.dialog.clone(), info.ids.call_control_id.clone());
        self.ctx.endings.spawn(async move { bye(&dialog, &id).await });
    }

    /// CANCELs the INVITE the box sent (RFC 3261 §9.1) on a task of its own, as
    /// [`Self::bye_in_background`] does a BYE: neither the caller's final
    /// response nor the call's end waits for the CANCEL's answer. The task then
    /// gives the INVITE [`CANCELED_INVITE_WAIT`] for its final response, and
    /// ends a session the far end answered anyway:
    /// - a 2xx after the CANCEL was marked: rsipstack ACKs it and sends the BYE
    ///   (`bye_2xx_of_cancelled`);
    /// - a 2xx processed before it (the dialog was already Confirmed when the
    ///   CANCEL ran, which then sent nothing): this task sends the BYE and
    ///   forgets the dialog.
    ///
    /// An INVITE with no final response by then is dropped: rsipstack's guard
    /// keeps it to its own 64·T1 and removes its early registry entry.
    fn cancel_in_background(&mut self, info: &CallInfo) {
        self.ending_sent = true;
        self.ring_deadline = None;
        let invite = self.invite.take();
        let (dialog, dialogs) = (self.dialog.clone(), Arc::clone(&self.ctx.dialogs));
        let id = info.ids.call_control_id.clone();
        self.ctx.endings.spawn(async move {
            // Decided under the dialog's state lock: either a later 2xx sees
            // the CANCEL, or the CANCEL sees the Confirmed dialog.
            if let Err(e) = dialog.cancel().await {
                tracing::info!(call_control_id = %id, "CANCEL failed or not answered: {e}");
            }
            if let Some(invite) = invite {
                let abort = invite.abort_handle();
                if tokio::time::timeout(CANCELED_INVITE_WAIT, invite).await.is_err() {
                    abort.abort();
                }
            }
            if matches!(dialog.state(), DialogState::Confirmed(..)) {
                tracing::info!(call_control_id = %id, "answered as it was CANCELed: BYE");
                bye(&dialog, &id).await;
                dialogs.remove_dialog(&dialog.id());
            }
        });
    }

    /// After the call: waits briefly for the dialog's own end (the final
    /// response, the peer's BYE answered), then forgets it. Not after the box's
    /// own BYE or CANCEL: their tasks see them through without the call. An
    /// INVITE still pending without a CANCEL is dropped: rsipstack's guard
    /// CANCELs it.
    pub async fn finish(&mut self) {
        if let Some(inv) = self.invite.take() {
            inv.abort();
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
        while !self.ended && !self.ending_sent {
            match tokio::time::timeout_at(deadline, self.states.recv()).await {
                Ok(Some(DialogState::Terminated(..))) | Ok(None) | Err(_) => break,
                Ok(Some(_)) => {}
            }
        }
        self.ctx.dialogs.remove_dialog(&self.dialog.id());
    }
}

/// The box's BYE in `dialog`, to its end (answered, or Timer F); a failure is
/// logged, as the call it ended has already moved on.
async fn bye(dialog: &InviteDialog, call_control_id: &str) {
    if let Err(e) = dialog.bye().await {
        tracing::info!(%call_control_id, "BYE failed or not answered: {e}");
    }
}

impl Signalling for SipLeg {
    async fn next(&mut self, info: &CallInfo) -> DialogInput {
        SipLeg::next(self, info).await
    }

    async fn send(&mut self, out: SipOut, info: &CallInfo) -> Result<(), String> {
        SipLeg::send(self, out, info).await
    }

    async fn refer(&self, _info: &CallInfo, refer: &Refer) -> Result<u16, String> {
        super::refer::send(&self.dialog, refer).await
    }

    async fn finish(&mut self) {
        SipLeg::finish(self).await
    }

    fn media(&mut self) -> &mut MediaSession {
        &mut self.media
    }
}

/// rsipstack's end of a dialog in the core's terms.
fn termination(r: &TerminatedReason) -> Termination {
    match r {
        TerminatedReason::UacBye => Termination::UacBye,
        TerminatedReason::UasBye => Termination::UasBye,
        TerminatedReason::UacCancel => Termination::UacCancel,
        TerminatedReason::Timeout => Termination::Timeout,
        TerminatedReason::UacBusy | TerminatedReason::UasBusy => Termination::Busy,
        TerminatedReason::UasDecline => Termination::Decline,
        TerminatedReason::ProxyAuthRequired => Termination::AuthRequired,
        TerminatedReason::ProxyError(c) | TerminatedReason::UacOther(c) | TerminatedReason::UasOther(c) => {
            Termination::Status(c.code())
        }
    }
}
