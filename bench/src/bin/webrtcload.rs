//! `webrtcload` — bounded WebRTC load for sipbridge's rooms: N browser-like peers
//! (webrtc-rs: ICE, DTLS-SRTP, PCMU) join the box through its WHIP-style API in
//! rooms of two (`<prefix><k>`), each sends one stamped 20 ms PCMU packet every
//! 20 ms (the [`sipbridge_bench::stamp`] identity survives the room's decode, mix
//! and encode) and counts what its partner's packets look like when they arrive.
//!
//! ```text
//! webrtcload --api http://127.0.0.1:8080 --token T --peers N [--duration S] [--prefix bench-webrtc-]
//! ```
//!
//! stdout: `{"ready":true,...}` once every peer is connected (the media phase starts
//! then), and at the end one JSON object with the same keys as `rtpload`: `calls`
//! (rooms), `peers`, `sent`, `received`, `lost`, `loss_pct`, `duplicates`,
//! `dead_streams`, `foreign`, `lat_us_p50/p99/p999/max` and `lat_ms_*` (one-way,
//! peer → room → partner, same clock), `max_send_lag_ms`, `gen_cpu_s`, `wall_s`,
//! `setup_s`. Bounded: at most 300 peers, 120 s of media, and a setup deadline.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodecParameters, RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
};
use sipbridge_bench::hist::Histogram;
use sipbridge_bench::stamp::{self, FRAME, Law, Stamp};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::media_stream::{MediaStreamTrack, Track};
use webrtc::peer_connection::{
    MediaEngine, PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler, RTCConfigurationBuilder,
    RTCIceGatheringState, RTCPeerConnectionState, RTCSessionDescription, Registry, SettingEngineBuilder,
    register_default_interceptors,
};

const MAX_PEERS: usize = 300;
const MAX_SECONDS: f64 = 120.0;
const SETUP_LIMIT: Duration = Duration::from_secs(120);

struct Args {
    api: String,
    token: String,
    peers: usize,
    duration: f64,
    prefix: String,
}

fn args() -> Result<Args, String> {
    let mut a =
        Args { api: String::new(), token: String::new(), peers: 2, duration: 20.0, prefix: "bench-webrtc-".into() };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let v = it.next().ok_or(format!("{k} needs a value"))?;
        match k.as_str() {
            "--api" => a.api = v.trim_end_matches('/').to_string(),
            "--token" => a.token = v,
            "--peers" => a.peers = v.parse().map_err(|_| "--peers is a number")?,
            "--duration" => a.duration = v.parse().map_err(|_| "--duration is seconds")?,
            "--prefix" => a.prefix = v,
            _ => return Err(format!("unknown argument {k}")),
        }
    }
    if !a.api.starts_with("http://") {
        return Err("--api http://host:port is required (plain HTTP on loopback)".into());
    }
    if a.peers < 2 || a.peers % 2 != 0 || a.peers > MAX_PEERS {
        return Err(format!("--peers is an even number 2..={MAX_PEERS}"));
    }
    if !(1.0..=MAX_SECONDS).contains(&a.duration) {
        return Err(format!("--duration is 1..={MAX_SECONDS} s"));
    }
    Ok(a)
}

/// One HTTP/1.1 request on a fresh connection: (status, headers lower-cased, body).
async fn http(
    api: &str,
    method: &str,
    path: &str,
    token: &str,
    body: &str,
) -> Result<(u16, HashMap<String, String>, String), String> {
    let host = api.trim_start_matches("http://");
    let mut s = tokio::net::TcpStream::connect(host).await.map_err(|e| format!("connect {host}: {e}"))?;
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\nContent-Type: application/sdp\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&buf).to_string();
    let (head, body) = text.split_once("\r\n\r\n").ok_or("no HTTP header end")?;
    let mut lines = head.split("\r\n");
    let status = lines.next().and_then(|l| l.split(' ').nth(1)).and_then(|c| c.parse().ok()).ok_or("bad status")?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Ok((status, headers, body.to_string()))
}

#[derive(Default)]
struct Rx {
    received: u64,
    duplicates: u64,
    foreign: u64,
    seen: Vec<bool>,
}

