//! PIN entry for rooms with a `pin` (LiveKit's direct dispatch rule with a PIN,
//! docs.livekit.io/sip/dispatch-rule): the caller keys the PIN by DTMF, ending it
//! with `#` or simply keying all its digits; three wrong entries and the call is
//! refused (`call_rejected`). Sans-IO: digits and timeouts in, verdicts out; the
//! call task plays the prompts and runs the timer.
//!
//! Prompts are tones generated here (no speech on the box): a rising two-tone
//! "enter your PIN", a low triple beep for a wrong PIN.

/// Entries allowed before the call is refused.
pub const TRIES: u32 = 3;

/// What a key press (or the entry timeout) led to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Keep collecting.
    Pending,
    /// The PIN is right: join the room.
    Accepted,
    /// Wrong; `tries_left` more entries are allowed (prompt again).
    Wrong {
        /// Entries left.
        tries_left: u32,
    },
    /// Wrong for the last time: hang up with `call_rejected`.
    Rejected,
}

/// One caller's PIN entry.
#[derive(Debug)]
pub struct PinEntry {
    pin: String,
    keyed: String,
    tries: u32,
}

impl PinEntry {
    /// Entry of `pin` (digits `0-9*`; checked by the config).
    pub fn new(pin: &str) -> Self {
        Self { pin: pin.to_string(), keyed: String::new(), tries: 0 }
    }

    /// A key press. `#` ends the entry; an entry is also checked as soon as it is
    /// as long as the PIN. Other keys are collected (bounded: at most 32 kept).
    pub fn key(&mut self, digit: char) -> Verdict {
        if digit == '#' {
            return self.check();
        }
        if self.keyed.len() < 32 {
            self.keyed.push(digit);
        }
        if self.keyed.len() >= self.pin.len() { self.check() } else { Verdict::Pending }
    }

    /// No key for the entry timeout: what was keyed is checked (an empty entry
    /// counts as a wrong one, so a silent caller is refused after [`TRIES`]).
    pub fn timeout(&mut self) -> Verdict {
        self.check()
    }

    fn check(&mut self) -> Verdict {
        let keyed = std::mem::take(&mut self.keyed);
        // Constant-time compare: the PIN is a secret.
        if subtle::ConstantTimeEq::ct_eq(keyed.as_bytes(), self.pin.as_bytes()).into() {
            return Verdict::Accepted;
        }
        self.tries += 1;
        if self.tries >= TRIES { Verdict::Rejected } else { Verdict::Wrong { tries_left: TRIES - self.tries } }
    }
}

/// A sine burst, PCM16 8 kHz.
fn tone(hz: f64, ms: usize, out: &mut Vec<i16>) {
    let n = ms * 8;
    for i in 0..n {
        // 10 ms fade in/out: no clicks.
        let edge = (i.min(n - 1 - i) as f64 / 80.0).min(1.0);
        out.push((6000.0 * edge * (2.0 * std::f64::consts::PI * hz * i as f64 / 8000.0).sin()) as i16);
    }
}

/// "Enter your PIN": 440 Hz then 660 Hz, 250 ms each (PCM16 8 kHz).
pub fn enter_prompt() -> Vec<i16> {
    let mut v = Vec::new();
    tone(440.0, 250, &mut v);
    tone(660.0, 250, &mut v);
    v
}

/// "Wrong PIN": three 300 Hz beeps of 150 ms, then the enter prompt.
pub fn wrong_prompt() -> Vec<i16> {
    let mut v = Vec::new();
    for _ in 0..3 {
        tone(300.0, 150, &mut v);
        v.extend(std::iter::repeat_n(0, 8 * 100));
    }
    v.extend(enter_prompt());
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn right_pin_with_or_without_hash() {
        let mut p = PinEntry::new("1234");
        assert_eq!(p.key('1'), Verdict::Pending);
        assert_eq!(p.key('2'), Verdict::Pending);
        assert_eq!(p.key('3'), Verdict::Pending);
        assert_eq!(p.key('4'), Verdict::Accepted);
        let mut p = PinEntry::new("1234");
        assert_eq!(p.key('9'), Verdict::Pending);
        assert_eq!(p.key('#'), Verdict::Wrong { tries_left: 2 });
        let last = "1234".chars().map(|d| p.key(d)).last();
        assert_eq!(last, Some(Verdict::Accepted), "a right entry after a wrong one");
    }

    #[test]
    fn three_wrong_entries_reject() {
        let mut p = PinEntry::new("42");
        assert_eq!(p.key('1'), Verdict::Pending);
        assert_eq!(p.key('1'), Verdict::Wrong { tries_left: 2 });
        assert_eq!(p.timeout(), Verdict::Wrong { tries_left: 1 });
        assert_eq!(p.key('4'), Verdict::Pending);
        assert_eq!(p.key('3'), Verdict::Rejected);
    }

    #[test]
    fn prompts_are_audible_tones() {
        assert_eq!(enter_prompt().len(), 4000);
        assert!(enter_prompt().iter().any(|s| s.abs() > 5000));
        assert!(wrong_prompt().len() > enter_prompt().len());
    }
}
