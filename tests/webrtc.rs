//! WebRTC participants end to end (issue 12): Debian's Chromium, headless and
//! driven by playwright-core (tests/browser/drive.mjs), opens the box's room page
//! with a join token and a 900 Hz WAV as its microphone, while a SIPp caller in
//! the same room sends 500 Hz. The caller must hear 900 Hz and not 500 Hz; the
//! page's WebAudio analyser must report 500 Hz and not 900 Hz; leaving the page
//! is a `conference.participant.left`; a browser killed outright is removed after
//! the ICE consent timeout; an offer whose ICE never connects ends with
//! `ice_failed`; bad offers and tokens are refused with the reason.
//!
//! The screenshot of the joined page is left at
//! `target/test-artifacts/webrtc-room.png` (CI keeps it; not committed).

mod common;

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::audio::level;
use common::gateway::{Gateway, Trunk};
use common::rtp::{Packet, Script, place_calls_from, tone};
use nix::sys::signal::Signal;
use serde_json::{Value, json};
use sipbridge::media::codec::Decoder;
use sipbridge::sdp::codec::AudioCodec;

const WAIT: Duration = Duration::from_secs(40);
const TOKEN: &str = "webrtc-test-token-0123";

/// A syntactically complete browser offer (Chromium 156's audio section) whose
/// ICE credentials, fingerprint and candidate lead nowhere.
const DEAD_OFFER: &str = "v=0\r\no=- 4611731400430051336 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n\
a=group:BUNDLE 0\r\na=msid-semantic: WMS\r\n\
m=audio 9 UDP/TLS/RTP/SAVPF 111 0 8 126\r\nc=IN IP4 0.0.0.0\r\na=rtcp:9 IN IP4 0.0.0.0\r\n\
a=candidate:94369755 1 udp 2122194687 127.0.0.1 9 typ host generation 0\r\n\
a=ice-ufrag:d87z\r\na=ice-pwd:YOaK3KgnDl3bnQDWelyufhVc\r\na=ice-options:trickle\r\n\
a=fingerprint:sha-256 AD:5C:9C:D0:60:AC:90:6C:96:BE:16:52:D7:3D:71:F5:69:9B:97:5F:5B:A0:B7:C9:71:CB:9B:D9:84:57:34:99\r\n\
a=setup:actpass\r\na=mid:0\r\na=sendrecv\r\na=rtcp-mux\r\n\
a=rtpmap:111 opus/48000/2\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:126 telephone-event/8000\r\n\
a=ssrc:462638625 cname:N/zGTQSBIN2fBnHG\r\n";

/// The daemon with one room route (`shop-floor`), recording off, and `[webrtc]`
/// lines `webrtc`.
fn start(dir: &Path, webrtc: &str) -> Gateway {
    start_with(dir, "[[route]]\nroom = \"shop-floor\"\n[recording]\nenabled = false\n", webrtc)
}

/// The daemon with `routes` (TOML after trunk `pbx`; may close with sections of
/// its own), `[webrtc]` on 127.0.0.1 with `webrtc` lines, signed webhooks to a
/// verifying receiver, the control API with [`TOKEN`].
fn start_with(dir: &Path, routes: &str, webrtc: &str) -> Gateway {
    Gateway::builder(dir)
        .trunk(Trunk::new("pbx").allow("127.0.0.0/8"))
        .blocks(routes)
        .webrtc(webrtc)
        .webhooks("")
        .api(TOKEN)
        .log_level("debug")
        .start()
}

/// The room calls of the control API.
trait RoomApi {
    fn url(&self, path: &str) -> String;
    /// POSTs an SDP offer with `bearer`; the status, the headers and the body.
    async fn offer(&self, path: &str, bearer: &str, sdp: &str) -> (u16, reqwest::header::HeaderMap, String);
    async fn join_token(&self, room: &str) -> String;
}

impl RoomApi for Gateway {
    fn url(&self, path: &str) -> String {
        self.api().url(path)
    }

    async fn offer(&self, path: &str, bearer: &str, sdp: &str) -> (u16, reqwest::header::HeaderMap, String) {
        let r = self
            .api()
            .http
            .post(self.url(path))
            .bearer_auth(bearer)
            .header("content-type", "application/sdp")
            .body(sdp.to_string())
            .send()
            .await
            .expect("API answers");
        let (code, headers) = (r.status().as_u16(), r.headers().clone());
        (code, headers, r.text().await.unwrap_or_default())
    }

    async fn join_token(&self, room: &str) -> String {
        let r = self
            .api()
            .http
            .post(self.url(&format!("/v2/conferences/{}/join_tokens", urlencode(room))))
            .bearer_auth(TOKEN)
            .json(&json!({"ttl_secs": 600}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 201);
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["data"]["conference_name"], room);
        assert!(body["data"]["room_url"].as_str().unwrap().starts_with("/rooms/"), "{body}");
        body["data"]["token"].as_str().unwrap().to_string()
    }
}

