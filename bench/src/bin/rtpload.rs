//! `rtpload` — bounded G.711 RTP load generator, sink and loss/latency counter for
//! media-relay benchmarks (one thread: timerfd 1 ms + epoll, `sendto` per packet,
//! `recvmmsg` batches).
//!
//! ```text
//! rtpload [--echo] [--pt 0|8] [--duration S] [--ptime MS] [--drain-ms MS] [--seed N] CALLS_FILE
//! ```
//!
//! * Relay mode (default): each line of CALLS_FILE is
//!   `caller_ip caller_port relayA_ip relayA_port callee_ip callee_port relayB_ip relayB_port`.
//!   Two sockets per call (caller and callee address); two streams: caller → relayA
//!   (expected back on the callee socket) and callee → relayB (expected on the caller
//!   socket).
//! * `--echo`: each line is `caller_ip caller_port relay_ip relay_port`; one socket and
//!   one stream per call, expected back on the same socket (the far end echoes).
//!
//! Every stream sends one RTP packet (12-byte header + 160 bytes G.711, payload type
//! `--pt`, default 8 = PCMA) every `--ptime` ms (default 20) for `--duration` s
//! (default 40, at most 600), at a random phase inside the ptime (fixed `--seed`);
//! receiving goes on for `--drain-ms` (default 1000) after the last send. The packet
//! identity (stream, sequence, send time) is carried in the payload by
//! [`sipbridge_bench::stamp`], which survives G.711 re-encoding and PCMU↔PCMA
//! transcoding; the RTP header (SSRC, sequence, timestamp, PT) may be rewritten by
//! whatever is in the path. Returns are counted per stream by that identity; a
//! duplicate of an already counted packet is counted apart.
//!
//! Prints one JSON object on stdout, units in the key names:
//! `sent`, `received` (unique packets back), `lost` = sent − received, `loss_pct`,
//! `duplicates`, `dead_streams` (nothing came back), `wrong_socket` (came back on
//! another socket than expected), `foreign` (no readable stamp),
//! `lat_us_p50/p99/p999/max` one-way latency send → return in µs (same clock; the
//! `lat_ms_*` keys are the same in ms), `klat_ms_p50/p99/max` (and `_steady`) the same
//! latency to the kernel's arrival stamp of the return (`SO_TIMESTAMPNS`): it leaves
//! out how late this process read it, which on a busy generator core is time the
//! relay did not add; `unstamped_arrivals` (returns without a stamp), `max_send_lag_ms` (worst delay of a send tick
//! behind its schedule: > 20 ms means the generator, not the relay, is the
//! bottleneck), `late_ticks`, `gen_cpu_s` (own utime+stime, getrusage) and `wall_s`.
//! Never runs longer than duration + drain + 3 s.

use std::fs;
use std::io;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use sipbridge_bench::hist::Histogram;
use sipbridge_bench::kstamp;
use sipbridge_bench::stamp::{self, FRAME, Law, MAX_STREAM, Stamp};

const HEADER: usize = 12;
const PACKET: usize = HEADER + FRAME;
const SSRC_BASE: u32 = 0x1000_0000;
const TIMER_ID: u64 = u64::MAX;
const BATCH: usize = 64;
/// Latency is also reported without the first this-long of the run
/// (`lat_ms_p50_steady`, `lat_ms_p99_steady`).
const STEADY_AFTER: std::time::Duration = std::time::Duration::from_secs(5);
const MAX_DGRAM: usize = 1500;
/// u64 words of control buffer per received message (one SCM_TIMESTAMPNS).
const CONTROL_WORDS: usize = 8;

struct Options {
    echo: bool,
    law: Law,
    duration_s: f64,
    ptime_ms: u32,
    drain_ms: u64,
    seed: u64,
    calls_file: String,
}

fn usage() -> String {
    "usage: rtpload [--echo] [--pt 0|8] [--duration S] [--ptime MS] [--drain-ms MS] [--seed N] CALLS_FILE".into()
}

