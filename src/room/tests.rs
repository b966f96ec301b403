//! In-process tests of rooms: real room jobs on a one-worker media engine,
//! participants attached through real `pcm_pair`s (no network), audio generated
//! here and checked with a Goertzel measurement. Time bounds below only keep a broken
//! test from hanging; no assertion depends on timing.

use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::{MissedTickBehavior, timeout};
use uuid::Uuid;

use super::test_signal::{amplitude, tone};
use super::*;
use crate::media::engine::Engine;
use crate::media::pcm::{CHUNK_BYTES, Direction, PcmPort, Playback, pcm_pair, room_pair};

const FRAME: usize = 160;
const AMPLITUDE: f64 = 4000.0;
/// Distinct tones, one per caller. Not multiples of a round frequency: G.711's
/// quantization error of a tone of f Hz is periodic, with lines at multiples of
/// gcd(f, 8000) Hz, so with 400/700/1100 Hz the error of the 1100 Hz tone has a
/// line at 700 Hz (−46 dB) that would look like a caller hearing itself.
const TONES: [f64; 3] = [403.0, 707.0, 1109.0];

/// The test's side of a SIP participant: plays the leg task's role (sends heard
/// chunks with RTP timestamps, collects the frames the room plays to it).
struct Caller {
    port: PcmPort,
    audio: Vec<i16>,
    sent: usize,
    timestamp: u32,
    heard: Vec<i16>,
    /// A wideband leg (G.722, Opus): 16 kHz `L16Wide` chunks, 320-sample frames.
    wide: bool,
    /// Lengths of the frames the room played to it.
    frame_lens: std::collections::BTreeSet<usize>,
}

impl Caller {
    fn new(port: PcmPort, freq: f64, timestamp: u32) -> Self {
        let audio = tone(freq, 8000, AMPLITUDE, 8000);
        Caller { port, audio, sent: 0, timestamp, heard: Vec::new(), wide: false, frame_lens: Default::default() }
    }

    /// A wideband caller saying `audio` (1 s at 16 kHz, looped), as the PCM job
    /// of a G.722 or Opus leg hands it to a 16 kHz port.
    fn wide(port: PcmPort, audio: Vec<i16>, timestamp: u32) -> Self {
        Caller { wide: true, audio, ..Caller::new(port, 0.0, timestamp) }
    }

    /// Sends the next 20 ms of its tone: a PCMU chunk, or four 16 kHz chunks.
    fn speak(&mut self) {
        if self.wide {
            let start = (self.sent * 2 * FRAME) % self.audio.len();
            for part in self.audio[start..start + 2 * FRAME].chunks(CHUNK_BYTES / 2) {
                let mut c = Chunk {
                    direction: Direction::Heard,
                    codec: crate::media::pcm::ChunkFormat::L16Wide,
                    len: (part.len() * 2) as u16,
                    rtp_timestamp: self.timestamp,
                    data: [0; CHUNK_BYTES],
                };
                for (b, s) in c.data.chunks_exact_mut(2).zip(part) {
                    b.copy_from_slice(&s.to_ne_bytes());
                }
                let _ = self.port.chunks.try_send(c);
                self.timestamp = self.timestamp.wrapping_add(part.len() as u32);
            }
            self.sent += 1;
            return;
        }
        // 1 s holds whole periods of every tone: looping it is seamless.
        let start = (self.sent * FRAME) % self.audio.len();
        let mut c = Chunk {
            direction: Direction::Heard,
            codec: crate::media::pcm::ChunkFormat::G711(G711::Pcmu),
            len: FRAME as u16,
            rtp_timestamp: self.timestamp,
            data: [0; CHUNK_BYTES],
        };
        G711::Pcmu.encode(&self.audio[start..start + FRAME], &mut c.data);
        let _ = self.port.chunks.try_send(c);
        self.sent += 1;
        self.timestamp = self.timestamp.wrapping_add(FRAME as u32);
    }

    /// Collects what the room played to it so far.
    fn listen(&mut self) {
        let frames = self.port.frames.as_mut().expect("a room pair");
        while let Ok(f) = frames.try_recv() {
            self.heard.extend_from_slice(&f.samples[..usize::from(f.len)]);
            self.frame_lens.insert(usize::from(f.len));
        }
    }
}

