//! Incoming calls (UAS, RFC 3261 §13.3): trunk admission (address or digest),
//! call admission (`node.max_calls`, shutdown), routing, SDP answer, then the call's
//! own task that answers, follows the dialog (ACK, BYE, CANCEL, re-INVITE, UPDATE,
//! INFO, OPTIONS, session timers) and reports events.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use rsipstack::dialog::dialog::{DialogState, DialogStateReceiver, TerminatedReason};
use rsipstack::dialog::invite_dialog::InviteDialog;
use rsipstack::sip::{Header, StatusCode};
use rsipstack::transaction::transaction::Transaction;

use super::digest::Verdict;
use super::server::{reply, unknown_source};
use super::{SipContext, addr, dialstring, msg, routing};
use crate::agent::stream::{AgentStream, StreamEvent, StreamSpec};
use crate::call::control::{Action, ActionError, Registration, RoomJoin, RoomRef};
use crate::call::pin::{PinEntry, Verdict as PinVerdict};
use crate::call::playback::{Loops, Playbacks, Playing};
use crate::call::recording::{CallRecorder, CallRecording};
use crate::call::session::{MediaSession, Reject};
use crate::call::{CallIds, CallInfo, CallStateMachine, Direction, Hangup, HangupCause, HangupSource};
use crate::config::{OnDisconnect, Route, RouteTarget, StreamTrack, Trunk};
use crate::daemon::lifecycle::{CallPermit, Refusal};
use crate::media::leg::LegEvent;
use crate::media::leg::Tap;
use crate::media::pcm::pcm_pair;

/// Smallest session interval we accept (RFC 4028 §4: Min-SE default 90 s).
const MIN_SE: u64 = 90;

/// Handles a new INVITE (no To tag).
pub async fn incoming_invite(ctx: Arc<SipContext>, mut tx: Transaction) {
    let Some(source) = msg::source_addr(&tx) else {
        reply(&mut tx, StatusCode::BadRequest, vec![]).await;
        return;
    };
    let cfg = ctx.config.borrow().clone();

    // 1. Which trunk?
    let trunk = match ctx.trunks.by_source(source.ip()) {
        Some(t) => t.clone(),
        None if ctx.trunks.has_credential_trunks() => match authenticate(&ctx, &mut tx).await {
            Some(t) => t,
            None => return,
        },
        None => {
            unknown_source(&ctx, &mut tx).await;
            return;
        }
    };

    // 2. Room for one more call?
    let permit = match ctx.lifecycle.admit() {
        Ok(p) => p,
        Err(refusal) => {
            let (after, why) = match refusal {
                Refusal::Full => ("5", "node.max_calls reached"),
                Refusal::ShuttingDown => ("30", "shutting down"),
            };
            tracing::warn!(trunk = %trunk.name, "incoming call refused: {why}");
            reply(&mut tx, StatusCode::ServiceUnavailable, vec![Header::RetryAfter(after.into())]).await;
            return;
        }
    };

    // 3. Where does it go?
    let to = match trunk.username.as_deref() {
        Some(user) if trunk.register => msg::dialled_over_registration(&tx.original, user),
        _ => msg::dialled(&tx.original),
    };
    let from = msg::caller(&tx.original);
    // The dialled user part is percent-decoded: refuse anything but a plain user
    // token before it reaches routing, and anything but a dial string on a route
    // that sends the call out again (issue 17: no host smuggled into a far leg).
    if !to.is_empty() && !dialstring::is_user(&to) {
        address_incomplete(&mut tx, &trunk.name, &to).await;
        return;
    }
    let Some(route) = routing::select(&cfg.routes, &trunk.name, &to, &from).cloned() else {
        tracing::info!(trunk = %trunk.name, %to, %from, "no route matches: 404");
        reply(&mut tx, StatusCode::NotFound, vec![]).await;
        return;
    };
    if matches!(route.target, RouteTarget::Forward(_)) && !dialstring::is_dial_string(&to) {
        address_incomplete(&mut tx, &trunk.name, &to).await;
        return;
    }
    // The caller's number is copied into far legs' From, events and logs: a From
    // user that is not a plain user token (CR/LF, `@`, `;` after percent-decoding)
    // becomes `anonymous` rather than reach any of them.
    let from = if dialstring::is_user(&from) { from } else { "anonymous".to_string() };

    // 4. Session timer (RFC 4028): refuse intervals below our minimum.
    let session_expires = session_expires(&tx.original);
    if let Some((se, _)) = session_expires {
        if se < MIN_SE {
            reply(&mut tx, StatusCode::SessionIntervalTooSmall, vec![Header::MinSE(MIN_SE.to_string().into())]).await;
            return;
        }
    }

    // 5. Media: answer the offer.
    let local_ip = {
        let bound = tx.connection.as_ref().and_then(|c| c.get_addr().get_socketaddr().ok()).map(|a| a.ip());
        match &ctx.public_address {
            crate::config::PublicAddress::Ip(ip) => *ip,
            _ => match bound {
                Some(b) if !b.is_unspecified() => b,
                _ => addr::local_ip_towards(source.ip()),
            },
        }
    };
    let (mut media, answer) = match MediaSession::answer(&ctx.media, &tx.original.body, &trunk.codecs, local_ip).await {
        Ok(x) => x,
        Err(Reject::NotAcceptable(why)) => {
            tracing::info!(trunk = %trunk.name, "SDP offer not acceptable: {why}: 488");
            reply(
                &mut tx,
                StatusCode::NotAcceptableHere,
                vec![Header::Warning(format!("304 sipbridge \"{why}\"").into())],
            )
            .await;
            return;
        }
        Err(Reject::Malformed(why)) => {
            tracing::info!(trunk = %trunk.name, "malformed SDP offer: {why}: 400");
            reply(&mut tx, StatusCode::BadRequest, vec![Header::Warning(format!("399 sipbridge \"{why}\"").into())])
                .await;
            return;
        }
        Err(Reject::NoPorts) => {
            tracing::warn!("RTP port range exhausted: 503");
            reply(&mut tx, StatusCode::ServiceUnavailable, vec![Header::RetryAfter("5".into())]).await;
            return;
        }
    };

    media.set_rtp_timeout(cfg.rtp.timeout);
    media.set_latch((&cfg.rtp).into());

    // 6. The dialog.
    let (state_tx, state_rx) = ctx.dialogs.new_dialog_state_channel();
    let contact = local_contact(&ctx, &tx, source.ip());
    let dialog = match ctx.dialogs.get_or_create_server_invite(&tx, state_tx, None, contact) {
        Ok(d) => d,
        Err(e) => {
            tracing::info!(error = %e, "cannot create dialog: 400");
            reply(&mut tx, StatusCode::BadRequest, vec![]).await;
            return;
        }
    };
    let info = CallInfo {
        ids: CallIds::new_session(),
        direction: Direction::Incoming,
        from,
        to,
        connection_id: trunk.name.clone(),
        sip_call_id: msg::call_id(&tx.original),
        start_time: SystemTime::now(),
        client_state: None,
        custom_headers: msg::x_headers(&tx.original),
        webhook_url: None,
    };
    tracing::info!(
        call_control_id = %info.ids.call_control_id, trunk = %trunk.name, route = %route.name,
        from = %info.from, to = %info.to, "incoming call"
    );
    let initiated = info.initiated("parked").with_route(&route.name);
    ctx.events.emit(match &route.target {
        RouteTarget::Agent(agent) => initiated.with_agent(agent),
        _ => initiated,
    });
    let control = ctx.calls.register(&info, "parked");
    let call = InboundCall {
        ctx: Arc::clone(&ctx),
        dialog: dialog.clone(),
        info,
        route,
        media,
        session_expires,
        agent: None,
        control,
        playbacks: Playbacks::new(),
        recorder: None,
        pending_stream: None,
        room: None,
        pin: None,
    };
    tokio::spawn(call.run(state_rx, answer, permit));

    // Drive the INVITE server transaction (100 Trying, 200, ACK or CANCEL).
    let mut dialog = dialog;
    if let Err(e) = dialog.handle(&mut tx).await {
        tracing::debug!(error = %e, "INVITE transaction ended with an error");
    }
}

