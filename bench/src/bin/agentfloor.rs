//! `agentfloor` — the bare agent path, for the agent-path media benchmark's floor
//! (`scripts/bench-media --modes agent-floor`): what any gateway between RTP
//! calls and a WebSocket voice agent must spend per frame on this box, with
//! nothing else in it. The agent path's counterpart of the media anchor's bare C
//! relay (`../shared/bench/media-anchor/src/relay.c`).
//!
//! ```text
//! agentfloor --ws 127.0.0.1:PORT --calls N --calls-out FILE --max-seconds S
//!            [--caller-ip 127.0.0.2] [--caller-base 20000] [--bind-ip 127.0.0.1]
//! ```
//!
//! Binds N UDP sockets on `--bind-ip` (ephemeral ports) and opens N WebSocket
//! connections to `--ws` (an HTTP/1.1 upgrade written by hand, RFC 6455 §4.1),
//! then writes `caller_ip caller_port bind_ip port` per call to `--calls-out`
//! (`rtpload --echo`'s calls file; call i's caller is `--caller-base + 2i`) and
//! prints `READY` on stderr. From then on, one thread and one level-triggered
//! `epoll_wait` over all 2N sockets:
//!
//! * an RTP packet from a caller becomes one Telnyx `media` message (the
//!   payload in base64 inside the same JSON shape sipbridge sends; PROTOCOLS.md
//!   §3), one masked text frame, one `write`;
//! * a text frame from the agent has its `"payload"` base64-decoded and goes back
//!   to the caller at once as one RTP packet (PT 0, the call's own sequence and
//!   timestamp), one `sendto`.
//!
//! No pacing, no jitter buffer, no transcoding, no statistics, no allocation per
//! frame: one UDP receive, one TCP send, one TCP receive and one UDP send per
//! 20 ms frame, the least an agent gateway can do. Exits after `--max-seconds`
//! (at most 3600) or on SIGTERM/SIGINT and prints one JSON object on stdout:
//! `rtp_in`, `frames_out`, `frames_in`, `rtp_out`, `bad_frames`, `partial_writes`
//! (frames that did not fit the socket at once and were queued), `cpu_s`, `wall_s`.

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpStream, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;

/// Bytes of an unfinished agent frame held before the run fails.
const MAX_PENDING: usize = 64 * 1024;

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

struct Options {
    ws: SocketAddrV4,
    calls: usize,
    calls_out: String,
    max_seconds: u64,
    caller_ip: Ipv4Addr,
    caller_base: u16,
    bind_ip: Ipv4Addr,
}

fn usage() -> String {
    "usage: agentfloor --ws IP:PORT --calls N --calls-out FILE --max-seconds S [--caller-ip IP] \
     [--caller-base PORT] [--bind-ip IP]"
        .into()
}

fn parse_args() -> Result<Options, String> {
    let mut o = Options {
        ws: SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0),
        calls: 0,
        calls_out: String::new(),
        max_seconds: 0,
        caller_ip: Ipv4Addr::new(127, 0, 0, 2),
        caller_base: 20000,
        bind_ip: Ipv4Addr::LOCALHOST,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let v = args.next().ok_or_else(usage)?;
        let bad = |e: &dyn std::fmt::Display| format!("{a} {v:?}: {e}");
        match a.as_str() {
            "--ws" => o.ws = v.parse().map_err(|e| bad(&e))?,
            "--calls" => o.calls = v.parse().map_err(|e| bad(&e))?,
            "--calls-out" => o.calls_out = v,
            "--max-seconds" => o.max_seconds = v.parse().map_err(|e| bad(&e))?,
            "--caller-ip" => o.caller_ip = v.parse().map_err(|e| bad(&e))?,
            "--caller-base" => o.caller_base = v.parse().map_err(|e| bad(&e))?,
            "--bind-ip" => o.bind_ip = v.parse().map_err(|e| bad(&e))?,
            _ => return Err(usage()),
        }
    }
    if o.calls == 0 || o.calls > 16_000 || o.calls_out.is_empty() || !(1..=3600).contains(&o.max_seconds) {
        return Err(usage() + " (1..=16000 calls, 1..=3600 s, a calls file)");
    }
    if usize::from(o.caller_base) + 2 * o.calls > 65_535 {
        return Err("--caller-base + 2 x calls is past port 65535".into());
    }
    Ok(o)
}

/// One call: its RTP socket, its WebSocket, and what is half-read or half-written.
struct Call {
    udp: UdpSocket,
    caller: libc::sockaddr_in,
    ws: TcpStream,
    /// Bytes read from the WebSocket, not yet a whole frame.
    inbuf: Vec<u8>,
    /// Bytes of frames the socket did not take yet.
    outbuf: Vec<u8>,
    /// Media messages sent (Telnyx `sequence_number` / `chunk`).
    sent: u64,
    rtp_seq: u16,
    rtp_ts: u32,
    writable_armed: bool,
}

