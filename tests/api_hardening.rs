//! The control API and playback on a box that faces a public network (issue 17),
//! on the real daemon over loopback:
//!
//! - `[api] max_connections`: with the slots held by live WebSockets, one more
//!   connection is closed at once; once they close, the API answers again;
//! - `[api] header_read_timeout`: a client that sends half a request head is
//!   disconnected; both count in `sipbridge_api_connections_refused_total`;
//! - `playback_start` from a URL: a redirect is refused, a body past
//!   `[media] max_fetch_bytes` without Content-Length is refused while it
//!   streams, a real WAV plays; and a BYE while the box waits on a URL that never
//!   answers ends the call at once (the fetch runs in the API request, not in the
//!   call's loop).

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::gateway::{Gateway, Route, Trunk};
use common::rtp::{Script, place_calls, tone};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const WAIT: Duration = Duration::from_secs(30);
const TOKEN: &str = "hardening-token-0123456789";

/// Starts the daemon with an echo route; `api` goes into `[api]`, `extra`
/// (whole sections) at the end.
fn start(dir: &Path, api: &str, extra: &str) -> Gateway {
    Gateway::builder(dir)
        .rtp_range(30_000, 39_999)
        .trunk(Trunk::new("pbx").allow("127.0.0.0/8"))
        .agent("echo", "builtin:echo", "")
        .route(Route::new().agent("echo"))
        .extra("[recording]\nenabled = false")
        .log_level("debug")
        .api(TOKEN)
        .api_extra(api)
        .extra(extra)
        .start()
}

async fn metric(port: u16, name: &str) -> u64 {
    let text = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{port}/metrics"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
        .unwrap_or_else(|| panic!("{name} in {text}"))
}

/// Reads until the server closes the connection (or 10 s pass): what it sent.
async fn read_to_close(s: &mut tokio::net::TcpStream) -> Option<Vec<u8>> {
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return Some(got),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => return None,
        }
    }
}

/// Opens `/v2/events`. A connection this test closed a moment ago (the
/// `/metrics` or `/healthz` request before) holds its slot until the box reads
/// its close, so a refusal is retried until the slot frees (at most `WAIT`):
/// once three sockets are open, the three slots are theirs.
async fn events_socket(port: u16) -> tokio_tungstenite::WebSocketStream<tokio::net::TcpStream> {
    let deadline = Instant::now() + WAIT;
    loop {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let mut req = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(format!(
            "ws://127.0.0.1:{port}/v2/events"
        ))
        .unwrap();
        req.headers_mut().insert("Authorization", format!("Bearer {TOKEN}").parse().unwrap());
        match tokio_tungstenite::client_async(req, tcp).await {
            Ok((socket, _)) => return socket,
            Err(e) => assert!(Instant::now() < deadline, "event socket: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_are_capped_and_slow_headers_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    let gw = start(dir.path(), "max_connections = 3\nheader_read_timeout = \"1s\"\n", "");
    let port = gw.api_port();
    let http = reqwest::Client::builder().pool_max_idle_per_host(0).build().unwrap();
    let health = format!("http://127.0.0.1:{port}/healthz");
    assert_eq!(http.get(&health).send().await.unwrap().status().as_u16(), 200);
    let before = metric(port, "sipbridge_api_connections_refused_total").await;

    // Three WebSockets hold every slot (an upgraded connection keeps its slot).
    let mut sockets = Vec::new();
    for _ in 0..3 {
        sockets.push(events_socket(port).await);
    }
    // A fourth connection is closed at once, before any answer.
    let mut extra = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let _ = extra.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let got = read_to_close(&mut extra).await.expect("closed by the box");
    assert!(got.is_empty(), "no answer over the cap: {:?}", String::from_utf8_lossy(&got));
    assert!(http.get(&health).send().await.is_err(), "no request is served over the cap");

    // The WebSockets close: the API answers again.
    for mut s in sockets {
        let _ = s.close(None).await;
    }
    let deadline = Instant::now() + WAIT;
    loop {
        if let Ok(r) = http.get(&health).send().await {
            assert_eq!(r.status().as_u16(), 200);
            break;
        }
        assert!(Instant::now() < deadline, "the API answers once the slots are free");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Half a request head: disconnected after header_read_timeout (1 s here).
    let mut slow = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    let got = read_to_close(&mut slow).await.expect("the box closes a connection whose headers never end");
    let text = String::from_utf8_lossy(&got);
    assert!(got.is_empty() || text.starts_with("HTTP/1.1 408"), "{text}");
    // A silent connection too.
    let mut silent = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    assert!(read_to_close(&mut silent).await.is_some(), "the box closes a connection that sends nothing");

    let after = metric(port, "sipbridge_api_connections_refused_total").await;
    assert!(after >= before + 3, "refusals counted: {before} -> {after}");
    drop(gw);
}

/// The test's media server: `/tone.wav` a WAV, `/moved` a redirect, `/big` an
/// endless-looking body without Content-Length, `/never` accepts and never
/// answers (its connections are sent to `stalled`).
async fn media_server(
    wav: Vec<u8>,
    stalled: tokio::sync::mpsc::UnboundedSender<tokio::net::TcpStream>,
) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        for _ in 0..20 {
            let Ok((mut s, _)) = listener.accept().await else { return };
            let (wav, stalled) = (wav.clone(), stalled.clone());
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16 * 1024 {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let line = String::from_utf8_lossy(&head).lines().next().unwrap_or_default().to_string();
                if line.contains(" /tone.wav ") {
                    let h = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", wav.len());
                    let _ = s.write_all(h.as_bytes()).await;
                    let _ = s.write_all(&wav).await;
                } else if line.contains(" /moved ") {
                    let h =
                        format!("HTTP/1.1 302 Found\r\nLocation: http://{addr}/tone.wav\r\nContent-Length: 0\r\n\r\n");
                    let _ = s.write_all(h.as_bytes()).await;
                } else if line.contains(" /big ") {
                    let _ = s.write_all(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n").await;
                    for _ in 0..64 {
                        if s.write_all(&[0u8; 4096]).await.is_err() {
                            return;
                        }
                    }
                } else if line.contains(" /never ") {
                    let _ = stalled.send(s);
                    return;
                } else {
                    let _ = s.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n").await;
                }
                let _ = s.shutdown().await;
            });
        }
    });
    addr
}

