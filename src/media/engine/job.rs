//! What a media worker runs per call: the built-in echo, a leg bridged to a PCM
//! endpoint (voice agent, room, playback from the box), and the relay between two
//! SIP legs. Each job is plain state driven by the worker (`super::Worker`): a
//! received datagram, a timer that fell due, a command. Jobs send through their
//! legs' sockets (non-blocking `send_to`), never wait, never allocate per packet.

use std::collections::VecDeque;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TryRecvError;

use crate::media::bridge::Side;
use crate::media::leg::{LegCommand, LegEvent, Received, RtpSession, Socket, Tap};
use crate::media::pacer::{Alignment, Pacer};
use crate::media::pcm::{CHUNK_BYTES, Chunk, ChunkFormat, Direction, Narrow, PcmPort, Playback, WIDE_FRAME_SAMPLES};
use crate::media::playout::{FRAME_SAMPLES, Playout};
use crate::media::ports::PortPair;
use crate::media::suppress::{Suppression, Suppressor};
use crate::sdp::codec::AudioCodec;

use super::convert::{Inbound, NARROW_LAW, Outbound, Timeline};
use super::timer::TimerJob;

/// Queued playback beyond this many seconds is dropped (the agent sent more than
/// two minutes ahead).
const MAX_QUEUED_SECONDS: usize = 120;

/// One RTP leg: its bound port pair and its session.
pub struct Leg {
    /// RTP and RTCP sockets (returned to the pool when dropped).
    pub ports: PortPair,
    /// The sans-IO session.
    pub session: RtpSession,
}

impl Leg {
    fn socket(&self, socket: Socket) -> &UdpSocket {
        match socket {
            Socket::Rtp => &self.ports.rtp,
            Socket::Rtcp => &self.ports.rtcp,
        }
    }

    /// Sends everything the session has ready (RTCP reports, generated audio).
    fn flush(&mut self) {
        let Leg { ports, session } = self;
        while let Some(t) = session.poll_transmit() {
            let socket = if t.socket == Socket::Rtp { &ports.rtp } else { &ports.rtcp };
            // UDP: a full socket buffer drops the packet, as the network would.
            let _ = socket.send_to(t.contents, t.destination);
        }
    }
}

/// Where a job's events go.
pub enum Events {
    /// A single-leg job's call.
    One(mpsc::UnboundedSender<LegEvent>),
    /// A relay's call, tagged with the side.
    Two(mpsc::UnboundedSender<(Side, LegEvent)>),
}

impl Events {
    fn send(&self, side: Side, event: LegEvent) {
        match self {
            Events::One(tx) => drop(tx.send(event)),
            Events::Two(tx) => drop(tx.send((side, event))),
        }
    }

    /// Forwards every event the session has.
    fn drain(&self, side: Side, session: &mut RtpSession) {
        while let Some(e) = session.poll_event() {
            self.send(side, e);
        }
    }
}

/// A job's legs when it ends (moved once per job, not per packet).
#[allow(clippy::large_enum_variant)]
pub enum Finished {
    /// A single-leg job's leg.
    One(Leg),
    /// A relay's legs (A, B).
    Two(Leg, Leg),
    /// A leg-less timer job (`super::timer`): nothing to hand back.
    Timer,
}

/// Per-worker buffers the PCM jobs work in (one set per thread, not per call).
pub struct Scratch {
    frame: [i16; WIDE_FRAME_SAMPLES],
    player_frame: [i16; WIDE_FRAME_SAMPLES],
    frame8: [i16; FRAME_SAMPLES],
    out: [u8; FRAME_SAMPLES],
}

impl Scratch {
    /// Zeroed buffers.
    pub fn new() -> Self {
        Self {
            frame: [0; WIDE_FRAME_SAMPLES],
            player_frame: [0; WIDE_FRAME_SAMPLES],
            frame8: [0; FRAME_SAMPLES],
            out: [0; FRAME_SAMPLES],
        }
    }
}

/// A job run by a worker.
pub enum Job {
    /// The built-in echo.
    Echo(Box<EchoJob>),
    /// A leg ↔ PCM endpoint bridge.
    Pcm(Box<PcmJob>),
    /// Two relayed legs.
    Relay(Box<RelayJob>),
    /// Leg-less work paced by the wheel alone (a room's mixer).
    Timer(Box<dyn TimerJob>),
}

