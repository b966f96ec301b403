//! Forward routes (B2BUA): a call that arrived on one trunk leaves through another
//! (LiveKit outbound → Telnyx, Telnyx → LiveKit room). Both dialogs are tied:
//! 180/183 and the answer pass back to the caller, BYE and CANCEL propagate in both
//! directions, a final failure of the far leg is answered to the caller with the
//! same code. Media is anchored: the two legs are relayed by `media::bridge`
//! (pass-through, or PCMU↔PCMA by table), so the box can record it. Both legs share
//! one `call_session_id`; `call.bridged` is emitted when both are up.

use std::time::{Duration, SystemTime};

use rsipstack::dialog::dialog::{DialogState, DialogStateReceiver, TerminatedReason};
use rsipstack::sip::{Header, StatusCode};
use serde_json::json;

use super::inbound::InboundCall;
use super::outbound::{Dial, OutboundLeg, Progress};
use crate::call::control::{Action, ActionError};
use crate::call::session::Relay;
use crate::call::{CallState, CallStateMachine, Hangup, HangupCause, HangupSource};
use crate::daemon::lifecycle::CallPermit;
use crate::media::bridge::Side;
use crate::media::leg::LegEvent;

/// How long the far leg may ring before the box gives up (`no_answer`).
pub const RING_TIMEOUT: Duration = Duration::from_secs(60);

fn status(code: u16) -> StatusCode {
    StatusCode::from(code)
}