/// 484 Address Incomplete (RFC 3261 §21.4.22) for a dialled user part that is not
/// a user token / dial string (see [`dialstring`]); counted in `/metrics`.
async fn address_incomplete(tx: &mut Transaction, trunk: &str, to: &str) {
    crate::security::SIP_DIAL_STRING_REFUSED.inc();
    tracing::info!(%trunk, to = %to.escape_debug(), "dialled number is not a dial string: 484");
    reply(tx, StatusCode::AddressIncomplete, vec![]).await;
}

/// Digest-challenges a request from an unknown source; returns the trunk of the
/// authenticated user, or `None` after answering 401.
///
/// Every rejected answer counts against the source (`super::ban`): after
/// `[sip] auth_max_failures` the source is banned and the transport drops it, so
/// the failure that bans is the last one a guesser sees answered.
async fn authenticate(ctx: &SipContext, tx: &mut Transaction) -> Option<Trunk> {
    let now = SystemTime::now();
    let source = msg::source_ip(tx)?;
    let stale = match msg::header(&tx.original, "Authorization", None) {
        None => false,
        Some(h) => match ctx.challenger.verify("INVITE", &h, now, source, |u| ctx.trunks.inbound_password(u)) {
            Verdict::Accepted { username } => {
                ctx.bans.succeeded(source);
                return ctx.trunks.by_inbound_username(&username).cloned();
            }
            Verdict::Stale => true,
            v @ Verdict::Rejected(why) if v.is_guess() => {
                let policy = ctx.config.borrow().sip.auth_ban;
                match ctx.bans.failed(source, policy) {
                    super::ban::Failure::Counted { left } => {
                        tracing::warn!(%source, failures_left = left, "digest authentication failed: {why}");
                    }
                    super::ban::Failure::Banned(_) => {}
                }
                false
            }
            // Forged or foreign nonce, malformed header: possibly a spoofed source,
            // never a guess at the password; challenged again, not counted.
            Verdict::Rejected(why) => {
                crate::security::SIP_AUTH_FAILURES.inc();
                tracing::debug!(%source, "digest authentication refused before the password check: {why}");
                false
            }
        },
    };
    let headers: Vec<Header> =
        ctx.challenger.challenge(now, stale, source).into_iter().map(|c| Header::WwwAuthenticate(c.into())).collect();
    reply(tx, StatusCode::Unauthorized, headers).await;
    None
}

/// `Session-Expires` of the request: (seconds, refresher) (RFC 4028 §4).
pub fn session_expires(req: &rsipstack::sip::Request) -> Option<(u64, Option<String>)> {
    let v = msg::header(req, "Session-Expires", Some("x"))?;
    let mut parts = v.split(';');
    let secs = parts.next()?.trim().parse().ok()?;
    let refresher = parts.find_map(|p| p.trim().strip_prefix("refresher=").map(|r| r.trim().to_ascii_lowercase()));
    Some((secs, refresher))
}

fn local_contact(ctx: &SipContext, tx: &Transaction, peer: std::net::IpAddr) -> Option<rsipstack::sip::Uri> {
    let conn = tx.connection.as_ref()?;
    let local = conn.get_addr().get_socketaddr().ok()?;
    let host = addr::advertised_host(&ctx.public_address, local.ip(), peer);
    let transport = match conn.transport() {
        rsipstack::sip::Transport::Udp => "",
        rsipstack::sip::Transport::Tcp => ";transport=tcp",
        rsipstack::sip::Transport::Tls => ";transport=tls",
        _ => "",
    };
    let scheme = if transport == ";transport=tls" { "sips" } else { "sip" };
    rsipstack::sip::Uri::try_from(format!("{scheme}:sipbridge@{host}:{}{transport}", local.port()).as_str()).ok()
}