struct Handler {
    gathered: tokio::sync::watch::Sender<bool>,
    connected: tokio::sync::watch::Sender<Option<bool>>,
    rx: Arc<Mutex<Rx>>,
    /// One histogram for every peer (1 µs buckets: 4 MB each).
    hist: Arc<Mutex<Histogram>>,
    partner: u32,
    start: Instant,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            self.gathered.send_replace(true);
        }
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        match state {
            RTCPeerConnectionState::Connected => {
                self.connected.send_replace(Some(true));
            }
            RTCPeerConnectionState::Failed | RTCPeerConnectionState::Closed => {
                self.connected.send_replace(Some(false));
            }
            _ => {}
        }
    }

    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        let (rx, hist, partner, start) = (Arc::clone(&self.rx), Arc::clone(&self.hist), self.partner, self.start);
        tokio::spawn(async move {
            while let Some(ev) = track.poll().await {
                let TrackRemoteEvent::OnRtpPacket(p) = ev else { continue };
                let now = start.elapsed().as_micros() as u32;
                let mut r = rx.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                match stamp::read(&p.payload) {
                    Some(st) if st.stream == partner => {
                        let i = st.seq as usize;
                        if i >= r.seen.len() {
                            r.seen.resize(i + 1, false);
                        }
                        if r.seen[i] {
                            r.duplicates += 1;
                        } else {
                            r.seen[i] = true;
                            r.received += 1;
                            hist.lock()
                                .unwrap_or_else(std::sync::PoisonError::into_inner)
                                .record(u64::from(now.wrapping_sub(st.sent_us)));
                        }
                    }
                    Some(_) => r.foreign += 1,
                    None => {} // silence before the partner's audio arrives
                }
            }
        });
    }
}

struct Peer {
    pc: Arc<dyn PeerConnection>,
    track: Arc<TrackLocalStaticRTP>,
    rx: Arc<Mutex<Rx>>,
    location: String,
}

fn pcmu() -> RTCRtpCodecParameters {
    RTCRtpCodecParameters {
        rtp_codec: RTCRtpCodec {
            mime_type: "audio/PCMU".into(),
            clock_rate: 8000,
            channels: 1,
            sdp_fmtp_line: String::new(),
            rtcp_feedback: vec![],
        },
        payload_type: 0,
    }
}

async fn join(a: &Args, index: u32, start: Instant, hist: &Arc<Mutex<Histogram>>) -> Result<Peer, String> {
    let e = |e: webrtc::error::Error| e.to_string();
    let mut media = MediaEngine::default();
    media.register_codec(pcmu(), RtpCodecKind::Audio).map_err(e)?;
    let registry = register_default_interceptors(Registry::new(), &mut media).map_err(e)?;
    let (gathered, mut gathered_rx) = tokio::sync::watch::channel(false);
    let (connected, mut connected_rx) = tokio::sync::watch::channel(None);
    let rx = Arc::new(Mutex::new(Rx::default()));
    let handler = Arc::new(Handler {
        gathered,
        connected,
        rx: Arc::clone(&rx),
        hist: Arc::clone(hist),
        partner: index ^ 1,
        start,
    });
    let pc: Arc<dyn PeerConnection> = Arc::new(
        PeerConnectionBuilder::new()
            .with_configuration(RTCConfigurationBuilder::new().build())
            .with_media_engine(media)
            .with_setting_engine(SettingEngineBuilder::new().with_include_loopback_candidate(true).build())
            .with_interceptor_registry(registry)
            .with_handler(handler)
            .with_udp_addrs(vec!["127.0.0.1:0"])
            .build()
            .await
            .map_err(e)?,
    );
    let track = Arc::new(TrackLocalStaticRTP::new(MediaStreamTrack::new(
        format!("load-{index}"),
        format!("mic-{index}"),
        "webrtcload".into(),
        RtpCodecKind::Audio,
        vec![RTCRtpEncodingParameters {
            rtp_coding_parameters: RTCRtpCodingParameters { ssrc: Some(0x5B00_0000 | index), ..Default::default() },
            codec: pcmu().rtp_codec,
            ..Default::default()
        }],
    )));
    pc.add_track(Arc::clone(&track) as Arc<dyn TrackLocal>).await.map_err(e)?;
    let offer = pc.create_offer(None).await.map_err(e)?;
    pc.set_local_description(offer).await.map_err(e)?;
    let _ = tokio::time::timeout(Duration::from_secs(2), gathered_rx.wait_for(|g| *g)).await;
    let sdp = pc.local_description().await.ok_or("no local description")?.sdp;
    let room = format!("{}{}", a.prefix, index / 2);
    let (status, headers, body) =
        http(&a.api, "POST", &format!("/v2/conferences/{room}/webrtc"), &a.token, &sdp).await?;
    if status != 201 {
        return Err(format!("peer {index}: HTTP {status}: {body}"));
    }
    pc.set_remote_description(RTCSessionDescription::answer(body).map_err(e)?).await.map_err(e)?;
    let up = tokio::time::timeout(Duration::from_secs(20), connected_rx.wait_for(|c| c.is_some()))
        .await
        .map_err(|_| format!("peer {index}: not connected in 20 s"))?
        .map_err(|_| "handler gone".to_string())?;
    if *up != Some(true) {
        return Err(format!("peer {index}: connection failed"));
    }
    let location = headers.get("location").cloned().unwrap_or_default();
    Ok(Peer { pc, track, rx, location })
}

