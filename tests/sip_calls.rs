//! Incoming calls on the real daemon, driven by SIPp over loopback: BYE from either
//! side, CANCEL, hold/resume, OPTIONS, trunk admission (drop/403, digest), routing
//! (404), admission (503), UDP and TCP.

mod common;

use std::path::Path;
use std::time::Duration;

use common::gateway::{Gateway, GatewayBuilder, Route, Trunk};
use common::*;
use nix::sys::signal::Signal;

const WAIT: Duration = Duration::from_secs(30);

/// A daemon listening on UDP and TCP (one free port), trunk `local` admitting
/// `allow`, every call to the echo agent (`route_extra` in its route); tests add
/// more (trunks, an RTP range...).
fn daemon(dir: &Path, allow: &str, route_extra: &str) -> GatewayBuilder {
    let port = free_port();
    Gateway::builder(dir)
        .node_name("sip-test")
        .max_calls(10)
        .sip_listen(&[&format!("udp://127.0.0.1:{port}"), &format!("tcp://127.0.0.1:{port}")], port)
        .rtp_extra("timeout = \"30s\"")
        .trunk(Trunk::new("local").allow(allow))
        .agent("echo", "builtin:echo", "")
        .route(Route::new().name("echo").agent("echo").extra(route_extra))
}

/// A call record's `hangup_cause`, `hangup_source`, `sip_hangup_cause`.
fn hangup(call: &serde_json::Map<String, serde_json::Value>) -> (&str, &str, &str) {
    let text = |k: &str| call[k].as_str().unwrap_or_else(|| panic!("{k} in {call:?}"));
    (text("hangup_cause"), text("hangup_source"), text("sip_hangup_cause"))
}

fn run_sipp(dir: &Path, name: &str, args: Vec<String>) -> Sipp {
    let mut s = Sipp::start(dir, name, &args);
    let code = s.wait(WAIT);
    assert_eq!(code, 0, "sipp {name} failed ({code})\n{}", s.report());
    s
}

