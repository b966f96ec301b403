//! Deterministic tests of the call core (quinn-proto's `Pair`/`step` shape): the
//! core between simulated SIP peers on a fake clock, no socket, no task.
//!
//! A [`Pair`] holds the core and what each leg's peer does with the SIP the core
//! sends (an ACK after our 200 OK, 200 to BYE, 487 after CANCEL); `step` runs
//! until nothing moves, `advance` moves the clock to the next timer.

use std::time::{Duration, Instant, SystemTime};

use super::core::*;
use crate::call::control::{Action, ActionError};
use crate::call::{CallEvent, CallIds, CallInfo, CallState, Direction, HangupCause, HangupSource};

fn info(direction: Direction, name: &str) -> CallInfo {
    CallInfo {
        ids: CallIds::new_session(),
        direction,
        from: "+15550001".into(),
        to: "+15550002".into(),
        connection_id: name.into(),
        sip_call_id: format!("{name}@test"),
        start_time: SystemTime::UNIX_EPOCH,
        client_state: None,
        custom_headers: vec![],
        webhook_url: None,
    }
}

/// How a simulated peer answers the box's SIP.
#[derive(Clone, Copy, PartialEq, Eq)]
enum PeerMode {
    /// Acknowledges and completes whatever the box sends.
    Cooperative,
    /// Sends nothing back (a peer that vanished).
    Silent,
}

struct Pair {
    core: CallCore,
    now: Instant,
    near_mode: PeerMode,
    /// Everything the core output, in order.
    sip: Vec<(LegId, SipOut)>,
    media: Vec<MediaOut>,
    events: Vec<CallEvent>,
    views: Vec<&'static str>,
    ended: bool,
    pending: Vec<Input>,
}

impl Pair {
    fn inbound(plan: Plan, answer: Answer, session_expires: Option<u64>) -> Self {
        let now = Instant::now();
        let setup = Setup { info: info(Direction::Incoming, "near"), role: Role::Uas, plan, answer, session_expires };
        Self::with(CallCore::new(setup, now), now)
    }

    fn dialled() -> Self {
        let now = Instant::now();
        let setup = Setup {
            info: info(Direction::Outgoing, "near"),
            role: Role::Uac,
            plan: Plan::Terminate,
            answer: Answer::Now,
            session_expires: None,
        };
        Self::with(CallCore::new(setup, now), now)
    }

    fn forward() -> Self {
        let mut p = Self::inbound(Plan::Forward, Answer::ByFarLeg, None);
        p.core.add_far(info(Direction::Outgoing, "far"));
        p
    }

    fn with(core: CallCore, now: Instant) -> Self {
        Self::with_mode(core, now, PeerMode::Cooperative)
    }

    fn with_mode(core: CallCore, now: Instant, near_mode: PeerMode) -> Self {
        let mut p = Self {
            core,
            now,
            near_mode,
            sip: vec![],
            media: vec![],
            events: vec![],
            views: vec![],
            ended: false,
            pending: vec![],
        };
        p.step();
        p
    }

    fn input(&mut self, input: Input) {
        self.pending.push(input);
        self.step();
    }

    fn dialog(&mut self, leg: LegId, d: DialogInput) {
        self.input(Input::Dialog(leg, d));
    }

    fn action(&mut self, a: Action) -> Result<Option<Action>, ActionError> {
        let r = self.core.action(self.now, a);
        self.step();
        r
    }

    /// Runs inputs and outputs until both are exhausted; the peers react to SIP.
    fn step(&mut self) {
        for _ in 0..100 {
            for input in std::mem::take(&mut self.pending) {
                self.core.handle(self.now, input);
            }
            let mut moved = false;
            while let Some(out) = self.core.poll() {
                moved = true;
                match out {
                    Output::Sip(leg, s) => {
                        self.react(leg, &s);
                        self.sip.push((leg, s));
                    }
                    Output::Media(m) => self.media.push(m),
                    Output::Emit(e) => self.events.push(e),
                    Output::ViewState(v) => self.views.push(v),
                    Output::Ended => self.ended = true,
                }
            }
            if !moved && self.pending.is_empty() {
                return;
            }
        }
        panic!("the core never settles");
    }

    /// What the leg's peer does with what the box sent.
    fn react(&mut self, leg: LegId, s: &SipOut) {
        if leg == LegId::Near && self.near_mode == PeerMode::Silent {
            return;
        }
        let t = match (leg, s) {
            // The caller ACKs our 200 OK.
            (LegId::Near, SipOut::Accept { .. }) if self.core.leg_state(LegId::Near) != Some(CallState::Hangup) => {
                Some(DialogInput::Confirmed { session_timer: None })
            }
            (LegId::Near, SipOut::Bye) => Some(DialogInput::Terminated(Termination::UasBye)),
            (_, SipOut::Reject(c)) => Some(DialogInput::Terminated(Termination::Status(*c))),
            (LegId::Far, SipOut::Bye) => Some(DialogInput::Terminated(Termination::UacBye)),
            (LegId::Far, SipOut::Cancel) => Some(DialogInput::Terminated(Termination::UacCancel)),
            (LegId::Near, SipOut::Cancel) => Some(DialogInput::Terminated(Termination::UacCancel)),
            (_, SipOut::Refresh { session_expires }) => {
                Some(DialogInput::Refreshed { session_expires: Some(*session_expires) })
            }
            _ => None,
        };
        if let Some(t) = t {
            self.pending.push(Input::Dialog(leg, t));
        }
    }

