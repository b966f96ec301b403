//! The route "test" button of the console (`POST /v2/routes/{index}/test`,
//! issue 24): the box places a short call to one `[[route]]` and reports what
//! happened, so a technician can tell "the agent answers" from "the agent's URL
//! is wrong" or "the carrier refuses the forward" without a phone in hand.
//!
//! The test call is a real SIP call from the box to its own listener over
//! loopback, so it crosses everything a carrier's call crosses after trunk
//! admission: the listener, RFC 3261 §8.2 checks, the SDP offer/answer, RTP
//! ports and the media engine, the route's target (agent stream, room, park,
//! forward to a far trunk), events and call records.
//!
//! - **The calling side** (`connection_id` [`CONNECTION_ID`], direction
//!   `outgoing`, `client_state` = base64 of `sipbridge route test`) sends
//!   silence from answer, and counts what comes back (its `call.hangup`'s
//!   `call_quality_stats.inbound`). It hangs up after the talk time (default
//!   [`DEFAULT_TALK`], at most [`MAX_TALK`]).
//! - **The called side** is the route, chosen by index — not by matching `to`,
//!   so the test reaches exactly the route the button belongs to, whatever comes
//!   before it. It carries `X-Sipbridge-Route-Test: route=<name>` in
//!   `call.initiated`'s `custom_headers` (so a backend can tell a test call),
//!   except on forward routes, whose X- headers pass on to the carrier.
//! - Both legs share one `call_session_id` (and a forward's far leg too): the
//!   report lists every event of that session.
//!
//! **Admission.** The INVITE carries [`HEADER`] with this process's random
//! 128-bit key ([`Key`]), which never leaves the box: it is sent only to the
//! box's own listener, and stripped from the called leg's custom headers (and
//! so from events and from a forward's far leg). It is honoured only from a
//! local address (loopback, or the listener's own address) and compared in
//! constant time; anything else is an ordinary INVITE from an unknown source.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use base64::Engine as _;
use rsipstack::transaction::transaction::Transaction;
use serde_json::{Value, json};
use subtle::ConstantTimeEq;
use tokio::sync::broadcast::error::RecvError;

use super::outbound::{Dial, DialError};
use super::{SipContext, msg};
use crate::call::control::{Action, ActionError};
use crate::call::core::{Answer, CallCore, Plan, Role, Setup};
use crate::call::services::RouteTestRequest;
use crate::call::shell::{MediaPlan, Shell};
use crate::config::values::{NumberPattern, SipUri, Transport};
use crate::config::{Codec, Config, Provider, Route, RouteTarget, Trunk};

/// The header that marks the box's own test INVITE:
/// `route=<index>;session=<call_session_id>;key=<hex key>`.
pub const HEADER: &str = "X-Sipbridge-Route-Test";
/// The calling side's `connection_id` (also the called side's trunk name).
pub const CONNECTION_ID: &str = "route-test";
/// Talk time when the request gives none.
pub const DEFAULT_TALK: Duration = Duration::from_secs(5);
/// The longest talk time a request may ask for.
pub const MAX_TALK: Duration = Duration::from_secs(30);
/// How long the route may ring before the test gives up (`no_answer`), when
/// the request gives no `ring_secs`.
pub const RING_TIMEOUT: Duration = Duration::from_secs(30);
/// After the calling side's hangup, how long the report waits for the other
/// legs' `call.hangup`.
const LEGS_GRACE: Duration = Duration::from_secs(3);
/// Route tests that may run at once: each holds two call slots for up to
/// ring + talk + 15 s, also after the client that asked has gone.
pub const AT_ONCE: usize = 2;
static RUNNING: AtomicUsize = AtomicUsize::new(0);

/// One of the [`AT_ONCE`] slots, given back when dropped (with the follower).
struct Slot;

impl Slot {
    fn take() -> Option<Slot> {
        if RUNNING.fetch_add(1, Ordering::AcqRel) >= AT_ONCE {
            RUNNING.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(Slot)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        RUNNING.fetch_sub(1, Ordering::AcqRel);
    }
}

/// This process's route-test key: 128 random bits as 32 hex digits.
#[derive(Clone)]
pub struct Key(String);

impl Key {
    /// A new random key (UUID v4 randomness: the OS's CSPRNG through getrandom).
    pub fn random() -> Self {
        let (a, b) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
        let bits: Vec<u8> = a.as_bytes()[..8].iter().chain(&b.as_bytes()[..8]).copied().collect();
        Self(bits.iter().map(|b| format!("{b:02x}")).collect())
    }