fn refused_scenario(dir: &Path, code: u16, header: &str) -> String {
    let text = std::fs::read_to_string(scenario("uac_refused.xml.in"))
        .unwrap()
        .replace("CODE", &code.to_string())
        .replace("CHECK_HEADER", header);
    let path = dir.join(format!("uac_refused_{code}.xml"));
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

#[test]
fn udp_call_with_bye_from_the_caller() {
    let dir = tempfile::tempdir().unwrap();
    let gw = daemon(dir.path(), "127.0.0.0/8", "").start();
    let port = gw.sip_port;
    let target = format!("127.0.0.1:{port}");
    run_sipp(dir.path(), "call", sipp_args("uac_call.xml", "+13125550100", &target, "127.0.0.1", &["-t", "u1"]));
    let call = &gw.ended_calls(1)[0];
    let text = |k: &str| call[k].as_str().unwrap_or_default();
    assert_eq!(
        (text("direction"), text("to_number"), text("from_number")),
        ("incoming", "+13125550100", "+14155550123")
    );
    assert_eq!(hangup(call), ("normal_clearing", "caller", "200"));
    gw.stop();
}

#[test]
fn tcp_call_with_bye_from_the_caller() {
    let dir = tempfile::tempdir().unwrap();
    let gw = daemon(dir.path(), "127.0.0.0/8", "").start();
    let port = gw.sip_port;
    let target = format!("127.0.0.1:{port}");
    run_sipp(dir.path(), "tcp", sipp_args("uac_call.xml", "+13125550100", &target, "127.0.0.1", &["-t", "t1"]));
    assert_eq!(hangup(&gw.ended_calls(1)[0]), ("normal_clearing", "caller", "200"));
    gw.stop();
}

#[test]
fn bye_from_the_box_when_the_shutdown_grace_ends() {
    let dir = tempfile::tempdir().unwrap();
    let gw = daemon(dir.path(), "127.0.0.0/8", "").start();
    let port = gw.sip_port;
    let target = format!("127.0.0.1:{port}");
    let mut sipp = Sipp::start(
        dir.path(),
        "waitbye",
        &sipp_args("uac_wait_bye.xml", "+13125550100", &target, "127.0.0.1", &["-t", "u1"]),
    );
    gw.wait_log("answered");
    gw.signal(Signal::SIGTERM);
    assert_eq!(sipp.wait(WAIT), 0, "{}", sipp.report());
    assert_eq!(hangup(&gw.ended_calls(1)[0]), ("normal_clearing", "callee", "200"));
    let log = gw.exited();
    assert!(log.contains("shutdown grace over: hanging up remaining calls"), "{log}");
}

/// The box's BYE runs on its own task, not the call's (the call ends without
/// waiting for the answer): at shutdown the stack still waits for it, so a
/// caller that lets the first BYE go unanswered gets its retransmission (T1 =
/// 500 ms, RFC 3261 §17.1.2.2) and answers that; the daemon does not stop
/// under it.
#[test]
fn the_box_s_bye_at_shutdown_is_retransmitted_until_answered() {
    let dir = tempfile::tempdir().unwrap();
    let gw = daemon(dir.path(), "127.0.0.0/8", "").start();
    let port = gw.sip_port;
    let target = format!("127.0.0.1:{port}");
    // uac_wait_bye.xml, except that the 200 to the box's BYE waits 1.2 s: the
    // BYE's retransmissions in between are taken as such (logged, unanswered).
    let take_bye = "<recv request=\"BYE\" timeout=\"20000\"/>";
    let xml = std::fs::read_to_string(scenario("uac_wait_bye.xml")).unwrap();
    assert!(xml.contains(take_bye), "uac_wait_bye.xml takes a BYE");
    let slow = dir.path().join("uac_slow_bye_answer.xml");
    std::fs::write(&slow, xml.replace(take_bye, &format!("{take_bye}\n  <pause milliseconds=\"1200\"/>"))).unwrap();
    let mut sipp = Sipp::start(
        dir.path(),
        "slowbye",
        &sipp_args(slow.to_str().unwrap(), "+13125550100", &target, "127.0.0.1", &["-t", "u1"]),
    );
    gw.wait_log("answered");
    gw.signal(Signal::SIGTERM);
    assert_eq!(sipp.wait(WAIT), 0, "{}", sipp.report());
    let trace = sipp.messages();
    // Each received message: "UDP message received [n] bytes :", a blank line, then the message.
    let byes = trace
        .split("message received")
        .skip(1)
        .filter(|m| m.split_once('\n').is_some_and(|(_, message)| message.trim_start().starts_with("BYE ")))
        .count();
    assert!(byes >= 2, "the box retransmitted its BYE while the caller kept silent ({byes} received):\n{trace}");
    assert_eq!(hangup(&gw.ended_calls(1)[0]), ("normal_clearing", "callee", "200"));
    let log = gw.exited();
    assert!(log.contains("shutdown grace over: hanging up remaining calls"), "{log}");
    assert!(!log.contains("stopping without the answer to some BYEs"), "the BYE was answered before the stop: {log}");
}

#[test]
fn cancel_while_ringing_is_originator_cancel() {
    let dir = tempfile::tempdir().unwrap();
    let gw = daemon(dir.path(), "127.0.0.0/8", "ring_for = \"10s\"").start();
    let port = gw.sip_port;
    let target = format!("127.0.0.1:{port}");
    run_sipp(dir.path(), "cancel", sipp_args("uac_cancel.xml", "+13125550100", &target, "127.0.0.1", &["-t", "u1"]));
    assert_eq!(hangup(&gw.ended_calls(1)[0]), ("originator_cancel", "caller", "487"));
    gw.stop();
}

#[test]
fn hold_and_resume_by_reinvite_keep_the_call() {
    let dir = tempfile::tempdir().unwrap();
    let gw = daemon(dir.path(), "127.0.0.0/8", "").start();
    let port = gw.sip_port;
    let target = format!("127.0.0.1:{port}");
    run_sipp(dir.path(), "hold", sipp_args("uac_hold.xml", "+13125550100", &target, "127.0.0.1", &["-t", "u1"]));
    let call = &gw.ended_calls(1)[0];
    assert_eq!(hangup(call), ("normal_clearing", "caller", "200"));
    assert!(call["answer_time"].is_string(), "answered, held, resumed: {call:?}");
    gw.stop();
}

/// Sends `msg` (LF line ends, made CRLF) from `sock`; the first final response, or
/// `None` when none came within 2 s (the daemon drops the request).
fn udp_exchange(sock: &std::net::UdpSocket, port: u16, msg: &str) -> Option<String> {
    sock.send_to(msg.replace('\n', "\r\n").as_bytes(), ("127.0.0.1", port)).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut buf = [0u8; 4096];
    loop {
        let n = sock.recv(&mut buf).ok()?;
        let r = String::from_utf8_lossy(&buf[..n]).into_owned();
        if !r.starts_with("SIP/2.0 1") {
            return Some(r);
        }
    }
}

fn stranger_request(method: &str, sock: &std::net::UdpSocket, port: u16) -> String {
    let local = sock.local_addr().unwrap();
    format!(
        "{method} sip:+13125550100@127.0.0.1:{port} SIP/2.0\nVia: SIP/2.0/UDP {local};rport;branch=z9hG4bK-{method}\nFrom: <sip:a@{local}>;tag=s1\nTo: <sip:+13125550100@127.0.0.1:{port}>\nCall-ID: stranger-{method}@127.0.0.5\nCSeq: 1 {method}\nMax-Forwards: 70\nContent-Length: 0\n\n"
    )
}

#[test]
fn options_from_a_trunk_get_200_and_from_strangers_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let gw = daemon(dir.path(), "127.0.0.2/32", "").start();
    let port = gw.sip_port;
    let target = format!("127.0.0.1:{port}");
    let s = run_sipp(dir.path(), "options", sipp_args("uac_options.xml", "x", &target, "127.0.0.2", &["-t", "u1"]));
    // Towards a trunk: the configured User-Agent (default "sipbridge", no version).
    assert!(s.messages().contains("User-Agent: sipbridge\r\n"), "{}", s.report());
    // From 127.0.0.5 (no trunk) the same OPTIONS gets no answer at all (default
    // [sip] unknown_source = "drop").
    let sock = std::net::UdpSocket::bind("127.0.0.5:0").unwrap();
    let r = udp_exchange(&sock, port, &stranger_request("OPTIONS", &sock, port));
    assert!(r.is_none(), "{r:?}");
    gw.wait_log("request from a source that matches no trunk: dropped");
    gw.stop();
}

