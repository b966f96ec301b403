//! Forward routes cannot be steered (issue 17, point 1): a caller on an admitted
//! trunk dials user parts that smuggle a host, parameters or header lines into the
//! far leg (`+1312%40127.0.0.77%3Bx`, `;`, `@`, `%40`, `%3B`, spaces, CR/LF,
//! `maddr`), and the box sends no datagram to any address but the trunk's proxy.
//! Credentials go only to a challenge in the trunk's `auth_realm`.
//!
//! The far trunk's proxy is a raw UDP socket on 127.0.0.3 that records every
//! request and answers INVITEs itself (486, or a 407 in the realm the test asks);
//! the attacker's hosts are UDP sockets on 127.0.0.77 and 127.0.0.78 that must stay
//! silent. Every INVITE is followed to its final response at the caller, so the
//! "nothing elsewhere" checks run after the box has finished with each request.

mod common;

use std::net::UdpSocket;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::gateway::{Gateway, Route, Trunk};
use nix::sys::signal::Signal;

const WAIT: Duration = Duration::from_secs(30);

/// How the fake proxy answers INVITEs.
#[derive(Clone, Copy, PartialEq)]
enum ProxyMode {
    /// 486 Busy Here to every INVITE.
    Busy,
    /// 407 with this realm to INVITEs without Proxy-Authorization, 486 to the rest.
    Challenge(&'static str),
}

/// The far trunk's proxy: answers INVITEs, records every request it gets.
struct Proxy {
    port: u16,
    requests: Arc<Mutex<Vec<String>>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Proxy {
    fn start(mode: ProxyMode) -> Self {
        let sock = UdpSocket::bind("127.0.0.3:0").unwrap();
        let port = sock.local_addr().unwrap().port();
        sock.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (reqs, stopping) = (Arc::clone(&requests), Arc::clone(&stop));
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 65_536];
            while !stopping.load(std::sync::atomic::Ordering::Relaxed) {
                let Ok((n, from)) = sock.recv_from(&mut buf) else { continue };
                let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                reqs.lock().unwrap().push(text.clone());
                if !text.starts_with("INVITE ") {
                    continue;
                }
                let (code, extra) = match mode {
                    ProxyMode::Challenge(realm) if !text.contains("Proxy-Authorization:") => (
                        "407 Proxy Authentication Required",
                        format!("Proxy-Authenticate: Digest realm=\"{realm}\", nonce=\"n0nce\", algorithm=MD5\r\n"),
                    ),
                    _ => ("486 Busy Here", String::new()),
                };
                let _ = sock.send_to(response(&text, code, &extra).as_bytes(), from);
            }
        });
        Self { port, requests, stop, thread: Some(thread) }
    }

    fn invites(&self) -> Vec<String> {
        self.requests.lock().unwrap().iter().filter(|r| r.starts_with("INVITE ")).cloned().collect()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A response to `req` (Via, From, To + tag, Call-ID, CSeq copied; RFC 3261 §8.2.6).
fn response(req: &str, status: &str, extra: &str) -> String {
    let mut out = format!("SIP/2.0 {status}\r\n");
    for line in req.split("\r\n").skip(1).take_while(|l| !l.is_empty()) {
        let name = line.split(':').next().unwrap_or("").trim().to_ascii_lowercase();
        match name.as_str() {
            "via" | "v" | "from" | "f" | "call-id" | "i" | "cseq" => out.push_str(&format!("{line}\r\n")),
            "to" | "t" => out.push_str(&format!("{line};tag=proxy\r\n")),
            _ => {}
        }
    }
    format!("{out}{extra}Content-Length: 0\r\n\r\n")
}

/// The daemon: trunk `in` from 127.0.0.2, trunk `out` to the proxy (with
/// `creds` lines), every number forwarded out; its SIP port.
fn start(dir: &Path, proxy_port: u16, creds: &str) -> (Gateway, u16) {
    let gw = Gateway::builder(dir)
        .rtp_range(40_000, 49_999)
        .trunk(Trunk::new("in").allow("127.0.0.2/32"))
        .trunk(Trunk::new("out").proxy(&format!("sip:127.0.0.3:{proxy_port}")).extra(creds))
        .route(Route::new().name("us").to("+1312*").extra("forward = \"out\""))
        .route(Route::new().name("all").extra("forward = \"out\""))
        .start();
    let port = gw.sip_port;
    (gw, port)
}

const SDP: &str = "v=0\r\no=- 1 1 IN IP4 127.0.0.2\r\ns=-\r\nc=IN IP4 127.0.0.2\r\nt=0 0\r\nm=audio 7078 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n";

/// Sends an INVITE (Request-URI and To URI as given, raw) from 127.0.0.2 and
/// returns the status code of the final response (ACKing non-2xx ones), or `None`
/// when none came.
fn invite(sock: &UdpSocket, port: u16, n: u32, ruri: &str, to: &str) -> Option<u16> {
    invite_from(sock, port, n, ruri, to, "+14155550123")
}

/// [`invite`] with the From user part as given (raw).
fn invite_from(sock: &UdpSocket, port: u16, n: u32, ruri: &str, to: &str, from: &str) -> Option<u16> {
    let via = format!("SIP/2.0/UDP 127.0.0.2:{};branch=z9hG4bK-fraud-{n}", sock.local_addr().unwrap().port());
    let head = format!(
        "Via: {via}\r\nMax-Forwards: 70\r\nFrom: <sip:{from}@127.0.0.2>;tag=a{n}\r\nTo: {to}\r\nCall-ID: fraud-{n}@127.0.0.2\r\n"
    );
    let msg = format!(
        "INVITE {ruri} SIP/2.0\r\n{head}CSeq: 1 INVITE\r\nContact: <sip:a@127.0.0.2:{}>\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{SDP}",
        sock.local_addr().unwrap().port(),
        SDP.len()
    );
    sock.send_to(msg.as_bytes(), ("127.0.0.1", port)).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut buf = [0u8; 65_536];
    while Instant::now() < deadline {
        let Ok(len) = sock.recv(&mut buf) else { continue };
        let r = String::from_utf8_lossy(&buf[..len]).into_owned();
        if !r.contains(&format!("Call-ID: fraud-{n}@")) && !r.contains(&format!("i: fraud-{n}@")) {
            continue;
        }
        let code: u16 = r.get(8..11).and_then(|c| c.parse().ok()).unwrap_or(0);
        if code >= 200 {
            if code >= 300 {
                let to_line = r.split("\r\n").find(|l| l.starts_with("To:") || l.starts_with("t:")).unwrap_or("");
                let ack = format!(
                    "ACK {ruri} SIP/2.0\r\nVia: {via}\r\nMax-Forwards: 70\r\nFrom: <sip:{from}@127.0.0.2>;tag=a{n}\r\n{to_line}\r\nCall-ID: fraud-{n}@127.0.0.2\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n"
                );
                sock.send_to(ack.as_bytes(), ("127.0.0.1", port)).unwrap();
            }
            return Some(code);
        }
    }
    None
}

fn silent(sock: &UdpSocket) -> Option<String> {
    sock.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 65_536];
    sock.recv(&mut buf).ok().map(|n| String::from_utf8_lossy(&buf[..n]).into_owned())
}

