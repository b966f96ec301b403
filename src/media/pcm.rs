//! The interface between an RTP leg and a PCM endpoint (a voice agent's stream,
//! or a local room the leg takes part in): the chunks of call audio handed to the
//! endpoint, the playback requests it sends back, and the port/endpoint channel
//! pair. The bridge itself is a media-engine job (`media::engine::PcmJob`): the
//! leg's audio goes to the endpoint as it arrives, and the endpoint's audio is
//! played into the leg from a paced queue, one packet every 20 ms of the box's
//! clock (`media::pacer`).
//!
//! No lock, no allocation per packet: chunks to the endpoint are fixed-size arrays
//! in a bounded channel; when the endpoint falls behind, chunks are dropped and
//! counted, never buffered without bound.

use tokio::sync::mpsc;

use super::g711::G711;
use super::playout::FRAME_SAMPLES;
use super::transcode::RateConverter;

/// Samples in 20 ms at 16000 Hz: the largest playout frame.
pub const WIDE_FRAME_SAMPLES: usize = 2 * FRAME_SAMPLES;

/// Largest chunk handed to an endpoint in one message (20 ms of G.711, the usual
/// packet); longer packets are split. Kept small because a bounded channel
/// reserves 32 chunks when it is made (issue 20: memory per call).
pub const CHUNK_BYTES: usize = 160;

/// Which way a chunk of call audio went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Received from the leg's peer (the caller).
    Heard,
    /// Played into the leg (what the peer hears).
    Said,
}

/// What a [`Chunk`]'s bytes are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkFormat {
    /// G.711 bytes in this law at 8000 Hz (a G.711 leg, or a wideband leg's audio
    /// for an 8 kHz endpoint: decoded, taken to 8 kHz and µ-law encoded).
    G711(G711),
    /// PCM16 mono at 16000 Hz, native byte order, 2 bytes per sample: a wideband
    /// leg's (G.722, Opus) decoded audio for a 16 kHz endpoint (an L16/16000
    /// agent), never through 8 kHz.
    L16Wide,
}

/// A chunk of call audio for the endpoint.
#[derive(Clone, Copy)]
pub struct Chunk {
    /// Heard or said.
    pub direction: Direction,
    /// What `data` holds.
    pub codec: ChunkFormat,
    /// Heard audio: the RTP timestamp of the first sample (RFC 3550 §5.1), in
    /// samples at the chunk's rate (8000 Hz for G.711 chunks; for L16Wide, the
    /// count of 16 kHz samples decoded so far); said audio: samples played so far.
    pub rtp_timestamp: u32,
    /// Valid bytes in `data`.
    pub len: u16,
    /// The audio.
    pub data: [u8; CHUNK_BYTES],
}