#[test]
fn invite_from_an_unknown_source_is_dropped_and_never_reaches_routing() {
    let dir = tempfile::tempdir().unwrap();
    let gw = daemon(dir.path(), "127.0.0.2/32", "").start();
    let port = gw.sip_port;
    let sock = std::net::UdpSocket::bind("127.0.0.5:0").unwrap();
    let r = udp_exchange(&sock, port, &stranger_request("INVITE", &sock, port));
    assert!(r.is_none(), "{r:?}");
    let log = gw.wait_log("matches no trunk: dropped");
    assert!(!log.contains("incoming call"), "{log}");
    gw.stop();
}

#[test]
fn with_unknown_source_reject_strangers_get_403_without_user_agent() {
    let dir = tempfile::tempdir().unwrap();
    let gw = daemon(dir.path(), "127.0.0.2/32", "").start();
    let port = gw.sip_port;
    // [sip] unknown_source applies to new requests after a reload.
    let cfg = dir.path().join("sipbridge.toml");
    let text = std::fs::read_to_string(&cfg).unwrap().replace("[sip]\n", "[sip]\nunknown_source = \"reject\"\n");
    std::fs::write(&cfg, text).unwrap();
    gw.signal(Signal::SIGHUP);
    gw.wait_log("configuration reloaded");
    let target = format!("127.0.0.1:{port}");
    let sc = refused_scenario(dir.path(), 403, "Via:");
    let mut args = sipp_args("uac_call.xml", "+13125550100", &target, "127.0.0.5", &["-t", "u1"]);
    args[1] = sc;
    let s = run_sipp(dir.path(), "403", args);
    let msgs = s.messages();
    assert!(msgs.contains("SIP/2.0 403 Forbidden"), "{}", s.report());
    assert!(!msgs.contains("User-Agent") && !msgs.contains("Server:"), "{msgs}");
    let sock = std::net::UdpSocket::bind("127.0.0.5:0").unwrap();
    let r = udp_exchange(&sock, port, &stranger_request("OPTIONS", &sock, port)).unwrap_or_default();
    assert!(r.starts_with("SIP/2.0 403") && !r.contains("User-Agent") && !r.contains("Server:"), "{r}");
    let log = gw.stderr();
    assert!(log.contains("matches no trunk: 403") && !log.contains("incoming call"), "{log}");
    gw.stop();
}

#[test]
fn no_route_gets_404() {
    let dir = tempfile::tempdir().unwrap();
    let gw = daemon(dir.path(), "127.0.0.0/8", "to = \"+13125550100\"").start();
    let port = gw.sip_port;
    let target = format!("127.0.0.1:{port}");
    let sc = refused_scenario(dir.path(), 404, "Via:");
    let mut args = sipp_args("uac_call.xml", "+19995550000", &target, "127.0.0.1", &["-t", "u1"]);
    args[1] = sc;
    run_sipp(dir.path(), "404", args);
    gw.wait_log("no route matches: 404");
    gw.stop();
}