impl Job {
    /// The job's legs, in token order (0 = A, 1 = B).
    pub fn legs(&self) -> impl Iterator<Item = &Leg> {
        let (a, b) = match self {
            Job::Echo(j) => (Some(&j.leg), None),
            Job::Pcm(j) => (Some(&j.leg), None),
            Job::Relay(j) => (Some(&j.a), Some(&j.b)),
            Job::Timer(_) => (None, None),
        };
        a.into_iter().chain(b)
    }

    /// The socket `socket` of leg `leg`.
    pub fn socket(&self, leg: usize, socket: Socket) -> Option<&UdpSocket> {
        self.legs().nth(leg).map(|l| l.socket(socket))
    }

    /// Takes a datagram received on leg `leg`'s `socket`.
    pub fn on_datagram(&mut self, leg: usize, socket: Socket, buf: &mut [u8], from: SocketAddr, now: Instant) {
        match self {
            Job::Echo(j) => j.on_datagram(socket, buf, from, now),
            Job::Pcm(j) => j.on_datagram(socket, buf, from, now),
            Job::Relay(j) => j.on_datagram(leg, socket, buf, from, now),
            // No legs: no socket of its own to receive on.
            Job::Timer(_) => {}
        }
    }

    /// Runs what is due at `now` (also called early: nothing due, nothing done).
    pub fn on_timer(&mut self, now: Instant, scratch: &mut Scratch) {
        match self {
            Job::Echo(j) => j.on_timer(now),
            Job::Pcm(j) => j.on_timer(now, scratch),
            Job::Relay(j) => j.on_timer(now),
            // The worker calls timer jobs itself (`super::run_due`), to see when
            // they finish; after `Finished` a timer job does nothing.
            Job::Timer(j) => {
                let _ = j.on_timer(now);
            }
        }
    }

    /// When `on_timer` must run next.
    pub fn deadline(&self) -> Instant {
        match self {
            Job::Echo(j) => j.deadline(),
            Job::Pcm(j) => j.deadline(),
            Job::Relay(j) => j.a.session.poll_timeout().min(j.b.session.poll_timeout()),
            Job::Timer(j) => j.deadline(),
        }
    }

    /// Applies a command (never `Stop`: the worker ends the job).
    pub fn on_command(&mut self, side: Side, command: LegCommand, now: Instant) {
        match self {
            Job::Echo(j) => j.common.on_command(&mut j.leg, command, now, 8000),
            Job::Pcm(j) => {
                let rate = if j.wide { 16000 } else { 8000 };
                j.common.on_command(&mut j.leg, command, now, rate)
            }
            Job::Relay(j) => j.on_command(side, command, now),
            // Leg commands mean nothing to a leg-less job.
            Job::Timer(_) => {}
        }
    }

    /// The legs, for the call's statistics or the next job.
    pub fn finish(self) -> Finished {
        match self {
            Job::Echo(j) => Finished::One(j.leg),
            Job::Pcm(j) => {
                if j.caught_up > 0 || !j.align.shifted().is_zero() {
                    tracing::debug!(
                        frames = j.caught_up,
                        shifted_ms = j.align.shifted().as_millis() as u64,
                        "agent audio: backlog played out early, schedule moved to its arrivals"
                    );
                }
                if j.dropped > 0 || j.playout.dropped_samples() > 0 || j.pacer.resyncs() > 0 {
                    tracing::debug!(
                        late_resyncs = j.pacer.resyncs(),
                        chunks = j.dropped,
                        samples = j.playout.dropped_samples(),
                        "audio dropped between the call and its endpoint"
                    );
                }
                Finished::One(j.leg)
            }
            Job::Relay(j) => Finished::Two(j.a, j.b),
            Job::Timer(_) => Finished::Timer,
        }
    }
}

/// What single-leg jobs share: the call's events, the tap, inbound muting,
/// noise suppression.
pub struct Common {
    events: Events,
    tap: Option<Arc<dyn Tap>>,
    inbound_muted: bool,
    suppress: Suppressors,
}