impl Chunk {
    /// `pcm` (PCM16 mono at 16000 Hz) as `L16Wide` chunks of at most
    /// `CHUNK_BYTES / 2` samples, native byte order, their timestamps running on
    /// from `rtp_timestamp` in 16 kHz samples. Built on the stack, one at a time.
    pub fn wide(direction: Direction, rtp_timestamp: u32, pcm: &[i16]) -> impl Iterator<Item = Chunk> + '_ {
        let per_chunk = CHUNK_BYTES / 2;
        pcm.chunks(per_chunk).enumerate().map(move |(i, part)| {
            let mut c = Chunk {
                direction,
                codec: ChunkFormat::L16Wide,
                len: (part.len() * 2) as u16,
                rtp_timestamp: rtp_timestamp.wrapping_add((i * per_chunk) as u32),
                data: [0; CHUNK_BYTES],
            };
            for (bytes, s) in c.data.chunks_exact_mut(2).zip(part) {
                bytes.copy_from_slice(&s.to_ne_bytes());
            }
            c
        })
    }

    /// The valid audio bytes.
    pub fn audio(&self) -> &[u8] {
        &self.data[..usize::from(self.len)]
    }

    /// The law and bytes of a G.711 chunk (`None` for an L16Wide one).
    pub fn g711(&self) -> Option<(G711, &[u8])> {
        match self.codec {
            ChunkFormat::G711(law) => Some((law, self.audio())),
            ChunkFormat::L16Wide => None,
        }
    }

    /// The 16 kHz samples of an L16Wide chunk, appended to `out` (nothing for G.711).
    pub fn wide_samples(&self, out: &mut Vec<i16>) {
        if self.codec == ChunkFormat::L16Wide {
            out.extend(self.audio().chunks_exact(2).map(|b| i16::from_ne_bytes([b[0], b[1]])));
        }
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
/// port's [`PcmPort::sample_rate`]. (A room's 20 ms mixes travel on a channel of
/// their own, [`PcmPort::frames`]: a frame is 640 bytes, and a channel reserves
/// 32 slots of its message type when it is made.)
#[derive(Debug)]
pub enum Playback {
    /// PCM16 mono to append.
    Audio(Vec<i16>),
    /// PCM16 mono from a real-time stream (a voice agent's `media`), with the
    /// instant it reached the box: appended like `Audio`, and the job moves its
    /// 20 ms schedule toward the stream's arrival phase (`media::pacer::Alignment`).
    AudioAt(Vec<i16>, std::time::Instant),
    /// Report this mark once the audio queued before it has played.
    Mark(String),
    /// Drop the queue now (barge-in); pending marks are reported at once.
    Clear,
    /// Play this PCM16 audio from the box, at the port's `sample_rate`
    /// (`MediaSession::play` converts) (`playback_start`) on a queue of its
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

/// The endpoint's side of the bridge, held by the leg's PCM job (`media::engine::PcmJob`).
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
    /// A room's mixes for this participant, one 20 ms frame each, appended to the
    /// playback queue without a heap allocation ([`room_pair`]; `None` for other
    /// endpoints).
    pub frames: Option<mpsc::Receiver<PcmFrame>>,
    /// Marks reached by playback.
    pub marks: mpsc::UnboundedSender<String>,
    /// Rate of the endpoint's playback audio, Hz: 8000 (default), or 16000 for an
    /// L16/16000 agent — the bridge then plays at 16 kHz, converts each frame to 8
    /// kHz for the leg, and hands the 16 kHz frame to the tap
    /// (`media::leg::Tap::said_wideband`) so a 16 kHz recording keeps the full band.
    pub sample_rate: u32,
}

/// The endpoint's handles on the other side of a [`PcmPort`].
pub struct PcmEndpoint {
    /// Call audio.
    pub chunks: mpsc::Receiver<Chunk>,
    /// Playback requests.
    pub playback: mpsc::Sender<Playback>,
    /// The room's mixes (only from [`room_pair`]).
    pub frames: Option<mpsc::Sender<PcmFrame>>,
    /// Marks reached.
    pub marks: mpsc::UnboundedReceiver<String>,
}

/// A connected port/endpoint pair; `depth` = chunks buffered toward the endpoint.
pub fn pcm_pair(depth: usize, want_heard: bool, want_said: bool) -> (PcmPort, PcmEndpoint) {
    pair(depth, want_heard, want_said, None)
}

/// Frames a room may be ahead of a participant's playout (20 ms each).
const ROOM_FRAMES: usize = 16;

/// A pair for a room participant (a SIP leg or a browser): as [`pcm_pair`], plus
/// the channel the room's mixes come on ([`PcmPort::frames`]).
pub fn room_pair(depth: usize, want_heard: bool, want_said: bool) -> (PcmPort, PcmEndpoint) {
    pair(depth, want_heard, want_said, Some(mpsc::channel(ROOM_FRAMES)))
}

type Frames = (mpsc::Sender<PcmFrame>, mpsc::Receiver<PcmFrame>);

fn pair(depth: usize, want_heard: bool, want_said: bool, frames: Option<Frames>) -> (PcmPort, PcmEndpoint) {
    let (chunk_tx, chunk_rx) = mpsc::channel(depth);
    let (play_tx, play_rx) = mpsc::channel(256);
    let (mark_tx, mark_rx) = mpsc::unbounded_channel();
    let (frames_tx, frames_rx) = frames.unzip();
    (
        PcmPort {
            control: play_tx.clone(),
            chunks: chunk_tx,
            want_heard,
            want_said,
            playback: play_rx,
            frames: frames_rx,
            marks: mark_tx,
            sample_rate: 8000,
        },
        PcmEndpoint { chunks: chunk_rx, playback: play_tx, frames: frames_tx, marks: mark_rx },
    )
}

/// The 16 kHz → 8 kHz step of a 16 kHz playout: one 320-sample frame in, one
/// 160-sample frame out, in fixed buffers.
pub struct Narrow {
    down: Option<RateConverter>,
    /// Converter output not yet handed out (it comes in 10 ms steps).
    pending: [i16; 2 * FRAME_SAMPLES],
    pending_len: usize,
}

impl Default for Narrow {
    fn default() -> Self {
        Self::new()
    }
}

impl Narrow {
    /// The converter (plain decimation if its filter cannot be built).
    pub fn new() -> Self {
        let down = RateConverter::down()
            .inspect_err(|e| tracing::warn!("16 kHz playout without its filter ({e}): decimating"))
            .ok();
        Narrow { down, pending: [0; 2 * FRAME_SAMPLES], pending_len: 0 }
    }

    /// Converts one 320-sample frame to 160 samples in `out`.
    pub fn frame(&mut self, wide: &[i16], out: &mut [i16; FRAME_SAMPLES]) {
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