#[derive(Default)]
struct Counts {
    rtp_in: u64,
    frames_out: u64,
    frames_in: u64,
    rtp_out: u64,
    bad_frames: u64,
    partial_writes: u64,
}

fn sockaddr(a: SocketAddrV4) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: a.port().to_be(),
        sin_addr: libc::in_addr { s_addr: u32::from(*a.ip()).to_be() },
        sin_zero: [0; 8],
    }
}

/// The RFC 6455 §4.1 client handshake, blocking; the socket is non-blocking after.
fn handshake(ws: SocketAddrV4) -> Result<TcpStream, String> {
    let mut s = TcpStream::connect(ws).map_err(|e| format!("connect {ws}: {e}"))?;
    s.set_nodelay(true).map_err(|e| e.to_string())?;
    let req = format!(
        "GET / HTTP/1.1\r\nHost: {ws}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    s.write_all(req.as_bytes()).map_err(|e| format!("handshake write: {e}"))?;
    let mut resp = Vec::new();
    let mut byte = [0u8; 1];
    // Byte by byte up to the blank line: nothing of the first frame is read.
    while !resp.ends_with(b"\r\n\r\n") {
        if resp.len() > 4096 || s.read(&mut byte).map_err(|e| format!("handshake read: {e}"))? == 0 {
            return Err("handshake: no complete response".into());
        }
        resp.push(byte[0]);
    }
    if !resp.starts_with(b"HTTP/1.1 101") {
        return Err(format!("handshake refused: {}", String::from_utf8_lossy(&resp[..resp.len().min(40)])));
    }
    s.set_nonblocking(true).map_err(|e| e.to_string())?;
    Ok(s)
}

fn epoll_ctl(ep: RawFd, op: libc::c_int, fd: RawFd, events: u32, id: u64) -> Result<(), String> {
    let mut ev = libc::epoll_event { events, u64: id };
    // SAFETY: valid fds and a valid event struct.
    if unsafe { libc::epoll_ctl(ep, op, fd, &mut ev) } < 0 {
        return Err(format!("epoll_ctl: {}", io::Error::last_os_error()));
    }
    Ok(())
}

/// Appends a masked client text frame carrying `text` (RFC 6455 §5.2, §5.3).
fn push_frame(out: &mut Vec<u8>, text: &[u8], mask: [u8; 4]) {
    out.push(0x81);
    match text.len() {
        n @ 0..=125 => out.push(0x80 | n as u8),
        n @ 126..=65_535 => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&mask);
    out.extend(text.iter().enumerate().map(|(i, b)| b ^ mask[i & 3]));
}

/// The next whole server frame in `buf`: (opcode, payload range, frame length).
fn next_frame(buf: &[u8]) -> Option<(u8, std::ops::Range<usize>, usize)> {
    if buf.len() < 2 {
        return None;
    }
    let opcode = buf[0] & 0x0f;
    let (len, mut at): (usize, usize) = match buf[1] & 0x7f {
        126 => (usize::from(u16::from_be_bytes([*buf.get(2)?, *buf.get(3)?])), 4),
        127 => (usize::try_from(u64::from_be_bytes(buf.get(2..10)?.try_into().ok()?)).ok()?, 10),
        n => (usize::from(n), 2),
    };
    if buf[1] & 0x80 != 0 {
        at += 4; // a server must not mask; skipped if it does
    }
    let end = at.checked_add(len)?;
    (buf.len() >= end).then_some((opcode, at..end, end))
}

/// The base64 text of `"payload":"..."` in a media message.
fn payload_of(text: &[u8]) -> Option<&[u8]> {
    const KEY: &[u8] = b"\"payload\":\"";
    let start = text.windows(KEY.len()).position(|w| w == KEY)? + KEY.len();
    let len = text[start..].iter().position(|&b| b == b'"')?;
    Some(&text[start..start + len])
}

fn flush(c: &mut Call, counts: &mut Counts) -> io::Result<()> {
    while !c.outbuf.is_empty() {
        match c.ws.write(&c.outbuf) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                if n < c.outbuf.len() {
                    counts.partial_writes += 1;
                }
                c.outbuf.drain(..n);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn run(o: Options) -> Result<String, String> {
    let mut calls = Vec::with_capacity(o.calls);
    let mut lines = String::new();
    for i in 0..o.calls {
        let udp = UdpSocket::bind(SocketAddrV4::new(o.bind_ip, 0)).map_err(|e| format!("bind: {e}"))?;
        udp.set_nonblocking(true).map_err(|e| e.to_string())?;
        let port = udp.local_addr().map_err(|e| e.to_string())?.port();
        let caller = SocketAddrV4::new(o.caller_ip, o.caller_base + 2 * i as u16);
        lines.push_str(&format!("{} {} {} {}\n", caller.ip(), caller.port(), o.bind_ip, port));
        calls.push(Call {
            udp,
            caller: sockaddr(caller),
            ws: handshake(o.ws)?,
            inbuf: Vec::with_capacity(4096),
            outbuf: Vec::with_capacity(4096),
            sent: 0,
            rtp_seq: 0,
            rtp_ts: 0,
            writable_armed: false,
        });
    }
    // SAFETY: plain epoll instance.
    let ep = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    if ep < 0 {
        return Err(format!("epoll_create1: {}", io::Error::last_os_error()));
    }
    let n = calls.len() as u64;
    for (i, c) in calls.iter().enumerate() {
        epoll_ctl(ep, libc::EPOLL_CTL_ADD, c.udp.as_raw_fd(), libc::EPOLLIN as u32, i as u64)?;
        epoll_ctl(ep, libc::EPOLL_CTL_ADD, c.ws.as_raw_fd(), libc::EPOLLIN as u32, n + i as u64)?;
    }
    std::fs::write(&o.calls_out, lines).map_err(|e| format!("{}: {e}", o.calls_out))?;
    // SAFETY: installing an async-signal-safe handler (one atomic store).
    unsafe {
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
    }
    eprintln!("READY {} calls", calls.len());

    let mut counts = Counts::default();
    let cpu0 = sipbridge_bench::cpu_seconds();
    let t0 = Instant::now();
    let deadline = t0 + Duration::from_secs(o.max_seconds);
    let mut evs = vec![libc::epoll_event { events: 0, u64: 0 }; 256];
    let mut pkt = [0u8; 1500];
    let mut json: Vec<u8> = Vec::with_capacity(1024);
    let mut b64 = vec![0u8; 2048];
    let mut audio = vec![0u8; 1500];
    let mut rtp = [0u8; 1500];
    let stream_id = "6a3e3e3a-2b3c-4d5e-8f90-a1b2c3d4e5f6";
    while !STOP.load(Ordering::Relaxed) && Instant::now() < deadline {
        // SAFETY: evs has room for evs.len() events.
        let k = unsafe { libc::epoll_wait(ep, evs.as_mut_ptr(), evs.len() as i32, 200) };
        if k < 0 {
            if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(format!("epoll_wait: {}", io::Error::last_os_error()));
        }
        for ev in &evs[..k as usize] {
            let (id, events) = (ev.u64, ev.events);
            if id < n {
                let c = &mut calls[id as usize];
                // RTP in: one media message per packet.
                loop {
                    let len = match c.udp.recv(&mut pkt) {
                        Ok(len) => len,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(_) => break,
                    };
                    if len < 12 || pkt[0] >> 6 != 2 {
                        continue;
                    }
                    counts.rtp_in += 1;
                    let off = 12 + 4 * usize::from(pkt[0] & 0x0f);
                    let Some(payload) = pkt.get(off..len) else { continue };
                    let Ok(b64_len) = B64.encode_slice(payload, &mut b64) else { continue };
                    c.sent += 1;
                    json.clear();
                    let _ = write!(
                        json,
                        "{{\"event\":\"media\",\"sequence_number\":\"{}\",\"media\":{{\"track\":\"inbound\",\
                         \"chunk\":\"{}\",\"timestamp\":\"{}\",\"payload\":\"",
                        c.sent + 1,
                        c.sent,
                        c.sent * 20
                    );
                    json.extend_from_slice(&b64[..b64_len]);
                    let _ = write!(json, "\"}},\"stream_id\":\"{stream_id}\"}}");
                    let mask = (c.sent as u32).wrapping_mul(0x9E37_79B9).to_ne_bytes();
                    push_frame(&mut c.outbuf, &json, mask);
                    counts.frames_out += 1;
                    if flush(c, &mut counts).is_err() {
                        return Err(format!("call {id}: the agent's connection failed"));
                    }
                    if !c.outbuf.is_empty() && !c.writable_armed {
                        c.writable_armed = true;
                        epoll_ctl(
                            ep,
                            libc::EPOLL_CTL_MOD,
                            c.ws.as_raw_fd(),
                            (libc::EPOLLIN | libc::EPOLLOUT) as u32,
                            n + id,
                        )?;
                    }
                }
                continue;
            }
            let i = (id - n) as usize;
            let c = &mut calls[i];
            if events & libc::EPOLLOUT as u32 != 0 {
                if flush(c, &mut counts).is_err() {
                    return Err(format!("call {i}: the agent's connection failed"));
                }
                if c.outbuf.is_empty() && c.writable_armed {
                    c.writable_armed = false;
                    epoll_ctl(ep, libc::EPOLL_CTL_MOD, c.ws.as_raw_fd(), libc::EPOLLIN as u32, id)?;
                }
            }
            if events & (libc::EPOLLIN | libc::EPOLLHUP | libc::EPOLLERR) as u32 == 0 {
                continue;
            }
            // Agent frames in: one RTP packet back per media message.
            let have = c.inbuf.len();
            c.inbuf.resize(have + 2048, 0);
            match c.ws.read(&mut c.inbuf[have..]) {
                Ok(0) => return Err(format!("call {i}: the agent closed its connection")),
                Ok(got) => c.inbuf.truncate(have + got),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    c.inbuf.truncate(have);
                    continue;
                }
                Err(e) => return Err(format!("call {i}: {e}")),
            }
            let mut used = 0;
            while let Some((opcode, range, end)) = next_frame(&c.inbuf[used..]) {
                let text = &c.inbuf[used + range.start..used + range.end];
                used += end;
                if opcode != 1 {
                    continue;
                }
                counts.frames_in += 1;
                let Some(Ok(alen)) = payload_of(text).map(|p| B64.decode_slice(p, &mut audio)) else {
                    counts.bad_frames += 1;
                    continue;
                };
                c.rtp_seq = c.rtp_seq.wrapping_add(1);
                c.rtp_ts = c.rtp_ts.wrapping_add(alen as u32);
                rtp[0] = 0x80;
                rtp[1] = 0;
                rtp[2..4].copy_from_slice(&c.rtp_seq.to_be_bytes());
                rtp[4..8].copy_from_slice(&c.rtp_ts.to_be_bytes());
                rtp[8..12].copy_from_slice(&(0x5000_0000u32 + i as u32).to_be_bytes());
                rtp[12..12 + alen].copy_from_slice(&audio[..alen]);
                // SAFETY: a valid fd, buffer and address of the given lengths.
                let r = unsafe {
                    libc::sendto(
                        c.udp.as_raw_fd(),
                        rtp.as_ptr().cast(),
                        12 + alen,
                        0,
                        (&c.caller as *const libc::sockaddr_in).cast(),
                        std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
                    )
                };
                if r > 0 {
                    counts.rtp_out += 1;
                }
            }
            c.inbuf.drain(..used);
            // An echo is a few hundred bytes: a frame that never completes must not
            // grow the buffer without bound.
            if c.inbuf.len() > MAX_PENDING {
                return Err(format!("call {i}: a frame from the agent over {MAX_PENDING} bytes"));
            }
        }
    }
    let cpu = sipbridge_bench::cpu_seconds() - cpu0;
    // SAFETY: closing the epoll fd we own.
    unsafe { libc::close(ep) };
    Ok(format!(
        "{{\"calls\": {}, \"rtp_in\": {}, \"frames_out\": {}, \"frames_in\": {}, \"rtp_out\": {}, \
         \"bad_frames\": {}, \"partial_writes\": {}, \"cpu_s\": {cpu:.3}, \"wall_s\": {:.3}}}",
        calls.len(),
        counts.rtp_in,
        counts.frames_out,
        counts.frames_in,
        counts.rtp_out,
        counts.bad_frames,
        counts.partial_writes,
        t0.elapsed().as_secs_f64()
    ))
}

fn main() -> ExitCode {
    sipbridge_bench::tool_main("agentfloor", parse_args, run)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_masked_frame_unmasks_to_the_text_and_server_frames_parse_whole_only() {
        let mut out = Vec::new();
        let text = vec![b'x'; 300];
        push_frame(&mut out, &text, [1, 2, 3, 4]);
        assert_eq!(&out[..4], &[0x81, 0x80 | 126, 1, 44]);
        let unmasked: Vec<u8> = out[8..].iter().enumerate().map(|(i, b)| b ^ [1, 2, 3, 4][i & 3]).collect();
        assert_eq!(unmasked, text);
        let server = [&[0x81u8, 5][..], b"hello", &[0x81, 2, b'h']].concat();
        assert_eq!(next_frame(&server), Some((1, 2..7, 7)));
        assert_eq!(next_frame(&server[7..]), None, "a frame cut short waits for its rest");
    }

    #[test]
    fn the_payload_is_found_in_a_media_message() {
        let m = br#"{"event":"media","media":{"payload":"AAEC"}}"#;
        assert_eq!(payload_of(m), Some(&b"AAEC"[..]));
        assert_eq!(payload_of(br#"{"event":"mark"}"#), None);
    }
}
