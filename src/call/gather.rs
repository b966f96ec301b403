//! DTMF collection for Telnyx `gather`, `gather_using_audio` and
//! `gather_using_speak` (developers.telnyx.com/api-reference/call-commands/gather,
//! …/gather-using-audio, …/gather-using-speak), ending in `call.gather.ended`
//! with `digits` and `status`.
//!
//! Sans-IO, like the PIN entry: key presses, the prompt's end and the instant of
//! [`Gather::deadline`] go in, [`Step`]s come out; the call core turns them into
//! media work and the event. The digits are the call's own DTMF (RFC 4733 or SIP
//! INFO), the same ones reported as `call.dtmf.received`.
//!
//! Rules (Telnyx's parameters; where its reference is silent, sipbridge's choice,
//! listed in `docs/api.md`):
//! - the `terminating_digit` ends the entry and is not part of `digits`;
//! - `maximum_digits` digits end the entry;
//! - an entry is `valid` when it has `minimum_digits` to `maximum_digits` digits,
//!   all in `valid_digits`; else `invalid`;
//! - plain `gather`: `initial_timeout_millis` for the first digit,
//!   `inter_digit_timeout_millis` after each one, `timeout_millis` for the whole
//!   gather. A timer that fires with no digit ends it as `timeout`; with digits,
//!   the entry is judged as above;
//! - with a prompt: it plays at once and the first digit stops it (barge-in);
//!   `timeout_millis` runs from the prompt's end for the first digit,
//!   `inter_digit_timeout_millis` after each. A try without input, or with an
//!   invalid entry, replays the prompt (after the invalid prompt, if any) until
//!   `maximum_tries` tries are used; then `timeout` or `invalid`.

use std::time::{Duration, Instant};

/// Largest `maximum_digits` Telnyx accepts.
pub const MAX_DIGITS: usize = 128;

/// Telnyx's default `valid_digits`.
pub const DEFAULT_VALID_DIGITS: &str = "0123456789#*";

/// How a gather ended: `call.gather.ended` `status` (Telnyx's enum, less
/// `cancelled_amd`: sipbridge has no answering machine detection).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GatherStatus {
    /// The entry met the rules.
    Valid,
    /// It did not (count or digits).
    Invalid,
    /// No digit came in time.
    Timeout,
    /// The call ended first.
    CallHangup,
    /// `gather_stop`.
    Cancelled,
}

impl GatherStatus {
    /// Telnyx's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Valid => "valid",
            Self::Invalid => "invalid",
            Self::Timeout => "timeout",
            Self::CallHangup => "call_hangup",
            Self::Cancelled => "cancelled",
        }
    }
}

/// A gather's parameters, checked by the API (Telnyx names and defaults).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatherSpec {
    /// `minimum_digits`, 1 to 128 (default 1).
    pub minimum_digits: usize,
    /// `maximum_digits`, `minimum_digits` to 128 (default 128).
    pub maximum_digits: usize,
    /// `terminating_digit` (default `#`); `None` when the body gives `""`.
    pub terminating_digit: Option<char>,
    /// `valid_digits` (default `0123456789#*`).
    pub valid_digits: String,
    /// `timeout_millis` (default 60 s): the whole gather, or with a prompt the
    /// wait for the first digit after the prompt ends.
    pub timeout: Duration,
    /// `inter_digit_timeout_millis` (default 5 s).
    pub inter_digit_timeout: Duration,
    /// `initial_timeout_millis` (default 5 s; plain `gather` only).
    pub initial_timeout: Duration,
    /// `maximum_tries` (default 3; with a prompt only).
    pub maximum_tries: u32,
}

impl Default for GatherSpec {
    fn default() -> Self {
        Self {
            minimum_digits: 1,
            maximum_digits: MAX_DIGITS,
            terminating_digit: Some('#'),
            valid_digits: DEFAULT_VALID_DIGITS.into(),
            timeout: Duration::from_millis(60_000),
            inter_digit_timeout: Duration::from_millis(5000),
            initial_timeout: Duration::from_millis(5000),
            maximum_tries: 3,
        }
    }
}