/// Runs `frames` ticks of real time with every caller speaking and listening.
async fn talk(callers: &mut [Caller], frames: usize) {
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    tick.set_missed_tick_behavior(MissedTickBehavior::Burst);
    for _ in 0..frames {
        tick.tick().await;
        for c in callers.iter_mut() {
            c.speak();
            c.listen();
        }
    }
    // Let the room play out what is in its jitter buffers.
    for _ in 0..5 {
        tick.tick().await;
        for c in callers.iter_mut() {
            c.listen();
        }
    }
}

fn options(max_participants: usize) -> RoomOptions {
    RoomOptions { max_participants, ..RoomOptions::default() }
}

async fn next_event(events: &mut mpsc::UnboundedReceiver<RoomEvent>) -> RoomEvent {
    match timeout(Duration::from_secs(5), events.recv()).await {
        Ok(Some(e)) => e,
        other => panic!("no room event: {}", if other.is_err() { "timeout" } else { "channel closed" }),
    }
}

async fn join_callers(rooms: &Rooms, name: &str, n: usize) -> (Vec<Caller>, Vec<ParticipantHandle>) {
    let mut callers = Vec::new();
    let mut handles = Vec::new();
    for (i, freq) in TONES.iter().enumerate().take(n) {
        let (port, endpoint) = room_pair(64, true, false);
        let handle = rooms.join(name, options(3), Participant::leg(format!("call-{i}"), endpoint)).await.unwrap();
        callers.push(Caller::new(port, *freq, 1_000_000 * i as u32));
        handles.push(handle);
    }
    (callers, handles)
}

/// Tone levels heard by a caller after the jitter buffer's start-up.
fn levels(c: &Caller) -> [f64; 3] {
    let heard = &c.heard[c.heard.len().min(FRAME * 10)..];
    TONES.map(|f| amplitude(heard, f, 8000))
}

#[tokio::test]
async fn three_callers_hear_the_other_two_and_not_themselves_and_mute_removes_a_tone() {
    let (tx, _events) = mpsc::unbounded_channel();
    let rooms = Rooms::new(tx, Engine::start(1).unwrap());
    let (mut callers, handles) = join_callers(&rooms, "support", 3).await;
    talk(&mut callers, 60).await;
    for (i, c) in callers.iter().enumerate() {
        assert!(c.heard.len() >= 40 * FRAME, "caller {i} got {} samples", c.heard.len());
        let l = levels(c);
        for (j, level) in l.iter().enumerate() {
            if i == j {
                assert!(*level < 5.0, "caller {i} hears itself at {level:.1}: {l:?}");
            } else {
                assert!(*level > 1500.0, "caller {i} hears caller {j} at only {level:.1}: {l:?}");
            }
        }
    }

    // Mute caller 0 through the registry: nobody hears its tone, caller 0 still hears.
    let id = handles[0].conference_id();
    assert_eq!(rooms.mute(id, &["call-0".to_string()]).await, Ok(1));
    for c in callers.iter_mut() {
        c.listen();
        c.heard.clear();
    }
    talk(&mut callers, 40).await;
    let l: Vec<_> = callers.iter().map(levels).collect();
    assert!(l[1][0] < 5.0 && l[2][0] < 5.0, "muted caller still heard: {l:?}");
    assert!(l[1][2] > 1500.0 && l[2][1] > 1500.0, "unmuted callers still hear each other: {l:?}");
    assert!(l[0][1] > 1500.0 && l[0][2] > 1500.0, "the muted caller still hears: {l:?}");
    let p = rooms.participants(id).await.unwrap();
    assert_eq!(p.iter().filter(|p| p.muted).map(|p| p.participant_id.as_str()).collect::<Vec<_>>(), ["call-0"]);

    // Hold caller 1: it hears silence and is not heard.
    handles[1].set_held(true);
    assert_eq!(rooms.participants(id).await.unwrap().iter().filter(|p| p.held).count(), 1);
    for c in callers.iter_mut() {
        c.listen();
        c.heard.clear();
    }
    talk(&mut callers, 30).await;
    assert!(callers[1].heard.iter().all(|&s| s == 0), "held caller hears the room");
    assert!(levels(&callers[2])[1] < 5.0, "held caller is heard");
    let stats = rooms.list()[0].stats;
    assert!(stats.ticks > 100, "{stats:?}");
}

