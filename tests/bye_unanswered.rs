//! A BYE nobody answers, on either side of the box: the caller's, when the box
//! hangs up, and a forwarded call's far end, when the near end hangs up; and a
//! CANCEL nobody answers: the caller's own, passed on to the far end, and the
//! box's, when a dialled number rings out. The box's BYE or CANCEL transaction
//! runs on to Timer F (64·T1 = 32 s, RFC 3261 §17.1.2.2) on its own task; the
//! call does not wait for it. The peer stays silent for a few
//! seconds of mostly idle waiting: these tests live in a binary of their own,
//! which runs beside the others, instead of in `recording.rs` and
//! `e2e_outbound.rs`, whose tests run alone (.config/nextest.toml).
//!
//! What is checked: the recording, `call.hangup`'s `end_time` (and `occurred_at`)
//! end when the call did, not when the unanswered BYE gave up; and `call.hangup`
//! reaches the backend then too, while the BYE or CANCEL is still being
//! retransmitted (before, it waited for that transaction: 32 s).

mod common;
#[path = "e2e/gateway.rs"]
mod gateway;

use std::time::{Duration, SystemTime};

use common::gateway::{Gateway, Route, Trunk, event_type, payload, time};
use common::recorded::{Recorded, speech, start_with_agent};
use common::rtp::script;
use common::scenario;
use common::{Sipp, free_port, sipp_args, sipp_at, sipp_carrier};
use gateway::{e2e_scenario, livekit_and_telnyx, livekit_to_telnyx, start};

/// How long the peer stays silent after taking the box's BYE or CANCEL: that
/// transaction is still running (retransmissions) for all of it. The hangups
/// must arrive within this less 1 s: 0.02–0.03 s on an idle box, and the old
/// code's 32 s stays far outside it on a loaded one.
const SILENT: Duration = Duration::from_secs(6);

/// Asserts that every `call.hangup` reached the webhook receiver (its first
/// delivery) within `within` of `from`: not held until the box's unanswered
/// BYE gives up. Returns the latest arrival, seconds after `from`.
fn hangups_arrived(gw: &Gateway, from: SystemTime, within: Duration) -> f64 {
    let entries = gw.hooks().entries();
    let arrivals: Vec<f64> = entries
        .iter()
        .filter(|e| e["event_type"] == "call.hangup" && e["attempt"].as_u64() == Some(1))
        .map(|e| e["received_at"].as_f64().expect("the receiver stamps each request"))
        .collect();
    assert!(!arrivals.is_empty(), "call.hangup was delivered: {entries:?}");
    let from = from.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs_f64();
    let latest = arrivals.iter().fold(f64::MIN, |a, b| a.max(*b)) - from;
    assert!(
        latest < within.as_secs_f64(),
        "call.hangup reached the backend {latest:.3} s after the call ended, not within {within:?}: \
         it waited for the box's unanswered BYE or CANCEL"
    );
    latest
}

/// The box hangs up (its agent drops the connection; `on_disconnect = hangup`)
/// on a caller that never answers the BYE: the box's BYE transaction runs on
/// (to Timer F, 32 s, unless SIPp's socket closes first), but the recording and
/// `end_time` end when the box decided to hang up, not when its BYE gave up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bye_the_caller_never_answers_does_not_stretch_the_recording_or_the_call() {
    let dir = tempfile::tempdir().unwrap();
    let agent = common::agent::PyAgent::start(dir.path(), "agent", "drop-after", &["--drop-after", "2.0"]);
    let gw = start_with_agent(dir.path(), &agent);
    // uac_agent.xml.in, except that the box's BYE gets no answer: SIPp takes it,
    // lets SILENT of its retransmissions go by (taken as retransmissions, never
    // answered), and ends without a word.
    let template = std::fs::read_to_string(scenario("uac_agent.xml.in")).unwrap();
    let box_bye = "  <label id=\"box_bye\"/>\n";
    assert!(template.contains(box_bye), "uac_agent.xml.in has a box_bye branch");
    let silence = format!("  <pause milliseconds=\"{}\" next=\"end\"/>\n", SILENT.as_millis());
    let xml = template.replace("@HOLD_MS@", "8000").replace(box_bye, &format!("{box_bye}{silence}"));
    let audio: Vec<i16> = speech().into_iter().take(4 * 8000).collect();
    let (d, port) = (dir.path().to_path_buf(), gw.sip_port);
    let (code, report, _) = tokio::task::spawn_blocking(move || {
        let callers = ["+14155550123".to_string()];
        common::rtp::place_calls_in(
            &d,
            port,
            "127.0.0.1",
            "+13125550100",
            &xml,
            vec![script(audio, vec![], 4000, 4300)],
            &callers,
        )
    })
    .await
    .unwrap();
    assert_eq!(code, 0, "SIPp took the box's BYE: {report}");
    let rec = Recorded::of_the_call(&gw, dir.path(), false).await;
    let (file, event, sipp, _) = rec.check_duration();
    // SIPp got the box's BYE at `rec.bye` and stayed silent for SILENT after it.
    let delivered = hangups_arrived(&gw, rec.bye, SILENT - Duration::from_secs(1));
    eprintln!(
        "unanswered BYE: file {file:.4} s, event span {event:.4} s, SIPp ACK → box's BYE {sipp:.4} s, \
         call.hangup delivered {delivered:.3} s after SIPp got the BYE"
    );
    let bodies = gw.events("streaming.failed", |b| b.iter().any(|x| event_type(x) == "streaming.failed")).await;
    assert!(bodies.iter().any(|b| event_type(b) == "streaming.failed"), "the agent dropped");
    gw.stop();
}

