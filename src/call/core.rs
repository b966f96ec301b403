//! The call core: one call's control logic without I/O (STYLE.md §1, the shape of
//! quinn-proto and str0m).
//!
//! A call is a near leg (the INVITE the box received, UAS, or the one the API had
//! it send, UAC) and, for a forward route, a far leg (UAC) paired with it
//! (B2BUA). The shell (`call::shell`) feeds what happened with
//! [`CallCore::handle`] and carries out what the core asks with
//! [`CallCore::poll`]: SIP on a leg ([`SipOut`]), media work ([`MediaOut`]) and
//! events ([`Output::Emit`]). [`CallCore::poll_timeout`] is the next instant the
//! core wants [`Input::Timeout`]; the core never reads a clock: every input comes
//! with the shell's `now`.
//!
//! What lives here, once for every kind of leg:
//! - the state machine (initiated → ringing → answered → hangup) and the state
//!   the API shows (`parked`, `bridging`, `ringing`, `answered`);
//! - the one SIP → Telnyx `hangup_cause` / `hangup_source` / `sip_hangup_cause`
//!   table ([`Termination::hangup`]) and how a local hangup ends each leg
//!   (BYE, 480, CANCEL);
//! - ring delay (`ring_for`), parking (`park = true` routes: answered or rejected
//!   by the API, 480 after the park limit), PIN entry before a room;
//! - RFC 4028 session timers on both legs: the refresh a peer owes (expiry ends
//!   the call with `timeout`) and the refresh the box owes as refresher;
//! - the one Telnyx action table ([`CallCore::action`]): which command applies to
//!   which leg in which state, and the answer (a documented 422) where it cannot;
//! - the B2BUA pairing: far progress passed back to the caller, a final failure
//!   of one leg ends the other the same way, `call.bridged` once;
//! - DTMF collection (`gather*`, [`super::gather`]): its timers, barge-in and
//!   `call.gather.ended`;
//! - emission of `call.initiated`, `call.answered`, `call.bridged`,
//!   `call.dtmf.received` (`call.hangup` is built by [`CallCore::hangup_event`]
//!   once the shell has the media's quality figures).

use std::collections::VecDeque;
use std::time::{Duration, Instant, SystemTime};

use serde_json::json;

use super::control::{Action, ActionError, GatherPrompt, GatherRequest};
use super::gather::{Gather, GatherStatus, Step};
use super::pin::{PinEntry, Verdict as PinVerdict};
use super::{CallEvent, CallInfo, CallState, CallStateMachine, Hangup, HangupCause, HangupSource};

/// Smallest session interval the box accepts, in seconds (RFC 4028 §4: Min-SE
/// default 90 s).
pub const MIN_SE: u64 = 90;

/// How long a parked call rings without `ring_for` before it is refused (480).
pub const PARK_LIMIT: Duration = Duration::from_secs(60);

/// How long a caller has to key each PIN entry.
pub const PIN_WAIT: Duration = Duration::from_secs(10);

/// Which leg of the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LegId {
    /// The leg the call began with: the received INVITE, or the API's dial.
    Near,
    /// The far leg of a forward route (B2BUA).
    Far,
}

/// The leg's role in its INVITE dialog (RFC 3261 §6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The box received the INVITE (user agent server).
    Uas,
    /// The box sent the INVITE (user agent client).
    Uac,
}

/// How a dialog ended, as the SIP layer saw it (rsipstack's `TerminatedReason`
/// in the field's terms). The UAC is the side that sent the INVITE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Termination {
    /// The UAC sent BYE.
    UacBye,
    /// The UAS sent BYE.
    UasBye,
    /// The UAC cancelled the INVITE (CANCEL, 487).
    UacCancel,
    /// No response, or a transport failure (408).
    Timeout,
    /// 486 Busy Here / 600 Busy Everywhere.
    Busy,
    /// 603 Decline.
    Decline,
    /// 407 that the credentials could not satisfy.
    AuthRequired,
    /// The box gave up ringing (its ring timeout) and sent CANCEL.
    NoAnswer,
    /// Any other final status.
    Status(u16),
}

impl Termination {
    /// The one mapping of a dialog's end to Telnyx's `call.hangup` fields
    /// (PROTOCOLS.md §2): the same end gives the same cause, source and SIP code on
    /// every kind of leg. `hangup_source` is `caller` for the side that sent the
    /// INVITE, `callee` for the side that received it, `unknown` for timeouts.
    pub fn hangup(self) -> Hangup {
        let (cause, source, sip_code) = match self {
            Self::UacBye => (HangupCause::NormalClearing, HangupSource::Caller, 200),
            Self::UasBye => (HangupCause::NormalClearing, HangupSource::Callee, 200),
            Self::UacCancel => (HangupCause::OriginatorCancel, HangupSource::Caller, 487),
            Self::Timeout => (HangupCause::Timeout, HangupSource::Unknown, 408),
            Self::Busy => (HangupCause::UserBusy, HangupSource::Callee, 486),
            Self::Decline => (HangupCause::CallRejected, HangupSource::Callee, 603),
            Self::AuthRequired => (HangupCause::CallRejected, HangupSource::Callee, 407),
            Self::NoAnswer => (HangupCause::NoAnswer, HangupSource::Unknown, 487),
            Self::Status(code) => (HangupCause::from_sip_status(code), HangupSource::Callee, code),
        };
        Hangup { cause, source, sip_code }
    }
}