impl Common {
    fn new(events: Events, tap: Option<Arc<dyn Tap>>) -> Self {
        Self { events, tap, inbound_muted: false, suppress: Suppressors::default() }
    }

    /// `outbound_rate`: the rate of the frames the job plays to the peer (16000
    /// Hz for an L16/16000 agent, else 8000).
    fn on_command(&mut self, leg: &mut Leg, command: LegCommand, now: Instant, outbound_rate: u32) {
        match command {
            LegCommand::Suppress(want) => {
                toggle(&mut self.suppress.inbound, want.inbound, 8000);
                toggle(&mut self.suppress.outbound, want.outbound, outbound_rate);
            }
            LegCommand::Update(audio) => leg.session.update(audio, now),
            LegCommand::MuteInbound(m) => self.inbound_muted = m,
            LegCommand::SendDtmf(digits, duration) => {
                if let Err(e) = leg.session.queue_dtmf(&digits, duration) {
                    tracing::info!("send_dtmf: {e}");
                }
            }
            LegCommand::Tap(t) => self.tap = t,
            LegCommand::Stop => {}
        }
    }
}

/// A single leg's noise suppressors, one per suppressed direction.
#[derive(Default)]
struct Suppressors {
    /// What the peer says.
    inbound: Option<Box<Suppressor>>,
    /// What the job plays to the peer.
    outbound: Option<Box<Suppressor>>,
}

/// Makes (`on`) or drops the suppressor in `slot`; a suppressor that cannot be
/// built leaves the audio as it is, with a warning.
fn toggle(slot: &mut Option<Box<Suppressor>>, on: bool, rate: u32) {
    if on && slot.is_none() {
        match Suppressor::new(rate) {
            Ok(s) => *slot = Some(Box::new(s)),
            Err(e) => tracing::warn!("noise suppression not started: {e}"),
        }
    } else if !on {
        *slot = None;
    }
}

/// Suppresses noise in the audio payload of `buf` in place, if `suppressor`
/// (G.711 legs: a wideband leg's payloads are not denoised in place).
fn suppress_payload(suppressor: &mut Option<Box<Suppressor>>, codec: AudioCodec, received: &Received, buf: &mut [u8]) {
    if let (Some(s), Some(payload), Some(law)) = (suppressor.as_mut(), received.payload_mut(buf), codec.g711()) {
        s.process_g711(law, payload);
    }
}

/// The decoder in `slot` for `codec`, made (or remade after a codec change) on
/// first use; `None` when the codec has no implementation in this build.
fn inbound_for(slot: &mut Option<Box<Inbound>>, codec: AudioCodec) -> Option<&mut Inbound> {
    if slot.as_ref().is_none_or(|d| d.codec() != codec) {
        *slot = Inbound::new(codec).inspect_err(|e| tracing::warn!("audio not decoded: {e}")).ok();
    }
    slot.as_deref_mut()
}

/// The encoder in `slot` for `codec`, as [`inbound_for`].
fn outbound_for(slot: &mut Option<Box<Outbound>>, codec: AudioCodec) -> Option<&mut Outbound> {
    if slot.as_ref().is_none_or(|e| e.codec() != codec) {
        *slot = Outbound::new(codec).inspect_err(|e| tracing::warn!("audio not encoded: {e}")).ok();
    }
    slot.as_deref_mut()
}

/// Gives `tap` one received (`heard`) or sent payload of a leg in `codec`: as is
/// for G.711, else decoded once by `slot` (16 kHz plus its 8 kHz G.711 version).
fn tap_payload(tap: &dyn Tap, heard: bool, codec: AudioCodec, payload: &[u8], slot: &mut Option<Box<Inbound>>) {
    if let Some(law) = codec.g711() {
        if heard {
            tap.heard(law, payload)
        } else {
            tap.said(law, payload)
        }
        return;
    }
    let Some(dec) = inbound_for(slot, codec) else { return };
    if dec.decode(payload) {
        dec.pieces(|narrow, wide| {
            if heard {
                tap.heard_wideband(NARROW_LAW, narrow, wide)
            } else {
                tap.said_wideband(NARROW_LAW, narrow, wide)
            }
        });
    }
}