/// RMS of `pcm` (16-bit at `rate` Hz) in the band `lo`–`hi` Hz, as a fraction of
/// full scale: sox's band-pass (`sinc`) and `stat`.
fn band_rms(pcm: &[i16], rate: u32, lo: u32, hi: u32) -> f64 {
    use std::io::Write;
    let mut sox = Command::new("sox")
        .args(["-t", "raw", "-r", &rate.to_string(), "-e", "signed", "-b", "16", "-c", "1", "-L", "-", "-n"])
        .args(["sinc", &format!("{lo}-{hi}"), "stat"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("sox runs");
    let raw: Vec<u8> = pcm.iter().flat_map(|s| s.to_le_bytes()).collect();
    sox.stdin.take().unwrap().write_all(&raw).unwrap();
    let out = sox.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    text.lines()
        .find_map(|l| l.strip_prefix("RMS     amplitude:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("sox stat: {text}"))
}

fn urlencode(s: &str) -> String {
    s.bytes().map(|b| if b.is_ascii_alphanumeric() { char::from(b).to_string() } else { format!("%{b:02X}") }).collect()
}

/// The webrtc participants' events of `type` (`joined`/`left`).
fn webrtc_events<'a>(data: &'a [Value], kind: &str) -> Vec<&'a Value> {
    data.iter()
        .filter(|d| d["event_type"] == format!("conference.participant.{kind}"))
        .filter(|d| d["payload"]["participant_type"] == "webrtc")
        .collect()
}

/// The browser: `node tests/browser/drive.mjs` and the Chromium it starts, its
/// JSON lines read as they come.
struct Browser {
    child: Child,
    lines: std::sync::mpsc::Receiver<Value>,
    seen: Vec<Value>,
}

impl Browser {
    fn open(url: &str, wav: &Path, screenshot: &Path, hold_secs: u32) -> Self {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut child = Command::new("node")
            .arg(root.join("tests/browser/drive.mjs"))
            .args(["--url", url, "--hold", &hold_secs.to_string(), "--tones", "500,900"])
            .arg("--wav")
            .arg(wav)
            .arg("--screenshot")
            .arg(screenshot)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("node runs (scripts/setup-tests installs it)");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
                let v = serde_json::from_str(&line).unwrap_or_else(|_| json!({"event": "text", "text": line}));
                if tx.send(v).is_err() {
                    break;
                }
            }
        });
        Browser { child, lines, seen: Vec::new() }
    }

    /// Lines until one with `event`; panics with everything seen on timeout.
    fn wait_for(&mut self, event: &str, limit: Duration) -> Value {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(v) => {
                    self.seen.push(v.clone());
                    if v["event"] == event {
                        return v;
                    }
                    assert_ne!(v["event"], "error", "the browser failed: {v}\nseen: {:?}", self.seen);
                }
                Err(_) => panic!("no {event:?} from the browser within {limit:?}; seen: {:#?}", self.seen),
            }
        }
    }
    /// The driver and every process under it (Chromium makes process groups of
    /// its own).
    fn processes(&self) -> Vec<nix::unistd::Pid> {
        common::process_tree(self.child.id())
    }

    /// Freezes Chromium and its driver (SIGSTOP): its sockets stay open and
    /// silent, as when a laptop's lid closes.
    fn freeze(&self) {
        for p in self.processes() {
            let _ = nix::sys::signal::kill(p, Signal::SIGSTOP);
        }
    }

    /// Kills Chromium and its driver outright, by pid.
    fn kill(&mut self) {
        for p in self.processes() {
            let _ = nix::sys::signal::kill(p, Signal::SIGKILL);
        }
        let _ = self.child.wait();
    }

    fn finish(mut self) -> Vec<Value> {
        let status = self.child.wait().unwrap();
        self.seen.extend(self.lines.try_iter());
        assert!(status.success(), "driver exit {status:?}: {:#?}", self.seen);
        std::mem::take(&mut self.seen)
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            self.kill();
        }
    }
}

