//! A scripted RTP endpoint for tests: the caller's phone. It sends G.711 PCMU audio
//! (and RFC 4733 key presses) every 20 ms of its own clock to the box and records
//! every packet that comes back, so a test can count packets and measure what the
//! caller heard. Plain std sockets on a thread: independent of the code under test.

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use super::{Sipp, scenario, sipp_args};

use sipbridge::media::g711::G711;

/// One received RTP packet.
#[derive(Debug, Clone)]
pub struct Packet {
    /// When it arrived, relative to the start of the run.
    pub at: Duration,
    /// RTP payload type.
    pub payload_type: u8,
    /// RTP marker bit.
    pub marker: bool,
    /// RTP sequence number.
    pub sequence: u16,
    /// The payload.
    pub payload: Vec<u8>,
}

impl Packet {
    /// RMS of the decoded PCMU payload (0 for other payload types).
    pub fn rms(&self) -> f64 {
        if self.payload_type != 0 || self.payload.is_empty() {
            return 0.0;
        }
        let sum: f64 = self.payload.iter().map(|&b| f64::from(G711::Pcmu.decode_sample(b)).powi(2)).sum();
        (sum / self.payload.len() as f64).sqrt()
    }

    /// Decoded PCMU samples.
    pub fn pcm(&self) -> Vec<i16> {
        self.payload.iter().map(|&b| G711::Pcmu.decode_sample(b)).collect()
    }
}

/// What the phone sends.
#[derive(Debug, Clone)]
pub struct Script {
    /// PCM16 8 kHz audio sent as PCMU, 160 samples per packet; after it, silence
    /// packets until the end.
    pub audio: Vec<i16>,
    /// Key presses: (packet index at which the press starts, digit). A press is
    /// 5 event packets (100 ms) then the end packet three times (RFC 4733 §2.5.1.4);
    /// audio pauses meanwhile.
    pub digits: Vec<(usize, char)>,
    /// Total run time.
    pub duration: Duration,
    /// Stop sending (keep receiving) after this long.
    pub send_for: Duration,
    /// Packet slots `[start, end)` in which nothing is sent (hold, silence
    /// suppression): the clock, the RTP timestamp and the audio position advance,
    /// the sequence number does not (no packet is lost, none was sent).
    pub gaps: Vec<(usize, usize)>,
}

/// A phone's RTP socket on 127.0.0.1.
pub struct RtpPhone {
    socket: UdpSocket,
}

impl Default for RtpPhone {
    fn default() -> Self {
        Self::bind()
    }
}

impl RtpPhone {
    /// Binds a free port on 127.0.0.1.
    pub fn bind() -> Self {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.set_read_timeout(Some(Duration::from_millis(2))).unwrap();
        Self { socket }
    }

    /// The port to advertise in SDP.
    pub fn port(&self) -> u16 {
        self.socket.local_addr().unwrap().port()
    }

    /// Runs `script` against `remote` (the box's RTP address from its SDP answer);
    /// returns every packet received meanwhile.
    pub fn run(&self, remote: SocketAddr, script: &Script) -> Vec<Packet> {
        let start = Instant::now();
        let ssrc = 0x5eed_0000 | u32::from(self.port());
        let mut seq: u16 = 1000;
        let mut ts: u32 = 160_000;
        let mut received = Vec::new();
        let mut buf = [0u8; 2048];
        let mut frame = 0usize;
        let mut pending: Vec<Vec<u8>> = Vec::new(); // queued event packets (payload, pt 101)
        let mut event_ts = 0u32;
        let mut next_send = start;
        while start.elapsed() < script.duration {
            let now = Instant::now();
            if now >= next_send && start.elapsed() < script.send_for {
                next_send += Duration::from_millis(20);
                if pending.is_empty() && script.gaps.iter().any(|&(from, to)| (from..to).contains(&frame)) {
                    ts = ts.wrapping_add(160);
                    frame += 1;
                    continue;
                }
                if pending.is_empty() {
                    if let Some(&(_, digit)) = script.digits.iter().find(|(at, _)| *at == frame) {
                        let event = "0123456789*#ABCD".find(digit).unwrap() as u8;
                        event_ts = ts;
                        for i in 1..=5u16 {
                            pending.push(vec![event, 10, ((i * 160) >> 8) as u8, (i * 160) as u8]);
                        }
                        for _ in 0..3 {
                            pending.push(vec![event, 0x80 | 10, 0x03, 0x20]);
                        }
                        pending.reverse();
                    }
                }
                let (pt, payload, marker, stamp) = if let Some(p) = pending.pop() {
                    let first = p[2] == 0 && p[3] == 160;
                    (101u8, p, first, event_ts)
                } else {
                    let mut pcmu = [0xffu8; 160];
                    let from = frame * 160;
                    if from < script.audio.len() {
                        let end = (from + 160).min(script.audio.len());
                        G711::Pcmu.encode(&script.audio[from..end], &mut pcmu);
                    }
                    (0u8, pcmu.to_vec(), false, ts)
                };
                let mut pkt = vec![0x80, if marker { 0x80 | pt } else { pt }];
                pkt.extend_from_slice(&seq.to_be_bytes());
                pkt.extend_from_slice(&stamp.to_be_bytes());
                pkt.extend_from_slice(&ssrc.to_be_bytes());
                pkt.extend_from_slice(&payload);
                let _ = self.socket.send_to(&pkt, remote);
                seq = seq.wrapping_add(1);
                ts = ts.wrapping_add(160);
                frame += 1;
            }
            if let Ok((n, _)) = self.socket.recv_from(&mut buf) {
                if n >= 12 && buf[0] >> 6 == 2 && !(200..=204).contains(&buf[1]) {
                    let cc = usize::from(buf[0] & 0x0f);
                    let head = 12 + 4 * cc;
                    if n >= head {
                        received.push(Packet {
                            at: start.elapsed(),
                            payload_type: buf[1] & 0x7f,
                            marker: buf[1] & 0x80 != 0,
                            sequence: u16::from_be_bytes([buf[2], buf[3]]),
                            payload: buf[head..n].to_vec(),
                        });
                    }
                }
            }
        }
        received
    }
}

