//! One RTP leg's session, sans-IO (issue 20): SSRC, sequence and timestamp state,
//! latching, RFC 3550 statistics and RTCP reports, RFC 4733 in and out, and the
//! relay rewrite (payload type mapping, PCMU↔PCMA transcoding in place).
//!
//! No socket and no clock: the caller (the media engine, `media::engine`, or a
//! test) feeds received datagrams with [`RtpSession::handle_receive`], asks for
//! outgoing packets with [`RtpSession::poll_transmit`], reads DTMF and RTP
//! timeouts with [`RtpSession::poll_event`], and drives the timers with
//! [`RtpSession::poll_timeout`] / [`RtpSession::handle_timeout`], passing `now`
//! every time. The wall clock RTCP needs (NTP timestamps, RFC 3550 §6.4.1) is
//! derived from the `(Instant, SystemTime)` pair given at creation.
//!
//! - Symmetric RTP / latching (`latch`): media is sent to the SDP address until
//!   packets arrive, then to where they actually come from (NAT); once latched,
//!   RTP and RTCP from any other source are dropped and counted
//!   (`crate::security`), never forwarded or answered.
//! - Per packet: no heap allocation (outgoing packets are built in the session's
//!   own fixed buffers), no lock, no logging above `trace`.
//! - Timeout: no RTP for `[rtp].timeout` while the peer is supposed to send
//!   (not on hold) is reported once per silence.
//! - Quality over time: each RTCP report the session builds (every
//!   `rtcp::REPORT_INTERVAL`, the first after half of it) also yields a
//!   [`LegEvent::Quality`] snapshot of the receiver statistics, so the call can
//!   keep a jitter/loss series without a timer of its own.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

use super::dtmf::{DtmfDetector, DtmfPackets, DtmfTone, digit_to_event, generate_at};
use super::g711::transcode_in_place;
use super::latch::{Latch, LatchConfig, RtcpLatch, Verdict};
use super::rtcp::{RtcpState, SenderInfo};
use super::rtp::{RtpHeader, RtpPacket, RtpPacketMut, is_rtcp};
use super::stats::ReceiverStats;
use crate::sdp::NegotiatedAudio;
use crate::sdp::codec::AudioCodec;

/// Largest datagram handled (Ethernet MTU; G.711 at 120 ms is 972 bytes).
pub const MAX_DATAGRAM: usize = 1500;

/// Largest payload the session builds itself (60 ms of G.711).
const MAX_OWN_PAYLOAD: usize = 480;

/// A listener on a call's audio (the recorder): G.711 payloads as they pass,
/// `heard` = received from the caller's leg, `said` = sent to the caller.
/// Implementations must not block (the media engine calls them per packet on its
/// worker threads).
pub trait Tap: Send + Sync {
    /// Audio received from the caller (G.711 bytes in `codec`).
    fn heard(&self, codec: crate::media::g711::G711, payload: &[u8]);
    /// Audio sent to the caller.
    fn said(&self, codec: crate::media::g711::G711, payload: &[u8]);
    /// Audio sent to the caller when the bridge plays at 16000 Hz (an L16/16000
    /// agent): the G.711 packet as sent (`payload`), and the 16 kHz PCM16 frame it
    /// was made from (`wideband`, 20 ms = 320 samples). Taps that can use the full
    /// band (a 16 kHz recording) override this; the default hears the packet.
    fn said_wideband(&self, codec: crate::media::g711::G711, payload: &[u8], wideband: &[i16]) {
        let _ = wideband;
        self.said(codec, payload);
    }
    /// Audio received from the caller on a wideband leg (G.722, Opus): the packet
    /// decoded to 16 kHz PCM16 (`wideband`, up to 20 ms = 320 samples per call)
    /// and the same audio taken to 8 kHz and encoded in `codec` (`payload`), for
    /// taps that work in G.711. The default hears the G.711 version.
    fn heard_wideband(&self, codec: crate::media::g711::G711, payload: &[u8], wideband: &[i16]) {
        let _ = wideband;
        self.heard(codec, payload);
    }
}

/// The leg's receiver figures at one moment, cumulative since the session
/// began (RFC 3550 A.3 counts): the call turns consecutive samples into
/// per-interval loss and packet counts (`call::quality_series`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QualitySample {
    /// When the sample was taken (the `now` the session was driven with).
    pub at: Instant,
    /// RTP packets received from the peer (A.3 `received`: duplicates and late
    /// packets included).
    pub received: u64,
    /// RTP packets expected from the peer (A.3: extended highest sequence −
    /// base + 1, summed over its sources).
    pub expected: u64,
    /// Current interarrival jitter, RFC 3550 §6.4.1 / A.8.
    pub jitter: Duration,
    /// RTP packets sent to the peer.
    pub sent: u64,
}

/// What a leg tells the call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LegEvent {
    /// An RFC 4733 key press (one per press).
    Dtmf(char),
    /// The receiver statistics at one of our RTCP reports (about every 5 s).
    /// Boxed: the sample is 48 bytes and the other events at most 16, and every
    /// call's event channel allocates 32 slots of this at once (issue 20).
    Quality(Box<QualitySample>),
    /// No RTP for the configured timeout while the peer should be sending.
    Timeout(Duration),
    /// A playback (`playback_start`) ended: played to its end (`completed`) or
    /// stopped.
    PlaybackDone {
        /// The id given to `Playback::Play`.
        id: u64,
        /// Played to the end.
        completed: bool,
    },
}

/// What the call tells a leg.
#[derive(Clone)]
pub enum LegCommand {
    /// New negotiation (re-INVITE: hold/resume, new address or codec).
    Update(NegotiatedAudio),
    /// Stop (`true`) or resume passing what the leg's peer says to the other side
    /// (agent, echo); the recorder still hears it.
    MuteInbound(bool),
    /// Start (or stop, `None`) handing the audio to a tap (recording from answer
    /// when the media already ran during early media).
    Tap(Option<std::sync::Arc<dyn Tap>>),
    /// Send these key presses as RFC 4733 events (`send_dtmf`), each held for the
    /// duration, in place of audio while they play.
    SendDtmf(String, Duration),
    /// Suppress noise (RNNoise, `media::suppress`) on these directions of the
    /// leg from now on (`suppression_start` / `suppression_stop`).
    Suppress(crate::media::suppress::Suppression),
    /// Stop and report.
    Stop,
}

/// Sender-side counters (the `outbound` half of `call_quality_stats`).
#[derive(Debug, Clone, Copy, Default)]
pub struct SendCounters {
    /// RTP packets sent.
    pub packets: u64,
    /// Payload bytes sent.
    pub payload_bytes: u64,
}

/// Which of the leg's two ports a datagram came in on or goes out of (RFC 3550
/// §11: RTP on the even port, RTCP on the next odd one unless rtcp-mux).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Socket {
    /// The RTP port (also RTCP with rtcp-mux, RFC 5761).
    Rtp,
    /// The RTCP port.
    Rtcp,
}