/// An incoming call after admission: its dialog, ids, route and media.
pub struct InboundCall {
    /// Shared SIP state.
    pub ctx: Arc<SipContext>,
    /// The server INVITE dialog.
    pub dialog: InviteDialog,
    /// Ids and numbers.
    pub info: CallInfo,
    /// The route that took it.
    pub route: Route,
    /// Its media (our answer to the caller's offer).
    pub media: MediaSession,
    session_expires: Option<(u64, Option<String>)>,
    /// The voice agent's stream, while it runs.
    agent: Option<AgentStream>,
    /// Commands from the API; dropping it deregisters the call.
    pub control: Registration,
    /// Playbacks in progress (`playback_start`).
    playbacks: Playbacks,
    /// The call's recorder (spans from answer or `record_start`), when recording is
    /// enabled.
    recorder: Option<CallRecorder>,
    /// A parked call answered with a stream: started once the ACK arrives.
    pending_stream: Option<StreamSpec>,
    /// Its place in a local room (`room` / `room_per_caller` routes); dropping it
    /// leaves the room.
    room: Option<crate::sip::rooms::Membership>,
    /// PIN entry before joining a room with a `pin`, and when it times out.
    pin: Option<(PinEntry, tokio::time::Instant)>,
}

/// How long a caller has to key each PIN entry.
const PIN_WAIT: Duration = Duration::from_secs(10);

/// Playback ids of the box's own prompts (PIN): far above the API's, and not
/// reported as `call.playback.*`.
const PROMPT_ID: u64 = u64::MAX - 1;

/// What a PIN step asks of the call loop.
#[derive(Debug, PartialEq, Eq)]
enum PinNext {
    /// Nothing (still collecting, joined, or no PIN running).
    Continue,
    /// Three wrong entries: hang up (`call_rejected`).
    Reject,
}