fn wav_bytes() -> Vec<u8> {
    let mut buf = std::io::Cursor::new(Vec::new());
    let spec =
        hound::WavSpec { channels: 1, sample_rate: 8000, bits_per_sample: 16, sample_format: hound::SampleFormat::Int };
    let mut w = hound::WavWriter::new(&mut buf, spec).unwrap();
    for s in tone(600.0, 8000.0, 300) {
        w.write_sample(s).unwrap();
    }
    w.finalize().unwrap();
    buf.into_inner()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn playback_urls_are_bounded_and_a_bye_during_a_slow_fetch_ends_the_call() {
    let dir = tempfile::tempdir().unwrap();
    let (stalled_tx, mut stalled) = tokio::sync::mpsc::unbounded_channel();
    let media = media_server(wav_bytes(), stalled_tx).await;
    // Loopback media server: allowed here on purpose. The fetch timeout is long so
    // that only the BYE can end the call while the box waits on /never.
    let gw = start(
        dir.path(),
        "",
        &format!(
            "[media]\ndir = \"{}\"\nallow_private_urls = true\nmax_fetch_bytes = \"64KiB\"\nfetch_timeout = \"120s\"\n",
            dir.path().display()
        ),
    );
    let (sip, port) = (gw.sip_port, gw.api_port());
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");

    // A caller that hangs up after 8 s (its BYE is the event under test).
    let d2 = dir.path().to_path_buf();
    let call = tokio::task::spawn_blocking(move || {
        let s = Script {
            audio: tone(440.0, 8000.0, 8000),
            digits: vec![],
            gaps: vec![],
            send_for: Duration::from_millis(8000),
            duration: Duration::from_millis(9000),
        };
        place_calls(&d2, sip, "127.0.0.1", "+13125550100", 8000, vec![s])
    });
    let deadline = Instant::now() + WAIT;
    let id = loop {
        let v: Value =
            http.get(format!("{base}/v2/calls")).bearer_auth(TOKEN).send().await.unwrap().json().await.unwrap();
        if let Some(c) = v["data"].as_array().and_then(|a| a.first()).filter(|c| c["state"] == "answered") {
            break c["call_control_id"].as_str().unwrap().to_string();
        }
        assert!(Instant::now() < deadline, "the call is answered: {v}\n{}", gw.stderr());
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let play = |url: String| {
        let (http, base, id) = (http.clone(), base.clone(), id.clone());
        async move {
            let r = http
                .post(format!("{base}/v2/calls/{id}/actions/playback_start"))
                .bearer_auth(TOKEN)
                .json(&serde_json::json!({ "audio_url": url }))
                .send()
                .await
                .unwrap();
            let code = r.status().as_u16();
            (code, r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let refused_before = metric(port, "sipbridge_media_fetch_refused_total").await;
    let (code, e) = play(format!("http://{media}/moved")).await;
    assert_eq!(code, 422, "{e}");
    assert!(e["errors"][0]["detail"].as_str().unwrap().contains("redirect"), "{e}");
    let (code, e) = play(format!("http://{media}/big")).await;
    assert_eq!(code, 422, "{e}");
    assert!(e["errors"][0]["detail"].as_str().unwrap().contains("max_fetch_bytes"), "{e}");
    let (code, e) = play(format!("http://{media}/tone.wav")).await;
    assert_eq!(code, 200, "a WAV from an allowed URL plays: {e}");
    assert!(metric(port, "sipbridge_media_fetch_refused_total").await >= refused_before + 2);

    // The box starts fetching /never; the media server holds that connection.
    let slow = tokio::spawn(play(format!("http://{media}/never")));
    let held = tokio::time::timeout(WAIT, stalled.recv()).await.expect("the box fetches /never").unwrap();
    // The caller's BYE (at 8 s) ends the call while the fetch still waits.
    let deadline = Instant::now() + WAIT;
    loop {
        let v: Value =
            http.get(format!("{base}/v2/calls/{id}")).bearer_auth(TOKEN).send().await.unwrap().json().await.unwrap();
        if v["data"]["is_alive"] == false {
            break;
        }
        assert!(Instant::now() < deadline, "the call ends on BYE: {v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!slow.is_finished(), "the call ended while its playback_start was still fetching");
    let (code, report, _) = call.await.unwrap();
    assert_eq!(code, 0, "the caller's BYE was answered: {report}");
    // The request is dropped by its client: the box's fetch goes with it.
    slow.abort();
    drop(held);
    drop(gw);
}