/// An outgoing datagram: send `contents` from the leg's `socket` to `destination`.
#[derive(Debug)]
pub struct Transmit<'a> {
    /// Port to send from.
    pub socket: Socket,
    /// Where to.
    pub destination: SocketAddr,
    /// The datagram.
    pub contents: &'a [u8],
}

/// What one received datagram was (no borrow of it: the caller may rewrite the
/// packet in place afterwards, for relaying).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Received {
    /// Audio in the negotiated codec: the payload is
    /// `datagram[payload_offset..payload_offset + payload_len]`.
    Audio {
        /// Start of the payload in the datagram.
        payload_offset: usize,
        /// Payload length in bytes (= samples for G.711).
        payload_len: usize,
        /// RTP timestamp of the first sample (RFC 3550 §5.1).
        rtp_timestamp: u32,
    },
    /// A telephone-event packet (RFC 4733) from the peer; a completed key press is
    /// an event ([`RtpSession::poll_event`]).
    Event,
    /// Nothing for the call (RTCP, junk, a foreign payload type or source).
    Nothing,
}

impl Received {
    /// The audio payload of `datagram`, when this is audio.
    pub fn payload<'a>(&self, datagram: &'a [u8]) -> Option<&'a [u8]> {
        match *self {
            Received::Audio { payload_offset, payload_len, .. } => {
                datagram.get(payload_offset..payload_offset + payload_len)
            }
            _ => None,
        }
    }

    /// The audio payload of `datagram`, writable (noise suppression rewrites it
    /// in place), when this is audio.
    pub fn payload_mut<'a>(&self, datagram: &'a mut [u8]) -> Option<&'a mut [u8]> {
        match *self {
            Received::Audio { payload_offset, payload_len, .. } => {
                datagram.get_mut(payload_offset..payload_offset + payload_len)
            }
            _ => None,
        }
    }
}

/// A generated packet waiting for [`RtpSession::poll_transmit`].
struct Pending<const N: usize> {
    len: usize,
    destination: Option<SocketAddr>,
    buf: [u8; N],
}

impl<const N: usize> Pending<N> {
    fn new() -> Self {
        Self { len: 0, destination: None, buf: [0; N] }
    }
}

/// A negotiated RTP stream (one leg), sans-IO.
pub struct RtpSession {
    audio: NegotiatedAudio,
    /// Which source RTP is taken from and sent to.
    latch: Latch,
    /// Which source RTCP (on its own port) is taken from and sent to.
    rtcp_latch: RtcpLatch,
    /// A foreign packet was logged (once per leg).
    foreign_logged: bool,
    /// How much audio the peer may still deliver ahead of real time.
    inbound_budget: InboundBudget,
    /// Times the RTP latch moved to another source.
    relatches: u64,
    /// RFC 3550 receiver statistics of the audio from the peer.
    pub stats: ReceiverStats,
    dtmf: DtmfDetector,
    ssrc: u32,
    seq: u16,
    timestamp: u32,
    /// Counters of what was sent.
    pub sent: SendCounters,
    last_rx: Instant,
    /// RFC 3550 §6.4 reports.
    pub rtcp: RtcpState,
    sent_at_last_report: u64,
    muted: bool,
    /// Key presses waiting to be sent, and the one being sent.
    dtmf_queue: VecDeque<DtmfTone>,
    dtmf_sending: Option<DtmfPackets>,
    /// Packets of audio between two generated digits (inter-digit pause).
    dtmf_gap: u8,
    /// `[rtp].timeout`.
    rtp_timeout: Duration,
    /// The timeout was reported for the current silence.
    timed_out: bool,
    /// (monotonic, wall) at creation, for RTCP's NTP timestamps.
    clock_base: (Instant, SystemTime),
    events: VecDeque<LegEvent>,
    /// Generated RTP (our own stream: PCM endpoints, echo, DTMF): allocated at
    /// the first packet and kept. A relayed leg never generates one, so it holds
    /// none (issue 20: memory per relayed call).
    out_rtp: Option<Box<Pending<{ 12 + MAX_OWN_PAYLOAD }>>>,
    /// Our RTCP report: allocated when one is built (every ~5 s) and freed once
    /// it has gone out.
    out_rtcp: Option<Box<Pending<256>>>,
}

impl RtpSession {
    /// A session for `audio`, latching by `latch` (its learning window opens at
    /// `now`), reporting an RTP timeout after `rtp_timeout` of silence. `wall` is
    /// the wall-clock time at `now` (RTCP's NTP timestamps are derived from it).
    pub fn new(
        audio: NegotiatedAudio,
        latch: LatchConfig,
        rtp_timeout: Duration,
        now: Instant,
        wall: SystemTime,
    ) -> Self {
        let ssrc = rand_u32();
        Self {
            latch: Latch::new(latch, audio.remote_rtp, now),
            rtcp_latch: RtcpLatch::new(audio.remote_rtcp),
            foreign_logged: false,
            inbound_budget: InboundBudget::default(),
            relatches: 0,
            audio,
            stats: ReceiverStats::new(audio.codec.rtp_clock_rate()),
            dtmf: DtmfDetector::new(Duration::from_millis(400)),
            ssrc,
            seq: rand_u32() as u16,
            timestamp: rand_u32(),
            sent: SendCounters::default(),
            last_rx: now,
            rtcp: RtcpState::new(ssrc, &format!("sipbridge-{ssrc:08x}"), now),
            sent_at_last_report: 0,
            muted: false,
            dtmf_queue: VecDeque::new(),
            dtmf_sending: None,
            dtmf_gap: 0,
            rtp_timeout,
            timed_out: false,
            clock_base: (now, wall),
            events: VecDeque::new(),
            out_rtp: None,
            out_rtcp: None,
        }
    }

    fn wall(&self, now: Instant) -> SystemTime {
        self.clock_base.1 + now.saturating_duration_since(self.clock_base.0)
    }

    /// Stops (or resumes) sending media on this leg; receiving goes on.
    pub fn set_muted(&mut self, muted: bool) {
        self.muted = muted;
    }

    /// The negotiated stream.
    pub fn audio(&self) -> &NegotiatedAudio {
        &self.audio
    }

    /// Our SSRC (RFC 3550 §3).
    pub fn ssrc(&self) -> u32 {
        self.ssrc
    }

    /// Applies a re-negotiation (re-INVITE/UPDATE, the answer to our offer) at
    /// `now`: the learning window opens again; a new SDP address forgets the
    /// latch; the RTP timeout starts over.
    pub fn update(&mut self, audio: NegotiatedAudio, now: Instant) {
        if self.latch.signalled(audio.remote_rtp, now) {
            tracing::debug!(sdp = ?audio.remote_rtp, "RTP latch reset by a new SDP address");
        }
        self.rtcp_latch.signalled(audio.remote_rtcp);
        self.audio = audio;
        self.last_rx = now;
        self.timed_out = false;
    }