/// What a leg's dialog reports (the SIP adapter's translation of dialog states).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DialogInput {
    /// UAC: 180, or 183 without usable SDP.
    Ringing,
    /// UAC: 183 whose SDP was applied: early media can flow.
    EarlyMedia,
    /// The dialog is confirmed: UAS after the ACK, UAC after the 200 OK (ACK
    /// sent). `session_expires`: a UAC's 200 OK `Session-Expires` (seconds,
    /// refresher is the UAC).
    Confirmed {
        /// RFC 4028 interval the far end chose, and whether the box refreshes.
        session_timer: Option<(u64, bool)>,
    },
    /// UAC: the 200 OK's SDP could not be used (the adapter has sent BYE).
    AnswerUnusable,
    /// A re-INVITE or UPDATE was answered 2xx (from the peer, or the box's own
    /// refresh): the session is refreshed, with this interval when it names one.
    Refreshed {
        /// `Session-Expires` of the refresh, seconds.
        session_expires: Option<u64>,
    },
    /// A digit by SIP INFO (`application/dtmf-relay`).
    Dtmf(char),
    /// The status of the final response to the box's REFER (RFC 3515 §2.4.2;
    /// 202 when the peer accepted the transfer).
    ReferAnswered(u16),
    /// A NOTIFY of the `refer` event package (RFC 3515 §2.4.4) with the status
    /// line of its `message/sipfrag` body (RFC 3420): the transfer's progress.
    ReferNotify(u16),
    /// The dialog ended.
    Terminated(Termination),
    /// The dialog's channel closed without a final state.
    Gone,
}

/// What a leg's media reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MediaInput {
    /// An RFC 4733 digit.
    Dtmf(char),
    /// No RTP for this long (`[rtp] timeout`).
    Timeout(Duration),
}

/// What happened, for [`CallCore::handle`].
#[derive(Debug)]
pub enum Input {
    /// Signalling on one leg.
    Dialog(LegId, DialogInput),
    /// Media of one leg.
    Media(LegId, MediaInput),
    /// The agent stream failed; `hang_up` is the route's `on_disconnect = hangup`.
    AgentFailed {
        /// End the call (else it goes on without the agent).
        hang_up: bool,
    },
    /// The near leg's media could not start (its agent was removed by a reload).
    MediaFailed,
    /// The room could not be joined (full, or refused).
    RoomJoinFailed,
    /// The daemon's shutdown grace ended: hang up.
    Shutdown,
    /// The instant of [`CallCore::poll_timeout`] (or later) has come.
    Timeout,
    /// The gather's prompt has ended (played out or stopped).
    GatherPromptDone,
}

/// SIP the shell sends on a leg.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SipOut {
    /// UAS: 180 Ringing, or 183 with the box's SDP answer when `early_media`.
    Ringing {
        /// 183 Session Progress with SDP.
        early_media: bool,
    },
    /// UAS: 200 OK with the SDP answer; with `Session-Expires: N;refresher=uac`
    /// and `Require: timer` when the caller asked for a session timer.
    Accept {
        /// RFC 4028 interval to echo, seconds.
        session_expires: Option<u64>,
    },
    /// UAS: a final failure response to the INVITE.
    Reject(u16),
    /// BYE (the leg is answered).
    Bye,
    /// UAC: CANCEL (the leg is not answered).
    Cancel,
    /// UAC or UAS as refresher: a session refresh (re-INVITE with the current SDP
    /// and `Session-Expires: N;refresher=uac`).
    Refresh {
        /// The interval, seconds.
        session_expires: u64,
    },
}

/// Media work the shell does for the call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MediaOut {
    /// The near leg is answered: start what its route does (echo, agent stream,
    /// parked silence, room) and its recording.
    Start,
    /// Relay the two legs (forward): early media (`answered` false), or the far
    /// leg answered (start the recording and tap it too).
    Relay {
        /// The far leg answered.
        answered: bool,
    },
    /// Play the box's own prompt (not reported as `call.playback.*`).
    Prompt(Prompt),
    /// Stop the prompt.
    StopPrompt,
    /// Join the route's room (after the PIN, or at once without one).
    JoinRoom,
    /// Play a gather's prompt (a clip: 8 kHz, and 16 kHz when it has it); its end comes back as
    /// [`Input::GatherPromptDone`].
    GatherPrompt(std::sync::Arc<crate::media::clip::Clip>),
    /// Stop the gather's prompt (barge-in).
    StopGatherPrompt,
}

/// The box's own prompts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prompt {
    /// "Enter the PIN".
    EnterPin,
    /// "Wrong PIN, try again".
    WrongPin,
}

