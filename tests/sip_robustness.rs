//! Hostile and broken input on the real daemon: malformed and truncated SIP gets
//! 400 when a response can be formed (else a logged drop), never a crash; a
//! header name starting with a multi-byte character does not panic the call; a
//! 50 000 msg/s flood from sources that match no trunk does not stop a trunk's calls.

mod common;

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use common::gateway::{Gateway, Route, Trunk};
use common::*;
use nix::sys::signal::Signal;

const WAIT: Duration = Duration::from_secs(30);

/// The daemon on UDP `port`: trunk `carrier` from 127.0.0.2, every call to the
/// built-in echo.
fn start(dir: &std::path::Path, port: u16) -> Gateway {
    Gateway::builder(dir)
        .sip_port(port)
        .rtp_range(40_000, 49_999)
        .trunk(Trunk::new("carrier").allow("127.0.0.2/32"))
        .agent("echo", "builtin:echo", "")
        .route(Route::new().agent("echo"))
        .start()
}

fn exchange(sock: &UdpSocket, port: u16, msg: &str) -> Option<String> {
    sock.send_to(msg.replace('\n', "\r\n").as_bytes(), ("127.0.0.1", port)).unwrap();
    let mut buf = [0u8; 4096];
    sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    loop {
        match sock.recv(&mut buf) {
            Ok(n) => {
                let r = String::from_utf8_lossy(&buf[..n]).into_owned();
                if r.starts_with("SIP/2.0 100") {
                    continue;
                }
                return Some(r);
            }
            Err(_) => return None,
        }
    }
}

const HEAD: &str = "Via: SIP/2.0/UDP 127.0.0.2:5999;branch=z9hG4bK-{n}\nFrom: <sip:a@127.0.0.2>;tag=t{n}\nTo: <sip:+13125550100@127.0.0.1>\nCall-ID: bad-{n}@127.0.0.2\n";

#[test]
fn malformed_requests_get_400_or_are_dropped_and_calls_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut gw = start(dir.path(), port);
    let sock = UdpSocket::bind("127.0.0.2:0").unwrap();
    let head = |n: u32| HEAD.replace("{n}", &n.to_string());

    // A CSeq that is not a number: 400, naming the problem.
    let r = exchange(
        &sock,
        port,
        &format!("INVITE sip:+13125550100@127.0.0.1 SIP/2.0\n{}CSeq: one INVITE\nContent-Length: 0\n\n", head(1)),
    );
    assert!(r.as_deref().unwrap_or("").starts_with("SIP/2.0 400 Bad Request"), "{r:?}");
    // Truncated: the body is shorter than Content-Length says.
    let r = exchange(
        &sock,
        port,
        &format!(
            "INVITE sip:+13125550100@127.0.0.1 SIP/2.0\n{}CSeq: 1 INVITE\nContent-Type: application/sdp\nContent-Length: 500\n\nv=0\no=- 1 1 IN IP4 127.0.0.2\n",
            head(2)
        ),
    );
    assert!(r.as_deref().unwrap_or("").starts_with("SIP/2.0 400"), "{r:?}");
    // Well-formed SIP, malformed SDP: 400 with a Warning.
    let r = exchange(
        &sock,
        port,
        &format!(
            "INVITE sip:+13125550100@127.0.0.1 SIP/2.0\n{}CSeq: 1 INVITE\nContent-Type: application/sdp\nContent-Length: 9\n\nv=banana\n",
            head(3)
        ),
    );
    let r = r.unwrap_or_default();
    assert!(r.starts_with("SIP/2.0 400") && r.contains("Warning: 399"), "{r}");
    // No Call-ID: still a 400, matched by Via branch and CSeq (RFC 4475 §3.3.1).
    let r = exchange(
        &sock,
        port,
        "INVITE sip:x@127.0.0.1 SIP/2.0\nVia: SIP/2.0/UDP 127.0.0.2:5999;branch=z9hG4bK-4\nFrom: <sip:a@b>;tag=1\nTo: <sip:x@y>\nCSeq: 1 INVITE\nContent-Length: 0\n\n",
    );
    assert!(r.as_deref().unwrap_or("").starts_with("SIP/2.0 400"), "{r:?}");
    // No Via: no response can be formed; dropped.
    let r = exchange(
        &sock,
        port,
        "INVITE sip:x@127.0.0.1 SIP/2.0\nFrom: <sip:a@b>;tag=1\nTo: <sip:x@y>\nCall-ID: bad-5@127.0.0.2\nCSeq: one INVITE\nContent-Length: 0\n\n",
    );
    assert!(r.is_none(), "{r:?}");
    // Garbage, binary, an empty datagram, a huge header line.
    for junk in ["hello", "\u{0}\u{1}\u{2}\u{3}", "INVITE", "SIP/2.0 200 OK\n\n", &"X".repeat(8000)] {
        sock.send_to(junk.as_bytes(), ("127.0.0.1", port)).unwrap();
    }
    // Oversize (> 8 KiB datagram): refused without a crash.
    sock.send_to(&vec![b'A'; 60_000], ("127.0.0.1", port)).unwrap();

    // The daemon is alive and still takes a real call.
    assert!(gw.daemon.is_running(), "{}", gw.daemon.stderr());
    let target = format!("127.0.0.1:{port}");
    let mut s = Sipp::start(
        dir.path(),
        "after",
        &sipp_args("uac_call.xml", "+13125550100", &target, "127.0.0.2", &["-t", "u1"]),
    );
    assert_eq!(s.wait(WAIT), 0, "{}\n{}", s.report(), gw.daemon.stderr());
    gw.daemon.signal(Signal::SIGTERM);
    assert_eq!(gw.daemon.wait_exit(WAIT).and_then(|s| s.code()), Some(0));
}

