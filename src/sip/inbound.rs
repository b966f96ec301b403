//! Incoming calls (UAS, RFC 3261 §13.3): trunk admission (address or digest),
//! call admission (`node.max_calls`, shutdown), routing, SDP answer, then the
//! call's core (`call::core`) set up from the route and run by the one shell
//! (`call::shell`) with this INVITE's dialog as its near leg (`sip::leg`).

use std::sync::Arc;
use std::time::SystemTime;

use rsipstack::sip::{Header, StatusCode};
use rsipstack::transaction::transaction::Transaction;

use super::digest::Verdict;
use super::leg::SipLeg;
use super::respond::{reply, unknown_source};
use super::{SipContext, addr, dialstring, msg, routing};
use crate::agent::stream::StreamSpec;
use crate::call::core::{Answer, CallCore, DialogInput, Input, LegId, PARK_LIMIT, Plan, Role, Setup, Termination};
use crate::call::lifecycle::{CallPermit, Refusal};
use crate::call::shell::{MediaPlan, Shell};
use crate::call::{CallIds, CallInfo, Direction};
use crate::config::{Route, RouteTarget, Trunk};
use crate::media::session::{MediaSession, Reject};

use crate::call::core::MIN_SE;

/// Handles a new INVITE (no To tag).
pub async fn incoming_invite(ctx: Arc<SipContext>, mut tx: Transaction) {
    let Some(source) = msg::source_addr(&tx) else {
        reply(&mut tx, StatusCode::BadRequest, vec![]).await;
        return;
    };
    let cfg = ctx.services.config.borrow().clone();

    // 1. Which trunk? (The box's own route test names its route instead.)
    let test = super::route_test::recognise(&ctx, &tx, &cfg);
    let trunk = match (&test, ctx.trunks.by_source(source.ip())) {
        (Some(t), _) => t.trunk.clone(),
        (None, Some(t)) => t.clone(),
        (None, None) if ctx.trunks.has_credential_trunks() => match authenticate(&ctx, &mut tx).await {
            Some(t) => t,
            None => return,
        },
        (None, None) => {
            unknown_source(&ctx, &mut tx).await;
            return;
        }
    };
    if test.is_none() {
        ctx.activity.invite(&trunk.name, source.ip(), SystemTime::now());
    }

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
    let selected = match &test {
        Some(t) => Some(t.route.clone()),
        None => routing::select(&cfg.routes, &trunk.name, &to, &from).cloned(),
    };
    let Some(route) = selected else {
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
    let session_expires = msg::session_expires(&tx.original);
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
    // `noise_suppression`: the route's, else its agent's; applied when media starts.
    let suppression = route.noise_suppression.unwrap_or_else(|| match &route.target {
        RouteTarget::Agent(name) => cfg.agent(name).map(|a| a.noise_suppression).unwrap_or_default(),
        _ => Default::default(),
    });
    let _ = media.set_suppression(suppression);

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
    let custom_headers = super::route_test::called_side_headers(msg::x_headers(&tx.original), &route, test.is_some());
    let info = CallInfo {
        ids: match &test {
            Some(t) => CallIds::new_leg(&t.call_session_id),
            None => CallIds::new_session(),
        },
        direction: Direction::Incoming,
        from,
        to,
        connection_id: trunk.name.clone(),
        sip_call_id: msg::call_id(&tx.original),
        start_time: SystemTime::now(),
        client_state: None,
        custom_headers,
        webhook_url: None,
    };
    tracing::info!(
        call_control_id = %info.ids.call_control_id, trunk = %trunk.name, route = %route.name,
        from = %info.from, to = %info.to, "incoming call"
    );
    let initiated = info.initiated("parked").with_route(&route.name);
    ctx.services.events.emit(match &route.target {
        RouteTarget::Agent(agent) => initiated.with_agent(agent),
        _ => initiated,
    });
    let control = ctx.services.calls.register(&info, "parked");
    let near = SipLeg::server(Arc::clone(&ctx), dialog.clone(), state_rx, media, answer);
    tokio::spawn(run_incoming(Arc::clone(&ctx), info, route, near, session_expires.map(|(se, _)| se), control, permit));

    // Drive the INVITE server transaction (100 Trying, 200, ACK or CANCEL).
    let mut dialog = dialog;
    if let Err(e) = dialog.handle(&mut tx).await {
        tracing::debug!(error = %e, "INVITE transaction ended with an error");
    }
}

/// An admitted incoming call: its core set up from the route, the far leg
/// dialled for a forward route, then its shell started as a task of its own.
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
        RouteTarget::Park | RouteTarget::AnswerUrl(_) => (
            Plan::Terminate,
            MediaPlan::Silence,
            Answer::Parked(if route.ring_for.is_zero() { PARK_LIMIT } else { route.ring_for }),
        ),
        RouteTarget::Room(_) | RouteTarget::RoomPerCaller(_) => {
            let name = crate::call::rooms::room_for(&route.target, &info.from).unwrap_or_default();
            (Plan::Room { pin: route.pin.clone() }, MediaPlan::Room(name), ring)
        }
        RouteTarget::Agent(name) => {
            let cfg = ctx.services.config.borrow().clone();
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
        match Box::pin(super::forward::dial_far(&ctx, &info, trunk, session_expires)).await {
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
    let mut shell =
        Shell::new(ctx.services.clone(), core, near, far, media_plan, route.record, control, Some(Box::new(permit)));
    shell.record_format = route.record_format;
    if let RouteTarget::AnswerUrl(app) = &route.target {
        let control = crate::call::services::CallControl::new(ctx.services.clone(), Arc::new(Arc::clone(&ctx)));
        crate::texml::spawn(control, info.clone(), (**app).clone());
    }
    // The call runs as a task of its own: this set-up future (its arguments, the
    // core and legs before they moved into the shell) is freed now, instead of
    // sitting under the shell's for the whole call (3.3 KiB, issue 20).
    tokio::spawn(Box::new(shell).run());
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
                let policy = ctx.services.config.borrow().sip.auth_ban;
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