#[test]
fn over_max_calls_gets_503_with_retry_after() {
    let dir = tempfile::tempdir().unwrap();
    let gw = daemon(dir.path(), "127.0.0.0/8", "").start();
    let port = gw.sip_port;
    // max_calls = 1 through the environment is not possible after start; rewrite and reload.
    let cfg = dir.path().join("sipbridge.toml");
    let text = std::fs::read_to_string(&cfg).unwrap().replace("max_calls = 10", "max_calls = 1");
    std::fs::write(&cfg, text).unwrap();
    gw.signal(Signal::SIGHUP);
    gw.wait_log("configuration reloaded");
    let target = format!("127.0.0.1:{port}");
    let mut long = Sipp::start(
        dir.path(),
        "long",
        &sipp_args("uac_long.xml", "+13125550100", &target, "127.0.0.1", &["-t", "u1"]),
    );
    gw.wait_log("answered");
    let sc = refused_scenario(dir.path(), 503, "Retry-After:");
    let mut args = sipp_args("uac_call.xml", "+13125550100", &target, "127.0.0.1", &["-t", "u1"]);
    args[1] = sc;
    run_sipp(dir.path(), "503", args);
    assert_eq!(long.wait(WAIT), 0, "the first call is not disturbed\n{}", long.report());
    gw.wait_log("node.max_calls reached");
    gw.stop();
}

#[test]
fn digest_challenged_caller_is_admitted_with_the_right_password_only() {
    let dir = tempfile::tempdir().unwrap();
    let extra = r#"
[[trunk]]
name = "livekit"
provider = "livekit"
proxy = "sip:127.0.0.9:5999"
inbound_username = "livekit-out"
inbound_password = "lk-secret-1234"
"#;
    // The local trunk admits only 127.0.0.2: callers from 127.0.0.4 must authenticate.
    let gw = daemon(dir.path(), "127.0.0.2/32", "").blocks(extra).start();
    let port = gw.sip_port;
    let target = format!("127.0.0.1:{port}");
    run_sipp(
        dir.path(),
        "auth",
        sipp_args(
            "uac_auth.xml",
            "+13125550100",
            &target,
            "127.0.0.4",
            &["-t", "u1", "-au", "livekit-out", "-ap", "lk-secret-1234"],
        ),
    );
    let log = gw.wait_log("hangup");
    assert!(log.contains("trunk=livekit"), "{log}");
    // A wrong password is challenged again: the 200 never comes.
    let mut bad = Sipp::start(
        dir.path(),
        "authbad",
        &sipp_args(
            "uac_auth.xml",
            "+13125550100",
            &target,
            "127.0.0.4",
            &["-t", "u1", "-au", "livekit-out", "-ap", "wrong", "-timeout", "3s"],
        ),
    );
    assert_ne!(bad.wait(WAIT), 0, "{}", bad.report());
    assert!(!bad.messages().contains("SIP/2.0 200 OK"), "{}", bad.report());
    gw.wait_log("digest authentication failed: wrong password");
    gw.stop();
}

/// Two carriers: A (SIPp UAC on 127.0.0.2) calls in, the route forwards to B (SIPp
/// UAS on 127.0.0.3). Returns (daemon, target for A, B's port).
fn start_forwarding_daemon(dir: &Path, b_auth: bool) -> (Gateway, String, u16) {
    let b_port = free_port();
    let mut carrier_b = Trunk::new("carrier-b").proxy(&format!("sip:127.0.0.3:{b_port}")).allow("127.0.0.3/32");
    if b_auth {
        carrier_b = carrier_b.extra("username = \"box-user\"\npassword = \"box-pass\"");
    }
    let gw = Gateway::builder(dir)
        .node_name("b2bua")
        .trunk(Trunk::new("carrier-a").allow("127.0.0.2/32"))
        .trunk(carrier_b)
        .route(Route::new().name("a to b").trunk("carrier-a").extra("forward = \"carrier-b\""))
        .start();
    let target = format!("127.0.0.1:{}", gw.sip_port);
    (gw, target, b_port)
}

