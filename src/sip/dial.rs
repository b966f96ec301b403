//! Calls dialled by the control API (`POST /v2/calls`, Telnyx "Dial"): an outbound
//! leg through a trunk, registered for call control at once (state `bridging`
//! until answered), media from answer to an agent stream (`stream_url` or a
//! configured `[[agent]]`) or silence, recorded from answer when asked
//! (`record: "record-from-answer"`).

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::SipContext;
use super::inbound::{LegControl, finish_recording, new_recorder, next_agent_event, stream_pair};
use super::outbound::{Dial, DialError, OutboundLeg, Progress};
use crate::agent::stream::{AgentStream, StreamEvent, StreamSpec};
use crate::call::control::{Action, ActionError, CallView};
use crate::call::{CallState, HangupCause};
use crate::media::leg::LegEvent;
use crate::media::pcm::pcm_pair;

/// A validated dial request.
#[derive(Debug, Clone)]
pub struct DialRequest {
    /// Trunk name (Telnyx `connection_id`).
    pub trunk: String,
    /// Caller number.
    pub from: String,
    /// Callee number.
    pub to: String,
    /// Ring limit (`timeout_secs`).
    pub timeout: Duration,
    /// Echoed in events.
    pub client_state: Option<String>,
    /// Stream the answered call here.
    pub stream: Option<StreamSpec>,
    /// Record from answer.
    pub record: bool,
    /// Telnyx `webhook_url`: this call's events go there instead of `[webhooks] url`.
    pub webhook_url: Option<String>,
    /// `transfer`: once answered, bridge with this call (its `call_control_id`);
    /// if that call has ended by then, this one is hung up.
    pub bridge_with: Option<String>,
}

/// Places the call; returns its view as soon as the INVITE is out.
///
/// Errors: unknown trunk or one without `proxy` (400-class `ActionError` with
/// status 422), no capacity (503), no RTP ports (503), INVITE not sendable (500).
pub async fn dial(ctx: &Arc<SipContext>, req: DialRequest) -> Result<CallView, ActionError> {
    let cfg = ctx.config.borrow().clone();
    let trunk = cfg.trunk(&req.trunk).cloned().ok_or_else(|| ActionError {
        status: 422,
        code: "10015",
        title: "Invalid connection_id",
        detail: format!("no [[trunk]] named {:?}", req.trunk),
    })?;
    let permit = ctx.lifecycle.admit().map_err(|r| ActionError {
        status: 503,
        code: "90040",
        title: "Cannot place the call now",
        detail: format!("{r:?}"),
    })?;
    let dial = Dial {
        trunk,
        from: req.from.clone(),
        to: req.to.clone(),
        ring_timeout: req.timeout,
        call_session_id: None,
        headers: Vec::new(),
        client_state: req.client_state.clone(),
        webhook_url: req.webhook_url.clone(),
    };
    let leg = OutboundLeg::dial(ctx, dial).await.map_err(|e| match e {
        DialError::NoProxy(t) => ActionError {
            status: 422,
            code: "10015",
            title: "Invalid connection_id",
            detail: format!("trunk {t:?} has no proxy to send calls to"),
        },
        DialError::NoPorts => ActionError {
            status: 503,
            code: "90040",
            title: "Cannot place the call now",
            detail: "no RTP ports left".into(),
        },
        DialError::BadNumber(why) => ActionError { status: 422, code: "10015", title: "Invalid number", detail: why },
        DialError::Sip(why) => ActionError { status: 500, code: "10007", title: "Dial failed", detail: why },
    })?;
    let control = ctx.calls.register(&leg.info, "bridging");
    let view = CallView { info: leg.info.clone(), state: "bridging".into(), stream_id: None };
    let ctx = Arc::clone(ctx);
    tokio::spawn(async move {
        run(ctx, leg, control, req).await;
        drop(permit);
    });
    Ok(view)
}