fn artifacts() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The room page in Chromium and a SIPp caller in one room, each hearing the
/// other's tone and not its own; leave → `left`; a killed browser → removed
/// after the consent timeout; the box's WebRTC limit → 503.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_and_a_phone_hear_each_other_in_a_room() {
    let dir = tempfile::tempdir().unwrap();
    let gw = start(dir.path(), "max_participants = 1\nconsent_timeout = \"4s\"\n");
    let room = "shop-floor";
    let token = gw.join_token(room).await;
    let page = format!("{}#token={token}", gw.url(&format!("/rooms/{}", urlencode(room))));
    let wav = dir.path().join("mic-900.wav");
    let sox = Command::new("sox")
        .args(["-n", "-r", "48000", "-c", "1", "-b", "16"])
        .arg(&wav)
        .args(["synth", "40", "sine", "900", "vol", "0.5"])
        .status()
        .unwrap();
    assert!(sox.success());

    // The caller: 500 Hz for 25 s (Chromium may take 10 s and more to start on a
    // loaded box), in the room the route names.
    let (d, sip) = (dir.path().to_path_buf(), gw.sip_port);
    let caller = tokio::task::spawn_blocking(move || {
        let script = Script {
            audio: tone(500.0, 8000.0, 25_000),
            digits: vec![],
            gaps: vec![],
            send_for: Duration::from_millis(25_000),
            duration: Duration::from_millis(25_300),
        };
        place_calls_from(&d, sip, "127.0.0.1", "+13125550100", 26_000, vec![script], &["+14155550101".into()])
    });
    gw.event_data("the caller in the room", |d| d.iter().any(|e| e["event_type"] == "conference.participant.joined"))
        .await;

    let shot = artifacts().join("webrtc-room.png");
    let _ = std::fs::remove_file(&shot);
    let mut browser = Browser::open(&page, &wav, &shot, 6);
    let connected = browser.wait_for("connected", WAIT);
    let participant = connected["participantId"].as_str().unwrap_or_default().to_string();
    assert!(participant.starts_with("webrtc:"), "{connected}");

    // The room's participants, as the page lists them (with the join token): the
    // caller without its number (guests see no numbers), the browser as webrtc;
    // with the API token, the caller's number.
    let r =
        gw.api().http.get(gw.url("/v2/conferences/shop-floor/participants")).bearer_auth(&token).send().await.unwrap();
    let parts: Value = r.json().await.unwrap();
    let list = parts["data"].as_array().unwrap();
    assert!(list.iter().any(|p| p["participant_type"] == "sip" && p.get("from").is_none()), "{parts}");
    assert!(list.iter().any(|p| p["participant_type"] == "webrtc" && p["id"] == participant.as_str()), "{parts}");
    let r =
        gw.api().http.get(gw.url("/v2/conferences/shop-floor/participants")).bearer_auth(TOKEN).send().await.unwrap();
    let parts: Value = r.json().await.unwrap();
    let list = parts["data"].as_array().unwrap();
    assert!(list.iter().any(|p| p["participant_type"] == "sip" && p["from"] == "+14155550101"), "{parts}");

    // One browser is the box's limit here: another offer gets 503.
    let (code, _, body) = gw.offer("/v2/conferences/shop-floor/webrtc", TOKEN, DEAD_OFFER).await;
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("max_participants"), "{body}");

    let lines = browser.finish();
    // Chromium's codec both ways (its getStats()): Opus, with G.711 behind it in
    // the box's answer (Chromium numbers Opus 111).
    let codecs = lines.iter().find(|l| l["event"] == "codecs").unwrap_or_else(|| panic!("{lines:#?}"));
    eprintln!("Chromium negotiated: {codecs}");
    assert_eq!(codecs["outbound"]["mimeType"], "audio/opus", "{codecs}");
    assert_eq!(codecs["inbound"]["mimeType"], "audio/opus", "{codecs}");
    assert_eq!(codecs["inbound"]["clockRate"], 48_000, "{codecs}");
    assert!(codecs["answer"].as_str().is_some_and(|m| m.ends_with(" 111 0 8")), "Opus, then PCMU and PCMA: {codecs}");
    // The page heard the caller: its analyser shows 500 Hz, far above 900 Hz
    // (its own tone, which mix-minus keeps out), once audio flows (after 1 s).
    let samples: Vec<&Value> = lines.iter().filter(|l| l["event"] == "sample").skip(4).collect();
    assert!(samples.len() >= 10, "{lines:#?}");
    let median = |key: &str| {
        let mut v: Vec<f64> = samples.iter().filter_map(|s| s[key].as_f64()).collect();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (t500, t900) = (median("tone500Db"), median("tone900Db"));
    eprintln!("page analyser: 500 Hz {t500:.1} dB, 900 Hz {t900:.1} dB, level {:.1} dBFS", median("levelDb"));
    assert!(t500 > t900 + 30.0, "the page hears 500 Hz and not 900 Hz: {t500:.1} vs {t900:.1} dB");
    assert!(median("levelDb") > -40.0, "the page's meter moves: {:.1} dBFS", median("levelDb"));
    let png = std::fs::metadata(&shot).map(|m| m.len()).unwrap_or(0);
    assert!(png > 5_000, "screenshot of the joined page at {}: {png} bytes", shot.display());

    // Leaving the page: the left event, for this participant.
    let data = gw.event_data("the browser left", |d| !webrtc_events(d, "left").is_empty()).await;
    let joined = webrtc_events(&data, "joined");
    assert_eq!(joined.len(), 1, "{data:#?}");
    assert_eq!(joined[0]["payload"]["call_control_id"], participant.as_str());
    assert_eq!(joined[0]["payload"]["name"], room);
    let left = webrtc_events(&data, "left");
    assert_eq!(left[0]["payload"]["call_control_id"], participant.as_str());
    let log: String = gw
        .daemon
        .stderr()
        .lines()
        .filter(|l| l.contains("WebRTC") || l.contains("DELETE"))
        .collect::<Vec<_>>()
        .join("\n");
    assert_eq!(left[0]["payload"]["reason"], "left", "{log}");

    // The caller heard the browser: 900 Hz, and not its own 500 Hz, in its best
    // second (Chromium's mic processing attenuates a steady tone ~20 dB).
    let (code, log, phones) = caller.await.unwrap();
    assert_eq!(code, 0, "{log}");
    let pcm: Vec<i16> =
        phones[0].iter().filter(|p: &&Packet| p.payload_type == 0).flat_map(|p| p.pcm()).collect::<Vec<i16>>();
    let best = pcm
        .chunks(8000)
        .map(|s| (level(s, 900.0), level(s, 500.0)))
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .unwrap_or_default();
    eprintln!("caller heard: 900 Hz {:.0}, 500 Hz {:.0} (amplitude, best second)", best.0, best.1);
    assert!(best.0 > 300.0, "the caller hears the browser's 900 Hz: {best:?}");
    assert!(best.1 < best.0 / 10.0, "and not its own 500 Hz: {best:?}");

    // A browser that vanishes (Chromium frozen: no answers, no ICMP, as when a
    // laptop's lid closes) is removed after the ICE consent timeout (4 s here).
    let shot2 = dir.path().join("second.png");
    let mut browser = Browser::open(&page, &wav, &shot2, 60);
    let connected = browser.wait_for("connected", WAIT);
    let second = connected["participantId"].as_str().unwrap_or_default().to_string();
    let killed = Instant::now();
    browser.freeze();
    let data = gw
        .event_data("the vanished browser removed", |d| {
            webrtc_events(d, "left").iter().any(|e| e["payload"]["call_control_id"] == second.as_str())
        })
        .await;
    let gone = killed.elapsed();
    let left = webrtc_events(&data, "left");
    let reason =
        left.iter().find(|e| e["payload"]["call_control_id"] == second.as_str()).unwrap()["payload"]["reason"].clone();
    eprintln!("frozen browser removed after {:.1} s: {reason}", gone.as_secs_f64());
    assert_eq!(reason, "consent_expired");
    browser.kill();
    gw.stop();
}

