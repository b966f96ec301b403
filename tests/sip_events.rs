//! The call model as events: the SIP stack runs in-process (the library the daemon
//! is built from), real SIPp peers call it over loopback, and the test reads the
//! event bus — the same events the webhook outbox and the API consume. Checks the
//! Telnyx event sequence, field names, ids shared across the legs of a forward.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use sipbridge::call::lifecycle::Lifecycle;
use sipbridge::call::{CallEvent, EventBus};
use sipbridge::sip::SipStack;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(30);

async fn stack(dir: &std::path::Path, config: &str) -> (SipStack, EventBus) {
    let path = dir.join("sipbridge.toml");
    std::fs::write(&path, config).unwrap();
    let cfg = sipbridge::config::load_with_env(&path, Vec::new()).unwrap().config;
    let (tx, rx) = watch::channel(Arc::new(cfg));
    std::mem::forget(tx); // keep the config channel open for the stack's lifetime
    let events = EventBus::new();
    let services = sipbridge::call::services::CallServices::new(
        rx,
        events.clone(),
        sipbridge::call::control::CallRegistry::default(),
        CancellationToken::new(),
    )
    .unwrap();
    let s = SipStack::start(services, Lifecycle::new(10)).await.unwrap();
    (s, events)
}

async fn collect(
    rx: &mut tokio::sync::broadcast::Receiver<Arc<CallEvent>>,
    until_hangups: usize,
) -> Vec<Arc<CallEvent>> {
    let mut out = Vec::new();
    let mut hangups = 0;
    while hangups < until_hangups {
        let ev = tokio::time::timeout(WAIT, rx.recv()).await.expect("events in time").unwrap();
        if ev.event_type == "call.hangup" {
            hangups += 1;
        }
        out.push(ev);
    }
    out
}

