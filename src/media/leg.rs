//! One RTP leg's socket shell: receives and sends RTP for a negotiated stream,
//! around the sans-IO cores (`rtp` view, `stats` RFC 3550 receiver statistics,
//! `dtmf` RFC 4733 detector).
//!
//! - Symmetric RTP / latching (`latch`): media is sent to the SDP address until
//!   packets arrive, then to where they actually come from (NAT); once latched,
//!   RTP and RTCP from any other source are dropped and counted
//!   (`crate::security`), never forwarded or answered.
//! - Per packet: no heap allocation (stack buffers), no lock, no logging above
//!   `trace`.
//! - Timeout: no RTP for `[rtp].timeout` while the peer is supposed to send
//!   (not on hold) is reported once.
//!
//! The tasks that use a leg own it (`run_echo`; `pcm::run_pcm` for voice agents
//! and rooms; `bridge::run_relay` for two bridged legs): one task per call,
//! nothing shared across calls.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

use super::dtmf::{DtmfDetector, DtmfPackets, DtmfTone, digit_to_event, generate};
use super::latch::{Latch, LatchConfig, RtcpLatch, Verdict};
use super::ports::PortPair;
use super::rtcp::{RtcpState, SenderInfo};
use super::rtp::{RtpHeader, RtpPacket, is_rtcp};
use super::stats::ReceiverStats;
use crate::sdp::NegotiatedAudio;

/// Largest datagram handled (Ethernet MTU; G.711 at 120 ms is 972 bytes).
pub const MAX_DATAGRAM: usize = 1500;

/// A listener on a call's audio (the recorder): G.711 payloads as they pass,
/// `heard` = received from the caller's leg, `said` = sent to the caller.
/// Implementations must not block (the media task calls them per packet).
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
}

/// What a leg tells the call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LegEvent {
    /// An RFC 4733 key press (one per press).
    Dtmf(char),
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

/// A negotiated RTP stream on a bound port pair.
pub struct RtpLeg {
    ports: PortPair,
    audio: NegotiatedAudio,
    /// Which source RTP is taken from and sent to.
    latch: Latch,
    /// Which source RTCP (on its own port) is taken from and sent to.
    rtcp_latch: RtcpLatch,
    /// A foreign packet was logged (once per leg).
    foreign_logged: bool,
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
    /// RTCP reports (RFC 3550 §6.4).
    pub rtcp: RtcpState,
    sent_at_last_report: u64,
    muted: bool,
    /// Key presses waiting to be sent, and the one being sent.
    dtmf_queue: VecDeque<DtmfTone>,
    dtmf_sending: Option<DtmfPackets>,
    /// Packets of audio between two generated digits (inter-digit pause).
    dtmf_gap: u8,
}

/// What a received datagram was, without borrowing it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Audio in the negotiated codec with this many payload bytes.
    Audio {
        /// Payload length in bytes.
        payload_len: usize,
    },
    /// A telephone-event packet; `Some` when it completed a key press.
    Event(Option<char>),
    /// Nothing to forward.
    Nothing,
}

/// What one received datagram was.
pub enum Received<'a> {
    /// Audio in the negotiated codec: (payload, RTP timestamp).
    Audio(&'a [u8], u32),
    /// A DTMF key press completed.
    Dtmf(char),
    /// Nothing for the call (RTCP, telephone-event continuation, junk, foreign PT).
    Nothing,
}