    /// Logs the first foreign packet of the leg (debug; never per packet).
    fn log_foreign(&mut self, from: SocketAddr, what: &str) {
        if !self.foreign_logged {
            self.foreign_logged = true;
            tracing::debug!(?from, peer = ?self.latch.destination(), "{what} from a foreign source dropped (latching)");
        }
    }

    /// Takes a datagram that arrived on `socket` from `source` at `now`: RTCP is
    /// read (round-trip time, report counters), RTP is latched (a source other
    /// than the latched one is dropped and counted in
    /// `sipbridge_rtp_foreign_packets_dropped_total` / `..._rtcp_...`), counted in
    /// the statistics, and classified. A completed DTMF key press becomes an event.
    pub fn handle_receive(&mut self, socket: Socket, datagram: &[u8], source: SocketAddr, now: Instant) -> Received {
        let muxed_rtcp = socket == Socket::Rtp && is_rtcp(datagram);
        if socket == Socket::Rtcp || muxed_rtcp {
            // RTCP on its own port follows the RTCP latch; with rtcp-mux (RFC 5761)
            // it must come from the RTP peer itself.
            let accepted = if muxed_rtcp {
                self.latch.accepts_muxed_rtcp(source)
            } else {
                self.rtcp_latch.on_packet(source, &self.latch)
            };
            if !accepted {
                crate::security::RTCP_FOREIGN_DROPPED.inc();
                self.log_foreign(source, "RTCP");
                return Received::Nothing;
            }
            let wall = self.wall(now);
            self.rtcp.on_packet(datagram, now, wall);
            return Received::Nothing;
        }
        let Ok(p) = RtpPacket::parse(datagram) else { return Received::Nothing };
        let pt = p.payload_type();
        let is_audio = pt == self.audio.receive_payload_type;
        let is_event = Some(pt) == self.audio.receive_telephone_event;
        if !is_audio && !is_event {
            return Received::Nothing;
        }
        // Symmetric RTP (RFC 4961): answer where the media really comes from, and
        // only take media from there.
        let was = self.latch.latched();
        match self.latch.on_packet(source, now) {
            Verdict::Drop => {
                crate::security::RTP_FOREIGN_DROPPED.inc();
                self.log_foreign(source, "RTP");
                return Received::Nothing;
            }
            Verdict::Relatched => {
                self.relatches += 1;
                crate::security::RTP_RELATCHED.inc();
                tracing::debug!(?source, ?was, sdp = ?self.audio.remote_rtp, "RTP re-latched");
            }
            Verdict::Accept if was.is_none() && !self.latch.config().strict_source => {
                tracing::debug!(?source, sdp = ?self.audio.remote_rtp, "RTP latched");
            }
            Verdict::Accept => {}
        }
        self.last_rx = now;
        self.timed_out = false;
        if is_event {
            // Events share the audio stream's sequence numbers: count them, or every
            // key press would look like ~10 lost packets.
            self.stats.on_packet_without_timing(p.ssrc(), p.sequence_number(), now);
            let _ = self.dtmf.on_packet(p.timestamp(), p.payload(), now);
            // One packet can end a press whose end packets were lost and start the
            // next: take every completed digit.
            while let Some(d) = self.dtmf.poll_digit() {
                self.events.push_back(LegEvent::Dtmf(d.digit));
            }
            return Received::Event;
        }
        // Audio beyond twice real time (after a 2 s burst) is dropped here,
        // before anything decodes, transcodes or relays it.
        let units = u64::from(packet_units(self.audio.codec, p.payload()));
        let clock = u64::from(self.audio.codec.rtp_clock_rate().max(1));
        if !self.inbound_budget.take(units * 1_000_000_000 / clock, now) {
            crate::security::RTP_OVER_RATE_DROPPED.inc();
            if !self.inbound_budget.logged {
                self.inbound_budget.logged = true;
                tracing::warn!(?source, "RTP audio arriving faster than twice real time: the excess is dropped");
            }
            return Received::Nothing;
        }
        self.stats.on_packet(p.ssrc(), p.sequence_number(), p.timestamp(), now);
        Received::Audio { payload_offset: p.header_len(), payload_len: p.payload().len(), rtp_timestamp: p.timestamp() }
    }

    /// Times the RTP latch moved from one source to another (the SDP address
    /// taking over); audio buffered from the old source is stale then.
    pub fn relatches(&self) -> u64 {
        self.relatches
    }

    /// The next event (DTMF key press, RTP timeout, quality sample), oldest first.
    pub fn poll_event(&mut self) -> Option<LegEvent> {
        self.events.pop_front()
    }

    /// When [`RtpSession::handle_timeout`] must be called next: the earliest of
    /// the next RTCP report, the RTP timeout (while the peer should send and it
    /// was not reported yet) and a DTMF press's end timeout.
    pub fn poll_timeout(&self) -> Instant {
        let mut at = self.rtcp.next_report();
        if !self.timed_out && self.expects_media() {
            at = at.min(self.last_rx + self.rtp_timeout);
        }
        if let Some(d) = self.dtmf.poll_timeout() {
            at = at.min(d);
        }
        at
    }

