//! The room's audio mixer: every 20 ms tick, each participant hears the sum of
//! everyone else (**mix-minus**), computed in linear time — the frames of all
//! contributing participants are summed once in `i32`, and each participant's
//! output is that sum minus its own contribution. Naive per-listener sums cost
//! N·(N−1) frame additions per tick; this costs 2·N.
//!
//! Sans-IO (STYLE.md §1): no clock, no channel. The room job (`room::task`), once
//! per tick, writes each participant's input frame ([`Mixer::input_mut`]), calls
//! [`Mixer::mix`], and reads each participant's output ([`Mixer::output`]).
//! Nothing allocates per tick: every buffer is a fixed array in the participant's
//! slot, created by [`Mixer::add`].
//!
//! **Rate**: the room mixes at 8000 Hz, or 16000 Hz while any participant is
//! wideband ([`Rate::Wideband`]). Participants read and write frames at their own
//! rate; a narrowband participant in a wideband room is upsampled before mixing
//! and its mix-minus downsampled after, with the box's one 8000 ↔ 16000 Hz
//! resampler (`media::transcode::RateConverter`, rubato's sinc filter: flat to
//! 3.4 kHz, 3.875 ms each way). The own contribution is subtracted at the room
//! rate, after upsampling, so mix-minus stays exact. The rate changes when the
//! first wideband participant joins or the last one leaves (the converters are
//! made afresh then, with silent history).
//!
//! **Overload**: the sum of several loud talkers exceeds 16 bits. Each output goes
//! through a soft limiter: linear (bit-exact) up to ±24576 (−2.5 dBFS), above that
//! the excess `e` is compressed to `K·e/(e + K)` with `K = 32767 − 24576`, which
//! approaches full scale without ever reaching it and keeps the slope continuous
//! at the knee. Stateless (no attack/release, no pumping), one division per sample
//! only above the knee. Ordinary speech in a room stays below the knee and is
//! untouched; a hard clip would add harsh distortion exactly when several people
//! talk at once.
//!
//! **Mute** (Telnyx `mute`): the participant contributes nothing and still hears
//! the room. **Hold** (Telnyx `hold`): the participant contributes nothing and
//! hears silence (Telnyx can play an `audio_url` to held participants; the room
//! task may do that on the participant's own leg). A [`Role::Listener`] hears the
//! full mix and never contributes.

use crate::media::transcode::RateConverter;

/// Largest frame: 20 ms at 16000 Hz.
pub const MAX_FRAME: usize = 320;

/// Limiter knee: outputs up to this magnitude pass unchanged (−2.5 dBFS).
const LIMIT_KNEE: i32 = 24_576;
/// Headroom between the knee and full scale.
const LIMIT_HEADROOM: i64 = 32_767 - LIMIT_KNEE as i64;

/// A sample rate of the room or of one participant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Rate {
    /// 8000 Hz (G.711, PCMU/PCMA, L16/8000): 160 samples per tick.
    Narrowband,
    /// 16000 Hz (L16/16000): 320 samples per tick.
    Wideband,
}

impl Rate {
    /// The rate in Hz.
    pub const fn hz(self) -> u32 {
        match self {
            Rate::Narrowband => 8000,
            Rate::Wideband => 16_000,
        }
    }

    /// Samples in one 20 ms tick: 160 or 320.
    pub const fn frame_samples(self) -> usize {
        match self {
            Rate::Narrowband => 160,
            Rate::Wideband => 320,
        }
    }

    /// The rate for `hz` (8000 or 16000), `None` for any other.
    pub const fn from_hz(hz: u32) -> Option<Rate> {
        match hz {
            8000 => Some(Rate::Narrowband),
            16_000 => Some(Rate::Wideband),
            _ => None,
        }
    }
}

/// What a slot of the mixer does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Speaks into the room and hears everyone else (a SIP leg, a voice agent).
    Participant,
    /// Hears the full mix, never speaks (a listen-in socket).
    Listener,
}

/// A participant's slot in the mixer; stable until [`Mixer::remove`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ParticipantKey(usize);