/// LiveKit hangs up a forwarded call and Telnyx never answers the box's BYE
/// (its retransmissions go on to Timer F, 32 s): each leg's `call.hangup` still
/// ends at LiveKit's BYE (`end_time`, and `occurred_at` the same), and so does
/// the call's recording; and both `call.hangup`s reach the backend while the
/// far leg's BYE is still unanswered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bye_the_far_end_never_answers_stretches_neither_legs_end_nor_the_recording() {
    let dir = tempfile::tempdir().unwrap();
    let telnyx_port = free_port();
    let gw = start(dir.path(), &livekit_to_telnyx(telnyx_port));
    // uas_answer.xml, except that the box's BYE gets no answer: SIPp takes it,
    // lets SILENT of its retransmissions go by, and ends without a word.
    let uas = std::fs::read_to_string(scenario("uas_answer.xml")).unwrap();
    let after_bye = uas.split_once("<recv request=\"BYE\"/>").expect("uas_answer.xml takes a BYE").0;
    let silent = format!(
        "{after_bye}<recv request=\"BYE\"/>\n  <pause milliseconds=\"{}\"/>\n  \
         <Reference variables=\"ruri\"/>\n</scenario>\n",
        SILENT.as_millis()
    );
    let b_sf = dir.path().join("uas_silent_bye.xml");
    std::fs::write(&b_sf, silent).unwrap();
    let a_sf = e2e_scenario("uac_livekit_bye.xml");
    let (a, b) = livekit_and_telnyx(dir.path(), &gw, &a_sf, &b_sf, telnyx_port).await;
    assert_eq!(a.0, 0, "LiveKit's scenario passed: {}\n{}", a.1.report(), gw.daemon.stderr());
    assert_eq!(b.0, 0, "Telnyx took the box's BYE and stayed silent: {}\n{}", b.1.report(), gw.daemon.stderr());
    let livekit_bye = common::sipp_at(&a.1.messages(), true, "BYE ");
    let telnyx_got_bye = common::sipp_at(&b.1.messages(), false, "BYE ");

    let bodies = gw
        .unique_events("both legs' hangups and the recording", |b| {
            b.iter().filter(|x| event_type(x) == "call.hangup").count() == 2
                && b.iter().any(|x| event_type(x) == "call.recording.saved")
        })
        .await;
    // The box's time to act on the BYE (tens of ms on a loaded CI box); a leg's
    // end that waited for the unanswered BYE would be seconds late.
    let (slack, s) = (Duration::from_millis(20), Duration::from_secs(1));
    for hangup in bodies.iter().filter(|b| event_type(b) == "call.hangup") {
        let (leg, end) = (payload(hangup)["direction"].clone(), time(payload(hangup), "end_time"));
        assert_eq!(time(&hangup["data"], "occurred_at"), end, "{leg} leg: call.hangup occurred at its end_time");
        assert!(
            end >= livekit_bye - slack && end < livekit_bye + s,
            "{leg} leg's end_time {end:?} is at LiveKit's BYE {livekit_bye:?}, not after the far leg's BYE"
        );
    }
    // Telnyx got the box's BYE right after LiveKit's, and stayed silent for SILENT.
    let delivered = hangups_arrived(&gw, livekit_bye, SILENT - Duration::from_secs(1));
    let saved = payload(bodies.iter().find(|b| event_type(b) == "call.recording.saved").unwrap());
    let ended = time(saved, "recording_ended_at");
    assert!(
        ended >= livekit_bye - slack && ended < livekit_bye + s,
        "the recording ends at LiveKit's BYE {livekit_bye:?}, not {ended:?}"
    );
    eprintln!(
        "unanswered BYE to the far end: LiveKit's BYE {livekit_bye:?}; Telnyx got the box's {:.3} s later; \
         the recording ended {:.3} s after LiveKit's BYE; both call.hangup delivered within {delivered:.3} s",
        telnyx_got_bye.duration_since(livekit_bye).map_or(-1.0, |d| d.as_secs_f64()),
        ended.duration_since(livekit_bye).map_or(-1.0, |d| d.as_secs_f64()),
    );
    gw.stop();
}