/// Issue 22: a browser's wideband audio reaches another participant. Chromium,
/// with a 300–7000 Hz chirp as its microphone, and an Opus peer (webrtc-rs,
/// decoding with the box's own Opus) in one room: Chromium sends Opus, the room
/// mixes at 16 kHz, and the peer hears the chirp above 4 kHz as well as below
/// (G.711 anywhere on the path would leave nothing above 4 kHz).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_is_heard_wideband_through_a_room() {
    let dir = tempfile::tempdir().unwrap();
    let gw = start(dir.path(), "");
    let room = "shop-floor";
    // Half-second sweeps 300 → 7000 Hz, one after another for 40 s.
    let wav = dir.path().join("mic-chirp.wav");
    let sox = Command::new("sox")
        .args(["-n", "-r", "16000", "-c", "1", "-b", "16"])
        .arg(&wav)
        .args(["synth", "0.5", "sine", "300-7000", "vol", "0.5", "repeat", "79"])
        .status()
        .unwrap();
    assert!(sox.success());
    // The peer first (it creates the room), silent itself.
    let peer = Peer::join_opus(&gw, &format!("/v2/conferences/{room}/webrtc")).await;
    let token = gw.join_token(room).await;
    let page = format!("{}#token={token}", gw.url(&format!("/rooms/{}", urlencode(room))));
    let mut browser = Browser::open(&page, &wav, &dir.path().join("wide.png"), 6);
    browser.wait_for("connected", WAIT);
    let heard_from = peer.take().len();
    let lines = browser.finish();
    let heard = peer.take();
    peer.leave(&gw).await;
    let codecs = lines.iter().find(|l| l["event"] == "codecs").unwrap_or_else(|| panic!("{lines:#?}"));
    assert_eq!(codecs["outbound"]["mimeType"], "audio/opus", "Chromium sends Opus: {codecs}");
    // What the peer heard while the browser talked (16 kHz), after its first second.
    assert!(heard.len() > 4 * 16_000, "the peer heard {} samples (from {heard_from})", heard.len());
    let heard = &heard[16_000..];
    let (low, high) = (band_rms(heard, 16_000, 300, 3400), band_rms(heard, 16_000, 4500, 7500));
    eprintln!("the peer hears the browser's chirp: 300–3400 Hz RMS {low:.4}, 4500–7500 Hz RMS {high:.4}");
    assert!(low > 0.01, "the peer hears the browser: {low:.4}");
    assert!(high > low / 5.0, "and above 4 kHz: {high:.4} against {low:.4} in the telephone band");
    gw.stop();
}

/// Offers and credentials that must be refused, with the reason; an offer whose
/// ICE never connects joins and then leaves with `ice_failed`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_offers_tokens_and_dead_ice_are_refused_or_removed() {
    let dir = tempfile::tempdir().unwrap();
    let gw = start(dir.path(), "consent_timeout = \"4s\"\n");
    let path = "/v2/conferences/lobby/webrtc";

    // Bad SDP: 400 naming what is wrong.
    for (sdp, why) in [
        ("", "empty"),
        ("hello", "bad SDP"),
        (&DEAD_OFFER.replace(" 111 0 8 126", " 126"), "no codec of this box"),
        (&DEAD_OFFER.replace("a=fingerprint:", "a=x:"), "fingerprint"),
        (&DEAD_OFFER.replace("m=audio", "m=video"), "no audio"),
    ] {
        let (code, _, body) = gw.offer(path, TOKEN, sdp).await;
        assert_eq!(code, 400, "{why}: {body}");
        let e: Value = serde_json::from_str(&body).unwrap();
        assert!(e["errors"][0]["detail"].as_str().unwrap().contains(why), "{why}: {body}");
    }
    let r = gw.api().http.post(gw.url(path)).bearer_auth(TOKEN).json(&json!({"sdp": "x"})).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 415, "an offer is application/sdp");

    // Tokens: none, forged, another room's; a join token reaches nothing else.
    assert_eq!(gw.offer(path, "", DEAD_OFFER).await.0, 401);
    assert_eq!(gw.offer(path, "sbj1.bG9iYnk.99999999999.AAAA", DEAD_OFFER).await.0, 401);
    let other = gw.join_token("other").await;
    assert_eq!(gw.offer(path, &other, DEAD_OFFER).await.0, 401);
    let lobby = gw.join_token("lobby").await;
    for p in ["/v2/calls", "/v2/conferences", "/v2/recordings", "/metrics"] {
        let r = gw.api().http.get(gw.url(p)).bearer_auth(&lobby).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 401, "a join token does not reach {p}");
    }
    let r = gw.api().http.post(gw.url("/v2/conferences/lobby/join_tokens")).bearer_auth(&lobby).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 401, "a join token mints no tokens");
    let r = gw.api().http.post(gw.url("/v2/conferences/bridge:x/join_tokens")).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 400, "no tokens for the box's private rooms");
    let r = gw.api().http.post(gw.url("/v2/calls/nope/webrtc?mode=shout")).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 400, "mode is listen or talk");

    // The page: served without credentials, no secrets, a strict CSP.
    let r = gw.api().http.get(gw.url("/rooms/lobby")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert!(r.headers()["content-security-policy"].to_str().unwrap().contains("default-src 'none'"));
    let html = r.text().await.unwrap();
    assert!(html.contains("RTCPeerConnection") && !html.contains(TOKEN));

    // ICE that never connects: joined (201 with an answer and a Location), then
    // removed with ice_failed; DELETE on the gone session is 404.
    let (code, headers, answer) = gw.offer(path, &lobby, DEAD_OFFER).await;
    assert_eq!(code, 201, "{answer}");
    assert_eq!(headers["content-type"], "application/sdp");
    assert!(answer.contains("a=candidate:") && answer.contains("a=fingerprint:"), "{answer}");
    assert!(answer.contains("PCMU/8000"), "{answer}");
    // Opus first (at the offer's 111), G.711 behind it.
    let m = answer.lines().find(|l| l.starts_with("m=audio")).unwrap_or_default();
    assert!(m.ends_with(" 111 0 8"), "{answer}");
    assert!(answer.contains("a=rtpmap:111 opus/48000/2"), "{answer}");
    let location = headers["location"].to_str().unwrap().to_string();
    assert!(location.starts_with("/v2/webrtc/"), "{location}");
    let participant = headers["x-participant-id"].to_str().unwrap().to_string();
    let metrics = gw.api().http.get(gw.url("/metrics")).bearer_auth(TOKEN).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("\nsipbridge_webrtc_participants 1\n"), "{metrics}");
    let r = gw.api().http.get(gw.url("/v2/conferences/lobby/participants")).bearer_auth(&lobby).send().await.unwrap();
    let parts: Value = r.json().await.unwrap();
    assert_eq!(parts["data"][0]["participant_type"], "webrtc", "{parts}");
    let data = gw.event_data("the dead session removed", |d| !webrtc_events(d, "left").is_empty()).await;
    let left = webrtc_events(&data, "left");
    assert_eq!(left[0]["payload"]["call_control_id"], participant.as_str());
    assert_eq!(left[0]["payload"]["reason"], "ice_failed");
    let r = gw.api().http.delete(gw.url(&location)).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 404);

    // A live session: DELETE with the room's token → 204 and the left event.
    let (code, headers, _) = gw.offer(path, &lobby, DEAD_OFFER).await;
    assert_eq!(code, 201);
    let location = headers["location"].to_str().unwrap().to_string();
    let participant = headers["x-participant-id"].to_str().unwrap().to_string();
    let bare = location.split('?').next().unwrap();
    let r = gw.api().http.delete(gw.url(bare)).bearer_auth(&other).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 401, "another room's token (without the session's secret) removes nothing");
    let r = gw.api().http.delete(gw.url(bare)).bearer_auth(&lobby).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 401, "nor does the room's own token");
    let r = gw.api().http.delete(gw.url(&location)).bearer_auth(&lobby).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 204);
    let data = gw
        .event_data("the deleted session left", |d| {
            webrtc_events(d, "left").iter().any(|e| e["payload"]["call_control_id"] == participant.as_str())
        })
        .await;
    let left = webrtc_events(&data, "left");
    assert_eq!(left.last().unwrap()["payload"]["reason"], "left");

    // DTLS that cannot complete: ICE connects, but the peer's certificate is not
    // the one its offer names. Removed with dtls_failed; the room is unharmed.
    let forged = Peer::join_with(&gw, path, 900.0, true, false).await;
    let id = format!("webrtc:{}", forged.location.split('?').next().unwrap().rsplit('/').next().unwrap());
    let data = gw
        .event_data("the forged DTLS session removed", |d| {
            webrtc_events(d, "left").iter().any(|e| e["payload"]["call_control_id"] == id.as_str())
        })
        .await;
    let left = webrtc_events(&data, "left");
    let e = left.iter().find(|e| e["payload"]["call_control_id"] == id.as_str()).unwrap();
    assert_eq!(e["payload"]["reason"], "dtls_failed", "{e}");
    let _ = forged.pc.close().await;
    gw.stop();
}