    /// Moves the clock to the core's next timer (at most `limit` ahead); true
    /// when a timer fired.
    fn advance(&mut self, limit: Duration) -> bool {
        let Some(at) = self.core.poll_timeout() else {
            self.now += limit;
            return false;
        };
        if at > self.now + limit {
            self.now += limit;
            return false;
        }
        self.now = at.max(self.now);
        self.input(Input::Timeout);
        true
    }

    fn event_types(&self) -> Vec<&str> {
        self.events.iter().map(|e| e.event_type.as_str()).collect()
    }

    fn hangup(&self, leg: LegId) -> (&'static str, &'static str, u16) {
        let h = self.core.hangup(leg).expect("the leg has ended");
        (h.cause.as_str(), h.source.as_str(), h.sip_code)
    }

    fn sent(&self, leg: LegId) -> Vec<&SipOut> {
        self.sip.iter().filter(|(l, _)| *l == leg).map(|(_, s)| s).collect()
    }
}

#[test]
fn an_incoming_call_is_answered_at_once_and_ends_with_the_callers_bye() {
    let mut p = Pair::inbound(Plan::Terminate, Answer::Now, None);
    assert_eq!(p.sent(LegId::Near), [&SipOut::Accept { session_expires: None }]);
    assert_eq!(p.event_types(), ["call.answered"]);
    assert_eq!(p.media, [MediaOut::Start]);
    assert_eq!(p.views, ["answered"]);
    p.dialog(LegId::Near, DialogInput::Terminated(Termination::UacBye));
    assert!(p.ended);
    assert_eq!(p.hangup(LegId::Near), ("normal_clearing", "caller", 200));
    assert_eq!(p.core.poll_timeout(), None);
}

#[test]
fn ring_for_rings_first_then_answers() {
    let mut p = Pair::inbound(Plan::Terminate, Answer::After(Duration::from_secs(3)), None);
    assert_eq!(p.sent(LegId::Near), [&SipOut::Ringing { early_media: false }]);
    assert!(!p.advance(Duration::from_secs(2)), "not before ring_for");
    assert!(p.advance(Duration::from_secs(2)));
    assert_eq!(p.sent(LegId::Near)[1], &SipOut::Accept { session_expires: None });
    assert_eq!(p.core.state(), CallState::Answered);
}

#[test]
fn the_caller_cancels_while_it_rings() {
    let mut p = Pair::inbound(Plan::Terminate, Answer::After(Duration::from_secs(5)), None);
    p.dialog(LegId::Near, DialogInput::Terminated(Termination::UacCancel));
    assert!(p.ended);
    assert_eq!(p.hangup(LegId::Near), ("originator_cancel", "caller", 487));
    // The ring timer is gone with the call: no 200 after the CANCEL.
    assert!(!p.advance(Duration::from_secs(10)));
    assert!(!p.sent(LegId::Near).iter().any(|s| matches!(s, SipOut::Accept { .. })));
}

#[test]
fn cancel_racing_our_200_ends_the_call_once_as_cancelled() {
    // The caller's CANCEL crosses our 200 OK: the caller's peer never ACKs.
    let now = Instant::now();
    let setup = Setup {
        info: info(Direction::Incoming, "near"),
        role: Role::Uas,
        plan: Plan::Terminate,
        answer: Answer::Now,
        session_expires: None,
    };
    let mut p = Pair::with_mode(CallCore::new(setup, now), now, PeerMode::Silent);
    assert_eq!(p.sent(LegId::Near), [&SipOut::Accept { session_expires: None }]);
    p.dialog(LegId::Near, DialogInput::Terminated(Termination::UacCancel));
    // A late ACK-less confirm after the end changes nothing.
    p.dialog(LegId::Near, DialogInput::Confirmed { session_timer: None });
    assert!(p.ended);
    assert_eq!(p.hangup(LegId::Near), ("originator_cancel", "caller", 487));
    assert!(!p.event_types().contains(&"call.answered"));
    assert!(p.media.is_empty(), "no media starts for a cancelled call");
}