#[tokio::test]
async fn lifecycle_events_full_room_leave_hangup_and_end() {
    let (tx, mut events) = mpsc::unbounded_channel();
    let rooms = Rooms::new(tx, Engine::start(1).unwrap());
    let (mut callers, mut handles) = join_callers(&rooms, "sales", 3).await;
    let id = handles[0].conference_id();
    assert!(handles.iter().all(|h| h.conference_id() == id && h.room_name() == "sales"));
    match next_event(&mut events).await {
        RoomEvent::Created { conference_id, name, created_by, .. } => {
            assert_eq!((conference_id, name.as_str(), created_by.as_str()), (id, "sales", "call-0"));
        }
        e => panic!("expected Created, got {e:?}"),
    }
    for i in 0..3 {
        match next_event(&mut events).await {
            RoomEvent::ParticipantJoined { conference_id, participant_id, .. } => {
                assert_eq!((conference_id, participant_id), (id, format!("call-{i}")));
            }
            e => panic!("expected ParticipantJoined, got {e:?}"),
        }
    }

    // max_participants = 3: a fourth is refused and gets its endpoint back.
    let (_port, endpoint) = pcm_pair(8, true, false);
    let refused = rooms.join("sales", options(3), Participant::leg("call-3", endpoint)).await.unwrap_err();
    assert_eq!(refused.error, JoinError::Full { name: "sales".into(), max_participants: 3 });
    assert!(refused.participant.is_some_and(|p| p.id == "call-3"));
    // The same id twice is refused.
    let (_port, endpoint) = pcm_pair(8, true, false);
    let refused = rooms.join("sales", options(10), Participant::leg("call-1", endpoint)).await.unwrap_err();
    assert_eq!(refused.error, JoinError::AlreadyJoined("call-1".into()));
    assert_eq!(rooms.list().len(), 1);
    assert_eq!(rooms.find("sales").map(|r| r.participants), Some(3));
    // A listener only joins rooms that exist.
    let (listen_tx, _listen_rx) = mpsc::channel(8);
    let refused =
        rooms.join("nowhere", options(3), Participant::listener("l", listen_tx, G711::Pcmu)).await.unwrap_err();
    assert_eq!(refused.error, JoinError::Invalid("a listener cannot create a room"));
    assert!(rooms.find("nowhere").is_none());
    assert_eq!(rooms.find(&id.to_string()).map(|r| r.name), Some("sales".into()));

    // Leave, then a dropped handle, then a leg whose media task ended.
    handles.remove(0).leave();
    drop(handles.remove(0));
    let last = callers.pop().map(|c| c.port);
    drop(last); // the leg task's port goes away: the room sees its channels close
    let mut left = Vec::new();
    for _ in 0..3 {
        match next_event(&mut events).await {
            RoomEvent::ParticipantLeft { conference_id, participant_id, reason, .. } => {
                assert_eq!(conference_id, id);
                left.push((participant_id, reason));
            }
            e => panic!("expected ParticipantLeft, got {e:?}"),
        }
    }
    left.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        left,
        [
            ("call-0".to_string(), LeaveReason::Left),
            ("call-1".to_string(), LeaveReason::Hangup),
            ("call-2".to_string(), LeaveReason::Hangup)
        ]
    );
    match next_event(&mut events).await {
        RoomEvent::Ended { conference_id, reason, .. } => assert_eq!((conference_id, reason), (id, EndReason::AllLeft)),
        e => panic!("expected Ended, got {e:?}"),
    }
    assert!(rooms.list().is_empty());
    assert_eq!(rooms.participants(id).await, Err(RoomError::NotFound(id)));
    drop(handles); // the last handle's leave goes to an ended room: no event

    // The same name again is a new room.
    let (_port, endpoint) = pcm_pair(8, true, false);
    let h = rooms.join("sales", options(3), Participant::leg("call-9", endpoint)).await.unwrap();
    assert_ne!(h.conference_id(), id);
    assert!(matches!(next_event(&mut events).await, RoomEvent::Created { .. }));
    assert!(matches!(next_event(&mut events).await, RoomEvent::ParticipantJoined { .. }));

    // Telnyx `end`: everyone leaves with RoomEnded, then Ended via API.
    rooms.end(h.conference_id()).await.unwrap();
    match next_event(&mut events).await {
        RoomEvent::ParticipantLeft { participant_id, reason, .. } => {
            assert_eq!((participant_id.as_str(), reason), ("call-9", LeaveReason::RoomEnded));
        }
        e => panic!("expected ParticipantLeft, got {e:?}"),
    }
    assert!(matches!(next_event(&mut events).await, RoomEvent::Ended { reason: EndReason::EndedViaApi, .. }));
    let missing = Uuid::new_v4();
    let (_port, endpoint) = pcm_pair(8, true, false);
    let refused = rooms.join_existing(missing, Participant::leg("x", endpoint)).await.unwrap_err();
    assert_eq!(refused.error, JoinError::NotFound(missing));
    drop(h);
    assert!(timeout(Duration::from_millis(100), events.recv()).await.is_err(), "no event after the end");
}

