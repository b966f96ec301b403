//! What an attacker on the network sees of the real daemon (issue 17): sources that
//! match no trunk learn nothing — SIPVicious' `svmap` scanner finds no SIP server
//! when they are dropped (`[sip] unknown_source = "drop"`, the default) and no
//! product or version when they are refused (`"reject"`: 403 without
//! `User-Agent`/`Server`); trunks see `[sip] user_agent` exactly.
//!
//! Every test starts its daemon with [`start`] (one trunk, `carrier`, admitting
//! 127.0.0.2 only; the scanners run from other loopback addresses).

mod common;

use std::net::UdpSocket;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::gateway::{Gateway, Route, Trunk};
use common::*;

/// The trunk's source address; anything else on loopback is a stranger.
const TRUNK_IP: &str = "127.0.0.2";

/// The control API's token.
const TOKEN: &str = "edge-test-token-0123456789";

/// Where [`start`] puts the control API for a daemon whose SIP port is `port`.
fn api_port(dir: &Path) -> u16 {
    std::fs::read_to_string(dir.join("api.port")).unwrap().trim().parse().unwrap()
}

/// A daemon on UDP `port` with `sip_extra` appended to its `[sip]` table; its
/// control API on a free port (see [`api_port`], [`metric`]).
fn start(dir: &Path, port: u16, sip_extra: &str) -> Gateway {
    let api = free_port();
    std::fs::write(dir.join("api.port"), api.to_string()).unwrap();
    Gateway::builder(dir)
        .node_name("edge-test")
        .sip_port(port)
        .sip_extra(sip_extra)
        .rtp_range(40_000, 49_999)
        .trunk(Trunk::new("carrier").allow(&format!("{TRUNK_IP}/32")))
        .agent("echo", "builtin:echo", "")
        .route(Route::new().agent("echo"))
        .api(TOKEN)
        .api_port(api)
        .start()
}

/// The value of counter `name` in the daemon's `/metrics` (plain HTTP/1.1 over
/// loopback, bearer token).
fn metric(dir: &Path, name: &str) -> u64 {
    scrape_metric(api_port(dir), TOKEN, name) as u64
}

/// SIGTERM, then a clean exit (0).
fn stop(gw: Gateway) {
    gw.stop();
}