/// What the core asks of its shell, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// Send this on a leg.
    Sip(LegId, SipOut),
    /// Do this media work.
    Media(MediaOut),
    /// Emit this event.
    Emit(CallEvent),
    /// The state the API shows for the near leg changed.
    ViewState(&'static str),
    /// Both legs have ended: stop media, emit each leg's `call.hangup`
    /// ([`CallCore::hangup_event`]) and finish.
    Ended,
}

/// What the near leg does once answered, as far as the core must know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Media of the box's own (echo, agent stream, silence): actions apply.
    Terminate,
    /// A room route: join it once answered, after `pin` when it has one.
    Room {
        /// The room's PIN.
        pin: Option<String>,
    },
    /// Forwarded to a far leg (B2BUA): the far end answers.
    Forward,
}

/// How the near leg of an incoming call is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// 200 OK at once.
    Now,
    /// 180, then 200 OK after this long (`ring_for`).
    After(Duration),
    /// 180, then the API answers or rejects it within this long, else 480.
    Parked(Duration),
    /// A forward route: the near leg is answered when the far one is.
    ByFarLeg,
}

/// A call's setup for [`CallCore::new`].
#[derive(Debug, Clone)]
pub struct Setup {
    /// The near leg's ids and numbers.
    pub info: CallInfo,
    /// UAS for an incoming call, UAC for one the API dialled.
    pub role: Role,
    /// What the near leg does once answered.
    pub plan: Plan,
    /// How a UAS near leg is answered (ignored for a UAC).
    pub answer: Answer,
    /// UAS: the INVITE's `Session-Expires` (seconds), already checked against
    /// [`MIN_SE`].
    pub session_expires: Option<u64>,
}

/// One leg's state in the core.
#[derive(Debug)]
struct Leg {
    info: CallInfo,
    role: Role,
    sm: CallStateMachine,
    /// A BYE/CANCEL/final response has been asked for: no second one.
    ending: bool,
    timer: Option<SessionTimer>,
}

/// RFC 4028 state of a leg: who refreshes, and by when.
#[derive(Debug, Clone, Copy)]
struct SessionTimer {
    interval: Duration,
    /// The box is the refresher: refresh at half the interval (§10).
    we_refresh: bool,
    /// Next refresh the box sends (when it is the refresher).
    refresh_at: Option<Instant>,
    /// The session expires unless refreshed by then.
    expires_at: Instant,
}

impl SessionTimer {
    fn new(secs: u64, we_refresh: bool, now: Instant) -> Self {
        let interval = Duration::from_secs(secs);
        Self {
            interval,
            we_refresh,
            refresh_at: we_refresh.then(|| now + interval / 2),
            // RFC 4028 §10: the side that does not refresh sends BYE at
            // interval − min(32 s, interval/3) after the last refresh; §7.2 lets
            // the refresher's own expiry run the whole interval.
            expires_at: now + interval,
        }
    }

    fn refreshed(&mut self, secs: Option<u64>, now: Instant) {
        *self = Self::new(secs.unwrap_or(self.interval.as_secs()), self.we_refresh, now);
    }
}

/// One call's control, without I/O. See the module documentation.
#[derive(Debug)]
pub struct CallCore {
    near: Leg,
    far: Option<Leg>,
    plan: Plan,
    answer: Answer,
    /// UAS: the INVITE's session interval (echoed in the 200 OK).
    near_session_expires: Option<u64>,
    /// When a `ring_for` route answers.
    answer_at: Option<Instant>,
    /// When a parked call gives up (480).
    park_deadline: Option<Instant>,
    pin: Option<(PinEntry, Instant)>,
    /// The DTMF gather in progress and its prompts.
    gather: Option<Box<(Gather, Option<GatherPrompt>)>>,
    /// `call.bridged` was emitted.
    bridged: bool,
    /// A REFER was accepted and its outcome (a final NOTIFY) is awaited.
    refer_pending: bool,
    /// Early media is being relayed.
    relaying: bool,
    out: VecDeque<Output>,
    view: &'static str,
    ended: bool,
    /// The `now` of the input being handled.
    now: Instant,
}

impl CallCore {
    /// A new call at `now`. A UAS near leg is answered as `setup.answer` says
    /// (the first outputs are its 180/200); a UAC near leg waits for its dialog.
    /// Emits nothing: `call.initiated` is emitted by whoever admitted the call
    /// (it carries route and agent names the core does not need).
    pub fn new(setup: Setup, now: Instant) -> Self {
        let view = match setup.role {
            Role::Uas => "parked",
            Role::Uac => "bridging",
        };
        let mut core = Self {
            near: Leg {
                info: setup.info,
                role: setup.role,
                sm: CallStateMachine::default(),
                ending: false,
                timer: None,
            },
            far: None,
            plan: setup.plan,
            answer: setup.answer,
            near_session_expires: setup.session_expires,
            answer_at: None,
            park_deadline: None,
            pin: None,
            gather: None,
            bridged: false,
            refer_pending: false,
            relaying: false,
            out: VecDeque::new(),
            view,
            ended: false,
            now,
        };
        if core.near.role == Role::Uas {
            match core.answer {
                Answer::Now => core.accept_near(),
                Answer::After(d) => {
                    core.near_ringing(false);
                    core.answer_at = Some(now + d);
                }
                Answer::Parked(limit) => {
                    core.near_ringing(false);
                    core.park_deadline = Some(now + limit);
                }
                Answer::ByFarLeg => {}
            }
        }
        core
    }