async fn run(
    ctx: Arc<SipContext>,
    mut leg: OutboundLeg,
    mut control: crate::call::control::Registration,
    req: DialRequest,
) {
    let hangup_all: CancellationToken = ctx.hangup_all.clone();
    let mut agent: Option<AgentStream> = None;
    let mut playbacks = crate::call::playback::Playbacks::new();
    let mut recorder: Option<crate::call::recording::CallRecorder> = None;
    let mut room: Option<super::rooms::Membership> = None;
    let mut stream = req.stream;
    let mut media_events: Option<tokio::sync::mpsc::UnboundedReceiver<LegEvent>> = None;
    // The call's parts as the shared command handling sees them (disjoint borrows).
    macro_rules! leg_control {
        () => {
            LegControl {
                ctx: &ctx,
                info: &mut leg.info,
                media: &mut leg.media,
                agent: &mut agent,
                control: &control,
                playbacks: &mut playbacks,
                recorder: &mut recorder,
                dialog: &leg.dialog,
                room: &mut room,
            }
        };
    }
    loop {
        if let Some(rx) = leg.media.take_events() {
            media_events = Some(rx);
        }
        tokio::select! {
            p = leg.progress() => match p {
                Progress::Ringing | Progress::EarlyMedia => control.update(|v| v.state = "ringing".into()),
                Progress::Answered => {
                    control.update(|v| v.state = "answered".into());
                    let rate = stream.as_ref().map_or(8000, |s| s.playout_rate());
                    recorder = new_recorder(&ctx, &leg.info, req.record, rate);
                    let tap = crate::call::listen::call_tap(&control.listen, recorder.as_ref().map(|r| r.tap()));
                    match stream.take() {
                        Some(spec) => {
                            let (port, endpoint) = stream_pair(&spec);
                            leg.media.start_pcm(tap.clone(), port);
                            let s = AgentStream::start(spec, leg.info.clone(), ctx.events.clone(), endpoint);
                            let id = s.stream_id.clone();
                            control.update(|v| v.stream_id = Some(id));
                            agent = Some(s);
                        }
                        // No stream: silence to the callee (and the recording goes on).
                        None => leg.media.start_pcm(tap.clone(), pcm_pair(1, false, false).0),
                    }
                    if let Some(other) = req.bridge_with.clone() {
                        // `transfer`: the new leg and the original call meet in a bridge.
                        let join = super::rooms::bridge_join(&other);
                        let joined = leg_control!().command(Action::JoinRoom(join.clone()), true, tap).await;
                        let other_joined = match joined {
                            Ok(()) => ctx.calls.command(&other, Action::JoinRoom(join)).await,
                            Err(e) => Some(Err(e)),
                        };
                        match (other_joined, ctx.calls.get(&other)) {
                            (Some(Ok(())), crate::call::control::Lookup::Live(view)) => {
                                super::rooms::emit_bridged(&ctx.events, &view.info, &leg.info);
                            }
                            (result, _) => {
                                tracing::info!(
                                    call_control_id = %leg.info.ids.call_control_id, original = %other,
                                    "transfer answered but the original call could not be bridged ({result:?}): hanging up"
                                );
                                leg.hangup(HangupCause::NormalClearing).await;
                                break;
                            }
                        }
                    }
                }
                Progress::Ended(_) => break,
            },
            cmd = control.next() => {
                let answered = leg.state() == CallState::Answered;
                let result = match cmd.action {
                    Action::Hangup => {
                        leg.hangup(HangupCause::NormalClearing).await;
                        let _ = cmd.reply.send(Ok(()));
                        break;
                    }
                    other => {
                        let tap = crate::call::listen::call_tap(&control.listen, recorder.as_ref().map(|r| r.tap()));
                        let mut lc = leg_control!();
                        lc.command(other, answered, tap).await
                    }
                };
                let _ = cmd.reply.send(result);
            }
            ev = next_agent_event(&mut agent) => {
                // A stream started by the API ends alone; the call stays up (Telnyx).
                let StreamEvent::Failed(reason) = ev;
                tracing::info!(call_control_id = %leg.info.ids.call_control_id, "stream failed ({reason}): the call continues");
                agent = None;
                control.update(|v| v.stream_id = None);
            }
            Some(ev) = async { match media_events.as_mut() { Some(rx) => rx.recv().await, None => std::future::pending().await } } => match ev {
                LegEvent::Dtmf(digit) => {
                    if let Some(a) = &agent {
                        a.dtmf(digit);
                    }
                    let mut p = leg.info.payload("answered");
                    p.insert("digit".into(), serde_json::json!(digit.to_string()));
                    ctx.events.emit(leg.info.event("call.dtmf.received", p));
                }
                LegEvent::PlaybackDone { id, completed } => {
                    let mut lc = leg_control!();
                    lc.playback_done(id, completed).await;
                }
                LegEvent::Timeout(after) => {
                    tracing::info!(call_control_id = %leg.info.ids.call_control_id, "no RTP for {}s: BYE", after.as_secs());
                    leg.hangup(HangupCause::Timeout).await;
                    break;
                }
            },
            _ = hangup_all.cancelled() => {
                leg.hangup(HangupCause::NormalClearing).await;
                break;
            }
        }
    }
    leg_control!().playbacks_hung_up();
    if let Some(a) = agent.take() {
        a.stop().await;
    }
    let quality = leg.media.stop().await;
    leg.finish(quality).await;
    let span = recorder.as_mut().and_then(|r| r.record_stop());
    finish_recording(&ctx, &leg.info, span).await;
    drop(control);
}