/// What the core must do after an input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Play the prompt (after the invalid prompt when `after_invalid`).
    Prompt {
        /// An invalid entry came before: the invalid prompt goes first.
        after_invalid: bool,
    },
    /// Stop the prompt (barge-in, or the gather ended while it played).
    StopPrompt,
    /// The gather is over: `call.gather.ended`.
    Ended(GatherStatus, String),
}

/// One gather in progress.
#[derive(Debug)]
pub struct Gather {
    spec: GatherSpec,
    prompted: bool,
    /// The prompt is playing.
    playing: bool,
    digits: String,
    /// Tries begun, with a prompt.
    tries: u32,
    /// Plain gather: when the whole gather ends.
    overall: Option<Instant>,
    /// The next timer (first digit, next digit); `None` while the prompt plays.
    next: Option<Instant>,
}

impl Gather {
    /// A gather from `now`; with `prompted` the prompt plays first (the steps say so).
    pub fn new(spec: GatherSpec, prompted: bool, now: Instant, out: &mut Vec<Step>) -> Self {
        let mut g = Self { prompted, playing: false, digits: String::new(), tries: 0, overall: None, next: None, spec };
        if prompted {
            g.next_try(false, out);
        } else {
            g.overall = Some(now + g.spec.timeout);
            g.next = Some(now + g.spec.initial_timeout);
        }
        g
    }

    /// When [`Gather::timeout`] is due.
    pub fn deadline(&self) -> Option<Instant> {
        [self.overall, self.next].into_iter().flatten().min()
    }

    /// Whether the prompt is playing.
    pub fn prompting(&self) -> bool {
        self.playing
    }

    /// A key press at `now`.
    pub fn key(&mut self, digit: char, now: Instant, out: &mut Vec<Step>) {
        if self.playing {
            // Barge-in: the first digit stops the prompt.
            self.playing = false;
            out.push(Step::StopPrompt);
        }
        if self.spec.terminating_digit == Some(digit) {
            self.judge(out);
            return;
        }
        self.digits.push(digit);
        if self.digits.len() >= self.spec.maximum_digits {
            self.judge(out);
        } else {
            self.next = Some(now + self.spec.inter_digit_timeout);
        }
    }

    /// The prompt ended (played out, or stopped by someone else) at `now`.
    pub fn prompt_done(&mut self, now: Instant) {
        if self.playing {
            self.playing = false;
            self.next = Some(now + self.spec.timeout);
        }
    }

    /// The deadline has come (`now` ≥ [`Gather::deadline`]).
    pub fn timeout(&mut self, now: Instant, out: &mut Vec<Step>) {
        let overall = self.overall.is_some_and(|t| t <= now);
        let next = self.next.is_some_and(|t| t <= now);
        if !overall && !next {
            return;
        }
        if !self.digits.is_empty() {
            self.judge(out);
        } else if self.prompted && self.tries < self.spec.maximum_tries {
            self.next_try(false, out);
        } else {
            self.end(GatherStatus::Timeout, out);
        }
    }

    /// `gather_stop` or the call's end: the gather ends with `status`.
    pub fn stop(&mut self, status: GatherStatus, out: &mut Vec<Step>) {
        if self.playing {
            self.playing = false;
            out.push(Step::StopPrompt);
        }
        self.end(status, out);
    }

    /// The entry is complete: valid, or invalid (another try when there is one).
    fn judge(&mut self, out: &mut Vec<Step>) {
        let n = self.digits.chars().count();
        let valid = (self.spec.minimum_digits..=self.spec.maximum_digits).contains(&n)
            && self.digits.chars().all(|d| self.spec.valid_digits.contains(d));
        if valid {
            self.end(GatherStatus::Valid, out);
        } else if self.prompted && self.tries < self.spec.maximum_tries {
            self.next_try(true, out);
        } else {
            self.end(GatherStatus::Invalid, out);
        }
    }