#[test]
fn a_parked_call_is_answered_by_the_api() {
    let mut p = Pair::inbound(Plan::Terminate, Answer::Parked(PARK_LIMIT), None);
    assert_eq!(p.sent(LegId::Near), [&SipOut::Ringing { early_media: false }]);
    assert!(matches!(p.action(Action::Answer { stream: None }), Ok(Some(Action::Answer { stream: None }))));
    assert_eq!(p.core.state(), CallState::Answered);
    assert_eq!(p.media, [MediaOut::Start]);
    // Answering twice is refused, as answering an unparked call is.
    assert_eq!(p.action(Action::Answer { stream: None }).unwrap_err().status, 422);
    // The park limit is gone once answered.
    assert!(!p.advance(PARK_LIMIT * 2));
    assert_eq!(p.core.state(), CallState::Answered);
}

#[test]
fn a_parked_call_is_rejected_by_the_api_with_its_code() {
    let mut p = Pair::inbound(Plan::Terminate, Answer::Parked(PARK_LIMIT), None);
    assert!(matches!(p.action(Action::Reject { sip_code: 486 }), Ok(None)));
    assert_eq!(p.sent(LegId::Near)[1], &SipOut::Reject(486));
    assert!(p.ended);
    assert_eq!(p.hangup(LegId::Near), ("user_busy", "callee", 486));
}

#[test]
fn a_parked_call_nobody_answers_gets_480() {
    let mut p = Pair::inbound(Plan::Terminate, Answer::Parked(Duration::from_secs(60)), None);
    assert!(!p.advance(Duration::from_secs(59)));
    assert!(p.advance(Duration::from_secs(2)));
    assert_eq!(p.sent(LegId::Near)[1], &SipOut::Reject(480));
    assert_eq!(p.hangup(LegId::Near), ("no_answer", "callee", 480));
}

#[test]
fn answer_and_reject_only_apply_to_a_parked_ringing_call() {
    let mut p = Pair::inbound(Plan::Terminate, Answer::Now, None);
    for a in [Action::Answer { stream: None }, Action::Reject { sip_code: 603 }] {
        let e = p.action(a).unwrap_err();
        assert_eq!((e.status, e.code), (422, "90015"));
    }
}

#[test]
fn actions_before_answer_and_after_hangup() {
    let mut p = Pair::inbound(Plan::Terminate, Answer::Parked(PARK_LIMIT), None);
    let e = p.action(Action::PlaybackStop).unwrap_err();
    assert_eq!(e.detail, "the call is not answered yet");
    // client_state applies in any state and is in later events.
    assert!(p.action(Action::ClientState(Some("c3RhdGU=".into()))).is_ok());
    p.action(Action::Answer { stream: None }).unwrap();
    assert_eq!(p.events.last().unwrap().payload["client_state"], "c3RhdGU=");
    assert!(matches!(p.action(Action::PlaybackStop), Ok(Some(Action::PlaybackStop))));
    // Hang up while a playback is being loaded: the playback's command, arriving
    // after, is answered "ended" and nothing is sent twice.
    assert!(matches!(p.action(Action::Hangup), Ok(None)));
    assert_eq!(p.action(Action::PlaybackStop).unwrap_err(), ActionError::ended());
    assert!(matches!(p.action(Action::Hangup), Ok(None)), "a second hangup is not an error");
    assert_eq!(p.sent(LegId::Near).iter().filter(|s| **s == &SipOut::Bye).count(), 1);
    assert_eq!(p.hangup(LegId::Near), ("normal_clearing", "callee", 200));
}

#[test]
fn session_timer_refreshed_by_the_caller_keeps_the_call() {
    let mut p = Pair::inbound(Plan::Terminate, Answer::Now, Some(90));
    assert_eq!(p.sent(LegId::Near), [&SipOut::Accept { session_expires: Some(90) }]);
    for _ in 0..3 {
        assert!(!p.advance(Duration::from_secs(60)));
        p.dialog(LegId::Near, DialogInput::Refreshed { session_expires: None });
    }
    assert_eq!(p.core.state(), CallState::Answered);
    // No refresh: BYE when the interval runs out.
    assert!(p.advance(Duration::from_secs(91)));
    assert_eq!(p.sent(LegId::Near).last().unwrap(), &&SipOut::Bye);
    assert_eq!(p.hangup(LegId::Near), ("timeout", "callee", 200));
}

#[test]
fn a_refresh_can_change_or_start_the_interval() {
    let mut p = Pair::inbound(Plan::Terminate, Answer::Now, None);
    assert_eq!(p.core.poll_timeout(), None);
    // re-INVITE (hold) with Session-Expires: the call now has a timer.
    p.dialog(LegId::Near, DialogInput::Refreshed { session_expires: Some(120) });
    assert!(!p.advance(Duration::from_secs(119)));
    // re-INVITE (resume) refreshes it.
    p.dialog(LegId::Near, DialogInput::Refreshed { session_expires: None });
    assert!(!p.advance(Duration::from_secs(119)));
    assert!(p.advance(Duration::from_secs(2)));
    assert_eq!(p.hangup(LegId::Near).0, "timeout");
}