#[tokio::test]
async fn an_empty_room_lingers_and_keeps_its_id_when_rejoined() {
    let (tx, mut events) = mpsc::unbounded_channel();
    let rooms = Rooms::new(tx, Engine::start(1).unwrap());
    let lingering = RoomOptions { linger: Duration::from_millis(300), ..RoomOptions::default() };
    let (_port, endpoint) = pcm_pair(8, true, false);
    let h = rooms.join("lobby", lingering, Participant::leg("a", endpoint)).await.unwrap();
    let id = h.conference_id();
    h.leave();
    // Still listed while lingering; a join now lands in the same room.
    let (_port2, endpoint) = pcm_pair(8, true, false);
    let h2 = rooms.join("lobby", lingering, Participant::leg("b", endpoint)).await.unwrap();
    assert_eq!(h2.conference_id(), id);
    drop(h2);
    let mut kinds = Vec::new();
    loop {
        let e = next_event(&mut events).await;
        let end = matches!(e, RoomEvent::Ended { .. });
        kinds.push(e);
        if end {
            break;
        }
    }
    let names: Vec<_> = kinds
        .iter()
        .map(|e| match e {
            RoomEvent::Created { .. } => "created",
            RoomEvent::ParticipantJoined { .. } => "joined",
            RoomEvent::ParticipantLeft { .. } => "left",
            RoomEvent::Ended { .. } => "ended",
        })
        .collect();
    assert_eq!(names, ["created", "joined", "left", "joined", "left", "ended"]);
    assert!(rooms.list().is_empty());
}

