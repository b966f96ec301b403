//! RTP latching on the real daemon (issue 17, "media hijack / RTP bleed"): a call
//! to the built-in echo agent placed by SIPp (signalling) with the audio sent and
//! received by a raw UDP phone in the test, while a third party on another loopback
//! address (127.0.0.9) sprays G.711 RTP at every even port of the RTP range and
//! RTCP at every odd one. The third party must get nothing back and inject nothing:
//! every stamped packet the caller sent comes back, none of the sprayer's. With
//! `[rtp] strict_source = true`, a caller whose RTP comes from another port than
//! its SDP address is not heard at all, one that matches is.
//!
//! Loads are bounded in count and time; every process is stopped by pid.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::gateway::{Gateway, Route, Trunk};
use common::rtp::{answers_in_trace, offers_in_trace};
use common::*;

const WAIT: Duration = Duration::from_secs(30);
const TOKEN: &str = "latch-test-token-0123456789";
/// Ports in the daemon's RTP range (10 RTP/RTCP pairs): the spray covers them all.
const RANGE: u16 = 20;
/// Packets the caller sends (20 ms apart: 5 s).
const CALLER_PACKETS: u16 = 250;
/// Filler byte of the caller's payloads and of the sprayer's (distinct).
const CALLER_FILL: u8 = 0x2a;
const SPRAY_FILL: u8 = 0xa5;

/// The daemon answering every call with the built-in echo, RTP on a 20-port
/// range (its first port returned too), `/metrics` on the API, and `rtp_extra`
/// appended to `[rtp]`.
fn start(dir: &Path, rtp_extra: &str) -> (Gateway, u16) {
    let rtp_first = free_even_block(RANGE);
    let gw = Gateway::builder(dir)
        .rtp_range(rtp_first, rtp_first + RANGE - 1)
        .rtp_extra(rtp_extra)
        .trunk(Trunk::new("pbx").allow("127.0.0.1/32"))
        .agent("echo", "builtin:echo", "")
        .route(Route::new().agent("echo"))
        .api(TOKEN)
        .log_level("debug")
        .start();
    (gw, rtp_first)
}

/// A counter of `/metrics` (Prometheus text), by plain HTTP/1.1.
fn metric(gw: &Gateway, name: &str) -> u64 {
    let v = scrape_metric(gw.api_port(), TOKEN, name);
    assert!(v >= 0.0 && v.fract() == 0.0, "{name} is a counter: {v}");
    v as u64
}