#[test]
fn forward_between_two_trunks_ties_both_dialogs() {
    let dir = tempfile::tempdir().unwrap();
    let (gw, target, b_port) = start_forwarding_daemon(dir.path(), false);
    // BYE from the caller reaches the far carrier.
    let mut b = sipp_carrier(dir.path(), "b", "uas_answer.xml", b_port);
    run_sipp(dir.path(), "a", sipp_args("uac_call.xml", "+13125550100", &target, "127.0.0.2", &["-t", "u1"]));
    assert_eq!(b.wait(WAIT), 0, "{}", b.report());
    let log = gw.wait_log("outgoing call");
    assert!(log.contains("trunk=carrier-b from=+14155550123 to=+13125550100"), "{log}");
    // BYE from the far carrier reaches the caller.
    let mut b = sipp_carrier(dir.path(), "b2", "uas_answer_then_bye.xml", b_port);
    let mut a = Sipp::start(
        dir.path(),
        "a2",
        &sipp_args("uac_wait_bye.xml", "+13125550100", &target, "127.0.0.2", &["-t", "u1"]),
    );
    assert_eq!(b.wait(WAIT), 0, "{}\n{}", b.report(), gw.stderr());
    assert_eq!(a.wait(WAIT), 0, "{}\n{}", a.report(), gw.stderr());
    gw.stop();
}

/// RFC 4028 on a forwarded call (issue 19): the caller's Session-Expires (a
/// Telnyx-shaped INVITE, 1800 s, refresher=uac) is echoed in the box's 200 OK to
/// the caller (`uac_telnyx.xml` checks it) and asked of the far carrier in the
/// box's INVITE (`uas_answer_timer.xml` checks it). Expiry and refresh on both
/// legs are in `call::core`'s tests on a fake clock (a 90 s minimum interval
/// is too long for this suite).
#[test]
fn forward_passes_the_session_timer_to_both_legs() {
    let dir = tempfile::tempdir().unwrap();
    let (gw, target, b_port) = start_forwarding_daemon(dir.path(), false);
    let mut b = sipp_carrier(dir.path(), "b-timer", "uas_answer_timer.xml", b_port);
    run_sipp(dir.path(), "a-timer", sipp_args("uac_telnyx.xml", "+13125550100", &target, "127.0.0.2", &["-t", "u1"]));
    assert_eq!(b.wait(WAIT), 0, "{}\n{}", b.report(), gw.stderr());
    gw.wait_log("cause=\"normal_clearing\" source=\"caller\" sip_code=200");
    gw.stop();
}

#[test]
fn forward_propagates_cancel_and_failure_codes() {
    let dir = tempfile::tempdir().unwrap();
    let (gw, target, b_port) = start_forwarding_daemon(dir.path(), false);
    // The caller gives up while B rings: B sees the CANCEL.
    let mut b = sipp_carrier(dir.path(), "ring", "uas_ring_cancelled.xml", b_port);
    run_sipp(dir.path(), "cancel", sipp_args("uac_cancel.xml", "+13125550100", &target, "127.0.0.2", &["-t", "u1"]));
    assert_eq!(b.wait(WAIT), 0, "{}", b.report());
    gw.stop();
    // B is busy: the caller gets 486. A fresh daemon and carrier port, so no late
    // retransmission of the first call can reach the second carrier instance.
    let dir2 = tempfile::tempdir().unwrap();
    let (gw, target, b_port) = start_forwarding_daemon(dir2.path(), false);
    let dir = dir2;
    let mut b = sipp_carrier(dir.path(), "busy", "uas_busy.xml", b_port);
    let sc = refused_scenario(dir.path(), 486, "Via:");
    let mut args = sipp_args("uac_call.xml", "+13125550100", &target, "127.0.0.2", &["-t", "u1"]);
    args[1] = sc;
    run_sipp(dir.path(), "486", args);
    assert_eq!(b.wait(WAIT), 0, "{}", b.report());
    gw.wait_log("cause=\"user_busy\" source=\"callee\" sip_code=486");
    gw.stop();
}

/// The caller gives up while a forwarded call rings, and the far end answers
/// as the box's CANCEL reaches it (200 to the CANCEL, then 200 to the INVITE
/// instead of 487): the box ACKs that 2xx and ends the session with a BYE
/// (RFC 3261 §9.1, §15), though the call it belonged to has already ended.
#[test]
fn a_2xx_that_crosses_the_box_s_cancel_is_acked_and_ended_with_a_bye() {
    let dir = tempfile::tempdir().unwrap();
    let (gw, target, b_port) = start_forwarding_daemon(dir.path(), false);
    let mut b = sipp_carrier(dir.path(), "crossed", "uas_answer_after_cancel.xml", b_port);
    run_sipp(dir.path(), "cancel", sipp_args("uac_cancel.xml", "+13125550100", &target, "127.0.0.2", &["-t", "u1"]));
    assert_eq!(b.wait(WAIT), 0, "the far end got ACK and BYE for its 2xx: {}\n{}", b.report(), gw.stderr());
    gw.stop();
}

