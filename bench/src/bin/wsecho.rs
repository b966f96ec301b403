//! `wsecho` — a WebSocket echo voice agent speaking Telnyx's media-stream protocol
//! (server side: sipbridge connects to it as the client), for the agent-path media
//! benchmark.
//!
//! ```text
//! wsecho --listen 127.0.0.1:PORT --max-seconds S
//! ```
//!
//! Every connection: WebSocket handshake, then for every
//! `{"event":"media","media":{"track":"inbound","payload":"<b64>",...}}` it sends
//! back `{"event":"media","media":{"payload":"<same b64>"}}` at once (the audio is
//! not decoded: the caller hears itself, re-paced by sipbridge's playout). Other
//! messages (`connected`, `start`, `stop`, `dtmf`, `mark`, outbound-track media)
//! are counted and ignored. One thread (tokio current-thread runtime).
//!
//! Exits after `--max-seconds` (at most 3600) or on SIGTERM/SIGINT, and prints one
//! JSON object on stdout with counts: `connections` (accepted), `handshake_failures`,
//! `closed` (connections that ended), `media_in` (inbound media messages),
//! `media_out` (echoes sent), `starts`, `stops`, `other` (any other message),
//! `bad` (unparsable text), `send_errors`, and `cpu_s` (own utime+stime) and
//! `wall_s`.

use std::borrow::Cow;
use std::cell::Cell;
use std::process::ExitCode;
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
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

async fn serve(stream: TcpStream, counts: Rc<Counts>) {
    let _ = stream.set_nodelay(true);
    let ws = match tokio_tungstenite::accept_async(stream).await {
        Ok(ws) => ws,
        Err(_) => {
            bump(&counts.handshake_failures);
            return;
        }
    };
    let (mut tx, mut rx) = ws.split();
    while let Some(msg) = rx.next().await {
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
                let reply = format!(r#"{{"event":"media","media":{{"payload":"{payload}"}}}}"#);
                if tx.send(Message::text(reply)).await.is_err() {
                    bump(&counts.send_errors);
                    break;
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

fn cpu_seconds() -> f64 {
    // SAFETY: getrusage fills the struct it is given.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

fn main() -> ExitCode {
    let mut listen = String::from("127.0.0.1:8765");
    let mut max_seconds: u64 = 0;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
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
                eprintln!("usage: wsecho --listen IP:PORT --max-seconds S");
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
                        tokio::task::spawn_local(serve(stream, counts.clone()));
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
    println!(
        concat!(
            "{{\"connections\": {}, \"handshake_failures\": {}, \"closed\": {}, \"media_in\": {}, ",
            "\"media_out\": {}, \"starts\": {}, \"stops\": {}, \"other\": {}, \"bad\": {}, ",
            "\"send_errors\": {}, \"cpu_s\": {:.3}, \"wall_s\": {:.3}}}"
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
        cpu_seconds(),
        t0.elapsed().as_secs_f64()
    );
    ExitCode::SUCCESS
}
