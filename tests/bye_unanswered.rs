//! A BYE nobody answers, on either side of the box: the caller's, when the box
//! hangs up, and a forwarded call's far end, when the near end hangs up. The box's
//! BYE transaction runs on to Timer F (64·T1 = 32 s, RFC 3261 §17.1.2.2) on its
//! own task; the call does not wait for it. The peer stays silent for a few
//! seconds of mostly idle waiting: these tests live in a binary of their own,
//! which runs beside the others, instead of in `recording.rs` and
//! `e2e_outbound.rs`, whose tests run alone (.config/nextest.toml).
//!
//! What is checked: the recording, `call.hangup`'s `end_time` (and `occurred_at`)
//! end when the call did, not when the unanswered BYE gave up; and `call.hangup`
//! reaches the backend then too, while the BYE is still being retransmitted
//! (before, it waited for the BYE's transaction: 32 s).

mod common;
#[path = "e2e/gateway.rs"]
mod gateway;

use std::time::{Duration, SystemTime};

use common::free_port;
use common::gateway::{Gateway, event_type, payload, time};
use common::recorded::{Recorded, speech, start_with_agent};
use common::rtp::script;
use common::scenario;
use gateway::{e2e_scenario, livekit_and_telnyx, livekit_to_telnyx, start};

/// How long the peer stays silent after taking the box's BYE: the BYE's
/// transaction is still running (retransmissions) for all of it.
const SILENT: Duration = Duration::from_secs(4);

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
         it waited for the box's unanswered BYE"
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
    // lets 4 s of its retransmissions go by (taken as retransmissions, never
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
    // lets 4 s of its retransmissions go by, and ends without a word.
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
    // end that waited for the unanswered BYE would be 4 s or more late.
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