/// The built-in echo agent (`url = "builtin:echo"`): every audio packet from the
/// caller is sent back 200 ms later, in a stream of our own (SSRC, sequence,
/// timestamps). When the leg's latch moves to another source (`latch`: the SDP
/// address taking over in the learning window), the delay line is emptied, so
/// what the old source sent is never echoed to the new one.
pub struct EchoJob {
    leg: Leg,
    common: Common,
    line: VecDeque<(Instant, u16, [u8; ECHO_SLOT])>,
    first: bool,
    /// Decoders for the tap on a wideband leg (heard, said).
    tap_heard: Option<Box<Inbound>>,
    tap_said: Option<Box<Inbound>>,
}

const ECHO_DELAY: Duration = Duration::from_millis(200);
/// 60 ms of G.711; longer packets are not echoed.
const ECHO_SLOT: usize = 480;
/// 1.28 s of 20 ms packets: far more than 200 ms of any ptime.
const ECHO_MAX: usize = 64;

impl EchoJob {
    /// Echo on `leg`; `tap` hears both ways.
    pub fn new(leg: Leg, events: Events, tap: Option<Arc<dyn Tap>>) -> Self {
        Self {
            leg,
            common: Common::new(events, tap),
            line: VecDeque::new(),
            first: true,
            tap_heard: None,
            tap_said: None,
        }
    }

    fn on_datagram(&mut self, socket: Socket, buf: &mut [u8], from: SocketAddr, now: Instant) {
        let relatches = self.leg.session.relatches();
        let received = self.leg.session.handle_receive(socket, buf, from, now);
        if self.leg.session.relatches() != relatches {
            self.line.clear();
        }
        self.common.events.drain(Side::A, &mut self.leg.session);
        let codec = self.leg.session.audio().codec;
        suppress_payload(&mut self.common.suppress.inbound, codec, &received, buf);
        let Some(payload) = received.payload(buf) else { return };
        if payload.len() > ECHO_SLOT {
            return;
        }
        if let Some(t) = &self.common.tap {
            tap_payload(&**t, true, codec, payload, &mut self.tap_heard);
        }
        if self.common.inbound_muted {
            return;
        }
        if self.line.len() == ECHO_MAX {
            self.line.pop_front();
        }
        let mut slot = [0u8; ECHO_SLOT];
        slot[..payload.len()].copy_from_slice(payload);
        self.line.push_back((now + ECHO_DELAY, payload.len() as u16, slot));
    }

    fn on_timer(&mut self, now: Instant) {
        let codec = self.leg.session.audio().codec;
        while let Some((due, len, slot)) = self.line.front_mut() {
            if *due > now {
                break;
            }
            let payload = &mut slot[..usize::from(*len)];
            if let (Some(s), Some(law)) = (self.common.suppress.outbound.as_mut(), codec.g711()) {
                s.process_g711(law, payload);
            }
            let payload = &*payload;
            if let Some(t) = &self.common.tap {
                tap_payload(&**t, false, codec, payload, &mut self.tap_said);
            }
            self.leg.session.send_audio(payload, self.first);
            self.first = false;
            self.leg.flush();
            self.line.pop_front();
        }
        if now >= self.leg.session.poll_timeout() {
            self.leg.session.handle_timeout(now);
            self.leg.flush();
        }
        self.common.events.drain(Side::A, &mut self.leg.session);
    }

    fn deadline(&self) -> Instant {
        let session = self.leg.session.poll_timeout();
        self.line.front().map_or(session, |(due, _, _)| session.min(*due))
    }
}