    /// Runs what is due at `now`: a DTMF press whose end packets were all lost,
    /// the RTP timeout (reported once per silence), our RTCP report (then ready in
    /// [`RtpSession::poll_transmit`], with a [`LegEvent::Quality`] sample).
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.dtmf.poll_timeout().is_some_and(|at| now >= at) {
            self.dtmf.handle_timeout(now);
            while let Some(d) = self.dtmf.poll_digit() {
                self.events.push_back(LegEvent::Dtmf(d.digit));
            }
        }
        if !self.timed_out && self.expects_media() && now >= self.last_rx + self.rtp_timeout {
            self.timed_out = true;
            self.events.push_back(LegEvent::Timeout(self.rtp_timeout));
        }
        if now >= self.rtcp.next_report() {
            self.build_rtcp(now);
        }
    }

    /// Builds our RTCP report (SR if we sent RTP since the last one, else RR) for
    /// the peer's RTCP address: with rtcp-mux where RTP goes (from the RTP port),
    /// else `latch::RtcpLatch::destination` (`a=rtcp`, the latched RTCP source, or
    /// the latched RTP address's port + 1, RFC 3550 §11).
    fn build_rtcp(&mut self, now: Instant) {
        let sender = (self.sent.packets > self.sent_at_last_report).then_some(SenderInfo {
            rtp_timestamp: self.timestamp,
            packets: self.sent.packets as u32,
            octets: self.sent.payload_bytes as u32,
        });
        self.sent_at_last_report = self.sent.packets;
        let block = self.stats.report_block();
        let wall = self.wall(now);
        let out = self.out_rtcp.get_or_insert_with(|| Box::new(Pending::new()));
        let n = self.rtcp.build(&mut out.buf, sender, block, now, wall);
        let dest =
            if self.audio.rtcp_mux { self.latch.destination() } else { self.rtcp_latch.destination(&self.latch) };
        out.len = n;
        out.destination = dest.filter(|_| n > 0);
        // The report interval is the sampling interval of the call's quality series.
        let sample = self.quality_sample(now);
        self.events.push_back(LegEvent::Quality(Box::new(sample)));
    }

    /// The receiver figures at `now` (cumulative since the session began): what
    /// every RTCP report also emits as [`LegEvent::Quality`], and the last point
    /// of the series when the media stops.
    pub fn quality_sample(&self, now: Instant) -> QualitySample {
        QualitySample {
            at: now,
            received: self.stats.received(),
            expected: self.stats.expected(),
            jitter: self.stats.jitter_duration(),
            sent: self.sent.packets,
        }
    }

    /// The next datagram to send, if any (RTCP first); each is returned once.
    pub fn poll_transmit(&mut self) -> Option<Transmit<'_>> {
        if self.out_rtcp.as_ref().is_some_and(|p| p.destination.is_some()) {
            let socket = if self.audio.rtcp_mux { Socket::Rtp } else { Socket::Rtcp };
            let p = self.out_rtcp.as_mut()?;
            let destination = p.destination.take()?;
            return Some(Transmit { socket, destination, contents: &p.buf[..p.len] });
        }
        // A report handed out by the previous call has been sent by now.
        self.out_rtcp = None;
        let p = self.out_rtp.as_mut()?;
        let destination = p.destination.take()?;
        Some(Transmit { socket: Socket::Rtp, destination, contents: &p.buf[..p.len] })
    }

    /// Whether the peer is expected to send (not on hold towards us).
    pub fn expects_media(&self) -> bool {
        self.audio.direction.receives()
    }

    /// Queues key presses to send as RFC 4733 events (`0-9*#A-D`, each held for
    /// `duration`, 3 end packets, ~40 ms between digits). They replace the audio
    /// packets of [`RtpSession::send_audio`] while they play.
    ///
    /// Errors: the peer did not negotiate `telephone-event`, or a character is not
    /// a DTMF digit (nothing is queued then).
    pub fn queue_dtmf(&mut self, digits: &str, duration: Duration) -> Result<(), String> {
        if self.audio.telephone_event.is_none() {
            return Err("the peer did not negotiate telephone-event (RFC 4733)".into());
        }
        if let Some(bad) = digits.chars().find(|c| digit_to_event(*c).is_none()) {
            return Err(format!("{bad:?} is not a DTMF digit (0-9, *, #, A-D)"));
        }
        let ptime = Duration::from_millis(u64::from(self.audio.ptime_ms.max(10)));
        self.dtmf_queue.extend(digits.chars().map(|digit| DtmfTone { digit, duration, volume: 10, ptime }));
        Ok(())
    }

    /// The next generated telephone-event packet due instead of audio, if any:
    /// (marker, RTP timestamp of the event start, payload).
    fn next_dtmf_packet(&mut self) -> Option<(bool, u32, [u8; 4])> {
        if self.dtmf_sending.is_none() {
            if self.dtmf_gap > 0 {
                self.dtmf_gap -= 1;
                return None;
            }
            let tone = self.dtmf_queue.pop_front()?;
            self.dtmf_sending = generate_at(&tone, self.seq, self.timestamp, self.audio.codec.rtp_clock_rate()).ok();
        }
        match self.dtmf_sending.as_mut()?.next() {
            Some(p) => Some((p.marker, p.timestamp, p.payload)),
            None => {
                self.dtmf_sending = None;
                self.dtmf_gap = 2;
                None
            }
        }
    }

    /// Makes the next packet of our stream from `payload` (in the leg's codec, at
    /// most 480 bytes), ready in [`RtpSession::poll_transmit`]; a queued RFC 4733
    /// event packet goes in its place. The RTP timestamp advances by the packet's
    /// duration ([`packet_units`]). Skipped (the RTP clock still advances) while we
    /// may not send (hold, muted) or know no address.
    pub fn send_audio(&mut self, payload: &[u8], marker: bool) {
        let samples = packet_units(self.audio.codec, payload);
        if !self.audio.direction.sends() || self.muted {
            self.timestamp = self.timestamp.wrapping_add(samples);
            return;
        }
        let Some(dest) = self.latch.destination() else { return };
        let event = self.next_dtmf_packet();
        let header = match (event, self.audio.telephone_event) {
            (Some((event_marker, event_ts, _)), Some(pt)) => RtpHeader {
                marker: event_marker,
                payload_type: pt,
                sequence_number: self.seq,
                timestamp: event_ts,
                ssrc: self.ssrc,
            },
            _ => RtpHeader {
                marker,
                payload_type: self.audio.payload_type,
                sequence_number: self.seq,
                timestamp: self.timestamp,
                ssrc: self.ssrc,
            },
        };
        let body: &[u8] = match &event {
            Some((_, _, p)) if self.audio.telephone_event.is_some() => p,
            _ => payload,
        };
        let out = self.out_rtp.get_or_insert_with(|| Box::new(Pending::new()));
        let Ok(n) = header.write(body, &mut out.buf) else { return };
        out.len = n;
        out.destination = Some(dest);
        self.seq = self.seq.wrapping_add(1);
        self.timestamp = self.timestamp.wrapping_add(samples);
        self.sent.packets += 1;
        self.sent.payload_bytes += u64::from(samples);
    }

    /// Relaying (B2BUA media anchor): rewrites `packet`, received on the other
    /// leg (`from`, classified as `kind`), in place for this leg — the payload
    /// type mapped to ours, PCMU↔PCMA transcoded by table when the codecs differ
    /// (any other pair of different codecs: `None`, the caller transcodes);
    /// RFC 4733 events mapped to our telephone-event type (dropped when this leg
    /// did not negotiate one). SSRC, sequence numbers and timestamps pass through,
    /// as a media relay does. Returns where to send it from our RTP port (it is
    /// counted as sent), or `None` to drop it (nothing to relay, hold, muted, no
    /// address).
    pub fn relay_from(&mut self, packet: &mut [u8], kind: Received, from: &NegotiatedAudio) -> Option<SocketAddr> {
        if !self.audio.direction.sends() || self.muted {
            return None;
        }
        let dest = self.latch.destination()?;
        let mut p = RtpPacketMut::parse(packet).ok()?;
        let payload_len = match kind {
            Received::Audio { payload_len, .. } => {
                let (src, dst) = (from.codec, self.audio.codec);
                if src != dst {
                    // PCMU↔PCMA by table; other pairs are decoded and re-encoded
                    // by the relay job (`media::engine::convert`), never here.
                    let (Some(src), Some(dst)) = (src.g711(), dst.g711()) else { return None };
                    transcode_in_place(src, dst, p.payload_mut());
                }
                p.set_payload_type(self.audio.payload_type);
                payload_len
            }
            Received::Event => {
                p.set_payload_type(self.audio.telephone_event?);
                0
            }
            Received::Nothing => return None,
        };
        self.sent.packets += 1;
        self.sent.payload_bytes += payload_len as u64;
        Some(dest)
    }

    /// The Telnyx `call_quality_stats` object: `inbound` from the receiver
    /// statistics, `outbound` from what was sent.
    pub fn quality_json(&self) -> serde_json::Value {
        // One-way delay for the E-model: half the RTCP round trip when known.
        let delay = self.rtcp.rtt().map_or(Duration::from_millis(40), |rtt| rtt / 2);
        let inbound = self.stats.call_quality_stats(delay, true).to_telnyx_json();
        serde_json::json!({
            "inbound": inbound,
            "outbound": {
                "packet_count": self.sent.packets.to_string(),
                "skip_packet_count": "0",
            },
        })
    }
}