/// A WebRTC peer made with the same stack as the box (webrtc-rs), for the call
/// monitor's API (the page covers rooms; this covers `POST /v2/calls/{id}/webrtc`):
/// sends a tone as PCMU every 20 ms and keeps what it hears.
struct Peer {
    pc: std::sync::Arc<dyn webrtc::peer_connection::PeerConnection>,
    heard: std::sync::Arc<std::sync::Mutex<Vec<i16>>>,
    sender: tokio::task::JoinHandle<()>,
    location: String,
    conference_id: String,
}

struct PeerHandler {
    gathered: tokio::sync::watch::Sender<bool>,
    connected: tokio::sync::watch::Sender<bool>,
    heard: std::sync::Arc<std::sync::Mutex<Vec<i16>>>,
    /// Hear Opus (payload type 111), decoded to 16 kHz, instead of PCMU.
    opus: bool,
}

#[async_trait::async_trait]
impl webrtc::peer_connection::PeerConnectionEventHandler for PeerHandler {
    async fn on_ice_gathering_state_change(&self, s: webrtc::peer_connection::RTCIceGatheringState) {
        if s == webrtc::peer_connection::RTCIceGatheringState::Complete {
            self.gathered.send_replace(true);
        }
    }
    async fn on_connection_state_change(&self, s: webrtc::peer_connection::RTCPeerConnectionState) {
        if s == webrtc::peer_connection::RTCPeerConnectionState::Connected {
            self.connected.send_replace(true);
        }
    }
    async fn on_track(&self, track: std::sync::Arc<dyn webrtc::media_stream::track_remote::TrackRemote>) {
        let heard = std::sync::Arc::clone(&self.heard);
        let (pt, codec) = if self.opus { (111, AudioCodec::Opus) } else { (0, AudioCodec::Pcmu) };
        tokio::spawn(async move {
            let mut decoder = Decoder::new(codec).expect("the codec is in the build");
            let mut pcm = vec![0i16; sipbridge::media::codec::MAX_FRAME_SAMPLES];
            while let Some(ev) = track.poll().await {
                if let webrtc::media_stream::track_remote::TrackRemoteEvent::OnRtpPacket(p) = ev
                    && p.header.payload_type == pt
                {
                    let n = decoder.decode(&p.payload, &mut pcm).expect("the box sends valid audio");
                    heard.lock().unwrap().extend_from_slice(&pcm[..n]);
                }
            }
        });
    }
}

impl Peer {
    async fn join(gw: &Gateway, path: &str, hz: f64) -> Peer {
        Self::join_with(gw, path, hz, false, false).await
    }

    /// A peer that offers Opus only and only listens: it hears Opus, decoded to
    /// 16 kHz with the box's own decoder (`heard` is then 16 kHz).
    async fn join_opus(gw: &Gateway, path: &str) -> Peer {
        Self::join_with(gw, path, 0.0, false, true).await
    }