/// A sine tone: `hz` at `amplitude` for `ms` milliseconds at 8 kHz.
pub fn tone(hz: f64, amplitude: f64, ms: usize) -> Vec<i16> {
    (0..ms * 8).map(|i| (amplitude * (2.0 * std::f64::consts::PI * hz * i as f64 / 8000.0).sin()) as i16).collect()
}

/// A decoded PCMU packet louder than this (RMS) is audio, not silence.
pub const LOUD: f64 = 500.0;

/// The PCMU packets of `packets` louder than [`LOUD`].
pub fn loud(packets: &[Packet]) -> Vec<&Packet> {
    packets.iter().filter(|p| p.payload_type == 0 && p.rms() > LOUD).collect()
}

/// Frequency of a tone in `packets` (Hz, from zero crossings of the decoded PCMU).
pub fn frequency(packets: &[&Packet]) -> f64 {
    let pcm: Vec<i16> = packets.iter().flat_map(|p| p.pcm()).collect();
    let crossings = pcm.windows(2).filter(|w| (w[0] < 0) != (w[1] < 0)).count();
    crossings as f64 / 2.0 / (pcm.len() as f64 / 8000.0)
}

/// A phone's script: `audio` (8 kHz) sent for `send_ms`, key presses at packet
/// indexes, the run lasting `total_ms`, no gaps.
pub fn script(audio: Vec<i16>, digits: Vec<(usize, char)>, send_ms: u64, total_ms: u64) -> Script {
    Script {
        audio,
        digits,
        send_for: Duration::from_millis(send_ms),
        duration: Duration::from_millis(total_ms),
        gaps: vec![],
    }
}

/// The box's RTP address for each call in a SIPp message trace: Call-ID → the
/// `c=`/`m=audio` of the 200 OK (or 183 with SDP: early media) answering its INVITE.
pub fn answers_in_trace(trace: &str) -> std::collections::HashMap<String, SocketAddr> {
    let mut out = std::collections::HashMap::new();
    for msg in trace.split("----------------------------------------------") {
        let Some(start) = msg.find("SIP/2.0 200 OK").or_else(|| msg.find("SIP/2.0 183")) else { continue };
        let msg = &msg[start..];
        if !msg.contains("INVITE") {
            continue;
        }
        let field = |prefix: &str| {
            msg.lines().find_map(|l| {
                let l = l.trim();
                l.to_ascii_lowercase()
                    .starts_with(&prefix.to_ascii_lowercase())
                    .then(|| l[prefix.len()..].trim().to_string())
            })
        };
        let (Some(call_id), Some(c), Some(m)) = (field("Call-ID:"), field("c=IN IP4"), field("m=audio")) else {
            continue;
        };
        let port: u16 = m.split_whitespace().next().and_then(|p| p.parse().ok()).unwrap_or(0);
        if let Ok(ip) = c.parse::<std::net::IpAddr>() {
            out.insert(call_id, SocketAddr::new(ip, port));
        }
    }
    out
}