#[test]
fn smuggled_hosts_in_the_dialled_number_never_leave_the_trunk_proxy() {
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(ProxyMode::Busy);
    let (mut gw, port) = start(dir.path(), proxy.port, "");
    // The attacker's hosts, listening on the port the smuggled URIs name.
    let evil = UdpSocket::bind("127.0.0.77:0").unwrap();
    let p = evil.local_addr().unwrap().port();
    let evil2 = UdpSocket::bind(("127.0.0.78", p)).unwrap();
    let caller = UdpSocket::bind("127.0.0.2:0").unwrap();
    let box_ = format!("127.0.0.1:{port}");
    let to = format!("<sip:+13125550100@{box_}>");

    // Request-URIs a caller may send; each must end in 484/400/404, or reach the
    // proxy (127.0.0.3) with a plain dial string and nothing else.
    let attacks = [
        format!("sip:+1312%40127.0.0.77:{p}%3Bx@{box_}"),
        format!("sip:+1312%40127.0.0.77:{p}@{box_}"),
        format!("sip:+1312%40127.0.0.77@{box_}"),
        format!("sip:+1312%3Bmaddr=127.0.0.78@{box_}"),
        format!("sip:+1312%3B127.0.0.77@{box_}"),
        format!("sip:+1312%20127.0.0.77@{box_}"),
        format!("sip:+1312%0D%0ARoute:%20%3Csip:127.0.0.77:{p}%3E@{box_}"),
        format!("sip:+1312%0AVia:%20127.0.0.78@{box_}"),
        format!("sip:+1312@127.0.0.77:{p};x@{box_}"),
        format!("sip:+1312;x=127.0.0.77@{box_}"),
        format!("sip:+13125550100@{box_};maddr=127.0.0.78"),
        format!("sip:%2B1312%40127.0.0.78:{p}@{box_}"),
        format!("sip:+1312%2540127.0.0.77@{box_}"),
        format!("sip:sip%3A+1312%40127.0.0.77@{box_}"),
    ];
    let mut outcomes = Vec::new();
    for (i, ruri) in attacks.iter().enumerate() {
        let code = invite(&caller, port, i as u32, ruri, &to);
        outcomes.push((ruri.clone(), code));
        assert_eq!(silent(&evil), None, "{ruri}: a datagram reached 127.0.0.77");
        assert_eq!(silent(&evil2), None, "{ruri}: a datagram reached 127.0.0.78");
        assert!(code.is_some_and(|c| c >= 400), "{ruri}: {code:?}\n{}", gw.daemon.stderr());
    }
    // The To user is the dialled number when the Request-URI has none.
    let n = attacks.len() as u32;
    let code = invite(&caller, port, n, &format!("sip:{box_}"), &format!("<sip:+1312%40127.0.0.77:{p}@{box_}>"));
    assert_eq!(code, Some(484), "{}", gw.daemon.stderr());
    // The percent-encoded host is refused as what it is: not a dial string.
    assert_eq!(outcomes[0].1, Some(484), "{outcomes:?}");
    assert_eq!(outcomes[6].1, Some(484), "{outcomes:?}");

    // The control: an honest number reaches the proxy, so the checks below can fail.
    let before = proxy.invites().len();
    assert_eq!(invite(&caller, port, n + 1, &format!("sip:+13125550100@{box_}"), &to), Some(486));
    assert!(proxy.invites().len() > before, "the honest call never reached the proxy");

    // A caller number smuggling a header or a host is passed on as `anonymous`.
    let n2 = n + 2;
    let code =
        invite_from(&caller, port, n2, &format!("sip:+13125550100@{box_}"), &to, "+1415%0D%0AX-Evil:%201%40127.0.0.77");
    assert_eq!(code, Some(486), "{}", gw.daemon.stderr());
    let last = proxy.invites().last().cloned().unwrap_or_default();
    assert!(last.contains("From: <sip:anonymous@"), "{last}");
    assert!(!last.contains("X-Evil") && !last.contains("127.0.0.77"), "{last}");

    // Nothing ever reached the attacker's hosts ...
    assert_eq!(silent(&evil), None, "a datagram reached 127.0.0.77");
    assert_eq!(silent(&evil2), None, "a datagram reached 127.0.0.78");
    // ... and every INVITE the proxy got is for a plain dial string at the proxy.
    for inv in &proxy.invites() {
        let ruri = inv.split(' ').nth(1).unwrap_or("");
        let (user, host) = ruri.trim_start_matches("sip:").split_once('@').unwrap_or(("", ""));
        assert!(user.bytes().all(|b| b.is_ascii_digit() || b == b'+'), "{ruri}");
        assert!(host.starts_with(&format!("127.0.0.3:{}", proxy.port)), "{ruri}");
        assert!(!inv.contains("127.0.0.77") && !inv.contains("127.0.0.78"), "{inv}");
    }
    assert!(gw.daemon.is_running(), "{}", gw.daemon.stderr());
    gw.daemon.signal(Signal::SIGTERM);
    assert_eq!(gw.daemon.wait_exit(WAIT).and_then(|s| s.code()), Some(0));
}