/// Work done since creation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MixerStats {
    /// Ticks mixed.
    pub ticks: u64,
    /// Per-sample passes over frames at the room rate: one per contributing
    /// participant (adding it to the sum) and one per hearing participant
    /// (sum minus self, limited). 2·N·frame for N participants: linear.
    pub sample_ops: u64,
    /// Output samples the limiter changed (the sum went past the knee).
    pub limited_samples: u64,
}

/// One participant's buffers and state.
#[derive(Debug)]
struct Slot {
    rate: Rate,
    role: Role,
    muted: bool,
    held: bool,
    /// This tick's input at the participant's rate.
    input: [i16; MAX_FRAME],
    has_input: bool,
    /// The input at the room rate, when it had to be upsampled.
    own: [i16; MAX_FRAME],
    /// Whether the input went into this tick's sum.
    contributed: bool,
    /// This tick's output at the participant's rate.
    output: [i16; MAX_FRAME],
    /// Rate converters while the participant's rate is not the room's.
    convert: Option<Box<Converters>>,
}

/// A narrowband participant's converters in a wideband room: its input up to
/// 16 kHz before mixing, its mix-minus down to 8 kHz after. Streaming (history
/// kept between ticks); no allocation per tick.
#[derive(Debug)]
struct Converters {
    up: RateConverter,
    down: RateConverter,
}

impl Converters {
    /// Fresh converters; `None` if they cannot be built (a bug in
    /// `media::transcode`, logged): the participant is then converted by sample
    /// repetition and decimation, audible but not silent.
    fn new() -> Option<Box<Self>> {
        match (RateConverter::up(), RateConverter::down()) {
            (Ok(up), Ok(down)) => Some(Box::new(Converters { up, down })),
            (Err(e), _) | (_, Err(e)) => {
                tracing::warn!("room resampler not built ({e}): narrowband participants unfiltered");
                None
            }
        }
    }
}

/// Runs `convert` and writes what it emits into `output`; a short result is
/// padded with silence (the converters emit exactly one frame per frame).
fn convert_into(output: &mut [i16], convert: impl FnOnce(&mut dyn FnMut(i16))) {
    let mut k = 0;
    convert(&mut |s| {
        if let Some(o) = output.get_mut(k) {
            *o = s;
        }
        k += 1;
    });
    let k = k.min(output.len());
    output[k..].fill(0);
}

/// 8000 → 16000 Hz of one frame.
fn upsample(convert: Option<&mut Converters>, input: &[i16], output: &mut [i16]) {
    match convert {
        Some(c) => convert_into(output, |emit| c.up.process(input, emit)),
        None => {
            for (pair, &s) in output.chunks_exact_mut(2).zip(input) {
                pair.fill(s);
            }
        }
    }
}

/// 16000 → 8000 Hz of one frame.
fn downsample(convert: Option<&mut Converters>, input: &[i16], output: &mut [i16]) {
    match convert {
        Some(c) => convert_into(output, |emit| c.down.process(input, emit)),
        None => {
            for (o, pair) in output.iter_mut().zip(input.chunks_exact(2)) {
                *o = pair[0];
            }
        }
    }
}

/// The mix-minus mixer of one room.
#[derive(Debug)]
pub struct Mixer {
    rate: Rate,
    slots: Vec<Option<Box<Slot>>>,
    sum: [i32; MAX_FRAME],
    scratch: [i16; MAX_FRAME],
    stats: MixerStats,
}

impl Default for Mixer {
    fn default() -> Self {
        Self::new()
    }
}

/// The soft limiter (module docs): `sum` → PCM16.
#[inline]
fn limit(sum: i32) -> (i16, bool) {
    if (-LIMIT_KNEE..=LIMIT_KNEE).contains(&sum) {
        return (sum as i16, false);
    }
    let excess = i64::from(sum.unsigned_abs()) - i64::from(LIMIT_KNEE);
    let y = i64::from(LIMIT_KNEE) + excess * LIMIT_HEADROOM / (excess + LIMIT_HEADROOM);
    let y = y.min(32_767) as i16;
    (if sum < 0 { -y } else { y }, true)
}

impl Mixer {
    /// An empty mixer at 8000 Hz.
    pub fn new() -> Self {
        Mixer {
            rate: Rate::Narrowband,
            slots: Vec::new(),
            sum: [0; MAX_FRAME],
            scratch: [0; MAX_FRAME],
            stats: MixerStats::default(),
        }
    }