/// The far end answers a forwarded call with an SDP the box cannot use (G.729
/// only, not offered): the box ACKs its 2xx and ends it with a BYE (the
/// BYE on a task of its own, not the call's loop), and the caller gets 488.
#[test]
fn an_unusable_answer_from_the_far_end_is_ended_with_a_bye_and_the_caller_gets_488() {
    let dir = tempfile::tempdir().unwrap();
    let (gw, target, b_port) = start_forwarding_daemon(dir.path(), false);
    let answer = std::fs::read_to_string(scenario("uas_answer.xml")).unwrap();
    let codecs = "m=audio [media_port] RTP/AVP 0 8 101";
    assert!(answer.contains(codecs), "uas_answer.xml answers PCMU/PCMA");
    let g729 = answer.replace(codecs, "m=audio [media_port] RTP/AVP 18").replace(
        "a=rtpmap:0 PCMU/8000\n      a=rtpmap:8 PCMA/8000\n      a=rtpmap:101 telephone-event/8000\n      a=fmtp:101 0-15",
        "a=rtpmap:18 G729/8000",
    );
    assert!(g729.contains("G729/8000") && !g729.contains("PCMU/8000"), "{g729}");
    let sf = dir.path().join("uas_answer_g729.xml");
    std::fs::write(&sf, g729).unwrap();
    let mut b = sipp_carrier(dir.path(), "g729", sf.to_str().unwrap(), b_port);
    let mut args = sipp_args("uac_call.xml", "+13125550100", &target, "127.0.0.2", &["-t", "u1"]);
    args[1] = refused_scenario(dir.path(), 488, "Via:");
    run_sipp(dir.path(), "a488", args);
    assert_eq!(b.wait(WAIT), 0, "the far end got ACK and BYE for its 2xx: {}\n{}", b.report(), gw.stderr());
    gw.wait_log("unusable SDP answer");
    gw.stop();
}

#[test]
fn outbound_invite_answers_a_407_challenge_with_the_trunk_credentials() {
    let dir = tempfile::tempdir().unwrap();
    let (gw, target, b_port) = start_forwarding_daemon(dir.path(), true);
    let mut b = sipp_carrier(dir.path(), "b407", "uas_407.xml", b_port);
    run_sipp(dir.path(), "a", sipp_args("uac_call.xml", "+13125550100", &target, "127.0.0.2", &["-t", "u1"]));
    assert_eq!(b.wait(WAIT), 0, "{}", b.report());
    gw.stop();
}

