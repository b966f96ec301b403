//! The bridge between an RTP leg and a PCM endpoint (a voice agent's stream, or a
//! local room the leg takes part in): the leg's audio goes to the endpoint as it arrives, and the
//! endpoint's audio is played into the leg from a paced queue, one packet every
//! 20 ms of the box's clock (silence when the queue is empty, so the peer's media
//! timers and NAT bindings stay alive).
//!
//! One task per call owns the leg and the queue: no lock, no allocation per packet
//! (chunks to the endpoint are fixed-size arrays in a bounded channel; when the
//! endpoint falls behind, chunks are dropped and counted, never buffered without
//! bound).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::{Instant, MissedTickBehavior};

use super::g711::G711;
use super::leg::{LegCommand, LegEvent, MAX_DATAGRAM, Received, RtpLeg, Tap};
use super::playout::{FRAME_SAMPLES, Playout};
use super::transcode::RateConverter;

/// Samples in 20 ms at 16000 Hz: the largest playout frame.
pub const WIDE_FRAME_SAMPLES: usize = 2 * FRAME_SAMPLES;

/// Largest chunk handed to an endpoint in one message (60 ms of G.711); longer
/// packets are split.
pub const CHUNK_BYTES: usize = 480;

/// Which way a chunk of call audio went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Received from the leg's peer (the caller).
    Heard,
    /// Played into the leg (what the peer hears).
    Said,
}

/// A chunk of call audio for the endpoint: G.711 bytes in `codec`.
#[derive(Clone, Copy)]
pub struct Chunk {
    /// Heard or said.
    pub direction: Direction,
    /// The leg's codec.
    pub codec: G711,
    /// RTP timestamp of the packet's first sample (RFC 3550 §5.1; 8000 Hz clock)
    /// for heard audio; for said audio, the count of samples played so far.
    pub rtp_timestamp: u32,
    /// Valid bytes in `data`.
    pub len: u16,
    /// The audio.
    pub data: [u8; CHUNK_BYTES],
}

impl Chunk {
    /// The valid audio bytes.
    pub fn audio(&self) -> &[u8] {
        &self.data[..usize::from(self.len)]
    }
}

/// One frame of PCM16 mono audio at the port's rate (20 ms: 160 samples at 8000
/// Hz, 320 at 16000), moved without a heap allocation (a room's mix).
#[derive(Debug, Clone, Copy)]
pub struct PcmFrame {
    /// Valid samples in `samples`.
    pub len: u16,
    /// The audio.
    pub samples: [i16; WIDE_FRAME_SAMPLES],
}

/// What the endpoint asks of the playback queue. Audio is PCM16 mono at the
/// port's [`PcmPort::sample_rate`].
// `Frame` is large on purpose: a room's 20 ms mix travels without a heap
// allocation per packet (the channel's slots are allocated once).
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Playback {
    /// PCM16 mono to append.
    Audio(Vec<i16>),
    /// One frame to append (no allocation).
    Frame(PcmFrame),
    /// Report this mark once the audio queued before it has played.
    Mark(String),
    /// Drop the queue now (barge-in); pending marks are reported at once.
    Clear,
    /// Play this PCM16 8 kHz audio from the box (converted to the port's rate) (`playback_start`) on a queue of its
    /// own: `overlay` mixes it over the endpoint's audio, otherwise the endpoint's
    /// queue waits (nothing of it is lost) until the playback ends. Ends with
    /// `LegEvent::PlaybackDone { id, completed: true }`.
    Play {
        /// Reported back in `PlaybackDone`.
        id: u64,
        /// The audio.
        pcm: Vec<i16>,
        /// Mix instead of pausing the endpoint's audio.
        overlay: bool,
    },
    /// Stop every playback now (`playback_stop`): `PlaybackDone { completed: false }`.
    StopPlay,
}

/// The endpoint's side of the bridge, handed to [`run_pcm`].
pub struct PcmPort {
    /// A sender into `playback`, for the call's own use (playback from the box).
    pub control: mpsc::Sender<Playback>,
    /// Audio chunks to the endpoint (`try_send`: dropped when full).
    pub chunks: mpsc::Sender<Chunk>,
    /// Send heard chunks.
    pub want_heard: bool,
    /// Send said chunks.
    pub want_said: bool,
    /// Playback requests from the endpoint; closing it leaves silence.
    pub playback: mpsc::Receiver<Playback>,
    /// Marks reached by playback.
    pub marks: mpsc::UnboundedSender<String>,
    /// Rate of the endpoint's playback audio, Hz: 8000 (default), or 16000 for an
    /// L16/16000 agent — the bridge then plays at 16 kHz, converts each frame to 8
    /// kHz for the leg, and hands the 16 kHz frame to the tap
    /// ([`Tap::said_wideband`]) so a 16 kHz recording keeps the full band.
    pub sample_rate: u32,
}