/// The bridge between a leg and a PCM endpoint (a voice agent's stream, a room
/// the leg takes part in, playback from the box): the leg's audio goes to the
/// endpoint as it arrives (`try_send` of fixed-size chunks: when the endpoint
/// falls behind, chunks are dropped and counted, never queued without bound),
/// and the endpoint's audio is played into the leg from a paced queue, one packet
/// per 20 ms of the box's clock (`pacer`; silence when the queue is empty, so the
/// peer's media timers and NAT bindings stay alive).
pub struct PcmJob {
    leg: Leg,
    common: Common,
    port: PcmPort,
    pacer: Pacer,
    /// 16 kHz playout for an L16/16000 agent, else the leg's 8 kHz.
    wide: bool,
    narrow: Option<Box<Narrow>>,
    playout: Playout,
    /// Playback from the box (playback_start), on its own queue; marks = ids.
    player: Playout,
    overlay: bool,
    said_samples: u32,
    playback_open: bool,
    talking: bool,
    dropped: u64,
    /// Frames played early to take a standing backlog out.
    caught_up: u64,
    /// The schedule's phase against the agent's arrivals.
    align: Alignment,
    /// A wideband leg's decoder and encoder (G.722, Opus), made on first use.
    inbound: Option<Box<Inbound>>,
    outbound: Option<Box<Outbound>>,
    /// Received RTP timestamps in samples at the chunks' rate.
    heard_time: Timeline,
}

impl PcmJob {
    /// Bridges `leg` to the endpoint behind `port`, pacing from `now`.
    pub fn new(leg: Leg, events: Events, tap: Option<Arc<dyn Tap>>, port: PcmPort, now: Instant) -> Self {
        let wide = port.sample_rate == 16000;
        let rate = if wide { 16000 } else { 8000 };
        Self {
            leg,
            common: Common::new(events, tap),
            port,
            pacer: Pacer::new(now),
            wide,
            narrow: wide.then(|| Box::new(Narrow::new())),
            playout: Playout::new(MAX_QUEUED_SECONDS * rate),
            player: Playout::new(MAX_QUEUED_SECONDS * rate),
            overlay: false,
            said_samples: 0,
            playback_open: true,
            talking: false,
            dropped: 0,
            caught_up: 0,
            align: Alignment::default(),
            inbound: None,
            outbound: None,
            heard_time: Timeline::default(),
        }
    }

    fn on_datagram(&mut self, socket: Socket, buf: &mut [u8], from: SocketAddr, now: Instant) {
        let received = self.leg.session.handle_receive(socket, buf, from, now);
        self.common.events.drain(Side::A, &mut self.leg.session);
        let Received::Audio { rtp_timestamp, .. } = received else { return };
        let codec = self.leg.session.audio().codec;
        suppress_payload(&mut self.common.suppress.inbound, codec, &received, buf);
        let Some(payload) = received.payload(buf) else { return };
        let wanted = self.port.want_heard && !self.common.inbound_muted;
        if let Some(law) = codec.g711() {
            if let Some(t) = &self.common.tap {
                t.heard(law, payload);
            }
            if wanted {
                offer(&self.port, Direction::Heard, ChunkFormat::G711(law), rtp_timestamp, payload, &mut self.dropped);
            }
            return;
        }
        // A wideband leg: decoded once, for the tap and the endpoint.
        let Some(dec) = inbound_for(&mut self.inbound, codec) else { return };
        if !dec.decode(payload) {
            return;
        }
        if let Some(t) = &self.common.tap {
            dec.pieces(|narrow, wide| t.heard_wideband(NARROW_LAW, narrow, wide));
        }
        if wanted {
            let clock = codec.rtp_clock_rate();
            if self.wide {
                let ts = self.heard_time.map(rtp_timestamp, clock, 16_000);
                offer_wide(&self.port, Direction::Heard, ts, dec.pcm(), &mut self.dropped);
            } else {
                let ts = self.heard_time.map(rtp_timestamp, clock, 8000);
                let narrow = dec.narrow();
                offer(&self.port, Direction::Heard, ChunkFormat::G711(NARROW_LAW), ts, narrow, &mut self.dropped);
            }
        }
    }