    /// Pairs the call with its far leg (a forward route's outgoing INVITE has been
    /// sent); emits nothing (the far leg's `call.initiated` comes from the dial).
    pub fn add_far(&mut self, info: CallInfo) {
        self.far = Some(Leg { info, role: Role::Uac, sm: CallStateMachine::default(), ending: false, timer: None });
    }

    /// The leg's ids and numbers (with the `client_state` the API set).
    pub fn info(&self, leg: LegId) -> Option<&CallInfo> {
        match leg {
            LegId::Near => Some(&self.near.info),
            LegId::Far => self.far.as_ref().map(|l| &l.info),
        }
    }

    /// The leg's ids and numbers, for the media work that updates them.
    pub fn info_mut(&mut self, leg: LegId) -> Option<&mut CallInfo> {
        match leg {
            LegId::Near => Some(&mut self.near.info),
            LegId::Far => self.far.as_mut().map(|l| &mut l.info),
        }
    }

    /// The near leg's state.
    pub fn state(&self) -> CallState {
        self.near.sm.state()
    }

    /// A leg's state (`None` for an absent far leg).
    pub fn leg_state(&self, leg: LegId) -> Option<CallState> {
        self.leg(leg).map(|l| l.sm.state())
    }

    /// Whether both legs have ended (after [`Output::Ended`]).
    pub fn is_ended(&self) -> bool {
        self.ended
    }

    /// How a leg ended, once it has.
    pub fn hangup(&self, leg: LegId) -> Option<Hangup> {
        self.leg(leg).and_then(|l| l.sm.hangup())
    }

    /// `call.hangup` of a leg that has ended, with the media's
    /// `call_quality_stats` (`None` when no media ran).
    pub fn hangup_event(
        &self,
        leg: LegId,
        end_time: SystemTime,
        quality: Option<serde_json::Value>,
    ) -> Option<CallEvent> {
        let l = self.leg(leg)?;
        let h = l.sm.hangup()?;
        Some(l.info.hangup(h, end_time, quality))
    }

    /// Whether a PIN is being collected (digits go to it, not to an agent).
    pub fn collecting_pin(&self) -> bool {
        self.pin.is_some()
    }

    /// The next thing for the shell to do.
    pub fn poll(&mut self) -> Option<Output> {
        let next = self.out.pop_front();
        if next.is_none() && self.out.capacity() > 4 {
            // Set-up queues many outputs at once, then a call is quiet for
            // minutes: the grown queue is not kept for the call's life (0.8 KiB
            // per call, issue 20).
            self.out = VecDeque::new();
        }
        next
    }