#[test]
fn the_box_refreshes_when_it_is_the_refresher() {
    let mut p = Pair::dialled();
    p.dialog(LegId::Near, DialogInput::Confirmed { session_timer: Some((100, true)) });
    // Refresh at half the interval; the peer's 2xx restarts it (Pair answers).
    for _ in 0..4 {
        assert!(p.advance(Duration::from_secs(51)));
    }
    let refreshes = p.sent(LegId::Near).iter().filter(|s| matches!(s, SipOut::Refresh { .. })).count();
    assert_eq!(refreshes, 4);
    assert_eq!(p.core.state(), CallState::Answered);
}

#[test]
fn pin_three_wrong_entries_hang_up() {
    let mut p = Pair::inbound(Plan::Room { pin: Some("1234".into()) }, Answer::Now, None);
    assert_eq!(p.media, [MediaOut::Start, MediaOut::Prompt(Prompt::EnterPin)]);
    for round in 0..3 {
        for d in "9999".chars() {
            p.input(Input::Media(LegId::Near, MediaInput::Dtmf(d)));
        }
        if round < 2 {
            assert_eq!(p.media.last(), Some(&MediaOut::Prompt(Prompt::WrongPin)));
        }
    }
    assert!(!p.media.contains(&MediaOut::JoinRoom));
    assert_eq!(p.hangup(LegId::Near), ("call_rejected", "callee", 200));
    assert_eq!(p.event_types().iter().filter(|t| **t == "call.dtmf.received").count(), 12);
}

#[test]
fn the_right_pin_joins_the_room() {
    let mut p = Pair::inbound(Plan::Room { pin: Some("1234".into()) }, Answer::Now, None);
    for d in "1234#".chars() {
        p.input(Input::Media(LegId::Near, MediaInput::Dtmf(d)));
    }
    assert_eq!(&p.media[2..], [MediaOut::StopPrompt, MediaOut::JoinRoom]);
    assert!(!p.core.collecting_pin());
    // A full room ends the call as busy.
    p.input(Input::RoomJoinFailed);
    assert_eq!(p.hangup(LegId::Near), ("user_busy", "callee", 200));
}

#[test]
fn pin_entry_times_out_like_a_wrong_entry() {
    let mut p = Pair::inbound(Plan::Room { pin: Some("42".into()) }, Answer::Now, None);
    for _ in 0..3 {
        assert!(p.advance(PIN_WAIT));
    }
    assert_eq!(p.hangup(LegId::Near).0, "call_rejected");
}

#[test]
fn a_room_without_pin_is_joined_at_answer() {
    let p = Pair::inbound(Plan::Room { pin: None }, Answer::Now, None);
    assert_eq!(p.media, [MediaOut::Start, MediaOut::JoinRoom]);
}

#[test]
fn rtp_timeout_agent_failure_and_shutdown_end_the_call() {
    let mut p = Pair::inbound(Plan::Terminate, Answer::Now, None);
    p.input(Input::AgentFailed { hang_up: false });
    assert_eq!(p.core.state(), CallState::Answered, "on_disconnect = continue");
    p.input(Input::Media(LegId::Near, MediaInput::Timeout(Duration::from_secs(30))));
    assert_eq!(p.hangup(LegId::Near), ("timeout", "callee", 200));

    let mut p = Pair::inbound(Plan::Terminate, Answer::Now, None);
    p.input(Input::AgentFailed { hang_up: true });
    assert_eq!(p.hangup(LegId::Near), ("unspecified", "callee", 200));

    let mut p = Pair::inbound(Plan::Terminate, Answer::After(Duration::from_secs(5)), None);
    p.input(Input::Shutdown);
    assert_eq!(p.sent(LegId::Near).last().unwrap(), &&SipOut::Reject(480));
    assert_eq!(p.hangup(LegId::Near), ("normal_clearing", "callee", 480));
}

// ---- B2BUA: the forward route's two legs ----

#[test]
fn forward_passes_progress_back_and_bridges_at_answer() {
    let mut p = Pair::forward();
    assert!(p.sip.is_empty(), "the near leg waits for the far one");
    p.dialog(LegId::Far, DialogInput::Ringing);
    p.dialog(LegId::Far, DialogInput::Ringing);
    assert_eq!(p.sent(LegId::Near), [&SipOut::Ringing { early_media: false }], "one 180");
    p.dialog(LegId::Far, DialogInput::EarlyMedia);
    assert_eq!(p.sent(LegId::Near)[1], &SipOut::Ringing { early_media: true });
    assert_eq!(p.media, [MediaOut::Relay { answered: false }]);
    p.dialog(LegId::Far, DialogInput::Confirmed { session_timer: None });
    assert_eq!(p.media[1], MediaOut::Relay { answered: true });
    assert_eq!(p.sent(LegId::Near)[2], &SipOut::Accept { session_expires: None });
    assert_eq!(p.event_types(), ["call.answered", "call.answered", "call.bridged"]);
    let bridged = &p.events[2].payload;
    assert_eq!(bridged["bridged_call_control_id"], p.core.info(LegId::Far).unwrap().ids.call_control_id);
    // Forward-only answers to actions.
    assert!(matches!(p.action(Action::Mute(true)), Ok(Some(Action::Mute(true)))));
    for a in [Action::PlaybackStop, Action::StreamingStop, Action::RecordStop, Action::LeaveRoom] {
        let e = p.action(a).unwrap_err();
        assert_eq!(e.status, 422);
        assert!(e.detail.contains("forwarded call"), "{}", e.detail);
    }
}