    /// Takes what the endpoint queued since the last frame (never waits).
    fn take_playback(&mut self, now: Instant) {
        while self.playback_open {
            match self.port.playback.try_recv() {
                Ok(Playback::Audio(pcm)) => self.playout.push(&pcm),
                Ok(Playback::AudioAt(pcm, at)) => {
                    self.align.arrived(now.saturating_duration_since(at));
                    self.playout.push(&pcm);
                }
                Ok(Playback::Mark(name)) => self.playout.mark(name),
                Ok(Playback::Clear) => {
                    for name in self.playout.clear() {
                        let _ = self.port.marks.send(name);
                    }
                }
                Ok(Playback::Play { id, pcm, overlay }) => {
                    // At the port's rate already (converted off the media thread).
                    self.overlay = overlay;
                    self.player.push(&pcm);
                    self.player.mark(id.to_string());
                }
                Ok(Playback::StopPlay) => {
                    for id in self.player.clear() {
                        if let Ok(id) = id.parse() {
                            self.common.events.send(Side::A, LegEvent::PlaybackDone { id, completed: false });
                        }
                    }
                }
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => self.playback_open = false,
            }
        }
        // A room's mixes (fixed-size frames, no allocation).
        if let Some(frames) = self.port.frames.as_mut() {
            while let Ok(f) = frames.try_recv() {
                self.playout.push(&f.samples[..usize::from(f.len).min(WIDE_FRAME_SAMPLES)]);
            }
        }
    }

    fn on_timer(&mut self, now: Instant, s: &mut Scratch) {
        if now >= self.pacer.poll_timeout() {
            self.take_playback(now);
            let due = self.pacer.handle_timeout(now);
            for _ in 0..due.frames {
                self.play_frame(s);
            }
            if due.frames > 0 {
                if let Some(by) = self.align.tick() {
                    self.pacer.shift_earlier(by);
                }
            }
            // Late audio from a real-time agent left frames standing: play them now
            // rather than late for the rest of the stream (Playout::standing_surplus).
            if self.player.is_idle() {
                let extra = self.playout.standing_surplus(self.frame_len());
                self.caught_up += u64::from(extra);
                for _ in 0..extra {
                    self.play_frame(s);
                }
            } else {
                self.playout.restart_window();
            }
        }
        if now >= self.leg.session.poll_timeout() {
            self.leg.session.handle_timeout(now);
            self.leg.flush();
        }
        self.common.events.drain(Side::A, &mut self.leg.session);
    }

    /// Samples in one 20 ms frame of the playout queue.
    fn frame_len(&self) -> usize {
        if self.wide { WIDE_FRAME_SAMPLES } else { FRAME_SAMPLES }
    }

    /// Plays one 20 ms frame into the leg (silence when nothing is queued).
    fn play_frame(&mut self, s: &mut Scratch) {
        let frame_len = self.frame_len();
        let frame = &mut s.frame[..frame_len];
        let playing = !self.player.is_idle();
        let real = if playing && !self.overlay {
            // The endpoint's queue waits while the box plays.
            self.player.next_frame(frame)
        } else if playing {
            let a = self.playout.next_frame(frame);
            let b = self.player.next_frame(&mut s.player_frame[..frame_len]);
            for (x, y) in frame.iter_mut().zip(s.player_frame.iter()) {
                *x = x.saturating_add(*y);
            }
            a.max(b)
        } else {
            self.playout.next_frame(frame)
        };
        while let Some(id) = self.player.pop_reached() {
            if let Ok(id) = id.parse() {
                self.common.events.send(Side::A, LegEvent::PlaybackDone { id, completed: true });
            }
        }
        if let Some(suppressor) = self.common.suppress.outbound.as_mut() {
            suppressor.process(frame);
        }
        match self.narrow.as_mut() {
            Some(n) => n.frame(frame, &mut s.frame8),
            None => s.frame8.copy_from_slice(&frame[..FRAME_SAMPLES]),
        }
        let codec = self.leg.session.audio().codec;
        // What G.711 consumers get: the leg's law, or µ-law for a wideband leg.
        let law = codec.g711().unwrap_or(NARROW_LAW);
        law.encode(&s.frame8, &mut s.out);
        if let Some(t) = &self.common.tap {
            if self.wide {
                t.said_wideband(law, &s.out, frame);
            } else {
                t.said(law, &s.out);
            }
        }
        if self.port.want_said {
            if self.wide && codec.is_wideband() {
                let position = self.said_samples.wrapping_mul(2);
                offer_wide(&self.port, Direction::Said, position, frame, &mut self.dropped);
            } else {
                offer(
                    &self.port,
                    Direction::Said,
                    ChunkFormat::G711(law),
                    self.said_samples,
                    &s.out,
                    &mut self.dropped,
                );
            }
        }
        self.said_samples = self.said_samples.wrapping_add(FRAME_SAMPLES as u32);
        // RFC 3551 §4.1: the marker bit starts each talkspurt.
        let marker = real > 0 && !self.talking;
        if codec.g711().is_some() {
            self.leg.session.send_audio(&s.out, marker);
        } else {
            // A wideband leg: the frame at the playout's rate, encoded for the leg.
            let rate = if self.wide { 16_000 } else { 8000 };
            if let Some(payload) = outbound_for(&mut self.outbound, codec).and_then(|e| e.encode(frame, rate)) {
                self.leg.session.send_audio(payload, marker);
            }
        }
        self.talking = real > 0;
        self.leg.flush();
        while let Some(name) = self.playout.pop_reached() {
            let _ = self.port.marks.send(name);
        }
    }