/// The endpoint's handles on the other side of a [`PcmPort`].
pub struct PcmEndpoint {
    /// Call audio.
    pub chunks: mpsc::Receiver<Chunk>,
    /// Playback requests.
    pub playback: mpsc::Sender<Playback>,
    /// Marks reached.
    pub marks: mpsc::UnboundedReceiver<String>,
}

/// A connected port/endpoint pair; `depth` = chunks buffered toward the endpoint.
pub fn pcm_pair(depth: usize, want_heard: bool, want_said: bool) -> (PcmPort, PcmEndpoint) {
    let (chunk_tx, chunk_rx) = mpsc::channel(depth);
    let (play_tx, play_rx) = mpsc::channel(256);
    let (mark_tx, mark_rx) = mpsc::unbounded_channel();
    (
        PcmPort {
            control: play_tx.clone(),
            chunks: chunk_tx,
            want_heard,
            want_said,
            playback: play_rx,
            marks: mark_tx,
            sample_rate: 8000,
        },
        PcmEndpoint { chunks: chunk_rx, playback: play_tx, marks: mark_rx },
    )
}

/// One packet of audio.
const FRAME: Duration = Duration::from_millis(20);

/// Frames sent at once to catch up after a late wake-up (100 ms).
const MAX_CATCH_UP: u32 = 5;

/// Queued playback beyond this many seconds is dropped (the agent sent more than
/// two minutes ahead).
const MAX_QUEUED_SECONDS: usize = 120;