#[test]
fn a_header_name_starting_with_a_multibyte_character_gets_a_final_response() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut gw = start(dir.path(), port);
    let sock = UdpSocket::bind("127.0.0.2:0").unwrap();
    let local = sock.local_addr().unwrap();
    let sdp = format!(
        "v=0\no=- 1 1 IN IP4 127.0.0.2\ns=-\nc=IN IP4 127.0.0.2\nt=0 0\nm=audio {} RTP/AVP 0\na=rtpmap:0 PCMU/8000\n",
        free_port()
    )
    .replace('\n', "\r\n");
    let head = format!(
        "Via: SIP/2.0/UDP {local};rport;branch=z9hG4bK-eur{{n}}\nFrom: <sip:+14155550123@127.0.0.2>;tag=eur\n{{to}}\nCall-ID: euro-1@127.0.0.2\nMax-Forwards: 70\n"
    );
    let invite = format!(
        "INVITE sip:+13125550100@127.0.0.1:{port} SIP/2.0\n{}CSeq: 1 INVITE\nContact: <sip:a@{local}>\n€-x: 1\nX-€: 2\nContent-Type: application/sdp\nContent-Length: {}\n\n",
        head.replace("{n}", "1").replace("{to}", "To: <sip:+13125550100@127.0.0.1>"),
        sdp.len()
    )
    .replace('\n', "\r\n")
        + &sdp;
    sock.send_to(invite.as_bytes(), ("127.0.0.1", port)).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 4096];
    let ok = loop {
        let n =
            sock.recv(&mut buf).unwrap_or_else(|_| panic!("no final response to the INVITE\n{}", gw.daemon.stderr()));
        let r = String::from_utf8_lossy(&buf[..n]).into_owned();
        if !r.starts_with("SIP/2.0 1") {
            break r;
        }
    };
    assert!(ok.starts_with("SIP/2.0 200"), "{ok}");
    // End the call properly: ACK, then BYE answered 200 (the dialog exists).
    let to = ok.lines().find(|l| l.to_ascii_lowercase().starts_with("to:")).unwrap().to_string();
    for (n, method) in [(2, "ACK"), (3, "BYE")] {
        let cseq = if method == "ACK" { 1 } else { 2 };
        let m = format!(
            "{method} sip:+13125550100@127.0.0.1:{port} SIP/2.0\n{}CSeq: {cseq} {method}\nContent-Length: 0\n\n",
            head.replace("{n}", &n.to_string()).replace("{to}", &to)
        )
        .replace('\n', "\r\n");
        sock.send_to(m.as_bytes(), ("127.0.0.1", port)).unwrap();
    }
    let bye_ok = loop {
        let n = sock.recv(&mut buf).unwrap_or_else(|_| panic!("no answer to the BYE\n{}", gw.daemon.stderr()));
        let r = String::from_utf8_lossy(&buf[..n]).into_owned();
        if r.contains("CSeq: 2 BYE") {
            break r;
        }
    };
    assert!(bye_ok.starts_with("SIP/2.0 200"), "{bye_ok}");
    assert!(gw.daemon.is_running(), "{}", gw.daemon.stderr());
    gw.daemon.signal(Signal::SIGTERM);
    assert_eq!(gw.daemon.wait_exit(WAIT).and_then(|s| s.code()), Some(0));
}