    fn deadline(&self) -> Instant {
        self.pacer.poll_timeout().min(self.leg.session.poll_timeout())
    }
}

/// Hands 16 kHz PCM (`pcm`, starting at sample `position`) to the endpoint in
/// [`ChunkFormat::L16Wide`] chunks (80 samples each).
fn offer_wide(port: &PcmPort, direction: Direction, position: u32, pcm: &[i16], dropped: &mut u64) {
    for c in Chunk::wide(direction, position, pcm) {
        if port.chunks.try_send(c).is_err() {
            *dropped += 1;
        }
    }
}

fn offer(
    port: &PcmPort,
    direction: Direction,
    codec: ChunkFormat,
    rtp_timestamp: u32,
    audio: &[u8],
    dropped: &mut u64,
) {
    let mut ts = rtp_timestamp;
    for part in audio.chunks(CHUNK_BYTES) {
        let mut c = Chunk { direction, codec, rtp_timestamp: ts, len: part.len() as u16, data: [0; CHUNK_BYTES] };
        c.data[..part.len()].copy_from_slice(part);
        if port.chunks.try_send(c).is_err() {
            *dropped += 1;
        }
        ts = ts.wrapping_add(part.len() as u32);
    }
}

/// The relay between two SIP legs (forward routes, B2BUA): RTP from one leg goes
/// out on the other without decoding (`RtpSession::relay_from`: payload type
/// mapped, PCMU↔PCMA transcoded in place, RFC 4733 events remapped and reported
/// as digits). Per packet: one `recvfrom` into the worker's buffer, an in-place
/// rewrite, one `sendto`. RTCP is terminated on each leg (reports about that
/// leg's own stream, RFC 3550 §6.4). Either direction can be muted
/// (`LegCommand::MuteInbound` on a side: what it says no longer reaches the other).
/// A suppressed direction (`LegCommand::Suppress`: a side's `inbound`, or the
/// other side's `outbound`) is decoded, denoised and re-encoded in place before
/// the tap and the far leg get it.
pub struct RelayJob {
    a: Leg,
    b: Leg,
    events: Events,
    tap: Option<Arc<dyn Tap>>,
    /// What each side asked for (A, B).
    asked: [Suppression; 2],
    /// The suppressor of what each leg sends (A → B, B → A).
    suppress: [Option<Box<Suppressor>>; 2],
    /// Decoders of what each leg receives (A, B), made when a wideband leg's
    /// audio is tapped or transcoded.
    dec: [Option<Box<Inbound>>; 2],
    /// Encoders of what each leg sends (A, B), when the legs' codecs differ
    /// beyond PCMU↔PCMA.
    enc: [Option<Box<Outbound>>; 2],
}

impl RelayJob {
    /// Relays between `a` (the caller's leg) and `b` (the dialled leg).
    pub fn new(a: Leg, b: Leg, events: mpsc::UnboundedSender<(Side, LegEvent)>, tap: Option<Arc<dyn Tap>>) -> Self {
        Self {
            a,
            b,
            events: Events::Two(events),
            tap,
            asked: [Suppression::OFF; 2],
            suppress: [None, None],
            dec: [None, None],
            enc: [None, None],
        }
    }