/// Our port for each call in a SIPp message trace: Call-ID → the `m=audio` port of
/// the INVITE SIPp sent.
pub fn offers_in_trace(trace: &str) -> std::collections::HashMap<String, u16> {
    let mut out = std::collections::HashMap::new();
    for msg in trace.split("----------------------------------------------") {
        let Some(start) = msg.find("INVITE sip:") else { continue };
        let msg = &msg[start..];
        let field = |prefix: &str| {
            msg.lines().find_map(|l| {
                let l = l.trim();
                l.to_ascii_lowercase()
                    .starts_with(&prefix.to_ascii_lowercase())
                    .then(|| l[prefix.len()..].trim().to_string())
            })
        };
        let (Some(call_id), Some(m)) = (field("Call-ID:"), field("m=audio")) else { continue };
        if let Some(port) = m.split_whitespace().next().and_then(|p| p.parse().ok()) {
            out.insert(call_id, port);
        }
    }
    out
}

/// SIPp (from `local_ip`) places `scripts.len()` calls to `number` at the box's SIP
/// `port` (one per phone, all at once), each
/// advertising its phone's port; each phone plays `scripts[i]` to the box's RTP
/// address from its answer (183 or 200). Returns SIPp's exit code, its report and what each
/// phone received.
pub fn place_calls(
    dir: &std::path::Path,
    port: u16,
    local_ip: &str,
    number: &str,
    hold_ms: u64,
    scripts: Vec<Script>,
) -> (i32, String, Vec<Vec<Packet>>) {
    let callers = vec!["+14155550123".to_string(); scripts.len()];
    place_calls_from(dir, port, local_ip, number, hold_ms, scripts, &callers)
}

/// [`place_calls`] with call i placed from the number `callers[i]` (its From).
pub fn place_calls_from(
    dir: &std::path::Path,
    port: u16,
    local_ip: &str,
    number: &str,
    hold_ms: u64,
    scripts: Vec<Script>,
    callers: &[String],
) -> (i32, String, Vec<Vec<Packet>>) {
    let template = std::fs::read_to_string(scenario("uac_agent.xml.in")).unwrap();
    place_calls_in(dir, port, local_ip, number, &template.replace("@HOLD_MS@", &hold_ms.to_string()), scripts, callers)
}

/// [`place_calls_from`] with SIPp playing `scenario_xml` (a variant of
/// `uac_agent.xml.in`, its hold already filled in).
pub fn place_calls_in(
    dir: &std::path::Path,
    port: u16,
    local_ip: &str,
    number: &str,
    scenario_xml: &str,
    scripts: Vec<Script>,
    callers: &[String],
) -> (i32, String, Vec<Vec<Packet>>) {
    let phones: Vec<RtpPhone> = scripts.iter().map(|_| RtpPhone::bind()).collect();
    let n = phones.len();
    let name = format!("uac_{number}_{}", phones[0].port());
    let sf = dir.join(format!("{name}.xml"));
    std::fs::write(&sf, scenario_xml).unwrap();
    let csv = dir.join(format!("{name}.csv"));
    let lines: String = phones.iter().zip(callers).map(|(p, c)| format!("{};{c};\n", p.port())).collect();
    std::fs::write(&csv, format!("SEQUENTIAL\n{lines}")).unwrap();
    let mut args = sipp_args("uac_call.xml", number, &format!("127.0.0.1:{port}"), local_ip, &[]);
    args[1] = sf.display().to_string();
    let m = args.iter().position(|a| a == "-m").unwrap();
    args[m + 1] = n.to_string();
    args.extend(
        ["-inf", &csv.display().to_string(), "-key", "rtp_ip", "127.0.0.1", "-l", &n.to_string(), "-r", "50"]
            .map(String::from),
    );
    let mut sipp = Sipp::start(dir, &name, &args);
    // The box's RTP address per call, from the 200 OKs in SIPp's trace.
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let by_port: std::collections::HashMap<u16, SocketAddr> = loop {
        let trace = sipp.messages();
        let offers = offers_in_trace(&trace);
        let answers = answers_in_trace(&trace);
        let map: std::collections::HashMap<u16, SocketAddr> =
            offers.iter().filter_map(|(call_id, p)| answers.get(call_id).map(|a| (*p, *a))).collect();
        if map.len() == n || std::time::Instant::now() >= deadline {
            break map;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(by_port.len(), n, "every call answered with SDP: {}", sipp.report());
    let received = std::thread::scope(|s| {
        let handles: Vec<_> = phones
            .iter()
            .zip(scripts.iter())
            .map(|(phone, script)| {
                let remote = by_port[&phone.port()];
                s.spawn(move || phone.run(remote, script))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect::<Vec<_>>()
    });
    let code = sipp.wait(Duration::from_secs(40));
    (code, sipp.report(), received)
}