/// The same far-end end, seen on an API-dialled leg and on a forwarded call.
#[test]
fn the_same_far_end_failure_gives_the_same_hangup_on_every_leg_kind() {
    for (t, expect) in [
        (Termination::Busy, ("user_busy", "callee", 486)),
        (Termination::Decline, ("call_rejected", "callee", 603)),
        (Termination::Status(404), ("not_found", "callee", 404)),
        (Termination::Timeout, ("timeout", "unknown", 408)),
    ] {
        let mut dialled = Pair::dialled();
        dialled.dialog(LegId::Near, DialogInput::Terminated(t));
        assert_eq!(dialled.hangup(LegId::Near), expect, "dialled {t:?}");

        let mut fwd = Pair::forward();
        fwd.dialog(LegId::Far, DialogInput::Ringing);
        fwd.dialog(LegId::Far, DialogInput::Terminated(t));
        assert_eq!(fwd.hangup(LegId::Far), expect, "far leg {t:?}");
        assert_eq!(fwd.hangup(LegId::Near), expect, "near leg {t:?}");
        assert_eq!(fwd.sent(LegId::Near).last().unwrap(), &&SipOut::Reject(expect.2), "{t:?}");
        assert!(fwd.ended);
    }
}

#[test]
fn bye_from_either_side_of_a_bridge() {
    // The callee hangs up: the caller gets BYE; both report callee/normal_clearing.
    let mut p = Pair::forward();
    p.dialog(LegId::Far, DialogInput::Confirmed { session_timer: None });
    p.dialog(LegId::Far, DialogInput::Terminated(Termination::UasBye));
    assert_eq!(p.sent(LegId::Near).last().unwrap(), &&SipOut::Bye);
    assert_eq!(p.hangup(LegId::Far), ("normal_clearing", "callee", 200));
    assert_eq!(p.hangup(LegId::Near), ("normal_clearing", "callee", 200));
    assert!(p.ended);

    // The caller hangs up: the far leg gets BYE; both report caller.
    let mut p = Pair::forward();
    p.dialog(LegId::Far, DialogInput::Confirmed { session_timer: None });
    p.dialog(LegId::Near, DialogInput::Terminated(Termination::UacBye));
    assert_eq!(p.sent(LegId::Far), [&SipOut::Bye]);
    assert_eq!(p.hangup(LegId::Near), ("normal_clearing", "caller", 200));
    assert_eq!(p.hangup(LegId::Far), ("normal_clearing", "caller", 200));

    // The same on a dialled leg and on an inbound one.
    let mut d = Pair::dialled();
    d.dialog(LegId::Near, DialogInput::Confirmed { session_timer: None });
    d.dialog(LegId::Near, DialogInput::Terminated(Termination::UasBye));
    assert_eq!(d.hangup(LegId::Near), ("normal_clearing", "callee", 200));
}

#[test]
fn the_caller_cancels_a_forward_while_the_far_end_rings() {
    let mut p = Pair::forward();
    p.dialog(LegId::Far, DialogInput::Ringing);
    p.dialog(LegId::Near, DialogInput::Terminated(Termination::UacCancel));
    assert_eq!(p.sent(LegId::Far), [&SipOut::Cancel]);
    assert_eq!(p.hangup(LegId::Near), ("originator_cancel", "caller", 487));
    assert_eq!(p.hangup(LegId::Far).0, "originator_cancel");
    assert!(p.ended);
}

#[test]
fn far_no_answer_is_480_to_the_caller() {
    let mut p = Pair::forward();
    p.dialog(LegId::Far, DialogInput::Ringing);
    // The adapter's ring timeout cancelled the far leg.
    p.dialog(LegId::Far, DialogInput::Terminated(Termination::Status(487)));
    assert_eq!(p.sent(LegId::Near).last().unwrap(), &&SipOut::Reject(480));
}