/// Audio a latched peer may deliver at once ahead of real time: what a network
/// stall of this long releases in one burst still plays.
pub const INBOUND_BURST: Duration = Duration::from_secs(2);
/// Audio a latched peer may deliver per second of real time, sustained. More is
/// a flood: on a G.722/Opus leg each packet is decoded (and, transcoded, up to six
/// 20 ms Opus frames encoded for one 120 ms packet), so an unbounded peer could
/// take a core of a small box by flooding its own call.
pub const INBOUND_RATE: u64 = 2;
/// The least media time a packet costs (2.5 ms, Opus's shortest frame, RFC 6716
/// §2.1.4): tiny or unreadable packets are bounded to 800 a second too.
const MIN_PACKET_NS: u64 = 2_500_000;

/// A token bucket of media time, in nanoseconds: it refills at
/// [`INBOUND_RATE`]× real time up to [`INBOUND_BURST`], and each audio packet
/// takes its duration (at least [`MIN_PACKET_NS`]). Codec-independent, so a
/// re-INVITE that changes the clock rate keeps it.
#[derive(Debug, Default)]
struct InboundBudget {
    ns: u64,
    at: Option<Instant>,
    /// The first drop was logged (once per leg).
    logged: bool,
}

impl InboundBudget {
    /// Takes `cost_ns` of media time at `now`; `false` (nothing taken) when the
    /// peer is beyond its budget.
    fn take(&mut self, cost_ns: u64, now: Instant) -> bool {
        let cap = INBOUND_BURST.as_nanos() as u64;
        self.ns = match self.at {
            None => cap,
            Some(t) => {
                let elapsed = u64::try_from(now.saturating_duration_since(t).as_nanos()).unwrap_or(u64::MAX);
                self.ns.saturating_add(elapsed.saturating_mul(INBOUND_RATE)).min(cap)
            }
        };
        self.at = Some(now);
        let cost = cost_ns.max(MIN_PACKET_NS);
        if self.ns < cost {
            return false;
        }
        self.ns -= cost;
        true
    }
}

/// The duration of an audio payload in RTP timestamp units of `codec`'s clock:
/// G.711 one unit per byte; G.722 also one (2 samples at 16 kHz per byte, on its
/// 8000 Hz RTP clock, RFC 3551 §4.5.2); Opus from the packet's TOC byte (RFC 6716
/// §3.1: frame size by configuration, frame count by code,
/// `media::codec::opus_packet_samples`), in 48 kHz units, at most 120 ms; 0 for an
/// empty or malformed Opus packet.
pub fn packet_units(codec: AudioCodec, payload: &[u8]) -> u32 {
    match codec {
        AudioCodec::Pcmu | AudioCodec::Pcma | AudioCodec::G722 => payload.len() as u32,
        // 48 kHz units: 3 per 16 kHz sample.
        AudioCodec::Opus => crate::media::codec::opus_packet_samples(payload).map_or(0, |n| n as u32 * 3),
    }
}

