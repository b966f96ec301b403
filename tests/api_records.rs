//! Recordings and call records over the control API (issue 9, point 4) and the API
//! over TLS, on the real daemon with real recorded calls: SIPp places the calls
//! (from 127.0.0.1 on trunk `pbx`, from 127.0.0.2 on trunk `branch`), the test's
//! RTP phone sends a tone to the built-in echo agent, `[[route]] record = true`
//! records them as stereo WAV.
//!
//! Checked: `GET /v2/recordings` in Telnyx's shape with its filters and
//! pagination; `GET /v2/recordings/{id}`; the `.wav` download byte for byte
//! against the file on disk (whole, ranges, 416, ETag/304), read back with `hound`
//! as a valid stereo WAV; `DELETE`; a file removed by hand and one removed by the
//! retention sweep marked deleted with their reason; `GET /v2/call_records` by
//! time window, trunk and direction, with each leg's jitter/loss series
//! (`quality_samples`); 400s naming the parameter; 401 without the token; the
//! OpenAPI document lists the routes and every field of a call record. Over TLS (a self-signed
//! certificate made with `openssl`): the same routes over `https://`, the event
//! socket over `wss://`, and `recording_urls` saying `https://`.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use common::gateway::{Api, Gateway, GatewayBuilder, Route, Trunk};
use common::rtp::{Script, place_calls, tone};
use common::*;
use futures_util::StreamExt;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(40);
const TOKEN: &str = "records-token-0123456789";

/// The daemon's config: two trunks told apart by source address, every call to
/// the echo agent and recorded (dual channel) into `rec`, the control API with
/// [`TOKEN`] on `api`, SIP on `sip` (fixed: the box is restarted on them).
fn gateway(dir: &Path, sip: u16, api: u16, rec: &Path) -> GatewayBuilder {
    Gateway::builder(dir)
        .sip_port(sip)
        .rtp_range(40_000, 44_999)
        .trunk(Trunk::new("pbx").allow("127.0.0.1/32"))
        .trunk(Trunk::new("branch").allow("127.0.0.2/32"))
        .agent("echo", "builtin:echo", "")
        .route(Route::new().agent("echo").record())
        .recording_in(rec, "channels = \"dual\"")
        .api(TOKEN)
        .api_port(api)
}

/// One call from `local_ip` that lasts about `ms` (the caller hangs up).
async fn call(dir: &Path, sip: u16, local_ip: &'static str, ms: u64) {
    let d = dir.to_path_buf();
    let (code, report, received) = tokio::task::spawn_blocking(move || {
        let s = Script {
            audio: tone(440.0, 8000.0, ms as usize),
            digits: vec![],
            gaps: vec![],
            send_for: Duration::from_millis(ms),
            duration: Duration::from_millis(ms + 300),
        };
        place_calls(&d, sip, local_ip, "+13125550100", ms, vec![s])
    })
    .await
    .unwrap();
    assert_eq!(code, 0, "{report}");
    assert!(received[0].len() > 20, "the echo came back");
}

fn sha256_hex(bytes: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, bytes).as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_micros(t).to_string()
}