    /// Adds a participant reading and writing frames at `rate` in `role`; the room
    /// becomes wideband if it is the first wideband one. Allocates its slot
    /// (about 3 KiB), and the rate converters of the participants that need them.
    pub fn add(&mut self, rate: Rate, role: Role) -> ParticipantKey {
        let slot = Box::new(Slot {
            rate,
            role,
            muted: false,
            held: false,
            input: [0; MAX_FRAME],
            has_input: false,
            own: [0; MAX_FRAME],
            contributed: false,
            output: [0; MAX_FRAME],
            convert: None,
        });
        let index = match self.slots.iter().position(Option::is_none) {
            Some(i) => {
                self.slots[i] = Some(slot);
                i
            }
            None => {
                self.slots.push(Some(slot));
                self.slots.len() - 1
            }
        };
        self.update_rate();
        ParticipantKey(index)
    }

    /// Removes a participant; false if `key` is not in the mixer.
    pub fn remove(&mut self, key: ParticipantKey) -> bool {
        let removed = self.slots.get_mut(key.0).and_then(Option::take).is_some();
        if removed {
            self.update_rate();
        }
        removed
    }

    fn update_rate(&mut self) {
        let wide = self.slots.iter().flatten().any(|s| s.rate == Rate::Wideband);
        let rate = if wide { Rate::Wideband } else { Rate::Narrowband };
        let changed = rate != self.rate;
        self.rate = rate;
        for slot in self.slots.iter_mut().flatten() {
            if slot.rate == rate {
                slot.convert = None;
            } else if changed || slot.convert.is_none() {
                slot.convert = Converters::new();
            }
        }
    }

    fn slot_mut(&mut self, key: ParticipantKey) -> Option<&mut Slot> {
        self.slots.get_mut(key.0).and_then(|s| s.as_deref_mut())
    }

    fn slot(&self, key: ParticipantKey) -> Option<&Slot> {
        self.slots.get(key.0).and_then(|s| s.as_deref())
    }

    /// Mutes or unmutes (Telnyx `mute`/`unmute`): a muted participant contributes
    /// nothing and still hears. False if `key` is unknown.
    pub fn set_muted(&mut self, key: ParticipantKey, muted: bool) -> bool {
        self.slot_mut(key).map(|s| s.muted = muted).is_some()
    }

    /// Holds or resumes (Telnyx `hold`/`unhold`): a held participant contributes
    /// nothing and hears silence. False if `key` is unknown.
    pub fn set_held(&mut self, key: ParticipantKey, held: bool) -> bool {
        self.slot_mut(key).map(|s| s.held = held).is_some()
    }

    /// Whether the participant is muted.
    pub fn is_muted(&self, key: ParticipantKey) -> bool {
        self.slot(key).is_some_and(|s| s.muted)
    }

    /// Whether the participant is on hold.
    pub fn is_held(&self, key: ParticipantKey) -> bool {
        self.slot(key).is_some_and(|s| s.held)
    }

    /// The buffer for the participant's input of the next tick: PCM16 mono at the
    /// participant's rate, exactly one frame (160 or 320 samples). Writing it
    /// marks the participant as having input; without a call before
    /// [`Mixer::mix`] the participant contributes nothing this tick. `None` if
    /// `key` is unknown.
    pub fn input_mut(&mut self, key: ParticipantKey) -> Option<&mut [i16]> {
        let slot = self.slot_mut(key)?;
        slot.has_input = true;
        let n = slot.rate.frame_samples();
        Some(&mut slot.input[..n])
    }