#[test]
fn a_forwarded_call_honours_session_timers_both_ways() {
    // The caller asked for 90 s; the far end's 200 OK chose 120 s with the box as
    // refresher.
    let now = Instant::now();
    let setup = Setup {
        info: info(Direction::Incoming, "near"),
        role: Role::Uas,
        plan: Plan::Forward,
        answer: Answer::ByFarLeg,
        session_expires: Some(90),
    };
    let mut p = Pair::with(CallCore::new(setup, now), now);
    p.core.add_far(info(Direction::Outgoing, "far"));
    p.dialog(LegId::Far, DialogInput::Confirmed { session_timer: Some((120, true)) });
    assert_eq!(p.sent(LegId::Near), [&SipOut::Accept { session_expires: Some(90) }]);
    // The box refreshes the far leg at 60 s; the caller refreshes the near one.
    assert!(p.advance(Duration::from_secs(61)));
    assert!(p.sent(LegId::Far).contains(&&SipOut::Refresh { session_expires: 120 }));
    p.dialog(LegId::Near, DialogInput::Refreshed { session_expires: None });
    assert_eq!(p.core.state(), CallState::Answered);
    // The caller stops refreshing: at 90 s both legs end with BYE.
    while p.core.state() == CallState::Answered {
        assert!(p.advance(Duration::from_secs(100)));
    }
    assert_eq!(p.sent(LegId::Far).last().unwrap(), &&SipOut::Bye);
    assert_eq!(p.hangup(LegId::Near), ("timeout", "callee", 200));
    assert_eq!(p.hangup(LegId::Far), ("timeout", "caller", 200));
}

#[test]
fn dtmf_from_either_leg_is_reported_on_that_leg() {
    let mut p = Pair::forward();
    p.dialog(LegId::Far, DialogInput::Confirmed { session_timer: None });
    p.input(Input::Media(LegId::Far, MediaInput::Dtmf('7')));
    p.dialog(LegId::Near, DialogInput::Dtmf('#'));
    let dtmf: Vec<_> = p.events.iter().filter(|e| e.event_type == "call.dtmf.received").collect();
    assert_eq!(dtmf.len(), 2);
    assert_eq!(dtmf[0].payload["digit"], "7");
    assert_eq!(dtmf[0].payload["call_control_id"], p.core.info(LegId::Far).unwrap().ids.call_control_id);
    assert_eq!(dtmf[1].payload["call_control_id"], p.core.info(LegId::Near).unwrap().ids.call_control_id);
}

#[test]
fn hangup_of_a_forward_from_the_api_ends_both_legs() {
    let mut p = Pair::forward();
    p.dialog(LegId::Far, DialogInput::Ringing);
    assert!(matches!(p.action(Action::Hangup), Ok(None)));
    assert_eq!(p.sent(LegId::Far), [&SipOut::Cancel]);
    assert_eq!(p.sent(LegId::Near).last().unwrap(), &&SipOut::Reject(480));
    assert!(p.ended);
    assert_eq!(p.hangup(LegId::Near), ("normal_clearing", "callee", 480));
    assert_eq!(p.hangup(LegId::Far), ("normal_clearing", "caller", 487));
    assert_eq!(p.views.last(), Some(&"hangup"));
}

#[test]
fn dialled_leg_states_for_the_api_and_unusable_answers() {
    let mut p = Pair::dialled();
    p.dialog(LegId::Near, DialogInput::Ringing);
    p.dialog(LegId::Near, DialogInput::AnswerUnusable);
    assert_eq!(p.views, ["ringing", "hangup"]);
    assert_eq!(p.hangup(LegId::Near), ("call_rejected", "unknown", 488));
    // Transfer (refer) applies once answered only.
    let mut p = Pair::dialled();
    let refer = crate::call::control::Refer { sip_address: "sip:x@example.com".into(), headers: vec![] };
    assert_eq!(p.action(Action::Refer(refer.clone())).unwrap_err().status, 422);
    p.dialog(LegId::Near, DialogInput::Confirmed { session_timer: None });
    assert!(matches!(p.action(Action::Refer(refer)), Ok(Some(Action::Refer(_)))));
}

#[test]
fn the_hangup_event_carries_the_cause_and_quality() {
    let mut p = Pair::inbound(Plan::Terminate, Answer::Now, None);
    assert!(p.core.hangup_event(LegId::Near, SystemTime::now(), None).is_none(), "not ended yet");
    p.dialog(LegId::Near, DialogInput::Terminated(Termination::UacBye));
    let end_time = SystemTime::now() - std::time::Duration::from_secs(3);
    let e = p.core.hangup_event(LegId::Near, end_time, Some(serde_json::json!({"mos": 4.4}))).unwrap();
    assert_eq!(e.event_type, "call.hangup");
    assert_eq!(e.occurred_at, end_time, "the hangup occurred at the call's end, not when the event was made");
    assert_eq!(e.payload["hangup_cause"], "normal_clearing");
    assert_eq!(e.payload["sip_hangup_cause"], "200");
    assert_eq!(e.payload["call_quality_stats"]["mos"], 4.4);
    let _ = (HangupCause::NormalClearing, HangupSource::Caller);
}

fn refer_to() -> crate::call::control::Refer {
    crate::call::control::Refer { sip_address: "sip:+13125550199@pbx.example.com".into(), headers: vec![] }
}