/// A valid stereo 8 kHz 16-bit WAV of about `millis` ms (hound reads it whole).
fn assert_stereo_wav(bytes: &[u8], millis: u64) {
    let mut r = hound::WavReader::new(std::io::Cursor::new(bytes)).expect("a WAV file");
    let spec = r.spec();
    assert_eq!((spec.channels, spec.sample_rate, spec.bits_per_sample), (2, 8000, 16), "{spec:?}");
    let frames = u64::from(r.duration());
    assert!(frames.abs_diff(millis * 8) <= 8 * 40, "{frames} frames for {millis} ms");
    let samples: Vec<i16> = r.samples::<i16>().collect::<Result<_, _>>().expect("every sample reads");
    assert_eq!(samples.len() as u64, frames * 2);
    let left_loud = samples.iter().step_by(2).filter(|s| s.unsigned_abs() > 2000).count();
    assert!(left_loud as u64 > frames / 4, "the caller's tone is on the left channel: {left_loud}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recordings_and_call_records_over_http() {
    let dir = tempfile::tempdir().unwrap();
    let rec = dir.path().join("rec");
    let (sip, api_port) = (free_port(), free_port());
    let gw = gateway(dir.path(), sip, api_port, &rec).start();
    let api = gw.api();

    // Three calls: pbx, then branch, then pbx; instants between them (taken once
    // each recording is listed) split the records.
    let t0 = SystemTime::now();
    let mut list = Value::Null;
    let mut t1 = t0;
    for (n, from) in [(1, "127.0.0.1"), (2, "127.0.0.2"), (3, "127.0.0.1")] {
        call(dir.path(), sip, from, 1500).await;
        list = api.wait_for("/v2/recordings", "the call's recording listed", |b| b["meta"]["total_results"] == n).await;
        if n == 1 {
            t1 = SystemTime::now();
        }
    }
    let t3 = SystemTime::now();
    let data = list["data"].as_array().unwrap();
    assert_eq!(list["meta"], json!({"page_number": 1, "page_size": 20, "total_pages": 1, "total_results": 3}));
    // Newest first: [pbx #2, branch, pbx #1].
    let trunks: Vec<&str> = data.iter().map(|r| r["connection_id"].as_str().unwrap()).collect();
    assert_eq!(trunks, ["pbx", "branch", "pbx"]);
    for r in data {
        assert_eq!(r["record_type"], "recording");
        assert_eq!(
            (r["channels"].as_str(), r["status"].as_str(), r["source"].as_str()),
            (Some("dual"), Some("completed"), Some("call"))
        );
        let id = r["id"].as_str().unwrap();
        assert_eq!(r["download_urls"]["wav"], format!("http://127.0.0.1:{api_port}/v2/recordings/{id}.wav"));
        assert!(r["call_control_id"].is_string() && r["call_leg_id"].is_string() && r["call_session_id"].is_string());
        let ms = r["duration_millis"].as_u64().unwrap();
        assert!((1000..=2500).contains(&ms), "{r}");
        let started = humantime::parse_rfc3339(r["recording_started_at"].as_str().unwrap()).unwrap();
        let ended = humantime::parse_rfc3339(r["recording_ended_at"].as_str().unwrap()).unwrap();
        assert!(t0 <= started && started < ended && ended <= t3, "{r}");
        assert!(Path::new(r["file_path"].as_str().unwrap()).starts_with(&rec));
    }
    let (newest, branch, oldest) = (&data[0], &data[1], &data[2]);

    // Filters and pages.
    let ids = |b: &Value| {
        b["data"].as_array().unwrap().iter().map(|r| r["id"].as_str().unwrap().to_string()).collect::<Vec<_>>()
    };
    let session = oldest["call_session_id"].as_str().unwrap();
    let (code, b) = api.get(&format!("/v2/recordings?filter[call_session_id]={session}")).await;
    assert_eq!((code, ids(&b)), (200, vec![oldest["id"].as_str().unwrap().to_string()]));
    let leg = branch["call_leg_id"].as_str().unwrap();
    let (_, b) = api.get(&format!("/v2/recordings?filter%5Bcall_leg_id%5D={leg}")).await;
    assert_eq!(ids(&b), [branch["id"].as_str().unwrap()]);
    let (_, b) = api.get("/v2/recordings?filter[connection_id]=pbx").await;
    assert_eq!(ids(&b), [newest["id"].as_str().unwrap(), oldest["id"].as_str().unwrap()]);
    let since = url_encode(&rfc3339(t1));
    let (_, b) = api.get(&format!("/v2/recordings?filter[created_at][gte]={since}")).await;
    assert_eq!(b["meta"]["total_results"], 2, "{b}");
    let (_, b) = api.get(&format!("/v2/recordings?filter[created_at][lte]={since}")).await;
    assert_eq!(ids(&b), [oldest["id"].as_str().unwrap()]);
    let (_, b) = api.get("/v2/recordings?page[size]=2&page[number]=2").await;
    assert_eq!(ids(&b), [oldest["id"].as_str().unwrap()]);
    assert_eq!(b["meta"], json!({"page_number": 2, "page_size": 2, "total_pages": 2, "total_results": 3}));

    // 400s name the parameter.
    for (query, parameter) in [
        ("page[size]=0", "page[size]"),
        ("page[size]=251", "page[size]"),
        ("page[number]=x", "page[number]"),
        ("filter[created_at][gte]=yesterday", "filter[created_at][gte]"),
        ("filter[status]=gone", "filter[status]"),
        ("filter[call_sesion_id]=x", "filter[call_sesion_id]"),
    ] {
        let (code, e) = api.get(&format!("/v2/recordings?{query}")).await;
        assert_eq!((code, e["errors"][0]["source"]["parameter"].as_str()), (400, Some(parameter)), "{query}: {e}");
        assert_eq!(e["errors"][0]["code"], "10015");
    }

    // One recording; unknown ids are 404 in the errors shape.
    let id = oldest["id"].as_str().unwrap();
    let (code, one) = api.get(&format!("/v2/recordings/{id}")).await;
    assert_eq!((code, &one["data"]), (200, oldest));
    let (code, e) = api.get("/v2/recordings/no-such-recording").await;
    assert_eq!((code, e["errors"][0]["code"].as_str()), (404, Some("10005")), "{e}");
    let (code, _) = api.get("/v2/recordings/no-such-recording.wav").await;
    assert_eq!(code, 404);

    // The download is the file on disk, byte for byte: whole and in ranges.
    let url = oldest["download_urls"]["wav"].as_str().unwrap();
    let on_disk = std::fs::read(oldest["file_path"].as_str().unwrap()).unwrap();
    assert_eq!(oldest["size_bytes"], on_disk.len());
    assert_eq!(oldest["sha256"], sha256_hex(&on_disk));
    let size = on_disk.len();
    let (code, h, body) = api.fetch(url, &[]).await;
    assert_eq!(code, 200);
    assert_eq!(h["content-type"], "audio/wav");
    assert_eq!(h["accept-ranges"], "bytes");
    assert!(h.contains_key("last-modified"));
    assert_eq!(h["etag"].to_str().unwrap(), format!("\"{}\"", sha256_hex(&on_disk)));
    assert!(body == on_disk, "the download equals the file");
    assert_stereo_wav(&body, oldest["duration_millis"].as_u64().unwrap());
    for (range, first, last) in
        [("bytes=0-43", 0, 43), ("bytes=1000-", 1000, size - 1), ("bytes=-10", size - 10, size - 1)]
    {
        let (code, h, part) = api.fetch(url, &[("range", range)]).await;
        assert_eq!(code, 206, "{range}");
        assert_eq!(h["content-range"].to_str().unwrap(), format!("bytes {first}-{last}/{size}"), "{range}");
        assert!(part == on_disk[first..=last], "{range}: the bytes of the file");
    }
    let (code, h, _) = api.fetch(url, &[("range", format!("bytes={size}-").as_str())]).await;
    assert_eq!(code, 416);
    assert_eq!(h["content-range"].to_str().unwrap(), format!("bytes */{size}"));
    let (code, _, body) = api.fetch(url, &[("if-none-match", h_etag(&on_disk).as_str())]).await;
    assert_eq!((code, body.len()), (304, 0));

    // Call records: one per leg, by window, trunk and direction, with their recordings.
    let (code, b) =
        api.get(&format!("/v2/call_records?from={}&to={}", url_encode(&rfc3339(t0)), url_encode(&rfc3339(t3)))).await;
    assert_eq!(code, 200, "{b}");
    assert_eq!(b["meta"]["total_results"], 3, "{b}");
    let r = &b["data"][2];
    assert_eq!(r["record_type"], "call_record");
    assert_eq!(r["call_session_id"], oldest["call_session_id"]);
    assert_eq!(
        (r["connection_id"].as_str(), r["direction"].as_str(), r["state"].as_str()),
        (Some("pbx"), Some("incoming"), Some("ended"))
    );
    assert_eq!((r["from"].as_str(), r["to"].as_str()), (Some("+14155550123"), Some("+13125550100")));
    assert_eq!(r["hangup_source"], "caller");
    assert_eq!(r["recording_ids"], json!([id]));
    assert!(r["duration_secs"].as_u64().is_some_and(|s| (1..=4).contains(&s)), "{r}");
    // About 1.5 s of media: the point taken when the media stopped (and one at
    // the first RTCP report, 2.5 s in, on a slow machine), the whole tone in them.
    let samples = &r["quality_samples"];
    assert_eq!(samples["interval"], "rtcp", "{r}");
    let points = samples["points"].as_array().unwrap();
    assert!((1..=2).contains(&points.len()), "{samples}");
    let last = points.last().unwrap()["t_ms"].as_u64().unwrap();
    assert!((1200..=4000).contains(&last), "{samples}");
    let packets: u64 = points.iter().map(|p| p["packets"].as_u64().unwrap()).sum();
    assert!((60..=80).contains(&packets), "1.5 s of 20 ms packets: {samples}");
    for p in points {
        assert_eq!((p["loss_percent"].as_f64(), p["jitter_ms"].is_number()), (Some(0.0), true), "{samples}");
    }
    let (_, b) = api.get(&format!("/v2/call_records?from={since}")).await;
    assert_eq!(b["meta"]["total_results"], 2);
    let (_, b) = api.get(&format!("/v2/call_records?to={since}&trunk=pbx")).await;
    assert_eq!(b["data"].as_array().unwrap().len(), 1);
    assert_eq!(b["data"][0]["recording_ids"], json!([id]));
    let (_, b) = api.get("/v2/call_records?trunk=branch").await;
    assert_eq!(b["data"][0]["recording_ids"], json!([branch["id"]]));
    let (_, b) = api.get("/v2/call_records?direction=outgoing").await;
    assert_eq!(b["meta"]["total_results"], 0);
    let (_, b) = api.get("/v2/call_records?page[size]=1&page[number]=3").await;
    assert_eq!(b["data"][0]["call_session_id"], oldest["call_session_id"]);
    for (query, parameter) in [
        ("from=noon", "from"),
        ("to=2026-13-01T00:00:00Z", "to"),
        ("from=2026-11-22T08:30:00", "from"),
        ("direction=sideways", "direction"),
        ("trunks=pbx", "trunks"),
    ] {
        let (code, e) = api.get(&format!("/v2/call_records?{query}")).await;
        assert_eq!((code, e["errors"][0]["source"]["parameter"].as_str()), (400, Some(parameter)), "{query}: {e}");
    }
    let (code, e) = api.get(&format!("/v2/call_records?from={}&to={since}", url_encode(&rfc3339(t3)))).await;
    assert_eq!((code, e["errors"][0]["source"]["parameter"].as_str()), (400, Some("to")), "{e}");

    // 401 without the token on every new route.
    for (method, path) in [
        (reqwest::Method::GET, "/v2/recordings".to_string()),
        (reqwest::Method::GET, format!("/v2/recordings/{id}")),
        (reqwest::Method::GET, format!("/v2/recordings/{id}.wav")),
        (reqwest::Method::DELETE, format!("/v2/recordings/{id}")),
        (reqwest::Method::GET, "/v2/call_records".to_string()),
    ] {
        let resp = api.request(method.clone(), &path, None).await;
        assert_eq!(resp.status().as_u16(), 401, "{method} {path}");
        let resp = api.request(method.clone(), &path, Some("wrong-token")).await;
        assert_eq!(resp.status().as_u16(), 401, "{method} {path}");
    }
    assert!(Path::new(oldest["file_path"].as_str().unwrap()).exists(), "401 deleted nothing");

    // DELETE: the file goes, the record stays (status deleted), the download is 404.
    let (code, del) = api.delete(&format!("/v2/recordings/{id}")).await;
    assert_eq!(code, 200, "{del}");
    assert_eq!(
        (del["data"]["status"].as_str(), del["data"]["deleted_reason"].as_str()),
        (Some("deleted"), Some("api"))
    );
    assert_eq!(del["data"]["download_urls"], json!({}));
    assert!(!Path::new(oldest["file_path"].as_str().unwrap()).exists(), "the file is deleted");
    let (code, e) = api.get(&format!("/v2/recordings/{id}.wav")).await;
    assert_eq!(code, 404);
    assert!(e["errors"][0]["detail"].as_str().unwrap().contains("deleted over the API"), "{e}");
    let (code, again) = api.delete(&format!("/v2/recordings/{id}")).await;
    assert_eq!(
        (code, &again["data"]["deleted_at"]),
        (200, &del["data"]["deleted_at"]),
        "a second DELETE changes nothing"
    );

    // A file removed by hand is found missing and marked.
    std::fs::remove_file(branch["file_path"].as_str().unwrap()).unwrap();
    let (code, b) = api.get(&format!("/v2/recordings/{}", branch["id"].as_str().unwrap())).await;
    assert_eq!(code, 200);
    assert_eq!(
        (b["data"]["status"].as_str(), b["data"]["deleted_reason"].as_str()),
        (Some("deleted"), Some("missing"))
    );
    let (_, b) = api.get("/v2/recordings?filter[status]=completed").await;
    assert_eq!(ids(&b), [newest["id"].as_str().unwrap()]);

    // The routes are in the OpenAPI document; /readyz names the listeners.
    let (_, doc) = api.get("/v2/openapi.json").await;
    for p in
        ["/v2/recordings", "/v2/recordings/{recording_id}", "/v2/recordings/{recording_id}.wav", "/v2/call_records"]
    {
        assert!(doc["paths"].get(p).is_some(), "{p} is served but not documented");
    }
    assert!(doc["paths"]["/v2/recordings/{recording_id}"].get("delete").is_some());
    // Every field of a served call record is in the document's CallRecord schema
    // and back.
    let schema = &doc["components"]["schemas"]["CallRecord"]["properties"];
    let documented: Vec<&String> = schema.as_object().unwrap().keys().collect();
    let served: Vec<&String> = r.as_object().unwrap().keys().collect();
    assert_eq!(documented, served, "the CallRecord schema and a served record differ");
    assert_eq!(schema["quality_samples"]["oneOf"][0]["$ref"], "#/components/schemas/QualitySamples", "{schema}");
    let point = &doc["components"]["schemas"]["QualitySamples"]["properties"]["points"]["items"]["properties"];
    let point_fields: Vec<&String> = point.as_object().unwrap().keys().collect();
    let served_point: Vec<&String> = points[0].as_object().unwrap().keys().collect();
    assert_eq!(point_fields, served_point);
    let (code, ready) = api.get("/readyz").await;
    assert_eq!(code, 200, "{ready}");
    assert_eq!(ready["listeners"]["sip"], json!([format!("udp://127.0.0.1:{sip}")]));
    assert_eq!(ready["accepting_calls"], true);
    assert!(ready["recording_disk_free_bytes"].as_u64().is_some_and(|n| n > 0), "{ready}");
    gw.stop();

    // Restarted with a 30 min retention and the last file made 2 h old: the
    // startup sweep deletes it and marks its record (read from the store itself,
    // before the API can look).
    let restarted =
        gateway(dir.path(), sip, api_port, &rec).recording_in(&rec, "channels = \"dual\"\nretention = \"30m\"");
    let newest_file = PathBuf::from(newest["file_path"].as_str().unwrap());
    std::fs::File::options()
        .write(true)
        .open(&newest_file)
        .unwrap()
        .set_modified(SystemTime::now() - Duration::from_secs(7200))
        .unwrap();
    let gw = restarted.start();
    let db = rusqlite::Connection::open(dir.path().join("data/sipbridge.db")).unwrap();
    let deadline = Instant::now() + WAIT;
    let reason = loop {
        let reason: Option<String> = db
            .query_row(
                "SELECT deleted_reason FROM recordings WHERE recording_id = ?1",
                [newest["id"].as_str().unwrap()],
                |r| r.get(0),
            )
            .unwrap();
        if let Some(r) = reason {
            break r;
        }
        assert!(
            Instant::now() < deadline,
            "the sweep did not mark the record (file still there: {}): {}",
            newest_file.exists(),
            gw.stderr()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(reason, "retention");
    assert!(!newest_file.exists());
    let (_, b) = api.get(&format!("/v2/recordings/{}", newest["id"].as_str().unwrap())).await;
    assert_eq!(
        (b["data"]["status"].as_str(), b["data"]["deleted_reason"].as_str()),
        (Some("deleted"), Some("retention"))
    );
    let (_, b) = api.get("/v2/recordings").await;
    assert_eq!(b["meta"]["total_results"], 3, "records stay when files go");
    gw.stop();
}

fn h_etag(bytes: &[u8]) -> String {
    format!("\"{}\"", sha256_hex(bytes))
}

/// Percent-encodes a query value (`+` and `:` included).
fn url_encode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// A self-signed certificate for 127.0.0.1 made with `openssl`; (cert, key).
fn self_signed(dir: &Path) -> (PathBuf, PathBuf) {
    let (cert, key) = (dir.join("api-cert.pem"), dir.join("api-key.pem"));
    let out = std::process::Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1"])
        .args(["-subj", "/CN=sipbridge.test", "-addext", "subjectAltName=DNS:sipbridge.test,IP:127.0.0.1"])
        .args(["-addext", "basicConstraints=critical,CA:FALSE", "-addext", "extendedKeyUsage=serverAuth", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl (Debian package openssl) makes the test certificate");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    (cert, key)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_over_tls_with_the_event_socket_over_wss() {
    let dir = tempfile::tempdir().unwrap();
    let rec = dir.path().join("rec");
    let (cert, key) = self_signed(dir.path());
    let (sip, api_port) = (free_port(), free_port());
    let tls = format!("tls_certificate = \"{}\"\ntls_private_key = \"{}\"\n", cert.display(), key.display());
    let gw = gateway(dir.path(), sip, api_port, &rec).api_extra(&tls).start();
    let api = Api::tls(api_port, &cert, TOKEN);

    // Plain HTTP on the TLS port gets no HTTP answer; HTTPS needs the token too.
    let plain = reqwest::Client::new().get(format!("http://127.0.0.1:{api_port}/healthz")).send().await;
    assert!(plain.is_err() || !plain.unwrap().status().is_success(), "plain HTTP is not served on the TLS port");
    // A client that connects and never starts its handshake holds up nobody: the
    // next HTTPS request is answered while it sits there (handshake limit 10 s).
    let silent = tokio::net::TcpStream::connect(("127.0.0.1", api_port)).await.unwrap();
    let quick = tokio::time::timeout(Duration::from_secs(5), api.request(reqwest::Method::GET, "/healthz", None)).await;
    assert_eq!(quick.expect("answered beside a silent client").status().as_u16(), 200);
    drop(silent);
    assert_eq!(api.request(reqwest::Method::GET, "/v2/recordings", None).await.status().as_u16(), 401);

    // The event socket over wss, trusting only the test certificate.
    let mut roots = rustls::RootCertStore::empty();
    let pem = std::fs::read(&cert).unwrap();
    for c in <rustls_pki_types::CertificateDer as rustls_pki_types::pem::PemObject>::pem_slice_iter(&pem) {
        roots.add(c.unwrap()).unwrap();
    }
    let client = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", api_port)).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let stream = tokio_rustls::TlsConnector::from(Arc::new(client)).connect(name, tcp).await.expect("TLS handshake");
    let mut req = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(format!(
        "wss://127.0.0.1:{api_port}/v2/events"
    ))
    .unwrap();
    req.headers_mut().insert("Authorization", format!("Bearer {TOKEN}").parse().unwrap());
    let (mut events, _) = tokio_tungstenite::client_async(req, stream).await.expect("event socket over wss");

    call(dir.path(), sip, "127.0.0.1", 1500).await;
    let mut seen = Vec::new();
    let saved = loop {
        let msg = tokio::time::timeout(WAIT, events.next()).await.expect("an event").unwrap().unwrap();
        let v: Value = serde_json::from_str(msg.to_text().unwrap()).unwrap();
        seen.push(v["data"]["event_type"].as_str().unwrap_or_default().to_string());
        if v["data"]["event_type"] == "call.recording.saved" {
            break v["data"]["payload"].clone();
        }
    };
    assert_eq!(seen[..2], ["call.initiated", "call.answered"], "{seen:?}");
    let id = saved["recording_id"].as_str().unwrap();
    let url = format!("https://127.0.0.1:{api_port}/v2/recordings/{id}.wav");
    assert_eq!(saved["recording_urls"]["wav"], url.as_str(), "recording_urls say https with TLS on");

    // The same routes over HTTPS.
    let (code, one) = api.get(&format!("/v2/recordings/{id}")).await;
    assert_eq!(code, 200, "{one}");
    assert_eq!(one["data"]["download_urls"]["wav"], url.as_str());
    assert_eq!(one["data"]["call_control_id"], saved["call_control_id"]);
    let on_disk = std::fs::read(saved["file_path"].as_str().unwrap()).unwrap();
    let (code, h, body) = api.fetch(&url, &[]).await;
    assert_eq!((code, h["content-type"].to_str().unwrap()), (200, "audio/wav"));
    assert!(body == on_disk, "the download over TLS equals the file");
    assert_stereo_wav(&body, one["data"]["duration_millis"].as_u64().unwrap());
    let (code, _, part) = api.fetch(&url, &[("range", "bytes=44-1043")]).await;
    assert_eq!(code, 206);
    assert!(part == on_disk[44..1044]);
    let (code, b) = api.get("/v2/call_records?trunk=pbx").await;
    assert_eq!((code, b["data"][0]["recording_ids"].clone()), (200, json!([id])), "{b}");
    drop(events);
    gw.stop();
}