impl InboundCall {
    async fn run(mut self, mut states: DialogStateReceiver, answer: Vec<u8>, permit: CallPermit) {
        if let RouteTarget::Forward(trunk) = self.route.target.clone() {
            return super::forward::run(self, states, answer, permit, trunk).await;
        }
        let mut sm = CallStateMachine::default();
        let id = self.dialog.id();
        let mut headers = vec![Header::ContentType("application/sdp".into())];
        // RFC 4028 §9: the UAS echoes the interval; we let the caller refresh.
        let mut refresh_deadline = None;
        if let Some((se, _)) = &self.session_expires {
            headers.push(Header::SessionExpires(format!("{se};refresher=uac").into()));
            headers.push(Header::Require("timer".into()));
            refresh_deadline = Some(Instant::now() + Duration::from_secs(*se));
        }
        let mut answer_at = None;
        // A parked call rings until the API answers or rejects it, at most this long.
        let mut park_deadline = None;
        let parked = self.route.target == RouteTarget::Park;
        if parked {
            let _ = self.dialog.ringing(None, None);
            sm.ringing();
            let limit = if self.route.ring_for.is_zero() { PARK_LIMIT } else { self.route.ring_for };
            park_deadline = Some(tokio::time::Instant::now() + limit);
        } else if self.route.ring_for.is_zero() {
            if let Err(e) = self.dialog.accept(Some(headers.clone()), Some(answer.clone())) {
                tracing::warn!(error = %e, "could not answer");
            }
        } else {
            let _ = self.dialog.ringing(None, None);
            sm.ringing();
            answer_at = Some(tokio::time::Instant::now() + self.route.ring_for);
        }

        let hangup_all = self.ctx.hangup_all.clone();
        let mut bye_sent = false;
        let hangup: Hangup = loop {
            let deadline = refresh_deadline.map(tokio::time::Instant::from_std);
            let state = tokio::select! {
                s = states.recv() => s,
                _ = tokio::time::sleep_until(answer_at.unwrap_or_else(tokio::time::Instant::now)), if answer_at.is_some() => {
                    answer_at = None;
                    if let Err(e) = self.dialog.accept(Some(headers.clone()), Some(answer.clone())) {
                        tracing::warn!(error = %e, "could not answer");
                    }
                    continue;
                }
                _ = tokio::time::sleep_until(park_deadline.unwrap_or_else(tokio::time::Instant::now)), if park_deadline.is_some() => {
                    park_deadline = None;
                    tracing::info!(call_control_id = %self.info.ids.call_control_id, "parked call not answered by the API in time: 480");
                    bye_sent = true;
                    self.local_hangup(&mut sm, HangupCause::NoAnswer).await;
                    continue;
                }
                _ = tokio::time::sleep_until(self.pin.as_ref().map_or_else(tokio::time::Instant::now, |p| p.1)), if self.pin.is_some() => {
                    if self.pin_step(None).await == PinNext::Reject && !bye_sent {
                        bye_sent = true;
                        self.local_hangup(&mut sm, HangupCause::CallRejected).await;
                    }
                    continue;
                }
                _ = hangup_all.cancelled(), if !bye_sent => {
                    bye_sent = true;
                    answer_at = None;
                    self.local_hangup(&mut sm, HangupCause::NormalClearing).await;
                    continue;
                }
                _ = async { match deadline { Some(d) => tokio::time::sleep_until(d).await, None => std::future::pending().await } } => {
                    // RFC 4028 §10: no refresh before the session expired.
                    refresh_deadline = None;
                    tracing::info!(call_control_id = %self.info.ids.call_control_id, "session timer expired without refresh: BYE");
                    bye_sent = true;
                    self.local_hangup(&mut sm, HangupCause::Timeout).await;
                    continue;
                }
                cmd = self.control.next() => {
                    let answered = sm.state() == crate::call::CallState::Answered;
                    let result = match cmd.action {
                        Action::Hangup => {
                            if !bye_sent {
                                bye_sent = true;
                                answer_at = None;
                                park_deadline = None;
                                self.local_hangup(&mut sm, HangupCause::NormalClearing).await;
                            }
                            Ok(())
                        }
                        Action::Answer { .. } | Action::Reject { .. } if park_deadline.is_none() || bye_sent => {
                            Err(ActionError::invalid("only a parked call that is still ringing can be answered or rejected"))
                        }
                        Action::Answer { stream } => {
                            park_deadline = None;
                            self.pending_stream = stream.map(|s| *s);
                            match self.dialog.accept(Some(headers.clone()), Some(answer.clone())) {
                                Ok(()) => Ok(()),
                                Err(e) => Err(ActionError::invalid(format!("could not answer: {e}"))),
                            }
                        }
                        Action::Reject { sip_code } => {
                            park_deadline = None;
                            bye_sent = true;
                            sm.end(Hangup { cause: HangupCause::from_sip_status(sip_code), source: HangupSource::Callee, sip_code });
                            let _ = self.dialog.reject(Some(StatusCode::from(sip_code)), None);
                            Ok(())
                        }
                        other => {
                            let tap = crate::call::listen::call_tap(&self.control.listen, self.recorder.as_ref().map(|r| r.tap()));
                            self.command(other, answered, tap).await
                        }
                    };
                    let _ = cmd.reply.send(result);
                    continue;
                }
                ev = next_agent_event(&mut self.agent) => {
                    let StreamEvent::Failed(reason) = ev;
                    self.agent = None;
                    match self.agent_on_disconnect() {
                        OnDisconnect::Hangup if !bye_sent => {
                            tracing::info!(call_control_id = %self.info.ids.call_control_id, "agent stream failed ({reason}): BYE");
                            bye_sent = true;
                            self.local_hangup(&mut sm, HangupCause::Unspecified).await;
                        }
                        OnDisconnect::Hangup => {}
                        OnDisconnect::Continue => {
                            tracing::info!(call_control_id = %self.info.ids.call_control_id, "agent stream failed ({reason}): the call continues");
                        }
                    }
                    continue;
                }
                ev = self.media.next_event() => {
                    match ev {
                        LegEvent::Dtmf(digit) => {
                            self.dtmf(digit, "RFC 4733");
                            if self.pin_step(Some(digit)).await == PinNext::Reject && !bye_sent {
                                bye_sent = true;
                                self.local_hangup(&mut sm, HangupCause::CallRejected).await;
                            }
                        }
                        LegEvent::Timeout(after) if !bye_sent => {
                            tracing::info!(
                                call_control_id = %self.info.ids.call_control_id,
                                "no RTP for {}s: BYE", after.as_secs()
                            );
                            bye_sent = true;
                            self.local_hangup(&mut sm, HangupCause::Timeout).await;
                        }
                        LegEvent::Timeout(_) => {}
                        LegEvent::PlaybackDone { id, completed } => self.leg().playback_done(id, completed).await,
                    }
                    continue;
                }
            };
            let Some(state) = state else {
                break sm
                    .end(Hangup { cause: HangupCause::Unspecified, source: HangupSource::Unknown, sip_code: 500 })
                    .unwrap_or(Hangup {
                        cause: HangupCause::Unspecified,
                        source: HangupSource::Unknown,
                        sip_code: 500,
                    });
            };
            match state {
                DialogState::Confirmed(..) if sm.answered() => {
                    tracing::info!(call_control_id = %self.info.ids.call_control_id, "answered");
                    self.control.update(|v| v.state = "answered".into());
                    self.ctx.events.emit(self.info.answered());
                    self.recorder = new_recorder(&self.ctx, &self.info, self.route.record, self.stream_rate());
                    if !self.start_media(crate::call::listen::call_tap(
                        &self.control.listen,
                        self.recorder.as_ref().map(|r| r.tap()),
                    )) && !bye_sent
                    {
                        bye_sent = true;
                        self.local_hangup(&mut sm, HangupCause::Unspecified).await;
                    } else if let Err(cause) = self.enter_room().await {
                        if !bye_sent {
                            bye_sent = true;
                            self.local_hangup(&mut sm, cause).await;
                        }
                    }
                }
                DialogState::Updated(_, req, handle) => {
                    // re-INVITE or UPDATE: hold/resume, codec change, session refresh.
                    if let Some((se, _)) = session_expires(&req).or(self.session_expires.clone()) {
                        refresh_deadline = Some(Instant::now() + Duration::from_secs(se));
                    }
                    let (status, body) = if req.body.is_empty() {
                        if req.method == rsipstack::sip::Method::Update {
                            (StatusCode::OK, None)
                        } else {
                            (StatusCode::OK, Some(self.media.current_sdp()))
                        }
                    } else {
                        match self.media.reoffer(&req.body) {
                            Ok(sdp) => (StatusCode::OK, Some(sdp)),
                            Err(_) => (StatusCode::NotAcceptableHere, None),
                        }
                    };
                    let mut h = Vec::new();
                    if body.is_some() {
                        h.push(Header::ContentType("application/sdp".into()));
                    }
                    if let Some((se, _)) = session_expires(&req) {
                        h.push(Header::SessionExpires(format!("{se};refresher=uac").into()));
                        h.push(Header::Require("timer".into()));
                    }
                    let _ = handle.respond(status, Some(h), body).await;
                }
                DialogState::Info(_, req, handle) => {
                    let ct = msg::header(&req, "Content-Type", Some("c")).unwrap_or_default().to_ascii_lowercase();
                    let status = if ct.starts_with("application/dtmf-relay") || ct.starts_with("application/dtmf") {
                        if let Some(digit) = dtmf_from_info(&req.body) {
                            self.dtmf(digit, "SIP INFO");
                            if self.pin_step(Some(digit)).await == PinNext::Reject && !bye_sent {
                                bye_sent = true;
                                self.local_hangup(&mut sm, HangupCause::CallRejected).await;
                            }
                        }
                        StatusCode::OK
                    } else {
                        StatusCode::UnsupportedMediaType
                    };
                    let _ = handle.reply(status).await;
                }
                DialogState::Options(_, _, handle) => {
                    let _ = handle.reply(StatusCode::OK).await;
                }
                DialogState::Refer(_, _, handle) | DialogState::Message(_, _, handle) => {
                    let _ = handle.reply(StatusCode::Decline).await;
                }
                DialogState::Notify(_, req, handle) => {
                    let _ = handle.reply(StatusCode::OK).await;
                    crate::sip::refer::on_notify(&self.ctx, &self.info, &req);
                }
                DialogState::Publish(_, _, handle) => {
                    let _ = handle.reply(StatusCode::OK).await;
                }
                DialogState::Terminated(_, reason) => {
                    let h = match reason {
                        TerminatedReason::UacBye => sm.bye(HangupSource::Caller),
                        TerminatedReason::UasBye => sm.hangup().or_else(|| sm.bye(HangupSource::Callee)),
                        TerminatedReason::UacCancel => sm.end(Hangup {
                            cause: HangupCause::OriginatorCancel,
                            source: HangupSource::Caller,
                            sip_code: 487,
                        }),
                        TerminatedReason::Timeout => {
                            sm.end(Hangup { cause: HangupCause::Timeout, source: HangupSource::Unknown, sip_code: 408 })
                        }
                        other => sm.end(Hangup {
                            cause: HangupCause::Unspecified,
                            source: HangupSource::Unknown,
                            sip_code: terminated_code(&other),
                        }),
                    };
                    break h.or(sm.hangup()).unwrap_or(Hangup {
                        cause: HangupCause::Unspecified,
                        source: HangupSource::Unknown,
                        sip_code: 500,
                    });
                }
                _ => {}
            }
        };
        self.ctx.dialogs.remove_dialog(&id);
        self.leg().playbacks_hung_up();
        if let Some(agent) = self.agent.take() {
            agent.stop().await;
        }
        let quality = self.media.stop().await;
        tracing::info!(
            call_control_id = %self.info.ids.call_control_id,
            cause = hangup.cause.as_str(), source = hangup.source.as_str(), sip_code = hangup.sip_code,
            "hangup"
        );
        // The call counts as ended once its hangup is committed (webhook outbox and
        // call record); only then is its permit released.
        let _ = self.ctx.events.emit_durable(self.info.hangup(hangup, SystemTime::now(), quality)).await;
        let span = self.recorder.as_mut().and_then(|r| r.record_stop());
        finish_recording(&self.ctx, &self.info, span).await;
        drop(permit);
    }

