//! The room job on a virtual clock (STYLE.md §7): no engine, no sleeping; the
//! test plays the worker's part, calling `on_timer` at the job's deadlines with
//! instants it advances itself, and checks what the room answers, counts and
//! reports at each wake-up.

use std::collections::HashMap;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use super::task::{Command, Counters, Entry, Map, RoomCommands, RoomJob, Shared, Target};
use super::{EndReason, JoinError, LeaveReason, Participant, RoomEvent, RoomOptions};
use crate::media::engine::{TimerJob, TimerOutcome};
use crate::media::pcm::{PcmPort, room_pair};

const MS: Duration = Duration::from_millis(1);

/// What a join is answered with.
type JoinAnswer = oneshot::Receiver<Result<(), (JoinError, Participant)>>;

/// A room job as the registry makes it, and the test's ends of its channels.
struct Fixture {
    t0: Instant,
    job: RoomJob,
    shared: Arc<Shared>,
    commands: mpsc::UnboundedSender<Command>,
    events: mpsc::UnboundedReceiver<RoomEvent>,
    map: Arc<Map>,
    next_serial: u64,
    /// The test's side of the SIP participants' pairs (kept open).
    ports: Vec<PcmPort>,
}

fn fixture(linger: Duration) -> Fixture {
    let t0 = Instant::now();
    let options = RoomOptions { linger, ..RoomOptions::default() };
    let shared = Arc::new(Shared {
        id: Uuid::new_v4(),
        name: "support".into(),
        created_at: SystemTime::now(),
        options,
        participants: AtomicUsize::new(0),
        wideband: std::sync::atomic::AtomicBool::new(false),
        counters: Counters::default(),
        task: Mutex::new(None),
    });
    let (commands, rx) = mpsc::unbounded_channel();
    let (events_tx, events) = mpsc::unbounded_channel();
    let map: Arc<Map> = Arc::new(Mutex::new(HashMap::new()));
    let entry = Entry { shared: Arc::clone(&shared), commands: RoomCommands::new(commands.clone()) };
    map.lock().unwrap().insert("support".into(), entry);
    let job = RoomJob::new(Arc::clone(&shared), "call-1".into(), rx, events_tx, Arc::downgrade(&map), t0);
    Fixture { t0, job, shared, commands, events, map, next_serial: 1, ports: Vec::new() }
}

impl Fixture {
    /// Queues the join of a SIP participant `id`; returns its serial and answer.
    fn join(&mut self, id: &str) -> (u64, JoinAnswer) {
        let (port, endpoint) = room_pair(16, true, false);
        self.ports.push(port);
        let serial = self.next_serial;
        self.next_serial += 1;
        let (reply, answer) = oneshot::channel();
        let participant = Participant::leg(id, endpoint);
        self.commands.send(Command::Join { participant, serial, reply }).unwrap();
        (serial, answer)
    }

    fn leave(&self, serial: u64) {
        let command = Command::Leave { target: Target::Serial(serial), reason: LeaveReason::Left, reply: None };
        self.commands.send(command).unwrap();
    }

    /// Wakes the job at `t0 + ms`.
    fn at(&mut self, ms: u32) -> TimerOutcome {
        self.job.on_timer(self.t0 + MS * ms)
    }

    fn events(&mut self) -> Vec<RoomEvent> {
        std::iter::from_fn(|| self.events.try_recv().ok()).collect()
    }
}

fn joined(answer: &mut JoinAnswer) -> bool {
    matches!(answer.try_recv(), Ok(Ok(())))
}

/// Commands wait for the next wake-up (the next 20 ms tick at the latest) and
/// are taken before its frame; a room whose last participant leaves ends at
/// once (no linger), leaves the registry, and says so last.
#[test]
fn commands_are_taken_at_the_tick_and_the_room_ends_when_the_last_leaves() {
    let mut f = fixture(Duration::ZERO);
    assert!(matches!(f.events()[..], [RoomEvent::Created { ref created_by, .. }] if created_by == "call-1"));
    // The worker's first call, at start: nothing queued yet, nothing due, and
    // an empty new room is not ended (its creating join is on its way).
    assert_eq!(f.at(0), TimerOutcome::Running);
    assert_eq!(f.job.deadline(), f.t0 + MS * 20);
    let (serial, mut answer) = f.join("call-1");
    assert!(matches!(answer.try_recv(), Err(oneshot::error::TryRecvError::Empty)), "not before the tick");
    assert_eq!(f.at(20), TimerOutcome::Running);
    assert!(joined(&mut answer));
    assert!(matches!(f.events()[..], [RoomEvent::ParticipantJoined { .. }]));
    assert_eq!(f.shared.counters.snapshot().ticks, 1, "the new member was in the 20 ms frame");
    assert_eq!(f.job.deadline(), f.t0 + MS * 40);

    let (reply, mut listed) = oneshot::channel();
    f.commands.send(Command::Participants { reply }).unwrap();
    assert_eq!(f.at(40), TimerOutcome::Running);
    assert_eq!(listed.try_recv().map(|l| l.len()), Ok(1));

    f.leave(serial);
    assert_eq!(f.at(60), TimerOutcome::Finished);
    let events = f.events();
    assert!(matches!(
        events[..],
        [
            RoomEvent::ParticipantLeft { reason: LeaveReason::Left, .. },
            RoomEvent::Ended { reason: EndReason::AllLeft, .. }
        ]
    ));
    assert!(f.map.lock().unwrap().is_empty(), "the room left the registry");
    assert_eq!(f.at(80), TimerOutcome::Finished, "finished stays finished");
    assert!(f.events().is_empty());
    assert_eq!(f.shared.counters.snapshot().ticks, 3);
}