impl RtpLeg {
    /// A leg on `ports` for `audio`, latching by `latch` (its learning window
    /// opens now).
    pub fn new(ports: PortPair, audio: NegotiatedAudio, latch: LatchConfig) -> Self {
        let ssrc = rand_u32();
        Self {
            ports,
            latch: Latch::new(latch, audio.remote_rtp, std::time::Instant::now()),
            rtcp_latch: RtcpLatch::new(audio.remote_rtcp),
            foreign_logged: false,
            relatches: 0,
            audio,
            stats: ReceiverStats::new(8000),
            dtmf: DtmfDetector::new(Duration::from_millis(400)),
            ssrc,
            seq: rand_u32() as u16,
            timestamp: rand_u32(),
            sent: SendCounters::default(),
            last_rx: Instant::now(),
            rtcp: RtcpState::new(ssrc, &format!("sipbridge-{ssrc:08x}"), std::time::Instant::now()),
            sent_at_last_report: 0,
            muted: false,
            dtmf_queue: VecDeque::new(),
            dtmf_sending: None,
            dtmf_gap: 0,
        }
    }

    /// Stops (or resumes) sending media on this leg; receiving goes on.
    pub fn set_muted(&mut self, muted: bool) {
        self.muted = muted;
    }

    /// Waits for the next datagram on the RTCP socket into `buf`.
    pub async fn recv_rtcp(&self, buf: &mut [u8]) -> std::io::Result<(usize, SocketAddr)> {
        self.ports.rtcp.recv_from(buf).await
    }

    /// Reads an RTCP packet from `from` on the RTCP socket (RTT, report
    /// counters); one from a source other than the peer's (`latch::RtcpLatch`) is
    /// dropped and counted.
    pub fn on_rtcp(&mut self, buf: &[u8], from: SocketAddr) {
        if !self.rtcp_latch.on_packet(from, &self.latch) {
            crate::security::RTCP_FOREIGN_DROPPED.inc();
            self.log_foreign(from, "RTCP");
            return;
        }
        self.rtcp.on_packet(buf, std::time::Instant::now(), std::time::SystemTime::now());
    }

    /// Logs the first foreign packet of the leg (debug; never per packet).
    fn log_foreign(&mut self, from: SocketAddr, what: &str) {
        if !self.foreign_logged {
            self.foreign_logged = true;
            tracing::debug!(?from, peer = ?self.latch.destination(), "{what} from a foreign source dropped (latching)");
        }
    }

    /// When our next RTCP report is due.
    pub fn rtcp_deadline(&self) -> Instant {
        Instant::from_std(self.rtcp.next_report())
    }

    /// Sends our RTCP report (SR if we sent RTP since the last one, else RR) to the
    /// peer's RTCP address: with rtcp-mux where RTP goes, else
    /// `latch::RtcpLatch::destination` (`a=rtcp`, the latched RTCP source, or the
    /// latched RTP address's port + 1, RFC 3550 §11).
    pub async fn send_rtcp(&mut self) {
        let sender = (self.sent.packets > self.sent_at_last_report).then_some(SenderInfo {
            rtp_timestamp: self.timestamp,
            packets: self.sent.packets as u32,
            octets: self.sent.payload_bytes as u32,
        });
        self.sent_at_last_report = self.sent.packets;
        let block = self.stats.report_block();
        let mut out = [0u8; 256];
        let n = self.rtcp.build(&mut out, sender, block, std::time::Instant::now(), std::time::SystemTime::now());
        let dest =
            if self.audio.rtcp_mux { self.latch.destination() } else { self.rtcp_latch.destination(&self.latch) };
        let (Some(dest), true) = (dest, n > 0) else { return };
        let socket = if self.audio.rtcp_mux { &self.ports.rtp } else { &self.ports.rtcp };
        let _ = socket.send_to(&out[..n], dest).await;
    }

    /// The negotiated stream.
    pub fn audio(&self) -> &NegotiatedAudio {
        &self.audio
    }

    /// Applies a re-negotiation (re-INVITE/UPDATE, the answer to our offer): the
    /// learning window opens again; a new SDP address forgets the latch.
    pub fn update(&mut self, audio: NegotiatedAudio) {
        if self.latch.signalled(audio.remote_rtp, std::time::Instant::now()) {
            tracing::debug!(sdp = ?audio.remote_rtp, "RTP latch reset by a new SDP address");
        }
        self.rtcp_latch.signalled(audio.remote_rtcp);
        self.audio = audio;
        self.last_rx = Instant::now();
    }