/// The flood's rate (messages per second) and bounds.
const FLOOD_RATE: u64 = 50_000;
const FLOOD_MAX: u64 = 200_000;
const FLOOD_TIME: Duration = Duration::from_secs(6);
/// Calls the trunk places during the flood; every one must succeed.
const LEGIT_CALLS: &str = "20";

#[test]
fn a_flood_from_unknown_sources_does_not_stop_trunk_calls() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut gw = start(dir.path(), port);
    let target = format!("127.0.0.1:{port}");
    // The flood: INVITEs from 127.0.0.9 (no trunk) paced at FLOOD_RATE, bounded in
    // count and time, sent from a thread while the trunk's calls run.
    let flood = std::thread::spawn(move || {
        let sock = UdpSocket::bind("127.0.0.9:0").unwrap();
        let started = Instant::now();
        let mut sent = 0u64;
        while sent < FLOOD_MAX && started.elapsed() < FLOOD_TIME {
            // Pacing: never ahead of FLOOD_RATE × elapsed time.
            if sent * 1_000_000 > FLOOD_RATE * started.elapsed().as_micros() as u64 {
                std::thread::yield_now();
                continue;
            }
            let msg = format!(
                "INVITE sip:+13125550100@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.9:5999;branch=z9hG4bK-f{sent}\r\nFrom: <sip:x@127.0.0.9>;tag={sent}\r\nTo: <sip:+13125550100@127.0.0.1>\r\nCall-ID: flood-{sent}\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
            );
            let _ = sock.send_to(msg.as_bytes(), ("127.0.0.1", port));
            sent += 1;
        }
        (sent, started.elapsed())
    });
    // LEGIT_CALLS calls, 10 per second, 1 s each: SIPp exits 0 only if all of them
    // completed (100 %).
    let mut s = Sipp::start(
        dir.path(),
        "trunk",
        &sipp_args(
            "uac_call.xml",
            "+13125550100",
            &target,
            "127.0.0.2",
            &["-t", "u1", "-m", LEGIT_CALLS, "-r", "10", "-l", "10"],
        ),
    );
    assert_eq!(s.wait(WAIT * 2), 0, "{}\n{}", s.report(), gw.daemon.stderr());
    let (sent, took) = flood.join().unwrap();
    let rate = sent as f64 / took.as_secs_f64();
    eprintln!(
        "flood: {sent} INVITEs in {took:?} = {rate:.0} msg/s from an unknown source; {LEGIT_CALLS}/{LEGIT_CALLS} trunk calls completed"
    );
    assert!(sent > 10_000, "the flood ran ({sent} messages)");
    let log = gw.daemon.stderr();
    let calls = log.lines().filter(|l| l.contains("incoming call")).count();
    assert_eq!(calls.to_string(), LEGIT_CALLS, "every trunk call reached the box");
    assert!(log.contains("SIP flood from a non-trunk source: messages dropped"), "{log}");
    // What passed the flood limiter was dropped unanswered (unknown_source = "drop").
    assert!(log.contains("matches no trunk: dropped"), "{log}");
    assert!(gw.daemon.is_running());
    gw.daemon.signal(Signal::SIGTERM);
    assert_eq!(gw.daemon.wait_exit(WAIT).and_then(|s| s.code()), Some(0));
}
