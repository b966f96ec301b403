//! `wsecho` — a WebSocket echo voice agent speaking Telnyx's media-stream protocol
//! (server side: sipbridge connects to it as the client), for the agent-path media
//! benchmark.
//!
//! ```text
//! wsecho --listen 127.0.0.1:PORT --max-seconds S [--exclude-agent [--from-arrival]]
//! ```
//!
//! Every connection: WebSocket handshake, then for every
//! `{"event":"media","media":{"track":"inbound","payload":"<b64>",...}}` it sends
//! back `{"event":"media","media":{"payload":"<same b64>"}}` at once (the audio is
//! not decoded: the caller hears itself, re-paced by sipbridge's playout). Other
//! messages (`connected`, `start`, `stop`, `dtmf`, `mark`, outbound-track media)
//! are counted and ignored. One thread (tokio current-thread runtime).
//!
//! With `--exclude-agent`, each echo's stamp (`sipbridge_bench::stamp`) has its
//! send time moved later by the time the message spent in wsecho (from the frame
//! read off the WebSocket to the echo written to it), so that `rtpload`'s latency
//! is the path's own, excluding the agent (issue 20: "caller → agent → caller,
//! excluding the agent"). Time a frame waits in wsecho's socket buffer before
//! wsecho reads it still counts against the path, unless `--from-arrival` is
//! given too: then the time starts at the kernel's arrival stamp of the frame
//! (`SO_TIMESTAMPNS` on the TCP socket: the stamp of the last segment a read
//! took), so the time a frame waits while wsecho's core is busy is the agent's
//! too; when one read takes several frames, the earlier ones get the later stamp
//! (their wait is partly counted against the path: conservative). The excluded
//! times are reported (`residence_us_p50`, `_p99`, `_max`), and how long frames
//! sat in the socket before wsecho read them (`queued_us_p50`, `_p99`), either way.
//!
//! Exits after `--max-seconds` (at most 3600) or on SIGTERM/SIGINT, and prints one
//! JSON object on stdout with counts: `connections` (accepted), `handshake_failures`,
//! `closed` (connections that ended), `media_in` (inbound media messages),
//! `media_out` (echoes sent), `starts`, `stops`, `other` (any other message),
//! `bad` (unparsable text), `send_errors`, and `cpu_s` (own utime+stime) and
//! `wall_s`.

use std::borrow::Cow;
use std::cell::Cell;
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::process::ExitCode;
use std::rc::Rc;
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use sipbridge_bench::hist::Histogram;
use sipbridge_bench::kstamp;
use sipbridge_bench::stamp::{self, Law};
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::signal::unix::{SignalKind, signal};
use tokio_tungstenite::tungstenite::Message;

#[derive(Default)]
struct Counts {
    connections: Cell<u64>,
    handshake_failures: Cell<u64>,
    closed: Cell<u64>,
    media_in: Cell<u64>,
    media_out: Cell<u64>,
    starts: Cell<u64>,
    stops: Cell<u64>,
    other: Cell<u64>,
    bad: Cell<u64>,
    send_errors: Cell<u64>,
    /// Echoes whose payload carried no stamp (with --exclude-agent).
    unstamped: Cell<u64>,
    /// Time from a media frame's arrival to its echo written, µs (with --exclude-agent).
    residence: std::cell::RefCell<Option<Histogram>>,
    /// The part of it before wsecho read the frame, µs.
    queued: std::cell::RefCell<Option<Histogram>>,
}

/// A TCP stream whose reads keep the kernel's arrival stamp of the last segment
/// they took (`SO_TIMESTAMPNS`, `SCM_TIMESTAMPNS` on `recvmsg`), ns of CLOCK_REALTIME.
struct Stamped {
    inner: TcpStream,
    arrival_ns: Rc<Cell<Option<i128>>>,
}

impl Stamped {
    fn new(inner: TcpStream) -> std::io::Result<(Self, Rc<Cell<Option<i128>>>)> {
        kstamp::enable(inner.as_raw_fd())?;
        let arrival_ns = Rc::new(Cell::new(None));
        Ok((Self { inner, arrival_ns: arrival_ns.clone() }, arrival_ns))
    }

    fn recv(&self, buf: &mut [u8]) -> std::io::Result<usize> {
        let (n, at) = kstamp::recv(self.inner.as_raw_fd(), buf, libc::MSG_DONTWAIT)?;
        if at.is_some() {
            self.arrival_ns.set(at);
        }
        Ok(n)
    }
}