    fn next_try(&mut self, after_invalid: bool, out: &mut Vec<Step>) {
        self.tries += 1;
        self.digits.clear();
        self.playing = true;
        self.next = None;
        out.push(Step::Prompt { after_invalid });
    }

    fn end(&mut self, status: GatherStatus, out: &mut Vec<Step>) {
        self.overall = None;
        self.next = None;
        out.push(Step::Ended(status, std::mem::take(&mut self.digits)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn spec() -> GatherSpec {
        GatherSpec::default()
    }

    /// Keys `digits` one per 100 ms from `t`; returns the steps and the time after.
    fn keys(g: &mut Gather, digits: &str, mut t: Instant) -> (Vec<Step>, Instant) {
        let mut out = Vec::new();
        for d in digits.chars() {
            t += 100 * MS;
            g.key(d, t, &mut out);
        }
        (out, t)
    }

    fn ended(status: GatherStatus, digits: &str) -> Step {
        Step::Ended(status, digits.into())
    }

    #[test]
    fn maximum_digits_and_terminating_digit_end_the_entry() {
        let t0 = Instant::now();
        let mut out = Vec::new();
        let mut g = Gather::new(GatherSpec { maximum_digits: 3, ..spec() }, false, t0, &mut out);
        assert!(out.is_empty());
        assert_eq!(keys(&mut g, "123", t0).0, vec![ended(GatherStatus::Valid, "123")]);
        assert_eq!(g.deadline(), None, "nothing left to time");

        let mut g = Gather::new(spec(), false, t0, &mut out);
        assert_eq!(keys(&mut g, "45#", t0).0, vec![ended(GatherStatus::Valid, "45")], "# is not a digit of the entry");
        let mut g = Gather::new(GatherSpec { terminating_digit: Some('*'), ..spec() }, false, t0, &mut out);
        assert_eq!(keys(&mut g, "4#*", t0).0, vec![ended(GatherStatus::Valid, "4#")]);
    }

    #[test]
    fn entries_outside_the_rules_are_invalid() {
        let t0 = Instant::now();
        let mut out = Vec::new();
        let mut g = Gather::new(GatherSpec { minimum_digits: 2, ..spec() }, false, t0, &mut out);
        assert_eq!(keys(&mut g, "5#", t0).0, vec![ended(GatherStatus::Invalid, "5")], "too few");
        let mut g = Gather::new(GatherSpec { valid_digits: "123".into(), ..spec() }, false, t0, &mut out);
        assert_eq!(keys(&mut g, "19#", t0).0, vec![ended(GatherStatus::Invalid, "19")], "9 is not valid");
        let mut g = Gather::new(spec(), false, t0, &mut out);
        assert_eq!(keys(&mut g, "#", t0).0, vec![ended(GatherStatus::Invalid, "")], "nothing before #");
    }

    #[test]
    fn timers_of_a_plain_gather() {
        let t0 = Instant::now();
        let mut out = Vec::new();
        let s = GatherSpec { initial_timeout: 1000 * MS, inter_digit_timeout: 500 * MS, timeout: 3000 * MS, ..spec() };
        // No digit: the initial timeout.
        let mut g = Gather::new(s.clone(), false, t0, &mut out);
        assert_eq!(g.deadline(), Some(t0 + 1000 * MS));
        g.timeout(t0 + 999 * MS, &mut out);
        assert!(out.is_empty(), "not yet");
        g.timeout(t0 + 1000 * MS, &mut out);
        assert_eq!(out, vec![ended(GatherStatus::Timeout, "")]);

        // Digits, then silence: the inter-digit timeout judges the entry.
        let mut g = Gather::new(s.clone(), false, t0, &mut out);
        let (steps, t) = keys(&mut g, "12", t0);
        assert!(steps.is_empty());
        assert_eq!(g.deadline(), Some(t + 500 * MS));
        let mut out = Vec::new();
        g.timeout(t + 500 * MS, &mut out);
        assert_eq!(out, vec![ended(GatherStatus::Valid, "12")]);

        // A digit every 400 ms: the whole gather's timeout ends it.
        let mut g = Gather::new(s, false, t0, &mut out);
        let mut out = Vec::new();
        let mut t = t0;
        for _ in 0..7 {
            t += 400 * MS;
            g.key('1', t, &mut out);
        }
        assert_eq!(g.deadline(), Some(t0 + 3000 * MS), "overall timeout first");
        g.timeout(t0 + 3000 * MS, &mut out);
        assert_eq!(out, vec![ended(GatherStatus::Valid, "1111111")]);
    }

    #[test]
    fn a_prompt_is_stopped_by_the_first_digit_and_replayed_per_try() {
        let t0 = Instant::now();
        let mut out = Vec::new();
        let s = GatherSpec { maximum_digits: 2, timeout: 2000 * MS, maximum_tries: 2, ..spec() };
        let mut g = Gather::new(s.clone(), true, t0, &mut out);
        assert_eq!(out, vec![Step::Prompt { after_invalid: false }]);
        assert_eq!(g.deadline(), None, "no timer while the prompt plays");
        let mut out = Vec::new();
        g.key('7', t0 + 300 * MS, &mut out);
        assert_eq!(out, vec![Step::StopPrompt], "barge-in");
        // The stopped prompt's report comes later and changes nothing.
        g.prompt_done(t0 + 320 * MS);
        assert_eq!(g.deadline(), Some(t0 + 5300 * MS), "the inter-digit timer runs");
        g.key('8', t0 + 400 * MS, &mut out);
        assert_eq!(out, vec![Step::StopPrompt, ended(GatherStatus::Valid, "78")]);

        // No input: the prompt again after timeout_millis, then timeout.
        let mut out = Vec::new();
        let mut g = Gather::new(s.clone(), true, t0, &mut out);
        g.prompt_done(t0 + 1000 * MS);
        assert_eq!(g.deadline(), Some(t0 + 3000 * MS));
        g.timeout(t0 + 3000 * MS, &mut out);
        assert_eq!(out[1], Step::Prompt { after_invalid: false });
        g.prompt_done(t0 + 4000 * MS);
        g.timeout(t0 + 6000 * MS, &mut out);
        assert_eq!(out[2], ended(GatherStatus::Timeout, ""), "two tries used");

        // An invalid entry: the invalid prompt, then the prompt; then invalid.
        let mut out = Vec::new();
        let mut g = Gather::new(GatherSpec { valid_digits: "12".into(), ..s }, true, t0, &mut out);
        g.key('9', t0, &mut out);
        g.key('#', t0, &mut out);
        assert_eq!(out[1..], [Step::StopPrompt, Step::Prompt { after_invalid: true }]);
        g.key('9', t0, &mut out);
        g.key('9', t0, &mut out);
        assert_eq!(out[3..], [Step::StopPrompt, ended(GatherStatus::Invalid, "99")]);
    }

    #[test]
    fn stop_ends_with_the_given_status_and_silences_the_prompt() {
        let t0 = Instant::now();
        let mut out = Vec::new();
        let mut g = Gather::new(spec(), true, t0, &mut out);
        g.stop(GatherStatus::Cancelled, &mut out);
        assert_eq!(out[1..], [Step::StopPrompt, ended(GatherStatus::Cancelled, "")]);
        let mut out = Vec::new();
        let mut g = Gather::new(spec(), false, t0, &mut out);
        g.key('4', t0, &mut out);
        g.stop(GatherStatus::CallHangup, &mut out);
        assert_eq!(out, vec![ended(GatherStatus::CallHangup, "4")], "digits so far");
    }
}