/// An emptied room with a linger wakes for the linger's end as well as its
/// frames, and ends exactly then.
#[test]
fn an_empty_room_ends_when_its_linger_runs_out() {
    let mut f = fixture(MS * 50);
    let (serial, mut answer) = f.join("call-1");
    assert_eq!(f.at(20), TimerOutcome::Running);
    assert!(joined(&mut answer));
    f.leave(serial);
    assert_eq!(f.at(30), TimerOutcome::Running, "an early wake-up takes commands");
    // Empty from 30 ms: ends at 80 ms, between the frames of 60 and 100 ms.
    assert_eq!(f.job.deadline(), f.t0 + MS * 40);
    let mut now = f.job.deadline();
    while f.job.on_timer(now) == TimerOutcome::Running {
        now = f.job.deadline();
    }
    assert_eq!(now, f.t0 + MS * 80);
    assert!(matches!(f.events().last(), Some(RoomEvent::Ended { reason: EndReason::AllLeft, .. })));
}

/// `End` answers what is queued behind it: the joins with `Ended` (a join by
/// name then retries on a new room), the others with nothing.
#[test]
fn end_answers_the_commands_queued_behind_it() {
    let mut f = fixture(Duration::ZERO);
    let (_, mut first) = f.join("call-1");
    let (ended, mut end_answer) = oneshot::channel();
    f.commands.send(Command::End { reply: ended }).unwrap();
    let (_, mut late) = f.join("call-2");
    let (reply, mut count) = oneshot::channel();
    f.commands.send(Command::SetMuted { target: Target::Ids(Vec::new()), muted: true, reply: Some(reply) }).unwrap();
    assert_eq!(f.at(20), TimerOutcome::Finished);
    assert!(joined(&mut first));
    assert!(matches!(late.try_recv(), Ok(Err((JoinError::Ended, _)))));
    assert_eq!(count.try_recv(), Ok(0));
    assert_eq!(end_answer.try_recv(), Ok(()));
    let events = f.events();
    assert!(matches!(events.last(), Some(RoomEvent::Ended { reason: EndReason::EndedViaApi, .. })));
    assert!(events.iter().any(|e| matches!(e, RoomEvent::ParticipantLeft { reason: LeaveReason::RoomEnded, .. })));
    assert_eq!(f.shared.counters.snapshot().ticks, 0, "ended before its frame");
}

/// With every sender gone (registry entry and handles), the room ends with
/// `all_left`, as when its last participant leaves.
#[test]
fn a_closed_command_channel_ends_the_room() {
    let mut f = fixture(MS * 1000);
    assert_eq!(f.at(0), TimerOutcome::Running);
    f.map.lock().unwrap().clear();
    f.commands = mpsc::unbounded_channel().0; // the test's sender, dropped
    assert_eq!(f.at(20), TimerOutcome::Finished);
    assert!(matches!(f.events().last(), Some(RoomEvent::Ended { reason: EndReason::AllLeft, .. })));
}

/// A late wake-up mixes the frames it owes at once (up to 5) and counts them
/// in the room's stats, as the room's own loop did.
#[test]
fn a_late_wake_up_catches_up_and_is_counted() {
    let mut f = fixture(Duration::ZERO);
    let (_, mut answer) = f.join("call-1");
    assert_eq!(f.at(70), TimerOutcome::Running);
    assert!(joined(&mut answer));
    let s = f.shared.counters.snapshot();
    assert_eq!((s.ticks, s.catch_up_ticks, s.late_ticks, s.resyncs), (3, 2, 3, 0));
    assert_eq!(s.max_lateness, MS * 50);
    assert_eq!(f.job.deadline(), f.t0 + MS * 80);
    let frames = f.ports[0].frames.as_mut().unwrap();
    assert_eq!(std::iter::from_fn(|| frames.try_recv().ok()).count(), 3, "one mix-minus per frame");
}