fn cpu_s() -> f64 {
    // SAFETY: getrusage only writes into the zeroed struct we own.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: as above; RUSAGE_SELF is always valid.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    t(u.ru_utime) + t(u.ru_stime)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let a = match args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("webrtcload: {e}");
            std::process::exit(2);
        }
    };
    let start = Instant::now();
    let hist = Arc::new(Mutex::new(Histogram::default()));
    let mut peers = Vec::with_capacity(a.peers);
    for i in 0..a.peers {
        let p = match tokio::time::timeout(SETUP_LIMIT, join(&a, i as u32, start, &hist)).await {
            Ok(Ok(p)) => p,
            Ok(Err(e)) => {
                eprintln!("webrtcload: {e}");
                std::process::exit(1);
            }
            Err(_) => {
                eprintln!("webrtcload: peer {i} setup exceeded {SETUP_LIMIT:?}");
                std::process::exit(1);
            }
        };
        peers.push(p);
    }
    let setup_s = start.elapsed().as_secs_f64();
    println!("{}", serde_json::json!({"ready": true, "peers": a.peers, "setup_s": setup_s}));
    let cpu0 = cpu_s();
    let t0 = Instant::now();
    let packets = (a.duration * 50.0) as u32;
    let lag = Arc::new(Mutex::new(0f64));
    let mut senders = Vec::new();
    for (i, p) in peers.iter().enumerate() {
        let track = Arc::clone(&p.track);
        let lag = Arc::clone(&lag);
        // Spread the peers' send phases over the 20 ms.
        let phase = Duration::from_micros((i as u64 * 20_000 / a.peers as u64) % 20_000);
        senders.push(tokio::spawn(async move {
            let ssrc = track.ssrcs().await.first().copied().unwrap_or(0);
            let first = tokio::time::Instant::now() + phase;
            let mut worst = 0f64;
            let mut payload = [Law::Pcmu.filler(); FRAME];
            for seq in 0..packets {
                let due = first + Duration::from_millis(20 * u64::from(seq));
                tokio::time::sleep_until(due).await;
                worst = worst.max(due.elapsed().as_secs_f64() * 1000.0);
                let st = Stamp { stream: i as u32, seq, sent_us: start.elapsed().as_micros() as u32 };
                payload.fill(Law::Pcmu.filler());
                stamp::write(Law::Pcmu, &st, &mut payload);
                let pkt = rtc::rtp::Packet {
                    header: rtc::rtp::header::Header {
                        version: 2,
                        marker: seq == 0,
                        payload_type: 0,
                        sequence_number: seq as u16,
                        timestamp: seq.wrapping_mul(FRAME as u32),
                        ssrc,
                        ..Default::default()
                    },
                    payload: bytes::Bytes::copy_from_slice(&payload),
                };
                let _ = track.write_rtp(pkt).await;
            }
            let mut l = lag.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            *l = l.max(worst);
        }));
    }
    for s in senders {
        let _ = s.await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await; // drain
    let wall_s = t0.elapsed().as_secs_f64();
    let gen_cpu_s = cpu_s() - cpu0;
    let (mut received, mut duplicates, mut foreign, mut dead) = (0u64, 0u64, 0u64, 0u64);
    for p in &peers {
        let r = p.rx.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        received += r.received;
        duplicates += r.duplicates;
        foreign += r.foreign;
        dead += u64::from(r.received == 0);
    }
    let sent = u64::from(packets) * a.peers as u64;
    let lost = sent.saturating_sub(received);
    let max_lag = *lag.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let summary = {
        let hist = hist.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let q = |x: f64| hist.quantile_us(x);
        serde_json::json!({
            "calls": a.peers / 2, "peers": a.peers, "sent": sent, "received": received, "lost": lost,
            "loss_pct": (100.0 * lost as f64 / sent.max(1) as f64 * 1000.0).round() / 1000.0,
            "duplicates": duplicates, "dead_streams": dead, "foreign": foreign,
            "lat_us_p50": q(0.5), "lat_us_p99": q(0.99), "lat_us_p999": q(0.999), "lat_us_max": hist.max_us(),
            "lat_ms_p50": q(0.5) as f64 / 1000.0, "lat_ms_p99": q(0.99) as f64 / 1000.0,
            "lat_ms_p999": q(0.999) as f64 / 1000.0, "lat_ms_max": hist.max_us() as f64 / 1000.0,
            "max_send_lag_ms": (max_lag * 10.0).round() / 10.0, "gen_cpu_s": gen_cpu_s, "wall_s": wall_s,
            "setup_s": setup_s,
        })
    };
    println!("{summary}");
    for p in &peers {
        if !p.location.is_empty() {
            let _ = http(&a.api, "DELETE", &p.location, &a.token, "").await;
        }
        let _ = p.pc.close().await;
    }
}