#[tokio::test]
async fn an_agent_hears_the_room_and_speaks_into_it_and_a_listener_hears_everyone() {
    let (tx, _events) = mpsc::unbounded_channel();
    let rooms = Rooms::new(tx, Engine::start(1).unwrap());
    let (mut callers, handles) = join_callers(&rooms, "hot-transfer", 1).await;
    // The agent: the room holds the port, the test plays the agent stream's part.
    let (port, mut agent) = pcm_pair(256, true, false);
    let _agent_handle = rooms.join("hot-transfer", options(3), Participant::agent("agent", port)).await.unwrap();
    let (listen_tx, mut listen_rx) = mpsc::channel(256);
    let _listener =
        rooms.join("hot-transfer", options(3), Participant::listener("listen", listen_tx, G711::Pcma)).await.unwrap();
    assert_eq!(rooms.participants(handles[0].conference_id()).await.unwrap().len(), 2, "listeners not listed");
    // The agent says 1 s of caller 2's tone (caller 2 is not in this room), then a mark.
    agent.playback.send(Playback::Audio(tone(TONES[2], 8000, AMPLITUDE, 8000))).await.unwrap();
    agent.playback.send(Playback::Mark("greeting".into())).await.unwrap();
    talk(&mut callers, 40).await;

    // The caller hears the agent.
    let caller_hears = levels(&callers[0]);
    assert!(caller_hears[2] > 1500.0 && caller_hears[0] < 5.0, "{caller_hears:?}");
    // The agent hears the caller (PCMU heard chunks), not itself.
    let mut agent_heard = Vec::new();
    while let Ok(c) = agent.chunks.try_recv() {
        assert_eq!((c.direction, c.codec), (Direction::Heard, crate::media::pcm::ChunkFormat::G711(G711::Pcmu)));
        let mut pcm = [0i16; FRAME];
        let n = G711::Pcmu.decode(c.audio(), &mut pcm);
        agent_heard.extend_from_slice(&pcm[..n]);
    }
    let agent_heard = &agent_heard[FRAME * 10..];
    assert!(amplitude(agent_heard, TONES[0], 8000) > 1500.0);
    assert!(amplitude(agent_heard, TONES[2], 8000) < 20.0);
    // The listener hears both, in its own law.
    let mut mix = Vec::new();
    while let Ok(c) = listen_rx.try_recv() {
        assert_eq!(c.codec, crate::media::pcm::ChunkFormat::G711(G711::Pcma));
        let mut pcm = [0i16; FRAME];
        let n = G711::Pcma.decode(c.audio(), &mut pcm);
        mix.extend_from_slice(&pcm[..n]);
    }
    let mix = &mix[FRAME * 10..];
    assert!(amplitude(mix, TONES[0], 8000) > 1500.0 && amplitude(mix, TONES[2], 8000) > 1500.0);
    // 1 s of agent audio played: its mark came back.
    talk(&mut callers, 20).await;
    assert_eq!(agent.marks.try_recv().ok().as_deref(), Some("greeting"));
    // The agent stream ends (its endpoint dropped): the agent leaves, the caller stays.
    drop(agent);
    talk(&mut callers, 5).await;
    assert_eq!(rooms.find("hot-transfer").map(|r| r.participants), Some(1));
}

/// A wideband participant joined through a 16 kHz room pair.
async fn join_wide(rooms: &Rooms, name: &str, id: &str, audio: Vec<i16>, ts: u32) -> (Caller, ParticipantHandle) {
    let (mut port, endpoint) = room_pair(256, true, false);
    port.sample_rate = 16_000;
    let p = Participant::leg(id, endpoint).with_rate(Rate::Wideband);
    let handle = rooms.join(name, options(4), p).await.unwrap();
    (Caller::wide(port, audio, ts), handle)
}

fn sum(a: Vec<i16>, b: Vec<i16>) -> Vec<i16> {
    a.iter().zip(&b).map(|(x, y)| x.saturating_add(*y)).collect()
}

