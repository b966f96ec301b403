//! RFC 4733 telephone-events (DTMF over RTP): the 4-byte payload, a detector that
//! turns a leg's event packets into exactly one digit per key press, and a
//! generator producing the packet sequence for sending a digit.
//!
//! Sans-IO: the caller hands the detector each telephone-event packet's RTP
//! timestamp, payload and arrival [`Instant`], arms a timer at
//! [`DtmfDetector::poll_timeout`] and calls [`DtmfDetector::handle_timeout`]; digits
//! come out of [`DtmfDetector::poll_digit`]. The generator returns packets with
//! their send offsets; the caller writes the RTP headers and paces them.
//!
//! Out of scope: events longer than the 16-bit duration field (65535 units, 8.19 s
//! at 8000 Hz, RFC 4733 §2.5.1.3 splits them into segments): the generator clamps to
//! that length and the detector treats each segment as its own press. Also not
//! here: RFC 2198 redundancy, events other than DTMF 0–15 (flash, tones), which the
//! detector ignores.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Clock rate of `telephone-event/8000`, the default rate and the one used alongside
/// G.711 (RFC 4733 §2.1).
pub const CLOCK_RATE_HZ: u32 = 8000;
/// The dynamic payload type this gateway offers for telephone-event (common practice).
pub const DEFAULT_PAYLOAD_TYPE: u8 = crate::sdp::codec::TELEPHONE_EVENT_PAYLOAD_TYPE;
/// Largest event number that is a DTMF digit (RFC 4733 §3.2: events 0–15).
pub const MAX_DTMF_EVENT: u8 = 15;
/// How often RFC 4733 end packets are sent (§2.5.1.4: three times).
pub const END_PACKET_COPIES: usize = 3;
/// Default time without packets after which an event whose end packets were all
/// lost is reported (updates normally come every 50 ms or less).
pub const DEFAULT_END_TIMEOUT: Duration = Duration::from_millis(500);

/// Errors of the telephone-event payload and of the generator's inputs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DtmfError {
    /// A telephone-event payload is 4 bytes; this one is shorter.
    #[error("telephone-event payload of {len} bytes is shorter than 4")]
    TooShort {
        /// Payload length in bytes.
        len: usize,
    },
    /// The character is not a DTMF digit (0–9, *, #, A–D).
    #[error("{0:?} is not a DTMF digit (0-9, *, #, A-D)")]
    NotADigit(char),
    /// The generator needs a packet interval of at least 1 ms.
    #[error("ptime {0:?} is too short for telephone-event packets")]
    BadPtime(Duration),
}

/// One RFC 4733 §2.3 payload: event, end bit, volume, duration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TelephoneEvent {
    /// Event code (0–9 digits, 10 `*`, 11 `#`, 12–15 A–D, 16 flash, …).
    pub event: u8,
    /// `E` bit: this packet ends the event.
    pub end: bool,
    /// Power level as −dBm0, 0–63 (6 bits; larger inputs are masked when encoding).
    pub volume: u8,
    /// Duration so far in RTP timestamp units (8000 per second).
    pub duration: u16,
}

impl TelephoneEvent {
    /// Parses the first 4 bytes of a telephone-event payload (extra bytes, e.g.
    /// RFC 2198 blocks, are ignored; the reserved `R` bit too).
    pub fn parse(payload: &[u8]) -> Result<TelephoneEvent, DtmfError> {
        let Some(&[event, flags, hi, lo]) = payload.first_chunk::<4>() else {
            return Err(DtmfError::TooShort { len: payload.len() });
        };
        Ok(TelephoneEvent {
            event,
            end: flags & 0x80 != 0,
            volume: flags & 0x3f,
            duration: u16::from_be_bytes([hi, lo]),
        })
    }

    /// The 4-byte payload.
    pub fn to_bytes(&self) -> [u8; 4] {
        let [hi, lo] = self.duration.to_be_bytes();
        [self.event, if self.end { 0x80 } else { 0 } | (self.volume & 0x3f), hi, lo]
    }

    /// The DTMF digit of this event, if it is one (events 0–15).
    pub fn digit(&self) -> Option<char> {
        event_to_digit(self.event)
    }
}

/// Event code → DTMF character: 0–9, 10 `*`, 11 `#`, 12–15 `A`–`D` (RFC 4733 §3.2).
pub fn event_to_digit(event: u8) -> Option<char> {
    match event {
        0..=9 => Some(char::from(b'0' + event)),
        10 => Some('*'),
        11 => Some('#'),
        12..=15 => Some(char::from(b'A' + event - 12)),
        _ => None,
    }
}