fn notify_responses(p: &Pair) -> Vec<(String, u64)> {
    p.events
        .iter()
        .filter(|e| e.event_type.starts_with("call.refer."))
        .map(|e| (e.event_type.clone(), e.payload["sip_notify_response"].as_u64().unwrap()))
        .collect()
}

#[test]
fn a_transfer_accepted_then_completed() {
    let mut p = Pair::inbound(Plan::Terminate, Answer::Now, None);
    assert!(matches!(p.action(Action::Refer(refer_to())), Ok(Some(Action::Refer(_)))));
    // The shell sent the REFER; the peer accepted it, then reports progress.
    p.dialog(LegId::Near, DialogInput::ReferAnswered(202));
    p.dialog(LegId::Near, DialogInput::ReferNotify(100));
    p.dialog(LegId::Near, DialogInput::ReferNotify(180));
    p.dialog(LegId::Near, DialogInput::ReferNotify(200));
    // A NOTIFY after the outcome changes nothing.
    p.dialog(LegId::Near, DialogInput::ReferNotify(486));
    assert_eq!(
        notify_responses(&p),
        [("call.refer.started".to_string(), 202), ("call.refer.completed".to_string(), 200)]
    );
    // The call stays up until the peer hangs up, as after a Telnyx refer.
    assert_eq!(p.core.state(), CallState::Answered);
    p.dialog(LegId::Near, DialogInput::Terminated(Termination::UacBye));
    assert_eq!(p.hangup(LegId::Near), ("normal_clearing", "caller", 200));
}

#[test]
fn a_transfer_refused_or_failing_is_reported_once() {
    // Refused outright: no NOTIFY will come, and a stray one is not a transfer.
    let mut p = Pair::inbound(Plan::Terminate, Answer::Now, None);
    p.action(Action::Refer(refer_to())).unwrap();
    p.dialog(LegId::Near, DialogInput::ReferAnswered(403));
    p.dialog(LegId::Near, DialogInput::ReferNotify(200));
    assert_eq!(notify_responses(&p), [("call.refer.failed".to_string(), 403)]);
    // Accepted, then the transfer target was busy.
    let mut p = Pair::inbound(Plan::Terminate, Answer::Now, None);
    p.action(Action::Refer(refer_to())).unwrap();
    p.dialog(LegId::Near, DialogInput::ReferAnswered(202));
    p.dialog(LegId::Near, DialogInput::ReferNotify(486));
    assert_eq!(notify_responses(&p), [("call.refer.started".to_string(), 202), ("call.refer.failed".to_string(), 486)]);
    assert_eq!(p.core.state(), CallState::Answered);
}

#[test]
fn a_notify_without_a_transfer_of_ours_reports_nothing() {
    let mut p = Pair::inbound(Plan::Terminate, Answer::Now, None);
    p.dialog(LegId::Near, DialogInput::ReferNotify(200));
    p.dialog(LegId::Near, DialogInput::ReferNotify(503));
    assert!(notify_responses(&p).is_empty());
}

#[test]
fn bridge_and_unbridge_apply_to_an_answered_call_of_its_own_media() {
    let join = crate::call::rooms::bridge_join("v3:other");
    // Ringing: not yet.
    let mut p = Pair::inbound(Plan::Terminate, Answer::After(Duration::from_secs(2)), None);
    assert_eq!(p.action(Action::JoinRoom(join.clone())).unwrap_err().status, 422);
    p.advance(Duration::from_secs(3));
    assert_eq!(p.core.state(), CallState::Answered);
    // Answered: the bridge (a private two-party room) and leaving it go to the
    // shell's media work; the call goes on after the unbridge.
    assert!(matches!(p.action(Action::JoinRoom(join.clone())), Ok(Some(Action::JoinRoom(_)))));
    assert!(matches!(p.action(Action::LeaveRoom), Ok(Some(Action::LeaveRoom))));
    assert_eq!(p.core.state(), CallState::Answered);
    // Hung up: the call is gone.
    p.dialog(LegId::Near, DialogInput::Terminated(Termination::UacBye));
    assert_eq!(p.action(Action::JoinRoom(join.clone())).unwrap_err(), ActionError::ended());
    // A forwarded call relays its media end to end: it cannot be bridged.
    let mut p = Pair::forward();
    p.dialog(LegId::Far, DialogInput::Confirmed { session_timer: None });
    assert_eq!(p.core.state(), CallState::Answered);
    assert_eq!(p.action(Action::JoinRoom(join)).unwrap_err().status, 422);
}

fn gather(spec: crate::call::gather::GatherSpec, prompt: bool) -> Action {
    let prompt = prompt.then(|| crate::call::control::GatherPrompt {
        prompt: std::sync::Arc::new(crate::media::clip::Clip { narrow: vec![1; 800], wide: Some(vec![1; 1600]) }),
        invalid: Some(std::sync::Arc::new(crate::media::clip::Clip::narrowband(vec![2; 80]))),
    });
    Action::Gather(Box::new(crate::call::control::GatherRequest { spec, prompt }))
}