    /// The box ends the call: BYE after answer, else 480/487-like rejection.
    async fn local_hangup(&mut self, sm: &mut CallStateMachine, cause: HangupCause) {
        if sm.state() == crate::call::CallState::Answered {
            sm.end(Hangup { cause, source: HangupSource::Callee, sip_code: 200 });
            if let Err(e) = self.dialog.bye().await {
                tracing::debug!(error = %e, "BYE failed");
            }
        } else {
            sm.end(Hangup { cause, source: HangupSource::Callee, sip_code: 480 });
            let _ = self.dialog.reject(Some(StatusCode::TemporarilyUnavailable), None);
        }
    }

    /// Starts the route's media once answered: the built-in echo or a voice
    /// agent's stream. `false` when the route's agent no longer exists (removed by a
    /// reload): the call is ended.
    fn start_media(&mut self, tap: Option<Arc<dyn Tap>>) -> bool {
        if self.route.target == RouteTarget::Park {
            // Answered by the API: its stream, or silence until one is started.
            match self.pending_stream.take() {
                Some(spec) => {
                    let (port, endpoint) = stream_pair(&spec);
                    self.media.start_pcm(tap, port);
                    let stream = AgentStream::start(spec, self.info.clone(), self.ctx.events.clone(), endpoint);
                    let id = stream.stream_id.clone();
                    self.control.update(|v| v.stream_id = Some(id));
                    self.agent = Some(stream);
                }
                None => self.media.start_pcm(tap, pcm_pair(1, false, false).0),
            }
            return true;
        }
        if matches!(self.route.target, RouteTarget::Room(_) | RouteTarget::RoomPerCaller(_)) {
            // Silence (or the PIN prompt) until the call joins its room.
            self.media.start_pcm(tap, pcm_pair(1, false, false).0);
            return true;
        }
        let RouteTarget::Agent(name) = &self.route.target else {
            self.media.start(tap);
            return true;
        };
        let cfg = self.ctx.config.borrow().clone();
        let Some(agent) = cfg.agent(name) else {
            tracing::warn!(route = %self.route.name, agent = %name, "the route's agent is no longer configured: BYE");
            return false;
        };
        match StreamSpec::from_agent(agent) {
            None => self.media.start(tap),
            Some(spec) => {
                let (port, endpoint) = stream_pair(&spec);
                self.media.start_pcm(tap, port);
                let stream = AgentStream::start(spec, self.info.clone(), self.ctx.events.clone(), endpoint);
                let id = stream.stream_id.clone();
                self.control.update(|v| v.stream_id = Some(id));
                self.agent = Some(stream);
            }
        }
        true
    }

    /// The playout/recording rate of the stream the call starts with at answer
    /// (the route's agent, or the API's `answer` stream): 8000 or 16000 Hz.
    fn stream_rate(&self) -> u32 {
        let spec = match &self.route.target {
            RouteTarget::Park => return self.pending_stream.as_ref().map_or(8000, StreamSpec::playout_rate),
            RouteTarget::Agent(name) => self.ctx.config.borrow().agent(name).and_then(StreamSpec::from_agent),
            _ => None,
        };
        spec.map_or(8000, |s| s.playout_rate())
    }