/// DTMF character → event code (inverse of [`event_to_digit`]; `a`–`d` accepted).
pub fn digit_to_event(digit: char) -> Option<u8> {
    match digit {
        '0'..='9' => Some(digit as u8 - b'0'),
        '*' => Some(10),
        '#' => Some(11),
        'A'..='D' => Some(digit as u8 - b'A' + 12),
        'a'..='d' => Some(digit as u8 - b'a' + 12),
        _ => None,
    }
}

/// How the detector knew a key press was over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EndedBy {
    /// An end packet (`E` bit) arrived.
    EndPacket,
    /// A packet of a newer event arrived before any end packet of this one.
    NextEvent,
    /// No packet for the detector's end timeout.
    Timeout,
}

/// One detected key press.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DtmfDigit {
    /// `0`–`9`, `*`, `#`, `A`–`D`.
    pub digit: char,
    /// The RTP timestamp identifying the event (its start).
    pub timestamp: u32,
    /// Longest duration seen, in RTP timestamp units (160 per 20 ms at 8000 Hz).
    pub duration: u16,
    /// Volume of the last packet seen, −dBm0.
    pub volume: u8,
    /// How the end was recognised.
    pub ended_by: EndedBy,
}

/// The event being received.
#[derive(Clone, Copy, Debug)]
struct Current {
    timestamp: u32,
    event: u8,
    volume: u8,
    duration: u16,
    reported: bool,
    last_packet: Instant,
}

impl Current {
    fn digit(&self, ended_by: EndedBy) -> Option<DtmfDigit> {
        Some(DtmfDigit {
            digit: event_to_digit(self.event)?,
            timestamp: self.timestamp,
            duration: self.duration,
            volume: self.volume,
            ended_by,
        })
    }
}

/// Turns a leg's telephone-event packets into digits, one per key press.
///
/// An event is identified by its RTP timestamp (RFC 4733 §2.5). A digit is
/// reported once: at the first end packet, or when a packet of a newer event shows
/// that the end packets were lost, or when the caller's timer fires
/// [`end_timeout`](DtmfDetector::new) after the event's last packet. Repeated end
/// packets, late updates of a reported event, and packets older than the current
/// event are ignored.
#[derive(Debug)]
pub struct DtmfDetector {
    end_timeout: Duration,
    current: Option<Current>,
    digits: VecDeque<DtmfDigit>,
}

impl DtmfDetector {
    /// A detector that reports an event whose end packets are all lost
    /// `end_timeout` after its last packet ([`DEFAULT_END_TIMEOUT`] is usual).
    pub fn new(end_timeout: Duration) -> DtmfDetector {
        DtmfDetector { end_timeout, current: None, digits: VecDeque::with_capacity(4) }
    }

    /// Handles one telephone-event packet: its RTP timestamp, payload, arrival time.
    /// Events above 15 (not DTMF) are ignored; a short payload is an error and
    /// changes nothing.
    pub fn on_packet(&mut self, rtp_timestamp: u32, payload: &[u8], now: Instant) -> Result<(), DtmfError> {
        let packet = TelephoneEvent::parse(payload)?;
        if packet.event > MAX_DTMF_EVENT {
            return Ok(());
        }
        if let Some(current) = self.current.as_mut() {
            // Signed distance in timestamp space (RFC 3550 timestamps wrap).
            let age = rtp_timestamp.wrapping_sub(current.timestamp) as i32;
            if age == 0 {
                current.last_packet = now;
                if current.reported {
                    return Ok(()); // repeated end packet or a straggler
                }
                current.duration = current.duration.max(packet.duration);
                current.volume = packet.volume;
                if packet.end {
                    current.reported = true;
                    let digit = current.digit(EndedBy::EndPacket);
                    self.digits.extend(digit);
                }
                return Ok(());
            }
            if age < 0 {
                return Ok(()); // an older event, already handled
            }
            if !current.reported {
                let digit = current.digit(EndedBy::NextEvent);
                self.digits.extend(digit);
            }
        }
        let mut next = Current {
            timestamp: rtp_timestamp,
            event: packet.event,
            volume: packet.volume,
            duration: packet.duration,
            reported: false,
            last_packet: now,
        };
        if packet.end {
            // Every packet before the end was lost: still one digit.
            next.reported = true;
            self.digits.extend(next.digit(EndedBy::EndPacket));
        }
        self.current = Some(next);
        Ok(())
    }

