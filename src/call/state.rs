//! The call state machine and hangup causes, in Telnyx's terms (Call Control
//! webhooks `call.hangup`: `hangup_cause`, `hangup_source`, `sip_hangup_cause`).
//!
//! Sans-IO: the SIP layer reports what happened (`answered`, a final SIP status, a
//! BYE from one side, a CANCEL, a timeout); this module decides the resulting state
//! and cause. Transitions only move forward: initiated → ringing → answered → hangup.

use serde::Serialize;

/// Where a call leg is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CallState {
    /// INVITE received or sent, no answer yet (Telnyx `parked`/`bridging` before answer).
    Initiated,
    /// 180/183 seen or sent.
    Ringing,
    /// 200 OK + ACK: media flows.
    Answered,
    /// Over.
    Hangup,
}

/// Telnyx `hangup_cause` values (PROTOCOLS.md §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HangupCause {
    /// A BYE after answer.
    NormalClearing,
    /// The caller cancelled before answer (CANCEL, 487).
    OriginatorCancel,
    /// Declined (603, 403, 488, 401/407 exhausted ...).
    CallRejected,
    /// Busy (486, 600).
    UserBusy,
    /// No such number (404, 410, 484, 604).
    NotFound,
    /// Rang without answer (480, our own ring timeout).
    NoAnswer,
    /// No response or media timeout (408, RTP timeout, transport failure).
    Timeout,
    /// Anything else (5xx, crashes, unknown).
    Unspecified,
}

impl HangupCause {
    /// Telnyx's string for it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NormalClearing => "normal_clearing",
            Self::OriginatorCancel => "originator_cancel",
            Self::CallRejected => "call_rejected",
            Self::UserBusy => "user_busy",
            Self::NotFound => "not_found",
            Self::NoAnswer => "no_answer",
            Self::Timeout => "timeout",
            Self::Unspecified => "unspecified",
        }
    }

    /// The cause for a final non-2xx SIP response to an INVITE (RFC 3261 §21),
    /// mapped as Telnyx reports it.
    pub fn from_sip_status(code: u16) -> Self {
        match code {
            486 | 600 => Self::UserBusy,
            404 | 410 | 484 | 604 => Self::NotFound,
            480 => Self::NoAnswer,
            408 => Self::Timeout,
            487 => Self::OriginatorCancel,
            401 | 403 | 407 | 488 | 603 | 606 => Self::CallRejected,
            _ => Self::Unspecified,
        }
    }
}

/// Telnyx `hangup_source`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HangupSource {
    /// The party that placed the call ended it.
    Caller,
    /// The called party (or the box acting for it) ended it.
    Callee,
    /// Neither side: timeouts, failures, shutdown.
    Unknown,
}

impl HangupSource {
    /// Telnyx's string for it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Caller => "caller",
            Self::Callee => "callee",
            Self::Unknown => "unknown",
        }
    }
}

/// How a call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Hangup {
    /// `hangup_cause`.
    pub cause: HangupCause,
    /// `hangup_source`.
    pub source: HangupSource,
    /// `sip_hangup_cause`: the SIP status that ended it (200 for a BYE after answer).
    pub sip_code: u16,
}

/// The state machine of one leg (sans-IO).
#[derive(Debug, Clone)]
pub struct CallStateMachine {
    state: CallState,
    hangup: Option<Hangup>,
}

impl Default for CallStateMachine {
    fn default() -> Self {
        Self { state: CallState::Initiated, hangup: None }
    }
}

impl CallStateMachine {
    /// Current state.
    pub fn state(&self) -> CallState {
        self.state
    }

    /// How it ended, once it has.
    pub fn hangup(&self) -> Option<Hangup> {
        self.hangup
    }

    /// 180/183. Returns `true` when the state changed.
    pub fn ringing(&mut self) -> bool {
        self.advance(CallState::Ringing)
    }

    /// 200 OK. Returns `true` when the state changed (emit `call.answered`).
    pub fn answered(&mut self) -> bool {
        self.advance(CallState::Answered)
    }

    /// Ends the call; the first hangup wins. Returns the hangup when this call
    /// ended it (emit `call.hangup` exactly once).
    pub fn end(&mut self, hangup: Hangup) -> Option<Hangup> {
        if self.state == CallState::Hangup {
            return None;
        }
        self.state = CallState::Hangup;
        self.hangup = Some(hangup);
        Some(hangup)
    }

    /// A BYE from `source` (answered calls: normal clearing, SIP 200).
    pub fn bye(&mut self, source: HangupSource) -> Option<Hangup> {
        self.end(Hangup { cause: HangupCause::NormalClearing, source, sip_code: 200 })
    }

    /// A final failure response to the INVITE (`code` ≥ 300); `source` is the side
    /// that sent it.
    pub fn failed(&mut self, code: u16, source: HangupSource) -> Option<Hangup> {
        self.end(Hangup { cause: HangupCause::from_sip_status(code), source, sip_code: code })
    }

    fn advance(&mut self, to: CallState) -> bool {
        if to > self.state && self.state != CallState::Hangup {
            self.state = to;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sip_failures_map_to_telnyx_causes() {
        for (code, cause) in [
            (486, "user_busy"),
            (404, "not_found"),
            (603, "call_rejected"),
            (480, "no_answer"),
            (408, "timeout"),
            (487, "originator_cancel"),
            (503, "unspecified"),
        ] {
            assert_eq!(HangupCause::from_sip_status(code).as_str(), cause, "{code}");
        }
    }

    #[test]
    fn states_only_move_forward_and_hangup_happens_once() {
        let mut m = CallStateMachine::default();
        assert!(m.ringing());
        assert!(m.answered());
        assert!(!m.ringing(), "no going back to ringing");
        let h = m.bye(HangupSource::Caller).unwrap();
        assert_eq!((h.cause, h.sip_code), (HangupCause::NormalClearing, 200));
        assert!(m.bye(HangupSource::Callee).is_none(), "second BYE changes nothing");
        assert!(!m.answered());
        assert_eq!(m.hangup().unwrap().source, HangupSource::Caller);
    }

    #[test]
    fn a_failure_before_answer_keeps_its_sip_code() {
        let mut m = CallStateMachine::default();
        let h = m.failed(486, HangupSource::Callee).unwrap();
        assert_eq!((h.cause.as_str(), h.sip_code, h.source.as_str()), ("user_busy", 486, "callee"));
    }
}
