//! Incoming calls (UAS, RFC 3261 §13.3): trunk admission (address or digest),
//! call admission (`node.max_calls`, shutdown), routing, SDP answer, then the
//! call's core (`call::core`) set up from the route and run by the one shell
//! (`sip::shell`). Also the media work API commands do on a call's own media
//! ([`LegControl`]) and the recording helpers every kind of call uses.

use std::sync::Arc;
use std::time::SystemTime;

use rsipstack::dialog::invite_dialog::InviteDialog;
use rsipstack::sip::{Header, StatusCode};
use rsipstack::transaction::transaction::Transaction;

use super::digest::Verdict;
use super::leg::SipLeg;
use super::server::{reply, unknown_source};
use super::shell::{MediaPlan, Shell};
use super::{SipContext, addr, dialstring, msg, routing};
use crate::agent::stream::{AgentStream, StreamEvent, StreamSpec};
use crate::call::control::{Action, ActionError, Registration};
use crate::call::core::{Answer, CallCore, DialogInput, Input, LegId, Plan, Role, Setup, Termination};
use crate::call::playback::{Loops, Playbacks, Playing};
use crate::call::recording::{CallRecorder, CallRecording};
use crate::media::session::{MediaSession, Reject};
use crate::call::{CallIds, CallInfo, Direction};
use crate::config::{Route, RouteTarget, StreamTrack, Trunk};
use crate::daemon::lifecycle::{CallPermit, Refusal};
use crate::media::leg::Tap;
use crate::media::pcm::pcm_pair;

use crate::call::core::MIN_SE;

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
    let near = SipLeg::server(Arc::clone(&ctx), dialog.clone(), state_rx, media, answer);
    tokio::spawn(run_incoming(Arc::clone(&ctx), info, route, near, session_expires.map(|(se, _)| se), control, permit));

    // Drive the INVITE server transaction (100 Trying, 200, ACK or CANCEL).
    let mut dialog = dialog;
    if let Err(e) = dialog.handle(&mut tx).await {
        tracing::debug!(error = %e, "INVITE transaction ended with an error");
    }
}

/// An admitted incoming call: its core set up from the route, the far leg
/// dialled for a forward route, then the shell until the call ends.
async fn run_incoming(
    ctx: Arc<SipContext>,
    info: CallInfo,
    route: Route,
    near: SipLeg,
    session_expires: Option<u64>,
    control: crate::call::control::Registration,
    permit: CallPermit,
) {
    let ring = if route.ring_for.is_zero() { Answer::Now } else { Answer::After(route.ring_for) };
    let (plan, media_plan, answer) = match &route.target {
        RouteTarget::Forward(_) => (Plan::Forward, MediaPlan::Relay, Answer::ByFarLeg),
        RouteTarget::Park => (
            Plan::Terminate,
            MediaPlan::Silence,
            Answer::Parked(if route.ring_for.is_zero() { PARK_LIMIT } else { route.ring_for }),
        ),
        RouteTarget::Room(_) | RouteTarget::RoomPerCaller(_) => {
            let name = crate::sip::rooms::room_for(&route.target, &info.from).unwrap_or_default();
            (Plan::Room { pin: route.pin.clone() }, MediaPlan::Room(name), ring)
        }
        RouteTarget::Agent(name) => {
            let cfg = ctx.config.borrow().clone();
            let media = match cfg.agent(name) {
                None => MediaPlan::Unavailable,
                Some(agent) => match StreamSpec::from_agent(agent) {
                    None => MediaPlan::Echo,
                    Some(spec) => MediaPlan::Agent { spec: Box::new(spec), on_disconnect: agent.on_disconnect },
                },
            };
            (Plan::Terminate, media, ring)
        }
    };
    let setup = Setup { info: info.clone(), role: Role::Uas, plan, answer, session_expires };
    let mut core = CallCore::new(setup, std::time::Instant::now());
    let mut far = None;
    if let RouteTarget::Forward(trunk) = &route.target {
        match super::forward::dial_far(&ctx, &info, trunk, session_expires).await {
            Ok(leg) => {
                core.add_far(leg.0);
                far = Some(leg.1);
            }
            Err(e) => {
                tracing::warn!(call_control_id = %info.ids.call_control_id, "forward failed: {e}");
                // No far leg: the caller is refused as the far end would have been.
                core.handle(
                    std::time::Instant::now(),
                    Input::Dialog(LegId::Near, DialogInput::Terminated(Termination::Status(503))),
                );
                let _ = near.dialog.reject(Some(StatusCode::ServiceUnavailable), None);
            }
        }
    }
    let shell = Shell::new(ctx, core, near, far, media_plan, route.record, control, Some(permit));
    shell.run().await;
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
    parse_session_expires(&msg::header(req, "Session-Expires", Some("x"))?)
}

/// `Session-Expires` of a response (a UAC's 200 OK, RFC 4028 §7.2).
pub fn session_expires_of_response(resp: &rsipstack::sip::Response) -> Option<(u64, Option<String>)> {
    let v = resp.headers.iter().find_map(|h| match h {
        Header::SessionExpires(v) => Some(v.to_string()),
        Header::Other(n, v) if n.eq_ignore_ascii_case("session-expires") || n.eq_ignore_ascii_case("x") => {
            Some(v.clone())
        }
        _ => None,
    })?;
    parse_session_expires(&v)
}

fn parse_session_expires(v: &str) -> Option<(u64, Option<String>)> {
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

pub use crate::call::core::PARK_LIMIT;

/// Free space a new recording needs on the recordings' file system.
pub const MIN_FREE_FOR_RECORDING: u64 = 64 * 1024 * 1024;

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