impl AsyncRead for Stamped {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        loop {
            ready!(self.inner.poll_read_ready(cx))?;
            let unfilled = buf.initialize_unfilled();
            match self.inner.try_io(Interest::READABLE, || self.recv(unfilled)) {
                Ok(n) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl AsyncWrite for Stamped {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

fn bump(c: &Cell<u64>) {
    c.set(c.get() + 1);
}

#[derive(Deserialize)]
struct Incoming<'a> {
    #[serde(borrow)]
    event: Cow<'a, str>,
    #[serde(borrow, default)]
    media: Option<Media<'a>>,
}

#[derive(Deserialize)]
struct Media<'a> {
    #[serde(borrow, default)]
    track: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    payload: Option<Cow<'a, str>>,
}

/// Re-stamps `payload` (base64 G.711) with its send time moved `us` later; `None`
/// when it carries no stamp.
fn restamp(payload: &str, us: u32) -> Option<String> {
    let mut audio = B64.decode(payload).ok()?;
    let mut st = stamp::read(&audio)?;
    st.sent_us = st.sent_us.wrapping_add(us);
    let law = if audio.iter().any(|&b| stamp::ALPHABET_PCMA.contains(&b)) { Law::Pcma } else { Law::Pcmu };
    stamp::write(law, &st, &mut audio);
    Some(B64.encode(&audio))
}

async fn serve(stream: TcpStream, counts: Rc<Counts>, exclude_agent: bool, from_arrival: bool) {
    let _ = stream.set_nodelay(true);
    let Ok((stream, arrival_ns)) = Stamped::new(stream) else {
        bump(&counts.handshake_failures);
        return;
    };
    let ws = match tokio_tungstenite::accept_async(stream).await {
        Ok(ws) => ws,
        Err(_) => {
            bump(&counts.handshake_failures);
            return;
        }
    };
    let (mut tx, mut rx) = ws.split();
    while let Some(msg) = rx.next().await {
        let read_at = Instant::now();
        // How long the frame had been in the socket when it was read, µs.
        let queued_us =
            arrival_ns.get().map_or(0, |at| u32::try_from((kstamp::realtime_ns() - at).max(0) / 1000).unwrap_or(0));
        let excluded_before_read = if from_arrival { queued_us } else { 0 };
        let text = match msg {
            Ok(Message::Text(t)) => t,
            Ok(Message::Close(_)) | Err(_) => break,
            Ok(_) => continue,
        };
        let Ok(m) = serde_json::from_str::<Incoming>(text.as_str()) else {
            bump(&counts.bad);
            continue;
        };
        match m.event.as_ref() {
            "media" => {
                let Some(media) = m.media else {
                    bump(&counts.bad);
                    continue;
                };
                if media.track.as_deref() != Some("inbound") {
                    bump(&counts.other);
                    continue;
                }
                bump(&counts.media_in);
                let Some(payload) = media.payload else {
                    bump(&counts.bad);
                    continue;
                };
                let reply = if exclude_agent {
                    // Up to here (parse, decode, re-stamp excluded); the WebSocket
                    // write below still counts against the path: conservative.
                    let spent = read_at.elapsed().as_micros() as u32 + excluded_before_read;
                    restamp(&payload, spent).unwrap_or_else(|| {
                        bump(&counts.unstamped);
                        payload.into_owned()
                    })
                } else {
                    payload.into_owned()
                };
                let reply = format!(r#"{{"event":"media","media":{{"payload":"{reply}"}}}}"#);
                if tx.send(Message::text(reply)).await.is_err() {
                    bump(&counts.send_errors);
                    break;
                }
                if exclude_agent {
                    if let Some(h) = counts.residence.borrow_mut().as_mut() {
                        h.record(read_at.elapsed().as_micros() as u64 + u64::from(excluded_before_read));
                    }
                    if let Some(h) = counts.queued.borrow_mut().as_mut() {
                        h.record(u64::from(queued_us));
                    }
                }
                bump(&counts.media_out);
            }
            "start" => bump(&counts.starts),
            "stop" => bump(&counts.stops),
            _ => bump(&counts.other),
        }
    }
    bump(&counts.closed);
}

fn main() -> ExitCode {
    let mut listen = String::from("127.0.0.1:8765");
    let mut max_seconds: u64 = 0;
    let mut exclude_agent = false;
    let mut from_arrival = false;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "--exclude-agent" {
            exclude_agent = true;
            continue;
        }
        if a == "--from-arrival" {
            from_arrival = true;
            continue;
        }
        match (a.as_str(), args.next()) {
            ("--listen", Some(v)) => listen = v,
            ("--max-seconds", Some(v)) => match v.parse() {
                Ok(s) if (1..=3600).contains(&s) => max_seconds = s,
                _ => {
                    eprintln!("--max-seconds must be 1..=3600");
                    return ExitCode::from(2);
                }
            },
            _ => {
                eprintln!("usage: wsecho --listen IP:PORT --max-seconds S [--exclude-agent [--from-arrival]]");
                return ExitCode::from(2);
            }
        }
    }
    if max_seconds == 0 {
        eprintln!("usage: wsecho --listen IP:PORT --max-seconds S (the bound is required)");
        return ExitCode::from(2);
    }
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("wsecho: runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let t0 = Instant::now();
    let counts = Rc::new(Counts::default());
    if exclude_agent {
        *counts.residence.borrow_mut() = Some(Histogram::default());
        *counts.queued.borrow_mut() = Some(Histogram::default());
    }
    let local = tokio::task::LocalSet::new();
    let result: Result<(), String> = local.block_on(&rt, {
        let counts = counts.clone();
        async move {
            let listener = TcpListener::bind(&listen).await.map_err(|e| format!("bind {listen}: {e}"))?;
            let mut term = signal(SignalKind::terminate()).map_err(|e| e.to_string())?;
            let mut int = signal(SignalKind::interrupt()).map_err(|e| e.to_string())?;
            let deadline = tokio::time::sleep(Duration::from_secs(max_seconds));
            tokio::pin!(deadline);
            loop {
                tokio::select! {
                    _ = &mut deadline => break,
                    _ = term.recv() => break,
                    _ = int.recv() => break,
                    r = listener.accept() => if let Ok((stream, _)) = r {
                        bump(&counts.connections);
                        tokio::task::spawn_local(serve(stream, counts.clone(), exclude_agent, from_arrival));
                    }
                }
            }
            Ok(())
        }
    });
    if let Err(e) = result {
        eprintln!("wsecho: {e}");
        return ExitCode::from(1);
    }
    let c = &counts;
    let residence = c.residence.borrow();
    let q = |p: f64| residence.as_ref().map_or(0, |h| h.quantile_us(p));
    let queued = c.queued.borrow();
    let qq = |p: f64| queued.as_ref().map_or(0, |h| h.quantile_us(p));
    println!(
        concat!(
            "{{\"connections\": {}, \"handshake_failures\": {}, \"closed\": {}, \"media_in\": {}, ",
            "\"media_out\": {}, \"starts\": {}, \"stops\": {}, \"other\": {}, \"bad\": {}, ",
            "\"send_errors\": {}, \"exclude_agent\": {}, \"from_arrival\": {}, \"unstamped\": {}, \"residence_us_p50\": {}, ",
            "\"residence_us_p99\": {}, \"residence_us_max\": {}, \"queued_us_p50\": {}, \"queued_us_p99\": {}, ",
            "\"cpu_s\": {:.3}, \"wall_s\": {:.3}}}"
        ),
        c.connections.get(),
        c.handshake_failures.get(),
        c.closed.get(),
        c.media_in.get(),
        c.media_out.get(),
        c.starts.get(),
        c.stops.get(),
        c.other.get(),
        c.bad.get(),
        c.send_errors.get(),
        exclude_agent,
        from_arrival,
        c.unstamped.get(),
        q(0.5),
        q(0.99),
        residence.as_ref().map_or(0, |h| h.max_us()),
        qq(0.5),
        qq(0.99),
        sipbridge_bench::cpu_seconds(),
        t0.elapsed().as_secs_f64()
    );
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;
    use sipbridge_bench::stamp::{FRAME, Stamp};

    #[test]
    fn restamp_moves_the_send_time_and_keeps_the_law() {
        for law in [Law::Pcmu, Law::Pcma] {
            let st = Stamp { stream: 7, seq: 99, sent_us: 1_000 };
            let mut audio = vec![0u8; FRAME];
            stamp::write(law, &st, &mut audio);
            let out = B64.decode(restamp(&B64.encode(&audio), 250).unwrap()).unwrap();
            assert_eq!(stamp::read(&out), Some(Stamp { sent_us: 1_250, ..st }));
            assert_eq!(out[FRAME - 1], law.filler(), "{law:?}");
        }
        assert_eq!(restamp(&B64.encode([0xFFu8; FRAME]), 5), None, "no stamp: nothing to move");
        assert_eq!(restamp("not base64!", 5), None);
    }
}