    fn matches(&self, candidate: &str) -> bool {
        candidate.len() == self.0.len() && bool::from(candidate.as_bytes().ct_eq(self.0.as_bytes()))
    }
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Key(..)")
    }
}

/// The parsed [`HEADER`].
#[derive(Debug, PartialEq, Eq)]
struct Marker {
    route: usize,
    session: String,
    key: String,
}

fn parse(value: &str) -> Option<Marker> {
    let (mut route, mut session, mut key) = (None, None, None);
    for part in value.split(';') {
        match part.trim().split_once('=') {
            Some(("route", v)) => route = v.parse().ok(),
            Some(("session", v)) if !v.is_empty() && v.len() <= 64 => session = Some(v.to_string()),
            Some(("key", v)) => key = Some(v.to_string()),
            _ => return None,
        }
    }
    Some(Marker { route: route?, session: session?, key: key? })
}

/// Whether `tx` comes from this box: a loopback address or a listener's own
/// (Linux drops packets from outside that claim either, RFC 1812 §5.3.7).
pub fn is_local(ctx: &SipContext, tx: &Transaction) -> bool {
    msg::source_ip(tx).map(super::trunk::canonical).is_some_and(|source| {
        source.is_loopback() || ctx.listeners.iter().any(|(_, a)| super::trunk::canonical(a.ip()) == source)
    })
}

/// The marker of `tx`, when it is the box's own test INVITE: from a local
/// address and with this process's key.
fn own_marker(ctx: &SipContext, tx: &Transaction) -> Option<Marker> {
    if !is_local(ctx, tx) {
        return None;
    }
    let marker = parse(&msg::header(&tx.original, HEADER, None)?)?;
    ctx.route_test_key.matches(&marker.key).then_some(marker)
}

/// Whether `tx` is the box's own route test INVITE (the dispatcher admits it
/// although no trunk matches its source).
pub fn is_own(ctx: &SipContext, tx: &Transaction) -> bool {
    own_marker(ctx, tx).is_some()
}

/// A test INVITE as the called side takes it.
#[derive(Debug, Clone)]
pub struct TestCall {
    /// The route under test.
    pub route: Route,
    /// The trunk the call counts as arriving on ([`CONNECTION_ID`], the codecs
    /// of the route's trunk).
    pub trunk: Trunk,
    /// The calling side's session: the called leg joins it.
    pub call_session_id: String,
}

/// The test call `tx` is, if it is one (see [`is_own`]) and its route still
/// exists in `cfg`.
pub fn recognise(ctx: &SipContext, tx: &Transaction, cfg: &Config) -> Option<TestCall> {
    let marker = own_marker(ctx, tx)?;
    let route = cfg.routes.get(marker.route)?.clone();
    Some(TestCall { trunk: test_trunk(cfg, &route, None), route, call_session_id: marker.session })
}

/// The X- headers of an incoming call: never [`HEADER`] as received (its key
/// stays on the box; a carrier's forged one is dropped); on the box's own test
/// call (`is_test`) `X-Sipbridge-Route-Test: route=<name>` instead, except on
/// forward routes, whose X- headers go on to the carrier.
pub fn called_side_headers(headers: Vec<(String, String)>, route: &Route, is_test: bool) -> Vec<(String, String)> {
    let mut out: Vec<_> = headers.into_iter().filter(|(n, _)| !n.eq_ignore_ascii_case(HEADER)).collect();
    if is_test && !matches!(route.target, RouteTarget::Forward(_)) {
        out.push((HEADER.to_string(), format!("route={}", route.name)));
    }
    out
}