    /// Mixes one tick: sums the inputs of the participants that contribute (not
    /// muted, not held, not listeners, with input this tick), then computes each
    /// hearing participant's output. Inputs are consumed. Never allocates.
    pub fn mix(&mut self) {
        let Mixer { rate, slots, sum, scratch, stats } = self;
        let n = rate.frame_samples();
        let sum = &mut sum[..n];
        sum.fill(0);
        for slot in slots.iter_mut().flatten() {
            let slot = &mut **slot;
            slot.contributed = slot.has_input && slot.role != Role::Listener && !slot.muted && !slot.held;
            slot.has_input = false;
            if !slot.contributed {
                continue;
            }
            let own: &[i16] = if slot.rate == *rate {
                &slot.input[..n]
            } else {
                // Narrowband participant in a wideband room.
                let input = &slot.input[..slot.rate.frame_samples()];
                upsample(slot.convert.as_deref_mut(), input, &mut slot.own[..n]);
                &slot.own[..n]
            };
            for (s, &x) in sum.iter_mut().zip(own) {
                *s += i32::from(x);
            }
            stats.sample_ops += n as u64;
        }
        for slot in slots.iter_mut().flatten() {
            let slot = &mut **slot;
            let pn = slot.rate.frame_samples();
            if slot.held {
                slot.output[..pn].fill(0);
                continue;
            }
            let resample = slot.rate != *rate;
            let dst: &mut [i16] = if resample { &mut scratch[..n] } else { &mut slot.output[..n] };
            let mut limited = 0u64;
            if slot.contributed {
                let own: &[i16] = if resample { &slot.own[..n] } else { &slot.input[..n] };
                for ((d, &s), &x) in dst.iter_mut().zip(sum.iter()).zip(own) {
                    let (y, l) = limit(s - i32::from(x));
                    *d = y;
                    limited += u64::from(l);
                }
            } else {
                for (d, &s) in dst.iter_mut().zip(sum.iter()) {
                    let (y, l) = limit(s);
                    *d = y;
                    limited += u64::from(l);
                }
            }
            if resample {
                downsample(slot.convert.as_deref_mut(), &scratch[..n], &mut slot.output[..pn]);
            }
            stats.sample_ops += n as u64;
            stats.limited_samples += limited;
        }
        stats.ticks += 1;
    }

    /// The participant's output of the last [`Mixer::mix`]: PCM16 mono at its own
    /// rate, one frame — everyone else's audio for a participant, the full mix
    /// for a listener, silence when held. `None` if `key` is unknown.
    pub fn output(&self, key: ParticipantKey) -> Option<&[i16]> {
        let slot = self.slot(key)?;
        Some(&slot.output[..slot.rate.frame_samples()])
    }

    /// The rate the room mixes at.
    pub fn rate(&self) -> Rate {
        self.rate
    }

    /// Participants in the mixer (all roles).
    pub fn len(&self) -> usize {
        self.slots.iter().flatten().count()
    }