/// Two wideband legs (G.722/Opus: 16 kHz `L16Wide` chunks) and a G.711 leg in
/// one room: the room mixes at 16 kHz, each wideband leg hears the other's 6 kHz
/// (above G.711's band) in 320-sample frames, the G.711 leg hears the in-band
/// parts in 160-sample frames, nobody hears itself. When the wideband legs
/// leave, the room is narrowband again.
#[tokio::test]
async fn wideband_legs_hear_each_other_above_4_khz_and_a_g711_leg_hears_the_band_it_can() {
    let (tx, _events) = mpsc::unbounded_channel();
    let rooms = Rooms::new(tx, Engine::start(1).unwrap());
    // A: 1000 + 6000 Hz; B: 5000 Hz + 1800 Hz; C (G.711): 707 Hz.
    let a_audio = sum(tone(1000.0, 16_000, AMPLITUDE, 16_000), tone(6000.0, 16_000, AMPLITUDE, 16_000));
    let b_audio = sum(tone(5000.0, 16_000, AMPLITUDE, 16_000), tone(1800.0, 16_000, AMPLITUDE, 16_000));
    let (a, ha) = join_wide(&rooms, "wide", "a", a_audio, 7).await;
    let (b, hb) = join_wide(&rooms, "wide", "b", b_audio, 3_000_000_000).await;
    let (port, endpoint) = room_pair(64, true, false);
    let _hc = rooms.join("wide", options(4), Participant::leg("c", endpoint)).await.unwrap();
    let mut callers = vec![a, b, Caller::new(port, 707.0, 55)];
    talk(&mut callers, 60).await;
    let heard = |c: &Caller, f: f64| {
        let rate = if c.wide { 16_000 } else { 8000 };
        let start = c.heard.len().min(rate as usize / 5); // after the jitter buffer's start
        amplitude(&c.heard[start..], f, rate)
    };
    let [a, b, c] = &callers[..] else { unreachable!() };
    assert_eq!(a.frame_lens.iter().copied().collect::<Vec<_>>(), [320], "a wideband leg gets 16 kHz frames");
    assert_eq!(c.frame_lens.iter().copied().collect::<Vec<_>>(), [160], "a G.711 leg gets 8 kHz frames");
    assert!(b.heard.len() >= 40 * 2 * FRAME, "{}", b.heard.len());
    // B hears A's 6 kHz and 1 kHz, C's 707 Hz, not its own 5 kHz / 1.8 kHz.
    let lb = [6000.0, 1000.0, 707.0, 5000.0, 1800.0].map(|f| heard(b, f));
    assert!(lb[0] > 1500.0 && lb[1] > 1500.0 && lb[2] > 1000.0, "B hears A and C: {lb:?}");
    assert!(lb[3] < 20.0 && lb[4] < 20.0, "B does not hear itself: {lb:?}");
    let la = [5000.0, 1800.0, 6000.0].map(|f| heard(a, f));
    assert!(la[0] > 1500.0 && la[1] > 1500.0 && la[2] < 20.0, "A hears B, not itself: {la:?}");
    // C hears the in-band parts of A and B; its own tone not.
    let lc = [1000.0, 1800.0, 707.0].map(|f| heard(c, f));
    assert!(lc[0] > 1000.0 && lc[1] > 1000.0 && lc[2] < 20.0, "C hears A and B in its band: {lc:?}");

    // The wideband legs leave: the room is narrowband again, C hears a new G.711 leg.
    let mut c = callers.pop().unwrap();
    drop((callers, ha, hb));
    let (port, endpoint) = room_pair(64, true, false);
    let _hn = rooms.join("wide", options(4), Participant::leg("n", endpoint)).await.unwrap();
    c.listen();
    c.heard.clear();
    c.frame_lens.clear();
    let mut callers = vec![c, Caller::new(port, 403.0, 99)];
    talk(&mut callers, 30).await;
    assert!(heard(&callers[0], 403.0) > 1500.0, "{}", heard(&callers[0], 403.0));
    assert_eq!(callers[1].frame_lens.iter().copied().collect::<Vec<_>>(), [160]);
}

/// A wideband leg's codec changes under the room (a re-INVITE to G.711): its
/// G.711 chunks are taken up to 16 kHz and it stays heard; a G.711 leg handed
/// 16 kHz chunks is taken down. Neither is silent.
#[tokio::test]
async fn chunks_of_the_other_rate_are_converted_not_lost() {
    let (tx, _events) = mpsc::unbounded_channel();
    let rooms = Rooms::new(tx, Engine::start(1).unwrap());
    let (mut wide, _hw) = join_wide(&rooms, "mixed", "w", tone(1109.0, 16_000, AMPLITUDE, 16_000), 0).await;
    // The "wide" caller speaks G.711 (8 kHz) chunks into its 16 kHz place.
    wide.wide = false;
    wide.audio = tone(403.0, 8000, AMPLITUDE, 8000);
    let (port, endpoint) = room_pair(256, true, false);
    let _hn = rooms.join("mixed", options(4), Participant::leg("n", endpoint)).await.unwrap();
    // The narrowband caller speaks 16 kHz chunks into its 8 kHz place.
    let mut narrow = Caller::wide(port, tone(707.0, 16_000, AMPLITUDE, 16_000), 0);
    let mut callers = vec![wide, narrow];
    talk(&mut callers, 50).await;
    narrow = callers.pop().unwrap();
    wide = callers.pop().unwrap();
    let w = &wide.heard[wide.heard.len().min(3200)..];
    let n = &narrow.heard[narrow.heard.len().min(1600)..];
    assert!(amplitude(w, 707.0, 16_000) > 1000.0, "the wide leg hears the other: {}", amplitude(w, 707.0, 16_000));
    assert!(amplitude(n, 403.0, 8000) > 1000.0, "the narrow leg hears the other: {}", amplitude(n, 403.0, 8000));
}