/// A carrier at 127.0.0.3:`port` that rings (180), takes the box's CANCEL and
/// then says nothing for [`SILENT`]: no 200 to the CANCEL, no 487 to the INVITE
/// (`uas_ring_cancelled.xml` up to its CANCEL).
fn silent_on_cancel(dir: &std::path::Path, name: &str, port: u16) -> Sipp {
    let ring = std::fs::read_to_string(scenario("uas_ring_cancelled.xml")).unwrap();
    let take_cancel = "<recv request=\"CANCEL\"/>";
    let head = ring.split_once(take_cancel).expect("uas_ring_cancelled.xml takes a CANCEL").0;
    let xml = format!("{head}{take_cancel}\n  <pause milliseconds=\"{}\"/>\n</scenario>\n", SILENT.as_millis());
    let sf = dir.join(format!("{name}.xml"));
    std::fs::write(&sf, xml).unwrap();
    sipp_carrier(dir, name, sf.to_str().unwrap(), port)
}

/// The caller gives up while a forwarded call rings, and the far carrier never
/// answers the box's CANCEL: the caller's CANCEL is answered (200, 487) and
/// both legs' `call.hangup` reach the backend while the box's CANCEL is still
/// unanswered, not when its transaction gives up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_the_far_end_never_answers_does_not_hold_the_call() {
    let dir = tempfile::tempdir().unwrap();
    let b_port = free_port();
    let gw = Gateway::builder(dir.path())
        .trunk(Trunk::new("carrier-a").allow("127.0.0.2/32"))
        .trunk(Trunk::new("carrier-b").proxy(&format!("sip:127.0.0.3:{b_port}")).allow("127.0.0.3/32"))
        .route(Route::new().name("a to b").trunk("carrier-a").extra("forward = \"carrier-b\""))
        .webhooks("")
        .start();
    let mut b = silent_on_cancel(dir.path(), "b-silent", b_port);
    let target = format!("127.0.0.1:{}", gw.sip_port);
    let mut a = Sipp::start(
        dir.path(),
        "a-cancel",
        &sipp_args("uac_cancel.xml", "+13125550100", &target, "127.0.0.2", &["-t", "u1"]),
    );
    let wait = Duration::from_secs(30);
    let (a_code, a, b_code, b) = tokio::task::spawn_blocking(move || (a.wait(wait), a, b.wait(wait), b)).await.unwrap();
    assert_eq!(a_code, 0, "the caller's CANCEL was answered: {}\n{}", a.report(), gw.stderr());
    assert_eq!(b_code, 0, "the far end took the box's CANCEL: {}\n{}", b.report(), gw.stderr());
    let cancelled = sipp_at(&b.messages(), false, "CANCEL ");
    gw.unique_events("both legs' hangups", |b| b.iter().filter(|x| event_type(x) == "call.hangup").count() == 2).await;
    let delivered = hangups_arrived(&gw, cancelled, SILENT - Duration::from_secs(1));
    eprintln!("unanswered CANCEL to the far end: both call.hangup delivered within {delivered:.3} s of it");
    gw.stop();
}

/// A call the box dials (`POST /v2/calls`, `timeout_secs`) rings out and the
/// carrier never answers the box's CANCEL: `call.hangup` reaches the backend
/// when the ring limit is reached, not when the CANCEL's transaction gives up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dialled_call_that_rings_out_ends_without_waiting_for_its_cancel() {
    const TOKEN: &str = "test-token";
    let dir = tempfile::tempdir().unwrap();
    let b_port = free_port();
    let gw = Gateway::builder(dir.path())
        .trunk(Trunk::new("carrier").proxy(&format!("sip:127.0.0.3:{b_port}")))
        .agent("echo", "builtin:echo", "")
        .route(Route::new().agent("echo"))
        .webhooks("")
        .api(TOKEN)
        .start();
    let mut b = silent_on_cancel(dir.path(), "b-ring", b_port);
    let dial = serde_json::json!({
        "connection_id": "carrier", "to": "+13125550100", "from": "+14155550123", "timeout_secs": 5,
    });
    let (code, call) = gw.api().post("/v2/calls", dial).await;
    assert_eq!(code, 200, "{call}");
    let (b_code, b) = tokio::task::spawn_blocking(move || (b.wait(Duration::from_secs(30)), b)).await.unwrap();
    assert_eq!(b_code, 0, "the carrier rang and took the box's CANCEL: {}\n{}", b.report(), gw.stderr());
    let cancelled = sipp_at(&b.messages(), false, "CANCEL ");
    let bodies = gw.unique_events("the hangup", |b| b.iter().any(|x| event_type(x) == "call.hangup")).await;
    let hangup = bodies.iter().find(|x| event_type(x) == "call.hangup").unwrap();
    assert_eq!(payload(hangup)["hangup_cause"], "no_answer", "{hangup}");
    let delivered = hangups_arrived(&gw, cancelled, SILENT - Duration::from_secs(1));
    eprintln!("unanswered CANCEL after the ring limit: call.hangup delivered {delivered:.3} s after it");
    gw.stop();
}