/// A trunk named [`CONNECTION_ID`] with the codecs of the route's trunk (or
/// PCMU, PCMA), sending to `proxy` (the calling side) or nowhere (the called side).
fn test_trunk(cfg: &Config, route: &Route, proxy: Option<SipUri>) -> Trunk {
    let codecs = route
        .trunk
        .as_deref()
        .and_then(|t| cfg.trunk(t))
        .map(|t| t.codecs.clone())
        .unwrap_or_else(|| vec![Codec::Pcmu, Codec::Pcma]);
    Trunk {
        name: CONNECTION_ID.into(),
        provider: Provider::Generic,
        proxy,
        username: None,
        password: None,
        register: false,
        register_expires: Duration::from_secs(600),
        numbers: Vec::new(),
        codecs,
        inbound_allow: Vec::new(),
        inbound_username: None,
        inbound_password: None,
        auth_realm: None,
    }
}

/// Where the calling side sends its INVITE: the first UDP (else TCP) listener,
/// at a loopback address when it listens on all addresses.
fn own_listener(listeners: &[(Transport, SocketAddr)]) -> Option<SipUri> {
    let (transport, addr) = listeners
        .iter()
        .find(|(t, _)| *t == Transport::Udp)
        .or_else(|| listeners.iter().find(|(t, _)| *t == Transport::Tcp))?;
    let ip = match addr.ip() {
        IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::from([127, 0, 0, 1]),
        IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(std::net::Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    let host = super::addr::host_literal(ip);
    let param = if *transport == Transport::Tcp { ";transport=tcp" } else { "" };
    SipUri::parse(&format!("sip:{host}:{}{param}", addr.port())).ok()
}

/// The number the test dials when the request names none: the route's `to`
/// when it is one number, else (not for forward routes, which would dial a
/// made-up number through the carrier) its prefix, the route trunk's first
/// number, or `route-test`.
fn default_to(cfg: &Config, route: &Route) -> Result<String, String> {
    match &route.to {
        Some(NumberPattern::Exact(n)) => return Ok(n.clone()),
        _ if matches!(route.target, RouteTarget::Forward(_)) => {
            return Err(format!(
                "route {:?} forwards to a carrier and matches more than one number: give the number to dial as \"to\"",
                route.name
            ));
        }
        Some(NumberPattern::Prefix(p)) if !p.is_empty() && p != "+" => return Ok(p.clone()),
        _ => {}
    }
    let trunk_number = route.trunk.as_deref().and_then(|t| cfg.trunk(t)).and_then(|t| t.numbers.first().cloned());
    Ok(trunk_number.unwrap_or_else(|| CONNECTION_ID.to_string()))
}

fn invalid(detail: impl Into<String>) -> ActionError {
    ActionError { status: 422, code: "10015", title: "Invalid route test", detail: detail.into() }
}

/// Places the test call to route `req.index`, waits for its end (at most the
/// ring time + talk time + a few seconds), and reports it:
///
/// `{"route": {"index", "name", "target": {"type", "name"}}, "to", "from",
/// "call_session_id", "call_control_id", "result":
/// "answered"|"not_answered"|"refused"|"incomplete", "summary" (one sentence),
/// "sip_response" (the final SIP status the calling side got), "setup_ms",
/// "talk_ms", "hangup_cause", "hangup_source", "media": {"packets_received",
/// "packets_lost", "jitter_max_ms", "mos"} (what came back to the calling
/// side; null when no media ran), "events": [{"event_type", "leg":
/// "test_caller"|"route", "call_control_id", "occurred_at", and for
/// `call.hangup` "hangup_cause", "sip_hangup_cause"}]}`.
///
/// # Errors
/// No such route (404), a forward route without a number to dial, a number
/// that is not a dial string, no UDP/TCP listener (422), [`AT_ONCE`] tests
/// already running (429), no capacity or RTP ports (503), the INVITE could not
/// be sent (500).
pub async fn run(ctx: &Arc<SipContext>, req: RouteTestRequest) -> Result<Value, ActionError> {
    let cfg = ctx.services.config.borrow().clone();
    let route = cfg.routes.get(req.index).cloned().ok_or_else(|| ActionError {
        status: 404,
        code: "10005",
        title: "Resource not found",
        detail: format!("there is no route {} (the config has {})", req.index, cfg.routes.len()),
    })?;
    let proxy = own_listener(&ctx.listeners)
        .ok_or_else(|| invalid("a route test calls the box's own UDP or TCP SIP listener, and there is none"))?;
    let to = match req.to {
        Some(to) => to,
        None => default_to(&cfg, &route).map_err(invalid)?,
    };
    let from = match (req.from, &route.target) {
        (Some(f), _) => f,
        (None, RouteTarget::Forward(t)) => {
            cfg.trunk(t).and_then(|t| t.numbers.first().cloned()).unwrap_or_else(|| CONNECTION_ID.into())
        }
        (None, _) => CONNECTION_ID.into(),
    };
    let slot = Slot::take().ok_or_else(|| ActionError {
        status: 429,
        code: "10011",
        title: "Too many requests",
        detail: format!("{AT_ONCE} route tests are running; try again when one ends"),
    })?;
    let talk = req.talk.unwrap_or(DEFAULT_TALK).min(MAX_TALK);
    let ring = req.ring.unwrap_or(RING_TIMEOUT).min(Duration::from_secs(60));
    let permit = ctx.lifecycle.admit().map_err(|r| ActionError::no_capacity(format!("{r:?}")))?;
    let session = uuid::Uuid::new_v4().to_string();
    let events = ctx.services.events.subscribe();
    let dial = Dial {
        trunk: test_trunk(&cfg, &route, Some(proxy)),
        from: from.clone(),
        to: to.clone(),
        ring_timeout: ring,
        call_session_id: Some(session.clone()),
        headers: Vec::new(),
        private_headers: vec![(
            HEADER.to_string(),
            format!("route={};session={session};key={}", req.index, ctx.route_test_key.0),
        )],
        client_state: Some(base64::engine::general_purpose::STANDARD.encode("sipbridge route test")),
        webhook_url: None,
        session_expires: None,
    };
    let (info, leg) = super::outbound::dial(ctx, dial).await.map_err(|e| match e {
        DialError::BadNumber(why) => invalid(why),
        DialError::NoPorts => ActionError::no_capacity("no RTP ports left"),
        e => ActionError { status: 500, code: "10007", title: "Route test failed", detail: e.to_string() },
    })?;
    let caller = info.ids.call_control_id.clone();
    tracing::info!(route = %route.name, %to, call_control_id = %caller, "route test call");
    let control = ctx.services.calls.register(&info, "bridging");
    let setup = Setup { info, role: Role::Uac, plan: Plan::Terminate, answer: Answer::Now, session_expires: None };
    let core = CallCore::new(setup, Instant::now());
    let shell =
        Shell::new(ctx.services.clone(), core, leg, None, MediaPlan::Silence, false, control, Some(Box::new(permit)));
    tokio::spawn(Box::new(shell).run());

    // Followed on a task of its own: when the API's client goes away (a closed
    // console tab, a curl timeout) the handler is dropped, and the test call must
    // still be hung up after its talk time.
    let follower = tokio::spawn(follow(Arc::clone(ctx), events, session.clone(), caller.clone(), talk, ring, slot));
    let (seen, setup, missed) = follower.await.map_err(|e| ActionError {
        status: 500,
        code: "10007",
        title: "Route test failed",
        detail: format!("following the test call failed: {e}"),
    })?;
    Ok(report(req.index, &route, &to, &from, &session, &caller, &seen, setup, missed))
}

/// Follows the test call's session (holding one of the [`AT_ONCE`] slots)
/// until the calling side (`caller`) has hung up, and the other legs too (for at most [`LEGS_GRACE`] more): hangs the call
/// up `talk` after its answer, and in any case `ring + talk + 15 s` after the
/// start. Returns the session's events in order, the time to answer, and how
/// many events of the box the subscription missed.
async fn follow(
    ctx: Arc<SipContext>,
    mut events: tokio::sync::broadcast::Receiver<Arc<crate::call::CallEvent>>,
    session: String,
    caller: String,
    talk: Duration,
    ring: Duration,
    _slot: Slot,
) -> (Vec<Arc<crate::call::CallEvent>>, Option<Duration>, u64) {
    let started = Instant::now();
    let give_up = started + ring + talk + Duration::from_secs(15);
    let mut seen: Vec<Arc<crate::call::CallEvent>> = Vec::new();
    let (mut answered, mut hang_up_at, mut caller_ended, mut missed) = (None, None, None::<Instant>, 0u64);
    loop {
        let open_legs = legs(&seen).iter().filter(|l| !l.1).count();
        if let Some(at) = caller_ended {
            if open_legs == 0 || at.elapsed() >= LEGS_GRACE {
                break;
            }
        }
        let wake = match (hang_up_at, caller_ended) {
            (_, Some(at)) => at + LEGS_GRACE,
            (Some(h), None) => std::cmp::min(h, give_up),
            (None, None) => give_up,
        };
        tokio::select! {
            r = events.recv() => match r {
                Ok(e) if e.call_session_id.as_deref() == Some(session.as_str()) => {
                    let own = e.payload.get("call_control_id").and_then(Value::as_str) == Some(caller.as_str());
                    if own && e.event_type == "call.answered" && answered.is_none() {
                        answered = Some(Instant::now());
                        hang_up_at = Some(Instant::now() + talk);
                    }
                    if own && e.event_type == "call.hangup" {
                        caller_ended = Some(Instant::now());
                    }
                    seen.push(e);
                }
                Ok(_) => {}
                Err(RecvError::Lagged(n)) => missed += n,
                Err(RecvError::Closed) => break,
            },
            _ = tokio::time::sleep_until(wake.into()) => {
                if caller_ended.is_some() {
                    continue;
                }
                let _ = ctx.services.calls.command(&caller, Action::Hangup).await;
                if Instant::now() >= give_up {
                    break;
                }
                hang_up_at = None;
            }
        }
    }
    (seen, answered.map(|a| a - started), missed)
}

/// Each leg of the session seen: (call_control_id, has hung up).
fn legs(seen: &[Arc<crate::call::CallEvent>]) -> Vec<(String, bool)> {
    let mut out: Vec<(String, bool)> = Vec::new();
    for e in seen {
        let Some(id) = e.payload.get("call_control_id").and_then(Value::as_str) else { continue };
        let ended = e.event_type == "call.hangup";
        match out.iter_mut().find(|l| l.0 == id) {
            Some(l) => l.1 |= ended,
            None => out.push((id.to_string(), ended)),
        }
    }
    out
}

#[allow(clippy::too_many_arguments)]
fn report(
    index: usize,
    route: &Route,
    to: &str,
    from: &str,
    session: &str,
    caller: &str,
    seen: &[Arc<crate::call::CallEvent>],
    setup: Option<Duration>,
    missed: u64,
) -> Value {
    let own =
        |e: &&Arc<crate::call::CallEvent>| e.payload.get("call_control_id").and_then(Value::as_str) == Some(caller);
    let hangup = seen.iter().filter(own).find(|e| e.event_type == "call.hangup");
    let field = |k: &str| hangup.and_then(|h| h.payload.get(k)).and_then(Value::as_str).map(str::to_string);
    let sip: Option<u16> = field("sip_hangup_cause").and_then(|c| c.parse().ok());
    let answered_at = seen.iter().filter(own).find(|e| e.event_type == "call.answered").map(|e| e.occurred_at);
    let talk = match (answered_at, hangup) {
        (Some(a), Some(h)) => h.occurred_at.duration_since(a).ok(),
        _ => None,
    };
    let inbound = hangup.and_then(|h| h.payload.get("call_quality_stats")).and_then(|q| q.get("inbound"));
    let number = |k: &str| inbound.and_then(|i| i.get(k)).and_then(Value::as_str).and_then(|v| v.parse::<f64>().ok());
    let media = inbound.map(|_| {
        json!({
            "packets_received": number("packet_count").map(|v| v as u64),
            "packets_lost": number("skip_packet_count").map(|v| v as u64),
            "jitter_max_ms": number("jitter_max_variance"),
            "mos": number("mos"),
        })
    });
    let received = number("packet_count").unwrap_or(0.0) as u64;
    let result = match (setup, sip) {
        (Some(_), _) => "answered",
        (None, Some(408 | 480 | 487)) | (None, None) => "not_answered",
        (None, Some(_)) => "refused",
    };
    let result = if hangup.is_none() { "incomplete" } else { result };
    let summary = match result {
        "answered" => {
            let secs = talk.map_or(0.0, |t| t.as_secs_f64());
            let setup_ms = setup.map_or(0, |s| s.as_millis());
            let back = if received == 0 {
                "no RTP came back from the route".to_string()
            } else {
                format!(
                    "{received} RTP packets came back (MOS {})",
                    number("mos").map_or("–".to_string(), |m| format!("{m:.2}"))
                )
            };
            format!("answered after {setup_ms} ms; talked {secs:.1} s; {back}")
        }
        "refused" => format!(
            "refused with SIP {} ({})",
            sip.unwrap_or(0),
            field("hangup_cause").unwrap_or_else(|| "unspecified".into())
        ),
        "not_answered" => format!("not answered ({})", field("hangup_cause").unwrap_or_else(|| "no_answer".into())),
        _ => "the test call did not end in time; it was hung up".to_string(),
    };
    let events: Vec<Value> = seen
        .iter()
        .map(|e| {
            let id = e.payload.get("call_control_id").and_then(Value::as_str).unwrap_or_default();
            let mut v = json!({
                "event_type": e.event_type,
                "leg": if id == caller { "test_caller" } else { "route" },
                "call_control_id": id,
                "occurred_at": crate::call::rfc3339_micros(e.occurred_at),
            });
            if e.event_type == "call.hangup" {
                v["hangup_cause"] = e.payload.get("hangup_cause").cloned().unwrap_or(Value::Null);
                v["sip_hangup_cause"] = e.payload.get("sip_hangup_cause").cloned().unwrap_or(Value::Null);
            }
            v
        })
        .collect();
    json!({
        "route": {"index": index, "name": route.name, "target": route.target.to_json()},
        "to": to,
        "from": from,
        "call_session_id": session,
        "call_control_id": caller,
        "result": result,
        "summary": summary,
        "sip_response": sip,
        "setup_ms": setup.map(|s| s.as_millis() as u64),
        "talk_ms": talk.map(|t| t.as_millis() as u64),
        "hangup_cause": field("hangup_cause"),
        "hangup_source": field("hangup_source"),
        "media": media,
        "events": events,
        "events_missed": missed,
        "tested_at": crate::call::rfc3339_micros(SystemTime::now()),
    })
}

/// The SIP stack runs the route tests of the control API.
pub(super) fn testing(ctx: &Arc<SipContext>, req: RouteTestRequest) -> crate::call::services::Testing<'_> {
    Box::pin(run(ctx, req))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_marker_parses_only_whole() {
        assert_eq!(
            parse("route=2;session=abc-1;key=00ff"),
            Some(Marker { route: 2, session: "abc-1".into(), key: "00ff".into() })
        );
        assert_eq!(parse("route=2;session=abc"), None);
        assert_eq!(parse("route=x;session=abc;key=1"), None);
        assert_eq!(parse("route=1;session=a;key=1;extra=2"), None);
        assert_eq!(parse(&format!("route=1;session={};key=1", "s".repeat(65))), None);
    }

    #[test]
    fn keys_are_random_and_compared_whole() {
        let (a, b) = (Key::random(), Key::random());
        assert_eq!(a.0.len(), 32);
        assert!(a.0.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a.0, b.0);
        assert!(a.matches(&a.0.clone()));
        assert!(!a.matches(&b.0));
        assert!(!a.matches(&a.0[..31]));
        assert!(!a.matches(""));
        assert_eq!(format!("{a:?}"), "Key(..)");
    }

    #[test]
    fn the_listener_called_is_loopback_for_a_wildcard_bind() {
        let l = vec![
            (Transport::Tls, "0.0.0.0:5061".parse().unwrap()),
            (Transport::Tcp, "0.0.0.0:5060".parse().unwrap()),
            (Transport::Udp, "[::]:5070".parse().unwrap()),
        ];
        let uri = own_listener(&l).unwrap();
        assert_eq!((uri.host.as_str(), uri.port, uri.transport), ("::1", Some(5070), None));
        let uri = own_listener(&l[..2]).unwrap();
        assert_eq!((uri.host.as_str(), uri.port, uri.transport), ("127.0.0.1", Some(5060), Some(Transport::Tcp)));
        assert!(own_listener(&l[..1]).is_none());
    }
}