/// An L16/16000 agent (or a player of a 16 kHz clip: its port's `sample_rate`
/// is 16000) in a room with a wideband leg: the room mixes at 16 kHz
/// (`RoomInfo::wideband`), the agent hears the leg's 6 kHz as 16 kHz `L16Wide`
/// chunks with running timestamps, and the leg hears the agent's 5 kHz. A
/// narrowband-only room stays narrowband with a 16 kHz agent gone.
#[tokio::test]
async fn a_16_khz_agent_hears_and_speaks_a_wideband_room_above_4_khz() {
    let (tx, _events) = mpsc::unbounded_channel();
    let rooms = Rooms::new(tx, Engine::start(1).unwrap());
    let leg_audio = sum(tone(1000.0, 16_000, AMPLITUDE, 16_000), tone(6000.0, 16_000, AMPLITUDE, 16_000));
    let (leg, handle) = join_wide(&rooms, "wide-agent", "leg", leg_audio, 11).await;
    assert_eq!(rooms.find("wide-agent").map(|r| r.wideband), Some(true));
    // Deep enough for every chunk of the test (4 a frame): none is dropped.
    let (mut port, mut agent) = pcm_pair(1024, true, false);
    port.sample_rate = 16_000;
    let _agent_handle = rooms.join("wide-agent", options(3), Participant::agent("agent", port)).await.unwrap();
    let agent_audio = sum(tone(5000.0, 16_000, AMPLITUDE, 16_000), tone(1800.0, 16_000, AMPLITUDE, 16_000));
    agent.playback.send(Playback::Audio([agent_audio.clone(), agent_audio].concat())).await.unwrap();
    let mut callers = vec![leg];
    talk(&mut callers, 60).await;

    // The leg hears the agent's 5 kHz and 1.8 kHz, not itself.
    let heard = &callers[0].heard[callers[0].heard.len().min(3200)..];
    let l = [5000.0, 1800.0, 6000.0].map(|f| amplitude(heard, f, 16_000));
    assert!(l[0] > 1500.0 && l[1] > 1500.0 && l[2] < 20.0, "the leg hears the agent in wideband: {l:?}");
    // The agent hears the leg at 16 kHz: L16Wide chunks of 80 samples, in order.
    let (mut agent_heard, mut next_ts) = (Vec::new(), None);
    while let Ok(c) = agent.chunks.try_recv() {
        assert_eq!((c.direction, c.codec), (Direction::Heard, crate::media::pcm::ChunkFormat::L16Wide));
        assert_eq!(usize::from(c.len), CHUNK_BYTES);
        if let Some(ts) = next_ts {
            assert_eq!(c.rtp_timestamp, ts, "timestamps run on at 16 kHz");
        }
        next_ts = Some(c.rtp_timestamp.wrapping_add(CHUNK_BYTES as u32 / 2));
        c.wide_samples(&mut agent_heard);
    }
    let agent_heard = &agent_heard[agent_heard.len().min(3200)..];
    let a = [6000.0, 1000.0, 5000.0].map(|f| amplitude(agent_heard, f, 16_000));
    assert!(a[0] > 1500.0 && a[1] > 1500.0 && a[2] < 20.0, "the agent hears the leg in wideband: {a:?}");

    // The wideband leg leaves; a narrowband leg in a room with no 16 kHz party
    // leaves it narrowband.
    drop((callers, handle, _agent_handle, agent));
    let (port, endpoint) = room_pair(64, true, false);
    let _hn = rooms.join("wide-agent", options(3), Participant::leg("n", endpoint)).await.unwrap();
    let mut callers = vec![Caller::new(port, 403.0, 5)];
    talk(&mut callers, 5).await;
    assert_eq!(rooms.find("wide-agent").map(|r| r.wideband), Some(false));
}