    /// The earliest instant the core wants [`Input::Timeout`]; `None` when it
    /// waits on nothing but inputs.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.ended {
            return None;
        }
        let timers = [self.near.timer, self.far.as_ref().and_then(|f| f.timer)];
        let gather = self.gather.as_ref().and_then(|g| g.0.deadline());
        [self.answer_at, self.park_deadline, self.pin.as_ref().map(|p| p.1), gather]
            .into_iter()
            .chain(timers.iter().flatten().flat_map(|t| [t.refresh_at, Some(t.expires_at)]))
            .flatten()
            .min()
    }

    /// Feeds what happened at `now`.
    pub fn handle(&mut self, now: Instant, input: Input) {
        if self.ended {
            return;
        }
        self.now = now;
        match input {
            Input::Dialog(leg, d) => self.dialog(leg, d),
            Input::Media(leg, MediaInput::Dtmf(d)) => self.dtmf(leg, d),
            Input::Media(_, MediaInput::Timeout(_)) => self.hang_up(HangupCause::Timeout),
            Input::AgentFailed { hang_up } => {
                if hang_up {
                    self.hang_up(HangupCause::Unspecified)
                }
            }
            Input::MediaFailed => self.hang_up(HangupCause::Unspecified),
            Input::RoomJoinFailed => self.hang_up(HangupCause::UserBusy),
            Input::Shutdown => self.hang_up(HangupCause::NormalClearing),
            Input::Timeout => self.timeout(now),
            Input::GatherPromptDone => {
                if let Some(g) = self.gather.as_mut() {
                    g.0.prompt_done(now);
                }
            }
        }
        self.check_ended();
    }

    /// The one action table (Telnyx Call Control, PROTOCOLS.md §4). Hangup,
    /// answer, reject and `client_state` are carried out here; for the other
    /// actions `Ok(Some(action))` hands the action back for the shell's media work,
    /// after this check of whether it applies to this leg in this state:
    ///
    /// | action | terminating leg | forwarded call |
    /// |---|---|---|
    /// | hangup, client_state_update | any state | any state |
    /// | answer, reject | parked and ringing | 422 (the far end answers) |
    /// | refer, mute/unmute | answered | answered |
    /// | send_dtmf, playback_*, streaming_*, record_*, rooms | answered | 422 |
    pub fn action(&mut self, now: Instant, action: Action) -> Result<Option<Action>, ActionError> {
        self.now = now;
        if self.ended || self.near.ending {
            return match action {
                Action::Hangup => Ok(None),
                _ => Err(ActionError::ended()),
            };
        }
        let forward = self.plan == Plan::Forward;
        let answered = self.near.sm.state() == CallState::Answered;
        let result = match action {
            Action::Hangup => {
                self.hang_up(HangupCause::NormalClearing);
                Ok(None)
            }
            Action::ClientState(state) => {
                self.near.info.client_state = state;
                Ok(None)
            }
            Action::Answer { .. } | Action::Reject { .. } if forward => {
                Err(ActionError::invalid("a forwarded call is answered by the far end"))
            }
            Action::Answer { .. } | Action::Reject { .. } if self.park_deadline.is_none() => {
                Err(ActionError::invalid("only a parked call that is still ringing can be answered or rejected"))
            }
            Action::Answer { stream } => {
                self.park_deadline = None;
                self.accept_near();
                // The stream is the shell's to start once the ACK comes.
                Ok(Some(Action::Answer { stream }))
            }
            Action::Reject { sip_code } => {
                self.park_deadline = None;
                self.near.ending = true;
                self.near.sm.end(Hangup {
                    cause: HangupCause::from_sip_status(sip_code),
                    source: HangupSource::Callee,
                    sip_code,
                });
                self.out.push_back(Output::Sip(LegId::Near, SipOut::Reject(sip_code)));
                Ok(None)
            }
            _ if !answered => Err(ActionError::invalid("the call is not answered yet")),
            a @ (Action::Refer(_) | Action::Mute(_) | Action::Suppress(_)) => Ok(Some(a)),
            a if forward => Err(ActionError::invalid(format!(
                "{} is not available on a forwarded call: its media is relayed end to end between the two legs",
                action_name(&a)
            ))),
            Action::Gather(g) => self.start_gather(*g),
            Action::GatherStop => match self.gather.is_some() {
                true => {
                    self.gather_step(|g, out| g.stop(GatherStatus::Cancelled, out));
                    Ok(None)
                }
                false => Err(ActionError::invalid("no gather is running on this call")),
            },
            a => Ok(Some(a)),
        };
        self.check_ended();
        result
    }

    fn leg(&self, leg: LegId) -> Option<&Leg> {
        match leg {
            LegId::Near => Some(&self.near),
            LegId::Far => self.far.as_ref(),
        }
    }

    fn leg_mut(&mut self, leg: LegId) -> Option<&mut Leg> {
        match leg {
            LegId::Near => Some(&mut self.near),
            LegId::Far => self.far.as_mut(),
        }
    }

    fn set_view(&mut self, view: &'static str) {
        if self.view != view {
            self.view = view;
            self.out.push_back(Output::ViewState(view));
        }
    }

    fn near_ringing(&mut self, early_media: bool) {
        let changed = self.near.sm.ringing();
        if changed || early_media {
            self.out.push_back(Output::Sip(LegId::Near, SipOut::Ringing { early_media }));
        }
        if self.near.role == Role::Uac {
            self.set_view("ringing");
        }
    }

    fn accept_near(&mut self) {
        self.answer_at = None;
        self.out.push_back(Output::Sip(LegId::Near, SipOut::Accept { session_expires: self.near_session_expires }));
    }

    fn dialog(&mut self, id: LegId, input: DialogInput) {
        let now_unknown = self.leg(id).is_none();
        if now_unknown {
            return;
        }
        match input {
            DialogInput::Ringing | DialogInput::EarlyMedia => {
                let early = input == DialogInput::EarlyMedia;
                match id {
                    LegId::Near => {
                        if self.near.sm.ringing() && self.near.role == Role::Uac {
                            self.set_view("ringing");
                        }
                    }
                    LegId::Far => {
                        if let Some(far) = self.far.as_mut() {
                            far.sm.ringing();
                        }
                        // Far progress goes back to the caller: 180, or 183 with
                        // our answer and the relay started for early media.
                        if early && !self.relaying {
                            self.relaying = true;
                            self.near_ringing(true);
                            self.out.push_back(Output::Media(MediaOut::Relay { answered: false }));
                        } else if !early {
                            self.near_ringing(false);
                        }
                    }
                }
            }
            DialogInput::Confirmed { session_timer } => self.confirmed(id, session_timer),
            DialogInput::AnswerUnusable => {
                // The adapter has sent BYE: the leg ends as rejected (488).
                self.leg_ended(
                    id,
                    Hangup { cause: HangupCause::CallRejected, source: HangupSource::Unknown, sip_code: 488 },
                );
            }
            DialogInput::Refreshed { session_expires } => {
                // A refresh from the peer, or the 2xx to the box's own: the
                // interval starts again (RFC 4028 §10).
                let now = self.now;
                let Some(leg) = self.leg_mut(id) else { return };
                if leg.sm.state() != CallState::Answered {
                    return;
                }
                match (leg.timer.as_mut(), session_expires) {
                    (Some(t), secs) => t.refreshed(secs, now),
                    // A refresh may start a timer the INVITE did not ask for; the
                    // peer that sent it refreshes.
                    (None, Some(secs)) => leg.timer = Some(SessionTimer::new(secs, false, now)),
                    (None, None) => {}
                }
            }
            DialogInput::Dtmf(d) => self.dtmf(id, d),
            DialogInput::ReferAnswered(status) => self.refer_answered(id, status),
            DialogInput::ReferNotify(status) => self.refer_notify(id, status),
            DialogInput::Terminated(t) => self.leg_ended(id, t.hangup()),
            DialogInput::Gone => self.leg_ended(
                id,
                Hangup { cause: HangupCause::Unspecified, source: HangupSource::Unknown, sip_code: 500 },
            ),
        }
    }

    fn confirmed(&mut self, id: LegId, session_timer: Option<(u64, bool)>) {
        let Some(leg) = self.leg_mut(id) else { return };
        if !leg.sm.answered() {
            return;
        }
        let event = leg.info.answered();
        self.out.push_back(Output::Emit(event));
        match id {
            LegId::Near => {
                self.set_view("answered");
                // A UAS echoed the caller's interval with refresher=uac: the caller
                // refreshes. A UAC takes what the 200 OK said.
                let timer = match self.near.role {
                    Role::Uas => self.near_session_expires.map(|secs| (secs, false)),
                    Role::Uac => session_timer,
                };
                if let Some((secs, we_refresh)) = timer {
                    self.near.timer = Some(SessionTimer::new(secs, we_refresh, self.now));
                }
                match self.plan.clone() {
                    Plan::Terminate => self.out.push_back(Output::Media(MediaOut::Start)),
                    Plan::Room { pin } => {
                        self.out.push_back(Output::Media(MediaOut::Start));
                        match pin {
                            Some(pin) => {
                                self.pin = Some((PinEntry::new(&pin), self.now + PIN_WAIT));
                                self.out.push_back(Output::Media(MediaOut::Prompt(Prompt::EnterPin)));
                            }
                            None => self.out.push_back(Output::Media(MediaOut::JoinRoom)),
                        }
                    }
                    Plan::Forward => self.emit_bridged(),
                }
            }
            LegId::Far => {
                let now = self.now;
                if let (Some((secs, we_refresh)), Some(far)) = (session_timer, self.far.as_mut()) {
                    far.timer = Some(SessionTimer::new(secs, we_refresh, now));
                }
                self.relaying = true;
                self.out.push_back(Output::Media(MediaOut::Relay { answered: true }));
                self.accept_near();
            }
        }
    }

    fn emit_bridged(&mut self) {
        if self.bridged {
            return;
        }
        let Some(far) = &self.far else { return };
        self.bridged = true;
        self.out.push_back(Output::Emit(bridged_event(&self.near.info, &far.info)));
    }

    /// Telnyx `refer` (Call Commands → SIP Refer a call): `call.refer.started`
    /// when the peer accepts the REFER (2xx), `call.refer.failed` when it refuses
    /// it (or it could not be sent), each with `sip_notify_response`.
    fn refer_answered(&mut self, id: LegId, status: u16) {
        let accepted = (200..300).contains(&status);
        self.refer_pending = accepted;
        self.refer_event(id, if accepted { "call.refer.started" } else { "call.refer.failed" }, status);
    }

    /// The transfer's progress: a provisional status says nothing yet; a 2xx
    /// ends it as `call.refer.completed`, a status ≥ 300 as `call.refer.failed`.
    /// A NOTIFY without an accepted REFER of the box's, or after the outcome, is
    /// ignored: the peer cannot make the box report a transfer it never asked for.
    fn refer_notify(&mut self, id: LegId, status: u16) {
        if !self.refer_pending || status < 200 {
            return;
        }
        self.refer_pending = false;
        let event = if status < 300 { "call.refer.completed" } else { "call.refer.failed" };
        self.refer_event(id, event, status);
    }

    fn refer_event(&mut self, id: LegId, event_type: &str, status: u16) {
        let Some(leg) = self.leg(id) else { return };
        let mut p = leg.info.payload("answered");
        p.insert("sip_notify_response".into(), json!(status));
        let event = leg.info.event(event_type, p);
        self.out.push_back(Output::Emit(event));
    }

    fn dtmf(&mut self, id: LegId, digit: char) {
        let Some(leg) = self.leg(id) else { return };
        let mut p = leg.info.payload("answered");
        p.insert("digit".into(), json!(digit.to_string()));
        let event = leg.info.event("call.dtmf.received", p);
        self.out.push_back(Output::Emit(event));
        if id == LegId::Near {
            self.pin_step(Some(digit));
            let now = self.now;
            self.gather_step(|g, out| g.key(digit, now, out));
        }
    }

    fn pin_step(&mut self, key: Option<char>) {
        let Some((entry, deadline)) = self.pin.as_mut() else { return };
        let verdict = match key {
            Some(d) => entry.key(d),
            None => entry.timeout(),
        };
        // Each key gives the caller another PIN_WAIT for the next one.
        *deadline = self.now + PIN_WAIT;
        match verdict {
            PinVerdict::Pending => {}
            PinVerdict::Accepted => {
                self.pin = None;
                self.out.push_back(Output::Media(MediaOut::StopPrompt));
                self.out.push_back(Output::Media(MediaOut::JoinRoom));
            }
            PinVerdict::Wrong { .. } => {
                self.out.push_back(Output::Media(MediaOut::StopPrompt));
                self.out.push_back(Output::Media(MediaOut::Prompt(Prompt::WrongPin)));
            }
            PinVerdict::Rejected => {
                self.pin = None;
                self.hang_up(HangupCause::CallRejected);
            }
        }
    }

    fn timeout(&mut self, now: Instant) {
        if self.answer_at.is_some_and(|t| t <= now) {
            self.accept_near();
        }
        if self.park_deadline.is_some_and(|t| t <= now) {
            self.park_deadline = None;
            self.hang_up(HangupCause::NoAnswer);
        }
        if let Some((_, deadline)) = self.pin.as_mut() {
            if *deadline <= now {
                self.pin_step(None);
            }
        }
        if self.gather.as_ref().and_then(|g| g.0.deadline()).is_some_and(|t| t <= now) {
            self.gather_step(|g, out| g.timeout(now, out));
        }
        for id in [LegId::Near, LegId::Far] {
            let Some(leg) = self.leg_mut(id) else { continue };
            let Some(t) = leg.timer.as_mut() else { continue };
            if t.expires_at <= now {
                leg.timer = None;
                self.hang_up(HangupCause::Timeout);
                return;
            }
            if t.refresh_at.is_some_and(|r| r <= now) {
                t.refresh_at = None;
                let secs = t.interval.as_secs();
                self.out.push_back(Output::Sip(id, SipOut::Refresh { session_expires: secs }));
            }
        }
    }

    /// The box ends the call: each live leg ends as [`Self::end_leg_locally`] says.
    fn hang_up(&mut self, cause: HangupCause) {
        self.answer_at = None;
        self.park_deadline = None;
        self.pin = None;
        self.end_leg_locally(LegId::Far, cause);
        self.end_leg_locally(LegId::Near, cause);
    }

    /// How the box ends a leg: BYE once answered; before answer a UAS answers
    /// 480 and a UAC sends CANCEL. The box is the callee on a UAS leg and the
    /// caller on a UAC leg (`hangup_source`).
    fn end_leg_locally(&mut self, id: LegId, cause: HangupCause) {
        let Some(leg) = self.leg_mut(id) else { return };
        if leg.ending || leg.sm.state() == CallState::Hangup {
            return;
        }
        leg.ending = true;
        leg.timer = None;
        let source = match leg.role {
            Role::Uas => HangupSource::Callee,
            Role::Uac => HangupSource::Caller,
        };
        let (sip, code) = match (leg.sm.state() == CallState::Answered, leg.role) {
            (true, _) => (SipOut::Bye, 200),
            (false, Role::Uas) => (SipOut::Reject(480), 480),
            (false, Role::Uac) => (SipOut::Cancel, 487),
        };
        leg.sm.end(Hangup { cause, source, sip_code: code });
        self.out.push_back(Output::Sip(id, sip));
    }

    /// A leg's dialog ended (from the peer, or as the box asked): record how, and
    /// end the other leg the same way.
    fn leg_ended(&mut self, id: LegId, h: Hangup) {
        let Some(leg) = self.leg_mut(id) else { return };
        leg.sm.end(h);
        leg.ending = true;
        leg.timer = None;
        let other = match id {
            LegId::Near => LegId::Far,
            LegId::Far => LegId::Near,
        };
        let Some(o) = self.leg_mut(other) else { return };
        if o.ending || o.sm.state() == CallState::Hangup {
            return;
        }
        match other {
            // The caller left: the far leg ends with the same cause (CANCEL or BYE).
            LegId::Far => self.end_leg_locally(LegId::Far, h.cause),
            // The far leg ended: the caller gets the same — BYE once answered, else
            // its final status (480 when the far end gave none, e.g. no answer) —
            // with the far end's cause and source.
            LegId::Near => {
                let near = &mut self.near;
                near.ending = true;
                near.timer = None;
                if near.sm.state() == CallState::Answered {
                    near.sm.end(Hangup { sip_code: 200, ..h });
                    self.out.push_back(Output::Sip(LegId::Near, SipOut::Bye));
                } else {
                    let code = if h.sip_code >= 400 && h.sip_code != 487 { h.sip_code } else { 480 };
                    near.sm.end(Hangup { sip_code: code, ..h });
                    self.out.push_back(Output::Sip(LegId::Near, SipOut::Reject(code)));
                }
            }
        }
    }

    /// Telnyx `gather*`: one at a time (a second one is refused, not queued);
    /// not while a PIN is being keyed.
    fn start_gather(&mut self, req: GatherRequest) -> Result<Option<Action>, ActionError> {
        if self.gather.is_some() {
            return Err(ActionError::invalid("a gather is already running on this call (gather_stop ends it)"));
        }
        if self.pin.is_some() {
            return Err(ActionError::invalid("the caller is keying the room's PIN"));
        }
        let mut out = Vec::new();
        let g = Gather::new(req.spec, req.prompt.is_some(), self.now, &mut out);
        self.gather = Some(Box::new((g, req.prompt)));
        self.gather_outputs(out);
        Ok(None)
    }

    /// Runs `f` on the gather in progress and carries out its steps.
    fn gather_step(&mut self, f: impl FnOnce(&mut Gather, &mut Vec<Step>)) {
        let Some(g) = self.gather.as_mut() else { return };
        let mut out = Vec::new();
        f(&mut g.0, &mut out);
        self.gather_outputs(out);
    }

    fn gather_outputs(&mut self, steps: Vec<Step>) {
        for step in steps {
            match step {
                Step::Prompt { after_invalid } => {
                    let Some(prompt) = self.gather.as_ref().and_then(|g| g.1.as_ref()) else { continue };
                    let pcm = match (&prompt.invalid, after_invalid) {
                        (Some(invalid), true) => {
                            let mut both = (**invalid).clone();
                            both.append(&prompt.prompt);
                            std::sync::Arc::new(both)
                        }
                        _ => prompt.prompt.clone(),
                    };
                    self.out.push_back(Output::Media(MediaOut::GatherPrompt(pcm)));
                }
                Step::StopPrompt => self.out.push_back(Output::Media(MediaOut::StopGatherPrompt)),
                Step::Ended(status, digits) => {
                    self.gather = None;
                    let state = if status == GatherStatus::CallHangup { "hangup" } else { "answered" };
                    let mut p = self.near.info.payload(state);
                    p.insert("digits".into(), json!(digits));
                    p.insert("status".into(), json!(status.as_str()));
                    let event = self.near.info.event("call.gather.ended", p);
                    self.out.push_back(Output::Emit(event));
                }
            }
        }
    }

    fn check_ended(&mut self) {
        if self.near.sm.state() == CallState::Hangup && self.gather.is_some() {
            // The caller's gather ends with the call, before its `call.hangup`.
            self.gather_step(|g, out| g.stop(GatherStatus::CallHangup, out));
        }
        if self.ended {
            return;
        }
        let near_done = self.near.sm.state() == CallState::Hangup;
        let far_done = self.far.as_ref().is_none_or(|f| f.sm.state() == CallState::Hangup);
        if near_done && far_done {
            self.ended = true;
            self.set_view("hangup");
            self.out.push_back(Output::Ended);
        }
    }
}

