//! Hostile and broken input on the real daemon: malformed and truncated SIP gets
//! 400 when a response can be formed (else a logged drop), never a crash; a flood
//! from sources that match no trunk does not stop a trunk's call.

mod common;

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use common::*;
use nix::sys::signal::Signal;

const WAIT: Duration = Duration::from_secs(30);

fn start(dir: &std::path::Path, port: u16) -> Daemon {
    let text = format!(
        r#"
[node]
data_dir = "{data}"
shutdown_grace = "1s"
[sip]
listen = ["udp://127.0.0.1:{port}"]
[rtp]
port_range = "40000-49999"
[[trunk]]
name = "carrier"
inbound_allow = ["127.0.0.2/32"]
[[agent]]
name = "echo"
url = "builtin:echo"
[[route]]
agent = "echo"
[log]
format = "text"
"#,
        data = dir.join("data").display()
    );
    let path = dir.join("sipbridge.toml");
    std::fs::write(&path, text).unwrap();
    let mut notify = NotifySocket::bind(dir);
    let d = Daemon::start(&path, Some(&notify.path), None, &[]);
    notify.wait_for("READY=1", WAIT).unwrap_or_else(|| panic!("{}", d.stderr()));
    d
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
    let mut d = start(dir.path(), port);
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
    assert!(d.is_running(), "{}", d.stderr());
    let target = format!("127.0.0.1:{port}");
    let mut s = Sipp::start(
        dir.path(),
        "after",
        &sipp_args("uac_call.xml", "+13125550100", &target, "127.0.0.2", &["-t", "u1"]),
    );
    assert_eq!(s.wait(WAIT), 0, "{}\n{}", s.report(), d.stderr());
    d.signal(Signal::SIGTERM);
    assert_eq!(d.wait_exit(WAIT).and_then(|s| s.code()), Some(0));
}

#[test]
fn a_flood_from_unknown_sources_does_not_stop_trunk_calls() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut d = start(dir.path(), port);
    let target = format!("127.0.0.1:{port}");
    // The flood: INVITEs from 127.0.0.9 (no trunk), bounded in count and time, sent
    // from a thread while the trunk's call runs.
    let flood = std::thread::spawn(move || {
        let sock = UdpSocket::bind("127.0.0.9:0").unwrap();
        let started = Instant::now();
        let mut sent = 0u32;
        while sent < 30_000 && started.elapsed() < Duration::from_secs(4) {
            let msg = format!(
                "INVITE sip:+13125550100@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.9:5999;branch=z9hG4bK-f{sent}\r\nFrom: <sip:x@127.0.0.9>;tag={sent}\r\nTo: <sip:+13125550100@127.0.0.1>\r\nCall-ID: flood-{sent}\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
            );
            let _ = sock.send_to(msg.as_bytes(), ("127.0.0.1", port));
            sent += 1;
        }
        sent
    });
    let mut s = Sipp::start(
        dir.path(),
        "trunk",
        &sipp_args("uac_call.xml", "+13125550100", &target, "127.0.0.2", &["-t", "u1"]),
    );
    assert_eq!(s.wait(WAIT), 0, "{}\n{}", s.report(), d.stderr());
    let sent = flood.join().unwrap();
    assert!(sent > 1000, "the flood ran ({sent} messages)");
    let log = d.stderr();
    assert!(log.contains("SIP flood from a non-trunk source: messages dropped"), "{log}");
    assert!(d.is_running());
    d.signal(Signal::SIGTERM);
    assert_eq!(d.wait_exit(WAIT).and_then(|s| s.code()), Some(0));
}