/// SIPp calls the box advertising `sdp_port` on 127.0.0.1 and holds the call for
/// `hold_ms`; returns the running SIPp and the box's RTP address from its answer.
fn call(dir: &Path, gw: &Gateway, sdp_port: u16, hold_ms: u64) -> (Sipp, SocketAddr) {
    let template = std::fs::read_to_string(scenario("uac_agent.xml.in")).unwrap();
    let name = format!("uac_latch_{sdp_port}");
    let sf = dir.join(format!("{name}.xml"));
    std::fs::write(&sf, template.replace("@HOLD_MS@", &hold_ms.to_string())).unwrap();
    let csv = dir.join(format!("{name}.csv"));
    std::fs::write(&csv, format!("SEQUENTIAL\n{sdp_port};+14155550123;\n")).unwrap();
    let mut args = sipp_args("uac_call.xml", "+18005550100", &format!("127.0.0.1:{}", gw.sip_port), "127.0.0.1", &[]);
    args[1] = sf.display().to_string();
    args.extend(["-inf", &csv.display().to_string(), "-key", "rtp_ip", "127.0.0.1"].map(String::from));
    let sipp = Sipp::start(dir, &name, &args);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let trace = sipp.messages();
        let answers = answers_in_trace(&trace);
        let answer = offers_in_trace(&trace).iter().find_map(|(id, p)| (*p == sdp_port).then(|| answers.get(id)));
        if let Some(Some(a)) = answer {
            return (sipp, *a);
        }
        assert!(Instant::now() < deadline, "the call was answered with SDP: {}", sipp.report());
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// An RTP packet (PCMU, payload type 0).
fn rtp(seq: u16, ssrc: u32, payload: &[u8]) -> Vec<u8> {
    let mut p = vec![0x80, 0];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&(u32::from(seq) * 160).to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend_from_slice(payload);
    p
}

/// The caller's payload number `i`: two stamp bytes (1..=100 each: PCMU values
/// the echo passes through unchanged) then filler.
fn stamped(i: u16) -> [u8; 160] {
    let mut p = [CALLER_FILL; 160];
    p[0] = 1 + (i / 100) as u8;
    p[1] = 1 + (i % 100) as u8;
    p
}

/// What a caller's phone got back.
#[derive(Default)]
struct Heard {
    /// Stamps of the caller's own packets echoed back.
    stamps: BTreeSet<u16>,
    /// RTP packets carrying the sprayer's filler.
    sprayed: usize,
    /// Every RTP packet received.
    packets: usize,
}

/// The phone: sends `CALLER_PACKETS` stamped packets from `socket` to `remote`
/// every 20 ms, and records what comes back until 800 ms after the last one.
/// `first_echo` is set when the first echo arrives (the leg has latched).
fn phone(socket: &UdpSocket, remote: SocketAddr, first_echo: &AtomicBool) -> Heard {
    socket.set_read_timeout(Some(Duration::from_millis(2))).unwrap();
    let start = Instant::now();
    let mut next = start;
    let mut sent = 0u16;
    let mut heard = Heard::default();
    let mut buf = [0u8; 2048];
    let mut last_sent_at = None;
    loop {
        let now = Instant::now();
        if sent < CALLER_PACKETS && now >= next {
            socket.send_to(&rtp(1000 + sent, 0x0ca1_1e55, &stamped(sent)), remote).unwrap();
            sent += 1;
            next += Duration::from_millis(20);
            if sent == CALLER_PACKETS {
                last_sent_at = Some(now);
            }
        }
        if last_sent_at.is_some_and(|t| now.duration_since(t) > Duration::from_millis(800))
            || now.duration_since(start) > Duration::from_secs(20)
        {
            return heard;
        }
        if let Ok((n, _)) = socket.recv_from(&mut buf) {
            if n < 12 + 2 || buf[0] >> 6 != 2 || (200..=204).contains(&buf[1]) {
                continue;
            }
            heard.packets += 1;
            first_echo.store(true, Ordering::Relaxed);
            let payload = &buf[12..n];
            if payload.contains(&SPRAY_FILL) {
                heard.sprayed += 1;
            } else if payload[2..].iter().all(|&b| b == CALLER_FILL) {
                if let (Some(hi), Some(lo)) = (payload[0].checked_sub(1), payload[1].checked_sub(1)) {
                    heard.stamps.insert(u16::from(hi) * 100 + u16::from(lo));
                }
            }
        }
    }
}

/// What the test tells the sprayer, and what it reports while it runs.
#[derive(Default)]
struct Spray {
    /// Set to start spraying (it waits at most 10 s for it).
    start: AtomicBool,
    /// Set to stop spraying early.
    stop: AtomicBool,
    /// The call's RTP port once known (0 before): sends to it are counted.
    target: AtomicU16,
    /// Packets sent to `target` so far.
    to_target: AtomicU64,
}

/// A third party on 127.0.0.9 waits until `ctl.start` is set (at most 10 s), then
/// for `for_how_long` (or until `ctl.stop`) sends, every 5 ms, G.711 RTP to every
/// even port of `ports` and an RTCP receiver report to every odd one. Returns every
/// packet it received back, after listening 1 s more.
fn spray(ports: std::ops::Range<u16>, ctl: &Spray, for_how_long: Duration) -> usize {
    let socket = UdpSocket::bind("127.0.0.9:0").expect("127.0.0.9 is loopback on Linux");
    socket.set_nonblocking(true).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ctl.start.load(Ordering::Relaxed) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let rr = [
        0x81u8, 201, 0, 7, 0xba, 0xd0, 0xba, 0xd0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        0,
    ];
    let mut received = 0usize;
    let mut buf = [0u8; 2048];
    let begin = Instant::now();
    let mut stopped_at: Option<Instant> = None;
    let mut seq = 0u16;
    while stopped_at.is_none_or(|t| t.elapsed() < Duration::from_secs(1)) {
        if stopped_at.is_none() && (begin.elapsed() >= for_how_long || ctl.stop.load(Ordering::Relaxed)) {
            stopped_at = Some(Instant::now());
        }
        if stopped_at.is_none() {
            seq = seq.wrapping_add(1);
            let pkt = rtp(seq, 0xbad0_bad0, &[SPRAY_FILL; 160]);
            let target = ctl.target.load(Ordering::Relaxed);
            for port in ports.clone() {
                let body: &[u8] = if port % 2 == 0 { &pkt } else { &rr };
                if socket.send_to(body, ("127.0.0.1", port)).is_ok() && port == target {
                    ctl.to_target.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        while let Ok((n, _)) = socket.recv_from(&mut buf) {
            if n > 0 {
                received += 1;
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    received
}

/// During a call, a third party spraying the RTP range gets 0 packets back and
/// the caller hears every one of its own packets echoed and none of the spray;
/// the drops show in `/metrics`.
#[test]
fn a_third_party_spraying_the_rtp_range_gets_nothing_and_injects_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (gw, rtp_first) = start(dir.path(), "");
    let caller = UdpSocket::bind("127.0.0.1:0").unwrap();
    let (mut sipp, remote) = call(dir.path(), &gw, caller.local_addr().unwrap().port(), 7000);
    let ctl = Spray { target: AtomicU16::new(remote.port()), ..Spray::default() };
    let ports = rtp_first..rtp_first + RANGE;
    let (heard, attacker_got) = std::thread::scope(|s| {
        let attacker = s.spawn(|| spray(ports.clone(), &ctl, Duration::from_secs(3)));
        let heard = phone(&caller, remote, &ctl.start);
        (heard, attacker.join().unwrap())
    });
    let to_call = ctl.to_target.load(Ordering::Relaxed);
    assert_eq!(sipp.wait(WAIT), 0, "the call completed: {}", sipp.report());
    let rtp_dropped = metric(&gw, "sipbridge_rtp_foreign_packets_dropped_total");
    let rtcp_dropped = metric(&gw, "sipbridge_rtcp_foreign_packets_dropped_total");
    eprintln!(
        "sprayed {to_call} RTP packets at the call's port ({} ports); the attacker received {attacker_got}; \
         the caller heard {} packets, {} of its {CALLER_PACKETS} stamps, {} sprayed; dropped RTP {rtp_dropped}, \
         RTCP {rtcp_dropped}",
        RANGE,
        heard.packets,
        heard.stamps.len(),
        heard.sprayed
    );
    assert!(to_call >= 100, "the spray reached the call's port: {to_call}");
    assert_eq!(attacker_got, 0, "the third party received none of the call's media");
    assert_eq!(heard.sprayed, 0, "none of the spray reached the caller");
    let missing: Vec<u16> = (0..CALLER_PACKETS).filter(|i| !heard.stamps.contains(i)).collect();
    assert!(missing.is_empty(), "every packet of the caller came back: missing {missing:?}");
    assert!(rtp_dropped >= to_call / 2, "foreign RTP counted: {rtp_dropped} of {to_call}");
    assert!(rtcp_dropped > 0, "foreign RTCP counted");
    gw.stop();
}

/// A third party spraying the range from before the call is answered reaches the
/// leg first and latches it for a moment; the caller's packets from its SDP
/// address take the latch over within the learning window, and what the sprayer
/// said is not echoed to the caller: the caller hears every one of its packets and
/// none of the spray. The caller starts only once the spray has reached the
/// answered port (sent there, so queued ahead of the caller's first packet): the
/// spray is first whatever the load, as a sprayer faster than the caller is.
#[test]
fn a_sprayer_racing_the_answer_loses_to_the_sdp_address() {
    let dir = tempfile::tempdir().unwrap();
    let (gw, rtp_first) = start(dir.path(), "");
    let caller = UdpSocket::bind("127.0.0.1:0").unwrap();
    let ctl = Spray { start: AtomicBool::new(true), ..Spray::default() };
    let ports = rtp_first..rtp_first + RANGE;
    let (heard, attacker_got) = std::thread::scope(|s| {
        let attacker = s.spawn(|| spray(ports.clone(), &ctl, Duration::from_secs(30)));
        let (mut sipp, remote) = call(dir.path(), &gw, caller.local_addr().unwrap().port(), 7000);
        ctl.target.store(remote.port(), Ordering::Relaxed);
        let deadline = Instant::now() + Duration::from_secs(10);
        while ctl.to_target.load(Ordering::Relaxed) < 3 {
            assert!(Instant::now() < deadline, "the spray reached the answered port");
            std::thread::sleep(Duration::from_millis(2));
        }
        let heard = phone(&caller, remote, &AtomicBool::new(false));
        ctl.stop.store(true, Ordering::Relaxed);
        assert_eq!(sipp.wait(WAIT), 0, "the call completed: {}", sipp.report());
        (heard, attacker.join().unwrap())
    });
    let relatched = metric(&gw, "sipbridge_rtp_relatched_total");
    eprintln!(
        "racing the answer: the attacker received {attacker_got}; the caller heard {} of its {CALLER_PACKETS} \
         stamps, {} sprayed; re-latched {relatched}",
        heard.stamps.len(),
        heard.sprayed
    );
    assert!(relatched >= 1, "the spray latched first and the SDP address took over");
    assert_eq!(heard.sprayed, 0, "none of the spray reached the caller");
    let missing: Vec<u16> = (0..CALLER_PACKETS).filter(|i| !heard.stamps.contains(i)).collect();
    assert!(missing.is_empty(), "every packet of the caller came back: missing {missing:?}");
    gw.stop();
}

/// `[rtp] strict_source = true`: a caller whose RTP comes from another port than
/// its SDP address is not heard (nothing echoed, to either port); one whose RTP
/// comes from its SDP address is echoed in full.
#[test]
fn strict_source_hears_only_the_sdp_address() {
    let dir = tempfile::tempdir().unwrap();
    let (gw, _) = start(dir.path(), "strict_source = true");

    // Advertises `sdp`, sends from `elsewhere` (same host, other port).
    let sdp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let elsewhere = UdpSocket::bind("127.0.0.1:0").unwrap();
    let (mut sipp, remote) = call(dir.path(), &gw, sdp.local_addr().unwrap().port(), 7000);
    let never = AtomicBool::new(false);
    let heard = phone(&elsewhere, remote, &never);
    sdp.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 2048];
    let mut at_sdp: HashMap<bool, usize> = HashMap::new();
    while let Ok((n, _)) = sdp.recv_from(&mut buf) {
        *at_sdp.entry(n > 12 && buf[1] & 0x7f == 0).or_default() += 1;
    }
    assert_eq!(sipp.wait(WAIT), 0, "the call completed: {}", sipp.report());
    assert_eq!(heard.packets, 0, "nothing echoed to the port that sent");
    assert_eq!(at_sdp.get(&true).copied().unwrap_or(0), 0, "nothing echoed to the SDP port: {at_sdp:?}");
    let dropped = metric(&gw, "sipbridge_rtp_foreign_packets_dropped_total");
    assert!(dropped >= u64::from(CALLER_PACKETS) / 2, "the refused packets are counted: {dropped}");

    // The same from the SDP address: every packet comes back.
    let phone_socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let (mut sipp, remote) = call(dir.path(), &gw, phone_socket.local_addr().unwrap().port(), 7000);
    let heard = phone(&phone_socket, remote, &never);
    assert_eq!(sipp.wait(WAIT), 0, "the call completed: {}", sipp.report());
    let missing: Vec<u16> = (0..CALLER_PACKETS).filter(|i| !heard.stamps.contains(i)).collect();
    assert!(missing.is_empty(), "every packet of the matching caller came back: missing {missing:?}");
    gw.stop();
}