/// `call.bridged` of `a` with `b` (Telnyx: `bridged_call_control_id`,
/// `bridged_call_leg_id`), as each side of a bridge reports it.
pub fn bridged_event(a: &CallInfo, b: &CallInfo) -> CallEvent {
    let mut p = a.payload("answered");
    p.insert("bridged_call_control_id".into(), json!(b.ids.call_control_id));
    p.insert("bridged_call_leg_id".into(), json!(b.ids.call_leg_id));
    a.event("call.bridged", p)
}

/// The Telnyx command name of an action, for error details.
pub fn action_name(a: &Action) -> &'static str {
    match a {
        Action::Answer { .. } => "answer",
        Action::Reject { .. } => "reject",
        Action::Hangup => "hangup",
        Action::SendDtmf { .. } => "send_dtmf",
        Action::Mute(true) => "mute",
        Action::Mute(false) => "unmute",
        Action::Suppress(s) if s.any() => "suppression_start",
        Action::Suppress(_) => "suppression_stop",
        Action::ClientState(_) => "client_state_update",
        Action::StreamingStart(_) => "streaming_start",
        Action::StreamingStop => "streaming_stop",
        Action::PlaybackStart { .. } => "playback_start",
        Action::PlaybackStop => "playback_stop",
        Action::RecordStart { .. } => "record_start",
        Action::RecordStop => "record_stop",
        Action::RecordPause => "record_pause",
        Action::RecordResume => "record_resume",
        Action::Refer(_) => "refer",
        Action::JoinRoom(_) => "conference join",
        Action::LeaveRoom => "conference leave",
        Action::Gather(_) => "gather",
        Action::GatherStop => "gather_stop",
        Action::Speak { .. } => "speak",
    }
}