    /// After answer, for room routes: asks for the PIN (prompt, then
    /// [`Self::pin_step`]) or joins the room at once. `Err(cause)` when the call
    /// must end: the room is full (`user_busy`) or refused it.
    async fn enter_room(&mut self) -> Result<(), HangupCause> {
        if crate::sip::rooms::room_for(&self.route.target, &self.info.from).is_none() {
            return Ok(());
        }
        if let Some(pin) = self.route.pin.clone() {
            self.pin = Some((PinEntry::new(&pin), tokio::time::Instant::now() + PIN_WAIT));
            let _ = self.media.play(PROMPT_ID, crate::call::pin::enter_prompt(), false, None).await;
            return Ok(());
        }
        self.join_room().await
    }

    async fn join_room(&mut self) -> Result<(), HangupCause> {
        let Some(name) = crate::sip::rooms::room_for(&self.route.target, &self.info.from) else { return Ok(()) };
        let tap = crate::call::listen::call_tap(&self.control.listen, self.recorder.as_ref().map(|r| r.tap()));
        let rooms = self.ctx.rooms.clone();
        let join = RoomJoin {
            room: RoomRef::Name(name.clone()),
            options: self.ctx.config.borrow().rooms.options(),
            muted: false,
            held: false,
        };
        match crate::sip::rooms::join_leg(&rooms, &mut self.media, tap, &self.info, &join).await {
            Ok(leg) => {
                tracing::info!(call_control_id = %self.info.ids.call_control_id, room = %name, "joined the room");
                self.room = Some(crate::sip::rooms::Membership { leg, agent: None });
                Ok(())
            }
            Err(e) => {
                tracing::warn!(call_control_id = %self.info.ids.call_control_id, room = %name, "could not join the room: {e}");
                Err(HangupCause::UserBusy)
            }
        }
    }

    /// One step of PIN entry: a key (`Some`) or the entry timeout (`None`).
    async fn pin_step(&mut self, key: Option<char>) -> PinNext {
        let Some((entry, deadline)) = self.pin.as_mut() else { return PinNext::Continue };
        let verdict = match key {
            Some(d) => entry.key(d),
            None => entry.timeout(),
        };
        *deadline = tokio::time::Instant::now() + PIN_WAIT;
        match verdict {
            PinVerdict::Pending => PinNext::Continue,
            PinVerdict::Accepted => {
                self.pin = None;
                let _ = self.media.stop_playback().await;
                match self.join_room().await {
                    Ok(()) => PinNext::Continue,
                    Err(_) => PinNext::Reject,
                }
            }
            PinVerdict::Wrong { tries_left } => {
                tracing::info!(call_control_id = %self.info.ids.call_control_id, tries_left, "wrong PIN");
                let _ = self.media.stop_playback().await;
                let _ = self.media.play(PROMPT_ID, crate::call::pin::wrong_prompt(), false, None).await;
                PinNext::Continue
            }
            PinVerdict::Rejected => {
                tracing::info!(call_control_id = %self.info.ids.call_control_id, "wrong PIN three times: hanging up");
                self.pin = None;
                PinNext::Reject
            }
        }
    }

    /// An API command other than hangup (Telnyx Call Control actions).
    async fn command(&mut self, action: Action, answered: bool, tap: Option<Arc<dyn Tap>>) -> Result<(), ActionError> {
        self.leg().command(action, answered, tap).await
    }

    fn leg(&mut self) -> LegControl<'_> {
        LegControl {
            ctx: &self.ctx,
            info: &mut self.info,
            media: &mut self.media,
            agent: &mut self.agent,
            control: &self.control,
            playbacks: &mut self.playbacks,
            recorder: &mut self.recorder,
            dialog: &self.dialog,
            room: &mut self.room,
        }
    }

    /// The route's agent's `on_disconnect` (hangup when it was removed meanwhile).
    fn agent_on_disconnect(&self) -> OnDisconnect {
        let RouteTarget::Agent(name) = &self.route.target else { return OnDisconnect::Hangup };
        self.ctx.config.borrow().agent(name).map_or(OnDisconnect::Hangup, |a| a.on_disconnect)
    }

    fn dtmf(&self, digit: char, how: &str) {
        tracing::info!(call_control_id = %self.info.ids.call_control_id, %digit, "DTMF ({how})");
        if let Some(agent) = &self.agent {
            agent.dtmf(digit);
        }
        let mut p = self.info.payload("answered");
        p.insert("digit".into(), serde_json::json!(digit.to_string()));
        self.ctx.events.emit(self.info.event("call.dtmf.received", p));
    }
}

/// What an API command needs of a call that runs its own media (inbound agent or
/// echo calls, API-dialled calls).
pub struct LegControl<'a> {
    /// Shared SIP state.
    pub ctx: &'a SipContext,
    /// The leg's ids and client state.
    pub info: &'a mut CallInfo,
    /// Its media.
    pub media: &'a mut MediaSession,
    /// Its agent stream, if any.
    pub agent: &'a mut Option<AgentStream>,
    /// Its registration (what the API shows).
    pub control: &'a Registration,
    /// Playbacks in progress.
    pub playbacks: &'a mut Playbacks,
    /// The recorder (`None` when recording is disabled).
    pub recorder: &'a mut Option<CallRecorder>,
    /// The leg's dialog (REFER is sent in it).
    pub dialog: &'a InviteDialog,
    /// Its place in a local room, if any.
    pub room: &'a mut Option<crate::sip::rooms::Membership>,
}