fn offer(port: &PcmPort, direction: Direction, codec: G711, rtp_timestamp: u32, audio: &[u8], dropped: &mut u64) {
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

/// The 16 kHz → 8 kHz step of a 16 kHz playout: one 320-sample frame in, one
/// 160-sample frame out, in fixed buffers.
struct Narrow {
    down: Option<RateConverter>,
    /// Converter output not yet handed out (it comes in 10 ms steps).
    pending: [i16; 2 * FRAME_SAMPLES],
    pending_len: usize,
}

impl Narrow {
    fn new() -> Self {
        let down = RateConverter::down()
            .inspect_err(|e| tracing::warn!("16 kHz playout without its filter ({e}): decimating"))
            .ok();
        Narrow { down, pending: [0; 2 * FRAME_SAMPLES], pending_len: 0 }
    }

    fn frame(&mut self, wide: &[i16], out: &mut [i16; FRAME_SAMPLES]) {
        let Some(down) = self.down.as_mut() else {
            for (o, pair) in out.iter_mut().zip(wide.chunks_exact(2)) {
                *o = pair[0];
            }
            return;
        };
        let (pending, len) = (&mut self.pending, &mut self.pending_len);
        down.process(wide, |s| {
            if *len < pending.len() {
                pending[*len] = s;
                *len += 1;
            }
        });
        let n = (*len).min(FRAME_SAMPLES);
        out[..n].copy_from_slice(&pending[..n]);
        out[n..].fill(0);
        pending.copy_within(n..*len, 0);
        *len -= n;
    }
}

/// Runs the leg ↔ endpoint bridge until `LegCommand::Stop`; returns the leg for its
/// statistics. `tap` (the recorder) hears both directions.
pub async fn run_pcm(
    mut leg: RtpLeg,
    mut commands: mpsc::Receiver<LegCommand>,
    events: mpsc::UnboundedSender<LegEvent>,
    rtp_timeout: Duration,
    mut tap: Option<Arc<dyn Tap>>,
    mut port: PcmPort,
) -> RtpLeg {
    // 16 kHz playout for an L16/16000 agent, else the leg's 8 kHz.
    let wide = port.sample_rate == 16000;
    let rate = if wide { 16000 } else { 8000 };
    let frame_len = rate / 50;
    let mut narrow = wide.then(Narrow::new);
    let mut playout = Playout::new(MAX_QUEUED_SECONDS * rate);
    // Playback from the box (playback_start), on its own queue; marks = ids.
    let mut player = Playout::new(MAX_QUEUED_SECONDS * rate);
    let mut overlay = false;
    let mut player_frame = [0i16; WIDE_FRAME_SAMPLES];
    let mut buf = [0u8; MAX_DATAGRAM];
    let mut rtcp_buf = [0u8; 512];
    let mut frame = [0i16; WIDE_FRAME_SAMPLES];
    let mut frame8 = [0i16; FRAME_SAMPLES];
    let mut out = [0u8; FRAME_SAMPLES];
    let mut said_samples = 0u32;
    let mut timed_out = false;
    let mut playback_open = true;
    let mut talking = false;
    let mut inbound_muted = false;
    let mut dropped = 0u64;
    let mut late_resyncs = 0u64;
    // Pacing on the box's clock: one frame per 20 ms. A late wake-up (a busy core)
    // catches up with up to MAX_CATCH_UP frames at once, so playback keeps real
    // time instead of falling behind for good; later than that, the schedule
    // restarts from now (the peer's jitter buffer absorbs the gap).
    let mut next_frame_at = Instant::now() + FRAME;
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        let codec = leg.audio().codec;
        tokio::select! {
            r = leg.recv(&mut buf) => {
                let Ok((n, from)) = r else { continue };
                match leg.on_datagram(&buf[..n], from, Instant::now()) {
                    Received::Audio(payload, rtp_timestamp) => {
                        if let Some(t) = &tap {
                            t.heard(codec, payload);
                        }
                        if port.want_heard && !inbound_muted {
                            offer(&port, Direction::Heard, codec, rtp_timestamp, payload, &mut dropped);
                        }
                    }
                    Received::Dtmf(d) => {
                        let _ = events.send(LegEvent::Dtmf(d));
                        while let Some(d) = leg.poll_dtmf() {
                            let _ = events.send(LegEvent::Dtmf(d));
                        }
                    }
                    Received::Nothing => {}
                }
            }
            _ = tokio::time::sleep_until(next_frame_at) => {
                let now = Instant::now();
                let mut due = 0;
                while next_frame_at <= now && due < MAX_CATCH_UP {
                    next_frame_at += FRAME;
                    due += 1;
                }
                if next_frame_at <= now {
                    late_resyncs += 1;
                    next_frame_at = now + FRAME;
                }
                for _ in 0..due {
                    let playing = !player.is_idle();
                    let frame = &mut frame[..frame_len];
                    let real = if playing && !overlay {
                        // The endpoint's queue waits while the box plays.
                        player.next_frame(frame)
                    } else if playing {
                        let a = playout.next_frame(frame);
                        let b = player.next_frame(&mut player_frame[..frame_len]);
                        for (x, y) in frame.iter_mut().zip(player_frame.iter()) {
                            *x = x.saturating_add(*y);
                        }
                        a.max(b)
                    } else {
                        playout.next_frame(frame)
                    };
                    while let Some(id) = player.pop_reached() {
                        if let Ok(id) = id.parse() {
                            let _ = events.send(LegEvent::PlaybackDone { id, completed: true });
                        }
                    }
                    match narrow.as_mut() {
                        Some(n) => n.frame(frame, &mut frame8),
                        None => frame8.copy_from_slice(&frame[..FRAME_SAMPLES]),
                    }
                    codec.encode(&frame8, &mut out);
                    if let Some(t) = &tap {
                        if wide {
                            t.said_wideband(codec, &out, frame);
                        } else {
                            t.said(codec, &out);
                        }
                    }
                    if port.want_said {
                        offer(&port, Direction::Said, codec, said_samples, &out, &mut dropped);
                    }
                    said_samples = said_samples.wrapping_add(FRAME_SAMPLES as u32);
                    // RFC 3551 §4.1: the marker bit starts each talkspurt.
                    leg.send_audio(&out, real > 0 && !talking).await;
                    talking = real > 0;
                    while let Some(name) = playout.pop_reached() {
                        let _ = port.marks.send(name);
                    }
                }
            }
            p = port.playback.recv(), if playback_open => match p {
                Some(Playback::Audio(pcm)) => playout.push(&pcm),
                Some(Playback::Frame(f)) => playout.push(&f.samples[..usize::from(f.len).min(WIDE_FRAME_SAMPLES)]),
                Some(Playback::Mark(name)) => playout.mark(name),
                Some(Playback::Clear) => {
                    for name in playout.clear() {
                        let _ = port.marks.send(name);
                    }
                }
                Some(Playback::Play { id, pcm, overlay: mix }) => {
                    overlay = mix;
                    if wide {
                        match RateConverter::up() {
                            Ok(up) => player.push(&up.convert_clip(&pcm)),
                            Err(e) => tracing::warn!("playback not converted to 16 kHz: {e}"),
                        }
                    } else {
                        player.push(&pcm);
                    }
                    player.mark(id.to_string());
                }
                Some(Playback::StopPlay) => {
                    for id in player.clear() {
                        if let Ok(id) = id.parse() {
                            let _ = events.send(LegEvent::PlaybackDone { id, completed: false });
                        }
                    }
                }
                None => playback_open = false,
            },
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
    if dropped > 0 || playout.dropped_samples() > 0 || late_resyncs > 0 {
        tracing::debug!(
            late_resyncs,
            chunks = dropped,
            samples = playout.dropped_samples(),
            "audio dropped between the call and its endpoint"
        );
    }
    leg
}