fn s<'a>(ev: &'a CallEvent, key: &str) -> &'a str {
    ev.payload
        .get(key)
        .and_then(|v| v.as_str())
        .unwrap_or_else(|| panic!("{} lacks {key}: {:?}", ev.event_type, ev.payload))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inbound_call_emits_initiated_answered_hangup_with_telnyx_fields() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let (stack, events) = stack(
        dir.path(),
        &format!(
            "[sip]\nlisten = [\"udp://127.0.0.1:{port}\"]\n[rtp]\nport_range = \"40000-49999\"\n[[trunk]]\nname = \"telnyx-ip\"\ninbound_allow = [\"127.0.0.2/32\"]\n[[agent]]\nname = \"echo\"\nurl = \"builtin:echo\"\n[[route]]\nagent = \"echo\"\n"
        ),
    )
    .await;
    let mut rx = events.subscribe();
    let d = dir.path().to_path_buf();
    let target = format!("127.0.0.1:{port}");
    let sipp = tokio::task::spawn_blocking(move || {
        let mut s =
            Sipp::start(&d, "call", &sipp_args("uac_telnyx.xml", "+13125550100", &target, "127.0.0.2", &["-t", "u1"]));
        (s.wait(WAIT), s.report())
    });
    let evs = collect(&mut rx, 1).await;
    let (code, report) = sipp.await.unwrap();
    assert_eq!(code, 0, "{report}");
    let types: Vec<&str> = evs.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(types, ["call.initiated", "call.answered", "call.hangup"]);
    let (init, hang) = (&evs[0], &evs[2]);
    for e in &evs {
        assert_eq!(s(e, "call_control_id"), s(init, "call_control_id"));
        assert_eq!(s(e, "connection_id"), "telnyx-ip");
        assert_eq!(s(e, "direction"), "incoming");
        assert_eq!(s(e, "from"), "+14155550123");
        assert_eq!(s(e, "to"), "+13125550100");
        assert_eq!(e.call_session_id.as_deref(), Some(s(init, "call_session_id")));
        assert!(uuid::Uuid::parse_str(s(e, "call_leg_id")).is_ok());
    }
    assert_eq!(s(init, "state"), "parked");
    let headers = init.payload["custom_headers"].as_array().unwrap();
    assert!(headers.iter().any(|h| h["name"] == "X-Telnyx-Session-Id"), "{headers:?}");
    assert_eq!(s(hang, "hangup_cause"), "normal_clearing");
    assert_eq!(s(hang, "hangup_source"), "caller");
    assert_eq!(s(hang, "sip_hangup_cause"), "200");
    assert!(s(hang, "end_time") >= s(hang, "start_time"));
    assert!(hang.payload["call_quality_stats"].is_object(), "media ran: {:?}", hang.payload);
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forwarded_call_has_two_legs_in_one_session_and_is_bridged() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let b_port = free_port();
    let (stack, events) = stack(
        dir.path(),
        &format!(
            "[sip]\nlisten = [\"udp://127.0.0.1:{port}\"]\n[rtp]\nport_range = \"40000-49999\"\n[[trunk]]\nname = \"livekit\"\ninbound_allow = [\"127.0.0.2/32\"]\n[[trunk]]\nname = \"telnyx\"\nproxy = \"sip:127.0.0.3:{b_port}\"\n[[route]]\nforward = \"telnyx\"\n"
        ),
    )
    .await;
    let mut rx = events.subscribe();
    let d = dir.path().to_path_buf();
    let target = format!("127.0.0.1:{port}");
    let peers = tokio::task::spawn_blocking(move || {
        let media = free_even_block(4).to_string();
        let uas_args: Vec<String> = [
            "-sf",
            &scenario("uas_answer.xml").display().to_string(),
            "-i",
            "127.0.0.3",
            "-p",
            &b_port.to_string(),
            "-mp",
            &media,
            "-m",
            "1",
            "-t",
            "u1",
            "-timeout",
            "30s",
            "-timeout_error",
        ]
        .iter()
        .map(|x| x.to_string())
        .collect();
        let mut b = Sipp::start(&d, "b", &uas_args);
        let mut a =
            Sipp::start(&d, "a", &sipp_args("uac_call.xml", "+13125550100", &target, "127.0.0.2", &["-t", "u1"]));
        (a.wait(WAIT), b.wait(WAIT), a.report(), b.report())
    });
    let evs = collect(&mut rx, 2).await;
    let (ca, cb, ra, rb) = peers.await.unwrap();
    assert_eq!((ca, cb), (0, 0), "{ra}\n{rb}");
    let incoming: Vec<&Arc<CallEvent>> = evs.iter().filter(|e| s(e, "direction") == "incoming").collect();
    let outgoing: Vec<&Arc<CallEvent>> = evs.iter().filter(|e| s(e, "direction") == "outgoing").collect();
    let t = |v: &[&Arc<CallEvent>]| v.iter().map(|e| e.event_type.clone()).collect::<Vec<_>>();
    assert_eq!(t(&incoming), ["call.initiated", "call.answered", "call.bridged", "call.hangup"]);
    assert_eq!(t(&outgoing), ["call.initiated", "call.answered", "call.hangup"]);
    let session = s(incoming[0], "call_session_id");
    assert!(evs.iter().all(|e| s(e, "call_session_id") == session), "both legs share the session");
    assert_ne!(s(incoming[0], "call_leg_id"), s(outgoing[0], "call_leg_id"));
    assert_eq!(s(outgoing[0], "connection_id"), "telnyx");
    assert_eq!(s(outgoing[0], "state"), "bridging");
    assert_eq!(s(incoming[2], "bridged_call_control_id"), s(outgoing[0], "call_control_id"));
    stack.stop().await;
}

/// Datagrams in a classic pcap file (24-byte global header, 16-byte record
/// headers; the SIPp pcaps hold one RTP packet per record).
fn pcap_records(path: &str) -> u64 {
    let d = std::fs::read(path).unwrap();
    let (mut off, mut n) = (24usize, 0u64);
    while off + 16 <= d.len() {
        let incl = u32::from_le_bytes(d[off + 8..off + 12].try_into().unwrap()) as usize;
        off += 16 + incl;
        n += 1;
    }
    n
}