    /// `forged_fingerprint`: the offer names another certificate than the one the
    /// peer's DTLS presents (ICE connects, DTLS must fail); returns right after
    /// the 201. `opus`: offer Opus first ([`Peer::join_opus`]).
    async fn join_with(gw: &Gateway, path: &str, hz: f64, forged_fingerprint: bool, opus: bool) -> Peer {
        use rtc::rtp_transceiver::rtp_sender::*;
        use std::sync::Arc;
        use webrtc::media_stream::track_local::TrackLocal;
        use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
        use webrtc::peer_connection::*;
        let pcmu = RTCRtpCodecParameters {
            rtp_codec: RTCRtpCodec {
                mime_type: "audio/PCMU".into(),
                clock_rate: 8000,
                channels: 1,
                sdp_fmtp_line: String::new(),
                rtcp_feedback: vec![],
            },
            payload_type: 0,
        };
        let mut media = MediaEngine::default();
        let opus_codec = RTCRtpCodecParameters {
            rtp_codec: RTCRtpCodec {
                mime_type: "audio/opus".into(),
                clock_rate: 48_000,
                channels: 2,
                sdp_fmtp_line: "minptime=10;useinbandfec=1".into(),
                rtcp_feedback: vec![],
            },
            payload_type: 111,
        };
        // The offer lists the codecs of the track's own: Opus, or PCMU.
        let sent = if opus { opus_codec } else { pcmu };
        media.register_codec(sent.clone(), RtpCodecKind::Audio).unwrap();
        let registry = register_default_interceptors(Registry::new(), &mut media).unwrap();
        let (gathered, mut gathered_rx) = tokio::sync::watch::channel(false);
        let (connected, mut connected_rx) = tokio::sync::watch::channel(false);
        let heard = Arc::new(std::sync::Mutex::new(Vec::new()));
        let handler = Arc::new(PeerHandler { gathered, connected, heard: Arc::clone(&heard), opus });
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
                .unwrap(),
        );
        let track = Arc::new(TrackLocalStaticRTP::new(webrtc::media_stream::MediaStreamTrack::new(
            "peer".into(),
            "mic".into(),
            "test peer".into(),
            RtpCodecKind::Audio,
            vec![RTCRtpEncodingParameters {
                rtp_coding_parameters: RTCRtpCodingParameters { ssrc: Some(0x1234_5678), ..Default::default() },
                codec: sent.rtp_codec.clone(),
                ..Default::default()
            }],
        )));
        pc.add_track(Arc::clone(&track) as Arc<dyn TrackLocal>).await.unwrap();
        let offer = pc.create_offer(None).await.unwrap();
        pc.set_local_description(offer).await.unwrap();
        let _ = tokio::time::timeout(Duration::from_secs(3), gathered_rx.wait_for(|g| *g)).await;
        let mut sdp = pc.local_description().await.unwrap().sdp;
        if forged_fingerprint {
            let fp = sdp.lines().find_map(|l| l.strip_prefix("a=fingerprint:sha-256 ")).unwrap().to_string();
            let forged: String = fp
                .chars()
                .map(|c| {
                    if c == ':' {
                        c
                    } else if c == 'A' {
                        'B'
                    } else {
                        'A'
                    }
                })
                .collect();
            sdp = sdp.replace(&fp, &forged);
        }
        let (code, headers, answer) = gw.offer(path, TOKEN, &sdp).await;
        assert_eq!(code, 201, "{answer}");
        pc.set_remote_description(RTCSessionDescription::answer(answer).unwrap()).await.unwrap();
        let location = headers["location"].to_str().unwrap().to_string();
        let conference_id = headers["x-conference-id"].to_str().unwrap().to_string();
        if forged_fingerprint {
            let sender = tokio::spawn(async {});
            return Peer { pc, heard, sender, location, conference_id };
        }
        tokio::time::timeout(Duration::from_secs(15), connected_rx.wait_for(|c| *c))
            .await
            .expect("the peer connects (ICE + DTLS)")
            .unwrap();
        if opus {
            // It only listens.
            let sender = tokio::spawn(async {});
            return Peer { pc, heard, sender, location, conference_id };
        }
        let sender = tokio::spawn(async move {
            let audio = tone(hz, 8000.0, 60_000);
            let mut tick = tokio::time::interval(Duration::from_millis(20));
            for (seq, frame) in audio.chunks(160).enumerate() {
                tick.tick().await;
                let payload: Vec<u8> =
                    frame.iter().map(|&s| sipbridge::media::g711::G711::Pcmu.encode_sample(s)).collect();
                let packet = rtc::rtp::Packet {
                    header: rtc::rtp::header::Header {
                        version: 2,
                        payload_type: 0,
                        sequence_number: seq as u16,
                        timestamp: (seq * 160) as u32,
                        ssrc: 0x1234_5678,
                        ..Default::default()
                    },
                    payload: bytes::Bytes::from(payload),
                };
                if track.write_rtp(packet).await.is_err() {
                    break;
                }
            }
        });
        Peer { pc, heard, sender, location, conference_id }
    }

    /// What it heard since the last call.
    fn take(&self) -> Vec<i16> {
        std::mem::take(&mut *self.heard.lock().unwrap())
    }

    async fn leave(self, gw: &Gateway) {
        let r = gw.api().http.delete(gw.url(&self.location)).bearer_auth(TOKEN).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 204);
        self.sender.abort();
        let _ = self.pc.close().await;
    }
}