#[test]
fn register_answers_a_qop_list_challenge_and_refreshes_before_expiry() {
    use md5::Digest as _;
    let dir = tempfile::tempdir().unwrap();
    let reg_port = free_port();
    let mut registrar = {
        let args: Vec<String> = [
            "-sf",
            &scenario("uas_registrar.xml").display().to_string(),
            "-i",
            "127.0.0.3",
            "-p",
            &reg_port.to_string(),
            "-m",
            "1",
            "-t",
            "u1",
            "-timeout",
            "30s",
            "-timeout_error",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        Sipp::start(dir.path(), "registrar", &args)
    };
    let extra = format!(
        r#"
[[trunk]]
name = "telnyx"
provider = "telnyx"
proxy = "sip:127.0.0.3:{reg_port}"
username = "shop042"
password = "reg-pass"
register = true
"#
    );
    let mut gw = daemon(dir.path(), "127.0.0.2/32", "").blocks(&extra).start();
    assert_eq!(registrar.wait(WAIT), 0, "{}\n{}", registrar.report(), gw.stderr());
    // systemd's STATUS= follows the registration.
    let deadline = std::time::Instant::now() + WAIT;
    while !gw.notify.seen.iter().any(|m| m.contains("telnyx registered (2s)")) {
        assert!(std::time::Instant::now() < deadline, "{:?}", gw.notify.seen);
        gw.notify.wait_for("STATUS=", Duration::from_secs(1));
    }
    gw.wait_log("registration: registered");

    // The digest answer is right (computed here independently, RFC 2617 §3.2.2).
    let trace = registrar.messages();
    let auth_line = trace.lines().find(|l| l.starts_with("Authorization: Digest")).expect("an Authorization header");
    let field = |k: &str| {
        let i = auth_line.find(&format!("{k}=")).unwrap() + k.len() + 1;
        let rest = &auth_line[i..];
        let v = if let Some(r) = rest.strip_prefix('"') {
            r.split('"').next().unwrap()
        } else {
            rest.split(',').next().unwrap()
        };
        v.trim().to_string()
    };
    let hex = |s: String| md5::Md5::digest(s.as_bytes()).iter().map(|b| format!("{b:02x}")).collect::<String>();
    assert_eq!(field("qop"), "auth", "qop is the token auth, chosen from the list");
    let ha1 = hex("shop042:reg.test:reg-pass".to_string());
    let ha2 = hex(format!("REGISTER:{}", field("uri")));
    let expected = hex(format!("{ha1}:5f2b0c9e4a1d:{}:{}:auth:{ha2}", field("nc"), field("cnonce")));
    assert_eq!(field("response"), expected, "{auth_line}");
    gw.stop();
}

#[test]
fn a_telnyx_shaped_invite_is_accepted_with_session_timer() {
    let dir = tempfile::tempdir().unwrap();
    // A Telnyx IP connection: only the proxy's address may call (here 127.0.0.2).
    let gw = daemon(dir.path(), "127.0.0.2/32", "to = \"+13125550100\"").start();
    let port = gw.sip_port;
    let target = format!("127.0.0.1:{port}");
    run_sipp(dir.path(), "telnyx", sipp_args("uac_telnyx.xml", "+13125550100", &target, "127.0.0.2", &["-t", "u1"]));
    let log = gw.wait_log("hangup");
    assert!(log.contains("from=+14155550123 to=+13125550100"), "{log}");
    gw.stop();
}

#[test]
fn info_dtmf_update_refresh_and_405_for_unknown_methods() {
    let dir = tempfile::tempdir().unwrap();
    let gw = daemon(dir.path(), "127.0.0.0/8", "").start();
    let port = gw.sip_port;
    let target = format!("127.0.0.1:{port}");
    let mut s = Sipp::start(
        dir.path(),
        "info",
        &sipp_args("uac_info_update.xml", "+13125550100", &target, "127.0.0.1", &["-t", "u1"]),
    );
    assert_eq!(s.wait(WAIT), 0, "{}\n{}", s.report(), gw.stderr());
    let log = gw.wait_log("hangup");
    assert!(log.contains("digit=5") && log.contains("DTMF (SIP INFO)"), "{log}");
    gw.stop();
}

#[test]
fn ipv6_call_on_loopback() {
    if std::net::UdpSocket::bind("[::1]:0").is_err() {
        panic!("IPv6 loopback is required by this test (::1)");
    }
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let gw = Gateway::builder(dir.path())
        .sip_listen(&[&format!("udp://[::1]:{port}")], port)
        .trunk(Trunk::new("v6").allow("::1/128"))
        .agent("echo", "builtin:echo", "")
        .route(Route::new().agent("echo"))
        .start();
    let target = format!("[::1]:{port}");
    run_sipp(dir.path(), "v6", sipp_args("uac_call.xml", "+13125550100", &target, "::1", &["-t", "u1"]));
    let log = gw.wait_log("hangup");
    assert!(log.contains("cause=\"normal_clearing\""), "{log}");
    gw.stop();
}

#[test]
fn no_rtp_for_the_timeout_hangs_up_with_cause_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let gw = daemon(dir.path(), "127.0.0.0/8", "").start();
    let port = gw.sip_port;
    // A 2 s RTP timeout via reload (the SIPp caller sends no RTP at all).
    let cfg = dir.path().join("sipbridge.toml");
    let text = std::fs::read_to_string(&cfg).unwrap().replace("timeout = \"30s\"", "timeout = \"2s\"");
    std::fs::write(&cfg, text).unwrap();
    gw.signal(Signal::SIGHUP);
    gw.wait_log("configuration reloaded");
    let target = format!("127.0.0.1:{port}");
    run_sipp(dir.path(), "silent", sipp_args("uac_wait_bye.xml", "+13125550100", &target, "127.0.0.1", &["-t", "u1"]));
    let log = gw.wait_log("hangup");
    assert!(log.contains("no RTP for 2s: BYE"), "{log}");
    assert!(log.contains("cause=\"timeout\" source=\"callee\""), "{log}");
    gw.stop();
}