/// SIPp's uac_pcap (G.711 A-law speech, then an RFC 2833 digit) through a forward
/// route to a SIPp UAS echoing RTP: every packet crosses the relay both ways
/// (counts equal, zero loss on loopback) and the digit is detected exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pcap_audio_and_dtmf_cross_a_forward_route_without_loss() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("pcap")).unwrap();
    for f in ["g711a.pcap", "dtmf_2833_1.pcap"] {
        std::fs::copy(format!("/usr/share/sip-tester/{f}"), dir.path().join("pcap").join(f)).unwrap();
    }
    let sent =
        pcap_records("/usr/share/sip-tester/g711a.pcap") + pcap_records("/usr/share/sip-tester/dtmf_2833_1.pcap");
    let port = free_port();
    let b_port = free_port();
    let (stack, events) = stack(
        dir.path(),
        &format!(
            "[sip]\nlisten = [\"udp://127.0.0.1:{port}\"]\n[rtp]\nport_range = \"40000-49999\"\n[[trunk]]\nname = \"a\"\ninbound_allow = [\"127.0.0.2/32\"]\n[[trunk]]\nname = \"b\"\nproxy = \"sip:127.0.0.3:{b_port}\"\n[[route]]\nforward = \"b\"\n"
        ),
    )
    .await;
    let mut rx = events.subscribe();
    let d = dir.path().to_path_buf();
    let target = format!("127.0.0.1:{port}");
    let peers = tokio::task::spawn_blocking(move || {
        let media = free_even_block(4).to_string();
        let uas_args: Vec<String> = [
            "-sf",
            &scenario("uas_answer.xml").display().to_string(),
            "-i",
            "127.0.0.3",
            "-p",
            &b_port.to_string(),
            "-mp",
            &media,
            "-rtp_echo",
            "-m",
            "1",
            "-t",
            "u1",
            "-timeout",
            "40s",
            "-timeout_error",
        ]
        .iter()
        .map(|x| x.to_string())
        .collect();
        let mut b = Sipp::start(&d, "echo", &uas_args);
        let a_media = free_even_block(4).to_string();
        let a_args: Vec<String> = [
            "-sn",
            "uac_pcap",
            "-s",
            "+13125550100",
            &target,
            "-i",
            "127.0.0.2",
            "-p",
            &free_port().to_string(),
            "-mp",
            &a_media,
            "-m",
            "1",
            "-t",
            "u1",
            "-timeout",
            "40s",
            "-timeout_error",
        ]
        .iter()
        .map(|x| x.to_string())
        .collect();
        let mut a = Sipp::start(&d, "pcap", &a_args);
        (a.wait(Duration::from_secs(45)), b.wait(Duration::from_secs(45)), a.report(), b.report())
    });
    let evs = collect(&mut rx, 2).await;
    let (ca, cb, ra, rb) = peers.await.unwrap();
    assert_eq!((ca, cb), (0, 0), "{ra}\n{rb}");
    let hangup = |dir: &str| {
        evs.iter().find(|e| e.event_type == "call.hangup" && s(e, "direction") == dir).unwrap().payload["call_quality_stats"]
            .clone()
    };
    let (qa, qb) = (hangup("incoming"), hangup("outgoing"));
    let count = |q: &serde_json::Value, k: &str| q["inbound"][k].as_str().unwrap().parse::<u64>().unwrap();
    assert_eq!(count(&qa, "packet_count"), sent, "every packet from the caller arrived: {qa}");
    assert_eq!(count(&qa, "skip_packet_count"), 0, "{qa}");
    assert_eq!(count(&qb, "packet_count"), sent, "every relayed packet came back from the echo: {qb}");
    assert_eq!(count(&qb, "skip_packet_count"), 0, "{qb}");
    assert_eq!(qa["outbound"]["packet_count"], serde_json::json!(sent.to_string()), "{qa}");
    let digits: Vec<String> = evs
        .iter()
        .filter(|e| e.event_type == "call.dtmf.received" && s(e, "direction") == "incoming")
        .map(|e| s(e, "digit").to_string())
        .collect();
    assert_eq!(digits, ["1"], "one key press, one digit");
    stack.stop().await;
}