fn parse_args() -> Result<Options, String> {
    let mut o = Options {
        echo: false,
        law: Law::Pcma,
        duration_s: 40.0,
        ptime_ms: 20,
        drain_ms: 1000,
        seed: 12345,
        calls_file: String::new(),
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = |name: &str| args.next().ok_or_else(|| format!("{name} needs a value\n{}", usage()));
        match a.as_str() {
            "--echo" => o.echo = true,
            "--pt" => {
                let pt: u8 = value("--pt")?.parse().map_err(|e| format!("--pt: {e}"))?;
                o.law = Law::from_payload_type(pt).ok_or("--pt must be 0 (PCMU) or 8 (PCMA)")?;
            }
            "--duration" => o.duration_s = value("--duration")?.parse().map_err(|e| format!("--duration: {e}"))?,
            "--ptime" => o.ptime_ms = value("--ptime")?.parse().map_err(|e| format!("--ptime: {e}"))?,
            "--drain-ms" => o.drain_ms = value("--drain-ms")?.parse().map_err(|e| format!("--drain-ms: {e}"))?,
            "--seed" => o.seed = value("--seed")?.parse().map_err(|e| format!("--seed: {e}"))?,
            "-h" | "--help" => return Err(usage()),
            s if s.starts_with('-') => return Err(format!("unknown option {s}\n{}", usage())),
            s => o.calls_file = s.to_string(),
        }
    }
    if o.calls_file.is_empty() {
        return Err(usage());
    }
    if !(o.duration_s > 0.0 && o.duration_s <= 600.0) {
        return Err("--duration must be in (0, 600] s".into());
    }
    if !(1..=1000).contains(&o.ptime_ms) || o.drain_ms > 60_000 {
        return Err("--ptime must be 1..=1000 ms and --drain-ms at most 60000".into());
    }
    Ok(o)
}

/// One direction of one call.
struct Stream {
    /// Socket it is sent from.
    sock: u32,
    /// Socket it should come back on.
    expect: u32,
    dst: libc::sockaddr_in,
    /// Phase inside the ptime, ms (the tick it is sent on).
    slot_ms: u32,
    rtp_seq: u16,
    rtp_ts: u32,
    sent: u32,
    received: u32,
    duplicates: u32,
    wrong_socket: u32,
    /// Bitmap of sequence numbers received.
    seen: Vec<u64>,
    /// Sum of the latencies of the packets received, µs (for the stream's mean).
    lat_sum_us: u64,
}

/// splitmix64: fixed-seed phases and initial RTP sequence/timestamp.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

fn sockaddr(a: SocketAddrV4) -> libc::sockaddr_in {
    // SAFETY: sockaddr_in is plain old data; all-zero is a valid value.
    let mut s: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    s.sin_family = libc::AF_INET as libc::sa_family_t;
    s.sin_port = a.port().to_be();
    s.sin_addr = libc::in_addr { s_addr: u32::from_ne_bytes(a.ip().octets()) };
    s
}

fn addr(ip: &str, port: &str) -> Result<SocketAddrV4, String> {
    let ip: Ipv4Addr = ip.parse().map_err(|e| format!("bad IPv4 address {ip:?}: {e}"))?;
    let port: u16 = port.parse().map_err(|e| format!("bad port {port:?}: {e}"))?;
    Ok(SocketAddrV4::new(ip, port))
}

fn bind(a: SocketAddrV4) -> Result<UdpSocket, String> {
    let s = UdpSocket::bind(a).map_err(|e| format!("bind {a}: {e}"))?;
    s.set_nonblocking(true).map_err(|e| format!("nonblocking {a}: {e}"))?;
    // The kernel stamps each datagram as it arrives: the `klat_*` latency, which
    // leaves out how long this process took to read it.
    kstamp::enable(s.as_raw_fd()).map_err(|e| format!("SO_TIMESTAMPNS {a}: {e}"))?;
    Ok(s)
}