/// `POST /v2/calls/{id}/webrtc`: a caller (500 Hz) talking to the echo agent,
/// recorded. A `listen` browser (sending 900 Hz) hears the caller and is not
/// heard; a `talk` browser is heard by the caller and lands in the call's
/// recording (R = what the caller hears); a conference `mute` of it takes it out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_listens_to_a_call_then_barges_in() {
    let dir = tempfile::tempdir().unwrap();
    let routes = format!(
        "[[agent]]\nname = \"echo\"\nurl = \"builtin:echo\"\n[[route]]\nagent = \"echo\"\nrecord = true\n\
         [recording]\nenabled = true\nmax_disk_usage = \"1GiB\"\ndir = \"{}\"\n",
        dir.path().join("rec").display()
    );
    let gw = start_with(dir.path(), &routes, "");
    let (d, sip) = (dir.path().to_path_buf(), gw.sip_port);
    let started = Instant::now();
    let caller = tokio::task::spawn_blocking(move || {
        let script = Script {
            audio: tone(500.0, 8000.0, 15_000),
            digits: vec![],
            gaps: vec![],
            send_for: Duration::from_millis(15_000),
            duration: Duration::from_millis(15_300),
        };
        place_calls_from(&d, sip, "127.0.0.1", "+13125550100", 16_000, vec![script], &["+14155550101".into()])
    });
    let data = gw.event_data("the call answered", |d| d.iter().any(|e| e["event_type"] == "call.answered")).await;
    let call = data.iter().find(|e| e["event_type"] == "call.answered").unwrap()["payload"]["call_control_id"]
        .as_str()
        .unwrap()
        .to_string();
    let path = |mode: &str| format!("/v2/calls/{call}/webrtc?mode={mode}");

    // Listen: hears the caller (and the echo), is not heard.
    let listener = Peer::join(&gw, &path("listen"), 900.0).await;
    let listen_from = started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let heard = listener.take();
    let listen_to = started.elapsed().as_secs_f64();
    listener.leave(&gw).await;
    let tail = &heard[heard.len().saturating_sub(8000)..];
    assert!(level(tail, 500.0) > 1000.0, "the listener hears the caller: {:.0}", level(tail, 500.0));
    assert!(level(tail, 900.0) < 100.0, "and not itself: {:.0}", level(tail, 900.0));

    // Talk: the caller hears it; then muted from the API, it does not.
    let talker = Peer::join(&gw, &path("talk"), 900.0).await;
    let talk_from = started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let talk_to = started.elapsed().as_secs_f64();
    let mute = format!("/v2/conferences/{}/actions/mute", talker.conference_id);
    let participant = format!("webrtc:{}", talker.location.split('?').next().unwrap().rsplit('/').next().unwrap());
    let r = gw
        .api()
        .http
        .post(gw.url(&mute))
        .bearer_auth(TOKEN)
        .json(&json!({"call_control_ids": [participant]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200, "{}", r.text().await.unwrap_or_default());
    let muted_from = started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let muted_to = started.elapsed().as_secs_f64();
    talker.leave(&gw).await;

    let (code, log, phones) = caller.await.unwrap();
    assert_eq!(code, 0, "{log}");
    // The caller's audio per phase (its clock starts a little after `started`:
    // a second of margin on each side).
    let window = |from: f64, to: f64| -> Vec<i16> {
        phones[0]
            .iter()
            .filter(|p| p.payload_type == 0 && (from + 1.0..to - 0.5).contains(&p.at.as_secs_f64()))
            .flat_map(|p| p.pcm())
            .collect()
    };
    let (listening, talking, muted) =
        (window(listen_from, listen_to), window(talk_from, talk_to), window(muted_from, muted_to));
    eprintln!(
        "caller hears 900 Hz: listen {:.0}, talk {:.0}, muted {:.0}",
        level(&listening, 900.0),
        level(&talking, 900.0),
        level(&muted, 900.0)
    );
    assert!(level(&listening, 900.0) < 100.0, "a listener is not heard");
    assert!(level(&talking, 900.0) > 1000.0, "a talker is heard");
    assert!(level(&muted, 900.0) < 100.0, "a muted talker is not heard");

    // The call's recording: R (what the caller hears) carries the talker.
    let data = gw.event_data("the recording", |d| d.iter().any(|e| e["event_type"] == "call.recording.saved")).await;
    let saved = data.iter().find(|e| e["event_type"] == "call.recording.saved").unwrap();
    let file = saved["payload"]["file_path"].as_str().unwrap();
    let (_, _, right) = common::audio::read_stereo(Path::new(file));
    let best = right.chunks(8000).map(|s| level(s, 900.0)).fold(0.0, f64::max);
    assert!(best > 1000.0, "the recording's right channel holds the talker: {best:.0}");
    // Monitor rooms are the box's own: no conference events.
    assert!(!data.iter().any(|e| e["event_type"].as_str().unwrap_or("").starts_with("conference.")), "{data:#?}");
    gw.stop();
}

/// Behind a 1:1 NAT the answer offers `[webrtc] public_address` (server
/// reflexive, same port) beside the private host candidate, inside `port_range`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_answer_offers_the_public_address_in_the_port_range() {
    let dir = tempfile::tempdir().unwrap();
    let gw = start(dir.path(), "public_address = \"203.0.113.7\"\nport_range = \"47000-47099\"\n");
    let (code, headers, answer) = gw.offer("/v2/conferences/lobby/webrtc", TOKEN, DEAD_OFFER).await;
    assert_eq!(code, 201, "{answer}");
    let fields = |typ: &str| -> Vec<Vec<String>> {
        answer
            .lines()
            .filter(|l| l.starts_with("a=candidate:") && l.contains(&format!(" typ {typ}")))
            .map(|l| l.split_whitespace().map(str::to_string).collect())
            .collect()
    };
    let (host, srflx) = (fields("host"), fields("srflx"));
    assert!(!host.is_empty() && host.len() == srflx.len(), "{answer}");
    for (h, s) in host.iter().zip(&srflx) {
        assert_eq!(h[4], "127.0.0.1", "the LAN keeps the direct path: {answer}");
        assert_eq!((s[4].as_str(), &s[5]), ("203.0.113.7", &h[5]), "{answer}");
        let port: u16 = h[5].parse().unwrap();
        assert!((47000..=47099).contains(&port), "{answer}");
    }
    let r =
        gw.api().http.delete(gw.url(headers["location"].to_str().unwrap())).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 204);
    gw.stop();
}

/// `[webrtc] enabled = false`: offers are refused with 403, saying so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_box_with_webrtc_disabled_refuses_offers() {
    let dir = tempfile::tempdir().unwrap();
    let gw = start(dir.path(), "enabled = false\n");
    let (code, _, body) = gw.offer("/v2/conferences/lobby/webrtc", TOKEN, DEAD_OFFER).await;
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("enabled = false"), "{body}");
    gw.stop();
}