/// A recorded call to the echo agent: SIPp plays G.711 speech; the stereo WAV has
/// the caller's speech on the left and the echo on the right, spans the call, and
/// `call.recording.saved` describes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recorded_echo_call_leaves_a_stereo_wav_and_an_event() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("pcap")).unwrap();
    for f in ["g711a.pcap", "dtmf_2833_1.pcap"] {
        std::fs::copy(format!("/usr/share/sip-tester/{f}"), dir.path().join("pcap").join(f)).unwrap();
    }
    let port = free_port();
    let rec_dir = dir.path().join("recordings");
    let (stack, events) = stack(
        dir.path(),
        &format!(
            "[sip]\nlisten = [\"udp://127.0.0.1:{port}\"]\n[rtp]\nport_range = \"40000-49999\"\n[[trunk]]\nname = \"local\"\ninbound_allow = [\"127.0.0.2/32\"]\n[[agent]]\nname = \"echo\"\nurl = \"builtin:echo\"\n[[route]]\nagent = \"echo\"\nrecord = true\n[recording]\n# a size, not a share of whatever else fills the test machine's disk\nmax_disk_usage = \"4GiB\"\ndir = \"{}\"\nchannels = \"dual\"\n",
            rec_dir.display()
        ),
    )
    .await;
    let mut rx = events.subscribe();
    let d = dir.path().to_path_buf();
    let target = format!("127.0.0.1:{port}");
    let caller = tokio::task::spawn_blocking(move || {
        let a_args: Vec<String> = [
            "-sn",
            "uac_pcap",
            "-s",
            "echo",
            &target,
            "-i",
            "127.0.0.2",
            "-p",
            &free_port().to_string(),
            "-mp",
            &free_even_block(4).to_string(),
            "-m",
            "1",
            "-t",
            "u1",
            "-timeout",
            "40s",
            "-timeout_error",
        ]
        .iter()
        .map(|x| x.to_string())
        .collect();
        let mut a = Sipp::start(&d, "pcap", &a_args);
        (a.wait(Duration::from_secs(45)), a.report())
    });
    let mut evs = collect(&mut rx, 1).await;
    // The recording event follows the hangup.
    let saved = tokio::time::timeout(WAIT, rx.recv()).await.expect("call.recording.saved in time").unwrap();
    evs.push(saved.clone());
    let (code, report) = caller.await.unwrap();
    assert_eq!(code, 0, "{report}");
    assert_eq!(saved.event_type, "call.recording.saved");
    assert_eq!(s(&saved, "channels"), "dual");
    assert_eq!(s(&saved, "call_session_id"), s(&evs[0], "call_session_id"));
    let wav_url = saved.payload["recording_urls"]["wav"].as_str().unwrap();
    assert!(wav_url.starts_with("http://127.0.0.1:8080/v2/recordings/") && wav_url.ends_with(".wav"), "{wav_url}");
    let path = std::path::PathBuf::from(s(&saved, "file_path"));
    assert!(path.starts_with(&rec_dir) && path.exists(), "{path:?}");

    let mut r = hound::WavReader::open(&path).unwrap();
    let spec = r.spec();
    assert_eq!((spec.channels, spec.sample_rate, spec.bits_per_sample), (2, 8000, 16));
    let samples: Vec<i16> = r.samples::<i16>().map(|x| x.unwrap()).collect();
    let frames = samples.len() / 2;
    let hangup = evs.iter().find(|e| e.event_type == "call.hangup").unwrap();
    let t = |k: &str| humantime::parse_rfc3339(s(hangup, k)).unwrap();
    let span = t("end_time").duration_since(t("start_time")).unwrap_or_default();
    let secs = frames as f64 / 8000.0;
    assert!(secs > 5.0 && secs <= span.as_secs_f64() + 0.5, "{secs} s of audio for a {span:?} call");
    let rms = |ch: usize| {
        let v: Vec<f64> = samples.iter().skip(ch).step_by(2).map(|&x| f64::from(x)).collect();
        (v.iter().map(|x| x * x).sum::<f64>() / v.len() as f64).sqrt()
    };
    assert!(rms(0) > 300.0, "the caller's speech on the left: rms {}", rms(0));
    assert!(rms(1) > 300.0, "the echo on the right: rms {}", rms(1));
    stack.stop().await;
}