    /// True when nobody is in the mixer.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Counters since creation.
    pub fn stats(&self) -> MixerStats {
        self.stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::room::test_signal::{amplitude, tone};

    /// Mixes `ticks` ticks with each key fed its signal; returns each key's output.
    fn run(mixer: &mut Mixer, inputs: &[(ParticipantKey, Vec<i16>)], ticks: usize) -> Vec<Vec<i16>> {
        let mut outputs = vec![Vec::new(); inputs.len()];
        for t in 0..ticks {
            for (key, signal) in inputs {
                let input = mixer.input_mut(*key).unwrap();
                let n = input.len();
                input.copy_from_slice(&signal[t * n..(t + 1) * n]);
            }
            mixer.mix();
            for (out, (key, _)) in outputs.iter_mut().zip(inputs) {
                out.extend_from_slice(mixer.output(*key).unwrap());
            }
        }
        outputs
    }

    #[test]
    fn each_participant_hears_everyone_but_itself_exactly() {
        let mut m = Mixer::new();
        let keys: Vec<_> = (0..4).map(|_| m.add(Rate::Narrowband, Role::Participant)).collect();
        let signals: Vec<Vec<i16>> =
            [400.0, 700.0, 1100.0, 1700.0].iter().map(|&f| tone(f, 8000, 3000.0, 1600)).collect();
        let inputs: Vec<_> = keys.iter().copied().zip(signals.iter().cloned()).collect();
        let outputs = run(&mut m, &inputs, 10);
        for (i, out) in outputs.iter().enumerate() {
            for s in 0..1600 {
                let expected: i32 = (0..4).filter(|&j| j != i).map(|j| i32::from(signals[j][s])).sum();
                assert_eq!(i32::from(out[s]), expected, "participant {i} sample {s}");
            }
        }
    }

    #[test]
    fn muted_participants_are_not_heard_but_hear_and_held_ones_neither() {
        let mut m = Mixer::new();
        let keys: Vec<_> = (0..3).map(|_| m.add(Rate::Narrowband, Role::Participant)).collect();
        let freqs = [400.0, 700.0, 1100.0];
        let inputs: Vec<_> = keys.iter().zip(freqs).map(|(&k, f)| (k, tone(f, 8000, 3000.0, 1600))).collect();
        assert!(m.set_muted(keys[0], true));
        assert!(m.is_muted(keys[0]));
        let out = run(&mut m, &inputs, 10);
        // Nobody hears 400 Hz; the muted participant still hears 700 and 1100.
        for (i, o) in out.iter().enumerate() {
            assert!(amplitude(o, 400.0, 8000) < 1.0, "participant {i} hears the muted one");
        }
        assert!(amplitude(&out[0], 700.0, 8000) > 2900.0);
        assert!(amplitude(&out[0], 1100.0, 8000) > 2900.0);

        m.set_muted(keys[0], false);
        assert!(m.set_held(keys[1], true));
        let out = run(&mut m, &inputs, 10);
        assert!(out[1].iter().all(|&s| s == 0), "held hears silence");
        assert!(amplitude(&out[0], 700.0, 8000) < 1.0, "held is not heard");
        assert!(amplitude(&out[2], 700.0, 8000) < 1.0, "held is not heard");
        assert!(amplitude(&out[2], 400.0, 8000) > 2900.0, "unmuted is heard again");
        assert!(!m.set_held(ParticipantKey(99), true));
    }

    #[test]
    fn listeners_hear_the_full_mix_and_are_not_heard() {
        let mut m = Mixer::new();
        let a = m.add(Rate::Narrowband, Role::Participant);
        let b = m.add(Rate::Narrowband, Role::Participant);
        let l = m.add(Rate::Narrowband, Role::Listener);
        let inputs = vec![
            (a, tone(400.0, 8000, 3000.0, 1600)),
            (b, tone(700.0, 8000, 3000.0, 1600)),
            (l, tone(1100.0, 8000, 3000.0, 1600)), // a listener's input is ignored
        ];
        let out = run(&mut m, &inputs, 10);
        for f in [400.0, 700.0] {
            assert!(amplitude(&out[2], f, 8000) > 2900.0, "listener hears {f} Hz");
        }
        assert!(amplitude(&out[2], 1100.0, 8000) < 1.0, "listener is not heard");
        assert!(amplitude(&out[0], 1100.0, 8000) < 1.0, "listener is not heard");
    }

    #[test]
    fn loud_sums_are_soft_limited_without_wrapping() {
        let mut m = Mixer::new();
        let keys: Vec<_> = (0..5).map(|_| m.add(Rate::Narrowband, Role::Participant)).collect();
        let l = m.add(Rate::Narrowband, Role::Listener);
        // Everyone at full scale, same sign: the sum is 5 × 30000.
        for &k in &keys {
            m.input_mut(k).unwrap().fill(30_000);
        }
        m.mix();
        let full = m.output(l).unwrap().to_vec();
        assert!(full.iter().all(|&s| s > LIMIT_KNEE as i16), "{}", full[0]);
        for &k in &keys {
            let o = m.output(k).unwrap()[0];
            assert!(o > LIMIT_KNEE as i16 && o < full[0], "4 talkers ({o}) limited below 5 ({})", full[0]);
        }
        // Negative side is symmetric; quiet sums pass bit-exact.
        for &k in &keys {
            m.input_mut(k).unwrap().fill(-30_000);
        }
        m.mix();
        assert_eq!(m.output(l).unwrap()[0], -full[0]);
        for &k in &keys {
            m.input_mut(k).unwrap().fill(4000);
        }
        m.mix();
        assert_eq!(m.output(l).unwrap()[0], 20_000);
        assert_eq!(m.output(keys[0]).unwrap()[0], 16_000);
        // The limiter is monotonic and continuous at the knee.
        let mut previous = i16::MIN;
        for x in (-400_000..400_000).step_by(7) {
            let (y, _) = limit(x);
            assert!(y >= previous, "limit not monotonic at {x}");
            previous = y;
        }
        assert_eq!(limit(LIMIT_KNEE).0, LIMIT_KNEE as i16);
        assert!(limit(LIMIT_KNEE + 100).0 >= LIMIT_KNEE as i16 + 98);
        assert!(limit(i32::MAX).0 > 32_000 && limit(i32::MIN + 1).0 >= -32_767);
        assert!(m.stats().limited_samples > 0);
    }

    #[test]
    fn cost_is_linear_in_participants() {
        for n in [3usize, 10, 50] {
            let mut m = Mixer::new();
            let keys: Vec<_> = (0..n).map(|_| m.add(Rate::Narrowband, Role::Participant)).collect();
            for &k in &keys {
                m.input_mut(k).unwrap().fill(1);
            }
            m.mix();
            // One pass to add each participant, one pass for each output.
            assert_eq!(m.stats().sample_ops, (2 * n * 160) as u64, "{n} participants");
            // And still mix-minus: everyone hears n − 1.
            assert!(keys.iter().all(|&k| m.output(k).unwrap().iter().all(|&s| s as usize == n - 1)));
        }
    }

    #[test]
    fn mixing_does_not_allocate() {
        let mut m = Mixer::new();
        let keys: Vec<_> = (0..10).map(|_| m.add(Rate::Narrowband, Role::Participant)).collect();
        m.add(Rate::Wideband, Role::Participant);
        let before = crate::room::test_signal::allocations();
        for _ in 0..50 {
            for &k in &keys {
                m.input_mut(k).unwrap().fill(100);
            }
            m.mix();
        }
        assert_eq!(crate::room::test_signal::allocations(), before, "allocations during 50 ticks");
    }

    #[test]
    fn a_wideband_participant_makes_the_room_wideband_and_narrowband_ones_are_converted() {
        let mut m = Mixer::new();
        let narrow = m.add(Rate::Narrowband, Role::Participant);
        let narrow2 = m.add(Rate::Narrowband, Role::Participant);
        assert_eq!(m.rate(), Rate::Narrowband);
        let wide = m.add(Rate::Wideband, Role::Participant);
        assert_eq!(m.rate(), Rate::Wideband);
        assert_eq!(m.input_mut(wide).unwrap().len(), 320);
        assert_eq!(m.input_mut(narrow).unwrap().len(), 160);
        // The wideband one speaks 2000 Hz and 6000 Hz; the narrowband ones 700 / 1100 Hz.
        let wide_in: Vec<i16> = tone(2000.0, 16000, 3000.0, 6400)
            .iter()
            .zip(tone(6000.0, 16000, 3000.0, 6400))
            .map(|(a, b)| a + b)
            .collect();
        let inputs = vec![
            (narrow, tone(700.0, 8000, 3000.0, 3200)),
            (narrow2, tone(1100.0, 8000, 3000.0, 3200)),
            (wide, wide_in),
        ];
        let out = run(&mut m, &inputs, 20);
        let (n_out, w_out) = (&out[0][800..], &out[2][1600..]);
        assert_eq!(out[0].len(), 3200);
        assert_eq!(out[2].len(), 6400);
        // The wideband participant hears both narrowband tones at 16 kHz.
        assert!(amplitude(w_out, 700.0, 16000) > 2800.0);
        assert!(amplitude(w_out, 1100.0, 16000) > 2800.0);
        assert!(amplitude(w_out, 2000.0, 16000) < 3.0, "not itself");
        // A narrowband one hears 1100 and 2000 Hz; 6000 Hz is filtered, not aliased to 2000.
        assert!(amplitude(n_out, 1100.0, 8000) > 2800.0);
        assert!(amplitude(n_out, 2000.0, 8000) > 2800.0 && amplitude(n_out, 2000.0, 8000) < 3100.0);
        assert!(amplitude(n_out, 700.0, 8000) < 3.0, "mix-minus exact across rates");
        // The last wideband participant leaving makes the room narrowband again.
        assert!(m.remove(wide));
        assert_eq!(m.rate(), Rate::Narrowband);
        assert!(!m.remove(wide));
        assert_eq!(m.len(), 2);
    }
}