    fn on_datagram(&mut self, leg: usize, socket: Socket, buf: &mut [u8], from: SocketAddr, now: Instant) {
        let (side, src, dst) =
            if leg == 0 { (Side::A, &mut self.a, &mut self.b) } else { (Side::B, &mut self.b, &mut self.a) };
        let kind = src.session.handle_receive(socket, buf, from, now);
        if kind == Received::Nothing {
            return;
        }
        let codec = src.session.audio().codec;
        let far = usize::from(leg == 0);
        let far_codec = dst.session.audio().codec;
        let transcoded = codec != far_codec && (codec.g711().is_none() || far_codec.g711().is_none());
        if transcoded {
            // The far leg's stream is our own (its numbering, its clock): digits
            // pressed on this side are sent there as new RFC 4733 events.
            while let Some(e) = src.session.poll_event() {
                if let LegEvent::Dtmf(digit) = &e {
                    let _ = dst.session.queue_dtmf(&digit.to_string(), Duration::from_millis(100));
                }
                self.events.send(side, e);
            }
        } else {
            self.events.drain(side, &mut src.session);
        }
        suppress_payload(&mut self.suppress[leg], codec, &kind, buf);
        if !transcoded {
            if let (Some(t), Some(payload)) = (&self.tap, kind.payload(buf)) {
                tap_payload(&**t, side == Side::A, codec, payload, &mut self.dec[leg]);
            }
            if let Some(dest) = dst.session.relay_from(buf, kind, src.session.audio()) {
                let _ = dst.ports.rtp.send_to(buf, dest);
            }
            return;
        }
        // Transcoded: each payload is decoded once, for the tap and the far leg
        // (a codec's state must see every packet exactly once).
        let Received::Audio { .. } = kind else { return };
        let Some(payload) = kind.payload(buf) else { return };
        let Some(dec) = inbound_for(&mut self.dec[leg], codec) else { return };
        if !dec.decode(payload) {
            return;
        }
        if let Some(t) = &self.tap {
            match codec.g711() {
                Some(law) if side == Side::A => t.heard(law, payload),
                Some(law) => t.said(law, payload),
                None if side == Side::A => dec.pieces(|narrow, wide| t.heard_wideband(NARROW_LAW, narrow, wide)),
                None => dec.pieces(|narrow, wide| t.said_wideband(NARROW_LAW, narrow, wide)),
            }
        }
        let rate = codec.sample_rate();
        if let Some(enc) = outbound_for(&mut self.enc[far], far_codec) {
            // One packet at a time: the session holds one outgoing packet.
            enc.encode_each(dec.pcm(), rate, |payload| {
                dst.session.send_audio(payload, false);
                dst.flush();
            });
        }
    }

    fn on_timer(&mut self, now: Instant) {
        for (side, leg) in [(Side::A, &mut self.a), (Side::B, &mut self.b)] {
            if now >= leg.session.poll_timeout() {
                leg.session.handle_timeout(now);
                leg.flush();
                self.events.drain(side, &mut leg.session);
            }
        }
    }

    fn on_command(&mut self, side: Side, command: LegCommand, now: Instant) {
        match (side, command) {
            (Side::A, LegCommand::Update(audio)) => self.a.session.update(audio, now),
            (Side::B, LegCommand::Update(audio)) => self.b.session.update(audio, now),
            (_, LegCommand::Tap(t)) => self.tap = t,
            (side, LegCommand::Suppress(want)) => {
                self.asked[usize::from(side == Side::B)] = want;
                let [a, b] = self.asked;
                toggle(&mut self.suppress[0], a.inbound || b.outbound, 8000);
                toggle(&mut self.suppress[1], b.inbound || a.outbound, 8000);
            }
            // Side A's peer muted: nothing more of it reaches B (and vice versa).
            (Side::A, LegCommand::MuteInbound(m)) => self.b.session.set_muted(m),
            (Side::B, LegCommand::MuteInbound(m)) => self.a.session.set_muted(m),
            // Relayed streams keep the peers' own numbering: nothing is injected
            // (MediaSession::send_dtmf refuses relayed legs).
            (_, LegCommand::SendDtmf(..)) | (_, LegCommand::Stop) => {}
        }
    }
}