#[test]
fn rtp_port_exhaustion_gets_503() {
    let dir = tempfile::tempdir().unwrap();
    let base = free_even_block(2);
    // One RTP port pair only.
    let gw = daemon(dir.path(), "127.0.0.0/8", "").rtp_range(base, base + 1).start();
    let port = gw.sip_port;
    let target = format!("127.0.0.1:{port}");
    let mut long = Sipp::start(
        dir.path(),
        "long",
        &sipp_args("uac_long.xml", "+13125550100", &target, "127.0.0.1", &["-t", "u1"]),
    );
    gw.wait_log("answered");
    let sc = refused_scenario(dir.path(), 503, "Retry-After:");
    let mut args = sipp_args("uac_call.xml", "+13125550100", &target, "127.0.0.1", &["-t", "u1"]);
    args[1] = sc;
    run_sipp(dir.path(), "503ports", args);
    assert_eq!(long.wait(WAIT), 0, "{}", long.report());
    gw.wait_log("RTP port range exhausted: 503");
    // The pair came back: a new call works.
    run_sipp(dir.path(), "again", sipp_args("uac_call.xml", "+13125550100", &target, "127.0.0.1", &["-t", "u1"]));
    gw.stop();
}

#[test]
fn while_shutting_down_new_calls_get_503_and_active_calls_finish() {
    let dir = tempfile::tempdir().unwrap();
    let gw = daemon(dir.path(), "127.0.0.0/8", "").start();
    let port = gw.sip_port;
    // A long grace, via reload, so the active call can end by itself.
    let cfg = dir.path().join("sipbridge.toml");
    let text = std::fs::read_to_string(&cfg).unwrap().replace("shutdown_grace = \"1s\"", "shutdown_grace = \"20s\"");
    std::fs::write(&cfg, text).unwrap();
    gw.signal(Signal::SIGHUP);
    gw.wait_log("configuration reloaded");
    let target = format!("127.0.0.1:{port}");
    let mut long = Sipp::start(
        dir.path(),
        "long",
        &sipp_args("uac_long.xml", "+13125550100", &target, "127.0.0.1", &["-t", "u1"]),
    );
    gw.wait_log("answered");
    gw.signal(Signal::SIGTERM);
    gw.wait_log("stopping: new calls are refused");
    let sc = refused_scenario(dir.path(), 503, "Retry-After:");
    let mut args = sipp_args("uac_call.xml", "+13125550100", &target, "127.0.0.1", &["-t", "u1"]);
    args[1] = sc;
    run_sipp(dir.path(), "503stop", args);
    assert_eq!(long.wait(WAIT), 0, "the active call ends normally\n{}", long.report());
    let log = gw.exited();
    assert!(log.contains("incoming call refused: shutting down"), "{log}");
    assert!(!log.contains("shutdown grace over"), "the call ended within the grace: {log}");
}

/// Early media: the far carrier answers 183 with SDP and plays an announcement
/// before its 200 OK; the box relays it to the caller at once (183 with the box's
/// SDP to the caller, media bridged before the answer).
#[test]
fn early_media_from_the_far_end_reaches_the_caller_before_the_answer() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("pcap")).unwrap();
    std::fs::copy("/usr/share/sip-tester/g711a.pcap", dir.path().join("pcap/g711a.pcap")).unwrap();
    let (gw, _, b_port) = start_forwarding_daemon(dir.path(), false);
    let port = gw.sip_port;
    let mut b = sipp_carrier(dir.path(), "b", "uas_early_media.xml", b_port);
    // The caller (silent) listens from the 183 on; the far end answers after 2.5 s.
    let silent = common::rtp::Script {
        audio: Vec::new(),
        digits: Vec::new(),
        send_for: Duration::from_millis(3500),
        duration: Duration::from_millis(3500),
        gaps: vec![],
    };
    let (code, report, received) =
        common::rtp::place_calls(dir.path(), port, "127.0.0.2", "+13125550100", 3500, vec![silent]);
    assert_eq!(code, 0, "{report}\n{}", gw.stderr());
    assert_eq!(b.wait(WAIT), 0, "{}", b.report());
    let trace = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".messages.log"))
        .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
        .collect::<String>();
    assert!(trace.contains("SIP/2.0 183"), "the caller got a 183");
    // Speech (decoded from the A-law announcement, transcoded to the caller's PCMU)
    // before the 200 OK, which came 2.5 s after the 183.
    let early: Vec<_> = received[0].iter().filter(|p| p.at < Duration::from_millis(2000) && p.rms() > 300.0).collect();
    assert!(early.len() >= 25, "early media packets heard: {} of {}", early.len(), received[0].len());
    gw.stop();
}