    /// Waits for the next datagram on the RTP socket into `buf`.
    pub async fn recv(&self, buf: &mut [u8]) -> std::io::Result<(usize, SocketAddr)> {
        self.ports.rtp.recv_from(buf).await
    }

    /// Classifies a datagram from `from` (latching, statistics, DTMF). RTP from a
    /// source other than the latched one (`latch`) is `Nothing`, counted in
    /// `sipbridge_rtp_foreign_packets_dropped_total`.
    pub fn on_datagram<'a>(&mut self, buf: &'a [u8], from: SocketAddr, now: Instant) -> Received<'a> {
        if is_rtcp(buf) {
            // rtcp-mux (RFC 5761): RTCP on the RTP port, from the RTP peer only.
            if !self.latch.accepts_muxed_rtcp(from) {
                crate::security::RTCP_FOREIGN_DROPPED.inc();
                self.log_foreign(from, "RTCP");
                return Received::Nothing;
            }
            self.rtcp.on_packet(buf, now.into_std(), std::time::SystemTime::now());
            return Received::Nothing;
        }
        let Ok(p) = RtpPacket::parse(buf) else { return Received::Nothing };
        let pt = p.payload_type();
        let is_audio = pt == self.audio.receive_payload_type;
        let is_event = Some(pt) == self.audio.receive_telephone_event;
        if !is_audio && !is_event {
            return Received::Nothing;
        }
        // Symmetric RTP (RFC 4961): answer where the media really comes from, and
        // only take media from there.
        let was = self.latch.latched();
        match self.latch.on_packet(from, now.into_std()) {
            Verdict::Drop => {
                crate::security::RTP_FOREIGN_DROPPED.inc();
                self.log_foreign(from, "RTP");
                return Received::Nothing;
            }
            Verdict::Relatched => {
                self.relatches += 1;
                crate::security::RTP_RELATCHED.inc();
                tracing::debug!(?from, ?was, sdp = ?self.audio.remote_rtp, "RTP re-latched");
            }
            Verdict::Accept if was.is_none() && !self.latch.config().strict_source => {
                tracing::debug!(?from, sdp = ?self.audio.remote_rtp, "RTP latched");
            }
            Verdict::Accept => {}
        }
        self.last_rx = now;
        let std_now = now.into_std();
        if is_event {
            // Events share the audio stream's sequence numbers: count them, or every
            // key press would look like ~10 lost packets.
            self.stats.on_packet_without_timing(p.ssrc(), p.sequence_number(), std_now);
            let _ = self.dtmf.on_packet(p.timestamp(), p.payload(), std_now);
            return match self.dtmf.poll_digit() {
                Some(d) => Received::Dtmf(d.digit),
                None => Received::Nothing,
            };
        }
        self.stats.on_packet(p.ssrc(), p.sequence_number(), p.timestamp(), std_now);
        Received::Audio(p.payload(), p.timestamp())
    }

    /// Times the RTP latch moved from one source to another (the SDP address
    /// taking over); audio buffered from the old source is stale then.
    pub fn relatches(&self) -> u64 {
        self.relatches
    }

    /// Another digit completed by the last packet (one packet can end a press whose
    /// end packets were lost and start the next); call until `None`.
    pub fn poll_dtmf(&mut self) -> Option<char> {
        self.dtmf.poll_digit().map(|d| d.digit)
    }

    /// Like [`RtpLeg::on_datagram`] but without borrowing the buffer, so the caller
    /// can rewrite the packet in place afterwards (relaying).
    pub fn classify(&mut self, buf: &[u8], from: SocketAddr, now: Instant) -> Kind {
        match self.on_datagram(buf, from, now) {
            Received::Audio(payload, _) => Kind::Audio { payload_len: payload.len() },
            Received::Dtmf(d) => Kind::Event(Some(d)),
            Received::Nothing => match RtpPacket::parse(buf) {
                Ok(p) if Some(p.payload_type()) == self.audio.receive_telephone_event => Kind::Event(None),
                _ => Kind::Nothing,
            },
        }
    }

    /// Sends an already formed RTP packet to the peer (relaying); skipped while we
    /// may not send or know no address.
    pub async fn send_packet(&mut self, packet: &[u8], payload_len: usize) {
        if !self.audio.direction.sends() || self.muted {
            return;
        }
        let Some(dest) = self.latch.destination() else { return };
        if self.ports.rtp.send_to(packet, dest).await.is_ok() {
            self.sent.packets += 1;
            self.sent.payload_bytes += payload_len as u64;
        }
    }

    /// A DTMF digit whose end packets were all lost, once its timeout has passed.
    pub fn poll_dtmf_timeout(&mut self, now: Instant) -> Option<char> {
        let due = self.dtmf.poll_timeout()?;
        if now.into_std() >= due {
            self.dtmf.handle_timeout(now.into_std());
        }
        self.dtmf.poll_digit().map(|d| d.digit)
    }

    /// When the pending DTMF end timeout fires, if any.
    pub fn dtmf_deadline(&self) -> Option<Instant> {
        self.dtmf.poll_timeout().map(Instant::from_std)
    }

    /// Whether the peer is expected to send (not on hold towards us).
    pub fn expects_media(&self) -> bool {
        self.audio.direction.receives()
    }

    /// When the RTP timeout fires if nothing arrives.
    pub fn timeout_deadline(&self, timeout: Duration) -> Instant {
        self.last_rx + timeout
    }

    /// Queues key presses to send as RFC 4733 events (`0-9*#A-D`, each held for
    /// `duration`, 3 end packets, ~40 ms between digits). They replace the audio
    /// packets of [`RtpLeg::send_audio`] while they play.
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

    /// `LegCommand::SendDtmf`: queues the presses; a refusal is logged (the API
    /// checked the request already).
    pub fn send_dtmf_command(&mut self, digits: &str, duration: Duration) {
        if let Err(e) = self.queue_dtmf(digits, duration) {
            tracing::info!("send_dtmf: {e}");
        }
    }

    /// The periodic housekeeping of a leg task (every 250 ms, never per packet): a
    /// DTMF press whose end packets were all lost, the RTP timeout (reported once
    /// per silence, `timed_out` remembers), and RTCP reports when due.
    pub async fn housekeeping(
        &mut self,
        now: Instant,
        rtp_timeout: Duration,
        timed_out: &mut bool,
        events: &mpsc::UnboundedSender<LegEvent>,
    ) {
        if self.dtmf_deadline().is_some_and(|at| now >= at) {
            if let Some(d) = self.poll_dtmf_timeout(now) {
                let _ = events.send(LegEvent::Dtmf(d));
            }
        }
        if !*timed_out && self.expects_media() && now >= self.timeout_deadline(rtp_timeout) {
            *timed_out = true;
            let _ = events.send(LegEvent::Timeout(rtp_timeout));
        }
        if now >= self.rtcp_deadline() {
            self.send_rtcp().await;
        }
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
            self.dtmf_sending = generate(&tone, self.seq, self.timestamp).ok();
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

    /// Sends one audio packet of `payload` (G.711 bytes = samples) as the next in
    /// our stream. Skipped while we may not send (hold) or know no address.
    pub async fn send_audio(&mut self, payload: &[u8], marker: bool) {
        let samples = payload.len() as u32;
        if !self.audio.direction.sends() || self.muted {
            self.timestamp = self.timestamp.wrapping_add(samples);
            return;
        }
        let Some(dest) = self.latch.destination() else { return };
        let mut out = [0u8; MAX_DATAGRAM];
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
        let Ok(n) = header.write(body, &mut out) else { return };
        self.seq = self.seq.wrapping_add(1);
        self.timestamp = self.timestamp.wrapping_add(samples);
        if self.ports.rtp.send_to(&out[..n], dest).await.is_ok() {
            self.sent.packets += 1;
            self.sent.payload_bytes += u64::from(samples);
        }
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

fn rand_u32() -> u32 {
    let b = uuid::Uuid::new_v4().into_bytes();
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// The built-in echo agent (`url = "builtin:echo"`): every audio packet from the
/// caller is sent back 200 ms later, in a stream of our own (SSRC, sequence,
/// timestamps). The delay line is preallocated: no allocation per packet. When the
/// leg's latch moves to another source (`latch`: the SDP address taking over from
/// a first source in the learning window), the line is emptied, so what the old
/// source sent is never echoed to the new one.
pub async fn run_echo(
    mut leg: RtpLeg,
    mut commands: mpsc::Receiver<LegCommand>,
    events: mpsc::UnboundedSender<LegEvent>,
    rtp_timeout: Duration,
    mut tap: Option<std::sync::Arc<dyn Tap>>,
) -> RtpLeg {
    const DELAY: Duration = Duration::from_millis(200);
    const SLOT: usize = 480; // 60 ms of G.711
    let mut line: VecDeque<(Instant, usize, [u8; SLOT])> = VecDeque::with_capacity(64);
    let mut buf = [0u8; MAX_DATAGRAM];
    let mut rtcp_buf = [0u8; 512];
    let mut timed_out = false;
    let mut first = true;
    let mut inbound_muted = false;
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let codec = leg.audio().codec;
        let next_due = line.front().map(|(due, _, _)| *due);
        tokio::select! {
            r = leg.recv(&mut buf) => {
                let Ok((n, from)) = r else { continue };
                let now = Instant::now();
                let relatches = leg.relatches();
                let received = leg.on_datagram(&buf[..n], from, now);
                if leg.relatches() != relatches {
                    // The latch moved (the SDP address took over in the learning
                    // window): what the old source said is not echoed to the new one.
                    line.clear();
                }
                match received {
                    Received::Audio(payload, _) if payload.len() <= SLOT => {
                        if let Some(t) = &tap {
                            t.heard(codec, payload);
                        }
                        if inbound_muted {
                            continue;
                        }
                        if line.len() == line.capacity() {
                            line.pop_front();
                        }
                        let mut slot = [0u8; SLOT];
                        slot[..payload.len()].copy_from_slice(payload);
                        line.push_back((now + DELAY, payload.len(), slot));
                    }
                    Received::Dtmf(d) => {
                        let _ = events.send(LegEvent::Dtmf(d));
                        while let Some(d) = leg.poll_dtmf() {
                            let _ = events.send(LegEvent::Dtmf(d));
                        }
                    }
                    _ => {}
                }
            }
            _ = tokio::time::sleep_until(next_due.unwrap_or_else(Instant::now)), if next_due.is_some() => {
                let now = Instant::now();
                while let Some((due, len, slot)) = line.front().copied() {
                    if due > now {
                        break;
                    }
                    line.pop_front();
                    if let Some(t) = &tap {
                        t.said(codec, &slot[..len]);
                    }
                    leg.send_audio(&slot[..len], first).await;
                    first = false;
                }
            }
            now = tick.tick() => leg.housekeeping(now, rtp_timeout, &mut timed_out, &events).await,
            r = leg.recv_rtcp(&mut rtcp_buf) => {
                if let Ok((n, from)) = r {
                    leg.on_rtcp(&rtcp_buf[..n], from);
                }
            }
            c = commands.recv() => match c {
                Some(LegCommand::Update(audio)) => {
                    leg.update(audio);
                    timed_out = false;
                }
                Some(LegCommand::MuteInbound(m)) => inbound_muted = m,
                Some(LegCommand::SendDtmf(digits, duration)) => leg.send_dtmf_command(&digits, duration),
                Some(LegCommand::Tap(t)) => tap = t,
                Some(LegCommand::Stop) | None => break,
            }
        }
    }
    leg
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::values::PortRange;
    use crate::media::g711::G711;
    use crate::media::ports::PortPool;
    use crate::sdp::Direction;

    fn audio_to(port: u16) -> NegotiatedAudio {
        let remote: SocketAddr = ([127, 0, 0, 1], port).into();
        NegotiatedAudio {
            codec: G711::Pcmu,
            payload_type: 0,
            receive_payload_type: 0,
            telephone_event: Some(101),
            receive_telephone_event: Some(101),
            remote_rtp: Some(remote),
            remote_rtcp: Some(SocketAddr::new(remote.ip(), port + 1)),
            rtcp_mux: false,
            ptime_ms: 20,
            direction: Direction::SendRecv,
        }
    }

    /// Two real legs on loopback: RTP one way, then an SR and an RR carrying LSR/DLSR
    /// give the sender a round-trip time (RFC 3550 §6.4.1); muting stops sending.
    #[tokio::test]
    async fn rtp_and_rtcp_between_two_legs() {
        let base = 42_100 + (std::process::id() % 200) as u16 * 8;
        let pool = PortPool::new(PortRange { first: base, last: base + 7 });
        let ip = std::net::IpAddr::from([127, 0, 0, 1]);
        let (pa, pb) = (pool.take(ip).unwrap(), pool.take(ip).unwrap());
        let (port_a, port_b) = (pa.port, pb.port);
        let mut a = RtpLeg::new(pa, audio_to(port_b), LatchConfig::default());
        let mut b = RtpLeg::new(pb, audio_to(port_a), LatchConfig::default());
        let mut buf = [0u8; MAX_DATAGRAM];
        for _ in 0..10 {
            a.send_audio(&[0xffu8; 160], false).await;
            let (n, from) = b.recv(&mut buf).await.unwrap();
            assert!(matches!(b.on_datagram(&buf[..n], from, Instant::now()), Received::Audio(p, _) if p.len() == 160));
        }
        assert_eq!(a.sent.packets, 10);
        assert_eq!(b.stats.received(), 10);
        // A's sender report reaches B's RTCP socket; B answers with a receiver report.
        a.send_rtcp().await;
        let (n, from) = b.recv_rtcp(&mut buf).await.unwrap();
        assert_eq!(buf[1], 200, "an SR, since A sent RTP");
        b.on_rtcp(&buf[..n], from);
        b.send_rtcp().await;
        let (n, from) = a.recv_rtcp(&mut buf).await.unwrap();
        assert_eq!(buf[1], 201, "an RR, since B sent nothing");
        a.on_rtcp(&buf[..n], from);
        assert_eq!(a.rtcp.received_reports, 1);
        let rtt = a.rtcp.rtt().expect("RTT from LSR/DLSR");
        assert!(rtt < Duration::from_secs(1), "{rtt:?}");
        // Muted: nothing more is sent.
        a.set_muted(true);
        a.send_audio(&[0xffu8; 160], false).await;
        assert_eq!(a.sent.packets, 10);
    }

    /// `send_dtmf`: generated RFC 4733 events replace audio packets while they play
    /// and the receiving leg's detector sees each key press exactly once; audio
    /// resumes with continuous sequence numbers.
    #[tokio::test]
    async fn generated_dtmf_is_detected_once_per_digit() {
        let base = 44_100 + (std::process::id() % 200) as u16 * 8;
        let pool = PortPool::new(PortRange { first: base, last: base + 7 });
        let ip = std::net::IpAddr::from([127, 0, 0, 1]);
        let (pa, pb) = (pool.take(ip).unwrap(), pool.take(ip).unwrap());
        let (port_a, port_b) = (pa.port, pb.port);
        let mut a = RtpLeg::new(pa, audio_to(port_b), LatchConfig::default());
        let mut b = RtpLeg::new(pb, audio_to(port_a), LatchConfig::default());
        assert!(a.queue_dtmf("1x", Duration::from_millis(100)).is_err(), "not a digit: nothing queued");
        a.queue_dtmf("1#", Duration::from_millis(100)).unwrap();
        let mut buf = [0u8; MAX_DATAGRAM];
        let (mut digits, mut audio, mut events) = (Vec::new(), 0, 0);
        let mut last_seq = None;
        for _ in 0..30 {
            a.send_audio(&[0xffu8; 160], false).await;
            let (n, from) = b.recv(&mut buf).await.unwrap();
            let seq = u16::from_be_bytes([buf[2], buf[3]]);
            if let Some(prev) = last_seq {
                assert_eq!(seq, u16::wrapping_add(prev, 1), "one sequence for audio and events");
            }
            last_seq = Some(seq);
            if buf[1] & 0x7f == 101 {
                events += 1;
            }
            match b.on_datagram(&buf[..n], from, Instant::now()) {
                Received::Dtmf(d) => digits.push(d),
                Received::Audio(..) => audio += 1,
                Received::Nothing => {}
            }
            while let Some(d) = b.poll_dtmf() {
                digits.push(d);
            }
        }
        assert_eq!(digits, ['1', '#']);
        // 100 ms at 20 ms ptime: 4 updates + 3 end packets per digit.
        assert_eq!(events, 14);
        assert_eq!(audio, 16);
    }

    /// A third party on another port sends RTP at a latched leg: its packets are
    /// dropped and counted, and the leg keeps answering its peer.
    #[tokio::test]
    async fn foreign_rtp_is_dropped_and_not_answered() {
        let base = 46_100 + (std::process::id() % 200) as u16 * 8;
        let pool = PortPool::new(PortRange { first: base, last: base + 7 });
        let ip = std::net::IpAddr::from([127, 0, 0, 1]);
        let (pa, pb) = (pool.take(ip).unwrap(), pool.take(ip).unwrap());
        let (port_a, port_b) = (pa.port, pb.port);
        let mut a = RtpLeg::new(pa, audio_to(port_b), LatchConfig::default());
        let mut b = RtpLeg::new(pb, audio_to(port_a), LatchConfig::default());
        let mut buf = [0u8; MAX_DATAGRAM];
        a.send_audio(&[0x11u8; 160], false).await;
        let (n, from) = b.recv(&mut buf).await.unwrap();
        assert!(matches!(b.on_datagram(&buf[..n], from, Instant::now()), Received::Audio(..)), "A latches");

        let attacker = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let before = crate::security::RTP_FOREIGN_DROPPED.get();
        let received = b.stats.received();
        let header = RtpHeader { marker: false, payload_type: 0, sequence_number: 1, timestamp: 0, ssrc: 7 };
        let mut pkt = [0u8; 200];
        let len = header.write(&[0x22u8; 160], &mut pkt).unwrap();
        attacker.send_to(&pkt[..len], ("127.0.0.1", port_b)).await.unwrap();
        let (n, from) = b.recv(&mut buf).await.unwrap();
        assert_eq!(from, attacker.local_addr().unwrap());
        assert!(matches!(b.on_datagram(&buf[..n], from, Instant::now()), Received::Nothing));
        assert!(crate::security::RTP_FOREIGN_DROPPED.get() > before);
        assert_eq!(b.stats.received(), received, "the foreign packet is not in the statistics");

        // B's audio goes to A, not to the attacker.
        b.send_audio(&[0x33u8; 160], false).await;
        let (n, from) = a.recv(&mut buf).await.unwrap();
        assert_eq!(from.port(), port_b);
        assert!(matches!(a.on_datagram(&buf[..n], from, Instant::now()), Received::Audio(p, _) if p[0] == 0x33));
        let mut probe = [0u8; 64];
        assert!(attacker.try_recv_from(&mut probe).is_err(), "nothing was sent to the attacker");
    }
}