/// Runs `svmap` from `from` against the daemon (loopback only, bounded by
/// `timeout`): its stdout and stderr.
fn svmap(dir: &Path, from: &str, port: u16, method: &str) -> String {
    let bin = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/.venv/bin/sipvicious_svmap");
    let out = Command::new("timeout")
        .arg("60")
        .arg(&bin)
        .args(["-b", from, "-x", from, "-p", &port.to_string(), "-m", method, "-t", "0.5", "127.0.0.1"])
        .current_dir(dir)
        .output()
        .expect("sipvicious (tests/.venv) must be installed: scripts/setup-tests");
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// One request from `sock`, `None` when no final response came within 2 s.
fn exchange(sock: &UdpSocket, port: u16, method: &str) -> Option<String> {
    let local = sock.local_addr().unwrap();
    let msg = format!(
        "{method} sip:+13125550100@127.0.0.1:{port} SIP/2.0\r\nVia: SIP/2.0/UDP {local};rport;branch=z9hG4bK-{method}-{}\r\nFrom: <sip:scan@{local}>;tag=s1\r\nTo: <sip:+13125550100@127.0.0.1:{port}>\r\nCall-ID: scan-{method}-{}@{local}\r\nCSeq: 1 {method}\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
        local.port(),
        local.port()
    );
    sock.send_to(msg.as_bytes(), ("127.0.0.1", port)).unwrap();
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

fn assert_anonymous(r: &str) {
    assert!(!r.contains("User-Agent") && !r.contains("Server:") && !r.contains("sipbridge"), "{r}");
    assert!(!r.contains(env!("CARGO_PKG_VERSION")), "{r}");
}

#[test]
fn svmap_finds_nothing_when_unknown_sources_are_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let d = start(dir.path(), port, "");
    let device = format!("127.0.0.1:{port}");
    // The scanner works: from the trunk's address it finds the box...
    let seen = svmap(dir.path(), TRUNK_IP, port, "OPTIONS");
    assert!(seen.contains(&device) && seen.contains("sipbridge"), "{seen}");
    // ...and from any other address it finds nothing, with OPTIONS or INVITE.
    for method in ["OPTIONS", "INVITE"] {
        let out = svmap(dir.path(), "127.0.0.7", port, method);
        assert!(!out.contains(&device), "{method}: {out}");
        assert_anonymous(&out);
    }
    // Raw requests from a stranger: no answer at all, whatever the method or shape.
    let sock = UdpSocket::bind("127.0.0.8:0").unwrap();
    for method in ["OPTIONS", "INVITE", "REGISTER", "SUBSCRIBE", "MESSAGE"] {
        assert_eq!(exchange(&sock, port, method), None, "{method}");
    }
    let local = sock.local_addr().unwrap();
    let malformed = format!(
        "INVITE sip:x@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bK-m\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:x@y>\r\nCall-ID: m1\r\nCSeq: one INVITE\r\nContent-Length: 0\r\n\r\n"
    );
    sock.send_to(malformed.as_bytes(), ("127.0.0.1", port)).unwrap();
    sock.send_to(b"NEWMETHOD sip:x@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.8;branch=z9hG4bK-n\r\nCall-ID: n\r\nCSeq: 1 NEWMETHOD\r\n\r\n", ("127.0.0.1", port)).unwrap();
    let mut buf = [0u8; 2048];
    assert!(sock.recv(&mut buf).is_err(), "a malformed request from a stranger gets no 400/501 either");
    // Counted: 5 raw requests + svmap's; the two malformed ones as malformed.
    assert!(metric(dir.path(), "sipbridge_sip_unknown_source_dropped_total") >= 5);
    assert!(metric(dir.path(), "sipbridge_sip_malformed_total") >= 2);
    assert_eq!(metric(dir.path(), "sipbridge_sip_unknown_source_rejected_total"), 0);
    stop(d);
}

#[test]
fn svmap_sees_no_product_or_version_when_unknown_sources_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let d = start(dir.path(), port, "unknown_source = \"reject\"");
    let device = format!("127.0.0.1:{port}");
    for method in ["OPTIONS", "INVITE"] {
        let out = svmap(dir.path(), "127.0.0.7", port, method);
        assert!(out.contains(&device) && out.contains("unknown"), "{method}: {out}");
        assert_anonymous(&out);
    }
    let sock = UdpSocket::bind("127.0.0.8:0").unwrap();
    for method in ["OPTIONS", "INVITE", "REGISTER"] {
        let r = exchange(&sock, port, method).unwrap_or_default();
        assert!(r.starts_with("SIP/2.0 403 Forbidden\r\n"), "{method}: {r}");
        assert_anonymous(&r);
    }
    assert!(metric(dir.path(), "sipbridge_sip_unknown_source_rejected_total") >= 3);
    assert_eq!(metric(dir.path(), "sipbridge_sip_unknown_source_dropped_total"), 0);
    stop(d);
}

#[test]
fn trunks_see_the_configured_user_agent_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let d = start(dir.path(), port, "user_agent = \"Acme-GW 2\"");
    let sock = UdpSocket::bind(format!("{TRUNK_IP}:0")).unwrap();
    let r = exchange(&sock, port, "OPTIONS").unwrap_or_default();
    assert!(r.starts_with("SIP/2.0 200") && r.contains("\r\nUser-Agent: Acme-GW 2\r\n"), "{r}");
    assert!(!r.contains("sipbridge") && !r.contains(env!("CARGO_PKG_VERSION")), "{r}");
    stop(d);
    // An empty user_agent: no such header at all, even towards trunks.
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let d = start(dir.path(), port, "user_agent = \"\"");
    let r = exchange(&sock, port, "OPTIONS").unwrap_or_default();
    assert!(r.starts_with("SIP/2.0 200"), "{r}");
    assert_anonymous(&r);
    stop(d);
}