impl LegControl<'_> {
    /// Applies an API command other than hangup (Telnyx Call Control actions).
    pub async fn command(
        &mut self,
        action: Action,
        answered: bool,
        tap: Option<Arc<dyn Tap>>,
    ) -> Result<(), ActionError> {
        let media_err = |e: String| ActionError::invalid(e);
        match action {
            Action::Hangup => Ok(()),
            Action::Answer { .. } | Action::Reject { .. } => {
                Err(ActionError::invalid("only a parked call that is still ringing can be answered or rejected"))
            }
            Action::ClientState(state) => {
                self.info.client_state = state.clone();
                self.control.update(|v| v.info.client_state = state);
                Ok(())
            }
            _ if !answered => Err(ActionError::invalid("the call is not answered yet")),
            Action::SendDtmf { digits, duration } => self.media.send_dtmf(&digits, duration).map_err(media_err),
            Action::Refer(refer) => {
                crate::sip::refer::start(self.ctx, self.info, self.dialog, &refer).await.map_err(ActionError::invalid)
            }
            Action::Mute(muted) => self.media.mute_inbound(muted).map_err(media_err),
            Action::StreamingStart(spec) => {
                if self.agent.is_some() {
                    return Err(ActionError::invalid("a stream is already running on this call"));
                }
                let (port, endpoint) = stream_pair(&spec);
                self.media.switch_to_pcm(tap, port).await.map_err(media_err)?;
                // Spans started from now on record at the stream's rate.
                if let Some(rec) = self.recorder.as_mut() {
                    rec.set_sample_rate(spec.playout_rate());
                }
                let stream = AgentStream::start(*spec, self.info.clone(), self.ctx.events.clone(), endpoint);
                let id = stream.stream_id.clone();
                self.control.update(|v| v.stream_id = Some(id));
                *self.agent = Some(stream);
                Ok(())
            }
            Action::PlaybackStart { url, pcm, loops, overlay } => {
                let id = self.playbacks.keys().max().map_or(1, |m| m + 1);
                self.media.play(id, pcm.to_vec(), overlay, tap).await.map_err(media_err)?;
                self.playbacks.insert(id, Playing { url: url.clone(), overlay, pcm, loops });
                self.playback_event("call.playback.started", &url, overlay, None);
                Ok(())
            }
            Action::RecordStart { channels } => {
                let Some(rec) = self.recorder.as_mut() else {
                    return Err(ActionError::invalid("recording is disabled ([recording] enabled = false)"));
                };
                match rec.record_start(channels) {
                    Ok(path) => {
                        tracing::info!(call_control_id = %self.info.ids.call_control_id, path = %path.display(), "recording started");
                        Ok(())
                    }
                    Err(e) => Err(ActionError {
                        status: 422,
                        code: "90055",
                        title: "Recording could not start",
                        detail: format!("{e} ({})", e.reason()),
                    }),
                }
            }
            Action::RecordStop => {
                let span = self.recorder.as_mut().and_then(|r| r.record_stop());
                if span.is_none() {
                    return Err(ActionError::invalid("the call is not being recorded"));
                }
                finish_recording(self.ctx, self.info, span).await;
                Ok(())
            }
            Action::PlaybackStop => {
                if self.playbacks.is_empty() {
                    return Err(ActionError::invalid("nothing is playing on this call"));
                }
                self.media.stop_playback().await.map_err(media_err)
            }
            Action::JoinRoom(_) if self.room.is_some() => Err(ActionError::invalid("the call is already in a room")),
            Action::JoinRoom(join) => {
                let rooms = self.ctx.rooms.clone();
                let leg =
                    crate::sip::rooms::join_leg(&rooms, self.media, tap, self.info, &join).await.map_err(|e| {
                        ActionError { status: 422, code: "90020", title: "Could not join the conference", detail: e }
                    })?;
                let mut membership = crate::sip::rooms::Membership { leg, agent: None };
                if let Some(agent) = self.agent.take() {
                    match crate::sip::rooms::move_agent(self.ctx, agent, self.info, &membership.leg).await {
                        Ok((stream, handle)) => {
                            let id = stream.stream_id.clone();
                            self.control.update(|v| v.stream_id = Some(id));
                            *self.agent = Some(stream);
                            membership.agent = Some(handle);
                        }
                        Err(e) => {
                            tracing::warn!(call_control_id = %self.info.ids.call_control_id, "the call's agent could not follow it into the room: {e}")
                        }
                    }
                }
                *self.room = Some(membership);
                Ok(())
            }
            Action::LeaveRoom => match self.room.take() {
                // The leg leaves (silence until something else is attached), and an
                // agent that followed the call in leaves with it.
                Some(m) => {
                    m.leg.leave();
                    Ok(())
                }
                None => Err(ActionError::invalid("the call is not in a room")),
            },
            Action::StreamingStop => match self.agent.take() {
                Some(a) => {
                    if let Some(m) = self.room.as_mut() {
                        // The agent leaves the room with its stream.
                        m.agent = None;
                    }
                    a.stop().await;
                    if let Some(rec) = self.recorder.as_mut() {
                        rec.set_sample_rate(8000);
                    }
                    self.control.update(|v| v.stream_id = None);
                    Ok(())
                }
                None => Err(ActionError::invalid("no stream is running on this call")),
            },
        }
    }
}

impl LegControl<'_> {
    fn playback_event(&self, event_type: &str, url: &str, overlay: bool, status: Option<&str>) {
        let mut p = self.info.payload("answered");
        p.insert("media_url".into(), serde_json::json!(url));
        p.insert("overlay".into(), serde_json::json!(overlay));
        if let Some(s) = status {
            p.insert("status".into(), serde_json::json!(s));
        }
        self.ctx.events.emit(self.info.event(event_type, p));
    }

    /// A playback reached its end or was stopped: loop it again, or report
    /// `call.playback.ended` (`status`: `completed` / `cancelled`).
    pub async fn playback_done(&mut self, id: u64, completed: bool) {
        let Some(mut p) = self.playbacks.remove(&id) else { return };
        let again = completed
            && match p.loops {
                Loops::Forever => true,
                Loops::Times(n) => {
                    p.loops = Loops::Times(n.saturating_sub(1));
                    n > 1
                }
            };
        if again && self.media.play(id, p.pcm.to_vec(), p.overlay, None).await.is_ok() {
            self.playbacks.insert(id, p);
            return;
        }
        let status = if completed { "completed" } else { "cancelled" };
        self.playback_event("call.playback.ended", &p.url, p.overlay, Some(status));
    }

    /// The call ended: playbacks still running end with `call_hangup`.
    pub fn playbacks_hung_up(&mut self) {
        for (_, p) in std::mem::take(self.playbacks) {
            self.playback_event("call.playback.ended", &p.url, p.overlay, Some("call_hangup"));
        }
    }
}