fn gather_ended(p: &Pair) -> Vec<(String, String)> {
    p.events
        .iter()
        .filter(|e| e.event_type == "call.gather.ended")
        .map(|e| (e.payload["status"].as_str().unwrap().into(), e.payload["digits"].as_str().unwrap().into()))
        .collect()
}

#[test]
fn gather_collects_the_callers_digits_on_the_core_clock() {
    use crate::call::gather::GatherSpec;
    let mut p = Pair::inbound(Plan::Terminate, Answer::Now, None);
    let spec = GatherSpec { maximum_digits: 3, inter_digit_timeout: Duration::from_millis(500), ..Default::default() };
    assert!(matches!(p.action(gather(spec.clone(), false)), Ok(None)), "the core runs it");
    assert!(p.action(gather(spec.clone(), false)).is_err(), "one gather at a time");
    // RFC 4733 and SIP INFO digits both count; each is also call.dtmf.received.
    p.input(Input::Media(LegId::Near, MediaInput::Dtmf('1')));
    p.dialog(LegId::Near, DialogInput::Dtmf('2'));
    p.input(Input::Media(LegId::Near, MediaInput::Dtmf('3')));
    assert_eq!(gather_ended(&p), [("valid".into(), "123".into())]);
    assert_eq!(p.event_types().iter().filter(|t| **t == "call.dtmf.received").count(), 3);

    // Silence after a digit: the inter-digit timer judges the entry.
    p.action(gather(spec.clone(), false)).unwrap();
    p.input(Input::Media(LegId::Near, MediaInput::Dtmf('9')));
    let t = p.now;
    assert!(p.advance(Duration::from_secs(1)));
    assert_eq!(p.now - t, Duration::from_millis(500));
    assert_eq!(gather_ended(&p)[1], ("valid".into(), "9".into()));

    // No digit: the initial timeout (5 s by default).
    p.action(gather(spec.clone(), false)).unwrap();
    let t = p.now;
    assert!(p.advance(Duration::from_secs(10)));
    assert_eq!(p.now - t, Duration::from_secs(5));
    assert_eq!(gather_ended(&p)[2], ("timeout".into(), "".into()));

    // gather_stop; then nothing to stop.
    p.action(gather(spec.clone(), false)).unwrap();
    p.input(Input::Media(LegId::Near, MediaInput::Dtmf('4')));
    assert!(matches!(p.action(Action::GatherStop), Ok(None)));
    assert_eq!(gather_ended(&p)[3], ("cancelled".into(), "4".into()));
    assert!(p.action(Action::GatherStop).is_err());

    // The caller hangs up mid-gather: call_hangup, before the call ends.
    p.action(gather(spec, false)).unwrap();
    p.dialog(LegId::Near, DialogInput::Terminated(Termination::UacBye));
    assert_eq!(gather_ended(&p)[4], ("call_hangup".into(), "".into()));
    assert!(p.ended);
}

#[test]
fn a_gather_prompt_plays_until_the_first_digit_and_per_try() {
    use crate::call::gather::GatherSpec;
    let mut p = Pair::inbound(Plan::Terminate, Answer::Now, None);
    let spec = GatherSpec {
        maximum_digits: 2,
        maximum_tries: 2,
        timeout: Duration::from_secs(2),
        valid_digits: "12".into(),
        ..Default::default()
    };
    p.media.clear();
    p.action(gather(spec, true)).unwrap();
    assert!(matches!(&p.media[..], [MediaOut::GatherPrompt(a)] if a.narrow.len() == 800 && a.wide.is_some()));
    assert_eq!(p.core.poll_timeout(), None, "the try's timer starts when the prompt ends");
    p.input(Input::GatherPromptDone);
    let t = p.now;
    assert!(p.advance(Duration::from_secs(5)));
    assert_eq!(p.now - t, Duration::from_secs(2));
    assert!(matches!(&p.media[1..], [MediaOut::GatherPrompt(a)] if a.narrow.len() == 800), "second try");
    // Barge-in, then an invalid entry on the last try.
    p.input(Input::Media(LegId::Near, MediaInput::Dtmf('5')));
    assert_eq!(p.media[2], MediaOut::StopGatherPrompt);
    p.input(Input::Media(LegId::Near, MediaInput::Dtmf('#')));
    assert_eq!(gather_ended(&p), [("invalid".into(), "5".into())]);
}

#[test]
fn gather_is_refused_on_a_forwarded_call_and_before_answer() {
    let mut p = Pair::forward();
    assert!(p.action(gather(Default::default(), false)).is_err());
    let mut p = Pair::inbound(Plan::Terminate, Answer::Parked(Duration::from_secs(60)), None);
    assert!(p.action(gather(Default::default(), false)).is_err());
}