#[test]
fn credentials_answer_only_a_challenge_in_the_trunks_realm() {
    let creds = "username = \"box-user\"\npassword = \"box-pass\"\nauth_realm = \"carrier.example\"";
    for (realm, answered) in [("evil.example", false), ("Carrier.Example", true)] {
        let dir = tempfile::tempdir().unwrap();
        let proxy = Proxy::start(ProxyMode::Challenge(realm));
        let (mut gw, port) = start(dir.path(), proxy.port, creds);
        let caller = UdpSocket::bind("127.0.0.2:0").unwrap();
        let box_ = format!("127.0.0.1:{port}");
        let code = invite(&caller, port, 1, &format!("sip:+13125550100@{box_}"), &format!("<sip:+13125550100@{box_}>"));
        assert!(code.is_some_and(|c| c >= 400), "{realm}: {code:?}\n{}", gw.daemon.stderr());
        let invites = proxy.invites();
        let with_auth: Vec<_> = invites.iter().filter(|i| i.contains("Proxy-Authorization:")).collect();
        if answered {
            assert_eq!(code, Some(486), "{}", gw.daemon.stderr());
            assert_eq!(with_auth.len(), 1, "{invites:?}");
            assert!(with_auth[0].contains("username=\"box-user\""), "{}", with_auth[0]);
        } else {
            assert!(with_auth.is_empty(), "credentials sent to realm {realm}: {with_auth:?}");
            assert_eq!(invites.len(), 1, "{invites:?}");
        }
        gw.daemon.signal(Signal::SIGTERM);
        assert_eq!(gw.daemon.wait_exit(WAIT).and_then(|s| s.code()), Some(0));
    }
}
