//! `rxbench` — the user-space cost of receiving one RTP packet in
//! `sipbridge::media::leg::RtpSession::handle_receive` (parse, latch check, the
//! inbound RTP budget, RFC 3550 receiver statistics), without sockets or the
//! engine around it (docs/benchmarks.md, "Media engine", the RTP budget).
//!
//! ```text
//! rxbench [SESSIONS [ROUNDS]]     default 1600 sessions (800 relayed calls), 3000 rounds
//! ```
//!
//! Each round gives every session one 20 ms PCMA packet from its latched peer,
//! the sessions in turn (as the engine meets them, so their state is as cold as
//! in the relay), with the clock 20 ms further on. Prints one JSON line per pass
//! (two passes): nanoseconds per packet by wall time, and how many packets came
//! back as audio (all of them: a real-time stream is within its budget).

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime};

use sipbridge::media::g711::G711;
use sipbridge::media::latch::LatchConfig;
use sipbridge::media::leg::{Received, RtpSession, Socket};
use sipbridge::sdp::Direction;
use sipbridge::sdp::negotiate::NegotiatedAudio;

fn arg(n: usize, default: u32) -> Result<u32, String> {
    std::env::args().nth(n).map_or(Ok(default), |a| a.parse().map_err(|e| format!("argument {n} ({a}): {e}")))
}

fn main() -> ExitCode {
    let (sessions, rounds) = match (arg(1, 1600), arg(2, 3000)) {
        (Ok(s), Ok(r)) if s > 0 && s <= 30_000 && r > 0 => (s as usize, r),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("rxbench: {e}");
            return ExitCode::from(2);
        }
        _ => {
            eprintln!("rxbench: SESSIONS 1..=30000, ROUNDS > 0");
            return ExitCode::from(2);
        }
    };
    let t0 = Instant::now();
    let peers: Vec<SocketAddr> =
        (0..sessions).map(|i| SocketAddr::from(([127, 0, 0, 1], 2000 + 2 * i as u16))).collect();
    let mut legs: Vec<RtpSession> = peers
        .iter()
        .map(|p| {
            let audio = NegotiatedAudio {
                codec: G711::Pcma.into(),
                payload_type: 8,
                receive_payload_type: 8,
                telephone_event: Some(101),
                receive_telephone_event: Some(101),
                remote_rtp: Some(*p),
                remote_rtcp: Some(SocketAddr::new(p.ip(), p.port() + 1)),
                rtcp_mux: false,
                ptime_ms: 20,
                direction: Direction::SendRecv,
            };
            RtpSession::new(audio, LatchConfig::default(), Duration::from_secs(5), t0, SystemTime::now())
        })
        .collect();
    let mut packet = vec![0x80u8, 8, 0, 0, 0, 0, 0, 0, 0x12, 0x34, 0x56, 0x78];
    packet.extend([0xd5u8; 160]);
    for pass in 0..2u32 {
        let start = Instant::now();
        let mut audio = 0u64;
        for k in 0..rounds {
            let n = k + pass * rounds;
            let now = t0 + Duration::from_millis(20 * u64::from(n));
            packet[2..4].copy_from_slice(&(n as u16).to_be_bytes());
            packet[4..8].copy_from_slice(&n.wrapping_mul(160).to_be_bytes());
            for (leg, peer) in legs.iter_mut().zip(&peers) {
                let r = leg.handle_receive(Socket::Rtp, &packet, *peer, now);
                audio += u64::from(matches!(r, Received::Audio { .. }));
            }
        }
        let packets = u64::from(rounds) * sessions as u64;
        let ns = start.elapsed().as_nanos() as f64 / packets as f64;
        println!(
            "{{\"pass\": {pass}, \"sessions\": {sessions}, \"packets\": {packets}, \"audio\": {audio}, \"ns_per_packet\": {ns:.1}}}"
        );
    }
    ExitCode::SUCCESS
}