/// The media task's port and the stream's endpoint for `spec`'s tracks.
pub fn stream_pair(spec: &StreamSpec) -> (crate::media::pcm::PcmPort, crate::media::pcm::PcmEndpoint) {
    let heard = matches!(spec.track, StreamTrack::InboundTrack | StreamTrack::BothTracks);
    let said = matches!(spec.track, StreamTrack::OutboundTrack | StreamTrack::BothTracks);
    let (mut port, endpoint) = pcm_pair(64, heard, said);
    port.sample_rate = spec.playout_rate();
    (port, endpoint)
}

/// The next event of the call's agent stream; pending forever without one.
pub async fn next_agent_event(agent: &mut Option<AgentStream>) -> StreamEvent {
    match agent {
        Some(a) => a.next_event().await,
        None => std::future::pending().await,
    }
}

/// The recorder of an answered call when recording is enabled, with its first span
/// started when `record` (the route's `record = true`, or `record-from-answer`);
/// a span that cannot start is logged and the call goes on.
/// `sample_rate_hz`: 16000 when the call's agent streams L16/16000
/// ([`StreamSpec::playout_rate`]), else 8000.
pub fn new_recorder(ctx: &SipContext, info: &CallInfo, record: bool, sample_rate_hz: u32) -> Option<CallRecorder> {
    let cfg = ctx.config.borrow().clone();
    if !cfg.recording.enabled {
        return None;
    }
    let mut rec = CallRecorder::new(&cfg.recording, &info.ids.call_session_id, &info.ids.call_control_id);
    rec.set_sample_rate(sample_rate_hz);
    if record {
        if let Err(e) = rec.record_start(None) {
            tracing::warn!(call_control_id = %info.ids.call_control_id, "recording not started: {e} (the call goes on)");
        }
    }
    Some(rec)
}

/// Starts the call's recording when its route asks for one and recording is
/// enabled; a recording that cannot start is logged and the call goes on.
pub fn start_recording(ctx: &SipContext, route: &Route, info: &CallInfo) -> Option<CallRecording> {
    start_recording_if(ctx, route.record, info)
}

/// Starts a recording of the call when `wanted` and recording is enabled.
pub fn start_recording_if(ctx: &SipContext, wanted: bool, info: &CallInfo) -> Option<CallRecording> {
    let cfg = ctx.config.borrow().clone();
    if !wanted || !cfg.recording.enabled {
        return None;
    }
    match crate::record::can_start(&cfg.recording.dir, MIN_FREE_FOR_RECORDING) {
        Ok(true) => {}
        Ok(false) => {
            tracing::warn!(call_control_id = %info.ids.call_control_id, "not recording: low disk space");
            return None;
        }
        Err(_) => {} // the directory may not exist yet; starting creates it
    }
    match CallRecording::start(&cfg.recording, &info.ids.call_session_id, &info.ids.call_control_id, 1) {
        Ok(r) => Some(r),
        Err(e) => {
            tracing::warn!(call_control_id = %info.ids.call_control_id, "recording not started: {e} (the call goes on)");
            None
        }
    }
}

/// Stops a recording (on a blocking thread) and emits `call.recording.saved`.
pub async fn finish_recording(ctx: &SipContext, info: &CallInfo, recording: Option<CallRecording>) {
    let Some(rec) = recording else { return };
    let saved = tokio::task::spawn_blocking(move || rec.stop_blocking()).await.ok().flatten();
    if let Some(saved) = saved {
        let api_base = ctx.config.borrow().api.base_url();
        let mut p = info.payload("hangup");
        p.extend(crate::record::recording_saved_fields(&saved, &api_base));
        ctx.events.emit(info.event("call.recording.saved", p));
    }
}

/// How long a parked call rings without `ring_for` before it is refused (480).
pub const PARK_LIMIT: Duration = Duration::from_secs(60);

/// Free space a new recording needs on the recordings' file system.
pub const MIN_FREE_FOR_RECORDING: u64 = 64 * 1024 * 1024;

fn terminated_code(r: &TerminatedReason) -> u16 {
    match r {
        TerminatedReason::ProxyError(c) | TerminatedReason::UacOther(c) | TerminatedReason::UasOther(c) => c.code(),
        TerminatedReason::UacBusy | TerminatedReason::UasBusy => 486,
        TerminatedReason::UasDecline => 603,
        TerminatedReason::ProxyAuthRequired => 407,
        _ => 500,
    }
}

/// The digit of an INFO body: `Signal=5` (`application/dtmf-relay`) or a bare
/// digit (`application/dtmf`).
pub fn dtmf_from_info(body: &[u8]) -> Option<char> {
    let text = std::str::from_utf8(body).ok()?;
    let value = text
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once('=')?;
            k.trim().eq_ignore_ascii_case("signal").then(|| v.trim())
        })
        .unwrap_or(text.trim());
    let c = value.chars().next()?;
    let c = c.to_ascii_uppercase();
    (value.chars().count() == 1 && (c.is_ascii_digit() || matches!(c, '*' | '#' | 'A'..='D'))).then_some(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dtmf_info_bodies() {
        assert_eq!(dtmf_from_info(b"Signal=5\r\nDuration=160\r\n"), Some('5'));
        assert_eq!(dtmf_from_info(b"Signal= #\r\nDuration=100"), Some('#'));
        assert_eq!(dtmf_from_info(b"7"), Some('7'));
        assert_eq!(dtmf_from_info(b"Signal=12\r\n"), None);
        assert_eq!(dtmf_from_info(b"Signal=x"), None);
        assert_eq!(dtmf_from_info(&[0xff, 0xfe]), None);
    }
}