fn check(rc: libc::c_int, what: &str) -> Result<libc::c_int, String> {
    if rc < 0 { Err(format!("{what}: {}", io::Error::last_os_error())) } else { Ok(rc) }
}

fn epoll_add(ep: RawFd, fd: RawFd, id: u64) -> Result<(), String> {
    let mut ev = libc::epoll_event { events: libc::EPOLLIN as u32, u64: id };
    // SAFETY: valid fds and a valid event struct.
    check(unsafe { libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, fd, &mut ev) }, "epoll_ctl").map(|_| ())
}

fn run(o: Options) -> Result<String, String> {
    let text = fs::read_to_string(&o.calls_file).map_err(|e| format!("{}: {e}", o.calls_file))?;
    let mut rng = Rng(o.seed);
    let per_stream = (o.duration_s * 1000.0 / f64::from(o.ptime_ms)).round() as u32;
    let words = per_stream.div_ceil(64) as usize;
    let mut socks: Vec<UdpSocket> = Vec::new();
    let mut streams: Vec<Stream> = Vec::new();
    let new_stream = |sock: usize, expect: usize, dst: SocketAddrV4, rng: &mut Rng| Stream {
        sock: sock as u32,
        expect: expect as u32,
        dst: sockaddr(dst),
        slot_ms: (rng.next() % u64::from(o.ptime_ms)) as u32,
        rtp_seq: rng.next() as u16,
        rtp_ts: rng.next() as u32,
        sent: 0,
        received: 0,
        duplicates: 0,
        wrong_socket: 0,
        seen: vec![0; words],
        lat_sum_us: 0,
    };
    let mut calls = 0usize;
    for (n, line) in text.lines().enumerate() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.is_empty() {
            continue;
        }
        let bad = || format!("{}:{}: expected {} fields", o.calls_file, n + 1, if o.echo { 4 } else { 8 });
        if o.echo {
            if f.len() != 4 {
                return Err(bad());
            }
            let s = socks.len();
            socks.push(bind(addr(f[0], f[1])?)?);
            streams.push(new_stream(s, s, addr(f[2], f[3])?, &mut rng));
        } else {
            if f.len() != 8 {
                return Err(bad());
            }
            let (c, e) = (socks.len(), socks.len() + 1);
            socks.push(bind(addr(f[0], f[1])?)?);
            socks.push(bind(addr(f[4], f[5])?)?);
            streams.push(new_stream(c, e, addr(f[2], f[3])?, &mut rng));
            streams.push(new_stream(e, c, addr(f[6], f[7])?, &mut rng));
        }
        calls += 1;
    }
    if streams.is_empty() {
        return Err(format!("no calls in {}", o.calls_file));
    }
    if streams.len() > MAX_STREAM as usize {
        return Err("too many streams".into());
    }
    let fds: Vec<RawFd> = socks.iter().map(|s| s.as_raw_fd()).collect();

    // Send schedule: the streams of each 1 ms slot of the ptime.
    let mut slots: Vec<Vec<u32>> = vec![Vec::new(); o.ptime_ms as usize];
    for (i, s) in streams.iter().enumerate() {
        slots[s.slot_ms as usize].push(i as u32);
    }

    // SAFETY: plain syscalls; every fd is checked.
    let ep = check(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) }, "epoll_create1")?;
    for (i, &fd) in fds.iter().enumerate() {
        epoll_add(ep, fd, i as u64)?;
    }
    let tfd = check(
        unsafe { libc::timerfd_create(libc::CLOCK_MONOTONIC, libc::TFD_NONBLOCK | libc::TFD_CLOEXEC) },
        "timerfd_create",
    )?;
    let ms = libc::timespec { tv_sec: 0, tv_nsec: 1_000_000 };
    let its = libc::itimerspec { it_interval: ms, it_value: ms };
    check(unsafe { libc::timerfd_settime(tfd, 0, &its, std::ptr::null_mut()) }, "timerfd_settime")?;
    epoll_add(ep, tfd, TIMER_ID)?;

    // Receive buffers for recvmmsg.
    let mut bufs = vec![[0u8; MAX_DGRAM]; BATCH];
    // SAFETY: iovec/mmsghdr are plain old data; all-zero is valid, pointers set below.
    let mut iovs: Vec<libc::iovec> =
        bufs.iter_mut().map(|b| libc::iovec { iov_base: b.as_mut_ptr().cast(), iov_len: MAX_DGRAM }).collect();
    let mut msgs: Vec<libc::mmsghdr> = (0..BATCH).map(|_| unsafe { std::mem::zeroed() }).collect();
    // One control buffer per message, for its arrival stamp (u64s: aligned for cmsghdr).
    let mut controls = vec![[0u64; CONTROL_WORDS]; BATCH];
    for ((m, iov), c) in msgs.iter_mut().zip(iovs.iter_mut()).zip(controls.iter_mut()) {
        m.msg_hdr.msg_iov = iov;
        m.msg_hdr.msg_iovlen = 1;
        m.msg_hdr.msg_control = c.as_mut_ptr().cast();
    }

    let mut pkt = [0u8; PACKET];
    pkt[0] = 0x80;
    pkt[1] = o.law.payload_type();
    let mut hist = Histogram::default();
    // The same, without the first STEADY_AFTER of the run (streams starting,
    // queues settling): how the latency holds once every stream runs.
    let mut steady = Histogram::default();
    // The same latencies to the kernel's arrival stamp.
    let (mut khist, mut ksteady) = (Histogram::default(), Histogram::default());
    let mut unstamped_arrivals = 0u64;
    let mut evs = vec![libc::epoll_event { events: 0, u64: 0 }; 256];
    let (mut total_sent, mut send_errors, mut foreign, mut late_ticks) = (0u64, 0u64, 0u64, 0u64);
    let mut max_lag_ms = 0f64;
    let mut tick: u64 = 0;
    let max_ticks = u64::from(per_stream) * u64::from(o.ptime_ms);
    let mut sending = true;
    let cpu0 = sipbridge_bench::cpu_seconds();
    let t0 = Instant::now();
    let drain = Duration::from_millis(o.drain_ms);
    let hard_end = t0 + Duration::from_secs_f64(o.duration_s) + drain + Duration::from_secs(3);
    let mut end = hard_end;
    let us_since = |t: Instant| t.duration_since(t0).as_micros() as u64;

    loop {
        let now = Instant::now();
        if now >= hard_end || (!sending && now >= end) {
            break;
        }
        // SAFETY: evs has room for evs.len() events.
        let n = unsafe { libc::epoll_wait(ep, evs.as_mut_ptr(), evs.len() as i32, 2) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(format!("epoll_wait: {e}"));
        }
        for ev in &evs[..n as usize] {
            let id = ev.u64;
            if id == TIMER_ID {
                let mut exp = 0u64;
                // SAFETY: reads 8 bytes into exp.
                let r = unsafe { libc::read(tfd, (&mut exp as *mut u64).cast(), 8) };
                if r != 8 {
                    continue;
                }
                late_ticks += exp.saturating_sub(1);
                while sending && exp > 0 {
                    exp -= 1;
                    let now = Instant::now();
                    let due = t0 + Duration::from_millis(tick + 1);
                    if now > due {
                        max_lag_ms = max_lag_ms.max((now - due).as_secs_f64() * 1000.0);
                    }
                    let slot = (tick % u64::from(o.ptime_ms)) as usize;
                    for &si in &slots[slot] {
                        let s = &mut streams[si as usize];
                        if s.sent >= per_stream {
                            continue;
                        }
                        pkt[2..4].copy_from_slice(&s.rtp_seq.to_be_bytes());
                        pkt[4..8].copy_from_slice(&s.rtp_ts.to_be_bytes());
                        pkt[8..12].copy_from_slice(&(SSRC_BASE + si).to_be_bytes());
                        let st = Stamp { stream: si, seq: s.sent, sent_us: us_since(Instant::now()) as u32 };
                        stamp::write(o.law, &st, &mut pkt[HEADER..]);
                        // SAFETY: pkt and dst are valid for the given lengths.
                        let r = unsafe {
                            libc::sendto(
                                fds[s.sock as usize],
                                pkt.as_ptr().cast(),
                                PACKET,
                                0,
                                (&s.dst as *const libc::sockaddr_in).cast(),
                                std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
                            )
                        };
                        if r < 0 {
                            send_errors += 1;
                        } else {
                            total_sent += 1;
                        }
                        s.sent += 1;
                        s.rtp_seq = s.rtp_seq.wrapping_add(1);
                        s.rtp_ts = s.rtp_ts.wrapping_add(8 * o.ptime_ms);
                    }
                    tick += 1;
                    if tick >= max_ticks {
                        sending = false;
                        end = (Instant::now() + drain).min(hard_end);
                    }
                }
                continue;
            }
            let sock = id as u32;
            loop {
                for m in msgs.iter_mut() {
                    m.msg_hdr.msg_controllen = CONTROL_WORDS * 8;
                }
                // SAFETY: msgs point into bufs and controls, which outlive the call.
                let r = unsafe {
                    libc::recvmmsg(
                        fds[sock as usize],
                        msgs.as_mut_ptr(),
                        BATCH as u32,
                        libc::MSG_DONTWAIT,
                        std::ptr::null_mut(),
                    )
                };
                if r <= 0 {
                    break;
                }
                let now_us = us_since(Instant::now()) as u32;
                // The arrival stamps are CLOCK_REALTIME: each one is taken as its age
                // now on that clock, subtracted from `now_us` (no offset between the
                // clocks to keep, nor its drift).
                let now_realtime_ns = kstamp::realtime_ns();
                for (m, buf) in msgs.iter().zip(bufs.iter()).take(r as usize) {
                    let len = m.msg_len as usize;
                    // RTP: version 2, CSRC count and extension honoured.
                    if len < HEADER || buf[0] >> 6 != 2 {
                        foreign += 1;
                        continue;
                    }
                    let mut off = HEADER + 4 * usize::from(buf[0] & 0x0F);
                    if buf[0] & 0x10 != 0 && len >= off + 4 {
                        off += 4 + 4 * usize::from(u16::from_be_bytes([buf[off + 2], buf[off + 3]]));
                    }
                    let Some(st) = buf.get(off..len).and_then(stamp::read) else {
                        foreign += 1;
                        continue;
                    };
                    let Some(s) = streams.get_mut(st.stream as usize) else {
                        foreign += 1;
                        continue;
                    };
                    if st.seq >= s.sent {
                        foreign += 1;
                        continue;
                    }
                    let (w, b) = ((st.seq / 64) as usize, st.seq % 64);
                    if s.seen[w] & (1 << b) != 0 {
                        s.duplicates += 1;
                        continue;
                    }
                    s.seen[w] |= 1 << b;
                    s.received += 1;
                    if s.expect != sock {
                        s.wrong_socket += 1;
                    }
                    let lat = u64::from(now_us.wrapping_sub(st.sent_us));
                    hist.record(lat);
                    s.lat_sum_us += lat;
                    let steady_now = t0.elapsed() >= STEADY_AFTER;
                    if steady_now {
                        steady.record(lat);
                    }
                    // SAFETY: the header's control buffer is the one recvmmsg filled.
                    match unsafe { kstamp::arrival_ns(&m.msg_hdr) } {
                        Some(at) => {
                            let waited_us = u64::try_from((now_realtime_ns - at).max(0) / 1000).unwrap_or(0);
                            let klat = lat.saturating_sub(waited_us);
                            khist.record(klat);
                            if steady_now {
                                ksteady.record(klat);
                            }
                        }
                        None => unstamped_arrivals += 1,
                    }
                }
                if (r as usize) < BATCH {
                    break;
                }
            }
        }
    }
    let wall = t0.elapsed().as_secs_f64();
    let gen_cpu = sipbridge_bench::cpu_seconds() - cpu0;
    // SAFETY: closing fds we own.
    unsafe {
        libc::close(tfd);
        libc::close(ep);
    }
    let received: u64 = streams.iter().map(|s| u64::from(s.received)).sum();
    let duplicates: u64 = streams.iter().map(|s| u64::from(s.duplicates)).sum();
    let wrong: u64 = streams.iter().map(|s| u64::from(s.wrong_socket)).sum();
    let dead = streams.iter().filter(|s| s.received == 0).count();
    let lost = total_sent.saturating_sub(received);
    let expected = streams.len() as u64 * u64::from(per_stream);
    let loss_pct = if total_sent > 0 { 100.0 * lost as f64 / total_sent as f64 } else { 100.0 };
    let q = |p: f64| hist.quantile_us(p);
    let (p50, p99, p999, max) = (q(0.5), q(0.99), q(0.999), hist.max_us());
    let (steady_p50, steady_p99) = (steady.quantile_us(0.5), steady.quantile_us(0.99));
    let kq = |p: f64| khist.quantile_us(p);
    let (k50, k99, kmax) = (kq(0.5), kq(0.99), khist.max_us());
    let (ks50, ks99) = (ksteady.quantile_us(0.5), ksteady.quantile_us(0.99));
    // Streams whose mean latency was above 100 ms: is a high p99 a few slow
    // streams or all of them a little?
    let slow = streams.iter().filter(|s| s.received > 0 && s.lat_sum_us / u64::from(s.received) > 100_000).count();
    let ms = |us: u64| us as f64 / 1000.0;
    Ok(format!(
        concat!(
            "{{\"mode\": \"{}\", \"pt\": {}, \"calls\": {}, \"streams\": {}, \"duration_s\": {:.3}, ",
            "\"ptime_ms\": {}, \"payload\": {}, \"expected\": {}, \"sent\": {}, \"send_errors\": {}, ",
            "\"received\": {}, \"lost\": {}, \"duplicates\": {}, \"loss_pct\": {:.5}, \"dead_streams\": {}, ",
            "\"wrong_socket\": {}, \"foreign\": {}, \"lat_us_p50\": {}, \"lat_us_p99\": {}, \"lat_us_p999\": {}, ",
            "\"lat_us_max\": {}, \"lat_ms_p50\": {:.3}, \"lat_ms_p99\": {:.3}, \"lat_ms_p999\": {:.3}, ",
            "\"lat_ms_max\": {:.3}, \"lat_ms_p50_steady\": {:.3}, \"lat_ms_p99_steady\": {:.3}, ",
            "\"streams_mean_over_100ms\": {}, \"max_send_lag_ms\": {:.3}, \"late_ticks\": {}, \"gen_cpu_s\": {:.3}, ",
            "\"klat_ms_p50\": {:.3}, \"klat_ms_p99\": {:.3}, \"klat_ms_max\": {:.3}, ",
            "\"klat_ms_p50_steady\": {:.3}, \"klat_ms_p99_steady\": {:.3}, \"unstamped_arrivals\": {}, ",
            "\"wall_s\": {:.3}}}"
        ),
        if o.echo { "echo" } else { "relay" },
        o.law.payload_type(),
        calls,
        streams.len(),
        o.duration_s,
        o.ptime_ms,
        FRAME,
        expected,
        total_sent,
        send_errors,
        received,
        lost,
        duplicates,
        loss_pct,
        dead,
        wrong,
        foreign,
        p50,
        p99,
        p999,
        max,
        ms(p50),
        ms(p99),
        ms(p999),
        ms(max),
        ms(steady_p50),
        ms(steady_p99),
        slow,
        max_lag_ms,
        late_ticks,
        gen_cpu,
        ms(k50),
        ms(k99),
        ms(kmax),
        ms(ks50),
        ms(ks99),
        unstamped_arrivals,
        wall
    ))
}

fn main() -> ExitCode {
    sipbridge_bench::tool_main("rtpload", parse_args, run)
}