/// Opens `/v2/events?token=…` as a page does (no header).
async fn guest_events(gw: &Gateway, token: &str) -> tokio_tungstenite::WebSocketStream<tokio::net::TcpStream> {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", gw.api_port())).await.unwrap();
    let url = format!("ws://127.0.0.1:{}/v2/events?token={token}", gw.api_port());
    tokio_tungstenite::client_async(url, tcp).await.expect("guest event socket").0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guests_remove_only_themselves_fill_a_room_up_to_its_cap_see_no_numbers_and_lose_their_tokens_on_rekey() {
    use futures_util::StreamExt;
    let dir = tempfile::tempdir().unwrap();
    // Dead offers stay joined for the whole test (no ICE, removed after 120 s).
    let gw = start(dir.path(), "consent_timeout = \"120s\"\nmax_participants_per_room = 2\n");
    let room = "shop-floor";
    let path = format!("/v2/conferences/{room}/webrtc");
    let guest = gw.join_token(room).await;
    let mut guest_socket = guest_events(&gw, &guest).await;

    // Two guests fill the room's guest cap; a third gets 503; the API token is not capped.
    let mut locations = Vec::new();
    for _ in 0..2 {
        let (code, headers, body) = gw.offer(&path, &guest, DEAD_OFFER).await;
        assert_eq!(code, 201, "{body}");
        let location = headers["location"].to_str().unwrap().to_string();
        assert!(location.starts_with("/v2/webrtc/") && location.contains("?secret="), "{location}");
        locations.push(location);
    }
    let (code, _, body) = gw.offer(&path, &guest, DEAD_OFFER).await;
    assert_eq!(code, 503, "over max_participants_per_room: {body}");
    assert!(body.contains("max_participants_per_room"), "{body}");
    let (code, headers, body) = gw.offer(&path, TOKEN, DEAD_OFFER).await;
    assert_eq!(code, 201, "the API token is not capped per room: {body}");
    let admin_location = headers["location"].to_str().unwrap().to_string();

    // A guest cannot remove another browser: not with the join token, not with a
    // wrong secret, not with its own secret on someone else's session.
    let (first, second) = (&locations[0], &locations[1]);
    let bare = |l: &str| l.split('?').next().unwrap().to_string();
    let secret_of = |l: &str| l.split("secret=").nth(1).unwrap().to_string();
    let delete = |url: String, bearer: Option<&str>| {
        let mut r = gw.api().http.delete(gw.url(&url));
        if let Some(b) = bearer {
            r = r.bearer_auth(b);
        }
        async move { r.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(delete(bare(first), Some(&guest)).await, 401, "a join token alone removes no one");
    assert_eq!(delete(format!("{}?secret=nope", bare(first)), Some(&guest)).await, 404);
    assert_eq!(delete(format!("{}?secret={}", bare(first), secret_of(second)), None).await, 404);
    // Its own Location (what the page DELETEs) removes it, even without a bearer.
    assert_eq!(delete(first.clone(), Some(&guest)).await, 204);
    assert_eq!(delete(second.clone(), None).await, 204);
    // The API token removes any session.
    assert_eq!(delete(bare(&admin_location), Some(TOKEN)).await, 204);
    assert_eq!(delete(first.clone(), None).await, 404, "gone");

    // A phone joins the room: the backend's events carry its numbers, the
    // guest's carry neither numbers nor client_state.
    let (d, sip) = (dir.path().to_path_buf(), gw.sip_port);
    let caller = tokio::task::spawn_blocking(move || {
        let script = Script {
            audio: tone(500.0, 8000.0, 1500),
            digits: vec![],
            gaps: vec![],
            send_for: Duration::from_millis(1500),
            duration: Duration::from_millis(1800),
        };
        place_calls_from(&d, sip, "127.0.0.1", "+13125550100", 2000, vec![script], &["+14155550101".into()])
    });
    let data = gw
        .event_data("the phone in the room", |d| {
            d.iter().any(|e| e["event_type"] == "conference.participant.joined" && e["payload"]["from"].is_string())
        })
        .await;
    let phone = data
        .iter()
        .find(|e| e["event_type"] == "conference.participant.joined" && e["payload"]["from"].is_string())
        .unwrap();
    assert_eq!(phone["payload"]["from"], "+14155550101");
    let phone_id = phone["payload"]["call_control_id"].as_str().unwrap().to_string();
    let seen = loop {
        let msg = tokio::time::timeout(WAIT, guest_socket.next()).await.expect("guest event").unwrap().unwrap();
        let v: Value = serde_json::from_str(msg.to_text().unwrap()).unwrap();
        if v["data"]["event_type"] == "conference.participant.joined"
            && v["data"]["payload"]["call_control_id"] == phone_id.as_str()
        {
            break v;
        }
    };
    let payload = seen["data"]["payload"].as_object().unwrap();
    for hidden in ["from", "to", "client_state"] {
        assert!(!payload.contains_key(hidden), "a guest does not see {hidden}: {seen}");
    }
    assert!(payload.contains_key("conference_id"), "{seen}");
    let (code, report, _) = caller.await.unwrap();
    assert_eq!(code, 0, "{report}");

    // A new API token (reload): every join token minted under the old one dies.
    let config = dir.path().join("sipbridge.toml");
    let rotated = "webrtc-rotated-token-4567";
    let text = std::fs::read_to_string(&config).unwrap().replace(TOKEN, rotated);
    std::fs::write(&config, text).unwrap();
    gw.daemon.signal(Signal::SIGHUP);
    let deadline = Instant::now() + WAIT;
    loop {
        let r = gw.api().http.get(gw.url("/v2/conferences")).bearer_auth(rotated).send().await.unwrap();
        if r.status().as_u16() == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "the reload applies the new token");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let r = gw.api().http.get(gw.url(&format!("/v2/conferences/{room}/participants"))).bearer_auth(&guest).send().await;
    assert_eq!(r.unwrap().status().as_u16(), 401, "the old join token is revoked by the new API token");
    let (code, _, body) = gw.offer(&path, &guest, DEAD_OFFER).await;
    assert_eq!(code, 401, "{body}");
    let r = gw
        .api()
        .http
        .post(gw.url(&format!("/v2/conferences/{room}/join_tokens")))
        .bearer_auth(rotated)
        .send()
        .await
        .unwrap();
    let fresh: Value = r.json().await.unwrap();
    let fresh = fresh["data"]["token"].as_str().unwrap();
    let (code, _, body) = gw.offer(&path, fresh, DEAD_OFFER).await;
    assert_eq!(code, 201, "a token minted under the new API token works: {body}");
    gw.stop();
}