/// Runs a forwarded call to its end.
pub async fn run(
    mut call: InboundCall,
    mut states: DialogStateReceiver,
    answer: Vec<u8>,
    permit: CallPermit,
    trunk: String,
) {
    let ctx = call.ctx.clone();
    let mut sm = CallStateMachine::default();
    let id = call.dialog.id();
    let cfg = ctx.config.borrow().clone();
    let Some(far_trunk) = cfg.trunk(&trunk).cloned() else {
        let _ = call.dialog.reject(Some(StatusCode::ServiceUnavailable), None);
        finish_in(
            &mut call,
            &mut sm,
            Hangup { cause: HangupCause::Unspecified, source: HangupSource::Callee, sip_code: 503 },
            None,
        );
        drop(permit);
        return;
    };
    // Caller ID towards the far trunk: the caller's number, as the near trunk gave it.
    let dial = Dial {
        trunk: far_trunk,
        from: call.info.from.clone(),
        to: call.info.to.clone(),
        ring_timeout: RING_TIMEOUT,
        call_session_id: Some(call.info.ids.call_session_id.clone()),
        headers: call.info.custom_headers.clone(),
        client_state: None,
        webhook_url: None,
    };
    let mut far = match OutboundLeg::dial(&ctx, dial).await {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(call_control_id = %call.info.ids.call_control_id, "forward failed: {e}");
            let _ = call.dialog.reject(Some(StatusCode::ServiceUnavailable), None);
            finish_in(
                &mut call,
                &mut sm,
                Hangup { cause: HangupCause::Unspecified, source: HangupSource::Callee, sip_code: 503 },
                None,
            );
            drop(permit);
            return;
        }
    };
    let sdp_headers = || Some(vec![Header::ContentType("application/sdp".into())]);
    let mut relay: Option<Relay> = None;
    let hangup_all = ctx.hangup_all.clone();
    let mut bridged = false;
    let mut recording = None;

    // Until both sides end.
    let (near_end, far_quality_needed) = loop {
        tokio::select! {
            st = states.recv() => {
                let Some(st) = st else { break (Hangup { cause: HangupCause::Unspecified, source: HangupSource::Unknown, sip_code: 500 }, true) };
                match st {
                    DialogState::Confirmed(..) if sm.answered() => {
                        ctx.events.emit(call.info.answered());
                        if !bridged {
                            bridged = true;
                            emit_bridged(&call, &far);
                        }
                    }
                    DialogState::Updated(_, req, handle) => {
                        let (code, body) = if req.body.is_empty() {
                            (StatusCode::OK, (req.method == rsipstack::sip::Method::Invite).then(|| call.media.current_sdp()))
                        } else {
                            match call.media.reoffer(&req.body) {
                                Ok(sdp) => (StatusCode::OK, Some(sdp)),
                                Err(_) => (StatusCode::NotAcceptableHere, None),
                            }
                        };
                        let h = body.as_ref().map(|_| vec![Header::ContentType("application/sdp".into())]);
                        let _ = handle.respond(code, h, body).await;
                    }
                    DialogState::Notify(_, req, handle) => {
                        let _ = handle.reply(StatusCode::OK).await;
                        super::refer::on_notify(&ctx, &call.info, &req);
                    }
                    DialogState::Info(_, _, handle) | DialogState::Options(_, _, handle) => {
                        let _ = handle.reply(StatusCode::OK).await;
                    }
                    DialogState::Refer(_, _, handle) | DialogState::Message(_, _, handle) => {
                        let _ = handle.reply(StatusCode::Decline).await;
                    }
                    DialogState::Terminated(_, reason) => {
                        let h = match reason {
                            TerminatedReason::UacCancel => Hangup { cause: HangupCause::OriginatorCancel, source: HangupSource::Caller, sip_code: 487 },
                            TerminatedReason::UacBye => Hangup { cause: HangupCause::NormalClearing, source: HangupSource::Caller, sip_code: 200 },
                            TerminatedReason::Timeout => Hangup { cause: HangupCause::Timeout, source: HangupSource::Unknown, sip_code: 408 },
                            _ => Hangup { cause: HangupCause::NormalClearing, source: HangupSource::Callee, sip_code: 200 },
                        };
                        // The caller left: end the far leg the same way.
                        if far.state() != CallState::Hangup {
                            far.hangup(h.cause).await;
                        }
                        break (h, true);
                    }
                    _ => {}
                }
            }
            p = far.progress() => match p {
                Progress::Ringing => {
                    if sm.ringing() {
                        let _ = call.dialog.ringing(None, None);
                    }
                }
                Progress::EarlyMedia => {
                    // Early media: 183 with our answer to the caller, media relayed now.
                    sm.ringing();
                    let _ = call.dialog.ringing(sdp_headers(), Some(answer.clone()));
                    if relay.is_none() {
                        relay = Relay::start(&mut call.media, &mut far.media, crate::call::listen::call_tap(&call.control.listen, None));
                    }
                }
                Progress::Answered => {
                    call.control.update(|v| v.state = "answered".into());
                    recording = super::inbound::start_recording(&ctx, &call.route, &call.info);
                    let tap = crate::call::listen::call_tap(&call.control.listen, recording.as_ref().map(|r| r.tap()));
                    match relay.as_mut() {
                        None => relay = Relay::start(&mut call.media, &mut far.media, tap),
                        Some(r) => r.set_tap(tap).await,
                    }
                    if let Err(e) = call.dialog.accept(sdp_headers(), Some(answer.clone())) {
                        tracing::warn!(error = %e, "could not answer the caller");
                    }
                }
                Progress::Ended(h) => {
                    // The far side failed or hung up: the caller gets the same.
                    let near = if sm.state() == CallState::Answered || call.dialog.state().is_confirmed() {
                        let _ = call.dialog.bye().await;
                        Hangup { cause: h.cause, source: HangupSource::Callee, sip_code: 200 }
                    } else {
                        let code = if h.sip_code >= 300 { h.sip_code } else { 480 };
                        let _ = call.dialog.reject(Some(status(code)), None);
                        Hangup { cause: h.cause, source: HangupSource::Callee, sip_code: code }
                    };
                    break (near, true);
                }
            },
            ev = async { match relay.as_mut() { Some(r) => r.next_event().await, None => std::future::pending().await } } => {
                match ev {
                    (side, LegEvent::Dtmf(d)) => {
                        let info = if side == Side::A { &call.info } else { &far.info };
                        let mut p = info.payload("answered");
                        p.insert("digit".into(), json!(d.to_string()));
                        ctx.events.emit(info.event("call.dtmf.received", p));
                    }
                    (_, LegEvent::PlaybackDone { .. }) => {}
                    (side, LegEvent::Timeout(after)) => {
                        tracing::info!(call_control_id = %call.info.ids.call_control_id, ?side, "no RTP for {}s: hanging up both legs", after.as_secs());
                        let _ = call.dialog.bye().await;
                        far.hangup(HangupCause::Timeout).await;
                        break (Hangup { cause: HangupCause::Timeout, source: HangupSource::Unknown, sip_code: 200 }, true);
                    }
                }
            }
            cmd = call.control.next() => {
                let result = match cmd.action {
                    Action::Hangup => {
                        far.hangup(HangupCause::NormalClearing).await;
                        if sm.state() == CallState::Answered || call.dialog.state().is_confirmed() {
                            let _ = call.dialog.bye().await;
                        } else {
                            let _ = call.dialog.reject(Some(StatusCode::TemporarilyUnavailable), None);
                        }
                        let _ = cmd.reply.send(Ok(()));
                        break (Hangup { cause: HangupCause::NormalClearing, source: HangupSource::Callee, sip_code: 200 }, true);
                    }
                    Action::ClientState(state) => {
                        call.info.client_state = state.clone();
                        call.control.update(|v| v.info.client_state = state);
                        Ok(())
                    }
                    Action::Mute(m) => call.media.mute_inbound(m).map_err(ActionError::invalid),
                    Action::SendDtmf { .. } => Err(ActionError::invalid(
                        "this call is bridged to another leg: DTMF from either side is relayed end to end",
                    )),
                    Action::StreamingStart(_) | Action::StreamingStop => {
                        Err(ActionError::invalid("streaming is not available on a forwarded call"))
                    }
                    Action::PlaybackStart { .. } | Action::PlaybackStop => {
                        Err(ActionError::invalid("playback is not available on a forwarded call"))
                    }
                    Action::Answer { .. } | Action::Reject { .. } => {
                        Err(ActionError::invalid("a forwarded call is answered by the far end"))
                    }
                    Action::RecordStart { .. } | Action::RecordStop => Err(ActionError::invalid(
                        "record_start/record_stop are not available on a forwarded call; use record = true on its route",
                    )),
                    Action::JoinRoom(_) | Action::LeaveRoom => Err(ActionError::invalid(
                        "a forwarded call is bridged to its far leg and cannot join a room",
                    )),
                    Action::Refer(_) if sm.state() != CallState::Answered => {
                        Err(ActionError::invalid("the call is not answered yet"))
                    }
                    Action::Refer(refer) => {
                        super::refer::start(&ctx, &call.info, &call.dialog, &refer).await.map_err(ActionError::invalid)
                    }
                };
                let _ = cmd.reply.send(result);
            }
            _ = hangup_all.cancelled() => {
                far.hangup(HangupCause::NormalClearing).await;
                if sm.state() == CallState::Answered {
                    let _ = call.dialog.bye().await;
                } else {
                    let _ = call.dialog.reject(Some(StatusCode::TemporarilyUnavailable), None);
                }
                break (Hangup { cause: HangupCause::NormalClearing, source: HangupSource::Callee, sip_code: 200 }, true);
            }
        }
    };
    let _ = far_quality_needed;
    let (qa, qb) = match relay {
        Some(r) => r.stop().await,
        None => (None, None),
    };
    far.finish(qb).await;
    ctx.dialogs.remove_dialog(&id);
    let committed = finish_in(&mut call, &mut sm, near_end, qa);
    let _ = committed.await;
    super::inbound::finish_recording(&ctx, &call.info, recording).await;
    drop(permit);
}

fn emit_bridged(call: &InboundCall, far: &OutboundLeg) {
    let mut p = call.info.payload("answered");
    p.insert("bridged_call_control_id".into(), json!(far.info.ids.call_control_id));
    p.insert("bridged_call_leg_id".into(), json!(far.info.ids.call_leg_id));
    call.ctx.events.emit(call.info.event("call.bridged", p));
}

fn finish_in(
    call: &mut InboundCall,
    sm: &mut CallStateMachine,
    h: Hangup,
    quality: Option<serde_json::Value>,
) -> crate::call::event::Emitted {
    let h = sm.end(h).or(sm.hangup()).unwrap_or(h);
    tracing::info!(
        call_control_id = %call.info.ids.call_control_id,
        cause = h.cause.as_str(), source = h.source.as_str(), sip_code = h.sip_code,
        "hangup"
    );
    call.ctx.events.emit_durable(call.info.hangup(h, SystemTime::now(), quality))
}