    /// When the caller should call [`handle_timeout`](Self::handle_timeout): `None`
    /// when no unreported event is open.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.current.filter(|c| !c.reported).map(|c| c.last_packet + self.end_timeout)
    }

    /// Reports the open event if `now` is at or past its timeout.
    pub fn handle_timeout(&mut self, now: Instant) {
        let Some(current) = self.current.as_mut() else { return };
        if !current.reported && now >= current.last_packet + self.end_timeout {
            current.reported = true;
            let digit = current.digit(EndedBy::Timeout);
            self.digits.extend(digit);
        }
    }

    /// The next detected digit, oldest first.
    pub fn poll_digit(&mut self) -> Option<DtmfDigit> {
        self.digits.pop_front()
    }
}

/// What to send for one digit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DtmfTone {
    /// `0`–`9`, `*`, `#`, `A`–`D`.
    pub digit: char,
    /// How long the key is "pressed" (Telnyx `send_dtmf` default: 250 ms). Clamped
    /// to one ptime at least and 65535 units (8.19 s) at most.
    pub duration: Duration,
    /// Power level, −dBm0 (0–63; 10 is usual).
    pub volume: u8,
    /// Interval between packets, the negotiated ptime (20 ms usually).
    pub ptime: Duration,
}

/// One packet of a generated event: the RTP header fields the caller writes
/// (payload type = the negotiated telephone-event PT) and when to send it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DtmfPacket {
    /// Marker bit: set on the first packet only (RFC 4733 §2.5.1).
    pub marker: bool,
    /// RTP sequence number (advances by one per packet, end copies included).
    pub sequence_number: u16,
    /// RTP timestamp: the event start, the same on every packet (RFC 4733 §2.5.1).
    pub timestamp: u32,
    /// The 4-byte telephone-event payload.
    pub payload: [u8; 4],
    /// Send time relative to the first packet.
    pub send_offset: Duration,
}

/// The packets of one digit, produced lazily (no allocation).
#[derive(Clone, Debug)]
pub struct DtmfPackets {
    event: u8,
    volume: u8,
    ptime_units: u32,
    total_units: u16,
    ptime: Duration,
    timestamp: u32,
    next_sequence_number: u16,
    index: u32,
    end_copies_sent: usize,
}

impl DtmfPackets {
    /// The sequence number the audio stream continues with after these packets.
    pub fn next_sequence_number(&self) -> u16 {
        self.next_sequence_number.wrapping_add(self.remaining() as u16)
    }

    fn remaining(&self) -> usize {
        let updates = self.update_count();
        let sent_updates = (self.index.min(updates)) as usize;
        (updates as usize - sent_updates) + (END_PACKET_COPIES - self.end_copies_sent)
    }

    /// Updates before the end packets: durations ptime, 2·ptime, … below the total.
    fn update_count(&self) -> u32 {
        (u32::from(self.total_units) - 1) / self.ptime_units
    }
}

impl Iterator for DtmfPackets {
    type Item = DtmfPacket;

    fn next(&mut self) -> Option<DtmfPacket> {
        let updates = self.update_count();
        let (end, duration) = if self.index < updates {
            (false, ((self.index + 1) * self.ptime_units) as u16)
        } else if self.end_copies_sent < END_PACKET_COPIES {
            self.end_copies_sent += 1;
            (true, self.total_units)
        } else {
            return None;
        };
        let payload = TelephoneEvent { event: self.event, end, volume: self.volume, duration }.to_bytes();
        let packet = DtmfPacket {
            marker: self.index == 0,
            sequence_number: self.next_sequence_number,
            timestamp: self.timestamp,
            payload,
            send_offset: self.ptime * self.index,
        };
        self.index += 1;
        self.next_sequence_number = self.next_sequence_number.wrapping_add(1);
        Some(packet)
    }
}

/// The RFC 4733 packet sequence for `tone`, starting at `first_sequence_number`,
/// all with RTP timestamp `timestamp` (the media clock at the key press): a
/// marker packet, updates every ptime with growing duration, then three end
/// packets with the final duration, one ptime apart.
pub fn generate(tone: &DtmfTone, first_sequence_number: u16, timestamp: u32) -> Result<DtmfPackets, DtmfError> {
    generate_at(tone, first_sequence_number, timestamp, CLOCK_RATE_HZ)
}