fn rand_u32() -> u32 {
    let b = uuid::Uuid::new_v4().into_bytes();
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::g711::G711;
    use crate::sdp::Direction;

    const A: &str = "127.0.0.1:40000";
    const B: &str = "127.0.0.1:40010";

    fn audio_to(peer: &str) -> NegotiatedAudio {
        let remote: SocketAddr = peer.parse().unwrap();
        NegotiatedAudio {
            codec: G711::Pcmu.into(),
            payload_type: 0,
            receive_payload_type: 0,
            telephone_event: Some(101),
            receive_telephone_event: Some(101),
            remote_rtp: Some(remote),
            remote_rtcp: Some(SocketAddr::new(remote.ip(), remote.port() + 1)),
            rtcp_mux: false,
            ptime_ms: 20,
            direction: Direction::SendRecv,
        }
    }

    /// Two sessions "A" (at `A`) and "B" (at `B`) wired to each other, on one
    /// fake clock.
    struct Pair {
        a: RtpSession,
        b: RtpSession,
        now: Instant,
    }

    impl Pair {
        fn new() -> Self {
            let now = Instant::now();
            let wall = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
            let t = Duration::from_secs(5);
            Pair {
                a: RtpSession::new(audio_to(B), LatchConfig::default(), t, now, wall),
                b: RtpSession::new(audio_to(A), LatchConfig::default(), t, now, wall),
                now,
            }
        }

        /// Delivers everything A has to send to B (source = A's port of the
        /// socket); returns what B made of each datagram.
        fn a_to_b(&mut self) -> Vec<(Socket, Received, Vec<u8>)> {
            deliver(&mut self.a, A, &mut self.b, B, self.now)
        }

        fn b_to_a(&mut self) -> Vec<(Socket, Received, Vec<u8>)> {
            deliver(&mut self.b, B, &mut self.a, A, self.now)
        }

        fn advance(&mut self, d: Duration) {
            self.now += d;
        }
    }

    /// Hands every pending datagram of `from` (at `from_addr`) to `to` (at
    /// `to_addr`), on the port it was addressed to.
    fn deliver(
        from: &mut RtpSession,
        from_addr: &str,
        to: &mut RtpSession,
        to_addr: &str,
        now: Instant,
    ) -> Vec<(Socket, Received, Vec<u8>)> {
        let (base, to_base): (SocketAddr, SocketAddr) = (from_addr.parse().unwrap(), to_addr.parse().unwrap());
        let mut out = Vec::new();
        while let Some(t) = from.poll_transmit() {
            let port = if t.socket == Socket::Rtp { base.port() } else { base.port() + 1 };
            let socket = if t.destination.port() == to_base.port() + 1 { Socket::Rtcp } else { Socket::Rtp };
            let (sent_from, bytes) = (t.socket, t.contents.to_vec());
            let r = to.handle_receive(socket, &bytes, SocketAddr::new(base.ip(), port), now);
            out.push((sent_from, r, bytes));
        }
        out
    }

    /// RTP one way with its statistics, then an SR from A and an RR from B whose
    /// LSR/DLSR give A a round-trip time (RFC 3550 §6.4.1); muting stops sending.
    #[test]
    fn rtp_and_rtcp_between_two_sessions() {
        let mut p = Pair::new();
        for _ in 0..10 {
            p.a.send_audio(&[0xff; 160], false);
            let got = p.a_to_b();
            assert_eq!(got.len(), 1);
            assert!(matches!(got[0].1, Received::Audio { payload_len: 160, payload_offset: 12, .. }));
            assert_eq!(got[0].1.payload(&got[0].2).unwrap(), &[0xff; 160][..]);
            p.advance(Duration::from_millis(20));
        }
        assert_eq!(p.a.sent.packets, 10);
        assert_eq!(p.b.stats.received(), 10);
        // A's report falls due: an SR (A sent RTP) to B's RTCP port.
        let due = p.a.poll_timeout();
        assert!(due > p.now && due <= p.now + Duration::from_secs(5), "{due:?}");
        p.now = due;
        p.a.handle_timeout(p.now);
        let got = p.a_to_b();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].0, Socket::Rtcp);
        assert_eq!(got[0].2[1], 200, "an SR, since A sent RTP");
        // 30 ms later B reports: an RR (B sent nothing) carrying LSR and DLSR.
        p.advance(Duration::from_millis(30));
        p.now = p.now.max(p.b.poll_timeout());
        p.b.handle_timeout(p.now);
        let got = p.b_to_a();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].2[1], 201, "an RR, since B sent nothing");
        assert_eq!(p.a.rtcp.received_reports, 1);
        let rtt = p.a.rtcp.rtt().expect("RTT from LSR/DLSR");
        assert!(rtt < Duration::from_millis(5), "no network delay on a fake clock: {rtt:?}");
        // Muted: nothing is made.
        p.a.set_muted(true);
        p.a.send_audio(&[0xff; 160], false);
        assert!(p.a.poll_transmit().is_none());
        assert_eq!(p.a.sent.packets, 10);
    }

    /// `send_dtmf`: generated RFC 4733 events replace audio packets while they
    /// play; the receiving session reports each key press exactly once; audio
    /// resumes with continuous sequence numbers.
    #[test]
    fn generated_dtmf_is_detected_once_per_digit() {
        let mut p = Pair::new();
        assert!(p.a.queue_dtmf("1x", Duration::from_millis(100)).is_err(), "not a digit: nothing queued");
        p.a.queue_dtmf("1#", Duration::from_millis(100)).unwrap();
        let (mut digits, mut audio, mut events) = (Vec::new(), 0, 0);
        let mut last_seq = None;
        for _ in 0..30 {
            p.a.send_audio(&[0xff; 160], false);
            for (_, r, bytes) in p.a_to_b() {
                let seq = u16::from_be_bytes([bytes[2], bytes[3]]);
                if let Some(prev) = last_seq {
                    assert_eq!(seq, u16::wrapping_add(prev, 1), "one sequence for audio and events");
                }
                last_seq = Some(seq);
                match r {
                    Received::Event => events += 1,
                    Received::Audio { .. } => audio += 1,
                    Received::Nothing => {}
                }
            }
            while let Some(e) = p.b.poll_event() {
                if let LegEvent::Dtmf(d) = e {
                    digits.push(d);
                }
            }
            p.advance(Duration::from_millis(20));
        }
        assert_eq!(digits, ['1', '#']);
        // 100 ms at 20 ms ptime: 4 updates + 3 end packets per digit.
        assert_eq!(events, 14);
        assert_eq!(audio, 16);
    }

    /// A press whose end packets are all lost is reported once its end timeout
    /// has passed on the fake clock, not before.
    #[test]
    fn a_press_without_end_packets_ends_by_timeout() {
        let mut p = Pair::new();
        p.a.queue_dtmf("5", Duration::from_millis(200)).unwrap();
        // Deliver only the first two (non-end) event packets.
        for _ in 0..2 {
            p.a.send_audio(&[0xff; 160], false);
            p.a_to_b();
            p.advance(Duration::from_millis(20));
        }
        assert_eq!(p.b.poll_event(), None);
        let due = p.b.poll_timeout();
        p.now = due - Duration::from_millis(1);
        p.b.handle_timeout(p.now);
        assert_eq!(p.b.poll_event(), None, "not before its timeout");
        p.now = due;
        p.b.handle_timeout(p.now);
        assert_eq!(p.b.poll_event(), Some(LegEvent::Dtmf('5')));
    }

    /// No RTP for `[rtp].timeout`: one event per silence; hold (recvonly on the
    /// peer's side = we do not expect media) reports nothing.
    #[test]
    fn rtp_timeout_is_reported_once_per_silence() {
        let mut p = Pair::new();
        p.a.send_audio(&[0xff; 160], false);
        p.a_to_b();
        let mut timeouts = 0;
        for _ in 0..200 {
            p.advance(Duration::from_millis(50));
            if p.now >= p.b.poll_timeout() {
                p.b.handle_timeout(p.now);
            }
            while let Some(e) = p.b.poll_event() {
                if matches!(e, LegEvent::Quality(_)) {
                    continue;
                }
                assert_eq!(e, LegEvent::Timeout(Duration::from_secs(5)));
                timeouts += 1;
            }
            while p.b.poll_transmit().is_some() {}
        }
        assert_eq!(timeouts, 1, "10 s of silence, one report");
        // Media comes back, then stops again: a second report.
        p.a.send_audio(&[0xff; 160], false);
        p.a_to_b();
        p.advance(Duration::from_secs(6));
        p.b.handle_timeout(p.now);
        assert_eq!(p.b.poll_event(), Some(LegEvent::Timeout(Duration::from_secs(5))));
        // On hold towards us: nothing expected, nothing reported.
        let mut held = audio_to(A);
        held.direction = Direction::SendOnly;
        p.b.update(held, p.now);
        while p.b.poll_event().is_some() {}
        p.advance(Duration::from_secs(30));
        p.b.handle_timeout(p.now);
        assert!(
            std::iter::from_fn(|| p.b.poll_event()).all(|e| matches!(e, LegEvent::Quality(_))),
            "no timeout on hold"
        );
    }

    /// A sends 20 ms packets to B for `ms` on the fake clock, dropping those
    /// `lose(n)` says (n = A's packet number from 0); both sessions' timers run.
    /// Returns B's quality samples, in order.
    fn stream_a_to_b(p: &mut Pair, ms: u64, lose: impl Fn(u64) -> bool) -> Vec<QualitySample> {
        let mut samples = Vec::new();
        for _ in 0..ms / 20 {
            let n = p.a.sent.packets;
            p.a.send_audio(&[0xff; 160], false);
            if lose(n) {
                while p.a.poll_transmit().is_some() {}
            } else {
                p.a_to_b();
            }
            p.advance(Duration::from_millis(20));
            for s in [&mut p.a, &mut p.b] {
                if p.now >= s.poll_timeout() {
                    s.handle_timeout(p.now);
                }
            }
            // RTCP between them is not what this is about.
            while p.a.poll_transmit().is_some() {}
            while p.b.poll_transmit().is_some() {}
            while let Some(e) = p.b.poll_event() {
                if let LegEvent::Quality(q) = e {
                    samples.push(*q);
                }
            }
        }
        samples
    }

    /// Each RTCP report also yields a cumulative sample of the receiver
    /// figures: the first at half the interval, then every interval; a clean
    /// stream has received = expected and no jitter.
    #[test]
    fn every_rtcp_report_yields_a_quality_sample() {
        let mut p = Pair::new();
        let start = p.now;
        let samples = stream_a_to_b(&mut p, 13_000, |_| false);
        let at: Vec<u128> = samples.iter().map(|s| (s.at - start).as_millis()).collect();
        assert_eq!(at, [2500, 7500, 12_500], "at RTCP reports: 2.5 s, then every 5 s");
        for (i, s) in samples.iter().enumerate() {
            assert_eq!(s.received, s.expected, "{i}: nothing lost");
            assert_eq!(s.jitter, Duration::ZERO, "{i}: packets exactly 20 ms apart");
            assert_eq!(s.sent, 0, "B sends nothing");
        }
        // 125 packets in 2.5 s, 250 more per 5 s (±1 for where the tick falls).
        assert!(samples[0].received.abs_diff(125) <= 1, "{samples:?}");
        assert!((samples[1].received - samples[0].received).abs_diff(250) <= 1, "{samples:?}");
        // A's own sample counts what it sent; taking one changes nothing.
        let a = p.a.quality_sample(p.now);
        assert_eq!((a.sent, a.received, a.at), (650, 0, p.now));
        assert_eq!(p.a.quality_sample(p.now), a);
    }

    /// Packets lost between two reports show in the samples: the difference of
    /// `expected − received` between consecutive samples is what was lost then.
    #[test]
    fn lost_packets_show_in_the_samples() {
        let mut p = Pair::new();
        // Every 10th packet lost between 3 s and 7 s (packets 150..350): 20 lost,
        // all in the second interval (2.5–7.5 s); none in the third.
        let samples = stream_a_to_b(&mut p, 13_000, |n| (150..350).contains(&n) && n % 10 == 5);
        assert_eq!(samples.len(), 3);
        let lost: Vec<u64> = samples.iter().map(|s| s.expected - s.received).collect();
        assert_eq!(lost, [0, 20, 20], "cumulative: 20 lost in the second interval only");
        let second = (samples[1].expected - samples[0].expected, samples[1].received - samples[0].received);
        assert!(second.0.abs_diff(250) <= 1 && second.0 - second.1 == 20, "{second:?}");
        // Losses make gaps in arrival: jitter stays 0 on a fake clock with exact
        // spacing, since timestamps advance with the lost packets too.
        assert_eq!(samples[2].jitter, Duration::ZERO);
    }

    /// Jitter in the samples: packets arriving ±10 ms off their 20 ms grid give
    /// B a jitter estimate of several ms (RFC 3550 A.8), reported as a Duration.
    #[test]
    fn jittery_arrival_shows_in_the_samples() {
        let mut p = Pair::new();
        let mut samples = Vec::new();
        for i in 0..400u64 {
            p.a.send_audio(&[0xff; 160], false);
            // Alternately 10 ms late and on time.
            let late = if i % 2 == 1 { Duration::from_millis(10) } else { Duration::ZERO };
            let t = p.now + late;
            let from: SocketAddr = A.parse().unwrap();
            while let Some(tx) = p.a.poll_transmit() {
                let bytes = tx.contents.to_vec();
                p.b.handle_receive(Socket::Rtp, &bytes, from, t);
            }
            p.advance(Duration::from_millis(20));
            if p.now >= p.b.poll_timeout() {
                p.b.handle_timeout(p.now);
            }
            while p.b.poll_transmit().is_some() {}
            while let Some(e) = p.b.poll_event() {
                if let LegEvent::Quality(q) = e {
                    samples.push(*q);
                }
            }
        }
        assert_eq!(samples.len(), 2, "{samples:?}");
        let j = samples[1].jitter;
        assert!(j > Duration::from_millis(5) && j < Duration::from_millis(15), "{j:?}");
    }

    /// The RTP clock advances by each packet's duration in the codec's units.
    #[test]
    fn rtp_clock_advances_by_each_codecs_packet_duration() {
        assert_eq!(packet_units(AudioCodec::Pcmu, &[0; 160]), 160);
        assert_eq!(packet_units(AudioCodec::G722, &[0; 160]), 160, "G.722: 8000 Hz clock, 2 samples a byte");
        // Opus (RFC 6716 Table 2): SILK WB 20 ms, CELT FB 20 ms, three 20 ms frames (code 3).
        assert_eq!(packet_units(AudioCodec::Opus, &[9 << 3, 0, 0]), 960);
        assert_eq!(packet_units(AudioCodec::Opus, &[31 << 3, 0, 0]), 960);
        assert_eq!(packet_units(AudioCodec::Opus, &[(9 << 3) | 3, 3, 0, 0]), 2880);
        assert_eq!(packet_units(AudioCodec::Opus, &[]), 0, "empty");
        assert_eq!(packet_units(AudioCodec::Opus, &[(11 << 3) | 3, 63]), 0, "longer than 120 ms");
    }

    /// A third party sends RTP at a latched session: dropped, counted, not in
    /// the statistics, and our audio still goes to the latched peer.
    #[test]
    fn foreign_rtp_is_dropped_and_not_answered() {
        let mut p = Pair::new();
        p.a.send_audio(&[0x11; 160], false);
        assert!(matches!(p.a_to_b()[0].1, Received::Audio { .. }), "A latches");
        let before = crate::security::RTP_FOREIGN_DROPPED.get();
        let received = p.b.stats.received();
        let header = RtpHeader { marker: false, payload_type: 0, sequence_number: 1, timestamp: 0, ssrc: 7 };
        let mut pkt = [0u8; 200];
        let len = header.write(&[0x22; 160], &mut pkt).unwrap();
        let attacker: SocketAddr = "127.0.0.9:5555".parse().unwrap();
        assert_eq!(p.b.handle_receive(Socket::Rtp, &pkt[..len], attacker, p.now), Received::Nothing);
        assert!(crate::security::RTP_FOREIGN_DROPPED.get() > before);
        assert_eq!(p.b.stats.received(), received, "the foreign packet is not in the statistics");
        p.b.send_audio(&[0x33; 160], false);
        let t = p.b.poll_transmit().unwrap();
        assert_eq!(t.destination, A.parse::<SocketAddr>().unwrap(), "answered to the latched peer only");
    }

    /// Relaying: PCMU from A rewritten in place for a PCMA leg with other payload
    /// type numbers (audio transcoded by table, events remapped); SSRC, sequence
    /// and timestamp pass through; a leg without telephone-event drops events.
    #[test]
    fn relay_rewrites_payload_type_and_transcodes() {
        let mut p = Pair::new();
        let now = p.now;
        let wall = SystemTime::now();
        let mut far_audio = audio_to("127.0.0.1:40020");
        far_audio.codec = G711::Pcma.into();
        far_audio.payload_type = 8;
        far_audio.telephone_event = Some(96);
        let mut far = RtpSession::new(far_audio, LatchConfig::default(), Duration::from_secs(5), now, wall);
        p.a.send_audio(&[0xff; 160], false);
        let mut t = p.a.poll_transmit().map(|t| t.contents.to_vec()).unwrap();
        let kind = p.b.handle_receive(Socket::Rtp, &t, A.parse().unwrap(), now);
        let (ssrc, seq) = (t[8..12].to_vec(), t[2..4].to_vec());
        let dest = far.relay_from(&mut t, kind, p.b.audio()).expect("relayed");
        assert_eq!(dest, "127.0.0.1:40020".parse::<SocketAddr>().unwrap());
        assert_eq!(t[1] & 0x7f, 8);
        assert_eq!(&t[8..12], &ssrc[..]);
        assert_eq!(&t[2..4], &seq[..]);
        let mut pcma = [0xffu8; 160];
        transcode_in_place(G711::Pcmu, G711::Pcma, &mut pcma);
        assert_eq!(&t[12..], &pcma[..]);
        // An event is remapped to 96.
        p.a.queue_dtmf("7", Duration::from_millis(40)).unwrap();
        p.a.send_audio(&[0xff; 160], false);
        let mut e = p.a.poll_transmit().map(|t| t.contents.to_vec()).unwrap();
        let kind = p.b.handle_receive(Socket::Rtp, &e, A.parse().unwrap(), now);
        assert_eq!(kind, Received::Event);
        assert!(far.relay_from(&mut e, kind, p.b.audio()).is_some());
        assert_eq!(e[1] & 0x7f, 96);
        let mut no_events_audio = far.audio;
        no_events_audio.telephone_event = None;
        far.update(no_events_audio, now);
        assert!(far.relay_from(&mut e, kind, p.b.audio()).is_none(), "dropped, not sent with an unknown type");
        assert_eq!(far.sent.packets, 2);
    }

    /// An RTP packet of `pt` from the peer with `payload`.
    fn rtp_packet(seq: u16, ts: u32, pt: u8, payload: &[u8]) -> Vec<u8> {
        let mut b = vec![0x80, pt, (seq >> 8) as u8, seq as u8];
        b.extend(ts.to_be_bytes());
        b.extend(0x1234_5678u32.to_be_bytes());
        b.extend_from_slice(payload);
        b
    }

    /// The latched peer's audio is taken up to twice real time after a 2 s
    /// burst: a real-time stream and a stall's burst lose nothing; a flood of
    /// 20 ms packets, of 1-byte packets or of 120 ms Opus packets is cut to the
    /// budget before anything decodes it, and counted.
    #[test]
    fn audio_beyond_twice_real_time_is_dropped_before_it_costs_anything() {
        let peer: SocketAddr = B.parse().unwrap();
        let t0 = Instant::now();
        let wall = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let new = |audio| RtpSession::new(audio, LatchConfig::default(), Duration::from_secs(5), t0, wall);
        let audio_of = |r: &Received| matches!(r, Received::Audio { .. });
        // 60 s of 20 ms PCMU in real time, then a 2 s stall and its 100 packets at once.
        let mut s = new(audio_to(B));
        let mut seq = 0u16;
        let mut taken = 0;
        for k in 0..3000u32 {
            let now = t0 + Duration::from_millis(20 * u64::from(k));
            let r = s.handle_receive(Socket::Rtp, &rtp_packet(seq, k * 160, 0, &[0xff; 160]), peer, now);
            taken += usize::from(audio_of(&r));
            seq = seq.wrapping_add(1);
        }
        let after_stall = t0 + Duration::from_secs(62);
        for k in 0..100u32 {
            let r =
                s.handle_receive(Socket::Rtp, &rtp_packet(seq, 480_000 + k * 160, 0, &[0xff; 160]), peer, after_stall);
            taken += usize::from(audio_of(&r));
            seq = seq.wrapping_add(1);
        }
        assert_eq!(taken, 3100, "real time and a 2 s burst: nothing dropped");

        // A flood: 10 000 packets of 20 ms in one second (200 s of audio).
        let before = crate::security::RTP_OVER_RATE_DROPPED.get();
        let mut s = new(audio_to(B));
        let taken = (0..10_000u32)
            .filter(|&k| {
                let now = t0 + Duration::from_micros(100 * u64::from(k));
                let p = rtp_packet(k as u16, k * 160, 0, &[0xff; 160]);
                audio_of(&s.handle_receive(Socket::Rtp, &p, peer, now))
            })
            .count();
        // 2 s of burst plus 2 s per second of real time: 4 s = 200 packets.
        assert!((195..=205).contains(&taken), "{taken} of 10 000 taken");
        assert!(crate::security::RTP_OVER_RATE_DROPPED.get() >= before + 9_795, "counted");

        // Tiny packets cost 2.5 ms each: 1 600 in that second.
        let mut s = new(audio_to(B));
        let taken = (0..10_000u32)
            .filter(|&k| {
                let now = t0 + Duration::from_micros(100 * u64::from(k));
                audio_of(&s.handle_receive(Socket::Rtp, &rtp_packet(k as u16, k, 0, &[0xff]), peer, now))
            })
            .count();
        assert!((1_590..=1_610).contains(&taken), "{taken} tiny packets taken");

        // Opus: 120 ms packets (TOC config 3, SILK 60 ms, code 1: two frames) at
        // 100 a second, 12x real time, for 2 s: 2 s + 4 s of budget = 50 packets.
        let opus = NegotiatedAudio {
            codec: AudioCodec::Opus,
            payload_type: 111,
            receive_payload_type: 111,
            receive_telephone_event: None,
            telephone_event: None,
            ..audio_to(B)
        };
        assert_eq!(packet_units(AudioCodec::Opus, &[(3 << 3) | 1, 0, 0]), 120 * 48);
        let mut s = new(opus);
        let taken = (0..200u32)
            .filter(|&k| {
                let now = t0 + Duration::from_millis(10 * u64::from(k));
                let p = rtp_packet(k as u16, k * 5760, 111, &[(3 << 3) | 1, 0, 0]);
                audio_of(&s.handle_receive(Socket::Rtp, &p, peer, now))
            })
            .count();
        assert!((49..=51).contains(&taken), "{taken} Opus packets of 120 ms taken");
    }
}