/// [`generate`] for `telephone-event` at `clock_rate` Hz (RFC 4733 §2.1: the
/// events' clock is the audio's, e.g. 48000 beside Opus): durations in its units.
pub fn generate_at(
    tone: &DtmfTone,
    first_sequence_number: u16,
    timestamp: u32,
    clock_rate: u32,
) -> Result<DtmfPackets, DtmfError> {
    let units = |d: Duration| units(d, clock_rate);
    let event = digit_to_event(tone.digit).ok_or(DtmfError::NotADigit(tone.digit))?;
    let ptime_units = units(tone.ptime);
    if tone.ptime < Duration::from_millis(1) || ptime_units == 0 {
        return Err(DtmfError::BadPtime(tone.ptime));
    }
    let total_units = units(tone.duration).clamp(ptime_units.min(0xffff), 0xffff) as u16;
    Ok(DtmfPackets {
        event,
        volume: tone.volume & 0x3f,
        ptime_units,
        total_units,
        ptime: tone.ptime,
        timestamp,
        next_sequence_number: first_sequence_number,
        index: 0,
        end_copies_sent: 0,
    })
}

/// A duration in telephone-event timestamp units at `clock_rate` Hz, saturating.
fn units(d: Duration, clock_rate: u32) -> u32 {
    let units = d.as_micros() * u128::from(clock_rate) / 1_000_000;
    u32::try_from(units).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(event: u8, end: bool, volume: u8, duration: u16) -> [u8; 4] {
        TelephoneEvent { event, end, volume, duration }.to_bytes()
    }

    struct Rx {
        det: DtmfDetector,
        t0: Instant,
    }

    impl Rx {
        fn new() -> Rx {
            Rx { det: DtmfDetector::new(DEFAULT_END_TIMEOUT), t0: Instant::now() }
        }
        fn at(&self, ms: u64) -> Instant {
            self.t0 + Duration::from_millis(ms)
        }
        fn feed(&mut self, ms: u64, ts: u32, p: [u8; 4]) {
            let now = self.at(ms);
            self.det.on_packet(ts, &p, now).unwrap();
        }
        fn digits(&mut self) -> Vec<(char, EndedBy)> {
            std::iter::from_fn(|| self.det.poll_digit()).map(|d| (d.digit, d.ended_by)).collect()
        }
    }

    #[test]
    fn payload_round_trip_and_digit_map() {
        // Bytes of SIPp's dtmf_2833_1.pcap end packet: event 1, E, volume 10, duration 2240.
        let p = TelephoneEvent::parse(&[0x01, 0x8a, 0x08, 0xc0]).unwrap();
        assert_eq!(p, TelephoneEvent { event: 1, end: true, volume: 10, duration: 2240 });
        assert_eq!(p.to_bytes(), [0x01, 0x8a, 0x08, 0xc0]);
        assert_eq!(TelephoneEvent::parse(&[0x0b, 0x4a, 0, 0]).unwrap().volume, 10, "R bit ignored");
        assert_eq!(TelephoneEvent::parse(&[1, 2, 3]), Err(DtmfError::TooShort { len: 3 }));
        let all: String = (0..=15).filter_map(event_to_digit).collect();
        assert_eq!(all, "0123456789*#ABCD");
        assert_eq!(event_to_digit(16), None);
        for (i, c) in all.chars().enumerate() {
            assert_eq!(digit_to_event(c), Some(i as u8));
        }
        assert_eq!(digit_to_event('d'), Some(15));
        assert_eq!(digit_to_event('E'), None);
    }

    /// The packets of SIPp's `dtmf_2833_1.pcap` (tshark): marker first with duration
    /// 0, updates every 20 ms, three end packets sharing one sequence number.
    #[test]
    fn sipp_pcap_sequence_is_one_digit() {
        let mut rx = Rx::new();
        for (i, duration) in [0u16, 320, 640, 960, 1280, 1600, 1920].iter().enumerate() {
            rx.feed(i as u64 * 20, 13280, payload(1, false, 10, *duration));
            assert_eq!(rx.digits(), vec![], "nothing before the end");
        }
        rx.feed(140, 13280, payload(1, true, 10, 2240));
        rx.feed(140, 13280, payload(1, true, 10, 2240));
        rx.feed(140, 13280, payload(1, true, 10, 2240));
        let got: Vec<DtmfDigit> = std::iter::from_fn(|| rx.det.poll_digit()).collect();
        assert_eq!(got.len(), 1);
        assert_eq!(
            got[0],
            DtmfDigit { digit: '1', timestamp: 13280, duration: 2240, volume: 10, ended_by: EndedBy::EndPacket }
        );
        assert_eq!(rx.det.poll_timeout(), None, "nothing open after the end");
        rx.det.handle_timeout(rx.at(10_000));
        assert_eq!(rx.digits(), vec![]);
    }

    #[test]
    fn lost_first_packet_still_detects() {
        let mut rx = Rx::new();
        rx.feed(20, 800, payload(11, false, 10, 320));
        rx.feed(40, 800, payload(11, true, 10, 400));
        assert_eq!(rx.digits(), vec![('#', EndedBy::EndPacket)]);
    }

    #[test]
    fn only_an_end_packet_arrives() {
        let mut rx = Rx::new();
        rx.feed(0, 800, payload(12, true, 10, 800));
        rx.feed(20, 800, payload(12, true, 10, 800));
        assert_eq!(rx.digits(), vec![('A', EndedBy::EndPacket)]);
    }

    #[test]
    fn lost_end_packets_are_reported_by_the_next_event() {
        let mut rx = Rx::new();
        rx.feed(0, 1000, payload(5, false, 10, 160));
        rx.feed(20, 1000, payload(5, false, 10, 320));
        // all three ends of '5' lost; '6' starts
        rx.feed(500, 5000, payload(6, false, 10, 160));
        assert_eq!(rx.digits(), vec![('5', EndedBy::NextEvent)]);
        rx.feed(520, 5000, payload(6, true, 10, 320));
        assert_eq!(rx.digits(), vec![('6', EndedBy::EndPacket)]);
    }

    #[test]
    fn lost_end_packets_are_reported_at_the_timeout_once() {
        let mut rx = Rx::new();
        rx.feed(0, 1000, payload(9, false, 10, 160));
        rx.feed(20, 1000, payload(9, false, 10, 320));
        assert_eq!(rx.det.poll_timeout(), Some(rx.at(20) + DEFAULT_END_TIMEOUT));
        rx.det.handle_timeout(rx.at(100));
        assert_eq!(rx.digits(), vec![], "too early");
        rx.det.handle_timeout(rx.at(520));
        assert_eq!(rx.digits(), vec![('9', EndedBy::Timeout)]);
        // a late end packet of the same event after the timeout: not a second digit
        rx.feed(600, 1000, payload(9, true, 10, 480));
        rx.det.handle_timeout(rx.at(5000));
        assert_eq!(rx.digits(), vec![]);
        assert_eq!(rx.det.poll_timeout(), None);
    }

    #[test]
    fn two_identical_digits_in_a_row_are_two_presses() {
        let mut rx = Rx::new();
        for (start_ms, ts) in [(0u64, 160u32), (300, 2560)] {
            rx.feed(start_ms, ts, payload(3, false, 10, 160));
            rx.feed(start_ms + 20, ts, payload(3, false, 10, 320));
            for _ in 0..END_PACKET_COPIES {
                rx.feed(start_ms + 40, ts, payload(3, true, 10, 400));
            }
        }
        assert_eq!(rx.digits(), vec![('3', EndedBy::EndPacket), ('3', EndedBy::EndPacket)]);
    }

    #[test]
    fn reordered_and_stale_packets_do_not_repeat_a_digit() {
        let mut rx = Rx::new();
        rx.feed(0, 1000, payload(7, false, 10, 160));
        rx.feed(20, 1000, payload(7, true, 10, 320));
        rx.feed(40, 3000, payload(8, false, 10, 160));
        rx.feed(45, 1000, payload(7, true, 10, 320)); // stale end of '7' after '8' began
        rx.feed(60, 3000, payload(8, true, 10, 320));
        assert_eq!(rx.digits(), vec![('7', EndedBy::EndPacket), ('8', EndedBy::EndPacket)]);
    }

    #[test]
    fn long_press_is_one_digit_and_other_events_are_ignored() {
        let mut rx = Rx::new();
        // 5 s press: 250 updates, duration up to 40000 units.
        for i in 0..250u16 {
            rx.feed(u64::from(i) * 20, 70_000, payload(0, false, 10, (i + 1) * 160));
            rx.det.handle_timeout(rx.at(u64::from(i) * 20 + 10));
        }
        for _ in 0..3 {
            rx.feed(5000, 70_000, payload(0, true, 10, 40_000));
        }
        let got: Vec<DtmfDigit> = std::iter::from_fn(|| rx.det.poll_digit()).collect();
        assert_eq!(got.len(), 1);
        assert_eq!((got[0].digit, got[0].duration), ('0', 40_000));
        rx.feed(6000, 90_000, payload(16, true, 10, 800)); // flash: not a digit
        assert_eq!(rx.digits(), vec![]);
        let now = rx.at(7000);
        assert_eq!(rx.det.on_packet(90_000, &[16], now), Err(DtmfError::TooShort { len: 1 }));
    }

    #[test]
    fn timestamp_wrap_is_a_newer_event() {
        let mut rx = Rx::new();
        rx.feed(0, u32::MAX - 100, payload(1, false, 10, 160));
        rx.feed(300, 200, payload(2, true, 10, 160));
        assert_eq!(rx.digits(), vec![('1', EndedBy::NextEvent), ('2', EndedBy::EndPacket)]);
    }

    #[test]
    fn generator_sequence_for_a_100ms_digit() {
        let tone =
            DtmfTone { digit: '#', duration: Duration::from_millis(100), volume: 10, ptime: Duration::from_millis(20) };
        let packets: Vec<DtmfPacket> = generate(&tone, 65534, 4242).unwrap().collect();
        let summary: Vec<(bool, u16, bool, u16, u64)> = packets
            .iter()
            .map(|p| {
                let e = TelephoneEvent::parse(&p.payload).unwrap();
                assert_eq!((e.event, e.volume, p.timestamp), (11, 10, 4242));
                (p.marker, p.sequence_number, e.end, e.duration, p.send_offset.as_millis() as u64)
            })
            .collect();
        assert_eq!(
            summary,
            vec![
                (true, 65534, false, 160, 0),
                (false, 65535, false, 320, 20),
                (false, 0, false, 480, 40),
                (false, 1, false, 640, 60),
                (false, 2, true, 800, 80),
                (false, 3, true, 800, 100),
                (false, 4, true, 800, 120),
            ]
        );
        assert_eq!(generate(&tone, 65534, 4242).unwrap().next_sequence_number(), 5);
    }

    #[test]
    fn generator_output_is_detected_once_even_with_losses() {
        let tone =
            DtmfTone { digit: '4', duration: Duration::from_millis(250), volume: 12, ptime: Duration::from_millis(20) };
        let packets: Vec<DtmfPacket> = generate(&tone, 100, 8000).unwrap().collect();
        assert_eq!(packets.len(), 12 + 3);
        assert_eq!(TelephoneEvent::parse(&packets[14].payload).unwrap().duration, 2000);
        for drop_first_and_two_ends in [false, true] {
            let mut rx = Rx::new();
            for (i, p) in packets.iter().enumerate() {
                if drop_first_and_two_ends && (i == 0 || i >= 13) {
                    continue;
                }
                rx.feed(p.send_offset.as_millis() as u64, p.timestamp, p.payload);
            }
            assert_eq!(rx.digits(), vec![('4', EndedBy::EndPacket)]);
        }
    }

    #[test]
    fn generator_edge_cases() {
        let short =
            DtmfTone { digit: '1', duration: Duration::from_millis(5), volume: 70, ptime: Duration::from_millis(20) };
        let p: Vec<DtmfPacket> = generate(&short, 0, 0).unwrap().collect();
        assert_eq!(p.len(), 3, "shorter than ptime: only end packets");
        assert!(p[0].marker && !p[1].marker);
        let e = TelephoneEvent::parse(&p[0].payload).unwrap();
        assert_eq!((e.end, e.duration, e.volume), (true, 160, 70 & 0x3f));
        let long =
            DtmfTone { digit: '1', duration: Duration::from_secs(20), volume: 10, ptime: Duration::from_millis(20) };
        let last = generate(&long, 0, 0).unwrap().last().unwrap();
        assert_eq!(TelephoneEvent::parse(&last.payload).unwrap().duration, 0xffff, "clamped to 8.19 s");
        assert_eq!(generate(&DtmfTone { digit: 'x', ..short }, 0, 0).unwrap_err(), DtmfError::NotADigit('x'));
        assert!(matches!(generate(&DtmfTone { ptime: Duration::ZERO, ..short }, 0, 0), Err(DtmfError::BadPtime(_))));
    }
}
